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
    /// `[timeout]`: the whole-request timeout.
    pub timeout: TimeoutConfig,
}

/// `[sidecar]`.
#[derive(Debug, Clone, Default, Deserialize)]
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
}

/// `[timeout]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TimeoutConfig {
    /// `request`: how long a whole request may take, default `"5s"`.
    #[serde(deserialize_with = "duration")]
    pub request: Duration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            request: Duration::from_secs(5),
        }
    }
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

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.timeout.request.is_zero() {
            return Err(ConfigError::field(
                "timeout.request",
                "must be greater than zero",
            ));
        }
        if self.sidecar.workers == Some(0) {
            return Err(ConfigError::field("sidecar.workers", "must be at least 1"));
        }
        if let Some(upstream) = &self.sidecar.upstream {
            let uri: http::Uri = upstream
                .parse()
                .map_err(|err| ConfigError::field("sidecar.upstream", err))?;
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
            "[sidecar]\nlisten = \"127.0.0.1:8080\"\nupstream = \"http://127.0.0.1:9000/api\"\n[timeout]\nrequest = \"1m 30s\"\n",
        )
        .unwrap();
        assert_eq!(full.timeout.request, Duration::from_secs(90));
        assert_eq!(full.sidecar.listen, Some("127.0.0.1:8080".parse().unwrap()));
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
            (
                "[sidecar]\nupstream = \"ftp://127.0.0.1/\"",
                "`sidecar.upstream`",
            ),
            ("[sidecar]\nlisten = \"nowhere\"", "invalid socket address"),
            ("[timeout", "TOML parse error"),
        ];
        for (text, expected) in cases {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
