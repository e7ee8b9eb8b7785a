//! Reading an inbound request's context from its headers, each validated
//! as its specification says.

use super::{
    config::MAX_PROPAGATED_LEN, cx::Inner, id::valid_id, new_request_id, parse_tracestate, Baggage,
    Config, Context, SpanId, TraceFlags, TraceId, TraceParent, BAGGAGE, TRACEPARENT, TRACESTATE,
};
use http::{header::HeaderName, HeaderMap, HeaderValue};
use std::sync::Arc;

/// How often a request carries one header name.
#[derive(Debug, Clone, Copy)]
enum Seen<'a> {
    Absent,
    Once(&'a HeaderValue),
    /// Sent more than once: ambiguous, so ignored.
    Repeated,
}

impl<'a> Seen<'a> {
    fn single(self) -> Option<&'a HeaderValue> {
        match self {
            Seen::Once(value) => Some(value),
            Seen::Absent | Seen::Repeated => None,
        }
    }

    fn present(self) -> bool {
        !matches!(self, Seen::Absent)
    }
}

/// How often the request carries each of `names`, in one pass over its
/// headers. The names every request is read for go through here: a request
/// has a handful of headers, and comparing their names costs far less than
/// one hashed lookup per name (BENCHMARKS.md).
fn scan<'a, const N: usize>(headers: &'a HeaderMap, names: [&HeaderName; N]) -> [Seen<'a>; N] {
    let mut seen = [Seen::Absent; N];
    for (name, value) in headers {
        if let Some(i) = names.iter().position(|&wanted| wanted == name) {
            seen[i] = match seen[i] {
                Seen::Absent => Seen::Once(value),
                Seen::Once(_) | Seen::Repeated => Seen::Repeated,
            };
        }
    }
    seen
}

/// The value of `name` when the request carries it exactly once: for the
/// names only some configurations read (aliases, carried headers).
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// The main ID header's value if usable, else the first alias's.
fn first_valid_id(
    headers: &HeaderMap,
    main: Seen<'_>,
    aliases: &[HeaderName],
) -> Option<HeaderValue> {
    main.single()
        .filter(|v| valid_id(v))
        .or_else(|| {
            aliases
                .iter()
                .find_map(|name| single(headers, name).filter(|v| valid_id(v)))
        })
        .cloned()
}

/// A carried header's value: visible ASCII and tabs, at most 1024 bytes.
fn plain_value(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=MAX_PROPAGATED_LEN).contains(&b.len())
        && b.iter().all(|&c| c == b'\t' || (0x20..=0x7e).contains(&c))
}

/// The caller's trace when its `traceparent` is valid: trace ID, parent
/// span, flags and `tracestate` (read only with a valid `traceparent`, and
/// dropped whole when invalid, as the Recommendation says). A new trace
/// when it is absent, repeated or invalid.
fn read_trace(
    headers: &HeaderMap,
    traceparent: Seen<'_>,
    tracestate: Seen<'_>,
) -> (TraceId, Option<SpanId>, TraceFlags, Option<HeaderValue>) {
    match traceparent
        .single()
        .and_then(|v| TraceParent::parse(v.as_bytes()).ok())
    {
        Some(p) => {
            let tracestate = if tracestate.present() {
                parse_tracestate(headers.get_all(TRACESTATE)).ok().flatten()
            } else {
                None
            };
            (p.trace_id, Some(p.parent_id), p.flags, tracestate)
        }
        None => (TraceId::random(), None, TraceFlags::NEW_TRACE, None),
    }
}

/// The request and correlation IDs: the caller's when trusted and valid,
/// new ones otherwise (the correlation ID defaults to the request ID).
fn read_ids(
    headers: &HeaderMap,
    config: &Config,
    request_id: Seen<'_>,
    correlation_id: Seen<'_>,
) -> (HeaderValue, HeaderValue) {
    let (request_id, correlation_id) = if config.trust_incoming_ids {
        (
            first_valid_id(headers, request_id, &config.request_id_aliases),
            first_valid_id(headers, correlation_id, &config.correlation_id_aliases),
        )
    } else {
        (None, None)
    };
    let request_id = request_id.unwrap_or_else(new_request_id);
    let correlation_id = correlation_id.unwrap_or_else(|| request_id.clone());
    (request_id, correlation_id)
}

/// The allow-listed headers the request carries once with a plain value.
fn read_propagated(headers: &HeaderMap, config: &Config) -> Vec<(HeaderName, HeaderValue)> {
    config
        .propagate
        .iter()
        .filter_map(|name| {
            single(headers, name)
                .filter(|v| plain_value(v))
                .map(|v| (name.clone(), v.clone()))
        })
        .collect()
}

impl Context {
    /// The context of an inbound request: the caller's trace when its
    /// `traceparent` is valid (a new trace otherwise), a new span ID for
    /// this service, and the IDs, baggage and allow-listed headers the
    /// request brings, each validated, with new IDs where they are missing
    /// or not trusted.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use tower_shield::context::{Config, Context};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap());
    /// headers.insert("x-correlation-id", "order-42".parse().unwrap());
    /// let cx = Context::from_headers(&headers, &Config::new());
    /// assert_eq!(cx.trace_id().to_string(), "0af7651916cd43dd8448eb211c80319c");
    /// assert_eq!(cx.parent_id().unwrap().to_string(), "b7ad6b7169203331");
    /// assert_eq!(cx.correlation_id(), "order-42");
    /// assert_eq!(cx.request_id().len(), 36); // a new UUID v7
    /// ```
    pub fn from_headers(headers: &HeaderMap, config: &Config) -> Self {
        let [traceparent, tracestate, baggage, request_id, correlation_id] = scan(
            headers,
            [
                &TRACEPARENT,
                &TRACESTATE,
                &BAGGAGE,
                &config.request_id,
                &config.correlation_id,
            ],
        );
        let (trace_id, parent_id, flags, tracestate) = read_trace(headers, traceparent, tracestate);
        let baggage = if baggage.present() {
            Baggage::parse(headers.get_all(BAGGAGE))
        } else {
            None
        };
        let (request_id, correlation_id) = read_ids(headers, config, request_id, correlation_id);
        Self {
            inner: Arc::new(Inner {
                trace_id,
                span_id: SpanId::random(),
                parent_id,
                flags,
                tracestate,
                baggage,
                request_id,
                correlation_id,
                propagated: read_propagated(headers, config),
                detached: false,
            }),
        }
    }
}
