//! Who is on the other end: the client's IP address and user agent.
//!
//! The IP comes from the socket peer. `X-Forwarded-For` is believed only when the peer is a
//! configured trusted proxy, and then the chain is walked right to left past trusted hops:
//! the first untrusted address is the client. Anything malformed yields no address rather
//! than a guess.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue, header};
use ipnet::IpNet;

/// Longest user agent kept; longer ones are cut (on a character boundary).
const MAX_USER_AGENT_LEN: usize = 512;

/// What a request tells about its client, captured without allocating (header values are
/// reference-counted) and turned into strings only when a session is written.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientFacts {
    pub(crate) peer: Option<IpAddr>,
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) forwarded_for: Option<HeaderValue>,
}

impl ClientFacts {
    /// Nothing is captured when tracking is off: nothing would ever read it.
    pub(crate) fn from_request<B>(request: &http::Request<B>, tracking: &ClientTracking) -> Self {
        if tracking.disabled {
            return Self::default();
        }
        Self {
            peer: peer_addr(request),
            user_agent: request.headers().get(header::USER_AGENT).cloned(),
            // Only read when the peer is a trusted proxy, so never without one.
            forwarded_for: if tracking.trusted_proxies.is_empty() {
                None
            } else {
                forwarded_for(request.headers())
            },
        }
    }
}

/// Parsed once, not on every request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

fn forwarded_for(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(X_FORWARDED_FOR).iter();
    let first = values.next()?.clone();
    // Several headers are one list joined by commas; join them so the walk sees all hops.
    match values.next() {
        None => Some(first),
        Some(second) => {
            let mut joined = first.as_bytes().to_vec();
            for v in std::iter::once(second).chain(values) {
                joined.push(b',');
                joined.extend_from_slice(v.as_bytes());
            }
            HeaderValue::from_bytes(&joined).ok()
        }
    }
}

fn peer_addr<B>(request: &http::Request<B>) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(info.0.ip());
    }
    request.extensions().get::<SocketAddr>().map(|a| a.ip())
}

/// How client facts become the stored IP and user agent.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientTracking {
    pub(crate) disabled: bool,
    pub(crate) trusted_proxies: Vec<IpNet>,
}

/// The client as stored on a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientInfo {
    pub(crate) ip_address: Option<String>,
    pub(crate) user_agent: Option<String>,
}

impl ClientTracking {
    pub(crate) fn client_info(&self, facts: &ClientFacts) -> ClientInfo {
        if self.disabled {
            return ClientInfo::default();
        }
        ClientInfo {
            ip_address: self.client_ip(facts).map(|ip| ip.to_string()),
            user_agent: facts.user_agent.as_ref().map(|v| {
                let text = String::from_utf8_lossy(v.as_bytes());
                truncate_chars(&text, MAX_USER_AGENT_LEN).to_owned()
            }),
        }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    pub(crate) fn client_ip(&self, facts: &ClientFacts) -> Option<IpAddr> {
        let peer = normalise(facts.peer?);
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let Some(chain) = facts.forwarded_for.as_ref() else {
            return Some(peer);
        };
        let chain = chain.to_str().ok()?;
        let mut last_trusted = peer;
        for hop in chain.rsplit(',') {
            let ip = normalise(parse_hop(hop.trim())?);
            if !self.is_trusted(ip) {
                return Some(ip);
            }
            last_trusted = ip;
        }
        // Every hop is a trusted proxy: the leftmost is as close to the client as we know.
        Some(last_trusted)
    }
}

/// Parses one `X-Forwarded-For` hop: a bare address, or one with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

/// IPv4-mapped IPv6 (`::ffff:1.2.3.4`) is the IPv4 address.
pub(crate) fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn truncate_chars(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(peer: &str, xff: Option<&str>) -> ClientFacts {
        ClientFacts {
            peer: Some(peer.parse().unwrap()),
            user_agent: None,
            forwarded_for: xff.map(|v| HeaderValue::from_str(v).unwrap()),
        }
    }

    fn tracking(proxies: &[&str]) -> ClientTracking {
        ClientTracking {
            disabled: false,
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn forwarded_for_is_ignored_without_trusted_proxies() {
        let ip = tracking(&[]).client_ip(&facts("10.0.0.1", Some("6.6.6.6")));
        assert_eq!(ip, Some("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn chain_is_walked_right_to_left_past_trusted_hops() {
        let t = tracking(&["10.0.0.0/8"]);
        let ip = t.client_ip(&facts("10.0.0.1", Some("6.6.6.6, 203.0.113.7, 10.1.2.3")));
        assert_eq!(ip, Some("203.0.113.7".parse().unwrap()));
    }

    #[test]
    fn malformed_hop_yields_no_address() {
        let t = tracking(&["10.0.0.0/8"]);
        assert_eq!(
            t.client_ip(&facts("10.0.0.1", Some("garbage, 10.1.1.1"))),
            None
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_is_normalised() {
        let ip = tracking(&[]).client_ip(&facts("::ffff:192.0.2.1", None));
        assert_eq!(ip, Some("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn tracking_can_be_turned_off() {
        let mut t = tracking(&[]);
        t.disabled = true;
        assert_eq!(
            t.client_info(&facts("192.0.2.1", None)),
            ClientInfo::default()
        );
    }
}
