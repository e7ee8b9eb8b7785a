//! A reverse-proxy sidecar built only from tower-shield's layers.
//!
//! ```text
//! tower-shield-sidecar --config sidecar.toml
//! tower-shield-sidecar --listen 127.0.0.1:8080 --upstream http://127.0.0.1:9000
//! ```
//!
//! Flags override the file. It forwards every method, path, query, header
//! and body to the upstream and streams the answer back, drops hop-by-hop
//! headers, adds `Via`, bounds each request with the `[timeout]` (504 on
//! expiry, 502 when the upstream cannot be reached), fails fast with 503 and
//! `Retry-After` while the `[breaker]` (if configured) is open, and serves
//! its own `GET /_shield/health` (`degraded` while a breaker is not closed).
//! With `[context]` it reads and validates the trace context and IDs of
//! every request, adds its own server and client spans, and forwards the
//! context (and, built with `--features otlp` and given `otlp_endpoint`,
//! exports its spans and metrics over OTLP).
//! See README.md for the configuration reference.

mod conn;
mod log;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use std::{
    cell::RefCell,
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    process::ExitCode,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::net::TcpListener;
use tower::{timeout::TimeoutLayer, Service, ServiceBuilder, ServiceExt};
use tower_shield::{
    auth::{AttachLayer, AuthLayer},
    body::{CallerBody, CallerBodyLayer, CallerTimeoutLayer, IdleBody, ReplayBody},
    breaker::Breakers,
    config::{Config, ConfigError},
    context::ServerContextLayer,
    limit::RateLimitLayer,
    proxy::{ClientAddr, ProxyBody, ReverseProxyLayer},
    retry::RetryLayer,
    stack::{ClientStack, ConfiguredClientStack},
    BoxError, ServiceBuilderExt,
};

const USAGE: &str = "\
usage: tower-shield-sidecar [--config FILE] [--listen ADDR] [--upstream URL]

  --config FILE    TOML configuration (see README.md); flags override it
  --listen ADDR    address to serve on (default 127.0.0.1:8080)
  --upstream URL   http:// URL to forward to, with an optional path prefix
  --workers N      serving threads (default: one per CPU)
  --help           this text";

const HEALTH_PATH: &str = "/_shield/health";

#[derive(Debug, Default)]
struct Args {
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    upstream: Option<String>,
    workers: Option<usize>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args::default();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--config" => parsed.config = Some(value()?.into()),
            "--listen" => {
                let text = value()?;
                let addr = text.parse().map_err(|e| {
                    format!("--listen {text:?}: {e} (expected an address like 127.0.0.1:8080)")
                })?;
                parsed.listen = Some(addr);
            }
            "--upstream" => parsed.upstream = Some(value()?),
            "--workers" => {
                let text = value()?;
                let n = text
                    .parse()
                    .map_err(|e| format!("--workers {text:?}: {e}"))?;
                parsed.workers = Some(n);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(parsed))
}

/// Reads the file, applies the flags, and checks the result.
fn load(args: Args) -> Result<Config, ConfigError> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = args.listen {
        config.sidecar.listen = Some(listen);
    }
    if let Some(upstream) = args.upstream {
        config.sidecar.upstream = Some(upstream);
    }
    if let Some(workers) = args.workers {
        config.sidecar.workers = Some(workers);
    }
    config.validate()?;
    if let Some(filter) = &config.sidecar.log {
        log::parse(filter).map_err(|err| ConfigError::field("sidecar.log", err))?;
    }
    match &config.sidecar.upstream {
        None => {
            return Err(ConfigError::field(
                "sidecar.upstream",
                "no upstream: pass --upstream URL or set it in the [sidecar] section",
            ))
        }
        // `config.validate` parsed it; the scheme is case-insensitive.
        Some(upstream)
            if upstream
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| u.scheme().cloned())
                != Some(http::uri::Scheme::HTTP) =>
        {
            return Err(ConfigError::field(
                "sidecar.upstream",
                "the sidecar has no TLS client: give an http:// upstream",
            ))
        }
        Some(_) => {}
    }
    Ok(config)
}

/// Answers `GET /_shield/health` itself and passes everything else on.
#[derive(Clone)]
struct Health<S> {
    inner: S,
    report: Arc<Report>,
}

/// What `/_shield/health` reports: the settings, and the breakers' states.
struct Report {
    upstream: String,
    signature: Option<tower_shield::auth::SignatureLayer>,
    auth: Option<AuthLayer>,
    limit: Option<RateLimitLayer>,
    attach: Option<AttachLayer>,
    cache: Option<tower_shield::cache::CacheLayer<tower_shield::cache::ConfiguredStore>>,
    timeout: tower_shield::config::TimeoutConfig,
    breakers: Option<Breakers>,
    service: Option<String>,
}

