//! Issue 21 against the real thing: a Better Auth 1.7.25 server (`interop/better-auth-
//! server/server.mjs`, npm packages pinned by its lockfile) on PostgreSQL, with and without
//! Redis, in each cookie-cache strategy; the crate's `better_auth` pieces on the same
//! database, Redis and secret. Needs `npm ci` in that directory (`.ci/run` does it and sets
//! `TAS_BETTER_AUTH_INTEROP=1`, which turns a missing install into a failure).
#![cfg(all(feature = "better-auth", feature = "postgres", feature = "redis"))]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use serde_json::{Value, json};
use tower_auth_session::better_auth::{
    BaSession, BaSessionWithUser, BetterAuthConfig, BetterAuthPostgres, BetterAuthRedis,
    BetterAuthStorage, CacheStrategy, SignedCookie, gather_cache, split_cache,
};
use tower_auth_session::sqlx::postgres::PgPool;

use crate::common::{service_url, unique_name};

const SECRET: &str = "fake-interop-secret-0123456789abcdefghijklmnopqrstuv";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Storage {
    RedisAndDatabase,
    DatabaseOnly,
    RedisOnly,
}

struct Node(Child);
impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/better-auth-server");
    if dir.join("node_modules/better-auth").is_dir() {
        return Some(dir);
    }
    if std::env::var("TAS_BETTER_AUTH_INTEROP").as_deref() == Ok("1") {
        panic!("run `npm ci` in {}", dir.display());
    }
    eprintln!("skipping: no npm install in {}", dir.display());
    None
}

/// A browser's cookie jar for one device, as plain `name → value`.
#[derive(Default, Clone)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, response: &reqwest::Response) {
        for line in response.headers().get_all("set-cookie") {
            let line = line.to_str().unwrap();
            let (pair, attributes) = line.split_once(';').unwrap_or((line, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), value.to_owned());
            }
        }
    }
    fn header(&self, only_token: bool) -> String {
        self.0
            .iter()
            .filter(|(name, _)| !only_token || name.ends_with("session_token"))
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
    fn headers(&self) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, self.header(false).parse().unwrap());
        headers
    }
}

struct Ba {
    url: String,
    http: reqwest::Client,
    _node: Node,
}

impl Ba {
    async fn post(&self, path: &str, jar: &mut Jar, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/api/auth{path}", self.url))
            .header("cookie", jar.header(false))
            .header("origin", &self.url)
            .json(&body)
            .send()
            .await
            .unwrap();
        jar.take(&response);
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
    /// `get-session` with the token cookie only: Better Auth reads its storage (its own
    /// cookie cache would outlive any revoke by design, reference §7).
    async fn session(&self, jar: &mut Jar) -> (Value, bool) {
        let response = self
            .http
            .get(format!("{}/api/auth/get-session", self.url))
            .header("cookie", jar.header(true))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "never a 500: {}",
            response.status()
        );
        let refreshed = response.headers().get_all("set-cookie").iter().any(|c| {
            c.to_str().unwrap().contains("session_token=")
                && !c.to_str().unwrap().contains("Max-Age=0")
        });
        (response.json().await.unwrap(), refreshed)
    }
    /// `get-session` with exactly these cookies.
    async fn session_with(&self, cookies: &[(String, String)]) -> Value {
        let line: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let response = self
            .http
            .get(format!("{}/api/auth/get-session", self.url))
            .header("cookie", line.join("; "))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "never a 500");
        response.json().await.unwrap()
    }

    async fn list(&self, jar: &Jar) -> Vec<String> {
        let response = self
            .http
            .get(format!("{}/api/auth/list-sessions", self.url))
            .header("cookie", jar.header(true))
            .send()
            .await
            .unwrap();
        let list: Value = response.json().await.unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

async fn start(cache: &str, storage: Storage, schema: &str, prefix: &str) -> Option<Ba> {
    let dir = server_dir()?;
    let database = service_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")?;
    let redis = service_url("REDIS_URL", "redis://127.0.0.1:6379")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new("node");
    command
        .arg("server.mjs")
        .current_dir(dir)
        .env("PORT", port.to_string())
        .env("DATABASE_URL", database)
        .env("BA_SCHEMA", schema)
        .env("BETTER_AUTH_SECRET", SECRET)
        .env("BA_REDIS_PREFIX", prefix)
        .env("BA_COOKIE_CACHE", cache)
        .env(
            "BA_STORE_SESSION_IN_DATABASE",
            (storage != Storage::RedisOnly).to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if storage == Storage::DatabaseOnly {
        command.env_remove("REDIS_URL");
    } else {
        command.env("REDIS_URL", redis);
    }
    let mut child = command.spawn().expect("node runs");
    let stdout = child.stdout.take().unwrap();
    let node = Node(child);
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.starts_with("listening on"))
    });
    let ready = tokio::time::timeout(Duration::from_secs(120), ready).await;
    assert!(matches!(ready, Ok(Ok(true))), "Better Auth did not start");
    Some(Ba {
        url: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
        _node: node,
    })
}

