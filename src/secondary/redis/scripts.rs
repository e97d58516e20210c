//! The Lua scripts that make every multi-key change atomic, one round trip each.
//!
//! Keys (with `P` the configurable prefix, `tas:v1:` by default, and on a Redis Cluster the
//! prefix followed by the user's hash tag, `tas:v1:{3f}`; see [`keys`](super::keys)):
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `P s:<sha256 hex>` | string | the session ([`encoding`](super::encoding)) | at `expires_at` |
//! | `P i:<session id>` | string | the token hash the id currently lives under, or `-` (revoked) | with the session; a tombstone until the session could no longer be served |
//! | `P u:{<user>}:idx` | sorted set | the user's session ids, scored by expiry (ms) | at the latest score |
//! | `P u:{<user>}:gen` | counter | bumped by every revocation of the user's sessions | with the index or the latest tombstone |
//!
//! The per-id pointer is what lets a revocation by id (or by user, through the index) find
//! the value to delete, and its tombstone is what every conditional write checks first.
//! The scripts derive keys from `P`, passed as `ARGV[1]`, and from stored values (a
//! user's index lists ids, a pointer names a token hash). `KEYS[1]` is a key of the same
//! slot, which routes the call on a cluster. On a cluster every key of one call is on one
//! slot: a session's token hash, id and user are all in one shard (see
//! [`Token::generate_for`](crate::Token::generate_for)), which the Rust side checks before
//! it writes. Keys met inside a script are not declared; the first line is the in-script
//! flag Dragonfly needs for that (`--!df flags=allow-undeclared-keys`, a comment to Redis),
//! so Dragonfly needs no server flag.
//! All times are Unix milliseconds from the application's clock.
//!
//! The scripts use Redis 6.2 commands only ([`MINIMUM_REDIS_VERSION`](super::MINIMUM_REDIS_VERSION)):
//! no `PEXPIRETIME` or `EXPIRE … GT` (7.0), which `PTTL` and a comparison replace.

/// Helpers every script starts with: value parsing, key names, index upkeep.
macro_rules! prelude {
    () => {
        r#"--!df flags=allow-undeclared-keys
local P = ARGV[1]
local function parse(v)
  local gen, exp, ilen, p = string.match(v, '^1;(%d+);(%d+);(%d+);()')
  if not gen then return nil end
  ilen = tonumber(ilen)
  local id = string.sub(v, p, p + ilen - 1)
  local ulen, q = string.match(v, '^(%d+);()', p + ilen)
  if not ulen then return nil end
  ulen = tonumber(ulen)
  return tonumber(gen), tonumber(exp), id, string.sub(v, q, q + ulen - 1)
end
local function skey(hash) return P .. 's:' .. hash end
local function pkey(id) return P .. 'i:' .. id end
local function ikey(user) return P .. 'u:{' .. user .. '}:idx' end
local function gkey(user) return P .. 'u:{' .. user .. '}:gen' end
-- Drops expired ids from a user's index and makes the index live as long as its
-- longest session.
local function reindex(user, now)
  local idx = ikey(user)
  redis.call('ZREMRANGEBYSCORE', idx, '-inf', now)
  local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIREAT', idx, top[2]) else redis.call('DEL', idx) end
end
-- Value, id pointer and index entry: each write sets its expiry in the same command.
local function store(hash, id, user, value, exp, now)
  redis.call('SET', skey(hash), value, 'PXAT', exp)
  redis.call('SET', pkey(id), hash, 'PXAT', exp)
  redis.call('ZADD', ikey(user), exp, id)
  reindex(user, now)
end
"#
    };
}

