//! The demo server: tower-auth-session in a small axum app.
//!
//! ```text
//! cargo run --example server
//! ```
//!
//! Configuration and routes follow `DEMO_SERVER.md` (see the README): `PORT`,
//! `DATABASE_URL` (`sqlite:<path>` — the default, `memory`), `SESSION_SECRET`, the
//! `SESSION_*` lifetimes, `SESSION_COOKIE_SECURE`, `SESSION_TRUSTED_ORIGINS`,
//! `SESSION_TRUSTED_PROXIES`, `SESSION_RATE_LIMIT`. Sign-in trusts the user id it is given: a real app checks a
//! password or an OAuth callback first.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
#[cfg(feature = "redis")]
use tower_auth_session::secondary::RedisStorage;
use tower_auth_session::store::SqliteStore;
use tower_auth_session::{
    Budget, ConfigError, CookieCache, CrossSiteGuard, CurrentSession, FieldAccess, FieldPolicy,
    Impersonation, MemoryStore, RateLimit, RateLimitLayer, Session, SessionHandle, SessionManager,
    SessionStore, SignInOptions, html_page_headers, trusted_cors,
};

/// Everything read from the environment, checked before anything starts.
struct Config {
    port: u16,
    database_url: String,
    // Read only when the example is built with `--features redis`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    redis_url: Option<String>,
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    secondary_only: bool,
    cookie_cache_max_age: u64,
    secret: Option<String>,
    expires_in: u64,
    update_age: u64,
    max_lifetime: Option<u64>,
    fresh_age: u64,
    cookie_secure: bool,
    /// `None`: the server's own `http://localhost:$PORT` and `http://127.0.0.1:$PORT`,
    /// filled in once the port is bound (`PORT=0` picks one).
    trusted_origins: Option<Vec<String>>,
    trusted_proxies: Vec<ipnet::IpNet>,
    /// `SESSION_RATE_LIMIT`: sign-ins per client IP and window; `None` when `off`.
    rate_limit: Option<Budget>,
    /// `SESSION_MULTI`: accounts per browser (0: one, as usual).
    multi: usize,
    /// `SESSION_IMPERSONATION_EXPIRES_IN`, seconds.
    impersonation_expires_in: u64,
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
        let secondary_only = match storage.as_str() {
            "database" => false,
            "secondary-only" if redis_url.is_none() => {
                return Err("SESSION_STORAGE=secondary-only needs REDIS_URL".into());
            }
            "secondary-only" => true,
            other => {
                return Err(format!(
                    "SESSION_STORAGE must be `database` or `secondary-only`, got {other:?}"
                ));
            }
        };
        if redis_url.is_some() && !cfg!(feature = "redis") {
            return Err("REDIS_URL is set: run the example with `--features redis`".into());
        }
        let cookie_cache_max_age =
            seconds("SESSION_COOKIE_CACHE_MAX_AGE", Some(300))?.unwrap_or(300);
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
        let trusted_origins = env("SESSION_TRUSTED_ORIGINS").map(|list| {
            list.split(',')
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect()
        });
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
        let rate_limit = match env("SESSION_RATE_LIMIT").as_deref().map(str::trim) {
            None | Some("off") => None,
            Some(text) => {
                let parsed = text.split_once('/').and_then(|(max, window)| {
                    let max = max.trim().parse::<u32>().ok().filter(|m| *m > 0)?;
                    let window = window.trim().parse::<u64>().ok().filter(|w| *w > 0)?;
                    Some(Budget::new(max, Duration::from_secs(window)))
                });
                Some(parsed.ok_or_else(|| {
                    format!("SESSION_RATE_LIMIT must be `off` or `<max>/<seconds>` (e.g. `3/10`), got {text:?}")
                })?)
            }
        };
        let multi = match env("SESSION_MULTI") {
            None => 0,
            Some(v) => v.trim().parse::<usize>().map_err(|_| {
                format!("SESSION_MULTI must be a whole number of accounts, got {v:?}")
            })?,
        };
        let impersonation_expires_in =
            seconds("SESSION_IMPERSONATION_EXPIRES_IN", Some(3600))?.unwrap_or(3600);
        if impersonation_expires_in == 0 {
            return Err("SESSION_IMPERSONATION_EXPIRES_IN must be at least 1 second".into());
        }
        Ok(Self {
            port,
            rate_limit,
            multi,
            impersonation_expires_in,
            redis_url,
            secondary_only,
            cookie_cache_max_age,
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

async fn open_store(url: &str) -> Result<Arc<dyn SessionStore>, String> {
    if url == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(url)
            .await
            .map_err(|e| format!("DATABASE_URL {:?}: {}", redact(url), with_causes(&e)))?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        {
            let store = tower_auth_session::store::PostgresStore::connect(url)
                .await
                .map_err(|e| format!("DATABASE_URL (PostgreSQL): {}", with_causes(&e)))?;
            return Ok(Arc::new(store));
        }
        #[cfg(not(feature = "postgres"))]
        return Err(
            "DATABASE_URL is a PostgreSQL URL: run the example with `--features postgres`".into(),
        );
    }
    Err(format!(
        "DATABASE_URL must be `sqlite:<path>`, `postgres://…` or `memory`, got {:?}",
        redact(url)
    ))
}

/// `url` (or a comma-separated list of URLs) fit to print: a password in the user info
/// becomes `***` (`redis://user:***@host`), and so does a `password=`/`pass=` query value.
fn redact(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let prefix = if scheme.is_empty() {
        String::new()
    } else {
        format!("{scheme}://")
    };
    // The last `@` ends the user info: a password with an unescaped `@` is still hidden
    // (over-redacting a path that holds one is the safe side).
    let (userinfo, after) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => (Some(userinfo), after),
        None => (None, rest),
    };
    let userinfo = userinfo.map(|info| match info.split_once(':') {
        Some((user, _)) => format!("{user}:***@"),
        None => format!("{info}@"),
    });
    let after = match after.split_once('?') {
        None => after.to_owned(),
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _))
                        if ["password", "pass"].contains(&key.to_ascii_lowercase().as_str()) =>
                    {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
    };
    format!("{prefix}{}{after}", userinfo.unwrap_or_default())
}

