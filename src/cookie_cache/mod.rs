//! The cookie cache: a signed (or encrypted) copy of the session in a `session_data`
//! cookie, so that most requests resolve with no I/O at all.
//!
//! A cache is believed only when all of these hold, checked on every read:
//! - it opens under a key of the ring, with the configured protection, for this cookie
//!   name, this deploy's `version` and **the token the request presents** (a cache copied
//!   next to another token does not open);
//! - its own expiry (issued + `max_age`) has not passed, whatever the browser did with
//!   `Max-Age`, and the session inside has not expired;
//! - the session is not due for its sliding refresh (that needs the store);
//! - the [revocation set](revocation) does not refuse it, and, when revocations
//!   are shared through Redis, this instance's lease is live (`bus`).
//!
//! Otherwise the request falls through to the stores as if there were no cache, and a
//! fresh cache is issued once a store has answered. A hit never writes anything: it does
//! not slide the session and sets no cookie.
//!
//! The value layout is in [`seal`] (protection) and [`payload`] (the session bytes);
//! [`chunks`] spreads values over several cookies when one would pass 4096 bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Duration, Utc};
use http::{HeaderMap, HeaderValue, header};

use crate::clock::Clock;
use crate::config::SessionConfig;
use crate::cookies::{CookieNames, Lifetime, expired_cookie, scrub_set_cookies, set_cookie};
use crate::error::{ConfigError, StoreError};
use crate::session::Session;
use crate::token::{KeyRing, TokenHash};

#[cfg(feature = "redis")]
pub(crate) mod bus;
pub(crate) mod chunks;
pub(crate) mod payload;
pub(crate) mod revocation;
pub(crate) mod seal;
mod slots;

#[cfg(feature = "redis")]
use bus::RevocationBus;
use chunks::{ChunkNames, Presence};
use payload::View;
pub(crate) use payload::{CachedSession, SealedSession};
pub(crate) use revocation::CacheRevocation;
use revocation::{DEFAULT_RATE, RevocationSet, capacity_for};
use seal::{Binding, Protection};

/// The cache lifetime when none is configured: five minutes, as in Better Auth.
pub(crate) const DEFAULT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);
/// The longest cache lifetime accepted.
const MAX_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// How far apart the clocks of instances that share caches may be (NTP keeps them within
/// milliseconds; this is the allowance the revocation guarantees are built on).
pub(crate) const INSTANCE_CLOCK_SKEW: Duration = Duration::seconds(5);
/// Budget for a whole `Set-Cookie` line: Safari drops cookies somewhat below 4096 bytes.
const SET_COOKIE_BUDGET: usize = 4093;
/// RFC 6265bis: user agents ignore a cookie whose name and value pass 4096 bytes.
const NAME_VALUE_LIMIT: usize = 4096;

/// The cookie cache settings: how long a cache is believed, whether it is encrypted, the
/// deploy version bound into it and (feature `redis`) where revocations are shared.
/// Give it to [`SessionManagerBuilder::cookie_cache`](crate::SessionManagerBuilder::cookie_cache)
/// to turn the cache on.
///
/// ```
/// use std::time::Duration;
/// use tower_auth_session::{CookieCache, MemoryStore, SessionManager};
///
/// let manager = SessionManager::builder(MemoryStore::new())
///     .secret(b"an example secret of at least 32 bytes!")
///     .cookie_cache(
///         CookieCache::new()
///             .max_age(Duration::from_secs(60))
///             .encrypted(true)
///             .version("2026-11-28"),
///     )
///     .build()?;
/// # let _ = manager;
/// # Ok::<(), tower_auth_session::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct CookieCache {
    max_age: std::time::Duration,
    version: String,
    encrypted: bool,
    /// Revocations per second, across the deployment, the revocation set is sized for.
    revocation_rate: u32,
    /// Where revocations are shared with other instances: a Redis client and key prefix
    /// (or the mistake in them, reported by `build`).
    #[cfg(feature = "redis")]
    redis: Option<Result<crate::cache_bus::BusLink, ConfigError>>,
}

impl Default for CookieCache {
    fn default() -> Self {
        Self::new()
    }
}

