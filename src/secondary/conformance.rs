//! The acceptance suite for [`SecondaryStorage`] implementations (feature `conformance`).
//!
//! Run it from a test against a real instance of your backend; it panics, naming the
//! rule, on the first violation. Every run uses fresh random session and user ids, so it
//! can share a backend with other tests (and with itself, in parallel).
//!
//! ```no_run
//! # #[cfg(feature = "redis")]
//! # async fn demo() {
//! use tower_auth_session::secondary::{RedisStorage, conformance};
//!
//! let redis = RedisStorage::builder("redis://127.0.0.1:6379").build().unwrap();
//! conformance::secondary_storage(&redis).await;
//! # }
//! ```

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::Map;

use super::{PutOutcome, Revocation, SecondaryStorage};
use crate::session::Session;
use crate::token::{Token, TokenHash, random_id};

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn session(user_id: &str, created_at: DateTime<Utc>, lifetime: Duration) -> Session {
    Session {
        id: random_id(),
        user_id: user_id.to_owned(),
        expires_at: created_at + lifetime,
        created_at,
        updated_at: created_at,
        authenticated_at: created_at,
        last_seen_at: created_at,
        ip_address: Some("192.0.2.1".to_owned()),
        user_agent: Some("conformance".to_owned()),
        remember: true,
        generation: 0,
        fields: Map::new(),
    }
}

fn hash() -> TokenHash {
    Token::generate().hash()
}

fn user() -> String {
    format!("conformance-{}", random_id())
}

async fn put<S: SecondaryStorage + ?Sized>(
    storage: &S,
    token_hash: &TokenHash,
    session: &Session,
    replaces: Option<&TokenHash>,
) -> PutOutcome {
    storage
        .put(token_hash, session, replaces, now())
        .await
        .expect("put failed")
}

async fn get<S: SecondaryStorage + ?Sized>(storage: &S, token_hash: &TokenHash) -> Option<Session> {
    storage.get(token_hash).await.expect("get failed")
}

