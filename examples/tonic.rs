//! tower-auth-session in a tonic gRPC server: sign in, whoami, sign out, bearer tokens in
//! metadata.
//!
//! ```text
//! cargo run --example tonic --features tonic
//! ```
//!
//! Service `demo.Sessions` (`PORT`, default 50051, `0` for any):
//!
//! | method | request | reply |
//! |---|---|---|
//! | `SignIn` | `SignInRequest { user_id }` | `Identity`, and the token in the `set-auth-token` response metadata |
//! | `WhoAmI` | `Empty` (with `authorization: Bearer <token>` metadata) | `Identity { user_id, session_id, ip_address }`, or `Unauthenticated` |
//! | `SignOut` | `Empty` (with the token) | `Empty` |
//!
//! The layer goes on the server (`Server::builder().layer(manager.layer())`) in
//! bearer-only mode, so no response carries `Set-Cookie`; tonic puts the peer's
//! `TcpConnectInfo` in the extensions, which the layer reads as the client address.
//!
//! No `protoc` is needed: the messages are hand-written `prost::Message`s and the service
//! is a plain tower `Service` that hands each method to `tonic::server::Grpc`. A project
//! with `.proto` files would generate both with `tonic-build` instead; the session code
//! stays the same.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::server::{Grpc, NamedService};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::service_fn;
use tower_auth_session::tonic::{require_session, session_handle};
use tower_auth_session::{MemoryStore, SessionManager, SignInOptions, Token, TokenTransport};

/// `message SignInRequest { string user_id = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct SignInRequest {
    #[prost(string, tag = "1")]
    pub user_id: String,
}

/// `message Identity { string user_id = 1; string session_id = 2; optional string ip_address = 3; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Identity {
    #[prost(string, tag = "1")]
    pub user_id: String,
    #[prost(string, tag = "2")]
    pub session_id: String,
    #[prost(string, optional, tag = "3")]
    pub ip_address: Option<String>,
}

/// `message Empty {}`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

fn identity(session: tower_auth_session::Session) -> Identity {
    Identity {
        user_id: session.user_id,
        session_id: session.id,
        ip_address: session.ip_address,
    }
}

/// A demo trusts the user id; a real service checks a password or an OAuth code first.
async fn sign_in(request: Request<SignInRequest>) -> Result<Response<Identity>, Status> {
    let handle = session_handle(&request)?;
    let user_id = request.into_inner().user_id;
    // A failure is `InvalidArgument` (bad user id) or `Unavailable` (store down).
    let session = handle.sign_in(user_id, SignInOptions::new()).await?;
    Ok(Response::new(identity(session)))
}

async fn who_am_i(request: Request<Empty>) -> Result<Response<Identity>, Status> {
    Ok(Response::new(identity(require_session(&request)?)))
}

async fn sign_out(request: Request<Empty>) -> Result<Response<Empty>, Status> {
    session_handle(&request)?.sign_out().await?;
    Ok(Response::new(Empty {}))
}

/// The hand-written service glue: one route per method, each decoded and encoded by
/// prost through `tonic::server::Grpc`.
#[derive(Clone)]
struct Sessions;

impl NamedService for Sessions {
    const NAME: &'static str = "demo.Sessions";
}

type GrpcFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl tower::Service<http::Request<Body>> for Sessions {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = GrpcFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> GrpcFuture {
        Box::pin(async move {
            let response = match request.uri().path() {
                "/demo.Sessions/SignIn" => {
                    let codec = ProstCodec::<Identity, SignInRequest>::default();
                    Grpc::new(codec).unary(service_fn(sign_in), request).await
                }
                "/demo.Sessions/WhoAmI" => {
                    let codec = ProstCodec::<Identity, Empty>::default();
                    Grpc::new(codec).unary(service_fn(who_am_i), request).await
                }
                "/demo.Sessions/SignOut" => {
                    let codec = ProstCodec::<Empty, Empty>::default();
                    Grpc::new(codec).unary(service_fn(sign_out), request).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            };
            Ok(response)
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT").map_or(Ok(50051), |p| p.parse())?;
    let secret = std::env::var("SESSION_SECRET")
        .map(String::into_bytes)
        .unwrap_or_else(|_| Token::generate().as_bytes().to_vec());
    let manager = SessionManager::builder(MemoryStore::new())
        .secret(secret)
        .token_transport(TokenTransport::BearerOnly)
        .build()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    Server::builder()
        .layer(manager.layer())
        .add_service(Sessions)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await?;
    Ok(())
}
