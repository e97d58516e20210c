//! Redis and PostgreSQL: whether they answer, and removing what a run left in them.

use std::time::Duration;

use tower_auth_session::redis;
use tower_auth_session::sqlx::{self, Connection, Executor};

use crate::usage::RedisProbe;

pub(crate) fn redis_answers(url: &str) -> Result<(), String> {
    let mut probe = RedisProbe::connect(url)?;
    redis::cmd("PING")
        .query::<String>(probe.connection())
        .map(drop)
        .map_err(|e| e.to_string())
}

pub(crate) async fn postgres_answers(url: &str) -> Result<(), String> {
    let connection = tokio::time::timeout(Duration::from_secs(3), sqlx::PgConnection::connect(url))
        .await
        .map_err(|_| "no answer within 3 s".to_owned())?
        .map_err(|e| e.to_string())?;
    connection.close().await.map_err(|e| e.to_string())
}

/// Deletes our keys (by prefix) and tower-sessions' (by session id: its store has no
/// prefix). Returns how many keys went.
pub(crate) fn clean_redis(url: &str, prefix: &str, peer_ids: &[String]) -> Result<usize, String> {
    let mut probe = RedisProbe::connect(url)?;
    let connection = probe.connection();
    let mut scan = redis::cmd("SCAN");
    scan.cursor_arg(0)
        .arg("MATCH")
        .arg(format!("{prefix}*"))
        .arg("COUNT")
        .arg(1000);
    let mut keys: Vec<String> = scan
        .iter::<String>(connection)
        .map_err(|e| e.to_string())?
        .collect();
    keys.extend(peer_ids.iter().cloned());
    let mut deleted = 0;
    for chunk in keys.chunks(500) {
        deleted += redis::cmd("DEL")
            .arg(chunk)
            .query::<usize>(connection)
            .map_err(|e| e.to_string())?;
    }
    Ok(deleted)
}

pub(crate) async fn drop_schemas(url: &str, schemas: &[&str]) -> Result<(), String> {
    let mut connection = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    for schema in schemas {
        // The names are ours (`tas_compare_*_<pid>`), never user input.
        connection
            .execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str())
            .await
            .map_err(|e| e.to_string())?;
    }
    connection.close().await.map_err(|e| e.to_string())
}
