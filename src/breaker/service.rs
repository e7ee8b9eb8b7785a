//! [`CircuitBreaker`], the service.

use super::{future::ResponseFuture, Breakers, KeyBy, MakeKey};
use crate::{
    classify::{Classify, ServerErrorsAsFailures},
    BoxError,
};
use http::{Request, Response};
use std::{
    fmt,
    task::{Context, Poll},
};
use tower_service::Service;

/// Rejects calls with [`Open`](super::Open) while its breaker is open.
#[derive(Clone)]
pub struct CircuitBreaker<S, K = KeyBy, C = ServerErrorsAsFailures> {
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
    pub(crate) fn new(inner: S, breakers: Breakers, make_key: K, classifier: C) -> Self {
        Self {
            inner,
            breakers,
            make_key,
            classifier,
        }
    }

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
    C: Classify<Response<ResBody>, BoxError> + Clone,
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
        let breaker = match self.make_key.make_key(&req) {
            Some(key) => self.breakers.for_key(&key),
            None => self.breakers.default_ref().clone(),
        };
        match breaker.try_acquire() {
            Ok(permit) => ResponseFuture::called(
                self.inner.call(req),
                breaker,
                permit,
                self.classifier.clone(),
            ),
            Err(open) => ResponseFuture::rejected(open),
        }
    }
}
