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
//! another; the set of keys is bounded and the least recently used keys are
//! evicted.
//!
//! Rejections are fast: the open path reads the state and the clock and
//! allocates only the error. On the server side,
//! [`crate::error::error_response`] turns [`Open`] into `503 Service
//! Unavailable` with `Retry-After`.
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
mod probes;
mod state;
mod window;

pub use self::{
    config::{Config, Detection, InvalidConfig, Window},
    error::Open,
    state::{Breaker, Metrics, State},
};

use self::state::Permit;
use crate::{
    classify::{Classify, ServerErrorsAsFailures},
    BoxError,
};
use http::{header, Request, Response};
use pin_project_lite::pin_project;
use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{ready, Context, Poll},
};
use tower_layer::Layer;
use tower_service::Service;

/// Which breaker a request belongs to.
pub trait MakeKey<B> {
    /// The key, or `None` for the default breaker.
    fn make_key(&self, req: &Request<B>) -> Option<String>;

    /// Writes the key into `key` (empty on entry) and returns `true`, or
    /// returns `false` for the default breaker. The layer calls this on
    /// every request, with a buffer it reuses; the default implementation
    /// calls [`make_key`](Self::make_key). Implement it too to make no
    /// allocation per request, as [`Authority`] and [`KeyBy`] do.
    fn write_key(&self, req: &Request<B>, key: &mut String) -> bool {
        match self.make_key(req) {
            Some(made) => {
                *key = made;
                true
            }
            None => false,
        }
    }

    /// Whether every request goes to the default breaker, whatever it is:
    /// the layer then skips making a key at all. `false` unless overridden.
    fn is_single(&self) -> bool {
        false
    }
}

/// One breaker for every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl<B> MakeKey<B> for Single {
    fn make_key(&self, _: &Request<B>) -> Option<String> {
        None
    }

    fn write_key(&self, _: &Request<B>, _: &mut String) -> bool {
        false
    }

    fn is_single(&self) -> bool {
        true
    }
}

/// One breaker per upstream: scheme, host and port of the request's URI
/// (or its `Host` header for an origin-form URI).
#[derive(Debug, Clone, Copy, Default)]
pub struct Authority;

impl<B> MakeKey<B> for Authority {
    fn make_key(&self, req: &Request<B>) -> Option<String> {
        let mut key = String::new();
        self.write_key(req, &mut key).then_some(key)
    }

    fn write_key(&self, req: &Request<B>, key: &mut String) -> bool {
        let uri = req.uri();
        match uri.authority() {
            Some(authority) => {
                let scheme = uri.scheme_str().unwrap_or("http");
                let port = authority
                    .port_u16()
                    .unwrap_or(if scheme == "https" { 443 } else { 80 });
                // `scheme://host:port`, pushed piece by piece: `format!`'s
                // machinery costs more than the whole lookup.
                key.push_str(scheme);
                key.push_str("://");
                key.push_str(authority.host());
                key.push(':');
                push_u16(key, port);
                true
            }
            None => match req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
            {
                Some(host) => {
                    key.extend(host.chars().map(|c| c.to_ascii_lowercase()));
                    true
                }
                None => false,
            },
        }
    }
}

/// Appends `n` in decimal.
fn push_u16(out: &mut String, n: u16) {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

/// A key choice made at run time, as the stacks' configuration does:
/// `key = "none" | "authority" | "route"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeyBy {
    /// One breaker for every request.
    #[default]
    None,
    /// One breaker per upstream, as [`Authority`].
    Authority,
    /// One breaker per request path (the route, for a server or a sidecar
    /// in front of one service).
    Route,
}

impl<B> MakeKey<B> for KeyBy {
    fn make_key(&self, req: &Request<B>) -> Option<String> {
        let mut key = String::new();
        self.write_key(req, &mut key).then_some(key)
    }

