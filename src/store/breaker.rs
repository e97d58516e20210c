//! A circuit breaker, so that an unreachable Redis or PostgreSQL costs one bounded timeout,
//! not one per request.
//!
//! Closed: every call goes through. A call that times out or finds the backend
//! unreachable opens the circuit, and from then on every call fails at once. Requests
//! never carry the probe: the owner starts a background task
//! ([`spawn_prober`](Breaker::spawn_prober)) that asks the backend on its own every
//! `probe_interval` and closes the circuit as soon as it answers — whether or not requests
//! arrive, however long the backend was gone. A request cancelled mid-flight cannot leave
//! the breaker waiting for a probe that never ends, because no request is one.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

#[derive(Debug)]
pub(crate) struct Breaker {
    /// What is behind the breaker, for log lines ("redis", "postgres").
    name: &'static str,
    pub(crate) probe_interval: Duration,
    state: Mutex<State>,
    pub(crate) opened: AtomicU64,
    pub(crate) short_circuited: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    /// Open; `prober` says whether a probe task is running for it.
    Open {
        prober: bool,
    },
}

/// Whether a call may go to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Circuit closed.
    Go,
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
        match *self.state() {
            State::Closed => Admission::Go,
            State::Open { .. } => {
                self.short_circuited.fetch_add(1, Ordering::Relaxed);
                Admission::Reject
            }
        }
    }

    /// The backend answered a call (or a probe).
    pub(crate) fn succeeded(&self) {
        let mut state = self.state();
        if matches!(*state, State::Open { .. }) {
            tracing::info!(store = self.name, "answering again; circuit closed");
            *state = State::Closed;
        }
    }

    /// A call got no answer in time, or found the backend unreachable: the circuit is open.
    pub(crate) fn failed(&self, error: &dyn std::fmt::Display) {
        let mut state = self.state();
        if *state == State::Closed {
            *state = State::Open { prober: false };
            self.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                store = self.name,
                %error,
                probe_interval_ms = self.probe_interval.as_millis() as u64,
                "unreachable; circuit open, calls fail fast until a probe succeeds"
            );
        }
    }

    /// Whether a probe task should start: the circuit is open and none runs. Marks one as
    /// running until [`prober_ended`](Self::prober_ended).
    fn claim_prober(&self) -> bool {
        let mut state = self.state();
        match *state {
            State::Open { prober: false } => {
                *state = State::Open { prober: true };
                true
            }
            _ => false,
        }
    }

    fn prober_ended(&self) {
        let mut state = self.state();
        if *state == (State::Open { prober: true }) {
            *state = State::Open { prober: false };
        }
    }

    /// Starts the background probe if the circuit is open and none runs (and a Tokio
    /// runtime is there to run it): every `probe_interval`, `probe` asks the backend on
    /// its own (a new connection, bounded by the owner's timeout); `true` closes the
    /// circuit. The task ends with the breaker, on success, or with its runtime — and a
    /// later call starts a new one if the circuit is still open.
    pub(crate) fn spawn_prober<P, Fut>(self: &Arc<Self>, probe: P)
    where
        P: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.claim_prober() {
            return;
        }
        let breaker = Arc::downgrade(self);
        runtime.spawn(async move {
            // Clears the claim however the task ends, even when its runtime shuts down.
            struct Ended(Weak<Breaker>);
            impl Drop for Ended {
                fn drop(&mut self) {
                    if let Some(breaker) = self.0.upgrade() {
                        breaker.prober_ended();
                    }
                }
            }
            let _ended = Ended(breaker.clone());
            let Some(interval) = breaker.upgrade().map(|b| b.probe_interval) else {
                return;
            };
            // Probes start once per interval, counted from the start of the last one: a
            // probe that hung for its whole timeout is followed by the next at once.
            let mut next = tokio::time::Instant::now() + interval;
            loop {
                tokio::time::sleep_until(next).await;
                match breaker.upgrade() {
                    Some(b) if b.is_open() => {}
                    _ => return,
                }
                next = tokio::time::Instant::now() + interval;
                if probe().await {
                    if let Some(breaker) = breaker.upgrade() {
                        breaker.succeeded();
                    }
                    return;
                }
                if let Some(breaker) = breaker.upgrade() {
                    tracing::debug!(store = breaker.name, "probe failed; circuit stays open");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_on_failure_rejects_and_closes_on_success() {
        let breaker = Breaker::new("test", Duration::ZERO);
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
        let breaker = Breaker::new("test", Duration::ZERO);
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

    #[tokio::test(start_paused = true)]
    async fn the_probe_closes_the_circuit_without_any_request() {
        let breaker = Arc::new(Breaker::new("test", Duration::from_secs(1)));
        breaker.failed(&"down");
        let answers = Arc::new(AtomicU64::new(0));
        let counter = answers.clone();
        breaker.spawn_prober(move || {
            let counter = counter.clone();
            // Down for two probes, then back.
            async move { counter.fetch_add(1, Ordering::SeqCst) >= 2 }
        });
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(!breaker.is_open());
        assert_eq!(answers.load(Ordering::SeqCst), 3);
    }
}
