//! The session record.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::SessionError;

/// The earliest instant a session time may hold, in ms since the Unix epoch: the epoch
/// itself. The Redis value and the cookie cache write times as unsigned numbers, and no
/// clock that issues sessions reads before 1970.
pub(crate) const EARLIEST_TIME_MS: i64 = 0;
/// The latest: the last millisecond of year 9999 (`253402300800000` is 10000-01-01). Far
/// beyond `now + 1000 years` (the longest duration option), yet so far inside chrono's
/// calendar (year 262142) that adding any option to such a time cannot overflow, and RFC
/// 3339 still spells it with four digits.
pub(crate) const LATEST_TIME_MS: i64 = 253_402_300_799_999;

/// `ms` since the epoch as a session time, or `None` outside
/// [`EARLIEST_TIME_MS`]`..=`[`LATEST_TIME_MS`]. Every decoder of stored sessions reads
/// times through this, so a value written by someone else (`redis-cli`, a bad migration,
/// `'infinity'`) is a decode failure and never reaches time arithmetic.
pub(crate) fn time_from_millis(ms: i64) -> Option<DateTime<Utc>> {
    (EARLIEST_TIME_MS..=LATEST_TIME_MS)
        .contains(&ms)
        .then(|| DateTime::from_timestamp_millis(ms))
        .flatten()
}

/// Whether `time` lies in the range [`time_from_millis`] accepts.
pub(crate) fn time_in_range(time: DateTime<Utc>) -> bool {
    (EARLIEST_TIME_MS..=LATEST_TIME_MS).contains(&time.timestamp_millis())
}

/// How many levels of arrays and objects app fields may nest, counting the fields object
/// itself. serde_json refuses to parse JSON nested deeper than 128 levels, and the tiers
/// wrap the fields (the Redis value puts them inside an array), so a deeper value would be
/// written but never read back; half the parser's limit leaves room for any wrapper.
pub(crate) const MAX_FIELDS_DEPTH: usize = 64;

/// Whether `fields` nest arrays and objects deeper than `limit` levels (the map itself is
/// level 1). The walk keeps its own stack and stops at the first level past `limit`, so
/// even an absurdly deep value cannot overflow the thread's stack here.
pub(crate) fn fields_nest_deeper_than(fields: &Map<String, Value>, limit: usize) -> bool {
    if limit == 0 {
        return true;
    }
    // Each value with the level it sits at; only arrays and objects add a level.
    let mut stack: Vec<(&Value, usize)> = fields.values().map(|value| (value, 2)).collect();
    while let Some((value, level)) = stack.pop() {
        match value {
            Value::Array(_) | Value::Object(_) if level > limit => return true,
            Value::Array(items) => stack.extend(items.iter().map(|item| (item, level + 1))),
            Value::Object(map) => stack.extend(map.values().map(|item| (item, level + 1))),
            _ => {}
        }
    }
    false
}

/// Names app fields may not take: the session's own JSON fields (fields are flattened
/// beside them) and the two that `list-sessions` adds to each entry.
pub(crate) const RESERVED_FIELD_NAMES: [&str; 11] = [
    "id",
    "userId",
    "expiresAt",
    "createdAt",
    "updatedAt",
    "authenticatedAt",
    "lastSeenAt",
    "ipAddress",
    "userAgent",
    "token",
    "current",
];

/// The app field that marks an impersonation session: the impersonator's user id
/// (Better Auth's `impersonatedBy`). Only the server writes it.
pub(crate) const IMPERSONATED_BY: &str = "impersonatedBy";

/// Longest app field name, in bytes.
pub(crate) const MAX_FIELD_NAME_LEN: usize = 64;

