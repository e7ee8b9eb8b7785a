//! Spans and metrics of three real services, A -> B -> C on 127.0.0.1,
//! exported through opentelemetry-otlp to an in-process OTLP receiver built
//! on the official protobuf definitions (opentelemetry-proto). A and C
//! export over HTTP/protobuf, B over gRPC.
#![cfg(all(feature = "otlp", feature = "context"))]

mod support;

use axum::{
    body::Bytes as AxBytes,
    extract::State,
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            metrics_service_server::{MetricsService, MetricsServiceServer},
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        },
        trace::v1::{
            trace_service_server::{TraceService, TraceServiceServer},
            ExportTraceServiceRequest, ExportTraceServiceResponse,
        },
    },
    common::v1::{any_value::Value as AnyValue, KeyValue},
    trace::v1::{span::SpanKind, Span},
};
use prost::Message;
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_shield::{
    context::{ClientContextLayer, Config, ServerContextLayer},
    telemetry::otlp::{OtlpConfig, Protocol, Telemetry},
};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Default, Clone)]
struct Collected {
    /// (service.name, service.version, span)
    spans: Arc<Mutex<Vec<(String, String, Span)>>>,
    metrics: Arc<Mutex<Vec<(String, String)>>>,
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            AnyValue::IntValue(i) => Some(i.to_string()),
            AnyValue::BoolValue(b) => Some(b.to_string()),
            AnyValue::DoubleValue(d) => Some(d.to_string()),
            _ => None,
        }
    })
}

impl Collected {
    fn add_traces(&self, req: ExportTraceServiceRequest) {
        let mut spans = self.spans.lock().unwrap();
        for rs in req.resource_spans {
            let res = rs.resource.unwrap_or_default();
            let name = attr(&res.attributes, "service.name").unwrap_or_default();
            let version = attr(&res.attributes, "service.version").unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push((name.clone(), version.clone(), span));
                }
            }
        }
    }

    fn add_metrics(&self, req: ExportMetricsServiceRequest) {
        let mut metrics = self.metrics.lock().unwrap();
        for rm in req.resource_metrics {
            let res = rm.resource.unwrap_or_default();
            let name = attr(&res.attributes, "service.name").unwrap_or_default();
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    metrics.push((name.clone(), m.name));
                }
            }
        }
    }
}

