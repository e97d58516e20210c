//! Finding the session token a request presents: `Authorization: Bearer` first (explicit
//! beats ambient), then the `session_token` cookie. The MAC is checked here, before any I/O.

use http::{HeaderMap, header};

use crate::cookies::{CookieLookup, CookieNames, find_cookie};
use crate::token::{KeyRing, Token, TokenError};

/// Where the token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// The `session_token` cookie.
    Cookie,
    /// An `Authorization: Bearer` header.
    Bearer,
}

/// The token a request presents, after the MAC check.
#[derive(Debug, Clone)]
pub(crate) enum PresentedToken {
    /// No token at all.
    None,
    /// A token was sent but is malformed, oversized, duplicated or badly signed.
    Invalid(TokenSource, TokenError),
    /// A correctly signed token.
    Valid { token: Token, source: TokenSource },
}

pub(crate) fn presented_token(
    keys: &KeyRing,
    names: &CookieNames,
    headers: &HeaderMap,
) -> PresentedToken {
    let cookie = find_cookie(headers, &names.session_token);
    presented_token_with(keys, names, headers, cookie)
}

/// [`presented_token`] when the `session_token` cookie has already been looked up.
pub(crate) fn presented_token_with(
    keys: &KeyRing,
    names: &CookieNames,
    headers: &HeaderMap,
    cookie: CookieLookup<'_>,
) -> PresentedToken {
    let cookie_name = names.session_token.as_str();
    if let Some(value) = bearer_value(headers) {
        return match keys.verify_token(cookie_name, value) {
            Ok(token) => PresentedToken::Valid {
                token,
                source: TokenSource::Bearer,
            },
            Err(error) => PresentedToken::Invalid(TokenSource::Bearer, error),
        };
    }
    match cookie {
        CookieLookup::Absent => PresentedToken::None,
        CookieLookup::Bad => PresentedToken::Invalid(TokenSource::Cookie, TokenError::Malformed),
        CookieLookup::One(value) => match keys.verify_token(cookie_name, value) {
            Ok(token) => PresentedToken::Valid {
                token,
                source: TokenSource::Cookie,
            },
            Err(error) => PresentedToken::Invalid(TokenSource::Cookie, error),
        },
    }
}

/// The credentials of an `Authorization: Bearer …` header (scheme case-insensitive).
pub(crate) fn bearer_value(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let rest = rest.trim_ascii();
    (!rest.is_empty()).then_some(rest)
}
