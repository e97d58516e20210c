//! The session API as a hyper or tonic handler uses it: the handle from the extensions,
//! `require()` for "no session → 401, store down → 503", and (feature `tonic`) the gRPC
//! status of each rejection.

use crate::common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{SECRET, SwitchableStore};
use http::{Request, Response, StatusCode, header};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use tower_auth_session::{
    MemoryStore, SessionHandle, SessionManager, SessionRejection, SignInOptions,
};

/// A plain tower handler: `/sign-in` signs alice in, anything else answers with who is
/// signed in, mapping a rejection to its status.
async fn handler(request: Request<String>) -> Result<Response<String>, Infallible> {
    let handle = match SessionHandle::from_extensions(request.extensions()) {
        Ok(handle) => handle,
        Err(rejection) => return Ok(reply(rejection.status(), rejection.error_code())),
    };
    if request.uri().path() == "/sign-in" {
        return Ok(match handle.sign_in("alice", SignInOptions::new()).await {
            Ok(session) => reply(StatusCode::OK, &session.user_id),
            Err(error) => reply(error.status(), error.error_code()),
        });
    }
    Ok(match handle.require() {
        Ok(session) => reply(StatusCode::OK, &session.user_id),
        Err(rejection) => reply(rejection.status(), rejection.error_code()),
    })
}

fn reply(status: StatusCode, body: &str) -> Response<String> {
    let mut response = Response::new(body.to_owned());
    *response.status_mut() = status;
    response
}

fn request(path: &str, cookie: Option<&str>) -> Request<String> {
    let mut builder = Request::get(path);
    if let Some(cookie) = cookie {
        builder = builder.header(header::COOKIE, cookie);
    }
    builder.body(String::new()).unwrap()
}

#[tokio::test]
async fn require_gives_the_session_401_without_one_and_503_when_the_store_is_down() {
    let down = Arc::new(AtomicBool::new(false));
    let store = SwitchableStore {
        inner: Arc::new(MemoryStore::new()),
        down: down.clone(),
    };
    let manager = SessionManager::builder(store)
        .secret(SECRET)
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(manager.layer())
        .service(service_fn(handler));

    let anonymous = service.clone().oneshot(request("/me", None)).await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.body(), "unauthenticated");

    let signed_in = service
        .clone()
        .oneshot(request("/sign-in", None))
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::OK);
    let set_cookie = signed_in.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let me = service
        .clone()
        .oneshot(request("/me", Some(&cookie)))
        .await
        .unwrap();
    assert_eq!((me.status(), me.body().as_str()), (StatusCode::OK, "alice"));

    down.store(true, Ordering::SeqCst);
    let outage = service
        .clone()
        .oneshot(request("/me", Some(&cookie)))
        .await
        .unwrap();
    assert_eq!(outage.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(outage.body(), "session_store_unavailable");
    // A failed sign-in is an error status too, never a 200.
    let failed = service
        .clone()
        .oneshot(request("/sign-in", None))
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn without_the_layer_the_handle_is_a_missing_layer_rejection() {
    let response = service_fn(handler)
        .oneshot(request("/me", None))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        SessionHandle::from_extensions(&http::Extensions::new()).unwrap_err(),
        SessionRejection::MissingLayer
    );
}

#[cfg(feature = "tonic")]
#[test]
fn each_rejection_has_its_grpc_status() {
    use tonic::{Code, Status};
    let code = |rejection| Status::from(rejection).code();
    assert_eq!(
        code(SessionRejection::Unauthenticated),
        Code::Unauthenticated
    );
    assert_eq!(code(SessionRejection::Unavailable), Code::Unavailable);
    assert_eq!(code(SessionRejection::NotFresh), Code::PermissionDenied);
    assert_eq!(code(SessionRejection::CrossSite), Code::PermissionDenied);
    assert_eq!(code(SessionRejection::MissingLayer), Code::Internal);
    // The interceptor refuses a request without a session before the method runs.
    let refused = tower_auth_session::tonic::signed_in_only(tonic::Request::new(()));
    assert_eq!(refused.unwrap_err().code(), Code::Internal);
}

/// What a custom acceptor might put in the extensions instead of a `SocketAddr`.
#[derive(Clone)]
struct Peer(std::net::IpAddr);

#[tokio::test]
async fn the_client_address_hook_feeds_sign_in_and_refresh() {
    let clock = tower_auth_session::ManualClock::new();
    let manager = SessionManager::builder(MemoryStore::new())
        .secret(SECRET)
        .clock(clock.clone())
        .client_address(|extensions: &http::Extensions| extensions.get::<Peer>().map(|p| p.0))
        .build()
        .unwrap();
    async fn who(request: Request<String>) -> Result<Response<String>, Infallible> {
        let handle = SessionHandle::from_extensions(request.extensions()).unwrap();
        if request.uri().path() == "/sign-in" {
            handle.sign_in("alice", SignInOptions::new()).await.unwrap();
        }
        let ip = handle.require().ok().and_then(|s| s.ip_address);
        Ok(Response::new(ip.unwrap_or_default()))
    }
    let service = ServiceBuilder::new()
        .layer(manager.layer())
        .service(service_fn(who));
    let from = |path: &str, ip: &str, cookie: Option<&str>| {
        let mut request = request(path, cookie);
        request.extensions_mut().insert(Peer(ip.parse().unwrap()));
        request
    };

    let signed_in = service
        .clone()
        .oneshot(from("/sign-in", "198.51.100.1", None))
        .await
        .unwrap();
    assert_eq!(signed_in.body(), "198.51.100.1");
    let set_cookie = signed_in.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    // The refresh a day later records where the client is now.
    clock.advance(chrono::Duration::days(2));
    let refreshed = service
        .clone()
        .oneshot(from("/me", "198.51.100.2", Some(&cookie)))
        .await
        .unwrap();
    assert!(
        refreshed.headers().contains_key(header::SET_COOKIE),
        "refreshed"
    );
    assert_eq!(refreshed.body(), "198.51.100.2");
}
