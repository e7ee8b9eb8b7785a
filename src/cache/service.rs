//! [`Cache`], the service: lookup, answer, revalidate, coalesce, store.

use super::{
    key, policy,
    store::{Entry, Store, StoreError, Stored},
    Shared,
};
use crate::{
    body::{collect, Buffered, CollectError, ReplayBody},
    BoxError,
};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_cache_semantics::{AfterResponse, BeforeRequest};
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};
use tower::ServiceExt;
use tower_service::Service;

/// Answers from the cache when it can; see the [module docs](super).
pub struct Cache<S, St> {
    inner: S,
    shared: Arc<Shared<St>>,
}

impl<S: Clone, St> Clone for Cache<S, St> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, St> fmt::Debug for Cache<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, St> Cache<S, St> {
    pub(super) fn new(inner: S, shared: Arc<Shared<St>>) -> Self {
        Self { inner, shared }
    }

    define_inner_service_accessors!();
}

/// What a [`Cache`] answers with.
type Answer<B> = Result<Response<ReplayBody<B>>, BoxError>;

/// Response future of [`Cache`].
pub struct ResponseFuture<B> {
    inner: Pin<Box<dyn Future<Output = Answer<B>> + Send>>,
}

impl<B> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<B> Future for ResponseFuture<B> {
    type Output = Result<Response<ReplayBody<B>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<S, St, ReqB, ResB> Service<Request<ReqB>> for Cache<S, St>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + Unpin + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<ReplayBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The service made ready goes with the request; a clone stays.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            inner: Box::pin(serve(self.shared.clone(), inner, req)),
        }
    }
}

/// How a response was answered, for `x-cache`.
#[derive(Debug, Clone, Copy)]
enum How {
    Hit,
    Miss,
    Stale,
    Revalidated,
    Bypass,
}

impl How {
    fn as_str(self) -> &'static str {
        match self {
            How::Hit => "HIT",
            How::Miss => "MISS",
            How::Stale => "STALE",
            How::Revalidated => "REVALIDATED",
            How::Bypass => "BYPASS",
        }
    }
}

/// What a stored entry can do for a request.
enum Judgement {
    /// Answer from it.
    Fresh,
    /// Ask the upstream first, with these headers (the caller's, plus the
    /// entry's validators).
    Stale(HeaderMap),
    /// It is for another variant, or another method: as if absent.
    NoMatch,
}

async fn serve<S, St, ReqB, ResB>(
    shared: Arc<Shared<St>>,
    inner: S,
    req: Request<ReqB>,
) -> Result<Response<ReplayBody<ResB>>, BoxError>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    St: Store,
    ReqB: Send + 'static,
    ResB: Body + Send + Unpin + 'static,
    ResB::Error: Into<BoxError>,
{
    let method = req.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return bypass(&shared, inner, req).await;
    }
    let primary = key::primary(req.uri(), req.headers());
    let view = policy::as_get(&req);
    let found = lookup(&shared, &primary, req.headers()).await;
    let now = shared.now();
    let mut revalidate_with = None;
    if let Some(entry) = &found {
        match judge(entry, &view, now) {
            Judgement::Fresh => {
                shared.counters.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(answer(&shared, entry, &req, now, How::Hit));
            }
            Judgement::Stale(headers) => {
                if method == Method::GET
                    && may_serve_stale(entry, &view.headers, now, |e| e.stale_while_revalidate)
                {
                    // Answer stale now; refresh once, in the background.
                    shared.counters.stale.fetch_add(1, Ordering::Relaxed);
                    let res = answer(&shared, entry, &req, now, How::Stale);
                    if let Join::Leader(guard) = join(&shared, &primary) {
                        let shared = shared.clone();
                        let mut req = req;
                        *req.headers_mut() = headers;
                        tokio::spawn(async move {
                            let _guard = guard;
                            let _ = refresh(&shared, inner, req, view).await;
                        });
                    }
                    return Ok(res);
                }
                if method == Method::GET {
                    revalidate_with = Some(headers);
                }
            }
            Judgement::NoMatch => {}
        }
    }
    if policy::has_directive(req.headers(), "only-if-cached") {
        // RFC 9111 section 5.2.1.7: nothing stored that may be used.
        return Ok(message(
            &shared,
            StatusCode::GATEWAY_TIMEOUT,
            "no stored response (only-if-cached)",
        ));
    }
    if let (Some(entry), Some(headers)) = (found.clone(), revalidate_with) {
        return revalidate(&shared, inner, req, view, entry, headers).await;
    }

    // A miss. Concurrent misses for one key wait for one upstream call.
    let mut guard = None;
    if shared.config.coalesce && method == Method::GET {
        match join(&shared, &primary) {
            Join::Leader(g) => guard = Some(g),
            Join::Waiter(mut done) => {
                let _ = done.changed().await;
                shared.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                if let Some(entry) = lookup(&shared, &primary, req.headers()).await {
                    let now = shared.now();
                    if let Judgement::Fresh = judge(&entry, &view, now) {
                        shared.counters.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(answer(&shared, &entry, &req, now, How::Hit));
                    }
                }
                // The leader's answer was not stored (or not for this
                // caller): go upstream alone.
            }
        }
    }
    shared.counters.misses.fetch_add(1, Ordering::Relaxed);
    let result = inner.oneshot(req).await.map_err(Into::into);
    let res = match upstream_failed(&shared, found.as_ref(), &view.headers, result) {
        Outcome::Stale(entry) => {
            shared.counters.stale.fetch_add(1, Ordering::Relaxed);
            let now = shared.now();
            return Ok(answer_parts(
                &shared,
                &entry,
                &method,
                &view.headers,
                now,
                How::Stale,
            ));
        }
        Outcome::Upstream(result) => result?,
    };
    let res = keep(&shared, &view, res, &method).await;
    drop(guard);
    res
}

