//! [`SessionManagerBuilder`]: every option, checked once by [`build`](SessionManagerBuilder::build).

use std::sync::Arc;

use chrono::Duration;
use ipnet::IpNet;

use super::lifecycle::BanList;
use super::resolve::RefreshGate;
use super::{Impersonation, ManagerInner, SessionManager, UserLoader};
use crate::client::{AddressHook, ClientTracking};
use crate::clock::{Clock, SystemClock};
use crate::config::{AuthTokenHeader, SameSite, SessionConfig, TokenTransport};
use crate::cookie_cache::CookieCache;
use crate::cookies::CookieNames;
use crate::error::ConfigError;
use crate::events::{DEFAULT_EVENT_CAPACITY, EventBus};
use crate::field_policy::FieldPolicy;
use crate::hooks::Hooks;
use crate::origin::TrustedOrigins;
use crate::secondary::SecondaryStorage;
use crate::store::SessionStore;
use crate::token::{KeyRing, TokenHash};

/// Configures a [`SessionManager`]. Mistakes are reported by [`build`](Self::build).
#[must_use]
pub struct SessionManagerBuilder {
    store: Arc<dyn SessionStore>,
    secondary: Option<Arc<dyn SecondaryStorage>>,
    keys: Option<KeyRing>,
    config: SessionConfig,
    clock: Arc<dyn Clock>,
    tracking: ClientTracking,
    cookie_cache: Option<CookieCache>,
    /// The revocation bus the secondary tier or the store offers (their
    /// `cache_revocation_bus`), for the cookie cache.
    offered_bus: Option<crate::CacheRevocationBus>,
    event_capacity: usize,
    user_loader: Option<UserLoader>,
    field_policy: FieldPolicy,
    impersonation: Option<Impersonation>,
    multi_session: usize,
    pub(super) hooks: Hooks,
    pub(super) bans: Option<Arc<dyn BanList>>,
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
    pub(super) fn new(store: impl SessionStore) -> Self {
        // Secondary-only mode: the same Redis carries cookie cache revocations.
        let offered_bus = store.cache_revocation_bus();
        Self {
            store: Arc::new(store),
            secondary: None,
            keys: None,
            config: SessionConfig::default(),
            clock: Arc::new(SystemClock),
            tracking: ClientTracking::default(),
            cookie_cache: None,
            offered_bus,
            event_capacity: DEFAULT_EVENT_CAPACITY,
            user_loader: None,
            field_policy: FieldPolicy::new(),
            impersonation: None,
            hooks: Hooks::default(),
            bans: None,
            multi_session: 0,
            errors: Vec::new(),
        }
    }

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

    /// No writes on safe methods (Better Auth's `deferSessionRefresh`): a GET, HEAD,
    /// OPTIONS or TRACE never writes to the store or Redis nor moves the cookies' expiry;
    /// a due refresh shows as [`SessionHandle::needs_refresh`](crate::SessionHandle::needs_refresh)
    /// (`needsRefresh` in `get-session`) and the next unsafe request makes it. With it, a
    /// read-only replica can serve every lookup (see docs/DEPLOYING.md). For one request
    /// of any method, see [`NoRefresh`](crate::NoRefresh).
    pub fn defer_refresh(mut self, defer: bool) -> Self {
        self.config.defer_refresh = defer;
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
        // The cookie cache shares its revocations through the same Redis (unless
        // `CookieCache::redis` chose another). Asked of the tier, so a wrapper forwards it.
        if let Some(bus) = secondary.cache_revocation_bus() {
            self.offered_bus = Some(bus);
        }
        self.secondary = Some(Arc::new(secondary));
        self
    }

    /// Whether to record the client's IP address and user agent (default `true`).
    pub fn track_client(mut self, track: bool) -> Self {
        self.tracking.disabled = !track;
        self
    }

