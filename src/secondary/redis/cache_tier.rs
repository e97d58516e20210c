//! [`RedisStorage`] as the secondary tier in front of a primary store.

use chrono::{DateTime, Utc};
use redis::Value;

use super::RedisStorage;
use super::encoding::{decode, encode};
use super::keys::{self, Key};
use crate::error::StoreError;
use crate::secondary::{PutOutcome, Revocation, SecondaryStorage};
use crate::session::Session;
use crate::store::BoxFuture;
use crate::token::TokenHash;
use crate::token::{shard_of, shard_of_id};

impl RedisStorage {
    /// One `GET`: the request path's only command on a hit.
    pub(super) async fn get_key(&self, key: Key) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_connection(|mut conn| async move {
            redis::cmd("GET")
                .arg(key.as_bytes())
                .query_async(&mut conn)
                .await
        })
        .await
    }

    pub(super) async fn get_session(
        &self,
        token_hash: &TokenHash,
    ) -> Result<Option<Session>, StoreError> {
        let bytes = self.get_key(self.value_key(token_hash)).await?;
        Ok(bytes.and_then(|bytes| {
            let session = decode(&bytes);
            if session.is_none() {
                tracing::warn!(
                    token_hash = ?token_hash,
                    "undecodable session value in redis; treated as absent"
                );
            }
            session
        }))
    }

    /// Runs the revoke script: once on one Redis; on a cluster once per shard the
    /// revocations fall in (one, unless a call names several users). `extend`: tombstones
    /// also last until each session's own expiry. Returns (id, token hash, value) per
    /// tombstoned session.
    pub(super) async fn run_revoke(
        &self,
        revocations: &[Revocation<'_>],
        until_ms: i64,
        now_ms: i64,
        extend: bool,
    ) -> Result<Vec<Revoked>, StoreError> {
        if !self.is_cluster() {
            return self
                .revoke_in_shard(0, revocations.iter(), until_ms, now_ms, extend)
                .await;
        }
        let mut shards: Vec<u8> = revocations.iter().map(shard_of_revocation).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut out = Vec::new();
        for shard in shards {
            let group = revocations
                .iter()
                .filter(|revocation| shard_of_revocation(revocation) == shard);
            out.extend(
                self.revoke_in_shard(shard, group, until_ms, now_ms, extend)
                    .await?,
            );
        }
        Ok(out)
    }

    async fn revoke_in_shard<'r, 'a: 'r>(
        &self,
        shard: u8,
        revocations: impl Iterator<Item = &'r Revocation<'a>>,
        until_ms: i64,
        now_ms: i64,
        extend: bool,
    ) -> Result<Vec<Revoked>, StoreError> {
        let prefix = self.shard_prefix(shard);
        let mut invocation = self.inner.scripts.revoke.prepare_invoke();
        invocation
            .key(prefix.as_bytes())
            .arg(prefix.as_bytes())
            .arg(until_ms)
            .arg(now_ms)
            .arg(if extend { "1" } else { "0" });
        for revocation in revocations {
            match *revocation {
                Revocation::Token(hash) => {
                    invocation.arg("t").arg(hash.to_hex()).arg("").arg("");
                }
                Revocation::Session {
                    id,
                    user_id,
                    token_hash,
                    verified,
                } => {
                    invocation
                        .arg("s")
                        .arg(id)
                        .arg(user_id.unwrap_or(""))
                        .arg(token_hash.map(TokenHash::to_hex).unwrap_or_default())
                        .arg(if verified { "1" } else { "0" });
                }
                Revocation::User { user_id, except } => {
                    invocation
                        .arg("u")
                        .arg(user_id)
                        .arg(except.unwrap_or(""))
                        .arg("");
                }
            }
        }
        let replicas = self.inner.wait_for_replicas;
        // Half the call's timeout, so a silent replica fails the call with its own reason.
        let wait_ms = u64::try_from(self.inner.timeout.as_millis() / 2).unwrap_or(u64::MAX);
        let slot = keys::slot(&prefix);
        let flat: Vec<Vec<u8>> = self
            .with_connection(|mut conn| async move {
                let flat = invocation.invoke_async(&mut conn).await?;
                if replicas > 0 {
                    // On the connection the script ran on: `WAIT` counts its writes.
                    let acked = keys::wait(&mut conn, slot, replicas, wait_ms).await?;
                    if acked < i64::from(replicas) {
                        // A shard whose replica is gone (it was just promoted) must still
                        // revoke: the revocation stands on the primary, unconfirmed.
                        tracing::warn!(
                            acked,
                            replicas,
                            "redis revocation not confirmed by enough replicas; a failover now could lose it"
                        );
                    }
                }
                Ok(flat)
            })
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 3);
        for triple in flat.chunks_exact(3) {
            let id = String::from_utf8_lossy(&triple[0]).into_owned();
            let hash = hex_hash(&triple[1]);
            let value = (!triple[2].is_empty()).then(|| triple[2].clone());
            out.push((id, hash, value));
        }
        Ok(out)
    }

    pub(super) async fn run_list(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>, StoreError> {
        let prefix = self.shard_prefix(shard_of(user_id));
        let mut index = Key::from(&prefix);
        index.push(b"u:{");
        index.push(user_id.as_bytes());
        index.push(b"}:idx");
        let mut invocation = self.inner.scripts.list.prepare_invoke();
        invocation
            .key(index.as_bytes())
            .arg(prefix.as_bytes())
            .arg(user_id)
            .arg(now.timestamp_millis());
        let values: Vec<Vec<u8>> = self
            .with_connection(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        let mut sessions: Vec<Session> = values
            .iter()
            .filter_map(|v| decode(v))
            .filter(|s| !s.is_expired(now))
            .collect();
        sessions.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(sessions)
    }
}

/// What the revoke script reports per session: id, token hash, value.
pub(super) type Revoked = (String, Option<TokenHash>, Option<Vec<u8>>);

/// The shard whose keys a revocation touches: a session's id and token hash are in its
/// user's shard (for sessions a cluster holds at all), a user's index in the user's.
fn shard_of_revocation(revocation: &Revocation<'_>) -> u8 {
    match *revocation {
        Revocation::Token(hash) => hash.shard(),
        Revocation::Session { id, .. } => shard_of_id(id),
        Revocation::User { user_id, .. } => shard_of(user_id),
    }
}

/// Whether a cluster can hold this session: its token hash and id in its user's shard,
/// so one script reaches all of its keys. Sessions from before `Token::generate_for`
/// are not; the store serves them.
pub(super) fn placeable(token_hash: &TokenHash, session: &Session) -> bool {
    let shard = shard_of(&session.user_id);
    token_hash.shard() == shard && shard_of_id(&session.id) == shard
}

/// Parses the lower-case hex the scripts hand back.
fn hex_hash(hex: &[u8]) -> Option<TokenHash> {
    if hex.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        bytes[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(TokenHash(bytes))
}

impl RedisStorage {
    /// A session a cluster cannot hold: nothing is written (the store serves it), but a
    /// tombstone of its id still stops the caller from serving a revoked session.
    async fn put_unplaceable(&self, session: &Session) -> Result<PutOutcome, StoreError> {
        let pointer = self.get_key(self.pointer_key(&session.id)).await?;
        Ok(if pointer.as_deref() == Some(b"-") {
            PutOutcome::Revoked
        } else {
            PutOutcome::Stale
        })
    }
}

impl SecondaryStorage for RedisStorage {
    fn cache_revocation_bus(&self) -> Option<crate::CacheRevocationBus> {
        Some(self.revocation_bus())
    }

    fn get<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        Box::pin(self.get_session(token_hash))
    }

    fn put<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        session: &'a Session,
        replaces: Option<&'a TokenHash>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        Box::pin(async move {
            if self.is_cluster() && !placeable(token_hash, session) {
                return self.put_unplaceable(session).await;
            }
            let value = encode(session)?;
            let key = self.value_key(token_hash);
            let mut invocation = self.inner.scripts.put.prepare_invoke();
            invocation
                .key(key.as_bytes())
                .arg(self.shard_prefix(token_hash.shard()).as_bytes())
                .arg(token_hash.to_hex())
                .arg(&session.id)
                .arg(&session.user_id)
                .arg(value)
                .arg(session.expires_at.timestamp_millis())
                .arg(session.generation)
                .arg(now.timestamp_millis())
                .arg(replaces.map(TokenHash::to_hex).unwrap_or_default());
            let outcome: Value = self
                .with_connection(|mut conn| async move { invocation.invoke_async(&mut conn).await })
                .await?;
            match outcome {
                Value::BulkString(ref s) if s == b"written" => Ok(PutOutcome::Written),
                Value::BulkString(ref s) if s == b"stale" => Ok(PutOutcome::Stale),
                Value::BulkString(ref s) if s == b"revoked" => Ok(PutOutcome::Revoked),
                Value::BulkString(ref s) if s == b"expired" => Ok(PutOutcome::Expired),
                other => Err(StoreError::new(format!(
                    "unexpected reply from the redis put script: {other:?}"
                ))),
            }
        })
    }

    fn forget<'a>(&'a self, token_hash: &'a TokenHash) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let key = self.value_key(token_hash);
            self.with_connection(|mut conn| async move {
                redis::cmd("DEL")
                    .arg(key.as_bytes())
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await
        })
    }

    fn revoke<'a>(
        &'a self,
        revocations: &'a [Revocation<'a>],
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        Box::pin(async move {
            let revoked = self
                .run_revoke(
                    revocations,
                    until.timestamp_millis(),
                    now.timestamp_millis(),
                    true,
                )
                .await?;
            Ok(revoked.into_iter().map(|(id, _, _)| id).collect())
        })
    }

    fn list_by_user<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        Box::pin(self.run_list(user_id, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_hash_round_trips_and_rejects_junk() {
        let hash = TokenHash([0xab; 32]);
        assert_eq!(hex_hash(hash.to_hex().as_bytes()), Some(hash));
        assert_eq!(hex_hash(b""), None);
        assert_eq!(hex_hash(&[b'z'; 64]), None);
    }
}
