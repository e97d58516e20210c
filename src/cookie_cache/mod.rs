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
//! - the [revocation set](crate::revocation) does not refuse it, and, when revocations
//!   are shared through Redis, this instance's lease is live (`revocation_bus`).
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
use crate::cookies::{CookieNames, Lifetime, scrub_set_cookies, set_cookie};
use crate::error::{ConfigError, StoreError};
use crate::handle::{CookieAction, HandleState};
use crate::manager::ManagerInner;
use crate::revocation::{DEFAULT_CAPACITY, Revocation, RevocationSet};
#[cfg(feature = "redis")]
use crate::revocation_bus::RevocationBus;
use crate::session::Session;
use crate::token::TokenHash;

pub(crate) mod chunks;
pub(crate) mod payload;
pub(crate) mod seal;

use chunks::{ChunkNames, Presence};
pub(crate) use payload::CachedSession;
use seal::{Binding, Protection};

/// The cache lifetime when none is configured: five minutes, as in Better Auth.
pub(crate) const DEFAULT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(300);
/// The longest cache lifetime accepted.
const MAX_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// How far apart the clocks of instances that share caches may be (NTP keeps them within
/// milliseconds; this is the allowance the revocation guarantees are built on).
pub(crate) const CLOCK_SKEW: Duration = Duration::seconds(5);
/// Budget for a whole `Set-Cookie` line: Safari drops cookies somewhat below 4096 bytes.
const SET_COOKIE_BUDGET: usize = 4093;
/// RFC 6265bis: user agents ignore a cookie whose name and value pass 4096 bytes.
const NAME_VALUE_LIMIT: usize = 4096;

/// The cookie cache settings collected by the builder.
#[derive(Debug, Clone)]
pub(crate) struct CacheOptions {
    pub(crate) enabled: bool,
    pub(crate) max_age: std::time::Duration,
    pub(crate) version: String,
    pub(crate) encrypted: bool,
    /// Where revocations are shared with other instances: a Redis client and key prefix.
    #[cfg(feature = "redis")]
    pub(crate) redis: Option<(redis::Client, String)>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        Self {
            enabled: false,
            max_age: DEFAULT_MAX_AGE,
            version: String::new(),
            encrypted: false,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }
}

impl CacheOptions {
    /// Checks the options and builds the cache; `None` when it is off.
    pub(crate) fn build(
        self,
        config: &SessionConfig,
        names: &CookieNames,
        clock: &Arc<dyn Clock>,
    ) -> Result<Option<CookieCache>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let invalid = |option, reason: &str| ConfigError::Invalid {
            option,
            reason: reason.to_owned(),
        };
        if self.max_age < std::time::Duration::from_secs(1) || self.max_age > MAX_MAX_AGE {
            return Err(invalid(
                "cookie_cache_max_age",
                "must be between 1 second and 1 day (or zero to turn the cache off)",
            ));
        }
        if self.version.len() > usize::from(u8::MAX) {
            return Err(invalid("cookie_cache_version", "must be at most 255 bytes"));
        }
        if names.session_data.len() + 2 > usize::from(u8::MAX) {
            return Err(invalid("cookie_prefix", "too long for the cookie cache"));
        }
        let max_age = Duration::from_std(self.max_age)
            .map_err(|_| invalid("cookie_cache_max_age", "out of range"))?;
        // What the attributes take of a line, so that the whole line stays in budget.
        let attributes = set_cookie(config, "", "", Lifetime::MaxAge(max_age)).len() - 1;
        let limit = SET_COOKIE_BUDGET
            .saturating_sub(attributes)
            .min(NAME_VALUE_LIMIT);
        // A revocation must outlive every cache issued before it, on any instance.
        let revocations = Arc::new(RevocationSet::new(
            max_age + CLOCK_SKEW * 2,
            DEFAULT_CAPACITY,
        ));
        #[cfg(feature = "redis")]
        let bus = self.redis.map(|(client, prefix)| {
            let bus = RevocationBus::new(client, &prefix, revocations.clone(), clock.clone());
            bus.start();
            bus
        });
        #[cfg(not(feature = "redis"))]
        let _ = clock;
        Ok(Some(CookieCache {
            max_age,
            version: self.version,
            protection: if self.encrypted {
                Protection::Encrypted
            } else {
                Protection::Mac
            },
            names: ChunkNames::new(&names.session_data),
            limit,
            revocations,
            #[cfg(feature = "redis")]
            bus,
            oversize_warned: AtomicBool::new(false),
        }))
    }
}

