//! tower-auth-session in a plain hyper 1 server: no axum, no extractors.
//!
//! ```text
//! cargo run --example hyper
//! curl -i -X POST -d alice http://127.0.0.1:3001/sign-in     # Set-Cookie + set-auth-token
//! curl -H "authorization: Bearer <set-auth-token>" http://127.0.0.1:3001/me
//! ```
//!
//! Routes: `POST /sign-in` (body: the user id; a real app checks a password first),
//! `GET /me` (`{"userId", "ipAddress"}` or 401), `POST /sign-out`. `PORT` picks the port
//! (default 3001, `0` for any). In an app, depend on the crate with
//! `default-features = false` (no axum, no sqlx) plus a store feature if you need one.
//!
//! Two things a hyper app does itself: it puts the peer's `SocketAddr` in the request
//! extensions *before* the session layer (so sessions record the client IP), and it maps
//! a `SessionRejection` to a response (`require()` gives 401 or 503, `status()` says which).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower::ServiceBuilder;
use tower_auth_session::{MemoryStore, SessionHandle, SessionManager, SignInOptions, Token};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(3001), |p| p.parse())?;
    // A random secret per process: fine for a demo, sessions end with the process.
    let secret = std::env::var("SESSION_SECRET")
        .map(String::into_bytes)
        .unwrap_or_else(|_| Token::generate().as_bytes().to_vec());
    let manager = SessionManager::builder(MemoryStore::new())
        .secret(secret)
        .secure(false) // plain http on localhost
        .build()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        let service = ServiceBuilder::new()
            // The peer address goes in first: the session layer reads it on the way in.
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert::<SocketAddr>(peer);
                request
            })
            .layer(manager.layer())
            .service_fn(route);
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(error) = connection.await {
                eprintln!("connection from {peer}: {error}");
            }
        });
    }
}

async fn route(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let handle = match SessionHandle::from_extensions(request.extensions()) {
        Ok(handle) => handle,
        Err(rejection) => return Ok(json(rejection.status(), error_body(rejection.error_code()))),
    };
    let post = request.method() == Method::POST;
    // State-changing requests from untrusted sites are refused (bearer clients pass).
    if let (true, Err(rejection)) = (post, handle.check_cross_site(request.headers())) {
        return Ok(json(rejection.status(), error_body(rejection.error_code())));
    }
    Ok(match (request.method(), request.uri().path()) {
        (&Method::POST, "/sign-in") => {
            let body = request.into_body().collect().await.map(|b| b.to_bytes());
            let user_id = body.map(|b| String::from_utf8_lossy(&b).trim().to_owned());
            match handle
                .sign_in(user_id.unwrap_or_default(), SignInOptions::new())
                .await
            {
                Ok(session) => json(StatusCode::OK, serde_json::json!({ "session": session })),
                Err(error) => json(error.status(), error_body(error.error_code())),
            }
        }
        (&Method::GET, "/me") => match handle.require() {
            Ok(session) => json(
                StatusCode::OK,
                serde_json::json!({ "userId": session.user_id, "ipAddress": session.ip_address }),
            ),
            Err(rejection) => json(rejection.status(), error_body(rejection.error_code())),
        },
        (&Method::POST, "/sign-out") => match handle.sign_out().await {
            Ok(_) => json(StatusCode::OK, serde_json::json!({ "success": true })),
            Err(error) => json(error.status(), error_body(error.error_code())),
        },
        _ => json(StatusCode::NOT_FOUND, error_body("not_found")),
    })
}

fn error_body(code: &str) -> serde_json::Value {
    serde_json::json!({ "error": code })
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}
