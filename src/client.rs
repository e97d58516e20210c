//! Who is on the other end: the client's IP address and user agent.
//!
//! The IP comes from the socket peer, as the server put it in the request extensions:
//! the app's own hook (`SessionManagerBuilder::client_address`) first, then axum's
//! `ConnectInfo<SocketAddr>`, a bare `SocketAddr` (hyper: the app inserts it), and
//! tonic's `TcpConnectInfo` (feature `tonic`). The layer reads it when the request
//! reaches it, so the address must be inserted *outside* the layer (axum's
//! `into_make_service_with_connect_info` and tonic's server do); when tracking is on and
//! none is found, one warning says so. `X-Forwarded-For` is believed only when the peer is a
//! configured trusted proxy, and then the chain is walked right to left past trusted hops:
//! the first untrusted address is the client. Anything malformed yields no address rather
//! than a guess.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
        let peer = tracking.peer_of(request);
        if peer.is_none() && !tracking.warned_no_peer.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "no client address in the request extensions: sessions record no IP. Insert the \
                 peer's SocketAddr outside the session layer (axum: \
                 into_make_service_with_connect_info; hyper: before calling the layered \
                 service), or set SessionManagerBuilder::client_address"
            );
        }
        Self {
            peer,
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

/// The socket peer as the servers we know put it in the extensions.
fn peer_addr(extensions: &http::Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    if let Some(addr) = extensions.get::<SocketAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "tonic")]
    if let Some(info) = extensions.get::<tonic::transport::server::TcpConnectInfo>() {
        return info.remote_addr().map(|addr| addr.ip());
    }
    None
}

/// A function from the request extensions to the peer's address.
type FindAddress = dyn Fn(&http::Extensions) -> Option<IpAddr> + Send + Sync;

/// The app's own way to find the peer address in the request extensions.
#[derive(Clone)]
pub(crate) struct AddressHook(pub(crate) Arc<FindAddress>);

impl std::fmt::Debug for AddressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AddressHook(..)")
    }
}

/// How client facts become the stored IP and user agent.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientTracking {
    pub(crate) disabled: bool,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) address_hook: Option<AddressHook>,
    /// Set once the missing-address warning has been logged.
    pub(crate) warned_no_peer: Arc<AtomicBool>,
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

    /// The socket peer, as the app's hook or the server put it in the extensions.
    fn peer_of<B>(&self, request: &http::Request<B>) -> Option<IpAddr> {
        self.address_hook
            .as_ref()
            .and_then(|hook| (hook.0)(request.extensions()))
            .or_else(|| peer_addr(request.extensions()))
    }

    /// The client's address as [`client_ip`](Self::client_ip) decides it, straight from a
    /// request and whether or not sessions record it: what a per-client rate limit keys
    /// on, so a forged `X-Forwarded-For` moves a client to a fresh budget no more than it
    /// changes the IP its sessions show.
    #[cfg_attr(not(feature = "rate-limit"), allow(dead_code))]
    pub(crate) fn request_ip<B>(&self, request: &http::Request<B>) -> Option<IpAddr> {
        let facts = ClientFacts {
            peer: self.peer_of(request),
            user_agent: None,
            forwarded_for: if self.trusted_proxies.is_empty() {
                None
            } else {
                forwarded_for(request.headers())
            },
        };
        self.client_ip(&facts)
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
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
            ..ClientTracking::default()
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

    fn peer_of(tracking: &ClientTracking, extensions: http::Extensions) -> Option<IpAddr> {
        let mut request = http::Request::new(());
        *request.extensions_mut() = extensions;
        ClientFacts::from_request(&request, tracking).peer
    }

    #[test]
    fn the_peer_is_read_from_each_servers_extension_and_the_hook_comes_first() {
        let addr: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let mut bare = http::Extensions::new();
        bare.insert(addr);
        assert_eq!(peer_of(&tracking(&[]), bare.clone()), Some(addr.ip()));
        #[cfg(feature = "axum")]
        {
            let mut axum = http::Extensions::new();
            axum.insert(axum::extract::ConnectInfo(addr));
            assert_eq!(peer_of(&tracking(&[]), axum), Some(addr.ip()));
        }
        #[cfg(feature = "tonic")]
        {
            let mut tonic = http::Extensions::new();
            tonic.insert(tonic::transport::server::TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(addr),
            });
            assert_eq!(peer_of(&tracking(&[]), tonic), Some(addr.ip()));
        }
        let mut hooked = tracking(&[]);
        hooked.address_hook = Some(AddressHook(Arc::new(|_| "198.51.100.1".parse().ok())));
        assert_eq!(peer_of(&hooked, bare), "198.51.100.1".parse().ok());
        assert_eq!(peer_of(&tracking(&[]), http::Extensions::new()), None);
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
