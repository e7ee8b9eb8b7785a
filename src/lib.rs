//! Composable [tower] layers that make HTTP services and their clients
//! resilient and observable.
//!
//! Every layer here is a `tower::Layer` for `async fn(Request) ->
//! Result<Response, Error>` services: it wraps an axum router on the way in
//! and a hyper-util or reqwest client on the way out, and stacks with the
//! rest of the tower ecosystem through [`tower::ServiceBuilder`].
//!
//! # The order of the layers
//!
//! On the way **in** (a server), outermost first: **context** (every
//! request gets its trace, IDs and span, so even an error answer carries
//! them), **error responses** (every failure below becomes a 5xx with
//! `Retry-After` when it says when), **auth** (a missing or bad service
//! credential is answered 401 without reaching anything below), **rate
//! limit** (per verified caller: 429 with `Retry-After`), **cache**,
//! **circuit breaker** (sheds load with 503 while the handler is failing),
//! **timeout** (504), then the router. [`ServerStack`](stack::ServerStack)
//! is exactly that.
//!
//! On the way **out** (a client), outermost first: **retry** (each retry
//! goes through everything below it), **context** (each attempt is a client
//! span of its own, with its own `traceparent`), **credentials** (a token
//! attached to each attempt, renewed and sent once more on a 401),
//! **circuit breaker** (every
//! attempt counts; an open breaker fails a retry fast), **timeout** (per
//! attempt, so a hung attempt reaches the breaker as a failure), then the
//! client. [`ClientStack`](stack::ClientStack) is the part below the retry
//! layer, which stays outside because it changes the body type the client
//! sees (to [`body::ReplayBody`]).
//!
//! # A server: an axum router with every layer on the way in
//!
//! ```
//! use axum::{routing::get, Router};
//! use std::time::Duration;
//! use tower_shield::{breaker, context, stack::ServerStack};
//!
//! # fn main() -> Result<(), tower_shield::BoxError> {
//! let stack = ServerStack::new()
//!     .context(context::Config::new().service("orders", "1.0.0"))
//!     .circuit_breaker(breaker::CircuitBreakerLayer::new(
//!         breaker::Config::default().failure_rate(50.0).window_calls(100),
//!     )?)
//!     .timeout(Duration::from_secs(2));
//! let app: Router = Router::new()
//!     .route("/orders", get(|| async { "[]" }))
//!     // The stack never fails: its errors are responses already.
//!     .layer(stack);
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! # A client: hyper-util with every layer on the way out
//!
//! ```
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_shield::{body::ReplayBody, breaker, context, retry, stack::ClientStack, ServiceBuilderExt};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), tower_shield::BoxError> {
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! # let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
//! # tokio::spawn(async move { axum::serve(listener, app).await });
//! let stack = ClientStack::new()
//!     .context(context::Config::new().service("checkout", "1.0.0"))
//!     .circuit_breaker(breaker::CircuitBreakerLayer::new(breaker::Config::default())?.by_authority())
//!     .timeout(Duration::from_secs(2));
//! let client = ServiceBuilder::new()
//!     .retries(retry::Config::default().max_attempts(3))?
//!     .client_stack(stack)
//!     .service(Client::builder(TokioExecutor::new()).build_http::<ReplayBody<Full<Bytes>>>());
//!
//! let req = Request::get(format!("http://{addr}/")).body(Full::new(Bytes::new()))?;
//! let res = client.oneshot(req).await?;
//! assert_eq!(res.into_body().collect().await?.to_bytes(), "hi");
//! # Ok(())
//! # }
//! ```
//!
//! # A client: reqwest with every layer on the way out
//!
//! With the `reqwest` feature, `reqwest::ReqwestService`
//! makes a `reqwest::Client` the inner service of the same stack:
//!
//! ```
//! # #[cfg(feature = "reqwest")]
//! # #[tokio::main]
//! # async fn main() -> Result<(), tower_shield::BoxError> {
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::Full;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_shield::{breaker, context, reqwest::ReqwestService, retry, stack::ClientStack, ServiceBuilderExt};
//!
//! # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! # let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
//! # tokio::spawn(async move { axum::serve(listener, app).await });
//! let client = ServiceBuilder::new()
//!     .retries(retry::Config::default())?
//!     .client_stack(
//!         ClientStack::new()
//!             .context(context::Config::new().service("checkout", "1.0.0"))
//!             .circuit_breaker(breaker::CircuitBreakerLayer::new(breaker::Config::default())?.by_authority())
//!             .timeout(Duration::from_secs(2)),
//!     )
//!     .service(ReqwestService::new(reqwest::Client::new()));
//! let req = Request::get(format!("http://{addr}/")).body(Full::new(Bytes::new()))?;
//! let res = client.oneshot(req).await?;
//! assert_eq!(res.status(), 200);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "reqwest"))]
//! # fn main() {}
//! ```
//!
//! # Modules
//!
//! The layers are siblings that never import each other. They stand on the
//! shared vocabulary ([`classify`], [`error`], [`body`]) and publish their
//! counters to [`telemetry`]; only [`stack`], `config`, the
//! [`ServiceBuilderExt`] methods and the sidecar program know every layer.
//!
//! | module | what it does | feature |
//! |---|---|---|
//! | [`classify`] | the one place that decides if a call succeeded, and the one idempotency rule | always |
//! | [`error`] | the shared error vocabulary ([`error::Fault`]) and errors to HTTP responses | always |
//! | [`body`] | bounded buffering so bodies can be replayed or cached | always |
//! | [`telemetry`] | the registry layers publish their counters to; OTLP export (`otlp`) | always |
//! | `breaker` | circuit breakers, single or per key | `breaker` (default) |
//! | `retry` | retries with backoff, jitter, a budget and body replay | `retry` (default) |
//! | `context` | W3C trace context, request and correlation IDs, spans | `context` (default) |
//! | `auth` | service-to-service auth: verify static tokens and JWTs on a server, attach tokens on a client | `auth` |
//! | `limit` | per-service rate limits (GCRA in memory, or in Redis for a fleet) | `limit` |
//! | [`proxy`] | reverse-proxy request/response rewriting (the sidecar's core) | always |
//! | [`stack`] | ready-made [`ClientStack`](stack::ClientStack) and [`ServerStack`](stack::ServerStack) | always |
//! | `config` | serde/TOML configuration for the stacks and the sidecar | `config` |
//! | `reqwest` | a `reqwest::Client` as the inner service of a stack | `reqwest` |
//!
//! # Feature flags
//!
//! - `breaker`, `retry`, `context` (default): the layers.
//! - `config`: `config::Config`, read from TOML, `from_config` on the stacks,
//!   and serde for each layer's own `Config`.
//! - `otlp`: `telemetry::otlp`, OpenTelemetry export over OTLP.
//! - `reqwest`: `reqwest::ReqwestService`.
//! - `sidecar`: the `tower-shield-sidecar` program.
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

#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub mod auth;
pub mod body;
#[cfg(feature = "breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
pub mod breaker;
mod builder;
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub mod cache;
pub mod classify;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub mod config;
#[cfg(feature = "context")]
#[cfg_attr(docsrs, doc(cfg(feature = "context")))]
pub mod context;
pub mod error;
#[cfg(feature = "limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "limit")))]
pub mod limit;
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

/// The README's examples, compiled as doc tests.
#[cfg(all(doctest, feature = "full"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
pub use error::BoxError;
