//! Log events inside a handler carry the request's IDs. In a test binary of
//! its own: `tracing` caches per-callsite interest process-wide, so a
//! scoped subscriber must not race tests that run without one.
#![cfg(feature = "context")]

mod support;

use axum::{routing::get, Router};
use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use std::sync::{Arc, Mutex};
use tower_shield::context::{self, Config, ServerContextLayer};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn log_events_in_handlers_carry_the_ids() {
    let out = Captured::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let a = support::serve(
        Router::new()
            .route(
                "/",
                get(|| async {
                    tracing::info!("handling a hop");
                    context::current()
                        .unwrap()
                        .request_id()
                        .to_str()
                        .unwrap()
                        .to_owned()
                }),
            )
            .layer(ServerContextLayer::new(Config::new())),
    )
    .await;
    let req = Request::get(format!("http://{a}/"))
        .header("traceparent", TP)
        .header("x-correlation-id", "corr-9")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = support::hyper_client().request(req).await.unwrap();
    let rid = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let logs = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("handling a hop"))
        .unwrap_or_else(|| panic!("no handler event in:\n{logs}"));
    assert!(line.contains(&format!("trace_id={TRACE}")), "{line}");
    assert!(line.contains("correlation_id=corr-9"), "{line}");
    assert!(line.contains(&format!("request_id={}", rid)), "{line}");
    assert!(line.contains("http.request.method=GET"), "{line}");
}
