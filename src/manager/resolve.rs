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

use super::tiers::{Lookup, Mirrored};
use super::{ManagerInner, RefreshCheck, RevokeTarget, Written};
use crate::client::ClientFacts;
use crate::error::chain;
use crate::events::{RevokeReason, SessionEvent};
use crate::rejection::{Refusal, RejectionReason};
use crate::session::Session;
use crate::token::TokenHash;

/// The outcome of resolving a token against the stores.
#[derive(Debug, Clone)]
pub(crate) enum Resolved {
    /// Live. `refreshed` when this request moved its expiry (the cookie must be re-set).
    Valid {
        session: LiveSession,
        refreshed: bool,
    },
    /// Definitively not valid: clear cookies.
    Gone(RejectionReason),
    /// A store needed to decide could not be reached; nothing is cleared.
    Unavailable,
}

impl ManagerInner {
    /// What [`resolve`](Self::resolve) would answer, when that is known without I/O or a
    /// write: the store holds its sessions in this process, there is no secondary tier
    /// (whose copy would come first, and which a store read repairs), and the session is
    /// missing, or live and not due for its refresh. `None`: resolve it the long way.
    ///
    /// The memory store's hit path: no boxed future, and the session shared, not copied.
    pub(crate) fn resolve_in_process(&self, hash: &TokenHash) -> InProcess {
        if self.secondary.is_some() {
            return InProcess::Unknown;
        }
        let Some(found) = self.store.find_in_process(hash) else {
            return InProcess::Unknown;
        };
        let Some(session) = found else {
            return InProcess::Resolved(Resolved::Gone(RejectionReason::Unknown));
        };
        let now = self.clock.now();
        if session.is_expired(now) || self.config.refresh_due(&session, now) {
            return InProcess::Found(session);
        }
        InProcess::Resolved(Resolved::Valid {
            session: LiveSession::Shared(session),
            refreshed: false,
        })
    }

