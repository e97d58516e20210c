//! Issue 18: per-user calls and cleanup must cost the user's sessions (k), not every
//! session stored (N), on every store.
//!
//! Sized by `TAS_SCALE_SESSIONS` (default 4,000, so CI runs it in seconds in a debug
//! build). The figures in docs/ARCHITECTURE.md come from release runs at 10k and 1M:
//!
//! ```text
//! TAS_SCALE_SESSIONS=1000000 cargo test --release --all-features --test integration \
//!     store_scale -- --nocapture --test-threads=1
//! ```
//!
//! Each store holds N bulk sessions (4 per user, every tenth expired), a user with 10
//! sessions and three with 1,000. Printed: listing the 10-session user, revoking all of a
//! 1,000-session user, and lookups and sign-ins while the manager's cleanup deletes the
//! expired tenth. Nothing here asserts a time (a loaded 2-core machine would fail it);
//! the assertions are on what each call returned. The plans behind the figures are
//! asserted in `store_conformance` (PostgreSQL) and the SQLite schema's unit tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tower_auth_session::{Session, SessionManager, SessionStore, Token, TokenHash};

/// How many bulk sessions each store is filled with.
fn sessions() -> usize {
    let n: usize = std::env::var("TAS_SCALE_SESSIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(4_000);
    // A multiple of 10, so "every tenth expired" is exact.
    n.max(10) / 10 * 10
}

const TEN_USER: &str = "scale-ten";
const BIG_USERS: usize = 3;
const BIG_SESSIONS: usize = 1_000;

/// The token hash of bulk session `i` (PostgreSQL computes the same with `sha256`).
fn hash_of(i: usize) -> TokenHash {
    TokenHash(Sha256::digest(format!("tas-scale-{i}")).into())
}

/// Every tenth bulk session is expired.
fn expired(i: usize) -> bool {
    i % 10 == 0
}

/// Session `i` of `n` bulk ones: its user and whether it is expired. After the bulk
/// ones come the 10-session user's and then the 1,000-session users'.
fn owner(i: usize, n: usize) -> String {
    if i < n {
        format!("scale-bulk-{}", i / 4)
    } else if i < n + 10 {
        TEN_USER.to_owned()
    } else {
        format!("scale-big-{}", (i - n - 10) / BIG_SESSIONS)
    }
}

fn total(n: usize) -> usize {
    n + 10 + BIG_USERS * BIG_SESSIONS
}

fn session(i: usize, n: usize, now: DateTime<Utc>) -> Session {
    let expires = if i < n && expired(i) {
        now - chrono::Duration::hours(1)
    } else {
        now + chrono::Duration::days(7)
    };
    let mut session = Session::new(owner(i, n), now - chrono::Duration::days(1), expires);
    session.id = format!("scale-{i}");
    session.ip_address = Some("203.0.113.7".into());
    session.user_agent = Some("curl/8.5.0".into());
    session
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// (median, p99, max) in µs.
fn spread(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    samples.sort();
    let at = |q: f64| micros(samples[((samples.len() - 1) as f64 * q) as usize]);
    (at(0.5), at(0.99), at(1.0))
}

/// Measures one store that already holds the sessions; `sweeps`: whether it has a
/// cleanup to run (Redis expires by TTL).
async fn measure<S: SessionStore + Clone>(name: &str, store: S, n: usize, sweeps: bool) {
    let now = Utc::now();
    let mut list = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let sessions = store.list_by_user(TEN_USER, now).await.unwrap();
        list.push(started.elapsed());
        assert_eq!(sessions.len(), 10, "{name}: the 10-session user's list");
    }
    let mut revoke_all = Vec::new();
    for user in 0..BIG_USERS {
        let started = Instant::now();
        let removed = store
            .delete_by_user(&format!("scale-big-{user}"), None)
            .await
            .unwrap();
        revoke_all.push(started.elapsed());
        assert_eq!(removed.len(), BIG_SESSIONS, "{name}: revoke-all");
    }

    // Lookups of live sessions and sign-ins while the manager's cleanup runs.
    let done = Arc::new(AtomicBool::new(false));
    let lookups = tokio::spawn({
        let (store, done) = (store.clone(), done.clone());
        async move {
            let mut samples = Vec::new();
            let mut k: usize = 0;
            while !done.load(Ordering::Relaxed) || samples.len() < 100 {
                // Spread over the table; never an expired one (those are being deleted).
                let mut i = k.wrapping_mul(7_919) % n;
                if expired(i) {
                    i += 1;
                }
                k += 1;
                let started = Instant::now();
                let found = store.find(&hash_of(i)).await.unwrap();
                samples.push(started.elapsed());
                assert!(found.is_some(), "live session {i} found");
            }
            samples
        }
    });
    let sign_ins = tokio::spawn({
        let (store, done) = (store.clone(), done.clone());
        async move {
            let mut samples = Vec::new();
            while !done.load(Ordering::Relaxed) || samples.len() < 20 {
                let token = Token::generate();
                let now = Utc::now();
                let session = Session::new("scale-new", now, now + chrono::Duration::hours(1));
                let started = Instant::now();
                store.create(&token.hash(), &session).await.unwrap();
                samples.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            samples
        }
    });
    let manager = SessionManager::builder(store.clone())
        .secret([7u8; 32])
        .build()
        .unwrap();
    let started = Instant::now();
    let deleted = if sweeps {
        manager.delete_expired().await.unwrap()
    } else {
        0
    };
    let sweep = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let (lookups, sign_ins) = (lookups.await.unwrap(), sign_ins.await.unwrap());
    if sweeps {
        assert_eq!(
            deleted as usize,
            n.div_ceil(10),
            "{name}: the expired tenth"
        );
    }

    let (list_p50, list_p99, _) = spread(list);
    let (revoke_p50, _, revoke_max) = spread(revoke_all);
    let (look_p50, look_p99, look_max) = spread(lookups);
    let (sign_p50, sign_p99, sign_max) = spread(sign_ins);
    println!(
        "store_scale {name} N={n}: list 10 p50 {list_p50:.0} µs p99 {list_p99:.0} µs; \
         revoke-all 1000 p50 {revoke_p50:.0} µs max {revoke_max:.0} µs; \
         cleanup of {deleted} in {:.1} ms: lookups p50 {look_p50:.0} µs p99 {look_p99:.0} µs \
         max {look_max:.0} µs, sign-ins p50 {sign_p50:.0} µs p99 {sign_p99:.0} µs max {sign_max:.0} µs",
        sweep.as_secs_f64() * 1e3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_at_scale() {
    let n = sessions();
    let store = tower_auth_session::MemoryStore::new();
    let now = Utc::now();
    for i in 0..total(n) {
        store
            .create(&hash_of(i), &session(i, n, now))
            .await
            .unwrap();
    }
    measure("memory", store, n, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_at_scale() {
    use tower_auth_session::store::SqliteStore;
    let n = sessions();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scale.db");
    let store = SqliteStore::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    // One transaction on a connection of our own: a commit per session would take
    // minutes at 1M.
    let now = Utc::now();
    let mut connection = rusqlite::Connection::open(&path).unwrap();
    let tx = connection.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO tas_sessions (id, token_hash, user_id, expires_at, created_at, \
                 updated_at, authenticated_at, last_seen_at, ip_address, user_agent, remember, \
                 generation, fields) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5, ?5, ?6, ?7, 1, 0, '{}')",
            )
            .unwrap();
        for i in 0..total(n) {
            let s = session(i, n, now);
            insert
                .execute(rusqlite::params![
                    s.id,
                    &hash_of(i).0[..],
                    s.user_id,
                    s.expires_at.timestamp_millis(),
                    s.created_at.timestamp_millis(),
                    s.ip_address,
                    s.user_agent,
                ])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    drop(connection);
    measure("sqlite", store, n, true).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_at_scale() {
    use tower_auth_session::store::PostgresStore;
    let Some(url) =
        crate::common::service_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    else {
        return;
    };
    let n = sessions();
    let schema = crate::common::unique_name("tas_scale");
    let store = PostgresStore::builder()
        .schema(&schema)
        .unwrap()
        .connect(&url)
        .await
        .unwrap();
    // Filled by the server itself, as a bulk load (no ANALYZE after it: the plans must
    // hold before autovacuum has looked at the table).
    let table = format!("\"{schema}\".tas_sessions");
    let fill = format!(
        "INSERT INTO {table} (id, token_hash, user_id, expires_at, created_at, updated_at, \
         authenticated_at, last_seen_at, ip_address, user_agent, remember, generation, fields) \
         SELECT 'scale-' || i, sha256(('tas-scale-' || i)::bytea), \
           CASE WHEN i < $1 THEN 'scale-bulk-' || (i / 4) \
                WHEN i < $1 + 10 THEN '{TEN_USER}' \
                ELSE 'scale-big-' || ((i - $1 - 10) / {BIG_SESSIONS}) END, \
           CASE WHEN i < $1 AND i % 10 = 0 THEN now() - interval '1 hour' \
                ELSE now() + interval '7 days' END, \
           now() - interval '1 day', now() - interval '1 day', now() - interval '1 day', \
           now() - interval '1 day', '203.0.113.7', 'curl/8.5.0', true, 0, '{{}}' \
         FROM generate_series(0, $2 - 1) AS i"
    );
    // The schema is dropped whatever happens (at 1M it holds hundreds of megabytes of a
    // disk other tests share), then a failure is passed on.
    let run = tokio::spawn({
        let store = store.clone();
        async move {
            sqlx::query(&fill)
                .bind(i64::try_from(n).unwrap())
                .bind(i64::try_from(total(n)).unwrap())
                .execute(store.pool())
                .await
                .unwrap();
            measure("postgres", store, n, true).await;
        }
    })
    .await;
    let drop_schema = format!("DROP SCHEMA \"{schema}\" CASCADE");
    sqlx::query(&drop_schema)
        .execute(store.pool())
        .await
        .unwrap();
    if let Err(failure) = run {
        std::panic::resume_unwind(failure.into_panic());
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_only_store_at_scale() {
    use crate::redis_support::RedisServer;
    use tower_auth_session::secondary::RedisStorage;
    // A server of its own: a million sessions do not belong in the shared one.
    let Some(server) = RedisServer::start() else {
        return;
    };
    let n = sessions();
    let store = RedisStorage::builder(server.url())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let now = Utc::now();
    // Expired ones are not stored at all (Redis would drop them by TTL anyway).
    futures_util::stream::iter(0..total(n))
        .map(|i| {
            let store = store.clone();
            async move {
                store
                    .create(&hash_of(i), &session(i, n, now))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(64)
        .collect::<()>()
        .await;
    measure("redis-only", store, n, false).await;
}
