//! JWT service tokens on `jsonwebtoken`: keys from configuration, a JWKS
//! document, a JWKS URL or an OpenID Connect issuer; verified tokens cached
//! until they expire.

use super::{Fetch, Method, SecretError, SecretRef, ServiceIdentity};
use bytes::Bytes;
use jsonwebtoken::{
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm},
    Algorithm, DecodingKey, Validation,
};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use std::{
    fmt,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tower::ServiceExt;

/// The longest token accepted, by default.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// One key from configuration: its algorithm, an optional `kid`, and where
/// its material is (an HMAC secret, or a public key in PEM for the others).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
pub struct JwtKey {
    #[cfg_attr(feature = "config", serde(default))]
    kid: Option<String>,
    alg: String,
    #[cfg_attr(feature = "config", serde(flatten))]
    material: SecretRef,
}

impl JwtKey {
    /// A key for `alg` (`HS256`, `RS256`, `ES256`, `EdDSA`, ...), whose
    /// material is in `material`: the shared secret for `HS*`, else the
    /// public key in PEM.
    pub fn new(alg: impl Into<String>, material: SecretRef) -> Self {
        Self {
            kid: None,
            alg: alg.into(),
            material,
        }
    }

    /// The `kid` tokens signed with this key name.
    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    fn load(&self) -> Result<Key, KeyError> {
        let alg: Algorithm = self
            .alg
            .parse()
            .map_err(|_| KeyError(format!("unknown algorithm {:?}", self.alg)))?;
        let secret = self.material.read().map_err(|e| KeyError(e.to_string()))?;
        let bytes = secret.expose_secret().as_bytes();
        let bad = |_| KeyError(format!("the {alg:?} key is not valid"));
        let key = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                DecodingKey::from_secret(bytes).map_err(bad)?
            }
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(bytes).map_err(bad)?,
            Algorithm::EdDSA => DecodingKey::from_ed_pem(bytes).map_err(bad)?,
            _ => DecodingKey::from_rsa_pem(bytes).map_err(bad)?,
        };
        Ok(Key {
            kid: self.kid.clone(),
            alg,
            key,
        })
    }
}

/// The settings of a [`JwtVerifier`]: the `[auth.jwt]` section.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(default, deny_unknown_fields))]
pub struct JwtConfig {
    issuer: Vec<String>,
    audience: Vec<String>,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    leeway: Duration,
    required_claims: Vec<String>,
    service_claim: String,
    scope_claim: String,
    max_token_bytes: usize,
    cached_tokens: u64,
    keys: Vec<JwtKey>,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    oidc_issuer: Option<String>,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    refresh_min_interval: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuer: Vec::new(),
            audience: Vec::new(),
            leeway: Duration::from_secs(30),
            required_claims: Vec::new(),
            service_claim: "sub".to_owned(),
            scope_claim: "scope".to_owned(),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            cached_tokens: 10_000,
            keys: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            oidc_issuer: None,
            refresh_min_interval: Duration::from_secs(30),
        }
    }
}

