//! Token transports (cookies + bearer, cookies only, bearer only), the `set-auth-token`
//! policy, and how an `Authorization` value that is not ours is treated: ignored for the
//! session, and no exemption from the cross-site guard.

use crate::common;

use axum::Router;
use axum::body::Body;
use chrono::Duration;
use common::*;
use http::{Request, StatusCode, header};
use tower_auth_session::{
    AuthTokenHeader, ConfigError, CookieCache, ManualClock, MemoryStore, SessionManager,
    SessionManagerBuilder, TokenTransport,
};

/// A gateway's own JWT, forwarded to the app.
const FOREIGN_JWT: &str = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJnYXRld2F5In0.c2lnbmF0dXJl";

fn build_manager(
    configure: impl FnOnce(SessionManagerBuilder) -> SessionManagerBuilder,
) -> (SessionManager, ManualClock) {
    let clock = ManualClock::new();
    let builder = SessionManager::builder(MemoryStore::new())
        .secret(SECRET)
        .clock(clock.clone())
        .trusted_origins(["https://app.example"]);
    (configure(builder).build().unwrap(), clock)
}

/// The common test app plus the crate's endpoints (their POSTs carry `CrossSiteGuard`).
fn app_with_router(manager: &SessionManager) -> Router {
    app(manager).merge(
        Router::new()
            .nest("/api/auth", manager.router())
            .layer(manager.layer()),
    )
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn a_foreign_bearer_token_beside_a_valid_cookie_resolves_the_cookies_session() {
    let (manager, _) = build_manager(|b| b);
    let app = app_with_router(&manager);
    let alice = sign_in(&app, &manager, "alice").await;
    let me = send(
        &app,
        request(
            "GET",
            "/me",
            &[("cookie", &alice), ("authorization", FOREIGN_JWT)],
        ),
    )
    .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.json()["userId"], "alice");
    assert!(me.set_cookies().is_empty(), "the cookie is not cleared");
}

