//! The store's SQLite connections, and where each call runs.
//!
//! A file database has one writer connection and a few reader connections (WAL mode lets
//! readers run alongside the writer). Reads run inline on the calling task's thread:
//! a lookup by token hash is a few microseconds of CPU, less than handing it to another
//! thread and back. A reader never waits on a lock there: its busy timeout is zero,
//! and the rare read that meets a lock (a checkpoint restarting the log, another process
//! holding the file exclusively) is retried on tokio's blocking pool with the full busy
//! timeout. Writes always run on the blocking pool, one at a time on the writer (the
//! others wait as tasks, not as blocked threads): a commit waits for `fsync`, which would
//! stall every other task of an async worker thread.
//!
//! An in-memory database exists only inside its one connection, so it has exactly one,
//! used inline for everything (no `fsync` to wait for).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::Semaphore;

use super::schema;
use crate::error::StoreError;

/// How long a write (or a read retried off the async worker) waits for another
/// connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle reader connections kept for reuse. Inline reads hold one per thread that is
/// reading at that moment, so this bounds the readers of a busy server by its threads.
const MAX_IDLE_READERS: usize = 8;

/// Where the database is.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Location {
    File(PathBuf),
    Memory,
}

impl Location {
    /// Parses what sqlx accepted for SQLite: `sqlite:PATH`, `sqlite://PATH`, a bare
    /// `PATH`, `sqlite::memory:`, with optional `mode=rwc` (the default: create if
    /// missing), `mode=rw` (must exist) or `mode=memory`, and `cache=shared|private`
    /// (accepted, no effect: the store manages its connections). Paths may be
    /// percent-encoded. Read-only, immutable and custom-VFS options are refused.
    pub(super) fn parse(url: &str) -> Result<(Self, bool), String> {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if rest.contains("://") {
            return Err(format!("{url:?} is not an SQLite URL"));
        }
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut memory = path == ":memory:";
        let mut create = true;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair {
                "mode=rwc" => create = true,
                "mode=rw" => create = false,
                "mode=memory" => memory = true,
                "cache=shared" | "cache=private" => {}
                other => return Err(format!("unsupported SQLite URL option {other:?}")),
            }
        }
        if memory {
            return Ok((Self::Memory, create));
        }
        if path.is_empty() {
            return Err(format!("{url:?} names no file"));
        }
        Ok((Self::File(PathBuf::from(percent_decode(path)?)), create))
    }
}

/// Decodes `%XX` escapes in a URL's path.
fn percent_decode(path: &str) -> Result<String, String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {path:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{path:?} is not UTF-8 once decoded"))
}

pub(super) enum Connections {
    File {
        path: PathBuf,
        writer: Mutex<Connection>,
        /// One write at a time goes to the blocking pool; the others wait here, as tasks,
        /// rather than each holding a blocking thread while it waits for the writer.
        write_turn: Arc<Semaphore>,
        readers: Mutex<Vec<Connection>>,
    },
    Memory(Mutex<Connection>),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a connection leaves nothing half-done that SQLite does not
    // roll back itself, so a poisoned lock is still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(Duration::ZERO)?;
    // Reads only: an inline call must never start a write (and its fsync).
    connection.pragma_update(None, "query_only", true)?;
    Ok(connection)
}

impl Connections {
    /// Opens the database (blocking: creating a file, setting WAL mode and migrating may
    /// wait for other processes), applies the schema, and opens a first reader.
    pub(super) fn open(location: Location, create: bool) -> rusqlite::Result<Self> {
        Ok(match location {
            Location::Memory => {
                let mut connection = Connection::open_in_memory()?;
                schema::migrate(&mut connection)?;
                Self::Memory(Mutex::new(connection))
            }
            Location::File(path) => {
                let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                if create {
                    flags |= OpenFlags::SQLITE_OPEN_CREATE;
                }
                let mut writer = Connection::open_with_flags(&path, flags)?;
                writer.busy_timeout(BUSY_TIMEOUT)?;
                // WAL lets the readers run while a write commits; FULL makes each commit
                // durable on return, as the sqlx-based store did.
                let mode: String =
                    writer
                        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
                if !mode.eq_ignore_ascii_case("wal") {
                    tracing::warn!(mode, "SQLite did not switch the session store to WAL mode");
                }
                writer.pragma_update(None, "synchronous", "FULL")?;
                schema::migrate(&mut writer)?;
                Self::File {
                    readers: Mutex::new(vec![open_reader(&path)?]),
                    writer: Mutex::new(writer),
                    write_turn: Arc::new(Semaphore::new(1)),
                    path,
                }
            }
        })
    }

    /// The file, or `None` in memory.
    pub(super) fn path(&self) -> Option<&Path> {
        match self {
            Self::File { path, .. } => Some(path),
            Self::Memory(_) => None,
        }
    }

