//! [`BetterAuthPostgres`]: sessions in Better Auth's own `session` and `user` tables, as
//! its built-in Kysely adapter writes them (reference §4).
//!
//! **Keyed by the raw token.** Better Auth stores `session.token` raw and looks sessions
//! up with `WHERE "token" = $raw`, so this is the one store in the crate that sees a raw
//! token (`docs/SECURITY.md`, "Sessions shared with Better Auth"). Rows are read and
//! written as JSON (`to_jsonb`, `jsonb_populate_record`), so the columns plugins and
//! `additionalFields` add travel with the row without this code naming them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgPool;

use super::record::{BaSession, BaSessionWithUser, BaUser};
use crate::error::StoreError;

/// Bound on every call, so an outage answers rather than hangs.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What a conditional refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refreshed {
    /// The live row now ends at the new expiry.
    Yes,
    /// No live row had the token: revoked (or expired) meanwhile; nothing was written.
    Gone,
}

/// Better Auth's PostgreSQL tables.
#[derive(Debug, Clone)]
pub struct BetterAuthPostgres {
    pool: PgPool,
    session: String,
    user: String,
    preserve: bool,
}

impl BetterAuthPostgres {
    /// Over an open pool, with the tables in `schema` (`None`: the connection's search
    /// path), named `session` and `user` unless `session.modelName`/`user.modelName` say
    /// otherwise. `preserve` mirrors `preserveSessionInDatabase`: a revoke ends the row
    /// (`expiresAt = now`) instead of deleting it.
    pub fn new(pool: PgPool, schema: Option<&str>, preserve: bool) -> Self {
        Self::with_tables(pool, schema, "session", "user", preserve)
    }

