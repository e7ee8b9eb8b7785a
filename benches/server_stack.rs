//! Not a criterion bench: an axum router answering a small JSON body, served
//! in one of three shapes for `benches/wrk_server_stack.sh` to load side by
//! side:
//!
//! - `bare`: the router alone;
//! - `tower_http`: under tower-http's nearest equivalents of what
//!   `ServerStack` does (a timeout, `x-request-id` set and propagated, and
//!   `TraceLayer`'s span);
//! - `shield`: under `ServerStack` with context (trace context, request and
//!   correlation IDs, a span), error responses and a timeout;
//! - `tower_http_auth`: `tower_http` with `ValidateRequestHeaderLayer::bearer`
//!   (one static token);
//! - `shield_auth`: `shield` with auth (three static tokens) and a rate
//!   limit per verified caller, in memory, with a quota wrk never reaches.
//!
//! wrk sends `Authorization: Bearer bench-token` to every variant.
//!
//! ```text
//! server_stack --variant shield --listen 127.0.0.1:8081
//! ```
//!
//! One worker thread, so that wrk can have the other core. The server stops
//! after `--seconds` (default 600), so it never outlives its run.

use axum::{routing::get, Json, Router};
use std::{net::SocketAddr, time::Duration};

fn router() -> Router {
    Router::new().route(
        "/",
        get(|| async { Json(serde_json::json!({"ok": true, "items": [1, 2, 3]})) }),
    )
}

/// The token wrk sends.
const TOKEN: &str = "bench-token";

fn app(variant: &str) -> Router {
    let timeout = Duration::from_secs(5);
    match variant {
        "bare" => router(),
        "tower_http" | "tower_http_auth" => {
            use tower_http::{
                request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
                timeout::TimeoutLayer,
                trace::TraceLayer,
            };
            let header = http::HeaderName::from_static("x-request-id");
            #[allow(deprecated)]
            let auth = (variant == "tower_http_auth")
                .then(|| tower_http::validate_request::ValidateRequestHeaderLayer::bearer(TOKEN));
            router().layer(
                tower::ServiceBuilder::new()
                    .layer(SetRequestIdLayer::new(header.clone(), MakeRequestUuid))
                    .layer(TraceLayer::new_for_http())
                    .layer(PropagateRequestIdLayer::new(header))
                    .option_layer(auth)
                    .layer(TimeoutLayer::with_status_code(
                        http::StatusCode::GATEWAY_TIMEOUT,
                        timeout,
                    )),
            )
        }
        "shield_auth" => {
            use tower_shield::{auth, context, limit, stack::ServerStack};
            let tokens = auth::StaticTokens::load(vec![
                auth::TokenEntry::new("bench", auth::SecretRef::value(TOKEN)),
                auth::TokenEntry::new("other", auth::SecretRef::value("other-token-0123")),
                auth::TokenEntry::new("third", auth::SecretRef::value("third-token-4567")),
            ])
            .expect("tokens");
            router().layer(
                ServerStack::new()
                    .context(context::Config::new())
                    .auth(auth::AuthLayer::new().static_tokens(tokens))
                    .rate_limit(
                        limit::RateLimitLayer::new(limit::RateLimitConfig::new(1e9, u32::MAX))
                            .expect("limit"),
                    )
                    .timeout(timeout),
            )
        }
        "shield" => {
            use tower_shield::{context, stack::ServerStack};
            router().layer(
                ServerStack::new()
                    .context(context::Config::new())
                    .timeout(timeout),
            )
        }
        other => panic!(
            "unknown variant {other:?}: bare, tower_http, shield, tower_http_auth or shield_auth"
        ),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let variant = arg("--variant").unwrap_or_else(|| "shield".into());
    let listen: SocketAddr = arg("--listen")
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .expect("--listen ADDR");
    let seconds: u64 = arg("--seconds").map_or(600, |s| s.parse().expect("--seconds N"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        println!(
            "{variant} listening on http://{}",
            listener.local_addr().unwrap()
        );
        let serve = axum::serve(listener, app(&variant));
        let _ = tokio::time::timeout(Duration::from_secs(seconds), serve).await;
    });
}
