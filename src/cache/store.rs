//! Where cached responses live: the [`Store`] trait and the in-memory store.

use crate::body::Buffered;
use http::{HeaderMap, HeaderName, StatusCode};
use http_cache_semantics::CachePolicy;
use quick_cache::{sync::Cache, DefaultHashBuilder, Lifecycle, Weighter};
use std::{
    fmt,
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};
use tokio::time::Instant;

/// A stored response, as the cache answers from it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Arc<Buffered>,
    /// The RFC 9111 rules for reusing it (freshness, `Vary`, validators).
    pub(crate) policy: CachePolicy,
    /// Until when it may be served without asking the upstream, at most:
    /// the configured `max_ttl` caps what the response says.
    pub(crate) fresh_until: SystemTime,
    /// How long past its freshness it may be served while a refresh runs
    /// (`stale-while-revalidate`), and while the upstream fails
    /// (`stale-if-error`).
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
}

impl Entry {
    /// The stored status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stored response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The stored body.
    pub fn body(&self) -> &Arc<Buffered> {
        &self.body
    }

    /// Bytes it holds, roughly: what the memory store weighs it at.
    pub fn weight(&self) -> u64 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + headers as u64 + 512
    }
}

/// What a key holds: a response, or, for a response that varies, the
/// names of the request headers it varies on (the responses themselves
/// are under keys that add those headers' values).
#[derive(Debug, Clone)]
pub enum Stored {
    /// A response.
    Response(Arc<Entry>),
    /// The response at this URI varies on these request headers.
    Vary(Arc<[HeaderName]>),
}

impl Stored {
    fn weight(&self) -> u64 {
        match self {
            Stored::Response(entry) => entry.weight(),
            Stored::Vary(names) => 64 + names.iter().map(|n| n.as_str().len() as u64).sum::<u64>(),
        }
    }
}

/// A store that failed (unreachable, slow, or answering nonsense). The
/// cache steps aside when it does: no request fails because of it.
#[derive(Debug)]
pub struct StoreError(pub(crate) String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cache store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// Where the cache keeps its entries. Every call may fail; the cache then
/// behaves as if the entry were absent (or the write had not happened).
pub trait Store: Send + Sync + 'static {
    /// The value under `key`, if it is there and has not expired.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Stored>, StoreError>> + Send;

    /// Stores `value` under `key` for `ttl`.
    fn put(
        &self,
        key: String,
        value: Stored,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes `key`.
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes every key that starts with `prefix`.
    fn delete_prefix(&self, prefix: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes everything.
    fn clear(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Bytes held now, if the store knows.
    fn bytes(&self) -> Option<u64> {
        None
    }

    /// Entries evicted to stay within the store's bound so far, if it
    /// counts them.
    fn evictions(&self) -> u64 {
        0
    }
}

/// One value and when it expires, on tokio's clock (so paused time in
/// tests moves it).
#[derive(Debug, Clone)]
struct Timed {
    value: Stored,
    expires: Instant,
}

#[derive(Debug, Clone)]
struct ByBytes;

impl Weighter<String, Timed> for ByBytes {
    fn weight(&self, key: &String, val: &Timed) -> u64 {
        key.len() as u64 + val.value.weight()
    }
}

/// Counts what the store evicts to stay within its bound.
#[derive(Debug, Clone, Default)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<String, Timed> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _: String, _: Timed) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The in-memory store: a bounded concurrent cache (`quick_cache`,
/// S3-FIFO) weighed by the bytes of each entry; an entry expires on tokio's
/// clock.
#[derive(Clone)]
pub struct MemoryStore {
    entries: Arc<Cache<String, Timed, ByBytes, DefaultHashBuilder, CountEvictions>>,
    evictions: CountEvictions,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries.len())
            .field("bytes", &self.entries.weight())
            .finish()
    }
}

impl MemoryStore {
    /// A store holding at most about `max_bytes` bytes of entries.
    pub fn new(max_bytes: u64) -> Self {
        let evictions = CountEvictions::default();
        let estimated = usize::try_from(max_bytes / 4096)
            .unwrap_or(usize::MAX)
            .max(16);
        Self {
            entries: Arc::new(Cache::with(
                estimated,
                max_bytes.max(1),
                ByBytes,
                DefaultHashBuilder::default(),
                evictions.clone(),
            )),
            evictions,
        }
    }

    /// The value under `key`, without a future: what [`Store::get`] does.
    pub fn get_now(&self, key: &str) -> Option<Stored> {
        let timed = self.entries.get(key)?;
        if timed.expires <= Instant::now() {
            self.entries.remove(key);
            return None;
        }
        Some(timed.value)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Stored>, StoreError>> + Send {
        std::future::ready(Ok(self.get_now(key)))
    }

    fn put(
        &self,
        key: String,
        value: Stored,
        ttl: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let expires = Instant::now()
            .checked_add(ttl)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        self.entries.insert(key, Timed { value, expires });
        std::future::ready(Ok(()))
    }

    fn delete(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.entries.remove(key);
        std::future::ready(Ok(()))
    }

    fn delete_prefix(&self, prefix: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.entries.retain(|key, _| !key.starts_with(prefix));
        std::future::ready(Ok(()))
    }

    fn clear(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        self.entries.clear();
        std::future::ready(Ok(()))
    }

    fn bytes(&self) -> Option<u64> {
        Some(self.entries.weight())
    }

    fn evictions(&self) -> u64 {
        self.evictions.0.load(Ordering::Relaxed)
    }
}
