//! Before-hooks: the app's say over a session write before it happens. One async hook per
//! point (create, refresh, field update, revoke); each answers [`Verdict::Allow`],
//! [`Verdict::Refuse`] with a [`Refusal`] (an HTTP status and code the routes and
//! extractors pass on), or, for create and update, [`Verdict::Change`] with fields.
//!
//! A hook that errors, panics or outlives [`Hooks::timeout`] is a refusal
//! ([`Refusal::HOOK_FAILED`]), logged: an app's bug or a slow user table must never let a
//! write through unchecked, nor turn into a 500. Hooks run only where the request already
//! does I/O; a cookie-cache hit or an in-process store hit calls none.

use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::{Map, Value};

use crate::events::RevokeReason;
use crate::rejection::Refusal;
use crate::session::Session;

/// An error a hook returns: any error; it is logged and refuses the write.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

type HookFuture = Pin<Box<dyn std::future::Future<Output = Result<Verdict, HookError>> + Send>>;
type Hook<T> = Arc<dyn Fn(T) -> HookFuture + Send + Sync>;

/// A hook's answer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Verdict {
    /// Go ahead as proposed.
    Allow,
    /// Write nothing, in any tier; the caller answers with the refusal.
    Refuse(Refusal),
    /// Go ahead with these fields instead (create: the new session's app fields; update:
    /// the changes to apply). Refresh and revoke treat it as [`Allow`](Self::Allow).
    Change(Map<String, Value>),
}

/// The client a request came from, as the session would record it (`None` when tracking
/// is off or the fact is unknown).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HookClient {
    /// The client IP (the trusted-proxy walk already applied).
    pub ip_address: Option<String>,
    /// The `User-Agent`, truncated as stored.
    pub user_agent: Option<String>,
}

/// A session about to be created (a sign-in, an impersonation, another account added).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CreateAttempt {
    /// Whom the session is for.
    pub user_id: String,
    /// The app fields it would be created with.
    pub fields: Map<String, Value>,
    /// The request's client.
    pub client: HookClient,
}

/// A session about to be refreshed (its expiry moved).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RefreshAttempt {
    /// The session as read, before the refresh.
    pub session: Session,
    /// The request's client.
    pub client: HookClient,
}

/// App fields about to change.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UpdateAttempt {
    /// The session as the caller saw it, before the change.
    pub session: Session,
    /// Each name set to a value, or removed (`null`).
    pub changes: Map<String, Value>,
    /// Whether the changes came from a request body (`update_fields_from_client`), not
    /// from server code.
    pub from_client: bool,
}

/// Sessions about to be revoked.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RevokeAttempt {
    /// Why.
    pub reason: RevokeReason,
    /// The session's public id, when one session is targeted by id.
    pub session_id: Option<String>,
    /// The user whose sessions are targeted, when the target names one.
    pub user_id: Option<String>,
}

/// The before-hooks of a manager, set on the builder
/// ([`SessionManagerBuilder::before_create`](crate::SessionManagerBuilder::before_create)
/// and its siblings).
#[derive(Clone)]
pub(crate) struct Hooks {
    pub(crate) create: Option<Hook<CreateAttempt>>,
    pub(crate) refresh: Option<Hook<RefreshAttempt>>,
    pub(crate) update: Option<Hook<UpdateAttempt>>,
    pub(crate) revoke: Option<Hook<RevokeAttempt>>,
    /// How long a hook may take before it counts as a refusal.
    pub(crate) timeout: Duration,
}

/// Default hook timeout: long enough for a user-table query on a loaded database, short
/// enough that a hung hook does not hold the request for long.
pub(crate) const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for Hooks {
    fn default() -> Self {
        Self {
            create: None,
            refresh: None,
            update: None,
            revoke: None,
            timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("create", &self.create.is_some())
            .field("refresh", &self.refresh.is_some())
            .field("update", &self.update.is_some())
            .field("revoke", &self.revoke.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Wraps an app's async function as a stored hook.
pub(crate) fn hook<T, F, Fut>(hook: F) -> Hook<T>
where
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Verdict, HookError>> + Send + 'static,
{
    Arc::new(move |input| Box::pin(hook(input)))
}

impl Hooks {
    /// Runs `hook` (if set) on `input`: its verdict, or a refusal when it errors, panics
    /// or times out (logged with the hook's `point`).
    pub(crate) async fn run<T>(
        &self,
        hook: Option<&Hook<T>>,
        point: &'static str,
        input: T,
    ) -> Verdict {
        let Some(hook) = hook else {
            return Verdict::Allow;
        };
        // The call itself may panic before it returns a future; so may the future.
        let called = std::panic::catch_unwind(AssertUnwindSafe(|| hook(input)));
        let outcome = match called {
            Ok(future) => {
                tokio::time::timeout(self.timeout, AssertUnwindSafe(future).catch_unwind()).await
            }
            Err(_) => Ok(Err(Box::new(()) as Box<dyn std::any::Any + Send>)),
        };
        match outcome {
            Ok(Ok(Ok(verdict))) => verdict,
            Ok(Ok(Err(error))) => {
                tracing::error!(point, %error, "a session hook failed; refusing");
                Verdict::Refuse(Refusal::HOOK_FAILED)
            }
            Ok(Err(_)) => {
                tracing::error!(point, "a session hook panicked; refusing");
                Verdict::Refuse(Refusal::HOOK_FAILED)
            }
            Err(_) => {
                tracing::error!(point, timeout = ?self.timeout, "a session hook timed out; refusing");
                Verdict::Refuse(Refusal::HOOK_FAILED)
            }
        }
    }
}
