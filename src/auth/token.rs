//! Static service tokens: named, compared in constant time, reloadable.

use super::{Method, SecretError, SecretRef, ServiceIdentity};
use secrecy::{ExposeSecret, SecretString};
use std::{
    fmt,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};
use subtle::ConstantTimeEq;

/// One service's tokens: the service it names, the scopes it grants, and
/// where its secret is (each line of which is a live token).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
pub struct TokenEntry {
    service: String,
    #[cfg_attr(feature = "config", serde(default))]
    scopes: Vec<String>,
    #[cfg_attr(feature = "config", serde(flatten))]
    secret: SecretRef,
}

impl TokenEntry {
    /// The tokens in `secret` identify `service`.
    pub fn new(service: impl Into<String>, secret: SecretRef) -> Self {
        Self {
            service: service.into(),
            scopes: Vec::new(),
            secret,
        }
    }

    /// The scopes the tokens grant.
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

struct Live {
    token: SecretString,
    identity: ServiceIdentity,
}

/// Static service tokens, each mapped to a [`ServiceIdentity`].
///
/// Every live token is compared with the presented one in constant time
/// (`subtle`): the time a check takes depends on the number and lengths of
/// the tokens, not on how much of one matched. Several tokens may be live
/// for one service at once, so a token is rotated with overlap: add the new
/// one, move callers over, remove the old one, with a
/// [`reload`](Self::reload) (or a [`watch`](Self::watch) of the files)
/// after each step.
///
/// Clones share the live set: a reload through one is seen by all.
///
/// ```
/// use tower_shield::auth::{SecretRef, StaticTokens, TokenEntry};
///
/// let tokens = StaticTokens::load(vec![
///     TokenEntry::new("billing", SecretRef::value("s3cr3t-billing")).scopes(["orders:read"]),
/// ])?;
/// let id = tokens.check("s3cr3t-billing").unwrap();
/// assert_eq!(id.name(), "billing");
/// assert!(id.has_scope("orders:read"));
/// assert!(tokens.check("s3cr3t-billinG").is_none());
/// // Nothing secret is ever printed.
/// assert!(!format!("{tokens:?}").contains("s3cr3t"));
/// # Ok::<(), tower_shield::auth::SecretError>(())
/// ```
#[derive(Clone)]
pub struct StaticTokens {
    entries: Arc<[TokenEntry]>,
    live: Arc<RwLock<Arc<[Live]>>>,
}

impl StaticTokens {
    /// Reads every entry's secret now.
    ///
    /// # Errors
    ///
    /// The first secret that cannot be read, named.
    pub fn load(entries: Vec<TokenEntry>) -> Result<Self, SecretError> {
        let live = read_all(&entries)?;
        Ok(Self {
            entries: entries.into(),
            live: Arc::new(RwLock::new(live)),
        })
    }

    /// Reads every secret again and makes the result the live set, all at
    /// once; returns how many tokens are live.
    ///
    /// # Errors
    ///
    /// A secret that cannot be read, named; the live set is then left as
    /// it was.
    pub fn reload(&self) -> Result<usize, SecretError> {
        let live = read_all(&self.entries)?;
        let count = live.len();
        *self.live.write().unwrap_or_else(|e| e.into_inner()) = live;
        Ok(count)
    }

    /// How many tokens are live.
    pub fn len(&self) -> usize {
        self.live.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether no token is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The identity `token` belongs to, if it is live.
    pub fn check(&self, token: &str) -> Option<ServiceIdentity> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let presented = token.as_bytes();
        let mut found = None;
        // Every token is compared, match or not.
        for entry in live.iter() {
            let equal: bool = entry
                .token
                .expose_secret()
                .as_bytes()
                .ct_eq(presented)
                .into();
            if equal && found.is_none() {
                found = Some(entry.identity.clone());
            }
        }
        found
    }

    /// Reloads whenever one of the token files changes (its modification
    /// time or length), checking every `every`, until the returned handle
    /// is aborted or the runtime ends. A reload that fails is logged and
    /// the live set kept.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn watch(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let tokens = self.clone();
        let mut seen = tokens.stamps();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let now = tokens.stamps();
                if now == seen {
                    continue;
                }
                seen = now;
                match tokens.reload() {
                    Ok(count) => tracing::info!(tokens = count, "service tokens reloaded"),
                    Err(err) => tracing::warn!(error = %err, "service tokens not reloaded"),
                }
            }
        })
    }

    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.entries
            .iter()
            .filter_map(|entry| entry.secret.path())
            .map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    }
}

