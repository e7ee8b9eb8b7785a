//! Per-service rate limits: GCRA keyed by the caller's identity, a header
//! or the peer address; in memory (`governor`) or, for a fleet, in Redis.
//!
//! [`RateLimitLayer`] admits each request under its key's quota: a rate
//! (`per_second`) and a `burst`, the same generic cell rate algorithm in
//! both stores, so a key that has waited long enough may send `burst`
//! requests at once and then one every `1 / per_second` seconds. A request
//! over the quota is answered `429 Too Many Requests` with `Retry-After`
//! (whole seconds, rounded up) and the IETF `RateLimit` and
//! `RateLimit-Policy` headers, and never reaches the service beneath.
//! Admitted responses carry the same two headers (the remaining quota)
//! when [`RateLimitConfig::headers`] is on.
//!
//! The key is read from the request:
//!
//! - `identity`: the name of the verified caller, the
//!   [`ServiceIdentity`] an auth layer put
//!   in the request's extensions; a request without one is keyed by its
//!   peer;
//! - `header:NAME`: the value of that header (a request without it shares
//!   the key `-`);
//! - `peer`: the [`std::net::SocketAddr`] in the request's extensions
//!   (the sidecar puts it there; with axum, copy `ConnectInfo`'s).
//!
//! Memory stays bounded however many keys arrive: the memory store keeps
//! at most `max_keys` keys (the least used go first, and a key that comes
//! back starts with a full burst), and the Redis store's keys expire as
//! soon as their quota is whole again.
//!
//! When Redis cannot be reached, `on_store_error` decides: `open` (the
//! default) admits the request, counting and logging it at most once a
//! second; `closed` answers 503.

#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
pub use self::redis::RedisLimiter;

use crate::{
    classify::ServiceIdentity,
    error::{error_response, Fault},
};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use std::{
    collections::HashMap,
    fmt,
    future::Future,
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};
use tower_layer::Layer;
use tower_service::Service;

/// The `RateLimit` header (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// The `RateLimit-Policy` header (draft-ietf-httpapi-ratelimit-headers).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// A quota: a steady rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(deny_unknown_fields))]
pub struct Quota {
    /// Requests per second, steadily (fractions allowed: 0.5 is one every
    /// two seconds).
    pub per_second: f64,
    /// Requests at once after a quiet spell.
    pub burst: u32,
}

impl Quota {
    /// `per_second` steadily, `burst` at once.
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Self { per_second, burst }
    }

    /// The time between two requests at the steady rate.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }

    fn validate(&self) -> Result<(), String> {
        if !(self.per_second.is_finite() && self.per_second > 0.0 && self.per_second <= 1e9) {
            return Err(format!(
                "per_second must be above 0, not {}",
                self.per_second
            ));
        }
        if self.burst == 0 {
            return Err("burst must be at least 1".to_owned());
        }
        Ok(())
    }

    /// The window of `RateLimit-Policy`: the time the whole burst takes to
    /// come back, in whole seconds (at least 1).
    fn window_secs(&self) -> u64 {
        (f64::from(self.burst) / self.per_second).ceil().max(1.0) as u64
    }
}

/// What a request is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBy {
    /// The verified caller's name ([`ServiceIdentity`]); else the peer.
    Identity,
    /// The value of a header.
    Header(HeaderName),
    /// The peer's IP address.
    Peer,
}

impl std::str::FromStr for KeyBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "identity" => Ok(Self::Identity),
            "peer" => Ok(Self::Peer),
            _ => match s.strip_prefix("header:") {
                Some(name) => HeaderName::try_from(name)
                    .map(Self::Header)
                    .map_err(|_| format!("{name:?} is not a header name")),
                None => Err(format!(
                    "key must be \"identity\", \"peer\" or \"header:NAME\", not {s:?}"
                )),
            },
        }
    }
}

/// What to do when the store cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(rename_all = "lowercase"))]
pub enum OnStoreError {
    /// Admit the request (counted and logged).
    #[default]
    Open,
    /// Refuse it with 503.
    Closed,
}

/// Where the quotas' state is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(rename_all = "lowercase"))]
pub enum StoreKind {
    /// In this process.
    #[default]
    Memory,
    /// In Redis, shared by a fleet.
    Redis,
}

