//! Session management: the endpoints of `SessionManager::router`, the per-request API on
//! `SessionHandle`, freshness, device tracking, the per-user cap, the cleanup task and
//! lifecycle events. Each test runs against MemoryStore and SqliteStore.
//!
//! Every response goes through `Harness::send`, which remembers every token the server
//! ever issued (from `Set-Cookie` and `set-auth-token`) and fails the test if any response
//! body, before or after, contains one.

use crate::common;
use crate::common::demo::SendOk;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use common::{Reply, SECRET, StoreKind, SwitchableStore};
use http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower_auth_session::store::SqliteStore;
use tower_auth_session::{
    CrossSiteGuard, CurrentSession, FreshSession, ManualClock, MemoryStore, RevokeReason,
    SessionError, SessionEvent, SessionHandle, SessionManager, SessionManagerBuilder, SessionStore,
    SignInOptions,
};

// ---------------------------------------------------------------------------------------
// The app under test

fn store_failure(error: SessionError) -> (StatusCode, Json<Value>) {
    match error {
        SessionError::NoSession => (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "unauthenticated" })),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "session_store_unavailable" })),
        ),
    }
}

/// Sign-in (`?user=`), `/me`, a fresh-only action, re-authentication, rotation, and the
/// management endpoints under `/api/auth`, all inside the session layer.
fn app(manager: &SessionManager) -> Router {
    async fn sign_in(
        _: CrossSiteGuard,
        handle: SessionHandle,
        axum::extract::Query(query): axum::extract::Query<BTreeMap<String, String>>,
    ) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
        let user = query.get("user").cloned().unwrap_or_else(|| "alice".into());
        let session = handle
            .sign_in(user, SignInOptions::new())
            .await
            .map_err(store_failure)?;
        Ok(Json(json!({ "session": session })))
    }
    async fn me(CurrentSession(session): CurrentSession) -> Json<Value> {
        Json(json!({ "userId": session.user_id, "sessionId": session.id }))
    }
    async fn sensitive(FreshSession(session): FreshSession) -> Json<Value> {
        Json(json!({ "done": true, "sessionId": session.id }))
    }
    async fn reauthenticate(
        handle: SessionHandle,
    ) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
        // A real app re-checks the password here.
        let session = handle.reauthenticate().await.map_err(store_failure)?;
        Ok(Json(json!({ "session": session })))
    }
    async fn rotate(handle: SessionHandle) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
        let session = handle.rotate().await.map_err(store_failure)?;
        Ok(Json(json!({ "session": session })))
    }
    Router::new()
        .route("/sign-in", post(sign_in))
        .route("/me", get(me))
        .route("/sensitive", post(sensitive))
        .route("/reauthenticate", post(reauthenticate))
        .route("/rotate", post(rotate))
        .nest("/api/auth", manager.router())
        .layer(manager.layer())
}

// ---------------------------------------------------------------------------------------
// A store that can be switched off, and row counts straight from the backend

/// Counts rows the way the backend sees them (expired ones included).
enum Rows {
    Memory(MemoryStore),
    Sqlite(SqliteStore),
}