impl Report {
    /// `ok`, or `degraded` while any breaker is not closed.
    fn json(&self) -> String {
        let breakers: Vec<serde_json::Value> = self
            .breakers
            .iter()
            .flat_map(|b| b.all())
            .map(|b| {
                let m = b.metrics();
                serde_json::json!({
                    "name": b.name(),
                    "state": format!("{:?}", b.state()).to_lowercase(),
                    "calls": m.calls,
                    "failures": m.failures,
                    "slow_calls": m.slow_calls,
                    "rejections": m.rejections,
                    "opened": m.opened,
                })
            })
            .collect();
        let degraded = breakers.iter().any(|b| b["state"] != "closed");
        serde_json::json!({
            "status": if degraded { "degraded" } else { "ok" },
            "upstream": self.upstream,
            "layers": {
                "timeout": {
                    "request_ms": self.timeout.request.as_millis() as u64,
                    "body_idle_ms": self.timeout.body_idle.as_millis() as u64,
                    "total_ms": self.timeout.total.map(|t| t.as_millis() as u64),
                },
                "breaker": { "enabled": self.breakers.is_some(), "breakers": breakers },
                "context": { "enabled": self.service.is_some(), "service_name": self.service },
                "auth": self.auth.as_ref().map_or_else(
                    || serde_json::json!({ "enabled": false }),
                    |auth| serde_json::json!({
                        "enabled": true,
                        "static_tokens": auth.static_token_set().map(|t| t.len()),
                        "signature_keys": self.signature.as_ref().map(|s| s.verifier().key_count()),
                        "jwt": auth.jwt_verifier().map(|jwt| {
                            let keys = jwt.key_status();
                            serde_json::json!({
                                "keys": keys.keys,
                                "fetched_ago_s": keys.fetched_ago.map(|d| d.as_secs()),
                            })
                        }),
                    }),
                ),
                "upstream_auth": self.attach.as_ref().map_or_else(
                    || serde_json::json!({ "enabled": false }),
                    |attach| serde_json::json!({
                        "enabled": true,
                        "token_requests": attach.credentials().token_requests(),
                    }),
                ),
                "rate_limit": self.limit.as_ref().map_or_else(
                    || serde_json::json!({ "enabled": false }),
                    |limit| {
                        let s = limit.stats();
                        serde_json::json!({
                            "enabled": true,
                            "store": {
                                "kind": format!("{:?}", limit.store_kind()).to_lowercase(),
                                "ok": limit.store_ok(),
                            },
                            "allowed": s.allowed,
                            "denied": s.denied,
                            "store_errors": s.store_errors,
                        })
                    },
                ),
                "cache": self.cache.as_ref().map_or_else(
                    || serde_json::json!({ "enabled": false }),
                    |cache| {
                        let s = cache.stats();
                        serde_json::json!({
                            "enabled": true,
                            "store": { "kind": cache.store().kind(), "ok": cache.store_ok() },
                            "hits": s.hits,
                            "misses": s.misses,
                            "stale": s.stale,
                            "revalidations": s.revalidations,
                            "coalesced": s.coalesced,
                            "evictions": s.evictions,
                            "store_errors": s.store_errors,
                            "bytes": s.bytes,
                            "hit_ratio": s.hit_ratio(),
                        })
                    },
                ),
            },
        })
        .to_string()
    }
}

/// What the sidecar answers itself rather than forward, as RFC 9112 asks of
/// a server: CONNECT (it is not a tunnel), an HTTP/1.1 request without
/// exactly one `Host` (section 3.2), and a transfer coding other than
/// `chunked`, which would otherwise be dropped silently with the
/// hop-by-hop `Transfer-Encoding` (section 6.1).
fn refused<B>(req: &Request<B>) -> Option<(StatusCode, &'static str)> {
    if req.method() == Method::CONNECT {
        return Some((StatusCode::NOT_IMPLEMENTED, "CONNECT is not supported"));
    }
    if req.version() == http::Version::HTTP_11
        && req.headers().get_all(header::HOST).iter().count() != 1
    {
        return Some((
            StatusCode::BAD_REQUEST,
            "an HTTP/1.1 request needs exactly one Host",
        ));
    }
    let codings = req.headers().get_all(header::TRANSFER_ENCODING);
    let unknown = codings.iter().any(|value| {
        value.to_str().map_or(true, |v| {
            v.split(',')
                .map(str::trim)
                .any(|coding| !coding.is_empty() && !coding.eq_ignore_ascii_case("chunked"))
        })
    });
    if unknown {
        return Some((
            StatusCode::NOT_IMPLEMENTED,
            "only the chunked transfer coding is supported",
        ));
    }
    None
}

