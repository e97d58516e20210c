//! [`SessionHandle`]: the per-request view of the session, and what the response must set.
//!
//! The layer puts one handle in the request extensions. Handlers read the session from it
//! and call [`sign_in`](SessionHandle::sign_in) / [`sign_out`](SessionHandle::sign_out);
//! the handle records which cookies the response has earned, and the layer writes them
//! when the inner service answers. The lock is never held across an `.await`.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, header};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::client::ClientFacts;
use crate::config::AuthTokenHeader;
use crate::cookie_cache::{
    CacheCookies, CacheHit, CacheIssue, CacheState, CacheWrite, SealedSession,
};
use crate::cookies::{Lifetime, scrub_set_cookies, set_cookie};
use crate::error::SessionError;
use crate::error::chain;
use crate::events::{RevokeReason, SessionEvent};
use crate::manager::{
    LiveSession, ManagerInner, Resolved, RevokeTarget, SessionManager, revoke_later,
};
use crate::rejection::{RejectionReason, SessionRejection};
use crate::request_token::TokenSource;
use crate::session::{IMPERSONATED_BY, Session, check_app_fields};
use crate::token::{Token, TokenHash};

/// Response header that carries the signed token to clients without cookies.
pub const SET_AUTH_TOKEN: &str = "set-auth-token";

/// Longest user id accepted.
const MAX_USER_ID_LEN: usize = 255;

/// Whether the server side of a sign-out is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokeStatus {
    /// Revoked in every tier and every instance's cookie cache.
    Complete,
    /// The browser's cookies are cleared, but a tier could not be reached: the server
    /// finishes the revoke by itself once it answers. Until then another client holding
    /// the same token may still be served by other instances.
    Pending,
}

/// Options for [`SessionHandle::sign_in`].
///
/// ```
/// use tower_auth_session::SignInOptions;
/// let options = SignInOptions::new().remember_me(false);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SignInOptions {
    remember_me: bool,
    fields: Map<String, Value>,
    lifetime: Option<std::time::Duration>,
    /// Keep the session the request came with instead of revoking it (another account
    /// beside it, an impersonation that returns to it).
    pub(crate) keep_current: bool,
}

impl Default for SignInOptions {
    fn default() -> Self {
        Self {
            remember_me: true,
            fields: Map::new(),
            lifetime: None,
            keep_current: false,
        }
    }
}

impl SignInOptions {
    /// Defaults: remembered (a cookie with `Max-Age`, sliding expiry), no app fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// `false` gives a short session (`dont_remember_expires_in`, 1 day by default) that
    /// does not slide, and cookies without `Max-Age` that the browser drops when it closes.
    pub fn remember_me(mut self, remember_me: bool) -> Self {
        self.remember_me = remember_me;
        self
    }

    /// This session's lifetime instead of `expires_in` (or `dont_remember_expires_in`),
    /// still capped by `max_lifetime`. With `remember_me(false)` it never slides, so it
    /// ends exactly then (impersonation sessions are made this way).
    pub fn lifetime(mut self, lifetime: std::time::Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// App-defined fields stored with the session; must serialize to a JSON object that
    /// nests arrays and objects at most 64 levels deep (the object itself is level 1).
    /// Anything else is [`SessionError::Fields`]: deeper JSON could be written but not
    /// read back by the stores.
    ///
    /// ```
    /// use tower_auth_session::SignInOptions;
    /// #[derive(serde::Serialize)]
    /// struct Login { method: &'static str }
    /// let options = SignInOptions::new().fields(&Login { method: "password" }).unwrap();
    /// # let _ = options;
    /// ```
    pub fn fields<T: Serialize>(mut self, fields: &T) -> Result<Self, SessionError> {
        match serde_json::to_value(fields).map_err(SessionError::Fields)? {
            Value::Object(map) => {
                check_app_fields(&map)?;
                self.fields = map;
                Ok(self)
            }
            _ => Err(SessionError::Fields(serde::ser::Error::custom(
                "session fields must serialize to a JSON object",
            ))),
        }
    }
}

/// Whether the request's session could be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// A live session (or none was presented).
    Decided,
    /// A store needed to decide was down: neither signed in nor signed out.
    Unavailable,
}

