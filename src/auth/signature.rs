//! Signed requests: RFC 9421 HTTP Message Signatures with HMAC-SHA256,
//! over at least `@method`, `@target-uri` and `content-digest` (RFC 9530).

use super::{Denied, Method, SecretError, SecretRef, ServiceIdentity};
use crate::body::{CallerBody, ReplayBody};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use secrecy::{ExposeSecret, SecretString};
use sfv::{BareItem, FieldType, InnerList, Item, ListEntry, Parameters};
use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tower_layer::Layer;
use tower_service::Service;

/// `Signature-Input` (RFC 9421).
pub const SIGNATURE_INPUT: HeaderName = HeaderName::from_static("signature-input");
/// `Signature` (RFC 9421).
pub const SIGNATURE: HeaderName = HeaderName::from_static("signature");
/// `Content-Digest` (RFC 9530).
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("content-digest");

/// The components a signature must cover, at least.
const REQUIRED: [&str; 3] = ["@method", "@target-uri", "content-digest"];

type HmacSha256 = Hmac<Sha256>;

/// A shared key: its `keyid`, the service it identifies (with scopes),
/// and where its secret is.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
pub struct SignatureKey {
    keyid: String,
    service: String,
    #[cfg_attr(feature = "config", serde(default))]
    scopes: Vec<String>,
    #[cfg_attr(feature = "config", serde(flatten))]
    secret: SecretRef,
}

impl SignatureKey {
    /// The key `keyid`, whose signatures identify `service`.
    pub fn new(keyid: impl Into<String>, service: impl Into<String>, secret: SecretRef) -> Self {
        Self {
            keyid: keyid.into(),
            service: service.into(),
            scopes: Vec::new(),
            secret,
        }
    }

    /// The scopes the key grants.
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

/// The settings of a [`SignatureVerifier`]: the `[auth.signature]`
/// section.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(default, deny_unknown_fields))]
pub struct SignatureConfig {
    keys: Vec<SignatureKey>,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    window: Duration,
    max_body_bytes: usize,
    scheme: String,
    max_nonces: u64,
    nonce_store: NonceStoreKind,
    redis_url: Option<String>,
    // The Redis nonce store's settings: read only with the `redis` feature.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    namespace: String,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    store_timeout: Duration,
}

/// Where seen nonces are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(rename_all = "lowercase"))]
pub enum NonceStoreKind {
    /// In this process.
    #[default]
    Memory,
    /// In Redis, shared by a fleet.
    Redis,
}

impl Default for SignatureConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            window: Duration::from_secs(300),
            max_body_bytes: 1024 * 1024,
            scheme: "http".to_owned(),
            max_nonces: 100_000,
            nonce_store: NonceStoreKind::Memory,
            redis_url: None,
            namespace: "shield:nonce".to_owned(),
            store_timeout: Duration::from_millis(250),
        }
    }
}

impl SignatureConfig {
    /// The defaults: a signature's `created` within 5 minutes of now, bodies
    /// of at most 1 MiB, `http` as the scheme of `@target-uri` for requests
    /// in origin form, 100 000 nonces remembered in memory.
    pub fn new() -> Self {
        Self::default()
    }

    /// A key.
    pub fn key(mut self, key: SignatureKey) -> Self {
        self.keys.push(key);
        self
    }

    /// How far `created` may be from now, either way.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The largest body whose digest is checked (a larger one is refused).
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// The scheme of `@target-uri` when the request line has none (`http`
    /// or, behind TLS termination, `https`).
    pub fn scheme(mut self, scheme: impl Into<String>) -> Self {
        self.scheme = scheme.into();
        self
    }

    /// Keeps seen nonces in the Redis at `url`, for a fleet.
    pub fn redis_nonces(mut self, url: impl Into<String>) -> Self {
        self.nonce_store = NonceStoreKind::Redis;
        self.redis_url = Some(url.into());
        self
    }
}

/// A seen-nonce store: memory (bounded) or Redis (`SET NX PX`).
enum Nonces {
    Memory(quick_cache::sync::Cache<String, ()>),
    #[cfg(feature = "redis")]
    Redis {
        conn: redis::aio::ConnectionManager,
        namespace: Arc<str>,
        timeout: Duration,
    },
}