impl JwtConfig {
    /// The defaults: no issuer or audience check, 30 s of leeway on `exp`
    /// and `nbf`, the service named by `sub`, scopes in `scope`, tokens of
    /// at most 8 KiB, 10 000 verified tokens cached, unknown `kid`s
    /// refetched at most every 30 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts tokens whose `iss` is one of these (and requires `iss`).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer.push(issuer.into());
        self
    }

    /// Accepts tokens whose `aud` names this (and requires `aud`).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience.push(audience.into());
        self
    }

    /// The clock skew allowed on `exp` and `nbf`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Requires this claim to be present.
    pub fn require_claim(mut self, claim: impl Into<String>) -> Self {
        self.required_claims.push(claim.into());
        self
    }

    /// The claim that names the calling service (default `sub`).
    pub fn service_claim(mut self, claim: impl Into<String>) -> Self {
        self.service_claim = claim.into();
        self
    }

    /// The claim that holds the scopes (default `scope`): a space-separated
    /// string or an array of strings.
    pub fn scope_claim(mut self, claim: impl Into<String>) -> Self {
        self.scope_claim = claim.into();
        self
    }

    /// The longest token accepted, in bytes.
    pub fn max_token_bytes(mut self, max: usize) -> Self {
        self.max_token_bytes = max;
        self
    }

    /// How many verified tokens are remembered (0: none).
    pub fn cached_tokens(mut self, count: u64) -> Self {
        self.cached_tokens = count;
        self
    }

    /// A key from configuration.
    pub fn key(mut self, key: JwtKey) -> Self {
        self.keys.push(key);
        self
    }

    /// A JWKS document on disk.
    pub fn jwks_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.jwks_file = Some(path.into());
        self
    }

    /// A JWKS document at this URL, fetched with the [`Fetch`] given to
    /// [`JwtVerifier::new`].
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// An OpenID Connect issuer: its discovery document
    /// (`/.well-known/openid-configuration`) names the JWKS URL.
    pub fn oidc_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.oidc_issuer = Some(issuer.into());
        self
    }

    /// The least time between two fetches for unknown `kid`s, so that a
    /// flood of made-up `kid`s cannot hammer the key server.
    pub fn refresh_min_interval(mut self, interval: Duration) -> Self {
        self.refresh_min_interval = interval;
        self
    }

    /// Whether keys come from a URL (a JWKS URL or an issuer), which needs
    /// a [`Fetch`].
    pub fn is_remote(&self) -> bool {
        self.jwks_url.is_some() || self.oidc_issuer.is_some()
    }
}

/// A key could not be loaded, or a JWKS could not be fetched or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(String);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

impl From<SecretError> for KeyError {
    fn from(err: SecretError) -> Self {
        Self(err.to_string())
    }
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    /// Keys from configuration and the JWKS file: never replaced.
    fixed: Arc<[Key]>,
    /// Keys from the URL: replaced by each fetch.
    fetched: Vec<Key>,
    fetched_at: Option<tokio::time::Instant>,
    fresh_until: Option<tokio::time::Instant>,
}

impl KeySet {
    fn all(&self) -> impl Iterator<Item = &Key> {
        self.fixed.iter().chain(&self.fetched)
    }
}

struct Remote {
    fetch: Fetch,
    jwks_url: Option<String>,
    issuer: Option<String>,
    min_interval: Duration,
    /// Held by the one fetch in flight; holds when the last one started.
    flight: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    refreshing: std::sync::atomic::AtomicBool,
}

/// A verified token, remembered until its `exp`.
struct Cached {
    /// The whole token: a hit must be this token, byte for byte.
    token: Box<str>,
    identity: ServiceIdentity,
    /// `exp`, in seconds since the epoch.
    expires: u64,
}

/// What the verified-token cache is keyed by: a token's length and its
/// last 16 bytes (the end of its signature: 96 bits of it). Hashing those rather than the
/// whole token (hundreds of bytes) is most of the cost of a hit; a hit is
/// then compared with the whole token, so two tokens that share a tail
/// never stand for each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TokenTail {
    len: usize,
    tail: [u8; 16],
}

impl TokenTail {
    fn of(token: &str) -> Self {
        let bytes = token.as_bytes();
        let mut tail = [0; 16];
        let end = &bytes[bytes.len().saturating_sub(16)..];
        tail[..end.len()].copy_from_slice(end);
        Self {
            len: bytes.len(),
            tail,
        }
    }
}

struct Inner {
    /// The checks for each algorithm, made once (a `Validation` is sets
    /// and vectors: cloning one per token would cost more than HS256).
    validations: Vec<(Algorithm, Validation)>,
    service_claim: String,
    scope_claim: String,
    /// Required claims beyond the registered ones, which `jsonwebtoken`
    /// checks itself.
    required_claims: Box<[String]>,
    max_token_bytes: usize,
    keys: RwLock<Arc<KeySet>>,
    remote: Option<Remote>,
    cache: Option<quick_cache::sync::Cache<TokenTail, Arc<Cached>>>,
}

