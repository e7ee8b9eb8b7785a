//! Service auth through its public API: a real axum server on 127.0.0.1
//! under `AuthLayer`, called by a real hyper client; a real key server
//! (JWKS, OpenID discovery) and a real token endpoint, each counting what
//! it serves. Every refusal is checked to leave the handler uncalled.
#![cfg(all(feature = "auth", feature = "axum"))]

mod support;

use axum::{routing::get, routing::post, Json, Router};
use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use jsonwebtoken::{encode, jwk::Jwk, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_shield::{
    auth::{
        fetch_with, AttachLayer, AuthLayer, ClientCredentials, Credentials, Fetch, JwtConfig,
        JwtKey, JwtVerifier, Method, RequireLayer, SecretRef, ServiceIdentity, StaticTokens,
        TokenEntry,
    },
    stack::ClientStack,
    ServiceBuilderExt,
};

const HS_SECRET: &[u8] = b"a test secret that is 32 bytes!!";

fn key(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn key_path(name: &str) -> String {
    format!("{}/tests/data/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(service: &str) -> Value {
    json!({"sub": service, "aud": "orders", "iss": "https://issuer.test", "exp": now() + 300, "scope": "orders:read orders:write"})
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(HS_SECRET).unwrap(),
    )
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A server under `auth` whose handlers count their calls.
async fn server(auth: AuthLayer) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c1 = calls.clone();
    let c2 = calls.clone();
    let app = Router::new()
        .route(
            "/who",
            get(move |id: ServiceIdentity| {
                c1.fetch_add(1, Ordering::SeqCst);
                async move { format!("{} {} {:?}", id.name(), id.scopes().join(","), id.method()) }
            }),
        )
        .route(
            "/admin",
            get(move || {
                c2.fetch_add(1, Ordering::SeqCst);
                async { "admin" }
            })
            .route_layer(RequireLayer::scope("admin")),
        )
        .layer(auth);
    (serve(app).await, calls)
}

async fn call(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, HeaderValue)],
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::get(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, value.clone());
    }
    let res = hyper_client::<Empty<Bytes>>()
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn bearer(token: &str) -> (&'static str, HeaderValue) {
    (
        "authorization",
        HeaderValue::try_from(format!("Bearer {token}")).unwrap(),
    )
}

fn jwt_config() -> JwtConfig {
    JwtConfig::new()
        .issuer("https://issuer.test")
        .audience("orders")
        .leeway(Duration::from_secs(5))
        .key(
            JwtKey::new(
                "HS256",
                SecretRef::value(String::from_utf8(HS_SECRET.to_vec()).unwrap()),
            )
            .kid("hs"),
        )
        .key(JwtKey::new("RS256", SecretRef::file(key_path("rsa1.pub.pem"))).kid("rsa1"))
        .key(JwtKey::new("ES256", SecretRef::file(key_path("ec256.pub.pem"))).kid("ec"))
        .key(JwtKey::new("EdDSA", SecretRef::file(key_path("ed.pub.pem"))).kid("ed"))
}

fn tokens() -> StaticTokens {
    StaticTokens::load(vec![
        TokenEntry::new("billing", SecretRef::value("billing-token-1")).scopes(["orders:read"]),
        TokenEntry::new("ops", SecretRef::value("ops-token")).scopes(["admin"]),
    ])
    .unwrap()
}

