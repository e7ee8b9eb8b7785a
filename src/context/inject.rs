//! Writing a context into an outgoing request's headers.

use super::{
    trace, Baggage, Config, Context, SpanId, TraceId, BAGGAGE, SERVICE_NAME, SERVICE_VERSION,
    TRACEPARENT, TRACESTATE,
};
use http::{header::HeaderName, HeaderMap, HeaderValue};

/// Sets `name` to `value`; without a value, removes what the caller set,
/// so that nothing unvalidated reaches the next service.
fn put(headers: &mut HeaderMap, name: &HeaderName, value: Option<&HeaderValue>) {
    match value {
        Some(value) => {
            headers.insert(name.clone(), value.clone());
        }
        None => {
            headers.remove(name);
        }
    }
}

impl Context {
    /// Writes this context into outgoing headers, with `span_id` (the
    /// client span) as the parent: `traceparent`, `tracestate`, `baggage`,
    /// the IDs, the allow-listed headers and the service identity. Headers
    /// under these names that are already there are replaced or removed.
    pub fn inject(&self, headers: &mut HeaderMap, span_id: SpanId, config: &Config) {
        self.inject_ids(headers, self.inner.trace_id, span_id, config);
    }

    /// [`inject`](Self::inject) with the trace ID OpenTelemetry gave the
    /// client span (it differs for a trace this service starts).
    pub(super) fn inject_ids(
        &self,
        headers: &mut HeaderMap,
        trace_id: TraceId,
        span_id: SpanId,
        config: &Config,
    ) {
        let i = &*self.inner;
        let traceparent = trace::header_value(&trace::encode(trace_id, span_id, i.flags));
        headers.insert(TRACEPARENT, traceparent);
        put(headers, &TRACESTATE, i.tracestate.as_ref());
        put(
            headers,
            &BAGGAGE,
            i.baggage.as_ref().map(Baggage::header_value),
        );
        headers.insert(config.request_id.clone(), i.request_id.clone());
        headers.insert(config.correlation_id.clone(), i.correlation_id.clone());
        // Outgoing requests carry the main ID headers only.
        for alias in config
            .request_id_aliases
            .iter()
            .chain(&config.correlation_id_aliases)
        {
            headers.remove(alias);
        }
        for name in &config.propagate {
            let value = i.propagated.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            put(headers, name, value);
        }
        put(headers, &SERVICE_NAME, config.service_name.as_ref());
        put(headers, &SERVICE_VERSION, config.service_version.as_ref());
    }
}
