//! The context layers' cost, as ratios of a bare `tower::service_fn` call,
//! beside the peers the issue names, in one run:
//!
//! - propagating an inbound context (`traceparent`, request and
//!   correlation IDs) against opentelemetry's `TraceContextPropagator`
//!   extracting the `traceparent` alone;
//! - minting new IDs (a new trace, a UUID v7 request ID);
//! - the server layer, and server plus client layer (what the sidecar runs
//!   per request), against tower-http's `SetRequestId` +
//!   `PropagateRequestId` (UUID v4).
//!
//! No `tracing` subscriber is installed (no OTel export), as the issue's
//! target says. Allocations per call are counted and printed.

mod support;

use criterion::{criterion_group, BatchSize, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use std::convert::Infallible;
use std::hint::black_box;
use support::{allocs, counted, handler, request};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_shield::context::{ClientContextLayer, Config, Context, ServerContextLayer};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn inbound_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_static(TP));
    h.insert(
        "x-request-id",
        HeaderValue::from_static("01a20621-ab6f-7166-bf72-8b183b11722a"),
    );
    h.insert("x-correlation-id", HeaderValue::from_static("checkout-77"));
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h
}

fn inbound() -> Request<()> {
    let mut req = request();
    *req.headers_mut() = inbound_headers();
    req
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

fn propagate(c: &mut Criterion) {
    let config = Config::new();
    let headers = inbound_headers();
    let empty = HeaderMap::new();
    let otel = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    let mut group = c.benchmark_group("context/propagate");
    group.bench_function("ours_propagate_inbound", |b| {
        b.iter(|| black_box(Context::from_headers(black_box(&headers), &config)))
    });
    group.bench_function("ours_mint_new_ids", |b| {
        b.iter(|| black_box(Context::from_headers(black_box(&empty), &config)))
    });
    group.bench_function("ours_inject_outbound", |b| {
        let cx = Context::from_headers(&headers, &config);
        // An outgoing request's headers as a client would have them.
        let outgoing = {
            let mut h = HeaderMap::new();
            h.insert("host", HeaderValue::from_static("127.0.0.1:8080"));
            h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
            h.insert("accept", HeaderValue::from_static("*/*"));
            h
        };
        b.iter_batched(
            || outgoing.clone(),
            |mut out| {
                cx.inject(&mut out, tower_shield::context::SpanId::random(), &config);
                out
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("peer_otel_traceparent_extract", |b| {
        b.iter(|| black_box(otel.extract(&Headers(black_box(&headers)))))
    });
    group.bench_function("peer_uuid_v4", |b| {
        b.iter(|| black_box(uuid::Uuid::new_v4()))
    });
    group.finish();
}

/// What the layer benches call: a bare `service_fn`, our server layer, our
/// server and client layers, and tower-http's request-id pair, each over
/// the same handler.
fn services() -> (
    impl LayerBench + Copy,
    impl LayerBench,
    impl LayerBench,
    impl LayerBench,
) {
    let bare = service_fn(handler);
    let server = ServerContextLayer::new(Config::new()).layer(service_fn(handler));
    let both = ServiceBuilder::new()
        .layer(ServerContextLayer::new(Config::new()))
        .layer(ClientContextLayer::new(
            Config::new().service("bench", "1.0.0"),
        ))
        .service(service_fn(handler));
    let x_request_id = HeaderName::from_static("x-request-id");
    let tower_http = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(
            x_request_id.clone(),
            MakeRequestUuid,
        ))
        .layer(PropagateRequestIdLayer::new(x_request_id))
        .service(service_fn(handler));
    (bare, server, both, tower_http)
}

/// A service the layer benches can clone and call.
trait LayerBench:
    Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone
{
}

impl<S> LayerBench for S where
    S: Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone
{
}

fn layers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (bare, server, both, tower_http) = services();

    let mut group = c.benchmark_group("context/layers");
    group.bench_function("service_fn", |b| {
        b.to_async(&rt)
            .iter_batched(inbound, |req| bare.oneshot(req), BatchSize::SmallInput)
    });
    group.bench_function("ours_server_propagating", |b| {
        b.to_async(&rt).iter_batched(
            inbound,
            |req| server.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("ours_server_minting", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| server.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("ours_server_plus_client", |b| {
        b.to_async(&rt).iter_batched(
            inbound,
            |req| both.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("peer_tower_http_request_id_propagate", |b| {
        b.to_async(&rt).iter_batched(
            request,
            |req| tower_http.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    // The same pair on the inbound request: its `x-request-id` is kept, so
    // nothing is minted (the like of `ours_server_propagating`).
    group.bench_function("peer_tower_http_request_id_inbound", |b| {
        b.to_async(&rt).iter_batched(
            inbound,
            |req| tower_http.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    // Like with like: the same request, built outside the count.
    println!(
        "allocations per call, request with inbound trace headers: service_fn {:.2}, ours server {:.2}, ours server+client {:.2}",
        allocs(&rt, |_| bare.oneshot(inbound())),
        allocs(&rt, |_| server.clone().oneshot(inbound())),
        allocs(&rt, |_| both.clone().oneshot(inbound())),
    );
    println!(
        "allocations per call, bare request: service_fn {:.2}, ours server (minting) {:.2}, tower-http request-id {:.2}",
        allocs(&rt, |req| bare.oneshot(req)),
        allocs(&rt, |req| server.clone().oneshot(req)),
        allocs(&rt, |req| tower_http.clone().oneshot(req)),
    );
}

criterion_group!(benches, propagate, layers);

/// With `CONTEXT_COUNT=<bench>` set, runs 10 000 calls of one layer bench
/// (requests built beforehand; `service_fn_bare` is the baseline on the bare
/// request the minting benches send) inside `support::counted`, for an instruction count
/// that does not move with the machine's load:
///
/// ```text
/// CONTEXT_COUNT=ours_server_minting valgrind --tool=callgrind \
///     --toggle-collect='*::support::counted' target/release/deps/context-<hash>
/// ```
///
/// Instructions per call are the total divided by 10 000.
fn count(which: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (bare, server, both, tower_http) = services();
    const N: usize = 10_000;
    let make: fn() -> Request<()> = match which {
        "ours_server_minting" | "peer_tower_http_request_id_propagate" | "service_fn_bare" => {
            request
        }
        _ => inbound,
    };
    let reqs: Vec<_> = (0..N).map(|_| make()).collect();
    match which {
        "service_fn" | "service_fn_bare" => counted(&rt, reqs, |r| bare.oneshot(r)),
        "ours_server_propagating" | "ours_server_minting" => {
            counted(&rt, reqs, |r| server.clone().oneshot(r))
        }
        "ours_server_plus_client" => counted(&rt, reqs, |r| both.clone().oneshot(r)),
        "peer_tower_http_request_id_propagate" | "peer_tower_http_request_id_inbound" => {
            counted(&rt, reqs, |r| tower_http.clone().oneshot(r))
        }
        other => panic!("CONTEXT_COUNT: no bench {other:?}"),
    }
}

fn main() {
    support::main_or_count("CONTEXT_COUNT", count, benches);
}