/// The settings of a [`RateLimitLayer`]: the `[rate_limit]` section.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(default, deny_unknown_fields))]
pub struct RateLimitConfig {
    per_second: f64,
    burst: u32,
    #[cfg_attr(feature = "config", serde(deserialize_with = "de_key"))]
    key: KeyBy,
    store: StoreKind,
    redis_url: Option<String>,
    namespace: String,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    store_timeout: Duration,
    on_store_error: OnStoreError,
    headers: bool,
    max_keys: u64,
    overrides: HashMap<String, Quota>,
}

#[cfg(feature = "config")]
fn de_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<KeyBy, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 10.0,
            burst: 20,
            key: KeyBy::Identity,
            store: StoreKind::Memory,
            redis_url: None,
            namespace: "shield:rl".to_owned(),
            store_timeout: Duration::from_millis(250),
            on_store_error: OnStoreError::Open,
            headers: false,
            max_keys: 100_000,
            overrides: HashMap::new(),
        }
    }
}

impl RateLimitConfig {
    /// `per_second` steadily and `burst` at once per key, keyed by
    /// identity, in memory.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            per_second,
            burst,
            ..Self::default()
        }
    }

    /// What requests are keyed by.
    pub fn key(mut self, key: KeyBy) -> Self {
        self.key = key;
        self
    }

    /// A quota of its own for the caller `identity` (with
    /// [`KeyBy::Identity`]; with another key, for that key's value).
    pub fn override_for(mut self, identity: impl Into<String>, quota: Quota) -> Self {
        self.overrides.insert(identity.into(), quota);
        self
    }

    /// Whether admitted responses carry `RateLimit` and `RateLimit-Policy`.
    pub fn headers(mut self, on: bool) -> Self {
        self.headers = on;
        self
    }

    /// The most keys the memory store keeps.
    pub fn max_keys(mut self, max: u64) -> Self {
        self.max_keys = max;
        self
    }

    /// Keeps the state in the Redis at `url`, under `namespace`.
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.store = StoreKind::Redis;
        self.redis_url = Some(url.into());
        self
    }

    /// The Redis key prefix (default `shield:rl`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long one Redis check may take (default 250 ms).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// What to do when the store cannot answer.
    pub fn on_store_error(mut self, choice: OnStoreError) -> Self {
        self.on_store_error = choice;
        self
    }

    /// The store this configuration names.
    pub fn store_kind(&self) -> StoreKind {
        self.store
    }

    /// Checks the quotas.
    ///
    /// # Errors
    ///
    /// The first bad value, with the key it is under.
    pub fn validate(&self) -> Result<(), LimitError> {
        Quota::new(self.per_second, self.burst)
            .validate()
            .map_err(LimitError)?;
        for (name, quota) in &self.overrides {
            quota
                .validate()
                .map_err(|e| LimitError(format!("overrides.{name}: {e}")))?;
        }
        if self.max_keys == 0 {
            return Err(LimitError("max_keys must be at least 1".to_owned()));
        }
        if self.store == StoreKind::Redis && self.redis_url.is_none() {
            return Err(LimitError("store = \"redis\" needs redis_url".to_owned()));
        }
        Ok(())
    }
}

/// A rate limit that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError(String);

impl LimitError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LimitError {}

/// A check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted, with this many more requests admitted at once now, and
    /// the time until the whole burst is back.
    Allow {
        /// Requests that could follow at once.
        remaining: u32,
        /// Until the quota is whole again; `None`: `burst - remaining`
        /// intervals, the memory store's answer, worked out only when
        /// the headers are sent.
        reset: Option<Duration>,
    },
    /// Refused until this much time has passed.
    Deny {
        /// When to try again.
        retry_after: Duration,
    },
}

/// GCRA in memory, on `governor`, on tokio's clock (so paused time in
/// tests works), one limiter per key in a bounded map.
struct MemoryLimiter {
    keys: quick_cache::sync::Cache<Key, Arc<Direct>>,
    start: tokio::time::Instant,
}

type Direct = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    TokioClock,
    governor::middleware::StateInformationMiddleware,
>;

