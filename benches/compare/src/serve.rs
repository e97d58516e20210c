//! `tas-compare serve <scenario>`: one scenario's server, in a process of its own so its
//! CPU time can be read apart from the load generator's.
//!
//! Every server has the same routes — `GET /me` (the signed-in user's id, 401 without
//! one), `GET /ping` (never reads the session) and `POST /sign-in?user=..` — behind the
//! scenario's session layer, served by axum on one tokio worker. It prints
//! `listening on ADDR` once ready and exits when its stdin closes.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::{get, post};
use std::io::Read;

use crate::scenario::Scenario;

/// One week of inactivity, for every peer alike.
pub(crate) const EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// The bench outlives the cookie cache's default 5 minutes; a browser would simply get a
/// fresh cache cookie then (one store read per session every 5 minutes).
const COOKIE_CACHE_MAX_AGE: Duration = Duration::from_secs(3600);
const SECRET: &[u8] = b"tas-compare: a fixed secret of at least 32 bytes";
/// tower-sessions' key for the user id.
const USER_KEY: &str = "user_id";

/// Where a server keeps its state; all of it is the driver's to create and remove.
#[derive(Debug, Clone)]
pub(crate) struct ServeConfig {
    pub(crate) cpu: Option<usize>,
    pub(crate) redis_url: String,
    /// Our Redis key prefix (tower-sessions' Redis store has none; the driver deletes its
    /// keys by id).
    pub(crate) redis_prefix: String,
    pub(crate) database_url: String,
    /// A PostgreSQL schema of this run.
    pub(crate) pg_schema: String,
    /// An SQLite file of this scenario.
    pub(crate) sqlite_path: String,
}

impl ServeConfig {
    pub(crate) fn to_args(&self, scenario: Scenario) -> Vec<String> {
        let mut args = vec![
            "serve".to_owned(),
            scenario.name().to_owned(),
            self.redis_url.clone(),
            self.redis_prefix.clone(),
            self.database_url.clone(),
            self.pg_schema.clone(),
            self.sqlite_path.clone(),
        ];
        args.extend(self.cpu.map(|cpu| cpu.to_string()));
        args
    }

    fn from_args(args: &[String]) -> Result<(Scenario, Self), String> {
        let [
            name,
            redis_url,
            redis_prefix,
            database_url,
            pg_schema,
            sqlite_path,
            rest @ ..,
        ] = args
        else {
            return Err("serve: expects the arguments the driver passes".into());
        };
        let scenario = Scenario::from_name(name).ok_or(format!("unknown scenario {name:?}"))?;
        let cpu = match rest {
            [] => None,
            [cpu] => Some(cpu.parse().map_err(|_| format!("bad cpu {cpu:?}"))?),
            _ => return Err("serve: too many arguments".into()),
        };
        Ok((
            scenario,
            Self {
                cpu,
                redis_url: redis_url.clone(),
                redis_prefix: redis_prefix.clone(),
                database_url: database_url.clone(),
                pg_schema: pg_schema.clone(),
                sqlite_path: sqlite_path.clone(),
            },
        ))
    }
}

pub(crate) fn main(args: &[String]) -> Result<(), String> {
    let (scenario, config) = ServeConfig::from_args(args)?;
    // Before the runtime starts its threads, so that they inherit the core.
    if let Some(cpu) = config.cpu {
        crate::affinity::pin_to(cpu)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async move {
        let router = match scenario {
            Scenario::Bare => bare(),
            _ if scenario.is_peer() => peer::router(scenario, &config).await?,
            _ => ours::router(scenario, &config).await?,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("bind: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("listening on {addr}");
        std::thread::spawn(exit_when_stdin_closes);
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .map_err(|e| format!("serve: {e}"))
    })
}

/// The driver holds our stdin; when it goes (normally or not) so do we.
fn exit_when_stdin_closes() {
    let mut buffer = [0u8; 64];
    while matches!(std::io::stdin().read(&mut buffer), Ok(n) if n > 0) {}
    std::process::exit(0);
}

#[derive(serde::Deserialize)]
struct SignIn {
    user: String,
}

async fn ping() -> &'static str {
    "pong"
}

fn bare() -> Router {
    async fn me() -> &'static str {
        "user0"
    }
    Router::new()
        .route("/me", get(me))
        .route("/ping", get(ping))
}

/// tower-sessions 0.14 and its stores, configured as their docs show.
mod peer {
    use std::str::FromStr;

