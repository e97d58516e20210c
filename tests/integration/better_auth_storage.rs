//! Better Auth's own storage, read and written by the `better-auth` pieces against real
//! PostgreSQL and Redis (issue 21): the `session`/`user` tables as Better Auth 1.7.25's
//! migrations create them, in a schema of this test run, and its Redis layout under a
//! prefix of this run.
#![cfg(all(feature = "better-auth", feature = "postgres", feature = "redis"))]

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::Map;
use tower_auth_session::better_auth::{
    BaSession, BaSessionWithUser, BaUser, BetterAuthPostgres, BetterAuthRedis, Refreshed,
};
use tower_auth_session::sqlx::postgres::PgPool;

use crate::common::{service_url, unique_name};

/// Better Auth 1.7.25's migration (reference §4), in `schema`.
async fn better_auth_tables() -> Option<(PgPool, String)> {
    let url = service_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")?;
    let pool = PgPool::connect(&url).await.unwrap();
    let schema = unique_name("ba");
    let statements = [
        format!("CREATE SCHEMA \"{schema}\""),
        format!(
            "create table \"{schema}\".\"user\" (\"id\" text not null primary key, \"name\" text not null, \
             \"email\" text not null unique, \"emailVerified\" boolean not null, \"image\" text, \
             \"createdAt\" timestamptz default CURRENT_TIMESTAMP not null, \
             \"updatedAt\" timestamptz default CURRENT_TIMESTAMP not null)"
        ),
        format!(
            "create table \"{schema}\".\"session\" (\"id\" text not null primary key, \
             \"expiresAt\" timestamptz not null, \"token\" text not null unique, \
             \"createdAt\" timestamptz default CURRENT_TIMESTAMP not null, \
             \"updatedAt\" timestamptz not null, \"ipAddress\" text, \"userAgent\" text, \
             \"userId\" text not null references \"{schema}\".\"user\" (\"id\") on delete cascade)"
        ),
        format!(
            "insert into \"{schema}\".\"user\" values ('u1', 'Ada', 'ada@example.test', true, null, now(), now())"
        ),
    ];
    for statement in statements {
        tower_auth_session::sqlx::query(&statement)
            .execute(&pool)
            .await
            .unwrap();
    }
    Some((pool, schema))
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

fn session(token: &str, id: &str, now: DateTime<Utc>) -> BaSession {
    BaSession {
        id: id.to_owned(),
        token: token.to_owned(),
        user_id: "u1".to_owned(),
        expires_at: now + Duration::days(7),
        created_at: now,
        updated_at: now,
        ip_address: Some(String::new()),
        user_agent: Some("tas-test".to_owned()),
        extra: Map::new(),
    }
}

#[tokio::test]
async fn the_tables_are_read_by_raw_token_and_a_refresh_never_resurrects_a_revoked_row() {
    let Some((pool, schema)) = better_auth_tables().await else {
        return;
    };
    let store = BetterAuthPostgres::new(pool.clone(), Some(&schema), false);
    let now = now();
    for (token, id) in [
        ("tokenAAAA", "s1"),
        ("tokenBBBB", "s2"),
        ("tokenCCCC", "s3"),
    ] {
        store.create(&session(token, id, now)).await.unwrap();
    }
    let found = store.find("tokenAAAA").await.unwrap().unwrap();
    assert_eq!(found.session, session("tokenAAAA", "s1", now));
    assert_eq!(found.user.email, "ada@example.test");
    assert!(store.find("nope").await.unwrap().is_none());
    assert_eq!(store.find_user("u1").await.unwrap().unwrap().name, "Ada");

    // A live row refreshes; a revoked one stays revoked.
    let later = now + Duration::days(2);
    assert_eq!(
        store
            .refresh("tokenAAAA", later + Duration::days(7), later)
            .await
            .unwrap(),
        Refreshed::Yes
    );
    let refreshed = store.find("tokenAAAA").await.unwrap().unwrap().session;
    assert_eq!(refreshed.expires_at, later + Duration::days(7));
    assert_eq!((refreshed.id.as_str(), refreshed.created_at), ("s1", now));
    let revoked = store.revoke("tokenBBBB", now).await.unwrap().unwrap();
    assert_eq!(revoked.id, "s2");
    assert_eq!(
        store
            .refresh("tokenBBBB", later + Duration::days(7), later)
            .await
            .unwrap(),
        Refreshed::Gone
    );
    assert!(store.find("tokenBBBB").await.unwrap().is_none());

    // Others (keep A), then all; list reads live rows only.
    assert_eq!(store.list_user("u1", now).await.unwrap().len(), 2);
    let others = store
        .revoke_user("u1", Some("tokenAAAA"), now)
        .await
        .unwrap();
    assert_eq!(
        others.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["s3"]
    );
    assert!(
        store
            .revoke_by_id("s1", Some("someone-else"), now)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        store
            .revoke_by_id("s1", Some("u1"), now)
            .await
            .unwrap()
            .unwrap()
            .id,
        "s1"
    );
    assert!(store.list_user("u1", now).await.unwrap().is_empty());
}

#[tokio::test]
async fn preserve_mode_ends_rows_and_a_refresh_cannot_bring_them_back() {
    let Some((pool, schema)) = better_auth_tables().await else {
        return;
    };
    let store = BetterAuthPostgres::new(pool, Some(&schema), true);
    let now = now();
    store
        .create(&session("tokenPPPP", "p1", now))
        .await
        .unwrap();
    store
        .create(&session("tokenQQQQ", "p2", now))
        .await
        .unwrap();
    assert_eq!(
        store.revoke("tokenPPPP", now).await.unwrap().unwrap().id,
        "p1"
    );
    let row = store.find("tokenPPPP").await.unwrap().unwrap().session;
    assert_eq!(row.expires_at, now, "the row is kept, ended");
    assert_eq!(
        store
            .refresh("tokenPPPP", now + Duration::days(7), now)
            .await
            .unwrap(),
        Refreshed::Gone
    );
    // Ending it twice is not a second revoke.
    assert!(store.revoke("tokenPPPP", now).await.unwrap().is_none());
    assert_eq!(store.revoke_user("u1", None, now).await.unwrap().len(), 1);
    assert!(store.list_user("u1", now).await.unwrap().is_empty());
}

fn user(now: DateTime<Utc>) -> BaUser {
    BaUser {
        id: "u1".to_owned(),
        name: "Ada".to_owned(),
        email: "ada@example.test".to_owned(),
        email_verified: true,
        image: None,
        created_at: now,
        updated_at: now,
        extra: Map::new(),
    }
}

async fn redis(
    prefix: &str,
) -> Option<(
    BetterAuthRedis,
    tower_auth_session::redis::aio::MultiplexedConnection,
)> {
    let url = service_url("REDIS_URL", "redis://127.0.0.1:6379")?;
    let storage = BetterAuthRedis::connect(&url, prefix, std::time::Duration::from_secs(604_800))
        .await
        .unwrap();
    let raw = tower_auth_session::redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    Some((storage, raw))
}

#[tokio::test]
async fn the_redis_layout_is_better_auths_and_revoke_all_sets_the_mark() {
    use tower_auth_session::redis::AsyncCommands;
    let prefix = format!("{}:", unique_name("ba"));
    let Some((storage, mut raw)) = redis(&prefix).await else {
        return;
    };
    let now = now();
    let record = |token: &str, id: &str| BaSessionWithUser {
        session: session(token, id, now),
        user: user(now),
    };
    storage.create(&record("tokA", "s1"), now).await.unwrap();
    storage.create(&record("tokB", "s2"), now).await.unwrap();
    let value: String = raw.get(format!("{prefix}tokA")).await.unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&value).unwrap();
    assert_eq!(
        parsed["session"]["expiresAt"],
        tower_auth_session::serde_json::json!(
            (now + Duration::days(7)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )
    );
    let ttl: i64 = raw.ttl(format!("{prefix}tokA")).await.unwrap();
    assert!((604_000..=604_800).contains(&ttl), "ttl {ttl}");
    let index: String = raw
        .get(format!("{prefix}active-sessions-u1"))
        .await
        .unwrap();
    let index: serde_json::Value = serde_json::from_str(&index).unwrap();
    assert_eq!(index.as_array().unwrap().len(), 2);
    assert_eq!(
        storage.find("tokA").await.unwrap().unwrap(),
        record("tokA", "s1")
    );

    // A refresh rewrites a live value; after a revoke it writes nothing back.
    let mut longer = record("tokA", "s1");
    longer.session.expires_at = now + Duration::days(8);
    assert!(storage.refresh(&longer, now).await.unwrap());
    assert_eq!(storage.find("tokA").await.unwrap().unwrap(), longer);
    assert_eq!(
        storage
            .revoke("tokB", now)
            .await
            .unwrap()
            .unwrap()
            .session
            .id,
        "s2"
    );
    assert!(!storage.refresh(&record("tokB", "s2"), now).await.unwrap());
    let exists: bool = raw.exists(format!("{prefix}tokB")).await.unwrap();
    assert!(!exists, "a refresh after the revoke wrote the session back");
    assert_eq!(storage.list_user("u1", now).await.unwrap().len(), 1);

    // A session no index lists (Better Auth's index loses entries under concurrent
    // sign-ins) dies by the mark; a session the database named dies by its token.
    let _: () = raw
        .set(
            format!("{prefix}tokC"),
            serde_json::to_string(&record("tokC", "s3")).unwrap(),
        )
        .await
        .unwrap();
    let _: () = raw
        .set(
            format!("{prefix}tokD"),
            serde_json::to_string(&record("tokD", "s4")).unwrap(),
        )
        .await
        .unwrap();
    let deleted = storage
        .revoke_user(
            "u1",
            &["tokD".to_owned()],
            None,
            true,
            now + Duration::milliseconds(1),
        )
        .await
        .unwrap();
    let mut ids: Vec<_> = deleted.iter().map(|r| r.session.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["s1", "s4"]);
    assert!(
        storage.find("tokC").await.unwrap().is_none(),
        "the mark ends it"
    );
    let mark: String = raw
        .get(format!("{prefix}revoked-sessions-before-u1"))
        .await
        .unwrap();
    assert_eq!(
        mark,
        (now + Duration::milliseconds(1))
            .timestamp_millis()
            .to_string()
    );
    let index: bool = raw
        .exists(format!("{prefix}active-sessions-u1"))
        .await
        .unwrap();
    assert!(!index);
    // A sign-in after the mark is live.
    let mut fresh = record("tokE", "s5");
    fresh.session.created_at = now + Duration::seconds(1);
    storage.create(&fresh, now).await.unwrap();
    assert!(storage.find("tokE").await.unwrap().is_some());
}

#[tokio::test]
async fn revoke_others_keeps_the_current_session_and_sets_no_mark() {
    use tower_auth_session::redis::AsyncCommands;
    let prefix = format!("{}:", unique_name("ba"));
    let Some((storage, mut raw)) = redis(&prefix).await else {
        return;
    };
    let now = now();
    for (token, id) in [("keep", "k"), ("other1", "o1"), ("other2", "o2")] {
        let record = BaSessionWithUser {
            session: session(token, id, now),
            user: user(now),
        };
        storage.create(&record, now).await.unwrap();
    }
    let deleted = storage
        .revoke_user("u1", &[], Some("keep"), true, now)
        .await
        .unwrap();
    assert_eq!(deleted.len(), 2);
    assert!(storage.find("keep").await.unwrap().is_some());
    let mark: bool = raw
        .exists(format!("{prefix}revoked-sessions-before-u1"))
        .await
        .unwrap();
    assert!(!mark);
    let listed = storage.list_user("u1", now).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|r| r.session.id.as_str())
            .collect::<Vec<_>>(),
        ["k"]
    );
}

