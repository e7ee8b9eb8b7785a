//! Ready-made client and server stacks, in the recommended order.
//!
//! [`ClientStack`] is what to put in front of an outgoing HTTP client;
//! [`ServerStack`] is what to put around an axum router or any HTTP
//! service. Each is a [`Layer`] built in code or from the
//! [`Config`](crate::config::Config) the sidecar reads, and each grows as
//! the crate's layers land. Today they hold the whole-request timeout:
//!
//! | stack | layers, outermost first |
//! |---|---|
//! | [`ClientStack`] | timeout (default 5 s) |
//! | [`ServerStack`] | error responses ([`crate::error::ErrorResponseLayer`]), timeout |
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

use crate::{
    error::{ErrorResponse, ErrorResponseFuture, ErrorResponseLayer},
    BoxError,
};
use http::Response;
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
        }
    }

    /// Sets the whole-request timeout.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Removes the whole-request timeout.
    pub const fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// The stack the configuration describes.
    #[cfg(feature = "config")]
    #[cfg_attr(docsrs, doc(cfg(feature = "config")))]
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self::new().timeout(config.timeout.request)
    }
}

impl<S> Layer<S> for ClientStack {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientService {
            inner,
            timeout: self.timeout,
        }
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
    timeout: Option<Duration>,
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
            timeout: Some(DEFAULT_TIMEOUT),
        }
    }

    /// Sets the whole-request timeout.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Removes the whole-request timeout.
    pub const fn no_timeout(mut self) -> Self {
        self.timeout = None;
        self
    }

    /// The stack the configuration describes.
    #[cfg(feature = "config")]
    #[cfg_attr(docsrs, doc(cfg(feature = "config")))]
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self::new().timeout(config.timeout.request)
    }
}

impl<S> Layer<S> for ServerStack {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerService {
            inner: ErrorResponseLayer::new().layer(ClientService {
                inner,
                timeout: self.timeout,
            }),
        }
    }
}

/// The service [`ServerStack`] builds.
#[derive(Debug, Clone)]
pub struct ServerService<S> {
    inner: ErrorResponse<ClientService<S>>,
}

impl<S, Req, B> Service<Req> for ServerService<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: From<String>,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = ErrorResponseFuture<ResponseFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.inner.call(req)
    }
}