/// Conditional write-through / backfill (secondary mode).
///
/// `KEYS[1]`: the value key. `ARGV`: prefix, hash, id, user, value, expires_ms,
/// generation, now_ms, replaces (or '').
/// Returns `written`, `stale`, `revoked` or `expired`.
pub(super) const PUT: &str = concat!(
    prelude!(),
    r#"
local hash, id, user, value, exp = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local gen, now, replaces = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
if tonumber(exp) <= now then return 'expired' end
local ptr = redis.call('GET', pkey(id))
if ptr == '-' then return 'revoked' end
-- The id lives under another token now (rotated): this copy is old.
if ptr and ptr ~= hash and ptr ~= replaces then return 'stale' end
local cur = redis.call('GET', skey(hash))
if cur then
  local cgen = parse(cur)
  if cgen and cgen > gen then return 'stale' end
  if cgen and cgen == gen then return 'written' end
end
store(hash, id, user, value, exp, now)
if replaces ~= '' and replaces ~= hash then redis.call('DEL', skey(replaces)) end
return 'written'
"#
);

/// Insert (secondary-only mode).
///
/// `KEYS[1]`: the value key. `ARGV`: prefix, hash, id, user, value, expires_ms, now_ms.
/// Returns `written`, `exists` or `expired`.
pub(super) const CREATE: &str = concat!(
    prelude!(),
    r#"
local hash, id, user, value, exp, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
if redis.call('EXISTS', skey(hash)) == 1 or redis.call('EXISTS', pkey(id)) == 1 then
  return 'exists'
end
if tonumber(exp) <= now then return 'expired' end
store(hash, id, user, value, exp, now)
return 'written'
"#
);

/// Compare-and-set on the generation, optionally moving to a new token hash
/// (secondary-only mode).
///
/// `KEYS[1]`: the value key. `ARGV`: prefix, hash, expected generation, new hash (or ''),
/// id, value, expires_ms, now_ms.
/// Returns 1 when written, 0 when the session changed or is gone.
pub(super) const UPDATE: &str = concat!(
    prelude!(),
    r#"
local hash, expected, newhash, id = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local value, exp, now = ARGV[6], ARGV[7], tonumber(ARGV[8])
local cur = redis.call('GET', skey(hash))
if not cur then return 0 end
local cgen, cexp, cid, cuser = parse(cur)
if not cgen or cgen ~= expected or cid ~= id then return 0 end
local ptr = redis.call('GET', pkey(id))
if ptr and ptr ~= hash then return 0 end
local target = hash
if newhash ~= '' then target = newhash end
if tonumber(exp) <= now then
  redis.call('DEL', skey(hash), pkey(id))
  redis.call('ZREM', ikey(cuser), id)
  reindex(cuser, now)
  return 1
end
store(target, id, cuser, value, exp, now)
if target ~= hash then redis.call('DEL', skey(hash)) end
return 1
"#
);

