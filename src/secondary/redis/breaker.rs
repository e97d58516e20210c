//! A circuit breaker, so that an unreachable Redis costs one bounded timeout, not one per
//! request.
//!
//! Closed: every call goes through. A call that times out or loses its connection opens
//! the circuit, and from then on every call fails at once. Requests never carry the probe:
//! a background task ([`RedisStorage`](super::RedisStorage) spawns it when the circuit
//! opens) opens a *new* connection and asks Redis `PING` every `probe_interval`, and
//! closes the circuit as soon as Redis answers — whether or not requests arrive, and
//! however long Redis was gone. A request that is cancelled mid-flight cannot leave the
//! breaker waiting for a probe that never ends, because no request is one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub(super) struct Breaker {
    pub(super) probe_interval: Duration,
    state: Mutex<State>,
    pub(super) opened: AtomicU64,
    pub(super) short_circuited: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    /// Open; `prober` says whether a probe task is running for it.
    Open {
        prober: bool,
    },
}

/// Whether a call may go to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Circuit closed.
    Go,
    /// Circuit open: fail now.
    Reject,
}

impl Breaker {
    pub(super) fn new(probe_interval: Duration) -> Self {
        Self {
            probe_interval,
            state: Mutex::new(State::Closed),
            opened: AtomicU64::new(0),
            short_circuited: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn is_open(&self) -> bool {
        matches!(*self.state(), State::Open { .. })
    }

    pub(super) fn admit(&self) -> Admission {
        match *self.state() {
            State::Closed => Admission::Go,
            State::Open { .. } => {
                self.short_circuited.fetch_add(1, Ordering::Relaxed);
                Admission::Reject
            }
        }
    }

    /// Redis answered a call (or a probe).
    pub(super) fn succeeded(&self) {
        let mut state = self.state();
        if matches!(*state, State::Open { .. }) {
            tracing::info!("redis is answering again; circuit closed");
            *state = State::Closed;
        }
    }

    /// A call did not get an answer in time, or its connection failed: the circuit is
    /// open.
    pub(super) fn failed(&self, error: &dyn std::fmt::Display) {
        let mut state = self.state();
        if *state == State::Closed {
            *state = State::Open { prober: false };
            self.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                %error,
                probe_interval_ms = self.probe_interval.as_millis() as u64,
                "redis unreachable; circuit open, calls fail fast until a probe succeeds"
            );
        }
    }

    /// Whether the caller should start a probe task: the circuit is open and none runs.
    /// Marks one as running; the task calls [`prober_ended`](Self::prober_ended) when it
    /// stops for any reason (success, the storage dropped, its runtime shut down).
    pub(super) fn claim_prober(&self) -> bool {
        let mut state = self.state();
        match *state {
            State::Open { prober: false } => {
                *state = State::Open { prober: true };
                true
            }
            _ => false,
        }
    }

    pub(super) fn prober_ended(&self) {
        let mut state = self.state();
        if *state == (State::Open { prober: true }) {
            *state = State::Open { prober: false };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_failure_rejects_and_closes_on_success() {
        let breaker = Breaker::new(Duration::ZERO);
        assert_eq!(breaker.admit(), Admission::Go);
        breaker.failed(&"down");
        assert!(breaker.is_open());
        assert_eq!(breaker.admit(), Admission::Reject);
        breaker.failed(&"still down");
        breaker.succeeded();
        assert!(!breaker.is_open());
        assert_eq!(breaker.admit(), Admission::Go);
        assert_eq!(breaker.opened.load(Ordering::Relaxed), 1);
        assert_eq!(breaker.short_circuited.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn one_prober_at_a_time_and_a_new_one_after_it_ends() {
        let breaker = Breaker::new(Duration::ZERO);
        assert!(!breaker.claim_prober(), "closed: nothing to probe");
        breaker.failed(&"down");
        assert!(breaker.claim_prober());
        assert!(!breaker.claim_prober(), "one is running");
        // Its runtime went away: the next caller must be able to start another.
        breaker.prober_ended();
        assert!(breaker.claim_prober());
        breaker.succeeded();
        breaker.prober_ended();
        assert!(!breaker.is_open());
    }
}