/// tokio's clock, as time since the limiter began.
#[derive(Debug, Clone, Copy)]
struct TokioClock {
    start: tokio::time::Instant,
}

impl governor::clock::Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

fn governor_quota(quota: Quota) -> governor::Quota {
    let burst = NonZeroU32::new(quota.burst).unwrap_or(NonZeroU32::MIN);
    governor::Quota::with_period(quota.interval())
        .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

impl MemoryLimiter {
    fn new(max_keys: u64) -> Self {
        Self {
            keys: quick_cache::sync::Cache::new(max_keys as usize),
            start: tokio::time::Instant::now(),
        }
    }

    fn check(&self, key: KeyRef<'_>, quota: Quota) -> Decision {
        let limiter = match self.keys.get(&key) {
            Some(limiter) => limiter,
            None => {
                let clock = TokioClock { start: self.start };
                let limiter = Arc::new(
                    governor::RateLimiter::direct_with_clock(governor_quota(quota), clock)
                        .with_middleware::<governor::middleware::StateInformationMiddleware>(),
                );
                self.keys.insert(key.to_owned(), limiter.clone());
                limiter
            }
        };
        match limiter.check() {
            Ok(state) => Decision::Allow {
                remaining: state.remaining_burst_capacity(),
                reset: None,
            },
            Err(not_until) => Decision::Deny {
                // A moment after the check: a wait no longer than needed.
                retry_after: not_until.wait_time_from(governor::clock::Clock::now(&TokioClock {
                    start: self.start,
                })),
            },
        }
    }
}

enum Store {
    Memory(MemoryLimiter),
    #[cfg(feature = "redis")]
    Redis(RedisLimiter),
}

struct Shared {
    key: KeyBy,
    default: Quota,
    overrides: HashMap<String, Quota>,
    store: Store,
    headers: bool,
    // What a failing store (Redis) does; a memory store never fails.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    on_store_error: OnStoreError,
    stats: Stats,
}

/// Counters of a [`RateLimitLayer`].
#[derive(Debug, Default)]
struct Stats {
    allowed: AtomicU64,
    denied: AtomicU64,
    store_errors: AtomicU64,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    last_logged: AtomicU64,
}

/// A snapshot of a rate limit's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitStats {
    /// Requests admitted.
    pub allowed: u64,
    /// Requests refused with 429.
    pub denied: u64,
    /// Checks the store could not answer.
    pub store_errors: u64,
}

