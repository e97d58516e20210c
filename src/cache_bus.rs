//! [`CacheRevocationBus`]: the Redis through which the cookie caches of every instance
//! learn of revocations, as the storage that owns it hands it to the builder.
//!
//! The wiring is a trait method ([`SecondaryStorage::cache_revocation_bus`],
//! [`SessionStore::cache_revocation_bus`]) that a wrapper forwards, not a type check on
//! the storage (issue 18: a storage wrapped for metrics used to switch cross-instance
//! revocation off without a word). The bus runs its commands through the owner's
//! connection policy — its connection, timeout and circuit breaker — so one Redis policy
//! serves the tier and the bus.
//!
//! [`SecondaryStorage::cache_revocation_bus`]: crate::secondary::SecondaryStorage::cache_revocation_bus
//! [`SessionStore::cache_revocation_bus`]: crate::SessionStore::cache_revocation_bus

/// Where cookie-cache revocations are shared between instances. Only a storage that
/// talks to Redis makes one (feature `redis`: [`RedisStorage`](crate::secondary::RedisStorage));
/// a storage that wraps another forwards it from the trait method, so that the builder
/// finds it.
#[derive(Clone)]
pub struct CacheRevocationBus {
    #[cfg(feature = "redis")]
    pub(crate) link: BusLink,
    #[cfg(not(feature = "redis"))]
    _none: std::convert::Infallible,
}

impl std::fmt::Debug for CacheRevocationBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[cfg(feature = "redis")]
        return self.link.fmt(f);
        #[cfg(not(feature = "redis"))]
        f.debug_struct("CacheRevocationBus").finish_non_exhaustive()
    }
}

/// Only what is safe to log: the connection info may hold a password.
#[cfg(feature = "redis")]
impl std::fmt::Debug for BusLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheRevocationBus")
            .field("prefix", &self.prefix)
            .field("nodes", &self.nodes.len())
            .field("shared_policy", &self.commands.is_some())
            .finish_non_exhaustive()
    }
}

/// What the bus needs from its owner.
#[cfg(feature = "redis")]
#[derive(Clone)]
pub(crate) struct BusLink {
    /// The first node, for the pub/sub connection (which cannot share a multiplexed one).
    pub(crate) client: redis::Client,
    /// Every node given (one, or a cluster's seeds), so the bus does not depend on the
    /// first one answering.
    pub(crate) nodes: Vec<redis::ConnectionInfo>,
    pub(crate) prefix: String,
    /// The owner's connection policy; `None` when the bus keeps its own
    /// (`CookieCache::redis`).
    pub(crate) commands: Option<std::sync::Arc<dyn BusCommands>>,
}

/// One command at a time under the owner's policy (connection, timeout, breaker).
#[cfg(feature = "redis")]
pub(crate) trait BusCommands: Send + Sync + 'static {
    /// Whether the owner talks to a Redis Cluster.
    fn is_cluster(&self) -> bool;

    fn query(
        &self,
        cmd: redis::Cmd,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<redis::Value, crate::error::StoreError>>
                + Send
                + '_,
        >,
    >;
}
