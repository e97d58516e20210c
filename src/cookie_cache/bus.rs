//! Carrying revocations to the cookie caches of every instance, through Redis (feature
//! `redis`), under leases (DESIGN §6).
//!
//! Fire-and-forget pub/sub is not enough: a subscriber may apply a message after the next
//! request has already been served from a cache. So each instance trusts cookie caches only
//! under a **lease**, and a revoke waits until every leased instance has applied it:
//!
//! - **Lease.** Every 400 ms an instance runs one script that records it in the registry
//!   (`{prefix}cc:instances`, a sorted set scored by lease expiry in Redis time, 2 s ahead)
//!   and publishes a heartbeat on its own ack channel. When that heartbeat comes back
//!   through its subscription, the instance knows that its lease is registered *and* that
//!   it has processed every revocation published before it (Redis delivers one
//!   connection's messages in order). Only then does it extend its trust, to 1.8 s after it
//!   sent the heartbeat: no later than its lease expires in Redis. Without heartbeats (Redis
//!   down, subscription lost, event loop stalled) trust simply runs out.
//! - **Regaining trust.** Whenever trust is regained after it lapsed (at start, after a
//!   reconnect), revocations may have been missed; the instance then refuses every cache
//!   issued up to now — other instances' up to now plus the clock-skew allowance — (the
//!   revocation set's watermarks) and falls through to the stores for those. Caches it
//!   issues itself after that are believed at once.
//! - **Revoke.** After the source of truth committed, the revoking instance applies the
//!   revocation locally, then one script reads the live leases and publishes the revocation
//!   atomically; each instance applies it and acks on the revoker's ack channel. The revoke
//!   returns once every leased instance acked, or, for one that stays silent, once its
//!   lease has certainly lapsed (so it no longer trusts any cache). On loopback that is a
//!   round trip or two; the worst case is one lease (2 s).
//! - **Failure.** If the revocation cannot be published, the revoke returns an error
//!   (it cannot promise that other instances stopped believing their caches) and keeps
//!   retrying the publish in the background for as long as a cache could live.
//! - **Redis Cluster.** The bus asks its Redis (`INFO`) whether it is a cluster node. On a
//!   cluster its keys and channels share one hash tag (`{<prefix>cc}`), its scripts run
//!   on the primary of that slot through a cluster connection, and the subscription is a
//!   plain connection *to that primary*: the revocations and heartbeats the scripts
//!   publish reach it directly, in order, and when that primary fails (or the slot moves
//!   away) the subscription drops, which is the lost-trust path above; the bus then finds
//!   the slot's new primary. Classic `PUBLISH` is used (a cluster forwards it to every
//!   node), not sharded pub/sub: redis-rs 0.32 offers `SSUBSCRIBE` only on its cluster
//!   connection, which resubscribes by itself and so would hide a lost subscription.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use tokio::sync::Notify;

use crate::cache_bus::{BusCommands, BusLink};
use crate::clock::Clock;
use crate::cookie_cache::INSTANCE_CLOCK_SKEW;
use crate::cookie_cache::revocation::{CacheRevocation, RevocationSet};
use crate::error::StoreError;
use crate::token::random_id;

/// How long a lease lives in Redis after each renewal.
const LEASE_TTL: Duration = Duration::from_secs(2);
/// How often the lease is renewed (and a heartbeat sent).
const RENEW_EVERY: Duration = Duration::from_millis(400);
/// Trust ends this long before the lease could lapse in Redis.
const TRUST_MARGIN: Duration = Duration::from_millis(200);
/// One Redis command may take this long before it counts as failed.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// Slack added when waiting out a silent instance's lease.
const LAPSE_SLACK: Duration = Duration::from_millis(50);
/// [`BusCore::mode`] once the first connection found one Redis or a cluster.
const SINGLE: u8 = 1;
const CLUSTER: u8 = 2;
/// Pause between attempts to reconnect the subscription.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(100);

/// Registers the lease and sends a heartbeat, atomically, with Redis' own clock.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60000)
redis.call('PEXPIRE', KEYS[1], 86400000)
redis.call('PUBLISH', KEYS[2], ARGV[3])
return now
";

