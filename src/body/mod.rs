//! Bounded buffering of bodies, so a request can be replayed and a response
//! cached without ever holding an unbounded body in memory.
//!
//! [`ReplayBody::buffer`] reads a body until it ends or a byte limit is
//! passed:
//!
//! - a body that ends within the limit is kept as shared [`Bytes`] chunks
//!   (trailers included) and can be cloned any number of times with
//!   [`ReplayBody::try_clone`], each clone replaying it byte for byte;
//! - a body whose declared length is over the limit is not read at all, and
//!   a body of unknown length that outgrows the limit stops being read the
//!   moment it does. Either way the result streams the bytes already read
//!   followed by the rest of the original body, and is not replayable.
//!
//! No byte is lost in either case. [`collect`] is the same rule for a
//! response cache: it returns the whole body when it fits, and the untouched
//! stream when it does not.
//!
//! # The caller's failures
//!
//! A request whose body is malformed, cut short or slower than the deadline
//! fails, but not because the service it was sent to is unhealthy. Counted
//! as that service's failure, five such requests from one client would open
//! a circuit breaker for every client. So the body of a request is wrapped
//! where it enters ([`CallerBodyLayer`]): its errors become a
//! [`Fault`](crate::error::Fault) with status 400, and it records whether it is waiting for the
//! caller's bytes. A timeout that passes while it is
//! ([`CallerTimeoutLayer`], just outside the timeout) becomes a 408 fault.
//! A fault with a 4xx status is the caller's own
//! ([`Fault::is_caller_fault`](crate::error::Fault::is_caller_fault)): the circuit breaker does not count it,
//! the retry layer does not retry it, and
//! [`error_response`](crate::error::error_response) answers with its status.
//!
//! The stacks place both layers; the sidecar wraps every request body where
//! it arrives.
//!
//! # A response body that stalls
//!
//! A timeout around a call ends when the response head arrives; an upstream
//! that sends a head and then stalls would hold the caller forever.
//! [`IdleTimeoutLayer`] wraps each response body in an [`IdleBody`]: when
//! no frame arrives for the timeout, the body fails with a 504
//! [`Fault`](crate::error::Fault), the inner body is dropped (which ends its connection), and a
//! circuit breaker outside counts the call as a failure (through the
//! [`LateOutcome`](crate::classify::LateOutcome) in the response's extensions). A body that fails on its
//! own is reported the same way.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower_shield::body::ReplayBody;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let body = ReplayBody::buffer(Full::new(Bytes::from("hello")), 64 * 1024)
//!     .await
//!     .unwrap();
//! let again = body.try_clone().expect("fits in the limit");
//! assert_eq!(body.collect().await.unwrap().to_bytes(), "hello");
//! assert_eq!(again.collect().await.unwrap().to_bytes(), "hello");
//! # }
//! ```

mod caller;
mod idle;

pub use caller::{
    BodyProgress, CallerBody, CallerBodyLayer, CallerBodyService, CallerTimeout,
    CallerTimeoutFuture, CallerTimeoutLayer,
};
pub use idle::{IdleBody, IdleTimeout, IdleTimeoutFuture, IdleTimeoutLayer};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
};

/// A whole body held in memory: its data chunks, as they arrived, and its
/// trailers.
#[derive(Debug, Default)]
pub struct Buffered {
    chunks: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    len: u64,
    // What it holds of a `ReplayBudget`, given back when it is dropped.
    held: Option<Held>,
}

impl Clone for Buffered {
    /// A copy shares the chunks (reference counts) and holds nothing of
    /// the original's [`ReplayBudget`].
    fn clone(&self) -> Self {
        Self {
            chunks: self.chunks.clone(),
            trailers: self.trailers.clone(),
            len: self.len,
            held: None,
        }
    }
}

