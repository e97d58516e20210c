//! Primary + secondary mode against the shared Redis: layout, round trips, the user
//! index, and two app instances agreeing. Each test has its own key prefix.
#![cfg(feature = "redis")]

use crate::common;
use crate::redis_support;

use std::time::Duration as StdDuration;

use chrono::Duration;
use common::*;
use http::StatusCode;
use redis::Commands;
use redis_support::*;
use tower_auth_session::secondary::{RedisStorage, SecondaryStorage};
use tower_auth_session::{Clock, ManualClock, MemoryStore, SessionManager, SessionStore};

struct Setup {
    manager: SessionManager,
    app: axum::Router,
    redis: RedisStorage,
    counts: Counts,
    prefix: String,
    url: String,
    clock: ManualClock,
}

fn setup_over(
    url: &str,
    prefix: &str,
    store: MemoryStore,
    clock: &ManualClock,
    configure: impl FnOnce(
        tower_auth_session::SessionManagerBuilder,
    ) -> tower_auth_session::SessionManagerBuilder,
) -> Setup {
    let redis = storage(url, prefix);
    let (store, counts) = CountingStore::new(store);
    let builder = SessionManager::builder(store)
        .secondary_storage(redis.clone())
        .secret(SECRET)
        .clock(clock.clone());
    let manager = configure(builder).build().unwrap();
    Setup {
        app: app(&manager),
        manager,
        redis,
        counts,
        prefix: prefix.to_owned(),
        url: url.to_owned(),
        clock: clock.clone(),
    }
}

fn setup() -> Option<Setup> {
    let url = shared_redis()?;
    Some(setup_over(
        &url,
        &unique_prefix(),
        MemoryStore::new(),
        &ManualClock::new(),
        |b| b,
    ))
}

fn cookie_value(pair: &str) -> &str {
    pair.split_once('=').unwrap().1
}

#[cfg(feature = "conformance")]
#[tokio::test]
async fn redis_storage_passes_the_secondary_storage_conformance_suite() {
    let Some(url) = shared_redis() else { return };
    let redis = storage(&url, &unique_prefix());
    tower_auth_session::secondary::conformance::secondary_storage(&redis).await;
}

#[tokio::test]
async fn sign_in_writes_redis_with_ttl_no_raw_token_and_indexes_the_user() {
    // A test-owned server, so the footprint is measured with the default key prefix.
    let Some(server) = RedisServer::start() else {
        return;
    };
    let s = setup_over(
        &server.url(),
        tower_auth_session::secondary::DEFAULT_KEY_PREFIX,
        MemoryStore::new(),
        &ManualClock::new(),
        |b| b,
    );
    let request = http::Request::post("/sign-in?user=alice")
        .header(
            http::header::USER_AGENT,
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
        .body(axum::body::Body::empty())
        .unwrap();
    let reply = send(&s.app, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    let session_id = reply.json()["session"]["id"].as_str().unwrap().to_owned();
    let signed = reply.cookie_value(s.manager.session_cookie_name()).unwrap();
    let token = raw_token(&signed);
    let hash = token_hash_hex(&token);

    let mut conn = connection(&s.url);
    let value_key = session_key(&s.prefix, &hash);
    let pttl: i64 = conn.pttl(&value_key).unwrap();
    let week_ms = Duration::days(7).num_milliseconds();
    assert!(
        (week_ms - 60_000..=week_ms).contains(&pttl),
        "TTL {pttl} ms is not the remaining lifetime"
    );
    let index_key = format!("{}u:{{alice}}:idx", s.prefix);
    let indexed: Vec<String> = conn.zrange(&index_key, 0, -1).unwrap();
    assert_eq!(indexed, vec![session_id.clone()]);
    assert!(
        conn.pttl::<_, i64>(&index_key).unwrap() > 0,
        "the index has a TTL"
    );
    let pointer_key = format!("{}i:{session_id}", s.prefix);
    assert!(
        conn.pttl::<_, i64>(&pointer_key).unwrap() > 0,
        "the pointer has a TTL"
    );

    // No key and no value holds the token, in any encoding.
    let token_bytes = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&token)
            .unwrap()
    };
    let token_hex: String = token_bytes.iter().map(|b| format!("{b:02x}")).collect();
    let all = keys(&mut conn, &s.prefix);
    assert_eq!(all.len(), 3, "{all:?}");
    let mut bytes_in_values = 0;
    for key in &all {
        for needle in [token.as_str(), token_hex.as_str(), signed.as_str()] {
            assert!(!key.contains(needle), "token in key {key}");
        }
        let kind: String = redis::cmd("TYPE").arg(key).query(&mut conn).unwrap();
        let dump: Vec<Vec<u8>> = match kind.as_str() {
            "string" => vec![conn.get(key).unwrap()],
            "zset" => conn.zrange(key, 0, -1).unwrap(),
            other => panic!("unexpected {other} at {key}"),
        };
        for value in dump {
            let text = String::from_utf8_lossy(&value);
            assert!(!text.contains(&token) && !text.contains(&token_hex));
            assert!(!value.windows(32).any(|w| w == token_bytes.as_slice()));
            bytes_in_values += value.len();
        }
    }
    let value_len: usize = conn.strlen(&value_key).unwrap();
    let memory: Vec<(String, i64)> = all
        .iter()
        .map(|k| {
            let bytes = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(k)
                .query(&mut conn)
                .unwrap();
            (k[s.prefix.len()..s.prefix.len() + 1].to_owned(), bytes)
        })
        .collect();
    eprintln!(
        "redis footprint of one browser session (key prefix {} B): value {value_len} B; \
         all values {bytes_in_values} B; MEMORY USAGE by key kind {memory:?} (total {} B)",
        s.prefix.len(),
        memory.iter().map(|(_, b)| b).sum::<i64>()
    );
}

