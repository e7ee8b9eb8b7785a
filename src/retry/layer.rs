//! [`RetryLayer`] and the state its services share.

use super::{Config, InvalidConfig, Retry, RetryBudget, RetryPolicy};
use crate::{
    body::ReplayBudget,
    classify::ServerErrorsAsFailures,
    telemetry::{Instrument, Kind, Record, Source},
};
use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};
use tower_layer::Layer;

/// Counts kept by a [`RetryLayer`] and every service it built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Retries sent.
    pub retries: u64,
    /// Retries the budget refused.
    pub budget_exhausted: u64,
}

/// What every service of one layer, and every clone, shares.
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) budget: RetryBudget,
    /// What the bodies read ahead hold, across every request in flight.
    pub(super) replay: ReplayBudget,
    pub(super) retries: AtomicU64,
    pub(super) exhausted: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Applies [`Retry`]. Every service it builds, and their clones, share one
/// retry budget and one set of counters.
#[derive(Clone)]
pub struct RetryLayer<C = ServerErrorsAsFailures> {
    shared: Arc<Shared>,
    classifier: C,
}

impl<C> fmt::Debug for RetryLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl RetryLayer {
    /// A layer with the default classifier
    /// ([`ServerErrorsAsFailures`]), or the first invalid setting.
    pub fn new(config: Config) -> Result<Self, InvalidConfig> {
        config.validate()?;
        let budget = RetryBudget::new(config.budget_percent, config.budget_min_per_sec);
        Ok(Self {
            shared: Arc::new(Shared {
                replay: ReplayBudget::new(config.max_replay_total),
                config,
                budget,
                retries: AtomicU64::new(0),
                exhausted: AtomicU64::new(0),
            }),
            classifier: ServerErrorsAsFailures::new(),
        })
    }
}

impl<C> RetryLayer<C> {
    /// Decides what is retryable with `classifier` instead.
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayer<C2> {
        RetryLayer {
            shared: self.shared,
            classifier,
        }
    }

    /// The counts so far.
    pub fn metrics(&self) -> Metrics {
        Metrics {
            retries: self.shared.retries.load(Ordering::Relaxed),
            budget_exhausted: self.shared.exhausted.load(Ordering::Relaxed),
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The [`tower::retry::Policy`] this layer uses, for use with
    /// `tower::retry::Retry` directly.
    pub fn policy(&self) -> RetryPolicy<C>
    where
        C: Clone,
    {
        RetryPolicy::new(self.shared.clone(), self.classifier.clone())
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, self.policy())
    }
}

const INSTRUMENTS: &[Instrument] = &[
    Instrument::new("shield.retry.retries", "Retries sent.", Kind::Counter),
    Instrument::new(
        "shield.retry.budget_exhausted",
        "Retries the budget refused.",
        Kind::Counter,
    ),
];

/// `shield.retry.retries` and `shield.retry.budget_exhausted`.
impl<C: Send + Sync + 'static> Source for RetryLayer<C> {
    fn instruments(&self) -> &'static [Instrument] {
        INSTRUMENTS
    }

    fn observe(&self, record: &mut Record<'_>) {
        let m = self.metrics();
        record(0, m.retries, &[]);
        record(1, m.budget_exhausted, &[]);
    }
}
