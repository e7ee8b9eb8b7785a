//! The breakers of one layer: the default one and a bounded set of keyed
//! ones.

use super::{Breaker, Config, State};
use crate::telemetry::{Instrument, Kind, Record, Source};
use quick_cache::{sync::Cache, DefaultHashBuilder, Lifecycle, UnitWeighter};
use std::{fmt, sync::Arc};

/// Keeps a keyed breaker that is in use or not closed: evicting it would
/// forget a failing upstream, or split one key's calls between two
/// breakers.
#[derive(Debug, Clone, Copy, Default)]
struct KeepBusy;

impl Lifecycle<String, Arc<Breaker>> for KeepBusy {
    type RequestState = ();

    fn is_pinned(&self, _key: &String, breaker: &Arc<Breaker>) -> bool {
        Arc::strong_count(breaker) > 1 || breaker.state() != State::Closed
    }
}

type Keyed = Cache<String, Arc<Breaker>, UnitWeighter, DefaultHashBuilder, KeepBusy>;

struct Registry {
    config: Config,
    default: Arc<Breaker>,
    keyed: Keyed,
}

/// The breakers of one layer: for reading their state and controlling them.
///
/// Every clone, taken at any time, sees the same live set. Keyed breakers
/// are held in a bounded concurrent cache (`quick_cache`, S3-FIFO, which
/// evicts like a least-recently-used list but resists scans): at most
/// [`Config::max_keys`] of them; a breaker that is open, half-open or in
/// use by a call is never evicted.
#[derive(Clone)]
pub struct Breakers {
    inner: Arc<Registry>,
}

impl fmt::Debug for Breakers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breakers")
            .field("default", &self.inner.default.state())
            .field("keys", &self.inner.keyed.len())
            .finish()
    }
}

impl Breakers {
    pub(crate) fn new(config: Config) -> Self {
        let default = Arc::new(Breaker::new(config.clone(), "default".to_owned()));
        let max = config.max_keys.max(1);
        let keyed = Cache::with(
            max,
            max as u64,
            UnitWeighter,
            DefaultHashBuilder::default(),
            KeepBusy,
        );
        Self {
            inner: Arc::new(Registry {
                config,
                default,
                keyed,
            }),
        }
    }

    /// The breaker of requests without a key (every request, for a
    /// single-breaker layer).
    pub fn default_breaker(&self) -> Arc<Breaker> {
        self.inner.default.clone()
    }

    pub(crate) fn default_ref(&self) -> &Arc<Breaker> {
        &self.inner.default
    }

    /// The breaker of `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<Arc<Breaker>> {
        self.inner.keyed.peek(key)
    }

    /// The keys that have a breaker now.
    pub fn keys(&self) -> Vec<String> {
        self.inner.keyed.iter().map(|(k, _)| k).collect()
    }

    /// How many keyed breakers there are now.
    pub fn len(&self) -> usize {
        self.inner.keyed.len()
    }

    /// Whether there are no keyed breakers.
    pub fn is_empty(&self) -> bool {
        self.inner.keyed.is_empty()
    }

    /// Every breaker, the default one first.
    pub fn all(&self) -> Vec<Arc<Breaker>> {
        std::iter::once(self.inner.default.clone())
            .chain(self.inner.keyed.iter().map(|(_, b)| b))
            .collect()
    }

    /// The breakers that are not closed, with their names, for a health
    /// report.
    pub fn not_closed(&self) -> Vec<(String, State)> {
        self.all()
            .into_iter()
            .map(|b| (b.name().to_owned(), b.state()))
            .filter(|(_, s)| *s != State::Closed)
            .collect()
    }

    /// The breaker of `key`, made if it does not exist yet.
    pub(crate) fn for_key(&self, key: &str) -> Arc<Breaker> {
        let config = &self.inner.config;
        self.inner
            .keyed
            .get_or_insert_with(key, || {
                Ok::<_, std::convert::Infallible>(Arc::new(Breaker::new(
                    config.clone(),
                    key.to_owned(),
                )))
            })
            .unwrap_or_else(|never| match never {})
    }
}

const INSTRUMENTS: &[Instrument] = &[
    Instrument::new("shield.breaker.calls", "Calls let through.", Kind::Counter),
    Instrument::new(
        "shield.breaker.failures",
        "Calls classified as failures.",
        Kind::Counter,
    ),
    Instrument::new(
        "shield.breaker.slow_calls",
        "Calls slower than the slow-call duration.",
        Kind::Counter,
    ),
    Instrument::new(
        "shield.breaker.rejections",
        "Calls rejected without reaching the inner service.",
        Kind::Counter,
    ),
    Instrument::new(
        "shield.breaker.opened",
        "Times a breaker opened.",
        Kind::Counter,
    ),
];

/// `shield.breaker.calls`, `.failures`, `.slow_calls`, `.rejections` and
/// `.opened`, by `breaker` (its name: the key, or `default`).
impl Source for Breakers {
    fn instruments(&self) -> &'static [Instrument] {
        INSTRUMENTS
    }

    fn observe(&self, record: &mut Record<'_>) {
        for breaker in self.all() {
            let m = breaker.metrics();
            let name = [("breaker", breaker.name())];
            for (i, value) in [m.calls, m.failures, m.slow_calls, m.rejections, m.opened]
                .into_iter()
                .enumerate()
            {
                record(i, value, &name);
            }
        }
    }
}
