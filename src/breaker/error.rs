//! The error of a rejected call.

use crate::error::Fault;
use http::StatusCode;
use std::{error::Error, fmt, sync::Arc, time::Duration};

/// The call was rejected because the circuit breaker is open: the inner
/// service was not called.
///
/// Downcast it from the stack's `BoxError`. Its `source()` is a refused
/// [`Fault`] (503 with the time left as `Retry-After`), which is how the rest
/// of the crate reads it: [`crate::error::error_response`] answers
/// `503 Service Unavailable` with a `Retry-After` header.
#[derive(Debug)]
pub struct Open {
    fault: Fault,
    breaker: Arc<str>,
}

impl Open {
    pub(crate) fn new(retry_after: Duration, breaker: Arc<str>) -> Self {
        Self {
            fault: Fault::refused(StatusCode::SERVICE_UNAVAILABLE, Some(retry_after)),
            breaker,
        }
    }

    /// How long until the breaker lets a probe call through (zero while
    /// half-open probes are in flight).
    pub fn retry_after(&self) -> Duration {
        self.fault.retry_after().unwrap_or_default()
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

impl Error for Open {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.fault)
    }
}
