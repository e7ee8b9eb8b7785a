//! The serde configuration of the stacks and the sidecar.
//!
//! One optional TOML section per layer; every key has a default, unknown
//! keys are rejected with an error that names them, and durations are
//! strings such as `"250ms"`, `"5s"` or `"1m 30s"`.
//!
//! ```toml
//! [sidecar]
//! listen = "127.0.0.1:8080"
//! upstream = "http://127.0.0.1:9000"
//!
//! [timeout]
//! request = "5s"
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_shield::config::Config;
//!
//! let config = Config::from_toml("[timeout]\nrequest = \"250ms\"\n").unwrap();
//! assert_eq!(config.timeout.request, Duration::from_millis(250));
//!
//! let err = Config::from_toml("[timeout]\nrequst = \"1s\"\n").unwrap_err();
//! assert!(err.to_string().contains("unknown field `requst`"));
//! ```

use serde::{Deserialize, Deserializer};
use std::{error::Error as StdError, fmt, net::SocketAddr, path::Path, time::Duration};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// `[sidecar]`: where the sidecar listens and what it proxies to.
    pub sidecar: SidecarConfig,
    /// `[timeout]`: the whole-request timeout.
    pub timeout: TimeoutConfig,
    /// `[breaker]`: a circuit breaker; absent means none.
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    pub breaker: Option<BreakerConfig>,
    /// `[retry]`: retries; absent means none.
    #[cfg(feature = "retry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    pub retry: Option<RetryConfig>,
    /// `[context]`: trace context, IDs and OTLP export; absent means none.
    #[cfg(feature = "context")]
    #[cfg_attr(docsrs, doc(cfg(feature = "context")))]
    pub context: Option<ContextConfig>,
}

/// `[context]`: see [`crate::context::Config`] for what each key means.
///
/// ```toml
/// [context]
/// trust_incoming_ids = true
/// request_id_header = "x-request-id"
/// request_id_aliases = ["x-trace-id"]
/// correlation_id_header = "x-correlation-id"
/// propagate_headers = ["x-user-id", "x-tenant-id"]
/// service_name = "checkout"
/// service_version = "1.4.2"
/// traceresponse = false
/// otlp_endpoint = "http://127.0.0.1:4317"
/// otlp_protocol = "grpc"            # or "http/protobuf"
/// ```
#[cfg(feature = "context")]
#[cfg_attr(docsrs, doc(cfg(feature = "context")))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ContextConfig {
    /// `trust_incoming_ids`: take request and correlation IDs from requests
    /// (default true).
    pub trust_incoming_ids: Option<bool>,
    /// `request_id_header` (default `x-request-id`).
    pub request_id_header: Option<String>,
    /// `request_id_aliases`: more headers a request ID is read from.
    #[serde(default)]
    pub request_id_aliases: Vec<String>,
    /// `correlation_id_header` (default `x-correlation-id`).
    pub correlation_id_header: Option<String>,
    /// `correlation_id_aliases`: more headers a correlation ID is read from.
    #[serde(default)]
    pub correlation_id_aliases: Vec<String>,
    /// `propagate_headers`: plain headers carried from inbound to outbound.
    #[serde(default)]
    pub propagate_headers: Vec<String>,
    /// `service_name`: this service's name (outgoing `x-service-name`, OTLP
    /// `service.name`).
    pub service_name: Option<String>,
    /// `service_version`: this service's version.
    pub service_version: Option<String>,
    /// `traceresponse`: send a W3C `traceresponse` header (default false).
    pub traceresponse: Option<bool>,
    /// `otlp_endpoint`: the collector's base URL; absent means no export.
    pub otlp_endpoint: Option<String>,
    /// `otlp_protocol`: `"grpc"` (default) or `"http/protobuf"`.
    pub otlp_protocol: Option<String>,
    /// `otlp_metrics_interval`: how often metrics are exported (default 60s).
    #[serde(default, deserialize_with = "opt_duration")]
    pub otlp_metrics_interval: Option<Duration>,
}