/// Whether a stale `entry` may be answered within its window `window`
/// (`stale-while-revalidate` or `stale-if-error`), as RFC 9111 section
/// 4.2.4 allows: never when the response or the request forbids stale
/// answers.
fn may_serve_stale(
    entry: &Entry,
    request: &HeaderMap,
    now: SystemTime,
    window: impl Fn(&Entry) -> Duration,
) -> bool {
    let forbids = |h: &HeaderMap, d: &str| policy::has_directive(h, d);
    if forbids(&entry.headers, "no-cache")
        || forbids(&entry.headers, "must-revalidate")
        || forbids(&entry.headers, "proxy-revalidate")
        || forbids(&entry.headers, "s-maxage")
        || forbids(request, "no-cache")
    {
        return false;
    }
    let window = window(entry);
    // Not past its freshness: the request's own directives (max-age,
    // min-fresh) are what ruled it out, and they rule out a stale answer.
    let Ok(stale_for) = now.duration_since(entry.fresh_until) else {
        return false;
    };
    !window.is_zero() && stale_for <= window
}

/// What the upstream's answer leaves to do.
enum Outcome<R> {
    /// Answer this stored entry, stale, instead (`stale-if-error`).
    Stale(Arc<Entry>),
    /// Pass the upstream's result on.
    Upstream(R),
}

/// The upstream failed (an error, or a 5xx), and `entry` may stand in for
/// it within its `stale-if-error` window.
fn upstream_failed<St, B>(
    shared: &Shared<St>,
    entry: Option<&Arc<Entry>>,
    request: &HeaderMap,
    result: Result<Response<B>, BoxError>,
) -> Outcome<Result<Response<B>, BoxError>> {
    let failed = match &result {
        Ok(res) => res.status().is_server_error(),
        // An open breaker, a timeout, a refused connection; not the
        // caller's own fault.
        Err(err) => crate::error::status_for(&**err).0.is_server_error(),
    };
    match entry {
        Some(entry)
            if failed && may_serve_stale(entry, request, shared.now(), |e| e.stale_if_error) =>
        {
            tracing::debug!("answering stale: the upstream failed (stale-if-error)");
            Outcome::Stale(entry.clone())
        }
        _ => Outcome::Upstream(result),
    }
}

