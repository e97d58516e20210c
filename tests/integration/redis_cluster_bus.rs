//! Cookie caches and their revocation bus on a real Redis Cluster, against one Redis:
//! every instance refuses a revoked session's cache on the next request; revoke latency
//! and idle cost per instance are printed for 1, 4 and 8 instances.
#![cfg(feature = "redis")]

use crate::common;
use crate::redis_support;

use std::collections::HashMap;
use std::time::{Duration as StdDuration, Instant};

use axum::Router;
use chrono::Duration;
use common::*;
use http::StatusCode;
use redis_support::*;
use tower_auth_session::secondary::RedisStorage;
use tower_auth_session::{CookieCache, ManualClock, MemoryStore, SessionManager};

const CACHE: &str = "__Host-tas.session_data";

struct Instance {
    manager: SessionManager,
    app: Router,
    counts: Counts,
}

/// `count` instances over one store and `redis` (one per instance, cookie caches on),
/// leases live and the clock past the start-up watermark.
async fn instances(
    count: usize,
    redis: impl Fn() -> RedisStorage,
    clock: &ManualClock,
) -> Vec<Instance> {
    let store = MemoryStore::new();
    let out: Vec<Instance> = (0..count)
        .map(|_| {
            let (counting, counts) = CountingStore::new(store.clone());
            let manager = SessionManager::builder(counting)
                .secondary_storage(redis())
                .secret(SECRET)
                .clock(clock.clone())
                .cookie_cache(CookieCache::new())
                .build()
                .unwrap();
            Instance {
                app: app(&manager),
                manager,
                counts,
            }
        })
        .collect();
    for instance in &out {
        assert!(
            instance
                .manager
                .cookie_cache_ready(StdDuration::from_secs(15))
                .await,
            "the lease never became live"
        );
    }
    clock.advance(Duration::seconds(6));
    out
}

/// A request to `instance` with the token and that instance's cache (kept per instance).
async fn visit(
    instance: &Instance,
    token: &str,
    caches: &mut HashMap<usize, String>,
    which: usize,
) -> (StatusCode, bool) {
    let cookie = match caches.get(&which) {
        Some(cache) => format!("{token}; {cache}"),
        None => token.to_owned(),
    };
    let reply = send(&instance.app, get("/me", Some(&cookie))).await;
    let had_cache = caches.contains_key(&which);
    if let Some(value) = reply.cookie_value(CACHE) {
        if value.is_empty() {
            caches.remove(&which);
        } else {
            caches.insert(which, format!("{CACHE}={value}"));
        }
    }
    (reply.status, had_cache)
}

/// Signs in, warms a cache on every instance, revokes on one, and checks every instance
/// refuses the next request. Returns the revoke latencies.
async fn revoke_rounds(instances: &[Instance], rounds: usize) -> Vec<StdDuration> {
    let mut latencies = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let first = &instances[0];
        let reply = send(&first.app, post(&format!("/sign-in?user=u{round}"), None)).await;
        assert_eq!(reply.status, StatusCode::OK);
        let name = first.manager.session_cookie_name();
        let token = format!("{name}={}", reply.cookie_value(name).unwrap());
        let id = reply.json()["session"]["id"].as_str().unwrap().to_owned();
        let mut caches = HashMap::new();
        for (i, instance) in instances.iter().enumerate() {
            let (status, _) = visit(instance, &token, &mut caches, i).await;
            assert_eq!(status, StatusCode::OK);
            assert!(caches.contains_key(&i), "instance {i} issued no cache");
            // Believed: no store read, no Redis command.
            let finds = instance.counts.finds();
            let (status, with_cache) = visit(instance, &token, &mut caches, i).await;
            assert_eq!((status, with_cache), (StatusCode::OK, true));
            assert_eq!(
                instance.counts.finds(),
                finds,
                "instance {i} read the store"
            );
        }
        let revoker = &instances[round % instances.len()];
        let started = Instant::now();
        assert!(revoker.manager.revoke(&id).await.unwrap());
        latencies.push(started.elapsed());
        for (i, instance) in instances.iter().enumerate() {
            let (status, with_cache) = visit(instance, &token, &mut caches, i).await;
            assert!(
                with_cache,
                "round {round}: instance {i} was asked without its cache"
            );
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "round {round}: instance {i} served a revoked session"
            );
        }
    }
    latencies.sort();
    latencies
}

/// Calls per command across `nodes` between two snapshots.
fn calls(nodes: &[String]) -> HashMap<String, u64> {
    let mut total = HashMap::new();
    for url in nodes {
        for (name, count) in command_calls(&mut connection(url)) {
            *total.entry(name).or_insert(0) += count;
        }
    }
    total
}

