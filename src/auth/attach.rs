//! Client side: attach a service credential to each outgoing request.

use super::{Fetch, SecretError, SecretRef};
use crate::{body::TryClone, BoxError};
use base64::Engine as _;
use http::{header, HeaderValue, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use secrecy::{ExposeSecret, SecretString};
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

/// An OAuth 2.0 client-credentials grant (RFC 6749, section 4.4): the
/// token endpoint, the client's ID and secret (sent with HTTP Basic), and
/// optionally the scope and audience to ask for.
#[derive(Clone)]
pub struct ClientCredentials {
    token_url: String,
    client_id: String,
    client_secret: SecretString,
    scope: Option<String>,
    audience: Option<String>,
    timeout: Duration,
    fetch: Fetch,
}

impl ClientCredentials {
    /// The grant at `token_url` for `client_id`, whose secret is read now;
    /// tokens are requested through `fetch`.
    ///
    /// # Errors
    ///
    /// The secret cannot be read.
    pub fn new(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: &SecretRef,
        fetch: Fetch,
    ) -> Result<Self, SecretError> {
        Ok(Self {
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret: client_secret.read()?,
            scope: None,
            audience: None,
            timeout: Duration::from_secs(5),
            fetch,
        })
    }

    /// Asks for this scope (space-separated scopes).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Asks for a token for this audience (the `audience` parameter many
    /// servers take).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// How long a token request may take (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn request(&self) -> Result<(HeaderValue, Duration), TokenError> {
        let form = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = &self.scope {
                form.append_pair("scope", scope);
            }
            if let Some(audience) = &self.audience {
                form.append_pair("audience", audience);
            }
            form.finish()
        };
        // RFC 6749, section 2.3.1: each part form-encoded, then Basic.
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            form_urlencoded::byte_serialize(self.client_id.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(self.client_secret.expose_secret().as_bytes())
                .collect::<String>()
        ));
        let mut basic = HeaderValue::try_from(format!("Basic {basic}"))
            .map_err(|_| TokenError::new("the client ID cannot be sent"))?;
        basic.set_sensitive(true);
        let req = Request::post(&self.token_url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(header::AUTHORIZATION, basic)
            .body(form)
            .map_err(|_| TokenError::new("the token URL is not valid"))?;
        let res = tokio::time::timeout(self.timeout, self.fetch.clone().oneshot(req))
            .await
            .map_err(|_| TokenError::new("the token endpoint did not answer in time"))?
            .map_err(|err| TokenError::caused("the token endpoint failed", err))?;
        if !res.status().is_success() {
            return Err(TokenError::new(format!(
                "the token endpoint answered {}",
                res.status()
            )));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            access_token: String,
            token_type: String,
            expires_in: Option<u64>,
        }
        let answer: Answer = serde_json::from_slice(res.body())
            .map_err(|_| TokenError::new("the token endpoint's answer is not a token"))?;
        if !answer.token_type.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::new(
                "the token endpoint's token is not a bearer token",
            ));
        }
        let mut value = HeaderValue::try_from(format!("Bearer {}", answer.access_token))
            .map_err(|_| TokenError::new("the token endpoint's token is not a valid header"))?;
        value.set_sensitive(true);
        // Without `expires_in`, an hour (a common default), renewed early.
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        Ok((value, lifetime))
    }
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// A short-lived JWT this service signs itself with its own key, for a
/// server that trusts the key (by JWKS or configuration): `iss` and `sub`
/// name this service, `aud` the server, `exp` a few minutes ahead, and
/// `jti` is fresh each time.
#[derive(Clone)]
pub struct MintedJwt {
    alg: jsonwebtoken::Algorithm,
    key: Arc<jsonwebtoken::EncodingKey>,
    kid: Option<String>,
    issuer: String,
    audience: Option<String>,
    scope: Option<String>,
    lifetime: Duration,
}