/// Reads the live leases and publishes a revocation in one step, so no instance can
/// register between the two unseen (one that registers later subscribed first).
const PUBLISH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZRANGEBYSCORE', KEYS[1], now + 1, '+inf', 'WITHSCORES')
redis.call('PUBLISH', KEYS[2], ARGV[1])
table.insert(live, 1, tostring(now))
return live
";

/// Removes a lease when its instance shuts down.
const DEREGISTER: &str = r"return redis.call('ZREM', KEYS[1], ARGV[1])";

/// The revocation fan-out of one manager. Dropping it stops its tasks.
#[derive(Debug)]
pub(crate) struct RevocationBus {
    core: Arc<BusCore>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    started: AtomicBool,
}

struct BusCore {
    instance_id: String,
    /// The Redis the bus was given: the server, or on a cluster the first node.
    client: redis::Client,
    /// The owner's connection policy (a `RedisStorage`'s connection, timeout and breaker),
    /// which every command but the subscription and the cluster's topology questions
    /// goes through; `None` when the bus keeps its own (`CookieCache::redis`).
    shared: Option<Arc<dyn BusCommands>>,
    /// Key and channel names on one Redis and on a cluster; which applies is known once
    /// `commands` is made.
    single: Names,
    cluster: Names,
    /// 0 before the first connection, then [`SINGLE`] or [`CLUSTER`]; never changes after.
    mode: std::sync::atomic::AtomicU8,
    /// The command connection, made on first use; on a cluster dropped after a failure
    /// and made again from every node the cluster was last seen with (the node the bus
    /// was given may be the one that failed).
    commands: Mutex<Option<Commands>>,
    connecting: tokio::sync::Mutex<()>,
    nodes: Mutex<Vec<redis::ConnectionInfo>>,
    revocations: Arc<RevocationSet>,
    clock: Arc<dyn Clock>,
    /// Monotonic origin for the atomics below.
    origin: Instant,
    /// Nanoseconds after `origin` until which caches may be trusted (0: not now).
    trusted_until: AtomicU64,
    /// Heartbeats in flight: sequence number and when each was sent.
    heartbeats: Mutex<VecDeque<(u64, Instant)>>,
    next_heartbeat: AtomicU64,
    /// Revokes of this instance waiting for acks, by nonce.
    waiters: Mutex<HashMap<u64, Arc<Waiter>>>,
    /// Revokes waiting for the message in flight to finish (see `broadcast`).
    queue: Mutex<VecDeque<Queued>>,
    /// Whether a `flush` task is sending.
    flushing: AtomicBool,
    warned_down: AtomicBool,
}

/// Where the bus keeps its registry and sends its messages.
struct Names {
    registry_key: String,
    channel: String,
    ack_channel: String,
    ack_prefix: String,
}

impl Names {
    /// `scope` is the prefix, on a cluster followed by the hash tag every name shares.
    fn new(scope: &str, instance_id: &str) -> Self {
        Self {
            registry_key: format!("{scope}cc:instances"),
            channel: format!("{scope}cc:revocations"),
            ack_channel: format!("{scope}cc:ack:{instance_id}"),
            ack_prefix: format!("{scope}cc:ack:"),
        }
    }
}

/// The command connection: one that reconnects by itself to one Redis, or a cluster
/// connection (which follows `MOVED` and reconnects by itself).
#[derive(Clone)]
enum Commands {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

struct Waiter {
    acked: Mutex<HashSet<String>>,
    notify: Notify,
}

impl std::fmt::Debug for BusCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusCore")
            .field("instance_id", &self.instance_id)
            .field("channel", &self.names().channel)
            .finish_non_exhaustive()
    }
}

