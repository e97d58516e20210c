//! axum extractors (feature `axum`): the handle, the signed-in session, a fresh session,
//! and the cross-site guard. Each rejects with a [`SessionRejection`].

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;

use crate::handle::SessionHandle;
use crate::rejection::SessionRejection;
use crate::session::Session;

/// The signed-in session; rejects with 401 `{"error":"unauthenticated"}` when there is
/// none, and 503 `{"error":"session_store_unavailable"}` when a store needed to decide
/// was down (the user is not signed out by an outage).
///
/// Use `Option<CurrentSession>` where signing in is optional.
#[derive(Debug, Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub struct CurrentSession(pub Session);

impl<S: Send + Sync> FromRequestParts<S> for SessionHandle {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        SessionHandle::from_extensions(&parts.extensions)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentSession {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let handle = SessionHandle::from_request_parts(parts, state).await?;
        handle.require().map(Self)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for CurrentSession {
    type Rejection = SessionRejection;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        let handle = SessionHandle::from_request_parts(parts, state).await?;
        Ok(handle.current().map(Self))
    }
}

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
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub struct FreshSession(pub Session);

impl<S: Send + Sync> FromRequestParts<S> for FreshSession {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let handle =
            <SessionHandle as FromRequestParts<S>>::from_request_parts(parts, state).await?;
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
                tracing::error!(error = %crate::error::chain(&error), "could not read the session for a freshness check");
                Err(SessionRejection::Unavailable)
            }
        }
    }
}

/// An extractor that refuses cross-site requests with 403
/// `{"error":"cross_site_request"}` (see [`SessionManager::is_cross_site`](crate::SessionManager::is_cross_site)).
/// Put it first in the arguments of state-changing handlers the app adds itself, such
/// as sign-in; the endpoints of [`SessionManager::router`](crate::SessionManager::router) already use it.
///
/// ```
/// use axum::{Router, routing::post};
/// use tower_auth_session::{CrossSiteGuard, MemoryStore, SessionHandle, SessionManager, SignInOptions};
///
/// async fn sign_in(_: CrossSiteGuard, session: SessionHandle) -> &'static str {
///     // ... check the password ...
///     match session.sign_in("alice", SignInOptions::new()).await {
///         Ok(_) => "welcome",
///         Err(_) => "try again later",
///     }
/// }
///
/// let manager = SessionManager::builder(MemoryStore::new())
///     .secret(b"an example secret of at least 32 bytes!")
///     .trusted_origins(["https://app.example.com"])
///     .build()
///     .unwrap();
/// let app: Router = Router::new().route("/sign-in", post(sign_in)).layer(manager.layer());
/// # let _ = app;
/// ```
#[derive(Debug, Clone, Copy)]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub struct CrossSiteGuard;

impl<S: Send + Sync> FromRequestParts<S> for CrossSiteGuard {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let handle =
            <SessionHandle as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        // Exempt as a bearer request only if the layer used our bearer token.
        handle.check_cross_site(&parts.headers)?;
        Ok(Self)
    }
}
