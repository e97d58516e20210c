//! tonic (feature `tonic`): reading the session in a gRPC service.
//!
//! Apply the layer with `Server::builder().layer(manager.layer())`; tonic carries the
//! request's extensions into its `tonic::Request`, so every method finds the
//! [`SessionHandle`] there. Clients send their token as `authorization: Bearer <token>`
//! metadata and get it from the `set-auth-token` response metadata of the sign-in call.
//! A [`SessionRejection`](crate::SessionRejection) converts into a [`Status`] (`Unauthenticated`, `Unavailable`,
//! `PermissionDenied`, `Internal`). `examples/tonic.rs` is a whole service.
//!
//! ```
//! use tonic::{Request, Status};
//! use tower_auth_session::tonic::require_session;
//!
//! fn whoami(request: &Request<()>) -> Result<String, Status> {
//!     let session = require_session(request)?; // no session: Status::unauthenticated
//!     Ok(session.user_id)
//! }
//! // Outside the layer there is no handle: `Internal`.
//! assert_eq!(whoami(&Request::new(())).unwrap_err().code(), tonic::Code::Internal);
//! ```

use ::tonic::{Request, Status};

use crate::handle::SessionHandle;
use crate::session::Session;

/// The request's [`SessionHandle`] (to sign in or out), or `Internal` when the layer is
/// not in front of the service.
pub fn session_handle<T>(request: &Request<T>) -> Result<SessionHandle, Status> {
    Ok(SessionHandle::from_extensions(request.extensions())?)
}

/// The signed-in session, or the `Status` to answer with: `Unauthenticated` without a
/// valid session, `Unavailable` when a store needed to decide was down (the user is not
/// signed out by an outage), `Internal` when the layer is missing.
pub fn require_session<T>(request: &Request<T>) -> Result<Session, Status> {
    Ok(session_handle(request)?.require()?)
}

/// An interceptor that lets only signed-in requests through, for services where every
/// method needs a session: `InterceptedService::new(service, signed_in_only)` (or a
/// generated server's `with_interceptor`). The session itself is then read with
/// [`require_session`].
pub fn signed_in_only(request: Request<()>) -> Result<Request<()>, Status> {
    require_session(&request)?;
    Ok(request)
}
