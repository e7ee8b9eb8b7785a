//! What a client connection may cost: how long it may take to send a
//! request head, how long it may sit idle between requests, and how many
//! connections may be open at once.
//!
//! hyper's HTTP/1 server has one timer for both waits (its
//! `header_read_timeout` also runs while a keep-alive connection is idle),
//! and the sidecar's two settings differ, so each connection has a
//! watchdog of its own instead, fed by its socket (bytes read) and its
//! service (requests in flight):
//!
//! - a new connection must send a whole request head within
//!   `header_read_timeout` of being accepted;
//! - between requests, a connection may sit idle for `idle_timeout`; once
//!   the first byte of its next request arrives, the head must be complete
//!   within `header_read_timeout` of it;
//! - while a request is in flight (from its head until its response body
//!   has been sent), neither applies: `[timeout]` bounds the exchange.
//!
//! A connection past its deadline is closed.

use pin_project_lite::pin_project;
use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Instant,
};

/// The waits a connection is allowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) header_read: Duration,
    pub(crate) idle: Duration,
}

/// No time recorded yet.
const NONE: u64 = u64::MAX;

/// One connection's state, shared by its socket, its service and its
/// watchdog. Times are nanoseconds since the connection was accepted.
#[derive(Debug)]
pub(crate) struct Watch {
    start: Instant,
    in_flight: AtomicUsize,
    /// When the last response was sent (`NONE`: none yet).
    idle_since: AtomicU64,
    /// When the first byte of the next request arrived (`NONE`: none yet).
    first_byte: AtomicU64,
}

impl Watch {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(NONE),
            first_byte: AtomicU64::new(NONE),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(NONE - 1)
    }

    fn at(&self, nanos: u64, after: Duration) -> Instant {
        self.start + Duration::from_nanos(nanos) + after
    }

    /// A request head arrived; its exchange is in flight.
    pub(crate) fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// The response was sent (or given up): the connection is idle again.
    pub(crate) fn response_done(&self) {
        if self.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.first_byte.store(NONE, Ordering::Relaxed);
            self.idle_since.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Bytes arrived from the client.
    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.first_byte.load(Ordering::Relaxed) == NONE
        {
            self.first_byte.store(self.now(), Ordering::Relaxed);
        }
    }

    /// When the connection must be closed, unless a request is in flight.
    pub(crate) fn deadline(&self, limits: Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let first_byte = self.first_byte.load(Ordering::Relaxed);
        let idle_since = self.idle_since.load(Ordering::Relaxed);
        Some(if first_byte != NONE {
            self.at(first_byte, limits.header_read)
        } else if idle_since == NONE {
            self.at(0, limits.header_read)
        } else {
            self.at(idle_since, limits.idle)
        })
    }
}

/// Serves `conn` until it ends, or until its [`Watch`] says it waited too
/// long for its client: then drops it, which closes the socket, and
/// returns `None`.
pub(crate) async fn watched<F: Future>(
    conn: F,
    watch: &Watch,
    limits: Limits,
) -> Option<F::Output> {
    tokio::pin!(conn);
    // While a request is in flight, look again this often.
    let every = limits.header_read.min(limits.idle);
    loop {
        let wake = watch
            .deadline(limits)
            .unwrap_or_else(|| Instant::now() + every);
        tokio::select! {
            biased;
            output = conn.as_mut() => return Some(output),
            () = tokio::time::sleep_until(wake) => {
                if watch.deadline(limits).is_some_and(|at| at <= Instant::now()) {
                    return None;
                }
            }
        }
    }
}

/// A client's socket that tells its [`Watch`] when bytes arrive.
#[derive(Debug)]
pub(crate) struct WatchedIo {
    pub(crate) io: TcpStream,
    pub(crate) watch: Arc<Watch>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            self.watch.bytes_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

pin_project! {
    /// A response body that tells its connection's [`Watch`] when it has
    /// been sent (hyper drops it then) or given up.
    pub(crate) struct Tracked<B> {
        #[pin]
        body: B,
        done: Option<Arc<Watch>>,
    }

    impl<B> PinnedDrop for Tracked<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(watch) = this.project().done.take() {
                watch.response_done();
            }
        }
    }
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, watch: Arc<Watch>) -> Self {
        Self {
            body,
            done: Some(watch),
        }
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The default `max_connections`: half the file-descriptor limit (each
/// client connection may hold an upstream connection too), less 64 for the
/// listener, the runtimes and the logs; at least 1.
pub(crate) fn default_max_connections() -> usize {
    let limit = open_file_limit().unwrap_or(1024);
    (limit.saturating_sub(64) / 2).max(1)
}

#[cfg(unix)]
fn open_file_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` through a pointer to a valid,
    // exclusively borrowed one, and reads nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY)
        .then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(not(unix))]
fn open_file_limit() -> Option<usize> {
    None
}

pin_project! {
    /// A response future that counts its request in flight on the
    /// connection's [`Watch`] until the response body has been sent.
    pub(crate) struct TrackedFuture<F> {
        #[pin]
        inner: F,
        watch: Option<Arc<Watch>>,
    }

    impl<F> PinnedDrop for TrackedFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its response: the request is over.
            if let Some(watch) = this.project().watch.take() {
                watch.response_done();
            }
        }
    }
}

impl<F> TrackedFuture<F> {
    pub(crate) fn new(inner: F, watch: Arc<Watch>) -> Self {
        watch.request_started();
        Self {
            inner,
            watch: Some(watch),
        }
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<Tracked<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let watch = this.watch.take().expect("polled after completion");
        Poll::Ready(match result {
            Ok(res) => Ok(res.map(|body| Tracked::new(body, watch))),
            Err(err) => {
                watch.response_done();
                Err(err)
            }
        })
    }
}
