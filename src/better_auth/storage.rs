//! [`BetterAuthStorage`]: Better Auth's tiers together, read, refreshed and revoked in
//! its own order (reference §5, §6, §8).
//!
//! Read: Redis first (with the revoke-all mark); on a miss the table, only in Better
//! Auth's fallback mode (`storeSessionInDatabase` without `preserveSessionInDatabase`,
//! or no Redis at all). Refresh: the table conditionally, then the Redis value only if
//! its key still exists. Revoke: both tiers always, so neither side's next read finds it.

use chrono::{DateTime, Utc};

use super::config::BetterAuthConfig;
#[cfg(feature = "postgres")]
use super::postgres::{BetterAuthPostgres, Refreshed};
use super::record::BaSessionWithUser;
#[cfg(feature = "redis")]
use super::redis::BetterAuthRedis;
use crate::error::StoreError;

/// The app's storage: its tables, its Redis, or both.
#[derive(Debug, Clone)]
pub struct BetterAuthStorage {
    config: BetterAuthConfig,
    #[cfg(feature = "postgres")]
    postgres: Option<BetterAuthPostgres>,
    #[cfg(feature = "redis")]
    redis: Option<BetterAuthRedis>,
}

impl BetterAuthStorage {
    /// The tiers the app uses; checked against `config` (tables without
    /// `storeSessionInDatabase`, or Redis where the app has none, are start-up errors).
    pub fn new(
        config: BetterAuthConfig,
        #[cfg(feature = "postgres")] postgres: Option<BetterAuthPostgres>,
        #[cfg(feature = "redis")] redis: Option<BetterAuthRedis>,
    ) -> Result<Self, crate::error::ConfigError> {
        config.validate()?;
        #[cfg(not(feature = "postgres"))]
        let has_tables = false;
        #[cfg(feature = "postgres")]
        let has_tables = postgres.is_some();
        #[cfg(not(feature = "redis"))]
        let has_redis = false;
        #[cfg(feature = "redis")]
        let has_redis = redis.is_some();
        let invalid = |reason: &str| crate::error::ConfigError::Invalid {
            option: "better_auth.storage",
            reason: reason.to_owned(),
        };
        if has_redis != config.secondary_storage {
            return Err(invalid(
                "Redis must be given exactly when the app has a secondary storage",
            ));
        }
        if has_tables != config.store_session_in_database {
            return Err(invalid(
                "the tables must be given exactly when the app stores sessions in its database",
            ));
        }
        Ok(Self {
            config,
            #[cfg(feature = "postgres")]
            postgres,
            #[cfg(feature = "redis")]
            redis,
        })
    }

    /// The shared configuration.
    pub fn config(&self) -> &BetterAuthConfig {
        &self.config
    }

    /// The live session with this raw token, as Better Auth would find it; `None` when
    /// missing, revoked by the user's mark, or past `expiresAt`.
    pub async fn find(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<BaSessionWithUser>, StoreError> {
        let mut found: Option<BaSessionWithUser> = None;
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            match redis.find_marked(token).await? {
                // Ended by the user's revoke-all mark: gone, with no fallback to the table.
                Some((_, true)) => return Ok(None),
                hit => found = hit.map(|(record, _)| record),
            }
        }
        #[cfg(feature = "postgres")]
        if found.is_none() && self.config.database_fallback() {
            if let Some(postgres) = &self.postgres {
                found = postgres.find(token).await?;
            }
        }
        Ok(found.filter(|record| record.session.expires_at >= now))
    }

    /// Better Auth's refresh of `record` to `expires_at`, conditional on every tier:
    /// `false` means the session was revoked meanwhile and nothing came back to life.
    pub async fn refresh(
        &self,
        record: &BaSessionWithUser,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut refreshed = record.clone();
        refreshed.session.expires_at = expires_at;
        refreshed.session.updated_at = now;
        let mut live = true;
        #[cfg(feature = "postgres")]
        if let Some(postgres) = &self.postgres {
            let token = &record.session.token;
            live = postgres.refresh(token, expires_at, now).await? == Refreshed::Yes;
        }
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            if live {
                let in_redis = redis.refresh(&refreshed, now).await?;
                // Better Auth's rule: a missing key is the end only where Redis alone
                // decides (no fallback to the table).
                if !in_redis && !self.config.database_fallback() {
                    live = false;
                }
            }
        }
        Ok(live)
    }

    /// Writes a session made on this side to every tier.
    pub async fn create(
        &self,
        record: &BaSessionWithUser,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        #[cfg(feature = "postgres")]
        if let Some(postgres) = &self.postgres {
            postgres.create(&record.session).await?;
        }
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            redis.create(record, now).await?;
        }
        let _ = now;
        Ok(())
    }

    /// Revokes one session in every tier; whether any tier had it.
    pub async fn revoke(&self, token: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut any = false;
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            any |= redis.revoke(token, now).await?.is_some();
        }
        #[cfg(feature = "postgres")]
        if let Some(postgres) = &self.postgres {
            any |= postgres.revoke(token, now).await?.is_some();
        }
        let _ = (token, now);
        Ok(any)
    }

    /// Revokes every session of `user_id` but the one with `keep_token` in every tier:
    /// the rows, every token they and the index name, and (for all, none kept) the
    /// revoke-all mark. The tokens revoked.
    pub async fn revoke_user(
        &self,
        user_id: &str,
        keep_token: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let mut tokens: Vec<String> = Vec::new();
        #[cfg(feature = "postgres")]
        if let Some(postgres) = &self.postgres {
            let rows = postgres.revoke_user(user_id, keep_token, now).await?;
            tokens.extend(rows.into_iter().map(|row| row.token));
        }
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            let deleted = redis
                .revoke_user(user_id, &tokens, keep_token, true, now)
                .await?;
            for record in deleted {
                if !tokens.contains(&record.session.token) {
                    tokens.push(record.session.token);
                }
            }
        }
        let _ = (user_id, keep_token, now);
        Ok(tokens)
    }
}
