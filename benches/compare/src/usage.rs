//! Resource counters read around each measurement: a process's CPU time from
//! `/proc/<pid>/stat`, and Redis's command count and CPU time from `INFO`.

use tower_auth_session::redis;

/// CPU time (user + system) a process and all its threads have used, in µs.
pub(crate) fn process_cpu_micros(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    cpu_micros_from_stat(&stat, clock_ticks_per_second())
}

/// CPU time (user + system) of the children this process has waited for, in µs: a `wrk`
/// run's, once it has exited (the servers are never waited for while measuring).
pub(crate) fn waited_children_cpu_micros() -> f64 {
    // SAFETY: `rusage` is plain data that getrusage fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let micros = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    micros(usage.ru_utime) + micros(usage.ru_stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// `utime` and `stime` are fields 14 and 15; the name in field 2 may hold spaces and
/// parentheses, so count from the last `)`.
fn cpu_micros_from_stat(stat: &str, ticks_per_second: f64) -> Result<f64, String> {
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or("malformed /proc stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |index: usize| -> Result<f64, String> {
        fields
            .get(index)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| "malformed /proc stat".to_owned())
    };
    // Field 3 (state) is index 0 here, so field n is index n - 3.
    Ok((field(11)? + field(12)?) * 1e6 / ticks_per_second)
}

/// Redis's counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RedisCounters {
    /// Commands executed, not counting our own `INFO`.
    pub(crate) commands: f64,
    /// Server CPU time, user + system, in µs.
    pub(crate) cpu_micros: f64,
}

pub(crate) struct RedisProbe {
    connection: redis::Connection,
}

impl RedisProbe {
    pub(crate) fn connect(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let connection = client
            .get_connection_with_timeout(std::time::Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        Ok(Self { connection })
    }

    pub(crate) fn counters(&mut self) -> Result<RedisCounters, String> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .arg("cpu")
            .query(&mut self.connection)
            .map_err(|e| format!("Redis INFO: {e}"))?;
        Ok(parse_info(&info))
    }

    pub(crate) fn connection(&mut self) -> &mut redis::Connection {
        &mut self.connection
    }
}

fn parse_info(info: &str) -> RedisCounters {
    let mut counters = RedisCounters::default();
    for line in info.lines() {
        if let Some(rest) = line.strip_prefix("cmdstat_") {
            let Some((name, stats)) = rest.split_once(':') else {
                continue;
            };
            if name == "info" {
                continue;
            }
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|v| v.parse::<f64>().ok());
            counters.commands += calls.unwrap_or(0.0);
        } else if let Some((name, value)) = line.split_once(':') {
            if name == "used_cpu_sys" || name == "used_cpu_user" {
                counters.cpu_micros += value.trim().parse::<f64>().unwrap_or(0.0) * 1e6;
            }
        }
    }
    counters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "42 (tas (x) y) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 3";
        assert_eq!(cpu_micros_from_stat(stat, 100.0).unwrap(), 2_000_000.0);
        assert!(cpu_micros_from_stat("garbage", 100.0).is_err());
    }

    #[test]
    fn info_sums_calls_except_info_and_reads_cpu() {
        let info = "# Commandstats\r\ncmdstat_get:calls=10,usec=5,usec_per_call=0.5\r\n\
                    cmdstat_info:calls=99,usec=1\r\ncmdstat_evalsha:calls=2,usec=3\r\n\
                    # CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:0.5\r\nused_cpu_sys_children:9\r\n";
        let counters = parse_info(info);
        assert_eq!(counters.commands, 12.0);
        assert_eq!(counters.cpu_micros, 2_000_000.0);
    }
}
