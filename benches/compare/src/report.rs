//! The markdown a run prints: the targets side by side, then every scenario in
//! detail, with what the reader needs to trust (or not) the figures.

use std::fmt::Write as _;
use std::time::Duration;

use crate::options::Options;
use crate::scenario::{Scenario, TARGETS};
use crate::summary::{Basis, Sample, Summary, judge, summarise};

/// What the header of the report says about the run.
pub(crate) struct RunInfo {
    pub(crate) options: Options,
    pub(crate) client: &'static str,
    pub(crate) server_cpu: Option<usize>,
    pub(crate) client_cpu: Option<usize>,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) wall: Duration,
    /// The flags this run was given, to rerun it.
    pub(crate) args: String,
}

fn cell(summary: Option<&Summary>, basis: Basis) -> String {
    summary.map_or("not run".to_owned(), |s| {
        format!("{:.2}× · {:.1} µs", basis.of(s), s.cpu)
    })
}

pub(crate) fn render(info: &RunInfo, measured: &[(Scenario, Vec<Sample>)]) -> String {
    let summaries = summarise(measured);
    let find = |scenario: Scenario| summaries.iter().find(|s| s.scenario == scenario);
    let Some(bare) = find(Scenario::Bare) else {
        return "no bare measurement\n".to_owned();
    };
    let basis = Basis::for_run(bare);
    let options = &info.options;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- tas-compare {}: {} rounds × {} s, {} connections, {} users, client {}, server on \
         core {}, client on core {}; load average {} before, {} after; {:.0} s in all -->",
        info.args,
        options.rounds,
        options.seconds,
        options.connections,
        options.users,
        info.client,
        core(info.server_cpu),
        core(info.client_cpu),
        info.load_before,
        info.load_after,
        info.wall.as_secs_f64(),
    );
    let _ = writeln!(
        out,
        "\nMachine: {}, {} cores. Bare route: {:.0} req/s, {:.1} µs server CPU per request.\n",
        cpu_model(),
        core_count(),
        bare.per_second,
        bare.cpu,
    );
    let _ = writeln!(
        out,
        "| path | tower-sessions 0.14 | ours | target | status |\n|---|---|---|---|---|"
    );
    for target in &TARGETS {
        let Some(ours) = find(target.ours) else {
            continue;
        };
        let peer = find(target.peer);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            target.path,
            cell(peer, basis),
            cell(Some(ours), basis),
            target.text,
            judge(target, ours, peer, bare, basis),
        );
    }
    let _ = match basis {
        Basis::Throughput => writeln!(
            out,
            "\nEach cell: throughput as a ratio to the bare route of the same round · server \
             CPU per request (median of {} rounds).\n",
            options.rounds
        ),
        Basis::Cpu => writeln!(
            out,
            "\nEach cell: **CPU ratio** (bare's server CPU per request over the scenario's, same \
             round) · server CPU per request (median of {} rounds). The bare server used only \
             {:.0}% of its core, so something else (other processes on the machine, or the load \
             generator) limited throughput and throughput ratios would only measure that; the \
             CPU ratio is what throughput shows once the server has its core to itself. Both \
             are in the table below.\n",
            options.rounds,
            bare.server_busy * 100.0
        ),
    };
    let _ = writeln!(
        out,
        "| scenario | setup | req/s | ratio to bare (per round) | µs CPU/req | over bare | \
         CPU ratio | server / client busy | Redis cmds/req | Redis µs CPU/req | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for s in &summaries {
        let per_round: Vec<String> = s.ratios.iter().map(|r| format!("{r:.2}")).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2} ({}) | {:.1} | {:+.1} | {:.2} | {:.0}% / {:.0}% | {} | {} | {} |",
            s.scenario.name(),
            s.scenario.describe(),
            s.per_second,
            s.ratio,
            per_round.join(", "),
            s.cpu,
            s.cpu - bare.cpu,
            s.cpu_ratio,
            s.server_busy * 100.0,
            s.client_busy * 100.0,
            s.redis_commands
                .map_or("–".to_owned(), |c| format!("{c:.2}")),
            s.redis_cpu.map_or("–".to_owned(), |c| format!("{c:.1}")),
            s.errors,
        );
    }
    let _ = writeln!(
        out,
        "\nCPU ratio: bare's server CPU per request over the scenario's (same round, median), \
         the throughput ratio a server with a core to itself would show. Busy: share of one core the server and the \
         load generator used (near 100%: that side was the bottleneck). Redis figures count \
         every client of that Redis."
    );
    out
}

fn core(cpu: Option<usize>) -> String {
    cpu.map_or("any".to_owned(), |c| c.to_string())
}

/// All the machine's cores (this process is pinned to one, so not its own affinity).
fn core_count() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| info.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}
