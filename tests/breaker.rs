//! The circuit breaker through its public API, on tokio's paused clock.
#![cfg(feature = "breaker")]

mod support;

use http::{Request, Response, StatusCode};
use std::{
    convert::Infallible,
    future::Future,
    sync::{
        atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use tokio::time::{advance, Instant};
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_shield::{
    breaker::{CircuitBreakerLayer, Config, KeyBy, Open, State},
    error::error_response,
    BoxError,
};

/// An upstream whose status and delay the test sets, counting its calls.
#[derive(Clone, Default)]
struct Upstream {
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
    calls: Arc<AtomicU32>,
}

impl Upstream {
    fn new() -> Self {
        let up = Self::default();
        up.set(200);
        up
    }

    fn set(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(
        &self,
    ) -> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone
    {
        let up = self.clone();
        service_fn(move |_req: Request<()>| {
            let up = up.clone();
            async move {
                up.calls.fetch_add(1, Ordering::SeqCst);
                let delay = up.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let status = up.status.load(Ordering::SeqCst);
                Ok(Response::builder().status(status).body(()).unwrap())
            }
        })
    }
}

async fn call<S>(svc: &S) -> Result<StatusCode, BoxError>
where
    S: Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone,
{
    svc.clone()
        .oneshot(Request::new(()))
        .await
        .map(|r| r.status())
}

fn is_open(result: Result<StatusCode, BoxError>) -> bool {
    matches!(result, Err(e) if e.is::<Open>())
}

#[tokio::test(start_paused = true)]
async fn opens_after_consecutive_failures_then_probes_and_closes() {
    let up = Upstream::new();
    let layer = CircuitBreakerLayer::new(
        Config::default()
            .consecutive_failures(3)
            .open_for(Duration::from_secs(10))
            .close_after(2),
    )
    .unwrap();
    let breaker = layer.breakers().default_breaker();
    let mut events = breaker.subscribe();
    let svc = ServiceBuilder::new().layer(layer).service(up.service());

    // 4xx never counts; a success resets the streak.
    up.set(404);
    for _ in 0..10 {
        assert_eq!(call(&svc).await.unwrap(), StatusCode::NOT_FOUND);
    }
    up.set(500);
    call(&svc).await.unwrap();
    call(&svc).await.unwrap();
    up.set(200);
    call(&svc).await.unwrap();
    assert_eq!(breaker.state(), State::Closed);

    up.set(503);
    for _ in 0..3 {
        call(&svc).await.unwrap();
    }
    assert_eq!(breaker.state(), State::Open);
    assert!(events.has_changed().unwrap());
    assert_eq!(*events.borrow_and_update(), State::Open);

    // Open: rejected at once, the upstream sees nothing.
    let before = up.calls();
    advance(Duration::from_secs(4)).await;
    let err = call(&svc).await.unwrap_err();
    let open = err.downcast_ref::<Open>().expect("an Open error");
    assert_eq!(open.retry_after(), Duration::from_secs(6));
    let res: Response<String> = error_response(&*err);
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "6");
    assert_eq!(up.calls(), before);

    // After the open time: probes. A failed probe opens it again.
    advance(Duration::from_secs(6)).await;
    assert_eq!(breaker.state(), State::HalfOpen);
    assert_eq!(call(&svc).await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(breaker.state(), State::Open);
    assert!(is_open(call(&svc).await));

    // Two good probes close it.
    advance(Duration::from_secs(10)).await;
    up.set(200);
    call(&svc).await.unwrap();
    assert_eq!(breaker.state(), State::HalfOpen);
    call(&svc).await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(*events.borrow_and_update(), State::Closed);
    let m = breaker.metrics();
    assert_eq!(m.opened, 2);
    assert!(m.rejections >= 2);
}

#[tokio::test(start_paused = true)]
async fn open_time_grows_on_repeated_trips_up_to_the_cap() {
    let up = Upstream::new();
    up.set(500);
    let layer = CircuitBreakerLayer::new(
        Config::default()
            .consecutive_failures(1)
            .open_for(Duration::from_secs(1))
            .open_for_max(Duration::from_secs(5)),
    )
    .unwrap();
    let breaker = layer.breakers().default_breaker();
    let svc = ServiceBuilder::new().layer(layer).service(up.service());
    let mut waits = Vec::new();
    call(&svc).await.unwrap();
    for _ in 0..5 {
        let open = call(&svc).await.unwrap_err();
        let wait = open.downcast_ref::<Open>().unwrap().retry_after();
        waits.push(wait.as_secs());
        advance(wait).await;
        call(&svc).await.unwrap(); // the probe fails
    }
    assert_eq!(waits, [1, 2, 4, 5, 5]);
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_a_count_window() {
    let up = Upstream::new();
    let layer = CircuitBreakerLayer::new(
        Config::default()
            .failure_rate(50.0)
            .window_calls(10)
            .min_calls(10),
    )
    .unwrap();
    let breaker = layer.breakers().default_breaker();
    let svc = ServiceBuilder::new().layer(layer).service(up.service());
    // Fewer than min_calls: not judged, even at 100%.
    up.set(500);
    for _ in 0..9 {
        call(&svc).await.unwrap();
    }
    assert_eq!(breaker.state(), State::Closed);
    breaker.reset();
    // 4 failures in 10 calls: 40%, stays closed; old outcomes roll out.
    for i in 0..30 {
        up.set(if i % 10 < 4 { 500 } else { 200 });
        call(&svc).await.unwrap();
        assert_eq!(breaker.state(), State::Closed, "call {i}");
    }
    // Then a run of failures pushes the last 10 calls to 50%.
    up.set(500);
    let mut calls = 0;
    while breaker.state() == State::Closed {
        call(&svc).await.unwrap();
        calls += 1;
        assert!(calls <= 5, "should open within 5 failures");
    }
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_failures_that_are_too_old() {
    let up = Upstream::new();
    let layer = CircuitBreakerLayer::new(
        Config::default()
            .failure_rate(50.0)
            .window_duration(Duration::from_secs(10))
            .min_calls(4),
    )
    .unwrap();
    let breaker = layer.breakers().default_breaker();
    let svc = ServiceBuilder::new().layer(layer).service(up.service());
    up.set(500);
    for _ in 0..3 {
        call(&svc).await.unwrap();
    }
    // Those failures leave the window...
    advance(Duration::from_secs(11)).await;
    up.set(200);
    for _ in 0..3 {
        call(&svc).await.unwrap();
    }
    up.set(500);
    call(&svc).await.unwrap();
    // ...so the window holds 1 failure in 4 calls.
    assert_eq!(breaker.state(), State::Closed);
    call(&svc).await.unwrap();
    call(&svc).await.unwrap();
    // Now 3 of 6.
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker() {
    let up = Upstream::new();
    let layer = CircuitBreakerLayer::new(
        Config::default()
            .slow_call_duration(Duration::from_millis(500))
            .slow_call_rate(50.0)
            .window_calls(10)
            .min_calls(4),
    )
    .unwrap();
    let breaker = layer.breakers().default_breaker();
    let svc = ServiceBuilder::new().layer(layer).service(up.service());
    up.delay_ms.store(100, Ordering::SeqCst);
    for _ in 0..8 {
        call(&svc).await.unwrap();
    }
    assert_eq!(breaker.state(), State::Closed);
    up.delay_ms.store(800, Ordering::SeqCst);
    // The last 10 calls: 8 fast, then slow ones; 5 slow make 50%.
    for i in 0..5 {
        assert_eq!(breaker.state(), State::Closed, "slow call {i}");
        call(&svc).await.unwrap();
    }
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.metrics().slow_calls, 5);
}

#[tokio::test(start_paused = true)]
async fn half_open_lets_only_n_probes_through_and_cancelled_probes_free_their_slot() {
    let up = Upstream::new();
    let layer = CircuitBreakerLayer::new(
        Config::default()
            .consecutive_failures(1)
            .open_for(Duration::from_secs(1))
            .half_open_probes(2)
            .close_after(2),
    )
    .unwrap();
    let breaker = layer.breakers().default_breaker();
    let svc = ServiceBuilder::new().layer(layer).service(up.service());
    up.set(500);
    call(&svc).await.unwrap();
    advance(Duration::from_secs(1)).await;

    // Slow probes: start 10 calls at once; only 2 reach the upstream.
    up.set(200);
    up.delay_ms.store(1000, Ordering::SeqCst);
    let before = up.calls();
    let mut calls: Vec<_> = (0..10)
        .map(|_| Box::pin(svc.clone().oneshot(Request::new(()))))
        .collect();
    let mut rejected = 0;
    for c in calls.iter_mut() {
        let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(c.as_mut().poll(cx))).await;
        if let std::task::Poll::Ready(Err(e)) = polled {
            assert!(e.is::<Open>());
            rejected += 1;
        }
    }
    assert_eq!(rejected, 8);
    assert_eq!(breaker.probes_in_flight(), 2);
    // Dropping the probes frees the slots without counting a failure.
    drop(calls);
    assert_eq!(breaker.probes_in_flight(), 0);
    assert_eq!(breaker.state(), State::HalfOpen);
    assert_eq!(up.calls() - before, 2);

    up.delay_ms.store(0, Ordering::SeqCst);
    call(&svc).await.unwrap();
    call(&svc).await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn one_failing_host_never_opens_another_hosts_breaker() {
    let layer = CircuitBreakerLayer::new(Config::default().consecutive_failures(2))
        .unwrap()
        .by_authority();
    let breakers = layer.breakers();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(|req: Request<()>| async move {
                let status = if req.uri().host() == Some("bad.internal") {
                    502
                } else {
                    200
                };
                Ok::<_, Infallible>(Response::builder().status(status).body(()).unwrap())
            }));
    let get = |uri: &str| svc.clone().oneshot(Request::get(uri).body(()).unwrap());
    for _ in 0..2 {
        get("http://bad.internal/x").await.unwrap();
    }
    assert!(get("http://bad.internal:80/y")
        .await
        .unwrap_err()
        .is::<Open>());
    assert_eq!(get("http://good.internal/x").await.unwrap().status(), 200);
    assert_eq!(
        breakers.get("http://bad.internal:80").unwrap().state(),
        State::Open
    );
    assert_eq!(
        breakers.get("http://good.internal:80").unwrap().state(),
        State::Closed
    );
    assert_eq!(breakers.default_breaker().state(), State::Closed);
    let degraded = breakers.not_closed();
    assert_eq!(
        degraded,
        vec![("http://bad.internal:80".to_owned(), State::Open)]
    );
}

#[tokio::test(start_paused = true)]
async fn key_set_is_bounded() {
    let layer = CircuitBreakerLayer::new(Config::default().max_keys(3))
        .unwrap()
        .by_authority();
    let breakers = layer.breakers();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(()))
        }));
    for i in 0..50 {
        let req = Request::get(format!("http://host{i}.internal/"))
            .body(())
            .unwrap();
        svc.clone().oneshot(req).await.unwrap();
    }
    assert!(breakers.keys().len() <= 3, "{:?}", breakers.keys());
}

