//! What a signed-in user can do to their own sessions from inside a request: list their
//! devices, revoke one, the others or all, prove who they are again, and get a new token.
//!
//! Every method acts only on the sessions of the user the request is signed in as, reads
//! the source of truth (never a cached copy) before it writes, and writes conditionally on
//! the session's `generation`, so it cannot bring back a session that was revoked while
//! the request ran. When the request's own session ends, the response clears its cookies;
//! when its token changes, the response carries the new one.

use crate::error::{SessionError, StoreError};
use crate::events::{RevokeReason, SessionEvent};
use crate::handle::{SessionHandle, Status};
use crate::manager::{RevokeTarget, SessionPage, merge_fields};
use crate::rejection::RejectionReason;
use crate::request_token::TokenSource;
use crate::session::{IMPERSONATED_BY, Session, check_app_fields};
use crate::token::{Token, TokenHash};

/// Whether `listed` belongs in `current`'s own device list: everything but impersonations
/// of the user, except the one this request is.
fn is_users_own(listed: &Session, current: &Session) -> bool {
    listed.id == current.id || !listed.fields.contains_key(IMPERSONATED_BY)
}

impl SessionHandle {
    /// The signed-in session and its token hash; `NoSession` without one, a store error
    /// when the store was down as the request arrived (that is not a sign-out).
    fn signed_in(&self) -> Result<(Session, TokenHash), SessionError> {
        let mut state = self.state();
        let session = state.session().cloned();
        match (session, &state.token) {
            (Some(session), Some((_, hash))) => Ok((session, *hash)),
            _ if state.status == Status::Unavailable => Err(SessionError::Store(StoreError::new(
                "the session store was unavailable when the request arrived",
            ))),
            _ => Err(SessionError::NoSession),
        }
    }

    /// The request's own session is gone: forget it and have the response clear cookies.
    fn ended_here(&self, rejection: Option<RejectionReason>) {
        let mut state = self.state();
        state.signed_out();
        state.status = Status::Decided;
        state.rejection = rejection;
    }

    /// Reads the session from the source of truth, bypassing anything cached, and updates
    /// what [`current`](Self::current) returns. `Ok(None)` when the request has no
    /// session or its session has been revoked or has expired since (its cookies are then
    /// cleared); an error when the store cannot be reached.
    ///
    /// Use it before sensitive actions; [`FreshSession`](crate::FreshSession) does. It
    /// always bypasses the cookie cache: a session revoked on another instance (or in the
    /// store directly) is seen here even while its cache cookie would still be believed.
    ///
    /// ```
    /// use tower_auth_session::SessionHandle;
    ///
    /// async fn change_password(session: SessionHandle) -> Result<String, String> {
    ///     let Some(current) = session.authoritative().await.map_err(|e| e.to_string())? else {
    ///         return Err("signed out".into());
    ///     };
    ///     Ok(format!("changing the password of {}", current.user_id))
    /// }
    /// # let _ = change_password;
    /// ```
    pub async fn authoritative(&self) -> Result<Option<Session>, SessionError> {
        let Some(hash) = self.state().token.as_ref().map(|(_, hash)| *hash) else {
            return Ok(None);
        };
        let manager = &self.manager().inner;
        // Taken before the read: a cookie cache issued from this answer must not outlive it.
        let read_at = manager.clock.now();
        let found = manager.store.find(&hash).await?;
        let now = manager.clock.now();
        match found {
            Some(session) if !session.is_expired(now) => {
                let mut state = self.state();
                state.set_session(Some(session.clone()));
                state.status = Status::Decided;
                state.cache.hit = false;
                if self.token_source() == Some(TokenSource::Cookie) {
                    state.cache.issue_from = Some(read_at);
                }
                Ok(Some(session))
            }
            found => {
                let rejection = if found.is_some() {
                    RejectionReason::Expired
                } else {
                    RejectionReason::Unknown
                };
                if self.token_source() == Some(TokenSource::Cookie) {
                    self.ended_here(Some(rejection));
                } else {
                    let mut state = self.state();
                    state.forget_session();
                    state.status = Status::Decided;
                    state.rejection = Some(rejection);
                }
                Ok(None)
            }
        }
    }

    /// The signed-in user's live sessions, oldest first (the current one included; compare
    /// ids with [`current`](Self::current) to mark it). Impersonations of the user are
    /// not the user's own and are left out (unless this request is one); the admin API
    /// ([`SessionManager::list_user_sessions`](crate::SessionManager::list_user_sessions))
    /// lists them.
    ///
    /// ```
    /// use tower_auth_session::{SessionError, SessionHandle};
    ///
    /// async fn devices(session: SessionHandle) -> Result<String, SessionError> {
    ///     let current = session.current().map(|s| s.id);
    ///     let lines: Vec<String> = session
    ///         .list()
    ///         .await?
    ///         .into_iter()
    ///         .map(|s| {
    ///             let marker = if Some(&s.id) == current.as_ref() { "*" } else { " " };
    ///             format!("{marker} {} {:?}", s.id, s.user_agent)
    ///         })
    ///         .collect();
    ///     Ok(lines.join("\n"))
    /// }
    /// # let _ = devices;
    /// ```
    pub async fn list(&self) -> Result<Vec<Session>, SessionError> {
        let (session, _) = self.signed_in()?;
        let manager = self.manager();
        let mut sessions = manager.list_user_sessions(&session.user_id).await?;
        sessions.retain(|listed| is_users_own(listed, &session));
        Ok(sessions)
    }

