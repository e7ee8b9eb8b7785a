//! A counter split over cache lines, so that threads counting at once do
//! not fight over one line: each thread adds to its own stripe, and a read
//! adds the stripes up. Shared by the breaker's counters and the retry
//! budget.

use std::{
    cell::Cell,
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

const STRIPES: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// A striped `u64` counter.
#[derive(Debug, Default)]
pub(crate) struct Striped {
    stripes: [Padded; STRIPES],
}

/// This thread's stripe, given out round-robin on first use.
fn stripe() -> usize {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    thread_local!(static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) });
    STRIPE.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Ordering::Relaxed) as usize % STRIPES);
        }
        s.get()
    })
}

impl Striped {
    /// Adds `n` to this thread's stripe; returns what the stripe held
    /// before.
    pub(crate) fn add(&self, n: u64) -> u64 {
        self.stripes[stripe()].0.fetch_add(n, Ordering::Relaxed)
    }

    /// The total over all stripes.
    pub(crate) fn sum(&self) -> u64 {
        self.stripes
            .iter()
            .map(|p| p.0.load(Ordering::Relaxed))
            .sum()
    }
}
