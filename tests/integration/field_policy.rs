//! Which app fields a client may write, on every store: a field the server set at
//! sign-in (`role`) cannot be changed through `POST /update-session` in any spelling, a
//! built-in name in any form or a NUL character is 400 (never a store error), and
//! updates racing on one session answer 200 or 409, never 503.

use crate::common;

use std::sync::Arc;

use axum::body::Body;
use axum::{Router, routing};
use common::*;
use http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower_auth_session::{
    CookieCache, FieldAccess, FieldPolicy, SessionHandle, SessionManager, SessionManagerBuilder,
    SignInOptions,
};

const TOKEN: &str = "__Host-tas.session_token";

/// Sign-in with server-chosen fields (as an app does after checking a password), and the
/// library's routes under `/api/auth`.
fn api(manager: &SessionManager) -> Router {
    async fn sign_in(handle: SessionHandle, body: axum::body::Bytes) -> (StatusCode, String) {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let options = SignInOptions::new().fields(&body["fields"]).unwrap();
        match handle.sign_in("alice", options).await {
            Ok(session) => (StatusCode::OK, json!({ "session": session }).to_string()),
            Err(e) => (e.status(), e.to_string()),
        }
    }
    Router::new()
        .nest(
            "/api/auth",
            manager.router().route("/sign-in", routing::post(sign_in)),
        )
        .layer(manager.layer())
}

fn json_post(uri: &str, cookie: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::COOKIE, cookie)
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn configured(builder: SessionManagerBuilder) -> SessionManager {
    builder
        .secret(SECRET)
        .cookie_cache(CookieCache::new())
        .field_policy(
            FieldPolicy::new()
                .undeclared(FieldAccess::Client)
                .server_only("role"),
        )
        .build()
        .unwrap()
}

/// The manager for one store kind, or `None` when its service is not running (and not
/// required). The guard keeps an SQLite file alive.
async fn manager_for(kind: &str) -> Option<(SessionManager, Option<tempfile::TempDir>)> {
    Some(match kind {
        "memory" => {
            let (store, dir) = make_store(StoreKind::Memory).await;
            (configured(SessionManager::builder(store)), dir)
        }
        "sqlite" => {
            let (store, dir) = make_store(StoreKind::Sqlite).await;
            (configured(SessionManager::builder(store)), dir)
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            let url = service_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")?;
            let store = tower_auth_session::store::PostgresStore::builder()
                .schema(unique_name("tas_fields"))
                .unwrap()
                .connect(&url)
                .await
                .unwrap();
            (configured(SessionManager::builder(store)), None)
        }
        #[cfg(feature = "redis")]
        "redis-over-sqlite" => {
            let url = service_url("REDIS_URL", "redis://127.0.0.1:6379")?;
            let redis = tower_auth_session::secondary::RedisStorage::builder(&url)
                .key_prefix(format!("{}:", unique_name("tas_fields")))
                .build()
                .unwrap();
            let (store, dir) = make_store(StoreKind::Sqlite).await;
            let builder = SessionManager::builder(store).secondary_storage(redis);
            (configured(builder), dir)
        }
        #[cfg(feature = "redis")]
        "redis-only" => {
            let url = service_url("REDIS_URL", "redis://127.0.0.1:6379")?;
            let redis = tower_auth_session::secondary::RedisStorage::builder(&url)
                .key_prefix(format!("{}:", unique_name("tas_fields")))
                .build()
                .unwrap();
            (configured(SessionManager::builder(redis)), None)
        }
        other => panic!("unknown store kind {other}"),
    })
}

