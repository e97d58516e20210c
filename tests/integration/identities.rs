//! Several identities per browser, through the real layer and its `Set-Cookie` headers:
//! impersonation (Better Auth's `admin.impersonateUser` / `stopImpersonating`) and several
//! accounts in one cookie jar (`multiSession`).

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::{Json, Router, routing};
use chrono::Duration;
use common::*;
use http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower_auth_session::{
    CurrentSession, Impersonation, ManualClock, MemoryStore, Session, SessionHandle,
    SessionManager, SessionManagerBuilder, SignInOptions,
};

/// A browser's cookie jar: what `Set-Cookie` said, sent back on every request.
#[derive(Debug, Default, Clone)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, reply: &Reply) {
        for cookie in reply.set_cookies() {
            let pair = cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if cookie.contains("Max-Age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn names_starting(&self, prefix: &str) -> Vec<String> {
        self.0
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }
}

const TOKEN: &str = "__Host-tas.session_token";
const KEPT: &str = "__Host-tas.admin_session";
const MULTI: &str = "__Host-tas.multi-";

fn api(manager: &SessionManager) -> Router {
    async fn sign_in(handle: SessionHandle, body: axum::body::Bytes) -> (StatusCode, String) {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let user = body["userId"].as_str().unwrap_or("alice").to_owned();
        let mut options = SignInOptions::new();
        if let Some(fields) = body.get("fields") {
            options = options.fields(fields).unwrap();
        }
        match handle.sign_in(user, options).await {
            Ok(session) => (StatusCode::OK, json!({ "session": session }).to_string()),
            Err(e) => (e.status(), e.to_string()),
        }
    }
    async fn me(CurrentSession(session): CurrentSession) -> Json<Value> {
        Json(json!({ "userId": session.user_id, "sessionId": session.id }))
    }
    Router::new()
        .nest(
            "/api/auth",
            manager.router().route("/sign-in", routing::post(sign_in)),
        )
        .route("/api/me", routing::get(me))
        .layer(manager.layer())
}

/// The demo's rule: admins are sessions with `role: admin`, and admins are not
/// impersonated (here: a user id starting with `admin`).
fn admins_only() -> Impersonation {
    Impersonation::new(|caller: Session, target: String| async move {
        caller.fields.get("role").and_then(Value::as_str) == Some("admin")
            && !target.starts_with("admin")
    })
}

fn builder(clock: &ManualClock) -> SessionManagerBuilder {
    SessionManager::builder(MemoryStore::new())
        .secret(SECRET)
        .clock(clock.clone())
}

async fn call(app: &Router, jar: &mut Jar, method: &str, uri: &str, body: Value) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::COOKIE, jar.header());
    if method == "POST" {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let reply = send(app, request.body(Body::from(body.to_string())).unwrap()).await;
    jar.take(&reply);
    reply
}

