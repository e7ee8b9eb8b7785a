//! Context propagation: W3C trace context, request and correlation IDs,
//! baggage, and the spans that follow a request across services.
//!
//! Two layers do the work:
//!
//! - [`ServerContextLayer`] goes on a server (an axum router). For every
//!   request it reads `traceparent`, `tracestate`, `baggage`, the request
//!   and correlation IDs and any [allow-listed
//!   headers](Config::propagate_header), validates each as its
//!   specification says (an invalid `traceparent` starts a new trace; a
//!   malformed header is never forwarded), mints what is missing (UUID v7
//!   request IDs, random span IDs, no system call per ID), and makes the
//!   resulting [`Context`] available three ways: in the request's
//!   extensions, in a task-local scope around the handler ([`current`]), and
//!   as the fields of a `tracing` span (`trace_id`, `request_id`,
//!   `correlation_id`, and the OpenTelemetry HTTP server attributes) that
//!   every log event inside the handler carries. The response gets the
//!   request and correlation IDs back.
//! - [`ClientContextLayer`] goes on an outgoing client. It takes the
//!   context from the request's extensions or, failing that, from the
//!   task-local scope, opens a client span, and writes the headers: the same
//!   trace ID with the client span's ID as parent, the sampled flag kept,
//!   `tracestate` and `baggage`, the request and correlation IDs, the
//!   allow-listed headers, and `x-service-name`/`x-service-version`. Headers
//!   the caller set itself under these names are replaced, so nothing
//!   unvalidated reaches the next service. Outside any context (a
//!   background job) it starts a new trace.
//!
//! ```
//! use axum::{routing::get, Router};
//! use http_body_util::Empty;
//! use bytes::Bytes;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use tower::ServiceBuilder;
//! use tower_shield::context::{self, ClientContextLayer, Config, ServerContextLayer};
//!
//! let config = Config::new().service("checkout", "1.0.0");
//! // Every outgoing call made while handling a request carries its context.
//! let client = ServiceBuilder::new()
//!     .layer(ClientContextLayer::new(config.clone()))
//!     .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
//! let app: Router = Router::new()
//!     .route("/", get(|| async {
//!         let cx = context::current().expect("inside the server layer");
//!         tracing::info!("handling"); // carries trace_id, request_id, correlation_id
//!         cx.request_id().to_str().unwrap_or_default().to_owned()
//!     }))
//!     .layer(ServerContextLayer::new(config));
//! # let _ = (client, app);
//! ```
//!
//! # Across `tokio::spawn`
//!
//! The context is in scope while the request's own future is polled (and
//! while the inner service's `call` runs), on whatever executor polls it. A
//! future given to `tokio::spawn` is polled by a new task, outside that
//! scope, and sees no context, so a client call made there would start a
//! new trace. Use [`spawn`] (or wrap the future with [`in_current`]) to
//! carry the context and the current span into the new task, or put the
//! [`Context`] into the outgoing request's extensions yourself.
//!
//! # OpenTelemetry
//!
//! With the `otlp` feature, `telemetry::otlp::init` installs an OTLP
//! exporter behind `tracing-opentelemetry`. The layers' spans then become
//! OpenTelemetry spans whose IDs are the ones on the wire: the server span
//! has the caller's span as parent, and the client span's ID is the
//! `parent-id` the next service sees.

/// A context layer and its service: the layer holds the settings, and the
/// service the inner service beside them. The server and client layers
/// differ only in their `call`. Where a stack's context is optional, it is
/// tower's `option_layer` of one of these.
macro_rules! context_layer {
    ($(#[$doc:meta])* $layer:ident => $service:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $layer {
            config: Arc<Config>,
        }

        impl $layer {
            /// The layer with these settings (a `Config`, or an
            /// `Arc<Config>` shared with other layers).
            pub fn new(config: impl Into<Arc<Config>>) -> Self {
                Self {
                    config: config.into(),
                }
            }

            /// The layer's settings.
            pub fn config(&self) -> &Config {
                &self.config
            }
        }

        impl<S> Layer<S> for $layer {
            type Service = $service<S>;

            fn layer(&self, inner: S) -> Self::Service {
                $service {
                    inner,
                    config: self.config.clone(),
                }
            }
        }

        #[doc = concat!("The service [`", stringify!($layer), "`] builds.")]
        #[derive(Debug, Clone)]
        pub struct $service<S> {
            inner: S,
            config: Arc<Config>,
        }

        impl<S> $service<S> {
            define_inner_service_accessors!();
        }
    };
}

mod baggage;
mod client;
mod config;
mod cx;
mod extract;
mod id;
mod inject;
mod scope;
mod server;
mod trace;

#[cfg(feature = "otlp")]
mod otel;

pub use baggage::{Baggage, BAGGAGE_MAX_LEN, BAGGAGE_MAX_MEMBERS};
pub use client::{ClientContext, ClientContextFuture, ClientContextLayer};
pub use config::{
    Config, InvalidHeader, CORRELATION_ID, MAX_ID_LEN, MAX_NAMES, MAX_PROPAGATED_LEN, REQUEST_ID,
    SERVICE_NAME, SERVICE_VERSION,
};
pub use cx::Context;
pub use id::new_request_id;
pub use scope::{current, in_current, scope, spawn, Scoped};
pub use server::{ServerContext, ServerContextFuture, ServerContextLayer};
pub use trace::{
    parse_tracestate, SpanId, TraceFlags, TraceId, TraceParent, TraceParentError, TraceStateError,
    TRACEPARENT_LEN, TRACESTATE_MAX_LEN, TRACESTATE_MAX_MEMBERS,
};

use http::header::HeaderName;
use scope::with_scope;
use std::fmt;

/// The `traceparent` header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// The `traceresponse` header.
pub const TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");
/// The `baggage` header.
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// Records a call's outcome on its span: the status code, `ERROR` for a
/// 5xx or an error, and a warning event with the error.
fn record_outcome<B, E: fmt::Display>(
    span: &tracing::Span,
    result: &Result<http::Response<B>, E>,
    what: &'static str,
) {
    match result {
        Ok(res) => {
            let status = res.status();
            span.record("http.response.status_code", status.as_u16());
            if status.is_server_error() {
                span.record("otel.status_code", "ERROR");
            }
        }
        Err(e) => {
            span.record("otel.status_code", "ERROR");
            tracing::event!(parent: span, tracing::Level::WARN, error = %e, "{what}");
        }
    }
}

/// The trace and span IDs the OpenTelemetry layer gave `span`, when one
/// is installed and records the span; links the span under `parent`
/// (span, flags, remote) first.
#[cfg(feature = "otlp")]
fn otel_ids(
    span: &tracing::Span,
    trace_id: TraceId,
    parent: Option<(SpanId, TraceFlags, bool)>,
) -> Option<(TraceId, SpanId)> {
    otel::link(span, trace_id, parent)
}

#[cfg(not(feature = "otlp"))]
fn otel_ids(
    _span: &tracing::Span,
    _trace_id: TraceId,
    _parent: Option<(SpanId, TraceFlags, bool)>,
) -> Option<(TraceId, SpanId)> {
    None
}

#[cfg(test)]
mod tests;
