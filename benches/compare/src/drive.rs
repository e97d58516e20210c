//! The driver: starts one server process per scenario, signs users in, runs the rounds and
//! prints the report.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{self, Load};
use crate::options::{ClientChoice, Options};
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

/// A scenario's server process; killed when dropped.
struct Server {
    scenario: Scenario,
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    /// One prebuilt request per signed-in user (one without a cookie if none).
    requests: Arc<Vec<Vec<u8>>>,
    /// The first user's `Cookie` header, for wrk.
    first_cookie: Option<String>,
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

fn start(scenario: Scenario, config: &ServeConfig) -> Result<Server, String> {
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
    let mut line = String::new();
    let read = BufReader::new(stdout).read_line(&mut line);
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse::<SocketAddr>().ok());
    let Some(addr) = addr else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(match read {
            Ok(_) => "the server exited before listening (its error is above)".into(),
            Err(e) => format!("reading the server's address: {e}"),
        });
    };
    Ok(Server {
        scenario,
        child,
        stdin,
        addr,
        requests: Arc::new(Vec::new()),
        first_cookie: None,
    })
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

async fn run(
    options: Options,
    server_cpu: Option<usize>,
    client_cpu: Option<usize>,
    use_wrk: bool,
) -> Result<(), String> {
    let started = Instant::now();
    let scenarios = available(&options).await;
    let run_id = std::process::id();
    let sqlite_dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let redis_prefix = format!("tas-compare:{run_id}:");
    let (ours_schema, peer_schema) = (
        format!("tas_compare_ours_{run_id}"),
        format!("tas_compare_ts_{run_id}"),
    );
    let load_before = report::load_average();

    let mut servers = Vec::new();
    let mut peer_redis_ids = Vec::new();
    for &scenario in &scenarios {
        let config = ServeConfig {
            cpu: server_cpu,
            redis_url: options.redis_url.clone(),
            redis_prefix: redis_prefix.clone(),
            database_url: options.database_url.clone(),
            pg_schema: if scenario.is_peer() {
                &peer_schema
            } else {
                &ours_schema
            }
            .clone(),
            sqlite_path: format!(
                "sqlite:{}",
                sqlite_dir
                    .path()
                    .join(format!("{}.db", scenario.name()))
                    .display()
            ),
        };
        let mut server = match start(scenario, &config) {
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
            peer_redis_ids.extend(
                cookies
                    .iter()
                    .filter_map(|c| c.strip_prefix("id="))
                    .map(str::to_owned),
            );
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
    if !servers.iter().any(|s| s.scenario == Scenario::Bare) {
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
            let sample = measure(server, &options, duration, use_wrk, probe.as_mut())
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

    let info = RunInfo {
        options: options.clone(),
        client: if use_wrk { "wrk -t1" } else { "built-in" },
        server_cpu,
        client_cpu,
        load_before,
        load_after: report::load_average(),
        wall: started.elapsed(),
    };
    let measured: Vec<(Scenario, Vec<Sample>)> =
        servers.iter().map(|s| s.scenario).zip(samples).collect();
    drop(servers);
    print!("{}", report::render(&info, &measured));

    // Leave nothing behind in the shared services.
    if scenarios.iter().any(|s| s.needs() == Some(Service::Redis)) {
        match services::clean_redis(&options.redis_url, &redis_prefix, &peer_redis_ids) {
            Ok(n) => eprintln!("removed {n} Redis keys"),
            Err(e) => eprintln!("could not remove the Redis keys under {redis_prefix:?}: {e}"),
        }
    }
    if scenarios
        .iter()
        .any(|s| s.needs() == Some(Service::Postgres))
    {
        if let Err(e) =
            services::drop_schemas(&options.database_url, &[&ours_schema, &peer_schema]).await
        {
            eprintln!("could not drop the schemas {ours_schema} and {peer_schema}: {e}");
        }
    }
    Ok(())
}

/// One scenario for one round: warm up, then count requests, server CPU and Redis work.
async fn measure(
    server: &Server,
    options: &Options,
    duration: Duration,
    use_wrk: bool,
    probe: Option<&mut RedisProbe>,
) -> Result<Sample, String> {
    let pid = server.child.id();
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
