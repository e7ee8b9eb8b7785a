//! The serde configuration of the stacks and the sidecar.
//!
//! One optional TOML section per layer; every key has a default, unknown
//! keys are rejected with an error that names them, and durations are
//! strings such as `"250ms"`, `"5s"` or `"1m 30s"`.
//!
//! ```toml
//! [sidecar]
//! listen = "127.0.0.1:8080"
//! upstream = "http://127.0.0.1:9000"
//!
//! [timeout]
//! request = "5s"
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_shield::config::Config;
//!
//! let config = Config::from_toml("[timeout]\nrequest = \"250ms\"\n").unwrap();
//! assert_eq!(config.timeout.request, Duration::from_millis(250));
//!
//! let err = Config::from_toml("[timeout]\nrequst = \"1s\"\n").unwrap_err();
//! assert!(err.to_string().contains("unknown field `requst`"));
//! ```

use serde::{Deserialize, Deserializer};
use std::{error::Error as StdError, fmt, net::SocketAddr, path::Path, time::Duration};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Config {
    /// `[sidecar]`: where the sidecar listens and what it proxies to.
    pub sidecar: SidecarConfig,
    /// `[timeout]`: the timeout of one attempt (under `[retry]`, each
    /// attempt has its own).
    pub timeout: TimeoutConfig,
    /// `[breaker]`: a circuit breaker; absent means none. The keys are the
    /// methods of [`crate::breaker::Config`].
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    pub breaker: Option<crate::breaker::Config>,
    /// `[retry]`: retries; absent means none. The keys are the methods of
    /// [`crate::retry::Config`].
    #[cfg(feature = "retry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    pub retry: Option<crate::retry::Config>,
    /// `[cache]`: a response cache; absent means none. The keys are the
    /// methods of [`crate::cache::Config`].
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub cache: Option<crate::cache::Config>,
    /// `[context]`: trace context, IDs and OTLP export; absent means none.
    #[cfg(feature = "context")]
    #[cfg_attr(docsrs, doc(cfg(feature = "context")))]
    pub context: Option<ContextConfig>,
    /// `[auth]`: verify inbound service credentials; absent means none.
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub auth: Option<AuthConfig>,
    /// `[upstream_auth]`: attach a credential to outbound requests; absent
    /// means none.
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub upstream_auth: Option<UpstreamAuthConfig>,
    /// `[rate_limit]`: per-caller rate limits; absent means none. The keys
    /// are the methods of [`crate::limit::RateLimitConfig`].
    #[cfg(feature = "limit")]
    #[cfg_attr(docsrs, doc(cfg(feature = "limit")))]
    pub rate_limit: Option<crate::limit::RateLimitConfig>,
}

/// `[auth]`: which credentials inbound requests must carry.
///
/// Secrets are named by reference (`env = "VAR"` or `file = "PATH"`), never
/// required inline; a variable or file that is missing stops the sidecar at
/// start with an error naming it.
///
/// ```toml
/// [auth]
/// token_header = "x-service-token"   # default: Authorization: Bearer
/// allow_anonymous = false
/// realm = "orders"
/// watch = "5s"                        # reload token files when they change
///
/// [[auth.tokens]]
/// service = "billing"
/// scopes = ["orders:read"]
/// env = "BILLING_TOKEN"               # or file = "/run/secrets/billing"
///
/// [auth.jwt]
/// issuer = ["https://issuer.example"]
/// audience = ["orders"]
/// leeway = "30s"
/// jwks_url = "https://issuer.example/jwks.json"   # or jwks_file, oidc_issuer, [[auth.jwt.keys]]
/// refresh_min_interval = "30s"
/// ```
#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// `[[auth.tokens]]`: static service tokens.
    #[serde(default)]
    pub tokens: Vec<crate::auth::TokenEntry>,
    /// `token_header`: read static tokens from this header instead of
    /// `Authorization: Bearer`.
    pub token_header: Option<String>,
    /// `[auth.jwt]`: JWT verification.
    pub jwt: Option<crate::auth::JwtConfig>,
    /// `allow_anonymous`: let requests without any credential through.
    #[serde(default)]
    pub allow_anonymous: bool,
    /// `realm`: named in the challenge.
    pub realm: Option<String>,
    /// `watch`: how often token files are checked for changes (absent: not
    /// watched).
    #[serde(default, deserialize_with = "opt_duration")]
    pub watch: Option<Duration>,
    /// `[auth.signature]`: RFC 9421 signed requests (for a program's own
    /// stack: see [`AuthConfig::signature_layer`]).
    pub signature: Option<crate::auth::SignatureConfig>,
}

