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

/// A context layer and its service: the layer holds the settings (or none,
/// for a pass-through), and the service the inner service beside them. The
/// server and client layers differ only in their `call`.
macro_rules! context_layer {
    ($(#[$doc:meta])* $layer:ident => $service:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $layer {
            config: Option<Arc<Config>>,
        }

        impl $layer {
            /// The layer with these settings (a `Config`, or an
            /// `Arc<Config>` shared with other layers).
            pub fn new(config: impl Into<Arc<Config>>) -> Self {
                Self {
                    config: Some(config.into()),
                }
            }

            /// A layer whose services pass requests through untouched, for a
            /// stack whose context settings are optional (the sidecar's
            /// `[context]`).
            pub fn pass_through() -> Self {
                Self { config: None }
            }

            /// A layer with these settings, or one that passes requests
            /// through.
            pub fn optional(config: Option<Config>) -> Self {
                Self {
                    config: config.map(Arc::new),
                }
            }

            /// The layer's settings (`None` for a pass-through layer).
            pub fn config(&self) -> Option<&Config> {
                self.config.as_deref()
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
            // `None` in a stack built without context: a pass-through.
            config: Option<Arc<Config>>,
        }

        impl<S> $service<S> {
            define_inner_service_accessors!();
        }
    };
}

mod baggage;
mod client;
mod config;
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
pub use server::{ServerContext, ServerContextFuture, ServerContextLayer};
pub use trace::{
    parse_tracestate, SpanId, TraceFlags, TraceId, TraceParent, TraceParentError, TraceStateError,
    TRACEPARENT_LEN, TRACESTATE_MAX_LEN, TRACESTATE_MAX_MEMBERS,
};

use bytes::Bytes;
use http::{header::HeaderName, HeaderMap, HeaderValue};
use std::{
    cell::Cell,
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::Poll,
    time::{SystemTime, UNIX_EPOCH},
};

/// The `traceparent` header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// The `traceresponse` header.
pub const TRACERESPONSE: HeaderName = HeaderName::from_static("traceresponse");
/// The `baggage` header.
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// The context of one request: its trace, its IDs and what it carries
/// along. Cheap to clone (one reference count).
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    trace_id: TraceId,
    span_id: SpanId,
    parent_id: Option<SpanId>,
    flags: TraceFlags,
    tracestate: Option<HeaderValue>,
    baggage: Option<Baggage>,
    request_id: HeaderValue,
    correlation_id: HeaderValue,
    propagated: Vec<(HeaderName, HeaderValue)>,
    // Made by `new_root`: no span of this service carries `span_id`.
    detached: bool,
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

thread_local! {
    /// This thread's last request-ID millisecond and counter. Per thread, so
    /// no core ever waits on another (`uuid`'s `Uuid::now_v7` shares one
    /// context behind a global mutex).
    static V7: Cell<V7State> = const { Cell::new(V7State { ms: 0, counter: 0 }) };
}

/// Bits of the per-millisecond counter in a request ID: RFC 9562, section
/// 6.2, method 1 (a fixed-length dedicated counter), 12 bits in `rand_a`
/// and 30 at the top of `rand_b`, followed by 32 random bits.
const V7_COUNTER_BITS: u32 = 42;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct V7State {
    ms: u64,
    counter: u64,
}

impl V7State {
    /// The state for the next ID at `now_ms`, given a random counter seed
    /// (used when a new millisecond starts). The (ms, counter) pair always
    /// grows, so a thread's IDs are strictly ordered even when the clock
    /// stands still or steps back; when the counter would overflow, the ID
    /// borrows the next millisecond, as the RFC allows.
    fn next(self, now_ms: u64, seed: u64) -> Self {
        // Seeds use one bit less than the counter, so a millisecond always
        // has room for at least 2^41 IDs.
        let seed = seed & ((1 << (V7_COUNTER_BITS - 1)) - 1);
        if now_ms > self.ms {
            return Self {
                ms: now_ms,
                counter: seed,
            };
        }
        let counter = self.counter + 1;
        if counter >> V7_COUNTER_BITS == 0 {
            Self {
                ms: self.ms,
                counter,
            }
        } else {
            Self {
                ms: self.ms + 1,
                counter: seed,
            }
        }
    }

    /// The UUID's 16 bytes: 48-bit Unix milliseconds, version 7, counter,
    /// variant `10`, counter, random.
    fn uuid(self, random: u32) -> [u8; 16] {
        let counter = self.counter;
        let hi = (self.ms & 0xffff_ffff_ffff) << 16 | 0x7000 | (counter >> 30);
        let lo = 0x8000_0000_0000_0000 | (counter & ((1 << 30) - 1)) << 32 | u64::from(random);
        (u128::from(hi) << 64 | u128::from(lo)).to_be_bytes()
    }
}

/// Where each byte's two hex digits go in the hyphenated form.
const UUID_DIGITS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// A new request ID: a UUID v7 (RFC 9562) in its hyphenated lowercase form,
/// ordered within a thread and by millisecond across threads, with a random
/// tail from a per-thread generator. The clock read is a vDSO call, not a
/// system call.
///
/// Written here rather than taken from `uuid`, which costs about 790
/// instructions per ID (a 128-bit division per timestamp, a ChaCha
/// generator, per-byte formatting) against about 160 here; `uuid` checks
/// these IDs in the tests.
///
/// ```
/// let id = tower_shield::context::new_request_id();
/// let text = id.to_str().unwrap();
/// assert_eq!(text.len(), 36);
/// assert_eq!(&text[14..15], "7"); // the version
/// ```
pub fn new_request_id() -> HeaderValue {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() * 1000 + u64::from(d.subsec_millis()));
    let state = V7.with(|v7| {
        let next = v7.get().next(now_ms, fastrand::u64(..));
        v7.set(next);
        next
    });
    let bytes = state.uuid(fastrand::u32(..));
    let mut text = [b'-'; 36];
    for (&at, b) in UUID_DIGITS.iter().zip(bytes) {
        text[at] = HEX[usize::from(b >> 4)];
        text[at + 1] = HEX[usize::from(b & 0xf)];
    }
    // One allocation that owns the text, so the clones that follow (the
    // correlation ID, the response's headers, outgoing requests) share it.
    HeaderValue::from_maybe_shared(Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether an incoming request or correlation ID can be used: 1 to 128
/// visible ASCII characters.
fn valid_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=MAX_ID_LEN).contains(&b.len()) && visible_ascii(b)
}

