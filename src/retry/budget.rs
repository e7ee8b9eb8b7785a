//! The retry budget: retries may add at most a percentage of the requests
//! of the last 10 seconds, plus a reserve per second.
//!
//! tower's [`TpsBudget`](tower::retry::budget::TpsBudget) does the same,
//! but reads the clock on every deposit, that is on every request, which
//! costs a large part of a retry layer's success path (BENCHMARKS.md has
//! the figures). This one keeps a request count that only grows, split
//! over cache lines so that threads do not fight over one, and reads the
//! clock only on a withdrawal (a retry, which is rare) and on every 64th
//! deposit of a thread. Each read of the clock closes the seconds since
//! the previous one by writing down the running totals; the requests of the
//! last 10 s are then the running total minus the total written down 10 s
//! ago. Requests counted between two reads are taken as having come at the
//! first: they leave the window early rather than late, so the budget errs
//! towards fewer retries, and under load (where it matters) the reads are
//! frequent.

use crate::striped::Striped;
use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering},
};
use tokio::time::Instant;

const WINDOW: u64 = 10;
/// A thread looks at the clock after this many deposits of its own.
const CHECK_EVERY: u64 = 64;

/// The running totals as they were at the start of one second.
#[derive(Default)]
struct Mark {
    second: AtomicU64,
    deposits: AtomicU64,
    withdrawals: AtomicU64,
}

/// A retry budget shared by every clone of a retry layer's services. It
/// implements tower's [`Budget`](tower::retry::budget::Budget), so it can
/// also be used with `tower::retry` directly.
pub struct RetryBudget {
    epoch: Instant,
    deposits: Striped,
    withdrawals: AtomicU64,
    /// The last second (since `epoch`) whose mark is written.
    second: AtomicU64,
    marks: [Mark; WINDOW as usize],
    reserve: u64,
    ratio: f64,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("reserve", &self.reserve)
            .field("ratio", &self.ratio)
            .finish_non_exhaustive()
    }
}

impl RetryBudget {
    /// A budget that allows `percent` retries per 100 requests of the last
    /// 10 s, plus `min_per_sec` retries per second whatever the traffic.
    pub fn new(percent: f64, min_per_sec: u32) -> Self {
        Self {
            epoch: Instant::now(),
            deposits: Default::default(),
            withdrawals: AtomicU64::new(0),
            second: AtomicU64::new(0),
            marks: Default::default(),
            reserve: u64::from(min_per_sec) * WINDOW,
            ratio: percent / 100.0,
        }
    }

    fn deposits(&self) -> u64 {
        self.deposits.sum()
    }

    /// Writes down the marks of the seconds up to now, once per second.
    fn tick(&self) -> u64 {
        let now = self.epoch.elapsed().as_secs();
        let last = self.second.load(Ordering::Acquire);
        if now <= last
            || self
                .second
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return now.max(last);
        }
        // The seconds in between (a window's worth at most) get the totals
        // of now: what came in since the previous mark is taken as having
        // come at its start, so it leaves the window early rather than
        // late, and the budget errs on the side of fewer retries.
        let (deposits, withdrawals) = (self.deposits(), self.withdrawals.load(Ordering::Relaxed));
        for s in (last + 1).max(now.saturating_sub(WINDOW - 1))..=now {
            let mark = &self.marks[(s % WINDOW) as usize];
            mark.deposits.store(deposits, Ordering::Relaxed);
            mark.withdrawals.store(withdrawals, Ordering::Relaxed);
            mark.second.store(s, Ordering::Release);
        }
        now
    }

    /// Retries the budget would allow now.
    pub fn balance(&self) -> i64 {
        let now = self.tick();
        let start = now.saturating_sub(WINDOW - 1);
        let mark = &self.marks[(start % WINDOW) as usize];
        let (d0, w0) = if now >= WINDOW - 1 && mark.second.load(Ordering::Acquire) == start {
            (
                mark.deposits.load(Ordering::Relaxed),
                mark.withdrawals.load(Ordering::Relaxed),
            )
        } else {
            (0, 0)
        };
        let deposits = self.deposits().saturating_sub(d0);
        let withdrawals = self.withdrawals.load(Ordering::Relaxed).saturating_sub(w0);
        (self.reserve as f64 + deposits as f64 * self.ratio - withdrawals as f64).floor() as i64
    }
}

impl tower::retry::budget::Budget for RetryBudget {
    fn deposit(&self) {
        let n = self.deposits.add(1);
        if n % CHECK_EVERY == CHECK_EVERY - 1 {
            self.tick();
        }
    }

    fn withdraw(&self) -> bool {
        if self.balance() >= 1 {
            self.withdrawals.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower::retry::budget::Budget;

    #[tokio::test(start_paused = true)]
    async fn percent_of_requests_plus_reserve() {
        let budget = RetryBudget::new(20.0, 1);
        for _ in 0..100 {
            budget.deposit();
        }
        // 10 in reserve (1 per second over 10 s) and 20% of 100.
        let allowed = (0..100).take_while(|_| budget.withdraw()).count();
        assert_eq!(allowed, 30);
        assert!(!budget.withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_and_retries_leave_the_window() {
        let budget = RetryBudget::new(50.0, 0);
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(budget.balance(), 5);
        assert!(budget.withdraw());
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(budget.balance(), 4);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(budget.balance(), 0, "everything is older than 10 s");
        for _ in 0..4 {
            budget.deposit();
        }
        assert_eq!(budget.balance(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn counts_between_clock_reads_leave_early() {
        let budget = RetryBudget::new(100.0, 0);
        // 100 requests over 20 s, 5 a second, with one clock read (at the
        // 64th). 45 of them came in the last 10 s; the budget counts 36,
        // never more than came.
        for _ in 0..20 {
            for _ in 0..5 {
                budget.deposit();
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let b = budget.balance();
        assert!((30..=45).contains(&b), "{b}");
    }

    #[test]
    fn many_threads_deposit_and_withdraw() {
        let budget = std::sync::Arc::new(RetryBudget::new(10.0, 0));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || {
                    let mut got = 0;
                    for i in 0..10_000 {
                        budget.deposit();
                        if i % 5 == 0 && budget.withdraw() {
                            got += 1;
                        }
                    }
                    got
                })
            })
            .collect();
        let retries: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        // 10% of 40 000 requests, give or take the races of concurrent
        // withdrawals.
        assert!((3_900..=4_100).contains(&retries), "{retries}");
    }
}
