//! One place that decides whether a call succeeded.
//!
//! Every layer of this crate that needs to know "did this call work?" (the
//! circuit breaker, the retry policy, the cache, the metrics) asks a
//! [`Classify`] implementation and never re-decides on its own. A classifier
//! looks at the `Result` a service produced and answers with a [`Class`]:
//!
//! | outcome | [`ServerErrorsAsFailures`] (HTTP default) |
//! |---|---|
//! | 1xx, 2xx, 3xx | [`Class::Success`] |
//! | 4xx except 408 and 429 | [`Class::Success`] (the caller's fault, not the upstream's health) |
//! | 408, 429 | [`Class::Retryable`] |
//! | 502, 503, 504 | [`Class::Retryable`] |
//! | other 5xx | [`Class::Failure`] |
//! | the caller's own fault (a [`Fault`](crate::error::Fault) with a 4xx status in the error: a malformed, truncated or stalled request body) | [`Class::Success`] (not retried; circuit breakers do not count it at all) |
//! | connect error, reset, timeout ([`tower::timeout::error::Elapsed`]) | [`Class::Retryable`] |
//! | any other error | [`Class::Failure`] |
//!
//! Where the decision needs the request (is the method idempotent?), a
//! [`MakeClassify`] builds a classifier from the request before the call, as
//! tower-http's `MakeClassifier` does.
//!
//! # Example
//!
//! ```
//! use http::{Response, StatusCode};
//! use tower_shield::classify::{self, Class, Classify, ClassifyExt, ServerErrorsAsFailures};
//! use tower_shield::BoxError;
//!
//! let classifier = ServerErrorsAsFailures::new();
//! let ok: Result<Response<()>, BoxError> = Ok(Response::new(()));
//! assert_eq!(classifier.classify(&ok), Class::Success);
//!
//! let unavailable: Result<Response<()>, BoxError> = Ok(Response::builder()
//!     .status(StatusCode::SERVICE_UNAVAILABLE)
//!     .body(())
//!     .unwrap());
//! assert_eq!(classifier.classify(&unavailable), Class::Retryable);
//!
//! // Treat 404 as a failure too, for an upstream where "not found" means broken.
//! let strict = classifier.or(classify::from_fn(|result: &Result<Response<()>, BoxError>| {
//!     match result {
//!         Ok(res) if res.status() == StatusCode::NOT_FOUND => Class::Failure,
//!         _ => Class::Success,
//!     }
//! }));
//! let not_found: Result<Response<()>, BoxError> = Ok(Response::builder()
//!     .status(StatusCode::NOT_FOUND)
//!     .body(())
//!     .unwrap());
//! assert_eq!(strict.classify(&not_found), Class::Failure);
//! ```

use crate::{error::chain, BoxError};
use http::{header, Method, Request, Response, StatusCode};
use std::{
    error::Error as StdError,
    fmt, io,
    ops::RangeInclusive,
    time::{Duration, SystemTime},
};

/// What a call's outcome means for the health of the thing that was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Class {
    /// The call worked (or failed through the caller's own fault, such as a 404).
    Success,
    /// The call failed in a way that another attempt may fix: overload,
    /// a gateway error, a refused connection, a timeout.
    Retryable,
    /// The call failed and another attempt is not expected to help.
    Failure,
}

impl Class {
    /// `true` for [`Class::Success`].
    pub const fn is_success(self) -> bool {
        matches!(self, Class::Success)
    }

    /// `true` for [`Class::Retryable`] and [`Class::Failure`]: the outcome
    /// counts against the health of the callee.
    pub const fn is_failure(self) -> bool {
        !self.is_success()
    }

    /// `true` for [`Class::Retryable`].
    pub const fn is_retryable(self) -> bool {
        matches!(self, Class::Retryable)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Class::Success => "success",
            Class::Retryable => "retryable",
            Class::Failure => "failure",
        })
    }
}

