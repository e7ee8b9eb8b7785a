//! Cache keys: the target URI, and the request headers a response varies on.

use http::{header, HeaderMap, HeaderName, Uri};
use std::fmt::Write as _;

/// The primary key of a request: its target URI, absolute, with scheme
/// and authority (from the URI, else from `Host`). GET and HEAD share it: a
/// HEAD is answered from a stored GET.
pub(crate) fn primary(uri: &Uri, headers: &HeaderMap) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut key = String::with_capacity(scheme.len() + authority.len() + path.len() + 3);
    key.push_str(scheme);
    key.push_str("://");
    key.push_str(&authority.to_ascii_lowercase());
    key.push_str(path);
    key
}

/// The names a response varies on (`Vary`), lowercased; `None` for
/// `Vary: *`, which never matches a later request.
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        // A value that is not text names nothing we can match: never reuse.
        let text = value.to_str().ok()?;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return None;
            }
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Some(names)
}

/// The key of one variant: the primary key, then each varied header's
/// values as the request has them (none is a value of its own).
pub(crate) fn variant(primary: &str, names: &[HeaderName], req: &HeaderMap) -> String {
    let mut key = String::from(primary);
    for name in names {
        key.push('\n');
        key.push_str(name.as_str());
        let mut values = req.get_all(name).iter().peekable();
        if values.peek().is_none() {
            key.push('!');
        }
        for value in values {
            key.push(':');
            // Byte-exact and unambiguous: hex of the raw bytes.
            for b in value.as_bytes() {
                let _ = write!(key, "{b:02x}");
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use http::Request;

    fn key_of<B>(req: &Request<B>) -> String {
        primary(req.uri(), req.headers())
    }

    fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn get_and_head_share_the_uri_key_and_host_fills_origin_form() {
        let get = req("GET", "http://Example.com/a?b=1", &[]);
        let head = req("HEAD", "http://example.com/a?b=1", &[]);
        assert_eq!(key_of(&get), key_of(&head));
        assert_eq!(key_of(&get), "http://example.com/a?b=1");
        let origin = req("GET", "/a?b=1", &[("host", "example.com")]);
        assert_eq!(key_of(&origin), "http://example.com/a?b=1");
        assert_ne!(
            key_of(&origin),
            key_of(&req("GET", "/a?b=2", &[("host", "example.com")]))
        );
    }

    #[test]
    fn vary_star_never_matches_and_names_are_normalised() {
        let mut h = HeaderMap::new();
        h.append(header::VARY, "Accept-Encoding, accept".parse().unwrap());
        h.append(header::VARY, "User-Agent".parse().unwrap());
        let names = vary_names(&h).unwrap();
        let names: Vec<&str> = names.iter().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept", "accept-encoding", "user-agent"]);
        h.append(header::VARY, "*".parse().unwrap());
        assert!(vary_names(&h).is_none());
        assert_eq!(vary_names(&HeaderMap::new()), Some(Vec::new()));
    }

    proptest! {
        /// Two requests get equal variant keys exactly when their URIs are
        /// equal and every varied header has the same values.
        #[test]
        fn variant_keys_are_equal_exactly_when_the_varied_headers_are(
            path_a in "/[a-z]{0,3}",
            path_b in "/[a-z]{0,3}",
            a in prop::collection::vec(prop::option::of("[ -~]{0,4}"), 2),
            b in prop::collection::vec(prop::option::of("[ -~]{0,4}"), 2),
            other in "[ -~]{0,4}",
        ) {
            let names = [HeaderName::from_static("accept"), HeaderName::from_static("x-v")];
            let build = |path: &str, values: &[Option<String>]| {
                let mut r = req("GET", &format!("http://h{path}"), &[("x-other", other.as_str())]);
                for (name, value) in names.iter().zip(values) {
                    if let Some(v) = value {
                        r.headers_mut().insert(name.clone(), v.trim().parse().unwrap());
                    }
                }
                r
            };
            let (ra, rb) = (build(&path_a, &a), build(&path_b, &b));
            let ka = variant(&key_of(&ra), &names, ra.headers());
            let kb = variant(&key_of(&rb), &names, rb.headers());
            let same_headers = names.iter().all(|n| ra.headers().get(n) == rb.headers().get(n));
            prop_assert_eq!(ka == kb, path_a == path_b && same_headers);
        }
    }
}
