//! Session management for tower services, in the spirit of Better Auth: sign a user in
//! once, and every handler after that knows who it is; sessions can be listed and revoked
//! at once; the hot path costs microseconds.
//!
//! # How it works
//! [`SessionManager`] holds the configuration, the signing [`KeyRing`] and the stores.
//! [`SessionLayer`] reads the `session_token` cookie (or an `Authorization: Bearer`
//! token), checks its HMAC without I/O, resolves the session in the [`SessionStore`],
//! and puts a [`SessionHandle`] in the request extensions. When the inner service answers,
//! the layer writes the cookies the request earned: a new session, a sliding refresh, or
//! cleared cookies when the session is gone.
//!
//! Outside axum (hyper, tonic, any tower stack) handlers take the handle with
//! [`SessionHandle::from_extensions`] and the session with [`SessionHandle::require`]
//! (401 / 503 as a [`SessionRejection`]); feature `tonic` adds the `tonic::Status`
//! conversions. Clients without cookies send `Authorization: Bearer <token>`; see
//! [`TokenTransport`] and [`AuthTokenHeader`].
//!
//! Stores only keep `SHA-256(token)`. Sessions expire after `expires_in` (7 days) and
//! slide forward at most once per `update_age` (1 day), persisted by one conditional write.
//!
//! # Example
//! ```
//! # #[cfg(feature = "axum")]
//! # fn main() -> Result<(), tower_auth_session::ConfigError> {
//! use axum::{Router, routing::{get, post}};
//! use tower_auth_session::{
//!     CrossSiteGuard, CurrentSession, MemoryStore, SessionError, SessionHandle, SessionManager,
//!     SignInOptions,
//! };
//!
//! // A failed sign-in answers 503 (store down) or 400, never a 200.
//! async fn sign_in(_: CrossSiteGuard, session: SessionHandle) -> Result<&'static str, SessionError> {
//!     // ... check the password first ...
//!     session.sign_in("alice", SignInOptions::new()).await?;
//!     Ok("welcome")
//! }
//!
//! async fn me(CurrentSession(session): CurrentSession) -> String {
//!     format!("hello {}", session.user_id)
//! }
//!
//! let manager = SessionManager::builder(MemoryStore::new())
//!     .secret(b"an example secret of at least 32 bytes!")
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/sign-in", post(sign_in))
//!     .route("/me", get(me))
//!     .layer(manager.layer());
//! # let _ = app;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "axum"))]
//! # fn main() {}
//! ```
//!
//! # Feature flags
//! | feature | default | what it adds |
//! |---|---|---|
//! | `axum` | yes | extractors ([`CurrentSession`], [`FreshSession`], [`CrossSiteGuard`], [`SessionHandle`]) and the endpoints ([`SessionManager::router`]) |
//! | `sqlite` | yes | `SqliteStore` (rusqlite, SQLite bundled) |
//! | `postgres` | no | `PostgresStore` (sqlx) |
//! | `redis` | no | [`RedisStorage`](secondary::RedisStorage): Redis as secondary storage, or as the only store |
//! | `conformance` | no | the public test suites for third-party stores (`secondary::conformance`) |
//! | `rate-limit` | yes | per-client-IP limits ([`rate_limit`]: `RateLimit`, `SessionManager::rate_limit_layer`), in memory (governor) or shared over Redis with `redis` |
//! | `tonic` | no | `From<SessionRejection> for tonic::Status`, [`tonic::require_session`], tonic's `TcpConnectInfo` as the client address |
//! | `fuzzing` | no | **unstable**, for the crate's own fuzz crate (`fuzz/`) and its regression test only: a hidden `fuzzing` module of property checks; not covered by semver |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

// Leaf: plain types and functions that import nothing above them.
mod cache_bus;
mod client;
mod clock;
mod config;
mod cookies;
mod error;
mod events;
mod field_policy;
mod hooks;
mod origin;
mod page_headers;
mod rejection;
mod session;
mod token;

