//! Redis test plumbing: the shared Redis (unique key prefix per test), test-owned
//! `redis-server` processes that a test may flush, kill and restart, a TCP proxy that a
//! test can cut, and readers for keys and `INFO commandstats`.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower_auth_session::secondary::RedisStorage;

use crate::common::{service_url, unique_name};

mod cluster;
pub use cluster::RedisCluster;

/// The shared Redis, or `None` (skip) when it is not running.
pub fn shared_redis() -> Option<String> {
    service_url("REDIS_URL", "redis://127.0.0.1:6379")
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("tas:test:{}:v1:", unique_name("redis"))
}

/// A storage over `url` with a short timeout, so fault tests stay quick.
pub fn storage(url: &str, prefix: &str) -> RedisStorage {
    RedisStorage::builder(url)
        .key_prefix(prefix)
        .timeout(Duration::from_millis(200))
        .probe_interval(Duration::from_millis(250))
        .build()
        .unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `redis-server` this test owns: no persistence, loopback only, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Arguments after the defaults (`--cluster-enabled yes`, `--rename-command …`).
    extra: Vec<String>,
    /// Its working directory (a cluster node writes its `nodes.conf` there).
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one on a free port, or `None` (skip; a failure with
    /// `TAS_REQUIRE_SERVICES=1`) when `redis-server` is not installed.
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// [`start`](Self::start) with more `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Option<Self> {
        let cluster = extra.contains(&"--cluster-enabled");
        let mut server = Self {
            port: free_port(),
            child: None,
            extra: extra.iter().map(|&arg| arg.to_owned()).collect(),
            dir: tempfile::tempdir().unwrap(),
        };
        // A free port can be taken by a parallel test before the server binds it, and a
        // cluster node also needs port + 10000 (so the port must stay under 55536): try
        // a few ports before calling redis-server unavailable.
        let mut started = false;
        for _ in 0..8 {
            while cluster && server.port > 55_535 {
                server.port = free_port();
            }
            if server.spawn() {
                started = true;
                break;
            }
            server.kill();
            server.port = free_port();
        }
        if !started {
            if std::env::var("TAS_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("redis-server could not be started and TAS_REQUIRE_SERVICES=1");
            }
            eprintln!("skipping: redis-server is not available");
            return None;
        }
        Some(server)
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(&self.extra)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else { return false };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            // Exited already (its port was taken): no use waiting.
            if let Some(child) = self.child.as_mut() {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// Whether this server runs (was not killed).
    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// Kills this server (by its pid) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process (`SIGSTOP`): connections stay open but nothing answers, the
    /// worst kind of outage for a client.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Starts it again on the same port (empty: there is no persistence).
    pub fn restart(&mut self) {
        self.kill();
        assert!(self.spawn(), "redis-server did not come back");
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.thaw();
        }
        self.kill();
    }
}

/// A sync connection to `url`.
pub fn connection(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// `INFO commandstats` as command → calls.
pub fn command_calls(conn: &mut redis::Connection) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("cmdstat_")?;
            let (name, stats) = rest.split_once(':')?;
            let calls = stats.split(',').next()?.strip_prefix("calls=")?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

/// How many calls of each command happened between two snapshots (non-zero only).
pub fn delta(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> HashMap<String, u64> {
    after
        .iter()
        .filter_map(|(name, calls)| {
            let d = calls - before.get(name).copied().unwrap_or(0);
            (d > 0).then(|| (name.clone(), d))
        })
        .collect()
}

/// Every key under `prefix`.
pub fn keys(conn: &mut redis::Connection, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(format!("{prefix}*"))
        .arg("COUNT")
        .arg(1000)
        .clone()
        .iter(conn)
        .unwrap()
        .collect();
    out.sort();
    out
}

/// The session value key of a token hash.
pub fn session_key(prefix: &str, hash_hex: &str) -> String {
    format!("{prefix}s:{hash_hex}")
}

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    /// Every connection dropped, new ones refused (Redis down, a partition with RSTs).
    Cut,
    /// Connections accepted and held, nothing forwarded either way (a firewall that drops
    /// packets, a frozen host).
    Blackhole,
}

/// A TCP proxy to `target` (Redis, PostgreSQL, any TCP service) that a test can cut,
/// blackhole and restore.
pub struct TcpProxy {
    pub port: u16,
    mode: watch::Sender<Mode>,
}

impl TcpProxy {
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, mode_rx) = watch::channel(Mode::Up);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut mode_rx = mode_rx.clone();
                let now = *mode_rx.borrow_and_update();
                match now {
                    Mode::Cut => {
                        let _ = client.shutdown().await;
                        continue;
                    }
                    Mode::Blackhole => {
                        // Hold it, say nothing, drop it once the proxy changes mode.
                        tokio::spawn(async move {
                            let _ = mode_rx.changed().await;
                            drop(client);
                        });
                        continue;
                    }
                    Mode::Up => {}
                }
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = mode_rx.changed() => {}
                    }
                    if *mode_rx.borrow() == Mode::Blackhole {
                        // Stop forwarding but keep both sockets open until the next change.
                        let _ = mode_rx.changed().await;
                    }
                });
            }
        });
        Self { port, mode }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>`, to put in any URL (PostgreSQL's too).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn set(&self, mode: Mode) {
        self.mode.send_if_modified(|current| {
            let changed = *current != mode;
            *current = mode;
            changed
        });
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.set(Mode::Cut);
    }

    /// Freezes every open connection and accepts new ones that never get an answer.
    pub fn blackhole(&self) {
        self.set(Mode::Blackhole);
    }

    /// Forwards again (connections that were cut or held are gone).
    pub fn restore(&self) {
        self.set(Mode::Up);
    }
}

/// The raw token inside a signed `session_token` cookie value (`kid.token.mac`).
pub fn raw_token(cookie_value: &str) -> String {
    cookie_value.split('.').nth(1).unwrap().to_owned()
}

/// SHA-256 hex of a raw token (base64url), as Redis keys use it.
pub fn token_hash_hex(raw_token_b64: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw_token_b64)
        .unwrap();
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
