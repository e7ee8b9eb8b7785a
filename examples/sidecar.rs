//! A reverse-proxy sidecar built only from tower-shield's layers.
//!
//! ```text
//! cargo run --release --example sidecar -- --config sidecar.toml
//! cargo run --release --example sidecar -- --listen 127.0.0.1:8080 --upstream http://127.0.0.1:9000
//! ```
//!
//! Flags override the file. It forwards every method, path, query, header
//! and body to the upstream and streams the answer back, drops hop-by-hop
//! headers, adds `Via`, bounds each request with the `[timeout]` (504 on
//! expiry, 502 when the upstream cannot be reached), and serves its own
//! `GET /_shield/health`. See README.md for the configuration reference.

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_shield::{
    config::{Config, ConfigError},
    proxy::{ClientAddr, ProxyBody, ReverseProxyLayer},
    stack::ClientStack,
    BoxError, ServiceBuilderExt,
};

const USAGE: &str = "\
usage: sidecar [--config FILE] [--listen ADDR] [--upstream URL]

  --config FILE    TOML configuration (see README.md); flags override it
  --listen ADDR    address to serve on (default 127.0.0.1:8080)
  --upstream URL   http:// URL to forward to, with an optional path prefix
  --help           this text";

const HEALTH_PATH: &str = "/_shield/health";

#[derive(Debug, Default)]
struct Args {
    config: Option<PathBuf>,
    listen: Option<SocketAddr>,
    upstream: Option<String>,
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
    config.validate()?;
    if config.sidecar.upstream.is_none() {
        return Err(ConfigError::field(
            "sidecar.upstream",
            "no upstream: pass --upstream URL or set it in the [sidecar] section",
        ));
    }
    Ok(config)
}

/// Answers `GET /_shield/health` itself and passes everything else on.
#[derive(Clone)]
struct Health<S> {
    inner: S,
    report: Arc<str>,
}

impl<S> Service<Request<Incoming>> for Health<S>
where
    S: Service<Request<Incoming>, Response = Response<ProxyBody<Incoming>>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Response<ProxyBody<Incoming>>;
    type Error = Infallible;
    type Future = futures_util::future::Either<
        std::future::Ready<Result<Self::Response, Infallible>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        if req.uri().path() != HEALTH_PATH {
            return futures_util::future::Either::Right(self.inner.call(req));
        }
        let res = if req.method() == Method::GET || req.method() == Method::HEAD {
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CACHE_CONTROL, "no-store")
                .body(ProxyBody::message(Bytes::copy_from_slice(
                    self.report.as_bytes(),
                )))
        } else {
            Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header(header::ALLOW, "GET, HEAD")
                .body(ProxyBody::default())
        };
        futures_util::future::Either::Left(std::future::ready(Ok(res.expect("valid response"))))
    }
}

fn health_report(config: &Config, upstream: &str) -> String {
    serde_json::json!({
        "status": "ok",
        "upstream": upstream,
        "layers": {
            "timeout": { "request_ms": config.timeout.request.as_millis() as u64 },
        },
    })
    .to_string()
}

async fn run(config: Config) -> Result<(), BoxError> {
    let upstream = config.sidecar.upstream.clone().expect("checked by load");
    let listen = config
        .sidecar
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(config.timeout.request));
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);

    let proxy = ServiceBuilder::new()
        .error_responses()
        .client_stack(ClientStack::from_config(&config))
        .reverse_proxy(ReverseProxyLayer::new(upstream.parse()?)?)
        .service(client);
    let app = Health {
        inner: proxy,
        report: health_report(&config, &upstream).into(),
    };

    let listener = TcpListener::bind(listen).await?;
    // Tests and scripts read this line to learn the port when listening on :0.
    println!(
        "sidecar listening on http://{} -> {upstream}",
        listener.local_addr()?
    );

    let server = auto::Builder::new(TokioExecutor::new());
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    eprintln!("sidecar: accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ClientAddr(peer));
            req
        });
        let server = server.clone();
        tokio::spawn(async move {
            let conn =
                server.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(err) = conn.await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    println!("sidecar shutting down");
    Ok(())
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

#[tokio::main]
async fn main() -> ExitCode {
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
            eprintln!("sidecar: configuration error: {err}");
            return ExitCode::from(2);
        }
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sidecar: {err}");
            ExitCode::FAILURE
        }
    }
}
