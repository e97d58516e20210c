//! Sessions in PostgreSQL, in under 80 lines.
//!
//! ```text
//! SESSION_SECRET=0123456789abcdef0123456789abcdef \
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --example postgres --features postgres
//! ```
//!
//! The schema is created on connect (in its own schema with
//! `PostgresStore::builder().schema("auth")?`). A database outage answers 503 within the
//! store's timeout (2 s) and never signs anyone out; service resumes by itself when the
//! database is back.

use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use tower_auth_session::store::PostgresStore;
use tower_auth_session::{
    CrossSiteGuard, CurrentSession, Session, SessionError, SessionHandle, SessionManager,
    SignInOptions,
};

async fn sign_in(_: CrossSiteGuard, session: SessionHandle) -> Result<Json<Session>, SessionError> {
    // ... check the password first ...
    Ok(Json(session.sign_in("alice", SignInOptions::new()).await?))
}

async fn me(CurrentSession(session): CurrentSession) -> Json<Session> {
    Json(session)
}

async fn sign_out(_: CrossSiteGuard, session: SessionHandle) -> Result<&'static str, SessionError> {
    session.sign_out().await?;
    Ok("signed out")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    let store = PostgresStore::builder()
        .timeout(Duration::from_secs(2))
        .connect(&url)
        .await?;
    let manager = SessionManager::builder(store)
        .secret(std::env::var("SESSION_SECRET")?)
        .build()?;
    let _cleanup = manager.spawn_cleanup(Duration::from_secs(3600));
    let app = Router::new()
        .route("/sign-in", post(sign_in))
        .route("/me", get(me))
        .route("/sign-out", post(sign_out))
        .layer(manager.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service).await?;
    Ok(())
}