/// A stale entry's revalidation: the caller's request with the entry's
/// validators. A 304 refreshes the entry and answers from it.
async fn revalidate<S, St, ReqB, ResB>(
    shared: &Arc<Shared<St>>,
    inner: S,
    mut req: Request<ReqB>,
    view: http::request::Parts,
    entry: Arc<Entry>,
    headers: HeaderMap,
) -> Result<Response<ReplayBody<ResB>>, BoxError>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    St: Store,
    ResB: Body + Unpin,
    ResB::Error: Into<BoxError>,
{
    let method = req.method().clone();
    *req.headers_mut() = headers;
    shared.counters.misses.fetch_add(1, Ordering::Relaxed);
    let result = inner.oneshot(req).await.map_err(Into::into);
    let res = match upstream_failed(shared, Some(&entry), &view.headers, result) {
        Outcome::Stale(entry) => {
            shared.counters.stale.fetch_add(1, Ordering::Relaxed);
            let now = shared.now();
            return Ok(answer_parts(
                shared,
                &entry,
                &method,
                &view.headers,
                now,
                How::Stale,
            ));
        }
        Outcome::Upstream(result) => result?,
    };
    if res.status() == StatusCode::NOT_MODIFIED {
        let (parts, _) = res.into_parts();
        if let Some(refreshed) = refreshed(shared, &view, &entry, &parts).await {
            shared.counters.misses.fetch_sub(1, Ordering::Relaxed);
            shared
                .counters
                .revalidations
                .fetch_add(1, Ordering::Relaxed);
            let now = shared.now();
            return Ok(answer_parts(
                shared,
                &refreshed,
                &method,
                &view.headers,
                now,
                How::Revalidated,
            ));
        }
        // A 304 that is not for this entry: passed on as it is.
        return Ok(mark(
            shared,
            Response::from_parts(parts, ReplayBody::empty()),
            How::Miss,
        ));
    }
    keep(shared, &view, res, &method).await
}

