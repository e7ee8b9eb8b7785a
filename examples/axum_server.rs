//! An axum router wrapped with tower-shield's server layers.
//!
//! ```text
//! cargo run --example axum_server              # serves on 127.0.0.1:3000 until Ctrl-C
//! cargo run --example axum_server -- --demo    # serves on a free port, calls itself, exits
//! ```
//!
//! It is served on hyper-util's server with a header read timeout and a
//! bound on open connections (see `serve`). Two ways to wrap a router are
//! shown: the ready-made [`ServerStack`],
//! whose errors are already responses, and a hand-built `ServiceBuilder`
//! whose errors are mapped by `HandleErrorLayer` with
//! [`tower_shield::error::handle_error`].

use axum::{error_handling::HandleErrorLayer, routing::get, Router};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use std::{sync::Arc, time::Duration};
use tower::ServiceBuilder;
use tower_shield::{error::handle_error, stack::ServerStack, BoxError};

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(2)).await;
    "too late"
}

fn app() -> Router {
    // Routes under /api get the ready-made server stack.
    let api = Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/slow", get(slow))
        .layer(ServerStack::new().timeout(Duration::from_millis(250)));
    // Routes under /admin get a hand-built stack; `HandleErrorLayer` turns
    // the timeout's `BoxError` into a response with the crate's helper.
    let admin = Router::new().route("/slow", get(slow)).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(handle_error))
            .timeout(Duration::from_millis(250)),
    );
    Router::new().nest("/api", api).nest("/admin", admin)
}

/// How long a connection may take to send a request head (and, in hyper
/// 1.x, sit idle between keep-alive requests), and how many may be open at
/// once: the settings the sidecar has as `[sidecar] header_read_timeout`
/// and `max_connections`.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: usize = 512;

/// Serves `app` the way `axum::serve` does, with the connection limits
/// above: hyper gets a timer, so that its header read timeout applies, and
/// a semaphore bounds the open connections (at the limit, new ones wait in
/// the listen backlog).
async fn serve(listener: tokio::net::TcpListener, app: Router) -> Result<(), BoxError> {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = open.clone().acquire_owned().await?;
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            // Its place under MAX_CONNECTIONS, until the connection ends.
            let _permit = permit;
            let mut server = auto::Builder::new(TokioExecutor::new());
            server
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let _ = server.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let demo = std::env::args().any(|a| a == "--demo");
    let bind = if demo {
        "127.0.0.1:0"
    } else {
        "127.0.0.1:3000"
    };
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    println!("axum server on http://{addr}");
    let server = tokio::spawn(serve(listener, app()));
    if !demo {
        server.await??;
        return Ok(());
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for path in ["/api/hello", "/api/slow", "/admin/slow", "/api/missing"] {
        let res = client
            .request(Request::get(format!("http://{addr}{path}")).body(Empty::new())?)
            .await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        println!("GET {path} -> {status} {body:?}");
    }
    Ok(())
}
