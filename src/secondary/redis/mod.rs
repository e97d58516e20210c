//! [`RedisStorage`]: Redis as the secondary tier (or, explicitly, the only store).
//!
//! Every call has a bounded timeout and goes through a circuit breaker, so an unreachable
//! Redis costs at most one timeout per probe interval. See [`scripts`] for the key layout
//! and [`encoding`] for the value format.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, RedisResult, Script};

pub use connection::RedisConnection;
use connection::{Backend, Conn};

use crate::clock::{Clock, SystemClock};
use crate::error::{ConfigError, StoreError};

mod cache_tier;
mod compat;
mod connection;
pub(crate) mod encoding;
mod keys;
mod scripts;
mod sole_store;

use crate::store::breaker::{Admission, Breaker};

pub use compat::MINIMUM_REDIS_VERSION;

/// The default key prefix: namespaced and versioned, so a layout change can move to
/// `tas:v2:` without reading old values.
pub const DEFAULT_KEY_PREFIX: &str = "tas:v1:";
/// `redis+cluster://host1:port1,host2:port2`: [`RedisStorage::cluster`] by URL.
const CLUSTER_SCHEME: &str = "redis+cluster://";
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);
const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// DESIGN §6: Redis is probed at least every 2 s while the circuit is open.
const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Sessions in Redis: the secondary tier in front of a primary store
/// ([`SessionManagerBuilder::secondary_storage`](crate::SessionManagerBuilder::secondary_storage)),
/// or the only store (`SessionManager::builder(redis)`, "secondary-only").
///
/// Cheap to clone; clones share the connection, the circuit breaker and the counters, so
/// keep a clone to read [`metrics`](Self::metrics).
///
/// Each session costs one value (`SET … PXAT`, about 200 bytes for a browser session),
/// one id pointer and one sorted-set entry in its user's index (in all, 609 B of Redis
/// memory with a short user agent, 689 B with a browser's: docs/DEPLOYING.md); no key
/// or value contains a token, only `SHA-256(token)`. Configure Redis with `maxmemory-policy noeviction` (or
/// a `volatile-*` policy in a Redis shared with a cache, accepting that an evicted session
/// is a cache miss in primary + secondary mode and a sign-out in secondary-only mode).
///
/// ```no_run
/// use tower_auth_session::{MemoryStore, SessionManager};
/// use tower_auth_session::secondary::RedisStorage;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisStorage::builder("redis://127.0.0.1:6379").connect().await?;
/// // Primary + secondary: the store is the source of truth, Redis answers most reads.
/// let manager = SessionManager::builder(MemoryStore::new())
///     .secondary_storage(redis.clone())
///     .secret(b"an example secret of at least 32 bytes!")
///     .build()?;
/// // Secondary-only: Redis holds everything.
/// let redis_only = SessionManager::builder(redis.clone())
///     .secret(b"an example secret of at least 32 bytes!")
///     .build()?;
/// println!("{:?}", redis.metrics());
/// # let _ = (manager, redis_only);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStorage {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    /// A client for the first (or only) node, for the pub/sub the bus keeps.
    client: redis::Client,
    /// Every node given (the cluster's seeds, or the one server), for the bus.
    nodes: Vec<redis::ConnectionInfo>,
    prefix: String,
    timeout: Duration,
    /// Replicas that must hold a revocation before it counts (`WAIT`); 0: none.
    wait_for_replicas: u32,
    clock: Arc<dyn Clock>,
    /// The one multiplexed (or cluster) connection, replaced after it fails.
    connection: std::sync::Mutex<Option<Conn>>,
    /// Serialises making a new connection, so a burst of requests makes one.
    connecting: tokio::sync::Mutex<()>,
    breaker: Arc<Breaker>,
    round_trips: AtomicU64,
    failures: AtomicU64,
    scripts: Scripts,
}

struct Scripts {
    put: Script,
    create: Script,
    update: Script,
    revoke: Script,
    list: Script,
}

