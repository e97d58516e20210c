//! [`PostgresStore`]: sessions in PostgreSQL (sqlx), for apps that run more than one
//! instance.
//!
//! The store owns two tables, `tas_sessions` and `tas_migrations`, in the schema you
//! choose (see [`PostgresStoreBuilder::schema`]). It brings its own migrations, applied
//! on connect in one transaction under an advisory lock, so several instances can start at
//! once and the app's own sqlx migrations are never touched. Every method is one
//! statement, and so one round trip.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow, PgValueFormat};
use sqlx::{Connection, Row, TypeInfo, ValueRef};

mod held;

use super::breaker::{Admission, Breaker};
use super::{BoxFuture, SessionStore, StoredSession};
use crate::error::{ConfigError, StoreError};
use crate::session::{Session, time_in_range};
use crate::token::TokenHash;
use held::Held;

/// Schema changes: statements applied in order, once per version, recorded in
/// `tas_migrations`. `{schema}` stands for the quoted schema name and a dot, or nothing.
///
/// One statement per string, each run with `sqlx::query`: a multi-statement
/// `sqlx::raw_sql` would make `connect`'s future fail to be provably `Send` (so it could
/// not be `tokio::spawn`ed).
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE {schema}tas_sessions (
            id TEXT PRIMARY KEY,
            token_hash BYTEA NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
            user_id TEXT NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            authenticated_at TIMESTAMPTZ NOT NULL,
            last_seen_at TIMESTAMPTZ NOT NULL,
            ip_address TEXT,
            user_agent TEXT,
            remember BOOLEAN NOT NULL,
            generation BIGINT NOT NULL,
            fields JSONB NOT NULL
        )",
            "CREATE INDEX tas_sessions_user_id ON {schema}tas_sessions (user_id)",
            "CREATE INDEX tas_sessions_expires_at ON {schema}tas_sessions (expires_at)",
        ],
    ),
    (
        // Per-user calls by (user, expiry): with `user_id` alone, a table whose statistics
        // are stale (just after a bulk load, say) was planned as a bitmap AND with the
        // `expires_at` index, reading every live session to list one user's (17.8 ms at 1M
        // sessions; 0.04 ms with this index). The composite index also serves `user_id = $1`
        // alone, so the old one goes.
        2,
        &[
            "CREATE INDEX tas_sessions_user_expires ON {schema}tas_sessions (user_id, expires_at)",
            "DROP INDEX {schema}tas_sessions_user_id",
        ],
    ),
];

/// First half of the advisory lock key that serialises migrations ("tas" in ASCII); the
/// second half is a hash of the schema name, so stores in different schemas do not wait
/// for each other.
const MIGRATION_LOCK: i32 = 0x0074_6173;

/// Connections idle for longer than this are pinged before use; fresher ones are not,
/// so a query costs one round trip instead of two (sqlx pings every connection on
/// acquire by default, and again when it is released).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

/// Default bound on every call, waiting for a pooled connection included: an outage
/// answers within it rather than after sqlx's 30 s acquire timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Default time between background probes while the circuit is open.
const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);

const MIGRATION_FAILED: &str = "could not apply the session store's migrations";

/// The columns of a session as every query returns them, in the order of [`col`].
///
/// Times come as they are stored: [`time`] decodes them itself and refuses one outside
/// 1970–9999, so no value reaches sqlx's conversion, which panics on `'infinity'` and on
/// years past chrono's calendar (PostgreSQL goes to 294276). (Earlier versions guarded
/// each time with a `CASE` in SQL instead; that cost the server more than the rest of the
/// query's execution.)
fn columns() -> &'static str {
    "id, token_hash, user_id, expires_at, created_at, updated_at, authenticated_at, \
     last_seen_at, ip_address, user_agent, remember, generation, fields::text AS fields"
}