/// Verifies JWT service tokens.
///
/// Tokens are checked by `jsonwebtoken`: the signature with the key the
/// token's `kid` names (or, without a `kid`, each key of the token's
/// algorithm), then `exp` and `nbf` with the leeway, `iss`, `aud` and the
/// required claims. Refused outright:
///
/// - a token longer than the size limit;
/// - `alg: none` in any spelling, and any algorithm the key was not given
///   for: an HMAC token is never checked against a public key, and a `kid`
///   that names a key of another algorithm fails;
/// - a token that carries `jku`, `x5u`, `jwk` or `x5c` in its header (keys
///   come only from the configuration), or a `crit` header;
/// - a token without the service claim.
///
/// A token that verified is remembered until its `exp` (at most
/// `cached_tokens` of them), so a repeat costs a hash lookup.
///
/// Keys from a URL are fetched through the [`Fetch`] (a client stack of
/// the crate, say), refreshed when the answer's `Cache-Control: max-age`
/// runs out, and fetched again for a `kid` no key has: one fetch at a time,
/// and at most one per `refresh_min_interval`.
///
/// ```
/// use jsonwebtoken::{encode, EncodingKey, Header};
/// use tower_shield::auth::{JwtConfig, JwtKey, JwtVerifier, SecretRef};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_shield::BoxError> {
/// let verifier = JwtVerifier::new(
///     JwtConfig::new()
///         .audience("orders")
///         .key(JwtKey::new("HS256", SecretRef::value("a shared secret of 32 bytes!!!!"))),
///     None,
/// )?;
/// let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 60;
/// let claims = serde_json::json!({"sub": "billing", "aud": "orders", "exp": exp, "scope": "orders:read"});
/// let token = encode(
///     &Header::default(),
///     &claims,
///     &EncodingKey::from_secret(b"a shared secret of 32 bytes!!!!")?,
/// )?;
/// let id = verifier.verify(&token).await.unwrap();
/// assert_eq!(id.name(), "billing");
/// assert!(id.has_scope("orders:read"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

/// Why a token was refused: for logs and tests, never for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    TooLong,
    Malformed,
    UntrustedHeader,
    UnknownKey,
    Invalid,
    NoService,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::TooLong => "token too long",
            Self::Malformed => "malformed token",
            Self::UntrustedHeader => "token header names keys or extensions",
            Self::UnknownKey => "no key for the token",
            Self::Invalid => "token did not verify",
            Self::NoService => "token names no service",
        }
    }
}

enum Check {
    Verified(ServiceIdentity),
    Refused(Refusal),
    UnknownKey,
}

/// The state of a verifier's keys, for health reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStatus {
    /// How many keys are loaded.
    pub keys: usize,
    /// How long ago the keys were last fetched, if they come from a URL.
    pub fetched_ago: Option<Duration>,
}

