//! The state machine of one breaker.
//!
//! The closed path takes no lock. In the consecutive mode a success writes
//! no shared memory but a per-thread stripe of the call counter: it reads
//! the state and the failure streak. The rate modes record into a lock-free
//! window (`window.rs`). Only transitions (rare) take a mutex.

use super::{
    config::{Config, Detection},
    error::Open,
    probes::ProbeSlots,
    window::Outcomes,
};
use crate::{classify::Class, striped::Striped};
use std::{
    sync::{
        atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering},
        Mutex, MutexGuard,
    },
    time::Duration,
};
use tokio::{sync::watch, time::Instant};

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls go through and their outcomes are counted.
    Closed,
    /// Calls are rejected at once until the open time has passed.
    Open,
    /// A limited number of probe calls go through; their outcomes decide
    /// whether the breaker closes or opens again.
    HalfOpen,
    /// Opened by hand with [`Breaker::force_open`]: every call is rejected
    /// until [`Breaker::reset`].
    ForcedOpen,
    /// Closed by hand with [`Breaker::force_closed`]: every call goes
    /// through and nothing is counted until [`Breaker::reset`].
    Disabled,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;
const FORCED_OPEN: u8 = 3;
const DISABLED: u8 = 4;

fn decode(state: u8) -> State {
    match state {
        CLOSED => State::Closed,
        OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        FORCED_OPEN => State::ForcedOpen,
        _ => State::Disabled,
    }
}

/// Counts of what a breaker has seen since it was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Calls let through.
    pub calls: u64,
    /// Calls classified as failures (retryable or not).
    pub failures: u64,
    /// Calls slower than the slow-call duration.
    pub slow_calls: u64,
    /// Calls rejected without reaching the inner service.
    pub rejections: u64,
    /// Times the breaker opened.
    pub opened: u64,
}

/// One circuit breaker. Shared (in an `Arc`) by every clone of the service
/// that uses it.
#[derive(Debug)]
pub struct Breaker {
    config: Config,
    epoch: Instant,
    state: AtomicU8,
    /// When the open state ends, in nanoseconds since `epoch`.
    open_until: AtomicU64,
    /// Trips in a row without closing in between, for the growing open time.
    trips: AtomicU32,
    probes: ProbeSlots,
    probe_successes: AtomicU32,
    streak: AtomicU32,
    outcomes: Option<Outcomes>,
    transition: Mutex<()>,
    events: watch::Sender<State>,
    calls: Striped,
    failures: Striped,
    slow_calls: Striped,
    rejections: Striped,
    opened: AtomicU64,
    name: std::sync::Arc<str>,
}

/// What a call that was let through must report back.
#[derive(Debug)]
pub(crate) struct Permit {
    probe: bool,
    /// The half-open period a probe belongs to: a probe that outlives its
    /// period must not touch the next period's count.
    generation: u32,
    started: Option<Instant>,
    done: bool,
}

impl Permit {
    /// A permit whose outcome has been reported.
    pub(crate) fn finished() -> Self {
        Self {
            probe: false,
            generation: 0,
            started: None,
            done: true,
        }
    }
}

impl Breaker {
    pub(crate) fn new(config: Config, name: String) -> Self {
        let outcomes = match config.detection() {
            Detection::Consecutive { .. } if config.slow_call_duration.is_none() => None,
            Detection::Consecutive { .. } | Detection::Rate { .. } => {
                Some(Outcomes::new(config.window))
            }
        };
        Self {
            config,
            epoch: Instant::now(),
            state: AtomicU8::new(CLOSED),
            open_until: AtomicU64::new(0),
            trips: AtomicU32::new(0),
            probes: ProbeSlots::new(),
            probe_successes: AtomicU32::new(0),
            streak: AtomicU32::new(0),
            outcomes,
            transition: Mutex::new(()),
            events: watch::channel(State::Closed).0,
            calls: Striped::default(),
            failures: Striped::default(),
            slow_calls: Striped::default(),
            rejections: Striped::default(),
            opened: AtomicU64::new(0),
            name: name.into(),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        saturating_nanos(at.saturating_duration_since(self.epoch))
    }

    /// `wait` after `now`, in nanoseconds since `epoch`; a wait beyond the
    /// clock's range (a config of centuries, an upstream asking for
    /// `u64::MAX` seconds) means "until reset", not an overflow.
    fn until(&self, now: Instant, wait: Duration) -> u64 {
        self.nanos(now).saturating_add(saturating_nanos(wait))
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.transition.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The breaker's name: its key, or `"default"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current state. An open breaker whose time is up reports
    /// [`State::HalfOpen`], since the next call will probe.
    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            OPEN if self.nanos(Instant::now()) >= self.open_until.load(Ordering::Acquire) => {
                State::HalfOpen
            }
            s => decode(s),
        }
    }

