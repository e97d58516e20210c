//! Shared test helpers: an axum app around the layer, a store that counts calls, and
//! cookie-jar plumbing over real `Set-Cookie` headers.
#![allow(dead_code, unreachable_pub)]

pub mod demo;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::routing;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use tower_auth_session::store::{BoxFuture, StoredSession};
use tower_auth_session::{
    CurrentSession, Session, SessionHandle, SessionManager, SessionStore, SignInOptions,
    StoreError, TokenHash,
};

pub const SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

/// Counts every call made to the wrapped store, per method.
#[derive(Clone, Default)]
pub struct Counts {
    pub create: Arc<AtomicUsize>,
    pub find: Arc<AtomicUsize>,
    pub update: Arc<AtomicUsize>,
    pub delete: Arc<AtomicUsize>,
    pub other: Arc<AtomicUsize>,
}

impl Counts {
    pub fn total(&self) -> usize {
        [
            &self.create,
            &self.find,
            &self.update,
            &self.delete,
            &self.other,
        ]
        .iter()
        .map(|c| c.load(Ordering::SeqCst))
        .sum()
    }
    pub fn updates(&self) -> usize {
        self.update.load(Ordering::SeqCst)
    }
    pub fn finds(&self) -> usize {
        self.find.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
pub struct CountingStore<S> {
    pub inner: S,
    pub counts: Counts,
}

impl<S> CountingStore<S> {
    pub fn new(inner: S) -> (Self, Counts) {
        let counts = Counts::default();
        (
            Self {
                inner,
                counts: counts.clone(),
            },
            counts,
        )
    }
}

fn bump(c: &AtomicUsize) {
    c.fetch_add(1, Ordering::SeqCst);
}

impl<S: SessionStore> SessionStore for CountingStore<S> {
    fn create<'a>(
        &'a self,
        h: &'a TokenHash,
        s: &'a Session,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        bump(&self.counts.create);
        self.inner.create(h, s)
    }
    fn find<'a>(&'a self, h: &'a TokenHash) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        bump(&self.counts.find);
        self.inner.find(h)
    }
    fn update<'a>(
        &'a self,
        h: &'a TokenHash,
        g: u64,
        s: &'a Session,
        n: Option<&'a TokenHash>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        bump(&self.counts.update);
        self.inner.update(h, g, s, n)
    }
    fn delete<'a>(
        &'a self,
        h: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        bump(&self.counts.delete);
        self.inner.delete(h)
    }
    fn find_by_id<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        bump(&self.counts.find);
        self.inner.find_by_id(id)
    }
    fn delete_by_id<'a>(
        &'a self,
        id: &'a str,
        u: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        bump(&self.counts.delete);
        self.inner.delete_by_id(id, u)
    }
    fn delete_by_user<'a>(
        &'a self,
        u: &'a str,
        k: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>, StoreError>> {
        bump(&self.counts.delete);
        self.inner.delete_by_user(u, k)
    }
    fn list_by_user<'a>(
        &'a self,
        u: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        bump(&self.counts.other);
        self.inner.list_by_user(u, now)
    }
    fn delete_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        bump(&self.counts.other);
        self.inner.delete_expired(now, limit)
    }
}

/// A store that fails every call while `down` is set.
#[derive(Clone)]
pub struct SwitchableStore {
    pub inner: Arc<dyn SessionStore>,
    pub down: Arc<std::sync::atomic::AtomicBool>,
}

impl SwitchableStore {
    fn fail<'a, T: Send + 'a>(&self) -> Option<BoxFuture<'a, Result<T, StoreError>>> {
        self.down.load(Ordering::SeqCst).then(|| {
            Box::pin(async { Err(StoreError::new("store switched off by the test")) }) as _
        })
    }
}

impl SessionStore for SwitchableStore {
    fn create<'a>(
        &'a self,
        h: &'a TokenHash,
        s: &'a Session,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.fail().unwrap_or_else(|| self.inner.create(h, s))
    }
    fn find<'a>(&'a self, h: &'a TokenHash) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        self.fail().unwrap_or_else(|| self.inner.find(h))
    }
    fn update<'a>(
        &'a self,
        h: &'a TokenHash,
        g: u64,
        s: &'a Session,
        n: Option<&'a TokenHash>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.fail().unwrap_or_else(|| self.inner.update(h, g, s, n))
    }
    fn delete<'a>(
        &'a self,
        h: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        self.fail().unwrap_or_else(|| self.inner.delete(h))
    }
    fn find_by_id<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        self.fail().unwrap_or_else(|| self.inner.find_by_id(id))
    }
    fn delete_by_id<'a>(
        &'a self,
        id: &'a str,
        u: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        self.fail()
            .unwrap_or_else(|| self.inner.delete_by_id(id, u))
    }
    fn delete_by_user<'a>(
        &'a self,
        u: &'a str,
        k: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>, StoreError>> {
        self.fail()
            .unwrap_or_else(|| self.inner.delete_by_user(u, k))
    }
    fn list_by_user<'a>(
        &'a self,
        u: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        self.fail()
            .unwrap_or_else(|| self.inner.list_by_user(u, now))
    }
    fn delete_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.fail()
            .unwrap_or_else(|| self.inner.delete_expired(now, limit))
    }
}

