//! [`SessionLayer`]: wraps a service so every request has its session resolved.

use tower_layer::Layer;

use crate::manager::SessionManager;
use crate::service::SessionService;

/// Resolves the session of every request and writes the cookies each response earned.
///
/// Built by [`SessionManager::layer`]. Works with any tower service over `http` types
/// (axum, hyper, tonic).
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_auth_session::{CurrentSession, MemoryStore, SessionManager};
///
/// async fn me(CurrentSession(session): CurrentSession) -> String {
///     session.user_id
/// }
///
/// let manager = SessionManager::builder(MemoryStore::new())
///     .secret(b"an example secret of at least 32 bytes!")
///     .build()
///     .unwrap();
/// let app: Router = Router::new().route("/me", get(me)).layer(manager.layer());
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionLayer {
    manager: SessionManager,
}

impl SessionLayer {
    /// A layer over `manager`.
    pub fn new(manager: SessionManager) -> Self {
        Self { manager }
    }
}

impl SessionManager {
    /// The tower layer that resolves sessions for every request.
    pub fn layer(&self) -> SessionLayer {
        SessionLayer::new(self.clone())
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService::new(inner, self.manager.clone())
    }
}