impl Rows {
    async fn count(&self) -> usize {
        match self {
            Self::Memory(store) => store.len(),
            Self::Sqlite(store) => {
                let connection = rusqlite::Connection::open(store.path().unwrap()).unwrap();
                let n: i64 = connection
                    .query_row("SELECT COUNT(*) FROM tas_sessions", [], |row| row.get(0))
                    .unwrap();
                usize::try_from(n).unwrap()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Harness: one manager + app, and a scan of every response for tokens

struct Harness {
    manager: SessionManager,
    app: Router,
    clock: ManualClock,
    rows: Rows,
    down: Arc<AtomicBool>,
    /// Every token the server issued (signed values and their raw token part).
    issued: Mutex<Vec<String>>,
    /// Every response body seen, to re-scan when a token is learnt later.
    bodies: Mutex<Vec<String>>,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    async fn new(kind: StoreKind) -> Self {
        Self::with(kind, |b| b).await
    }

    async fn with(
        kind: StoreKind,
        configure: impl FnOnce(SessionManagerBuilder) -> SessionManagerBuilder,
    ) -> Self {
        let (inner, rows, dir): (Arc<dyn SessionStore>, Rows, _) = match kind {
            StoreKind::Memory => {
                let store = MemoryStore::new();
                (Arc::new(store.clone()), Rows::Memory(store), None)
            }
            StoreKind::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite:{}", dir.path().join("sessions.db").display());
                let store = SqliteStore::connect(&url).await.unwrap();
                (Arc::new(store.clone()), Rows::Sqlite(store), Some(dir))
            }
        };
        let down = Arc::new(AtomicBool::new(false));
        let store = SwitchableStore {
            inner,
            down: down.clone(),
        };
        let clock = ManualClock::new();
        let builder = SessionManager::builder(store)
            .secret(SECRET)
            .clock(clock.clone());
        let manager = configure(builder).build().unwrap();
        let app = app(&manager);
        Self {
            manager,
            app,
            clock,
            rows,
            down,
            issued: Mutex::new(Vec::new()),
            bodies: Mutex::new(Vec::new()),
            _dir: dir,
        }
    }

    fn cookie_name(&self) -> String {
        self.manager.session_cookie_name().to_owned()
    }

    fn learn_token(&self, signed: &str) {
        if signed.is_empty() {
            return;
        }
        let mut issued = self.issued.lock().unwrap();
        issued.push(signed.to_owned());
        if let Some(raw) = signed.split('.').nth(1) {
            issued.push(raw.to_owned());
        }
        for body in self.bodies.lock().unwrap().iter() {
            for secret in issued.iter() {
                assert!(!body.contains(secret.as_str()), "token in a body: {body}");
            }
        }
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let is_auth_endpoint = request.uri().path().starts_with("/api/auth/");
        let reply = common::send(&self.app, request).await;
        let name = self.cookie_name();
        if let Some(value) = reply.cookie_value(&name) {
            self.learn_token(&value);
        }
        if let Some(value) = reply.headers.get("set-auth-token") {
            self.learn_token(value.to_str().unwrap());
        }
        for secret in self.issued.lock().unwrap().iter() {
            assert!(
                !reply.body.contains(secret.as_str()),
                "token in a body: {}",
                reply.body
            );
        }
        self.bodies.lock().unwrap().push(reply.body.clone());
        if is_auth_endpoint {
            assert_eq!(
                reply
                    .headers
                    .get(header::CACHE_CONTROL)
                    .map(|v| v.to_str().unwrap()),
                Some("no-store"),
                "every /api/auth response is no-store ({})",
                reply.status
            );
        }
        assert!(
            !reply.status.is_server_error() || reply.status == StatusCode::SERVICE_UNAVAILABLE,
            "{}: {}",
            reply.status,
            reply.body
        );
        reply
    }

    /// A request from `device`, with its cookies, user agent and socket peer.
    async fn call(&self, device: &mut Device, method: &str, uri: &str) -> Reply {
        self.call_with(device, method, uri, &[], "").await
    }

    async fn call_with(
        &self,
        device: &mut Device,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::USER_AGENT, &device.user_agent)
            .extension(ConnectInfo(device.peer));
        if !device.cookies.is_empty() {
            builder = builder.header(header::COOKIE, device.cookie_header());
        }
        if let Some(chain) = &device.forwarded_for {
            builder = builder.header("x-forwarded-for", chain);
        }
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let reply = self
            .send(builder.body(Body::from(body.to_owned())).unwrap())
            .await;
        device.absorb(&reply);
        reply
    }

    /// Signs `device` in as `user`; returns the new session's id.
    async fn sign_in(&self, device: &mut Device, user: &str) -> String {
        let reply = self
            .call(device, "POST", &format!("/sign-in?user={user}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert!(device.cookies.contains_key(&self.cookie_name()));
        reply.json()["session"]["id"].as_str().unwrap().to_owned()
    }

    async fn status(&self, device: &mut Device, method: &str, uri: &str) -> StatusCode {
        self.call(device, method, uri).await.status
    }
}

/// One browser: a cookie jar that follows `Set-Cookie`, a user agent and a socket peer.
#[derive(Clone)]
struct Device {
    cookies: BTreeMap<String, String>,
    user_agent: String,
    peer: SocketAddr,
    forwarded_for: Option<String>,
}

impl Device {
    fn new(user_agent: &str, ip: &str) -> Self {
        Self {
            cookies: BTreeMap::new(),
            user_agent: user_agent.to_owned(),
            peer: SocketAddr::new(ip.parse().unwrap(), 40_000),
            forwarded_for: None,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn absorb(&mut self, reply: &Reply) {
        for set_cookie in reply.set_cookies() {
            let pair = set_cookie.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if set_cookie.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

fn entry<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {list}"))
}

/// Drains the events received so far.
fn drain(events: &mut tokio::sync::broadcast::Receiver<SessionEvent>) -> Vec<SessionEvent> {
    let mut out = Vec::new();
    while let Ok(event) = events.try_recv() {
        out.push(event);
    }
    out
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Safari/604.1";

// ---------------------------------------------------------------------------------------
// Endpoints

async fn two_devices_list_each_other_with_current_flag_ip_and_user_agent(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let mut laptop = Device::new(FIREFOX, "192.0.2.10");
    let mut phone = Device::new(IPHONE, "198.51.100.20");
    let mut bob = Device::new("curl/8", "203.0.113.5");
    let laptop_id = h.sign_in(&mut laptop, "alice").await;
    h.clock.advance(Duration::minutes(1));
    let phone_id = h.sign_in(&mut phone, "alice").await;
    h.sign_in(&mut bob, "bob").await;

    let list = h.call(&mut laptop, "GET", "/api/auth/list-sessions").await;
    assert_eq!(list.status, StatusCode::OK);
    let list = list.json();
    assert_eq!(ids(&list), [laptop_id.clone(), phone_id.clone()], "{list}");
    let mine = entry(&list, &laptop_id);
    assert_eq!(mine["current"], true);
    assert_eq!(mine["ipAddress"], "192.0.2.10");
    assert_eq!(mine["userAgent"], FIREFOX);
    assert_eq!(mine["userId"], "alice");
    for field in [
        "id",
        "userId",
        "expiresAt",
        "createdAt",
        "updatedAt",
        "authenticatedAt",
        "lastSeenAt",
        "ipAddress",
        "userAgent",
    ] {
        assert!(mine.get(field).is_some(), "{field} missing in {mine}");
    }
    let other = entry(&list, &phone_id);
    assert_eq!(other["current"], false);
    assert_eq!(other["ipAddress"], "198.51.100.20");
    assert_eq!(other["userAgent"], IPHONE);

    // The phone sees the same two, with the flag the other way round.
    let list = h
        .call(&mut phone, "GET", "/api/auth/list-sessions")
        .await
        .json();
    assert_eq!(entry(&list, &phone_id)["current"], true);
    assert_eq!(entry(&list, &laptop_id)["current"], false);

    // get-session: the session, or null.
    let got = h.call(&mut laptop, "GET", "/api/auth/get-session").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["session"]["id"], laptop_id.as_str());
    let mut stranger = Device::new(FIREFOX, "192.0.2.99");
    let got = h.call(&mut stranger, "GET", "/api/auth/get-session").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, "null");
    let listed = h
        .call(&mut stranger, "GET", "/api/auth/list-sessions")
        .await;
    assert_eq!(listed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(listed.json()["error"], "unauthenticated");
}

async fn revoke_other_sessions_signs_out_the_other_device_only(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let name = h.cookie_name();
    let mut laptop = Device::new(FIREFOX, "192.0.2.10");
    let mut phone = Device::new(IPHONE, "198.51.100.20");
    let mut bob = Device::new("curl/8", "203.0.113.5");
    h.sign_in(&mut laptop, "alice").await;
    h.sign_in(&mut phone, "alice").await;
    h.sign_in(&mut bob, "bob").await;

    let reply = h
        .call(&mut laptop, "POST", "/api/auth/revoke-other-sessions")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "status": true }));
    assert!(
        reply.set_cookies().is_empty(),
        "the caller keeps its cookies"
    );

    let me = h.call(&mut phone, "GET", "/me").await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    assert!(me.clears(&name), "the revoked device's cookies are cleared");
    assert!(!phone.cookies.contains_key(&name));
    assert_eq!(h.status(&mut laptop, "GET", "/me").await, StatusCode::OK);
    assert_eq!(h.status(&mut bob, "GET", "/me").await, StatusCode::OK);
    let list = h
        .call(&mut laptop, "GET", "/api/auth/list-sessions")
        .await
        .json();
    assert_eq!(list.as_array().unwrap().len(), 1);

    let mut stranger = Device::new(FIREFOX, "192.0.2.99");
    for uri in [
        "/api/auth/revoke-other-sessions",
        "/api/auth/revoke-sessions",
    ] {
        assert_eq!(
            h.status(&mut stranger, "POST", uri).await,
            StatusCode::UNAUTHORIZED
        );
    }
    let reply = h
        .call_with(
            &mut stranger,
            "POST",
            "/api/auth/revoke-session",
            &[],
            r#"{"id":"x"}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

async fn revoke_session_touches_only_the_callers_own_sessions(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let name = h.cookie_name();
    let mut laptop = Device::new(FIREFOX, "192.0.2.10");
    let mut phone = Device::new(IPHONE, "198.51.100.20");
    let mut bob = Device::new("curl/8", "203.0.113.5");
    let laptop_id = h.sign_in(&mut laptop, "alice").await;
    let phone_id = h.sign_in(&mut phone, "alice").await;
    let bob_id = h.sign_in(&mut bob, "bob").await;

    // Another user's session: nothing happens, and the answer is the same as success.
    let body = json!({ "id": bob_id }).to_string();
    let reply = h
        .call_with(&mut laptop, "POST", "/api/auth/revoke-session", &[], &body)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "status": true }));
    assert_eq!(h.status(&mut bob, "GET", "/me").await, StatusCode::OK);
    // An id that does not exist: same answer.
    let reply = h
        .call_with(
            &mut laptop,
            "POST",
            "/api/auth/revoke-session",
            &[],
            r#"{"id":"no-such-session"}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "status": true }));

    // One of the caller's own: gone.
    let body = json!({ "id": phone_id }).to_string();
    let reply = h
        .call_with(
            &mut laptop,
            "POST",
            "/api/auth/revoke-session",
            &[("content-type", "application/json")],
            &body,
        )
        .await;
    assert_eq!(reply.json(), json!({ "status": true }));
    assert_eq!(
        h.status(&mut phone, "GET", "/me").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.status(&mut laptop, "GET", "/me").await, StatusCode::OK);

    // A body without an id is a 400, not a 5xx.
    for bad in ["", "{}", "not json", r#"{"id": 5}"#] {
        let reply = h
            .call_with(&mut laptop, "POST", "/api/auth/revoke-session", &[], bad)
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(reply.json()["error"], "invalid_body");
    }

    // Its own current id: revoked, and this device's cookies are cleared.
    let body = json!({ "id": laptop_id }).to_string();
    let reply = h
        .call_with(&mut laptop, "POST", "/api/auth/revoke-session", &[], &body)
        .await;
    assert_eq!(reply.json(), json!({ "status": true }));
    assert!(reply.clears(&name));
    assert!(laptop.cookies.is_empty());
}

async fn revoke_sessions_signs_out_every_device_including_the_caller(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let name = h.cookie_name();
    let mut laptop = Device::new(FIREFOX, "192.0.2.10");
    let mut phone = Device::new(IPHONE, "198.51.100.20");
    let mut bob = Device::new("curl/8", "203.0.113.5");
    h.sign_in(&mut laptop, "alice").await;
    h.sign_in(&mut phone, "alice").await;
    h.sign_in(&mut bob, "bob").await;
    let old_laptop = laptop.clone();

    let reply = h
        .call(&mut laptop, "POST", "/api/auth/revoke-sessions")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "status": true }));
    for cookie in [
        name.as_str(),
        "__Host-tas.session_data",
        "__Host-tas.dont_remember",
    ] {
        assert!(reply.clears(cookie), "{cookie}: {:?}", reply.set_cookies());
    }
    assert!(laptop.cookies.is_empty(), "the caller's jar is empty");
    // Even a copy of the old cookie is dead, and so is the other device.
    assert_eq!(
        h.status(&mut old_laptop.clone(), "GET", "/me").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.status(&mut phone, "GET", "/me").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.status(&mut bob, "GET", "/me").await, StatusCode::OK);
    assert!(
        h.manager
            .list_user_sessions("alice")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn sign_out_endpoint_revokes_the_session_and_clears_cookies(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let name = h.cookie_name();
    let mut laptop = Device::new(FIREFOX, "192.0.2.10");
    let mut phone = Device::new(IPHONE, "198.51.100.20");
    h.sign_in(&mut laptop, "alice").await;
    h.sign_in(&mut phone, "alice").await;
    let old_laptop = laptop.clone();

    let reply = h.call(&mut laptop, "POST", "/api/auth/sign-out").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "success": true }));
    assert!(reply.clears(&name));
    assert_eq!(
        h.status(&mut old_laptop.clone(), "GET", "/me").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.status(&mut phone, "GET", "/me").await, StatusCode::OK);
    // Without a session it still answers success.
    let reply = h.call(&mut laptop, "POST", "/api/auth/sign-out").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), json!({ "success": true }));
}

