//! The one revocation path: every session that ends before its time, and every row the
//! crate deletes, goes through here.
//!
//! [`ManagerInner::revoke`] owns the order of the tiers (see the
//! [`secondary` module docs](crate::secondary#revocation-order) for why Redis goes first):
//! 1. the secondary tier deletes and tombstones what the target names — if it cannot be
//!    reached, nothing changes and the revoke fails;
//! 2. the store deletes the rows;
//! 3. the secondary tier tombstones what the store deleted that step 1 did not cover, the
//!    cookie caches of every instance stop believing the sessions, events go out.
//!
//! Callers (the admin API, self-service, sign-in replacing a session, sign-out, the
//! per-user cap) say *what* to revoke and *why*; none of them orders the tiers itself.
//! Expired rows (lazy deletion, the sweeper) and a sign-in taken back are deleted here
//! too, so that every store deletion is in one file.

use chrono::{DateTime, Utc};

use super::ManagerInner;
use crate::cookie_cache::CacheRevocation;
use crate::error::{SessionError, StoreError, chain};
use crate::events::{RevokeReason, SessionEvent};
use crate::secondary::Revocation;
use crate::session::Session;
use crate::store::StoredSession;
use crate::token::TokenHash;

/// Rows the sweeper deletes per store call.
const SWEEP_BATCH: u32 = 1000;

/// What to revoke.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RevokeTarget<'a> {
    /// The session stored under this token hash (sign-out, a sign-in replacing it), and
    /// its id when the request knows it: the cookie caches of that session are refused
    /// even if no tier holds the row any more (deleted out of band, a restarted memory
    /// store, an eviction), so a thief's copy of token + cache dies with the sign-out.
    Token {
        hash: &'a TokenHash,
        session_id: Option<&'a str>,
    },
    /// The session with this public id; with an `owner`, only if it is theirs (a user
    /// revoking one of their devices), without one unconditionally (the admin API).
    Session { id: &'a str, owner: Option<&'a str> },
    /// Every session of a user, but `except`.
    User {
        user_id: &'a str,
        except: Option<&'a str>,
    },
    /// These sessions of this user, known to be theirs (the oldest past the cap).
    Sessions { user_id: &'a str, ids: &'a [String] },
}

impl<'a> RevokeTarget<'a> {
    /// What step 1 asks of the secondary tier.
    fn secondary_revocations(&self) -> Vec<Revocation<'a>> {
        match *self {
            Self::Token { hash, .. } => vec![Revocation::Token(hash)],
            Self::Session { id, owner } => vec![Revocation::Session {
                id,
                user_id: owner,
                token_hash: None,
                // An owner given by a request must be checked by the tier; an admin's
                // word is enough.
                verified: owner.is_none(),
            }],
            Self::User { user_id, except } => vec![Revocation::User { user_id, except }],
            Self::Sessions { user_id, ids } => ids
                .iter()
                .map(|id| Revocation::Session {
                    id,
                    user_id: Some(user_id),
                    token_hash: None,
                    verified: true,
                })
                .collect(),
        }
    }
}

impl RevokeTarget<'_> {
    /// What the cookie caches must refuse beyond the rows the store deleted: a revoke
    /// that names a session or a user is final for their caches even when no tier had a
    /// row left to delete. A user-checked revoke by id names nothing here (its owner is
    /// unproven without the row).
    fn cache_revocation_without_row(
        &self,
        removed: &[StoredSession],
        now: DateTime<Utc>,
    ) -> Option<CacheRevocation> {
        let deleted = |id: &str| removed.iter().any(|stored| stored.session.id == id);
        match *self {
            Self::Token {
                session_id: Some(id),
                ..
            }
            | Self::Session { id, owner: None } => {
                (!deleted(id)).then(|| CacheRevocation::Session {
                    session_id: id.to_owned(),
                    below_generation: u64::MAX,
                })
            }
            Self::User {
                user_id,
                except: None,
            } => Some(CacheRevocation::User {
                user_id: user_id.to_owned(),
                created_up_to: now,
            }),
            _ => None,
        }
    }
}

/// What a revoke that reached the store did.
#[derive(Debug)]
pub(crate) struct Revoked {
    /// The sessions the store deleted (empty when the target named nothing live).
    pub(crate) sessions: Vec<Session>,
    /// Whether the revocation is final everywhere: an error means the store deleted the
    /// sessions but another tier or instance could not confirm it; retrying is safe.
    pub(crate) complete: Result<(), SessionError>,
}

impl ManagerInner {
    /// Revokes what `target` names, in every tier. `Err` means nothing was changed; `Ok`
    /// says what the store deleted and whether the rest completed.
    pub(crate) async fn revoke(
        &self,
        target: RevokeTarget<'_>,
        reason: RevokeReason,
    ) -> Result<Revoked, SessionError> {
        // The app's before-revoke hook, for revocations a user or an admin asked for.
        self.before_revoke(target, reason).await?;
        let covered = self
            .revoke_in_secondary_first(&target.secondary_revocations())
            .await?;
        let (removed, store_error) = self.delete_from_store(target).await;
        if removed.is_empty() {
            if let Some(error) = store_error {
                return Err(error.into());
            }
        }
        let mut complete = self
            .after_store_revoke(target, &removed, reason, &covered)
            .await;
        if let Some(error) = store_error {
            // Part of a multi-session target was deleted before the store failed: what was
            // deleted is revoked everywhere, and the caller hears about the rest.
            complete = Err(error.into());
        }
        Ok(Revoked {
            sessions: removed.into_iter().map(|stored| stored.session).collect(),
            complete,
        })
    }

