//! `SqliteStore` specifics: files written by the earlier (sqlx-based) store open and
//! resolve, a write never blocks the async worker, URLs, and an in-memory database passes
//! the conformance suite. (A read that meets a lock is retried off the worker: a unit
//! test in `src/store/sqlite/connections.rs`, as SQLite in WAL mode gives no way to lock
//! readers out of a file the store has open.)

use std::sync::mpsc;

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use tower_auth_session::store::SqliteStore;
use tower_auth_session::{Session, SessionStore, Token, TokenHash};

fn time(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn sample(user: &str) -> Session {
    let mut session = Session::new(
        user,
        time("2030-01-02T03:04:05.006Z"),
        time("2030-01-09T03:04:05.006Z"),
    );
    session.ip_address = Some("192.0.2.7".into());
    session.user_agent = Some("curl/8".into());
    session.remember = true;
    session.generation = 3;
    session.fields.insert("theme".into(), "dark".into());
    session
}

/// `tests/fixtures/sqlx-store-0.1.db` was written by the sqlx-based store itself (0.1.0):
/// three sessions under the token hashes `[1; 32]`, `[2; 32]` (updated once) and `[3; 32]`.
#[tokio::test]
async fn the_file_the_sqlx_based_store_wrote_opens_and_its_sessions_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sqlx-store-0.1.db"
        ),
        &path,
    )
    .unwrap();
    let store = SqliteStore::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let first = store.find(&TokenHash([1; 32])).await.unwrap().unwrap();
    assert_eq!(first.id, "fixture-session-0");
    assert_eq!(first.user_id, "alice");
    assert_eq!(first.created_at, time("2030-01-02T03:04:05.006Z"));
    assert_eq!(first.expires_at, time("2030-01-09T03:04:05.006Z"));
    assert_eq!(first.ip_address.as_deref(), Some("192.0.2.7"));
    assert_eq!(first.user_agent.as_deref(), Some("curl/8.0"));
    assert_eq!(
        serde_json::Value::Object(first.fields.clone()),
        serde_json::json!({"theme": "dark", "n": [1, 2.5, {"k": null}]})
    );
    let second = store.find(&TokenHash([2; 32])).await.unwrap().unwrap();
    assert_eq!(second.generation, 1);
    assert_eq!(second.last_seen_at, time("2030-01-03T00:00:00Z"));
    let live = store
        .list_by_user("alice", time("2030-01-05T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(live, vec![first, second]);
    let bob = store.delete_by_user("bob", None).await.unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].token_hash, TokenHash([3; 32]));
    // It is written as before: a conditional update, a new session.
    let mut refreshed = live[1].clone();
    refreshed.generation = 2;
    refreshed.last_seen_at = time("2030-01-05T00:00:00Z");
    assert!(
        store
            .update(&TokenHash([2; 32]), 1, &refreshed, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.find(&TokenHash([2; 32])).await.unwrap(),
        Some(refreshed)
    );
    let hash = Token::generate().hash();
    store.create(&hash, &sample("carol")).await.unwrap();
    assert!(store.find(&hash).await.unwrap().is_some());
    drop(store);

    let connection = Connection::open(&path).unwrap();
    let migrations: i64 = connection
        .query_row("SELECT COUNT(*) FROM tas_migrations", [], |row| row.get(0))
        .unwrap();
    assert_eq!(migrations, 1, "no migration is applied twice");
    let mode: String = connection
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test(flavor = "current_thread")]
async fn a_write_waiting_on_a_lock_leaves_the_async_worker_free() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let hash = Token::generate().hash();
    let session = sample("carol");
    store.create(&hash, &session).await.unwrap();

    // Another writer holds the write lock (WAL readers are not blocked by it).
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (locked_tx, locked_rx) = mpsc::channel();
    let holder = std::thread::spawn({
        let path = path.clone();
        move || {
            let connection = Connection::open(&path).unwrap();
            connection
                .execute_batch(
                    "BEGIN IMMEDIATE; UPDATE tas_migrations SET applied_at = applied_at;",
                )
                .unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
            connection.execute_batch("COMMIT").unwrap();
        }
    });
    locked_rx.recv().unwrap();

    let second = Token::generate().hash();
    let write = tokio::spawn({
        let store = store.clone();
        let session = sample("carol");
        async move { store.create(&second, &session).await }
    });
    tokio::task::yield_now().await;
    // On this single-threaded runtime a write blocking the worker would stall this read
    // until the lock's 5 s timeout and then fail; it answers while the write still waits.
    assert_eq!(store.find(&hash).await.unwrap(), Some(session));
    assert!(!write.is_finished(), "the write waits for the lock");
    release_tx.send(()).unwrap();
    write.await.unwrap().unwrap();
    assert!(store.find(&second).await.unwrap().is_some());
    holder.join().unwrap();
}