impl Nonces {
    /// Records `nonce`; `false` if it was seen within the window (or the
    /// store cannot say, which refuses the request).
    async fn first_use(&self, nonce: String, window: Duration) -> bool {
        match self {
            Self::Memory(seen) => {
                // Atomic per key: of two requests with one nonce, one
                // inserts it and the other finds it. (A nonce evicted from
                // a full store is forgotten; `created` still bounds a
                // replay to the window.)
                let mut first = false;
                let _ = seen.get_or_insert_with(&nonce, || {
                    first = true;
                    Ok::<_, ()>(())
                });
                let _ = window;
                first
            }
            #[cfg(feature = "redis")]
            Self::Redis {
                conn,
                namespace,
                timeout,
            } => {
                let mut conn = conn.clone();
                let key = format!("{namespace}:{nonce}");
                let ms = (window.as_millis() as u64).saturating_mul(2).max(1);
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(1).arg("NX").arg("PX").arg(ms);
                let set = cmd.query_async::<Option<String>>(&mut conn);
                match tokio::time::timeout(*timeout, set).await {
                    Ok(Ok(reply)) => reply.is_some(),
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, "nonce store failed; refusing the signed request");
                        false
                    }
                    Err(_) => {
                        tracing::warn!("nonce store did not answer; refusing the signed request");
                        false
                    }
                }
            }
        }
    }
}

struct VerifyingKey {
    secret: SecretString,
    identity: ServiceIdentity,
}

struct Inner {
    keys: HashMap<String, VerifyingKey>,
    window: Duration,
    max_body_bytes: usize,
    scheme: String,
    nonces: Nonces,
}

/// Verifies RFC 9421 signatures made with HMAC-SHA256.
///
/// A request is accepted when one of its signatures (`Signature-Input` and
/// `Signature`, RFC 8941 dictionaries, parsed by `sfv`):
///
/// - names a known `keyid`, and `alg` is absent or `hmac-sha256`;
/// - covers at least `@method`, `@target-uri` and `content-digest`, and
///   has `created` within the window and a `nonce`;
/// - matches the HMAC of the signature base (RFC 9421, section 2.5), in
///   constant time;
/// - and its `Content-Digest` (`sha-256`) matches the body, which is read
///   whole (within a limit) and passed on unchanged;
///
/// and its nonce was not seen before. Covered components: `@method`,
/// `@target-uri`, `@authority`, `@scheme`, `@path`, `@query`, and header
/// fields.
#[derive(Clone)]
pub struct SignatureVerifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignatureVerifier")
            .field("keys", &self.inner.keys.len())
            .field("window", &self.inner.window)
            .finish_non_exhaustive()
    }
}

