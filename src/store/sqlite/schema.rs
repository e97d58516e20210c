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

#[cfg(test)]
mod tests {
    use super::super::rows;
    use super::*;

    /// What SQLite plans for `sql` on the migrated schema: one line per step.
    fn plan(connection: &Connection, sql: &str) -> String {
        let mut statement = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        // Every parameter NULL: the plan does not depend on the values.
        let nulls = vec![rusqlite::types::Null; statement.parameter_count()];
        let steps = statement
            .query_map(rusqlite::params_from_iter(nulls), |row| {
                row.get::<_, String>(3)
            })
            .unwrap();
        steps.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    /// Issue 18: no statement reads every row. Each one a request or the sweeper runs
    /// is planned on an index (a per-user one on the user's index, so its cost is that
    /// user's sessions whatever the table holds), never a `SCAN` of the table.
    #[test]
    fn every_statement_is_planned_on_an_index() {
        let mut connection = Connection::open_in_memory().unwrap();
        migrate(&mut connection).unwrap();
        for (sql, index) in [
            (rows::FIND, "tas_sessions_token_hash"),
            (rows::FIND_BY_ID, "sqlite_autoindex_tas_sessions_1"),
            (rows::UPDATE, "tas_sessions_token_hash"),
            (rows::DELETE, "tas_sessions_token_hash"),
            (rows::DELETE_BY_ID, "sqlite_autoindex_tas_sessions_1"),
            (rows::DELETE_BY_USER, "tas_sessions_user_id"),
            (rows::LIST_BY_USER, "tas_sessions_user_id"),
            (rows::DELETE_EXPIRED, "tas_sessions_expires_at"),
        ] {
            let plan = plan(&connection, sql);
            assert!(plan.contains(index), "{sql}:\n{plan}");
            assert!(
                !plan.lines().any(|step| step.trim() == "SCAN tas_sessions"),
                "{sql}:\n{plan}"
            );
        }
    }
}
