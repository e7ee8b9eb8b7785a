//! The floor of a reverse proxy on hyper: what the sidecar would cost with
//! nothing of this crate in it and nothing a proxy does beyond forwarding.
//!
//! Not a criterion bench: a server that `benches/wrk_vs_nginx.sh` and
//! `benches/callgrind_vs_nginx.sh` run beside nginx and the sidecar, so that
//! the sidecar's distance from nginx splits into what hyper costs and what
//! the sidecar adds to it.
//!
//! ```text
//! cargo bench --bench hyper_floor --no-run
//! target/release/deps/hyper_floor-<hash> --listen 127.0.0.1:8081 --upstream 127.0.0.1:9000
//! ```
//!
//! It has the sidecar's shape at its cheapest: one current-thread runtime
//! per worker thread, one acceptor handing each connection to the worker
//! serving the fewest, hyper's HTTP/1 server and client connections with
//! the sidecar's settings. It leaves out everything else, each omission
//! lowering the floor, never raising it:
//!
//! - no pool: each downstream connection has its own upstream connection
//!   (HTTP/1 serves one request at a time per connection, so it is free
//!   again by the next request), made at its first request;
//! - no tower layers, no timeout, no error responses (a failed upstream
//!   closes the downstream connection), no retry, breaker or trace context;
//! - no rewriting beyond the `Host` header: the request goes upstream as it
//!   came (in origin form, as a client sends it), hop-by-hop headers and all,
//!   and the answer comes back untouched.
//!
//! So it is not a proxy to use; it is the least a hyper proxy can run.
//!
//! With `--compliant` it also does, written inline without tower, what the
//! sidecar's issue requires of every pass-through request: the hop-by-hop
//! headers removed both ways (with this crate's `remove_hop_by_hop`), `Via`
//! added both ways, a 5 s whole-request timeout answered with 504 (tokio's
//! timer, as tower's timeout uses), and 502 when the upstream fails. That is
//! the least a proxy that meets the issue can run on hyper: the sidecar's
//! layers can approach it, not beat it.

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::{
    body::Incoming,
    client::conn::http1::SendRequest,
    header::{HOST, VIA},
    http::HeaderValue,
    Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use std::{convert::Infallible, time::Duration};
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};
use tokio::sync::mpsc;
use tower_shield::proxy::remove_hop_by_hop;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A worker's end of the acceptor, as in the sidecar.
struct Worker {
    connections: mpsc::UnboundedSender<std::net::TcpStream>,
    active: Arc<AtomicUsize>,
}

/// The upstream connection of one downstream connection, made when its
/// first request comes.
async fn connect(upstream: SocketAddr) -> Result<SendRequest<Incoming>, BoxError> {
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A downstream connection's way upstream: its own upstream connection,
/// made at its first request.
#[derive(Clone)]
struct Link {
    slot: Arc<Mutex<Option<SendRequest<Incoming>>>>,
    upstream: SocketAddr,
    host: HeaderValue,
}

/// Forwards `req` on the link's connection, made first if there is none.
async fn forward(link: Link, mut req: Request<Incoming>) -> Result<Response<Incoming>, BoxError> {
    let Link {
        slot,
        upstream,
        host,
    } = link;
    let idle = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    let mut sender = match idle {
        Some(sender) => sender,
        None => connect(upstream).await?,
    };
    // Ready at once: the previous answer's body was written out before
    // this request was read.
    sender.ready().await?;
    req.headers_mut().insert(HOST, host);
    let res = sender.send_request(req).await?;
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
    Ok(res)
}

/// What `--compliant` adds around [`forward`].
async fn forward_compliant(
    link: Link,
    mut req: Request<Incoming>,
) -> Result<Response<Either<Incoming, Empty<Bytes>>>, Infallible> {
    const VIA_VALUE: HeaderValue = HeaderValue::from_static("1.1 floor");
    remove_hop_by_hop(req.headers_mut());
    req.headers_mut().append(VIA, VIA_VALUE);
    let status = match tokio::time::timeout(Duration::from_secs(5), forward(link, req)).await {
        Ok(Ok(mut res)) => {
            remove_hop_by_hop(res.headers_mut());
            res.headers_mut().append(VIA, VIA_VALUE);
            return Ok(res.map(Either::Left));
        }
        Ok(Err(_)) => StatusCode::BAD_GATEWAY,
        Err(_) => StatusCode::GATEWAY_TIMEOUT,
    };
    let mut res = Response::new(Either::Right(Empty::new()));
    *res.status_mut() = status;
    Ok(res)
}

/// Serves one downstream connection, forwarding each request on its own
/// upstream connection.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    upstream: SocketAddr,
    host: HeaderValue,
    compliant: bool,
) {
    let link = Link {
        slot: Arc::default(),
        upstream,
        host,
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.writev(false);
    let io = TokioIo::new(stream);
    let _ = if compliant {
        let service = hyper::service::service_fn(move |req| forward_compliant(link.clone(), req));
        http.serve_connection(io, service).await
    } else {
        let service = hyper::service::service_fn(move |req| forward(link.clone(), req));
        http.serve_connection(io, service).await
    };
}

/// A worker thread: a current-thread runtime serving the connections the
/// acceptor hands it.
fn worker(
    mut connections: mpsc::UnboundedReceiver<std::net::TcpStream>,
    active: Arc<AtomicUsize>,
    upstream: SocketAddr,
    compliant: bool,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("worker runtime");
    let host = HeaderValue::from_str(&upstream.to_string()).expect("an address is a valid header");
    rt.block_on(async move {
        while let Some(stream) = connections.recv().await {
            let active = active.clone();
            let host = host.clone();
            tokio::spawn(async move {
                if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                    serve_connection(stream, upstream, host, compliant).await;
                }
                active.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
}

fn main() -> Result<(), BoxError> {
    let mut listen: SocketAddr = "127.0.0.1:8081".parse()?;
    let mut upstream: Option<SocketAddr> = None;
    let mut compliant = false;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            // How `cargo bench` runs every bench target: nothing to measure
            // here without an upstream and a load generator.
            "--bench" => return Ok(()),
            "--compliant" => {
                compliant = true;
                continue;
            }
            _ => {}
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value.parse()?,
            "--upstream" => upstream = Some(value.parse()?),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let upstream =
        upstream.ok_or("usage: hyper_floor --listen ADDR --upstream IP:PORT [--compliant]")?;
    let count = std::thread::available_parallelism().map_or(1, usize::from);
    let mut workers = Vec::with_capacity(count);
    for _ in 0..count {
        let (tx, rx) = mpsc::unbounded_channel();
        let active = Arc::new(AtomicUsize::new(0));
        workers.push(Worker {
            connections: tx,
            active: active.clone(),
        });
        std::thread::spawn(move || worker(rx, active, upstream, compliant));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let mode = if compliant { ", compliant" } else { "" };
        println!("hyper floor listening on http://{listen} -> {upstream} ({count} workers{mode})");
        // Stopped with SIGTERM, so that callgrind writes its counts.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(_) => continue,
                },
                _ = term.recv() => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let stream = stream.into_std()?;
            let worker = workers
                .iter()
                .min_by_key(|w| w.active.load(Ordering::Relaxed))
                .expect("at least one worker");
            worker.active.fetch_add(1, Ordering::Relaxed);
            worker
                .connections
                .send(stream)
                .map_err(|_| "a worker thread has stopped")?;
        }
    })
}