/// Whether every byte is visible ASCII (0x21 to 0x7e), eight at a time.
fn visible_ascii(b: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = b.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let v = u64::from_le_bytes(w);
        // Below 0x80 first, so adding at most 0x5f never carries across bytes.
        let at_least = |lo: u64| v + ONES * (0x80 - lo);
        if v & HIGH != 0 || at_least(0x21) & !at_least(0x7f) & HIGH != HIGH {
            return false;
        }
    }
    words
        .remainder()
        .iter()
        .all(|&c| (0x21..=0x7e).contains(&c))
}

/// The configuration's headers that a request carries, found in one pass
/// over its headers: a length check rules out most names without comparing
/// bytes, and values are taken as the pass meets them, so no name is ever
/// hashed and looked up.
struct Scanned<'a> {
    once: u64,
    twice: u64,
    values: [Option<&'a HeaderValue>; Scanned::KEPT],
}

impl<'a> Scanned<'a> {
    const TRACEPARENT: usize = 0;
    const TRACESTATE: usize = 1;
    const BAGGAGE: usize = 2;
    const IDS: usize = 3;
    /// Values kept from the pass; names past these are looked up.
    const KEPT: usize = 12;

    fn new(headers: &'a HeaderMap, config: &Config) -> Self {
        let mut scan = Scanned {
            once: 0,
            twice: 0,
            values: [None; Self::KEPT],
        };
        for (name, value) in headers {
            let name = name.as_str();
            let mut candidates = config.by_len[name.len().min(63)];
            while candidates != 0 {
                let i = candidates.trailing_zeros() as usize;
                candidates &= candidates - 1;
                if config.names[i].as_str() == name {
                    let bit = 1u64 << i;
                    if scan.once & bit != 0 {
                        scan.twice |= bit;
                    } else {
                        scan.once |= bit;
                        if i < Self::KEPT {
                            scan.values[i] = Some(value);
                        }
                    }
                    break;
                }
            }
        }
        scan
    }

    fn present(&self, i: usize) -> bool {
        self.once & (1 << i) != 0
    }

    fn any_from(&self, i: usize) -> bool {
        i < 64 && self.once >> i != 0
    }

