//! Loopback bench of the sidecar's pass-through: one request at a time from
//! a hyper client, directly to an upstream, and through the same proxy
//! stack the sidecar builds (error responses, reverse proxy, client stack
//! with timeout, hyper-util client), all on 127.0.0.1 in one process.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use std::{convert::Infallible, net::SocketAddr, time::Duration};
use tokio::net::TcpListener;
use tower::{service_fn, Service, ServiceBuilder};
use tower_shield::{proxy::ReverseProxyLayer, stack::ClientStack, ServiceBuilderExt};

/// Serves `svc` on 127.0.0.1 on a free port.
async fn serve<S, B>(svc: S) -> SocketAddr
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<tower_shield::BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let server = auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            let server = server.clone();
            let svc = svc.clone();
            tokio::spawn(async move {
                let _ = server
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                    .await;
            });
        }
    });
    addr
}

fn sidecar(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (upstream, proxy) = rt.block_on(async {
        let upstream = serve(service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hello"))))
        }))
        .await;
        let client: Client<HttpConnector, Incoming> =
            Client::builder(TokioExecutor::new()).build_http();
        let proxy_stack = ServiceBuilder::new()
            .error_responses()
            .reverse_proxy(
                ReverseProxyLayer::new(format!("http://{upstream}").parse().unwrap()).unwrap(),
            )
            .client_stack(ClientStack::new().timeout(Duration::from_secs(5)))
            .service(client);
        (upstream, serve(proxy_stack).await)
    });
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut group = c.benchmark_group("sidecar/loopback");
    for (name, addr) in [("direct", upstream), ("through_proxy", proxy)] {
        let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let req = Request::get(uri.clone()).body(Empty::new()).unwrap();
                let client = client.clone();
                async move {
                    let res = client.request(req).await.unwrap();
                    res.into_body().collect().await.unwrap()
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = sidecar
}
criterion_main!(benches);
