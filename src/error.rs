//! Error types: configuration mistakes caught at start-up, and failures at run time.

use std::fmt;

use crate::rejection::Refusal;

/// A configuration value that cannot work. Raised when the manager is built, never later.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A secret shorter than 32 bytes.
    SecretTooShort {
        /// How long it was.
        len: usize,
    },
    /// A key id that is empty, too long, or has characters other than `[A-Za-z0-9_-]`.
    InvalidKeyId {
        /// The id given.
        id: String,
    },
    /// Two keys in one ring share an id.
    DuplicateKeyId {
        /// The repeated id.
        id: String,
    },
    /// A key ring with no keys.
    NoKeys,
    /// No secret or key ring was given to the builder.
    MissingKeys,
    /// An option is out of range or contradicts another.
    Invalid {
        /// Which option.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SecretTooShort { len } => write!(
                f,
                "session secret is {len} bytes; at least 32 random bytes are required"
            ),
            Self::InvalidKeyId { id } => write!(
                f,
                "key id {id:?} must be 1-16 characters of A-Z, a-z, 0-9, '-' or '_'"
            ),
            Self::DuplicateKeyId { id } => write!(f, "key id {id:?} appears twice in the ring"),
            Self::NoKeys => f.write_str("the key ring is empty"),
            Self::MissingKeys => f.write_str("no session secret or key ring was configured"),
            Self::Invalid { option, reason } => write!(f, "invalid `{option}`: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A storage tier failed (connection, timeout, query). Says nothing about the session.
#[derive(Debug)]
pub struct StoreError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A store error with a message and no source.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A store error wrapping the driver's error.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// Only the message: the driver's error is the [`source`](std::error::Error::source), so a
/// reporter that walks the chain prints it once.
impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// What a session operation (sign-in, sign-out, revoke, …) can fail with.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The source of truth could not commit; nothing was changed and no cookie is set.
    Store(StoreError),
    /// The operation needs a signed-in session and there is none.
    NoSession,
    /// App-defined fields could not be (de)serialized.
    Fields(serde_json::Error),
    /// The user id is empty, longer than 255 bytes, or contains NUL.
    InvalidUserId,
    /// A page cursor that this crate did not hand out (see
    /// `SessionManager::list_user_sessions_page`).
    InvalidCursor,
    /// A request tried to write an app field that the
    /// [`FieldPolicy`](crate::FieldPolicy) keeps for server code (the field's name).
    FieldNotWritable(String),
    /// The session kept changing under a conditional write (concurrent updates of one
    /// session); nothing was written by this call, and trying again may succeed.
    Conflict,
    /// The app's check refused the operation (an impersonation the caller may not make).
    Forbidden,
    /// `stop_impersonating` on a session that is not an impersonation.
    NotImpersonating,
    /// A before-hook refused (or failed, which refuses): nothing was written; the
    /// refusal's status and code are the answer.
    Refused(Refusal),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Transparent: the store error says what failed; its causes follow as sources.
            Self::Store(e) => e.fmt(f),
            Self::NoSession => f.write_str("no valid session"),
            Self::Fields(_) => f.write_str("invalid session fields"),
            Self::InvalidUserId => f.write_str("user id must be 1-255 bytes without NUL"),
            Self::InvalidCursor => f.write_str("invalid page cursor"),
            Self::FieldNotWritable(name) => {
                write!(f, "the session field {name:?} cannot be set by the client")
            }
            Self::Conflict => f.write_str("the session changed at the same time; try again"),
            Self::Forbidden => f.write_str("this session may not do that"),
            Self::NotImpersonating => f.write_str("the current session is not an impersonation"),
            Self::Refused(refusal) => f.write_str(refusal.message()),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => e.source(),
            Self::Fields(e) => Some(e),
            _ => None,
        }
    }
}

