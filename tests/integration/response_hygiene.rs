//! Responses that carry a live token are never cacheable, and the cross-site guard's bearer
//! exemption covers only what the layer really reads as a bearer token.

use crate::common;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing;
use chrono::Duration;
use common::*;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tower_auth_session::{ManualClock, MemoryStore, SessionHandle, SessionManager, SignInOptions};

/// An app whose handlers ask shared caches to keep their answers.
fn cacheable_app(manager: &SessionManager) -> Router {
    async fn sign_in(handle: SessionHandle) -> impl IntoResponse {
        handle.sign_in("alice", SignInOptions::new()).await.unwrap();
        ([(header::CACHE_CONTROL, "public, max-age=3600")], "in")
    }
    async fn page() -> impl IntoResponse {
        ([(header::CACHE_CONTROL, "public, max-age=3600")], "page")
    }
    Router::new()
        .route("/sign-in", routing::post(sign_in))
        .route("/page", routing::get(page))
        .layer(manager.layer())
}

#[tokio::test]
async fn sign_in_and_refresh_responses_are_no_store_whatever_the_handler_said() {
    let clock = ManualClock::new();
    let manager = SessionManager::builder(MemoryStore::new())
        .secret(SECRET)
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = cacheable_app(&manager);
    let name = manager.session_cookie_name().to_owned();

    let reply = send(&app, post("/sign-in", None)).await;
    assert!(reply.set_cookie(&name).is_some());
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
    let cookie = format!("{name}={}", reply.cookie_value(&name).unwrap());

    // Without a token to hand out, the handler's caching stands.
    let reply = send(&app, get("/page", Some(&cookie))).await;
    assert!(reply.set_cookie(&name).is_none());
    assert_eq!(reply.headers[header::CACHE_CONTROL], "public, max-age=3600");

    // The refresh re-sets the token cookie: no-store again.
    clock.advance(Duration::days(1) + Duration::seconds(1));
    let reply = send(&app, get("/page", Some(&cookie))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.set_cookie(&name).is_some());
    assert_eq!(reply.headers[header::CACHE_CONTROL], "no-store");
}

#[test]
fn an_empty_bearer_header_does_not_exempt_a_request_from_the_cross_site_guard() {
    let manager = SessionManager::builder(MemoryStore::new())
        .secret(SECRET)
        .trusted_origins(["https://app.example"])
        .build()
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://evil.example"),
    );
    assert!(manager.is_cross_site(&headers));
    // The layer falls back to the cookie when the bearer credentials are empty, so the
    // guard must still judge the request as a browser request.
    headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
    assert!(manager.is_cross_site(&headers));
    // A real bearer token is exempt: browsers never attach one by themselves.
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer k0.abc.def"),
    );
    assert!(!manager.is_cross_site(&headers));
}
