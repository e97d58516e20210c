//! Pooled connections the store keeps between its own calls.
//!
//! sqlx pings every connection handed back to its pool (a `Sync` round trip, in a task it
//! spawns), so a store call that acquired and released a connection cost two round trips
//! and a task. A connection whose call succeeded is kept here instead and reused by the
//! next call without that ping; one whose call failed, or was cancelled by the timeout,
//! goes back to the pool, which pings it (and drops it if it is broken).
//!
//! Kept connections still count against the pool's size, so at most half of it is kept,
//! rounded down (the application's own `pool()` queries get the rest; a pool of one keeps
//! nothing). A connection idle for longer than the ping threshold is handed back rather
//! than reused, each goes back through the pool once a minute (so the pool's ping and
//! `max_lifetime` still reach it), and when the pool is closed every kept connection is
//! handed back at once, so `Pool::close` does not wait for them.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgPool, PgQueryResult, PgRow, Postgres};
use sqlx::query::Query;

/// How long the store reuses a connection before handing it back through the pool once,
/// so that the pool's own policies (its health ping, `max_lifetime`) still reach
/// connections the store keeps busy.
pub(super) const RECYCLE_AFTER: Duration = Duration::from_secs(60);

pub(super) struct Held {
    pool: PgPool,
    idle_limit: Duration,
    recycle_after: Duration,
    cap: usize,
    /// Newest last.
    idle: Mutex<Vec<Kept>>,
    /// Dropped with the store, which ends the task that watches for the pool closing.
    _alive: tokio::sync::oneshot::Sender<()>,
}

struct Kept {
    connection: PoolConnection<Postgres>,
    /// When it was kept (last used).
    kept_at: Instant,
    /// When it came from the pool.
    leased_at: Instant,
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Held")
            .field("cap", &self.cap)
            .field("kept", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Held {
    /// Keeps connections of `pool` idle for at most `idle_limit`, and each for at most
    /// `recycle_after` since it came from the pool.
    pub(super) fn new(pool: PgPool, idle_limit: Duration, recycle_after: Duration) -> Arc<Self> {
        // Half, rounded down: a pool of one is never kept from the application.
        let cap = pool.options().get_max_connections() as usize / 2;
        let (alive, dropped) = tokio::sync::oneshot::channel();
        let held = Arc::new(Self {
            pool: pool.clone(),
            idle_limit,
            recycle_after,
            cap,
            idle: Mutex::new(Vec::new()),
            _alive: alive,
        });
        let weak: Weak<Self> = Arc::downgrade(&held);
        let closed = pool.close_event();
        tokio::spawn(async move {
            tokio::select! {
                () = closed => {
                    if let Some(held) = weak.upgrade() {
                        drop(std::mem::take(&mut *held.lock()));
                    }
                }
                _ = dropped => {}
            }
        });
        held
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Kept>> {
        // The list is consistent after any panic (a push or a pop), so poison is harmless.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A kept connection, or one from the pool (which may ping it first).
    /// Also answers when the connection came from the pool.
    async fn lease(&self) -> Result<(PoolConnection<Postgres>, Instant), sqlx::Error> {
        match self.take() {
            Some(kept) => Ok(kept),
            None => Ok((self.pool.acquire().await?, Instant::now())),
        }
    }

    // Each runs `query` on a leased connection and keeps the connection only if the query
    // succeeded; on an error, or when the call is dropped (the timeout), the connection
    // goes back to the pool.

    pub(super) async fn execute(
        &self,
        query: Query<'_, Postgres, PgArguments>,
    ) -> Result<PgQueryResult, sqlx::Error> {
        let (mut connection, leased_at) = self.lease().await?;
        let result = query.execute(&mut *connection).await?;
        self.put(connection, leased_at);
        Ok(result)
    }

    pub(super) async fn fetch_optional(
        &self,
        query: Query<'_, Postgres, PgArguments>,
    ) -> Result<Option<PgRow>, sqlx::Error> {
        let (mut connection, leased_at) = self.lease().await?;
        let row = query.fetch_optional(&mut *connection).await?;
        self.put(connection, leased_at);
        Ok(row)
    }

    pub(super) async fn fetch_all(
        &self,
        query: Query<'_, Postgres, PgArguments>,
    ) -> Result<Vec<PgRow>, sqlx::Error> {
        let (mut connection, leased_at) = self.lease().await?;
        let rows = query.fetch_all(&mut *connection).await?;
        self.put(connection, leased_at);
        Ok(rows)
    }

    fn take(&self) -> Option<(PoolConnection<Postgres>, Instant)> {
        if self.pool.is_closed() {
            return None;
        }
        let mut idle = self.lock();
        let kept = idle.pop()?;
        if kept.kept_at.elapsed() <= self.idle_limit {
            return Some((kept.connection, kept.leased_at));
        }
        // The newest is stale, so all are: hand them back (outside the lock).
        let stale = std::mem::take(&mut *idle);
        drop(idle);
        drop((kept, stale));
        None
    }

    fn put(&self, connection: PoolConnection<Postgres>, leased_at: Instant) {
        let now = Instant::now();
        if self.pool.is_closed() || now.duration_since(leased_at) > self.recycle_after {
            return;
        }
        let mut idle = self.lock();
        let fresh_from = idle
            .iter()
            .position(|kept| now.duration_since(kept.kept_at) <= self.idle_limit)
            .unwrap_or(idle.len());
        let stale: Vec<_> = idle.drain(..fresh_from).collect();
        let refused = if idle.len() < self.cap {
            idle.push(Kept {
                connection,
                kept_at: now,
                leased_at,
            });
            None
        } else {
            Some(connection)
        };
        drop(idle);
        drop((stale, refused));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::postgres::PgPoolOptions;

    /// A pool of 4 to `DATABASE_URL`, or `None` when PostgreSQL is not there (a failure
    /// instead with `TAS_REQUIRE_SERVICES=1`).
    async fn pool() -> Option<PgPool> {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let connected = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await;
        match connected {
            Ok(pool) => Some(pool),
            Err(error) if std::env::var("TAS_REQUIRE_SERVICES").as_deref() == Ok("1") => {
                panic!("PostgreSQL at {url}: {error}")
            }
            Err(_) => None,
        }
    }

    async fn select_one(held: &Held) {
        held.execute(sqlx::query("SELECT 1")).await.unwrap();
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_limit_is_handed_back_not_reused() {
        let Some(pool) = pool().await else { return };
        let held = Held::new(pool, Duration::from_millis(50), RECYCLE_AFTER);
        select_one(&held).await;
        assert_eq!(held.lock().len(), 1, "kept after a successful call");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(held.take().is_none(), "a stale connection is not reused");
        assert_eq!(held.lock().len(), 0, "and is handed back");
    }

    #[tokio::test]
    async fn a_connection_reused_for_long_goes_back_through_the_pool() {
        let Some(pool) = pool().await else { return };
        let held = Held::new(pool, Duration::from_secs(10), Duration::from_millis(50));
        select_one(&held).await;
        select_one(&held).await;
        assert_eq!(held.lock().len(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        select_one(&held).await;
        assert_eq!(held.lock().len(), 0, "handed back once past recycle_after");
        select_one(&held).await;
        assert_eq!(
            held.lock().len(),
            1,
            "a connection from the pool is kept again"
        );
    }
}
