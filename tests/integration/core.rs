//! Core behaviour: sign-in, cookies, bad input, sign-out, refresh, expiry, rotation.
//! Each test runs against MemoryStore and SqliteStore.

use crate::common;

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::Duration;
use common::*;
use http::{Request, StatusCode, header};
use tower_auth_session::{Key, KeyRing, ManualClock, SessionManager, SessionStore};

const WEEK: u64 = 7 * 24 * 3600;

async fn setup(
    kind: StoreKind,
    configure: impl FnOnce(
        tower_auth_session::SessionManagerBuilder,
    ) -> tower_auth_session::SessionManagerBuilder,
) -> (
    SessionManager,
    axum::Router,
    Counts,
    ManualClock,
    Option<tempfile::TempDir>,
) {
    let (store, dir) = make_store(kind).await;
    let (store, counts) = CountingStore::new(store);
    let clock = ManualClock::new();
    let builder = SessionManager::builder(store)
        .secret(SECRET)
        .clock(clock.clone());
    let manager = configure(builder).build().unwrap();
    let app = app(&manager);
    (manager, app, counts, clock, dir)
}

fn attr(set_cookie: &str, attribute: &str) -> bool {
    set_cookie.split("; ").any(|a| a == attribute)
}

async fn sign_in_sets_hardened_cookie_that_resolves_the_user(kind: StoreKind) {
    let (manager, app, _, _, _dir) = setup(kind, |b| b).await;
    assert_eq!(manager.session_cookie_name(), "__Host-tas.session_token");
    let reply = send(&app, post("/sign-in?user=alice", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let cookie = reply
        .set_cookie("__Host-tas.session_token")
        .expect("cookie set");
    for a in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
        "Secure",
        &format!("Max-Age={WEEK}"),
    ] {
        assert!(attr(&cookie, a), "{a} missing in {cookie}");
    }
    assert!(!cookie.contains("Domain"), "{cookie}");
    assert!(reply.set_cookie("__Host-tas.dont_remember").is_none());
    let pair = cookie.split(';').next().unwrap();
    let me = send(&app, get("/me", Some(pair))).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["userId"], "alice");
    assert_eq!(me.json()["sessionId"], reply.json()["session"]["id"]);
    // A plain request that resolved without refreshing writes no cookies.
    assert!(me.set_cookies().is_empty(), "{:?}", me.set_cookies());
}

async fn insecure_cookies_drop_the_host_prefix(kind: StoreKind) {
    let (manager, app, _, _, _dir) = setup(kind, |b| b.secure(false)).await;
    let reply = send(&app, post("/sign-in", None)).await;
    let cookie = reply.set_cookie("tas.session_token").unwrap();
    assert!(!attr(&cookie, "Secure"));
    assert_eq!(manager.session_cookie_name(), "tas.session_token");
}

async fn bad_cookies_are_no_session_cleared_and_never_5xx(kind: StoreKind) {
    let (manager, app, counts, _, _dir) = setup(kind, |b| b).await;
    let name = manager.session_cookie_name().to_owned();
    let good = sign_in(&app, &manager, "alice").await;
    let value = good[name.len() + 1..].to_owned();

    // Signed by a secret that is not in the ring.
    let other = SessionManager::builder(tower_auth_session::MemoryStore::new())
        .secret([7u8; 32])
        .build()
        .unwrap();
    let other_app = common::app(&other);
    let rekeyed = sign_in(&other_app, &other, "alice").await;

    let mut tampered = value.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "tampered",
            format!("{name}={}", String::from_utf8(tampered).unwrap()).into_bytes(),
            true,
        ),
        (
            "truncated",
            format!("{name}={}", &value[..value.len() - 5]).into_bytes(),
            true,
        ),
        ("re-keyed", rekeyed.clone().into_bytes(), true),
        ("duplicated", format!("{good}; {good}").into_bytes(), true),
        (
            "8 KiB",
            format!("{name}={}", "A".repeat(8192)).into_bytes(),
            true,
        ),
        (
            "non-UTF-8",
            [format!("{name}=").as_bytes(), b"\xff\xfe\xfd"].concat(),
            true,
        ),
        ("garbage", format!("{name}=...").into_bytes(), true),
    ];
    for (what, cookie_header, _) in cases {
        let before = counts.total();
        let request = Request::get("/me")
            .header(
                header::COOKIE,
                http::HeaderValue::from_bytes(&cookie_header).unwrap(),
            )
            .body(axum::body::Body::empty())
            .unwrap();
        let reply = send(&app, request).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(reply.clears(&name), "{what}: {:?}", reply.set_cookies());
        assert_eq!(
            counts.total(),
            before,
            "{what}: a refused cookie must not reach the store"
        );
    }
    // The good cookie still works afterwards.
    assert_eq!(
        send(&app, get("/me", Some(&good))).await.status,
        StatusCode::OK
    );
}