impl CookieCache {
    /// The defaults: believed for 5 minutes, signed (not encrypted), no version.
    pub fn new() -> Self {
        Self {
            max_age: DEFAULT_MAX_AGE,
            version: String::new(),
            encrypted: false,
            revocation_rate: DEFAULT_RATE,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// How long a cache is believed (default 5 minutes; at most 1 day). Zero turns the
    /// cache off, as `SESSION_COOKIE_CACHE_MAX_AGE=0` does in the example server.
    pub fn max_age(mut self, max_age: std::time::Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// A version string bound into every cache (default empty, at most 255 bytes): change
    /// it in a deploy that changes what sessions mean, and every older cache is ignored.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Encrypts the cache with AES-256-GCM instead of only signing it (default off), so
    /// the browser cannot read the session's user id, IP address, user agent or app
    /// fields. Costs 8 bytes more per cache than the MAC and about a microsecond per read.
    pub fn encrypted(mut self, encrypted: bool) -> Self {
        self.encrypted = encrypted;
        self
    }

    /// The revocations per second, summed over every instance of the deployment, that
    /// the in-process revocation set is sized for (default 1,000; at least 1). Count
    /// sign-outs, revokes, sign-ins over an old cookie, rotations and field updates.
    ///
    /// Every instance keeps every revocation for the cache's `max_age` + 10 s, so it
    /// holds up to `rate × (max_age + 10 s)` entries of at most 90 bytes each — with the
    /// default `max_age` (5 minutes): 1,000/s → 310,000 entries, ≤ 28 MB; 10,000/s →
    /// 3.1 M entries, ≤ 279 MB. Past that the oldest entries give way to per-shard
    /// cut-offs: the caches of the sessions they covered that are older than the set's
    /// span are read from the store once more, never every cache at once.
    pub fn revocation_rate(mut self, per_second: u32) -> Self {
        self.revocation_rate = per_second.max(1);
        self
    }

    /// Shares cache revocations with every other instance through the Redis at `url`
    /// (keys and channels under `key_prefix`, e.g. `tas:v1:`), so that a revoke on one
    /// instance stops all of them from believing that session's caches before it returns.
    /// Needed whenever more than one instance runs with the cookie cache on and Redis is
    /// not already their secondary tier or store (a secondary tier or store that offers
    /// a bus — [`RedisStorage`](crate::secondary::RedisStorage) does, through
    /// `cache_revocation_bus`, and a wrapper must forward it — is used for this; this
    /// overrides it). This bus keeps its own connection (500 ms timeout, no breaker); one
    /// a storage offers uses the storage's.
    ///
    /// Each instance then trusts caches only under a 2-second lease it renews in Redis:
    /// while Redis is unreachable, requests fall back to the stores instead of believing
    /// caches, and a revoke that cannot reach Redis returns an error. After (re)connecting,
    /// caches issued before the reconnection are read from the store once. The manager
    /// starts its lease on the Tokio runtime it is built (or first used) in.
    ///
    /// ```
    /// use tower_auth_session::{CookieCache, MemoryStore, SessionManager};
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .cookie_cache(CookieCache::new().redis("redis://127.0.0.1:6379", "myapp:v1:"))
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(mut self, url: &str, key_prefix: impl Into<String>) -> Self {
        let key_prefix = key_prefix.into();
        let invalid = |reason: String| ConfigError::Invalid {
            option: "cookie_cache.redis",
            reason,
        };
        self.redis = Some(if key_prefix.is_empty() {
            Err(invalid("the key prefix must not be empty".into()))
        } else {
            redis::Client::open(url)
                .map(|client| crate::cache_bus::BusLink {
                    nodes: vec![client.get_connection_info().clone()],
                    client,
                    prefix: key_prefix,
                    // Its own connection: this Redis is not one a storage manages.
                    commands: None,
                })
                .map_err(|e| invalid(e.to_string()))
        });
        self
    }

    /// Checks the settings and starts the cache tier. `offered` is the bus the manager's
    /// secondary tier or store offers, used for revocations unless
    /// [`redis`](Self::redis) chose another.
    pub(crate) fn build(
        self,
        config: &SessionConfig,
        names: &CookieNames,
        clock: &Arc<dyn Clock>,
        offered: Option<crate::CacheRevocationBus>,
    ) -> Result<Option<CacheTier>, ConfigError> {
        #[cfg(not(feature = "redis"))]
        let _ = offered;
        if self.max_age.is_zero() {
            return Ok(None);
        }
        let invalid = |option, reason: &str| ConfigError::Invalid {
            option,
            reason: reason.to_owned(),
        };
        if self.max_age < std::time::Duration::from_secs(1) || self.max_age > MAX_MAX_AGE {
            return Err(invalid(
                "cookie_cache.max_age",
                "must be between 1 second and 1 day (or zero to turn the cache off)",
            ));
        }
        if self.version.len() > usize::from(u8::MAX) {
            return Err(invalid("cookie_cache.version", "must be at most 255 bytes"));
        }
        if names.session_data.len() + 2 > usize::from(u8::MAX) {
            return Err(invalid("cookie_prefix", "too long for the cookie cache"));
        }
        let max_age = Duration::from_std(self.max_age)
            .map_err(|_| invalid("cookie_cache.max_age", "out of range"))?;
        // What the attributes take of a line, so that the whole line stays in budget.
        let attributes = set_cookie(config, "", "", Lifetime::MaxAge(max_age)).len() - 1;
        let limit = SET_COOKIE_BUDGET
            .saturating_sub(attributes)
            .min(NAME_VALUE_LIMIT);
        // A revocation must outlive every cache issued before it, on any instance.
        let retention = max_age + INSTANCE_CLOCK_SKEW * 2;
        let revocations = Arc::new(RevocationSet::new(
            retention,
            capacity_for(self.revocation_rate, retention),
        ));
        // This process saw no revocation made before it started (a restart, a deploy):
        // caches issued before then are checked against the stores once and re-issued.
        let before_start = clock.now() - Duration::milliseconds(1);
        revocations.distrust_issued_until(before_start, before_start);
        let chunk_names = ChunkNames::new(&names.session_data);
        #[cfg(feature = "redis")]
        let bus = {
            let link = self.redis.transpose()?.or(offered.map(|bus| bus.link));
            link.map(|link| {
                let bus = RevocationBus::new(link, revocations.clone(), clock.clone());
                bus.start();
                bus
            })
        };
        Ok(Some(CacheTier {
            max_age,
            version: self.version,
            protection: if self.encrypted {
                Protection::Encrypted
            } else {
                Protection::Mac
            },
            expired: chunk_names
                .all()
                .map(|name| expired_cookie(config, name))
                .collect(),
            names: chunk_names,
            limit,
            revocations,
            #[cfg(feature = "redis")]
            bus,
            oversize_warned: AtomicBool::new(false),
        }))
    }
}

/// The running cookie cache of one manager: the first of the three tiers.
#[derive(Debug)]
pub(crate) struct CacheTier {
    pub(crate) max_age: Duration,
    version: String,
    protection: Protection,
    names: ChunkNames,
    /// The `Set-Cookie` values expiring each of `names.all()`, in that order, built once.
    expired: Vec<HeaderValue>,
    /// Longest `name=value` of one cookie.
    limit: usize,
    pub(crate) revocations: Arc<RevocationSet>,
    /// Shares revocations with other instances and leases this one's trust in caches.
    #[cfg(feature = "redis")]
    bus: Option<RevocationBus>,
    oversize_warned: AtomicBool,
}

/// What the request and the handle know about the cache.
#[derive(Debug, Clone, Default)]
pub(crate) struct CacheState {
    /// The cache cookies the request carried; `None` when they were not looked for.
    pub(crate) presence: Option<Presence>,
    /// The session came from the cache: no store was read.
    pub(crate) hit: bool,
    /// Issue a cache when the response is written, counted from this instant (taken
    /// before the store read, so the cache cannot outlive what the read proved).
    pub(crate) issue_from: Option<DateTime<Utc>>,
}

impl CacheState {
    /// The state of a request whose cache cookies were looked for (and not used).
    pub(crate) fn seen(presence: Option<Presence>) -> Self {
        Self {
            presence,
            ..Self::default()
        }
    }
}

/// A session the cache vouched for.
#[derive(Debug)]
pub(crate) enum CacheHit {
    /// Without app fields: the checked payload, decoded when first read.
    Sealed(SealedSession),
    /// With app fields (parsed to know they are an object) or too big to keep inline.
    Decoded(Session),
}

/// `now` as the hit path compares it with a payload's millisecond times, so no time is
/// converted to a `DateTime` to judge a cache. Stored times are whole milliseconds, so
/// comparing them with the floor of `now` (or of `now - update_age`) is exact.
struct HitClock {
    now_ms: i64,
    /// A remembered session last updated at or before this is due for its refresh
    /// (`now >= updated_at + update_age`); `None` when refreshes are off.
    refresh_from_ms: Option<i64>,
}

impl HitClock {
    fn new(config: &SessionConfig, now: DateTime<Utc>) -> Self {
        // In nanoseconds, so no calendar arithmetic: `now - update_age` exactly, floored
        // to a millisecond (an `update_age` past 292 years cannot be in nanoseconds).
        const NS_PER_MS: i128 = 1_000_000;
        let now_ns =
            i128::from(now.timestamp()) * 1_000_000_000 + i128::from(now.timestamp_subsec_nanos());
        let floor_ms = |ns: i128| i64::try_from(ns.div_euclid(NS_PER_MS)).ok();
        let refresh_from_ms = if config.disable_refresh {
            None
        } else {
            match config.update_age.num_nanoseconds() {
                Some(age) => floor_ms(now_ns - i128::from(age)),
                None => now
                    .checked_sub_signed(config.update_age)
                    .map(|from| from.timestamp_millis()),
            }
        };
        Self {
            now_ms: now.timestamp_millis(),
            refresh_from_ms,
        }
    }

    /// [`SessionConfig::refresh_due`] for a session with these fields.
    fn refresh_due(&self, remember: bool, updated_at_ms: i64) -> bool {
        remember
            && self
                .refresh_from_ms
                .is_some_and(|from| updated_at_ms <= from)
    }
}

impl CacheTier {
    /// The hit path: the session from the request's cache cookie (as gathered by
    /// [`RequestCookies`](crate::request_cookies::RequestCookies)), if it is believed.
    ///
    /// Always returns the cache state for the rest of the request: on a miss it asks for
    /// a cache to be issued from `now` once a store has answered. The payload is judged
    /// as it lies in the decoded cookie (times as milliseconds, strings borrowed); a
    /// session without app fields is kept sealed, its `Session` built only if read.
    pub(crate) fn read_hit(
        &self,
        keys: &KeyRing,
        config: &SessionConfig,
        gathered: &chunks::Gathered<'_>,
        token_hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> (CacheState, Option<CacheHit>) {
        let mut state = CacheState {
            presence: Some(gathered.presence()),
            hit: false,
            issue_from: Some(now),
        };
        let Some(value) = gathered.value() else {
            return (state, None);
        };
        let at = HitClock::new(config, now);
        let binding = self.binding(token_hash);
        let hit = seal::open(keys, self.protection, &binding, &value, |payload| {
            let view = View::parse(payload)?;
            if !self.believes(&view, &at) {
                return None;
            }
            let sealed = (!view.has_fields()).then(|| SealedSession::keep(payload));
            match sealed.flatten() {
                Some(sealed) => Some(CacheHit::Sealed(sealed)),
                None => view
                    .into_cached()
                    .map(|cached| CacheHit::Decoded(cached.session)),
            }
        });
        if hit.is_some() {
            state.hit = true;
            state.issue_from = None;
        }
        (state, hit)
    }

    /// [`read_hit`](Self::read_hit) with the session built, for tests and fuzzing.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn read(
        &self,
        keys: &KeyRing,
        config: &SessionConfig,
        gathered: &chunks::Gathered<'_>,
        token_hash: &TokenHash,
        now: DateTime<Utc>,
    ) -> (CacheState, Option<Session>) {
        let (state, hit) = self.read_hit(keys, config, gathered, token_hash, now);
        let session = hit.and_then(|hit| match hit {
            CacheHit::Sealed(sealed) => sealed.unseal(),
            CacheHit::Decoded(session) => Some(session),
        });
        (state, session)
    }

    fn binding<'a>(&'a self, token_hash: &'a TokenHash) -> Binding<'a> {
        Binding {
            version: &self.version,
            cookie_name: &self.names.plain,
            token_hash,
        }
    }

    /// Everything but the MAC: lifetimes, issue time, the refresh, revocations.
    fn believes(&self, view: &View<'_>, at: &HitClock) -> bool {
        at.now_ms < view.expires_at_ms
            && Duration::milliseconds(view.expires_at_ms - view.issued_at_ms) <= self.max_age
            && view.issued_at_ms - INSTANCE_CLOCK_SKEW.num_milliseconds() <= at.now_ms
            && at.now_ms < view.times_ms[payload::SESSION_EXPIRES_AT]
            && !at.refresh_due(view.remember(), view.times_ms[payload::UPDATED_AT])
            && self.leased()
            && self.revocations.allows(view)
    }

    /// Whether revocations reach other instances' caches (a bus is wired).
    pub(crate) fn shares_revocations(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.bus.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }

    /// Whether this instance's trust in caches is live: always without Redis (one
    /// instance: the revocation set is the whole truth), else only under a live lease.
    pub(crate) fn leased(&self) -> bool {
        #[cfg(feature = "redis")]
        if let Some(bus) = &self.bus {
            return bus.trusts();
        }
        true
    }

    /// Makes every instance stop believing what `revocations` name: at once here, and,
    /// with Redis, on every other leased instance before this returns. An error means
    /// that could not be confirmed (see the `bus` module).
    pub(crate) async fn revoke(
        &self,
        revocations: Vec<CacheRevocation>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if revocations.is_empty() {
            return Ok(());
        }
        #[cfg(feature = "redis")]
        if let Some(bus) = &self.bus {
            self.revocations.apply(revocations.clone(), now);
            return bus.broadcast(revocations).await;
        }
        self.revocations.apply(revocations, now);
        Ok(())
    }

    /// The cache cookies for `session`, or `None` when they would take more than the
    /// chunk cap.
    fn cookies(
        &self,
        keys: &KeyRing,
        config: &SessionConfig,
        issue: &CacheIssue<'_>,
        now: DateTime<Utc>,
    ) -> Option<Vec<(&str, HeaderValue)>> {
        let expires_at = issue.from + self.max_age;
        let remaining = expires_at - now;
        if remaining < Duration::seconds(1) {
            // The request took longer than a cache lives: nothing worth sending.
            return Some(Vec::new());
        }
        let mut payload = Vec::with_capacity(256);
        let issuer = self.revocations.issuer();
        if payload::encode(issue.session, issue.from, expires_at, issuer, &mut payload).is_none() {
            // Only a store can hand us such a session (times outside 1970–9999); a cache of
            // it would never be believed, and it is not a size problem worth a warning.
            tracing::debug!(session_id = %issue.session.id, "session not cacheable: a time is out of range");
            return Some(Vec::new());
        }
        let value = seal::seal(
            keys,
            self.protection,
            &self.binding(issue.token_hash),
            &payload,
        );
        let pieces = chunks::split(&value, &self.names, self.limit)?;
        // A session that will not be remembered leaves no cache behind either.
        let lifetime = if issue.session.remember {
            Lifetime::MaxAge(remaining)
        } else {
            Lifetime::BrowserSession
        };
        Some(
            self.names
                .written(pieces.len())
                .zip(pieces)
                .map(|(name, piece)| (name, set_cookie(config, name, piece, lifetime)))
                .collect(),
        )
    }

    fn warn_oversize(&self, session: &Session) {
        if !self.oversize_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                session_id = %session.id,
                max_cookies = chunks::MAX_CHUNKS,
                "session too large for the cookie cache; it is served from the store (logged once)"
            );
        } else {
            tracing::debug!(session_id = %session.id, "session too large for the cookie cache");
        }
    }
}

/// A cache to issue: which session, under which token, counted from when.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheIssue<'a> {
    pub(crate) from: DateTime<Utc>,
    pub(crate) session: &'a Session,
    pub(crate) token_hash: &'a TokenHash,
}

