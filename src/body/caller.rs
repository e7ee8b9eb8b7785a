//! The caller's body: see the `body` module docs.

use crate::{
    error::{chain, Fault},
    BoxError,
};
use bytes::{Buf, Bytes};
use http::{Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU8, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

const RECEIVING: u8 = 0;
const WAITING: u8 = 1;
const DONE: u8 = 2;

/// Where a request body stands, shared between the body (a
/// [`CallerBody`]) and the layers around the call, which find it in the
/// request's extensions.
#[derive(Clone, Debug, Default)]
pub struct BodyProgress(Arc<AtomicU8>);

impl BodyProgress {
    /// `true` while whoever reads the body is waiting for the caller to
    /// send more of it: the last read found no bytes, and the body has not
    /// ended.
    pub fn is_waiting_on_caller(&self) -> bool {
        self.0.load(Ordering::Relaxed) == WAITING
    }

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Relaxed);
    }
}

/// The error of a [`CallerBody`] whose deadline passed while it waited for
/// the caller's bytes.
#[derive(Debug)]
struct TooSlow(Duration);

impl fmt::Display for TooSlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the request body did not arrive within {:?}", self.0)
    }
}

impl std::error::Error for TooSlow {}

/// A fault of the caller's, as an error.
fn caller_fault(status: StatusCode, source: impl Into<BoxError>) -> BoxError {
    Box::new(Fault::new(status).with_source(source))
}

pin_project! {
    /// A request body as it arrives from the caller: its errors are the
    /// caller's faults (400), and past its deadline, a wait for the
    /// caller's bytes fails with a 408 fault. See the [`body`](crate::body) module docs.
    pub struct CallerBody<B: Body> {
        #[pin]
        inner: B,
        // `None` for a body that was empty from the start.
        progress: Option<BodyProgress>,
        deadline: Option<(Instant, Duration)>,
        // Made on the first wait, so a body that arrives at once costs no timer.
        sleep: Option<Pin<Box<Sleep>>>,
        failed: bool,
        // Frames read ahead (`read_ahead`), given out before the rest.
        held: VecDeque<Frame<B::Data>>,
    }
}

impl<B: Body> CallerBody<B> {
    /// Wraps `body`; the progress it reports, if it is not empty.
    pub fn new(body: B) -> (Self, Option<BodyProgress>) {
        let progress = (!body.is_end_stream()).then(BodyProgress::default);
        let wrapped = Self {
            inner: body,
            progress: progress.clone(),
            deadline: None,
            sleep: None,
            failed: false,
            held: VecDeque::new(),
        };
        (wrapped, progress)
    }

    /// Fails a wait for the caller's bytes once `timeout` has passed since
    /// now.
    pub fn deadline(mut self, timeout: Duration) -> Self {
        self.deadline = Some((Instant::now() + timeout, timeout));
        self
    }
}

impl<B> CallerBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Reads the body ahead, up to `limit` bytes, under the same rules as
    /// any read of it (its errors are the caller's, its deadline holds);
    /// what was read is given out again, first, by the body itself. The
    /// whole body when it fits, else `None` (the rest still streams).
    ///
    /// # Errors
    ///
    /// The body failed (a 400 or 408 fault, as for any read).
    pub async fn read_ahead(&mut self, limit: usize) -> Result<Option<Bytes>, BoxError> {
        let mut held: VecDeque<Frame<Bytes>> = VecDeque::new();
        let mut size = 0usize;
        let result = loop {
            if size > limit {
                break Ok(None);
            }
            match std::future::poll_fn(|cx| Pin::new(&mut *self).poll_inner(cx)).await {
                None => {
                    let mut whole = bytes::BytesMut::with_capacity(size);
                    for frame in &held {
                        if let Some(data) = frame.data_ref() {
                            whole.extend_from_slice(data);
                        }
                    }
                    break Ok(Some(whole.freeze()));
                }
                Some(Ok(frame)) => {
                    size += frame.data_ref().map_or(0, Bytes::len);
                    held.push_back(frame);
                }
                Some(Err(err)) => break Err(err),
            }
        };
        held.append(&mut self.held);
        self.held = held;
        result
    }
}