    /// Step 2: the store. Returns what it deleted, and the error that stopped it.
    async fn delete_from_store(
        &self,
        target: RevokeTarget<'_>,
    ) -> (Vec<StoredSession>, Option<StoreError>) {
        let one = |result: Result<Option<StoredSession>, StoreError>| match result {
            Ok(found) => (found.into_iter().collect(), None),
            Err(error) => (Vec::new(), Some(error)),
        };
        match target {
            RevokeTarget::Token { hash, .. } => one(self.store.delete(hash).await.map(|found| {
                found.map(|session| StoredSession {
                    token_hash: *hash,
                    session,
                })
            })),
            RevokeTarget::Session { id, owner } => one(self.store.delete_by_id(id, owner).await),
            RevokeTarget::User { user_id, except } => {
                match self.store.delete_by_user(user_id, except).await {
                    Ok(removed) => (removed, None),
                    Err(error) => (Vec::new(), Some(error)),
                }
            }
            RevokeTarget::Sessions { user_id, ids } => {
                let mut removed = Vec::new();
                for id in ids {
                    match self.store.delete_by_id(id, Some(user_id)).await {
                        Ok(found) => removed.extend(found),
                        Err(error) => return (removed, Some(error)),
                    }
                }
                (removed, None)
            }
        }
    }

    /// Step 3: everything that must happen once sessions are gone from the source of
    /// truth. Logs, tombstones in the secondary tier what step 1 did not `covered`, makes
    /// every instance's cookie cache refuse them, and emits events.
    async fn after_store_revoke(
        &self,
        target: RevokeTarget<'_>,
        removed: &[StoredSession],
        reason: RevokeReason,
        covered: &[String],
    ) -> Result<(), SessionError> {
        for stored in removed {
            tracing::info!(session_id = %stored.session.id, user_id = ?stored.session.user_id, ?reason, "session revoked");
        }
        let secondary = self.revoke_in_secondary_after(removed, covered).await;
        // Cookie caches are revoked even if the secondary failed: the store committed.
        let caches = match &self.cookie_cache {
            Some(cache) => {
                let now = self.clock.now();
                let mut revocations =
                    CacheRevocation::for_deleted(removed.iter().map(|stored| &stored.session));
                revocations.extend(target.cache_revocation_without_row(removed, now));
                cache.revoke(revocations, now).await
            }
            None => Ok(()),
        };
        for stored in removed {
            self.events.emit(|| SessionEvent::Revoked {
                session: stored.session.clone(),
                reason,
            });
        }
        secondary?;
        Ok(caches?)
    }

    /// After a token rotation committed: copies of the session below its new generation
    /// (its caches under the old token) are no longer believed, on any instance.
    pub(crate) async fn superseded(&self, session: &Session) -> Result<(), StoreError> {
        let Some(cache) = &self.cookie_cache else {
            return Ok(());
        };
        let revocation = CacheRevocation::Session {
            session_id: session.id.clone(),
            below_generation: session.generation,
        };
        cache.revoke(vec![revocation], self.clock.now()).await
    }

    /// Makes this instance's cookie cache refuse a session at once, while its revoke is
    /// owed (see `pending`): the other tiers are not reachable to be told.
    pub(crate) fn refuse_cached_here(&self, session_id: &str) {
        if let Some(cache) = &self.cookie_cache {
            let revocation = CacheRevocation::Session {
                session_id: session_id.to_owned(),
                below_generation: u64::MAX,
            };
            cache.revocations.apply([revocation], self.clock.now());
        }
    }

    /// Deletes an expired session found on a read. Nothing to revoke elsewhere: every
    /// tier and every cookie cache checks the expiry itself.
    pub(crate) async fn drop_expired(&self, hash: &TokenHash) -> Result<(), StoreError> {
        if let Some(session) = self.store.delete(hash).await? {
            tracing::debug!(session_id = %session.id, "deleted expired session");
            self.events.emit(|| SessionEvent::Expired { session });
        }
        Ok(())
    }

    /// Deletes every expired session, in batches; returns how many.
    pub(crate) async fn sweep_expired(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        let mut total = 0;
        loop {
            let deleted = self.store.delete_expired(now, SWEEP_BATCH).await?;
            total += deleted;
            if deleted < u64::from(SWEEP_BATCH) {
                if total > 0 {
                    self.events
                        .emit(|| SessionEvent::ExpiredSwept { count: total });
                }
                return Ok(total);
            }
            // Let other tasks at the store between batches.
            tokio::task::yield_now().await;
        }
    }

    /// Takes back a session that was created but must not stand (its sign-in failed after
    /// the row was written). It has no cookie yet, so failing here only leaves a row that
    /// expires.
    pub(crate) async fn take_back(&self, hash: &TokenHash, session: &Session) {
        if let Err(error) = self.store.delete(hash).await {
            tracing::warn!(error = %chain(&error), session_id = %session.id, "could not take back a new session (it has no cookie and will expire)");
        }
    }
}