/// A limit on the bytes that all the bodies read ahead under it hold at
/// once ([`Buffer::within`]); clones share it. A read-ahead that would pass
/// the limit stops there, and its body streams on unreplayable, as one over
/// its own limit does.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower_shield::body::{ReplayBody, ReplayBudget};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let budget = ReplayBudget::new(8);
/// let first = ReplayBody::buffer(Full::new(Bytes::from("12345")), 64)
///     .within(&budget)
///     .await
///     .unwrap();
/// assert!(first.is_replayable());
/// assert_eq!(budget.held(), 5);
/// let second = ReplayBody::buffer(Full::new(Bytes::from("67890")), 64)
///     .within(&budget)
///     .await
///     .unwrap();
/// assert!(!second.is_replayable());
/// drop(first);
/// assert_eq!(budget.held(), 0);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ReplayBudget {
    shared: Arc<BudgetShared>,
}

#[derive(Debug)]
struct BudgetShared {
    limit: u64,
    held: AtomicU64,
}

impl ReplayBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            shared: Arc::new(BudgetShared {
                limit: limit as u64,
                held: AtomicU64::new(0),
            }),
        }
    }

    /// The bytes held under it now.
    pub fn held(&self) -> u64 {
        self.shared.held.load(Ordering::Relaxed)
    }

    /// The limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.shared.limit
    }

    fn try_take(&self, bytes: u64) -> bool {
        let limit = self.shared.limit;
        self.shared
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes).filter(|&total| total <= limit)
            })
            .is_ok()
    }
}

/// Bytes held under a [`ReplayBudget`], given back when dropped.
#[derive(Debug)]
struct Held {
    budget: ReplayBudget,
    bytes: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget
            .shared
            .held
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Buffered {
    /// A body of one chunk and no trailers.
    pub fn from_bytes(data: Bytes) -> Self {
        let len = data.len() as u64;
        let chunks = if data.is_empty() {
            Vec::new()
        } else {
            vec![data]
        };
        Self {
            chunks,
            trailers: None,
            len,
            held: None,
        }
    }

    /// Adds trailers.
    pub fn with_trailers(mut self, trailers: HeaderMap) -> Self {
        self.trailers = Some(trailers);
        self
    }

    /// The number of data bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// `true` when the body has no data bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The data chunks in order.
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// The trailers, if the body had any.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_ref()
    }

    /// All data bytes as one buffer (no copy when there is one chunk).
    pub fn to_bytes(&self) -> Bytes {
        match self.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut out = Vec::with_capacity(self.len as usize);
                for chunk in many {
                    out.extend_from_slice(chunk);
                }
                Bytes::from(out)
            }
        }
    }
}

pin_project! {
    /// A body that was read up to a limit: replayable when it fit, a
    /// pass-through stream when it did not. See the [module docs](self).
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Empty,
        Replay {
            body: Arc<Buffered>,
            next: u32,
            trailers_sent: bool,
        },
        Stream {
            // Boxed and absent when empty: it is only there after a
            // read-ahead that outgrew its limit, and keeps the body small.
            prefix: Option<Box<VecDeque<Frame<Bytes>>>>,
            #[pin]
            rest: B,
            done: bool,
        },
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Empty => f
                .debug_struct("ReplayBody")
                .field("replayable", &true)
                .field("len", &0)
                .finish(),
            Kind::Replay { body, .. } => f
                .debug_struct("ReplayBody")
                .field("replayable", &true)
                .field("len", &body.len)
                .finish(),
            Kind::Stream { prefix, .. } => f
                .debug_struct("ReplayBody")
                .field("replayable", &false)
                .field("prefix_frames", &prefix.as_ref().map_or(0, |p| p.len()))
                .finish(),
        }
    }
}

impl<B> ReplayBody<B>
where
    B: Body + Unpin,
{
    /// Reads `body` until it ends or more than `limit` data bytes have been
    /// read. See the [module docs](self) for what comes back.
    ///
    /// The body must be `Unpin` (hyper's, axum's and reqwest's bodies are);
    /// pin others with `Box::pin`. An error from the body while reading is
    /// returned as is: the body is broken and cannot be sent whole. A body
    /// that is already at its end is not polled and costs no allocation.
    pub fn buffer(body: B, limit: usize) -> Buffer<B> {
        Buffer {
            body: Some(body),
            read: Buffered::default(),
            limit: limit as u64,
            budget: None,
        }
    }
}

/// The future of [`ReplayBody::buffer`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Buffer<B> {
    body: Option<B>,
    read: Buffered,
    limit: u64,
    budget: Option<ReplayBudget>,
}