impl std::fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection info may hold a password: show only the prefix and settings.
        f.debug_struct("RedisStorage")
            .field("cluster", &self.is_cluster())
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Counters of a [`RedisStorage`] (shared by its clones), for dashboards and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisMetrics {
    /// Calls sent to Redis for sessions (each one round trip); the cookie cache's
    /// revocation bus shares the connection and breaker but is not counted here.
    pub round_trips: u64,
    /// Calls that timed out or lost their connection.
    pub failures: u64,
    /// Calls refused at once because the circuit was open.
    pub short_circuited: u64,
    /// How many times the circuit opened.
    pub circuit_opened: u64,
    /// Whether the circuit is open now.
    pub circuit_open: bool,
}

/// Configures a [`RedisStorage`]; see [`RedisStorage::builder`].
#[must_use]
pub struct RedisStorageBuilder {
    urls: Vec<String>,
    cluster: bool,
    prefix: String,
    timeout: Duration,
    probe_interval: Duration,
    wait_for_replicas: u32,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RedisStorageBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStorageBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("probe_interval", &self.probe_interval)
            .finish_non_exhaustive()
    }
}

impl RedisStorage {
    /// Starts configuring a storage for the Redis at `url` (`redis://host:port/db`,
    /// `rediss://…` is not compiled in).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_auth_session::secondary::RedisStorage;
    ///
    /// // `build` does no I/O: the connection is made on first use.
    /// let redis = RedisStorage::builder("redis://127.0.0.1:6379")
    ///     .key_prefix("myapp:sessions:v1:")
    ///     .timeout(Duration::from_millis(100))
    ///     .build()?;
    /// assert_eq!(redis.key_prefix(), "myapp:sessions:v1:");
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn builder(url: impl Into<String>) -> RedisStorageBuilder {
        let url = url.into();
        if let Some(nodes) = url.strip_prefix(CLUSTER_SCHEME) {
            let urls = nodes.split(',').map(|node| format!("redis://{node}"));
            return Self::cluster(urls);
        }
        RedisStorageBuilder {
            urls: vec![url],
            cluster: false,
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            wait_for_replicas: 0,
            clock: Arc::new(SystemClock),
        }
    }