#[cfg(feature = "auth")]
impl AuthConfig {
    /// The layer this section describes: secrets and keys read now, keys
    /// from a URL fetched through `fetch` when first needed.
    pub fn layer(
        &self,
        fetch: Option<crate::auth::Fetch>,
    ) -> Result<crate::auth::AuthLayer, ConfigError> {
        let mut layer = crate::auth::AuthLayer::new();
        if !self.tokens.is_empty() {
            let tokens = crate::auth::StaticTokens::load(self.tokens.clone())
                .map_err(|err| ConfigError::field("auth.tokens", err))?;
            layer = layer.static_tokens(tokens);
        }
        if let Some(name) = &self.token_header {
            let name = http::HeaderName::try_from(name.as_str())
                .map_err(|err| ConfigError::field("auth.token_header", err))?;
            layer = layer.token_header(name);
        }
        if let Some(jwt) = &self.jwt {
            let fetch = if jwt.is_remote() { fetch } else { None };
            let verifier = crate::auth::JwtVerifier::new(jwt.clone(), fetch)
                .map_err(|err| ConfigError::field("auth.jwt", err))?;
            layer = layer.jwt(verifier);
        }
        if self.tokens.is_empty()
            && self.jwt.is_none()
            && self.signature.is_none()
            && !self.allow_anonymous
        {
            return Err(ConfigError::field(
                "auth",
                "give [[auth.tokens]], [auth.jwt] or [auth.signature] (or allow_anonymous = true)",
            ));
        }
        if self.allow_anonymous {
            layer = layer.allow_anonymous();
        }
        if let Some(realm) = &self.realm {
            layer = layer.realm(realm);
        }
        Ok(layer)
    }
}

#[cfg(feature = "auth")]
impl AuthConfig {
    /// The signature layer `[auth.signature]` describes, to go outside the
    /// [`layer`](Self::layer): signed requests are decided there, the
    /// others go on to the tokens and JWTs (when there are any).
    pub fn signature_layer(&self) -> Result<Option<crate::auth::SignatureLayer>, ConfigError> {
        let Some(config) = &self.signature else {
            return Ok(None);
        };
        let verifier = crate::auth::SignatureVerifier::new(config.clone())
            .map_err(|err| ConfigError::field("auth.signature", err))?;
        let mut layer = crate::auth::SignatureLayer::new(verifier);
        if !self.tokens.is_empty() || self.jwt.is_some() || self.allow_anonymous {
            layer = layer.or_next();
        }
        if let Some(realm) = &self.realm {
            layer = layer.realm(realm);
        }
        Ok(Some(layer))
    }
}

/// `[upstream_auth]`: the credential attached to every outbound request:
/// a static token, or an OAuth 2.0 client-credentials grant.
///
/// ```toml
/// [upstream_auth]
/// token = { env = "UPSTREAM_TOKEN" }
///
/// # or:
/// [upstream_auth.client_credentials]
/// token_url = "https://issuer.example/oauth/token"
/// client_id = "sidecar"
/// client_secret = { file = "/run/secrets/client_secret" }
/// scope = "orders:read"
/// timeout = "5s"
/// ```
#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct UpstreamAuthConfig {
    /// `token`: a static bearer token, by reference.
    pub token: Option<crate::auth::SecretRef>,
    /// `[upstream_auth.client_credentials]`: a client-credentials grant.
    pub client_credentials: Option<ClientCredentialsConfig>,
    /// `[upstream_auth.jwt]`: short-lived JWTs signed with this service's
    /// own key.
    pub jwt: Option<MintedJwtConfig>,
}

/// `[upstream_auth.jwt]`.
///
/// ```toml
/// [upstream_auth.jwt]
/// service = "checkout"
/// alg = "ES256"
/// kid = "checkout-1"
/// audience = "orders"
/// lifetime = "5m"
/// key = { file = "/run/secrets/checkout.pem" }
/// ```
#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MintedJwtConfig {
    /// `service`: this service's name (`iss` and `sub`).
    pub service: String,
    /// `alg`: `HS256`, `RS256`, `ES256`, `EdDSA`, ...
    pub alg: String,
    /// `kid` to name in each token.
    pub kid: Option<String>,
    /// `audience`: the `aud` claim.
    pub audience: Option<String>,
    /// `scope`: the `scope` claim.
    pub scope: Option<String>,
    /// `lifetime` of each token (default 5 minutes).
    #[serde(default, deserialize_with = "opt_duration")]
    pub lifetime: Option<Duration>,
    /// `key`: the HMAC secret or private key (PEM), by reference.
    pub key: crate::auth::SecretRef,
}

