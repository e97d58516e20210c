//! Revocation racing refreshes and read-repairs (backfills), across two instances over
//! the shared Redis and one store: a revoked session never comes back.
#![cfg(feature = "redis")]

use crate::common;
use crate::redis_support;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use common::*;
use http::StatusCode;
use redis::Commands;
use redis_support::*;
use tokio::sync::Barrier;
use tower_auth_session::{MemoryStore, SessionManager};

/// What Redis holds for a session after its revoke: (the value, the id's pointer).
pub type Leftovers = (Option<Vec<u8>>, Option<String>);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_racing_refresh_and_backfill_a_thousand_times_never_resurrects() {
    let Some(url) = shared_redis() else { return };
    let prefix = unique_prefix();
    let store = MemoryStore::new();
    let mut conn = connection(&url);
    race(
        1000,
        &store,
        || storage(&url, &prefix),
        |hash, id, delete| {
            let value_key = session_key(&prefix, hash);
            if delete {
                let _: () = conn.del(&value_key).unwrap();
                return (None, None);
            }
            (
                conn.get(&value_key).unwrap(),
                conn.get(format!("{prefix}i:{id}")).unwrap(),
            )
        },
    )
    .await;
}

/// `rounds` revokes racing a read (a hit, or a miss and a backfill) and a refresh, over
/// three instances of `storage` and one store. `redis(hash, id, delete)` deletes the
/// session's value (`delete`) or reads what Redis holds of it.
pub async fn race(
    rounds: usize,
    store: &MemoryStore,
    storage: impl Fn() -> tower_auth_session::secondary::RedisStorage,
    mut redis: impl FnMut(&str, &str, bool) -> Leftovers,
) {
    let build = |update_age: u64| {
        SessionManager::builder(store.clone())
            .secondary_storage(storage())
            .secret(SECRET)
            .update_age(StdDuration::from_secs(update_age))
            .build()
            .unwrap()
    };
    // A revokes; B reads without refreshing (a hit, or a miss and a backfill); C
    // refreshes on every request (a conditional store update and a write-through).
    let (a, b, c) = (build(86_400), build(86_400), build(0));
    let (app_a, app_b, app_c) = (app(&a), app(&b), app(&c));
    let mut served_during_race = 0;

    for round in 0..rounds {
        let pair = sign_in(&app_a, &a, "alice").await;
        let me = send(&app_a, get("/me", Some(&pair))).await;
        let id = me.json()["sessionId"].as_str().unwrap().to_owned();
        let hash = token_hash_hex(&raw_token(pair.split_once('=').unwrap().1));
        if round % 2 == 0 {
            // Force the readers through the store and its read-repair.
            redis(&hash, &id, true);
        }
        let barrier = Arc::new(Barrier::new(3));
        let reader = |app: axum::Router| {
            let (barrier, pair) = (barrier.clone(), pair.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                send(&app, get("/me", Some(&pair))).await.status
            })
        };
        let (read_b, read_c) = (reader(app_b.clone()), reader(app_c.clone()));
        let revoke = {
            let (barrier, a, app_a, pair, id) = (
                barrier.clone(),
                a.clone(),
                app_a.clone(),
                pair.clone(),
                id.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                match round % 3 {
                    0 => assert!(a.revoke(&id).await.unwrap()),
                    1 => assert_eq!(a.revoke_user("alice").await.unwrap(), 1),
                    _ => {
                        let reply = send(&app_a, post("/sign-out", Some(&pair))).await;
                        assert_eq!(reply.status, StatusCode::OK);
                    }
                }
            })
        };
        for status in [read_b.await.unwrap(), read_c.await.unwrap()] {
            assert!(
                status == StatusCode::OK || status == StatusCode::UNAUTHORIZED,
                "round {round}: {status}"
            );
            served_during_race += usize::from(status == StatusCode::OK);
        }
        revoke.await.unwrap();

        // After the revoke returned: no instance serves it, and no tier holds it.
        for app in [&app_a, &app_b, &app_c] {
            let reply = send(app, get("/me", Some(&pair))).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "round {round}: resurrected"
            );
        }
        let (value, pointer) = redis(&hash, &id, false);
        assert!(
            value.is_none(),
            "round {round}: Redis holds the revoked session"
        );
        assert_eq!(pointer.as_deref(), Some("-"), "round {round}");
        assert!(store.is_empty(), "round {round}: the store holds it");
    }
    eprintln!(
        "{rounds} races: {served_during_race} of {} concurrent reads were served before the revoke landed",
        2 * rounds
    );
}
