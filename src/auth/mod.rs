//! Service-to-service auth: servers verify service credentials, clients
//! attach them.
//!
//! On a server, [`AuthLayer`] verifies each request's credential and puts
//! the caller's [`ServiceIdentity`] in the request's extensions (and, with
//! the `axum` feature, makes it an extractor). Its verifiers are tried in a
//! fixed order, and the first that recognises the credential decides:
//!
//! 1. [`StaticTokens`]: a bearer token (or the value of a configured
//!    header) that is one of the live tokens, compared in constant time;
//! 2. [`JwtVerifier`]: a bearer token in JWS compact form, checked by
//!    `jsonwebtoken` against configured keys, a JWKS document, a JWKS URL
//!    or an OpenID Connect issuer.
//!
//! A request without a credential, or whose credential no verifier
//! accepts, is answered `401 Unauthorized` with
//! `WWW-Authenticate: Bearer` (RFC 6750; `error="invalid_token"` when a
//! credential was presented) and never reaches the service beneath. The
//! answer never says which check failed; the reason is logged at `debug`,
//! without the credential. [`RequireLayer`], for axum's `route_layer`,
//! answers `403 Forbidden` with `error="insufficient_scope"` when the
//! identity lacks what a route needs.
//!
//! Both answers are built by [`crate::error::error_response`]
//! from an [`error::Fault`](crate::error::Fault) that carries the challenge,
//! like every other failure of the crate.
//!
//! On a client, [`AttachLayer`] puts a credential on each request: a
//! static token, or a token from an OAuth 2.0 client-credentials grant,
//! cached until shortly before it expires and refreshed by one request
//! however many calls wait for it.
//!
//! Secrets are [`SecretRef`]s (a value, a variable or a file) held as
//! `secrecy` strings: zeroized on drop and never in `Debug` output, logs or
//! error messages.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Extension, Router};
//! use tower_shield::auth::{AuthLayer, RequireLayer, SecretRef, ServiceIdentity, StaticTokens, TokenEntry};
//!
//! # fn main() -> Result<(), tower_shield::BoxError> {
//! // In production: SecretRef::env("BILLING_TOKEN") or SecretRef::file(..).
//! let tokens = StaticTokens::load(vec![
//!     TokenEntry::new("billing", SecretRef::value("billing-token")).scopes(["orders:read"]),
//! ])?;
//! let app: Router = Router::new()
//!     .route(
//!         "/orders",
//!         get(|Extension(caller): Extension<ServiceIdentity>| async move {
//!             format!("hello, {}", caller.name())
//!         }),
//!     )
//!     .route_layer(RequireLayer::scope("orders:read"))
//!     .layer(AuthLayer::new().static_tokens(tokens));
//! # let _ = app;
//! # Ok(())
//! # }
//! ```

mod attach;
mod jwt;
mod secret;
mod signature;
mod token;

pub use attach::{
    AttachFuture, AttachLayer, AttachService, ClientCredentials, Credentials, Grant, MintedJwt,
    TokenError,
};
pub use jwt::{JwtConfig, JwtKey, JwtVerifier, KeyError, KeyStatus, DEFAULT_MAX_TOKEN_BYTES};
pub use secret::{SecretError, SecretRef};
pub use signature::{
    sign_request, InMemory, NonceStoreKind, Sign, SignError, SignFuture, SignLayer,
    SignatureConfig, SignatureFuture, SignatureKey, SignatureLayer, SignatureVerifier, SigningKey,
    VerifySignature, CONTENT_DIGEST, SIGNATURE, SIGNATURE_INPUT,
};
pub use token::{StaticTokens, TokenEntry};

use crate::{
    error::{error_response, Fault},
    BoxError,
};
use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

pub use crate::classify::{AuthMethod as Method, ServiceIdentity};

#[cfg(feature = "axum")]
impl<S: Send + Sync> axum_core::extract::FromRequestParts<S> for ServiceIdentity {
    type Rejection = Response<axum_core::body::Body>;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<ServiceIdentity>()
            .cloned()
            .ok_or_else(|| error_response(&Denied::missing(None)))
    }
}

/// How keys and tokens are fetched over HTTP: any client (a client stack
/// of this crate around hyper or reqwest, say) that takes a request with a
/// `String` body and answers with the whole body. Make one with
/// [`fetch_with`].
pub type Fetch = tower::util::BoxCloneSyncService<Request<String>, Response<Bytes>, BoxError>;

