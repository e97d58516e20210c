//! Side-by-side load bench: tower-auth-session against tower-sessions over real HTTP.
//!
//! ```text
//! cargo run --release -p tas-compare -- --rounds 3 --seconds 3
//! cargo run --release -p tas-compare -- --scenarios ts-memory,ours-memory,ours-cache-memory
//! cargo run --release -p tas-compare -- --list
//! ```
//!
//! Every scenario is its own server process (this binary, `serve <scenario>`) serving the
//! same axum router — `GET /me` answers the signed-in user's id, `GET /ping` never looks at
//! the session, `POST /sign-in?user=..` mints the cookies — on one tokio worker pinned to
//! the first core. The load generator runs here, pinned to the second core: N keep-alive
//! connections with one request in flight each (or `wrk` when asked for / installed). Each
//! round runs every scenario for a few seconds, bare first; ratios are to the bare route of
//! the same round and the table shows the median of the rounds. Server CPU per request is
//! read from `/proc/<pid>/stat` around each run, Redis commands and Redis CPU per request
//! from `INFO commandstats` / `INFO cpu`. BENCHMARKS.md at the repository root explains the
//! figures; markdown goes to stdout, progress to stderr.

mod affinity;
mod client;
mod drive;
mod options;
mod process;
mod report;
mod scenario;
mod serve;
mod services;
mod summary;
mod usage;
mod wrk;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("serve") => serve::main(&args[1..]),
        _ => options::Options::parse(&args).and_then(drive::main),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tas-compare: {message}");
            ExitCode::FAILURE
        }
    }
}
