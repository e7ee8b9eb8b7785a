//! A response cache: RFC 9111 semantics, request coalescing, stale answers.
//!
//! [`CacheLayer`] answers repeated reads from a [`Store`] (in memory by
//! default, [`MemoryStore`]), so that a stampede of identical misses costs
//! one upstream call and stored answers keep flowing while the upstream is
//! down. What may be stored and reused is decided by the
//! [`http-cache-semantics`](http_cache_semantics) crate (RFC 9111:
//! `Cache-Control` in responses and requests, `Expires`, `Age`, heuristic
//! freshness from `Last-Modified`, `Vary`, validators); the layer adds what
//! it leaves out, each marked in the code:
//!
//! - **TTL**: a configured default TTL, and per-route TTLs by path prefix,
//!   stand in for the freshness a response does not state (off unless
//!   configured; only for statuses cacheable by default); `max_ttl` caps
//!   what any response says.
//! - **HEAD** is answered from a stored GET.
//! - **Conditional requests**: a stale entry is revalidated with its
//!   `ETag`/`Last-Modified`; a 304 refreshes it, and the caller gets the full
//!   stored response (or a 304, when it asked conditionally and its
//!   validator matches).
//! - **Stale answers** (RFC 5861): within `stale-while-revalidate` a stale
//!   entry is answered at once and refreshed once in the background; within
//!   `stale-if-error` it is answered when the upstream fails, answers 5xx,
//!   times out or its breaker refuses (read through
//!   [`error::status_for`](crate::error::status_for)). Configured defaults
//!   apply when the response names neither; `max_stale` caps both.
//! - **Invalidation**: a non-error response to an unsafe method removes
//!   the target URI's entries, and those of `Location` and
//!   `Content-Location` on the same origin.
//! - **Coalescing**: concurrent misses for one key make one upstream
//!   request; the others wait for it and answer from what it stored. If it
//!   fails, is cancelled or is not storable, each waiter goes upstream on
//!   its own; a waiter only ever gets an entry its own request matches, so
//!   a response that varies or is private is never shared with a caller
//!   that should not see it.
//!
//! Only GET and HEAD are cached. Bodies up to `max_entry_bytes` are stored;
//! a larger one streams through whole and is not stored. With
//! `x_cache_header`, every response says `x-cache: HIT | MISS | STALE |
//! REVALIDATED | BYPASS`; every answer from the store carries `Age`.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use bytes::Bytes;
//! use std::convert::Infallible;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_shield::cache::{CacheLayer, Config};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cache = CacheLayer::new(Config::default().x_cache_header(true)).unwrap();
//! let app = ServiceBuilder::new().layer(cache.clone()).service(service_fn(|_req: Request<()>| async {
//!     Ok::<_, Infallible>(
//!         Response::builder()
//!             .header("cache-control", "max-age=60")
//!             .body(Full::new(Bytes::from("hello")))
//!             .unwrap(),
//!     )
//! }));
//! let get = || Request::get("http://example.com/hello").body(()).unwrap();
//! let first = app.clone().oneshot(get()).await.unwrap();
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! let second = app.clone().oneshot(get()).await.unwrap();
//! assert_eq!(second.headers()["x-cache"], "HIT");
//! assert_eq!(second.into_body().collect().await.unwrap().to_bytes(), "hello");
//! assert_eq!(cache.stats().hits, 1);
//! # }
//! ```

mod key;
mod policy;
#[cfg(feature = "redis")]
mod redis;
mod service;
mod store;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{RedisStore, DEFAULT_REDIS_TIMEOUT};
pub use service::{Cache, ResponseFuture};
pub use store::{Entry, MemoryStore, Store, StoreError, Stored};

use crate::telemetry::{Instrument, Kind, Record, Source};
use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};
use tower_layer::Layer;

