//! The half-open probe slots: one atomic word holding the half-open period
//! (high 32 bits) and the probes in flight in it (low 32 bits), so that a
//! probe is always counted, and released, in the period it was let through
//! in. Starting a period and releasing a slot happen under the breaker's
//! transition lock; taking a slot does not.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub(crate) struct ProbeSlots {
    word: AtomicU64,
}

const COUNT: u64 = u32::MAX as u64;

impl ProbeSlots {
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
        }
    }

    /// Starts a new half-open period with no probes in flight.
    pub(crate) fn new_period(&self) {
        let generation = (self.word.load(Ordering::Acquire) >> 32) + 1;
        self.word.store(generation << 32, Ordering::Release);
    }

    /// Takes a slot if fewer than `max` are taken; returns the period.
    pub(crate) fn try_take(&self, max: u32) -> Option<u32> {
        self.word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v & COUNT < u64::from(max)).then_some(v + 1)
            })
            .ok()
            .map(|before| (before >> 32) as u32)
    }

    /// Frees a slot of `generation`, if that period is still the current
    /// one and has a slot taken; returns whether it did.
    pub(crate) fn release(&self, generation: u32) -> bool {
        self.word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                ((v >> 32) as u32 == generation && v & COUNT > 0).then_some(v - 1)
            })
            .is_ok()
    }

    /// Probes in flight in the current period.
    pub(crate) fn in_flight(&self) -> u32 {
        (self.word.load(Ordering::Acquire) & COUNT) as u32
    }
}