    use tower_sessions::cookie::time;
    use tower_sessions::{CachingSessionStore, Expiry, MemoryStore, Session, SessionManagerLayer};
    use tower_sessions_moka_store::MokaStore;
    use tower_sessions_redis_store::RedisStore;
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
    use tower_sessions_sqlx_store::sqlx::postgres::PgPoolOptions;
    use tower_sessions_sqlx_store::sqlx::sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions,
    };
    use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

    use super::*;

    pub(super) async fn router(scenario: Scenario, config: &ServeConfig) -> Result<Router, String> {
        Ok(match scenario {
            Scenario::PeerNoCookie | Scenario::PeerMemory => with_layer(MemoryStore::default()),
            Scenario::PeerRedis => with_layer(redis(config).await?),
            Scenario::PeerMokaRedis => with_layer(CachingSessionStore::new(
                MokaStore::new(Some(100_000)),
                redis(config).await?,
            )),
            Scenario::PeerSqlite => {
                // The same file settings as ours: WAL, a 5 s busy timeout, 8 connections.
                let options = SqliteConnectOptions::from_str(&config.sqlite_path)
                    .map_err(|e| e.to_string())?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(options)
                    .await
                    .map_err(|e| format!("SQLite: {e}"))?;
                let store = SqliteStore::new(pool);
                store.migrate().await.map_err(|e| format!("SQLite: {e}"))?;
                with_layer(store)
            }
            Scenario::PeerPostgres => {
                let pool = PgPoolOptions::new()
                    .connect(&config.database_url)
                    .await
                    .map_err(|e| format!("PostgreSQL: {e}"))?;
                let store = PostgresStore::new(pool).with_schema_name(&config.pg_schema)?;
                store
                    .migrate()
                    .await
                    .map_err(|e| format!("PostgreSQL: {e}"))?;
                with_layer(store)
            }
            _ => {
                return Err(format!(
                    "{} is not a tower-sessions scenario",
                    scenario.name()
                ));
            }
        })
    }

    async fn redis(config: &ServeConfig) -> Result<RedisStore<Pool>, String> {
        let redis_config = Config::from_url(&config.redis_url).map_err(|e| e.to_string())?;
        let pool = Pool::new(redis_config, None, None, None, 1).map_err(|e| e.to_string())?;
        let _connection = pool.connect();
        pool.wait_for_connect()
            .await
            .map_err(|e| format!("Redis: {e}"))?;
        Ok(RedisStore::new(pool))
    }

    fn with_layer<S: tower_sessions::SessionStore + Clone>(store: S) -> Router {
        let layer = SessionManagerLayer::new(store)
            // Plain http on loopback, as ours below.
            .with_secure(false)
            .with_expiry(Expiry::OnInactivity(time::Duration::seconds(
                EXPIRY.as_secs() as i64,
            )));
        Router::new()
            .route("/me", get(me))
            .route("/ping", get(ping))
            .route("/sign-in", post(sign_in))
            .layer(layer)
    }

    async fn me(session: Session) -> Result<String, StatusCode> {
        match session.get::<String>(USER_KEY).await {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(StatusCode::UNAUTHORIZED),
            Err(_) => Err(StatusCode::SERVICE_UNAVAILABLE),
        }
    }

    async fn sign_in(
        session: Session,
        Query(query): Query<SignIn>,
    ) -> Result<&'static str, StatusCode> {
        session
            .insert(USER_KEY, query.user)
            .await
            .map(|()| "welcome")
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
    }
}

/// tower-auth-session with defaults, except `secure(false)` for plain http.
mod ours {
    use tower_auth_session::secondary::RedisStorage;
    use tower_auth_session::store::{PostgresStore, SqliteStore};
    use tower_auth_session::{
        CookieCache, CurrentSession, MemoryStore, SessionHandle, SessionManager,
        SessionManagerBuilder, SignInOptions,
    };

    use super::*;

    pub(super) async fn router(scenario: Scenario, config: &ServeConfig) -> Result<Router, String> {
        let builder = match scenario {
            Scenario::OursNoCookie | Scenario::OursMemory | Scenario::OursCacheMemory => {
                SessionManager::builder(MemoryStore::new())
            }
            Scenario::OursSqlite | Scenario::OursCacheSqlite => {
                SessionManager::builder(sqlite(config).await?)
            }
            Scenario::OursRedisTier | Scenario::OursCacheRedis => {
                SessionManager::builder(sqlite(config).await?)
                    .secondary_storage(redis(config).await?)
            }
            Scenario::OursRedisOnly => SessionManager::builder(redis(config).await?),
            Scenario::OursPostgres => SessionManager::builder(
                PostgresStore::builder()
                    .schema(config.pg_schema.clone())
                    .map_err(|e| e.to_string())?
                    .connect(&config.database_url)
                    .await
                    .map_err(|e| format!("PostgreSQL: {e}"))?,
            ),
            _ => return Err(format!("{} is not one of our scenarios", scenario.name())),
        };
        let cached = matches!(
            scenario,
            Scenario::OursCacheMemory | Scenario::OursCacheSqlite | Scenario::OursCacheRedis
        );
        let manager = configure(builder, cached)
            .build()
            .map_err(|e| e.to_string())?;
        if cached && !manager.cookie_cache_ready(Duration::from_secs(5)).await {
            return Err("the cookie cache did not become ready within 5 s".into());
        }
        Ok(Router::new()
            .route("/me", get(me))
            .route("/ping", get(ping))
            .route("/sign-in", post(sign_in))
            .layer(manager.layer()))
    }

    fn configure(builder: SessionManagerBuilder, cookie_cache: bool) -> SessionManagerBuilder {
        let builder = builder.secret(SECRET).secure(false).expires_in(EXPIRY);
        if cookie_cache {
            builder.cookie_cache(CookieCache::new().max_age(COOKIE_CACHE_MAX_AGE))
        } else {
            builder
        }
    }

    async fn sqlite(config: &ServeConfig) -> Result<SqliteStore, String> {
        SqliteStore::connect(&config.sqlite_path)
            .await
            .map_err(|e| format!("SQLite: {e}"))
    }

    async fn redis(config: &ServeConfig) -> Result<RedisStorage, String> {
        RedisStorage::builder(config.redis_url.clone())
            .key_prefix(config.redis_prefix.clone())
            .connect()
            .await
            .map_err(|e| format!("Redis: {e}"))
    }

    async fn me(CurrentSession(session): CurrentSession) -> String {
        session.user_id
    }

    async fn sign_in(
        handle: SessionHandle,
        Query(query): Query<SignIn>,
    ) -> Result<&'static str, StatusCode> {
        handle
            .sign_in(query.user, SignInOptions::new())
            .await
            .map(|_| "welcome")
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
    }
}
