//! The retry layer through its public API: a real hyper client to a real
//! axum server on 127.0.0.1, on tokio's paused clock (backoff sleeps take
//! no real time).

#![cfg(all(feature = "retry", feature = "breaker"))]

mod support;

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode},
    response::IntoResponse,
    routing::any,
    Router,
};
use futures_util::stream;
use http::Request;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_shield::{
    body::ReplayBody,
    retry::{Attempts, Config, Jitter, Repeatable, RetryLayer},
    BoxError,
};

/// What the upstream saw, and how it answers: `fail_first` requests get
/// `status` (with `retry_after` if set), the rest 200.
#[derive(Default)]
struct Script {
    fail_first: usize,
    status: u16,
    retry_after: Option<String>,
    seen: Vec<(Method, String, Instant)>,
}

#[derive(Clone, Default)]
struct Upstream(Arc<Mutex<Script>>);

impl Upstream {
    fn failing(fail_first: usize, status: u16) -> Self {
        Self(Arc::new(Mutex::new(Script {
            fail_first,
            status,
            ..Script::default()
        })))
    }

    fn retry_after(self, value: &str) -> Self {
        self.0.lock().unwrap().retry_after = Some(value.to_owned());
        self
    }

    fn seen(&self) -> Vec<(Method, String, Instant)> {
        self.0.lock().unwrap().seen.clone()
    }

    async fn serve(&self) -> SocketAddr {
        let app = Router::new()
            .route("/", any(handle))
            .with_state(self.clone());
        support::serve(app).await
    }
}

async fn handle(State(up): State<Upstream>, method: Method, body: Bytes) -> impl IntoResponse {
    let mut script = up.0.lock().unwrap();
    let digest = support::sha256_hex(&body);
    script.seen.push((method, digest, Instant::now()));
    let mut headers = HeaderMap::new();
    if script.seen.len() <= script.fail_first {
        if let Some(after) = &script.retry_after {
            headers.insert("retry-after", after.parse().unwrap());
        }
        (StatusCode::from_u16(script.status).unwrap(), headers)
    } else {
        (StatusCode::OK, headers)
    }
}

type Client<B> = tower::util::MapErr<
    hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        ReplayBody<B>,
    >,
    fn(hyper_util::client::legacy::Error) -> BoxError,
>;

fn client<B>(layer: &RetryLayer) -> tower_shield::retry::Retry<Client<B>>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<BoxError>,
{
    let to_box: fn(hyper_util::client::legacy::Error) -> BoxError = BoxError::from;
    ServiceBuilder::new()
        .layer(layer.clone())
        .service(support::hyper_client::<ReplayBody<B>>().map_err(to_box))
}

/// A GET to `addr` through a fresh client with `layer`, which must answer.
async fn get_via(layer: &RetryLayer, addr: SocketAddr) -> http::Response<hyper::body::Incoming> {
    client::<Empty<Bytes>>(layer)
        .oneshot(get(addr))
        .await
        .expect("the retried GET gets an answer")
}

fn fast() -> Config {
    Config::default()
        .base_delay(Duration::from_millis(100))
        .jitter(Jitter::None)
}

/// A GET with no body to `addr`.
fn get(addr: SocketAddr) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{addr}/"))
        .body(Empty::new())
        .unwrap()
}

fn attempts<B>(res: &http::Response<B>) -> u32 {
    Attempts::of(res)
}

#[tokio::test(start_paused = true)]
async fn fails_twice_then_succeeds_gives_one_success() {
    let up = Upstream::failing(2, 503);
    let addr = up.serve().await;
    let layer = RetryLayer::new(fast()).unwrap();
    let res = get_via(&layer, addr).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(attempts(&res), 3);
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    // Backoff without jitter: 100 ms, then 200 ms.
    assert!(seen[1].2 - seen[0].2 >= Duration::from_millis(100));
    assert!(seen[2].2 - seen[1].2 >= Duration::from_millis(200));
    assert_eq!(layer.metrics().retries, 2);
}

#[tokio::test(start_paused = true)]
async fn never_more_than_max_attempts() {
    let up = Upstream::failing(usize::MAX, 502);
    let addr = up.serve().await;
    for max in [1, 2, 4] {
        let before = up.seen().len();
        let layer = RetryLayer::new(fast().max_attempts(max)).unwrap();
        let res = get_via(&layer, addr).await;
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(attempts(&res), max);
        assert_eq!(up.seen().len() - before, max as usize);
    }
}

