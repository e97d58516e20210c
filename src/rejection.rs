//! Why a request has no session: [`RejectionReason`] says why a presented token was
//! refused (it rides in the response extensions), [`SessionRejection`] is the failure a
//! handler answers with when it needs a session and has none.
//!
//! Both are plain types: code outside axum (hyper, tonic, tests) reads the status and the
//! message from [`SessionRejection`] directly; with the `axum` feature it is also a
//! response, and with `tonic` it converts into a `tonic::Status`.

use std::fmt;

use http::StatusCode;

/// Why a presented session token was refused. Found in the response extensions and in
/// [`SessionHandle::rejection`](crate::SessionHandle::rejection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionReason {
    /// The cookie or bearer token was malformed, oversized, duplicated or badly signed.
    Invalid,
    /// No store knows the token: revoked, signed out, or never issued.
    Unknown,
    /// The session expired.
    Expired,
    /// An app hook refused the session's refresh (see [`Refusal`]).
    Refused(Refusal),
}

/// Why a hook refused: the status and code the response carries (`{"code": "<CODE>"}` in
/// the JSON body, upper-cased) and a sentence for people.
///
/// ```
/// use http::StatusCode;
/// use tower_auth_session::Refusal;
///
/// const BANNED: Refusal = Refusal::new(StatusCode::FORBIDDEN, "user_banned", "this user is banned");
/// assert_eq!(BANNED.status(), StatusCode::FORBIDDEN);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: &'static str,
}

impl Refusal {
    /// What a hook that errored, panicked or timed out answers: 503, the check could not
    /// be made (the user did nothing wrong; trying again may work).
    pub const HOOK_FAILED: Self = Self::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "session_hook_failed",
        "the server could not check this request; try again",
    );
    /// A banned user's sign-in: 403 `USER_BANNED` (Better Auth's code).
    pub const USER_BANNED: Self =
        Self::new(StatusCode::FORBIDDEN, "user_banned", "this user is banned");

    /// A refusal with this status, snake-case `code` and message.
    pub const fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self {
            status,
            code,
            message,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The snake-case code (the body's `error`; its `code` is this upper-cased).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The sentence for people.
    pub fn message(&self) -> &'static str {
        self.message
    }
}

/// Why a request that needs a session is refused, as an HTTP failure.
///
/// ```
/// use http::StatusCode;
/// use tower_auth_session::SessionRejection;
///
/// let rejection = SessionRejection::Unauthenticated;
/// assert_eq!(rejection.status(), StatusCode::UNAUTHORIZED);
/// assert_eq!(rejection.error_code(), "unauthenticated");
/// assert_eq!(rejection.to_string(), "no valid session");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionRejection {
    /// No valid session: 401.
    Unauthenticated,
    /// A store was down: 503 (the user is not signed out by an outage).
    Unavailable,
    /// The session is live but not fresh enough for a sensitive action: 403.
    NotFresh,
    /// A state-changing request from a site that is not trusted: 403.
    CrossSite,
    /// The `SessionLayer` is not installed in front of this handler: 500.
    MissingLayer,
    /// An app hook refused: its status and code.
    Refused(Refusal),
}

impl SessionRejection {
    /// The HTTP status this failure answers with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotFresh | Self::CrossSite => StatusCode::FORBIDDEN,
            Self::MissingLayer => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Refused(refusal) => refusal.status(),
        }
    }

    /// The short machine-readable code of the JSON body (`{"error": "<code>"}`).
    pub fn error_code(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::Unavailable => "session_store_unavailable",
            Self::NotFresh => "session_not_fresh",
            Self::CrossSite => "cross_site_request",
            Self::MissingLayer => "session_layer_missing",
            Self::Refused(refusal) => refusal.code(),
        }
    }
}

impl fmt::Display for SessionRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unauthenticated => "no valid session",
            Self::Unavailable => "the session store is unavailable",
            Self::NotFresh => "the session is not fresh enough for this action",
            Self::CrossSite => "cross-site request refused",
            Self::MissingLayer => {
                "SessionHandle not found in request extensions: add SessionManager::layer() around this route"
            }
            Self::Refused(refusal) => refusal.message(),
        })
    }
}

impl std::error::Error for SessionRejection {}

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum::response::IntoResponse for SessionRejection {
    fn into_response(self) -> axum::response::Response {
        if self == Self::MissingLayer {
            tracing::error!("{self}");
        }
        error_response(self.status(), self.error_code(), &self.to_string())
    }
}

/// The JSON body of every failure the crate answers: `error` (snake case, as before),
/// and `code` (upper snake case) and `message` (a sentence), which Better Auth's client
/// reads.
#[cfg(feature = "axum")]
pub(crate) fn error_response(
    status: StatusCode,
    error: &str,
    message: &str,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = serde_json::json!({
        "error": error,
        "code": error.to_ascii_uppercase(),
        "message": message,
    });
    (status, axum::Json(body)).into_response()
}

/// The gRPC status for each failure: `Unauthenticated`, `Unavailable`, `PermissionDenied`
/// (not fresh, cross-site) and `Internal` (the layer is missing).
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
impl From<SessionRejection> for tonic::Status {
    fn from(rejection: SessionRejection) -> Self {
        let message = rejection.to_string();
        match rejection {
            SessionRejection::Unauthenticated => Self::unauthenticated(message),
            SessionRejection::Unavailable => Self::unavailable(message),
            SessionRejection::NotFresh | SessionRejection::CrossSite => {
                Self::permission_denied(message)
            }
            SessionRejection::MissingLayer => {
                tracing::error!("{}", rejection.error_code());
                Self::internal(message)
            }
            SessionRejection::Refused(refusal) => refused_status(refusal),
        }
    }
}

/// The gRPC status for a hook's refusal, by its HTTP status class.
#[cfg(feature = "tonic")]
pub(crate) fn refused_status(refusal: Refusal) -> tonic::Status {
    let message = refusal.message();
    match refusal.status() {
        StatusCode::UNAUTHORIZED => tonic::Status::unauthenticated(message),
        StatusCode::SERVICE_UNAVAILABLE => tonic::Status::unavailable(message),
        StatusCode::TOO_MANY_REQUESTS => tonic::Status::resource_exhausted(message),
        status if status.is_client_error() => tonic::Status::permission_denied(message),
        _ => tonic::Status::internal(message),
    }
}
