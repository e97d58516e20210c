//! The decision: which rule a request falls under, which client it is, and whether that
//! client has budget left (in memory, or in Redis when the rules are shared).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};

use super::{Budget, Matcher, RateLimit};
use crate::client::ClientTracking;

/// Every this many checks, clients whose budget has refilled are forgotten, so memory
/// follows the clients of the last window rather than every client ever seen.
const FORGET_EVERY: u64 = 4096;

/// Who is counted: an IPv4 address, or the /64 an IPv6 address sits in (one subscriber
/// usually holds a whole /64, so counting single IPv6 addresses would count nothing).
/// Requests without a known address share one budget: a server that does not pass the
/// peer address limits them together rather than not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum ClientKey {
    V4(u32),
    V6Net(u64),
    Unknown,
}

impl ClientKey {
    pub(super) fn of(ip: Option<IpAddr>) -> Self {
        match ip {
            Some(IpAddr::V4(v4)) => Self::V4(v4.to_bits()),
            Some(IpAddr::V6(v6)) => Self::V6Net((v6.to_bits() >> 64) as u64),
            None => Self::Unknown,
        }
    }

    /// The key's text in a Redis key.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn label(&self) -> String {
        match self {
            Self::V4(bits) => format!("4:{}", std::net::Ipv4Addr::from_bits(*bits)),
            Self::V6Net(net) => format!("6:{net:016x}"),
            Self::Unknown => "unknown".to_owned(),
        }
    }
}

/// One rule with its in-memory counts.
struct Rule {
    matcher: Matcher,
    budget: Budget,
    memory: DefaultKeyedRateLimiter<ClientKey>,
}

/// The running limiter behind a [`RateLimitLayer`](super::RateLimitLayer).
pub(super) struct Limiter {
    rules: Vec<Rule>,
    tracking: ClientTracking,
    checks: AtomicU64,
    #[cfg(feature = "redis")]
    pub(super) shared: Option<crate::secondary::RedisStorage>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules: Vec<_> = self.rules.iter().map(|r| (&r.matcher, r.budget)).collect();
        f.debug_struct("Limiter")
            .field("rules", &rules)
            .finish_non_exhaustive()
    }
}

impl Limiter {
    pub(super) fn new(limits: RateLimit, tracking: ClientTracking) -> Self {
        let rules = limits
            .rules
            .into_iter()
            .map(|(matcher, budget)| {
                let quota = Quota::with_period(budget.interval())
                    .expect("a budget's interval is at least 1 ms")
                    .allow_burst(budget.max);
                Rule {
                    matcher,
                    budget,
                    memory: DefaultKeyedRateLimiter::keyed(quota),
                }
            })
            .collect();
        Self {
            rules,
            tracking,
            checks: AtomicU64::new(0),
            #[cfg(feature = "redis")]
            shared: limits.shared,
        }
    }

    /// The index of the first rule that counts `path`.
    pub(super) fn rule_for(&self, path: &str) -> Option<usize> {
        self.rules
            .iter()
            .position(|rule| rule.matcher.matches(path))
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn budget(&self, rule: usize) -> Budget {
        self.rules[rule].budget
    }

    pub(super) fn client_of<B>(&self, request: &http::Request<B>) -> ClientKey {
        ClientKey::of(self.tracking.request_ip(request))
    }

    /// Counts one request in this process: `None` if it is within budget, else how long
    /// until it would be.
    pub(super) fn check_in_memory(&self, rule: usize, client: ClientKey) -> Option<Duration> {
        let memory = &self.rules[rule].memory;
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            for rule in &self.rules {
                rule.memory.retain_recent();
                rule.memory.shrink_to_fit();
            }
        }
        memory
            .check_key(&client)
            .err()
            .map(|not_until| not_until.wait_time_from(memory.clock().now()))
    }

    /// How many clients this process holds counts for (all rules).
    #[cfg(test)]
    pub(super) fn clients_held(&self) -> usize {
        self.rules.iter().map(|rule| rule.memory.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn limiter(max: u32) -> Limiter {
        let limits = RateLimit::new().every_request(Budget::new(max, Duration::from_secs(10)));
        Limiter::new(limits, ClientTracking::default())
    }

    #[test]
    fn the_request_past_max_waits_one_interval() {
        let limiter = limiter(3);
        let client = ClientKey::of(Some("192.0.2.1".parse().unwrap()));
        for _ in 0..3 {
            assert_eq!(limiter.check_in_memory(0, client), None);
        }
        let wait = limiter
            .check_in_memory(0, client)
            .expect("the 4th is refused");
        assert!(
            wait > Duration::from_secs(3) && wait <= Duration::from_millis(3334),
            "{wait:?}"
        );
        let other = ClientKey::of(Some("192.0.2.2".parse().unwrap()));
        assert_eq!(
            limiter.check_in_memory(0, other),
            None,
            "budgets are per client"
        );
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(Some(a.into())), ClientKey::of(Some(b.into())));
        assert_ne!(ClientKey::of(Some(a.into())), ClientKey::of(Some(c.into())));
        assert_eq!(ClientKey::of(Some(a.into())).label(), "6:20010db800010002");
    }

    #[test]
    fn memory_forgets_clients_whose_budget_refilled() {
        let limiter = Limiter::new(
            RateLimit::new().every_request(Budget::new(1, Duration::from_millis(1))),
            ClientTracking::default(),
        );
        for n in 0..(FORGET_EVERY as u32 - 1) {
            limiter.check_in_memory(0, ClientKey::V4(n));
        }
        assert_eq!(limiter.clients_held(), FORGET_EVERY as usize - 1);
        std::thread::sleep(Duration::from_millis(5));
        limiter.check_in_memory(0, ClientKey::V4(u32::MAX));
        assert!(limiter.clients_held() < 16, "{}", limiter.clients_held());
    }
}