    /// As [`new`](Self::new), with renamed tables.
    pub fn with_tables(
        pool: PgPool,
        schema: Option<&str>,
        session: &str,
        user: &str,
        preserve: bool,
    ) -> Self {
        let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
        let qualified = |table: &str| match schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(table)),
            None => quote(table),
        };
        Self {
            pool,
            session: qualified(session),
            user: qualified(user),
            preserve,
        }
    }

    /// The session with this raw token, joined with its user (expired ones too: the
    /// caller decides).
    pub async fn find(&self, token: &str) -> Result<Option<BaSessionWithUser>, StoreError> {
        let sql = format!(
            "SELECT to_jsonb(s)::text AS s, to_jsonb(u)::text AS u FROM {} s \
             JOIN {} u ON u.\"id\" = s.\"userId\" WHERE s.\"token\" = $1",
            self.session, self.user
        );
        let row = run(
            "find",
            sqlx::query(&sql).bind(token).fetch_optional(&self.pool),
        )
        .await?;
        let Some(row) = row else { return Ok(None) };
        let session = decode(row.try_get::<String, _>("s"))?;
        let user = decode(row.try_get::<String, _>("u"))?;
        Ok(Some(BaSessionWithUser { session, user }))
    }

    /// The user row, for a sign-in made on this side.
    pub async fn find_user(&self, user_id: &str) -> Result<Option<BaUser>, StoreError> {
        let sql = format!(
            "SELECT to_jsonb(u)::text AS u FROM {} u WHERE u.\"id\" = $1",
            self.user
        );
        let row = run(
            "find_user",
            sqlx::query(&sql).bind(user_id).fetch_optional(&self.pool),
        )
        .await?;
        row.map(|row| decode(row.try_get::<String, _>("u")))
            .transpose()
    }

    /// Inserts a session row (a sign-in made on this side), every field of `session`
    /// going to the column of its name.
    pub async fn create(&self, session: &BaSession) -> Result<(), StoreError> {
        let json = serde_json::to_string(session)
            .map_err(|e| StoreError::with_source("could not encode a session", e))?;
        let sql = format!(
            "INSERT INTO {0} SELECT * FROM jsonb_populate_record(NULL::{0}, $1::jsonb)",
            self.session
        );
        run("create", sqlx::query(&sql).bind(json).execute(&self.pool)).await?;
        Ok(())
    }

    /// Better Auth's refresh, made conditional: the row moves to `expires_at` only while
    /// it is still live at `now`, so a refresh racing a revoke can never bring the row
    /// back (a deleted row matches nothing; a preserved, ended one is not live).
    pub async fn refresh(
        &self,
        token: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Refreshed, StoreError> {
        let sql = format!(
            "UPDATE {} SET \"expiresAt\" = $2, \"updatedAt\" = $3 \
             WHERE \"token\" = $1 AND \"expiresAt\" > $3",
            self.session
        );
        let query = sqlx::query(&sql).bind(token).bind(expires_at).bind(now);
        let done = run("refresh", query.execute(&self.pool)).await?;
        Ok(if done.rows_affected() == 1 {
            Refreshed::Yes
        } else {
            Refreshed::Gone
        })
    }

    /// Revokes the session with this token as Better Auth's `deleteSession` does: the
    /// row deleted, or (preserve mode) ended if it is still live. Returns it if it was.
    pub async fn revoke(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<BaSession>, StoreError> {
        let mut ended = self.end("{t}.\"token\" = $1", token, None, now).await?;
        Ok(ended.pop())
    }

    /// Revokes the session with this public id (of `user_id`, when given).
    pub async fn revoke_by_id(
        &self,
        session_id: &str,
        user_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Option<BaSession>, StoreError> {
        let filter = "{t}.\"id\" = $1 AND ($2::text IS NULL OR {t}.\"userId\" = $2)";
        let mut ended = self.end(filter, session_id, user_id, now).await?;
        Ok(ended.pop())
    }

    /// Revokes every session of `user_id` but the one with the token `keep_token`
    /// (Better Auth's revoke-sessions, or revoke-other-sessions with `keep_token`).
    pub async fn revoke_user(
        &self,
        user_id: &str,
        keep_token: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<BaSession>, StoreError> {
        let filter = "{t}.\"userId\" = $1 AND ($2::text IS NULL OR {t}.\"token\" <> $2)";
        self.end(filter, user_id, keep_token, now).await
    }

    /// A user's live sessions, oldest first (Better Auth's `listSessions` on the
    /// database: `userId = $1 AND expiresAt > now`).
    pub async fn list_user(
        &self,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<BaSession>, StoreError> {
        let sql = format!(
            "SELECT to_jsonb(s)::text AS s FROM {} s WHERE s.\"userId\" = $1 \
             AND s.\"expiresAt\" > $2 ORDER BY s.\"createdAt\", s.\"id\"",
            self.session
        );
        let query = sqlx::query(&sql).bind(user_id).bind(now);
        let rows = run("list_user", query.fetch_all(&self.pool)).await?;
        rows.iter()
            .map(|row| decode(row.try_get::<String, _>("s")))
            .collect()
    }

    /// Deletes (or, preserving, ends) the rows `filter` picks, returning them as they
    /// were. `$1` and `$2` are the filter's parameters, `$3` the time; `{t}` stands for the
    /// table alias.
    async fn end(
        &self,
        filter: &str,
        first: &str,
        second: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<BaSession>, StoreError> {
        let sql = if self.preserve {
            // The old row's JSON, from a self-join on the pre-update snapshot.
            format!(
                "UPDATE {0} n SET \"expiresAt\" = $3 FROM {0} o \
                 WHERE o.\"id\" = n.\"id\" AND ({1}) AND n.\"expiresAt\" > $3 \
                 RETURNING to_jsonb(o)::text AS s",
                self.session,
                filter.replace("{t}", "n")
            )
        } else {
            format!(
                "DELETE FROM {0} s WHERE ({1}) AND $3::timestamptz IS NOT NULL \
                 RETURNING to_jsonb(s)::text AS s",
                self.session,
                filter.replace("{t}", "s")
            )
        };
        let query = sqlx::query(&sql).bind(first).bind(second).bind(now);
        let rows = run("revoke", query.fetch_all(&self.pool)).await?;
        rows.iter()
            .map(|row| decode(row.try_get::<String, _>("s")))
            .collect()
    }
}

/// One bounded call, its failure logged and returned as a [`StoreError`].
async fn run<T>(
    op: &'static str,
    call: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, StoreError> {
    let result = match tokio::time::timeout(TIMEOUT, call).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(error)) => StoreError::with_source("Better Auth's database failed", error),
        Err(_) => StoreError::new("Better Auth's database did not answer in time"),
    };
    tracing::warn!(op, error = %crate::error::chain(&result), "better-auth postgres call failed");
    Err(result)
}

fn decode<T: serde::de::DeserializeOwned>(
    text: Result<String, sqlx::Error>,
) -> Result<T, StoreError> {
    let text = text.map_err(|e| StoreError::with_source("unexpected row shape", e))?;
    serde_json::from_str(&text).map_err(|e| {
        let error = StoreError::with_source("a Better Auth row could not be decoded", e);
        tracing::warn!(error = %crate::error::chain(&error), "skipped a Better Auth row");
        error
    })
}
