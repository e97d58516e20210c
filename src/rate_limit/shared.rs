//! Budgets shared over Redis: the GCRA that [`governor`] runs in memory, as one script,
//! so every instance over the same Redis counts against the same budget.
//!
//! The key holds the client's "theoretical arrival time" in ms (Redis `TIME`, so the
//! instances' clocks do not matter) and expires when the budget has refilled.

use std::sync::LazyLock;
use std::time::Duration;

use super::limiter::{ClientKey, Limiter};

/// Returns 0 when the request is within budget (and counts it), else the ms to wait.
static GCRA: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local next_tat = tat + interval
if next_tat - now > window then
  return next_tat - now - window
end
redis.call('SET', KEYS[1], next_tat, 'PX', next_tat - now)
return 0",
    )
});

impl Limiter {
    /// Counts one request in Redis, or in this process when Redis cannot answer (logged:
    /// the budget is per instance until it is back).
    pub(super) async fn check_shared(&self, rule: usize, client: ClientKey) -> Option<Duration> {
        let Some(redis) = &self.shared else {
            return self.check_in_memory(rule, client);
        };
        let budget = self.budget(rule);
        let key = format!("{}rl:{rule}:{}", redis.key_prefix(), client.label());
        let interval = budget.interval().as_millis() as u64;
        let window = budget.window().as_millis() as u64;
        let answer = redis
            .with_connection(|mut connection| async move {
                GCRA.key(key)
                    .arg(interval)
                    .arg(window)
                    .invoke_async::<u64>(&mut connection)
                    .await
            })
            .await;
        match answer {
            Ok(0) => None,
            Ok(wait_ms) => Some(Duration::from_millis(wait_ms)),
            Err(error) => {
                tracing::warn!(%error, "rate limit: redis did not answer; counting in this process");
                self.check_in_memory(rule, client)
            }
        }
    }
}
