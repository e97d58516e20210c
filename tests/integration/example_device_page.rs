//! The example server's session management over real HTTP: the `/api/auth` endpoints
//! mounted from `SessionManager::router`, the cross-site guard with the default trusted
//! origins, and the `/` device page.

use crate::common::demo::{SendOk, status_of};
use std::process::Command;

use serde_json::{Value, json};

use crate::common;

use common::demo::example_binary;

/// The demo server with a fixed secret (the device page needs nothing else).
fn start(extra_env: &[(&str, &str)]) -> common::demo::Server {
    let mut env = vec![("SESSION_SECRET", "a demo secret that is long enough!!")];
    env.extend_from_slice(extra_env);
    common::demo::start(&env)
}

fn browser(user_agent: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .user_agent(user_agent)
        .build()
        .unwrap()
}

const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
const IPHONE: &str =
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Version/17.5 Mobile Safari/604.1";

#[tokio::test]
async fn device_page_and_management_endpoints_over_real_http() {
    let server = start(&[]);
    let base = &server.base;
    // The page's own origin is trusted by default (the port is the one actually bound).
    let own_origin = base.as_str();
    let laptop = browser(FIREFOX);
    let phone = browser(IPHONE);
    let hostile = browser("<script>alert(1)</script>");

    let page = laptop.get(format!("{base}/")).send_ok().await;
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert_page_cannot_be_framed(page.headers());
    let page = page.text().await.unwrap();
    assert!(page.contains("<form"), "sign-in form when signed out");

    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for device in [&laptop, &phone, &hostile] {
        let reply = device
            .post(format!("{base}/api/auth/sign-in"))
            .header("origin", own_origin)
            .json(&json!({ "userId": "alice" }))
            .send_ok()
            .await;
        assert_eq!(reply.status(), 200);
        let signed = reply.headers()["set-auth-token"].to_str().unwrap();
        tokens.push(signed.split('.').nth(1).unwrap().to_owned());
        let body: Value = reply.json().await.unwrap();
        ids.push(body["session"]["id"].as_str().unwrap().to_owned());
    }
    let no_token = |text: &str| {
        for token in &tokens {
            assert!(!text.contains(token.as_str()), "token in {text}");
        }
    };

    let list = laptop
        .get(format!("{base}/api/auth/list-sessions"))
        .send_ok()
        .await;
    assert_eq!(list.headers()["cache-control"], "no-store");
    let list = list.text().await.unwrap();
    no_token(&list);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 3);
    let current: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], ids[0].as_str());
    assert_eq!(current[0]["ipAddress"], "127.0.0.1");

    // The device page: user, devices, IP, marker, one revoke button per other device.
    let page = laptop
        .get(format!("{base}/"))
        .send_ok()
        .await
        .text()
        .await
        .unwrap();
    no_token(&page);
    assert!(
        page.contains("Signed in as <strong>alice</strong>"),
        "{page}"
    );
    assert!(page.contains("Firefox on Linux"), "{page}");
    assert!(page.contains("Safari on iPhone"), "{page}");
    assert!(page.contains("127.0.0.1"));
    assert_eq!(page.matches("this device").count(), 1);
    assert_eq!(page.matches(">Revoke</button>").count(), 2);
    assert!(page.contains(&format!("data-id=\"{}\"", ids[1])));
    assert!(!page.contains(&format!("data-id=\"{}\"", ids[0])));
    assert!(page.contains("revoke-other-sessions"));
    assert!(page.contains("sign-out"));
    // A user agent is data, never markup.
    assert!(!page.contains("<script>alert(1)</script>"), "{page}");
    assert!(page.contains("&lt;script&gt;"));

    // Cross-site POSTs are refused and revoke nothing.
    let evil = laptop
        .post(format!("{base}/api/auth/revoke-other-sessions"))
        .header("origin", "https://evil.example")
        .send_ok()
        .await;
    assert_eq!(evil.status(), 403);
    assert_eq!(status_of(&phone, format!("{base}/api/me")).await, 200);

    // What the page's buttons do: revoke one device, then all the others.
    let revoke = laptop
        .post(format!("{base}/api/auth/revoke-session"))
        .header("origin", own_origin)
        .json(&json!({ "id": ids[2] }))
        .send_ok()
        .await;
    assert_eq!(revoke.status(), 200);
    assert_eq!(
        revoke.json::<Value>().await.unwrap(),
        json!({ "status": true })
    );
    assert_eq!(status_of(&hostile, format!("{base}/api/me")).await, 401);
    let others = laptop
        .post(format!("{base}/api/auth/revoke-other-sessions"))
        .header("origin", own_origin)
        .send_ok()
        .await;
    assert_eq!(others.status(), 200);
    assert_eq!(status_of(&phone, format!("{base}/api/me")).await, 401);
    assert_eq!(status_of(&laptop, format!("{base}/api/me")).await, 200);

    // Sign out everywhere: the caller too, its cookies cleared.
    let all = laptop
        .post(format!("{base}/api/auth/revoke-sessions"))
        .header("origin", own_origin)
        .send_ok()
        .await;
    assert_eq!(all.status(), 200);
    assert!(
        all.headers()
            .get_all("set-cookie")
            .iter()
            .map(|c| c.to_str().unwrap())
            .any(|c| c.starts_with("tas.session_token=") && c.contains("Max-Age=0")),
        "the caller's session cookie is cleared"
    );
    assert_eq!(status_of(&laptop, format!("{base}/api/me")).await, 401);
    let page = laptop
        .get(format!("{base}/"))
        .send_ok()
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("<form"));
}

#[test]
fn a_trusted_origin_that_is_not_an_origin_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(example_binary())
        .env_clear()
        .env("PORT", "0")
        .env("DATABASE_URL", "memory")
        .env("SESSION_TRUSTED_ORIGINS", "https://app.example/login")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("SESSION_TRUSTED_ORIGINS"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// No other site may frame the device page (clickjacking its revoke and sign-out
/// buttons), and browsers must not sniff its type.
fn assert_page_cannot_be_framed(headers: &reqwest::header::HeaderMap) {
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let policies: Vec<_> = headers.get_all("content-security-policy").iter().collect();
    assert!(
        policies.iter().any(|p| *p == "frame-ancestors 'none'"),
        "{policies:?}"
    );
}

#[tokio::test]
async fn device_page_refuses_framing_signed_in_or_not() {
    let server = start(&[]);
    let base = &server.base;
    let laptop = browser(FIREFOX);
    let page = laptop.get(format!("{base}/")).send_ok().await;
    assert_eq!(page.status(), 200);
    assert_page_cannot_be_framed(page.headers());
    let reply = laptop
        .post(format!("{base}/api/auth/sign-in"))
        .header("origin", base.as_str())
        .json(&json!({ "userId": "alice" }))
        .send_ok()
        .await;
    assert_eq!(reply.status(), 200);
    let page = laptop.get(format!("{base}/")).send_ok().await;
    assert_eq!(page.status(), 200);
    assert_page_cannot_be_framed(page.headers());
    assert!(page.text().await.unwrap().contains("alice"));
}
