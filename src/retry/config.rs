//! The retry settings, the backoff and its jitter.

use std::{fmt, time::Duration};

/// How a backoff delay is randomised, so that clients that failed together
/// do not retry together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(rename_all = "lowercase"))]
#[non_exhaustive]
pub enum Jitter {
    /// The exponential delay exactly.
    None,
    /// Anywhere between zero and the exponential delay (AWS "full jitter").
    #[default]
    Full,
    /// Half the exponential delay, plus up to that half again.
    Equal,
    /// Anywhere between the base delay and three times the previous delay,
    /// capped (AWS "decorrelated jitter"); it ignores `multiplier`.
    Decorrelated,
}

/// A retry setting that is out of range; [`field`](InvalidConfig::field)
/// names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    field: &'static str,
    problem: &'static str,
}

impl InvalidConfig {
    /// The name of the offending setting, as in the `[retry]` section.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid retry setting `{}`: {}",
            self.field, self.problem
        )
    }
}

impl std::error::Error for InvalidConfig {}

/// What the retry layer does, which is also the sidecar's `[retry]`
/// section: each method is named after its TOML key, and every setting has
/// a default.
///
/// ```
/// use std::time::Duration;
/// use tower_shield::retry::{Config, Jitter};
///
/// let config = Config::default()
///     .max_attempts(4)
///     .base_delay(Duration::from_millis(50))
///     .jitter(Jitter::Equal)
///     .deadline(Duration::from_secs(2));
/// assert!(config.validate().is_ok());
/// assert_eq!(
///     Config::default().multiplier(0.5).validate().unwrap_err().field(),
///     "multiplier"
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(default, deny_unknown_fields))]
pub struct Config {
    pub(crate) max_attempts: u32,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) base_delay: Duration,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) max_delay: Duration,
    pub(crate) multiplier: f64,
    pub(crate) jitter: Jitter,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) deadline: Option<Duration>,
    pub(crate) budget_percent: f64,
    pub(crate) budget_min_per_sec: u32,
    pub(crate) max_replay_body: usize,
    pub(crate) max_replay_total: usize,
    pub(crate) retry_non_idempotent: bool,
    pub(crate) respect_retry_after: bool,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) max_retry_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: Jitter::Full,
            deadline: None,
            budget_percent: 20.0,
            budget_min_per_sec: 10,
            max_replay_body: 64 * 1024,
            max_replay_total: 32 * 1024 * 1024,
            retry_non_idempotent: false,
            respect_retry_after: true,
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl Config {
    /// Attempts in all, the first included (default 3; 1 turns retries
    /// off).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The delay before the first retry, before jitter (default 100 ms).
    pub fn base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self
    }

    /// The longest delay between two attempts (default 10 s).
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// How much each delay grows over the previous one (default 2.0).
    pub fn multiplier(mut self, m: f64) -> Self {
        self.multiplier = m;
        self
    }

    /// How delays are randomised (default [`Jitter::Full`]).
    pub fn jitter(mut self, j: Jitter) -> Self {
        self.jitter = j;
        self
    }

    /// The time from the first attempt after which no retry starts (none by
    /// default). A delay that would end after it, whether from the backoff,
    /// a `Retry-After` or an open circuit breaker, ends the retries instead
    /// and the last result is returned. It does not cut an attempt short:
    /// put a timeout inside the retry for that.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    /// Retries may add at most this percentage of the recent requests
    /// (default 20, over the last 10 s), on top of
    /// [`budget_min_per_sec`](Self::budget_min_per_sec). Shared by every
    /// clone of the layer's services.
    pub fn budget_percent(mut self, p: f64) -> Self {
        self.budget_percent = p;
        self
    }

    /// Retries per second always allowed, however few requests there were
    /// (default 10).
    pub fn budget_min_per_sec(mut self, n: u32) -> Self {
        self.budget_min_per_sec = n;
        self
    }

    /// The largest request body kept for replay (default 64 KiB). A larger
    /// body, or one of unknown length that outgrows it, goes out streaming
    /// on the first attempt and is not retried.
    pub fn max_replay_body(mut self, bytes: usize) -> Self {
        self.max_replay_body = bytes;
        self
    }

    /// The most bytes that the bodies read ahead for replay may hold at
    /// once, across every request in flight through the layer's services
    /// (default 32 MiB). Past it, a request's body is not kept: it goes out
    /// streaming on the first attempt and is not retried.
    pub fn max_replay_total(mut self, bytes: usize) -> Self {
        self.max_replay_total = bytes;
        self
    }

    /// Retries POST, PATCH and other non-idempotent requests too, as if
    /// each carried an `Idempotency-Key` (default false).
    pub fn retry_non_idempotent(mut self, yes: bool) -> Self {
        self.retry_non_idempotent = yes;
        self
    }

    /// Waits for what a 429 or 503 asks in `Retry-After` instead of the
    /// backoff (default true).
    pub fn respect_retry_after(mut self, yes: bool) -> Self {
        self.respect_retry_after = yes;
        self
    }

    /// The longest `Retry-After` obeyed; a longer one is cut to this
    /// (default 30 s).
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = d;
        self
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |field, problem| Err(InvalidConfig { field, problem });
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.max_attempts > 100 {
            return bad("max_attempts", "must be at most 100");
        }
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return bad("multiplier", "must be a number of at least 1.0");
        }
        if self.max_delay < self.base_delay {
            return bad("max_delay", "must not be less than base_delay");
        }
        if !self.budget_percent.is_finite() || !(0.0..=1000.0).contains(&self.budget_percent) {
            return bad("budget_percent", "must be between 0 and 1000");
        }
        if self.deadline == Some(Duration::ZERO) {
            return bad("deadline", "must be more than zero");
        }
        Ok(())
    }

    /// The delay before retry number `retry` (1 for the first retry), given
    /// the previous delay (for [`Jitter::Decorrelated`]; pass the base
    /// delay for the first retry) and `unit`, a random number in `[0, 1)`.
    ///
    /// The result is never more than `max_delay`. Deterministic in its
    /// arguments, so the bounds of every jitter can be checked.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_shield::retry::{Config, Jitter};
    ///
    /// let c = Config::default().jitter(Jitter::None);
    /// let base = Duration::from_millis(100);
    /// assert_eq!(c.backoff(1, base, 0.5), base);
    /// assert_eq!(c.backoff(3, base, 0.5), Duration::from_millis(400));
    /// ```
    pub fn backoff(&self, retry: u32, previous: Duration, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let cap = self.max_delay.as_secs_f64();
        let base = self.base_delay.as_secs_f64();
        let exp = (base
            * self
                .multiplier
                .powi(retry.saturating_sub(1).min(1000) as i32))
        .min(cap);
        let secs = match self.jitter {
            Jitter::None => exp,
            Jitter::Full => exp * unit,
            Jitter::Equal => exp / 2.0 + exp / 2.0 * unit,
            Jitter::Decorrelated => {
                let high = (previous.as_secs_f64() * 3.0).max(base);
                (base + (high - base) * unit).min(cap)
            }
        };
        // As an `f64` a large cap rounds up, past `max_delay` (and, near
        // `Duration::MAX`, past what a `Duration` holds).
        Duration::try_from_secs_f64(secs.clamp(0.0, cap))
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }
}