#[tokio::test]
async fn a_value_better_auth_wrote_is_read_as_is() {
    use tower_auth_session::redis::AsyncCommands;
    let prefix = "better-auth-test-".to_owned() + &unique_name("ba") + ":";
    let Some((storage, mut raw)) = redis(&prefix).await else {
        return;
    };
    // The value of the reference (§5), byte for byte, with its dates moved ahead.
    let value = r#"{"session":{"expiresAt":"2999-12-14T06:19:23.292Z","token":"YrEKr2hlIniS75GomMpmuL1MSEwGfLkD","createdAt":"2026-12-07T06:19:23.292Z","updatedAt":"2026-12-07T06:19:23.292Z","ipAddress":"","userAgent":"ba-interop-smoke/1","userId":"6TI68s58IumVnuUcPRTfF5uo0pAhZHZO","id":"XZ5R27QrSnbtqBT6NkyVt6oN9DB2KT4E"},"user":{"name":"Smoke Test","email":"smoke-1796624362935@example.test","emailVerified":false,"image":null,"createdAt":"2026-12-07T06:19:23.121Z","updatedAt":"2026-12-07T06:19:23.121Z","id":"6TI68s58IumVnuUcPRTfF5uo0pAhZHZO"}}"#;
    let key = format!("{prefix}YrEKr2hlIniS75GomMpmuL1MSEwGfLkD");
    let _: () = raw.set_ex(&key, value, 60).await.unwrap();
    let found = storage
        .find("YrEKr2hlIniS75GomMpmuL1MSEwGfLkD")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.session.id, "XZ5R27QrSnbtqBT6NkyVt6oN9DB2KT4E");
    // Better Auth's quoted mark form, after the session's creation: revoked.
    let mark = format!("{prefix}revoked-sessions-before-6TI68s58IumVnuUcPRTfF5uo0pAhZHZO");
    let _: () = raw.set_ex(&mark, "\"1796624367034\"", 60).await.unwrap();
    assert!(
        storage
            .find("YrEKr2hlIniS75GomMpmuL1MSEwGfLkD")
            .await
            .unwrap()
            .is_none()
    );
    // A value that is not Better Auth's is an error, not a panic.
    let _: () = raw.set_ex(&key, "not json", 60).await.unwrap();
    assert!(
        storage
            .find("YrEKr2hlIniS75GomMpmuL1MSEwGfLkD")
            .await
            .is_err()
    );
    let _: () = raw.del(&[key, mark]).await.unwrap();
}

