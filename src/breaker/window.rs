//! The outcome windows of the rate modes, without a lock.
//!
//! A count window is a ring of the last N outcomes: a caller takes the next
//! slot with one `fetch_add`, swaps its outcome in, and adjusts the failure
//! and slow totals by the difference to the outcome it pushed out. A time
//! window is a ring of buckets, each stamped with the period it counts; the
//! first caller of a new period claims the bucket with a compare-and-swap
//! and zeroes it.
//!
//! Both give up exactness only at the edges, where the breaker can afford
//! it: a call racing a bucket's rotation, or a [`clear`](Outcomes::clear),
//! may be counted in the old period or not at all. The count window
//! recounts its totals from the ring on every wrap, so no such race leaves
//! a lasting error.

use super::config::Window;
use std::{
    sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering},
    time::Duration,
};

const EMPTY: u8 = 0xff;
const FAILURE: u8 = 1;
const SLOW: u8 = 2;
const BUCKETS: u32 = 10;

/// Totals in a window: (calls, failures, slow calls).
pub(super) type Totals = (u32, u32, u32);

#[derive(Debug)]
pub(super) enum Outcomes {
    Count {
        ring: Box<[AtomicU8]>,
        next: AtomicU64,
        failures: AtomicI64,
        slow: AtomicI64,
    },
    Time {
        width: u64,
        buckets: Box<[Bucket]>,
    },
}

#[derive(Debug)]
pub(super) struct Bucket {
    /// The period (nanos since the breaker's epoch / width) it counts,
    /// `u64::MAX` when never used.
    period: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

fn clamp(n: i64) -> u32 {
    n.clamp(0, i64::from(u32::MAX)) as u32
}

impl Outcomes {
    pub(super) fn new(window: Window) -> Self {
        match window {
            Window::Calls(n) => Outcomes::Count {
                ring: (0..n.max(1)).map(|_| AtomicU8::new(EMPTY)).collect(),
                next: AtomicU64::new(0),
                failures: AtomicI64::new(0),
                slow: AtomicI64::new(0),
            },
            Window::Duration(d) => Outcomes::Time {
                // Saturated, never truncated (to zero, say) for a window of
                // centuries.
                width: u64::try_from((d / BUCKETS).max(Duration::from_millis(1)).as_nanos())
                    .unwrap_or(u64::MAX),
                buckets: (0..BUCKETS)
                    .map(|_| Bucket {
                        period: AtomicU64::new(u64::MAX),
                        calls: AtomicU32::new(0),
                        failures: AtomicU32::new(0),
                        slow: AtomicU32::new(0),
                    })
                    .collect(),
            },
        }
    }

    /// Whether recording needs the time.
    pub(super) fn timed(&self) -> bool {
        matches!(self, Outcomes::Time { .. })
    }

    pub(super) fn clear(&self) {
        match self {
            Outcomes::Count {
                ring,
                next,
                failures,
                slow,
            } => {
                for slot in ring.iter() {
                    slot.store(EMPTY, Ordering::Relaxed);
                }
                next.store(0, Ordering::Relaxed);
                failures.store(0, Ordering::Relaxed);
                slow.store(0, Ordering::Relaxed);
            }
            Outcomes::Time { buckets, .. } => {
                for b in buckets.iter() {
                    b.period.store(u64::MAX, Ordering::Relaxed);
                }
            }
        }
    }

