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
//! use tower_shield::telemetry::otlp::{self, OtlpConfig, Protocol};
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
//! Metrics: [`Telemetry::observe`] exports every counter of a
//! [`Registry`] (the layers registered there, and any registered later);
//! [`Telemetry::meter`] is the meter to hand to what records its own
//! instruments, such as the server context layer's request-duration
//! histogram (`context::Config::meter`).

use super::{Kind, Registry, Source};
use opentelemetry::{
    metrics::{Meter, MeterProvider as _},
    trace::TracerProvider as _,
    KeyValue,
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    metrics::{PeriodicReader, SdkMeterProvider},
    trace::{SdkTracer, SdkTracerProvider},
    Resource,
};
use std::{fmt, sync::Arc, time::Duration};
use tracing_opentelemetry::OpenTelemetryLayer;

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

    /// Exports the counters of every source in `registry`, now and as
    /// they are registered, as OpenTelemetry observable counters and gauges
    /// read at each export.
    pub fn observe(&self, registry: &Registry) {
        let meter = self.meter();
        registry.on_register(move |source| observe_source(&meter, source));
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
    /// A guard for `telemetry`, for a program that installs its own
    /// subscriber with [`Telemetry::layer`] instead of calling [`init`].
    pub fn new(telemetry: Telemetry) -> Self {
        Self { telemetry }
    }

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
/// global OpenTelemetry meter provider, and returns the guard that flushes
/// on shutdown. Pass [`Telemetry::meter`] to the layers that record
/// instruments of their own, and [`Telemetry::observe`] a [`Registry`].
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
    Ok(TelemetryGuard { telemetry })
}

/// One observable instrument per instrument of `source`, each reading the
/// source at export time and keeping its own values.
fn observe_source(meter: &Meter, source: &Arc<dyn Source>) {
    for (index, instrument) in source.instruments().iter().enumerate() {
        let source = source.clone();
        let read = move |observe: &mut dyn FnMut(u64, &[KeyValue])| {
            source.observe(&mut |i, value, attributes| {
                if i == index {
                    let attributes: Vec<KeyValue> = attributes
                        .iter()
                        .map(|&(k, v)| KeyValue::new(k, v.to_owned()))
                        .collect();
                    observe(value, &attributes);
                }
            });
        };
        match instrument.kind {
            Kind::Counter => {
                meter
                    .u64_observable_counter(instrument.name)
                    .with_description(instrument.description)
                    .with_callback(move |o| read(&mut |v, a| o.observe(v, a)))
                    .build();
            }
            Kind::Gauge => {
                meter
                    .u64_observable_gauge(instrument.name)
                    .with_description(instrument.description)
                    .with_callback(move |o| read(&mut |v, a| o.observe(v, a)))
                    .build();
            }
        }
    }
}
