//! The binary layout of a cached session (format 1).
//!
//! Chosen over JSON by measurement: a typical session (22-character id, UUID user id,
//! IPv6 address, 111-byte user agent, no app fields) is 224 bytes here against 532 bytes
//! as JSON (see the `binary_layout_is_less_than_half_of_json` test), which is the
//! difference between a cookie of 370 bytes and one of about 790 once MAC and base64url
//! are added.
//!
//! ```text
//! uvarint  issued_at      ms since the Unix epoch (the cache's own start)
//! uvarint  ttl            ms; the cache's own expiry is issued_at + ttl
//! u64 LE   issuer         the issuing process's random id (own caches are judged by
//!                         when that process regained trust, others' with a skew margin)
//! svarint  ×5             session expires_at, created_at, updated_at, authenticated_at,
//!                         last_seen_at, each as ms relative to issued_at (zigzag)
//! uvarint  generation
//! u8       flags          remember, and which optional parts follow
//! str      id, user_id    uvarint length + UTF-8
//! ip       ip_address     4 or 16 bytes when it is a canonical address, else str
//! str      user_agent
//! str      fields         the app fields as a JSON object
//! ```
//!
//! The bytes are authenticated before they are parsed, so the parser guards only against
//! our own mistakes and old formats; it still never panics and never trusts a length, and
//! it reads a time outside 1970–9999 as no cache (the range every tier holds), so no
//! cache can carry one into a request's arithmetic.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::session::{EARLIEST_TIME_MS, LATEST_TIME_MS, Session, time_from_millis, time_in_range};

const REMEMBER: u8 = 1;
const IP_V4: u8 = 1 << 1;
const IP_V6: u8 = 1 << 2;
const IP_TEXT: u8 = 1 << 3;
const USER_AGENT: u8 = 1 << 4;
const FIELDS: u8 = 1 << 5;
const KNOWN_FLAGS: u8 = REMEMBER | IP_V4 | IP_V6 | IP_TEXT | USER_AGENT | FIELDS;

/// A session as the cookie cache carries it, with the cache's own lifetime.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CachedSession {
    /// When the cache was issued: taken before the store read it copies, so no cache of a
    /// session can claim to be younger than the read that produced it.
    pub(crate) issued_at: DateTime<Utc>,
    /// When the cache stops being trusted, whatever the browser does with `Max-Age`.
    pub(crate) expires_at: DateTime<Utc>,
    /// The random id of the process that issued it.
    pub(crate) issuer: u64,
    pub(crate) session: Session,
}

/// Appends the encoding of `session` cached from `issued_at` to `expires_at` to `out`.
/// `None` when a time is outside the range [`decode`] accepts
/// ([`time_in_range`]) or the app fields cannot be
/// serialized (the caller then skips caching): a cache that could never be believed is
/// not worth its bytes.
pub(crate) fn encode(
    session: &Session,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    issuer: u64,
    out: &mut Vec<u8>,
) -> Option<()> {
    if !(time_in_range(issued_at) && time_in_range(expires_at) && session.times_in_range()) {
        return None;
    }
    write_layout(session, issued_at, expires_at, issuer, out)
}

/// The layout itself, whatever the times.
fn write_layout(
    session: &Session,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    issuer: u64,
    out: &mut Vec<u8>,
) -> Option<()> {
    let base = issued_at.timestamp_millis();
    put_uvarint(out, u64::try_from(base).ok()?);
    let ttl = expires_at.timestamp_millis().checked_sub(base)?;
    put_uvarint(out, u64::try_from(ttl).ok()?);
    out.extend_from_slice(&issuer.to_le_bytes());
    for time in [
        session.expires_at,
        session.created_at,
        session.updated_at,
        session.authenticated_at,
        session.last_seen_at,
    ] {
        put_svarint(out, time.timestamp_millis().checked_sub(base)?);
    }
    put_uvarint(out, session.generation);

    let ip = session
        .ip_address
        .as_deref()
        .map(|text| match text.parse() {
            // Only a spelling that decoding reproduces exactly is stored as bytes.
            Ok(addr) if ip_text(addr) == text => IpPart::Binary(addr),
            _ => IpPart::Text(text),
        });
    let mut flags = 0;
    if session.remember {
        flags |= REMEMBER;
    }
    flags |= match ip {
        None => 0,
        Some(IpPart::Binary(IpAddr::V4(_))) => IP_V4,
        Some(IpPart::Binary(IpAddr::V6(_))) => IP_V6,
        Some(IpPart::Text(_)) => IP_TEXT,
    };
    if session.user_agent.is_some() {
        flags |= USER_AGENT;
    }
    if !session.fields.is_empty() {
        flags |= FIELDS;
    }
    out.push(flags);
    put_bytes(out, session.id.as_bytes());
    put_bytes(out, session.user_id.as_bytes());
    match ip {
        None => {}
        Some(IpPart::Binary(IpAddr::V4(v4))) => out.extend_from_slice(&v4.octets()),
        Some(IpPart::Binary(IpAddr::V6(v6))) => out.extend_from_slice(&v6.octets()),
        Some(IpPart::Text(text)) => put_bytes(out, text.as_bytes()),
    }
    if let Some(user_agent) = &session.user_agent {
        put_bytes(out, user_agent.as_bytes());
    }
    if !session.fields.is_empty() {
        let json = serde_json::to_vec(&session.fields).ok()?;
        put_bytes(out, &json);
    }
    Some(())
}