impl RevocationBus {
    /// A bus over the Redis `link` names, with keys under its prefix. Nothing connects
    /// until [`start`](Self::start).
    pub(crate) fn new(
        link: BusLink,
        revocations: Arc<RevocationSet>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let instance_id = random_id();
        let prefix = &link.prefix;
        // A storage knows whether it is on a cluster; a bare URL is asked (`INFO`).
        let mode = match &link.commands {
            Some(shared) if shared.is_cluster() => CLUSTER,
            Some(_) => SINGLE,
            None => 0,
        };
        Self {
            core: Arc::new(BusCore {
                single: Names::new(prefix, &instance_id),
                cluster: Names::new(&format!("{prefix}{{{prefix}cc}}"), &instance_id),
                instance_id,
                client: link.client,
                shared: link.commands,
                mode: std::sync::atomic::AtomicU8::new(mode),
                commands: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                // Every node given, so the bus does not hang on the first one answering.
                nodes: Mutex::new(link.nodes),
                revocations,
                clock,
                origin: Instant::now(),
                trusted_until: AtomicU64::new(0),
                heartbeats: Mutex::new(VecDeque::new()),
                next_heartbeat: AtomicU64::new(1),
                waiters: Mutex::new(HashMap::new()),
                queue: Mutex::new(VecDeque::new()),
                flushing: AtomicBool::new(false),
                warned_down: AtomicBool::new(false),
            }),
            tasks: Mutex::new(Vec::new()),
            started: AtomicBool::new(false),
        }
    }

    /// Starts the lease and subscription tasks on the current Tokio runtime, once. Until
    /// it runs (and its first heartbeat returns) no cache is trusted. Called when the
    /// manager is built inside a runtime, else on first use.
    pub(crate) fn start(&self) {
        if self.started.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let core = Arc::downgrade(&self.core);
        tasks.push(
            runtime
                .spawn(subscribe_forever(core.clone()))
                .abort_handle(),
        );
        tasks.push(runtime.spawn(renew_forever(core)).abort_handle());
    }

    /// Whether this instance may believe cookie caches right now (its lease is live and
    /// its subscription has caught up). The hot path: two atomic loads and a clock read.
    pub(crate) fn trusts(&self) -> bool {
        if !self.started.load(Ordering::Acquire) {
            self.start();
            return false;
        }
        self.core.trusts()
    }

    /// Sends `revocations` (already applied here) to every other instance and waits until
    /// each leased one applied them or lost its lease.
    ///
    /// Batched: while one message is in flight (published, acks awaited), the revocations
    /// of every revoke that arrives meanwhile wait and then go out together in the next
    /// one (at most [`MAX_BATCH`] revocations), sharing its acks. A lone revoke goes out at
    /// once; at a high rate each instance sends about one message per round trip instead
    /// of one per revoke, and every other instance acks once per message.
    pub(crate) async fn broadcast(
        &self,
        revocations: Vec<CacheRevocation>,
    ) -> Result<(), StoreError> {
        self.start();
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.core
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back((revocations, done));
        if !self.core.flushing.swap(true, Ordering::AcqRel) {
            // Its own task, so a cancelled request cannot strand the revokes queued
            // behind it.
            tokio::spawn(flush(self.core.clone()));
        }
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StoreError::new(message)),
            Err(_) => Err(StoreError::new(
                "cookie cache revocation bus stopped before confirming",
            )),
        }
    }
}

/// Revokes waiting for the next message: their revocations and who to tell the outcome.
type Queued = (
    Vec<CacheRevocation>,
    tokio::sync::oneshot::Sender<Result<(), String>>,
);

/// Most revocations in one message (about 90 bytes each as JSON): bounds a message and
/// the time one takes to decode, under any backlog.
const MAX_BATCH: usize = 1_000;

/// Sends what is queued, message after message, until the queue is empty.
async fn flush(core: Arc<BusCore>) {
    loop {
        let batch: Vec<Queued> = {
            let mut queue = core.queue.lock().unwrap_or_else(|e| e.into_inner());
            let mut taken = 0;
            let mut batch = Vec::new();
            while let Some((revocations, _)) = queue.front() {
                if !batch.is_empty() && taken + revocations.len() > MAX_BATCH {
                    break;
                }
                taken += revocations.len();
                batch.extend(queue.pop_front());
            }
            if batch.is_empty() {
                core.flushing.store(false, Ordering::Release);
            }
            batch
        };
        if batch.is_empty() {
            // A revoke queued between the check and the store above finds `flushing`
            // false and starts its own flush; nothing is left behind.
            return;
        }
        let mut revocations = Vec::new();
        let mut waiting = Vec::with_capacity(batch.len());
        for (mut some, done) in batch {
            revocations.append(&mut some);
            waiting.push(done);
        }
        let outcome = core.send(&revocations).await.map_err(|e| e.to_string());
        for done in waiting {
            let _ = done.send(outcome.clone());
        }
    }
}

