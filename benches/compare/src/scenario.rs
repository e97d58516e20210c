//! The scenarios (one server process each), and the targets they are judged by.

/// What a scenario's server needs from the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Redis,
    Postgres,
}

/// One server configuration and the request sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scenario {
    /// `GET /me` answering a constant, no session layer: the baseline of every ratio.
    Bare,
    PeerNoCookie,
    PeerMemory,
    PeerMokaRedis,
    PeerRedis,
    PeerSqlite,
    PeerPostgres,
    OursNoCookie,
    OursMemory,
    OursCacheMemory,
    OursCacheSqlite,
    OursCacheRedis,
    OursRedisOnly,
    OursRedisTier,
    OursSqlite,
    OursPostgres,
}

impl Scenario {
    pub(crate) const ALL: [Scenario; 16] = [
        Self::Bare,
        Self::PeerNoCookie,
        Self::PeerMemory,
        Self::PeerMokaRedis,
        Self::PeerRedis,
        Self::PeerSqlite,
        Self::PeerPostgres,
        Self::OursNoCookie,
        Self::OursMemory,
        Self::OursCacheMemory,
        Self::OursCacheSqlite,
        Self::OursCacheRedis,
        Self::OursRedisOnly,
        Self::OursRedisTier,
        Self::OursSqlite,
        Self::OursPostgres,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::PeerNoCookie => "ts-no-cookie",
            Self::PeerMemory => "ts-memory",
            Self::PeerMokaRedis => "ts-moka-redis",
            Self::PeerRedis => "ts-redis",
            Self::PeerSqlite => "ts-sqlite",
            Self::PeerPostgres => "ts-postgres",
            Self::OursNoCookie => "ours-no-cookie",
            Self::OursMemory => "ours-memory",
            Self::OursCacheMemory => "ours-cache-memory",
            Self::OursCacheSqlite => "ours-cache-sqlite",
            Self::OursCacheRedis => "ours-cache-redis",
            Self::OursRedisOnly => "ours-redis",
            Self::OursRedisTier => "ours-redis-tier",
            Self::OursSqlite => "ours-sqlite",
            Self::OursPostgres => "ours-postgres",
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Bare => "no session layer, GET /me answers a constant",
            Self::PeerNoCookie => "tower-sessions + MemoryStore, GET /ping without a cookie",
            Self::PeerMemory => "tower-sessions + MemoryStore",
            Self::PeerMokaRedis => {
                "tower-sessions + CachingSessionStore<MokaStore, RedisStore> (in-process cache)"
            }
            Self::PeerRedis => "tower-sessions + RedisStore (fred)",
            Self::PeerSqlite => "tower-sessions + sqlx SqliteStore (a file)",
            Self::PeerPostgres => "tower-sessions + sqlx PostgresStore",
            Self::OursNoCookie => "ours, MemoryStore, GET /ping without a cookie",
            Self::OursMemory => "ours, MemoryStore",
            Self::OursCacheMemory => "ours, cookie cache over MemoryStore",
            Self::OursCacheSqlite => "ours, cookie cache over SqliteStore",
            Self::OursCacheRedis => "ours, cookie cache over SqliteStore + RedisStorage",
            Self::OursRedisOnly => "ours, RedisStorage as the only store",
            Self::OursRedisTier => "ours, SqliteStore + RedisStorage (one GET per hit)",
            Self::OursSqlite => "ours, SqliteStore (a file)",
            Self::OursPostgres => "ours, PostgresStore",
        }
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub(crate) fn is_peer(self) -> bool {
        self.name().starts_with("ts-")
    }

    pub(crate) fn needs(self) -> Option<Service> {
        match self {
            Self::PeerMokaRedis
            | Self::PeerRedis
            | Self::OursCacheRedis
            | Self::OursRedisOnly
            | Self::OursRedisTier => Some(Service::Redis),
            Self::PeerPostgres | Self::OursPostgres => Some(Service::Postgres),
            _ => None,
        }
    }