impl JwtVerifier {
    /// A verifier with `config`'s keys (read now) and, if it names a URL,
    /// `fetch` to fetch them with (the first fetch happens with the first
    /// token).
    ///
    /// # Errors
    ///
    /// A key that cannot be read or parsed; a URL with no `fetch`.
    pub fn new(config: JwtConfig, fetch: Option<Fetch>) -> Result<Self, KeyError> {
        let mut fixed = config
            .keys
            .iter()
            .map(JwtKey::load)
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(path) = &config.jwks_file {
            let text = std::fs::read(path)
                .map_err(|_| KeyError(format!("file {} cannot be read", path.display())))?;
            fixed.extend(parse_jwks(&text)?);
        }
        let remote = if config.is_remote() {
            let fetch = fetch.ok_or_else(|| {
                KeyError("a JWKS URL or issuer needs a client to fetch it with".to_owned())
            })?;
            Some(Remote {
                fetch,
                jwks_url: config.jwks_url.clone(),
                issuer: config.oidc_issuer.clone(),
                min_interval: config.refresh_min_interval,
                flight: tokio::sync::Mutex::new(None),
                refreshing: Default::default(),
            })
        } else {
            if fixed.is_empty() {
                return Err(KeyError("no JWT keys are configured".to_owned()));
            }
            None
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        let mut required: Vec<&str> = vec!["exp"];
        if config.issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&config.issuer);
            required.push("iss");
        }
        if config.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&config.audience);
            required.push("aud");
        }
        required.extend(config.required_claims.iter().map(String::as_str));
        validation.set_required_spec_claims(&required);
        let validations = [
            Algorithm::HS256,
            Algorithm::HS384,
            Algorithm::HS512,
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::EdDSA,
        ]
        .into_iter()
        .map(|alg| {
            let mut v = validation.clone();
            v.algorithms = vec![alg];
            (alg, v)
        })
        .collect();
        let cache = (config.cached_tokens > 0)
            .then(|| quick_cache::sync::Cache::new(config.cached_tokens as usize));
        Ok(Self {
            inner: Arc::new(Inner {
                validations,
                service_claim: config.service_claim,
                scope_claim: config.scope_claim,
                required_claims: config.required_claims.into(),
                max_token_bytes: config.max_token_bytes,
                keys: RwLock::new(Arc::new(KeySet {
                    fixed: fixed.into(),
                    ..KeySet::default()
                })),
                remote,
                cache,
            }),
        })
    }

    /// Verifies `token`, fetching keys first if it names a `kid` no key
    /// has (within the limits above).
    pub async fn verify(&self, token: &str) -> Option<ServiceIdentity> {
        self.verify_why(token).await.ok()
    }

    pub(crate) async fn verify_why(&self, token: &str) -> Result<ServiceIdentity, Refusal> {
        match self.check(token) {
            Check::Verified(id) => Ok(id),
            Check::Refused(why) => Err(why),
            Check::UnknownKey => {
                self.refresh_for_unknown().await;
                match self.check(token) {
                    Check::Verified(id) => Ok(id),
                    Check::Refused(why) => Err(why),
                    Check::UnknownKey => Err(Refusal::UnknownKey),
                }
            }
        }
    }

    /// Verifies `token` with the keys at hand: `Some` when that settles
    /// it, `None` when keys must be fetched first.
    pub(crate) fn verify_now(&self, token: &str) -> Option<Result<ServiceIdentity, Refusal>> {
        match self.check(token) {
            Check::Verified(id) => Some(Ok(id)),
            Check::Refused(why) => Some(Err(why)),
            Check::UnknownKey if self.inner.remote.is_some() => None,
            Check::UnknownKey => Some(Err(Refusal::UnknownKey)),
        }
    }

    /// Fetches the keys from the URL now (single-flight, not limited by
    /// the interval); returns how many keys were fetched.
    ///
    /// # Errors
    ///
    /// The fetch failed or its document was not a JWKS; the keys at hand
    /// are kept.
    pub async fn refresh(&self) -> Result<usize, KeyError> {
        let Some(remote) = &self.inner.remote else {
            return Ok(0);
        };
        let mut last = remote.flight.lock().await;
        *last = Some(tokio::time::Instant::now());
        self.fetch_keys(remote).await
    }

    /// The keys' state.
    pub fn key_status(&self) -> KeyStatus {
        let keys = self.keys();
        KeyStatus {
            keys: keys.fixed.len() + keys.fetched.len(),
            fetched_ago: keys.fetched_at.map(|at| at.elapsed()),
        }
    }

    fn keys(&self) -> Arc<KeySet> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn check(&self, token: &str) -> Check {
        let inner = &*self.inner;
        if token.len() > inner.max_token_bytes {
            return Check::Refused(Refusal::TooLong);
        }
        if let Some(cache) = &inner.cache {
            let key = TokenTail::of(token);
            if let Some(hit) = cache.get(&key) {
                if *hit.token == *token {
                    if now_secs() < hit.expires {
                        return Check::Verified(hit.identity.clone());
                    }
                    cache.remove(&key);
                }
            }
        }
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return Check::Refused(Refusal::Malformed);
        };
        if header.jku.is_some()
            || header.x5u.is_some()
            || header.jwk.is_some()
            || header.x5c.is_some()
            || header.crit.is_some()
        {
            return Check::Refused(Refusal::UntrustedHeader);
        }
        let keys = self.keys();
        if let Some(remote) = &inner.remote {
            let stale = keys
                .fresh_until
                .is_some_and(|until| tokio::time::Instant::now() >= until);
            if stale {
                self.refresh_in_background(remote);
            }
        }
        let mut candidates = keys.all().filter(|key| match (&header.kid, &key.kid) {
            (Some(kid), Some(key_kid)) => kid == key_kid,
            (Some(_), None) => false,
            (None, _) => key.alg == header.alg,
        });
        let mut tried = false;
        let mut result = None;
        for key in &mut candidates {
            tried = true;
            // The token's algorithm must be the one the key was given for.
            if key.alg != header.alg {
                result = Some(Refusal::Invalid);
                continue;
            }
            let Some((_, validation)) = inner.validations.iter().find(|(alg, _)| *alg == key.alg)
            else {
                result = Some(Refusal::Invalid);
                continue;
            };
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => return self.accept(token, &data.claims),
                Err(_) => result = Some(Refusal::Invalid),
            }
        }
        match (tried, header.kid) {
            (false, Some(_)) => Check::UnknownKey,
            (false, None) if keys.all().next().is_none() => Check::UnknownKey,
            _ => Check::Refused(result.unwrap_or(Refusal::UnknownKey)),
        }
    }

    fn accept(&self, token: &str, claims: &Map<String, Value>) -> Check {
        let inner = &*self.inner;
        if !inner.required_claims.iter().all(|c| claims.contains_key(c)) {
            return Check::Refused(Refusal::Invalid);
        }
        let Some(service) = claims.get(&inner.service_claim).and_then(Value::as_str) else {
            return Check::Refused(Refusal::NoService);
        };
        let scopes: Vec<&str> = match claims.get(&inner.scope_claim) {
            Some(Value::String(s)) => s.split_ascii_whitespace().collect(),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let identity = ServiceIdentity::new(service, scopes, Method::Jwt);
        if let (Some(cache), Some(exp)) = (&inner.cache, claims.get("exp").and_then(Value::as_u64))
        {
            cache.insert(
                TokenTail::of(token),
                Arc::new(Cached {
                    token: token.into(),
                    identity: identity.clone(),
                    expires: exp,
                }),
            );
        }
        Check::Verified(identity)
    }

    async fn refresh_for_unknown(&self) {
        let Some(remote) = &self.inner.remote else {
            return;
        };
        let mut last = remote.flight.lock().await;
        let now = tokio::time::Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < remote.min_interval) {
            // Fetched a moment ago (perhaps by the holder before us): the
            // keys at hand are what there is.
            return;
        }
        *last = Some(now);
        if let Err(err) = self.fetch_keys(remote).await {
            tracing::warn!(error = %err, "JWKS fetch failed; keeping the keys at hand");
        }
    }

    fn refresh_in_background(&self, remote: &Remote) {
        use std::sync::atomic::Ordering;
        if remote.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Some(remote) = &this.inner.remote {
                let mut last = remote.flight.lock().await;
                *last = Some(tokio::time::Instant::now());
                if let Err(err) = this.fetch_keys(remote).await {
                    tracing::warn!(error = %err, "JWKS refresh failed; keeping the keys at hand");
                }
                remote.refreshing.store(false, Ordering::Release);
            }
        });
    }

    async fn fetch_keys(&self, remote: &Remote) -> Result<usize, KeyError> {
        let url = match (&remote.jwks_url, &remote.issuer) {
            (Some(url), _) => url.clone(),
            (None, Some(issuer)) => discover(&remote.fetch, issuer).await?,
            (None, None) => return Ok(0),
        };
        let (body, max_age) = get(&remote.fetch, &url).await?;
        let fetched = parse_jwks(&body)?;
        let count = fetched.len();
        let now = tokio::time::Instant::now();
        let mut guard = self.inner.keys.write().unwrap_or_else(|e| e.into_inner());
        let fixed = guard.fixed.clone();
        *guard = Arc::new(KeySet {
            fixed,
            fetched,
            fetched_at: Some(now),
            fresh_until: max_age.map(|age| now + age),
        });
        tracing::debug!(keys = count, "JWKS fetched");
        Ok(count)
    }
}

