//! From samples to verdicts: each scenario's medians over the rounds, and whether ours
//! meets the target for its path.

use std::time::Duration;

use crate::client::Load;
use crate::scenario::{Scenario, Target};

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
        self.load.requests as f64 / seconds(self.load.elapsed)
    }

    pub(crate) fn cpu_micros_per_request(&self) -> f64 {
        self.cpu_micros / (self.load.requests.max(1) as f64)
    }

    /// Share of one core the server used: near 1, the server was the bottleneck.
    fn server_busy(&self) -> f64 {
        self.cpu_micros / (seconds(self.load.elapsed) * 1e6)
    }

    /// Share of one core the load generator used: near 1, it was the bottleneck.
    fn client_busy(&self) -> f64 {
        self.client_cpu_micros / (seconds(self.load.elapsed) * 1e6)
    }
}

fn seconds(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64().max(1e-9)
}

/// A scenario's medians over the rounds; ratios are to bare in the same round.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    pub(crate) scenario: Scenario,
    pub(crate) per_second: f64,
    /// Throughput over bare's, per round.
    pub(crate) ratios: Vec<f64>,
    pub(crate) ratio: f64,
    /// Bare's server CPU per request over this scenario's.
    pub(crate) cpu_ratio: f64,
    /// Server CPU per request, µs.
    pub(crate) cpu: f64,
    pub(crate) server_busy: f64,
    pub(crate) client_busy: f64,
    pub(crate) redis_commands: Option<f64>,
    pub(crate) redis_cpu: Option<f64>,
    pub(crate) errors: u64,
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
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

pub(crate) fn summarise(measured: &[(Scenario, Vec<Sample>)]) -> Vec<Summary> {
    let bare: &[Sample] = measured
        .iter()
        .find(|(s, _)| *s == Scenario::Bare)
        .map_or(&[], |(_, samples)| samples.as_slice());
    measured
        .iter()
        .map(|(scenario, samples)| {
            let each = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
            let to_bare = |f: fn(&Sample, &Sample) -> f64| -> Vec<f64> {
                samples.iter().zip(bare).map(|(s, b)| f(s, b)).collect()
            };
            let ratios = to_bare(|s, b| s.per_second() / b.per_second());
            let redis_per_request = |pick: fn(&(f64, f64)) -> f64| -> Option<f64> {
                let values: Vec<f64> = samples
                    .iter()
                    .filter_map(|s| {
                        let per = s.load.requests.max(1) as f64;
                        s.redis.as_ref().map(|r| pick(r) / per)
                    })
                    .collect();
                (!values.is_empty()).then(|| median(values))
            };
            Summary {
                scenario: *scenario,
                per_second: each(Sample::per_second),
                ratio: median(ratios.clone()),
                ratios,
                cpu_ratio: median(to_bare(|s, b| {
                    b.cpu_micros_per_request() / s.cpu_micros_per_request()
                })),
                cpu: each(Sample::cpu_micros_per_request),
                server_busy: each(Sample::server_busy),
                client_busy: each(Sample::client_busy),
                redis_commands: redis_per_request(|r| r.0),
                redis_cpu: redis_per_request(|r| r.1),
                errors: samples.iter().map(|s| s.load.errors).sum(),
            }
        })
        .collect()
}

/// Which ratio the headline table shows and judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Basis {
    /// Requests per second over bare's, the measure; right when the server is
    /// the bottleneck.
    Throughput,
    /// Bare's server CPU per request over the scenario's: the throughput ratio a server
    /// with its core to itself would show. For a loaded machine, where the bare server
    /// does not saturate its core and throughput ratios measure the scheduler.
    Cpu,
}

/// Below this share of its core, the bare server was not the bottleneck.
const SATURATED: f64 = 0.8;

impl Basis {
    pub(crate) fn for_run(bare: &Summary) -> Self {
        if bare.server_busy >= SATURATED {
            Self::Throughput
        } else {
            Self::Cpu
        }
    }

    pub(crate) fn of(self, summary: &Summary) -> f64 {
        match self {
            Self::Throughput => summary.ratio,
            Self::Cpu => summary.cpu_ratio,
        }
    }
}

/// Whether ours meets the target, and if not, every way it misses.
pub(crate) fn judge(
    target: &Target,
    ours: &Summary,
    peer: Option<&Summary>,
    bare: &Summary,
    basis: Basis,
) -> String {
    let mut misses = Vec::new();
    let ratio = basis.of(ours);
    if ratio < target.min_ratio {
        misses.push(format!("{ratio:.2}× < {:.2}×", target.min_ratio));
    }
    let over = ours.cpu - bare.cpu;
    if let Some(max) = target.max_cpu_over_bare {
        if over > max {
            misses.push(format!("+{over:.1} µs > {max} µs"));
        }
    }
    if let Some(peer) = peer {
        let peer_ratio = basis.of(peer);
        if ratio < peer_ratio {
            misses.push(format!("behind the peer ({ratio:.2}× < {peer_ratio:.2}×)"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::TARGETS;

    fn summary(scenario: Scenario, ratio: f64, cpu: f64) -> Summary {
        Summary {
            scenario,
            per_second: 1000.0 * ratio,
            ratios: vec![ratio],
            ratio,
            cpu_ratio: 6.0 / cpu,
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
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn judging_names_every_miss() {
        let target = &TARGETS[1]; // memory: ≥ 0.92×, ≤ 0.5 µs over bare
        let bare = summary(Scenario::Bare, 1.0, 6.0);
        let peer = summary(Scenario::PeerMemory, 0.85, 7.5);
        let good = summary(Scenario::OursMemory, 0.95, 6.4);
        assert_eq!(
            judge(target, &good, Some(&peer), &bare, Basis::Throughput),
            "met"
        );
        let slow = summary(Scenario::OursMemory, 0.80, 8.0);
        let verdict = judge(target, &slow, Some(&peer), &bare, Basis::Throughput);
        assert!(verdict.contains("0.80× < 0.92×"), "{verdict}");
        assert!(verdict.contains("+2.0 µs > 0.5 µs"), "{verdict}");
        assert!(verdict.contains("behind the peer"), "{verdict}");
        // On CPU, 6.0 / 8.0 = 0.75.
        let verdict = judge(target, &slow, Some(&peer), &bare, Basis::Cpu);
        assert!(verdict.contains("0.75× < 0.92×"), "{verdict}");
    }

    #[test]
    fn an_unsaturated_bare_server_switches_to_cpu_ratios() {
        let mut bare = summary(Scenario::Bare, 1.0, 6.0);
        assert_eq!(Basis::for_run(&bare), Basis::Throughput);
        bare.server_busy = 0.4;
        assert_eq!(Basis::for_run(&bare), Basis::Cpu);
    }

    #[test]
    fn ratios_are_to_bare_in_the_same_round() {
        let sample = |requests: u64, cpu_per_request: f64| Sample {
            load: Load {
                requests,
                errors: 0,
                elapsed: Duration::from_secs(1),
            },
            cpu_micros: requests as f64 * cpu_per_request,
            client_cpu_micros: 0.0,
            redis: None,
        };
        let measured = vec![
            (Scenario::Bare, vec![sample(100, 5.0), sample(200, 5.0)]),
            (
                Scenario::OursMemory,
                vec![sample(50, 10.0), sample(100, 10.0)],
            ),
        ];
        let summaries = summarise(&measured);
        assert_eq!(summaries[1].ratios, [0.5, 0.5]);
        assert_eq!(summaries[1].cpu, 10.0);
        assert_eq!(summaries[1].cpu_ratio, 0.5);
    }
}
