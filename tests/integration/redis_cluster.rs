//! The Redis tier on a real Redis Cluster (3 primaries on free ports, this test's own),
//! with several instances over one PostgreSQL schema, driven over HTTP.
#![cfg(all(feature = "redis", feature = "postgres"))]

use crate::common;
use crate::common::demo::SendOk;
use crate::redis_support;

use std::collections::HashSet;
use std::time::Duration as StdDuration;

use axum::Router;
use common::*;
use http::StatusCode;
use redis_support::*;
use tower_auth_session::secondary::RedisStorage;
use tower_auth_session::store::PostgresStore;
use tower_auth_session::{Session, SessionManager, SessionStore, Token};

/// One app instance, served over real TCP.
pub struct Instance {
    pub manager: SessionManager,
    pub redis: RedisStorage,
    pub base: String,
}

/// Serves `app` on a free port; the URL to reach it.
pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// A PostgreSQL store in a schema of its own, or `None` (skip) without PostgreSQL.
pub async fn postgres(schema: &str) -> Option<PostgresStore> {
    let url = service_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")?;
    Some(
        PostgresStore::builder()
            .schema(schema)
            .unwrap()
            .connect(&url)
            .await
            .unwrap(),
    )
}

pub fn cluster_storage(cluster: &RedisCluster, prefix: &str) -> RedisStorage {
    RedisStorage::cluster(cluster.urls())
        .key_prefix(prefix)
        .timeout(StdDuration::from_millis(500))
        .build()
        .unwrap()
}

/// A plain HTTP client: no cookie jar, the test sends the cookie it means to.
pub struct Http(reqwest::Client);

impl Http {
    pub fn new() -> Self {
        Self(reqwest::Client::new())
    }

    /// `(status, the session cookie pair it set, body)`.
    pub async fn call(
        &self,
        method: &str,
        url: String,
        cookie: Option<&str>,
    ) -> (StatusCode, Option<String>, serde_json::Value) {
        let mut request = self
            .0
            .request(method.parse().unwrap(), url)
            .header("origin", "http://127.0.0.1");
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send_ok().await;
        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
        let token = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|c| c.contains("session_token=") && !c.contains("Max-Age=0"))
            .map(|c| c.split(';').next().unwrap().to_owned());
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, token, body)
    }
}

/// A browser's cookies, as `Set-Cookie` left them (an expired one removed).
#[derive(Clone, Default)]
pub struct Jar(std::collections::BTreeMap<String, String>);

impl Jar {
    fn header(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect();
        pairs.join("; ")
    }

    /// A request with these cookies; the jar keeps what the response sets.
    pub async fn call(&mut self, method: &str, url: String) -> StatusCode {
        let response = reqwest::Client::new()
            .request(method.parse().unwrap(), url)
            .header("origin", "http://127.0.0.1")
            .header("cookie", self.header())
            .send_ok()
            .await;
        for line in response.headers().get_all("set-cookie") {
            let line = line.to_str().unwrap();
            let (name, value) = line.split(';').next().unwrap().split_once('=').unwrap();
            if line.contains("Max-Age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), value.to_owned());
            }
        }
        StatusCode::from_u16(response.status().as_u16()).unwrap()
    }
}