impl<B: Body> fmt::Debug for CallerBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerBody")
            .field("progress", &self.progress)
            .field("deadline", &self.deadline.map(|(_, d)| d))
            .finish_non_exhaustive()
    }
}

impl<B> Body for CallerBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        if let Some(frame) = self.as_mut().project().held.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        self.poll_inner(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty() && (self.failed || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.failed {
            return SizeHint::with_exact(0);
        }
        let held: u64 = self
            .held
            .iter()
            .filter_map(Frame::data_ref)
            .map(|d| d.remaining() as u64)
            .sum();
        let inner = self.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + held);
        }
        hint
    }
}

impl<B> CallerBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    /// A frame from the caller's body itself.
    fn poll_inner(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let set = |state| {
            if let Some(p) = this.progress.as_ref() {
                p.set(state);
            }
        };
        let frame = match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                set(WAITING);
                let Some((at, timeout)) = *this.deadline else {
                    return Poll::Pending;
                };
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                ready!(sleep.as_mut().poll(cx));
                *this.failed = true;
                set(DONE);
                return Poll::Ready(Some(Err(caller_fault(
                    StatusCode::REQUEST_TIMEOUT,
                    TooSlow(timeout),
                ))));
            }
        };
        match frame {
            None => {
                set(DONE);
                Poll::Ready(None)
            }
            Some(Ok(frame)) => {
                set(RECEIVING);
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(err)) => {
                *this.failed = true;
                set(DONE);
                Poll::Ready(Some(Err(caller_fault(StatusCode::BAD_REQUEST, err))))
            }
        }
    }
}

/// Wraps every request body in a [`CallerBody`] and puts its
/// [`BodyProgress`] in the request's extensions, for a
/// [`CallerTimeoutLayer`] further in. Goes where requests arrive from their
/// callers: outside the circuit breaker, the retries and the timeout.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallerBodyLayer {
    deadline: Option<Duration>,
}

impl CallerBodyLayer {
    /// Wraps bodies without a deadline of their own (a timeout further in
    /// bounds the call).
    pub const fn new() -> Self {
        Self { deadline: None }
    }

    /// Fails a wait for the caller's bytes (408) once `timeout` has passed
    /// since the request arrived: for a body read outside any timeout, as a
    /// retry layer reads a body ahead to replay it.
    pub const fn deadline(mut self, timeout: Duration) -> Self {
        self.deadline = Some(timeout);
        self
    }
}

impl<S> Layer<S> for CallerBodyLayer {
    type Service = CallerBodyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallerBodyService {
            inner,
            deadline: self.deadline,
        }
    }
}

/// The service of [`CallerBodyLayer`].
#[derive(Debug, Clone)]
pub struct CallerBodyService<S> {
    inner: S,
    deadline: Option<Duration>,
}

impl<S> CallerBodyService<S> {
    define_inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for CallerBodyService<S>
where
    S: Service<Request<CallerBody<B>>>,
    B: Body,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let (mut body, progress) = CallerBody::new(body);
        if let Some(progress) = progress {
            if let Some(timeout) = self.deadline {
                body = body.deadline(timeout);
            }
            parts.extensions.insert(progress);
        }
        self.inner.call(Request::from_parts(parts, body))
    }
}

/// Turns a timeout ([`tower::timeout::error::Elapsed`]) that passed while
/// the request's body was waiting on its caller into a 408 fault: the
/// caller was too slow, not the service. Goes just outside the timeout and
/// inside the circuit breaker; reads the [`BodyProgress`] a
/// [`CallerBodyLayer`] put in the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallerTimeoutLayer {
    _priv: (),
}

impl CallerTimeoutLayer {
    /// Creates the layer.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl<S> Layer<S> for CallerTimeoutLayer {
    type Service = CallerTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallerTimeout { inner }
    }
}

/// The service of [`CallerTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct CallerTimeout<S> {
    inner: S,
}