/// Whose cache it is: it decides what may be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(rename_all = "lowercase"))]
pub enum Mode {
    /// A cache many callers share (a server, the sidecar): honours
    /// `s-maxage` and `proxy-revalidate`, never stores `private`, nor the
    /// answer to a request with `Authorization` unless the response allows
    /// it (the default).
    #[default]
    Shared,
    /// One caller's own cache (a client): stores `private` too, ignores
    /// `s-maxage`.
    Private,
}

/// A TTL for the responses under a path prefix that state no freshness.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(deny_unknown_fields))]
pub struct Route {
    /// The path prefix (`/static/`).
    pub prefix: String,
    /// The TTL.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub ttl: Duration,
}

/// Which store the configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(rename_all = "lowercase"))]
pub enum StoreKind {
    /// [`MemoryStore`] (the default).
    #[default]
    Memory,
    /// [`RedisStore`] at `redis_url`, under `namespace`.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    Redis,
}

/// The cache's settings; also the `[cache]` section of the configuration
/// file, each key named as the method.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(default, deny_unknown_fields))]
pub struct Config {
    pub(crate) store: StoreKind,
    pub(crate) mode: Mode,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) default_ttl: Option<Duration>,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) max_ttl: Option<Duration>,
    pub(crate) max_entry_bytes: usize,
    pub(crate) max_bytes: u64,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) stale_while_revalidate: Option<Duration>,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) stale_if_error: Option<Duration>,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) max_stale: Duration,
    pub(crate) coalesce: bool,
    pub(crate) x_cache_header: bool,
    pub(crate) routes: Vec<Route>,
    pub(crate) redis_url: Option<String>,
    pub(crate) namespace: String,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) store_timeout: Duration,
}

/// The default `max_entry_bytes`: 1 MiB.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 1024 * 1024;
/// The default `max_bytes` of the memory store: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The default `namespace` of a shared store.
pub const DEFAULT_NAMESPACE: &str = "tower-shield";
/// The default `store_timeout`: how long one store call may take.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(250);
/// The default `max_stale`: one day.
pub const DEFAULT_MAX_STALE: Duration = Duration::from_secs(86_400);

impl Default for Config {
    fn default() -> Self {
        Self {
            store: StoreKind::Memory,
            mode: Mode::Shared,
            default_ttl: None,
            max_ttl: None,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_bytes: DEFAULT_MAX_BYTES,
            stale_while_revalidate: None,
            stale_if_error: None,
            max_stale: DEFAULT_MAX_STALE,
            coalesce: true,
            x_cache_header: false,
            routes: Vec::new(),
            redis_url: None,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            store_timeout: DEFAULT_STORE_TIMEOUT,
        }
    }
}

