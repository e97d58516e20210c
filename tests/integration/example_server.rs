//! Drives `examples/server.rs` as a black box over real HTTP, the way DEMO_SERVER.md
//! describes it. `cargo test` builds the example next to the test binaries.

use crate::common::demo::{SendOk, status_of};
use std::process::Command;

use serde_json::{Value, json};

use crate::common;

use common::demo::{Server, example_binary, start};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

#[tokio::test]
async fn sign_in_me_sign_out_over_real_http() {
    let server = start(&[("SESSION_SECRET", "a demo secret that is long enough!!")]);
    let base = &server.base;
    let http = client();

    let health = http.get(format!("{base}/healthz")).send_ok().await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let me = http.get(format!("{base}/api/me")).send_ok().await;
    assert_eq!(me.status(), 401);
    // DEMO_SERVER.md: `error`, plus `code` and `message` for Better Auth's client.
    let body = me.json::<Value>().await.unwrap();
    assert_eq!(body["error"], "unauthenticated");
    assert_eq!(body["code"], "UNAUTHENTICATED");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );

    let anonymous = http
        .get(format!("{base}/api/auth/get-session"))
        .send_ok()
        .await;
    assert_eq!(anonymous.status(), 200);
    assert_eq!(anonymous.headers()["cache-control"], "no-store");
    assert_eq!(anonymous.json::<Value>().await.unwrap(), Value::Null);

    let missing = http
        .post(format!("{base}/api/auth/sign-in"))
        .json(&json!({"userId": ""}))
        .send_ok()
        .await;
    assert_eq!(missing.status(), 400);

    let signed_in = http
        .post(format!("{base}/api/auth/sign-in"))
        .json(&json!({"userId": "alice"}))
        .send_ok()
        .await;
    assert_eq!(signed_in.status(), 200);
    let set_cookie: Vec<String> = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        set_cookie
            .iter()
            .any(|c| c.starts_with("tas.session_token=") && c.contains("Max-Age=604800")),
        "{set_cookie:?}"
    );
    let bearer = signed_in.headers()["set-auth-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = signed_in.json().await.unwrap();
    let session = &body["session"];
    for field in [
        "id",
        "userId",
        "expiresAt",
        "createdAt",
        "updatedAt",
        "authenticatedAt",
        "lastSeenAt",
        "ipAddress",
        "userAgent",
    ] {
        assert!(session.get(field).is_some(), "{field} missing in {session}");
    }
    assert_eq!(session["userId"], "alice");
    assert_eq!(session["ipAddress"], "127.0.0.1");
    let token_part = bearer.split('.').nth(1).unwrap();
    assert!(
        !body.to_string().contains(token_part),
        "a JSON body carries the token"
    );

    let me = http.get(format!("{base}/api/me")).send_ok().await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["userId"], "alice");
    assert_eq!(me["sessionId"], session["id"]);

    // A client without cookies uses the bearer token.
    let bearer_me = reqwest::Client::new()
        .get(format!("{base}/api/me"))
        .bearer_auth(&bearer)
        .send_ok()
        .await;
    assert_eq!(bearer_me.status(), 200);

    // A cross-site POST is refused and signs nobody out.
    let evil = http
        .post(format!("{base}/api/auth/sign-out"))
        .header("origin", "https://evil.example")
        .send_ok()
        .await;
    assert_eq!(evil.status(), 403);
    assert_eq!(status_of(&http, format!("{base}/api/me")).await, 200);

    let out = http
        .post(format!("{base}/api/auth/sign-out"))
        .send_ok()
        .await;
    assert_eq!(out.status(), 200);
    assert_eq!(out.json::<Value>().await.unwrap(), json!({"success": true}));
    assert_eq!(status_of(&http, format!("{base}/api/me")).await, 401);
    // The bearer token was the same session: it is revoked too.
    let bearer_me = reqwest::Client::new()
        .get(format!("{base}/api/me"))
        .bearer_auth(&bearer)
        .send_ok()
        .await;
    assert_eq!(bearer_me.status(), 401);

    let page = http.get(format!("{base}/")).send_ok().await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form"));
}

