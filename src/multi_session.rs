//! Several signed-in accounts in one browser (Better Auth's `multiSession` plugin), on
//! [`SessionHandle`].
//!
//! Each account's token sits in a cookie of its own, `<session cookie base>multi-<session
//! id>` (`__Host-tas.multi-…`: the same prefix rules as `session_token`), signed under that
//! name, so no account's cookie is a credential under another name. The active account
//! is simply the one in `session_token`: the layer, handlers, extractors and the cookie
//! cache see only it. Switching copies another account's token into `session_token` (a
//! cookie change, no new session). These cookies are read only here, from the `Cookie`
//! headers the layer keeps when the feature is on, never on the hot path.

use crate::cookies::{Lifetime, cookie_pairs, expired_cookie, set_cookie};
use crate::error::{SessionError, chain};
use crate::events::RevokeReason;
use crate::handle::SessionHandle;
use crate::session::Session;
use crate::token::Token;

/// What every account cookie's name starts with.
fn account_cookie_prefix(session_token: &str) -> String {
    let base = session_token
        .strip_suffix("session_token")
        .unwrap_or(session_token);
    format!("{base}multi-")
}

/// One account this browser holds: its cookie, its token and its live session.
struct Account {
    cookie: String,
    token: Token,
    session: Session,
}

impl SessionHandle {
    /// The names of the account cookies the request carried, each once (a name sent
    /// twice is ambiguous and left out, as for every cookie of ours), at most a few more
    /// than the limit: a request stuffed with account cookies costs no more reads.
    fn account_cookies(&self) -> Vec<(String, Vec<u8>)> {
        let manager = &self.manager().inner;
        let prefix = account_cookie_prefix(&manager.names.session_token);
        let headers = self.request_cookies();
        let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
        let mut twice: Vec<String> = Vec::new();
        for (name, value) in cookie_pairs(&headers) {
            let Ok(name) = std::str::from_utf8(name) else {
                continue;
            };
            if !name.starts_with(&prefix) {
                continue;
            }
            if seen.iter().any(|(known, _)| known == name) {
                twice.push(name.to_owned());
            } else {
                seen.push((name.to_owned(), value.to_vec()));
            }
        }
        seen.retain(|(name, _)| !twice.contains(name));
        seen.truncate(manager.multi_session + 2);
        seen
    }

    /// The accounts whose cookie verifies and whose session is live, oldest first.
    async fn accounts(&self) -> Result<Vec<Account>, SessionError> {
        let manager = &self.manager().inner;
        let prefix = account_cookie_prefix(&manager.names.session_token);
        let now = manager.clock.now();
        let mut accounts = Vec::new();
        for (cookie, value) in self.account_cookies() {
            let Ok(token) = manager.keys.verify_token(&cookie, &value) else {
                continue;
            };
            let Some(session) = manager.store.find(&token.hash()).await? else {
                continue;
            };
            // The name carries the id it was issued for.
            if session.is_expired(now) || cookie[prefix.len()..] != *session.id {
                continue;
            }
            accounts.push(Account {
                cookie,
                token,
                session,
            });
        }
        accounts.sort_by(|a, b| {
            (a.session.created_at, &a.session.id).cmp(&(b.session.created_at, &b.session.id))
        });
        Ok(accounts)
    }

    /// The cookie that holds `session`'s account, as the response sets it.
    fn account_cookie(&self, token: &Token, session: &Session) -> http::HeaderValue {
        let manager = &self.manager().inner;
        let name = format!(
            "{}{}",
            account_cookie_prefix(&manager.names.session_token),
            session.id
        );
        let signed = manager.keys.sign_token(&name, token);
        let lifetime = if session.remember {
            Lifetime::MaxAge(session.expires_at - manager.clock.now())
        } else {
            Lifetime::BrowserSession
        };
        set_cookie(&manager.config, &name, &signed, lifetime)
    }