impl<S> CallerTimeout<S> {
    define_inner_service_accessors!();
}

impl<S, B> Service<Request<B>> for CallerTimeout<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = CallerTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let progress = req.extensions().get::<BodyProgress>().cloned();
        CallerTimeoutFuture {
            inner: self.inner.call(req),
            progress,
        }
    }
}

pin_project! {
    /// Response future of [`CallerTimeout`].
    #[derive(Debug)]
    pub struct CallerTimeoutFuture<F> {
        #[pin]
        inner: F,
        progress: Option<BodyProgress>,
    }
}

impl<F, T, E> Future for CallerTimeoutFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let err: BoxError = match ready!(this.inner.poll(cx)) {
            Ok(res) => return Poll::Ready(Ok(res)),
            Err(err) => err.into(),
        };
        let caller_was_slow = this
            .progress
            .as_ref()
            .is_some_and(BodyProgress::is_waiting_on_caller)
            && chain(&*err).any(|e| e.is::<tower::timeout::error::Elapsed>());
        if caller_was_slow {
            // The timeout's own error is left out: it would make the
            // answer a 504.
            return Poll::Ready(Err(caller_fault(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            )));
        }
        Poll::Ready(Err(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::find_fault;
    use bytes::Bytes;
    use futures_util::{stream, StreamExt};
    use http_body_util::{BodyExt, Empty, StreamBody};
    use std::convert::Infallible;
    use tower::ServiceExt;

    type Frames =
        Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + Unpin>;

    fn body(frames: Frames) -> StreamBody<Frames> {
        StreamBody::new(frames)
    }

    fn hello_then_pending() -> StreamBody<Frames> {
        body(Box::new(
            stream::iter([Ok(Frame::data(Bytes::from("hello")))]).chain(stream::pending()),
        ))
    }

    #[test]
    fn an_empty_body_needs_no_progress() {
        let (body, progress) = CallerBody::new(Empty::<Bytes>::new());
        assert!(progress.is_none());
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }

    #[tokio::test]
    async fn a_failing_body_is_the_caller_s_400_and_then_ends() {
        let frames: Frames = Box::new(stream::iter([
            Ok(Frame::data(Bytes::from("ab"))),
            Err::<Frame<Bytes>, BoxError>("bad chunk size".into()),
        ]));
        let (mut body, progress) = CallerBody::new(body(frames));
        let progress = progress.unwrap();
        assert!(!body.is_end_stream());
        body.frame().await.unwrap().unwrap();
        assert!(!progress.is_waiting_on_caller());
        let err = body.frame().await.unwrap().unwrap_err();
        let fault = find_fault(&*err).unwrap();
        assert_eq!(fault.status(), StatusCode::BAD_REQUEST);
        assert!(fault.is_caller_fault());
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.frame().await.is_none());
        assert!(!progress.is_waiting_on_caller());
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_past_its_deadline_is_the_caller_s_408() {
        let (body, progress) = CallerBody::new(hello_then_pending());
        let mut body = body.deadline(Duration::from_secs(2));
        let progress = progress.unwrap();
        body.frame().await.unwrap().unwrap();
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(
            find_fault(&*err).unwrap().status(),
            StatusCode::REQUEST_TIMEOUT
        );
        let causes: Vec<String> = crate::error::chain(&*err).map(|e| e.to_string()).collect();
        assert!(
            causes
                .iter()
                .any(|c| c == "the request body did not arrive within 2s"),
            "{causes:?}"
        );
        assert!(body.is_end_stream());
        assert!(!progress.is_waiting_on_caller());
        assert!(format!("{body:?}").contains("deadline: Some(2s)"));
    }

    #[tokio::test(start_paused = true)]
    async fn progress_says_when_the_reader_waits_on_the_caller() {
        let (mut body, progress) = CallerBody::new(hello_then_pending());
        let progress = progress.unwrap();
        assert!(!progress.is_waiting_on_caller());
        body.frame().await.unwrap().unwrap();
        assert!(!progress.is_waiting_on_caller());
        let waited = tokio::time::timeout(Duration::from_secs(1), body.frame()).await;
        assert!(waited.is_err());
        assert!(progress.is_waiting_on_caller());
    }

    /// A timeout becomes the caller's 408 only while the body waits on the
    /// caller; any other error, or a timeout while the body is not waiting,
    /// passes unchanged.
    #[tokio::test(start_paused = true)]
    async fn only_a_timeout_that_hit_a_waiting_body_is_the_caller_s() {
        let elapsed = || -> BoxError { Box::new(tower::timeout::error::Elapsed::new()) };
        for (waiting, error, caller) in [
            (true, elapsed(), true),
            (false, elapsed(), false),
            (true, BoxError::from("upstream reset"), false),
        ] {
            let progress = BodyProgress::default();
            if waiting {
                progress.set(WAITING);
            }
            let mut error = Some(error);
            let svc =
                CallerTimeoutLayer::new().layer(tower::service_fn(move |_req: Request<()>| {
                    let err = error.take().unwrap();
                    async move { Err::<(), BoxError>(err) }
                }));
            let mut req = Request::new(());
            req.extensions_mut().insert(progress);
            let err = svc.oneshot(req).await.unwrap_err();
            assert_eq!(
                crate::error::is_caller_fault(&*err),
                caller,
                "{waiting} {err}"
            );
            if caller {
                assert_eq!(
                    crate::error::status_for(&*err).0,
                    StatusCode::REQUEST_TIMEOUT
                );
            }
        }
        // Without a progress (a request from elsewhere), nothing changes.
        let svc = CallerTimeoutLayer::new().layer(tower::service_fn(|_req: Request<()>| async {
            Err::<(), BoxError>(Box::new(tower::timeout::error::Elapsed::new()))
        }));
        let err = svc.oneshot(Request::new(())).await.unwrap_err();
        assert!(err.is::<tower::timeout::error::Elapsed>());
        // And an answer passes through.
        let ok = CallerTimeoutLayer::new().layer(tower::service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(7)
        }));
        assert_eq!(ok.oneshot(Request::new(())).await.unwrap(), 7);
    }

    /// An inner service that cannot become ready.
    #[derive(Clone)]
    pub(crate) struct NotReady;

    impl<R> Service<R> for NotReady {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err("not ready".into()))
        }

        fn call(&mut self, _: R) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn readiness_is_the_inner_service_s() {
        let mut body = CallerBodyLayer::new().layer(NotReady);
        let err = ServiceExt::<Request<Empty<Bytes>>>::ready(&mut body)
            .await
            .err();
        assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("not ready"));
        let mut timeout = CallerTimeoutLayer::new().layer(NotReady);
        let err = ServiceExt::<Request<()>>::ready(&mut timeout).await.err();
        assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("not ready"));
    }

    /// The layer wraps bodies and puts their progress where the timeout
    /// layer further in finds it; an empty body gets none.
    #[tokio::test]
    async fn the_body_layer_shares_progress_through_the_extensions() {
        let svc = CallerBodyLayer::new()
            .deadline(Duration::from_secs(1))
            .layer(tower::service_fn(
                |req: Request<CallerBody<StreamBody<Frames>>>| async move {
                    Ok::<_, Infallible>(req.extensions().get::<BodyProgress>().is_some())
                },
            ));
        let req = Request::new(hello_then_pending());
        assert!(svc.clone().oneshot(req).await.unwrap());
        let empty: Frames = Box::new(stream::empty());
        let req = Request::new(StreamBody::new(empty));
        // A stream body cannot tell it is empty before it is read.
        assert!(svc.oneshot(req).await.unwrap());
        let svc = CallerBodyLayer::new().layer(tower::service_fn(
            |req: Request<CallerBody<Empty<Bytes>>>| async move {
                Ok::<_, Infallible>(req.extensions().get::<BodyProgress>().is_some())
            },
        ));
        assert!(!svc.oneshot(Request::new(Empty::new())).await.unwrap());
    }
}