enum IpPart<'a> {
    Binary(IpAddr),
    Text(&'a str),
}

/// A payload read without allocating: every check [`decode`] makes is made, the times
/// are left as milliseconds and the strings borrowed. The hit path decides on this and
/// keeps the bytes ([`SealedSession`]); the `Session` is built only when a handler reads it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View<'a> {
    pub(crate) issued_at_ms: i64,
    pub(crate) expires_at_ms: i64,
    pub(crate) issuer: u64,
    /// The session's `expires_at`, `created_at`, `updated_at`, `authenticated_at` and
    /// `last_seen_at`, in ms since the epoch, each within 1970–9999.
    pub(crate) times_ms: [i64; 5],
    pub(crate) generation: u64,
    flags: u8,
    pub(crate) id: &'a str,
    pub(crate) user_id: &'a str,
    ip: Option<IpRead<'a>>,
    user_agent: Option<&'a str>,
    /// The app fields' JSON text (not parsed yet).
    fields: Option<&'a [u8]>,
}

#[derive(Debug, Clone, Copy)]
enum IpRead<'a> {
    V4([u8; 4]),
    V6([u8; 16]),
    Text(&'a str),
}

/// Index of each session time in [`View::times_ms`].
pub(crate) const SESSION_EXPIRES_AT: usize = 0;
pub(crate) const CREATED_AT: usize = 1;
pub(crate) const UPDATED_AT: usize = 2;

impl<'a> View<'a> {
    /// Reads the layout; `None` for anything [`decode`] refuses, except that app fields
    /// are only checked when the session is built (a view with fields is decoded at once
    /// by the hit path).
    pub(crate) fn parse(mut input: &'a [u8]) -> Option<Self> {
        let input = &mut input;
        let in_range = |ms: i64| {
            (EARLIEST_TIME_MS..=LATEST_TIME_MS)
                .contains(&ms)
                .then_some(ms)
        };
        let base = in_range(i64::try_from(get_uvarint(input)?).ok()?)?;
        let ttl = i64::try_from(get_uvarint(input)?).ok()?;
        let expires_at_ms = in_range(base.checked_add(ttl)?)?;
        let issuer = u64::from_le_bytes(take(input, 8)?.try_into().ok()?);
        let mut times_ms = [base; 5];
        for slot in &mut times_ms {
            *slot = in_range(base.checked_add(get_svarint(input)?)?)?;
        }
        let generation = get_uvarint(input)?;
        let flags = take(input, 1)?[0];
        if flags & !KNOWN_FLAGS != 0 {
            return None;
        }
        let id = get_str(input)?;
        let user_id = get_str(input)?;
        let ip = if flags & IP_V4 != 0 {
            Some(IpRead::V4(take(input, 4)?.try_into().ok()?))
        } else if flags & IP_V6 != 0 {
            Some(IpRead::V6(take(input, 16)?.try_into().ok()?))
        } else if flags & IP_TEXT != 0 {
            Some(IpRead::Text(get_str(input)?))
        } else {
            None
        };
        let user_agent = if flags & USER_AGENT != 0 {
            Some(get_str(input)?)
        } else {
            None
        };
        let fields = if flags & FIELDS != 0 {
            Some(get_bytes(input)?)
        } else {
            None
        };
        if !input.is_empty() {
            return None;
        }
        Some(Self {
            issued_at_ms: base,
            expires_at_ms,
            issuer,
            times_ms,
            generation,
            flags,
            id,
            user_id,
            ip,
            user_agent,
            fields,
        })
    }