/// `[upstream_auth.client_credentials]`.
#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientCredentialsConfig {
    /// `token_url`: the token endpoint.
    pub token_url: String,
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`, by reference.
    pub client_secret: crate::auth::SecretRef,
    /// `scope` to ask for.
    pub scope: Option<String>,
    /// `audience` to ask for.
    pub audience: Option<String>,
    /// `timeout` of a token request (default 5 s).
    #[serde(default, deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
}

#[cfg(feature = "auth")]
impl UpstreamAuthConfig {
    /// The credentials this section describes, read now; a grant's tokens
    /// are fetched through `fetch`.
    pub fn credentials(
        &self,
        fetch: impl FnOnce() -> crate::auth::Fetch,
    ) -> Result<crate::auth::Credentials, ConfigError> {
        match (&self.token, &self.client_credentials, &self.jwt) {
            (Some(token), None, None) => crate::auth::Credentials::bearer(token)
                .map_err(|err| ConfigError::field("upstream_auth.token", err)),
            (None, None, Some(jwt)) => {
                let mut minted = crate::auth::MintedJwt::new(&jwt.service, &jwt.alg, &jwt.key)
                    .map_err(|err| ConfigError::field("upstream_auth.jwt", err))?;
                if let Some(kid) = &jwt.kid {
                    minted = minted.kid(kid);
                }
                if let Some(audience) = &jwt.audience {
                    minted = minted.audience(audience);
                }
                if let Some(scope) = &jwt.scope {
                    minted = minted.scope(scope);
                }
                if let Some(lifetime) = jwt.lifetime {
                    minted = minted.lifetime(lifetime);
                }
                Ok(crate::auth::Credentials::minted(minted))
            }
            (None, Some(cc), None) => {
                let mut grant = crate::auth::ClientCredentials::new(
                    &cc.token_url,
                    &cc.client_id,
                    &cc.client_secret,
                    fetch(),
                )
                .map_err(|err| {
                    ConfigError::field("upstream_auth.client_credentials.client_secret", err)
                })?;
                if let Some(scope) = &cc.scope {
                    grant = grant.scope(scope);
                }
                if let Some(audience) = &cc.audience {
                    grant = grant.audience(audience);
                }
                if let Some(timeout) = cc.timeout {
                    grant = grant.timeout(timeout);
                }
                Ok(crate::auth::Credentials::client_credentials(grant))
            }
            _ => Err(ConfigError::field(
                "upstream_auth",
                "give exactly one of `token`, `[upstream_auth.client_credentials]` or `[upstream_auth.jwt]`",
            )),
        }
    }
}

/// `[context]`: see [`crate::context::Config`] for what each key means.
///
/// ```toml
/// [context]
/// trust_incoming_ids = true
/// request_id_header = "x-request-id"
/// request_id_aliases = ["x-trace-id"]
/// correlation_id_header = "x-correlation-id"
/// propagate_headers = ["x-user-id", "x-tenant-id"]
/// service_name = "checkout"
/// service_version = "1.4.2"
/// traceresponse = false
/// otlp_endpoint = "http://127.0.0.1:4317"
/// otlp_protocol = "grpc"            # or "http/protobuf"
/// ```
#[cfg(feature = "context")]
#[cfg_attr(docsrs, doc(cfg(feature = "context")))]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ContextConfig {
    /// `trust_incoming_ids`: take request and correlation IDs from requests
    /// (default true).
    pub trust_incoming_ids: Option<bool>,
    /// `request_id_header` (default `x-request-id`).
    pub request_id_header: Option<String>,
    /// `request_id_aliases`: more headers a request ID is read from.
    #[serde(default)]
    pub request_id_aliases: Vec<String>,
    /// `correlation_id_header` (default `x-correlation-id`).
    pub correlation_id_header: Option<String>,
    /// `correlation_id_aliases`: more headers a correlation ID is read from.
    #[serde(default)]
    pub correlation_id_aliases: Vec<String>,
    /// `propagate_headers`: plain headers carried from inbound to outbound.
    #[serde(default)]
    pub propagate_headers: Vec<String>,
    /// `service_name`: this service's name (outgoing `x-service-name`, OTLP
    /// `service.name`).
    pub service_name: Option<String>,
    /// `service_version`: this service's version.
    pub service_version: Option<String>,
    /// `traceresponse`: send a W3C `traceresponse` header (default false).
    pub traceresponse: Option<bool>,
    /// `otlp_endpoint`: the collector's base URL; absent means no export.
    pub otlp_endpoint: Option<String>,
    /// `otlp_protocol`: `"grpc"` (default) or `"http/protobuf"`.
    pub otlp_protocol: Option<String>,
    /// `otlp_metrics_interval`: how often metrics are exported (default 60s).
    #[serde(default, deserialize_with = "opt_duration")]
    pub otlp_metrics_interval: Option<Duration>,
}