async fn bad_input_on_the_endpoints_is_never_a_server_error(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let name = h.cookie_name();
    let mut laptop = Device::new(FIREFOX, "192.0.2.10");
    h.sign_in(&mut laptop, "alice").await;
    let mut forged = laptop.clone();
    forged
        .cookies
        .insert(name.clone(), "k0.forged.value".into());
    let reply = h.call(&mut forged, "GET", "/api/auth/list-sessions").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.clears(&name));
    let reply = h.call(&mut forged, "GET", "/api/auth/get-session").await;
    assert_eq!(reply.body, "null");
    // Wrong methods and a huge body.
    let reply = h
        .call(&mut laptop, "GET", "/api/auth/revoke-sessions")
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let huge = format!(r#"{{"id":"{}"}}"#, "a".repeat(100_000));
    let reply = h
        .call_with(&mut laptop, "POST", "/api/auth/revoke-session", &[], &huge)
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.status(&mut laptop, "GET", "/me").await, StatusCode::OK);
}

async fn store_outage_is_503_and_signs_nobody_out(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let mut laptop = Device::new(FIREFOX, "192.0.2.10");
    h.sign_in(&mut laptop, "alice").await;
    let jar_before = laptop.cookies.clone();
    h.down.store(true, Ordering::SeqCst);
    for (method, uri) in [
        ("GET", "/api/auth/get-session"),
        ("GET", "/api/auth/list-sessions"),
        ("POST", "/api/auth/revoke-other-sessions"),
        ("POST", "/api/auth/revoke-sessions"),
        ("POST", "/sensitive"),
        ("POST", "/rotate"),
    ] {
        let reply = h.call(&mut laptop, method, uri).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(
            reply.set_cookies().is_empty(),
            "{uri}: {:?}",
            reply.set_cookies()
        );
    }
    assert_eq!(laptop.cookies, jar_before);
    h.down.store(false, Ordering::SeqCst);
    assert_eq!(h.status(&mut laptop, "GET", "/me").await, StatusCode::OK);

    // Sign-out always ends the session in the browser that asked (issue 9): during an
    // outage it clears the cookies and says the server side is pending…
    let mut thief = laptop.clone();
    h.down.store(true, Ordering::SeqCst);
    let reply = h.call(&mut laptop, "POST", "/api/auth/sign-out").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.json()["pending"], true, "{}", reply.body);
    assert!(laptop.cookies.is_empty(), "{:?}", laptop.cookies);
    assert_eq!(h.manager.pending_revocations(), 1);
    // …and the server finishes the revoke by itself once the store is back.
    h.down.store(false, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h.manager.pending_revocations() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the owed revoke never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        h.status(&mut thief, "GET", "/me").await,
        StatusCode::UNAUTHORIZED
    );
}

