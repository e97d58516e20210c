//! Error types: configuration mistakes caught at start-up, and failures at run time.

use std::fmt;

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

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
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
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(e) => write!(f, "session store unavailable: {e}"),
            Self::NoSession => f.write_str("no valid session"),
            Self::Fields(e) => write!(f, "session fields: {e}"),
            Self::InvalidUserId => f.write_str("user id must be 1-255 bytes without NUL"),
        }
    }
}

impl std::error::Error for SessionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
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