/// The largest body [`fetch_with`] reads: a JWKS, a discovery document or
/// a token answer is far smaller.
const MAX_FETCHED_BYTES: usize = 1024 * 1024;

/// Makes `client` a [`Fetch`]: requests go through it, and each answer's
/// body is read whole (at most 1 MiB).
///
/// ```
/// use std::{convert::Infallible, time::Duration};
/// use tower::service_fn;
/// use tower_shield::{auth::fetch_with, stack::ClientStack, ServiceBuilderExt};
///
/// let client = tower::ServiceBuilder::new()
///     .client_stack(ClientStack::new().timeout(Duration::from_secs(2)))
///     .service(service_fn(|_req: http::Request<String>| async {
///         Ok::<_, Infallible>(http::Response::new(String::from("{\"keys\":[]}")))
///     }));
/// let fetch = fetch_with(client);
/// # let _ = fetch;
/// ```
pub fn fetch_with<S, B>(client: S) -> Fetch
where
    S: Service<Request<String>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    tower::util::BoxCloneSyncService::new(tower::util::MapErr::new(client, Into::into).and_then(
        |res: Response<B>| async move {
            let (parts, body) = res.into_parts();
            let body = crate::body::collect(Box::pin(body), MAX_FETCHED_BYTES)
                .await
                .map_err(|err| -> BoxError {
                    match err {
                        crate::body::CollectError::Body(err) => err.into(),
                        crate::body::CollectError::TooLarge(_) => "answer too large".into(),
                    }
                })?;
            Ok(Response::from_parts(parts, body.to_bytes()))
        },
    ))
}

/// A refusal: the fault (401 or 403 with its challenge) and what the
/// caller is told.
#[derive(Debug)]
struct Denied {
    message: &'static str,
    fault: Fault,
}

impl Denied {
    fn missing(realm: Option<&str>) -> Self {
        Self::challenge(
            StatusCode::UNAUTHORIZED,
            "credentials required",
            realm,
            None,
        )
    }

    fn invalid(realm: Option<&str>) -> Self {
        Self::challenge(
            StatusCode::UNAUTHORIZED,
            "invalid credentials",
            realm,
            Some(("invalid_token", None)),
        )
    }

    fn insufficient(realm: Option<&str>, scope: Option<&str>) -> Self {
        Self::challenge(
            StatusCode::FORBIDDEN,
            "insufficient scope",
            realm,
            Some(("insufficient_scope", scope)),
        )
    }

    fn challenge(
        status: StatusCode,
        message: &'static str,
        realm: Option<&str>,
        error: Option<(&str, Option<&str>)>,
    ) -> Self {
        let mut params = Vec::new();
        if let Some(realm) = realm {
            params.push(format!("realm=\"{realm}\""));
        }
        if let Some((code, scope)) = error {
            params.push(format!("error=\"{code}\""));
            if let Some(scope) = scope {
                params.push(format!("scope=\"{scope}\""));
            }
        }
        let value = if params.is_empty() {
            "Bearer".to_owned()
        } else {
            format!("Bearer {}", params.join(", "))
        };
        let value = HeaderValue::try_from(value).unwrap_or(HeaderValue::from_static("Bearer"));
        Self {
            message,
            fault: Fault::new(status).with_header(header::WWW_AUTHENTICATE, value),
        }
    }

    fn respond<B: From<String>>(&self) -> Response<B> {
        error_response(self)
    }
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)
    }
}

impl std::error::Error for Denied {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.fault)
    }
}

/// A realm that is a valid quoted string, or none.
fn clean_realm(realm: &str) -> Option<Arc<str>> {
    let ok = realm
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
    ok.then(|| realm.into())
}

#[derive(Debug, Default)]
struct Verifiers {
    tokens: Option<StaticTokens>,
    token_header: Option<HeaderName>,
    jwt: Option<JwtVerifier>,
    anonymous: bool,
    realm: Option<Arc<str>>,
}

