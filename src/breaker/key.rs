//! Which breaker a request belongs to.

use http::{header, Request};

/// Which breaker a request belongs to.
pub trait MakeKey<B> {
    /// The key, or `None` for the default breaker.
    fn make_key(&self, req: &Request<B>) -> Option<String>;
}

/// One breaker for every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl<B> MakeKey<B> for Single {
    fn make_key(&self, _: &Request<B>) -> Option<String> {
        None
    }
}

/// One breaker per upstream: scheme, host and port of the request's URI
/// (or its `Host` header, lowercased, for an origin-form URI).
#[derive(Debug, Clone, Copy, Default)]
pub struct Authority;

impl<B> MakeKey<B> for Authority {
    fn make_key(&self, req: &Request<B>) -> Option<String> {
        let uri = req.uri();
        match uri.authority() {
            Some(authority) => {
                let scheme = uri.scheme_str().unwrap_or("http");
                let port = authority
                    .port_u16()
                    .unwrap_or(if scheme == "https" { 443 } else { 80 });
                Some(format!("{scheme}://{}:{port}", authority.host()))
            }
            None => req
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_ascii_lowercase),
        }
    }
}

/// A key choice made at run time, as the configuration does:
/// `key = "none" | "authority" | "route"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "config", derive(serde::Deserialize))]
#[cfg_attr(feature = "config", serde(rename_all = "lowercase"))]
#[non_exhaustive]
pub enum KeyBy {
    /// One breaker for every request.
    #[default]
    None,
    /// One breaker per upstream, as [`Authority`].
    Authority,
    /// One breaker per request path (the route, for a server or a sidecar
    /// in front of one service). Paths come from callers: the number of
    /// breakers is bounded by `max_keys`.
    Route,
}

impl<B> MakeKey<B> for KeyBy {
    fn make_key(&self, req: &Request<B>) -> Option<String> {
        match self {
            KeyBy::None => None,
            KeyBy::Authority => Authority.make_key(req),
            KeyBy::Route => Some(req.uri().path().to_owned()),
        }
    }
}

impl<B, F> MakeKey<B> for F
where
    F: Fn(&Request<B>) -> Option<String>,
{
    fn make_key(&self, req: &Request<B>) -> Option<String> {
        self(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn get(uri: &str) -> Request<()> {
        Request::get(uri).body(()).unwrap()
    }

    #[test]
    fn authority_keys() {
        for (uri, key) in [
            ("http://127.0.0.1/", Some("http://127.0.0.1:80")),
            ("https://[::1]/x?y", Some("https://[::1]:443")),
            ("http://localhost:8080/a", Some("http://localhost:8080")),
            ("/origin-form", None),
        ] {
            assert_eq!(Authority.make_key(&get(uri)).as_deref(), key, "{uri}");
        }
        let mut req = get("/origin-form");
        req.headers_mut()
            .insert(header::HOST, "Example.COM:81".parse().unwrap());
        assert_eq!(Authority.make_key(&req).as_deref(), Some("example.com:81"));
        assert_eq!(
            KeyBy::Route.make_key(&get("http://h/a/b?q")).as_deref(),
            Some("/a/b")
        );
        assert_eq!(
            KeyBy::Authority.make_key(&get("http://h:9/")).as_deref(),
            Some("http://h:9")
        );
        assert_eq!(KeyBy::None.make_key(&get("http://h/")), None);
        assert_eq!(Single.make_key(&get("http://h/")), None);
    }

    proptest! {
        /// Any host and port gives `scheme://host:port`.
        #[test]
        fn authority_key_for_any_host(
            host in "[a-z0-9]([a-z0-9.-]{0,30}[a-z0-9])?",
            port in any::<u16>(),
            https in any::<bool>(),
        ) {
            let scheme = if https { "https" } else { "http" };
            let req = get(&format!("{scheme}://{host}:{port}/p"));
            prop_assert_eq!(Authority.make_key(&req), Some(format!("{scheme}://{host}:{port}")));
            let closure = |r: &Request<()>| Some(r.uri().path().to_owned());
            prop_assert_eq!(closure.make_key(&req), Some("/p".to_owned()));
        }
    }
}
