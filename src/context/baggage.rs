//! W3C Baggage: the `baggage` header.

use super::trace::header_value;
use http::HeaderValue;
use std::fmt;

/// The most list-members a `baggage` header keeps (W3C Baggage: a platform
/// must propagate at least 64).
pub const BAGGAGE_MAX_MEMBERS: usize = 64;
/// The longest `baggage` this crate forwards, in bytes (W3C Baggage: 8192).
pub const BAGGAGE_MAX_LEN: usize = 8192;

/// Validated W3C baggage: a list of `key=value` members with optional
/// `;property` parts, safe to forward.
///
/// ```
/// use http::HeaderValue;
/// use tower_shield::context::Baggage;
///
/// let b = Baggage::parse([&HeaderValue::from_static("userId=alice, bad key=1, region=eu%2Dwest;ttl=3")]).unwrap();
/// // The invalid member is dropped; the rest is kept, whitespace removed.
/// assert_eq!(b.as_str(), "userId=alice,region=eu%2Dwest;ttl=3");
/// assert_eq!(b.get("region"), Some("eu%2Dwest"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Baggage(HeaderValue);

impl fmt::Debug for Baggage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Baggage").field(&self.as_str()).finish()
    }
}

const fn tchar(c: u8) -> bool {
    // RFC 9110 token characters.
    matches!(c,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~'
        | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

const fn baggage_octet(c: u8) -> bool {
    // %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
    matches!(c, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&c| tchar(c))
}

fn value(s: &[u8]) -> bool {
    s.iter().all(|&c| baggage_octet(c))
}

/// Appends the normalised form of one list-member to `out`, or returns
/// false (and leaves `out` as it was) when the member is invalid.
fn push_member(member: &[u8], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let mut parts = member.split(|&c| c == b';');
    let Some(kv) = parts.next() else { return false };
    let Some(eq) = kv.iter().position(|&c| c == b'=') else {
        return false;
    };
    let (k, v) = (trim(&kv[..eq]), trim(&kv[eq + 1..]));
    if !token(k) || !value(v) {
        return false;
    }
    out.extend_from_slice(k);
    out.push(b'=');
    out.extend_from_slice(v);
    for prop in parts {
        let prop = trim(prop);
        let ok = match prop.iter().position(|&c| c == b'=') {
            None => token(prop),
            Some(eq) => {
                let (k, v) = (trim(&prop[..eq]), trim(&prop[eq + 1..]));
                let ok = token(k) && value(v);
                if ok {
                    out.push(b';');
                    out.extend_from_slice(k);
                    out.push(b'=');
                    out.extend_from_slice(v);
                }
                ok
            }
        };
        if !ok {
            out.truncate(start);
            return false;
        }
        if !prop.contains(&b'=') {
            out.push(b';');
            out.extend_from_slice(prop);
        }
    }
    true
}

impl Baggage {
    /// Parses the `baggage` headers of a request, taken together as one
    /// list. Invalid list-members are dropped one by one (the rest of the
    /// list is still useful); members past 64 or past 8192 bytes are dropped
    /// whole, never cut. Returns `None` when nothing valid is left.
    ///
    /// A single header that needs no change is kept as it is, without a
    /// copy.
    pub fn parse<'a, I>(values: I) -> Option<Self>
    where
        I: IntoIterator<Item = &'a HeaderValue>,
    {
        let mut values = values.into_iter();
        let first = values.next()?;
        let second = values.next();
        if second.is_none() && Self::is_normal(first.as_bytes()) {
            return Some(Self(first.clone()));
        }
        let mut out = Vec::with_capacity(first.len().min(BAGGAGE_MAX_LEN));
        let mut count = 0;
        'all: for v in std::iter::once(first).chain(second).chain(values) {
            for member in v.as_bytes().split(|&c| c == b',') {
                let member = trim(member);
                if member.is_empty() {
                    continue;
                }
                if count == BAGGAGE_MAX_MEMBERS {
                    break 'all;
                }
                let before = out.len();
                if before > 0 {
                    out.push(b',');
                }
                if push_member(member, &mut out) {
                    if out.len() > BAGGAGE_MAX_LEN {
                        out.truncate(before);
                        break 'all;
                    }
                    count += 1;
                } else {
                    out.truncate(before);
                }
            }
        }
        if out.is_empty() {
            None
        } else {
            Some(Self(header_value(&out)))
        }
    }

    /// Whether a single header is already valid, within the limits and free
    /// of optional whitespace: then it is forwarded as it came.
    fn is_normal(bytes: &[u8]) -> bool {
        if bytes.is_empty() || bytes.len() > BAGGAGE_MAX_LEN {
            return false;
        }
        let mut count = 0;
        for member in bytes.split(|&c| c == b',') {
            count += 1;
            if count > BAGGAGE_MAX_MEMBERS {
                return false;
            }
            let mut parts = member.split(|&c| c == b';');
            let kv = parts.next().unwrap_or_default();
            let Some(eq) = kv.iter().position(|&c| c == b'=') else {
                return false;
            };
            if !token(&kv[..eq]) || !value(&kv[eq + 1..]) {
                return false;
            }
            for prop in parts {
                let ok = match prop.iter().position(|&c| c == b'=') {
                    None => token(prop),
                    Some(eq) => token(&prop[..eq]) && value(&prop[eq + 1..]),
                };
                if !ok {
                    return false;
                }
            }
        }
        true
    }

    /// The validated header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }

    /// The validated list as text.
    pub fn as_str(&self) -> &str {
        // Only visible ASCII gets past the parser.
        self.0.to_str().unwrap_or_default()
    }

    /// The members as `(key, value)`, values still percent-encoded,
    /// properties left out.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.as_str().split(',').filter_map(|member| {
            let kv = member.split(';').next()?;
            kv.split_once('=')
        })
    }

    /// The (percent-encoded) value of the first member with this key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}
