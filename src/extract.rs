//! axum extractors (feature `axum`).

use axum::Json;
use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::request::Parts;

use crate::handle::SessionHandle;
use crate::session::Session;

/// The signed-in session; rejects with 401 `{"error":"unauthenticated"}` when there is
/// none, and 503 `{"error":"session_store_unavailable"}` when a store needed to decide
/// was down (the user is not signed out by an outage).
///
/// Use `Option<CurrentSession>` where signing in is optional.
#[derive(Debug, Clone)]
pub struct CurrentSession(pub Session);

/// Why an extractor refused the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionRejection {
    /// No valid session: 401.
    Unauthenticated,
    /// A store was down: 503.
    Unavailable,
    /// The session is live but not fresh enough for a sensitive action: 403.
    NotFresh,
    /// A state-changing request from a site that is not trusted: 403.
    CrossSite,
    /// The `SessionLayer` is not installed in front of this handler: 500.
    MissingLayer,
}

impl IntoResponse for SessionRejection {
    fn into_response(self) -> Response {
        let (status, error) = match self {
            Self::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "session_store_unavailable"),
            Self::NotFresh => (StatusCode::FORBIDDEN, "session_not_fresh"),
            Self::CrossSite => (StatusCode::FORBIDDEN, "cross_site_request"),
            Self::MissingLayer => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "SessionHandle not found in request extensions: add SessionManager::layer() around this route",
            ),
        };
        if self == Self::MissingLayer {
            tracing::error!("{error}");
        }
        (status, Json(serde_json::json!({ "error": error }))).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SessionHandle {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<SessionHandle>()
            .cloned()
            .ok_or(SessionRejection::MissingLayer)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentSession {
    type Rejection = SessionRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let handle = SessionHandle::from_request_parts(parts, state).await?;
        match handle.current() {
            Some(session) => Ok(Self(session)),
            None if handle.is_unavailable() => Err(SessionRejection::Unavailable),
            None => Err(SessionRejection::Unauthenticated),
        }
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
