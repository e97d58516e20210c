//! [`SessionManager`]: the app-wide handle that holds configuration, keys and stores,
//! builds the layer, and answers admin calls outside a request.

use std::sync::Arc;

use chrono::Duration;
use http::HeaderMap;
use ipnet::IpNet;

use crate::client::{ClientFacts, ClientTracking};
use crate::clock::{Clock, SystemClock};
use crate::config::{SameSite, SessionConfig};
use crate::cookie_cache::{CacheOptions, CookieCache};
use crate::cookies::CookieNames;
use crate::error::{ConfigError, SessionError, StoreError};
use crate::events::{DEFAULT_EVENT_CAPACITY, EventBus, RevokeReason, SessionEvent};
use crate::layer::SessionLayer;
use crate::origin::TrustedOrigins;
use crate::request_token::{PresentedToken, presented_token};
use crate::resolve::{RefreshGate, Resolved};
use crate::revocation::Revocation as CacheRevocation;
use crate::secondary::tiers::Lookup;
use crate::secondary::{Revocation, SecondaryStorage};
use crate::session::Session;
use crate::store::{SessionStore, StoredSession};
use crate::token::KeyRing;

/// App-wide session configuration, keys and stores. Cheap to clone.
///
/// ```
/// use std::time::Duration;
/// use tower_auth_session::{MemoryStore, SessionManager};
///
/// let manager = SessionManager::builder(MemoryStore::new())
///     .secret(b"an example secret of at least 32 bytes!")
///     .expires_in(Duration::from_secs(7 * 24 * 3600))
///     .build()?;
/// let layer = manager.layer();
/// # let _ = layer;
/// # Ok::<(), tower_auth_session::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct SessionManager {
    pub(crate) inner: Arc<ManagerInner>,
}

pub(crate) struct ManagerInner {
    pub(crate) config: SessionConfig,
    pub(crate) keys: KeyRing,
    pub(crate) names: CookieNames,
    pub(crate) store: Arc<dyn SessionStore>,
    /// The secondary tier (Redis) in primary + secondary mode.
    pub(crate) secondary: Option<Arc<dyn SecondaryStorage>>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tracking: ClientTracking,
    pub(crate) refresh_gate: RefreshGate,
    /// The `session_data` cookie cache, when turned on.
    pub(crate) cookie_cache: Option<CookieCache>,
    pub(crate) events: EventBus,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("config", &self.inner.config)
            .field("keys", &self.inner.keys)
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// Starts configuring a manager over a primary store.
    pub fn builder(store: impl SessionStore) -> SessionManagerBuilder {
        // Secondary-only mode: the same Redis carries cookie cache revocations.
        let cookie_cache = CacheOptions {
            #[cfg(feature = "redis")]
            redis: redis_for_cache_revocations(&store),
            ..CacheOptions::default()
        };
        SessionManagerBuilder {
            store: Arc::new(store),
            secondary: None,
            keys: None,
            config: SessionConfig::default(),
            clock: Arc::new(SystemClock),
            tracking: ClientTracking::default(),
            cookie_cache,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            errors: Vec::new(),
        }
    }

    /// The tower layer that resolves sessions for every request.
    pub fn layer(&self) -> SessionLayer {
        SessionLayer::new(self.clone())
    }

    /// The name of the `session_token` cookie (with its `__Host-`/`__Secure-` prefix).
    pub fn session_cookie_name(&self) -> &str {
        &self.inner.names.session_token
    }

    /// Whether this instance believes cookie caches right now: the cache is on and, when
    /// revocations are shared through Redis, its lease is live. For health checks and
    /// dashboards; requests fall back to the stores while it is `false`.
    pub fn cookie_cache_active(&self) -> bool {
        self.inner
            .cookie_cache
            .as_ref()
            .is_some_and(|cache| cache.leased())
    }

    /// The name of the `dont_remember` marker cookie.
    pub fn dont_remember_cookie_name(&self) -> &str {
        &self.inner.names.dont_remember
    }

