//! What the session layer costs on each request path, next to its baseline.
//!
//! ```text
//! cargo bench --bench layer                      # every group
//! cargo bench --bench layer -- no_token          # one group (criterion filter)
//! cargo bench --bench layer -- --quick           # fewer samples
//! ```
//!
//! Each group puts a path next to the service it wraps, measured in the same run, so read
//! the *ratio* between lines of one group; absolute times on a shared machine are noise.
//! Every request is built inside the timed loop on both sides (a server has to build one
//! anyway) and sent with `ready().call()` on a current-thread tokio runtime.
//!
//! | group | lines |
//! |---|---|
//! | `no_token` | no cookie at all: bare `service_fn` / layer; bare `Router` / `Router::layer` / the layer around the whole router |
//! | `cookie_parsing` | a dozen unrelated cookies, none of ours: bare / layer |
//! | `bad_mac` | a well-formed token signed with an unknown key: bare / layer (no I/O) |
//! | `store_hit` | a valid session: bare / `MemoryStore` / `SqliteStore` (temp file) / SQLite + Redis (a Redis hit), and `/me` through the `CurrentSession` extractor |
//! | `cookie_cache` | cookie cache on (`MemoryStore` behind it): bare / signed hit / encrypted hit / the same session from the store with the cache off; `/me` on a hit (budget: ≤ 2 µs of layer overhead) |
//! | `refresh` | `update_age = 0`, so every request slides the expiry: hit / refresh per store |
//!
//! The Redis lines need `--features redis` and `redis-server` on the `PATH`: the bench
//! starts its own on a free loopback port and stops it at the end.
//! | `sign_in` | `POST /sign-in` (new token, one insert) next to a no-token request |
//! | `token` | token generation, hashing, signing and MAC verification alone |

#[path = "fixture/mod.rs"]
mod fixture;

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Response;
use tokio::runtime::Runtime;
use tower::{Layer, Service};
use tower_auth_session::{CookieCache, KeyRing, SessionManagerBuilder, Token};

use fixture::{OTHER_COOKIES, call, forged_cookie, get_request, trivial};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Times `iters` requests made by `make_request` through one instance of `service`.
fn bench_service<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    runtime: &Runtime,
    mut service: S,
    make_request: impl Fn() -> Request,
) where
    S: Service<Request, Response = Response<Body>, Error = Infallible>,
{
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(call(&mut service, make_request()).await);
                }
                start.elapsed()
            })
        })
    });
}

fn no_token(c: &mut Criterion) {
    let runtime = runtime();
    let manager = fixture::memory_manager(|b| b);
    let mut group = c.benchmark_group("no_token");
    let hello = || get_request("/hello", None);
    bench_service(&mut group, "bare/service_fn", &runtime, trivial(), hello);
    bench_service(
        &mut group,
        "layer/service_fn",
        &runtime,
        manager.layer().layer(trivial()),
        hello,
    );
    bench_service(
        &mut group,
        "bare/router",
        &runtime,
        fixture::router(),
        hello,
    );
    bench_service(
        &mut group,
        "layer/router",
        &runtime,
        fixture::layered_router(&manager),
        hello,
    );
    bench_service(
        &mut group,
        "outer_layer/router",
        &runtime,
        manager.layer().layer(fixture::router()),
        hello,
    );
    group.finish();
}

fn cookie_parsing(c: &mut Criterion) {
    let runtime = runtime();
    let manager = fixture::memory_manager(|b| b);
    let mut group = c.benchmark_group("cookie_parsing");
    let others = || get_request("/hello", Some(OTHER_COOKIES));
    bench_service(&mut group, "bare/12_cookies", &runtime, trivial(), others);
    bench_service(
        &mut group,
        "layer/12_cookies",
        &runtime,
        manager.layer().layer(trivial()),
        others,
    );
    group.finish();
}

fn bad_mac(c: &mut Criterion) {
    let runtime = runtime();
    let manager = fixture::memory_manager(|b| b);
    let forged = forged_cookie(&manager);
    let mut group = c.benchmark_group("bad_mac");
    let request = || get_request("/hello", Some(&forged));
    bench_service(&mut group, "bare/service_fn", &runtime, trivial(), request);
    bench_service(
        &mut group,
        "layer/service_fn",
        &runtime,
        manager.layer().layer(trivial()),
        request,
    );
    group.finish();
}

