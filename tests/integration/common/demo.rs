//! The demo server (`examples/server.rs`) as a child process, for black-box tests.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub fn example_binary() -> PathBuf {
    built_example("server", "--all-features")
}

/// Builds `examples/<name>.rs` once per test run (with `features`, e.g. `--all-features`)
/// and returns the path of its binary.
pub fn built_example(name: &str, features: &str) -> PathBuf {
    // Build it first: `cargo test --test example_server` alone does not build examples, and a
    // stale binary would test old code. Cargo has released its build lock while tests run.
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == name) {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "--example", name, features])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the example {name} failed");
        built.push(name.to_owned());
    }
    // target/<profile>/deps/<this test> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join(name)
}

/// Starts another example (built with all features) on a free port (`PORT=0`) and waits
/// for its `listening on <url>` line.
pub fn start_example(name: &str, env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(built_example(name, "--all-features"));
    command
        .env_clear()
        .env("PORT", "0")
        .env("RUST_LOG", "warn")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    spawn(command, dir)
}

pub struct Server {
    child: Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Sends SIGTERM and waits (at most 10 s) for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not stop within 10 s of SIGTERM"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server on a free port with an SQLite file in a temp dir and no other service.
pub fn start(extra_env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(example_binary());
    command
        .env_clear()
        .env("PORT", "0")
        .env(
            "DATABASE_URL",
            format!("sqlite:{}", dir.path().join("demo.db").display()),
        )
        .env("RUST_LOG", "warn")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in extra_env {
        command.env(k, v);
    }
    spawn(command, dir)
}

fn spawn(mut command: Command, dir: tempfile::TempDir) -> Server {
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    Server {
        child,
        base,
        _dir: dir,
    }
}

/// What the server printed, on stdout and stderr, from its start until it either exited or
/// said it was listening and then ran for `linger` more (it is killed then).
pub fn output(env: &[(&str, &str)], linger: std::time::Duration) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut command = Command::new(example_binary());
    command
        .env_clear()
        .env("PORT", "0")
        .env("DATABASE_URL", "memory")
        .env("RUST_LOG", "debug")
        .current_dir(dir.path())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        if stdout.contains("listening on") {
            std::thread::sleep(linger);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server neither started nor stopped in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    (
        std::fs::read_to_string(&out_path).unwrap(),
        std::fs::read_to_string(&err_path).unwrap(),
    )
}

/// `send().await.unwrap()` for a request to a server the test started: not reaching it is
/// the test's failure, so the tests' request chains say only what they send.
pub trait SendOk {
    fn send_ok(self) -> impl std::future::Future<Output = reqwest::Response>;
}

impl SendOk for reqwest::RequestBuilder {
    async fn send_ok(self) -> reqwest::Response {
        self.send().await.expect("the server answers")
    }
}

/// The status of `GET url` with `client`'s cookies: "is this browser still signed in?".
pub async fn status_of(client: &reqwest::Client, url: String) -> reqwest::StatusCode {
    client.get(url).send_ok().await.status()
}
