//! The wire format Better Auth's client reads (issue 11), driven through the real layer:
//! `get-session` answers `{session, user}`, `list-sessions` items carry `token` (the public
//! id) that `revoke-session` takes back, `update-session` changes app fields on every
//! instance, error bodies carry `code` and `message`, and trusted origins get CORS.

use crate::common;

use axum::body::Body;
use axum::{Router, routing};
use common::*;
use http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower_auth_session::{
    FieldAccess, FieldPolicy, MemoryStore, SessionHandle, SessionManager, SessionManagerBuilder,
    SignInOptions, StoreError,
};

/// The session endpoints under `/api/auth`, plus a sign-in that takes `fields`.
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
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
    Router::new()
        .nest(
            "/api/auth",
            manager.router().route("/sign-in", routing::post(sign_in)),
        )
        .layer(manager.layer())
}

fn manager(
    configure: impl FnOnce(SessionManagerBuilder) -> SessionManagerBuilder,
) -> SessionManager {
    configure(
        SessionManager::builder(MemoryStore::new())
            .secret(SECRET)
            .trusted_origins(["http://localhost:5173"])
            .field_policy(
                FieldPolicy::new()
                    .undeclared(FieldAccess::Client)
                    .server_only("role"),
            ),
    )
    .build()
    .unwrap()
}

fn json_post(uri: &str, cookie: Option<&str>, body: Value) -> Request<Body> {
    let mut request = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.body(Body::from(body.to_string())).unwrap()
}