/// The running cookie cache of one manager.
#[derive(Debug)]
pub(crate) struct CookieCache {
    pub(crate) max_age: Duration,
    version: String,
    protection: Protection,
    names: ChunkNames,
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

/// The hit path, for a request's headers (tests; the layer reads its cookies once).
#[cfg(test)]
pub(crate) fn read(
    manager: &ManagerInner,
    headers: &HeaderMap,
    token_hash: &TokenHash,
    now: DateTime<Utc>,
) -> (CacheState, Option<Session>) {
    let cookies = crate::request_cookies::RequestCookies::parse(manager, headers);
    read_gathered(manager, cookies.cache.as_ref(), token_hash, now)
}

/// The hit path: the session from the request's cache cookie (as gathered by
/// [`RequestCookies`](crate::request_cookies::RequestCookies)), if it is believed.
///
/// Always returns the cache state for the rest of the request: on a miss it asks for a
/// cache to be issued from `now` once a store has answered.
pub(crate) fn read_gathered(
    manager: &ManagerInner,
    gathered: Option<&chunks::Gathered<'_>>,
    token_hash: &TokenHash,
    now: DateTime<Utc>,
) -> (CacheState, Option<Session>) {
    let (Some(cache), Some(gathered)) = (&manager.cookie_cache, gathered) else {
        return (CacheState::default(), None);
    };
    let value = gathered.value();
    let mut state = CacheState {
        presence: Some(gathered.presence()),
        hit: false,
        issue_from: Some(now),
    };
    let cached = value.and_then(|value| cache.open(manager, token_hash, &value));
    match cached {
        Some(cached)
            if cache.believes(&cached, now) && !manager.refresh_due(&cached.session, now) =>
        {
            state.hit = true;
            state.issue_from = None;
            (state, Some(cached.session))
        }
        _ => (state, None),
    }
}

impl CookieCache {
    fn binding<'a>(&'a self, token_hash: &'a TokenHash) -> Binding<'a> {
        Binding {
            version: &self.version,
            cookie_name: &self.names.plain,
            token_hash,
        }
    }

    fn open(
        &self,
        manager: &ManagerInner,
        token_hash: &TokenHash,
        value: &[u8],
    ) -> Option<CachedSession> {
        seal::open(
            &manager.keys,
            self.protection,
            &self.binding(token_hash),
            value,
            payload::decode,
        )
    }

