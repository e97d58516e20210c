//! Options and their defaults.

use chrono::{DateTime, Duration, Utc};

use crate::origin::TrustedOrigins;
use crate::session::Session;

/// `SameSite` attribute of the session cookies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites (the default).
    Lax,
    /// Never sent on cross-site requests.
    Strict,
    /// Always sent (requires `Secure`).
    None,
}

impl SameSite {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Lax => "Lax",
            Self::Strict => "Strict",
            Self::None => "None",
        }
    }
}

/// Everything the manager was configured with; read-only after `build`.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    pub(crate) expires_in: Duration,
    pub(crate) update_age: Duration,
    pub(crate) disable_refresh: bool,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) fresh_age: Duration,
    pub(crate) dont_remember_expires_in: Duration,
    pub(crate) cookie_prefix: String,
    pub(crate) cookie_secure: bool,
    pub(crate) cookie_domain: Option<String>,
    pub(crate) same_site: SameSite,
    /// Sign-in revokes the user's oldest sessions past this many live ones (`None`: no
    /// cap).
    pub(crate) max_sessions_per_user: Option<usize>,
    pub(crate) trusted_origins: TrustedOrigins,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            expires_in: Duration::days(7),
            update_age: Duration::days(1),
            disable_refresh: false,
            max_lifetime: None,
            fresh_age: Duration::days(1),
            dont_remember_expires_in: Duration::days(1),
            cookie_prefix: "tas".to_owned(),
            cookie_secure: true,
            cookie_domain: None,
            same_site: SameSite::Lax,
            max_sessions_per_user: Some(DEFAULT_MAX_SESSIONS_PER_USER),
            trusted_origins: TrustedOrigins::default(),
        }
    }
}

impl SessionConfig {
    /// Whether `session` is due for its sliding refresh at `now`.
    pub(crate) fn refresh_due(&self, session: &Session, now: DateTime<Utc>) -> bool {
        !self.disable_refresh && session.remember && now >= session.updated_at + self.update_age
    }

    /// The expiry a refresh at `now` would give, capped by `max_lifetime`.
    pub(crate) fn slid_expiry(&self, session: &Session, now: DateTime<Utc>) -> DateTime<Utc> {
        let slid = now + self.expires_in;
        match self.max_lifetime {
            Some(max) => slid.min(session.created_at + max),
            None => slid,
        }
    }
}

/// The default per-user cap: enough for every device a person owns, small enough that a
/// script signing in in a loop cannot grow one user's sessions (and the cost of listing
/// or revoking them) without bound.
pub(crate) const DEFAULT_MAX_SESSIONS_PER_USER: usize = 100;

/// Browsers cap cookie lifetimes at 400 days (RFC 6265bis); a longer `Max-Age` is clamped.
pub(crate) const MAX_COOKIE_AGE: Duration = Duration::days(400);
