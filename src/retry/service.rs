//! [`Retry`], the service.

use super::{
    future::{ResponseFuture, Retrying},
    RetryPolicy,
};
use crate::{body::ReplayBody, classify::Classify, classify::ServerErrorsAsFailures, BoxError};
use http::{Request, Response};
use http_body::Body;
use std::{
    fmt,
    task::{Context, Poll},
};
use tower_service::Service;

/// Retries failed requests; see the [module docs](super).
///
/// The attempts are run the way `tower::retry::Retry` runs them, with
/// [`RetryPolicy`] deciding exactly as it does under tower's `Retry`, but by
/// this service's own future: tower's clones the whole service, policy
/// included, into every response future; this one holds one clone of the
/// inner service and of the policy, and only for a request that may be
/// retried. A request that never will be goes straight to the inner
/// service.
///
/// The inner service's error may be any `Into<BoxError>` (a bare hyper-util
/// client's, say); the classifier sees it as a [`BoxError`].
#[derive(Clone)]
pub struct Retry<S, C = ServerErrorsAsFailures> {
    inner: S,
    policy: RetryPolicy<C>,
}

impl<S: fmt::Debug, C> fmt::Debug for Retry<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, C> Retry<S, C> {
    pub(super) fn new(inner: S, policy: RetryPolicy<C>) -> Self {
        Self { inner, policy }
    }

    define_inner_service_accessors!();
}

impl<S, C, B, Res> Service<Request<B>> for Retry<S, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<Res>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<Response<Res>, BoxError> + Clone,
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response<Res>;
    type Error = BoxError;
    type Future = ResponseFuture<S, C, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (max_attempts, limit) = {
            let config = self.policy.config();
            (config.max_attempts, config.max_replay_body)
        };
        if max_attempts > 1 {
            self.policy.deposit();
        }
        let empty = req.body().is_end_stream();
        let may_retry = max_attempts > 1
            && (empty || self.policy.repeatable(&req))
            && req.body().size_hint().lower() <= limit as u64;
        if !may_retry {
            // Never sent twice: straight to the inner service, without a
            // policy, a copy or a read-ahead.
            return ResponseFuture::once(self.inner.call(req.map(ReplayBody::passthrough)));
        }
        if empty {
            let req = req.map(|_| ReplayBody::empty());
            let mut policy = self.policy.clone();
            let retry = policy.copy_request(&req).map(|copy| Retrying {
                // Made ready again before it is called.
                service: self.inner.clone(),
                policy,
                request: Some(copy),
            });
            return ResponseFuture::called(self.inner.call(req), retry);
        }
        // Read the body ahead; the service made ready for this call goes
        // with it, a clone stays.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        ResponseFuture::buffering(
            ReplayBody::buffer(body, limit).within(self.policy.replay_budget()),
            Retrying {
                service: ready,
                policy: self.policy.clone(),
                // The head waits in the copy's place (the copy is made once
                // the body is read).
                request: Some(Request::from_parts(parts, ReplayBody::empty())),
            },
        )
    }
}