/// Route keys come from callers: a flood of 100 000 distinct paths, each
/// asked for twice (so that the cache's frequent-keys queue fills too),
/// keeps the registry at `max_keys`; a handle taken before the flood sees the
/// live set; a breaker that is open, or in use by a call, is never the one
/// evicted.
#[tokio::test(start_paused = true)]
async fn a_flood_of_route_keys_stays_bounded_and_open_or_busy_breakers_stay() {
    let layer = CircuitBreakerLayer::new(
        Config::default()
            .key(KeyBy::Route)
            .max_keys(64)
            .consecutive_failures(1),
    )
    .unwrap();
    let breakers = layer.breakers();
    assert!(breakers.is_empty());
    let (release, released) = tokio::sync::watch::channel(false);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |req: Request<()>| {
            let mut released = released.clone();
            async move {
                let status = match req.uri().path() {
                    "/failing" => 500,
                    "/slow" => {
                        let _ = released.wait_for(|r| *r).await;
                        200
                    }
                    _ => 200,
                };
                Ok::<_, Infallible>(Response::builder().status(status).body(()).unwrap())
            }
        }));
    let get = |path: String| svc.clone().oneshot(Request::get(path).body(()).unwrap());
    get("/failing".to_owned()).await.unwrap();
    assert_eq!(breakers.get("/failing").unwrap().state(), State::Open);
    let slow = tokio::spawn(get("/slow".to_owned()));
    tokio::task::yield_now().await;
    let busy = breakers.get("/slow").expect("made by the call in flight");
    for i in 0..100_000 {
        for _ in 0..2 {
            get(format!("/p/{i}")).await.unwrap();
        }
        assert!(
            breakers.len() <= 64 + 2,
            "{} keys after {i}",
            breakers.len()
        );
    }
    assert!(
        (32..=64).contains(&breakers.len()),
        "{} keys",
        breakers.len()
    );
    assert!(!breakers.is_empty());
    assert!(format!("{breakers:?}").contains("keys"));
    // The handle taken first sees keys made last.
    assert!(breakers.get("/p/99999").is_some());
    // The open breaker is still there and still open.
    assert_eq!(breakers.get("/failing").unwrap().state(), State::Open);
    assert!(get("/failing".to_owned()).await.unwrap_err().is::<Open>());
    // The busy one too: the call in flight records into the breaker the
    // registry still holds.
    assert!(Arc::ptr_eq(&busy, &breakers.get("/slow").unwrap()));
    release.send(true).unwrap();
    assert_eq!(slow.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(busy.metrics().calls, 1);
}

