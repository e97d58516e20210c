//! The compact value a session is stored as in Redis.
//!
//! ```text
//! 1;<generation>;<expires_ms>;<id_len>;<id><user_len>;<user_id>[created_ms,Δupdated,Δauthenticated,Δlast_seen,remember,ip,user_agent,{fields}]
//! ```
//!
//! The header is plain text so that the Lua scripts can read the generation, expiry, id
//! and owner with one `string.match` (they need them for conditional writes and
//! revocation); lengths make the id and user id binary-safe. The rest is a JSON array with
//! times as milliseconds, the later ones relative to `created_at`, which keeps a typical
//! session (browser user agent, IPv4) near 200 bytes. The token never appears: values are
//! stored under `SHA-256(token)`.
//!
//! Every time is between 1970 and 9999 and the generation at most `i64::MAX`, on both
//! sides: [`encode`] refuses anything else and [`decode`] reads it as no value, so a
//! value written by hand can neither reach a request's arithmetic nor put a sign in the
//! header the scripts parse.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::StoreError;
use crate::session::{Session, time_from_millis};

/// The format version written first in every value.
const VERSION: &str = "1";
/// The largest generation a value may carry.
const MAX_GENERATION: u64 = i64::MAX as u64;

#[derive(Serialize, Deserialize)]
struct Body<'a>(
    i64,
    i64,
    i64,
    i64,
    u8,
    #[serde(borrow)] Option<Cow<'a, str>>,
    #[serde(borrow)] Option<Cow<'a, str>>,
    Map<String, Value>,
);

/// Encodes a session for Redis; an error when one of its times lies outside 1970–9999
/// ([`time_in_range`](crate::session::time_in_range)) or its generation past
/// `i64::MAX`. The header must stay digits for the scripts (`%d+` reads no sign), and
/// [`decode`] refuses such values anyway, so the write fails like an unreachable Redis
/// would (no copy, never a sign-out) instead of storing a value nothing could read.
pub(crate) fn encode(session: &Session) -> Result<Vec<u8>, StoreError> {
    if !session.times_in_range() {
        return Err(StoreError::new(
            "session not written to redis: a time lies outside 1970-9999",
        ));
    }
    if session.generation > MAX_GENERATION {
        return Err(StoreError::new(
            "session not written to redis: generation exceeds i64::MAX",
        ));
    }
    let created = session.created_at.timestamp_millis();
    let body = Body(
        created,
        session.updated_at.timestamp_millis() - created,
        session.authenticated_at.timestamp_millis() - created,
        session.last_seen_at.timestamp_millis() - created,
        u8::from(session.remember),
        session.ip_address.as_deref().map(Cow::Borrowed),
        session.user_agent.as_deref().map(Cow::Borrowed),
        session.fields.clone(),
    );
    let mut out = format!(
        "{VERSION};{};{};{};{}{};{}",
        session.generation,
        session.expires_at.timestamp_millis(),
        session.id.len(),
        session.id,
        session.user_id.len(),
        session.user_id,
    )
    .into_bytes();
    // Serializing plain numbers, strings and a JSON map cannot fail.
    serde_json::to_writer(&mut out, &body).expect("session body serializes");
    Ok(out)
}

/// Decodes a value written by [`encode`]; `None` for anything else, including times
/// outside 1970–9999 (a value written with `redis-cli`, say), which must never reach the
/// time arithmetic of a request.
pub(crate) fn decode(bytes: &[u8]) -> Option<Session> {
    let rest = bytes.strip_prefix(VERSION.as_bytes())?.strip_prefix(b";")?;
    let (generation, rest) = number(rest)?;
    // No store keeps more (PostgreSQL's BIGINT), and a refresh writes `generation + 1`.
    if generation > MAX_GENERATION {
        return None;
    }
    let (expires_ms, rest) = number(rest)?;
    let (id, rest) = counted(rest)?;
    let (user_id, rest) = counted(rest)?;
    let body: Body<'_> = serde_json::from_slice(rest).ok()?;
    let Body(created, updated, authenticated, last_seen, remember, ip, user_agent, fields) = body;
    let at = time_from_millis;
    let offset = |delta: i64| created.checked_add(delta).and_then(at);
    Some(Session {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        expires_at: at(i64::try_from(expires_ms).ok()?)?,
        created_at: at(created)?,
        updated_at: offset(updated)?,
        authenticated_at: offset(authenticated)?,
        last_seen_at: offset(last_seen)?,
        ip_address: ip.map(Cow::into_owned),
        user_agent: user_agent.map(Cow::into_owned),
        remember: remember != 0,
        generation,
        fields,
    })
}

/// `<digits>;` → the number and what follows.
fn number(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let end = bytes.iter().position(|&b| b == b';')?;
    let digits = std::str::from_utf8(&bytes[..end]).ok()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, &bytes[end + 1..]))
}