/// What the Rust side answers for a device's cookies: the session, after the token MAC,
/// the cache (a hint: confirmed against storage) and storage in Better Auth's order.
async fn here(storage: &BetterAuthStorage, jar: &Jar) -> Option<BaSessionWithUser> {
    let names = storage.config().cookie_names();
    let headers = jar.headers();
    let value = tower_auth_session::better_auth::first_cookie(&headers, &names.session_token)?;
    let token = SignedCookie::new(SECRET).verify(value)?;
    let now = Utc::now();
    if let (Some(codec), Some(cache)) = (
        storage.config().cookie_cache_codec(),
        gather_cache(&headers, &names.session_data),
    ) {
        if let Some(hint) = codec.read(&cache, &token, now) {
            let confirmed = storage.find(&token, now).await.unwrap()?;
            assert_eq!(confirmed.session.id, hint.session.id);
            return Some(confirmed);
        }
    }
    storage.find(&token, now).await.unwrap()
}

/// Another device signing in on Better Auth as the same user.
async fn device(ba: &Ba) -> Jar {
    let mut jar = Jar::default();
    let sign_in = json!({"email": "ada@example.test", "password": "password-1234"});
    assert_eq!(ba.post("/sign-in/email", &mut jar, sign_in).await.0, 200);
    jar
}

