//! The per-user session cap: how many devices one user may keep signed in at once.

use crate::error::{SessionError, StoreError};
use crate::events::RevokeReason;
use crate::manager::ManagerInner;
use crate::secondary::Revocation;
use crate::session::Session;
use crate::token::TokenHash;

impl ManagerInner {
    /// After `new` was created: revokes the user's oldest live sessions past the cap.
    ///
    /// Fails closed: if the cap cannot be enforced, the new session is taken back and the
    /// error returned, so a sign-in never leaves more sessions than the app allows.
    /// Concurrent sign-ins may each revoke an old session, leaving fewer than the cap,
    /// never more.
    pub(crate) async fn enforce_session_limit(
        &self,
        new_hash: &TokenHash,
        new: &Session,
    ) -> Result<(), StoreError> {
        let Some(max) = self.config.max_sessions_per_user else {
            return Ok(());
        };
        let mut revoked = Vec::new();
        let mut covered = Vec::new();
        let mut outcome = self
            .revoke_oldest(new, max, &mut revoked, &mut covered)
            .await;
        let secondary = self
            .revoked_after(revoked, RevokeReason::SessionLimit, &covered)
            .await;
        if let (Ok(()), Err(error)) = (&outcome, secondary) {
            outcome = Err(match error {
                SessionError::Store(error) => error,
                other => StoreError::new(other.to_string()),
            });
        }
        if let Err(error) = outcome {
            tracing::error!(%error, user_id = ?new.user_id, "could not enforce the per-user session limit; taking the new session back");
            if let Err(error) = self.store.delete(new_hash).await {
                tracing::warn!(%error, session_id = %new.id, "could not take back a new session (it has no cookie and will expire)");
            }
            return Err(error);
        }
        Ok(())
    }

    async fn revoke_oldest(
        &self,
        new: &Session,
        max: usize,
        revoked: &mut Vec<crate::store::StoredSession>,
        covered: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let live = self
            .store
            .list_by_user(&new.user_id, self.clock.now())
            .await?;
        let excess = live.len().saturating_sub(max);
        // `list_by_user` is oldest first; the new session is never the one to go.
        let doomed: Vec<&Session> = live
            .iter()
            .filter(|s| s.id != new.id)
            .take(excess)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        // The secondary tier first (see the `secondary` module docs for the order).
        let revocations: Vec<Revocation<'_>> = doomed
            .iter()
            .map(|old| Revocation::Session {
                id: &old.id,
                user_id: Some(&new.user_id),
                token_hash: None,
                verified: true,
            })
            .collect();
        *covered = match self.revoke_in_secondary_first(&revocations).await {
            Ok(covered) => covered,
            Err(SessionError::Store(error)) => return Err(error),
            Err(other) => return Err(StoreError::new(other.to_string())),
        };
        for old in doomed {
            if let Some(stored) = self.store.delete_by_id(&old.id, Some(&new.user_id)).await? {
                revoked.push(stored);
            }
        }
        Ok(())
    }
}
