//! The response future of [`CircuitBreaker`](super::CircuitBreaker).

use super::{state::Permit, Breaker, Open};
use crate::{
    classify::{retry_after, Classify, LateOutcome},
    error::is_caller_fault,
    BoxError,
};
use http::Response;
use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

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
    /// Response future of [`CircuitBreaker`](super::CircuitBreaker).
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

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn called(future: F, breaker: Arc<Breaker>, permit: Permit, classifier: C) -> Self {
        Self {
            kind: Kind::Called {
                future,
                guard: Some(Guard { breaker, permit }),
                classifier,
            },
        }
    }

    pub(super) fn rejected(open: Open) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(open) },
        }
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
    C: Classify<Response<B>, BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                guard,
                classifier,
            } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                if let Some(mut guard) = guard.take() {
                    if result.as_ref().is_err_and(|err| is_caller_fault(&**err)) {
                        // The caller's own request failed (a malformed or
                        // stalled body): it says nothing of the callee's
                        // health, so the call is not counted at all (the
                        // guard frees its permit, as for a dropped call).
                        return Poll::Ready(result);
                    }
                    let class = classifier.classify(&result);
                    if let Some(delay) = result.as_ref().ok().and_then(retry_after) {
                        guard.breaker.open_for_retry_after(delay);
                    }
                    let permit = std::mem::replace(&mut guard.permit, Permit::finished());
                    guard.breaker.record(permit, class);
                    if let Some(late) = result
                        .as_ref()
                        .ok()
                        .and_then(|res| res.extensions().get::<LateOutcome>())
                    {
                        // A body that stalls or breaks after this head
                        // counts as one more failure.
                        let breaker = guard.breaker.clone();
                        late.listen(move |class| breaker.record(Permit::finished(), class));
                    }
                }
                Poll::Ready(result)
            }
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("future polled after completion")
                .into())),
        }
    }
}