    /// Starts configuring a storage for the Redis Cluster that `nodes` (`redis://host:port`
    /// URLs, one or more; credentials in each) belong to. The same as [`builder`](Self::builder)
    /// with `redis+cluster://host1:port1,host2:port2`.
    ///
    /// Commands follow `MOVED` and `ASK` (a slot migration or a failover is not an outage);
    /// timeouts, the circuit breaker and its background probe are as for one node. Every
    /// key of a session carries its user's hash tag (`{xx}` after the prefix, from
    /// [`Token::generate_for`](crate::Token::generate_for) and the session id), so each
    /// script runs on one slot; a session whose token or id is not in its user's shard
    /// (made by an older version) is not copied to the cluster and is served by the store.
    /// Needs Redis 7.0 or newer.
    ///
    /// ```
    /// use tower_auth_session::secondary::RedisStorage;
    /// let redis = RedisStorage::cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]).build()?;
    /// assert!(redis.is_cluster());
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn cluster<I>(nodes: I) -> RedisStorageBuilder
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        RedisStorageBuilder {
            urls: nodes.into_iter().map(Into::into).collect(),
            cluster: true,
            prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            wait_for_replicas: 0,
            clock: Arc::new(SystemClock),
        }
    }

    /// Whether this storage talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner.backend, Backend::Cluster(_))
    }

    /// The key prefix every key starts with.
    pub fn key_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Where the cookie caches of every instance over this Redis share revocations: its
    /// nodes, its key prefix, and this storage's connection policy for the bus' commands.
    fn revocation_bus(&self) -> crate::CacheRevocationBus {
        crate::CacheRevocationBus {
            link: crate::cache_bus::BusLink {
                client: self.inner.client.clone(),
                nodes: self.inner.nodes.clone(),
                prefix: self.inner.prefix.clone(),
                commands: Some(Arc::new(self.clone())),
            },
        }
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> RedisMetrics {
        let inner = &self.inner;
        RedisMetrics {
            round_trips: inner.round_trips.load(Ordering::Relaxed),
            failures: inner.failures.load(Ordering::Relaxed),
            short_circuited: inner.breaker.short_circuited.load(Ordering::Relaxed),
            circuit_opened: inner.breaker.opened.load(Ordering::Relaxed),
            circuit_open: inner.breaker.is_open(),
        }
    }

    /// Runs `call` on the shared connection with this storage's timeout and circuit
    /// breaker, counting it as one round trip. For other parts of the crate (and apps)
    /// that keep their own keys next to the sessions; prefix them with
    /// [`key_prefix`](Self::key_prefix).
    ///
    /// ```no_run
    /// # use tower_auth_session::secondary::RedisStorage;
    /// # async fn demo(redis: RedisStorage) -> Result<(), tower_auth_session::StoreError> {
    /// // On a Redis Cluster, give keys that one call uses together one hash tag.
    /// let key = format!("{}lease:instance-1", redis.key_prefix());
    /// redis
    ///     .with_connection(|mut conn| async move {
    ///         redis::cmd("SET").arg(&key).arg(1).arg("PX").arg(2000).query_async::<()>(&mut conn).await
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn with_connection<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
        self.under_policy(call).await
    }

    /// [`with_connection`](Self::with_connection) without counting a round trip: the
    /// cookie cache's revocation bus shares the policy but not the session counters.
    async fn under_policy<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(RedisConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let inner = &self.inner;
        if inner.breaker.admit() == Admission::Reject {
            self.ensure_prober();
            return Err(StoreError::new("redis unavailable (circuit open)"));
        }
        let attempt = async { call(RedisConnection(inner.connection().await?)).await };
        let error = match tokio::time::timeout(inner.timeout, attempt).await {
            Ok(Ok(value)) => {
                inner.breaker.succeeded();
                return Ok(value);
            }
            Ok(Err(error)) if !is_outage(&error) => {
                inner.breaker.succeeded();
                return Err(StoreError::with_source("redis refused the command", error));
            }
            Ok(Err(error)) if compat::is_refusal(&error) => {
                tracing::error!(%error, "redis server refused: sessions are not kept in it");
                StoreError::with_source(compat::REFUSED, error)
            }
            Ok(Err(error)) => StoreError::with_source("redis unreachable", error),
            Err(_elapsed) => StoreError::new(format!(
                "redis timed out: no answer within {} ms",
                inner.timeout.as_millis()
            )),
        };
        inner.failures.fetch_add(1, Ordering::Relaxed);
        // A connection that failed or hung (a blackholed peer never answers) is not used
        // again: the probe makes a new one.
        inner.forget_connection();
        inner.breaker.failed(&crate::error::chain(&error));
        self.ensure_prober();
        Err(error)
    }

    /// Starts the background probe (a new connection and `PING`) if the circuit is open
    /// and none runs.
    fn ensure_prober(&self) {
        let storage = Arc::downgrade(&self.inner);
        self.inner.breaker.spawn_prober(move || {
            let storage = storage.clone();
            async move {
                match storage.upgrade() {
                    Some(inner) => inner.probe().await,
                    None => false,
                }
            }
        });
    }

    fn now_ms(&self) -> i64 {
        self.inner.clock.now().timestamp_millis()
    }
}

/// The bus' commands share this storage's connection, timeout and circuit breaker.
impl crate::cache_bus::BusCommands for RedisStorage {
    fn is_cluster(&self) -> bool {
        RedisStorage::is_cluster(self)
    }

    fn query(
        &self,
        cmd: redis::Cmd,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<redis::Value, StoreError>> + Send + '_>> {
        Box::pin(self.under_policy(|mut conn| async move { cmd.query_async(&mut conn).await }))
    }
}

