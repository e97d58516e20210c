//! The cost of a cookie-cache hit in the layer itself (DESIGN §10: at most 12
//! allocations). A counting allocator sees every allocation this thread makes while one
//! request goes through `SessionService` around an inner service that allocates nothing.
//! Timing is printed, not asserted (`cargo test --release --test cookie_cache_budget --
//! --nocapture` for meaningful figures).

use crate::common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::time::Instant;

use futures_util::FutureExt;
use http::{Request, Response, header};
use tower::{Layer as _, Service, ServiceExt, service_fn};
use tower_auth_session::{CookieCache, MemoryStore, SessionHandle, SessionManager};

use common::CountingStore;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts on the side.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

/// The cookies of a signed-in browser whose cache is warm.
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
    let cookies: Vec<String> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    assert_eq!(cookies.len(), 2, "token and cache");
    cookies.join("; ")
}

const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) Chrome/124.0.0.0";

#[tokio::test]
async fn a_cache_hit_stays_within_the_allocation_budget() {
    for encrypted in [false, true] {
        let (store, counts) = CountingStore::new(MemoryStore::new());
        let manager = SessionManager::builder(store)
            .secret([5u8; 32])
            .cookie_cache(CookieCache::new().encrypted(encrypted))
            .build()
            .unwrap();
        let cookies = warm_cookies(&manager).await;
        let request = || {
            Request::get("/me")
                .header(header::COOKIE, cookies.as_str())
                .header(header::USER_AGENT, USER_AGENT)
                .body(())
                .unwrap()
        };
        let signed_in = service_fn(|request: Request<()>| {
            let handle = request.extensions().get::<SessionHandle>().unwrap();
            assert!(handle.current().is_some(), "the cache resolves the session");
            std::future::ready(Ok::<_, Infallible>(Response::new(())))
        });
        let finds = counts.finds();
        manager
            .layer()
            .layer(signed_in)
            .oneshot(request())
            .await
            .unwrap();

        // The measured inner service does nothing, so every allocation is the layer's.
        let inner =
            service_fn(|_: Request<()>| std::future::ready(Ok::<_, Infallible>(Response::new(()))));
        let mut service = manager.layer().layer(inner);
        let mut hit = |request: Request<()>| {
            let response = service
                .call(request)
                .now_or_never()
                .expect("a hit is ready at once");
            assert!(
                response
                    .unwrap()
                    .headers()
                    .get(header::SET_COOKIE)
                    .is_none()
            );
        };
        for _ in 0..10 {
            hit(request());
        }
        const ROUNDS: usize = 1000;
        let mut counted = 0;
        for _ in 0..ROUNDS {
            let request = request();
            let before = allocations();
            hit(request);
            counted += allocations() - before;
        }
        let per_request = counted as f64 / ROUNDS as f64;
        println!("cache hit (encrypted: {encrypted}): {per_request:.1} allocations per request");
        assert!(per_request <= 12.0, "{per_request} allocations per hit");

        // Timing, reported only: the same requests through the layer and to the bare inner
        // service, interleaved in rounds so that machine load hits both alike.
        let mut bare =
            service_fn(|_: Request<()>| std::future::ready(Ok::<_, Infallible>(Response::new(()))));
        let (mut layered, mut unlayered) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        for _ in 0..20 {
            let requests: Vec<_> = (0..1000).map(|_| request()).collect();
            let started = Instant::now();
            for request in requests {
                hit(request);
            }
            layered += started.elapsed();
            let requests: Vec<_> = (0..1000).map(|_| request()).collect();
            let started = Instant::now();
            for request in requests {
                let _ = bare.call(request).now_or_never();
            }
            unlayered += started.elapsed();
        }
        println!(
            "cache hit (encrypted: {encrypted}): {:.2} µs per request through the layer, {:.2} µs without it (report only)",
            layered.as_secs_f64() * 1e6 / 20_000.0,
            unlayered.as_secs_f64() * 1e6 / 20_000.0
        );
        assert_eq!(counts.finds(), finds, "every request was a cache hit");
    }
}
