//! The cache's Redis store on a real Redis: `REDIS_URL` (or
//! 127.0.0.1:6379), and a `redis-server` of the test's own for the test
//! that stops it. Real time: the store's timeouts and Redis's expiry run on
//! real clocks.
#![cfg(feature = "redis")]

mod support;

use axum::{routing::any, Router};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc,
    },
    time::Duration,
};
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_shield::cache::{CacheLayer, Config, ConfiguredStore};

/// An upstream counting its calls; every answer is fresh for `max_age`.
async fn upstream(max_age: u32) -> (std::net::SocketAddr, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let app = Router::new().fallback(any(move || {
        let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            (
                [("cache-control", format!("max-age={max_age}"))],
                format!("answer {n}"),
            )
        }
    }));
    (serve(app).await, calls)
}

/// A namespace of this test's own, so tests never see each other's keys.
fn namespace(test: &str) -> String {
    format!("tower-shield-test-{}-{test}", std::process::id())
}

fn cache(url: &str, test: &str) -> CacheLayer<ConfiguredStore> {
    CacheLayer::from_config(
        Config::default()
            .redis(url)
            .namespace(namespace(test))
            .x_cache_header(true),
    )
    .unwrap()
}

async fn get(cache: &CacheLayer<ConfiguredStore>, uri: &str) -> (StatusCode, String, Bytes) {
    let client = ServiceBuilder::new()
        .layer(cache.clone())
        .service(hyper_client::<Empty<Bytes>>());
    let res = client
        .oneshot(Request::get(uri).body(Empty::new()).unwrap())
        .await
        .unwrap();
    let x_cache = res.headers()["x-cache"].to_str().unwrap().to_owned();
    let status = res.status();
    (
        status,
        x_cache,
        res.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn two_independent_stacks_share_hits_through_redis() {
    let Some(url) = redis_url() else { return };
    let (addr, calls) = upstream(60).await;
    let (a, b) = (cache(&url, "share"), cache(&url, "share"));
    a.clear().await.unwrap();
    let uri = format!("http://{addr}/shared");
    let (_, how, body) = get(&a, &uri).await;
    assert_eq!((how.as_str(), &body[..]), ("MISS", &b"answer 1"[..]));
    let (_, how, body) = get(&b, &uri).await;
    assert_eq!((how.as_str(), &body[..]), ("HIT", &b"answer 1"[..]));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(b.stats().hits, 1);
    a.clear().await.unwrap();
}

#[tokio::test]
async fn redis_expiry_follows_the_entry_s_freshness() {
    let Some(url) = redis_url() else { return };
    let (addr, calls) = upstream(1).await;
    let cache = cache(&url, "expiry");
    cache.clear().await.unwrap();
    let uri = format!("http://{addr}/short");
    get(&cache, &uri).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}:{uri}", namespace("expiry"));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    // The entry's freshness (max-age=1, no stale window, no validator) is
    // the TTL Redis was given: Redis itself removes the key then. No wait
    // on Redis's real clock: a key that is gone reads as a miss, below.
    assert!((1..=1000).contains(&ttl), "PTTL {ttl}");
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (_, how, _) = get(&cache, &uri).await;
    assert_eq!(how, "MISS");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn prefix_invalidation_removes_only_the_prefix() {
    let Some(url) = redis_url() else { return };
    let (addr, calls) = upstream(60).await;
    let cache = cache(&url, "prefix");
    cache.clear().await.unwrap();
    for path in ["/p/a", "/p/b", "/q/c"] {
        get(&cache, &format!("http://{addr}{path}")).await;
    }
    cache
        .invalidate_prefix(&format!("http://{addr}/p/"))
        .await
        .unwrap();
    for (path, expect) in [("/p/a", "MISS"), ("/p/b", "MISS"), ("/q/c", "HIT")] {
        let (_, how, _) = get(&cache, &format!("http://{addr}{path}")).await;
        assert_eq!(how, expect, "{path}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    cache.clear().await.unwrap();
}

/// Redis stopped mid-test: every request is still answered (from the
/// upstream), the errors are counted; restarted: the store resumes on its
/// own.
#[tokio::test]
async fn a_redis_that_stops_and_comes_back_never_fails_a_request() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let (addr, calls) = upstream(60).await;
    let cache = cache(&redis.url(), "restart");
    let uri = format!("http://{addr}/r");
    assert_eq!(get(&cache, &uri).await.1, "MISS");
    assert_eq!(get(&cache, &uri).await.1, "HIT");
    assert!(cache.store_ok());
    redis.stop();
    for _ in 0..5 {
        let (status, how, _) = get(&cache, &uri).await;
        assert_eq!((status, how.as_str()), (StatusCode::OK, "MISS"));
    }
    assert!(!cache.store_ok());
    assert!(cache.stats().store_errors >= 5, "{:?}", cache.stats());
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    assert!(redis.spawn(), "redis-server restarted");
    // Bounded: the store reconnects within a few tries. Real time: the
    // connection manager's reconnection runs on its own clock and sockets.
    let mut resumed = false;
    for _ in 0..50 {
        let (status, how, _) = get(&cache, &uri).await;
        assert_eq!(status, StatusCode::OK);
        if how == "HIT" {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "the store did not resume: {:?}", cache.stats());
    assert!(cache.store_ok());
}