/// What the response does to the cache cookies, as the handle decided it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CacheWrite<'a> {
    /// Every session cookie is being cleared (the core clears the plain name).
    Clear,
    /// Issue a fresh cache.
    Issue(CacheIssue<'a>),
    /// Nothing to issue, nothing to expire.
    Nothing,
}

/// The cache cookies a response must carry.
#[derive(Debug, Default)]
pub(crate) struct CacheCookies<'m> {
    set: Vec<(&'m str, HeaderValue)>,
    /// Names to expire, with their prepared `Set-Cookie` values.
    expire: Vec<(&'m str, &'m HeaderValue)>,
}

impl<'m> CacheCookies<'m> {
    /// Decides them from what the request carried (`presence`) and what the response
    /// does (`write`); called while the handle's state is locked (nothing here awaits).
    /// The clock is read only when a cache is issued.
    pub(crate) fn decide(
        cache: &'m CacheTier,
        keys: &KeyRing,
        config: &SessionConfig,
        presence: Option<Presence>,
        write: CacheWrite<'_>,
        now: impl FnOnce() -> DateTime<Utc>,
    ) -> Self {
        let carried = |name: &str| match presence {
            None => true,
            Some(p) if name == cache.names.plain => p.has_plain(),
            Some(p) => cache
                .names
                .chunks
                .iter()
                .position(|c| c == name)
                .is_some_and(|i| p.has_chunk(i)),
        };
        let mut out = Self::default();
        match write {
            CacheWrite::Nothing => return out,
            CacheWrite::Clear => {}
            CacheWrite::Issue(issue) => match cache.cookies(keys, config, &issue, now()) {
                Some(set) => out.set = set,
                None => cache.warn_oversize(issue.session),
            },
        }
        // Expire what the request carried and this response does not overwrite, so a
        // shorter cache never leaves a stale tail.
        out.expire = cache
            .names
            .all()
            .zip(&cache.expired)
            .filter(|(name, _)| carried(name) && !out.set.iter().any(|(set, _)| set == name))
            .collect();
        if matches!(write, CacheWrite::Clear) {
            out.expire.retain(|(name, _)| *name != cache.names.plain);
        }
        out
    }

