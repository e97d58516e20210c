//! Load generator: the session layer over real HTTP, on loopback, in one process.
//!
//! ```text
//! cargo bench --bench load
//! cargo bench --bench load -- --store memory --connections 64 --seconds 10
//! ```
//!
//! It starts an axum app on `127.0.0.1:0` (hyper, HTTP/1.1), signs `--users` users in, then
//! drives each scenario over `--connections` concurrent keep-alive connections (hyper
//! client, one request in flight per connection) and prints requests per second and
//! p50 / p99 / max latency:
//!
//! | scenario | request | what it measures |
//! |---|---|---|
//! | `healthz` | `GET /healthz` | a route outside the layer: the baseline |
//! | `no_token` | `GET /api/ping`, no cookie | the layer's no-token path (budget ≥ 0.97× `healthz`) |
//! | `me` | `GET /api/me` with a valid session | MAC check + one store query + `CurrentSession` |
//! | `me_cached` | `GET /cached/me` with a session and its cookie cache | the same, resolved from the cookie cache (no I/O) |
//! | `anonymous` | `GET /api/me`, no cookie | the layer, then a 401 from the extractor |
//!
//! `/cached/*` is the same API behind a second manager with the cookie cache on, over the
//! same store.
//!
//! Scenarios take turns in `--rounds` short slices, so that a neighbour's build slowing the
//! machine down hits every scenario alike; compare the `vs healthz` column, not req/s
//! across runs. Client and server share the machine's cores.
//!
//! Options (all optional):
//!
//! | flag | default | meaning |
//! |---|---|---|
//! | `--store sqlite\|memory\|postgres` | `sqlite` | session store (SQLite: a file in a temp dir; PostgreSQL: `DATABASE_URL`, schema `tas_load`, needs `--features postgres`) |
//! | `--connections N` | 32 | concurrent keep-alive connections |
//! | `--seconds S` | 5 | measured time per scenario (split over the rounds) |
//! | `--rounds R` | 5 | slices each scenario's time is split into |
//! | `--users K` | 100 | users signed in before the `me` scenarios (on each API) |
//! | `--max-requests M` | 5000000 | stop a scenario after this many requests |
//! | `--scenarios a,b` | all | which scenarios to run |
//!
//! It only ever connects to the address it bound on 127.0.0.1, and stops by itself: every
//! scenario is bounded by time and by count, and every request by a 5 s timeout.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tower_auth_session::store::SqliteStore;
use tower_auth_session::{
    CookieCache, CurrentSession, MemoryStore, SessionHandle, SessionManager, SessionStore,
    SignInOptions,
};

/// How long one request may take before the run gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests per connection before measuring, so pools and caches are warm.
const WARM_UP_REQUESTS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Sqlite,
    Memory,
    #[cfg(feature = "postgres")]
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Healthz,
    NoToken,
    Me,
    MeCached,
    Anonymous,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Self::Healthz,
        Self::NoToken,
        Self::Me,
        Self::MeCached,
        Self::Anonymous,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Healthz => "healthz",
            Self::NoToken => "no_token",
            Self::Me => "me",
            Self::MeCached => "me_cached",
            Self::Anonymous => "anonymous",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Healthz => "/healthz",
            Self::NoToken => "/api/ping",
            Self::Me | Self::Anonymous => "/api/me",
            Self::MeCached => "/cached/me",
        }
    }

    fn expected_status(self) -> StatusCode {
        match self {
            Self::Anonymous => StatusCode::UNAUTHORIZED,
            _ => StatusCode::OK,
        }
    }

    /// The `Cookie` headers this scenario sends, one per signed-in user (none: no cookie).
    fn cookies(self, sessions: &Sessions) -> &[String] {
        match self {
            Self::Me => &sessions.store,
            Self::MeCached => &sessions.cached,
            _ => &[],
        }
    }
}

struct Options {
    store: StoreKind,
    connections: usize,
    seconds: f64,
    rounds: u32,
    users: usize,
    max_requests: u64,
    scenarios: Vec<Scenario>,
}

