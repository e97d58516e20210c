//! `wrk` as the load generator, when installed and chosen (`--client wrk|auto`).
//!
//! It inherits the driver's core. All its connections send the first user's cookie (wrk
//! takes fixed headers), which makes no difference to a session lookup's cost.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::client::Load;

pub(crate) fn installed() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("wrk"))
}

pub(crate) fn measure(
    addr: SocketAddr,
    path: &str,
    cookie: Option<&str>,
    connections: usize,
    duration: Duration,
) -> Result<Load, String> {
    let seconds = duration.as_secs_f64().round().max(1.0) as u64;
    let mut command = Command::new("wrk");
    command
        .arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"));
    if let Some(cookie) = cookie {
        command.arg("-H").arg(format!("Cookie: {cookie}"));
    }
    let output = command
        .arg(format!("http://{addr}{path}"))
        .output()
        .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!("wrk failed: {text}"));
    }
    parse(&text).ok_or_else(|| format!("could not read wrk's output: {text}"))
}

/// Reads `N requests in 3.00s` and the error lines of wrk's summary.
fn parse(text: &str) -> Option<Load> {
    let summary = text.lines().find(|l| l.contains(" requests in "))?;
    let mut words = summary.split_whitespace();
    let total: u64 = words.next()?.parse().ok()?;
    let seconds: f64 = words
        .nth(2)?
        .trim_end_matches(',')
        .trim_end_matches('s')
        .parse()
        .ok()?;
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>().ok()?;
        } else if let Some(list) = line.strip_prefix("Socket errors:") {
            errors += list
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Some(Load {
        requests: total.saturating_sub(errors),
        errors,
        elapsed: Duration::from_secs_f64(seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_and_errors_are_read() {
        let text = "Running 3s test @ http://127.0.0.1:1/me\n  1 threads and 32 connections\n\
                    \x20 150000 requests in 3.00s, 20.00MB read\n\
                    \x20 Socket errors: connect 0, read 2, write 0, timeout 1\n\
                    \x20 Non-2xx or 3xx responses: 7\nRequests/sec:  50000.00\n";
        let load = parse(text).unwrap();
        assert_eq!((load.requests, load.errors), (149_990, 10));
        assert_eq!(load.elapsed, Duration::from_secs(3));
        assert!(parse("nothing").is_none());
    }
}