/// Breakers publish their counters through the telemetry registry, by name.
#[tokio::test(start_paused = true)]
async fn breakers_publish_their_counters_to_a_registry() {
    let layer = CircuitBreakerLayer::new(Config::default().consecutive_failures(1))
        .unwrap()
        .keyed_by(KeyBy::Route);
    let registry = tower_shield::telemetry::Registry::new();
    registry.register(layer.breakers());
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::builder().status(500).body(()).unwrap())
        }));
    for _ in 0..3 {
        let _ = svc
            .clone()
            .oneshot(Request::get("/a").body(()).unwrap())
            .await;
    }
    let samples = registry.samples();
    let value = |name: &str| {
        samples
            .iter()
            .find(|s| s.name == name && s.attributes == [("breaker", "/a".to_owned())])
            .map(|s| s.value)
    };
    assert_eq!(value("shield.breaker.calls"), Some(1));
    assert_eq!(value("shield.breaker.failures"), Some(1));
    assert_eq!(value("shield.breaker.rejections"), Some(2));
    assert_eq!(value("shield.breaker.opened"), Some(1));
    assert_eq!(value("shield.breaker.slow_calls"), Some(0));
    // The default breaker reports too, under its name.
    assert!(samples
        .iter()
        .any(|s| s.attributes == [("breaker", "default".to_owned())]));
}