impl<S> Service<Request<Incoming>> for Health<S>
where
    S: Service<Request<Incoming>, Response = Response<SidecarBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<SidecarBody>;
    type Error = Infallible;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<Self::Response, Infallible>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        if let Some((status, why)) = refused(&req) {
            let res = Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .header(header::CONNECTION, "close")
                .body(SidecarBody::from(format!(
                    "{}: {why}\n",
                    status.canonical_reason().unwrap_or("error")
                )));
            return futures_util::future::Either::Left(std::future::ready(Ok(
                res.expect("valid response")
            )));
        }
        if req.uri().path() != HEALTH_PATH {
            return futures_util::future::Either::Right(self.inner.call(req));
        }
        let res = if req.method() == Method::GET || req.method() == Method::HEAD {
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CACHE_CONTROL, "no-store")
                .body(SidecarBody::from(self.report.json()))
        } else {
            Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header(header::ALLOW, "GET, HEAD")
                .body(SidecarBody::empty())
        };
        futures_util::future::Either::Left(std::future::ready(Ok(res.expect("valid response"))))
    }
}

/// The sidecar's upstream client: HTTP/1.1 keep-alive connections made
/// with hyper's connection API and kept in a pool that belongs to one
/// worker thread.
///
/// hyper-util's pooled client (used by the examples and the benches) works
/// as well; this one exists because a proxy pays the client's costs on every
/// request. It skips the work hyper-util does to share a pool across threads
/// and, above all, its one spawned task per HTTP/1 request that hands the
/// connection back: here the response body hands it back when it ends.
/// benches/wrk_vs_nginx.sh measured the difference (BENCHMARKS.md).
/// What the upstream client sends: the request body as the retry layer
/// hands it down (replayable when it was read ahead, streaming otherwise).
type UpBody = ReplayBody<CallerBody<Incoming>>;

/// What the sidecar answers with: the upstream's body, with a timeout
/// between its frames, or a message of its own.
type SidecarBody = ReplayBody<ProxyBody<IdleBody<PooledBody>>>;

/// The response cache when `[cache]` is configured; otherwise the proxy's
/// answers pass through in the cache's body type.
type MaybeCache = tower::util::Either<
    tower_shield::cache::CacheLayer<tower_shield::cache::ConfiguredStore>,
    tower::layer::util::Stack<
        tower::util::MapResponseLayer<PassThrough>,
        tower::layer::util::Identity,
    >,
>;

type PassThrough = fn(Response<ProxyBody<IdleBody<PooledBody>>>) -> Response<SidecarBody>;

fn maybe_cache(
    cache: &Option<tower_shield::cache::CacheLayer<tower_shield::cache::ConfiguredStore>>,
) -> MaybeCache {
    match cache {
        Some(cache) => tower::util::Either::Left(cache.clone()),
        None => tower::util::Either::Right(
            ServiceBuilder::new()
                .map_response((|res| res.map(ReplayBody::passthrough)) as PassThrough)
                .into_inner(),
        ),
    }
}

#[derive(Clone)]
struct UpstreamClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    /// `host:port` to connect to.
    addr: String,
    /// The `Host` header for the upstream, built once.
    host: HeaderValue,
    connect_timeout: Duration,
    idle: Mutex<VecDeque<SendRequest<UpBody>>>,
}

/// Idle connections kept per worker; more are closed when they come back.
const MAX_IDLE: usize = 512;

impl UpstreamClient {
    fn new(upstream: &http::Uri, connect_timeout: Duration) -> Result<Self, BoxError> {
        let authority = upstream.authority().ok_or("the upstream needs a host")?;
        if upstream.scheme() != Some(&http::uri::Scheme::HTTP) {
            return Err("the sidecar speaks http:// to its upstream".into());
        }
        let port = authority.port_u16().unwrap_or(80);
        Ok(Self {
            inner: Arc::new(ClientInner {
                addr: format!("{}:{port}", authority.host()),
                host: HeaderValue::from_str(authority.as_str())?,
                connect_timeout,
                idle: Mutex::new(VecDeque::new()),
            }),
        })
    }

