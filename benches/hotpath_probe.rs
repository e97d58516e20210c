//! Measures what the layer adds on its I/O-free paths (DESIGN §10, issue 13): a request
//! with no token, a cookie-cache hit, a memory-store hit and a refused cookie. Each is
//! compared with the same requests sent to the bare inner service, which does nothing.
//!
//! Wall clock (interleaved rounds, so machine load hits all paths alike):
//!
//! ```text
//! cargo bench --bench hotpath_probe
//! ```
//!
//! Instruction counts, stable on a noisy machine: run one path at two request counts under
//! callgrind and divide the difference by the difference in counts (setup cancels out):
//!
//! ```text
//! cargo bench --bench hotpath_probe --no-run   # prints the binary's path
//! for n in 1000 11000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/deps/hotpath_probe-<hash> hit $n 2>&1 | grep refs
//! done
//! ```
//!
//! Paths: `bare-anon`, `anon`, `bare-hit`, `hit`, `bare-memory`, `memory`, `bare-bad`,
//! `bad` (a `bare-*` path sends the same requests as its layered twin to the inner
//! service alone). `hit` is a cookie-cache hit, `memory` a memory-store hit (no cache),
//! `bad` a session cookie signed with another key (refused and cleared).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::{Request, Response, header};
use tower::{Layer as _, Service, ServiceExt, service_fn};
use tower_auth_session::{CookieCache, MemoryStore, SessionHandle, SessionManager};

const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0.0.0";
/// What a browser without a session typically sends.
const ANON_COOKIES: &str = "theme=dark; _ga=GA1.2.1234567890.1700000000; lang=en";

/// The layered paths, each measured against its bare twin.
const PATHS: [&str; 4] = ["anon", "hit", "memory", "bad"];

fn main() {
    // `cargo bench` appends `--bench`; it is no option of ours.
    let mut args = std::env::args().skip(1).filter(|arg| arg != "--bench");
    let only = args.next();
    let count: usize = args
        .next()
        .map_or(10_000, |n| n.parse().expect("a request count"));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let manager = |secret: u8, cache: bool| {
        let builder = SessionManager::builder(MemoryStore::new()).secret([secret; 32]);
        let builder = if cache {
            builder.cookie_cache(CookieCache::new())
        } else {
            builder
        };
        builder.build().unwrap()
    };
    let (cached, memory, forger) = (manager(5, true), manager(5, false), manager(6, false));
    let cookies_of = |manager: &SessionManager, expected: usize| {
        let signed_in = runtime.block_on(warm_cookies(manager, expected));
        format!("{ANON_COOKIES}; {signed_in}")
    };
    let cookies = [
        ANON_COOKIES.to_owned(),
        cookies_of(&cached, 2),
        cookies_of(&memory, 1),
        cookies_of(&forger, 1),
    ];
    let request = |path: usize| {
        Request::get("/me")
            .header(header::COOKIE, cookies[path].as_str())
            .header(header::USER_AGENT, USER_AGENT)
            .body(())
            .unwrap()
    };
    let inner =
        || service_fn(|_: Request<()>| std::future::ready(Ok::<_, Infallible>(Response::new(()))));
    let mut bare = inner();
    let mut layered = [
        cached.layer().layer(inner()),
        cached.layer().layer(inner()),
        memory.layer().layer(inner()),
        memory.layer().layer(inner()),
    ];
    // `path` indexes PATHS; `through_layer` false is its bare twin.
    let mut run = |path: usize, through_layer: bool, n: usize| {
        for _ in 0..n {
            let request = request(path);
            let response = if through_layer {
                layered[path].call(request).now_or_never()
            } else {
                bare.call(request).now_or_never()
            };
            let response = response.expect("no I/O on these paths").unwrap();
            // Only the refused cookie is cleared; a hit writes nothing.
            let clears = through_layer && PATHS[path] == "bad";
            assert_eq!(response.headers().get(header::SET_COOKIE).is_some(), clears);
        }
    };
    // Proves each path is what it says (a store read would not be ready at once).
    for path in 0..PATHS.len() {
        run(path, true, 1);
    }

    if let Some(name) = only {
        let (bare_twin, name) = match name.strip_prefix("bare-") {
            Some(name) => (true, name.to_owned()),
            None => (false, name),
        };
        let path = PATHS
            .iter()
            .position(|p| *p == name)
            .unwrap_or_else(|| panic!("unknown path {name}"));
        run(path, !bare_twin, count);
        return;
    }

    let mut totals = [[Duration::ZERO; 2]; PATHS.len()];
    let rounds = 20;
    for _ in 0..rounds {
        for (path, total) in totals.iter_mut().enumerate() {
            for (through_layer, slot) in [false, true].into_iter().zip(total.iter_mut()) {
                let started = Instant::now();
                run(path, through_layer, count / rounds);
                *slot += started.elapsed();
            }
        }
    }
    let ns = |d: Duration| d.as_secs_f64() * 1e9 / (count / rounds * rounds) as f64;
    for (name, [bare, layered]) in PATHS.into_iter().zip(totals) {
        let (bare, layered) = (ns(bare), ns(layered));
        println!(
            "{name:>7}: bare {bare:6.0} ns, layered {layered:6.0} ns, layer overhead {:5.0} ns, bare/layered {:.3}",
            layered - bare,
            bare / layered
        );
    }
}

/// The `name=value` pairs of a signed-in browser (`expected` cookies: the token, and the
/// cache when it is on).
async fn warm_cookies(manager: &SessionManager, expected: usize) -> String {
    let sign_in = service_fn(|request: Request<()>| async move {
        let handle = request.extensions().get::<SessionHandle>().unwrap().clone();
        handle
            .sign_in("6f1c2b9e-8d4a-4e0b-9f3a-2c7d5e8b1a40", Default::default())
            .await
            .unwrap();
        Ok::<_, Infallible>(Response::new(()))
    });
    let request = Request::post("/sign-in")
        .header(header::USER_AGENT, USER_AGENT)
        .body(())
        .unwrap();
    let response = manager
        .layer()
        .layer(sign_in)
        .oneshot(request)
        .await
        .unwrap();
    let cookies: Vec<&str> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap())
        .collect();
    assert_eq!(cookies.len(), expected, "token (and cache)");
    cookies.join("; ")
}