#[tokio::test]
async fn the_tiers_are_read_in_better_auths_order() {
    use tower_auth_session::better_auth::{BetterAuthConfig, BetterAuthStorage};
    use tower_auth_session::redis::AsyncCommands;
    let Some((pool, schema)) = better_auth_tables().await else {
        return;
    };
    let prefix = format!("{schema}:");
    let Some((redis, mut raw)) = redis(&prefix).await else {
        return;
    };
    let mut config = BetterAuthConfig::new("a-secret-shared-with-the-app");
    config.secondary_storage = true;
    config.redis_prefix = prefix.clone();
    // A tier the app does not have is a start-up error naming the storage.
    let error = BetterAuthStorage::new(config.clone(), None, Some(redis.clone())).unwrap_err();
    assert!(error.to_string().contains("better_auth.storage"), "{error}");
    let postgres = BetterAuthPostgres::new(pool, Some(&schema), false);
    let storage = BetterAuthStorage::new(config, Some(postgres.clone()), Some(redis)).unwrap();
    let now = now();
    let record = BaSessionWithUser {
        session: session("tokenTier", "t1", now),
        user: user(now),
    };
    storage.create(&record, now).await.unwrap();
    assert!(storage.find("tokenTier", now).await.unwrap().is_some());
    // A Redis miss falls back to the table (storeSessionInDatabase, no preserve).
    let _: () = raw.del(format!("{prefix}tokenTier")).await.unwrap();
    assert!(storage.find("tokenTier", now).await.unwrap().is_some());
    // A Redis hit ended by the revoke-all mark is gone, the row notwithstanding.
    storage
        .create(
            &BaSessionWithUser {
                session: session("tokenMark", "t2", now),
                user: user(now),
            },
            now,
        )
        .await
        .unwrap();
    let mark = (now + Duration::milliseconds(1))
        .timestamp_millis()
        .to_string();
    let _: () = raw
        .set(format!("{prefix}revoked-sessions-before-u1"), mark)
        .await
        .unwrap();
    assert!(postgres.find("tokenMark").await.unwrap().is_some());
    assert!(storage.find("tokenMark", now).await.unwrap().is_none());
    // Past expiresAt: refused whatever the tiers hold.
    assert!(
        storage
            .find("tokenTier", now + Duration::days(8))
            .await
            .unwrap()
            .is_none()
    );
}