    fn write_key(&self, req: &Request<B>, key: &mut String) -> bool {
        match self {
            KeyBy::None => false,
            KeyBy::Authority => Authority.write_key(req, key),
            KeyBy::Route => {
                key.push_str(req.uri().path());
                true
            }
        }
    }

    fn is_single(&self) -> bool {
        matches!(self, KeyBy::None)
    }
}

impl<B, F> MakeKey<B> for F
where
    F: Fn(&Request<B>) -> Option<String>,
{
    fn make_key(&self, req: &Request<B>) -> Option<String> {
        self(req)
    }
}

/// The breakers of one layer: for reading their state and controlling them.
#[derive(Clone)]
pub struct Breakers {
    inner: Arc<Registry>,
}

struct Registry {
    config: Config,
    default: Arc<Breaker>,
    keyed: RwLock<HashMap<String, Arc<Breaker>>>,
    max_keys: usize,
}

impl fmt::Debug for Breakers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breakers")
            .field("default", &self.inner.default.state())
            .field("keys", &self.keys())
            .finish()
    }
}

impl Breakers {
    /// The breaker of requests without a key (every request, for a
    /// single-breaker layer).
    pub fn default_breaker(&self) -> Arc<Breaker> {
        self.inner.default.clone()
    }

    /// The breaker of `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<Arc<Breaker>> {
        self.inner
            .keyed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// The keys that have a breaker now.
    pub fn keys(&self) -> Vec<String> {
        self.inner
            .keyed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Every breaker with its name, the default one first.
    pub fn all(&self) -> Vec<Arc<Breaker>> {
        let keyed = self.inner.keyed.read().unwrap_or_else(|p| p.into_inner());
        std::iter::once(self.inner.default.clone())
            .chain(keyed.values().cloned())
            .collect()
    }

    /// The breakers that are not closed, for a health report.
    pub fn not_closed(&self) -> Vec<(String, State)> {
        self.all()
            .into_iter()
            .map(|b| (b.name().to_owned(), b.state()))
            .filter(|(_, s)| *s != State::Closed)
            .collect()
    }

    fn for_key(&self, key: Option<&str>) -> Arc<Breaker> {
        let Some(key) = key else {
            return self.inner.default.clone();
        };
        if let Some(b) = self
            .inner
            .keyed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return b.clone();
        }
        let mut keyed = self.inner.keyed.write().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = keyed.get(key) {
            return b.clone();
        }
        if keyed.len() >= self.inner.max_keys {
            // Evict a closed breaker nobody else holds; if every breaker is
            // busy or open, the new key shares the default breaker instead
            // of growing the set.
            let idle = keyed
                .iter()
                .find(|(_, b)| Arc::strong_count(b) == 1 && b.state() == State::Closed)
                .map(|(k, _)| k.clone());
            match idle {
                Some(k) => {
                    keyed.remove(&k);
                }
                None => return self.inner.default.clone(),
            }
        }
        let breaker = Arc::new(Breaker::new(self.inner.config.clone(), key.to_owned()));
        keyed.insert(key.to_owned(), breaker.clone());
        breaker
    }
}

/// Applies [`CircuitBreaker`]. Every service built by one layer, and every
/// clone of those, shares the layer's breakers: cloning never resets them.
#[derive(Clone)]
pub struct CircuitBreakerLayer<K = Single, C = ServerErrorsAsFailures> {
    breakers: Breakers,
    make_key: K,
    classifier: C,
}

impl<K: fmt::Debug, C: fmt::Debug> fmt::Debug for CircuitBreakerLayer<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breakers", &self.breakers)
            .field("make_key", &self.make_key)
            .field("classifier", &self.classifier)
            .finish()
    }
}

impl CircuitBreakerLayer {
    /// One breaker for every request, with the HTTP default classifier.
    pub fn new(config: Config) -> Result<Self, InvalidConfig> {
        config.validate()?;
        let default = Arc::new(Breaker::new(config.clone(), "default".to_owned()));
        Ok(Self {
            breakers: Breakers {
                inner: Arc::new(Registry {
                    config,
                    default,
                    keyed: RwLock::new(HashMap::new()),
                    max_keys: 1024,
                }),
            },
            make_key: Single,
            classifier: ServerErrorsAsFailures::new(),
        })
    }
}