/// What a request's credentials come to, before any async work.
enum Verdict {
    Verified(ServiceIdentity),
    Missing,
    Invalid(&'static str),
    /// A JWT whose keys must be fetched first.
    Fetch(JwtVerifier, String),
}

impl Verifiers {
    fn judge(&self, headers: &http::HeaderMap) -> Verdict {
        if let Some(name) = &self.token_header {
            if let Some(value) = headers.get(name) {
                return match (value.to_str(), &self.tokens) {
                    (Ok(token), Some(tokens)) => tokens
                        .check(token.trim())
                        .map_or(Verdict::Invalid("unknown service token"), Verdict::Verified),
                    _ => Verdict::Invalid("unreadable service token"),
                };
            }
        }
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let Some(value) = values.next() else {
            return Verdict::Missing;
        };
        if values.next().is_some() {
            return Verdict::Invalid("several Authorization headers");
        }
        let Some(token) = bearer(value.as_bytes()) else {
            return Verdict::Invalid("not a bearer token");
        };
        if self.token_header.is_none() {
            if let Some(id) = self.tokens.as_ref().and_then(|t| t.check(token)) {
                return Verdict::Verified(id);
            }
        }
        // Any other bearer token is the JWT verifier's to judge: one that is
        // not a JWT is refused by it as malformed.
        match &self.jwt {
            Some(jwt) => match jwt.verify_now(token) {
                Some(Ok(id)) => Verdict::Verified(id),
                Some(Err(why)) => Verdict::Invalid(why.as_str()),
                None => Verdict::Fetch(jwt.clone(), token.to_owned()),
            },
            None => Verdict::Invalid("unknown bearer token"),
        }
    }
}

/// The characters of a `b64token` (RFC 6750) before its padding, by byte:
/// one load per byte of a token that may be hundreds long (a JWT).
const B64TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b as u8, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    table
};

/// The token of an `Authorization: Bearer <token>` value (RFC 6750: the
/// scheme in any case, one or more spaces, a `b64token`), or `None`.
fn bearer(value: &[u8]) -> Option<&str> {
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || rest.first() != Some(&b' ') {
        return None;
    }
    let token = rest.trim_ascii_start();
    let body_len = token.iter().rposition(|&b| b != b'=').map_or(0, |i| i + 1);
    let (chars, pad) = token.split_at(body_len);
    let valid = !chars.is_empty()
        && chars.iter().all(|&b| B64TOKEN[usize::from(b)])
        && pad.iter().all(|&b| b == b'=');
    if !valid {
        return None;
    }
    std::str::from_utf8(token).ok()
}

/// Verifies the service credential of each request; see the
/// [module docs](self).
///
/// Requests that pass carry a [`ServiceIdentity`] in their extensions; the
/// others are answered 401 by the layer itself, so the service beneath is
/// never called for them. The layer's own errors are none: it needs no
/// `HandleErrorLayer` in axum.
#[derive(Debug, Clone, Default)]
pub struct AuthLayer {
    verifiers: Arc<Verifiers>,
}

impl AuthLayer {
    /// A layer with no verifier yet: it refuses every request (unless
    /// [`allow_anonymous`](Self::allow_anonymous)).
    pub fn new() -> Self {
        Self::default()
    }

    fn edit(mut self, f: impl FnOnce(&mut Verifiers)) -> Self {
        let mut verifiers = Arc::try_unwrap(self.verifiers).unwrap_or_else(|shared| Verifiers {
            tokens: shared.tokens.clone(),
            token_header: shared.token_header.clone(),
            jwt: shared.jwt.clone(),
            anonymous: shared.anonymous,
            realm: shared.realm.clone(),
        });
        f(&mut verifiers);
        self.verifiers = Arc::new(verifiers);
        self
    }

    /// Accepts these static tokens.
    pub fn static_tokens(self, tokens: StaticTokens) -> Self {
        self.edit(|v| v.tokens = Some(tokens))
    }

    /// Reads static tokens from this header (its whole value) instead of
    /// `Authorization: Bearer`.
    pub fn token_header(self, name: HeaderName) -> Self {
        self.edit(|v| v.token_header = Some(name))
    }

    /// Accepts JWTs this verifier accepts.
    pub fn jwt(self, verifier: JwtVerifier) -> Self {
        self.edit(|v| v.jwt = Some(verifier))
    }

    /// Lets requests without any credential through, without an identity
    /// (a [`RequireLayer`] on a route then refuses them). A credential that
    /// is presented and fails is still refused.
    pub fn allow_anonymous(self) -> Self {
        self.edit(|v| v.anonymous = true)
    }

    /// Names a realm in the challenge (quotes and backslashes are not
    /// allowed; such a realm is left out).
    pub fn realm(self, realm: &str) -> Self {
        let realm = clean_realm(realm);
        self.edit(|v| v.realm = realm)
    }
}

impl AuthLayer {
    /// The static tokens, if any.
    pub fn static_token_set(&self) -> Option<&StaticTokens> {
        self.verifiers.tokens.as_ref()
    }

