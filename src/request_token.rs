//! Finding the session token a request presents: `Authorization: Bearer` first (explicit
//! beats ambient), then the `session_token` cookie, as the [`TokenTransport`] allows. The
//! MAC is checked here, before any I/O.
//!
//! An `Authorization` value that is not one of our signed tokens (another scheme, a
//! gateway's JWT, a token signed with a key no longer in the ring) is not ours to judge:
//! the request is read as if the header were absent, so a valid cookie beside it still
//! counts.

use http::{HeaderMap, header};

use crate::config::TokenTransport;
use crate::cookies::{CookieLookup, CookieNames, find_cookie};
use crate::token::{KeyRing, Token, TokenError, UncheckedToken};

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
    /// A cookie was sent but is malformed, oversized, duplicated or badly signed (a bearer
    /// value that is not ours is ignored instead, never `Invalid`).
    Invalid(TokenSource, TokenError),
    /// A correctly signed token.
    Valid { token: Token, source: TokenSource },
}

pub(crate) fn presented_token(
    keys: &KeyRing,
    names: &CookieNames,
    transport: TokenTransport,
    headers: &HeaderMap,
) -> PresentedToken {
    let cookie = if transport.uses_cookies() {
        find_cookie(headers, &names.session_token)
    } else {
        CookieLookup::Absent
    };
    presented_token_with(keys, names, transport, headers, cookie)
}

/// What the layer reads from a request whose cookie cache may vouch for its token: as
/// [`presented_token_with`], except that a cookie token's MAC is left to check
/// ([`Deferred::Cookie`]) so that a cache hit can skip it (`docs/ARCHITECTURE.md`, "The
/// token MAC on a cache hit").
pub(crate) enum Deferred<'a> {
    Checked(PresentedToken),
    Cookie(UncheckedToken<'a>),
}

pub(crate) fn presented_token_deferred<'a>(
    keys: &'a KeyRing,
    names: &CookieNames,
    transport: TokenTransport,
    headers: &HeaderMap,
    cookie: CookieLookup<'a>,
) -> Deferred<'a> {
    match cookie {
        // The bearer header still comes first: only without our bearer token is the
        // cookie what the request presents.
        CookieLookup::One(value)
            if transport.uses_cookies()
                && verified_bearer(keys, names, transport, headers).is_none() =>
        {
            match keys.parse_token(value) {
                Ok(unchecked) => Deferred::Cookie(unchecked),
                Err(error) => {
                    Deferred::Checked(PresentedToken::Invalid(TokenSource::Cookie, error))
                }
            }
        }
        cookie => Deferred::Checked(presented_token_with(
            keys, names, transport, headers, cookie,
        )),
    }
}

/// [`presented_token`] when the `session_token` cookie has already been looked up.
pub(crate) fn presented_token_with(
    keys: &KeyRing,
    names: &CookieNames,
    transport: TokenTransport,
    headers: &HeaderMap,
    cookie: CookieLookup<'_>,
) -> PresentedToken {
    let cookie_name = names.session_token.as_str();
    if let Some(token) = verified_bearer(keys, names, transport, headers) {
        return PresentedToken::Valid {
            token,
            source: TokenSource::Bearer,
        };
    }
    if !transport.uses_cookies() {
        return PresentedToken::None;
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

/// Our correctly signed token from `Authorization: Bearer`, if the transport reads bearer
/// tokens and the header holds one; anything else there is ignored.
pub(crate) fn verified_bearer(
    keys: &KeyRing,
    names: &CookieNames,
    transport: TokenTransport,
    headers: &HeaderMap,
) -> Option<Token> {
    if !transport.reads_bearer() {
        return None;
    }
    let value = bearer_value(headers)?;
    match keys.verify_token(&names.session_token, value) {
        Ok(token) => Some(token),
        Err(error) => {
            tracing::debug!(%error, "ignored an Authorization value that is not our token");
            None
        }
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