fn read_all(entries: &[TokenEntry]) -> Result<Arc<[Live]>, SecretError> {
    let mut live = Vec::new();
    for entry in entries {
        let identity = ServiceIdentity::new(
            entry.service.as_str(),
            entry.scopes.iter().map(String::as_str),
            Method::StaticToken,
        );
        for token in entry.secret.read_lines()? {
            live.push(Live {
                token,
                identity: identity.clone(),
            });
        }
    }
    Ok(live.into())
}

impl fmt::Debug for StaticTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticTokens")
            .field("entries", &self.entries)
            .field("live", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_with_overlap_through_reload() {
        let path = std::env::temp_dir().join(format!("shield-tokens-{}", std::process::id()));
        std::fs::write(&path, "old-token\n").unwrap();
        let tokens = StaticTokens::load(vec![
            TokenEntry::new("billing", SecretRef::file(&path)),
            TokenEntry::new("search", SecretRef::value("search-token")).scopes(["read"]),
        ])
        .unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(!tokens.is_empty());
        assert_eq!(tokens.check("old-token").unwrap().name(), "billing");
        let search = tokens.check("search-token").unwrap();
        assert_eq!(
            (search.name(), search.scopes()),
            ("search", &["read".into()][..])
        );
        assert_eq!(search.method(), Method::StaticToken);

        // Overlap: both live.
        std::fs::write(&path, "old-token\nnew-token\n").unwrap();
        assert_eq!(tokens.clone().reload().unwrap(), 3);
        assert!(tokens.check("old-token").is_some());
        assert!(tokens.check("new-token").is_some());

        // The old one retired.
        std::fs::write(&path, "new-token\n").unwrap();
        tokens.reload().unwrap();
        assert!(tokens.check("old-token").is_none());
        assert!(tokens.check("new-token").is_some());
        assert!(tokens.check("").is_none());
        assert!(tokens.check("new-token ").is_none());

        // A reload that fails keeps the live set.
        std::fs::remove_file(&path).unwrap();
        assert!(tokens.reload().is_err());
        assert!(tokens.check("new-token").is_some());
        let shown = format!("{tokens:?}");
        assert!(
            !shown.contains("search-token") && shown.contains("Value([REDACTED])"),
            "{shown}"
        );
        assert!(
            shown.starts_with("StaticTokens { entries: [") && shown.ends_with("live: 2 }"),
            "{shown}"
        );

        // An empty file is an error, not an empty set.
        let empty = std::env::temp_dir().join(format!("shield-no-tokens-{}", std::process::id()));
        std::fs::write(&empty, "\n").unwrap();
        let err = StaticTokens::load(vec![TokenEntry::new("billing", SecretRef::file(&empty))]);
        std::fs::remove_file(&empty).unwrap();
        assert!(err.unwrap_err().to_string().contains("is empty"));
        // No entries: none live.
        let none = StaticTokens::load(Vec::new()).unwrap();
        assert!(none.is_empty());
        assert!(none.check("").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_reloads_a_changed_file() {
        let path = std::env::temp_dir().join(format!("shield-watch-{}", std::process::id()));
        std::fs::write(&path, "first").unwrap();
        let tokens =
            StaticTokens::load(vec![TokenEntry::new("a", SecretRef::file(&path))]).unwrap();
        let watch = tokens.watch(Duration::from_millis(10));
        // The watch's first tick, at once: nothing has changed.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // A different length, so the change shows even where the file
        // system's clock is coarse.
        std::fs::write(&path, "second-token").unwrap();
        // Nothing is read again until the next tick (paused clock).
        tokio::task::yield_now().await;
        let before_tick = tokens.check("second-token").is_some();
        tokio::time::advance(Duration::from_millis(10)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        watch.abort();
        std::fs::remove_file(&path).unwrap();
        assert!(!before_tick, "reloaded before the tick");
        assert!(
            tokens.check("second-token").is_some(),
            "the watch did not reload"
        );
        assert!(tokens.check("first").is_none());
    }
}