    /// Records one outcome at `now_nanos` (read only by a time window) and
    /// returns the window's totals, which a time window only adds up for a
    /// failed or slow call: a call that neither failed nor was slow cannot
    /// raise a rate, so it is not worth ten bucket reads. (It can lift the
    /// count to `min_calls`; the rate is then judged at the next failed or
    /// slow call.)
    pub(super) fn record(&self, now_nanos: u64, failure: bool, is_slow: bool) -> Option<Totals> {
        let outcome = (u8::from(failure) * FAILURE) | (u8::from(is_slow) * SLOW);
        match self {
            Outcomes::Count {
                ring,
                next,
                failures,
                slow,
            } => {
                let len = ring.len() as u64;
                let seq = next.fetch_add(1, Ordering::Relaxed);
                let old = ring[(seq % len) as usize].swap(outcome, Ordering::AcqRel);
                let old = if old == EMPTY { 0 } else { old };
                let delta = |bit: u8| i64::from(outcome & bit != 0) - i64::from(old & bit != 0);
                let (df, ds) = (delta(FAILURE), delta(SLOW));
                let (mut f, mut s) = (
                    failures.load(Ordering::Relaxed),
                    slow.load(Ordering::Relaxed),
                );
                if df != 0 {
                    f = failures.fetch_add(df, Ordering::Relaxed) + df;
                }
                if ds != 0 {
                    s = slow.fetch_add(ds, Ordering::Relaxed) + ds;
                }
                if seq % len == len - 1 {
                    // Once per wrap, recount from the ring so that a race
                    // with `clear` cannot leave the totals off for good.
                    let (rf, rs) = ring.iter().fold((0, 0), |(f, s), slot| {
                        let o = slot.load(Ordering::Relaxed);
                        if o == EMPTY {
                            (f, s)
                        } else {
                            (f + i64::from(o & FAILURE), s + i64::from(o & SLOW != 0))
                        }
                    });
                    failures.store(rf, Ordering::Relaxed);
                    slow.store(rs, Ordering::Relaxed);
                    (f, s) = (rf, rs);
                }
                let calls = (seq + 1).min(len) as u32;
                Some((calls, clamp(f).min(calls), clamp(s).min(calls)))
            }
            Outcomes::Time { width, buckets } => {
                let period = now_nanos / width;
                let b = &buckets[(period % buckets.len() as u64) as usize];
                let seen = b.period.load(Ordering::Acquire);
                if seen != period
                    && (seen == u64::MAX || seen < period)
                    && b.period
                        .compare_exchange(seen, period, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    b.calls.store(0, Ordering::Relaxed);
                    b.failures.store(0, Ordering::Relaxed);
                    b.slow.store(0, Ordering::Relaxed);
                }
                b.calls.fetch_add(1, Ordering::Relaxed);
                if failure {
                    b.failures.fetch_add(1, Ordering::Relaxed);
                }
                if is_slow {
                    b.slow.fetch_add(1, Ordering::Relaxed);
                } else if !failure {
                    return None;
                }
                let oldest = period.saturating_sub(buckets.len() as u64 - 1);
                let totals = buckets
                    .iter()
                    .filter(|b| {
                        let p = b.period.load(Ordering::Acquire);
                        p != u64::MAX && p >= oldest && p <= period
                    })
                    .fold((0, 0, 0), |acc, b| {
                        (
                            acc.0 + b.calls.load(Ordering::Relaxed),
                            acc.1 + b.failures.load(Ordering::Relaxed),
                            acc.2 + b.slow.load(Ordering::Relaxed),
                        )
                    });
                Some(totals)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Recorded one at a time, the count window's totals are exactly
        /// those of the last N outcomes.
        #[test]
        fn count_window_is_exact_sequentially(
            n in 1u32..20,
            outcomes in prop::collection::vec((any::<bool>(), any::<bool>()), 1..100),
        ) {
            let w = Outcomes::new(Window::Calls(n));
            for (i, &(f, s)) in outcomes.iter().enumerate() {
                let got = w.record(0, f, s).unwrap();
                let last = &outcomes[(i + 1).saturating_sub(n as usize)..=i];
                let want = (
                    last.len() as u32,
                    last.iter().filter(|o| o.0).count() as u32,
                    last.iter().filter(|o| o.1).count() as u32,
                );
                prop_assert_eq!(got, want);
            }
        }

        /// The time window counts exactly the outcomes of the buckets that
        /// are inside it.
        #[test]
        fn time_window_counts_the_last_buckets(
            steps in prop::collection::vec((0u64..300, any::<bool>()), 1..100),
        ) {
            // 10 buckets of 10 ms.
            let w = Outcomes::new(Window::Duration(Duration::from_millis(100)));
            let ms = 1_000_000;
            let mut now = 0;
            let mut seen: Vec<(u64, bool)> = Vec::new();
            for &(advance, f) in &steps {
                now += advance * ms / 10;
                seen.push((now, f));
                let got = w.record(now, f, false);
                let Some(got) = got else {
                    prop_assert!(!f);
                    continue;
                };
                let period = now / (10 * ms);
                let inside: Vec<_> = seen
                    .iter()
                    .filter(|(t, _)| t / (10 * ms) + 9 >= period)
                    .collect();
                let want = (
                    inside.len() as u32,
                    inside.iter().filter(|o| o.1).count() as u32,
                    0,
                );
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn count_window_survives_threads() {
        let w = std::sync::Arc::new(Outcomes::new(Window::Calls(64)));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        let (calls, f, s) = w.record(0, (i + t) % 3 == 0, i % 5 == 0).unwrap();
                        assert!(calls <= 64 && f <= calls && s <= calls);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // After the threads, one full wrap alone gives exact totals.
        let mut last = (0, 0, 0);
        for i in 0..64 {
            last = w.record(0, i < 16, false).unwrap();
        }
        assert_eq!(last, (64, 16, 0));
    }

    #[test]
    fn count_window_forgets_old_outcomes() {
        let w = Outcomes::new(Window::Calls(4));
        for _ in 0..4 {
            w.record(0, true, false);
        }
        assert_eq!(w.record(0, false, false), Some((4, 3, 0)));
        for _ in 0..3 {
            w.record(0, false, true);
        }
        assert_eq!(w.record(0, false, false), Some((4, 0, 3)));
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let w = Outcomes::new(Window::Duration(Duration::from_secs(10)));
        let s = 1_000_000_000u64;
        assert_eq!(w.record(0, true, false), Some((1, 1, 0)));
        assert_eq!(w.record(5 * s, true, false), Some((2, 2, 0)));
        // 10.5 s later the first bucket is out of the window.
        assert_eq!(w.record(10 * s + s / 2, false, true), Some((2, 1, 1)));
        assert_eq!(w.record(30 * s, false, false), None);
        assert_eq!(w.record(30 * s, true, false), Some((2, 1, 0)));
    }
}