/// Sessions in PostgreSQL. Cheap to clone (clones share the pool).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_auth_session::SessionManager;
/// use tower_auth_session::store::PostgresStore;
///
/// let store = PostgresStore::connect("postgres://app@localhost/app").await?;
/// let manager = SessionManager::builder(store)
///     .secret(b"an example secret of at least 32 bytes!")
///     .build()?;
/// # let _ = manager;
/// # Ok(())
/// # }
/// ```
///
/// Times are stored as `timestamptz`, truncated to whole milliseconds (as the crate's
/// clocks produce them), app fields as `jsonb`. PostgreSQL cannot store the character
/// U+0000 in `text` or `jsonb`: a session whose user id, user agent or app fields contain
/// it cannot be written (the write fails with an error; nothing is stored).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Connections kept between calls, so that they skip sqlx's ping on release.
    held: Arc<Held>,
    schema: Option<Arc<str>>,
    queries: Arc<Queries>,
    guard: Arc<Guard>,
}

/// What keeps an outage fast: a bound on each call and a circuit breaker shared by clones.
#[derive(Debug)]
struct Guard {
    timeout: Duration,
    breaker: Arc<Breaker>,
}

/// Options for a [`PostgresStore`], from [`PostgresStore::builder`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_auth_session::store::PostgresStore;
///
/// let store = PostgresStore::builder()
///     .schema("auth")?
///     .connect("postgres://app@localhost/app")
///     .await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct PostgresStoreBuilder {
    schema: Option<String>,
    timeout: Duration,
    probe_interval: Duration,
}

impl Default for PostgresStoreBuilder {
    fn default() -> Self {
        Self {
            schema: None,
            timeout: DEFAULT_TIMEOUT,
            probe_interval: DEFAULT_PROBE_INTERVAL,
        }
    }
}

impl PostgresStoreBuilder {
    /// Bounds every store call, waiting for a pooled connection included (the pool's
    /// acquire timeout when [`connect`](Self::connect) builds the pool). Default 2 s, so a
    /// database outage answers 503 in at most that long instead of sqlx's 30 s. Zero is
    /// replaced by the default.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_auth_session::store::PostgresStore;
    /// let builder = PostgresStore::builder().timeout(Duration::from_millis(500));
    /// # let _ = builder;
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = if timeout.is_zero() {
            DEFAULT_TIMEOUT
        } else {
            timeout
        };
        self
    }

    /// After a call finds the database unreachable (no connection within the timeout, a
    /// call that timed out, a server starting up), every call fails at once, and a
    /// background task asks the database (`SELECT 1`) every `interval` until it answers,
    /// which closes the circuit. Default 1 s, so recovery needs no restart and no request,
    /// and costs at most one interval. Zero is replaced by the default.
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = if interval.is_zero() {
            DEFAULT_PROBE_INTERVAL
        } else {
            interval
        };
        self
    }

    /// Puts the store's tables in `schema` (created on connect if it does not exist)
    /// instead of the first schema of the connection's `search_path`.
    ///
    /// The name is spliced into SQL, so only plain lower-case identifiers are accepted:
    /// 1–63 characters of `a-z`, `0-9` and `_`, not starting with a digit or `pg_`.
    ///
    /// ```
    /// use tower_auth_session::store::PostgresStore;
    ///
    /// assert!(PostgresStore::builder().schema("auth").is_ok());
    /// assert!(PostgresStore::builder().schema("auth; DROP TABLE users").is_err());
    /// assert!(PostgresStore::builder().schema("Auth").is_err());
    /// ```
    pub fn schema(mut self, schema: impl Into<String>) -> Result<Self, ConfigError> {
        let schema = schema.into();
        validate_schema(&schema)?;
        self.schema = Some(schema);
        Ok(self)
    }

    /// Opens a pool to `url` and applies the schema (see [`PostgresStore::connect`]).
    pub async fn connect(self, url: &str) -> Result<PostgresStore, StoreError> {
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::with_source("invalid PostgreSQL URL", e))?;
        let options = if options.get_application_name().is_none() {
            options.application_name("tower-auth-session")
        } else {
            options
        };
        let pool = PgPoolOptions::new()
            .acquire_timeout(self.timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IF_IDLE_FOR {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(db_error("could not connect to PostgreSQL"))?;
        self.from_pool(pool).await
    }

    /// Uses an existing pool and applies the schema (see [`PostgresStore::from_pool`]).
    pub async fn from_pool(self, pool: PgPool) -> Result<PostgresStore, StoreError> {
        let prefix = match &self.schema {
            Some(schema) => format!("\"{schema}\"."),
            None => String::new(),
        };
        let store = PostgresStore {
            held: Held::new(pool.clone(), PING_IF_IDLE_FOR, held::RECYCLE_AFTER),
            pool,
            schema: self.schema.map(Arc::from),
            queries: Arc::new(Queries::new(&prefix)),
            guard: Arc::new(Guard {
                timeout: self.timeout,
                breaker: Arc::new(Breaker::new("postgres", self.probe_interval)),
            }),
        };
        store.migrate(&prefix).await?;
        Ok(store)
    }
}

