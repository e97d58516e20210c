//! The tier walk: from a verified token hash to a live session, with lazy expiry and the
//! sliding refresh.
//!
//! The refresh is single-flight per session per process (a [`RefreshGate`]) and persisted
//! by a conditional write on the session's `generation`, so 50 concurrent requests at the
//! `update_age` boundary cause one write, and a refresh racing a revoke can never write the
//! revoked session back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::OnceCell;

use crate::client::ClientFacts;
use crate::events::SessionEvent;
use crate::manager::ManagerInner;
use crate::secondary::tiers::Lookup;
use crate::session::Session;
use crate::token::TokenHash;

/// Why a presented session is not (or no longer) valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The cookie or bearer token was malformed, oversized, duplicated or badly signed.
    Invalid,
    /// No store knows the token: revoked, signed out, or never issued.
    Unknown,
    /// The session expired.
    Expired,
}

/// The outcome of resolving a token against the stores.
#[derive(Debug, Clone)]
pub(crate) enum Resolved {
    /// Live. `refreshed` when this request moved its expiry (the cookie must be re-set).
    Valid { session: Session, refreshed: bool },
    /// Definitively not valid: clear cookies.
    Gone(Rejection),
    /// A store needed to decide could not be reached; nothing is cleared.
    Unavailable,
}

impl ManagerInner {
    /// Looks the session up by token hash, deletes it lazily if expired, and slides it if
    /// it is due for a refresh.
    pub(crate) async fn resolve(&self, hash: TokenHash, client: &ClientFacts) -> Resolved {
        let (session, cached) = match self.lookup(&hash).await {
            Lookup::Found { session, cached } => (session, cached),
            Lookup::Missing => return Resolved::Gone(Rejection::Unknown),
            Lookup::Unavailable => return Resolved::Unavailable,
        };
        let now = self.clock.now();
        if session.is_expired(now) {
            self.delete_expired_session(&hash).await;
            return Resolved::Gone(Rejection::Expired);
        }
        if !self.refresh_due(&session, now) {
            // Read-repair: conditional, so it can reveal a revocation but never undo one.
            if !cached && !self.mirror(&hash, &session, None).await {
                return Resolved::Gone(Rejection::Unknown);
            }
            return Resolved::Valid {
                session,
                refreshed: false,
            };
        }
        self.refresh(hash, session, now, client).await
    }

    async fn delete_expired_session(&self, hash: &TokenHash) {
        match self.store.delete(hash).await {
            Ok(Some(session)) => {
                tracing::debug!(session_id = %session.id, "deleted expired session");
                self.events.emit(|| SessionEvent::Expired { session });
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "could not delete an expired session"),
        }
    }

    pub(crate) fn refresh_due(&self, session: &Session, now: DateTime<Utc>) -> bool {
        !self.config.disable_refresh
            && session.remember
            && now >= session.updated_at + self.config.update_age
    }

    /// The expiry a refresh at `now` would give, capped by `max_lifetime`.
    pub(crate) fn slid_expiry(&self, session: &Session, now: DateTime<Utc>) -> DateTime<Utc> {
        let slid = now + self.config.expires_in;
        match self.config.max_lifetime {
            Some(max) => slid.min(session.created_at + max),
            None => slid,
        }
    }

