//! Redis failures in primary + secondary mode, against test-owned `redis-server`s (which
//! these tests flush, kill and restart) and a test-owned TCP proxy (which they cut).
#![cfg(feature = "redis")]

use crate::common;
use crate::redis_support;

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Utc};
use common::*;
use http::StatusCode;
use redis::Commands;
use redis_support::*;
use tower_auth_session::secondary::RedisStorage;
use tower_auth_session::store::{BoxFuture, StoredSession};
use tower_auth_session::{
    MemoryStore, Session, SessionManager, SessionStore, StoreError, TokenHash,
};

fn manager_over(store: impl SessionStore, redis: &RedisStorage) -> SessionManager {
    SessionManager::builder(store)
        .secondary_storage(redis.clone())
        .secret(SECRET)
        .build()
        .unwrap()
}

fn hash_of(pair: &str) -> String {
    token_hash_hex(&raw_token(pair.split_once('=').unwrap().1))
}

#[tokio::test]
async fn flushall_loses_no_session_backfills_redis_and_then_costs_one_get() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = unique_prefix();
    let redis = storage(&server.url(), &prefix);
    let (store, counts) = CountingStore::new(MemoryStore::new());
    let manager = manager_over(store, &redis);
    let app = app(&manager);
    let mut pairs = Vec::new();
    for i in 0..20 {
        pairs.push(sign_in(&app, &manager, &format!("user{i}")).await);
    }
    let mut conn = server.connection();
    let _: () = redis::cmd("FLUSHALL").query(&mut conn).unwrap();
    assert!(keys(&mut conn, &prefix).is_empty());

    for pair in &pairs {
        let finds = counts.finds();
        let reply = send(&app, get("/me", Some(pair))).await;
        assert_eq!(reply.status, StatusCode::OK, "lost by the flush");
        assert!(
            reply.set_cookies().is_empty(),
            "cookies touched: {:?}",
            reply.set_cookies()
        );
        assert_eq!(counts.finds() - finds, 1, "served from the store");
        let backfilled: bool = conn.exists(session_key(&prefix, &hash_of(pair))).unwrap();
        assert!(backfilled, "Redis was not backfilled");
    }
    for pair in &pairs {
        let finds = counts.finds();
        let before = command_calls(&mut conn);
        assert_eq!(
            send(&app, get("/me", Some(pair))).await.status,
            StatusCode::OK
        );
        let mut spent = delta(&before, &command_calls(&mut conn));
        spent.remove("info");
        assert_eq!(
            spent,
            [("get".to_owned(), 1)].into(),
            "one Redis GET per request"
        );
        assert_eq!(counts.finds(), finds, "no store query once backfilled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_costs_no_5xx_no_sign_out_and_is_used_again_after_restart() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let redis = storage(&server.url(), &unique_prefix());
    let (store, counts) = CountingStore::new(MemoryStore::new());
    let manager = manager_over(store, &redis);
    let app = app(&manager);
    let mut pairs = Vec::new();
    for i in 0..5 {
        pairs.push(sign_in(&app, &manager, &format!("user{i}")).await);
    }

    let (mut worst, mut slow, mut total) = (StdDuration::ZERO, 0, 0);
    for round in 0..400 {
        if round == 100 {
            server.kill();
        }
        if round == 200 {
            // Signing in during the outage works too: the store is the source of truth.
            pairs.push(sign_in(&app, &manager, "during-outage").await);
        }
        if round == 300 {
            server.restart();
        }
        let pair = &pairs[round % pairs.len()];
        let started = Instant::now();
        let reply = send(&app, get("/me", Some(pair))).await;
        let took = started.elapsed();
        worst = worst.max(took);
        total += 1;
        if took >= StdDuration::from_millis(150) {
            slow += 1;
        }
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "round {round}: {}",
            reply.body
        );
        assert!(
            reply.set_cookies().is_empty(),
            "round {round}: {:?}",
            reply.set_cookies()
        );
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    let metrics = redis.metrics();
    eprintln!(
        "redis outage: {total} requests, worst latency {worst:?}, {slow} paid the 200 ms timeout; {metrics:?}"
    );
    assert!(metrics.circuit_opened >= 1, "{metrics:?}");
    assert!(
        metrics.short_circuited > 0,
        "the breaker never spared a request: {metrics:?}"
    );
    // Generous: one timeout (200 ms) plus scheduling, never a hang.
    assert!(worst < StdDuration::from_secs(2), "worst latency {worst:?}");

    // After the restart Redis is empty; every session is backfilled and then served by
    // Redis alone.
    let deadline = Instant::now() + StdDuration::from_secs(10);
    loop {
        let finds = counts.finds();
        for pair in &pairs {
            assert_eq!(
                send(&app, get("/me", Some(pair))).await.status,
                StatusCode::OK
            );
        }
        if counts.finds() == finds {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Redis not used again: {:?}",
            redis.metrics()
        );
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    assert!(!redis.metrics().circuit_open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_one_timeout_per_probe_not_one_per_request() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let redis = storage(&server.url(), &unique_prefix());
    let manager = manager_over(MemoryStore::new(), &redis);
    let app = app(&manager);
    let pair = sign_in(&app, &manager, "alice").await;

    let (mut worst, mut slow, mut frozen_rounds) = (StdDuration::ZERO, 0, 0);
    for round in 0..350 {
        if round == 50 {
            server.freeze();
        }
        if round == 250 {
            server.thaw();
        }
        let started = Instant::now();
        let reply = send(&app, get("/me", Some(&pair))).await;
        let took = started.elapsed();
        assert_eq!(reply.status, StatusCode::OK, "round {round}");
        assert!(reply.set_cookies().is_empty(), "round {round}");
        if (50..250).contains(&round) {
            frozen_rounds += 1;
            worst = worst.max(took);
            if took >= StdDuration::from_millis(150) {
                slow += 1;
            }
        }
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    let metrics = redis.metrics();
    eprintln!(
        "frozen redis: {frozen_rounds} requests during the freeze, {slow} paid the 200 ms timeout, worst {worst:?}; {metrics:?}"
    );
    assert!(metrics.short_circuited > 0, "{metrics:?}");
    assert!(
        slow < frozen_rounds / 2,
        "{slow} of {frozen_rounds} requests paid the timeout"
    );
    // Generous: one timeout (200 ms) plus scheduling, never a hang.
    assert!(worst < StdDuration::from_secs(2), "worst latency {worst:?}");
}

/// A store that runs a hook just before it deletes, to cut the network at the worst time.
#[derive(Clone)]
struct HookStore {
    inner: MemoryStore,
    before_delete: Arc<dyn Fn() + Send + Sync>,
}

impl SessionStore for HookStore {
    fn create<'a>(
        &'a self,
        h: &'a TokenHash,
        s: &'a Session,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.create(h, s)
    }
    fn find<'a>(&'a self, h: &'a TokenHash) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        self.inner.find(h)
    }
    fn update<'a>(
        &'a self,
        h: &'a TokenHash,
        g: u64,
        s: &'a Session,
        n: Option<&'a TokenHash>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.update(h, g, s, n)
    }
    fn delete<'a>(
        &'a self,
        h: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        (self.before_delete)();
        self.inner.delete(h)
    }
    fn find_by_id<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        self.inner.find_by_id(id)
    }
    fn delete_by_id<'a>(
        &'a self,
        id: &'a str,
        u: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        (self.before_delete)();
        self.inner.delete_by_id(id, u)
    }
    fn delete_by_user<'a>(
        &'a self,
        u: &'a str,
        k: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>, StoreError>> {
        (self.before_delete)();
        self.inner.delete_by_user(u, k)
    }
    fn list_by_user<'a>(
        &'a self,
        u: &'a str,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        self.inner.list_by_user(u, now)
    }
    fn delete_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.delete_expired(now, limit)
    }
}

