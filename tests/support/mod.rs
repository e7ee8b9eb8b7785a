//! Helpers shared by the integration tests: real servers on 127.0.0.1,
//! real clients, and the example binaries run as child processes.
#![allow(dead_code, unreachable_pub)]

use axum::{
    body::Body,
    extract::{Path, Request},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{any, get},
    Router,
};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use sha2::{Digest, Sha256};
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};
use tokio::net::TcpListener;

/// Serves `router` on 127.0.0.1 on a free port, in the test's runtime.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    addr
}

/// An address on 127.0.0.1 where nothing listens.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// A plain hyper-util client for bodies of type `B`.
pub fn hyper_client<B>() -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new()).build_http()
}

/// The SHA-256 of `data`, as hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The test upstream: every route a test of a client or a proxy needs.
///
/// - `ANY /echo/*`: JSON with the method, URI, every header (values as hex,
///   so non-UTF-8 bytes survive) and the body's length and SHA-256.
/// - `ANY /sink`: reads the body as a stream, answers its length and SHA-256.
/// - `GET /source/{n}`: streams `n` bytes (a repeating pattern) in 64 KiB frames.
/// - `GET /status/{code}`: answers that status.
/// - `GET /pending`: never answers.
pub fn upstream() -> Router {
    Router::new()
        .route("/echo", any(echo))
        .route("/echo/{*rest}", any(echo))
        .route("/sink", any(sink))
        .route("/source/{n}", get(source))
        .route("/status/{code}", any(status))
        .route("/pending", any(std::future::pending::<&'static str>))
}

async fn echo(req: Request) -> impl IntoResponse {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), hex(v.as_bytes())))
        .collect();
    let mut response_headers = HeaderMap::new();
    // Echo repeated and binary request headers back as response headers too.
    for (name, value) in parts.headers.iter() {
        if name.as_str().starts_with("x-echo-") {
            response_headers.append(name.clone(), value.clone());
        }
    }
    (
        response_headers,
        axum::Json(serde_json::json!({
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "headers": headers,
            "body_len": body.len(),
            "body_sha256": sha256_hex(&body),
        })),
    )
}

async fn sink(req: Request) -> impl IntoResponse {
    let mut body = req.into_body();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    hasher.update(data);
                    len += data.len() as u64;
                }
            }
            Err(err) => return (StatusCode::BAD_REQUEST, err.to_string()).into_response(),
        }
    }
    axum::Json(serde_json::json!({ "len": len, "sha256": hex(&hasher.finalize()) })).into_response()
}

/// The byte at offset `i` of every generated stream.
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31) % 251) as u8
}

/// `n` bytes of [`pattern`], produced lazily in `chunk`-sized frames.
pub fn pattern_stream(
    n: u64,
    chunk: usize,
) -> StreamBody<
    impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + 'static,
> {
    let chunks = n.div_ceil(chunk as u64);
    StreamBody::new(futures_util::stream::iter((0..chunks).map(move |c| {
        let start = c * chunk as u64;
        let end = (start + chunk as u64).min(n);
        Ok(Frame::data((start..end).map(pattern).collect::<Bytes>()))
    })))
}

/// The SHA-256 of `n` bytes of [`pattern`], computed without holding them.
pub fn pattern_sha256(n: u64) -> String {
    let mut hasher = Sha256::new();
    let mut buf = Vec::with_capacity(65536);
    let mut i = 0;
    while i < n {
        buf.clear();
        let end = (i + 65536).min(n);
        buf.extend((i..end).map(pattern));
        hasher.update(&buf);
        i = end;
    }
    hex(&hasher.finalize())
}

async fn source(Path(n): Path<u64>) -> Body {
    Body::new(pattern_stream(n, 64 * 1024))
}

async fn status(Path(code): Path<u16>) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
}

/// The path of a built example binary. `cargo test` builds the examples
/// when it builds all targets (as `cargo test --all-features` does); a test
/// run that names one target (`--test sidecar`) does not, so a missing or
/// stale binary fails here with the command that fixes it, rather than
/// testing old code.
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let path = profile_dir.join("examples").join(name);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = std::fs::metadata(&path).and_then(|m| m.modified());
    let newest_source = [
        root.join("examples").join(format!("{name}.rs")),
        root.join("src"),
    ]
    .iter()
    .flat_map(|p| walk(p))
    .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .max();
    match (built, newest_source) {
        (Ok(built), Some(source)) if built >= source => path,
        _ => panic!(
            "examples/{name}.rs is not built or older than its sources: run `cargo test --all-features` \
             (it builds the examples) or `cargo build --all-features --example {name}` first"
        ),
    }
}

fn walk(path: &std::path::Path) -> Vec<PathBuf> {
    match std::fs::read_dir(path) {
        Ok(entries) => entries.flatten().flat_map(|e| walk(&e.path())).collect(),
        Err(_) => vec![path.to_path_buf()],
    }
}