/// Deletes and tombstones sessions by token hash, id or user.
///
/// `KEYS[1]`: the prefix (on a cluster, of the one shard all groups are in).
/// `ARGV`: prefix, until_ms, now_ms, extend ('1': a tombstone also lasts until the
/// session's own expiry), then groups of four: kind, a, b, c, where kind is
/// - `t`: a = token hash;
/// - `s`: a = id, b = user (or ''), c = token hash (or ''), and a fifth group member
///   follows: '1' when verified;
/// - `u`: a = user, b = id to keep (or ''), c unused.
///
/// Returns a flat array: id, token hash (or ''), value (or '') per tombstoned session.
pub(super) const REVOKE: &str = concat!(
    prelude!(),
    r#"
local until_ms, now, extend = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local out, seen = {}, {}
-- A key's expiry in Unix ms (the 7.0 command for it is not used): Redis' clock plus
-- PTTL is the instant the key was set to expire at; negative without a key or expiry.
local clock = redis.call('TIME')
local rnow = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function expiry(key)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then return ttl end
  return rnow + ttl
end
local function tomb(id, user, hash, value, exp)
  if seen[id] then return end
  seen[id] = true
  local t = until_ms
  if extend and exp and exp > t then t = exp end
  local old = expiry(pkey(id))
  if redis.call('GET', pkey(id)) == '-' and old > t then t = old end
  local at = string.format('%.0f', t)
  redis.call('SET', pkey(id), '-', 'PXAT', at)
  if user then
    redis.call('ZREM', ikey(user), id)
    reindex(user, now)
    local g = gkey(user)
    redis.call('INCR', g)
    -- Only ever later (the 7.0 option for that is not used).
    if expiry(g) < t then redis.call('PEXPIREAT', g, at) end
  end
  out[#out + 1] = id
  out[#out + 1] = hash or ''
  out[#out + 1] = value or ''
end
-- The copy under this token hash, if it is the session with this id.
local function copy(hash, id)
  if not hash or hash == '' then return nil end
  local v = redis.call('GET', skey(hash))
  if not v then return nil end
  local gen, exp, vid, user = parse(v)
  if id and vid ~= id then return nil end
  return v, exp, vid, user
end
local function kill_hash(hash)
  local v, exp, id, user = copy(hash, nil)
  if not v then return end
  redis.call('DEL', skey(hash))
  if not id then return end
  local ptr = redis.call('GET', pkey(id))
  -- A leftover copy under a token the session was rotated away from: the session
  -- itself lives on under its new token.
  if ptr and ptr ~= '-' and ptr ~= hash then return end
  tomb(id, user, hash, v, exp)
end
local function kill_id(id, user_filter, hash_hint, verified)
  local ptr = redis.call('GET', pkey(id))
  local value, exp, owner, hash
  if ptr and ptr ~= '-' then
    local v, e, vid, u = copy(ptr, id)
    if v then value, exp, owner, hash = v, e, u, ptr end
  end
  if not value then
    local v, e, vid, u = copy(hash_hint, id)
    if v then value, exp, owner, hash = v, e, u, hash_hint end
  end
  -- Someone else's session: a user may only revoke their own.
  if owner and user_filter ~= '' and owner ~= user_filter then return end
  if not owner then
    if ptr ~= '-' and not verified then return end
    if user_filter ~= '' then owner = user_filter end
  end
  if hash then redis.call('DEL', skey(hash)) end
  if hash_hint ~= '' and hash_hint ~= hash and copy(hash_hint, id) then
    redis.call('DEL', skey(hash_hint))
  end
  tomb(id, owner, hash or (hash_hint ~= '' and hash_hint) or nil, value, exp)
end
local i = 5
while i <= #ARGV do
  local kind, a, b, c = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if kind == 't' then
    kill_hash(a)
    i = i + 4
  elseif kind == 's' then
    kill_id(a, b, c, ARGV[i + 4] == '1')
    i = i + 5
  else
    for _, id in ipairs(redis.call('ZRANGE', ikey(a), 0, -1)) do
      if id ~= b then kill_id(id, a, '', true) end
    end
    i = i + 4
  end
end
return out
"#
);

/// A user's live sessions.
///
/// `KEYS[1]`: the user's index. `ARGV`: prefix, user, now_ms. Returns the values.
pub(super) const LIST: &str = concat!(
    prelude!(),
    r#"
local user, now = ARGV[2], ARGV[3]
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', ikey(user), '(' .. now, '+inf')) do
  local ptr = redis.call('GET', pkey(id))
  if ptr and ptr ~= '-' then
    local v = redis.call('GET', skey(ptr))
    if v then out[#out + 1] = v end
  end
end
return out
"#
);

#[cfg(test)]
mod tests {
    /// Commands and options newer than Redis 6.2, which KeyDB and older managed servers
    /// refuse (the integration test `redis_compat` runs the scripts on a server with
    /// the commands removed; options cannot be removed, so they are checked here).
    #[test]
    fn scripts_use_nothing_newer_than_redis_6_2() {
        let newer = [
            "EXPIRETIME",
            "'GT'",
            "'LT'",
            "'NX'",
            "'XX'",
            "SINTERCARD",
            "ZINTERCARD",
            "LMPOP",
            "ZMPOP",
            "SPUBLISH",
            "FCALL",
            "LCS",
        ];
        for script in [
            super::PUT,
            super::CREATE,
            super::UPDATE,
            super::REVOKE,
            super::LIST,
        ] {
            for word in newer {
                assert!(!script.to_uppercase().contains(word), "{word} in {script}");
            }
        }
    }
}
