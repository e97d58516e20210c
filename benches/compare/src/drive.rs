//! The driver: starts one server process per scenario, signs users in, runs the rounds and
//! prints the report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{self, Load};
use crate::options::{ClientChoice, Options};
use crate::process::Server;
use crate::report::{self, RunInfo};
use crate::scenario::{Scenario, Service};
use crate::serve::ServeConfig;
use crate::summary::Sample;
use crate::usage::{self, RedisProbe};
use crate::{affinity, services, wrk};

pub(crate) fn main(options: Options) -> Result<(), String> {
    if options.list {
        for scenario in Scenario::ALL {
            println!("{:<18} {}", scenario.name(), scenario.describe());
        }
        return Ok(());
    }
    let cpus = affinity::allowed_cpus();
    let (server_cpu, client_cpu) = match cpus.as_slice() {
        [server, client, ..] => (Some(*server), Some(*client)),
        _ => {
            eprintln!("only one core available: server and load generator are not pinned");
            (None, None)
        }
    };
    // Before anything starts a thread; the servers re-pin themselves to `server_cpu`.
    if let Some(cpu) = client_cpu {
        affinity::pin_to(cpu)?;
    }
    let use_wrk = match options.client {
        ClientChoice::Builtin => false,
        ClientChoice::Auto => wrk::installed(),
        ClientChoice::Wrk if wrk::installed() => true,
        ClientChoice::Wrk => return Err("--client wrk: wrk is not installed".into()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(run(options, server_cpu, client_cpu, use_wrk))
}

/// Which scenarios can run: those whose service answers.
async fn available(options: &Options) -> Vec<Scenario> {
    let mut redis = None;
    let mut postgres = None;
    let mut chosen = Vec::new();
    for &scenario in &options.scenarios {
        let answer = match scenario.needs() {
            None => &Ok(()),
            Some(Service::Redis) => {
                redis.get_or_insert_with(|| services::redis_answers(&options.redis_url))
            }
            Some(Service::Postgres) => {
                if postgres.is_none() {
                    postgres = Some(services::postgres_answers(&options.database_url).await);
                }
                postgres.as_ref().expect("just set")
            }
        };
        match answer {
            Ok(()) => chosen.push(scenario),
            Err(e) => eprintln!(
                "skipping {}: {:?} does not answer ({e})",
                scenario.name(),
                scenario.needs().expect("only a service can be missing"),
            ),
        }
    }
    chosen
}

/// Where this run keeps its state in the shared services, so that all of it can go.
struct Places {
    sqlite_dir: tempfile::TempDir,
    /// The run's Redis prefix; each server's own is under it.
    redis_prefix: String,
    ours_schema: String,
    peer_schema: String,
    /// tower-sessions' Redis keys are bare session ids.
    peer_redis_ids: Vec<String>,
}

impl Places {
    fn new() -> Result<Self, String> {
        let run_id = std::process::id();
        Ok(Self {
            sqlite_dir: tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?,
            redis_prefix: format!("tas-compare:{run_id}:"),
            ours_schema: format!("tas_compare_ours_{run_id}"),
            peer_schema: format!("tas_compare_ts_{run_id}"),
            peer_redis_ids: Vec::new(),
        })
    }

    fn config(&self, scenario: Scenario, options: &Options, cpu: Option<usize>) -> ServeConfig {
        let schema = if scenario.is_peer() {
            &self.peer_schema
        } else {
            &self.ours_schema
        };
        let file = self
            .sqlite_dir
            .path()
            .join(format!("{}.db", scenario.name()));
        ServeConfig {
            cpu,
            redis_url: options.redis_url.clone(),
            // One prefix per server: sharing one would make our Redis-backed servers
            // instances of one deployment (shared revocations, one user index), each
            // seeing the others' sign-ins of the same user names.
            redis_prefix: format!("{}{}:", self.redis_prefix, scenario.name()),
            database_url: options.database_url.clone(),
            pg_schema: schema.clone(),
            sqlite_path: format!("sqlite:{}", file.display()),
        }
    }

    /// Removes the keys and schemas (the SQLite files go with the temporary directory).
    async fn clean(self, options: &Options, scenarios: &[Scenario]) {
        let uses = |service| scenarios.iter().any(|s| s.needs() == Some(service));
        if uses(Service::Redis) {
            let prefix = &self.redis_prefix;
            match services::clean_redis(&options.redis_url, prefix, &self.peer_redis_ids) {
                Ok(n) => eprintln!("removed {n} Redis keys"),
                Err(e) => eprintln!("could not remove the Redis keys under {prefix:?}: {e}"),
            }
        }
        if uses(Service::Postgres) {
            let schemas = [self.ours_schema.as_str(), self.peer_schema.as_str()];
            if let Err(e) = services::drop_schemas(&options.database_url, &schemas).await {
                eprintln!("could not drop the schemas {schemas:?}: {e}");
            }
        }
    }
}

async fn run(
    options: Options,
    server_cpu: Option<usize>,
    client_cpu: Option<usize>,
    use_wrk: bool,
) -> Result<(), String> {
    let started = Instant::now();
    let scenarios = available(&options).await;
    let load_before = report::load_average();
    let mut places = Places::new()?;
    // Whatever happens, the servers are gone (dropped) and the services cleaned after.
    let measured = measure_all(&options, &scenarios, &mut places, server_cpu, use_wrk).await;
    places.clean(&options, &scenarios).await;
    let info = RunInfo {
        options: options.clone(),
        client: if use_wrk { "wrk -t1" } else { "built-in" },
        server_cpu,
        client_cpu,
        load_before,
        load_after: report::load_average(),
        wall: started.elapsed(),
        args: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
    };
    print!("{}", report::render(&info, &measured?));
    Ok(())
}

/// Starts every server, signs its users in, then runs the rounds.
async fn measure_all(
    options: &Options,
    scenarios: &[Scenario],
    places: &mut Places,
    server_cpu: Option<usize>,
    use_wrk: bool,
) -> Result<Vec<(Scenario, Vec<Sample>)>, String> {
    let mut servers = Vec::new();
    for &scenario in scenarios {
        let mut server =
            match Server::start(scenario, &places.config(scenario, options, server_cpu)) {
                Ok(server) => server,
                Err(e) => {
                    eprintln!("skipping {}: {e}", scenario.name());
                    continue;
                }
            };
        let cookies = if scenario.signs_in() {
            client::sign_in(server.addr, options.users)
                .await
                .map_err(|e| format!("{}: {e}", scenario.name()))?
        } else {
            Vec::new()
        };
        if matches!(scenario, Scenario::PeerRedis | Scenario::PeerMokaRedis) {
            let ids = cookies.iter().filter_map(|c| c.strip_prefix("id="));
            places.peer_redis_ids.extend(ids.map(str::to_owned));
        }
        let requests: Vec<Vec<u8>> = if cookies.is_empty() {
            vec![client::get_request(scenario.path(), None)]
        } else {
            cookies
                .iter()
                .map(|c| client::get_request(scenario.path(), Some(c)))
                .collect()
        };
        server.requests = Arc::new(requests);
        server.first_cookie = cookies.into_iter().next();
        eprintln!("started {:<18} on {}", scenario.name(), server.addr);
        servers.push(server);
    }
    if servers.first().map(|s| s.scenario) != Some(Scenario::Bare) {
        return Err("the bare server did not start; no ratio can be computed".into());
    }

    let mut probe = if scenarios.iter().any(|s| s.needs() == Some(Service::Redis)) {
        Some(RedisProbe::connect(&options.redis_url)?)
    } else {
        None
    };
    let duration = Duration::from_secs_f64(options.seconds);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); servers.len()];
    for round in 0..options.rounds {
        // Bare first, the others in an order that rotates each round, so a neighbour's
        // build that slows the machine down for a while hits no scenario more than others.
        let others = servers.len() - 1;
        let order = std::iter::once(0).chain((0..others).map(|i| 1 + (i + round) % others));
        for index in order {
            let server = &servers[index];
            let sample = measure(server, options, duration, use_wrk, probe.as_mut())
                .await
                .map_err(|e| format!("{} (round {}): {e}", server.scenario.name(), round + 1))?;
            eprintln!(
                "round {}/{} {:<18} {:>8.0} req/s {:>6.1} µs CPU/req{}",
                round + 1,
                options.rounds,
                server.scenario.name(),
                sample.per_second(),
                sample.cpu_micros_per_request(),
                if sample.load.errors > 0 {
                    format!(" {} errors", sample.load.errors)
                } else {
                    String::new()
                }
            );
            samples[index].push(sample);
        }
    }
    Ok(servers.iter().map(|s| s.scenario).zip(samples).collect())
}

