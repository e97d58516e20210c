//! The primary store: where sessions live and what is true about them.
//!
//! [`SessionStore`] is session-shaped rather than a bare key-value map, so that every
//! backend can do the operations the layer needs in one round trip: find by token hash,
//! a conditional update keyed on the session's `generation`, and per-user listing and
//! revocation. Stores only ever see [`TokenHash`]es, never raw tokens.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::session::Session;
use crate::token::TokenHash;

#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) mod breaker;
mod memory;
pub use memory::MemoryStore;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteStore;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{PostgresStore, PostgresStoreBuilder};
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;

/// A boxed, `Send` future: the return type of store methods (so stores can be trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A session together with the hash of its token, as stores return it from deletions.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    /// `SHA-256` of the session's token.
    pub token_hash: TokenHash,
    /// The session.
    pub session: Session,
}

/// A primary session store.
///
/// Implementations must make each method atomic on its own. The conditional
/// [`update`](SessionStore::update) is what keeps concurrent requests from losing updates
/// or resurrecting a revoked session: it writes only if the stored `generation` still equals
/// the one the caller read.
pub trait SessionStore: Send + Sync + 'static {
    /// Inserts a new session. The token hash and the session id are each unique: a
    /// second session with either is an error.
    fn create<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Finds a session by its token hash (expired sessions are returned too; the caller
    /// decides).
    fn find<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>>;

    /// Replaces the mutable fields of the session stored under `token_hash` (all but `id`,
    /// `user_id` and `created_at`) with those of `session` (including its new
    /// `generation`), and moves it to `new_token_hash` when given, but only if the stored
    /// generation is `expected_generation`. Returns whether the write happened; `false`
    /// means the session changed or is gone. Moving onto a token hash that another session
    /// has is an error or `false`, and changes neither session.
    fn update<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        expected_generation: u64,
        session: &'a Session,
        new_token_hash: Option<&'a TokenHash>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Deletes the session with this token hash, returning it if it existed.
    fn delete<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>>;

    /// The session with this public id and its token hash, if any (expired ones too):
    /// what an admin change by id (`SessionManager::update_fields`) needs to write it
    /// conditionally. One round trip. The default answers an error ("not supported"), so
    /// a store written before this method keeps compiling; the built-in stores and the
    /// conformance suite implement and check it.
    fn find_by_id<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        let _ = session_id;
        Box::pin(async {
            Err(StoreError::new(
                "this session store cannot look sessions up by id",
            ))
        })
    }

    /// Deletes the session with this public id, returning it if it existed. With
    /// `user_id`, only a session of that user is deleted.
    fn delete_by_id<'a>(
        &'a self,
        session_id: &'a str,
        user_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>>;

    /// Deletes all sessions of a user except the one with id `keep_session_id`, returning
    /// what was deleted.
    fn delete_by_user<'a>(
        &'a self,
        user_id: &'a str,
        keep_session_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>, StoreError>>;

    /// A user's sessions that are still live at `now`, oldest first.
    fn list_by_user<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>>;

    /// Deletes up to `limit` sessions expired at `now` (`expires_at <= now`, as
    /// [`Session::is_expired`]); returns how many.
    fn delete_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// What [`find`](Self::find) would answer, when the store can tell at once without
    /// I/O because it holds its sessions in this process: `Some(found)`, the session
    /// shared rather than copied. `None` (the default) means "ask `find`".
    ///
    /// The layer uses it to resolve a request with no future of its own and no copy of
    /// the session ([`MemoryStore`] answers it); a store that does I/O leaves the default.
    fn find_in_process(&self, token_hash: &TokenHash) -> Option<Option<Arc<Session>>> {
        let _ = token_hash;
        None
    }

    /// The Redis through which instances share cookie-cache revocations, when this store
    /// is Redis itself (a [`RedisStorage`](crate::secondary::RedisStorage) as the only
    /// store). A store that wraps another must forward this.
    fn cache_revocation_bus(&self) -> Option<crate::CacheRevocationBus> {
        None
    }
}

impl<S: SessionStore + ?Sized> SessionStore for std::sync::Arc<S> {
    fn create<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).create(token_hash, session)
    }
    fn find<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        (**self).find(token_hash)
    }
    fn find_in_process(&self, token_hash: &TokenHash) -> Option<Option<Arc<Session>>> {
        (**self).find_in_process(token_hash)
    }
    fn cache_revocation_bus(&self) -> Option<crate::CacheRevocationBus> {
        (**self).cache_revocation_bus()
    }
    fn update<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        expected_generation: u64,
        session: &'a Session,
        new_token_hash: Option<&'a TokenHash>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).update(token_hash, expected_generation, session, new_token_hash)
    }
    fn delete<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        (**self).delete(token_hash)
    }
    fn find_by_id<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        (**self).find_by_id(session_id)
    }
    fn delete_by_id<'a>(
        &'a self,
        session_id: &'a str,
        user_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        (**self).delete_by_id(session_id, user_id)
    }
    fn delete_by_user<'a>(
        &'a self,
        user_id: &'a str,
        keep_session_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>, StoreError>> {
        (**self).delete_by_user(user_id, keep_session_id)
    }
    fn list_by_user<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        (**self).list_by_user(user_id, now)
    }
    fn delete_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        (**self).delete_expired(now, limit)
    }
}