/// Admits each request under its key's quota; see the [module docs](self).
///
/// ```
/// use http::{Request, Response};
/// use std::convert::Infallible;
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_shield::limit::{KeyBy, RateLimitConfig, RateLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_shield::BoxError> {
/// let limit = RateLimitLayer::new(
///     RateLimitConfig::new(1.0, 2).key(KeyBy::Header(http::HeaderName::from_static("x-tenant"))),
/// )?;
/// let svc = ServiceBuilder::new()
///     .layer(limit)
///     .service(service_fn(|_req: Request<()>| async {
///         Ok::<_, Infallible>(Response::new(String::from("ok")))
///     }));
/// let call = |tenant: &'static str| {
///     svc.clone().oneshot(Request::get("/").header("x-tenant", tenant).body(()).unwrap())
/// };
/// assert_eq!(call("a").await?.status(), 200);
/// assert_eq!(call("a").await?.status(), 200);
/// let refused = call("a").await?;
/// assert_eq!(refused.status(), 429);
/// assert_eq!(refused.headers()["retry-after"], "1");
/// assert_eq!(call("b").await?.status(), 200);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimitLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("key", &self.shared.key)
            .field("default", &self.shared.default)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// A limit with `config`. A Redis store is built lazily (nothing is
    /// connected until the first check) and needs a tokio runtime.
    ///
    /// # Errors
    ///
    /// A bad quota, or a Redis store asked for outside a runtime or
    /// without the `redis` feature.
    pub fn new(config: RateLimitConfig) -> Result<Self, LimitError> {
        config.validate()?;
        let store = match config.store {
            StoreKind::Memory => Store::Memory(MemoryLimiter::new(config.max_keys)),
            #[cfg(feature = "redis")]
            StoreKind::Redis => Store::Redis(RedisLimiter::new(
                config.redis_url.as_deref().unwrap_or_default(),
                &config.namespace,
                config.store_timeout,
            )?),
            #[cfg(not(feature = "redis"))]
            StoreKind::Redis => {
                return Err(LimitError::new(
                    "store = \"redis\" needs the crate's `redis` feature",
                ))
            }
        };
        Ok(Self {
            shared: Arc::new(Shared {
                key: config.key,
                default: Quota::new(config.per_second, config.burst),
                overrides: config.overrides,
                store,
                headers: config.headers,
                on_store_error: config.on_store_error,
                stats: Stats::default(),
            }),
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> LimitStats {
        let stats = &self.shared.stats;
        LimitStats {
            allowed: stats.allowed.load(Ordering::Relaxed),
            denied: stats.denied.load(Ordering::Relaxed),
            store_errors: stats.store_errors.load(Ordering::Relaxed),
        }
    }

    /// Whether the store answered its last check (always, in memory).
    pub fn store_ok(&self) -> bool {
        match &self.shared.store {
            Store::Memory(_) => true,
            #[cfg(feature = "redis")]
            Store::Redis(redis) => redis.is_ok(),
        }
    }

    /// The store's kind.
    pub fn store_kind(&self) -> StoreKind {
        match &self.shared.store {
            Store::Memory(_) => StoreKind::Memory,
            #[cfg(feature = "redis")]
            Store::Redis(_) => StoreKind::Redis,
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for RateLimit<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> RateLimit<S> {
    define_inner_service_accessors!();
}

/// A request's key, borrowed from it: no allocation to look one up.
#[derive(Debug, Clone, Copy)]
enum KeyRef<'a> {
    /// A verified caller's name, or a header's value.
    Name(&'a str),
    /// The peer's address.
    Peer(IpAddr),
    /// No name and no peer.
    Unknown,
}

/// A [`KeyRef`] owned, as the memory store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Name(Box<str>),
    Peer(IpAddr),
    Unknown,
}

impl KeyRef<'_> {
    fn to_owned(self) -> Key {
        match self {
            Self::Name(name) => Key::Name(name.into()),
            Self::Peer(ip) => Key::Peer(ip),
            Self::Unknown => Key::Unknown,
        }
    }

    /// The key in Redis (after the namespace).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn to_redis(self) -> String {
        match self {
            Self::Name(name) => format!("n:{name}"),
            Self::Peer(ip) => format!("p:{ip}"),
            Self::Unknown => "u".to_owned(),
        }
    }
}

// One hash for a key and its borrowed form: a tag, then the value.
impl std::hash::Hash for KeyRef<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Self::Name(name) => (0u8, *name).hash(state),
            Self::Peer(ip) => (1u8, ip).hash(state),
            Self::Unknown => 2u8.hash(state),
        }
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl Key {
    fn as_ref(&self) -> KeyRef<'_> {
        match self {
            Self::Name(name) => KeyRef::Name(name),
            Self::Peer(ip) => KeyRef::Peer(*ip),
            Self::Unknown => KeyRef::Unknown,
        }
    }
}

impl quick_cache::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        match (self, key) {
            (Self::Name(a), Key::Name(b)) => *a == &**b,
            (Self::Peer(a), Key::Peer(b)) => a == b,
            (Self::Unknown, Key::Unknown) => true,
            _ => false,
        }
    }
}

impl Shared {
    /// The key of `req` and its quota.
    fn key_of<'a, B>(&self, req: &'a Request<B>) -> (KeyRef<'a>, Quota) {
        let peer = || match req.extensions().get::<SocketAddr>() {
            Some(addr) => KeyRef::Peer(addr.ip()),
            None => KeyRef::Unknown,
        };
        let key = match &self.key {
            KeyBy::Identity => match req.extensions().get::<ServiceIdentity>() {
                Some(id) => KeyRef::Name(id.name()),
                None => peer(),
            },
            KeyBy::Header(name) => match req.headers().get(name).map(|v| v.to_str()) {
                Some(Ok(value)) => KeyRef::Name(value),
                _ => KeyRef::Unknown,
            },
            KeyBy::Peer => peer(),
        };
        let quota = match key {
            KeyRef::Name(name) if !self.overrides.is_empty() => {
                self.overrides.get(name).copied().unwrap_or(self.default)
            }
            _ => self.default,
        };
        (key, quota)
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn count_store_error(&self, err: &dyn fmt::Display) {
        let stats = &self.stats;
        stats.store_errors.fetch_add(1, Ordering::Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if stats.last_logged.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(error = %err, fail = ?self.on_store_error, "rate-limit store failed");
        }
    }
}