impl SignatureVerifier {
    /// Reads the keys' secrets now. A Redis nonce store needs a tokio
    /// runtime (nothing is connected until the first check).
    ///
    /// # Errors
    ///
    /// A secret that cannot be read (named), or a Redis store that cannot
    /// be built.
    pub fn new(config: SignatureConfig) -> Result<Self, SecretError> {
        let mut keys = HashMap::new();
        for key in &config.keys {
            keys.insert(
                key.keyid.clone(),
                VerifyingKey {
                    secret: key.secret.read()?,
                    identity: ServiceIdentity::new(
                        &key.service,
                        key.scopes.iter().map(String::as_str),
                        Method::Signature,
                    ),
                },
            );
        }
        let nonces = match config.nonce_store {
            NonceStoreKind::Memory => Nonces::Memory(quick_cache::sync::Cache::new(
                config.max_nonces.max(1) as usize,
            )),
            #[cfg(feature = "redis")]
            NonceStoreKind::Redis => {
                let url = config.redis_url.clone().unwrap_or_default();
                let fail = |why: String| SecretError::other("the nonce store", why);
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(fail("needs a tokio runtime".into()));
                }
                let client = redis::Client::open(url.as_str()).map_err(|e| fail(e.to_string()))?;
                let cfg = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.store_timeout))
                    .set_response_timeout(Some(config.store_timeout))
                    .set_number_of_retries(1);
                let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, cfg)
                    .map_err(|e| fail(e.to_string()))?;
                Nonces::Redis {
                    conn,
                    namespace: config.namespace.as_str().into(),
                    timeout: config.store_timeout,
                }
            }
            #[cfg(not(feature = "redis"))]
            NonceStoreKind::Redis => {
                return Err(SecretError::other(
                    "the nonce store",
                    "needs the crate's `redis` feature".into(),
                ))
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                window: config.window,
                max_body_bytes: config.max_body_bytes,
                scheme: config.scheme,
                nonces,
            }),
        })
    }

    /// How many keys are loaded.
    pub fn key_count(&self) -> usize {
        self.inner.keys.len()
    }

    /// Verifies a request whose body (if a digest is covered) is `body`.
    async fn verify(
        &self,
        parts: &http::request::Parts,
        body: &Bytes,
    ) -> Result<ServiceIdentity, &'static str> {
        let inner = &*self.inner;
        let (label, list, keyid) = pick(&parts.headers, &inner.keys)?;
        let key = &inner.keys[&keyid];
        let covered: Vec<&str> = list
            .items
            .iter()
            .map(|item| match &item.bare_item {
                BareItem::String(s) if item.params.is_empty() => Ok(s.as_str()),
                _ => Err("a covered component is not a plain string"),
            })
            .collect::<Result<_, _>>()?;
        if REQUIRED.iter().any(|r| !covered.contains(r)) {
            return Err("the signature does not cover what is required");
        }
        let created = list
            .params
            .get("created")
            .and_then(BareItem::as_integer)
            .map(i64::from)
            .ok_or("the signature has no created")?;
        let now = now_secs() as i64;
        if (now - created).unsigned_abs() > inner.window.as_secs() {
            return Err("the signature's created is outside the window");
        }
        if let Some(expires) = list.params.get("expires").and_then(BareItem::as_integer) {
            if i64::from(expires) < now {
                return Err("the signature has expired");
            }
        }
        let nonce = list
            .params
            .get("nonce")
            .and_then(BareItem::as_string)
            .map(|s| s.as_str().to_owned())
            .ok_or("the signature has no nonce")?;
        if covered.contains(&"content-digest") {
            check_digest(&parts.headers, body)?;
        }
        let base = signature_base(
            &parts.method,
            &target_uri(&parts.uri, &parts.headers, &inner.scheme),
            &parts.headers,
            &covered,
            &list,
        )?;
        let signature = signature_of(&parts.headers, &label)?;
        let mut mac = HmacSha256::new_from_slice(key.secret.expose_secret().as_bytes())
            .map_err(|_| "bad key")?;
        mac.update(base.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| "the signature does not match")?;
        // Only a valid signature spends its nonce.
        if !inner
            .nonces
            .first_use(format!("{keyid}:{nonce}"), inner.window)
            .await
        {
            return Err("the nonce was seen before");
        }
        Ok(key.identity.clone())
    }
}

/// The first signature whose `keyid` is known: its label, covered list,
/// and key ID.
fn pick(
    headers: &HeaderMap,
    keys: &HashMap<String, VerifyingKey>,
) -> Result<(String, InnerList, String), &'static str> {
    let input = one(headers, &SIGNATURE_INPUT)?;
    let dict: sfv::Dictionary = sfv::Parser::new(input)
        .parse()
        .map_err(|_| "Signature-Input is not a dictionary")?;
    for (label, entry) in dict {
        let ListEntry::InnerList(list) = entry else {
            continue;
        };
        let Some(keyid) = list.params.get("keyid").and_then(BareItem::as_string) else {
            continue;
        };
        let alg_ok = list
            .params
            .get("alg")
            .is_none_or(|alg| alg.as_string().is_some_and(|a| a.as_str() == "hmac-sha256"));
        if alg_ok && keys.contains_key(keyid.as_str()) {
            let keyid = keyid.as_str().to_owned();
            return Ok((label.as_str().to_owned(), list, keyid));
        }
    }
    Err("no signature with a known keyid")
}

fn one<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<&'a [u8], &'static str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Ok(value.as_bytes()),
        (None, _) => Err("a signature header is missing"),
        _ => Err("a signature header is repeated"),
    }
}

