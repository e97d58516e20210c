//! Command-line options of the driver.

use crate::scenario::Scenario;

pub(crate) const USAGE: &str = "\
usage: tas-compare [options]

  --rounds R          rounds; each runs every scenario once, bare first (default 3)
  --seconds S         measured seconds per scenario per round (default 3)
  --connections N     keep-alive connections, one request in flight each (default 32)
  --users K           users signed in per scenario; connections cycle over them (default 100)
  --scenarios a,b     which scenarios (names, or `ts`, `ours`, `all`; bare always runs)
  --client C          builtin | wrk | auto (default: wrk when installed, else builtin)
  --list              print the scenarios and exit

Services: REDIS_URL (default redis://127.0.0.1:6379) and DATABASE_URL (default
postgres://postgres@127.0.0.1:5432/test); a scenario whose service does not answer is
skipped with a message. Keys get a per-run prefix and tables a per-run schema, both removed
at the end.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientChoice {
    Builtin,
    Wrk,
    Auto,
}

#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) rounds: usize,
    pub(crate) seconds: f64,
    pub(crate) connections: usize,
    pub(crate) users: usize,
    pub(crate) scenarios: Vec<Scenario>,
    pub(crate) client: ClientChoice,
    pub(crate) list: bool,
    pub(crate) redis_url: String,
    pub(crate) database_url: String,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Self {
            rounds: 3,
            seconds: 3.0,
            connections: 32,
            users: 100,
            scenarios: Scenario::ALL.to_vec(),
            client: ClientChoice::Auto,
            list: false,
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379"),
            database_url: env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"),
        };
        let mut args = args.iter();
        while let Some(flag) = args.next() {
            match flag.as_str() {
                "--help" | "-h" => return Err(USAGE.to_owned()),
                "--list" => {
                    options.list = true;
                    continue;
                }
                _ => {}
            }
            let value = args
                .next()
                .ok_or(format!("{flag} needs a value\n\n{USAGE}"))?;
            let count = |max: usize| -> Result<usize, String> {
                value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or(format!(
                        "{flag} must be a whole number in 1..={max}, got {value:?}"
                    ))
            };
            match flag.as_str() {
                "--rounds" => options.rounds = count(100)?,
                "--connections" => options.connections = count(1024)?,
                "--users" => options.users = count(100_000)?,
                "--seconds" => {
                    options.seconds = value
                        .parse::<f64>()
                        .ok()
                        .filter(|s| *s > 0.0 && *s <= 600.0)
                        .ok_or(format!("--seconds must be in (0, 600], got {value:?}"))?
                }
                "--scenarios" => options.scenarios = parse_scenarios(value)?,
                "--client" => {
                    options.client = match value.as_str() {
                        "builtin" => ClientChoice::Builtin,
                        "wrk" => ClientChoice::Wrk,
                        "auto" => ClientChoice::Auto,
                        _ => {
                            return Err(format!("--client is builtin, wrk or auto, got {value:?}"));
                        }
                    }
                }
                _ => return Err(format!("unknown flag {flag:?}\n\n{USAGE}")),
            }
        }
        Ok(options)
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Names or groups, in the canonical order, with bare first whatever was asked.
fn parse_scenarios(list: &str) -> Result<Vec<Scenario>, String> {
    let mut chosen = vec![Scenario::Bare];
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let group: Vec<Scenario> = match name {
            "all" => Scenario::ALL.to_vec(),
            "ts" => Scenario::ALL.into_iter().filter(|s| s.is_peer()).collect(),
            "ours" => Scenario::ALL
                .into_iter()
                .filter(|s| s.name().starts_with("ours-"))
                .collect(),
            _ => vec![
                Scenario::from_name(name)
                    .ok_or(format!("unknown scenario {name:?} (see --list)"))?,
            ],
        };
        chosen.extend(group);
    }
    Ok(Scenario::ALL
        .into_iter()
        .filter(|s| chosen.contains(s))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn bare_always_runs_and_order_is_canonical() {
        let options = Options::parse(&args(&["--scenarios", "ours-memory,ts-memory"])).unwrap();
        assert_eq!(
            options.scenarios,
            [Scenario::Bare, Scenario::PeerMemory, Scenario::OursMemory]
        );
    }

    #[test]
    fn groups_and_bad_input() {
        let options = Options::parse(&args(&["--scenarios", "ts"])).unwrap();
        assert!(options.scenarios.iter().skip(1).all(|s| s.is_peer()));
        assert!(Options::parse(&args(&["--scenarios", "nope"])).is_err());
        assert!(Options::parse(&args(&["--rounds", "0"])).is_err());
        assert!(Options::parse(&args(&["--seconds"])).is_err());
    }
}
