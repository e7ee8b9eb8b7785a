//! An axum router wrapped with tower-shield's server layers.
//!
//! ```text
//! cargo run --example axum_server              # serves on 127.0.0.1:3000 until Ctrl-C
//! cargo run --example axum_server -- --demo    # serves on a free port, calls itself, exits
//! ```
//!
//! Two ways to wrap a router are shown: the ready-made [`ServerStack`],
//! whose errors are already responses, and a hand-built `ServiceBuilder`
//! whose errors are mapped by `HandleErrorLayer` with
//! [`tower_shield::error::handle_error`].

use axum::{error_handling::HandleErrorLayer, routing::get, Router};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::time::Duration;
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
    let server = tokio::spawn(async move { axum::serve(listener, app()).await });
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