async fn sign_in(app: &Router, jar: &mut Jar, user: &str, fields: Value) -> Value {
    let body = json!({ "userId": user, "fields": fields });
    let reply = call(app, jar, "POST", "/api/auth/sign-in", body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.json()["session"].clone()
}

async fn me(app: &Router, jar: &mut Jar) -> Reply {
    call(app, jar, "GET", "/api/me", Value::Null).await
}

#[tokio::test]
async fn impersonation_shows_the_target_and_stop_returns_exactly_the_admins_session() {
    let clock = ManualClock::new();
    let manager = builder(&clock)
        .impersonation(admins_only())
        .build()
        .unwrap();
    let app = api(&manager);
    let mut admin = Jar::default();
    let own = sign_in(&app, &mut admin, "root", json!({ "role": "admin" })).await;
    let mut alice = Jar::default();
    sign_in(&app, &mut alice, "alice", json!({})).await;

    let body = json!({ "userId": "alice" });
    let reply = call(
        &app,
        &mut admin,
        "POST",
        "/api/auth/admin/impersonate-user",
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["session"]["impersonatedBy"], "root");
    assert_eq!(reply.json()["user"]["id"], "alice");
    assert!(
        admin.0.contains_key(KEPT),
        "the admin's session is kept aside"
    );
    let shown = call(
        &app,
        &mut admin,
        "GET",
        "/api/auth/get-session",
        Value::Null,
    )
    .await;
    assert_eq!(shown.json()["session"]["userId"], "alice");
    assert_eq!(shown.json()["session"]["impersonatedBy"], "root");
    let impersonation = admin.clone();

    // Alice never sees it; the admin API does.
    let listed = call(
        &app,
        &mut alice,
        "GET",
        "/api/auth/list-sessions",
        Value::Null,
    )
    .await;
    assert_eq!(
        listed.json().as_array().unwrap().len(),
        1,
        "{}",
        listed.body
    );
    let all = manager.list_user_sessions("alice").await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all.iter().any(|s| s.fields.contains_key("impersonatedBy")));

    // The kept-aside cookie is no credential under the session cookie's name.
    let mut forged = Jar::default();
    forged.0.insert(TOKEN.to_owned(), admin.0[KEPT].clone());
    assert_eq!(me(&app, &mut forged).await.status, StatusCode::UNAUTHORIZED);

    let stop = call(
        &app,
        &mut admin,
        "POST",
        "/api/auth/admin/stop-impersonating",
        Value::Null,
    )
    .await;
    assert_eq!(stop.status, StatusCode::OK, "{}", stop.body);
    assert_eq!(
        stop.json()["session"]["id"],
        own["id"],
        "the very same session"
    );
    assert!(!admin.0.contains_key(KEPT));
    let back = me(&app, &mut admin).await;
    assert_eq!(back.json()["userId"], "root");
    assert_eq!(back.json()["sessionId"], own["id"]);
    // The impersonation cookie replayed after stop: 401.
    let mut replay = impersonation;
    replay.0.remove(KEPT);
    assert_eq!(me(&app, &mut replay).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(manager.list_user_sessions("alice").await.unwrap().len(), 1);
    // Not an impersonation any more: 400.
    let again = call(
        &app,
        &mut admin,
        "POST",
        "/api/auth/admin/stop-impersonating",
        Value::Null,
    )
    .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_non_admin_or_an_admin_target_is_refused_and_nothing_is_written() {
    let clock = ManualClock::new();
    let manager = builder(&clock)
        .impersonation(admins_only())
        .build()
        .unwrap();
    let app = api(&manager);
    let mut mallory = Jar::default();
    sign_in(&app, &mut mallory, "mallory", json!({ "role": "member" })).await;
    let before = mallory.clone();
    let body = json!({ "userId": "alice" });
    let reply = call(
        &app,
        &mut mallory,
        "POST",
        "/api/auth/admin/impersonate-user",
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(reply.json()["code"], "FORBIDDEN");
    assert_eq!(mallory.0, before.0, "no cookie changed");
    assert!(
        manager
            .list_user_sessions("alice")
            .await
            .unwrap()
            .is_empty()
    );

    let mut admin = Jar::default();
    sign_in(&app, &mut admin, "root", json!({ "role": "admin" })).await;
    let body = json!({ "userId": "admin-2" });
    let reply = call(
        &app,
        &mut admin,
        "POST",
        "/api/auth/admin/impersonate-user",
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        manager
            .list_user_sessions("admin-2")
            .await
            .unwrap()
            .is_empty()
    );
    // Without a session: 401.
    let mut nobody = Jar::default();
    let body = json!({ "userId": "alice" });
    let reply = call(
        &app,
        &mut nobody,
        "POST",
        "/api/auth/admin/impersonate-user",
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // A client cannot forge the mark either.
    let body = json!({ "impersonatedBy": "root" });
    let reply = call(&app, &mut admin, "POST", "/api/auth/update-session", body).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_impersonation_ends_on_time_however_busy_the_client() {
    let clock = ManualClock::new();
    let manager = builder(&clock)
        .update_age(StdDuration::from_secs(3600))
        .impersonation(admins_only().expires_in(StdDuration::from_secs(3 * 86_400)))
        .build()
        .unwrap();
    let app = api(&manager);
    let mut admin = Jar::default();
    sign_in(&app, &mut admin, "root", json!({ "role": "admin" })).await;
    let body = json!({ "userId": "alice" });
    let started = call(
        &app,
        &mut admin,
        "POST",
        "/api/auth/admin/impersonate-user",
        body,
    )
    .await;
    let expires_at = started.json()["session"]["expiresAt"].clone();
    // Busy: a request every 6 hours (past update_age each time) for almost three days.
    for _ in 0..11 {
        clock.advance(Duration::hours(6));
        let reply = me(&app, &mut admin).await;
        assert_eq!(reply.status, StatusCode::OK);
        let shown = call(
            &app,
            &mut admin,
            "GET",
            "/api/auth/get-session",
            Value::Null,
        )
        .await;
        assert_eq!(
            shown.json()["session"]["expiresAt"],
            expires_at,
            "never slid"
        );
    }
    clock.advance(Duration::hours(6) + Duration::seconds(1));
    assert_eq!(me(&app, &mut admin).await.status, StatusCode::UNAUTHORIZED);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn the_targets_revoke_sessions_ends_the_impersonation_on_every_instance() {
    use tower_auth_session::CookieCache;
    use tower_auth_session::secondary::RedisStorage;
    let Some(url) = service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let prefix = format!("{}:", unique_name("tas_imp"));
    let store = MemoryStore::new();
    let build = || {
        let redis = RedisStorage::builder(&url)
            .key_prefix(&prefix)
            .build()
            .unwrap();
        SessionManager::builder(store.clone())
            .secret(SECRET)
            .secondary_storage(redis)
            .cookie_cache(CookieCache::new())
            .impersonation(admins_only())
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    for manager in [&a, &b] {
        assert!(manager.cookie_cache_ready(StdDuration::from_secs(5)).await);
    }
    let (app_a, app_b) = (api(&a), api(&b));
    let mut admin = Jar::default();
    sign_in(&app_a, &mut admin, "root", json!({ "role": "admin" })).await;
    let body = json!({ "userId": "alice" });
    let reply = call(
        &app_a,
        &mut admin,
        "POST",
        "/api/auth/admin/impersonate-user",
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // B serves the impersonation from its cookie cache.
    let warm = me(&app_b, &mut admin).await;
    assert_eq!(warm.json()["userId"], "alice");
    let cached = me(&app_b, &mut admin).await;
    assert!(cached.set_cookies().is_empty(), "a cache hit on B");

    let mut alice = Jar::default();
    sign_in(&app_a, &mut alice, "alice", json!({})).await;
    let reply = call(
        &app_a,
        &mut alice,
        "POST",
        "/api/auth/revoke-sessions",
        Value::Null,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        me(&app_b, &mut admin.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me(&app_a, &mut admin).await.status,
        StatusCode::UNAUTHORIZED
    );
}

fn multi(clock: &ManualClock, max: usize) -> (SessionManager, Router) {
    let manager = builder(clock).multi_session(max).build().unwrap();
    let app = api(&manager);
    (manager, app)
}

async fn device_sessions(app: &Router, jar: &mut Jar) -> Vec<Value> {
    let reply = call(
        app,
        jar,
        "GET",
        "/api/auth/multi-session/list-device-sessions",
        Value::Null,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.json().as_array().unwrap().clone()
}

#[tokio::test]
async fn two_accounts_in_one_jar_switch_without_a_new_session() {
    let clock = ManualClock::new();
    let (manager, app) = multi(&clock, 2);
    let mut jar = Jar::default();
    let work = sign_in(&app, &mut jar, "alice-work", json!({})).await;
    clock.advance(Duration::seconds(1));
    let private = sign_in(&app, &mut jar, "alice-private", json!({})).await;
    assert_eq!(jar.names_starting(MULTI).len(), 2, "{:?}", jar.0.keys());
    assert_eq!(me(&app, &mut jar).await.json()["userId"], "alice-private");
    let devices = device_sessions(&app, &mut jar).await;
    assert_eq!(devices.len(), 2);
    for device in &devices {
        assert_eq!(
            device["session"]["token"], device["session"]["id"],
            "a public id"
        );
        assert!(device["user"]["id"].is_string());
    }

    let body = json!({ "sessionToken": work["id"] });
    let reply = call(
        &app,
        &mut jar,
        "POST",
        "/api/auth/multi-session/set-active",
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["session"]["id"], work["id"]);
    let shown = me(&app, &mut jar).await.json();
    assert_eq!(shown["userId"], "alice-work");
    assert_eq!(
        shown["sessionId"], work["id"],
        "the same session, not a new one"
    );
    for user in ["alice-work", "alice-private"] {
        assert_eq!(manager.list_user_sessions(user).await.unwrap().len(), 1);
    }
    // An id that is not this browser's: 401.
    let body = json!({ "sessionToken": "someone-elses" });
    let reply = call(
        &app,
        &mut jar,
        "POST",
        "/api/auth/multi-session/set-active",
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // Revoking the active account falls back to the other.
    let body = json!({ "sessionToken": work["id"] });
    let reply = call(
        &app,
        &mut jar,
        "POST",
        "/api/auth/multi-session/revoke",
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let shown = me(&app, &mut jar).await.json();
    assert_eq!(shown["sessionId"], private["id"]);
    assert!(
        manager
            .list_user_sessions("alice-work")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_third_sign_in_past_two_signs_the_oldest_out() {
    let clock = ManualClock::new();
    let (manager, app) = multi(&clock, 2);
    let mut jar = Jar::default();
    sign_in(&app, &mut jar, "one", json!({})).await;
    let oldest = jar.clone();
    clock.advance(Duration::seconds(1));
    sign_in(&app, &mut jar, "two", json!({})).await;
    clock.advance(Duration::seconds(1));
    sign_in(&app, &mut jar, "three", json!({})).await;
    assert_eq!(
        me(&app, &mut oldest.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(manager.list_user_sessions("one").await.unwrap().is_empty());
    let users: Vec<Value> = device_sessions(&app, &mut jar)
        .await
        .into_iter()
        .map(|d| d["user"]["id"].clone())
        .collect();
    assert_eq!(users, vec![json!("two"), json!("three")]);
    assert_eq!(jar.names_starting(MULTI).len(), 2);
}

#[tokio::test]
async fn a_tampered_account_cookie_is_ignored_never_another_users_session() {
    let clock = ManualClock::new();
    let (_manager, app) = multi(&clock, 3);
    let mut jar = Jar::default();
    let alice = sign_in(&app, &mut jar, "alice", json!({})).await;
    let mut bob_jar = Jar::default();
    let bob = sign_in(&app, &mut bob_jar, "bob", json!({})).await;
    // Bob's account cookie renamed to pass for alice's, a flipped byte, garbage.
    let bob_name = bob_jar.names_starting(MULTI).pop().unwrap();
    let bob_value = bob_jar.0[&bob_name].clone();
    let mut tampered = jar.clone();
    tampered.0.insert(
        format!("{MULTI}{}", alice["id"].as_str().unwrap()),
        bob_value.clone(),
    );
    let mut flipped = bob_value.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    tampered
        .0
        .insert(bob_name.clone(), String::from_utf8(flipped).unwrap());
    tampered
        .0
        .insert(format!("{MULTI}x"), "not.a.token".to_owned());
    let devices = device_sessions(&app, &mut tampered).await;
    let ids: Vec<&Value> = devices.iter().map(|d| &d["session"]["id"]).collect();
    assert_eq!(ids, vec![&alice["id"]], "only alice's own account");
    let body = json!({ "sessionToken": bob["id"] });
    let reply = call(
        &app,
        &mut tampered,
        "POST",
        "/api/auth/multi-session/set-active",
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me(&app, &mut tampered).await.json()["userId"], "alice");
}

#[tokio::test]
async fn sign_out_clears_every_accounts_cookies_and_revokes_them_all() {
    let clock = ManualClock::new();
    let (manager, app) = multi(&clock, 3);
    let mut jar = Jar::default();
    for user in ["one", "two", "three"] {
        sign_in(&app, &mut jar, user, json!({})).await;
        clock.advance(Duration::seconds(1));
    }
    let before = jar.clone();
    let reply = call(&app, &mut jar, "POST", "/api/auth/sign-out", Value::Null).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(jar.0.is_empty(), "every cookie cleared: {:?}", jar.0);
    for user in ["one", "two", "three"] {
        assert!(
            manager.list_user_sessions(user).await.unwrap().is_empty(),
            "{user}"
        );
    }
    assert_eq!(
        me(&app, &mut before.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// A ban ends a running impersonation of the user, and a banned user can be neither
/// impersonated nor added as another account (both go through sign-in's create check).
#[tokio::test]
async fn a_ban_ends_an_impersonation_and_bars_new_ones_and_new_accounts() {
    use tower_auth_session::MemoryBanList;
    let clock = ManualClock::new();
    let manager = builder(&clock)
        .impersonation(admins_only())
        .multi_session(2)
        .bans(MemoryBanList::new())
        .build()
        .unwrap();
    let app = api(&manager);
    let mut admin = Jar::default();
    sign_in(&app, &mut admin, "root", json!({ "role": "admin" })).await;
    let body = json!({ "userId": "alice" });
    let reply = call(
        &app,
        &mut admin,
        "POST",
        "/api/auth/admin/impersonate-user",
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(me(&app, &mut admin).await.json()["userId"], "alice");

    manager.ban_user("alice", None).await.unwrap();
    assert_eq!(
        me(&app, &mut admin.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        manager
            .list_user_sessions("alice")
            .await
            .unwrap()
            .is_empty()
    );

    let mut admin = Jar::default();
    sign_in(&app, &mut admin, "root", json!({ "role": "admin" })).await;
    let body = json!({ "userId": "alice" });
    let reply = call(
        &app,
        &mut admin,
        "POST",
        "/api/auth/admin/impersonate-user",
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    let body = json!({ "userId": "alice", "fields": {} });
    let reply = call(&app, &mut admin, "POST", "/api/auth/sign-in", body).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert!(
        manager
            .list_user_sessions("alice")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(me(&app, &mut admin).await.json()["userId"], "root");
}
