//! [`RedisStorage`] as the only store ("secondary-only" mode): `SessionManager::builder(redis)`.
//!
//! Redis is then the source of truth, so every operation here is authoritative: the
//! generation compare-and-set happens inside a script, and deletions leave a short
//! tombstone (a minute: no backfill can race them in this mode, only a concurrent update,
//! which the generation check already stops).

use chrono::{DateTime, Utc};
use redis::Value;

use super::RedisStorage;
use super::cache_tier::placeable;
use super::encoding::{decode, encode};
use crate::error::StoreError;
use crate::secondary::Revocation;
use crate::session::Session;
use crate::store::{BoxFuture, SessionStore, StoredSession};
use crate::token::TokenHash;

/// How long a deletion's tombstone lasts in secondary-only mode.
const TOMBSTONE_MS: i64 = 60_000;

impl RedisStorage {
    async fn delete_where(
        &self,
        revocations: &[Revocation<'_>],
    ) -> Result<Vec<StoredSession>, StoreError> {
        let now = self.now_ms();
        let removed = self
            .run_revoke(revocations, now + TOMBSTONE_MS, now, false)
            .await?;
        Ok(removed
            .into_iter()
            .filter_map(|(_, hash, value)| {
                Some(StoredSession {
                    token_hash: hash?,
                    session: decode(&value?)?,
                })
            })
            .collect())
    }
}

impl SessionStore for RedisStorage {
    fn cache_revocation_bus(&self) -> Option<crate::CacheRevocationBus> {
        Some(self.revocation_bus())
    }

    fn create<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if self.is_cluster() && !placeable(token_hash, session) {
                return Err(StoreError::new(
                    "session not written to the redis cluster: its token or id is not in its \
                     user's shard (make them with Token::generate_for and Session::new)",
                ));
            }
            let value = encode(session)?;
            let key = self.value_key(token_hash);
            let mut invocation = self.inner.scripts.create.prepare_invoke();
            invocation
                .key(key.as_bytes())
                .arg(self.shard_prefix(token_hash.shard()).as_bytes())
                .arg(token_hash.to_hex())
                .arg(&session.id)
                .arg(&session.user_id)
                .arg(value)
                .arg(session.expires_at.timestamp_millis())
                .arg(self.now_ms());
            let outcome: Value = self
                .with_connection(|mut conn| async move { invocation.invoke_async(&mut conn).await })
                .await?;
            match outcome {
                // An already-expired session needs no storing: it would never resolve.
                Value::BulkString(ref s) if s == b"written" || s == b"expired" => Ok(()),
                Value::BulkString(ref s) if s == b"exists" => Err(StoreError::new(
                    "a session with this token or id already exists",
                )),
                other => Err(StoreError::new(format!(
                    "unexpected reply from the redis create script: {other:?}"
                ))),
            }
        })
    }

    fn find<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        Box::pin(self.get_session(token_hash))
    }

    fn update<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        expected_generation: u64,
        session: &'a Session,
        new_token_hash: Option<&'a TokenHash>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            if self.is_cluster()
                && new_token_hash.is_some_and(|new| new.shard() != token_hash.shard())
            {
                return Err(StoreError::new(
                    "token not rotated in the redis cluster: the new token is not in the \
                     session's shard (make it with Token::generate_for)",
                ));
            }
            let value = encode(session)?;
            let key = self.value_key(token_hash);
            let mut invocation = self.inner.scripts.update.prepare_invoke();
            invocation
                .key(key.as_bytes())
                .arg(self.shard_prefix(token_hash.shard()).as_bytes())
                .arg(token_hash.to_hex())
                .arg(expected_generation)
                .arg(new_token_hash.map(TokenHash::to_hex).unwrap_or_default())
                .arg(&session.id)
                .arg(value)
                .arg(session.expires_at.timestamp_millis())
                .arg(self.now_ms());
            let written: i64 = self
                .with_connection(|mut conn| async move { invocation.invoke_async(&mut conn).await })
                .await?;
            Ok(written == 1)
        })
    }

    fn delete<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        Box::pin(async move {
            let removed = self.delete_where(&[Revocation::Token(token_hash)]).await?;
            Ok(removed.into_iter().next().map(|stored| stored.session))
        })
    }

    fn find_by_id<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        Box::pin(async move {
            // The id's pointer holds the token hash, or `-` once revoked.
            let pointer = self.get_key(self.pointer_key(session_id)).await?;
            let hex = pointer.as_deref().and_then(|p| std::str::from_utf8(p).ok());
            let Some(token_hash) = hex.and_then(TokenHash::from_hex) else {
                return Ok(None);
            };
            let session = self.get_session(&token_hash).await?;
            Ok(session
                .filter(|session| session.id == session_id)
                .map(|session| StoredSession {
                    token_hash,
                    session,
                }))
        })
    }

    fn delete_by_id<'a>(
        &'a self,
        session_id: &'a str,
        user_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        Box::pin(async move {
            // Redis is the truth here: only a session it holds can be deleted, so a
            // user-scoped delete is checked against the stored owner.
            let removed = self
                .delete_where(&[Revocation::Session {
                    id: session_id,
                    user_id,
                    token_hash: None,
                    verified: false,
                }])
                .await?;
            Ok(removed.into_iter().next())
        })
    }

    fn delete_by_user<'a>(
        &'a self,
        user_id: &'a str,
        keep_session_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>, StoreError>> {
        Box::pin(self.delete_where_owned(user_id, keep_session_id))
    }

    fn list_by_user<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        Box::pin(self.run_list(user_id, now))
    }

    fn delete_expired(
        &self,
        _now: DateTime<Utc>,
        _limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        // Redis expires values, pointers and indexes by their own TTLs; index entries of
        // expired sessions are trimmed on the user's next write.
        Box::pin(async { Ok(0) })
    }
}

impl RedisStorage {
    async fn delete_where_owned(
        &self,
        user_id: &str,
        keep_session_id: Option<&str>,
    ) -> Result<Vec<StoredSession>, StoreError> {
        self.delete_where(&[Revocation::User {
            user_id,
            except: keep_session_id,
        }])
        .await
    }
}