impl MintedJwt {
    /// Tokens for `service` (its `iss` and `sub`), signed with `alg` and the
    /// key in `key` (the HMAC secret, or the private key in PEM), read now.
    ///
    /// # Errors
    ///
    /// The key cannot be read or parsed, or the algorithm is unknown.
    pub fn new(
        service: impl Into<String>,
        alg: &str,
        key: &SecretRef,
    ) -> Result<Self, SecretError> {
        use jsonwebtoken::{Algorithm, EncodingKey};
        let alg: Algorithm = alg.parse().map_err(|_| {
            SecretError::other("the signing algorithm", format!("{alg:?} is unknown"))
        })?;
        let secret = key.read()?;
        let bytes = secret.expose_secret().as_bytes();
        let key = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                EncodingKey::from_secret(bytes)
            }
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(bytes),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(bytes),
            _ => EncodingKey::from_rsa_pem(bytes),
        }
        .map_err(|_| {
            SecretError::other("the signing key", format!("is not a valid {alg:?} key"))
        })?;
        Ok(Self {
            alg,
            key: Arc::new(key),
            kid: None,
            issuer: service.into(),
            audience: None,
            scope: None,
            lifetime: Duration::from_secs(300),
        })
    }

    /// The `kid` to name in each token's header.
    pub fn kid(mut self, kid: impl Into<String>) -> Self {
        self.kid = Some(kid.into());
        self
    }

    /// The `aud` claim.
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// The `scope` claim.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// How long each token lives (default 5 minutes).
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    fn mint(&self) -> Result<(HeaderValue, Duration), TokenError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = serde_json::json!({
            "iss": self.issuer,
            "sub": self.issuer,
            "iat": now,
            "exp": now + self.lifetime.as_secs(),
            "jti": format!("{:032x}", fastrand::u128(..)),
        });
        if let Some(aud) = &self.audience {
            claims["aud"] = aud.as_str().into();
        }
        if let Some(scope) = &self.scope {
            claims["scope"] = scope.as_str().into();
        }
        let mut header = jsonwebtoken::Header::new(self.alg);
        header.kid = self.kid.clone();
        let token = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|_| TokenError::new("the token could not be signed"))?;
        let mut value = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| TokenError::new("the token is not a valid header"))?;
        value.set_sensitive(true);
        Ok((value, self.lifetime))
    }
}

impl fmt::Debug for MintedJwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MintedJwt")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// Where a [`Grant`]'s tokens come from.
#[derive(Debug, Clone)]
enum Source {
    ClientCredentials(ClientCredentials),
    Minted(MintedJwt),
}

impl Source {
    async fn token(&self) -> Result<(HeaderValue, Duration), TokenError> {
        match self {
            Self::ClientCredentials(grant) => grant.request().await,
            Self::Minted(minted) => minted.mint(),
        }
    }
}

/// A token could not be had from the token endpoint. It never holds the
/// client secret or a token.
#[derive(Debug)]
pub struct TokenError {
    message: String,
    source: Option<BoxError>,
}

impl TokenError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    fn caused(message: &str, source: BoxError) -> Self {
        Self {
            message: message.to_owned(),
            source: Some(source),
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TokenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// What a client attaches to each request.
#[derive(Clone)]
pub enum Credentials {
    /// `Authorization: Bearer` with a fixed token.
    Static(HeaderValue),
    /// `Authorization: Bearer` with a token of a client-credentials grant,
    /// or a JWT minted here, renewed before it expires.
    ClientCredentials(Arc<Grant>),
}

impl Credentials {
    /// A fixed bearer token, read now.
    ///
    /// # Errors
    ///
    /// The secret cannot be read, or is not a valid header value.
    pub fn bearer(token: &SecretRef) -> Result<Self, SecretError> {
        let token = token.read()?;
        let mut value = HeaderValue::try_from(format!("Bearer {}", token.expose_secret()))
            .map_err(|_| SecretError::invalid("the bearer token"))?;
        value.set_sensitive(true);
        Ok(Self::Static(value))
    }

    /// Tokens from a client-credentials grant, each cached until shortly
    /// before it expires (a tenth of its lifetime early, at most 30 s).
    pub fn client_credentials(grant: ClientCredentials) -> Self {
        Self::from_source(Source::ClientCredentials(grant))
    }

    /// JWTs this service mints itself, cached like a grant's.
    pub fn minted(minted: MintedJwt) -> Self {
        Self::from_source(Source::Minted(minted))
    }

    fn from_source(source: Source) -> Self {
        Self::ClientCredentials(Arc::new(Grant {
            source,
            current: Mutex::new(None),
            flight: tokio::sync::Mutex::new(()),
            requests: Default::default(),
        }))
    }

    /// How many tokens have been requested or minted (0 for a static
    /// token).
    pub fn token_requests(&self) -> u64 {
        match self {
            Self::Static(_) => 0,
            Self::ClientCredentials(grant) => {
                grant.requests.load(std::sync::atomic::Ordering::Relaxed)
            }
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(_) => f.write_str("Credentials::Static([REDACTED])"),
            Self::ClientCredentials(grant) => f
                .debug_tuple("Credentials::ClientCredentials")
                .field(&grant.source)
                .finish(),
        }
    }
}

/// A source of renewable tokens and the token it last gave.
pub struct Grant {
    source: Source,
    current: Mutex<Option<(HeaderValue, Instant)>>,
    /// Held by the one token request in flight.
    flight: tokio::sync::Mutex<()>,
    requests: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Grant {
    fn cached(&self) -> Option<HeaderValue> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        match &*current {
            Some((value, renew_at)) if Instant::now() < *renew_at => Some(value.clone()),
            _ => None,
        }
    }

    async fn token(&self) -> Result<HeaderValue, TokenError> {
        if let Some(value) = self.cached() {
            return Ok(value);
        }
        let _flight = self.flight.lock().await;
        // The request before ours may have brought one.
        if let Some(value) = self.cached() {
            return Ok(value);
        }
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (value, lifetime) = self.source.token().await?;
        let early = (lifetime / 10).min(Duration::from_secs(30));
        let renew_at = Instant::now() + (lifetime - early);
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((value.clone(), renew_at));
        Ok(value)
    }

    /// Forgets `used`, if it is still the current token.
    fn forget(&self, used: &HeaderValue) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|(value, _)| value == used) {
            *current = None;
        }
    }
}

