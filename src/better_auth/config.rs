//! [`BetterAuthConfig`]: the Better Auth app's settings, mirrored, so both sides read
//! and write the same cookies, rows and keys.

use std::time::Duration;

use super::cache::{CacheStrategy, CookieCacheCodec};
use super::cookie::{BetterAuthCookieNames, SignedCookie};
use crate::error::ConfigError;

/// The settings a Rust service must share with the Better Auth app (reference §8). Each
/// default is Better Auth 1.7's.
#[derive(Debug, Clone)]
pub struct BetterAuthConfig {
    secret: String,
    /// `advanced.cookiePrefix` (`better-auth`).
    pub cookie_prefix: String,
    /// Whether the app's cookies are `Secure` (and so named `__Secure-…`).
    pub secure: bool,
    /// `advanced.cookies.session_token.name`, if the app overrides it.
    pub session_token_name: Option<String>,
    /// `session.expiresIn` (7 days).
    pub expires_in: Duration,
    /// `session.updateAge` (1 day).
    pub update_age: Duration,
    /// `session.disableSessionRefresh` (false).
    pub disable_refresh: bool,
    /// `session.cookieCache`: `None` when disabled, else its strategy.
    pub cookie_cache: Option<CacheStrategy>,
    /// `session.cookieCache.maxAge` (5 minutes).
    pub cookie_cache_max_age: Duration,
    /// `session.cookieCache.version`, when it is a string (`"1"`).
    pub cookie_cache_version: String,
    /// Believe a valid cache for its `maxAge` without asking storage: Better Auth's own
    /// revocation latency (up to `maxAge`). Off: a cache hit is still confirmed with one
    /// storage read, so a revoke anywhere is seen at once.
    pub trust_cookie_cache: bool,
    /// The secondary storage's key prefix (`better-auth:`, the official Redis adapter's).
    pub redis_prefix: String,
    /// `secondaryStorage` is configured on the app.
    pub secondary_storage: bool,
    /// `session.storeSessionInDatabase` (false with a secondary storage, else implied).
    pub store_session_in_database: bool,
    /// `session.preserveSessionInDatabase` (false).
    pub preserve_session_in_database: bool,
    /// The app hashes tokens through an adapter wrapper (`token_transform`); not
    /// shareable here.
    pub hashed_tokens: bool,
    /// `session.cookieCache.version` is a function in the app; not shareable here.
    pub cookie_cache_version_is_function: bool,
    /// The app uses the JWT plugin's `sessionCookieCache` (EdDSA over JWKS); not
    /// shareable here.
    pub jwt_plugin_cookie_cache: bool,
}

