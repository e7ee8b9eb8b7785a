//! Ready-made client and server stacks, in the recommended order.
//!
//! [`ClientStack`] is what to put in front of an outgoing HTTP client;
//! [`ServerStack`] is what to put around an axum router or any HTTP
//! service. Each is a [`Layer`] built in code or from the
//! [`Config`](crate::config::Config) the sidecar reads, and each grows as
//! the crate's layers land. Today they hold the whole-request timeout and,
//! when given one, a circuit breaker:
//!
//! | stack | layers, outermost first |
//! |---|---|
//! | [`ClientStack`] | context (optional), circuit breaker (optional), timeout (default 5 s) |
//! | [`ServerStack`] | context (optional), error responses ([`crate::error::ErrorResponseLayer`]), circuit breaker (optional), timeout |
//!
//! Context is outermost on both sides: on a server its span covers the
//! whole request and even a 504 from the timeout carries the request's IDs;
//! on a client (inside the retry layer) every attempt is a client span of
//! its own with its own `traceparent`.
//!
//! The breaker is outside the timeout, so a call that the timeout cuts off
//! counts for the breaker as a (retryable) failure: a dependency that hangs
//! opens the breaker just as one that fails does.
//!
//! Retries go outside the client stack, with
//! [`ServiceBuilderExt::retries`](crate::ServiceBuilderExt::retries):
//! `retry → breaker → timeout → client`, so that the timeout is per attempt,
//! every attempt counts in the breaker, and an open breaker fails a retry
//! fast. The retry layer is not inside `ClientStack` itself because it
//! changes the body type the client sees (to [`ReplayBody`](crate::body::ReplayBody)),
//! which a stack without retries should not impose. The sidecar builds its
//! stack this way, from its `[retry]` section
//! ([`RetryConfig::layer`](crate::config::RetryConfig::layer)).
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use std::{convert::Infallible, time::Duration};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_shield::{stack::ClientStack, ServiceBuilderExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let client = ServiceBuilder::new()
//!     .client_stack(ClientStack::new().timeout(Duration::from_millis(250)))
//!     .service(service_fn(|_req: Request<String>| async {
//!         Ok::<_, Infallible>(Response::new(String::from("pong")))
//!     }));
//! let res = client.oneshot(Request::new(String::new())).await.unwrap();
//! assert_eq!(res.into_body(), "pong");
//! # }
//! ```

#[cfg(feature = "breaker")]
use crate::{
    breaker::{CircuitBreaker, CircuitBreakerLayer, KeyBy},
    classify::ServerErrorsAsFailures,
};
use crate::{
    error::{ErrorResponse, ErrorResponseFuture, ErrorResponseLayer},
    BoxError,
};
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};
use tokio::time::Sleep;
use tower::timeout::error::Elapsed;
use tower_layer::Layer;
use tower_service::Service;

/// The default whole-request timeout of both stacks.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The layers for an outgoing client, in the recommended order.
///
/// The stack's errors are [`BoxError`]s holding the typed error of the layer
/// that failed ([`tower::timeout::error::Elapsed`] for the timeout) or the
/// client's own error.
#[derive(Debug, Clone)]
pub struct ClientStack {
    timeout: Option<Duration>,
    #[cfg(feature = "context")]
    context: Option<std::sync::Arc<crate::context::Config>>,
    #[cfg(feature = "breaker")]
    breaker: Option<CircuitBreakerLayer<KeyBy>>,
}

impl Default for ClientStack {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientStack {
    /// The stack with its defaults: a 5 s whole-request timeout.
    pub const fn new() -> Self {
        Self {
            timeout: Some(DEFAULT_TIMEOUT),
            #[cfg(feature = "context")]
            context: None,
            #[cfg(feature = "breaker")]
            breaker: None,
        }
    }

    /// Sets the whole-request timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Removes the whole-request timeout.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// Adds a circuit breaker outside the timeout. Get its breakers from
    /// the layer ([`CircuitBreakerLayer::breakers`]) before passing it in.
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    pub fn circuit_breaker(mut self, layer: CircuitBreakerLayer<KeyBy>) -> Self {
        self.breaker = Some(layer);
        self
    }

    /// Adds a [`ClientContextLayer`](crate::context::ClientContextLayer)
    /// with these settings, outermost: outgoing requests carry the current
    /// trace context and IDs.
    #[cfg(feature = "context")]
    #[cfg_attr(docsrs, doc(cfg(feature = "context")))]
    pub fn context(mut self, config: crate::context::Config) -> Self {
        self.context = Some(std::sync::Arc::new(config));
        self
    }

