//! The settings the server and client layers share.

use http::{HeaderName, HeaderValue};
use std::fmt;

/// The default request-ID header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The default correlation-ID header.
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
/// The header the client layer names the calling service in.
pub const SERVICE_NAME: HeaderName = HeaderName::from_static("x-service-name");
/// The header the client layer gives the calling service's version in.
pub const SERVICE_VERSION: HeaderName = HeaderName::from_static("x-service-version");
/// The longest request or correlation ID taken from a request; a longer one
/// is replaced by a new ID.
pub const MAX_ID_LEN: usize = 128;
/// The longest value of a header in `propagate_headers` that is carried
/// along; a longer one is dropped.
pub const MAX_PROPAGATED_LEN: usize = 1024;

/// What the context layers read and write. Build it with the methods
/// below, or from the sidecar's `[context]` section.
///
/// ```
/// use tower_shield::context::Config;
///
/// let config = Config::new()
///     .service("checkout", "1.4.2")
///     .trust_incoming_ids(false)
///     .request_id_alias("x-trace-id")
///     .unwrap()
///     .propagate_header("x-tenant-id")
///     .unwrap();
/// assert_eq!(config.propagated_headers().len(), 1);
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) trust_incoming_ids: bool,
    pub(crate) request_id: HeaderName,
    pub(crate) request_id_aliases: Vec<HeaderName>,
    pub(crate) correlation_id: HeaderName,
    pub(crate) correlation_id_aliases: Vec<HeaderName>,
    pub(crate) propagate: Vec<HeaderName>,
    pub(crate) service_name: Option<HeaderValue>,
    pub(crate) service_version: Option<HeaderValue>,
    pub(crate) traceresponse: bool,
    /// `http.server.request.duration`, when a meter was given.
    #[cfg(feature = "otlp")]
    pub(crate) duration: Option<opentelemetry::metrics::Histogram<f64>>,
}

/// The most header names a configuration reads (IDs, aliases and carried
/// headers together, beside the three W3C headers).
pub const MAX_NAMES: usize = 59;

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("trust_incoming_ids", &self.trust_incoming_ids)
            .field("request_id_header", &self.request_id)
            .field("request_id_aliases", &self.request_id_aliases)
            .field("correlation_id_header", &self.correlation_id)
            .field("correlation_id_aliases", &self.correlation_id_aliases)
            .field("propagate_headers", &self.propagate)
            .field("service_name", &self.service_name)
            .field("service_version", &self.service_version)
            .field("traceresponse", &self.traceresponse)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

/// A header name or value the configuration could not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHeader {
    field: &'static str,
    value: String,
    problem: &'static str,
}

impl InvalidHeader {
    /// The setting that was given the bad value.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?} {}", self.field, self.value, self.problem)
    }
}

impl std::error::Error for InvalidHeader {}

fn name(field: &'static str, value: &str) -> Result<HeaderName, InvalidHeader> {
    HeaderName::from_bytes(value.as_bytes()).map_err(|_| InvalidHeader {
        field,
        value: value.to_owned(),
        problem: "is not a valid header name or value",
    })
}

/// Headers a hop or the proxy owns, which a caller must never set for the
/// next service: hop-by-hop headers (RFC 9110 section 7.6.1), the message's
/// framing, and what a proxy writes itself.
const NOT_CARRIED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "via",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

impl Config {
    /// The defaults: incoming IDs trusted, `x-request-id` and
    /// `x-correlation-id`, no extra headers carried, no service identity,
    /// no `traceresponse`.
    pub fn new() -> Self {
        Self {
            trust_incoming_ids: true,
            request_id: REQUEST_ID,
            request_id_aliases: Vec::new(),
            correlation_id: CORRELATION_ID,
            correlation_id_aliases: Vec::new(),
            propagate: Vec::new(),
            service_name: None,
            service_version: None,
            traceresponse: false,
            #[cfg(feature = "otlp")]
            duration: None,
        }
    }

    /// Whether `header` is one a proxy, a hop or these layers write.
    fn owned(&self, header: &HeaderName) -> bool {
        let ours = [
            &super::TRACEPARENT,
            &super::TRACESTATE,
            &super::TRACERESPONSE,
            &super::BAGGAGE,
            &SERVICE_NAME,
            &SERVICE_VERSION,
            &self.request_id,
            &self.correlation_id,
        ];
        NOT_CARRIED.contains(&header.as_str())
            || ours.contains(&header)
            || self.request_id_aliases.contains(header)
            || self.correlation_id_aliases.contains(header)
    }

    /// An ID header or alias may not be a carried header too.
    fn not_carried(self, field: &'static str, header: &HeaderName) -> Result<Self, InvalidHeader> {
        if self.propagate.contains(header) {
            return Err(InvalidHeader {
                field,
                value: header.as_str().to_owned(),
                problem: "is already in propagate_headers",
            });
        }
        Ok(self)
    }

