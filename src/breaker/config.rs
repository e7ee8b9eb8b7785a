//! Breaker settings.

use super::KeyBy;
use std::{fmt, time::Duration};

/// How failures are detected while the breaker is closed, as the state
/// machine reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Detection {
    /// Open after this many failures in a row.
    Consecutive {
        /// The streak that opens the breaker.
        failures: u32,
    },
    /// Open when at least `failure_rate` percent of the calls in the window
    /// failed, once the window holds `min_calls` calls.
    Rate {
        /// Percent, 0 < rate <= 100.
        failure_rate: f64,
        /// Calls the window must hold before the rate is judged.
        min_calls: u32,
    },
}

/// The window the rates are computed over. In TOML, a number of calls
/// (`window = 100`) or a duration (`window = "10s"`).
///
/// A count window keeps one byte per call for each breaker (at most 10 000
/// calls, so 1 024 keyed breakers hold at most 10 MB); a time window keeps
/// ten buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Window {
    /// The last N calls.
    Calls(u32),
    /// The calls of the last duration, in ten buckets.
    Duration(Duration),
}

#[cfg(feature = "config")]
impl<'de> serde::Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Window;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of calls (100) or a duration (\"10s\")")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Window, E> {
                u32::try_from(v)
                    .map(Window::Calls)
                    .map_err(|_| E::custom(format!("a window of {v} calls is out of range")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Window, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Window, E> {
                humantime::parse_duration(v)
                    .map(Window::Duration)
                    .map_err(|err| {
                        E::custom(format!(
                            "invalid duration {v:?}: {err} (write durations like \"10s\")"
                        ))
                    })
            }
        }
        de.deserialize_any(Visitor)
    }
}

/// How failures are counted while the breaker is closed: `mode` in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(rename_all = "lowercase"))]
#[non_exhaustive]
pub enum Mode {
    /// Open after `failure_threshold` failures in a row.
    #[default]
    Consecutive,
    /// Open at `failure_rate` percent of the calls in the window.
    Rate,
}

/// The failures in a row that open a breaker in the consecutive mode,
/// unless set.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// The failure percentage that opens a breaker in the rate mode, unless set.
pub const DEFAULT_FAILURE_RATE: f64 = 50.0;
/// The longest `Retry-After` a breaker obeys, unless set.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// A breaker's configuration, which is also the sidecar's `[breaker]`
/// section: each method is named after its TOML key. Build it with the
/// methods; check it with [`Config::validate`] (the layer does).
///
/// ```
/// use std::time::Duration;
/// use tower_shield::breaker::Config;
///
/// let config = Config::default()
///     .failure_rate(50.0)
///     .window_calls(20)
///     .min_calls(10)
///     .open_for(Duration::from_secs(5));
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(default, deny_unknown_fields))]
pub struct Config {
    pub(crate) mode: Mode,
    pub(crate) failure_threshold: Option<u32>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) window: Window,
    pub(crate) min_calls: u32,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) slow_call_rate: Option<f64>,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) open_for: Duration,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) open_for_max: Option<Duration>,
    pub(crate) half_open_probes: u32,
    pub(crate) close_after: u32,
    pub(crate) key: KeyBy,
    pub(crate) max_keys: usize,
    pub(crate) respect_retry_after: bool,
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"))]
    pub(crate) max_retry_after: Option<Duration>,
}

impl Default for Config {
    /// Open after 5 failures in a row, for 30 s; one probe at a time; close
    /// after 3 probe successes; one breaker for every request (at most 1024
    /// keyed ones when keyed).
    fn default() -> Self {
        Self {
            mode: Mode::Consecutive,
            failure_threshold: None,
            failure_rate: None,
            window: Window::Calls(100),
            min_calls: 10,
            slow_call_duration: None,
            slow_call_rate: None,
            open_for: Duration::from_secs(30),
            open_for_max: None,
            half_open_probes: 1,
            close_after: 3,
            key: KeyBy::None,
            max_keys: 1024,
            respect_retry_after: false,
            max_retry_after: None,
        }
    }
}

/// A configuration value that makes no sense, named by its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    field: &'static str,
    problem: &'static str,
}

impl InvalidConfig {
    /// The field at fault, as named in the `[breaker]` section.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `breaker.{}`: {}", self.field, self.problem)
    }
}

impl std::error::Error for InvalidConfig {}

