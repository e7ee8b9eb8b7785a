//! The stacks, the error helper and the reverse-proxy layer, in process on
//! real loopback servers. Timeouts run on tokio's paused clock.

mod support;

use axum::{error_handling::HandleErrorLayer, routing::get, Router};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use std::{convert::Infallible, io, time::Duration};
use support::*;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_shield::{
    classify::{Class, Classify, ServerErrorsAsFailures},
    error::{error_response, handle_error, status_for, ErrorResponseLayer},
    proxy::{ReverseProxyLayer, UpstreamError},
    stack::{ClientStack, ServerStack},
    BoxError, ServiceBuilderExt,
};

fn assert_send_sync<T: Send + Sync>() {}
fn assert_send<T: Send>() {}

#[test]
fn services_and_futures_are_send_and_sync() {
    type Inner = tower::util::ServiceFn<
        fn(Request<String>) -> std::future::Ready<Result<Response<String>, Infallible>>,
    >;
    fn layered<L: tower::Layer<Inner>>(_: &L) -> std::marker::PhantomData<L::Service> {
        std::marker::PhantomData
    }
    fn send_sync<T: Send + Sync>(_: std::marker::PhantomData<T>) {}
    send_sync(layered(&ClientStack::new()));
    send_sync(layered(&ServerStack::new()));
    assert_send_sync::<tower_shield::proxy::ReverseProxy<Inner>>();
    assert_send_sync::<tower_shield::error::ErrorResponse<Inner>>();
    assert_send::<
        tower_shield::error::ErrorResponseFuture<
            std::future::Ready<Result<Response<String>, Infallible>>,
        >,
    >();
    assert_send::<
        tower_shield::proxy::ResponseFuture<
            std::future::Ready<Result<Response<String>, Infallible>>,
        >,
    >();
}