/// What the response must do with the session cookies.
#[derive(Debug, Clone)]
pub(crate) enum CookieAction {
    /// Nothing.
    Keep,
    /// Set the token cookie (new session, refresh, rotation).
    Set {
        signed: String,
        remember: bool,
        expires_at: DateTime<Utc>,
    },
    /// Expire every session cookie.
    Clear,
}

/// The request's session: shared (with the store that holds it, or between the handle
/// and what handlers read), or still sealed as the cookie cache carried it.
// The sealed payload is inline on purpose: boxing it would be the allocation it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum SessionSlot {
    Shared(Arc<Session>),
    /// Read through I/O: shared only if a handler asks for it shared.
    Owned(Session),
    /// Built on first read: most requests never read the session they are signed in with.
    Sealed(SealedSession),
}

#[derive(Debug)]
pub(crate) struct HandleState {
    /// The correctly signed token the request presented, or the one sign-in issued.
    pub(crate) token: Option<(Token, TokenHash)>,
    /// Read through [`session`](Self::session), written through
    /// [`set_session`](Self::set_session).
    session: Option<SessionSlot>,
    pub(crate) status: Status,
    pub(crate) rejection: Option<RejectionReason>,
    pub(crate) cookie_action: CookieAction,
    /// A signed token issued in this request, for the `set-auth-token` header.
    pub(crate) issued: Option<String>,
    /// The cookie cache: what the request carried, whether it was used, whether to issue.
    pub(crate) cache: CacheState,
}

impl HandleState {
    /// No session: none was presented (`rejection` is `None`), or the one presented was
    /// refused before any I/O. A refused cookie is cleared.
    pub(crate) fn anonymous(
        source: Option<TokenSource>,
        rejection: Option<RejectionReason>,
        cache: CacheState,
    ) -> Self {
        let cookie_action = if source == Some(TokenSource::Cookie) && rejection.is_some() {
            CookieAction::Clear
        } else {
            CookieAction::Keep
        };
        Self {
            token: None,
            session: None,
            status: Status::Decided,
            rejection,
            cookie_action,
            issued: None,
            cache,
        }
    }

    /// A session read from the request's cookie cache: nothing to write.
    pub(crate) fn cached(token: VerifiedToken, hit: CacheHit, cache: CacheState) -> Self {
        let session = match hit {
            CacheHit::Sealed(sealed) => SessionSlot::Sealed(sealed),
            CacheHit::Decoded(session) => SessionSlot::Shared(Arc::new(session)),
        };
        Self {
            token: Some((token.token, token.hash)),
            session: Some(session),
            status: Status::Decided,
            rejection: None,
            cookie_action: CookieAction::Keep,
            issued: None,
            cache,
        }
    }

    /// What the stores answered for `token`: a live session (re-set the cookie if this
    /// request refreshed it), a definitive no (clear a cookie), or an outage (touch
    /// nothing).
    pub(crate) fn resolved(
        manager: &ManagerInner,
        token: VerifiedToken,
        resolved: Resolved,
        cache: CacheState,
    ) -> Self {
        let from_cookie = token.source == TokenSource::Cookie;
        let (token, session, status, rejection, cookie_action) = match resolved {
            Resolved::Valid { session, refreshed } => {
                let cookie_action = if refreshed && from_cookie {
                    CookieAction::Set {
                        signed: manager
                            .keys
                            .sign_token(&manager.names.session_token, &token.token),
                        remember: session.remember,
                        expires_at: session.expires_at,
                    }
                } else {
                    CookieAction::Keep
                };
                let token = Some((token.token, token.hash));
                let session = Some(match session {
                    LiveSession::Shared(session) => SessionSlot::Shared(session),
                    LiveSession::Owned(session) => SessionSlot::Owned(session),
                });
                (token, session, Status::Decided, None, cookie_action)
            }
            Resolved::Gone(rejection) => {
                // A hook's refusal ends nothing: the session stays, so do its cookies.
                let refused = matches!(rejection, RejectionReason::Refused(_));
                let cookie_action = if from_cookie && !refused {
                    CookieAction::Clear
                } else {
                    CookieAction::Keep
                };
                (None, None, Status::Decided, Some(rejection), cookie_action)
            }
            Resolved::Unavailable => {
                let token = Some((token.token, token.hash));
                (token, None, Status::Unavailable, None, CookieAction::Keep)
            }
        };
        Self {
            token,
            session,
            status,
            rejection,
            cookie_action,
            issued: None,
            cache,
        }
    }

