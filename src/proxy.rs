//! A reverse-proxy layer: rewrites a server's request for an upstream and
//! the upstream's response for the caller.
//!
//! [`ReverseProxyLayer`] sits between a server and an HTTP client service
//! (hyper-util's client, or reqwest through the `reqwest` module). For each
//! request it
//!
//! - points the URI at the upstream (scheme and authority, with the
//!   upstream's path prefix in front of the request's path and query);
//! - drops the hop-by-hop headers of RFC 9110 section 7.6.1 (`Connection`
//!   and every header it names, `Proxy-Connection`, `Keep-Alive`, `TE`,
//!   `Transfer-Encoding`, `Upgrade`), and sets `Host` to the upstream's
//!   host (and port, unless it is the scheme's default);
//! - appends itself to `Via`, and the peer's address to `X-Forwarded-For`
//!   when the server put a [`ClientAddr`] in the request's extensions or
//!   gave it to the layer ([`ReverseProxyLayer::client_addr`]);
//! - streams the body through untouched;
//!
//! and does the same (hop-by-hop headers, `Via`) for the response. Client
//! errors become [`UpstreamError`], which [`crate::error::error_response`]
//! answers with 502 Bad Gateway.
//!
//! It is the core of the `sidecar` example.
//!
//! # Example
//!
//! ```
//! use http::{Request, Response};
//! use http_body_util::BodyExt;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_shield::proxy::ReverseProxyLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_shield::BoxError> {
//! // A stand-in for an HTTP client: echoes the URI it was asked to fetch.
//! let client = service_fn(|req: Request<String>| async move {
//!     Ok::<_, std::convert::Infallible>(Response::new(req.uri().to_string()))
//! });
//! let proxy = ServiceBuilder::new()
//!     .layer(ReverseProxyLayer::new("http://127.0.0.1:9000/api".parse()?)?)
//!     .service(client);
//! let res = proxy
//!     .oneshot(Request::get("/users?id=7").header("connection", "close").body(String::new())?)
//!     .await?;
//! assert_eq!(res.headers()["via"], "1.1 tower-shield");
//! let body = res.into_body().collect().await?.to_bytes();
//! assert_eq!(body, "http://127.0.0.1:9000/api/users?id=7");
//! # Ok(())
//! # }
//! ```

use crate::{error::Fault, BoxError};
use bytes::Bytes;
use http::{
    header::{self, HeaderName},
    uri::{Authority, PathAndQuery, Scheme},
    HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version,
};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    error::Error as StdError,
    fmt,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};
use tower_layer::Layer;
use tower_service::Service;

/// The peer address of a server connection. A server that puts it in the
/// request's extensions gets it appended to `X-Forwarded-For`.
///
/// Build it once per connection and clone it into each request: the header
/// value is formatted once, in [`ClientAddr::new`]. A server that builds its
/// stack per connection can give it to the layer instead
/// ([`ReverseProxyLayer::client_addr`]), which spares each request the
/// extension map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr {
    addr: SocketAddr,
    header: HeaderValue,
}

impl ClientAddr {
    /// The peer at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let header =
            HeaderValue::try_from(addr.ip().to_string()).expect("an IP address is a valid value");
        Self { addr, header }
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The upstream URI given to [`ReverseProxyLayer::new`] is not usable.
#[derive(Debug)]
pub struct InvalidUpstream(&'static str);

impl fmt::Display for InvalidUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid upstream URI: {}", self.0)
    }
}

impl StdError for InvalidUpstream {}

/// `url` fit to show or log: user information (`user:password@`) in its
/// authority is replaced by `***`, so that credentials in an upstream URL
/// never reach a health page or a log line. Anything that is not an
/// absolute URL with user information is returned as it is.
///
/// ```
/// use tower_shield::proxy::redacted;
///
/// assert_eq!(redacted("http://admin:s3cret@127.0.0.1:9000/api"), "http://***@127.0.0.1:9000/api");
/// assert_eq!(redacted("http://127.0.0.1:9000/a@b"), "http://127.0.0.1:9000/a@b");
/// ```
pub fn redacted(url: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.into();
    };
    let rest = &url[scheme_end..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_len].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &rest[at..]).into(),
        None => url.into(),
    }
}