impl Config {
    /// Shared (default) or private.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// The TTL of a response that states no freshness of its own, if its
    /// status is cacheable by default (default: none, as RFC 9111 has it).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// The longest a response is fresh, whatever it says (default: no cap).
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = Some(ttl);
        self
    }

    /// The largest body stored (default 1 MiB); larger ones stream through.
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// The most the memory store holds, in bytes (default 64 MiB).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// `stale-while-revalidate` for responses that name none (default
    /// none).
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = Some(window);
        self
    }

    /// `stale-if-error` for responses that name none (default none).
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window);
        self
    }

    /// The most either stale window may be, whatever a response says
    /// (default one day).
    pub fn max_stale(mut self, window: Duration) -> Self {
        self.max_stale = window;
        self
    }

    /// Whether concurrent misses for one key share one upstream request
    /// (default true).
    pub fn coalesce(mut self, yes: bool) -> Self {
        self.coalesce = yes;
        self
    }

    /// Whether every response says how it was answered, in `x-cache`
    /// (default false).
    pub fn x_cache_header(mut self, yes: bool) -> Self {
        self.x_cache_header = yes;
        self
    }

    /// A TTL for the responses under `prefix` that state no freshness; the
    /// longest matching prefix wins over the default TTL.
    pub fn route(mut self, prefix: impl Into<String>, ttl: Duration) -> Self {
        self.routes.push(Route {
            prefix: prefix.into(),
            ttl,
        });
        self
    }

    /// Keeps entries in Redis at `url` (`redis://127.0.0.1:6379`), shared
    /// by every instance with the same `namespace`.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.store = StoreKind::Redis;
        self.redis_url = Some(url.into());
        self
    }

    /// The prefix of a shared store's keys (default `tower-shield`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How long one call to a shared store may take before the cache steps
    /// aside for that request (default 250 ms).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |field, problem| Err(InvalidConfig { field, problem });
        if self.max_entry_bytes == 0 {
            return bad("max_entry_bytes", "must be at least 1");
        }
        if self.max_bytes < self.max_entry_bytes as u64 {
            return bad("max_bytes", "must be at least max_entry_bytes");
        }
        if self.default_ttl == Some(Duration::ZERO) || self.max_ttl == Some(Duration::ZERO) {
            return bad("default_ttl", "a TTL must be more than zero");
        }
        if let Some(route) = self.routes.iter().find(|r| !r.prefix.starts_with('/')) {
            let _ = route;
            return bad("routes", "a route prefix must start with /");
        }
        if self.routes.iter().any(|r| r.ttl.is_zero()) {
            return bad("routes", "a route TTL must be more than zero");
        }
        if self.store_timeout.is_zero() {
            return bad("store_timeout", "must be more than zero");
        }
        if self.namespace.is_empty() || self.namespace.contains(['*', '?', '[', ']']) {
            return bad("namespace", "must be non-empty, without glob characters");
        }
        #[cfg(feature = "redis")]
        if self.store == StoreKind::Redis && self.redis_url.is_none() {
            return bad("redis_url", "store = \"redis\" needs a redis_url");
        }
        Ok(())
    }

    /// The configured TTL for `path`: the longest matching route's, else
    /// the default.
    pub(crate) fn ttl_for(&self, path: &str) -> Option<Duration> {
        self.routes
            .iter()
            .filter(|r| path.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len())
            .map(|r| r.ttl)
            .or(self.default_ttl)
    }
}

/// A setting the cache cannot work with.
#[derive(Debug, Clone)]
pub struct InvalidConfig {
    field: &'static str,
    problem: &'static str,
}

impl InvalidConfig {
    /// The setting at fault.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl std::error::Error for InvalidConfig {}

/// What the cache has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Answers from a fresh entry.
    pub hits: u64,
    /// Requests that found no usable entry and went upstream.
    pub misses: u64,
    /// Stale entries answered (while revalidating, or while the upstream
    /// failed).
    pub stale: u64,
    /// Stale entries the upstream confirmed with a 304.
    pub revalidations: u64,
    /// Misses that waited for another request's upstream call.
    pub coalesced: u64,
    /// Entries the store evicted to stay within its bound.
    pub evictions: u64,
    /// Store calls that failed (the cache stepped aside for them).
    pub store_errors: u64,
    /// Bytes the store holds, when it knows.
    pub bytes: u64,
}

