//! [`Context`]: what one request carries across services.

use super::{Baggage, SpanId, TraceFlags, TraceId, TraceParent};
use http::{header::HeaderName, HeaderValue};
use std::{fmt, sync::Arc};

/// The context of one request: its trace, its IDs and what it carries
/// along. Cheap to clone (one reference count).
#[derive(Clone)]
pub struct Context {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) trace_id: TraceId,
    pub(super) span_id: SpanId,
    pub(super) parent_id: Option<SpanId>,
    pub(super) flags: TraceFlags,
    pub(super) tracestate: Option<HeaderValue>,
    pub(super) baggage: Option<Baggage>,
    pub(super) request_id: HeaderValue,
    pub(super) correlation_id: HeaderValue,
    pub(super) propagated: Vec<(HeaderName, HeaderValue)>,
    // Made by `new_root`: no span of this service carries `span_id`.
    pub(super) detached: bool,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &*self.inner;
        f.debug_struct("Context")
            .field("trace_id", &i.trace_id)
            .field("span_id", &i.span_id)
            .field("parent_id", &i.parent_id)
            .field("flags", &i.flags)
            .field("tracestate", &i.tracestate)
            .field("baggage", &i.baggage)
            .field("request_id", &i.request_id)
            .field("correlation_id", &i.correlation_id)
            .field("propagated", &i.propagated)
            .finish()
    }
}

impl Context {
    /// A context that starts a new trace, with new IDs: what the client
    /// layer uses outside any request.
    pub fn new_root() -> Self {
        let request_id = super::new_request_id();
        Self {
            inner: Arc::new(Inner {
                trace_id: TraceId::random(),
                span_id: SpanId::random(),
                parent_id: None,
                flags: TraceFlags::NEW_TRACE,
                tracestate: None,
                baggage: None,
                correlation_id: request_id.clone(),
                request_id,
                propagated: Vec::new(),
                detached: true,
            }),
        }
    }

    /// The same context with another span ID (the span of this service the
    /// context now stands for).
    pub fn with_span_id(&self, span_id: SpanId) -> Self {
        let i = &*self.inner;
        Self {
            inner: Arc::new(Inner {
                span_id,
                tracestate: i.tracestate.clone(),
                baggage: i.baggage.clone(),
                request_id: i.request_id.clone(),
                correlation_id: i.correlation_id.clone(),
                propagated: i.propagated.clone(),
                ..*i
            }),
        }
    }

    /// Takes the IDs OpenTelemetry gave this service's span. The trace ID
    /// changes only for a trace this service started.
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    pub(crate) fn set_ids(&mut self, trace_id: TraceId, span_id: SpanId) {
        let keep_trace = self.inner.parent_id.is_some();
        if Arc::get_mut(&mut self.inner).is_none() {
            *self = self.with_span_id(span_id);
        }
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.span_id = span_id;
            if !keep_trace {
                inner.trace_id = trace_id;
            }
        }
    }

    /// The trace this request belongs to.
    pub fn trace_id(&self) -> TraceId {
        self.inner.trace_id
    }

    /// This service's span for the request.
    pub fn span_id(&self) -> SpanId {
        self.inner.span_id
    }

    /// The caller's span, when the request came with a valid `traceparent`.
    pub fn parent_id(&self) -> Option<SpanId> {
        self.inner.parent_id
    }

    /// The trace flags (the `sampled` flag is kept across services).
    pub fn flags(&self) -> TraceFlags {
        self.inner.flags
    }

    /// The validated `tracestate`, if any.
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.inner.tracestate.as_ref()
    }

    /// The validated baggage, if any.
    pub fn baggage(&self) -> Option<&Baggage> {
        self.inner.baggage.as_ref()
    }

    /// The request ID.
    pub fn request_id(&self) -> &HeaderValue {
        &self.inner.request_id
    }

    /// The correlation ID (the request ID of the request that started the
    /// chain, unless a caller set another).
    pub fn correlation_id(&self) -> &HeaderValue {
        &self.inner.correlation_id
    }

    /// The allow-listed headers the request brought.
    pub fn propagated(&self) -> &[(HeaderName, HeaderValue)] {
        &self.inner.propagated
    }

    /// The `traceparent` naming this context's own span, as sent in a
    /// `traceresponse`.
    pub fn traceparent(&self) -> TraceParent {
        TraceParent {
            trace_id: self.inner.trace_id,
            parent_id: self.inner.span_id,
            flags: self.inner.flags,
        }
    }

    pub(super) fn is_detached(&self) -> bool {
        self.inner.detached
    }
}
