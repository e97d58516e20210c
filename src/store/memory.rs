//! An in-process store: for tests, demos and single-instance apps that accept losing
//! sessions on restart.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use super::{BoxFuture, SessionStore, StoredSession};
use crate::error::StoreError;
use crate::session::Session;
use crate::token::TokenHash;

/// Sessions in a `HashMap` behind a lock; cheap to clone (clones share the map).
///
/// Each session is kept behind an `Arc`, so a request that finds one shares it instead
/// of copying its strings (see [`SessionStore::find_in_process`]); the read lock is held
/// only for the hash lookup and a reference-count increment.
///
/// ```
/// use tower_auth_session::{MemoryStore, SessionManager};
/// let manager = SessionManager::builder(MemoryStore::new())
///     .secret([42u8; 32])
///     .build()
///     .unwrap();
/// # let _ = manager;
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<RwLock<Tables>>,
}

/// The sessions and three indexes; every method keeps all four in step.
#[derive(Debug, Default)]
struct Tables {
    by_hash: HashMap<TokenHash, Arc<Session>, TokenHashes>,
    hash_by_id: HashMap<String, TokenHash>,
    /// Each user's token hashes, so per-user calls cost that user's sessions, not every
    /// session of every user.
    by_user: HashMap<String, HashSet<TokenHash>>,
    /// (expiry, token hash), soonest first: a cleanup batch reads the expired
    /// sessions off the front instead of scanning every session under the write lock
    /// (at 1M sessions that scan blocked lookups for hundreds of milliseconds).
    by_expiry: BTreeSet<(DateTime<Utc>, TokenHash)>,
}

/// How many expired sessions one hold of the write lock removes: each removal is a few
/// map operations (well under a microsecond), so a lookup waits for tens of
/// microseconds at most, however many sessions expired.
const EXPIRED_PER_LOCK: usize = 64;

/// Token hashes are SHA-256 outputs of tokens the server drew at random, so they are
/// uniform already: the map folds their bytes instead of running SipHash over 32 bytes
/// again (about 250 instructions, 3% of a memory-store hit's own work). Only the server's
/// own tokens are inserted, so a request cannot choose keys that crowd the table.
#[derive(Debug, Clone, Copy, Default)]
struct TokenHashes;

impl BuildHasher for TokenHashes {
    type Hasher = FoldBytes;

    fn build_hasher(&self) -> FoldBytes {
        FoldBytes(0)
    }
}

/// Xors the input in, eight bytes at a time (rotating, so equal words do not cancel).
struct FoldBytes(u64);

impl Hasher for FoldBytes {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many sessions (live or expired) the store holds.
    pub fn len(&self) -> usize {
        self.read().by_hash.len()
    }

    /// Whether the store holds no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Tables {
    fn insert(&mut self, hash: TokenHash, session: Session) {
        self.by_expiry.insert((session.expires_at, hash));
        self.hash_by_id.insert(session.id.clone(), hash);
        self.by_user
            .entry(session.user_id.clone())
            .or_default()
            .insert(hash);
        self.by_hash.insert(hash, Arc::new(session));
    }

    fn remove(&mut self, hash: &TokenHash) -> Option<Session> {
        let session = self.by_hash.remove(hash)?;
        self.by_expiry.remove(&(session.expires_at, *hash));
        self.hash_by_id.remove(&session.id);
        if let Some(hashes) = self.by_user.get_mut(&session.user_id) {
            hashes.remove(hash);
            if hashes.is_empty() {
                self.by_user.remove(&session.user_id);
            }
        }
        // A request may still share it; then the caller gets a copy.
        Some(Arc::unwrap_or_clone(session))
    }

    /// `user_id`'s sessions (live or expired).
    fn of_user<'t>(&'t self, user_id: &str) -> impl Iterator<Item = (&'t TokenHash, &'t Session)> {
        self.by_user
            .get(user_id)
            .into_iter()
            .flatten()
            .filter_map(|hash| self.by_hash.get(hash).map(|session| (hash, &**session)))
    }
}

