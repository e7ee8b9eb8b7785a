//! Per-service rate limits through the public API: a real axum server on
//! 127.0.0.1 under `AuthLayer` then `RateLimitLayer`, called by a real
//! hyper client; Redis as CI starts it, and a Redis of the test's own that
//! it stops.
#![cfg(all(feature = "auth", feature = "limit"))]

mod support;

use axum::{routing::get, Router};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};
use support::*;
use tower_shield::{
    auth::{AuthLayer, SecretRef, StaticTokens, TokenEntry},
    limit::{KeyBy, OnStoreError, Quota, RateLimitConfig, RateLimitLayer},
};

fn tokens() -> StaticTokens {
    StaticTokens::load(vec![
        TokenEntry::new("a", SecretRef::value("token-a")),
        TokenEntry::new("b", SecretRef::value("token-b")),
        TokenEntry::new("vip", SecretRef::value("token-vip")),
    ])
    .unwrap()
}

async fn server(limit: RateLimitLayer) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                c.fetch_add(1, Ordering::SeqCst);
                async { "ok" }
            }),
        )
        // Outermost last: auth first, then the limit per verified caller.
        .layer(limit)
        .layer(AuthLayer::new().static_tokens(tokens()).allow_anonymous());
    (serve(app).await, calls)
}

