//! What the cache decides around `http-cache-semantics`: configured TTLs,
//! the stale windows (RFC 5861, which the crate does not read), conditional
//! requests from the caller, and `Age`.

use super::Config;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_cache_semantics::{CacheOptions, CachePolicy};
use std::time::{Duration, SystemTime};

/// Statuses a cache may store without explicit freshness (RFC 9110
/// section 15.1): the only ones a configured default TTL applies to.
const CACHEABLE_BY_DEFAULT: &[u16] = &[200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// The seconds of a `Cache-Control` directive, if present and well formed;
/// a malformed value counts as absent.
pub(crate) fn directive(headers: &HeaderMap, name: &str) -> Option<u64> {
    directives(headers)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v?.trim_matches('"').parse().ok())
}

/// Whether a `Cache-Control` directive is present.
pub(crate) fn has_directive(headers: &HeaderMap, name: &str) -> bool {
    directives(headers).any(|(n, _)| n.eq_ignore_ascii_case(name))
}

fn directives(headers: &HeaderMap) -> impl Iterator<Item = (&str, Option<&str>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| match d.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (d.trim(), None),
        })
        .filter(|(n, _)| !n.is_empty())
}

/// Whether the response states its own freshness.
fn explicit_freshness(headers: &HeaderMap, shared: bool) -> bool {
    headers.contains_key(header::EXPIRES)
        || has_directive(headers, "max-age")
        || (shared && has_directive(headers, "s-maxage"))
}

/// The policy for a response to `req`, with the configured TTL (a route's,
/// else the default) standing in for freshness the response does not
/// state, when its status is cacheable by default. The TTL goes into the
/// policy's copy of the headers only: what is stored and served is the
/// response as the upstream sent it.
pub(crate) fn policy(
    config: &Config,
    req: &http::request::Parts,
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> CachePolicy {
    let options = CacheOptions {
        shared: config.mode == super::Mode::Shared,
        ..CacheOptions::default()
    };
    let ttl = config.ttl_for(req.uri.path());
    let res = match ttl {
        Some(ttl)
            if !explicit_freshness(headers, options.shared)
                && CACHEABLE_BY_DEFAULT.contains(&status.as_u16()) =>
        {
            let mut with_ttl = headers.clone();
            with_ttl.append(
                header::CACHE_CONTROL,
                HeaderValue::from_str(&format!("max-age={}", ttl.as_secs()))
                    .expect("digits are a valid header value"),
            );
            with_ttl
        }
        _ => headers.clone(),
    };
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.headers = res;
    CachePolicy::new_options(req, &parts, now, options)
}

/// The request as the policy should see it. The crate matches a stored
/// response only to a request of the same method, so a HEAD is shown as
/// the GET it would be (RFC 9111 section 4: a stored GET answers a HEAD).
pub(crate) fn as_get<B>(req: &Request<B>) -> http::request::Parts {
    let mut parts = Request::new(()).into_parts().0;
    parts.method = if req.method() == Method::HEAD {
        Method::GET
    } else {
        req.method().clone()
    };
    parts.uri = req.uri().clone();
    parts.headers = req.headers().clone();
    parts
}

/// The stale windows of a response: its own `stale-while-revalidate` and
/// `stale-if-error` (RFC 5861), else the configured defaults, each capped
/// by `max_stale`.
pub(crate) fn stale_windows(config: &Config, headers: &HeaderMap) -> (Duration, Duration) {
    let window = |name: &str, default: Option<Duration>| {
        directive(headers, name)
            .map(Duration::from_secs)
            .or(default)
            .unwrap_or_default()
            .min(config.max_stale)
    };
    (
        window("stale-while-revalidate", config.stale_while_revalidate),
        window("stale-if-error", config.stale_if_error),
    )
}

/// Whether a caller's own conditional request is satisfied by a stored
/// response with these headers (RFC 9110 section 13.2.2): `If-None-Match`
/// by a weak comparison of entity tags, else `If-Modified-Since` by
/// `Last-Modified`.
pub(crate) fn not_modified(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let strip = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    if let Some(list) = req.get(header::IF_NONE_MATCH) {
        let Some(list) = list.to_str().ok() else {
            return false;
        };
        if list.trim() == "*" {
            return true;
        }
        let Some(etag) = stored.get(header::ETAG).and_then(|e| e.to_str().ok()) else {
            return false;
        };
        let etag = strip(etag);
        return list.split(',').any(|tag| strip(tag) == etag);
    }
    let date = |map: &HeaderMap, name| {
        map.get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
    };
    match (
        date(req, header::IF_MODIFIED_SINCE),
        date(stored, header::LAST_MODIFIED),
    ) {
        (Some(since), Some(modified)) => modified <= since,
        _ => false,
    }
}

/// The headers a 304 carries from the stored response (RFC 9110 section
/// 15.4.5).
pub(crate) const NOT_MODIFIED_HEADERS: &[header::HeaderName] = &[
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn directives_are_read_leniently() {
        let h = headers(&[(
            "cache-control",
            "public, Max-Age=60 , stale-if-error=\"30\"",
        )]);
        assert_eq!(directive(&h, "max-age"), Some(60));
        assert_eq!(directive(&h, "stale-if-error"), Some(30));
        assert!(has_directive(&h, "public"));
        let bad = headers(&[(
            "cache-control",
            "max-age=soon, ,=, stale-while-revalidate=-1",
        )]);
        assert_eq!(directive(&bad, "max-age"), None);
        assert_eq!(directive(&bad, "stale-while-revalidate"), None);
    }

    #[test]
    fn conditional_requests_compare_validators() {
        let stored = headers(&[
            ("etag", "W/\"v1\""),
            ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
        ]);
        assert!(not_modified(
            &headers(&[("if-none-match", "\"v0\", \"v1\"")]),
            &stored
        ));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &stored));
        assert!(!not_modified(
            &headers(&[("if-none-match", "\"v2\"")]),
            &stored
        ));
        // If-None-Match wins over If-Modified-Since.
        assert!(!not_modified(
            &headers(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Wed, 02 Dec 2026 10:00:00 GMT")
            ]),
            &stored
        ));
        assert!(not_modified(
            &headers(&[("if-modified-since", "Tue, 01 Dec 2026 10:00:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "Mon, 30 Nov 2026 10:00:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "yesterday")]),
            &stored
        ));
        assert!(!not_modified(&HeaderMap::new(), &stored));
    }

    proptest! {
        /// Whatever the Cache-Control text, reading it never panics, and a
        /// directive's value is only ever what its digits say.
        #[test]
        fn any_cache_control_parses_without_panic(text in "[ -~]{0,64}") {
            if let Ok(value) = HeaderValue::from_str(&text) {
                let mut h = HeaderMap::new();
                h.insert(header::CACHE_CONTROL, value);
                for name in ["max-age", "s-maxage", "stale-if-error", "stale-while-revalidate"] {
                    if let Some(secs) = directive(&h, name) {
                        prop_assert!(text.to_ascii_lowercase().contains(&secs.to_string()));
                    }
                }
                let _ = not_modified(&h, &h);
            }
        }
    }
}
