//! Service auth and rate limits, in one run beside their peers:
//!
//! - a static token check: `AuthLayer` over a bare `tower::service_fn`,
//!   beside the bare call and tower-http's `ValidateRequestHeaderLayer::bearer`;
//! - a JWT verified cold (no token cache) for HS256, RS256, ES256 and
//!   EdDSA, beside `jsonwebtoken` alone doing the same job (read the header
//!   for its `kid`, then decode with that key); and a cached token;
//! - an RFC 9421 signed request with a 1 KiB body, verified through
//!   `SignatureLayer`;
//! - the in-memory rate-limit check through `RateLimitLayer`, beside a raw
//!   keyed `governor` check; and the Redis check on loopback beside a
//!   loopback HTTP call (with `--features redis` and a Redis at
//!   `REDIS_URL` or 127.0.0.1:6379).
//!
//! Layers are built once; requests outside the timed region
//! (`iter_batched`). Allocations per call are printed.
//!
//! ```text
//! cargo bench --bench auth --all-features
//! ```

mod support;

use bytes::Bytes;
use criterion::{criterion_group, BatchSize, Criterion};
use futures_util::FutureExt;
use http::{header, HeaderValue, Request, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use std::{
    convert::Infallible,
    hint::black_box,
    num::NonZeroU32,
    time::{SystemTime, UNIX_EPOCH},
};
use support::{allocs, counted, request};

/// The baseline handler, answering a body a refusal can be written into.
async fn handler(req: Request<()>) -> Result<Response<String>, Infallible> {
    black_box(&req);
    Ok(Response::new(String::new()))
}
use tower::{service_fn, Layer, ServiceExt};
use tower_shield::{
    auth::{
        AuthLayer, JwtConfig, JwtKey, JwtVerifier, SecretRef, SignatureConfig, SignatureKey,
        SignatureLayer, SignatureVerifier, SigningKey, StaticTokens, TokenEntry,
    },
    body::CallerBodyLayer,
    limit::{KeyBy, RateLimitConfig, RateLimitLayer},
};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const TOKEN: &str = "billing-6f1c2d0e9b8a7c6d5e4f3a2b1c0d9e8f";

fn with_bearer(token: &str) -> Request<()> {
    let mut req = request();
    req.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    req
}

fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn key_ref(name: &str) -> SecretRef {
    SecretRef::file(format!(
        "{}/tests/data/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

const HS_SECRET: &str = "a bench secret that is 32 bytes!";

// Every bench clones its service per call; the bare `service_fn` is `Copy`.
#[allow(clippy::clone_on_copy)]
fn static_token(c: &mut Criterion) {
    let rt = rt();
    let bare = service_fn(handler);
    let tokens = StaticTokens::load(vec![
        TokenEntry::new("billing", SecretRef::value(TOKEN)),
        TokenEntry::new("search", SecretRef::value("search-0f9e8d7c6b5a49382716")),
        TokenEntry::new("ledger", SecretRef::value("ledger-a1b2c3d4e5f60718293a")),
    ])
    .unwrap();
    let ours = AuthLayer::new()
        .static_tokens(tokens)
        .layer(service_fn(handler));
    #[allow(deprecated)]
    let peer = tower_http::validate_request::ValidateRequestHeaderLayer::bearer(TOKEN)
        .layer(service_fn(handler));

    let mut group = c.benchmark_group("auth/static_token");
    group.bench_function("service_fn", |b| {
        b.to_async(&rt).iter_batched(
            || with_bearer(TOKEN),
            |req| bare.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("tower_shield", |b| {
        b.to_async(&rt).iter_batched(
            || with_bearer(TOKEN),
            |req| ours.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("tower_http_validate_bearer", |b| {
        b.to_async(&rt).iter_batched(
            || with_bearer(TOKEN),
            |req| peer.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    // The same layer with a JWT the verifier has verified before.
    let (jwt, jwt_layer) = cached_jwt_layer();
    let jwt_layer = jwt_layer.layer(service_fn(handler));
    group.bench_function("tower_shield_jwt_cached", |b| {
        b.to_async(&rt).iter_batched(
            || with_bearer(&jwt),
            |req| jwt_layer.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.finish();
    let with = |t| move |_req: Request<()>| with_bearer(t);
    println!(
        "allocs per call: service_fn {:.1}, tower_shield {:.1}, tower_http {:.1}",
        allocs(&rt, |r| bare.clone().oneshot(with(TOKEN)(r))),
        allocs(&rt, |r| ours.clone().oneshot(with(TOKEN)(r))),
        allocs(&rt, |r| peer.clone().oneshot(with(TOKEN)(r))),
    );
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token for `alg`, and the verifier's key and jsonwebtoken's own.
fn jwt_case(alg: Algorithm) -> (String, JwtKey, DecodingKey) {
    let claims = serde_json::json!({
        "sub": "billing", "aud": "orders", "iss": "https://issuer.bench",
        "exp": now() + 3600, "scope": "orders:read orders:write",
    });
    let (encoding, ours, theirs) = match alg {
        Algorithm::HS256 => (
            EncodingKey::from_secret(HS_SECRET.as_bytes()).unwrap(),
            JwtKey::new("HS256", SecretRef::value(HS_SECRET)),
            DecodingKey::from_secret(HS_SECRET.as_bytes()).unwrap(),
        ),
        Algorithm::RS256 => (
            EncodingKey::from_rsa_pem(&key("rsa1.pem")).unwrap(),
            JwtKey::new("RS256", key_ref("rsa1.pub.pem")),
            DecodingKey::from_rsa_pem(&key("rsa1.pub.pem")).unwrap(),
        ),
        Algorithm::ES256 => (
            EncodingKey::from_ec_pem(&key("ec256.pem")).unwrap(),
            JwtKey::new("ES256", key_ref("ec256.pub.pem")),
            DecodingKey::from_ec_pem(&key("ec256.pub.pem")).unwrap(),
        ),
        _ => (
            EncodingKey::from_ed_pem(&key("ed.pem")).unwrap(),
            JwtKey::new("EdDSA", key_ref("ed.pub.pem")),
            DecodingKey::from_ed_pem(&key("ed.pub.pem")).unwrap(),
        ),
    };
    let mut header = Header::new(alg);
    header.kid = Some("k1".to_owned());
    let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
    (token, ours.kid("k1"), theirs)
}

/// `AuthLayer` with an HS256 verifier, and a token it has verified once.
fn cached_jwt_layer() -> (String, AuthLayer) {
    let (token, key, _) = jwt_case(Algorithm::HS256);
    let verifier = JwtVerifier::new(
        JwtConfig::new()
            .issuer("https://issuer.bench")
            .audience("orders")
            .key(key),
        None,
    )
    .unwrap();
    assert!(verifier.verify(&token).now_or_never().unwrap().is_some());
    (token, AuthLayer::new().jwt(verifier))
}

/// The least a verified-token cache hit can be: a quick_cache lookup by a
/// key of 24 bytes, the whole token compared, a clock read against `exp`
/// and the identity's two `Arc`s cloned, with no verifier around it.
struct CachedFloor {
    cache: quick_cache::sync::Cache<(usize, [u8; 16]), std::sync::Arc<FloorEntry>>,
}

struct FloorEntry {
    token: Box<str>,
    name: std::sync::Arc<str>,
    scopes: std::sync::Arc<[String]>,
    expires: u64,
}

impl CachedFloor {
    fn key(token: &str) -> (usize, [u8; 16]) {
        let mut tail = [0; 16];
        tail.copy_from_slice(&token.as_bytes()[token.len() - 16..]);
        (token.len(), tail)
    }

    fn new(token: &str) -> Self {
        let cache = quick_cache::sync::Cache::new(10_000);
        let entry = FloorEntry {
            token: token.into(),
            name: "billing".into(),
            scopes: vec!["orders:read".to_owned()].into(),
            expires: now() + 3600,
        };
        cache.insert(Self::key(token), std::sync::Arc::new(entry));
        Self { cache }
    }

    fn hit(&self, token: &str) -> Option<(std::sync::Arc<str>, std::sync::Arc<[String]>)> {
        let hit = self.cache.get(&Self::key(token))?;
        (*hit.token == *token && now() < hit.expires)
            .then(|| (hit.name.clone(), hit.scopes.clone()))
    }
}

fn jwt(c: &mut Criterion) {
    let mut group = c.benchmark_group("auth/jwt_cold");
    for alg in [
        Algorithm::HS256,
        Algorithm::RS256,
        Algorithm::ES256,
        Algorithm::EdDSA,
    ] {
        let (token, ours, theirs) = jwt_case(alg);
        let config = JwtConfig::new()
            .issuer("https://issuer.bench")
            .audience("orders")
            .key(ours);
        let cold = JwtVerifier::new(config.clone().cached_tokens(0), None).unwrap();
        let mut validation = Validation::new(alg);
        validation.set_audience(&["orders"]);
        validation.set_issuer(&["https://issuer.bench"]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let keys = std::collections::HashMap::from([("k1".to_owned(), theirs)]);
        group.bench_function(format!("{alg:?}/jsonwebtoken"), |b| {
            b.iter(|| {
                // The same job: the header's kid picks the key, then decode.
                let header = jsonwebtoken::decode_header(black_box(&token)).unwrap();
                let key = &keys[header.kid.as_deref().unwrap()];
                black_box(
                    jsonwebtoken::decode::<serde_json::Value>(&token, key, &validation).unwrap(),
                )
            })
        });
        group.bench_function(format!("{alg:?}/tower_shield"), |b| {
            b.iter(|| {
                black_box(
                    cold.verify(black_box(&token))
                        .now_or_never()
                        .unwrap()
                        .unwrap(),
                )
            })
        });
        if alg == Algorithm::HS256 {
            let cached = JwtVerifier::new(config, None).unwrap();
            assert!(cached.verify(&token).now_or_never().unwrap().is_some());
            group.bench_function("cached/tower_shield", |b| {
                b.iter(|| {
                    black_box(
                        cached
                            .verify(black_box(&token))
                            .now_or_never()
                            .unwrap()
                            .unwrap(),
                    )
                })
            });
            let floor = CachedFloor::new(&token);
            group.bench_function("cached/floor", |b| {
                b.iter(|| black_box(floor.hit(black_box(&token)).unwrap()))
            });
        }
    }
    group.finish();
}

fn signature(c: &mut Criterion) {
    let rt = rt();
    let secret = "a signing secret shared by two services";
    let verifier = SignatureVerifier::new(SignatureConfig::new().key(SignatureKey::new(
        "k1",
        "ledger",
        SecretRef::value(secret),
    )))
    .unwrap();
    let svc = tower::ServiceBuilder::new()
        .layer(CallerBodyLayer::new())
        .layer(SignatureLayer::new(verifier))
        .service(service_fn(|req: Request<_>| async move {
            black_box(&req);
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    let signing = SigningKey::new("k1", &SecretRef::value(secret)).unwrap();
    let body = Bytes::from(vec![b'x'; 1024]);
    let signed = || {
        let mut req = Request::post("http://127.0.0.1/ledger")
            .header(header::HOST, "127.0.0.1")
            .body(body.clone())
            .unwrap();
        tower_shield::auth::sign_request(&mut req, &signing).unwrap();
        // As a server receives it: origin form, a body of its own.
        let (mut parts, body) = req.into_parts();
        parts.uri = "/ledger".parse().unwrap();
        Request::from_parts(parts, http_body_util::Full::new(body))
    };
    let mut group = c.benchmark_group("auth/signature_1kib");
    group.bench_function("tower_shield_verify", |b| {
        b.to_async(&rt).iter_batched(
            signed,
            |req| svc.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

// Every bench clones its service per call; the bare `service_fn` is `Copy`.
#[allow(clippy::clone_on_copy)]
fn rate_limit(c: &mut Criterion) {
    let rt = rt();
    let tenant = http::HeaderName::from_static("x-tenant");
    let keyed = |t: &'static str| {
        let tenant = tenant.clone();
        move || {
            let mut req = request();
            req.headers_mut()
                .insert(tenant.clone(), HeaderValue::from_static(t));
            req
        }
    };
    let bare = service_fn(handler);
    let ours = rt.block_on(async {
        RateLimitLayer::new(RateLimitConfig::new(1e9, u32::MAX).key(KeyBy::Header(tenant.clone())))
            .unwrap()
            .layer(service_fn(handler))
    });
    let governor = std::sync::Arc::new(governor::RateLimiter::keyed(
        governor::Quota::per_second(NonZeroU32::MAX).allow_burst(NonZeroU32::MAX),
    ));
    // The peer in the same shape: governor's keyed check (the key read from
    // the header, as a `String`, as its keyed store needs) before the same
    // handler.
    let peer = {
        let (governor, tenant) = (governor.clone(), tenant.clone());
        service_fn(move |req: Request<()>| {
            let key = req.headers()[&tenant].to_str().unwrap().to_owned();
            let allowed = governor.check_key(&key).is_ok();
            async move {
                assert!(allowed);
                handler(req).await
            }
        })
    };
    let mut group = c.benchmark_group("limit/memory");
    group.bench_function("service_fn", |b| {
        b.to_async(&rt).iter_batched(
            keyed("acme"),
            |req| bare.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("tower_shield", |b| {
        b.to_async(&rt).iter_batched(
            keyed("acme"),
            |req| ours.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("governor_keyed", |b| {
        b.to_async(&rt).iter_batched(
            keyed("acme"),
            |req| peer.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.finish();
    println!(
        "allocs per call (request included): service_fn {:.1}, rate limit {:.1}, governor {:.1}",
        allocs(&rt, |_| bare.clone().oneshot(keyed("acme")())),
        allocs(&rt, |_| ours.clone().oneshot(keyed("acme")())),
        allocs(&rt, |_| peer.clone().oneshot(keyed("acme")())),
    );

    #[cfg(feature = "redis")]
    redis_limit(c, &rt);
}

#[cfg(feature = "redis")]
fn redis_limit(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let ours = rt.block_on(async {
        RateLimitLayer::new(
            RateLimitConfig::new(1e6, 1_000_000)
                .redis(&url)
                .namespace(format!("shield-bench-{}", std::process::id())),
        )
        .unwrap()
        .layer(service_fn(|req: Request<()>| async move {
            black_box(&req);
            Ok::<_, Infallible>(Response::new(String::new()))
        }))
    });
    if rt.block_on(ours.clone().oneshot(request())).is_err() {
        eprintln!("!!! no Redis at {url}: the Redis rate-limit bench is skipped");
        return;
    }
    // The upstream call it sits beside: a loopback HTTP round trip.
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();
    let mut group = c.benchmark_group("limit/redis_loopback");
    group.bench_function("tower_shield_check", |b| {
        b.to_async(rt).iter_batched(
            request,
            |req| ours.clone().oneshot(req),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("http_round_trip", |b| {
        b.to_async(rt).iter(|| {
            client.request(
                Request::get(format!("http://{addr}/"))
                    .body(http_body_util::Empty::new())
                    .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, static_token, jwt, signature, rate_limit);

/// With `AUTH_COUNT=<bench>` set, runs 10 000 calls of one bench (requests
/// or tokens made beforehand) inside `support::counted`, for an
/// instruction count that does not move with the machine's load:
///
/// ```text
/// AUTH_COUNT=static_ours valgrind --tool=callgrind \
///     --toggle-collect='*::support::counted' target/release/deps/auth-<hash>
/// ```
///
/// Benches: `static_bare`, `static_ours`, `static_tower_http`,
/// `jwt_hs256_peer`, `jwt_hs256_ours`, `jwt_cached_ours`, `jwt_cached_floor`, `jwt_cached_layer`, `limit_bare`,
/// `limit_ours`, `limit_governor`.
#[allow(clippy::clone_on_copy)]
fn count(which: &str) {
    const N: usize = 10_000;
    let rt = rt();
    let tokens = StaticTokens::load(vec![
        TokenEntry::new("billing", SecretRef::value(TOKEN)),
        TokenEntry::new("search", SecretRef::value("search-0f9e8d7c6b5a49382716")),
        TokenEntry::new("ledger", SecretRef::value("ledger-a1b2c3d4e5f60718293a")),
    ])
    .unwrap();
    let bearer_reqs = || (0..N).map(|_| with_bearer(TOKEN)).collect::<Vec<_>>();
    match which {
        "static_bare" => counted(&rt, bearer_reqs(), |r| service_fn(handler).oneshot(r)),
        "static_ours" => {
            let svc = AuthLayer::new()
                .static_tokens(tokens)
                .layer(service_fn(handler));
            counted(&rt, bearer_reqs(), |r| svc.clone().oneshot(r))
        }
        "static_tower_http" => {
            #[allow(deprecated)]
            let svc = tower_http::validate_request::ValidateRequestHeaderLayer::bearer(TOKEN)
                .layer(service_fn(handler));
            counted(&rt, bearer_reqs(), |r| svc.clone().oneshot(r))
        }
        "jwt_cached_layer" => {
            let (token, layer) = cached_jwt_layer();
            let svc = layer.layer(service_fn(handler));
            let reqs = (0..N).map(|_| with_bearer(&token)).collect::<Vec<_>>();
            counted(&rt, reqs, |r| svc.clone().oneshot(r))
        }
        "jwt_cached_floor" => {
            let (token, _, _) = jwt_case(Algorithm::HS256);
            let floor = CachedFloor::new(&token);
            let tokens: Vec<&str> = (0..N).map(|_| token.as_str()).collect();
            counted(&rt, tokens, |t| std::future::ready(floor.hit(t).unwrap()))
        }
        "jwt_hs256_peer" | "jwt_hs256_ours" | "jwt_cached_ours" => {
            let (token, ours, theirs) = jwt_case(Algorithm::HS256);
            let config = JwtConfig::new()
                .issuer("https://issuer.bench")
                .audience("orders")
                .key(ours);
            let cold = JwtVerifier::new(config.clone().cached_tokens(0), None).unwrap();
            let cached = JwtVerifier::new(config, None).unwrap();
            let mut validation = Validation::new(Algorithm::HS256);
            validation.set_audience(&["orders"]);
            validation.set_issuer(&["https://issuer.bench"]);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
            let keys = std::collections::HashMap::from([("k1".to_owned(), theirs)]);
            let tokens: Vec<&str> = (0..N).map(|_| token.as_str()).collect();
            match which {
                "jwt_hs256_peer" => counted(&rt, tokens, |t| {
                    let header = jsonwebtoken::decode_header(t).unwrap();
                    let key = &keys[header.kid.as_deref().unwrap()];
                    let data = jsonwebtoken::decode::<serde_json::Value>(t, key, &validation);
                    std::future::ready(data.unwrap())
                }),
                "jwt_hs256_ours" => counted(&rt, tokens, |t| {
                    std::future::ready(cold.verify(t).now_or_never().unwrap().unwrap())
                }),
                _ => {
                    assert!(cached.verify(&token).now_or_never().unwrap().is_some());
                    counted(&rt, tokens, |t| {
                        std::future::ready(cached.verify(t).now_or_never().unwrap().unwrap())
                    })
                }
            }
        }
        "limit_bare" | "limit_ours" | "limit_governor" => {
            let tenant = http::HeaderName::from_static("x-tenant");
            let reqs: Vec<_> = (0..N)
                .map(|_| {
                    let mut req = request();
                    req.headers_mut()
                        .insert(tenant.clone(), HeaderValue::from_static("acme"));
                    req
                })
                .collect();
            match which {
                "limit_bare" => counted(&rt, reqs, |r| service_fn(handler).oneshot(r)),
                "limit_ours" => {
                    let svc = rt.block_on(async {
                        RateLimitLayer::new(
                            RateLimitConfig::new(1e9, u32::MAX).key(KeyBy::Header(tenant.clone())),
                        )
                        .unwrap()
                        .layer(service_fn(handler))
                    });
                    counted(&rt, reqs, |r| svc.clone().oneshot(r))
                }
                _ => {
                    let governor = std::sync::Arc::new(governor::RateLimiter::keyed(
                        governor::Quota::per_second(NonZeroU32::MAX).allow_burst(NonZeroU32::MAX),
                    ));
                    let svc = service_fn(move |req: Request<()>| {
                        let key = req.headers()[&tenant].to_str().unwrap().to_owned();
                        let allowed = governor.check_key(&key).is_ok();
                        async move {
                            assert!(allowed);
                            handler(req).await
                        }
                    });
                    counted(&rt, reqs, |r| svc.clone().oneshot(r))
                }
            }
        }
        other => panic!("AUTH_COUNT: no bench {other:?}"),
    }
}

fn main() {
    support::main_or_count("AUTH_COUNT", count, benches);
}