/// The entry a 304 confirms, its stored headers updated with the 304's
/// (RFC 9111 section 4.3.4), stored again; `None` when the 304 is not for
/// this entry.
async fn refreshed<St: Store>(
    shared: &Shared<St>,
    view: &http::request::Parts,
    entry: &Entry,
    res: &http::response::Parts,
) -> Option<Entry> {
    let now = shared.now();
    if let AfterResponse::Modified(..) = entry.policy.after_response(view, res, now) {
        return None;
    }
    let mut headers = entry.headers.clone();
    for name in res.headers.keys() {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        headers.remove(name);
        for value in res.headers.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let mut stored = Response::new(()).into_parts().0;
    stored.status = entry.status;
    stored.headers = headers;
    let body = entry.body.clone();
    let entry = build_entry(shared, view, stored, body, now).ok()?;
    put(shared, view, entry.clone()).await;
    Some(entry)
}

/// The background refresh of `stale-while-revalidate`.
async fn refresh<S, St, ReqB, ResB>(
    shared: &Shared<St>,
    inner: S,
    req: Request<ReqB>,
    view: http::request::Parts,
) -> Result<(), BoxError>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    St: Store,
    ResB: Body + Unpin,
    ResB::Error: Into<BoxError>,
{
    let res = inner.oneshot(req).await.map_err(Into::into)?;
    if res.status() == StatusCode::NOT_MODIFIED {
        let (parts, _) = res.into_parts();
        let primary = key::primary(&view.uri, &view.headers);
        if let Some(entry) = lookup(shared, &primary, &view.headers).await {
            if refreshed(shared, &view, &entry, &parts).await.is_some() {
                shared
                    .counters
                    .revalidations
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        return Ok(());
    }
    let res = keep(shared, &view, res, &Method::GET).await?;
    // Read what was not stored, so the connection is reused.
    let _ = drain(res.into_body()).await;
    Ok(())
}

/// Reads a body to its end, dropping it.
async fn drain<B: Body + Unpin>(mut body: B) {
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        if frame.is_err() {
            return;
        }
    }
}

/// A response from the upstream to a GET: stored when it may be (its body
/// read within `max_entry_bytes`), and answered either way.
async fn keep<St: Store, B>(
    shared: &Shared<St>,
    view: &http::request::Parts,
    res: Response<B>,
    method: &Method,
) -> Result<Response<ReplayBody<B>>, BoxError>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    if method != Method::GET {
        return Ok(mark(shared, res.map(ReplayBody::passthrough), How::Miss));
    }
    let now = shared.now();
    let (parts, body) = res.into_parts();
    let storable = policy::policy(&shared.config, view, parts.status, &parts.headers, now)
        .is_storable()
        && key::vary_names(&parts.headers).is_some();
    if !storable {
        tracing::debug!(uri = %view.uri, status = %parts.status, "not stored: the response may not be cached");
        return Ok(mark(
            shared,
            Response::from_parts(parts, ReplayBody::passthrough(body)),
            How::Miss,
        ));
    }
    let body = match collect(body, shared.config.max_entry_bytes).await {
        Ok(body) => body,
        Err(CollectError::TooLarge(body)) => {
            tracing::debug!(uri = %view.uri, limit = shared.config.max_entry_bytes, "not stored: the body is larger than max_entry_bytes");
            return Ok(mark(shared, Response::from_parts(parts, body), How::Miss));
        }
        Err(CollectError::Body(err)) => return Err(err.into()),
    };
    let answer = Response::from_parts(parts.clone(), ReplayBody::from_buffered(body.clone()));
    if let Ok(entry) = build_entry(shared, view, parts, body, now) {
        put(shared, view, entry).await;
    }
    Ok(mark(shared, answer, How::Miss))
}

/// Stores a response to the GET `view`, as if it came from the upstream:
/// `Ok(false)` when it may not be stored.
pub(super) async fn store_response<St: Store>(
    shared: &Shared<St>,
    view: &http::request::Parts,
    parts: http::response::Parts,
    body: Arc<Buffered>,
) -> Result<bool, StoreError> {
    let now = shared.now();
    let storable = policy::policy(&shared.config, view, parts.status, &parts.headers, now)
        .is_storable()
        && key::vary_names(&parts.headers).is_some();
    if !storable {
        return Ok(false);
    }
    match build_entry(shared, view, parts, body, now) {
        Ok(entry) => {
            put_checked(shared, view, entry).await?;
            Ok(true)
        }
        Err(()) => Ok(false),
    }
}

/// The entry for a response, with its freshness capped by `max_ttl` and
/// its stale windows; `Err` when it would be of no use (stale at once,
/// with no stale window and nothing to revalidate with).
fn build_entry<St>(
    shared: &Shared<St>,
    view: &http::request::Parts,
    mut parts: http::response::Parts,
    body: Arc<Buffered>,
    now: SystemTime,
) -> Result<Entry, ()> {
    let config = &shared.config;
    strip_hop_by_hop(&mut parts.headers);
    let policy = policy::policy(config, view, parts.status, &parts.headers, now);
    let mut ttl = policy.time_to_live(now);
    if let Some(max) = config.max_ttl {
        ttl = ttl.min(max);
    }
    let (swr, sie) = policy::stale_windows(config, &parts.headers);
    let validators = parts.headers.contains_key(header::ETAG)
        || parts.headers.contains_key(header::LAST_MODIFIED);
    let kept = ttl
        + swr.max(sie).max(if validators {
            config.max_stale
        } else {
            Duration::ZERO
        });
    if kept.is_zero() {
        tracing::debug!(uri = %view.uri, "not stored: stale at once, and nothing to revalidate it with");
        return Err(());
    }
    Ok(Entry {
        status: parts.status,
        headers: parts.headers,
        body,
        policy,
        fresh_until: now + ttl,
        stale_while_revalidate: swr,
        stale_if_error: sie,
    })
}

/// How long the store keeps `entry`: fresh, then its stale windows, or
/// (with validators) `max_stale` for a revalidation.
fn kept_for<St>(shared: &Shared<St>, entry: &Entry) -> Duration {
    let now = shared.now();
    let fresh = entry
        .fresh_until
        .duration_since(now)
        .unwrap_or(Duration::ZERO);
    let validators = entry.headers.contains_key(header::ETAG)
        || entry.headers.contains_key(header::LAST_MODIFIED);
    let stale = entry
        .stale_while_revalidate
        .max(entry.stale_if_error)
        .max(if validators {
            shared.config.max_stale
        } else {
            Duration::ZERO
        });
    fresh + stale
}

/// Stores `entry` for `view`; a store that fails is counted and logged.
async fn put<St: Store>(shared: &Shared<St>, view: &http::request::Parts, entry: Entry) {
    if let Err(err) = put_checked(shared, view, entry).await {
        store_failed(shared, &err);
    }
}

async fn put_checked<St: Store>(
    shared: &Shared<St>,
    view: &http::request::Parts,
    entry: Entry,
) -> Result<(), StoreError> {
    let primary = key::primary(&view.uri, &view.headers);
    let ttl = kept_for(shared, &entry);
    let names = key::vary_names(&entry.headers).unwrap_or_default();
    if names.is_empty() {
        return shared
            .store
            .put(primary, Stored::Response(Arc::new(entry)), ttl)
            .await;
    }
    let variant = key::variant(&primary, &names, &view.headers);
    shared
        .store
        .put(primary, Stored::Vary(names.into()), ttl)
        .await?;
    shared
        .store
        .put(variant, Stored::Response(Arc::new(entry)), ttl)
        .await
}

/// The entry a request would be answered from, if any; a store that fails
/// counts as empty.
async fn lookup<St: Store>(
    shared: &Shared<St>,
    primary: &str,
    headers: &HeaderMap,
) -> Option<Arc<Entry>> {
    let found = match shared.store.get(primary).await {
        Ok(found) => {
            store_answered(shared);
            found
        }
        Err(err) => {
            store_failed(shared, &err);
            return None;
        }
    };
    match found? {
        Stored::Response(entry) => Some(entry),
        Stored::Vary(names) => match shared
            .store
            .get(&key::variant(primary, &names, headers))
            .await
        {
            Ok(Some(Stored::Response(entry))) => Some(entry),
            Ok(_) => None,
            Err(err) => {
                store_failed(shared, &err);
                None
            }
        },
    }
}

/// The store answered: it is up (again).
fn store_answered<St>(shared: &Shared<St>) {
    if !shared.store_ok.load(Ordering::Relaxed) {
        shared.store_ok.store(true, Ordering::Relaxed);
        tracing::info!("the cache's store answers again");
    }
}

fn store_failed<St>(shared: &Shared<St>, err: &StoreError) {
    shared.store_ok.store(false, Ordering::Relaxed);
    shared.counters.store_errors.fetch_add(1, Ordering::Relaxed);
    let mut last = shared
        .last_store_log
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
        *last = Some(tokio::time::Instant::now());
        tracing::warn!(error = %err, "the cache steps aside: its store failed");
    }
}

