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

    /// Whether the (unnormalised) `origin` names a trusted origin; never for an empty list.
    pub(crate) fn trusts(&self, origin: &str) -> bool {
        normalise_origin(origin).is_some_and(|origin| self.contains(&origin))
    }

    fn contains(&self, origin: &str) -> bool {
        self.origins.iter().any(|trusted| trusted == origin)
    }
}

/// `scheme://host[:port]` in canonical form, or `None` when `origin` is not one (a path,
/// user info, an empty host, a bad port, or the opaque origin `null`).
pub(crate) fn normalise_origin(origin: &str) -> Option<String> {
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
///
/// A colon is only ever the port separator or inside brackets, so an unbracketed host
/// with one (`4::443`, `x:443:443`) is refused rather than split somewhere; otherwise two
/// spellings could normalise to one trusted origin.
fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(inside) = authority.strip_prefix('[') {
        let (literal, rest) = inside.split_once(']')?;
        // Only an IPv6 address may be bracketed; `str::parse` also refuses zone ids,
        // which URLs do not allow.
        literal.parse::<std::net::Ipv6Addr>().ok()?;
        let host = &authority[..literal.len() + 2];
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    match port {
        None => Some((host, None)),
        Some(port) => Some((host, Some(parse_port(port)?))),
    }
}

/// A port is 1 to 5 ASCII digits: `u16::from_str` alone would take `+443`.
fn parse_port(port: &str) -> Option<u16> {
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.parse().ok()
}

/// Whether a state-changing request must be refused as cross-site: its `Origin` is
/// present and not in `trusted` (with an empty list: not the request's own `Host`), or
/// `Sec-Fetch-Site` says `cross-site`. A request that `authenticated_by_bearer` passes
/// (a browser never attaches a bearer token by itself), and so does one with neither
/// header (a non-browser client).
pub(crate) fn is_cross_site(
    trusted: &TrustedOrigins,
    headers: &HeaderMap,
    authenticated_by_bearer: bool,
) -> bool {
    if authenticated_by_bearer {
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
        assert_eq!(
            normalise_origin("https://[2001:DB8::1]:443").as_deref(),
            Some("https://[2001:db8::1]")
        );
        assert_eq!(
            normalise_origin("http://[::ffff:192.0.2.1]").as_deref(),
            Some("http://[::ffff:192.0.2.1]")
        );
        assert_eq!(
            normalise_origin("http://a.example:08080").as_deref(),
            Some("http://a.example:8080")
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
            // A colon in an unbracketed host, a signed or doubled port, a bracketed
            // non-address.
            "HTTPS://4::443",
            "https://x:443:443",
            "https://a.example:+443",
            "https://a.example:-1",
            "https://a.example:0443x",
            "https://a.example:000443",
            "http://[::1]]:80",
            "http://[::1]x",
            "http://[example.com]",
            "http://[]",
            "http://[::1%25eth0]",
            "http://[1:2:3:4:5:6:7:8:9]",
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