/// Decides the [`Class`] of a service's result.
///
/// Implemented for closures `Fn(&Result<Res, E>) -> Class`, and by the HTTP
/// defaults in this module. Combine classifiers with [`ClassifyExt`].
pub trait Classify<Res, E> {
    /// Classifies one result.
    fn classify(&self, result: &Result<Res, E>) -> Class;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Class,
{
    fn classify(&self, result: &Result<Res, E>) -> Class {
        self(result)
    }
}

/// Builds a [`Classify`] from the request, for decisions that depend on it
/// (its method, its route, an `Idempotency-Key` header).
///
/// Every `Clone` classifier in this module also implements `MakeClassify`
/// by cloning itself, so layers can take a `MakeClassify` and still accept
/// a plain classifier.
pub trait MakeClassify<Req> {
    /// The classifier for one request.
    type Classifier;

    /// Builds the classifier before `req` is sent.
    fn make_classify(&self, req: &Req) -> Self::Classifier;
}

/// Gives the classifiers access to an error as a `std::error::Error`, so they
/// can walk its `source()` chain for connect errors and timeouts.
///
/// Implemented for [`BoxError`], [`std::io::Error`],
/// [`std::convert::Infallible`], tower's timeout error and, with the
/// `reqwest` feature, `reqwest::Error`. Wrap other error types in a
/// [`BoxError`] (`.map_err(Into::into)`) or implement this trait for them.
pub trait AsStdError {
    /// The error, if it is one.
    fn as_std_error(&self) -> Option<&(dyn StdError + 'static)>;
}

impl AsStdError for BoxError {
    fn as_std_error(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&**self)
    }
}

impl AsStdError for io::Error {
    fn as_std_error(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self)
    }
}

impl AsStdError for tower::timeout::error::Elapsed {
    fn as_std_error(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self)
    }
}

impl AsStdError for std::convert::Infallible {
    fn as_std_error(&self) -> Option<&(dyn StdError + 'static)> {
        match *self {}
    }
}

#[cfg(feature = "reqwest")]
impl AsStdError for reqwest::Error {
    fn as_std_error(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self)
    }
}

/// Classifies a transport error by walking its `source()` chain.
///
/// [`Class::Success`] when the caller's own request was at fault
/// ([`is_caller_fault`](crate::error::is_caller_fault)): the callee's health
/// is not in question. Otherwise [`Class::Retryable`] when any error in the chain is a tower timeout
/// ([`tower::timeout::error::Elapsed`]) or an I/O error that means the
/// connection failed or broke (refused, reset, aborted, timed out, not
/// connected, broken pipe, unexpected end of stream); [`Class::Failure`]
/// otherwise. hyper-util's and reqwest's connect errors carry the I/O error
/// as their source, so they are found the same way.
pub fn classify_error(error: &(dyn StdError + 'static)) -> Class {
    if crate::error::is_caller_fault(error) {
        // Before the I/O errors: a truncated body's `UnexpectedEof` is the
        // caller's.
        return Class::Success;
    }
    let transient = chain(error).any(|err| {
        err.is::<tower::timeout::error::Elapsed>()
            || err
                .downcast_ref::<io::Error>()
                .is_some_and(|io| is_transient_io(io.kind()))
    });
    if transient {
        Class::Retryable
    } else {
        Class::Failure
    }
}

/// `true` when the error chain proves the request never left this process:
/// the connection was refused or could not be made, so no byte of the request
/// reached the server and replaying it is safe even for non-idempotent methods.
pub fn is_connect_error(error: &(dyn StdError + 'static)) -> bool {
    chain(error).any(|err| {
        err.downcast_ref::<io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::AddrNotAvailable
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
            )
        })
    })
}

fn is_transient_io(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::TimedOut
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}

fn classify_err<E: AsStdError>(error: &E) -> Class {
    error.as_std_error().map_or(Class::Failure, classify_error)
}

