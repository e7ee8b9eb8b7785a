//! OpenTelemetry export over OTLP: the context layers' spans and the
//! layers' metrics, to any OpenTelemetry collector.
//!
//! [`init`] is the one-call setup for a service: it exports spans through
//! a batch processor and metrics through a periodic reader, over gRPC or
//! HTTP/protobuf, with `service.name` and `service.version` as resource
//! attributes, installs `tracing-opentelemetry` (and a `fmt` logger) as the
//! global `tracing` subscriber, and returns a guard that flushes and shuts
//! the exporters down when dropped. [`Telemetry`] is the same without the
//! global installation, for programs that build their own subscriber.
//!
//! ```no_run
//! use tower_shield::context::otlp::{self, OtlpConfig, Protocol};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let _guard = otlp::init(
//!     &OtlpConfig::new("http://127.0.0.1:4317")
//!         .protocol(Protocol::Grpc)
//!         .service("checkout", "1.4.2"),
//! )?;
//! // ... serve; spans and metrics are exported until `_guard` is dropped.
//! # Ok(()) }
//! ```
//!
//! Metrics: the server layer records `http.server.request.duration` (a
//! histogram in seconds, by `http.request.method` and
//! `http.response.status_code`) once [`Telemetry::install_metrics`] (or
//! [`init`]) has run; [`Telemetry::observe_breakers`] and
//! [`Telemetry::observe_retries`] export the breaker and retry counters.

use super::{SpanId, TraceFlags, TraceId};
use opentelemetry::{
    metrics::{Histogram, Meter, MeterProvider as _},
    trace::{SpanContext, TraceContextExt, TraceState, TracerProvider as _},
    KeyValue,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    metrics::{PeriodicReader, SdkMeterProvider},
    trace::{SdkTracer, SdkTracerProvider},
    Resource,
};
use std::{fmt, sync::OnceLock, time::Duration};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// OTLP over gRPC (collector port 4317). Needs a Tokio runtime when
    /// [`Telemetry::new`] runs.
    #[default]
    Grpc,
    /// OTLP over HTTP with protobuf bodies (collector port 4318).
    HttpProtobuf,
}

impl std::str::FromStr for Protocol {
    type Err = OtlpError;

    /// `grpc` or `http/protobuf`, the values of
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`.
    fn from_str(s: &str) -> Result<Self, OtlpError> {
        match s {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(OtlpError(format!(
                "otlp_protocol: {other:?} is not \"grpc\" or \"http/protobuf\""
            ))),
        }
    }
}

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    endpoint: String,
    protocol: Protocol,
    service_name: String,
    service_version: Option<String>,
    timeout: Duration,
    metrics_interval: Duration,
}

impl OtlpConfig {
    /// Export to the collector at `endpoint`: its base URL, such as
    /// `http://127.0.0.1:4317` for gRPC or `http://127.0.0.1:4318` for
    /// HTTP (where `/v1/traces` and `/v1/metrics` are added).
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol: Protocol::Grpc,
            service_name: "unknown_service".into(),
            service_version: None,
            timeout: Duration::from_secs(10),
            metrics_interval: Duration::from_secs(60),
        }
    }

    /// The transport (default gRPC).
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// `service.name` and `service.version` of the resource.
    pub fn service(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.service_name = name.into();
        self.service_version = Some(version.into());
        self
    }

    /// How long one export may take (default 10 s).
    pub fn export_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often metrics are exported (default 60 s).
    pub fn metrics_interval(mut self, interval: Duration) -> Self {
        self.metrics_interval = interval;
        self
    }
}

/// Setting up or shutting down the export failed.
#[derive(Debug, Clone)]
pub struct OtlpError(String);

impl fmt::Display for OtlpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OtlpError {}

fn err(what: &str, e: impl fmt::Display) -> OtlpError {
    OtlpError(format!("{what}: {e}"))
}

/// The tracer and meter providers of one service, exporting over OTLP.
#[derive(Debug, Clone)]
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
}

const SCOPE: &str = "tower-shield";