/// `text` with the passwords of `REDIS_URL` and `DATABASE_URL` replaced by `***`: a last
/// guard for driver messages that might quote a URL.
fn scrub(text: &str) -> String {
    let mut text = text.to_owned();
    for name in ["REDIS_URL", "DATABASE_URL"] {
        let Some(value) = env(name) else { continue };
        for url in value.split(',') {
            let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
            let secrets = rest
                .rsplit_once('@')
                .and_then(|(info, _)| info.split_once(':'))
                .map(|(_, password)| password)
                .into_iter()
                .chain(rest.split(['?', '&']).filter_map(|pair| {
                    let (key, value) = pair.split_once('=')?;
                    ["password", "pass"]
                        .contains(&key.to_ascii_lowercase().as_str())
                        .then_some(value)
                }));
            for secret in secrets.filter(|s| !s.is_empty()) {
                text = text.replace(secret, "***");
            }
        }
    }
    text
}

/// An error and its causes on one line (each error's `Display` says only its own part).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    line
}

/// The source of truth: the database, or Redis alone (`SESSION_STORAGE=secondary-only`).
async fn open_primary(config: &Config) -> Result<Arc<dyn SessionStore>, String> {
    #[cfg(feature = "redis")]
    if config.secondary_only {
        let url = config.redis_url.as_deref().unwrap_or_default();
        // Redis is the only store here: unreachable at start is a start-up error.
        let redis = redis_builder(url).connect().await.map_err(|e| {
            cluster_node_refused(url, &e)
                .unwrap_or_else(|| format!("REDIS_URL {:?}: {}", redact(url), with_causes(&e)))
        })?;
        return Ok(Arc::new(redis));
    }
    open_store(&config.database_url).await
}

/// `REDIS_URL` as DEMO_SERVER.md reads it: one URL is one Redis server; a comma-separated
/// list of URLs is a Redis Cluster, given by its seed nodes (`redis+cluster://h1:p1,h2:p2`
/// works too).
#[cfg(feature = "redis")]
fn redis_builder(url: &str) -> tower_auth_session::secondary::RedisStorageBuilder {
    let nodes: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    if nodes.len() > 1 {
        RedisStorage::cluster(nodes)
    } else {
        RedisStorage::builder(url.trim())
    }
}