impl Drop for RevocationBus {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        // Best effort: a lease left behind lapses by itself within LEASE_TTL.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let core = self.core.clone();
            runtime.spawn(async move {
                let names = core.names();
                let cmd = eval(DEREGISTER, &[&names.registry_key], &[&core.instance_id]);
                let _ = core.command(cmd).await;
            });
        }
    }
}

impl BusCore {
    /// The names in use: the cluster's once the command connection found a cluster.
    fn names(&self) -> &Names {
        if self.mode.load(Ordering::Acquire) == CLUSTER {
            &self.cluster
        } else {
            &self.single
        }
    }

    fn lock_commands(&self) -> std::sync::MutexGuard<'_, Option<Commands>> {
        self.commands.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The command connection, or a new one.
    async fn connection(&self) -> redis::RedisResult<Commands> {
        if let Some(commands) = self.lock_commands().clone() {
            return Ok(commands);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(commands) = self.lock_commands().clone() {
            return Ok(commands);
        }
        let commands = self.connect_commands().await?;
        *self.lock_commands() = Some(commands.clone());
        Ok(commands)
    }

    /// After a failed command on a cluster: the next one connects afresh (a cluster
    /// connection that lost the failed primary may not find the new one by itself).
    fn forget_cluster_connection(&self) {
        let mut commands = self.lock_commands();
        if matches!(*commands, Some(Commands::Cluster(_))) {
            *commands = None;
        }
    }

    /// Connects the command connection: to a cluster if the given Redis is a node of one.
    async fn connect_commands(&self) -> redis::RedisResult<Commands> {
        if self.mode.load(Ordering::Acquire) == 0 {
            let mut probe = self.client.get_multiplexed_async_connection().await?;
            let info: String = redis::cmd("INFO")
                .arg("cluster")
                .query_async(&mut probe)
                .await
                .unwrap_or_default();
            let cluster = info
                .lines()
                .any(|line| line.trim_end() == "cluster_enabled:1");
            self.mode
                .store(if cluster { CLUSTER } else { SINGLE }, Ordering::Release);
        }
        if self.mode.load(Ordering::Acquire) == CLUSTER {
            let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let client = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(COMMAND_TIMEOUT)
                .response_timeout(COMMAND_TIMEOUT)
                .build()?;
            let mut connection = client.get_async_connection().await?;
            // Remember every node, for the next time this connection has to be made.
            let mut slots = redis::cmd("CLUSTER");
            slots.arg("SLOTS");
            let any = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
            if let Ok(ranges) = connection.route_command(&slots, any).await {
                let seen = all_nodes(&ranges);
                if !seen.is_empty() {
                    let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
                    nodes.truncate(1);
                    for (host, port) in seen {
                        let mut info = self.client.get_connection_info().clone();
                        info.addr = redis::ConnectionAddr::Tcp(host, port);
                        nodes.push(info);
                    }
                }
            }
            return Ok(Commands::Cluster(connection));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(COMMAND_TIMEOUT)
            .set_response_timeout(COMMAND_TIMEOUT)
            .set_number_of_retries(1);
        Ok(Commands::Single(
            ConnectionManager::new_with_config(self.client.clone(), config).await?,
        ))
    }

    /// The client to subscribe with: the given Redis, or on a cluster the primary that
    /// holds the bus' slot now (where its scripts publish).
    async fn subscription_client(self: &Arc<Self>) -> redis::RedisResult<redis::Client> {
        if self.mode.load(Ordering::Acquire) == SINGLE {
            return Ok(self.client.clone());
        }
        let Commands::Cluster(mut cluster) = self.connection().await? else {
            return Ok(self.client.clone());
        };
        let any = || RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
        let mut keyslot = redis::cmd("CLUSTER");
        keyslot.arg("KEYSLOT").arg(&self.cluster.registry_key);
        let mut slots = redis::cmd("CLUSTER");
        slots.arg("SLOTS");
        let answers = async {
            let slot = cluster.route_command(&keyslot, any()).await?;
            let ranges = cluster.route_command(&slots, any()).await?;
            redis::RedisResult::Ok((redis::from_redis_value::<i64>(&slot)?, ranges))
        };
        let (slot, ranges) = answers
            .await
            .inspect_err(|_| self.forget_cluster_connection())?;
        let (host, port) = primary_of(&ranges, slot).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::ClusterDown,
                "the bus' slot has no primary",
            ))
        })?;
        let mut info = self.client.get_connection_info().clone();
        info.addr = redis::ConnectionAddr::Tcp(host, port);
        redis::Client::open(info)
    }

    fn now_nanos(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn nanos_at(&self, instant: Instant) -> u64 {
        u64::try_from(instant.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn trusts(&self) -> bool {
        self.now_nanos() < self.trusted_until.load(Ordering::Acquire)
    }

    fn stop_trusting(&self) {
        self.trusted_until.store(0, Ordering::Release);
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Waiter>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A heartbeat sent at `sent` came back: every revocation published before it has
    /// been applied, and the lease it renewed runs until at least `sent + LEASE_TTL`.
    fn heartbeat_returned(&self, sent: Instant) {
        let until = self.nanos_at(sent + LEASE_TTL - TRUST_MARGIN);
        let now = self.now_nanos();
        if until <= now {
            return; // too late to extend anything
        }
        if !self.trusts() {
            let lapsed_at = self.trusted_until.load(Ordering::Acquire);
            if lapsed_at != 0 && !self.warned_down.load(Ordering::Relaxed) {
                // Held, not dropped (a dropped subscription or a failed renewal warned
                // already): the heartbeats came back too late, from a stalled event loop,
                // a saturated worker or a slow Redis.
                tracing::warn!(
                    lapsed_ms_ago = now.saturating_sub(lapsed_at) / 1_000_000,
                    "cookie cache lease lapsed: heartbeats came back late; caches issued \
                     until now fall back to the store"
                );
            }
            // Trust was lost (or never held): revocations may have been missed meanwhile.
            // Caches issued up to now are refused from here on: this process's own by its
            // own clock, which the caches it issues from now on are stamped with (taken
            // before their store read), other instances' up to the skew allowance.
            let now = self.clock.now();
            self.revocations
                .distrust_issued_until(now + INSTANCE_CLOCK_SKEW, now);
            if self.warned_down.swap(false, Ordering::Relaxed) {
                tracing::info!(
                    "cookie cache revocation channel is back; older caches fall back to the store"
                );
            }
        }
        self.trusted_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Publishes one message of `revocations` and waits for every leased instance's ack
    /// or lapse; on failure keeps republishing it in the background.
    async fn send(self: &Arc<Self>, revocations: &[CacheRevocation]) -> Result<(), StoreError> {
        let nonce = next_nonce();
        let message = encode_message(&self.instance_id, nonce, revocations);
        let waiter = Arc::new(Waiter {
            acked: Mutex::new(HashSet::new()),
            notify: Notify::new(),
        });
        self.waiters().insert(nonce, waiter.clone());
        let outcome = self.publish_and_wait(&message, &waiter).await;
        self.waiters().remove(&nonce);
        if let Err(error) = &outcome {
            tracing::error!(%error, "could not confirm a revocation to other instances' cookie caches; retrying in the background");
            let core = Arc::downgrade(self);
            let retention = self.revocations.retention();
            tokio::spawn(republish(core, message, retention));
        }
        outcome
    }

    /// Runs one command: through the owner's connection policy when the bus has one,
    /// else on its own connection with its own timeout.
    async fn command(self: &Arc<Self>, cmd: redis::Cmd) -> Result<redis::Value, StoreError> {
        if let Some(shared) = &self.shared {
            return shared.query(cmd).await;
        }
        let attempt = async {
            let mut conn = self.connection().await?;
            cmd.query_async::<redis::Value>(&mut conn).await
        };
        let outcome = tokio::time::timeout(COMMAND_TIMEOUT, attempt).await;
        if !matches!(outcome, Ok(Ok(_))) {
            self.forget_cluster_connection();
        }
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(StoreError::with_source(
                "redis (cookie cache leases)",
                error,
            )),
            Err(_) => Err(StoreError::new("redis (cookie cache leases) timed out")),
        }
    }

    async fn publish_and_wait(
        self: &Arc<Self>,
        message: &str,
        waiter: &Waiter,
    ) -> Result<(), StoreError> {
        let names = self.names();
        let cmd = eval(PUBLISH, &[&names.registry_key, &names.channel], &[message]);
        let reply: Vec<String> =
            redis::from_redis_value(&self.command(cmd).await?).map_err(|e| {
                StoreError::with_source("malformed reply from the revocation script", e)
            })?;
        let received = Instant::now();
        let mut reply = reply.into_iter();
        let redis_now: i64 = parse(reply.next())?;
        // Each other leased instance, and the instant its lease has certainly lapsed.
        let mut pending: Vec<(String, Instant)> = Vec::new();
        while let (Some(id), Some(expiry)) = (reply.next(), reply.next()) {
            let expiry: f64 = expiry
                .parse()
                .map_err(|_| StoreError::new("malformed lease registry"))?;
            if id == self.instance_id {
                continue; // applied locally before publishing
            }
            pending.push((
                id,
                received + lease_remaining(expiry, redis_now) + LAPSE_SLACK,
            ));
        }
        loop {
            let notified = waiter.notify.notified();
            {
                let acked = waiter.acked.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                pending.retain(|(id, lapse)| !acked.contains(id) && *lapse > now);
            }
            let Some(next_lapse) = pending.iter().map(|(_, lapse)| *lapse).min() else {
                return Ok(());
            };
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(next_lapse.into()) => {}
            }
        }
    }

    /// Applies a revocation from another instance and acks it.
    fn received_revocation(self: &Arc<Self>, payload: &str) {
        let Some((origin, nonce, revocations)) = decode_message(payload) else {
            tracing::warn!("ignored a malformed cookie cache revocation message");
            return;
        };
        if origin == self.instance_id {
            return;
        }
        self.revocations.apply(revocations, self.clock.now());
        let channel = format!("{}{origin}", self.names().ack_prefix);
        let ack = format!("a:{nonce}:{}", self.instance_id);
        let core = self.clone();
        tokio::spawn(async move {
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(channel).arg(ack);
            let sent = core.command(cmd).await;
            if let Err(error) = sent {
                // The revoker then waits for our lease to lapse instead.
                tracing::debug!(%error, "could not ack a cookie cache revocation");
            }
        });
    }

    /// A message on this instance's own channel: a heartbeat or an ack.
    fn received_own(&self, payload: &str) {
        if let Some(seq) = payload.strip_prefix("h:") {
            let Ok(seq) = seq.parse::<u64>() else { return };
            let sent = {
                let mut beats = self.heartbeats.lock().unwrap_or_else(|e| e.into_inner());
                let sent = beats.iter().find(|(s, _)| *s == seq).map(|(_, at)| *at);
                beats.retain(|(s, _)| *s > seq);
                sent
            };
            if let Some(sent) = sent {
                self.heartbeat_returned(sent);
            }
        } else if let Some(rest) = payload.strip_prefix("a:") {
            let Some((nonce, from)) = rest.split_once(':') else {
                return;
            };
            let Ok(nonce) = nonce.parse::<u64>() else {
                return;
            };
            let waiter = self.waiters().get(&nonce).cloned();
            if let Some(waiter) = waiter {
                waiter
                    .acked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(from.to_owned());
                waiter.notify.notify_waiters();
            }
        }
    }

    fn warn_down(&self, what: &str, error: &dyn std::fmt::Display) {
        if !self.warned_down.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, "cookie cache revocation channel down ({what}); caches fall back to the store");
        } else {
            tracing::debug!(%error, "cookie cache revocation channel still down ({what})");
        }
    }
}

