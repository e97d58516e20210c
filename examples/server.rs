//! The demo server: tower-auth-session in a small axum app.
//!
//! ```text
//! cargo run --example server
//! ```
//!
//! Configuration and routes follow `DEMO_SERVER.md` (see the README): `PORT`,
//! `DATABASE_URL` (`sqlite:<path>` — the default, `memory`), `SESSION_SECRET`, the
//! `SESSION_*` lifetimes, `SESSION_COOKIE_SECURE`, `SESSION_TRUSTED_ORIGINS`,
//! `SESSION_TRUSTED_PROXIES`. Sign-in trusts the user id it is given: a real app checks a
//! password or an OAuth callback first.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tower_auth_session::store::SqliteStore;
use tower_auth_session::{
    CurrentSession, MemoryStore, SessionHandle, SessionManager, SessionManagerBuilder,
    SessionStore, SignInOptions,
};

/// Everything read from the environment, checked before anything starts.
struct Config {
    port: u16,
    database_url: String,
    secret: Option<String>,
    expires_in: u64,
    update_age: u64,
    max_lifetime: Option<u64>,
    fresh_age: u64,
    cookie_secure: bool,
    trusted_origins: Vec<String>,
    trusted_proxies: Vec<ipnet::IpNet>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn seconds(name: &str, default: Option<u64>) -> Result<Option<u64>, String> {
    match env(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("{name} must be a whole number of seconds, got {v:?}")),
    }
}

impl Config {
    fn from_env() -> Result<Self, String> {
        let port = match env("PORT") {
            None => 3000,
            Some(v) => v
                .trim()
                .parse::<u16>()
                .map_err(|_| format!("PORT must be a port number, got {v:?}"))?,
        };
        let storage = env("SESSION_STORAGE").unwrap_or_else(|| "database".into());
        let redis_url = env("REDIS_URL");
        match storage.as_str() {
            "database" => {}
            "secondary-only" if redis_url.is_none() => {
                return Err("SESSION_STORAGE=secondary-only needs REDIS_URL".into());
            }
            "secondary-only" => {}
            other => {
                return Err(format!(
                    "SESSION_STORAGE must be `database` or `secondary-only`, got {other:?}"
                ));
            }
        }
        if redis_url.is_some() || storage != "database" {
            eprintln!(
                "warning: REDIS_URL and SESSION_STORAGE are accepted but not used yet by this build; sessions live in DATABASE_URL"
            );
        }
        seconds("SESSION_COOKIE_CACHE_MAX_AGE", Some(300))?;
        let secret = env("SESSION_SECRET");
        if let Some(s) = &secret {
            if s.len() < 32 {
                return Err(format!(
                    "SESSION_SECRET must be at least 32 bytes, got {}",
                    s.len()
                ));
            }
        }
        let cookie_secure = match env("SESSION_COOKIE_SECURE").as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(format!(
                    "SESSION_COOKIE_SECURE must be `true` or `false`, got {other:?}"
                ));
            }
        };
        let trusted_origins = match env("SESSION_TRUSTED_ORIGINS") {
            Some(list) => list
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            None => vec![
                format!("http://localhost:{port}"),
                format!("http://127.0.0.1:{port}"),
            ],
        };
        let trusted_proxies = match env("SESSION_TRUSTED_PROXIES") {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| {
                    p.parse::<ipnet::IpNet>()
                        .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| format!("SESSION_TRUSTED_PROXIES: {p:?} is not a CIDR"))
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Self {
            port,
            database_url: env("DATABASE_URL")
                .unwrap_or_else(|| "sqlite:tower-auth-session-demo.db".into()),
            secret,
            expires_in: seconds("SESSION_EXPIRES_IN", Some(604_800))?.unwrap_or(604_800),
            update_age: seconds("SESSION_UPDATE_AGE", Some(86_400))?.unwrap_or(86_400),
            max_lifetime: seconds("SESSION_MAX_LIFETIME", None)?,
            fresh_age: seconds("SESSION_FRESH_AGE", Some(86_400))?.unwrap_or(86_400),
            cookie_secure,
            trusted_origins,
            trusted_proxies,
        })
    }
}

async fn open_store(url: &str) -> Result<Box<dyn StoreBuilder>, String> {
    if url == "memory" {
        return Ok(Box::new(MemoryStore::new()));
    }
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url)
            .await
            .map_err(|e| format!("DATABASE_URL {url:?}: {e}"))?;
        return Ok(Box::new(store));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err("DATABASE_URL: PostgreSQL support is not in this build yet".into());
    }
    Err(format!(
        "DATABASE_URL must be `sqlite:<path>`, `postgres://…` or `memory`, got {url:?}"
    ))
}

/// A store chosen at run time, turned into a manager builder.
trait StoreBuilder {
    fn builder(self: Box<Self>) -> SessionManagerBuilder;
}

