//! The response cache through its public API: a real hyper client, under
//! `CacheLayer`, to a real axum upstream on 127.0.0.1 that counts what it
//! sees. Expiry runs on tokio's paused clock.
#![cfg(feature = "cache")]

mod support;

use axum::{extract::State, http::HeaderMap, response::IntoResponse, routing::any, Router};
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_shield::{
    body::ReplayBody,
    cache::{CacheLayer, Config, Mode},
    BoxError,
};

/// What the upstream answers, and what it saw.
#[derive(Default)]
struct Script {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
    calls: usize,
    seen: Vec<(Method, HeaderMap)>,
}

type Shared = Arc<Mutex<Script>>;

async fn respond(
    State(script): State<Shared>,
    method: Method,
    headers: HeaderMap,
) -> impl IntoResponse {
    let (status, out, body, delay) = {
        let mut s = script.lock().unwrap();
        s.calls += 1;
        s.seen.push((method, headers));
        let mut out = HeaderMap::new();
        for (k, v) in &s.headers {
            out.append(*k, v.parse().unwrap());
        }
        (s.status, out, s.body.clone(), s.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    (StatusCode::from_u16(status).unwrap(), out, body)
}

/// An upstream answering every path with the script.
async fn upstream(
    status: u16,
    headers: &[(&'static str, &str)],
    body: &str,
) -> (std::net::SocketAddr, Shared) {
    let script = Arc::new(Mutex::new(Script {
        status,
        headers: headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        body: body.to_owned(),
        ..Script::default()
    }));
    let app = Router::new()
        .fallback(any(respond))
        .with_state(script.clone());
    (serve(app).await, script)
}

type Client = tower::util::BoxCloneSyncService<
    Request<Empty<Bytes>>,
    Response<ReplayBody<hyper::body::Incoming>>,
    BoxError,
>;

fn client(layer: &CacheLayer) -> Client {
    tower::util::BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(layer.clone())
            .service(hyper_client::<Empty<Bytes>>()),
    )
}

fn layer(config: Config) -> CacheLayer {
    CacheLayer::new(config.x_cache_header(true)).unwrap()
}

async fn send(
    client: &Client,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .clone()
        .oneshot(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

async fn get(client: &Client, uri: &str) -> (StatusCode, HeaderMap, Bytes) {
    send(client, Method::GET, uri, &[]).await
}

fn x_cache(headers: &HeaderMap) -> &str {
    headers["x-cache"].to_str().unwrap()
}

fn calls(script: &Shared) -> usize {
    script.lock().unwrap().calls
}

#[tokio::test(start_paused = true)]
async fn a_fresh_response_is_answered_from_the_cache_with_its_age() {
    let (addr, script) = upstream(200, &[("cache-control", "max-age=60")], "hello").await;
    let cache = layer(Config::default());
    let client = client(&cache);
    let uri = format!("http://{addr}/a");
    let (status, headers, body) = get(&client, &uri).await;
    assert_eq!(
        (status, x_cache(&headers), &body[..]),
        (StatusCode::OK, "MISS", &b"hello"[..])
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    let (status, headers, body) = get(&client, &uri).await;
    assert_eq!(
        (status, x_cache(&headers), &body[..]),
        (StatusCode::OK, "HIT", &b"hello"[..])
    );
    assert_eq!(headers[header::AGE], "5");
    assert_eq!(calls(&script), 1);
    // Past max-age: stale, and without validators it is fetched again.
    tokio::time::advance(Duration::from_secs(60)).await;
    let (_, headers, _) = get(&client, &uri).await;
    assert_eq!(x_cache(&headers), "MISS");
    assert_eq!(calls(&script), 2);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 2));
    assert!(stats.bytes > 0);
}

#[tokio::test(start_paused = true)]
async fn what_may_not_be_stored_is_not() {
    for (cc, mode, stored) in [
        ("no-store, max-age=60", Mode::Shared, false),
        ("private, max-age=60", Mode::Shared, false),
        ("private, max-age=60", Mode::Private, true),
        ("s-maxage=60", Mode::Shared, true),
        ("s-maxage=60", Mode::Private, false),
        ("max-age=60, must-revalidate", Mode::Shared, true),
        ("max-age=0", Mode::Shared, false),
    ] {
        let (addr, script) = upstream(200, &[("cache-control", cc)], "x").await;
        let client = client(&layer(Config::default().mode(mode)));
        let uri = format!("http://{addr}/");
        get(&client, &uri).await;
        let (_, headers, _) = get(&client, &uri).await;
        assert_eq!(x_cache(&headers) == "HIT", stored, "{cc} {mode:?}");
        assert_eq!(calls(&script), if stored { 1 } else { 2 }, "{cc} {mode:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_with_authorization_is_stored_in_a_shared_cache_only_when_allowed() {
    for (cc, stored) in [
        ("max-age=60", false),
        ("max-age=60, public", true),
        ("s-maxage=60", true),
    ] {
        let (addr, script) = upstream(200, &[("cache-control", cc)], "x").await;
        let client = client(&layer(Config::default()));
        let uri = format!("http://{addr}/");
        for _ in 0..2 {
            send(&client, Method::GET, &uri, &[("authorization", "Bearer t")]).await;
        }
        assert_eq!(calls(&script), if stored { 1 } else { 2 }, "{cc}");
    }
}

#[tokio::test(start_paused = true)]
async fn request_directives_are_honoured() {
    // With a validator, so that the entry is kept past its freshness.
    let (addr, script) = upstream(
        200,
        &[("cache-control", "max-age=60"), ("etag", "\"e\"")],
        "x",
    )
    .await;
    let client = client(&layer(Config::default()));
    let uri = format!("http://{addr}/");
    get(&client, &uri).await;
    tokio::time::advance(Duration::from_secs(10)).await;
    // max-age=5: the entry (age 10) is too old for this caller.
    let (_, h, _) = send(
        &client,
        Method::GET,
        &uri,
        &[("cache-control", "max-age=5")],
    )
    .await;
    assert_eq!(x_cache(&h), "MISS");
    // min-fresh=100: it will not stay fresh that long.
    let (_, h, _) = send(
        &client,
        Method::GET,
        &uri,
        &[("cache-control", "min-fresh=100")],
    )
    .await;
    assert_eq!(x_cache(&h), "MISS");
    // no-cache: ask the upstream.
    let (_, h, _) = send(&client, Method::GET, &uri, &[("cache-control", "no-cache")]).await;
    assert_eq!(x_cache(&h), "MISS");
    assert_eq!(calls(&script), 4);
    let (_, h, _) = get(&client, &uri).await;
    assert_eq!(x_cache(&h), "HIT");
    // max-stale: a stale entry is fine for this caller.
    tokio::time::advance(Duration::from_secs(70)).await;
    let (_, h, _) = send(
        &client,
        Method::GET,
        &uri,
        &[("cache-control", "max-stale=3600")],
    )
    .await;
    assert_eq!(x_cache(&h), "HIT");
    assert_eq!(calls(&script), 4);
    // only-if-cached with nothing stored: 504, the upstream is not asked.
    let (status, _, _) = send(
        &client,
        Method::GET,
        &format!("http://{addr}/other"),
        &[("cache-control", "only-if-cached")],
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(calls(&script), 4);
}

#[tokio::test(start_paused = true)]
async fn vary_keeps_one_entry_per_variant_and_star_never_matches() {
    let (addr, script) = upstream(
        200,
        &[("cache-control", "max-age=60"), ("vary", "Accept")],
        "x",
    )
    .await;
    let client = client(&layer(Config::default()));
    let uri = format!("http://{addr}/");
    let json = [("accept", "application/json")];
    let text = [("accept", "text/plain")];
    for (headers, expect) in [
        (&json, "MISS"),
        (&text, "MISS"),
        (&json, "HIT"),
        (&text, "HIT"),
    ] {
        let (_, h, _) = send(&client, Method::GET, &uri, headers).await;
        assert_eq!(x_cache(&h), expect, "{headers:?}");
    }
    assert_eq!(calls(&script), 2);
    let (addr, script) =
        upstream(200, &[("cache-control", "max-age=60"), ("vary", "*")], "x").await;
    let uri = format!("http://{addr}/");
    get(&client, &uri).await;
    get(&client, &uri).await;
    assert_eq!(calls(&script), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stale_entry_is_revalidated_and_a_304_refreshes_it() {
    let (addr, script) = upstream(
        200,
        &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
        "body one",
    )
    .await;
    let client = client(&layer(Config::default()));
    let uri = format!("http://{addr}/");
    get(&client, &uri).await;
    // The caller's own conditional request, on a fresh entry: 304 from the cache.
    let (status, h, _) = send(&client, Method::GET, &uri, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((status, x_cache(&h)), (StatusCode::NOT_MODIFIED, "HIT"));
    assert_eq!(h[header::ETAG], "\"v1\"");
    tokio::time::advance(Duration::from_secs(11)).await;
    {
        let mut s = script.lock().unwrap();
        s.status = 304;
        s.body.clear();
        s.headers.push(("x-refreshed", "yes".into()));
    }
    let (status, h, body) = get(&client, &uri).await;
    assert_eq!((status, x_cache(&h)), (StatusCode::OK, "REVALIDATED"));
    assert_eq!(body, "body one");
    assert_eq!(h["x-refreshed"], "yes");
    {
        let s = script.lock().unwrap();
        let (_, seen) = s.seen.last().unwrap();
        assert_eq!(seen[header::IF_NONE_MATCH], "\"v1\"");
    }
    // Refreshed: fresh again for max-age.
    let (_, h, _) = get(&client, &uri).await;
    assert_eq!(x_cache(&h), "HIT");
    assert_eq!(calls(&script), 2);
}

#[tokio::test(start_paused = true)]
async fn head_is_answered_from_a_stored_get() {
    let (addr, script) = upstream(200, &[("cache-control", "max-age=60")], "hello").await;
    let client = client(&layer(Config::default()));
    let uri = format!("http://{addr}/");
    get(&client, &uri).await;
    let (status, h, body) = send(&client, Method::HEAD, &uri, &[]).await;
    assert_eq!((status, x_cache(&h)), (StatusCode::OK, "HIT"));
    assert!(body.is_empty());
    assert_eq!(calls(&script), 1);
}

#[tokio::test(start_paused = true)]
async fn an_unsafe_method_invalidates_its_target_and_location() {
    let (addr, script) = upstream(200, &[("cache-control", "max-age=60")], "x").await;
    let client = client(&layer(Config::default()));
    let (a, b) = (format!("http://{addr}/a"), format!("http://{addr}/b"));
    get(&client, &a).await;
    get(&client, &b).await;
    script
        .lock()
        .unwrap()
        .headers
        .push(("location", "/b".into()));
    let (_, h, _) = send(&client, Method::POST, &a, &[]).await;
    assert_eq!(x_cache(&h), "BYPASS");
    script.lock().unwrap().headers.pop();
    let (_, h, _) = get(&client, &a).await;
    assert_eq!(x_cache(&h), "MISS");
    let (_, h, _) = get(&client, &b).await;
    assert_eq!(x_cache(&h), "MISS");
    // An error answer invalidates nothing.
    script.lock().unwrap().status = 500;
    send(&client, Method::DELETE, &a, &[]).await;
    script.lock().unwrap().status = 200;
    let (_, h, _) = get(&client, &a).await;
    assert_eq!(x_cache(&h), "HIT");
}

#[tokio::test(start_paused = true)]
async fn a_hundred_concurrent_misses_cost_one_upstream_call() {
    let (addr, script) = upstream(200, &[("cache-control", "max-age=60")], "shared").await;
    script.lock().unwrap().delay = Duration::from_millis(500);
    let cache = layer(Config::default());
    let client = client(&cache);
    let uri = format!("http://{addr}/slow");
    let all: Vec<_> = (0..100)
        .map(|_| {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move { get(&client, &uri).await })
        })
        .collect();
    for task in all {
        let (status, _, body) = task.await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"shared"[..]));
    }
    assert_eq!(calls(&script), 1);
    assert_eq!(cache.stats().coalesced, 99);
}

#[tokio::test(start_paused = true)]
async fn when_the_leader_s_answer_is_not_stored_each_waiter_goes_upstream() {
    let (addr, script) = upstream(500, &[], "broken").await;
    script.lock().unwrap().delay = Duration::from_millis(500);
    let client = client(&layer(Config::default()));
    let uri = format!("http://{addr}/");
    let all: Vec<_> = (0..10)
        .map(|_| {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move { get(&client, &uri).await })
        })
        .collect();
    for task in all {
        assert_eq!(task.await.unwrap().0, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(calls(&script), 10);
    // And the next request starts clean.
    script.lock().unwrap().status = 200;
    script
        .lock()
        .unwrap()
        .headers
        .push(("cache-control", "max-age=60".into()));
    get(&client, &uri).await;
    let (_, h, _) = get(&client, &uri).await;
    assert_eq!(x_cache(&h), "HIT");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_leader_does_not_strand_its_waiters() {
    let (addr, script) = upstream(200, &[("cache-control", "max-age=60")], "x").await;
    script.lock().unwrap().delay = Duration::from_millis(500);
    let client = client(&layer(Config::default()));
    let uri = format!("http://{addr}/");
    let leader = tokio::spawn({
        let (client, uri) = (client.clone(), uri.clone());
        async move { get(&client, &uri).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiter = tokio::spawn({
        let (client, uri) = (client.clone(), uri.clone());
        async move { get(&client, &uri).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    leader.abort();
    let (status, _, _) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter is answered")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(calls(&script), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_answers_while_the_upstream_fails() {
    let (addr, script) = upstream(
        200,
        &[("cache-control", "max-age=1, stale-if-error=60")],
        "kept",
    )
    .await;
    let client = client(&layer(Config::default()));
    let uri = format!("http://{addr}/");
    get(&client, &uri).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    script.lock().unwrap().status = 503;
    let (status, h, body) = get(&client, &uri).await;
    assert_eq!(
        (status, x_cache(&h), &body[..]),
        (StatusCode::OK, "STALE", &b"kept"[..])
    );
    // Past the window: the upstream's answer.
    tokio::time::advance(Duration::from_secs(120)).await;
    let (status, _, _) = get(&client, &uri).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_answers_when_the_upstream_is_gone() {
    // An upstream of this test's own, stopped half way: its listener closes.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(any(|| async { ([("cache-control", "max-age=1")], "kept") }));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let cache = layer(Config::default().stale_if_error(Duration::from_secs(60)));
    let uri = format!("http://{addr}/");
    get(&client(&cache), &uri).await;
    server.abort();
    let _ = server.await;
    tokio::time::advance(Duration::from_secs(5)).await;
    // A new client (no pooled connection): the upstream refuses to connect.
    let (status, h, body) = get(&client(&cache), &uri).await;
    assert_eq!(
        (status, x_cache(&h), &body[..]),
        (StatusCode::OK, "STALE", &b"kept"[..])
    );
    assert_eq!(cache.stats().stale, 1);
    // Past the window, the failure is the caller's answer.
    tokio::time::advance(Duration::from_secs(120)).await;
    let err = client(&cache)
        .oneshot(Request::get(uri.as_str()).body(Empty::new()).unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        tower_shield::error::status_for(&*err).0,
        StatusCode::BAD_GATEWAY,
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let (addr, script) = upstream(
        200,
        &[("cache-control", "max-age=1, stale-while-revalidate=60")],
        "old",
    )
    .await;
    let client = client(&layer(Config::default()));
    let uri = format!("http://{addr}/");
    get(&client, &uri).await;
    tokio::time::advance(Duration::from_secs(5)).await;
    script.lock().unwrap().body = "new".into();
    for _ in 0..3 {
        let (_, h, body) = get(&client, &uri).await;
        assert_eq!((x_cache(&h), &body[..]), ("STALE", &b"old"[..]));
    }
    // Let the background refresh land.
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(calls(&script), 2, "one refresh");
    let (_, h, body) = get(&client, &uri).await;
    assert_eq!((x_cache(&h), &body[..]), ("HIT", &b"new"[..]));
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_limit_streams_through_whole_and_is_not_stored() {
    let big = "y".repeat(10_000);
    let (addr, script) = upstream(200, &[("cache-control", "max-age=60")], &big).await;
    let client = client(&layer(
        Config::default().max_entry_bytes(4096).max_bytes(1 << 20),
    ));
    let uri = format!("http://{addr}/");
    for _ in 0..2 {
        let (_, h, body) = get(&client, &uri).await;
        assert_eq!((x_cache(&h), body.len()), ("MISS", 10_000));
    }
    assert_eq!(calls(&script), 2);
}

#[tokio::test(start_paused = true)]
async fn configured_ttls_apply_only_where_the_response_states_none() {
    let (addr, script) = upstream(200, &[], "plain").await;
    // Without a TTL, a response with no freshness is not kept.
    let client_none = client(&layer(Config::default()));
    let uri = format!("http://{addr}/static/a");
    get(&client_none, &uri).await;
    get(&client_none, &uri).await;
    assert_eq!(calls(&script), 2);
    let ttl = client(&layer(
        Config::default()
            .default_ttl(Duration::from_secs(10))
            .route("/static/", Duration::from_secs(100)),
    ));
    get(&ttl, &uri).await;
    tokio::time::advance(Duration::from_secs(50)).await;
    let (_, h, _) = get(&ttl, &uri).await;
    assert_eq!(x_cache(&h), "HIT", "the route's 100 s");
    let other = format!("http://{addr}/other");
    get(&ttl, &other).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    let (_, h, _) = get(&ttl, &other).await;
    assert_eq!(x_cache(&h), "MISS", "the default 10 s");
    // The TTL never reaches the caller.
    assert!(!h.contains_key(header::CACHE_CONTROL));
    // A response that states its freshness keeps it: a default TTL of 10 s
    // does not shorten max-age=100, nor Expires, nor s-maxage (shared).
    for (name, value) in [
        ("cache-control", "max-age=100".to_owned()),
        (
            "expires",
            httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(100)),
        ),
        ("cache-control", "s-maxage=100".to_owned()),
    ] {
        let (addr, script) = upstream(200, &[], "x").await;
        script.lock().unwrap().headers.push((name, value.clone()));
        let ttl = client(&layer(
            Config::default().default_ttl(Duration::from_secs(10)),
        ));
        let uri = format!("http://{addr}/");
        get(&ttl, &uri).await;
        tokio::time::advance(Duration::from_secs(50)).await;
        let (_, h, _) = get(&ttl, &uri).await;
        assert_eq!(x_cache(&h), "HIT", "{name}: {value}");
    }
    // Only statuses cacheable by default get the default TTL.
    for (status, stored) in [(201, false), (500, false), (404, true)] {
        let (addr, script) = upstream(status, &[], "x").await;
        let ttl = client(&layer(
            Config::default().default_ttl(Duration::from_secs(10)),
        ));
        let uri = format!("http://{addr}/");
        get(&ttl, &uri).await;
        get(&ttl, &uri).await;
        assert_eq!(calls(&script), if stored { 1 } else { 2 }, "{status}");
    }
    // max_ttl caps what a response says.
    let (addr, script) = upstream(200, &[("cache-control", "max-age=3600")], "x").await;
    let capped = client(&layer(Config::default().max_ttl(Duration::from_secs(5))));
    let uri = format!("http://{addr}/");
    get(&capped, &uri).await;
    tokio::time::advance(Duration::from_secs(6)).await;
    let (_, h, _) = get(&capped, &uri).await;
    assert_eq!(x_cache(&h), "MISS");
    assert_eq!(calls(&script), 2);
}

#[tokio::test]
async fn the_memory_bound_holds_under_a_hundred_thousand_keys() {
    let cache = layer(
        Config::default()
            .max_entry_bytes(1024)
            .max_bytes(256 * 1024),
    );
    let started = std::time::Instant::now();
    for i in 0..100_000u32 {
        let res = Response::builder()
            .header("cache-control", "max-age=600")
            .body(Bytes::from(vec![b'z'; 100]))
            .unwrap();
        cache.warm(&format!("http://h/k{i}"), res).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "bounded in time"
        );
    }
    let stats = cache.stats();
    assert!(stats.bytes <= 256 * 1024, "{stats:?}");
    assert!(stats.evictions > 90_000, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn invalidation_and_warming_through_the_api() {
    let (addr, script) = upstream(200, &[("cache-control", "max-age=60")], "up").await;
    let cache = layer(Config::default());
    let client = client(&cache);
    let (a, b) = (format!("http://{addr}/p/a"), format!("http://{addr}/p/b"));
    let warmed = cache
        .warm(
            &a,
            Response::builder()
                .header("cache-control", "max-age=60")
                .body(Bytes::from("warm"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(warmed);
    let (_, h, body) = get(&client, &a).await;
    assert_eq!((x_cache(&h), &body[..]), ("HIT", &b"warm"[..]));
    cache.invalidate(&a).await.unwrap();
    let (_, h, body) = get(&client, &a).await;
    assert_eq!((x_cache(&h), &body[..]), ("MISS", &b"up"[..]));
    get(&client, &b).await;
    cache
        .invalidate_prefix(&format!("http://{addr}/p/"))
        .await
        .unwrap();
    let (_, h, _) = get(&client, &b).await;
    assert_eq!(x_cache(&h), "MISS");
    cache.clear().await.unwrap();
    assert_eq!(cache.store().len(), 0);
    assert_eq!(calls(&script), 3);
}

#[test]
fn bad_settings_are_refused_with_the_field() {
    for (config, field) in [
        (Config::default().max_entry_bytes(0), "max_entry_bytes"),
        (
            Config::default().max_bytes(10).max_entry_bytes(100),
            "max_bytes",
        ),
        (
            Config::default().route("static", Duration::from_secs(1)),
            "routes",
        ),
        (Config::default().default_ttl(Duration::ZERO), "default_ttl"),
    ] {
        assert_eq!(CacheLayer::new(config).unwrap_err().field(), field);
    }
}

/// A caller's malformed cache headers never panic and never let a
/// response be stored that should not be.
#[tokio::test(start_paused = true)]
async fn malformed_cache_headers_are_harmless() {
    for (name, value) in [
        ("cache-control", "max-age=\"\", no-store=, =,,"),
        ("cache-control", "max-age=99999999999999999999999"),
        ("expires", "not a date"),
        ("age", "-5"),
        ("vary", ",,,"),
        ("date", "yesterday"),
    ] {
        let (addr, _) = upstream(200, &[(name, value)], "x").await;
        let client = client(&layer(Config::default()));
        let uri = format!("http://{addr}/");
        let (status, _, _) = get(&client, &uri).await;
        assert_eq!(status, StatusCode::OK, "{name}: {value}");
        let (status, _, _) = send(
            &client,
            Method::GET,
            &uri,
            &[("cache-control", "max-age=abc, max-stale=x")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{name}: {value}");
    }
}

/// `ServerStack::cache` around an axum router: a hit never reaches the
/// handler.
#[tokio::test(start_paused = true)]
async fn a_server_stack_caches_an_axum_router() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use tower_shield::stack::ServerStack;
    let handled = Arc::new(AtomicU32::new(0));
    let counted = handled.clone();
    let app = Router::new()
        .route(
            "/page",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { ([("cache-control", "max-age=60")], "page") }
            }),
        )
        .layer(ServerStack::new().cache(layer(Config::default())));
    let addr = serve(app).await;
    let client = hyper_client::<Empty<Bytes>>();
    for expect in ["MISS", "HIT", "HIT"] {
        let res = client
            .request(
                Request::get(format!("http://{addr}/page"))
                    .body(Empty::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.headers()["x-cache"], expect);
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "page");
    }
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

/// On a client, the cache sits outside the breaker: once the upstream
/// fails and the breaker opens, `stale-if-error` answers from the cache
/// and the upstream is not called.
#[cfg(feature = "breaker")]
#[tokio::test(start_paused = true)]
async fn stale_if_error_answers_while_the_breaker_is_open() {
    use tower_shield::{
        breaker::{self, CircuitBreakerLayer},
        stack::ClientStack,
        ServiceBuilderExt,
    };
    let (addr, script) = upstream(
        200,
        &[("cache-control", "max-age=1, stale-if-error=600")],
        "kept",
    )
    .await;
    let stack = ClientStack::new().circuit_breaker(
        CircuitBreakerLayer::new(breaker::Config::default().failure_threshold(1)).unwrap(),
    );
    let breakers = stack.breakers().unwrap();
    let client = ServiceBuilder::new()
        .cache(Config::default().x_cache_header(true))
        .unwrap()
        .client_stack(stack)
        .service(hyper_client::<Empty<Bytes>>());
    let uri = format!("http://{addr}/");
    let get = || {
        client
            .clone()
            .oneshot(Request::get(uri.as_str()).body(Empty::new()).unwrap())
    };
    assert_eq!(get().await.unwrap().headers()["x-cache"], "MISS");
    tokio::time::advance(Duration::from_secs(5)).await;
    script.lock().unwrap().status = 500;
    // The upstream fails (the breaker opens on it): stale.
    let res = get().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-cache"], "STALE");
    assert_eq!(breakers.all()[0].state(), breaker::State::Open);
    // The breaker refuses: stale again, and the upstream is not called.
    let res = get().await.unwrap();
    assert_eq!(res.headers()["x-cache"], "STALE");
    assert_eq!(calls(&script), 2);
}

/// A stale answer is never given when the response or the request forbids
/// it (RFC 9111 section 4.2.4), nor past its window while the entry is
/// still kept (it has a validator, so it is kept for revalidation).
#[tokio::test(start_paused = true)]
async fn stale_if_error_respects_what_forbids_it_and_its_window() {
    for (cc, request, stale) in [
        ("max-age=1, stale-if-error=60", None, true),
        ("max-age=1, stale-if-error=60, must-revalidate", None, false),
        ("max-age=1, stale-if-error=60, no-cache", None, false),
        (
            "max-age=1, stale-if-error=60, proxy-revalidate",
            None,
            false,
        ),
        ("max-age=1, s-maxage=1, stale-if-error=60", None, false),
        ("max-age=1, stale-if-error=60", Some("no-cache"), false),
    ] {
        let (addr, script) =
            upstream(200, &[("cache-control", cc), ("etag", "\"e\"")], "kept").await;
        let client = client(&layer(Config::default()));
        let uri = format!("http://{addr}/");
        get(&client, &uri).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        script.lock().unwrap().status = 503;
        let headers: Vec<(&str, &str)> =
            request.map(|r| ("cache-control", r)).into_iter().collect();
        let (status, h, _) = send(&client, Method::GET, &uri, &headers).await;
        assert_eq!(x_cache(&h) == "STALE", stale, "{cc} {request:?}");
        assert_eq!(status == StatusCode::OK, stale, "{cc} {request:?}");
    }
    // Past the window, with the entry still kept: the upstream's answer.
    let (addr, script) = upstream(
        200,
        &[
            ("cache-control", "max-age=1, stale-if-error=60"),
            ("etag", "\"e\""),
        ],
        "kept",
    )
    .await;
    let client = client(&layer(Config::default()));
    let uri = format!("http://{addr}/");
    get(&client, &uri).await;
    tokio::time::advance(Duration::from_secs(120)).await;
    script.lock().unwrap().status = 503;
    let (status, _, _) = get(&client, &uri).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

/// With `coalesce = false`, concurrent misses each go upstream.
#[tokio::test(start_paused = true)]
async fn without_coalescing_every_miss_goes_upstream() {
    let (addr, script) = upstream(200, &[("cache-control", "max-age=60")], "x").await;
    script.lock().unwrap().delay = Duration::from_millis(500);
    let client = client(&layer(Config::default().coalesce(false)));
    let uri = format!("http://{addr}/");
    let all: Vec<_> = (0..10)
        .map(|_| {
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move { get(&client, &uri).await })
        })
        .collect();
    for task in all {
        task.await.unwrap();
    }
    assert_eq!(calls(&script), 10);
}

/// The layer is ready when its inner service is, and passes its refusal on.
#[tokio::test]
async fn readiness_is_the_inner_service_s() {
    use tower::{Layer, Service};
    struct NotReady;
    impl Service<Request<Empty<Bytes>>> for NotReady {
        type Response = Response<Empty<Bytes>>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Self::Response, BoxError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Err("not ready".into()))
        }
        fn call(&mut self, _: Request<Empty<Bytes>>) -> Self::Future {
            std::future::ready(Ok(Response::new(Empty::new())))
        }
    }
    impl Clone for NotReady {
        fn clone(&self) -> Self {
            NotReady
        }
    }
    let mut svc = layer(Config::default()).layer(NotReady);
    let err = ServiceExt::<Request<Empty<Bytes>>>::ready(&mut svc)
        .await
        .err();
    assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("not ready"));
}

/// `no-cache` with a validator: stored, and revalidated before every use
/// (a 304 answers from the entry); with `Vary: *` nothing is stored at all.
#[tokio::test(start_paused = true)]
async fn no_cache_is_stored_for_revalidation_and_vary_star_is_not_stored() {
    let (addr, script) = upstream(
        200,
        &[("cache-control", "no-cache"), ("etag", "\"n\"")],
        "body",
    )
    .await;
    let cache = layer(Config::default());
    let revalidating = client(&cache);
    let uri = format!("http://{addr}/");
    get(&revalidating, &uri).await;
    script.lock().unwrap().status = 304;
    let (status, h, body) = get(&revalidating, &uri).await;
    assert_eq!(
        (status, x_cache(&h), &body[..]),
        (StatusCode::OK, "REVALIDATED", &b"body"[..])
    );
    {
        let s = script.lock().unwrap();
        assert_eq!(s.seen.last().unwrap().1[header::IF_NONE_MATCH], "\"n\"");
    }
    let (addr, _) = upstream(200, &[("cache-control", "max-age=60"), ("vary", "*")], "x").await;
    let cache = layer(Config::default());
    get(&client(&cache), &format!("http://{addr}/")).await;
    assert_eq!(cache.store().len(), 0);
    let warmed = cache
        .warm(
            "http://h/star",
            Response::builder()
                .header("cache-control", "max-age=60")
                .header("vary", "*")
                .body(Bytes::from("x"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(!warmed);
    let warmed = cache
        .warm(
            "http://h/private",
            Response::builder()
                .header("cache-control", "private, max-age=60")
                .body(Bytes::from("x"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(!warmed, "a shared cache never stores private");
    // Not even to revalidate it later, though it has a validator.
    for (cc, vary) in [("private, max-age=60", None), ("max-age=60", Some("*"))] {
        let mut headers = vec![("cache-control", cc), ("etag", "\"v\"")];
        headers.extend(vary.map(|v| ("vary", v)));
        let (addr, script) = upstream(200, &headers, "x").await;
        let uri = format!("http://{addr}/");
        let fresh = client(&cache);
        get(&fresh, &uri).await;
        get(&fresh, &uri).await;
        let revalidated = script.lock().unwrap().seen[1]
            .1
            .contains_key(header::IF_NONE_MATCH);
        assert!(
            !revalidated,
            "{cc} {vary:?}: nothing was stored to revalidate"
        );
        let mut res = Response::builder();
        for (k, v) in &headers {
            res = res.header(*k, *v);
        }
        let warmed = cache
            .warm(
                &format!("http://{addr}/warm"),
                res.body(Bytes::from("x")).unwrap(),
            )
            .await
            .unwrap();
        assert!(!warmed, "{cc} {vary:?}");
    }
    assert_eq!(cache.store().len(), 0);
}