    /// Writes them onto the response.
    /// Writes the cookies; returns whether it added any `Set-Cookie`.
    pub(crate) fn apply(self, headers: &mut HeaderMap) -> bool {
        let wrote = !self.expire.is_empty() || !self.set.is_empty();
        if !self.expire.is_empty() {
            scrub_set_cookies(headers, self.expire.iter().map(|(name, _)| *name));
        }
        for (_, value) in self.expire {
            headers.append(header::SET_COOKIE, value.clone());
        }
        for (_, value) in self.set {
            headers.append(header::SET_COOKIE, value);
        }
        wrote
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::*;
    use crate::manager::SessionManager;
    use crate::store::MemoryStore;
    use crate::token::Token;

    fn manager(encrypted: bool) -> SessionManager {
        SessionManager::builder(MemoryStore::new())
            .secret([3u8; 32])
            .cookie_cache(CookieCache::new().encrypted(encrypted))
            .build()
            .unwrap()
    }

    /// Issues the cookies for `session` and reads them back the way a request would.
    fn issue(manager: &SessionManager, session: &Session) -> Option<(Vec<HeaderValue>, Session)> {
        let inner = &manager.inner;
        let cache = inner.cookie_cache.as_ref().unwrap();
        let hash = Token::generate().hash();
        let now = inner.clock.now();
        let issue = CacheIssue {
            from: now,
            session,
            token_hash: &hash,
        };
        let set = cache.cookies(&inner.keys, &inner.config, &issue, now)?;
        let cookie_header = set
            .iter()
            .map(|(_, v)| v.to_str().unwrap().split(';').next().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join("; ");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&cookie_header).unwrap(),
        );
        let cookies = crate::request_cookies::RequestCookies::parse(&inner.names, true, &headers);
        let gathered = cookies.cache.unwrap();
        let (state, read) = cache.read(&inner.keys, &inner.config, &gathered, &hash, now);
        assert!(state.hit);
        Some((set.into_iter().map(|(_, v)| v).collect(), read.unwrap()))
    }