    async fn refresh(
        &self,
        hash: TokenHash,
        session: Session,
        now: DateTime<Utc>,
        client: &ClientFacts,
    ) -> Resolved {
        let read_generation = session.generation;
        let cell = self.refresh_gate.cell(hash, read_generation);
        let outcome = cell
            .get_or_init(|| async {
                let mut updated = session.clone();
                updated.expires_at = self.slid_expiry(&session, now).max(session.expires_at);
                updated.updated_at = now;
                updated.last_seen_at = now;
                let info = self.tracking.client_info(client);
                if !self.tracking.disabled {
                    updated.ip_address = info.ip_address;
                    updated.user_agent = info.user_agent;
                }
                updated.generation = read_generation + 1;
                match self.store.update(&hash, read_generation, &updated, None).await {
                    Ok(true) if self.mirror(&hash, &updated, None).await => {
                        self.events.emit(|| SessionEvent::Refreshed {
                            session: updated.clone(),
                        });
                        RefreshOutcome::Refreshed(updated)
                    }
                    Ok(true) => RefreshOutcome::Revoked,
                    Ok(false) => RefreshOutcome::Lost,
                    Err(error) => {
                        tracing::warn!(%error, "session refresh write failed; serving the session unrefreshed");
                        RefreshOutcome::Failed
                    }
                }
            })
            .await
            .clone();
        match outcome {
            RefreshOutcome::Refreshed(session) => Resolved::Valid {
                session,
                refreshed: true,
            },
            // A store hiccup is not a sign-out: the session we read is still live.
            RefreshOutcome::Failed => Resolved::Valid {
                session,
                refreshed: false,
            },
            RefreshOutcome::Revoked => Resolved::Gone(Rejection::Unknown),
            // Someone else changed or deleted it since we read it (or the copy we read
            // from the secondary tier was behind the store): read the store again.
            RefreshOutcome::Lost => match self.store.find(&hash).await {
                Ok(Some(current)) if !current.is_expired(now) => {
                    if !self.mirror(&hash, &current, None).await {
                        return Resolved::Gone(Rejection::Unknown);
                    }
                    Resolved::Valid {
                        session: current,
                        refreshed: false,
                    }
                }
                Ok(Some(_)) => Resolved::Gone(Rejection::Expired),
                Ok(None) => Resolved::Gone(Rejection::Unknown),
                Err(error) => {
                    tracing::error!(%error, "session store lookup failed");
                    Resolved::Unavailable
                }
            },
        }
    }
}

#[derive(Debug, Clone)]
enum RefreshOutcome {
    Refreshed(Session),
    /// Written to the store, then the secondary tier said a revoke got there first.
    Revoked,
    Lost,
    Failed,
}

/// When an entry was made, and the shared outcome of its one refresh.
type GateEntry = (Instant, Arc<OnceCell<RefreshOutcome>>);

/// One refresh per (session, generation) per process: every request that read the same
/// generation waits for, and shares, the one write.
#[derive(Debug, Default)]
pub(crate) struct RefreshGate {
    cells: Mutex<GateCells>,
}

#[derive(Debug, Default)]
struct GateCells {
    entries: HashMap<(TokenHash, u64), GateEntry>,
    /// The size at which the next sweep runs (at least [`GATE_SWEEP_AT`]).
    sweep_at: usize,
}

/// How long a finished refresh stays in the gate, so a request that read the old
/// generation just before the write landed still finds the shared result.
const GATE_RETENTION: std::time::Duration = std::time::Duration::from_secs(30);
/// Past this many entries, finished ones older than the retention are swept.
const GATE_SWEEP_AT: usize = 1024;

impl RefreshGate {
    fn cell(&self, hash: TokenHash, generation: u64) -> Arc<OnceCell<RefreshOutcome>> {
        let mut cells = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        if cells.entries.len() >= cells.sweep_at.max(GATE_SWEEP_AT) {
            let now = Instant::now();
            cells.entries.retain(|_, (at, cell)| {
                !cell.initialized() || now.duration_since(*at) < GATE_RETENTION
            });
            // While more than GATE_SWEEP_AT entries are younger than the retention (a
            // sustained 35 refreshes/s, or update_age = 0 under load), sweeping on every
            // call would scan the whole map under this lock on every refresh. Waiting until
            // the map has doubled makes each sweep pay for the inserts since the last one.
            cells.sweep_at = cells.entries.len() * 2;
        }
        cells
            .entries
            .entry((hash, generation))
            .or_insert_with(|| (Instant::now(), Arc::new(OnceCell::new())))
            .1
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_sweeps_only_after_the_map_doubles() {
        let gate = RefreshGate::default();
        let hash = TokenHash([7; 32]);
        for generation in 0..GATE_SWEEP_AT as u64 {
            gate.cell(hash, generation);
        }
        // Every entry is younger than the retention, so the sweep keeps them all and the
        // next one waits for twice as many.
        gate.cell(hash, u64::MAX);
        let cells = gate.cells.lock().unwrap();
        assert_eq!(cells.entries.len(), GATE_SWEEP_AT + 1);
        assert_eq!(cells.sweep_at, 2 * GATE_SWEEP_AT);
    }

    #[test]
    fn requests_that_read_one_generation_share_one_cell() {
        let gate = RefreshGate::default();
        let hash = TokenHash([7; 32]);
        assert!(Arc::ptr_eq(&gate.cell(hash, 3), &gate.cell(hash, 3)));
        assert!(!Arc::ptr_eq(&gate.cell(hash, 3), &gate.cell(hash, 4)));
    }
}