    /// A receiver that sees every state transition.
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.events.subscribe()
    }

    /// The counts so far.
    pub fn metrics(&self) -> Metrics {
        Metrics {
            calls: self.calls.sum(),
            failures: self.failures.sum(),
            slow_calls: self.slow_calls.sum(),
            rejections: self.rejections.sum(),
            opened: self.opened.load(Ordering::Relaxed),
        }
    }

    /// Rejects every call until [`reset`](Self::reset) (isolates the
    /// dependency).
    pub fn force_open(&self) {
        let _guard = self.lock();
        self.set(FORCED_OPEN, "forced open");
    }

    /// Lets every call through and counts nothing until
    /// [`reset`](Self::reset).
    pub fn force_closed(&self) {
        let _guard = self.lock();
        self.set(DISABLED, "forced closed");
    }

    /// Closes the breaker and forgets everything it counted.
    pub fn reset(&self) {
        let _guard = self.lock();
        self.close();
    }

    fn set(&self, state: u8, why: &str) {
        if state != HALF_OPEN {
            // No probe may start in a period that is over.
            self.probes.end_period();
        }
        let old = self.state.swap(state, Ordering::AcqRel);
        if old != state {
            tracing::info!(
                breaker = %self.name,
                from = ?decode(old),
                to = ?decode(state),
                reason = why,
                "circuit breaker transition"
            );
            self.events.send_replace(decode(state));
        }
    }

    /// Closes, with the lock held.
    fn close(&self) {
        self.streak.store(0, Ordering::Relaxed);
        self.trips.store(0, Ordering::Relaxed);
        self.probe_successes.store(0, Ordering::Relaxed);
        if let Some(outcomes) = &self.outcomes {
            outcomes.clear();
        }
        self.set(CLOSED, "closed");
    }

    /// Opens for the configured time (growing with repeated trips), or for
    /// exactly `asked` (an upstream's `Retry-After`); with the lock held.
    fn open(&self, now: Instant, asked: Option<Duration>, why: &str) {
        let trips = self.trips.fetch_add(1, Ordering::Relaxed);
        let mut wait = self.config.open_for;
        if let Some(max) = self.config.open_for_max {
            wait = wait
                .checked_mul(1u32.checked_shl(trips.min(31)).unwrap_or(u32::MAX))
                .unwrap_or(max)
                .min(max);
        }
        if let Some(asked) = asked {
            wait = asked;
        }
        let until = self.until(now, wait);
        self.open_until.store(until, Ordering::Release);
        self.probe_successes.store(0, Ordering::Relaxed);
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.set(OPEN, why);
    }

    fn rejected(&self, retry_after: Duration) -> Open {
        self.rejections.add(1);
        Open::new(retry_after, self.name.clone())
    }

    /// Lets a call through, or rejects it with [`Open`].
    pub(crate) fn try_acquire(&self) -> Result<Permit, Open> {
        loop {
            match self.state.load(Ordering::Acquire) {
                CLOSED => {
                    self.calls.add(1);
                    let started = self.config.slow_call_duration.is_some().then(Instant::now);
                    return Ok(Permit {
                        probe: false,
                        generation: 0,
                        started,
                        done: false,
                    });
                }
                DISABLED => return Ok(Permit::finished()),
                FORCED_OPEN => return Err(self.rejected(self.config.open_for)),
                OPEN => {
                    let now = Instant::now();
                    let until = self.open_until.load(Ordering::Acquire);
                    let now_nanos = self.nanos(now);
                    if now_nanos < until {
                        return Err(self.rejected(Duration::from_nanos(until - now_nanos)));
                    }
                    let _guard = self.lock();
                    if self.state.load(Ordering::Acquire) == OPEN {
                        self.probes.new_period();
                        self.set(HALF_OPEN, "open time elapsed");
                    }
                }
                _ => {
                    // Half-open: at most `half_open_probes` calls at a time.
                    // A compare-and-swap, so the count never exceeds the
                    // limit even for a moment.
                    let taken = self.probes.try_take(self.config.half_open_probes);
                    if let Some(generation) = taken {
                        self.calls.add(1);
                        let started = self.config.slow_call_duration.is_some().then(Instant::now);
                        return Ok(Permit {
                            probe: true,
                            generation,
                            started,
                            done: false,
                        });
                    }
                    return Err(self.rejected(Duration::ZERO));
                }
            }
        }
    }

    /// The number of probe calls in flight now.
    pub fn probes_in_flight(&self) -> u32 {
        match self.state.load(Ordering::Acquire) {
            HALF_OPEN => self.probes.in_flight(),
            _ => 0,
        }
    }

    /// Frees the slot of a probe of `generation`, if that period is still
    /// on; returns whether it was. With the lock held.
    fn release_probe(&self, generation: u32) -> bool {
        if self.state.load(Ordering::Acquire) != HALF_OPEN {
            return false;
        }
        self.probes.release(generation)
    }

    /// Opens (or keeps open) for at least `delay`, capped by the configured
    /// maximum: an upstream asked, with `Retry-After`, not to be called
    /// before then.
    pub(crate) fn open_for_retry_after(&self, delay: Duration) {
        let Some(cap) = self.config.retry_after_cap() else {
            return;
        };
        let delay = delay.min(cap);
        let now = Instant::now();
        let _guard = self.lock();
        match self.state.load(Ordering::Acquire) {
            FORCED_OPEN | DISABLED => {}
            OPEN => {
                let until = self.until(now, delay);
                self.open_until.fetch_max(until, Ordering::AcqRel);
            }
            _ => self.open(now, Some(delay), "upstream sent Retry-After"),
        }
    }

    /// Reports the outcome of a permitted call; with [`Permit::finished`],
    /// an outcome found after the call was recorded (its body failed),
    /// which counts only while closed.
    pub(crate) fn record(&self, mut permit: Permit, class: Class) {
        permit.done = true;
        let failure = class.is_failure();
        // One clock read at most: for the slow-call check, or for a time
        // window.
        let now = (permit.started.is_some() || self.outcomes.as_ref().is_some_and(Outcomes::timed))
            .then(Instant::now);
        let slow = match (permit.started, now, self.config.slow_call_duration) {
            (Some(start), Some(now), Some(limit)) => now.duration_since(start) > limit,
            _ => false,
        };
        if failure {
            self.failures.add(1);
        }
        if slow {
            self.slow_calls.add(1);
        }
        if permit.probe {
            self.record_probe(permit.generation, failure || slow);
            return;
        }
        if self.state.load(Ordering::Acquire) != CLOSED {
            return;
        }
        let trip = match self.config.detection() {
            Detection::Consecutive { failures } => {
                let streak = if failure {
                    self.streak.fetch_add(1, Ordering::AcqRel) + 1
                } else {
                    // Read before writing: a success on a healthy breaker
                    // leaves the shared line untouched.
                    if self.streak.load(Ordering::Relaxed) != 0 {
                        self.streak.store(0, Ordering::Relaxed);
                    }
                    0
                };
                let slow_trip = self.slow_trip(now, failure, slow);
                (streak >= failures)
                    .then_some("consecutive failures")
                    .or(slow_trip)
            }
            Detection::Rate {
                failure_rate,
                min_calls,
            } => self
                .window(now, failure, slow)
                .and_then(|(calls, failures, slow_calls)| {
                    (calls >= min_calls
                        && f64::from(failures) * 100.0 >= failure_rate * f64::from(calls))
                    .then_some("failure rate")
                    .or_else(|| self.slow_rate_trip(calls, slow_calls, min_calls))
                }),
        };
        if let Some(why) = trip {
            let _guard = self.lock();
            if self.state.load(Ordering::Acquire) == CLOSED {
                self.open(now.unwrap_or_else(Instant::now), None, why);
            }
        }
    }

    fn window(&self, now: Option<Instant>, failure: bool, slow: bool) -> Option<(u32, u32, u32)> {
        let outcomes = self.outcomes.as_ref()?;
        let now_nanos = match now {
            Some(now) if outcomes.timed() => self.nanos(now),
            _ => 0,
        };
        outcomes.record(now_nanos, failure, slow)
    }

    /// In the consecutive mode, slow calls are judged over the window too.
    fn slow_trip(&self, now: Option<Instant>, failure: bool, slow: bool) -> Option<&'static str> {
        self.outcomes.as_ref()?;
        let (calls, _, slow_calls) = self.window(now, failure, slow)?;
        self.slow_rate_trip(calls, slow_calls, self.config.min_calls)
    }

    fn slow_rate_trip(&self, calls: u32, slow: u32, min_calls: u32) -> Option<&'static str> {
        let rate = self.config.slow_call_rate?;
        (self.config.slow_call_duration.is_some()
            && calls >= min_calls
            && f64::from(slow) * 100.0 >= rate * f64::from(calls))
        .then_some("slow-call rate")
    }

    fn record_probe(&self, generation: u32, bad: bool) {
        let _guard = self.lock();
        if !self.release_probe(generation) {
            // Its period ended (another probe failed, or Retry-After); the
            // count restarted with the next period.
            return;
        }
        if bad {
            self.open(Instant::now(), None, "probe failed");
        } else if self.probe_successes.fetch_add(1, Ordering::AcqRel) + 1 >= self.config.close_after
        {
            self.close();
        }
    }

    /// A permitted call that was dropped before it finished: it counts as
    /// nothing, and frees its probe slot.
    pub(crate) fn cancel(&self, permit: &mut Permit) {
        if permit.done {
            return;
        }
        permit.done = true;
        if permit.probe {
            let _guard = self.lock();
            self.release_probe(permit.generation);
        }
    }
}