// ---------------------------------------------------------------------------------------
// Cross-site guard

async fn cross_site_posts_are_refused_and_revoke_nothing(kind: StoreKind) {
    let h = Harness::with(kind, |b| b.trusted_origins(["https://app.example"])).await;
    let mut laptop = Device::new(FIREFOX, "192.0.2.10");
    let mut phone = Device::new(IPHONE, "198.51.100.20");
    h.sign_in(&mut laptop, "alice").await;
    let phone_id = h.sign_in(&mut phone, "alice").await;
    let revoke_phone = json!({ "id": phone_id }).to_string();

    let hostile: [&[(&str, &str)]; 4] = [
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[("sec-fetch-site", "cross-site")],
        &[("origin", "https://app.example.evil.example")],
    ];
    for headers in hostile {
        for (uri, body) in [
            ("/api/auth/revoke-other-sessions", ""),
            ("/api/auth/revoke-sessions", ""),
            ("/api/auth/revoke-session", revoke_phone.as_str()),
            ("/api/auth/sign-out", ""),
            ("/sign-in?user=mallory", ""),
        ] {
            let reply = h.call_with(&mut laptop, "POST", uri, headers, body).await;
            assert_eq!(reply.status, StatusCode::FORBIDDEN, "{uri} {headers:?}");
            assert_eq!(reply.json()["error"], "cross_site_request");
            assert!(reply.set_cookies().is_empty());
        }
    }
    // Nothing was revoked, nobody was signed in.
    assert_eq!(h.status(&mut laptop, "GET", "/me").await, StatusCode::OK);
    assert_eq!(h.status(&mut phone, "GET", "/me").await, StatusCode::OK);
    assert_eq!(
        h.manager.list_user_sessions("alice").await.unwrap().len(),
        2
    );
    assert!(
        h.manager
            .list_user_sessions("mallory")
            .await
            .unwrap()
            .is_empty()
    );
    // GETs are not guarded (they change nothing).
    let reply = h
        .call_with(
            &mut laptop,
            "GET",
            "/api/auth/list-sessions",
            &[("origin", "https://evil.example")],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    // The trusted origin (in any case, with the default port spelled out) works.
    let reply = h
        .call_with(
            &mut laptop,
            "POST",
            "/api/auth/revoke-session",
            &[
                ("origin", "HTTPS://App.Example:443"),
                ("sec-fetch-site", "same-site"),
            ],
            &revoke_phone,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        h.status(&mut phone, "GET", "/me").await,
        StatusCode::UNAUTHORIZED
    );
    // No Origin at all (a non-browser client) works.
    h.sign_in(&mut phone, "alice").await;
    let reply = h
        .call(&mut laptop, "POST", "/api/auth/revoke-other-sessions")
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        h.status(&mut phone, "GET", "/me").await,
        StatusCode::UNAUTHORIZED
    );
}

async fn bearer_requests_pass_the_cross_site_guard(kind: StoreKind) {
    let h = Harness::with(kind, |b| b.trusted_origins(["https://app.example"])).await;
    let mut laptop = Device::new(FIREFOX, "192.0.2.10");
    let mut phone = Device::new(IPHONE, "198.51.100.20");
    h.sign_in(&mut phone, "alice").await;
    let reply = h.call(&mut laptop, "POST", "/sign-in?user=alice").await;
    let bearer = reply.headers["set-auth-token"].to_str().unwrap().to_owned();
    let mut script = Device::new("script/1", "192.0.2.50");
    let reply = h
        .call_with(
            &mut script,
            "POST",
            "/api/auth/revoke-other-sessions",
            &[
                ("authorization", &format!("Bearer {bearer}")),
                ("origin", "https://evil.example"),
            ],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        h.status(&mut phone, "GET", "/me").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.status(&mut laptop, "GET", "/me").await, StatusCode::OK);
}