impl<B> Buffer<B> {
    /// Holds what is read under `budget` too: a body that would take it
    /// past its limit is not kept, and streams on unreplayable.
    pub fn within(mut self, budget: &ReplayBudget) -> Self {
        self.budget = Some(budget.clone());
        self
    }
}

impl<B: Body + Unpin> Future for Buffer<B> {
    type Output = Result<ReplayBody<B>, B::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let body = this.body.as_mut().expect("Buffer polled after completion");
        if body.size_hint().lower() > this.limit {
            let body = this.body.take().expect("checked above");
            return Poll::Ready(Ok(ReplayBody::stream(VecDeque::new(), body)));
        }
        if this.read.len == 0 && this.read.trailers.is_none() && body.is_end_stream() {
            this.body = None;
            return Poll::Ready(Ok(ReplayBody::empty()));
        }
        loop {
            let body = this.body.as_mut().expect("checked above");
            let frame = match ready!(Pin::new(body).poll_frame(cx)) {
                None => {
                    this.body = None;
                    let read = std::mem::take(&mut this.read);
                    return Poll::Ready(Ok(ReplayBody::replay(Arc::new(read))));
                }
                Some(Err(err)) => {
                    this.body = None;
                    return Poll::Ready(Err(err));
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(mut data) => {
                    let data = data.copy_to_bytes(data.remaining());
                    let n = data.len() as u64;
                    this.read.len += n;
                    if !data.is_empty() {
                        this.read.chunks.push(data);
                    }
                    let fits = this.read.len <= this.limit
                        && this.budget.as_ref().is_none_or(|budget| {
                            let taken = budget.try_take(n);
                            if taken {
                                this.read
                                    .held
                                    .get_or_insert_with(|| Held {
                                        budget: budget.clone(),
                                        bytes: 0,
                                    })
                                    .bytes += n;
                            }
                            taken
                        });
                    if !fits {
                        let read = std::mem::take(&mut this.read);
                        let prefix = read.chunks.into_iter().map(Frame::data).collect();
                        let body = this.body.take().expect("checked above");
                        return Poll::Ready(Ok(ReplayBody::stream(prefix, body)));
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        match &mut this.read.trailers {
                            Some(all) => all.extend(trailers),
                            None => this.read.trailers = Some(trailers),
                        }
                    }
                }
            }
        }
    }
}

impl<B> From<String> for ReplayBody<B> {
    /// A replayable body of the text: an error message, say.
    fn from(text: String) -> Self {
        Self::from_buffered(Buffered::from_bytes(Bytes::from(text)))
    }
}

impl<B> ReplayBody<B> {
    /// A replayable body holding `body`, for example a cached response.
    pub fn from_buffered(body: impl Into<Arc<Buffered>>) -> Self {
        Self::replay(body.into())
    }

    /// An empty replayable body; it and its clones cost nothing.
    pub fn empty() -> Self {
        Self { kind: Kind::Empty }
    }

    /// `true` for a replayable body of no bytes and no trailers.
    pub fn is_empty(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Replay { body, .. } => body.is_empty() && body.trailers.is_none(),
            Kind::Stream { .. } => false,
        }
    }

    /// A body that streams `body` as is, without buffering it. It is not
    /// replayable.
    pub fn passthrough(body: B) -> Self {
        Self::stream(VecDeque::new(), body)
    }

    fn replay(body: Arc<Buffered>) -> Self {
        Self {
            kind: Kind::Replay {
                body,
                next: 0,
                trailers_sent: false,
            },
        }
    }

    fn stream(prefix: VecDeque<Frame<Bytes>>, rest: B) -> Self {
        Self {
            kind: Kind::Stream {
                prefix: (!prefix.is_empty()).then(|| Box::new(prefix)),
                rest,
                done: false,
            },
        }
    }

    /// `true` when the whole body is held in memory and can be cloned.
    pub fn is_replayable(&self) -> bool {
        matches!(self.kind, Kind::Replay { .. } | Kind::Empty)
    }

    /// A fresh copy that replays the whole body from its start, or `None`
    /// when the body is streaming. Cloning costs one reference count.
    pub fn try_clone(&self) -> Option<Self> {
        match &self.kind {
            Kind::Empty => Some(Self::empty()),
            Kind::Replay { body, .. } => Some(Self::replay(body.clone())),
            Kind::Stream { .. } => None,
        }
    }

    /// The whole body, when it is held in memory.
    pub fn buffered(&self) -> Option<&Arc<Buffered>> {
        static EMPTY: std::sync::OnceLock<Arc<Buffered>> = std::sync::OnceLock::new();
        match &self.kind {
            Kind::Empty => Some(EMPTY.get_or_init(Default::default)),
            Kind::Replay { body, .. } => Some(body),
            Kind::Stream { .. } => None,
        }
    }
}

