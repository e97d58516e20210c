use std::net::SocketAddr;

use axum::{
    Router,
    routing::{get, post},
};
use tower_auth_session::{
    CrossSiteGuard, CurrentSession, MemoryStore, SessionError, SessionHandle, SessionManager,
    SignInOptions,
};

// `CrossSiteGuard` first: a POST from a site you do not trust gets 403 before anything runs.
async fn sign_in(_: CrossSiteGuard, session: SessionHandle) -> Result<&'static str, SessionError> {
    // ... verify the password or the OAuth callback first, then:
    session.sign_in("alice", SignInOptions::new()).await?; // store down: 503, never a 200
    Ok("signed in")
}

async fn me(CurrentSession(session): CurrentSession) -> String {
    session.user_id // nobody signed in: 401 {"error":"unauthenticated"}
}

pub fn app(manager: &SessionManager) -> Router {
    Router::new()
        .route("/sign-in", post(sign_in))
        .route("/me", get(me))
        .layer(manager.layer())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Sessions live in memory here; `store::SqliteStore::connect("sqlite:sessions.db")`
    // or `store::PostgresStore::connect(url)` keep them across restarts.
    let manager = SessionManager::builder(MemoryStore::new())
        .secret(std::env::var("SESSION_SECRET")?) // at least 32 bytes
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    // Connect info lets sessions record the client's IP address.
    let service = app(&manager).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service).await?;
    Ok(())
}
