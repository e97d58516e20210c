//! The public conformance suite, run against every built-in store, and against broken
//! stores to show that it catches what it claims to.
#![cfg(feature = "conformance")]

use chrono::{DateTime, Utc};
use tower_auth_session::store::{BoxFuture, StoredSession, conformance};
use tower_auth_session::{MemoryStore, Session, SessionStore, StoreError, TokenHash};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_conformance_suite() {
    conformance::run(MemoryStore::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("sessions.db").display());
    let store = tower_auth_session::store::SqliteStore::connect(&url)
        .await
        .unwrap();
    conformance::run(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_can_run_twice_at_once_against_one_shared_store() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let (a, b) = tokio::join!(
        tokio::spawn(conformance::run(store.clone())),
        tokio::spawn(conformance::run(store.clone())),
    );
    a.unwrap();
    b.unwrap();
    assert!(store.is_empty(), "the suite leaves nothing behind");
}

/// A deliberate contract violation, for checking that the suite notices it.
#[derive(Debug, Clone, Copy)]
enum Flaw {
    /// `update` writes whatever generation is stored.
    IgnoresGeneration,
    /// `update` checks the generation, then yields, then writes unconditionally.
    RacyUpdate,
    /// `delete_expired` deletes every expired session whatever the limit.
    IgnoresDeleteLimit,
    /// `list_by_user` returns the newest session first.
    ListsNewestFirst,
    /// `create` keeps only whole seconds.
    DropsMilliseconds,
    /// `create` puts the token hash in its error message.
    LeaksTokenHash,
    /// `delete_by_id` ignores the user.
    DeletesOtherUsersSessions,
}

struct Flawed {
    inner: MemoryStore,
    flaw: Flaw,
}

impl SessionStore for Flawed {
    fn create<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut session = session.clone();
            if let Flaw::DropsMilliseconds = self.flaw {
                use chrono::SubsecRound;
                session.created_at = session.created_at.trunc_subsecs(0);
            }
            self.inner
                .create(token_hash, &session)
                .await
                .map_err(|e| match self.flaw {
                    Flaw::LeaksTokenHash => {
                        StoreError::new(format!("duplicate token hash {}", token_hash.to_hex()))
                    }
                    _ => e,
                })
        })
    }

    fn find<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        self.inner.find(token_hash)
    }

    fn update<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        expected_generation: u64,
        session: &'a Session,
        new_token_hash: Option<&'a TokenHash>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let Some(stored) = self.inner.find(token_hash).await? else {
                return Ok(false);
            };
            match self.flaw {
                Flaw::IgnoresGeneration => {
                    self.inner
                        .update(token_hash, stored.generation, session, new_token_hash)
                        .await
                }
                Flaw::RacyUpdate => {
                    let target = new_token_hash.unwrap_or(token_hash);
                    if stored.generation != expected_generation
                        || (target != token_hash && self.inner.find(target).await?.is_some())
                    {
                        return Ok(false);
                    }
                    tokio::task::yield_now().await;
                    // Last writer wins: replace whatever is there now.
                    self.inner.delete_by_id(&stored.id, None).await?;
                    let mut written = session.clone();
                    written.id = stored.id;
                    written.user_id = stored.user_id;
                    written.created_at = stored.created_at;
                    self.inner.create(target, &written).await?;
                    Ok(true)
                }
                _ => {
                    self.inner
                        .update(token_hash, expected_generation, session, new_token_hash)
                        .await
                }
            }
        })
    }

    fn delete<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        self.inner.delete(token_hash)
    }

    fn delete_by_id<'a>(
        &'a self,
        session_id: &'a str,
        user_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        match self.flaw {
            Flaw::DeletesOtherUsersSessions => self.inner.delete_by_id(session_id, None),
            _ => self.inner.delete_by_id(session_id, user_id),
        }
    }

    fn delete_by_user<'a>(
        &'a self,
        user_id: &'a str,
        keep_session_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>, StoreError>> {
        self.inner.delete_by_user(user_id, keep_session_id)
    }

    fn list_by_user<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        Box::pin(async move {
            let mut sessions = self.inner.list_by_user(user_id, now).await?;
            if let Flaw::ListsNewestFirst = self.flaw {
                sessions.reverse();
            }
            Ok(sessions)
        })
    }

    fn delete_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        match self.flaw {
            Flaw::IgnoresDeleteLimit => self.inner.delete_expired(now, u32::MAX),
            _ => self.inner.delete_expired(now, limit),
        }
    }
}

/// Runs the suite against a store with `flaw` and returns its panic message.
async fn violation(flaw: Flaw) -> String {
    let store = Flawed {
        inner: MemoryStore::new(),
        flaw,
    };
    let error = tokio::spawn(conformance::run(store))
        .await
        .expect_err("the suite passed a store that breaks a contract");
    let payload = error.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test]
async fn the_suite_catches_a_store_whose_update_ignores_the_generation() {
    let message = violation(Flaw::IgnoresGeneration).await;
    assert!(
        message
            .contains("update expecting generation 2 when the stored one is 3 must return false"),
        "{message}"
    );
}

#[tokio::test]
async fn the_suite_catches_a_store_whose_conditional_update_is_not_atomic() {
    let message = violation(Flaw::RacyUpdate).await;
    assert!(
        message.contains("concurrent updates expecting the same generation"),
        "{message}"
    );
}

#[tokio::test]
async fn the_suite_catches_a_store_that_ignores_the_delete_limit() {
    let message = violation(Flaw::IgnoresDeleteLimit).await;
    assert!(
        message.contains("delete_expired with limit 0 must delete nothing"),
        "{message}"
    );
}

#[tokio::test]
async fn the_suite_catches_a_store_that_lists_newest_first() {
    let message = violation(Flaw::ListsNewestFirst).await;
    assert!(message.contains("oldest first"), "{message}");
}

#[tokio::test]
async fn the_suite_catches_a_store_that_drops_milliseconds() {
    let message = violation(Flaw::DropsMilliseconds).await;
    assert!(
        message.contains("find must return exactly what create stored"),
        "{message}"
    );
}

#[tokio::test]
async fn the_suite_catches_a_store_that_puts_token_hashes_in_errors() {
    let message = violation(Flaw::LeaksTokenHash).await;
    assert!(
        message.contains("the error reveals a token hash"),
        "{message}"
    );
}

#[tokio::test]
async fn the_suite_catches_a_store_that_deletes_other_users_sessions_by_id() {
    let message = violation(Flaw::DeletesOtherUsersSessions).await;
    assert!(
        message.contains("delete_by_id with another user must delete nothing"),
        "{message}"
    );
}