#[tokio::test]
async fn urls_name_files_memory_and_refuse_what_they_do_not_understand() {
    let dir = tempfile::tempdir().unwrap();
    let spaced = dir.path().join("with space.db");
    let encoded = format!("sqlite://{}", spaced.display()).replace(' ', "%20");
    let store = SqliteStore::connect(&encoded).await.unwrap();
    assert_eq!(store.path(), Some(spaced.as_path()));
    assert!(spaced.exists());

    let memory = SqliteStore::connect("sqlite::memory:").await.unwrap();
    assert_eq!(memory.path(), None);
    let hash = Token::generate().hash();
    memory.create(&hash, &sample("dave")).await.unwrap();
    assert!(memory.find(&hash).await.unwrap().is_some());

    let missing = dir.path().join("missing.db");
    let must_exist = format!("sqlite:{}?mode=rw", missing.display());
    assert!(SqliteStore::connect(&must_exist).await.is_err());
    assert!(!missing.exists());
    for bad in [
        "postgres://localhost/x",
        "sqlite:",
        "sqlite:x.db?mode=ro",
        "sqlite:%zz",
    ] {
        assert!(SqliteStore::connect(bad).await.is_err(), "{bad}");
    }
}

#[cfg(feature = "conformance")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_memory_sqlite_store_passes_the_conformance_suite() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    tower_auth_session::store::conformance::run(store).await;
}

/// Writes waiting for the writer wait as tasks, one blocking thread at a time: with a
/// blocking pool of two threads and three writes stuck behind another process's lock, a
/// second store still opens (it needs a blocking thread) before any write gives up.
#[test]
fn waiting_writes_hold_one_blocking_thread_not_one_each() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.db");
        let store = SqliteStore::connect(&format!("sqlite:{}", path.display()))
            .await
            .unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (locked_tx, locked_rx) = mpsc::channel();
        let holder = std::thread::spawn({
            let path = path.clone();
            move || {
                let connection = Connection::open(&path).unwrap();
                connection
                    .execute_batch(
                        "BEGIN IMMEDIATE; UPDATE tas_migrations SET applied_at = applied_at;",
                    )
                    .unwrap();
                locked_tx.send(()).unwrap();
                let _ = release_rx.recv();
                connection.execute_batch("COMMIT").unwrap();
            }
        });
        locked_rx.recv().unwrap();

        let writes: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let hash = Token::generate().hash();
                    store.create(&hash, &sample("erin")).await
                })
            })
            .collect();
        tokio::task::yield_now().await;
        let other = dir.path().join("other.db");
        let opened = SqliteStore::connect(&format!("sqlite:{}", other.display())).await;
        assert!(opened.is_ok());
        assert!(
            writes.iter().all(|write| !write.is_finished()),
            "the second store opened while the writes still waited"
        );
        release_tx.send(()).unwrap();
        for write in writes {
            write.await.unwrap().unwrap();
        }
        holder.join().unwrap();
    });
}