    /// The most recently used idle connection that is still open, if any:
    /// reusing the warmest connection (as nginx's keepalive cache does)
    /// lets the others time out at the upstream when traffic drops.
    fn take_idle(&self) -> Option<SendRequest<UpBody>> {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop_back() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<UpBody>, BoxError> {
        let connect = tokio::net::TcpStream::connect(self.inner.addr.as_str());
        let stream = tokio::time::timeout(self.inner.connect_timeout, connect)
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    async fn send(self, mut req: Request<UpBody>) -> Result<Response<PooledBody>, BoxError> {
        // The upstream gets origin-form; `ReverseProxy` made the URI absolute.
        let mut origin = http::uri::Parts::default();
        origin.path_and_query = Some(
            req.uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        );
        *req.uri_mut() = http::Uri::from_parts(origin)?;
        // `ReverseProxy` has set it already; a request from elsewhere gets it.
        if !req.headers().contains_key(header::HOST) {
            req.headers_mut()
                .insert(header::HOST, self.inner.host.clone());
        }
        loop {
            let (mut conn, pooled) = match self.take_idle() {
                Some(conn) => (conn, true),
                None => (self.connect().await?, false),
            };
            if conn.ready().await.is_err() {
                if pooled {
                    continue;
                }
                return Err("upstream connection closed before the request".into());
            }
            match conn.try_send_request(req).await {
                Ok(res) => {
                    let pool = self.clone();
                    return Ok(res.map(|body| PooledBody {
                        body,
                        conn: Some(conn),
                        pool,
                    }));
                }
                // A pooled connection that the upstream closed while it sat
                // idle: the request never went out, so send it on another.
                Err(mut err) if pooled && err.error().is_canceled() => match err.take_message() {
                    Some(message) => req = message,
                    None => return Err(err.into_error().into()),
                },
                Err(err) => return Err(err.into_error().into()),
            }
        }
    }
}

impl Service<Request<UpBody>> for UpstreamClient {
    type Response = Response<PooledBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<PooledBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<UpBody>) -> Self::Future {
        Box::pin(self.clone().send(req))
    }
}

/// An upstream response body that gives its connection back to the pool
/// once the whole body has been read.
struct PooledBody {
    body: Incoming,
    conn: Option<SendRequest<UpBody>>,
    pool: UpstreamClient,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self
                .pool
                .inner
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push_back(conn);
            }
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => self.release(),
            Some(Err(_)) => self.conn = None,
            Some(Ok(_)) if self.body.is_end_stream() => self.release(),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// What one worker serves with: its own upstream client pool and the
/// layers, from which [`App::service`] builds each connection's stack.
struct App {
    client: UpstreamClient,
    /// Wraps each request's body where it arrives: its failures are the
    /// caller's, and a read of it (ahead, for a retry) has a deadline.
    caller: CallerBodyLayer,
    /// `[timeout] total`: the whole call, every attempt included.
    total: Option<Duration>,
    /// `[cache]`: one cache for all workers.
    cache: Option<tower_shield::cache::CacheLayer<tower_shield::cache::ConfiguredStore>>,
    context: tower::util::Either<ServerContextLayer, tower::layer::util::Identity>,
    proxy: ReverseProxyLayer,
    retry: RetryLayer,
    stack: ConfiguredClientStack,
    /// `[auth]`, `[rate_limit]` and `[upstream_auth]`: shared by all workers.
    guard: Guard,
    report: Arc<Report>,
}

/// The auth and rate-limit layers, built once for all workers.
#[derive(Clone, Default)]
struct Guard {
    signature: Option<tower_shield::auth::SignatureLayer>,
    auth: Option<AuthLayer>,
    limit: Option<RateLimitLayer>,
    attach: Option<AttachLayer>,
}

impl Guard {
    /// Built from `[auth]`, `[rate_limit]` and `[upstream_auth]`, within
    /// the acceptor's runtime (a Redis limit's connection task and the
    /// token files' watch run there). A secret that cannot be read is a
    /// configuration error that names it.
    fn new(config: &Config, rt: &tokio::runtime::Runtime) -> Result<Self, ConfigError> {
        let _enter = rt.enter();
        let fetch = fetcher(config.timeout.request);
        let auth = config
            .auth
            .as_ref()
            .map(|auth| auth.layer(Some(fetch.clone())))
            .transpose()?;
        let signature = match &config.auth {
            Some(auth) => auth.signature_layer()?,
            None => None,
        };
        if let (Some(layer), Some(every)) = (&auth, config.auth.as_ref().and_then(|a| a.watch)) {
            if let Some(tokens) = layer.static_token_set() {
                tokens.watch(every);
            }
        }
        let limit = config
            .rate_limit
            .clone()
            .map(RateLimitLayer::new)
            .transpose()
            .map_err(|err| ConfigError::field("rate_limit", err))?;
        let attach = config
            .upstream_auth
            .as_ref()
            .map(|up| up.credentials(|| fetch.clone()))
            .transpose()?
            .map(AttachLayer::new);
        Ok(Self {
            signature,
            auth,
            limit,
            attach,
        })
    }
}

/// A request as it arrives, its body wrapped as the caller's.
type CallerRequest = Request<CallerBody<Incoming>>;

/// How the sidecar fetches keys and tokens: the crate's client stack
/// around hyper-util's pooled client.
fn fetcher(timeout: Duration) -> tower_shield::auth::Fetch {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<String>();
    tower_shield::auth::fetch_with(
        ServiceBuilder::new()
            .client_stack(ClientStack::new().timeout(timeout))
            .service(client),
    )
}

/// The peer's address in each request's extensions, for a rate limit
/// keyed by peer (or by identity, for anonymous callers); only when there
/// is a rate limit.
fn peer_layer(
    guard: &Guard,
    peer: SocketAddr,
) -> Option<tower::util::MapRequestLayer<impl Fn(CallerRequest) -> CallerRequest + Clone>> {
    guard.limit.as_ref().map(|_| {
        tower::util::MapRequestLayer::new(move |mut req: CallerRequest| {
            req.extensions_mut().insert(peer);
            req
        })
    })
}

/// A worker's [`App`]: its own upstream client pool, and the layers (health,
/// error responses, the reverse proxy, retries, the client stack) that
/// [`App::service`] puts around it for each connection.
fn app(
    config: &Config,
    guard: &Guard,
    stack: &ConfiguredClientStack,
    retry: &RetryLayer,
    cache: &Option<tower_shield::cache::CacheLayer<tower_shield::cache::ConfiguredStore>>,
    upstream: &str,
) -> Result<App, BoxError> {
    let context = config
        .context
        .as_ref()
        .map(|c| c.to_context())
        .transpose()?;
    Ok(App {
        client: UpstreamClient::new(&upstream.parse()?, config.timeout.request)?,
        caller: CallerBodyLayer::new()
            .deadline(config.timeout.total.unwrap_or(config.timeout.request)),
        total: config.timeout.total,
        cache: cache.clone(),
        context: tower::util::option_layer(context.map(ServerContextLayer::new)),
        proxy: ReverseProxyLayer::new(upstream.parse()?)?,
        retry: retry.clone(),
        stack: stack.clone(),
        guard: guard.clone(),
        report: Arc::new(Report {
            upstream: tower_shield::proxy::redacted(upstream).into_owned(),
            signature: guard.signature.clone(),
            auth: guard.auth.clone(),
            limit: guard.limit.clone(),
            attach: guard.attach.clone(),
            timeout: config.timeout.clone(),
            cache: cache.clone(),
            breakers: stack.breakers(),
            service: config
                .context
                .as_ref()
                .map(|c| c.service_name.clone().unwrap_or_default()),
        }),
    })
}

impl App {
    /// The stack for one connection from `peer`, built when it is accepted
    /// (a few reference counts), so that the peer's `X-Forwarded-For` value
    /// is in the proxy layer rather than in each request's extensions.
    ///
    /// The client stack goes inside the proxy, so that it sees the
    /// upstream's URI: `key = "authority"` then means one breaker for the
    /// upstream. The server context goes outermost, so even a 502 or 504
    /// carries the request's IDs; the client context is in the client
    /// stack, inside the retries, so every attempt is a client span of its
    /// own.
    fn service(&self, peer: SocketAddr) -> impl SidecarService {
        let proxy = ServiceBuilder::new()
            .layer(self.caller)
            .layer(self.context.clone())
            .error_responses()
            .map_err(logged)
            .option_layer(self.guard.signature.clone())
            .option_layer(self.guard.auth.clone())
            .option_layer(peer_layer(&self.guard, peer))
            .option_layer(self.guard.limit.clone())
            .layer(maybe_cache(&self.cache))
            .reverse_proxy(self.proxy.clone().client_addr(&ClientAddr::new(peer)))
            .layer(CallerTimeoutLayer::new())
            .option_layer(self.total.map(TimeoutLayer::new))
            .layer(self.retry.clone())
            .option_layer(self.guard.attach.clone())
            .client_stack(self.stack.clone())
            .service(self.client.clone());
        Health {
            inner: proxy,
            report: self.report.clone(),
        }
    }

