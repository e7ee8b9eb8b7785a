//! The baseline every other bench is compared with: a bare
//! `tower::service_fn` call, on a current-thread and a multi-thread runtime,
//! and the client stack's own cost over it (with and without its timeout,
//! beside tower's `Timeout` alone). Requests are built outside the timed
//! region; allocations per call are counted and printed.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{Request, Response};
use std::{
    alloc::{GlobalAlloc, Layout, System},
    convert::Infallible,
    hint::black_box,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_shield::stack::ClientStack;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

async fn handler(req: Request<()>) -> Result<Response<()>, Infallible> {
    black_box(&req);
    Ok(Response::new(()))
}

fn request() -> Request<()> {
    Request::get("http://127.0.0.1/").body(()).unwrap()
}

/// Allocations of one call through `svc`, measured over 1000 calls.
fn allocs_per_call<S>(rt: &tokio::runtime::Runtime, mut svc: S) -> f64
where
    S: Service<Request<()>>,
{
    rt.block_on(async {
        let reqs: Vec<_> = (0..1000).map(|_| request()).collect();
        let before = ALLOCS.load(Ordering::Relaxed);
        for req in reqs {
            let _ = svc.ready().await.ok().unwrap().call(req).await;
        }
        (ALLOCS.load(Ordering::Relaxed) - before) as f64 / 1000.0
    })
}

fn runtimes() -> [(&'static str, tokio::runtime::Runtime); 2] {
    [
        (
            "current_thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        ),
        (
            "multi_thread",
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap(),
        ),
    ]
}

// Every bench clones its service per call, as hyper and axum do; the bare
// `service_fn` is `Copy`, and is cloned the same way for a fair comparison.
#[allow(clippy::clone_on_copy)]
fn baseline(c: &mut Criterion) {
    for (name, rt) in runtimes() {
        let mut group = c.benchmark_group(format!("baseline/{name}"));
        let bare = service_fn(handler);
        let stack_no_timeout = ClientStack::new().no_timeout().layer(service_fn(handler));
        let stack_timeout = ClientStack::new()
            .timeout(Duration::from_secs(5))
            .layer(service_fn(handler));
        let tower_timeout =
            tower::timeout::TimeoutLayer::new(Duration::from_secs(5)).layer(service_fn(handler));

        group.bench_function("service_fn", |b| {
            b.to_async(&rt).iter_batched(
                request,
                |req| bare.clone().oneshot(req),
                BatchSize::SmallInput,
            )
        });
        group.bench_function("client_stack_no_timeout", |b| {
            b.to_async(&rt).iter_batched(
                request,
                |req| stack_no_timeout.clone().oneshot(req),
                BatchSize::SmallInput,
            )
        });
        group.bench_function("client_stack_timeout", |b| {
            b.to_async(&rt).iter_batched(
                request,
                |req| stack_timeout.clone().oneshot(req),
                BatchSize::SmallInput,
            )
        });
        group.bench_function("peer_tower_timeout", |b| {
            b.to_async(&rt).iter_batched(
                request,
                |req| tower_timeout.clone().oneshot(req),
                BatchSize::SmallInput,
            )
        });
        group.finish();

        let base = allocs_per_call(&rt, bare.clone());
        println!(
            "allocations per call ({name}): service_fn {base:.2}, client_stack_no_timeout {:.2}, client_stack_timeout {:.2}, tower timeout {:.2}",
            allocs_per_call(&rt, stack_no_timeout.clone()),
            allocs_per_call(&rt, stack_timeout.clone()),
            allocs_per_call(&rt, tower_timeout.clone()),
        );
    }
}

criterion_group!(benches, baseline);
criterion_main!(benches);