/// `<len>;<len bytes of UTF-8>` → the string and what follows.
fn counted(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = number(bytes)?;
    let len = usize::try_from(len).ok()?;
    if rest.len() < len {
        return None;
    }
    let (text, rest) = rest.split_at(len);
    Some((std::str::from_utf8(text).ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{EARLIEST_TIME_MS, LATEST_TIME_MS};
    use chrono::{DateTime, Duration, Utc};

    fn sample() -> Session {
        let created = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let mut fields = Map::new();
        fields.insert("method".into(), Value::from("password"));
        Session {
            id: "AAECAwQFBgcICQoLDA0ODw".into(),
            user_id: "ali;ce{}\u{e9}".into(),
            expires_at: created + Duration::days(7),
            created_at: created,
            updated_at: created + Duration::seconds(5),
            authenticated_at: created,
            last_seen_at: created + Duration::seconds(5),
            ip_address: Some("203.0.113.7".into()),
            user_agent: Some("Mozilla/5.0 \"quoted\"".into()),
            remember: true,
            generation: 3,
            fields,
        }
    }

    #[test]
    fn round_trips_every_field() {
        let session = sample();
        assert_eq!(decode(&encode(&session).unwrap()), Some(session));
        let mut bare = sample();
        bare.ip_address = None;
        bare.user_agent = None;
        bare.remember = false;
        bare.fields = Map::new();
        assert_eq!(decode(&encode(&bare).unwrap()), Some(bare));
    }

    #[test]
    fn app_field_floats_round_trip_bit_for_bit() {
        use crate::session::tests::HARD_FLOATS;
        let mut session = sample();
        session.fields = HARD_FLOATS
            .iter()
            .enumerate()
            .map(|(i, &f)| (format!("f{i}"), Value::from(f)))
            .collect();
        let back = decode(&encode(&session).unwrap()).unwrap();
        for (i, &f) in HARD_FLOATS.iter().enumerate() {
            let read = back.fields[&format!("f{i}")].as_f64().unwrap();
            assert_eq!(read.to_bits(), f.to_bits(), "{f:e} came back as {read:e}");
        }
    }

    #[test]
    fn fields_at_the_depth_limit_round_trip() {
        let mut session = sample();
        session.fields = crate::session::tests::deepest_fields();
        assert_eq!(decode(&encode(&session).unwrap()), Some(session));
    }

    #[test]
    fn header_is_what_the_scripts_parse() {
        let encoded = String::from_utf8(encode(&sample()).unwrap()).unwrap();
        let expires = sample().expires_at.timestamp_millis();
        assert!(
            encoded.starts_with(&format!(
                "1;3;{expires};22;AAECAwQFBgcICQoLDA0ODw{};ali;ce{{}}\u{e9}[",
                "ali;ce{}\u{e9}".len()
            )),
            "{encoded}"
        );
    }

    /// A value as `redis-cli SET` could leave it: created now-ish, updated at `updated_ms`.
    fn value_updated_at(updated_ms: i64) -> Vec<u8> {
        let created: i64 = 1_700_000_000_123;
        let expires = created + 7 * 86_400_000;
        format!(
            "1;3;{expires};1;a5;alice[{created},{},0,0,1,null,null,{{}}]",
            updated_ms - created
        )
        .into_bytes()
    }

    #[test]
    fn times_outside_1970_to_9999_decode_to_none() {
        assert!(decode(&value_updated_at(1_700_000_005_000)).is_some());
        let chrono_max = DateTime::<Utc>::MAX_UTC.timestamp_millis();
        for updated_ms in [chrono_max, LATEST_TIME_MS + 1, EARLIEST_TIME_MS - 1] {
            assert_eq!(decode(&value_updated_at(updated_ms)), None, "{updated_ms}");
        }
        // `created` itself, absolute in the body, before 1970.
        assert_eq!(
            decode(b"1;3;1700000000000;1;a5;alice[-5,0,0,0,1,null,null,{}]"),
            None
        );
    }

    /// Whatever `encode` writes, `decode` reads back unchanged: before this, a session
    /// from before 1970 was written with a `-` in the header, which neither `decode` nor
    /// the scripts read.
    #[test]
    fn encode_writes_only_what_decode_reads() {
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap();
        type SetTime = fn(&mut Session, DateTime<Utc>);
        let edits: [(&str, SetTime); 5] = [
            ("expires_at", |s, t| s.expires_at = t),
            ("created_at", |s, t| s.created_at = t),
            ("updated_at", |s, t| s.updated_at = t),
            ("authenticated_at", |s, t| s.authenticated_at = t),
            ("last_seen_at", |s, t| s.last_seen_at = t),
        ];
        for (field, edit) in edits {
            for ms in [
                -86_400_000,
                EARLIEST_TIME_MS - 1,
                EARLIEST_TIME_MS,
                LATEST_TIME_MS,
                LATEST_TIME_MS + 1,
            ] {
                let mut session = sample();
                edit(&mut session, at(ms));
                let in_range = (EARLIEST_TIME_MS..=LATEST_TIME_MS).contains(&ms);
                match encode(&session).ok() {
                    Some(bytes) => assert_eq!(
                        (in_range, decode(&bytes)),
                        (true, Some(session)),
                        "{field} = {ms} ms was written"
                    ),
                    None => assert!(!in_range, "{field} = {ms} ms was refused"),
                }
            }
        }
        let mut session = sample();
        session.generation = MAX_GENERATION;
        assert_eq!(decode(&encode(&session).unwrap()), Some(session.clone()));
        session.generation += 1;
        assert!(encode(&session).is_err());
    }

    #[test]
    fn garbage_is_none_never_a_panic() {
        let good = encode(&sample()).unwrap();
        for len in 0..good.len() {
            assert_eq!(decode(&good[..len]), None, "prefix of {len} bytes");
        }
        for bad in [
            &b"2;3;4;1;a1;b[]"[..],
            b"1;x;4;1;a1;b[]",
            b"1;3;4;99;a",
            b"1;3;4;1;\xff1;b[0,0,0,0,1,null,null,{}]",
            b"1;3;99999999999999999999;1;a1;b[0,0,0,0,1,null,null,{}]",
            b"1;3;4;1;a1;b[9223372036854775807,9223372036854775807,0,0,1,null,null,{}]",
            // A generation past i64::MAX: `generation + 1` in a refresh would overflow.
            b"1;18446744073709551615;4;1;a1;b[0,0,0,0,1,null,null,{}]",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
