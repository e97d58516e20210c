//! [`SessionLayer`]: wraps a service so every request has its session resolved.

use tower_layer::Layer;

use crate::manager::SessionManager;
use crate::service::SessionService;

/// Resolves the session of every request and writes the cookies each response earned.
///
/// Built by [`SessionManager::layer`]. Works with any tower service over `http` types
/// (axum, hyper, tonic): handlers find a [`SessionHandle`](crate::SessionHandle) in the
/// request extensions.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_auth_session::{MemoryStore, SessionHandle, SessionManager};
///
/// async fn me(request: Request<String>) -> Result<Response<String>, Infallible> {
///     // No session: 401; a store down: 503; the layer missing: 500.
///     let session = SessionHandle::from_extensions(request.extensions())
///         .and_then(|handle| handle.require());
///     Ok(match session {
///         Ok(session) => Response::new(session.user_id),
///         Err(rejection) => {
///             let mut response = Response::new(rejection.error_code().to_owned());
///             *response.status_mut() = rejection.status();
///             response
///         }
///     })
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = SessionManager::builder(MemoryStore::new())
///     .secret(b"an example secret of at least 32 bytes!")
///     .build()?;
/// let service = ServiceBuilder::new().layer(manager.layer()).service(service_fn(me));
/// let response = service.oneshot(Request::new(String::new())).await?;
/// assert_eq!(response.status(), http::StatusCode::UNAUTHORIZED);
/// # Ok(())
/// # }
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