/// Keeps one subscription to the revocation channel and this instance's own channel.
async fn subscribe_forever(core: Weak<BusCore>) {
    loop {
        let Some(strong) = core.upgrade() else { return };
        let subscribed = tokio::time::timeout(COMMAND_TIMEOUT, async {
            let client = strong.subscription_client().await?;
            let names = strong.names();
            let channels = [names.channel.clone(), names.ack_channel.clone()];
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channels).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        drop(strong);
        let pubsub = match subscribed {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(error)) => {
                if let Some(core) = core.upgrade() {
                    core.warn_down("subscribe", &error);
                }
                tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
                continue;
            }
            Err(_) => {
                if let Some(core) = core.upgrade() {
                    core.warn_down("subscribe", &"timed out");
                }
                tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
                continue;
            }
        };
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let Some(core) = core.upgrade() else { return };
            let Ok(payload) = message.get_payload::<String>() else {
                continue;
            };
            if message.get_channel_name() == core.names().channel {
                core.received_revocation(&payload);
            } else {
                core.received_own(&payload);
            }
        }
        // The subscription is gone: messages may be lost from here on.
        let Some(core) = core.upgrade() else { return };
        core.stop_trusting();
        core.warn_down("subscription dropped", &"connection closed");
    }
}

/// Renews the lease (with a heartbeat) every `RENEW_EVERY`.
async fn renew_forever(core: Weak<BusCore>) {
    let mut ticks = tokio::time::interval(RENEW_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(core) = core.upgrade() else { return };
        let seq = core.next_heartbeat.fetch_add(1, Ordering::Relaxed);
        {
            let mut beats = core.heartbeats.lock().unwrap_or_else(|e| e.into_inner());
            beats.push_back((seq, Instant::now()));
            while beats.len() > 16 {
                beats.pop_front();
            }
        }
        let ttl = LEASE_TTL.as_millis().to_string();
        let names = core.names();
        let cmd = eval(
            RENEW,
            &[&names.registry_key, &names.ack_channel],
            &[&core.instance_id, &ttl, &format!("h:{seq}")],
        );
        let renewed = core.command(cmd).await;
        if let Err(error) = renewed {
            core.warn_down("lease renewal", &error);
        }
    }
}