async fn without_trusted_origins_only_same_origin_posts_pass(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let mut laptop = Device::new(FIREFOX, "192.0.2.10");
    h.sign_in(&mut laptop, "alice").await;
    let reply = h
        .call_with(
            &mut laptop,
            "POST",
            "/api/auth/revoke-other-sessions",
            &[
                ("host", "auth.example:8443"),
                ("origin", "https://evil.example:8443"),
            ],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = h
        .call_with(
            &mut laptop,
            "POST",
            "/api/auth/revoke-other-sessions",
            &[
                ("host", "auth.example:8443"),
                ("origin", "https://auth.example:8443"),
            ],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// Device tracking

async fn forwarded_for_is_ignored_without_trusted_proxies(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let mut device = Device::new(FIREFOX, "10.0.0.1");
    device.forwarded_for = Some("203.0.113.9".into());
    let reply = h.call(&mut device, "POST", "/sign-in?user=alice").await;
    assert_eq!(reply.json()["session"]["ipAddress"], "10.0.0.1");
    let list = h
        .call(&mut device, "GET", "/api/auth/list-sessions")
        .await
        .json();
    assert_eq!(list[0]["ipAddress"], "10.0.0.1");
}

async fn forwarded_for_is_honoured_through_trusted_proxies(kind: StoreKind) {
    let h = Harness::with(kind, |b| b.trusted_proxies(["10.0.0.0/8".parse().unwrap()])).await;
    // Right to left past the trusted hops: the first untrusted address is the client.
    let mut behind_proxy = Device::new(FIREFOX, "10.0.0.1");
    behind_proxy.forwarded_for = Some("198.51.100.7, 203.0.113.9, 10.1.1.1".into());
    let reply = h
        .call(&mut behind_proxy, "POST", "/sign-in?user=alice")
        .await;
    assert_eq!(reply.json()["session"]["ipAddress"], "203.0.113.9");
    // An IPv4-mapped proxy address is the same proxy.
    let mut mapped = Device::new(FIREFOX, "::ffff:10.0.0.2");
    mapped.forwarded_for = Some("203.0.113.10".into());
    let reply = h.call(&mut mapped, "POST", "/sign-in?user=alice").await;
    assert_eq!(reply.json()["session"]["ipAddress"], "203.0.113.10");
    // A peer that is not a trusted proxy cannot choose its address.
    let mut direct = Device::new(FIREFOX, "192.0.2.77");
    direct.forwarded_for = Some("203.0.113.11".into());
    let reply = h.call(&mut direct, "POST", "/sign-in?user=alice").await;
    assert_eq!(reply.json()["session"]["ipAddress"], "192.0.2.77");
    // An IPv4-mapped client is stored as IPv4.
    let mut v6 = Device::new(FIREFOX, "::ffff:192.0.2.78");
    let reply = h.call(&mut v6, "POST", "/sign-in?user=alice").await;
    assert_eq!(reply.json()["session"]["ipAddress"], "192.0.2.78");
}

async fn client_tracking_can_be_turned_off(kind: StoreKind) {
    let h = Harness::with(kind, |b| b.track_client(false)).await;
    let mut device = Device::new(FIREFOX, "192.0.2.10");
    let reply = h.call(&mut device, "POST", "/sign-in?user=alice").await;
    assert_eq!(reply.json()["session"]["ipAddress"], Value::Null);
    assert_eq!(reply.json()["session"]["userAgent"], Value::Null);
}

async fn last_seen_ip_and_user_agent_move_at_most_once_per_update_age(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let mut device = Device::new(FIREFOX, "192.0.2.10");
    let id = h.sign_in(&mut device, "alice").await;
    let signed_in_at = h.manager.list_user_sessions("alice").await.unwrap()[0].last_seen_at;

    // The laptop moves to another network and updates its browser.
    device.peer = "198.51.100.44:5000".parse().unwrap();
    device.user_agent = "Firefox/129".into();
    h.clock.advance(Duration::hours(23));
    let list = h
        .call(&mut device, "GET", "/api/auth/list-sessions")
        .await
        .json();
    let listed = entry(&list, &id);
    assert_eq!(
        listed["ipAddress"], "192.0.2.10",
        "no write before update_age"
    );
    assert_eq!(listed["userAgent"], FIREFOX);

    h.clock.advance(Duration::hours(2));
    let list = h
        .call(&mut device, "GET", "/api/auth/list-sessions")
        .await
        .json();
    let listed = entry(&list, &id);
    assert_eq!(listed["ipAddress"], "198.51.100.44");
    assert_eq!(listed["userAgent"], "Firefox/129");
    let session = &h.manager.list_user_sessions("alice").await.unwrap()[0];
    assert_eq!(session.last_seen_at, signed_in_at + Duration::hours(25));
}

async fn connect_info_peer_and_two_cookie_jars_over_real_http(kind: StoreKind) {
    let h = Harness::with(kind, |b| b.secure(false)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let service = h
        .app
        .clone()
        .into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, service).await });
    let client = |agent: &str| {
        reqwest::Client::builder()
            .cookie_store(true)
            .user_agent(agent)
            .build()
            .unwrap()
    };
    let laptop = client(FIREFOX);
    let phone = client(IPHONE);
    for device in [&laptop, &phone] {
        let reply = device
            .post(format!("{base}/sign-in?user=alice"))
            .send_ok()
            .await;
        assert_eq!(reply.status(), StatusCode::OK);
    }
    let reply = laptop
        .get(format!("{base}/api/auth/list-sessions"))
        .send_ok()
        .await;
    assert_eq!(reply.headers()[header::CACHE_CONTROL], "no-store");
    let list: Value = reply.json().await.unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    let current: Vec<_> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["userAgent"], FIREFOX);
    for session in list {
        assert_eq!(session["ipAddress"], "127.0.0.1", "the socket peer");
    }
    let reply = laptop
        .post(format!("{base}/api/auth/revoke-other-sessions"))
        .send_ok()
        .await;
    assert_eq!(reply.status(), StatusCode::OK);
    let me = phone.get(format!("{base}/me")).send_ok().await;
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);
    let me = laptop.get(format!("{base}/me")).send_ok().await;
    assert_eq!(me.status(), StatusCode::OK);
    server.abort();
}

// ---------------------------------------------------------------------------------------
// Freshness, re-authentication, rotation

