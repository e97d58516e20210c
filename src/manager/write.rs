//! The conditional write every change of a live session goes through: the next
//! generation, written only over the generation that was read, then mirrored to the
//! secondary tier, where a revoke that got there first wins.
//!
//! Refresh (`resolve.rs`), admin field updates (`fields.rs`) and a request's own changes
//! (`SessionHandle::update_fields`, `rotate`, `reauthenticate`) all write through here, so
//! "a write can never bring back a revoked session" is kept in one place.

use std::future::Future;

use chrono::{DateTime, Utc};

use super::{ManagerInner, Mirrored};
use crate::error::{SessionError, StoreError};
use crate::session::Session;
use crate::token::TokenHash;

/// How often a conditional write is retried when another writer (a refresh, an admin
/// change) wrote the session between our read and our write.
const WRITE_ATTEMPTS: usize = 3;

/// What one conditional write did.
#[derive(Debug)]
pub(crate) enum Written {
    /// In the store and (where there is one) the secondary tier: the session as written.
    Live(Session),
    /// Written to the store, then the secondary tier said a revoke got there first.
    Revoked,
    /// Someone else wrote (or deleted) the session since it was read: nothing written.
    Lost,
}

impl ManagerInner {
    /// Writes `read` changed by `change` as its next generation, under `hash` (moved to
    /// `new_hash` when given), if the store still holds the generation that was read; then
    /// mirrors it, conditionally, to the secondary tier.
    pub(crate) async fn write_next_generation(
        &self,
        hash: &TokenHash,
        read: &Session,
        new_hash: Option<&TokenHash>,
        change: impl FnOnce(&mut Session),
    ) -> Result<Written, StoreError> {
        let mut updated = read.clone();
        change(&mut updated);
        updated.generation = read.generation + 1;
        if !self
            .store
            .update(hash, read.generation, &updated, new_hash)
            .await?
        {
            return Ok(Written::Lost);
        }
        // Store first, then the secondary tier (conditional: a revoke that got there
        // first wins).
        let target = new_hash.unwrap_or(hash);
        let replaces = new_hash.map(|_| hash);
        if self.mirror(target, &updated, replaces).await == Mirrored::Revoked {
            return Ok(Written::Revoked);
        }
        Ok(Written::Live(updated))
    }

    /// [`write_next_generation`](Self::write_next_generation) over a fresh `read` of the
    /// session (its token hash and the session, `None` when it is gone), retried while
    /// another writer wins. `Ok(None)`: the session is gone or was revoked meanwhile;
    /// [`SessionError::Conflict`] when every attempt lost.
    pub(crate) async fn rewrite<R, Fut>(
        &self,
        mut read: R,
        new_hash: Option<&TokenHash>,
        change: impl Fn(&mut Session, DateTime<Utc>),
    ) -> Result<Option<Session>, SessionError>
    where
        R: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<(TokenHash, Session)>, SessionError>>,
    {
        for _ in 0..WRITE_ATTEMPTS {
            let Some((hash, stored)) = read().await? else {
                return Ok(None);
            };
            let now = self.clock.now();
            match self
                .write_next_generation(&hash, &stored, new_hash, |session| change(session, now))
                .await?
            {
                Written::Live(updated) => return Ok(Some(updated)),
                Written::Revoked => return Ok(None),
                Written::Lost => continue,
            }
        }
        Err(SessionError::Conflict)
    }
}