#[tokio::test]
async fn each_operation_costs_the_promised_redis_round_trips() {
    let Some(s) = setup() else { return };
    let s = setup_over(&s.url, &s.prefix, MemoryStore::new(), &s.clock, |b| {
        b.update_age(StdDuration::from_secs(3600))
    });
    let trips = |s: &Setup| s.redis.metrics().round_trips;

    let before = trips(&s);
    let pair = sign_in(&s.app, &s.manager, "alice").await;
    assert_eq!(
        trips(&s) - before,
        1,
        "sign-in: one atomic write after the store commit"
    );

    let (before, finds) = (trips(&s), s.counts.finds());
    assert_eq!(
        send(&s.app, get("/me", Some(&pair))).await.status,
        StatusCode::OK
    );
    assert_eq!(trips(&s) - before, 1, "a Redis hit is one round trip");
    assert_eq!(
        s.counts.finds(),
        finds,
        "a Redis hit does not ask the store"
    );

    // Miss: one GET, the store, and one conditional backfill.
    let hash = token_hash_hex(&raw_token(cookie_value(&pair)));
    let _: () = connection(&s.url)
        .del(session_key(&s.prefix, &hash))
        .unwrap();
    let (before, finds) = (trips(&s), s.counts.finds());
    assert_eq!(
        send(&s.app, get("/me", Some(&pair))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        trips(&s) - before,
        2,
        "a miss is a GET plus one backfill write"
    );
    assert_eq!(s.counts.finds() - finds, 1);
    let before = trips(&s);
    send(&s.app, get("/me", Some(&pair))).await;
    assert_eq!(trips(&s) - before, 1, "backfilled: a hit again");

    // Refresh: one GET, the store's conditional update, one write-through.
    s.clock.advance(Duration::hours(2));
    let (before, updates) = (trips(&s), s.counts.updates());
    let reply = send(&s.app, get("/me", Some(&pair))).await;
    assert!(
        reply.set_cookie(s.manager.session_cookie_name()).is_some(),
        "refreshed"
    );
    assert_eq!(trips(&s) - before, 2, "a refresh is a GET plus one write");
    assert_eq!(s.counts.updates() - updates, 1);
    let refreshed = s
        .redis
        .get(&tower_auth_session::TokenHash(
            hex_bytes(&hash).try_into().unwrap(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        refreshed.generation, 1,
        "Redis holds the refreshed generation"
    );
    assert_eq!(refreshed.expires_at, s.clock.now() + Duration::days(7));
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_sign_ins_for_one_user_are_all_indexed() {
    let Some(url) = shared_redis() else { return };
    let prefix = unique_prefix();
    // What is under test is the index's atomicity, not the timeout: a generous one, and
    // the connection made before the burst, so a loaded machine cannot turn a slow
    // answer into an open circuit and skipped copies.
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let redis = RedisStorage::builder(&url)
        .key_prefix(&prefix)
        .timeout(std::time::Duration::from_secs(2))
        .clock(clock.clone())
        .connect()
        .await
        .unwrap();
    let (counting, counts) = CountingStore::new(store.clone());
    let manager = SessionManager::builder(counting)
        .secondary_storage(redis.clone())
        .secret(SECRET)
        .clock(clock.clone())
        .build()
        .unwrap();
    let s = Setup {
        app: app(&manager),
        manager,
        redis,
        counts,
        prefix,
        url,
        clock,
    };
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let app = s.app.clone();
            tokio::spawn(async move { send(&app, post("/sign-in?user=zoe", None)).await.status })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        s.redis.metrics().failures,
        0,
        "redis failed during the burst"
    );
    let mut conn = connection(&s.url);
    let indexed: usize = conn.zcard(format!("{}u:{{zoe}}:idx", s.prefix)).unwrap();
    assert_eq!(indexed, 100, "lost updates in the Redis user index");
    let index_bytes: i64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(format!("{}u:{{zoe}}:idx", s.prefix))
        .query(&mut conn)
        .unwrap();
    eprintln!(
        "user index with 100 sessions: {index_bytes} B ({} B per session)",
        index_bytes / 100
    );
    let listed = SecondaryStorage::list_by_user(&s.redis, "zoe", s.clock.now())
        .await
        .unwrap();
    assert_eq!(listed.len(), 100);
    assert_eq!(
        store
            .list_by_user("zoe", s.clock.now())
            .await
            .unwrap()
            .len(),
        100
    );

    assert_eq!(s.manager.revoke_user("zoe").await.unwrap(), 100);
    assert!(
        keys(&mut conn, &format!("{}s:", s.prefix)).is_empty(),
        "values left after revoke-all"
    );
    let indexed: usize = conn.zcard(format!("{}u:{{zoe}}:idx", s.prefix)).unwrap();
    assert_eq!(indexed, 0);
}

#[tokio::test]
async fn two_instances_over_one_redis_and_store_agree_on_sign_in_refresh_and_revoke() {
    let Some(s) = setup() else { return };
    let store = MemoryStore::new();
    let clock = ManualClock::new();
    let update_age =
        |b: tower_auth_session::SessionManagerBuilder| b.update_age(StdDuration::from_secs(3600));
    let a = setup_over(&s.url, &s.prefix, store.clone(), &clock, update_age);
    let b = setup_over(&s.url, &s.prefix, store.clone(), &clock, update_age);
    let me = |setup: &Setup, pair: &str| {
        let (app, pair) = (setup.app.clone(), pair.to_owned());
        async move { send(&app, get("/me", Some(&pair))).await }
    };

    // Sign-in on A, served by B from Redis (no store query on B).
    let first = sign_in(&a.app, &a.manager, "alice").await;
    let second = sign_in(&a.app, &a.manager, "alice").await;
    let reply = me(&b, &first).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        b.counts.finds(),
        0,
        "B read the store although Redis had it"
    );

    // Refresh on B; A sees the new expiry straight from Redis.
    clock.advance(Duration::hours(2));
    let refreshed = me(&b, &first).await;
    assert!(
        refreshed
            .set_cookie(b.manager.session_cookie_name())
            .is_some()
    );
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::COOKIE, first.parse().unwrap());
    let on_a = a.manager.get_session(&headers).await.unwrap().unwrap();
    let on_b = b.manager.get_session(&headers).await.unwrap().unwrap();
    assert_eq!(on_a, on_b);
    assert_eq!(on_a.expires_at, clock.now() + Duration::days(7));
    assert_eq!(
        a.counts.finds(),
        0,
        "A read the store although Redis had it"
    );
    // A does not refresh again: it sees B's write.
    let updates = a.counts.updates();
    assert!(me(&a, &first).await.set_cookies().is_empty());
    assert_eq!(a.counts.updates(), updates);

    // Sign-out on A: B refuses at once and clears the cookie.
    assert_eq!(
        send(&a.app, post("/sign-out", Some(&first))).await.status,
        StatusCode::OK
    );
    let refused = me(&b, &first).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.clears(b.manager.session_cookie_name()));
    // Admin revoke by id on B: A refuses.
    let id = me(&a, &second).await.json()["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(b.manager.revoke(&id).await.unwrap());
    assert_eq!(me(&a, &second).await.status, StatusCode::UNAUTHORIZED);
    assert!(store.is_empty());
    let mut conn = connection(&s.url);
    assert!(keys(&mut conn, &format!("{}s:", s.prefix)).is_empty());
}

#[tokio::test]
async fn revoke_other_sessions_keeps_the_current_one_in_every_tier() {
    let Some(s) = setup() else { return };
    let pairs = [
        sign_in(&s.app, &s.manager, "bob").await,
        sign_in(&s.app, &s.manager, "bob").await,
        sign_in(&s.app, &s.manager, "bob").await,
    ];
    let keep = send(&s.app, get("/me", Some(&pairs[1]))).await.json()["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(s.manager.revoke_user_except("bob", &keep).await.unwrap(), 2);
    for (i, pair) in pairs.iter().enumerate() {
        let expected = if i == 1 {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(send(&s.app, get("/me", Some(pair))).await.status, expected);
    }
    let listed = SecondaryStorage::list_by_user(&s.redis, "bob", s.clock.now())
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec![keep.as_str()]
    );
}

#[tokio::test]
async fn an_undecodable_redis_value_is_a_miss_not_an_error() {
    let Some(s) = setup() else { return };
    let pair = sign_in(&s.app, &s.manager, "carol").await;
    let hash = token_hash_hex(&raw_token(cookie_value(&pair)));
    let _: () = connection(&s.url)
        .set(session_key(&s.prefix, &hash), "garbage\u{0}\u{ff}")
        .unwrap();
    let reply = send(&s.app, get("/me", Some(&pair))).await;
    assert_eq!(reply.status, StatusCode::OK, "fell back to the store");
    assert_eq!(s.counts.finds(), 1);
}

/// Rotation, re-authentication and self-service revocation through the handle, with
/// Redis in front: each is visible to another instance that reads Redis first.
#[tokio::test]
async fn handle_writes_and_self_service_revokes_reach_redis() {
    use axum::routing::post as route_post;
    let Some(s) = setup() else { return };
    let store = MemoryStore::new();
    let a = setup_over(&s.url, &s.prefix, store.clone(), &s.clock, |b| b);
    let b = setup_over(&s.url, &s.prefix, store.clone(), &s.clock, |b| b);
    let extra = axum::Router::new()
        .route(
            "/rotate",
            route_post(|h: tower_auth_session::SessionHandle| async move {
                h.rotate().await.map(|_| ()).map_err(|e| e.to_string())
            }),
        )
        .route(
            "/reauthenticate",
            route_post(|h: tower_auth_session::SessionHandle| async move {
                h.reauthenticate()
                    .await
                    .map(|s| s.authenticated_at.to_rfc3339())
                    .map_err(|e| e.to_string())
            }),
        )
        .route(
            "/revoke/{id}",
            route_post(
                |h: tower_auth_session::SessionHandle,
                 axum::extract::Path(id): axum::extract::Path<String>| async move {
                    h.revoke(&id)
                        .await
                        .map(|r| r.to_string())
                        .map_err(|e| e.to_string())
                },
            ),
        )
        .layer(a.manager.layer());
    let name = a.manager.session_cookie_name().to_owned();

    // Rotation: the old token is refused by B (which reads Redis first), the new works.
    let old = sign_in(&a.app, &a.manager, "dave").await;
    let rotated = send(&extra, post("/rotate", Some(&old))).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new = format!("{name}={}", rotated.cookie_value(&name).unwrap());
    assert_eq!(
        send(&b.app, get("/me", Some(&old))).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&b.app, get("/me", Some(&new))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        b.counts.finds(),
        1,
        "only the refused old token reached the store"
    );

    // Re-authentication: B sees the new authenticated_at from Redis.
    s.clock.advance(Duration::minutes(5));
    let reauth = send(&extra, post("/reauthenticate", Some(&new))).await;
    assert_eq!(reauth.status, StatusCode::OK, "{}", reauth.body);
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::COOKIE, new.parse().unwrap());
    let seen = b.manager.get_session(&headers).await.unwrap().unwrap();
    assert_eq!(seen.authenticated_at, s.clock.now());

    // Self-service revoke of another of one's own sessions: B refuses it at once; a
    // foreign id changes nothing.
    let other = sign_in(&a.app, &a.manager, "dave").await;
    let other_id = send(&b.app, get("/me", Some(&other))).await.json()["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let stranger = sign_in(&a.app, &a.manager, "erin").await;
    let by_stranger = send(
        &extra,
        post(&format!("/revoke/{other_id}"), Some(&stranger)),
    )
    .await;
    assert_eq!(by_stranger.body, "false");
    assert_eq!(
        send(&b.app, get("/me", Some(&other))).await.status,
        StatusCode::OK
    );
    let by_owner = send(&extra, post(&format!("/revoke/{other_id}"), Some(&new))).await;
    assert_eq!(by_owner.body, "true");
    assert_eq!(
        send(&b.app, get("/me", Some(&other))).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Issue 14: a session value whose `updated_at` lies at the end of chrono's calendar,
/// written straight into Redis as `redis-cli SET` would, panicked every request that
/// carried its cookie (`updated_at + update_age` in the refresh check), even on routes
/// that need no session. Such a value is now undecodable: the request falls back to the
/// store like for any other bad value.
#[tokio::test]
async fn a_redis_value_with_an_absurd_updated_at_never_panics_a_request() {
    let Some(s) = setup() else { return };
    let pair = sign_in(&s.app, &s.manager, "mallory").await;
    let hash = token_hash_hex(&raw_token(cookie_value(&pair)));
    let key = session_key(&s.prefix, &hash);
    let mut conn = connection(&s.url);

    // Keep the header the scripts read (generation, expiry, id, user) and move
    // `updated_at`, stored relative to `created_at`, to chrono's last millisecond.
    let stored: String = conn.get(&key).unwrap();
    let (header, body) = stored.split_at(stored.find('[').unwrap());
    let mut body: Vec<serde_json::Value> = serde_json::from_str(body).unwrap();
    let created_ms = body[0].as_i64().unwrap();
    body[1] = (chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp_millis() - created_ms).into();
    let absurd = format!("{header}{}", serde_json::to_string(&body).unwrap());
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(&absurd)
        .arg("KEEPTTL")
        .query(&mut conn)
        .unwrap();

    let app = axum::Router::new()
        .route("/public", axum::routing::get(|| async { "public" }))
        .route(
            "/me",
            axum::routing::get(|tower_auth_session::CurrentSession(session)| async move {
                session.user_id
            }),
        )
        .layer(s.manager.layer());
    for attempt in 1..=2 {
        let reply = send(&app, get("/public", Some(&pair))).await;
        assert_eq!(reply.status, StatusCode::OK, "request {attempt}");
        assert_eq!(reply.body, "public");
    }
    // The store still has the session, so nobody was signed out by the bad copy.
    let me = send(&app, get("/me", Some(&pair))).await;
    assert_eq!((me.status, me.body.as_str()), (StatusCode::OK, "mallory"));
    assert_eq!(
        s.counts.finds(),
        3,
        "every request read the store: the absurd copy was refused, not served"
    );
}
