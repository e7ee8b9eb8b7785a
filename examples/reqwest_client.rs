//! A `reqwest::Client` as the inner service of tower-shield's client stack
//! (needs the `reqwest` feature).
//!
//! ```text
//! cargo run --example reqwest_client --features reqwest
//! ```
//!
//! Starts a small upstream on 127.0.0.1 and streams a 1 MiB request body to
//! it and a 1 MiB response body back, through the stack, without buffering
//! either.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::time::Duration;
use tower::{ServiceBuilder, ServiceExt};
use tower_shield::{reqwest::ReqwestService, stack::ClientStack, BoxError, ServiceBuilderExt};

const MIB: usize = 1024 * 1024;

fn chunks() -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>>> {
    StreamBody::new(futures_util::stream::iter(
        (0..16).map(|i| Ok(Frame::data(Bytes::from(vec![b'a' + i as u8; MIB / 16])))),
    ))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    use axum::{body::Body, routing::get, routing::post};
    let upstream = axum::Router::new()
        .route(
            "/count",
            post(|body: Body| async move {
                let mut body = body.into_data_stream();
                let (mut frames, mut bytes) = (0, 0);
                while let Some(chunk) = futures_util::StreamExt::next(&mut body).await {
                    frames += 1;
                    bytes += chunk.map_err(|e| e.to_string())?.len();
                }
                Ok::<_, String>(format!("{bytes} bytes in {frames} frames"))
            }),
        )
        .route("/download", get(|| async { Body::new(chunks()) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, upstream).await });

    let client = ServiceBuilder::new()
        .client_stack(ClientStack::new().timeout(Duration::from_secs(5)))
        .service(ReqwestService::new(reqwest::Client::new()));

    let req = Request::post(format!("http://{addr}/count")).body(chunks())?;
    let res = client.clone().oneshot(req).await?;
    println!(
        "POST /count (1 MiB streamed) -> {} {:?}",
        res.status(),
        res.into_body().collect().await?.to_bytes()
    );

    let req = Request::get(format!("http://{addr}/download"))
        .body(http_body_util::Empty::<Bytes>::new())?;
    let res = client.oneshot(req).await?;
    let status = res.status();
    let mut body = res.into_body();
    let (mut frames, mut bytes) = (0, 0);
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            frames += 1;
            bytes += data.len();
        }
    }
    println!("GET /download -> {status}, {bytes} bytes streamed in {frames} frames");
    Ok(())
}