    /// Each name is looked up in every request: their number is bounded.
    fn check_count(self, field: &'static str, value: &str) -> Result<Self, InvalidHeader> {
        let names = 2
            + self.request_id_aliases.len()
            + self.correlation_id_aliases.len()
            + self.propagate.len();
        if names > MAX_NAMES {
            return Err(InvalidHeader {
                field,
                value: value.to_owned(),
                problem: "is one header too many (at most 59 ID and carried headers)",
            });
        }
        Ok(self)
    }

    /// Whether a request's own request and correlation IDs are used (the
    /// default) or replaced by new ones. Turn it off on a service that faces
    /// the internet, where callers must not choose IDs that show up in your
    /// logs. The trace context is always taken when valid.
    pub fn trust_incoming_ids(mut self, trust: bool) -> Self {
        self.trust_incoming_ids = trust;
        self
    }

    /// The request-ID header (default `x-request-id`).
    pub fn request_id_header(mut self, header: &str) -> Result<Self, InvalidHeader> {
        self.request_id = name("request_id_header", header)?;
        let header = self.request_id.clone();
        self.not_carried("request_id_header", &header)
    }

    /// Another header a request ID is read from when the main one is
    /// absent, such as `x-trace-id`. Outgoing requests carry the main one
    /// only; aliases are removed from them.
    pub fn request_id_alias(mut self, header: &str) -> Result<Self, InvalidHeader> {
        let alias = name("request_id_aliases", header)?;
        self.request_id_aliases.push(alias.clone());
        self.check_count("request_id_aliases", header)?
            .not_carried("request_id_aliases", &alias)
    }

    /// The correlation-ID header (default `x-correlation-id`).
    pub fn correlation_id_header(mut self, header: &str) -> Result<Self, InvalidHeader> {
        self.correlation_id = name("correlation_id_header", header)?;
        let header = self.correlation_id.clone();
        self.not_carried("correlation_id_header", &header)
    }

    /// Another header a correlation ID is read from, as for
    /// [`request_id_alias`](Self::request_id_alias).
    pub fn correlation_id_alias(mut self, header: &str) -> Result<Self, InvalidHeader> {
        let alias = name("correlation_id_aliases", header)?;
        self.correlation_id_aliases.push(alias.clone());
        self.check_count("correlation_id_aliases", header)?
            .not_carried("correlation_id_aliases", &alias)
    }

    /// A plain header carried from the inbound request to every outgoing
    /// one, such as `x-tenant-id`. Values must be visible ASCII (spaces
    /// inside allowed) of at most 1024 bytes; others are dropped.
    ///
    /// Headers the layers or a proxy own are refused: hop-by-hop headers,
    /// `content-length`, `host`, `via`, `forwarded` and `x-forwarded-*`, the
    /// W3C trace headers, the request- and correlation-ID headers and their
    /// aliases, and `x-service-name`/`x-service-version`.
    pub fn propagate_header(mut self, header: &str) -> Result<Self, InvalidHeader> {
        let header = name("propagate_headers", header)?;
        if self.owned(&header) {
            return Err(InvalidHeader {
                field: "propagate_headers",
                value: header.as_str().to_owned(),
                problem: "is a header the proxy or the context layers own, not one to carry",
            });
        }
        if !self.propagate.contains(&header) {
            self.propagate.push(header.clone());
        }
        self.check_count("propagate_headers", header.as_str())
    }

    /// The calling service's name and version, sent on outgoing requests as
    /// `x-service-name` and `x-service-version`, and recorded as the OTLP
    /// resource by the [`otlp`](crate::telemetry) setup. Values that are not
    /// valid header values are left out.
    pub fn service(mut self, name: &str, version: &str) -> Self {
        self.service_name = HeaderValue::from_str(name).ok();
        self.service_version = HeaderValue::from_str(version).ok();
        self
    }

    /// Whether responses carry a W3C `traceresponse` header naming this
    /// service's span (default off).
    pub fn traceresponse(mut self, enabled: bool) -> Self {
        self.traceresponse = enabled;
        self
    }

    /// Records `http.server.request.duration` (a histogram in seconds, by
    /// `http.request.method` and `http.response.status_code`) for every
    /// request the server layer handles, with `meter` (for example
    /// [`Telemetry::meter`](crate::telemetry::otlp::Telemetry::meter)).
    #[cfg(feature = "otlp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
    pub fn meter(mut self, meter: &opentelemetry::metrics::Meter) -> Self {
        self.duration = Some(
            meter
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP server requests.")
                .build(),
        );
        self
    }

    /// The headers carried along.
    pub fn propagated_headers(&self) -> &[HeaderName] {
        &self.propagate
    }

    /// The service name, if set.
    pub fn service_name(&self) -> Option<&str> {
        self.service_name.as_ref().and_then(|v| v.to_str().ok())
    }

    /// The service version, if set.
    pub fn service_version(&self) -> Option<&str> {
        self.service_version.as_ref().and_then(|v| v.to_str().ok())
    }
}
