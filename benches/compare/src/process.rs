//! A scenario's server as a child process: started from this binary, its address read
//! from its first line, stopped when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::scenario::Scenario;
use crate::serve::ServeConfig;

/// How long a server may take to connect to its stores and listen.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct Server {
    pub(crate) scenario: Scenario,
    child: Child,
    stdin: Option<ChildStdin>,
    pub(crate) addr: SocketAddr,
    /// One prebuilt request per signed-in user (one without a cookie if none).
    pub(crate) requests: Arc<Vec<Vec<u8>>>,
    /// The first user's `Cookie` header, for wrk.
    pub(crate) first_cookie: Option<String>,
}

impl Server {
    pub(crate) fn start(scenario: Scenario, config: &ServeConfig) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(config.to_args(scenario))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // A thread, so that a server stuck connecting to its store cannot hang the run.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = sender.send(BufReader::new(stdout).read_line(&mut line).map(|_| line));
        });
        let line = receiver.recv_timeout(START_TIMEOUT);
        let addr = match &line {
            Ok(Ok(line)) => line
                .trim()
                .strip_prefix("listening on ")
                .and_then(|a| a.parse::<SocketAddr>().ok()),
            _ => None,
        };
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(match line {
                Ok(Ok(_)) => "the server exited before listening (its error is above)".into(),
                Ok(Err(e)) => format!("reading the server's address: {e}"),
                Err(_) => format!("the server did not listen within {START_TIMEOUT:?}"),
            });
        };
        Ok(Self {
            scenario,
            child,
            stdin,
            addr,
            requests: Arc::new(Vec::new()),
            first_cookie: None,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing stdin asks it to exit; the kill is for one that hangs.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
