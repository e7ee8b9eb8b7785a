//! Ready-made client and server stacks, in the recommended order.
//!
//! [`ClientStack`] is what to put in front of an outgoing HTTP client;
//! [`ServerStack`] is what to put around an axum router or any HTTP
//! service. Each is a [`Layer`] built in code or from the
//! `config::Config` the sidecar reads, and each is plain
//! composition of the crate's layers and tower's own parts
//! ([`tower::timeout::Timeout`], and [`tower::util::Either`] for the
//! sections of a configuration file, which may be absent): a stack without
//! a breaker has no breaker in its type.
//!
//! | stack | layers, outermost first |
//! |---|---|
//! | [`ClientStack`] | cache (optional), context (optional), credentials (optional, `auth`), circuit breaker (optional, any key and classifier), [`CallerTimeoutLayer`], timeout of the response head (default 5 s), [`IdleTimeoutLayer`] between the frames of its body (default 30 s) |
//! | [`ServerStack`] | context (optional), error responses ([`crate::error::ErrorResponseLayer`]), [`CallerBodyLayer`], auth (optional), rate limit (optional), cache (optional), circuit breaker (optional), [`CallerTimeoutLayer`], timeout |
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
//! A failure that is the caller's own is not counted: the server stack
//! wraps each request body ([`CallerBodyLayer`]) so that a malformed or
//! truncated body is a 400 fault, and a timeout that passes while the body
//! waits on its caller is a 408 ([`CallerTimeoutLayer`], on both stacks).
//! The handler of a server stack sees the body as a
//! [`CallerBody`](crate::body::CallerBody) (axum's `Router` takes any body).
//!
//! Retries go outside the client stack, with
//! `ServiceBuilderExt::retries`:
//! `retry → breaker → timeout → client`, so that the timeout is per attempt,
//! every attempt counts in the breaker, and an open breaker fails a retry
//! fast. The retry layer is not inside `ClientStack` itself because it
//! changes the body type the client sees (to [`ReplayBody`](crate::body::ReplayBody)),
//! which a stack without retries should not impose. The sidecar builds its
//! stack this way, from its `[retry]` section.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
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
//! // The body is the client's, behind the stack's timeout between frames.
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "pong");
//! # }
//! ```

use crate::{
    body::{
        CallerBodyLayer, CallerBodyService, CallerTimeout, CallerTimeoutLayer, IdleTimeout,
        IdleTimeoutLayer,
    },
    error::ErrorResponseLayer,
};
use std::time::Duration;
use tower::timeout::Timeout;
#[cfg(all(feature = "config", feature = "breaker", feature = "context"))]
use tower::util::option_layer;
#[cfg(feature = "breaker")]
use tower::util::Either;
use tower_layer::{Identity, Layer};

/// The default per-attempt timeout of both stacks.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The default longest wait between two frames of a response body, on the
/// client stack.
pub const DEFAULT_BODY_IDLE: Duration = Duration::from_secs(30);

/// The timeout a stack without one has: so far away that it never fires
/// (tokio caps it at about 30 years).
const NEVER: Duration = Duration::MAX;

/// The layers for an outgoing client, in the recommended order.
///
/// `Ctx` is the context layer and `Brk` the circuit breaker, each
/// [`Identity`] until set. The stack's errors are
/// [`BoxError`](crate::BoxError)s holding the typed error of the layer
/// that failed ([`tower::timeout::error::Elapsed`] for the timeout) or the
/// client's own error.
#[derive(Debug, Clone)]
pub struct ClientStack<Ctx = Identity, Brk = Identity, Cch = Identity, Ath = Identity> {
    timeout: Duration,
    body_idle: Option<Duration>,
    /// Whether a circuit breaker is in the stack, to hear of bodies that fail.
    breaker_listens: bool,
    context: Ctx,
    breaker: Brk,
    cache: Cch,
    auth: Ath,
}

impl Default for ClientStack {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientStack {
    /// The stack with its defaults: a 5 s timeout for the response head,
    /// and 30 s between the frames of its body.
    pub const fn new() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            body_idle: Some(DEFAULT_BODY_IDLE),
            breaker_listens: false,
            context: Identity::new(),
            breaker: Identity::new(),
            cache: Identity::new(),
            auth: Identity::new(),
        }
    }
}

impl<Ctx, Brk, Cch, Ath> ClientStack<Ctx, Brk, Cch, Ath> {
    /// Sets the timeout of one call (of one attempt, under a retry layer):
    /// how long it may take to answer with a response head.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the longest wait between two frames of a response body
    /// ([`IdleTimeoutLayer`]): past it the body fails, its connection is
    /// ended, and a circuit breaker in the stack counts the call as failed.
    pub fn body_idle_timeout(mut self, timeout: Duration) -> Self {
        self.body_idle = Some(timeout);
        self
    }

