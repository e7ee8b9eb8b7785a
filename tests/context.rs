//! Context propagation across three real services on 127.0.0.1:
//! A -> B -> C, each an axum router with the server layer, calling the next
//! through a hyper-util client with the client layer.
#![cfg(feature = "context")]

mod support;

use axum::{extract::State, routing::get, Json, Router};
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use serde_json::{json, Value};
use std::net::SocketAddr;
use support::serve;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_shield::context::{
    self, ClientContext, ClientContextLayer, Config, ServerContextLayer, TraceParent,
};

type Outgoing = ClientContext<Client<HttpConnector, Empty<Bytes>>>;

fn config(name: &str) -> Config {
    Config::new()
        .service(name, "1.0.0")
        .propagate_header("x-tenant-id")
        .unwrap()
        .traceresponse(true)
}

fn client(name: &str) -> Outgoing {
    ServiceBuilder::new()
        .layer(ClientContextLayer::new(config(name)))
        .service(support::hyper_client())
}

fn header(h: &HeaderMap, name: &str) -> Value {
    match h
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect::<Vec<_>>()[..]
    {
        [] => Value::Null,
        [ref one] => json!(one),
        ref many => json!(many),
    }
}

/// What a service saw: the headers that came in and its own context.
fn seen(h: &HeaderMap) -> Value {
    let cx = context::current().expect("the server layer sets the task-local context");
    json!({
        "traceparent": header(h, "traceparent"),
        "tracestate": header(h, "tracestate"),
        "baggage": header(h, "baggage"),
        "x-request-id": header(h, "x-request-id"),
        "x-correlation-id": header(h, "x-correlation-id"),
        "x-tenant-id": header(h, "x-tenant-id"),
        "x-service-name": header(h, "x-service-name"),
        "trace_id": cx.trace_id().to_string(),
        "span_id": cx.span_id().to_string(),
        "parent_id": cx.parent_id().map(|p| p.to_string()),
        "request_id": cx.request_id().to_str().unwrap(),
        "correlation_id": cx.correlation_id().to_str().unwrap(),
    })
}

#[derive(Clone)]
struct Next {
    client: Outgoing,
    url: String,
    spawn: Spawn,
}

#[derive(Clone, Copy)]
enum Spawn {
    No,
    WithHelper,
    Plain,
}