    /// The request no longer has a session: no token, no session, no token to hand out.
    pub(crate) fn forget_session(&mut self) {
        self.token = None;
        self.session = None;
        self.issued = None;
    }

    /// The request is signed out: its session is forgotten and the response clears every
    /// session cookie (and issues no cookie cache).
    pub(crate) fn signed_out(&mut self) {
        self.forget_session();
        self.cookie_action = CookieAction::Clear;
        self.cache.issue_from = None;
    }

    /// A token was issued for `session` (a sign-in, a rotation): the response sets its
    /// cookie and may hand `signed` out in `set-auth-token`.
    pub(crate) fn issued(
        &mut self,
        token: Token,
        hash: TokenHash,
        session: Session,
        signed: String,
    ) {
        self.token = Some((token, hash));
        self.cookie_action = CookieAction::Set {
            signed: signed.clone(),
            remember: session.remember,
            expires_at: session.expires_at,
        };
        self.set_session(Some(session));
        self.issued = Some(signed);
    }

    /// The session, built from the sealed cache payload on first read.
    pub(crate) fn session(&mut self) -> Option<&Session> {
        if let Some(SessionSlot::Sealed(sealed)) = &self.session {
            self.session = unseal(sealed).map(SessionSlot::Owned);
        }
        match self.session.as_ref()? {
            SessionSlot::Shared(session) => Some(session),
            SessionSlot::Owned(session) => Some(session),
            SessionSlot::Sealed(_) => None,
        }
    }

    /// The session, shared: made shareable (once) if it was not.
    pub(crate) fn session_shared(&mut self) -> Option<Arc<Session>> {
        let shared = match self.session.take()? {
            SessionSlot::Shared(shared) => shared,
            SessionSlot::Owned(session) => Arc::new(session),
            SessionSlot::Sealed(sealed) => Arc::new(unseal(&sealed)?),
        };
        self.session = Some(SessionSlot::Shared(shared.clone()));
        Some(shared)
    }

    /// A copy of the session; a sealed one is decoded straight into it (and stays
    /// sealed: a handler that reads the session once pays for one decode, not two copies).
    pub(crate) fn session_copy(&self) -> Option<Session> {
        match self.session.as_ref()? {
            SessionSlot::Shared(session) => Some(Session::clone(session)),
            SessionSlot::Owned(session) => Some(session.clone()),
            SessionSlot::Sealed(sealed) => unseal(sealed),
        }
    }

    pub(crate) fn set_session(&mut self, session: Option<Session>) {
        self.session = session.map(SessionSlot::Owned);
    }
}

/// The session in a checked cache payload.
fn unseal(sealed: &SealedSession) -> Option<Session> {
    let session = sealed.unseal();
    if session.is_none() {
        // The payload was checked before it was kept: this is a bug, not bad input.
        tracing::error!("a checked cookie cache payload did not decode");
    }
    session
}

/// A correctly signed token and where the request carried it.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedToken {
    pub(crate) token: Token,
    pub(crate) hash: TokenHash,
    pub(crate) source: TokenSource,
}

/// What the layer read from the request itself, before any store was asked.
#[derive(Debug, Clone)]
pub(crate) struct RequestFacts {
    pub(crate) client: ClientFacts,
    /// Whether the request carried a `dont_remember` cookie (to expire it on a
    /// remembered sign-in).
    pub(crate) had_dont_remember: bool,
    /// Whether the request carried `x-want-auth-token` (read only under
    /// [`AuthTokenHeader::OnRequest`]).
    pub(crate) asked_for_auth_token: bool,
    /// The `Cookie` headers, kept only when several accounts or impersonation are on
    /// (their cookies are read by the routes, never on the hot path).
    pub(crate) cookie_headers: Vec<HeaderValue>,
}

