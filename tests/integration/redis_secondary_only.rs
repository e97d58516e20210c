//! Secondary-only mode: `SessionManager::builder(redis)`, Redis is the only store.
#![cfg(feature = "redis")]

use crate::common;
use crate::redis_support;

use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use common::*;
use http::StatusCode;
use redis::Commands;
use redis_support::*;
use tower_auth_session::secondary::RedisStorage;
use tower_auth_session::{Clock, ManualClock, SessionManager, SessionStore, Token};

fn redis_with_clock(url: &str, prefix: &str, clock: &ManualClock) -> RedisStorage {
    RedisStorage::builder(url)
        .key_prefix(prefix)
        .timeout(StdDuration::from_millis(200))
        .probe_interval(StdDuration::from_millis(250))
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn redis_only(redis: RedisStorage, clock: &ManualClock) -> SessionManager {
    SessionManager::builder(redis)
        .secret(SECRET)
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[tokio::test]
async fn redis_alone_signs_in_serves_refreshes_lists_and_revokes() {
    let Some(url) = shared_redis() else { return };
    let (prefix, clock) = (unique_prefix(), ManualClock::new());
    let a = redis_only(redis_with_clock(&url, &prefix, &clock), &clock);
    // A second instance with nothing in common with the first but Redis.
    let b = redis_only(redis_with_clock(&url, &prefix, &clock), &clock);
    let (app_a, app_b) = (app(&a), app(&b));

    let first = sign_in(&app_a, &a, "alice").await;
    let second = sign_in(&app_a, &a, "alice").await;
    let hash = token_hash_hex(&raw_token(first.split_once('=').unwrap().1));
    let mut conn = connection(&url);
    let stored: bool = conn.exists(session_key(&prefix, &hash)).unwrap();
    assert!(stored, "the session is not in Redis");
    assert_eq!(
        send(&app_b, get("/me", Some(&first))).await.status,
        StatusCode::OK
    );

    // Sliding refresh, persisted in Redis and seen by the other instance.
    clock.advance(Duration::days(2));
    let refreshed = send(&app_b, get("/me", Some(&first))).await;
    assert_eq!(refreshed.status, StatusCode::OK);
    assert!(
        refreshed.set_cookie(b.session_cookie_name()).is_some(),
        "not refreshed"
    );
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::COOKIE, first.parse().unwrap());
    let seen = a.get_session(&headers).await.unwrap().unwrap();
    assert_eq!(seen.expires_at, clock.now() + Duration::days(7));
    let pttl: i64 = conn.pttl(session_key(&prefix, &hash)).unwrap();
    assert!(
        pttl > Duration::days(8).num_milliseconds(),
        "TTL did not slide: {pttl}"
    );

    let listed = a.list_user_sessions("alice").await.unwrap();
    assert_eq!(listed.len(), 2);

    // Sign-out on A: B refuses and clears the cookie.
    assert_eq!(
        send(&app_a, post("/sign-out", Some(&first))).await.status,
        StatusCode::OK
    );
    let refused = send(&app_b, get("/me", Some(&first))).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.clears(b.session_cookie_name()));
    assert_eq!(b.revoke_user("alice").await.unwrap(), 1);
    assert_eq!(
        send(&app_a, get("/me", Some(&second))).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(a.list_user_sessions("alice").await.unwrap().is_empty());
    assert!(keys(&mut conn, &format!("{prefix}s:")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_a_503_never_a_sign_out() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let clock = ManualClock::new();
    let redis = redis_with_clock(&server.url(), &unique_prefix(), &clock);
    let manager = redis_only(redis.clone(), &clock);
    let app = app(&manager);
    let pair = sign_in(&app, &manager, "alice").await;
    let other = sign_in(&app, &manager, "carol").await;

    let assert_unavailable = |reply: Reply, what: &str| {
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}: {}",
            reply.body
        );
        assert!(
            reply.set_cookies().is_empty(),
            "{what}: {:?}",
            reply.set_cookies()
        );
    };
    // Frozen (nothing answers: timeouts, then the open circuit).
    server.freeze();
    for _ in 0..5 {
        assert_unavailable(send(&app, get("/me", Some(&pair))).await, "me");
    }
    // Sign-out ends the session in the browser that asked, and owes the revoke.
    let out = send(&app, post("/sign-out", Some(&pair))).await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    assert_eq!(manager.pending_revocations(), 1, "the revoke is owed");
    assert!(
        out.set_cookies().iter().any(|c| c.contains("Max-Age=0")),
        "{:?}",
        out.set_cookies()
    );
    assert_unavailable(send(&app, post("/sign-in?user=bob", None)).await, "sign-in");
    assert!(redis.metrics().short_circuited > 0);

    // Back: a cookie that did not sign out works again, within a probe interval or two…
    server.thaw();
    let deadline = Instant::now() + StdDuration::from_secs(10);
    loop {
        let reply = send(&app, get("/me", Some(&other))).await;
        if reply.status == StatusCode::OK {
            break;
        }
        assert_unavailable(reply, "me while recovering");
        assert!(Instant::now() < deadline, "Redis never used again");
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    // …and the one that signed out is refused once the owed revoke ran, with no retry.
    while manager.pending_revocations() > 0 {
        assert!(Instant::now() < deadline, "the owed revoke never ran");
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert_eq!(
        send(&app, get("/me", Some(&pair))).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Killed (connections refused).
    server.kill();
    for _ in 0..5 {
        assert_unavailable(send(&app, get("/me", Some(&other))).await, "me, killed");
    }
}

#[tokio::test]
async fn as_a_store_redis_checks_generations_owners_and_duplicates() {
    let Some(url) = shared_redis() else { return };
    let clock = ManualClock::new();
    let redis = redis_with_clock(&url, &unique_prefix(), &clock);
    let manager = redis_only(redis.clone(), &clock);
    let app = app(&manager);
    let pair = sign_in(&app, &manager, "alice").await;
    let hash = tower_auth_session::TokenHash(
        (0..32)
            .map(|i| {
                let hex = token_hash_hex(&raw_token(pair.split_once('=').unwrap().1));
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()
            })
            .collect::<Vec<_>>()
            .try_into()
            .unwrap(),
    );
    let session = redis.find(&hash).await.unwrap().unwrap();
    // By id: the session and its token hash (what the admin `update_fields` writes by).
    let by_id = redis.find_by_id(&session.id).await.unwrap().unwrap();
    assert_eq!((by_id.token_hash, &by_id.session), (hash, &session));
    assert!(redis.find_by_id("no-such-id").await.unwrap().is_none());
    let changes = serde_json::json!({ "role": "admin" });
    let changed = manager
        .update_fields(&session.id, changes.as_object().unwrap().clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.fields["role"], "admin");
    let session = redis.find(&hash).await.unwrap().unwrap();
    assert_eq!(session.fields["role"], "admin");

    // Duplicates are refused.
    assert!(redis.create(&hash, &session).await.is_err());
    // A stale generation does not write.
    let mut stale = session.clone();
    stale.generation = 7;
    assert!(!redis.update(&hash, 5, &stale, None).await.unwrap());
    // Rotation moves the session to a new token hash.
    let new_hash = Token::generate().hash();
    let mut rotated = session.clone();
    rotated.generation = session.generation + 1;
    assert!(
        redis
            .update(&hash, session.generation, &rotated, Some(&new_hash))
            .await
            .unwrap()
    );
    assert_eq!(redis.find(&hash).await.unwrap(), None);
    assert_eq!(redis.find(&new_hash).await.unwrap(), Some(rotated.clone()));
    assert!(
        !redis.update(&hash, 0, &rotated, None).await.unwrap(),
        "old token updated"
    );
    // A user-scoped delete of someone else's session does nothing.
    assert!(
        redis
            .delete_by_id(&session.id, Some("mallory"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(redis.find(&new_hash).await.unwrap().is_some());
    let removed = redis
        .delete_by_id(&session.id, Some("alice"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(removed.token_hash, new_hash);
    assert_eq!(removed.session, rotated);
    assert_eq!(redis.find(&new_hash).await.unwrap(), None);
    assert_eq!(redis.delete_expired(clock.now(), 10).await.unwrap(), 0);
}
