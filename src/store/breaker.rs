//! A circuit breaker, so that an unreachable Redis or PostgreSQL costs one bounded timeout
//! per probe interval instead of one per request.
//!
//! Closed: every call goes through. A call that times out or loses its connection opens
//! the circuit: for `probe_interval` every call fails at once. After that one call (the
//! probe) is let through while the others keep failing fast; if it succeeds the circuit
//! closes, otherwise it stays open for another interval. Probes ride on real calls, so an
//! idle process does not poll Redis, and a busy one sees Redis again at most one interval
//! after it answers.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct Breaker {
    /// What is behind the breaker, for log lines ("redis", "postgres").
    name: &'static str,
    probe_interval: Duration,
    state: Mutex<State>,
    pub(crate) opened: AtomicU64,
    pub(crate) short_circuited: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { retry_at: Instant, probing: bool },
}

/// Whether a call may go to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Circuit closed.
    Go,
    /// Circuit open, and this call is the probe.
    Probe,
    /// Circuit open: fail now.
    Reject,
}

impl Breaker {
    pub(crate) fn new(name: &'static str, probe_interval: Duration) -> Self {
        Self {
            name,
            probe_interval,
            state: Mutex::new(State::Closed),
            opened: AtomicU64::new(0),
            short_circuited: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(*self.state(), State::Open { .. })
    }

    pub(crate) fn admit(&self) -> Admission {
        let mut state = self.state();
        match *state {
            State::Closed => Admission::Go,
            State::Open { retry_at, probing } if !probing && Instant::now() >= retry_at => {
                *state = State::Open {
                    retry_at,
                    probing: true,
                };
                Admission::Probe
            }
            State::Open { .. } => {
                self.short_circuited.fetch_add(1, Ordering::Relaxed);
                Admission::Reject
            }
        }
    }

    /// The backend answered.
    pub(crate) fn succeeded(&self, admission: Admission) {
        let mut state = self.state();
        if admission == Admission::Probe || matches!(*state, State::Open { .. }) {
            if matches!(*state, State::Open { .. }) {
                tracing::info!(store = self.name, "answering again; circuit closed");
            }
            *state = State::Closed;
        }
    }

    /// The backend did not answer in time, or the connection failed.
    pub(crate) fn failed(&self, admission: Admission, error: &dyn std::fmt::Display) {
        let mut state = self.state();
        let was_closed = matches!(*state, State::Closed);
        let retry_at = Instant::now() + self.probe_interval;
        // A call admitted before the circuit opened, failing late: keep the schedule.
        if !was_closed && admission == Admission::Go {
            return;
        }
        *state = State::Open {
            retry_at,
            probing: false,
        };
        if was_closed {
            self.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                store = self.name,
                %error,
                probe_interval_ms = self.probe_interval.as_millis() as u64,
                "unreachable; circuit open, calls fail fast until a probe succeeds"
            );
        } else {
            tracing::debug!(store = self.name, %error, "probe failed; circuit stays open");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_failure_lets_one_probe_through_and_closes_on_success() {
        let breaker = Breaker::new("test", Duration::ZERO);
        assert_eq!(breaker.admit(), Admission::Go);
        breaker.failed(Admission::Go, &"down");
        assert!(breaker.is_open());
        assert_eq!(breaker.admit(), Admission::Probe);
        assert_eq!(breaker.admit(), Admission::Reject, "one probe at a time");
        breaker.failed(Admission::Probe, &"still down");
        assert_eq!(breaker.admit(), Admission::Probe);
        breaker.succeeded(Admission::Probe);
        assert!(!breaker.is_open());
        assert_eq!(breaker.admit(), Admission::Go);
        assert_eq!(breaker.opened.load(Ordering::Relaxed), 1);
        assert_eq!(breaker.short_circuited.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn rejects_until_the_interval_passes() {
        let breaker = Breaker::new("test", Duration::from_secs(3600));
        breaker.failed(Admission::Go, &"down");
        for _ in 0..10 {
            assert_eq!(breaker.admit(), Admission::Reject);
        }
        // A straggler admitted while closed does not push the probe further out.
        breaker.failed(Admission::Go, &"late");
        assert_eq!(breaker.opened.load(Ordering::Relaxed), 1);
    }
}