#[cfg(feature = "context")]
impl ContextConfig {
    /// The context settings this section describes, checked.
    pub fn to_context(&self) -> Result<crate::context::Config, ConfigError> {
        let bad = |e: crate::context::InvalidHeader| {
            ConfigError::field(&format!("context.{}", e.field()), e)
        };
        let mut c = crate::context::Config::new();
        if let Some(v) = self.trust_incoming_ids {
            c = c.trust_incoming_ids(v);
        }
        if let Some(v) = &self.request_id_header {
            c = c.request_id_header(v).map_err(bad)?;
        }
        for v in &self.request_id_aliases {
            c = c.request_id_alias(v).map_err(bad)?;
        }
        if let Some(v) = &self.correlation_id_header {
            c = c.correlation_id_header(v).map_err(bad)?;
        }
        for v in &self.correlation_id_aliases {
            c = c.correlation_id_alias(v).map_err(bad)?;
        }
        for v in &self.propagate_headers {
            c = c.propagate_header(v).map_err(bad)?;
        }
        for (field, v) in [
            ("service_name", &self.service_name),
            ("service_version", &self.service_version),
        ] {
            if let Some(v) = v {
                if v.len() > MAX_SERVICE_LEN {
                    return Err(ConfigError::field(
                        &format!("context.{field}"),
                        format!("is {} bytes long, more than {MAX_SERVICE_LEN}", v.len()),
                    ));
                }
                if http::HeaderValue::from_str(v).is_err() || v.is_empty() {
                    return Err(ConfigError::field(
                        &format!("context.{field}"),
                        format!("{v:?} is not a valid header value"),
                    ));
                }
            }
        }
        if self.service_name.is_some() || self.service_version.is_some() {
            c = c.service(
                self.service_name.as_deref().unwrap_or(""),
                self.service_version.as_deref().unwrap_or(""),
            );
        }
        if let Some(v) = self.traceresponse {
            c = c.traceresponse(v);
        }
        match self.otlp_protocol.as_deref() {
            None | Some("grpc" | "http/protobuf") => {}
            Some(other) => {
                return Err(ConfigError::field(
                    "context.otlp_protocol",
                    format!("{other:?} is not \"grpc\" or \"http/protobuf\""),
                ))
            }
        }
        if let Some(ep) = &self.otlp_endpoint {
            let uri: http::Uri = ep
                .parse()
                .map_err(|e| ConfigError::field("context.otlp_endpoint", e))?;
            if uri.scheme().is_none() || uri.host().is_none() {
                return Err(ConfigError::field(
                    "context.otlp_endpoint",
                    "must be an absolute http(s) URL",
                ));
            }
        }
        if self.otlp_metrics_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::field(
                "context.otlp_metrics_interval",
                "must be greater than zero",
            ));
        }
        Ok(c)
    }

    /// The OTLP export this section describes, when it names an endpoint.
    #[cfg(feature = "otlp")]
    #[cfg_attr(docsrs, doc(cfg(feature = "otlp")))]
    pub fn to_otlp(&self) -> Result<Option<crate::telemetry::otlp::OtlpConfig>, ConfigError> {
        use crate::telemetry::otlp::{OtlpConfig, Protocol};
        self.to_context()?;
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(None);
        };
        let protocol: Protocol = self
            .otlp_protocol
            .as_deref()
            .unwrap_or("grpc")
            .parse()
            .map_err(|e| ConfigError::field("context.otlp_protocol", e))?;
        let mut c = OtlpConfig::new(endpoint.clone())
            .protocol(protocol)
            .service(
                self.service_name
                    .clone()
                    .unwrap_or_else(|| "unknown_service".into()),
                self.service_version.clone().unwrap_or_default(),
            );
        if let Some(d) = self.otlp_metrics_interval {
            c = c.metrics_interval(d);
        }
        Ok(Some(c))
    }
}

/// `[sidecar]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SidecarConfig {
    /// `listen`: the address to serve on (overridden by `--listen`).
    pub listen: Option<SocketAddr>,
    /// `upstream`: the absolute `http://` URI to forward to, with an
    /// optional path prefix (overridden by `--upstream`).
    pub upstream: Option<String>,
    /// `workers`: how many threads serve connections, each with its own
    /// listener and connection pool; default: one per CPU.
    pub workers: Option<usize>,
    /// `header_read_timeout`: how long a connection may take to send a
    /// request's head, from the moment it is accepted or its previous
    /// response was sent; then it is closed (default 10 s).
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// `idle_timeout`: how long a keep-alive connection may sit between
    /// requests, with no request in flight and nothing read or written;
    /// then it is closed (default 60 s).
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// `max_connections`: the most client connections served at once; at
    /// the limit, new connections wait in the listen backlog until one
    /// closes. Default: half the file-descriptor limit less 64 (each
    /// connection may hold one upstream connection too), at least 1.
    pub max_connections: Option<usize>,
    /// `log`: what is logged to stderr, as `RUST_LOG` takes it (`"warn"`,
    /// `"info,tower_shield=debug"`); `RUST_LOG` wins when set. Default
    /// `"info"`.
    pub log: Option<String>,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        Self {
            listen: None,
            upstream: None,
            workers: None,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: None,
            log: None,
        }
    }
}