#[tokio::test(start_paused = true)]
async fn manual_control() {
    let up = Upstream::new();
    let layer = CircuitBreakerLayer::new(Config::default().consecutive_failures(1)).unwrap();
    let breaker = layer.breakers().default_breaker();
    let svc = ServiceBuilder::new().layer(layer).service(up.service());
    breaker.force_open();
    assert!(is_open(call(&svc).await));
    advance(Duration::from_secs(3600)).await;
    assert!(is_open(call(&svc).await), "forced open stays open");
    breaker.force_closed();
    up.set(500);
    for _ in 0..5 {
        call(&svc).await.unwrap();
    }
    assert_eq!(breaker.state(), State::Disabled);
    breaker.reset();
    assert_eq!(breaker.state(), State::Closed);
    call(&svc).await.unwrap();
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn retry_after_opens_the_breaker_for_the_time_asked_capped() {
    let layer =
        CircuitBreakerLayer::new(Config::default().respect_retry_after(Duration::from_secs(60)))
            .unwrap();
    let breaker = layer.breakers().default_breaker();
    let seconds = Arc::new(AtomicU64::new(7));
    let s = seconds.clone();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |_req: Request<()>| {
            let secs = s.load(Ordering::SeqCst);
            async move {
                Ok::<_, Infallible>(
                    Response::builder()
                        .status(429)
                        .header("retry-after", secs.to_string())
                        .body(())
                        .unwrap(),
                )
            }
        }));
    call(&svc).await.unwrap();
    let open = call(&svc).await.unwrap_err();
    assert_eq!(
        open.downcast_ref::<Open>().unwrap().retry_after(),
        Duration::from_secs(7)
    );
    advance(Duration::from_secs(7)).await;
    seconds.store(3600, Ordering::SeqCst);
    call(&svc).await.unwrap(); // the probe is told to wait an hour
    let open = call(&svc).await.unwrap_err();
    assert_eq!(
        open.downcast_ref::<Open>().unwrap().retry_after(),
        Duration::from_secs(60)
    );
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn invalid_configs_name_their_field() {
    let cases = [
        (Config::default().failure_rate(120.0), "failure_rate"),
        (Config::default().failure_rate(f64::NAN), "failure_rate"),
        (
            Config::default().consecutive_failures(0),
            "failure_threshold",
        ),
        (Config::default().window_calls(0), "window"),
        (Config::default().window_calls(10_001), "window"),
        (Config::default().window_duration(Duration::ZERO), "window"),
        (Config::default().min_calls(0), "min_calls"),
        (Config::default().slow_call_rate(50.0), "slow_call_rate"),
        (Config::default().open_for(Duration::ZERO), "open_for"),
        (
            Config::default()
                .open_for(Duration::from_secs(10))
                .open_for_max(Duration::from_secs(1)),
            "open_for_max",
        ),
        (Config::default().half_open_probes(0), "half_open_probes"),
        (Config::default().close_after(0), "close_after"),
    ];
    for (config, field) in cases {
        let err = CircuitBreakerLayer::new(config).unwrap_err();
        assert_eq!(err.field(), field);
        assert!(
            err.to_string().contains(&format!("breaker.{field}")),
            "{err}"
        );
    }
}