/// With cookie caches: one browser round-robins over three instances (each believes the
/// others' caches); after a sign-out on one and a revoke on another, the cookies the
/// browser held before are refused by every instance on the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_with_cookie_caches_over_postgres_and_a_cluster_agree() {
    let schema = unique_name("tas_cluster_cache");
    let Some(store) = postgres(&schema).await else {
        return;
    };
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let prefix = unique_prefix();
    let clock = tower_auth_session::ManualClock::new();
    let mut instances = Vec::new();
    for update_age in [86_400, 86_400, 0] {
        let redis = RedisStorage::cluster(cluster.urls())
            .key_prefix(&prefix)
            .clock(clock.clone())
            .timeout(StdDuration::from_millis(500))
            .build()
            .unwrap();
        let manager = SessionManager::builder(store.clone())
            .secondary_storage(redis.clone())
            .secret(SECRET)
            .clock(clock.clone())
            .update_age(StdDuration::from_secs(update_age))
            .cookie_cache(tower_auth_session::CookieCache::new())
            .build()
            .unwrap();
        assert!(manager.cookie_cache_ready(StdDuration::from_secs(15)).await);
        let base = serve(app(&manager)).await;
        instances.push(Instance {
            manager,
            redis,
            base,
        });
    }
    // Past the start-up watermark: caches issued from now on are believed everywhere.
    clock.advance(chrono::Duration::seconds(6));
    let me = |i: usize| format!("{}/me", instances[i].base);

    let mut browsers = Vec::new();
    for _ in 0..2 {
        let mut jar = Jar::default();
        let status = jar
            .call("POST", format!("{}/sign-in?user=alice", instances[0].base))
            .await;
        assert_eq!(status, StatusCode::OK);
        // Use on B, refresh on C, back to A: every answer 200.
        for i in [1, 2, 0, 1, 2] {
            assert_eq!(jar.call("GET", me(i)).await, StatusCode::OK);
        }
        assert!(
            jar.0.keys().any(|name| name.contains("session_data")),
            "a cookie cache was issued"
        );
        browsers.push(jar);
    }
    let (first, second) = (browsers[0].clone(), browsers[1].clone());

    // Sign out on B with the first browser; revoke the second from C by id.
    assert_eq!(
        browsers[0]
            .call("POST", format!("{}/sign-out", instances[1].base))
            .await,
        StatusCode::OK
    );
    let id = instances[2]
        .manager
        .list_user_sessions("alice")
        .await
        .unwrap()
        .into_iter()
        .next()
        .expect("the second session")
        .id;
    assert!(instances[2].manager.revoke(&id).await.unwrap());
    for i in 0..3 {
        for held in [&first, &second] {
            let mut replay = held.clone();
            assert_eq!(
                replay.call("GET", me(i)).await,
                StatusCode::UNAUTHORIZED,
                "instance {i} served a revoked session from its cookies"
            );
        }
    }
    for instance in &instances {
        assert_eq!(instance.redis.metrics().failures, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_over_postgres_and_a_cluster_agree_and_a_session_lives_on_one_slot() {
    let schema = unique_name("tas_cluster");
    let Some(store) = postgres(&schema).await else {
        return;
    };
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let prefix = unique_prefix();
    let mut instances = Vec::new();
    for update_age in [86_400, 86_400, 0] {
        let redis = cluster_storage(&cluster, &prefix);
        let manager = SessionManager::builder(store.clone())
            .secondary_storage(redis.clone())
            .secret(SECRET)
            .update_age(StdDuration::from_secs(update_age))
            .build()
            .unwrap();
        let base = serve(app(&manager)).await;
        instances.push(Instance {
            manager,
            redis,
            base,
        });
    }
    let (a, b, c) = (&instances[0], &instances[1], &instances[2]);
    let http = Http::new();
    let me = |instance: &Instance| format!("{}/me", instance.base);

    // Sign in on A, use on B, refresh on C, each over HTTP.
    let (status, cookie, _) = http
        .call("POST", format!("{}/sign-in?user=alice", a.base), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let cookie = cookie.expect("a session cookie");
    let (status, _, body) = http.call("GET", me(b), Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    let id = body["sessionId"].as_str().unwrap().to_owned();
    // A Redis hit on a cluster is one GET, as on one Redis.
    let calls = || {
        let mut total = std::collections::HashMap::new();
        for node in &cluster.nodes {
            for (name, count) in command_calls(&mut node.connection()) {
                *total.entry(name).or_insert(0) += count;
            }
        }
        total
    };
    let before = calls();
    let (status, _, _) = http.call("GET", me(a), Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    let mut spent = delta(&before, &calls());
    spent.remove("info");
    assert_eq!(spent, [("get".to_owned(), 1)].into(), "one GET per hit");
    let (status, refreshed, _) = http.call("GET", me(c), Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(refreshed.is_some(), "C refreshed the session");
    // A second session of alice's, and one of bob's.
    let (_, other, _) = http
        .call("POST", format!("{}/sign-in?user=alice", b.base), None)
        .await;
    let other = other.unwrap();
    let (_, bobs, _) = http
        .call("POST", format!("{}/sign-in?user=bob", c.base), None)
        .await;
    let bobs = bobs.unwrap();

    // Every key a session writes is on its user's slot: two sessions of alice's (values,
    // id pointers) and her index on one, bob's on another.
    let slot_of_user = |user: &str| {
        let index = cluster
            .keys(&prefix)
            .into_iter()
            .find(|key| key.ends_with(&format!("u:{{{user}}}:idx")))
            .expect("the user's index");
        cluster.keyslot(&index)
    };
    let (alice_slot, bob_slot) = (slot_of_user("alice"), slot_of_user("bob"));
    let on_slot = |slot: i64| {
        cluster
            .keys(&prefix)
            .into_iter()
            .filter(|key| cluster.keyslot(key) == slot)
            .count()
    };
    let all = cluster.keys(&prefix);
    assert_eq!(on_slot(alice_slot), 5, "{all:?}");
    assert_eq!(on_slot(bob_slot), 3, "{all:?}");
    assert_eq!(all.len(), 8, "no key elsewhere: {all:?}");

    // Revoke anywhere: sign out on B; then revoke-all on A for the other session.
    let (status, _, _) = http
        .call("POST", format!("{}/sign-out", b.base), Some(&cookie))
        .await;
    assert_eq!(status, StatusCode::OK);
    for instance in &instances {
        let (status, _, _) = http.call("GET", me(instance), Some(&cookie)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, _) = http.call("GET", me(instance), Some(&other)).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(!a.manager.revoke(&id).await.unwrap(), "already revoked");
    assert_eq!(a.manager.revoke_user("alice").await.unwrap(), 1);
    for instance in &instances {
        let (status, _, _) = http.call("GET", me(instance), Some(&other)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _, _) = http.call("GET", me(instance), Some(&bobs)).await;
        assert_eq!(status, StatusCode::OK);
    }
    // Tombstones and the generation counter joined alice's slot; nothing went elsewhere.
    let slots_after: HashSet<i64> = cluster
        .keys(&prefix)
        .iter()
        .map(|key| cluster.keyslot(key))
        .collect();
    assert_eq!(slots_after, HashSet::from([alice_slot, bob_slot]));
    assert!(
        cluster
            .keys(&prefix)
            .iter()
            .any(|key| key.ends_with("u:{alice}:gen"))
    );
    for instance in &instances {
        let metrics = instance.redis.metrics();
        assert_eq!((metrics.failures, metrics.circuit_opened), (0, 0));
        assert!(metrics.round_trips > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_before_the_shard_tag_is_served_by_the_store_on_a_cluster() {
    let schema = unique_name("tas_cluster_old");
    let Some(store) = postgres(&schema).await else {
        return;
    };
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let prefix = unique_prefix();
    let redis = cluster_storage(&cluster, &prefix);
    let manager = SessionManager::builder(store.clone())
        .secondary_storage(redis.clone())
        .secret(SECRET)
        .build()
        .unwrap();
    // What an older version wrote: a token and an id drawn without the user's shard.
    let now = chrono::Utc::now();
    let mut session = Session::new("carol", now, now + chrono::Duration::days(1));
    session.id = format!("old-{}", unique_name("id"));
    let token = loop {
        let token = Token::generate();
        if token.hash().shard() != Token::generate_for("carol").hash().shard() {
            break token;
        }
    };
    store.create(&token.hash(), &session).await.unwrap();
    let cookie = format!(
        "{}={}",
        manager.session_cookie_name(),
        tower_auth_session::KeyRing::from_secret(SECRET)
            .unwrap()
            .sign_token(manager.session_cookie_name(), &token)
    );
    let app = app(&manager);
    for _ in 0..2 {
        let reply = send(&app, get("/me", Some(&cookie))).await;
        assert_eq!(reply.status, StatusCode::OK, "the old cookie still works");
    }
    assert!(
        cluster.keys(&prefix).is_empty(),
        "{:?}",
        cluster.keys(&prefix)
    );
    assert!(manager.revoke(&session.id).await.unwrap());
    assert_eq!(
        send(&app, get("/me", Some(&cookie))).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(redis.metrics().failures, 0);
}

/// The single-node race test (`redis_races`) on the cluster: a thousand revokes racing a
/// read-repair and a refresh over three instances never bring a session back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoke_racing_refresh_and_backfill_a_thousand_times_on_a_cluster_never_resurrects() {
    use redis::Commands;
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let prefix = unique_prefix();
    let store = tower_auth_session::MemoryStore::new();
    let mut conn = cluster.connection();
    crate::redis_races::race(
        1000,
        &store,
        || cluster_storage(&cluster, &prefix),
        |hash, id, delete| {
            // The session's shard is its token hash's first byte.
            let scope = format!("{prefix}{{{}}}", &hash[..2]);
            let value_key = format!("{scope}s:{hash}");
            if delete {
                let _: () = conn.del(&value_key).unwrap();
                return (None, None);
            }
            (
                conn.get(&value_key).unwrap(),
                conn.get(format!("{scope}i:{id}")).unwrap(),
            )
        },
    )
    .await;
}

/// A 3-primary cluster with a replica each; the primary holding some of the sessions is
/// killed (SIGKILL) mid-run: no live session is refused at any point, no revoked one is
/// ever served, a revoke attempted during the failover either fails (and its retry
/// succeeds) or holds, and the tier serves from the promoted replica afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_killed_mid_run_loses_no_session_and_undoes_no_revoke() {
    let schema = unique_name("tas_cluster_failover");
    let Some(store) = postgres(&schema).await else {
        return;
    };
    let Some(mut cluster) = RedisCluster::start(3, 1) else {
        return;
    };
    let prefix = unique_prefix();
    let mut instances = Vec::new();
    for _ in 0..3 {
        let redis = RedisStorage::cluster(cluster.urls())
            .key_prefix(&prefix)
            .timeout(StdDuration::from_millis(500))
            .wait_for_replicas(1)
            .build()
            .unwrap();
        let manager = SessionManager::builder(store.clone())
            .secondary_storage(redis.clone())
            .secret(SECRET)
            .build()
            .unwrap();
        instances.push((app(&manager), manager, redis));
    }
    // 24 sessions over the instances; 8 revoked before the failure.
    let mut live = Vec::new();
    for i in 0..24 {
        let (app, manager, _) = &instances[i % 3];
        let cookie = sign_in(app, manager, &format!("u{i}")).await;
        let reply = send(app, get("/me", Some(&cookie))).await;
        let id = reply.json()["sessionId"].as_str().unwrap().to_owned();
        live.push((cookie, id));
    }
    let mut revoked = Vec::new();
    for i in 0..8 {
        let (cookie, id) = live.remove(0);
        assert!(instances[i % 3].1.revoke(&id).await.unwrap());
        revoked.push(cookie);
    }
    // Each revoke waited for its shard's replica (`wait_for_replicas(1)`).
    let waits: u64 = cluster
        .nodes
        .iter()
        .map(|node| {
            command_calls(&mut node.connection())
                .get("wait")
                .copied()
                .unwrap_or(0)
        })
        .sum();
    assert!(waits >= 8, "{waits} WAITs for 8 revokes");
    let check = |live: Vec<String>, revoked: Vec<String>| {
        let apps: Vec<_> = instances.iter().map(|(app, _, _)| app.clone()).collect();
        async move {
            for app in &apps {
                for cookie in &live {
                    let status = send(app, get("/me", Some(cookie))).await.status;
                    assert_eq!(status, StatusCode::OK, "a live session was refused");
                }
                for cookie in &revoked {
                    let status = send(app, get("/me", Some(cookie))).await.status;
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoke was undone");
                }
            }
        }
    };
    let cookies = |list: &[(String, String)]| list.iter().map(|(c, _)| c.clone()).collect();
    check(cookies(&live), revoked.clone()).await;

    // Kill the primary holding the first live session's user's keys.
    let victim = cluster.primary_of(&format!("{prefix}{{{:02x}}}", shard_of_user("u8")));
    cluster.nodes[victim].kill();
    let started = std::time::Instant::now();
    // During the failover: every request still answers right; revokes are retried
    // until they hold.
    let mut revoked_during = 0;
    while started.elapsed() < StdDuration::from_secs(6) {
        check(cookies(&live), revoked.clone()).await;
        if revoked_during < 4 {
            let (cookie, id) = live.remove(0);
            let manager = &instances[revoked_during % 3].1;
            let deadline = std::time::Instant::now() + StdDuration::from_secs(20);
            loop {
                match manager.revoke(&id).await {
                    Ok(found) => {
                        assert!(found);
                        break;
                    }
                    Err(error) => {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "a revoke kept failing after the failover: {error:?}"
                        );
                        tokio::time::sleep(StdDuration::from_millis(100)).await;
                    }
                }
            }
            revoked.push(cookie);
            revoked_during += 1;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    cluster.wait_until_ok(StdDuration::from_secs(30));
    // Give the clients one probe interval to find the promoted replica.
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    check(cookies(&live), revoked.clone()).await;
    let before: Vec<u64> = instances
        .iter()
        .map(|(_, _, redis)| redis.metrics().failures)
        .collect();
    check(cookies(&live), revoked.clone()).await;
    for ((_, _, redis), before) in instances.iter().zip(before) {
        let metrics = redis.metrics();
        assert!(!metrics.circuit_open, "the tier is not used again");
        assert_eq!(
            metrics.failures, before,
            "redis still fails after the failover"
        );
    }
    eprintln!(
        "failover: {} live sessions kept, {} revokes held ({revoked_during} made during the failover)",
        live.len(),
        revoked.len()
    );
}

/// The shard of a user, as the storage computes it (from a token made for the user).
fn shard_of_user(user: &str) -> u8 {
    Token::generate_for(user).hash().shard()
}

/// A slot moves to another primary while the storage holds the old slot map: the next
/// command meets `MOVED`, which the client follows; nothing counts as an outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_under_a_running_storage_is_followed_not_an_outage() {
    let Some(mut cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let prefix = unique_prefix();
    let redis = RedisStorage::cluster(cluster.urls())
        .key_prefix(&prefix)
        .timeout(StdDuration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let manager = SessionManager::builder(tower_auth_session::MemoryStore::new())
        .secondary_storage(redis.clone())
        .secret(SECRET)
        .build()
        .unwrap();
    let app = app(&manager);
    let warm = sign_in(&app, &manager, "warm").await;
    assert_eq!(
        send(&app, get("/me", Some(&warm))).await.status,
        StatusCode::OK
    );

    // Move the (still empty) slot of mover's shard to another primary.
    let scope = format!("{prefix}{{{:02x}}}", shard_of_user("mover"));
    let slot = cluster.keyslot(&scope);
    let source = cluster.primary_of(&scope);
    let target = (0..cluster.nodes.len()).find(|&i| i != source).unwrap();
    let id_of = |i: usize| -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut cluster.nodes[i].connection())
            .unwrap()
    };
    let (source_id, target_id) = (id_of(source), id_of(target));
    let setslot = |node: usize, args: &[&str]| {
        let _: () = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(args)
            .query(&mut cluster.nodes[node].connection())
            .unwrap();
    };
    setslot(target, &["IMPORTING", &source_id]);
    setslot(source, &["MIGRATING", &target_id]);
    for node in 0..cluster.nodes.len() {
        setslot(node, &["NODE", &target_id]);
    }
    assert_eq!(cluster.primary_of(&scope), target);

    let moved = sign_in(&app, &manager, "mover").await;
    assert_eq!(
        send(&app, get("/me", Some(&moved))).await.status,
        StatusCode::OK
    );
    assert_eq!(manager.revoke_user("mover").await.unwrap(), 1);
    assert_eq!(
        send(&app, get("/me", Some(&moved))).await.status,
        StatusCode::UNAUTHORIZED
    );
    let on_target = keys(&mut cluster.nodes[target].connection(), &scope);
    assert!(!on_target.is_empty(), "mover's keys are on the new primary");
    let metrics = redis.metrics();
    assert_eq!(
        (metrics.failures, metrics.circuit_opened),
        (0, 0),
        "{metrics:?}"
    );
}

/// Redis as the only store, on a cluster: sign-in, refresh, listing, revoke by id and
/// revoke-all, with two instances that share nothing but the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_alone_on_a_cluster_signs_in_refreshes_lists_and_revokes() {
    let Some(cluster) = RedisCluster::start(3, 0) else {
        return;
    };
    let prefix = unique_prefix();
    let build = |redis: RedisStorage| {
        SessionManager::builder(redis)
            .secret(SECRET)
            .update_age(StdDuration::ZERO)
            .build()
            .unwrap()
    };
    // B finds the cluster by URL: `redis+cluster://host:port,host:port`.
    let nodes: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port))
        .collect();
    let by_url = RedisStorage::builder(format!("redis+cluster://{}", nodes.join(",")))
        .key_prefix(&prefix)
        .connect()
        .await
        .unwrap();
    assert!(by_url.is_cluster());
    let (a, b) = (build(cluster_storage(&cluster, &prefix)), build(by_url));
    let (app_a, app_b) = (app(&a), app(&b));
    let mut pairs = Vec::new();
    for user in ["alice", "alice", "bob"] {
        pairs.push(sign_in(&app_a, &a, user).await);
    }
    for pair in &pairs {
        // Served and refreshed (a compare-and-set in Redis) by the other instance.
        let reply = send(&app_b, get("/me", Some(pair))).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let alices = b.list_user_sessions("alice").await.unwrap();
    assert_eq!(alices.len(), 2);
    assert!(a.revoke(&alices[0].id).await.unwrap(), "revoke by id");
    assert_eq!(b.list_user_sessions("alice").await.unwrap().len(), 1);
    assert_eq!(b.revoke_user("alice").await.unwrap(), 1);
    for (pair, live) in pairs.iter().zip([false, false, true]) {
        let status = send(&app_a, get("/me", Some(pair))).await.status;
        let expected = if live {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(status, expected);
    }
    // The tombstones and the generation counter are under alice's tag.
    let tag = format!("{prefix}{{{:02x}}}", shard_of_user("alice"));
    let keys = cluster.keys(&prefix);
    assert!(keys.contains(&format!("{tag}u:{{alice}}:gen")), "{keys:?}");
    let tombstone = format!("{tag}i:{}", alices[0].id);
    assert!(keys.contains(&tombstone), "{keys:?}");
}