#[cfg(feature = "context")]
impl ContextConfig {
    /// The context settings this section describes, checked.
    pub fn to_context(&self) -> Result<crate::context::Config, ConfigError> {
        let bad = |e: crate::context::InvalidHeader| {
            ConfigError::field(&format!("context.{}", e.field()), e)
        };
        let mut c = crate::context::Config::new();
        if let Some(v) = self.trust_incoming_ids {
            c = c.trust_incoming_ids(v);
        }
        if let Some(v) = &self.request_id_header {
            c = c.request_id_header(v).map_err(bad)?;
        }
        for v in &self.request_id_aliases {
            c = c.request_id_alias(v).map_err(bad)?;
        }
        if let Some(v) = &self.correlation_id_header {
            c = c.correlation_id_header(v).map_err(bad)?;
        }
        for v in &self.correlation_id_aliases {
            c = c.correlation_id_alias(v).map_err(bad)?;
        }
        for v in &self.propagate_headers {
            c = c.propagate_header(v).map_err(bad)?;
        }
        for (field, v) in [
            ("service_name", &self.service_name),
            ("service_version", &self.service_version),
        ] {
            if let Some(v) = v {
                if http::HeaderValue::from_str(v).is_err() || v.is_empty() {
                    return Err(ConfigError::field(
                        &format!("context.{field}"),
                        format!("{v:?} is not a valid header value"),
                    ));
                }
            }
        }
        if self.service_name.is_some() || self.service_version.is_some() {
            c = c.service(
                self.service_name.as_deref().unwrap_or(""),
                self.service_version.as_deref().unwrap_or(""),
            );
        }
        if let Some(v) = self.traceresponse {
            c = c.traceresponse(v);
        }
        match self.otlp_protocol.as_deref() {
            None | Some("grpc" | "http/protobuf") => {}
            Some(other) => {
                return Err(ConfigError::field(
                    "context.otlp_protocol",
                    format!("{other:?} is not \"grpc\" or \"http/protobuf\""),
                ))
            }
        }
        if let Some(ep) = &self.otlp_endpoint {
            let uri: http::Uri = ep
                .parse()
                .map_err(|e| ConfigError::field("context.otlp_endpoint", e))?;
            if uri.scheme().is_none() || uri.host().is_none() {
                return Err(ConfigError::field(
                    "context.otlp_endpoint",
                    "must be an absolute http(s) URL",
                ));
            }
        }
        if self.otlp_metrics_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::field(
                "context.otlp_metrics_interval",
                "must be greater than zero",
            ));
        }
        Ok(c)
    }

    /// The OTLP export this section describes, when it names an endpoint.
    #[cfg(feature = "otlp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
    pub fn to_otlp(&self) -> Result<Option<crate::context::otlp::OtlpConfig>, ConfigError> {
        use crate::context::otlp::{OtlpConfig, Protocol};
        self.to_context()?;
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(None);
        };
        let protocol: Protocol = self
            .otlp_protocol
            .as_deref()
            .unwrap_or("grpc")
            .parse()
            .map_err(|e| ConfigError::field("context.otlp_protocol", e))?;
        let mut c = OtlpConfig::new(endpoint.clone())
            .protocol(protocol)
            .service(
                self.service_name
                    .clone()
                    .unwrap_or_else(|| "unknown_service".into()),
                self.service_version.clone().unwrap_or_default(),
            );
        if let Some(d) = self.otlp_metrics_interval {
            c = c.metrics_interval(d);
        }
        Ok(Some(c))
    }
}

/// `[retry]`: see [`crate::retry::Config`] for what each key means; absent
/// keys keep its defaults.
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// `max_attempts`: attempts in all, the first included (default 3).
    pub max_attempts: Option<u32>,
    /// `base_delay`: the delay before the first retry (default `"100ms"`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub base_delay: Option<Duration>,
    /// `max_delay`: the longest delay (default `"10s"`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_delay: Option<Duration>,
    /// `multiplier`: growth of each delay (default 2.0).
    pub multiplier: Option<f64>,
    /// `jitter = "none" | "full" | "equal" | "decorrelated"` (default `"full"`).
    pub jitter: Option<JitterValue>,
    /// `deadline`: no retry starts after this, from the first attempt.
    #[serde(default, deserialize_with = "opt_duration")]
    pub deadline: Option<Duration>,
    /// `budget_percent`: retries may add this percentage of recent requests (default 20).
    pub budget_percent: Option<f64>,
    /// `budget_min_per_sec`: retries per second always allowed (default 10).
    pub budget_min_per_sec: Option<u32>,
    /// `max_replay_body`: the largest body kept for replay, in bytes (default 65536).
    pub max_replay_body: Option<usize>,
    /// `retry_non_idempotent`: retry POST and PATCH too (default false).
    pub retry_non_idempotent: Option<bool>,
    /// `respect_retry_after`: obey `Retry-After` on 429 and 503 (default true).
    pub respect_retry_after: Option<bool>,
    /// `max_retry_after`: the longest `Retry-After` obeyed (default `"30s"`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_retry_after: Option<Duration>,
}

