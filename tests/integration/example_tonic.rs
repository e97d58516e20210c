//! `examples/tonic.rs` as a black box, driven by a tonic client over loopback: sign in,
//! whoami with the bearer token in metadata (the IP recorded from tonic's
//! `TcpConnectInfo`), sign out, `Unauthenticated` afterwards, and never a `Set-Cookie`.
#![cfg(feature = "tonic")]

use crate::common;

use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_prost::ProstCodec;

/// The example's messages, written again as a client in another crate would.
#[derive(Clone, PartialEq, prost::Message)]
struct SignInRequest {
    #[prost(string, tag = "1")]
    user_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Identity {
    #[prost(string, tag = "1")]
    user_id: String,
    #[prost(string, tag = "2")]
    session_id: String,
    #[prost(string, optional, tag = "3")]
    ip_address: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Empty {}

async fn unary<Req, Res>(
    channel: &Channel,
    method: &'static str,
    message: Req,
    token: Option<&str>,
) -> Result<tonic::Response<Res>, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Res: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = Request::new(message);
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    let path = PathAndQuery::from_static(method);
    grpc.unary(request, path, ProstCodec::<Req, Res>::default())
        .await
}

#[tokio::test]
async fn the_tonic_example_signs_in_answers_whoami_by_bearer_records_the_ip_and_signs_out() {
    let server = common::demo::start_example("tonic", &[]);
    let channel = Channel::from_shared(server.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();

    let anonymous = unary::<_, Identity>(&channel, "/demo.Sessions/WhoAmI", Empty {}, None).await;
    assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);

    let sign_in = SignInRequest {
        user_id: "alice".into(),
    };
    let signed_in = unary::<_, Identity>(&channel, "/demo.Sessions/SignIn", sign_in, None)
        .await
        .unwrap();
    assert!(
        signed_in.metadata().get("set-cookie").is_none(),
        "bearer-only"
    );
    let token = signed_in
        .metadata()
        .get("set-auth-token")
        .expect("the token")
        .to_str()
        .unwrap()
        .to_owned();
    let session_id = signed_in.get_ref().session_id.clone();

    let me = unary::<_, Identity>(&channel, "/demo.Sessions/WhoAmI", Empty {}, Some(&token))
        .await
        .unwrap();
    assert!(me.metadata().get("set-cookie").is_none());
    let me = me.into_inner();
    assert_eq!(me.user_id, "alice");
    assert_eq!(me.session_id, session_id);
    assert_eq!(
        me.ip_address.as_deref(),
        Some("127.0.0.1"),
        "TcpConnectInfo"
    );

    let signed_out = unary::<_, Empty>(&channel, "/demo.Sessions/SignOut", Empty {}, Some(&token))
        .await
        .unwrap();
    assert!(signed_out.metadata().get("set-cookie").is_none());
    let after =
        unary::<_, Identity>(&channel, "/demo.Sessions/WhoAmI", Empty {}, Some(&token)).await;
    assert_eq!(after.unwrap_err().code(), Code::Unauthenticated);
}