/// The session as the tiers hold it: the token cookie alone, so no cookie cache answers.
async fn stored_session(app: &Router, token: &str) -> Value {
    let reply = send(app, get("/api/auth/get-session", Some(token))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.json()["session"].clone()
}

async fn a_client_cannot_write_what_the_server_decides_with(kind: &str) {
    let Some((manager, _dir)) = manager_for(kind).await else {
        return;
    };
    let app = api(&manager);
    let body = json!({ "fields": { "role": "member" } });
    let reply = send(&app, json_post("/api/auth/sign-in", "", &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{kind}: {}", reply.body);
    let token = format!("{TOKEN}={}", reply.cookie_value(TOKEN).unwrap());
    let cache = reply
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-tas.session_data"))
        .map(|c| c.split(';').next().unwrap().to_owned())
        .expect("a cookie cache at sign-in");
    let with_cache = format!("{token}; {cache}");

    // The server-only field, in every spelling, set or removed, alone or beside an
    // allowed one: 403, and nothing is written (the allowed field neither).
    for body in [
        json!({ "role": "admin" }),
        json!({ "ROLE": "admin" }),
        json!({ "ro_le": "admin" }),
        json!({ "role": null }),
        json!({ "theme": "dark", "role": "admin" }),
    ] {
        let reply = send(&app, json_post("/api/auth/update-session", &token, &body)).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{kind}: {body}: {}",
            reply.body
        );
        assert_eq!(reply.json()["code"], "FIELD_NOT_WRITABLE", "{kind}");
        // (A cookie cache may be issued: the request came with the token alone.)
        assert!(
            reply.set_cookie(TOKEN).is_none(),
            "{kind}: a refusal neither signs out nor re-issues: {:?}",
            reply.set_cookies()
        );
    }
    // Built-in names in any form, lookalikes, NUL anywhere: 400 on every store.
    for body in [
        json!({ "userId": "mallory" }),
        json!({ "user_id": "mallory" }),
        json!({ "USERID": "mallory" }),
        json!({ "us\u{0435}rId": "mallory" }),
        json!({ "note": "a\u{0}b" }),
        json!({ "note": ["ok", { "deep": "a\u{0}" }] }),
    ] {
        let reply = send(&app, json_post("/api/auth/update-session", &token, &body)).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{kind}: {body}: {}",
            reply.body
        );
    }
    let stored = stored_session(&app, &token).await;
    assert_eq!(stored["role"], "member", "{kind}: {stored}");
    assert_eq!(stored["userId"], "alice", "{kind}");
    for name in ["theme", "ROLE", "ro_le", "note", "user_id"] {
        assert!(
            stored.get(name).is_none(),
            "{kind}: {name} written: {stored}"
        );
    }
    let cached = send(&app, get("/api/auth/get-session", Some(&with_cache))).await;
    assert_eq!(cached.json()["session"]["role"], "member", "{kind}");

    // What the policy opens is written, and the server's field stays.
    let body = json!({ "theme": "dark" });
    let reply = send(&app, json_post("/api/auth/update-session", &token, &body)).await;
    assert_eq!(reply.status, StatusCode::OK, "{kind}: {}", reply.body);
    let stored = stored_session(&app, &token).await;
    assert_eq!(stored["theme"], "dark", "{kind}");
    assert_eq!(stored["role"], "member", "{kind}");

    // Server code may still write it.
    let id = stored["id"].as_str().unwrap().to_owned();
    let changes = json!({ "role": "owner" }).as_object().unwrap().clone();
    manager.update_fields(&id, changes).await.unwrap().unwrap();
    assert_eq!(
        stored_session(&app, &token).await["role"],
        "owner",
        "{kind}"
    );
}

async fn racing_updates_of_one_session_conflict_rather_than_fail(kind: &str) {
    let Some((manager, _dir)) = manager_for(kind).await else {
        return;
    };
    let app = api(&manager);
    let body = json!({ "fields": {} });
    let reply = send(&app, json_post("/api/auth/sign-in", "", &body)).await;
    let token = Arc::new(format!("{TOKEN}={}", reply.cookie_value(TOKEN).unwrap()));
    let racers: Vec<_> = (0..32)
        .map(|n| {
            let (app, token) = (app.clone(), token.clone());
            tokio::spawn(async move {
                let body = json!({ "counter": n });
                send(&app, json_post("/api/auth/update-session", &token, &body))
                    .await
                    .status
            })
        })
        .collect();
    let (mut ok, mut conflict) = (0, 0);
    for racer in racers {
        match racer.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => conflict += 1,
            other => panic!("{kind}: a racing update answered {other}"),
        }
    }
    println!("{kind}: 32 racing updates: {ok} written, {conflict} conflicts");
    assert!(ok >= 1, "{kind}: at least one update wins");
    let stored = stored_session(&app, &token).await;
    assert!(stored["counter"].is_number(), "{kind}: {stored}");
}

/// One test per store, so a failure names it.
macro_rules! per_store {
    ($($store:ident => $kind:literal $(if $feature:literal)?),* $(,)?) => {
        $(
            mod $store {
                #[tokio::test]
                $(#[cfg(feature = $feature)])?
                async fn a_client_cannot_write_what_the_server_decides_with() {
                    super::a_client_cannot_write_what_the_server_decides_with($kind).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                $(#[cfg(feature = $feature)])?
                async fn racing_updates_of_one_session_conflict_rather_than_fail() {
                    super::racing_updates_of_one_session_conflict_rather_than_fail($kind).await;
                }
            }
        )*
    };
}

per_store! {
    memory => "memory",
    sqlite => "sqlite",
    postgres => "postgres" if "postgres",
    redis_over_sqlite => "redis-over-sqlite" if "redis",
    redis_only => "redis-only" if "redis",
}

#[test]
fn a_declared_name_that_is_not_a_field_name_fails_the_build() {
    for name in ["userId", "user_id", "", "r\u{00f4}le"] {
        let built = SessionManager::builder(tower_auth_session::MemoryStore::new())
            .secret(SECRET)
            .field_policy(FieldPolicy::new().server_only(name))
            .build();
        assert!(built.is_err(), "{name:?} accepted");
    }
}
