//! The cross-site guard for state-changing requests (CSRF).
//!
//! Cookies ride along on requests that other sites make the browser send, so a POST that
//! changes sessions must prove it came from a page we trust. Browsers say where a request
//! comes from in `Origin` (every cross-origin and every POST `fetch`/form) and
//! `Sec-Fetch-Site`; scripts and native clients send neither, and cannot be made to send
//! a cookie by someone else, so they pass. A request that authenticates with
//! `Authorization: Bearer` carries its credential explicitly (a browser never adds one on
//! its own), so it passes too.

use http::{HeaderMap, header};

use crate::error::ConfigError;
use crate::manager::SessionManager;

/// The origins allowed to make state-changing requests, normalised to
/// `scheme://host[:port]` (lower case, default ports dropped).
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedOrigins {
    origins: Vec<String>,
}

impl TrustedOrigins {
    pub(crate) fn parse<I, S>(origins: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let origins = origins
            .into_iter()
            .map(|origin| {
                let origin = origin.as_ref().trim();
                normalise_origin(origin.strip_suffix('/').unwrap_or(origin)).ok_or_else(|| {
                    ConfigError::Invalid {
                        option: "trusted_origins",
                        reason: format!(
                            "{origin:?} is not an origin like https://app.example.com[:port]"
                        ),
                    }
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { origins })
    }

    fn contains(&self, origin: &str) -> bool {
        self.origins.iter().any(|trusted| trusted == origin)
    }
}

/// `scheme://host[:port]` in canonical form, or `None` when `origin` is not one (a path,
/// user info, an empty host, a bad port, or the opaque origin `null`).
fn normalise_origin(origin: &str) -> Option<String> {
    let (scheme, authority) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme || authority.is_empty() {
        return None;
    }
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let (host, port) = split_port(&authority)?;
    if host.is_empty() {
        return None;
    }
    let default_port = match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    Some(match port {
        Some(port) if Some(port) != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// Splits `host[:port]`, minding bracketed IPv6 hosts (`[::1]:8080`).
fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    match port {
        None => Some((host, None)),
        Some(port) => Some((host, Some(port.parse().ok()?))),
    }
}

/// Whether the request authenticates with `Authorization: Bearer …`, judged exactly as the
/// layer judges it: a header the layer would not read as a bearer token (say, an empty
/// one, after which the cookie counts) does not exempt the request from the guard.
fn has_bearer(headers: &HeaderMap) -> bool {
    crate::request_token::bearer_value(headers).is_some()
}

impl SessionManager {
    /// Whether a state-changing request must be refused as cross-site: its `Origin` is
    /// present and not trusted, or `Sec-Fetch-Site` says `cross-site`.
    ///
    /// Requests with neither header (non-browser clients) pass, and so do requests with
    /// `Authorization: Bearer` (a browser never attaches one by itself). With no trusted
    /// origins configured, an `Origin` passes only when it names the request's own `Host`
    /// (same-origin). The endpoints of [`router`](SessionManager::router) apply this to
    /// every POST; apply it to the app's own sign-in with the
    /// [`CrossSiteGuard`](crate::CrossSiteGuard) extractor.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use tower_auth_session::{MemoryStore, SessionManager};
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .trusted_origins(["https://app.example.com"])
    ///     .build()?;
    /// let mut headers = HeaderMap::new();
    /// headers.insert("origin", "https://evil.example".parse().unwrap());
    /// assert!(manager.is_cross_site(&headers));
    /// headers.insert("origin", "https://app.example.com".parse().unwrap());
    /// assert!(!manager.is_cross_site(&headers));
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn is_cross_site(&self, headers: &HeaderMap) -> bool {
        if has_bearer(headers) {
            return false;
        }
        let cross_site_fetch = headers
            .get_all("sec-fetch-site")
            .iter()
            .any(|value| value.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        if cross_site_fetch {
            return true;
        }
        let mut origins = headers.get_all(header::ORIGIN).iter();
        let Some(origin) = origins.next() else {
            return false;
        };
        if origins.next().is_some() {
            // Browsers send one Origin; several are not something we can vouch for.
            return true;
        }
        let Some(origin) = origin.to_str().ok().and_then(normalise_origin) else {
            return true;
        };
        let trusted = &self.inner.config.trusted_origins;
        if !trusted.origins.is_empty() {
            return !trusted.contains(&origin);
        }
        // Nothing configured: only the page's own origin. The browser sets `Host` to the
        // server it talks to, so a foreign page cannot make the two agree.
        let scheme = origin.split_once("://").map_or("", |(scheme, _)| scheme);
        let own_origin = headers
            .get(header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| normalise_origin(&format!("{scheme}://{host}")));
        own_origin.as_deref() != Some(origin.as_str())
    }
}

#[cfg(feature = "axum")]
pub use extract::CrossSiteGuard;

#[cfg(feature = "axum")]
mod extract {
    use axum::extract::FromRequestParts;
    use http::request::Parts;

    use crate::extract::SessionRejection;
    use crate::handle::SessionHandle;

    /// An extractor that refuses cross-site requests with 403
    /// `{"error":"cross_site_request"}` (see [`SessionManager::is_cross_site`](crate::SessionManager::is_cross_site)).
    /// Put it first in the arguments of state-changing handlers the app adds itself, such
    /// as sign-in; the endpoints of [`SessionManager::router`](crate::SessionManager::router) already use it.
    ///
    /// ```
    /// use axum::{Router, routing::post};
    /// use tower_auth_session::{CrossSiteGuard, MemoryStore, SessionHandle, SessionManager, SignInOptions};
    ///
    /// async fn sign_in(_: CrossSiteGuard, session: SessionHandle) -> &'static str {
    ///     // ... check the password ...
    ///     match session.sign_in("alice", SignInOptions::new()).await {
    ///         Ok(_) => "welcome",
    ///         Err(_) => "try again later",
    ///     }
    /// }
    ///
    /// let manager = SessionManager::builder(MemoryStore::new())
    ///     .secret(b"an example secret of at least 32 bytes!")
    ///     .trusted_origins(["https://app.example.com"])
    ///     .build()
    ///     .unwrap();
    /// let app: Router = Router::new().route("/sign-in", post(sign_in)).layer(manager.layer());
    /// # let _ = app;
    /// ```
    #[derive(Debug, Clone, Copy)]
    pub struct CrossSiteGuard;

    impl<S: Send + Sync> FromRequestParts<S> for CrossSiteGuard {
        type Rejection = SessionRejection;

        async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
            let handle = SessionHandle::from_request_parts(parts, state).await?;
            if handle.manager().is_cross_site(&parts.headers) {
                tracing::debug!(
                    origin = ?parts.headers.get(http::header::ORIGIN),
                    "refused a cross-site request"
                );
                return Err(SessionRejection::CrossSite);
            }
            Ok(Self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            normalise_origin("HTTPS://App.Example.com:443").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            normalise_origin("http://localhost:3000").as_deref(),
            Some("http://localhost:3000")
        );
        assert_eq!(
            normalise_origin("http://[::1]:8080").as_deref(),
            Some("http://[::1]:8080")
        );
        for bad in [
            "null",
            "app.example.com",
            "https://",
            "https://a.example/path",
            "https://user@a.example",
            "https://a.example:99999",
            "https://a.example:",
            "1http://a.example",
        ] {
            assert_eq!(normalise_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn trusted_origin_list_rejects_non_origins() {
        assert!(TrustedOrigins::parse(["https://a.example/"]).is_ok());
        assert!(TrustedOrigins::parse(["https://a.example/login"]).is_err());
        assert!(TrustedOrigins::parse(["*"]).is_err());
    }
}
