//! One Redis or a Redis Cluster, behind one connection type.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// Where connections come from.
pub(super) enum Backend {
    Single(redis::Client),
    Cluster(ClusterClient),
}

#[derive(Clone)]
pub(super) enum Conn {
    Single(MultiplexedConnection),
    /// Routes each command by its first key and follows `MOVED`/`ASK` itself.
    Cluster(ClusterConnection),
}

impl Conn {
    /// `PING` one server: on a cluster any one node, since the probe asks "is the cluster
    /// reachable", and a `PING` to every node would fail while a failed primary is still
    /// in the slot map.
    pub(super) async fn ping(&mut self) -> RedisResult<String> {
        match self {
            Self::Single(connection) => redis::cmd("PING").query_async(connection).await,
            Self::Cluster(connection) => {
                let reply = connection
                    .route_command(
                        &redis::cmd("PING"),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                    )
                    .await?;
                redis::from_redis_value(&reply)
            }
        }
    }
}

/// A connection to a [`RedisStorage`](super::RedisStorage)'s Redis, as
/// [`with_connection`](super::RedisStorage::with_connection) lends it: one server's
/// multiplexed connection, or a cluster connection that routes every command by its
/// first key. Use it with `query_async` like any redis-rs connection.
#[derive(Clone)]
pub struct RedisConnection(pub(super) Conn);

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0 {
            Conn::Single(_) => "single",
            Conn::Cluster(_) => "cluster",
        };
        f.debug_tuple("RedisConnection").field(&kind).finish()
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Conn::Single(connection) => connection.req_packed_command(cmd),
            Conn::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Conn::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Conn::Single(connection) => connection.get_db(),
            Conn::Cluster(connection) => connection.get_db(),
        }
    }
}
