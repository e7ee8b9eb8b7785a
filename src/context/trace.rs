//! W3C Trace Context: the `traceparent` and `tracestate` headers.
//!
//! Both parsers follow the W3C Recommendation (Trace Context Level 1, with
//! the version rules of Level 2): they never panic, reject what the
//! Recommendation calls invalid, and hand back only values that are safe to
//! forward as they are.

use http::HeaderValue;
use std::fmt;

/// A 16-byte trace ID. The all-zero ID is invalid and never produced.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId([u8; 16]);

/// An 8-byte span ID (W3C calls it `parent-id` in `traceparent`). The
/// all-zero ID is invalid and never produced.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId([u8; 8]);

impl TraceId {
    /// The ID with these bytes, or `None` for the invalid all-zero ID.
    pub const fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        if u128::from_be_bytes(bytes) == 0 {
            None
        } else {
            Some(Self(bytes))
        }
    }

    /// A new random ID, from a per-thread generator (no system call).
    pub fn random() -> Self {
        loop {
            if let Some(id) = Self::from_bytes(fastrand::u128(..).to_be_bytes()) {
                return id;
            }
        }
    }

    /// The ID's bytes.
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0
    }
}

impl SpanId {
    /// The ID with these bytes, or `None` for the invalid all-zero ID.
    pub const fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        if u64::from_be_bytes(bytes) == 0 {
            None
        } else {
            Some(Self(bytes))
        }
    }

    /// A new random ID, from a per-thread generator (no system call).
    pub fn random() -> Self {
        Self(fastrand::u64(1..).to_be_bytes())
    }

    /// The ID's bytes.
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0; 32];
        write_hex(&mut buf, &self.0);
        // Always ASCII.
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0; 16];
        write_hex(&mut buf, &self.0);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// The `trace-flags` byte of `traceparent`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceFlags(u8);

impl TraceFlags {
    /// The `sampled` flag: the caller may have recorded its part of the trace.
    pub const SAMPLED: Self = Self(0x01);
    /// The `random` flag of Trace Context Level 2: the trace ID's right 7
    /// bytes are random.
    pub const RANDOM: Self = Self(0x02);
    /// The flags this crate understands and forwards; other bits are
    /// cleared, as the Recommendation asks of a participant that does not
    /// know them.
    const KNOWN: u8 = 0x03;
    /// The flags of a trace this crate starts: sampled, and its trace ID is
    /// random (Trace Context Level 2).
    pub(crate) const NEW_TRACE: Self = Self(0x03);

    /// Flags from their byte; unknown bits are cleared.
    pub const fn new(bits: u8) -> Self {
        Self(bits & Self::KNOWN)
    }

    /// The flags as a byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether the `sampled` flag is set.
    pub const fn is_sampled(self) -> bool {
        self.0 & Self::SAMPLED.0 != 0
    }
}

impl fmt::Debug for TraceFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceFlags({:02x})", self.0)
    }
}

/// A parsed `traceparent` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace the request belongs to.
    pub trace_id: TraceId,
    /// The caller's span.
    pub parent_id: SpanId,
    /// `sampled` and `random`.
    pub flags: TraceFlags,
}

/// Why a `traceparent` header was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceParentError {
    /// Shorter than 55 characters, or longer with version `00`.
    Length,
    /// Version `ff`, which the Recommendation forbids.
    ForbiddenVersion,
    /// A `-` is missing where the format puts one.
    Delimiter,
    /// A field holds something other than lowercase hex digits.
    NotLowerHex,
    /// The trace ID is all zeros.
    ZeroTraceId,
    /// The parent ID is all zeros.
    ZeroParentId,
    /// The request had more than one `traceparent` header.
    Duplicate,
}

impl fmt::Display for TraceParentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Length => "traceparent has the wrong length",
            Self::ForbiddenVersion => "traceparent version ff is forbidden",
            Self::Delimiter => "traceparent is missing a '-' delimiter",
            Self::NotLowerHex => "traceparent holds a character that is not lowercase hex",
            Self::ZeroTraceId => "traceparent trace-id is all zeros",
            Self::ZeroParentId => "traceparent parent-id is all zeros",
            Self::Duplicate => "more than one traceparent header",
        })
    }
}

impl std::error::Error for TraceParentError {}