    /// Validates the session that `headers` carry (cookie or `Authorization: Bearer`),
    /// outside the layer: for websocket upgrades, other frameworks or admin tools.
    ///
    /// It deletes an expired session it finds, but never slides expiry (there is no
    /// response to re-set the cookie on). `Ok(None)` means no valid session;
    /// an error means a store could not be reached.
    pub async fn get_session(&self, headers: &HeaderMap) -> Result<Option<Session>, SessionError> {
        let hash = match presented_token(&self.inner, headers) {
            PresentedToken::Valid { token, .. } => token.hash(),
            _ => return Ok(None),
        };
        let now = self.inner.clock.now();
        let (session, cached) = match self.inner.lookup(&hash).await {
            Lookup::Found { session, cached } => (session, cached),
            Lookup::Missing => return Ok(None),
            Lookup::Unavailable => {
                return Err(StoreError::new("session store unavailable").into());
            }
        };
        if session.is_expired(now) {
            if let Some(session) = self.inner.store.delete(&hash).await? {
                self.inner.events.emit(|| SessionEvent::Expired { session });
            }
            return Ok(None);
        }
        if !cached && !self.inner.mirror(&hash, &session, None).await {
            return Ok(None);
        }
        Ok(Some(session))
    }

    /// Resolves a session the way the layer does (with refresh); used by the layer.
    pub(crate) async fn resolve_hash(
        &self,
        hash: crate::token::TokenHash,
        client: &ClientFacts,
    ) -> Resolved {
        self.inner.resolve(hash, client).await
    }

    /// A user's live sessions, oldest first.
    pub async fn list_user_sessions(&self, user_id: &str) -> Result<Vec<Session>, SessionError> {
        let now = self.inner.clock.now();
        Ok(self.inner.store.list_by_user(user_id, now).await?)
    }

    /// Revokes one session by its public id. Returns whether it existed.
    pub async fn revoke(&self, session_id: &str) -> Result<bool, SessionError> {
        let covered = self
            .inner
            .revoke_in_secondary_first(&[Revocation::Session {
                id: session_id,
                user_id: None,
                token_hash: None,
                verified: true,
            }])
            .await?;
        let removed = self.inner.store.delete_by_id(session_id, None).await?;
        let existed = removed.is_some();
        self.inner
            .revoked_after(
                removed.into_iter().collect(),
                RevokeReason::ByAdmin,
                &covered,
            )
            .await?;
        Ok(existed)
    }

    /// Revokes every session of a user (after a password reset, an account lock, …).
    /// Returns how many were revoked.
    pub async fn revoke_user(&self, user_id: &str) -> Result<usize, SessionError> {
        let covered = self
            .inner
            .revoke_in_secondary_first(&[Revocation::User {
                user_id,
                except: None,
            }])
            .await?;
        let removed = self.inner.store.delete_by_user(user_id, None).await?;
        let count = removed.len();
        self.inner
            .revoked_after(removed, RevokeReason::ByAdmin, &covered)
            .await?;
        Ok(count)
    }

    /// Revokes every session of a user but `keep_session_id`. Returns how many were revoked.
    pub async fn revoke_user_except(
        &self,
        user_id: &str,
        keep_session_id: &str,
    ) -> Result<usize, SessionError> {
        let covered = self
            .inner
            .revoke_in_secondary_first(&[Revocation::User {
                user_id,
                except: Some(keep_session_id),
            }])
            .await?;
        let removed = self
            .inner
            .store
            .delete_by_user(user_id, Some(keep_session_id))
            .await?;
        let count = removed.len();
        self.inner
            .revoked_after(removed, RevokeReason::ByAdmin, &covered)
            .await?;
        Ok(count)
    }

    /// Deletes sessions that have expired, in batches of 1000; returns how many.
    pub async fn delete_expired(&self) -> Result<u64, SessionError> {
        let now = self.inner.clock.now();
        let mut total = 0;
        loop {
            let deleted = self.inner.store.delete_expired(now, 1000).await?;
            total += deleted;
            if deleted < 1000 {
                if total > 0 {
                    self.inner
                        .events
                        .emit(|| SessionEvent::ExpiredSwept { count: total });
                }
                return Ok(total);
            }
            // Let other tasks at the store between batches.
            tokio::task::yield_now().await;
        }
    }
}

impl ManagerInner {
    /// Everything that must happen after sessions were deleted from the source of truth.
    ///
    /// Logs, emits events, and tombstones the sessions in the secondary tier (when there
    /// is one), failing if it cannot be reached: the revocation is then not final until
    /// retried. Better still, call
    /// [`revoke_in_secondary_first`](Self::revoke_in_secondary_first) before deleting
    /// from the store and pass what it returned to [`revoked_after`](Self::revoked_after)
    /// (see the `secondary` module docs for why that order).
    #[allow(dead_code)] // every path in the crate runs the first step; kept for new ones
    pub(crate) async fn revoked(
        &self,
        sessions: Vec<StoredSession>,
        reason: RevokeReason,
    ) -> Result<(), SessionError> {
        self.revoked_after(sessions, reason, &[]).await
    }