/// The start-up line when one URL points at a node of a Redis Cluster (the library
/// refuses to use a cluster node as one server).
#[cfg(feature = "redis")]
fn cluster_node_refused(url: &str, error: &tower_auth_session::StoreError) -> Option<String> {
    with_causes(error).contains("cluster_enabled:1").then(|| {
        format!(
            "REDIS_URL {:?} is a node of a Redis Cluster: list the cluster's nodes, comma-separated \
             (REDIS_URL=redis://host1:port1,redis://host2:port2,...)",
            redact(url)
        )
    })
}

/// Redis in front of the database (`REDIS_URL` with `SESSION_STORAGE=database`).
#[cfg(feature = "redis")]
async fn open_secondary(config: &Config) -> Result<Option<RedisStorage>, String> {
    let Some(url) = config
        .redis_url
        .as_deref()
        .filter(|_| !config.secondary_only)
    else {
        return Ok(None);
    };
    match redis_builder(url).connect().await {
        Ok(redis) => Ok(Some(redis)),
        // A misconfiguration, not an outage: waiting would serve from the database for ever.
        Err(e) if cluster_node_refused(url, &e).is_some() => {
            Err(cluster_node_refused(url, &e).unwrap_or_default())
        }
        // The database is the source of truth: start anyway and let the breaker find Redis.
        Err(e) => {
            eprintln!(
                "{}",
                scrub(&format!(
                    "warning: REDIS_URL {:?} does not answer yet ({}); serving from the database until it does",
                    redact(url),
                    with_causes(&e)
                ))
            );
            redis_builder(url)
                .build()
                .map(Some)
                .map_err(|e| format!("REDIS_URL: {e}"))
        }
    }
}