impl Stats {
    /// Hits (fresh and stale) over all lookups; 0 before any.
    pub fn hit_ratio(&self) -> f64 {
        let served = self.hits + self.stale + self.revalidations;
        let all = served + self.misses;
        if all == 0 {
            0.0
        } else {
            served as f64 / all as f64
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    revalidations: AtomicU64,
    coalesced: AtomicU64,
    store_errors: AtomicU64,
}

/// The misses in flight: one leader per key, the others wait for it.
type Flights = Mutex<HashMap<String, tokio::sync::watch::Receiver<()>>>;

struct Shared<St> {
    config: Config,
    store: St,
    counters: Counters,
    flights: Flights,
    /// The wall clock as of `started`: the cache reads time as this plus
    /// tokio's clock since, so that paused time in tests moves it.
    epoch: (SystemTime, tokio::time::Instant),
    /// When a store error was last logged, to log at most once a second.
    last_store_log: Mutex<Option<tokio::time::Instant>>,
    /// Whether the store's last call succeeded.
    store_ok: std::sync::atomic::AtomicBool,
}

impl<St> Shared<St> {
    fn now(&self) -> SystemTime {
        self.epoch.0 + self.epoch.1.elapsed()
    }
}

/// Adds a response cache to a service; see the [module docs](self). Its
/// clones share the store and the statistics.
pub struct CacheLayer<St = MemoryStore> {
    shared: Arc<Shared<St>>,
}

impl<St> Clone for CacheLayer<St> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<St> fmt::Debug for CacheLayer<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl CacheLayer {
    /// A cache in memory, bounded by `max_bytes`; or the first invalid
    /// setting.
    pub fn new(config: Config) -> Result<Self, InvalidConfig> {
        let store = MemoryStore::new(config.max_bytes);
        Self::with_store(config, store)
    }
}

impl<St: Store> CacheLayer<St> {
    /// A cache in `store`.
    pub fn with_store(config: Config, store: St) -> Result<Self, InvalidConfig> {
        config.validate()?;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                store,
                counters: Counters::default(),
                flights: Mutex::default(),
                epoch: (SystemTime::now(), tokio::time::Instant::now()),
                last_store_log: Mutex::default(),
                store_ok: std::sync::atomic::AtomicBool::new(true),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The store.
    pub fn store(&self) -> &St {
        &self.shared.store
    }

    /// Whether the store's last call succeeded (a Redis that is down says
    /// no until it answers again).
    pub fn store_ok(&self) -> bool {
        self.shared.store_ok.load(Ordering::Relaxed)
    }

    /// What the cache has done so far.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            hits: load(&c.hits),
            misses: load(&c.misses),
            stale: load(&c.stale),
            revalidations: load(&c.revalidations),
            coalesced: load(&c.coalesced),
            evictions: self.shared.store.evictions(),
            store_errors: load(&c.store_errors),
            bytes: self.shared.store.bytes().unwrap_or(0),
        }
    }

    /// Removes the entries of one URI (all its variants), as a request for
    /// `uri` would find them: `http://host/path?query`.
    pub async fn invalidate(&self, uri: &str) -> Result<(), StoreError> {
        self.shared.store.delete_prefix(&exact(uri)).await?;
        self.shared.store.delete(uri).await
    }

    /// Removes every entry whose URI starts with `prefix`.
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        self.shared.store.delete_prefix(prefix).await
    }

    /// Removes everything.
    pub async fn clear(&self) -> Result<(), StoreError> {
        self.shared.store.clear().await
    }

    /// Stores `response` as the answer to a GET of `uri`, as if it had
    /// come from the upstream (its headers decide if and for how long):
    /// warms the cache from a loader. Returns whether it was stored.
    pub async fn warm(
        &self,
        uri: &str,
        response: http::Response<bytes::Bytes>,
    ) -> Result<bool, StoreError> {
        let request = http::Request::get(uri)
            .body(())
            .map_err(|e| StoreError(format!("warm {uri:?}: {e}")))?;
        let (parts, body) = response.into_parts();
        service::store_response(
            &self.shared,
            &request.into_parts().0,
            parts,
            Arc::new(crate::body::Buffered::from_bytes(body)),
        )
        .await
    }
}

/// The store a [`Config`] names: in memory, or (feature `redis`) Redis.
#[derive(Debug, Clone)]
pub enum ConfiguredStore {
    /// [`MemoryStore`].
    Memory(MemoryStore),
    /// [`RedisStore`].
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    Redis(RedisStore),
}