#[tokio::test(start_paused = true)]
async fn client_stack_times_out_a_stuck_upstream() {
    let upstream = serve(upstream()).await;
    let client = ServiceBuilder::new()
        .client_stack(ClientStack::new().timeout(Duration::from_secs(5)))
        .service(hyper_client::<Empty<Bytes>>());
    let started = tokio::time::Instant::now();
    let req = Request::get(format!("http://{upstream}/pending"))
        .body(Empty::new())
        .unwrap();
    let err = client.clone().oneshot(req).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(
        ServerErrorsAsFailures::new().classify(&Err::<Response<()>, _>(err)),
        Class::Retryable
    );

    // The same stack serves the next request.
    let req = Request::get(format!("http://{upstream}/echo"))
        .body(Empty::new())
        .unwrap();
    assert_eq!(client.oneshot(req).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn client_stack_passes_requests_and_bodies_through() {
    let upstream = serve(upstream()).await;
    for stack in [ClientStack::new(), ClientStack::new().no_timeout()] {
        let client = ServiceBuilder::new()
            .layer(stack)
            .service(hyper_client::<Full<Bytes>>());
        let req = Request::put(format!("http://{upstream}/echo/x?q=1"))
            .body(Full::new(Bytes::from_static(b"body bytes")))
            .unwrap();
        let res = client.oneshot(req).await.unwrap();
        let echo: serde_json::Value =
            serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(echo["method"], "PUT");
        assert_eq!(echo["uri"], "/echo/x?q=1");
        assert_eq!(echo["body_sha256"], sha256_hex(b"body bytes"));
    }
}

#[tokio::test]
async fn client_stack_reports_a_refused_connection_as_retryable() {
    let client = ServiceBuilder::new()
        .client_stack(ClientStack::new())
        .service(hyper_client::<Empty<Bytes>>());
    let req = Request::get(format!("http://{}/", closed_port()))
        .body(Empty::new())
        .unwrap();
    let result = client.oneshot(req).await;
    assert_eq!(
        ServerErrorsAsFailures::new().classify(&result),
        Class::Retryable
    );
    let err = result.unwrap_err();
    assert!(tower_shield::classify::is_connect_error(&*err));
    assert_eq!(status_for(&*err).0, StatusCode::BAD_GATEWAY);
}

/// A handler that never answers: only the stack's timer can end the call
/// (on tokio's paused clock, so no test waits in real time).
async fn slow() -> &'static str {
    std::future::pending().await
}

async fn get_status(addr: std::net::SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let req = Request::get(format!("http://{addr}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = hyper_client().request(req).await.unwrap();
    let status = res.status();
    (status, res.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test(start_paused = true)]
async fn server_stack_answers_504_on_an_axum_router() {
    let app = Router::new()
        .route("/slow", get(slow))
        .route("/fast", get(|| async { "fast" }))
        .layer(ServerStack::new().timeout(Duration::from_secs(2)));
    let addr = serve(app).await;
    let (status, body) = get_status(addr, "/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body, "Gateway Timeout: request timed out\n");
    assert_eq!(
        get_status(addr, "/fast").await,
        (StatusCode::OK, Bytes::from("fast"))
    );
}

#[tokio::test(start_paused = true)]
async fn handle_error_works_with_axums_handle_error_layer() {
    let app = Router::new().route("/slow", get(slow)).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(handle_error))
            .timeout(Duration::from_secs(1)),
    );
    let addr = serve(app).await;
    assert_eq!(
        get_status(addr, "/slow").await.0,
        StatusCode::GATEWAY_TIMEOUT
    );
}

#[test]
fn error_response_maps_each_error_to_its_status() {
    let cases: Vec<(BoxError, StatusCode)> = vec![
        (
            Box::new(tower::timeout::error::Elapsed::new()),
            StatusCode::GATEWAY_TIMEOUT,
        ),
        (
            Box::new(io::Error::from(io::ErrorKind::ConnectionReset)),
            StatusCode::BAD_GATEWAY,
        ),
        ("a handler bug".into(), StatusCode::INTERNAL_SERVER_ERROR),
    ];
    for (err, status) in cases {
        let res: Response<String> = error_response(&*err);
        assert_eq!(res.status(), status, "{err}");
        assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
        assert!(res.headers().get("retry-after").is_none());
        assert!(res.body().ends_with(&format!("{err}\n")), "{}", res.body());
    }
}

#[tokio::test]
async fn error_response_layer_never_fails_and_keeps_serving() {
    let mut calls = 0;
    let svc = service_fn(move |_req: Request<()>| {
        calls += 1;
        let odd = calls % 2 == 1;
        async move {
            if odd {
                Err::<Response<String>, BoxError>(Box::new(io::Error::from(
                    io::ErrorKind::BrokenPipe,
                )))
            } else {
                Ok(Response::new("fine".to_owned()))
            }
        }
    });
    let mut svc = ServiceBuilder::new()
        .layer(ErrorResponseLayer::new())
        .service(svc);
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(res.into_body(), "fine");
}

#[tokio::test]
async fn reverse_proxy_layer_over_a_real_client_and_upstream() {
    let upstream = serve(upstream()).await;
    let proxy = ServiceBuilder::new()
        .error_responses()
        .reverse_proxy(
            ReverseProxyLayer::new(format!("http://{upstream}/echo").parse().unwrap()).unwrap(),
        )
        .service(hyper_client::<Full<Bytes>>());
    let req = Request::post("/deep/path?a=b")
        .header("host", "public.example")
        .header("connection", "x-gone")
        .header("x-gone", "1")
        .body(Full::new(Bytes::from_static(b"xyz")))
        .unwrap();
    let res = proxy.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["via"], "1.1 tower-shield");
    let echo: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echo["uri"], "/echo/deep/path?a=b");
    assert_eq!(echo["body_sha256"], sha256_hex(b"xyz"));
    let names: Vec<&str> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"x-gone") && !names.contains(&"connection"),
        "{names:?}"
    );
    let host = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "host")
        .unwrap();
    assert_eq!(host[1], hex(upstream.to_string().as_bytes()));

    // A client failure is an `UpstreamError`, answered with 502.
    let down = ServiceBuilder::new()
        .reverse_proxy(
            ReverseProxyLayer::new(format!("http://{}", closed_port()).parse().unwrap()).unwrap(),
        )
        .service(hyper_client::<Full<Bytes>>());
    let err = down
        .clone()
        .oneshot(Request::new(Full::default()))
        .await
        .unwrap_err();
    assert!(err.is::<UpstreamError>());
    let res = ServiceBuilder::new()
        .error_responses()
        .service(down)
        .oneshot(Request::new(Full::default()));
    assert_eq!(res.await.unwrap().status(), StatusCode::BAD_GATEWAY);
}

