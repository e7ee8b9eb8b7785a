//! The Redis store: a fleet of instances shares one cache.

use super::store::{Entry, Store, StoreError, Stored};
use crate::body::Buffered;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use redis::{aio::ConnectionManager, AsyncCommands};
use std::{
    fmt,
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// The default time one store call may take before the cache steps aside.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// A [`Store`] in Redis, shared by every instance that names the same
/// server and namespace.
///
/// Keys are `<namespace>:<key>`; each entry expires in Redis after its
/// freshness plus its stale window. Values are a compact, versioned binary
/// encoding (status, headers, the RFC 9111 policy, body): an entry written
/// in another format is never misread, only skipped. Prefix invalidation
/// walks the namespace with `SCAN`, never `KEYS`.
///
/// Every call has a short timeout. A Redis that is down or slow makes the
/// calls fail, and the cache then steps aside (requests go upstream, the
/// errors are counted); the connection is re-established on its own when
/// Redis answers again.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    namespace: Arc<str>,
    timeout: Duration,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://127.0.0.1:6379`), under
    /// `namespace`. Nothing is connected yet: the first call connects, so a
    /// Redis that is down at start costs nothing but misses.
    ///
    /// Call it within a tokio runtime (the connection's task runs there);
    /// outside one it fails.
    pub fn new(url: &str, namespace: &str, timeout: Duration) -> Result<Self, StoreError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreError("the Redis store needs a tokio runtime".into()));
        }
        let client = redis::Client::open(url).map_err(|e| StoreError(format!("{url:?}: {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError(format!("{url:?}: {e}")))?;
        Ok(Self {
            conn,
            namespace: namespace.into(),
            timeout,
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.namespace)
    }

    /// Runs one Redis call under the store's timeout.
    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(StoreError(format!("redis {what}: {err}"))),
            Err(_) => Err(StoreError(format!(
                "redis {what}: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn delete_matching(&self, prefix: &str) -> Result<(), StoreError> {
        let pattern = format!("{}*", escape_glob(&self.key(prefix)));
        let mut conn = self.conn.clone();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .call(
                    "SCAN",
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .query_async(&mut conn),
                )
                .await?;
            if !keys.is_empty() {
                self.call(
                    "UNLINK",
                    redis::cmd("UNLINK").arg(&keys).query_async::<()>(&mut conn),
                )
                .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

/// `text` with the glob characters of `SCAN MATCH` escaped.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let key = self.key(key);
        let mut conn = self.conn.clone();
        let raw: Option<Vec<u8>> = self.call("GET", conn.get(&key)).await?;
        raw.map(|raw| decode(&raw)).transpose()
    }

    async fn put(&self, key: String, value: Stored, ttl: Duration) -> Result<(), StoreError> {
        let key = self.key(&key);
        let encoded = encode(&value)?;
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        self.call("SET", conn.pset_ex::<_, _, ()>(&key, encoded, millis))
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let key = self.key(key);
        let mut conn = self.conn.clone();
        self.call("DEL", conn.del::<_, ()>(&key)).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        self.delete_matching(prefix).await
    }

    async fn clear(&self) -> Result<(), StoreError> {
        self.delete_matching("").await
    }
}

/// The first bytes of every value: the format and its version.
const RESPONSE_V1: &[u8; 4] = b"TSR1";
const VARY_V1: &[u8; 4] = b"TSV1";

fn millis_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(bytes.len() as u32);
    out.put_slice(bytes);
}

/// The compact encoding of a stored value.
pub(crate) fn encode(value: &Stored) -> Result<Vec<u8>, StoreError> {
    let mut out = BytesMut::new();
    match value {
        Stored::Vary(names) => {
            out.put_slice(VARY_V1);
            out.put_u32(names.len() as u32);
            for name in names.iter() {
                put_bytes(&mut out, name.as_str().as_bytes());
            }
        }
        Stored::Response(entry) => {
            out.put_slice(RESPONSE_V1);
            out.put_u16(entry.status.as_u16());
            out.put_u64(millis_since_epoch(entry.fresh_until));
            out.put_u64(
                u64::try_from(entry.stale_while_revalidate.as_millis()).unwrap_or(u64::MAX),
            );
            out.put_u64(u64::try_from(entry.stale_if_error.as_millis()).unwrap_or(u64::MAX));
            out.put_u32(entry.headers.len() as u32);
            for (name, value) in &entry.headers {
                put_bytes(&mut out, name.as_str().as_bytes());
                put_bytes(&mut out, value.as_bytes());
            }
            let policy = serde_json::to_vec(&entry.policy)
                .map_err(|e| StoreError(format!("encoding a policy: {e}")))?;
            put_bytes(&mut out, &policy);
            put_bytes(&mut out, &entry.body.to_bytes());
        }
    }
    Ok(out.to_vec())
}

/// Reads what [`encode`] wrote; anything else (another version, a
/// truncated value, garbage) is an error, never a misread entry.
pub(crate) fn decode(raw: &[u8]) -> Result<Stored, StoreError> {
    let bad = || StoreError("an entry in an unknown or damaged format".into());
    let mut buf = raw;
    let take = |buf: &mut &[u8], n: usize| -> Result<Bytes, StoreError> {
        if buf.remaining() < n {
            return Err(bad());
        }
        Ok(buf.copy_to_bytes(n))
    };
    let u32_of = |buf: &mut &[u8]| -> Result<usize, StoreError> {
        if buf.remaining() < 4 {
            return Err(bad());
        }
        Ok(buf.get_u32() as usize)
    };
    let magic = take(&mut buf, 4)?;
    if magic.as_ref() == VARY_V1 {
        let n = u32_of(&mut buf)?;
        let mut names = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            let len = u32_of(&mut buf)?;
            let name = take(&mut buf, len)?;
            names.push(HeaderName::from_bytes(&name).map_err(|_| bad())?);
        }
        return buf
            .is_empty()
            .then(|| Stored::Vary(names.into()))
            .ok_or_else(bad);
    }
    if magic.as_ref() != RESPONSE_V1 || buf.remaining() < 2 + 8 * 3 + 4 {
        return Err(bad());
    }
    let status = StatusCode::from_u16(buf.get_u16()).map_err(|_| bad())?;
    let fresh_until = UNIX_EPOCH + Duration::from_millis(buf.get_u64());
    let swr = Duration::from_millis(buf.get_u64());
    let sie = Duration::from_millis(buf.get_u64());
    let n = u32_of(&mut buf)?;
    let mut headers = HeaderMap::with_capacity(n.min(128));
    for _ in 0..n {
        let len = u32_of(&mut buf)?;
        let name = HeaderName::from_bytes(&take(&mut buf, len)?).map_err(|_| bad())?;
        let len = u32_of(&mut buf)?;
        let value = HeaderValue::from_maybe_shared(take(&mut buf, len)?).map_err(|_| bad())?;
        headers.append(name, value);
    }
    let len = u32_of(&mut buf)?;
    let policy = serde_json::from_slice(&take(&mut buf, len)?).map_err(|_| bad())?;
    let len = u32_of(&mut buf)?;
    let body = take(&mut buf, len)?;
    if !buf.is_empty() {
        return Err(bad());
    }
    Ok(Stored::Response(Arc::new(Entry {
        status,
        headers,
        body: Arc::new(Buffered::from_bytes(body)),
        policy,
        fresh_until,
        stale_while_revalidate: swr,
        stale_if_error: sie,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> Stored {
        let req = http::Request::get("http://h/a")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let res = http::Response::builder()
            .header("cache-control", "max-age=60")
            .header("x-bin", HeaderValue::from_bytes(&[0xff, b'a']).unwrap())
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let policy = http_cache_semantics::CachePolicy::new(&req, &res);
        Stored::Response(Arc::new(Entry {
            status: StatusCode::OK,
            headers: res.headers,
            body: Arc::new(Buffered::from_bytes(Bytes::from_static(b"hello"))),
            policy,
            fresh_until: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            stale_while_revalidate: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
        }))
    }

    #[test]
    fn entries_round_trip() {
        let Stored::Response(back) = decode(&encode(&entry()).unwrap()).unwrap() else {
            panic!("a response")
        };
        let Stored::Response(orig) = entry() else {
            unreachable!()
        };
        assert_eq!(back.status, orig.status);
        assert_eq!(back.headers, orig.headers);
        assert_eq!(back.body.to_bytes(), "hello");
        assert_eq!(back.fresh_until, orig.fresh_until);
        assert_eq!(back.stale_while_revalidate, orig.stale_while_revalidate);
        assert_eq!(back.stale_if_error, orig.stale_if_error);
        let names: Arc<[HeaderName]> = vec![HeaderName::from_static("accept")].into();
        let Stored::Vary(back) = decode(&encode(&Stored::Vary(names.clone())).unwrap()).unwrap()
        else {
            panic!("a vary marker")
        };
        assert_eq!(back, names);
    }

    #[test]
    fn another_version_or_a_damaged_value_is_never_misread() {
        let mut raw = encode(&entry()).unwrap();
        raw[3] = b'2';
        assert!(decode(&raw).is_err());
        let raw = encode(&entry()).unwrap();
        for cut in [0, 3, 4, 10, raw.len() - 1] {
            assert!(decode(&raw[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = raw.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(
            escape_glob("ns:http://h/a*b?[c]\\"),
            "ns:http://h/a\\*b\\?\\[c\\]\\\\"
        );
    }

    proptest! {
        /// Whatever bytes are under a key, reading them never panics.
        #[test]
        fn any_bytes_decode_without_panic(raw in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&raw);
            let mut prefixed = RESPONSE_V1.to_vec();
            prefixed.extend_from_slice(&raw);
            let _ = decode(&prefixed);
            let mut prefixed = VARY_V1.to_vec();
            prefixed.extend_from_slice(&raw);
            let _ = decode(&prefixed);
        }
    }
}