/// What `entry` can do for the request `view` at `now`.
fn judge(entry: &Entry, view: &http::request::Parts, now: SystemTime) -> Judgement {
    match entry.policy.before_request(view, now) {
        // `max_ttl` caps what the response said, unless the caller takes
        // stale answers that old (`max-stale`, which the crate checked
        // against the response's own freshness).
        BeforeRequest::Fresh(_) if now < entry.fresh_until || takes_stale(view, entry, now) => {
            Judgement::Fresh
        }
        BeforeRequest::Fresh(_) => {
            let mut headers = view.headers.clone();
            add_validators(&mut headers, &entry.headers);
            Judgement::Stale(headers)
        }
        BeforeRequest::Stale {
            request,
            matches: true,
        } => {
            tracing::debug!(uri = %view.uri, "not served from the cache: stale, or the request asks to revalidate");
            Judgement::Stale(request.headers)
        }
        BeforeRequest::Stale { matches: false, .. } => {
            tracing::debug!(uri = %view.uri, "not served from the cache: the stored response is for other request headers (Vary)");
            Judgement::NoMatch
        }
    }
}

/// Whether the request's `max-stale` covers how stale `entry` is.
fn takes_stale(view: &http::request::Parts, entry: &Entry, now: SystemTime) -> bool {
    if !policy::has_directive(&view.headers, "max-stale") {
        return false;
    }
    let stale_for = now.duration_since(entry.fresh_until).unwrap_or_default();
    policy::directive(&view.headers, "max-stale")
        .is_none_or(|max| stale_for <= Duration::from_secs(max))
}

fn add_validators(req: &mut HeaderMap, stored: &HeaderMap) {
    if let Some(etag) = stored.get(header::ETAG) {
        req.insert(header::IF_NONE_MATCH, etag.clone());
    } else if let Some(modified) = stored.get(header::LAST_MODIFIED) {
        req.insert(header::IF_MODIFIED_SINCE, modified.clone());
    }
}

/// A non-GET/HEAD request goes straight upstream; a non-error answer to an
/// unsafe method removes the stored entries of its target, and of its
/// `Location` and `Content-Location` on the same origin (RFC 9111 section
/// 4.4).
async fn bypass<S, St, ReqB, ResB>(
    shared: &Arc<Shared<St>>,
    inner: S,
    req: Request<ReqB>,
) -> Result<Response<ReplayBody<ResB>>, BoxError>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    St: Store,
{
    let safe = matches!(*req.method(), Method::OPTIONS | Method::TRACE);
    let target = key::primary(req.uri(), req.headers());
    let res = inner.oneshot(req).await.map_err(Into::into)?;
    if !safe && (res.status().is_success() || res.status().is_redirection()) {
        let mut uris = vec![target.clone()];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(uri) = res
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| same_origin(&target, v))
            {
                uris.push(uri);
            }
        }
        for uri in uris {
            let gone = async {
                shared.store.delete(&uri).await?;
                shared.store.delete_prefix(&super::exact(&uri)).await
            };
            if let Err(err) = gone.await {
                store_failed(shared, &err);
            }
        }
    }
    Ok(mark(shared, res.map(ReplayBody::passthrough), How::Bypass))
}