async fn get(fetch: &Fetch, url: &str) -> Result<(Bytes, Option<Duration>), KeyError> {
    let req = http::Request::get(url)
        .header(http::header::ACCEPT, "application/json")
        .body(String::new())
        .map_err(|_| KeyError(format!("{url} is not a valid URL")))?;
    let res = fetch
        .clone()
        .oneshot(req)
        .await
        .map_err(|err| KeyError(format!("fetching {url} failed: {err}")))?;
    if !res.status().is_success() {
        return Err(KeyError(format!(
            "fetching {url} answered {}",
            res.status()
        )));
    }
    let max_age = res
        .headers()
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok((res.into_body(), max_age))
}

async fn discover(fetch: &Fetch, issuer: &str) -> Result<String, KeyError> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    );
    let (body, _) = get(fetch, &url).await?;
    let doc: Value =
        serde_json::from_slice(&body).map_err(|_| KeyError(format!("{url} is not JSON")))?;
    doc.get("jwks_uri")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| KeyError(format!("{url} names no jwks_uri")))
}

/// The usable keys of a JWKS document: each with the algorithm it names,
/// or the one its type and curve imply. Keys for encryption or of unknown
/// types are skipped.
fn parse_jwks(text: &[u8]) -> Result<Vec<Key>, KeyError> {
    let set: JwkSet =
        serde_json::from_slice(text).map_err(|_| KeyError("not a JWKS document".to_owned()))?;
    Ok(set.keys.iter().filter_map(key_from_jwk).collect())
}