#[test]
fn bad_configuration_stops_with_one_clear_line() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("SESSION_SECRET", "short")], "SESSION_SECRET"),
        (&[("PORT", "eighty")], "PORT"),
        (&[("SESSION_EXPIRES_IN", "1w")], "SESSION_EXPIRES_IN"),
        (&[("SESSION_STORAGE", "cloud")], "SESSION_STORAGE"),
        (&[("SESSION_STORAGE", "secondary-only")], "REDIS_URL"),
        (&[("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
        (
            &[("SESSION_TRUSTED_PROXIES", "not-a-cidr")],
            "SESSION_TRUSTED_PROXIES",
        ),
        (&[("SESSION_RATE_LIMIT", "3")], "SESSION_RATE_LIMIT"),
        (&[("SESSION_RATE_LIMIT", "0/10")], "SESSION_RATE_LIMIT"),
        (&[("SESSION_RATE_LIMIT", "3/soon")], "SESSION_RATE_LIMIT"),
    ];
    for (env, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(example_binary());
        command.env_clear().env("PORT", "0").current_dir(dir.path());
        command.env("DATABASE_URL", "memory");
        for (k, v) in *env {
            command.env(k, v);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success(), "{env:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error_lines.len(), 1, "{env:?}: {stderr}");
        assert!(error_lines[0].contains(expected), "{env:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{env:?}: {stderr}");
    }
}

#[tokio::test]
async fn runs_on_postgresql_when_database_url_says_so() {
    let Some(url) = common::service_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    else {
        return;
    };
    let server = start(&[
        ("DATABASE_URL", url.as_str()),
        ("SESSION_SECRET", "a demo secret that is long enough!!"),
    ]);
    sign_in_me_sign_out(&server, &common::unique_name("pg_demo_user")).await;
}

/// Signs in, reads `/api/me`, signs out and checks the cookie is dead, against `server`.
async fn sign_in_me_sign_out(server: &Server, user: &str) {
    let base = &server.base;
    let http = client();
    let signed_in = http
        .post(format!("{base}/api/auth/sign-in"))
        .json(&json!({"userId": user}))
        .send_ok()
        .await;
    assert_eq!(signed_in.status(), 200);
    let me: Value = http
        .get(format!("{base}/api/me"))
        .send_ok()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["userId"], user);
    let listed: Value = http
        .get(format!("{base}/api/auth/list-sessions"))
        .send_ok()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let out = http
        .post(format!("{base}/api/auth/sign-out"))
        .send_ok()
        .await;
    assert_eq!(out.status(), 200);
    assert_eq!(status_of(&http, format!("{base}/api/me")).await, 401);
}

#[tokio::test]
async fn uses_redis_in_front_of_the_database_when_redis_url_is_set() {
    let Some(redis) = common::service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let server = start(&[
        ("REDIS_URL", redis.as_str()),
        ("SESSION_STORAGE", "database"),
    ]);
    sign_in_me_sign_out(&server, &common::unique_name("redis_demo_user")).await;
}

#[tokio::test]
async fn runs_on_redis_alone_in_secondary_only_mode() {
    let Some(redis) = common::service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    let server = start(&[
        ("REDIS_URL", redis.as_str()),
        ("SESSION_STORAGE", "secondary-only"),
        ("DATABASE_URL", "sqlite:/nonexistent-dir/never-opened.db"),
    ]);
    sign_in_me_sign_out(&server, &common::unique_name("redis_only_user")).await;
}

#[test]
fn secondary_only_with_unreachable_redis_stops_at_start() {
    let output = Command::new(example_binary())
        .env_clear()
        .env("PORT", "0")
        .env("SESSION_STORAGE", "secondary-only")
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error:") && l.contains("REDIS_URL")),
        "{stderr}"
    );
}

