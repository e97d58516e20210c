//! A PostgreSQL outage behind a cuttable TCP proxy: every request that needs the store
//! answers 503 within 3 s (not sqlx's 30 s acquire timeout), nobody is signed out, and
//! service comes back by itself within about one probe interval once the database does.
#![cfg(all(feature = "postgres", feature = "redis"))] // the proxy lives in redis_support

use std::time::{Duration, Instant};

use http::StatusCode;
use tower_auth_session::SessionManager;
use tower_auth_session::store::PostgresStore;

use crate::common::{self, SECRET, get, post, send};
use crate::redis_support::TcpProxy;

#[tokio::test]
async fn a_cut_connection_answers_fast_and_recovery_needs_no_restart() {
    outage(Fault::Cut).await;
}

/// The hard case: the database accepts nothing and answers nothing (a hung server, a
/// partition), where only a timeout ends a call.
#[tokio::test]
async fn a_silent_database_answers_within_the_timeout_and_recovery_needs_no_restart() {
    outage(Fault::Freeze).await;
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Cut,
    Freeze,
}

async fn outage(fault: Fault) {
    let Some(url) = common::service_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    else {
        return;
    };
    let (scheme_user, rest) = url
        .rsplit_once('@')
        .unwrap_or(("postgres://postgres", &url));
    let (target, database) = rest.split_once('/').unwrap_or((rest, "test"));
    let proxy = TcpProxy::start(target.to_owned()).await;
    let proxied = format!("{scheme_user}@{}/{database}", proxy.address());
    // The defaults under test: 2 s timeout, 1 s probe interval.
    let store = PostgresStore::builder()
        .schema(common::unique_name("tas_faults"))
        .unwrap()
        .connect(&proxied)
        .await
        .unwrap();
    let handle = store.clone();
    let manager = SessionManager::builder(store)
        .secret(SECRET)
        .build()
        .unwrap();
    let app = common::app(&manager);
    let cookie = common::sign_in(&app, &manager, "alice").await;
    assert_eq!(
        send(&app, get("/me", Some(&cookie))).await.status,
        StatusCode::OK
    );

    match fault {
        Fault::Cut => proxy.cut(),
        Fault::Freeze => proxy.blackhole(),
    }
    let outage = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut requests = 0;
    while outage.elapsed() < Duration::from_secs(5) {
        for request in [get("/me", Some(&cookie)), post("/sign-in?user=bob", None)] {
            let started = Instant::now();
            let reply = send(&app, request).await;
            let took = started.elapsed();
            slowest = slowest.max(took);
            requests += 1;
            assert_eq!(
                reply.status,
                StatusCode::SERVICE_UNAVAILABLE,
                "{}",
                reply.body
            );
            assert!(took < Duration::from_secs(3), "a request took {took:?}");
            // An outage is not a sign-out.
            assert!(reply.set_cookies().is_empty(), "{:?}", reply.set_cookies());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A silent database opens the circuit; refused connections fail fast without it.
    assert_eq!(handle.circuit_open(), fault == Fault::Freeze);
    proxy.restore();
    let restored = Instant::now();
    loop {
        let reply = send(&app, get("/me", Some(&cookie))).await;
        if reply.status == StatusCode::OK {
            break;
        }
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            restored.elapsed() < Duration::from_secs(5),
            "still down {:?} after the database came back",
            restored.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recovery = restored.elapsed();
    assert!(!handle.circuit_open());
    eprintln!(
        "postgres outage ({fault:?}): {requests} requests, slowest {slowest:?}; service back {recovery:?} after the database"
    );
    // One probe interval (1 s) plus a connect; when frozen, a probe sent just before the
    // database came back may still run out its 2 s timeout first.
    let bound = match fault {
        Fault::Cut => Duration::from_millis(1500),
        Fault::Freeze => Duration::from_millis(3500),
    };
    assert!(recovery < bound, "{recovery:?}");
    assert_eq!(
        send(&app, post("/sign-in?user=bob", None)).await.status,
        StatusCode::OK
    );
}
