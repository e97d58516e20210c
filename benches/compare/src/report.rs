//! Medians of the rounds, and the markdown the run prints: the targets side by
//! side, then every scenario in detail.

use std::fmt::Write as _;
use std::time::Duration;

use crate::client::Load;
use crate::options::Options;
use crate::scenario::{Scenario, TARGETS, Target};

/// Below this share of a core, the bare server was not the bottleneck.
const SATURATED: f64 = 0.8;

/// One scenario in one round.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) load: Load,
    /// Server CPU time over the measurement, µs.
    pub(crate) cpu_micros: f64,
    /// The load generator's CPU time over the measurement, µs.
    pub(crate) client_cpu_micros: f64,
    /// Redis commands and Redis CPU µs over the measurement, for scenarios that use it.
    pub(crate) redis: Option<(f64, f64)>,
}

impl Sample {
    pub(crate) fn per_second(&self) -> f64 {
        self.load.requests as f64 / self.load.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn cpu_micros_per_request(&self) -> f64 {
        self.cpu_micros / (self.load.requests.max(1) as f64)
    }

    /// Share of one core the server used: near 1, the server was the bottleneck.
    pub(crate) fn server_busy(&self) -> f64 {
        self.cpu_micros / (self.load.elapsed.as_secs_f64().max(1e-9) * 1e6)
    }

    /// Share of one core the load generator used: near 1, it was the bottleneck.
    pub(crate) fn client_busy(&self) -> f64 {
        self.client_cpu_micros / (self.load.elapsed.as_secs_f64().max(1e-9) * 1e6)
    }
}

/// What the header of the report says about the run.
pub(crate) struct RunInfo {
    pub(crate) options: Options,
    pub(crate) client: &'static str,
    pub(crate) server_cpu: Option<usize>,
    pub(crate) client_cpu: Option<usize>,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) wall: Duration,
}

/// A scenario's medians over the rounds.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    pub(crate) scenario: Scenario,
    pub(crate) per_second: f64,
    pub(crate) ratios: Vec<f64>,
    pub(crate) ratio: f64,
    pub(crate) cpu: f64,
    pub(crate) server_busy: f64,
    pub(crate) client_busy: f64,
    pub(crate) redis_commands: Option<f64>,
    pub(crate) redis_cpu: Option<f64>,
    pub(crate) errors: u64,
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// Medians per scenario; each ratio is to bare in the same round.
pub(crate) fn summarise(measured: &[(Scenario, Vec<Sample>)]) -> Vec<Summary> {
    let bare: Vec<f64> = measured
        .iter()
        .find(|(s, _)| *s == Scenario::Bare)
        .map(|(_, samples)| samples.iter().map(Sample::per_second).collect())
        .unwrap_or_default();
    measured
        .iter()
        .map(|(scenario, samples)| {
            let ratios: Vec<f64> = samples
                .iter()
                .zip(&bare)
                .map(|(s, b)| s.per_second() / b)
                .collect();
            let per_request = |pick: fn(&(f64, f64)) -> f64| -> Option<f64> {
                let mut values: Vec<f64> = samples
                    .iter()
                    .filter_map(|s| {
                        s.redis
                            .as_ref()
                            .map(|r| pick(r) / s.load.requests.max(1) as f64)
                    })
                    .collect();
                (!values.is_empty()).then(|| median(&mut values))
            };
            Summary {
                scenario: *scenario,
                per_second: median(&mut samples.iter().map(Sample::per_second).collect::<Vec<_>>()),
                ratio: median(&mut ratios.clone()),
                ratios,
                cpu: median(
                    &mut samples
                        .iter()
                        .map(Sample::cpu_micros_per_request)
                        .collect::<Vec<_>>(),
                ),
                server_busy: median(
                    &mut samples.iter().map(Sample::server_busy).collect::<Vec<_>>(),
                ),
                client_busy: median(
                    &mut samples.iter().map(Sample::client_busy).collect::<Vec<_>>(),
                ),
                redis_commands: per_request(|r| r.0),
                redis_cpu: per_request(|r| r.1),
                errors: samples.iter().map(|s| s.load.errors).sum(),
            }
        })
        .collect()
}