/// A running example process, killed when dropped.
pub struct Process {
    pub child: Child,
    pub addr: Option<SocketAddr>,
    /// The first line the process printed.
    pub line: String,
}

impl Process {
    /// Sends SIGTERM and waits for a graceful exit, bounded: a watchdog
    /// kills the process if it has not exited 20 s later (then `None`).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let (exited, watch) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            let timed_out = watch.recv_timeout(Duration::from_secs(20)).is_err();
            if timed_out {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
            timed_out
        });
        let status = self.child.wait().ok();
        let _ = exited.send(());
        match watchdog.join() {
            Ok(false) => status,
            _ => None,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// The peak resident memory of the process so far, in KiB (Linux).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

/// Starts the sidecar example listening on a free port and waits until it
/// says where it listens (bounded: 60 s, for a cold debug build).
pub fn start_sidecar(args: &[&str]) -> Process {
    start_sidecar_with(args, &[], None)
}

/// The lines a process wrote to stderr so far.
pub type Lines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// [`start_sidecar`] with more environment variables, and its stderr
/// collected into `stderr` when given.
pub fn start_sidecar_with(args: &[&str], env: &[(&str, &str)], stderr: Option<Lines>) -> Process {
    // Cargo builds the binary for integration tests when its features are on.
    let Some(bin) = option_env!("CARGO_BIN_EXE_tower-shield-sidecar") else {
        panic!("the sidecar binary is not built: run the tests with --features sidecar")
    };
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(if stderr.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .expect("start sidecar");
    if let Some(lines) = stderr {
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    // From here on the child is killed however the start goes.
    let mut process = Process {
        child,
        addr: None,
        line: String::new(),
    };
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("sidecar did not start");
    let addr = line
        .strip_prefix("sidecar listening on http://")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    process.addr = Some(addr);
    process.line = line;
    process
}

/// The Redis server tests use, per DESIGN.md: `REDIS_URL` if set, else
/// 127.0.0.1:6379 if it answers. `None` means "skip, loudly", unless
/// `SHIELD_REQUIRE_REDIS=1`, which makes a missing Redis a failure.
pub fn redis_url() -> Option<String> {
    use std::io::{Read, Write};
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let hostport = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let answers = std::net::TcpStream::connect(&hostport)
        .and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"PING\r\n")?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf)?;
            Ok(&buf == b"+PONG\r\n")
        })
        .unwrap_or(false);
    if answers {
        return Some(url);
    }
    assert!(
        std::env::var("SHIELD_REQUIRE_REDIS").as_deref() != Ok("1"),
        "SHIELD_REQUIRE_REDIS=1 but no Redis answers at {url}"
    );
    eprintln!("!!! SKIPPING: no Redis at {url}; set REDIS_URL or start redis-server !!!");
    None
}

/// An upstream whose `GET /stall` sends its head and one frame, then
/// nothing; the receiver says when the connection that asked was closed.
pub async fn stalling_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
    let app = Router::new().route(
        "/stall",
        axum::routing::get(move || {
            let closed_tx = closed_tx.clone();
            async move {
                let (tx, rx) =
                    tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(1);
                tx.send(Ok(Bytes::from("first"))).await.unwrap();
                tokio::spawn(async move {
                    // Resolves when hyper drops the body: the connection ended.
                    tx.closed().await;
                    let _ = closed_tx.send(());
                });
                let frames = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|frame| (frame, rx))
                });
                axum::body::Body::from_stream(frames)
            }
        }),
    );
    (serve(app).await, closed_rx)
}

/// A `redis-server` of a test's own, on a free port of 127.0.0.1, killed
/// when dropped: for tests that stop and restart Redis.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    /// Starts one, or `None` (a loud skip) when `redis-server` is not on
    /// PATH, unless `SHIELD_REQUIRE_REDIS=1`.
    pub fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut server = Self { child: None, port };
        if server.spawn() {
            Some(server)
        } else {
            assert!(
                std::env::var("SHIELD_REQUIRE_REDIS").as_deref() != Ok("1"),
                "SHIELD_REQUIRE_REDIS=1 but redis-server cannot be started"
            );
            eprintln!("!!! SKIPPING: redis-server is not on PATH !!!");
            None
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again, on the same port); waits until it answers.
    pub fn spawn(&mut self) -> bool {
        let Ok(child) = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            return false;
        };
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A sidecar configuration file in the temporary directory, removed when
/// dropped.
pub struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    pub fn new(tag: &str, text: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("tower-shield-{tag}-{}.toml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A service that is never ready: a layer must pass that on, not call it.
#[derive(Clone)]
pub struct NeverReady;

impl tower::Service<http::Request<()>> for NeverReady {
    type Response = http::Response<String>;
    type Error = tower::BoxError;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Err("not ready".into()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        panic!("called while not ready")
    }
}