/// A bounded stress test on a multi-thread runtime: many tasks, random
/// outcomes, one shared breaker. Probes never exceed their limit, and every
/// call is either let through or rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_keeps_the_invariants() {
    let layer = CircuitBreakerLayer::new(
        Config::default()
            .consecutive_failures(3)
            .open_for(Duration::from_millis(1))
            .half_open_probes(2)
            .close_after(2),
    )
    .unwrap();
    let breaker = layer.breakers().default_breaker();
    let in_flight = Arc::new(AtomicU32::new(0));
    let max_seen = Arc::new(AtomicU32::new(0));
    let counter = Arc::new(AtomicU64::new(0));
    let svc = {
        let (in_flight, counter) = (in_flight.clone(), counter.clone());
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(move |_req: Request<()>| {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let in_flight = in_flight.clone();
                async move {
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    let status = if n.wrapping_mul(2654435761) % 5 == 0 {
                        500
                    } else {
                        200
                    };
                    Ok::<_, Infallible>(Response::builder().status(status).body(()).unwrap())
                }
            }))
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (svc, breaker, max_seen) = (svc.clone(), breaker.clone(), max_seen.clone());
            tokio::spawn(async move {
                let (mut ok, mut rejected) = (0u64, 0u64);
                for _ in 0..5_000 {
                    if Instant::now() > deadline {
                        break;
                    }
                    match svc.clone().oneshot(Request::new(())).await {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            assert!(e.is::<Open>());
                            rejected += 1;
                        }
                    }
                    max_seen.fetch_max(breaker.probes_in_flight(), Ordering::SeqCst);
                }
                (ok, rejected)
            })
        })
        .collect();
    let (mut ok, mut rejected) = (0, 0);
    for t in tasks {
        let (o, r) = t.await.unwrap();
        ok += o;
        rejected += r;
    }
    let m = breaker.metrics();
    assert!(max_seen.load(Ordering::SeqCst) <= 2);
    assert_eq!(m.calls, ok, "every call let through was counted");
    assert_eq!(m.rejections, rejected);
    assert!(m.opened > 0, "the failure pattern trips the breaker: {m:?}");
    assert_eq!(breaker.probes_in_flight(), 0);
}