/// `[retry] jitter`.
#[cfg(feature = "retry")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum JitterValue {
    /// `"none"`.
    None,
    /// `"full"`.
    Full,
    /// `"equal"`.
    Equal,
    /// `"decorrelated"`.
    Decorrelated,
}

#[cfg(feature = "retry")]
impl RetryConfig {
    /// The retry settings this section describes, checked.
    pub fn to_retry(&self) -> Result<crate::retry::Config, ConfigError> {
        use crate::retry::{Config as R, Jitter};
        let mut c = R::default();
        if let Some(v) = self.max_attempts {
            c = c.max_attempts(v);
        }
        if let Some(v) = self.base_delay {
            c = c.base_delay(v);
        }
        if let Some(v) = self.max_delay {
            c = c.max_delay(v);
        }
        if let Some(v) = self.multiplier {
            c = c.multiplier(v);
        }
        if let Some(v) = self.jitter {
            c = c.jitter(match v {
                JitterValue::None => Jitter::None,
                JitterValue::Full => Jitter::Full,
                JitterValue::Equal => Jitter::Equal,
                JitterValue::Decorrelated => Jitter::Decorrelated,
            });
        }
        if let Some(v) = self.deadline {
            c = c.deadline(v);
        }
        if let Some(v) = self.budget_percent {
            c = c.budget_percent(v);
        }
        if let Some(v) = self.budget_min_per_sec {
            c = c.budget_min_per_sec(v);
        }
        if let Some(v) = self.max_replay_body {
            c = c.max_replay_body(v);
        }
        if let Some(v) = self.retry_non_idempotent {
            c = c.retry_non_idempotent(v);
        }
        if let Some(v) = self.respect_retry_after {
            c = c.respect_retry_after(v);
        }
        if let Some(v) = self.max_retry_after {
            c = c.max_retry_after(v);
        }
        c.validate()
            .map_err(|err| ConfigError::field(&format!("retry.{}", err.field()), err))?;
        Ok(c)
    }

    /// The layer this section describes.
    pub fn layer(&self) -> Result<crate::retry::RetryLayer, ConfigError> {
        crate::retry::RetryLayer::new(self.to_retry()?)
            .map_err(|err| ConfigError::field(&format!("retry.{}", err.field()), err))
    }
}

/// `[sidecar]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SidecarConfig {
    /// `listen`: the address to serve on (overridden by `--listen`).
    pub listen: Option<SocketAddr>,
    /// `upstream`: the absolute `http://` URI to forward to, with an
    /// optional path prefix (overridden by `--upstream`).
    pub upstream: Option<String>,
    /// `workers`: how many threads serve connections, each with its own
    /// listener and connection pool; default: one per CPU.
    pub workers: Option<usize>,
}

/// `[timeout]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TimeoutConfig {
    /// `request`: how long a whole request may take, default `"5s"`.
    #[serde(deserialize_with = "duration")]
    pub request: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            request: Duration::from_secs(5),
        }
    }
}

/// `[breaker]`: see [`crate::breaker::Config`] for what each key means.
#[cfg(feature = "breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// `mode = "consecutive" | "rate"` (default `"consecutive"`).
    #[serde(default)]
    pub mode: BreakerMode,
    /// `failure_threshold`: failures in a row that open it (consecutive mode, default 5).
    pub failure_threshold: Option<u32>,
    /// `failure_rate`: percent of failed calls in the window that opens it (rate mode, default 50).
    pub failure_rate: Option<f64>,
    /// `window`: a number of calls (`100`) or a duration (`"10s"`); default 100 calls.
    pub window: Option<WindowValue>,
    /// `min_calls`: calls the window must hold before a rate is judged (default 10).
    pub min_calls: Option<u32>,
    /// `slow_call_duration`: calls slower than this are slow.
    #[serde(default, deserialize_with = "opt_duration")]
    pub slow_call_duration: Option<Duration>,
    /// `slow_call_rate`: percent of slow calls that opens it.
    pub slow_call_rate: Option<f64>,
    /// `open_for`: how long it stays open (default `"30s"`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub open_for: Option<Duration>,
    /// `open_for_max`: doubles the open time on repeated trips, up to this.
    #[serde(default, deserialize_with = "opt_duration")]
    pub open_for_max: Option<Duration>,
    /// `half_open_probes`: probe calls at a time while half-open (default 1).
    pub half_open_probes: Option<u32>,
    /// `close_after`: probe successes that close it (default 3).
    pub close_after: Option<u32>,
    /// `key = "authority" | "route" | "none"` (default `"authority"`).
    #[serde(default)]
    pub key: BreakerKey,
    /// `max_keys`: breakers kept at most, one per key (default 1024).
    pub max_keys: Option<usize>,
    /// `respect_retry_after`: an upstream's 429/503 with `Retry-After`
    /// opens the breaker for that long (default false).
    #[serde(default)]
    pub respect_retry_after: bool,
    /// `max_retry_after`: the longest `Retry-After` obeyed (default `"60s"`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_retry_after: Option<Duration>,
}