/// Keeps publishing a revocation that could not be confirmed, until it goes through or
/// every cache it concerns has expired.
async fn republish(core: Weak<BusCore>, message: String, retention: chrono::Duration) {
    let give_up = Instant::now() + retention.to_std().unwrap_or(Duration::from_secs(600));
    while Instant::now() < give_up {
        tokio::time::sleep(RENEW_EVERY).await;
        let Some(core) = core.upgrade() else { return };
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(&core.names().channel).arg(&message);
        let published = core.command(cmd).await;
        if published.is_ok() {
            return;
        }
    }
}

/// How long a lease registered until `expiry` (Redis ms) may still run at `redis_now`.
/// Never longer than a lease lives: the registry is data in Redis, and a score nobody
/// renewed for `LEASE_TTL` (`inf`, `1e300`, written with `redis-cli`) must neither
/// overflow `Instant` nor make a revoke wait for ever.
fn lease_remaining(expiry: f64, redis_now: i64) -> Duration {
    // `as` saturates (and turns NaN into 0), so only the subtraction needs care.
    let ms = (expiry as i64).saturating_sub(redis_now);
    Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(LEASE_TTL)
}

/// Every node (primaries and replicas) in a `CLUSTER SLOTS` reply.
fn all_nodes(ranges: &redis::Value) -> Vec<(String, u16)> {
    let redis::Value::Array(ranges) = ranges else {
        return Vec::new();
    };
    let mut out: Vec<(String, u16)> = Vec::new();
    for range in ranges {
        let redis::Value::Array(parts) = range else {
            continue;
        };
        for node in parts.iter().skip(2) {
            let redis::Value::Array(node) = node else {
                continue;
            };
            let host: Option<String> = node.first().and_then(|v| redis::from_redis_value(v).ok());
            let port: Option<u16> = node.get(1).and_then(|v| redis::from_redis_value(v).ok());
            if let (Some(host), Some(port)) = (host, port) {
                if !out.contains(&(host.clone(), port)) {
                    out.push((host, port));
                }
            }
        }
    }
    out
}