    /// Runs `read` on a reader connection, without waiting for locks unless `wait`.
    fn read_on<T>(
        &self,
        wait: bool,
        read: &impl Fn(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let (path, readers) = match self {
            Self::File { path, readers, .. } => (path, readers),
            Self::Memory(connection) => return read(&lock(connection)),
        };
        let popped = lock(readers).pop();
        let connection = match popped {
            Some(connection) => connection,
            None => open_reader(path)?,
        };
        let result = if wait {
            connection.busy_timeout(BUSY_TIMEOUT)?;
            let result = read(&connection);
            connection.busy_timeout(Duration::ZERO)?;
            result
        } else {
            read(&connection)
        };
        let mut idle = lock(readers);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(connection);
        }
        result
    }

    /// Runs `read` inline; if it meets a lock, again on the blocking pool, waiting for
    /// the lock up to the busy timeout.
    pub(super) async fn read<T, F>(
        self: &Arc<Self>,
        context: &'static str,
        read: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        match self.read_on(false, &read) {
            Err(error) if is_busy(&error) => {
                let connections = Arc::clone(self);
                tokio::task::spawn_blocking(move || connections.read_on(true, &read))
                    .await
                    .map_err(|e| StoreError::with_source(context, e))?
            }
            other => other,
        }
        .map_err(|e| StoreError::with_source(context, e))
    }

    /// Runs `write` on the writer: on the blocking pool for a file, inline in memory.
    pub(super) async fn write<T, F>(
        self: &Arc<Self>,
        context: &'static str,
        write: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let result = match &**self {
            Self::Memory(connection) => write(&lock(connection)),
            Self::File { write_turn, .. } => {
                // The turn is released when the blocking work ends, even if this call is
                // dropped (cancelled) before that.
                let turn = Arc::clone(write_turn)
                    .acquire_owned()
                    .await
                    .map_err(|e| StoreError::with_source(context, e))?;
                let connections = Arc::clone(self);
                tokio::task::spawn_blocking(move || {
                    let _turn = turn;
                    match &*connections {
                        Self::File { writer, .. } | Self::Memory(writer) => write(&lock(writer)),
                    }
                })
                .await
                .map_err(|e| StoreError::with_source(context, e))?
            }
        };
        result.map_err(|e| StoreError::with_source(context, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn busy() -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error {
                code: ErrorCode::DatabaseBusy,
                extended_code: rusqlite::ffi::SQLITE_BUSY,
            },
            None,
        )
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_read_that_meets_a_lock_is_retried_off_the_async_worker() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::File(dir.path().join("s.db"));
        let connections = Arc::new(Connections::open(location, true).unwrap());
        let worker = std::thread::current().id();
        let calls = Arc::new(AtomicUsize::new(0));
        let read = {
            let calls = calls.clone();
            move |c: &Connection| {
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                let off_worker = std::thread::current().id() != worker;
                if first {
                    return Err(busy());
                }
                c.query_row("SELECT count(*) FROM tas_sessions", [], |row| {
                    row.get::<_, i64>(0)
                })
                .map(|n| (n, off_worker))
            }
        };
        let (rows, off_worker) = connections.read("test", read).await.unwrap();
        assert_eq!((rows, off_worker), (0, true));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reads_run_inline_and_other_errors_are_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::File(dir.path().join("s.db"));
        let connections = Arc::new(Connections::open(location, true).unwrap());
        let worker = std::thread::current().id();
        for _ in 0..3 {
            let on_worker = connections
                .read("test", move |_| Ok(std::thread::current().id() == worker))
                .await
                .unwrap();
            assert!(on_worker);
        }
        // Sequential reads reuse one reader (the one opened with the store).
        let Connections::File { readers, .. } = &*connections else {
            panic!("a file store has readers");
        };
        assert_eq!(lock(readers).len(), 1);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let failed = connections
            .read("test", move |c| {
                counted.fetch_add(1, Ordering::SeqCst);
                c.execute_batch("SELECT * FROM no_such_table")
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn urls() {
        let file = |p: &str| Ok((Location::File(PathBuf::from(p)), true));
        assert_eq!(Location::parse("sqlite:s.db"), file("s.db"));
        assert_eq!(Location::parse("sqlite://s.db"), file("s.db"));
        assert_eq!(
            Location::parse("sqlite:///tmp/a%20b.db"),
            file("/tmp/a b.db")
        );
        assert_eq!(Location::parse("sqlite:s.db?mode=rwc"), file("s.db"));
        assert_eq!(
            Location::parse("sqlite:s.db?mode=rw"),
            Ok((Location::File("s.db".into()), false))
        );
        assert_eq!(
            Location::parse("sqlite::memory:"),
            Ok((Location::Memory, true))
        );
        assert_eq!(
            Location::parse("sqlite:x?mode=memory"),
            Ok((Location::Memory, true))
        );
        assert_eq!(Location::parse("s.db"), file("s.db"));
        assert_eq!(Location::parse("sqlite:s.db?cache=shared"), file("s.db"));
        for bad in [
            "",
            "sqlite:",
            "postgres://host/db",
            "sqlite:s.db?mode=ro",
            "sqlite:s.db?immutable=1",
            "sqlite:%4",
            "sqlite:%ff",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }
}
