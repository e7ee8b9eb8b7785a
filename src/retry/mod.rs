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
//! [`ReplayBody`]s.)
//!
//! # What is retried
//!
//! - Only what the shared [classifier](crate::classify) calls
//!   [`Retryable`](crate::classify::Class::Retryable): by default 408, 429,
//!   502, 503, 504, timeouts and connection errors. Nothing is decided
//!   again here.
//! - Only requests that are safe to repeat: GET, HEAD, OPTIONS, TRACE, PUT
//!   and DELETE; POST, PATCH and other methods only when the request carries
//!   an `Idempotency-Key` header, has the [`Repeatable`] extension (set it
//!   per route), or [`Config::retry_non_idempotent`] is on. A request of any
//!   method *without a body* is also retried after a connect error, which
//!   proves it never reached the server; a non-idempotent request with a
//!   body is not read ahead for that, so it is never retried.
//! - Bodies up to [`Config::max_replay_body`] (64 KiB by default) are read
//!   once and replayed byte for byte; a larger body, or one of unknown
//!   length that outgrows the limit, goes out streaming on the first
//!   attempt and is not retried. A request that cannot be retried is never
//!   buffered and its head is never copied.
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
//! obeyed up to [`Config::max_retry_after`]. An open circuit breaker's
//! rejection ([`crate::breaker::Open`]) is retried only when a deadline is
//! set and the breaker's remaining open time fits in it.
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

pub use self::{
    budget::RetryBudget,
    config::{Config, InvalidConfig, Jitter},
};

use crate::{
    body::{Buffer, ReplayBody},
    classify::{
        is_connect_error, is_idempotent, retry_after, AsStdError, Class, Classify,
        ServerErrorsAsFailures, IDEMPOTENCY_KEY,
    },
    BoxError,
};
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Sleep};
use tower::retry::budget::Budget;
use tower_layer::Layer;
use tower_service::Service;

/// How many attempts a response took, the first included: an extension of
/// every response of [`Retry`] that took more than one. Read it with
/// [`Attempts::of`], which gives 1 when the extension is absent: inserting
/// it into every response would cost an allocation per call, even for
/// requests that are never retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempts(u32);

impl Attempts {
    /// The number of attempts.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The number of attempts `res` took (1 without the extension).
    pub fn of<B>(res: &Response<B>) -> u32 {
        res.extensions().get::<Attempts>().map_or(1, |a| a.0)
    }
}

/// A request extension that marks a request as safe to repeat whatever its
/// method, for example on a route whose POST handler is idempotent.
///
/// ```
/// use tower_shield::retry::Repeatable;
///
/// let mut req = http::Request::post("http://127.0.0.1/jobs/42").body(()).unwrap();
/// req.extensions_mut().insert(Repeatable);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repeatable;

/// Counts kept by a [`RetryLayer`] and every service it built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Retries sent.
    pub retries: u64,
    /// Retries the budget refused.
    pub budget_exhausted: u64,
}

struct Shared {
    config: Config,
    budget: RetryBudget,
    retries: AtomicU64,
    exhausted: AtomicU64,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Whether `parts` may be sent more than once.
fn repeatable(
    config: &Config,
    method: &http::Method,
    headers: &http::HeaderMap,
    extensions: &http::Extensions,
) -> bool {
    is_idempotent(method)
        || config.retry_non_idempotent
        || headers.contains_key(IDEMPOTENCY_KEY)
        || extensions.get::<Repeatable>().is_some()
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
        RetryPolicy {
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
            attempts: 0,
            started: None,
            previous: self.shared.config.base_delay,
        }
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            policy: self.policy(),
        }
    }
}

/// The [`tower::retry::Policy`] of [`RetryLayer`], over requests whose
/// bodies are [`ReplayBody`]s. One per request: tower clones it for each.
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