    fn session_with_field(size: usize) -> Session {
        // Stores and the clock keep whole milliseconds; so does the cache.
        let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 3);
        let mut session = payload::tests::typical(now).session;
        session.expires_at = now + Duration::days(7);
        // Not yet due for its refresh, which a cache never serves.
        session.updated_at = now - Duration::hours(1);
        let mut fields = Map::new();
        if size > 0 {
            // Random-looking text that JSON does not shorten.
            let text: String = (0..size)
                .map(|i| char::from(b'!' + (i * 7 % 90) as u8))
                .collect();
            fields.insert("blob".into(), Value::String(text));
        }
        session.fields = fields;
        session
    }

    fn name_value_len(set_cookie: &HeaderValue) -> usize {
        set_cookie
            .as_bytes()
            .split(|&b| b == b';')
            .next()
            .unwrap()
            .len()
    }

    #[test]
    fn a_session_without_app_fields_fits_one_cookie_under_400_bytes() {
        for encrypted in [false, true] {
            let manager = manager(encrypted);
            let session = session_with_field(0);
            let (set, read) = issue(&manager, &session).unwrap();
            assert_eq!(read, session);
            assert_eq!(set.len(), 1);
            let len = name_value_len(&set[0]);
            println!("typical session, encrypted={encrypted}: name+value {len} bytes");
            assert!(len < 400, "{len}");
        }
    }

    /// A cache that opens (right MAC, this token) but whose session was last updated at
    /// the end of chrono's calendar: `refresh_due` used to add `update_age` to it and
    /// panic in the request.
    #[test]
    fn a_cache_with_an_absurd_updated_at_yields_no_session() {
        for encrypted in [false, true] {
            let manager = manager(encrypted);
            let inner = &manager.inner;
            let cache = inner.cookie_cache.as_ref().unwrap();
            let hash = Token::generate().hash();
            let now = inner.clock.now();
            let mut session = session_with_field(0);
            session.updated_at = DateTime::<Utc>::MAX_UTC;
            let cached = CachedSession {
                issued_at: now,
                expires_at: now + cache.max_age,
                issuer: cache.revocations.issuer(),
                session,
            };
            let bytes = payload::tests::written_unchecked(&cached);
            assert_eq!(payload::decode(&bytes), None);
            let value = seal::seal(&inner.keys, cache.protection, &cache.binding(&hash), &bytes);
            let cookie = format!("{}={value}", cache.names.plain);
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
            let cookies =
                crate::request_cookies::RequestCookies::parse(&inner.names, true, &headers);
            let gathered = cookies.cache.unwrap();
            let (state, read) = cache.read(&inner.keys, &inner.config, &gathered, &hash, now);
            assert!(!state.hit, "encrypted: {encrypted}");
            assert_eq!(read, None);
            assert_eq!(state.issue_from, Some(now), "a fresh cache replaces it");
        }
    }

    /// A payload too long to keep sealed inline (the longest user agent kept, no app
    /// fields) is decoded at once on a hit, and reads back the same.
    #[test]
    fn a_payload_too_long_to_keep_sealed_is_decoded_at_once() {
        for encrypted in [false, true] {
            let manager = manager(encrypted);
            let mut session = session_with_field(0);
            session.user_agent = Some("u".repeat(512));
            let (_, read) = issue(&manager, &session).unwrap();
            assert_eq!(read, session);
            let mut bytes = Vec::new();
            let now = manager.inner.clock.now();
            payload::encode(&session, now, now + Duration::minutes(5), 1, &mut bytes).unwrap();
            assert!(bytes.len() > payload::SEALED_INLINE, "{}", bytes.len());
            assert!(SealedSession::keep(&bytes).is_none());
        }
    }

    #[test]
    fn a_session_past_the_cap_is_not_cached() {
        let manager = manager(false);
        assert!(issue(&manager, &session_with_field(20_000)).is_none());
    }

    /// The millisecond refresh check agrees with `SessionConfig::refresh_due` around the
    /// boundary, for ages with and without sub-millisecond parts, and refreshes off.
    #[test]
    fn the_hit_clock_agrees_with_refresh_due() {
        let base = DateTime::from_timestamp_millis(1_790_000_000_123).unwrap();
        let ages = [
            Duration::days(1),
            Duration::milliseconds(1),
            Duration::nanoseconds(1_500_000),
            Duration::days(365 * 400),
        ];
        for age in ages {
            for disable in [false, true] {
                let config = SessionConfig {
                    update_age: age,
                    disable_refresh: disable,
                    ..SessionConfig::default()
                };
                for now_offset_ns in [-1_000_001i64, -1, 0, 1, 999_999, 1_000_000, 2_500_000] {
                    let now = base + Duration::nanoseconds(now_offset_ns);
                    let clock = HitClock::new(&config, now);
                    for updated_offset_ms in [-2i64, -1, 0, 1, 2] {
                        let Some(updated_at) = (now - age)
                            .checked_add_signed(Duration::milliseconds(updated_offset_ms))
                            .map(|t| chrono::SubsecRound::trunc_subsecs(t, 3))
                        else {
                            continue;
                        };
                        let mut session = session_with_field(0);
                        session.updated_at = updated_at;
                        for remember in [true, false] {
                            session.remember = remember;
                            assert_eq!(
                                clock.refresh_due(remember, updated_at.timestamp_millis()),
                                config.refresh_due(&session, now),
                                "age {age}, disable {disable}, now {now}, updated {updated_at}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Prints what issuing and reading a typical cache costs (no assertion: run with
    /// `cargo test --release --lib reports_encode -- --nocapture` for real figures).
    #[test]
    fn reports_encode_and_decode_cost() {
        const ROUNDS: u32 = 20_000;
        for encrypted in [false, true] {
            let manager = manager(encrypted);
            let inner = &manager.inner;
            let cache = inner.cookie_cache.as_ref().unwrap();
            let session = session_with_field(0);
            let hash = Token::generate().hash();
            let now = inner.clock.now();
            let started = std::time::Instant::now();
            let mut set = Vec::new();
            let issue = CacheIssue {
                from: now,
                session: &session,
                token_hash: &hash,
            };
            for _ in 0..ROUNDS {
                set = cache
                    .cookies(&inner.keys, &inner.config, &issue, now)
                    .unwrap();
            }
            let encode = started.elapsed() / ROUNDS;
            let value = set[0].1.to_str().unwrap().split(';').next().unwrap();
            let value = value.split_once('=').unwrap().1.as_bytes().to_vec();
            let started = std::time::Instant::now();
            for _ in 0..ROUNDS {
                let binding = cache.binding(&hash);
                let believed = seal::open(&inner.keys, cache.protection, &binding, &value, |p| {
                    let view = View::parse(p)?;
                    Some(cache.believes(&view, &HitClock::new(&inner.config, now)))
                });
                assert_eq!(believed, Some(true));
            }
            let decode = started.elapsed() / ROUNDS;
            println!(
                "typical cache, encrypted={encrypted}: issue {encode:?}, open+check {decode:?}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_cookie_stays_within_4096_bytes(size in 0usize..14_000, encrypted in any::<bool>()) {
            let manager = manager(encrypted);
            let session = session_with_field(size);
            match issue(&manager, &session) {
                Some((set, read)) => {
                    prop_assert_eq!(read, session);
                    prop_assert!(set.len() <= chunks::MAX_CHUNKS);
                    for cookie in &set {
                        prop_assert!(name_value_len(cookie) <= NAME_VALUE_LIMIT);
                        prop_assert!(cookie.len() <= SET_COOKIE_BUDGET);
                    }
                }
                // Only a session that cannot fit three cookies may go uncached: with the
                // default names and attributes that is about 8.5 KB of app fields (a little
                // less encrypted: nonce and tag outweigh the MAC); 8 KB always fits.
                None => prop_assert!(size > 8_000, "{} bytes not cached (encrypted: {})", size, encrypted),
            }
        }
    }
}
