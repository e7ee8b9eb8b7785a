//! The response future of [`Retry`](super::Retry).

use super::RetryPolicy;
use crate::{
    body::{Buffer, ReplayBody},
    classify::Classify,
    BoxError,
};
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{ready, Context, Poll},
};
use tokio::time::Sleep;
use tower_service::Service;

/// What a request that may be retried carries between attempts.
pub(super) struct Retrying<S, C, B> {
    pub(super) service: S,
    pub(super) policy: RetryPolicy<C>,
    /// The copy for the next attempt (`None` when none can be made).
    pub(super) request: Option<Request<ReplayBody<B>>>,
}

pin_project! {
    /// Response future of [`Retry`](super::Retry).
    pub struct ResponseFuture<S, C, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S::Future, B>,
        retry: Option<Retrying<S, C, B>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Buffering {
            buffer: Buffer<B>,
        },
        Called {
            #[pin]
            future: F,
        },
        Waiting {
            sleep: Pin<Box<Sleep>>,
        },
        Retrying,
    }
}

impl<S, C, B> ResponseFuture<S, C, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    /// A request sent once, never retried.
    pub(super) fn once(future: S::Future) -> Self {
        Self::called(future, None)
    }

    /// A request sent, and retried when `retry` is given.
    pub(super) fn called(future: S::Future, retry: Option<Retrying<S, C, B>>) -> Self {
        Self {
            state: State::Called { future },
            retry,
        }
    }

    /// A request whose body is read ahead before it is sent.
    pub(super) fn buffering(buffer: Buffer<B>, retry: Retrying<S, C, B>) -> Self {
        Self {
            state: State::Buffering { buffer },
            retry: Some(retry),
        }
    }
}

impl<S, C, B> fmt::Debug for ResponseFuture<S, C, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, C, B, Res> Future for ResponseFuture<S, C, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<Res>>,
    S::Error: Into<BoxError>,
    C: Classify<Response<Res>, BoxError>,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<Res>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Buffering { buffer } => {
                    let body = ready!(Pin::new(buffer).poll(cx)).map_err(Into::into)?;
                    let retry = this.retry.as_mut().expect("set with the buffer");
                    let head = retry.request.take().expect("set with the buffer");
                    let req = head.map(|_| body);
                    retry.request = retry.policy.copy_request(&req);
                    // The service `call` made ready.
                    let future = retry.service.call(req);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let mut result = ready!(future.poll(cx)).map_err(Into::into);
                    // As under tower's `Retry`: without a copy for the next
                    // attempt, the answer is final.
                    let Some(Retrying {
                        policy,
                        request: Some(copy),
                        ..
                    }) = this.retry.as_mut()
                    else {
                        return Poll::Ready(result);
                    };
                    match policy.after_attempt(copy, &mut result) {
                        Some(sleep) => this.state.set(State::Waiting { sleep }),
                        None => return Poll::Ready(result),
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Retrying);
                }
                StateProj::Retrying => {
                    let retry = this.retry.as_mut().expect("only a retried request waits");
                    ready!(retry.service.poll_ready(cx)).map_err(Into::into)?;
                    let req = retry.request.take().expect("only a copied request waits");
                    retry.request = retry.policy.copy_request(&req);
                    let future = retry.service.call(req);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}
