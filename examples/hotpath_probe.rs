//! Measures what the layer adds on its two I/O-free paths (DESIGN §10): a request with no
//! token, and a cookie-cache hit. Each is compared with the same requests sent to the bare
//! inner service, which does nothing.
//!
//! Wall clock (interleaved rounds, so machine load hits all paths alike):
//!
//! ```text
//! cargo run --release --example hotpath_probe
//! ```
//!
//! Instruction counts, stable on a noisy machine: run one path at two request counts under
//! callgrind and divide the difference by the difference in counts (setup cancels out):
//!
//! ```text
//! cargo build --release --example hotpath_probe
//! for n in 1000 11000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/hotpath_probe hit $n 2>&1 | grep refs
//! done
//! ```
//!
//! Paths: `bare-anon`, `anon`, `bare-hit`, `hit` (a `bare-*` path sends the same requests
//! as its layered twin to the inner service alone).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::{Request, Response, header};
use tower::{Layer as _, Service, ServiceExt, service_fn};
use tower_auth_session::{MemoryStore, SessionHandle, SessionManager};

const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0.0.0";
/// What a browser without a session typically sends.
const ANON_COOKIES: &str = "theme=dark; _ga=GA1.2.1234567890.1700000000; lang=en";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    BareAnon,
    Anon,
    BareHit,
    Hit,
}

impl Path {
    const ALL: [(&'static str, Path); 4] = [
        ("bare-anon", Path::BareAnon),
        ("anon", Path::Anon),
        ("bare-hit", Path::BareHit),
        ("hit", Path::Hit),
    ];
}

fn main() {
    let mut args = std::env::args().skip(1);
    let only = args.next();
    let count: usize = args
        .next()
        .map_or(10_000, |n| n.parse().expect("a request count"));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let manager = SessionManager::builder(MemoryStore::new())
        .secret([5u8; 32])
        .cookie_cache(tower_auth_session::CookieCache::new())
        .build()
        .unwrap();
    let hit_cookies = format!(
        "{ANON_COOKIES}; {}",
        runtime.block_on(warm_cookies(&manager))
    );

    let request = |path: Path| {
        let cookies = match path {
            Path::BareAnon | Path::Anon => ANON_COOKIES,
            Path::BareHit | Path::Hit => hit_cookies.as_str(),
        };
        Request::get("/me")
            .header(header::COOKIE, cookies)
            .header(header::USER_AGENT, USER_AGENT)
            .body(())
            .unwrap()
    };
    let inner =
        || service_fn(|_: Request<()>| std::future::ready(Ok::<_, Infallible>(Response::new(()))));
    let mut bare = inner();
    let mut layered = manager.layer().layer(inner());
    let mut run = |path: Path, n: usize| {
        for _ in 0..n {
            let request = request(path);
            let response = match path {
                Path::BareAnon | Path::BareHit => bare.call(request).now_or_never(),
                Path::Anon | Path::Hit => layered.call(request).now_or_never(),
            };
            let response = response.expect("no I/O on these paths").unwrap();
            assert!(response.headers().get(header::SET_COOKIE).is_none());
        }
    };
    // Proves the hit path is a hit (a miss would need the store, so would not be ready).
    run(Path::Hit, 1);

    if let Some(name) = only {
        let (_, path) = Path::ALL
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("unknown path {name}"));
        run(path, count);
        return;
    }

    let mut totals = [Duration::ZERO; 4];
    let rounds = 20;
    for _ in 0..rounds {
        for (i, (_, path)) in Path::ALL.into_iter().enumerate() {
            let started = Instant::now();
            run(path, count / rounds);
            totals[i] += started.elapsed();
        }
    }
    let per_request = |i: usize| totals[i].as_secs_f64() * 1e9 / (count / rounds * rounds) as f64;
    for (i, (name, _)) in Path::ALL.into_iter().enumerate() {
        println!("{name:>9}: {:7.0} ns per request", per_request(i));
    }
    println!(
        "no token: layer overhead {:.0} ns, bare/layered {:.3}",
        per_request(1) - per_request(0),
        per_request(0) / per_request(1)
    );
    println!(
        "cache hit: layer overhead {:.0} ns, bare/layered {:.3}",
        per_request(3) - per_request(2),
        per_request(2) / per_request(3)
    );
}

/// The `name=value` pairs of a signed-in browser whose cookie cache is warm.
async fn warm_cookies(manager: &SessionManager) -> String {
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
    assert_eq!(cookies.len(), 2, "token and cache");
    cookies.join("; ")
}
