//! The shared error vocabulary, and turning errors into HTTP responses.
//!
//! Layers never look for each other's error types. A layer whose failure
//! means something to the others puts a [`Fault`] in its error's `source()`
//! chain; [`find_fault`] finds it, and [`chain`] walks any error's causes
//! (through `io::Error::get_ref` too).
//!
//! On the client side every layer of this crate fails with a small typed
//! error inside a [`BoxError`] that callers can downcast. On the server side
//! a failure has to become a response. [`error_response`] is the one place
//! that decides which: it walks the error's `source()` chain and answers
//!
//! | error in the chain | status |
//! |---|---|
//! | [`tower::timeout::error::Elapsed`] | 504 Gateway Timeout |
//! | a [`Fault`] (an open breaker's is 503 with `Retry-After`; a failed upstream's is 502) | its status, `Retry-After` when it says when |
//! | an I/O error (refused, reset, ...) | 502 Bad Gateway |
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

use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use pin_project_lite::pin_project;
use std::{
    convert::Infallible,
    error::Error as StdError,
    fmt,
    future::Future,
    io,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};
use tower_layer::Layer;
use tower_service::Service;

/// The error type of every layer that adds failures of its own: a boxed
/// error that callers downcast to the layer's typed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a failure means at the HTTP boundary, in words every layer shares:
/// the status to answer with, how long the caller should wait before trying
/// again, and whether the request was refused before it reached the service
/// beneath.
///
/// A layer that fails in a way the rest of the stack should understand (an
/// open circuit breaker, a proxy whose upstream failed, later a rate limit
/// or a missing credential) puts a `Fault` in its error's `source()` chain.
/// The other layers find it with [`find_fault`] and never name the layer's
/// own error type: the retry layer waits for [`retry_after`](Self::retry_after)
/// when the request was [`refused`](Self::refused), and [`error_response`]
/// answers with [`status`](Self::status).
///
/// ```
/// use http::StatusCode;
/// use std::time::Duration;
/// use tower_shield::error::{find_fault, Fault};
///
/// #[derive(Debug)]
/// struct Shed(Fault);
/// impl std::fmt::Display for Shed {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("load shed")
///     }
/// }
/// impl std::error::Error for Shed {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
///
/// let err: tower_shield::BoxError = Box::new(Shed(Fault::refused(
///     StatusCode::SERVICE_UNAVAILABLE,
///     Some(Duration::from_secs(2)),
/// )));
/// let fault = find_fault(&*err).unwrap();
/// assert!(fault.is_refused());
/// assert_eq!(fault.retry_after(), Some(Duration::from_secs(2)));
/// assert_eq!(tower_shield::error::status_for(&*err).0, StatusCode::SERVICE_UNAVAILABLE);
/// ```
#[derive(Debug)]
pub struct Fault {
    status: StatusCode,
    retry_after: Option<Duration>,
    refused: bool,
    // Boxed: most faults have none, and a fault travels in `Err`s.
    headers: Option<Box<HeaderMap>>,
    source: Option<BoxError>,
}

impl Fault {
    /// A failure answered with `status`, after the request reached the
    /// service beneath (or may have).
    pub fn new(status: StatusCode) -> Self {
        Self {
            status,
            retry_after: None,
            refused: false,
            headers: None,
            source: None,
        }
    }

    /// The request was refused before it reached the service beneath (so
    /// sending it again cannot repeat a side effect); the caller may try
    /// again after `retry_after`, when given.
    pub fn refused(status: StatusCode, retry_after: Option<Duration>) -> Self {
        Self {
            status,
            retry_after,
            refused: true,
            headers: None,
            source: None,
        }
    }