async fn revoke<S: SecondaryStorage + ?Sized>(
    storage: &S,
    revocations: &[Revocation<'_>],
) -> Vec<String> {
    let now = now();
    storage
        .revoke(revocations, now + Duration::days(8), now)
        .await
        .expect("revoke failed")
}

/// Runs every check against `storage`.
pub async fn secondary_storage<S: SecondaryStorage + ?Sized>(storage: &S) {
    put_then_get_round_trips(storage).await;
    put_is_conditional_on_generation(storage).await;
    expired_sessions_are_not_stored(storage).await;
    revoke_by_token_is_final(storage).await;
    revoke_by_id_is_final_even_without_a_copy(storage).await;
    unverified_revoke_only_touches_the_owners_session(storage).await;
    revoke_user_keeps_only_the_exception(storage).await;
    list_by_user_is_sorted_and_live_only(storage).await;
    rotation_moves_the_session_to_the_new_token(storage).await;
    concurrent_puts_for_one_user_are_all_indexed(storage).await;
}

/// A put session comes back equal, field for field; an unknown hash is `None`.
pub async fn put_then_get_round_trips<S: SecondaryStorage + ?Sized>(storage: &S) {
    let (h, mut s) = (hash(), session(&user(), now(), Duration::days(7)));
    s.fields.insert("device".into(), "laptop".into());
    s.generation = 4;
    assert_eq!(put(storage, &h, &s, None).await, PutOutcome::Written);
    assert_eq!(get(storage, &h).await, Some(s), "get after put");
    assert_eq!(get(storage, &hash()).await, None, "unknown token hash");
}

/// An older generation never replaces a newer one; the same one is a no-op.
pub async fn put_is_conditional_on_generation<S: SecondaryStorage + ?Sized>(storage: &S) {
    let (h, mut s) = (hash(), session(&user(), now(), Duration::days(7)));
    s.generation = 2;
    assert_eq!(put(storage, &h, &s, None).await, PutOutcome::Written);
    let mut older = s.clone();
    older.generation = 1;
    older.user_agent = Some("older".into());
    assert_eq!(put(storage, &h, &older, None).await, PutOutcome::Stale);
    assert_eq!(put(storage, &h, &s, None).await, PutOutcome::Written);
    assert_eq!(
        get(storage, &h).await,
        Some(s.clone()),
        "older generation won"
    );
    let mut newer = s.clone();
    newer.generation = 3;
    newer.expires_at += Duration::days(1);
    assert_eq!(put(storage, &h, &newer, None).await, PutOutcome::Written);
    assert_eq!(get(storage, &h).await, Some(newer), "newer generation lost");
}

/// A session whose `expires_at` has passed is refused, not stored.
pub async fn expired_sessions_are_not_stored<S: SecondaryStorage + ?Sized>(storage: &S) {
    let (h, s) = (
        hash(),
        session(&user(), now() - Duration::days(8), Duration::days(7)),
    );
    assert_eq!(put(storage, &h, &s, None).await, PutOutcome::Expired);
    assert_eq!(get(storage, &h).await, None);
}

/// After a revoke by token hash the session is gone and cannot be put back.
pub async fn revoke_by_token_is_final<S: SecondaryStorage + ?Sized>(storage: &S) {
    let (h, s) = (hash(), session(&user(), now(), Duration::days(7)));
    put(storage, &h, &s, None).await;
    let revoked = revoke(storage, &[Revocation::Token(&h)]).await;
    assert_eq!(revoked, vec![s.id.clone()], "revoke reports the session id");
    assert_eq!(get(storage, &h).await, None, "served after revoke");
    let mut refreshed = s.clone();
    refreshed.generation += 1;
    assert_eq!(
        put(storage, &h, &refreshed, None).await,
        PutOutcome::Revoked,
        "a revoked session was written back"
    );
    assert_eq!(get(storage, &h).await, None);
}

/// A verified revoke by id tombstones the id even when the storage holds no copy, so a
/// backfill that read the store before the revoke cannot write it back.
pub async fn revoke_by_id_is_final_even_without_a_copy<S: SecondaryStorage + ?Sized>(storage: &S) {
    let (h, s) = (hash(), session(&user(), now(), Duration::days(7)));
    let by_id = Revocation::Session {
        id: &s.id,
        user_id: None,
        token_hash: None,
        verified: true,
    };
    assert_eq!(revoke(storage, &[by_id]).await, vec![s.id.clone()]);
    assert_eq!(put(storage, &h, &s, None).await, PutOutcome::Revoked);
    assert_eq!(get(storage, &h).await, None);

    let (h2, s2) = (hash(), session(&user(), now(), Duration::days(7)));
    put(storage, &h2, &s2, None).await;
    let by_id = Revocation::Session {
        id: &s2.id,
        user_id: None,
        token_hash: None,
        verified: true,
    };
    revoke(storage, &[by_id]).await;
    assert_eq!(get(storage, &h2).await, None, "served after revoke by id");
}

/// An unverified revoke naming another user leaves the session alone.
pub async fn unverified_revoke_only_touches_the_owners_session<S: SecondaryStorage + ?Sized>(
    storage: &S,
) {
    let (h, s) = (hash(), session(&user(), now(), Duration::days(7)));
    put(storage, &h, &s, None).await;
    let mallory = user();
    let foreign = Revocation::Session {
        id: &s.id,
        user_id: Some(&mallory),
        token_hash: None,
        verified: false,
    };
    assert!(revoke(storage, &[foreign]).await.is_empty());
    assert_eq!(
        get(storage, &h).await,
        Some(s.clone()),
        "another user revoked it"
    );
    let own = Revocation::Session {
        id: &s.id,
        user_id: Some(&s.user_id),
        token_hash: None,
        verified: false,
    };
    assert_eq!(revoke(storage, &[own]).await, vec![s.id.clone()]);
    assert_eq!(get(storage, &h).await, None);
}

/// Revoking a user's sessions but one leaves exactly that one.
pub async fn revoke_user_keeps_only_the_exception<S: SecondaryStorage + ?Sized>(storage: &S) {
    let alice = user();
    let start = now();
    let mut all = Vec::new();
    for i in 0..3 {
        let (h, s) = (
            hash(),
            session(&alice, start + Duration::milliseconds(i), Duration::days(7)),
        );
        put(storage, &h, &s, None).await;
        all.push((h, s));
    }
    let keep = all[1].1.id.clone();
    let mut revoked = revoke(
        storage,
        &[Revocation::User {
            user_id: &alice,
            except: Some(&keep),
        }],
    )
    .await;
    revoked.sort();
    let mut expected = vec![all[0].1.id.clone(), all[2].1.id.clone()];
    expected.sort();
    assert_eq!(revoked, expected);
    for (h, s) in &all {
        let still_there = get(storage, h).await.is_some();
        assert_eq!(
            still_there,
            s.id == keep,
            "session {} after revoke-user",
            s.id
        );
        if s.id != keep {
            assert_eq!(put(storage, h, s, None).await, PutOutcome::Revoked);
        }
    }
    let listed = storage
        .list_by_user(&alice, now())
        .await
        .expect("list failed");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, keep);
}