    /// Lets response bodies wait for their frames forever.
    pub fn no_body_idle_timeout(mut self) -> Self {
        self.body_idle = None;
        self
    }

    /// Removes the timeout: tower's `Timeout` stays in the stack, with a
    /// deadline that never comes, so that the stack's type and its
    /// [`BoxError`](crate::BoxError) errors are the same either way.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = NEVER;
        self
    }

    /// Adds a circuit breaker outside the timeout, with any key and
    /// classifier. Get its breakers from the layer
    /// ([`CircuitBreakerLayer::breakers`](crate::breaker::CircuitBreakerLayer::breakers))
    /// or from [`breakers`](Self::breakers).
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    pub fn circuit_breaker<K, C>(
        self,
        layer: crate::breaker::CircuitBreakerLayer<K, C>,
    ) -> ClientStack<Ctx, crate::breaker::CircuitBreakerLayer<K, C>, Cch, Ath> {
        ClientStack {
            timeout: self.timeout,
            body_idle: self.body_idle,
            breaker_listens: true,
            context: self.context,
            breaker: layer,
            cache: self.cache,
            auth: self.auth,
        }
    }

    /// Adds a [`ClientContextLayer`](crate::context::ClientContextLayer)
    /// with these settings, outermost: outgoing requests carry the current
    /// trace context and IDs.
    #[cfg(feature = "context")]
    #[cfg_attr(docsrs, doc(cfg(feature = "context")))]
    pub fn context(
        self,
        config: crate::context::Config,
    ) -> ClientStack<crate::context::ClientContextLayer, Brk, Cch, Ath> {
        ClientStack {
            timeout: self.timeout,
            body_idle: self.body_idle,
            breaker_listens: self.breaker_listens,
            context: crate::context::ClientContextLayer::new(config),
            breaker: self.breaker,
            cache: self.cache,
            auth: self.auth,
        }
    }

    /// Adds a response cache outermost: a hit costs no call at all, and
    /// the cache's `stale-if-error` sees the breaker's refusals and the
    /// timeout. With retries (outside the stack), add the cache with
    /// `ServiceBuilderExt::cache` before `retries` instead, so that a hit
    /// costs no attempt either.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub fn cache<St>(
        self,
        layer: crate::cache::CacheLayer<St>,
    ) -> ClientStack<Ctx, Brk, crate::cache::CacheLayer<St>, Ath> {
        ClientStack {
            timeout: self.timeout,
            body_idle: self.body_idle,
            breaker_listens: self.breaker_listens,
            context: self.context,
            breaker: self.breaker,
            cache: layer,
            auth: self.auth,
        }
    }

    /// Attaches a service credential to every request
    /// ([`AttachLayer`](crate::auth::AttachLayer)), inside the context and
    /// outside the breaker: a request refused with 401 is sent once more
    /// with a fresh token, and each attempt counts for the breaker.
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub fn auth(
        self,
        layer: crate::auth::AttachLayer,
    ) -> ClientStack<Ctx, Brk, Cch, crate::auth::AttachLayer> {
        ClientStack {
            timeout: self.timeout,
            body_idle: self.body_idle,
            breaker_listens: self.breaker_listens,
            context: self.context,
            breaker: self.breaker,
            cache: self.cache,
            auth: layer,
        }
    }

    /// The breakers of the stack's circuit breaker, if it has one.
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    pub fn breakers(&self) -> Option<crate::breaker::Breakers>
    where
        Brk: HasBreakers,
    {
        self.breaker.breakers()
    }
}

/// The layer in a stack's breaker place, if it is a circuit breaker: what
/// [`ClientStack::breakers`] reads.
#[cfg(feature = "breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
pub trait HasBreakers {
    /// The breakers, if there is a circuit breaker.
    fn breakers(&self) -> Option<crate::breaker::Breakers>;
}

#[cfg(feature = "breaker")]
impl HasBreakers for Identity {
    fn breakers(&self) -> Option<crate::breaker::Breakers> {
        None
    }
}

#[cfg(feature = "breaker")]
impl<K, C> HasBreakers for crate::breaker::CircuitBreakerLayer<K, C> {
    fn breakers(&self) -> Option<crate::breaker::Breakers> {
        Some(crate::breaker::CircuitBreakerLayer::breakers(self))
    }
}

#[cfg(feature = "breaker")]
impl<A: HasBreakers, B: HasBreakers> HasBreakers for Either<A, B> {
    fn breakers(&self) -> Option<crate::breaker::Breakers> {
        match self {
            Either::Left(a) => a.breakers(),
            Either::Right(b) => b.breakers(),
        }
    }
}

/// The stacks the configuration describes: each optional section is an
/// [`Either`] of its layer and [`Identity`].
#[cfg(all(feature = "config", feature = "breaker", feature = "context"))]
mod configured {
    use super::*;
    use crate::{
        breaker::CircuitBreakerLayer,
        config::{Config, ConfigError},
        context::{ClientContextLayer, ServerContextLayer},
    };
    use tower::util::Either;

