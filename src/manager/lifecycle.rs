//! The app's say before a session write: the before-hooks (create, refresh, field update,
//! revoke) and bans, the hooks' first user.
//!
//! Where each check runs: create in `SessionHandle::sign_in` (so impersonation and an
//! added account too) before the store is asked; refresh in `resolve.rs` inside the
//! refresh gate, before the conditional write; update before the conditional write of
//! `update_fields` (request or admin); revoke at the top of `revoke.rs`, for revocations
//! a user or an admin asked for (never for the ones that keep the crate safe: a replaced
//! session, the per-user cap, a ban).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::builder::SessionManagerBuilder;
use super::{ManagerInner, RevokeTarget, SessionManager};
use crate::client::ClientFacts;
use crate::error::{SessionError, StoreError, chain};
use crate::events::RevokeReason;
use crate::hooks::{
    CreateAttempt, HookClient, HookError, RefreshAttempt, RevokeAttempt, UpdateAttempt, Verdict,
    hook,
};
use crate::rejection::Refusal;
use crate::session::{Session, check_app_fields};
use crate::store::BoxFuture;

/// Who is banned: the app's user table usually holds the flag; [`MemoryBanList`] keeps
/// a list in this process. Set with [`SessionManagerBuilder::bans`].
pub trait BanList: Send + Sync + 'static {
    /// Whether `user_id` is banned at `now`.
    fn is_banned<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Bans `user_id` until `until` (`None`: until unbanned).
    fn ban<'a>(
        &'a self,
        user_id: &'a str,
        until: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Lifts the ban of `user_id` (nothing when there is none).
    fn unban<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

impl<B: BanList + ?Sized> BanList for Arc<B> {
    fn is_banned<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).is_banned(user_id, now)
    }

    fn ban<'a>(
        &'a self,
        user_id: &'a str,
        until: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).ban(user_id, until)
    }

    fn unban<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).unban(user_id)
    }
}

/// A [`BanList`] in this process's memory: for one instance, tests and demos (each
/// instance of a fleet would keep its own list; use the user table there).
#[derive(Debug, Default)]
pub struct MemoryBanList {
    bans: Mutex<HashMap<String, Option<DateTime<Utc>>>>,
}

impl MemoryBanList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// A list holding these users, banned until unbanned.
    pub fn with_users<I: IntoIterator<Item = String>>(users: I) -> Self {
        let list = Self::new();
        list.lock()
            .extend(users.into_iter().map(|user| (user, None)));
        list
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<DateTime<Utc>>>> {
        self.bans.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BanList for MemoryBanList {
    fn is_banned<'a>(
        &'a self,
        user_id: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let banned = match self.lock().get(user_id) {
            Some(None) => true,
            Some(Some(until)) => *until > now,
            None => false,
        };
        Box::pin(async move { Ok(banned) })
    }

    fn ban<'a>(
        &'a self,
        user_id: &'a str,
        until: Option<DateTime<Utc>>,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock().insert(user_id.to_owned(), until);
        Box::pin(async { Ok(()) })
    }

    fn unban<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock().remove(user_id);
        Box::pin(async { Ok(()) })
    }
}