fn store_hit(c: &mut Criterion) {
    let runtime = runtime();
    let memory = fixture::memory_manager(|b| b);
    let (sqlite, _dir) = runtime.block_on(fixture::sqlite_manager(|b| b));
    let memory_cookie = runtime.block_on(fixture::sign_in(&memory, "alice"));
    let sqlite_cookie = runtime.block_on(fixture::sign_in(&sqlite, "alice"));
    let mut group = c.benchmark_group("store_hit");
    let with = |cookie: &str, uri: &str| {
        let cookie = cookie.to_owned();
        let uri = uri.to_owned();
        move || get_request(&uri, Some(&cookie))
    };
    bench_service(
        &mut group,
        "bare/service_fn",
        &runtime,
        trivial(),
        with(&memory_cookie, "/hello"),
    );
    bench_service(
        &mut group,
        "memory/service_fn",
        &runtime,
        memory.layer().layer(trivial()),
        with(&memory_cookie, "/hello"),
    );
    bench_service(
        &mut group,
        "memory/router_me",
        &runtime,
        fixture::layered_router(&memory),
        with(&memory_cookie, "/me"),
    );
    bench_service(
        &mut group,
        "sqlite/service_fn",
        &runtime,
        sqlite.layer().layer(trivial()),
        with(&sqlite_cookie, "/hello"),
    );
    #[cfg(feature = "redis")]
    if let Some(redis) = fixture::redis::RedisProcess::start() {
        let (manager, _storage, _dir) = runtime.block_on(redis.sqlite_redis_manager(|b| b));
        let cookie = runtime.block_on(fixture::sign_in(&manager, "alice"));
        bench_service(
            &mut group,
            "redis/service_fn",
            &runtime,
            manager.layer().layer(trivial()),
            with(&cookie, "/hello"),
        );
    }
    group.finish();
}

fn refresh(c: &mut Criterion) {
    let runtime = runtime();
    let every_request = |b: SessionManagerBuilder| b.update_age(Duration::ZERO);
    let memory_hit = fixture::memory_manager(|b| b);
    let memory_refresh = fixture::memory_manager(every_request);
    let (sqlite_hit, _hit_dir) = runtime.block_on(fixture::sqlite_manager(|b| b));
    let (sqlite_refresh, _refresh_dir) = runtime.block_on(fixture::sqlite_manager(every_request));

    #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
    let mut managers = vec![
        ("memory/hit", memory_hit),
        ("memory/refresh", memory_refresh),
        ("sqlite/hit", sqlite_hit),
        ("sqlite/refresh", sqlite_refresh),
    ];
    #[cfg(feature = "redis")]
    let (_redis, _redis_dirs) = match fixture::redis::RedisProcess::start() {
        Some(redis) => {
            let (hit, _, hit_dir) = runtime.block_on(redis.sqlite_redis_manager(|b| b));
            let (refresh, _, refresh_dir) =
                runtime.block_on(redis.sqlite_redis_manager(every_request));
            managers.push(("sqlite_redis/hit", hit));
            managers.push(("sqlite_redis/refresh", refresh));
            (Some(redis), vec![hit_dir, refresh_dir])
        }
        None => (None, Vec::new()),
    };

    let mut group = c.benchmark_group("refresh");
    group.sample_size(20);
    for (id, manager) in &managers {
        let cookie = runtime.block_on(fixture::sign_in(manager, "alice"));
        bench_service(
            &mut group,
            id,
            &runtime,
            manager.layer().layer(trivial()),
            || get_request("/hello", Some(&cookie)),
        );
    }
    group.finish();
}