    /// The [`ClientStack`] [`ClientStack::from_config`] builds.
    pub type ConfiguredClientStack =
        ClientStack<Either<ClientContextLayer, Identity>, Either<CircuitBreakerLayer, Identity>>;

    /// The [`ServerStack`] [`ServerStack::from_config`] builds.
    pub type ConfiguredServerStack =
        ServerStack<Either<ServerContextLayer, Identity>, Either<CircuitBreakerLayer, Identity>>;

    fn context(config: &Config) -> Result<Option<crate::context::Config>, ConfigError> {
        config.context.as_ref().map(|c| c.to_context()).transpose()
    }

    impl ClientStack {
        /// The stack the configuration describes: `[timeout]` and, when
        /// their sections are present, `[breaker]` and `[context]`.
        pub fn from_config(config: &Config) -> Result<ConfiguredClientStack, ConfigError> {
            Ok(ClientStack {
                timeout: config.timeout.request,
                body_idle: Some(config.timeout.body_idle),
                breaker_listens: config.breaker.is_some(),
                context: option_layer(context(config)?.map(ClientContextLayer::new)),
                breaker: option_layer(config.breaker_layer()?),
                cache: Identity::new(),
                auth: Identity::new(),
            })
        }
    }

    impl ServerStack {
        /// The stack the configuration describes: `[timeout]` and, when
        /// their sections are present, `[breaker]` and `[context]`.
        pub fn from_config(config: &Config) -> Result<ConfiguredServerStack, ConfigError> {
            Ok(ServerStack {
                timeout: config.timeout.request,
                context: option_layer(context(config)?.map(ServerContextLayer::new)),
                breaker: option_layer(config.breaker_layer()?),
                cache: Identity::new(),
                auth: Identity::new(),
                limit: Identity::new(),
            })
        }
    }
}

#[cfg(all(feature = "config", feature = "breaker", feature = "context"))]
#[cfg_attr(
    docsrs,
    doc(cfg(all(feature = "config", feature = "breaker", feature = "context")))
)]
pub use configured::{ConfiguredClientStack, ConfiguredServerStack};

impl<S, Ctx, Brk, Cch, Ath> Layer<S> for ClientStack<Ctx, Brk, Cch, Ath>
where
    Brk: Layer<CallerTimeout<Timeout<IdleTimeout<S>>>>,
    Ath: Layer<Brk::Service>,
    Ctx: Layer<Ath::Service>,
    Cch: Layer<Ctx::Service>,
{
    type Service = Cch::Service;

    fn layer(&self, inner: S) -> Self::Service {
        let idle = match self.body_idle {
            Some(timeout) => IdleTimeoutLayer::new(timeout),
            None => IdleTimeoutLayer::none(),
        }
        // Only a breaker listens for a body that fails late.
        .report_late(self.breaker_listens);
        let inner = idle.layer(inner);
        // The breaker goes outside the timeout, so that a call the timeout
        // cuts off reaches the breaker as a failure (`Elapsed`) instead of
        // as a dropped, uncounted call; unless the timeout passed while the
        // request body was waiting on its caller (`CallerTimeout`).
        let timeout = CallerTimeoutLayer::new().layer(Timeout::new(inner, self.timeout));
        let breaker = self.breaker.layer(timeout);
        self.cache
            .layer(self.context.layer(self.auth.layer(breaker)))
    }
}

/// The layers for a server (an axum router or any HTTP service), in the
/// recommended order.
///
/// The service it builds never fails: every error becomes a response through
/// [`error_response`](crate::error::error_response) (a timeout is 504, an
/// open breaker 503), so it can go straight into axum's `Router::layer`.
#[derive(Debug, Clone)]
pub struct ServerStack<
    Ctx = Identity,
    Brk = Identity,
    Cch = Identity,
    Ath = Identity,
    Lim = Identity,
> {
    timeout: Duration,
    context: Ctx,
    breaker: Brk,
    cache: Cch,
    auth: Ath,
    limit: Lim,
}

impl Default for ServerStack {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerStack {
    /// The stack with its defaults: a 5 s timeout.
    pub const fn new() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            context: Identity::new(),
            breaker: Identity::new(),
            cache: Identity::new(),
            auth: Identity::new(),
            limit: Identity::new(),
        }
    }
}

impl<Ctx, Brk, Cch, Ath, Lim> ServerStack<Ctx, Brk, Cch, Ath, Lim> {
    /// Sets the timeout of one request.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Removes the timeout: tower's `Timeout` stays in the stack, with a
    /// deadline that never comes, so that the stack's type and its
    /// [`BoxError`](crate::BoxError) errors are the same either way.
    pub fn no_timeout(mut self) -> Self {
        self.timeout = NEVER;
        self
    }