/// The HTTP status rule of [`ServerErrorsAsFailures`], on its own.
pub const fn classify_status(status: StatusCode) -> Class {
    match status.as_u16() {
        408 | 429 | 502 | 503 | 504 => Class::Retryable,
        500..=599 => Class::Failure,
        _ => Class::Success,
    }
}

/// The HTTP default: 5xx are failures (502, 503, 504 retryable), 408 and 429
/// are retryable, every other status is a success; errors are classified by
/// [`classify_error`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerErrorsAsFailures {
    _priv: (),
}

impl ServerErrorsAsFailures {
    /// Creates the default HTTP classifier.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl<B, E: AsStdError> Classify<Response<B>, E> for ServerErrorsAsFailures {
    fn classify(&self, result: &Result<Response<B>, E>) -> Class {
        match result {
            Ok(res) => classify_status(res.status()),
            Err(err) => classify_err(err),
        }
    }
}

/// For services that are not HTTP or whose responses are all fine: every
/// `Ok` is a success, errors are classified by [`classify_error`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAsFailures {
    _priv: (),
}

impl ErrorsAsFailures {
    /// Creates the classifier.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl<Res, E: AsStdError> Classify<Res, E> for ErrorsAsFailures {
    fn classify(&self, result: &Result<Res, E>) -> Class {
        match result {
            Ok(_) => Class::Success,
            Err(err) => classify_err(err),
        }
    }
}

/// Gives every status in a range one class; statuses outside it are
/// successes; errors are classified by [`classify_error`].
///
/// ```
/// use tower_shield::classify::{Class, Classify, StatusInRange};
/// # use http::Response;
/// let classifier = StatusInRange::new(400..=599, Class::Failure);
/// let res: Result<_, tower_shield::BoxError> = Ok(Response::builder().status(404).body(()).unwrap());
/// assert_eq!(classifier.classify(&res), Class::Failure);
/// ```
#[derive(Debug, Clone)]
pub struct StatusInRange {
    range: RangeInclusive<u16>,
    class: Class,
}

impl StatusInRange {
    /// Statuses in `range` get `class`.
    pub const fn new(range: RangeInclusive<u16>, class: Class) -> Self {
        Self { range, class }
    }
}

impl<B, E: AsStdError> Classify<Response<B>, E> for StatusInRange {
    fn classify(&self, result: &Result<Response<B>, E>) -> Class {
        match result {
            Ok(res) if self.range.contains(&res.status().as_u16()) => self.class,
            Ok(_) => Class::Success,
            Err(err) => classify_err(err),
        }
    }
}

/// Combinators for the classifiers of this module. Wrap a closure with
/// [`from_fn`] to combine it too.
pub trait ClassifyExt: Sized {
    /// Asks `self` first; if it says [`Class::Success`], asks `other`.
    /// The result is a failure when either classifier calls it one.
    fn or<O>(self, other: O) -> Or<Self, O> {
        Or {
            first: self,
            second: other,
        }
    }

    /// A failure only when both classifiers call it one; then `self`'s
    /// class is kept.
    fn and<O>(self, other: O) -> And<Self, O> {
        And {
            first: self,
            second: other,
        }
    }

    /// Rewrites the class, for example to make every failure retryable.
    fn map_class<F: Fn(Class) -> Class>(self, f: F) -> MapClass<Self, F> {
        MapClass { inner: self, f }
    }
}

/// A classifier from a closure `Fn(&Result<Res, E>) -> Class`, so that it
/// gets the [`ClassifyExt`] combinators.
pub const fn from_fn<F>(f: F) -> FromFn<F> {
    FromFn { f }
}

/// See [`from_fn`].
#[derive(Clone, Copy)]
pub struct FromFn<F> {
    f: F,
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFn").finish_non_exhaustive()
    }
}

impl<F, Res, E> Classify<Res, E> for FromFn<F>
where
    F: Fn(&Result<Res, E>) -> Class,
{
    fn classify(&self, result: &Result<Res, E>) -> Class {
        (self.f)(result)
    }
}

