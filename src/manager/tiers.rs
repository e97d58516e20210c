//! How the manager uses its secondary tier: read it before the store, copy store reads
//! into it (conditionally), write through after the store commits, and revoke in the
//! order described in the [`secondary` module docs](crate::secondary#revocation-order).
//!
//! Everything here is a no-op without a secondary tier, and a secondary that cannot be
//! reached never signs anyone out: reads fall back to the store and copies are skipped.
//! Only revocations fail when it is unreachable, because they must not report success
//! while the secondary may still serve the session.

use chrono::{DateTime, Duration, Utc};

use super::ManagerInner;
use crate::error::{SessionError, StoreError, chain};
use crate::secondary::{PutOutcome, Revocation};
use crate::session::Session;
use crate::store::StoredSession;
use crate::token::TokenHash;

/// Where a session was found.
pub(crate) enum Lookup {
    /// Found; `cached` when the secondary tier answered (no backfill needed).
    Found { session: Session, cached: bool },
    /// No tier knows the token.
    Missing,
    /// The store could not be reached (and the secondary did not have it).
    Unavailable,
}

/// Whether a session copied into the secondary tier may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mirrored {
    /// Copied, skipped (no secondary tier, a newer copy, expired) or not reachable: the
    /// store's answer stands.
    Live,
    /// The secondary holds a tombstone: a revoke got there first; do not serve it.
    Revoked,
}

/// Slack added to tombstone lifetimes for clocks that disagree between instances (more
/// generous than the cookie cache's skew allowance: a tombstone costs only memory).
const TOMBSTONE_SLACK: Duration = Duration::minutes(1);

impl ManagerInner {
    /// Reads the secondary tier, then the store.
    pub(crate) async fn lookup(&self, hash: &TokenHash) -> Lookup {
        if let Some(secondary) = &self.secondary {
            match secondary.get(hash).await {
                Ok(Some(session)) => {
                    return Lookup::Found {
                        session,
                        cached: true,
                    };
                }
                Ok(None) => {}
                // The circuit breaker logs the outage once; per request this is noise.
                Err(error) => {
                    tracing::debug!(error = %chain(&error), "secondary storage read failed; reading the store");
                }
            }
        }
        match self.store.find(hash).await {
            Ok(Some(session)) => Lookup::Found {
                session,
                cached: false,
            },
            Ok(None) => Lookup::Missing,
            Err(error) => {
                tracing::error!(error = %chain(&error), "session store lookup failed");
                Lookup::Unavailable
            }
        }
    }

    /// Copies a session the store holds into the secondary tier (backfill after a store
    /// read, write-through after sign-in or refresh). [`Mirrored::Revoked`] when the
    /// secondary says the session was revoked meanwhile: the caller must not serve it.
    pub(crate) async fn mirror(
        &self,
        hash: &TokenHash,
        session: &Session,
        replaces: Option<&TokenHash>,
    ) -> Mirrored {
        let Some(secondary) = &self.secondary else {
            return Mirrored::Live;
        };
        match secondary
            .put(hash, session, replaces, self.clock.now())
            .await
        {
            Ok(PutOutcome::Revoked) => {
                tracing::debug!(session_id = %session.id, "not copied: revoked meanwhile");
                Mirrored::Revoked
            }
            Ok(_) => Mirrored::Live,
            Err(error) => {
                tracing::debug!(error = %chain(&error), "could not copy the session to secondary storage");
                Mirrored::Live
            }
        }
    }

    /// Before a token rotation touches the store: drop the copy under the old token hash,
    /// so the old token cannot be served from the secondary tier after the store moved
    /// the session. Fails (and the rotation with it) when the secondary is unreachable.
    pub(crate) async fn forget_in_secondary_first(
        &self,
        hash: &TokenHash,
    ) -> Result<(), SessionError> {
        let Some(secondary) = &self.secondary else {
            return Ok(());
        };
        secondary.forget(hash).await.map_err(|error| {
            SessionError::Store(StoreError::with_source(
                "secondary storage unreachable; the token was not rotated, retry later",
                error,
            ))
        })
    }

    /// How long a tombstone must last so that no copy of a session revoked now can be
    /// written back: past the longest lifetime a session could have been given.
    fn revocation_horizon(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + self
            .config
            .expires_in
            .max(self.config.dont_remember_expires_in)
            + TOMBSTONE_SLACK
    }

    /// Step 1 of a revocation: delete and tombstone in the secondary tier before the
    /// store is touched. Fails, changing nothing in the store, when the secondary cannot
    /// be reached. Returns the ids now tombstoned.
    pub(crate) async fn revoke_in_secondary_first(
        &self,
        revocations: &[Revocation<'_>],
    ) -> Result<Vec<String>, SessionError> {
        let Some(secondary) = &self.secondary else {
            return Ok(Vec::new());
        };
        let now = self.clock.now();
        secondary
            .revoke(revocations, self.revocation_horizon(now), now)
            .await
            .map_err(|error| {
                tracing::error!(error = %chain(&error), "revocation refused: secondary storage unreachable, nothing was revoked");
                SessionError::Store(StoreError::with_source(
                    "secondary storage unreachable; nothing was revoked, retry later",
                    error,
                ))
            })
    }

    /// Step 3: tombstone what the store deleted that step 1 did not already cover.
    pub(crate) async fn revoke_in_secondary_after(
        &self,
        removed: &[StoredSession],
        covered: &[String],
    ) -> Result<(), SessionError> {
        let Some(secondary) = &self.secondary else {
            return Ok(());
        };
        let missing: Vec<Revocation<'_>> = removed
            .iter()
            .filter(|stored| !covered.contains(&stored.session.id))
            .map(|stored| Revocation::Session {
                id: &stored.session.id,
                user_id: Some(&stored.session.user_id),
                token_hash: Some(&stored.token_hash),
                verified: true,
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let now = self.clock.now();
        secondary
            .revoke(&missing, self.revocation_horizon(now), now)
            .await
            .map(|_| ())
            .map_err(|error| {
                tracing::error!(error = %chain(&error), sessions = missing.len(), "revoked in the store, but secondary storage is unreachable; retry the revocation");
                SessionError::Store(StoreError::with_source(
                    "revoked in the store, but secondary storage is unreachable; retry to make it final",
                    error,
                ))
            })
    }
}