// Middle: storage tiers and request parsing; they take narrow inputs, never the manager.
#[cfg(feature = "better-auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "better-auth")))]
pub mod better_auth;
mod cookie_cache;
mod request_cookies;
mod request_token;
pub mod secondary;
pub mod store;

// Upper: the manager and the per-request handle.
mod handle;
mod impersonation;
mod manager;
mod multi_session;
mod self_service;

// Top: the tower middleware and the axum surface.
#[cfg(feature = "axum")]
mod extract;
mod future;
mod layer;
#[cfg(feature = "rate-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "rate-limit")))]
pub mod rate_limit;
#[cfg(feature = "axum")]
mod routes;
mod service;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod tonic;

// Property checks over internals for `fuzz/` and the regression replay test; hidden and
// unstable, never part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use cache_bus::CacheRevocationBus;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{AuthTokenHeader, NoRefresh, SameSite, TokenTransport, WANT_AUTH_TOKEN};
pub use cookie_cache::CookieCache;
pub use error::{ConfigError, SessionError, StoreError};
pub use events::{RevokeReason, SessionEvent};
#[cfg(feature = "axum")]
pub use extract::{CrossSiteGuard, CurrentSession, FreshSession};
pub use field_policy::{FieldAccess, FieldPolicy};
pub use future::ResponseFuture;
pub use handle::{RevokeStatus, SET_AUTH_TOKEN, SessionHandle, SignInOptions};
pub use hooks::{
    CreateAttempt, HookClient, HookError, RefreshAttempt, RevokeAttempt, UpdateAttempt, Verdict,
};
pub use layer::SessionLayer;
pub use manager::{
    BanList, CleanupTask, Impersonation, MemoryBanList, SessionManager, SessionManagerBuilder,
    SessionPage,
};
pub use page_headers::html_page_headers;
#[cfg(feature = "rate-limit")]
pub use rate_limit::{Budget, RateLimit, RateLimitLayer, RateLimited};
pub use rejection::{Refusal, RejectionReason, SessionRejection};
pub use request_token::TokenSource;
#[cfg(feature = "axum")]
pub use routes::trusted_cors;
pub use service::SessionService;
pub use session::Session;
pub use store::{MemoryStore, SessionStore};
pub use token::{Key, KeyRing, Token, TokenError, TokenHash};

// Crates whose types appear in the public API, re-exported so that an app always names
// the versions this crate was built with.
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use axum;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use sqlx;
pub use {chrono, http, ipnet, serde_json, tokio};

/// Compiles the README's code blocks as doctests, so the quick start cannot drift.
#[cfg(all(doctest, feature = "axum", feature = "sqlite", feature = "conformance"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Compiles the code blocks of every page in `docs/` as doctests, so none can drift.
#[cfg(all(doctest, feature = "axum", feature = "sqlite", feature = "conformance"))]
mod docs_doctests {
    #[doc = include_str!("../docs/hyper.md")]
    pub struct Hyper;
    #[cfg(feature = "tonic")]
    #[doc = include_str!("../docs/tonic.md")]
    pub struct Tonic;
    #[doc = include_str!("../docs/bearer.md")]
    pub struct Bearer;
    #[doc = include_str!("../docs/redis-and-cookie-cache.md")]
    pub struct RedisAndCookieCache;
    #[doc = include_str!("../docs/key-rotation.md")]
    pub struct KeyRotation;
    #[doc = include_str!("../docs/managing-sessions.md")]
    pub struct ManagingSessions;
    #[doc = include_str!("../docs/example-server.md")]
    pub struct ExampleServer;
    #[doc = include_str!("../docs/DEPLOYING.md")]
    pub struct Deploying;
    #[doc = include_str!("../docs/SECURITY.md")]
    pub struct Security;
    #[doc = include_str!("../docs/performance.md")]
    pub struct Performance;
    #[doc = include_str!("../docs/ARCHITECTURE.md")]
    pub struct Architecture;
}