    /// The value of name `i` when the request has it exactly once.
    fn single(&self, headers: &'a HeaderMap, config: &Config, i: usize) -> Option<&'a HeaderValue> {
        if !self.present(i) || self.twice & (1 << i) != 0 {
            None
        } else if i < Self::KEPT {
            self.values[i]
        } else {
            headers.get(&config.names[i])
        }
    }
}

fn plain_value(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=MAX_PROPAGATED_LEN).contains(&b.len())
        && b.iter().all(|&c| c == b'\t' || (0x20..=0x7e).contains(&c))
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
        let scan = Scanned::new(headers, config);
        let parent = scan
            .single(headers, config, Scanned::TRACEPARENT)
            .and_then(|v| TraceParent::parse(v.as_bytes()).ok());
        let (trace_id, parent_id, flags, tracestate) = match parent {
            Some(p) => (
                p.trace_id,
                Some(p.parent_id),
                p.flags,
                // The Recommendation: tracestate is read only with a valid
                // traceparent, and dropped whole when invalid.
                if scan.present(Scanned::TRACESTATE) {
                    parse_tracestate(headers.get_all(TRACESTATE)).ok().flatten()
                } else {
                    None
                },
            ),
            // Absent, repeated or invalid: a new trace.
            None => (TraceId::random(), None, TraceFlags::SAMPLED, None),
        };
        let baggage = if scan.present(Scanned::BAGGAGE) {
            Baggage::parse(headers.get_all(BAGGAGE))
        } else {
            None
        };
        let first_valid = |from: usize, count: usize| {
            (from..from + count)
                .find_map(|i| scan.single(headers, config, i).filter(|v| valid_id(v)))
                .cloned()
        };
        let request_names = 1 + config.request_id_aliases.len();
        let correlation_names = 1 + config.correlation_id_aliases.len();
        let (request_id, correlation_id) = if config.trust_incoming_ids {
            (
                first_valid(Scanned::IDS, request_names),
                first_valid(Scanned::IDS + request_names, correlation_names),
            )
        } else {
            (None, None)
        };
        let request_id = request_id.unwrap_or_else(new_request_id);
        let correlation_id = correlation_id.unwrap_or_else(|| request_id.clone());
        let carried = Scanned::IDS + request_names + correlation_names;
        let propagated = if scan.any_from(carried) {
            config
                .propagate
                .iter()
                .enumerate()
                .filter_map(|(i, name)| {
                    scan.single(headers, config, carried + i)
                        .filter(|v| plain_value(v))
                        .map(|v| (name.clone(), v.clone()))
                })
                .collect()
        } else {
            Vec::new()
        };
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
                propagated,
                detached: false,
            }),
        }
    }

    /// A context that starts a new trace, with new IDs: what the client
    /// layer uses outside any request.
    pub fn new_root() -> Self {
        let request_id = new_request_id();
        Self {
            inner: Arc::new(Inner {
                trace_id: TraceId::random(),
                span_id: SpanId::random(),
                parent_id: None,
                flags: TraceFlags::SAMPLED,
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

    /// Writes this context into outgoing headers, with `span_id` (the
    /// client span) as the parent: `traceparent`, `tracestate`, `baggage`,
    /// the IDs, the allow-listed headers and the service identity. Headers
    /// under these names that are already there are replaced or removed.
    pub fn inject(&self, headers: &mut HeaderMap, span_id: SpanId, config: &Config) {
        self.inject_ids(headers, self.inner.trace_id, span_id, config);
    }

    fn is_detached(&self) -> bool {
        self.inner.detached
    }

    fn inject_ids(
        &self,
        headers: &mut HeaderMap,
        trace_id: TraceId,
        span_id: SpanId,
        config: &Config,
    ) {
        let i = &*self.inner;
        // Which of our headers the request already carries (usually none):
        // only those need removing, and absent ones cost no lookup.
        let present = if headers.is_empty() {
            0
        } else {
            Scanned::new(headers, config).once
        };
        let has = |idx: usize| present & (1 << idx) != 0;
        // Room for what is added, in one step instead of a growth per insert;
        // headers already present are replaced in place and need none.
        let request_names = 1 + config.request_id_aliases.len();
        let correlation_names = 1 + config.correlation_id_aliases.len();
        let added = [
            Scanned::TRACEPARENT,
            Scanned::IDS,
            Scanned::IDS + request_names,
        ]
        .into_iter()
        .chain(i.tracestate.as_ref().map(|_| Scanned::TRACESTATE))
        .chain(i.baggage.as_ref().map(|_| Scanned::BAGGAGE))
        .filter(|&idx| !has(idx))
        .count();
        let service = Scanned::IDS + request_names + correlation_names + config.propagate.len();
        let service_added = usize::from(config.service_name.is_some() && !has(service))
            + usize::from(config.service_version.is_some() && !has(service + 1));
        // Carried headers: counted as added, present or not (few, and rare).
        headers.reserve(added + service_added + i.propagated.len());
        let mut put = |idx: usize, name: &HeaderName, value: Option<&HeaderValue>| match value {
            Some(v) => {
                headers.insert(name.clone(), v.clone());
            }
            None if has(idx) => {
                headers.remove(name);
            }
            None => {}
        };
        put(
            Scanned::TRACEPARENT,
            &TRACEPARENT,
            Some(&trace::header_value(&trace::encode(
                trace_id, span_id, i.flags,
            ))),
        );
        put(Scanned::TRACESTATE, &TRACESTATE, i.tracestate.as_ref());
        put(
            Scanned::BAGGAGE,
            &BAGGAGE,
            i.baggage.as_ref().map(Baggage::header_value),
        );
        put(Scanned::IDS, &config.request_id, Some(&i.request_id));
        for (k, alias) in config.request_id_aliases.iter().enumerate() {
            put(Scanned::IDS + 1 + k, alias, None);
        }
        let at = Scanned::IDS + request_names;
        put(at, &config.correlation_id, Some(&i.correlation_id));
        for (k, alias) in config.correlation_id_aliases.iter().enumerate() {
            put(at + 1 + k, alias, None);
        }
        let at = at + correlation_names;
        for (k, name) in config.propagate.iter().enumerate() {
            let value = i.propagated.iter().find(|(n, _)| n == name).map(|(_, v)| v);
            put(at + k, name, value);
        }
        let at = at + config.propagate.len();
        put(at, &SERVICE_NAME, config.service_name.as_ref());
        put(at + 1, &SERVICE_VERSION, config.service_version.as_ref());
    }
}

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

thread_local! {
    /// The context of the request whose future this thread is polling.
    /// Set only for the length of a `poll` (or a service's `call`), by
    /// swapping a context in and back out: no reference count moves, which
    /// tokio's `task_local!` (`sync_scope` takes the value each time) would
    /// cost twice per request.
    static CURRENT: Cell<Option<Context>> = const { Cell::new(None) };
}

/// Runs `f` with `slot`'s context as the [`current`] one: swaps it in, and
/// back out when `f` returns or unwinds, so that `slot` holds it again and
/// the outer context, if any, is restored.
pub(crate) fn with_scope<R>(slot: &mut Option<Context>, f: impl FnOnce() -> R) -> R {
    struct Restore<'a>(&'a mut Option<Context>);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            swap_current(self.0);
        }
    }
    swap_current(slot);
    let _restore = Restore(slot);
    f()
}