impl Options {
    fn parse() -> Result<Self, String> {
        let mut options = Self {
            store: StoreKind::Sqlite,
            connections: 32,
            seconds: 5.0,
            rounds: 5,
            users: 100,
            max_requests: 5_000_000,
            scenarios: Scenario::ALL.to_vec(),
        };
        // `cargo bench` appends `--bench`; it is no option of ours.
        let mut args = std::env::args().skip(1).filter(|arg| arg != "--bench");
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                return Err("usage: see the doc comment at the top of benches/load.rs".into());
            }
            let value = args.next().ok_or(format!("{flag} needs a value"))?;
            let number = |what: &str| -> Result<u64, String> {
                value.parse::<u64>().ok().filter(|n| *n > 0).ok_or(format!(
                    "{what} must be a positive whole number, got {value:?}"
                ))
            };
            match flag.as_str() {
                "--store" => {
                    options.store = match value.as_str() {
                        "sqlite" => StoreKind::Sqlite,
                        "memory" => StoreKind::Memory,
                        #[cfg(feature = "postgres")]
                        "postgres" => StoreKind::Postgres,
                        _ => {
                            return Err(format!(
                                "--store is sqlite, memory or postgres, got {value:?}"
                            ));
                        }
                    }
                }
                "--connections" => options.connections = number("--connections")? as usize,
                "--seconds" => {
                    options.seconds = value
                        .parse::<f64>()
                        .ok()
                        .filter(|s| *s > 0.0 && *s <= 600.0)
                        .ok_or(format!("--seconds must be in (0, 600], got {value:?}"))?
                }
                "--rounds" => options.rounds = number("--rounds")? as u32,
                "--users" => options.users = number("--users")? as usize,
                "--max-requests" => options.max_requests = number("--max-requests")?,
                "--scenarios" => {
                    options.scenarios = value
                        .split(',')
                        .map(|name| {
                            Scenario::ALL
                                .into_iter()
                                .find(|s| s.name() == name.trim())
                                .ok_or(format!("unknown scenario {name:?}"))
                        })
                        .collect::<Result<_, _>>()?
                }
                _ => return Err(format!("unknown flag {flag:?}")),
            }
        }
        Ok(options)
    }
}

/// The app under load: `/healthz` outside the session layer, `/api/*` inside it, and
/// `/cached/*` inside a layer with the cookie cache on.
fn app(manager: &SessionManager, cached: &SessionManager) -> Router {
    async fn healthz() -> &'static str {
        "ok"
    }
    async fn ping() -> &'static str {
        "pong"
    }
    async fn me(CurrentSession(session): CurrentSession) -> String {
        session.user_id
    }
    async fn sign_in(
        handle: SessionHandle,
        axum::extract::Query(query): axum::extract::Query<SignInQuery>,
    ) -> Result<&'static str, StatusCode> {
        handle
            .sign_in(query.user, SignInOptions::new())
            .await
            .map(|_| "welcome")
            .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
    }
    // Full paths and `merge` rather than `nest`: a nested router routes twice and rewrites
    // the URI, which would charge the scenarios inside the layer for more than the layer.
    let api = |manager: &SessionManager, prefix: &str| {
        Router::new()
            .route(&format!("{prefix}/ping"), get(ping))
            .route(&format!("{prefix}/me"), get(me))
            .route(&format!("{prefix}/sign-in"), post(sign_in))
            .layer(manager.layer())
    };
    Router::new()
        .route("/healthz", get(healthz))
        .merge(api(manager, "/api"))
        .merge(api(cached, "/cached"))
}

/// The `Cookie` header of each signed-in user, per API.
struct Sessions {
    store: Vec<String>,
    cached: Vec<String>,
}

#[derive(serde::Deserialize)]
struct SignInQuery {
    user: String,
}