/// `[breaker] mode`.
#[cfg(feature = "breaker")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BreakerMode {
    /// Open after `failure_threshold` failures in a row.
    #[default]
    Consecutive,
    /// Open at `failure_rate` percent over the window.
    Rate,
}

/// `[breaker] key`.
#[cfg(feature = "breaker")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BreakerKey {
    /// One breaker per upstream authority.
    #[default]
    Authority,
    /// One breaker per request path.
    Route,
    /// One breaker for everything.
    None,
}

/// `[breaker] window`: a count of calls or a duration.
#[cfg(feature = "breaker")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowValue {
    /// The last N calls.
    Calls(u32),
    /// The calls of the last duration.
    Duration(Duration),
}

#[cfg(feature = "breaker")]
impl<'de> Deserialize<'de> for WindowValue {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = WindowValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of calls (100) or a duration (\"10s\")")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<WindowValue, E> {
                u32::try_from(v)
                    .map(WindowValue::Calls)
                    .map_err(|_| E::custom(format!("a window of {v} calls is out of range")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<WindowValue, E> {
                u32::try_from(v)
                    .map(WindowValue::Calls)
                    .map_err(|_| E::custom(format!("a window of {v} calls is out of range")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WindowValue, E> {
                humantime::parse_duration(v)
                    .map(WindowValue::Duration)
                    .map_err(|err| {
                        E::custom(format!(
                            "invalid duration {v:?}: {err} (write durations like \"10s\")"
                        ))
                    })
            }
        }
        de.deserialize_any(Visitor)
    }
}

#[cfg(feature = "breaker")]
impl BreakerConfig {
    /// The breaker settings this section describes, checked.
    pub fn to_breaker(&self) -> Result<crate::breaker::Config, ConfigError> {
        use crate::breaker::Config as B;
        let mut c = B::default();
        if let Some(n) = self.min_calls {
            c = c.min_calls(n);
        }
        c = match self.mode {
            BreakerMode::Consecutive => c.consecutive_failures(self.failure_threshold.unwrap_or(5)),
            BreakerMode::Rate => c.failure_rate(self.failure_rate.unwrap_or(50.0)),
        };
        if self.mode == BreakerMode::Consecutive && self.failure_rate.is_some() {
            return Err(ConfigError::field(
                "breaker.failure_rate",
                "needs mode = \"rate\"",
            ));
        }
        if self.mode == BreakerMode::Rate && self.failure_threshold.is_some() {
            return Err(ConfigError::field(
                "breaker.failure_threshold",
                "needs mode = \"consecutive\"",
            ));
        }
        match self.window {
            Some(WindowValue::Calls(n)) => c = c.window_calls(n),
            Some(WindowValue::Duration(d)) => c = c.window_duration(d),
            None => {}
        }
        if let Some(d) = self.slow_call_duration {
            c = c.slow_call_duration(d);
        }
        if let Some(r) = self.slow_call_rate {
            c = c.slow_call_rate(r);
        }
        if let Some(d) = self.open_for {
            c = c.open_for(d);
        }
        if let Some(d) = self.open_for_max {
            c = c.open_for_max(d);
        }
        if let Some(n) = self.half_open_probes {
            c = c.half_open_probes(n);
        }
        if let Some(n) = self.close_after {
            c = c.close_after(n);
        }
        if self.respect_retry_after {
            c = c.respect_retry_after(self.max_retry_after.unwrap_or(Duration::from_secs(60)));
        } else if self.max_retry_after.is_some() {
            return Err(ConfigError::field(
                "breaker.max_retry_after",
                "needs respect_retry_after = true",
            ));
        }
        c.validate().map_err(|err| ConfigError {
            message: err.to_string(),
        })?;
        Ok(c)
    }

    /// The layer this section describes.
    pub fn layer(
        &self,
    ) -> Result<crate::breaker::CircuitBreakerLayer<crate::breaker::KeyBy>, ConfigError> {
        use crate::breaker::{CircuitBreakerLayer, KeyBy};
        let layer = CircuitBreakerLayer::new(self.to_breaker()?).map_err(|err| ConfigError {
            message: err.to_string(),
        })?;
        let layer = match self.max_keys {
            Some(0) => return Err(ConfigError::field("breaker.max_keys", "must be at least 1")),
            Some(n) => layer.max_keys(n),
            None => layer,
        };
        Ok(layer.keyed_by(match self.key {
            BreakerKey::Authority => KeyBy::Authority,
            BreakerKey::Route => KeyBy::Route,
            BreakerKey::None => KeyBy::None,
        }))
    }
}

#[cfg(any(feature = "breaker", feature = "retry"))]
fn opt_duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    duration(de).map(Some)
}

/// Parses a duration string such as `"250ms"`, `"5s"` or `"1m 30s"`.
fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    humantime::parse_duration(&text).map_err(|err| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?}: {err} (write durations like \"250ms\" or \"5s\")"
        ))
    })
}