impl<C> RetryPolicy<C> {
    /// Whether to retry after attempt `n` of `req`, and after what delay;
    /// or why not.
    fn decide<B, Res, E>(
        &mut self,
        n: u32,
        req: &Request<B>,
        result: &Result<Response<Res>, E>,
    ) -> Result<(Duration, &'static str), &'static str>
    where
        C: Classify<Response<Res>, E>,
        E: AsStdError,
    {
        let config = &self.shared.config;
        if n >= config.max_attempts {
            return Err("attempts exhausted");
        }
        // Only asked once an answer could be retried: a success never needs it.
        let repeatable = || repeatable(config, req.method(), req.headers(), req.extensions());
        let error = match result {
            Err(err) => err.as_std_error(),
            Ok(_) => None,
        };
        #[cfg(feature = "breaker")]
        let open = error
            .and_then(|e| e.downcast_ref::<crate::breaker::Open>())
            .map(crate::breaker::Open::retry_after);
        #[cfg(not(feature = "breaker"))]
        let open: Option<Duration> = None;
        let (delay, reason) = if let Some(wait) = open {
            // Only worth waiting for when a deadline says how long we may.
            if config.deadline.is_none() || !repeatable() {
                return Err("circuit open");
            }
            (wait, "circuit open")
        } else {
            if self.classifier.classify(result) != Class::Retryable {
                return Err("not retryable");
            }
            if !error.is_some_and(is_connect_error) && !repeatable() {
                return Err("not safe to repeat");
            }
            let asked = match result {
                Ok(res) if config.respect_retry_after => retry_after(res),
                _ => None,
            };
            match asked {
                Some(asked) => (asked.min(config.max_retry_after), "retry-after"),
                None => (
                    config.backoff(n, self.previous, fastrand::f64()),
                    if error.is_some() { "error" } else { "status" },
                ),
            }
        };
        if let (Some(deadline), Some(started)) = (config.deadline, self.started) {
            // Checked: a delay near `Duration::MAX` (an upstream's `Retry-After`
            // under a cap of centuries) is past any deadline.
            if started
                .elapsed()
                .checked_add(delay)
                .map_or(true, |at| at > deadline)
            {
                return Err("deadline");
            }
        }
        if !self.shared.budget.withdraw() {
            self.shared.exhausted.fetch_add(1, Ordering::Relaxed);
            return Err("budget exhausted");
        }
        Ok((delay, reason))
    }
}

impl<C> RetryPolicy<C> {
    /// After an attempt: the wait before the next one, or `None` to
    /// answer with `result`.
    fn after_attempt<B, Res, E>(
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
                }
                if let (Ok(res), true) = (result, n > 1) {
                    res.extensions_mut().insert(Attempts(n));
                }
                None
            }
        }
    }

    /// The copy of `req` for the next attempt, if it may have one.
    ///
    /// Inlined so that the copy is built where it is kept, not built and
    /// then moved there.
    #[inline(always)]
    fn copy_request<B>(&mut self, req: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        let config = &self.shared.config;
        if config.max_attempts <= 1 {
            return None;
        }
        if self.attempts == 0 && self.started.is_none() {
            // A body is only worth keeping for a request that may be sent
            // again; an empty one costs nothing, and whether its request may
            // be repeated is asked only if its answer could be retried.
            if !req.body().is_empty()
                && !repeatable(config, req.method(), req.headers(), req.extensions())
            {
                return None;
            }
            if config.deadline.is_some() {
                self.started = Some(Instant::now());
            }
        }
        let body = req.body().try_clone()?;
        let mut copy = Request::new(body);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        // `Request::new`'s header map is `HeaderMap::new()`, which owns no
        // memory: it is forgotten rather than run through its drop code.
        let empty = std::mem::replace(copy.headers_mut(), req.headers().clone());
        if empty.capacity() == 0 {
            std::mem::forget(empty);
        }
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
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

/// Retries failed requests; see the [module docs](self).
///
/// The attempts are run the way `tower::retry::Retry` runs them, with
/// [`RetryPolicy`] deciding exactly as it does under tower's `Retry`, but by
/// this service's own future: tower's clones the whole service, policy
/// included, into every response future; this one holds one clone of the
/// inner service and of the policy, and only for a request that may be
/// retried. A request that never will be goes straight to the inner
/// service.
#[derive(Clone)]
pub struct Retry<S, C = ServerErrorsAsFailures> {
    inner: S,
    policy: RetryPolicy<C>,
}

impl<S: fmt::Debug, C> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, C> Retry<S, C> {
    define_inner_service_accessors!();
}

impl<S, C, B, Res> Service<Request<B>> for Retry<S, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<Res>> + Clone,
    S::Error: Into<BoxError> + AsStdError,
    C: Classify<Response<Res>, S::Error> + Clone,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response<Res>;
    type Error = BoxError;
    type Future = ResponseFuture<S, C, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let config = &self.policy.shared.config;
        if config.max_attempts > 1 {
            self.policy.shared.budget.deposit();
        }
        // The request is looked at in place and re-wrapped with `map`, not
        // taken apart: its head is a few hundred bytes, and every move of
        // it is a copy.
        let empty = req.body().is_end_stream();
        let may_retry = config.max_attempts > 1
            && (empty || repeatable(config, req.method(), req.headers(), req.extensions()))
            && req.body().size_hint().lower() <= config.max_replay_body as u64;
        if !may_retry {
            // Never sent twice: straight to the inner service, without a
            // policy, a copy or a read-ahead.
            return ResponseFuture {
                state: State::Called {
                    future: self.inner.call(req.map(ReplayBody::passthrough)),
                },
                retry: None,
            };
        }
        if empty {
            let req = req.map(|_| ReplayBody::empty());
            let mut policy = self.policy.clone();
            let copy = policy.copy_request(&req);
            // Built in place, in one expression: no `Option::map` and no
            // local for the retry state, each of which moves it once more.
            return ResponseFuture {
                retry: if copy.is_some() {
                    Some(Retrying {
                        // Made ready again before it is called.
                        service: self.inner.clone(),
                        policy,
                        request: copy,
                    })
                } else {
                    None
                },
                state: State::Called {
                    future: self.inner.call(req),
                },
            };
        }
        // Read the body ahead; the service made ready for this call goes
        // with it, a clone stays.
        let limit = config.max_replay_body;
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        ResponseFuture {
            state: State::Buffering {
                buffer: ReplayBody::buffer(body, limit),
            },
            retry: Some(Retrying {
                service: ready,
                policy: self.policy.clone(),
                // The head waits in the copy's place (the copy is made once
                // the body is read), which keeps the future small.
                request: Some(Request::from_parts(parts, ReplayBody::empty())),
            }),
        }
    }
}

