//! A hyper-util client as the inner service of tower-shield's client stack.
//!
//! ```text
//! cargo run --example hyper_client
//! ```
//!
//! Starts a small upstream on 127.0.0.1, then calls it through the stack:
//! a plain GET, a POST with a body, and a call that hits the timeout.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use std::time::Duration;
use tower::{ServiceBuilder, ServiceExt};
use tower_shield::{stack::ClientStack, BoxError, ServiceBuilderExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    use axum::routing::{get, post};
    let upstream = axum::Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route(
            "/upper",
            post(|body: String| async move { body.to_uppercase() }),
        )
        .route("/stuck", get(std::future::pending::<&'static str>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, upstream).await });

    // The hyper-util client is the innermost service; the stack wraps it.
    let hyper = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let client = ServiceBuilder::new()
        .client_stack(ClientStack::new().timeout(Duration::from_millis(300)))
        .service(hyper);

    let res = client
        .clone()
        .oneshot(Request::get(format!("http://{addr}/hello")).body(Full::default())?)
        .await?;
    println!(
        "GET /hello -> {} {:?}",
        res.status(),
        res.into_body().collect().await?.to_bytes()
    );

    let req =
        Request::post(format!("http://{addr}/upper")).body(Full::new(Bytes::from("shout")))?;
    let res = client.clone().oneshot(req).await?;
    println!(
        "POST /upper -> {} {:?}",
        res.status(),
        res.into_body().collect().await?.to_bytes()
    );

    let req = Request::get(format!("http://{addr}/stuck")).body(Full::default())?;
    match client.oneshot(req).await {
        Ok(res) => println!("GET /stuck -> unexpected {}", res.status()),
        Err(err) => println!(
            "GET /stuck -> error: {err} (timeout: {})",
            err.is::<tower::timeout::error::Elapsed>()
        ),
    }
    Ok(())
}
