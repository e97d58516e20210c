//! Which app fields a client may write.
//!
//! App fields are what the server decides with (`role`, `plan`, `activeOrganizationId`),
//! so a field a browser can set is a field an attacker can set. Server code writes any
//! field ([`SignInOptions::fields`](crate::SignInOptions::fields),
//! [`SessionHandle::update_fields`](crate::SessionHandle::update_fields),
//! [`SessionManager::update_fields`](crate::SessionManager::update_fields)); what
//! arrives in a request (`POST /update-session`,
//! [`SessionHandle::update_fields_from_client`](crate::SessionHandle::update_fields_from_client))
//! is held to a [`FieldPolicy`] first.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::error::SessionError;
use crate::session::{IMPERSONATED_BY, folded_field_name};

/// Who may write one app field (Better Auth's `additionalFields` `input` option).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldAccess {
    /// A request may set or remove it (`theme`, a UI preference).
    Client,
    /// Only server code writes it; a request that tries is refused with
    /// [`SessionError::FieldNotWritable`] (403).
    ServerOnly,
}

/// The builder's rule for which app fields a request may write
/// ([`SessionManagerBuilder::field_policy`](crate::SessionManagerBuilder::field_policy)).
///
/// **Undeclared fields are server-only by default.** A field an app adds later (a
/// `plan`, a `tenantId`) is usually one it decides with, and the app that adds it rarely
/// remembers to lock it; with this default, forgetting leaves a field closed, never open.
/// An app whose fields are all preferences can open the rest with
/// [`undeclared`](Self::undeclared)`(FieldAccess::Client)` and still close some by name.
///
/// Names are compared in a folded form (case and `_ - . :` ignored): once `role` is
/// declared, a request writing `Role` or `ro_le` is refused too, so no spelling of a
/// server-only field can stand beside it for a client that reads keys loosely.
///
/// ```
/// use tower_auth_session::{FieldAccess, FieldPolicy, MemoryStore, SessionManager};
///
/// let policy = FieldPolicy::new()
///     .client_writable("theme")
///     .client_writable("activeOrganizationId")
///     .server_only("role");
/// let manager = SessionManager::builder(MemoryStore::new())
///     .secret(b"an example secret of at least 32 bytes!")
///     .field_policy(policy)
///     .build()
///     .unwrap();
/// # let _ = (manager, FieldAccess::Client);
/// ```
#[derive(Debug, Clone)]
pub struct FieldPolicy {
    /// Declared names, by folded form: the exact name and its access.
    declared: HashMap<String, (String, FieldAccess)>,
    undeclared: FieldAccess,
}

impl Default for FieldPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl FieldPolicy {
    /// No field declared; undeclared fields are [`FieldAccess::ServerOnly`], so a request
    /// can write nothing until the app says which fields it may.
    pub fn new() -> Self {
        Self {
            declared: HashMap::new(),
            undeclared: FieldAccess::ServerOnly,
        }
    }

    /// Lets a request write `name` (exactly this spelling).
    #[must_use]
    pub fn client_writable(self, name: impl Into<String>) -> Self {
        self.declare(name.into(), FieldAccess::Client)
    }

    /// Keeps `name`, in every spelling, for server code.
    #[must_use]
    pub fn server_only(self, name: impl Into<String>) -> Self {
        self.declare(name.into(), FieldAccess::ServerOnly)
    }

    /// Who may write the fields not declared by name.
    #[must_use]
    pub fn undeclared(mut self, access: FieldAccess) -> Self {
        self.undeclared = access;
        self
    }

    /// Every declared name, as declared (the builder checks them).
    pub(crate) fn declared_names(&self) -> impl Iterator<Item = &str> {
        self.declared.values().map(|(name, _)| name.as_str())
    }

    fn declare(mut self, name: String, access: FieldAccess) -> Self {
        self.declared
            .insert(folded_field_name(&name), (name, access));
        self
    }

    /// Who may write `name`: a declared name's access; another spelling of a declared
    /// name is server-only (it would pass for the declared one); anything else the
    /// undeclared rule. `impersonatedBy`, the mark of an impersonation session, is
    /// server-only in every policy and spelling.
    pub fn access(&self, name: &str) -> FieldAccess {
        let folded = folded_field_name(name);
        if folded == folded_field_name(IMPERSONATED_BY) {
            return FieldAccess::ServerOnly;
        }
        match self.declared.get(&folded) {
            Some((declared, access)) if declared == name => *access,
            Some(_) => FieldAccess::ServerOnly,
            None => self.undeclared,
        }
    }

    /// Refuses `changes` that a request may not make: the first field it may not write
    /// is [`SessionError::FieldNotWritable`]. Setting and removing (`null`) count alike.
    pub fn check_client_changes(&self, changes: &Map<String, Value>) -> Result<(), SessionError> {
        match changes
            .keys()
            .find(|name| self.access(name) == FieldAccess::ServerOnly)
        {
            Some(name) => Err(SessionError::FieldNotWritable(name.clone())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn changes(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn undeclared_fields_are_server_only_by_default() {
        let policy = FieldPolicy::new().client_writable("theme");
        assert!(
            policy
                .check_client_changes(&changes(json!({ "theme": "dark" })))
                .is_ok()
        );
        let refused = policy.check_client_changes(&changes(json!({ "plan": "pro" })));
        assert!(matches!(refused, Err(SessionError::FieldNotWritable(name)) if name == "plan"));
    }

    #[test]
    fn a_server_only_field_is_refused_in_every_spelling_and_when_removed() {
        let policy = FieldPolicy::new()
            .undeclared(FieldAccess::Client)
            .server_only("role");
        for name in ["role", "Role", "ROLE", "ro_le", "r-o.l:e"] {
            let set = policy.check_client_changes(&changes(json!({ name: "admin" })));
            assert!(
                matches!(set, Err(SessionError::FieldNotWritable(_))),
                "{name}"
            );
        }
        let removed = policy.check_client_changes(&changes(json!({ "role": null })));
        assert!(matches!(removed, Err(SessionError::FieldNotWritable(_))));
        assert!(
            policy
                .check_client_changes(&changes(json!({ "roles": 1 })))
                .is_ok()
        );
    }

    #[test]
    fn a_client_writable_field_is_writable_only_in_its_declared_spelling() {
        let policy = FieldPolicy::new()
            .undeclared(FieldAccess::Client)
            .client_writable("theme");
        assert_eq!(policy.access("theme"), FieldAccess::Client);
        assert_eq!(policy.access("Theme"), FieldAccess::ServerOnly);
    }
}