/// A configuration that could not be read, parsed or accepted.
#[derive(Debug)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    /// An error about one field, named by its dotted path (`timeout.request`).
    pub fn field(field: &str, problem: impl fmt::Display) -> Self {
        Self {
            message: format!("invalid `{field}`: {problem}"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ConfigError {}

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| ConfigError {
            message: err.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            message: format!("cannot read {}: {err}", path.display()),
        })?;
        Self::from_toml(&text).map_err(|err| ConfigError {
            message: format!("{}: {}", path.display(), err.message),
        })
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.request.is_zero() {
            return Err(ConfigError::field(
                "timeout.request",
                "must be greater than zero",
            ));
        }
        if self.sidecar.workers == Some(0) {
            return Err(ConfigError::field("sidecar.workers", "must be at least 1"));
        }
        #[cfg(feature = "breaker")]
        if let Some(breaker) = &self.breaker {
            breaker.layer()?;
        }
        #[cfg(feature = "retry")]
        if let Some(retry) = &self.retry {
            retry.to_retry()?;
        }
        #[cfg(feature = "context")]
        if let Some(context) = &self.context {
            context.to_context()?;
        }
        if let Some(upstream) = &self.sidecar.upstream {
            let uri: http::Uri = upstream
                .parse()
                .map_err(|err| ConfigError::field("sidecar.upstream", err))?;
            crate::proxy::ReverseProxyLayer::new(uri)
                .map_err(|err| ConfigError::field("sidecar.upstream", err))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_full_file() {
        let empty = Config::from_toml("").unwrap();
        assert_eq!(empty.timeout.request, Duration::from_secs(5));
        assert!(empty.sidecar.upstream.is_none());
        let full = Config::from_toml(
            "[sidecar]\nlisten = \"127.0.0.1:8080\"\nupstream = \"http://127.0.0.1:9000/api\"\n[timeout]\nrequest = \"1m 30s\"\n",
        )
        .unwrap();
        assert_eq!(full.timeout.request, Duration::from_secs(90));
        assert_eq!(full.sidecar.listen, Some("127.0.0.1:8080".parse().unwrap()));
    }

    #[cfg(feature = "breaker")]
    #[test]
    fn breaker_section() {
        let config = Config::from_toml(
            "[breaker]\nmode = \"rate\"\nfailure_rate = 25.5\nwindow = \"10s\"\nmin_calls = 5\nslow_call_duration = \"200ms\"\nslow_call_rate = 80\nopen_for = \"5s\"\nopen_for_max = \"1m\"\nhalf_open_probes = 2\nclose_after = 4\nkey = \"route\"\nrespect_retry_after = true\n",
        )
        .unwrap();
        let b = config.breaker.as_ref().unwrap();
        assert_eq!(
            b.window,
            Some(WindowValue::Duration(Duration::from_secs(10)))
        );
        assert_eq!(b.key, BreakerKey::Route);
        let expected = crate::breaker::Config::default()
            .min_calls(5)
            .failure_rate(25.5)
            .window_duration(Duration::from_secs(10))
            .slow_call_duration(Duration::from_millis(200))
            .slow_call_rate(80.0)
            .open_for(Duration::from_secs(5))
            .open_for_max(Duration::from_secs(60))
            .half_open_probes(2)
            .close_after(4)
            .respect_retry_after(Duration::from_secs(60));
        assert_eq!(b.to_breaker().unwrap(), expected);
        let counted = Config::from_toml("[breaker]\nwindow = 50\n").unwrap();
        assert_eq!(
            counted.breaker.unwrap().window,
            Some(WindowValue::Calls(50))
        );
        assert!(Config::from_toml("").unwrap().breaker.is_none());
    }

    #[cfg(feature = "retry")]
    #[test]
    fn retry_section() {
        let config = Config::from_toml(
            "[retry]\nmax_attempts = 4\nbase_delay = \"50ms\"\nmax_delay = \"2s\"\nmultiplier = 3.0\njitter = \"equal\"\ndeadline = \"5s\"\nbudget_percent = 10\nmax_replay_body = 1024\nretry_non_idempotent = true\nrespect_retry_after = false\nmax_retry_after = \"10s\"\n",
        )
        .unwrap();
        let expected = crate::retry::Config::default()
            .max_attempts(4)
            .base_delay(Duration::from_millis(50))
            .max_delay(Duration::from_secs(2))
            .multiplier(3.0)
            .jitter(crate::retry::Jitter::Equal)
            .deadline(Duration::from_secs(5))
            .budget_percent(10.0)
            .max_replay_body(1024)
            .retry_non_idempotent(true)
            .respect_retry_after(false)
            .max_retry_after(Duration::from_secs(10));
        assert_eq!(config.retry.unwrap().to_retry().unwrap(), expected);
        assert!(Config::from_toml("").unwrap().retry.is_none());
        assert_eq!(
            Config::from_toml("[retry]\n")
                .unwrap()
                .retry
                .unwrap()
                .to_retry()
                .unwrap(),
            crate::retry::Config::default()
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("bogus = 1", "unknown field `bogus`"),
            (
                "[timeout]\nrequest = \"5 parsecs\"",
                "invalid duration \"5 parsecs\"",
            ),
            ("[timeout]\nrequest = 5", "invalid type"),
            ("[timeout]\nrequest = \"0s\"", "`timeout.request`"),
            #[cfg(feature = "retry")]
            ("[retry]\nmax_attempts = 0", "`retry.max_attempts`"),
            #[cfg(feature = "retry")]
            ("[retry]\nmultiplier = nan", "`retry.multiplier`"),
            #[cfg(feature = "retry")]
            ("[retry]\nbudget_percent = 2000", "`retry.budget_percent`"),
            #[cfg(feature = "retry")]
            (
                "[retry]\njitter = \"sometimes\"",
                "unknown variant `sometimes`",
            ),
            #[cfg(feature = "retry")]
            ("[retry]\nmax_atempts = 2", "unknown field `max_atempts`"),
            (
                "[sidecar]\nupstream = \"ftp://127.0.0.1/\"",
                "`sidecar.upstream`",
            ),
            ("[sidecar]\nlisten = \"nowhere\"", "invalid socket address"),
            #[cfg(feature = "breaker")]
            (
                "[breaker]\nmode = \"rate\"\nfailure_rate = 101",
                "`breaker.failure_rate`",
            ),
            #[cfg(feature = "breaker")]
            (
                "[breaker]\nmode = \"rate\"\nfailure_rate = nan",
                "`breaker.failure_rate`",
            ),
            #[cfg(feature = "breaker")]
            ("[breaker]\nwindow = 0", "`breaker.window`"),
            #[cfg(feature = "breaker")]
            ("[breaker]\nwindow = \"0s\"", "`breaker.window`"),
            #[cfg(feature = "breaker")]
            ("[breaker]\nwindow = -3", "out of range"),
            #[cfg(feature = "breaker")]
            (
                "[breaker]\nmode = \"sometimes\"",
                "unknown variant `sometimes`",
            ),
            #[cfg(feature = "breaker")]
            ("[breaker]\nkey = \"tenant\"", "unknown variant `tenant`"),
            #[cfg(feature = "breaker")]
            ("[breaker]\nfailure_rate = 50", "needs mode"),
            #[cfg(feature = "breaker")]
            ("[breaker]\nopen_for = \"0s\"", "`breaker.open_for`"),
            #[cfg(feature = "breaker")]
            (
                "[breaker]\nhalf_open_probe = 2",
                "unknown field `half_open_probe`",
            ),
            ("[timeout", "TOML parse error"),
        ];
        for (text, expected) in cases {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
