//! Composable [tower] layers that make HTTP services and their clients
//! resilient and observable.
//!
//! Every layer here is a `tower::Layer` for `async fn(Request) ->
//! Result<Response, Error>` services: it wraps an axum router on the way in
//! and a hyper-util or reqwest client on the way out, and stacks with the
//! rest of the tower ecosystem through [`tower::ServiceBuilder`].
//!
//! # Overview
//!
//! | module | what it does | feature |
//! |---|---|---|
//! | [`classify`] | the one place that decides if a call succeeded | always |
//! | [`body`] | bounded buffering so bodies can be replayed or cached | always |
//! | [`error`] | typed errors to HTTP responses (`HandleErrorLayer`) | always |
//! | [`proxy`] | reverse-proxy request/response rewriting (the sidecar's core) | always |
//! | `breaker` | circuit breakers, single or per upstream | `breaker` (default) |
//! | `retry` | retries with backoff, jitter, a budget and body replay | `retry` (default) |
//! | `context` | W3C trace context, request and correlation IDs, spans, OTLP | `context` (default), `otlp` |
//! | [`stack`] | ready-made [`ClientStack`](stack::ClientStack) and [`ServerStack`](stack::ServerStack) | always |
//! | `config` | serde/TOML configuration for the stacks and the sidecar | `config` (default) |
//! | `reqwest` | a `reqwest::Client` as the inner service of a stack | `reqwest` |
//!
//! Caching and service auth are being added module by module; see the
//! README for their status.
//!
//! # Server example
//!
//! An axum router behind the server stack. The stack's service never fails
//! (errors become 5xx responses), so it goes straight into `Router::layer`:
//!
//! ```
//! use axum::{routing::get, Router};
//! use std::time::Duration;
//! use tower_shield::stack::ServerStack;
//!
//! let app: Router = Router::new()
//!     .route("/hello", get(|| async { "hello" }))
//!     .layer(ServerStack::new().timeout(Duration::from_secs(2)));
//! # let _ = app;
//! ```
//!
//! # Client example
//!
//! A hyper-util client behind the client stack, talking to a server on
//! 127.0.0.1:
//!
//! ```
//! use http::Request;
//! use http_body_util::{BodyExt, Empty};
//! use bytes::Bytes;
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_shield::{stack::ClientStack, ServiceBuilderExt};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), tower_shield::BoxError> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! # let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
//! # tokio::spawn(async move { axum::serve(listener, app).await });
//! let hyper_client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
//! let client = ServiceBuilder::new()
//!     .client_stack(ClientStack::new().timeout(Duration::from_secs(2)))
//!     .service(hyper_client);
//!
//! let req = Request::get(format!("http://{addr}/")).body(Empty::new())?;
//! let res = client.oneshot(req).await?;
//! assert_eq!(res.into_body().collect().await?.to_bytes(), "hi");
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! - `config` (default): [`config::Config`], read from TOML, and
//!   `from_config` on the stacks.
//! - `breaker` (default): `breaker::CircuitBreakerLayer`.
//! - `retry` (default): `retry::RetryLayer`.
//! - `context` (default): `context::ServerContextLayer` and
//!   `context::ClientContextLayer` (W3C trace context, request and
//!   correlation IDs, baggage, spans).
//! - `otlp`: `context::otlp`, OpenTelemetry export over OTLP.
//! - `reqwest`: `reqwest::ReqwestService`.
//! - `full`: all of the above.
//!
//! [tower]: https://docs.rs/tower

#![warn(
    missing_debug_implementations,
    missing_docs,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[macro_use]
mod macros;

pub mod body;
#[cfg(feature = "breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
pub mod breaker;
mod builder;
pub mod classify;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub mod config;
#[cfg(feature = "context")]
#[cfg_attr(docsrs, doc(cfg(feature = "context")))]
pub mod context;
pub mod error;
pub mod proxy;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub mod retry;
pub mod stack;
#[cfg(any(feature = "breaker", feature = "retry"))]
mod striped;
pub mod telemetry;

pub use builder::ServiceBuilderExt;
pub use error::BoxError;