impl Config {
    /// Open after `failures` failures in a row (the consecutive mode, the
    /// default; 5 unless set).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.mode = Mode::Consecutive;
        self.failure_threshold = Some(failures);
        self.failure_rate = None;
        self
    }

    /// The same as [`failure_threshold`](Self::failure_threshold).
    pub fn consecutive_failures(self, failures: u32) -> Self {
        self.failure_threshold(failures)
    }

    /// Open when this percentage of the calls in the window failed (the
    /// rate mode).
    pub fn failure_rate(mut self, percent: f64) -> Self {
        self.mode = Mode::Rate;
        self.failure_rate = Some(percent);
        self.failure_threshold = None;
        self
    }

    /// The window: the last `calls` calls.
    pub fn window_calls(mut self, calls: u32) -> Self {
        self.window = Window::Calls(calls);
        self
    }

    /// The window: the calls of the last `duration`.
    pub fn window_duration(mut self, duration: Duration) -> Self {
        self.window = Window::Duration(duration);
        self
    }

    /// Calls the window must hold before a rate is judged (default 10).
    pub fn min_calls(mut self, calls: u32) -> Self {
        self.min_calls = calls;
        self
    }

    /// Calls slower than `duration` count as slow; with
    /// [`slow_call_rate`](Self::slow_call_rate), enough of them open the
    /// breaker. A slow probe counts as a failed one.
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.slow_call_duration = Some(duration);
        self
    }

    /// Open when this percentage of the calls in the window were slow.
    pub fn slow_call_rate(mut self, percent: f64) -> Self {
        self.slow_call_rate = Some(percent);
        self
    }

    /// How long the breaker stays open (default 30 s).
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.open_for = duration;
        self
    }

    /// Doubles the open time on every trip in a row, up to `max`.
    pub fn open_for_max(mut self, max: Duration) -> Self {
        self.open_for_max = Some(max);
        self
    }

    /// Probe calls let through at a time while half-open (default 1).
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.half_open_probes = probes;
        self
    }

    /// Probe successes that close the breaker (default 3).
    pub fn close_after(mut self, successes: u32) -> Self {
        self.close_after = successes;
        self
    }

    /// Opens (or keeps open) the breaker when the upstream answers 429 or
    /// 503 with `Retry-After`, for the time it asks, at most `max`
    /// (`respect_retry_after = true` and `max_retry_after` in TOML).
    pub fn respect_retry_after(mut self, max: Duration) -> Self {
        self.respect_retry_after = true;
        self.max_retry_after = Some(max);
        self
    }

    /// Which breaker a request belongs to, when the layer is built from
    /// this configuration (default [`KeyBy::None`]: one for every request).
    pub fn key(mut self, key: KeyBy) -> Self {
        self.key = key;
        self
    }

    /// At most this many keyed breakers (default 1024). A new key evicts a
    /// breaker that is closed and idle, the least recently used first.
    pub fn max_keys(mut self, max: usize) -> Self {
        self.max_keys = max;
        self
    }

    /// The detection the state machine runs.
    pub(crate) fn detection(&self) -> Detection {
        match self.mode {
            Mode::Consecutive => Detection::Consecutive {
                failures: self.failure_threshold.unwrap_or(DEFAULT_FAILURE_THRESHOLD),
            },
            Mode::Rate => Detection::Rate {
                failure_rate: self.failure_rate.unwrap_or(DEFAULT_FAILURE_RATE),
                min_calls: self.min_calls,
            },
        }
    }

    /// The cap on an obeyed `Retry-After`, when `Retry-After` is obeyed.
    pub(crate) fn retry_after_cap(&self) -> Option<Duration> {
        self.respect_retry_after
            .then(|| self.max_retry_after.unwrap_or(DEFAULT_MAX_RETRY_AFTER))
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |field, problem| Err(InvalidConfig { field, problem });
        let rate_ok = |r: f64| r.is_finite() && r > 0.0 && r <= 100.0;
        match (self.mode, self.failure_threshold, self.failure_rate) {
            (Mode::Consecutive, _, Some(_)) => return bad("failure_rate", "needs mode = \"rate\""),
            (Mode::Rate, Some(_), _) => {
                return bad("failure_threshold", "needs mode = \"consecutive\"")
            }
            _ => {}
        }
        if !self.respect_retry_after && self.max_retry_after.is_some() {
            return bad("max_retry_after", "needs respect_retry_after = true");
        }
        if self.max_keys == 0 {
            return bad("max_keys", "must be at least 1");
        }
        match self.detection() {
            Detection::Consecutive { failures: 0 } => {
                return bad("failure_threshold", "must be at least 1")
            }
            Detection::Rate { failure_rate, .. } if !rate_ok(failure_rate) => {
                return bad(
                    "failure_rate",
                    "must be a percentage above 0 and at most 100",
                )
            }
            _ => {}
        }
        match self.window {
            Window::Calls(0) => return bad("window", "must hold at least one call"),
            Window::Calls(n) if n > 10_000 => return bad("window", "must be at most 10000 calls"),
            Window::Duration(d) if d < Duration::from_millis(10) => {
                return bad("window", "must be at least 10ms")
            }
            _ => {}
        }
        if self.min_calls == 0 {
            return bad("min_calls", "must be at least 1");
        }
        if let Some(rate) = self.slow_call_rate {
            if !rate_ok(rate) {
                return bad(
                    "slow_call_rate",
                    "must be a percentage above 0 and at most 100",
                );
            }
            if self.slow_call_duration.is_none() {
                return bad("slow_call_rate", "needs slow_call_duration");
            }
        }
        if self.slow_call_duration == Some(Duration::ZERO) {
            return bad("slow_call_duration", "must be greater than zero");
        }
        if self.open_for.is_zero() {
            return bad("open_for", "must be greater than zero");
        }
        if self.open_for_max.is_some_and(|max| max < self.open_for) {
            return bad("open_for_max", "must not be shorter than open_for");
        }
        if self.half_open_probes == 0 {
            return bad("half_open_probes", "must be at least 1");
        }
        if self.close_after == 0 {
            return bad("close_after", "must be at least 1");
        }
        Ok(())
    }
}