/// The stacks take any breaker key and any classifier: one breaker per
/// upstream (`by_authority`) under a classifier that calls 404 a failure, on
/// two real servers: the failing one is cut off, the other is not.
#[cfg(feature = "breaker")]
#[tokio::test]
async fn client_stack_takes_any_key_and_classifier() {
    use tower_shield::{
        breaker::{self, CircuitBreakerLayer, Open},
        classify::{self, ClassifyExt},
    };
    let (bad, good) = (serve(upstream()).await, serve(upstream()).await);
    let not_found_fails = ServerErrorsAsFailures::new().or(classify::from_fn(
        |result: &Result<
            Response<tower_shield::body::IdleBody<hyper::body::Incoming>>,
            BoxError,
        >| match result {
            Ok(res) if res.status() == StatusCode::NOT_FOUND => Class::Failure,
            _ => Class::Success,
        },
    ));
    let layer = CircuitBreakerLayer::new(breaker::Config::default().failure_threshold(2))
        .unwrap()
        .by_authority()
        .classifier(not_found_fails);
    let stack = ClientStack::new().circuit_breaker(layer);
    let breakers = stack.breakers().unwrap();
    let client = ServiceBuilder::new()
        .client_stack(stack)
        .service(hyper_client::<Empty<Bytes>>());
    let get = |addr: std::net::SocketAddr, path: &str| {
        client.clone().oneshot(
            Request::get(format!("http://{addr}{path}"))
                .body(Empty::new())
                .unwrap(),
        )
    };
    for _ in 0..2 {
        let res = get(bad, "/status/404").await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
    let err = get(bad, "/echo").await.unwrap_err();
    assert!(err.is::<Open>(), "{err}");
    assert_eq!(get(good, "/echo").await.unwrap().status(), StatusCode::OK);
    let mut keys = breakers.keys();
    keys.sort();
    let mut expected = vec![format!("http://{bad}"), format!("http://{good}")];
    expected.sort();
    assert_eq!(keys, expected);
}

/// A server stack with a keyed breaker and a custom classifier sheds load
/// with 503 for the failing route only.
#[cfg(feature = "breaker")]
#[tokio::test]
async fn server_stack_takes_any_key_and_classifier() {
    use tower_shield::{
        breaker::{self, CircuitBreakerLayer, KeyBy},
        classify::{Class, StatusInRange},
    };
    let layer = CircuitBreakerLayer::new(breaker::Config::default().failure_threshold(1))
        .unwrap()
        .keyed_by(KeyBy::Route)
        .classifier(StatusInRange::new(418..=418, Class::Failure));
    let app = Router::new()
        .route("/teapot", get(|| async { StatusCode::IM_A_TEAPOT }))
        .route("/fine", get(|| async { "fine" }))
        .layer(ServerStack::new().circuit_breaker(layer));
    let addr = serve(app).await;
    assert_eq!(get_status(addr, "/teapot").await.0, StatusCode::IM_A_TEAPOT);
    assert_eq!(
        get_status(addr, "/teapot").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get_status(addr, "/fine").await.0, StatusCode::OK);
}

/// Retry goes straight over a bare hyper-util client, whose error type has
/// no `AsStdError`: no `map_err` is needed, and a 503 then a 200 from a
/// real server is one successful call.
#[cfg(feature = "retry")]
#[tokio::test(start_paused = true)]
async fn retry_wraps_a_bare_hyper_client() {
    use std::sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    };
    use tower_shield::{
        body::ReplayBody,
        retry::{self, Attempts},
    };
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let app = Router::new().route(
        "/",
        get(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let addr = serve(app).await;
    let client = ServiceBuilder::new()
        .retries(retry::Config::default().base_delay(Duration::from_millis(1)))
        .unwrap()
        .service(hyper_client::<ReplayBody<Empty<Bytes>>>());
    let req = Request::get(format!("http://{addr}/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = client.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(Attempts::of(&res), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// The stacks a configuration file describes: with `[breaker]` and
/// `[context]` they hold both (requests carry a `traceparent`, the breakers
/// are reachable), without them neither.
#[cfg(all(feature = "config", feature = "breaker", feature = "context"))]
#[tokio::test]
async fn stacks_from_a_configuration_file() {
    use tower_shield::config::Config;
    let upstream = serve(upstream()).await;
    let full =
        Config::from_toml("[breaker]\nkey = \"route\"\n[context]\nservice_name = \"edge\"\n")
            .unwrap();
    let stack = ClientStack::from_config(&full).unwrap();
    let breakers = stack.breakers().expect("[breaker] is there");
    assert!(ServerStack::from_config(&full)
        .unwrap()
        .breakers()
        .is_some());
    let client = ServiceBuilder::new()
        .client_stack(stack)
        .service(hyper_client::<Empty<Bytes>>());
    let req = Request::get(format!("http://{upstream}/echo"))
        .body(Empty::new())
        .unwrap();
    let res = client.oneshot(req).await.unwrap();
    let echo: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let sent: Vec<&str> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        .collect();
    assert!(sent.contains(&"traceparent"), "{sent:?}");
    assert!(sent.contains(&"x-service-name"), "{sent:?}");
    assert_eq!(breakers.keys(), vec!["/echo".to_owned()]);

    let empty = Config::from_toml("").unwrap();
    assert!(ClientStack::from_config(&empty)
        .unwrap()
        .breakers()
        .is_none());
    assert!(ServerStack::from_config(&empty)
        .unwrap()
        .breakers()
        .is_none());
    let client = ServiceBuilder::new()
        .client_stack(ClientStack::from_config(&empty).unwrap())
        .service(hyper_client::<Empty<Bytes>>());
    let req = Request::get(format!("http://{upstream}/echo"))
        .body(Empty::new())
        .unwrap();
    let res = client.oneshot(req).await.unwrap();
    let echo: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert!(!echo["headers"].to_string().contains("traceparent"));
}

#[cfg(feature = "breaker")]
#[test]
fn a_server_stack_gives_its_breakers() {
    use tower_shield::breaker::{CircuitBreakerLayer, Config};
    assert!(ServerStack::new().breakers().is_none());
    let layer = CircuitBreakerLayer::new(Config::default()).unwrap();
    let breakers = ServerStack::new()
        .circuit_breaker(layer)
        .breakers()
        .unwrap();
    assert!(breakers.is_empty());
}

/// Sends `head_and_body` as raw bytes and returns the answer's status line.
async fn raw_status(addr: std::net::SocketAddr, head_and_body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head_and_body.as_bytes()).await.unwrap();
    let mut answer = vec![0; 1024];
    let n = stream.read(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Issue 14, item 1, on `ServerStack`: a request body slower than the
/// timeout is the caller's fault, 408, and not counted by the breaker (one
/// failure would open it); a malformed one is 400.
#[cfg(feature = "breaker")]
#[tokio::test(start_paused = true)]
async fn server_stack_blames_a_slow_or_broken_body_on_the_caller() {
    use tower_shield::breaker::{self, CircuitBreakerLayer};
    let stack = ServerStack::new()
        .timeout(Duration::from_secs(2))
        .circuit_breaker(
            CircuitBreakerLayer::new(breaker::Config::default().failure_threshold(1)).unwrap(),
        );
    let breakers = stack.breakers().unwrap();
    let app = Router::new()
        .route(
            "/",
            axum::routing::post(|body: Bytes| async move { format!("{} bytes", body.len()) }),
        )
        .layer(stack);
    let addr = serve(app).await;
    for _ in 0..3 {
        let slow = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nhello";
        assert_eq!(raw_status(addr, slow).await, "HTTP/1.1 408 Request Timeout");
        let broken =
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n";
        assert_eq!(raw_status(addr, broken).await, "HTTP/1.1 400 Bad Request");
    }
    let whole = "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(raw_status(addr, whole).await, "HTTP/1.1 200 OK");
    let breaker = &breakers.all()[0];
    assert_eq!(breaker.state(), breaker::State::Closed);
    assert_eq!(breaker.metrics().failures, 0);
}

/// Issue 14, item 1, on `ClientStack`: with the body wrapped where it comes
/// from (`CallerBodyLayer`), a request body that stalls past the timeout is
/// a 408 fault of the caller's and one that fails is a 400; neither counts
/// for the breaker, and neither is retryable.
#[cfg(feature = "breaker")]
#[tokio::test(start_paused = true)]
async fn client_stack_does_not_count_the_caller_s_own_body() {
    use futures_util::StreamExt;
    use http_body_util::{combinators::BoxBody, StreamBody};
    use hyper::body::Frame;
    use tower_shield::{
        body::CallerBodyLayer,
        breaker::{self, CircuitBreakerLayer},
        error::find_fault,
    };
    type Body = BoxBody<Bytes, io::Error>;
    let stalls = || -> Body {
        let first = futures_util::stream::iter([Ok(Frame::data(Bytes::from("hello")))]);
        BodyExt::boxed(StreamBody::new(
            first.chain(futures_util::stream::pending()),
        ))
    };
    let fails = || -> Body {
        let frames = [
            Ok(Frame::data(Bytes::from("hello"))),
            Err(io::Error::other("the source broke")),
        ];
        BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))
    };
    let upstream = serve(upstream()).await;
    let stack = ClientStack::new()
        .timeout(Duration::from_secs(2))
        .circuit_breaker(
            CircuitBreakerLayer::new(breaker::Config::default().failure_threshold(1)).unwrap(),
        );
    let breakers = stack.breakers().unwrap();
    let client = ServiceBuilder::new()
        .layer(CallerBodyLayer::new())
        .client_stack(stack)
        .service(hyper_client());
    let put = |body: Body| {
        client.clone().oneshot(
            Request::put(format!("http://{upstream}/sink"))
                .body(body)
                .unwrap(),
        )
    };
    for _ in 0..3 {
        for (body, status) in [
            (stalls(), StatusCode::REQUEST_TIMEOUT),
            (fails(), StatusCode::BAD_REQUEST),
        ] {
            let err = put(body).await.unwrap_err();
            assert_eq!(find_fault(&*err).map(|f| f.status()), Some(status), "{err}");
            assert_eq!(status_for(&*err).0, status);
            assert_eq!(
                ServerErrorsAsFailures::new().classify(&Err::<Response<()>, _>(err)),
                Class::Success
            );
        }
    }
    let whole = BodyExt::boxed(Full::new(Bytes::from("hello")).map_err(|never| match never {}));
    assert_eq!(put(whole).await.unwrap().status(), StatusCode::OK);
    let breaker = &breakers.all()[0];
    assert_eq!(breaker.state(), breaker::State::Closed);
    assert_eq!(breaker.metrics().failures, 0);
}

/// Issue 14, item 4, on `ClientStack`: a response body that stalls after
/// its head fails after the body idle timeout with a 504 fault, its
/// connection is ended, and the breaker counts the call as a failure.
#[cfg(feature = "breaker")]
#[tokio::test(start_paused = true)]
async fn client_stack_ends_a_response_body_that_stalls() {
    use tower_shield::{
        breaker::{self, CircuitBreakerLayer},
        error::find_fault,
    };
    let (upstream, mut closed) = stalling_upstream().await;
    let stack = ClientStack::new()
        .body_idle_timeout(Duration::from_secs(30))
        .circuit_breaker(
            CircuitBreakerLayer::new(breaker::Config::default().failure_threshold(1)).unwrap(),
        );
    let breakers = stack.breakers().unwrap();
    let client = ServiceBuilder::new()
        .client_stack(stack)
        .service(hyper_client::<Empty<Bytes>>());
    let req = Request::get(format!("http://{upstream}/stall"))
        .body(Empty::new())
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut body = client.oneshot(req).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first");
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    assert_eq!(
        find_fault(&*err).map(|f| f.status()),
        Some(StatusCode::GATEWAY_TIMEOUT),
        "{err}"
    );
    assert!(body.frame().await.is_none());
    closed
        .recv()
        .await
        .expect("the upstream connection was ended");
    let breaker = &breakers.all()[0];
    assert_eq!(breaker.metrics().failures, 1);
    assert_eq!(breaker.state(), breaker::State::Open);
}

/// Without a body idle timeout the same body still waits (the default is
/// 30 s; `no_body_idle_timeout` turns it off).
#[tokio::test(start_paused = true)]
async fn client_stack_without_a_body_idle_timeout_waits() {
    let (upstream, _closed) = stalling_upstream().await;
    let client = ServiceBuilder::new()
        .client_stack(ClientStack::new().no_body_idle_timeout())
        .service(hyper_client::<Empty<Bytes>>());
    let req = Request::get(format!("http://{upstream}/stall"))
        .body(Empty::new())
        .unwrap();
    let mut body = client.oneshot(req).await.unwrap().into_body();
    body.frame().await.unwrap().unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(3600), body.frame()).await;
    assert!(waited.is_err(), "the body ended: {waited:?}");
}

/// Issue 16: on a server the order is context, then auth, then the rate
/// limit: a refused call still carries its request ID, and the limit
/// counts verified callers; on a client the stack attaches the token.
#[cfg(all(feature = "auth", feature = "limit", feature = "context"))]
#[tokio::test]
async fn stacks_carry_auth_and_rate_limits_in_their_order() {
    use tower_shield::{auth, context, limit};
    let tokens = auth::StaticTokens::load(vec![auth::TokenEntry::new(
        "billing",
        auth::SecretRef::value("stack-token"),
    )])
    .unwrap();
    let limit = limit::RateLimitLayer::new(limit::RateLimitConfig::new(1.0, 2)).unwrap();
    let stack = ServerStack::new()
        .context(context::Config::new())
        .auth(auth::AuthLayer::new().static_tokens(tokens))
        .rate_limit(limit.clone());
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = calls.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { "in" }
            }),
        )
        .layer(stack);
    let addr = serve(app).await;

    // Refused by auth: 401, with the request's ID; not counted by the limit.
    let res = hyper_client::<Empty<Bytes>>()
        .request(
            Request::get(format!("http://{addr}/"))
                .header("x-request-id", "req-401")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["x-request-id"], "req-401");
    assert_eq!(limit.stats().allowed + limit.stats().denied, 0);

    // The client stack attaches the token; the third call is limited.
    let client = ServiceBuilder::new()
        .client_stack(ClientStack::new().auth(auth::AttachLayer::new(
            auth::Credentials::bearer(&auth::SecretRef::value("stack-token")).unwrap(),
        )))
        .service(hyper_client::<Empty<Bytes>>());
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let req = Request::get(format!("http://{addr}/"))
            .body(Empty::new())
            .unwrap();
        let res = client.clone().oneshot(req).await.unwrap();
        statuses.push(res.status());
        assert!(res.headers().contains_key("x-request-id"));
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}
