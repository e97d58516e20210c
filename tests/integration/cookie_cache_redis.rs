//! Cookie caches across instances (feature `redis`): two managers share a store and a
//! Redis (as their secondary tier, or only for revocations); a revoke on one stops the
//! other from believing the session's cache before the revoke returns, a cache hit costs
//! no Redis command, and an instance that lost its subscription falls back to the store
//! for caches issued before it re-subscribed.
#![cfg(feature = "redis")]

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration as StdDuration, Instant};

use axum::Router;
use chrono::Duration;
use common::*;
use http::StatusCode;
use tower_auth_session::secondary::{PutOutcome, RedisStorage, Revocation, SecondaryStorage};
use tower_auth_session::store::BoxFuture;
use tower_auth_session::{
    CacheRevocationBus, CookieCache, ManualClock, MemoryStore, Session, SessionManager, StoreError,
    TokenHash,
};

/// What a browser holds after signing in: the token cookie only (each instance issues its
/// own cache).
struct Browser {
    token: String,
    cache: Option<String>,
    session_id: String,
}

impl Browser {
    fn cookies(&self) -> String {
        match &self.cache {
            Some(cache) => format!("{}; {cache}", self.token),
            None => self.token.clone(),
        }
    }
}

struct Instance {
    manager: SessionManager,
    app: Router,
    counts: Counts,
    /// The secondary tier, when Redis is one.
    tier: Option<RedisStorage>,
}

/// How an instance uses Redis.
#[derive(Clone, Copy)]
enum Mode {
    /// Redis is the secondary tier (and so also carries cache revocations).
    Tier,
    /// As `Tier`, the storage wrapped (for metrics, say) by a type that forwards every
    /// trait method.
    WrappedTier,
    /// The store alone holds sessions; Redis only carries cache revocations.
    RevocationsOnly,
}

fn instance(
    store: &MemoryStore,
    clock: &ManualClock,
    redis_url: &str,
    prefix: &str,
    mode: Mode,
) -> Instance {
    let (counting, counts) = CountingStore::new(store.clone());
    let builder = SessionManager::builder(counting)
        .secret(SECRET)
        .clock(clock.clone());
    let tier = || {
        RedisStorage::builder(redis_url)
            .key_prefix(prefix)
            .clock(clock.clone())
            .build()
            .unwrap()
    };
    let (builder, tier) = match mode {
        Mode::Tier => {
            let tier = tier();
            let builder = builder.cookie_cache(CookieCache::new());
            (builder.secondary_storage(tier.clone()), Some(tier))
        }
        Mode::WrappedTier => {
            let tier = tier();
            let wrapped = Metered {
                inner: tier.clone(),
                gets: Default::default(),
            };
            let builder = builder.cookie_cache(CookieCache::new());
            (builder.secondary_storage(wrapped), Some(tier))
        }
        Mode::RevocationsOnly => {
            let cache = CookieCache::new().redis(redis_url, prefix);
            (builder.cookie_cache(cache), None)
        }
    };
    let manager = builder.build().unwrap();
    Instance {
        app: app(&manager),
        manager,
        counts,
        tier,
    }
}

/// A secondary storage that wraps another, as an app would for metrics: every method
/// forwarded, the bus included (the builder asks the trait, it does not look for a
/// `RedisStorage` by type any more).
struct Metered {
    inner: RedisStorage,
    gets: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SecondaryStorage for Metered {
    fn get<'a>(
        &'a self,
        token_hash: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.get(token_hash)
    }
    fn put<'a>(
        &'a self,
        token_hash: &'a TokenHash,
        session: &'a Session,
        replaces: Option<&'a TokenHash>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<PutOutcome, StoreError>> {
        self.inner.put(token_hash, session, replaces, now)
    }
    fn forget<'a>(&'a self, token_hash: &'a TokenHash) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.forget(token_hash)
    }
    fn revoke<'a>(
        &'a self,
        revocations: &'a [Revocation<'a>],
        until: chrono::DateTime<chrono::Utc>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<Vec<String>, StoreError>> {
        self.inner.revoke(revocations, until, now)
    }
    fn list_by_user<'a>(
        &'a self,
        user_id: &'a str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        self.inner.list_by_user(user_id, now)
    }
    fn cache_revocation_bus(&self) -> Option<CacheRevocationBus> {
        self.inner.cache_revocation_bus()
    }
}