impl Store for ConfiguredStore {
    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        match self {
            Self::Memory(s) => s.get(key).await,
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.get(key).await,
        }
    }

    async fn put(&self, key: String, value: Stored, ttl: Duration) -> Result<(), StoreError> {
        match self {
            Self::Memory(s) => s.put(key, value, ttl).await,
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.put(key, value, ttl).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Self::Memory(s) => s.delete(key).await,
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.delete(key).await,
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        match self {
            Self::Memory(s) => s.delete_prefix(prefix).await,
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.delete_prefix(prefix).await,
        }
    }

    async fn clear(&self) -> Result<(), StoreError> {
        match self {
            Self::Memory(s) => s.clear().await,
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.clear().await,
        }
    }

    fn bytes(&self) -> Option<u64> {
        match self {
            Self::Memory(s) => s.bytes(),
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.bytes(),
        }
    }

    fn evictions(&self) -> u64 {
        match self {
            Self::Memory(s) => s.evictions(),
            #[cfg(feature = "redis")]
            Self::Redis(s) => s.evictions(),
        }
    }
}

impl ConfiguredStore {
    /// `"memory"` or `"redis"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            #[cfg(feature = "redis")]
            Self::Redis(_) => "redis",
        }
    }
}

impl CacheLayer<ConfiguredStore> {
    /// The cache the configuration names, in memory or in Redis (call it
    /// within a tokio runtime for Redis: its connection's task runs there).
    pub fn from_config(config: Config) -> Result<Self, InvalidConfig> {
        config.validate()?;
        let store = match config.store {
            StoreKind::Memory => ConfiguredStore::Memory(MemoryStore::new(config.max_bytes)),
            #[cfg(feature = "redis")]
            StoreKind::Redis => ConfiguredStore::Redis(
                RedisStore::new(
                    config.redis_url.as_deref().unwrap_or_default(),
                    &config.namespace,
                    config.store_timeout,
                )
                .map_err(|_| InvalidConfig {
                    field: "redis_url",
                    problem:
                        "not a Redis URL (redis://host:port), or no tokio runtime to connect from",
                })?,
            ),
        };
        Self::with_store(config, store)
    }
}

/// The prefix of the variant keys of `uri` (never another URI's).
fn exact(uri: &str) -> String {
    format!("{uri}\n")
}

impl<S, St> Layer<S> for CacheLayer<St> {
    type Service = Cache<S, St>;

    fn layer(&self, inner: S) -> Self::Service {
        Cache::new(inner, self.shared.clone())
    }
}

const INSTRUMENTS: &[Instrument] = &[
    Instrument::new(
        "shield.cache.hits",
        "Answers from a fresh entry.",
        Kind::Counter,
    ),
    Instrument::new(
        "shield.cache.misses",
        "Lookups that went upstream.",
        Kind::Counter,
    ),
    Instrument::new(
        "shield.cache.stale",
        "Stale entries answered.",
        Kind::Counter,
    ),
    Instrument::new(
        "shield.cache.revalidations",
        "Stale entries confirmed by a 304.",
        Kind::Counter,
    ),
    Instrument::new(
        "shield.cache.coalesced",
        "Misses that waited for another request's upstream call.",
        Kind::Counter,
    ),
    Instrument::new("shield.cache.evictions", "Entries evicted.", Kind::Counter),
    Instrument::new(
        "shield.cache.store_errors",
        "Store calls that failed.",
        Kind::Counter,
    ),
    Instrument::new("shield.cache.bytes", "Bytes the store holds.", Kind::Gauge),
];

/// `shield.cache.*`: the [`Stats`].
impl<St: Store> Source for CacheLayer<St> {
    fn instruments(&self) -> &'static [Instrument] {
        INSTRUMENTS
    }

    fn observe(&self, record: &mut Record<'_>) {
        let s = self.stats();
        for (i, value) in [
            s.hits,
            s.misses,
            s.stale,
            s.revalidations,
            s.coalesced,
            s.evictions,
            s.store_errors,
            s.bytes,
        ]
        .into_iter()
        .enumerate()
        {
            record(i, value, &[]);
        }
    }
}