/// The value of each byte as a lowercase hex digit, or 0xff.
const UNHEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Decodes `M = 2 * N` lowercase hex digits: eight at a time as one `u64`
/// when `M` is a multiple of 8 (the IDs), one at a time otherwise.
fn decode_hex<const N: usize, const M: usize>(src: &[u8]) -> Result<[u8; N], TraceParentError> {
    let src: &[u8; M] = src.try_into().map_err(|_| TraceParentError::Length)?;
    let mut out = [0u8; N];
    if M.is_multiple_of(8) {
        for (o, chunk) in out.chunks_exact_mut(4).zip(src.chunks_exact(8)) {
            let word = u64::from_le_bytes(chunk.try_into().map_err(|_| TraceParentError::Length)?);
            o.copy_from_slice(&decode8(word).ok_or(TraceParentError::NotLowerHex)?);
        }
        return Ok(out);
    }
    let mut bad = 0u8;
    for (o, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        let (hi, lo) = (UNHEX[usize::from(pair[0])], UNHEX[usize::from(pair[1])]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0xf);
    }
    // Every valid digit is below 16; an invalid one sets the high bits.
    if bad & 0xf0 != 0 {
        return Err(TraceParentError::NotLowerHex);
    }
    Ok(out)
}

/// Eight lowercase hex digits (first digit in the lowest byte) to four
/// bytes, or `None` if any is not `0-9a-f`. Every byte is range-checked at
/// once: adding `0x80 - lo` sets a byte's high bit exactly when it is at
/// least `lo` (no carry crosses bytes, as each byte is below 0x80 first).
fn decode8(v: u64) -> Option<[u8; 4]> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if v & HIGH != 0 {
        return None;
    }
    let at_least = |lo: u64| v + ONES * (0x80 - lo);
    let digit = at_least(b'0' as u64) & !at_least(b'9' as u64 + 1) & HIGH;
    let letter = at_least(b'a' as u64) & !at_least(b'f' as u64 + 1) & HIGH;
    if digit | letter != HIGH {
        return None;
    }
    // '0'..'9' have their value in the low nibble; 'a'..'f' have 1..6.
    let nibbles = (v & (ONES * 0x0f)) + (letter >> 7) * 9;
    // Pair the digits: byte 2i = high << 4 | low.
    let pairs = ((nibbles << 4) | (nibbles >> 8)) & 0x00ff_00ff_00ff_00ff;
    let packed = (pairs | (pairs >> 8)) & 0x0000_ffff_0000_ffff;
    let packed = (packed | (packed >> 16)) & 0xffff_ffff;
    Some((packed as u32).to_le_bytes())
}

/// The length of a version-00 `traceparent`.
pub const TRACEPARENT_LEN: usize = 55;

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

impl TraceParent {
    /// Parses a `traceparent` value.
    ///
    /// Version `00` must be exactly 55 characters. A higher version (a
    /// future one) is read for its first four fields when it is at least 55
    /// characters and, if longer, has a `-` after the flags; it is then
    /// forwarded as version `00`. Version `ff`, uppercase hex, and all-zero
    /// IDs are invalid.
    ///
    /// ```
    /// use tower_shield::context::TraceParent;
    ///
    /// let tp = TraceParent::parse(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
    /// assert!(tp.flags.is_sampled());
    /// assert_eq!(tp.trace_id.to_string(), "0af7651916cd43dd8448eb211c80319c");
    /// assert!(TraceParent::parse(b"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01").is_err());
    /// ```
    pub fn parse(value: &[u8]) -> Result<Self, TraceParentError> {
        let v = trim_ows(value);
        if v.len() < TRACEPARENT_LEN {
            return Err(TraceParentError::Length);
        }
        let [version] = decode_hex::<1, 2>(&v[..2])?;
        if version == 0xff {
            return Err(TraceParentError::ForbiddenVersion);
        }
        if version == 0 && v.len() != TRACEPARENT_LEN {
            return Err(TraceParentError::Length);
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return Err(TraceParentError::Delimiter);
        }
        if v.len() > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != b'-' {
            return Err(TraceParentError::Delimiter);
        }
        let trace_id = decode_hex::<16, 32>(&v[3..35])?;
        let parent_id = decode_hex::<8, 16>(&v[36..52])?;
        let [flags] = decode_hex::<1, 2>(&v[53..55])?;
        Ok(Self {
            trace_id: TraceId::from_bytes(trace_id).ok_or(TraceParentError::ZeroTraceId)?,
            parent_id: SpanId::from_bytes(parent_id).ok_or(TraceParentError::ZeroParentId)?,
            flags: TraceFlags::new(flags),
        })
    }