fn key_from_jwk(jwk: &Jwk) -> Option<Key> {
    let alg = match jwk.common.key_algorithm {
        Some(alg) => algorithm_of(alg)?,
        None => match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return None,
            },
            AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
            AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
            _ => return None,
        },
    };
    // The key's type must fit the algorithm: an RSA key named HS256 is a
    // confusion attempt, not a key.
    let fits = matches!(
        (&jwk.algorithm, alg.family()),
        (
            AlgorithmParameters::RSA(_),
            jsonwebtoken::AlgorithmFamily::Rsa
        ) | (
            AlgorithmParameters::EllipticCurve(_),
            jsonwebtoken::AlgorithmFamily::Ec
        ) | (
            AlgorithmParameters::OctetKeyPair(_),
            jsonwebtoken::AlgorithmFamily::Ed
        ) | (
            AlgorithmParameters::OctetKey(_),
            jsonwebtoken::AlgorithmFamily::Hmac
        )
    );
    if !fits {
        return None;
    }
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}

fn algorithm_of(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.key_status())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_s_tail_is_its_length_and_last_16_bytes() {
        let long = "x".repeat(40) + "0123456789abcdef0123456789ABCDEF";
        let tail = TokenTail::of(&long);
        assert_eq!(tail.len, 72);
        assert_eq!(&tail.tail, b"0123456789ABCDEF");
        let short = TokenTail::of("abc");
        assert_eq!(short.len, 3);
        assert_eq!(&short.tail[..3], b"abc");
        assert!(short.tail[3..].iter().all(|&b| b == 0));
        assert_ne!(TokenTail::of("abc"), TokenTail::of("abc\0"));
        // Same length and tail, another start: the same key.
        assert_eq!(
            TokenTail::of(&long),
            TokenTail::of(&format!("y{}", &long[1..]))
        );
    }

    const SECRET: &str = "a unit-test secret of 32 bytes!!";

    fn hs_verifier(config: JwtConfig) -> JwtVerifier {
        JwtVerifier::new(
            config.key(JwtKey::new("HS256", SecretRef::value(SECRET))),
            None,
        )
        .unwrap()
    }

    fn hs_token(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn debug_shows_the_keys_status_and_no_secret() {
        let shown = format!("{:?}", hs_verifier(JwtConfig::new()));
        assert!(
            shown.starts_with("JwtVerifier { keys: KeyStatus { keys: 1"),
            "{shown}"
        );
        assert!(!shown.contains(SECRET));
    }

    #[test]
    fn the_claims_read_and_required_are_configurable() {
        let exp = now_secs() + 60;
        let token = hs_token(&serde_json::json!({
            "sub": "subject", "client_id": "billing", "exp": exp,
            "scope": "a b", "scp": ["orders:read", "orders:write"], "tenant": "acme",
        }));
        let id = hs_verifier(JwtConfig::new())
            .verify_now(&token)
            .unwrap()
            .unwrap();
        assert_eq!(
            (id.name(), id.scopes()),
            ("subject", &["a".to_owned(), "b".to_owned()][..])
        );

        let verifier = hs_verifier(
            JwtConfig::new()
                .service_claim("client_id")
                .scope_claim("scp"),
        );
        let id = verifier.verify_now(&token).unwrap().unwrap();
        assert_eq!(id.name(), "billing");
        assert!(id.has_scope("orders:write") && !id.has_scope("a"));

        // A claim required: present passes, absent is refused.
        let verifier = hs_verifier(JwtConfig::new().require_claim("tenant"));
        assert!(verifier.verify_now(&token).unwrap().is_ok());
        let without = hs_token(&serde_json::json!({"sub": "subject", "exp": exp}));
        assert_eq!(verifier.verify_now(&without), Some(Err(Refusal::Invalid)));
        // Without a service claim there is no identity.
        let verifier = hs_verifier(JwtConfig::new().service_claim("client_id"));
        assert_eq!(verifier.verify_now(&without), Some(Err(Refusal::NoService)));
    }

    #[test]
    fn the_size_limit_is_8_kib_by_default_and_configurable() {
        let exp = now_secs() + 60;
        let sized = |bytes: usize| {
            let token = hs_token(&serde_json::json!({"sub": "big", "exp": exp, "pad": ""}));
            // Pad the claims until the token is `bytes` long.
            let pad = (bytes - token.len()) * 3 / 4;
            let token =
                hs_token(&serde_json::json!({"sub": "big", "exp": exp, "pad": "x".repeat(pad)}));
            assert!(
                token.len().abs_diff(bytes) <= 4,
                "{} for {bytes}",
                token.len()
            );
            token
        };
        let verifier = hs_verifier(JwtConfig::new());
        assert!(verifier.verify_now(&sized(6000)).unwrap().is_ok());
        assert_eq!(
            verifier.verify_now(&sized(8300)),
            Some(Err(Refusal::TooLong))
        );
        let verifier = hs_verifier(JwtConfig::new().max_token_bytes(512));
        assert_eq!(
            verifier.verify_now(&sized(600)),
            Some(Err(Refusal::TooLong))
        );
        assert!(verifier.verify_now(&sized(400)).unwrap().is_ok());
        // The limit itself is allowed.
        let token = sized(500);
        let at = |max| hs_verifier(JwtConfig::new().max_token_bytes(max)).verify_now(&token);
        assert!(at(token.len()).unwrap().is_ok());
        assert_eq!(at(token.len() - 1), Some(Err(Refusal::TooLong)));
    }

    #[test]
    fn each_refusal_has_a_reason_of_its_own() {
        let all = [
            Refusal::TooLong,
            Refusal::Malformed,
            Refusal::UntrustedHeader,
            Refusal::UnknownKey,
            Refusal::Invalid,
            Refusal::NoService,
        ];
        let reasons: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
        assert_eq!(reasons.len(), all.len());
        assert!(reasons.iter().all(|r| r.contains("token")));
    }

    /// Each key of a JWKS document gets the algorithm it names, or the one
    /// its type and curve imply; a key whose type does not fit its
    /// algorithm, and a curve with no algorithm here, are skipped.
    #[test]
    fn a_jwks_key_gets_its_algorithm() {
        let pem = |name: &str| {
            std::fs::read(format!(
                "{}/tests/data/keys/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        let from = |key: jsonwebtoken::EncodingKey, alg| {
            serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap()
        };
        let rsa = from(
            jsonwebtoken::EncodingKey::from_rsa_pem(&pem("rsa1.pem")).unwrap(),
            Algorithm::RS256,
        );
        let ec = from(
            jsonwebtoken::EncodingKey::from_ec_pem(&pem("ec256.pem")).unwrap(),
            Algorithm::ES256,
        );
        let ed = from(
            jsonwebtoken::EncodingKey::from_ed_pem(&pem("ed.pem")).unwrap(),
            Algorithm::EdDSA,
        );
        let p384 = serde_json::json!({"kty": "EC", "crv": "P-384",
            "x": "K2FjmfeAPkymKUIZYdioFvXQREfCQ9YwadlHzzWivP2YyrDoeNOkO6h4UzdO30dI",
            "y": "2O4G0kFmsIfH8VEhUKeqiXKJltniG4BFw-t0YJCxrNA68TPynNys_jUYF_pi243C"});
        let oct = serde_json::json!({"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"});
        let with = |base: &Value, kid: &str, alg: Option<&str>| {
            let mut key = base.clone();
            let obj = key.as_object_mut().unwrap();
            obj.insert("kid".into(), kid.into());
            match alg {
                Some(alg) => obj.insert("alg".into(), alg.into()),
                None => obj.remove("alg"),
            };
            key
        };
        let mut keys = Vec::new();
        let mut expected = Vec::new();
        for (base, alg, want) in [
            (&oct, Some("HS256"), Some(Algorithm::HS256)),
            (&oct, Some("HS384"), Some(Algorithm::HS384)),
            (&oct, Some("HS512"), Some(Algorithm::HS512)),
            (&oct, None, Some(Algorithm::HS256)),
            (&rsa, Some("RS256"), Some(Algorithm::RS256)),
            (&rsa, Some("RS384"), Some(Algorithm::RS384)),
            (&rsa, Some("RS512"), Some(Algorithm::RS512)),
            (&rsa, Some("PS256"), Some(Algorithm::PS256)),
            (&rsa, Some("PS384"), Some(Algorithm::PS384)),
            (&rsa, Some("PS512"), Some(Algorithm::PS512)),
            (&rsa, None, Some(Algorithm::RS256)),
            (&rsa, Some("HS256"), None),
            (&ec, Some("ES256"), Some(Algorithm::ES256)),
            (&ec, None, Some(Algorithm::ES256)),
            (&p384, Some("ES384"), Some(Algorithm::ES384)),
            (&p384, None, Some(Algorithm::ES384)),
            (&ec, Some("RS256"), None),
            (&ed, Some("EdDSA"), Some(Algorithm::EdDSA)),
            (&ed, None, Some(Algorithm::EdDSA)),
            (&oct, Some("RSA-OAEP"), None),
        ] {
            let kid = format!("k{}", keys.len());
            keys.push(with(base, &kid, alg));
            if let Some(want) = want {
                expected.push((kid, want));
            }
        }
        let doc = serde_json::json!({ "keys": keys }).to_string();
        let parsed: Vec<_> = parse_jwks(doc.as_bytes())
            .unwrap()
            .into_iter()
            .map(|k| (k.kid.unwrap(), k.alg))
            .collect();
        assert_eq!(parsed, expected);
        assert!(parse_jwks(b"{\"keys\": 1}").is_err());
    }

    /// A cached token stands only for itself: a token with the same length
    /// and signature but another payload is checked in full, and refused.
    #[test]
    fn a_cache_hit_must_be_the_same_token() {
        let verifier = hs_verifier(JwtConfig::new());
        let exp = now_secs() + 60;
        let token = hs_token(&serde_json::json!({"sub": "aaaa", "exp": exp}));
        let first = verifier.verify_now(&token).unwrap().unwrap();
        assert_eq!(first.name(), "aaaa");
        // From the cache now.
        assert_eq!(verifier.verify_now(&token).unwrap().unwrap().name(), "aaaa");
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let other = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::json!({"sub": "bbbb", "exp": exp}).to_string(),
        );
        let forged = format!("{head}.{other}.{sig}");
        assert_eq!(forged.len(), token.len());
        assert_eq!(TokenTail::of(&forged), TokenTail::of(&token));
        assert_eq!(verifier.verify_now(&forged), Some(Err(Refusal::Invalid)));
    }
}