/// A real upstream fails and recovers; a client stack with a breaker in
/// front of a real hyper client follows it: fails fast while open (the
/// upstream sees no traffic), probes after the open time, closes.
#[tokio::test(start_paused = true)]
async fn follows_a_real_upstream_that_fails_and_recovers() {
    use axum::{extract::State as AxumState, routing::get, Router};
    use bytes::Bytes;
    use http_body_util::Empty;
    use tower_shield::{stack::ClientStack, ServiceBuilderExt};

    let up = Upstream::new();
    let app = Router::new().route(
        "/",
        get(|AxumState(up): AxumState<Upstream>| async move {
            up.calls.fetch_add(1, Ordering::SeqCst);
            StatusCode::from_u16(up.status.load(Ordering::SeqCst)).unwrap()
        }),
    );
    let addr = support::serve(app.with_state(up.clone())).await;
    let layer = CircuitBreakerLayer::new(
        Config::default()
            .consecutive_failures(3)
            .open_for(Duration::from_secs(10))
            .close_after(2),
    )
    .unwrap()
    .keyed_by(KeyBy::Authority);
    let breakers = layer.breakers();
    let client = ServiceBuilder::new()
        .client_stack(ClientStack::new().no_timeout().circuit_breaker(layer))
        .service(support::hyper_client::<Empty<Bytes>>());
    let get = || {
        client.clone().oneshot(
            Request::get(format!("http://{addr}/"))
                .body(Empty::new())
                .unwrap(),
        )
    };

    up.set(500);
    for _ in 0..3 {
        assert_eq!(
            get().await.unwrap().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    let seen = up.calls();
    for _ in 0..20 {
        assert!(get().await.unwrap_err().is::<Open>());
    }
    assert_eq!(
        up.calls(),
        seen,
        "no traffic reaches the upstream while open"
    );
    let key = format!("http://{addr}");
    assert_eq!(breakers.get(&key).unwrap().state(), State::Open);

    up.set(200);
    advance(Duration::from_secs(10)).await;
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    assert_eq!(breakers.get(&key).unwrap().state(), State::HalfOpen);
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    assert_eq!(breakers.get(&key).unwrap().state(), State::Closed);
    assert_eq!(up.calls(), seen + 2);
}

/// In the client stack the breaker sits outside the timeout: an upstream
/// that hangs opens it just as one that fails does.
#[tokio::test(start_paused = true)]
async fn timeouts_in_the_client_stack_count_as_failures() {
    use tower_shield::{breaker::KeyBy, stack::ClientStack, ServiceBuilderExt};
    let layer = CircuitBreakerLayer::new(Config::default().consecutive_failures(2))
        .unwrap()
        .keyed_by(KeyBy::None);
    let breaker = layer.breakers().default_breaker();
    let hanging = service_fn(|_req: Request<()>| async {
        std::future::pending::<Result<Response<()>, Infallible>>().await
    });
    let svc = ServiceBuilder::new()
        .client_stack(
            ClientStack::new()
                .timeout(Duration::from_secs(1))
                .circuit_breaker(layer),
        )
        .service(hanging);
    for _ in 0..2 {
        let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
        assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    }
    assert_eq!(breaker.state(), State::Open);
    let started = Instant::now();
    assert!(svc
        .clone()
        .oneshot(Request::new(()))
        .await
        .unwrap_err()
        .is::<Open>());
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "rejected without waiting for the timeout"
    );
}

/// Durations beyond any clock (a config of centuries, an upstream asking
/// for `u64::MAX` seconds) saturate: the breaker stays open, nothing panics,
/// and the next call is still answered.
#[tokio::test(start_paused = true)]
async fn absurd_durations_saturate_instead_of_overflowing() {
    let forever = Duration::from_secs(u64::MAX);
    let layer = CircuitBreakerLayer::new(
        Config::default()
            .consecutive_failures(1)
            .open_for(forever)
            .open_for_max(forever)
            .respect_retry_after(forever),
    )
    .unwrap();
    let breaker = layer.breakers().default_breaker();
    let svc = ServiceBuilder::new().layer(layer).service(service_fn(
        move |_req: Request<()>| async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(503)
                    .header("retry-after", u64::MAX.to_string())
                    .body(())
                    .unwrap(),
            )
        },
    ));
    assert_eq!(call(&svc).await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    for _ in 0..3 {
        let open = call(&svc).await.unwrap_err();
        let wait = open.downcast_ref::<Open>().unwrap().retry_after();
        assert!(
            wait > Duration::from_secs(100 * 365 * 24 * 3600),
            "{wait:?}"
        );
    }
    advance(Duration::from_secs(3600)).await;
    assert!(is_open(call(&svc).await));
    assert_eq!(breaker.state(), State::Open);
    // Reset still brings it back.
    breaker.reset();
    assert_eq!(call(&svc).await.unwrap(), StatusCode::SERVICE_UNAVAILABLE);

    // Forced open with an open time of `Duration::MAX`: the 503 still gets
    // a `Retry-After`.
    let layer = CircuitBreakerLayer::new(Config::default().open_for(Duration::MAX)).unwrap();
    layer.breakers().default_breaker().force_open();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(Upstream::new().service());
    let err = call(&svc).await.unwrap_err();
    let res: Response<String> = error_response(&*err);
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], u64::MAX.to_string().as_str());

    // A time window of centuries counts calls like any other.
    let layer = CircuitBreakerLayer::new(
        Config::default()
            .failure_rate(50.0)
            .window_duration(forever)
            .min_calls(2),
    )
    .unwrap();
    let up = Upstream::new();
    let svc = ServiceBuilder::new()
        .layer(layer.clone())
        .service(up.service());
    up.set(500);
    for _ in 0..2 {
        call(&svc).await.unwrap();
    }
    assert!(is_open(call(&svc).await));
}
