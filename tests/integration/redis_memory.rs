//! Issue 18, item 4: what a session costs in Redis, measured with `INFO memory` on a
//! `redis-server` of the test's own (so other tests' keys do not count), in both modes.
//!
//! 4,000 sign-ins through the layer, 4 per user, no app fields; `used_memory` before and
//! after, divided. The primary store in front of Redis is a `MemoryStore`: Redis holds
//! the same keys whichever store is in front (the issue measured 655 B in front of
//! SQLite, 692 B in Redis-only mode, black-box).
//!
//! The figure depends on the user agent (it is stored in the value), so both a short one
//! (`curl/8.5.0`) and a browser's are measured and printed. The bound asserted is today's
//! layout's; the target (400 B) needs the layout described in docs/DEPLOYING.md
//! ("Redis memory per session") and is not met yet.
#![cfg(feature = "redis")]

use axum::body::Body;
use http::StatusCode;
use tower_auth_session::secondary::RedisStorage;
use tower_auth_session::{MemoryStore, SessionManager};

use crate::common::{app, send};
use crate::redis_support::RedisServer;

const SESSIONS: usize = 4_000;
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                       Chrome/120.0.0.0 Safari/537.36";
/// Today's layout with a short user agent, with room for allocator noise: 630 B at
/// 4,000 sessions on Redis 7.0 (jemalloc) when this was written.
const TODAY_SHORT_AGENT_BOUND: usize = 700;

fn used_memory(server: &RedisServer) -> usize {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(&mut server.connection())
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("used_memory in INFO memory")
}

/// Bytes of Redis per session after `SESSIONS` sign-ins with `agent`.
async fn bytes_per_session(redis_only: bool, agent: &str) -> Option<usize> {
    let server = RedisServer::start()?;
    let redis = RedisStorage::builder(server.url()).build().unwrap();
    let builder = if redis_only {
        SessionManager::builder(redis)
    } else {
        SessionManager::builder(MemoryStore::new()).secondary_storage(redis)
    };
    let manager = builder.secret([9u8; 32]).build().unwrap();
    let app = app(&manager);
    // One sign-in first, so the connection, the scripts and the server's own buffers are
    // in place before the baseline.
    let sign_in = |user: String| {
        http::Request::post(format!("/sign-in?user={user}"))
            .header(http::header::USER_AGENT, agent)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&app, sign_in("warm-up".into())).await.status,
        StatusCode::OK
    );
    let before = used_memory(&server);
    for i in 0..SESSIONS {
        let reply = send(&app, sign_in(format!("user-{}", i / 4))).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    let after = used_memory(&server);
    let keys: usize = redis::cmd("DBSIZE")
        .query(&mut server.connection())
        .unwrap();
    let per_session = (after - before) / SESSIONS;
    println!(
        "redis_memory {} agent {:?}: {per_session} B per session ({keys} keys for {} sessions)",
        if redis_only { "redis-only" } else { "tier" },
        agent.len(),
        SESSIONS + 1
    );
    Some(per_session)
}

#[tokio::test]
async fn redis_bytes_per_session_in_front_of_a_store() {
    let Some(short) = bytes_per_session(false, "curl/8.5.0").await else {
        return;
    };
    let browser = bytes_per_session(false, BROWSER).await.unwrap();
    assert!(short <= TODAY_SHORT_AGENT_BOUND, "{short} B per session");
    assert!(
        browser > short,
        "the user agent is stored: {browser} vs {short}"
    );
}

#[tokio::test]
async fn redis_bytes_per_session_as_the_only_store() {
    let Some(short) = bytes_per_session(true, "curl/8.5.0").await else {
        return;
    };
    let browser = bytes_per_session(true, BROWSER).await.unwrap();
    assert!(short <= TODAY_SHORT_AGENT_BOUND, "{short} B per session");
    assert!(
        browser > short,
        "the user agent is stored: {browser} vs {short}"
    );
}
