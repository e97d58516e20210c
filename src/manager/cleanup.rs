//! The periodic cleanup task: deletes expired sessions that no request came back for.
//!
//! Requests delete the expired sessions they meet; sessions of users who never return
//! would otherwise stay in the database forever (Redis expires its own keys by TTL).

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::{ManagerInner, SessionManager};
use crate::error::chain;

/// What a zero interval becomes: sweeping in a busy loop would only load the database.
const ZERO_INTERVAL_FALLBACK: Duration = Duration::from_secs(1);

/// The running cleanup task of [`SessionManager::spawn_cleanup`]. Dropping it stops the
/// task; so does shutting the runtime down.
#[derive(Debug)]
#[must_use = "dropping the CleanupTask stops the cleanup"]
pub struct CleanupTask {
    /// Always `Some` until `stop` takes it (so `Drop` has nothing left to do).
    task: Option<JoinHandle<()>>,
}

impl CleanupTask {
    /// Stops the task and waits until it has stopped. A sweep in progress is abandoned
    /// between two store calls; each batch delete is atomic on its own.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // `JoinError::Cancelled` is the expected outcome of `abort`.
            let _ = task.await;
        }
    }

    /// Whether the task has ended (stopped, or every manager was dropped).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for CleanupTask {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl SessionManager {
    /// Spawns a task on the current tokio runtime that deletes expired sessions (in
    /// batches of 1000) now and then every `interval`. A zero interval means one second.
    ///
    /// The task holds the manager weakly: it ends when the returned [`CleanupTask`] is
    /// dropped or stopped, when every clone of the manager is gone, or when the runtime
    /// shuts down. A failed sweep is logged and retried at the next tick.
    ///
    /// # Panics
    /// When called outside a tokio runtime.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_auth_session::{MemoryStore, SessionManager};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_auth_session::ConfigError> {
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .build()?;
    /// let cleanup = manager.spawn_cleanup(Duration::from_secs(3600));
    /// // ... serve requests; keep `cleanup` alive as long as the server runs ...
    /// cleanup.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn spawn_cleanup(&self, interval: Duration) -> CleanupTask {
        let interval = if interval.is_zero() {
            ZERO_INTERVAL_FALLBACK
        } else {
            interval
        };
        let manager = Arc::downgrade(&self.inner);
        CleanupTask {
            task: Some(tokio::spawn(sweep_every(manager, interval))),
        }
    }
}

async fn sweep_every(manager: Weak<ManagerInner>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    // After a slow sweep, wait a whole interval rather than sweeping back to back.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = manager.upgrade() else {
            tracing::debug!("session manager dropped; cleanup task ends");
            return;
        };
        match inner.sweep_expired().await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "deleted expired sessions"),
            Err(error) => {
                tracing::warn!(error = %chain(&error), "expired-session cleanup failed; retrying at the next tick")
            }
        }
    }
}
