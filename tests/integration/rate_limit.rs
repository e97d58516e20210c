//! Per-client-IP rate limits (feature `rate-limit`): the 4th sign-in in a 3-per-10 s
//! budget is 429 with `Retry-After` and touches no cookie, another IP is not affected, a
//! forged `X-Forwarded-For` from an untrusted peer buys no fresh budget, and instances
//! over one Redis share the budget.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use common::*;
use http::{Request, StatusCode, header};
use tower_auth_session::{Budget, MemoryStore, RateLimit, RateLimitLayer, SessionManager};

fn manager() -> SessionManager {
    SessionManager::builder(MemoryStore::new())
        .secret(SECRET)
        .trusted_proxies(["10.0.0.1/32".parse().unwrap()])
        .build()
        .unwrap()
}

fn three_per_ten_seconds() -> RateLimit {
    RateLimit::new().path("/sign-in", Budget::new(3, Duration::from_secs(10)))
}

/// `common::app` (sign-in, `/me`, sign-out in the session layer), the limiter outside it.
fn app(manager: &SessionManager, limits: RateLimitLayer) -> Router {
    common::app(manager).layer(limits)
}

/// A request from `peer`, with an optional `X-Forwarded-For`.
fn from(peer: &str, method: &str, uri: &str, forwarded: Option<&str>) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(chain) = forwarded {
        request = request.header("x-forwarded-for", chain);
    }
    let mut request = request.body(Body::empty()).unwrap();
    let addr: SocketAddr = format!("{peer}:40000").parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(addr));
    request
}

async fn sign_ins(app: &Router, peer: &str, forwarded: Option<&str>, n: usize) -> Vec<Reply> {
    let mut replies = Vec::new();
    for _ in 0..n {
        replies.push(send(app, from(peer, "POST", "/sign-in", forwarded)).await);
    }
    replies
}

fn assert_limited(reply: &Reply) {
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        reply.body
    );
    let retry: u64 = reply.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    assert_eq!(reply.headers["x-retry-after"], retry.to_string().as_str());
    assert_eq!(reply.json()["code"], "TOO_MANY_REQUESTS");
    assert!(reply.set_cookies().is_empty(), "{:?}", reply.set_cookies());
}

#[tokio::test]
async fn the_fourth_sign_in_from_one_ip_is_429_and_another_ip_is_not() {
    let manager = manager();
    let app = app(&manager, manager.rate_limit_layer(three_per_ten_seconds()));
    let replies = sign_ins(&app, "192.0.2.1", None, 4).await;
    for reply in &replies[..3] {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_limited(&replies[3]);
    let other = sign_ins(&app, "192.0.2.2", None, 1).await;
    assert_eq!(
        other[0].status,
        StatusCode::OK,
        "another IP has its own budget"
    );
    // The limited client's session still works on routes the rule does not count.
    let cookie = replies[2]
        .cookie_value(manager.session_cookie_name())
        .map(|value| format!("{}={value}", manager.session_cookie_name()))
        .unwrap();
    let mut me = from("192.0.2.1", "GET", "/me", None);
    me.headers_mut()
        .insert(header::COOKIE, cookie.parse().unwrap());
    assert_eq!(send(&app, me).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_forwarded_for_header_from_an_untrusted_peer_buys_no_fresh_budget() {
    let manager = manager();
    let app = app(&manager, manager.rate_limit_layer(three_per_ten_seconds()));
    let mut replies = Vec::new();
    for hop in [
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
    ] {
        replies.extend(sign_ins(&app, "192.0.2.7", Some(hop), 1).await);
    }
    assert_limited(&replies[3]);
    // Through the trusted proxy, the forwarded address is the client: each its own.
    for hop in [
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "198.51.100.4",
    ] {
        let reply = &sign_ins(&app, "10.0.0.1", Some(hop), 1).await[0];
        assert_eq!(reply.status, StatusCode::OK, "{hop}: {}", reply.body);
    }
}

#[tokio::test]
async fn ipv6_clients_share_a_budget_per_64() {
    let manager = manager();
    let app = app(&manager, manager.rate_limit_layer(three_per_ten_seconds()));
    let mut replies = Vec::new();
    for peer in [
        "[2001:db8:5::1]",
        "[2001:db8:5::2]",
        "[2001:db8:5::3]",
        "[2001:db8:5::4]",
    ] {
        replies.extend(sign_ins(&app, peer, None, 1).await);
    }
    assert_limited(&replies[3]);
    let elsewhere = sign_ins(&app, "[2001:db8:6::1]", None, 1).await;
    assert_eq!(elsewhere[0].status, StatusCode::OK);
}

#[tokio::test]
async fn inside_the_session_layer_a_429_sets_no_cookie() {
    let manager = manager();
    let router = manager.rate_limited_router(Budget::new(1, Duration::from_secs(10)));
    let app = Router::new()
        .nest("/api/auth", router)
        .layer(manager.layer());
    // A tampered cookie: the session layer would clear it on any other answer.
    let bad = format!("{}=k0.AAAA.BBBB", manager.session_cookie_name());
    let request = |cookie: &str| {
        let mut request = from("192.0.2.9", "GET", "/api/auth/get-session", None);
        request
            .headers_mut()
            .insert(header::COOKIE, cookie.parse().unwrap());
        request
    };
    let first = send(&app, request(&bad)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(
        first.clears(manager.session_cookie_name()),
        "{:?}",
        first.set_cookies()
    );
    let second = send(&app, request(&bad)).await;
    assert_limited(&second);
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn two_instances_over_one_redis_share_the_budget() {
    use tower_auth_session::secondary::RedisStorage;
    let Some(url) = service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let prefix = format!("{}:", unique_name("tas_rl"));
    let instance = || {
        let manager = manager();
        let redis = RedisStorage::builder(&url)
            .key_prefix(&prefix)
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let layer = manager.rate_limit_layer(three_per_ten_seconds().shared(redis));
        app(&manager, layer)
    };
    let (a, b) = (instance(), instance());
    let on_a = sign_ins(&a, "192.0.2.20", None, 2).await;
    let on_b = sign_ins(&b, "192.0.2.20", None, 1).await;
    for reply in on_a.iter().chain(&on_b) {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_limited(&sign_ins(&a, "192.0.2.20", None, 1).await[0]);
    assert_limited(&sign_ins(&b, "192.0.2.20", None, 1).await[0]);
    assert_eq!(
        sign_ins(&b, "192.0.2.21", None, 1).await[0].status,
        StatusCode::OK
    );
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn with_redis_unreachable_each_instance_counts_for_itself() {
    use tower_auth_session::secondary::RedisStorage;
    // Nothing listens on port 1: every Redis call fails at once.
    let redis = RedisStorage::builder("redis://127.0.0.1:1")
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let manager = manager();
    let app = app(
        &manager,
        manager.rate_limit_layer(three_per_ten_seconds().shared(redis)),
    );
    let replies = sign_ins(&app, "192.0.2.30", None, 4).await;
    for reply in &replies[..3] {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_limited(&replies[3]);
}
