//! A conformance suite for [`SessionStore`] implementations (feature `conformance`).
//!
//! The layer's guarantees (no lost updates, no resurrected sessions, revocation that
//! sticks) rest on the store keeping the trait's contracts. [`run`] checks each of them
//! against a live store and panics with a message naming the broken contract. Every
//! built-in store runs it in this crate's own tests; a third-party store should run it in
//! its own.
//!
//! # Running it against your store
//! ```toml
//! [dev-dependencies]
//! tower-auth-session = { version = "0.1", features = ["conformance"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//! ```
//! # use tower_auth_session::MemoryStore as MyStore;
//! // tests/conformance.rs
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn my_store_keeps_the_session_store_contracts() {
//!     let store = MyStore::new(); // connect to a real instance of your backend
//!     tower_auth_session::store::conformance::run(store).await;
//! }
//! # fn main() {}
//! ```
//!
//! [`run`] needs a Tokio runtime (it spawns tasks to race conditional updates); a
//! multi-threaded one makes that race real for in-process stores.
//!
//! # Shared stores
//! Every session the suite writes has a fresh random id, token hash and user id, and the
//! suite deletes its users' sessions when it passes, so it can run against a store that
//! other tests use at the same time. The one global operation,
//! [`SessionStore::delete_expired`], is called with a `now` in 2001, so it only ever
//! removes sessions that expired before then.
//!
//! That check counts what `delete_expired` deletes, so it needs to be the only one
//! deleting sessions from before 2001 while it runs: runs of the suite in one process take
//! turns for it, but a run in another process against the same store, or a cleanup task
//! with a real clock, can make it fail spuriously. Give each of those its own database
//! (or schema, or key prefix).
//!
//! # What it checks
//! - `create` + `find` round-trip every field exactly: app fields (nested objects, large
//!   integers, floats, Unicode, escapes), IP address and user agent both `Some` and `None`,
//!   `remember`, `generation`, and times with millisecond precision; `find` returns
//!   expired sessions too, and `None` for an unknown hash.
//! - A second session with the same token hash, or the same id, is refused, and the
//!   error does not reveal the token hash.
//! - `update` writes only when the stored generation is the expected one, returns `false`
//!   otherwise and for a missing session, and never changes `id`, `user_id` or
//!   `created_at`.
//! - `update` with a new token hash moves the session (the old hash finds nothing), and
//!   refuses to move it onto a hash another session has.
//! - `delete` returns the session once, then `None`.
//! - `find_by_id` returns the session with its token hash, follows a token move, and
//!   returns `None` for an unknown id and after a delete.
//! - `delete_by_id` with another user's id deletes nothing; without a user it deletes any.
//! - `delete_by_user` deletes all of the user's sessions but the one to keep, and no one
//!   else's, and returns what it deleted with the right token hashes.
//! - `list_by_user` returns the user's live sessions at `now` (`expires_at > now`),
//!   oldest first, and no one else's.
//! - `delete_expired` deletes at most `limit` sessions, deletes those with
//!   `expires_at <= now`, and keeps live ones.
//! - 20 concurrent `update`s with the same expected generation: exactly one applies, and
//!   the stored session is the winner's.
//! - Where the store answers `find_in_process`, it agrees with `find` after every step
//!   above (create, update, move, delete).

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, SubsecRound, TimeZone, Utc};
use serde_json::{Map, Value, json};

use super::{SessionStore, StoredSession};
use crate::error::StoreError;
use crate::session::Session;
use crate::token::{Token, TokenHash, random_id};

/// How many tasks race one conditional update.
const RACERS: usize = 20;