    /// [`revoked`](Self::revoked), skipping in the secondary tier the sessions that
    /// [`revoke_in_secondary_first`](Self::revoke_in_secondary_first) already covered.
    pub(crate) async fn revoked_after(
        &self,
        sessions: Vec<StoredSession>,
        reason: RevokeReason,
        covered: &[String],
    ) -> Result<(), SessionError> {
        for stored in &sessions {
            tracing::info!(session_id = %stored.session.id, user_id = ?stored.session.user_id, ?reason, "session revoked");
        }
        let secondary = self.revoke_in_secondary_after(&sessions, covered).await;
        let cache_revocations = match &self.cookie_cache {
            Some(_) => CacheRevocation::for_deleted(sessions.iter().map(|s| &s.session)),
            None => Vec::new(),
        };
        for stored in sessions {
            self.events.emit(|| SessionEvent::Revoked {
                session: stored.session,
                reason,
            });
        }
        // Cookie caches are revoked even if the secondary failed: the store committed.
        let caches = match &self.cookie_cache {
            Some(cache) => cache.revoke(cache_revocations, self.clock.now()).await,
            None => Ok(()),
        };
        secondary?;
        Ok(caches?)
    }

    /// Everything that must happen after a session was rewritten in a way that makes its
    /// older copies wrong (token rotation): cookie caches of generations below
    /// `session.generation` are no longer believed. Call it after the store committed.
    pub(crate) async fn superseded(&self, session: &Session) -> Result<(), StoreError> {
        let Some(cache) = &self.cookie_cache else {
            return Ok(());
        };
        let revocation = CacheRevocation::Session {
            session_id: session.id.clone(),
            below_generation: session.generation,
        };
        cache.revoke(vec![revocation], self.clock.now()).await
    }

    /// Deletes the session with this token hash from the source of truth.
    pub(crate) async fn revoke_hash(
        &self,
        hash: &crate::token::TokenHash,
        reason: RevokeReason,
    ) -> Result<Option<Session>, SessionError> {
        let covered = self
            .revoke_in_secondary_first(&[Revocation::Token(hash)])
            .await?;
        let removed = self.store.delete(hash).await?;
        if let Some(session) = &removed {
            self.revoked_after(
                vec![StoredSession {
                    token_hash: *hash,
                    session: session.clone(),
                }],
                reason,
                &covered,
            )
            .await?;
        }
        Ok(removed)
    }
}

/// The Redis client and key prefix of `tier` when it is a
/// [`RedisStorage`](crate::secondary::RedisStorage): with the cookie cache on, instances
/// that share it also share revocations (and lease their trust in caches) through it.
#[cfg(feature = "redis")]
fn redis_for_cache_revocations<T: 'static>(tier: &T) -> Option<(redis::Client, String)> {
    let redis = (tier as &dyn std::any::Any).downcast_ref::<crate::secondary::RedisStorage>()?;
    Some((redis.client().clone(), redis.key_prefix().to_owned()))
}

/// Configures a [`SessionManager`]. Mistakes are reported by [`build`](Self::build).
#[must_use]
pub struct SessionManagerBuilder {
    store: Arc<dyn SessionStore>,
    secondary: Option<Arc<dyn SecondaryStorage>>,
    keys: Option<KeyRing>,
    config: SessionConfig,
    clock: Arc<dyn Clock>,
    tracking: ClientTracking,
    cookie_cache: CacheOptions,
    event_capacity: usize,
    errors: Vec<ConfigError>,
}

impl std::fmt::Debug for SessionManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManagerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The longest any duration option may be: far beyond any session, and far enough from
/// the end of chrono's calendar that `now + duration` can never overflow (and panic).
const MAX_OPTION_DURATION: std::time::Duration =
    std::time::Duration::from_secs(1000 * 366 * 24 * 3600);

fn to_chrono(option: &'static str, d: std::time::Duration) -> Result<Duration, ConfigError> {
    if d > MAX_OPTION_DURATION {
        return Err(ConfigError::Invalid {
            option,
            reason: "must be at most 1000 years".into(),
        });
    }
    Duration::from_std(d).map_err(|_| ConfigError::Invalid {
        option,
        reason: "duration out of range".into(),
    })
}

impl SessionManagerBuilder {
    fn record<T>(
        mut self,
        result: Result<T, ConfigError>,
        apply: impl FnOnce(&mut Self, T),
    ) -> Self {
        match result {
            Ok(value) => apply(&mut self, value),
            Err(error) => self.errors.push(error),
        }
        self
    }