/// `reference` resolved against `target`'s origin, if it is on it.
fn same_origin(target: &str, reference: &str) -> Option<String> {
    let origin_end = target
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| target[start..].find('/').map(|i| start + i))
        .unwrap_or(target.len());
    let origin = &target[..origin_end];
    if reference.starts_with('/') && !reference.starts_with("//") {
        return Some(format!("{origin}{reference}"));
    }
    let uri: http::Uri = reference.parse().ok()?;
    let (scheme, authority) = (uri.scheme_str()?, uri.authority()?);
    let absolute = key::primary(&uri, &HeaderMap::new());
    (format!("{}://{}", scheme, authority.as_str().to_ascii_lowercase()) == origin)
        .then_some(absolute)
}

/// The answer from `entry` to `req`.
fn answer<St, ReqB, B>(
    shared: &Shared<St>,
    entry: &Entry,
    req: &Request<ReqB>,
    now: SystemTime,
    how: How,
) -> Response<ReplayBody<B>> {
    answer_parts(shared, entry, req.method(), req.headers(), now, how)
}

fn answer_parts<St, B>(
    shared: &Shared<St>,
    entry: &Entry,
    method: &Method,
    request: &HeaderMap,
    now: SystemTime,
    how: How,
) -> Response<ReplayBody<B>> {
    let age = HeaderValue::from(entry.policy.age(now).as_secs());
    let mut res = if policy::not_modified(request, &entry.headers) {
        // The caller asked conditionally, and its validator matches.
        let mut res = Response::new(ReplayBody::empty());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        for name in policy::NOT_MODIFIED_HEADERS {
            for value in entry.headers.get_all(name) {
                res.headers_mut().append(name.clone(), value.clone());
            }
        }
        res
    } else {
        let body = if *method == Method::HEAD {
            ReplayBody::empty()
        } else {
            ReplayBody::from_buffered(entry.body.clone())
        };
        let mut res = Response::new(body);
        *res.status_mut() = entry.status;
        *res.headers_mut() = entry.headers.clone();
        res
    };
    res.headers_mut().insert(header::AGE, age);
    mark(shared, res, how)
}

/// A short answer of the cache's own.
fn message<St, B>(shared: &Shared<St>, status: StatusCode, text: &str) -> Response<ReplayBody<B>> {
    let mut res = Response::new(ReplayBody::from_buffered(Buffered::from_bytes(
        Bytes::from(format!("{text}\n")),
    )));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    mark(shared, res, How::Bypass)
}

fn mark<St, B>(shared: &Shared<St>, mut res: Response<B>, how: How) -> Response<B> {
    if shared.config.x_cache_header {
        res.headers_mut()
            .insert("x-cache", HeaderValue::from_static(how.as_str()));
    }
    res
}

/// Headers that belong to one connection, never to a stored response.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// One upstream call per key at a time.
enum Join<St: Store> {
    Leader(FlightGuard<St>),
    Waiter(tokio::sync::watch::Receiver<()>),
}

/// The leader's place: when it is dropped (the call ended, failed, or was
/// cancelled) the waiters wake.
struct FlightGuard<St: Store> {
    shared: Arc<Shared<St>>,
    key: String,
    _done: tokio::sync::watch::Sender<()>,
}

impl<St: Store> Drop for FlightGuard<St> {
    fn drop(&mut self) {
        let mut flights = self
            .shared
            .flights
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if flights
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self._done.subscribe()))
        {
            flights.remove(&self.key);
        }
    }
}

fn join<St: Store>(shared: &Arc<Shared<St>>, key: &str) -> Join<St> {
    let mut flights = shared.flights.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rx) = flights.get(key) {
        // A leader whose guard is gone has closed its channel.
        if rx.has_changed().is_ok() {
            return Join::Waiter(rx.clone());
        }
    }
    let (tx, rx) = tokio::sync::watch::channel(());
    flights.insert(key.to_owned(), rx);
    Join::Leader(FlightGuard {
        shared: shared.clone(),
        key: key.to_owned(),
        _done: tx,
    })
}