struct Shared {
    manager: SessionManager,
    facts: RequestFacts,
    source: Option<TokenSource>,
    state: Mutex<HandleState>,
    /// `Set-Cookie`s of cookies other than the session's own, written by `finish`.
    extra_cookies: Mutex<Vec<HeaderValue>>,
}

/// The per-request session handle, found in the request extensions.
#[derive(Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("session", &self.state().session)
            .finish_non_exhaustive()
    }
}

impl SessionHandle {
    pub(crate) fn new(
        manager: SessionManager,
        facts: RequestFacts,
        source: Option<TokenSource>,
        state: HandleState,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                manager,
                facts,
                source,
                state: Mutex::new(state),
                extra_cookies: Mutex::new(Vec::new()),
            }),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, HandleState> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The manager this handle belongs to.
    pub fn manager(&self) -> &SessionManager {
        &self.shared.manager
    }

    /// The signed-in session, if any (a copy; see [`current_shared`](Self::current_shared)).
    pub fn current(&self) -> Option<Session> {
        self.state().session_copy()
    }

    /// The signed-in session, if any, shared instead of copied: what a handler that only
    /// reads it should call on a hot path.
    pub fn current_shared(&self) -> Option<Arc<Session>> {
        self.state().session_shared()
    }

    /// Whether the session could not be decided because a store was down. Handlers that
    /// need a session should answer 503 (not 401) in that case: the user is not signed out.
    pub fn is_unavailable(&self) -> bool {
        self.state().status == Status::Unavailable
    }

    /// Whether the session is due for its sliding refresh and this request did not make
    /// it (with [`defer_refresh`](crate::SessionManagerBuilder::defer_refresh) on a safe
    /// method, or [`NoRefresh`](crate::NoRefresh)): the next unsafe request will.
    pub fn needs_refresh(&self) -> bool {
        let manager = &self.shared.manager.inner;
        let now = manager.clock.now();
        self.state()
            .session()
            .is_some_and(|session| manager.config.refresh_due(session, now))
    }

    /// Why the presented session was refused, if it was.
    pub fn rejection(&self) -> Option<RejectionReason> {
        self.state().rejection
    }

    /// The handle the layer put in `extensions` (of an `http::Request`, its `Parts`, or a
    /// `tonic::Request`), or [`SessionRejection::MissingLayer`] when the layer is not in
    /// front of this code.
    ///
    /// ```
    /// use tower_auth_session::{SessionHandle, SessionRejection};
    ///
    /// fn user_of(request: &http::Request<()>) -> Result<String, SessionRejection> {
    ///     let handle = SessionHandle::from_extensions(request.extensions())?;
    ///     Ok(handle.require()?.user_id)
    /// }
    /// let lonely = http::Request::new(());
    /// assert_eq!(user_of(&lonely), Err(SessionRejection::MissingLayer));
    /// ```
    pub fn from_extensions(extensions: &http::Extensions) -> Result<Self, SessionRejection> {
        extensions
            .get::<Self>()
            .cloned()
            .ok_or(SessionRejection::MissingLayer)
    }

    /// The signed-in session, or why there is none: [`SessionRejection::Unavailable`]
    /// (503) when a store needed to decide was down — the user is not signed out by an
    /// outage — and [`SessionRejection::Unauthenticated`] (401) otherwise. The one call a
    /// hyper or tonic handler needs instead of [`current`](Self::current) plus
    /// [`is_unavailable`](Self::is_unavailable).
    pub fn require(&self) -> Result<Session, SessionRejection> {
        let state = self.state();
        if let Some(session) = state.session_copy() {
            return Ok(session);
        }
        if state.status == Status::Unavailable {
            Err(SessionRejection::Unavailable)
        } else if let Some(RejectionReason::Refused(refusal)) = state.rejection {
            Err(SessionRejection::Refused(refusal))
        } else {
            Err(SessionRejection::Unauthenticated)
        }
    }

    /// `Err(`[`SessionRejection::CrossSite`]`)` when a state-changing request must be
    /// refused as cross-site (see [`SessionManager::is_cross_site`]); the bearer exemption
    /// applies only when this request was authenticated by our bearer token. What the
    /// axum `CrossSiteGuard` extractor does, for code outside axum.
    pub fn check_cross_site(&self, headers: &HeaderMap) -> Result<(), SessionRejection> {
        let bearer = self.shared.source == Some(TokenSource::Bearer);
        if self.shared.manager.cross_site(headers, bearer) {
            tracing::debug!(origin = ?headers.get(header::ORIGIN), "refused a cross-site request");
            return Err(SessionRejection::CrossSite);
        }
        Ok(())
    }

    /// Where the request's token came from, if it had one.
    pub fn token_source(&self) -> Option<TokenSource> {
        self.shared.source
    }

    /// Signs `user_id` in: a new session with a new token, set as cookies on the response.
    ///
    /// Call it only after the app has checked a password, an OAuth callback or similar.
    /// The session the request arrived with (if any) is revoked first, so a planted token
    /// can never be upgraded into a signed-in one (no session fixation); when a tier cannot
    /// be reached for that, its revoke is owed and finished by the server (the new token
    /// already defeats fixation). Fails closed: if the store cannot commit the new session,
    /// no cookie is set.
    pub async fn sign_in(
        &self,
        user_id: impl Into<String>,
        options: SignInOptions,
    ) -> Result<Session, SessionError> {
        let user_id = user_id.into();
        // NUL is refused too: PostgreSQL cannot store it, and bad input must not turn
        // into a store error (a 503).
        if user_id.is_empty() || user_id.len() > MAX_USER_ID_LEN || user_id.contains('\0') {
            return Err(SessionError::InvalidUserId);
        }
        let manager = &self.shared.manager.inner;
        // Before anything is written (the replaced session's revoke included): a refusal
        // writes nothing in any tier.
        let impersonated_by = options.fields.get(IMPERSONATED_BY).cloned();
        let mut fields = manager
            .before_create(&user_id, options.fields, &self.shared.facts.client)
            .await?;
        // A hook cannot turn an impersonation into the user's own session.
        if let Some(admin) = impersonated_by {
            fields.insert(IMPERSONATED_BY.to_owned(), admin);
        }
        let previous = {
            let mut state = self.state();
            let id = state.session().map(|session| session.id.clone());
            state.token.as_ref().map(|(_, hash)| (*hash, id))
        };
        // With several accounts per browser, the one signed in stays signed in beside
        // the new one; so does an admin's session under an impersonation.
        let keep_current = options.keep_current || manager.multi_session > 0;
        if let Some((hash, session_id)) = previous.filter(|_| !keep_current) {
            // Never fails the sign-in: the new token already defeats fixation, and an owed
            // revoke is finished by the server.
            if let Err(error) = self
                .revoke_or_owe(hash, session_id, RevokeReason::Replaced)
                .await
            {
                tracing::error!(error = %chain(&error), "the session this sign-in replaces could not be revoked");
            }
            self.state().forget_session();
        }

        let now = manager.clock.now();
        let lifetime = match options.lifetime {
            // Capped like every duration option, so `now + lifetime` cannot overflow.
            Some(lifetime) => chrono::Duration::from_std(lifetime)
                .unwrap_or(chrono::Duration::MAX)
                .min(chrono::Duration::days(365 * 1000)),
            None if options.remember_me => manager.config.expires_in,
            None => manager.config.dont_remember_expires_in,
        };
        let mut expires_at = now + lifetime;
        if let Some(max) = manager.config.max_lifetime {
            expires_at = expires_at.min(now + max);
        }
        let info = manager.tracking.client_info(&self.shared.facts.client);
        let mut session = Session::new(user_id, now, expires_at);
        session.ip_address = info.ip_address;
        session.user_agent = info.user_agent;
        session.remember = options.remember_me;
        session.fields = fields;
        let token = Token::generate_for(&session.user_id);
        let hash = token.hash();
        manager.store.create(&hash, &session).await?;
        tracing::info!(session_id = %session.id, user_id = ?session.user_id, "session created");
        manager.enforce_session_limit(&hash, &session).await?;
        // Store first (the source of truth), then one atomic write to the secondary tier;
        // after the limit check, which may take the new session back.
        manager.mirror(&hash, &session, None).await;
        manager.events.emit(|| SessionEvent::Created {
            session: session.clone(),
        });

        // An impersonation is no account of this browser's.
        if manager.multi_session > 0 && !session.fields.contains_key(IMPERSONATED_BY) {
            self.add_account(&token, &session).await;
        }
        self.adopt(token, hash, session.clone());
        Ok(session)
    }

    /// The request's session is now `session` under `token` (a sign-in, a switch to
    /// another account, the way back from an impersonation): the response sets its
    /// cookie, a cookie cache for it and (as the policy allows) `set-auth-token`.
    pub(crate) fn adopt(&self, token: Token, hash: TokenHash, session: Session) {
        let manager = &self.shared.manager.inner;
        let signed = manager
            .keys
            .sign_token(&manager.names.session_token, &token);
        let now = manager.clock.now();
        let mut state = self.state();
        state.issued(token, hash, session, signed);
        state.status = Status::Decided;
        state.rejection = None;
        state.cache.hit = false;
        state.cache.issue_from = Some(now);
    }

    /// Adds a `Set-Cookie` of another cookie than the session's own (an account's
    /// multi-session cookie, the admin's kept-aside session) to the response.
    pub(crate) fn push_cookie(&self, value: HeaderValue) {
        self.shared
            .extra_cookies
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(value);
    }

    /// The request's `Cookie` headers, as the layer kept them (only when several
    /// accounts or impersonation are on; empty otherwise).
    pub(crate) fn request_cookies(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in &self.shared.facts.cookie_headers {
            headers.append(header::COOKIE, value.clone());
        }
        headers
    }

    /// Signs the current session out: the response clears the cookies, always, and the
    /// session is revoked in every tier. Without a session it only clears cookies.
    ///
    /// When a tier cannot be reached (Redis or the store down), the browser that asked is
    /// still signed out, nothing is half-revoked, and the answer is
    /// [`RevokeStatus::Pending`]: the server retries the revoke in the background until it
    /// goes through (see [`SessionManager::pending_revocations`]), and this instance stops
    /// believing the session's cookie caches at once. An error only when even that cannot
    /// be promised (too many revocations owed, no runtime to retry on).
    pub async fn sign_out(&self) -> Result<RevokeStatus, SessionError> {
        let presented = {
            let mut state = self.state();
            let id = state.session().map(|session| session.id.clone());
            state.token.as_ref().map(|(_, hash)| (*hash, id))
        };
        let status = match presented {
            Some((hash, session_id)) => {
                self.revoke_or_owe(hash, session_id, RevokeReason::SignOut)
                    .await?
            }
            None => RevokeStatus::Complete,
        };
        // Better Auth's rule: signing out signs out every account of this browser.
        if self.shared.manager.inner.multi_session > 0 {
            self.sign_out_other_accounts().await;
        }
        self.signed_out_here();
        Ok(status)
    }

    /// This request is signed out: no session, and the response clears every session
    /// cookie.
    pub(crate) fn signed_out_here(&self) {
        self.state().signed_out();
    }

    /// Revokes the session under `hash` now or, when a tier cannot be reached, owes it:
    /// retried in the background, and refused by this instance's cookie cache at once.
    pub(crate) async fn revoke_or_owe(
        &self,
        hash: TokenHash,
        session_id: Option<String>,
        reason: RevokeReason,
    ) -> Result<RevokeStatus, SessionError> {
        let manager = &self.shared.manager.inner;
        let target = RevokeTarget::Token {
            hash: &hash,
            session_id: session_id.as_deref(),
        };
        let error = match manager.revoke(target, reason).await {
            Ok(revoked) => match revoked.complete {
                Ok(()) => return Ok(RevokeStatus::Complete),
                Err(error) => error,
            },
            // A hook's refusal is the app's answer, not an outage to retry.
            Err(error @ SessionError::Refused(_)) => return Err(error),
            Err(error) => error,
        };
        tracing::warn!(error = %chain(&error), ?reason, "could not revoke the session now; the server will finish it when the tiers answer");
        if let Some(id) = &session_id {
            manager.refuse_cached_here(id);
        }
        if !revoke_later(manager, hash, session_id, reason) {
            return Err(error);
        }
        Ok(RevokeStatus::Pending)
    }

    /// Whether this response may carry `set-auth-token` (the builder's
    /// [`AuthTokenHeader`] policy).
    fn hands_out_token(&self) -> bool {
        match self.shared.manager.inner.config.auth_token_header {
            AuthTokenHeader::Always => true,
            AuthTokenHeader::Never => false,
            AuthTokenHeader::OnRequest => {
                self.shared.facts.asked_for_auth_token
                    || self.shared.source == Some(TokenSource::Bearer)
            }
        }
    }

    /// Writes the cookies this request earned onto the response headers.
    ///
    /// Every response to which this adds a `Set-Cookie` — a new or refreshed token, a
    /// re-issued cookie cache, cleared cookies — or a `set-auth-token` also gets
    /// `Cache-Control: no-store`, whatever the handler said: a shared cache must never
    /// store and replay it.
    /// Returns the rejection reason, read under the same lock.
    pub(crate) fn finish(&self, headers: &mut HeaderMap) -> Option<RejectionReason> {
        let earned = self.take_earned();
        let mut wrote = match earned.action {
            CookieAction::Keep => false,
            CookieAction::Set {
                signed,
                remember,
                expires_at,
            } => {
                self.set_token_cookie(headers, &signed, remember, expires_at);
                true
            }
            CookieAction::Clear => {
                self.clear_cookies(headers);
                true
            }
        };
        if let Some(cache_cookies) = earned.cache_cookies {
            wrote |= cache_cookies.apply(headers);
        }
        wrote |= self.append_extra_cookies(headers);
        wrote |= self.hand_out_token(headers, earned.issued);
        if wrote {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        earned.rejection
    }

    /// What the request earned, taken under one lock: the token cookie's action, the
    /// cookie cache's cookies, the token to hand out, and the rejection reason.
    fn take_earned(&self) -> Earned<'_> {
        let manager = &self.shared.manager.inner;
        let config = &manager.config;
        let mut state = self.state();
        if !config.token_transport.uses_cookies() {
            // Bearer-only: no response ever carries `Set-Cookie`, not even a clearing one.
            state.cookie_action = CookieAction::Keep;
            state.cache.issue_from = None;
        }
        let cache_cookies = manager.cookie_cache.as_ref().map(|cache| {
            let clearing = matches!(state.cookie_action, CookieAction::Clear);
            let issue_from = state.cache.issue_from.filter(|_| !clearing);
            let presence = state.cache.presence;
            let token_hash = state.token.as_ref().map(|(_, hash)| *hash);
            // Only a cache to issue needs the session built.
            let session = issue_from.and_then(|_| state.session());
            let write = match (clearing, issue_from, session, &token_hash) {
                (true, _, _, _) => CacheWrite::Clear,
                (false, Some(from), Some(session), Some(token_hash)) => {
                    CacheWrite::Issue(CacheIssue {
                        from,
                        session,
                        token_hash,
                    })
                }
                _ => CacheWrite::Nothing,
            };
            let now = || manager.clock.now();
            CacheCookies::decide(cache, &manager.keys, config, presence, write, now)
        });
        Earned {
            action: std::mem::replace(&mut state.cookie_action, CookieAction::Keep),
            issued: state.issued.take(),
            cache_cookies,
            rejection: state.rejection,
        }
    }

    /// The token cookie (and `dont_remember` for a session that is not remembered).
    fn set_token_cookie(
        &self,
        headers: &mut HeaderMap,
        signed: &str,
        remember: bool,
        expires_at: DateTime<Utc>,
    ) {
        let manager = &self.shared.manager.inner;
        let (names, config) = (&manager.names, &manager.config);
        let lifetime = if remember {
            Lifetime::MaxAge(expires_at - manager.clock.now())
        } else {
            Lifetime::BrowserSession
        };
        headers.append(
            header::SET_COOKIE,
            set_cookie(config, &names.session_token, signed, lifetime),
        );
        if !remember {
            headers.append(
                header::SET_COOKIE,
                set_cookie(
                    config,
                    &names.dont_remember,
                    "true",
                    Lifetime::BrowserSession,
                ),
            );
        } else if self.shared.facts.had_dont_remember {
            headers.append(header::SET_COOKIE, names.expired.dont_remember.clone());
        }
    }

    /// Expires every session cookie, after scrubbing any the handler set.
    fn clear_cookies(&self, headers: &mut HeaderMap) {
        let names = &self.shared.manager.inner.names;
        let all = [
            names.session_token.as_str(),
            names.session_data.as_str(),
            names.dont_remember.as_str(),
        ];
        scrub_set_cookies(headers, all.into_iter());
        let expired = &names.expired;
        for value in [
            &expired.session_token,
            &expired.session_data,
            &expired.dont_remember,
        ] {
            headers.append(header::SET_COOKIE, value.clone());
        }
    }

    /// The other cookies this request set (accounts, a kept-aside session); whether any.
    fn append_extra_cookies(&self, headers: &mut HeaderMap) -> bool {
        let extra = std::mem::take(
            &mut *self
                .shared
                .extra_cookies
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let config = &self.shared.manager.inner.config;
        if !config.token_transport.uses_cookies() || extra.is_empty() {
            return false;
        }
        for value in extra {
            headers.append(header::SET_COOKIE, value);
        }
        true
    }

    /// `set-auth-token` for a token issued in this request, as the policy allows;
    /// whether it was added.
    fn hand_out_token(&self, headers: &mut HeaderMap, issued: Option<String>) -> bool {
        let Some(signed) = issued.filter(|_| self.hands_out_token()) else {
            return false;
        };
        let Ok(value) = HeaderValue::try_from(signed) else {
            return false;
        };
        // A credential in a header is as cache-sensitive as one in a cookie.
        headers.insert(SET_AUTH_TOKEN, value);
        headers.append(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(SET_AUTH_TOKEN),
        );
        true
    }
}

