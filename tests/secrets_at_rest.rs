//! The raw token never leaves the cookie: not in the SQLite file, not in logs.
//!
//! This binary holds one test on purpose: it installs a thread-local `tracing` subscriber,
//! and another test touching the same callsites from another thread could cache them as
//! uninteresting before the subscriber is set.

#[path = "integration/common/mod.rs"]
#[macro_use]
mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::*;
use http::StatusCode;
use tower_auth_session::SessionManager;
use tower_auth_session::store::SqliteStore;

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The secrets a signed cookie value carries: the value itself, the token's base64 text
/// and its 32 raw bytes.
fn secrets_of(cookie_value: &str) -> Vec<Vec<u8>> {
    let token_b64 = cookie_value.split('.').nth(1).unwrap();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token_b64)
        .unwrap();
    assert_eq!(raw.len(), 32);
    vec![
        cookie_value.as_bytes().to_vec(),
        token_b64.as_bytes().to_vec(),
        raw,
    ]
}

#[tokio::test]
async fn raw_token_is_nowhere_in_the_sqlite_file_nor_in_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sessions.db");
    let store = SqliteStore::connect(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    let clock = tower_auth_session::ManualClock::new();
    let manager = SessionManager::builder(store.clone())
        .secret(SECRET)
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = app(&manager);
    let name = manager.session_cookie_name().to_owned();

    let mut secrets = Vec::new();
    let mut cookies = Vec::new();
    for user in ["alice", "bob", "carol"] {
        let cookie = sign_in(&app, &manager, user).await;
        secrets.extend(secrets_of(&cookie[name.len() + 1..]));
        cookies.push(cookie);
    }
    // Exercise reads, a refresh, a bad cookie, a sign-out and an expiry while logging.
    for cookie in &cookies {
        assert_eq!(
            send(&app, get("/me", Some(cookie))).await.status,
            StatusCode::OK
        );
    }
    clock.advance(chrono::Duration::days(2));
    assert_eq!(
        send(&app, get("/me", Some(&cookies[0]))).await.status,
        StatusCode::OK
    );
    let tampered = format!("{}x", cookies[1]);
    send(&app, get("/me", Some(&tampered))).await;
    send(&app, post("/sign-out", Some(&cookies[1]))).await;
    clock.advance(chrono::Duration::days(8));
    send(&app, get("/me", Some(&cookies[2]))).await;

    // Make sure everything is on disk (WAL included) before scanning the bytes.
    rusqlite::Connection::open(store.path().unwrap())
        .unwrap()
        .query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()))
        .unwrap();
    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        files += 1;
        for secret in &secrets {
            assert!(!contains(&bytes, secret), "a raw token is stored on disk");
        }
    }
    assert!(files >= 1);
    let logged = logs.0.lock().unwrap().clone();
    assert!(
        contains(&logged, b"session created"),
        "the capture must have seen the layer's logs: {}",
        String::from_utf8_lossy(&logged)
    );
    for secret in &secrets {
        assert!(!contains(&logged, secret), "a raw token was logged");
    }
}
