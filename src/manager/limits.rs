//! The per-user session cap: how many devices one user may keep signed in at once.

use super::ManagerInner;
use super::revoke::RevokeTarget;
use crate::error::{SessionError, chain};
use crate::events::RevokeReason;
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
    ) -> Result<(), SessionError> {
        let Some(max) = self.config.max_sessions_per_user else {
            return Ok(());
        };
        if let Err(error) = self.revoke_oldest(new, max).await {
            tracing::error!(error = %chain(&error), user_id = ?new.user_id, "could not enforce the per-user session limit; taking the new session back");
            self.take_back(new_hash, new).await;
            return Err(error);
        }
        Ok(())
    }

    async fn revoke_oldest(&self, new: &Session, max: usize) -> Result<(), SessionError> {
        let live = self
            .store
            .list_by_user(&new.user_id, self.clock.now())
            .await?;
        let excess = live.len().saturating_sub(max);
        // `list_by_user` is oldest first; the new session is never the one to go.
        let doomed: Vec<String> = live
            .into_iter()
            .filter(|s| s.id != new.id)
            .take(excess)
            .map(|s| s.id)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        let target = RevokeTarget::Sessions {
            user_id: &new.user_id,
            ids: &doomed,
        };
        self.revoke(target, RevokeReason::SessionLimit)
            .await?
            .complete
    }
}