async fn wait_until_active(instances: &[&Instance]) {
    let deadline = Instant::now() + StdDuration::from_secs(10);
    while !instances.iter().all(|i| i.manager.cookie_cache_active()) {
        assert!(Instant::now() < deadline, "leases never became live");
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
}

/// Two instances over one store and one Redis, leases live, and the manual clock moved
/// past the start-up watermark (caches issued before an instance first subscribed are
/// refused by it).
async fn pair(redis_url: &str, mode: Mode) -> (Instance, Instance, ManualClock) {
    let store = MemoryStore::new();
    let clock = ManualClock::new();
    let prefix = format!("{}:", unique_name("tas_cc"));
    let a = instance(&store, &clock, redis_url, &prefix, mode);
    let b = instance(&store, &clock, redis_url, &prefix, mode);
    wait_until_active(&[&a, &b]).await;
    clock.advance(Duration::seconds(6));
    (a, b, clock)
}

async fn sign_in_on(instance: &Instance, user: &str) -> Browser {
    let reply = send(&instance.app, post(&format!("/sign-in?user={user}"), None)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let name = instance.manager.session_cookie_name();
    Browser {
        token: format!("{name}={}", reply.cookie_value(name).unwrap()),
        cache: None,
        session_id: reply.json()["session"]["id"].as_str().unwrap().to_owned(),
    }
}

const CACHE: &str = "__Host-tas.session_data";

/// One request to `instance`; keeps the cache it issues. Returns the status and whether
/// the store was read.
async fn visit(instance: &Instance, browser: &mut Browser) -> (StatusCode, bool) {
    let finds = instance.counts.finds();
    let reply = send(&instance.app, get("/me", Some(&browser.cookies()))).await;
    if let Some(value) = reply.cookie_value(CACHE) {
        browser.cache = (!value.is_empty()).then(|| format!("{CACHE}={value}"));
    }
    (reply.status, instance.counts.finds() > finds)
}

/// Signs in on A and warms the cache through B (a read of a store tier, then a hit).
async fn warmed_on_b(a: &Instance, b: &Instance, user: &str) -> Browser {
    let mut browser = sign_in_on(a, user).await;
    assert_eq!(visit(b, &mut browser).await.0, StatusCode::OK);
    assert!(browser.cache.is_some(), "B issued a cache");
    assert_eq!(
        visit(b, &mut browser).await,
        (StatusCode::OK, false),
        "B hits its cache"
    );
    browser
}

#[tokio::test]
async fn revoked_session_is_rejected_on_other_instance_with_cookie_cache() {
    let Some(url) = service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let (a, b, _clock) = pair(&url, Mode::Tier).await;
    let mut latencies = Vec::new();
    for trial in 0..100 {
        let mut browser = warmed_on_b(&a, &b, &format!("user{trial}")).await;
        let started = Instant::now();
        assert!(a.manager.revoke(&browser.session_id).await.unwrap());
        latencies.push(started.elapsed());
        // The very next request to B, with the cache that B would have believed.
        let (status, _) = visit(&b, &mut browser).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "trial {trial}");
    }
    latencies.sort();
    println!(
        "revocation latency over {} trials (revoke on A until every instance applied it): median {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
}

/// Issue 18, item 7: a secondary storage wrapped by the app still carries cross-instance
/// cache revocations, because the wrapper forwards `cache_revocation_bus` (before, the
/// builder looked for a `RedisStorage` by type, and a wrapped one silently left every
/// other instance believing a revoked session's cache for up to `max_age`).
#[tokio::test]
async fn a_wrapped_secondary_storage_still_carries_cache_revocations() {
    let Some(url) = service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let (a, b, _clock) = pair(&url, Mode::WrappedTier).await;
    for trial in 0..5 {
        let mut browser = warmed_on_b(&a, &b, &format!("wrapped{trial}")).await;
        assert!(a.manager.revoke(&browser.session_id).await.unwrap());
        let (status, _) = visit(&b, &mut browser).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "trial {trial}");
    }
}

#[tokio::test]
async fn revoke_user_reaches_caches_of_sessions_created_on_other_instance() {
    let Some(url) = service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let (a, b, _clock) = pair(&url, Mode::Tier).await;
    // Sessions created and cached on B only; A never saw them.
    let mut browsers = Vec::new();
    for _ in 0..12 {
        let mut browser = sign_in_on(&b, "mallory").await;
        assert_eq!(visit(&b, &mut browser).await.0, StatusCode::OK);
        browsers.push(browser);
    }
    let mut bystander = warmed_on_b(&a, &b, "bob").await;
    assert_eq!(a.manager.revoke_user("mallory").await.unwrap(), 12);
    for browser in &mut browsers {
        assert_eq!(visit(&b, browser).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        visit(&b, &mut bystander).await,
        (StatusCode::OK, false),
        "other users keep their caches"
    );
}

/// A `redis-server` owned by this test, on a free port, without persistence.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut redis = Self { port, child: None };
        redis.spawn()?;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> Option<()> {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(error) if std::env::var("TAS_REQUIRE_SERVICES").as_deref() == Ok("1") => {
                panic!("redis-server could not be started: {error}")
            }
            Err(error) => {
                eprintln!("skipping: redis-server could not be started: {error}");
                return None;
            }
        };
        self.child = Some(child);
        let deadline = Instant::now() + StdDuration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not come up");
            std::thread::sleep(StdDuration::from_millis(20));
        }
        Some(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn instance_that_lost_its_subscription_falls_back_to_the_store_for_older_caches() {
    let Some(mut redis) = OwnRedis::start() else {
        return;
    };
    let (a, b, clock) = pair(&redis.url(), Mode::RevocationsOnly).await;
    let mut doomed = warmed_on_b(&a, &b, "alice").await;
    let mut kept = warmed_on_b(&a, &b, "bob").await;

    redis.kill();
    let deadline = Instant::now() + StdDuration::from_secs(5);
    while b.manager.cookie_cache_active() {
        assert!(
            Instant::now() < deadline,
            "B kept trusting caches without Redis"
        );
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    // During the gap a revoke commits to the store but cannot be confirmed to B: it
    // reports an error rather than a success it cannot guarantee...
    assert!(a.manager.revoke(&doomed.session_id).await.is_err());
    // ...and B, which cannot hear about it, does not believe the cache.
    assert_eq!(visit(&b, &mut doomed).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        visit(&b, &mut kept).await,
        (StatusCode::OK, true),
        "live sessions are served from the store meanwhile"
    );

    redis.spawn().unwrap();
    wait_until_active(&[&b]).await;
    // The cache B issued before it re-subscribed is read from the store once more.
    assert_eq!(visit(&b, &mut kept).await, (StatusCode::OK, true));
    // Once the clock is past the reconnection's skew allowance, new caches hit again.
    clock.advance(Duration::seconds(6));
    assert_eq!(visit(&b, &mut kept).await, (StatusCode::OK, true));
    assert_eq!(visit(&b, &mut kept).await, (StatusCode::OK, false));
}

/// `INFO commandstats` as (command, calls) pairs.
async fn command_stats(url: &str) -> std::collections::HashMap<String, u64> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .next()?
                .strip_prefix("calls=")?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[tokio::test]
async fn a_cache_hit_makes_no_redis_command_and_no_store_query() {
    // A server of our own, so that no other test's commands show in its statistics.
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let (a, b, _clock) = pair(&redis.url(), Mode::Tier).await;
    let mut browser = warmed_on_b(&a, &b, "alice").await;
    let tier = b.tier.as_ref().unwrap();
    let (round_trips, finds) = (tier.metrics().round_trips, b.counts.finds());
    let before = command_stats(&redis.url()).await;
    for _ in 0..50 {
        assert_eq!(visit(&b, &mut browser).await, (StatusCode::OK, false));
    }
    let after = command_stats(&redis.url()).await;
    assert_eq!(
        tier.metrics().round_trips,
        round_trips,
        "no call to the Redis tier"
    );
    assert_eq!(b.counts.finds(), finds, "no store query");
    // Only the leases' background traffic (scripts, heartbeats) and our own INFO moved.
    let background = [
        "evalsha",
        "eval",
        "publish",
        "info",
        "script|load",
        "script",
        "ping",
    ];
    for (command, calls) in &after {
        let delta = calls - before.get(command).copied().unwrap_or(0);
        assert!(
            delta == 0 || background.contains(&command.as_str()),
            "{command} was called {delta} times during cache hits"
        );
    }
}

#[tokio::test]
async fn redis_as_the_only_store_also_carries_cache_revocations() {
    let Some(url) = service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let clock = ManualClock::new();
    let prefix = format!("{}:", unique_name("tas_cc_only"));
    let build = || {
        let redis = RedisStorage::builder(&url)
            .key_prefix(&prefix)
            .clock(clock.clone())
            .build()
            .unwrap();
        SessionManager::builder(redis)
            .secret(SECRET)
            .clock(clock.clone())
            .cookie_cache(CookieCache::new())
            .build()
            .unwrap()
    };
    let (a, b) = (build(), build());
    let deadline = Instant::now() + StdDuration::from_secs(10);
    while !(a.cookie_cache_active() && b.cookie_cache_active()) {
        assert!(Instant::now() < deadline, "no lease in secondary-only mode");
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    clock.advance(Duration::seconds(6));
    let (app_a, app_b) = (app(&a), app(&b));
    let reply = send(&app_a, post("/sign-in?user=alice", None)).await;
    let id = reply.json()["session"]["id"].as_str().unwrap().to_owned();
    let token = reply.cookie_value(a.session_cookie_name()).unwrap();
    let token = format!("{}={token}", a.session_cookie_name());
    let warm = send(&app_b, get("/me", Some(&token))).await;
    let cache = format!("{CACHE}={}", warm.cookie_value(CACHE).unwrap());
    let cookies = format!("{token}; {cache}");
    assert_eq!(
        send(&app_b, get("/me", Some(&cookies))).await.status,
        StatusCode::OK
    );
    assert!(a.revoke(&id).await.unwrap());
    assert_eq!(
        send(&app_b, get("/me", Some(&cookies))).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// Issue 9, item 4 in Redis-only mode: a session revoked before a restart, and a session
/// whose Redis keys were deleted behind the crate's back before its sign-out, are both
/// refused afterwards with their old token + cache.
#[tokio::test]
async fn redis_only_restart_and_a_missing_row_never_bring_a_cache_back() {
    let Some(url) = service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let prefix = format!("{}:", unique_name("tas_cc_gone"));
    let build = || {
        let redis = RedisStorage::builder(&url)
            .key_prefix(&prefix)
            .build()
            .unwrap();
        SessionManager::builder(redis)
            .secret(SECRET)
            .cookie_cache(CookieCache::new())
            .build()
            .unwrap()
    };
    let leased = |manager: &SessionManager| {
        let manager = manager.clone();
        async move {
            let deadline = Instant::now() + StdDuration::from_secs(10);
            while !manager.cookie_cache_active() {
                assert!(Instant::now() < deadline, "no lease");
                tokio::time::sleep(StdDuration::from_millis(10)).await;
            }
        }
    };
    let before = build();
    leased(&before).await;
    // Past the start-up watermark, so this process's own caches are believed.
    tokio::time::sleep(StdDuration::from_secs(6)).await;
    let app_before = app(&before);
    let sign_in = |app: Router| async move {
        let reply = send(&app, post("/sign-in?user=alice", None)).await;
        let id = reply.json()["session"]["id"].as_str().unwrap().to_owned();
        let token = reply.cookie_value("__Host-tas.session_token").unwrap();
        let token = format!("__Host-tas.session_token={token}");
        let cache = reply.cookie_value(CACHE).expect("sign-in issues a cache");
        (id, format!("{token}; {CACHE}={cache}"))
    };
    let (revoked_id, revoked) = sign_in(app_before.clone()).await;
    assert_eq!(
        send(&app_before, get("/me", Some(&revoked))).await.status,
        StatusCode::OK
    );
    assert!(before.revoke(&revoked_id).await.unwrap());

    // A second session's row disappears from Redis (an eviction, a FLUSHDB).
    let (_, gone) = sign_in(app_before.clone()).await;
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}s:*"))
        .query(&mut conn)
        .unwrap();
    assert!(!keys.is_empty());
    let _: () = redis::cmd("DEL").arg(&keys).query(&mut conn).unwrap();
    // Served from its cache until the user signs out…
    let reply = send(&app_before, get("/me", Some(&gone))).await;
    assert_eq!(reply.status, StatusCode::OK, "the cache still serves it");
    let out = send(&app_before, post("/sign-out", Some(&gone))).await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    // …after which a copy of token + cache is refused.
    let replayed = send(&app_before, get("/me", Some(&gone))).await;
    assert_eq!(
        replayed.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        replayed.body
    );
    drop((before, app_before));

    let after = build();
    leased(&after).await;
    let reply = send(&app(&after), get("/me", Some(&revoked))).await;
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "revoked before the restart"
    );
}

/// Issue 9, item 3: right after start, an instance believes the caches it issues itself;
/// 20 requests in the first second cost no Redis command beyond the sign-in's (before:
/// every request read Redis for 5 s after start, and after each reconnect).
#[tokio::test]
async fn requests_in_the_first_second_after_start_are_served_from_the_cache() {
    let Some(url) = service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let prefix = format!("{}:", unique_name("tas_cc_start"));
    let started = Instant::now();
    let tier = RedisStorage::builder(&url)
        .key_prefix(&prefix)
        .build()
        .unwrap();
    let manager = SessionManager::builder(MemoryStore::new())
        .secret(SECRET)
        .secondary_storage(tier.clone())
        .cookie_cache(CookieCache::new())
        .build()
        .unwrap();
    assert!(manager.cookie_cache_ready(StdDuration::from_secs(5)).await);
    let app = app(&manager);
    let reply = send(&app, post("/sign-in?user=alice", None)).await;
    let token = reply.cookie_value("__Host-tas.session_token").unwrap();
    let cache = reply.cookie_value(CACHE).expect("sign-in issues a cache");
    let cookies = format!("__Host-tas.session_token={token}; {CACHE}={cache}");
    let before = tier.metrics().round_trips;
    for _ in 0..20 {
        let reply = send(&app, get("/me", Some(&cookies))).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let commands = tier.metrics().round_trips - before;
    let elapsed = started.elapsed();
    println!("20 requests {elapsed:?} after start: {commands} Redis commands");
    assert!(commands <= 1, "{commands} Redis commands for 20 requests");
}

/// The bench symptom (`ours-cache-redis` at 1.00 Redis commands per request for a whole
/// run): instances of one prefix signing in the same user names, one of them killed
/// with its lease left in the registry, then the survivor on one fully loaded worker.
/// The survivor keeps its lease and keeps serving the cache it issued from the cache.
#[test]
fn a_killed_instance_of_the_same_prefix_and_a_busy_single_worker_keep_the_cache_trusted() {
    let Some(url) = service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let prefix = format!("{}:", unique_name("tas_cc_killed"));
    let store = MemoryStore::new();
    let make = |store: &MemoryStore| {
        let tier = RedisStorage::builder(&url)
            .key_prefix(&prefix)
            .build()
            .unwrap();
        let manager = SessionManager::builder(store.clone())
            .secret(SECRET)
            .secondary_storage(tier.clone())
            .cookie_cache(CookieCache::new())
            .build()
            .unwrap();
        (app(&manager), manager, tier)
    };
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    // B: signs the same user names in, then is "killed": its runtime goes first, so its
    // tasks stop and nothing deregisters its lease.
    let b_runtime = runtime();
    let b = b_runtime.block_on(async {
        let (app_b, manager, tier) = make(&store);
        assert!(manager.cookie_cache_ready(StdDuration::from_secs(5)).await);
        let mut ids = Vec::new();
        for i in 0..5 {
            let reply = send(&app_b, post(&format!("/sign-in?user=user{i}"), None)).await;
            assert_eq!(reply.status, StatusCode::OK);
            ids.push(reply.json()["session"]["id"].as_str().unwrap().to_owned());
        }
        (app_b, manager, tier, ids)
    });
    let b_ids = b.3.clone();
    drop(b_runtime);
    drop(b);
    let registry = format!("{prefix}cc:instances");
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let leases: usize = redis::cmd("ZCARD").arg(&registry).query(&mut conn).unwrap();
    assert_eq!(leases, 1, "the killed instance's lease stays behind");

    // A: one worker, kept busy by tasks that wake each other without ever waiting on
    // I/O or a timer (each poll spins 200 µs), while it serves the same user names.
    runtime().block_on(async {
        let (app_a, manager, tier) = make(&store);
        assert!(manager.cookie_cache_ready(StdDuration::from_secs(5)).await);
        let (ping_tx, mut ping_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let (pong_tx, mut pong_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let spin = || {
            let until = Instant::now() + StdDuration::from_micros(200);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        };
        ping_tx.send(()).unwrap();
        let pong_back = pong_tx.clone();
        let ping = tokio::spawn(async move {
            while ping_rx.recv().await.is_some() {
                spin();
                let _ = pong_back.send(());
            }
        });
        let pong = tokio::spawn(async move {
            while pong_rx.recv().await.is_some() {
                spin();
                let _ = ping_tx.send(());
            }
        });
        let mut cookies = Vec::new();
        for i in 0..5 {
            let reply = send(&app_a, post(&format!("/sign-in?user=user{i}"), None)).await;
            assert_eq!(reply.status, StatusCode::OK);
            let token = reply.cookie_value("__Host-tas.session_token").unwrap();
            let cache = reply.cookie_value(CACHE).expect("sign-in issues a cache");
            // Like the bench client (and wrk): the sign-in's cookies, never updated.
            cookies.push(format!("__Host-tas.session_token={token}; {CACHE}={cache}"));
        }
        // A revoke while the dead instance's lease is still registered: it waits for an
        // ack that never comes, at most until that lease lapses, and changes nothing
        // about A's own trust.
        let revoking = Instant::now();
        assert!(manager.revoke(&b_ids[0]).await.unwrap());
        let waited = revoking.elapsed();
        assert!(waited < StdDuration::from_millis(2500), "{waited:?}");
        assert!(manager.cookie_cache_active());
        let started = Instant::now();
        let before = tier.metrics().round_trips;
        let mut requests = 0u64;
        let mut inactive = 0u64;
        while started.elapsed() < StdDuration::from_secs(4) {
            for cookie in &cookies {
                let reply = send(&app_a, get("/me", Some(cookie))).await;
                assert_eq!(reply.status, StatusCode::OK);
                requests += 1;
            }
            if !manager.cookie_cache_active() {
                inactive += 1;
            }
            tokio::task::yield_now().await;
        }
        let commands = tier.metrics().round_trips - before;
        println!(
            "busy single worker, killed peer's lease left behind: revoke waited {waited:?}; \
             then {requests} requests, {commands} Redis commands, lease lapsed at {inactive} checks"
        );
        assert_eq!(inactive, 0, "the lease lapsed under load");
        assert_eq!(
            commands, 0,
            "{commands} Redis commands for {requests} requests"
        );
        ping.abort();
        pong.abort();
    });
}

/// What does give the bench symptom: one lapse of the lease (here Redis paused for
/// 2.5 s; a stalled machine or a dropped subscription does the same). On regaining
/// trust the instance refuses every cache it issued before (revocations may have been
/// missed meanwhile) and re-issues one on the next store read. A browser takes it and
/// is back on the cache after one request; a client that replays the sign-in's cookies
/// for ever (the bench client, wrk `-H Cookie:`) reads the store on every request.
#[tokio::test]
async fn after_a_lapse_only_clients_that_take_the_new_cache_get_back_on_it() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let url = redis.url();
    let prefix = format!("{}:", unique_name("tas_cc_lapse"));
    let tier = RedisStorage::builder(&url)
        .key_prefix(&prefix)
        .build()
        .unwrap();
    let manager = SessionManager::builder(MemoryStore::new())
        .secret(SECRET)
        .secondary_storage(tier.clone())
        .cookie_cache(CookieCache::new())
        .build()
        .unwrap();
    assert!(manager.cookie_cache_ready(StdDuration::from_secs(5)).await);
    let app = app(&manager);
    let reply = send(&app, post("/sign-in?user=alice", None)).await;
    let token = format!(
        "__Host-tas.session_token={}",
        reply.cookie_value("__Host-tas.session_token").unwrap()
    );
    let fixed = format!("{token}; {CACHE}={}", reply.cookie_value(CACHE).unwrap());
    let mut browser = fixed.clone();
    let gets = |app: Router, cookies: String| {
        let tier = tier.clone();
        async move {
            let before = tier.metrics().round_trips;
            let reply = send(&app, get("/me", Some(&cookies))).await;
            assert_eq!(reply.status, StatusCode::OK);
            (
                tier.metrics().round_trips - before,
                reply.cookie_value(CACHE),
            )
        }
    };
    assert_eq!(gets(app.clone(), fixed.clone()).await.0, 0, "a hit");

    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2500)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(StdDuration::from_millis(2000)).await;
    assert!(!manager.cookie_cache_active(), "the lease lapsed");
    tokio::time::sleep(StdDuration::from_millis(600)).await;
    assert!(manager.cookie_cache_ready(StdDuration::from_secs(5)).await);
    tokio::time::sleep(StdDuration::from_millis(5)).await;

    let (commands, new_cache) = gets(app.clone(), browser.clone()).await;
    assert_eq!(commands, 1, "the pre-lapse cache is read from Redis once");
    browser = format!("{token}; {CACHE}={}", new_cache.expect("a new cache"));
    for _ in 0..10 {
        assert_eq!(
            gets(app.clone(), browser.clone()).await.0,
            0,
            "browser: hits"
        );
        assert_eq!(
            gets(app.clone(), fixed.clone()).await.0,
            1,
            "fixed cookies: a Redis GET every time"
        );
    }
}

/// Issue 18, item 1: the bus at 10,000 revocations per second across the deployment —
/// 4 instances over their own Redis, each revoking ids as fast as a shared pace of
/// 10,000/s allows (512 revokes in flight per instance) for 5 s. What every instance
/// receives and sends is counted from a pattern subscription to the bus' channels
/// (each instance receives every revocation message, the acks addressed to it and its
/// own heartbeats). Printed, not asserted (a shared debug build may not reach the
/// rate; the achieved rate is printed with the figures); every revoke must succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_the_bus_at_ten_thousand_revocations_a_second() {
    const INSTANCES: usize = 4;
    const RATE: f64 = 10_000.0;
    const SECONDS: f64 = 5.0;
    const IN_FLIGHT: usize = 512;
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let url = redis.url();
    let prefix = format!("{}:", unique_name("tas_cc_rate"));
    let store = MemoryStore::new();
    let clock = ManualClock::new();
    let instances: Vec<Instance> = (0..INSTANCES)
        .map(|_| instance(&store, &clock, &url, &prefix, Mode::RevocationsOnly))
        .collect();
    wait_until_active(&instances.iter().collect::<Vec<_>>()).await;

    #[derive(Default)]
    struct Seen {
        revocation_messages: u64,
        revocation_bytes: u64,
        acks: u64,
        ack_bytes: u64,
        heartbeats: u64,
        heartbeat_bytes: u64,
    }
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
    let mut pubsub = redis::Client::open(url.as_str())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.psubscribe(format!("{prefix}cc:*")).await.unwrap();
    let counting = {
        let seen = seen.clone();
        let revocations = format!("{prefix}cc:revocations");
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
                let channel = message.get_channel_name().to_owned();
                let payload: Vec<u8> = message.get_payload().unwrap_or_default();
                // Payload plus channel name: what a subscriber reads, framing aside.
                let bytes = (payload.len() + channel.len()) as u64;
                let mut seen = seen.lock().unwrap();
                if channel == revocations {
                    seen.revocation_messages += 1;
                    seen.revocation_bytes += bytes;
                } else if payload.starts_with(b"h:") {
                    seen.heartbeats += 1;
                    seen.heartbeat_bytes += bytes;
                } else {
                    seen.acks += 1;
                    seen.ack_bytes += bytes;
                }
            }
        })
    };

    let started = Instant::now();
    let issued = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        for t in 0..IN_FLIGHT {
            let manager = instance.manager.clone();
            let issued = issued.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                loop {
                    let elapsed = started.elapsed().as_secs_f64();
                    if elapsed >= SECONDS {
                        return n;
                    }
                    // Ahead of the pace: wait for it.
                    let due = (elapsed * RATE) as u64;
                    if issued.load(std::sync::atomic::Ordering::Relaxed) >= due {
                        tokio::time::sleep(StdDuration::from_millis(1)).await;
                        continue;
                    }
                    issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let id = format!("gone-{i}-{t}-{n}");
                    manager.revoke(&id).await.expect("revoke confirmed");
                    n += 1;
                }
            }));
        }
    }
    let mut revokes = 0u64;
    for task in tasks {
        revokes += task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    counting.abort();
    let seen = seen.lock().unwrap();
    let n = INSTANCES as f64;
    let per_s = |v: u64| v as f64 / elapsed;
    let received_msgs =
        per_s(seen.revocation_messages) + (per_s(seen.acks) + per_s(seen.heartbeats)) / n;
    let received_bytes =
        per_s(seen.revocation_bytes) + (per_s(seen.ack_bytes) + per_s(seen.heartbeat_bytes)) / n;
    // Each instance publishes its share of the messages, acks every other instance's,
    // and sends its heartbeats.
    let sent_msgs =
        (per_s(seen.revocation_messages) + per_s(seen.acks) + per_s(seen.heartbeats)) / n;
    println!(
        "bus at {:.0} revocations/s over {INSTANCES} instances ({revokes} revokes in {elapsed:.1} s): \
         {:.0} revocation messages/s ({:.1} revocations each, {:.0} B each); per instance \
         received {received_msgs:.0} messages/s, {:.0} kB/s; sent {sent_msgs:.0} messages/s",
        revokes as f64 / elapsed,
        per_s(seen.revocation_messages),
        revokes as f64 / seen.revocation_messages.max(1) as f64,
        seen.revocation_bytes as f64 / seen.revocation_messages.max(1) as f64,
        received_bytes / 1000.0,
    );
    assert!(revokes > 0);
}