    /// The JWT verifier, if any.
    pub fn jwt_verifier(&self) -> Option<&JwtVerifier> {
        self.verifiers.jwt.as_ref()
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            verifiers: self.verifiers.clone(),
        }
    }
}

/// The service of [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    verifiers: Arc<Verifiers>,
}

impl<S> Auth<S> {
    define_inner_service_accessors!();
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// Response future of [`Auth`] and [`Require`].
    pub struct AuthFuture<F, T, E> {
        #[pin]
        kind: AuthKind<F, T, E>,
    }
}

pin_project! {
    #[project = AuthKindProj]
    enum AuthKind<F, T, E> {
        Called { #[pin] future: F },
        // Boxed: refusals are the cold path.
        Refused { response: Option<Box<T>> },
        Pending { future: BoxFuture<Result<T, E>> },
    }
}

impl<F, T, E> AuthFuture<F, T, E> {
    fn called(future: F) -> Self {
        Self {
            kind: AuthKind::Called { future },
        }
    }

    fn refused(response: T) -> Self {
        Self {
            kind: AuthKind::Refused {
                response: Some(Box::new(response)),
            },
        }
    }

    fn pending(future: BoxFuture<Result<T, E>>) -> Self {
        Self {
            kind: AuthKind::Pending { future },
        }
    }
}

impl<F, T, E> fmt::Debug for AuthFuture<F, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            AuthKind::Called { .. } => "AuthFuture::Called",
            AuthKind::Refused { .. } => "AuthFuture::Refused",
            AuthKind::Pending { .. } => "AuthFuture::Pending",
        })
    }
}

impl<F, T, E> Future for AuthFuture<F, T, E>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            AuthKindProj::Called { future } => future.poll(cx),
            AuthKindProj::Refused { response } => {
                Poll::Ready(Ok(*response.take().expect("polled after completion")))
            }
            AuthKindProj::Pending { future } => future.as_mut().poll(cx),
        }
    }
}

/// Puts the identity in the request's extensions.
fn identify<B>(req: &mut Request<B>, id: ServiceIdentity) {
    identify_parts(req.extensions_mut(), id);
}

fn identify_parts(extensions: &mut http::Extensions, id: ServiceIdentity) {
    extensions.insert(id);
}

/// The answer to a request whose credential is missing (`why` is `None`)
/// or refused for `why` (logged, never told).
fn refusal<B: From<String>>(verifiers: &Verifiers, why: Option<&'static str>) -> Response<B> {
    let realm = verifiers.realm.as_deref();
    match why {
        None => Denied::missing(realm).respond(),
        Some(why) => {
            tracing::debug!(reason = why, "service credential refused");
            Denied::invalid(realm).respond()
        }
    }
}

impl<S, B, ResB> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    ResB: From<String> + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = AuthFuture<S::Future, Response<ResB>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Verified already, by a signature layer above.
        if req.extensions().get::<ServiceIdentity>().is_some() {
            return AuthFuture::called(self.inner.call(req));
        }
        match self.verifiers.judge(req.headers()) {
            Verdict::Verified(id) => {
                identify(&mut req, id);
                AuthFuture::called(self.inner.call(req))
            }
            Verdict::Missing if self.verifiers.anonymous => {
                AuthFuture::called(self.inner.call(req))
            }
            Verdict::Missing => AuthFuture::refused(refusal(&self.verifiers, None)),
            Verdict::Invalid(why) => AuthFuture::refused(refusal(&self.verifiers, Some(why))),
            Verdict::Fetch(jwt, token) => {
                // The ready service goes with the request; a clone stays.
                let inner = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, inner);
                let verifiers = self.verifiers.clone();
                AuthFuture::pending(Box::pin(async move {
                    match jwt.verify_why(&token).await {
                        Ok(id) => {
                            identify(&mut req, id);
                            inner.call(req).await
                        }
                        Err(why) => Ok(refusal(&verifiers, Some(why.as_str()))),
                    }
                }))
            }
        }
    }
}

/// What a route requires of the caller's [`ServiceIdentity`], for axum's
/// `route_layer` (or any service behind an [`AuthLayer`]).
///
/// A request with no identity is answered 401; one whose identity lacks
/// the scope, or is not one of the services named, 403 with
/// `WWW-Authenticate: Bearer error="insufficient_scope"`.
#[derive(Debug, Clone, Default)]
pub struct RequireLayer {
    scope: Option<Arc<str>>,
    services: Arc<[String]>,
}

