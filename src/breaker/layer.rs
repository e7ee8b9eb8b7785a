//! [`CircuitBreakerLayer`].

use super::{Authority, Breakers, CircuitBreaker, Config, InvalidConfig, KeyBy};
use crate::classify::ServerErrorsAsFailures;
use std::fmt;
use tower_layer::Layer;

/// Applies [`CircuitBreaker`]. Every service built by one layer, and every
/// clone of those, shares the layer's breakers: cloning never resets them.
#[derive(Clone)]
pub struct CircuitBreakerLayer<K = KeyBy, C = ServerErrorsAsFailures> {
    breakers: Breakers,
    make_key: K,
    classifier: C,
}

impl<K: fmt::Debug, C: fmt::Debug> fmt::Debug for CircuitBreakerLayer<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breakers", &self.breakers)
            .field("make_key", &self.make_key)
            .field("classifier", &self.classifier)
            .finish()
    }
}

impl CircuitBreakerLayer {
    /// The layer `config` describes (keyed by its [`Config::key`], one
    /// breaker for every request by default), with the HTTP default
    /// classifier; or the first invalid setting.
    pub fn new(config: Config) -> Result<Self, InvalidConfig> {
        config.validate()?;
        let make_key = config.key;
        Ok(Self {
            breakers: Breakers::new(config),
            make_key,
            classifier: ServerErrorsAsFailures::new(),
        })
    }
}

impl<K, C> CircuitBreakerLayer<K, C> {
    /// The layer's breakers, to read and control. Every handle sees the
    /// live set, whenever it was taken.
    pub fn breakers(&self) -> Breakers {
        self.breakers.clone()
    }

    /// One breaker per upstream authority (scheme, host, port).
    pub fn by_authority(self) -> CircuitBreakerLayer<Authority, C> {
        self.keyed_by(Authority)
    }

    /// One breaker per key that `make_key` gives (a route, a tenant...).
    pub fn keyed_by<K2>(self, make_key: K2) -> CircuitBreakerLayer<K2, C> {
        CircuitBreakerLayer {
            breakers: self.breakers,
            make_key,
            classifier: self.classifier,
        }
    }

    /// Decides failures with `classifier` instead of the HTTP default.
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<K, C2> {
        CircuitBreakerLayer {
            breakers: self.breakers,
            make_key: self.make_key,
            classifier,
        }
    }
}

impl<S, K: Clone, C: Clone> Layer<S> for CircuitBreakerLayer<K, C> {
    type Service = CircuitBreaker<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(
            inner,
            self.breakers.clone(),
            self.make_key.clone(),
            self.classifier.clone(),
        )
    }
}