/// Attaches [`Credentials`] to each request's `Authorization` header.
///
/// With a client-credentials grant, a request waits for the token only
/// when none is cached, and however many wait, one token request is sent.
/// When the server answers 401, the token is forgotten, a new one fetched,
/// and the request sent once more, if its body can be sent again
/// ([`TryClone`]). A token endpoint that fails or does not answer within
/// its timeout fails the call with a [`TokenError`].
#[derive(Debug, Clone)]
pub struct AttachLayer {
    credentials: Credentials,
}

impl AttachLayer {
    /// Attaches `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        Self { credentials }
    }

    /// The credentials attached.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }
}

impl<S> Layer<S> for AttachLayer {
    type Service = AttachService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttachService {
            inner,
            credentials: self.credentials.clone(),
        }
    }
}

/// The service of [`AttachLayer`].
#[derive(Debug, Clone)]
pub struct AttachService<S> {
    inner: S,
    credentials: Credentials,
}

impl<S> AttachService<S> {
    define_inner_service_accessors!();
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// Response future of [`AttachService`].
    pub struct AttachFuture<F, T> {
        #[pin]
        kind: AttachKind<F, T>,
    }
}

pin_project! {
    #[project = AttachKindProj]
    enum AttachKind<F, T> {
        // A static token: the service beneath was called.
        Called { #[pin] future: F },
        // A grant's token: fetched (if need be), sent, maybe sent again.
        Grant { future: BoxFuture<Result<T, BoxError>> },
    }
}

impl<F, T> fmt::Debug for AttachFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            AttachKind::Called { .. } => "AttachFuture::Called",
            AttachKind::Grant { .. } => "AttachFuture::Grant",
        })
    }
}

impl<F, T, E> Future for AttachFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            AttachKindProj::Called { future } => future.poll(cx).map_err(Into::into),
            AttachKindProj::Grant { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, B, ResB> Service<Request<B>> for AttachService<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: TryClone + Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = AttachFuture<S::Future, Response<ResB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let grant = match &self.credentials {
            Credentials::Static(value) => {
                req.headers_mut()
                    .insert(header::AUTHORIZATION, value.clone());
                return AttachFuture {
                    kind: AttachKind::Called {
                        future: self.inner.call(req),
                    },
                };
            }
            Credentials::ClientCredentials(grant) => grant.clone(),
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let again = self.inner.clone();
        AttachFuture {
            kind: AttachKind::Grant {
                future: Box::pin(async move {
                    let token = grant.token().await?;
                    let retry = try_clone_request(&req);
                    req.headers_mut()
                        .insert(header::AUTHORIZATION, token.clone());
                    let res = inner.call(req).await.map_err(Into::into)?;
                    let Some(mut retry) =
                        retry.filter(|_| res.status() == StatusCode::UNAUTHORIZED)
                    else {
                        return Ok(res);
                    };
                    // Once: the token may have been revoked or rotated.
                    grant.forget(&token);
                    let token = grant.token().await?;
                    retry.headers_mut().insert(header::AUTHORIZATION, token);
                    again.oneshot(retry).await.map_err(Into::into)
                }),
            },
        }
    }
}

fn try_clone_request<B: TryClone>(req: &Request<B>) -> Option<Request<B>> {
    let body = req.body().try_clone()?;
    let mut clone = Request::new(body);
    *clone.method_mut() = req.method().clone();
    *clone.uri_mut() = req.uri().clone();
    *clone.version_mut() = req.version();
    *clone.headers_mut() = req.headers().clone();
    Some(clone)
}