/// A small app: sign-in (`?user=…&remember=false`), /me, sign-out.
pub fn app(manager: &SessionManager) -> Router {
    async fn sign_in(
        handle: SessionHandle,
        axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
    ) -> Result<Json<Value>, (StatusCode, String)> {
        let user = q.get("user").cloned().unwrap_or_else(|| "alice".into());
        let remember = q.get("remember").map(|v| v != "false").unwrap_or(true);
        let session = handle
            .sign_in(user, SignInOptions::new().remember_me(remember))
            .await
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        Ok(Json(json!({ "session": session })))
    }
    async fn me(CurrentSession(s): CurrentSession) -> Json<Value> {
        Json(json!({ "userId": s.user_id, "sessionId": s.id }))
    }
    async fn sign_out(handle: SessionHandle) -> Result<Json<Value>, (StatusCode, String)> {
        handle
            .sign_out()
            .await
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        Ok(Json(json!({ "success": true })))
    }
    Router::new()
        .route("/sign-in", routing::post(sign_in))
        .route("/me", routing::get(me))
        .route("/sign-out", routing::post(sign_out))
        .layer(manager.layer())
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// All `Set-Cookie` header values.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The `Set-Cookie` for `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.split('=').next() == Some(name))
    }

    /// The value `Set-Cookie` gives `name`.
    pub fn cookie_value(&self, name: &str) -> Option<String> {
        self.set_cookie(name)
            .map(|c| c.split(';').next().unwrap()[name.len() + 1..].to_owned())
    }

    /// Whether the response expires `name` (`Max-Age=0`).
    pub fn clears(&self, name: &str) -> bool {
        self.set_cookie(name)
            .is_some_and(|c| c.contains("Max-Age=0"))
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response: Response<Body> = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub fn get(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

pub fn post(uri: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::post(uri);
    if let Some(c) = cookie {
        b = b.header(header::COOKIE, c);
    }
    b.body(Body::empty()).unwrap()
}

/// Signs in `user` and returns the `name=value` cookie pair for the session token.
pub async fn sign_in(app: &Router, manager: &SessionManager, user: &str) -> String {
    let reply = send(app, post(&format!("/sign-in?user={user}"), None)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let name = manager.session_cookie_name();
    format!(
        "{name}={}",
        reply.cookie_value(name).expect("session cookie set")
    )
}

/// Which primary store a shared-suite test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Sqlite,
}

/// A fresh store of `kind` (SQLite: a new file in a temp dir that lives as long as the
/// returned guard).
pub async fn make_store(kind: StoreKind) -> (Arc<dyn SessionStore>, Option<tempfile::TempDir>) {
    match kind {
        StoreKind::Memory => (Arc::new(tower_auth_session::MemoryStore::new()), None),
        StoreKind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite:{}", dir.path().join("sessions.db").display());
            let store = tower_auth_session::store::SqliteStore::connect(&url)
                .await
                .unwrap();
            (Arc::new(store), Some(dir))
        }
    }
}

/// Instantiates an async test function `fn(StoreKind)` once per store.
#[macro_export]
macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::StoreKind::Memory).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::StoreKind::Sqlite).await;
                }
            )*
        }
    };
}

/// The URL of an external service from `env_var` (or `default`), if something listens
/// there. When it does not: with `TAS_REQUIRE_SERVICES=1` (as `.ci/run` sets) the test
/// fails; otherwise it prints why and the caller skips.
pub fn service_url(env_var: &str, default: &str) -> Option<String> {
    let url = std::env::var(env_var).unwrap_or_else(|_| default.to_owned());
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or(&url)
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(host_port)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()
        });
    if reachable {
        return Some(url);
    }
    if std::env::var("TAS_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{env_var} ({url}) is not reachable and TAS_REQUIRE_SERVICES=1");
    }
    eprintln!("skipping: {env_var} ({url}) is not reachable");
    None
}

/// A name unique to this test run, for Redis key prefixes and PostgreSQL schemas.
pub fn unique_name(what: &str) -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{what}_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}