#[tonic::async_trait]
impl TraceService for Collected {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add_traces(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collected {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.add_metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn protobuf(msg: impl Message) -> ([(http::HeaderName, &'static str); 1], Vec<u8>) {
    (
        [(http::header::CONTENT_TYPE, "application/x-protobuf")],
        msg.encode_to_vec(),
    )
}

/// The receiver: OTLP/HTTP on one port, OTLP/gRPC on another.
async fn receiver(collected: Collected) -> (SocketAddr, SocketAddr) {
    let http = support::serve(
        Router::new()
            .route(
                "/v1/traces",
                post(|State(c): State<Collected>, body: AxBytes| async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(req) => {
                            c.add_traces(req);
                            Ok(protobuf(ExportTraceServiceResponse::default()))
                        }
                        Err(e) => Err((http::StatusCode::BAD_REQUEST, e.to_string())),
                    }
                }),
            )
            .route(
                "/v1/metrics",
                post(|State(c): State<Collected>, body: AxBytes| async move {
                    match ExportMetricsServiceRequest::decode(body) {
                        Ok(req) => {
                            c.add_metrics(req);
                            Ok(protobuf(ExportMetricsServiceResponse::default()))
                        }
                        Err(e) => Err((http::StatusCode::BAD_REQUEST, e.to_string())),
                    }
                }),
            )
            .with_state(collected.clone()),
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collected.clone()))
            .add_service(MetricsServiceServer::new(collected))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (http, grpc)
}

struct Service_ {
    addr: SocketAddr,
    telemetry: Telemetry,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// Runs one service on a thread of its own, with its own runtime, its own
/// `tracing` subscriber and its own OTLP exporters (so its spans carry its
/// own `service.name`).
fn start(
    name: &'static str,
    protocol: Protocol,
    endpoint: String,
    next: Option<SocketAddr>,
) -> Service_ {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let telemetry = Telemetry::new(
                &OtlpConfig::new(endpoint)
                    .protocol(protocol)
                    .service(name, "2.0.0"),
            )
            .unwrap();
            let subscriber = tracing_subscriber::registry().with(telemetry.layer());
            let _guard = tracing::subscriber::set_default(subscriber);
            let mut config = Config::new().service(name, "2.0.0");
            if name == "svc-a" {
                // Only A times its requests: B's gRPC exporter could not
                // export them after its runtime stops.
                config = config.meter(&telemetry.meter());
            }
            let client = ServiceBuilder::new()
                .layer(ClientContextLayer::new(config.clone()))
                .service(support::hyper_client::<Empty<Bytes>>());
            let app = Router::new()
                .route(
                    "/",
                    get(move || {
                        let mut client = client.clone();
                        async move {
                            let cx = tower_shield::context::current().unwrap();
                            let mine = format!("{} {}", cx.parent_id().unwrap(), cx.span_id());
                            match next {
                                None => mine,
                                Some(next) => {
                                    let req = Request::get(format!("http://{next}/"))
                                        .body(Empty::new())
                                        .unwrap();
                                    let res =
                                        client.ready().await.unwrap().call(req).await.unwrap();
                                    let body = res.into_body().collect().await.unwrap().to_bytes();
                                    format!("{mine}\n{}", String::from_utf8_lossy(&body))
                                }
                            }
                        }
                    }),
                )
                .layer(ServerContextLayer::new(config));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tx.send((listener.local_addr().unwrap(), telemetry.clone(), stop))
                .unwrap();
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
    });
    let (addr, telemetry, stop) = rx.recv().unwrap();
    Service_ {
        addr,
        telemetry,
        stop,
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_three_services_arrive_with_their_parent_links() {
    let collected = Collected::default();
    let (http, grpc) = receiver(collected.clone()).await;
    let c = start(
        "svc-c",
        Protocol::HttpProtobuf,
        format!("http://{http}"),
        None,
    );
    let b = start(
        "svc-b",
        Protocol::Grpc,
        format!("http://{grpc}"),
        Some(c.addr),
    );
    let a = start(
        "svc-a",
        Protocol::HttpProtobuf,
        format!("http://{http}/"),
        Some(b.addr),
    );
    let retry = tower_shield::retry::RetryLayer::new(Default::default()).unwrap();
    let registry = tower_shield::telemetry::Registry::new();
    registry.register(retry.clone());
    a.telemetry.observe(&registry);

    let req = Request::get(format!("http://{}/", a.addr))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = support::hyper_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    // Each line: the parent-id the service received, its own span ID.
    let wire: Vec<(String, String)> = String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .map(|l| {
            let (p, s) = l.split_once(' ').unwrap();
            (p.to_owned(), s.to_owned())
        })
        .collect();
    assert_eq!(wire.len(), 3);

    // Flush every service (from blocking threads: B's gRPC export needs its
    // runtime to keep running), then stop them.
    for t in [&a.telemetry, &b.telemetry, &c.telemetry] {
        let t = t.clone();
        tokio::task::spawn_blocking(move || t.flush())
            .await
            .unwrap()
            .unwrap();
    }
    for s in [a, b, c] {
        let _ = s.stop.send(());
        let t = s.telemetry.clone();
        tokio::task::spawn_blocking(move || t.shutdown())
            .await
            .unwrap()
            .unwrap();
    }

    let spans = collected.spans.lock().unwrap().clone();
    let find = |service: &str, kind: SpanKind| -> Span {
        let found: Vec<_> = spans
            .iter()
            .filter(|(s, _, span)| s == service && span.kind == kind as i32)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{service} {kind:?}: {:#?}",
            spans
                .iter()
                .map(|(s, _, x)| (s, &x.name, x.kind))
                .collect::<Vec<_>>()
        );
        assert_eq!(found[0].1, "2.0.0");
        found[0].2.clone()
    };
    let a_server = find("svc-a", SpanKind::Server);
    let a_client = find("svc-a", SpanKind::Client);
    let b_server = find("svc-b", SpanKind::Server);
    let b_client = find("svc-b", SpanKind::Client);
    let c_server = find("svc-c", SpanKind::Server);
    let all = [&a_server, &a_client, &b_server, &b_client, &c_server];
    for s in all {
        assert_eq!(hex(&s.trace_id), TRACE, "{}", s.name);
        assert_eq!(s.name, "GET");
        assert_eq!(
            attr(&s.attributes, "http.request.method").as_deref(),
            Some("GET")
        );
        assert_eq!(
            attr(&s.attributes, "http.response.status_code").as_deref(),
            Some("200")
        );
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
    }
    // The parent chain: caller -> A server -> A client -> B server -> B
    // client -> C server.
    assert_eq!(hex(&a_server.parent_span_id), CALLER_SPAN);
    assert_eq!(a_client.parent_span_id, a_server.span_id);
    assert_eq!(b_server.parent_span_id, a_client.span_id);
    assert_eq!(b_client.parent_span_id, b_server.span_id);
    assert_eq!(c_server.parent_span_id, b_client.span_id);
    // The IDs on the wire are the exported ones.
    assert_eq!(wire[0], (CALLER_SPAN.to_owned(), hex(&a_server.span_id)));
    assert_eq!(wire[1], (hex(&a_client.span_id), hex(&b_server.span_id)));
    assert_eq!(wire[2], (hex(&b_client.span_id), hex(&c_server.span_id)));
    // Server attributes.
    for s in [&a_server, &b_server, &c_server] {
        assert_eq!(attr(&s.attributes, "url.path").as_deref(), Some("/"));
        assert!(attr(&s.attributes, "server.address").is_some());
        assert!(attr(&s.attributes, "request_id").is_some());
    }
    assert!(attr(&b_client.attributes, "url.full")
        .unwrap()
        .starts_with("http://127.0.0.1:"));

    let metrics = collected.metrics.lock().unwrap().clone();
    assert!(
        metrics
            .iter()
            .any(|(s, m)| s == "svc-a" && m == "http.server.request.duration"),
        "{metrics:?}"
    );
    assert!(
        metrics
            .iter()
            .any(|(s, m)| s == "svc-a" && m == "shield.retry.retries"),
        "{metrics:?}"
    );
}

/// The sidecar, given `otlp_endpoint`, exports its own server and client
/// spans, under the caller's trace, and flushes them when it shuts down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidecar_exports_its_spans() {
    let collected = Collected::default();
    let (http, _grpc) = receiver(collected.clone()).await;
    let upstream = support::serve(support::upstream()).await;
    let path = std::env::temp_dir().join(format!(
        "tower-shield-otlp-sidecar-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &path,
        format!(
            "[sidecar]\nupstream = \"http://{upstream}\"\nworkers = 1\n[context]\nservice_name = \"edge\"\nservice_version = \"3.1\"\notlp_endpoint = \"http://{http}\"\notlp_protocol = \"http/protobuf\"\n"
        ),
    )
    .unwrap();
    let mut sidecar = support::start_sidecar(&["--config", path.to_str().unwrap()]);
    let req = Request::get(format!("http://{}/echo", sidecar.addr.unwrap()))
        .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = support::hyper_client().request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let echo: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let sent = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "traceparent")
        .map(|p| p[1].as_str().unwrap().to_owned())
        .unwrap();
    let sent: Vec<u8> = (0..sent.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&sent[i..i + 2], 16).unwrap())
        .collect();
    let sent = tower_shield::context::TraceParent::parse(&sent).unwrap();

    let status = tokio::task::spawn_blocking(move || sidecar.terminate())
        .await
        .unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    std::fs::remove_file(&path).ok();

    let spans = collected.spans.lock().unwrap().clone();
    let of = |kind: SpanKind| {
        spans
            .iter()
            .find(|(s, v, span)| s == "edge" && v == "3.1" && span.kind == kind as i32)
            .map(|(_, _, span)| span.clone())
            .unwrap_or_else(|| panic!("no {kind:?} span: {spans:?}"))
    };
    let (server, client) = (of(SpanKind::Server), of(SpanKind::Client));
    assert_eq!(hex(&server.trace_id), TRACE);
    assert_eq!(hex(&server.parent_span_id), CALLER_SPAN);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(hex(&client.span_id), sent.parent_id.to_string());
    assert_eq!(
        attr(&server.attributes, "url.path").as_deref(),
        Some("/echo")
    );
}
