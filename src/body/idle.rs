//! A timeout between the frames of a response body: see the `body` module
//! docs.

use crate::{
    classify::{Class, LateOutcome},
    error::Fault,
    BoxError,
};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

/// The error of an [`IdleBody`] that waited too long for a frame.
#[derive(Debug)]
struct Stalled(Duration);

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the response body sent nothing for {:?}", self.0)
    }
}

impl std::error::Error for Stalled {}

/// Wraps each response body in an [`IdleBody`] with this timeout between
/// frames. See the [`body`](crate::body) module docs.
#[derive(Debug, Clone, Copy)]
pub struct IdleTimeoutLayer {
    timeout: Option<Duration>,
    late: bool,
}

impl IdleTimeoutLayer {
    /// A timeout of `timeout` between frames.
    pub const fn new(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            late: false,
        }
    }

    /// Bodies may wait for their frames forever.
    pub const fn none() -> Self {
        Self {
            timeout: None,
            late: false,
        }
    }

    /// Puts a [`LateOutcome`] in each response's extensions and reports a
    /// body that stalls or fails to it, so that a circuit breaker outside
    /// counts the call as failed. Costs an allocation or two per response:
    /// turn it on where a breaker listens (the client stack does).
    pub const fn report_late(mut self, yes: bool) -> Self {
        self.late = yes;
        self
    }
}

impl<S> Layer<S> for IdleTimeoutLayer {
    type Service = IdleTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IdleTimeout {
            inner,
            timeout: self.timeout,
            late: self.late,
        }
    }
}

/// The service of [`IdleTimeoutLayer`].
#[derive(Debug, Clone)]
pub struct IdleTimeout<S> {
    inner: S,
    timeout: Option<Duration>,
    late: bool,
}

impl<S> IdleTimeout<S> {
    define_inner_service_accessors!();
}

impl<S, Req, B> Service<Req> for IdleTimeout<S>
where
    S: Service<Req, Response = Response<B>>,
{
    type Response = Response<IdleBody<B>>;
    type Error = S::Error;
    type Future = IdleTimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        IdleTimeoutFuture {
            inner: self.inner.call(req),
            timeout: self.timeout,
            late: self.late,
        }
    }
}

pin_project! {
    /// Response future of [`IdleTimeout`].
    #[derive(Debug)]
    pub struct IdleTimeoutFuture<F> {
        #[pin]
        inner: F,
        timeout: Option<Duration>,
        late: bool,
    }
}

impl<F, B, E> Future for IdleTimeoutFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<IdleBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        let late = this.late.then(|| {
            let late = LateOutcome::new();
            res.extensions_mut().insert(late.clone());
            late
        });
        let timeout = *this.timeout;
        Poll::Ready(Ok(res.map(|body| IdleBody {
            state: State::Live { body },
            timeout,
            sleep: None,
            late,
        })))
    }
}

pin_project! {
    #[project = StateProj]
    #[project_replace = StateReplace]
    enum State<B> {
        Live { #[pin] body: B },
        Ended,
    }
}

pin_project! {
    /// A response body with a timeout between its frames. See the
    /// [`body`](crate::body) module docs.
    pub struct IdleBody<B> {
        #[pin]
        state: State<B>,
        timeout: Option<Duration>,
        // Made on the first wait, reset by each frame.
        sleep: Option<Pin<Box<Sleep>>>,
        late: Option<LateOutcome>,
    }
}

impl<B> fmt::Debug for IdleBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleBody")
            .field("timeout", &self.timeout)
            .field("ended", &matches!(self.state, State::Ended))
            .finish_non_exhaustive()
    }
}

