//! Retries with exponential backoff and jitter, a retry budget,
//! `Retry-After`, idempotency rules and replay of request bodies.
//!
//! [`RetryLayer`] follows [`tower::retry`]: [`RetryPolicy`] implements its
//! [`Policy`](tower::retry::Policy) and does the deciding, and [`Retry`]
//! runs the attempts as tower's `Retry` does, without cloning the whole
//! service into every response future (measured in BENCHMARKS.md). The
//! layer adds the one thing a `Policy` cannot do, because `clone_request`
//! is synchronous: reading a request body ahead, up to a limit, so that it
//! can be sent again. (`RetryPolicy` can also be used with
//! `tower::retry::Retry` directly, over requests whose bodies are already
//! [`ReplayBody`](crate::body::ReplayBody)s.)
//!
//! # What is retried
//!
//! - Only what the shared [classifier](crate::classify) calls
//!   [`Retryable`](crate::classify::Class::Retryable): by default 408, 429,
//!   502, 503, 504, timeouts and connection errors. Nothing is decided
//!   again here.
//! - Only requests that are safe to repeat, by the crate's one rule
//!   ([`classify::is_repeatable`](crate::classify::is_repeatable)): GET,
//!   HEAD, OPTIONS, TRACE, PUT and DELETE; POST, PATCH and other methods
//!   only when the request carries an `Idempotency-Key` header, has the
//!   [`Repeatable`] extension (set it per route), or
//!   [`Config::retry_non_idempotent`] is on. A request of any
//!   method *without a body* is also retried after a connect error, which
//!   proves it never reached the server; a non-idempotent request with a
//!   body is not read ahead for that, so it is never retried.
//! - Bodies up to [`Config::max_replay_body`] (64 KiB by default) are read
//!   once and replayed byte for byte; a larger body, or one of unknown
//!   length that outgrows the limit, goes out streaming on the first
//!   attempt and is not retried. A request that cannot be retried is never
//!   buffered and its head is never copied. All the bodies read ahead at
//!   once hold at most [`Config::max_replay_total`] (32 MiB by default);
//!   past it, a body streams through unreplayable. A read-ahead waits on
//!   the caller outside any timeout of the stack inside, so where requests
//!   come from callers, wrap their bodies with a deadline
//!   ([`CallerBodyLayer::deadline`](crate::body::CallerBodyLayer::deadline)),
//!   as the sidecar does: a body that stalls is then a 408.
//! - At most [`Config::max_attempts`] attempts (3 by default, the first
//!   included), none starting after the [deadline](Config::deadline).
//! - A retry budget, shared by every clone of a layer's services: retries
//!   may add at most [`Config::budget_percent`] of the requests of the last
//!   10 s (20% by default), plus [`Config::budget_min_per_sec`]; when it is
//!   spent, failures come back at once. This is what stops a retry storm.
//!   [`RetryBudget`] does what tower's `TpsBudget` does without reading the
//!   clock on every request.
//!
//! The delay before retry *n* is the backoff ([`Config::backoff`]) unless a
//! 429 or 503 answer says `Retry-After` (seconds or an HTTP date), which is
//! obeyed up to [`Config::max_retry_after`]. A request a layer below
//! refused without sending (its error carries a refused
//! [`Fault`](crate::error::Fault), as an open circuit breaker's does) is
//! retried only when a deadline is set and the wait it asks fits in it.
//!
//! A response that took more than one attempt says how many in an
//! [`Attempts`] extension ([`Attempts::of`] reads it); every retry emits a `tracing` event (`attempt`,
//! `delay_ms`, `reason`); [`RetryLayer::metrics`] counts retries and the
//! times the budget said no.
//!
//! # Where it goes in a stack
//!
//! Outside the circuit breaker, which is outside the per-attempt timeout:
//! `retry → breaker → timeout → client`. Each attempt then has its own
//! timeout, every attempt counts in the breaker, and an open breaker fails
//! a retry fast instead of being hammered. [`ClientStack`](crate::stack::ClientStack)
//! uses this order.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_shield::retry::{Attempts, Config, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! # tokio::time::pause();
//! let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
//! let counter = calls.clone();
//! // Fails twice, then answers.
//! let flaky = service_fn(move |_req: Request<_>| {
//!     let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
//!     async move {
//!         let status = if n < 2 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
//!         Ok::<_, std::convert::Infallible>(Response::builder().status(status).body(()).unwrap())
//!     }
//! });
//! let layer = RetryLayer::new(Config::default().base_delay(Duration::from_millis(10))).unwrap();
//! let client = ServiceBuilder::new().layer(layer.clone()).service(flaky);
//!
//! let res = client.oneshot(Request::new(Full::new(Bytes::from("hi")))).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(Attempts::of(&res), 3);
//! assert_eq!(layer.metrics().retries, 2);
//! # }
//! ```

