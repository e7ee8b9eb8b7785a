//! Telemetry: the [`Registry`] every layer publishes its counters to, and
//! (with the `otlp` feature) their export over OTLP.
//!
//! A layer that counts things (the breaker's calls and rejections, retry's
//! retries) implements [`Source`]; the program registers it with a
//! [`Registry`]; an exporter reads the registry. The registry and the
//! exporters never name a layer, so a new layer publishes its counters
//! without touching them.
//!
//! ```
//! use tower_shield::telemetry::{Instrument, Kind, Record, Registry, Source};
//! use std::sync::{atomic::{AtomicU64, Ordering}, Arc};
//!
//! #[derive(Default)]
//! struct Hits(AtomicU64);
//!
//! impl Source for Hits {
//!     fn instruments(&self) -> &'static [Instrument] {
//!         const I: &[Instrument] = &[Instrument::new("app.hits", "Requests served.", Kind::Counter)];
//!         I
//!     }
//!     fn observe(&self, record: &mut Record<'_>) {
//!         record(0, self.0.load(Ordering::Relaxed), &[]);
//!     }
//! }
//!
//! let hits = Arc::new(Hits::default());
//! let registry = Registry::new();
//! registry.register(hits.clone());
//! hits.0.fetch_add(3, Ordering::Relaxed);
//! let samples = registry.samples();
//! assert_eq!(samples[0].name, "app.hits");
//! assert_eq!(samples[0].value, 3);
//! ```

#[cfg(feature = "otlp")]
#[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
pub mod otlp;

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

/// What kind of value an [`Instrument`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A total that only grows (calls, retries).
    Counter,
    /// A value that goes up and down (entries held, bytes held).
    Gauge,
}

/// One named value a [`Source`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Instrument {
    /// The metric's name, such as `shield.retry.retries`.
    pub name: &'static str,
    /// One line on what it counts.
    pub description: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
}

impl Instrument {
    /// An instrument.
    pub const fn new(name: &'static str, description: &'static str, kind: Kind) -> Self {
        Self {
            name,
            description,
            kind,
        }
    }
}

/// One attribute of a value: a name and its value, such as
/// `("breaker", "default")`.
pub type Attribute<'a> = (&'static str, &'a str);

/// What a [`Source`] reports its values to: `record(i, value, attributes)`.
pub type Record<'r> = dyn FnMut(usize, u64, &[Attribute<'_>]) + 'r;

/// Something that publishes counters: a layer's shared state.
pub trait Source: Send + Sync + 'static {
    /// Every instrument this source reports.
    fn instruments(&self) -> &'static [Instrument];

    /// Reports the current values: `record(i, value, attributes)` for
    /// `self.instruments()[i]`, once per set of attributes (one breaker
    /// reports once per key, say).
    fn observe(&self, record: &mut Record<'_>);
}

impl<T: Source> Source for Arc<T> {
    fn instruments(&self) -> &'static [Instrument] {
        (**self).instruments()
    }

    fn observe(&self, record: &mut Record<'_>) {
        (**self).observe(record)
    }
}

/// One value read from a [`Registry`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sample {
    /// The instrument's name.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// The value.
    pub value: u64,
    /// Its attributes, such as `("breaker", "http://127.0.0.1:80")`.
    pub attributes: Vec<(&'static str, String)>,
}

type Listener = Arc<dyn Fn(&Arc<dyn Source>) + Send + Sync>;

#[derive(Default)]
struct Inner {
    sources: Vec<Arc<dyn Source>>,
    listeners: Vec<Listener>,
}

/// The sources of one program: layers register here, exporters read here.
/// Cheap to clone; every clone is the same registry.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("Registry")
            .field("sources", &inner.sources.len())
            .field("listeners", &inner.listeners.len())
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a source; every exporter already listening sees it at once.
    pub fn register(&self, source: impl Source) {
        let source: Arc<dyn Source> = Arc::new(source);
        let listeners = {
            let mut inner = self.lock();
            inner.sources.push(source.clone());
            inner.listeners.clone()
        };
        for listener in listeners {
            listener(&source);
        }
    }

    /// Calls `listener` with every source registered so far and with each
    /// one registered later: how an exporter follows the registry.
    pub fn on_register(&self, listener: impl Fn(&Arc<dyn Source>) + Send + Sync + 'static) {
        let listener: Listener = Arc::new(listener);
        let sources = {
            let mut inner = self.lock();
            inner.listeners.push(listener.clone());
            inner.sources.clone()
        };
        for source in &sources {
            listener(source);
        }
    }

    /// Every current value of every source, for a status page or a test.
    pub fn samples(&self) -> Vec<Sample> {
        let sources = self.lock().sources.clone();
        let mut out = Vec::new();
        for source in sources {
            let instruments = source.instruments();
            source.observe(&mut |i, value, attributes| {
                if let Some(instrument) = instruments.get(i) {
                    out.push(Sample {
                        name: instrument.name,
                        kind: instrument.kind,
                        value,
                        attributes: attributes.iter().map(|&(k, v)| (k, v.to_owned())).collect(),
                    });
                }
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct Two(AtomicU64);

    const TWO: &[Instrument] = &[
        Instrument::new("t.count", "A counter.", Kind::Counter),
        Instrument::new("t.level", "A gauge.", Kind::Gauge),
    ];

    impl Source for Two {
        fn instruments(&self) -> &'static [Instrument] {
            TWO
        }

        fn observe(&self, record: &mut Record<'_>) {
            record(0, self.0.load(Ordering::Relaxed), &[("side", "a")]);
            record(1, 7, &[]);
            // An index past the instruments is ignored.
            record(2, 9, &[]);
        }
    }

    #[test]
    fn samples_name_kind_value_and_attributes() {
        let registry = Registry::new();
        let two = Arc::new(Two::default());
        registry.register(two.clone());
        two.0.store(3, Ordering::Relaxed);
        assert_eq!(
            registry.samples(),
            vec![
                Sample {
                    name: "t.count",
                    kind: Kind::Counter,
                    value: 3,
                    attributes: vec![("side", "a".to_owned())],
                },
                Sample {
                    name: "t.level",
                    kind: Kind::Gauge,
                    value: 7,
                    attributes: vec![],
                },
            ]
        );
        assert_eq!(
            format!("{registry:?}"),
            "Registry { sources: 1, listeners: 0 }"
        );
    }

    #[test]
    fn listeners_see_every_source_before_and_after() {
        let registry = Registry::new();
        registry.register(Two::default());
        let seen = Arc::new(AtomicU64::new(0));
        let counted = seen.clone();
        registry.on_register(move |source| {
            assert_eq!(source.instruments().len(), 2);
            counted.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(seen.load(Ordering::Relaxed), 1);
        registry.clone().register(Two::default());
        assert_eq!(seen.load(Ordering::Relaxed), 2);
    }
}
