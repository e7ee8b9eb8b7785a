//! The response cache, beside its peers, in one run:
//!
//! - `cache/store`: one lookup of a stored entry in `MemoryStore`, a raw
//!   `quick_cache` get and a `moka` get of the same value, on 1 and on 2
//!   threads at once (time per lookup, so flat is no negative scaling);
//! - `cache/hit`: a whole hit through `CacheLayer` (key, freshness, the
//!   response with `Age`) beside `http-cache-tower`'s layer (moka manager)
//!   on the same entry, and a bare `service_fn` answering the same response;
//! - `cache/upstream`: the same GET answered by a loopback axum upstream
//!   through a hyper client, which a hit replaces; and a hit from the Redis
//!   store when a Redis answers (`REDIS_URL`, else 127.0.0.1:6379).

mod support;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::{Empty, Full};
use std::{
    convert::Infallible,
    hint::black_box,
    time::{Duration, Instant},
};
use tower::{Layer, ServiceExt};
use tower_shield::cache::{CacheLayer, Config, Stored};

const URI: &str = "http://127.0.0.1/catalogue";

fn fresh_response() -> Response<Full<Bytes>> {
    Response::builder()
        .header("cache-control", "max-age=3600")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            b"{\"ok\":true,\"items\":[1,2,3]}",
        )))
        .unwrap()
}

async fn origin(_req: Request<Empty<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(fresh_response())
}

fn get() -> Request<Empty<Bytes>> {
    Request::get(URI).body(Empty::new()).unwrap()
}

/// Time per call of `lookup`, run `iters` times split over `threads`;
/// thread `i` looks up key `i` (as different requests do), so what is
/// measured is whether lookups of different keys slow each other down.
fn per_thread(iters: u64, threads: u64, lookup: impl Fn(usize) + Sync) -> Duration {
    let each = iters.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let lookup = &lookup;
            s.spawn(move || {
                for _ in 0..each {
                    lookup(t as usize);
                }
            });
        }
    });
    // Reported per lookup of one thread (criterion divides by `iters`):
    // flat from 1 to N threads means the lookups do not slow each other.
    start.elapsed() * u32::try_from(threads).unwrap_or(1)
}

fn store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = CacheLayer::new(Config::default()).unwrap();
    let keys: Vec<String> = (0..64).map(|i| format!("{URI}/{i}")).collect();
    let raw: quick_cache::sync::Cache<String, Stored> = quick_cache::sync::Cache::new(1024);
    let moka: moka::sync::Cache<String, Stored> = moka::sync::Cache::new(1024);
    for key in &keys {
        let res = fresh_response().map(|_| Bytes::from_static(b"{\"ok\":true,\"items\":[1,2,3]}"));
        assert!(rt.block_on(cache.warm(key, res)).unwrap());
        let value: Stored = cache.store().get_now(key).expect("warmed");
        raw.insert(key.clone(), value.clone());
        moka.insert(key.clone(), value);
    }
    let store = cache.store().clone();

    let mut group = c.benchmark_group("cache/store");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get() as u64);
    for t in [1, threads] {
        group.bench_function(format!("memory_store/{t}"), |b| {
            b.iter_custom(|iters| {
                per_thread(iters, t, |i| {
                    drop(black_box(store.get_now(black_box(&keys[i]))))
                })
            })
        });
        group.bench_function(format!("peer_quick_cache/{t}"), |b| {
            b.iter_custom(|iters| {
                per_thread(iters, t, |i| drop(black_box(raw.get(black_box(&keys[i])))))
            })
        });
        group.bench_function(format!("peer_moka/{t}"), |b| {
            b.iter_custom(|iters| {
                per_thread(iters, t, |i| drop(black_box(moka.get(black_box(&keys[i])))))
            })
        });
    }
    group.finish();
}

// Every service is cloned per call, as hyper and axum do; the bare
// `service_fn` is `Copy`, and is cloned the same way for a fair comparison.
#[allow(clippy::clone_on_copy)]
fn hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bare = tower::service_fn(origin);
    let shield = CacheLayer::new(Config::default())
        .unwrap()
        .layer(tower::service_fn(origin));
    let peer = http_cache_tower::HttpCacheLayer::new(http_cache::MokaManager::default())
        .layer(tower::service_fn(origin));
    // Warm both caches with the first call.
    rt.block_on(async {
        shield.clone().oneshot(get()).await.unwrap();
        peer.clone().oneshot(get()).await.unwrap();
        let res = shield.clone().oneshot(get()).await.unwrap();
        assert!(res.headers().contains_key("age"), "a hit");
    });

    let mut group = c.benchmark_group("cache/hit");
    group.bench_function("service_fn", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(bare.clone().oneshot(get()).await.unwrap()) })
    });
    group.bench_function("shield", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(shield.clone().oneshot(get()).await.unwrap()) })
    });
    group.bench_function("peer_http_cache_tower", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(peer.clone().oneshot(get()).await.unwrap()) })
    });
    group.finish();
}

/// A Redis that answers, if any.
fn redis_url() -> Option<String> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let hostport = url
        .trim_start_matches("redis://")
        .split('/')
        .next()?
        .to_owned();
    std::net::TcpStream::connect(hostport).ok().map(|_| url)
}

fn upstream(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(|| async { fresh_response() });
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}/catalogue");
    let mut group = c.benchmark_group("cache/upstream");
    group.bench_function("loopback_round_trip", |b| {
        b.to_async(&rt).iter(|| async {
            let res = client
                .request(Request::get(uri.as_str()).body(Empty::new()).unwrap())
                .await
                .unwrap();
            black_box(
                http_body_util::BodyExt::collect(res.into_body())
                    .await
                    .unwrap(),
            )
        })
    });
    #[cfg(feature = "redis")]
    if let Some(url) = redis_url() {
        let redis = rt.block_on(async {
            let layer = CacheLayer::from_config(
                Config::default()
                    .redis(url)
                    .namespace(format!("tower-shield-bench-{}", std::process::id())),
            )
            .unwrap();
            let svc = layer.layer(tower::service_fn(origin));
            svc.clone().oneshot(get()).await.unwrap();
            let res = svc.clone().oneshot(get()).await.unwrap();
            assert!(res.headers().contains_key("age"), "a Redis hit");
            (layer, svc)
        });
        group.bench_function("redis_hit", |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(redis.1.clone().oneshot(get()).await.unwrap()) })
        });
        rt.block_on(redis.0.clear()).unwrap();
    }
    #[cfg(not(feature = "redis"))]
    let _ = redis_url;
    group.finish();
}

criterion_group!(benches, store, hit, upstream);
criterion_main!(benches);
