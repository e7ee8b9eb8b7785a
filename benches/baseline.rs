//! The baseline every other bench is compared with: a bare
//! `tower::service_fn` call, on a current-thread and a multi-thread runtime,
//! and the client stack's own cost over it (with and without its timeout,
//! beside tower's `Timeout` alone). Requests are built outside the timed
//! region; allocations per call are counted and printed.

mod support;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::time::Duration;
use support::{allocs, handler, request};
use tower::{service_fn, Layer, ServiceExt};
use tower_shield::stack::ClientStack;

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

        let base = allocs(&rt, |r| bare.clone().oneshot(r));
        println!(
            "allocations per call ({name}): service_fn {base:.2}, client_stack_no_timeout {:.2}, client_stack_timeout {:.2}, tower timeout {:.2}",
            allocs(&rt, |r| stack_no_timeout.clone().oneshot(r)),
            allocs(&rt, |r| stack_timeout.clone().oneshot(r)),
            allocs(&rt, |r| tower_timeout.clone().oneshot(r)),
        );
    }
}

criterion_group!(benches, baseline);
criterion_main!(benches);