/// Whether `name` may name an app field: 1 to [`MAX_FIELD_NAME_LEN`] ASCII letters,
/// digits and `_ - . :`. Names are code identifiers (`activeOrganizationId`, `org:role`);
/// keeping them ASCII means no Unicode lookalike (a Cyrillic `е`, a fullwidth `Ｉ`) can
/// pass for a built-in or a server-only name in a client that compares names loosely.
pub(crate) fn is_field_name(name: &str) -> bool {
    (1..=MAX_FIELD_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

/// The form two field names are compared in: ASCII lower case without `_ - . :`, so
/// `userId`, `userid`, `user_id` and `USER-ID` are one name. A name the policy or the
/// built-ins hold may not be written in another form, since JavaScript clients and ORMs
/// often match keys case- or separator-insensitively.
pub(crate) fn folded_field_name(name: &str) -> String {
    name.bytes()
        .filter(|b| !matches!(b, b'_' | b'-' | b'.' | b':'))
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect()
}

/// Whether any string or object key inside `fields` (names included) holds a NUL
/// character: PostgreSQL's `jsonb` and `text` cannot store one, so the same input would
/// be stored by one store and refused by another.
fn fields_hold_nul(fields: &Map<String, Value>) -> bool {
    let mut stack: Vec<&Value> = Vec::new();
    for (name, value) in fields {
        if name.contains('\0') {
            return true;
        }
        stack.push(value);
    }
    while let Some(value) = stack.pop() {
        match value {
            Value::String(text) if text.contains('\0') => return true,
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => {
                if map.keys().any(|key| key.contains('\0')) {
                    return true;
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    false
}

/// Checks app fields before they are stored, whoever writes them: names as
/// [`is_field_name`] says, none a built-in name in any form ([`folded_field_name`]: they
/// would shadow the session's own fields in its JSON), no NUL anywhere, no nesting past
/// [`MAX_FIELDS_DEPTH`] (it would be written but never read back).
pub(crate) fn check_app_fields(fields: &Map<String, Value>) -> Result<(), SessionError> {
    let invalid = |reason: String| Err(SessionError::Fields(serde::ser::Error::custom(reason)));
    if let Some(name) = fields.keys().find(|name| !is_field_name(name)) {
        return invalid(format!(
            "{name:?} is not a field name (1-{MAX_FIELD_NAME_LEN} ASCII letters, digits, `_ - . :`)"
        ));
    }
    if let Some(name) = fields.keys().find(|name| {
        let folded = folded_field_name(name);
        RESERVED_FIELD_NAMES
            .iter()
            .any(|reserved| folded_field_name(reserved) == folded)
    }) {
        return invalid(format!("{name:?} is a built-in session field"));
    }
    if fields_hold_nul(fields) {
        return invalid("session fields may not hold a NUL character".to_owned());
    }
    if fields_nest_deeper_than(fields, MAX_FIELDS_DEPTH) {
        return invalid(format!(
            "session fields nest arrays and objects more than {MAX_FIELDS_DEPTH} levels deep"
        ));
    }
    Ok(())
}

/// One signed-in device: what stores keep and handlers read.
///
/// Serializes to camelCase JSON with RFC 3339 times; the token is never part of it, so a
/// session can be shown to the browser as it is. App-defined fields (see
/// [`Session::fields`]) are flattened into the same object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Session {
    /// Public id, for listing and revoking. Never a credential.
    pub id: String,
    /// Whose session it is.
    pub user_id: String,
    /// When it stops being valid.
    pub expires_at: DateTime<Utc>,
    /// When it was created (sign-in).
    pub created_at: DateTime<Utc>,
    /// When it was last written (sign-in, refresh, re-authentication, rotation).
    pub updated_at: DateTime<Utc>,
    /// When the user last proved who they are (sign-in or `reauthenticate`).
    pub authenticated_at: DateTime<Utc>,
    /// When the session was last seen (updated at most once per `update_age`).
    pub last_seen_at: DateTime<Utc>,
    /// The client's IP address when last seen, if tracked.
    pub ip_address: Option<String>,
    /// The client's `User-Agent` when last seen, if tracked.
    pub user_agent: Option<String>,
    /// `false` when the user chose not to be remembered: short lifetime, no sliding,
    /// a cookie without `Max-Age`.
    #[serde(skip)]
    pub remember: bool,
    /// Bumped on every write to the record; conditional writes compare it, so a stale
    /// writer can neither lose an update nor bring back a revoked session.
    #[serde(skip)]
    pub generation: u64,
    /// App-defined fields (JSON object), flattened into the session's JSON.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

impl Session {
    /// A new remembered session for `user_id`, created at `now` and expiring at
    /// `expires_at`, with a fresh random id, generation 0 and no app fields.
    ///
    /// The layer builds sessions itself at sign-in; this is for store implementations and
    /// their tests (the struct is `#[non_exhaustive]`).
    ///
    /// ```
    /// use chrono::{Duration, Utc};
    /// use tower_auth_session::Session;
    /// let now = Utc::now();
    /// let session = Session::new("alice", now, now + Duration::days(7));
    /// assert_eq!(session.user_id, "alice");
    /// assert!(!session.is_expired(now));
    /// ```
    pub fn new(user_id: impl Into<String>, now: DateTime<Utc>, expires_at: DateTime<Utc>) -> Self {
        let user_id = user_id.into();
        Self {
            // In the user's shard, so a Redis Cluster keeps the id with the user's keys.
            id: crate::token::random_id_for(&user_id),
            user_id,
            expires_at,
            created_at: now,
            updated_at: now,
            authenticated_at: now,
            last_seen_at: now,
            ip_address: None,
            user_agent: None,
            remember: true,
            generation: 0,
            fields: Map::new(),
        }
    }

    /// Reads the app-defined fields as a typed value.
    ///
    /// ```
    /// # use tower_auth_session::Session;
    /// #[derive(serde::Deserialize)]
    /// struct Device { device_name: String }
    /// # fn demo(session: &Session) {
    /// let device: Device = session.fields_as().unwrap();
    /// # }
    /// ```
    pub fn fields_as<T: DeserializeOwned>(&self) -> Result<T, SessionError> {
        serde_json::from_value(Value::Object(self.fields.clone())).map_err(SessionError::Fields)
    }

    /// Whether the session has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    /// Whether all five times lie in the range every tier can store and read back.
    pub(crate) fn times_in_range(&self) -> bool {
        [
            self.expires_at,
            self.created_at,
            self.updated_at,
            self.authenticated_at,
            self.last_seen_at,
        ]
        .into_iter()
        .all(time_in_range)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// App fields exactly [`MAX_FIELDS_DEPTH`] levels deep: `{"a": {"a": … [1] …}}`.
    pub(crate) fn deepest_fields() -> Map<String, Value> {
        let inner = (2..MAX_FIELDS_DEPTH).fold(Value::Array(vec![1.into()]), |inner, _| {
            Value::Object(Map::from_iter([("a".to_owned(), inner)]))
        });
        let fields = Map::from_iter([("a".to_owned(), inner)]);
        assert!(!fields_nest_deeper_than(&fields, MAX_FIELDS_DEPTH));
        assert!(fields_nest_deeper_than(&fields, MAX_FIELDS_DEPTH - 1));
        fields
    }

    #[test]
    fn the_time_range_is_1970_to_9999() {
        use chrono::Datelike;
        assert_eq!(
            time_from_millis(EARLIEST_TIME_MS).map(|t| t.to_rfc3339()),
            Some("1970-01-01T00:00:00+00:00".to_owned())
        );
        let latest = time_from_millis(LATEST_TIME_MS).unwrap();
        assert_eq!(latest.year(), 9999);
        assert_eq!((latest + chrono::Duration::milliseconds(1)).year(), 10000);
        for outside in [-1, LATEST_TIME_MS + 1, i64::MIN, i64::MAX] {
            assert_eq!(time_from_millis(outside), None, "{outside}");
        }
        assert!(!time_in_range(DateTime::<Utc>::MAX_UTC));
        assert!(!time_in_range(DateTime::<Utc>::MIN_UTC));
        // Nothing in range overflows when the longest option (1000 years) is added.
        assert!(
            latest
                .checked_add_signed(chrono::Duration::days(1000 * 366))
                .is_some()
        );
    }

    #[test]
    fn nesting_counts_arrays_and_objects_only() {
        let flat = Map::from_iter([("n".to_owned(), Value::from(1))]);
        assert!(!fields_nest_deeper_than(&flat, 1));
        assert!(fields_nest_deeper_than(&flat, 0));
        let two = Map::from_iter([("a".to_owned(), Value::Array(vec![]))]);
        assert!(!fields_nest_deeper_than(&two, 2));
        assert!(fields_nest_deeper_than(&two, 1));
        deepest_fields();
    }

    /// Floats whose shortest text serde_json's default parser reads back one ULP off
    /// (found by search; the `0.1 + 0.2` style values at the end happen to survive it).
    /// With serde_json's `float_roundtrip` every one comes back bit for bit, which the
    /// cookie cache's and the Redis encoding's round-trip tests check.
    pub(crate) const HARD_FLOATS: [f64; 6] = [
        0.999_999_999_999_999_9,
        1.234_567_890_123_456_8e-300,
        1.071_566_039_146_582_6e-75,
        0.300_000_000_000_000_04,
        1.000_000_000_000_000_2,
        2.225_073_858_507_201_4e-308,
    ];
}
