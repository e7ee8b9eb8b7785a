//! The half-open probe slots: one atomic word holding the half-open period
//! (high 32 bits), whether that period takes probes (bit 31), and the
//! probes in flight in it (low 31 bits), so that a probe is always counted,
//! and released, in the period it was let through in.
//!
//! Starting and ending a period and releasing a slot happen under the
//! breaker's transition lock; taking a slot does not. A caller that saw the
//! breaker half-open and is slow to take its slot finds the period ended
//! (the breaker opened again meanwhile) and is turned away, instead of
//! slipping into the next period uncounted. The loom model at the end of
//! this file checks it (`RUSTFLAGS="--cfg shield_loom" cargo test --lib
//! --release loom`).

#[cfg(not(shield_loom))]
use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(shield_loom)]
use loom::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub(crate) struct ProbeSlots {
    word: AtomicU64,
}

const COUNT: u64 = (1 << 31) - 1;
const TAKING: u64 = 1 << 31;

impl ProbeSlots {
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
        }
    }

    /// Starts a new half-open period that takes probes, with none in
    /// flight.
    pub(crate) fn new_period(&self) {
        let _ = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(((v >> 32).wrapping_add(1) << 32) | TAKING)
            });
    }

    /// Ends the current period: no more slots are taken in it. Probes in
    /// flight keep their slots until they report.
    pub(crate) fn end_period(&self) {
        self.word.fetch_and(!TAKING, Ordering::AcqRel);
    }

    /// Takes a slot if the period takes probes and fewer than `max` are
    /// taken; returns the period.
    pub(crate) fn try_take(&self, max: u32) -> Option<u32> {
        self.word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v & TAKING != 0 && v & COUNT < u64::from(max)).then_some(v + 1)
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

#[cfg(all(test, shield_loom))]
mod loom_tests {
    use super::ProbeSlots;
    use loom::{sync::Arc, thread};

    /// Two callers race to probe while the breaker ends the period (a probe
    /// failed) and, later, starts the next one. Whatever the interleaving:
    /// a slot is only ever taken in a period that takes probes, never more
    /// than the limit at once, and the next period's count is exactly the
    /// slots taken in it and not yet released.
    #[test]
    fn probes_stay_in_their_period() {
        // Three preemptions cover the races between one prober and the
        // period ending; the unbounded model takes minutes.
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let slots = Arc::new(ProbeSlots::new());
            slots.new_period();
            let prober = |slots: Arc<ProbeSlots>| {
                thread::spawn(move || {
                    let taken = slots.try_take(1);
                    if let Some(generation) = taken {
                        assert!(slots.in_flight() <= 1);
                        slots.release(generation);
                    }
                    taken
                })
            };
            let a = prober(slots.clone());
            let b = prober(slots.clone());
            slots.end_period();
            slots.new_period();
            let mine = slots.try_take(1);
            let (a, b) = (a.join().unwrap(), b.join().unwrap());
            for generation in [a, b].into_iter().flatten() {
                assert!(generation == 1 || generation == 2, "{generation}");
            }
            // Both callers released; only a slot of period 2 still held
            // by this thread remains.
            assert_eq!(slots.in_flight(), u32::from(mine.is_some()));
            if let Some(generation) = mine {
                assert_eq!(generation, 2);
            }
        });
    }

    /// Once a period has ended, no caller takes a slot in it, however late
    /// it saw the breaker half-open.
    #[test]
    fn no_slot_is_taken_after_the_period_ends() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let slots = Arc::new(ProbeSlots::new());
            slots.new_period();
            let probers: Vec<_> = (0..2)
                .map(|_| {
                    let slots = slots.clone();
                    thread::spawn(move || slots.try_take(2))
                })
                .collect();
            slots.end_period();
            let at_end = slots.in_flight();
            for p in probers {
                if let Some(generation) = p.join().unwrap() {
                    assert_eq!(generation, 1);
                }
            }
            assert_eq!(slots.in_flight(), at_end, "a slot was taken after the end");
        });
    }
}
