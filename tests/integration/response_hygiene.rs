//! Responses to which the layer adds a `Set-Cookie` are never cacheable, and the
//! cross-site guard's bearer exemption covers only what the layer really reads as a
//! bearer token.

use crate::common;

use axum::Router;
use axum::response::IntoResponse;
use axum::routing;
use chrono::Duration;
use common::*;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tower_auth_session::{
    CookieCache, ManualClock, MemoryStore, SessionHandle, SessionManager, SignInOptions,
};

/// An app whose handlers ask shared caches to keep their answers.
fn cacheable_app(manager: &SessionManager) -> Router {
    async fn sign_in(handle: SessionHandle) -> impl IntoResponse {
        handle.sign_in("alice", SignInOptions::new()).await.unwrap();
        ([(header::CACHE_CONTROL, "public, max-age=3600")], "in")
    }
    async fn page() -> impl IntoResponse {
        ([(header::CACHE_CONTROL, "public, max-age=3600")], "page")
    }
    async fn sign_out(handle: SessionHandle) -> impl IntoResponse {
        handle.sign_out().await.unwrap();
        ([(header::CACHE_CONTROL, "public, max-age=3600")], "out")
    }
    async fn revoke_sessions(handle: SessionHandle) -> impl IntoResponse {
        handle.revoke_all().await.unwrap();
        ([(header::CACHE_CONTROL, "public, max-age=3600")], "revoked")
    }
    Router::new()
        .route("/sign-in", routing::post(sign_in))
        .route("/page", routing::get(page))
        .route("/sign-out", routing::post(sign_out))
        .route("/revoke-sessions", routing::post(revoke_sessions))
        .layer(manager.layer())
}

/// A browser's cookie jar over real `Set-Cookie` headers.
#[derive(Default)]
struct Jar(std::collections::BTreeMap<String, String>);

impl Jar {
    fn absorb(&mut self, reply: &Reply) {
        for line in reply.set_cookies() {
            let pair = line.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if line.contains("Max-Age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn header(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.join("; ")
    }
}

#[tokio::test]
async fn every_response_the_layer_adds_a_set_cookie_to_is_no_store() {
    let clock = ManualClock::new();
    let manager = SessionManager::builder(MemoryStore::new())
        .secret(SECRET)
        .clock(clock.clone())
        .cookie_cache(CookieCache::new().max_age(std::time::Duration::from_secs(60)))
        .build()
        .unwrap();
    let app = cacheable_app(&manager);
    let token = manager.session_cookie_name().to_owned();
    let data = token.replace("session_token", "session_data");
    let mut jar = Jar::default();
    let mut seen = Vec::new();
    let mut step = |what: &'static str, reply: Reply, jar: &mut Jar| {
        assert!(reply.status.is_success(), "{what}: {}", reply.status);
        if !reply.set_cookies().is_empty() {
            assert_eq!(
                reply
                    .headers
                    .get(header::CACHE_CONTROL)
                    .map(|v| v.to_str().unwrap()),
                Some("no-store"),
                "{what}: {:?}",
                reply.set_cookies()
            );
        }
        jar.absorb(&reply);
        seen.push((what, reply.set_cookies()));
        reply
    };

    let reply = send(&app, post("/sign-in", None)).await;
    let reply = step("sign-in", reply, &mut jar);
    assert!(reply.set_cookie(&token).is_some() && reply.set_cookie(&data).is_some());

    // A cache hit: nothing set, the handler's caching stands.
    let reply = send(&app, get("/page", Some(&jar.header()))).await;
    let reply = step("cache hit", reply, &mut jar);
    assert!(reply.set_cookies().is_empty());
    assert_eq!(reply.headers[header::CACHE_CONTROL], "public, max-age=3600");

    // The cache is past its age: the store is read and only `session_data` is re-issued.
    clock.advance(Duration::seconds(61));
    let reply = send(&app, get("/page", Some(&jar.header()))).await;
    let reply = step("cache re-issue", reply, &mut jar);
    assert!(reply.set_cookie(&token).is_none());
    assert!(reply.set_cookie(&data).is_some());

    // The sliding refresh re-sets the token.
    clock.advance(Duration::days(1));
    let reply = send(&app, get("/page", Some(&jar.header()))).await;
    let reply = step("refresh", reply, &mut jar);
    assert!(reply.set_cookie(&token).is_some());

    // A cookie that is not ours (bad MAC) is cleared, with no store call.
    let bad = format!("{token}=k0.AAAA.BBBB");
    let reply = send(&app, get("/page", Some(&bad))).await;
    let reply = step("bad cookie", reply, &mut Jar::default());
    assert!(reply.clears(&token));

    let reply = send(&app, post("/sign-out", Some(&jar.header()))).await;
    let reply = step("sign-out", reply, &mut jar);
    assert!(reply.clears(&token) && reply.clears(&data));

    let reply = send(&app, post("/sign-in", None)).await;
    step("sign-in again", reply, &mut jar);
    let reply = send(&app, post("/revoke-sessions", Some(&jar.header()))).await;
    let reply = step("revoke-sessions", reply, &mut jar);
    assert!(reply.clears(&token));

    // An expired session is cleared.
    let reply = send(&app, post("/sign-in", None)).await;
    step("sign-in for expiry", reply, &mut jar);
    clock.advance(Duration::days(8));
    let reply = send(&app, get("/page", Some(&jar.header()))).await;
    let reply = step("expired", reply, &mut jar);
    assert!(reply.clears(&token));

    assert_eq!(seen.len(), 10, "{seen:?}");
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
    // A value shaped like ours but not signed by our keys exempts nothing either.
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer k0.abc.def"),
    );
    assert!(manager.is_cross_site(&headers));
    // One of our signed tokens is exempt: browsers never attach one by themselves.
    let signed = tower_auth_session::KeyRing::from_secret(SECRET)
        .unwrap()
        .sign_token(
            manager.session_cookie_name(),
            &tower_auth_session::Token::generate(),
        );
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {signed}")).unwrap(),
    );
    assert!(!manager.is_cross_site(&headers));
}