    /// One page of the signed-in user's live sessions, oldest first (see
    /// [`SessionManager::list_user_sessions_page`](crate::SessionManager::list_user_sessions_page)).
    pub async fn list_page(
        &self,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<SessionPage, SessionError> {
        let (session, _) = self.signed_in()?;
        let mut page = self
            .manager()
            .list_user_sessions_page(&session.user_id, limit, cursor)
            .await?;
        // Cut after the page: a page may hold fewer than `limit`; the cursor still follows.
        page.sessions
            .retain(|listed| is_users_own(listed, &session));
        Ok(page)
    }

    /// Revokes one of the signed-in user's sessions by id; another user's id (or an
    /// unknown one) changes nothing. Returns whether a session was revoked. Revoking the
    /// current session signs this request out (its cookies are cleared).
    pub async fn revoke(&self, session_id: &str) -> Result<bool, SessionError> {
        let (current, _) = self.signed_in()?;
        let target = RevokeTarget::Session {
            id: session_id,
            owner: Some(&current.user_id),
        };
        let revoked = self
            .manager()
            .inner
            .revoke(target, RevokeReason::ByUser)
            .await?;
        if revoked.sessions.is_empty() {
            return Ok(false);
        }
        // The session is gone from the store whatever happens next: end it here too.
        if revoked.sessions.iter().any(|s| s.id == current.id) {
            self.ended_here(None);
        }
        revoked.complete?;
        Ok(true)
    }

    /// Revokes every session of the signed-in user except this one (for "sign out my
    /// other devices"). Returns how many were revoked.
    pub async fn revoke_others(&self) -> Result<usize, SessionError> {
        let (current, _) = self.signed_in()?;
        let target = RevokeTarget::User {
            user_id: &current.user_id,
            except: Some(&current.id),
        };
        let revoked = self
            .manager()
            .inner
            .revoke(target, RevokeReason::ByUser)
            .await?;
        revoked.complete?;
        Ok(revoked.sessions.len())
    }

    /// Revokes every session of the signed-in user, this one included, and clears this
    /// request's cookies. Returns how many were revoked.
    pub async fn revoke_all(&self) -> Result<usize, SessionError> {
        let (current, _) = self.signed_in()?;
        let target = RevokeTarget::User {
            user_id: &current.user_id,
            except: None,
        };
        let revoked = self
            .manager()
            .inner
            .revoke(target, RevokeReason::ByUser)
            .await?;
        self.ended_here(None);
        revoked.complete?;
        Ok(revoked.sessions.len())
    }

    /// Records that the user just proved who they are again (the app re-checked the
    /// password, a second factor, …): `authenticated_at` becomes now, which makes the
    /// session fresh for [`FreshSession`](crate::FreshSession) again.
    ///
    /// ```
    /// use tower_auth_session::{SessionError, SessionHandle};
    ///
    /// async fn confirm_password(session: SessionHandle, password_ok: bool) -> Result<(), SessionError> {
    ///     if password_ok {
    ///         session.reauthenticate().await?;
    ///     }
    ///     Ok(())
    /// }
    /// # let _ = confirm_password;
    /// ```
    pub async fn reauthenticate(&self) -> Result<Session, SessionError> {
        let (_, hash) = self.signed_in()?;
        let updated = self
            .rewrite(hash, None, |session, now| {
                session.authenticated_at = now;
                session.updated_at = now;
            })
            .await?;
        let manager = &self.manager().inner;
        manager.events.emit(|| SessionEvent::Reauthenticated {
            session: updated.clone(),
        });
        self.state().set_session(Some(updated.clone()));
        Ok(updated)
    }

    /// Changes the session's app-defined fields (a role, the active organisation, …)
    /// without signing the user out: each key of `changes` is set, a key set to `null` is
    /// removed. Returns the session as written.
    ///
    /// The write is conditional on the session's generation (a concurrent refresh is
    /// retried, a revoke wins), the response re-issues this request's cookie cache, and
    /// every instance refuses the older cached copies before this returns (through the
    /// channel that carries revocations), so no instance serves the old fields afterwards.
    /// A built-in field name (`id`, `userId`, `expiresAt`, …, in any case or with
    /// separators) is refused with [`SessionError::Fields`]; without a session,
    /// [`SessionError::NoSession`]; a write that keeps losing to concurrent writes of the
    /// same session, [`SessionError::Conflict`]. This is server code's call: it may write
    /// any field. For changes a client sent, use
    /// [`update_fields_from_client`](Self::update_fields_from_client).
    ///
    /// ```
    /// use serde_json::json;
    /// use tower_auth_session::{SessionError, SessionHandle};
    ///
    /// async fn switch_organisation(session: SessionHandle) -> Result<(), SessionError> {
    ///     let changes = json!({ "activeOrganizationId": "org_1", "role": "admin" });
    ///     session.update_fields(changes.as_object().unwrap().clone()).await?;
    ///     Ok(())
    /// }
    /// # let _ = switch_organisation;
    /// ```
    pub async fn update_fields(
        &self,
        changes: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Session, SessionError> {
        self.update_fields_as(changes, false).await
    }

    /// `update_fields`, saying whether a client sent the changes (for the update hook).
    async fn update_fields_as(
        &self,
        changes: serde_json::Map<String, serde_json::Value>,
        from_client: bool,
    ) -> Result<Session, SessionError> {
        check_app_fields(&changes)?;
        let (current, hash) = self.signed_in()?;
        let changes = self
            .manager()
            .inner
            .before_update(current, changes, from_client)
            .await?;
        let updated = self
            .rewrite(hash, None, |session, now| {
                merge_fields(&mut session.fields, &changes);
                session.updated_at = now;
            })
            .await?;
        let manager = &self.manager().inner;
        tracing::info!(session_id = %updated.id, user_id = ?updated.user_id, "session fields updated");
        self.state().set_session(Some(updated.clone()));
        // Copies of the older generation, in any instance's cookie cache, are stale now.
        manager.superseded(&updated).await?;
        Ok(updated)
    }

    /// [`update_fields`](Self::update_fields) for changes that came from the client (a
    /// request body): each field must be one the manager's
    /// [`FieldPolicy`](crate::FieldPolicy) lets a request write, or nothing is written
    /// and the answer is [`SessionError::FieldNotWritable`] (403). `POST
    /// /update-session` calls this; so should an app's own route that takes fields from
    /// a request.
    ///
    /// ```
    /// use axum::Json;
    /// use tower_auth_session::{SessionError, SessionHandle};
    ///
    /// async fn preferences(
    ///     session: SessionHandle,
    ///     Json(changes): Json<serde_json::Map<String, serde_json::Value>>,
    /// ) -> Result<(), SessionError> {
    ///     session.update_fields_from_client(changes).await?;
    ///     Ok(())
    /// }
    /// # let _ = preferences;
    /// ```
    pub async fn update_fields_from_client(
        &self,
        changes: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Session, SessionError> {
        check_app_fields(&changes)?;
        self.manager()
            .inner
            .field_policy
            .check_client_changes(&changes)?;
        self.update_fields_as(changes, true).await
    }

    /// Gives the current session a new token, for privilege changes (after a role change
    /// or a re-authentication): the old token stops working at once, the response sets the
    /// new cookie (and `set-auth-token` for bearer clients). The session keeps its id,
    /// expiry and fields.
    pub async fn rotate(&self) -> Result<Session, SessionError> {
        let (session, hash) = self.signed_in()?;
        let token = Token::generate_for(&session.user_id);
        let new_hash = token.hash();
        let updated = self
            .rewrite(hash, Some(new_hash), |session, now| {
                session.updated_at = now
            })
            .await?;
        let manager = &self.manager().inner;
        tracing::info!(session_id = %updated.id, user_id = ?updated.user_id, "session token rotated");
        manager.events.emit(|| SessionEvent::Rotated {
            session: updated.clone(),
        });
        let signed = manager
            .keys
            .sign_token(&manager.names.session_token, &token);
        {
            self.state()
                .issued(token, new_hash, updated.clone(), signed);
        }
        // Copies of the session under its old token must die with that token. The new
        // cookie is set either way: the old token no longer works.
        manager.superseded(&updated).await?;
        Ok(updated)
    }

    /// Re-reads the session, applies `change`, and writes it back if nobody wrote it in
    /// between (moving it to `new_hash` when given). A session that is gone signs this
    /// request out and answers `NoSession`.
    async fn rewrite(
        &self,
        hash: TokenHash,
        new_hash: Option<TokenHash>,
        change: impl Fn(&mut Session, chrono::DateTime<chrono::Utc>),
    ) -> Result<Session, SessionError> {
        let manager = &self.manager().inner;
        if new_hash.is_some() {
            manager.forget_in_secondary_first(&hash).await?;
        }
        let read = || async { Ok(self.authoritative().await?.map(|session| (hash, session))) };
        manager
            .rewrite(read, new_hash.as_ref(), change)
            .await?
            .ok_or(SessionError::NoSession)
    }
}
