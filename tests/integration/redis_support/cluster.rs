//! A real Redis Cluster this test owns: `redis-server --cluster-enabled yes` on free
//! ports, joined with `redis-cli --cluster create`, killed on drop.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::RedisServer;

pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    pub masters: usize,
}

impl RedisCluster {
    /// `masters` primaries, each with `replicas_each` replicas; `None` (skip, a failure
    /// with `TAS_REQUIRE_SERVICES=1`) without `redis-server`.
    pub fn start(masters: usize, replicas_each: usize) -> Option<Self> {
        let count = masters * (1 + replicas_each);
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            nodes.push(RedisServer::start_with(&[
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "1000",
                // A replica takes over however long it was cut off from its primary.
                "--cluster-replica-validity-factor",
                "0",
            ])?);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args([
                "--cluster-replicas",
                &replicas_each.to_string(),
                "--cluster-yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Self { nodes, masters };
        cluster.wait_until_ok(Duration::from_secs(30));
        Some(cluster)
    }

    /// The node URLs, for `RedisStorage::cluster`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Waits until every live node reports `cluster_state:ok` and agrees on the slots.
    pub fn wait_until_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self.nodes.iter().filter(|n| n.alive()).all(|node| {
                let Ok(mut conn) = redis::Client::open(node.url())
                    .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(300)))
                else {
                    return false;
                };
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut conn)
                    .unwrap_or_default();
                let replication: String = redis::cmd("INFO")
                    .arg("replication")
                    .query(&mut conn)
                    .unwrap_or_default();
                // A replica counts once its link to the primary is up (synced).
                let synced = !replication.contains("role:slave")
                    || replication.contains("master_link_status:up");
                synced
                    && info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
            });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A sync connection to any live node that follows redirections.
    pub fn connection(&self) -> redis::cluster::ClusterConnection {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.alive())
            .map(RedisServer::url)
            .collect();
        redis::cluster::ClusterClient::new(urls)
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// `CLUSTER KEYSLOT key`, asked of a live node.
    pub fn keyslot(&self, key: &str) -> i64 {
        let node = self.nodes.iter().find(|n| n.alive()).unwrap();
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut node.connection())
            .unwrap()
    }

    /// Every key under `prefix`, from every live primary.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        for node in self.nodes.iter().filter(|n| n.alive()) {
            let mut conn = node.connection();
            let role: String = redis::cmd("ROLE")
                .query::<Vec<redis::Value>>(&mut conn)
                .ok()
                .and_then(|v| v.first().cloned())
                .and_then(|v| redis::from_redis_value(&v).ok())
                .unwrap_or_default();
            if role == "master" {
                out.extend(super::keys(&mut conn, prefix));
            }
        }
        out.sort();
        out
    }

    /// The node serving `key`'s slot as primary.
    pub fn primary_of(&mut self, key: &str) -> usize {
        let slot = self.keyslot(key);
        let node = self.nodes.iter().find(|n| n.alive()).unwrap();
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query(&mut node.connection())
            .unwrap();
        for range in slots {
            let redis::Value::Array(parts) = range else {
                continue;
            };
            let start: i64 = redis::from_redis_value(&parts[0]).unwrap();
            let end: i64 = redis::from_redis_value(&parts[1]).unwrap();
            if (start..=end).contains(&slot) {
                let redis::Value::Array(primary) = &parts[2] else {
                    panic!("no primary")
                };
                let port: i64 = redis::from_redis_value(&primary[1]).unwrap();
                return self
                    .nodes
                    .iter()
                    .position(|n| i64::from(n.port) == port)
                    .unwrap();
            }
        }
        panic!("slot {slot} is not served");
    }
}