/// A body that can be sent again: what a layer that repeats a request
/// (once, on a 401, say) needs of it. `None` means this body cannot.
pub trait TryClone: Sized {
    /// A copy from the body's start, or `None`.
    fn try_clone(&self) -> Option<Self>;
}

impl<B> TryClone for ReplayBody<B> {
    fn try_clone(&self) -> Option<Self> {
        ReplayBody::try_clone(self)
    }
}

impl TryClone for String {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryClone for Bytes {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl TryClone for () {
    fn try_clone(&self) -> Option<Self> {
        Some(())
    }
}

impl<D: Clone> TryClone for http_body_util::Full<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> TryClone for http_body_util::Empty<D> {
    fn try_clone(&self) -> Option<Self> {
        Some(Self::new())
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Empty => Poll::Ready(None),
            KindProj::Replay {
                body,
                next,
                trailers_sent,
            } => {
                if let Some(chunk) = body.chunks.get(*next as usize) {
                    *next += 1;
                    return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
                }
                if !*trailers_sent {
                    *trailers_sent = true;
                    if let Some(trailers) = &body.trailers {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
                    }
                }
                Poll::Ready(None)
            }
            KindProj::Stream { prefix, rest, done } => {
                if let Some(frame) = prefix.as_mut().and_then(|p| p.pop_front()) {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if *done {
                    return Poll::Ready(None);
                }
                let frame = ready!(rest.poll_frame(cx));
                Poll::Ready(match frame {
                    None => {
                        *done = true;
                        None
                    }
                    Some(Ok(frame)) => {
                        Some(Ok(frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))))
                    }
                    Some(Err(err)) => Some(Err(err)),
                })
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Replay {
                body,
                next,
                trailers_sent,
            } => *next as usize >= body.chunks.len() && (*trailers_sent || body.trailers.is_none()),
            Kind::Stream { prefix, rest, done } => {
                prefix.as_ref().is_none_or(|p| p.is_empty()) && (*done || rest.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Replay { body, next, .. } => {
                let left: u64 = body.chunks[(*next as usize).min(body.chunks.len())..]
                    .iter()
                    .map(|c| c.len() as u64)
                    .sum();
                SizeHint::with_exact(left)
            }
            Kind::Stream { prefix, rest, done } => {
                let buffered: u64 = prefix
                    .iter()
                    .flat_map(|p| p.iter())
                    .filter_map(|f| f.data_ref())
                    .map(|d| d.len() as u64)
                    .sum();
                if *done {
                    return SizeHint::with_exact(buffered);
                }
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(buffered));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(buffered));
                }
                hint
            }
        }
    }
}

/// The error of [`collect`].
pub enum CollectError<B: Body> {
    /// The body is larger than the limit. It is returned unharmed: the bytes
    /// already read come first, then the rest of the stream.
    TooLarge(ReplayBody<B>),
    /// The body failed while it was being read.
    Body(B::Error),
}

impl<B: Body> fmt::Debug for CollectError<B>
where
    B::Error: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectError::TooLarge(body) => f.debug_tuple("TooLarge").field(body).finish(),
            CollectError::Body(err) => f.debug_tuple("Body").field(err).finish(),
        }
    }
}