/// The default `[sidecar] header_read_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The default `[sidecar] idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// `[timeout]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TimeoutConfig {
    /// `request`: how long one attempt may take to answer with a response
    /// head, default `"5s"` ([`DEFAULT_TIMEOUT`](crate::stack::DEFAULT_TIMEOUT)).
    /// Under `[retry]`, each attempt has its own.
    #[serde(deserialize_with = "duration")]
    pub request: Duration,
    /// `body_idle`: how long a response body may send nothing between two
    /// frames; then the call fails, its connection is ended and it counts
    /// as the upstream's failure. Default `"30s"`
    /// ([`DEFAULT_BODY_IDLE`](crate::stack::DEFAULT_BODY_IDLE)).
    #[serde(deserialize_with = "duration")]
    pub body_idle: Duration,
    /// `total`: how long a whole call may take to answer, every attempt and
    /// the delays between them included; absent means no such limit.
    #[serde(deserialize_with = "opt_duration")]
    pub total: Option<Duration>,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            request: crate::stack::DEFAULT_TIMEOUT,
            body_idle: crate::stack::DEFAULT_BODY_IDLE,
            total: None,
        }
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    duration(de).map(Some)
}

/// Parses a duration string such as `"250ms"`, `"5s"` or `"1m 30s"`.
fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    humantime::parse_duration(&text).map_err(|err| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?}: {err} (write durations like \"250ms\" or \"5s\")"
        ))
    })
}

/// The most serving threads the sidecar starts: each holds a runtime and
/// its own upstream connections, so more than this only spends file
/// descriptors.
pub const MAX_WORKERS: usize = 256;

/// The longest `service_name` or `service_version`: they are sent on every
/// outgoing request.
pub const MAX_SERVICE_LEN: usize = 256;