#[tokio::test]
async fn a_realm_is_named_in_the_challenge_and_the_verifiers_are_reachable() {
    let layer = AuthLayer::new().static_tokens(tokens()).realm("orders-api");
    assert_eq!(layer.static_token_set().map(StaticTokens::len), Some(2));
    assert!(layer.jwt_verifier().is_none());
    let (addr, calls) = server(layer).await;
    let (status, headers, _) = call(addr, "/who", &[bearer("nope")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        "Bearer realm=\"orders-api\", error=\"invalid_token\""
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let verifier = JwtVerifier::new(jwt_config(), None).unwrap();
    assert!(AuthLayer::new().jwt(verifier).jwt_verifier().is_some());
}

#[tokio::test]
async fn static_tokens_and_jwts_are_accepted_and_name_the_caller() {
    let verifier = JwtVerifier::new(jwt_config(), None).unwrap();
    let (addr, calls) = server(AuthLayer::new().static_tokens(tokens()).jwt(verifier)).await;

    let (status, _, body) = call(addr, "/who", &[bearer("billing-token-1")]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "billing orders:read StaticToken")
    );

    let c = claims("search");
    let signed = [
        sign(
            Algorithm::HS256,
            Some("hs"),
            &c,
            &EncodingKey::from_secret(HS_SECRET).unwrap(),
        ),
        sign(
            Algorithm::RS256,
            Some("rsa1"),
            &c,
            &EncodingKey::from_rsa_pem(&key("rsa1.pem")).unwrap(),
        ),
        sign(
            Algorithm::ES256,
            Some("ec"),
            &c,
            &EncodingKey::from_ec_pem(&key("ec256.pem")).unwrap(),
        ),
        sign(
            Algorithm::EdDSA,
            Some("ed"),
            &c,
            &EncodingKey::from_ed_pem(&key("ed.pem")).unwrap(),
        ),
        // No kid: each key of the token's algorithm is tried.
        hs(&c),
    ];
    for token in &signed {
        let (status, _, body) = call(addr, "/who", &[bearer(token)]).await;
        assert_eq!(status, StatusCode::OK, "{token}");
        assert_eq!(body, "search orders:read,orders:write Jwt");
        // Again: from the verified-token cache.
        assert_eq!(call(addr, "/who", &[bearer(token)]).await.0, StatusCode::OK);
    }
    // Scopes as an array.
    let mut c = claims("search");
    c["scope"] = json!(["a", "b"]);
    let (_, _, body) = call(addr, "/who", &[bearer(&hs(&c))]).await;
    assert_eq!(body, "search a,b Jwt");
    assert_eq!(calls.load(Ordering::SeqCst), 1 + 2 * signed.len() + 1);
}

/// Every refusal is a 401 with the RFC 6750 challenge, tells nothing of
/// which check failed, and never reaches the handler.
#[tokio::test]
async fn bad_credentials_are_refused_without_reaching_the_handler() {
    let verifier = JwtVerifier::new(jwt_config(), None).unwrap();
    let (addr, calls) = server(AuthLayer::new().static_tokens(tokens()).jwt(verifier)).await;

    let good = hs(&claims("search"));
    let (head, rest) = good.split_once('.').unwrap();
    let (payload, signature) = rest.split_once('.').unwrap();
    let tampered_payload = {
        let mut c = claims("search");
        c["sub"] = json!("admin");
        format!("{head}.{}.{signature}", b64(c.to_string().as_bytes()))
    };
    let mut sig = signature.as_bytes().to_vec();
    sig[3] = if sig[3] == b'A' { b'B' } else { b'A' };
    let tampered_signature = format!("{head}.{payload}.{}", String::from_utf8(sig).unwrap());
    let none = |alg: &str| {
        format!(
            "{}.{}.",
            b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes()),
            b64(claims("search").to_string().as_bytes())
        )
    };
    let with_claims = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("search");
        f(&mut c);
        hs(&c)
    };
    // An HMAC token keyed with the RSA public key, naming the RSA key.
    let confused = sign(
        Algorithm::HS256,
        Some("rsa1"),
        &claims("search"),
        &EncodingKey::from_secret(&key("rsa1.pub.pem")).unwrap(),
    );
    let confused_no_kid = sign(
        Algorithm::HS256,
        None,
        &claims("search"),
        &EncodingKey::from_secret(&key("rsa1.pub.pem")).unwrap(),
    );
    let header_with = |extra: Value| {
        let mut h = json!({"alg": "HS256", "typ": "JWT"});
        h.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let signing_input = format!(
            "{}.{}",
            b64(h.to_string().as_bytes()),
            b64(claims("search").to_string().as_bytes())
        );
        let sig = jsonwebtoken::crypto::sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(HS_SECRET).unwrap(),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{signing_input}.{sig}")
    };

    let mut cases: Vec<(String, Vec<(&str, HeaderValue)>)> = vec![
        ("missing".into(), vec![]),
        (
            "wrong scheme".into(),
            vec![(
                "authorization",
                HeaderValue::from_static("Basic YmlsbGluZzpwdw=="),
            )],
        ),
        (
            "token as the scheme".into(),
            vec![("authorization", HeaderValue::from_static("billing-token-1"))],
        ),
        (
            "empty".into(),
            vec![("authorization", HeaderValue::from_static("Bearer "))],
        ),
        (
            "whitespace".into(),
            vec![("authorization", HeaderValue::from_static("Bearer     "))],
        ),
        ("a near miss".into(), vec![bearer("billing-token-2")]),
        ("a prefix".into(), vec![bearer("billing-token-")]),
        ("malformed base64".into(), vec![bearer("eyJ!!!.eyJ.sig")]),
        ("not base64 at all".into(), vec![bearer("a.b.c")]),
        ("truncated".into(), vec![bearer(&good[..good.len() - 10])]),
        (
            "two parts".into(),
            vec![bearer(&format!("{head}.{payload}"))],
        ),
        ("tampered payload".into(), vec![bearer(&tampered_payload)]),
        (
            "tampered signature".into(),
            vec![bearer(&tampered_signature)],
        ),
        ("algorithm confusion".into(), vec![bearer(&confused)]),
        (
            "algorithm confusion, no kid".into(),
            vec![bearer(&confused_no_kid)],
        ),
        (
            "a kid of another algorithm".into(),
            vec![bearer(&sign(
                Algorithm::HS256,
                Some("ec"),
                &claims("s"),
                &EncodingKey::from_secret(HS_SECRET).unwrap(),
            ))],
        ),
        (
            "unknown kid".into(),
            vec![bearer(&sign(
                Algorithm::HS256,
                Some("nope"),
                &claims("s"),
                &EncodingKey::from_secret(HS_SECRET).unwrap(),
            ))],
        ),
        (
            "expired".into(),
            vec![bearer(&with_claims(&|c| c["exp"] = json!(now() - 60)))],
        ),
        (
            "not yet valid".into(),
            vec![bearer(&with_claims(&|c| c["nbf"] = json!(now() + 600)))],
        ),
        (
            "wrong audience".into(),
            vec![bearer(&with_claims(&|c| c["aud"] = json!("billing")))],
        ),
        (
            "no audience".into(),
            vec![bearer(&with_claims(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }))],
        ),
        (
            "wrong issuer".into(),
            vec![bearer(&with_claims(&|c| {
                c["iss"] = json!("https://evil.test")
            }))],
        ),
        (
            "no exp".into(),
            vec![bearer(&with_claims(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }))],
        ),
        (
            "no service".into(),
            vec![bearer(&with_claims(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }))],
        ),
        (
            "jku header".into(),
            vec![bearer(&header_with(
                json!({"jku": "http://127.0.0.1:1/jwks"}),
            ))],
        ),
        (
            "x5u header".into(),
            vec![bearer(&header_with(
                json!({"x5u": "http://127.0.0.1:1/cert"}),
            ))],
        ),
        (
            "embedded jwk".into(),
            vec![bearer(&header_with(json!({"jwk": jwk("rsa1.pem", "k1")})))],
        ),
        (
            "x5c header".into(),
            vec![bearer(&header_with(
                json!({"x5c": [b64(b"a certificate")]}),
            ))],
        ),
        (
            "crit header".into(),
            vec![bearer(&header_with(json!({"crit": ["exp"]})))],
        ),
        (
            "64 KiB token".into(),
            vec![bearer(&format!("{good}{}", "A".repeat(64 * 1024)))],
        ),
        (
            "two Authorization headers".into(),
            vec![bearer("billing-token-1"), bearer("billing-token-1")],
        ),
    ];
    for alg in ["none", "None", "NONE", "nOnE"] {
        cases.push((format!("alg {alg}"), vec![bearer(&none(alg))]));
        cases.push((
            format!("alg {alg}, signed"),
            vec![bearer(&format!("{}{signature}", none(alg)))],
        ));
    }
    for (what, headers) in &cases {
        let (status, res_headers, body) = call(addr, "/who", headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        let challenge = res_headers[header::WWW_AUTHENTICATE].to_str().unwrap();
        if what == "missing" {
            assert_eq!(challenge, "Bearer", "{what}");
            assert_eq!(body, "Unauthorized: credentials required\n");
        } else {
            assert_eq!(challenge, "Bearer error=\"invalid_token\"", "{what}");
            assert_eq!(body, "Unauthorized: invalid credentials\n", "{what}");
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // And the next request is served.
    assert_eq!(
        call(addr, "/who", &[bearer("billing-token-1")]).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_route_s_requirements_answer_403_with_the_scope() {
    let (addr, calls) = server(AuthLayer::new().static_tokens(tokens()).allow_anonymous()).await;
    let (status, headers, _) = call(addr, "/admin", &[bearer("billing-token-1")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        "Bearer error=\"insufficient_scope\", scope=\"admin\""
    );
    // Anonymous reaches the route layer, which wants an identity.
    let (status, headers, _) = call(addr, "/admin", &[]).await;
    assert_eq!(
        (status, &headers[header::WWW_AUTHENTICATE]),
        (
            StatusCode::UNAUTHORIZED,
            &HeaderValue::from_static("Bearer")
        )
    );
    // The extractor refuses a handler's request without an identity too.
    let (status, _, _) = call(addr, "/who", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A bad credential is refused even where anonymous calls pass.
    assert_eq!(
        call(addr, "/admin", &[bearer("nope")]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        call(addr, "/admin", &[bearer("ops-token")]).await.0,
        StatusCode::OK
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_token_in_a_header_of_its_own_and_rotation_by_reload() {
    let path = std::env::temp_dir().join(format!("shield-auth-rotation-{}", std::process::id()));
    std::fs::write(&path, "old-token\n").unwrap();
    let tokens =
        StaticTokens::load(vec![TokenEntry::new("billing", SecretRef::file(&path))]).unwrap();
    let layer = AuthLayer::new()
        .static_tokens(tokens.clone())
        .token_header(http::HeaderName::from_static("x-service-token"));
    let (addr, _) = server(layer).await;
    let h = |t: &'static str| [("x-service-token", HeaderValue::from_static(t))];
    assert_eq!(call(addr, "/who", &h("old-token")).await.0, StatusCode::OK);
    assert_eq!(
        call(addr, "/who", &h("new-token")).await.0,
        StatusCode::UNAUTHORIZED
    );
    // Overlap: both live.
    std::fs::write(&path, "old-token\nnew-token\n").unwrap();
    tokens.reload().unwrap();
    assert_eq!(call(addr, "/who", &h("old-token")).await.0, StatusCode::OK);
    assert_eq!(call(addr, "/who", &h("new-token")).await.0, StatusCode::OK);
    // Retired.
    std::fs::write(&path, "new-token\n").unwrap();
    tokens.reload().unwrap();
    assert_eq!(
        call(addr, "/who", &h("old-token")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(call(addr, "/who", &h("new-token")).await.0, StatusCode::OK);
    std::fs::remove_file(&path).unwrap();
}

/// A key server: a JWKS (replaceable) and an OpenID discovery document,
/// counting the JWKS fetches.
struct KeyServer {
    addr: std::net::SocketAddr,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

fn jwk(private_pem: &str, kid: &str) -> Value {
    let mut jwk = Jwk::from_encoding_key(
        &EncodingKey::from_rsa_pem(&key(private_pem)).unwrap(),
        Algorithm::RS256,
    )
    .unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    serde_json::to_value(jwk).unwrap()
}

async fn key_server(keys: Vec<Value>) -> KeyServer {
    let jwks = Arc::new(Mutex::new(json!({ "keys": keys })));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (j, f) = (jwks.clone(), fetches.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/jwks",
            get(move || {
                f.fetch_add(1, Ordering::SeqCst);
                let body = j.lock().unwrap().clone();
                async move { ([(header::CACHE_CONTROL, "max-age=300")], Json(body)) }
            }),
        )
        .route(
            "/.well-known/openid-configuration",
            get(move || async move {
                Json(json!({"issuer": format!("http://{addr}"), "jwks_uri": format!("http://{addr}/jwks")}))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    KeyServer {
        addr,
        jwks,
        fetches,
    }
}

/// The crate's client stack around hyper, as the key fetcher.
fn fetcher() -> Fetch {
    fetch_with(
        ServiceBuilder::new()
            .client_stack(ClientStack::new().timeout(Duration::from_secs(2)))
            .service(hyper_client::<String>()),
    )
}

fn rs(private_pem: &str, kid: &str, claims: &Value) -> String {
    sign(
        Algorithm::RS256,
        Some(kid),
        claims,
        &EncodingKey::from_rsa_pem(&key(private_pem)).unwrap(),
    )
}

#[tokio::test]
async fn keys_from_a_jwks_file() {
    let dir = std::env::temp_dir().join(format!("shield-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwks.json");
    std::fs::write(&path, json!({"keys": [jwk("rsa1.pem", "k1")]}).to_string()).unwrap();
    let verifier =
        JwtVerifier::new(JwtConfig::new().audience("orders").jwks_file(&path), None).unwrap();
    assert_eq!(verifier.key_status().keys, 1);
    let (addr, calls) = server(AuthLayer::new().jwt(verifier)).await;
    let (status, _, body) =
        call(addr, "/who", &[bearer(&rs("rsa1.pem", "k1", &claims("a")))]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "a orders:read,orders:write Jwt")
    );
    // A key the file does not hold, and no URL to fetch more from.
    let other = rs("rsa2.pem", "k2", &claims("b"));
    assert_eq!(
        call(addr, "/who", &[bearer(&other)]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A file that is not a JWKS, or not there: an error naming the file.
    std::fs::write(&path, "not json").unwrap();
    assert!(JwtVerifier::new(JwtConfig::new().jwks_file(&path), None).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
    let err = JwtVerifier::new(JwtConfig::new().jwks_file(&path), None).unwrap_err();
    assert!(err.to_string().contains("jwks.json"), "{err}");
}

#[tokio::test]
async fn jwks_keys_rotate_at_the_key_server_and_are_picked_up() {
    let keys = key_server(vec![jwk("rsa1.pem", "k1")]).await;
    let config = JwtConfig::new()
        .audience("orders")
        .jwks_url(format!("http://{}/jwks", keys.addr))
        .refresh_min_interval(Duration::ZERO);
    let verifier = JwtVerifier::new(config, Some(fetcher())).unwrap();
    let (addr, calls) = server(AuthLayer::new().jwt(verifier.clone())).await;

    assert_eq!(verifier.key_status().keys, 0);
    let first = rs("rsa1.pem", "k1", &claims("a"));
    let (status, _, body) = call(addr, "/who", &[bearer(&first)]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "a orders:read,orders:write Jwt")
    );
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(verifier.key_status().keys, 1);
    assert!(verifier.key_status().fetched_ago.is_some());

    // The key server rotates to k2: a token signed with it is unknown,
    // fetched for, and accepted.
    *keys.jwks.lock().unwrap() = json!({"keys": [jwk("rsa2.pem", "k2")]});
    let (status, _, _) = call(addr, "/who", &[bearer(&rs("rsa2.pem", "k2", &claims("b")))]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 2);
    // k1 is gone from the server, so a new k1 token is refused.
    let (status, _, _) = call(addr, "/who", &[bearer(&rs("rsa1.pem", "k1", &claims("c")))]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // A k1 token verified before the rotation is remembered until its
    // `exp`: still accepted, with no key for it at hand.
    assert_eq!(
        call(addr, "/who", &[bearer(&first)]).await.0,
        StatusCode::OK
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // An explicit refresh fetches now and tells how many keys came.
    *keys.jwks.lock().unwrap() = json!({"keys": [jwk("rsa1.pem", "k1"), jwk("rsa2.pem", "k2")]});
    assert_eq!(verifier.refresh().await, Ok(2));
    assert_eq!(verifier.key_status().keys, 2);
    // A document that is not a JWKS is an error, and the keys are kept.
    *keys.jwks.lock().unwrap() = json!({"nope": []});
    assert!(verifier.refresh().await.is_err());
    assert_eq!(verifier.key_status().keys, 2);
    let (status, _, _) = call(addr, "/who", &[bearer(&rs("rsa1.pem", "k1", &claims("d")))]).await;
    assert_eq!(status, StatusCode::OK);
}

/// A token without a `kid`, before any key is fetched: the keys are
/// fetched for it, then the keys of its algorithm are tried.
#[tokio::test]
async fn a_token_without_a_kid_fetches_the_first_keys() {
    let keys = key_server(vec![jwk("rsa1.pem", "k1")]).await;
    let config = JwtConfig::new()
        .audience("orders")
        .jwks_url(format!("http://{}/jwks", keys.addr))
        .refresh_min_interval(Duration::ZERO);
    let verifier = JwtVerifier::new(config, Some(fetcher())).unwrap();
    let token = sign(
        Algorithm::RS256,
        None,
        &claims("a"),
        &EncodingKey::from_rsa_pem(&key("rsa1.pem")).unwrap(),
    );
    assert_eq!(verifier.verify(&token).await.unwrap().name(), "a");
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 1);
    // With keys at hand, a kid-less token of an algorithm none of them has
    // is refused without another fetch.
    let hs = sign(
        Algorithm::HS256,
        None,
        &claims("b"),
        &EncodingKey::from_secret(HS_SECRET).unwrap(),
    );
    assert!(verifier.verify(&hs).await.is_none());
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_flood_of_made_up_kids_fetches_at_most_once_per_interval() {
    let keys = key_server(vec![jwk("rsa1.pem", "k1")]).await;
    let config = JwtConfig::new()
        .audience("orders")
        .oidc_issuer(format!("http://{}", keys.addr))
        .refresh_min_interval(Duration::from_secs(60));
    let verifier = JwtVerifier::new(config, Some(fetcher())).unwrap();
    let (addr, calls) = server(AuthLayer::new().jwt(verifier)).await;
    // The first token fetches the keys, through discovery.
    assert_eq!(
        call(addr, "/who", &[bearer(&rs("rsa1.pem", "k1", &claims("a")))])
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 1);

    // 1 000 made-up kids, 50 at a time: a real token's payload and
    // signature under headers naming kids no key has (a flood needs no
    // key; signing each in a debug build would take half a minute).
    let real = rs("rsa1.pem", "k1", &claims("x"));
    let rest = &real[real.find('.').unwrap()..];
    let tokens: Vec<String> = (0..1000)
        .map(|i| {
            let header = json!({"alg": "RS256", "typ": "JWT", "kid": format!("made-up-{i}")});
            format!("{}{rest}", b64(header.to_string().as_bytes()))
        })
        .collect();
    for chunk in tokens.chunks(50) {
        let calls = chunk
            .iter()
            .map(|t| async move { call(addr, "/who", &[bearer(t)]).await.0 });
        for status in futures_util::future::join_all(calls).await {
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    }
    // Within the interval of the first fetch: none more.
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Such a token does send a verifier without that interval to the key
    // server: the flood above was held back by the interval alone.
    let eager = JwtVerifier::new(
        JwtConfig::new()
            .audience("orders")
            .oidc_issuer(format!("http://{}", keys.addr))
            .refresh_min_interval(Duration::ZERO),
        Some(fetcher()),
    )
    .unwrap();
    assert!(eager.verify(&tokens[0]).await.is_none());
    assert_eq!(keys.fetches.load(Ordering::SeqCst), 2);
}

/// A token endpoint (client credentials) and a resource server that
/// accepts the tokens in `valid`.
struct Grantor {
    token_url: String,
    issued: Arc<AtomicUsize>,
    fail: Arc<Mutex<Option<StatusCode>>>,
}

async fn grantor(valid: Arc<Mutex<Vec<String>>>) -> Grantor {
    let issued = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(Mutex::new(None));
    let (i, v, f) = (issued.clone(), valid, fail.clone());
    let app = Router::new().route(
        "/token",
        post(move |headers: HeaderMap, body: String| {
            let (i, v, f) = (i.clone(), v.clone(), f.clone());
            async move {
                if let Some(status) = *f.lock().unwrap() {
                    return (status, String::new());
                }
                let basic = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode("svc-a:s%26cret")
                );
                assert_eq!(headers[header::AUTHORIZATION], basic.as_str());
                assert_eq!(body, "grant_type=client_credentials&scope=orders%3Aread");
                let n = i.fetch_add(1, Ordering::SeqCst) + 1;
                let token = format!("tok-{n}");
                v.lock().unwrap().push(token.clone());
                (
                    StatusCode::OK,
                    json!({"access_token": token, "token_type": "bearer", "expires_in": 3600})
                        .to_string(),
                )
            }
        }),
    );
    let addr = serve(app).await;
    Grantor {
        token_url: format!("http://{addr}/token"),
        issued,
        fail,
    }
}

async fn resource(valid: Arc<Mutex<Vec<String>>>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let app = Router::new().route(
        "/r",
        get(move |headers: HeaderMap| {
            s.fetch_add(1, Ordering::SeqCst);
            let ok = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .is_some_and(|t| valid.lock().unwrap().iter().any(|x| x == t));
            async move {
                if ok {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::UNAUTHORIZED, "no")
                }
            }
        }),
    );
    (serve(app).await, seen)
}

fn grant(url: &str) -> ClientCredentials {
    ClientCredentials::new(url, "svc-a", &SecretRef::value("s&cret"), fetcher())
        .unwrap()
        .scope("orders:read")
}

#[tokio::test]
async fn client_credentials_are_fetched_once_for_100_concurrent_calls_and_refreshed_on_401() {
    let valid = Arc::new(Mutex::new(Vec::new()));
    let grantor = grantor(valid.clone()).await;
    let (addr, seen) = resource(valid.clone()).await;
    let credentials = Credentials::client_credentials(grant(&grantor.token_url));
    let client = ServiceBuilder::new()
        .layer(AttachLayer::new(credentials.clone()))
        .service(hyper_client::<Empty<Bytes>>());
    let get = || {
        let client = client.clone();
        async move {
            let req = Request::get(format!("http://{addr}/r"))
                .body(Empty::new())
                .unwrap();
            client.oneshot(req).await.unwrap().status()
        }
    };
    let statuses = futures_util::future::join_all((0..100).map(|_| get())).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    assert_eq!(grantor.issued.load(Ordering::SeqCst), 1);
    assert_eq!(credentials.token_requests(), 1);
    assert_eq!(seen.load(Ordering::SeqCst), 100);

    // The server revokes tok-1: the next call is answered 401, refreshes,
    // and is sent once more with tok-2.
    valid.lock().unwrap().clear();
    assert_eq!(get().await, StatusCode::OK);
    assert_eq!(grantor.issued.load(Ordering::SeqCst), 2);
    assert_eq!(seen.load(Ordering::SeqCst), 102);
    // A server that refuses every token: one retry, then the 401 stands.
    let (refuser, refused) = resource(Arc::new(Mutex::new(Vec::new()))).await;
    let req = Request::get(format!("http://{refuser}/r"))
        .body(Empty::new())
        .unwrap();
    assert_eq!(
        client.clone().oneshot(req).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(refused.load(Ordering::SeqCst), 2);
    assert_eq!(grantor.issued.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_failing_token_endpoint_is_a_clear_error() {
    let valid = Arc::new(Mutex::new(Vec::new()));
    let grantor = grantor(valid.clone()).await;
    let (addr, seen) = resource(valid).await;
    *grantor.fail.lock().unwrap() = Some(StatusCode::INTERNAL_SERVER_ERROR);
    let client = ServiceBuilder::new()
        .layer(AttachLayer::new(Credentials::client_credentials(grant(
            &grantor.token_url,
        ))))
        .service(hyper_client::<Empty<Bytes>>());
    let req = || {
        Request::get(format!("http://{addr}/r"))
            .body(Empty::new())
            .unwrap()
    };
    let err = client.clone().oneshot(req()).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "the token endpoint answered 500 Internal Server Error"
    );
    assert!(!format!("{err:?}").contains("s&cret"));

    assert_eq!(seen.load(Ordering::SeqCst), 0);

    // Recovered: the next call gets a token.
    *grantor.fail.lock().unwrap() = None;
    assert_eq!(
        client.oneshot(req()).await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_static_bearer_token_is_attached_and_never_printed() {
    let (addr, _) = server(AuthLayer::new().static_tokens(tokens())).await;
    let credentials = Credentials::bearer(&SecretRef::value("billing-token-1")).unwrap();
    assert!(!format!("{credentials:?}").contains("billing-token"));
    let client = ServiceBuilder::new()
        .layer(AttachLayer::new(credentials))
        .service(hyper_client::<Empty<Bytes>>());
    let req = Request::get(format!("http://{addr}/who"))
        .body(Empty::new())
        .unwrap();
    let res = client.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "billing orders:read StaticToken");
    assert_eq!(Method::StaticToken, Method::StaticToken);
}

mod prop {
    use super::*;
    use proptest::prelude::*;
    use std::convert::Infallible;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// No byte string in `Authorization` panics or authenticates.
        #[test]
        fn no_authorization_bytes_panic_or_authenticate(bytes in proptest::collection::vec(any::<u8>(), 0..300), bearer_prefix in any::<bool>()) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let status = rt.block_on(async {
                let verifier = JwtVerifier::new(jwt_config(), None).unwrap();
                let svc = ServiceBuilder::new()
                    .layer(AuthLayer::new().static_tokens(tokens()).jwt(verifier))
                    .service(tower::service_fn(|_req: Request<()>| async {
                        Ok::<_, Infallible>(http::Response::new(String::from("in")))
                    }));
                let mut value = if bearer_prefix { b"Bearer ".to_vec() } else { Vec::new() };
                value.extend_from_slice(&bytes);
                let Ok(value) = HeaderValue::from_bytes(&value) else { return None };
                let req = Request::get("/").header(header::AUTHORIZATION, value).body(()).unwrap();
                Some(svc.oneshot(req).await.unwrap().status())
            });
            if let Some(status) = status {
                prop_assert_eq!(status, StatusCode::UNAUTHORIZED);
            }
        }
    }
}

mod signatures {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    use tower_shield::auth::{
        SignLayer, SignatureConfig, SignatureKey, SignatureLayer, SignatureVerifier, SigningKey,
    };

    const SECRET: &str = "a signing secret shared by two services";

    fn verifier(config: SignatureConfig) -> SignatureVerifier {
        SignatureVerifier::new(
            config.key(
                SignatureKey::new("key-1", "ledger", SecretRef::value(SECRET)).scopes(["post"]),
            ),
        )
        .unwrap()
    }

    /// A server that checks signatures (then tokens) and echoes the body
    /// it got, with the caller's name.
    async fn signed_server(layer: SignatureLayer) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let app = Router::new()
            .route(
                "/post",
                post(move |id: ServiceIdentity, body: Bytes| {
                    c.fetch_add(1, Ordering::SeqCst);
                    async move {
                        format!(
                            "{} {:?} {}",
                            id.name(),
                            id.method(),
                            String::from_utf8_lossy(&body)
                        )
                    }
                }),
            )
            .layer(
                ServiceBuilder::new()
                    // Bodies as they come from the caller: what the
                    // signature layer reads ahead.
                    .layer(tower_shield::body::CallerBodyLayer::new())
                    .layer(layer)
                    .layer(AuthLayer::new().static_tokens(tokens())),
            );
        (serve(app).await, calls)
    }

    fn b64std(data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(data)
    }

    /// An independent signer: the signature base written out by hand from
    /// RFC 9421, for the cases the crate's signer never makes.
    struct Manual {
        created: u64,
        nonce: String,
        covered: Vec<&'static str>,
        extra: Vec<(&'static str, &'static str)>,
        expires: Option<u64>,
    }

    impl Manual {
        fn new() -> Self {
            Self {
                created: now(),
                nonce: format!("n-{}", now_nanos()),
                covered: vec!["@method", "@target-uri", "content-digest"],
                extra: vec![],
                expires: None,
            }
        }

        fn request(&self, url: &str, body: &str) -> Request<String> {
            let digest = format!("sha-256=:{}:", b64std(&Sha256::digest(body.as_bytes())));
            let mut lines = Vec::new();
            for c in &self.covered {
                let value = match *c {
                    "@method" => "POST".to_owned(),
                    "@target-uri" => url.to_owned(),
                    "content-digest" => digest.clone(),
                    field => self
                        .extra
                        .iter()
                        .find(|(n, _)| *n == field)
                        .unwrap()
                        .1
                        .to_owned(),
                };
                lines.push(format!("\"{c}\": {value}"));
            }
            let mut list = format!(
                "({});created={};keyid=\"key-1\";nonce=\"{}\"",
                self.covered
                    .iter()
                    .map(|c| format!("\"{c}\""))
                    .collect::<Vec<_>>()
                    .join(" "),
                self.created,
                self.nonce
            );
            if let Some(expires) = self.expires {
                list.push_str(&format!(";expires={expires}"));
            }
            lines.push(format!("\"@signature-params\": {list}"));
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(lines.join("\n").as_bytes());
            let sig = b64std(&mac.finalize().into_bytes());
            let mut req = Request::post(url)
                .header("content-digest", digest)
                .header("signature-input", format!("sig1={list}"))
                .header("signature", format!("sig1=:{sig}:"));
            for (name, value) in &self.extra {
                req = req.header(*name, *value);
            }
            req.body(body.to_owned()).unwrap()
        }
    }

    fn now_nanos() -> u128 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    async fn send(req: Request<String>) -> (StatusCode, String) {
        let res = hyper_client::<String>().request(req).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn signed_requests_are_verified_and_their_body_passed_on_unchanged() {
        let (addr, calls) =
            signed_server(SignatureLayer::new(verifier(SignatureConfig::new())).or_next()).await;
        let url = format!("http://{addr}/post");
        // The crate's signer, through a client stack.
        let client = ServiceBuilder::new()
            .layer(SignLayer::new(
                SigningKey::new("key-1", &SecretRef::value(SECRET)).unwrap(),
            ))
            .service(hyper_client::<String>());
        let res = client
            .clone()
            .oneshot(
                Request::post(&url)
                    .body("{\"amount\": 12}".to_owned())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ledger Signature {\"amount\": 12}");

        // An independent signer, with a header covered as well.
        let mut manual = Manual::new();
        manual.covered.push("x-tenant");
        manual.extra.push(("x-tenant", "acme"));
        assert_eq!(
            send(manual.request(&url, "hello")).await,
            (StatusCode::OK, "ledger Signature hello".into())
        );

        // Unsigned requests go on to the token check beneath.
        let req = Request::post(&url)
            .header("authorization", "Bearer billing-token-1")
            .body(String::new())
            .unwrap();
        assert_eq!(send(req).await.0, StatusCode::OK);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn tampered_replayed_or_stale_signed_requests_are_refused() {
        let (addr, calls) = signed_server(SignatureLayer::new(verifier(
            SignatureConfig::new().window(Duration::from_secs(60)),
        )))
        .await;
        let url = format!("http://{addr}/post");

        // A replay: the same signed request twice.
        let manual = Manual::new();
        assert_eq!(send(manual.request(&url, "once")).await.0, StatusCode::OK);
        assert_eq!(
            send(manual.request(&url, "once")).await.0,
            StatusCode::UNAUTHORIZED
        );

        let mut cases: Vec<(&str, Request<String>)> = Vec::new();
        // `created` outside the window, either way.
        let mut old = Manual::new();
        old.created -= 120;
        cases.push(("created too old", old.request(&url, "x")));
        let mut future = Manual::new();
        future.created += 120;
        cases.push(("created in the future", future.request(&url, "x")));
        // The body changed after signing (the digest no longer matches).
        let req = Manual::new().request(&url, "pay 10");
        cases.push(("body changed", req.map(|_| "pay 99".to_owned())));
        // The digest changed with the body, the signature not.
        let mut req = Manual::new().request(&url, "pay 10");
        let digest = format!("sha-256=:{}:", b64std(&Sha256::digest(b"pay 99")));
        req.headers_mut()
            .insert("content-digest", digest.parse().unwrap());
        cases.push(("digest and body changed", req.map(|_| "pay 99".to_owned())));
        // A covered header changed after signing.
        let mut covered = Manual::new();
        covered.covered.push("x-tenant");
        covered.extra.push(("x-tenant", "acme"));
        let mut req = covered.request(&url, "x");
        req.headers_mut()
            .insert("x-tenant", HeaderValue::from_static("evil"));
        cases.push(("covered header changed", req));
        // Signed with another secret.
        let mut req = Manual::new().request(&url, "x");
        req.headers_mut().insert(
            "signature",
            HeaderValue::from_static("sig1=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:"),
        );
        cases.push(("wrong signature", req));
        // Not covering what is required.
        let mut partial = Manual::new();
        partial.covered = vec!["@method", "@target-uri"];
        cases.push(("content-digest not covered", partial.request(&url, "x")));
        // An unknown key, garbage, no signature.
        let mut req = Manual::new().request(&url, "x");
        let input = req.headers()["signature-input"]
            .to_str()
            .unwrap()
            .replace("key-1", "key-9");
        req.headers_mut()
            .insert("signature-input", input.parse().unwrap());
        cases.push(("unknown keyid", req));
        let mut req = Manual::new().request(&url, "x");
        req.headers_mut()
            .insert("signature-input", HeaderValue::from_static("sig1=(((\""));
        cases.push(("malformed Signature-Input", req));
        cases.push((
            "unsigned",
            Request::post(&url).body("x".to_owned()).unwrap(),
        ));
        for (what, req) in cases {
            assert_eq!(send(req).await.0, StatusCode::UNAUTHORIZED, "{what}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Two servers with one Redis nonce store: a request replayed to the
    /// other server is refused.
    #[tokio::test]
    async fn a_redis_nonce_store_refuses_a_replay_across_the_fleet() {
        let Some(url) = redis_url() else { return };
        let layer = || SignatureLayer::new(verifier(SignatureConfig::new().redis_nonces(&url)));
        let (one, _) = signed_server(layer()).await;
        let (two, _) = signed_server(layer()).await;
        let manual = Manual::new();
        let to = |addr: std::net::SocketAddr| format!("http://{addr}/post");
        // The target URI is part of the signature: sign for each host.
        let first = manual.request(&to(one), "x");
        assert_eq!(send(first).await.0, StatusCode::OK);
        // The same nonce and key, the other server.
        assert_eq!(
            send(manual.request(&to(two), "x")).await.0,
            StatusCode::UNAUTHORIZED
        );
    }

    /// The configured scheme of `@target-uri` (behind TLS termination), the
    /// body limit, and what the verifier shows of itself.
    #[tokio::test]
    async fn the_scheme_and_the_body_limit_are_configurable() {
        let v = verifier(SignatureConfig::new());
        assert_eq!(v.key_count(), 1);
        let two = SignatureConfig::new().key(SignatureKey::new(
            "key-2",
            "search",
            SecretRef::value("another secret"),
        ));
        assert_eq!(verifier(two).key_count(), 2);
        let shown = format!("{v:?}");
        assert!(shown.starts_with("SignatureVerifier"), "{shown}");
        assert!(!shown.contains(SECRET));

        let (plain, plain_calls) = signed_server(SignatureLayer::new(v)).await;
        let config = SignatureConfig::new().scheme("https").max_body_bytes(8);
        let (tls, tls_calls) = signed_server(SignatureLayer::new(verifier(config))).await;
        // Signed for https, sent over plain HTTP (as a TLS terminator does).
        let behind_tls = |addr: std::net::SocketAddr, body: &str| {
            let mut req = Manual::new().request(&format!("https://{addr}/post"), body);
            *req.uri_mut() = format!("http://{addr}/post").parse().unwrap();
            req
        };
        assert_eq!(send(behind_tls(tls, "12345678")).await.0, StatusCode::OK);
        assert_eq!(
            send(behind_tls(plain, "x")).await.0,
            StatusCode::UNAUTHORIZED
        );
        // An `expires` passed is refused; one to come is not.
        let url = format!("http://{plain}/post");
        let mut expired = Manual::new();
        expired.expires = Some(now() - 10);
        assert_eq!(
            send(expired.request(&url, "x")).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(plain_calls.load(Ordering::SeqCst), 0);
        let mut later = Manual::new();
        later.expires = Some(now() + 60);
        assert_eq!(send(later.request(&url, "x")).await.0, StatusCode::OK);
        assert_eq!(plain_calls.load(Ordering::SeqCst), 1);
        // One byte over the limit: refused, the handler not called.
        let (status, _) = send(behind_tls(tls, "123456789")).await;
        assert!(status.is_client_error(), "{status}");
        assert_eq!(tls_calls.load(Ordering::SeqCst), 1);
    }
}

/// Keys fetched with `Cache-Control: max-age` are fetched again once it
/// runs out (in the background, the keys at hand serving meanwhile); on
/// tokio's paused clock, with an in-process key server as the fetcher.
#[tokio::test(start_paused = true)]
async fn fetched_keys_are_refreshed_when_their_max_age_runs_out() {
    let (fetch, fetches) = counting_jwks_fetch("public, max-age=60");
    let verifier = JwtVerifier::new(
        JwtConfig::new()
            .audience("orders")
            .require_claim("sub")
            .jwks_url("http://127.0.0.1:9/jwks")
            .cached_tokens(0),
        Some(fetch),
    )
    .unwrap();
    let token = rs("rsa1.pem", "k1", &claims("a"));
    assert!(verifier.verify(&token).await.is_some());
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // Within max-age: no fetch.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(verifier.verify(&token).await.is_some());
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // Past it: this token is served by the keys at hand, and a refresh
    // starts behind it.
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(verifier.verify(&token).await.is_some());
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    assert_eq!(verifier.key_status().fetched_ago, Some(Duration::ZERO));
}

/// An in-process key server for the paused clock: a JWKS of `rsa1.pem`
/// as `k1` at `/jwks`, with this `Cache-Control`, counting its fetches.
fn counting_jwks_fetch(cache_control: &'static str) -> (Fetch, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let f = fetches.clone();
    let jwks = json!({"keys": [jwk("rsa1.pem", "k1")]}).to_string();
    let fetch = fetch_with(tower::service_fn(move |req: Request<String>| {
        f.fetch_add(1, Ordering::SeqCst);
        assert_eq!(req.uri().path(), "/jwks");
        let body = jwks.clone();
        async move {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .header(header::CACHE_CONTROL, cache_control)
                    .body(body)
                    .unwrap(),
            )
        }
    }));
    (fetch, fetches)
}

/// Unknown `kid`s send the verifier to the key server at most once per
/// `refresh_min_interval`, and again as soon as it has passed (paused
/// clock, in-process fetcher).
#[tokio::test(start_paused = true)]
async fn unknown_kids_fetch_again_once_the_interval_has_passed() {
    let (fetch, fetches) = counting_jwks_fetch("no-cache");
    let verifier = JwtVerifier::new(
        JwtConfig::new()
            .audience("orders")
            .jwks_url("http://127.0.0.1:9/jwks")
            .refresh_min_interval(Duration::from_secs(10)),
        Some(fetch),
    )
    .unwrap();
    let unknown = rs("rsa1.pem", "k9", &claims("a"));
    assert!(verifier.verify(&unknown).await.is_none());
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(verifier.verify(&unknown).await.is_none());
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(verifier.verify(&unknown).await.is_none());
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

/// `RequireLayer` naming services and a scope together; an open route of a
/// router that lets anonymous calls through.
#[tokio::test]
async fn a_route_may_name_its_callers_and_a_scope() {
    let calls = Arc::new(AtomicUsize::new(0));
    let (c1, c2) = (calls.clone(), calls.clone());
    let app = Router::new()
        .route(
            "/billing-only",
            get(move || {
                c1.fetch_add(1, Ordering::SeqCst);
                async { "billing" }
            })
            .route_layer(RequireLayer::services(["billing", "ledger"]).and_scope("orders:read")),
        )
        .route(
            "/open",
            get(move || {
                c2.fetch_add(1, Ordering::SeqCst);
                async { "open" }
            }),
        )
        .layer(AuthLayer::new().static_tokens(tokens()).allow_anonymous());
    let addr = serve(app).await;

    assert_eq!(
        call(addr, "/billing-only", &[bearer("billing-token-1")])
            .await
            .0,
        StatusCode::OK
    );
    // ops is not named (and lacks the scope).
    let (status, headers, _) = call(addr, "/billing-only", &[bearer("ops-token")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        headers[header::WWW_AUTHENTICATE],
        "Bearer error=\"insufficient_scope\", scope=\"orders:read\""
    );
    assert_eq!(
        call(addr, "/billing-only", &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Anonymous calls reach a route that asks for nothing.
    let (status, _, body) = call(addr, "/open", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "open"));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_layers_pass_readiness_through() {
    use tower::Layer;
    let mut auth = AuthLayer::new().static_tokens(tokens()).layer(NeverReady);
    assert_eq!(auth.ready().await.err().unwrap().to_string(), "not ready");
    let mut require = RequireLayer::scope("admin").layer(NeverReady);
    assert_eq!(
        require.ready().await.err().unwrap().to_string(),
        "not ready"
    );
}

/// A token endpoint that never answers: the call fails after the grant's
/// timeout (5 s by default) with a clear error, and the service is never
/// called (paused clock, an in-process endpoint).
#[tokio::test(start_paused = true)]
async fn a_silent_token_endpoint_is_a_clear_error_after_its_timeout() {
    let fetch = fetch_with(tower::service_fn(|_: Request<String>| async {
        std::future::pending::<()>().await;
        Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
    }));
    let grant = ClientCredentials::new(
        "http://127.0.0.1:9/token",
        "svc-a",
        &SecretRef::value("s&cret"),
        fetch,
    )
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let client = ServiceBuilder::new()
        .layer(AttachLayer::new(Credentials::client_credentials(grant)))
        .service(tower::service_fn(move |_: Request<String>| {
            c.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(())))
        }));
    let started = tokio::time::Instant::now();
    let err = client
        .oneshot(Request::new(String::new()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "the token endpoint did not answer in time");
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}