    /// Looks the session up by token hash, deletes it lazily if expired, and slides it if
    /// it is due for a refresh.
    ///
    /// `found`: what [`resolve_in_process`](Self::resolve_in_process) already read (it is
    /// not read again). `read_only`: write nothing (no lazy deletion, no read-repair, no
    /// refresh), for `defer_refresh` on a safe method or `NoRefresh`.
    pub(crate) async fn resolve(
        &self,
        hash: TokenHash,
        client: &ClientFacts,
        found: Option<Arc<Session>>,
        read_only: bool,
    ) -> Resolved {
        let lookup = match found {
            Some(session) => Lookup::Found {
                session: Arc::unwrap_or_clone(session),
                cached: false,
            },
            None => self.lookup(&hash).await,
        };
        let (session, cached) = match lookup {
            Lookup::Found { session, cached } => (session, cached),
            Lookup::Missing => return Resolved::Gone(RejectionReason::Unknown),
            Lookup::Unavailable => return Resolved::Unavailable,
        };
        let now = self.clock.now();
        if session.is_expired(now) {
            if read_only {
                return Resolved::Gone(RejectionReason::Expired);
            }
            if let Err(error) = self.drop_expired(&hash).await {
                tracing::warn!(error = %chain(&error), "could not delete an expired session");
            }
            return Resolved::Gone(RejectionReason::Expired);
        }
        if read_only || !self.config.refresh_due(&session, now) {
            // Read-repair: conditional, so it can reveal a revocation but never undo one.
            if !read_only
                && !cached
                && self.mirror(&hash, &session, None).await == Mirrored::Revoked
            {
                return Resolved::Gone(RejectionReason::Unknown);
            }
            return Resolved::Valid {
                session: LiveSession::Owned(session),
                refreshed: false,
            };
        }
        self.refresh(hash, session, now, client).await
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
                match self.before_refresh(&session, client).await {
                    RefreshCheck::Go => {}
                    RefreshCheck::Refused(refusal) => return RefreshOutcome::Refused(refusal),
                    RefreshCheck::Banned => return self.revoke_banned(&session).await,
                    RefreshCheck::Unknown => return RefreshOutcome::Failed,
                }
                let info = self.tracking.client_info(client);
                let slide = |updated: &mut Session| {
                    updated.expires_at = self.config.slid_expiry(&session, now).max(session.expires_at);
                    updated.updated_at = now;
                    updated.last_seen_at = now;
                    if !self.tracking.disabled {
                        updated.ip_address = info.ip_address;
                        updated.user_agent = info.user_agent;
                    }
                };
                match self.write_next_generation(&hash, &session, None, slide).await {
                    Ok(Written::Live(updated)) => {
                        self.events.emit(|| SessionEvent::Refreshed {
                            session: updated.clone(),
                        });
                        RefreshOutcome::Refreshed(updated)
                    }
                    Ok(Written::Revoked) => RefreshOutcome::Revoked,
                    Ok(Written::Lost) => RefreshOutcome::Lost,
                    Err(error) => {
                        tracing::warn!(error = %chain(&error), "session refresh write failed; serving the session unrefreshed");
                        RefreshOutcome::Failed
                    }
                }
            })
            .await
            .clone();
        match outcome {
            RefreshOutcome::Refreshed(session) => Resolved::Valid {
                session: LiveSession::Owned(session),
                refreshed: true,
            },
            // A store hiccup is not a sign-out: the session we read is still live.
            RefreshOutcome::Failed => Resolved::Valid {
                session: LiveSession::Owned(session),
                refreshed: false,
            },
            RefreshOutcome::Revoked => Resolved::Gone(RejectionReason::Unknown),
            RefreshOutcome::Refused(refusal) => Resolved::Gone(RejectionReason::Refused(refusal)),
            // Someone else changed or deleted it since we read it (or the copy we read
            // from the secondary tier was behind the store): read the store again.
            RefreshOutcome::Lost => match self.store.find(&hash).await {
                Ok(Some(current)) if !current.is_expired(now) => {
                    if self.mirror(&hash, &current, None).await == Mirrored::Revoked {
                        return Resolved::Gone(RejectionReason::Unknown);
                    }
                    Resolved::Valid {
                        session: LiveSession::Owned(current),
                        refreshed: false,
                    }
                }
                Ok(Some(_)) => Resolved::Gone(RejectionReason::Expired),
                Ok(None) => Resolved::Gone(RejectionReason::Unknown),
                Err(error) => {
                    tracing::error!(error = %chain(&error), "session store lookup failed");
                    Resolved::Unavailable
                }
            },
        }
    }
}

impl ManagerInner {
    /// A banned user's refresh: every session of theirs is revoked instead (a ban set
    /// in the user table, not through `ban_user`, ends their sessions here).
    async fn revoke_banned(&self, session: &Session) -> RefreshOutcome {
        tracing::info!(session_id = %session.id, user_id = ?session.user_id, "refresh of a banned user: revoking their sessions");
        let target = RevokeTarget::User {
            user_id: &session.user_id,
            except: None,
        };
        match self.revoke(target, RevokeReason::Banned).await {
            Ok(_) => RefreshOutcome::Revoked,
            Err(error) => {
                // Not served either way: the user is banned.
                tracing::error!(error = %chain(&error), "could not revoke a banned user's sessions");
                RefreshOutcome::Refused(Refusal::USER_BANNED)
            }
        }
    }
}

/// A live session as the tiers hand it over: shared with an in-process store, or owned
/// (read through I/O, or refreshed), so neither path pays for a copy or an `Arc` it does
/// not need.
#[derive(Debug, Clone)]
pub(crate) enum LiveSession {
    Shared(Arc<Session>),
    Owned(Session),
}

impl std::ops::Deref for LiveSession {
    type Target = Session;

    fn deref(&self) -> &Session {
        match self {
            Self::Shared(session) => session,
            Self::Owned(session) => session,
        }
    }
}

/// What an in-process store tells without I/O.
pub(crate) enum InProcess {
    /// The request is resolved.
    Resolved(Resolved),
    /// Found, but expired or due for its refresh: `resolve` takes it from here.
    Found(Arc<Session>),
    /// Not an in-process store, or a secondary tier comes first: ask the tiers.
    Unknown,
}