#[tokio::test(start_paused = true)]
async fn post_is_not_retried_but_post_with_idempotency_key_is() {
    let up = Upstream::failing(usize::MAX, 503);
    let addr = up.serve().await;
    let layer = RetryLayer::new(fast()).unwrap();
    let res = client::<Full<Bytes>>(&layer)
        .oneshot(
            Request::post(format!("http://{addr}/"))
                .body(Full::new(Bytes::from("order 1")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts(&res), 1);
    assert_eq!(up.seen().len(), 1);

    let res = client::<Full<Bytes>>(&layer)
        .oneshot(
            Request::post(format!("http://{addr}/"))
                .header("idempotency-key", "order-1")
                .body(Full::new(Bytes::from("order 1")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(attempts(&res), 3);
    let seen = up.seen();
    assert_eq!(seen.len(), 4);
    let digest = support::sha256_hex(b"order 1");
    assert!(seen
        .iter()
        .all(|(m, d, _)| m == Method::POST && *d == digest));
}

/// Whether a request may be repeated is asked only when its answer could
/// be retried; a request without a body is the case where nothing else
/// decides it first.
#[tokio::test(start_paused = true)]
async fn a_post_without_a_body_is_retried_only_when_marked_repeatable() {
    let up = Upstream::failing(usize::MAX, 503);
    let addr = up.serve().await;
    let post = |repeatable: bool| {
        let mut req = Request::post(format!("http://{addr}/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        if repeatable {
            req.extensions_mut().insert(Repeatable);
        }
        req
    };
    let layer = RetryLayer::new(fast()).unwrap();
    let res = client(&layer).oneshot(post(false)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!((attempts(&res), up.seen().len()), (1, 1));

    let res = client(&layer).oneshot(post(true)).await.unwrap();
    assert_eq!((attempts(&res), up.seen().len()), (3, 4));

    // Or when the layer is told every method may be repeated.
    let layer = RetryLayer::new(fast().retry_non_idempotent(true)).unwrap();
    let res = client(&layer).oneshot(post(false)).await.unwrap();
    assert_eq!((attempts(&res), up.seen().len()), (3, 7));
}

/// A body of `chunks` chunks of `size` bytes, of unknown length.
fn chunked(
    chunks: usize,
    size: usize,
) -> (
    impl http_body::Body<Data = Bytes, Error = Infallible> + Unpin,
    String,
) {
    let data: Vec<u8> = (0..chunks * size).map(|i| (i * 7 % 251) as u8).collect();
    let digest = support::sha256_hex(&data);
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = data
        .chunks(size)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    (StreamBody::new(stream::iter(frames)), digest)
}

#[tokio::test(start_paused = true)]
async fn every_attempt_sends_the_same_body() {
    let up = Upstream::failing(2, 503);
    let addr = up.serve().await;
    let layer = RetryLayer::new(fast()).unwrap();

    // Chunked, of unknown length: 40 KiB in 1 KiB chunks.
    let (body, digest) = chunked(40, 1024);
    let mut svc = client(&layer);
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(Request::put(format!("http://{addr}/")).body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|(_, d, _)| *d == digest), "{seen:?}");

    // Fixed length: 64 KiB exactly, the default limit.
    let up = Upstream::failing(2, 503);
    let addr = up.serve().await;
    let data: Vec<u8> = (0..64 * 1024).map(|i| (i % 13) as u8).collect();
    let res = client::<Full<Bytes>>(&layer)
        .oneshot(
            Request::put(format!("http://{addr}/"))
                .body(Full::new(Bytes::from(data.clone())))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(attempts(&res), 3);
    let digest = support::sha256_hex(&data);
    assert!(up.seen().iter().all(|(_, d, _)| *d == digest));
}

#[tokio::test(start_paused = true)]
async fn an_over_limit_body_streams_once_and_is_not_retried() {
    let up = Upstream::failing(usize::MAX, 503);
    let addr = up.serve().await;
    let layer = RetryLayer::new(fast().max_replay_body(4 * 1024)).unwrap();
    // Unknown length, outgrows the limit while being read.
    let (body, digest) = chunked(16, 1024);
    let res = client(&layer)
        .oneshot(Request::put(format!("http://{addr}/")).body(body).unwrap())
        .await
        .unwrap();
    assert_eq!(attempts(&res), 1);
    // Declared length over the limit: not read ahead at all.
    let data = vec![7u8; 5000];
    let res = client::<Full<Bytes>>(&layer)
        .oneshot(
            Request::put(format!("http://{addr}/"))
                .body(Full::new(Bytes::from(data.clone())))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(attempts(&res), 1);
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].1, digest, "the streamed body arrives whole");
    assert_eq!(seen[1].1, support::sha256_hex(&data));
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_seconds_and_as_a_date() {
    let up = Upstream::failing(1, 503).retry_after("3");
    let addr = up.serve().await;
    let layer = RetryLayer::new(fast()).unwrap();
    let res = get_via(&layer, addr).await;
    assert_eq!(res.status(), StatusCode::OK);
    let seen = up.seen();
    assert!(seen[1].2 - seen[0].2 >= Duration::from_secs(3));

    // An HTTP date 6 s from now (the wall clock, which pausing does not stop).
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(6));
    let up = Upstream::failing(1, 429).retry_after(&date);
    let addr = up.serve().await;
    let res = get_via(&layer, addr).await;
    assert_eq!(res.status(), StatusCode::OK);
    let seen = up.seen();
    let waited = seen[1].2 - seen[0].2;
    assert!(
        waited >= Duration::from_secs(4) && waited <= Duration::from_secs(6),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_the_deadline_returns_the_response() {
    let up = Upstream::failing(usize::MAX, 503).retry_after("20");
    let addr = up.serve().await;
    let layer = RetryLayer::new(fast().deadline(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let res = get_via(&layer, addr).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts(&res), 1);
    assert!(start.elapsed() < Duration::from_secs(1));

    // A backoff that would end after the deadline ends the retries too.
    let up = Upstream::failing(usize::MAX, 503);
    let addr = up.serve().await;
    let layer = RetryLayer::new(
        fast()
            .max_attempts(10)
            .base_delay(Duration::from_secs(1))
            .deadline(Duration::from_secs(5)),
    )
    .unwrap();
    let res = get_via(&layer, addr).await;
    // 1 s + 2 s fit in 5 s; 4 s more would not.
    assert_eq!(attempts(&res), 3);

    // An upstream asking for u64::MAX seconds, under a cap that lets it
    // ask: a wait past the deadline, so the answer comes at once.
    let up = Upstream::failing(usize::MAX, 503).retry_after(&u64::MAX.to_string());
    let addr = up.serve().await;
    let layer = RetryLayer::new(
        fast()
            .max_retry_after(Duration::MAX)
            .deadline(Duration::from_secs(10)),
    )
    .unwrap();
    let res = get_via(&layer, addr).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts(&res), 1);
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_a_retry_storm() {
    let up = Upstream::failing(usize::MAX, 503);
    let addr = up.serve().await;
    let layer = RetryLayer::new(fast().budget_percent(20.0).budget_min_per_sec(1)).unwrap();
    let svc = client::<Empty<Bytes>>(&layer);
    let burst = (0..50).map(|_| svc.clone().oneshot(get(addr)));
    let results = futures_util::future::join_all(burst).await;
    assert!(results.iter().all(|r| r.as_ref().unwrap().status() == 503));
    let m = layer.metrics();
    // Without a budget: 50 requests and 100 retries. The budget allows
    // 20% of 50 plus a reserve of 1 per second over its 10 s window.
    assert!(m.retries <= 20, "{m:?}");
    assert!(m.budget_exhausted > 0, "{m:?}");
    assert_eq!(up.seen().len() as u64, 50 + m.retries);
}

#[tokio::test(start_paused = true)]
async fn connect_errors_are_retried_for_any_method_without_a_body() {
    let closed = support::closed_port();
    let layer = RetryLayer::new(fast()).unwrap();
    let err = client::<Empty<Bytes>>(&layer)
        .oneshot(
            Request::post(format!("http://{closed}/"))
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(tower_shield::classify::is_connect_error(&*err));
    assert_eq!(layer.metrics().retries, 2);

    // With a body it was not read ahead, so it cannot be sent again.
    let layer = RetryLayer::new(fast()).unwrap();
    let _ = client::<Full<Bytes>>(&layer)
        .oneshot(
            Request::post(format!("http://{closed}/"))
                .body(Full::new(Bytes::from("x")))
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(layer.metrics().retries, 0);
}

#[tokio::test(start_paused = true)]
async fn a_broken_request_body_is_a_clear_error_and_the_next_request_is_served() {
    let up = Upstream::failing(0, 200);
    let addr = up.serve().await;
    let layer = RetryLayer::new(fast()).unwrap();
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
        Ok(Frame::data(Bytes::from("part"))),
        Err(std::io::Error::other("client went away")),
    ];
    let err = client(&layer)
        .oneshot(
            Request::put(format!("http://{addr}/"))
                .body(StreamBody::new(stream::iter(frames)))
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("client went away"), "{err}");
    assert!(up.seen().is_empty(), "a broken body is never sent");
    let res = client::<Full<Bytes>>(&layer)
        .oneshot(
            Request::put(format!("http://{addr}/"))
                .body(Full::new(Bytes::from("ok")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty());
}

/// Retry outside a circuit breaker: a rejection by the open breaker is
/// waited out only when its remaining open time fits in the deadline.
#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_waited_out_only_within_the_deadline() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use tower_shield::breaker::{self, CircuitBreakerLayer, Open};

    for deadline in [None, Some(Duration::from_secs(5))] {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        // The first call fails (503) and opens the breaker; later ones succeed.
        let inner = tower::service_fn(move |_req: Request<ReplayBody<Empty<Bytes>>>| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let status = if n == 0 { 503 } else { 200 };
                Ok::<_, Infallible>(http::Response::builder().status(status).body(()).unwrap())
            }
        });
        let breaker = CircuitBreakerLayer::new(
            breaker::Config::default()
                .consecutive_failures(1)
                .open_for(Duration::from_secs(2))
                .close_after(1),
        )
        .unwrap();
        let mut config = fast();
        if let Some(d) = deadline {
            config = config.deadline(d);
        }
        let layer = RetryLayer::new(config).unwrap();
        let svc = ServiceBuilder::new()
            .layer(layer.clone())
            .layer(breaker)
            .service(inner);
        let start = Instant::now();
        let result = svc
            .oneshot(
                Request::get("http://127.0.0.1/")
                    .body(Empty::new())
                    .unwrap(),
            )
            .await;
        match deadline {
            None => {
                let err = result.unwrap_err();
                assert!(err.is::<Open>(), "{err}");
                assert_eq!(calls.load(Ordering::SeqCst), 1);
                assert_eq!(layer.metrics().retries, 1);
            }
            Some(_) => {
                let res = result.unwrap();
                assert_eq!(res.status(), StatusCode::OK);
                assert_eq!(Attempts::of(&res), 3);
                assert_eq!(
                    calls.load(Ordering::SeqCst),
                    2,
                    "the open breaker was not hammered"
                );
                assert!(start.elapsed() >= Duration::from_secs(2));
            }
        }
    }
}

/// A per-attempt timeout inside the retry: an attempt that hangs is cut off
/// by the client stack's timeout and retried; the caller gets the answer of
/// the next attempt.
#[tokio::test(start_paused = true)]
async fn a_timed_out_attempt_is_retried() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use tower_shield::{stack::ClientStack, ServiceBuilderExt};

    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let inner = tower::service_fn(move |_req: Request<ReplayBody<Empty<Bytes>>>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                std::future::pending::<()>().await;
            }
            Ok::<_, Infallible>(http::Response::new(()))
        }
    });
    let layer = RetryLayer::new(fast()).unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .client_stack(ClientStack::new().timeout(Duration::from_secs(1)))
        .service(inner);
    let start = Instant::now();
    let res = svc
        .oneshot(
            Request::get("http://127.0.0.1/")
                .body(Empty::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(Attempts::of(&res), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // One timeout (1 s) and one backoff (100 ms).
    assert!(start.elapsed() >= Duration::from_millis(1100));
    assert!(start.elapsed() < Duration::from_secs(2));
}

/// The budget counts requests: with no per-second reserve and 50%, a retry
/// is allowed only once two requests were counted.
#[tokio::test(start_paused = true)]
async fn the_budget_is_earned_by_requests() {
    let layer = RetryLayer::new(
        fast()
            .budget_min_per_sec(0)
            .budget_percent(50.0)
            .max_attempts(2),
    )
    .unwrap();
    // One request counted (the failing one): half a retry, not enough.
    let addr = Upstream::failing(1, 503).serve().await;
    let res = get_via(&layer, addr).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(layer.metrics().budget_exhausted, 1);
    // A second request earns the retry.
    let addr = Upstream::failing(1, 503).serve().await;
    assert_eq!(get_via(&layer, addr).await.status(), StatusCode::OK);
    assert_eq!(layer.metrics().retries, 1);
}

/// A response of one attempt carries no `Attempts` extension, retried or
/// not; one of more attempts does.
#[tokio::test(start_paused = true)]
async fn only_a_retried_response_carries_attempts() {
    let up = Upstream::failing(1, 503);
    let addr = up.serve().await;
    let layer = RetryLayer::new(fast()).unwrap();
    let post = Request::post(format!("http://{addr}/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = client::<Empty<Bytes>>(&layer).oneshot(post).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.extensions().get::<Attempts>().is_none());
    let res = get_via(&layer, addr).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.extensions().get::<Attempts>().is_none());
    let up = Upstream::failing(1, 503);
    let addr = up.serve().await;
    let res = get_via(&layer, addr).await;
    assert_eq!(res.extensions().get::<Attempts>().map(|a| a.get()), Some(2));
}

/// `RetryLayer::policy` works under tower's own `Retry`, over requests whose
/// bodies are already `ReplayBody`s: the body is sent again byte for byte.
#[tokio::test(start_paused = true)]
async fn the_policy_drives_towers_own_retry() {
    let up = Upstream::failing(2, 503);
    let addr = up.serve().await;
    let layer = RetryLayer::new(fast()).unwrap();
    let to_box: fn(hyper_util::client::legacy::Error) -> BoxError = BoxError::from;
    let svc = tower::retry::Retry::new(
        layer.policy(),
        support::hyper_client::<ReplayBody<Full<Bytes>>>().map_err(to_box),
    );
    let body = ReplayBody::buffer(Full::new(Bytes::from_static(b"again")), 1024)
        .await
        .unwrap();
    let req = Request::put(format!("http://{addr}/")).body(body).unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = up.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen
        .iter()
        .all(|(m, digest, _)| m == Method::PUT && digest == &support::sha256_hex(b"again")));
}

/// Issue 14, item 3: the bytes held for replay across all requests in
/// flight are bounded by `max_replay_total`; past it, a request's body
/// streams through unreplayable instead of being held, and once the bytes
/// are let go the next request is read ahead again.
#[tokio::test]
async fn bytes_held_for_replay_are_bounded_across_requests() {
    use futures_util::StreamExt;
    type Frames =
        Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Unpin>;
    let body = |stall: bool| -> StreamBody<Frames> {
        let first = stream::iter([Ok(Frame::data(Bytes::from(vec![7u8; 600])))]);
        StreamBody::new(if stall {
            Box::new(first.chain(stream::pending()))
        } else {
            Box::new(first)
        })
    };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let layer = RetryLayer::new(
        Config::default()
            .max_replay_body(1024)
            .max_replay_total(1000),
    )
    .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(tower::service_fn(
            move |req: Request<ReplayBody<StreamBody<Frames>>>| {
                log.lock().unwrap().push(req.body().is_replayable());
                async { Ok::<_, Infallible>(http::Response::new(())) }
            },
        ));
    let put = |stall| {
        Request::put("http://127.0.0.1/x")
            .body(body(stall))
            .unwrap()
    };
    // The first holds 600 bytes while its body stalls.
    let mut stalled = tokio::spawn(svc.clone().oneshot(put(true)));
    tokio::task::yield_now().await;
    // 600 more would pass 1000: the second streams through unreplayable.
    svc.clone().oneshot(put(false)).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [false]);
    assert!(tokio::time::timeout(Duration::from_millis(1), &mut stalled)
        .await
        .is_err());
    stalled.abort();
    let _ = stalled.await;
    // Its bytes are let go: the next is held for replay again.
    svc.clone().oneshot(put(false)).await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [false, true]);
}
