//! Lifecycle events: what happened to which session, for audit logs and metrics.
//!
//! The manager owns one [`tokio::sync::broadcast`] channel; [`SessionManager::subscribe`](crate::SessionManager::subscribe)
//! hands out receivers. Sending never waits: with no subscriber an event is dropped before
//! it is even built, and a subscriber that falls behind by more than the channel's capacity
//! sees [`RecvError::Lagged`](tokio::sync::broadcast::error::RecvError::Lagged) rather than
//! slowing requests down. Events carry the [`Session`] record, which never holds a token.

use tokio::sync::broadcast;

use crate::session::Session;

/// How many events a subscriber may fall behind before it starts missing some.
pub(crate) const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// Something that happened to a session.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A user signed in: a new session exists.
    Created {
        /// The new session.
        session: Session,
    },
    /// Someone began impersonating a user: `session` is the new session of the user
    /// impersonated (its `impersonatedBy` field names the impersonator too).
    Impersonated {
        /// The impersonation session.
        session: Session,
        /// The user id of whoever impersonates.
        impersonator: String,
    },
    /// A session's expiry slid forward (and its last-seen time, IP and user agent were
    /// recorded).
    Refreshed {
        /// The session as written.
        session: Session,
    },
    /// The user proved who they are again ([`SessionHandle::reauthenticate`](crate::SessionHandle::reauthenticate)).
    Reauthenticated {
        /// The session as written.
        session: Session,
    },
    /// The session got a new token ([`SessionHandle::rotate`](crate::SessionHandle::rotate));
    /// the old one no longer works.
    Rotated {
        /// The session as written.
        session: Session,
    },
    /// A session was revoked before its time.
    Revoked {
        /// The session as it was when it was deleted.
        session: Session,
        /// Who or what revoked it.
        reason: RevokeReason,
    },
    /// An expired session was found on a request and deleted.
    Expired {
        /// The session as it was when it was deleted.
        session: Session,
    },
    /// The cleanup task (or [`SessionManager::delete_expired`](crate::SessionManager::delete_expired)) deleted expired sessions
    /// in bulk; stores do not say which.
    ExpiredSwept {
        /// How many were deleted.
        count: u64,
    },
}

/// Why a session was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RevokeReason {
    /// The session signed itself out.
    SignOut,
    /// A new sign-in on the same client replaced it (no session fixation).
    Replaced,
    /// The user revoked it from one of their sessions (revoke by id, revoke others,
    /// revoke all).
    ByUser,
    /// The application revoked it through the admin API on [`SessionManager`](crate::SessionManager).
    ByAdmin,
    /// The user went over the per-user session limit and this was their oldest session.
    SessionLimit,
    /// The user was banned ([`SessionManager::ban_user`](crate::SessionManager::ban_user),
    /// or a refresh that found the ban check saying so).
    Banned,
}

/// The sending half, owned by the manager.
#[derive(Debug)]
pub(crate) struct EventBus {
    sender: broadcast::Sender<SessionEvent>,
}

impl EventBus {
    pub(crate) fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Self { sender }
    }

    /// Sends the event `build` makes, building it only if someone listens (events clone
    /// whole sessions, and most apps never subscribe).
    pub(crate) fn emit(&self, build: impl FnOnce() -> SessionEvent) {
        if self.sender.receiver_count() > 0 {
            // An error only means every receiver went away in the meantime.
            let _ = self.sender.send(build());
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.sender.subscribe()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(DEFAULT_EVENT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_built_without_subscribers() {
        let bus = EventBus::new(4);
        bus.emit(|| panic!("no receiver, so the event must not be built"));
        let mut receiver = bus.subscribe();
        bus.emit(|| SessionEvent::ExpiredSwept { count: 3 });
        assert_eq!(
            receiver.try_recv().unwrap(),
            SessionEvent::ExpiredSwept { count: 3 }
        );
    }
}
