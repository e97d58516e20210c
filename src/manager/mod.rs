//! [`SessionManager`]: the app-wide handle that holds configuration, keys and stores,
//! builds the layer, and answers admin calls outside a request.
//!
//! The upper layer of the crate (see `docs/ARCHITECTURE.md`): it may use everything
//! below it (stores, tiers, the cookie cache, tokens) and nothing above it (handle,
//! layer, extractors, routes).
//!
//! - `builder`: every option, checked once;
//! - `resolve`: from a verified token hash to a live session (lazy expiry, the refresh);
//! - `tiers`: reading Redis before the store, copying store reads back;
//! - `write`: the conditional write of a session's next generation;
//! - `revoke`: the one path by which a session ends early;
//! - `lifecycle`: the before-hooks and bans;
//! - `limits`: the per-user session cap;
//! - `pages`: a user's sessions one page at a time;
//! - `cleanup`: the expired-session sweeper.

use std::sync::Arc;

use http::HeaderMap;
use tokio::sync::broadcast;

use crate::client::ClientTracking;
use crate::clock::Clock;
use crate::config::SessionConfig;
use crate::cookie_cache::CacheTier;
use crate::cookies::CookieNames;
use crate::error::{SessionError, StoreError};
use crate::events::{EventBus, RevokeReason, SessionEvent};
use crate::request_token::{PresentedToken, presented_token, verified_bearer};
use crate::secondary::SecondaryStorage;
use crate::session::Session;
use crate::store::SessionStore;
use crate::token::KeyRing;

mod builder;
mod cleanup;
mod fields;
mod identities;
mod lifecycle;
mod limits;
mod pages;
mod pending;
mod resolve;
mod revoke;
mod tiers;
mod write;

pub use builder::SessionManagerBuilder;
pub use cleanup::CleanupTask;
pub(crate) use fields::merge_fields;
pub use identities::Impersonation;
pub(crate) use lifecycle::RefreshCheck;
pub use lifecycle::{BanList, MemoryBanList};
pub use pages::SessionPage;
pub(crate) use pending::revoke_later;
pub(crate) use resolve::{InProcess, LiveSession, Resolved};
pub(crate) use revoke::RevokeTarget;
use tiers::Lookup;
pub(crate) use tiers::Mirrored;
pub(crate) use write::Written;

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
    pub(crate) refresh_gate: resolve::RefreshGate,
    /// The `session_data` cookie cache, when turned on.
    pub(crate) cookie_cache: Option<CacheTier>,
    pub(crate) events: EventBus,
    /// Revocations owed to sign-outs that could not reach a tier.
    pub(crate) pending: pending::PendingRevocations,
    /// The app's function from user id to the user's JSON, for `get-session`.
    pub(crate) user_loader: Option<UserLoader>,
    /// Which app fields a request may write.
    pub(crate) field_policy: crate::field_policy::FieldPolicy,
    /// Who may impersonate whom, when turned on.
    pub(crate) impersonation: Option<Impersonation>,
    /// How many accounts one browser may hold (0: one, as without the feature).
    pub(crate) multi_session: usize,
    /// The app's before-hooks.
    pub(crate) hooks: crate::hooks::Hooks,
    /// Who is banned, when bans are on.
    pub(crate) bans: Option<Arc<dyn BanList>>,
}

impl ManagerInner {
    /// Whether the layer keeps the request's `Cookie` headers for the routes that read
    /// cookies beyond the session's own (other accounts, the admin's kept-aside session).
    pub(crate) fn keeps_cookie_headers(&self) -> bool {
        self.multi_session > 0 || self.impersonation.is_some()
    }
}

/// The app's user loader, as the builder stored it.
pub(crate) type UserLoader = Arc<
    dyn Fn(
            String,
        )
            -> crate::store::BoxFuture<'static, Result<Option<serde_json::Value>, StoreError>>
        + Send
        + Sync,
