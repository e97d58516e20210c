//! [`SqliteStore`]: sessions in an SQLite file (sqlx), the embedded default.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
};

use super::{BoxFuture, SessionStore, StoredSession};
use crate::error::StoreError;
use crate::session::{Session, time_from_millis};
use crate::token::TokenHash;

/// Schema changes, applied in order once each and recorded in `tas_migrations`.
///
/// The crate keeps its own migration table rather than sqlx's `_sqlx_migrations`, so it
/// never collides with the application's own sqlx migrations in the same database.
const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE tas_sessions (
        id TEXT PRIMARY KEY NOT NULL,
        token_hash BLOB NOT NULL,
        user_id TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        authenticated_at INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        ip_address TEXT,
        user_agent TEXT,
        remember INTEGER NOT NULL,
        generation INTEGER NOT NULL,
        fields TEXT NOT NULL
    );
    CREATE UNIQUE INDEX tas_sessions_token_hash ON tas_sessions (token_hash);
    CREATE INDEX tas_sessions_user_id ON tas_sessions (user_id);
    CREATE INDEX tas_sessions_expires_at ON tas_sessions (expires_at);",
)];

const COLUMNS: &str = "id, token_hash, user_id, expires_at, created_at, updated_at, \
    authenticated_at, last_seen_at, ip_address, user_agent, remember, generation, fields";

/// Sessions in SQLite. Cheap to clone (clones share the pool).
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_auth_session::StoreError> {
/// use tower_auth_session::store::SqliteStore;
/// let store = SqliteStore::connect("sqlite:sessions.db").await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

fn db_error(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::with_source(context, e)
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `url` (`sqlite:path` or
    /// `sqlite::memory:`), in WAL mode, and applies the schema.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: SqliteConnectOptions = url.parse().map_err(db_error("invalid SQLite URL"))?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5));
        // An in-memory database lives as long as its connection: keep exactly one.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 8 })
            .min_connections(if in_memory { 1 } else { 0 })
            .idle_timeout(if in_memory {
                None
            } else {
                Some(std::time::Duration::from_secs(600))
            })
            .max_lifetime(if in_memory {
                None
            } else {
                Some(std::time::Duration::from_secs(1800))
            })
            .connect_with(options)
            .await
            .map_err(db_error("could not open the SQLite database"))?;
        Self::from_pool(pool).await
    }

    /// Uses an existing pool and applies the schema.
    pub async fn from_pool(pool: SqlitePool) -> Result<Self, StoreError> {
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// The pool, for the app's own queries or for inspection in tests.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(db_error("migration"))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS tas_migrations (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error("migration"))?;
        let applied: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM tas_migrations")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error("migration"))?;
        for (version, sql) in MIGRATIONS {
            if applied.is_some_and(|v| v >= *version) {
                continue;
            }
            sqlx::raw_sql(sql)
                .execute(&mut *tx)
                .await
                .map_err(db_error("migration"))?;
            sqlx::query("INSERT INTO tas_migrations (version, applied_at) VALUES (?, ?)")
                .bind(version)
                .bind(Utc::now().timestamp_millis())
                .execute(&mut *tx)
                .await
                .map_err(db_error("migration"))?;
        }
        tx.commit().await.map_err(db_error("migration"))
    }
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A stored time; one outside 1970–9999 (written by something other than this store) is
/// a decode error, so it never reaches a request's time arithmetic.
fn time(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    let ms: i64 = row.try_get(column)?;
    time_from_millis(ms).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: "timestamp outside 1970-9999".into(),
    })
}

fn session_from_row(row: &SqliteRow) -> Result<Session, sqlx::Error> {
    let fields: String = row.try_get("fields")?;
    let generation: i64 = row.try_get("generation")?;
    Ok(Session {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        expires_at: time(row, "expires_at")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        authenticated_at: time(row, "authenticated_at")?,
        last_seen_at: time(row, "last_seen_at")?,
        ip_address: row.try_get("ip_address")?,
        user_agent: row.try_get("user_agent")?,
        remember: row.try_get::<i64, _>("remember")? != 0,
        generation: u64::try_from(generation).unwrap_or(0),
        fields: serde_json::from_str(&fields).map_err(|e| sqlx::Error::ColumnDecode {
            index: "fields".into(),
            source: Box::new(e),
        })?,
    })
}

fn stored_from_row(row: &SqliteRow) -> Result<StoredSession, sqlx::Error> {
    let hash: Vec<u8> = row.try_get("token_hash")?;
    Ok(StoredSession {
        token_hash: TokenHash::from_slice(&hash).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "token_hash".into(),
            source: "token hash is not 32 bytes".into(),
        })?,
        session: session_from_row(row)?,
    })
}

fn fields_json(session: &Session) -> String {
    serde_json::Value::Object(session.fields.clone()).to_string()
}

