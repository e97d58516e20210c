//! Heap allocations per request on each path through the session layer, counted by a
//! global allocator, printed as a table. Counts are exact and repeatable, unlike timings.
//!
//! ```text
//! cargo bench --bench allocations                          # the table
//! cargo bench --bench allocations -- --trace               # plus the size of every
//!                                                          # allocation of one request
//! cargo bench --bench allocations -- --only layer/no_token # one path
//! ```
//!
//! Only the service call is counted (the request is built beforehand; the response is
//! dropped inside the counted window). The `sqlite` paths include what the query
//! allocates (it runs inline, on the same thread). The `store` and `redis` columns are primary-store calls
//! and Redis round trips per request; the Redis paths need `--features redis` and
//! `redis-server` on the `PATH` (the bench starts its own on a free loopback port).
//!
//! The same binary gives instruction counts under callgrind: the measured loop runs inside
//! `measured`, so collect only there and divide by `--iters`:
//!
//! ```text
//! cargo bench --bench allocations --no-run
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measured*' \
//!     target/release/deps/allocations-<hash> --only layer/no_token --iters 2000
//! ```

#[path = "fixture/mod.rs"]
mod fixture;

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use http::Response;
use tokio::runtime::Runtime;
use tower::{Layer, Service};
use tower_auth_session::CookieCache;

use fixture::{OTHER_COOKIES, call, forged_cookie, get_request, trivial};

/// Counts allocations made through the global allocator, and optionally records the size
/// of each one while tracing.
struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static REALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

/// Sizes of the allocations of one traced request; a fixed array, because the allocator
/// must not allocate to record an allocation.
const TRACE_CAPACITY: usize = 256;
static TRACING: AtomicBool = AtomicBool::new(false);
static TRACE_LEN: AtomicUsize = AtomicUsize::new(0);
static TRACE: [AtomicUsize; TRACE_CAPACITY] = [const { AtomicUsize::new(0) }; TRACE_CAPACITY];

fn record(size: usize) {
    BYTES.fetch_add(size, Relaxed);
    if TRACING.load(Relaxed) {
        let slot = TRACE_LEN.fetch_add(1, Relaxed);
        if let Some(entry) = TRACE.get(slot) {
            entry.store(size, Relaxed);
        }
    }
}

// SAFETY: every method forwards to `System` unchanged; the counters are plain atomics and
// never allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        record(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        record(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCATIONS.fetch_add(1, Relaxed);
        record(new_size.saturating_sub(layout.size()));
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

#[derive(Clone, Copy)]
struct Counters {
    allocations: usize,
    reallocations: usize,
    bytes: usize,
    store_calls: u64,
    redis_trips: u64,
}

impl Counters {
    fn since(self, before: Self) -> Self {
        Self {
            allocations: self.allocations - before.allocations,
            reallocations: self.reallocations - before.reallocations,
            bytes: self.bytes - before.bytes,
            store_calls: self.store_calls - before.store_calls,
            redis_trips: self.redis_trips - before.redis_trips,
        }
    }
}

/// The storages of the Redis paths, for their round-trip counters.
#[cfg(feature = "redis")]
static REDIS: std::sync::Mutex<Vec<tower_auth_session::secondary::RedisStorage>> =
    std::sync::Mutex::new(Vec::new());

fn redis_trips() -> u64 {
    #[cfg(feature = "redis")]
    return REDIS
        .lock()
        .expect("not poisoned")
        .iter()
        .map(|storage| storage.metrics().round_trips)
        .sum();
    #[cfg(not(feature = "redis"))]
    0
}

fn counters() -> Counters {
    Counters {
        allocations: ALLOCATIONS.load(Relaxed),
        reallocations: REALLOCATIONS.load(Relaxed),
        bytes: BYTES.load(Relaxed),
        store_calls: fixture::stores::store_calls(),
        redis_trips: redis_trips(),
    }
}

/// Command line: `--only NAME`, `--iters N`, `--trace`; anything else (cargo passes
/// `--bench`) is ignored.
struct Options {
    only: Option<String>,
    iters: usize,
    trace: bool,
}

impl Options {
    fn from_args() -> Self {
        let mut options = Self {
            only: None,
            iters: 1_000,
            trace: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--only" => options.only = args.next(),
                "--iters" => {
                    options.iters = args
                        .next()
                        .and_then(|n| n.parse().ok())
                        .expect("--iters takes a number")
                }
                "--trace" => options.trace = true,
                _ => {}
            }
        }
        options
    }
}