impl<S: SessionStore> StoreBuilder for S {
    fn builder(self: Box<Self>) -> SessionManagerBuilder {
        SessionManager::builder(*self)
    }
}

async fn build_manager(config: &Config) -> Result<SessionManager, String> {
    let store = open_store(&config.database_url).await?;
    let secret = match &config.secret {
        Some(s) => s.as_bytes().to_vec(),
        None => {
            eprintln!(
                "warning: SESSION_SECRET is not set; using a random secret, so sessions will not survive a restart"
            );
            let mut bytes = vec![0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| format!("random secret: {e}"))?;
            bytes
        }
    };
    let mut builder = store
        .builder()
        .secret(secret)
        .expires_in(Duration::from_secs(config.expires_in))
        .update_age(Duration::from_secs(config.update_age))
        .fresh_age(Duration::from_secs(config.fresh_age))
        .secure(config.cookie_secure)
        .trusted_proxies(config.trusted_proxies.clone());
    if let Some(max) = config.max_lifetime {
        builder = builder.max_lifetime(Duration::from_secs(max));
    }
    builder.build().map_err(|e| e.to_string())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignInBody {
    user_id: Option<String>,
    remember_me: Option<bool>,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn sign_in(handle: SessionHandle, body: Result<Json<SignInBody>, JsonRejection>) -> Response {
    let Ok(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, "expected a JSON body with userId");
    };
    let Some(user_id) = body.user_id.filter(|u| !u.trim().is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "userId is required");
    };
    let options = SignInOptions::new().remember_me(body.remember_me.unwrap_or(true));
    match handle.sign_in(user_id, options).await {
        Ok(session) => Json(json!({ "session": session })).into_response(),
        Err(tower_auth_session::SessionError::InvalidUserId) => {
            error(StatusCode::BAD_REQUEST, "userId must be 1-255 bytes")
        }
        Err(e) => {
            tracing::error!(error = %e, "sign-in failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
        }
    }
}

async fn get_session(handle: SessionHandle) -> Response {
    match handle.current() {
        Some(session) => Json(json!({ "session": session })).into_response(),
        None if handle.is_unavailable() => {
            error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
        }
        None => Json(serde_json::Value::Null).into_response(),
    }
}

async fn sign_out(handle: SessionHandle) -> Response {
    match handle.sign_out().await {
        Ok(()) => Json(json!({ "success": true })).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "sign-out failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "session store unavailable")
        }
    }
}

async fn me(CurrentSession(session): CurrentSession) -> Json<serde_json::Value> {
    Json(json!({ "userId": session.user_id, "sessionId": session.id }))
}

async fn index(session: Option<CurrentSession>) -> Html<String> {
    let who = match session {
        Some(CurrentSession(s)) => format!(
            "<p>Signed in as <strong>{}</strong>.</p>\
             <button onclick=\"fetch('/api/auth/sign-out',{{method:'POST'}}).then(()=>location.reload())\">Sign out</button>",
            html_escape(&s.user_id)
        ),
        None => "<p>Not signed in.</p>\
             <form onsubmit=\"event.preventDefault();fetch('/api/auth/sign-in',{method:'POST',headers:{'content-type':'application/json'},body:JSON.stringify({userId:this.user.value})}).then(()=>location.reload())\">\
             <input name=user placeholder=\"user id\" required> <button>Sign in</button></form>"
            .to_owned(),
    };
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>tower-auth-session demo</title>\
         <h1>tower-auth-session demo</h1>{who}"
    ))
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Refuses cross-site state changes: an untrusted `Origin`, or `Sec-Fetch-Site:
/// cross-site`. Requests with neither (non-browser clients) pass.
async fn same_site_only(
    axum::extract::State(trusted): axum::extract::State<std::sync::Arc<Vec<String>>>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let headers = request.headers();
        let origin_ok = headers
            .get(header::ORIGIN)
            .is_none_or(|o| o.to_str().is_ok_and(|o| trusted.iter().any(|t| t == o)));
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        if !origin_ok || cross_site {
            return error(StatusCode::FORBIDDEN, "cross_site_request");
        }
    }
    next.run(request).await
}

async fn no_store(request: axum::extract::Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn app(manager: &SessionManager, trusted_origins: Vec<String>) -> Router {
    let auth = Router::new()
        .route("/sign-in", post(sign_in))
        .route("/get-session", get(get_session))
        .route("/sign-out", post(sign_out))
        .layer(middleware::from_fn(no_store));
    let with_session = Router::new()
        .nest("/api/auth", auth)
        .route("/api/me", get(me))
        .route("/", get(index))
        .layer(middleware::from_fn_with_state(
            std::sync::Arc::new(trusted_origins),
            same_site_only,
        ))
        .layer(manager.layer());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(with_session)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let config = Config::from_env()?;
    let manager = build_manager(&config).await?;
    let app = app(&manager, config.trusted_origins.clone());
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{local}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| e.to_string())
}
