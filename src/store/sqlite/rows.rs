//! The statements, and converting sessions to and from rows.
//!
//! Columns are read by position (the order of `columns!`), which saves the name lookup
//! per column; text and blobs are borrowed from SQLite's row buffer where the session
//! does not need to own them (the token hash, the fields JSON).

use chrono::{DateTime, Utc};
use rusqlite::types::{FromSqlError, Type, ValueRef};
use rusqlite::{Connection, OptionalExtension, Params, Row, ToSql};

use crate::session::{Session, time_from_millis};
use crate::store::StoredSession;
use crate::token::TokenHash;

/// The columns every query that returns sessions returns, in the order `session` reads.
macro_rules! columns {
    () => {
        "id, token_hash, user_id, expires_at, created_at, updated_at, authenticated_at, \
         last_seen_at, ip_address, user_agent, remember, generation, fields"
    };
}

pub(super) const INSERT: &str = "INSERT INTO tas_sessions (id, token_hash, user_id, \
    expires_at, created_at, updated_at, authenticated_at, last_seen_at, ip_address, \
    user_agent, remember, generation, fields) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
pub(super) const FIND: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM tas_sessions WHERE token_hash = ?1"
);
pub(super) const FIND_BY_ID: &str =
    concat!("SELECT ", columns!(), " FROM tas_sessions WHERE id = ?1");
pub(super) const UPDATE: &str = "UPDATE tas_sessions SET token_hash = ?1, expires_at = ?2, \
    updated_at = ?3, authenticated_at = ?4, last_seen_at = ?5, ip_address = ?6, \
    user_agent = ?7, remember = ?8, generation = ?9, fields = ?10 \
    WHERE token_hash = ?11 AND generation = ?12";
pub(super) const DELETE: &str = concat!(
    "DELETE FROM tas_sessions WHERE token_hash = ?1 RETURNING ",
    columns!()
);
pub(super) const DELETE_BY_ID: &str = concat!(
    "DELETE FROM tas_sessions WHERE id = ?1 AND (?2 IS NULL OR user_id = ?2) RETURNING ",
    columns!()
);
pub(super) const DELETE_BY_USER: &str = concat!(
    "DELETE FROM tas_sessions WHERE user_id = ?1 AND (?2 IS NULL OR id <> ?2) RETURNING ",
    columns!()
);
pub(super) const LIST_BY_USER: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM tas_sessions WHERE user_id = ?1 AND expires_at > ?2 ORDER BY created_at, id"
);
pub(super) const DELETE_EXPIRED: &str = "DELETE FROM tas_sessions WHERE id IN \
    (SELECT id FROM tas_sessions WHERE expires_at <= ?1 LIMIT ?2)";

/// The one row `sql` returns (prepared once per connection), decoded, if any.
pub(super) fn one<T>(
    c: &Connection,
    sql: &str,
    params: impl Params,
    decode: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Option<T>> {
    c.prepare_cached(sql)?.query_row(params, decode).optional()
}

/// Every row `sql` returns (prepared once per connection), decoded.
pub(super) fn all<T>(
    c: &Connection,
    sql: &str,
    params: impl Params,
    decode: fn(&Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<Vec<T>> {
    c.prepare_cached(sql)?.query_map(params, decode)?.collect()
}

/// A decode failure of column `index`, as rusqlite reports its own.
fn invalid(index: usize, kind: Type, reason: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(index, kind, reason.to_owned().into())
}

/// A stored time; one outside 1970–9999 (written by something other than this store) is
/// a decode error, so it never reaches a request's time arithmetic.
fn time(row: &Row<'_>, index: usize) -> rusqlite::Result<DateTime<Utc>> {
    let ms: i64 = row.get(index)?;
    time_from_millis(ms).ok_or_else(|| invalid(index, Type::Integer, "time outside 1970-9999"))
}

/// The session in a row of `columns!`.
pub(super) fn session(row: &Row<'_>) -> rusqlite::Result<Session> {
    let fields = match row.get_ref(12)? {
        ValueRef::Text(text) => serde_json::from_slice(text)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(12, Type::Text, e.into()))?,
        other => {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                12,
                other.data_type(),
                FromSqlError::InvalidType.into(),
            ));
        }
    };
    let generation: i64 = row.get(11)?;
    Ok(Session {
        id: row.get(0)?,
        user_id: row.get(2)?,
        expires_at: time(row, 3)?,
        created_at: time(row, 4)?,
        updated_at: time(row, 5)?,
        authenticated_at: time(row, 6)?,
        last_seen_at: time(row, 7)?,
        ip_address: row.get(8)?,
        user_agent: row.get(9)?,
        remember: row.get::<_, i64>(10)? != 0,
        generation: u64::try_from(generation).unwrap_or(0),
        fields,
    })
}

/// The session and its token hash in a row of `columns!`.
pub(super) fn stored(row: &Row<'_>) -> rusqlite::Result<StoredSession> {
    let token_hash = match row.get_ref(1)? {
        ValueRef::Blob(bytes) => TokenHash::from_slice(bytes)
            .ok_or_else(|| invalid(1, Type::Blob, "token hash is not 32 bytes"))?,
        other => return Err(invalid(1, other.data_type(), "token hash is not a blob")),
    };
    Ok(StoredSession {
        token_hash,
        session: session(row)?,
    })
}

/// What a write binds, owned, so that it can move to the thread that writes.
pub(super) struct Written {
    id: String,
    user_id: String,
    expires_at: i64,
    created_at: i64,
    updated_at: i64,
    authenticated_at: i64,
    last_seen_at: i64,
    ip_address: Option<String>,
    user_agent: Option<String>,
    remember: i64,
    generation: i64,
    fields: String,
}

impl Written {
    pub(super) fn new(session: &Session) -> serde_json::Result<Self> {
        let millis = |t: DateTime<Utc>| t.timestamp_millis();
        Ok(Self {
            id: session.id.clone(),
            user_id: session.user_id.clone(),
            expires_at: millis(session.expires_at),
            created_at: millis(session.created_at),
            updated_at: millis(session.updated_at),
            authenticated_at: millis(session.authenticated_at),
            last_seen_at: millis(session.last_seen_at),
            ip_address: session.ip_address.clone(),
            user_agent: session.user_agent.clone(),
            remember: i64::from(session.remember),
            generation: i64::try_from(session.generation).unwrap_or(i64::MAX),
            fields: serde_json::to_string(&session.fields)?,
        })
    }

    /// The parameters of `INSERT`.
    pub(super) fn insert_params<'a>(&'a self, token_hash: &'a [u8; 32]) -> [&'a dyn ToSql; 13] {
        [
            &self.id,
            token_hash,
            &self.user_id,
            &self.expires_at,
            &self.created_at,
            &self.updated_at,
            &self.authenticated_at,
            &self.last_seen_at,
            &self.ip_address,
            &self.user_agent,
            &self.remember,
            &self.generation,
            &self.fields,
        ]
    }

    /// The parameters of `UPDATE`.
    pub(super) fn update_params<'a>(
        &'a self,
        target: &'a [u8; 32],
        token_hash: &'a [u8; 32],
        expected_generation: &'a i64,
    ) -> [&'a dyn ToSql; 12] {
        [
            target,
            &self.expires_at,
            &self.updated_at,
            &self.authenticated_at,
            &self.last_seen_at,
            &self.ip_address,
            &self.user_agent,
            &self.remember,
            &self.generation,
            &self.fields,
            token_hash,
            expected_generation,
        ]
    }
}