    /// The application secret (≥ 32 random bytes); a ring with one key, id `k0`.
    ///
    /// # Warning
    /// Anyone with this secret can forge session cookies for any token they know. Load it
    /// from a secret store, never from source code.
    pub fn secret(self, secret: impl AsRef<[u8]>) -> Self {
        let ring = KeyRing::from_secret(secret);
        self.record(ring, |b, ring| b.keys = Some(ring))
    }

    /// A ring of keys for rotation: the first signs, all verify.
    pub fn key_ring(mut self, ring: KeyRing) -> Self {
        self.keys = Some(ring);
        self
    }

    /// How long a session lives without activity (default 7 days); also the cookie's
    /// `Max-Age` after sign-in and after each refresh.
    pub fn expires_in(self, expires_in: std::time::Duration) -> Self {
        let d = to_chrono("expires_in", expires_in);
        self.record(d, |b, d| b.config.expires_in = d)
    }

    /// How old the last write must be before a request slides the expiry (default 1 day).
    /// Zero refreshes on every request.
    pub fn update_age(self, update_age: std::time::Duration) -> Self {
        let d = to_chrono("update_age", update_age);
        self.record(d, |b, d| b.config.update_age = d)
    }

    /// Turns sliding expiry off: sessions end `expires_in` after sign-in.
    pub fn disable_refresh(mut self, disable: bool) -> Self {
        self.config.disable_refresh = disable;
        self
    }

    /// An absolute cap: no refresh moves `expires_at` past `created_at + max_lifetime`.
    pub fn max_lifetime(self, max_lifetime: std::time::Duration) -> Self {
        let d = to_chrono("max_lifetime", max_lifetime);
        self.record(d, |b, d| b.config.max_lifetime = Some(d))
    }

    /// How recent the last authentication must be for sensitive actions (default 1 day).
    pub fn fresh_age(self, fresh_age: std::time::Duration) -> Self {
        let d = to_chrono("fresh_age", fresh_age);
        self.record(d, |b, d| b.config.fresh_age = d)
    }

    /// Lifetime of a session whose user chose not to be remembered (default 1 day).
    pub fn dont_remember_expires_in(self, expires_in: std::time::Duration) -> Self {
        let d = to_chrono("dont_remember_expires_in", expires_in);
        self.record(d, |b, d| b.config.dont_remember_expires_in = d)
    }