    /// How to find the client's socket address in the request extensions, for servers the
    /// crate does not know (a custom acceptor, a Unix socket proxy header, …). Asked
    /// first; when it returns `None` the built-in sources are tried: axum's
    /// `ConnectInfo<SocketAddr>`, a bare `SocketAddr` (what a hyper app inserts), and with
    /// feature `tonic` tonic's `TcpConnectInfo`. [`trusted_proxies`](Self::trusted_proxies)
    /// then applies to the address it gives.
    ///
    /// The layer reads the extensions when the request reaches it: whatever inserts the
    /// address must run *outside* (before) the session layer.
    ///
    /// ```
    /// use std::net::{IpAddr, SocketAddr};
    /// use tower_auth_session::{MemoryStore, SessionManager};
    ///
    /// /// What our acceptor puts in the extensions.
    /// #[derive(Clone)]
    /// struct Peer(SocketAddr);
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .client_address(|extensions: &http::Extensions| {
    ///         extensions.get::<Peer>().map(|peer| peer.0.ip())
    ///     })
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn client_address(
        mut self,
        hook: impl Fn(&http::Extensions) -> Option<std::net::IpAddr> + Send + Sync + 'static,
    ) -> Self {
        self.tracking.address_hook = Some(AddressHook(Arc::new(hook)));
        self
    }

    /// Proxies whose `X-Forwarded-For` is believed (default none: the socket peer is the
    /// client).
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = IpNet>) -> Self {
        self.tracking.trusted_proxies = proxies.into_iter().collect();
        self
    }

    /// Turns the `session_data` cookie cache on (default off), with its settings.
    ///
    /// With the cache on, the session is also sent as a signed cookie that lives
    /// [`max_age`](CookieCache::max_age) (default 5 minutes); a request that brings a valid
    /// one is resolved without any store or Redis call. The cache is bound to the session
    /// token, checked against its own expiry on every read, and a revocation (sign-out,
    /// [`SessionManager::revoke`], [`SessionManager::revoke_user`]) stops this process
    /// from believing it at once. Sensitive handlers bypass it with
    /// [`SessionHandle::authoritative`](crate::SessionHandle::authoritative).
    ///
    /// # Warning
    /// Without Redis, revocation reaches only the caches of the process that revoked. Run
    /// one instance, or give every instance the same Redis: a
    /// [`RedisStorage`](crate::secondary::RedisStorage) passed to
    /// [`secondary_storage`](Self::secondary_storage) (or used as the store) carries
    /// revocations by itself, otherwise add [`CookieCache::redis`]. Several instances over
    /// a shared database alone would each believe a revoked session's cache for up to
    /// `max_age`.
    ///
    /// ```
    /// use tower_auth_session::{CookieCache, MemoryStore, SessionManager};
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .cookie_cache(CookieCache::new())
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn cookie_cache(mut self, cache: CookieCache) -> Self {
        self.cookie_cache = Some(cache);
        self
    }

    /// Caps how many live sessions one user may have: a sign-in that goes over revokes
    /// that user's oldest sessions. **Default: 100**, so a client signing in in a loop
    /// cannot grow one user's sessions — and the cost of listing or revoking them — without
    /// bound. `None` lifts the cap; 0 is a configuration error.
    ///
    /// ```
    /// use tower_auth_session::{MemoryStore, SessionManager};
    ///
    /// // At most three devices per user; the fourth sign-in ends the oldest.
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .max_sessions_per_user(3)
    ///     .build()?;
    /// // No cap at all (the app bounds sessions some other way).
    /// let unlimited = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .max_sessions_per_user(None)
    ///     .build()?;
    /// # let _ = (manager, unlimited);
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn max_sessions_per_user(mut self, max: impl Into<Option<usize>>) -> Self {
        self.config.max_sessions_per_user = max.into();
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

    /// Which ways a client may carry its token (default
    /// [`TokenTransport::CookiesAndBearer`]).
    ///
    /// - `CookiesAndBearer`: the `session_token` cookie, or `Authorization: Bearer <signed
    ///   token>`; when a request carries both, the bearer token wins (explicit beats
    ///   ambient). An `Authorization` value that is not one of our signed tokens (a
    ///   gateway's JWT, another scheme) is ignored: the cookie decides.
    /// - `CookiesOnly`: browsers only; `Authorization` is never read, so a leaked
    ///   `set-auth-token` value cannot be replayed outside a cookie jar.
    /// - `BearerOnly`: APIs, mobile apps and gRPC; cookies are never read and no response
    ///   ever carries `Set-Cookie`. Clients get their token from `set-auth-token`, so
    ///   [`AuthTokenHeader::Never`] and the cookie cache are configuration errors here.
    ///
    /// ```
    /// use tower_auth_session::{MemoryStore, SessionManager, TokenTransport};
    ///
    /// let api = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .token_transport(TokenTransport::BearerOnly)
    ///     .build()?;
    /// # let _ = api;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn token_transport(mut self, transport: TokenTransport) -> Self {
        self.config.token_transport = transport;
        self
    }

    /// When sign-in (and [`rotate`](crate::SessionHandle::rotate)) hand the signed token
    /// to the client in a `set-auth-token` response header, named in
    /// `Access-Control-Expose-Headers` (default [`AuthTokenHeader::Always`], as Better
    /// Auth's bearer plugin does).
    ///
    /// # Warning
    /// The header hands the same credential that the `HttpOnly` cookie hides to any script
    /// on a page that can read the response (a cross-site-scripting bug then steals the
    /// session, not just uses it). Browser-only apps should choose
    /// [`AuthTokenHeader::Never`] (and [`TokenTransport::CookiesOnly`]);
    /// [`AuthTokenHeader::OnRequest`] gives the token only to clients that ask for it with
    /// an [`x-want-auth-token`](crate::WANT_AUTH_TOKEN) request header or that already
    /// authenticate with a bearer token.
    ///
    /// ```
    /// use tower_auth_session::{AuthTokenHeader, MemoryStore, SessionManager};
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .auth_token_header(AuthTokenHeader::OnRequest)
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn auth_token_header(mut self, policy: AuthTokenHeader) -> Self {
        self.config.auth_token_header = policy;
        self
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

    /// How `get-session` (and [`SessionManager::load_user`]) finds the signed-in user:
    /// an async function from user id to the user's JSON (`Ok(None)`: no such user, and
    /// `get-session` answers `null`; an error: 503). It is called only where a user is
    /// asked for, never on every request. Without one, the user is `{"id": userId}`.
    ///
    /// ```
    /// use serde_json::json;
    /// use tower_auth_session::{MemoryStore, SessionManager, StoreError};
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .user_loader(|user_id: String| async move {
    ///         // Look the user up in the app's own database here.
    ///         Ok::<_, StoreError>(Some(json!({ "id": user_id, "name": "Alice" })))
    ///     })
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn user_loader<F, Fut>(mut self, loader: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Option<serde_json::Value>, crate::StoreError>>
            + Send
            + 'static,
    {
        self.user_loader = Some(Arc::new(move |user_id| Box::pin(loader(user_id))));
        self
    }

    /// Which app fields a request may write (`POST /update-session`,
    /// [`SessionHandle::update_fields_from_client`](crate::SessionHandle::update_fields_from_client)).
    /// The default, [`FieldPolicy::new()`], lets a request write no field until the app
    /// declares it [`client_writable`](FieldPolicy::client_writable): a field the server
    /// decides with must never be one a browser can set. Server code is not bound by it.
    /// A declared name that is not a valid app field name (or is a built-in one) fails
    /// [`build`](Self::build).
    ///
    /// ```
    /// use tower_auth_session::{FieldAccess, FieldPolicy, MemoryStore, SessionManager};
    ///
    /// // Every field but `role` and `plan` is a preference the browser may set.
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .field_policy(
    ///         FieldPolicy::new()
    ///             .undeclared(FieldAccess::Client)
    ///             .server_only("role")
    ///             .server_only("plan"),
    ///     )
    ///     .build()?;
    /// # let _ = manager;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn field_policy(mut self, policy: FieldPolicy) -> Self {
        self.field_policy = policy;
        self
    }

    /// Turns on impersonation ([`SessionHandle::impersonate`](crate::SessionHandle::impersonate),
    /// and `POST /admin/impersonate-user` / `/admin/stop-impersonating` on
    /// [`router`](SessionManager::router)): see [`Impersonation`].
    pub fn impersonation(mut self, impersonation: Impersonation) -> Self {
        self.impersonation = Some(impersonation);
        self
    }

    /// Lets one browser hold up to `max` signed-in accounts (Better Auth's
    /// `multiSession` plugin; 0, the default, is one account as usual). A sign-in keeps
    /// the accounts already signed in, each in a signed cookie of its own, and the new one
    /// becomes the active one — the session the layer resolves, so handlers and
    /// extractors see only it. Past `max`, the oldest is signed out. Sign-out signs out
    /// every account. [`router`](SessionManager::router) adds the
    /// `/multi-session/*` routes.
    ///
    /// ```
    /// use tower_auth_session::{MemoryStore, SessionManager};
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .multi_session(2)
    ///     .build()
    ///     .unwrap();
    /// # let _ = manager;
    /// ```
    pub fn multi_session(mut self, max: usize) -> Self {
        self.multi_session = max;
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
        if let Some(name) = self.field_policy.declared_names().find(|name| {
            let mut probe = serde_json::Map::new();
            probe.insert((*name).to_owned(), serde_json::Value::Null);
            crate::session::check_app_fields(&probe).is_err()
        }) {
            return Err(ConfigError::Invalid {
                option: "field_policy",
                reason: format!("{name:?} is not an app field name (or is a built-in one)"),
            });
        }
        if self
            .impersonation
            .as_ref()
            .is_some_and(|i| i.expires_in.is_zero() || i.expires_in > MAX_OPTION_DURATION)
        {
            return invalid(
                "impersonation",
                "expires_in must be positive and under 1000 years",
            );
        }
        if self.event_capacity == 0 {
            return invalid("event_capacity", "must be at least 1");
        }
        if config.same_site == SameSite::None && !config.cookie_secure {
            return invalid("same_site", "SameSite=None requires Secure");
        }
        if config.token_transport == TokenTransport::BearerOnly {
            if config.auth_token_header == AuthTokenHeader::Never {
                return invalid(
                    "auth_token_header",
                    "bearer-only clients get their token from set-auth-token; Never leaves them none",
                );
            }
            if self.cookie_cache.is_some() {
                return invalid("cookie_cache", "bearer-only mode sets no cookies");
            }
        }
        let names = CookieNames::new(&config);
        let cookie_cache = match self.cookie_cache {
            Some(cache) => cache.build(&config, &names, &self.clock, self.offered_bus)?,
            None => None,
        };
        // A store in this process serves one instance; any other may be shared by several,
        // whose caches would then not hear of each other's revocations.
        let in_process = self.store.find_in_process(&TokenHash([0; 32])).is_some();
        if cookie_cache
            .as_ref()
            .is_some_and(|cache| !cache.shares_revocations())
            && !in_process
        {
            tracing::warn!(
                "cookie cache on without a cross-instance revocation bus: if several instances \
                 share this store, a revoke on one leaves the others believing their caches for \
                 up to max_age; give the builder a RedisStorage (a wrapper must forward \
                 cache_revocation_bus) or use CookieCache::redis"
            );
        }
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
                pending: Default::default(),
                user_loader: self.user_loader,
                field_policy: self.field_policy,
                impersonation: self.impersonation,
                multi_session: self.multi_session,
                hooks: self.hooks,
                bans: self.bans,
            }),
        })
    }
}