/// A configuration that could not be read, parsed or accepted.
#[derive(Debug)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    /// An error about one field, named by its dotted path (`timeout.request`).
    pub fn field(field: &str, problem: impl fmt::Display) -> Self {
        Self {
            message: format!("invalid `{field}`: {problem}"),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ConfigError {}

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|err| ConfigError {
            message: err.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
            message: format!("cannot read {}: {err}", path.display()),
        })?;
        Self::from_toml(&text).map_err(|err| ConfigError {
            message: format!("{}: {}", path.display(), err.message),
        })
    }

    /// The circuit breaker `[breaker]` describes, if the section is there.
    #[cfg(feature = "breaker")]
    #[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
    pub fn breaker_layer(
        &self,
    ) -> Result<Option<crate::breaker::CircuitBreakerLayer>, ConfigError> {
        self.breaker
            .clone()
            .map(crate::breaker::CircuitBreakerLayer::new)
            .transpose()
            .map_err(|err| ConfigError::field(&format!("breaker.{}", err.field()), err))
    }

    /// The response cache `[cache]` describes, if the section is there.
    #[cfg(feature = "cache")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
    pub fn cache_layer(
        &self,
    ) -> Result<Option<crate::cache::CacheLayer<crate::cache::ConfiguredStore>>, ConfigError> {
        self.cache
            .clone()
            .map(crate::cache::CacheLayer::from_config)
            .transpose()
            .map_err(|err| ConfigError::field(&format!("cache.{}", err.field()), err))
    }

    /// The retry layer `[retry]` describes, if the section is there.
    #[cfg(feature = "retry")]
    #[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
    pub fn retry_layer(&self) -> Result<Option<crate::retry::RetryLayer>, ConfigError> {
        self.retry
            .clone()
            .map(crate::retry::RetryLayer::new)
            .transpose()
            .map_err(|err| ConfigError::field(&format!("retry.{}", err.field()), err))
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("timeout.request", Some(self.timeout.request)),
            ("timeout.body_idle", Some(self.timeout.body_idle)),
            ("timeout.total", self.timeout.total),
            (
                "sidecar.header_read_timeout",
                Some(self.sidecar.header_read_timeout),
            ),
            ("sidecar.idle_timeout", Some(self.sidecar.idle_timeout)),
        ] {
            if value.is_some_and(|d| d.is_zero()) {
                return Err(ConfigError::field(field, "must be greater than zero"));
            }
        }
        if self.sidecar.max_connections == Some(0) {
            return Err(ConfigError::field(
                "sidecar.max_connections",
                "must be at least 1",
            ));
        }
        if let Some(workers) = self.sidecar.workers {
            if !(1..=MAX_WORKERS).contains(&workers) {
                return Err(ConfigError::field(
                    "sidecar.workers",
                    format!("must be between 1 and {MAX_WORKERS}, not {workers}"),
                ));
            }
        }
        #[cfg(feature = "breaker")]
        self.breaker_layer()?;
        #[cfg(feature = "retry")]
        self.retry_layer()?;
        #[cfg(feature = "cache")]
        if let Some(cache) = &self.cache {
            cache
                .validate()
                .map_err(|err| ConfigError::field(&format!("cache.{}", err.field()), err))?;
        }
        #[cfg(feature = "context")]
        if let Some(context) = &self.context {
            context.to_context()?;
        }
        #[cfg(feature = "limit")]
        if let Some(limit) = &self.rate_limit {
            limit
                .validate()
                .map_err(|err| ConfigError::field("rate_limit", err))?;
        }
        if let Some(upstream) = &self.sidecar.upstream {
            let uri: http::Uri = upstream
                .parse()
                .map_err(|err| ConfigError::field("sidecar.upstream", err))?;
            // `http` reads a port it cannot hold as no port at all (then 80).
            let host_port = uri
                .authority()
                .map_or("", |a| a.as_str().rsplit('@').next().unwrap_or(""));
            if let Some((_, port)) = host_port.rsplit_once(':') {
                if !port.contains(']') && !port.is_empty() && port.parse::<u16>().is_err() {
                    return Err(ConfigError::field(
                        "sidecar.upstream",
                        format!("port {port} is out of range (1 to 65535)"),
                    ));
                }
            }
            crate::proxy::ReverseProxyLayer::new(uri)
                .map_err(|err| ConfigError::field("sidecar.upstream", err))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_full_file() {
        let empty = Config::from_toml("").unwrap();
        assert_eq!(empty.timeout.request, Duration::from_secs(5));
        assert!(empty.sidecar.upstream.is_none());
        let full = Config::from_toml(
            "[sidecar]\nlisten = \"127.0.0.1:8080\"\nupstream = \"http://127.0.0.1:9000/api\"\n\
             header_read_timeout = \"2s\"\nidle_timeout = \"30s\"\nmax_connections = 100\nlog = \"warn\"\n\
             [timeout]\nrequest = \"1m 30s\"\nbody_idle = \"10s\"\ntotal = \"3m\"\n",
        )
        .unwrap();
        assert_eq!(full.timeout.request, Duration::from_secs(90));
        assert_eq!(full.timeout.body_idle, Duration::from_secs(10));
        assert_eq!(full.timeout.total, Some(Duration::from_secs(180)));
        assert_eq!(full.sidecar.header_read_timeout, Duration::from_secs(2));
        assert_eq!(full.sidecar.idle_timeout, Duration::from_secs(30));
        assert_eq!(full.sidecar.max_connections, Some(100));
        assert_eq!(full.sidecar.log.as_deref(), Some("warn"));
        assert_eq!(full.sidecar.listen, Some("127.0.0.1:8080".parse().unwrap()));
    }

    #[cfg(feature = "breaker")]
    #[test]
    fn breaker_section() {
        let config = Config::from_toml(
            "[breaker]\nmode = \"rate\"\nfailure_rate = 25.5\nwindow = \"10s\"\nmin_calls = 5\nslow_call_duration = \"200ms\"\nslow_call_rate = 80\nopen_for = \"5s\"\nopen_for_max = \"1m\"\nhalf_open_probes = 2\nclose_after = 4\nkey = \"route\"\nrespect_retry_after = true\n",
        )
        .unwrap();
        let b = config.breaker.as_ref().unwrap();
        let mut expected = crate::breaker::Config::default()
            .min_calls(5)
            .failure_rate(25.5)
            .window_duration(Duration::from_secs(10))
            .slow_call_duration(Duration::from_millis(200))
            .slow_call_rate(80.0)
            .open_for(Duration::from_secs(5))
            .open_for_max(Duration::from_secs(60))
            .half_open_probes(2)
            .close_after(4)
            .key(crate::breaker::KeyBy::Route)
            .respect_retry_after(crate::breaker::DEFAULT_MAX_RETRY_AFTER);
        // Not written in the file: the one default applies.
        expected.max_retry_after = None;
        assert_eq!(b, &expected);
        assert_eq!(
            b.retry_after_cap(),
            Some(crate::breaker::DEFAULT_MAX_RETRY_AFTER)
        );
        let counted = Config::from_toml("[breaker]\nwindow = 50\n").unwrap();
        assert_eq!(
            counted.breaker.unwrap(),
            crate::breaker::Config::default().window_calls(50)
        );
        assert!(Config::from_toml("").unwrap().breaker.is_none());
    }

    #[cfg(feature = "retry")]
    #[test]
    fn retry_section() {
        let config = Config::from_toml(
            "[retry]\nmax_attempts = 4\nbase_delay = \"50ms\"\nmax_delay = \"2s\"\nmultiplier = 3.0\njitter = \"equal\"\ndeadline = \"5s\"\nbudget_percent = 10\nmax_replay_body = 1024\nmax_replay_total = 4096\nretry_non_idempotent = true\nrespect_retry_after = false\nmax_retry_after = \"10s\"\n",
        )
        .unwrap();
        let expected = crate::retry::Config::default()
            .max_attempts(4)
            .base_delay(Duration::from_millis(50))
            .max_delay(Duration::from_secs(2))
            .multiplier(3.0)
            .jitter(crate::retry::Jitter::Equal)
            .deadline(Duration::from_secs(5))
            .budget_percent(10.0)
            .max_replay_body(1024)
            .max_replay_total(4096)
            .retry_non_idempotent(true)
            .respect_retry_after(false)
            .max_retry_after(Duration::from_secs(10));
        assert_eq!(config.retry.unwrap(), expected);
        assert!(Config::from_toml("").unwrap().retry.is_none());
        assert_eq!(
            Config::from_toml("[retry]\n").unwrap().retry.unwrap(),
            crate::retry::Config::default()
        );
    }

    /// Every default lives in one place: an empty section is the layer's
    /// own default, and a stack from an empty file is the stack's default.
    #[test]
    fn code_and_toml_defaults_agree() {
        let config = Config::from_toml("[timeout]\n[sidecar]\n").unwrap();
        assert_eq!(config.timeout.request, crate::stack::DEFAULT_TIMEOUT);
        assert_eq!(config.timeout.body_idle, crate::stack::DEFAULT_BODY_IDLE);
        assert_eq!(config.timeout.total, None);
        assert_eq!(
            config.sidecar.header_read_timeout,
            DEFAULT_HEADER_READ_TIMEOUT
        );
        assert_eq!(config.sidecar.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert_eq!(config.sidecar.max_connections, None);
        assert_eq!(
            format!("{:?}", config.sidecar),
            format!("{:?}", SidecarConfig::default())
        );
        #[cfg(feature = "breaker")]
        {
            let config = Config::from_toml("[breaker]\n").unwrap();
            assert_eq!(config.breaker.unwrap(), crate::breaker::Config::default());
        }
        #[cfg(feature = "retry")]
        {
            let config = Config::from_toml("[retry]\n").unwrap();
            assert_eq!(config.retry.unwrap(), crate::retry::Config::default());
        }
        #[cfg(feature = "cache")]
        {
            let config = Config::from_toml("[cache]\n").unwrap();
            assert_eq!(config.cache.unwrap(), crate::cache::Config::default());
        }
        #[cfg(feature = "context")]
        {
            let config = Config::from_toml("[context]\n").unwrap();
            assert_eq!(
                format!("{:?}", config.context.unwrap().to_context().unwrap()),
                format!("{:?}", crate::context::Config::new())
            );
        }
    }

    #[cfg(feature = "cache")]
    #[test]
    fn cache_section() {
        use crate::cache::{Config as Cache, Mode};
        let config = Config::from_toml(
            "[cache]\nstore = \"memory\"\nmode = \"private\"\ndefault_ttl = \"10s\"\nmax_ttl = \"1h\"\n\
             max_entry_bytes = 2048\nmax_bytes = 1048576\nstale_while_revalidate = \"30s\"\n\
             stale_if_error = \"5m\"\nmax_stale = \"1h\"\ncoalesce = false\nx_cache_header = true\n\
             [[cache.routes]]\nprefix = \"/static/\"\nttl = \"1d\"\n",
        )
        .unwrap();
        let expected = Cache::default()
            .mode(Mode::Private)
            .default_ttl(Duration::from_secs(10))
            .max_ttl(Duration::from_secs(3600))
            .max_entry_bytes(2048)
            .max_bytes(1_048_576)
            .stale_while_revalidate(Duration::from_secs(30))
            .stale_if_error(Duration::from_secs(300))
            .max_stale(Duration::from_secs(3600))
            .coalesce(false)
            .x_cache_header(true)
            .route("/static/", Duration::from_secs(86_400));
        assert_eq!(config.cache.unwrap(), expected);
        #[cfg(feature = "redis")]
        {
            let config = Config::from_toml(
                "[cache]\nstore = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nnamespace = \"edge\"\nstore_timeout = \"100ms\"\n",
            )
            .unwrap();
            let expected = Cache::default()
                .redis("redis://127.0.0.1:6379")
                .namespace("edge")
                .store_timeout(Duration::from_millis(100));
            assert_eq!(config.cache.unwrap(), expected);
            let err = Config::from_toml("[cache]\nstore = \"redis\"\n").unwrap_err();
            assert!(err.to_string().contains("`cache.redis_url`"), "{err}");
            let err = Config::from_toml("[cache]\nstore = \"redis\"\nredis_url = \"http://x\"\n")
                .unwrap()
                .cache_layer()
                .unwrap_err();
            assert!(err.to_string().contains("`cache.redis_url`"), "{err}");
        }
        for (text, expected) in [
            ("[cache]\nnamespace = \"a*\"\n", "`cache.namespace`"),
            ("[cache]\nstore_timeout = \"0s\"\n", "`cache.store_timeout`"),
            ("[cache]\nstore = \"disk\"\n", "unknown variant `disk`"),
            ("[cache]\nmode = \"public\"\n", "unknown variant `public`"),
            ("[cache]\nmax_entry_bytes = 0\n", "`cache.max_entry_bytes`"),
            ("[cache]\nttl = \"1s\"\n", "unknown field `ttl`"),
            (
                "[[cache.routes]]\nprefix = \"x\"\nttl = \"1s\"\n",
                "`cache.routes`",
            ),
        ] {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("bogus = 1", "unknown field `bogus`"),
            (
                "[timeout]\nrequest = \"5 parsecs\"",
                "invalid duration \"5 parsecs\"",
            ),
            ("[timeout]\nrequest = 5", "invalid type"),
            ("[timeout]\nrequest = \"0s\"", "`timeout.request`"),
            ("[timeout]\nbody_idle = \"0s\"", "`timeout.body_idle`"),
            ("[timeout]\ntotal = \"0s\"", "`timeout.total`"),
            ("[timeout]\ntotal = \"soon\"", "invalid duration \"soon\""),
            (
                "[sidecar]\nheader_read_timeout = \"0s\"",
                "`sidecar.header_read_timeout`",
            ),
            (
                "[sidecar]\nidle_timeout = \"0ms\"",
                "`sidecar.idle_timeout`",
            ),
            (
                "[sidecar]\nmax_connections = 0",
                "`sidecar.max_connections`",
            ),
            ("[sidecar]\nmax_connections = -1", "invalid value"),
            #[cfg(feature = "retry")]
            ("[retry]\nmax_attempts = 0", "`retry.max_attempts`"),
            #[cfg(feature = "retry")]
            ("[retry]\nmultiplier = nan", "`retry.multiplier`"),
            #[cfg(feature = "retry")]
            ("[retry]\nbudget_percent = 2000", "`retry.budget_percent`"),
            #[cfg(feature = "retry")]
            (
                "[retry]\njitter = \"sometimes\"",
                "unknown variant `sometimes`",
            ),
            #[cfg(feature = "retry")]
            ("[retry]\nmax_atempts = 2", "unknown field `max_atempts`"),
            (
                "[sidecar]\nupstream = \"ftp://127.0.0.1/\"",
                "`sidecar.upstream`",
            ),
            ("[sidecar]\nlisten = \"nowhere\"", "invalid socket address"),
            (
                "[sidecar]\nupstream = \"http://127.0.0.1:99999/\"",
                "port 99999 is out of range",
            ),
            (
                "[sidecar]\nworkers = 9223372036854775807",
                "`sidecar.workers`",
            ),
            ("[sidecar]\nworkers = 1000000000000", "`sidecar.workers`"),
            ("[sidecar]\nworkers = 400", "between 1 and 256"),
            #[cfg(feature = "breaker")]
            (
                "[breaker]\nmode = \"rate\"\nfailure_rate = 101",
                "`breaker.failure_rate`",
            ),
            #[cfg(feature = "breaker")]
            (
                "[breaker]\nmode = \"rate\"\nfailure_rate = nan",
                "`breaker.failure_rate`",
            ),
            #[cfg(feature = "breaker")]
            ("[breaker]\nwindow = 0", "`breaker.window`"),
            #[cfg(feature = "breaker")]
            ("[breaker]\nwindow = \"0s\"", "`breaker.window`"),
            #[cfg(feature = "breaker")]
            ("[breaker]\nwindow = -3", "out of range"),
            #[cfg(feature = "breaker")]
            (
                "[breaker]\nmode = \"sometimes\"",
                "unknown variant `sometimes`",
            ),
            #[cfg(feature = "breaker")]
            ("[breaker]\nkey = \"tenant\"", "unknown variant `tenant`"),
            #[cfg(feature = "breaker")]
            ("[breaker]\nfailure_rate = 50", "needs mode"),
            #[cfg(feature = "breaker")]
            ("[breaker]\nopen_for = \"0s\"", "`breaker.open_for`"),
            #[cfg(feature = "breaker")]
            (
                "[breaker]\nhalf_open_probe = 2",
                "unknown field `half_open_probe`",
            ),
            ("[timeout", "TOML parse error"),
        ];
        for (text, expected) in cases {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        #[cfg(feature = "context")]
        {
            let long = "a".repeat(MAX_SERVICE_LEN + 1);
            let err = Config::from_toml(&format!("[context]\nservice_name = \"{long}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("`context.service_name`"), "{err}");
            let ok = "a".repeat(MAX_SERVICE_LEN);
            assert!(Config::from_toml(&format!("[context]\nservice_name = \"{ok}\"\n")).is_ok());
        }
        assert!(Config::from_toml("[sidecar]\nworkers = 256\n").is_ok());
    }
}
