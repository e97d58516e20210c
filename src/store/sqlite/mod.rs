//! [`SqliteStore`]: sessions in an SQLite file (rusqlite, SQLite bundled), the embedded
//! default.
//!
//! `connections` decides where each call runs (reads inline, writes on the blocking
//! pool), `rows` holds the statements and the row conversions, `schema` the migrations.

mod connections;
mod rows;
mod schema;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{BoxFuture, SessionStore, StoredSession};
use crate::error::StoreError;
use crate::session::Session;
use crate::token::TokenHash;
use connections::{Connections, Location};
use rows::Written;

/// Expired rows one cleanup transaction deletes: small enough that the writer is free
/// again within a few milliseconds (see `delete_expired`).
const EXPIRED_PER_WRITE: u64 = 100;

/// Sessions in SQLite. Cheap to clone (clones share the connections).
///
/// ```no_run
/// # async fn demo() -> Result<(), tower_auth_session::StoreError> {
/// use tower_auth_session::store::SqliteStore;
/// let store = SqliteStore::connect("sqlite:sessions.db").await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
///
/// The file is in WAL mode, so the application (or a shell) may open its own connection
/// to it, with any SQLite driver, and read or write alongside the store; the store's
/// tables are `tas_sessions` and `tas_migrations`. Dropping the last clone closes the
/// file.
#[derive(Clone)]
pub struct SqliteStore {
    connections: Arc<Connections>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.connections.path())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `url` and applies the schema.
    ///
    /// `url` is `sqlite:PATH` (or `sqlite://PATH`, or a bare path; the path may be
    /// percent-encoded), or `sqlite::memory:` for a database that lives as long as the
    /// store. Options: `?mode=rw` refuses to create a missing file; `?mode=rwc` (create)
    /// is the default; `cache=…` is accepted and ignored. Read-only (`mode=ro`),
    /// `immutable` and `vfs` are refused: a session store writes.
    /// A file is put in WAL mode, with a busy timeout of 5 s for writes.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (location, create) = Location::parse(url)
            .map_err(|reason| StoreError::new(format!("invalid SQLite URL: {reason}")))?;
        // Opening may wait for another process's lock (busy timeout), so not inline.
        let connections = tokio::task::spawn_blocking(move || Connections::open(location, create))
            .await
            .map_err(|e| StoreError::with_source("could not open the SQLite database", e))?
            .map_err(|e| StoreError::with_source("could not open the SQLite database", e))?;
        Ok(Self {
            connections: Arc::new(connections),
        })
    }

    /// The database file, or `None` for an in-memory database: for the application's
    /// own connection to it.
    pub fn path(&self) -> Option<&Path> {
        self.connections.path()
    }
}

impl SessionStore for SqliteStore {
    fn create<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let written = Written::new(session);
        let hash = *token_hash;
        Box::pin(async move {
            let written =
                written.map_err(|e| StoreError::with_source("could not encode the session", e))?;
            self.connections
                .write("could not create the session", move |c| {
                    c.prepare_cached(rows::INSERT)?
                        .execute(&written.insert_params(hash.as_bytes())[..])
                        .map(drop)
                })
                .await
        })
    }

    fn find<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        let hash = *token_hash;
        Box::pin(
            self.connections
                .read("could not read the session", move |c| {
                    rows::one(c, rows::FIND, [hash.as_bytes()], rows::session)
                }),
        )
    }

    fn update<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        expected_generation: u64,
        session: &'a Session,
        new_token_hash: Option<&'a TokenHash>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let written = Written::new(session);
        let hash = *token_hash;
        let target = *new_token_hash.unwrap_or(token_hash);
        let expected = i64::try_from(expected_generation).unwrap_or(i64::MAX);
        Box::pin(async move {
            let written =
                written.map_err(|e| StoreError::with_source("could not encode the session", e))?;
            let changed = self
                .connections
                .write("could not update the session", move |c| {
                    c.prepare_cached(rows::UPDATE)?.execute(
                        &written.update_params(target.as_bytes(), hash.as_bytes(), &expected)[..],
                    )
                })
                .await?;
            Ok(changed == 1)
        })
    }

    fn delete<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        let hash = *token_hash;
        Box::pin(
            self.connections
                .write("could not delete the session", move |c| {
                    rows::one(c, rows::DELETE, [hash.as_bytes()], rows::session)
                }),
        )
    }

    fn find_by_id<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        let id = session_id.to_owned();
        Box::pin(
            self.connections
                .read("could not read the session", move |c| {
                    rows::one(c, rows::FIND_BY_ID, [&id], rows::stored)
                }),
        )
    }

    fn delete_by_id<'a>(
        &'a self,
        session_id: &'a str,
        user_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        let id = session_id.to_owned();
        let user = user_id.map(str::to_owned);
        Box::pin(
            self.connections
                .write("could not delete the session", move |c| {
                    rows::one(c, rows::DELETE_BY_ID, (&id, &user), rows::stored)
                }),
        )
    }

    fn delete_by_user<'a>(
        &'a self,
        user_id: &'a str,
        keep_session_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>, StoreError>> {
        let user = user_id.to_owned();
        let keep = keep_session_id.map(str::to_owned);
        Box::pin(
            self.connections
                .write("could not delete the user's sessions", move |c| {
                    rows::all(c, rows::DELETE_BY_USER, (&user, &keep), rows::stored)
                }),
        )
    }

    fn list_by_user<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        let user = user_id.to_owned();
        let now = now.timestamp_millis();
        Box::pin(
            self.connections
                .read("could not list the user's sessions", move |c| {
                    rows::all(c, rows::LIST_BY_USER, (&user, now), rows::session)
                }),
        )
    }

    fn delete_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        let now = now.timestamp_millis();
        Box::pin(async move {
            // In small transactions, each its own turn on the writer: a sign-in queued
            // behind the sweep waits for one of them, not for the whole batch (1,000
            // rows in one statement held sign-ins up to 61 ms at 100k sessions).
            let mut deleted: u64 = 0;
            while deleted < u64::from(limit) {
                let chunk = (u64::from(limit) - deleted).min(EXPIRED_PER_WRITE);
                let removed = self
                    .connections
                    .write("could not delete expired sessions", move |c| {
                        c.prepare_cached(rows::DELETE_EXPIRED)?
                            .execute((now, i64::try_from(chunk).unwrap_or(i64::MAX)))
                    })
                    .await?;
                let removed = u64::try_from(removed).unwrap_or(u64::MAX);
                deleted += removed;
                if removed < chunk {
                    break;
                }
            }
            Ok(deleted)
        })
    }
}
