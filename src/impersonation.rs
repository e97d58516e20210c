//! Impersonation on [`SessionHandle`]: support staff sign in *as* a user, and back.
//!
//! The impersonation is an ordinary session of the target user, created through
//! `sign_in` (so the before-create rules apply to it), with the server-only field
//! `impersonatedBy` and a fixed lifetime (not remembered, so never refreshed). The
//! caller's own session is not revoked: its token is kept aside in the `admin_session`
//! cookie, signed under that cookie's name — so it is no credential on any other route
//! (the `session_token` MAC would not verify) — and comes back on
//! [`stop_impersonating`](SessionHandle::stop_impersonating).

use serde_json::{Map, Value};

use crate::cookies::{CookieLookup, Lifetime, expired_cookie, find_cookie, set_cookie};
use crate::error::SessionError;
use crate::events::{RevokeReason, SessionEvent};
use crate::handle::{SessionHandle, SignInOptions};
use crate::session::{IMPERSONATED_BY, Session};

/// The cookie that holds the impersonator's own session, beside `session_token` (same
/// `__Host-`/`__Secure-` prefix and cookie prefix).
pub(crate) fn kept_session_cookie_name(session_token: &str) -> String {
    let base = session_token
        .strip_suffix("session_token")
        .unwrap_or(session_token);
    format!("{base}admin_session")
}

impl SessionHandle {
    /// Signs this request in as `user_id`, for support (Better Auth's
    /// `admin.impersonateUser`): a new session of that user marked `impersonatedBy` with
    /// the caller's user id, lasting the [`Impersonation`](crate::Impersonation)'s
    /// `expires_in` (one hour by default) and never refreshed past it. The caller's own
    /// session stays signed in, kept aside in its own cookie until
    /// [`stop_impersonating`](Self::stop_impersonating).
    ///
    /// [`SessionError::Forbidden`] (403) when impersonation is off, the app's check says
    /// no, or the caller is itself impersonating; [`SessionError::NoSession`] without a
    /// live session (read from the store, not a cookie cache). Cookie clients only: a
    /// bearer-token caller has no cookie to keep its own session in.
    ///
    /// ```
    /// use tower_auth_session::{SessionError, SessionHandle};
    ///
    /// async fn support(session: SessionHandle) -> Result<String, SessionError> {
    ///     let as_user = session.impersonate("alice").await?;
    ///     Ok(format!("now {} (by {:?})", as_user.user_id, as_user.fields["impersonatedBy"]))
    /// }
    /// # let _ = support;
    /// ```
    pub async fn impersonate(&self, user_id: impl Into<String>) -> Result<Session, SessionError> {
        let target = user_id.into();
        let manager = &self.manager().inner;
        let Some(config) = manager.impersonation.clone() else {
            return Err(SessionError::Forbidden);
        };
        let Some(caller) = self.authoritative().await? else {
            return Err(SessionError::NoSession);
        };
        if caller.fields.contains_key(IMPERSONATED_BY) {
            return Err(SessionError::Forbidden);
        }
        if !(config.allowed)(caller.clone(), target.clone()).await {
            tracing::warn!(caller = ?caller.user_id, target = ?target, "impersonation refused by the app's check");
            return Err(SessionError::Forbidden);
        }
        let Some((token, _)) = self.state().token.clone() else {
            return Err(SessionError::NoSession);
        };
        let kept_name = kept_session_cookie_name(&manager.names.session_token);
        let kept = manager.keys.sign_token(&kept_name, &token);

        let mut mark = Map::new();
        mark.insert(
            IMPERSONATED_BY.to_owned(),
            Value::String(caller.user_id.clone()),
        );
        let mut options = SignInOptions::new()
            .remember_me(false)
            .lifetime(config.expires_in)
            .fields(&mark)?;
        options.keep_current = true;
        let session = self.sign_in(target, options).await?;

        let remaining = caller.expires_at - manager.clock.now();
        self.push_cookie(set_cookie(
            &manager.config,
            &kept_name,
            &kept,
            Lifetime::MaxAge(remaining),
        ));
        tracing::info!(session_id = %session.id, user_id = ?session.user_id, impersonator = ?caller.user_id, "impersonation started");
        manager.events.emit(|| SessionEvent::Impersonated {
            session: session.clone(),
            impersonator: caller.user_id.clone(),
        });
        Ok(session)
    }

    /// Ends the impersonation this request is signed in with (Better Auth's
    /// `admin.stopImpersonating`): the impersonation session is revoked on every
    /// instance, and the impersonator's own session — the same one, same id — is this
    /// request's session again. [`SessionError::NotImpersonating`] (400) when the current
    /// session is no impersonation; [`SessionError::NoSession`] when the kept-aside
    /// session is missing, tampered with or gone (the impersonation is ended anyway and
    /// every session cookie cleared).
    pub async fn stop_impersonating(&self) -> Result<Session, SessionError> {
        let manager = &self.manager().inner;
        let current = self.current().ok_or(SessionError::NoSession)?;
        if !current.fields.contains_key(IMPERSONATED_BY) {
            return Err(SessionError::NotImpersonating);
        }
        let kept_name = kept_session_cookie_name(&manager.names.session_token);
        let cookies = self.request_cookies();
        let kept = match find_cookie(&cookies, &kept_name) {
            CookieLookup::One(value) => manager.keys.verify_token(&kept_name, value).ok(),
            _ => None,
        };
        // The impersonation ends whatever happens next.
        let presented = self.state().token.as_ref().map(|(_, hash)| *hash);
        if let Some(hash) = presented {
            self.revoke_or_owe(hash, Some(current.id.clone()), RevokeReason::SignOut)
                .await?;
        }
        self.push_cookie(expired_cookie(&manager.config, &kept_name));
        let now = manager.clock.now();
        let own = match &kept {
            Some(token) => manager
                .store
                .find(&token.hash())
                .await?
                .filter(|session| !session.is_expired(now)),
            None => None,
        };
        let (Some(token), Some(own)) = (kept, own) else {
            self.signed_out_here();
            return Err(SessionError::NoSession);
        };
        tracing::info!(session_id = %own.id, user_id = ?own.user_id, "impersonation stopped");
        let hash = token.hash();
        self.adopt(token, hash, own.clone());
        Ok(own)
    }
}