impl<B> Body for IdleBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        let StateProj::Live { body } = this.state.as_mut().project() else {
            return Poll::Ready(None);
        };
        match body.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(sleep), Some(timeout)) = (this.sleep.as_mut(), *this.timeout) {
                    sleep.as_mut().reset(Instant::now() + timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.state.project_replace(State::Ended);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                this.state.project_replace(State::Ended);
                if let Some(late) = this.late {
                    late.report(Class::Failure);
                }
                Poll::Ready(Some(Err(err.into())))
            }
            Poll::Pending => {
                let Some(timeout) = *this.timeout else {
                    return Poll::Pending;
                };
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(sleep.as_mut().poll(cx));
                // Dropping the body ends its connection.
                this.state.project_replace(State::Ended);
                if let Some(late) = this.late {
                    late.report(Class::Retryable);
                }
                Poll::Ready(Some(Err(Box::new(
                    Fault::new(StatusCode::GATEWAY_TIMEOUT).with_source(Stalled(timeout)),
                ))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            State::Live { body } => body.is_end_stream(),
            State::Ended => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.state {
            State::Live { body } => body.size_hint(),
            State::Ended => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::find_fault;
    use bytes::Bytes;
    use futures_util::{stream, StreamExt};
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;

    type Frames =
        Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send + Unpin>;

    /// A frame every `every`, `n` times, then the end.
    fn ticking(n: usize, every: Duration) -> StreamBody<Frames> {
        let frames = stream::iter(0..n).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok(Frame::data(Bytes::from_static(b"x")))
        });
        StreamBody::new(Box::new(Box::pin(frames)))
    }

    fn stalls() -> StreamBody<Frames> {
        StreamBody::new(Box::new(
            stream::iter([Ok(Frame::data(Bytes::from_static(b"x")))]).chain(stream::pending()),
        ))
    }

    fn fails() -> StreamBody<Frames> {
        StreamBody::new(Box::new(stream::iter([Err::<Frame<Bytes>, BoxError>(
            "reset".into(),
        )])))
    }

    /// Calls a service answering `body` under `layer`; returns the body and
    /// what a listener in the response's extensions heard, if one was there.
    async fn through(
        layer: IdleTimeoutLayer,
        body: StreamBody<Frames>,
    ) -> (
        IdleBody<StreamBody<Frames>>,
        Option<Arc<Mutex<Option<Class>>>>,
    ) {
        let mut body = Some(body);
        let svc = layer.layer(tower::service_fn(move |_req: ()| {
            let body = body.take().unwrap();
            async move { Ok::<_, BoxError>(Response::new(body)) }
        }));
        let res = svc.oneshot(()).await.unwrap();
        let heard = res.extensions().get::<LateOutcome>().map(|late| {
            let heard = Arc::new(Mutex::new(None));
            let sink = heard.clone();
            late.listen(move |class| *sink.lock().unwrap() = Some(class));
            heard
        });
        (res.into_body(), heard)
    }

    #[tokio::test]
    async fn readiness_is_the_inner_service_s() {
        let mut svc = IdleTimeoutLayer::new(Duration::from_secs(1)).layer(NotReady);
        let err = ServiceExt::<()>::ready(&mut svc).await.err();
        assert_eq!(err.map(|e| e.to_string()).as_deref(), Some("not ready"));
    }

    /// An inner service that cannot become ready.
    struct NotReady;

    impl Service<()> for NotReady {
        type Response = Response<()>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Response<()>, BoxError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err("not ready".into()))
        }

        fn call(&mut self, (): ()) -> Self::Future {
            std::future::ready(Ok(Response::new(())))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn frames_within_the_timeout_keep_the_body_alive() {
        let (body, heard) = through(
            IdleTimeoutLayer::new(Duration::from_secs(30)).report_late(true),
            ticking(5, Duration::from_secs(20)),
        )
        .await;
        let started = Instant::now();
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all.len(), 5);
        assert_eq!(started.elapsed(), Duration::from_secs(100));
        assert_eq!(*heard.unwrap().lock().unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_with_a_504_and_is_reported() {
        let (mut body, heard) = through(
            IdleTimeoutLayer::new(Duration::from_secs(30)).report_late(true),
            stalls(),
        )
        .await;
        body.frame().await.unwrap().unwrap();
        let started = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(
            find_fault(&*err).unwrap().status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        let causes: Vec<String> = crate::error::chain(&*err).map(|e| e.to_string()).collect();
        assert!(
            causes
                .iter()
                .any(|c| c == "the response body sent nothing for 30s"),
            "{causes:?}"
        );
        assert_eq!(*heard.unwrap().lock().unwrap(), Some(Class::Retryable));
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(body.frame().await.is_none());
        assert!(format!("{body:?}").contains("ended: true"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_body_is_reported_and_ends() {
        let (mut body, heard) = through(
            IdleTimeoutLayer::new(Duration::from_secs(30)).report_late(true),
            fails(),
        )
        .await;
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(*heard.unwrap().lock().unwrap(), Some(Class::Failure));
        assert!(body.frame().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn without_report_late_no_listener_is_offered_and_none_waits_forever() {
        let (mut body, heard) =
            through(IdleTimeoutLayer::new(Duration::from_secs(30)), stalls()).await;
        assert!(heard.is_none());
        body.frame().await.unwrap().unwrap();
        assert!(body.frame().await.unwrap().is_err());
        let (mut body, _) = through(IdleTimeoutLayer::none(), stalls()).await;
        body.frame().await.unwrap().unwrap();
        let waited = tokio::time::timeout(Duration::from_secs(86_400), body.frame()).await;
        assert!(waited.is_err());
        assert!(!body.is_end_stream());
    }
}