/// What a request earned for its response, taken out of the handle's state at once.
struct Earned<'m> {
    action: CookieAction,
    issued: Option<String>,
    cache_cookies: Option<CacheCookies<'m>>,
    rejection: Option<RejectionReason>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::session::MAX_FIELDS_DEPTH;

    /// `{"a": {"a": … 1 …}}` with `levels` objects, the outermost included.
    fn nested(levels: usize) -> Value {
        (1..levels).fold(json!({ "a": 1 }), |inner, _| json!({ "a": inner }))
    }

    #[test]
    fn fields_nested_past_the_limit_are_refused() {
        for levels in [MAX_FIELDS_DEPTH + 1, 200] {
            let result = SignInOptions::new().fields(&nested(levels));
            assert!(
                matches!(result, Err(SessionError::Fields(_))),
                "{levels} levels: accepted ({})",
                result.is_ok()
            );
        }
        // Why: such fields serialize, but no tier could parse them back.
        assert!(serde_json::from_str::<Value>(&nested(200).to_string()).is_err());
        // Arrays count as levels too.
        let arrays = (2..=MAX_FIELDS_DEPTH).fold(json!([1]), |inner, _| json!([inner]));
        assert!(
            SignInOptions::new()
                .fields(&json!({ "a": arrays }))
                .is_err()
        );
    }

    #[test]
    fn fields_within_the_limit_are_kept_and_read_back() {
        for levels in [1, 32, MAX_FIELDS_DEPTH] {
            let value = nested(levels);
            let options = SignInOptions::new().fields(&value).unwrap();
            let Value::Object(expected) = value else {
                unreachable!()
            };
            assert_eq!(options.fields, expected);
            // Stores keep fields as JSON text and parse them back.
            let text = serde_json::to_string(&options.fields).unwrap();
            let back: Map<String, Value> = serde_json::from_str(&text).unwrap();
            assert_eq!(back, expected, "{levels} levels");
        }
    }
}
