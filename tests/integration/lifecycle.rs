//! Before-hooks and bans, through real HTTP-shaped requests (`oneshot`) and real stores:
//! a refusal writes nothing in any tier, a hook's fields reach the store, Redis and the
//! cookie cache, a hook that panics, errors or hangs refuses (never a 500), and a ban
//! revokes every session of the user on every instance at once.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::{Router, routing};
use chrono::Duration;
use common::*;
use http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower_auth_session::{
    CookieCache, CreateAttempt, FieldAccess, FieldPolicy, HookError, ManualClock, MemoryBanList,
    Refusal, Session, SessionHandle, SessionManager, SessionManagerBuilder, SessionStore,
    SignInOptions, UpdateAttempt, Verdict,
};

const TOKEN: &str = "__Host-tas.session_token";
const CACHE: &str = "__Host-tas.session_data";

/// Sign-in (`?user=…`, fields from the JSON body) that answers a refusal as the routes
/// do, and the library's routes under `/api/auth`.
fn api(manager: &SessionManager) -> Router {
    async fn sign_in(
        handle: SessionHandle,
        axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
        body: axum::body::Bytes,
    ) -> Result<String, tower_auth_session::SessionError> {
        let body: Value = serde_json::from_slice(&body).unwrap_or(json!({}));
        let options = SignInOptions::new().fields(&body)?;
        let user = q.get("user").cloned().unwrap_or_else(|| "alice".into());
        let session = handle.sign_in(user, options).await?;
        Ok(json!({ "session": session }).to_string())
    }
    Router::new()
        .nest(
            "/api/auth",
            manager.router().route("/sign-in", routing::post(sign_in)),
        )
        .layer(manager.layer())
}

fn json_post(uri: &str, cookie: Option<&str>, body: &Value) -> Request<Body> {
    let mut request = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

/// The stores a test runs on: the store itself, and Redis when it is the secondary tier.
struct Tiers {
    store: Arc<dyn SessionStore>,
    #[cfg(feature = "redis")]
    redis: Option<tower_auth_session::secondary::RedisStorage>,
    _dir: Option<tempfile::TempDir>,
}

impl Tiers {
    /// Every copy of `user`'s sessions, in the store and in Redis.
    async fn sessions_of(&self, user: &str) -> (Vec<Session>, Vec<Session>) {
        let now = chrono::Utc::now() - Duration::seconds(1);
        let stored = self.store.list_by_user(user, now).await.unwrap();
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            use tower_auth_session::secondary::SecondaryStorage;
            return (
                stored,
                SecondaryStorage::list_by_user(redis, user, now)
                    .await
                    .unwrap(),
            );
        }
        (stored, Vec::new())
    }
}

/// A builder over one store kind with the cookie cache on, or `None` when its service is
/// not running (and not required).
async fn tiers_for(kind: &str) -> Option<(SessionManagerBuilder, Tiers)> {
    let (store, dir): (Arc<dyn SessionStore>, _) = match kind {
        "memory" => make_store(StoreKind::Memory).await,
        "sqlite" | "redis-over-sqlite" => make_store(StoreKind::Sqlite).await,
        #[cfg(feature = "postgres")]
        "postgres" => {
            let url = service_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")?;
            let store = tower_auth_session::store::PostgresStore::builder()
                .schema(unique_name("tas_hooks"))
                .unwrap()
                .connect(&url)
                .await
                .unwrap();
            (Arc::new(store), None)
        }
        other => panic!("unknown store kind {other}"),
    };
    let builder = SessionManager::builder(store.clone())
        .secret(SECRET)
        .cookie_cache(CookieCache::new());
    #[cfg(feature = "redis")]
    if kind == "redis-over-sqlite" {
        let url = service_url("REDIS_URL", "redis://127.0.0.1:6379")?;
        let redis = tower_auth_session::secondary::RedisStorage::builder(&url)
            .key_prefix(format!("{}:", unique_name("tas_hooks")))
            .build()
            .unwrap();
        let tiers = Tiers {
            store,
            redis: Some(redis.clone()),
            _dir: dir,
        };
        return Some((builder.secondary_storage(redis), tiers));
    }
    let tiers = Tiers {
        store,
        #[cfg(feature = "redis")]
        redis: None,
        _dir: dir,
    };
    Some((builder, tiers))
}

