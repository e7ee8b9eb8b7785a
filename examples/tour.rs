//! The tour: what each of tower-shield's layers does, step by step.
//!
//! ```text
//! cargo run --example tour
//! ```
//!
//! It starts a deliberately flaky upstream on 127.0.0.1, sends traffic
//! through a client stack built from the crate's layers, and prints what
//! happened at each step: the pass-through, the timeout, classification,
//! error responses, the server stack, the circuit breaker, retries,
//! trace context and IDs flowing across two hops, the response cache, and
//! service auth with per-caller rate limits.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tower::{ServiceBuilder, ServiceExt};
use tower_shield::{
    auth,
    breaker::{self, CircuitBreakerLayer, KeyBy},
    classify::{Classify, ServerErrorsAsFailures},
    context,
    error::status_for,
    limit,
    retry::{self, RetryLayer},
    stack::{ClientStack, ServerStack},
    BoxError, ServiceBuilderExt,
};

/// The flaky upstream: `/ok` answers at once, `/slow` takes 3 s, `/flaky`
/// fails every other call with 503.
async fn start_upstream() -> SocketAddr {
    use axum::{routing::get, Router};
    let calls = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/ok", get(|| async { "hello from upstream" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "finally"
            }),
        )
        .route(
            "/flaky",
            get(move || {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    if n.is_multiple_of(2) {
                        (StatusCode::SERVICE_UNAVAILABLE, "try again later")
                    } else {
                        (StatusCode::OK, "ok this time")
                    }
                }
            }),
        );
    serve(app).await
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn step(n: u32, title: &str) {
    println!("\n[{n}] {title}");
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let started = Instant::now();
    let upstream = start_upstream().await;
    println!("tower-shield tour: flaky upstream on http://{upstream}");

    let timeout = Duration::from_millis(500);
    let client = ServiceBuilder::new()
        .client_stack(ClientStack::new().timeout(timeout))
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
    let classifier = ServerErrorsAsFailures::new();
    let get = |path: &str| Request::get(format!("http://{upstream}{path}")).body(Empty::new());

    step(
        1,
        "pass-through: the client stack forwards a request untouched",
    );
    let t = Instant::now();
    let res = client.clone().oneshot(get("/ok")?).await;
    let class = classifier.classify(&res);
    let res = res?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    println!(
        "    GET /ok -> {status} {body:?} in {:.1?}; classify: {class}",
        t.elapsed()
    );

    step(2, "timeout: a slow upstream is cut off after 500ms");
    let t = Instant::now();
    let res = client.clone().oneshot(get("/slow")?).await;
    let class = classifier.classify(&res);
    let err = res.expect_err("the upstream takes 3 s");
    let is_elapsed = err.is::<tower::timeout::error::Elapsed>();
    println!(
        "    GET /slow -> error {:?} after {:.0?} (tower Elapsed: {is_elapsed}); classify: {class}",
        err.to_string(),
        t.elapsed()
    );
    println!("    as a server response this is {}", status_for(&*err).0);

    step(3, "classify: one place decides what counts as a failure");
    for _ in 0..2 {
        let res = client.clone().oneshot(get("/flaky")?).await;
        let class = classifier.classify(&res);
        println!("    GET /flaky -> {}; classify: {class}", res?.status());
    }

    step(
        4,
        "upstream down: a refused connection is a retryable error and a 502",
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let req = Request::get(format!("http://{closed}/")).body(Empty::new())?;
    let res = client.clone().oneshot(req).await;
    let class = classifier.classify(&res);
    let err = res.expect_err("nothing listens there");
    println!(
        "    GET http://{closed}/ -> error {:?}; classify: {class}",
        err.to_string()
    );
    println!("    as a server response this is {}", status_for(&*err).0);

    step(
        5,
        "server stack: an axum handler that overruns its deadline answers 504",
    );
    let app = axum::Router::new()
        .route(
            "/report",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "done"
            }),
        )
        .layer(ServerStack::new().timeout(Duration::from_millis(300)));
    let server = serve(app).await;
    let req = Request::get(format!("http://{server}/report")).body(Empty::new())?;
    let res = client.clone().oneshot(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    println!("    GET /report -> {status} {body:?}");

    step(
        6,
        "circuit breaker: a failing host is cut off, probed, and let back in",
    );
    let down = Arc::new(AtomicBool::new(true));
    let flag = down.clone();
    let host = serve(axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let down = flag.load(Ordering::Relaxed);
            async move {
                if down {
                    (StatusCode::INTERNAL_SERVER_ERROR, "broken")
                } else {
                    (StatusCode::OK, "healthy again")
                }
            }
        }),
    ))
    .await;
    let breaker = CircuitBreakerLayer::new(
        breaker::Config::default()
            .consecutive_failures(3)
            .open_for(Duration::from_millis(300))
            .close_after(2),
    )?
    .keyed_by(KeyBy::Authority);
    let breakers = breaker.breakers();
    let guarded = ServiceBuilder::new()
        .client_stack(ClientStack::new().timeout(timeout).circuit_breaker(breaker))
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
    let key = format!("http://{host}");
    for i in 1..=9 {
        if i == 6 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            down.store(false, Ordering::Relaxed);
            println!("    ... 300ms later, and the host has recovered ...");
        }
        let req = Request::get(format!("http://{host}/")).body(Empty::new())?;
        let outcome = match guarded.clone().oneshot(req).await {
            Ok(res) => res.status().to_string(),
            Err(err) => match err.downcast_ref::<breaker::Open>() {
                Some(open) => format!(
                    "rejected at once: {err} (retry after {:.0?})",
                    open.retry_after()
                ),
                None => format!("error: {err}"),
            },
        };
        let state = breakers
            .get(&key)
            .map_or(breaker::State::Closed, |b| b.state());
        println!("    call {i}: {outcome}; breaker now {state:?}");
    }

    step(
        7,
        "retry: transient failures are retried with backoff, non-idempotent requests are not",
    );
    let fails = Arc::new(AtomicU64::new(0));
    let counter = fails.clone();
    let flaky = serve(axum::Router::new().route(
        "/",
        axum::routing::any(move |method: http::Method, body: Bytes| {
            // Every request fails twice, then succeeds.
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move {
                println!(
                    "      upstream got {method} with {} body bytes (call {})",
                    body.len(),
                    n + 1
                );
                if n % 3 < 2 {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::OK
                }
            }
        }),
    ))
    .await;
    let retry = RetryLayer::new(
        retry::Config::default()
            .max_attempts(3)
            .base_delay(Duration::from_millis(20))
            .jitter(retry::Jitter::Equal)
            .deadline(Duration::from_secs(2)),
    )?;
    let retrying = ServiceBuilder::new()
        .layer(retry.clone())
        .client_stack(ClientStack::new().timeout(timeout))
        .service(
            Client::builder(TokioExecutor::new())
                .build_http::<tower_shield::body::ReplayBody<http_body_util::Full<Bytes>>>(),
        );
    let put = Request::put(format!("http://{flaky}/"))
        .body(http_body_util::Full::new(Bytes::from_static(b"order #1")))?;
    let t = Instant::now();
    let res = retrying.clone().oneshot(put).await?;
    println!(
        "    PUT -> {} after {} attempts in {:.1?} (the body was read once and replayed)",
        res.status(),
        retry::Attempts::of(&res),
        t.elapsed()
    );
    let post = Request::post(format!("http://{flaky}/"))
        .body(http_body_util::Full::new(Bytes::from_static(b"pay 10")))?;
    let res = retrying.clone().oneshot(post).await?;
    println!(
        "    POST -> {} after {} attempt: not idempotent, not retried (send an Idempotency-Key to allow it)",
        res.status(),
        retry::Attempts::of(&res)
    );
    let m = retry.metrics();
    println!(
        "    retries so far: {}; refused by the retry budget: {}",
        m.retries, m.budget_exhausted
    );

    step(
        8,
        "context: trace and correlation IDs flow across two hops, with no code in the handlers",
    );
    // "orders" calls "stock"; both use the stacks with a context config.
    let stock = serve(
        axum::Router::new()
            .route(
                "/",
                axum::routing::get(|headers: http::HeaderMap| async move {
                    let cx = context::current().expect("inside the server stack");
                    let got = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    println!(
                        "      stock  got traceparent {} from {}",
                        got("traceparent"),
                        got("x-service-name")
                    );
                    println!(
                        "      stock  trace {} request {} correlation {}",
                        cx.trace_id(),
                        got("x-request-id"),
                        got("x-correlation-id")
                    );
                    "7 in stock"
                }),
            )
            .layer(ServerStack::new().context(context::Config::new().service("stock", "1.0.0"))),
    )
    .await;
    let orders_config = context::Config::new().service("orders", "2.3.0");
    let to_stock = ServiceBuilder::new()
        .client_stack(
            ClientStack::new()
                .timeout(timeout)
                .context(orders_config.clone()),
        )
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
    let orders = serve(
        axum::Router::new()
            .route(
                "/",
                axum::routing::get(move || {
                    let to_stock = to_stock.clone();
                    async move {
                        let cx = context::current().expect("inside the server stack");
                        println!(
                            "      orders trace {} span {} (parent {})",
                            cx.trace_id(),
                            cx.span_id(),
                            cx.parent_id().map_or("-".to_owned(), |p| p.to_string())
                        );
                        let req = Request::get(format!("http://{stock}/")).body(Empty::new());
                        match to_stock.oneshot(req.expect("request")).await {
                            Ok(res) => res.status().to_string(),
                            Err(e) => e.to_string(),
                        }
                    }
                }),
            )
            .layer(ServerStack::new().context(orders_config)),
    )
    .await;
    let caller_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    println!("    caller sends traceparent {caller_trace} and x-correlation-id checkout-77");
    let res = Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>()
        .request(
            Request::get(format!("http://{orders}/"))
                .header("traceparent", caller_trace)
                .header("x-correlation-id", "checkout-77")
                .body(Empty::new())?,
        )
        .await?;
    println!(
        "    GET orders -> {}, x-request-id {}, x-correlation-id {}",
        res.status(),
        res.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-"),
        res.headers()
            .get("x-correlation-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-"),
    );
    let res = Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>()
        .request(
            Request::get(format!("http://{orders}/"))
                .header(
                    "traceparent",
                    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                )
                .body(Empty::new())?,
        )
        .await?;
    println!(
        "    an uppercase (invalid) traceparent -> {}: a new trace is started, the bad header goes no further",
        res.status()
    );

    step(
        9,
        "cache: a miss, a hit with its Age, a stampede coalesced, a stale answer while the upstream fails",
    );
    let upstream_calls = Arc::new(AtomicU64::new(0));
    let failing = Arc::new(AtomicBool::new(false));
    let (counted, fails) = (upstream_calls.clone(), failing.clone());
    let cached_upstream = serve(axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let fails = fails.load(Ordering::SeqCst);
        async move {
            // Slow enough that concurrent misses overlap.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if fails {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [("cache-control", "no-store")],
                    "down",
                )
            } else {
                (
                    StatusCode::OK,
                    [("cache-control", "max-age=1, stale-if-error=600")],
                    "catalogue v1",
                )
            }
        }
    }))
    .await;
    let cached = ServiceBuilder::new()
        .cache(tower_shield::cache::Config::default().x_cache_header(true))?
        .client_stack(ClientStack::new().timeout(timeout))
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
    let fetch = |path: &'static str| {
        let cached = cached.clone();
        async move {
            let res = cached
                .oneshot(
                    Request::get(format!("http://{cached_upstream}{path}")).body(Empty::new())?,
                )
                .await?;
            let header = |name: &str| {
                res.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            let (x_cache, age, status) = (header("x-cache"), header("age"), res.status());
            let body = res.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>(format!("{status} {body:?}, x-cache {x_cache}, age {age}"))
        }
    };
    println!("    GET /catalogue -> {}", fetch("/catalogue").await?);
    println!("    GET /catalogue -> {}", fetch("/catalogue").await?);
    let stampede: Vec<_> = (0..20).map(|_| tokio::spawn(fetch("/prices"))).collect();
    for task in stampede {
        task.await??;
    }
    println!(
        "    20 concurrent GET /prices; upstream calls so far: {} (1 for /catalogue, 1 for /prices)",
        upstream_calls.load(Ordering::SeqCst)
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    failing.store(true, Ordering::SeqCst);
    println!(
        "    the upstream now fails; GET /catalogue -> {}",
        fetch("/catalogue").await?
    );

    step(
        10,
        "auth and rate limits: a call refused, then accepted with a token; a burst limited",
    );
    // The server verifies service tokens, then limits each caller to a
    // burst of 3 and then 1 a second. The token comes from the
    // environment in production (`SecretRef::env`); here, a value.
    let tokens = auth::StaticTokens::load(vec![auth::TokenEntry::new(
        "billing",
        auth::SecretRef::value("tour-billing-token"),
    )
    .scopes(["orders:read"])])?;
    let guarded = ServerStack::new()
        .auth(auth::AuthLayer::new().static_tokens(tokens).realm("tour"))
        .rate_limit(limit::RateLimitLayer::new(
            limit::RateLimitConfig::new(1.0, 3).headers(true),
        )?);
    let guarded_addr = serve(
        axum::Router::new()
            .route(
                "/orders",
                axum::routing::get(
                    |axum::Extension(caller): axum::Extension<auth::ServiceIdentity>| async move {
                        format!("orders for {}", caller.name())
                    },
                ),
            )
            .layer(guarded),
    )
    .await;
    let orders = format!("http://{guarded_addr}/orders");
    let anonymous = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let res = anonymous
        .request(Request::get(&orders).body(Empty::new())?)
        .await?;
    println!(
        "    no token -> {} with WWW-Authenticate: {}",
        res.status(),
        res.headers()["www-authenticate"].to_str()?
    );
    // The client attaches its token (here a static one; OAuth client
    // credentials and minted JWTs work the same way).
    let billing = ServiceBuilder::new()
        .credentials(auth::Credentials::bearer(&auth::SecretRef::value(
            "tour-billing-token",
        ))?)
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
    for i in 1..=5 {
        let res = billing
            .clone()
            .oneshot(Request::get(&orders).body(Empty::new())?)
            .await?;
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        let (status, remaining, retry_after) =
            (res.status(), header("ratelimit"), header("retry-after"));
        let body = res.into_body().collect().await?.to_bytes();
        println!(
            "    call {i} with a token -> {status} {body:?}, RateLimit {remaining}, Retry-After {retry_after}"
        );
    }

    println!("\ntour finished in {:.1?}", started.elapsed());
    Ok(())
}