/// The `name=value` pairs a browser would send back after `reply`.
fn cookies_of(reply: &Reply) -> String {
    reply
        .set_cookies()
        .iter()
        .filter(|c| !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("; ")
}

async fn signed_in(app: &Router, user: &str, fields: Value) -> (String, Value) {
    let reply = send(
        app,
        json_post(
            "/api/auth/sign-in",
            None,
            json!({ "userId": user, "fields": fields }),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    (cookies_of(&reply), reply.json()["session"].clone())
}

#[tokio::test]
async fn get_session_answers_session_and_user_from_the_loader() {
    let without = manager(|b| b);
    let app = api(&without);
    let (cookie, _) = signed_in(&app, "alice", json!({})).await;
    let reply = send(&app, get("/api/auth/get-session", Some(&cookie))).await;
    assert_eq!(reply.json()["user"], json!({ "id": "alice" }));
    assert_eq!(reply.json()["session"]["userId"], "alice");

    let with = manager(|b| {
        b.user_loader(|user_id: String| async move {
            Ok::<_, StoreError>(
                (user_id != "ghost").then(|| json!({ "id": user_id, "name": "Alice" })),
            )
        })
    });
    let app = api(&with);
    let (cookie, _) = signed_in(&app, "alice", json!({})).await;
    let reply = send(&app, get("/api/auth/get-session", Some(&cookie))).await;
    assert_eq!(reply.json()["user"]["name"], "Alice");
    // A session whose user the app no longer knows is no session to show.
    let (ghost, _) = signed_in(&app, "ghost", json!({})).await;
    let reply = send(&app, get("/api/auth/get-session", Some(&ghost))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json(), Value::Null);
    // Signed out: `null`, as before.
    let reply = send(&app, get("/api/auth/get-session", None)).await;
    assert_eq!(reply.json(), Value::Null);
}

#[tokio::test]
async fn list_items_carry_the_public_id_as_token_and_revoke_session_takes_it() {
    let manager = manager(|b| b);
    let app = api(&manager);
    let (laptop, _) = signed_in(&app, "alice", json!({})).await;
    let (phone, phone_session) = signed_in(&app, "alice", json!({})).await;
    let list = send(&app, get("/api/auth/list-sessions", Some(&laptop)))
        .await
        .json();
    let items = list.as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        assert_eq!(item["token"], item["id"], "token is the public id");
    }
    let body = json!({ "token": phone_session["id"] });
    let reply = send(
        &app,
        json_post("/api/auth/revoke-session", Some(&laptop), body),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(
        send(&app, get("/api/auth/get-session", Some(&phone)))
            .await
            .json(),
        Value::Null,
        "revoked by its token (public id)"
    );
    // `id` and `token` that disagree are refused, with Better Auth's error fields.
    let body = json!({ "id": "a", "token": "b" });
    let reply = send(
        &app,
        json_post("/api/auth/revoke-session", Some(&laptop), body),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "invalid_body");
    assert_eq!(reply.json()["code"], "INVALID_BODY");
    assert!(reply.json()["message"].is_string());
}

#[tokio::test]
async fn update_session_merges_fields_and_refuses_built_in_names() {
    let manager = manager(|b| b);
    let app = api(&manager);
    let (cookie, _) = signed_in(&app, "alice", json!({ "role": "member", "theme": "dark" })).await;
    let body = json!({ "plan": "pro", "activeOrganizationId": "org_1", "theme": null });
    let reply = send(
        &app,
        json_post("/api/auth/update-session", Some(&cookie), body),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let session = &reply.json()["session"];
    assert_eq!(session["plan"], "pro");
    assert_eq!(session["activeOrganizationId"], "org_1");
    assert!(session.get("theme").is_none(), "null removes a field");
    let shown = send(&app, get("/api/auth/get-session", Some(&cookie)))
        .await
        .json();
    assert_eq!(shown["session"]["plan"], "pro");

    // A server-only field, in any spelling, is 403 and changes nothing.
    for body in [
        json!({ "role": "admin" }),
        json!({ "Role": "admin" }),
        json!({ "role": null }),
        json!({ "theme": "light", "role": "admin" }),
    ] {
        let reply = send(
            &app,
            json_post("/api/auth/update-session", Some(&cookie), body.clone()),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{body}: {}",
            reply.body
        );
        assert_eq!(reply.json()["code"], "FIELD_NOT_WRITABLE");
    }
    let shown = send(&app, get("/api/auth/get-session", Some(&cookie)))
        .await
        .json();
    assert_eq!(shown["session"]["role"], "member");
    assert!(shown["session"].get("theme").is_none());
    assert!(shown["session"].get("Role").is_none());

    for body in [
        json!({ "userId": "mallory" }),
        json!({ "userid": "mallory" }),
        json!({ "user_id": "mallory" }),
        json!({ "USER-ID": "mallory" }),
        json!({ "us\u{0435}rId": "mallory" }),
        json!({ "\u{FF55}serId": "mallory" }),
        json!({ "note": "a\u{0}b" }),
        json!({ "nested": { "k\u{0}": 1 } }),
        json!({ "expiresAt": "2100-01-01T00:00:00Z" }),
        json!([1]),
    ] {
        let reply = send(
            &app,
            json_post("/api/auth/update-session", Some(&cookie), body.clone()),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.body
        );
    }
    let shown = send(&app, get("/api/auth/get-session", Some(&cookie)))
        .await
        .json();
    assert_eq!(shown["session"]["userId"], "alice");
    // Without a session: 401; from another site: 403.
    let reply = send(
        &app,
        json_post("/api/auth/update-session", None, json!({ "a": 1 })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let mut cross = json_post(
        "/api/auth/update-session",
        Some(&cookie),
        json!({ "role": "x" }),
    );
    cross
        .headers_mut()
        .insert(header::ORIGIN, "https://evil.example".parse().unwrap());
    assert_eq!(send(&app, cross).await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn trusted_origins_get_cors_and_others_get_none() {
    let manager = manager(|b| b);
    let app = api(&manager);
    let preflight = |origin: &str| {
        Request::builder()
            .method("OPTIONS")
            .uri("/api/auth/sign-out")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
            .body(Body::empty())
            .unwrap()
    };
    let reply = send(&app, preflight("http://localhost:5173")).await;
    assert!(reply.status.is_success(), "{:?}", reply.status);
    let allowed = |reply: &Reply, name| {
        reply
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        allowed(&reply, header::ACCESS_CONTROL_ALLOW_ORIGIN).as_deref(),
        Some("http://localhost:5173")
    );
    assert_eq!(
        allowed(&reply, header::ACCESS_CONTROL_ALLOW_CREDENTIALS).as_deref(),
        Some("true")
    );

    let reply = send(&app, preflight("https://evil.example")).await;
    assert!(
        reply
            .headers
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );

    // A real request from the trusted origin can read `set-auth-token`.
    let mut request = json_post("/api/auth/sign-in", None, json!({ "userId": "alice" }));
    request
        .headers_mut()
        .insert(header::ORIGIN, "http://localhost:5173".parse().unwrap());
    let reply = send(&app, request).await;
    assert_eq!(reply.status, StatusCode::OK);
    let exposed: Vec<String> = reply
        .headers
        .get_all(header::ACCESS_CONTROL_EXPOSE_HEADERS)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        exposed.iter().any(|v| v.contains("set-auth-token")),
        "{exposed:?}"
    );
}

/// Two instances over one store and one Redis, cookie cache on: fields changed on A are
/// what B serves on its very next request, and B's older cache, replayed, never yields them.
#[cfg(feature = "redis")]
#[tokio::test]
async fn update_fields_on_one_instance_is_what_every_instance_serves_next() {
    use std::time::{Duration as StdDuration, Instant};
    use tower_auth_session::CookieCache;
    const TOKEN: &str = "__Host-tas.session_token";
    const CACHE: &str = "__Host-tas.session_data";
    let Some(url) = service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let prefix = format!("{}:", unique_name("tas_fields"));
    let store = MemoryStore::new();
    let build = || {
        let redis = tower_auth_session::secondary::RedisStorage::builder(&url)
            .key_prefix(&prefix)
            .build()
            .unwrap();
        SessionManager::builder(store.clone())
            .secret(SECRET)
            .secondary_storage(redis)
            .cookie_cache(CookieCache::new())
            .field_policy(FieldPolicy::new().client_writable("theme"))
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    for manager in [&a, &b] {
        assert!(manager.cookie_cache_ready(StdDuration::from_secs(5)).await);
    }
    let (app_a, app_b) = (api(&a), api(&b));
    let (token_only, _) = signed_in(
        &app_a,
        "alice",
        json!({ "role": "member", "theme": "light" }),
    )
    .await;
    let token_only = token_only
        .split("; ")
        .filter(|c| c.starts_with(TOKEN))
        .collect::<Vec<_>>()
        .join("; ");
    // B issues its own cache (from the store) and then serves from it.
    let warm = send(&app_b, get("/api/auth/get-session", Some(&token_only))).await;
    let b_cache = warm.cookie_value(CACHE).expect("B issues a cache");
    let on_b = format!("{token_only}; {CACHE}={b_cache}");
    let shown = send(&app_b, get("/api/auth/get-session", Some(&on_b))).await;
    assert_eq!(shown.json()["session"]["theme"], "light");
    assert!(shown.set_cookies().is_empty(), "a cache hit");

    let started = Instant::now();
    let reply = send(
        &app_a,
        json_post(
            "/api/auth/update-session",
            Some(&token_only),
            json!({ "theme": "dark" }),
        ),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    println!(
        "update-session across 2 instances took {:?}",
        started.elapsed()
    );
    // B's very next request, with B's old cache replayed: the new fields.
    let shown = send(&app_b, get("/api/auth/get-session", Some(&on_b))).await;
    assert_eq!(shown.json()["session"]["theme"], "dark", "{}", shown.body);

    // The admin API on A, by session id: B's next request again shows the new fields,
    // even with the cache B issued a moment ago.
    let rewarmed = format!(
        "{token_only}; {CACHE}={}",
        shown.cookie_value(CACHE).expect("B re-issued its cache")
    );
    let id = shown.json()["session"]["id"].as_str().unwrap().to_owned();
    let changes = json!({ "role": "owner" }).as_object().unwrap().clone();
    let updated = a.update_fields(&id, changes).await.unwrap().unwrap();
    assert_eq!(updated.fields["role"], "owner");
    let shown = send(&app_b, get("/api/auth/get-session", Some(&rewarmed))).await;
    assert_eq!(shown.json()["session"]["role"], "owner", "{}", shown.body);
    let bad = json!({ "userId": "mallory" }).as_object().unwrap().clone();
    assert!(
        a.update_fields(&id, bad).await.is_err(),
        "built-in names are refused"
    );
    let none = json!({ "role": "x" }).as_object().unwrap().clone();
    assert_eq!(a.update_fields("no-such-id", none).await.unwrap(), None);
}