/// The primary serving `slot` in a `CLUSTER SLOTS` reply.
fn primary_of(ranges: &redis::Value, slot: i64) -> Option<(String, u16)> {
    let redis::Value::Array(ranges) = ranges else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let redis::Value::Array(parts) = range else {
            return None;
        };
        let start: i64 = redis::from_redis_value(parts.first()?).ok()?;
        let end: i64 = redis::from_redis_value(parts.get(1)?).ok()?;
        if !(start..=end).contains(&slot) {
            return None;
        }
        let redis::Value::Array(primary) = parts.get(2)? else {
            return None;
        };
        let host: String = redis::from_redis_value(primary.first()?).ok()?;
        let port: u16 = redis::from_redis_value(primary.get(1)?).ok()?;
        Some((host, port))
    })
}

/// `EVAL script keys… args…`. Sent whole each time rather than by SHA: the scripts are a
/// few hundred bytes, Redis keeps them compiled by their hash, and it spares the
/// `NOSCRIPT` retry through a connection policy that does not know about scripts.
fn eval(script: &str, keys: &[&str], args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
    cmd
}

fn parse(value: Option<String>) -> Result<i64, StoreError> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| StoreError::new("malformed reply from the revocation script"))
}

fn next_nonce() -> u64 {
    let mut bytes = [0u8; 8];
    crate::token::random_bytes(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// `origin:nonce:json`; instance ids are base64url and nonces decimal, so the first two
/// colons split it.
pub(crate) fn encode_message(origin: &str, nonce: u64, revocations: &[CacheRevocation]) -> String {
    let json = serde_json::to_string(revocations).expect("revocations serialize");
    format!("{origin}:{nonce}:{json}")
}

pub(crate) fn decode_message(payload: &str) -> Option<(&str, u64, Vec<CacheRevocation>)> {
    let (origin, rest) = payload.split_once(':')?;
    let (nonce, json) = rest.split_once(':')?;
    Some((
        origin,
        nonce.parse().ok()?,
        serde_json::from_str(json).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;

    #[test]
    fn lease_waits_are_bounded_whatever_the_registry_holds() {
        let now = 1_790_000_000_000;
        assert_eq!(
            lease_remaining(now as f64 + 1_500.0, now),
            Duration::from_millis(1_500)
        );
        for absurd in [f64::INFINITY, 1e300, i64::MAX as f64] {
            assert_eq!(lease_remaining(absurd, now), LEASE_TTL, "{absurd}");
            // What the caller adds it to must not overflow either.
            let _ = Instant::now() + lease_remaining(absurd, now) + LAPSE_SLACK;
        }
        for gone in [f64::NEG_INFINITY, f64::NAN, -1e300, now as f64 - 1.0] {
            assert_eq!(lease_remaining(gone, now), Duration::ZERO, "{gone}");
        }
    }

    /// Issue 22's spirit: trust lapsing because heartbeats came back late (nothing failed,
    /// so nothing else logs it) is a warning when the next one returns.
    #[test]
    fn a_lease_lapse_from_late_heartbeats_is_a_warning() {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
        let link = BusLink {
            nodes: vec![client.get_connection_info().clone()],
            client,
            prefix: "tas:test:".into(),
            commands: None,
        };
        let set = Arc::new(RevocationSet::new(chrono::Duration::seconds(310), 10));
        let bus = RevocationBus::new(link, set, Arc::new(crate::clock::SystemClock));
        let core = &bus.core;
        core.heartbeat_returned(Instant::now());
        assert!(core.trusts());
        let logged = || String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(!logged().contains("lapsed"), "the first lease is no lapse");
        // The lease ran out 1 ms ago and nothing failed: the heartbeat was late. (The
        // pause only makes "1 ms ago" later than the bus' own time origin.)
        std::thread::sleep(Duration::from_millis(5));
        core.trusted_until.store(
            core.now_nanos().saturating_sub(1_000_000),
            Ordering::Release,
        );
        assert!(!core.trusts());
        core.heartbeat_returned(Instant::now());
        assert!(core.trusts());
        let text = logged();
        assert!(
            text.contains("WARN") && text.contains("cookie cache lease lapsed"),
            "{text}"
        );
    }

    #[test]
    fn messages_round_trip() {
        let revocations = vec![
            CacheRevocation::Session {
                session_id: "a:b".into(),
                below_generation: u64::MAX,
            },
            CacheRevocation::User {
                user_id: "user:with:colons\n".into(),
                created_up_to: DateTime::<Utc>::from_timestamp_millis(1_790_000_000_000).unwrap(),
            },
        ];
        let message = encode_message("inst-1_x", 42, &revocations);
        assert_eq!(
            decode_message(&message),
            Some(("inst-1_x", 42, revocations))
        );
        assert_eq!(decode_message("garbage"), None);
    }
}