async fn scenario(cache: &str, mode: Storage) {
    let schema = unique_name("ba_interop");
    let prefix = format!("{schema}:");
    let Some(ba) = start(cache, mode, &schema, &prefix).await else {
        return;
    };
    let database = service_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test").unwrap();
    let redis_url = service_url("REDIS_URL", "redis://127.0.0.1:6379").unwrap();
    let mut config = BetterAuthConfig::new(SECRET);
    config.cookie_cache = cache.parse::<CacheStrategy>().ok();
    config.secondary_storage = mode != Storage::DatabaseOnly;
    config.store_session_in_database = mode != Storage::RedisOnly;
    config.redis_prefix = prefix.clone();
    let postgres = match mode {
        Storage::RedisOnly => None,
        _ => Some(BetterAuthPostgres::new(
            PgPool::connect(&database).await.unwrap(),
            Some(&schema),
            false,
        )),
    };
    let redis = match mode {
        Storage::DatabaseOnly => None,
        _ => Some(
            BetterAuthRedis::connect(&redis_url, &prefix, config.expires_in)
                .await
                .unwrap(),
        ),
    };
    let storage = BetterAuthStorage::new(config.clone(), postgres, redis).unwrap();
    let label = format!("{cache}/{mode:?}");

    // Signed in on Better Auth → the same user and session here.
    let mut one = Jar::default();
    let (status, body) = ba
        .post(
            "/sign-up/email",
            &mut one,
            json!({"email": "ada@example.test", "password": "password-1234", "name": "Ada"}),
        )
        .await;
    assert_eq!(status, 200, "{label}: {body}");
    let user_id = body["user"]["id"].as_str().unwrap().to_owned();
    let (ba_view, _) = ba.session(&mut one).await;
    let found = here(&storage, &one).await.expect(&label);
    assert_eq!(found.user.id, user_id, "{label}");
    assert_eq!(found.session.id, ba_view["session"]["id"], "{label}");
    if cache != "off" {
        assert!(
            gather_cache(&one.headers(), &config.cookie_names().session_data).is_some(),
            "{label}: a cache was set"
        );
    }
    // Tampered token, forged and foreign caches, never accepted.
    let mut tampered = one.clone();
    let token_name = config.cookie_names().session_token;
    let value = tampered.0[&token_name].clone();
    let first = if value.starts_with('X') { 'Y' } else { 'X' };
    let changed = format!("{first}{}", &value[1..]);
    tampered.0.insert(token_name.clone(), changed);
    assert!(
        here(&storage, &tampered).await.is_none(),
        "{label}: tampered"
    );
    if let Some(codec) = config.cookie_cache_codec() {
        let token = SignedCookie::new(SECRET).verify(value.as_bytes()).unwrap();
        let foreign = tower_auth_session::better_auth::CookieCacheCodec::new(
            "another-app-secret-0123456789",
            codec.strategy(),
            300,
            "1",
        );
        let forged = foreign.write(&found, Utc::now(), true);
        assert!(
            codec.read(&forged, &token, Utc::now()).is_none(),
            "{label}: foreign cache"
        );
    }

    // Sign-out and revoke-from-another-device on Better Auth → gone here.
    let two = device(&ba).await;
    assert!(here(&storage, &two).await.is_some());
    ba.post("/sign-out", &mut two.clone(), json!({})).await;
    assert!(
        here(&storage, &two).await.is_none(),
        "{label}: signed out on Better Auth"
    );
    let three = device(&ba).await;
    let three_token = SignedCookie::new(SECRET)
        .verify(three.0[&token_name].as_bytes())
        .unwrap();
    ba.post("/revoke-session", &mut one, json!({"token": three_token}))
        .await;
    assert!(
        here(&storage, &three).await.is_none(),
        "{label}: revoked from another device"
    );

    // Revoked here: one, then others → Better Auth's get-session null, list without them.
    let mut four = device(&ba).await;
    let four_token = SignedCookie::new(SECRET)
        .verify(four.0[&token_name].as_bytes())
        .unwrap();
    assert!(storage.revoke(&four_token, Utc::now()).await.unwrap());
    assert_eq!(
        ba.session(&mut four).await.0,
        Value::Null,
        "{label}: revoked here"
    );
    let mut five = device(&ba).await;
    let one_token = SignedCookie::new(SECRET)
        .verify(one.0[&token_name].as_bytes())
        .unwrap();
    let others = storage
        .revoke_user(&user_id, Some(&one_token), Utc::now())
        .await
        .unwrap();
    assert!(!others.is_empty(), "{label}");
    assert_eq!(
        ba.session(&mut five).await.0,
        Value::Null,
        "{label}: others revoked here"
    );
    assert_eq!(
        ba.list(&one).await,
        [found.session.id.as_str()],
        "{label}: list-sessions"
    );

    // A session made here is one Better Auth accepts, cache included.
    let now = Utc::now().trunc_subsecs(3);
    let token: String = unique_name("t")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let mut made = BaSessionWithUser {
        session: BaSession {
            id: unique_name("rs").replace('_', ""),
            token: token.clone(),
            user_id: user_id.clone(),
            expires_at: now + chrono::Duration::days(7),
            created_at: now,
            updated_at: now,
            ip_address: Some(String::new()),
            user_agent: Some("tower-auth-session".to_owned()),
            extra: Default::default(),
        },
        user: found.user.clone(),
    };
    storage.create(&made, now).await.unwrap();
    let mut rust = Jar::default();
    rust.0
        .insert(token_name.clone(), SignedCookie::new(SECRET).sign(&token));
    if let Some(codec) = config.cookie_cache_codec() {
        // A cache written here is believed by Better Auth: it still serves a session
        // from it after the storage has lost it (its own cache semantics, reference §7),
        // which only a cache it accepted can do.
        let mut probe = made.clone();
        probe.session.id.push('p');
        probe.session.token.push('P');
        storage.create(&probe, now).await.unwrap();
        let value = codec.write(&probe, now, true);
        storage.revoke(&probe.session.token, now).await.unwrap();
        let names = config.cookie_names();
        let cookies = vec![
            (
                names.session_token.clone(),
                SignedCookie::new(SECRET).sign(&probe.session.token),
            ),
            (names.session_data.clone(), value),
        ];
        let believed = ba.session_with(&cookies).await;
        assert_eq!(
            believed["session"]["id"],
            probe.session.id.as_str(),
            "{label}: our cache"
        );
    }
    let (view, refreshed) = ba.session(&mut rust.clone()).await;
    assert_eq!(
        view["session"]["id"],
        made.session.id.as_str(),
        "{label}: made here"
    );
    assert!(!refreshed);

    // Refreshed by Better Auth (aged past updateAge) → accepted here with its new expiry.
    let aged = now + chrono::Duration::days(6) - chrono::Duration::minutes(1);
    assert!(storage.refresh(&made, aged, now).await.unwrap());
    let (_, refreshed) = ba.session(&mut rust.clone()).await;
    assert!(refreshed, "{label}: Better Auth refreshed it");
    let after = here(&storage, &rust).await.expect(&label);
    assert!(
        after.session.expires_at > now + chrono::Duration::days(6),
        "{label}"
    );
    // Refreshed here → Better Auth accepts and does not refresh again at once.
    made = after;
    let later = Utc::now().trunc_subsecs(3);
    assert!(
        storage
            .refresh(&made, later + chrono::Duration::days(7), later)
            .await
            .unwrap()
    );
    let (view, refreshed) = ba.session(&mut rust.clone()).await;
    assert_eq!(view["session"]["id"], made.session.id.as_str(), "{label}");
    assert!(!refreshed, "{label}: no second refresh");

    // An expired session (a row past expiresAt) → refused on both sides.
    if mode == Storage::DatabaseOnly {
        let mut old = made.clone();
        old.session.id.push('x');
        old.session.token = format!("{token}Old");
        old.session.expires_at = now - chrono::Duration::seconds(1);
        storage.create(&old, now).await.unwrap();
        let mut jar = Jar::default();
        jar.0.insert(
            token_name.clone(),
            SignedCookie::new(SECRET).sign(&old.session.token),
        );
        assert!(here(&storage, &jar).await.is_none(), "{label}: expired");
        assert_eq!(ba.session(&mut jar).await.0, Value::Null);
    }

    // Revoke-all on Better Auth → every session refused here, ours included.
    let six = device(&ba).await;
    ba.post("/revoke-sessions", &mut one, json!({})).await;
    for jar in [&one, &six, &rust] {
        assert!(
            here(&storage, jar).await.is_none(),
            "{label}: revoke-all on Better Auth"
        );
    }
    // Revoke-all here → Better Auth refuses every session.
    let mut seven = device(&ba).await;
    let mut eight = device(&ba).await;
    storage
        .revoke_user(&user_id, None, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        ba.session(&mut seven).await.0,
        Value::Null,
        "{label}: revoke-all here"
    );
    assert_eq!(
        ba.session(&mut eight).await.0,
        Value::Null,
        "{label}: revoke-all here"
    );
    eprintln!("better-auth interop {label}: every step held");
}

