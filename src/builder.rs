//! [`ServiceBuilderExt`]: the crate's layers as `ServiceBuilder` methods,
//! from their configuration, as tower-http's `ServiceBuilderExt` does.

use crate::{error, proxy, stack};
use tower::{layer::util::Stack, ServiceBuilder};

/// A builder with `T` added on top of `L`.
type Layered<T, L> = ServiceBuilder<Stack<T, L>>;

/// Adds this crate's layers to a [`ServiceBuilder`] chain, from their
/// configuration.
///
/// Ready-made layers and stacks go in with `ServiceBuilder::layer`. A
/// configuration that can be invalid gives a `Result`, so a chain reads
/// `.circuit_breaker(config)?`.
///
/// tower's own `ServiceBuilder::retry` (which takes a bare policy) would
/// shadow a method named `retry`, so retries are added with
/// `retries`.
///
/// ```
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_shield::{breaker, context, retry, stack::ClientStack, ServiceBuilderExt};
///
/// # fn main() -> Result<(), tower_shield::BoxError> {
/// let builder = ServiceBuilder::new()
///     .retries(retry::Config::default().max_attempts(3))?
///     .client_context(context::Config::new().service("checkout", "1.0.0"))
///     .circuit_breaker(breaker::Config::default().failure_threshold(5))?
///     .timeout(Duration::from_secs(2));
/// # let _ = builder;
/// # Ok(())
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed {
    /// Adds a [`stack::ClientStack`].
    fn client_stack<Ctx, Brk, Cch, Ath>(
        self,
        stack: stack::ClientStack<Ctx, Brk, Cch, Ath>,
    ) -> ServiceBuilder<Stack<stack::ClientStack<Ctx, Brk, Cch, Ath>, L>>;

    /// Adds a [`stack::ServerStack`].
    fn server_stack<Ctx, Brk, Cch, Ath, Lim>(
        self,
        stack: stack::ServerStack<Ctx, Brk, Cch, Ath, Lim>,
    ) -> Layered<stack::ServerStack<Ctx, Brk, Cch, Ath, Lim>, L>;

    /// Adds an [`AuthLayer`](crate::auth::AuthLayer) (a server verifies
    /// service credentials). Put it after the server context, so that a
    /// refused call still carries its IDs, and before any rate limit, so
    /// that the limit is per verified identity.
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    fn verify_credentials(
        self,
        layer: crate::auth::AuthLayer,
    ) -> ServiceBuilder<Stack<crate::auth::AuthLayer, L>>;

    /// Adds an [`AttachLayer`](crate::auth::AttachLayer) (a client attaches
    /// its credentials).
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    fn credentials(
        self,
        credentials: crate::auth::Credentials,
    ) -> ServiceBuilder<Stack<crate::auth::AttachLayer, L>>;

    /// Adds a [`RateLimitLayer`](crate::limit::RateLimitLayer) built from
    /// `config`.
    #[cfg(feature = "limit")]
    #[cfg_attr(docsrs, doc(cfg(feature = "limit")))]
    fn rate_limit(
        self,
        config: crate::limit::RateLimitConfig,
    ) -> Result<ServiceBuilder<Stack<crate::limit::RateLimitLayer, L>>, crate::limit::LimitError>;

    /// Adds a [`CacheLayer`](crate::cache::CacheLayer) in memory, built
    /// from `config`. On a client, put it before `retries` (outside the
    /// retries and the client stack), so that a hit costs no attempt and
    /// its `stale-if-error` sees the breaker's refusals.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    fn cache(
        self,
        config: crate::cache::Config,
    ) -> Result<ServiceBuilder<Stack<crate::cache::CacheLayer, L>>, crate::cache::InvalidConfig>;

    /// Adds an [`error::ErrorResponseLayer`]: errors below become responses.
    fn error_responses(self) -> ServiceBuilder<Stack<error::ErrorResponseLayer, L>>;

    /// Adds a [`proxy::ReverseProxyLayer`].
    fn reverse_proxy(
        self,
        layer: proxy::ReverseProxyLayer,
    ) -> ServiceBuilder<Stack<proxy::ReverseProxyLayer, L>>;

    /// Adds a [`CircuitBreakerLayer`](crate::breaker::CircuitBreakerLayer)
    /// built from `config` (keyed by its `key`).
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    fn circuit_breaker(
        self,
        config: crate::breaker::Config,
    ) -> Result<
        ServiceBuilder<Stack<crate::breaker::CircuitBreakerLayer, L>>,
        crate::breaker::InvalidConfig,
    >;

    /// Adds a [`RetryLayer`](crate::retry::RetryLayer) built from `config`.
    /// Put it outside the client stack (it retries whole calls through the
    /// breaker and the per-attempt timeout); the client below it sees
    /// [`ReplayBody`](crate::body::ReplayBody) bodies.
    #[cfg(feature = "retry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    fn retries(
        self,
        config: crate::retry::Config,
    ) -> Result<ServiceBuilder<Stack<crate::retry::RetryLayer, L>>, crate::retry::InvalidConfig>;

    /// Adds a [`ServerContextLayer`](crate::context::ServerContextLayer).
    #[cfg(feature = "context")]
    #[cfg_attr(docsrs, doc(cfg(feature = "context")))]
    fn server_context(
        self,
        config: impl Into<std::sync::Arc<crate::context::Config>>,
    ) -> ServiceBuilder<Stack<crate::context::ServerContextLayer, L>>;

    /// Adds a [`ClientContextLayer`](crate::context::ClientContextLayer).
    #[cfg(feature = "context")]
    #[cfg_attr(docsrs, doc(cfg(feature = "context")))]
    fn client_context(
        self,
        config: impl Into<std::sync::Arc<crate::context::Config>>,
    ) -> ServiceBuilder<Stack<crate::context::ClientContextLayer, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn client_stack<Ctx, Brk, Cch, Ath>(
        self,
        stack: stack::ClientStack<Ctx, Brk, Cch, Ath>,
    ) -> ServiceBuilder<Stack<stack::ClientStack<Ctx, Brk, Cch, Ath>, L>> {
        self.layer(stack)
    }

    fn server_stack<Ctx, Brk, Cch, Ath, Lim>(
        self,
        stack: stack::ServerStack<Ctx, Brk, Cch, Ath, Lim>,
    ) -> Layered<stack::ServerStack<Ctx, Brk, Cch, Ath, Lim>, L> {
        self.layer(stack)
    }

    #[cfg(feature = "auth")]
    fn verify_credentials(
        self,
        layer: crate::auth::AuthLayer,
    ) -> ServiceBuilder<Stack<crate::auth::AuthLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "auth")]
    fn credentials(
        self,
        credentials: crate::auth::Credentials,
    ) -> ServiceBuilder<Stack<crate::auth::AttachLayer, L>> {
        self.layer(crate::auth::AttachLayer::new(credentials))
    }

    #[cfg(feature = "limit")]
    fn rate_limit(
        self,
        config: crate::limit::RateLimitConfig,
    ) -> Result<ServiceBuilder<Stack<crate::limit::RateLimitLayer, L>>, crate::limit::LimitError>
    {
        Ok(self.layer(crate::limit::RateLimitLayer::new(config)?))
    }

    #[cfg(feature = "cache")]
    fn cache(
        self,
        config: crate::cache::Config,
    ) -> Result<ServiceBuilder<Stack<crate::cache::CacheLayer, L>>, crate::cache::InvalidConfig>
    {
        Ok(self.layer(crate::cache::CacheLayer::new(config)?))
    }

    fn error_responses(self) -> ServiceBuilder<Stack<error::ErrorResponseLayer, L>> {
        self.layer(error::ErrorResponseLayer::new())
    }

    fn reverse_proxy(
        self,
        layer: proxy::ReverseProxyLayer,
    ) -> ServiceBuilder<Stack<proxy::ReverseProxyLayer, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "breaker")]
    fn circuit_breaker(
        self,
        config: crate::breaker::Config,
    ) -> Result<
        ServiceBuilder<Stack<crate::breaker::CircuitBreakerLayer, L>>,
        crate::breaker::InvalidConfig,
    > {
        Ok(self.layer(crate::breaker::CircuitBreakerLayer::new(config)?))
    }

    #[cfg(feature = "retry")]
    fn retries(
        self,
        config: crate::retry::Config,
    ) -> Result<ServiceBuilder<Stack<crate::retry::RetryLayer, L>>, crate::retry::InvalidConfig>
    {
        Ok(self.layer(crate::retry::RetryLayer::new(config)?))
    }

    #[cfg(feature = "context")]
    fn server_context(
        self,
        config: impl Into<std::sync::Arc<crate::context::Config>>,
    ) -> ServiceBuilder<Stack<crate::context::ServerContextLayer, L>> {
        self.layer(crate::context::ServerContextLayer::new(config))
    }

    #[cfg(feature = "context")]
    fn client_context(
        self,
        config: impl Into<std::sync::Arc<crate::context::Config>>,
    ) -> ServiceBuilder<Stack<crate::context::ClientContextLayer, L>> {
        self.layer(crate::context::ClientContextLayer::new(config))
    }
}

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}
