//! The reqwest adapter streams both ways through a client stack.
#![cfg(feature = "reqwest")]

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use std::time::Duration;
use support::*;
use tower::{ServiceBuilder, ServiceExt};
use tower_shield::{
    classify::{Class, Classify, ServerErrorsAsFailures},
    reqwest::ReqwestService,
    stack::ClientStack,
    ServiceBuilderExt,
};

#[tokio::test]
async fn streams_request_and_response_bodies() {
    const SIZE: u64 = 3 * 1024 * 1024 + 17;
    let upstream = serve(upstream()).await;
    let client = ServiceBuilder::new()
        .client_stack(ClientStack::new())
        .service(ReqwestService::new(reqwest::Client::new()));

    // Unknown length: sent chunked.
    let req = Request::post(format!("http://{upstream}/sink"))
        .body(pattern_stream(SIZE, 100_000))
        .unwrap();
    let res = client.clone().oneshot(req).await.unwrap();
    let sunk: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(sunk["len"], SIZE);
    assert_eq!(sunk["sha256"], pattern_sha256(SIZE));

    // Known length: sent with Content-Length, byte for byte.
    let req = Request::put(format!("http://{upstream}/echo"))
        .body(Full::new(Bytes::from_static(b"fixed")))
        .unwrap();
    let res = client.clone().oneshot(req).await.unwrap();
    let echo: serde_json::Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(echo["body_sha256"], sha256_hex(b"fixed"));
    let length = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p[0] == "content-length");
    assert_eq!(length.unwrap()[1], hex(b"5"), "{echo}");

    let req = Request::get(format!("http://{upstream}/source/{SIZE}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = client.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len() as u64, SIZE);
    assert_eq!(sha256_hex(&body), pattern_sha256(SIZE));
}

#[tokio::test]
async fn errors_are_classified_and_bad_requests_rejected() {
    let client = ServiceBuilder::new()
        .client_stack(ClientStack::new().timeout(Duration::from_secs(5)))
        .service(ReqwestService::new(reqwest::Client::new()));
    let req = Request::get(format!("http://{}/", closed_port()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let result = client.clone().oneshot(req).await;
    assert_eq!(
        ServerErrorsAsFailures::new().classify(&result),
        Class::Retryable
    );

    // A relative URI cannot be sent: a clear error, not a panic.
    let req = Request::get("/relative")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let err = client.oneshot(req).await.unwrap_err();
    assert!(err.is::<reqwest::Error>(), "{err}");

    // The bare adapter's own error, unboxed, is classified the same way.
    let result = ReqwestService::new(reqwest::Client::new())
        .oneshot(
            Request::get(format!("http://{}/", closed_port()))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await;
    assert!(result.is_err());
    assert_eq!(
        ServerErrorsAsFailures::new().classify(&result),
        Class::Retryable
    );
}