    /// The breakers of the stack's circuit breaker, if it has one.
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    pub fn breakers(&self) -> Option<crate::breaker::Breakers> {
        self.breaker.as_ref().map(CircuitBreakerLayer::breakers)
    }

    /// The stack the configuration describes: `[timeout]` and, when the
    /// section is present, `[breaker]`.
    #[cfg(feature = "config")]
    #[cfg_attr(docsrs, doc(cfg(feature = "config")))]
    pub fn from_config(config: &crate::config::Config) -> Result<Self, crate::config::ConfigError> {
        #[allow(unused_mut)]
        let mut stack = Self::new().timeout(config.timeout.request);
        #[cfg(feature = "breaker")]
        if let Some(breaker) = &config.breaker {
            stack = stack.circuit_breaker(breaker.layer()?);
        }
        #[cfg(feature = "context")]
        if let Some(context) = &config.context {
            stack = stack.context(context.to_context()?);
        }
        Ok(stack)
    }

    fn guard<S>(&self, inner: S) -> Guarded<S> {
        #[cfg(feature = "breaker")]
        if let Some(layer) = &self.breaker {
            return Guarded {
                kind: GuardedKind::Breaker {
                    inner: layer.layer(ErrInto { inner }),
                },
            };
        }
        Guarded {
            kind: GuardedKind::Plain { inner },
        }
    }
}

impl ClientStack {
    fn guarded<S>(&self, inner: S) -> Guarded<ClientService<S>> {
        // The breaker goes outside the timeout, so that a call the timeout
        // cuts off reaches the breaker as a failure (`Elapsed`) instead of
        // as a dropped, uncounted call.
        self.guard(ClientService {
            inner,
            timeout: self.timeout,
        })
    }
}

/// The service [`ClientStack`] builds.
#[cfg(feature = "context")]
pub type ClientStackService<S> = crate::context::ClientContext<Guarded<ClientService<S>>>;
/// The service [`ClientStack`] builds.
#[cfg(not(feature = "context"))]
pub type ClientStackService<S> = Guarded<ClientService<S>>;

impl<S> Layer<S> for ClientStack {
    type Service = ClientStackService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let guarded = self.guarded(inner);
        #[cfg(feature = "context")]
        return crate::context::ClientContext::optional(guarded, self.context.clone());
        #[cfg(not(feature = "context"))]
        guarded
    }
}

/// The inner part of the stacks: the circuit breaker when there is one.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    kind: GuardedKind<S>,
}

#[derive(Debug, Clone)]
enum GuardedKind<S> {
    /// No breaker: the inner service as it is; its errors become
    /// `BoxError`s in the future.
    Plain { inner: S },
    #[cfg(feature = "breaker")]
    Breaker {
        inner: CircuitBreaker<ErrInto<S>, KeyBy>,
    },
}

impl<S, B, RB> Service<Request<B>> for Guarded<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = GuardedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match &mut self.kind {
            GuardedKind::Plain { inner } => inner.poll_ready(cx).map_err(Into::into),
            #[cfg(feature = "breaker")]
            GuardedKind::Breaker { inner } => inner.poll_ready(cx),
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let kind = match &mut self.kind {
            GuardedKind::Plain { inner } => GuardedFutureKind::Plain {
                inner: inner.call(req),
            },
            #[cfg(feature = "breaker")]
            GuardedKind::Breaker { inner } => GuardedFutureKind::Breaker {
                inner: inner.call(req),
            },
        };
        GuardedFuture { kind }
    }
}

#[cfg(feature = "breaker")]
type BreakerFuture<F> = crate::breaker::ResponseFuture<ErrIntoFuture<F>, ServerErrorsAsFailures>;

#[cfg(not(feature = "breaker"))]
type BreakerFuture<F> = ErrIntoFuture<F>;

pin_project! {
    /// Response future of [`Guarded`].
    pub struct GuardedFuture<F> {
        #[pin]
        kind: GuardedFutureKind<F>,
    }
}

pin_project! {
    #[project = GuardedProj]
    enum GuardedFutureKind<F> {
        Plain { #[pin] inner: F },
        Breaker { #[pin] inner: BreakerFuture<F> },
    }
}

impl<F> std::fmt::Debug for GuardedFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedFuture").finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for GuardedFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            GuardedProj::Plain { inner } => inner.poll(cx).map_err(Into::into),
            GuardedProj::Breaker { inner } => inner.poll(cx),
        }
    }
}

