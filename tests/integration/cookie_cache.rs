//! The `session_data` cookie cache, driven through the real layer: hits cost no store
//! call, anything tampered, foreign or expired falls through to the store (still 200 for a
//! valid token, never 5xx), and revocations take effect on the very next request.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use axum::routing;
use axum::{Json, Router};
use chrono::Duration;
use common::*;
use http::{HeaderValue, Request, StatusCode, header};
use serde_json::{Value, json};
use tower_auth_session::{
    CookieCache, CurrentSession, ManualClock, MemoryStore, SessionHandle, SessionManager,
    SessionManagerBuilder, SignInOptions,
};

const TOKEN: &str = "__Host-tas.session_token";
const CACHE: &str = "__Host-tas.session_data";

/// A browser's cookie jar over real `Set-Cookie` headers (name → value).
#[derive(Debug, Clone, Default)]
struct Jar(BTreeMap<String, String>);

impl Jar {
    fn absorb(&mut self, reply: &Reply) {
        for line in reply.set_cookies() {
            let pair = line.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if line.contains("Max-Age=0") {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn cache_names(&self) -> Vec<String> {
        self.0
            .keys()
            .filter(|n| n.starts_with(CACHE))
            .cloned()
            .collect()
    }

    fn without_cache(&self) -> Jar {
        let mut jar = self.clone();
        jar.0.retain(|n, _| !n.starts_with(CACHE));
        jar
    }
}

struct Setup {
    manager: SessionManager,
    app: Router,
    counts: Counts,
    clock: ManualClock,
    _dir: Option<tempfile::TempDir>,
}

async fn setup(
    kind: StoreKind,
    configure: impl FnOnce(SessionManagerBuilder) -> SessionManagerBuilder,
) -> Setup {
    let (store, dir) = make_store(kind).await;
    let (store, counts) = CountingStore::new(store);
    let clock = ManualClock::new();
    let builder = SessionManager::builder(store)
        .secret(SECRET)
        .clock(clock.clone())
        .cookie_cache(CookieCache::new());
    let manager = configure(builder).build().unwrap();
    Setup {
        app: cache_app(&manager),
        manager,
        counts,
        clock,
        _dir: dir,
    }
}

/// Sign-in (`?user=…&remember=false&size=N` adds an app field of N bytes), `/me`,
/// `/sensitive` (an authoritative read), sign-out.
fn cache_app(manager: &SessionManager) -> Router {
    async fn sign_in(
        handle: SessionHandle,
        axum::extract::Query(q): axum::extract::Query<BTreeMap<String, String>>,
    ) -> Result<Json<Value>, (StatusCode, String)> {
        let user = q.get("user").cloned().unwrap_or_else(|| "alice".into());
        let remember = q.get("remember").is_none_or(|v| v != "false");
        let size: usize = q.get("size").and_then(|s| s.parse().ok()).unwrap_or(0);
        let mut options = SignInOptions::new().remember_me(remember);
        if size > 0 {
            let blob: String = (0..size)
                .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
                .collect();
            options = options.fields(&json!({ "blob": blob })).unwrap();
        }
        let session = handle
            .sign_in(user, options)
            .await
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        Ok(Json(json!({ "session": session })))
    }
    async fn me(CurrentSession(s): CurrentSession) -> Json<Value> {
        let blob_len = s.fields.get("blob").and_then(Value::as_str).map(str::len);
        Json(json!({ "userId": s.user_id, "sessionId": s.id, "blobLen": blob_len }))
    }
    async fn sensitive(handle: SessionHandle) -> (StatusCode, Json<Value>) {
        match handle.authoritative().await {
            Ok(Some(s)) => (StatusCode::OK, Json(json!({ "userId": s.user_id }))),
            Ok(None) => (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": "unauthenticated" })),
            ),
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, Json(Value::Null)),
        }
    }
    async fn rotate(handle: SessionHandle) -> StatusCode {
        match handle.rotate().await {
            Ok(_) => StatusCode::OK,
            Err(_) => StatusCode::UNAUTHORIZED,
        }
    }
    async fn sign_out(handle: SessionHandle) -> Result<Json<Value>, (StatusCode, String)> {
        handle
            .sign_out()
            .await
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        Ok(Json(json!({ "success": true })))
    }
    Router::new()
        .route("/sign-in", routing::post(sign_in))
        .route("/me", routing::get(me))
        .route("/sensitive", routing::get(sensitive))
        .route("/sign-out", routing::post(sign_out))
        .route("/rotate", routing::post(rotate))
        .layer(manager.layer())
}

async fn sign_in_jar(app: &Router, query: &str) -> (Jar, Reply) {
    let reply = send(app, post(&format!("/sign-in?{query}"), None)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let mut jar = Jar::default();
    jar.absorb(&reply);
    (jar, reply)
}

async fn me(app: &Router, cookie: &str) -> Reply {
    send(app, get("/me", Some(cookie))).await
}

/// A request carrying exactly these cookie bytes (which may not be valid UTF-8).
async fn me_raw(app: &Router, cookie: &[u8]) -> Option<Reply> {
    let value = HeaderValue::from_bytes(cookie).ok()?;
    let mut request = Request::get("/me").body(axum::body::Body::empty()).unwrap();
    request.headers_mut().insert(header::COOKIE, value);
    Some(send(app, request).await)
}

async fn valid_cache_resolves_with_zero_store_calls(kind: StoreKind) {
    let s = setup(kind, |b| b).await;
    let (jar, reply) = sign_in_jar(&s.app, "user=alice").await;
    let cache = reply.set_cookie(CACHE).expect("sign-in issues the cache");
    assert!(cache.contains("Max-Age=300;"), "{cache}");
    assert!(
        cache.contains("HttpOnly") && cache.contains("Secure"),
        "{cache}"
    );
    let before = s.counts.total();
    for _ in 0..20 {
        let reply = me(&s.app, &jar.header()).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["userId"], "alice");
        assert_eq!(
            reply.json()["sessionId"],
            reply_session_id(&s.app, &jar).await
        );
        // A hit writes nothing: no refresh, no re-issue.
        assert!(reply.set_cookies().is_empty(), "{:?}", reply.set_cookies());
    }
    assert_eq!(s.counts.total(), before, "no store call on a cache hit");
}

async fn reply_session_id(app: &Router, jar: &Jar) -> Value {
    me(app, &jar.header()).await.json()["sessionId"].clone()
}

async fn cache_is_issued_whenever_the_store_is_read(kind: StoreKind) {
    let s = setup(kind, |b| b).await;
    let (jar, _) = sign_in_jar(&s.app, "user=alice").await;
    let token_only = jar.without_cache();
    let finds = s.counts.finds();
    let reply = me(&s.app, &token_only.header()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(s.counts.finds(), finds + 1);
    assert!(
        reply.set_cookie(TOKEN).is_none(),
        "the token cookie is untouched"
    );
    let mut rewarmed = token_only.clone();
    rewarmed.absorb(&reply);
    assert_eq!(rewarmed.cache_names(), [CACHE]);
    let reply = me(&s.app, &rewarmed.header()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(s.counts.finds(), finds + 1, "the re-issued cache is used");
}

/// Sends `cookie` and checks that the cache was ignored: resolved by the store as alice,
/// 200, with a fresh cache in the response.
async fn assert_falls_through(s: &Setup, cookie: &[u8], what: &str) {
    let finds = s.counts.finds();
    let Some(reply) = me_raw(&s.app, cookie).await else {
        return; // not a valid header value: no client can send it
    };
    assert_eq!(reply.status, StatusCode::OK, "{what}: {}", reply.body);
    assert_eq!(reply.json()["userId"], "alice", "{what}");
    assert_eq!(
        s.counts.finds(),
        finds + 1,
        "{what}: must be read from the store"
    );
    assert!(
        reply
            .set_cookies()
            .iter()
            .any(|c| c.starts_with(CACHE) && !c.contains("Max-Age=0")),
        "{what}: a fresh cache is issued: {:?}",
        reply.set_cookies()
    );
}

#[tokio::test]
async fn every_bit_flip_truncation_and_extension_of_the_cache_falls_through() {
    let s = setup(StoreKind::Memory, |b| b).await;
    let (jar, _) = sign_in_jar(&s.app, "user=alice").await;
    let token = format!("{TOKEN}={}", jar.0[TOKEN]);
    let value = jar.0[CACHE].clone().into_bytes();
    let with_cache = |v: &[u8]| [format!("{token}; {CACHE}=").as_bytes(), v].concat();
    for i in 0..value.len() {
        for bit in 0..8 {
            let mut flipped = value.clone();
            flipped[i] ^= 1 << bit;
            assert_falls_through(&s, &with_cache(&flipped), &format!("byte {i} bit {bit}")).await;
        }
    }
    for len in [0, 1, 3, value.len() / 2, value.len() - 1] {
        assert_falls_through(
            &s,
            &with_cache(&value[..len]),
            &format!("truncated to {len}"),
        )
        .await;
    }
    for extra in ["A", "AAAA", ".", "%00"] {
        let longer = [&value[..], extra.as_bytes()].concat();
        assert_falls_through(&s, &with_cache(&longer), &format!("appended {extra}")).await;
    }
    let renamed = format!("{token}; __Host-tas.session_datb={}", jar.0[CACHE]);
    assert_falls_through(&s, renamed.as_bytes(), "renamed").await;
    let duplicated = format!("{}; {CACHE}={}", jar.header(), jar.0[CACHE]);
    assert_falls_through(&s, duplicated.as_bytes(), "duplicated").await;
    // The whole test ran on store reads; the original still hits.
    let finds = s.counts.finds();
    assert_eq!(me(&s.app, &jar.header()).await.status, StatusCode::OK);
    assert_eq!(s.counts.finds(), finds);
}

async fn another_users_cache_next_to_my_token_is_ignored(kind: StoreKind) {
    let s = setup(kind, |b| b).await;
    let (alice, _) = sign_in_jar(&s.app, "user=alice").await;
    let (bob, _) = sign_in_jar(&s.app, "user=bob").await;
    let mixed = format!("{TOKEN}={}; {CACHE}={}", alice.0[TOKEN], bob.0[CACHE]);
    assert_falls_through(&s, mixed.as_bytes(), "bob's cache with alice's token").await;
    // And the cache of another session of the same user is no better.
    let (alice2, _) = sign_in_jar(&s.app, "user=alice").await;
    let mixed = format!("{TOKEN}={}; {CACHE}={}", alice.0[TOKEN], alice2.0[CACHE]);
    assert_falls_through(&s, mixed.as_bytes(), "another session's cache").await;
}

async fn chunked_cache_hits_and_every_chunk_anomaly_falls_through(kind: StoreKind) {
    let s = setup(kind, |b| b).await;
    let (jar, reply) = sign_in_jar(&s.app, "user=alice&size=5000").await;
    let names = jar.cache_names();
    assert_eq!(
        names,
        [format!("{CACHE}.0"), format!("{CACHE}.1")],
        "{:?}",
        reply.set_cookies()
    );
    for line in reply.set_cookies() {
        let name_value = line.split(';').next().unwrap();
        assert!(name_value.len() <= 4096, "{} bytes", name_value.len());
    }
    let finds = s.counts.finds();
    let hit = me(&s.app, &jar.header()).await;
    assert_eq!(hit.status, StatusCode::OK);
    assert_eq!(
        hit.json()["blobLen"],
        5000,
        "app fields come back from the cache"
    );
    assert_eq!(s.counts.finds(), finds, "a chunked cache hits too");

    let token = format!("{TOKEN}={}", jar.0[TOKEN]);
    let (c0, c1) = (&jar.0[&names[0]], &jar.0[&names[1]]);
    let cases = [
        ("dropped .1", format!("{token}; {CACHE}.0={c0}")),
        ("dropped .0", format!("{token}; {CACHE}.1={c1}")),
        (
            "reordered",
            format!("{token}; {CACHE}.0={c1}; {CACHE}.1={c0}"),
        ),
        ("gap", format!("{token}; {CACHE}.0={c0}; {CACHE}.2={c1}")),
        (
            "appended chunk",
            format!("{token}; {CACHE}.0={c0}; {CACHE}.1={c1}; {CACHE}.2=AAAA"),
        ),
        (
            "plain and chunks",
            format!("{token}; {CACHE}={c0}; {CACHE}.0={c0}; {CACHE}.1={c1}"),
        ),
        (
            "duplicate chunk",
            format!("{token}; {CACHE}.0={c0}; {CACHE}.1={c1}; {CACHE}.1={c1}"),
        ),
        ("joined into one", format!("{token}; {CACHE}={c0}{c1}")),
    ];
    for (what, cookie) in cases {
        assert_falls_through(&s, cookie.as_bytes(), what).await;
    }
}

async fn a_shorter_cache_expires_the_stale_chunks(kind: StoreKind) {
    let s = setup(kind, |b| b).await;
    let (mut jar, _) = sign_in_jar(&s.app, "user=alice&size=8000").await;
    assert_eq!(jar.cache_names().len(), 3);
    // Signing in again from the same browser gives a small session.
    let reply = send(&s.app, post("/sign-in?user=alice", Some(&jar.header()))).await;
    assert_eq!(reply.status, StatusCode::OK);
    for i in 0..3 {
        assert!(
            reply.clears(&format!("{CACHE}.{i}")),
            "{:?}",
            reply.set_cookies()
        );
    }
    jar.absorb(&reply);
    assert_eq!(jar.cache_names(), [CACHE]);
    // And the other way round: the plain cookie is expired when chunks replace it.
    let reply = send(
        &s.app,
        post("/sign-in?user=alice&size=5000", Some(&jar.header())),
    )
    .await;
    assert!(reply.clears(CACHE), "{:?}", reply.set_cookies());
    jar.absorb(&reply);
    assert_eq!(jar.cache_names().len(), 2);
    let finds = s.counts.finds();
    assert_eq!(me(&s.app, &jar.header()).await.status, StatusCode::OK);
    assert_eq!(s.counts.finds(), finds);
}

async fn a_session_too_large_for_the_cap_is_served_from_the_store(kind: StoreKind) {
    let s = setup(kind, |b| b).await;
    let (jar, reply) = sign_in_jar(&s.app, "user=alice&size=20000").await;
    assert!(jar.cache_names().is_empty(), "{:?}", reply.set_cookies());
    let finds = s.counts.finds();
    let reply = me(&s.app, &jar.header()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["blobLen"], 20000);
    assert_eq!(s.counts.finds(), finds + 1);
}

async fn an_expired_cache_is_ignored_even_if_the_browser_keeps_it(kind: StoreKind) {
    let s = setup(kind, |b| b).await;
    let (jar, _) = sign_in_jar(&s.app, "user=alice").await;
    s.clock.advance(Duration::seconds(299));
    let finds = s.counts.finds();
    assert_eq!(me(&s.app, &jar.header()).await.status, StatusCode::OK);
    assert_eq!(s.counts.finds(), finds, "still fresh at 299 s");
    // The browser ignored Max-Age=300 and still sends it.
    s.clock.advance(Duration::seconds(1));
    assert_falls_through(&s, jar.header().as_bytes(), "expired cache").await;
}

async fn a_cache_hit_never_slides_and_the_refresh_goes_to_the_store(kind: StoreKind) {
    let s = setup(kind, |b| b.update_age(StdDuration::from_secs(120))).await;
    let (mut jar, _) = sign_in_jar(&s.app, "user=alice").await;
    s.clock.advance(Duration::seconds(100));
    let reply = me(&s.app, &jar.header()).await;
    assert!(reply.set_cookies().is_empty());
    assert_eq!(s.counts.updates(), 0);
    // Due for the refresh: the cache steps aside so the store can slide the session.
    s.clock.advance(Duration::seconds(30));
    let reply = me(&s.app, &jar.header()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(s.counts.updates(), 1);
    assert!(reply.set_cookie(TOKEN).is_some(), "refreshed token cookie");
    assert!(
        reply.set_cookie(CACHE).is_some(),
        "and a cache of the refreshed session"
    );
    jar.absorb(&reply);
    let total = s.counts.total();
    assert_eq!(me(&s.app, &jar.header()).await.status, StatusCode::OK);
    assert_eq!(s.counts.total(), total);
}

async fn revocations_reach_the_cache_on_the_very_next_request(kind: StoreKind) {
    let s = setup(kind, |b| b).await;
    let (laptop, reply) = sign_in_jar(&s.app, "user=alice").await;
    let laptop_id = reply.json()["session"]["id"].as_str().unwrap().to_owned();
    let (phone, _) = sign_in_jar(&s.app, "user=alice").await;
    let (bob, _) = sign_in_jar(&s.app, "user=bob").await;
    for jar in [&laptop, &phone, &bob] {
        assert_eq!(me(&s.app, &jar.header()).await.status, StatusCode::OK);
    }

    assert!(s.manager.revoke(&laptop_id).await.unwrap());
    let reply = me(&s.app, &laptop.header()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply.clears(TOKEN) && reply.clears(CACHE),
        "{:?}",
        reply.set_cookies()
    );
    let finds = s.counts.finds();
    assert_eq!(me(&s.app, &phone.header()).await.status, StatusCode::OK);
    assert_eq!(s.counts.finds(), finds, "other sessions keep their cache");

    assert_eq!(s.manager.revoke_user("alice").await.unwrap(), 1);
    assert_eq!(
        me(&s.app, &phone.header()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(me(&s.app, &bob.header()).await.status, StatusCode::OK);
}

async fn revoke_user_with_many_sessions_reaches_every_cache(kind: StoreKind) {
    let s = setup(kind, |b| b).await;
    let mut jars = Vec::new();
    for _ in 0..12 {
        jars.push(sign_in_jar(&s.app, "user=alice").await.0);
    }
    let (bob, _) = sign_in_jar(&s.app, "user=bob").await;
    assert_eq!(s.manager.revoke_user("alice").await.unwrap(), 12);
    for jar in &jars {
        assert_eq!(
            me(&s.app, &jar.header()).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let finds = s.counts.finds();
    assert_eq!(me(&s.app, &bob.header()).await.status, StatusCode::OK);
    assert_eq!(s.counts.finds(), finds);
    // A session created after the revoke-all (a millisecond later: the per-user cut-off
    // is inclusive) is cached as usual.
    s.clock.advance(Duration::milliseconds(1));
    let (fresh, _) = sign_in_jar(&s.app, "user=alice").await;
    let finds = s.counts.finds();
    assert_eq!(me(&s.app, &fresh.header()).await.status, StatusCode::OK);
    assert_eq!(s.counts.finds(), finds);
}

async fn a_copied_cache_dies_with_sign_out(kind: StoreKind) {
    let s = setup(kind, |b| b).await;
    let (jar, _) = sign_in_jar(&s.app, "user=alice").await;
    let stolen = jar.header();
    let reply = send(&s.app, post("/sign-out", Some(&jar.header()))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.clears(CACHE));
    let reply = me(&s.app, &stolen).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // Signing in over a session revokes it, and its cache with it.
    let (jar, _) = sign_in_jar(&s.app, "user=alice").await;
    let old = jar.header();
    let reply = send(&s.app, post("/sign-in?user=alice", Some(&old))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(me(&s.app, &old).await.status, StatusCode::UNAUTHORIZED);
}

async fn rotation_retires_the_caches_of_the_old_token(kind: StoreKind) {
    let s = setup(kind, |b| b).await;
    let (mut jar, _) = sign_in_jar(&s.app, "user=alice").await;
    let old = jar.header();
    assert_eq!(me(&s.app, &old).await.status, StatusCode::OK);
    let reply = send(&s.app, post("/rotate", Some(&old))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.set_cookie(CACHE).is_some(),
        "a cache for the new token"
    );
    jar.absorb(&reply);
    // The old token with its (still unexpired, validly signed) cache: refused.
    assert_eq!(me(&s.app, &old).await.status, StatusCode::UNAUTHORIZED);
    let finds = s.counts.finds();
    let reply = me(&s.app, &jar.header()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(s.counts.finds(), finds, "the new token's cache hits");
}

async fn authoritative_reads_bypass_the_cache(kind: StoreKind) {
    // A store shared with a "remote" manager that has no way to reach this one's
    // revocation set: only an authoritative read can notice its revoke.
    let (store, dir) = make_store(kind).await;
    let (counting, counts) = CountingStore::new(store.clone());
    let local = SessionManager::builder(counting)
        .secret(SECRET)
        .cookie_cache(CookieCache::new())
        .build()
        .unwrap();
    let remote = SessionManager::builder(store)
        .secret(SECRET)
        .build()
        .unwrap();
    let app = cache_app(&local);
    let (jar, reply) = sign_in_jar(&app, "user=alice").await;
    let id = reply.json()["session"]["id"].as_str().unwrap().to_owned();

    let finds = counts.finds();
    let reply = send(&app, get("/sensitive", Some(&jar.header()))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        counts.finds(),
        finds + 1,
        "an authoritative read asks the store"
    );

    assert!(remote.revoke(&id).await.unwrap());
    let reply = send(&app, get("/sensitive", Some(&jar.header()))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply.clears(TOKEN) && reply.clears(CACHE),
        "{:?}",
        reply.set_cookies()
    );
    drop(dir);
}

async fn a_new_cache_version_ignores_older_caches(kind: StoreKind) {
    let (store, _dir) = make_store(kind).await;
    let (counting, counts) = CountingStore::new(store);
    let build = |version: &str| {
        SessionManager::builder(counting.clone())
            .secret(SECRET)
            .cookie_cache(CookieCache::new().version(version))
            .build()
            .unwrap()
    };
    let (old, new) = (build("1"), build("2"));
    let (jar, _) = sign_in_jar(&cache_app(&old), "user=alice").await;
    let new_app = cache_app(&new);
    let finds = counts.finds();
    let reply = me(&new_app, &jar.header()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(counts.finds(), finds + 1);
    assert!(
        reply.set_cookie(CACHE).is_some(),
        "re-issued under the new version"
    );
}

async fn encrypted_caches_hit_and_hide_the_session(kind: StoreKind) {
    let (store, _dir) = make_store(kind).await;
    let (counting, counts) = CountingStore::new(store);
    let build = |encrypted: bool| {
        SessionManager::builder(counting.clone())
            .secret(SECRET)
            .cookie_cache(CookieCache::new().encrypted(encrypted))
            .build()
            .unwrap()
    };
    let app = cache_app(&build(true));
    let (jar, _) = sign_in_jar(&app, "user=alice-the-user").await;
    let total = counts.total();
    let reply = me(&app, &jar.header()).await;
    assert_eq!(reply.json()["userId"], "alice-the-user");
    assert_eq!(counts.total(), total, "encrypted caches hit too");
    use base64::Engine as _;
    let value = &jar.0[CACHE];
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&value[value.find('.').unwrap() + 1..])
        .unwrap();
    assert!(!body.windows(10).any(|w| w == b"alice-the-"));
    // A manager that signs but does not encrypt does not accept it.
    let signing = cache_app(&build(false));
    let finds = counts.finds();
    assert_eq!(me(&signing, &jar.header()).await.status, StatusCode::OK);
    assert_eq!(counts.finds(), finds + 1);
}

async fn a_session_that_is_not_remembered_gets_a_browser_session_cache(kind: StoreKind) {
    let s = setup(kind, |b| b).await;
    let (_, reply) = sign_in_jar(&s.app, "user=alice&remember=false").await;
    let cache = reply.set_cookie(CACHE).unwrap();
    assert!(!cache.contains("Max-Age"), "{cache}");
}

async fn bad_tokens_clear_every_cache_cookie(kind: StoreKind) {
    let s = setup(kind, |b| b).await;
    let (jar, _) = sign_in_jar(&s.app, "user=alice&size=5000").await;
    let mut forged = jar.clone();
    forged.0.insert(TOKEN.into(), "k0.forged.value".into());
    let reply = me(&s.app, &forged.header()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    for name in jar.cache_names() {
        assert!(reply.clears(&name), "{name}: {:?}", reply.set_cookies());
    }
}

/// A cache hit does not check the token's own MAC: the cache, bound to SHA-256 of the
/// token bytes, vouches for them (ARCHITECTURE.md, "The token MAC on a cache hit"). So a
/// token that was never issued must still be refused next to a perfectly valid cache,
/// before any store is read, and its cookies cleared.
#[tokio::test]
async fn forged_tokens_next_to_a_valid_cache_are_still_refused() {
    use tower_auth_session::{Key, KeyRing, Token};
    let s = setup(StoreKind::Memory, |b| b).await;
    let (alice, _) = sign_in_jar(&s.app, "user=alice").await;
    let (bob, _) = sign_in_jar(&s.app, "user=bob").await;
    let finds = s.counts.finds();
    assert_eq!(me(&s.app, &alice.header()).await.status, StatusCode::OK);
    assert_eq!(s.counts.finds(), finds, "the real pair is a cache hit");

    let with_token = |value: String| {
        let mut jar = alice.clone();
        jar.0.insert(TOKEN.into(), value);
        jar.header()
    };
    // Our key id, another secret: a well-formed token we never issued.
    let forger = KeyRing::new(vec![Key::new("k0", [7u8; 32]).unwrap()]).unwrap();
    let forged = forger.sign_token(TOKEN, &Token::generate());
    // Bob's real token bytes under a garbage MAC, next to Alice's cache.
    let bobs = bob.0[TOKEN].clone();
    let (bobs_signed, _) = bobs.rsplit_once('.').unwrap();
    let garbled_bob = format!("{bobs_signed}.{}", "A".repeat(43));
    // Alice's token bytes under a key id the ring does not hold.
    let alices = alice.0[TOKEN].clone();
    let unknown_kid = format!("zz.{}", alices.split_once('.').unwrap().1);
    for (what, value) in [
        ("a token signed with another secret", forged),
        ("another user's token bytes with a bad MAC", garbled_bob),
        ("a key id the ring does not hold", unknown_kid),
        ("a token that is not base64", "k0.!!!.!!!".to_owned()),
    ] {
        let reply = me(&s.app, &with_token(value)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(reply.clears(TOKEN), "{what}: {:?}", reply.set_cookies());
        assert!(reply.clears(CACHE), "{what}: {:?}", reply.set_cookies());
        assert_eq!(s.counts.finds(), finds, "{what}: refused before any store");
    }

    // The one thing the skipped MAC check lets through: Alice's own token bytes with a
    // damaged MAC next to the cache issued for them. Whoever has those bytes has the
    // credential (the MAC is no secret beside them), so this is Alice's session either way.
    let (alices_signed, _) = alices.rsplit_once('.').unwrap();
    let damaged = with_token(format!("{alices_signed}.{}", "A".repeat(43)));
    assert_eq!(me(&s.app, &damaged).await.status, StatusCode::OK);
    // Without the cache to vouch, the MAC is checked as before.
    let mut bare = alice.without_cache();
    bare.0
        .insert(TOKEN.into(), format!("{alices_signed}.{}", "A".repeat(43)));
    assert_eq!(
        me(&s.app, &bare.header()).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_cache_is_off_by_default() {
    let manager = SessionManager::builder(MemoryStore::new())
        .secret(SECRET)
        .build()
        .unwrap();
    let app = cache_app(&manager);
    let (jar, _) = sign_in_jar(&app, "user=alice").await;
    assert!(jar.cache_names().is_empty());
    let manager = SessionManager::builder(MemoryStore::new())
        .secret(SECRET)
        .cookie_cache(CookieCache::new().max_age(StdDuration::from_secs(60)))
        .build()
        .unwrap();
    let (_, reply) = sign_in_jar(&cache_app(&manager), "user=alice").await;
    // Counted from before the request's store work, rounded down: 60 s or just under.
    let cache = reply.set_cookie(CACHE).unwrap();
    assert!(
        cache.contains("Max-Age=60;") || cache.contains("Max-Age=59;"),
        "{cache}"
    );
    let off = SessionManager::builder(MemoryStore::new())
        .secret(SECRET)
        .cookie_cache(CookieCache::new().max_age(StdDuration::ZERO))
        .build()
        .unwrap();
    let (jar, _) = sign_in_jar(&cache_app(&off), "user=alice").await;
    assert!(jar.cache_names().is_empty());
    assert!(
        SessionManager::builder(MemoryStore::new())
            .secret(SECRET)
            .cookie_cache(CookieCache::new().max_age(StdDuration::from_secs(2 * 24 * 3600)))
            .build()
            .is_err()
    );
}

/// Issue 9, item 4a: without Redis, a process that restarts (same secret, same store)
/// never saw the revocations made before it; caches issued before it started must not be
/// believed.
async fn a_cache_revoked_before_a_restart_is_refused_after_it(kind: StoreKind) {
    let (store, _dir) = make_store(kind).await;
    let clock = ManualClock::new();
    let build = |store: std::sync::Arc<dyn tower_auth_session::SessionStore>| {
        SessionManager::builder(store)
            .secret(SECRET)
            .clock(clock.clone())
            .cookie_cache(CookieCache::new())
            .build()
            .unwrap()
    };
    let before = build(store.clone());
    let app = cache_app(&before);
    let (revoked, _) = sign_in_jar(&app, "user=alice").await;
    let (kept, _) = sign_in_jar(&app, "user=bob").await;
    let id = reply_session_id(&app, &revoked).await;
    assert_eq!(me(&app, &revoked.header()).await.status, StatusCode::OK);
    assert!(before.revoke(id.as_str().unwrap()).await.unwrap());
    drop((before, app));

    // The restart takes a moment; a memory store does not survive it.
    clock.advance(Duration::seconds(1));
    let store = match kind {
        StoreKind::Memory => std::sync::Arc::new(MemoryStore::new()) as _,
        StoreKind::Sqlite => store,
    };
    let after = cache_app(&build(store));
    let reply = me(&after, &revoked.header()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    // A live session only pays one store read (SQLite keeps it across the restart).
    if kind == StoreKind::Sqlite {
        let reply = me(&after, &kept.header()).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.set_cookie(CACHE).is_some(), "a fresh cache is issued");
    }
}

/// Issue 9, item 4b: the row is already gone (deleted in SQL, a restarted memory store);
/// sign-out still answers 200 and the same token + cache, replayed by a thief, are refused.
async fn sign_out_when_the_row_is_already_gone_still_ends_the_cached_session(kind: StoreKind) {
    let (store, _dir) = make_store(kind).await;
    let manager = SessionManager::builder(store.clone())
        .secret(SECRET)
        .cookie_cache(CookieCache::new())
        .build()
        .unwrap();
    let app = cache_app(&manager);
    let (jar, _) = sign_in_jar(&app, "user=alice").await;
    assert_eq!(me(&app, &jar.header()).await.status, StatusCode::OK);
    // Behind the crate's back.
    let now = chrono::Utc::now();
    assert_eq!(store.delete_by_user("alice", None).await.unwrap().len(), 1);
    assert!(store.list_by_user("alice", now).await.unwrap().is_empty());

    let reply = send(&app, post("/sign-out", Some(&jar.header()))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        reply
            .set_cookies()
            .iter()
            .any(|c| c.starts_with(TOKEN) && c.contains("Max-Age=0")),
        "sign-out clears the cookies: {:?}",
        reply.set_cookies()
    );
    let replayed = me(&app, &jar.header()).await;
    assert_eq!(
        replayed.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        replayed.body
    );
}

store_suite!(
    a_cache_revoked_before_a_restart_is_refused_after_it,
    sign_out_when_the_row_is_already_gone_still_ends_the_cached_session,
    valid_cache_resolves_with_zero_store_calls,
    cache_is_issued_whenever_the_store_is_read,
    another_users_cache_next_to_my_token_is_ignored,
    chunked_cache_hits_and_every_chunk_anomaly_falls_through,
    a_shorter_cache_expires_the_stale_chunks,
    a_session_too_large_for_the_cap_is_served_from_the_store,
    an_expired_cache_is_ignored_even_if_the_browser_keeps_it,
    a_cache_hit_never_slides_and_the_refresh_goes_to_the_store,
    revocations_reach_the_cache_on_the_very_next_request,
    revoke_user_with_many_sessions_reaches_every_cache,
    a_copied_cache_dies_with_sign_out,
    authoritative_reads_bypass_the_cache,
    rotation_retires_the_caches_of_the_old_token,
    a_new_cache_version_ignores_older_caches,
    encrypted_caches_hit_and_hide_the_session,
    a_session_that_is_not_remembered_gets_a_browser_session_cache,
    bad_tokens_clear_every_cache_cookie,
);