    /// The version-00 text of this `traceparent`.
    pub fn encode(&self) -> [u8; TRACEPARENT_LEN] {
        encode(self.trace_id, self.parent_id, self.flags)
    }

    /// The version-00 header value.
    pub fn to_header_value(&self) -> HeaderValue {
        header_value(&self.encode())
    }
}

pub(crate) fn encode(
    trace_id: TraceId,
    span_id: SpanId,
    flags: TraceFlags,
) -> [u8; TRACEPARENT_LEN] {
    let mut buf = [b'-'; TRACEPARENT_LEN];
    buf[0] = b'0';
    buf[1] = b'0';
    write_hex(&mut buf[3..35], &trace_id.0);
    write_hex(&mut buf[36..52], &span_id.0);
    write_hex(&mut buf[53..55], &[flags.0]);
    buf
}

/// A header value from bytes this module produced (always visible ASCII).
pub(crate) fn header_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buf = self.encode();
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// The most list-members a `tracestate` may hold.
pub const TRACESTATE_MAX_MEMBERS: usize = 32;
/// The longest combined `tracestate` this crate forwards; longer lists are
/// cut as the Recommendation says (members over 128 characters go first,
/// then members from the end).
pub const TRACESTATE_MAX_LEN: usize = 512;

/// Why a `tracestate` header was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceStateError {
    /// A list-member's key breaks the key grammar.
    Key,
    /// A list-member's value breaks the value grammar.
    Value,
    /// A list-member has no `=`.
    MissingEquals,
    /// More than 32 list-members.
    TooManyMembers,
    /// Two list-members have the same key.
    DuplicateKey,
}

impl fmt::Display for TraceStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Key => "tracestate key is invalid",
            Self::Value => "tracestate value is invalid",
            Self::MissingEquals => "tracestate list-member has no '='",
            Self::TooManyMembers => "tracestate has more than 32 list-members",
            Self::DuplicateKey => "tracestate has a duplicate key",
        })
    }
}

impl std::error::Error for TraceStateError {}

const fn key_char(c: u8) -> bool {
    matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/')
}

/// Trace Context Level 2: `key = (lcalpha / DIGIT) 0*255(keychar)`, where
/// `keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"` (Level 1's
/// tenant@system form and its 241 and 14 character limits are gone).
fn valid_key(key: &[u8]) -> bool {
    (1..=256).contains(&key.len())
        && (key[0].is_ascii_lowercase() || key[0].is_ascii_digit())
        && key.iter().all(|&c| key_char(c) || c == b'@')
}

fn valid_value(value: &[u8]) -> bool {
    // value = 0*255(chr) nblk-chr; chr = %x20 / nblk-chr;
    // nblk-chr = %x21-2B / %x2D-3C / %x3E-7E
    (1..=256).contains(&value.len())
        && value
            .iter()
            .all(|&c| matches!(c, 0x20..=0x2B | 0x2D..=0x3C | 0x3E..=0x7E))
        && value[value.len() - 1] != b' '
}