async fn fresh_after_sign_in_stale_after_fresh_age_fresh_again_after_reauthenticate(
    kind: StoreKind,
) {
    let h = Harness::with(kind, |b| {
        b.fresh_age(StdDuration::from_secs(3600))
            .update_age(StdDuration::from_secs(600))
    })
    .await;
    let mut device = Device::new(FIREFOX, "192.0.2.10");
    assert_eq!(
        h.status(&mut device, "POST", "/sensitive").await,
        StatusCode::UNAUTHORIZED
    );
    h.sign_in(&mut device, "alice").await;
    assert_eq!(
        h.status(&mut device, "POST", "/sensitive").await,
        StatusCode::OK
    );

    h.clock.advance(Duration::minutes(61));
    // Activity keeps the session alive (this request slides it), but not fresh.
    let me = h.call(&mut device, "GET", "/me").await;
    assert_eq!(me.status, StatusCode::OK);
    assert!(me.set_cookie(&h.cookie_name()).is_some(), "refreshed");
    let reply = h.call(&mut device, "POST", "/sensitive").await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json()["error"], "session_not_fresh");
    assert_eq!(reply.json()["code"], "SESSION_NOT_FRESH");

    let reply = h.call(&mut device, "POST", "/reauthenticate").await;
    assert_eq!(reply.status, StatusCode::OK);
    let authenticated_at: DateTime<Utc> = reply.json()["session"]["authenticatedAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(authenticated_at, tower_auth_session::Clock::now(&h.clock));
    assert_eq!(
        h.status(&mut device, "POST", "/sensitive").await,
        StatusCode::OK
    );
    h.clock.advance(Duration::minutes(59));
    assert_eq!(
        h.status(&mut device, "POST", "/sensitive").await,
        StatusCode::OK
    );
    h.clock.advance(Duration::minutes(1));
    assert_eq!(
        h.status(&mut device, "POST", "/sensitive").await,
        StatusCode::FORBIDDEN
    );
}

async fn fresh_session_reads_the_store_not_the_request_copy(kind: StoreKind) {
    // Revoked by an admin while the request is in flight is simulated by revoking
    // between two requests: FreshSession must see the store, not a stale copy.
    let h = Harness::new(kind).await;
    let mut device = Device::new(FIREFOX, "192.0.2.10");
    let id = h.sign_in(&mut device, "alice").await;
    assert_eq!(
        h.status(&mut device, "POST", "/sensitive").await,
        StatusCode::OK
    );
    assert!(h.manager.revoke(&id).await.unwrap());
    assert_eq!(
        h.status(&mut device, "POST", "/sensitive").await,
        StatusCode::UNAUTHORIZED
    );
}

async fn rotate_changes_the_cookie_and_the_old_token_gets_401(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let name = h.cookie_name();
    let mut device = Device::new(FIREFOX, "192.0.2.10");
    let id = h.sign_in(&mut device, "alice").await;
    let before = device.clone();

    let reply = h.call(&mut device, "POST", "/rotate").await;
    assert_eq!(reply.status, StatusCode::OK);
    let new_value = reply.cookie_value(&name).expect("cookie re-set");
    assert_ne!(Some(&new_value), before.cookies.get(&name));
    assert_eq!(reply.json()["session"]["id"], id.as_str(), "same session");
    assert!(reply.headers.contains_key("set-auth-token"));

    let old = h.call(&mut before.clone(), "GET", "/me").await;
    assert_eq!(old.status, StatusCode::UNAUTHORIZED);
    let me = h.call(&mut device, "GET", "/me").await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json()["sessionId"], id.as_str());
    let sessions = h.manager.list_user_sessions("alice").await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id, id);
}

// ---------------------------------------------------------------------------------------
// Limits and upkeep

async fn per_user_cap_keeps_the_newest_sessions(kind: StoreKind) {
    const CAP: usize = 3;
    let h = Harness::with(kind, |b| b.max_sessions_per_user(CAP)).await;
    let mut events = h.manager.subscribe();
    let mut bob = Device::new("curl/8", "203.0.113.5");
    h.sign_in(&mut bob, "bob").await;
    let mut devices = Vec::new();
    let mut ids_in_order = Vec::new();
    for n in 0..=CAP {
        h.clock.advance(Duration::minutes(1));
        let mut device = Device::new(&format!("device-{n}"), "192.0.2.10");
        ids_in_order.push(h.sign_in(&mut device, "alice").await);
        devices.push(device);
    }
    let live: Vec<String> = h
        .manager
        .list_user_sessions("alice")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live, ids_in_order[1..], "the oldest is gone");
    assert_eq!(
        h.status(&mut devices[0], "GET", "/me").await,
        StatusCode::UNAUTHORIZED
    );
    for device in &mut devices[1..] {
        assert_eq!(h.status(device, "GET", "/me").await, StatusCode::OK);
    }
    assert_eq!(h.status(&mut bob, "GET", "/me").await, StatusCode::OK);
    let limited: Vec<_> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::Revoked {
                session,
                reason: RevokeReason::SessionLimit,
            } => Some(session.id),
            _ => None,
        })
        .collect();
    assert_eq!(limited, [ids_in_order[0].clone()]);
}

/// With the defaults, a client that signs one user in 500 times through the layer leaves
/// at most 100 live sessions: the newest ones.
async fn default_cap_bounds_one_users_sessions(kind: StoreKind) {
    let (store, _dir) = common::make_store(kind).await;
    let clock = ManualClock::new();
    let manager = SessionManager::builder(store)
        .secret(SECRET)
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = common::app(&manager);
    let mut ids = Vec::new();
    for _ in 0..500 {
        clock.advance(Duration::milliseconds(1));
        let reply = common::send(&app, common::post("/sign-in?user=mallory", None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        ids.push(reply.json()["session"]["id"].as_str().unwrap().to_owned());
    }
    let live: Vec<String> = manager
        .list_user_sessions("mallory")
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live.len(), 100);
    assert_eq!(live, ids[400..], "the newest 100 stay");

    // The cap can be lifted.
    let (store, _dir) = common::make_store(kind).await;
    let manager = SessionManager::builder(store)
        .secret(SECRET)
        .max_sessions_per_user(None)
        .build()
        .unwrap();
    let app = common::app(&manager);
    for _ in 0..101 {
        common::send(&app, common::post("/sign-in?user=bot", None)).await;
    }
    assert_eq!(manager.list_user_sessions("bot").await.unwrap().len(), 101);
}

/// `GET /list-sessions?limit=N` pages with an `x-next-cursor` header; without `limit` the
/// whole list, as before.
async fn list_sessions_endpoint_pages_with_a_cursor(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let mut devices = Vec::new();
    let mut ids_in_order = Vec::new();
    for n in 0..5 {
        h.clock.advance(Duration::minutes(1));
        let mut device = Device::new(&format!("device-{n}"), "192.0.2.10");
        ids_in_order.push(h.sign_in(&mut device, "alice").await);
        devices.push(device);
    }
    let me = &mut devices[4];

    let whole = h.call(me, "GET", "/api/auth/list-sessions").await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(ids(&whole.json()), ids_in_order);
    assert!(whole.headers.get("x-next-cursor").is_none());

    let mut seen = Vec::new();
    let mut uri = "/api/auth/list-sessions?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let reply = h.call(me, "GET", &uri).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        let page = ids(&reply.json());
        assert!(page.len() <= 2);
        seen.extend(page);
        pages += 1;
        if pages == 1 {
            // A session revoked between pages does not disturb the cursor.
            assert!(h.manager.revoke(&ids_in_order[3]).await.unwrap());
        }
        match reply.headers.get("x-next-cursor") {
            Some(next) => {
                uri = format!(
                    "/api/auth/list-sessions?limit=2&cursor={}",
                    next.to_str().unwrap()
                );
            }
            None => break,
        }
    }
    let expected: Vec<String> = ids_in_order
        .iter()
        .filter(|id| **id != ids_in_order[3])
        .cloned()
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(pages, 2);

    for bad in [
        "?limit=0",
        "?limit=two",
        "?limit=2&cursor=not-a-cursor",
        "?cursor=%20",
    ] {
        let reply = h
            .call(me, "GET", &format!("/api/auth/list-sessions{bad}"))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            reply.body
        );
    }
    // The same pages from the API.
    let page = h
        .manager
        .list_user_sessions_page("alice", 3, None)
        .await
        .unwrap();
    assert_eq!(page.sessions.len(), 3);
    let rest = h
        .manager
        .list_user_sessions_page("alice", 3, page.next_cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(rest.sessions.len(), 1);
    assert!(rest.next_cursor.is_none());
}