/// The upstream could not be reached or broke off: the client's error is the
/// source. Answered with 502 Bad Gateway by [`crate::error::error_response`].
#[derive(Debug)]
pub struct UpstreamError {
    // A 502 whose source is the client's own error.
    fault: Fault,
}

impl UpstreamError {
    fn new(source: impl Into<BoxError>) -> Self {
        Self {
            fault: Fault::new(StatusCode::BAD_GATEWAY).with_source(source),
        }
    }

    /// The client's own error.
    pub fn inner(&self) -> &(dyn StdError + 'static) {
        self.fault.source().unwrap_or(&self.fault)
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad("upstream request failed")
    }
}

impl StdError for UpstreamError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.fault)
    }
}

#[derive(Debug, Clone)]
struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// The upstream's path with no trailing `/`; empty for the root.
    prefix: String,
    /// `Via` for HTTP/0.9, 1.0, 1.1, 2 and 3, built once.
    via: [HeaderValue; 5],
    /// `Host` for the upstream, built once.
    host: HeaderValue,
}

/// Applies [`ReverseProxy`]. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct ReverseProxyLayer {
    upstream: Arc<Upstream>,
    peer: Option<HeaderValue>,
}

impl ReverseProxyLayer {
    /// Proxies to `upstream`, an absolute `http` or `https` URI with an
    /// optional path prefix and no query.
    pub fn new(upstream: Uri) -> Result<Self, InvalidUpstream> {
        let scheme = upstream
            .scheme()
            .cloned()
            .ok_or(InvalidUpstream("it needs a scheme"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(InvalidUpstream("the scheme must be http or https"));
        }
        let authority = upstream
            .authority()
            .cloned()
            .ok_or(InvalidUpstream("it needs a host"))?;
        if upstream.query().is_some() {
            return Err(InvalidUpstream("it must not have a query"));
        }
        let prefix = upstream.path().trim_end_matches('/').to_owned();
        // As a client would set it from the URI: no user information, and
        // no port when it is the scheme's default.
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let host = HeaderValue::try_from(host)
            .map_err(|_| InvalidUpstream("its host is not a valid header value"))?;
        Ok(Self {
            upstream: Arc::new(Upstream {
                scheme,
                authority,
                prefix,
                via: via_values(&HeaderValue::from_static("tower-shield")),
                host,
            }),
            peer: None,
        })
    }

    /// The name this proxy gives itself in `Via` (default `tower-shield`).
    /// It must be a valid header value token; an invalid one is ignored.
    pub fn via_name(mut self, name: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(name) {
            Arc::make_mut(&mut self.upstream).via = via_values(&value);
        }
        self
    }

    /// The peer every request through this layer's services comes from,
    /// for a server that builds its stack once per connection (as the
    /// sidecar does): it goes into `X-Forwarded-For` without the [`ClientAddr`]
    /// request extension, whose map costs an allocation on every request.
    /// A `ClientAddr` in a request's extensions still comes first.
    ///
    /// ```
    /// use tower_shield::proxy::{ClientAddr, ReverseProxyLayer};
    ///
    /// let layer = ReverseProxyLayer::new("http://127.0.0.1:9000".parse().unwrap()).unwrap();
    /// // For each accepted connection:
    /// let for_peer = layer.clone().client_addr(&ClientAddr::new("127.0.0.1:50000".parse().unwrap()));
    /// # drop(for_peer);
    /// ```
    pub fn client_addr(mut self, peer: &ClientAddr) -> Self {
        self.peer = Some(peer.header.clone());
        self
    }
}

impl<S> Layer<S> for ReverseProxyLayer {
    type Service = ReverseProxy<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ReverseProxy {
            inner,
            upstream: self.upstream.clone(),
            peer: self.peer.clone(),
        }
    }
}

