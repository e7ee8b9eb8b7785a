//! Black-box tests of the `tower-shield-sidecar` program: it runs as its own
//! process between a real hyper client and a real axum upstream, all on
//! 127.0.0.1.
#![cfg(feature = "sidecar")]

mod support;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use std::{process::Command, time::Duration};
use support::*;

type ReqBody = BoxBody<Bytes, std::io::Error>;

fn full(data: impl Into<Bytes>) -> ReqBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> ReqBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A GET of `path` from the sidecar at `addr`, through a new client.
async fn fetch(addr: std::net::SocketAddr, path: &str) -> http::Response<hyper::body::Incoming> {
    hyper_client::<ReqBody>()
        .request(
            Request::get(format!("http://{addr}{path}"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap()
}

async fn json(res: http::Response<hyper::body::Incoming>) -> serde_json::Value {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {bytes:?}"))
}

fn header<'a>(echo: &'a serde_json::Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn forwards_every_method_path_query_and_body() {
    let upstream = serve(upstream()).await;
    let sidecar = start_sidecar(&["--upstream", &format!("http://{upstream}")]);
    let client = hyper_client::<ReqBody>();
    for method in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let payload = format!("payload of {method}");
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!(
                "http://{}/echo/a/b?x=1&y=two%20words",
                sidecar.addr.unwrap()
            ))
            .body(full(payload.clone()))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{method}");
        assert_eq!(res.headers()["via"], "1.1 tower-shield");
        if method == "HEAD" {
            assert!(res
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty());
            continue;
        }
        let echo = json(res).await;
        assert_eq!(echo["method"], method);
        assert_eq!(echo["uri"], "/echo/a/b?x=1&y=two%20words");
        assert_eq!(
            echo["body_sha256"],
            sha256_hex(payload.as_bytes()),
            "{method}"
        );
        assert_eq!(header(&echo, "via"), [hex(b"1.1 tower-shield")]);
        assert_eq!(header(&echo, "x-forwarded-for"), [hex(b"127.0.0.1")]);
        assert_eq!(
            header(&echo, "host"),
            [hex(upstream.to_string().as_bytes())]
        );
    }
}

#[tokio::test]
async fn repeated_and_non_utf8_headers_survive_both_ways() {
    let upstream = serve(upstream()).await;
    let sidecar = start_sidecar(&["--upstream", &format!("http://{upstream}")]);
    let binary = HeaderValue::from_bytes(&[b'o', 0xff, 0x80, b'k']).unwrap();
    let req = Request::get(format!("http://{}/echo", sidecar.addr.unwrap()))
        .header("x-echo-multi", "first")
        .header("x-echo-multi", "second")
        .header("x-echo-bin", binary.clone())
        .body(empty())
        .unwrap();
    let res = hyper_client::<ReqBody>().request(req).await.unwrap();
    let multi: Vec<_> = res.headers().get_all("x-echo-multi").iter().collect();
    assert_eq!(multi, ["first", "second"]);
    assert_eq!(res.headers()["x-echo-bin"], binary);
    let echo = json(res).await;
    assert_eq!(
        header(&echo, "x-echo-multi"),
        [hex(b"first"), hex(b"second")]
    );
    assert_eq!(header(&echo, "x-echo-bin"), [hex(binary.as_bytes())]);
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped() {
    let upstream = serve(upstream().route(
        "/hop",
        axum::routing::get(|| async {
            (
                [
                    ("connection", "x-hop-secret"),
                    ("x-hop-secret", "1"),
                    ("x-kept", "1"),
                ],
                "ok",
            )
        }),
    ))
    .await;
    let sidecar = start_sidecar(&["--upstream", &format!("http://{upstream}")]);
    let client = hyper_client::<ReqBody>();
    let req = Request::get(format!("http://{}/echo", sidecar.addr.unwrap()))
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "trailers")
        .header("x-public", "yes")
        .body(empty())
        .unwrap();
    let echo = json(client.request(req).await.unwrap()).await;
    for dropped in ["x-private", "keep-alive", "proxy-connection", "te"] {
        assert!(
            header(&echo, dropped).is_empty(),
            "{dropped} reached the upstream: {echo}"
        );
    }
    assert_eq!(header(&echo, "x-public"), [hex(b"yes")]);

    let req = Request::get(format!("http://{}/hop", sidecar.addr.unwrap()))
        .body(empty())
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert!(
        res.headers().get("x-hop-secret").is_none(),
        "{:?}",
        res.headers()
    );
    assert_eq!(res.headers()["x-kept"], "1");
}

#[tokio::test]
async fn streams_20_mib_both_ways_without_holding_it() {
    const SIZE: u64 = 20 * 1024 * 1024;
    let upstream = serve(upstream()).await;
    let sidecar = start_sidecar(&["--upstream", &format!("http://{upstream}")]);
    let client = hyper_client::<ReqBody>();
    let base = format!("http://{}", sidecar.addr.unwrap());

    // Warm up, then take the resident-memory baseline.
    let warm = client.request(Request::get(format!("{base}/echo")).body(empty()).unwrap());
    assert_eq!(warm.await.unwrap().status(), StatusCode::OK);
    let baseline = sidecar.peak_rss_kib();

    // Upload: a chunked body of unknown length, produced lazily.
    let req = Request::post(format!("{base}/sink"))
        .body(BodyExt::boxed(pattern_stream(SIZE, 256 * 1024)))
        .unwrap();
    let sunk = json(client.request(req).await.unwrap()).await;
    assert_eq!(sunk["len"], SIZE);
    assert_eq!(sunk["sha256"], pattern_sha256(SIZE));

    // Download, hashed frame by frame.
    let res = client
        .request(
            Request::get(format!("{base}/source/{SIZE}"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body();
    let mut all = sha2::Sha256::default();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame.unwrap().data_ref() {
            sha2::Digest::update(&mut all, data);
            len += data.len() as u64;
        }
    }
    assert_eq!(len, SIZE);
    assert_eq!(hex(&sha2::Digest::finalize(all)), pattern_sha256(SIZE));

    if let (Some(before), Some(after)) = (baseline, sidecar.peak_rss_kib()) {
        // Holding either body whole would add 20 MiB; streaming adds buffers.
        eprintln!("sidecar peak RSS: {before} KiB before, {after} KiB after 2 x 20 MiB");
        assert!(
            after - before < 8 * 1024,
            "peak RSS grew from {before} KiB to {after} KiB"
        );
    }
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_the_next_request_is_served() {
    let sidecar = start_sidecar(&["--upstream", &format!("http://{}", closed_port())]);
    let client = hyper_client::<ReqBody>();
    for _ in 0..2 {
        let req = Request::get(format!("http://{}/echo", sidecar.addr.unwrap()))
            .body(empty())
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        let text = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(text, "Bad Gateway: upstream request failed\n");
    }
}

#[tokio::test]
async fn slow_upstream_is_504_and_the_next_request_is_served() {
    let upstream = serve(upstream()).await;
    let file = ConfigFile::new(
        "timeout",
        &format!("[sidecar]\nupstream = \"http://{upstream}\"\n[timeout]\nrequest = \"300ms\""),
    );
    let sidecar = start_sidecar(&["--config", file.path()]);
    let client = hyper_client::<ReqBody>();
    let base = format!("http://{}", sidecar.addr.unwrap());
    // `/pending` never answers, so only the sidecar's timer can end it.
    let res = client.request(
        Request::get(format!("{base}/pending"))
            .body(empty())
            .unwrap(),
    );
    let res = tokio::time::timeout(Duration::from_secs(30), res)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    let res = client.request(Request::get(format!("{base}/echo")).body(empty()).unwrap());
    assert_eq!(res.await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn health_endpoint_is_served_by_the_sidecar() {
    let sidecar = start_sidecar(&["--upstream", &format!("http://{}", closed_port())]);
    let client = hyper_client::<ReqBody>();
    let base = format!("http://{}", sidecar.addr.unwrap());
    let res = client
        .request(
            Request::get(format!("{base}/_shield/health"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/json");
    let health = json(res).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["layers"]["timeout"]["request_ms"], 5000);
    let post = Request::post(format!("{base}/_shield/health"))
        .body(empty())
        .unwrap();
    assert_eq!(
        client.request(post).await.unwrap().status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn flags_override_the_file() {
    let upstream = serve(upstream()).await;
    let file = ConfigFile::new(
        "override",
        &format!("[sidecar]\nupstream = \"http://{}\"\n", closed_port()),
    );
    let sidecar = start_sidecar(&[
        "--config",
        file.path(),
        "--upstream",
        &format!("http://{upstream}"),
    ]);
    let req = Request::get(format!("http://{}/echo", sidecar.addr.unwrap()))
        .body(empty())
        .unwrap();
    assert_eq!(
        hyper_client::<ReqBody>()
            .request(req)
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// Runs a sidecar that is expected to refuse to start: its exit code and
/// what it printed on standard error.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    refused_with(args, &[])
}

/// Runs the sidecar, expecting it to refuse to start: its exit code and
/// stderr. One that starts anyway is killed after 30 s (exit code `None`).
fn refused_with(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_tower-shield-sidecar"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (exited, watch) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if watch.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = exited.send(());
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_config_names_the_problem_and_exits_non_zero() {
    let cases: &[(&str, &str)] = &[
        ("[timeout]\nrequets = \"5s\"\n", "unknown field `requets`"),
        ("[timout]\n", "unknown field `timout`"),
        (
            "[timeout]\nrequest = \"5 fortnights\"\n",
            "invalid duration",
        ),
        ("[timeout]\nrequest = \"0s\"\n", "timeout.request"),
        (
            "[sidecar]\nupstream = \"ftp://127.0.0.1/\"\n",
            "sidecar.upstream",
        ),
        ("[sidecar]\nlisten = 8080\n", "listen"),
        (
            "[sidecar]\nupstream = \"https://127.0.0.1/\"\n",
            "no TLS client",
        ),
        ("[sidecar]\nworkers = 0\n", "sidecar.workers"),
        ("[sidecar]\nworkers = -1\n", "workers"),
        ("not toml at all [", "TOML parse error"),
        ("", "no upstream"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = ConfigFile::new(&format!("bad{i}"), text);
        let (code, stderr) = refused(&["--config", file.path()]);
        assert_eq!(code, Some(2), "{text:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{text:?}: expected {expected:?} in {stderr}"
        );
    }
    for (args, expected) in [
        (&["--listen", "nowhere"][..], "--listen \"nowhere\""),
        (&["--bogus"][..], "unknown argument \"--bogus\""),
        (
            &["--config", "/nonexistent/shield.toml"][..],
            "cannot read /nonexistent/shield.toml",
        ),
        (&["--upstream"][..], "--upstream needs a value"),
    ] {
        let (code, stderr) = refused(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected {expected:?} in {stderr}"
        );
    }
}

#[tokio::test]
async fn upstream_closing_its_connections_does_not_fail_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A bare HTTP/1.1 upstream that answers one request per connection and
    // then closes it without announcing it, as an idle-timeout would: the
    // sidecar's pooled connection goes stale under it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for n in 0u32..64 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                let body = format!("conn {n}");
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                let _ = stream.write_all(format!("{head}{body}").as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    let sidecar = start_sidecar(&[
        "--upstream",
        &format!("http://{upstream}"),
        "--workers",
        "1",
    ]);
    let client = hyper_client::<ReqBody>();
    let mut seen = Vec::new();
    for _ in 0..6 {
        let req = Request::get(format!("http://{}/", sidecar.addr.unwrap()))
            .body(empty())
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        seen.push(res.into_body().collect().await.unwrap().to_bytes());
    }
    // Every request got an answer, each on a connection of its own.
    seen.dedup();
    assert_eq!(seen.len(), 6, "{seen:?}");
}

#[tokio::test]
async fn breaker_opens_fails_fast_and_health_reports_degraded() {
    use std::sync::atomic::{AtomicU32, Ordering};
    let calls = std::sync::Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let upstream = serve(axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { (StatusCode::INTERNAL_SERVER_ERROR, "broken") }
        }),
    ))
    .await;
    let file = ConfigFile::new("breaker", &format!("[sidecar]\nupstream = \"http://{upstream}\"\n[breaker]\nfailure_threshold = 2\nopen_for = \"1h\"\nkey = \"authority\"\n"));
    let sidecar = start_sidecar(&["--config", file.path()]);
    let client = hyper_client::<ReqBody>();
    let base = format!("http://{}", sidecar.addr.unwrap());
    let get =
        |path: &str| client.request(Request::get(format!("{base}{path}")).body(empty()).unwrap());

    let health = json(get("/_shield/health").await.unwrap()).await;
    assert_eq!(health["status"], "ok");
    for _ in 0..2 {
        assert_eq!(
            get("/").await.unwrap().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    // Open: the sidecar answers 503 itself and the upstream sees nothing.
    for _ in 0..5 {
        let res = get("/").await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let retry_after: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((3590..=3600).contains(&retry_after), "{retry_after}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let health = json(get("/_shield/health").await.unwrap()).await;
    assert_eq!(health["status"], "degraded", "{health}");
    let breakers = health["layers"]["breaker"]["breakers"].as_array().unwrap();
    let open = breakers
        .iter()
        .find(|b| b["state"] == "open")
        .expect("an open breaker");
    assert_eq!(open["name"], format!("http://{upstream}"));
    assert_eq!(open["rejections"], 5);
}

/// With `[retry]`, the sidecar retries a flaky upstream: a PUT whose body
/// it read ahead arrives identical on every attempt, and the client sees one
/// success; a POST is not retried.
#[tokio::test]
async fn retries_a_flaky_upstream_with_the_same_body() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<(Method, String)>>> = Arc::default();
    let log = seen.clone();
    let upstream = serve(axum::Router::new().route(
        "/",
        axum::routing::any(move |method: Method, body: Bytes| {
            let mut log = log.lock().unwrap();
            log.push((method, sha256_hex(&body)));
            let status = if log.len().is_multiple_of(3) {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            async move { status }
        }),
    ))
    .await;
    let file = ConfigFile::new("retry", &format!("[sidecar]\nupstream = \"http://{upstream}\"\n[retry]\nmax_attempts = 3\nbase_delay = \"5ms\"\njitter = \"none\"\n"));
    let sidecar = start_sidecar(&["--config", file.path()]);
    let client = hyper_client::<ReqBody>();
    let url = format!("http://{}/", sidecar.addr.unwrap());
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let res = client
        .request(Request::put(url.as_str()).body(full(data.clone())).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        let digest = sha256_hex(&data);
        assert!(seen.iter().all(|(m, d)| *m == Method::PUT && *d == digest));
    }
    let res = client
        .request(Request::post(url.as_str()).body(full("once")).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(seen.lock().unwrap().len(), 4);
}

fn unhex(s: &str) -> String {
    let bytes: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn one(echo: &serde_json::Value, name: &str) -> Option<String> {
    match header(echo, name)[..] {
        [] => None,
        [v] => Some(unhex(v)),
        ref many => panic!("{name} repeated: {many:?}"),
    }
}

#[tokio::test]
async fn propagates_context_and_adds_its_own_span() {
    use tower_shield::context::TraceParent;
    let upstream = serve(upstream()).await;
    let file = ConfigFile::new("context", &format!("[sidecar]\nupstream = \"http://{upstream}\"\n[context]\nservice_name = \"edge\"\nservice_version = \"9.9\"\npropagate_headers = [\"x-tenant-id\"]\nrequest_id_aliases = [\"x-trace-id\"]\n"));
    let sidecar = start_sidecar(&["--config", file.path()]);
    let client = hyper_client::<ReqBody>();
    let url = format!("http://{}/echo", sidecar.addr.unwrap());
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let res = client
        .request(
            Request::get(url.as_str())
                .header("traceparent", caller)
                .header("tracestate", "congo=t61rcWkgMzE")
                .header("x-trace-id", "rid-from-alias")
                .header("x-correlation-id", "corr-1")
                .header("x-tenant-id", "t-1")
                .header("x-user-id", "not-allow-listed-but-a-plain-header")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-request-id"], "rid-from-alias");
    assert_eq!(res.headers()["x-correlation-id"], "corr-1");
    let echo = json(res).await;
    let tp = TraceParent::parse(one(&echo, "traceparent").unwrap().as_bytes()).unwrap();
    assert_eq!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    // The sidecar's own client span is the upstream's parent.
    assert_ne!(tp.parent_id.to_string(), "00f067aa0ba902b7");
    assert_eq!(
        one(&echo, "tracestate").as_deref(),
        Some("congo=t61rcWkgMzE")
    );
    assert_eq!(
        one(&echo, "x-request-id").as_deref(),
        Some("rid-from-alias")
    );
    assert_eq!(one(&echo, "x-trace-id"), None, "aliases are not forwarded");
    assert_eq!(one(&echo, "x-correlation-id").as_deref(), Some("corr-1"));
    assert_eq!(one(&echo, "x-tenant-id").as_deref(), Some("t-1"));
    assert_eq!(one(&echo, "x-service-name").as_deref(), Some("edge"));
    assert_eq!(one(&echo, "x-service-version").as_deref(), Some("9.9"));

    // Malformed trace context never reaches the upstream.
    let res = client
        .request(
            Request::get(url.as_str())
                .header(
                    "traceparent",
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                )
                .header("tracestate", "Bad Key=1")
                .header("baggage", "ok=1,bad key=2")
                .header("x-request-id", "has space")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let minted = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(minted.len(), 36);
    let echo = json(res).await;
    let tp = TraceParent::parse(one(&echo, "traceparent").unwrap().as_bytes()).unwrap();
    assert_ne!(tp.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(one(&echo, "tracestate"), None);
    assert_eq!(one(&echo, "baggage").as_deref(), Some("ok=1"));
    assert_eq!(one(&echo, "x-request-id"), Some(minted));

    // The health endpoint reports the context layer.
    let res = client
        .request(
            Request::get(format!("http://{}/_shield/health", sidecar.addr.unwrap()))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let health = json(res).await;
    assert_eq!(health["layers"]["context"]["service_name"], "edge");
}

#[test]
fn bad_context_config_names_the_key() {
    for (tag, section, key) in [
        (
            "badcontext",
            "otlp_protocol = \"carrier-pigeon\"",
            "context.otlp_protocol",
        ),
        (
            "badheader",
            "request_id_header = \"bad header\"",
            "context.request_id_header",
        ),
        // Headers the proxy owns are refused by name, so a caller's value
        // can never win (a forged Host, a spoofed client address).
        (
            "ownedhost",
            "propagate_headers = [\"x-tenant-id\", \"host\"]",
            "\"host\"",
        ),
        (
            "ownedxff",
            "propagate_headers = [\"X-Forwarded-For\"]",
            "\"x-forwarded-for\"",
        ),
        (
            "ownedlength",
            "propagate_headers = [\"content-length\"]",
            "context.propagate_headers",
        ),
    ] {
        let file = ConfigFile::new(
            tag,
            &format!("[sidecar]\nupstream = \"http://127.0.0.1:9\"\n[context]\n{section}\n"),
        );
        let (code, stderr) = refused(&["--config", file.path()]);
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(key), "{stderr}");
    }
}

/// Credentials in the upstream URL never show: not in the startup line, not
/// in the health report.
#[tokio::test]
async fn upstream_credentials_are_redacted() {
    let upstream = serve(upstream()).await;
    let sidecar = start_sidecar(&["--upstream", &format!("http://admin:s3cret@{upstream}")]);
    assert!(!sidecar.line.contains("s3cret"), "{}", sidecar.line);
    assert!(
        sidecar.line.contains(&format!("http://***@{upstream}")),
        "{}",
        sidecar.line
    );
    let health = json(fetch(sidecar.addr.unwrap(), "/_shield/health").await).await;
    let text = health.to_string();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!text.contains("admin"), "{text}");
    assert_eq!(
        health["upstream"],
        format!("http://***@{upstream}"),
        "{text}"
    );
}

/// Sends `request` as raw bytes to `addr` and returns the whole answer.
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the sidecar answers and closes")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// Under `--upstream http://host/api`, no request path reaches the upstream
/// outside `/api`: dot segments are removed (in origin and absolute form),
/// and encoded ones are answered 400 without reaching it.
#[tokio::test]
async fn the_upstream_prefix_cannot_be_escaped() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let upstream = serve(axum::Router::new().fallback(move |uri: http::Uri| {
        log.lock().unwrap().push(uri.to_string());
        async move { uri.to_string() }
    }))
    .await;
    let sidecar = start_sidecar(&["--upstream", &format!("http://{upstream}/api")]);
    let addr = sidecar.addr.unwrap();
    for (target, reached) in [
        ("/../x", "/api/x"),
        ("/./../x", "/api/x"),
        ("/a/../../b?c=1", "/api/b?c=1"),
        ("http://h/../x", "/api/x"),
    ] {
        let answer = raw(
            addr,
            &format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{target}: {answer}");
        assert!(answer.ends_with(reached), "{target}: {answer}");
    }
    for target in ["/..%2fx", "/%2e%2e/x", "/.%2E/etc"] {
        let answer = raw(
            addr,
            &format!("GET {target} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{target}: {answer}");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.iter().all(|uri| uri.starts_with("/api/")), "{seen:?}");
}

/// Values that parse but cannot work are refused at start with the key and a
/// non-zero exit, never a panic; an upper-case scheme is still http.
#[tokio::test]
async fn out_of_range_settings_are_refused_and_http_is_case_insensitive() {
    for (args, key) in [
        (
            vec!["--upstream", "http://127.0.0.1:99999/"],
            "out of range",
        ),
        (
            vec![
                "--upstream",
                "http://127.0.0.1:9",
                "--workers",
                "1000000000000",
            ],
            "sidecar.workers",
        ),
        (vec!["--upstream", "https://127.0.0.1:9"], "no TLS client"),
    ] {
        let (code, stderr) = refused(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(key), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let upstream = serve(upstream()).await;
    let sidecar = start_sidecar(&["--upstream", &format!("HTTP://{upstream}")]);
    assert_eq!(
        fetch(sidecar.addr.unwrap(), "/echo").await.status(),
        StatusCode::OK
    );
}

/// CONNECT, an HTTP/1.1 request without exactly one `Host`, and a transfer
/// coding other than chunked are answered by the sidecar itself (RFC 9112
/// sections 3.2 and 6.1) and never reach the upstream; HTTP/1.0 without
/// `Host` is fine.
#[tokio::test]
async fn connect_missing_host_and_unknown_codings_are_answered_by_the_sidecar() {
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let upstream = serve(axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { "reached" }
    }))
    .await;
    let sidecar = start_sidecar(&["--upstream", &format!("http://{upstream}")]);
    let addr = sidecar.addr.unwrap();
    for (request, status) in [
        (
            format!("CONNECT {upstream} HTTP/1.1\r\nHost: {upstream}\r\nConnection: close\r\n\r\n"),
            "501",
        ),
        ("GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(), "400"),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n".to_owned(),
            "400",
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_owned(),
            "501",
        ),
    ] {
        let answer = raw(addr, &request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{request:?}: {answer}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let answer = raw(addr, "GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    assert!(answer.ends_with("reached"), "{answer}");
    let answer = raw(addr, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Out of file descriptors, the sidecar backs off instead of spinning on
/// `accept` and says so at most once a second; once connections close it
/// serves again. The descriptor table is made small with `ulimit -n`; the
/// test waits 1.2 s of real time because the backoff is the sidecar's own
/// timer on a real socket.
#[tokio::test]
async fn accept_errors_back_off_and_are_logged_at_most_once_a_second() {
    use std::{
        io::{BufRead, BufReader},
        process::Stdio,
        sync::{
            atomic::{AtomicU32, Ordering},
            Arc,
        },
    };
    let upstream = serve(upstream()).await;
    // A `max_connections` over the table's size: the default, derived from
    // the limit, would keep the sidecar from running out at all.
    let file = ConfigFile::new("emfile", "[sidecar]\nmax_connections = 1000\n");
    let mut child = Command::new("sh")
        .args([
            "-c",
            "ulimit -n 40 && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_tower-shield-sidecar"),
            "--config",
            file.path(),
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--upstream",
            &format!("http://{upstream}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr: std::net::SocketAddr = line
        .strip_prefix("sidecar listening on http://")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"));
    let reports = Arc::new(AtomicU32::new(0));
    let counted = reports.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("accept failed") {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    // More idle connections than the table holds.
    let mut idle = Vec::new();
    for _ in 0..60 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let logged = reports.load(Ordering::SeqCst);
    assert!((1..=3).contains(&logged), "{logged} reports in 1.2 s");
    drop(idle);
    let client = hyper_client::<ReqBody>();
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(
            Request::get(format!("http://{addr}/echo"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .expect("served again")
    .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let _ = child.kill();
    let _ = child.wait();
}

/// The health report's entry for the breaker keyed by `upstream`.
fn upstream_breaker(
    health: &serde_json::Value,
    upstream: std::net::SocketAddr,
) -> &serde_json::Value {
    health["layers"]["breaker"]["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == format!("http://{upstream}"))
        .unwrap_or_else(|| panic!("no breaker for {upstream}: {health}"))
}

/// Sends `head_and_body` as raw bytes; with `close`, then ends its half of
/// the connection. Returns the whole answer, or what came within 10 s.
async fn raw_partial(addr: std::net::SocketAddr, head_and_body: &str, close: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head_and_body.as_bytes()).await.unwrap();
    if close {
        stream.shutdown().await.unwrap();
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// Issue 14, item 1: requests whose body is malformed (a bad chunk size),
/// truncated (the connection ends before `Content-Length` bytes) or slower
/// than the timeout are the caller's fault: answered 400, 400 and 408, not
/// counted by the breaker (two failures would open it) and not retried, so
/// every other caller is still served. The timeout is 300 ms of real time:
/// it is the sidecar's own timer on a real socket.
#[tokio::test]
async fn a_caller_s_bad_body_does_not_open_the_breaker() {
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let upstream = serve(axum::Router::new().fallback(move |body: Bytes| {
        counted.fetch_add(1, Ordering::SeqCst);
        async move { format!("got {} bytes", body.len()) }
    }))
    .await;
    for retry in ["", "[retry]\nmax_attempts = 3\n"] {
        let file = ConfigFile::new(
            "caller-fault",
            &format!(
                "[sidecar]\nupstream = \"http://{upstream}\"\n[timeout]\nrequest = \"300ms\"\n\
                 [breaker]\nfailure_threshold = 2\nopen_for = \"1h\"\nkey = \"authority\"\n{retry}"
            ),
        );
        let sidecar = start_sidecar(&["--config", file.path()]);
        let addr = sidecar.addr.unwrap();
        for method in ["POST", "PUT"] {
            for (request, close, status) in [
                (
                    format!("{method} / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
                    false,
                    "400",
                ),
                (
                    format!("{method} / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nhello"),
                    true,
                    "400",
                ),
                (
                    format!("{method} / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nhello"),
                    false,
                    "408",
                ),
            ] {
                let answer = raw_partial(addr, &request, close).await;
                assert!(
                    answer.starts_with(&format!("HTTP/1.1 {status}")),
                    "{retry:?} {request:?}: {answer}"
                );
            }
        }
        let res = fetch(addr, "/").await;
        assert_eq!(res.status(), StatusCode::OK, "{retry:?}");
        let health = json(fetch(addr, "/_shield/health").await).await;
        let breaker = upstream_breaker(&health, upstream);
        assert_eq!(breaker["state"], "closed", "{retry:?} {health}");
        assert_eq!(breaker["failures"], 0, "{retry:?} {health}");
    }
    // Only the good GETs reached the upstream whole.
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Issue 14, item 4, in the sidecar: a response body that stalls after its
/// head is ended after `[timeout] body_idle` (the caller's connection is
/// closed mid-body, and so is the upstream's) and counts as the upstream's
/// failure. 300 ms of real time: the sidecar's own timer on a real socket.
#[tokio::test]
async fn a_response_body_that_stalls_is_ended_and_counted() {
    let (upstream, mut closed) = stalling_upstream().await;
    let file = ConfigFile::new(
        "body-idle",
        &format!(
            "[sidecar]\nupstream = \"http://{upstream}\"\n[timeout]\nbody_idle = \"300ms\"\n\
             [breaker]\nfailure_threshold = 5\nkey = \"authority\"\n"
        ),
    );
    let sidecar = start_sidecar(&["--config", file.path()]);
    let addr = sidecar.addr.unwrap();
    let mut body = fetch(addr, "/stall").await.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first");
    let ended = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the sidecar ends the body");
    assert!(matches!(ended, Some(Err(_)) | None), "{ended:?}");
    tokio::time::timeout(Duration::from_secs(10), closed.recv())
        .await
        .expect("the upstream connection is ended")
        .unwrap();
    let health = json(fetch(addr, "/_shield/health").await).await;
    let breaker = upstream_breaker(&health, upstream);
    assert_eq!(breaker["failures"], 1, "{health}");
    assert_eq!(health["layers"]["timeout"]["body_idle_ms"], 300, "{health}");
}

/// Issue 14, item 4: `[timeout] request` bounds each attempt and
/// `[timeout] total` the whole call. Five attempts of 300 ms at an upstream
/// that never answers would take 1.5 s; a total of 400 ms answers 504 then.
/// Real time: the sidecar's own timers on a real socket.
#[tokio::test]
async fn the_total_timeout_bounds_every_attempt_together() {
    let upstream = serve(upstream()).await;
    let file = ConfigFile::new(
        "total",
        &format!(
            "[sidecar]\nupstream = \"http://{upstream}\"\n[timeout]\nrequest = \"300ms\"\ntotal = \"400ms\"\n\
             [retry]\nmax_attempts = 5\nbase_delay = \"1ms\"\nmax_delay = \"1ms\"\n"
        ),
    );
    let sidecar = start_sidecar(&["--config", file.path()]);
    let started = std::time::Instant::now();
    let res = fetch(sidecar.addr.unwrap(), "/pending").await;
    let took = started.elapsed();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_millis(1200),
        "{took:?}"
    );
}

/// Reads from `stream` until the sidecar closes it (or it resets), for at
/// most `within`; `true` if it was closed.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut sink = vec![0; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// Issue 14, item 2: a connection that sends nothing, half a request line,
/// or a head one header at a time (slowloris) is closed once
/// `header_read_timeout` has passed; an idle keep-alive connection stays
/// open past it and is closed after `idle_timeout`. Real time (200 ms and
/// 1 s): these are the sidecar's own timers on real sockets.
#[tokio::test]
async fn connections_that_keep_the_sidecar_waiting_are_closed() {
    use tokio::io::AsyncWriteExt;
    let upstream = serve(upstream()).await;
    let file = ConfigFile::new(
        "conn-timeouts",
        &format!(
            "[sidecar]\nupstream = \"http://{upstream}\"\nheader_read_timeout = \"200ms\"\nidle_timeout = \"1s\"\n"
        ),
    );
    let sidecar = start_sidecar(&["--config", file.path()]);
    let addr = sidecar.addr.unwrap();

    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)).await,
        "silent"
    );

    let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
    half.write_all(b"GET / HT").await.unwrap();
    assert!(
        closed_within(&mut half, Duration::from_secs(5)).await,
        "half a line"
    );

    // One header every 50 ms, for at most 3 s: still closed at ~200 ms.
    let slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = slow.into_split();
    let trickle = tokio::spawn(async move {
        let _ = write.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n").await;
        for i in 0..60 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if write
                .write_all(format!("x-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        use tokio::io::AsyncReadExt;
        let mut sink = [0; 64];
        while let Ok(n) = read.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "slowloris still open after {:?}",
        started.elapsed()
    );
    trickle.abort();

    // Keep-alive: one whole exchange, then idle. Open past the header read
    // timeout, closed by the idle timeout.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let mut conn = tokio::spawn(conn);
    let res = sender
        .send_request(
            Request::get("/echo")
                .header("host", "h")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut conn)
            .await
            .is_err(),
        "an idle keep-alive connection was closed by the header read timeout"
    );
    tokio::time::timeout(Duration::from_secs(5), &mut conn)
        .await
        .expect("closed by the idle timeout")
        .unwrap()
        .unwrap();
}

/// Issue 14, item 2: at `max_connections`, a new connection waits (in the
/// listen backlog) until an open one closes, then is served.
#[tokio::test]
async fn at_max_connections_new_connections_wait_their_turn() {
    let upstream = serve(upstream()).await;
    let file = ConfigFile::new(
        "max-connections",
        &format!("[sidecar]\nupstream = \"http://{upstream}\"\nmax_connections = 2\nworkers = 1\n"),
    );
    let sidecar = start_sidecar(&["--config", file.path()]);
    let addr = sidecar.addr.unwrap();
    let first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut third = tokio::spawn(fetch(addr, "/echo"));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "served past max_connections"
    );
    drop(first);
    let res = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// Waits, at most 5 s, until a line of `lines` contains `text`.
async fn wait_for(lines: &Lines, text: &str) {
    for _ in 0..500 {
        if lines.lock().unwrap().iter().any(|l| l.contains(text)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no line with {text:?} in {:?}", lines.lock().unwrap());
}

/// Issue 14, item 10: the sidecar logs to stderr through `tracing`: upstream
/// failures and breaker transitions, at the level `[sidecar] log` sets
/// (which `RUST_LOG` overrides), and at most 10 events a second from one
/// place, saying how many it held back. 1.1 s of real time, to let the
/// rate limit's second pass.
#[tokio::test]
async fn the_sidecar_logs_failures_and_transitions_rate_limited() {
    let count = |lines: &Lines, text: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(text))
            .count()
    };
    let closed = closed_port();
    let config = |log: &str| {
        format!(
            "[sidecar]\nupstream = \"http://{closed}\"\nlog = \"{log}\"\n\
             [breaker]\nfailure_threshold = 1000\nkey = \"authority\"\n"
        )
    };
    // `log = "error"`: no warnings.
    let quiet = ConfigFile::new("log-error", &config("error"));
    let lines = Lines::default();
    let sidecar = start_sidecar_with(&["--config", quiet.path()], &[], Some(lines.clone()));
    assert_eq!(
        fetch(sidecar.addr.unwrap(), "/").await.status(),
        StatusCode::BAD_GATEWAY
    );
    drop(sidecar);
    assert_eq!(
        count(&lines, "request failed"),
        0,
        "{:?}",
        lines.lock().unwrap()
    );

    // RUST_LOG wins over the file: a flood of 502s is logged, 10 a second.
    let lines = Lines::default();
    let sidecar = start_sidecar_with(
        &["--config", quiet.path()],
        &[("RUST_LOG", "warn")],
        Some(lines.clone()),
    );
    let addr = sidecar.addr.unwrap();
    for _ in 0..40 {
        assert_eq!(fetch(addr, "/").await.status(), StatusCode::BAD_GATEWAY);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    fetch(addr, "/").await;
    // The child's stderr arrives through a pipe: wait for the report, bounded.
    wait_for(&lines, "were held back").await;
    let failed = count(&lines, "request failed, answered 502 Bad Gateway");
    assert!((2..=21).contains(&failed), "{failed} lines logged");
    assert!(
        count(&lines, "were held back") >= 1,
        "{:?}",
        lines.lock().unwrap()
    );
    assert!(count(&lines, "Connection refused") >= 1);
    drop(sidecar);

    // At info, a breaker transition is logged.
    let upstream = serve(upstream()).await;
    let file = ConfigFile::new(
        "log-info",
        &format!(
            "[sidecar]\nupstream = \"http://{upstream}\"\nlog = \"info\"\n\
             [breaker]\nfailure_threshold = 1\nkey = \"authority\"\n"
        ),
    );
    let lines = Lines::default();
    let sidecar = start_sidecar_with(&["--config", file.path()], &[], Some(lines.clone()));
    assert_eq!(
        fetch(sidecar.addr.unwrap(), "/status/500").await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    wait_for(&lines, "circuit breaker transition").await;
    assert_eq!(
        count(&lines, "circuit breaker transition"),
        1,
        "{:?}",
        lines.lock().unwrap()
    );
}

/// Issue 14, item 10: a bad `[sidecar] log` or `RUST_LOG` is refused with
/// exit status 2 and a message naming it; a refused configuration is
/// logged as an error.
#[test]
fn a_bad_log_filter_is_refused() {
    let file = ConfigFile::new(
        "log-bad",
        "[sidecar]\nupstream = \"http://127.0.0.1:9\"\nlog = \"tower_shield=loud\"\n",
    );
    let (code, stderr) = refused(&["--config", file.path()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("sidecar.log"), "{stderr}");
    assert!(stderr.contains("ERROR"), "{stderr}");
    let (code, stderr) = refused_with(
        &[
            "--upstream",
            "http://127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
        ],
        &[("RUST_LOG", "tower_shield=loud")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("RUST_LOG"), "{stderr}");
}

/// Issue 15: with `[cache]` the sidecar is a shared cache in front of its
/// upstream: a repeated GET is answered from it (with `Age` and `x-cache`),
/// a stale entry is answered while the upstream fails (`stale-if-error`),
/// and `/_shield/health` reports the cache's statistics.
#[tokio::test]
async fn the_sidecar_caches_responses() {
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };
    let calls = Arc::new(AtomicU32::new(0));
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (counted, fail) = (calls.clone(), failing.clone());
    let upstream = serve(axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let fail = fail.load(Ordering::SeqCst);
        async move {
            if fail {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("cache-control", "no-store")],
                    "down",
                )
            } else {
                (
                    StatusCode::OK,
                    [("cache-control", "max-age=1, stale-if-error=600")],
                    "cached",
                )
            }
        }
    }))
    .await;
    let file = ConfigFile::new(
        "cache",
        &format!("[sidecar]\nupstream = \"http://{upstream}\"\n[cache]\nx_cache_header = true\n"),
    );
    let sidecar = start_sidecar(&["--config", file.path()]);
    let addr = sidecar.addr.unwrap();
    let first = fetch(addr, "/page").await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    let second = fetch(addr, "/page").await;
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert!(second.headers().contains_key("age"));
    assert_eq!(
        second.into_body().collect().await.unwrap().to_bytes(),
        "cached"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Stale after 1 s (real time: the sidecar's own clock), and the
    // upstream fails: the stored answer stands in.
    failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = fetch(addr, "/page").await;
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.headers()["x-cache"], "STALE");
    let health = json(fetch(addr, "/_shield/health").await).await;
    let cache = &health["layers"]["cache"];
    assert_eq!(cache["enabled"], true, "{health}");
    assert_eq!(cache["hits"], 1, "{health}");
    assert_eq!(cache["stale"], 1, "{health}");
    assert_eq!(cache["store"]["ok"], true, "{health}");
}

/// Issue 15: two sidecars with `store = "redis"` and one namespace are one
/// cache: what one stored, the other answers; the health report names the
/// store and says it answers.
#[cfg(feature = "redis")]
#[tokio::test]
async fn two_sidecars_share_a_cache_through_redis() {
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };
    let Some(url) = redis_url() else { return };
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let upstream = serve(axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { ([("cache-control", "max-age=60")], "shared") }
    }))
    .await;
    let namespace = format!("tower-shield-sidecar-test-{}", std::process::id());
    let file = ConfigFile::new(
        "cache-redis",
        &format!(
            "[sidecar]\nupstream = \"http://{upstream}\"\n[cache]\nstore = \"redis\"\nredis_url = \"{url}\"\n\
             namespace = \"{namespace}\"\nx_cache_header = true\n"
        ),
    );
    let one = start_sidecar(&["--config", file.path()]);
    let two = start_sidecar(&["--config", file.path()]);
    let path = format!("/fleet-{}", std::process::id());
    // Behind one public name, as a fleet is: the key is the Host and path.
    let get = |addr: std::net::SocketAddr| {
        hyper_client::<ReqBody>().request(
            Request::get(format!("http://{addr}{path}"))
                .header("host", "shop.example")
                .body(empty())
                .unwrap(),
        )
    };
    assert_eq!(
        get(one.addr.unwrap()).await.unwrap().headers()["x-cache"],
        "MISS"
    );
    let res = get(two.addr.unwrap()).await.unwrap();
    assert_eq!(res.headers()["x-cache"], "HIT");
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "shared"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let health = json(fetch(two.addr.unwrap(), "/_shield/health").await).await;
    assert_eq!(
        health["layers"]["cache"]["store"]["kind"], "redis",
        "{health}"
    );
    assert_eq!(health["layers"]["cache"]["store"]["ok"], true, "{health}");
}

/// Issue 16: `[auth]` verifies inbound service tokens (by reference, from
/// the environment), `[rate_limit]` limits each verified caller, and
/// `/_shield/health` reports both.
#[tokio::test]
async fn the_sidecar_verifies_tokens_and_limits_each_caller() {
    let upstream = serve(upstream()).await;
    let file = ConfigFile::new(
        "auth",
        &format!(
            "[sidecar]\nupstream = \"http://{upstream}\"\n\
             [auth]\nrealm = \"edge\"\n\
             [[auth.tokens]]\nservice = \"billing\"\nscopes = [\"orders:read\"]\nenv = \"SHIELD_TEST_BILLING\"\n\
             [[auth.tokens]]\nservice = \"search\"\nenv = \"SHIELD_TEST_SEARCH\"\n\
             [rate_limit]\nper_second = 1\nburst = 3\nkey = \"identity\"\nheaders = true\n"
        ),
    );
    let sidecar = start_sidecar_with(
        &["--config", file.path()],
        &[
            ("SHIELD_TEST_BILLING", "billing-secret"),
            ("SHIELD_TEST_SEARCH", "search-secret"),
        ],
        None,
    );
    let addr = sidecar.addr.unwrap();
    let call = |token: Option<&'static str>| async move {
        let mut req = Request::get(format!("http://{addr}/echo"));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        hyper_client::<ReqBody>()
            .request(req.body(empty()).unwrap())
            .await
            .unwrap()
    };

    let res = call(None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"edge\"");
    let res = call(Some("wrong")).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer realm=\"edge\", error=\"invalid_token\""
    );

    let mut statuses = Vec::new();
    for _ in 0..5 {
        let res = call(Some("billing-secret")).await;
        statuses.push(res.status());
        assert_eq!(res.headers()["ratelimit-policy"], "\"default\";q=3;w=3");
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(res.headers()["retry-after"], "1");
        } else {
            let echo = json(res).await;
            assert_eq!(
                header(&echo, "authorization"),
                [hex(b"Bearer billing-secret")]
            );
        }
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 429, 429].map(|s| StatusCode::from_u16(s).unwrap())
    );
    // Another caller is not limited by the first.
    assert_eq!(call(Some("search-secret")).await.status(), StatusCode::OK);

    let health = json(fetch(addr, "/_shield/health").await).await;
    let layers = &health["layers"];
    assert_eq!(layers["auth"]["static_tokens"], 2);
    assert_eq!(layers["rate_limit"]["allowed"], 4);
    assert_eq!(layers["rate_limit"]["denied"], 2);
    assert_eq!(layers["rate_limit"]["store"]["kind"], "memory");
    assert_eq!(layers["upstream_auth"]["enabled"], false);
}

/// A secret named by reference that is not there stops the sidecar at
/// start (exit 2), naming the variable or file.
#[test]
fn a_missing_secret_stops_the_sidecar_naming_it() {
    let cases = [
        (
            "[auth]\n[[auth.tokens]]\nservice = \"a\"\nenv = \"SHIELD_TEST_SURELY_UNSET\"\n",
            "environment variable SHIELD_TEST_SURELY_UNSET",
        ),
        (
            "[auth]\n[[auth.tokens]]\nservice = \"a\"\nfile = \"/nonexistent/shield-token\"\n",
            "file /nonexistent/shield-token",
        ),
        (
            "[upstream_auth]\ntoken = { env = \"SHIELD_TEST_SURELY_UNSET_TOO\" }\n",
            "environment variable SHIELD_TEST_SURELY_UNSET_TOO",
        ),
        (
            "[auth.jwt]\naudience = [\"a\"]\n[[auth.jwt.keys]]\nalg = \"RS256\"\nfile = \"/nonexistent/key.pem\"\n",
            "file /nonexistent/key.pem",
        ),
        (
            "[auth]\n[[auth.tokens]]\nservice = \"a\"\nenv = \"X\"\nvalue = \"both\"\n",
            "exactly one of",
        ),
        ("[rate_limit]\nper_second = 0\n", "per_second"),
        ("[rate_limit]\nkey = \"cookie\"\n", "key must be"),
        ("[auth]\n", "give [[auth.tokens]], [auth.jwt] or [auth.signature]"),
    ];
    for (i, (section, expected)) in cases.iter().enumerate() {
        let text = format!("[sidecar]\nupstream = \"http://127.0.0.1:9\"\n{section}");
        let file = ConfigFile::new(&format!("secret{i}"), &text);
        let (code, stderr) = refused(&["--config", file.path()]);
        assert_eq!(code, Some(2), "{section:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{section:?}: expected {expected:?} in {stderr}"
        );
    }
}

/// `[upstream_auth]` attaches its token to every forwarded request.
#[tokio::test]
async fn the_sidecar_attaches_its_upstream_token() {
    let upstream = serve(upstream()).await;
    let file = ConfigFile::new(
        "upstream-auth",
        &format!(
            "[sidecar]\nupstream = \"http://{upstream}\"\n\
             [upstream_auth]\ntoken = {{ env = \"SHIELD_TEST_UPSTREAM\" }}\n"
        ),
    );
    let sidecar = start_sidecar_with(
        &["--config", file.path()],
        &[("SHIELD_TEST_UPSTREAM", "to-the-upstream")],
        None,
    );
    let echo = json(fetch(sidecar.addr.unwrap(), "/echo").await).await;
    assert_eq!(
        header(&echo, "authorization"),
        [hex(b"Bearer to-the-upstream")]
    );
    let health = json(fetch(sidecar.addr.unwrap(), "/_shield/health").await).await;
    assert_eq!(health["layers"]["upstream_auth"]["enabled"], true);
}

/// `[auth.signature]`: RFC 9421 signed requests are verified at the edge
/// (body read ahead and forwarded whole), and a replay is refused.
#[tokio::test]
async fn the_sidecar_verifies_signed_requests() {
    use tower::ServiceExt;
    use tower_shield::auth::{SecretRef, SignLayer, SigningKey};
    let upstream = serve(upstream()).await;
    let file = ConfigFile::new(
        "signature",
        &format!(
            "[sidecar]\nupstream = \"http://{upstream}\"\n\
             [auth.signature]\nwindow = \"1m\"\n\
             [[auth.signature.keys]]\nkeyid = \"k1\"\nservice = \"ledger\"\nenv = \"SHIELD_TEST_SIG\"\n"
        ),
    );
    let sidecar = start_sidecar_with(
        &["--config", file.path()],
        &[("SHIELD_TEST_SIG", "the shared signing secret")],
        None,
    );
    let url = format!("http://{}/echo", sidecar.addr.unwrap());
    let signer = tower::ServiceBuilder::new()
        .layer(SignLayer::new(
            SigningKey::new("k1", &SecretRef::value("the shared signing secret")).unwrap(),
        ))
        .service(hyper_client::<String>());
    let req = Request::post(&url)
        .body("signed payload".to_owned())
        .unwrap();
    let res = signer.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let echo = json(res).await;
    assert_eq!(echo["body_sha256"], sha256_hex(b"signed payload"));

    // The same signed request again: its nonce is spent.
    let mut req = Request::post(&url).body("again".to_owned()).unwrap();
    tower_shield::auth::sign_request(
        &mut req,
        &SigningKey::new("k1", &SecretRef::value("the shared signing secret")).unwrap(),
    )
    .unwrap();
    let replay = || {
        let mut copy = Request::post(&url).body("again".to_owned()).unwrap();
        *copy.headers_mut() = req.headers().clone();
        copy
    };
    assert_eq!(
        hyper_client::<String>()
            .request(replay())
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        hyper_client::<String>()
            .request(replay())
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Unsigned: refused (no other verifier).
    let res = hyper_client::<String>()
        .request(Request::post(&url).body("x".to_owned()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let health = json(fetch(sidecar.addr.unwrap(), "/_shield/health").await).await;
    assert_eq!(health["layers"]["auth"]["signature_keys"], 1);
}

/// `[upstream_auth.jwt]`: the sidecar mints short-lived JWTs with its own
/// key for the upstream, one per lifetime.
#[tokio::test]
async fn the_sidecar_mints_jwts_for_its_upstream() {
    let upstream = serve(upstream()).await;
    let file = ConfigFile::new(
        "minted",
        &format!(
            "[sidecar]\nupstream = \"http://{upstream}\"\n\
             [upstream_auth.jwt]\nservice = \"edge\"\nalg = \"HS256\"\nkid = \"edge-1\"\n\
             audience = \"orders\"\nlifetime = \"10m\"\nkey = {{ env = \"SHIELD_TEST_JWT_KEY\" }}\n"
        ),
    );
    let secret = "a minting secret of at least 32 bytes";
    let sidecar = start_sidecar_with(
        &["--config", file.path()],
        &[("SHIELD_TEST_JWT_KEY", secret)],
        None,
    );
    let mut tokens = Vec::new();
    for _ in 0..3 {
        let echo = json(fetch(sidecar.addr.unwrap(), "/echo").await).await;
        let value = header(&echo, "authorization")[0];
        let bytes: Vec<u8> = (0..value.len() / 2)
            .map(|i| u8::from_str_radix(&value[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        tokens.push(String::from_utf8(bytes).unwrap());
    }
    // One token, cached for its lifetime.
    assert!(tokens.iter().all(|t| t == &tokens[0]));
    let token = tokens[0].strip_prefix("Bearer ").unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["orders"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(data.claims["sub"], "edge");
    assert_eq!(data.header.kid.as_deref(), Some("edge-1"));
    let health = json(fetch(sidecar.addr.unwrap(), "/_shield/health").await).await;
    assert_eq!(health["layers"]["upstream_auth"]["token_requests"], 1);
}