impl SessionStore for MemoryStore {
    fn create<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let result = {
            let mut tables = self.write();
            if tables.by_hash.contains_key(token_hash)
                || tables.hash_by_id.contains_key(&session.id)
            {
                Err(StoreError::new(
                    "a session with this token or id already exists",
                ))
            } else {
                tables.insert(*token_hash, session.clone());
                Ok(())
            }
        };
        Box::pin(async move { result })
    }

    fn find<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        let found = self
            .read()
            .by_hash
            .get(token_hash)
            .map(|s| Session::clone(s));
        Box::pin(async move { Ok(found) })
    }

    fn find_in_process(&self, token_hash: &TokenHash) -> Option<Option<Arc<Session>>> {
        Some(self.read().by_hash.get(token_hash).cloned())
    }

    fn update<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        expected_generation: u64,
        session: &'a Session,
        new_token_hash: Option<&'a TokenHash>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let applied = {
            let mut tables = self.write();
            let target = new_token_hash.copied().unwrap_or(*token_hash);
            match tables.by_hash.get(token_hash) {
                // Moving onto another session's hash would silently replace that session.
                Some(_) if target != *token_hash && tables.by_hash.contains_key(&target) => false,
                Some(stored) if stored.generation == expected_generation => {
                    let mut updated = session.clone();
                    updated.id.clone_from(&stored.id);
                    updated.user_id.clone_from(&stored.user_id);
                    updated.created_at = stored.created_at;
                    tables.remove(token_hash);
                    tables.insert(target, updated);
                    true
                }
                _ => false,
            }
        };
        Box::pin(async move { Ok(applied) })
    }

    fn delete<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        let removed = self.write().remove(token_hash);
        Box::pin(async move { Ok(removed) })
    }

    fn find_by_id<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        let found = {
            let tables = self.read();
            tables.hash_by_id.get(session_id).and_then(|hash| {
                tables.by_hash.get(hash).map(|session| StoredSession {
                    token_hash: *hash,
                    session: Session::clone(session),
                })
            })
        };
        Box::pin(async move { Ok(found) })
    }

    fn delete_by_id<'a>(
        &'a self,
        session_id: &'a str,
        user_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        let removed = {
            let mut tables = self.write();
            let hash = tables.hash_by_id.get(session_id).copied();
            match hash {
                Some(hash)
                    if user_id.is_none_or(|user| {
                        tables.by_hash.get(&hash).is_some_and(|s| s.user_id == user)
                    }) =>
                {
                    tables.remove(&hash).map(|session| StoredSession {
                        token_hash: hash,
                        session,
                    })
                }
                _ => None,
            }
        };
        Box::pin(async move { Ok(removed) })
    }

    fn delete_by_user<'a>(
        &'a self,
        user_id: &'a str,
        keep_session_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>, StoreError>> {
        let removed = {
            let mut tables = self.write();
            let hashes: Vec<TokenHash> = tables
                .of_user(user_id)
                .filter(|(_, s)| Some(s.id.as_str()) != keep_session_id)
                .map(|(hash, _)| *hash)
                .collect();
            hashes
                .into_iter()
                .filter_map(|hash| {
                    tables.remove(&hash).map(|session| StoredSession {
                        token_hash: hash,
                        session,
                    })
                })
                .collect()
        };
        Box::pin(async move { Ok(removed) })
    }

    fn list_by_user<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        let mut sessions: Vec<Session> = self
            .read()
            .of_user(user_id)
            .map(|(_, s)| s)
            .filter(|s| !s.is_expired(now))
            .cloned()
            .collect();
        sessions.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Box::pin(async move { Ok(sessions) })
    }

    fn delete_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        // In short holds of the lock, each taking the soonest-expiring sessions off the
        // front of the expiry index: O(limit · log N), never a scan of every session.
        let limit = limit as usize;
        let mut deleted = 0;
        while deleted < limit {
            let mut tables = self.write();
            let batch: Vec<TokenHash> = tables
                .by_expiry
                .iter()
                .take_while(|(expires_at, _)| *expires_at <= now)
                .take(EXPIRED_PER_LOCK.min(limit - deleted))
                .map(|(_, hash)| *hash)
                .collect();
            for hash in &batch {
                tables.remove(hash);
            }
            drop(tables);
            deleted += batch.len();
            if batch.len() < EXPIRED_PER_LOCK {
                break;
            }
        }
        let deleted = deleted as u64;
        Box::pin(async move { Ok(deleted) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: &str) -> (TokenHash, Session) {
        let now = Utc::now();
        let session = Session::new(user.to_owned(), now, now + chrono::Duration::hours(1));
        (crate::token::Token::generate().hash(), session)
    }

    /// The in-process lookup agrees with `find`, and shares the stored session instead
    /// of copying it (the memory store's hit path allocates nothing for the session).
    #[tokio::test]
    async fn the_in_process_lookup_shares_what_find_copies() {
        let store = MemoryStore::new();
        let (hash, s) = session("a");
        assert_eq!(store.find_in_process(&hash), Some(None));
        store.create(&hash, &s).await.unwrap();
        let first = store.find_in_process(&hash).flatten().unwrap();
        let second = store.find_in_process(&hash).flatten().unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(store.find(&hash).await.unwrap().as_ref(), Some(&*first));
        // A request still holding the old version does not stop a write.
        let mut updated = s.clone();
        updated.generation = 1;
        assert!(store.update(&hash, 0, &updated, None).await.unwrap());
        assert_eq!(first.generation, 0);
        assert_eq!(
            store.find_in_process(&hash).flatten().unwrap().generation,
            1
        );
        assert_eq!(store.delete(&hash).await.unwrap(), Some(updated));
        assert_eq!(store.find_in_process(&hash), Some(None));
    }

    /// The per-user index follows every write: create, a move to a new hash, each delete.
    #[tokio::test]
    async fn the_user_index_follows_every_write() {
        let store = MemoryStore::new();
        let (a1, s1) = session("a");
        let (a2, s2) = session("a");
        let (b1, s3) = session("b");
        for (hash, s) in [(&a1, &s1), (&a2, &s2), (&b1, &s3)] {
            store.create(hash, s).await.unwrap();
        }
        let moved = crate::token::Token::generate().hash();
        assert!(
            store
                .update(&a1, s1.generation, &s1, Some(&moved))
                .await
                .unwrap()
        );
        let index = |user: &str| {
            let tables = store.read();
            let mut hashes: Vec<TokenHash> = tables.of_user(user).map(|(h, _)| *h).collect();
            hashes.sort();
            hashes
        };
        let mut expected = vec![moved, a2];
        expected.sort();
        assert_eq!(index("a"), expected);
        assert_eq!(
            store.read().by_user["a"].len(),
            2,
            "the old hash left the index"
        );

        store.delete(&a2).await.unwrap();
        store.delete_by_id(&s1.id, None).await.unwrap();
        assert!(index("a").is_empty());
        assert!(
            !store.read().by_user.contains_key("a"),
            "empty entries are dropped"
        );
        assert_eq!(store.delete_by_user("b", None).await.unwrap().len(), 1);
        assert!(store.read().by_user.is_empty());
    }
    /// Issue 18: cleanup reads expired sessions off the expiry index, in step with the
    /// map through every write, so a batch costs the sessions it deletes, not a scan of
    /// every session under the write lock.
    #[tokio::test]
    async fn cleanup_takes_expired_sessions_off_the_expiry_index() {
        let store = MemoryStore::new();
        let now = Utc::now();
        let mut live = Vec::new();
        for i in 0..300i64 {
            let mut s = Session::new("u", now, now + chrono::Duration::seconds(i - 200));
            s.id = format!("s{i}");
            let hash = crate::token::Token::generate().hash();
            store.create(&hash, &s).await.unwrap();
            if i >= 200 {
                live.push(hash);
            }
        }
        // A refresh moves a session's place in the index (expired → live).
        let (hash, mut refreshed) = {
            let tables = store.read();
            let (hash, s) = tables.of_user("u").find(|(_, s)| s.id == "s0").unwrap();
            (*hash, s.clone())
        };
        refreshed.expires_at = now + chrono::Duration::hours(1);
        assert!(store.update(&hash, 0, &refreshed, None).await.unwrap());
        live.push(hash);
        assert_eq!(store.read().by_expiry.len(), 300);

        // 200 expired: s0 to s200 (expiring exactly now counts), less the refreshed s0.
        assert_eq!(store.delete_expired(now, 150).await.unwrap(), 150);
        assert_eq!(store.delete_expired(now, 1000).await.unwrap(), 50);
        assert_eq!(store.delete_expired(now, 1000).await.unwrap(), 0);
        let tables = store.read();
        assert_eq!(tables.by_expiry.len(), tables.by_hash.len());
        assert_eq!(tables.by_hash.len(), 100);
        live.retain(|hash| tables.by_hash.get(hash).is_some_and(|s| !s.is_expired(now)));
        assert_eq!(live.len(), 100, "only expired sessions were deleted");
        assert!(tables.by_expiry.iter().all(|(at, _)| *at > now));
    }
}