impl<K, C> CircuitBreakerLayer<K, C> {
    /// The layer's breakers, to read and control.
    pub fn breakers(&self) -> Breakers {
        self.breakers.clone()
    }

    /// One breaker per upstream authority (scheme, host, port).
    pub fn by_authority(self) -> CircuitBreakerLayer<Authority, C> {
        self.keyed_by(Authority)
    }

    /// One breaker per key that `make_key` gives (a route, a tenant...).
    pub fn keyed_by<K2>(self, make_key: K2) -> CircuitBreakerLayer<K2, C> {
        CircuitBreakerLayer {
            breakers: self.breakers,
            make_key,
            classifier: self.classifier,
        }
    }

    /// At most this many keyed breakers (default 1024); a new key evicts an
    /// idle closed one, or shares the default breaker when none is idle.
    pub fn max_keys(self, max: usize) -> Self {
        let registry = &self.breakers.inner;
        let inner = Arc::new(Registry {
            config: registry.config.clone(),
            default: registry.default.clone(),
            keyed: RwLock::new(HashMap::new()),
            max_keys: max.max(1),
        });
        Self {
            breakers: Breakers { inner },
            ..self
        }
    }

    /// Decides failures with `classifier` instead of the HTTP default.
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<K, C2> {
        CircuitBreakerLayer {
            breakers: self.breakers,
            make_key: self.make_key,
            classifier,
        }
    }
}

impl<S, K: Clone, C: Clone> Layer<S> for CircuitBreakerLayer<K, C> {
    type Service = CircuitBreaker<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            breakers: self.breakers.clone(),
            make_key: self.make_key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// Rejects calls with [`Open`] while its breaker is open.
#[derive(Clone)]
pub struct CircuitBreaker<S, K = Single, C = ServerErrorsAsFailures> {
    inner: S,
    breakers: Breakers,
    make_key: K,
    classifier: C,
}

impl<S: fmt::Debug, K, C> fmt::Debug for CircuitBreaker<S, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breakers", &self.breakers)
            .finish_non_exhaustive()
    }
}

impl<S, K, C> CircuitBreaker<S, K, C> {
    define_inner_service_accessors!();

    /// The breakers, to read and control.
    pub fn breakers(&self) -> &Breakers {
        &self.breakers
    }
}

impl<S, K, C, ReqBody, ResBody> Service<Request<ReqBody>> for CircuitBreaker<S, K, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    K: MakeKey<ReqBody>,
    C: Classify<Response<ResBody>, S::Error> + Clone,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Never park callers while open: axum drives readiness inside
        // `call`, so an open breaker answers from `call` instead.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The default breaker is borrowed, and its `Arc` cloned only for a
        // call it lets through: a rejection touches no reference count of it.
        let default = || {
            let default = &self.breakers.inner.default;
            default
                .try_acquire()
                .map(|permit| (default.clone(), permit))
        };
        let acquired = if self.make_key.is_single() {
            default()
        } else {
            with_key_buffer(|key| {
                if !self.make_key.write_key(&req, key) {
                    return default();
                }
                let breaker = self.breakers.for_key(Some(key.as_str()));
                breaker.try_acquire().map(|permit| (breaker, permit))
            })
        };
        match acquired {
            Ok((breaker, permit)) => ResponseFuture {
                kind: Kind::Called {
                    future: self.inner.call(req),
                    guard: Some(Guard { breaker, permit }),
                    classifier: self.classifier.clone(),
                },
            },
            Err(open) => ResponseFuture {
                kind: Kind::Rejected { error: Some(open) },
            },
        }
    }
}

thread_local! {
    /// The buffer each thread writes request keys into, so that looking up
    /// a keyed breaker allocates nothing (only a new key does).
    static KEY: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
}

