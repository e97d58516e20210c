//! Revocations the server still owes: a sign-out, or a sign-in replacing a session, whose
//! revoke could not be made when it was asked for (Redis or the store unreachable).
//!
//! The browser that asked is signed out at once (its cookies are cleared) and the answer
//! says the server side is pending; nothing was changed in any tier (the revoke path
//! fails before it changes anything), so no tier serves a half-revoked session. A task on
//! the manager's runtime retries each revoke until it goes through, so the token is
//! refused once the tiers answer again without anyone retrying. The queue lives in this
//! process: a crash before the retry succeeds forgets it (the session then lives until it
//! expires or is revoked again).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::ManagerInner;
use super::revoke::RevokeTarget;
use crate::error::chain;
use crate::events::RevokeReason;
use crate::token::TokenHash;

/// How often the owed revocations are retried.
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// Most revocations owed at once; past it a sign-out fails instead (a store down for
/// long enough to fill this is an outage the operator must see).
const MAX_PENDING: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct PendingRevocations {
    state: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    owed: Vec<Owed>,
    retrying: bool,
}

#[derive(Debug, Clone)]
struct Owed {
    hash: TokenHash,
    session_id: Option<String>,
    reason: RevokeReason,
}

impl PendingRevocations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many revocations are owed (for tests and health checks).
    pub(crate) fn len(&self) -> usize {
        self.lock().owed.len()
    }
}

/// Owes the revoke of the session under `hash`: retried in the background until it goes
/// through. `false` when it cannot be owed (the queue is full, or there is no runtime to
/// retry on): the caller must report the failure instead.
pub(crate) fn revoke_later(
    manager: &Arc<ManagerInner>,
    hash: TokenHash,
    session_id: Option<String>,
    reason: RevokeReason,
) -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    let start = {
        let mut queue = manager.pending.lock();
        if queue.owed.len() >= MAX_PENDING {
            return false;
        }
        queue.owed.push(Owed {
            hash,
            session_id,
            reason,
        });
        !std::mem::replace(&mut queue.retrying, true)
    };
    if start {
        runtime.spawn(retry(Arc::downgrade(manager)));
    }
    true
}

async fn retry(manager: Weak<ManagerInner>) {
    // Clears `retrying` however the task ends, so a later owed revoke starts a new one.
    struct Ended(Weak<ManagerInner>);
    impl Drop for Ended {
        fn drop(&mut self) {
            if let Some(manager) = self.0.upgrade() {
                manager.pending.lock().retrying = false;
            }
        }
    }
    let _ended = Ended(manager.clone());
    loop {
        tokio::time::sleep(RETRY_EVERY).await;
        let Some(manager) = manager.upgrade() else {
            return;
        };
        let owed = manager.pending.lock().owed.clone();
        let mut done = Vec::new();
        for (index, item) in owed.iter().enumerate() {
            let target = RevokeTarget::Token {
                hash: &item.hash,
                session_id: item.session_id.as_deref(),
            };
            match manager.revoke(target, item.reason).await {
                Ok(revoked) => {
                    if let Err(error) = revoked.complete {
                        // The rows are gone; the cache tier republishes by itself.
                        tracing::warn!(error = %chain(&error), "owed revocation done, confirmation pending");
                    }
                    done.push(index);
                }
                Err(error) => {
                    tracing::debug!(error = %chain(&error), "owed revocation still cannot be made");
                    // The tiers are still down: the rest would fail the same way.
                    break;
                }
            }
        }
        let mut queue = manager.pending.lock();
        // Only this task removes entries, and new ones are appended: indexes still hold.
        for index in done.into_iter().rev() {
            queue.owed.remove(index);
        }
        if queue.owed.is_empty() {
            tracing::info!("every owed revocation is done");
            return;
        }
    }
}