    /// Adds a circuit breaker, with any key and classifier: while it is
    /// open the server sheds load with `503 Service Unavailable` and
    /// `Retry-After`, without calling the handler.
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    pub fn circuit_breaker<K, C>(
        self,
        layer: crate::breaker::CircuitBreakerLayer<K, C>,
    ) -> ServerStack<Ctx, crate::breaker::CircuitBreakerLayer<K, C>, Cch, Ath, Lim> {
        ServerStack {
            timeout: self.timeout,
            context: self.context,
            breaker: layer,
            cache: self.cache,
            auth: self.auth,
            limit: self.limit,
        }
    }

    /// Adds a [`ServerContextLayer`](crate::context::ServerContextLayer)
    /// with these settings, outermost: every request gets a context, IDs
    /// and a span.
    #[cfg(feature = "context")]
    #[cfg_attr(docsrs, doc(cfg(feature = "context")))]
    pub fn context(
        self,
        config: crate::context::Config,
    ) -> ServerStack<crate::context::ServerContextLayer, Brk, Cch, Ath, Lim> {
        ServerStack {
            timeout: self.timeout,
            context: crate::context::ServerContextLayer::new(config),
            breaker: self.breaker,
            cache: self.cache,
            auth: self.auth,
            limit: self.limit,
        }
    }

    /// Adds a response cache, inside the error responses and outside the
    /// circuit breaker: a hit never reaches the handler, and the cache's
    /// `stale-if-error` answers while the breaker refuses or the handler
    /// fails.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub fn cache<St>(
        self,
        layer: crate::cache::CacheLayer<St>,
    ) -> ServerStack<Ctx, Brk, crate::cache::CacheLayer<St>, Ath, Lim> {
        ServerStack {
            timeout: self.timeout,
            context: self.context,
            breaker: self.breaker,
            cache: layer,
            auth: self.auth,
            limit: self.limit,
        }
    }

    /// Verifies each request's service credential, inside the context and
    /// the error responses (a refused call is answered 401 and still
    /// carries its trace and request IDs) and inside the
    /// [`CallerBodyLayer`] (a body read for a signature's digest that
    /// fails is the caller's 400).
    ///
    /// `layer` is an [`AuthLayer`](crate::auth::AuthLayer), or, to accept
    /// signed requests as well, a
    /// [`SignatureLayer`](crate::auth::SignatureLayer) with `or_next` in
    /// front of one:
    /// `ServiceBuilder::new().layer(signatures).layer(auth).into_inner()`.
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub fn auth<A>(self, layer: A) -> ServerStack<Ctx, Brk, Cch, A, Lim> {
        ServerStack {
            timeout: self.timeout,
            context: self.context,
            breaker: self.breaker,
            cache: self.cache,
            auth: layer,
            limit: self.limit,
        }
    }

    /// Limits each caller's rate
    /// ([`RateLimitLayer`](crate::limit::RateLimitLayer)), inside the auth,
    /// so that the limit is per verified identity, and outside the cache,
    /// so that a cached answer counts too.
    #[cfg(feature = "limit")]
    #[cfg_attr(docsrs, doc(cfg(feature = "limit")))]
    pub fn rate_limit(
        self,
        layer: crate::limit::RateLimitLayer,
    ) -> ServerStack<Ctx, Brk, Cch, Ath, crate::limit::RateLimitLayer> {
        ServerStack {
            timeout: self.timeout,
            context: self.context,
            breaker: self.breaker,
            cache: self.cache,
            auth: self.auth,
            limit: layer,
        }
    }

    /// The breakers of the stack's circuit breaker, if it has one.
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    pub fn breakers(&self) -> Option<crate::breaker::Breakers>
    where
        Brk: HasBreakers,
    {
        self.breaker.breakers()
    }
}

impl<S, Ctx, Brk, Cch, Ath, Lim> Layer<S> for ServerStack<Ctx, Brk, Cch, Ath, Lim>
where
    Brk: Layer<CallerTimeout<Timeout<S>>>,
    Cch: Layer<Brk::Service>,
    Lim: Layer<Cch::Service>,
    Ath: Layer<Lim::Service>,
    Ctx: Layer<crate::error::ErrorResponse<CallerBodyService<Ath::Service>>>,
{
    type Service = Ctx::Service;

    fn layer(&self, inner: S) -> Self::Service {
        let timeout = CallerTimeoutLayer::new().layer(Timeout::new(inner, self.timeout));
        let cached = self.cache.layer(self.breaker.layer(timeout));
        let limited = self.auth.layer(self.limit.layer(cached));
        let guarded = CallerBodyLayer::new().layer(limited);
        self.context.layer(ErrorResponseLayer::new().layer(guarded))
    }
}
