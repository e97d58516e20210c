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

/// Which ways a client may carry its session token; see
/// [`SessionManagerBuilder::token_transport`](crate::SessionManagerBuilder::token_transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TokenTransport {
    /// The `session_token` cookie or `Authorization: Bearer` (the bearer token wins when a
    /// request carries both). The default.
    #[default]
    CookiesAndBearer,
    /// The cookie only: `Authorization` is never read.
    CookiesOnly,
    /// `Authorization: Bearer` only, for APIs and gRPC: cookies are never read and no
    /// response ever carries `Set-Cookie`.
    BearerOnly,
}

impl TokenTransport {
    pub(crate) fn reads_bearer(self) -> bool {
        self != Self::CookiesOnly
    }

    pub(crate) fn uses_cookies(self) -> bool {
        self != Self::BearerOnly
    }
}

/// When a response hands the signed token to the client in the `set-auth-token` header
/// (after a sign-in or a rotation); see
/// [`SessionManagerBuilder::auth_token_header`](crate::SessionManagerBuilder::auth_token_header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthTokenHeader {
    /// Every sign-in and rotation (Better Auth's behaviour; the default).
    #[default]
    Always,
    /// Only when the request asked for it: it carried an `x-want-auth-token` header, or it
    /// was authenticated by our bearer token.
    OnRequest,
    /// Never: clients keep the `HttpOnly` cookie only.
    Never,
}

/// Request header with which a client asks for `set-auth-token` under
/// [`AuthTokenHeader::OnRequest`].
pub const WANT_AUTH_TOKEN: &str = "x-want-auth-token";

/// Everything the manager was configured with; read-only after `build`.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    pub(crate) expires_in: Duration,
    pub(crate) update_age: Duration,
    pub(crate) disable_refresh: bool,
    /// Safe methods (GET, HEAD, OPTIONS, TRACE) never write: a due refresh waits for the
    /// next unsafe request.
    pub(crate) defer_refresh: bool,
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
    pub(crate) token_transport: TokenTransport,
    pub(crate) auth_token_header: AuthTokenHeader,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            expires_in: Duration::days(7),
            update_age: Duration::days(1),
            disable_refresh: false,
            defer_refresh: false,
            max_lifetime: None,
            fresh_age: Duration::days(1),
            dont_remember_expires_in: Duration::days(1),
            cookie_prefix: "tas".to_owned(),
            cookie_secure: true,
            cookie_domain: None,
            same_site: SameSite::Lax,
            max_sessions_per_user: Some(DEFAULT_MAX_SESSIONS_PER_USER),
            trusted_origins: TrustedOrigins::default(),
            token_transport: TokenTransport::default(),
            auth_token_header: AuthTokenHeader::default(),
        }
    }
}

impl SessionConfig {
    /// Whether `session` is due for its sliding refresh at `now`.
    ///
    /// The session's times come from a store, so the sum is checked: one past the end of
    /// the calendar is a refresh that never comes due, not a panic in the request.
    pub(crate) fn refresh_due(&self, session: &Session, now: DateTime<Utc>) -> bool {
        !self.disable_refresh
            && session.remember
            && session
                .updated_at
                .checked_add_signed(self.update_age)
                .is_some_and(|due| now >= due)
    }

    /// The expiry a refresh at `now` would give, capped by `max_lifetime` (a cap past the
    /// end of the calendar caps nothing).
    pub(crate) fn slid_expiry(&self, session: &Session, now: DateTime<Utc>) -> DateTime<Utc> {
        // `now` is the clock's, and the builder keeps durations under 1000 years.
        let slid = now + self.expires_in;
        match self
            .max_lifetime
            .and_then(|max| session.created_at.checked_add_signed(max))
        {
            Some(cap) => slid.min(cap),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_at_the_end_of_the_calendar_do_not_panic() {
        let now = Utc::now();
        let config = SessionConfig {
            max_lifetime: Some(Duration::days(30)),
            ..SessionConfig::default()
        };
        let mut session = Session::new("alice", now, now + Duration::days(7));
        session.updated_at = DateTime::<Utc>::MAX_UTC;
        session.created_at = DateTime::<Utc>::MAX_UTC;
        assert!(!config.refresh_due(&session, now));
        assert_eq!(config.slid_expiry(&session, now), now + config.expires_in);
        // Sane times still slide and cap as before.
        session.updated_at = now - Duration::days(2);
        session.created_at = now - Duration::days(29);
        assert!(config.refresh_due(&session, now));
        assert_eq!(
            config.slid_expiry(&session, now),
            session.created_at + Duration::days(30)
        );
    }
}

/// Put this in a request's extensions (from a layer outside the session layer) to keep
/// that request read-only: no refresh, no lazy deletion, no copy written back to Redis,
/// whatever its method (what
/// [`defer_refresh`](crate::SessionManagerBuilder::defer_refresh) does for safe methods).
///
/// ```
/// use tower_auth_session::NoRefresh;
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(NoRefresh);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRefresh;

impl SessionConfig {
    /// Whether this request must not write: `NoRefresh` in its extensions, or a safe
    /// method under `defer_refresh`.
    pub(crate) fn read_only<B>(&self, request: &http::Request<B>) -> bool {
        let safe = matches!(
            *request.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
        );
        (self.defer_refresh && safe) || request.extensions().get::<NoRefresh>().is_some()
    }
}