#[derive(Debug, Clone)]
enum RefreshOutcome {
    Refreshed(Session),
    /// Written to the store, then the secondary tier said a revoke got there first.
    Revoked,
    Lost,
    Failed,
    /// The refresh hook refused: nothing written.
    Refused(Refusal),
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
    map: HashMap<(TokenHash, u64), GateEntry>,
    /// The size at which the next sweep runs: twice what the last sweep kept (at least
    /// [`GATE_SWEEP_AT`]), so each sweep is paid for by the insertions since the last one
    /// instead of every refresh scanning the whole map while it is large.
    sweep_at: usize,
    /// How many sweeps ran (for tests).
    sweeps: usize,
}

/// How long a finished refresh stays in the gate, so a request that read the old
/// generation just before the write landed still finds the shared result.
const GATE_RETENTION: std::time::Duration = std::time::Duration::from_secs(30);
/// Past this many entries, the ones older than the retention are swept.
const GATE_SWEEP_AT: usize = 1024;

impl RefreshGate {
    fn cell(&self, hash: TokenHash, generation: u64) -> Arc<OnceCell<RefreshOutcome>> {
        self.cell_at(hash, generation, Instant::now())
    }

    fn cell_at(
        &self,
        hash: TokenHash,
        generation: u64,
        now: Instant,
    ) -> Arc<OnceCell<RefreshOutcome>> {
        let mut gate = self.cells.lock().unwrap_or_else(|e| e.into_inner());
        let GateCells {
            map: cells,
            sweep_at,
            sweeps,
        } = &mut *gate;
        if cells.len() >= (*sweep_at).max(GATE_SWEEP_AT) {
            // Age alone decides. A refresh whose requests were all cancelled never
            // finishes, and must not stay forever; dropping one that is still running
            // only lets a later request start its own, which the conditional write makes
            // harmless (requests already waiting hold their `Arc`).
            cells.retain(|_, (at, _)| now.saturating_duration_since(*at) < GATE_RETENTION);
            *sweeps += 1;
            *sweep_at = cells.len().saturating_mul(2);
        }
        cells
            .entry((hash, generation))
            .or_insert_with(|| (now, Arc::new(OnceCell::new())))
            .1
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u64) -> TokenHash {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        TokenHash(bytes)
    }

    fn len(gate: &RefreshGate) -> usize {
        gate.cells.lock().unwrap().map.len()
    }

    #[test]
    fn refreshes_that_never_finished_are_swept_too() {
        // A refresh whose requests were all cancelled (client gone, timeout) leaves a cell
        // that is never initialised; if that generation is never read again (the session
        // was refreshed by another instance, revoked, or its user left) nothing else
        // removes it.
        let gate = RefreshGate::default();
        let start = Instant::now();
        for n in 0..2 * GATE_SWEEP_AT as u64 {
            let _abandoned = gate.cell_at(hash(n), 0, start);
        }
        let later = start + GATE_RETENTION + std::time::Duration::from_secs(1);
        let _ = gate.cell_at(hash(u64::MAX), 0, later);
        assert_eq!(len(&gate), 1, "only the new entry is left");
    }

    #[test]
    fn a_busy_gate_is_not_swept_on_every_refresh() {
        // 20k refreshes inside the retention window (e.g. `update_age(0)` at a few hundred
        // requests a second): every entry is young, so a sweep removes nothing. Sweeping on
        // every call past 1024 entries made each refresh scan the whole map under the
        // process-wide lock (measured: 35 µs per request at 2k entries, 340 µs at 16k).
        let gate = RefreshGate::default();
        let now = Instant::now();
        for n in 0..20_000 {
            let _ = gate.cell_at(hash(n), 0, now);
        }
        let sweeps = gate.cells.lock().unwrap().sweeps;
        assert!(sweeps <= 10, "{sweeps} sweeps for 20000 insertions");
    }
}
