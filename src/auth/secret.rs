//! Secrets by reference: a value, an environment variable or a file.

use secrecy::{ExposeSecret, SecretString};
use std::{fmt, path::PathBuf};

/// Where a secret comes from. A configuration names the variable or the
/// file, never the secret itself; the value form is for code and tests.
///
/// A variable or file may hold several secrets, one per line (blank lines
/// and the whitespace around each line are ignored): a token is rotated by
/// adding the new one, then removing the old one, with a reload between.
///
/// `Debug` shows where the secret comes from, never the secret.
#[derive(Clone)]
pub enum SecretRef {
    /// The secret itself.
    Value(SecretString),
    /// An environment variable that holds it.
    Env(String),
    /// A file that holds it.
    File(PathBuf),
}

impl SecretRef {
    /// The secret itself (held as a [`SecretString`]: zeroized on drop,
    /// never printed).
    pub fn value(secret: impl Into<String>) -> Self {
        Self::Value(SecretString::from(secret.into()))
    }

    /// The environment variable `name`.
    pub fn env(name: impl Into<String>) -> Self {
        Self::Env(name.into())
    }

    /// The file at `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File(path.into())
    }

    /// Reads the secret now: the whole value, its surrounding whitespace
    /// trimmed.
    ///
    /// # Errors
    ///
    /// [`SecretError`] naming the variable or file when it is missing,
    /// unreadable or empty.
    pub fn read(&self) -> Result<SecretString, SecretError> {
        let raw = match self {
            Self::Value(secret) => secret.expose_secret().to_owned(),
            Self::Env(name) => std::env::var(name).map_err(|_| SecretError {
                what: format!("environment variable {name}"),
                why: "is not set (or not UTF-8)".into(),
            })?,
            Self::File(path) => std::fs::read_to_string(path).map_err(|_| SecretError {
                what: format!("file {}", path.display()),
                why: "cannot be read as UTF-8".into(),
            })?,
        };
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(SecretError {
                what: self.describe(),
                why: "is empty".into(),
            });
        }
        Ok(SecretString::from(trimmed.to_owned()))
    }

    /// Reads the secrets now, one per non-blank line.
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    pub fn read_lines(&self) -> Result<Vec<SecretString>, SecretError> {
        let all = self.read()?;
        Ok(all
            .expose_secret()
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(|line| SecretString::from(line.to_owned()))
            .collect())
    }

    /// The file's path, if the secret is in a file.
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::File(path) => Some(path),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Value(_) => "the inline secret".to_owned(),
            Self::Env(name) => format!("environment variable {name}"),
            Self::File(path) => format!("file {}", path.display()),
        }
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value([REDACTED])"),
            Self::Env(name) => f.debug_tuple("Env").field(name).finish(),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// A secret could not be read. It names where the secret was looked for,
/// never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretError {
    what: String,
    why: std::borrow::Cow<'static, str>,
}

impl SecretError {
    pub(crate) fn invalid(what: &str) -> Self {
        Self {
            what: what.to_owned(),
            why: "is not a valid header value".into(),
        }
    }

    pub(crate) fn other(what: &str, why: String) -> Self {
        Self {
            what: what.to_owned(),
            why: why.into(),
        }
    }

    /// What was looked for: `environment variable NAME` or `file PATH`.
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.what, self.why)
    }
}

impl std::error::Error for SecretError {}

#[cfg(feature = "config")]
mod de {
    use super::SecretRef;
    use std::path::PathBuf;

    /// `env = "VAR"`, `file = "PATH"` or (for tests and demos only)
    /// `value = "..."`: exactly one.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct Raw {
        env: Option<String>,
        file: Option<PathBuf>,
        value: Option<String>,
    }

    impl TryFrom<Raw> for SecretRef {
        type Error = String;

        fn try_from(raw: Raw) -> Result<Self, String> {
            match (raw.env, raw.file, raw.value) {
                (Some(env), None, None) => Ok(SecretRef::env(env)),
                (None, Some(file), None) => Ok(SecretRef::file(file)),
                (None, None, Some(value)) => Ok(SecretRef::value(value)),
                _ => Err("give exactly one of `env`, `file` or `value`".to_owned()),
            }
        }
    }

    impl<'de> serde::Deserialize<'de> for SecretRef {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Raw::deserialize(d)?
                .try_into()
                .map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_read_trimmed_by_line_and_never_printed() {
        let secret = SecretRef::value("  one \n\n two\n");
        assert_eq!(format!("{secret:?}"), "Value([REDACTED])");
        let lines = secret.read_lines().unwrap();
        let lines: Vec<&str> = lines.iter().map(|s| s.expose_secret()).collect();
        assert_eq!(lines, ["one", "two"]);
        assert_eq!(secret.read().unwrap().expose_secret(), "one \n\n two");

        let missing = SecretRef::env("TOWER_SHIELD_TEST_SURELY_UNSET");
        let err = missing.read().unwrap_err();
        assert_eq!(
            err.what(),
            "environment variable TOWER_SHIELD_TEST_SURELY_UNSET"
        );
        assert!(err.to_string().contains("is not set"));

        let dir = std::env::temp_dir().join(format!("shield-secret-{}", std::process::id()));
        std::fs::write(&dir, "   \n").unwrap();
        let err = SecretRef::file(&dir).read().unwrap_err();
        assert!(err.to_string().ends_with("is empty"), "{err}");
        assert_eq!(SecretRef::file(&dir).path(), Some(dir.as_path()));
        std::fs::remove_file(&dir).unwrap();
        assert!(SecretRef::file(&dir).read().is_err());
        assert_eq!(SecretRef::env("X").path(), None);
    }
}