fn validate_schema(schema: &str) -> Result<(), ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        option: "schema",
        reason: format!("{schema:?} {reason}"),
    };
    if schema.is_empty() || schema.len() > 63 {
        return Err(invalid("must be 1-63 characters long"));
    }
    if !schema
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(invalid("may only contain a-z, 0-9 and _"));
    }
    if schema.as_bytes()[0].is_ascii_digit() {
        return Err(invalid("must not start with a digit"));
    }
    if schema.starts_with("pg_") {
        return Err(invalid("must not start with pg_ (reserved for PostgreSQL)"));
    }
    Ok(())
}

/// The statements, with the schema spliced in once rather than on every call.
#[derive(Debug)]
struct Queries {
    insert: String,
    find: String,
    find_by_id: String,
    update: String,
    delete: String,
    delete_by_id: String,
    delete_by_user: String,
    list_by_user: String,
    delete_expired: String,
}

impl Queries {
    fn new(prefix: &str) -> Self {
        let table = format!("{prefix}tas_sessions");
        let columns = columns();
        Self {
            insert: format!(
                "INSERT INTO {table} (id, token_hash, user_id, expires_at, created_at, \
                 updated_at, authenticated_at, last_seen_at, ip_address, user_agent, remember, \
                 generation, fields) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb)"
            ),
            find: format!("SELECT {columns} FROM {table} WHERE token_hash = $1"),
            find_by_id: format!("SELECT {columns} FROM {table} WHERE id = $1"),
            update: format!(
                "UPDATE {table} SET token_hash = $1, expires_at = $2, updated_at = $3, \
                 authenticated_at = $4, last_seen_at = $5, ip_address = $6, user_agent = $7, \
                 remember = $8, generation = $9, fields = $10::jsonb \
                 WHERE token_hash = $11 AND generation = $12"
            ),
            delete: format!("DELETE FROM {table} WHERE token_hash = $1 RETURNING {columns}"),
            delete_by_id: format!(
                "DELETE FROM {table} WHERE id = $1 AND ($2::text IS NULL OR user_id = $2) \
                 RETURNING {columns}"
            ),
            delete_by_user: format!(
                "DELETE FROM {table} WHERE user_id = $1 AND ($2::text IS NULL OR id <> $2) \
                 RETURNING {columns}"
            ),
            // `COLLATE "C"` orders ties by bytes, as the other stores do, whatever the
            // database's collation.
            list_by_user: format!(
                "SELECT {columns} FROM {table} WHERE user_id = $1 AND expires_at > $2 \
                 ORDER BY created_at, id COLLATE \"C\""
            ),
            // SKIP LOCKED lets several cleanup tasks run at once without waiting on each
            // other's rows.
            delete_expired: format!(
                "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE expires_at <= $1 \
                 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ),
        }
    }
}

impl PostgresStore {
    /// Opens a pool to `url` (`postgres://user:password@host/database`) and applies the
    /// schema, with the tables in the first schema of the connection's `search_path`
    /// (normally `public`). Use [`PostgresStore::builder`] to choose a schema.
    ///
    /// The pool has sqlx's defaults, except that a connection is only pinged before use
    /// when it has been idle for more than 10 seconds, so that each store call is one
    /// round trip, and that waiting for a connection gives up after 2 s (sqlx: 30 s).
    /// Every call is bounded by that time and goes through a circuit breaker (see
    /// [`PostgresStoreBuilder::timeout`] and [`PostgresStoreBuilder::probe_interval`]):
    /// during an outage requests answer 503 at once, and service resumes by itself. For other pool settings, build the pool yourself and use
    /// [`PostgresStore::from_pool`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), tower_auth_session::StoreError> {
    /// use tower_auth_session::store::PostgresStore;
    /// let store = PostgresStore::connect("postgres://app@localhost/app").await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::builder().connect(url).await
    }