    /// [`App::service`] for a configuration with neither `[retry]` nor
    /// `[context]`: without the retry and server-context layers, which
    /// would only pass requests through. A layer that is there costs its
    /// future's size on every request even when it does nothing, so the
    /// layers that are not configured are left out of the type altogether.
    fn plain_service(&self, peer: SocketAddr) -> impl SidecarService {
        let proxy = ServiceBuilder::new()
            .layer(self.caller)
            .error_responses()
            .map_err(logged)
            .option_layer(self.guard.signature.clone())
            .option_layer(self.guard.auth.clone())
            .option_layer(peer_layer(&self.guard, peer))
            .option_layer(self.guard.limit.clone())
            .layer(maybe_cache(&self.cache))
            .reverse_proxy(self.proxy.clone().client_addr(&ClientAddr::new(peer)))
            .layer(CallerTimeoutLayer::new())
            .option_layer(self.total.map(TimeoutLayer::new))
            .map_request(|req: Request<CallerBody<Incoming>>| req.map(ReplayBody::passthrough))
            .option_layer(self.guard.attach.clone())
            .client_stack(self.stack.clone())
            .service(self.client.clone());
        Health {
            inner: proxy,
            report: self.report.clone(),
        }
    }
}

/// Logs a request that failed, before it is answered: the upstream's
/// failures (502, 503, 504) as warnings, the caller's own (400, 408) at
/// debug level.
fn logged(err: BoxError) -> BoxError {
    let (status, _) = tower_shield::error::status_for(&*err);
    let causes: Vec<String> = tower_shield::error::chain(&*err)
        .map(ToString::to_string)
        .collect();
    let causes = causes.join(": ");
    if status.is_client_error() {
        tracing::debug!("the caller's request failed, answered {status}: {causes}");
    } else {
        tracing::warn!("request failed, answered {status}: {causes}");
    }
    err
}

/// What a worker serves each connection with.
trait SidecarService:
    Service<Request<Incoming>, Response = Response<SidecarBody>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S> SidecarService for S where
    S: Service<
            Request<Incoming>,
            Response = Response<SidecarBody>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static
{
}

/// The listening socket, with a backlog that suits a proxy.
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A tower service as hyper's, called in place when it is ready at once,
/// whose requests count as in flight on the connection's [`conn::Watch`].
///
/// hyper-util's `TowerToHyperService` clones the whole stack into every
/// request (hyper's `Service::call` takes `&self`, tower's `&mut self`, and
/// a clone is how it waits for readiness). The sidecar's stack is always
/// ready, so here a request is handed to the connection's own service, and
/// only one that is not ready at once gets a clone that waits for it. hyper
/// calls a connection's service from that connection's task alone, one
/// call at a time, so the `RefCell` is never borrowed twice.
struct InPlace<S> {
    service: RefCell<S>,
    watch: Arc<conn::Watch>,
}

impl<S> InPlace<S> {
    fn new(service: S, watch: Arc<conn::Watch>) -> Self {
        Self {
            service: RefCell::new(service),
            watch,
        }
    }
}

impl<S, R, B> hyper::service::Service<R> for InPlace<S>
where
    S: Service<R, Response = Response<B>> + Clone,
{
    type Response = Response<conn::Tracked<B>>;
    type Error = S::Error;
    type Future =
        conn::TrackedFuture<futures_util::future::Either<S::Future, tower::util::Oneshot<S, R>>>;

    fn call(&self, req: R) -> Self::Future {
        let mut service = self.service.borrow_mut();
        let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
        let future = match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => futures_util::future::Either::Left(service.call(req)),
            // Not ready, or failed: a clone waits (or fails) with hyper's waker.
            _ => futures_util::future::Either::Right(service.clone().oneshot(req)),
        };
        conn::TrackedFuture::new(future, self.watch.clone())
    }
}