>;

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
        SessionManagerBuilder::new(store)
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

    /// Waits (at most `within`) until this instance believes cookie caches: at once
    /// without Redis, else until its first lease is live (a few milliseconds when Redis
    /// answers). Await it before serving, so that no request in the first moments after
    /// start pays a store read for a valid cache; `false` if the lease did not come in
    /// time (requests then read the stores until it does, which is safe).
    ///
    /// ```
    /// # async fn demo(manager: tower_auth_session::SessionManager) {
    /// use std::time::Duration;
    /// if !manager.cookie_cache_ready(Duration::from_secs(2)).await {
    ///     eprintln!("cookie cache not trusted yet; serving from the stores");
    /// }
    /// # }
    /// ```
    pub async fn cookie_cache_ready(&self, within: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.inner.cookie_cache.is_none() || self.cookie_cache_active() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
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
        let inner = &self.inner;
        let transport = inner.config.token_transport;
        let hash = match presented_token(&inner.keys, &inner.names, transport, headers) {
            PresentedToken::Valid { token, .. } => token.hash(),
            _ => return Ok(None),
        };
        let now = inner.clock.now();
        let (session, cached) = match inner.lookup(&hash).await {
            Lookup::Found { session, cached } => (session, cached),
            Lookup::Missing => return Ok(None),
            Lookup::Unavailable => {
                return Err(StoreError::new("session store unavailable").into());
            }
        };
        if session.is_expired(now) {
            inner.drop_expired(&hash).await?;
            return Ok(None);
        }
        if !cached && inner.mirror(&hash, &session, None).await == Mirrored::Revoked {
            return Ok(None);
        }
        Ok(Some(session))
    }

    /// A user's live sessions, oldest first.
    pub async fn list_user_sessions(&self, user_id: &str) -> Result<Vec<Session>, SessionError> {
        let now = self.inner.clock.now();
        Ok(self.inner.store.list_by_user(user_id, now).await?)
    }

    /// Revokes one session by its public id. Returns whether it existed.
    pub async fn revoke(&self, session_id: &str) -> Result<bool, SessionError> {
        let target = RevokeTarget::Session {
            id: session_id,
            owner: None,
        };
        let revoked = self.inner.revoke(target, RevokeReason::ByAdmin).await?;
        revoked.complete?;
        Ok(!revoked.sessions.is_empty())
    }

    /// Revokes every session of a user (after a password reset, an account lock, …).
    /// Returns how many were revoked.
    pub async fn revoke_user(&self, user_id: &str) -> Result<usize, SessionError> {
        let target = RevokeTarget::User {
            user_id,
            except: None,
        };
        let revoked = self.inner.revoke(target, RevokeReason::ByAdmin).await?;
        revoked.complete?;
        Ok(revoked.sessions.len())
    }

    /// Revokes every session of a user but `keep_session_id`. Returns how many were revoked.
    pub async fn revoke_user_except(
        &self,
        user_id: &str,
        keep_session_id: &str,
    ) -> Result<usize, SessionError> {
        let target = RevokeTarget::User {
            user_id,
            except: Some(keep_session_id),
        };
        let revoked = self.inner.revoke(target, RevokeReason::ByAdmin).await?;
        revoked.complete?;
        Ok(revoked.sessions.len())
    }

    /// The user `user_id` names, as the app's
    /// [`user_loader`](SessionManagerBuilder::user_loader) returns it: `Ok(None)` when
    /// there is no such user. Without a loader, `{"id": user_id}`.
    pub async fn load_user(&self, user_id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        match &self.inner.user_loader {
            Some(loader) => loader(user_id.to_owned()).await,
            None => Ok(Some(serde_json::json!({ "id": user_id }))),
        }
    }

    /// How many revocations this instance still owes: sign-outs (or sign-ins replacing a
    /// session) whose revoke could not reach a tier and is being retried in the
    /// background. For health checks; zero in normal operation.
    pub fn pending_revocations(&self) -> usize {
        self.inner.pending.len()
    }

    /// Deletes sessions that have expired, in batches of 1000; returns how many.
    pub async fn delete_expired(&self) -> Result<u64, SessionError> {
        Ok(self.inner.sweep_expired().await?)
    }

    /// Whether `session` was authenticated less than `fresh_age` ago (default one day).
    ///
    /// Freshness runs from `authenticated_at` (set by sign-in and by
    /// [`SessionHandle::reauthenticate`](crate::SessionHandle::reauthenticate)), not from
    /// the last refresh: a session kept alive for weeks is live, but not fresh.
    ///
    /// ```
    /// use tower_auth_session::SessionHandle;
    ///
    /// async fn change_email(session: SessionHandle) -> &'static str {
    ///     match session.authoritative().await {
    ///         Ok(Some(current)) if session.manager().is_fresh(&current) => "changed",
    ///         Ok(Some(_)) => "please enter your password again",
    ///         _ => "please sign in",
    ///     }
    /// }
    /// # let _ = change_email;
    /// ```
    pub fn is_fresh(&self, session: &Session) -> bool {
        let inner = &self.inner;
        inner.clock.now() - session.authenticated_at < inner.config.fresh_age
    }

    /// Whether `origin` (an `Origin` header's bytes) is one of the
    /// [`trusted_origins`](SessionManagerBuilder::trusted_origins) (CORS).
    pub fn is_trusted_origin(&self, origin: &[u8]) -> bool {
        std::str::from_utf8(origin)
            .is_ok_and(|origin| self.inner.config.trusted_origins.trusts(origin))
    }

    /// Whether a state-changing request must be refused as cross-site: its `Origin` is
    /// present and not trusted, or `Sec-Fetch-Site` says `cross-site`.
    ///
    /// Requests with neither header (non-browser clients) pass, and so do requests
    /// authenticated by one of *our* bearer tokens (a browser never attaches one by
    /// itself): the `Authorization: Bearer` value must carry a valid MAC under this
    /// manager's keys, and the [`TokenTransport`](crate::TokenTransport) must read bearer
    /// tokens. Any other `Authorization` (a gateway's JWT, another scheme) exempts nothing.
    /// With no trusted origins configured, an `Origin` passes only when it names the
    /// request's own `Host` (same-origin). The endpoints of [`router`](SessionManager::router)
    /// apply this to every POST; apply it to the app's own sign-in with the
    /// [`CrossSiteGuard`](crate::CrossSiteGuard) extractor, or
    /// [`SessionHandle::check_cross_site`](crate::SessionHandle::check_cross_site) outside axum.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use tower_auth_session::{MemoryStore, SessionManager};
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .trusted_origins(["https://app.example.com"])
    ///     .build()?;
    /// let mut headers = HeaderMap::new();
    /// headers.insert("origin", "https://evil.example".parse().unwrap());
    /// assert!(manager.is_cross_site(&headers));
    /// // A bearer value that is not ours does not exempt the request.
    /// headers.insert("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig".parse().unwrap());
    /// assert!(manager.is_cross_site(&headers));
    /// headers.insert("origin", "https://app.example.com".parse().unwrap());
    /// assert!(!manager.is_cross_site(&headers));
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn is_cross_site(&self, headers: &HeaderMap) -> bool {
        let inner = &self.inner;
        // Judged exactly as the layer judges a bearer token: only a value the layer would
        // accept as ours (signature checked, transport reading bearer tokens) exempts.
        let transport = inner.config.token_transport;
        let bearer = verified_bearer(&inner.keys, &inner.names, transport, headers).is_some();
        self.cross_site(headers, bearer)
    }

    /// [`is_cross_site`](Self::is_cross_site) when the layer has already decided whether
    /// the request was authenticated by our bearer token.
    pub(crate) fn cross_site(&self, headers: &HeaderMap, authenticated_by_bearer: bool) -> bool {
        let trusted = &self.inner.config.trusted_origins;
        crate::origin::is_cross_site(trusted, headers, authenticated_by_bearer)
    }

    /// Subscribes to lifecycle events from now on: created, refreshed, reauthenticated,
    /// rotated, revoked (with a reason), expired.
    ///
    /// Events are delivered to every receiver; a receiver that falls more than the
    /// channel's capacity behind (see
    /// [`SessionManagerBuilder::event_capacity`](crate::SessionManagerBuilder::event_capacity))
    /// gets `Lagged` and skips ahead, it never slows requests down.
    ///
    /// ```
    /// use tower_auth_session::{MemoryStore, SessionEvent, SessionManager};
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .build()?;
    /// let mut events = manager.subscribe();
    /// tokio::spawn(async move {
    ///     while let Ok(event) = events.recv().await {
    ///         if let SessionEvent::Revoked { session, reason } = event {
    ///             println!("{} lost session {} ({reason:?})", session.user_id, session.id);
    ///         }
    ///     }
    /// });
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner.events.subscribe()
    }
}