/// One scenario for one round: warm up, then count requests, server CPU and Redis work.
async fn measure(
    server: &Server,
    options: &Options,
    duration: Duration,
    use_wrk: bool,
    probe: Option<&mut RedisProbe>,
) -> Result<Sample, String> {
    let pid = server.pid();
    let connections = client::prepare(server.addr, options.connections, &server.requests).await?;
    let mut probe = probe.filter(|_| server.scenario.needs() == Some(Service::Redis));
    let client_cpu = || -> Result<f64, String> {
        if use_wrk {
            Ok(usage::waited_children_cpu_micros())
        } else {
            usage::process_cpu_micros(std::process::id())
        }
    };
    let connections = (!use_wrk).then_some(connections);
    let client_before = client_cpu()?;
    let cpu_before = usage::process_cpu_micros(pid)?;
    let redis_before = probe.as_mut().map(|p| p.counters()).transpose()?;
    let load: Load = match connections {
        Some(connections) => {
            client::measure(connections, Arc::clone(&server.requests), duration).await?
        }
        None => wrk::measure(
            server.addr,
            server.scenario.path(),
            server.first_cookie.as_deref(),
            options.connections,
            duration,
        )?,
    };
    let cpu_after = usage::process_cpu_micros(pid)?;
    let client_after = client_cpu()?;
    let redis = match (probe, redis_before) {
        (Some(probe), Some(before)) => {
            let after = probe.counters()?;
            Some((
                after.commands - before.commands,
                after.cpu_micros - before.cpu_micros,
            ))
        }
        _ => None,
    };
    Ok(Sample {
        load,
        cpu_micros: cpu_after - cpu_before,
        client_cpu_micros: client_after - client_before,
        redis,
    })
}