async fn store(
    kind: StoreKind,
) -> Result<(Arc<dyn SessionStore>, Option<tempfile::TempDir>), String> {
    match kind {
        StoreKind::Memory => Ok((Arc::new(MemoryStore::new()), None)),
        StoreKind::Sqlite => {
            let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
            let url = format!("sqlite:{}", dir.path().join("sessions.db").display());
            let store = SqliteStore::connect(&url)
                .await
                .map_err(|e| format!("SQLite: {e}"))?;
            Ok((Arc::new(store), Some(dir)))
        }
        #[cfg(feature = "postgres")]
        StoreKind::Postgres => {
            let url = std::env::var("DATABASE_URL").map_err(|_| "DATABASE_URL is not set")?;
            let store = tower_auth_session::store::PostgresStore::builder()
                .schema("tas_load")
                .map_err(|e| e.to_string())?
                .connect(&url)
                .await
                .map_err(|e| format!("PostgreSQL: {e}"))?;
            Ok((Arc::new(store), None))
        }
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Empty<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // The connection task ends when the sender is dropped or the server closes.
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request and reads its whole body; returns the status.
async fn send(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
    cookie: Option<&str>,
    method: http::Method,
) -> Result<(StatusCode, http::HeaderMap), String> {
    let exchange = async {
        sender.ready().await.map_err(|e| e.to_string())?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "127.0.0.1");
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let request = request.body(Empty::new()).map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        body.collect().await.map_err(|e| e.to_string())?;
        Ok((parts.status, parts.headers))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| "request timed out".to_owned())?
}

/// Signs `users` users in through `{api}/sign-in` and returns, per session, the `Cookie`
/// header a browser would send next (every cookie the response set and did not expire).
async fn sign_in_users(addr: SocketAddr, api: &str, users: usize) -> Result<Vec<String>, String> {
    let mut sender = connect(addr).await?;
    let mut cookies = Vec::with_capacity(users);
    for user in 0..users {
        let path = format!("{api}/sign-in?user=user{user}");
        let (status, headers) = send(&mut sender, &path, None, http::Method::POST).await?;
        if status != StatusCode::OK {
            return Err(format!("sign-in answered {status}"));
        }
        let pairs: Vec<&str> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter(|v| !v.contains("Max-Age=0"))
            .filter_map(|v| v.split(';').next())
            .collect();
        if pairs.is_empty() {
            return Err("sign-in set no session cookie".into());
        }
        cookies.push(pairs.join("; "));
    }
    Ok(cookies)
}

/// What one connection saw in one slice.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
}

/// How many requests a scenario may still send, shared by its connections.
struct Budget {
    sent: AtomicU64,
    max: u64,
}

impl Budget {
    fn take_one(&self) -> bool {
        self.sent.fetch_add(1, Ordering::Relaxed) < self.max
    }
}

/// Runs `scenario` on every connection until `deadline` or the scenario's budget is spent;
/// returns the connections (for the next slice) and what they saw.
async fn slice(
    senders: Vec<SendRequest<Empty<Bytes>>>,
    scenario: Scenario,
    sessions: &Arc<Sessions>,
    deadline: Instant,
    budget: &Arc<Budget>,
) -> (Vec<SendRequest<Empty<Bytes>>>, Tally) {
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(index, mut sender)| {
            let sessions = Arc::clone(sessions);
            let budget = Arc::clone(budget);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut user = index;
                while Instant::now() < deadline && budget.take_one() {
                    let cookies = scenario.cookies(&sessions);
                    let cookie = (!cookies.is_empty()).then(|| {
                        user = (user + 1) % cookies.len();
                        cookies[user].as_str()
                    });
                    let started = Instant::now();
                    match send(&mut sender, scenario.path(), cookie, http::Method::GET).await {
                        Ok((status, _)) if status == scenario.expected_status() => {
                            tally.latencies.push(started.elapsed())
                        }
                        Ok(_) => tally.errors += 1,
                        Err(_) => {
                            // A broken connection cannot be reused: stop this one.
                            tally.errors += 1;
                            return (None, tally);
                        }
                    }
                }
                (Some(sender), tally)
            })
        })
        .collect();
    let mut senders = Vec::new();
    let mut total = Tally::default();
    for task in tasks {
        if let Ok((sender, tally)) = task.await {
            senders.extend(sender);
            total.latencies.extend(tally.latencies);
            total.errors += tally.errors;
        }
    }
    (senders, total)
}