    /// The request path; the no-cookie scenarios ask a route that never reads the session.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Self::PeerNoCookie | Self::OursNoCookie => "/ping",
            _ => "/me",
        }
    }

    /// Whether the load generator signs users in first and sends their cookies.
    pub(crate) fn signs_in(self) -> bool {
        !matches!(self, Self::Bare | Self::PeerNoCookie | Self::OursNoCookie)
    }
}

/// A path of the table: the peer's matching scenario, ours, and the target.
pub(crate) struct Target {
    pub(crate) path: &'static str,
    pub(crate) peer: Scenario,
    pub(crate) ours: Scenario,
    /// Minimum throughput ratio to bare.
    pub(crate) min_ratio: f64,
    /// Maximum server CPU per request over bare, in µs, where the issue sets one.
    pub(crate) max_cpu_over_bare: Option<f64>,
    pub(crate) text: &'static str,
}

/// Issue 13's targets, one line per (path, our configuration).
pub(crate) const TARGETS: [Target; 9] = [
    Target {
        path: "no cookie at all",
        peer: Scenario::PeerNoCookie,
        ours: Scenario::OursNoCookie,
        min_ratio: 0.98,
        max_cpu_over_bare: None,
        text: "≥ 0.98×",
    },
    Target {
        path: "memory store hit",
        peer: Scenario::PeerMemory,
        ours: Scenario::OursMemory,
        min_ratio: 0.92,
        max_cpu_over_bare: Some(0.5),
        text: "≥ 0.92× (≤ 0.5 µs over bare)",
    },
    Target {
        path: "cookie-cache hit, memory behind",
        peer: Scenario::PeerMokaRedis,
        ours: Scenario::OursCacheMemory,
        min_ratio: 0.92,
        max_cpu_over_bare: Some(0.5),
        text: "≥ 0.92× (≤ 0.5 µs over bare)",
    },
    Target {
        path: "cookie-cache hit, SQLite behind",
        peer: Scenario::PeerMokaRedis,
        ours: Scenario::OursCacheSqlite,
        min_ratio: 0.92,
        max_cpu_over_bare: Some(0.5),
        text: "≥ 0.92× (≤ 0.5 µs over bare)",
    },
    Target {
        path: "cookie-cache hit, SQLite + Redis behind",
        peer: Scenario::PeerMokaRedis,
        ours: Scenario::OursCacheRedis,
        min_ratio: 0.92,
        max_cpu_over_bare: Some(0.5),
        text: "≥ 0.92× (≤ 0.5 µs over bare)",
    },
    Target {
        path: "Redis only, 1 GET per request",
        peer: Scenario::PeerRedis,
        ours: Scenario::OursRedisOnly,
        min_ratio: 0.55,
        max_cpu_over_bare: Some(4.0),
        text: "≥ 0.55×, client side ≤ 4 µs over bare",
    },
    Target {
        path: "Redis tier (SQLite behind), 1 GET per request",
        peer: Scenario::PeerRedis,
        ours: Scenario::OursRedisTier,
        min_ratio: 0.55,
        max_cpu_over_bare: Some(4.0),
        text: "≥ 0.55×, client side ≤ 4 µs over bare",
    },
    Target {
        path: "SQLite hit, no cache",
        peer: Scenario::PeerSqlite,
        ours: Scenario::OursSqlite,
        min_ratio: 0.50,
        max_cpu_over_bare: Some(6.0),
        text: "≥ 0.50× (≤ 6 µs over bare)",
    },
    Target {
        path: "PostgreSQL hit, no cache",
        peer: Scenario::PeerPostgres,
        ours: Scenario::OursPostgres,
        min_ratio: 0.20,
        max_cpu_over_bare: None,
        text: "≥ 0.20×, ahead of the peer",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_round_trip() {
        for scenario in Scenario::ALL {
            assert_eq!(Scenario::from_name(scenario.name()), Some(scenario));
        }
    }

    #[test]
    fn every_target_pairs_a_peer_with_one_of_ours() {
        for target in &TARGETS {
            assert!(target.peer.is_peer(), "{}", target.path);
            assert!(!target.ours.is_peer(), "{}", target.path);
            assert_eq!(target.peer.path(), target.ours.path(), "{}", target.path);
        }
    }
}