fn saturating_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Acquire,
        Succeed(usize),
        Fail(usize),
        Cancel(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Acquire),
            2 => any::<usize>().prop_map(Op::Succeed),
            2 => any::<usize>().prop_map(Op::Fail),
            1 => any::<usize>().prop_map(Op::Cancel),
            1 => (0u64..3000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Whatever callers do (many at once, finishing in any order,
        /// failing, being cancelled, time passing), the breaker never lets
        /// more than `half_open_probes` probe calls be in flight, and every
        /// probe it let through is accounted for.
        #[test]
        fn never_more_probes_than_allowed(
            probes in 1u32..4,
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
            rt.block_on(async {
                let config = Config::default()
                    .consecutive_failures(2)
                    .open_for(Duration::from_secs(1))
                    .half_open_probes(probes)
                    .close_after(2);
                let breaker = Breaker::new(config, "test".into());
                let mut held: Vec<Permit> = Vec::new();
                for op in ops {
                    match op {
                        Op::Acquire => {
                            if let Ok(permit) = breaker.try_acquire() {
                                held.push(permit);
                            }
                        }
                        Op::Succeed(i) | Op::Fail(i) | Op::Cancel(i) if !held.is_empty() => {
                            let mut permit = held.swap_remove(i % held.len());
                            match op {
                                Op::Succeed(_) => breaker.record(permit, Class::Success),
                                Op::Fail(_) => breaker.record(permit, Class::Failure),
                                _ => breaker.cancel(&mut permit),
                            }
                        }
                        Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                        _ => {}
                    }
                    let in_flight = breaker.probes_in_flight();
                    prop_assert!(in_flight <= probes, "{} probes in flight, limit {}", in_flight, probes);
                    if breaker.state.load(Ordering::Acquire) == HALF_OPEN {
                        let held_probes = held.iter().filter(|p| p.probe).count() as u32;
                        prop_assert!(in_flight <= held_probes, "in flight {} > held {}", in_flight, held_probes);
                    }
                }
                Ok(())
            })?;
        }
    }
}