impl Telemetry {
    /// Builds the exporters, a batch span processor and a periodic metric
    /// reader. Nothing is installed globally.
    pub fn new(config: &OtlpConfig) -> Result<Self, OtlpError> {
        let mut resource = Resource::builder().with_service_name(config.service_name.clone());
        if let Some(v) = &config.service_version {
            resource = resource.with_attribute(KeyValue::new("service.version", v.clone()));
        }
        let resource = resource.build();
        let base = config.endpoint.trim_end_matches('/');
        let (spans, metrics) = match config.protocol {
            Protocol::Grpc => (
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(base)
                    .with_timeout(config.timeout)
                    .build()
                    .map_err(|e| err("otlp span exporter", e))?,
                opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(base)
                    .with_timeout(config.timeout)
                    .build()
                    .map_err(|e| err("otlp metric exporter", e))?,
            ),
            Protocol::HttpProtobuf => (
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(format!("{base}/v1/traces"))
                    .with_timeout(config.timeout)
                    .build()
                    .map_err(|e| err("otlp span exporter", e))?,
                opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_endpoint(format!("{base}/v1/metrics"))
                    .with_timeout(config.timeout)
                    .build()
                    .map_err(|e| err("otlp metric exporter", e))?,
            ),
        };
        let tracer_provider = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(
                PeriodicReader::builder(metrics)
                    .with_interval(config.metrics_interval)
                    .build(),
            )
            .with_resource(resource)
            .build();
        Ok(Self {
            tracer_provider,
            meter_provider,
        })
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans and
    /// exports them.
    pub fn layer<S>(&self) -> OpenTelemetryLayer<S, SdkTracer>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.tracer_provider.tracer(SCOPE))
    }

    /// The tracer provider.
    pub fn tracer_provider(&self) -> &SdkTracerProvider {
        &self.tracer_provider
    }

    /// The meter provider.
    pub fn meter_provider(&self) -> &SdkMeterProvider {
        &self.meter_provider
    }

    /// The meter this crate's instruments belong to.
    pub fn meter(&self) -> Meter {
        self.meter_provider.meter(SCOPE)
    }

    /// Makes the server layer record `http.server.request.duration` with
    /// this meter provider. The first call in a process wins; later calls
    /// return false.
    pub fn install_metrics(&self) -> bool {
        let histogram = self
            .meter()
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Duration of HTTP server requests.")
            .build();
        SERVER_DURATION.set(histogram).is_ok()
    }

    /// Exports the counters of these breakers: `shield.breaker.calls`,
    /// `.failures`, `.slow_calls`, `.rejections` and `.opened` (the
    /// transitions to open), by `breaker` (the key).
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    pub fn observe_breakers(&self, breakers: &crate::breaker::Breakers) {
        type Pick = fn(&crate::breaker::Metrics) -> u64;
        let counters: [(&'static str, Pick); 5] = [
            ("shield.breaker.calls", |m| m.calls),
            ("shield.breaker.failures", |m| m.failures),
            ("shield.breaker.slow_calls", |m| m.slow_calls),
            ("shield.breaker.rejections", |m| m.rejections),
            ("shield.breaker.opened", |m| m.opened),
        ];
        let meter = self.meter();
        for (name, pick) in counters {
            let breakers = breakers.clone();
            meter
                .u64_observable_counter(name)
                .with_callback(move |observer| {
                    for b in breakers.all() {
                        observer.observe(
                            pick(&b.metrics()),
                            &[KeyValue::new("breaker", b.name().to_owned())],
                        );
                    }
                })
                .build();
        }
    }

    /// Exports the counters of this retry layer: `shield.retry.retries` and
    /// `shield.retry.budget_exhausted`.
    #[cfg(feature = "retry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    pub fn observe_retries<C>(&self, layer: &crate::retry::RetryLayer<C>)
    where
        C: Clone + Send + Sync + 'static,
    {
        let meter = self.meter();
        let l = layer.clone();
        meter
            .u64_observable_counter("shield.retry.retries")
            .with_callback(move |o| o.observe(l.metrics().retries, &[]))
            .build();
        let l = layer.clone();
        meter
            .u64_observable_counter("shield.retry.budget_exhausted")
            .with_callback(move |o| o.observe(l.metrics().budget_exhausted, &[]))
            .build();
    }

    /// Exports everything buffered now.
    pub fn flush(&self) -> Result<(), OtlpError> {
        self.tracer_provider
            .force_flush()
            .map_err(|e| err("flushing spans", e))?;
        self.meter_provider
            .force_flush()
            .map_err(|e| err("flushing metrics", e))
    }

    /// Flushes and stops the exporters.
    pub fn shutdown(&self) -> Result<(), OtlpError> {
        let spans = self
            .tracer_provider
            .shutdown()
            .map_err(|e| err("shutting down spans", e));
        let metrics = self
            .meter_provider
            .shutdown()
            .map_err(|e| err("shutting down metrics", e));
        spans.and(metrics)
    }
}

/// Flushes and shuts the exporters down when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard stops the export"]
pub struct TelemetryGuard {
    telemetry: Telemetry,
}

impl TelemetryGuard {
    /// The providers behind the guard.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.telemetry.shutdown() {
            eprintln!("tower-shield: {e}");
        }
    }
}

/// The one-call setup: builds [`Telemetry`], installs it with a `fmt`
/// logger (INFO and above) as the global `tracing` subscriber and as the
/// global OpenTelemetry meter provider, turns on the server duration
/// histogram, and returns the guard that flushes on shutdown.
///
/// Fails when a global subscriber is already installed.
pub fn init(config: &OtlpConfig) -> Result<TelemetryGuard, OtlpError> {
    use tracing_subscriber::layer::SubscriberExt;
    let telemetry = Telemetry::new(config)?;
    let subscriber = tracing_subscriber::registry()
        .with(telemetry.layer())
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout())),
        )
        .with(tracing::level_filters::LevelFilter::INFO);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| err("installing the tracing subscriber", e))?;
    opentelemetry::global::set_meter_provider(telemetry.meter_provider.clone());
    telemetry.install_metrics();
    Ok(TelemetryGuard { telemetry })
}

static SERVER_DURATION: OnceLock<Histogram<f64>> = OnceLock::new();

/// Whether the server layer should time requests.
pub(super) fn metrics_on() -> bool {
    SERVER_DURATION.get().is_some()
}

pub(super) fn record_server_duration(method: &http::Method, status: Option<u16>, seconds: f64) {
    if let Some(h) = SERVER_DURATION.get() {
        let attrs = [
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("http.response.status_code", i64::from(status.unwrap_or(0))),
        ];
        let n = if status.is_some() { 2 } else { 1 };
        h.record(seconds, &attrs[..n]);
    }
}

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
