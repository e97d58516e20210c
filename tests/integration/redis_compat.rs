//! Which servers the Redis tier accepts: a 6.2 command set runs every script, an older
//! server and a Redis Cluster node are refused at connect with a message that says why.
#![cfg(feature = "redis")]

use crate::common;
use crate::redis_support;

use std::time::Duration as StdDuration;

use common::*;
use http::StatusCode;
use redis::Commands;
use redis_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower_auth_session::secondary::{MINIMUM_REDIS_VERSION, RedisStorage};
use tower_auth_session::{MemoryStore, SessionManager};

/// Commands Redis 7.0 added, which a 6.2-compatible server (KeyDB, older managed Redis)
/// does not have; `rename-command … ""` removes them from a 7.x server.
const NEWER_THAN_6_2: [&str; 14] = [
    "EXPIRETIME",
    "PEXPIRETIME",
    "SINTERCARD",
    "ZINTERCARD",
    "LMPOP",
    "BLMPOP",
    "ZMPOP",
    "BZMPOP",
    "LCS",
    "FCALL",
    "FCALL_RO",
    "SPUBLISH",
    "EVAL_RO",
    "EVALSHA_RO",
];

fn error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}

#[tokio::test]
async fn every_script_runs_on_a_redis_6_2_command_set() {
    let mut args = Vec::new();
    for command in NEWER_THAN_6_2 {
        args.extend(["--rename-command", command, ""]);
    }
    let Some(server) = RedisServer::start_with(&args) else {
        return;
    };
    let mut conn = server.connection();
    let gone: redis::RedisResult<i64> = redis::cmd("PEXPIRETIME").arg("x").query(&mut conn);
    assert!(gone.is_err(), "the 7.0 command is still there");
    let prefix = unique_prefix();
    let redis = RedisStorage::builder(server.url())
        .key_prefix(&prefix)
        .connect()
        .await
        .unwrap();

    // Primary + secondary: write-through, refresh on every request, each kind of revoke.
    let manager = SessionManager::builder(MemoryStore::new())
        .secondary_storage(redis.clone())
        .secret(SECRET)
        .update_age(StdDuration::ZERO)
        .build()
        .unwrap();
    let app = app(&manager);
    for round in 0..3 {
        let pair = sign_in(&app, &manager, "alice").await;
        let me = send(&app, get("/me", Some(&pair))).await;
        assert_eq!(me.status, StatusCode::OK);
        let id = me.json()["sessionId"].as_str().unwrap().to_owned();
        match round {
            0 => assert!(manager.revoke(&id).await.unwrap()),
            1 => assert_eq!(manager.revoke_user("alice").await.unwrap(), 1),
            _ => assert_eq!(
                send(&app, post("/sign-out", Some(&pair))).await.status,
                StatusCode::OK
            ),
        }
        assert_eq!(
            send(&app, get("/me", Some(&pair))).await.status,
            StatusCode::UNAUTHORIZED
        );
        let pointer: Option<String> = conn.get(format!("{prefix}i:{id}")).unwrap();
        assert_eq!(pointer.as_deref(), Some("-"), "round {round}: no tombstone");
        let ttl: i64 = conn.pttl(format!("{prefix}i:{id}")).unwrap();
        assert!(ttl > 0, "round {round}: the tombstone never expires");
        let generation_ttl: i64 = conn.pttl(format!("{prefix}u:{{alice}}:gen")).unwrap();
        assert!(generation_ttl > 0, "round {round}: {generation_ttl}");
    }

    // Redis alone: create, update, list, delete.
    let alone = SessionManager::builder(redis.clone())
        .secret(SECRET)
        .update_age(StdDuration::ZERO)
        .build()
        .unwrap();
    let app = common::app(&alone);
    let pair = sign_in(&app, &alone, "bob").await;
    assert_eq!(
        send(&app, get("/me", Some(&pair))).await.status,
        StatusCode::OK
    );
    assert_eq!(alone.list_user_sessions("bob").await.unwrap().len(), 1);
    assert_eq!(alone.revoke_user("bob").await.unwrap(), 1);
    assert_eq!(
        send(&app, get("/me", Some(&pair))).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(redis.metrics().failures, 0);
}

/// A server that speaks just enough RESP for a client to connect: `PING`, `INFO` (with
/// `info`), and an error for anything else.
async fn fake_server(info: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some((command, used)) = parse_command(&buffer) {
                        buffer.drain(..used);
                        let reply = match command.first().map(|c| c.to_ascii_uppercase()) {
                            Some(c) if c == "PING" => "+PONG\r\n".to_owned(),
                            Some(c) if c == "INFO" => format!("${}\r\n{info}\r\n", info.len()),
                            _ => "-ERR unknown command\r\n".to_owned(),
                        };
                        if socket.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    url
}

/// One `*N $len arg …` command from the front of `buffer`, and the bytes it took.
fn parse_command(buffer: &[u8]) -> Option<(Vec<String>, usize)> {
    let line = |at: usize| -> Option<(&[u8], usize)> {
        let end = buffer[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&buffer[at..end], end + 2))
    };
    let (header, mut at) = line(0)?;
    let count: usize = std::str::from_utf8(header.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        let (length, next) = line(at)?;
        let length: usize = std::str::from_utf8(length.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        if buffer.len() < next + length + 2 {
            return None;
        }
        args.push(String::from_utf8_lossy(&buffer[next..next + length]).into_owned());
        at = next + length + 2;
    }
    Some((args, at))
}

#[tokio::test]
async fn a_server_older_than_6_2_is_refused_at_connect_naming_the_minimum() {
    let old = fake_server("# Server\r\nredis_version:6.0.16\r\nredis_mode:standalone\r\n").await;
    let error = RedisStorage::builder(&old).connect().await.unwrap_err();
    let text = error_text(&error);
    assert_eq!(MINIMUM_REDIS_VERSION, "6.2.0");
    assert!(
        text.contains("6.0.16") && text.contains("minimum, Redis 6.2.0"),
        "{text}"
    );
    assert!(text.contains("not supported"), "{text}");

    // Built without connecting, it refuses on the first call, the same way.
    let lazy = RedisStorage::builder(&old).build().unwrap();
    let manager = SessionManager::builder(MemoryStore::new())
        .secondary_storage(lazy.clone())
        .secret(SECRET)
        .build()
        .unwrap();
    let app = app(&manager);
    let pair = sign_in(&app, &manager, "alice").await;
    assert_eq!(
        send(&app, get("/me", Some(&pair))).await.status,
        StatusCode::OK,
        "the store still serves"
    );
    assert!(lazy.metrics().failures >= 1);

    // The same fake answering a 6.2 version is accepted.
    let new = fake_server("# Server\r\nredis_version:6.2.0\r\n").await;
    RedisStorage::builder(&new).connect().await.unwrap();
}

#[tokio::test]
async fn a_redis_cluster_node_is_refused_at_start_with_a_clear_message() {
    let Some(node) = RedisServer::start_with(&["--cluster-enabled", "yes"]) else {
        return;
    };
    let mut conn = node.connection();
    let info: String = redis::cmd("INFO").arg("cluster").query(&mut conn).unwrap();
    assert!(info.contains("cluster_enabled:1"), "{info}");
    let error = RedisStorage::builder(node.url())
        .connect()
        .await
        .unwrap_err();
    let text = error_text(&error);
    assert!(
        text.contains("Redis Cluster node") && text.contains("cluster_enabled:1"),
        "{text}"
    );
    // The plain server next to it is fine.
    let Some(plain) = RedisServer::start() else {
        return;
    };
    RedisStorage::builder(plain.url()).connect().await.unwrap();
}
