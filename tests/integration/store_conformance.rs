//! The public conformance suite, run against every built-in store, and against broken
//! stores to show that it catches what it claims to; plus PostgreSQL-specific behaviour
//! (schemas, migrations under concurrency, restarts, errors).
#![cfg(feature = "conformance")]

use crate::common;

use chrono::{DateTime, Utc};
use tower_auth_session::store::{BoxFuture, StoredSession, conformance};
use tower_auth_session::{MemoryStore, Session, SessionStore, StoreError, TokenHash};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_passes_the_conformance_suite() {
    conformance::run(MemoryStore::new()).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("sessions.db").display());
    let store = tower_auth_session::store::SqliteStore::connect(&url)
        .await
        .unwrap();
    conformance::run(store).await;
}

/// Issue 14: a time another writer left in the table, past chrono's calendar or outside
/// 1970–9999, is a decode error (the request answers 503 for that session), never a
/// session whose times overflow a request's arithmetic.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_refuses_stored_times_outside_1970_to_9999() {
    use chrono::{Duration, SubsecRound};
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("sessions.db").display());
    let store = tower_auth_session::store::SqliteStore::connect(&url)
        .await
        .unwrap();
    let now = Utc::now().trunc_subsecs(3);
    for (column, ms) in [
        ("updated_at", DateTime::<Utc>::MAX_UTC.timestamp_millis()),
        ("expires_at", 253_402_300_800_000), // 10000-01-01
        ("created_at", -1),
    ] {
        let hash = tower_auth_session::Token::generate().hash();
        let session = Session::new("mallory", now, now + Duration::days(7));
        store.create(&hash, &session).await.unwrap();
        rusqlite::Connection::open(store.path().unwrap())
            .unwrap()
            .execute(
                &format!("UPDATE tas_sessions SET {column} = ?1 WHERE id = ?2"),
                (ms, &session.id),
            )
            .unwrap();
        let found = store.find(&hash).await;
        assert!(found.is_err(), "{column} = {ms}: {found:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_can_run_twice_at_once_against_one_shared_store() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let (a, b) = tokio::join!(
        tokio::spawn(conformance::run(store.clone())),
        tokio::spawn(conformance::run(store.clone())),
    );
    a.unwrap();
    b.unwrap();
    assert!(store.is_empty(), "the suite leaves nothing behind");
}

/// A deliberate contract violation, for checking that the suite notices it.
#[derive(Debug, Clone, Copy)]
enum Flaw {
    /// `update` writes whatever generation is stored.
    IgnoresGeneration,
    /// `update` checks the generation, then yields, then writes unconditionally.
    RacyUpdate,
    /// `delete_expired` deletes every expired session whatever the limit.
    IgnoresDeleteLimit,
    /// `list_by_user` returns the newest session first.
    ListsNewestFirst,
    /// `create` keeps only whole seconds.
    DropsMilliseconds,
    /// `create` puts the token hash in its error message.
    LeaksTokenHash,
    /// `delete_by_id` ignores the user.
    DeletesOtherUsersSessions,
}

struct Flawed {
    inner: MemoryStore,
    flaw: Flaw,
}