/// Makes runs in one process take turns at the `delete_expired` check, the one check that
/// sees (and deletes) other runs' sessions.
static DELETE_EXPIRED_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs every check against `store`, panicking with a message that names the first
/// contract it breaks. Must be called inside a Tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use tower_auth_session::MemoryStore;
/// use tower_auth_session::store::conformance;
///
/// conformance::run(MemoryStore::new()).await;
/// # }
/// ```
pub async fn run<S: SessionStore>(store: S) {
    let suite = Suite {
        store: Arc::new(store),
        run_id: random_id(),
        users: Mutex::new(Vec::new()),
    };
    suite.create_and_find_round_trip_every_field().await;
    suite.find_returns_expired_sessions().await;
    suite.duplicate_token_hash_or_id_is_refused().await;
    suite.update_applies_only_on_the_expected_generation().await;
    suite.update_moves_the_session_to_a_new_token_hash().await;
    suite.update_does_not_move_onto_a_taken_token_hash().await;
    suite.delete_returns_the_session_once().await;
    suite
        .find_by_id_returns_the_session_and_its_token_hash()
        .await;
    suite
        .delete_by_id_only_deletes_the_given_users_session()
        .await;
    suite
        .delete_by_user_keeps_the_given_session_and_other_users()
        .await;
    suite
        .list_by_user_returns_live_own_sessions_oldest_first()
        .await;
    suite
        .delete_expired_respects_the_limit_and_keeps_live_sessions()
        .await;
    suite
        .concurrent_updates_with_one_generation_have_one_winner()
        .await;
    suite.clean_up().await;
}

macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            panic!("SessionStore conformance: {}", format_args!($($message)+));
        }
    };
}

macro_rules! ensure_eq {
    ($got:expr, $expected:expr, $($message:tt)+) => {{
        let (got, expected) = (&$got, &$expected);
        if got != expected {
            panic!(
                "SessionStore conformance: {}\n     got: {:?}\nexpected: {:?}",
                format_args!($($message)+),
                got,
                expected,
            );
        }
    }};
}

/// Unwraps a store result; an error fails the check it happened in.
#[track_caller]
fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("SessionStore conformance: {what} failed with an error: {error}"),
    }
}

fn new_hash() -> TokenHash {
    Token::generate().hash()
}

/// Fails if the error's text (`Display` and `Debug`, down its source chain) contains any
/// of `hashes` in hex: stores must not put token hashes in error messages or logs.
fn ensure_error_hides(error: &StoreError, hashes: &[&TokenHash], what: &str) {
    let mut text = format!("{error}\n{error:?}");
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text.push_str(&format!("\n{inner}\n{inner:?}"));
        source = inner.source();
    }
    let text = text.to_ascii_lowercase();
    for hash in hashes {
        ensure!(
            !text.contains(&hash.to_hex()),
            "{what}: the error reveals a token hash: {error}"
        );
    }
}

fn sorted_by_id(mut stored: Vec<StoredSession>) -> Vec<StoredSession> {
    stored.sort_by(|a, b| a.session.id.cmp(&b.session.id));
    stored
}