/// Forwards requests to one upstream through the inner client service. See
/// the [module docs](self).
#[derive(Debug, Clone)]
pub struct ReverseProxy<S> {
    inner: S,
    upstream: Arc<Upstream>,
    /// From [`ReverseProxyLayer::client_addr`].
    peer: Option<HeaderValue>,
}

impl<S> ReverseProxy<S> {
    define_inner_service_accessors!();
}

/// A constant, so that the name is not parsed again on every request (a
/// `from_static` call outside a constant runs at run time).
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers of RFC 9110 section 7.6.1: every header
/// named in `Connection`, then the fixed list.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which of the fixed ones are there, and
    // only those are removed: a removal hashes its name, and most messages
    // carry none of them, or only `Connection: keep-alive` or `close`.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // HOP_BY_HOP[0] is `Connection`: take its values out, and keep (by a
    // reference count, no copy) the ones that name headers besides the
    // fixed list; `keep-alive` alone allocates nothing.
    let mut naming: Vec<HeaderValue> = Vec::new();
    if present & 1 != 0 {
        if let header::Entry::Occupied(entry) = headers.entry(header::CONNECTION) {
            naming.extend(
                entry
                    .remove_entry_mult()
                    .1
                    .filter(|value| connection_tokens(value).any(|name| !is_fixed_hop(name))),
            );
        }
    }
    for value in &naming {
        for name in connection_tokens(value) {
            if !is_fixed_hop(name) {
                // Removing by `&str` looks the name up without allocating
                // it; a token that is not a valid header name matches nothing.
                headers.remove(name);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// The header names a `Connection` value lists (none if it is not text).
fn connection_tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
}

/// Whether `name` (any case) is one of the fixed hop-by-hop headers, which
/// [`remove_hop_by_hop`] removes by itself.
fn is_fixed_hop(name: &str) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|hop| hop.as_str().eq_ignore_ascii_case(name))
}

fn via_values(name: &HeaderValue) -> [HeaderValue; 5] {
    ["0.9 ", "1.0 ", "1.1 ", "2 ", "3 "].map(|protocol| {
        let mut value = Vec::with_capacity(protocol.len() + name.len());
        value.extend_from_slice(protocol.as_bytes());
        value.extend_from_slice(name.as_bytes());
        HeaderValue::from_bytes(&value).expect("protocol and a valid header value")
    })
}

fn via_value(version: Version, via: &[HeaderValue; 5]) -> HeaderValue {
    via[match version {
        Version::HTTP_09 => 0,
        Version::HTTP_10 => 1,
        Version::HTTP_2 => 3,
        Version::HTTP_3 => 4,
        _ => 2,
    }]
    .clone()
}

/// A request path that, once decoded by the upstream, would climb out of
/// the upstream's path prefix: an encoded dot segment (`%2e%2e`) or a dot
/// segment hidden behind an encoded slash (`..%2f`). Answered 400.
#[derive(Debug)]
struct EscapingPath(Fault);

impl fmt::Display for EscapingPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request path hides a dot segment in percent-encoding")
    }
}

impl StdError for EscapingPath {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
    }
}

/// Whether a path segment hides a dot segment behind percent-encoding:
/// decoded (`%2e` to `.`, `%2f` and `%5c` to separators), one of its pieces
/// is `.` or `..`.
fn hides_dot_segment(segment: &str) -> bool {
    if !segment.contains('%') {
        return false;
    }
    let decoded = segment
        .replace("%2e", ".")
        .replace("%2E", ".")
        .replace("%2f", "/")
        .replace("%2F", "/")
        .replace("%5c", "/")
        .replace("%5C", "/");
    decoded
        .split(['/', '\\'])
        .any(|piece| piece == "." || piece == "..")
}