/// Reads a whole body of at most `limit` bytes, for example a response to
/// be cached. A larger body comes back as [`CollectError::TooLarge`] holding
/// a stream of the same bytes, so the caller can still forward it.
pub async fn collect<B>(body: B, limit: usize) -> Result<Arc<Buffered>, CollectError<B>>
where
    B: Body + Unpin,
{
    let body = ReplayBody::buffer(body, limit)
        .await
        .map_err(CollectError::Body)?;
    match &body.kind {
        Kind::Empty | Kind::Replay { .. } => Ok(body.buffered().expect("replayable").clone()),
        Kind::Stream { .. } => Err(CollectError::TooLarge(body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::{BodyExt, StreamBody};
    use proptest::prelude::*;
    use std::convert::Infallible;

    type TestBody = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    fn body_of(chunks: &[Vec<u8>], trailers: Option<HeaderMap>) -> TestBody {
        let mut frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from(c.clone()))))
            .collect();
        if let Some(t) = trailers {
            frames.push(Ok(Frame::trailers(t)));
        }
        StreamBody::new(stream::iter(frames))
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn trailers() -> HeaderMap {
        let mut t = HeaderMap::new();
        t.insert("x-checksum", "abc".parse().unwrap());
        t
    }

    #[test]
    fn exact_length_over_limit_is_not_read() {
        run(async {
            let body = http_body_util::Full::new(Bytes::from(vec![7u8; 100]));
            let replay = ReplayBody::buffer(body, 10).await.unwrap();
            assert!(!replay.is_replayable());
            assert!(replay.try_clone().is_none());
            assert_eq!(replay.size_hint().exact(), Some(100));
            assert_eq!(replay.collect().await.unwrap().to_bytes().len(), 100);
        });
    }

    #[test]
    fn collect_keeps_an_oversized_body_whole() {
        run(async {
            let chunks = vec![vec![1u8; 5], vec![2u8; 5], vec![3u8; 5]];
            let Err(CollectError::TooLarge(body)) = collect(body_of(&chunks, None), 7).await else {
                panic!("expected TooLarge");
            };
            assert_eq!(body.collect().await.unwrap().to_bytes(), chunks.concat());
            let whole = collect(body_of(&chunks, Some(trailers())), 15)
                .await
                .unwrap();
            assert_eq!(whole.to_bytes(), chunks.concat());
            assert_eq!(whole.trailers(), Some(&trailers()));
        });
    }

    #[test]
    fn errors_are_reported_not_swallowed() {
        run(async {
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(Bytes::from("ab"))),
                Err(std::io::Error::other("reset")),
            ];
            let body = StreamBody::new(stream::iter(frames));
            let err = ReplayBody::buffer(body, 1024).await.unwrap_err();
            assert_eq!(err.to_string(), "reset");
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any split of any body under any limit: the bytes and trailers that
        /// come out equal the ones that went in, the body is replayable
        /// exactly when it fits the limit, every replay is identical, and no
        /// more than one frame past the limit is ever read ahead.
        #[test]
        fn bytes_out_equal_bytes_in(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..16),
            limit in 0usize..600,
            with_trailers in any::<bool>(),
        ) {
            let total: usize = chunks.iter().map(Vec::len).sum();
            let expected_trailers = with_trailers.then(trailers);
            run(async {
                let body = body_of(&chunks, expected_trailers.clone());
                let replay = ReplayBody::buffer(body, limit).await.unwrap();
                prop_assert_eq!(replay.is_replayable(), total <= limit);
                if let Some(buffered) = replay.buffered() {
                    prop_assert!(buffered.len() as usize <= limit);
                }
                if let Kind::Stream { prefix, .. } = &replay.kind {
                    let held: usize = prefix.iter().flat_map(|p| p.iter()).filter_map(|f| f.data_ref()).map(Bytes::len).sum();
                    let biggest = chunks.iter().map(Vec::len).max().unwrap_or(0);
                    prop_assert!(held <= limit + biggest);
                }
                let copies: Vec<_> = (0..2).filter_map(|_| replay.try_clone()).collect();
                for body in copies.into_iter().chain(std::iter::once(replay)) {
                    let out = body.collect().await.unwrap();
                    prop_assert_eq!(out.trailers(), expected_trailers.as_ref());
                    let (got, want) = (out.to_bytes(), chunks.concat());
                    prop_assert_eq!(got.as_ref(), want.as_slice());
                }
                Ok(())
            })?;
        }
    }
}
