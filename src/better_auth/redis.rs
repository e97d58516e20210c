//! [`BetterAuthRedis`]: Better Auth's secondary-storage layout in Redis (reference §5).
//!
//! Keys, after the prefix (`better-auth:` for the official adapter): `<raw token>` holding
//! `{session, user}` (TTL the session's remaining life), `active-sessions-<userId>` (the
//! user's index, `[{token, expiresAt}]` sorted by expiry) and
//! `revoked-sessions-before-<userId>` (revoke-all's mark, ms). Each operation is one Lua
//! script, so one round trip and atomic on the Redis side (Better Auth's own updates are
//! read-modify-write; these cannot interleave with each other). The scripts build keys
//! from the prefix, so they need one Redis, not a cluster.

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;

use super::record::BaSessionWithUser;
use crate::error::StoreError;

/// Index helpers every script shares: read, rewrite without `token` and expired
/// entries, then append, sort and set the TTL to the latest expiry (deleted when empty).
const INDEX_LUA: &str = r#"
local function index_read(key)
  local raw = redis.call('GET', key)
  if not raw then return {} end
  local ok, list = pcall(cjson.decode, raw)
  if not ok or type(list) ~= 'table' then return {} end
  return list
end
local function index_write(key, list, now)
  local kept, latest = {}, 0
  for _, e in ipairs(list) do
    local at = tonumber(e.expiresAt)
    if type(e.token) == 'string' and at and at > now then
      table.insert(kept, {token = e.token, expiresAt = at})
      if at > latest then latest = at end
    end
  end
  if #kept == 0 then redis.call('DEL', key) return end
  table.sort(kept, function(a, b) return a.expiresAt < b.expiresAt end)
  local ttl = math.floor((latest - now) / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', key, cjson.encode(kept), 'EX', ttl)
end
local function index_put(key, token, expires_at, now)
  local list, out = index_read(key), {}
  for _, e in ipairs(list) do if e.token ~= token then table.insert(out, e) end end
  if expires_at then table.insert(out, {token = token, expiresAt = expires_at}) end
  index_write(key, out, now)
end
"#;

/// KEYS[1] the value. ARGV: prefix. The value and the user's revoke-all mark.
const FIND_LUA: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return false end
local ok, d = pcall(cjson.decode, v)
if not ok or type(d) ~= 'table' or type(d.session) ~= 'table' then return {v, false} end
local mark = redis.call('GET', ARGV[1] .. 'revoked-sessions-before-' .. tostring(d.session.userId))
return {v, mark or false}
"#;

/// KEYS[1] the value, KEYS[2] the index. ARGV: value, ttl s, token, expiresAt ms, now ms,
/// `xx` (only if it exists: a refresh) or `any` (a sign-in).
const WRITE_LUA: &str = r#"
if ARGV[6] == 'xx' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
index_put(KEYS[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]))
return 1
"#;

/// KEYS[1] the value. ARGV: prefix, token, now ms. Deletes the value and its index entry.
const REVOKE_LUA: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return false end
redis.call('DEL', KEYS[1])
local ok, d = pcall(cjson.decode, v)
if ok and type(d) == 'table' and type(d.session) == 'table' then
  index_put(ARGV[1] .. 'active-sessions-' .. tostring(d.session.userId), ARGV[2], nil, tonumber(ARGV[3]))
end
return v
"#;

/// ARGV: prefix, userId, token to keep (or ''), now ms, mark TTL s (0: no mark), then
/// more tokens of the user (from the database). Deletes every indexed or named token of
/// the user but the kept one, rewrites the index, sets the mark; the deleted values.
const REVOKE_USER_LUA: &str = r#"
local prefix, uid, keep, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local index = prefix .. 'active-sessions-' .. uid
local list = index_read(index)
local tokens, kept, deleted = {}, {}, {}
for _, e in ipairs(list) do
  if e.token == keep then table.insert(kept, e) elseif type(e.token) == 'string' then tokens[e.token] = true end
end
for i = 6, #ARGV do if ARGV[i] ~= keep then tokens[ARGV[i]] = true end end
for t, _ in pairs(tokens) do
  local v = redis.call('GET', prefix .. t)
  if v then
    local ok, d = pcall(cjson.decode, v)
    if ok and type(d) == 'table' and type(d.session) == 'table' and tostring(d.session.userId) == uid then
      redis.call('DEL', prefix .. t)
      table.insert(deleted, v)
    end
  end
end
index_write(index, kept, now)
if tonumber(ARGV[5]) > 0 then
  redis.call('SET', prefix .. 'revoked-sessions-before-' .. uid, ARGV[4], 'EX', ARGV[5])