/// Whether ours meets the target, and if not, every way it misses.
pub(crate) fn judge(
    target: &Target,
    ours: &Summary,
    peer: Option<&Summary>,
    bare: &Summary,
) -> String {
    let mut misses = Vec::new();
    if ours.ratio < target.min_ratio {
        misses.push(format!("{:.2}× < {:.2}×", ours.ratio, target.min_ratio));
    }
    let over = ours.cpu - bare.cpu;
    if let Some(max) = target.max_cpu_over_bare {
        if over > max {
            misses.push(format!("+{over:.1} µs > {max} µs"));
        }
    }
    if let Some(peer) = peer {
        if ours.ratio < peer.ratio {
            misses.push(format!(
                "behind the peer ({:.2}× < {:.2}×)",
                ours.ratio, peer.ratio
            ));
        }
    }
    if ours.errors > 0 {
        misses.push(format!("{} errors", ours.errors));
    }
    if misses.is_empty() {
        "met".to_owned()
    } else {
        format!("missed: {}", misses.join("; "))
    }
}

fn cell(summary: Option<&Summary>) -> String {
    summary.map_or("not run".to_owned(), |s| {
        format!("{:.2}× · {:.1} µs", s.ratio, s.cpu)
    })
}

pub(crate) fn render(info: &RunInfo, measured: &[(Scenario, Vec<Sample>)]) -> String {
    let summaries = summarise(measured);
    let find = |scenario: Scenario| summaries.iter().find(|s| s.scenario == scenario);
    let Some(bare) = find(Scenario::Bare) else {
        return "no bare measurement\n".to_owned();
    };
    let options = &info.options;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- tas-compare: {} rounds × {} s, {} connections, {} users, client {}, server on \
         core {}, client on core {}; load average {} before, {} after; {:.0} s in all -->",
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
            cell(peer),
            cell(Some(ours)),
            target.text,
            judge(target, ours, peer, bare),
        );
    }
    if bare.server_busy < SATURATED {
        let _ = writeln!(
            out,
            "\n**The bare server used only {:.0}% of its core**: something else (other \
             processes on the machine, or the load generator) limited throughput, so the ratios \
             are noisy. The CPU figures are the steadier ones; see the CPU ratio column below.",
            bare.server_busy * 100.0
        );
    }
    let _ = writeln!(
        out,
        "\nEach cell: throughput as a ratio to the bare route of the same round · server CPU \
         per request (median of {} rounds).\n",
        options.rounds
    );
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
            bare.cpu / s.cpu,
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
        "\nCPU ratio: bare's server CPU per request over the scenario's, the throughput ratio a \
         server with a core to itself would show. Busy: share of one core the server and the \
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

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(scenario: Scenario, ratio: f64, cpu: f64) -> Summary {
        Summary {
            scenario,
            per_second: 1000.0 * ratio,
            ratios: vec![ratio],
            ratio,
            cpu,
            server_busy: 1.0,
            client_busy: 0.5,
            redis_commands: None,
            redis_cpu: None,
            errors: 0,
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn judging_names_every_miss() {
        let target = &TARGETS[1]; // memory: ≥ 0.92×, ≤ 0.5 µs over bare
        let bare = summary(Scenario::Bare, 1.0, 6.0);
        let peer = summary(Scenario::PeerMemory, 0.85, 7.5);
        let good = summary(Scenario::OursMemory, 0.95, 6.4);
        assert_eq!(judge(target, &good, Some(&peer), &bare), "met");
        let slow = summary(Scenario::OursMemory, 0.80, 8.0);
        let verdict = judge(target, &slow, Some(&peer), &bare);
        assert!(verdict.contains("0.80× < 0.92×"), "{verdict}");
        assert!(verdict.contains("+2.0 µs > 0.5 µs"), "{verdict}");
        assert!(verdict.contains("behind the peer"), "{verdict}");
    }

    #[test]
    fn ratios_are_to_bare_in_the_same_round() {
        let sample = |requests: u64| Sample {
            load: Load {
                requests,
                errors: 0,
                elapsed: Duration::from_secs(1),
            },
            cpu_micros: requests as f64 * 10.0,
            client_cpu_micros: 0.0,
            redis: None,
        };
        let measured = vec![
            (Scenario::Bare, vec![sample(100), sample(200)]),
            (Scenario::OursMemory, vec![sample(50), sample(100)]),
        ];
        let summaries = summarise(&measured);
        assert_eq!(summaries[1].ratios, [0.5, 0.5]);
        assert_eq!(summaries[1].cpu, 10.0);
    }
}