impl Inner {
    /// The current connection, or a new one.
    async fn connection(&self) -> RedisResult<Conn> {
        if let Some(connection) = self.current_connection() {
            return Ok(connection);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(connection) = self.current_connection() {
            return Ok(connection);
        }
        let connection = self.connect().await?;
        *self.lock_connection() = Some(connection.clone());
        Ok(connection)
    }

    /// A new connection to a server [`compat::check`] accepts.
    async fn connect(&self) -> RedisResult<Conn> {
        match &self.backend {
            Backend::Single(client) => {
                // No response timeout here: every command already runs under the
                // storage's own timeout (`with_connection`, `probe`), and a second timer
                // per command costs a wake-up of the runtime's driver (an `eventfd`
                // write) on the request path.
                let config = AsyncConnectionConfig::new().set_connection_timeout(self.timeout);
                let mut connection: MultiplexedConnection = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                compat::check(&mut connection).await?;
                Ok(Conn::Single(connection))
            }
            Backend::Cluster(client) => {
                let mut connection = client.get_async_connection().await?;
                compat::check_cluster(&mut connection).await?;
                Ok(Conn::Cluster(connection))
            }
        }
    }

    /// Asks Redis now, on a new connection, and keeps that connection if it answers.
    async fn probe(&self) -> bool {
        let attempt = async {
            let mut connection = self.connect().await?;
            connection.ping().await?;
            RedisResult::Ok(connection)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(connection)) => {
                *self.lock_connection() = Some(connection);
                true
            }
            _ => false,
        }
    }

    fn lock_connection(&self) -> std::sync::MutexGuard<'_, Option<Conn>> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn current_connection(&self) -> Option<Conn> {
        self.lock_connection().clone()
    }

    fn forget_connection(&self) {
        *self.lock_connection() = None;
    }
}

/// Whether an error says "Redis is not there" (as opposed to "Redis answered no"). A
/// cluster's redirections (`MOVED`, `ASK`, `TRYAGAIN` while a slot moves) that outlast
/// the client's own retries are answers too, not outages.
fn is_outage(error: &RedisError) -> bool {
    !matches!(
        error.kind(),
        ErrorKind::ResponseError
            | ErrorKind::TypeError
            | ErrorKind::ExtensionError
            | ErrorKind::NoScriptError
            | ErrorKind::ExecAbortError
            | ErrorKind::Moved
            | ErrorKind::Ask
            | ErrorKind::TryAgain
            | ErrorKind::CrossSlot
    )
}

impl RedisStorageBuilder {
    /// The prefix of every key (default `tas:v1:`). Give each application (and each
    /// layout version) its own.
    ///
    /// ```
    /// # use tower_auth_session::secondary::RedisStorage;
    /// let redis = RedisStorage::builder("redis://127.0.0.1").key_prefix("shop:v1:").build()?;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long one call may take, connecting included (default 250 ms). Past it the
    /// call fails, the circuit opens, and in primary + secondary mode the request reads
    /// the store instead.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_auth_session::secondary::RedisStorage;
    /// let redis = RedisStorage::builder("redis://127.0.0.1")
    ///     .timeout(Duration::from_millis(50))
    ///     .build()?;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the circuit stays open before one call probes Redis again (default 1 s,
    /// at most 2 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use tower_auth_session::secondary::RedisStorage;
    /// let redis = RedisStorage::builder("redis://127.0.0.1")
    ///     .probe_interval(Duration::from_millis(500))
    ///     .build()?;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }

    /// How many replicas must hold a revocation (its deletes and tombstones) before the
    /// revoke goes on (default 0: Redis replicates asynchronously). With replicas (a
    /// primary with replicas, or a cluster), a primary that fails right after a revoke
    /// can lose its last writes, and the promoted replica would still serve the revoked
    /// session; with 1 the revoke waits (`WAIT`, at most half the timeout) until a
    /// replica has it. When fewer confirm in time (a shard whose replica failed or was
    /// just promoted) the revoke still goes on, with a warning: refusing it would leave
    /// the session live everywhere instead.
    ///
    /// ```
    /// # use tower_auth_session::secondary::RedisStorage;
    /// let redis = RedisStorage::cluster(["redis://127.0.0.1:7000"])
    ///     .wait_for_replicas(1)
    ///     .build()?;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn wait_for_replicas(mut self, replicas: u32) -> Self {
        self.wait_for_replicas = replicas;
        self
    }

    /// Where time comes from (default the system clock). Give it the manager's clock
    /// when the manager has a [`ManualClock`](crate::ManualClock), so expiries agree.
    ///
    /// ```
    /// # use tower_auth_session::{ManualClock, secondary::RedisStorage};
    /// let clock = ManualClock::new();
    /// let redis = RedisStorage::builder("redis://127.0.0.1").clock(clock.clone()).build()?;
    /// # Ok::<(), tower_auth_session::ConfigError>(())
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks the configuration and builds the storage, without connecting.
    pub fn build(self) -> Result<RedisStorage, ConfigError> {
        let invalid = |option, reason: &str| ConfigError::Invalid {
            option,
            reason: reason.to_owned(),
        };
        let first = self
            .urls
            .first()
            .ok_or_else(|| invalid("redis_url", "no node given"))?;
        let client = redis::Client::open(first.as_str())
            .map_err(|e| invalid("redis_url", &e.to_string()))?;
        let nodes = self
            .urls
            .iter()
            .map(|url| redis::IntoConnectionInfo::into_connection_info(url.as_str()))
            .collect::<RedisResult<Vec<_>>>()
            .map_err(|e| invalid("redis_url", &e.to_string()))?;
        let backend = if self.cluster {
            let nodes: Vec<&str> = self.urls.iter().map(String::as_str).collect();
            let cluster = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(self.timeout)
                .response_timeout(self.timeout)
                .build()
                .map_err(|e| invalid("redis_url", &e.to_string()))?;
            Backend::Cluster(cluster)
        } else {
            Backend::Single(client.clone())
        };
        if self.prefix.is_empty() {
            return Err(invalid("key_prefix", "must not be empty"));
        }
        if self.cluster && self.prefix.contains(['{', '}']) {
            // The prefix comes first in every key, so a brace in it would be the hash tag
            // of every key, and a cluster would hold all sessions on one slot.
            return Err(invalid("key_prefix", "must not contain '{' or '}'"));
        }
        if self.timeout.is_zero() {
            return Err(invalid("timeout", "must be positive"));
        }
        if self.probe_interval.is_zero() || self.probe_interval > MAX_PROBE_INTERVAL {
            return Err(invalid("probe_interval", "must be between 1 ms and 2 s"));
        }
        Ok(RedisStorage {
            inner: Arc::new(Inner {
                backend,
                client,
                nodes,
                prefix: self.prefix,
                timeout: self.timeout,
                wait_for_replicas: self.wait_for_replicas,
                clock: self.clock,
                connection: std::sync::Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                breaker: Arc::new(Breaker::new("redis", self.probe_interval)),
                round_trips: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                scripts: Scripts {
                    put: Script::new(scripts::PUT),
                    create: Script::new(scripts::CREATE),
                    update: Script::new(scripts::UPDATE),
                    revoke: Script::new(scripts::REVOKE),
                    list: Script::new(scripts::LIST),
                },
            }),
        })
    }

    /// Builds the storage and checks that Redis answers (`PING`) and is a server it can
    /// use (Redis [`MINIMUM_REDIS_VERSION`] or newer, or a compatible one; not a Redis
    /// Cluster node), for a clear error at start-up. [`build`](Self::build) makes the
    /// same check on the first call instead.
    ///
    /// ```no_run
    /// # use tower_auth_session::secondary::RedisStorage;
    /// # async fn demo() -> Result<(), tower_auth_session::StoreError> {
    /// let redis = RedisStorage::builder("redis://127.0.0.1:6379").connect().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(self) -> Result<RedisStorage, StoreError> {
        let storage = self
            .build()
            .map_err(|e| StoreError::with_source("invalid redis configuration", e))?;
        storage
            .with_connection(|conn| async move { conn.0.clone().ping().await })
            .await?;
        Ok(storage)
    }
}