async fn build_manager(config: &Config, port: u16) -> Result<SessionManager, String> {
    let store = open_primary(config).await?;
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
    let mut builder = SessionManager::builder(store)
        .secret(secret)
        .expires_in(Duration::from_secs(config.expires_in))
        .update_age(Duration::from_secs(config.update_age))
        .fresh_age(Duration::from_secs(config.fresh_age))
        .secure(config.cookie_secure)
        .trusted_proxies(config.trusted_proxies.clone())
        .trusted_origins(config.trusted_origins.clone().unwrap_or_else(|| {
            vec![
                format!("http://localhost:{port}"),
                format!("http://127.0.0.1:{port}"),
            ]
        }));
    if let Some(max) = config.max_lifetime {
        builder = builder.max_lifetime(Duration::from_secs(max));
    }
    // 0 turns the cache off. With Redis configured below, cache revocations reach every
    // instance; without it, this demo is one process and the in-process set suffices.
    let max_age = Duration::from_secs(config.cookie_cache_max_age);
    builder = builder.cookie_cache(CookieCache::new().max_age(max_age));
    #[cfg(feature = "redis")]
    if let Some(redis) = open_secondary(config).await? {
        builder = builder.secondary_storage(redis);
    }
    // A client may write any app field but these: `impersonatedBy` is the server's mark on
    // an impersonation session, and `role` decides what the session may do (no admin
    // check exists to open it to admins, so no request writes it).
    builder = builder.field_policy(
        FieldPolicy::new()
            .undeclared(FieldAccess::Client)
            .server_only("role")
            .server_only("impersonatedBy"),
    );
    // Admins are sessions with `role: admin` (the demo trusts sign-in fields); they may
    // impersonate anyone who is not an admin too (a user with a live admin session).
    let this_manager: Arc<std::sync::OnceLock<SessionManager>> = Arc::default();
    let manager_for_check = this_manager.clone();
    let impersonation = Impersonation::new(move |caller: Session, target: String| {
        let manager = manager_for_check.clone();
        async move {
            let is_admin =
                |s: &Session| s.fields.get("role").and_then(|r| r.as_str()) == Some("admin");
            if !is_admin(&caller) {
                return false;
            }
            let Some(manager) = manager.get() else {
                return false;
            };
            match manager.list_user_sessions(&target).await {
                Ok(sessions) => !sessions.iter().any(is_admin),
                Err(_) => false,
            }
        }
    })
    .expires_in(Duration::from_secs(config.impersonation_expires_in));
    builder = builder
        .impersonation(impersonation)
        .multi_session(config.multi);
    // The demo has no user table: the user `get-session` shows is made from the id.
    builder = builder.user_loader(|user_id: String| async move {
        Ok::<_, tower_auth_session::StoreError>(Some(json!({ "id": user_id, "name": user_id })))
    });
    let manager = builder.build().map_err(|e| match e {
        ConfigError::Invalid {
            option: "trusted_origins",
            ..
        } => format!("SESSION_TRUSTED_ORIGINS: {e}"),
        e => e.to_string(),
    })?;
    let _ = this_manager.set(manager.clone());
    Ok(manager)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignInBody {
    user_id: Option<String>,
    remember_me: Option<bool>,
    /// App-defined session fields (a JSON object).
    fields: Option<serde_json::Map<String, serde_json::Value>>,
}

/// An error body as DEMO_SERVER.md states it: `error` (snake case), `code` and `message`.
fn error(status: StatusCode, error: &str, message: &str) -> Response {
    let body = json!({ "error": error, "code": error.to_ascii_uppercase(), "message": message });
    (status, Json(body)).into_response()
}

async fn sign_in(
    _: CrossSiteGuard,
    handle: SessionHandle,
    body: Result<Json<SignInBody>, JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected a JSON body with userId",
        );
    };
    let Some(user_id) = body.user_id.filter(|u| !u.trim().is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
            "userId is required",
        );
    };
    let options = SignInOptions::new().remember_me(body.remember_me.unwrap_or(true));
    let options = match body.fields.map(|fields| options.clone().fields(&fields)) {
        None => options,
        Some(Ok(options)) => options,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_session_fields",
                "fields must be a JSON object without built-in session field names",
            );
        }
    };
    match handle.sign_in(user_id, options).await {
        Ok(session) => Json(json!({ "session": session })).into_response(),
        Err(tower_auth_session::SessionError::InvalidUserId) => error(
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
            "userId must be 1-255 bytes without NUL",
        ),
        // 503 with the crate's own body (the failure is logged there).
        Err(e) => e.into_response(),
    }
}

async fn me(CurrentSession(session): CurrentSession) -> Json<serde_json::Value> {
    Json(json!({ "userId": session.user_id, "sessionId": session.id }))
}

/// `/`: who is signed in, their devices (with a revoke button each), revoke others, sign
/// out; or the sign-in form. Rendered on the server; the few lines of script only POST to
/// `/api/auth/*` and reload.
async fn device_page(handle: SessionHandle) -> Response {
    let body = match handle.current() {
        Some(current) => match handle.list().await {
            Ok(sessions) => signed_in_page(&current, &sessions),
            Err(e) => {
                tracing::error!(error = %e, "could not list sessions");
                UNAVAILABLE_SECTION.to_owned()
            }
        },
        None if handle.is_unavailable() => UNAVAILABLE_SECTION.to_owned(),
        None => SIGN_IN_SECTION.to_owned(),
    };
    let page = format!(
        "<!doctype html><html lang=en><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <link rel=icon href=\"data:,\">\
         <title>tower-auth-session demo</title><style>{PAGE_STYLE}</style>\
         <h1>tower-auth-session demo</h1>{body}<script>{PAGE_SCRIPT}</script></html>"
    );
    // The page lists a user's devices: no cache may keep it, and no other site may frame
    // its revoke and sign-out buttons.
    let mut response = (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Html(page),
    )
        .into_response();
    html_page_headers(response.headers_mut());
    response
}