    /// Uses an existing pool and applies the schema, with the tables in the first schema
    /// of the connection's `search_path`.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use sqlx::postgres::PgPoolOptions;
    /// use tower_auth_session::store::PostgresStore;
    ///
    /// let pool = PgPoolOptions::new()
    ///     .max_connections(20)
    ///     .connect("postgres://app@localhost/app")
    ///     .await?;
    /// let store = PostgresStore::from_pool(pool).await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn from_pool(pool: PgPool) -> Result<Self, StoreError> {
        Self::builder().from_pool(pool).await
    }

    /// Options: the schema.
    ///
    /// ```
    /// use tower_auth_session::store::PostgresStore;
    /// let builder = PostgresStore::builder().schema("auth").unwrap();
    /// # let _ = builder;
    /// ```
    pub fn builder() -> PostgresStoreBuilder {
        PostgresStoreBuilder::default()
    }

    /// The pool, for the app's own queries or for inspection in tests.
    ///
    /// The store keeps up to half of the pool's connections (rounded down) between its own calls (so
    /// that they skip the ping sqlx sends over every connection handed back); the pool
    /// counts those as in use. Closing the pool takes them back at once.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the circuit breaker is open: a recent call found the database unreachable,
    /// and calls fail at once until a probe succeeds (for a readiness check).
    pub fn circuit_open(&self) -> bool {
        self.guard.breaker.is_open()
    }

    /// The schema the tables live in, when one was given.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Runs one store call under the timeout and the circuit breaker.
    fn guarded<'a, T: Send + 'a>(
        &'a self,
        call: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        Box::pin(async move {
            let breaker = &self.guard.breaker;
            if breaker.admit() == Admission::Reject {
                self.ensure_prober();
                return Err(StoreError::new("PostgreSQL unavailable (circuit open)"));
            }
            let error = match tokio::time::timeout(self.guard.timeout, call).await {
                Ok(Err(error)) if is_outage(&error) => error,
                Ok(result) => {
                    breaker.succeeded();
                    return result;
                }
                Err(_) => StoreError::new(format!(
                    "PostgreSQL did not answer within {} ms",
                    self.guard.timeout.as_millis()
                )),
            };
            breaker.failed(&crate::error::chain(&error));
            self.ensure_prober();
            Err(error)
        })
    }

    /// Starts the background probe (`SELECT 1` on a pooled connection, bounded by the
    /// call timeout) if the circuit is open and none runs.
    fn ensure_prober(&self) {
        let pool = self.pool.clone();
        let timeout = self.guard.timeout;
        self.guard.breaker.spawn_prober(move || {
            let pool = pool.clone();
            async move {
                let ping = sqlx::query("SELECT 1").execute(&pool);
                matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
            }
        });
    }

    async fn migrate(&self, prefix: &str) -> Result<(), StoreError> {
        let lock = "SELECT pg_advisory_xact_lock($1, hashtext(coalesce($2, current_schema(), '')))";
        let create_schema = self
            .schema
            .as_deref()
            .map(|schema| format!("CREATE SCHEMA \"{schema}\""));
        let create_migrations = format!(
            "CREATE TABLE IF NOT EXISTS {prefix}tas_migrations (\
             version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        );
        let applied = format!("SELECT MAX(version) FROM {prefix}tas_migrations");
        let record = format!("INSERT INTO {prefix}tas_migrations (version) VALUES ($1)");
        let fail = db_error(MIGRATION_FAILED);

        let mut tx = self.pool.begin().await.map_err(&fail)?;
        // Serialises concurrent starts: without it, two processes both see no migration
        // applied and both try to create the tables. The lock ends with the transaction.
        sqlx::query(lock)
            .bind(MIGRATION_LOCK)
            .bind(self.schema.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(&fail)?;
        if let (Some(schema), Some(create_schema)) = (self.schema.as_deref(), &create_schema) {
            // Checked first, so that an existing schema needs no CREATE privilege.
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                    .bind(schema)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(&fail)?;
            if !exists {
                sqlx::query(create_schema)
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error("could not create the session store's schema"))?;
            }
        }
        // Checked first too: a store whose tables are all there runs no DDL, so it starts
        // on a read-only role (`default_transaction_read_only`, a replica's user).
        let has_migrations: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{prefix}tas_migrations"))
            .fetch_one(&mut *tx)
            .await
            .map_err(&fail)?;
        if !has_migrations {
            sqlx::query(&create_migrations)
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(&fail)?;
        }
        let applied: Option<i64> = sqlx::query_scalar(&applied)
            .fetch_one(&mut *tx)
            .await
            .map_err(&fail)?;
        for (version, statements) in MIGRATIONS {
            if applied.is_some_and(|v| v >= *version) {
                continue;
            }
            for statement in *statements {
                let statement = statement.replace("{schema}", prefix);
                sqlx::query(&statement)
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .map_err(&fail)?;
            }
            sqlx::query(&record)
                .bind(version)
                .execute(&mut *tx)
                .await
                .map_err(&fail)?;
        }
        tx.commit().await.map_err(&fail)
    }
}