    /// The cookie name prefix (default `tas`): cookies are `{prefix}.session_token`, … with
    /// `__Host-` (or `__Secure-` when a domain is set) in front when `Secure`.
    pub fn cookie_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.cookie_prefix = prefix.into();
        self
    }

    /// Whether cookies carry `Secure` (default `true`).
    ///
    /// # Warning
    /// Only turn this off for local development over plain http: without `Secure` the
    /// session cookie is sent over unencrypted connections.
    pub fn secure(mut self, secure: bool) -> Self {
        self.config.cookie_secure = secure;
        self
    }

    /// A `Domain` for the cookies, to share them with subdomains (default none).
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.config.cookie_domain = Some(domain.into());
        self
    }

    /// The `SameSite` attribute (default `Lax`).
    pub fn same_site(mut self, same_site: SameSite) -> Self {
        self.config.same_site = same_site;
        self
    }

    /// Where time comes from (default the system clock); tests pass a
    /// [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// A secondary tier (Redis) in front of the store: primary + secondary mode.
    ///
    /// Reads ask it first and fall back to the store (copying what they find back into
    /// it); sign-ins and refreshes commit to the store first, then write through. The
    /// store stays the source of truth: if the secondary is down, requests are served
    /// from the store and nobody is signed out. Revocations fail while it is down (they
    /// could not stop it serving the session). For Redis alone, pass the
    /// [`RedisStorage`](crate::secondary::RedisStorage) to
    /// [`SessionManager::builder`] instead (secondary-only mode).
    ///
    /// ```
    /// use tower_auth_session::{MemoryStore, SessionManager};
    /// # #[cfg(feature = "redis")]
    /// # {
    /// use tower_auth_session::secondary::RedisStorage;
    ///
    /// let redis = RedisStorage::builder("redis://127.0.0.1:6379").build()?;
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secondary_storage(redis)
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .build()?;
    /// # let _ = manager;
    /// # }
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn secondary_storage(mut self, secondary: impl SecondaryStorage) -> Self {
        // The cookie cache shares its revocations through the same Redis, unless
        // `cookie_cache_redis` already chose one.
        #[cfg(feature = "redis")]
        if self.cookie_cache.redis.is_none() {
            self.cookie_cache.redis = redis_for_cache_revocations(&secondary);
        }
        self.secondary = Some(Arc::new(secondary));
        self
    }

    /// Whether to record the client's IP address and user agent (default `true`).
    pub fn track_client(mut self, track: bool) -> Self {
        self.tracking.disabled = !track;
        self
    }

    /// Proxies whose `X-Forwarded-For` is believed (default none: the socket peer is the
    /// client).
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = IpNet>) -> Self {
        self.tracking.trusted_proxies = proxies.into_iter().collect();
        self
    }

    /// Turns the `session_data` cookie cache on or off (default off).
    ///
    /// With the cache on, the session is also sent as a signed cookie that lives
    /// `max_age` (default 5 minutes, see [`cookie_cache_max_age`](Self::cookie_cache_max_age));
    /// a request that brings a valid one is resolved without any store or Redis call. The
    /// cache is bound to the session token, checked against its own expiry on every read,
    /// and a revocation (sign-out, [`SessionManager::revoke`], [`SessionManager::revoke_user`])
    /// stops this process from believing it at once. Sensitive handlers bypass it with
    /// [`SessionHandle::authoritative`](crate::SessionHandle::authoritative).
    ///
    /// # Warning
    /// Without Redis, revocation reaches only the caches of the process that revoked. Run
    /// one instance, or give every instance the same Redis: a
    /// [`RedisStorage`](crate::secondary::RedisStorage) passed to
    /// [`secondary_storage`](Self::secondary_storage) (or used as the store) carries
    /// revocations by itself, otherwise add
    /// [`cookie_cache_redis`](Self::cookie_cache_redis). Several instances over a shared
    /// database alone would each believe a revoked session's cache for up to `max_age`.
    ///
    /// ```
    /// use tower_auth_session::{MemoryStore, SessionManager};
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .cookie_cache(true)
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn cookie_cache(mut self, enabled: bool) -> Self {
        self.cookie_cache.enabled = enabled;
        self
    }

    /// How long a cookie cache is believed (default 5 minutes, at most 1 day); a non-zero
    /// value also turns the cache on, zero turns it off (as `SESSION_COOKIE_CACHE_MAX_AGE`
    /// does in the example server).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_auth_session::{MemoryStore, SessionManager};
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .cookie_cache_max_age(Duration::from_secs(60))
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn cookie_cache_max_age(mut self, max_age: std::time::Duration) -> Self {
        self.cookie_cache.enabled = !max_age.is_zero();
        if !max_age.is_zero() {
            self.cookie_cache.max_age = max_age;
        }
        self
    }

    /// A version string bound into every cache (default empty, at most 255 bytes): change
    /// it in a deploy that changes what sessions mean, and every older cache is ignored.
    ///
    /// ```
    /// use tower_auth_session::{MemoryStore, SessionManager};
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .cookie_cache(true)
    ///     .cookie_cache_version("2026-11-28")
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn cookie_cache_version(mut self, version: impl Into<String>) -> Self {
        self.cookie_cache.version = version.into();
        self
    }

    /// Encrypts the cache with AES-256-GCM instead of only signing it (default off), so
    /// the browser cannot read the session's user id, IP address, user agent or app
    /// fields. Costs 8 bytes more per cache than the MAC and about a microsecond per read.
    ///
    /// ```
    /// use tower_auth_session::{MemoryStore, SessionManager};
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .cookie_cache(true)
    ///     .cookie_cache_encryption(true)
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn cookie_cache_encryption(mut self, encrypted: bool) -> Self {
        self.cookie_cache.encrypted = encrypted;
        self
    }

    /// Shares cookie cache revocations with every other instance through the Redis at
    /// `url` (keys and channels under `key_prefix`, e.g. `tas:v1:`), so that a revoke on
    /// one instance stops all of them from believing that session's caches before it
    /// returns. Needed whenever more than one instance runs with the cookie cache on and
    /// Redis is not already their secondary tier or store (a
    /// [`RedisStorage`](crate::secondary::RedisStorage) given to the builder is used for
    /// this automatically; this method overrides it).
    ///
    /// Each instance then trusts caches only under a 2-second lease it renews in Redis:
    /// while Redis is unreachable, requests fall back to the stores instead of believing
    /// caches, and a revoke that cannot reach Redis returns an error. After (re)connecting,
    /// caches issued before the reconnection are read from the store once. The manager
    /// starts its lease on the Tokio runtime it is built (or first used) in.
    ///
    /// ```
    /// use tower_auth_session::{MemoryStore, SessionManager};
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .cookie_cache(true)
    ///     .cookie_cache_redis("redis://127.0.0.1:6379", "myapp:v1:")
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn cookie_cache_redis(self, url: &str, key_prefix: impl Into<String>) -> Self {
        let key_prefix = key_prefix.into();
        let client = redis::Client::open(url).map_err(|e| ConfigError::Invalid {
            option: "cookie_cache_redis",
            reason: e.to_string(),
        });
        let client = client.and_then(|client| {
            if key_prefix.is_empty() {
                Err(ConfigError::Invalid {
                    option: "cookie_cache_redis",
                    reason: "the key prefix must not be empty".into(),
                })
            } else {
                Ok(client)
            }
        });
        self.record(client, |b, client| {
            b.cookie_cache.redis = Some((client, key_prefix));
        })
    }

    /// Caps how many live sessions one user may have: a sign-in that goes over revokes
    /// that user's oldest sessions (default: no cap).
    ///
    /// ```
    /// use tower_auth_session::{MemoryStore, SessionManager};
    ///
    /// // At most three devices per user; the fourth sign-in ends the oldest.
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .max_sessions_per_user(3)
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn max_sessions_per_user(mut self, max: usize) -> Self {
        self.config.max_sessions_per_user = Some(max);
        self
    }

    /// Origins (`scheme://host[:port]`) allowed to make state-changing requests to the
    /// session endpoints (see [`SessionManager::is_cross_site`]). Default: none, which
    /// allows only same-origin requests (an `Origin` that matches the `Host` header).
    ///
    /// ```
    /// use tower_auth_session::{MemoryStore, SessionManager};
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .trusted_origins(["https://app.example.com", "http://localhost:3000"])
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    ///
    /// # Warning
    /// Every origin listed here can act on a signed-in user's behalf with the user's
    /// cookies. List only your own front ends, never a wildcard.
    pub fn trusted_origins<I, S>(self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let origins = TrustedOrigins::parse(origins);
        self.record(origins, |b, origins| b.config.trusted_origins = origins)
    }

    /// How many lifecycle events a [`subscribe`](SessionManager::subscribe)r may fall
    /// behind before it misses some (default 1024).
    ///
    /// ```
    /// use tower_auth_session::{MemoryStore, SessionManager};
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .event_capacity(16 * 1024)
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// Checks the configuration and builds the manager.
    pub fn build(mut self) -> Result<SessionManager, ConfigError> {
        if let Some(error) = self.errors.drain(..).next() {
            return Err(error);
        }
        let keys = self.keys.ok_or(ConfigError::MissingKeys)?;
        let config = self.config;
        let invalid = |option, reason: &str| {
            Err(ConfigError::Invalid {
                option,
                reason: reason.to_owned(),
            })
        };
        if config.expires_in <= Duration::zero() {
            return invalid("expires_in", "must be positive");
        }
        if config.dont_remember_expires_in <= Duration::zero() {
            return invalid("dont_remember_expires_in", "must be positive");
        }
        if config.max_lifetime.is_some_and(|m| m <= Duration::zero()) {
            return invalid("max_lifetime", "must be positive");
        }
        if config.cookie_prefix.is_empty()
            || !config
                .cookie_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid("cookie_prefix", "must be non-empty [A-Za-z0-9_-]");
        }
        if let Some(domain) = &config.cookie_domain {
            if domain.is_empty()
                || !domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return invalid("cookie_domain", "must be a host name");
            }
        }
        if config.max_sessions_per_user == Some(0) {
            return invalid("max_sessions_per_user", "must be at least 1");
        }
        if self.event_capacity == 0 {
            return invalid("event_capacity", "must be at least 1");
        }
        if config.same_site == SameSite::None && !config.cookie_secure {
            return invalid("same_site", "SameSite=None requires Secure");
        }
        let names = CookieNames::new(&config);
        let cookie_cache = self.cookie_cache.build(&config, &names, &self.clock)?;
        Ok(SessionManager {
            inner: Arc::new(ManagerInner {
                config,
                keys,
                names,
                store: self.store,
                secondary: self.secondary,
                clock: self.clock,
                tracking: self.tracking,
                refresh_gate: RefreshGate::default(),
                cookie_cache,
                events: EventBus::new(self.event_capacity),
            }),
        })
    }
}