fn signature_of(headers: &HeaderMap, label: &str) -> Result<Vec<u8>, &'static str> {
    let dict: sfv::Dictionary = sfv::Parser::new(one(headers, &SIGNATURE)?)
        .parse()
        .map_err(|_| "Signature is not a dictionary")?;
    match dict.get(label) {
        Some(ListEntry::Item(item)) => item
            .bare_item
            .as_byte_sequence()
            .map(<[u8]>::to_vec)
            .ok_or("the signature is not a byte sequence"),
        _ => Err("no signature for the label"),
    }
}

fn check_digest(headers: &HeaderMap, body: &Bytes) -> Result<(), &'static str> {
    let dict: sfv::Dictionary = sfv::Parser::new(one(headers, &CONTENT_DIGEST)?)
        .parse()
        .map_err(|_| "Content-Digest is not a dictionary")?;
    let Some(ListEntry::Item(item)) = dict.get("sha-256") else {
        return Err("Content-Digest has no sha-256");
    };
    let expected = item
        .bare_item
        .as_byte_sequence()
        .ok_or("Content-Digest's sha-256 is not a byte sequence")?;
    let actual = Sha256::digest(body);
    if subtle::ConstantTimeEq::ct_eq(actual.as_slice(), expected).into() {
        Ok(())
    } else {
        Err("the body does not match its digest")
    }
}

/// `@target-uri`: the request's absolute URI, or `scheme://Host/path?query`
/// for a request in origin form.
fn target_uri(uri: &http::Uri, headers: &HeaderMap, scheme: &str) -> String {
    if uri.scheme().is_some() && uri.authority().is_some() {
        return uri.to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{scheme}://{host}{path}")
}

/// The signature base of RFC 9421, section 2.5.
fn signature_base(
    method: &http::Method,
    target: &str,
    headers: &HeaderMap,
    covered: &[&str],
    list: &InnerList,
) -> Result<String, &'static str> {
    let uri: http::Uri = target.parse().map_err(|_| "bad target URI")?;
    let mut base = String::new();
    for name in covered {
        let value = match *name {
            "@method" => method.as_str().to_owned(),
            "@target-uri" => target.to_owned(),
            "@authority" => uri
                .authority()
                .map(|a| a.as_str().to_ascii_lowercase())
                .ok_or("no authority")?,
            "@scheme" => uri.scheme_str().unwrap_or("http").to_ascii_lowercase(),
            "@path" => uri.path().to_owned(),
            "@query" => format!("?{}", uri.query().unwrap_or("")),
            derived if derived.starts_with('@') => return Err("an unsupported derived component"),
            field => {
                if field.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err("a field name is not lowercase");
                }
                let values: Vec<&str> = headers
                    .get_all(field)
                    .iter()
                    .map(|v| v.to_str().map(str::trim))
                    .collect::<Result<_, _>>()
                    .map_err(|_| "a covered field is not text")?;
                if values.is_empty() {
                    return Err("a covered field is missing");
                }
                values.join(", ")
            }
        };
        if value.contains('\n') {
            return Err("a component holds a newline");
        }
        base.push_str(&format!("\"{name}\": {value}\n"));
    }
    let params = sfv::List::from(vec![ListEntry::InnerList(list.clone())])
        .serialize()
        .ok_or("empty signature parameters")?;
    base.push_str(&format!("\"@signature-params\": {params}"));
    Ok(base)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies the signatures of signed requests; see [`SignatureVerifier`].
///
/// A signed request (one with `Signature-Input`) is accepted or refused
/// here with 401. An unsigned one is refused too, unless
/// [`or_next`](Self::or_next) lets it go on to an [`AuthLayer`](super::AuthLayer)
/// beneath, which then decides (it lets a request this layer verified
/// through).
///
/// Bodies are [`CallerBody`]s: put a
/// [`CallerBodyLayer`](crate::body::CallerBodyLayer) outside (a
/// `ServerStack` and the sidecar have one), so that a body that fails while
/// it is read for its digest is the caller's fault (400, or 408 past its
/// deadline). The body read for the digest is given out again, whole, to
/// the service beneath.
#[derive(Debug, Clone)]
pub struct SignatureLayer {
    verifier: SignatureVerifier,
    or_next: bool,
    realm: Option<Arc<str>>,
}

