//! The Redis store: one atomic script per check, the same GCRA as in
//! memory, on Redis's own clock so that every instance of a fleet agrees.

use super::{Decision, LimitError, Quota};
use redis::aio::ConnectionManager;
use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

/// GCRA in one step. `KEYS[1]` holds the key's theoretical arrival time
/// (TAT) in microseconds of Redis's clock; `ARGV` are the emission
/// interval in microseconds and the burst. Returns `{1, remaining,
/// reset_us}` or `{0, retry_after_us, 0}`. The key expires when its quota
/// is whole again, so idle keys cost nothing.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, allow_at - now, 0}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / interval), new_tat - now}
";

/// The quotas' state in Redis, under `<namespace>:<key>`.
///
/// Every check has a short timeout; a Redis that is down or slow is an
/// error for the layer's `on_store_error` to decide on.
#[derive(Clone)]
pub struct RedisLimiter {
    conn: ConnectionManager,
    script: Arc<redis::Script>,
    namespace: Arc<str>,
    timeout: Duration,
    ok: Arc<AtomicBool>,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A check Redis did not answer.
#[derive(Debug)]
pub(crate) struct RedisError(String);

impl fmt::Display for RedisError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis: {}", self.0)
    }
}

impl std::error::Error for RedisError {}

impl RedisLimiter {
    /// A store on the Redis at `url`; nothing is connected until the first
    /// check. Call it within a tokio runtime.
    ///
    /// # Errors
    ///
    /// A bad URL, or no runtime.
    pub fn new(url: &str, namespace: &str, timeout: Duration) -> Result<Self, LimitError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(LimitError::new(
                "the Redis rate limit needs a tokio runtime",
            ));
        }
        let client =
            redis::Client::open(url).map_err(|e| LimitError::new(format!("{url:?}: {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| LimitError::new(format!("{url:?}: {e}")))?;
        Ok(Self {
            conn,
            script: Arc::new(redis::Script::new(GCRA)),
            namespace: namespace.into(),
            timeout,
            ok: Arc::new(AtomicBool::new(true)),
        })
    }

    /// Whether Redis answered the last check.
    pub fn is_ok(&self) -> bool {
        self.ok.load(Ordering::Relaxed)
    }

    pub(crate) async fn check(&self, key: &str, quota: Quota) -> Result<Decision, RedisError> {
        let interval_us = (quota.interval().as_micros() as u64).max(1);
        let mut conn = self.conn.clone();
        let mut invocation = self.script.key(format!("{}:{key}", self.namespace));
        invocation.arg(interval_us).arg(quota.burst);
        let call = invocation.invoke_async::<(u8, i64, i64)>(&mut conn);
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => Err(RedisError(err.to_string())),
            Err(_) => Err(RedisError(format!("no answer within {:?}", self.timeout))),
        };
        self.ok.store(result.is_ok(), Ordering::Relaxed);
        let (allowed, a, b) = result?;
        let micros = |v: i64| Duration::from_micros(v.max(0) as u64);
        Ok(if allowed == 1 {
            Decision::Allow {
                remaining: a.clamp(0, i64::from(u32::MAX)) as u32,
                reset: Some(micros(b)),
            }
        } else {
            Decision::Deny {
                retry_after: micros(a),
            }
        })
    }
}