    /// Everything but the MAC: lifetimes, issue time and revocations.
    fn believes(&self, cached: &CachedSession, now: DateTime<Utc>) -> bool {
        now < cached.expires_at
            && cached.expires_at - cached.issued_at <= self.max_age
            && cached.issued_at <= now + CLOCK_SKEW
            && !cached.session.is_expired(now)
            && self.leased()
            && self.revocations.allows(cached)
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
    /// that could not be confirmed (see the `revocation_bus` module).
    pub(crate) async fn revoke(
        &self,
        revocations: Vec<Revocation>,
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
        manager: &ManagerInner,
        token_hash: &TokenHash,
        session: &Session,
        issued_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<Vec<(&str, HeaderValue)>> {
        let expires_at = issued_at + self.max_age;
        let remaining = expires_at - now;
        if remaining < Duration::seconds(1) {
            // The request took longer than a cache lives: nothing worth sending.
            return Some(Vec::new());
        }
        let mut payload = Vec::with_capacity(256);
        payload::encode(session, issued_at, expires_at, &mut payload)?;
        let value = seal::seal(
            &manager.keys,
            self.protection,
            &self.binding(token_hash),
            &payload,
        );
        let pieces = chunks::split(&value, &self.names, self.limit)?;
        // A session that will not be remembered leaves no cache behind either.
        let lifetime = if session.remember {
            Lifetime::MaxAge(remaining)
        } else {
            Lifetime::BrowserSession
        };
        Some(
            self.names
                .written(pieces.len())
                .zip(pieces)
                .map(|(name, piece)| (name, set_cookie(&manager.config, name, piece, lifetime)))
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

/// The cache cookies a response must carry, decided from the handle's state.
#[derive(Debug, Default)]
pub(crate) struct CacheCookies<'m> {
    set: Vec<(&'m str, HeaderValue)>,
    expire: Vec<&'m str>,
}

impl<'m> CacheCookies<'m> {
    /// Decides them while the handle's state is locked (nothing here awaits).
    pub(crate) fn decide(manager: &'m ManagerInner, state: &HandleState) -> Self {
        let Some(cache) = &manager.cookie_cache else {
            return Self::default();
        };
        let presence = state.cache.presence;
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
        let issue = match (
            &state.cookie_action,
            state.cache.issue_from,
            &state.session,
            &state.token,
        ) {
            // The core clears the plain name; the chunks are ours.
            (CookieAction::Clear, ..) => None,
            (_, Some(from), Some(session), Some((_, hash))) => Some((from, session, hash)),
            _ => return out,
        };
        if let Some((from, session, hash)) = issue {
            match cache.cookies(manager, hash, session, from, manager.clock.now()) {
                Some(set) => out.set = set,
                None => cache.warn_oversize(session),
            }
        }
        // Expire what the request carried and this response does not overwrite, so a
        // shorter cache never leaves a stale tail.
        out.expire = cache
            .names
            .all()
            .filter(|name| carried(name) && !out.set.iter().any(|(set, _)| set == name))
            .collect();
        if matches!(state.cookie_action, CookieAction::Clear) {
            out.expire.retain(|name| *name != cache.names.plain);
        }
        out
    }

    /// Writes them onto the response.
    pub(crate) fn apply(self, config: &SessionConfig, headers: &mut HeaderMap) {
        if !self.expire.is_empty() {
            scrub_set_cookies(headers, &self.expire);
        }
        for name in self.expire {
            headers.append(
                header::SET_COOKIE,
                set_cookie(config, name, "", Lifetime::Expire),
            );
        }
        for (_, value) in self.set {
            headers.append(header::SET_COOKIE, value);
        }
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
            .cookie_cache(true)
            .cookie_cache_encryption(encrypted)
            .build()
            .unwrap()
    }

    /// Issues the cookies for `session` and reads them back the way a request would.
    fn issue(manager: &SessionManager, session: &Session) -> Option<(Vec<HeaderValue>, Session)> {
        let inner = &manager.inner;
        let cache = inner.cookie_cache.as_ref().unwrap();
        let hash = Token::generate().hash();
        let now = inner.clock.now();
        let set = cache.cookies(inner, &hash, session, now, now)?;
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
        let (state, read) = read(inner, &headers, &hash, now);
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

    #[test]
    fn a_session_past_the_cap_is_not_cached() {
        let manager = manager(false);
        assert!(issue(&manager, &session_with_field(20_000)).is_none());
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
            for _ in 0..ROUNDS {
                set = cache.cookies(inner, &hash, &session, now, now).unwrap();
            }
            let encode = started.elapsed() / ROUNDS;
            let value = set[0].1.to_str().unwrap().split(';').next().unwrap();
            let value = value.split_once('=').unwrap().1.as_bytes().to_vec();
            let started = std::time::Instant::now();
            for _ in 0..ROUNDS {
                let cached = cache.open(inner, &hash, &value).unwrap();
                assert!(cache.believes(&cached, now));
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
                // default names and attributes that is about 8.7 KB of app fields.
                None => prop_assert!(size > 8_600, "{} bytes not cached", size),
            }
        }
    }
}
