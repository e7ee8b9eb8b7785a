//! Turning the crate's typed errors into HTTP responses.
//!
//! On the client side every layer of this crate fails with a small typed
//! error inside a [`BoxError`] that callers can downcast. On the server side
//! a failure has to become a response. [`error_response`] is the one place
//! that decides which: it walks the error's `source()` chain and answers
//!
//! | error in the chain | status |
//! |---|---|
//! | [`tower::timeout::error::Elapsed`] | 504 Gateway Timeout |
//! | `breaker::Open` (an open circuit breaker) | 503 Service Unavailable, `Retry-After` |
//! | [`crate::proxy::UpstreamError`], or an I/O error (refused, reset, ...) | 502 Bad Gateway |
//! | anything else | 500 Internal Server Error |
//!
//! with a short `text/plain` body naming the error, and a `Retry-After`
//! header when the error says when to come back.
//!
//! Use [`handle_error`] with axum's `HandleErrorLayer`, or
//! [`ErrorResponseLayer`] to do the same inside any `ServiceBuilder`.
//!
//! # Example
//!
//! ```
//! use axum::{error_handling::HandleErrorLayer, routing::get, Router};
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//!
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(tower_shield::error::handle_error))
//!         .timeout(Duration::from_secs(5)),
//! );
//! ```

use crate::BoxError;
use http::{header, HeaderValue, Response, StatusCode};
use pin_project_lite::pin_project;
use std::{
    convert::Infallible,
    error::Error as StdError,
    future::Future,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};
use tower_layer::Layer;
use tower_service::Service;

/// The status, and the `Retry-After` delay if any, that [`error_response`]
/// gives `error`.
pub fn status_for(error: &(dyn StdError + 'static)) -> (StatusCode, Option<Duration>) {
    let mut status = StatusCode::INTERNAL_SERVER_ERROR;
    let mut next = Some(error);
    let mut depth = 0;
    while let (Some(err), true) = (next, depth < 64) {
        if err.is::<tower::timeout::error::Elapsed>() {
            return (StatusCode::GATEWAY_TIMEOUT, None);
        }
        #[cfg(feature = "breaker")]
        if let Some(open) = err.downcast_ref::<crate::breaker::Open>() {
            return (StatusCode::SERVICE_UNAVAILABLE, Some(open.retry_after()));
        }
        if err.is::<crate::proxy::UpstreamError>() || err.is::<io::Error>() {
            // Keep looking: a timeout deeper in the chain is more precise.
            status = StatusCode::BAD_GATEWAY;
        }
        next = err.source();
        depth += 1;
    }
    (status, None)
}

/// Builds the response for `error`: the status of [`status_for`], a
/// `Retry-After` header when known, and a one-line `text/plain` body.
///
/// The body names the error's outermost message only, not its whole chain,
/// so internal details (addresses, paths) do not leak to callers.
pub fn error_response<B: From<String>>(error: &(dyn StdError + 'static)) -> Response<B> {
    let (status, retry_after) = status_for(error);
    let message = format!(
        "{}: {}\n",
        status.canonical_reason().unwrap_or("error"),
        error
    );
    let mut res = Response::new(B::from(message));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(after) = retry_after {
        // Round up: telling a caller to come back early defeats the point.
        let secs = after
            .as_secs()
            .saturating_add(u64::from(after.subsec_nanos() > 0));
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

/// [`error_response`] as an async function, for axum's `HandleErrorLayer`:
/// `HandleErrorLayer::new(tower_shield::error::handle_error)`.
pub async fn handle_error(error: BoxError) -> Response<String> {
    error_response(&*error)
}

/// Turns the errors of the inner service into responses with
/// [`error_response`], so the service never fails (`Error = Infallible`),
/// as axum's `Router::layer` requires.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorResponseLayer {
    _priv: (),
}

impl ErrorResponseLayer {
    /// Creates the layer.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl<S> Layer<S> for ErrorResponseLayer {
    type Service = ErrorResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponse {
            inner,
            failed_ready: None,
        }
    }
}

/// The service of [`ErrorResponseLayer`].
///
/// # Clone
///
/// A clone starts without the readiness error (if any) of the original.
#[derive(Debug)]
pub struct ErrorResponse<S> {
    inner: S,
    failed_ready: Option<BoxError>,
}

impl<S: Clone> Clone for ErrorResponse<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            failed_ready: None,
        }
    }
}

impl<S> ErrorResponse<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        Self {
            inner,
            failed_ready: None,
        }
    }

    define_inner_service_accessors!();
}

impl<S, Req, B> Service<Req> for ErrorResponse<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: From<String>,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = ErrorResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // An inner service that cannot become ready is reported per request
        // from `call`'s future instead: readiness errors are rare and axum
        // would not surface them anyway.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                if let Err(err) = result {
                    self.failed_ready = Some(err.into());
                }
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.failed_ready.take() {
            Some(error) => ErrorResponseFuture {
                kind: Kind::Failed { error: Some(error) },
            },
            None => ErrorResponseFuture {
                kind: Kind::Called {
                    inner: self.inner.call(req),
                },
            },
        }
    }
}

pin_project! {
    /// Response future of [`ErrorResponse`].
    #[derive(Debug)]
    pub struct ErrorResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called { #[pin] inner: F },
        Failed { error: Option<BoxError> },
    }
}

impl<F, B, E> Future for ErrorResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: From<String>,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let err: BoxError = match self.project().kind.project() {
            KindProj::Called { inner } => match ready!(inner.poll(cx)) {
                Ok(res) => return Poll::Ready(Ok(res)),
                Err(err) => err.into(),
            },
            KindProj::Failed { error } => error.take().expect("future polled after completion"),
        };
        tracing::debug!(error = %err, "request failed; answering with an error response");
        Poll::Ready(Ok(error_response(&*err)))
    }
}
