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
//! nothing), a connection idle for longer
//! than the ping threshold is handed back rather than reused, and when the pool is closed
//! every kept connection is handed back at once, so `Pool::close` does not wait for them.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgPool, PgQueryResult, PgRow, Postgres};
use sqlx::query::Query;

pub(super) struct Held {
    pool: PgPool,
    idle_limit: Duration,
    cap: usize,
    /// Newest last; each with the time it was kept.
    idle: Mutex<Vec<(PoolConnection<Postgres>, Instant)>>,
    /// Dropped with the store, which ends the task that watches for the pool closing.
    _alive: tokio::sync::oneshot::Sender<()>,
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
    /// Keeps connections of `pool` idle for at most `idle_limit`.
    pub(super) fn new(pool: PgPool, idle_limit: Duration) -> Arc<Self> {
        // Half, rounded down: a pool of one is never kept from the application.
        let cap = pool.options().get_max_connections() as usize / 2;
        let (alive, dropped) = tokio::sync::oneshot::channel();
        let held = Arc::new(Self {
            pool: pool.clone(),
            idle_limit,
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

    fn lock(&self) -> MutexGuard<'_, Vec<(PoolConnection<Postgres>, Instant)>> {
        // The list is consistent after any panic (a push or a pop), so poison is harmless.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A kept connection, or one from the pool (which may ping it first).
    async fn lease(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        match self.take() {
            Some(connection) => Ok(connection),
            None => self.pool.acquire().await,
        }
    }

    // Each runs `query` on a leased connection and keeps the connection only if the query
    // succeeded; on an error, or when the call is dropped (the timeout), the connection
    // goes back to the pool.

    pub(super) async fn execute(
        &self,
        query: Query<'_, Postgres, PgArguments>,
    ) -> Result<PgQueryResult, sqlx::Error> {
        let mut connection = self.lease().await?;
        let result = query.execute(&mut *connection).await?;
        self.put(connection);
        Ok(result)
    }

    pub(super) async fn fetch_optional(
        &self,
        query: Query<'_, Postgres, PgArguments>,
    ) -> Result<Option<PgRow>, sqlx::Error> {
        let mut connection = self.lease().await?;
        let row = query.fetch_optional(&mut *connection).await?;
        self.put(connection);
        Ok(row)
    }

    pub(super) async fn fetch_all(
        &self,
        query: Query<'_, Postgres, PgArguments>,
    ) -> Result<Vec<PgRow>, sqlx::Error> {
        let mut connection = self.lease().await?;
        let rows = query.fetch_all(&mut *connection).await?;
        self.put(connection);
        Ok(rows)
    }

    fn take(&self) -> Option<PoolConnection<Postgres>> {
        if self.pool.is_closed() {
            return None;
        }
        let mut idle = self.lock();
        let (connection, kept_at) = idle.pop()?;
        if kept_at.elapsed() <= self.idle_limit {
            return Some(connection);
        }
        // The newest is stale, so all are: hand them back (outside the lock).
        let stale = std::mem::take(&mut *idle);
        drop(idle);
        drop((connection, stale));
        None
    }

    fn put(&self, connection: PoolConnection<Postgres>) {
        if self.pool.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        let fresh_from = idle
            .iter()
            .position(|(_, kept_at)| now.duration_since(*kept_at) <= self.idle_limit)
            .unwrap_or(idle.len());
        let stale: Vec<_> = idle.drain(..fresh_from).collect();
        let refused = if idle.len() < self.cap {
            idle.push((connection, now));
            None
        } else {
            Some(connection)
        };
        drop(idle);
        drop((stale, refused));
    }
}