/// The user index lists live sessions, oldest first, and skips expired ones.
pub async fn list_by_user_is_sorted_and_live_only<S: SecondaryStorage + ?Sized>(storage: &S) {
    let bob = user();
    let start = now();
    let (h1, newer) = (hash(), session(&bob, start, Duration::days(7)));
    let (h2, older) = (
        hash(),
        session(&bob, start - Duration::hours(1), Duration::days(7)),
    );
    let (h3, short) = (
        hash(),
        session(&bob, start - Duration::hours(2), Duration::hours(3)),
    );
    for (h, s) in [(&h1, &newer), (&h2, &older), (&h3, &short)] {
        assert_eq!(put(storage, h, s, None).await, PutOutcome::Written);
    }
    let ids = |sessions: Vec<Session>| sessions.into_iter().map(|s| s.id).collect::<Vec<_>>();
    let listed = storage
        .list_by_user(&bob, now())
        .await
        .expect("list failed");
    assert_eq!(
        ids(listed),
        vec![short.id.clone(), older.id.clone(), newer.id.clone()]
    );
    // Two hours on, the short session has expired.
    let later = now() + Duration::hours(2);
    let listed = storage
        .list_by_user(&bob, later)
        .await
        .expect("list failed");
    assert_eq!(ids(listed), vec![older.id, newer.id]);
    assert!(
        storage
            .list_by_user(&user(), now())
            .await
            .expect("list failed")
            .is_empty(),
        "a user without sessions"
    );
}

/// A put with `replaces` moves the session to its new token hash; the old hash is gone
/// and an old copy cannot come back under it.
pub async fn rotation_moves_the_session_to_the_new_token<S: SecondaryStorage + ?Sized>(
    storage: &S,
) {
    let (old, s) = (hash(), session(&user(), now(), Duration::days(7)));
    put(storage, &old, &s, None).await;
    let new = hash();
    let mut rotated = s.clone();
    rotated.generation += 1;
    assert_eq!(
        put(storage, &new, &rotated, Some(&old)).await,
        PutOutcome::Written
    );
    assert_eq!(get(storage, &old).await, None, "old token still served");
    assert_eq!(get(storage, &new).await, Some(rotated));
    assert_eq!(
        put(storage, &old, &s, None).await,
        PutOutcome::Stale,
        "old copy came back"
    );
    assert_eq!(get(storage, &old).await, None);
    // `forget` drops a copy without revoking the session: it can be written again.
    storage.forget(&new).await.expect("forget failed");
    assert_eq!(
        get(storage, &new).await,
        None,
        "forgotten copy still served"
    );
    let mut again = s.clone();
    again.generation = 2;
    assert_eq!(
        put(storage, &new, &again, None).await,
        PutOutcome::Written,
        "forget revoked the session"
    );
}

/// 100 concurrent puts for one user: none is lost from the index.
pub async fn concurrent_puts_for_one_user_are_all_indexed<S: SecondaryStorage + ?Sized>(
    storage: &S,
) {
    let carol = user();
    let start = now();
    let sessions: Vec<(TokenHash, Session)> = (0..100)
        .map(|_| (hash(), session(&carol, start, Duration::days(7))))
        .collect();
    let outcomes =
        futures_util::future::join_all(sessions.iter().map(|(h, s)| put(storage, h, s, None)))
            .await;
    assert!(
        outcomes.iter().all(|o| *o == PutOutcome::Written),
        "{outcomes:?}"
    );
    let listed = storage
        .list_by_user(&carol, now())
        .await
        .expect("list failed");
    assert_eq!(listed.len(), 100, "lost updates in the user index");
}