async fn call_next(mut client: Outgoing, url: String) -> Value {
    let req = Request::get(url).body(Empty::new()).unwrap();
    let res = client.ready().await.unwrap().call(req).await.unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

async fn hop(State(next): State<Next>, headers: HeaderMap) -> Json<Value> {
    tracing::info!("handling a hop");
    let mut me = seen(&headers);
    let fut = call_next(next.client.clone(), next.url.clone());
    me["next"] = match next.spawn {
        Spawn::No => fut.await,
        Spawn::WithHelper => context::spawn(fut).await.unwrap(),
        Spawn::Plain => tokio::spawn(fut).await.unwrap(),
    };
    Json(me)
}

async fn leaf(headers: HeaderMap) -> Json<Value> {
    Json(seen(&headers))
}

async fn chain(spawn_in_b: Spawn) -> SocketAddr {
    let c = serve(
        Router::new()
            .route("/", get(leaf))
            .layer(ServerContextLayer::new(config("c"))),
    )
    .await;
    let b = serve(
        Router::new()
            .route("/", get(hop))
            .with_state(Next {
                client: client("b"),
                url: format!("http://{c}/"),
                spawn: spawn_in_b,
            })
            .layer(ServerContextLayer::new(config("b"))),
    )
    .await;
    serve(
        Router::new()
            .route("/", get(hop))
            .with_state(Next {
                client: client("a"),
                url: format!("http://{b}/"),
                spawn: Spawn::No,
            })
            .layer(ServerContextLayer::new(config("a"))),
    )
    .await
}

async fn get_a(a: SocketAddr, headers: &[(&str, &[u8])]) -> (http::HeaderMap, Value) {
    let mut req = Request::get(format!("http://{a}/"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = support::hyper_client::<Empty<Bytes>>()
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (h, serde_json::from_slice(&body).unwrap())
}

fn parent_in(v: &Value) -> String {
    let tp = v["traceparent"].as_str().expect("a traceparent arrived");
    let tp = TraceParent::parse(tp.as_bytes()).expect("only valid traceparents are forwarded");
    tp.parent_id.to_string()
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn trace_and_correlation_flow_from_a_to_c() {
    let a = chain(Spawn::No).await;
    let (res_headers, seen) = get_a(
        a,
        &[
            ("traceparent", TP.as_bytes()),
            ("tracestate", b"vendor=opaque, other=1"),
            ("baggage", b"user=alice, bad key=1"),
            ("x-correlation-id", b"order-42"),
            ("x-tenant-id", b"tenant-7"),
        ],
    )
    .await;
    let (b, c) = (&seen["next"], &seen["next"]["next"]);

    // One trace across all three, the caller's.
    for hop in [&seen, b, c] {
        assert_eq!(hop["trace_id"], TRACE);
        assert_eq!(hop["correlation_id"], "order-42");
        assert_eq!(hop["x-tenant-id"], "tenant-7");
        assert_eq!(
            hop["baggage"],
            if hop == &seen {
                "user=alice, bad key=1"
            } else {
                "user=alice"
            }
        );
        assert_eq!(
            hop["tracestate"],
            if hop == &seen {
                "vendor=opaque, other=1"
            } else {
                "vendor=opaque,other=1"
            }
        );
    }
    // The parent-ids chain: A's parent is the caller; B's and C's parents
    // are the client spans of A and B, which are new spans (not the server
    // spans themselves); every span is distinct.
    assert_eq!(seen["parent_id"], "00f067aa0ba902b7");
    assert_eq!(b["parent_id"].as_str().unwrap(), parent_in(b));
    assert_eq!(c["parent_id"].as_str().unwrap(), parent_in(c));
    let spans = [
        seen["span_id"].as_str().unwrap(),
        b["parent_id"].as_str().unwrap(),
        b["span_id"].as_str().unwrap(),
        c["parent_id"].as_str().unwrap(),
        c["span_id"].as_str().unwrap(),
    ];
    for (i, x) in spans.iter().enumerate() {
        for y in &spans[i + 1..] {
            assert_ne!(x, y, "{spans:?}");
        }
    }
    // The request ID A minted is forwarded; callers are named.
    let rid = seen["request_id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(rid).unwrap().get_version_num(), 7);
    assert_eq!(b["x-request-id"], rid);
    assert_eq!(c["request_id"], rid);
    assert_eq!(b["x-service-name"], "a");
    assert_eq!(c["x-service-name"], "b");
    // The response carries the IDs and a traceresponse naming A's span.
    assert_eq!(res_headers["x-request-id"], rid);
    assert_eq!(res_headers["x-correlation-id"], "order-42");
    let tr = TraceParent::parse(res_headers["traceresponse"].as_bytes()).unwrap();
    assert_eq!(tr.trace_id.to_string(), TRACE);
    assert_eq!(tr.parent_id.to_string(), seen["span_id"]);
}

#[tokio::test]
async fn invalid_traceparents_restart_the_trace_and_never_reach_the_next_service() {
    let a = chain(Spawn::No).await;
    let bad: &[&[u8]] = &[
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        b"garbage",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b\xff-01",
    ];
    for tp in bad {
        let (_, seen) = get_a(a, &[("traceparent", tp), ("tracestate", b"vendor=x")]).await;
        assert!(
            seen["parent_id"].is_null(),
            "{:?}",
            String::from_utf8_lossy(tp)
        );
        let trace = seen["trace_id"].as_str().unwrap();
        assert_ne!(trace, TRACE);
        // The next services see the new trace, a valid header, and no
        // tracestate (it belonged to the rejected traceparent).
        let b = &seen["next"];
        assert_eq!(b["trace_id"], trace);
        parent_in(b);
        assert!(b["tracestate"].is_null());
        assert_eq!(seen["next"]["next"]["trace_id"], trace);
    }
    // Two traceparent headers are invalid too.
    let (_, seen) = get_a(
        a,
        &[
            ("traceparent", TP.as_bytes()),
            ("traceparent", TP.as_bytes()),
        ],
    )
    .await;
    assert!(seen["parent_id"].is_null());
}

#[tokio::test]
async fn malformed_ids_and_tracestate_are_replaced_not_forwarded() {
    let a = chain(Spawn::No).await;
    let long = vec![b'x'; 200];
    let (_, seen) = get_a(
        a,
        &[
            ("traceparent", TP.as_bytes()),
            ("tracestate", b"Invalid-Key=1"),
            ("x-request-id", b"caf\xc3\xa9"),
            ("x-correlation-id", &long),
            ("x-tenant-id", b"a"),
            ("x-tenant-id", b"b"),
        ],
    )
    .await;
    let b = &seen["next"];
    assert_eq!(seen["trace_id"], TRACE);
    assert!(b["tracestate"].is_null());
    let rid = seen["request_id"].as_str().unwrap();
    assert_eq!(rid.len(), 36);
    assert_eq!(b["x-request-id"], rid);
    // No correlation ID that can be used: the request ID stands in.
    assert_eq!(b["x-correlation-id"], rid);
    assert!(b["x-tenant-id"].is_null());
}

#[tokio::test]
async fn context_crosses_spawn_with_the_helper_and_not_without() {
    let a = chain(Spawn::WithHelper).await;
    let (_, seen) = get_a(a, &[("traceparent", TP.as_bytes())]).await;
    assert_eq!(seen["next"]["next"]["trace_id"], TRACE);

    let a = chain(Spawn::Plain).await;
    let (_, seen) = get_a(
        a,
        &[("traceparent", TP.as_bytes()), ("x-correlation-id", b"c-1")],
    )
    .await;
    let c = &seen["next"]["next"];
    // A plain tokio::spawn runs outside the request's task: the call from
    // it starts a new trace with new IDs (the documented behaviour).
    assert_ne!(c["trace_id"], TRACE);
    assert_ne!(c["correlation_id"], "c-1");
}

#[tokio::test]
async fn ids_from_an_untrusted_caller_are_replaced() {
    let svc = serve(
        Router::new()
            .route("/", get(leaf))
            .layer(ServerContextLayer::new(
                Config::new().trust_incoming_ids(false),
            )),
    )
    .await;
    let (h, seen) = get_a(
        svc,
        &[
            ("x-request-id", b"chosen-by-caller"),
            ("x-correlation-id", b"also"),
        ],
    )
    .await;
    assert_ne!(seen["request_id"], "chosen-by-caller");
    assert_eq!(seen["correlation_id"], seen["request_id"]);
    assert_eq!(h["x-request-id"], seen["request_id"].as_str().unwrap());
}

#[tokio::test]
async fn a_client_outside_any_request_starts_a_trace() {
    let c = serve(
        Router::new()
            .route("/", get(leaf))
            .layer(ServerContextLayer::new(Config::new())),
    )
    .await;
    let seen = call_next(client("job"), format!("http://{c}/")).await;
    assert_eq!(seen["trace_id"].as_str().unwrap().len(), 32);
    assert_eq!(seen["x-service-name"], "job");
    assert_eq!(seen["parent_id"].as_str().unwrap(), parent_in(&seen));
    // A context set on the request explicitly wins over the task-local one.
    let cx = context::Context::from_headers(
        &{
            let mut h = HeaderMap::new();
            h.insert("traceparent", TP.parse().unwrap());
            h
        },
        &Config::new(),
    );
    let mut req = Request::get(format!("http://{c}/"))
        .body(Empty::new())
        .unwrap();
    req.extensions_mut().insert(cx);
    let res = client("job").oneshot(req).await.unwrap();
    let body: Value =
        serde_json::from_slice(&res.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["trace_id"], TRACE);
}