impl BetterAuthConfig {
    /// Better Auth's defaults with the app's `secret` (for a rotating app,
    /// `secrets[0].value`: only that one signs `session_token`).
    pub fn new(secret: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
            cookie_prefix: "better-auth".to_owned(),
            secure: false,
            session_token_name: None,
            expires_in: Duration::from_secs(7 * 86_400),
            update_age: Duration::from_secs(86_400),
            disable_refresh: false,
            cookie_cache: None,
            cookie_cache_max_age: Duration::from_secs(300),
            cookie_cache_version: "1".to_owned(),
            trust_cookie_cache: false,
            redis_prefix: "better-auth:".to_owned(),
            secondary_storage: false,
            store_session_in_database: true,
            preserve_session_in_database: false,
            hashed_tokens: false,
            cookie_cache_version_is_function: false,
            jwt_plugin_cookie_cache: false,
        }
    }

    /// Checks that everything set can be shared; the error names the option and why.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |option: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                option,
                reason: reason.to_owned(),
            })
        };
        if self.secret.is_empty() {
            return invalid("better_auth.secret", "Better Auth's secret is required");
        }
        if self.hashed_tokens {
            return invalid(
                "better_auth.hashed_tokens",
                "a token hashed by an adapter wrapper on the TypeScript side cannot be shared; \
                 sessions are looked up by the raw token, as Better Auth stores it",
            );
        }
        if self.cookie_cache_version_is_function {
            return invalid(
                "better_auth.cookie_cache_version",
                "a version computed by a function on the TypeScript side cannot be mirrored; \
                 give the app a string version",
            );
        }
        if self.jwt_plugin_cookie_cache {
            return invalid(
                "better_auth.jwt_plugin_cookie_cache",
                "the JWT plugin's EdDSA session cache is not supported; use the jwt, jwe or \
                 compact strategy",
            );
        }
        if !self.secondary_storage && !self.store_session_in_database {
            return invalid(
                "better_auth.store_session_in_database",
                "without a secondary storage Better Auth keeps sessions in the database",
            );
        }
        if self.preserve_session_in_database && !self.store_session_in_database {
            return invalid(
                "better_auth.preserve_session_in_database",
                "preserving rows needs storeSessionInDatabase",
            );
        }
        if self.update_age > self.expires_in {
            return invalid("better_auth.update_age", "longer than expires_in");
        }
        if self.cookie_cache.is_some() && self.cookie_cache_max_age.as_secs() == 0 {
            return invalid("better_auth.cookie_cache_max_age", "zero with the cache on");
        }
        Ok(())
    }

    /// The app's secret.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The cookie names the app uses.
    pub fn cookie_names(&self) -> BetterAuthCookieNames {
        let prefix = self.cookie_prefix.as_str();
        let token = self.session_token_name.as_deref();
        BetterAuthCookieNames::new(prefix, self.secure, token, None)
    }

    /// The `session_token` signer/verifier.
    pub fn signed_cookie(&self) -> SignedCookie {
        SignedCookie::new(&self.secret)
    }

    /// The cookie cache codec, when the app's cache is on.
    pub fn cookie_cache_codec(&self) -> Option<CookieCacheCodec> {
        let max_age = u32::try_from(self.cookie_cache_max_age.as_secs()).unwrap_or(u32::MAX);
        self.cookie_cache.map(|strategy| {
            CookieCacheCodec::new(&self.secret, strategy, max_age, &self.cookie_cache_version)
        })
    }

    /// Whether the database is read when Redis misses: Better Auth's fallback, on only with
    /// `storeSessionInDatabase` and without `preserveSessionInDatabase` (reference §5).
    pub fn database_fallback(&self) -> bool {
        !self.secondary_storage
            || (self.store_session_in_database && !self.preserve_session_in_database)
    }

    /// Whether a refresh is due for a session ending at `expires_at`: Better Auth's
    /// throttle, `expiresAt − expiresIn + updateAge ≤ now`.
    pub fn refresh_due(
        &self,
        expires_at: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        let span = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        !self.disable_refresh && expires_at - span(self.expires_in) + span(self.update_age) <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_cannot_be_shared_is_a_start_up_error_naming_it() {
        assert!(BetterAuthConfig::new("s").validate().is_ok());
        let message = |config: BetterAuthConfig| config.validate().unwrap_err().to_string();
        assert!(message(BetterAuthConfig::new("")).contains("better_auth.secret"));
        let mut hashed = BetterAuthConfig::new("s");
        hashed.hashed_tokens = true;
        assert!(message(hashed).contains("raw token"));
        let mut function = BetterAuthConfig::new("s");
        function.cookie_cache_version_is_function = true;
        assert!(message(function).contains("cookie_cache_version"));
        let mut plugin = BetterAuthConfig::new("s");
        plugin.jwt_plugin_cookie_cache = true;
        assert!(message(plugin).contains("EdDSA"));
        let mut nowhere = BetterAuthConfig::new("s");
        nowhere.store_session_in_database = false;
        assert!(message(nowhere).contains("store_session_in_database"));
    }

    #[test]
    fn the_refresh_throttle_is_better_auths() {
        let config = BetterAuthConfig::new("s");
        let now = chrono::Utc::now();
        let fresh = now + chrono::Duration::days(7);
        assert!(!config.refresh_due(fresh, now));
        assert!(config.refresh_due(now + chrono::Duration::days(6), now));
        assert!(!config.refresh_due(
            now + chrono::Duration::days(6) + chrono::Duration::seconds(1),
            now
        ));
    }
}
