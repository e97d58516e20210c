//! Feature `better-auth`: the formats of a running Better Auth 1.7 app, so a Rust service
//! can read and revoke the sessions the TypeScript app issues
//! (`../shared/reference/better-auth-server.md` holds the facts this follows).
//!
//! Each module holds one of Better Auth's formats, checked and written byte for byte as
//! Better Auth 1.7.25 does:
//! - [`BetterAuthConfig`] (`config.rs`): the app's settings mirrored, and a start-up error
//!   for what cannot be shared;
//! - `cookie.rs`: the signed `session_token` cookie (names, `__Secure-`, first occurrence,
//!   constant-time HMAC check before any I/O);
//! - `record.rs`: the session and user records as Better Auth stores them;
//! - `cache.rs` (with `jwe.rs`): the `session_data` cookie cache in its three strategies;
//! - `postgres.rs` (with `postgres`): a store over Better Auth's `session` and `user`
//!   tables, keyed by the raw token;
//! - `redis.rs` (with `redis`): Better Auth's secondary-storage layout;
//! - `BetterAuthStorage` (`storage.rs`, with `postgres` or `redis`): the tiers read, refreshed and revoked in Better
//!   Auth's order.
//!
//! These are the pieces; they are not yet wired into [`SessionManager`](crate::SessionManager)'s
//! builder (see `docs/ARCHITECTURE.md`, "Better Auth's formats").

mod cache;
mod config;
mod cookie;
mod jwe;
mod record;
#[cfg(any(feature = "postgres", feature = "redis"))]
mod storage;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;

pub use cache::{CacheStrategy, CookieCacheCodec, gather_cache, split_cache};
pub use config::BetterAuthConfig;
pub use cookie::{BetterAuthCookieNames, SignedCookie, first_cookie};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::{BetterAuthPostgres, Refreshed};
pub use record::{BaSession, BaSessionWithUser, BaUser};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::BetterAuthRedis;
#[cfg(any(feature = "postgres", feature = "redis"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "redis"))))]
pub use storage::BetterAuthStorage;