fn generation(session: &Session) -> i64 {
    i64::try_from(session.generation).unwrap_or(i64::MAX)
}

impl SessionStore for SqliteStore {
    fn create<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query(
                "INSERT INTO tas_sessions (id, token_hash, user_id, expires_at, created_at, updated_at, \
                 authenticated_at, last_seen_at, ip_address, user_agent, remember, generation, fields) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&session.id)
            .bind(&token_hash.as_bytes()[..])
            .bind(&session.user_id)
            .bind(millis(session.expires_at))
            .bind(millis(session.created_at))
            .bind(millis(session.updated_at))
            .bind(millis(session.authenticated_at))
            .bind(millis(session.last_seen_at))
            .bind(&session.ip_address)
            .bind(&session.user_agent)
            .bind(i64::from(session.remember))
            .bind(generation(session))
            .bind(fields_json(session))
            .execute(&self.pool)
            .await
            .map_err(db_error("could not create the session"))?;
            Ok(())
        })
    }

    fn find<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM tas_sessions WHERE token_hash = ?"
            ))
            .bind(&token_hash.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("could not read the session"))?;
            row.as_ref()
                .map(session_from_row)
                .transpose()
                .map_err(db_error("could not decode the session"))
        })
    }

    fn update<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        expected_generation: u64,
        session: &'a Session,
        new_token_hash: Option<&'a TokenHash>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let target = new_token_hash.unwrap_or(token_hash);
            let result = sqlx::query(
                "UPDATE tas_sessions SET token_hash = ?, expires_at = ?, updated_at = ?, \
                 authenticated_at = ?, last_seen_at = ?, ip_address = ?, user_agent = ?, \
                 remember = ?, generation = ?, fields = ? \
                 WHERE token_hash = ? AND generation = ?",
            )
            .bind(&target.as_bytes()[..])
            .bind(millis(session.expires_at))
            .bind(millis(session.updated_at))
            .bind(millis(session.authenticated_at))
            .bind(millis(session.last_seen_at))
            .bind(&session.ip_address)
            .bind(&session.user_agent)
            .bind(i64::from(session.remember))
            .bind(generation(session))
            .bind(fields_json(session))
            .bind(&token_hash.as_bytes()[..])
            .bind(i64::try_from(expected_generation).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(db_error("could not update the session"))?;
            Ok(result.rows_affected() == 1)
        })
    }

    fn delete<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(&format!(
                "DELETE FROM tas_sessions WHERE token_hash = ? RETURNING {COLUMNS}"
            ))
            .bind(&token_hash.as_bytes()[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("could not delete the session"))?;
            row.as_ref()
                .map(session_from_row)
                .transpose()
                .map_err(db_error("could not decode the session"))
        })
    }

    fn find_by_id<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(&format!("SELECT {COLUMNS} FROM tas_sessions WHERE id = ?"))
                .bind(session_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error("could not read the session"))?;
            row.as_ref()
                .map(stored_from_row)
                .transpose()
                .map_err(db_error("could not decode the session"))
        })
    }

    fn delete_by_id<'a>(
        &'a self,
        session_id: &'a str,
        user_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(&format!(
                "DELETE FROM tas_sessions WHERE id = ? AND (? IS NULL OR user_id = ?) RETURNING {COLUMNS}"
            ))
            .bind(session_id)
            .bind(user_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error("could not delete the session"))?;
            row.as_ref()
                .map(stored_from_row)
                .transpose()
                .map_err(db_error("could not decode the session"))
        })
    }

    fn delete_by_user<'a>(
        &'a self,
        user_id: &'a str,
        keep_session_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(&format!(
                "DELETE FROM tas_sessions WHERE user_id = ? AND (? IS NULL OR id <> ?) RETURNING {COLUMNS}"
            ))
            .bind(user_id)
            .bind(keep_session_id)
            .bind(keep_session_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("could not delete the user's sessions"))?;
            rows.iter()
                .map(stored_from_row)
                .collect::<Result<_, _>>()
                .map_err(db_error("could not decode the session"))
        })
    }

    fn list_by_user<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(&format!(
                "SELECT {COLUMNS} FROM tas_sessions WHERE user_id = ? AND expires_at > ? \
                 ORDER BY created_at, id"
            ))
            .bind(user_id)
            .bind(millis(now))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("could not list the user's sessions"))?;
            rows.iter()
                .map(session_from_row)
                .collect::<Result<_, _>>()
                .map_err(db_error("could not decode the session"))
        })
    }

    fn delete_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let result = sqlx::query(
                "DELETE FROM tas_sessions WHERE id IN \
                 (SELECT id FROM tas_sessions WHERE expires_at <= ? LIMIT ?)",
            )
            .bind(millis(now))
            .bind(i64::from(limit))
            .execute(&self.pool)
            .await
            .map_err(db_error("could not delete expired sessions"))?;
            Ok(result.rows_affected())
        })
    }
}