/// A connection for a worker to serve, with its place under
/// `max_connections`.
type Accepted = (
    std::net::TcpStream,
    SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
);

/// A worker's end of the acceptor: connections to serve, and how many it
/// is serving now.
struct Worker {
    connections: tokio::sync::mpsc::UnboundedSender<Accepted>,
    active: Arc<AtomicUsize>,
}

/// Serves the connections the acceptor hands this worker, each on this
/// thread, until the acceptor goes away.
async fn serve<S: SidecarService>(
    mut connections: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    active: Arc<AtomicUsize>,
    limits: conn::Limits,
    service_for: impl Fn(SocketAddr) -> S,
) {
    // HTTP/1.1 only, as nginx serves by default: hyper-util's `auto`
    // builder would also take HTTP/2 without TLS, at the price of a rewind
    // buffer in front of every read.
    let mut server = hyper::server::conn::http1::Builder::new();
    server.writev(false);
    while let Some((stream, peer, permit)) = connections.recv().await {
        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
            active.fetch_sub(1, Ordering::Relaxed);
            continue;
        };
        let watch = Arc::new(conn::Watch::new());
        let service = InPlace::new(service_for(peer), watch.clone());
        let server = server.clone();
        let active = active.clone();
        tokio::spawn(async move {
            // Its place under `max_connections`, until it closes.
            let _permit = permit;
            let io = TokioIo::new(conn::WatchedIo {
                io: stream,
                watch: watch.clone(),
            });
            let served = server.serve_connection(io, service);
            match conn::watched(served, &watch, limits).await {
                Some(Ok(())) => {}
                Some(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                None => tracing::debug!(
                    %peer,
                    "connection closed: no whole request head within header_read_timeout, \
                     or idle past idle_timeout"
                ),
            }
            active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Says at most once a second that `what` happened, with how often.
struct Throttled {
    what: &'static str,
    last: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl Throttled {
    const fn new(what: &'static str) -> Self {
        Self {
            what,
            last: None,
            unlogged: 0,
        }
    }

    fn happened(&mut self, detail: &dyn std::fmt::Display) {
        self.unlogged += 1;
        if self
            .last
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(
                times = self.unlogged,
                "{} ({} times since the last report): {detail}",
                self.what,
                self.unlogged
            );
            self.last = Some(tokio::time::Instant::now());
            self.unlogged = 0;
        }
    }
}

/// Accepts connections, up to `max_connections` open at once, and hands
/// each to the worker serving the fewest. At the limit it stops accepting:
/// new connections wait in the listen backlog until one closes.
async fn accept(listener: TcpListener, workers: Vec<Worker>, max_connections: usize) {
    // Out of file descriptors and the like: back off (doubling up to a
    // second, so that a full table is not polled in a tight loop), keep
    // serving, and say so at most once a second.
    const FIRST_BACKOFF: Duration = Duration::from_millis(50);
    let mut backoff = FIRST_BACKOFF;
    let mut failed = Throttled::new("accept failed");
    let mut full = Throttled::new("at max_connections: new connections wait in the backlog");
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let permit = match open.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                full.happened(&max_connections);
                open.clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = FIRST_BACKOFF;
                accepted
            }
            Err(err) => {
                failed.happened(&err);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let worker = workers
            .iter()
            .min_by_key(|w| w.active.load(Ordering::Relaxed))
            .expect("at least one worker");
        worker.active.fetch_add(1, Ordering::Relaxed);
        if worker.connections.send((stream, peer, permit)).is_err() {
            tracing::error!("a worker thread has stopped");
            return;
        }
    }
}

/// Thread per core, as nginx does with its workers: each worker thread runs
/// a current-thread runtime with its own upstream connection pool, so a
/// request never crosses threads. One acceptor hands each new connection to
/// the worker serving the fewest. (Per-worker `SO_REUSEPORT` listeners and
/// one listener shared by all workers were measured too: the first let the
/// kernel's hash split wrk's connections unevenly, the second let whichever
/// worker woke first take a whole burst; either way one worker was
/// saturated beside an idle one.)
fn run(config: Config, filter: tracing_subscriber::filter::Targets) -> Result<(), BoxError> {
    let upstream = config.sidecar.upstream.clone().expect("checked by load");
    let listen = config
        .sidecar
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let count = config
        .sidecar
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));

    // The acceptor's runtime; it also drives the OTLP gRPC exporter.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Flushed when dropped, after the acceptor stops.
    let (_telemetry, spans) = telemetry(&config, &rt)?;
    log::install(filter, spans);
    if _telemetry.is_some() {
        tracing::info!("exporting spans and metrics over OTLP");
    }
    let listener = bind(listen)?;
    let addr = listener.local_addr()?;
    // One stack for all workers: its breakers are shared, so every worker
    // sees the same upstream health.
    let stack = ClientStack::from_config(&config)?;
    // Likewise one retry budget for all workers. Without `[retry]`, one
    // attempt: the layer then passes requests through untouched.
    let retry = match config.retry_layer()? {
        Some(layer) => layer,
        None => RetryLayer::new(tower_shield::retry::Config::default().max_attempts(1))?,
    };
    // Every layer's counters, for the OTLP export.
    let registry = tower_shield::telemetry::Registry::new();
    if let Some(breakers) = stack.breakers() {
        registry.register(breakers);
    }
    registry.register(retry.clone());
    // One cache for all workers, as for the breakers.
    // A Redis store's connection task runs on the acceptor's runtime.
    let cache = {
        let _enter = rt.enter();
        config.cache_layer()?
    };
    if let Some(cache) = &cache {
        registry.register(cache.clone());
    }
    #[cfg(feature = "otlp")]
    if let Some(guard) = &_telemetry {
        guard.telemetry().observe(&registry);
    }
    let limits = conn::Limits {
        header_read: config.sidecar.header_read_timeout,
        idle: config.sidecar.idle_timeout,
    };
    let max_connections = config
        .sidecar
        .max_connections
        .unwrap_or_else(conn::default_max_connections);
    // Without `[retry]` and `[context]` the workers serve the stack without
    // those layers (see `App::plain_service`).
    let plain = config.retry.is_none() && config.context.is_none();
    let guard = Guard::new(&config, &rt)?;
    let mut workers = Vec::with_capacity(count);
    for i in 0..count {
        let app = app(&config, &guard, &stack, &retry, &cache, &upstream)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let active = Arc::new(AtomicUsize::new(0));
        workers.push(Worker {
            connections: tx,
            active: active.clone(),
        });
        // Built here, so that a worker that cannot start stops the sidecar
        // with an error instead of a panic on its own thread.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| format!("worker {i} cannot start its runtime: {err}"))?;
        std::thread::Builder::new()
            .name(format!("sidecar-worker-{i}"))
            .spawn(move || {
                if plain {
                    rt.block_on(serve(rx, active, limits, |peer| app.plain_service(peer)));
                } else {
                    rt.block_on(serve(rx, active, limits, |peer| app.service(peer)));
                }
            })
            .map_err(|err| format!("worker {i} cannot start: {err}"))?;
    }
    // Tests and scripts read this line to learn the port when listening on :0.
    println!(
        "sidecar listening on http://{addr} -> {} ({count} workers)",
        tower_shield::proxy::redacted(&upstream)
    );

    rt.block_on(async move {
        let listener = TcpListener::from_std(listener)?;
        tokio::select! {
            () = accept(listener, workers, max_connections) => {}
            () = shutdown_signal() => {}
        }
        Ok::<_, BoxError>(())
    })?;
    println!("sidecar shutting down");
    Ok(())
}

/// OTLP export when `[context]` names an endpoint: spans and metrics until
/// the returned guard is dropped (which flushes them), and the layer that
/// exports the spans, for [`log::install`].
#[cfg(feature = "otlp")]
fn telemetry(
    config: &Config,
    rt: &tokio::runtime::Runtime,
) -> Result<
    (
        Option<tower_shield::telemetry::otlp::TelemetryGuard>,
        Option<log::Extra>,
    ),
    BoxError,
> {
    use tower_shield::telemetry::otlp::{Telemetry, TelemetryGuard};
    use tracing_subscriber::Layer;
    let Some(otlp) = config
        .context
        .as_ref()
        .map(|c| c.to_otlp())
        .transpose()?
        .flatten()
    else {
        return Ok((None, None));
    };
    // The gRPC exporter needs a runtime to start its connection task.
    let _enter = rt.enter();
    let telemetry = Telemetry::new(&otlp)?;
    let spans: log::Extra = Box::new(
        telemetry
            .layer()
            .with_filter(tracing::level_filters::LevelFilter::INFO),
    );
    Ok((Some(TelemetryGuard::new(telemetry)), Some(spans)))
}

#[cfg(not(feature = "otlp"))]
fn telemetry(
    config: &Config,
    _rt: &tokio::runtime::Runtime,
) -> Result<(Option<Infallible>, Option<log::Extra>), BoxError> {
    if config
        .context
        .as_ref()
        .is_some_and(|c| c.otlp_endpoint.is_some())
    {
        return Err(
            "context.otlp_endpoint: this sidecar was built without the `otlp` feature \
                    (cargo install tower-shield --features sidecar,otlp)"
                .into(),
        );
    }
    Ok((None, None))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("sidecar: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = match load(args) {
        Ok(config) => config,
        Err(err) => {
            log::install(
                log::filter(None)
                    .unwrap_or_else(|_| log::parse(log::DEFAULT_FILTER).expect("valid")),
                None,
            );
            tracing::error!("configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    let filter = match log::filter(config.sidecar.log.as_deref()) {
        Ok(filter) => filter,
        Err(err) => {
            eprintln!("sidecar: {err}");
            return ExitCode::from(2);
        }
    };
    match run(config, filter) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<ConfigError>() => {
            tracing::error!("configuration error: {err}");
            ExitCode::from(2)
        }
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("sidecar: {err}");
            ExitCode::FAILURE
        }
    }
}
