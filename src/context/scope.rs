//! The current context: in scope while a request's future is polled, and
//! carried into spawned tasks.

use super::Context;
use std::{cell::Cell, fmt, future::Future, pin::Pin, task::Poll};

thread_local! {
    /// The context of the request whose future this thread is polling.
    /// Set only for the length of a `poll` (or a service's `call`), by
    /// swapping a context in and back out: no reference count moves, which
    /// tokio's `task_local!` (`sync_scope` takes the value each time) would
    /// cost twice per request.
    static CURRENT: Cell<Option<Context>> = const { Cell::new(None) };
}

/// Runs `f` with `slot`'s context as the [`current`] one: swaps it in, and
/// back out when `f` returns or unwinds, so that `slot` holds it again and
/// the outer context, if any, is restored.
pub(super) fn with_scope<R>(slot: &mut Option<Context>, f: impl FnOnce() -> R) -> R {
    struct Restore<'a>(&'a mut Option<Context>);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            swap_current(self.0);
        }
    }
    swap_current(slot);
    let _restore = Restore(slot);
    f()
}

fn swap_current(slot: &mut Option<Context>) {
    // `try_with`: during thread teardown there is nothing to swap with.
    let _ = CURRENT.try_with(|current| *slot = current.replace(slot.take()));
}

/// The context of the request being handled, inside the server layer's
/// scope (or one made with [`scope`], [`in_current`] or [`spawn`]).
pub fn current() -> Option<Context> {
    CURRENT
        .try_with(|current| {
            let cx = current.take();
            let copy = cx.clone();
            current.set(cx);
            copy
        })
        .ok()
        .flatten()
}

/// Runs `fut` with `cx` as the [`current`] context, wherever it is polled
/// (and while it is dropped).
///
/// ```
/// use tower_shield::context::{self, Context};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cx = Context::new_root();
/// let id = context::scope(cx.clone(), async {
///     context::current().map(|cx| cx.trace_id())
/// })
/// .await;
/// assert_eq!(id, Some(cx.trace_id()));
/// assert!(context::current().is_none());
/// # }
/// ```
pub fn scope<F: Future>(cx: Context, fut: F) -> Scoped<F> {
    Scoped {
        cx: Some(cx),
        fut: Some(fut),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`scope`]: `fut` with a context in scope.
    pub struct Scoped<F> {
        cx: Option<Context>,
        #[pin]
        fut: Option<F>,
    }

    impl<F> PinnedDrop for Scoped<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            // The future's own destructors see the context too.
            if this.fut.as_mut().as_pin_mut().is_some() {
                with_scope(this.cx, || this.fut.set(None));
            }
        }
    }
}

impl<F> fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("cx", &self.cx)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, task: &mut std::task::Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut fut = this.fut;
        let out = with_scope(this.cx, || match fut.as_mut().as_pin_mut() {
            Some(fut) => fut.poll(task),
            None => Poll::Pending,
        });
        if out.is_ready() {
            // Dropped now, inside the scope, rather than after.
            with_scope(this.cx, || fut.set(None));
        }
        out
    }
}

/// Wraps `fut` so that it runs with the current context and inside the
/// current `tracing` span, wherever it is polled. Without a current context
/// the future is left as it is (apart from the span).
pub fn in_current<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    use tracing::Instrument;
    let span = tracing::Span::current();
    let cx = current();
    async move {
        match cx {
            Some(cx) => scope(cx, fut).instrument(span).await,
            None => fut.instrument(span).await,
        }
    }
}

/// `tokio::spawn` that carries the current context and span into the new
/// task, so client calls made there continue the request's trace.
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(in_current(fut))
}