    pub(crate) fn remember(&self) -> bool {
        self.flags & REMEMBER != 0
    }

    pub(crate) fn has_fields(&self) -> bool {
        self.fields.is_some()
    }

    /// The cached session with its strings copied and its fields parsed; `None` when the
    /// fields are not a JSON object.
    pub(crate) fn into_cached(self) -> Option<CachedSession> {
        // In range (checked by `parse`), so these cannot fail.
        let time = time_from_millis;
        let [
            expires_at,
            created_at,
            updated_at,
            authenticated_at,
            last_seen_at,
        ] = self.times_ms.map(time);
        let fields = match self.fields {
            None => Map::new(),
            Some(json) => match serde_json::from_slice::<Value>(json).ok()? {
                Value::Object(map) => map,
                _ => return None,
            },
        };
        Some(CachedSession {
            issued_at: time(self.issued_at_ms)?,
            expires_at: time(self.expires_at_ms)?,
            issuer: self.issuer,
            session: Session {
                id: self.id.to_owned(),
                user_id: self.user_id.to_owned(),
                expires_at: expires_at?,
                created_at: created_at?,
                updated_at: updated_at?,
                authenticated_at: authenticated_at?,
                last_seen_at: last_seen_at?,
                ip_address: self.ip.map(|ip| match ip {
                    IpRead::V4(octets) => ip_text(IpAddr::from(octets)),
                    IpRead::V6(octets) => ip_text(IpAddr::from(octets)),
                    IpRead::Text(text) => text.to_owned(),
                }),
                user_agent: self.user_agent.map(str::to_owned),
                remember: self.remember(),
                generation: self.generation,
                fields,
            },
        })
    }
}

/// Parses what [`encode`] wrote; `None` for anything else, including trailing bytes and
/// times outside the range every tier holds (so none reaches time arithmetic).
pub(crate) fn decode(input: &[u8]) -> Option<CachedSession> {
    View::parse(input)?.into_cached()
}

/// Payloads up to this size are kept inline by a [`SealedSession`]: a typical session
/// (UUID user id, IPv6 address, a long user agent) is about 225 bytes.
pub(crate) const SEALED_INLINE: usize = 320;

/// An authenticated, checked payload without app fields, kept as it came (inline, no
/// allocation) until the session is first read; most requests never read it.
#[derive(Clone)]
pub(crate) struct SealedSession {
    len: u16,
    bytes: [u8; SEALED_INLINE],
}

impl SealedSession {
    /// Keeps `payload` when it fits inline.
    pub(crate) fn keep(payload: &[u8]) -> Option<Self> {
        let len = u16::try_from(payload.len()).ok()?;
        let mut bytes = [0u8; SEALED_INLINE];
        bytes.get_mut(..payload.len())?.copy_from_slice(payload);
        Some(Self { len, bytes })
    }

    /// The session it holds (`None` only if the bytes no longer decode, which `keep`'s
    /// caller checked they do).
    pub(crate) fn unseal(&self) -> Option<Session> {
        decode(&self.bytes[..usize::from(self.len)]).map(|cached| cached.session)
    }
}

impl std::fmt::Debug for SealedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedSession({} bytes)", self.len)
    }
}

/// The text of an address, as `std` writes it (RFC 5952 for IPv6, dotted quad for
/// IPv4-mapped), but without `fmt`: `Ipv6Addr`'s `Display` costs about 0.5 µs, a third
/// of a whole cache hit.
fn ip_text(addr: IpAddr) -> String {
    let v6 = match addr {
        IpAddr::V4(v4) => return v4_text(v4.octets(), String::with_capacity(15)),
        IpAddr::V6(v6) => v6,
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return v4_text(v4.octets(), String::from("::ffff:"));
    }
    let segments = v6.segments();
    // The longest run of two or more zero segments (the first, on a tie) becomes `::`.
    let (mut best, mut run) = ((0, 0), (0, 0));
    for (i, &segment) in segments.iter().enumerate() {
        if segment == 0 {
            run = if run.1 == 0 {
                (i, 1)
            } else {
                (run.0, run.1 + 1)
            };
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run = (0, 0);
        }
    }
    let mut out = String::with_capacity(39);
    let mut i = 0;
    while i < 8 {
        if best.1 >= 2 && i == best.0 {
            out.push_str("::");
            i += best.1;
            continue;
        }
        if i > 0 && !out.ends_with(':') {
            out.push(':');
        }
        push_hex(&mut out, segments[i]);
        i += 1;
    }
    out
}