/// The `RateLimit-Policy` and `RateLimit` values for `quota` and a result.
fn state_headers(quota: Quota, remaining: u32, reset: Option<Duration>) -> Box<StateHeaders> {
    let reset = reset.unwrap_or_else(|| quota.interval() * quota.burst.saturating_sub(remaining));
    let policy = format!("\"default\";q={};w={}", quota.burst, quota.window_secs());
    let state = format!("\"default\";r={remaining};t={}", ceil_secs(reset));
    Box::new([
        (
            RATELIMIT_POLICY,
            HeaderValue::try_from(policy).expect("ASCII"),
        ),
        (RATELIMIT, HeaderValue::try_from(state).expect("ASCII")),
    ])
}

/// `RateLimit-Policy` and `RateLimit`, boxed: they are off by default, and
/// the future that carries them should not grow for it.
type StateHeaders = [(HeaderName, HeaderValue); 2];

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The refusal: 429 with `Retry-After` and the headers, through the
/// shared error vocabulary.
#[derive(Debug)]
struct Limited(Fault);

impl fmt::Display for Limited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rate limit exceeded")
    }
}

impl std::error::Error for Limited {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Redis failed and the limit fails closed.
#[derive(Debug)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
struct Unavailable(Fault);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rate limit unavailable")
    }
}

impl std::error::Error for Unavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn refusal<B: From<String>>(quota: Quota, retry_after: Duration) -> Response<B> {
    let mut fault = Fault::refused(StatusCode::TOO_MANY_REQUESTS, Some(retry_after));
    for (name, value) in *state_headers(quota, 0, Some(retry_after)) {
        fault = fault.with_header(name, value);
    }
    error_response(&Limited(fault))
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// Response future of [`RateLimit`].
    pub struct LimitFuture<F, T, E> {
        #[pin]
        kind: LimitKind<F, T, E>,
    }
}

pin_project! {
    #[project = LimitKindProj]
    enum LimitKind<F, T, E> {
        // Admitted: the service beneath was called.
        Called {
            #[pin]
            future: F,
            headers: Option<Box<StateHeaders>>,
        },
        // Boxed: refusals are the cold path.
        Refused { response: Option<Box<T>> },
        // Waiting for Redis.
        Pending { future: BoxFuture<Result<T, E>> },
    }
}

impl<F, T, E> fmt::Debug for LimitFuture<F, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            LimitKind::Called { .. } => "LimitFuture::Called",
            LimitKind::Refused { .. } => "LimitFuture::Refused",
            LimitKind::Pending { .. } => "LimitFuture::Pending",
        })
    }
}

