//! A Rust API beside a Better Auth app: the same browser's `session_token` (and cookie
//! cache) is accepted here, and a sign-out here ends the session where Better Auth looks.
//!
//! `BETTER_AUTH_SECRET=… DATABASE_URL=postgres://… REDIS_URL=redis://… \
//!  cargo run --example better_auth_backend --features better-auth,postgres,redis`
//! (the app's settings: its secret, its tables, its Redis with the official adapter's
//! `better-auth:` prefix, cookie cache `compact`).
use axum::{Json, Router, extract::State, http::HeaderMap, http::StatusCode, routing};
use serde_json::{Value, json};
use tower_auth_session::better_auth::{
    BetterAuthConfig, BetterAuthPostgres, BetterAuthRedis, BetterAuthStorage, CacheStrategy,
    first_cookie, gather_cache,
};

/// The session the request's Better Auth cookies prove, confirmed against storage.
async fn current(
    storage: &BetterAuthStorage,
    headers: &HeaderMap,
) -> Option<(String, String, String)> {
    let config = storage.config();
    let names = config.cookie_names();
    // The signature is checked before any I/O.
    let token = config
        .signed_cookie()
        .verify(first_cookie(headers, &names.session_token)?)?;
    let now = chrono::Utc::now();
    // A valid cache is only a hint unless `trust_cookie_cache`: storage still decides.
    let cached = config
        .cookie_cache_codec()
        .zip(gather_cache(headers, &names.session_data));
    if let Some(hit) = cached.and_then(|(codec, value)| codec.read(&value, &token, now)) {
        if config.trust_cookie_cache {
            return Some((hit.user.id, hit.session.id, token));
        }
    }
    let found = storage.find(&token, now).await.ok()??;
    Some((found.user.id, found.session.id, token))
}

async fn me(
    State(storage): State<BetterAuthStorage>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    match current(&storage, &headers).await {
        Some((user, session, _)) => (
            StatusCode::OK,
            Json(json!({"userId": user, "sessionId": session})),
        ),
        None => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "unauthenticated"})),
        ),
    }
}

async fn sign_out(State(storage): State<BetterAuthStorage>, headers: HeaderMap) -> StatusCode {
    if let Some((_, _, token)) = current(&storage, &headers).await {
        // Rows and Redis keys both: Better Auth's next read finds nothing.
        if storage.revoke(&token, chrono::Utc::now()).await.is_err() {
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    StatusCode::OK
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |name: &str| std::env::var(name).map_err(|_| format!("{name} is required"));
    let mut config = BetterAuthConfig::new(env("BETTER_AUTH_SECRET")?);
    config.cookie_cache = Some(CacheStrategy::Compact);
    config.secondary_storage = true;
    let pool = tower_auth_session::sqlx::PgPool::connect(&env("DATABASE_URL")?).await?;
    let postgres = BetterAuthPostgres::new(pool, None, false);
    let redis =
        BetterAuthRedis::connect(&env("REDIS_URL")?, &config.redis_prefix, config.expires_in)
            .await?;
    let storage = BetterAuthStorage::new(config, Some(postgres), Some(redis))?;
    let app = Router::new()
        .route("/api/me", routing::get(me))
        .route("/api/sign-out", routing::post(sign_out))
        .with_state(storage);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:4000").await?;
    println!("listening on http://127.0.0.1:4000");
    axum::serve(listener, app).await?;
    Ok(())
}
