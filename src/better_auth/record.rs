//! The session and user records as Better Auth stores them: in its Redis values, its
//! cookie cache and (as columns) its tables. Extra fields (plugins, `additionalFields`)
//! are kept as they came, so a record read and written back loses nothing.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A row of Better Auth's `session` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaSession {
    /// The public id.
    pub id: String,
    /// The raw token, as Better Auth stores it (reference §4: `session.token`, unique).
    pub token: String,
    /// The owner.
    pub user_id: String,
    /// When the session ends.
    #[serde(with = "js_date")]
    pub expires_at: DateTime<Utc>,
    /// When it was created; Better Auth's revoke-all mark is compared with it.
    #[serde(with = "js_date")]
    pub created_at: DateTime<Utc>,
    /// Its last refresh.
    #[serde(with = "js_date")]
    pub updated_at: DateTime<Utc>,
    /// The client address Better Auth recorded (`""` when it had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// The client's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Fields added by plugins or `additionalFields`, kept as they came.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A row of Better Auth's `user` table (the snapshot its Redis value and cache hold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaUser {
    /// The user id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email address.
    pub email: String,
    /// Whether the address was verified.
    pub email_verified: bool,
    /// Avatar URL.
    #[serde(default)]
    pub image: Option<String>,
    /// When the user was created.
    #[serde(with = "js_date")]
    pub created_at: DateTime<Utc>,
    /// Its last change.
    #[serde(with = "js_date")]
    pub updated_at: DateTime<Utc>,
    /// Fields added by plugins or `additionalFields`.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `{session, user}`: Better Auth's Redis value and the core of its cookie cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaSessionWithUser {
    /// The session.
    pub session: BaSession,
    /// The user snapshot stored with it.
    pub user: BaUser,
}

/// Times as JavaScript's `Date.prototype.toISOString` writes them: always three
/// fractional digits and `Z`, so a value Better Auth parses and re-serializes comes out
/// byte for byte the same (its compact cache is verified that way).
pub(crate) mod js_date {
    use super::*;

    pub(crate) fn format(time: &DateTime<Utc>) -> String {
        time.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    pub(crate) fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(time))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let time = DateTime::parse_from_rfc3339(&text)
            .map_err(|_| serde::de::Error::custom("not an ISO date"))?
            .with_timezone(&Utc);
        if crate::session::time_in_range(time) {
            Ok(time)
        } else {
            Err(serde::de::Error::custom("date out of range"))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The Redis value of the reference (§5), as Better Auth 1.7.25 wrote it.
    pub(crate) const REDIS_VALUE: &str = r#"{"session":{"expiresAt":"2026-12-14T06:19:23.292Z","token":"YrEKr2hlIniS75GomMpmuL1MSEwGfLkD","createdAt":"2026-12-07T06:19:23.292Z","updatedAt":"2026-12-07T06:19:23.292Z","ipAddress":"","userAgent":"ba-interop-smoke/1","userId":"6TI68s58IumVnuUcPRTfF5uo0pAhZHZO","id":"XZ5R27QrSnbtqBT6NkyVt6oN9DB2KT4E"},"user":{"name":"Smoke Test","email":"smoke-1796624362935@example.test","emailVerified":false,"image":null,"createdAt":"2026-12-07T06:19:23.121Z","updatedAt":"2026-12-07T06:19:23.121Z","id":"6TI68s58IumVnuUcPRTfF5uo0pAhZHZO"}}"#;

    #[test]
    fn reads_better_auths_redis_value_and_keeps_plugin_fields() {
        let value: BaSessionWithUser = serde_json::from_str(REDIS_VALUE).unwrap();
        assert_eq!(value.session.token, "YrEKr2hlIniS75GomMpmuL1MSEwGfLkD");
        assert_eq!(value.session.user_id, value.user.id);
        assert_eq!(
            js_date::format(&value.session.expires_at),
            "2026-12-14T06:19:23.292Z"
        );
        let with_role = REDIS_VALUE.replace(r#""id":"XZ5R"#, r#""role":"admin","id":"XZ5R"#);
        let value: BaSessionWithUser = serde_json::from_str(&with_role).unwrap();
        assert_eq!(value.session.extra["role"], "admin");
        let again: BaSessionWithUser =
            serde_json::from_str(&serde_json::to_string(&value).unwrap()).unwrap();
        assert_eq!(again, value);
    }

    #[test]
    fn a_bad_date_is_a_decode_error() {
        let bad = REDIS_VALUE.replace("2026-12-14T06:19:23.292Z", "tomorrow");
        assert!(serde_json::from_str::<BaSessionWithUser>(&bad).is_err());
        let far = REDIS_VALUE.replace("2026-12-14T06:19:23.292Z", "+275760-09-13T00:00:00.000Z");
        assert!(serde_json::from_str::<BaSessionWithUser>(&far).is_err());
    }
}