fn kinds() -> Vec<&'static str> {
    let mut kinds = vec!["memory", "sqlite"];
    if cfg!(feature = "postgres") {
        kinds.push("postgres");
    }
    if cfg!(feature = "redis") {
        kinds.push("redis-over-sqlite");
    }
    kinds
}

/// The token and cache cookies a reply set, as a `Cookie` header.
fn cookies_of(reply: &Reply) -> String {
    let token = reply.cookie_value(TOKEN).expect("token cookie");
    match reply.cookie_value(CACHE) {
        Some(cache) => format!("{TOKEN}={token}; {CACHE}={cache}"),
        None => format!("{TOKEN}={token}"),
    }
}

#[tokio::test]
async fn a_banned_users_sign_in_is_403_and_leaves_no_row_in_any_tier() {
    for kind in kinds() {
        let Some((builder, tiers)) = tiers_for(kind).await else {
            continue;
        };
        let manager = builder
            .bans(MemoryBanList::with_users(["mallory".to_owned()]))
            .build()
            .unwrap();
        let app = api(&manager);
        let reply = send(
            &app,
            json_post("/api/auth/sign-in?user=mallory", None, &json!({})),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{kind}: {}",
            reply.body
        );
        assert_eq!(reply.json()["code"], "USER_BANNED", "{kind}");
        assert!(reply.set_cookies().is_empty(), "{kind}: no cookie");
        assert_eq!(
            tiers.sessions_of("mallory").await,
            (vec![], vec![]),
            "{kind}: nothing in the store or Redis"
        );
        // Everyone else signs in.
        let reply = send(
            &app,
            json_post("/api/auth/sign-in?user=bob", None, &json!({})),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{kind}: {}", reply.body);
    }
}

/// Sets `activeOrganizationId` when the sign-in did not.
async fn default_organisation(attempt: CreateAttempt) -> Result<Verdict, HookError> {
    let mut fields = attempt.fields;
    fields
        .entry("activeOrganizationId")
        .or_insert(json!("org_default"));
    Ok(Verdict::Change(fields))
}

#[tokio::test]
async fn a_create_hooks_field_is_in_the_stored_session_and_every_cache() {
    for kind in kinds() {
        let Some((builder, tiers)) = tiers_for(kind).await else {
            continue;
        };
        let manager = builder.before_create(default_organisation).build().unwrap();
        let app = api(&manager);
        let reply = send(
            &app,
            json_post("/api/auth/sign-in?user=alice", None, &json!({})),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{kind}: {}", reply.body);
        let (stored, redis) = tiers.sessions_of("alice").await;
        assert_eq!(
            stored[0].fields["activeOrganizationId"], "org_default",
            "{kind}"
        );
        if kind == "redis-over-sqlite" {
            assert_eq!(redis[0].fields["activeOrganizationId"], "org_default");
        }
        // The cookie cache the sign-in issued carries it: served without a store read.
        let cookies = cookies_of(&reply);
        assert!(cookies.contains(CACHE), "{kind}: a cache was issued");
        let seen = send(&app, get("/api/auth/get-session", Some(&cookies))).await;
        assert_eq!(
            seen.json()["session"]["activeOrganizationId"],
            "org_default",
            "{kind}: {}",
            seen.body
        );
        // A field the sign-in chose is kept.
        let body = json!({ "activeOrganizationId": "org_7" });
        let reply = send(&app, json_post("/api/auth/sign-in?user=carol", None, &body)).await;
        assert_eq!(
            reply.json()["session"]["activeOrganizationId"],
            "org_7",
            "{kind}"
        );
    }
}

/// Only an admin's session may change `role`.
async fn role_by_admins_only(attempt: UpdateAttempt) -> Result<Verdict, HookError> {
    let admin = attempt.session.fields.get("role") == Some(&json!("admin"));
    if attempt.changes.contains_key("role") && !admin {
        return Ok(Verdict::Refuse(Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an admin may change a role",
        )));
    }
    Ok(Verdict::Allow)
}

#[tokio::test]
async fn a_refused_update_changes_nothing_in_any_tier() {
    for kind in kinds() {
        let Some((builder, tiers)) = tiers_for(kind).await else {
            continue;
        };
        let manager = builder
            .field_policy(FieldPolicy::new().undeclared(FieldAccess::Client))
            .before_update(role_by_admins_only)
            .build()
            .unwrap();
        let app = api(&manager);
        let body = json!({ "role": "member" });
        let reply = send(&app, json_post("/api/auth/sign-in?user=alice", None, &body)).await;
        let cookies = cookies_of(&reply);
        let before = tiers.sessions_of("alice").await;
        let change = json!({ "role": "admin", "theme": "dark" });
        let reply = send(
            &app,
            json_post("/api/auth/update-session", Some(&cookies), &change),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{kind}: {}",
            reply.body
        );
        assert_eq!(reply.json()["code"], "FORBIDDEN", "{kind}");
        let after = tiers.sessions_of("alice").await;
        assert_eq!(
            before, after,
            "{kind}: nothing written (generation included)"
        );
        // The admin API goes through the same hook.
        let id = after.0[0].id.clone();
        let admin = manager
            .update_fields(&id, change.as_object().unwrap().clone())
            .await;
        assert!(
            matches!(admin, Err(tower_auth_session::SessionError::Refused(_))),
            "{kind}: {admin:?}"
        );
        // What the hook allows still goes through.
        let reply = send(
            &app,
            json_post(
                "/api/auth/update-session",
                Some(&cookies),
                &json!({ "theme": "dark" }),
            ),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{kind}: {}", reply.body);
    }
}

#[tokio::test]
async fn a_hook_that_panics_errors_or_hangs_refuses_and_writes_nothing() {
    let calls = Arc::new(AtomicUsize::new(0));
    for (what, kind) in [
        ("panics", "sqlite"),
        ("errors", "memory"),
        ("hangs", "redis-over-sqlite"),
    ] {
        let Some((builder, tiers)) = tiers_for(kind).await else {
            continue;
        };
        let counter = calls.clone();
        let manager = builder
            .hook_timeout(StdDuration::from_millis(200))
            .before_create(move |attempt: CreateAttempt| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    match what {
                        "panics" => panic!("a bug in the app's hook ({})", attempt.user_id),
                        "errors" => Err::<Verdict, HookError>("the user table is down".into()),
                        _ => {
                            // Far past the timeout: it never answers in time.
                            tokio::time::sleep(StdDuration::from_secs(3600)).await;
                            Ok(Verdict::Allow)
                        }
                    }
                }
            })
            .build()
            .unwrap();
        let app = api(&manager);
        let started = std::time::Instant::now();
        let reply = send(
            &app,
            json_post("/api/auth/sign-in?user=alice", None, &json!({})),
        )
        .await;
        println!("a hook that {what}: answered in {:?}", started.elapsed());
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}: {}",
            reply.body
        );
        assert_eq!(reply.json()["code"], "SESSION_HOOK_FAILED", "{what}");
        assert!(reply.set_cookies().is_empty(), "{what}: no cookie");
        assert_eq!(tiers.sessions_of("alice").await, (vec![], vec![]), "{what}");
    }
    assert!(calls.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn an_update_hook_that_panics_refuses_and_changes_nothing() {
    let (store, _dir) = make_store(StoreKind::Sqlite).await;
    let manager = SessionManager::builder(store.clone())
        .secret(SECRET)
        .field_policy(FieldPolicy::new().undeclared(FieldAccess::Client))
        .before_update(|_: UpdateAttempt| async { panic!("bug") })
        .build()
        .unwrap();
    let app = api(&manager);
    let reply = send(
        &app,
        json_post("/api/auth/sign-in?user=alice", None, &json!({})),
    )
    .await;
    let cookies = cookies_of(&reply);
    let before = store
        .list_by_user("alice", chrono::Utc::now())
        .await
        .unwrap();
    let reply = send(
        &app,
        json_post(
            "/api/auth/update-session",
            Some(&cookies),
            &json!({ "theme": "dark" }),
        ),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    let after = store
        .list_by_user("alice", chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(before, after);
}

/// A manager whose refresh is due after one minute, on a manual clock.
fn refreshing(builder: SessionManagerBuilder, clock: &ManualClock) -> SessionManagerBuilder {
    builder
        .clock(clock.clone())
        .update_age(StdDuration::from_secs(60))
}

#[tokio::test]
async fn a_refused_refresh_serves_no_session_and_writes_nothing() {
    let (store, _dir) = make_store(StoreKind::Sqlite).await;
    let (counting, counts) = CountingStore::new(store);
    let clock = ManualClock::new();
    let manager = refreshing(SessionManager::builder(counting), &clock)
        .secret(SECRET)
        .before_refresh(|_| async {
            Ok(Verdict::Refuse(Refusal::new(
                StatusCode::FORBIDDEN,
                "reauthenticate",
                "sign in again",
            )))
        })
        .build()
        .unwrap();
    let app = app(&manager);
    let token = sign_in(&app, &manager, "alice").await;
    assert_eq!(
        send(&app, get("/me", Some(&token))).await.status,
        StatusCode::OK
    );
    clock.advance(Duration::minutes(2));
    let updates = counts.updates();
    let reply = send(&app, get("/me", Some(&token))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert!(reply.set_cookies().is_empty(), "the cookies stay");
    assert_eq!(counts.updates(), updates, "no refresh written");
    assert_eq!(manager.list_user_sessions("alice").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_revoke_hook_can_refuse_a_users_revocation() {
    let manager = SessionManager::builder(tower_auth_session::MemoryStore::new())
        .secret(SECRET)
        .before_revoke(|attempt| async move {
            Ok(match attempt.reason {
                tower_auth_session::RevokeReason::ByAdmin => Verdict::Refuse(Refusal::new(
                    StatusCode::LOCKED,
                    "legal_hold",
                    "this account is on legal hold",
                )),
                _ => Verdict::Allow,
            })
        })
        .build()
        .unwrap();
    let app = app(&manager);
    let token = sign_in(&app, &manager, "alice").await;
    let refused = manager.revoke_user("alice").await;
    assert!(
        matches!(&refused, Err(e) if e.status() == StatusCode::LOCKED),
        "{refused:?}"
    );
    assert_eq!(
        send(&app, get("/me", Some(&token))).await.status,
        StatusCode::OK
    );
    // What the hook allows (a sign-out) goes through.
    assert_eq!(
        send(&app, post("/sign-out", Some(&token))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get("/me", Some(&token))).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_banned_users_refresh_revokes_every_session_of_theirs() {
    let (store, _dir) = make_store(StoreKind::Sqlite).await;
    let clock = ManualClock::new();
    let bans = Arc::new(MemoryBanList::new());
    let manager = refreshing(SessionManager::builder(store), &clock)
        .secret(SECRET)
        .bans(bans.clone())
        .build()
        .unwrap();
    let app = app(&manager);
    let first = sign_in(&app, &manager, "mallory").await;
    let _second = sign_in(&app, &manager, "mallory").await;
    // Banned in the app's user table, not through `ban_user`: nothing revoked yet.
    use tower_auth_session::BanList;
    bans.ban("mallory", None).await.unwrap();
    assert_eq!(
        send(&app, get("/me", Some(&first))).await.status,
        StatusCode::OK
    );
    clock.advance(Duration::minutes(2));
    let reply = send(&app, get("/me", Some(&first))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert!(reply.clears(TOKEN));
    assert!(
        manager
            .list_user_sessions("mallory")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn ban_user_refuses_sign_ins_until_unbanned_and_a_ban_can_lapse() {
    let clock = ManualClock::new();
    let manager = SessionManager::builder(tower_auth_session::MemoryStore::new())
        .secret(SECRET)
        .clock(clock.clone())
        .bans(MemoryBanList::new())
        .build()
        .unwrap();
    let app = api(&manager);
    let sign_in = || json_post("/api/auth/sign-in?user=eve", None, &json!({}));
    assert_eq!(send(&app, sign_in()).await.status, StatusCode::OK);
    assert_eq!(manager.ban_user("eve", None).await.unwrap(), 1);
    assert!(manager.is_banned("eve").await.unwrap());
    assert_eq!(send(&app, sign_in()).await.status, StatusCode::FORBIDDEN);
    manager.unban_user("eve").await.unwrap();
    assert_eq!(send(&app, sign_in()).await.status, StatusCode::OK);
    use tower_auth_session::Clock;
    let until = clock.now() + Duration::hours(1);
    manager.ban_user("eve", Some(until)).await.unwrap();
    assert_eq!(send(&app, sign_in()).await.status, StatusCode::FORBIDDEN);
    clock.advance(Duration::hours(2));
    assert_eq!(
        send(&app, sign_in()).await.status,
        StatusCode::OK,
        "the ban lapsed"
    );
}

/// Two instances over one store and one Redis (the secondary tier, which also carries
/// cache revocations), cookie caches on and their leases live.
#[cfg(feature = "redis")]
#[tokio::test]
async fn banning_revokes_every_session_on_two_instances_with_cookie_caches() {
    let Some(url) = service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let store = tower_auth_session::MemoryStore::new();
    let clock = ManualClock::new();
    let prefix = format!("{}:", unique_name("tas_ban"));
    let instance = || {
        let tier = tower_auth_session::secondary::RedisStorage::builder(&url)
            .key_prefix(&prefix)
            .clock(clock.clone())
            .build()
            .unwrap();
        let (counting, counts) = CountingStore::new(store.clone());
        let manager = SessionManager::builder(counting)
            .secret(SECRET)
            .clock(clock.clone())
            .cookie_cache(CookieCache::new())
            .secondary_storage(tier)
            .bans(MemoryBanList::new())
            .build()
            .unwrap();
        (app(&manager), manager, counts)
    };
    let (app_a, a, _) = instance();
    let (app_b, b, b_counts) = instance();
    let deadline = std::time::Instant::now() + StdDuration::from_secs(20);
    while !(a.cookie_cache_active() && b.cookie_cache_active()) {
        assert!(
            std::time::Instant::now() < deadline,
            "leases never became live"
        );
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    // Past the start-up watermark: caches issued from here on are believed.
    clock.advance(Duration::seconds(6));
    // Three browsers of mallory's, each warmed into a cookie cache on B; one of bob's.
    let mut browsers = Vec::new();
    for user in ["mallory", "mallory", "mallory", "bob"] {
        let token = sign_in(&app_a, &a, user).await;
        let reply = send(&app_b, get("/me", Some(&token))).await;
        assert_eq!(reply.status, StatusCode::OK);
        let cache = reply.cookie_value(CACHE).expect("B issued a cache");
        let cookies = format!("{token}; {CACHE}={cache}");
        let finds = b_counts.finds();
        assert_eq!(
            send(&app_b, get("/me", Some(&cookies))).await.status,
            StatusCode::OK
        );
        assert_eq!(b_counts.finds(), finds, "B serves {user} from its cache");
        browsers.push((user, cookies));
    }
    assert_eq!(a.ban_user("mallory", None).await.unwrap(), 3);
    for (user, cookies) in &browsers {
        let expected = if *user == "mallory" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        assert_eq!(
            send(&app_b, get("/me", Some(cookies))).await.status,
            expected,
            "{user} on B, the very next request"
        );
        assert_eq!(
            send(&app_a, get("/me", Some(cookies))).await.status,
            expected,
            "{user} on A"
        );
    }
}

/// Every key of a Redis, its value (`DUMP`) and its absolute expiry: equal snapshots
/// mean nothing was written in between.
#[cfg(feature = "redis")]
fn redis_state(url: &str) -> (Vec<(String, Vec<u8>, i64)>, u64) {
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    keys.sort();
    let state = keys
        .into_iter()
        .map(|key| {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query(&mut conn).unwrap();
            let at: i64 = redis::cmd("PEXPIRETIME")
                .arg(&key)
                .query(&mut conn)
                .unwrap();
            (key, dump, at)
        })
        .collect();
    let info: String = redis::cmd("INFO").arg("stats").query(&mut conn).unwrap();
    let commands = info
        .lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    (state, commands)
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn with_defer_refresh_gets_past_update_age_write_nothing_and_a_post_refreshes() {
    let Some(redis) = crate::redis_support::RedisServer::start() else {
        return;
    };
    let url = redis.url();
    let (store, _dir) = make_store(StoreKind::Sqlite).await;
    let (counting, counts) = CountingStore::new(store);
    let clock = ManualClock::new();
    let tier = tower_auth_session::secondary::RedisStorage::builder(&url)
        .clock(clock.clone())
        .build()
        .unwrap();
    let manager = refreshing(SessionManager::builder(counting), &clock)
        .secret(SECRET)
        .secondary_storage(tier)
        .defer_refresh(true)
        .build()
        .unwrap();
    let app = api(&manager);
    let reply = send(
        &app,
        json_post("/api/auth/sign-in?user=alice", None, &json!({})),
    )
    .await;
    let token = format!("{TOKEN}={}", reply.cookie_value(TOKEN).unwrap());
    clock.advance(Duration::minutes(2));
    let writes = || {
        counts.updates()
            + counts.create.load(Ordering::SeqCst)
            + counts.delete.load(Ordering::SeqCst)
    };
    let (before, commands_before) = redis_state(&url);
    let store_writes = writes();
    let head = Request::head("/api/auth/get-session")
        .header(header::COOKIE, &token)
        .body(Body::empty())
        .unwrap();
    for round in 0..10 {
        let reply = send(&app, get("/api/auth/get-session", Some(&token))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.json()["needsRefresh"], true, "round {round}");
        assert!(reply.set_cookie(TOKEN).is_none(), "no new expiry on a GET");
        clock.advance(Duration::minutes(1));
    }
    let reply = send(&app, head).await;
    assert!(
        reply.set_cookies().is_empty(),
        "HEAD: {:?}",
        reply.set_cookies()
    );
    let (after, commands_after) = redis_state(&url);
    println!(
        "11 safe requests past update_age: {} store writes, {} Redis commands (reads and the snapshot's own), Redis state unchanged: {}",
        writes() - store_writes,
        commands_after - commands_before,
        before == after
    );
    assert_eq!(writes(), store_writes, "no store write");
    assert_eq!(before, after, "no Redis write");
    // The first unsafe request makes the refresh.
    let reply = send(
        &app,
        json_post("/api/auth/update-session", Some(&token), &json!({})),
    )
    .await;
    assert!(reply.set_cookie(TOKEN).is_some(), "{}", reply.body);
    assert!(counts.updates() > 0);
    let reply = send(&app, get("/api/auth/get-session", Some(&token))).await;
    assert!(reply.json().get("needsRefresh").is_none(), "{}", reply.body);
}

#[tokio::test]
async fn no_refresh_keeps_one_request_read_only_whatever_its_method() {
    let (store, _dir) = make_store(StoreKind::Sqlite).await;
    let (counting, counts) = CountingStore::new(store);
    let clock = ManualClock::new();
    let manager = refreshing(SessionManager::builder(counting), &clock)
        .secret(SECRET)
        .build()
        .unwrap();
    let app = app(&manager);
    let token = sign_in(&app, &manager, "alice").await;
    clock.advance(Duration::minutes(2));
    let updates = counts.updates();
    let mut request = post("/me", Some(&token));
    *request.method_mut() = http::Method::GET;
    request
        .extensions_mut()
        .insert(tower_auth_session::NoRefresh);
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookies().is_empty());
    assert_eq!(counts.updates(), updates, "NoRefresh: nothing written");
    // Without it the same request refreshes.
    let reply = send(&app, get("/me", Some(&token))).await;
    assert!(reply.set_cookie(TOKEN).is_some());
    assert_eq!(counts.updates(), updates + 1);
}

/// The replica deployment: sessions written through the primary, every GET served by a
/// manager whose PostgreSQL role is read-only (`default_transaction_read_only`), past
/// `update_age` and past expiry, with `defer_refresh`.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_read_only_postgres_role_serves_every_get_with_defer_refresh() {
    let Some(url) = service_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test") else {
        return;
    };
    use tower_auth_session::store::PostgresStore;
    let schema = unique_name("tas_ro");
    let role = schema.clone();
    let primary_store = PostgresStore::builder()
        .schema(schema.clone())
        .unwrap()
        .connect(&url)
        .await
        .unwrap();
    let admin = primary_store.pool().clone();
    for statement in [
        format!("CREATE ROLE {role} LOGIN"),
        format!("ALTER ROLE {role} SET default_transaction_read_only = on"),
        format!("GRANT USAGE ON SCHEMA \"{schema}\" TO {role}"),
        format!("GRANT SELECT ON ALL TABLES IN SCHEMA \"{schema}\" TO {role}"),
    ] {
        sqlx::query(&statement).execute(&admin).await.unwrap();
    }
    let clock = ManualClock::new();
    let primary = refreshing(SessionManager::builder(primary_store), &clock)
        .secret(SECRET)
        .build()
        .unwrap();
    let read_only_url = url.replacen("postgres@", &format!("{role}@"), 1);
    let replica_store = PostgresStore::builder()
        .schema(schema.clone())
        .unwrap()
        .connect(&read_only_url)
        .await
        .expect("a read-only role opens the store");
    let (replica_store, replica_counts) = CountingStore::new(replica_store);
    let replica = refreshing(SessionManager::builder(replica_store), &clock)
        .secret(SECRET)
        .defer_refresh(true)
        .build()
        .unwrap();
    let writes_app = api(&primary);
    let reads_app = api(&replica);
    let reply = send(
        &writes_app,
        json_post("/api/auth/sign-in?user=alice", None, &json!({})),
    )
    .await;
    let token = format!("{TOKEN}={}", reply.cookie_value(TOKEN).unwrap());
    for minutes in [0, 2, 30] {
        clock.advance(Duration::minutes(minutes));
        let reply = send(&reads_app, get("/api/auth/get-session", Some(&token))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.json()["session"]["userId"], "alice", "{}", reply.body);
        let reply = send(&reads_app, get("/api/auth/list-sessions", Some(&token))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    // Past expiry: refused without the lazy delete a read-only role could not make.
    clock.advance(Duration::days(30));
    let reply = send(&reads_app, get("/api/auth/get-session", Some(&token))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), Value::Null, "{}", reply.body);
    assert_eq!(
        replica_counts.updates(),
        0,
        "no refresh tried on the replica"
    );
    assert_eq!(
        replica_counts.delete.load(Ordering::SeqCst),
        0,
        "no lazy delete tried"
    );
    drop(replica);
    sqlx::query(&format!("DROP OWNED BY {role}"))
        .execute(&admin)
        .await
        .ok();
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&admin)
        .await
        .ok();
}