async fn cleanup_task_deletes_expired_rows_and_keeps_live_ones(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let mut old_a = Device::new(FIREFOX, "192.0.2.10");
    let mut old_b = Device::new(IPHONE, "192.0.2.11");
    let mut recent = Device::new(FIREFOX, "192.0.2.12");
    let mut bob = Device::new("curl/8", "203.0.113.5");
    h.sign_in(&mut old_a, "alice").await;
    h.sign_in(&mut old_b, "alice").await;
    h.clock.advance(Duration::days(6));
    h.sign_in(&mut recent, "alice").await;
    h.sign_in(&mut bob, "bob").await;
    h.clock.advance(Duration::days(1) + Duration::minutes(1));
    assert_eq!(h.rows.count().await, 4, "expired rows are still there");

    let mut events = h.manager.subscribe();
    let cleanup = h.manager.spawn_cleanup(StdDuration::from_secs(3600));
    // The first sweep runs at once; wait for it (the bound is only there so a broken
    // task fails the test instead of hanging it).
    let event = tokio::time::timeout(StdDuration::from_secs(30), events.recv())
        .await
        .expect("the cleanup task swept")
        .unwrap();
    assert_eq!(event, SessionEvent::ExpiredSwept { count: 2 });
    assert_eq!(h.rows.count().await, 2, "only the live rows are left");
    assert_eq!(h.status(&mut recent, "GET", "/me").await, StatusCode::OK);
    assert_eq!(h.status(&mut bob, "GET", "/me").await, StatusCode::OK);
    assert!(!cleanup.is_finished());
    cleanup.stop().await;
}

async fn cleanup_task_ends_with_its_handle_and_with_the_manager(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let cleanup = h.manager.spawn_cleanup(StdDuration::ZERO);
    cleanup.stop().await;

    // The task holds the manager weakly: when the last manager goes, it ends by itself.
    let manager = h.manager.clone();
    let cleanup = manager.spawn_cleanup(StdDuration::from_millis(5));
    drop(manager);
    let Harness { manager, app, .. } = h;
    drop((manager, app));
    tokio::time::timeout(StdDuration::from_secs(30), async {
        while !cleanup.is_finished() {
            tokio::time::sleep(StdDuration::from_millis(5)).await;
        }
    })
    .await
    .expect("the cleanup task ended once the manager was gone");
}

// ---------------------------------------------------------------------------------------
// Events and the admin API