/// The `session_data` cookie names `sign-in` sets under `SESSION_COOKIE_CACHE_MAX_AGE`.
async fn cache_cookies_after_sign_in(max_age: &str) -> Vec<String> {
    let server = start(&[("SESSION_COOKIE_CACHE_MAX_AGE", max_age)]);
    let signed_in = client()
        .post(format!("{}/api/auth/sign-in", server.base))
        .json(&json!({"userId": "carol"}))
        .send_ok()
        .await;
    assert_eq!(signed_in.status(), 200);
    signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .filter(|c| c.starts_with("tas.session_data"))
        .collect()
}

#[tokio::test]
async fn cookie_cache_follows_session_cookie_cache_max_age() {
    let on = cache_cookies_after_sign_in("120").await;
    assert_eq!(on.len(), 1, "{on:?}");
    assert!(on[0].contains("Max-Age=120"), "{on:?}");
    let off = cache_cookies_after_sign_in("0").await;
    assert!(off.iter().all(|c| c.contains("Max-Age=0")), "{off:?}");
}

#[test]
fn passwords_in_database_and_redis_urls_are_never_printed() {
    let Some(redis) = common::service_url("REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    // The live Redis, with credentials it will refuse; and places that answer nothing.
    let host = redis
        .split("://")
        .nth(1)
        .unwrap()
        .rsplit('@')
        .next()
        .unwrap()
        .trim_end_matches('/');
    let live_redis = format!("redis://user:s3cret@{host}");
    let cases: &[&[(&str, &str)]] = &[
        // Database mode: Redis refuses the password, the server starts on the database.
        &[("REDIS_URL", &live_redis)],
        &[("REDIS_URL", "redis://user:s3cret@127.0.0.1:1")],
        &[("REDIS_URL", "redis://:s3cret@127.0.0.1:1/0?password=s3cret")],
        // Redis alone: refusing it stops the server with an error line.
        &[
            ("REDIS_URL", &live_redis),
            ("SESSION_STORAGE", "secondary-only"),
        ],
        &[(
            "DATABASE_URL",
            "postgres://postgres:s3cret@127.0.0.1:1/test",
        )],
        &[(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/test?password=s3cret",
        )],
        &[("DATABASE_URL", "mysql://root:s3cret@127.0.0.1/x")],
    ];
    for env in cases {
        let (stdout, stderr) = common::demo::output(env, std::time::Duration::from_millis(1500));
        assert!(
            !stdout.contains("s3cret") && !stderr.contains("s3cret"),
            "{env:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        // The URL is still shown, with the password masked, where it explains something.
        if stderr.contains("redis://") || stderr.contains("mysql://") {
            assert!(stderr.contains(":***@"), "{env:?}\n{stderr}");
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_stops_the_server_gracefully_like_ctrl_c() {
    let mut server = start(&[]);
    // Serving first, so the signal arrives at a running server.
    let health = client()
        .get(format!("{}/healthz", server.base))
        .send_ok()
        .await;
    assert_eq!(health.status(), 200);
    let status = server.terminate();
    // Killed by the signal, the process would have no exit code at all.
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// DEMO_SERVER.md: an `Authorization` value that is not one of our signed tokens is
/// ignored (the cookie decides), and it does not exempt the request from the cross-site
/// rule.
#[tokio::test]
async fn a_gateways_jwt_beside_the_cookie_is_ignored_and_exempts_nothing() {
    let server = start(&[]);
    let base = &server.base;
    let http = client(); // keeps the session cookie
    let jwt = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJnYXRld2F5In0.c2lnbmF0dXJl";
    let signed_in = http
        .post(format!("{base}/api/auth/sign-in"))
        .json(&json!({"userId": "alice"}))
        .send_ok()
        .await;
    assert_eq!(signed_in.status(), 200);

    let me = http
        .get(format!("{base}/api/me"))
        .header("authorization", jwt)
        .send_ok()
        .await;
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.unwrap()["userId"], "alice");

    let cross_site = http
        .post(format!("{base}/api/auth/sign-out"))
        .header("authorization", jwt)
        .header("origin", "https://evil.example")
        .send_ok()
        .await;
    assert_eq!(cross_site.status(), 403);
    let still = http.get(format!("{base}/api/me")).send_ok().await;
    assert_eq!(still.status(), 200, "the session survived");
}

/// DEMO_SERVER.md's field policy: the browser writes preferences, never `role` (set at
/// sign-in) nor `impersonatedBy`.
#[tokio::test]
async fn the_demo_lets_a_client_write_preferences_but_not_its_role() {
    let server = start(&[]);
    let base = &server.base;
    let http = client();
    let signed_in = http
        .post(format!("{base}/api/auth/sign-in"))
        .json(&json!({"userId": "alice", "fields": {"role": "member"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    let update = |body: Value| {
        http.post(format!("{base}/api/auth/update-session"))
            .json(&body)
            .send()
    };
    for body in [
        json!({"role": "admin"}),
        json!({"Role": "admin"}),
        json!({"impersonatedBy": "root"}),
    ] {
        let refused = update(body.clone()).await.unwrap();
        assert_eq!(refused.status(), 403, "{body}");
    }
    let allowed = update(json!({"activeOrganizationId": "org_1"}))
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    let shown: Value = http
        .get(format!("{base}/api/auth/get-session"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["session"]["role"], "member", "{shown}");
    assert_eq!(shown["session"]["activeOrganizationId"], "org_1");
    assert!(shown["session"].get("impersonatedBy").is_none());
}

/// DEMO_SERVER.md's `SESSION_RATE_LIMIT=3/10`: the 4th sign-in is 429 with both retry
/// headers and no cookie, the session of the 3rd still works, and the other
/// `/api/auth/*` routes have ten times the budget.
#[tokio::test]
async fn session_rate_limit_refuses_the_fourth_sign_in_with_retry_after() {
    let server = start(&[("SESSION_RATE_LIMIT", "3/10")]);
    let base = &server.base;
    let http = client();
    for n in 0..3 {
        let reply = http
            .post(format!("{base}/api/auth/sign-in"))
            .json(&json!({"userId": format!("user{n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
    }
    let limited = http
        .post(format!("{base}/api/auth/sign-in"))
        .json(&json!({"userId": "user3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    assert_eq!(
        limited.headers()["x-retry-after"],
        retry.to_string().as_str()
    );
    assert!(limited.headers().get("set-cookie").is_none());
    assert_eq!(
        limited.json::<Value>().await.unwrap()["code"],
        "TOO_MANY_REQUESTS"
    );
    // The cookie jar still holds user2's session, and get-session is under its own budget.
    for _ in 0..5 {
        let shown: Value = http
            .get(format!("{base}/api/auth/get-session"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(shown["session"]["userId"], "user2");
    }
}

/// Issue 18, item 5 (DEMO_SERVER.md, the `REDIS_URL` row): a comma-separated list of URLs
/// is a Redis Cluster — here 3 primaries on free ports, in both storage modes, sessions
/// landing in the cluster — and one URL that points at a node of it stops the server at
/// start with one line saying to list the nodes, a non-zero exit and no panic (before,
/// the database mode started anyway and "served from the database until it does", for
/// ever).
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_comma_separated_redis_url_is_a_cluster_and_one_cluster_node_stops_the_start() {
    let Some(cluster) = crate::redis_support::RedisCluster::start(3, 0) else {
        return;
    };
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3, "{urls:?}");
    let list = urls.join(",");
    for storage in ["database", "secondary-only"] {
        let server = start(&[("REDIS_URL", list.as_str()), ("SESSION_STORAGE", storage)]);
        sign_in_me_sign_out(&server, &common::unique_name("cluster_user")).await;
    }
    assert!(
        !cluster.keys("tas:v1:").is_empty(),
        "the sessions (and their tombstones) are in the cluster"
    );
    for storage in ["database", "secondary-only"] {
        let output = Command::new(example_binary())
            .env_clear()
            .env("PORT", "0")
            .env("DATABASE_URL", "memory")
            .env("SESSION_STORAGE", storage)
            .env("REDIS_URL", &urls[1])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{storage}: {stderr}");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("error:") && l.contains("list the cluster's nodes")),
            "{storage}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{storage}: {stderr}");
    }
}
