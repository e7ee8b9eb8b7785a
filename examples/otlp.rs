//! Spans and metrics of a service exported over OTLP.
//!
//! ```text
//! cargo run --example otlp --features otlp
//! cargo run --example otlp --features otlp -- --endpoint http://127.0.0.1:4317 --protocol grpc
//! ```
//!
//! A front service (`/checkout`) calls a back service (`/stock`), both
//! behind the context layers, with `otlp::init` as the whole telemetry
//! setup. Without `--endpoint` the example starts a small OTLP/HTTP
//! receiver of its own on 127.0.0.1 (decoding the official protobuf
//! messages) and prints the spans and metrics that reach it; with one, it
//! exports to your collector instead.

use axum::{body::Bytes as AxBytes, extract::State, routing::get, routing::post, Router};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use opentelemetry_proto::tonic::collector::{
    metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest,
};
use prost::Message;
use std::{net::SocketAddr, sync::Arc, sync::Mutex};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_shield::{
    context::{self, ClientContextLayer, Config, ServerContextLayer},
    telemetry::otlp::{self, OtlpConfig, Protocol},
};

type Lines = Arc<Mutex<Vec<String>>>;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A minimal OTLP/HTTP receiver: decodes what arrives and keeps a line per
/// span and per metric.
async fn receiver(lines: Lines) -> SocketAddr {
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(lines): State<Lines>, body: AxBytes| async move {
                let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                    return http::StatusCode::BAD_REQUEST;
                };
                let mut lines = lines.lock().unwrap();
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            let kind = match s.kind {
                                2 => "server",
                                3 => "client",
                                _ => "internal",
                            };
                            lines.push(format!(
                                "span  {:<6} {:<8} trace={} span={} parent={} attributes={}",
                                s.name,
                                kind,
                                hex(&s.trace_id),
                                hex(&s.span_id),
                                if s.parent_span_id.is_empty() {
                                    "-".into()
                                } else {
                                    hex(&s.parent_span_id)
                                },
                                s.attributes.len()
                            ));
                        }
                    }
                }
                http::StatusCode::OK
            }),
        )
        .route(
            "/v1/metrics",
            post(|State(lines): State<Lines>, body: AxBytes| async move {
                let Ok(req) = ExportMetricsServiceRequest::decode(body) else {
                    return http::StatusCode::BAD_REQUEST;
                };
                let mut lines = lines.lock().unwrap();
                for rm in req.resource_metrics {
                    for sm in rm.scope_metrics {
                        for m in sm.metrics {
                            lines.push(format!("metric {}", m.name));
                        }
                    }
                }
                http::StatusCode::OK
            }),
        )
        .with_state(lines);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut args = std::env::args().skip(1);
    let (mut endpoint, mut protocol) = (None, Protocol::HttpProtobuf);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--endpoint", Some(v)) => endpoint = Some(v),
            ("--protocol", Some(v)) => protocol = v.parse()?,
            _ => return Err("usage: otlp [--endpoint URL] [--protocol grpc|http/protobuf]".into()),
        }
    }
    let lines = Lines::default();
    let endpoint = match endpoint {
        Some(e) => e,
        None => {
            protocol = Protocol::HttpProtobuf;
            format!("http://{}", receiver(lines.clone()).await)
        }
    };
    println!("exporting to {endpoint} ({protocol:?})");

    // The whole setup: exporters, batch processor, resource, subscriber.
    let guard = otlp::init(
        &OtlpConfig::new(&endpoint)
            .protocol(protocol)
            .service("shop", "0.1.0"),
    )?;

    // The server layer times every request with the exporter's meter.
    let config = Config::new()
        .service("shop", "0.1.0")
        .meter(&guard.telemetry().meter());
    let client = ServiceBuilder::new()
        .layer(ClientContextLayer::new(config.clone()))
        .service(Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/stock", get(|| async { "3 left" }))
        .route(
            "/checkout",
            get(move || {
                let mut client = client.clone();
                async move {
                    tracing::info!("checking stock");
                    let req = Request::get(format!("http://{addr}/stock"))
                        .body(Empty::new())
                        .unwrap();
                    let res = client.ready().await.unwrap().call(req).await.unwrap();
                    let body = res.into_body().collect().await.unwrap().to_bytes();
                    format!("ordered; stock said {}", String::from_utf8_lossy(&body))
                }
            }),
        )
        .layer(ServerContextLayer::new(config));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let res = http
        .oneshot(
            Request::get(format!("http://{addr}/checkout"))
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .body(Empty::new())?,
        )
        .await?;
    println!(
        "GET /checkout -> {} x-request-id={}",
        res.status(),
        res.headers()[context::REQUEST_ID].to_str()?
    );

    // Flush (the guard would also do it when dropped) and show what arrived.
    let telemetry = guard.telemetry().clone();
    tokio::task::spawn_blocking(move || telemetry.flush()).await??;
    for line in lines.lock().unwrap().iter() {
        println!("received {line}");
    }
    tokio::task::spawn_blocking(move || drop(guard)).await?;
    Ok(())
}