impl<F, B, E> Future for LimitFuture<F, Response<B>, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            LimitKindProj::Called { future, headers } => {
                let mut res = ready!(future.poll(cx))?;
                for (name, value) in headers.take().into_iter().flat_map(|h| *h) {
                    res.headers_mut().insert(name, value);
                }
                Poll::Ready(Ok(res))
            }
            LimitKindProj::Refused { response } => {
                Poll::Ready(Ok(*response.take().expect("polled after completion")))
            }
            LimitKindProj::Pending { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, B, ResB> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResB: From<String> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = LimitFuture<S::Future, Response<ResB>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let (key, quota) = shared.key_of(&req);
        match &shared.store {
            Store::Memory(memory) => {
                let decision = memory.check(key, quota);
                admit(shared, quota, decision, || self.inner.call(req))
            }
            #[cfg(feature = "redis")]
            Store::Redis(redis) => {
                let key = key.to_redis();
                let redis = redis.clone();
                let shared = self.shared.clone();
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                LimitFuture {
                    kind: LimitKind::Pending {
                        future: Box::pin(async move {
                            let decision = match redis.check(&key, quota).await {
                                Ok(decision) => decision,
                                Err(err) => {
                                    shared.count_store_error(&err);
                                    match shared.on_store_error {
                                        OnStoreError::Open => {
                                            shared.stats.allowed.fetch_add(1, Ordering::Relaxed);
                                            return inner.call(req).await;
                                        }
                                        OnStoreError::Closed => {
                                            let fault = Fault::refused(
                                                StatusCode::SERVICE_UNAVAILABLE,
                                                Some(Duration::from_secs(1)),
                                            )
                                            .with_source(err);
                                            return Ok(error_response(&Unavailable(fault)));
                                        }
                                    }
                                }
                            };
                            match admit(&shared, quota, decision, || inner.call(req)).kind {
                                LimitKind::Called { future, headers } => {
                                    let mut res = future.await?;
                                    for (name, value) in headers.into_iter().flat_map(|h| *h) {
                                        res.headers_mut().insert(name, value);
                                    }
                                    Ok(res)
                                }
                                LimitKind::Refused { response } => {
                                    Ok(*response.expect("just made"))
                                }
                                LimitKind::Pending { future } => future.await,
                            }
                        }),
                    },
                }
            }
        }
    }
}