struct Row {
    scenario: Scenario,
    requests: usize,
    errors: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Row {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[rank]
    }
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

async fn run(options: Options) -> Result<(), String> {
    let (store, _dir) = store(options.store).await?;
    let manager_over = |store: Arc<dyn SessionStore>, cookie_cache: bool| {
        let builder = SessionManager::builder(store)
            .secret(b"load-generator secret, 32 bytes or more")
            // Plain http on loopback: a browser would refuse `Secure` cookies here.
            .secure(false);
        let builder = if cookie_cache {
            builder.cookie_cache(CookieCache::new())
        } else {
            builder
        };
        builder.build().map_err(|e| e.to_string())
    };
    let manager = manager_over(Arc::clone(&store), false)?;
    let cached = manager_over(store, true)?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(
            listener,
            app(&manager, &cached).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .into_future(),
    );

    let sessions = Arc::new(Sessions {
        store: sign_in_users(addr, "/api", options.users).await?,
        cached: sign_in_users(addr, "/cached", options.users).await?,
    });
    let mut senders = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        senders.push(connect(addr).await?);
    }
    for sender in &mut senders {
        for scenario in &options.scenarios {
            for _ in 0..WARM_UP_REQUESTS / options.scenarios.len() {
                let cookie = scenario.cookies(&sessions).first().map(String::as_str);
                send(sender, scenario.path(), cookie, http::Method::GET).await?;
            }
        }
    }

    println!(
        "store: {:?}, {} connections, {} s per scenario in {} rounds, {} users",
        options.store, options.connections, options.seconds, options.rounds, options.users
    );
    let slice_time = Duration::from_secs_f64(options.seconds / f64::from(options.rounds));
    let mut rows: Vec<Row> = options
        .scenarios
        .iter()
        .map(|&scenario| Row {
            scenario,
            requests: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
        })
        .collect();
    let budgets: Vec<_> = rows
        .iter()
        .map(|_| {
            Arc::new(Budget {
                sent: AtomicU64::new(0),
                max: options.max_requests,
            })
        })
        .collect();
    for _ in 0..options.rounds {
        for (row, budget) in rows.iter_mut().zip(&budgets) {
            if senders.is_empty() {
                return Err("every connection broke".into());
            }
            let started = Instant::now();
            let (back, tally) = slice(
                senders,
                row.scenario,
                &sessions,
                started + slice_time,
                budget,
            )
            .await;
            senders = back;
            row.elapsed += started.elapsed();
            row.requests += tally.latencies.len();
            row.errors += tally.errors;
            row.latencies.extend(tally.latencies);
        }
    }

    let baseline = rows
        .iter()
        .find(|r| r.scenario == Scenario::Healthz)
        .map(Row::per_second);
    println!(
        "| scenario  | requests | req/s    | vs healthz | p50      | p99      | max      | errors |"
    );
    println!(
        "|-----------|----------|----------|------------|----------|----------|----------|--------|"
    );
    for row in &mut rows {
        row.latencies.sort_unstable();
        let ratio = baseline.map_or("-".to_owned(), |b| format!("{:.3}", row.per_second() / b));
        println!(
            "| {:<9} | {:>8} | {:>8.0} | {:>10} | {:>8} | {:>8} | {:>8} | {:>6} |",
            row.scenario.name(),
            row.requests,
            row.per_second(),
            ratio,
            micros(row.percentile(0.50)),
            micros(row.percentile(0.99)),
            micros(row.latencies.last().copied().unwrap_or_default()),
            row.errors,
        );
    }

    drop(senders);
    let _ = stop.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(format!("server: {e}")),
        Ok(Err(e)) => Err(format!("server task: {e}")),
        Err(_) => Err("server did not stop within 5 s".into()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("load: {message}");
            ExitCode::FAILURE
        }
    }
}
