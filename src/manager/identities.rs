//! The options for several identities per browser: who may impersonate whom, for how
//! long, and how many accounts one browser may hold.

use std::sync::Arc;
use std::time::Duration;

use crate::session::Session;
use crate::store::BoxFuture;

/// The app's answer to "may this session impersonate that user?".
type ImpersonationCheck = dyn Fn(Session, String) -> BoxFuture<'static, bool> + Send + Sync;

/// Impersonation (Better Auth's `admin` plugin): support staff sign in *as* a user for a
/// short while. Turned on by
/// [`SessionManagerBuilder::impersonation`](crate::SessionManagerBuilder::impersonation).
///
/// The check decides both who may impersonate and whom: it gets the caller's session
/// (read from the store, not a cache) and the target's user id. Refuse targets that are
/// admins themselves unless the app means to allow it.
///
/// ```
/// use std::time::Duration;
/// use tower_auth_session::{Impersonation, MemoryStore, Session, SessionManager};
///
/// let impersonation = Impersonation::new(|caller: Session, target: String| async move {
///     caller.fields.get("role").and_then(|r| r.as_str()) == Some("admin") && target != "root"
/// })
/// .expires_in(Duration::from_secs(30 * 60));
/// let manager = SessionManager::builder(MemoryStore::new())
///     .secret(b"an example secret of at least 32 bytes!")
///     .impersonation(impersonation)
///     .build()
///     .unwrap();
/// # let _ = manager;
/// ```
#[derive(Clone)]
pub struct Impersonation {
    pub(crate) allowed: Arc<ImpersonationCheck>,
    pub(crate) expires_in: Duration,
}

impl std::fmt::Debug for Impersonation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impersonation")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

impl Impersonation {
    /// Allowed when `allowed(caller, target_user_id)` says so; sessions last one hour.
    pub fn new<F, Fut>(allowed: F) -> Self
    where
        F: Fn(Session, String) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        Self {
            allowed: Arc::new(move |caller, target| Box::pin(allowed(caller, target))),
            expires_in: DEFAULT_IMPERSONATION_EXPIRES_IN,
        }
    }

    /// How long an impersonation session lives. It is never refreshed, so busy or not it
    /// ends then.
    #[must_use]
    pub fn expires_in(mut self, expires_in: Duration) -> Self {
        self.expires_in = expires_in;
        self
    }
}

/// Better Auth's default: one hour.
pub(crate) const DEFAULT_IMPERSONATION_EXPIRES_IN: Duration = Duration::from_secs(3600);