async fn lifecycle_events_are_emitted_and_never_carry_a_token(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let mut events = h.manager.subscribe();
    let mut device = Device::new(FIREFOX, "192.0.2.10");
    let first = h.sign_in(&mut device, "alice").await;
    h.clock.advance(Duration::days(1));
    assert_eq!(h.status(&mut device, "GET", "/me").await, StatusCode::OK);
    assert_eq!(
        h.status(&mut device, "POST", "/reauthenticate").await,
        StatusCode::OK
    );
    assert_eq!(
        h.status(&mut device, "POST", "/rotate").await,
        StatusCode::OK
    );
    // Signing in again over the same client replaces the session.
    let second = h.sign_in(&mut device, "alice").await;
    assert_eq!(
        h.status(&mut device, "POST", "/api/auth/sign-out").await,
        StatusCode::OK
    );
    let third = h.sign_in(&mut device, "alice").await;
    h.clock.advance(Duration::days(8));
    assert_eq!(
        h.status(&mut device, "GET", "/me").await,
        StatusCode::UNAUTHORIZED
    );
    let mut other = Device::new(IPHONE, "192.0.2.11");
    let fourth = h.sign_in(&mut other, "alice").await;
    assert_eq!(h.manager.revoke_user("alice").await.unwrap(), 1);

    let seen = drain(&mut events);
    let summary: Vec<(&str, String, Option<RevokeReason>)> = seen
        .iter()
        .map(|event| match event {
            SessionEvent::Created { session } => ("created", session.id.clone(), None),
            SessionEvent::Refreshed { session } => ("refreshed", session.id.clone(), None),
            SessionEvent::Reauthenticated { session } => {
                ("reauthenticated", session.id.clone(), None)
            }
            SessionEvent::Rotated { session } => ("rotated", session.id.clone(), None),
            SessionEvent::Revoked { session, reason } => {
                ("revoked", session.id.clone(), Some(*reason))
            }
            SessionEvent::Expired { session } => ("expired", session.id.clone(), None),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let expected = vec![
        ("created", first.clone(), None),
        ("refreshed", first.clone(), None),
        ("reauthenticated", first.clone(), None),
        ("rotated", first.clone(), None),
        ("revoked", first.clone(), Some(RevokeReason::Replaced)),
        ("created", second.clone(), None),
        ("revoked", second.clone(), Some(RevokeReason::SignOut)),
        ("created", third.clone(), None),
        ("expired", third.clone(), None),
        ("created", fourth.clone(), None),
        ("revoked", fourth.clone(), Some(RevokeReason::ByAdmin)),
    ];
    assert_eq!(summary, expected);
    let issued = h.issued.lock().unwrap().clone();
    assert!(!issued.is_empty());
    for event in &seen {
        let text = format!("{event:?}");
        for secret in &issued {
            assert!(!text.contains(secret.as_str()), "token in {text}");
        }
    }
}

async fn admin_api_lists_and_revokes_outside_a_request(kind: StoreKind) {
    let h = Harness::new(kind).await;
    let name = h.cookie_name();
    let mut laptop = Device::new(FIREFOX, "192.0.2.10");
    let mut phone = Device::new(IPHONE, "198.51.100.20");
    let mut tablet = Device::new(IPHONE, "198.51.100.21");
    let laptop_id = h.sign_in(&mut laptop, "alice").await;
    h.clock.advance(Duration::minutes(1));
    let phone_id = h.sign_in(&mut phone, "alice").await;
    h.clock.advance(Duration::minutes(1));
    h.sign_in(&mut tablet, "alice").await;

    // get_session validates a cookie header outside the layer.
    let mut headers = http::HeaderMap::new();
    headers.insert(header::COOKIE, laptop.cookie_header().parse().unwrap());
    let found = h.manager.get_session(&headers).await.unwrap().unwrap();
    assert_eq!(found.id, laptop_id);
    let mut forged = http::HeaderMap::new();
    forged.insert(header::COOKIE, format!("{name}=k0.a.b").parse().unwrap());
    assert!(h.manager.get_session(&forged).await.unwrap().is_none());

    let listed = h.manager.list_user_sessions("alice").await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0].id, laptop_id, "oldest first");

    assert!(h.manager.revoke(&phone_id).await.unwrap());
    assert!(!h.manager.revoke(&phone_id).await.unwrap(), "already gone");
    assert_eq!(
        h.status(&mut phone, "GET", "/me").await,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(
        h.manager
            .revoke_user_except("alice", &laptop_id)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        h.status(&mut tablet, "GET", "/me").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(h.status(&mut laptop, "GET", "/me").await, StatusCode::OK);
    assert_eq!(h.manager.revoke_user("alice").await.unwrap(), 1);
    assert!(h.manager.get_session(&headers).await.unwrap().is_none());

    // delete_expired removes expired rows only.
    let mut old = Device::new(FIREFOX, "192.0.2.30");
    h.sign_in(&mut old, "carol").await;
    h.clock.advance(Duration::days(4));
    let mut young = Device::new(FIREFOX, "192.0.2.31");
    h.sign_in(&mut young, "carol").await;
    h.clock.advance(Duration::days(4));
    assert_eq!(h.rows.count().await, 2);
    assert_eq!(h.manager.delete_expired().await.unwrap(), 1);
    assert_eq!(h.rows.count().await, 1);
    assert_eq!(h.status(&mut young, "GET", "/me").await, StatusCode::OK);
}

/// Issue 11: the routes Better Auth's client uses (get-session with a user, list-sessions
/// with `token`, update-session, revoke-session by `token`) go through the harness, which
/// scans every body for every token issued.
async fn better_auth_routes_never_put_a_token_in_a_body(kind: StoreKind) {
    let h = Harness::with(kind, |b| {
        b.field_policy(tower_auth_session::FieldPolicy::new().client_writable("theme"))
    })
    .await;
    let mut laptop = Device::new(FIREFOX, "192.0.2.10");
    let mut phone = Device::new(IPHONE, "192.0.2.11");
    h.sign_in(&mut laptop, "alice").await;
    h.sign_in(&mut phone, "alice").await;
    let reply = h.call(&mut laptop, "GET", "/api/auth/get-session").await;
    assert_eq!(reply.json()["user"]["id"], "alice");
    let list = h
        .call(&mut laptop, "GET", "/api/auth/list-sessions")
        .await
        .json();
    let phone_token = list
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["current"] == false)
        .map(|item| item["token"].as_str().unwrap().to_owned())
        .unwrap();
    let json = [("content-type", "application/json")];
    let reply = h
        .call_with(
            &mut laptop,
            "POST",
            "/api/auth/update-session",
            &json,
            r#"{"theme":"dark"}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let body = format!(r#"{{"token":"{phone_token}"}}"#);
    let reply = h
        .call_with(
            &mut laptop,
            "POST",
            "/api/auth/revoke-session",
            &json,
            &body,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let reply = h.call(&mut phone, "GET", "/api/auth/get-session").await;
    assert_eq!(reply.json(), Value::Null);
}

store_suite!(
    better_auth_routes_never_put_a_token_in_a_body,
    two_devices_list_each_other_with_current_flag_ip_and_user_agent,
    revoke_other_sessions_signs_out_the_other_device_only,
    revoke_session_touches_only_the_callers_own_sessions,
    revoke_sessions_signs_out_every_device_including_the_caller,
    sign_out_endpoint_revokes_the_session_and_clears_cookies,
    bad_input_on_the_endpoints_is_never_a_server_error,
    store_outage_is_503_and_signs_nobody_out,
    cross_site_posts_are_refused_and_revoke_nothing,
    bearer_requests_pass_the_cross_site_guard,
    without_trusted_origins_only_same_origin_posts_pass,
    forwarded_for_is_ignored_without_trusted_proxies,
    forwarded_for_is_honoured_through_trusted_proxies,
    client_tracking_can_be_turned_off,
    last_seen_ip_and_user_agent_move_at_most_once_per_update_age,
    connect_info_peer_and_two_cookie_jars_over_real_http,
    fresh_after_sign_in_stale_after_fresh_age_fresh_again_after_reauthenticate,
    fresh_session_reads_the_store_not_the_request_copy,
    rotate_changes_the_cookie_and_the_old_token_gets_401,
    per_user_cap_keeps_the_newest_sessions,
    default_cap_bounds_one_users_sessions,
    list_sessions_endpoint_pages_with_a_cursor,
    cleanup_task_deletes_expired_rows_and_keeps_live_ones,
    cleanup_task_ends_with_its_handle_and_with_the_manager,
    lifecycle_events_are_emitted_and_never_carry_a_token,
    admin_api_lists_and_revokes_outside_a_request,
);