async fn sign_out_makes_the_old_cookie_useless(kind: StoreKind) {
    let (manager, app, _, _, _dir) = setup(kind, |b| b).await;
    let name = manager.session_cookie_name().to_owned();
    let cookie = sign_in(&app, &manager, "alice").await;
    let out = send(&app, post("/sign-out", Some(&cookie))).await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(out.clears(&name));
    assert!(out.clears("__Host-tas.dont_remember"));
    assert!(out.clears("__Host-tas.session_data"));
    let me = send(&app, get("/me", Some(&cookie))).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    assert!(me.clears(&name));
}

async fn sign_in_over_a_session_revokes_it(kind: StoreKind) {
    let (manager, app, _, _, _dir) = setup(kind, |b| b).await;
    let first = sign_in(&app, &manager, "alice").await;
    let reply = send(&app, post("/sign-in?user=bob", Some(&first))).await;
    let name = manager.session_cookie_name();
    let second = format!("{name}={}", reply.cookie_value(name).unwrap());
    assert_ne!(first, second, "sign-in must issue a new token");
    assert_eq!(
        send(&app, get("/me", Some(&first))).await.status,
        StatusCode::UNAUTHORIZED
    );
    let me = send(&app, get("/me", Some(&second))).await;
    assert_eq!(me.json()["userId"], "bob");
    assert!(
        manager
            .list_user_sessions("alice")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn refresh_writes_once_after_update_age(kind: StoreKind) {
    let (manager, app, counts, clock, _dir) = setup(kind, |b| b).await;
    let name = manager.session_cookie_name().to_owned();
    let cookie = sign_in(&app, &manager, "alice").await;

    clock.advance(Duration::hours(23));
    let reply = send(&app, get("/me", Some(&cookie))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(counts.updates(), 0, "no write before update_age");
    assert!(reply.set_cookie(&name).is_none());

    clock.advance(Duration::hours(2));
    let reply = send(&app, get("/me", Some(&cookie))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(counts.updates(), 1, "exactly one write after update_age");
    let set = reply.set_cookie(&name).expect("cookie re-set on refresh");
    assert!(attr(&set, &format!("Max-Age={WEEK}")), "{set}");

    // The next request does not write again.
    let reply = send(&app, get("/me", Some(&cookie))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(counts.updates(), 1);

    // The refreshed expiry is what lets it outlive the original 7 days.
    clock.advance(Duration::days(6) + Duration::hours(23));
    assert_eq!(
        send(&app, get("/me", Some(&cookie))).await.status,
        StatusCode::OK
    );
}

async fn fifty_concurrent_requests_at_the_boundary_write_once(kind: StoreKind) {
    let (manager, app, counts, clock, _dir) = setup(kind, |b| b).await;
    let name = manager.session_cookie_name().to_owned();
    let cookie = sign_in(&app, &manager, "alice").await;
    clock.advance(Duration::days(1) + Duration::seconds(1));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let app = app.clone();
        let cookie = cookie.clone();
        tasks.push(tokio::spawn(async move {
            send(&app, get("/me", Some(&cookie))).await
        }));
    }
    let mut re_set = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        if reply.set_cookie(&name).is_some() {
            re_set += 1;
        }
    }
    assert_eq!(
        counts.updates(),
        1,
        "50 concurrent requests caused one write"
    );
    assert!(re_set >= 1);
}

async fn max_lifetime_caps_the_refresh(kind: StoreKind) {
    let (manager, app, _, clock, _dir) = setup(kind, |b| {
        b.max_lifetime(StdDuration::from_secs(10 * 24 * 3600))
    })
    .await;
    let name = manager.session_cookie_name().to_owned();
    let cookie = sign_in(&app, &manager, "alice").await;
    // Keep it busy every 5 days: it slides, but never past day 10.
    clock.advance(Duration::days(5));
    let reply = send(&app, get("/me", Some(&cookie))).await;
    assert_eq!(reply.status, StatusCode::OK);
    let set = reply.set_cookie(&name).unwrap();
    assert!(
        attr(&set, &format!("Max-Age={}", 5 * 24 * 3600)),
        "capped at day 10: {set}"
    );
    clock.advance(Duration::days(4));
    assert_eq!(
        send(&app, get("/me", Some(&cookie))).await.status,
        StatusCode::OK
    );
    clock.advance(Duration::days(1));
    let reply = send(&app, get("/me", Some(&cookie))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.clears(&name));
}

async fn remember_me_off_gives_browser_session_cookie_that_never_slides(kind: StoreKind) {
    let (manager, app, counts, clock, _dir) = setup(kind, |b| b).await;
    let name = manager.session_cookie_name().to_owned();
    let reply = send(&app, post("/sign-in?user=alice&remember=false", None)).await;
    let set = reply.set_cookie(&name).unwrap();
    assert!(!set.contains("Max-Age"), "{set}");
    let marker = reply
        .set_cookie("__Host-tas.dont_remember")
        .expect("marker cookie");
    assert!(!marker.contains("Max-Age"), "{marker}");
    let cookie = format!("{name}={}", reply.cookie_value(&name).unwrap());
    clock.advance(Duration::hours(23));
    let reply = send(&app, get("/me", Some(&cookie))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookie(&name).is_none());
    assert_eq!(counts.updates(), 0, "never slides");
    clock.advance(Duration::hours(1));
    assert_eq!(
        send(&app, get("/me", Some(&cookie))).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn expired_session_is_401_cleared_and_deleted(kind: StoreKind) {
    let (store, _dir) = make_store(kind).await;
    let clock = ManualClock::new();
    let manager = SessionManager::builder(store.clone())
        .secret(SECRET)
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = common::app(&manager);
    let reply = send(&app, post("/sign-in?user=alice", None)).await;
    let name = manager.session_cookie_name();
    let cookie = format!("{name}={}", reply.cookie_value(name).unwrap());
    let token_hash = {
        // Prove the row exists before expiry.
        let sessions = store.list_by_user("alice", clock.now_utc()).await.unwrap();
        assert_eq!(sessions.len(), 1);
        sessions[0].id.clone()
    };
    clock.advance(Duration::days(7));
    let reply = send(&app, get("/me", Some(&cookie))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.clears(name));
    assert_eq!(reply.json()["error"], "unauthenticated");
    // The row is gone (not merely filtered out as expired).
    assert!(
        store
            .delete_by_id(&token_hash, None)
            .await
            .unwrap()
            .is_none()
    );
}

async fn key_rotation_keeps_old_cookies_until_the_key_is_dropped(kind: StoreKind) {
    let (store, _dir) = make_store(kind).await;
    let old = Key::new("old", [1u8; 32]).unwrap();
    let new = Key::new("new", [2u8; 32]).unwrap();
    let build = |keys: Vec<Key>| {
        SessionManager::builder(store.clone())
            .key_ring(KeyRing::new(keys).unwrap())
            .build()
            .unwrap()
    };
    let before = build(vec![old.clone()]);
    let old_cookie = sign_in(&common::app(&before), &before, "alice").await;

    let rotated = build(vec![new.clone(), old.clone()]);
    let app = common::app(&rotated);
    assert_eq!(
        send(&app, get("/me", Some(&old_cookie))).await.status,
        StatusCode::OK
    );
    let new_cookie = sign_in(&app, &rotated, "bob").await;
    let value = &new_cookie[rotated.session_cookie_name().len() + 1..];
    assert!(
        value.starts_with("new."),
        "new cookies use the first key: {value}"
    );

    let dropped = build(vec![new]);
    let app = common::app(&dropped);
    let reply = send(&app, get("/me", Some(&old_cookie))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.clears(dropped.session_cookie_name()));
    assert_eq!(
        send(&app, get("/me", Some(&new_cookie))).await.status,
        StatusCode::OK
    );
}

async fn bearer_token_wins_over_cookie(kind: StoreKind) {
    let (manager, app, _, _, _dir) = setup(kind, |b| b).await;
    let alice = sign_in(&app, &manager, "alice").await;
    let reply = send(&app, post("/sign-in?user=bob", None)).await;
    let bearer = reply.headers["set-auth-token"].to_str().unwrap().to_owned();
    assert!(
        reply.headers[header::ACCESS_CONTROL_EXPOSE_HEADERS]
            .to_str()
            .unwrap()
            .contains("set-auth-token")
    );
    let request = Request::get("/me")
        .header(header::COOKIE, &alice)
        .header(header::AUTHORIZATION, format!("Bearer {bearer}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let me = send(&app, request).await;
    assert_eq!(me.json()["userId"], "bob");
    // A bearer value that is not ours (another scheme's token) is ignored: the cookie
    // decides, and nothing is cleared.
    let request = Request::get("/me")
        .header(header::COOKIE, &alice)
        .header(header::AUTHORIZATION, "Bearer nope")
        .body(axum::body::Body::empty())
        .unwrap();
    let me = send(&app, request).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["userId"], "alice");
    assert!(me.set_cookies().is_empty());
}

async fn anonymous_requests_touch_no_store_and_set_no_cookie(kind: StoreKind) {
    let (_manager, app, counts, _, _dir) = setup(kind, |b| b).await;
    for _ in 0..100 {
        let reply = send(&app, get("/me", None)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert!(reply.set_cookies().is_empty());
        let reply = send(&app, post("/sign-out", None)).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(counts.total(), 0);
}

async fn app_fields_round_trip_typed_through_the_store(kind: StoreKind) {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Login {
        method: String,
        mfa: bool,
    }
    let (store, _dir) = make_store(kind).await;
    let manager = SessionManager::builder(store)
        .secret(SECRET)
        .build()
        .unwrap();
    async fn sign_in_with_fields(handle: tower_auth_session::SessionHandle) -> String {
        let options = tower_auth_session::SignInOptions::new()
            .fields(&serde_json::json!({"method": "passkey", "mfa": true}))
            .unwrap();
        handle.sign_in("alice", options).await.unwrap();
        String::new()
    }
    async fn read_fields(
        tower_auth_session::CurrentSession(session): tower_auth_session::CurrentSession,
    ) -> axum::Json<serde_json::Value> {
        let login: Login = session.fields_as().unwrap();
        assert_eq!(
            login,
            Login {
                method: "passkey".into(),
                mfa: true
            }
        );
        axum::Json(serde_json::to_value(&session).unwrap())
    }
    let app = axum::Router::new()
        .route("/sign-in", axum::routing::post(sign_in_with_fields))
        .route("/fields", axum::routing::get(read_fields))
        .layer(manager.layer());
    let reply = send(&app, post("/sign-in", None)).await;
    let name = manager.session_cookie_name();
    let cookie = format!("{name}={}", reply.cookie_value(name).unwrap());
    let reply = send(&app, get("/fields", Some(&cookie))).await;
    assert_eq!(reply.status, StatusCode::OK);
    // App fields are flattened into the session's JSON, beside the core fields.
    assert_eq!(reply.json()["method"], "passkey");
    assert_eq!(reply.json()["userId"], "alice");
}

store_suite!(
    sign_in_sets_hardened_cookie_that_resolves_the_user,
    insecure_cookies_drop_the_host_prefix,
    bad_cookies_are_no_session_cleared_and_never_5xx,
    sign_out_makes_the_old_cookie_useless,
    sign_in_over_a_session_revokes_it,
    refresh_writes_once_after_update_age,
    fifty_concurrent_requests_at_the_boundary_write_once,
    max_lifetime_caps_the_refresh,
    remember_me_off_gives_browser_session_cookie_that_never_slides,
    expired_session_is_401_cleared_and_deleted,
    key_rotation_keeps_old_cookies_until_the_key_is_dropped,
    bearer_token_wins_over_cookie,
    anonymous_requests_touch_no_store_and_set_no_cookie,
    app_fields_round_trip_typed_through_the_store,
);

trait NowUtc {
    fn now_utc(&self) -> chrono::DateTime<chrono::Utc>;
}
impl NowUtc for ManualClock {
    fn now_utc(&self) -> chrono::DateTime<chrono::Utc> {
        use tower_auth_session::Clock;
        self.now()
    }
}

#[allow(dead_code)]
fn _assert_store_is_object_safe(_: Arc<dyn SessionStore>) {}