fn cookie_cache(c: &mut Criterion) {
    let runtime = runtime();
    let store_only = fixture::memory_manager(|b| b);
    let signed = fixture::memory_manager(|b| b.cookie_cache(CookieCache::new()));
    let encrypted = fixture::memory_manager(|b| b.cookie_cache(CookieCache::new().encrypted(true)));
    let store_cookies = runtime.block_on(fixture::sign_in(&store_only, "alice"));
    let signed_cookies = runtime.block_on(fixture::sign_in(&signed, "alice"));
    let encrypted_cookies = runtime.block_on(fixture::sign_in(&encrypted, "alice"));
    let with = |cookies: &str, uri: &str| {
        let cookies = cookies.to_owned();
        let uri = uri.to_owned();
        move || get_request(&uri, Some(&cookies))
    };
    let mut group = c.benchmark_group("cookie_cache");
    bench_service(
        &mut group,
        "bare/service_fn",
        &runtime,
        trivial(),
        with(&signed_cookies, "/hello"),
    );
    bench_service(
        &mut group,
        "hit/service_fn",
        &runtime,
        signed.layer().layer(trivial()),
        with(&signed_cookies, "/hello"),
    );
    bench_service(
        &mut group,
        "hit_encrypted/service_fn",
        &runtime,
        encrypted.layer().layer(trivial()),
        with(&encrypted_cookies, "/hello"),
    );
    bench_service(
        &mut group,
        "store_hit/service_fn",
        &runtime,
        store_only.layer().layer(trivial()),
        with(&store_cookies, "/hello"),
    );
    bench_service(
        &mut group,
        "hit/router_me",
        &runtime,
        fixture::layered_router(&signed),
        with(&signed_cookies, "/me"),
    );
    group.finish();
}

/// Sign-ins per fresh store: bounds how many sessions a long criterion run piles up.
const SIGN_INS_PER_STORE: u64 = 2_000;

fn sign_in(c: &mut Criterion) {
    let runtime = runtime();
    let manager = fixture::memory_manager(|b| b);
    let mut group = c.benchmark_group("sign_in");
    group.sample_size(20);
    bench_service(
        &mut group,
        "router/no_token",
        &runtime,
        fixture::layered_router(&manager),
        || get_request("/hello", None),
    );
    let sign_in_request = || {
        Request::post("/sign-in?user=alice")
            .body(Body::empty())
            .expect("a valid request")
    };
    group.bench_function("router/sign_in_memory", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut elapsed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let manager = fixture::memory_manager(|b| b);
                    let mut app = fixture::layered_router(&manager);
                    let chunk = (iters - done).min(SIGN_INS_PER_STORE);
                    let start = Instant::now();
                    for _ in 0..chunk {
                        black_box(call(&mut app, sign_in_request()).await);
                    }
                    elapsed += start.elapsed();
                    done += chunk;
                }
                elapsed
            })
        })
    });
    group.bench_function("router/sign_in_sqlite", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut elapsed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let (manager, _dir) = fixture::sqlite_manager(|b| b).await;
                    let mut app = fixture::layered_router(&manager);
                    let chunk = (iters - done).min(SIGN_INS_PER_STORE);
                    let start = Instant::now();
                    for _ in 0..chunk {
                        black_box(call(&mut app, sign_in_request()).await);
                    }
                    elapsed += start.elapsed();
                    done += chunk;
                }
                elapsed
            })
        })
    });
    group.finish();
}

fn token(c: &mut Criterion) {
    let ring = KeyRing::from_secret(fixture::SECRET).expect("a valid secret");
    let forger = KeyRing::from_secret(fixture::FORGING_SECRET).expect("a valid secret");
    let name = "__Host-tas.session_token";
    let token = Token::generate();
    let signed = ring.sign_token(name, &token);
    let forged = forger.sign_token(name, &token);
    let mut group = c.benchmark_group("token");
    group.bench_function("generate", |b| b.iter(Token::generate));
    group.bench_function("hash", |b| b.iter(|| black_box(&token).hash()));
    group.bench_function("sign", |b| {
        b.iter(|| ring.sign_token(black_box(name), black_box(&token)))
    });
    group.bench_function("verify_ok", |b| {
        b.iter(|| ring.verify_token(black_box(name), black_box(signed.as_bytes())))
    });
    group.bench_function("verify_bad_mac", |b| {
        b.iter(|| ring.verify_token(black_box(name), black_box(forged.as_bytes())))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = no_token, cookie_parsing, bad_mac, store_hit, cookie_cache, refresh, sign_in, token
}
criterion_main!(benches);
