//! Freshness: whether the user proved who they are recently enough for a sensitive action
//! (changing a password or an email, deleting the account, …).
//!
//! Freshness runs from `authenticated_at` (set by sign-in and by
//! [`SessionHandle::reauthenticate`]), not from the last refresh: a session kept alive for
//! weeks is live, but not fresh.

use crate::manager::SessionManager;
use crate::session::Session;

impl SessionManager {
    /// Whether `session` was authenticated less than `fresh_age` ago (default one day).
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
}

#[cfg(feature = "axum")]
pub use extract::FreshSession;

#[cfg(feature = "axum")]
mod extract {
    use axum::extract::FromRequestParts;
    use http::request::Parts;

    use crate::extract::SessionRejection;
    use crate::handle::SessionHandle;
    use crate::session::Session;

    /// A signed-in session that is also fresh: authenticated less than `fresh_age` ago.
    ///
    /// The session is read from the source of truth, never from a cached copy, so a
    /// revoked session or an older `authenticated_at` cannot slip through. Rejects with
    /// 401 `{"error":"unauthenticated"}` without a session, 403
    /// `{"error":"session_not_fresh"}` when it is stale (ask for the password again, then
    /// call [`SessionHandle::reauthenticate`]), and 503 when the store is down.
    ///
    /// ```
    /// use axum::{Router, routing::post};
    /// use tower_auth_session::{FreshSession, MemoryStore, SessionManager};
    ///
    /// async fn delete_account(FreshSession(session): FreshSession) -> String {
    ///     format!("deleting {}", session.user_id)
    /// }
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .build()
    ///     .unwrap();
    /// let app: Router = Router::new()
    ///     .route("/delete-account", post(delete_account))
    ///     .layer(manager.layer());
    /// # let _ = app;
    /// ```
    #[derive(Debug, Clone)]
    pub struct FreshSession(pub Session);

    impl<S: Send + Sync> FromRequestParts<S> for FreshSession {
        type Rejection = SessionRejection;

        async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
            let handle = SessionHandle::from_request_parts(parts, state).await?;
            if handle.current().is_none() {
                return Err(if handle.is_unavailable() {
                    SessionRejection::Unavailable
                } else {
                    SessionRejection::Unauthenticated
                });
            }
            match handle.authoritative().await {
                Ok(Some(session)) if handle.manager().is_fresh(&session) => Ok(Self(session)),
                Ok(Some(_)) => Err(SessionRejection::NotFresh),
                Ok(None) => Err(SessionRejection::Unauthenticated),
                Err(error) => {
                    tracing::error!(%error, "could not read the session for a freshness check");
                    Err(SessionRejection::Unavailable)
                }
            }
        }
    }
}