macro_rules! interop {
    ($($name:ident: $cache:literal, $mode:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            scenario($cache, Storage::$mode).await;
        }
    )*};
}

interop! {
    cache_off_redis_and_database: "off", RedisAndDatabase;
    cache_off_database_only: "off", DatabaseOnly;
    cache_off_redis_only: "off", RedisOnly;
    compact_redis_and_database: "compact", RedisAndDatabase;
    compact_database_only: "compact", DatabaseOnly;
    compact_redis_only: "compact", RedisOnly;
    jwt_redis_and_database: "jwt", RedisAndDatabase;
    jwt_database_only: "jwt", DatabaseOnly;
    jwt_redis_only: "jwt", RedisOnly;
    jwe_redis_and_database: "jwe", RedisAndDatabase;
    jwe_database_only: "jwe", DatabaseOnly;
    jwe_redis_only: "jwe", RedisOnly;
}

/// Better Auth splits a cache past 4050 bytes into `session_data.N` chunks (a 6000-byte
/// name here); they are joined and verified here, in every strategy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn better_auths_chunked_caches_are_read_here() {
    for cache in ["compact", "jwt", "jwe"] {
        let schema = unique_name("ba_chunks");
        let prefix = format!("{schema}:");
        let Some(ba) = start(cache, Storage::DatabaseOnly, &schema, &prefix).await else {
            return;
        };
        let database =
            service_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test").unwrap();
        let mut jar = Jar::default();
        let name = "n".repeat(6000);
        let body = json!({"email": "long@example.test", "password": "password-1234", "name": name});
        assert_eq!(ba.post("/sign-up/email", &mut jar, body).await.0, 200);
        let mut config = BetterAuthConfig::new(SECRET);
        config.cookie_cache = cache.parse::<CacheStrategy>().ok();
        let names = config.cookie_names();
        assert!(
            jar.0.contains_key(&format!("{}.1", names.session_data)),
            "{cache}: Better Auth chunked its cache"
        );
        let joined = gather_cache(&jar.headers(), &names.session_data).unwrap();
        let headers = jar.headers();
        let value = tower_auth_session::better_auth::first_cookie(&headers, &names.session_token);
        let token = SignedCookie::new(SECRET).verify(value.unwrap()).unwrap();
        let codec = config.cookie_cache_codec().unwrap();
        let read = codec.read(&joined, &token, Utc::now()).expect(cache);
        assert_eq!(read.user.name.len(), 6000);
        let pool = PgPool::connect(&database).await.unwrap();
        let storage = BetterAuthStorage::new(
            config,
            Some(BetterAuthPostgres::new(pool, Some(&schema), false)),
            None,
        )
        .unwrap();
        assert_eq!(
            here(&storage, &jar).await.unwrap().session.id,
            read.session.id
        );

        // Chunks written here are joined and believed by Better Auth (it serves the
        // session from them after the row is gone).
        let value = codec.write(&read, Utc::now(), true);
        let attributes = "; Max-Age=300; Path=/; HttpOnly; SameSite=Lax".len();
        let chunks = split_cache(&names.session_data, &value, attributes).unwrap();
        assert!(chunks.len() > 1, "{cache}");
        storage.revoke(&token, Utc::now()).await.unwrap();
        let signed = SignedCookie::new(SECRET).sign(&token);
        let mut cookies = vec![(names.session_token.clone(), signed)];
        cookies.extend(chunks);
        let believed = ba.session_with(&cookies).await;
        assert_eq!(
            believed["session"]["id"],
            read.session.id.as_str(),
            "{cache}: our chunks"
        );
    }
}