fn swap_current(slot: &mut Option<Context>) {
    // `try_with`: during thread teardown there is nothing to swap with.
    let _ = CURRENT.try_with(|current| *slot = current.replace(slot.take()));
}

/// The context of the request being handled, inside the server layer's
/// scope (or one made with [`scope`], [`in_current`] or [`spawn`]).
pub fn current() -> Option<Context> {
    CURRENT
        .try_with(|current| {
            let cx = current.take();
            let copy = cx.clone();
            current.set(cx);
            copy
        })
        .ok()
        .flatten()
}

/// Runs `fut` with `cx` as the [`current`] context, wherever it is polled
/// (and while it is dropped).
///
/// ```
/// use tower_shield::context::{self, Context};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cx = Context::new_root();
/// let id = context::scope(cx.clone(), async {
///     context::current().map(|cx| cx.trace_id())
/// })
/// .await;
/// assert_eq!(id, Some(cx.trace_id()));
/// assert!(context::current().is_none());
/// # }
/// ```
pub fn scope<F: Future>(cx: Context, fut: F) -> Scoped<F> {
    Scoped {
        cx: Some(cx),
        fut: Some(fut),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`scope`]: `fut` with a context in scope.
    pub struct Scoped<F> {
        cx: Option<Context>,
        #[pin]
        fut: Option<F>,
    }

    impl<F> PinnedDrop for Scoped<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            // The future's own destructors see the context too.
            if this.fut.as_mut().as_pin_mut().is_some() {
                with_scope(this.cx, || this.fut.set(None));
            }
        }
    }
}

impl<F> fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("cx", &self.cx)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, task: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut fut = this.fut;
        let out = with_scope(this.cx, || match fut.as_mut().as_pin_mut() {
            Some(fut) => fut.poll(task),
            None => Poll::Pending,
        });
        if out.is_ready() {
            // Dropped now, inside the scope, rather than after.
            with_scope(this.cx, || fut.set(None));
        }
        out
    }
}

/// Wraps `fut` so that it runs with the current context and inside the
/// current `tracing` span, wherever it is polled. Without a current context
/// the future is left as it is (apart from the span).
pub fn in_current<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    use tracing::Instrument;
    let span = tracing::Span::current();
    let cx = current();
    async move {
        match cx {
            Some(cx) => scope(cx, fut).instrument(span).await,
            None => fut.instrument(span).await,
        }
    }
}

/// `tokio::spawn` that carries the current context and span into the new
/// task, so client calls made there continue the request's trace.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(in_current(fut))
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
#[inline]
fn otel_ids(
    _span: &tracing::Span,
    _trace_id: TraceId,
    _parent: Option<(SpanId, TraceFlags, bool)>,
) -> Option<(TraceId, SpanId)> {
    None
}

#[cfg(test)]
mod tests;
