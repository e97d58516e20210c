//! Per-client-IP rate limits (feature `rate-limit`): a budget of requests per window for
//! sign-in and the session routes, so one client cannot guess, flood or lock others out.
//!
//! [`RateLimit`] holds the rules (a path, a path prefix, or every request, each with a
//! [`Budget`]); [`SessionManager::rate_limit_layer`](crate::SessionManager::rate_limit_layer)
//! turns them into a tower layer that keys each request on the client address the session
//! layer records (the socket peer, or `X-Forwarded-For` only through trusted proxies; an
//! IPv6 client by its /64, the block one subscriber gets). Over budget, the answer is 429
//! `{"error": "too_many_requests", …}` with `Retry-After` and `X-Retry-After` (whole
//! seconds, as Better Auth sends them) and the inner service is not called.
//!
//! One instance counts in memory with [`governor`]'s GCRA; several instances share one
//! budget when the rules are [`shared`](RateLimit::shared) over a
//! [`RedisStorage`](crate::secondary::RedisStorage): the same GCRA as a Redis script on
//! the storage's connection, timeout and breaker. When Redis cannot answer, each instance
//! falls back to its own memory count (logged) — limits loosen to N × budget for the
//! outage; sign-in never fails because the limiter's store is down.
//!
//! Where to put it: **outside** `manager.layer()` a limited request never reaches the
//! session layer, so it reads and writes nothing. Inside it (on a route, or
//! [`SessionManager::rate_limited_router`](crate::SessionManager::rate_limited_router))
//! the session has been read already (and refreshed, if one was due); the 429 carries
//! [`RateLimited`] in its extensions and the session layer adds no cookie to it.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::post};
//! use tower_auth_session::{Budget, MemoryStore, RateLimit, SessionManager};
//!
//! let manager = SessionManager::builder(MemoryStore::new())
//!     .secret(b"an example secret of at least 32 bytes!")
//!     .build()
//!     .unwrap();
//! let limits = RateLimit::new()
//!     .path("/api/auth/sign-in", Budget::new(3, Duration::from_secs(10)))
//!     .prefix("/api/auth/", Budget::new(30, Duration::from_secs(10)));
//! let app: Router = Router::new()
//!     .route("/api/auth/sign-in", post(|| async { "signed in" }))
//!     .layer(manager.layer())
//!     .layer(manager.rate_limit_layer(limits));
//! # let _ = app;
//! ```

mod future;
mod layer;
mod limiter;
mod service;
#[cfg(feature = "redis")]
mod shared;

use std::num::NonZeroU32;
use std::time::Duration;

pub use self::future::ResponseFuture;
pub use self::layer::RateLimitLayer;
pub use self::service::RateLimitService;

/// How many requests one client may make per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    max: NonZeroU32,
    window: Duration,
}

impl Budget {
    /// `max` requests per `window`, all of them at once if the client likes; after that
    /// one more each `window / max`. A `max` of 0 counts as 1 and a window under a
    /// millisecond as one millisecond.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max: NonZeroU32::new(max).unwrap_or(NonZeroU32::MIN),
            window: window.max(Duration::from_millis(1)),
        }
    }

    /// The requests allowed at once.
    pub fn max(&self) -> u32 {
        self.max.get()
    }

    /// The window they are counted over.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How often one more request is allowed: `window / max`, at least 1 ms.
    fn interval(&self) -> Duration {
        (self.window / self.max.get()).max(Duration::from_millis(1))
    }

    /// Budgets scale: `times(10)` is ten times the requests in the same window.
    #[must_use]
    pub fn times(self, factor: u32) -> Self {
        Self::new(self.max().saturating_mul(factor), self.window)
    }
}

/// Which requests a rule counts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Matcher {
    Path(String),
    Prefix(String),
    Every,
}

impl Matcher {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Path(exact) => path == exact,
            Self::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Self::Every => true,
        }
    }
}

/// The rules of a [`RateLimitLayer`]: the first rule whose path matches a request counts
/// it against that rule's budget (each rule has budgets of its own per client).
/// Requests no rule matches pass uncounted.
#[derive(Debug, Clone, Default)]
pub struct RateLimit {
    rules: Vec<(Matcher, Budget)>,
    #[cfg(feature = "redis")]
    shared: Option<crate::secondary::RedisStorage>,
}

impl RateLimit {
    /// No rule yet: nothing is limited.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests whose path is exactly `path` (as the layer sees it: inside a nested axum
    /// router, without the nest's prefix).
    #[must_use]
    pub fn path(mut self, path: impl Into<String>, budget: Budget) -> Self {
        self.rules.push((Matcher::Path(path.into()), budget));
        self
    }

    /// Requests whose path starts with `prefix`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>, budget: Budget) -> Self {
        self.rules.push((Matcher::Prefix(prefix.into()), budget));
        self
    }

    /// Every request through the layer (for a layer on one route).
    #[must_use]
    pub fn every_request(mut self, budget: Budget) -> Self {
        self.rules.push((Matcher::Every, budget));
        self
    }

    /// Counts in Redis, so every instance over the same Redis (and key prefix) shares
    /// each client's budget. Keys: `<prefix>rl:<rule>:<client>`, expiring with the
    /// budget's window.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[must_use]
    pub fn shared(mut self, redis: crate::secondary::RedisStorage) -> Self {
        self.shared = Some(redis);
        self
    }
}

/// In the extensions of a 429 the layer answered: how long the client should wait. The
/// session layer adds no cookie to a response that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimited {
    /// When the next request would be allowed.
    pub retry_after: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_one_more_each_window_over_max() {
        let budget = Budget::new(3, Duration::from_secs(9));
        assert_eq!(budget.interval(), Duration::from_secs(3));
        assert_eq!(budget.times(10).max(), 30);
        assert_eq!(Budget::new(0, Duration::ZERO).max(), 1);
        assert_eq!(
            Budget::new(0, Duration::ZERO).interval(),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn the_first_matching_rule_counts() {
        let matchers = [
            Matcher::Path("/sign-in".into()),
            Matcher::Prefix("/api/".into()),
            Matcher::Every,
        ];
        assert!(matchers[0].matches("/sign-in"));
        assert!(!matchers[0].matches("/sign-in/x"));
        assert!(matchers[1].matches("/api/x"));
        assert!(!matchers[1].matches("/apix"));
        assert!(matchers[2].matches("/anything"));
    }
}