/// `path` (absolute) without its dot segments, as RFC 3986 section 5.2.4
/// removes them: `.` goes, `..` takes the segment before it with it, and
/// nothing climbs above the root.
fn remove_dot_segments(path: &str) -> std::borrow::Cow<'_, str> {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    if !segments.iter().any(|s| *s == "." || *s == "..") {
        return path.into();
    }
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.into_iter().enumerate() {
        match segment {
            "." | ".." => {
                if segment == ".." {
                    out.pop();
                }
                // A trailing dot segment leaves the path ending in `/`.
                if i == last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    format!("/{}", out.join("/")).into()
}

/// The path and query to send under a non-empty prefix: the request's path
/// without dot segments (refused when they are encoded), then its query.
fn under_prefix(prefix: &str, path_and_query: &str) -> Result<String, EscapingPath> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path_and_query, None),
    };
    if path.split('/').any(hides_dot_segment) {
        return Err(EscapingPath(Fault::new(StatusCode::BAD_REQUEST)));
    }
    let mut joined = String::with_capacity(prefix.len() + path_and_query.len());
    joined.push_str(prefix);
    joined.push_str(&remove_dot_segments(path));
    if let Some(query) = query {
        joined.push('?');
        joined.push_str(query);
    }
    Ok(joined)
}

impl Upstream {
    fn uri(&self, original: &Uri) -> Result<Uri, BoxError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        match original.path_and_query() {
            // The common case: no prefix and an origin-form target, shared
            // with the original request without a copy.
            Some(pq) if self.prefix.is_empty() && pq.as_str().starts_with('/') => {
                parts.path_and_query = Some(pq.clone());
                return Ok(Uri::from_parts(parts)?);
            }
            _ => {}
        }
        let path_and_query = original.path_and_query().map_or("/", PathAndQuery::as_str);
        let path_and_query = if !path_and_query.starts_with('/') {
            PathAndQuery::try_from(format!("{}/{}", self.prefix, path_and_query))?
        } else if self.prefix.is_empty() {
            PathAndQuery::try_from(path_and_query)?
        } else {
            // Under a prefix, the path may not climb out of it.
            let joined = under_prefix(&self.prefix, path_and_query)?;
            PathAndQuery::try_from(joined)?
        };
        Ok(Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()?)
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ReverseProxy<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| UpstreamError::new(e).into())
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let uri = match self.upstream.uri(req.uri()) {
            Ok(uri) => uri,
            Err(err) => return ResponseFuture::failed(err),
        };
        let via = via_value(req.version(), &self.upstream.via);
        *req.uri_mut() = uri;
        // The client speaks its own protocol to the upstream.
        *req.version_mut() = Version::default();
        let peer = match req.extensions().get::<ClientAddr>() {
            Some(peer) => Some(peer.header.clone()),
            None => self.peer.clone(),
        };
        let headers = req.headers_mut();
        remove_hop_by_hop(headers);
        // Replaced in place: cheaper than removing it for the client to add.
        headers.insert(header::HOST, self.upstream.host.clone());
        headers.append(header::VIA, via);
        if let Some(peer) = peer {
            headers.append(X_FORWARDED_FOR, peer);
        }
        ResponseFuture {
            kind: Kind::Called {
                inner: self.inner.call(req),
                upstream: self.upstream.clone(),
            },
        }
    }
}

pin_project! {
    /// Response future of [`ReverseProxy`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called { #[pin] inner: F, upstream: Arc<Upstream> },
        Failed { error: Option<BoxError> },
    }
}

impl<F> ResponseFuture<F> {
    fn failed(error: BoxError) -> Self {
        Self {
            kind: Kind::Failed { error: Some(error) },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<ProxyBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { inner, upstream } => {
                let mut res = ready!(inner.poll(cx)).map_err(|e| UpstreamError::new(e))?;
                let via = via_value(res.version(), &upstream.via);
                remove_hop_by_hop(res.headers_mut());
                res.headers_mut().append(header::VIA, via);
                *res.version_mut() = Version::default();
                Poll::Ready(Ok(res.map(ProxyBody::upstream)))
            }
            KindProj::Failed { error } => {
                Poll::Ready(Err(error.take().expect("future polled after completion")))
            }
        }
    }
}