/// A PostgreSQL error without its `DETAIL`, `WHERE` and `HINT`.
///
/// PostgreSQL describes a constraint violation by quoting the offending row in `DETAIL`
/// (`Key (token_hash)=(\x…) already exists`), and sqlx's `Debug` prints it. The message
/// (which names the constraint) and the SQLSTATE are enough to diagnose, and leaving the
/// rest out keeps token hashes (and users' IP addresses) out of logs.
#[derive(Debug)]
struct DatabaseError {
    message: String,
    code: Option<String>,
}

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(code) = &self.code {
            write!(f, " (SQLSTATE {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for DatabaseError {}

fn db_error(context: &'static str) -> impl Fn(sqlx::Error) -> StoreError + Send + Sync {
    move |e| match e {
        sqlx::Error::Database(e) => StoreError::with_source(
            context,
            DatabaseError {
                message: e.message().to_owned(),
                code: e.code().map(|c| c.into_owned()),
            },
        ),
        e => StoreError::with_source(context, e),
    }
}

/// Whether `error` means no connection to the database could be had (the pool gave up
/// waiting, or the server is starting up), as opposed to one call failing.
///
/// An error on one pooled connection (I/O, a backend terminated by an admin) does not
/// count: after a database restart every idle connection fails once and is dropped, and
/// opening the circuit on each would keep the store down for one probe interval per dead
/// connection. A refused connect fails at once without the breaker; a silent database is
/// caught by the call timeout, which does open it.
fn is_outage(error: &StoreError) -> bool {
    let Some(source) = std::error::Error::source(error) else {
        return false;
    };
    if let Some(db) = source.downcast_ref::<DatabaseError>() {
        // cannot_connect_now: the server is starting up or recovering.
        return db.code.as_deref() == Some("57P03");
    }
    matches!(
        source.downcast_ref::<sqlx::Error>(),
        Some(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
    )
}

/// Stored times are truncated to milliseconds, so that every store returns the same
/// instant (`timestamptz` itself keeps microseconds).
fn millis(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(3)
}

fn to_i64(generation: u64) -> Result<i64, StoreError> {
    i64::try_from(generation).map_err(|_| StoreError::new("session generation exceeds i64::MAX"))
}

/// Positions of the columns in [`columns`]: decoding by position skips sqlx's lookup of
/// each column by name.
mod col {
    pub(super) const ID: usize = 0;
    pub(super) const TOKEN_HASH: usize = 1;
    pub(super) const USER_ID: usize = 2;
    pub(super) const EXPIRES_AT: usize = 3;
    pub(super) const CREATED_AT: usize = 4;
    pub(super) const UPDATED_AT: usize = 5;
    pub(super) const AUTHENTICATED_AT: usize = 6;
    pub(super) const LAST_SEEN_AT: usize = 7;
    pub(super) const IP_ADDRESS: usize = 8;
    pub(super) const USER_AGENT: usize = 9;
    pub(super) const REMEMBER: usize = 10;
    pub(super) const GENERATION: usize = 11;
    pub(super) const FIELDS: usize = 12;
}

/// PostgreSQL's epoch (2000-01-01) in Unix microseconds.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A time column as [`columns`] returns it; one outside 1970–9999 (`'infinity'`
/// included), NULL, or not a binary `timestamptz` is a decode error.
///
/// The binary value (what sqlx asks for) is read directly as microseconds since 2000,
/// with checked arithmetic: sqlx's own decoding panics outside chrono's calendar, and goes
/// through chrono's fixed-offset arithmetic, a third of the cost of decoding a row.
fn time(row: &PgRow, index: usize) -> Result<DateTime<Utc>, sqlx::Error> {
    let value = row.try_get_raw(index)?;
    let time = if value.is_null() {
        None
    } else if value.format() == PgValueFormat::Binary && value.type_info().name() == "TIMESTAMPTZ" {
        let bytes = value
            .as_bytes()
            .map_err(|source| sqlx::Error::ColumnDecode {
                index: index.to_string(),
                source,
            })?;
        let micros = <[u8; 8]>::try_from(bytes)
            .map(i64::from_be_bytes)
            .map_err(|e| sqlx::Error::ColumnDecode {
                index: index.to_string(),
                source: Box::new(e),
            })?;
        micros
            .checked_add(PG_EPOCH_MICROS)
            .and_then(DateTime::from_timestamp_micros)
    } else {
        return Err(sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: format!(
                "expected a binary timestamptz, got {}",
                value.type_info().name()
            )
            .into(),
        });
    };
    time.filter(|time| time_in_range(*time))
        .ok_or_else(|| sqlx::Error::ColumnDecode {
            index: index.to_string(),
            source: "timestamp outside 1970-9999".into(),
        })
}

fn session_from_row(row: &PgRow) -> Result<Session, sqlx::Error> {
    let fields: &str = row.try_get(col::FIELDS)?;
    let generation: i64 = row.try_get(col::GENERATION)?;
    Ok(Session {
        id: row.try_get(col::ID)?,
        user_id: row.try_get(col::USER_ID)?,
        expires_at: time(row, col::EXPIRES_AT)?,
        created_at: time(row, col::CREATED_AT)?,
        updated_at: time(row, col::UPDATED_AT)?,
        authenticated_at: time(row, col::AUTHENTICATED_AT)?,
        last_seen_at: time(row, col::LAST_SEEN_AT)?,
        ip_address: row.try_get(col::IP_ADDRESS)?,
        user_agent: row.try_get(col::USER_AGENT)?,
        remember: row.try_get(col::REMEMBER)?,
        generation: u64::try_from(generation).map_err(|e| sqlx::Error::ColumnDecode {
            index: "generation".into(),
            source: Box::new(e),
        })?,
        fields: serde_json::from_str(fields).map_err(|e| sqlx::Error::ColumnDecode {
            index: "fields".into(),
            source: Box::new(e),
        })?,
    })
}

fn stored_from_row(row: &PgRow) -> Result<StoredSession, sqlx::Error> {
    let hash: &[u8] = row.try_get(col::TOKEN_HASH)?;
    Ok(StoredSession {
        token_hash: TokenHash::from_slice(hash).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "token_hash".into(),
            source: "token hash is not 32 bytes".into(),
        })?,
        session: session_from_row(row)?,
    })
}