impl RequireLayer {
    /// Requires the scope `scope`.
    pub fn scope(scope: &str) -> Self {
        Self {
            scope: Some(scope.into()),
            services: Arc::new([]),
        }
    }

    /// Requires the caller to be one of `services`.
    pub fn services<I: IntoIterator<Item = S>, S: Into<String>>(services: I) -> Self {
        Self {
            scope: None,
            services: services.into_iter().map(Into::into).collect(),
        }
    }

    /// Requires the scope `scope` as well.
    pub fn and_scope(mut self, scope: &str) -> Self {
        self.scope = Some(scope.into());
        self
    }

    fn allows(&self, id: &ServiceIdentity) -> bool {
        self.scope
            .as_deref()
            .is_none_or(|scope| id.has_scope(scope))
            && (self.services.is_empty() || self.services.iter().any(|s| s == id.name()))
    }
}

impl<S> Layer<S> for RequireLayer {
    type Service = Require<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Require {
            inner,
            require: self.clone(),
        }
    }
}

/// The service of [`RequireLayer`].
#[derive(Debug, Clone)]
pub struct Require<S> {
    inner: S,
    require: RequireLayer,
}

impl<S> Require<S> {
    define_inner_service_accessors!();
}

impl<S, B, ResB> Service<Request<B>> for Require<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    ResB: From<String>,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = AuthFuture<S::Future, Response<ResB>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let denied = match req.extensions().get::<ServiceIdentity>() {
            Some(id) if self.require.allows(id) => return AuthFuture::called(self.inner.call(req)),
            Some(id) => {
                tracing::debug!(service = id.name(), "service lacks what the route requires");
                Denied::insufficient(None, self.require.scope.as_deref())
            }
            None => Denied::missing(None),
        };
        AuthFuture::refused(denied.respond())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        assert_eq!(bearer(b"Bearer abc.DEF-_~+/=="), Some("abc.DEF-_~+/=="));
        assert_eq!(bearer(b"bEaReR   tok"), Some("tok"));
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer    ",
            b"Bearertok",
            b"Basic dXNlcjpwYXNz",
            b"Bearer a b",
            b"Bearer a=b",
            b"Bearer ===",
            b"Bearer t\xc3\xa9",
            b"Bearer tok\t",
        ] {
            assert_eq!(bearer(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn a_fetched_answer_is_read_whole_up_to_1_mib() {
        use tower::ServiceExt as _;
        let fetch = |size: usize| {
            fetch_with(tower::service_fn(move |_: Request<String>| async move {
                Ok::<_, std::convert::Infallible>(Response::new("x".repeat(size)))
            }))
            .oneshot(Request::new(String::new()))
        };
        let res = fetch(MAX_FETCHED_BYTES).await.unwrap();
        assert_eq!(res.body().len(), 1024 * 1024);
        let err = fetch(MAX_FETCHED_BYTES + 1).await.unwrap_err();
        assert_eq!(err.to_string(), "answer too large");
    }

    #[test]
    fn a_future_shows_its_state() {
        let ready = std::future::ready(Ok::<_, ()>(()));
        assert_eq!(
            format!("{:?}", AuthFuture::<_, (), ()>::called(ready)),
            "AuthFuture::Called"
        );
        let refused = AuthFuture::<std::future::Ready<Result<(), ()>>, (), ()>::refused(());
        assert_eq!(format!("{refused:?}"), "AuthFuture::Refused");
        let pending =
            AuthFuture::<std::future::Ready<Result<(), ()>>, (), ()>::pending(Box::pin(async {
                Ok(())
            }));
        assert_eq!(format!("{pending:?}"), "AuthFuture::Pending");
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let res: Response<String> = Denied::missing(Some("api")).respond();
        assert_eq!(res.status(), 401);
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"api\""
        );
        let res: Response<String> = Denied::invalid(None).respond();
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
        assert_eq!(res.body(), "Unauthorized: invalid credentials\n");
        let res: Response<String> = Denied::insufficient(None, Some("a:b")).respond();
        assert_eq!(res.status(), 403);
        assert_eq!(
            res.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"insufficient_scope\", scope=\"a:b\""
        );
        assert_eq!(clean_realm("ok realm").as_deref(), Some("ok realm"));
        assert_eq!(clean_realm("bad\"realm"), None);
        assert_eq!(clean_realm("bad\\realm"), None);
        assert_eq!(clean_realm("bad\nrealm"), None);
    }
}