/// Where the loop that callgrind collects runs: one non-generic, never-inlined function
/// so `--toggle-collect='*measured*'` finds it by name.
#[inline(never)]
fn measured(work: &mut dyn FnMut()) {
    work();
}

/// Sends `iters` requests through `service` and returns the counters' growth.
fn count<S>(
    runtime: &Runtime,
    service: &mut S,
    make_request: &dyn Fn() -> Request,
    iters: usize,
) -> Counters
where
    S: Service<Request, Response = Response<Body>, Error = Infallible>,
{
    let mut requests: Vec<Request> = (0..iters).map(|_| make_request()).collect();
    let before = counters();
    measured(&mut || {
        runtime.block_on(async {
            for request in requests.drain(..) {
                black_box(call(service, request).await);
            }
        })
    });
    counters().since(before)
}

/// Sizes of each allocation of one request through `service`.
fn trace<S>(runtime: &Runtime, service: &mut S, request: Request) -> Vec<usize>
where
    S: Service<Request, Response = Response<Body>, Error = Infallible>,
{
    TRACE_LEN.store(0, Relaxed);
    TRACING.store(true, Relaxed);
    runtime.block_on(async {
        black_box(call(service, request).await);
    });
    TRACING.store(false, Relaxed);
    let len = TRACE_LEN.load(Relaxed).min(TRACE_CAPACITY);
    TRACE[..len].iter().map(|size| size.load(Relaxed)).collect()
}

/// Runs one path: warm-up, the counted requests, a table row, and the trace if asked.
fn path<S>(
    options: &Options,
    runtime: &Runtime,
    name: &str,
    mut service: S,
    make_request: impl Fn() -> Request,
) where
    S: Service<Request, Response = Response<Body>, Error = Infallible>,
{
    if options.only.as_deref().is_some_and(|only| only != name) {
        return;
    }
    // Warm-up fills lazily grown tables (tracing callsites, pools, hash maps) first.
    count(runtime, &mut service, &make_request, 100);
    let total = count(runtime, &mut service, &make_request, options.iters);
    let per_request = |n: u64| n as f64 / options.iters as f64;
    println!(
        "| {name:<28} | {:>8.2} | {:>8.2} | {:>8.0} | {:>8.2} | {:>8.2} |",
        per_request(total.allocations as u64),
        per_request(total.reallocations as u64),
        per_request(total.bytes as u64),
        per_request(total.store_calls),
        per_request(total.redis_trips),
    );
    if options.trace {
        let sizes = trace(runtime, &mut service, make_request());
        println!("|   sizes: {sizes:?}");
    }
}

fn main() {
    let options = Options::from_args();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let manager = fixture::memory_manager(|b| b);
    let refreshing = fixture::memory_manager(|b| b.update_age(Duration::ZERO));
    let (sqlite, _dir) = runtime.block_on(fixture::sqlite_manager(|b| b));
    let memory_cookie = runtime.block_on(fixture::sign_in(&manager, "alice"));
    let refreshing_cookie = runtime.block_on(fixture::sign_in(&refreshing, "alice"));
    let sqlite_cookie = runtime.block_on(fixture::sign_in(&sqlite, "alice"));
    let forged = forged_cookie(&manager);

    println!(
        "| path                         | allocs   | reallocs | bytes    | store    | redis    |\n\
         |------------------------------|----------|----------|----------|----------|----------|"
    );
    let o = &options;
    let rt = &runtime;
    let hello = || get_request("/hello", None);
    let with = |uri: &'static str, cookie: &str| {
        let cookie = cookie.to_owned();
        move || get_request(uri, Some(&cookie))
    };
    path(o, rt, "bare/service_fn", trivial(), hello);
    path(
        o,
        rt,
        "layer/no_token",
        manager.layer().layer(trivial()),
        hello,
    );
    path(
        o,
        rt,
        "layer/12_other_cookies",
        manager.layer().layer(trivial()),
        || get_request("/hello", Some(OTHER_COOKIES)),
    );
    path(
        o,
        rt,
        "layer/bad_mac",
        manager.layer().layer(trivial()),
        with("/hello", &forged),
    );
    path(
        o,
        rt,
        "layer/memory_hit",
        manager.layer().layer(trivial()),
        with("/hello", &memory_cookie),
    );
    path(
        o,
        rt,
        "layer/memory_refresh",
        refreshing.layer().layer(trivial()),
        with("/hello", &refreshing_cookie),
    );
    path(
        o,
        rt,
        "layer/sqlite_hit",
        sqlite.layer().layer(trivial()),
        with("/hello", &sqlite_cookie),
    );
    cache_paths(o, rt);
    #[cfg(feature = "redis")]
    let _redis = redis_paths(o, rt);
    path(o, rt, "bare/router", fixture::router(), hello);
    path(
        o,
        rt,
        "router/no_token",
        fixture::layered_router(&manager),
        hello,
    );
    path(
        o,
        rt,
        "outer_layer/no_token",
        manager.layer().layer(fixture::router()),
        hello,
    );
    path(
        o,
        rt,
        "router/memory_hit_me",
        fixture::layered_router(&manager),
        with("/me", &memory_cookie),
    );
}

