//! The table layout and its migrations, unchanged since the sqlx-based store: a file
//! written by any earlier version opens as it is.

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// Schema changes, applied in order once each and recorded in `tas_migrations`.
///
/// The crate keeps its own migration table (not sqlx's `_sqlx_migrations`, nor any other
/// tool's), so it never collides with the application's own migrations in the same file.
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

/// Applies the migrations not yet recorded, in one immediate transaction, so two
/// processes opening a new file at once apply each migration once.
pub(super) fn migrate(connection: &mut Connection) -> rusqlite::Result<()> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS tas_migrations \
         (version INTEGER PRIMARY KEY NOT NULL, applied_at INTEGER NOT NULL)",
    )?;
    let applied: Option<i64> = tx
        .query_row("SELECT MAX(version) FROM tas_migrations", [], |row| {
            row.get(0)
        })
        .optional()?
        .flatten();
    for (version, sql) in MIGRATIONS {
        if applied.is_some_and(|v| v >= *version) {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO tas_migrations (version, applied_at) VALUES (?1, ?2)",
            (version, Utc::now().timestamp_millis()),
        )?;
    }
    tx.commit()
}