macro_rules! classify_ext {
    ($($ty:ident $(<$($p:ident),*>)?),* $(,)?) => {$(
        impl$(<$($p),*>)? ClassifyExt for $ty$(<$($p),*>)? {}
    )*};
}

classify_ext!(
    ServerErrorsAsFailures,
    ErrorsAsFailures,
    StatusInRange,
    FromFn<F>,
    Or<A, B>,
    And<A, B>,
    MapClass<C, F>,
);

/// See [`ClassifyExt::or`].
#[derive(Debug, Clone)]
pub struct Or<A, B> {
    first: A,
    second: B,
}

impl<A: Classify<Res, E>, B: Classify<Res, E>, Res, E> Classify<Res, E> for Or<A, B> {
    fn classify(&self, result: &Result<Res, E>) -> Class {
        match self.first.classify(result) {
            Class::Success => self.second.classify(result),
            other => other,
        }
    }
}

/// See [`ClassifyExt::and`].
#[derive(Debug, Clone)]
pub struct And<A, B> {
    first: A,
    second: B,
}

impl<A: Classify<Res, E>, B: Classify<Res, E>, Res, E> Classify<Res, E> for And<A, B> {
    fn classify(&self, result: &Result<Res, E>) -> Class {
        match self.first.classify(result) {
            Class::Success => Class::Success,
            class if self.second.classify(result).is_failure() => class,
            _ => Class::Success,
        }
    }
}

/// See [`ClassifyExt::map_class`].
#[derive(Clone)]
pub struct MapClass<C, F> {
    inner: C,
    f: F,
}

impl<C: fmt::Debug, F> fmt::Debug for MapClass<C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapClass")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<C: Classify<Res, E>, F: Fn(Class) -> Class, Res, E> Classify<Res, E> for MapClass<C, F> {
    fn classify(&self, result: &Result<Res, E>) -> Class {
        (self.f)(self.inner.classify(result))
    }
}

macro_rules! make_classify_by_clone {
    ($($ty:ty),* $(,)?) => {$(
        impl<Req> MakeClassify<Req> for $ty {
            type Classifier = Self;
            fn make_classify(&self, _: &Req) -> Self {
                self.clone()
            }
        }
    )*};
}

make_classify_by_clone!(ServerErrorsAsFailures, ErrorsAsFailures, StatusInRange);

/// `true` for the methods RFC 9110 section 9.2.2 calls idempotent:
/// GET, HEAD, OPTIONS, TRACE, PUT, DELETE.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The header that makes a POST or PATCH safe to repeat
/// (draft-ietf-httpapi-idempotency-key-header).
pub const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("idempotency-key");

/// A request extension that marks a request as safe to repeat whatever its
/// method, for example on a route whose POST handler is idempotent.
///
/// ```
/// use tower_shield::classify::{is_repeatable, Repeatable};
///
/// let mut req = http::Request::post("http://127.0.0.1/jobs/42").body(()).unwrap();
/// assert!(!is_repeatable(&req, false));
/// req.extensions_mut().insert(Repeatable);
/// assert!(is_repeatable(&req, false));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Repeatable;

/// The crate's one idempotency rule: whether `req` may be sent more than
/// once (retried; or, for the cache, whether it leaves stored answers
/// alone).
///
/// `true` when its method is idempotent ([`is_idempotent`]), it carries an
/// [`IDEMPOTENCY_KEY`] header, it has the [`Repeatable`] extension, or
/// `any_method` (a layer's own override, such as retry's
/// `retry_non_idempotent`) is set.
pub fn is_repeatable<B>(req: &Request<B>, any_method: bool) -> bool {
    any_method
        || is_idempotent(req.method())
        || req.headers().contains_key(IDEMPOTENCY_KEY)
        || req.extensions().get::<Repeatable>().is_some()
}

