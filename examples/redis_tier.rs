//! Redis in front of SQLite, with the cookie cache: the Redis tier in under 80 lines.
//!
//! ```text
//! SESSION_SECRET=0123456789abcdef0123456789abcdef REDIS_URL=redis://127.0.0.1:6379 \
//!     cargo run --example redis_tier --features redis
//! ```
//!
//! SQLite is the source of truth; reads ask Redis first (one `GET`) and a valid cookie
//! cache asks nobody. A Redis outage is invisible to users (served from SQLite); a
//! revocation reaches every instance's cookie cache through the same Redis.

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use tower_auth_session::secondary::RedisStorage;
use tower_auth_session::store::SqliteStore;
use tower_auth_session::{
    CookieCache, CrossSiteGuard, CurrentSession, Session, SessionError, SessionHandle,
    SessionManager, SignInOptions,
};

async fn sign_in(_: CrossSiteGuard, session: SessionHandle) -> Result<Json<Session>, SessionError> {
    // ... check the password first ...
    Ok(Json(session.sign_in("alice", SignInOptions::new()).await?))
}

async fn me(CurrentSession(session): CurrentSession) -> Json<Session> {
    Json(session)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis_url = std::env::var("REDIS_URL").unwrap_or("redis://127.0.0.1:6379".into());
    let store = SqliteStore::connect("sqlite:sessions.db").await?;
    // `connect` checks that Redis answers; `build()` would start without it.
    let redis = RedisStorage::builder(redis_url).connect().await?;
    let manager = SessionManager::builder(store)
        .secondary_storage(redis)
        .cookie_cache(CookieCache::new().max_age(Duration::from_secs(300)))
        .secret(std::env::var("SESSION_SECRET")?)
        .build()?;
    // Believe cookie caches only once this instance holds its revocation lease.
    manager.cookie_cache_ready(Duration::from_secs(2)).await;
    let _cleanup = manager.spawn_cleanup(Duration::from_secs(3600));
    let app = Router::new()
        .route("/sign-in", post(sign_in))
        .route("/me", get(me))
        .nest("/api/auth", manager.router()) // get-session, sign-out, list/revoke sessions
        .layer(manager.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service).await?;
    Ok(())
}