fn v4_text(octets: [u8; 4], mut out: String) -> String {
    for (i, octet) in octets.into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

fn push_hex(out: &mut String, segment: u16) {
    let mut started = false;
    for shift in [12, 8, 4, 0] {
        let digit = (segment >> shift) & 0xf;
        if digit != 0 || started || shift == 0 {
            started = true;
            out.push(char::from(b"0123456789abcdef"[usize::from(digit)]));
        }
    }
}

fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_svarint(out: &mut Vec<u8>, value: i64) {
    put_uvarint(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_uvarint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn take<'a>(input: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    let (head, rest) = input.split_at_checked(len)?;
    *input = rest;
    Some(head)
}

fn get_uvarint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = take(input, 1)?[0];
        let bits = u64::from(byte & 0x7f);
        // The tenth byte may only carry the top bit of a u64.
        if shift == 63 && bits > 1 {
            return None;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn get_svarint(input: &mut &[u8]) -> Option<i64> {
    let raw = get_uvarint(input)?;
    Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

fn get_bytes<'a>(input: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(get_uvarint(input)?).ok()?;
    take(input, len)
}

fn get_str<'a>(input: &mut &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(get_bytes(input)?).ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::Duration;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::session::{EARLIEST_TIME_MS, LATEST_TIME_MS};

    pub(crate) const CHROME_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

    /// A realistic session without app fields: the shape most caches carry.
    pub(crate) fn typical(issued_at: DateTime<Utc>) -> CachedSession {
        let created = issued_at - Duration::days(3);
        CachedSession {
            issued_at,
            expires_at: issued_at + Duration::seconds(300),
            issuer: 0x5eed_1dc0_ffee,
            session: Session {
                id: "Xo3n9c1yTqkJb4mJ0p7R2w".into(),
                user_id: "6f1c2b9e-8d4a-4e0b-9f3a-2c7d5e8b1a40".into(),
                expires_at: created + Duration::days(7),
                created_at: created,
                updated_at: created + Duration::hours(5),
                authenticated_at: created,
                last_seen_at: created + Duration::hours(5),
                ip_address: Some("2001:db8:85a3::8a2e:370:7334".into()),
                user_agent: Some(CHROME_UA.into()),
                remember: true,
                generation: 3,
                fields: Map::new(),
            },
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_790_000_000_123).unwrap()
    }

    pub(crate) fn encoded(cached: &CachedSession) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode(
            &cached.session,
            cached.issued_at,
            cached.expires_at,
            cached.issuer,
            &mut bytes,
        )
        .unwrap();
        bytes
    }

    fn round_trip(cached: &CachedSession) -> CachedSession {
        decode(&encoded(cached)).unwrap()
    }

    #[test]
    fn typical_session_round_trips() {
        let cached = typical(now());
        assert_eq!(round_trip(&cached), cached);
    }

    #[test]
    fn odd_values_round_trip() {
        let mut cached = typical(now());
        cached.session.ip_address = Some("not an ip".into());
        cached.session.user_agent = None;
        cached.session.remember = false;
        cached.session.generation = u64::MAX;
        cached.session.fields = json!({"a": [1, 2, {"b": null}], "é": "ü"})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(round_trip(&cached), cached);
        cached.session.ip_address = Some("10.0.0.1".into());
        assert_eq!(round_trip(&cached), cached);
        // A non-canonical spelling is kept as text, so it comes back unchanged.
        cached.session.ip_address = Some("::ffff:010.0.0.1".into());
        assert_eq!(round_trip(&cached), cached);
        cached.session.ip_address = None;
        assert_eq!(round_trip(&cached), cached);
    }

    #[test]
    fn app_field_floats_round_trip_bit_for_bit() {
        use crate::session::tests::HARD_FLOATS;
        let mut cached = typical(now());
        cached.session.fields = HARD_FLOATS
            .iter()
            .enumerate()
            .map(|(i, &f)| (format!("f{i}"), json!(f)))
            .collect();
        let back = round_trip(&cached);
        for (i, &f) in HARD_FLOATS.iter().enumerate() {
            let read = back.session.fields[&format!("f{i}")].as_f64().unwrap();
            assert_eq!(read.to_bits(), f.to_bits(), "{f:e} came back as {read:e}");
        }
    }

    #[test]
    fn fields_at_the_depth_limit_round_trip() {
        let mut cached = typical(now());
        cached.session.fields = crate::session::tests::deepest_fields();
        assert_eq!(round_trip(&cached), cached);
    }

    /// The bytes of `cached` in the layout, bypassing the range check of [`encode`], as
    /// a cache from another build or a leaked key could carry them.
    pub(crate) fn written_unchecked(cached: &CachedSession) -> Vec<u8> {
        let mut bytes = Vec::new();
        write_layout(
            &cached.session,
            cached.issued_at,
            cached.expires_at,
            cached.issuer,
            &mut bytes,
        )
        .unwrap();
        bytes
    }

    fn written_with(edit: impl FnOnce(&mut CachedSession)) -> Vec<u8> {
        let mut cached = typical(now());
        edit(&mut cached);
        written_unchecked(&cached)
    }

    #[test]
    fn times_outside_1970_to_9999_are_refused() {
        let max = DateTime::<Utc>::MAX_UTC;
        let before_1970 = DateTime::from_timestamp_millis(-1).unwrap();
        let year_10000 = DateTime::from_timestamp_millis(LATEST_TIME_MS + 1).unwrap();
        for bytes in [
            written_with(|c| c.session.updated_at = max),
            written_with(|c| c.session.expires_at = max),
            written_with(|c| c.session.created_at = year_10000),
            written_with(|c| c.session.last_seen_at = before_1970),
            written_with(|c| c.session.authenticated_at = DateTime::<Utc>::MIN_UTC),
        ] {
            assert_eq!(decode(&bytes), None);
        }
        // Encoding refuses them too, so no such cache is ever issued.
        let mut cached = typical(now());
        cached.session.updated_at = max;
        let mut out = Vec::new();
        assert_eq!(
            encode(
                &cached.session,
                cached.issued_at,
                cached.expires_at,
                cached.issuer,
                &mut out
            ),
            None
        );
        // The ends of the range themselves are fine.
        let mut cached = typical(now());
        cached.session.created_at = DateTime::from_timestamp_millis(EARLIEST_TIME_MS).unwrap();
        cached.session.expires_at = DateTime::from_timestamp_millis(LATEST_TIME_MS).unwrap();
        assert_eq!(round_trip(&cached), cached);
    }

    #[test]
    fn trailing_bytes_and_unknown_flags_are_refused() {
        let bytes = encoded(&typical(now()));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_none());
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_none(), "prefix of {len} bytes");
        }
    }

    #[test]
    fn overlong_varints_are_refused() {
        let mut input: &[u8] = &[0xff; 11];
        assert!(get_uvarint(&mut input).is_none());
        let mut max = Vec::new();
        put_uvarint(&mut max, u64::MAX);
        assert_eq!(get_uvarint(&mut max.as_slice()), Some(u64::MAX));
    }

    /// The measurement behind the choice of format (sizes are printed for the docs).
    #[test]
    fn binary_layout_is_less_than_half_of_json() {
        let cached = typical(now());
        let binary = encoded(&cached);
        let json = serde_json::to_vec(&json!({
            "v": 1,
            "iat": cached.issued_at.timestamp_millis(),
            "exp": cached.expires_at.timestamp_millis(),
            "gen": cached.session.generation,
            "remember": cached.session.remember,
            "session": cached.session,
        }))
        .unwrap();
        println!(
            "typical session: binary {} bytes, JSON {} bytes",
            binary.len(),
            json.len()
        );
        assert!(binary.len() * 2 < json.len());
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn ip_text_matches_std(octets in any::<[u8; 16]>(), zeros in any::<u8>(), v4 in any::<[u8; 4]>()) {
            // Zero some segments so that runs of zeros (the interesting case) are common.
            let mut segments = std::net::Ipv6Addr::from(octets).segments();
            for (i, segment) in segments.iter_mut().enumerate() {
                if zeros & (1 << i) != 0 {
                    *segment = 0;
                }
            }
            let v6 = std::net::Ipv6Addr::from(segments);
            prop_assert_eq!(ip_text(IpAddr::V6(v6)), v6.to_string());
            let mapped = std::net::Ipv4Addr::from(v4).to_ipv6_mapped();
            prop_assert_eq!(ip_text(IpAddr::V6(mapped)), mapped.to_string());
            prop_assert_eq!(ip_text(IpAddr::from(v4)), std::net::Ipv4Addr::from(v4).to_string());
        }

        #[test]
        fn svarints_round_trip(value in any::<i64>()) {
            let mut out = Vec::new();
            put_svarint(&mut out, value);
            prop_assert_eq!(get_svarint(&mut out.as_slice()), Some(value));
        }
    }
}
