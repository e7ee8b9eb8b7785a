//! Linking the context layers' spans into OpenTelemetry (feature `otlp`).

use super::{SpanId, TraceFlags, TraceId};
use opentelemetry::trace::{SpanContext, TraceContextExt, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Links `span` into the OpenTelemetry trace of `trace_id` (under
/// `parent`, when given) and returns the IDs OpenTelemetry gave it: the
/// span ID, and the trace ID (which differs from `trace_id` only for a new
/// trace without a parent, where OpenTelemetry's own ID is taken). `None`
/// when no OpenTelemetry layer records the span.
pub(super) fn link(
    span: &tracing::Span,
    trace_id: TraceId,
    parent: Option<(SpanId, TraceFlags, bool)>,
) -> Option<(TraceId, SpanId)> {
    if span.is_disabled() {
        return None;
    }
    if let Some((parent_id, flags, remote)) = parent {
        let sc = SpanContext::new(
            opentelemetry::trace::TraceId::from_bytes(trace_id.to_bytes()),
            opentelemetry::trace::SpanId::from_bytes(parent_id.to_bytes()),
            opentelemetry::trace::TraceFlags::new(flags.bits() & 0x01),
            remote,
            TraceState::default(),
        );
        // Fails only when no OpenTelemetry layer is installed.
        span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc))
            .ok()?;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return None;
    }
    Some((
        TraceId::from_bytes(sc.trace_id().to_bytes())?,
        SpanId::from_bytes(sc.span_id().to_bytes())?,
    ))
}
