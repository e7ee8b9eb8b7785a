//! The retry layer's cost on the success path, as ratios of a bare
//! `tower::service_fn` call, beside `tower::retry::Retry` with a minimal
//! policy that keeps the same copy of the request (its head, and a body that
//! is cheap to clone), and beside tower's `Retry` with that policy and
//! tower's own retry budget (`TpsBudget`), which is what ours does by
//! default; and the cost of reading a body ahead for replay, at
//! 1 KiB and 64 KiB. One run; allocations per call are counted and printed.

mod support;

use bytes::Bytes;
use criterion::{criterion_group, BatchSize, Criterion};
use http::{Method, Request, Response};
use http_body_util::{Empty, Full};
use std::{
    convert::Infallible,
    future::Ready,
    hint::black_box,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};
use support::{allocs, counted, request};
use tower::{
    retry::{
        budget::{Budget, TpsBudget},
        Policy,
    },
    service_fn, Layer, Service, ServiceExt,
};
use tower_shield::retry::{Config, RetryLayer};

async fn handler<B>(req: Request<B>) -> Result<Response<()>, Infallible> {
    black_box(&req);
    Ok(Response::new(()))
}

/// The least a tower policy can do and still be able to retry: copy the
/// request head (and the cheap-to-clone body) once, never retry a success.
#[derive(Clone)]
struct Minimal;

impl<B: Clone> Policy<Request<B>, Response<()>, Infallible> for Minimal {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _: &mut Request<B>,
        result: &mut Result<Response<()>, Infallible>,
    ) -> Option<Self::Future> {
        match result {
            Ok(res) if res.status().is_server_error() => Some(std::future::ready(())),
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        let mut copy = Request::new(req.body().clone());
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

/// The minimal policy plus a budget shared by every clone through an `Arc`:
/// a deposit for each answer that is not retried and a withdrawal for each
/// retry, as tower's budget docs do it. With tower's own `TpsBudget` (10 s,
/// 10 per second, 20%, the same settings as ours) this is tower's `Retry`
/// doing what ours does by default; with [`Counter`] it is the floor of any
/// retry whose clones share state.
struct Budgeted<T>(Arc<T>);

impl<T> Clone for Budgeted<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Budget, B: Clone> Policy<Request<B>, Response<()>, Infallible> for Budgeted<T> {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        req: &mut Request<B>,
        result: &mut Result<Response<()>, Infallible>,
    ) -> Option<Self::Future> {
        match result {
            Ok(res) if res.status().is_server_error() => {
                self.0.withdraw().then(|| std::future::ready(()))
            }
            _ => {
                self.0.deposit();
                Minimal.retry(req, result)
            }
        }
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        Minimal.clone_request(req)
    }
}

/// The least a shared budget can be: one counter, one atomic add per
/// deposit, and nothing else (no clock, no lock, no decision).
#[derive(Default)]
struct Counter(AtomicU64);

impl Budget for Counter {
    fn deposit(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn withdraw(&self) -> bool {
        false
    }
}

fn get() -> Request<Empty<Bytes>> {
    request().map(|()| Empty::new())
}

fn with_body(method: Method, size: usize) -> impl Fn() -> Request<Full<Bytes>> {
    let data = Bytes::from(vec![7u8; size]);
    move || {
        let mut req = request().map(|()| Full::new(data.clone()));
        *req.method_mut() = method.clone();
        req
    }
}

fn put(size: usize) -> impl Fn() -> Request<Full<Bytes>> {
    with_body(Method::PUT, size)
}

/// A service the GET benches can clone and call.
trait Get: Service<Request<Empty<Bytes>>, Response = Response<()>> + Clone {}
impl<S: Service<Request<Empty<Bytes>>, Response = Response<()>> + Clone> Get for S {}

/// The GET benches' services: the bare handler, tower's retry with the
/// minimal policy, tower's retry with its budget, and ours with its defaults.
fn services() -> (impl Get + Copy, impl Get, impl Get, impl Get, impl Get) {
    let bare = service_fn(handler::<Empty<Bytes>>);
    let tower_retry = tower::retry::RetryLayer::new(Minimal).layer(bare);
    let shared = tower::retry::RetryLayer::new(Budgeted(Arc::<Counter>::default())).layer(bare);
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 10, 0.2));
    let tower_budgeted = tower::retry::RetryLayer::new(Budgeted(budget)).layer(bare);
    let ours = RetryLayer::new(Config::default())
        .unwrap()
        .layer(service_fn(handler));
    (bare, tower_retry, shared, tower_budgeted, ours)
}