impl SignatureLayer {
    /// Verifies with `verifier`.
    pub fn new(verifier: SignatureVerifier) -> Self {
        Self {
            verifier,
            or_next: false,
            realm: None,
        }
    }

    /// Lets unsigned requests go on, for a verifier beneath to decide.
    pub fn or_next(mut self) -> Self {
        self.or_next = true;
        self
    }

    /// Names a realm in the challenge.
    pub fn realm(mut self, realm: &str) -> Self {
        self.realm = super::clean_realm(realm);
        self
    }

    /// The verifier.
    pub fn verifier(&self) -> &SignatureVerifier {
        &self.verifier
    }
}

impl<S> Layer<S> for SignatureLayer {
    type Service = VerifySignature<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifySignature {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`SignatureLayer`].
#[derive(Debug, Clone)]
pub struct VerifySignature<S> {
    inner: S,
    layer: SignatureLayer,
}

impl<S> VerifySignature<S> {
    define_inner_service_accessors!();
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// Response future of [`VerifySignature`].
    pub struct SignatureFuture<F, T, E> {
        #[pin]
        kind: SigKind<F, T, E>,
    }
}

pin_project! {
    #[project = SigKindProj]
    enum SigKind<F, T, E> {
        Called { #[pin] future: F },
        Checking { future: BoxFuture<Result<T, E>> },
    }
}

impl<F, T, E> fmt::Debug for SignatureFuture<F, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignatureFuture")
    }
}

impl<F: Future<Output = Result<T, E>>, T, E> Future for SignatureFuture<F, T, E> {
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            SigKindProj::Called { future } => future.poll(cx),
            SigKindProj::Checking { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, B, ResB> Service<Request<CallerBody<B>>> for VerifySignature<S>
where
    S: Service<Request<CallerBody<B>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<crate::BoxError>,
    ResB: From<String> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = SignatureFuture<S::Future, Response<ResB>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<CallerBody<B>>) -> Self::Future {
        let signed = req.headers().contains_key(SIGNATURE_INPUT);
        if !signed && self.layer.or_next {
            return SignatureFuture {
                kind: SigKind::Called {
                    future: self.inner.call(req),
                },
            };
        }
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        SignatureFuture {
            kind: SigKind::Checking {
                future: Box::pin(async move {
                    let realm = layer.realm.as_deref();
                    if !signed {
                        return Ok(Denied::missing(realm).respond());
                    }
                    let (mut parts, mut body) = req.into_parts();
                    let limit = layer.verifier.inner.max_body_bytes;
                    let bytes = match body.read_ahead(limit).await {
                        Ok(Some(bytes)) => bytes,
                        Ok(None) => {
                            tracing::debug!("signed body over the limit");
                            return Ok(Denied::invalid(realm).respond());
                        }
                        // The caller's body failed: its own answer (400, 408).
                        Err(err) => return Ok(crate::error::error_response(&*err)),
                    };
                    match layer.verifier.verify(&parts, &bytes).await {
                        Ok(id) => {
                            super::identify_parts(&mut parts.extensions, id);
                            // The body goes on whole, as it came.
                            inner.call(Request::from_parts(parts, body)).await
                        }
                        Err(why) => {
                            tracing::debug!(reason = why, "signed request refused");
                            Ok(Denied::invalid(realm).respond())
                        }
                    }
                }),
            },
        }
    }
}

/// A body whose bytes are at hand, so that a request can be signed with
/// its digest.
pub trait InMemory {
    /// The whole body, or `None` when it is streaming.
    fn in_memory(&self) -> Option<Bytes>;
}

impl<B> InMemory for ReplayBody<B> {
    fn in_memory(&self) -> Option<Bytes> {
        self.buffered().map(|b| b.to_bytes())
    }
}

impl InMemory for String {
    fn in_memory(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(self.as_bytes()))
    }
}

impl InMemory for Bytes {
    fn in_memory(&self) -> Option<Bytes> {
        Some(self.clone())
    }
}

impl InMemory for () {
    fn in_memory(&self) -> Option<Bytes> {
        Some(Bytes::new())
    }
}

impl<D> InMemory for http_body_util::Empty<D> {
    fn in_memory(&self) -> Option<Bytes> {
        Some(Bytes::new())
    }
}