pin_project! {
    /// The body of a proxied response: the upstream's body, streamed, or a
    /// short message of the proxy's own (an error page, a health report).
    pub struct ProxyBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyProj]
    enum BodyKind<B> {
        Upstream { #[pin] body: B },
        Message { data: Option<Bytes> },
    }
}

impl<B> fmt::Debug for ProxyBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            BodyKind::Upstream { .. } => f.write_str("ProxyBody::Upstream"),
            BodyKind::Message { data } => f.debug_tuple("ProxyBody::Message").field(data).finish(),
        }
    }
}

impl<B> ProxyBody<B> {
    /// The upstream's body, streamed as is.
    pub fn upstream(body: B) -> Self {
        Self {
            kind: BodyKind::Upstream { body },
        }
    }

    /// A body of the proxy's own.
    pub fn message(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Self {
            kind: BodyKind::Message {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }
}

impl<B> From<String> for ProxyBody<B> {
    fn from(s: String) -> Self {
        Self::message(s)
    }
}

impl<B> Default for ProxyBody<B> {
    fn default() -> Self {
        Self::message(Bytes::new())
    }
}

impl<B> Body for ProxyBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            BodyProj::Upstream { body } => body.poll_frame(cx).map_err(Into::into),
            BodyProj::Message { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Upstream { body } => body.is_end_stream(),
            BodyKind::Message { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Upstream { body } => body.size_hint(),
            BodyKind::Message { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_removed_and_encoded_ones_refused() {
        for (path, joined) in [
            ("/x", "/api/x"),
            ("/../x", "/api/x"),
            ("/./../x", "/api/x"),
            ("/a/b/../../../x?q=/../", "/api/x?q=/../"),
            ("/a/./b/.", "/api/a/b/"),
            ("/a/..", "/api/"),
            ("/a%2Fb", "/api/a%2Fb"),
            ("//x", "/api//x"),
        ] {
            assert_eq!(under_prefix("/api", path).unwrap(), joined, "{path}");
        }
        for path in [
            "/..%2fx",
            "/%2e%2e/x",
            "/.%2E/x",
            "/a/%2e",
            "/x%5c..%5cy",
            "/%2E%2e%2Fetc",
        ] {
            assert!(under_prefix("/api", path).is_err(), "{path}");
        }
    }

    fn segment() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::prop_oneof![
            proptest::strategy::Just("..".to_owned()),
            proptest::strategy::Just(".".to_owned()),
            proptest::strategy::Just(String::new()),
            proptest::strategy::Just("%2e%2e".to_owned()),
            proptest::strategy::Just("%2E.".to_owned()),
            proptest::strategy::Just("..%2f".to_owned()),
            proptest::strategy::Just("a%2Fb".to_owned()),
            "[a-z0-9.%]{1,6}",
        ]
    }

    proptest::proptest! {
        /// No request path ever yields an upstream path outside the
        /// prefix: the answer is a path under it with no dot segment, or a
        /// refusal.
        #[test]
        fn no_request_path_escapes_the_prefix(
            segments in proptest::collection::vec(segment(), 0..8),
            query in proptest::option::of("[a-z/.=]{0,8}"),
        ) {
            let mut path = format!("/{}", segments.join("/"));
            if let Some(q) = &query {
                path.push('?');
                path.push_str(q);
            }
            if let Ok(joined) = under_prefix("/api", &path) {
                let joined_path = joined.split('?').next().unwrap();
                proptest::prop_assert!(joined_path == "/api" || joined_path.starts_with("/api/"), "{}", joined);
                proptest::prop_assert!(!joined_path.split('/').any(|s| s == "." || s == ".." || hides_dot_segment(s)), "{}", joined);
                let layer = ReverseProxyLayer::new("http://127.0.0.1:9/api".parse().unwrap()).unwrap();
                if let Ok(uri) = path.parse::<Uri>() {
                    let sent = layer.upstream.uri(&uri).unwrap();
                    proptest::prop_assert!(sent.path().starts_with("/api"));
                }
            }
        }

        /// Whatever the user information, none of it is left in what is
        /// shown, and the rest of the URL is.
        #[test]
        fn redacted_urls_keep_no_credentials(
            user in "[a-zA-Z0-9%._~!$&'()*+,;=:-]{1,20}",
            password in "[a-zA-Z0-9%._~!$&'()*+,;=-]{1,20}",
            host in "[a-z0-9.]{1,20}",
            path in "(/[a-z0-9@:]{0,10}){0,3}",
        ) {
            let url = format!("http://{user}:{password}@{host}:80{path}");
            let shown = redacted(&url);
            proptest::prop_assert_eq!(shown.as_ref(), format!("http://***@{host}:80{path}"));
            let plain = format!("http://{host}:80{path}");
            let kept = redacted(&plain);
            proptest::prop_assert_eq!(kept.as_ref(), plain.as_str());
        }
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.append("connection", "close, x-secret".parse().unwrap());
        h.append("connection", "X-Other".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn upstream_uri_joins_prefix_path_and_query() {
        let layer = ReverseProxyLayer::new("http://127.0.0.1:1/base/".parse().unwrap()).unwrap();
        let uri = layer.upstream.uri(&"/a/b?c=d".parse().unwrap()).unwrap();
        assert_eq!(uri, "http://127.0.0.1:1/base/a/b?c=d");
        let root = ReverseProxyLayer::new("http://127.0.0.1:1".parse().unwrap()).unwrap();
        assert_eq!(
            root.upstream.uri(&"*".parse().unwrap()).unwrap(),
            "http://127.0.0.1:1/*"
        );
        assert!(ReverseProxyLayer::new("/relative".parse().unwrap()).is_err());
        assert!(ReverseProxyLayer::new("ftp://127.0.0.1/".parse().unwrap()).is_err());
        assert!(ReverseProxyLayer::new("http://127.0.0.1/?q".parse().unwrap()).is_err());
    }

    proptest::proptest! {
        /// Whatever a client puts in `Connection` and the headers around
        /// it, no hop-by-hop header survives, nothing panics, and every
        /// other header is kept.
        #[test]
        fn no_hop_by_hop_header_survives(
            connection in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..4),
            names in proptest::collection::vec("[a-z-]{1,12}", 0..8),
            fixed in proptest::num::u8::ANY,
            list_some in proptest::num::u8::ANY,
        ) {
            let mut h = HeaderMap::new();
            // Some of the other headers named in `Connection`, in any case.
            let named: Vec<String> = names
                .iter()
                .enumerate()
                .filter(|(i, _)| list_some & (1 << i) != 0)
                .map(|(i, n)| if i % 2 == 0 { n.to_ascii_uppercase() } else { n.clone() })
                .collect();
            if !named.is_empty() {
                h.append(header::CONNECTION, HeaderValue::from_str(&named.join(" ,")).unwrap());
            }
            for value in &connection {
                if let Ok(value) = HeaderValue::from_bytes(value) {
                    h.append(header::CONNECTION, value);
                }
            }
            for name in &names {
                h.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("v"));
            }
            for (i, name) in HOP_BY_HOP.iter().enumerate() {
                if fixed & (1 << i) != 0 {
                    h.append(name.clone(), HeaderValue::from_static("x"));
                }
            }
            let listed: Vec<String> = h
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()).collect::<Vec<_>>())
                .collect();
            remove_hop_by_hop(&mut h);
            for name in HOP_BY_HOP.iter() {
                proptest::prop_assert!(!h.contains_key(name));
            }
            for name in &names {
                let hop = HOP_BY_HOP.iter().any(|n| n == name.as_str()) || listed.contains(name);
                proptest::prop_assert_eq!(h.contains_key(name.as_str()), !hop, "{}", name);
            }
        }

        /// Any request target either maps onto the upstream (same scheme and
        /// authority, the prefix first, the query kept) or is an error.
        #[test]
        fn upstream_uri_keeps_authority_prefix_and_query(
            path in "(/[a-zA-Z0-9._~%!$&'()*+,;=:@-]{0,12}){0,4}",
            query in proptest::option::of("[a-zA-Z0-9=&%+._-]{0,20}"),
        ) {
            let layer = ReverseProxyLayer::new("http://127.0.0.1:9/base".parse().unwrap()).unwrap();
            let target = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            let Ok(original) = target.parse::<Uri>() else { return Ok(()) };
            if let Ok(uri) = layer.upstream.uri(&original) {
                proptest::prop_assert_eq!(uri.scheme_str(), Some("http"));
                proptest::prop_assert_eq!(uri.authority().unwrap().as_str(), "127.0.0.1:9");
                proptest::prop_assert!(uri.path().starts_with("/base"));
                proptest::prop_assert_eq!(uri.query(), original.query());
            }
        }
    }

    #[test]
    fn via_names_the_protocol() {
        let via = via_values(&HeaderValue::from_static("edge"));
        assert_eq!(via_value(Version::HTTP_2, &via), "2 edge");
        assert_eq!(via_value(Version::HTTP_10, &via), "1.0 edge");
        assert_eq!(via_value(Version::HTTP_11, &via), "1.1 edge");
    }

    /// The peer given to the layer goes into `X-Forwarded-For`; a
    /// `ClientAddr` extension on the request comes first.
    #[tokio::test]
    async fn x_forwarded_for_from_the_layer_or_the_request() {
        use tower::ServiceExt;
        // Answers with the `X-Forwarded-For` values it was sent, as `x-seen`.
        let echo = tower::service_fn(|req: Request<()>| async move {
            let mut res = Response::new(());
            for value in req.headers().get_all("x-forwarded-for") {
                res.headers_mut().append("x-seen", value.clone());
            }
            Ok::<_, std::convert::Infallible>(res)
        });
        let layer = ReverseProxyLayer::new("http://127.0.0.1:9".parse().unwrap()).unwrap();
        let forwarded = |layer: ReverseProxyLayer, req: Request<()>| async move {
            let res = layer.layer(echo).oneshot(req).await.unwrap();
            let seen: Vec<HeaderValue> = res.headers().get_all("x-seen").iter().cloned().collect();
            seen
        };
        let peer = |addr: &str| ClientAddr::new(addr.parse().unwrap());
        let req = || Request::get("/").body(()).unwrap();

        assert!(forwarded(layer.clone(), req()).await.is_empty());
        let for_peer = layer.client_addr(&peer("127.0.0.2:1000"));
        assert_eq!(forwarded(for_peer.clone(), req()).await, ["127.0.0.2"]);
        let mut tagged = req();
        tagged.extensions_mut().insert(peer("[::1]:1000"));
        assert_eq!(forwarded(for_peer, tagged).await, ["::1"]);
    }

    #[test]
    fn host_is_the_upstreams_without_user_information_or_default_port() {
        let host = |uri: &str| {
            ReverseProxyLayer::new(uri.parse().unwrap())
                .unwrap()
                .upstream
                .host
                .clone()
        };
        assert_eq!(host("http://127.0.0.1:9000/base"), "127.0.0.1:9000");
        assert_eq!(host("http://user:secret@example.test:80"), "example.test");
        assert_eq!(host("https://example.test:443/"), "example.test");
        assert_eq!(host("https://example.test:8443"), "example.test:8443");
        assert_eq!(host("http://[::1]:8080"), "[::1]:8080");
    }
}
