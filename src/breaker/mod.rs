//! Fail fast while a dependency is unhealthy: a circuit breaker.
//!
//! A breaker is **closed** while calls succeed. When failures cross a
//! threshold it **opens**: calls are rejected at once with [`Open`], without
//! touching the inner service, for [`Config::open_for`] (optionally growing
//! on repeated trips). Then it is **half-open**: a few probe calls go
//! through; enough successes close it, a failure opens it again. What counts
//! as a failure comes from the shared [`classify`](crate::classify) module:
//! by default 5xx and transport errors, never 4xx.
//!
//! Detection is either a streak of consecutive failures (the default: 5) or
//! a failure rate over a window of the last N calls or the last N seconds,
//! judged once the window holds enough calls; slow calls can open the
//! breaker too. With [`CircuitBreakerLayer::by_authority`] every upstream
//! host gets a breaker of its own, so one failing host never cuts off
//! another; the set of keys is bounded ([`Config::max_keys`]) and idle
//! closed breakers are evicted, the least recently used first.
//!
//! Rejections are fast: the open path reads the state and the clock and
//! allocates only the error. [`Open`] carries a refused
//! [`Fault`](crate::error::Fault), so on the server side
//! [`crate::error::error_response`] answers `503 Service Unavailable` with
//! `Retry-After`, and the retry layer knows when to try again.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response, StatusCode};
//! use std::{convert::Infallible, time::Duration};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_shield::breaker::{CircuitBreakerLayer, Config, Open};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = CircuitBreakerLayer::new(
//!     Config::default().consecutive_failures(2).open_for(Duration::from_secs(10)),
//! )
//! .unwrap();
//! let breaker = layer.breakers().default_breaker();
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|_req: Request<()>| async {
//!     let res = Response::builder().status(StatusCode::BAD_GATEWAY).body(()).unwrap();
//!     Ok::<_, Infallible>(res)
//! }));
//! for _ in 0..2 {
//!     let res = svc.clone().oneshot(Request::new(())).await.unwrap();
//!     assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
//! }
//! // Two failures in a row: the breaker is open and fails fast.
//! let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
//! assert!(err.is::<Open>());
//! assert_eq!(breaker.state(), tower_shield::breaker::State::Open);
//! # }
//! ```

mod config;
mod error;
mod future;
mod key;
mod layer;
mod probes;
mod registry;
mod service;
mod state;
mod window;

pub use self::{
    config::{
        Config, InvalidConfig, Mode, Window, DEFAULT_FAILURE_RATE, DEFAULT_FAILURE_THRESHOLD,
        DEFAULT_MAX_RETRY_AFTER,
    },
    error::Open,
    future::ResponseFuture,
    key::{Authority, KeyBy, MakeKey, Single},
    layer::CircuitBreakerLayer,
    registry::Breakers,
    service::CircuitBreaker,
    state::{Breaker, Metrics, State},
};
