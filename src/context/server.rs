//! The server layer: reads the context of every inbound request.

use super::{otel_ids, with_scope, Config, Context, TRACERESPONSE};
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Poll},
};
use tower_layer::Layer;
use tower_service::Service;
use tracing::{field, Span};

context_layer! {
    /// Gives every inbound request a [`Context`] and a span; see the
    /// [module docs](super).
    ServerContextLayer => ServerContext
}

/// Shows a header value known to be visible ASCII, without a copy.
pub(crate) struct Text<'a>(pub(crate) &'a HeaderValue);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.to_str().unwrap_or("<non-ascii>"))
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ServerContext<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: fmt::Display,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ServerContextFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let config = &self.config;
        let mut cx = Context::from_headers(req.headers(), config);
        let timing = start_timing(config, req.method());
        let method = req.method();
        let span = tracing::info_span!(
            "HTTP request",
            otel.name = %method,
            otel.kind = "server",
            otel.status_code = field::Empty,
            http.request.method = %method,
            http.route = field::Empty,
            http.response.status_code = field::Empty,
            url.path = req.uri().path(),
            server.address = req.headers().get(http::header::HOST).map(Text).map(field::display),
            trace_id = field::Empty,
            span_id = field::Empty,
            parent_id = cx.parent_id().map(field::display),
            request_id = %Text(cx.request_id()),
            correlation_id = %Text(cx.correlation_id()),
        );
        let parent = cx.parent_id().map(|p| (p, cx.flags(), true));
        if let Some((trace_id, span_id)) = otel_ids(&span, cx.trace_id(), parent) {
            cx.set_ids(trace_id, span_id);
        }
        span.record("trace_id", field::display(cx.trace_id()));
        span.record("span_id", field::display(cx.span_id()));
        req.extensions_mut().insert(cx.clone());
        let mut cx = Some(cx);
        let fut = {
            let _entered = span.enter();
            with_scope(&mut cx, || self.inner.call(req))
        };
        ServerContextFuture {
            inner: Some(fut),
            cx,
            config: config.clone(),
            span,
            timing,
        }
    }
}

/// The start of a request the duration histogram times (with `otlp`).
#[cfg(feature = "otlp")]
type Timing = Option<(std::time::Instant, http::Method)>;
#[cfg(not(feature = "otlp"))]
type Timing = Untimed;

/// Nothing to time without `otlp`.
#[cfg(not(feature = "otlp"))]
struct Untimed;

#[cfg(feature = "otlp")]
fn start_timing(config: &Config, method: &http::Method) -> Timing {
    // The clock is read only when the histogram is on.
    config
        .duration
        .is_some()
        .then(|| (std::time::Instant::now(), method.clone()))
}

#[cfg(not(feature = "otlp"))]
fn start_timing(_config: &Config, _method: &http::Method) -> Timing {
    Untimed
}

#[cfg(feature = "otlp")]
fn finish_timing(config: &Config, timing: &mut Timing, status: Option<u16>) {
    use opentelemetry::KeyValue;
    if let (Some((start, method)), Some(histogram)) = (timing.take(), &config.duration) {
        let attrs = [
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("http.response.status_code", i64::from(status.unwrap_or(0))),
        ];
        let known = if status.is_some() { 2 } else { 1 };
        histogram.record(start.elapsed().as_secs_f64(), &attrs[..known]);
    }
}

#[cfg(not(feature = "otlp"))]
fn finish_timing(_config: &Config, _timing: &mut Timing, _status: Option<u16>) {}

pin_project! {
    /// The future of [`ServerContext`]. The span is entered and the context
    /// put in scope by `poll` itself rather than by `Instrumented` and
    /// `TaskLocalFuture` wrappers: the future is smaller (one span, one
    /// context) and is moved for less.
    pub struct ServerContextFuture<F> {
        // `None` once finished (dropped inside the scope).
        #[pin]
        inner: Option<F>,
        // Always `Some` outside `poll`: swapped into scope while polling.
        cx: Option<Context>,
        config: Arc<Config>,
        span: Span,
        timing: Timing,
    }

    impl<F> PinnedDrop for ServerContextFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // A request dropped before it finished (the client went away):
            // the handler's destructors still run inside its span and with
            // its context, as they would under `Instrumented` and a
            // task-local.
            let mut this = this.project();
            if this.inner.as_mut().as_pin_mut().is_some() {
                let _entered = this.span.enter();
                with_scope(this.cx, || this.inner.set(None));
            }
        }
    }
}

impl<F> fmt::Debug for ServerContextFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerContextFuture")
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ServerContextFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: fmt::Display,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, task: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = {
            let _entered = this.span.enter();
            let inner = &mut this.inner;
            let result = ready!(with_scope(this.cx, || match inner.as_mut().as_pin_mut() {
                Some(fut) => fut.poll(task),
                None => panic!("ServerContextFuture polled after completion"),
            }));
            // Dropped now, inside the span and the scope.
            with_scope(this.cx, || inner.set(None));
            result
        };
        let config = &**this.config;
        finish_timing(
            config,
            this.timing,
            result.as_ref().ok().map(|r| r.status().as_u16()),
        );
        super::record_outcome(this.span, &result, "request failed");
        let Some(cx) = this.cx.take() else {
            return Poll::Ready(result);
        };
        Poll::Ready(result.map(|mut res| {
            let headers = res.headers_mut();
            headers.insert(config.request_id.clone(), cx.request_id().clone());
            headers.insert(config.correlation_id.clone(), cx.correlation_id().clone());
            if config.traceresponse {
                headers.insert(TRACERESPONSE, cx.traceparent().to_header_value());
            }
            res
        }))
    }
}