/// Idle commands per second per instance, over `nodes` (all of the Redis), while
/// `count` instances hold their leases and nothing else happens.
async fn idle_rate(nodes: &[String], count: usize) -> f64 {
    let window = StdDuration::from_secs(2);
    let before = calls(nodes);
    tokio::time::sleep(window).await;
    let mut spent = delta(&before, &calls(nodes));
    // The snapshots' own INFO calls.
    spent.remove("info");
    let total: u64 = spent.values().sum();
    total as f64 / window.as_secs_f64() / count as f64
}

fn report(what: &str, count: usize, latencies: &[StdDuration], idle: f64) {
    println!(
        "{what}, {count} instance(s): revoke with cookie caches median {:?}, max {:?} over {} revokes; idle {idle:.1} commands/s per instance",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cookie_caches_on_a_cluster_refuse_a_revoked_session_everywhere_at_1_4_and_8_instances() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let Some(single) = RedisServer::start() else {
        return;
    };
    for count in [1, 4, 8] {
        let prefix = unique_prefix();
        let targets = [
            ("cluster (3 primaries)", cluster.urls(), true),
            ("single Redis", vec![single.url()], false),
        ];
        for (what, nodes, is_cluster) in targets {
            let clock = ManualClock::new();
            let storage = || {
                let builder = if is_cluster {
                    RedisStorage::cluster(nodes.clone())
                } else {
                    RedisStorage::builder(nodes[0].clone())
                };
                builder
                    .key_prefix(&prefix)
                    .clock(clock.clone())
                    .timeout(StdDuration::from_millis(500))
                    .build()
                    .unwrap()
            };
            let running = instances(count, storage, &clock).await;
            let idle = idle_rate(&nodes, count).await;
            let latencies = revoke_rounds(&running, 20).await;
            report(what, count, &latencies, idle);
        }
    }
}

/// The primary holding the bus' slot is killed: every instance's subscription drops, so
/// none believes a cookie cache (the store answers, nobody is refused); after the
/// replica takes over they resubscribe, trust again, and a revoke reaches every cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bus_primary_failing_is_lost_trust_until_the_replica_takes_over() {
    let Some(mut cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let prefix = unique_prefix();
    let clock = ManualClock::new();
    let nodes = cluster.urls();
    let running = instances(
        3,
        || {
            RedisStorage::cluster(nodes.clone())
                .key_prefix(&prefix)
                .clock(clock.clone())
                .timeout(StdDuration::from_millis(500))
                .build()
                .unwrap()
        },
        &clock,
    )
    .await;
    let reply = send(&running[0].app, post("/sign-in?user=alice", None)).await;
    let name = running[0].manager.session_cookie_name();
    let token = format!("{name}={}", reply.cookie_value(name).unwrap());
    let mut caches = HashMap::new();
    for (i, instance) in running.iter().enumerate() {
        visit(instance, &token, &mut caches, i).await;
    }

    // The bus keeps every name on the tag `{<prefix>cc}`.
    let bus = cluster.primary_of(&format!("{{{prefix}cc}}"));
    cluster.nodes[bus].kill();
    let deadline = Instant::now() + StdDuration::from_secs(10);
    while running.iter().any(|i| i.manager.cookie_cache_active()) {
        assert!(
            Instant::now() < deadline,
            "an instance kept trusting its caches"
        );
        tokio::time::sleep(StdDuration::from_millis(20)).await;
    }
    // Without trust the store answers: nobody is signed out.
    for (i, instance) in running.iter().enumerate() {
        assert_eq!(
            visit(instance, &token, &mut caches, i).await.0,
            StatusCode::OK
        );
    }

    cluster.wait_until_ok(StdDuration::from_secs(30));
    for instance in &running {
        assert!(
            instance
                .manager
                .cookie_cache_ready(StdDuration::from_secs(15))
                .await,
            "an instance did not trust again after the failover"
        );
    }
    // A client whose slot map still names the dead primary fails its first call there
    // (the breaker opens, the probe makes a fresh connection): settle every instance on
    // the users the rounds below use, retrying as an app would.
    for instance in &running {
        for round in 0..5 {
            let deadline = Instant::now() + StdDuration::from_secs(20);
            while let Err(error) = instance.manager.revoke_user(&format!("u{round}")).await {
                assert!(Instant::now() < deadline, "revokes keep failing: {error}");
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
        }
    }
    // Past the skew allowance: caches issued from now on are believed again.
    clock.advance(Duration::seconds(6));
    let latencies = revoke_rounds(&running, 5).await;
    println!(
        "after the bus' primary failed over: revoke median {:?}",
        latencies[latencies.len() / 2]
    );
}