/// The cookie cache on (MemoryStore behind it): what it adds to requests without a
/// session, and a hit, signed and encrypted (DESIGN §10: ≤ 12 allocations, no I/O).
fn cache_paths(options: &Options, runtime: &Runtime) {
    let signed = fixture::memory_manager(|b| b.cookie_cache(CookieCache::new()));
    let encrypted = fixture::memory_manager(|b| b.cookie_cache(CookieCache::new().encrypted(true)));
    let signed_cookies = runtime.block_on(fixture::sign_in(&signed, "alice"));
    let encrypted_cookies = runtime.block_on(fixture::sign_in(&encrypted, "alice"));
    let with = |uri: &'static str, cookies: &str| {
        let cookies = cookies.to_owned();
        move || get_request(uri, Some(&cookies))
    };
    path(
        options,
        runtime,
        "cache/no_token",
        signed.layer().layer(trivial()),
        || get_request("/hello", None),
    );
    path(
        options,
        runtime,
        "cache/12_other_cookies",
        signed.layer().layer(trivial()),
        || get_request("/hello", Some(OTHER_COOKIES)),
    );
    path(
        options,
        runtime,
        "cache/hit",
        signed.layer().layer(trivial()),
        with("/hello", &signed_cookies),
    );
    path(
        options,
        runtime,
        "cache/hit_encrypted",
        encrypted.layer().layer(trivial()),
        with("/hello", &encrypted_cookies),
    );
    path(
        options,
        runtime,
        "router/cache_hit_me",
        fixture::layered_router(&signed),
        with("/me", &signed_cookies),
    );
}

/// SQLite + Redis: a Redis hit, and a refresh (store write, then Redis). Returns the
/// Redis process, which must outlive the table.
#[cfg(feature = "redis")]
fn redis_paths(options: &Options, runtime: &Runtime) -> Option<fixture::redis::RedisProcess> {
    let wanted = |name: &str| options.only.as_deref().is_none_or(|only| only == name);
    if ![
        "layer/redis_hit",
        "layer/redis_refresh",
        "cache/hit_with_redis",
    ]
    .into_iter()
    .any(wanted)
    {
        return None;
    }
    let redis = fixture::redis::RedisProcess::start()?;
    let (hit, storage, _hit_dir) = runtime.block_on(redis.sqlite_redis_manager(|b| b));
    let (refreshing, refreshing_storage, _refresh_dir) =
        runtime.block_on(redis.sqlite_redis_manager(|b| b.update_age(Duration::ZERO)));
    let hit_cookie = runtime.block_on(fixture::sign_in(&hit, "alice"));
    let refresh_cookie = runtime.block_on(fixture::sign_in(&refreshing, "alice"));
    let (cached, cached_storage, _cached_dir) =
        runtime.block_on(redis.sqlite_redis_manager(|b| b.cookie_cache(CookieCache::new())));
    runtime.block_on(fixture::redis::wait_for_lease(&cached));
    let cached_cookie = runtime.block_on(fixture::sign_in(&cached, "alice"));
    REDIS
        .lock()
        .expect("not poisoned")
        .extend([storage, refreshing_storage, cached_storage]);
    path(
        options,
        runtime,
        "layer/redis_hit",
        hit.layer().layer(trivial()),
        move || get_request("/hello", Some(&hit_cookie)),
    );
    path(
        options,
        runtime,
        "layer/redis_refresh",
        refreshing.layer().layer(trivial()),
        move || get_request("/hello", Some(&refresh_cookie)),
    );
    // Redis also carries cache revocations here, so the cache is believed under the lease.
    path(
        options,
        runtime,
        "cache/hit_with_redis",
        cached.layer().layer(trivial()),
        move || get_request("/hello", Some(&cached_cookie)),
    );
    Some(redis)
}