    /// The same fault, caused by `source` (which `source()` then returns).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The same fault, answered with `name: value` as well: a challenge
    /// (`WWW-Authenticate`) or a rate limit's state (`RateLimit`), say.
    /// [`error_response`] copies these headers into its answer.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.get_or_insert_default().append(name, value);
        self
    }

    /// The headers to answer with, besides `Retry-After`.
    pub fn headers(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.headers.iter().flat_map(|headers| headers.iter())
    }

    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// How long the caller should wait before trying again, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether the request was refused before it reached the service
    /// beneath.
    pub fn is_refused(&self) -> bool {
        self.refused
    }

    /// Whether the failure is the caller's own (its status is 4xx: a
    /// malformed or stalled request body, say), which says nothing of the
    /// health of the service it was sent to: circuit breakers do not count
    /// it and retries do not repeat it.
    pub fn is_caller_fault(&self) -> bool {
        self.status.is_client_error()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reason = self.status.canonical_reason().unwrap_or("error");
        if self.refused {
            write!(f, "refused ({} {reason})", self.status.as_u16())
        } else {
            write!(f, "{} {reason}", self.status.as_u16())
        }
    }
}

impl StdError for Fault {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Every error in `error`'s cause chain, itself first. An [`io::Error`]
/// that wraps another error yields the wrapped error next (its own
/// `source()` skips it). At most 64 errors, so a `source()` cycle cannot
/// hang the caller.
pub fn chain<'a>(
    error: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(error), |&err: &&'a (dyn StdError + 'static)| match err
        .downcast_ref::<io::Error>()
        .and_then(io::Error::get_ref)
    {
        Some(inner) => Some(inner as &(dyn StdError + 'static)),
        None => err.source(),
    })
    .take(64)
}

/// The first error of type `T` in `error`'s [`chain`].
pub fn find<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    chain(error).find_map(|err| err.downcast_ref::<T>())
}

/// The innermost [`Fault`] in `error`'s [`chain`], if any layer put one
/// there: the one nearest the cause is the most precise (an open breaker's
/// 503 inside a proxy's 502, say).
pub fn find_fault<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Fault> {
    chain(error)
        .filter_map(|err| err.downcast_ref::<Fault>())
        .last()
}

