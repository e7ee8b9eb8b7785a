//! The client layer: writes the current context into outgoing requests.

use super::{otel_ids, server::Text, Config, Context, SpanId};
use http::{Request, Response};
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
    /// Writes the current [`Context`] into every outgoing request, under a
    /// client span; see the [module docs](super).
    ClientContextLayer => ClientContext
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ClientContext<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: fmt::Display,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ClientContextFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let config = &self.config;
        let cx = match req.extensions().get::<Context>() {
            Some(cx) => cx.clone(),
            None => super::current().unwrap_or_else(Context::new_root),
        };
        let method = req.method();
        let uri = req.uri();
        let span = tracing::info_span!(
            "HTTP client",
            otel.name = %method,
            otel.kind = "client",
            otel.status_code = field::Empty,
            http.request.method = %method,
            server.address = uri.host(),
            server.port = uri.port_u16(),
            url.full = %uri,
            http.response.status_code = field::Empty,
            trace_id = field::Empty,
            span_id = field::Empty,
            request_id = %Text(cx.request_id()),
            correlation_id = %Text(cx.correlation_id()),
        );
        // A context made outside any request has no span to hang under: the
        // client span then starts the trace (and OpenTelemetry picks its ID).
        let parent = (!cx.is_detached()).then(|| (cx.span_id(), cx.flags(), false));
        let (trace_id, span_id) = otel_ids(&span, cx.trace_id(), parent)
            .unwrap_or_else(|| (cx.trace_id(), SpanId::random()));
        span.record("trace_id", field::display(trace_id));
        span.record("span_id", field::display(span_id));
        cx.inject_ids(req.headers_mut(), trace_id, span_id, config);
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        ClientContextFuture {
            inner: Some(fut),
            span,
        }
    }
}

pin_project! {
    /// The future of [`ClientContext`]. `poll` enters the span itself: one
    /// span in the future, not an `Instrumented` wrapper's second one.
    pub struct ClientContextFuture<F> {
        // `None` once finished (dropped inside the span).
        #[pin]
        inner: Option<F>,
        span: Span,
    }

    impl<F> PinnedDrop for ClientContextFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // A call dropped before it finished: the inner future's
            // destructors still run inside the client span.
            let mut this = this.project();
            if this.inner.as_mut().as_pin_mut().is_some() {
                this.span.in_scope(|| this.inner.set(None));
            }
        }
    }
}

impl<F> fmt::Debug for ClientContextFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientContextFuture")
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ClientContextFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: fmt::Display,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, task: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = ready!(this
            .span
            .in_scope(|| match this.inner.as_mut().as_pin_mut() {
                Some(fut) => fut.poll(task),
                None => panic!("ClientContextFuture polled after completion"),
            }));
        this.span.in_scope(|| this.inner.set(None));
        super::record_outcome(this.span, &result, "call failed");
        Poll::Ready(result)
    }
}
