//! What a server must be for the scripts to run: checked on every new connection, so a
//! wrong server fails at start (or on the first call) with a message that says what is
//! wrong, instead of as a stream of script errors.
//!
//! - **Version.** The scripts need `SET … PXAT` (Redis 6.2) and nothing newer, so KeyDB,
//!   Dragonfly, Valkey and older managed Redis offerings pass. `redis_version` is what
//!   every one of them reports in `INFO server`.
//! - **Not a cluster node.** A node of a Redis Cluster answers most commands, then
//!   `MOVED` for three keys in four; the single-node client refuses it at once.

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{ErrorKind, RedisError, RedisResult};

/// The oldest Redis the scripts are written for (`SET … PXAT` arrived in 6.2.0).
pub const MINIMUM_REDIS_VERSION: &str = "6.2.0";
const MINIMUM: (u32, u32, u32) = (6, 2, 0);

/// The description every refusal carries, so the caller can tell it from an outage.
pub(super) const REFUSED: &str = "redis server not supported by tower-auth-session";

/// Asks the server (`INFO server`, `INFO cluster`) and refuses one this client cannot
/// use. A server that does not answer `INFO` (a proxy,
/// a renamed command) is accepted with a warning: the scripts then tell.
pub(super) async fn check(connection: &mut MultiplexedConnection) -> RedisResult<()> {
    // Two short sections in one round trip (a plain `INFO` is ten sections).
    let sections = redis::pipe()
        .cmd("INFO")
        .arg("server")
        .cmd("INFO")
        .arg("cluster")
        .query_async::<(String, String)>(connection)
        .await;
    let info = match sections {
        Ok((server, cluster)) => server + &cluster,
        Err(error) if error.kind() == ErrorKind::ResponseError => {
            tracing::warn!(%error, "redis did not answer INFO; its version is not checked");
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    refuse_unless(verdict(&info, false))
}

/// [`check`] for a cluster: one node (any) answers for all, which must be a cluster node.
pub(super) async fn check_cluster(connection: &mut ClusterConnection) -> RedisResult<()> {
    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
    let info = match connection.route_command(&redis::cmd("INFO"), routing).await {
        Ok(info) => redis::from_redis_value::<String>(&info)?,
        Err(error) if error.kind() == ErrorKind::ResponseError => {
            tracing::warn!(%error, "redis did not answer INFO; its version is not checked");
            return Ok(());
        }
        Err(error) => return Err(error),
    };
    refuse_unless(verdict(&info, true))
}

fn refuse_unless(verdict: Result<(), String>) -> RedisResult<()> {
    verdict.map_err(|detail| RedisError::from((ErrorKind::ClientError, REFUSED, detail)))
}

/// Whether an error is a refusal by [`check`].
pub(super) fn is_refusal(error: &RedisError) -> bool {
    error.kind() == ErrorKind::ClientError && error.to_string().contains(REFUSED)
}

/// Reads an `INFO` answer: `Err` with the reason when the server will not do.
pub(super) fn verdict(info: &str, want_cluster: bool) -> Result<(), String> {
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.trim_end().strip_prefix(name)?.strip_prefix(':'))
    };
    let cluster = field("cluster_enabled") == Some("1");
    if want_cluster && !cluster {
        return Err(
            "this server is not a Redis Cluster node (cluster_enabled is not 1): \
             give RedisStorage::builder its URL instead of RedisStorage::cluster"
                .to_owned(),
        );
    }
    if cluster && !want_cluster {
        return Err(
            "this is a Redis Cluster node (cluster_enabled:1); the single-node client \
             cannot use it: use RedisStorage::cluster([...]) (or a redis+cluster:// URL)"
                .to_owned(),
        );
    }
    let Some(version) = field("redis_version") else {
        tracing::warn!("redis INFO holds no redis_version; its version is not checked");
        return Ok(());
    };
    match parse_version(version) {
        Some(found) if found >= MINIMUM => Ok(()),
        _ => Err(format!(
            "redis_version {version} is older than the minimum, Redis {MINIMUM_REDIS_VERSION} \
             (or a server compatible with it)"
        )),
    }
}

/// `7.0.15` → (7, 0, 15); a missing patch or minor counts as 0, a suffix (`-rc1`) is
/// ignored.
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.split('.').map(|part| {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next().unwrap_or(Some(0))?;
    let patch = parts.next().unwrap_or(Some(0))?;
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_real_servers() {
        let info = |v: &str| format!("# Server\r\nredis_version:{v}\r\nredis_mode:standalone\r\n");
        // Redis, KeyDB, old and new Dragonfly, Valkey.
        for ok in [
            "6.2.0",
            "6.2.14",
            "6.3.4",
            "7.0.15",
            "7.4.0",
            "8.0.0-rc1",
            "7.2.4",
        ] {
            assert_eq!(verdict(&info(ok), false), Ok(()), "{ok}");
        }
        for old in ["6.0.16", "5.0.7", "6.1.99", "2.8", "garbage"] {
            let error = verdict(&info(old), false).unwrap_err();
            assert!(error.contains("6.2.0") && error.contains(old), "{error}");
        }
    }

    #[test]
    fn a_cluster_node_is_refused_and_a_silent_server_accepted() {
        let node = "redis_version:7.0.15\r\n# Cluster\r\ncluster_enabled:1\r\n";
        assert!(
            verdict(node, false)
                .unwrap_err()
                .contains("cluster_enabled:1")
        );
        assert_eq!(verdict(node, true), Ok(()));
        let single = "# Cluster\r\ncluster_enabled:0\r\n";
        assert_eq!(verdict(single, false), Ok(()));
        assert!(
            verdict(single, true)
                .unwrap_err()
                .contains("not a Redis Cluster")
        );
        assert_eq!(verdict("", false), Ok(()));
    }
}