mod budget;
mod config;
mod future;
mod layer;
mod policy;
mod service;

pub use self::{
    budget::RetryBudget,
    config::{Config, InvalidConfig, Jitter},
    future::ResponseFuture,
    layer::{Metrics, RetryLayer},
    policy::RetryPolicy,
    service::Retry,
};
/// The request extension that marks a request as safe to repeat; see
/// [`classify::Repeatable`](crate::classify::Repeatable).
pub use crate::classify::Repeatable;

use http::Response;

/// How many attempts a response took, the first included: an extension of
/// every response of [`Retry`] that took more than one. Read it with
/// [`Attempts::of`], which gives 1 when the extension is absent: inserting
/// it into every response would cost an allocation per call, even for
/// requests that are never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempts(u32);

impl Attempts {
    pub(crate) fn new(n: u32) -> Self {
        Self(n)
    }

    /// The number of attempts.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The number of attempts `res` took (1 without the extension).
    pub fn of<B>(res: &Response<B>) -> u32 {
        res.extensions().get::<Attempts>().map_or(1, |a| a.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated),
        ]
    }

    proptest! {
        /// Every delay stays inside its jitter's bounds and under the cap.
        #[test]
        fn backoff_stays_in_bounds(
            retry in 1u32..200,
            base_ms in 0u64..5_000,
            extra_ms in 0u64..60_000,
            multiplier in 1.0f64..10.0,
            jitter in jitter(),
            previous_ms in 0u64..120_000,
            unit in 0.0f64..1.0,
        ) {
            let base = Duration::from_millis(base_ms);
            let max = base + Duration::from_millis(extra_ms);
            let config = Config::default()
                .base_delay(base)
                .max_delay(max)
                .multiplier(multiplier)
                .jitter(jitter);
            prop_assert!(config.validate().is_ok());
            let previous = Duration::from_millis(previous_ms);
            let d = config.backoff(retry, previous, unit).as_secs_f64();
            let exp = (base.as_secs_f64() * multiplier.powi(retry as i32 - 1)).min(max.as_secs_f64());
            let eps = 1e-6;
            prop_assert!(d <= max.as_secs_f64() + eps);
            match jitter {
                Jitter::None => prop_assert!((d - exp).abs() <= eps * exp.max(1.0)),
                Jitter::Full => prop_assert!(d <= exp + eps),
                Jitter::Equal => prop_assert!(d + eps >= exp / 2.0 && d <= exp + eps),
                Jitter::Decorrelated => {
                    let high = (previous.as_secs_f64() * 3.0).max(base.as_secs_f64());
                    prop_assert!(d + eps >= base.as_secs_f64().min(max.as_secs_f64()));
                    prop_assert!(d <= high + eps);
                }
            }
        }
    }

    #[test]
    fn backoff_never_panics_at_the_extremes() {
        for max in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
            for jitter in [
                Jitter::None,
                Jitter::Full,
                Jitter::Equal,
                Jitter::Decorrelated,
            ] {
                let config = Config::default()
                    .base_delay(Duration::from_secs(1))
                    .max_delay(max)
                    .multiplier(10.0)
                    .jitter(jitter);
                assert!(config.validate().is_ok());
                for retry in [1, 30, u32::MAX] {
                    for unit in [0.0, 0.5, 1.0, f64::NAN] {
                        let d = config.backoff(retry, Duration::MAX, unit);
                        assert!(d <= max);
                    }
                }
            }
        }
    }

    #[test]
    fn invalid_values_name_the_field() {
        for (config, field) in [
            (Config::default().max_attempts(0), "max_attempts"),
            (Config::default().multiplier(f64::NAN), "multiplier"),
            (Config::default().multiplier(0.9), "multiplier"),
            (
                Config::default()
                    .base_delay(Duration::from_secs(2))
                    .max_delay(Duration::from_secs(1)),
                "max_delay",
            ),
            (Config::default().budget_percent(-1.0), "budget_percent"),
            (
                Config::default().budget_percent(f64::INFINITY),
                "budget_percent",
            ),
            (Config::default().deadline(Duration::ZERO), "deadline"),
        ] {
            assert_eq!(config.validate().unwrap_err().field(), field);
        }
    }
}
