//! The secondary tier: a fast, shared, session-shaped cache in front of the primary store
//! (or, when explicitly chosen, the only store).
//!
//! [`SecondaryStorage`] is not a bare key-value map. Every write is *conditional*: it
//! refuses to bring back a session that was revoked (a revocation leaves a tombstone) and
//! refuses to replace a newer copy with an older one (sessions carry a `generation`). That
//! is what lets the layer copy a session it read from the store back into the cache
//! (read-repair, "backfill") without ever resurrecting a session that a concurrent request
//! revoked.
//!
//! # Storage modes
//! | mode | how to build it | reads | writes | source of truth |
//! |---|---|---|---|---|
//! | primary + secondary | `SessionManager::builder(store).secondary_storage(redis)` | secondary, then store (and backfill) | store commits first, then secondary | store |
//! | secondary only | `SessionManager::builder(redis)` | Redis | Redis | Redis |
//!
//! Secondary-only works because [`RedisStorage`] also implements
//! [`SessionStore`](crate::SessionStore): it simply *is* the store. Choose it only when
//! losing Redis data (a flush, an eviction, a failover window) may sign users out.
//!
//! # Revocation order
//! A revocation in primary + secondary mode runs in three steps:
//! 1. **Secondary first**: every session the revoke names (by token hash, id or user) is
//!    deleted from the secondary tier and tombstoned there. If the secondary cannot be
//!    reached, the revoke returns an error *before the store is touched*: nothing changed,
//!    so nothing is half-revoked, and a retry simply runs the whole revoke again.
//! 2. **Store**: the sessions are deleted from the source of truth.
//! 3. **Secondary again**, only for sessions the store deleted that step 1 did not already
//!    tombstone (say, a session signed in concurrently, or one the secondary had never
//!    seen): they are tombstoned by the exact id and token hash the store returned, so a
//!    read-repair that read the store before step 2 cannot write them back.
//!
//! Deleting from the store first would leave a window in which the store says "revoked"
//! but the cache still serves the session, and — worse — a retry of `revoke(id)` would find
//! nothing in the store and so nothing to remove from the cache. Tombstoning first makes
//! every failure either "nothing happened" or "already unservable".

use chrono::{DateTime, Utc};

use crate::error::StoreError;
use crate::session::Session;
use crate::store::BoxFuture;
use crate::token::TokenHash;

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;
#[cfg(feature = "redis")]
pub(crate) mod redis;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{
    DEFAULT_KEY_PREFIX, MINIMUM_REDIS_VERSION, RedisConnection, RedisMetrics, RedisStorage,
    RedisStorageBuilder,
};

/// What a conditional [`SecondaryStorage::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutOutcome {
    /// The session was written (or an identical generation was already there).
    Written,
    /// A newer copy of the session (higher generation, or a rotated token) is already
    /// stored; nothing was written.
    Stale,
    /// The session was revoked; nothing was written and the caller must not serve it.
    Revoked,
    /// The session's `expires_at` is not after `now`; nothing was written.
    Expired,
}

/// One thing to revoke in the secondary tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revocation<'a> {
    /// The session stored under this token hash (sign-out).
    Token(&'a TokenHash),
    /// The session with this public id.
    Session {
        /// The session's public id.
        id: &'a str,
        /// Its owner, when known. With `verified: false` the secondary only revokes the
        /// session if it can check that it belongs to this user (so a user cannot revoke
        /// someone else's session by guessing an id).
        user_id: Option<&'a str>,
        /// Its token hash, when known (the store returned it), so the copy can be deleted
        /// even if the id's index entry is gone.
        token_hash: Option<&'a TokenHash>,
        /// Whether the caller already knows the session exists and belongs to `user_id`
        /// (it just deleted it from the store, or it is an administrator): then the id is
        /// tombstoned even when the secondary holds no copy.
        verified: bool,
    },
    /// Every session of a user, but `except`.
    User {
        /// The user.
        user_id: &'a str,
        /// A session id to keep (the current one, for "sign out other devices").
        except: Option<&'a str>,
    },
}

/// A session-shaped secondary storage (a cache in front of the primary store).
///
/// Implementations must honour these rules, which [`conformance`] checks:
/// - every value expires on its own at the session's `expires_at`, set together with the
///   value (a write never leaves a value without an expiry);
/// - [`put`](Self::put) is conditional: it writes nothing for a revoked session, for an
///   older generation than the stored one, or for an expired session;
/// - [`revoke`](Self::revoke) removes every copy it names and leaves a tombstone that
///   lasts at least until `until` (or the session's own expiry, if later), so a later
///   `put` of the same session id answers [`PutOutcome::Revoked`];
/// - multi-key changes are atomic;
/// - no raw token is ever stored: keys and values are built from [`TokenHash`]es.
///
/// Errors mean "could not reach the storage"; callers treat them as a miss (primary +
/// secondary mode) and never as a sign-out.
pub trait SecondaryStorage: Send + Sync + 'static {
    /// The session stored under this token hash, if any: one round trip.
    fn get<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>>;

    /// Stores `session` under `token_hash` until `session.expires_at`, adds it to its
    /// user's index, and, with `replaces`, drops the copy under the previous token hash
    /// (token rotation). Conditional, atomic, one round trip.
    fn put<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        session: &'a Session,
        replaces: Option<&'a TokenHash>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>>;

    /// Deletes the copy stored under this token hash without tombstoning the session
    /// (it lives on under a new token: rotation). One round trip.
    fn forget<'a>(&'a self, token_hash: &'a TokenHash) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Deletes and tombstones what `revocations` name, atomically, in one round trip.
    /// Tombstones last until `until` at least. Returns the ids of the sessions that are
    /// now tombstoned (including ones that already were).
    fn revoke<'a>(
        &'a self,
        revocations: &'a [Revocation<'a>],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>>;

    /// The user's sessions held by this tier that are live at `now`, oldest first.
    fn list_by_user<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>>;

    /// The Redis through which instances share cookie-cache revocations, if this tier
    /// has one (a [`RedisStorage`] does). A storage that
    /// wraps another must forward this, or the cookie caches of several instances will
    /// not hear of each other's revocations (the builder then warns).
    fn cache_revocation_bus(&self) -> Option<crate::CacheRevocationBus> {
        None
    }
}

impl<S: SecondaryStorage + ?Sized> SecondaryStorage for std::sync::Arc<S> {
    fn get<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        (**self).get(token_hash)
    }
    fn put<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        session: &'a Session,
        replaces: Option<&'a TokenHash>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        (**self).put(token_hash, session, replaces, now)
    }
    fn forget<'a>(&'a self, token_hash: &'a TokenHash) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).forget(token_hash)
    }
    fn revoke<'a>(
        &'a self,
        revocations: &'a [Revocation<'a>],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        (**self).revoke(revocations, until, now)
    }
    fn list_by_user<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        (**self).list_by_user(user_id, now)
    }

    fn cache_revocation_bus(&self) -> Option<crate::CacheRevocationBus> {
        (**self).cache_revocation_bus()
    }
}
