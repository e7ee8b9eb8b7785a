//! The circuit breaker's cost, as ratios of a bare `tower::service_fn` call,
//! beside the peer crates recloser, failsafe and tower-resilience, in one
//! run; and its throughput with 1 to 16 tasks sharing one breaker.
//!
//! Every breaker is built once, outside the timed loop; requests are built
//! outside the timed region (`iter_batched`); services are cloned per call,
//! as hyper and axum do. Allocations per call are counted and printed.

mod support;

use criterion::{criterion_group, BatchSize, Criterion};
use http::{Request, Response};
use std::{
    hint::black_box,
    time::{Duration, Instant},
};
use support::{allocs, counted, handler, request};
use tower::{service_fn, Layer, ServiceExt};
use tower_shield::breaker::{CircuitBreakerLayer, Config};

async fn io_handler(req: Request<()>) -> Result<Response<()>, std::io::Error> {
    black_box(&req);
    Ok(Response::new(()))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The breaker in its default, consecutive-failures mode over the baseline
/// handler.
fn consecutive(
) -> impl tower::Service<Request<()>, Response = Response<()>, Error = tower::BoxError> + Clone {
    CircuitBreakerLayer::new(Config::default())
        .unwrap()
        .layer(service_fn(handler))
}

/// The floor of any layer of the breaker's shape: tower's own `MapErr`,
/// holding shared state (an `Arc`, cloned with the service and into each
/// response future with the closure) and turning the error into a
/// `BoxError`, with no logic at all.
fn floor(
) -> impl tower::Service<Request<()>, Response = Response<()>, Error = tower::BoxError> + Clone {
    let shared = std::sync::Arc::new(());
    tower::util::MapErrLayer::new(move |e: std::convert::Infallible| {
        let _ = &shared;
        tower::BoxError::from(e)
    })
    .layer(service_fn(handler))
}

// Every bench clones its service per call; the bare `service_fn` is `Copy`.
#[allow(clippy::clone_on_copy)]
fn closed_path(c: &mut Criterion) {
    let rt = rt();
    let bare = service_fn(handler);
    let consecutive = consecutive();
    let slow = CircuitBreakerLayer::new(
        Config::default()
            .slow_call_duration(Duration::from_secs(1))
            .slow_call_rate(50.0),
    )
    .unwrap()
    .layer(service_fn(handler));
    // One breaker per upstream, as the sidecar and the client stack use it.
    let keyed = CircuitBreakerLayer::new(Config::default())
        .unwrap()
        .by_authority()
        .layer(service_fn(handler));
    let count_window =
        CircuitBreakerLayer::new(Config::default().failure_rate(50.0).window_calls(100))
            .unwrap()
            .layer(service_fn(handler));
    let time_window = CircuitBreakerLayer::new(
        Config::default()
            .failure_rate(50.0)
            .window_duration(Duration::from_secs(10)),
    )
    .unwrap()
    .layer(service_fn(handler));
    let floor = floor();
    // The floor taken apart: the same `MapErr` with nothing shared and the
    // error passed through, then with the `BoxError` only, then with the
    // `Arc` only.
    let identity =
        tower::util::MapErrLayer::new(|e: std::convert::Infallible| e).layer(service_fn(handler));
    let boxed = tower::util::MapErrLayer::new(tower::BoxError::from).layer(service_fn(handler));
    let shared = std::sync::Arc::new(());
    let with_arc = tower::util::MapErrLayer::new(move |e: std::convert::Infallible| {
        let _ = &shared;
        e
    })
    .layer(service_fn(handler));
    let recloser = recloser::AsyncRecloser::from(recloser::Recloser::default());
    let failsafe = failsafe::Config::new().build();
    let resilience = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .unwrap()
        .layer(service_fn(io_handler));

    let mut group = c.benchmark_group("breaker/closed");
    group.bench_function("service_fn", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| bare.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("floor_tower_map_err", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| floor.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("floor_part_identity_map_err", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| identity.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("floor_part_box_error_only", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| boxed.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("floor_part_arc_only", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| with_arc.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("consecutive", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| consecutive.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("keyed_by_authority", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| keyed.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("consecutive_slow_calls", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| slow.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("rate_count_window", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| count_window.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("rate_time_window", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| time_window.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("peer_recloser", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| recloser.call(bare.clone().oneshot(req)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("peer_failsafe", |b| {
        use failsafe::futures::CircuitBreaker as _;
        b.to_async(&rt).iter_batched(
            request,
            |req| failsafe.call(bare.clone().oneshot(req)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("peer_tower_resilience", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| resilience.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    println!(
        "allocations per call: service_fn {:.2}, consecutive {:.2}, keyed by authority {:.2}, slow calls {:.2}, count window {:.2}, time window {:.2}",
        allocs(&rt, |r| bare.clone().oneshot(r)),
        allocs(&rt, |r| consecutive.clone().oneshot(r)),
        allocs(&rt, |r| keyed.clone().oneshot(r)),
        allocs(&rt, |r| slow.clone().oneshot(r)),
        allocs(&rt, |r| count_window.clone().oneshot(r)),
        allocs(&rt, |r| time_window.clone().oneshot(r)),
    );
}

fn open_path(c: &mut Criterion) {
    let rt = rt();
    let layer = CircuitBreakerLayer::new(Config::default()).unwrap();
    layer.breakers().default_breaker().force_open();
    let ours = layer.layer(service_fn(handler));
    let recloser = recloser::AsyncRecloser::from(
        recloser::Recloser::custom()
            .closed_len(1)
            .open_wait(Duration::from_secs(3600))
            .build(),
    );
    let bare = service_fn(handler);
    rt.block_on(async {
        // Trip recloser: one failure with a ring of one call.
        let _ = recloser.call(async { Err::<(), _>(()) }).await;
        let _ = recloser.call(async { Err::<(), _>(()) }).await;
    });
    let mut group = c.benchmark_group("breaker/open");
    group.bench_function("service_fn", |b| {
        b.to_async(&rt)
            .iter_batched(request, |req| bare.oneshot(req), BatchSize::SmallInput)
    });
    group.bench_function("rejection", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| ours.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("peer_recloser_rejection", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| recloser.call(bare.oneshot(req)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
    println!(
        "allocations per rejection: {:.2}",
        allocs(&rt, |r| ours.clone().oneshot(r))
    );
}

/// Throughput with 1, 2, 4, 8 and 16 tasks on a 2-worker runtime sharing
/// one breaker, beside the same tasks calling a bare `service_fn`. Bounded:
/// 200 000 calls per point.
fn contention(_c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ours = CircuitBreakerLayer::new(Config::default())
        .unwrap()
        .layer(service_fn(handler));
    let bare = service_fn(handler);
    const CALLS: u64 = 200_000;
    let run = |tasks: u64, breaker: bool| -> f64 {
        rt.block_on(async {
            let start = Instant::now();
            let handles: Vec<_> = (0..tasks)
                .map(|_| {
                    let ours = ours.clone();
                    tokio::spawn(async move {
                        for _ in 0..CALLS / tasks {
                            if breaker {
                                let _ = ours.clone().oneshot(request()).await;
                            } else {
                                let _ = bare.oneshot(request()).await;
                            }
                        }
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
            CALLS as f64 / start.elapsed().as_secs_f64()
        })
    };
    // Warm up both paths before the points are taken.
    run(2, false);
    run(2, true);
    let points: Vec<(u64, f64, f64)> = [1u64, 2, 4, 8, 16]
        .into_iter()
        .map(|tasks| (tasks, run(tasks, false), run(tasks, true)))
        .collect();
    let (one_bare, one_ours) = (points[0].1, points[0].2);
    println!("contention (2 worker threads), calls per second:");
    for (tasks, b, o) in points {
        println!(
            "  tasks {tasks:2}: service_fn {:>11.0}/s ({:.2}x of 1 task)  breaker {:>11.0}/s ({:.2}x of 1 task)  breaker/bare {:.2}",
            b,
            b / one_bare,
            o,
            o / one_ours,
            o / b
        );
    }
}

/// Calls one instance of `svc` for every request, never cloning it (as a
/// server connection or a `tower::buffer` worker does), with the requests
/// built before the clock starts.
fn one_instance<S>(b: &mut criterion::Bencher<'_>, rt: &tokio::runtime::Runtime, svc: &S)
where
    S: tower::Service<Request<()>, Response = Response<()>> + Clone + 'static,
{
    b.to_async(rt).iter_custom(|iters| {
        let mut svc = svc.clone();
        async move {
            let reqs: Vec<_> = (0..iters).map(|_| request()).collect();
            let start = std::time::Instant::now();
            for req in reqs {
                if let Ok(ready) = svc.ready().await {
                    black_box(ready.call(req).await.is_ok());
                }
            }
            start.elapsed()
        }
    })
}

/// The closed path again, calling one service instance instead of a clone
/// per call: what a breaker costs when no service `Arc` is bumped per call,
/// beside the floor (whose response future still holds its `Arc`, in the
/// closure) and recloser.
fn one_instance_path(c: &mut Criterion) {
    let rt = rt();
    let bare = service_fn(handler);
    let consecutive = consecutive();
    let floor = floor();
    let recloser = recloser::AsyncRecloser::from(recloser::Recloser::default());
    let mut group = c.benchmark_group("breaker/one_instance");
    group.bench_function("service_fn", |b| one_instance(b, &rt, &bare));
    group.bench_function("floor_tower_map_err", |b| one_instance(b, &rt, &floor));
    group.bench_function("consecutive", |b| one_instance(b, &rt, &consecutive));
    group.bench_function("peer_recloser", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let recloser = recloser.clone();
            async move {
                let reqs: Vec<_> = (0..iters).map(|_| request()).collect();
                let start = std::time::Instant::now();
                for req in reqs {
                    black_box(recloser.call(bare.oneshot(req)).await.is_ok());
                }
                start.elapsed()
            }
        })
    });
    group.finish();
}

/// What a clock read costs in this harness: the breaker reads tokio's clock
/// (so that tests can pause it), and this build has tokio's `test-util`
/// (the tests need it), under which every read asks the runtime for its
/// clock first.
fn clock(c: &mut Criterion) {
    let rt = rt();
    let mut group = c.benchmark_group("breaker/clock");
    group.bench_function("std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    group.bench_function("tokio_instant_now_in_runtime", |b| {
        let _guard = rt.enter();
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    group.finish();
}

criterion_group!(
    benches,
    closed_path,
    one_instance_path,
    open_path,
    contention,
    clock
);

/// With `BREAKER_COUNT=<bench>` set (`service_fn`, `floor_tower_map_err` or
/// `consecutive`), runs 10 000 calls (requests built beforehand) through
/// that service inside `support::counted`, for an instruction count that
/// does not move with the machine's load:
///
/// ```text
/// BREAKER_COUNT=consecutive valgrind --tool=callgrind \
///     --toggle-collect='*::support::counted' target/release/deps/breaker-<hash>
/// ```
fn count(which: &str) {
    let rt = rt();
    let bare = service_fn(handler);
    let consecutive = consecutive();
    let floor = floor();
    let reqs: Vec<_> = (0..10_000).map(|_| request()).collect();
    match which {
        "service_fn" => counted(&rt, reqs, |r| bare.oneshot(r)),
        "floor_tower_map_err" => counted(&rt, reqs, |r| floor.clone().oneshot(r)),
        "consecutive" => counted(&rt, reqs, |r| consecutive.clone().oneshot(r)),
        other => panic!("BREAKER_COUNT: no bench {other:?}"),
    }
}

fn main() {
    support::main_or_count("BREAKER_COUNT", count, benches);
}
