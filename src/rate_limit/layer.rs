//! [`RateLimitLayer`]: wraps a service so each client's requests are counted.

use std::sync::Arc;

use tower_layer::Layer;

use super::RateLimit;
use super::limiter::Limiter;
use crate::manager::SessionManager;
use crate::rate_limit::service::RateLimitService;

/// Counts each client's requests against the [`RateLimit`] rules and answers 429 past
/// the budget. Built by [`SessionManager::rate_limit_layer`]; clones share the counts.
#[derive(Debug, Clone)]
#[must_use]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
}

impl SessionManager {
    /// A layer that limits requests per client IP by `limits`, taking the client's
    /// address as the session layer does (the peer, or `X-Forwarded-For` only through
    /// this manager's trusted proxies). Build it once and clone it: each call starts
    /// fresh counts. See [the module docs](crate::rate_limit) for where to put it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use axum::{Router, routing::post};
    /// use tower_auth_session::{Budget, MemoryStore, RateLimit, SessionManager};
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .build()
    ///     .unwrap();
    /// // The app's own sign-in route: 5 tries a minute per client.
    /// let limited = manager.rate_limit_layer(
    ///     RateLimit::new().every_request(Budget::new(5, Duration::from_secs(60))),
    /// );
    /// let app: Router = Router::new()
    ///     .route("/login", post(|| async { "checked" }).layer(limited))
    ///     .layer(manager.layer());
    /// # let _ = app;
    /// ```
    pub fn rate_limit_layer(&self, limits: RateLimit) -> RateLimitLayer {
        RateLimitLayer {
            limiter: Arc::new(Limiter::new(limits, self.inner.tracking.clone())),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(inner, self.limiter.clone())
    }
}
