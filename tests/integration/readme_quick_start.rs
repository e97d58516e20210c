//! The README's quick start is `examples/minimal.rs`, word for word (the README block is
//! also compiled as a doctest); here its handlers run against a store that fails, a
//! healthy one, and a cross-site request.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use common::{SECRET, SwitchableStore, send};
use http::{Request, StatusCode};
use tower_auth_session::{MemoryStore, SessionManager};

#[allow(dead_code, unreachable_pub)]
mod quick_start {
    include!("../../examples/minimal.rs");
}

const README: &str = include_str!("../../README.md");
const MINIMAL: &str = include_str!("../../examples/minimal.rs");

#[test]
fn the_readme_quick_start_is_examples_minimal() {
    let block = format!("```rust,no_run\n{MINIMAL}```");
    assert!(
        README.contains(&block),
        "the README's quick start must be examples/minimal.rs verbatim"
    );
}

fn manager(down: bool) -> SessionManager {
    let store = SwitchableStore {
        inner: Arc::new(MemoryStore::new()),
        down: Arc::new(AtomicBool::new(down)),
    };
    SessionManager::builder(store)
        .secret(SECRET)
        .build()
        .unwrap()
}

fn sign_in_request(origin: Option<&str>) -> Request<axum::body::Body> {
    let mut request = Request::post("/sign-in");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.body(axum::body::Body::empty()).unwrap()
}

#[tokio::test]
async fn the_quick_starts_sign_in_answers_503_when_the_store_fails_never_a_200() {
    let app = quick_start::app(&manager(true));
    let reply = send(&app, sign_in_request(None)).await;
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.body
    );
    assert_eq!(reply.json()["error"], "session_store_unavailable");
    assert!(reply.set_cookies().is_empty());

    let app = quick_start::app(&manager(false));
    let reply = send(&app, sign_in_request(None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Sign-in is guarded: another site cannot sign the browser in to its own account.
    let reply = send(&app, sign_in_request(Some("https://evil.example"))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}
