//! `examples/hyper.rs` as a black box, driven by a hyper client over loopback: sign in,
//! read the session by cookie and by bearer token, the client IP recorded through a bare
//! `SocketAddr` extension, sign out, 401 afterwards.

use crate::common;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

type HyperClient = Client<HttpConnector, Full<Bytes>>;

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    json: Value,
}

async fn call(
    client: &HyperClient,
    method: Method,
    url: String,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

#[tokio::test]
async fn the_hyper_example_signs_in_reads_by_cookie_and_bearer_records_the_ip_and_signs_out() {
    let server = common::demo::start_example("hyper", &[]);
    let base = &server.base;
    let client: HyperClient = Client::builder(TokioExecutor::new()).build_http();

    let signed_in = call(
        &client,
        Method::POST,
        format!("{base}/sign-in"),
        &[],
        "alice",
    )
    .await;
    assert_eq!(signed_in.status, StatusCode::OK);
    assert_eq!(signed_in.json["session"]["userId"], "alice");
    let set_cookie = signed_in.headers[header::SET_COOKIE].to_str().unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let bearer = format!(
        "Bearer {}",
        signed_in.headers["set-auth-token"].to_str().unwrap()
    );

    for credential in [
        ("cookie", cookie.as_str()),
        ("authorization", bearer.as_str()),
    ] {
        let me = call(
            &client,
            Method::GET,
            format!("{base}/me"),
            &[credential],
            "",
        )
        .await;
        assert_eq!(me.status, StatusCode::OK, "{}", credential.0);
        assert_eq!(me.json["userId"], "alice");
        // The bare `SocketAddr` the example inserts before the layer.
        assert_eq!(me.json["ipAddress"], "127.0.0.1");
    }

    // A cross-site POST with the cookie is refused; the session survives it.
    let evil = [
        ("cookie", cookie.as_str()),
        ("sec-fetch-site", "cross-site"),
    ];
    let refused = call(&client, Method::POST, format!("{base}/sign-out"), &evil, "").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);

    let signed_out = call(
        &client,
        Method::POST,
        format!("{base}/sign-out"),
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(signed_out.status, StatusCode::OK);
    for credential in [
        ("cookie", cookie.as_str()),
        ("authorization", bearer.as_str()),
    ] {
        let me = call(
            &client,
            Method::GET,
            format!("{base}/me"),
            &[credential],
            "",
        )
        .await;
        assert_eq!(me.status, StatusCode::UNAUTHORIZED, "{}", credential.0);
        assert_eq!(me.json["error"], "unauthenticated");
    }
}