/// Runs `f` with this thread's key buffer, emptied. Taken out of the
/// thread-local for the call, so a `MakeKey` that calls into another
/// breaker gets a buffer of its own.
fn with_key_buffer<R>(f: impl FnOnce(&mut String) -> R) -> R {
    let mut key = KEY.try_with(std::cell::Cell::take).unwrap_or_default();
    key.clear();
    let out = f(&mut key);
    // Keys are short; a buffer grown by an odd huge one is not kept.
    if key.capacity() <= 1024 {
        let _ = KEY.try_with(|cell| cell.set(key));
    }
    out
}

/// Frees a probe slot if the call is dropped before it finishes.
#[derive(Debug)]
struct Guard {
    breaker: Arc<Breaker>,
    permit: Permit,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.breaker.cancel(&mut self.permit);
    }
}

pin_project! {
    /// Response future of [`CircuitBreaker`].
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, C> {
        Called { #[pin] future: F, guard: Option<Guard>, classifier: C },
        Rejected { error: Option<Open> },
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, C, B, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    C: Classify<Response<B>, E>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                guard,
                classifier,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(mut guard) = guard.take() {
                    let class = classifier.classify(&result);
                    if let Ok(res) = &result {
                        if let Some(delay) = retry_after(res) {
                            guard.breaker.open_for_retry_after(delay);
                        }
                    }
                    let permit = std::mem::replace(&mut guard.permit, Permit::finished());
                    guard.breaker.record(permit, class);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("future polled after completion")
                .into())),
        }
    }
}

pub use crate::classify::retry_after;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn only_single_and_key_none_skip_the_key() {
        assert!(MakeKey::<()>::is_single(&Single));
        assert!(MakeKey::<()>::is_single(&KeyBy::None));
        assert!(!MakeKey::<()>::is_single(&KeyBy::Authority));
        assert!(!MakeKey::<()>::is_single(&KeyBy::Route));
        assert!(!MakeKey::<()>::is_single(&Authority));
        let closure = |_: &Request<()>| None::<String>;
        assert!(!MakeKey::<()>::is_single(&closure));
    }

    #[test]
    fn authority_keys() {
        for (uri, key) in [
            ("http://127.0.0.1/", Some("http://127.0.0.1:80")),
            ("https://[::1]/x?y", Some("https://[::1]:443")),
            ("http://localhost:8080/a", Some("http://localhost:8080")),
            ("/origin-form", None),
        ] {
            assert_eq!(Authority.make_key(&get(uri)).as_deref(), key, "{uri}");
        }
        let mut req = get("/origin-form");
        req.headers_mut()
            .insert(header::HOST, "Example.COM:81".parse().unwrap());
        assert_eq!(Authority.make_key(&req).as_deref(), Some("example.com:81"));
        assert_eq!(
            KeyBy::Route.make_key(&get("http://h/a/b?q")).as_deref(),
            Some("/a/b")
        );
        assert_eq!(KeyBy::None.make_key(&get("http://h/")), None);
        assert_eq!(Single.make_key(&get("http://h/")), None);
    }

    proptest! {
        /// The allocation-free key is the `format!` one, for any host and
        /// port, and a closure's key goes through `write_key`'s default.
        #[test]
        fn written_keys_match_formatted_ones(
            host in "[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?",
            port in any::<u16>(),
            https in any::<bool>(),
        ) {
            let scheme = if https { "https" } else { "http" };
            let req = get(&format!("{scheme}://{host}:{port}/p"));
            let mut key = String::from("left over");
            key.clear();
            prop_assert!(Authority.write_key(&req, &mut key));
            prop_assert_eq!(&key, &format!("{scheme}://{host}:{port}"));
            let closure = |r: &Request<()>| Some(r.uri().path().to_owned());
            let mut key = String::new();
            prop_assert!(closure.write_key(&req, &mut key));
            prop_assert_eq!(key, "/p");
        }
    }
}
