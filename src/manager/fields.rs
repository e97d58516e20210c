//! Changing a session's app fields from outside a request (the admin side of
//! `SessionHandle::update_fields`).

use serde_json::{Map, Value};

use super::SessionManager;
use crate::error::SessionError;
use crate::session::{Session, check_app_fields};

/// Merges `changes` into `fields`: a value is set, `null` removes the name.
pub(crate) fn merge_fields(fields: &mut Map<String, Value>, changes: &Map<String, Value>) {
    for (name, value) in changes {
        if value.is_null() {
            fields.remove(name);
        } else {
            fields.insert(name.clone(), value.clone());
        }
    }
}

impl SessionManager {
    /// Changes the app fields of the session with this public id (a role changed by an
    /// administrator, an organisation removed): each key of `changes` is set, `null`
    /// removes it. `Ok(None)` when no live session has that id.
    ///
    /// As [`SessionHandle::update_fields`](crate::SessionHandle::update_fields): a
    /// conditional write on the session's generation, mirrored to Redis, and every
    /// instance refuses the older cookie caches before this returns. Built-in field names
    /// are refused with [`SessionError::Fields`].
    pub async fn update_fields(
        &self,
        session_id: &str,
        changes: Map<String, Value>,
    ) -> Result<Option<Session>, SessionError> {
        check_app_fields(&changes)?;
        let inner = &self.inner;
        let changes = if inner.hooks.update.is_some() {
            let Some(stored) = inner.store.find_by_id(session_id).await? else {
                return Ok(None);
            };
            inner.before_update(stored.session, changes, false).await?
        } else {
            changes
        };
        let read = || async {
            let Some(stored) = inner.store.find_by_id(session_id).await? else {
                return Ok(None);
            };
            let live = !stored.session.is_expired(inner.clock.now());
            Ok(live.then_some((stored.token_hash, stored.session)))
        };
        let written = inner
            .rewrite(read, None, |session, now| {
                merge_fields(&mut session.fields, &changes);
                session.updated_at = now;
            })
            .await?;
        let Some(updated) = written else {
            return Ok(None);
        };
        tracing::info!(session_id = %updated.id, user_id = ?updated.user_id, "session fields updated by the admin API");
        inner.superseded(&updated).await?;
        Ok(Some(updated))
    }
}