async fn call(addr: std::net::SocketAddr, token: Option<&str>) -> (StatusCode, HeaderMap) {
    let mut req = Request::get(format!("http://{addr}/"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let res = hyper_client::<Empty<Bytes>>()
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    body.collect().await.unwrap();
    (parts.status, parts.headers)
}

#[tokio::test]
async fn a_burst_over_the_limit_is_refused_with_retry_after_and_others_are_unaffected() {
    let limit = RateLimitLayer::new(
        RateLimitConfig::new(1.0, 5)
            .headers(true)
            .override_for("vip", Quota::new(100.0, 50)),
    )
    .unwrap();
    let (addr, calls) = server(limit.clone()).await;

    let mut statuses = Vec::new();
    for i in 0..8u32 {
        let (status, headers) = call(addr, Some("token-a")).await;
        statuses.push(status);
        assert_eq!(headers["ratelimit-policy"], "\"default\";q=5;w=5");
        if i < 5 {
            assert_eq!(
                headers["ratelimit"].to_str().unwrap().split(';').nth(1),
                Some(format!("r={}", 4 - i).as_str())
            );
        } else {
            // Within the first second of the burst: come back in 1 s.
            assert_eq!(headers["retry-after"], "1");
            assert_eq!(headers["ratelimit"], "\"default\";r=0;t=1");
        }
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 5);
    assert_eq!(statuses[5..], [StatusCode::TOO_MANY_REQUESTS; 3]);
    assert_eq!(calls.load(Ordering::SeqCst), 5);

    // Another identity has its own quota; the override has a bigger one.
    for _ in 0..5 {
        assert_eq!(call(addr, Some("token-b")).await.0, StatusCode::OK);
    }
    for _ in 0..20 {
        assert_eq!(call(addr, Some("token-vip")).await.0, StatusCode::OK);
    }
    let stats = limit.stats();
    assert_eq!(
        (stats.allowed, stats.denied, stats.store_errors),
        (30, 3, 0)
    );
    assert!(limit.store_ok());
}

#[tokio::test]
async fn memory_stays_bounded_however_many_keys_arrive() {
    let limit = RateLimitLayer::new(
        RateLimitConfig::new(1.0, 1)
            .key(KeyBy::Header(http::HeaderName::from_static("x-key")))
            .max_keys(100),
    )
    .unwrap();
    let svc = tower::ServiceBuilder::new()
        .layer(limit)
        .service(tower::service_fn(|_req: Request<()>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        }));
    use tower::ServiceExt;
    // 10 000 distinct keys: each is admitted (a new key has its burst).
    for i in 0..10_000 {
        let req = Request::get("/")
            .header("x-key", i.to_string())
            .body(())
            .unwrap();
        assert_eq!(
            svc.clone().oneshot(req).await.unwrap().status(),
            StatusCode::OK
        );
    }
    // A hot key keeps its state among them.
    let hot = || Request::get("/").header("x-key", "hot").body(()).unwrap();
    assert_eq!(
        svc.clone().oneshot(hot()).await.unwrap().status(),
        StatusCode::OK
    );
    for i in 0..1000 {
        let req = Request::get("/")
            .header("x-key", format!("cold-{i}"))
            .body(())
            .unwrap();
        svc.clone().oneshot(req).await.unwrap();
        if i % 10 == 0 {
            assert_eq!(
                svc.clone().oneshot(hot()).await.unwrap().status(),
                StatusCode::TOO_MANY_REQUESTS
            );
        }
    }
}

/// Two servers, one Redis namespace: one limit for the fleet.
#[tokio::test]
async fn two_stacks_sharing_redis_enforce_one_limit() {
    let Some(url) = redis_url() else { return };
    let namespace = format!("shield-test-rl-{}-{}", std::process::id(), fastrand_u64());
    let layer = || {
        RateLimitLayer::new(
            RateLimitConfig::new(1.0, 50)
                .redis(&url)
                .namespace(&namespace),
        )
        .unwrap()
    };
    let (one, calls_one) = server(layer()).await;
    let (two, calls_two) = server(layer()).await;
    let started = std::time::Instant::now();
    let mut allowed = 0;
    for i in 0..100 {
        let addr = if i % 2 == 0 { one } else { two };
        let (status, headers) = call(addr, Some("token-a")).await;
        match status {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => assert!(headers.contains_key("retry-after")),
            other => panic!("{other}"),
        }
    }
    // 50 at once, plus what the rate gave back while the test ran.
    let refilled = started.elapsed().as_secs_f64().floor() as usize;
    assert!(
        (50..=50 + refilled + 2).contains(&allowed),
        "allowed {allowed} in {:?}",
        started.elapsed()
    );
    assert_eq!(
        calls_one.load(Ordering::SeqCst) + calls_two.load(Ordering::SeqCst),
        allowed
    );
    // Another identity, the same fleet: its own 50.
    assert_eq!(call(one, Some("token-b")).await.0, StatusCode::OK);
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

#[tokio::test]
async fn redis_stopped_fails_open_or_closed_as_configured() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let config = RateLimitConfig::new(1.0, 1)
        .redis(&url)
        .store_timeout(Duration::from_millis(200));
    let open = RateLimitLayer::new(config.clone()).unwrap();
    let closed = RateLimitLayer::new(config.on_store_error(OnStoreError::Closed)).unwrap();
    let (open_addr, open_calls) = server(open.clone()).await;
    let (closed_addr, closed_calls) = server(closed.clone()).await;
    // Redis up: the limit holds on both.
    assert_eq!(call(open_addr, Some("token-a")).await.0, StatusCode::OK);
    assert_eq!(
        call(open_addr, Some("token-a")).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(call(closed_addr, Some("token-b")).await.0, StatusCode::OK);

    redis.stop();
    for _ in 0..3 {
        assert_eq!(call(open_addr, Some("token-a")).await.0, StatusCode::OK);
        let (status, headers) = call(closed_addr, Some("token-a")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["retry-after"], "1");
    }
    assert!(!open.store_ok() && !closed.store_ok());
    assert_eq!(open.stats().store_errors, 3);
    assert_eq!(closed.stats().store_errors, 3);
    assert_eq!(open_calls.load(Ordering::SeqCst), 4);
    assert_eq!(closed_calls.load(Ordering::SeqCst), 1);

    // Redis back: limits again.
    assert!(redis.spawn());
    let mut ok = false;
    // The first call after the outage sets the connection manager
    // reconnecting; the next ones wait for it (each within the store's
    // timeout). Bounded: 50 tries.
    for _ in 0..50 {
        if call(closed_addr, Some("token-vip")).await.0 == StatusCode::OK {
            ok = true;
            break;
        }
    }
    assert!(ok, "the limit did not come back with Redis");
    assert!(closed.store_ok());
}

#[tokio::test]
async fn readiness_is_passed_through() {
    use tower::{Layer, ServiceExt};
    let layer = RateLimitLayer::new(RateLimitConfig::new(1.0, 1)).unwrap();
    let mut svc = layer.layer(NeverReady);
    assert_eq!(svc.ready().await.err().unwrap().to_string(), "not ready");
}