/// A [`MakeClassify`] that keeps the inner classifier's answer for requests
/// that are safe to repeat and turns [`Class::Retryable`] into
/// [`Class::Failure`] for the others.
///
/// A request is safe to repeat when [`is_repeatable`] says so. An error
/// that proves the request never left ([`is_connect_error`]) stays
/// retryable for every method.
#[derive(Debug, Clone, Default)]
pub struct IdempotentOnly<C> {
    inner: C,
}

impl<C> IdempotentOnly<C> {
    /// Wraps `inner`.
    pub const fn new(inner: C) -> Self {
        Self { inner }
    }
}

impl<C: Clone, B> MakeClassify<Request<B>> for IdempotentOnly<C> {
    type Classifier = ForRequest<C>;

    fn make_classify(&self, req: &Request<B>) -> ForRequest<C> {
        ForRequest {
            inner: self.inner.clone(),
            repeatable: is_repeatable(req, false),
        }
    }
}

/// The classifier [`IdempotentOnly`] builds for one request.
#[derive(Debug, Clone)]
pub struct ForRequest<C> {
    inner: C,
    repeatable: bool,
}

impl<C: Classify<Res, E>, Res, E: AsStdError> Classify<Res, E> for ForRequest<C> {
    fn classify(&self, result: &Result<Res, E>) -> Class {
        match self.inner.classify(result) {
            Class::Retryable if !self.repeatable => match result {
                Err(err) if err.as_std_error().is_some_and(is_connect_error) => Class::Retryable,
                _ => Class::Failure,
            },
            class => class,
        }
    }
}

/// The delay a 429 or 503 response asks for in `Retry-After`
/// (delta-seconds or an HTTP-date), if any.
pub fn retry_after<B>(res: &Response<B>) -> Option<Duration> {
    if !matches!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        return None;
    }
    let value = res
        .headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The outcome of a call that is known only once its response body has
/// been read: a body that stalls or breaks after a successful head.
///
/// A layer that watches response bodies (the client stack's body idle
/// timeout) puts one in the response's extensions; a layer further out
/// that judges calls (a circuit breaker) finds it there when the head
/// arrives and [listens](Self::listen); when the body fails, the watcher
/// [reports](Self::report) it, and the listener counts one more failure.
/// The two layers never name each other.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use tower_shield::classify::{Class, LateOutcome};
///
/// let late = LateOutcome::new();
/// let heard = Arc::new(Mutex::new(None));
/// let sink = heard.clone();
/// late.clone().listen(move |class| *sink.lock().unwrap() = Some(class));
/// late.report(Class::Retryable);
/// assert_eq!(*heard.lock().unwrap(), Some(Class::Retryable));
/// ```
#[derive(Clone, Default)]
pub struct LateOutcome {
    listener: std::sync::Arc<std::sync::Mutex<Option<Listener>>>,
}

type Listener = Box<dyn FnOnce(Class) + Send>;

impl LateOutcome {
    /// A slot with no listener.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `f` with the class of the body's failure, if it fails. A later
    /// listener replaces an earlier one: the nearest judge outside hears it.
    pub fn listen(&self, f: impl FnOnce(Class) + Send + 'static) {
        *self.lock() = Some(Box::new(f));
    }

    /// Reports that the body failed; the listener, if any, hears it once.
    pub fn report(&self, class: Class) {
        let listener = self.lock().take();
        if let Some(listener) = listener {
            listener(class);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Listener>> {
        self.listener.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl fmt::Debug for LateOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LateOutcome")
            .field("listening", &self.lock().is_some())
            .finish()
    }
}

/// How a caller's identity was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthMethod {
    /// A static service token.
    StaticToken,
    /// A JWT.
    Jwt,
    /// An HTTP message signature (RFC 9421).
    Signature,
}

/// The verified identity of the calling service: its name, its scopes and
/// how it was verified. An auth layer puts it in the request's extensions
/// (`auth::AuthLayer`, which re-exports it as `auth::ServiceIdentity`); it
/// is shared vocabulary so that the layers that key by caller (a rate
/// limit) read it without naming the auth layer.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceIdentity {
    name: std::sync::Arc<str>,
    scopes: std::sync::Arc<[String]>,
    method: AuthMethod,
}