fn fields_json(session: &Session) -> String {
    serde_json::Value::Object(session.fields.clone()).to_string()
}

impl SessionStore for PostgresStore {
    fn create<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.guarded(async move {
            self.held
                .execute(
                    sqlx::query(&self.queries.insert)
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
                        .bind(session.remember)
                        .bind(to_i64(session.generation)?)
                        .bind(fields_json(session)),
                )
                .await
                .map_err(db_error("could not create the session"))?;
            Ok(())
        })
    }

    fn find<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        self.guarded(async move {
            let row = self
                .held
                .fetch_optional(sqlx::query(&self.queries.find).bind(&token_hash.as_bytes()[..]))
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
        self.guarded(async move {
            // A generation no row can have matches nothing.
            let Ok(expected_generation) = i64::try_from(expected_generation) else {
                return Ok(false);
            };
            let target = new_token_hash.unwrap_or(token_hash);
            let result = self
                .held
                .execute(
                    sqlx::query(&self.queries.update)
                        .bind(&target.as_bytes()[..])
                        .bind(millis(session.expires_at))
                        .bind(millis(session.updated_at))
                        .bind(millis(session.authenticated_at))
                        .bind(millis(session.last_seen_at))
                        .bind(&session.ip_address)
                        .bind(&session.user_agent)
                        .bind(session.remember)
                        .bind(to_i64(session.generation)?)
                        .bind(fields_json(session))
                        .bind(&token_hash.as_bytes()[..])
                        .bind(expected_generation),
                )
                .await
                .map_err(db_error("could not update the session"))?;
            Ok(result.rows_affected() == 1)
        })
    }

    fn delete<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        self.guarded(async move {
            let row = self
                .held
                .fetch_optional(sqlx::query(&self.queries.delete).bind(&token_hash.as_bytes()[..]))
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
        self.guarded(async move {
            let row = self
                .held
                .fetch_optional(sqlx::query(&self.queries.find_by_id).bind(session_id))
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
        self.guarded(async move {
            let row = self
                .held
                .fetch_optional(
                    sqlx::query(&self.queries.delete_by_id)
                        .bind(session_id)
                        .bind(user_id),
                )
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
        self.guarded(async move {
            let rows = self
                .held
                .fetch_all(
                    sqlx::query(&self.queries.delete_by_user)
                        .bind(user_id)
                        .bind(keep_session_id),
                )
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
        self.guarded(async move {
            let rows = self
                .held
                .fetch_all(
                    sqlx::query(&self.queries.list_by_user)
                        .bind(user_id)
                        .bind(now),
                )
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
        self.guarded(async move {
            let result = self
                .held
                .execute(
                    sqlx::query(&self.queries.delete_expired)
                        .bind(now)
                        .bind(i64::from(limit)),
                )
                .await
                .map_err(db_error("could not delete expired sessions"))?;
            Ok(result.rows_affected())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_positions_match_the_select_list() {
        let names: Vec<String> = columns()
            .split(", ")
            .map(|column| column.rsplit(' ').next().unwrap_or_default().to_owned())
            .collect();
        let at = |index: usize| names[index].as_str();
        assert_eq!(names.len(), 13);
        assert_eq!(at(col::ID), "id");
        assert_eq!(at(col::TOKEN_HASH), "token_hash");
        assert_eq!(at(col::USER_ID), "user_id");
        assert_eq!(at(col::EXPIRES_AT), "expires_at");
        assert_eq!(at(col::CREATED_AT), "created_at");
        assert_eq!(at(col::UPDATED_AT), "updated_at");
        assert_eq!(at(col::AUTHENTICATED_AT), "authenticated_at");
        assert_eq!(at(col::LAST_SEEN_AT), "last_seen_at");
        assert_eq!(at(col::IP_ADDRESS), "ip_address");
        assert_eq!(at(col::USER_AGENT), "user_agent");
        assert_eq!(at(col::REMEMBER), "remember");
        assert_eq!(at(col::GENERATION), "generation");
        assert_eq!(at(col::FIELDS), "fields");
    }

    #[test]
    fn plain_lower_case_schema_names_are_accepted() {
        for name in ["auth", "_private", "tas_sessions_2", &"a".repeat(63)] {
            assert!(validate_schema(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn schema_names_that_could_break_out_of_quotes_are_refused() {
        for name in [
            "",
            "Auth",
            "auth\"; DROP TABLE users; --",
            "auth.sessions",
            "au th",
            "1auth",
            "pg_catalog",
            "sch\u{e9}ma",
            "a\0b",
            &"a".repeat(64),
        ] {
            let error = validate_schema(name).expect_err(name);
            assert!(
                matches!(
                    error,
                    ConfigError::Invalid {
                        option: "schema",
                        ..
                    }
                ),
                "{error:?}"
            );
        }
    }

    #[test]
    fn database_errors_keep_message_and_code_but_not_the_detail() {
        let error = DatabaseError {
            message: "duplicate key value violates unique constraint \"x\"".into(),
            code: Some("23505".into()),
        };
        assert_eq!(
            error.to_string(),
            "duplicate key value violates unique constraint \"x\" (SQLSTATE 23505)"
        );
    }
}
