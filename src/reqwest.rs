//! An adapter that makes a [`reqwest::Client`] the inner service of a stack
//! over `http::Request` and `http::Response` (feature `reqwest`).
//!
//! Request bodies of any [`http_body::Body`] type are streamed to reqwest,
//! and the response body is reqwest's own streaming [`reqwest::Body`], so
//! neither side is buffered.
//!
//! # Example
//!
//! ```no_run
//! use http::Request;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_shield::{reqwest::ReqwestService, stack::ClientStack, ServiceBuilderExt};
//!
//! # async fn run() -> Result<(), tower_shield::BoxError> {
//! let client = ServiceBuilder::new()
//!     .client_stack(ClientStack::new())
//!     .service(ReqwestService::new(reqwest::Client::new()));
//! let res = client
//!     .oneshot(Request::get("http://127.0.0.1:8080/").body(String::new())?)
//!     .await?;
//! println!("{}", res.status());
//! # Ok(())
//! # }
//! ```

use crate::BoxError;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};
use sync_wrapper::SyncWrapper;
use tower_service::Service;

type Pending = <reqwest::Client as Service<reqwest::Request>>::Future;

/// A `tower::Service<http::Request<B>>` that sends requests with a
/// [`reqwest::Client`].
///
/// # Clone
///
/// Clones share the client's connection pool, as `reqwest::Client` does.
#[derive(Debug, Clone, Default)]
pub struct ReqwestService {
    client: reqwest::Client,
}

impl ReqwestService {
    /// Wraps `client`.
    pub fn new(client: reqwest::Client) -> Self {
        Self { client }
    }

    /// The reqwest client.
    pub fn get_ref(&self) -> &reqwest::Client {
        &self.client
    }
}

impl<B> Service<Request<B>> for ReqwestService
where
    B: Body + Send + 'static,
    B::Data: Into<Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), reqwest::Error>> {
        Service::<reqwest::Request>::poll_ready(&mut self.client, cx)
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture {
        let req = req.map(|body| {
            let (hint, ended) = (body.size_hint(), body.is_end_stream());
            reqwest::Body::wrap(SyncBody {
                inner: SyncWrapper::new(body),
                hint,
                ended,
            })
        });
        match reqwest::Request::try_from(req) {
            Ok(req) => ResponseFuture {
                kind: Kind::Sent {
                    inner: self.client.call(req),
                },
            },
            Err(err) => ResponseFuture {
                kind: Kind::Invalid { error: Some(err) },
            },
        }
    }
}

pin_project! {
    /// Response future of [`ReqwestService`].
    pub struct ResponseFuture {
        #[pin]
        kind: Kind,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Sent { #[pin] inner: Pending },
        Invalid { error: Option<reqwest::Error> },
    }
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<reqwest::Body>, reqwest::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Sent { inner } => Poll::Ready(ready!(inner.poll(cx)).map(Response::from)),
            KindProj::Invalid { error } => {
                Poll::Ready(Err(error.take().expect("future polled after completion")))
            }
        }
    }
}

pin_project! {
    /// reqwest wants `Sync` bodies; axum's and hyper's are only `Send`.
    /// `SyncWrapper` makes any `Send` body `Sync` at no cost, since a body is
    /// only ever polled through `&mut`.
    struct SyncBody<B> {
        #[pin]
        inner: SyncWrapper<B>,
        // `is_end_stream` and `size_hint` take `&self`, which `SyncWrapper`
        // cannot lend out; they are read once when the body is wrapped, which
        // is when hyper reads them to choose the message framing.
        hint: SizeHint,
        ended: bool,
    }
}

impl<B> Body for SyncBody<B>
where
    B: Body,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.get_pin_mut().poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            // Keep the hint true as data goes out.
            let sent = data.map_or(0, |d| bytes::Buf::remaining(d) as u64);
            let mut hint = SizeHint::new();
            hint.set_lower(this.hint.lower().saturating_sub(sent));
            if let Some(upper) = this.hint.upper() {
                hint.set_upper(upper.saturating_sub(sent));
            }
            *this.hint = hint;
        }
        if frame.is_none() {
            *this.ended = true;
            *this.hint = SizeHint::with_exact(0);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
