//! The error of a rejected call.

use std::{error::Error, fmt, sync::Arc, time::Duration};

/// The call was rejected because the circuit breaker is open: the inner
/// service was not called.
///
/// Downcast it from the stack's `BoxError`. [`crate::error::error_response`]
/// answers it with `503 Service Unavailable` and a `Retry-After` header.
#[derive(Debug, Clone)]
pub struct Open {
    retry_after: Duration,
    breaker: Arc<str>,
}

impl Open {
    pub(crate) fn new(retry_after: Duration, breaker: Arc<str>) -> Self {
        Self {
            retry_after,
            breaker,
        }
    }

    /// How long until the breaker lets a probe call through (zero while
    /// half-open probes are in flight).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The name of the breaker: its key, or `"default"`.
    pub fn breaker(&self) -> &str {
        &self.breaker
    }
}

impl fmt::Display for Open {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("circuit breaker is open")
    }
}

impl Error for Open {}
