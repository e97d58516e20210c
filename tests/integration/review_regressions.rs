//! Regression tests from the pre-release review: each one closes a gap where an existing
//! test passed even with the feature it names broken (checked by mutating `src/`).

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration as StdDuration;

use axum::Router;
use axum::middleware::{self, Next};
use axum::routing;
use chrono::Duration;
use common::*;
use http::StatusCode;
use tokio::sync::Barrier;
use tower_auth_session::store::{BoxFuture, StoredSession};
use tower_auth_session::{
    FreshSession, ManualClock, Session, SessionManager, SessionStore, StoreError, TokenHash,
};

/// `remember_me(false)` sessions must not slide. `core.rs` checks this only with the
/// default `update_age` (1 day), which equals the short session's lifetime, so a refresh
/// could never become due before expiry and the check passed with sliding switched on.
async fn remember_me_off_never_slides_even_when_a_refresh_is_due(kind: StoreKind) {
    let (store, _dir) = make_store(kind).await;
    let (store, counts) = CountingStore::new(store);
    let clock = ManualClock::new();
    let manager = SessionManager::builder(store)
        .secret(SECRET)
        .clock(clock.clone())
        .update_age(StdDuration::from_secs(3600))
        .build()
        .unwrap();
    let app = app(&manager);
    let name = manager.session_cookie_name().to_owned();
    let reply = send(&app, post("/sign-in?user=alice&remember=false", None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let cookie = format!("{name}={}", reply.cookie_value(&name).unwrap());

    // Well past update_age: a remembered session would slide here.
    for hours in [2, 21] {
        clock.advance(Duration::hours(hours));
        let reply = send(&app, get("/me", Some(&cookie))).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.set_cookie(&name).is_none(),
            "{:?}",
            reply.set_cookies()
        );
        assert_eq!(
            counts.updates(),
            0,
            "a remember_me(false) session never slides"
        );
    }
    // And so it ends one day after sign-in.
    clock.advance(Duration::hours(1));
    assert_eq!(
        send(&app, get("/me", Some(&cookie))).await.status,
        StatusCode::UNAUTHORIZED
    );
}

/// `FreshSession` must read the store, not the copy the layer resolved at the start of the
/// request. `management.rs` revokes *between* requests, which the layer itself already
/// notices, so that test passed with `FreshSession` reading `handle.current()`.
async fn fresh_session_sees_a_revoke_that_lands_after_the_layer_resolved(kind: StoreKind) {
    let (store, _dir) = make_store(kind).await;
    let manager = SessionManager::builder(store)
        .secret(SECRET)
        .build()
        .unwrap();
    let name = manager.session_cookie_name().to_owned();
    let cookie = sign_in(&app(&manager), &manager, "alice").await;

    async fn sensitive(FreshSession(_): FreshSession) -> &'static str {
        "done"
    }
    // Between the layer (outermost) and the handler, an admin revokes every session of
    // the user: the request already holds a resolved, valid session.
    let admin = manager.clone();
    let app = Router::new()
        .route("/sensitive", routing::post(sensitive))
        .layer(middleware::from_fn(
            move |request: axum::extract::Request, next: Next| {
                let admin = admin.clone();
                async move {
                    assert_eq!(admin.revoke_user("alice").await.unwrap(), 1);
                    next.run(request).await
                }
            },
        ))
        .layer(manager.layer());
    let reply = send(&app, post("/sensitive", Some(&cookie))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.body);
    assert!(reply.clears(&name), "{:?}", reply.set_cookies());
}

/// A store whose first `n` lookups, once they have read, wait until all `n` have read, so
/// every request of a burst reads the same generation before any of them writes.
struct LockstepStore<S> {
    inner: S,
    hold: Arc<AtomicUsize>,
    barrier: Arc<Barrier>,
}

impl<S: SessionStore> SessionStore for LockstepStore<S> {
    fn create<'a>(
        &'a self,
        h: &'a TokenHash,
        s: &'a Session,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.create(h, s)
    }
    fn find<'a>(&'a self, h: &'a TokenHash) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        let held = self
            .hold
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Box::pin(async move {
            let found = self.inner.find(h).await;
            if held {
                self.barrier.wait().await;
            }
            found
        })
    }
    fn update<'a>(
        &'a self,
        h: &'a TokenHash,
        g: u64,
        s: &'a Session,
        n: Option<&'a TokenHash>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.inner.update(h, g, s, n)
    }
    fn delete<'a>(
        &'a self,
        h: &'a TokenHash,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        self.inner.delete(h)
    }
    fn find_by_id<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        self.inner.find_by_id(id)
    }
    fn delete_by_id<'a>(
        &'a self,
        id: &'a str,
        u: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<StoredSession>, StoreError>> {
        self.inner.delete_by_id(id, u)
    }
    fn delete_by_user<'a>(
        &'a self,
        u: &'a str,
        k: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<StoredSession>, StoreError>> {
        self.inner.delete_by_user(u, k)
    }
    fn list_by_user<'a>(
        &'a self,
        u: &'a str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> BoxFuture<'a, Result<Vec<Session>, StoreError>> {
        self.inner.list_by_user(u, now)
    }
    fn delete_expired(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.inner.delete_expired(now, limit)
    }
}