/// `true` when the innermost [`Fault`] in `error`'s chain is the caller's
/// own ([`Fault::is_caller_fault`]).
pub fn is_caller_fault(error: &(dyn StdError + 'static)) -> bool {
    find_fault(error).is_some_and(Fault::is_caller_fault)
}

/// The status, and the `Retry-After` delay if any, that [`error_response`]
/// gives `error`: a tower timeout anywhere in the chain is 504; otherwise the
/// innermost [`Fault`] decides ([`find_fault`]); otherwise an I/O error is
/// 502; anything else is 500.
pub fn status_for(error: &(dyn StdError + 'static)) -> (StatusCode, Option<Duration>) {
    if chain(error).any(|err| err.is::<tower::timeout::error::Elapsed>()) {
        // More precise than whatever wraps it.
        return (StatusCode::GATEWAY_TIMEOUT, None);
    }
    if let Some(fault) = find_fault(error) {
        return (fault.status(), fault.retry_after());
    }
    if chain(error).any(|err| err.is::<io::Error>()) {
        return (StatusCode::BAD_GATEWAY, None);
    }
    (StatusCode::INTERNAL_SERVER_ERROR, None)
}

/// Builds the response for `error`: the status of [`status_for`], a
/// `Retry-After` header when known, the [`Fault::headers`] of the fault that
/// decided the status, and a one-line `text/plain` body.
///
/// The body names the error's outermost message only, not its whole chain,
/// so internal details (addresses, paths) do not leak to callers.
pub fn error_response<B: From<String>>(error: &(dyn StdError + 'static)) -> Response<B> {
    let (status, retry_after) = status_for(error);
    let headers = match find_fault(error) {
        // Only the fault that decided the status speaks for the answer.
        Some(fault) if fault.status() == status => Some(fault.headers()),
        _ => None,
    };
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
    for (name, value) in headers.into_iter().flatten() {
        res.headers_mut().append(name.clone(), value.clone());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(Fault);

    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl StdError for Wrapped {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn faults_say_what_they_are() {
        let gateway = Fault::new(StatusCode::BAD_GATEWAY);
        assert!(!gateway.is_refused());
        assert_eq!(gateway.retry_after(), None);
        assert_eq!(gateway.to_string(), "502 Bad Gateway");
        let shed = Fault::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(4)),
        );
        assert!(shed.is_refused());
        assert_eq!(shed.to_string(), "refused (503 Service Unavailable)");
        assert!(shed.source().is_none());
    }

    #[test]
    fn the_chain_goes_through_faults_and_io_errors() {
        let io = io::Error::other(Wrapped(
            Fault::new(StatusCode::BAD_GATEWAY)
                .with_source(io::Error::from(io::ErrorKind::ConnectionRefused)),
        ));
        let err: BoxError = Box::new(io);
        // io::Error -> Wrapped (via get_ref) -> Fault -> io::Error (refused).
        assert_eq!(chain(&*err).count(), 4);
        let refused = chain(&*err)
            .filter_map(|e| e.downcast_ref::<io::Error>())
            .last()
            .unwrap();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert!(find::<Wrapped>(&*err).is_some());
        assert_eq!(find_fault(&*err).unwrap().status(), StatusCode::BAD_GATEWAY);
        assert!(find::<tower::timeout::error::Elapsed>(&*err).is_none());
        // The innermost fault decides.
        let outer = Fault::new(StatusCode::BAD_GATEWAY).with_source(Wrapped(Fault::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
        )));
        assert_eq!(
            find_fault(&outer).unwrap().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status_for(&outer), (StatusCode::SERVICE_UNAVAILABLE, None));
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        for (after, header) in [
            (Duration::from_millis(2500), "3"),
            (Duration::from_secs(2), "2"),
            (Duration::ZERO, "0"),
        ] {
            let fault = Fault::refused(StatusCode::SERVICE_UNAVAILABLE, Some(after));
            let res: Response<String> = error_response(&fault);
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(res.headers()[header::RETRY_AFTER], header, "{after:?}");
        }
        let res: Response<String> = error_response(&Fault::new(StatusCode::BAD_GATEWAY));
        assert!(!res.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn a_fault_s_headers_are_answered_only_when_it_decides_the_status() {
        let challenge = HeaderValue::from_static("Bearer error=\"invalid_token\"");
        let fault = Fault::new(StatusCode::UNAUTHORIZED)
            .with_header(header::WWW_AUTHENTICATE, challenge.clone())
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
        assert_eq!(fault.headers().count(), 2);
        let res: Response<String> = error_response(&fault);
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let got: Vec<_> = res
            .headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .collect();
        assert_eq!(got, [&challenge, &HeaderValue::from_static("Basic")]);

        // Behind a timeout the 504 decides, and the fault's headers are not
        // the answer's.
        let timed_out = Fault::new(StatusCode::UNAUTHORIZED)
            .with_header(header::WWW_AUTHENTICATE, challenge)
            .with_source(tower::timeout::error::Elapsed::new());
        let res: Response<String> = error_response(&timed_out);
        assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(!res.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    /// An inner service that cannot become ready: its error is answered
    /// from the next call, which never reaches the inner service.
    #[derive(Debug)]
    struct NeverReady;

    impl Service<()> for NeverReady {
        type Response = Response<String>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Response<String>, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err(Box::new(Fault::new(StatusCode::BAD_GATEWAY))))
        }

        fn call(&mut self, (): ()) -> Self::Future {
            panic!("called without being ready")
        }
    }

    #[tokio::test]
    async fn a_readiness_error_is_answered_by_the_next_call() {
        use tower::ServiceExt;
        let svc = ErrorResponseLayer::new().layer(NeverReady);
        let res = svc.oneshot(()).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
    }
}
