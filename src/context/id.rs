//! Request IDs: minting new ones (UUID v7) and checking incoming ones.
//!
//! Minted here rather than by `uuid`'s `Uuid::now_v7`, which takes a global
//! lock and a ChaCha generator per ID: a per-thread counter and generator
//! make IDs ordered within a thread without any core waiting on another
//! (BENCHMARKS.md has the figures). `uuid` formats them.

use super::MAX_ID_LEN;
use bytes::Bytes;
use http::HeaderValue;
use std::{
    cell::Cell,
    time::{SystemTime, UNIX_EPOCH},
};

thread_local! {
    /// This thread's last request-ID millisecond and counter. Per thread, so
    /// no core ever waits on another (`uuid`'s `Uuid::now_v7` shares one
    /// context behind a global mutex).
    static V7: Cell<V7State> = const { Cell::new(V7State { ms: 0, counter: 0 }) };
}

/// Bits of the per-millisecond counter in a request ID: RFC 9562, section
/// 6.2, method 1 (a fixed-length dedicated counter), 12 bits in `rand_a`
/// and 30 at the top of `rand_b`, followed by 32 random bits.
const V7_COUNTER_BITS: u32 = 42;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct V7State {
    pub(super) ms: u64,
    pub(super) counter: u64,
}

impl V7State {
    /// The state for the next ID at `now_ms`, given a random counter seed
    /// (used when a new millisecond starts). The (ms, counter) pair always
    /// grows, so a thread's IDs are strictly ordered even when the clock
    /// stands still or steps back; when the counter would overflow, the ID
    /// borrows the next millisecond, as the RFC allows.
    pub(super) fn next(self, now_ms: u64, seed: u64) -> Self {
        // Seeds use one bit less than the counter, so a millisecond always
        // has room for at least 2^41 IDs.
        let seed = seed & ((1 << (V7_COUNTER_BITS - 1)) - 1);
        if now_ms > self.ms {
            return Self {
                ms: now_ms,
                counter: seed,
            };
        }
        let counter = self.counter + 1;
        if counter >> V7_COUNTER_BITS == 0 {
            Self {
                ms: self.ms,
                counter,
            }
        } else {
            Self {
                ms: self.ms + 1,
                counter: seed,
            }
        }
    }

    /// The UUID's 16 bytes: 48-bit Unix milliseconds, version 7, counter,
    /// variant `10`, counter, random.
    pub(super) fn uuid(self, random: u32) -> [u8; 16] {
        let counter = self.counter;
        let hi = (self.ms & 0xffff_ffff_ffff) << 16 | 0x7000 | (counter >> 30);
        let lo = 0x8000_0000_0000_0000 | (counter & ((1 << 30) - 1)) << 32 | u64::from(random);
        (u128::from(hi) << 64 | u128::from(lo)).to_be_bytes()
    }
}

/// A new request ID: a UUID v7 (RFC 9562) in its hyphenated lowercase form,
/// ordered within a thread and by millisecond across threads, with a random
/// tail from a per-thread generator.
///
/// ```
/// let id = tower_shield::context::new_request_id();
/// let text = id.to_str().unwrap();
/// assert_eq!(text.len(), 36);
/// assert_eq!(&text[14..15], "7"); // the version
/// ```
pub fn new_request_id() -> HeaderValue {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() * 1000 + u64::from(d.subsec_millis()));
    let state = V7.with(|v7| {
        let next = v7.get().next(now_ms, fastrand::u64(..));
        v7.set(next);
        next
    });
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::from_bytes(state.uuid(fastrand::u32(..)))
        .hyphenated()
        .encode_lower(&mut text);
    // One allocation that owns the text, so the clones that follow (the
    // correlation ID, the response's headers, outgoing requests) share it.
    HeaderValue::from_maybe_shared(Bytes::from_owner(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Whether an incoming request or correlation ID can be used: 1 to 128
/// visible ASCII characters.
pub(super) fn valid_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    (1..=MAX_ID_LEN).contains(&b.len()) && visible_ascii(b)
}

/// Whether every byte is visible ASCII (0x21 to 0x7e).
pub(super) fn visible_ascii(b: &[u8]) -> bool {
    b.iter().all(|&c| (0x21..=0x7e).contains(&c))
}