impl From<StoreError> for SessionError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl SessionError {
    /// The HTTP status a handler should answer with: 401 without a session, 503 when a
    /// store could not commit, 400 for bad input (user id, fields, page cursor), 403 for a
    /// field the client may not write, 409 for a write that lost to concurrent ones.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::Store(_) => http::StatusCode::SERVICE_UNAVAILABLE,
            Self::NoSession => http::StatusCode::UNAUTHORIZED,
            Self::Fields(_) | Self::InvalidUserId | Self::InvalidCursor => {
                http::StatusCode::BAD_REQUEST
            }
            Self::FieldNotWritable(_) | Self::Forbidden => http::StatusCode::FORBIDDEN,
            Self::Conflict => http::StatusCode::CONFLICT,
            Self::NotImpersonating => http::StatusCode::BAD_REQUEST,
            Self::Refused(refusal) => refusal.status(),
        }
    }

    /// The short machine-readable code of the JSON body (`{"error": "<code>"}`).
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Store(_) => "session_store_unavailable",
            Self::NoSession => "unauthenticated",
            Self::Fields(_) => "invalid_session_fields",
            Self::InvalidUserId => "invalid_user_id",
            Self::InvalidCursor => "invalid_cursor",
            Self::FieldNotWritable(_) => "field_not_writable",
            Self::Conflict => "session_conflict",
            Self::Forbidden => "forbidden",
            Self::NotImpersonating => "not_impersonating",
            Self::Refused(refusal) => refusal.code(),
        }
    }
}

/// A handler can return `Result<_, SessionError>`: the failure becomes its status and a
/// JSON `{"error": "<code>"}` body (a store failure is logged, with its causes, and
/// answers 503; it never turns into a 200).
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
impl axum::response::IntoResponse for SessionError {
    fn into_response(self) -> axum::response::Response {
        if let Self::Store(_) = &self {
            tracing::error!(error = %chain(&self), "session operation failed");
        }
        crate::rejection::error_response(self.status(), self.error_code(), &self.to_string())
    }
}

/// A gRPC method can answer `Err(error.into())`: `Unavailable` when a store could not
/// commit (logged with its causes), `Unauthenticated` without a session,
/// `InvalidArgument` for bad input. The message never holds more than the error's own
/// `Display`.
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
impl From<SessionError> for tonic::Status {
    fn from(error: SessionError) -> Self {
        let message = error.to_string();
        match error {
            SessionError::Store(_) => {
                tracing::error!(error = %chain(&error), "session operation failed");
                Self::unavailable(message)
            }
            SessionError::NoSession => Self::unauthenticated(message),
            SessionError::Fields(_) | SessionError::InvalidUserId | SessionError::InvalidCursor => {
                Self::invalid_argument(message)
            }
            SessionError::FieldNotWritable(_) | SessionError::Forbidden => {
                Self::permission_denied(message)
            }
            SessionError::Conflict => Self::aborted(message),
            SessionError::NotImpersonating => Self::failed_precondition(message),
            SessionError::Refused(refusal) => crate::rejection::refused_status(refusal),
        }
    }
}

/// An error and its sources, `a: b: c`, for log lines (each error's `Display` says only
/// its own part).
pub(crate) fn chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> impl fmt::Display + 'a {
    struct Chain<'a>(&'a (dyn std::error::Error + 'static));
    impl fmt::Display for Chain<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{}", self.0)?;
            let mut source = self.0.source();
            while let Some(error) = source {
                write!(f, ": {error}")?;
                source = error.source();
            }
            Ok(())
        }
    }
    Chain(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_prints_its_own_part_once() {
        let io = std::io::Error::other("connection refused");
        let store = StoreError::with_source("redis unreachable", io);
        assert_eq!(store.to_string(), "redis unreachable");
        assert_eq!(
            chain(&store).to_string(),
            "redis unreachable: connection refused"
        );

        let session = SessionError::from(store);
        assert_eq!(session.to_string(), "redis unreachable");
        assert_eq!(
            chain(&session).to_string(),
            "redis unreachable: connection refused"
        );

        let fields = SessionError::Fields(serde_json::from_str::<u8>("x").unwrap_err());
        let text = chain(&fields).to_string();
        assert!(text.starts_with("invalid session fields: "), "{text}");
        assert_eq!(text.matches("expected value").count(), 1, "{text}");
    }

    #[test]
    fn session_errors_map_to_statuses() {
        assert_eq!(
            SessionError::NoSession.status(),
            http::StatusCode::UNAUTHORIZED
        );
        let store = SessionError::Store(StoreError::new("down"));
        assert_eq!(store.status(), http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            SessionError::InvalidUserId.status(),
            http::StatusCode::BAD_REQUEST
        );
        let field = SessionError::FieldNotWritable("role".into());
        assert_eq!(field.status(), http::StatusCode::FORBIDDEN);
        assert_eq!(SessionError::Conflict.status(), http::StatusCode::CONFLICT);
    }
}