fn success_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (bare, tower_retry, shared, tower_budgeted, ours) = services();
    let layer = RetryLayer::new(Config::default()).unwrap();
    let ours_full = layer.layer(service_fn(handler));
    // One attempt: what the sidecar runs without a `[retry]` section.
    let one_attempt = RetryLayer::new(Config::default().max_attempts(1))
        .unwrap()
        .layer(service_fn(
            handler::<tower_shield::body::ReplayBody<Empty<Bytes>>>,
        ));

    let mut group = c.benchmark_group("retry/success");
    group.bench_function("service_fn", |b| {
        b.to_async(&rt)
            .iter_batched(get, |req| bare.oneshot(req), BatchSize::SmallInput)
    });
    group.bench_function("peer_tower_retry_minimal_policy", |b| {
        b.to_async(&rt).iter_batched(
            get,
            |req| tower_retry.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("floor_tower_retry_minimal_shared_counter", |b| {
        b.to_async(&rt).iter_batched(
            get,
            |req| shared.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("peer_tower_retry_tps_budget", |b| {
        b.to_async(&rt).iter_batched(
            get,
            |req| tower_budgeted.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("ours_get", |b| {
        b.to_async(&rt)
            .iter_batched(get, |req| ours.clone().oneshot(req), BatchSize::SmallInput)
    });
    group.bench_function("ours_post_with_body_not_retryable", |b| {
        b.to_async(&rt).iter_batched(
            with_body(Method::POST, 1024),
            |req| ours_full.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("ours_one_attempt", |b| {
        b.to_async(&rt).iter_batched(
            get,
            |req| one_attempt.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    for size in [1024, 64 * 1024] {
        group.bench_function(format!("ours_put_body_{}k", size / 1024), |b| {
            b.to_async(&rt).iter_batched(
                put(size),
                |req| ours_full.clone().oneshot(req),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    let post = with_body(Method::POST, 1024);
    let put_1k = put(1024);
    let put_64k = put(64 * 1024);
    println!(
        "allocations per call: service_fn {:.2}, tower retry {:.2}, tower retry with its budget {:.2}, ours GET {:.2}, ours POST (not retryable) {:.2}, ours PUT 1 KiB {:.2}, ours PUT 64 KiB {:.2}",
        allocs(&rt, |_| bare.oneshot(get())),
        allocs(&rt, |_| tower_retry.clone().oneshot(get())),
        allocs(&rt, |_| tower_budgeted.clone().oneshot(get())),
        allocs(&rt, |_| ours.clone().oneshot(get())),
        allocs(&rt, |_| ours_full.clone().oneshot(post())),
        allocs(&rt, |_| ours_full.clone().oneshot(put_1k())),
        allocs(&rt, |_| ours_full.clone().oneshot(put_64k())),
    );
}

criterion_group!(benches, success_path);

/// With `RETRY_COUNT=<bench>` set (`service_fn`, `peer_tower_retry_minimal_policy`,
/// `floor_tower_retry_minimal_shared_counter`, `peer_tower_retry_tps_budget`
/// or `ours_get`), runs 10 000 GETs (built beforehand) through that service
/// inside `support::counted`, for an instruction count that does not move with the
/// machine's load:
///
/// ```text
/// RETRY_COUNT=ours_get valgrind --tool=callgrind \
///     --toggle-collect='*::support::counted' target/release/deps/retry-<hash>
/// ```
///
/// Instructions per call are the total divided by 10 000.
fn count(which: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (bare, tower_retry, shared, tower_budgeted, ours) = services();
    let reqs: Vec<_> = (0..10_000).map(|_| get()).collect();
    match which {
        "service_fn" => counted(&rt, reqs, |r| bare.oneshot(r)),
        "peer_tower_retry_minimal_policy" => counted(&rt, reqs, |r| tower_retry.clone().oneshot(r)),
        "peer_tower_retry_tps_budget" => counted(&rt, reqs, |r| tower_budgeted.clone().oneshot(r)),
        "floor_tower_retry_minimal_shared_counter" => {
            counted(&rt, reqs, |r| shared.clone().oneshot(r))
        }
        "ours_get" => counted(&rt, reqs, |r| ours.clone().oneshot(r)),
        other => panic!("RETRY_COUNT: no bench {other:?}"),
    }
}

fn main() {
    support::main_or_count("RETRY_COUNT", count, benches);
}