/// Validates the `tracestate` headers of a request, taken together as one
/// comma-separated list, and returns the value to forward: `Ok(None)` when
/// the list is empty, the original value when it needs no change (no
/// copy), or a normalised copy (optional whitespace and empty members
/// removed, several headers joined, cut to 512 characters).
///
/// As Trace Context Level 2 says: an invalid list-member is dropped and the
/// valid ones are kept; of members with the same key, the first is kept;
/// more than 32 valid members make the whole header invalid
/// ([`TraceStateError::TooManyMembers`]), and it is then dropped.
///
/// ```
/// use http::HeaderValue;
/// use tower_shield::context::parse_tracestate;
///
/// let v = HeaderValue::from_static("congo=t61rcWkgMzE, rojo=00f067aa0ba902b7");
/// let out = parse_tracestate([&v]).unwrap().unwrap();
/// assert_eq!(out, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
/// let v = HeaderValue::from_static("Bad=1,rojo=1,rojo=2,1vendor@sys=x");
/// assert_eq!(parse_tracestate([&v]).unwrap().unwrap(), "rojo=1,1vendor@sys=x");
/// assert_eq!(parse_tracestate([&HeaderValue::from_static("Bad=1")]), Ok(None));
/// ```
pub fn parse_tracestate<'a, I>(values: I) -> Result<Option<HeaderValue>, TraceStateError>
where
    I: IntoIterator<Item = &'a HeaderValue>,
{
    // (header index, start, end, key end) of each member.
    let mut members: [(u8, u16, u16, u16); TRACESTATE_MAX_MEMBERS] = [(0, 0, 0, 0); 32];
    let mut count = 0;
    let mut clean = true;
    let mut headers: [&[u8]; 4] = [b""; 4];
    let mut extra: Vec<&'a [u8]> = Vec::new();
    let mut first: Option<&'a HeaderValue> = None;
    for (h, value) in values.into_iter().enumerate() {
        let bytes = value.as_bytes();
        if h == 0 {
            first = Some(value);
        } else {
            clean = false;
        }
        if h < headers.len() {
            headers[h] = bytes;
        } else {
            extra.push(bytes);
        }
        if bytes.len() > u16::MAX as usize || h > u8::MAX as usize {
            // Far beyond any limit: it cannot be a valid list of 32 members
            // of at most 512 characters each.
            return Err(TraceStateError::TooManyMembers);
        }
        let mut start = 0;
        for part in bytes.split(|&c| c == b',') {
            let end_of_part = start + part.len();
            let trimmed = trim_ows(part);
            if trimmed.is_empty() {
                clean = false;
                start = end_of_part + 1;
                continue;
            }
            if trimmed.len() != part.len() {
                clean = false;
            }
            let lead = part.len() - trim_ows_start(part).len();
            let s = start + lead;
            let e = s + trimmed.len();
            start = end_of_part + 1;
            let Some(eq) = trimmed.iter().position(|&c| c == b'=') else {
                // An invalid member goes alone.
                clean = false;
                continue;
            };
            let (key, value) = (&trimmed[..eq], &trimmed[eq + 1..]);
            if !valid_key(key) || !valid_value(value) {
                clean = false;
                continue;
            }
            if count == TRACESTATE_MAX_MEMBERS {
                return Err(TraceStateError::TooManyMembers);
            }
            members[count] = (h as u8, s as u16, e as u16, (s + eq) as u16);
            count += 1;
        }
    }
    let header = |h: u8| -> &[u8] {
        let h = usize::from(h);
        if h < headers.len() {
            headers[h]
        } else {
            extra[h - headers.len()]
        }
    };
    let member = |i: usize| -> &[u8] {
        let (h, s, e, _) = members[i];
        &header(h)[usize::from(s)..usize::from(e)]
    };
    let key = |i: usize| -> &[u8] {
        let (h, s, _, k) = members[i];
        &header(h)[usize::from(s)..usize::from(k)]
    };
    // Of members with the same key, the first is kept.
    let mut keep = [true; TRACESTATE_MAX_MEMBERS];
    for i in 1..count {
        if (0..i).any(|j| keep[j] && key(i) == key(j)) {
            keep[i] = false;
            clean = false;
        }
    }
    if !keep[..count].contains(&true) {
        return Ok(None);
    }
    let total: usize = (0..count)
        .filter(|&i| keep[i])
        .map(|i| member(i).len() + 1)
        .sum::<usize>()
        - 1;
    if clean && total <= TRACESTATE_MAX_LEN {
        return Ok(first.cloned());
    }
    // Cut to the limit: members over 128 characters go first, then members
    // from the end.
    let mut len = total;
    for (i, keep) in keep.iter_mut().enumerate().take(count) {
        if len <= TRACESTATE_MAX_LEN {
            break;
        }
        if *keep && member(i).len() > 128 {
            *keep = false;
            len = len.saturating_sub(member(i).len() + 1);
        }
    }
    for i in (0..count).rev() {
        if len <= TRACESTATE_MAX_LEN {
            break;
        }
        if keep[i] {
            keep[i] = false;
            len = len.saturating_sub(member(i).len() + 1);
        }
    }
    let mut out = Vec::with_capacity(len.min(TRACESTATE_MAX_LEN));
    for i in (0..count).filter(|&i| keep[i]) {
        if !out.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(member(i));
    }
    if out.is_empty() {
        return Ok(None);
    }
    Ok(Some(header_value(&out)))
}

fn trim_ows_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}
