//! A user's sessions one page at a time.
//!
//! The [`SessionStore`](crate::SessionStore) trait has no paging, so a page is cut from
//! `list_by_user` (oldest first) here, after one read: the store is asked for the whole
//! list, the response carries one page. With the per-user cap (100 by default) a list is
//! bounded anyway; paging bounds what goes over the wire and into a browser.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::SessionManager;
use crate::error::SessionError;
use crate::session::Session;

/// Most sessions one page holds; a larger `limit` is cut to this.
pub(crate) const MAX_PAGE_SIZE: usize = 100;

/// One page of a user's sessions, oldest first.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionPage {
    /// The sessions on this page.
    pub sessions: Vec<Session>,
    /// Pass this back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Where a page starts: after the session with this `(created_at, id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    created_at_ms: i64,
    id: String,
}

impl Cursor {
    fn after(session: &Session) -> Self {
        Self {
            created_at_ms: session.created_at.timestamp_millis(),
            id: session.id.clone(),
        }
    }

    /// Opaque to clients: base64url of `<created_at ms>.<id>`.
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.created_at_ms, self.id))
    }

    fn decode(text: &str) -> Result<Self, SessionError> {
        let bad = || SessionError::InvalidCursor;
        if text.is_empty() || text.len() > 256 {
            return Err(bad());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (ms, id) = text.split_once('.').ok_or_else(bad)?;
        let created_at_ms = ms.parse().map_err(|_| bad())?;
        if id.is_empty() {
            return Err(bad());
        }
        Ok(Self {
            created_at_ms,
            id: id.to_owned(),
        })
    }

    /// Whether `session` comes after this cursor in `(created_at, id)` order.
    fn precedes(&self, session: &Session) -> bool {
        let key = (session.created_at.timestamp_millis(), session.id.as_str());
        key > (self.created_at_ms, self.id.as_str())
    }
}

/// The page of `sessions` (any order) after `cursor`, at most `limit` long.
pub(crate) fn page_of(
    mut sessions: Vec<Session>,
    limit: usize,
    cursor: Option<&str>,
) -> Result<SessionPage, SessionError> {
    let cursor = cursor.map(Cursor::decode).transpose()?;
    let limit = limit.clamp(1, MAX_PAGE_SIZE);
    sessions.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
    let mut rest = sessions
        .into_iter()
        .filter(|s| cursor.as_ref().is_none_or(|c| c.precedes(s)));
    let page: Vec<Session> = rest.by_ref().take(limit).collect();
    let next_cursor = match (rest.next(), page.last()) {
        (Some(_), Some(last)) => Some(Cursor::after(last).encode()),
        _ => None,
    };
    Ok(SessionPage {
        sessions: page,
        next_cursor,
    })
}

fn order_key(session: &Session) -> (DateTime<Utc>, &str) {
    (session.created_at, session.id.as_str())
}

impl SessionManager {
    /// One page of a user's live sessions, oldest first: at most `limit` of them (1 to
    /// 100; 0 counts as 1, more as 100), starting after `cursor` (`None` for the first
    /// page; otherwise a `next_cursor` this method returned). A cursor stays valid when
    /// sessions are added or revoked between pages: the next page starts after the last
    /// session shown. A cursor that was not handed out is `SessionError::InvalidCursor`.
    ///
    /// ```
    /// # async fn example(manager: tower_auth_session::SessionManager) -> Result<(), tower_auth_session::SessionError> {
    /// let mut cursor = None;
    /// loop {
    ///     let page = manager.list_user_sessions_page("alice", 20, cursor.as_deref()).await?;
    ///     for session in &page.sessions {
    ///         println!("{} {:?}", session.id, session.user_agent);
    ///     }
    ///     match page.next_cursor {
    ///         Some(next) => cursor = Some(next),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_user_sessions_page(
        &self,
        user_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<SessionPage, SessionError> {
        // A bad cursor is refused before any I/O.
        if let Some(cursor) = cursor {
            Cursor::decode(cursor)?;
        }
        let sessions = self.list_user_sessions(user_id).await?;
        page_of(sessions, limit, cursor)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn sessions(n: usize) -> Vec<Session> {
        let start = Utc::now();
        (0..n)
            .map(|i| {
                // Pairs share a creation instant, so the id breaks the tie.
                let at = start + Duration::milliseconds((i / 2) as i64);
                Session::new("alice".to_owned(), at, at + Duration::hours(1))
            })
            .collect()
    }

    #[test]
    fn pages_cover_every_session_once_in_order() {
        let all = sessions(7);
        let mut expected = all.clone();
        expected.sort_by(|a, b| order_key(a).cmp(&order_key(b)));
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = page_of(all.clone(), 3, cursor.as_deref()).unwrap();
            assert!(page.sessions.len() <= 3);
            seen.extend(page.sessions.into_iter().map(|s| s.id));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let expected: Vec<String> = expected.into_iter().map(|s| s.id).collect();
        assert_eq!(seen, expected);
        // An exact fit has no next page.
        assert!(page_of(all.clone(), 7, None).unwrap().next_cursor.is_none());
        assert_eq!(page_of(all, 0, None).unwrap().sessions.len(), 1);
    }

    #[test]
    fn only_cursors_it_handed_out_are_accepted() {
        for bad in ["", "!!", "bm90LWEtY3Vyc29y", &"A".repeat(300)] {
            assert!(
                matches!(Cursor::decode(bad), Err(SessionError::InvalidCursor)),
                "{bad:?}"
            );
        }
        let cursor = Cursor {
            created_at_ms: 1_700_000_000_123,
            id: "abc".into(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    }
}