/// Instance A talks to Redis through a proxy the test cuts; instance B talks to Redis
/// directly; both share the store.
struct Partition {
    proxy: Arc<TcpProxy>,
    store: MemoryStore,
    a: SessionManager,
    app_a: axum::Router,
    app_b: axum::Router,
    url: String,
    prefix: String,
    cut_on_delete: Arc<std::sync::atomic::AtomicBool>,
}

async fn partition() -> Option<Partition> {
    let url = shared_redis()?;
    let prefix = unique_prefix();
    let proxy = Arc::new(TcpProxy::start(url.trim_start_matches("redis://").to_owned()).await);
    let store = MemoryStore::new();
    let cut_on_delete = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hook = {
        let (proxy, flag) = (proxy.clone(), cut_on_delete.clone());
        Arc::new(move || {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                proxy.cut();
            }
        })
    };
    let a = manager_over(
        HookStore {
            inner: store.clone(),
            before_delete: hook,
        },
        &storage(&proxy.url(), &prefix),
    );
    let b = manager_over(store.clone(), &storage(&url, &prefix));
    Some(Partition {
        app_a: app(&a),
        app_b: app(&b),
        a,
        proxy,
        store,
        url,
        prefix,
        cut_on_delete,
    })
}

impl Partition {
    /// The session is served by no path: A (through the proxy, or the store when cut),
    /// B (Redis directly), a fresh instance, and Redis holds no copy.
    async fn assert_never_served(&self, pair: &str, id: &str) {
        for app in [
            &self.app_a,
            &self.app_b,
            &app(&manager_over(
                self.store.clone(),
                &storage(&self.url, &self.prefix),
            )),
        ] {
            let reply = send(app, get("/me", Some(pair))).await;
            assert_eq!(
                reply.status,
                StatusCode::UNAUTHORIZED,
                "served after revoke"
            );
        }
        let mut conn = connection(&self.url);
        let value: Option<Vec<u8>> = conn.get(session_key(&self.prefix, &hash_of(pair))).unwrap();
        assert!(value.is_none(), "Redis still holds the revoked session");
        let pointer: Option<String> = conn.get(format!("{}i:{id}", self.prefix)).unwrap();
        assert_eq!(
            pointer.as_deref(),
            Some("-"),
            "no tombstone for the revoked id"
        );
        assert!(self.store.is_empty(), "the store still holds it");
    }
}