fn admit<F, T: From<String>, E>(
    shared: &Shared,
    quota: Quota,
    decision: Decision,
    call: impl FnOnce() -> F,
) -> LimitFuture<F, Response<T>, E> {
    match decision {
        Decision::Allow { remaining, reset } => {
            shared.stats.allowed.fetch_add(1, Ordering::Relaxed);
            LimitFuture {
                kind: LimitKind::Called {
                    future: call(),
                    headers: shared
                        .headers
                        .then(|| state_headers(quota, remaining, reset)),
                },
            }
        }
        Decision::Deny { retry_after } => {
            shared.stats.denied.fetch_add(1, Ordering::Relaxed);
            LimitFuture {
                kind: LimitKind::Refused {
                    response: Some(Box::new(refusal(quota, retry_after))),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse() {
        assert_eq!("identity".parse(), Ok(KeyBy::Identity));
        assert_eq!("peer".parse(), Ok(KeyBy::Peer));
        assert_eq!(
            "header:x-tenant".parse(),
            Ok(KeyBy::Header(HeaderName::from_static("x-tenant")))
        );
        assert!("header:bad header".parse::<KeyBy>().is_err());
        assert!("ip".parse::<KeyBy>().is_err());
    }

    #[test]
    fn quotas_are_checked() {
        assert!(RateLimitConfig::new(0.0, 1).validate().is_err());
        assert!(RateLimitConfig::new(f64::NAN, 1).validate().is_err());
        assert!(RateLimitConfig::new(1.0, 0).validate().is_err());
        assert!(RateLimitConfig::new(1.0, 1).max_keys(0).validate().is_err());
        assert!(RateLimitConfig::new(1.0, 1)
            .override_for("a", Quota::new(-1.0, 1))
            .validate()
            .is_err());
        assert!(RateLimitConfig::new(0.5, 1).validate().is_ok());
        assert_eq!(Quota::new(0.5, 3).window_secs(), 6);
        assert_eq!(Quota::new(100.0, 3).window_secs(), 1);
    }

    #[tokio::test]
    async fn errors_stores_and_debug_output() {
        let err = RateLimitConfig::new(1.0, 1)
            .max_keys(0)
            .validate()
            .unwrap_err();
        assert_eq!(err.to_string(), "max_keys must be at least 1");
        let config = RateLimitConfig::new(1.0, 1);
        assert_eq!(config.store_kind(), StoreKind::Memory);
        let layer = RateLimitLayer::new(config).unwrap();
        assert_eq!(layer.store_kind(), StoreKind::Memory);
        let shown = format!("{layer:?}");
        assert!(
            shown.starts_with("RateLimitLayer { key: Identity"),
            "{shown}"
        );
        #[derive(Debug)]
        struct Inner;
        let shown = format!("{:?}", layer.layer(Inner));
        assert_eq!(shown, "RateLimit { inner: Inner, .. }");
        #[cfg(feature = "redis")]
        {
            // Connected lazily: nothing listens on port 1.
            let config = RateLimitConfig::new(1.0, 1).redis("redis://127.0.0.1:1");
            assert_eq!(config.store_kind(), StoreKind::Redis);
            let layer = RateLimitLayer::new(config).unwrap();
            assert_eq!(layer.store_kind(), StoreKind::Redis);
        }
    }

    /// Admitted answers carry the quota left and when it is whole again;
    /// the refusal its `Retry-After`, in whole seconds rounded up.
    #[tokio::test(start_paused = true)]
    async fn state_headers_count_what_is_left() {
        use tower::ServiceExt as _;
        let layer = RateLimitLayer::new(RateLimitConfig::new(1.0, 5).headers(true)).unwrap();
        let svc = layer.layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(String::new()))
        }));
        let mut last = None;
        for _ in 0..3 {
            last = Some(svc.clone().oneshot(Request::new(())).await.unwrap());
        }
        let res = last.unwrap();
        assert_eq!(res.headers()[&RATELIMIT], "\"default\";r=2;t=3");
        assert_eq!(res.headers()[&RATELIMIT_POLICY], "\"default\";q=5;w=5");
        for _ in 0..2 {
            assert_eq!(
                svc.clone()
                    .oneshot(Request::new(()))
                    .await
                    .unwrap()
                    .status(),
                200
            );
        }
        tokio::time::advance(Duration::from_millis(300)).await;
        let res = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        // 0.7 s to wait: 1 s, rounded up.
        assert_eq!(res.headers()[http::header::RETRY_AFTER], "1");
        assert_eq!(res.headers()[&RATELIMIT], "\"default\";r=0;t=1");
        assert!(res.body().contains("rate limit exceeded"), "{}", res.body());
        let unavailable = Unavailable(Fault::refused(StatusCode::SERVICE_UNAVAILABLE, None));
        assert_eq!(unavailable.to_string(), "rate limit unavailable");
        let refused = LimitFuture::<std::future::Ready<Result<(), ()>>, (), ()> {
            kind: LimitKind::Refused {
                response: Some(Box::new(())),
            },
        };
        assert_eq!(format!("{refused:?}"), "LimitFuture::Refused");
    }

    #[tokio::test(start_paused = true)]
    async fn memory_gcra_admits_the_burst_then_the_rate() {
        let limiter = MemoryLimiter::new(10);
        let quota = Quota::new(2.0, 3);
        for left in [2, 1, 0] {
            match limiter.check(KeyRef::Name("k"), quota) {
                Decision::Allow { remaining, .. } => assert_eq!(remaining, left),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            limiter.check(KeyRef::Name("k"), quota),
            Decision::Deny {
                retry_after: Duration::from_millis(500)
            }
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(matches!(
            limiter.check(KeyRef::Name("k"), quota),
            Decision::Allow { remaining: 0, .. }
        ));
        // Other keys are untouched: a name, a peer, no key at all.
        for other in [
            KeyRef::Name("j"),
            KeyRef::Peer([127, 0, 0, 1].into()),
            KeyRef::Unknown,
        ] {
            assert!(matches!(
                limiter.check(other, quota),
                Decision::Allow { remaining: 2, .. }
            ));
        }
        // A key and its owned form hash and compare alike.
        use std::hash::BuildHasher;
        let h = std::collections::hash_map::RandomState::new();
        for key in [
            KeyRef::Name("a"),
            KeyRef::Peer([10, 0, 0, 1].into()),
            KeyRef::Unknown,
        ] {
            assert_eq!(h.hash_one(key), h.hash_one(key.to_owned()));
            assert!(quick_cache::Equivalent::equivalent(&key, &key.to_owned()));
        }
        assert!(!quick_cache::Equivalent::equivalent(
            &KeyRef::Name("a"),
            &KeyRef::Name("b").to_owned()
        ));
        assert_eq!(KeyRef::Name("a").to_redis(), "n:a");
        assert_eq!(KeyRef::Peer([10, 0, 0, 1].into()).to_redis(), "p:10.0.0.1");
        assert_eq!(KeyRef::Unknown.to_redis(), "u");
    }
}