impl SessionStore for Flawed {
    fn create<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        session: &'a Session,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut session = session.clone();
            if let Flaw::DropsMilliseconds = self.flaw {
                use chrono::SubsecRound;
                session.created_at = session.created_at.trunc_subsecs(0);
            }
            self.inner
                .create(token_hash, &session)
                .await
                .map_err(|e| match self.flaw {
                    Flaw::LeaksTokenHash => {
                        StoreError::new(format!("duplicate token hash {}", token_hash.to_hex()))
                    }
                    _ => e,
                })
        })
    }

    fn find<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        self.inner.find(token_hash)
    }

    fn update<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        expected_generation: u64,
        session: &'a Session,
        new_token_hash: Option<&'a TokenHash>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let Some(stored) = self.inner.find(token_hash).await? else {
                return Ok(false);
            };
            match self.flaw {
                Flaw::IgnoresGeneration => {
                    self.inner
                        .update(token_hash, stored.generation, session, new_token_hash)
                        .await
                }
                Flaw::RacyUpdate => {
                    let target = new_token_hash.unwrap_or(token_hash);
                    if stored.generation != expected_generation
                        || (target != token_hash && self.inner.find(target).await?.is_some())
                    {
                        return Ok(false);
                    }
                    tokio::task::yield_now().await;
                    // Last writer wins: replace whatever is there now.
                    self.inner.delete_by_id(&stored.id, None).await?;
                    let mut written = session.clone();
                    written.id = stored.id;
                    written.user_id = stored.user_id;
                    written.created_at = stored.created_at;
                    self.inner.create(target, &written).await?;
                    Ok(true)
                }
                _ => {
                    self.inner
                        .update(token_hash, expected_generation, session, new_token_hash)
                        .await
                }
            }
        })
    }

    fn delete<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        self.inner.delete(token_hash)
    }

    fn find_by_id<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        self.inner.find_by_id(session_id)
    }

    fn delete_by_id<'a>(
        &'a self,
        session_id: &'a str,
        user_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        match self.flaw {
            Flaw::DeletesOtherUsersSessions => self.inner.delete_by_id(session_id, None),
            _ => self.inner.delete_by_id(session_id, user_id),
        }
    }

    fn delete_by_user<'a>(
        &'a self,
        user_id: &'a str,
        keep_session_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>, StoreError>> {
        self.inner.delete_by_user(user_id, keep_session_id)
    }

    fn list_by_user<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        Box::pin(async move {
            let mut sessions = self.inner.list_by_user(user_id, now).await?;
            if let Flaw::ListsNewestFirst = self.flaw {
                sessions.reverse();
            }
            Ok(sessions)
        })
    }

    fn delete_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        match self.flaw {
            Flaw::IgnoresDeleteLimit => self.inner.delete_expired(now, u32::MAX),
            _ => self.inner.delete_expired(now, limit),
        }
    }
}

/// Runs the suite against a store with `flaw` and returns its panic message.
async fn violation(flaw: Flaw) -> String {
    let store = Flawed {
        inner: MemoryStore::new(),
        flaw,
    };
    let error = tokio::spawn(conformance::run(store))
        .await
        .expect_err("the suite passed a store that breaks a contract");
    let payload = error.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test]
async fn the_suite_catches_a_store_whose_update_ignores_the_generation() {
    let message = violation(Flaw::IgnoresGeneration).await;
    assert!(
        message
            .contains("update expecting generation 2 when the stored one is 3 must return false"),
        "{message}"
    );
}

#[tokio::test]
async fn the_suite_catches_a_store_whose_conditional_update_is_not_atomic() {
    let message = violation(Flaw::RacyUpdate).await;
    assert!(
        message.contains("concurrent updates expecting the same generation"),
        "{message}"
    );
}

#[tokio::test]
async fn the_suite_catches_a_store_that_ignores_the_delete_limit() {
    let message = violation(Flaw::IgnoresDeleteLimit).await;
    assert!(
        message.contains("delete_expired with limit 0 must delete nothing"),
        "{message}"
    );
}

#[tokio::test]
async fn the_suite_catches_a_store_that_lists_newest_first() {
    let message = violation(Flaw::ListsNewestFirst).await;
    assert!(message.contains("oldest first"), "{message}");
}

#[tokio::test]
async fn the_suite_catches_a_store_that_drops_milliseconds() {
    let message = violation(Flaw::DropsMilliseconds).await;
    assert!(
        message.contains("find must return exactly what create stored"),
        "{message}"
    );
}

#[tokio::test]
async fn the_suite_catches_a_store_that_puts_token_hashes_in_errors() {
    let message = violation(Flaw::LeaksTokenHash).await;
    assert!(
        message.contains("the error reveals a token hash"),
        "{message}"
    );
}