/// A signing key for [`SignLayer`].
#[derive(Clone)]
pub struct SigningKey {
    keyid: String,
    secret: SecretString,
}

impl SigningKey {
    /// The key `keyid`, its secret read now.
    ///
    /// # Errors
    ///
    /// The secret cannot be read.
    pub fn new(keyid: impl Into<String>, secret: &SecretRef) -> Result<Self, SecretError> {
        Ok(Self {
            keyid: keyid.into(),
            secret: secret.read()?,
        })
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("keyid", &self.keyid)
            .finish_non_exhaustive()
    }
}

/// Signs each request (RFC 9421, HMAC-SHA256): adds `Content-Digest`
/// (SHA-256 of the body), and `Signature-Input` and `Signature` labelled
/// `sig1`, covering `@method`, `@target-uri` and `content-digest`, with
/// `created`, `keyid`, `alg="hmac-sha256"` and a fresh `nonce`.
///
/// The request's URI must be absolute (as a client's is), and its body in
/// memory ([`InMemory`]): a streaming body fails the call.
#[derive(Debug, Clone)]
pub struct SignLayer {
    key: Arc<SigningKey>,
}

impl SignLayer {
    /// Signs with `key`.
    pub fn new(key: SigningKey) -> Self {
        Self { key: Arc::new(key) }
    }
}

impl<S> Layer<S> for SignLayer {
    type Service = Sign<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Sign {
            inner,
            key: self.key.clone(),
        }
    }
}

/// The service of [`SignLayer`].
#[derive(Debug, Clone)]
pub struct Sign<S> {
    inner: S,
    key: Arc<SigningKey>,
}

impl<S> Sign<S> {
    define_inner_service_accessors!();
}

/// A request could not be signed.
#[derive(Debug)]
pub struct SignError(&'static str);

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for SignError {}

/// Signs `req` with `key`: the headers RFC 9421 and RFC 9530 call for.
///
/// # Errors
///
/// The body is not in memory, or the URI is not absolute.
pub fn sign_request<B: InMemory>(req: &mut Request<B>, key: &SigningKey) -> Result<(), SignError> {
    let body = req
        .body()
        .in_memory()
        .ok_or(SignError("a streaming body cannot be signed"))?;
    if req.uri().scheme().is_none() || req.uri().authority().is_none() {
        return Err(SignError(
            "only a request with an absolute URI can be signed",
        ));
    }
    let digest = format!(
        "sha-256=:{}:",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            Sha256::digest(&body)
        )
    );
    let headers = req.headers_mut();
    headers.insert(
        CONTENT_DIGEST,
        HeaderValue::try_from(digest).expect("base64 is a valid value"),
    );
    let mut params = Parameters::new();
    let key_of = |k: &str| sfv::Key::from_string(k.to_owned()).expect("valid key");
    let text = |s: &str| -> Result<BareItem, SignError> {
        sfv::String::from_string(s.to_owned())
            .map(BareItem::String)
            .map_err(|_| SignError("a signature parameter is not printable ASCII"))
    };
    let created = sfv::Integer::try_from(now_secs() as i64).map_err(|_| SignError("bad clock"))?;
    params.insert(key_of("created"), BareItem::Integer(created));
    params.insert(key_of("keyid"), text(&key.keyid)?);
    params.insert(key_of("alg"), text("hmac-sha256")?);
    params.insert(
        key_of("nonce"),
        text(&format!("{:032x}", fastrand::u128(..)))?,
    );
    let items = REQUIRED
        .iter()
        .map(|c| text(c).map(Item::new))
        .collect::<Result<Vec<_>, _>>()?;
    let list = InnerList::with_params(items, params);
    let target = req.uri().to_string();
    let base = signature_base(req.method(), &target, req.headers(), &REQUIRED, &list)
        .map_err(SignError)?;
    let mut mac = HmacSha256::new_from_slice(key.secret.expose_secret().as_bytes())
        .map_err(|_| SignError("bad key"))?;
    mac.update(base.as_bytes());
    let signature = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        mac.finalize().into_bytes(),
    );
    let input = sfv::List::from(vec![ListEntry::InnerList(list)])
        .serialize()
        .ok_or(SignError("empty signature parameters"))?;
    let headers = req.headers_mut();
    headers.insert(
        SIGNATURE_INPUT,
        HeaderValue::try_from(format!("sig1={input}")).map_err(|_| SignError("bad input"))?,
    );
    headers.insert(
        SIGNATURE,
        HeaderValue::try_from(format!("sig1=:{signature}:")).expect("base64 is a valid value"),
    );
    Ok(())
}