/// 50 requests that all read the session before any of them writes cause one write.
/// `core.rs`'s version of this passes for `MemoryStore` without the refresh gate: on a
/// current-thread runtime with a store that never yields, the 50 requests run one after
/// the other, and the second one already sees the refreshed session.
async fn fifty_requests_that_all_read_before_any_write_cause_one_write(kind: StoreKind) {
    const N: usize = 50;
    let (store, _dir) = make_store(kind).await;
    let hold = Arc::new(AtomicUsize::new(0));
    let lockstep = LockstepStore {
        inner: store,
        hold: hold.clone(),
        barrier: Arc::new(Barrier::new(N)),
    };
    let (store, counts) = CountingStore::new(lockstep);
    let clock = ManualClock::new();
    let manager = SessionManager::builder(store)
        .secret(SECRET)
        .clock(clock.clone())
        .build()
        .unwrap();
    let app = app(&manager);
    let name = manager.session_cookie_name().to_owned();
    let cookie = sign_in(&app, &manager, "alice").await;
    clock.advance(Duration::days(1) + Duration::seconds(1));
    hold.store(N, Ordering::SeqCst);
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let app = app.clone();
            let cookie = cookie.clone();
            tokio::spawn(async move { send(&app, get("/me", Some(&cookie))).await })
        })
        .collect();
    let replies = tokio::time::timeout(StdDuration::from_secs(30), async {
        let mut replies = Vec::new();
        for task in tasks {
            replies.push(task.await.unwrap());
        }
        replies
    })
    .await
    .expect("the burst finished");
    assert_eq!(
        counts.updates(),
        1,
        "{N} concurrent requests caused one write"
    );
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK);
        // Every request of the burst shares the refresh and re-sets the cookie.
        let set = reply.set_cookie(&name).expect("cookie re-set");
        assert!(set.contains("Max-Age=604800"), "{set}");
    }
}

store_suite!(
    remember_me_off_never_slides_even_when_a_refresh_is_due,
    fresh_session_sees_a_revoke_that_lands_after_the_layer_resolved,
    fifty_requests_that_all_read_before_any_write_cause_one_write,
);

/// A duration so long that `now + it` leaves chrono's range used to pass `build()` and then
/// panic on every sign-in (`expires_in`, `dont_remember_expires_in`, `max_lifetime`) or on
/// every signed-in request (`update_age`): the demo server accepted
/// `SESSION_UPDATE_AGE=10000000000000` and reset every connection that carried a cookie.
#[test]
fn durations_beyond_any_calendar_are_refused_at_build() {
    type Configure = fn(
        tower_auth_session::SessionManagerBuilder,
        StdDuration,
    ) -> tower_auth_session::SessionManagerBuilder;
    let options: [(&str, Configure); 5] = [
        ("expires_in", |b, d| b.expires_in(d)),
        ("update_age", |b, d| b.update_age(d)),
        ("fresh_age", |b, d| b.fresh_age(d)),
        ("dont_remember_expires_in", |b, d| {
            b.dont_remember_expires_in(d)
        }),
        ("max_lifetime", |b, d| b.max_lifetime(d)),
    ];
    let builder = || SessionManager::builder(tower_auth_session::MemoryStore::new()).secret(SECRET);
    for (option, configure) in options {
        // ~317,000 years: a valid chrono::TimeDelta, but past DateTime<Utc>'s last year.
        let huge = StdDuration::from_secs(10_000_000_000_000);
        let error = configure(builder(), huge)
            .build()
            .expect_err(option)
            .to_string();
        assert!(error.contains(option), "{error}");
        // Generous but sane values still build.
        configure(builder(), StdDuration::from_secs(10 * 365 * 24 * 3600))
            .build()
            .unwrap();
    }
}

/// PostgreSQL cannot store U+0000 in `text`: a user id containing it made sign-in fail
/// with a store error, which the demo (and any app following it) answers with 503 for
/// what is bad input (`{"userId":"a\u0000b"}` → 503 and an ERROR log line). It is refused
/// up front, like an empty or overlong id, whatever the store.
#[tokio::test]
async fn a_user_id_containing_nul_is_invalid_input_not_a_store_error() {
    use tower_auth_session::{SessionError, SessionHandle, SignInOptions};
    let manager = SessionManager::builder(tower_auth_session::MemoryStore::new())
        .secret(SECRET)
        .build()
        .unwrap();
    async fn sign_in_nul(handle: SessionHandle) -> StatusCode {
        match handle.sign_in("a\0b", SignInOptions::new()).await {
            Err(SessionError::InvalidUserId) => StatusCode::BAD_REQUEST,
            Ok(_) => StatusCode::OK,
            Err(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
    let app = Router::new()
        .route("/sign-in", routing::post(sign_in_nul))
        .layer(manager.layer());
    let reply = send(&app, post("/sign-in", None)).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.set_cookies().is_empty());
}