#[tokio::test]
async fn the_suite_catches_a_store_that_deletes_other_users_sessions_by_id() {
    let message = violation(Flaw::DeletesOtherUsersSessions).await;
    assert!(
        message.contains("delete_by_id with another user must delete nothing"),
        "{message}"
    );
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::error::Error as _;

    use serde_json::json;
    use sqlx::Connection;
    use tower_auth_session::store::PostgresStore;
    use tower_auth_session::{Session, SessionStore, Token, TokenHash};

    use super::common::{service_url, unique_name};
    use super::conformance;

    fn database_url() -> Option<String> {
        service_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    }

    /// A schema of this test's own, dropped (with everything in it) when the guard is,
    /// even when the test fails.
    struct TestSchema {
        url: String,
        name: String,
    }

    impl TestSchema {
        /// A name for a schema that does not exist yet.
        fn reserve(url: &str) -> Self {
            Self {
                url: url.to_owned(),
                name: unique_name("tas"),
            }
        }

        /// A new, empty schema.
        async fn create(url: &str) -> Self {
            let schema = Self::reserve(url);
            schema
                .execute(&format!("CREATE SCHEMA \"{}\"", schema.name))
                .await;
            schema
        }

        async fn connection(&self) -> sqlx::PgConnection {
            sqlx::PgConnection::connect(&self.url).await.unwrap()
        }

        async fn execute(&self, sql: &str) {
            let mut connection = self.connection().await;
            sqlx::raw_sql(sql).execute(&mut connection).await.unwrap();
        }

        /// Runs a `SELECT count(…)`; `{schema}` in `sql` stands for the schema's name.
        async fn count(&self, sql: &str) -> i64 {
            let mut connection = self.connection().await;
            sqlx::query_scalar(&sql.replace("{schema}", &self.name))
                .fetch_one(&mut connection)
                .await
                .unwrap()
        }

        async fn connect(&self) -> PostgresStore {
            PostgresStore::builder()
                .schema(&self.name)
                .unwrap()
                .connect(&self.url)
                .await
                .unwrap()
        }
    }

    impl Drop for TestSchema {
        fn drop(&mut self) {
            let (url, name) = (self.url.clone(), self.name.clone());
            // Drop cannot await, and may run inside the test's runtime: use a thread.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    if let Ok(mut connection) = sqlx::PgConnection::connect(&url).await {
                        let sql = format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE");
                        let _ = sqlx::raw_sql(&sql).execute(&mut connection).await;
                        let _ = connection.close().await;
                    }
                });
            })
            .join();
        }
    }

    /// A session built the way a store that is not part of this crate has to build one.
    fn session(user_id: &str, times: &str) -> Session {
        let mut session: Session = serde_json::from_value(json!({
            "id": unique_name("id"),
            "userId": user_id,
            "expiresAt": "2099-01-01T00:00:00.111Z",
            "createdAt": times,
            "updatedAt": times,
            "authenticatedAt": times,
            "lastSeenAt": times,
            "ipAddress": "198.51.100.4",
            "userAgent": "restart-test",
            "device": "phone",
        }))
        .unwrap();
        session.remember = true;
        session.generation = 3;
        session
    }

    /// Issue 13: a successful call leaves its connection with the store, so the next call
    /// reuses it without the ping sqlx sends every connection handed back to its pool (a
    /// second round trip per call); a failed call hands its connection back.
    #[tokio::test]
    async fn a_successful_call_keeps_its_connection_and_a_failed_one_hands_it_back() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::create(&url).await;
        let store = schema.connect().await;
        let pool = store.pool().clone();
        let kept = || async {
            // Hand-backs run in tasks sqlx spawns: let them finish before counting.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            pool.size() as usize - pool.num_idle()
        };
        let hash = Token::generate().hash();
        let session = session("kept", "2024-05-06T07:08:09.010Z");
        store.create(&hash, &session).await.unwrap();
        for _ in 0..10 {
            assert!(store.find(&hash).await.unwrap().is_some());
        }
        assert_eq!(
            kept().await,
            1,
            "sequential calls reuse one kept connection"
        );
        let duplicate = store.create(&hash, &session).await;
        assert!(duplicate.is_err());
        assert_eq!(kept().await, 0, "a failed call hands its connection back");
        assert!(store.find(&hash).await.unwrap().is_some());
        assert_eq!(kept().await, 1);
        // Closing the pool takes kept connections back too, so it does not wait for them.
        pool.close().await;
        assert!(store.find(&hash).await.is_err());
    }

    /// Kept connections never starve the application's own queries: a store over a pool
    /// of one keeps nothing, so the app still gets that connection.
    #[tokio::test]
    async fn a_pool_of_one_is_never_kept_from_the_application() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::create(&url).await;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&url)
            .await
            .unwrap();
        let store = PostgresStore::builder()
            .schema(&schema.name)
            .unwrap()
            .from_pool(pool.clone())
            .await
            .unwrap();
        let hash = Token::generate().hash();
        store
            .create(&hash, &session("alone", "2024-05-06T07:08:09.010Z"))
            .await
            .unwrap();
        assert!(store.find(&hash).await.unwrap().is_some());
        let mut own = pool
            .acquire()
            .await
            .expect("the app gets the pool's connection");
        sqlx::query("SELECT 1").execute(&mut *own).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_store_passes_the_conformance_suite() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::create(&url).await;
        conformance::run(schema.connect().await).await;
        assert_eq!(
            schema
                .count("SELECT count(*) FROM \"{schema}\".tas_sessions")
                .await,
            0,
            "the suite cleans up after itself"
        );
    }

    /// Starts 8 stores on `schema` at once: every one must come up, and the migration
    /// must be applied and recorded once.
    async fn connect_concurrently(url: &str, schema: &TestSchema) {
        let connects: Vec<_> = (0..8)
            .map(|_| {
                let builder = PostgresStore::builder().schema(&schema.name).unwrap();
                let url = url.to_owned();
                tokio::spawn(async move { builder.connect(&url).await })
            })
            .collect();
        let mut stores = Vec::new();
        for connect in connects {
            stores.push(
                connect
                    .await
                    .unwrap()
                    .expect("every concurrent connect succeeds"),
            );
        }
        assert_eq!(
            schema
                .count("SELECT count(*) FROM \"{schema}\".tas_migrations")
                .await,
            2,
            "each migration is recorded once"
        );
        let hash = Token::generate().hash();
        let session = session("concurrent-connects", "2024-05-06T07:08:09.010Z");
        stores[0].create(&hash, &session).await.unwrap();
        assert_eq!(stores[7].find(&hash).await.unwrap(), Some(session));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_connects_to_a_new_empty_schema_all_succeed_and_migrate_once() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::create(&url).await;
        connect_concurrently(&url, &schema).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_connects_to_a_missing_schema_create_it_once() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::reserve(&url);
        connect_concurrently(&url, &schema).await;
    }

    #[tokio::test]
    async fn a_new_store_over_the_same_schema_sees_existing_sessions() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::create(&url).await;
        let hash = Token::generate().hash();
        let session = session("restart", "2024-05-06T07:08:09.010Z");
        {
            let before = schema.connect().await;
            before.create(&hash, &session).await.unwrap();
            before.pool().close().await;
        }
        let after = schema.connect().await;
        assert_eq!(after.find(&hash).await.unwrap(), Some(session.clone()));
        assert_eq!(
            after
                .list_by_user("restart", "2025-01-01T00:00:00Z".parse().unwrap())
                .await
                .unwrap(),
            vec![session]
        );
        assert_eq!(
            schema
                .count("SELECT count(*) FROM \"{schema}\".tas_migrations")
                .await,
            2,
            "a restart does not re-apply migrations"
        );
    }

    #[tokio::test]
    async fn tables_columns_and_indexes_are_created_in_the_given_schema() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::create(&url).await;
        let store = schema.connect().await;
        assert_eq!(store.schema(), Some(schema.name.as_str()));

        let mut connection = schema.connection().await;
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_schema = $1 AND table_name = 'tas_sessions' ORDER BY column_name",
        )
        .bind(&schema.name)
        .fetch_all(&mut connection)
        .await
        .unwrap();
        let type_of = |column: &str| {
            columns
                .iter()
                .find(|(name, _)| name == column)
                .map(|(_, data_type)| data_type.as_str())
                .unwrap_or("missing")
        };
        assert_eq!(type_of("token_hash"), "bytea");
        assert_eq!(type_of("fields"), "jsonb");
        assert_eq!(type_of("generation"), "bigint");
        assert_eq!(type_of("remember"), "boolean");
        for time in [
            "expires_at",
            "created_at",
            "updated_at",
            "authenticated_at",
            "last_seen_at",
        ] {
            assert_eq!(type_of(time), "timestamp with time zone", "{time}");
        }

        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = 'tas_sessions'",
        )
        .bind(&schema.name)
        .fetch_all(&mut connection)
        .await
        .unwrap();
        for wanted in [
            "UNIQUE INDEX tas_sessions_token_hash_key",
            "INDEX tas_sessions_user_expires ON",
            "INDEX tas_sessions_expires_at",
        ] {
            assert!(
                indexes.iter().any(|def| def.contains(wanted)),
                "{wanted} in {indexes:?}"
            );
        }
        let migrations_here: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables \
             WHERE table_schema = $1 AND table_name = 'tas_migrations'",
        )
        .bind(&schema.name)
        .fetch_one(&mut connection)
        .await
        .unwrap();
        assert_eq!(migrations_here, 1);
    }

    /// The plan of each per-user statement, as the store prepares it (a generic plan:
    /// sqlx keeps prepared statements), on a table with no statistics.
    async fn generic_plan(schema: &TestSchema, statement: &str) -> String {
        let mut connection = schema.connection().await;
        let setup = format!(
            "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; \
             PREPARE q AS {}",
            statement.replace("{t}", &format!("\"{}\".tas_sessions", schema.name))
        );
        sqlx::raw_sql(&setup)
            .execute(&mut connection)
            .await
            .unwrap();
        let rows: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE q(NULL, NULL)")
            .fetch_all(&mut connection)
            .await
            .unwrap();
        rows.join("\n")
    }

    /// Issue 18: one user's calls cost that user's sessions. With `user_id` alone indexed,
    /// a table with stale statistics listed one user by a bitmap AND with the whole
    /// `expires_at` index (17.8 ms at 1M sessions); every per-user statement must be
    /// planned on the (user_id, expires_at) index and never touch `expires_at` alone.
    #[tokio::test]
    async fn per_user_statements_are_planned_on_the_user_index() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::create(&url).await;
        let _store = schema.connect().await;
        for statement in [
            "SELECT * FROM {t} WHERE user_id = $1::text AND expires_at > $2::timestamptz \
             ORDER BY created_at, id COLLATE \"C\"",
            "DELETE FROM {t} WHERE user_id = $1::text AND ($2::text IS NULL OR id <> $2)",
        ] {
            let plan = generic_plan(&schema, statement).await;
            assert!(plan.contains("tas_sessions_user_expires"), "{plan}");
            assert!(!plan.contains("tas_sessions_expires_at"), "{plan}");
        }
    }

    /// A schema made by an earlier version (migration 1 only) gets the new index and
    /// loses the old one when a store opens it; its sessions stay.
    #[tokio::test]
    async fn a_version_1_schema_is_migrated_to_the_user_expiry_index() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::create(&url).await;
        let hash = Token::generate().hash();
        let session = session("upgrade", "2024-05-06T07:08:09.010Z");
        {
            let store = schema.connect().await;
            store.create(&hash, &session).await.unwrap();
            store.pool().close().await;
        }
        // Back to what version 1 left.
        schema
            .execute(&format!(
                "DROP INDEX \"{0}\".tas_sessions_user_expires; \
                 CREATE INDEX tas_sessions_user_id ON \"{0}\".tas_sessions (user_id); \
                 DELETE FROM \"{0}\".tas_migrations WHERE version > 1",
                schema.name
            ))
            .await;
        let store = schema.connect().await;
        let index = |name: &str| {
            format!(
                "SELECT count(*) FROM pg_indexes WHERE schemaname = '{{schema}}' \
                 AND indexname = '{name}'"
            )
        };
        assert_eq!(schema.count(&index("tas_sessions_user_expires")).await, 1);
        assert_eq!(schema.count(&index("tas_sessions_user_id")).await, 0);
        assert_eq!(store.find(&hash).await.unwrap(), Some(session));
    }

    #[tokio::test]
    async fn without_a_schema_the_tables_go_to_the_connections_search_path() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::create(&url).await;
        let separator = if url.contains('?') { '&' } else { '?' };
        let url_with_path = format!("{url}{separator}options=-c%20search_path%3D{}", schema.name);
        let store = PostgresStore::connect(&url_with_path).await.unwrap();
        assert_eq!(store.schema(), None);
        assert_eq!(
            schema
                .count(
                    "SELECT count(*) FROM information_schema.tables \
                     WHERE table_schema = '{schema}' \
                     AND table_name IN ('tas_sessions', 'tas_migrations')"
                )
                .await,
            2
        );
        let hash = Token::generate().hash();
        let session = session("search-path", "2024-05-06T07:08:09.010Z");
        store.create(&hash, &session).await.unwrap();
        assert_eq!(store.find(&hash).await.unwrap(), Some(session));
    }

    #[tokio::test]
    async fn stored_times_are_truncated_to_milliseconds() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::create(&url).await;
        let store = schema.connect().await;
        let hash = Token::generate().hash();
        let precise = session("precise", "2024-05-06T07:08:09.123456789Z");
        store.create(&hash, &precise).await.unwrap();
        let found = store.find(&hash).await.unwrap().unwrap();
        let millis: chrono::DateTime<chrono::Utc> = "2024-05-06T07:08:09.123Z".parse().unwrap();
        assert_eq!(found.created_at, millis);
        assert_eq!(found.updated_at, millis);
        assert_eq!(found.authenticated_at, millis);
        assert_eq!(found.last_seen_at, millis);

        let mut updated = found.clone();
        updated.generation = 4;
        updated.updated_at = "2024-05-06T07:08:10.987654Z".parse().unwrap();
        assert!(store.update(&hash, 3, &updated, None).await.unwrap());
        assert_eq!(
            store.find(&hash).await.unwrap().unwrap().updated_at,
            "2024-05-06T07:08:10.987Z"
                .parse::<chrono::DateTime<chrono::Utc>>()
                .unwrap()
        );
    }

    /// Issue 14: sqlx converts `timestamptz` by adding to 2000-01-01 and panics past
    /// chrono's calendar (`'infinity'` is the largest value PostgreSQL has). A time
    /// outside 1970–9999 is refused as a decode error (the store decodes times itself):
    /// the request answers 503 for that session, and nothing panics.
    #[tokio::test]
    async fn stored_times_outside_1970_to_9999_are_a_decode_error_not_a_panic() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::create(&url).await;
        let store = schema.connect().await;
        for value in [
            "infinity",
            "-infinity",
            "20000-01-01 00:00:00+00",
            "1969-12-31 23:59:59.999+00",
        ] {
            let hash = Token::generate().hash();
            let session = session("mallory", "2024-05-06T07:08:09.010Z");
            store.create(&hash, &session).await.unwrap();
            schema
                .execute(&format!(
                    "UPDATE \"{}\".tas_sessions SET updated_at = '{value}' WHERE id = '{}'",
                    schema.name, session.id
                ))
                .await;
            let found = store.find(&hash).await;
            assert!(found.is_err(), "{value}: {found:?}");
            let listed = store.list_by_user("mallory", chrono::Utc::now()).await;
            assert!(listed.is_err(), "{value}: {listed:?}");
            schema
                .execute(&format!(
                    "DELETE FROM \"{}\".tas_sessions WHERE id = '{}'",
                    schema.name, session.id
                ))
                .await;
        }
        let hash = Token::generate().hash();
        let sane = session("mallory", "1970-01-01T00:00:00.000Z");
        store.create(&hash, &sane).await.unwrap();
        assert_eq!(store.find(&hash).await.unwrap(), Some(sane));
    }

    #[tokio::test]
    async fn a_duplicate_reports_the_constraint_and_sqlstate_but_not_the_token_hash() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::create(&url).await;
        let store = schema.connect().await;
        let hash: TokenHash = Token::generate().hash();
        store
            .create(&hash, &session("dup", "2024-05-06T07:08:09.010Z"))
            .await
            .unwrap();
        let error = store
            .create(&hash, &session("dup", "2024-05-06T07:08:09.010Z"))
            .await
            .unwrap_err();
        // Each error prints its own part; the driver's words are in the source chain.
        let mut shown = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            shown.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        assert!(shown.contains("tas_sessions_token_hash_key"), "{shown}");
        assert!(shown.contains("SQLSTATE 23505"), "{shown}");
        assert!(error.source().is_some(), "the driver's error is the source");
        let everything = format!("{error} {error:?} {:?}", error.source()).to_lowercase();
        assert!(!everything.contains(&hash.to_hex()), "{everything}");
    }

    #[tokio::test]
    async fn the_store_recovers_when_its_connections_are_killed() {
        let Some(url) = database_url() else { return };
        let schema = TestSchema::create(&url).await;
        let application = unique_name("tas_app");
        let separator = if url.contains('?') { '&' } else { '?' };
        let store = PostgresStore::builder()
            .schema(&schema.name)
            .unwrap()
            .connect(&format!("{url}{separator}application_name={application}"))
            .await
            .unwrap();
        let hash = Token::generate().hash();
        let session = session("killed", "2024-05-06T07:08:09.010Z");
        store.create(&hash, &session).await.unwrap();

        let mut admin = schema.connection().await;
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1",
        )
        .bind(&application)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert!(killed >= 1);

        // Each dead connection may fail one call before the pool drops it; then the
        // store works again without being rebuilt.
        let mut failures = 0;
        let found = loop {
            match store.find(&hash).await {
                Ok(found) => break found,
                Err(_) if failures < 10 => failures += 1,
                Err(error) => panic!("the store did not recover: {error}"),
            }
        };
        assert_eq!(found, Some(session));
    }
}