pin_project! {
    /// Response future of [`Sign`].
    pub struct SignFuture<F> {
        #[pin]
        future: Option<F>,
        error: Option<SignError>,
    }
}

impl<F> fmt::Debug for SignFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SignFuture")
    }
}

impl<F, T, E> Future for SignFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<crate::BoxError>,
{
    type Output = Result<T, crate::BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.future.as_pin_mut() {
            Some(future) => future.poll(cx).map_err(Into::into),
            None => Poll::Ready(Err(this
                .error
                .take()
                .expect("polled after completion")
                .into())),
        }
    }
}

impl<S, B> Service<Request<B>> for Sign<S>
where
    S: Service<Request<B>>,
    S::Error: Into<crate::BoxError>,
    B: InMemory,
{
    type Response = S::Response;
    type Error = crate::BoxError;
    type Future = SignFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match sign_request(&mut req, &self.key) {
            Ok(()) => SignFuture {
                future: Some(self.inner.call(req)),
                error: None,
            },
            Err(err) => SignFuture {
                future: None,
                error: Some(err),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9421, appendix B.2.5: HMAC-SHA256 over `date`, `@authority` and
    /// `content-type`, with the RFC's shared secret: the same base, the
    /// same signature.
    #[test]
    fn the_rfc_9421_hmac_example_is_reproduced() {
        let secret = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==",
        )
        .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "date",
            HeaderValue::from_static("Tue, 20 Apr 2021 02:07:55 GMT"),
        );
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let input = "sig-b25=(\"date\" \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\"";
        let dict: sfv::Dictionary = sfv::Parser::new(input).parse().unwrap();
        let Some(ListEntry::InnerList(list)) = dict.get("sig-b25") else {
            panic!("an inner list")
        };
        let base = signature_base(
            &http::Method::POST,
            "https://example.com/foo?param=Value&Pet=dog",
            &headers,
            &["date", "@authority", "content-type"],
            list,
        )
        .unwrap();
        assert_eq!(
            base,
            "\"date\": Tue, 20 Apr 2021 02:07:55 GMT\n\"@authority\": example.com\n\
             \"content-type\": application/json\n\"@signature-params\": (\"date\" \
             \"@authority\" \"content-type\");created=1618884473;keyid=\"test-shared-secret\""
        );
        let mut mac = HmacSha256::new_from_slice(&secret).unwrap();
        mac.update(base.as_bytes());
        let signature = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            mac.finalize().into_bytes(),
        );
        assert_eq!(signature, "pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=");
    }

    #[test]
    fn derived_components_follow_the_rfc() {
        let headers = HeaderMap::new();
        let list = InnerList::default();
        let base = |c: &str| {
            signature_base(
                &http::Method::GET,
                "HTTP://Example.COM:8080/a/b?x=1",
                &headers,
                &[c],
                &list,
            )
        };
        assert!(base("@authority")
            .unwrap()
            .starts_with("\"@authority\": example.com:8080\n"));
        assert!(base("@scheme").unwrap().starts_with("\"@scheme\": http\n"));
        assert!(base("@path").unwrap().starts_with("\"@path\": /a/b\n"));
        assert!(base("@query").unwrap().starts_with("\"@query\": ?x=1\n"));
        assert!(base("@method").unwrap().starts_with("\"@method\": GET\n"));
        assert_eq!(base("@status"), Err("an unsupported derived component"));
        assert_eq!(base("x-missing"), Err("a covered field is missing"));
        assert_eq!(base("X-Upper"), Err("a field name is not lowercase"));
        let uri: http::Uri = "/p?q=1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9"));
        assert_eq!(target_uri(&uri, &h, "https"), "https://127.0.0.1:9/p?q=1");
        let abs: http::Uri = "http://a.test/x".parse().unwrap();
        assert_eq!(target_uri(&abs, &h, "https"), "http://a.test/x");
    }
}