/// Turns the inner service's error into a [`BoxError`], so that the
/// classifiers can read any client's errors.
#[derive(Debug, Clone)]
pub struct ErrInto<S> {
    inner: S,
}

impl<S, Req> Service<Req> for ErrInto<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ErrIntoFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ErrIntoFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// Response future of [`ErrInto`].
    #[derive(Debug)]
    pub struct ErrIntoFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, T, E> Future for ErrIntoFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_err(Into::into)
    }
}

/// The service [`ClientStack`] builds.
#[derive(Debug, Clone)]
pub struct ClientService<S> {
    inner: S,
    timeout: Option<Duration>,
}

impl<S> ClientService<S> {
    define_inner_service_accessors!();
}

impl<S, Req> Service<Req> for ClientService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
            // Only a stack with a timeout pays for a timer.
            sleep: self.timeout.map(tokio::time::sleep),
        }
    }
}

pin_project! {
    /// Response future of [`ClientService`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => {
                ready!(sleep.poll(cx));
                Poll::Ready(Err(Elapsed::new().into()))
            }
            None => Poll::Pending,
        }
    }
}

/// The layers for a server (an axum router or any HTTP service), in the
/// recommended order.
///
/// The service it builds never fails: every error becomes a response through
/// [`error_response`](crate::error::error_response) (a timeout is 504), so
/// it can go straight into axum's `Router::layer`.
#[derive(Debug, Clone)]
pub struct ServerStack {
    client: ClientStack,
    #[cfg(feature = "context")]
    context: Option<std::sync::Arc<crate::context::Config>>,
}

impl Default for ServerStack {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerStack {
    /// The stack with its defaults: a 5 s whole-request timeout.
    pub const fn new() -> Self {
        Self {
            client: ClientStack::new(),
            #[cfg(feature = "context")]
            context: None,
        }
    }

    /// Sets the whole-request timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.timeout(timeout);
        self
    }

    /// Removes the whole-request timeout.
    pub fn no_timeout(mut self) -> Self {
        self.client = self.client.no_timeout();
        self
    }

    /// Adds a circuit breaker: while it is open the server sheds load with
    /// `503 Service Unavailable` and `Retry-After`, without calling the
    /// handler.
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    pub fn circuit_breaker(mut self, layer: CircuitBreakerLayer<KeyBy>) -> Self {
        self.client = self.client.circuit_breaker(layer);
        self
    }

    /// Adds a [`ServerContextLayer`](crate::context::ServerContextLayer)
    /// with these settings, outermost: every request gets a context, IDs
    /// and a span.
    #[cfg(feature = "context")]
    #[cfg_attr(docsrs, doc(cfg(feature = "context")))]
    pub fn context(mut self, config: crate::context::Config) -> Self {
        self.context = Some(std::sync::Arc::new(config));
        self
    }

    /// The stack the configuration describes.
    #[cfg(feature = "config")]
    #[cfg_attr(docsrs, doc(cfg(feature = "config")))]
    pub fn from_config(config: &crate::config::Config) -> Result<Self, crate::config::ConfigError> {
        let client = ClientStack::from_config(config)?;
        Ok(Self {
            #[cfg(feature = "context")]
            context: client.context.clone(),
            client,
        })
    }
}

impl<S> Layer<S> for ServerStack {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let inner = ErrorResponseLayer::new().layer(self.client.guarded(inner));
        #[cfg(feature = "context")]
        let inner = crate::context::ServerContext::optional(inner, self.context.clone());
        ServerService { inner }
    }
}

#[cfg(feature = "context")]
type ServerInner<S> = crate::context::ServerContext<ErrorResponse<Guarded<ClientService<S>>>>;
#[cfg(not(feature = "context"))]
type ServerInner<S> = ErrorResponse<Guarded<ClientService<S>>>;

#[cfg(feature = "context")]
type ServerFuture<F> =
    crate::context::ServerContextFuture<ErrorResponseFuture<GuardedFuture<ResponseFuture<F>>>>;
#[cfg(not(feature = "context"))]
type ServerFuture<F> = ErrorResponseFuture<GuardedFuture<ResponseFuture<F>>>;

/// The service [`ServerStack`] builds.
#[derive(Debug, Clone)]
pub struct ServerService<S> {
    inner: ServerInner<S>,
}

impl<S, ReqB, B> Service<Request<ReqB>> for ServerService<S>
where
    S: Service<Request<ReqB>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: From<String>,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = ServerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        self.inner.call(req)
    }
}
