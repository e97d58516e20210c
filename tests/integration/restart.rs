//! A new `SessionManager` over the same SQLite file and secret resolves existing sessions.

use crate::common;

use common::*;
use http::StatusCode;
use tower_auth_session::SessionManager;
use tower_auth_session::store::SqliteStore;

#[tokio::test]
async fn a_new_manager_over_the_same_file_and_secret_resolves_existing_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("sessions.db").display());
    let cookie = {
        let store = SqliteStore::connect(&url).await.unwrap();
        let manager = SessionManager::builder(store.clone())
            .secret(SECRET)
            .build()
            .unwrap();
        let cookie = sign_in(&app(&manager), &manager, "alice").await;
        // Dropping the store and the manager (its clone) closes the file.
        drop((store, manager));
        cookie
    };
    let store = SqliteStore::connect(&url).await.unwrap();
    let manager = SessionManager::builder(store)
        .secret(SECRET)
        .build()
        .unwrap();
    let reply = send(&app(&manager), get("/me", Some(&cookie))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["userId"], "alice");
}
