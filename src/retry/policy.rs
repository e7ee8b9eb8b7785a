//! [`RetryPolicy`]: whether and when to try again.

use super::{layer::Shared, Attempts};
use crate::{
    body::ReplayBody,
    classify::{
        is_connect_error, is_repeatable, retry_after, AsStdError, Class, Classify,
        ServerErrorsAsFailures,
    },
    error::find_fault,
};
use http::{Request, Response};
use std::{fmt, pin::Pin, sync::atomic::Ordering, sync::Arc, time::Duration};
use tokio::time::{Instant, Sleep};
use tower::retry::budget::Budget;

/// The [`tower::retry::Policy`] of [`RetryLayer`](super::RetryLayer), over
/// requests whose bodies are [`ReplayBody`]s. One per request: tower clones
/// it for each.
#[derive(Clone)]
pub struct RetryPolicy<C = ServerErrorsAsFailures> {
    shared: Arc<Shared>,
    classifier: C,
    attempts: u32,
    started: Option<Instant>,
    previous: Duration,
}

impl<C> fmt::Debug for RetryPolicy<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// Why a request is retried (the `reason` of the `retrying request` event),
/// or why not.
type Decision = Result<(Duration, &'static str), &'static str>;

impl<C> RetryPolicy<C> {
    pub(super) fn new(shared: Arc<Shared>, classifier: C) -> Self {
        let previous = shared.config.base_delay;
        Self {
            shared,
            classifier,
            attempts: 0,
            started: None,
            previous,
        }
    }

    pub(super) fn config(&self) -> &super::Config {
        &self.shared.config
    }

    /// Counts one request in the retry budget.
    /// The bytes every request's read-ahead may hold together.
    pub(super) fn replay_budget(&self) -> &crate::body::ReplayBudget {
        &self.shared.replay
    }

    pub(super) fn deposit(&self) {
        self.shared.budget.deposit();
    }

    /// Whether `req` may be sent more than once under this layer's rule.
    pub(super) fn repeatable<B>(&self, req: &Request<B>) -> bool {
        is_repeatable(req, self.shared.config.retry_non_idempotent)
    }

    /// Whether to retry after attempt `n` of `req`, and after what delay;
    /// or why not.
    fn decide<B, Res, E>(
        &self,
        n: u32,
        req: &Request<B>,
        result: &Result<Response<Res>, E>,
    ) -> Decision
    where
        C: Classify<Response<Res>, E>,
        E: AsStdError,
    {
        if n >= self.shared.config.max_attempts {
            return Err("attempts exhausted");
        }
        let (delay, reason) = match refused_for(result) {
            Some(wait) => self.after_refusal(req, wait)?,
            None => self.after_failure(n, req, result)?,
        };
        self.within_deadline(delay)?;
        self.withdraw()?;
        Ok((delay, reason))
    }

    /// A layer below refused the request without sending it (an open
    /// breaker) and said when to come back: only worth waiting for when a
    /// deadline says how long we may.
    fn after_refusal<B>(&self, req: &Request<B>, wait: Option<Duration>) -> Decision {
        match wait {
            Some(wait) if self.shared.config.deadline.is_some() && self.repeatable(req) => {
                Ok((wait, "refused"))
            }
            _ => Err("refused"),
        }
    }

    /// The request was sent (or may have been): retried when the classifier
    /// says retryable and the request is safe to repeat, after the
    /// upstream's `Retry-After` or the backoff.
    fn after_failure<B, Res, E>(
        &self,
        n: u32,
        req: &Request<B>,
        result: &Result<Response<Res>, E>,
    ) -> Decision
    where
        C: Classify<Response<Res>, E>,
        E: AsStdError,
    {
        if self.classifier.classify(result) != Class::Retryable {
            return Err("not retryable");
        }
        let error = result.as_ref().err().and_then(AsStdError::as_std_error);
        // A connect error proves the request never left: any method may go again.
        if !error.is_some_and(is_connect_error) && !self.repeatable(req) {
            return Err("not safe to repeat");
        }
        let config = &self.shared.config;
        let asked = match result {
            Ok(res) if config.respect_retry_after => retry_after(res),
            _ => None,
        };
        Ok(match asked {
            Some(asked) => (asked.min(config.max_retry_after), "retry-after"),
            None => (
                config.backoff(n, self.previous, fastrand::f64()),
                if error.is_some() { "error" } else { "status" },
            ),
        })
    }

    /// No retry may start past the deadline.
    fn within_deadline(&self, delay: Duration) -> Result<(), &'static str> {
        let (Some(deadline), Some(started)) = (self.shared.config.deadline, self.started) else {
            return Ok(());
        };
        // Checked: a delay near `Duration::MAX` (an upstream's `Retry-After`
        // under a cap of centuries) is past any deadline.
        match started.elapsed().checked_add(delay) {
            Some(at) if at <= deadline => Ok(()),
            _ => Err("deadline"),
        }
    }

    fn withdraw(&self) -> Result<(), &'static str> {
        if self.shared.budget.withdraw() {
            Ok(())
        } else {
            self.shared.exhausted.fetch_add(1, Ordering::Relaxed);
            Err("budget exhausted")
        }
    }

    /// After an attempt: the wait before the next one, or `None` to
    /// answer with `result`.
    pub(super) fn after_attempt<B, Res, E>(
        &mut self,
        req: &Request<B>,
        result: &mut Result<Response<Res>, E>,
    ) -> Option<Pin<Box<Sleep>>>
    where
        C: Classify<Response<Res>, E>,
        E: AsStdError,
    {
        self.attempts += 1;
        let n = self.attempts;
        match self.decide(n, req, result) {
            Ok((delay, reason)) => {
                self.previous = delay;
                self.shared.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    attempt = n + 1,
                    delay_ms = delay.as_millis() as u64,
                    reason,
                    "retrying request"
                );
                Some(Box::pin(tokio::time::sleep(delay)))
            }
            Err(why) => {
                if n > 1 {
                    tracing::debug!(attempts = n, why, "not retrying");
                    if let Ok(res) = result {
                        res.extensions_mut().insert(Attempts::new(n));
                    }
                }
                None
            }
        }
    }

    /// The copy of `req` for the next attempt, if it may have one.
    pub(super) fn copy_request<B>(
        &mut self,
        req: &Request<ReplayBody<B>>,
    ) -> Option<Request<ReplayBody<B>>> {
        if self.shared.config.max_attempts <= 1 {
            return None;
        }
        if self.attempts == 0 && self.started.is_none() {
            // A body is only worth keeping for a request that may be sent
            // again; an empty one costs nothing, and whether its request may
            // be repeated is asked only if its answer could be retried.
            if !req.body().is_empty() && !self.repeatable(req) {
                return None;
            }
            if self.shared.config.deadline.is_some() {
                self.started = Some(Instant::now());
            }
        }
        let mut copy = Request::new(req.body().try_clone()?);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

/// When the error says the request was refused below without being sent:
/// `Some(when to come back)`.
fn refused_for<Res, E: AsStdError>(result: &Result<Res, E>) -> Option<Option<Duration>> {
    let error = result.as_ref().err()?.as_std_error()?;
    let fault = find_fault(error)?;
    fault.is_refused().then(|| fault.retry_after())
}

impl<C, B, Res, E> tower::retry::Policy<Request<ReplayBody<B>>, Response<Res>, E> for RetryPolicy<C>
where
    C: Classify<Response<Res>, E>,
    E: AsStdError,
{
    /// Boxed: a `Sleep` is large, and tower keeps the policy's future
    /// inside every response future, retried or not; the box is only made
    /// for a retry.
    type Future = Pin<Box<Sleep>>;

    fn retry(
        &mut self,
        req: &mut Request<ReplayBody<B>>,
        result: &mut Result<Response<Res>, E>,
    ) -> Option<Self::Future> {
        self.after_attempt(req, result)
    }

    fn clone_request(&mut self, req: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        self.copy_request(req)
    }
}