const PAGE_STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;max-width:56rem;margin:2rem auto;padding:0 1rem}\
table{border-collapse:collapse;width:100%;margin:1rem 0}th,td{text-align:left;padding:.4rem .6rem;border-bottom:1px solid #ddd}\
tr.current{background:#eef6ee}.tag{font-size:.8em;background:#2d7d2d;color:#fff;border-radius:.3em;padding:.05em .4em}\
.muted{color:#666}button{cursor:pointer}#error{color:#b00}td{overflow-wrap:anywhere}\
@media(max-width:40rem){thead{position:absolute;left:-9999px}tr{display:block;border-bottom:1px solid #ddd;padding:.3rem 0}\
td{display:block;border:0;padding:.1rem .6rem}td[data-label]::before{content:attr(data-label) \": \";color:#666}}";

// One helper: POST to an auth endpoint, then reload or say in plain words what went wrong.
// A 401 means this tab is stale (signed out elsewhere, or this session revoked): reload
// into the signed-out view and say why there. Error bodies are never shown raw.
const PAGE_SCRIPT: &str = "function say(text){document.getElementById('error').textContent=text}\
async function call(path,body){let r;\
try{r=await fetch('/api/auth/'+path,{method:'POST',headers:{'content-type':'application/json'},body:JSON.stringify(body||{})})}\
catch(e){say('Could not reach the server. Check your connection and try again.');return}\
if(r.ok){location.reload();return}\
if(r.status===401){sessionStorage.setItem('notice','You were signed out (in another tab or from another device). Sign in again to continue.');location.reload();return}\
let message='';try{message=(await r.json()).message||''}catch(e){}\
const plain={403:'This page is not allowed to make that change. Reload it and try again.',429:'Too many attempts. Wait a moment and try again.',503:'The session store is unavailable; you are not signed out. Try again shortly.'};\
say(plain[r.status]||(message&&!/^[{\\[]/.test(message)&&message)||'Something went wrong (error '+r.status+'). Try again.')}\
const notice=sessionStorage.getItem('notice');if(notice){sessionStorage.removeItem('notice');say(notice)}";

const SIGN_IN_SECTION: &str = "<p>Not signed in.</p>\
<form onsubmit=\"event.preventDefault();call('sign-in',{userId:this.user.value,rememberMe:this.remember.checked})\">\
<label for=user>User id</label> <input id=user name=user autocomplete=username required autofocus> \
<label><input type=checkbox name=remember checked> remember me</label> \
<button>Sign in</button></form><p id=error role=alert></p>";

const UNAVAILABLE_SECTION: &str = "<p id=error role=alert>The session store is unavailable; you are not signed out. Try again shortly.</p>";

fn signed_in_page(current: &Session, sessions: &[Session]) -> String {
    let rows: String = sessions
        .iter()
        .map(|session| {
            let is_current = session.id == current.id;
            let device = describe_device(session.user_agent.as_deref());
            let ip = session.ip_address.as_deref().unwrap_or("unknown");
            let action = if is_current {
                "<span class=tag>this device</span>".to_owned()
            } else {
                // The id goes through a data attribute, never into script text. The label
                // names the device, so a screen reader does not hear "Revoke" n times.
                format!(
                    "<button data-id=\"{}\" aria-label=\"{}\" onclick=\"call('revoke-session',{{id:this.dataset.id}})\">Revoke</button>",
                    html_escape(&session.id),
                    html_escape(&format!(
                        "Revoke {device} at {ip}, last seen {}",
                        when(session.last_seen_at)
                    )),
                )
            };
            format!(
                "<tr{}><td data-label=Device title=\"{}\">{}</td><td data-label=\"IP address\">{}</td>\
                 <td data-label=\"Last seen\">{}</td><td data-label=\"Signed in\">{}</td><td>{action}</td></tr>",
                if is_current { " class=current" } else { "" },
                html_escape(session.user_agent.as_deref().unwrap_or("")),
                html_escape(&device),
                html_escape(ip),
                when(session.last_seen_at),
                when(session.created_at),
            )
        })
        .collect();
    format!(
        "<p>Signed in as <strong>{user}</strong>. \
         <button onclick=\"call('sign-out')\">Sign out</button></p>\
         <h2>Your sessions</h2>\
         <table><thead><tr><th>Device</th><th>IP address</th><th>Last seen</th><th>Signed in</th><th>Action</th></tr></thead>\
         <tbody>{rows}</tbody></table>\
         <p><button onclick=\"call('revoke-other-sessions')\">Sign out all other devices</button> \
         <button onclick=\"call('revoke-sessions')\">Sign out everywhere</button></p>\
         <p class=muted>Last seen is updated at most once per update age (a day by default).</p>\
         <p id=error role=alert></p>",
        user = html_escape(&current.user_id),
    )
}

fn when(time: chrono::DateTime<chrono::Utc>) -> String {
    time.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// "Firefox on Linux" from a user agent: enough to tell one's devices apart.
fn describe_device(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.filter(|ua| !ua.is_empty()) else {
        return "Unknown device".to_owned();
    };
    // Order matters: Edge and Chrome also say "Safari", Edge also says "Chrome".
    let browser = [
        ("Edg/", "Edge"),
        ("Firefox/", "Firefox"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
        ("curl/", "curl"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    let os = [
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Android", "Android"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map(|(_, name)| *name);
    match (browser, os) {
        (Some(browser), Some(os)) => format!("{browser} on {os}"),
        (Some(name), None) | (None, Some(name)) => name.to_owned(),
        (None, None) => ua.chars().take(40).collect(),
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
async fn no_store(request: axum::extract::Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `SESSION_RATE_LIMIT`: the budget for sign-in per client IP, ten times it for the other
/// `/api/auth/*` routes; counted in Redis when `REDIS_URL` is set (every instance shares
/// it), in this process otherwise.
fn rate_limits(
    config: &Config,
    manager: &SessionManager,
) -> Result<Option<RateLimitLayer>, String> {
    let Some(budget) = config.rate_limit else {
        return Ok(None);
    };
    #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
    let mut limits = RateLimit::new()
        .path("/api/auth/sign-in", budget)
        .prefix("/api/auth/", budget.times(10));
    #[cfg(feature = "redis")]
    if let Some(url) = config.redis_url.as_deref() {
        let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
        let redis = if nodes.len() > 1 {
            RedisStorage::cluster(nodes)
        } else {
            RedisStorage::builder(url)
        };
        limits = limits.shared(redis.build().map_err(|e| format!("REDIS_URL: {e}"))?);
    }
    Ok(Some(manager.rate_limit_layer(limits)))
}

fn app(manager: &SessionManager, rate_limits: Option<RateLimitLayer>) -> Router {
    // The crate's endpoints (get-session, list-sessions, revoke-*, sign-out) plus the
    // app's own sign-in; every POST goes through the cross-site guard.
    let auth = manager
        .router()
        .route("/sign-in", post(sign_in))
        .layer(middleware::from_fn(no_store));
    // The trusted origins may call the API from another origin (a SPA's dev server).
    let api = Router::new()
        .nest("/api/auth", auth)
        .route("/api/me", get(me))
        .layer(middleware::from_fn_with_state(
            manager.clone(),
            trusted_cors,
        ));
    let with_session = api.route("/", get(device_page)).layer(manager.layer());
    // Outside the session layer: a limited request reads and writes no session.
    let with_session = match rate_limits {
        Some(limits) => with_session.layer(limits),
        None => with_session,
    };
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
            eprintln!("error: {}", scrub(&message));
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let config = Config::from_env()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], config.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let manager = build_manager(&config, local.port()).await?;
    // Sessions of users who never come back are deleted hourly; the task stops with the
    // server (it is aborted when `_cleanup` is dropped at the end of `run`).
    let _cleanup = manager.spawn_cleanup(Duration::from_secs(3600));
    // With Redis, believe cookie caches from the first request on (bounded: without the
    // lease, requests are served from the stores, which is safe).
    if !manager.cookie_cache_ready(Duration::from_secs(2)).await {
        eprintln!(
            "warning: cookie cache not trusted yet (no Redis lease); serving from the stores"
        );
    }
    let app = app(&manager, rate_limits(&config, &manager)?);
    println!("listening on http://{local}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| e.to_string())
}

/// Ctrl-C, or SIGTERM (what `docker stop`, systemd and Kubernetes send): either way the
/// server stops accepting, finishes the requests in flight and exits 0.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
                return;
            }
            Err(error) => eprintln!("warning: cannot listen for SIGTERM ({error}); Ctrl-C only"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