    /// After a sign-in with several accounts on: the new session gets its account
    /// cookie, and past the limit the oldest accounts are signed out. Never fails the
    /// sign-in (logged).
    pub(crate) async fn add_account(&self, token: &Token, session: &Session) {
        self.push_cookie(self.account_cookie(token, session));
        let manager = &self.manager().inner;
        let accounts = match self.accounts().await {
            Ok(accounts) => accounts,
            Err(error) => {
                tracing::warn!(error = %chain(&error), "could not read this browser's other accounts; the account limit is checked at the next sign-in");
                return;
            }
        };
        let over = (accounts.len() + 1).saturating_sub(manager.multi_session);
        for oldest in accounts.into_iter().take(over) {
            let hash = oldest.token.hash();
            if let Err(error) = self
                .revoke_or_owe(
                    hash,
                    Some(oldest.session.id.clone()),
                    RevokeReason::SessionLimit,
                )
                .await
            {
                tracing::warn!(error = %chain(&error), "could not sign the oldest account out");
            }
            self.push_cookie(expired_cookie(&manager.config, &oldest.cookie));
        }
    }

    /// Every account signed in on this browser (Better Auth's
    /// `multiSession.listDeviceSessions`), oldest first; the active one included.
    pub async fn device_sessions(&self) -> Result<Vec<Session>, SessionError> {
        let mut sessions: Vec<Session> = self
            .accounts()
            .await?
            .into_iter()
            .map(|a| a.session)
            .collect();
        if let Some(current) = self.current() {
            if !sessions.iter().any(|s| s.id == current.id) {
                sessions.push(current);
            }
        }
        Ok(sessions)
    }

    /// Makes the account whose session has the public id `session_id` the active one
    /// (`multiSession.setActive`): the response moves its token into `session_token`. No
    /// session is created. [`SessionError::NoSession`] when `session_id` is not one of
    /// this browser's live accounts.
    pub async fn set_active_session(&self, session_id: &str) -> Result<Session, SessionError> {
        let account = self
            .accounts()
            .await?
            .into_iter()
            .find(|account| account.session.id == session_id)
            .ok_or(SessionError::NoSession)?;
        let hash = account.token.hash();
        self.adopt(account.token, hash, account.session.clone());
        Ok(account.session)
    }

    /// Signs the account `session_id` of this browser out (`multiSession.revoke`). If it
    /// was the active one, the newest remaining account becomes active, or with none left
    /// every session cookie is cleared. An id that is not one of this browser's accounts
    /// changes nothing.
    pub async fn revoke_device_session(&self, session_id: &str) -> Result<(), SessionError> {
        let manager = &self.manager().inner;
        let mut accounts = self.accounts().await?;
        let Some(at) = accounts.iter().position(|a| a.session.id == session_id) else {
            return Ok(());
        };
        let account = accounts.remove(at);
        self.revoke_or_owe(
            account.token.hash(),
            Some(account.session.id.clone()),
            RevokeReason::ByUser,
        )
        .await?;
        self.push_cookie(expired_cookie(&manager.config, &account.cookie));
        let was_active = self
            .current()
            .is_some_and(|current| current.id == session_id);
        if was_active {
            match accounts.pop() {
                Some(next) => {
                    let hash = next.token.hash();
                    self.adopt(next.token, hash, next.session);
                }
                None => self.signed_out_here(),
            }
        }
        Ok(())
    }

    /// Sign-out with several accounts: every other account is signed out too and every
    /// account cookie cleared (Better Auth's rule). Failures are logged; the cookies go.
    pub(crate) async fn sign_out_other_accounts(&self) {
        let manager = &self.manager().inner;
        match self.accounts().await {
            Ok(accounts) => {
                for account in accounts {
                    let id = Some(account.session.id.clone());
                    if let Err(error) = self
                        .revoke_or_owe(account.token.hash(), id, RevokeReason::SignOut)
                        .await
                    {
                        tracing::warn!(error = %chain(&error), "could not sign another account out");
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %chain(&error), "could not read this browser's other accounts to sign them out");
            }
        }
        for (cookie, _) in self.account_cookies() {
            self.push_cookie(expired_cookie(&manager.config, &cookie));
        }
    }
}