impl ServiceIdentity {
    /// An identity (for tests, and for verifiers of your own).
    pub fn new<'a>(
        name: &str,
        scopes: impl IntoIterator<Item = &'a str>,
        method: AuthMethod,
    ) -> Self {
        Self {
            name: name.into(),
            scopes: scopes.into_iter().map(str::to_owned).collect(),
            method,
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The scopes it was granted.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// Whether it was granted `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// How it was verified.
    pub fn method(&self) -> AuthMethod {
        self.method
    }
}

impl fmt::Debug for ServiceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceIdentity")
            .field("name", &&*self.name)
            .field("scopes", &self.scopes)
            .field("method", &self.method)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status(code: u16) -> Result<Response<()>, BoxError> {
        Ok(Response::builder().status(code).body(()).unwrap())
    }

    #[test]
    fn http_defaults() {
        let c = ServerErrorsAsFailures::new();
        for (code, class) in [
            (200, Class::Success),
            (204, Class::Success),
            (304, Class::Success),
            (400, Class::Success),
            (404, Class::Success),
            (408, Class::Retryable),
            (429, Class::Retryable),
            (500, Class::Failure),
            (501, Class::Failure),
            (502, Class::Retryable),
            (503, Class::Retryable),
            (504, Class::Retryable),
            (599, Class::Failure),
        ] {
            assert_eq!(c.classify(&status(code)), class, "status {code}");
        }
    }

    #[derive(Debug)]
    struct Wrapper(io::Error);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("client error (Connect)")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn errors_walk_the_source_chain() {
        let c = ServerErrorsAsFailures::new();
        let refused: Result<Response<()>, BoxError> = Err(Box::new(Wrapper(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        ))));
        assert_eq!(c.classify(&refused), Class::Retryable);
        let timeout: Result<Response<()>, BoxError> =
            Err(Box::new(tower::timeout::error::Elapsed::new()));
        assert_eq!(c.classify(&timeout), Class::Retryable);
        let other: Result<Response<()>, BoxError> = Err("invalid header".into());
        assert_eq!(c.classify(&other), Class::Failure);
        let denied: Result<Response<()>, io::Error> =
            Err(io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(c.classify(&denied), Class::Failure);
        // Errors that are not boxed are read the same way.
        let refused: Result<Response<()>, io::Error> =
            Err(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(c.classify(&refused), Class::Retryable);
        let elapsed: Result<Response<()>, tower::timeout::error::Elapsed> =
            Err(tower::timeout::error::Elapsed::new());
        assert_eq!(c.classify(&elapsed), Class::Retryable);
    }

    #[test]
    fn idempotency_downgrades_retryable() {
        let make = IdempotentOnly::new(ServerErrorsAsFailures::new());
        let post = Request::post("/").body(()).unwrap();
        let keyed = Request::post("/")
            .header(IDEMPOTENCY_KEY, "k1")
            .body(())
            .unwrap();
        let get = Request::get("/").body(()).unwrap();
        assert_eq!(
            make.make_classify(&post).classify(&status(503)),
            Class::Failure
        );
        assert_eq!(
            make.make_classify(&keyed).classify(&status(503)),
            Class::Retryable
        );
        assert_eq!(
            make.make_classify(&get).classify(&status(503)),
            Class::Retryable
        );
        let refused: Result<Response<()>, BoxError> = Err(Box::new(Wrapper(io::Error::from(
            io::ErrorKind::ConnectionRefused,
        ))));
        assert_eq!(
            make.make_classify(&post).classify(&refused),
            Class::Retryable
        );
        let reset: Result<Response<()>, BoxError> =
            Err(Box::new(io::Error::from(io::ErrorKind::ConnectionReset)));
        assert_eq!(make.make_classify(&post).classify(&reset), Class::Failure);
        // The one rule: the `Repeatable` extension counts here as in retry.
        let mut marked = Request::post("/").body(()).unwrap();
        marked.extensions_mut().insert(Repeatable);
        assert_eq!(
            make.make_classify(&marked).classify(&status(503)),
            Class::Retryable
        );
    }

    #[test]
    fn one_idempotency_rule() {
        let req = |method: Method| Request::builder().method(method).body(()).unwrap();
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(is_repeatable(&req(method.clone()), false), "{method}");
        }
        for method in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_repeatable(&req(method.clone()), false), "{method}");
            assert!(is_repeatable(&req(method.clone()), true), "{method}");
            let mut keyed = req(method.clone());
            keyed
                .headers_mut()
                .insert(IDEMPOTENCY_KEY, "k".parse().unwrap());
            assert!(is_repeatable(&keyed, false), "{method}");
            let mut marked = req(method.clone());
            marked.extensions_mut().insert(Repeatable);
            assert!(is_repeatable(&marked, false), "{method}");
        }
    }

    #[test]
    fn combinators() {
        let base = ServerErrorsAsFailures::new();
        let all_retryable = base.map_class(|c| if c.is_failure() { Class::Retryable } else { c });
        assert_eq!(all_retryable.classify(&status(500)), Class::Retryable);
        let not_found = StatusInRange::new(404..=404, Class::Failure);
        let either = base.or(not_found.clone());
        assert_eq!(either.classify(&status(404)), Class::Failure);
        assert_eq!(either.classify(&status(503)), Class::Retryable);
        let both = base.and(not_found);
        assert_eq!(both.classify(&status(404)), Class::Success);
        assert_eq!(both.classify(&status(503)), Class::Success);
        // Both call it a failure: the first one's class is kept.
        let server_errors = base.and(StatusInRange::new(500..=599, Class::Failure));
        assert_eq!(server_errors.classify(&status(503)), Class::Retryable);
        assert_eq!(server_errors.classify(&status(500)), Class::Failure);
        assert_eq!(server_errors.classify(&status(200)), Class::Success);
        let named = from_fn(|_: &Result<Response<()>, BoxError>| Class::Success);
        assert!(format!("{named:?}").contains("FromFn"));
        assert!(format!("{:?}", named.map_class(|c| c)).contains("MapClass"));
        assert_eq!(Class::Retryable.to_string(), "retryable");
    }

    fn io_kind() -> impl Strategy<Value = io::ErrorKind> {
        prop::sample::select(vec![
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::NotConnected,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::TimedOut,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::InvalidData,
            io::ErrorKind::InvalidInput,
            io::ErrorKind::Other,
            io::ErrorKind::NotFound,
        ])
    }

    proptest! {
        /// Every status gets exactly one class, and the one the table says.
        #[test]
        fn every_status_has_one_class(code in 100u16..=999) {
            let c = ServerErrorsAsFailures::new();
            let class = c.classify(&status(code));
            let expected = if [408, 429, 502, 503, 504].contains(&code) {
                Class::Retryable
            } else if (500..600).contains(&code) {
                Class::Failure
            } else {
                Class::Success
            };
            prop_assert_eq!(class, expected);
            let flags = [class.is_success(), class.is_retryable(), class == Class::Failure];
            prop_assert_eq!(flags.iter().filter(|f| **f).count(), 1);
            // The same status always gets the same class.
            prop_assert_eq!(c.classify(&status(code)), class);
        }

        /// Every I/O error kind, at any depth of a source chain, gets one class:
        /// retryable exactly when it is a transport failure.
        #[test]
        fn every_error_kind_has_one_class(kind in io_kind(), depth in 0usize..4) {
            let mut err: BoxError = Box::new(io::Error::from(kind));
            for _ in 0..depth {
                err = Box::new(io::Error::other(err));
            }
            let class = classify_error(&*err);
            prop_assert_eq!(class.is_retryable(), is_transient_io(kind));
            prop_assert!(class != Class::Success);
        }
    }
}