fn fields(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

struct Suite<S> {
    store: Arc<S>,
    run_id: String,
    users: Mutex<Vec<String>>,
}

impl<S: SessionStore> Suite<S> {
    /// A user id no one else uses, remembered for clean-up.
    fn user(&self, label: &str) -> String {
        let user = format!("tas-conformance-{}-{label}", self.run_id);
        self.users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(user.clone());
        user
    }

    /// A live session of `user_id` with a fresh id, and times with distinct, non-zero
    /// milliseconds so that a store that drops them or swaps columns is caught.
    fn session(&self, user_id: &str) -> Session {
        let now = Utc::now().trunc_subsecs(0);
        Session {
            id: format!("tas-conformance-{}", random_id()),
            user_id: user_id.to_owned(),
            expires_at: now + Duration::days(7) + Duration::milliseconds(505),
            created_at: now - Duration::hours(1) + Duration::milliseconds(101),
            updated_at: now - Duration::minutes(1) + Duration::milliseconds(202),
            authenticated_at: now - Duration::minutes(30) + Duration::milliseconds(303),
            last_seen_at: now - Duration::seconds(30) + Duration::milliseconds(404),
            ip_address: Some("203.0.113.7".to_owned()),
            user_agent: Some("tas-conformance/1.0".to_owned()),
            remember: true,
            generation: 1,
            fields: Map::new(),
        }
    }

    async fn create(&self, session: &Session) -> TokenHash {
        let hash = new_hash();
        ok(self.store.create(&hash, session).await, "create");
        hash
    }

    /// `find`, checked against `find_in_process` wherever the store answers that: the
    /// layer takes the in-process answer instead of `find`, so the two must never differ.
    async fn find(&self, hash: &TokenHash) -> Option<Session> {
        let found = ok(self.store.find(hash).await, "find");
        if let Some(in_process) = self.store.find_in_process(hash) {
            ensure_eq!(
                in_process.map(|session| (*session).clone()),
                found.clone(),
                "find_in_process must agree with find"
            );
        }
        found
    }

    async fn create_and_find_round_trip_every_field(&self) {
        let user = self.user("round-trip");
        let mut full = self.session(&user);
        full.ip_address = Some("2001:db8::1".to_owned());
        full.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) ünïcødé 😀 'quoted'".to_owned());
        full.remember = true;
        full.generation = 1 << 40;
        full.fields = fields(json!({
            "device": "laptop",
            "nested": {"list": [1, -2, 3.5, true, null, "x"], "empty": {}},
            "escapes": "it's \"quoted\" \\ back\nslash",
            "unicode": "日本語 🔐",
            "big": 9_007_199_254_740_993_u64,
            "negative": -42,
        }));
        let mut bare = self.session(&user);
        bare.ip_address = None;
        bare.user_agent = None;
        bare.remember = false;
        bare.generation = 0;
        for session in [full, bare] {
            let hash = self.create(&session).await;
            ensure_eq!(
                self.find(&hash).await,
                Some(session),
                "find must return exactly what create stored (every field, app fields, \
                 millisecond times)"
            );
        }
        ensure_eq!(
            self.find(&new_hash()).await,
            None,
            "find with an unknown token hash must return None"
        );
    }

    async fn find_returns_expired_sessions(&self) {
        let mut expired = self.session(&self.user("expired"));
        expired.expires_at = expired.created_at + Duration::milliseconds(1);
        let hash = self.create(&expired).await;
        ensure_eq!(
            self.find(&hash).await,
            Some(expired),
            "find must return expired sessions too (the caller decides what to do with them)"
        );
    }

    async fn duplicate_token_hash_or_id_is_refused(&self) {
        let user = self.user("duplicates");
        let first = self.session(&user);
        let hash = self.create(&first).await;

        let other = self.session(&user);
        match self.store.create(&hash, &other).await {
            Ok(()) => panic!(
                "SessionStore conformance: create must refuse a second session with an \
                 existing token hash"
            ),
            Err(error) => ensure_error_hides(&error, &[&hash], "create with a taken token hash"),
        }
        ensure_eq!(
            self.find(&hash).await,
            Some(first.clone()),
            "a refused create must leave the existing session as it was"
        );

        let mut same_id = self.session(&user);
        same_id.id.clone_from(&first.id);
        let other_hash = new_hash();
        ensure!(
            self.store.create(&other_hash, &same_id).await.is_err(),
            "create must refuse a second session with an existing id"
        );
        ensure_eq!(
            self.find(&other_hash).await,
            None,
            "a create refused for its id must store nothing"
        );
    }

    async fn update_applies_only_on_the_expected_generation(&self) {
        let user = self.user("update");
        let other_user = self.user("update-other");
        let mut original = self.session(&user);
        original.generation = 3;
        let hash = self.create(&original).await;

        let mut changed = self.session(&other_user);
        changed.created_at = original.created_at - Duration::days(1);
        changed.expires_at = original.expires_at + Duration::days(1) + Duration::milliseconds(7);
        changed.updated_at = original.updated_at + Duration::milliseconds(1_001);
        changed.authenticated_at = original.authenticated_at + Duration::milliseconds(2_002);
        changed.last_seen_at = original.last_seen_at + Duration::milliseconds(3_003);
        changed.ip_address = None;
        changed.user_agent = Some("another agent".to_owned());
        changed.remember = false;
        changed.generation = 4;
        changed.fields = fields(json!({"step": 2}));

        for stale in [2, 4] {
            ensure_eq!(
                ok(
                    self.store.update(&hash, stale, &changed, None).await,
                    "update"
                ),
                false,
                "update expecting generation {stale} when the stored one is 3 must return false"
            );
        }
        ensure_eq!(
            self.find(&hash).await,
            Some(original.clone()),
            "an update with the wrong generation must not write anything"
        );

        let missing = new_hash();
        ensure_eq!(
            ok(
                self.store.update(&missing, 3, &changed, None).await,
                "update"
            ),
            false,
            "update of a missing session must return false"
        );
        ensure_eq!(
            self.find(&missing).await,
            None,
            "update of a missing session must not create one"
        );

        ensure_eq!(
            ok(self.store.update(&hash, 3, &changed, None).await, "update"),
            true,
            "update with the stored generation must return true"
        );
        let mut expected = changed.clone();
        expected.id.clone_from(&original.id);
        expected.user_id.clone_from(&original.user_id);
        expected.created_at = original.created_at;
        ensure_eq!(
            self.find(&hash).await,
            Some(expected.clone()),
            "update must replace every field but id, user_id and created_at, which it keeps"
        );

        ensure_eq!(
            ok(self.store.update(&hash, 3, &original, None).await, "update"),
            false,
            "a second update expecting the old generation must return false"
        );
        ensure_eq!(
            self.find(&hash).await,
            Some(expected),
            "a stale update must not write anything"
        );
        ensure_eq!(
            ok(
                self.store.list_by_user(&other_user, Utc::now()).await,
                "list_by_user"
            ),
            Vec::<Session>::new(),
            "update must not hand the session to the user_id in its argument"
        );
    }

    async fn update_moves_the_session_to_a_new_token_hash(&self) {
        let user = self.user("move");
        let session = self.session(&user);
        let old_hash = self.create(&session).await;
        let new_hash = new_hash();
        let mut moved = session.clone();
        moved.generation = 2;
        moved.updated_at += Duration::milliseconds(1_500);

        ensure_eq!(
            ok(
                self.store
                    .update(&old_hash, 1, &moved, Some(&new_hash))
                    .await,
                "update"
            ),
            true,
            "update with a new token hash and the stored generation must return true"
        );
        ensure_eq!(
            self.find(&new_hash).await,
            Some(moved.clone()),
            "after a move, the new token hash must find the updated session"
        );
        ensure_eq!(
            self.find(&old_hash).await,
            None,
            "after a move, the old token hash must find nothing"
        );
        ensure_eq!(
            ok(
                self.store.update(&old_hash, 2, &moved, None).await,
                "update"
            ),
            false,
            "after a move, an update through the old token hash must return false"
        );
        ensure_eq!(
            ok(self.store.delete(&old_hash).await, "delete"),
            None,
            "after a move, delete through the old token hash must find nothing"
        );
        ensure_eq!(
            ok(
                self.store.list_by_user(&user, Utc::now()).await,
                "list_by_user"
            ),
            vec![moved],
            "after a move, the user must have exactly the moved session"
        );
    }

    async fn update_does_not_move_onto_a_taken_token_hash(&self) {
        let user = self.user("move-taken");
        let moving = self.session(&user);
        let moving_hash = self.create(&moving).await;
        let resident = self.session(&user);
        let taken_hash = self.create(&resident).await;
        let mut next = moving.clone();
        next.generation = 2;

        match self
            .store
            .update(&moving_hash, 1, &next, Some(&taken_hash))
            .await
        {
            Ok(true) => panic!(
                "SessionStore conformance: update must not move a session onto a token hash \
                 another session has (it returned true)"
            ),
            Ok(false) => {}
            Err(error) => ensure_error_hides(
                &error,
                &[&moving_hash, &taken_hash],
                "update onto a taken token hash",
            ),
        }
        ensure_eq!(
            self.find(&moving_hash).await,
            Some(moving),
            "a refused move must leave the moving session where and as it was"
        );
        ensure_eq!(
            self.find(&taken_hash).await,
            Some(resident),
            "a refused move must leave the other session untouched"
        );
    }

    async fn delete_returns_the_session_once(&self) {
        let session = self.session(&self.user("delete"));
        let hash = self.create(&session).await;
        ensure_eq!(
            ok(self.store.delete(&hash).await, "delete"),
            Some(session),
            "delete must return the deleted session"
        );
        ensure_eq!(
            ok(self.store.delete(&hash).await, "delete"),
            None,
            "a second delete must return None"
        );
        ensure_eq!(
            self.find(&hash).await,
            None,
            "find after delete must return None"
        );
    }

    async fn find_by_id_returns_the_session_and_its_token_hash(&self) {
        let user = self.user("find-by-id");
        let session = self.session(&user);
        let hash = self.create(&session).await;
        let found = ok(self.store.find_by_id(&session.id).await, "find_by_id");
        ensure_eq!(
            found,
            Some(StoredSession {
                token_hash: hash,
                session: session.clone(),
            }),
            "find_by_id must return the session and its token hash"
        );
        // After a token move, the id leads to the new hash.
        let moved = Token::generate().hash();
        let mut next = session.clone();
        next.generation += 1;
        ensure!(
            ok(
                self.store
                    .update(&hash, session.generation, &next, Some(&moved))
                    .await,
                "update"
            ),
            "update with a new token hash must apply"
        );
        let found = ok(self.store.find_by_id(&session.id).await, "find_by_id");
        ensure_eq!(
            found.map(|stored| stored.token_hash),
            Some(moved),
            "find_by_id must follow a token move"
        );
        ensure_eq!(
            ok(self.store.find_by_id("no-such-id").await, "find_by_id").map(|s| s.session.id),
            None,
            "find_by_id of an unknown id must return None"
        );
        ok(self.store.delete(&moved).await, "delete");
        ensure_eq!(
            ok(self.store.find_by_id(&session.id).await, "find_by_id").map(|s| s.session.id),
            None,
            "find_by_id after a delete must return None"
        );
    }

    async fn delete_by_id_only_deletes_the_given_users_session(&self) {
        let user = self.user("delete-by-id");
        let other_user = self.user("delete-by-id-other");
        let session = self.session(&user);
        let hash = self.create(&session).await;

        ensure_eq!(
            ok(
                self.store
                    .delete_by_id(&session.id, Some(&other_user))
                    .await,
                "delete_by_id"
            ),
            None,
            "delete_by_id with another user must delete nothing"
        );
        ensure_eq!(
            self.find(&hash).await,
            Some(session.clone()),
            "delete_by_id with another user must leave the session in place"
        );
        ensure_eq!(
            ok(
                self.store.delete_by_id(&session.id, Some(&user)).await,
                "delete_by_id"
            ),
            Some(StoredSession {
                token_hash: hash,
                session: session.clone(),
            }),
            "delete_by_id with the owner must return the session and its token hash"
        );
        ensure_eq!(
            ok(
                self.store.delete_by_id(&session.id, Some(&user)).await,
                "delete_by_id"
            ),
            None,
            "a second delete_by_id must return None"
        );
        ensure_eq!(
            self.find(&hash).await,
            None,
            "find after delete_by_id must return None"
        );

        let anyones = self.session(&user);
        let anyones_hash = self.create(&anyones).await;
        ensure_eq!(
            ok(
                self.store.delete_by_id(&anyones.id, None).await,
                "delete_by_id"
            ),
            Some(StoredSession {
                token_hash: anyones_hash,
                session: anyones,
            }),
            "delete_by_id without a user must delete the session whoever owns it"
        );
        ensure_eq!(
            ok(
                self.store
                    .delete_by_id(&format!("tas-conformance-{}", random_id()), None)
                    .await,
                "delete_by_id"
            ),
            None,
            "delete_by_id of an unknown id must return None"
        );
    }

    async fn delete_by_user_keeps_the_given_session_and_other_users(&self) {
        let user = self.user("delete-by-user");
        let other_user = self.user("delete-by-user-other");
        let first = self.session(&user);
        let kept = self.session(&user);
        let mut expired = self.session(&user);
        expired.expires_at = expired.created_at + Duration::seconds(1);
        let someone_elses = self.session(&other_user);
        let first_hash = self.create(&first).await;
        let kept_hash = self.create(&kept).await;
        let expired_hash = self.create(&expired).await;
        let someone_elses_hash = self.create(&someone_elses).await;

        let deleted = ok(
            self.store.delete_by_user(&user, Some(&kept.id)).await,
            "delete_by_user",
        );
        ensure_eq!(
            sorted_by_id(deleted),
            sorted_by_id(vec![
                StoredSession {
                    token_hash: first_hash,
                    session: first,
                },
                StoredSession {
                    token_hash: expired_hash,
                    session: expired,
                },
            ]),
            "delete_by_user with a session to keep must delete and return every other \
             session of the user (expired ones too), with their token hashes"
        );
        ensure_eq!(
            self.find(&first_hash).await,
            None,
            "delete_by_user must delete the user's sessions"
        );
        ensure_eq!(
            self.find(&kept_hash).await,
            Some(kept.clone()),
            "delete_by_user must keep the session it is told to keep"
        );
        ensure_eq!(
            self.find(&someone_elses_hash).await,
            Some(someone_elses.clone()),
            "delete_by_user must not touch other users' sessions"
        );

        ensure_eq!(
            ok(
                self.store.delete_by_user(&user, None).await,
                "delete_by_user"
            ),
            vec![StoredSession {
                token_hash: kept_hash,
                session: kept.clone(),
            }],
            "delete_by_user without a session to keep must delete all of the user's sessions"
        );
        ensure_eq!(
            ok(
                self.store.delete_by_user(&user, None).await,
                "delete_by_user"
            ),
            Vec::<StoredSession>::new(),
            "delete_by_user of a user with no sessions must return nothing"
        );
        ensure_eq!(
            ok(
                self.store.delete_by_user(&other_user, Some(&kept.id)).await,
                "delete_by_user"
            ),
            vec![StoredSession {
                token_hash: someone_elses_hash,
                session: someone_elses,
            }],
            "delete_by_user keeping another user's session id must still delete all of this \
             user's sessions"
        );
    }

    async fn list_by_user_returns_live_own_sessions_oldest_first(&self) {
        let user = self.user("list");
        let other_user = self.user("list-other");
        let now = Utc::now().trunc_subsecs(3);
        let created = |hours_ago: i64, expires_in: Duration| {
            let mut session = self.session(&user);
            session.created_at = now - Duration::hours(hours_ago) + Duration::milliseconds(7);
            session.expires_at = now + expires_in;
            session
        };
        let oldest = created(3, Duration::hours(1));
        let middle = created(2, Duration::days(7));
        let newest = created(1, Duration::days(7));
        let expired = created(4, -Duration::seconds(1));
        let expiring_now = created(5, Duration::zero());
        let mut someone_elses = self.session(&other_user);
        someone_elses.created_at = now - Duration::hours(6);
        for session in [
            &middle,
            &expired,
            &newest,
            &expiring_now,
            &oldest,
            &someone_elses,
        ] {
            self.create(session).await;
        }

        ensure_eq!(
            ok(self.store.list_by_user(&user, now).await, "list_by_user"),
            vec![oldest, middle.clone(), newest.clone()],
            "list_by_user must return exactly the user's live sessions (expires_at > now), \
             oldest first"
        );
        ensure_eq!(
            ok(
                self.store
                    .list_by_user(&user, now + Duration::hours(2))
                    .await,
                "list_by_user"
            ),
            vec![middle, newest],
            "list_by_user must judge expiry at the `now` it is given"
        );
        ensure_eq!(
            ok(
                self.store.list_by_user(&other_user, now).await,
                "list_by_user"
            ),
            vec![someone_elses],
            "list_by_user must return only the given user's sessions"
        );
        ensure_eq!(
            ok(
                self.store.list_by_user(&self.user("nobody"), now).await,
                "list_by_user"
            ),
            Vec::<Session>::new(),
            "list_by_user of a user without sessions must return nothing"
        );
    }

    async fn delete_expired_respects_the_limit_and_keeps_live_sessions(&self) {
        // Far in the past, so only sessions that expired before 2001 are eligible: never
        // a live session of a store shared with other tests.
        let now: DateTime<Utc> = Utc
            .timestamp_opt(1_000_000_000, 0)
            .single()
            .unwrap_or_default();
        let user = self.user("delete-expired");
        let at = |created: DateTime<Utc>, expires: DateTime<Utc>| {
            let mut session = self.session(&user);
            session.created_at = created;
            session.updated_at = created;
            session.authenticated_at = created;
            session.last_seen_at = created;
            session.expires_at = expires;
            session
        };
        let day = Duration::days(1);
        let _turn = DELETE_EXPIRED_TURN.lock().await;
        let mut expired_hashes = Vec::new();
        for expires in [now - Duration::seconds(3), now - Duration::seconds(2), now] {
            expired_hashes.push(self.create(&at(expires - day, expires)).await);
        }
        let live_by_a_millisecond = at(now - day, now + Duration::milliseconds(1));
        let live_hash = self.create(&live_by_a_millisecond).await;
        let live_today = self.session(&user);
        let live_today_hash = self.create(&live_today).await;

        ensure_eq!(
            ok(self.store.delete_expired(now, 0).await, "delete_expired"),
            0,
            "delete_expired with limit 0 must delete nothing"
        );
        for hash in &expired_hashes {
            ensure!(
                self.find(hash).await.is_some(),
                "delete_expired with limit 0 must delete nothing"
            );
        }
        ensure_eq!(
            ok(self.store.delete_expired(now, 2).await, "delete_expired"),
            2,
            "with at least 3 expired sessions, delete_expired with limit 2 must delete \
             exactly 2"
        );
        let mut rounds = 0;
        loop {
            let deleted = ok(self.store.delete_expired(now, 2).await, "delete_expired");
            ensure!(
                deleted <= 2,
                "delete_expired with limit 2 deleted {deleted} sessions"
            );
            rounds += 1;
            if deleted < 2 || rounds > 10_000 {
                break;
            }
        }
        for hash in &expired_hashes {
            ensure_eq!(
                self.find(hash).await,
                None,
                "delete_expired must delete sessions with expires_at <= now"
            );
        }
        ensure_eq!(
            self.find(&live_hash).await,
            Some(live_by_a_millisecond),
            "delete_expired must keep sessions with expires_at > now"
        );
        ensure_eq!(
            self.find(&live_today_hash).await,
            Some(live_today),
            "delete_expired must keep live sessions"
        );
    }

    async fn concurrent_updates_with_one_generation_have_one_winner(&self) {
        let user = self.user("race");
        let mut session = self.session(&user);
        session.generation = 5;
        let hash = self.create(&session).await;

        // Round 1: every racer also moves the session to a token hash of its own.
        let racers: Vec<_> = (0..RACERS)
            .map(|racer| {
                let store = Arc::clone(&self.store);
                let mut next = session.clone();
                next.generation = 6;
                next.fields = fields(json!({ "writer": racer }));
                let target = new_hash();
                tokio::spawn(async move {
                    let applied = store.update(&hash, 5, &next, Some(&target)).await;
                    (target, next, applied)
                })
            })
            .collect();
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for racer in racers {
            let (target, next, applied) = join(racer).await;
            match ok(applied, "a concurrent update") {
                true => winners.push((target, next)),
                false => losers.push(target),
            }
        }
        ensure_eq!(
            winners.len(),
            1,
            "of {RACERS} concurrent updates expecting the same generation (each moving the \
             session), exactly one must apply"
        );
        let (winner_hash, winner) = winners.remove(0);
        ensure_eq!(
            self.find(&winner_hash).await,
            Some(winner.clone()),
            "after a race, the winner's token hash must find the winner's session"
        );
        ensure_eq!(
            self.find(&hash).await,
            None,
            "after a race that moved the session, the old token hash must find nothing"
        );
        for loser in &losers {
            ensure_eq!(
                self.find(loser).await,
                None,
                "a losing update must not store the session under its token hash"
            );
        }

        // Round 2: in place.
        let racers: Vec<_> = (0..RACERS)
            .map(|racer| {
                let store = Arc::clone(&self.store);
                let mut next = winner.clone();
                next.generation = 7;
                next.fields = fields(json!({ "writer": racer, "round": 2 }));
                tokio::spawn(async move {
                    let applied = store.update(&winner_hash, 6, &next, None).await;
                    (next, applied)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for racer in racers {
            let (next, applied) = join(racer).await;
            if ok(applied, "a concurrent update") {
                winners.push(next);
            }
        }
        ensure_eq!(
            winners.len(),
            1,
            "of {RACERS} concurrent in-place updates expecting the same generation, exactly \
             one must apply"
        );
        ensure_eq!(
            self.find(&winner_hash).await,
            winners.pop(),
            "after a race, the stored session must be the winner's"
        );
    }

    /// Deletes every session of every user the suite made up.
    async fn clean_up(&self) {
        let users = std::mem::take(&mut *self.users.lock().unwrap_or_else(|e| e.into_inner()));
        for user in users {
            ok(
                self.store.delete_by_user(&user, None).await,
                "delete_by_user",
            );
        }
    }
}

/// Awaits a spawned task, passing its panic on.
async fn join<T>(task: tokio::task::JoinHandle<T>) -> T {
    match task.await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("SessionStore conformance: a racing task was cancelled: {error}"),
    }
}