impl SessionManagerBuilder {
    /// A hook called before a session is created (sign-in, impersonation, another
    /// account added): it may refuse ([`Verdict::Refuse`], nothing is written) or set the
    /// new session's fields ([`Verdict::Change`]). See [`Verdict`] for errors and
    /// timeouts.
    ///
    /// ```
    /// use serde_json::json;
    /// use tower_auth_session::{CreateAttempt, MemoryStore, SessionManager, Verdict};
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .before_create(|attempt: CreateAttempt| async move {
    ///         let mut fields = attempt.fields;
    ///         fields.entry("activeOrganizationId").or_insert(json!("org_default"));
    ///         Ok(Verdict::Change(fields))
    ///     })
    ///     .build()
    ///     .unwrap();
    /// # let _ = manager;
    /// ```
    pub fn before_create<F, Fut>(mut self, hook_fn: F) -> Self
    where
        F: Fn(CreateAttempt) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Verdict, HookError>> + Send + 'static,
    {
        self.hooks.create = Some(hook(hook_fn));
        self
    }

    /// A hook called before a session's refresh is written (only on requests that
    /// resolve through the stores; a cookie-cache hit calls nothing). A refusal serves
    /// the request without a session (the extractors answer the refusal's status);
    /// nothing is written and the cookies stay.
    pub fn before_refresh<F, Fut>(mut self, hook_fn: F) -> Self
    where
        F: Fn(RefreshAttempt) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Verdict, HookError>> + Send + 'static,
    {
        self.hooks.refresh = Some(hook(hook_fn));
        self
    }

    /// A hook called before app fields change (`update_fields` on the handle, from a
    /// client or not, and on the manager): it may refuse or replace the changes.
    pub fn before_update<F, Fut>(mut self, hook_fn: F) -> Self
    where
        F: Fn(UpdateAttempt) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Verdict, HookError>> + Send + 'static,
    {
        self.hooks.update = Some(hook(hook_fn));
        self
    }

    /// A hook called before a revocation a user or an admin asked for (sign-out, revoke
    /// by id, revoke all or others, the admin API). Revocations that keep the crate safe
    /// (a session replaced by a sign-in, the per-user cap, a ban) do not ask it.
    pub fn before_revoke<F, Fut>(mut self, hook_fn: F) -> Self
    where
        F: Fn(RevokeAttempt) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Verdict, HookError>> + Send + 'static,
    {
        self.hooks.revoke = Some(hook(hook_fn));
        self
    }

    /// How long a hook may run before it counts as a refusal (5 s by default).
    pub fn hook_timeout(mut self, timeout: Duration) -> Self {
        self.hooks.timeout = timeout;
        self
    }

    /// Turns on bans: a banned user's sign-in is refused (403 `USER_BANNED`), their
    /// refresh revokes every session of theirs instead, and
    /// [`SessionManager::ban_user`] / [`unban_user`](SessionManager::unban_user) write
    /// to this list.
    pub fn bans(mut self, bans: impl BanList) -> Self {
        self.bans = Some(Arc::new(bans));
        self
    }
}

impl SessionManager {
    /// Bans `user_id` until `until` (`None`: until unbanned) and revokes every session of
    /// theirs, through the one revocation path: every instance's cookie cache refuses
    /// them on its next request. Returns how many sessions were revoked. Without
    /// [`bans`](SessionManagerBuilder::bans) on the builder, a [`SessionError::Store`]
    /// saying so.
    pub async fn ban_user(
        &self,
        user_id: &str,
        until: Option<DateTime<Utc>>,
    ) -> Result<usize, SessionError> {
        let bans = self.inner.ban_list()?;
        bans.ban(user_id, until).await?;
        tracing::info!(user_id, ?until, "user banned");
        let target = RevokeTarget::User {
            user_id,
            except: None,
        };
        let revoked = self.inner.revoke(target, RevokeReason::Banned).await?;
        revoked.complete?;
        Ok(revoked.sessions.len())
    }

    /// Lifts the ban of `user_id`: they may sign in again (their revoked sessions stay
    /// revoked).
    pub async fn unban_user(&self, user_id: &str) -> Result<(), SessionError> {
        self.inner.ban_list()?.unban(user_id).await?;
        tracing::info!(user_id, "user unbanned");
        Ok(())
    }

    /// Whether the ban check says `user_id` is banned now (`false` without bans).
    pub async fn is_banned(&self, user_id: &str) -> Result<bool, SessionError> {
        match &self.inner.bans {
            Some(bans) => Ok(bans.is_banned(user_id, self.inner.clock.now()).await?),
            None => Ok(false),
        }
    }
}

/// What the refresh checks say.
pub(crate) enum RefreshCheck {
    /// Write the refresh.
    Go,
    /// Serve without a session, write nothing.
    Refused(Refusal),
    /// The user is banned: revoke instead.
    Banned,
    /// The ban check could not answer: serve the session unrefreshed.
    Unknown,
}

impl ManagerInner {
    fn ban_list(&self) -> Result<&Arc<dyn BanList>, SessionError> {
        self.bans.as_ref().ok_or_else(|| {
            SessionError::Store(StoreError::new(
                "no ban list: set SessionManagerBuilder::bans to ban users",
            ))
        })
    }

    fn hook_client(&self, client: &ClientFacts) -> HookClient {
        let info = self.tracking.client_info(client);
        HookClient {
            ip_address: info.ip_address,
            user_agent: info.user_agent,
        }
    }

    /// Before a session is created: the ban check, then the create hook. The fields to
    /// create it with, or why not.
    pub(crate) async fn before_create(
        &self,
        user_id: &str,
        fields: Map<String, Value>,
        client: &ClientFacts,
    ) -> Result<Map<String, Value>, SessionError> {
        if let Some(bans) = &self.bans {
            if bans.is_banned(user_id, self.clock.now()).await? {
                tracing::info!(user_id, "sign-in refused: the user is banned");
                return Err(SessionError::Refused(Refusal::USER_BANNED));
            }
        }
        if self.hooks.create.is_none() {
            return Ok(fields);
        }
        let attempt = CreateAttempt {
            user_id: user_id.to_owned(),
            fields: fields.clone(),
            client: self.hook_client(client),
        };
        let verdict = self
            .hooks
            .run(self.hooks.create.as_ref(), "create", attempt)
            .await;
        changed_fields(verdict, fields)
    }

    /// Before a refresh is written: the ban check, then the refresh hook.
    pub(crate) async fn before_refresh(
        &self,
        session: &Session,
        client: &ClientFacts,
    ) -> RefreshCheck {
        if let Some(bans) = &self.bans {
            match bans.is_banned(&session.user_id, self.clock.now()).await {
                Ok(true) => return RefreshCheck::Banned,
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(error = %chain(&error), "the ban check failed; serving the session unrefreshed");
                    return RefreshCheck::Unknown;
                }
            }
        }
        if self.hooks.refresh.is_none() {
            return RefreshCheck::Go;
        }
        let attempt = RefreshAttempt {
            session: session.clone(),
            client: self.hook_client(client),
        };
        match self
            .hooks
            .run(self.hooks.refresh.as_ref(), "refresh", attempt)
            .await
        {
            Verdict::Refuse(refusal) => RefreshCheck::Refused(refusal),
            _ => RefreshCheck::Go,
        }
    }

    /// Before app fields change: the update hook. The changes to apply, or why not.
    pub(crate) async fn before_update(
        &self,
        session: Session,
        changes: Map<String, Value>,
        from_client: bool,
    ) -> Result<Map<String, Value>, SessionError> {
        if self.hooks.update.is_none() {
            return Ok(changes);
        }
        let attempt = UpdateAttempt {
            session,
            changes: changes.clone(),
            from_client,
        };
        let verdict = self
            .hooks
            .run(self.hooks.update.as_ref(), "update", attempt)
            .await;
        changed_fields(verdict, changes)
    }

    /// Before a revocation: the revoke hook, for the reasons a user or an admin chose.
    pub(crate) async fn before_revoke(
        &self,
        target: RevokeTarget<'_>,
        reason: RevokeReason,
    ) -> Result<(), SessionError> {
        let asked = matches!(
            reason,
            RevokeReason::SignOut | RevokeReason::ByUser | RevokeReason::ByAdmin
        );
        if !asked || self.hooks.revoke.is_none() {
            return Ok(());
        }
        let (session_id, user_id) = match target {
            RevokeTarget::Token { session_id, .. } => (session_id, None),
            RevokeTarget::Session { id, owner } => (Some(id), owner),
            RevokeTarget::User { user_id, .. } | RevokeTarget::Sessions { user_id, .. } => {
                (None, Some(user_id))
            }
        };
        let attempt = RevokeAttempt {
            reason,
            session_id: session_id.map(str::to_owned),
            user_id: user_id.map(str::to_owned),
        };
        match self
            .hooks
            .run(self.hooks.revoke.as_ref(), "revoke", attempt)
            .await
        {
            Verdict::Refuse(refusal) => Err(SessionError::Refused(refusal)),
            _ => Ok(()),
        }
    }
}

/// The fields a create or update verdict leaves: the proposed ones, the hook's (checked
/// like any server code's), or the refusal.
fn changed_fields(
    verdict: Verdict,
    proposed: Map<String, Value>,
) -> Result<Map<String, Value>, SessionError> {
    match verdict {
        Verdict::Allow => Ok(proposed),
        Verdict::Change(fields) => {
            check_app_fields(&fields)?;
            Ok(fields)
        }
        Verdict::Refuse(refusal) => Err(SessionError::Refused(refusal)),
    }
}