#[tokio::test]
async fn a_foreign_bearer_token_does_not_exempt_a_cookie_request_from_the_cross_site_guard() {
    let (manager, _) = build_manager(|b| b);
    let app = app_with_router(&manager);
    let alice = sign_in(&app, &manager, "alice").await;
    let evil = [
        ("cookie", alice.as_str()),
        ("authorization", FOREIGN_JWT),
        ("origin", "https://evil.example"),
    ];
    let reply = send(&app, request("POST", "/api/auth/sign-out", &evil)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.body);
    assert_eq!(reply.json()["error"], "cross_site_request");
    // The session survived the attempt.
    let me = send(&app, get("/me", Some(&alice))).await;
    assert_eq!(me.status, StatusCode::OK);

    // Our own bearer token is exempt: a browser never attaches it by itself.
    let signed_in = send(&app, post("/sign-in?user=bob", None)).await;
    let bearer = format!(
        "Bearer {}",
        signed_in.headers["set-auth-token"].to_str().unwrap()
    );
    let ours = [
        ("authorization", bearer.as_str()),
        ("origin", "https://evil.example"),
    ];
    let reply = send(&app, request("POST", "/api/auth/sign-out", &ours)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test]
async fn bearer_only_mode_never_sets_a_cookie() {
    let (manager, clock) = build_manager(|b| {
        b.token_transport(TokenTransport::BearerOnly)
            .expires_in(std::time::Duration::from_secs(7 * 24 * 3600))
            .update_age(std::time::Duration::from_secs(24 * 3600))
    });
    let app = app_with_router(&manager);
    let mut replies = Vec::new();

    let signed_in = send(&app, post("/sign-in?user=alice", None)).await;
    assert_eq!(signed_in.status, StatusCode::OK);
    let token = signed_in.headers["set-auth-token"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(signed_in.headers[header::CACHE_CONTROL], "no-store");
    let bearer = format!("Bearer {token}");
    let me = send(&app, request("GET", "/me", &[("authorization", &bearer)])).await;
    assert_eq!(me.json()["userId"], "alice");
    replies.push(("sign-in", signed_in));
    replies.push(("read", me));

    // A refresh slides the session without any cookie to re-set.
    clock.advance(Duration::days(2));
    let refreshed = send(
        &app,
        request(
            "GET",
            "/api/auth/get-session",
            &[("authorization", &bearer)],
        ),
    )
    .await;
    assert_eq!(refreshed.status, StatusCode::OK);
    let expires_at: chrono::DateTime<chrono::Utc> = refreshed.json()["session"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        expires_at,
        clock_now(&clock) + Duration::days(7),
        "refreshed"
    );
    replies.push(("refresh", refreshed));

    // A cookie is not read at all, so a forged one is not "cleared" either.
    let cookie = format!("{}=k0.forged.cookie", manager.session_cookie_name());
    let with_cookie = send(&app, get("/me", Some(&cookie))).await;
    assert_eq!(with_cookie.status, StatusCode::UNAUTHORIZED);
    replies.push(("forged cookie", with_cookie));

    let signed_out = send(
        &app,
        request("POST", "/sign-out", &[("authorization", &bearer)]),
    )
    .await;
    assert_eq!(signed_out.status, StatusCode::OK);
    replies.push(("sign-out", signed_out));

    let rejected = send(&app, request("GET", "/me", &[("authorization", &bearer)])).await;
    assert_eq!(rejected.status, StatusCode::UNAUTHORIZED);
    replies.push(("rejection", rejected));

    for (step, reply) in &replies {
        assert!(
            reply.set_cookies().is_empty(),
            "{step} set cookies: {:?}",
            reply.set_cookies()
        );
    }
}

fn clock_now(clock: &ManualClock) -> chrono::DateTime<chrono::Utc> {
    tower_auth_session::Clock::now(clock)
}

#[tokio::test]
async fn cookies_only_mode_never_reads_a_bearer_token() {
    let (manager, _) = build_manager(|b| b.token_transport(TokenTransport::CookiesOnly));
    let app = app_with_router(&manager);
    let signed_in = send(&app, post("/sign-in?user=alice", None)).await;
    let token = signed_in.headers["set-auth-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let bearer = format!("Bearer {token}");
    let me = send(&app, request("GET", "/me", &[("authorization", &bearer)])).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    // Nor does it exempt a request from the cross-site guard.
    let evil = [
        ("authorization", bearer.as_str()),
        ("origin", "https://evil.example"),
    ];
    let reply = send(&app, request("POST", "/api/auth/sign-out", &evil)).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn set_auth_token_follows_the_configured_policy() {
    let (manager, _) = build_manager(|b| b.auth_token_header(AuthTokenHeader::Never));
    let app = app_with_router(&manager);
    let reply = send(&app, post("/sign-in?user=alice", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers.get("set-auth-token").is_none());
    assert!(reply.set_cookie(manager.session_cookie_name()).is_some());

    let (manager, _) = build_manager(|b| b.auth_token_header(AuthTokenHeader::OnRequest));
    let app = app_with_router(&manager);
    let reply = send(&app, post("/sign-in?user=alice", None)).await;
    assert!(
        reply.headers.get("set-auth-token").is_none(),
        "not asked for"
    );
    let reply = send(
        &app,
        request(
            "POST",
            "/sign-in?user=alice",
            &[("x-want-auth-token", "true")],
        ),
    )
    .await;
    let token = reply.headers["set-auth-token"].to_str().unwrap().to_owned();
    // A client that already uses a bearer token gets the next one the same way.
    let bearer = format!("Bearer {token}");
    let reply = send(
        &app,
        request("POST", "/sign-in?user=bob", &[("authorization", &bearer)]),
    )
    .await;
    assert!(reply.headers.get("set-auth-token").is_some());
}

#[test]
fn bearer_only_mode_refuses_options_that_need_cookies_or_leave_clients_without_a_token() {
    let build = |configure: fn(SessionManagerBuilder) -> SessionManagerBuilder| {
        configure(
            SessionManager::builder(MemoryStore::new())
                .secret(SECRET)
                .token_transport(TokenTransport::BearerOnly),
        )
        .build()
    };
    let option = |result: Result<SessionManager, ConfigError>| match result {
        Err(ConfigError::Invalid { option, .. }) => option,
        other => panic!("expected a configuration error, got {other:?}"),
    };
    assert_eq!(
        option(build(|b| b.auth_token_header(AuthTokenHeader::Never))),
        "auth_token_header"
    );
    assert_eq!(
        option(build(|b| b.cookie_cache(CookieCache::new()))),
        "cookie_cache"
    );
    assert!(build(|b| b).is_ok());
}