end
return deleted
"#;

/// ARGV: prefix, userId. The mark (or '') then every indexed value.
const LIST_LUA: &str = r#"
local prefix, uid = ARGV[1], ARGV[2]
local out = {redis.call('GET', prefix .. 'revoked-sessions-before-' .. uid) or ''}
for _, e in ipairs(index_read(prefix .. 'active-sessions-' .. uid)) do
  if type(e.token) == 'string' then
    local v = redis.call('GET', prefix .. e.token)
    if v then table.insert(out, v) end
  end
end
return out
"#;

/// Better Auth's Redis secondary storage.
#[derive(Clone)]
pub struct BetterAuthRedis {
    connection: ConnectionManager,
    prefix: String,
    mark_ttl_secs: u64,
    find: redis::Script,
    write: redis::Script,
    revoke: redis::Script,
    revoke_user: redis::Script,
    list: redis::Script,
}

impl std::fmt::Debug for BetterAuthRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BetterAuthRedis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl BetterAuthRedis {
    /// Connects to the app's Redis, with its key `prefix` and `expires_in` (the
    /// revoke-all mark lives `max(expiresIn, 1 day)`, as Better Auth sets it).
    pub async fn connect(
        url: &str,
        prefix: &str,
        expires_in: std::time::Duration,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::with_source("invalid Better Auth Redis URL", e))?;
        let connection = ConnectionManager::new(client)
            .await
            .map_err(|e| StoreError::with_source("could not reach Better Auth's Redis", e))?;
        let with_index = |body: &str| redis::Script::new(&format!("{INDEX_LUA}{body}"));
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
            mark_ttl_secs: expires_in.as_secs().max(86_400),
            find: redis::Script::new(FIND_LUA),
            write: with_index(WRITE_LUA),
            revoke: with_index(REVOKE_LUA),
            revoke_user: with_index(REVOKE_USER_LUA),
            list: with_index(LIST_LUA),
        })
    }

    /// The session stored under this raw token, as Better Auth's `findSession` reads it:
    /// `None` when the key is missing, and also when the session was created before the
    /// user's revoke-all mark.
    pub async fn find(&self, token: &str) -> Result<Option<BaSessionWithUser>, StoreError> {
        Ok(self
            .find_marked(token)
            .await?
            .filter(|(_, revoked)| !revoked)
            .map(|(r, _)| r))
    }

    /// The value under this token and whether the user's revoke-all mark ends it: a
    /// revoked hit is not a miss (Better Auth does not fall back to its table then).
    pub(crate) async fn find_marked(
        &self,
        token: &str,
    ) -> Result<Option<(BaSessionWithUser, bool)>, StoreError> {
        let mut invocation = self.find.key(self.key(token));
        invocation.arg(&self.prefix);
        let found: Option<(String, Option<String>)> = self.run("find", &invocation).await?;
        let Some((value, mark)) = found else {
            return Ok(None);
        };
        let record: BaSessionWithUser = decode(&value)?;
        let revoked = revoked_by(&record, mark.as_deref());
        Ok(Some((record, revoked)))
    }

    /// Writes a new session (a sign-in made here) and its index entry.
    pub async fn create(
        &self,
        record: &BaSessionWithUser,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write(record, now, "any").await.map(|_| ())
    }

    /// Better Auth's refresh of the Redis value, made conditional: the value is rewritten
    /// (with the new expiry, TTL and index entry) only if the key still exists, so a
    /// refresh racing a revoke never writes a revoked session back. `false`: it was gone.
    pub async fn refresh(
        &self,
        record: &BaSessionWithUser,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.write(record, now, "xx").await
    }

    async fn write(
        &self,
        record: &BaSessionWithUser,
        now: DateTime<Utc>,
        mode: &str,
    ) -> Result<bool, StoreError> {
        let session = &record.session;
        // Better Auth does not write a value whose TTL would be zero or less.
        let ttl = (session.expires_at - now).num_seconds();
        if ttl <= 0 {
            return Ok(false);
        }
        let value = serde_json::to_string(record)
            .map_err(|e| StoreError::with_source("could not encode a session", e))?;
        let mut invocation = self.write.key(self.key(&session.token));
        invocation
            .key(self.index_key(&session.user_id))
            .arg(value)
            .arg(ttl)
            .arg(&session.token)
            .arg(session.expires_at.timestamp_millis())
            .arg(now.timestamp_millis())
            .arg(mode);
        let written: i64 = self.run("write", &invocation).await?;
        Ok(written == 1)
    }

    /// Deletes the value and its index entry; the session if it was there. A second
    /// `DEL` follows about a second later, which narrows Better Auth's own refresh race
    /// (a read-modify-write that can put the key back just after a delete, reference
    /// §8 (v)); it cannot close it.
    pub async fn revoke(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<BaSessionWithUser>, StoreError> {
        let mut invocation = self.revoke.key(self.key(token));
        invocation
            .arg(&self.prefix)
            .arg(token)
            .arg(now.timestamp_millis());
        let value: Option<String> = self.run("revoke", &invocation).await?;
        self.delete_again_later(vec![token.to_owned()]);
        value.map(|value| decode(&value)).transpose()
    }

    /// Deletes every session of `user_id` found in its index or in `tokens` (the rows
    /// the database deleted), except `keep_token`; with `mark`, also sets the user's
    /// revoke-all mark to `now` (never with a kept session: it would end that one too).
    pub async fn revoke_user(
        &self,
        user_id: &str,
        tokens: &[String],
        keep_token: Option<&str>,
        mark: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<BaSessionWithUser>, StoreError> {
        let mut invocation = self.revoke_user.prepare_invoke();
        let mark_ttl = if mark && keep_token.is_none() {
            self.mark_ttl_secs
        } else {
            0
        };
        invocation
            .arg(&self.prefix)
            .arg(user_id)
            .arg(keep_token.unwrap_or(""))
            .arg(now.timestamp_millis())
            .arg(mark_ttl)
            .arg(tokens);
        let values: Vec<String> = self.run("revoke_user", &invocation).await?;
        let deleted: Vec<BaSessionWithUser> =
            values.iter().filter_map(|v| decode(v).ok()).collect();
        let mut again: Vec<String> = tokens.to_vec();
        again.extend(deleted.iter().map(|r| r.session.token.clone()));
        again.retain(|t| Some(t.as_str()) != keep_token);
        self.delete_again_later(again);
        Ok(deleted)
    }

    /// A user's sessions as Better Auth's `listSessions` reads them from Redis: the
    /// index walked, missing values skipped, sessions before the revoke-all mark and
    /// expired ones dropped; oldest first.
    pub async fn list_user(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<BaSessionWithUser>, StoreError> {
        let mut invocation = self.list.prepare_invoke();
        invocation.arg(&self.prefix).arg(user_id);
        let values: Vec<String> = self.run("list_user", &invocation).await?;
        let mark = values.first().filter(|m| !m.is_empty()).map(String::as_str);
        let mut sessions: Vec<BaSessionWithUser> = values
            .iter()
            .skip(1)
            .filter_map(|v| decode(v).ok())
            .filter(|r: &BaSessionWithUser| !revoked_by(r, mark) && r.session.expires_at > now)
            .collect();
        sessions.sort_by_key(|r| r.session.created_at);
        Ok(sessions)
    }

    fn key(&self, token: &str) -> String {
        format!("{}{token}", self.prefix)
    }

    fn index_key(&self, user_id: &str) -> String {
        format!("{}active-sessions-{user_id}", self.prefix)
    }

    fn delete_again_later(&self, tokens: Vec<String>) {
        if tokens.is_empty() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let mut connection = self.connection.clone();
        let keys: Vec<String> = tokens.iter().map(|t| self.key(t)).collect();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let done: redis::RedisResult<i64> = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut connection)
                .await;
            if let Err(error) = done {
                tracing::warn!(%error, "the delayed second delete of Better Auth sessions failed");
            }
        });
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        let call = invocation.invoke_async(&mut connection);
        let error = match tokio::time::timeout(std::time::Duration::from_secs(5), call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => StoreError::with_source("Better Auth's Redis failed", error),
            Err(_) => StoreError::new("Better Auth's Redis did not answer in time"),
        };
        tracing::warn!(op, error = %crate::error::chain(&error), "better-auth redis call failed");
        Err(error)
    }
}

/// Whether the user's revoke-all mark (ms, as Better Auth writes it, quoted or not)
/// came after the session was created.
fn revoked_by(record: &BaSessionWithUser, mark: Option<&str>) -> bool {
    let mark = mark.and_then(|m| m.trim_matches('"').parse::<i64>().ok());
    mark.is_some_and(|mark| record.session.created_at.timestamp_millis() < mark)
}

fn decode(value: &str) -> Result<BaSessionWithUser, StoreError> {
    serde_json::from_str(value).map_err(|e| {
        let error = StoreError::with_source("a Better Auth Redis value could not be decoded", e);
        tracing::warn!(error = %crate::error::chain(&error), "skipped a Better Auth Redis value");
        error
    })
}