async fn session_id(app: &axum::Router, pair: &str) -> String {
    let reply = send(app, get("/me", Some(pair))).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()["sessionId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn revoke_during_a_partition_fails_changes_nothing_and_a_retry_after_restore_is_final() {
    let Some(p) = partition().await else { return };
    let pair = sign_in(&p.app_a, &p.a, "alice").await;
    let id = session_id(&p.app_b, &pair).await;

    p.proxy.cut();
    let error =
        p.a.revoke(&id)
            .await
            .expect_err("revoke reported success without Redis");
    assert!(error.to_string().contains("nothing was revoked"), "{error}");
    // Nothing was half-done: the session is as live as before, on every instance.
    assert_eq!(
        send(&p.app_b, get("/me", Some(&pair))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&p.app_a, get("/me", Some(&pair))).await.status,
        StatusCode::OK
    );

    p.proxy.restore();
    let deadline = Instant::now() + StdDuration::from_secs(10);
    loop {
        match p.a.revoke(&id).await {
            Ok(existed) => {
                assert!(existed);
                break;
            }
            Err(error) => assert!(Instant::now() < deadline, "retry never succeeded: {error}"),
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    p.assert_never_served(&pair, &id).await;
}

#[tokio::test]
async fn a_partition_right_after_the_tombstone_still_gives_a_final_revoke() {
    let Some(p) = partition().await else { return };
    let pair = sign_in(&p.app_a, &p.a, "alice").await;
    let id = session_id(&p.app_b, &pair).await;

    // Redis is cut after the tombstone, just before the store delete.
    p.cut_on_delete
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        p.a.revoke(&id)
            .await
            .expect("the tombstone and the store delete both landed")
    );
    p.assert_never_served(&pair, &id).await;
    p.cut_on_delete
        .store(false, std::sync::atomic::Ordering::SeqCst);
    p.proxy.restore();
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    p.assert_never_served(&pair, &id).await;
}

#[tokio::test]
async fn a_revoke_whose_last_step_cannot_reach_redis_errors_and_a_retry_is_final() {
    let Some(p) = partition().await else { return };
    // Signed in while A could not reach Redis: only the store has it.
    p.proxy.cut();
    let pair = sign_in(&p.app_a, &p.a, "alice").await;
    p.proxy.restore();
    // Step 1 (revoke by user) finds sessions through the Redis index; this one is not
    // there, so only step 3, after the store delete, can tombstone it.
    let mut conn = connection(&p.url);
    let _: () = conn.del(format!("{}u:{{alice}}:idx", p.prefix)).unwrap();
    let _: () = conn.del(session_key(&p.prefix, &hash_of(&pair))).unwrap();

    tokio::time::sleep(StdDuration::from_millis(300)).await;
    p.cut_on_delete
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let error =
        p.a.revoke_user("alice")
            .await
            .expect_err("step 3 could not reach Redis");
    assert!(error.to_string().contains("retry"), "{error}");
    p.cut_on_delete
        .store(false, std::sync::atomic::Ordering::SeqCst);
    p.proxy.restore();

    let deadline = Instant::now() + StdDuration::from_secs(10);
    while let Err(error) = p.a.revoke_user("alice").await {
        assert!(Instant::now() < deadline, "retry never succeeded: {error}");
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    for app in [&p.app_a, &p.app_b] {
        assert_eq!(
            send(app, get("/me", Some(&pair))).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let value: Option<Vec<u8>> = conn.get(session_key(&p.prefix, &hash_of(&pair))).unwrap();
    assert!(value.is_none());
}

/// How a test breaks the link between instance A and Redis.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Connections dropped, new ones refused.
    Cut,
    /// Connections accepted, never answered.
    Blackhole,
}

/// Issue 9, item 1 and 2: break the link, see a revoke fail, heal, wait with no traffic at
/// all, and the very first revoke succeeds and is final on the other instance. With
/// `cancel_during_outage`, a revoke is also abandoned mid-flight while the circuit is open
/// (a client that gave up), which must not leave the tier switched off.
async fn first_revoke_after_a_quiet_heal_succeeds(fault: Fault, cancel_during_outage: bool) {
    let Some(p) = partition().await else { return };
    let pair = sign_in(&p.app_a, &p.a, "alice").await;
    let id = session_id(&p.app_b, &pair).await;

    match fault {
        Fault::Cut => p.proxy.cut(),
        Fault::Blackhole => p.proxy.blackhole(),
    }
    let error =
        p.a.revoke(&id)
            .await
            .expect_err("revoke reported success without Redis");
    assert!(error.to_string().contains("nothing was revoked"), "{error}");
    if cancel_during_outage {
        // Past the probe interval, when a request used to carry the probe: give up on it
        // before Redis could answer.
        tokio::time::sleep(StdDuration::from_millis(1200)).await;
        let abandoned = tokio::time::timeout(StdDuration::from_millis(20), p.a.revoke(&id)).await;
        assert!(!matches!(abandoned, Ok(Ok(_))), "revoked during the outage");
    }
    assert_eq!(
        send(&p.app_b, get("/me", Some(&pair))).await.status,
        StatusCode::OK,
        "a failed revoke changed something"
    );

    p.proxy.restore();
    // A quiet gap: no request reaches A, so nothing but A itself can notice Redis is back.
    tokio::time::sleep(StdDuration::from_secs(3)).await;
    let revoked = p.a.revoke(&id).await;
    assert!(
        matches!(revoked, Ok(true)),
        "the first revoke after the heal failed: {revoked:?}"
    );
    p.assert_never_served(&pair, &id).await;
}

#[tokio::test]
async fn after_a_cut_heals_the_first_revoke_after_a_quiet_gap_succeeds() {
    first_revoke_after_a_quiet_heal_succeeds(Fault::Cut, false).await;
}

#[tokio::test]
async fn after_a_blackhole_heals_the_first_revoke_after_a_quiet_gap_succeeds() {
    first_revoke_after_a_quiet_heal_succeeds(Fault::Blackhole, false).await;
}

#[tokio::test]
async fn a_request_cancelled_during_an_outage_does_not_switch_the_tier_off() {
    first_revoke_after_a_quiet_heal_succeeds(Fault::Blackhole, true).await;
    first_revoke_after_a_quiet_heal_succeeds(Fault::Cut, true).await;
}

/// Not an assertion (machines are noisy): prints how long after the heal a revoke retried
/// every 10 ms first succeeds, for the notes. `cargo test … heal_to_revoke -- --nocapture`.
#[tokio::test]
async fn reports_time_from_heal_to_first_successful_revoke() {
    let Some(p) = partition().await else { return };
    let pair = sign_in(&p.app_a, &p.a, "alice").await;
    let id = session_id(&p.app_b, &pair).await;
    p.proxy.cut();
    assert!(p.a.revoke(&id).await.is_err());
    tokio::time::sleep(StdDuration::from_secs(2)).await;
    p.proxy.restore();
    let healed = Instant::now();
    let deadline = healed + StdDuration::from_secs(10);
    while p.a.revoke(&id).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "no revoke succeeded within 10 s of the heal"
        );
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    println!(
        "heal to first successful revoke: {} ms",
        healed.elapsed().as_millis()
    );
    p.assert_never_served(&pair, &id).await;
}

/// Issue 9, item 5: Redis down, the database up. Sign-out still signs the browser out
/// (cookies cleared) and the server finishes the revoke by itself once Redis is back; a
/// sign-in over an old cookie succeeds and the replaced session is revoked later too.
#[tokio::test]
async fn with_redis_cut_sign_out_and_sign_in_succeed_and_the_server_finishes_the_revokes() {
    let Some(p) = partition().await else { return };
    let signed_out = sign_in(&p.app_a, &p.a, "alice").await;
    let replaced = sign_in(&p.app_a, &p.a, "bob").await;
    for pair in [&signed_out, &replaced] {
        session_id(&p.app_b, pair).await;
    }

    p.proxy.cut();
    let out = send(&p.app_a, post("/sign-out", Some(&signed_out))).await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    assert!(
        out.set_cookies()
            .iter()
            .any(|c| c.starts_with(p.a.session_cookie_name()) && c.contains("Max-Age=0")),
        "the browser is signed out: {:?}",
        out.set_cookies()
    );
    let again = send(&p.app_a, post("/sign-in?user=bob", Some(&replaced))).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert!(again.cookie_value(p.a.session_cookie_name()).is_some());
    assert_eq!(p.a.pending_revocations(), 2);

    p.proxy.restore();
    // Nobody retries anything: the server owes both revokes and pays them.
    let deadline = Instant::now() + StdDuration::from_secs(10);
    while p.a.pending_revocations() > 0 {
        assert!(Instant::now() < deadline, "the owed revokes never ran");
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    for pair in [&signed_out, &replaced] {
        for app in [&p.app_a, &p.app_b] {
            assert_eq!(
                send(app, get("/me", Some(pair))).await.status,
                StatusCode::UNAUTHORIZED,
                "served after its owed revoke"
            );
        }
        let mut conn = connection(&p.url);
        let value: Option<Vec<u8>> = conn.get(session_key(&p.prefix, &hash_of(pair))).unwrap();
        assert!(value.is_none(), "Redis still holds a revoked session");
    }
}