/// What a request that may be retried carries between attempts.
struct Retrying<S, C, B> {
    service: S,
    policy: RetryPolicy<C>,
    /// The copy for the next attempt (`None` when none can be made).
    request: Option<Request<ReplayBody<B>>>,
}

pin_project! {
    /// Response future of [`Retry`].
    pub struct ResponseFuture<S, C, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S::Future, B>,
        retry: Option<Retrying<S, C, B>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Buffering {
            buffer: Buffer<B>,
        },
        Called {
            #[pin]
            future: F,
        },
        Waiting {
            sleep: Pin<Box<Sleep>>,
        },
        Retrying,
    }
}

impl<S, C, B> fmt::Debug for ResponseFuture<S, C, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, C, B, Res> Future for ResponseFuture<S, C, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<Res>>,
    S::Error: Into<BoxError> + AsStdError,
    C: Classify<Response<Res>, S::Error>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Res>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Buffering { buffer } => {
                    let body = ready!(Pin::new(buffer).poll(cx)).map_err(Into::into)?;
                    let retry = this.retry.as_mut().expect("set with the buffer");
                    let head = retry.request.take().expect("set with the buffer");
                    let req = head.map(|_| body);
                    retry.request = retry.policy.copy_request(&req);
                    // The service `call` made ready.
                    let future = retry.service.call(req);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let mut result = ready!(future.poll(cx));
                    // As under tower's `Retry`: without a copy for the next
                    // attempt, the answer is final.
                    let Some(Retrying {
                        policy,
                        request: Some(copy),
                        ..
                    }) = this.retry.as_mut()
                    else {
                        return Poll::Ready(result.map_err(Into::into));
                    };
                    match policy.after_attempt(copy, &mut result) {
                        Some(sleep) => this.state.set(State::Waiting { sleep }),
                        None => return Poll::Ready(result.map_err(Into::into)),
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Retrying);
                }
                StateProj::Retrying => {
                    let retry = this.retry.as_mut().expect("only a retried request waits");
                    ready!(retry.service.poll_ready(cx)).map_err(Into::into)?;
                    let req = retry.request.take().expect("only a copied request waits");
                    retry.request = retry.policy.copy_request(&req);
                    let future = retry.service.call(req);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
