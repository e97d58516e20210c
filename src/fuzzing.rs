//! Entry points for the fuzz targets in `fuzz/` and for the test that replays their
//! regression inputs (feature `fuzzing`: **unstable, for the crate's own fuzz crate
//! only**; nothing here is part of the public API or covered by semver).
//!
//! Each `check_*` function takes one raw fuzzer input, feeds it to one parser that reads
//! attacker-controlled bytes, and panics when a property fails: a round trip that does
//! not come back, a disagreement with the simple reference implementation written here,
//! a time outside 1970–9999 that reached a request, a minted token. The fuzz targets and
//! `tests/integration/fuzz_regressions.rs` call the same functions, so a regression file
//! is checked exactly the way the fuzzer checked it.
//!
//! Input layouts are described on each function; `fuzz/src/bin/seeds.rs` writes valid
//! examples of every one.

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use chrono::{DateTime, Duration, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, header};
use ipnet::IpNet;
use serde_json::{Map, Value};
use tower_layer::Layer;
use tower_service::Service;

use crate::client::{ClientFacts, ClientTracking, normalise};
use crate::config::{SessionConfig, TokenTransport};
use crate::cookie_cache::chunks::{self, ChunkNames};
use crate::cookie_cache::payload;
use crate::cookie_cache::seal::{self, Binding, Protection};
use crate::cookies::{CookieLookup, CookieNames, MAX_COOKIE_VALUE_LEN, cookie_pairs, find_cookie};
use crate::origin::{TrustedOrigins, is_cross_site, normalise_origin};
use crate::request_cookies::RequestCookies;
use crate::request_token::{PresentedToken, TokenSource, presented_token};
use crate::session::{LATEST_TIME_MS, Session};
use crate::token::{Key, KeyRing, Token, TokenHash};
use crate::{
    CookieCache, ManualClock, MemoryStore, SET_AUTH_TOKEN, SessionHandle, SessionManager,
    SignInOptions,
};

/// The fixed instant every check runs at: 2026-09-21T12:00:00.123Z.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_790_000_000_123).expect("a sane instant")
}

/// The first byte (a mode or flags) and the rest.
fn split_first(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, &[]),
    }
}

/// The cookie names of the default configuration (`__Host-tas.…`).
fn default_names() -> CookieNames {
    CookieNames::new(&SessionConfig::default())
}

// ---------------------------------------------------------------------------------------
// 1. Cookie headers and chunk reassembly
// ---------------------------------------------------------------------------------------

/// The reference `Cookie` header reading: split each header on `;`, trim, split at the
/// first `=`, trim both sides, drop one pair of surrounding quotes from the value.
fn reference_pairs(headers: &HeaderMap) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|&b| b == b';') {
            let pair = pair.trim_ascii();
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            let name = pair[..eq].trim_ascii();
            let mut value = pair[eq + 1..].trim_ascii();
            if value.len() >= 2 && value.starts_with(b"\"") && value.ends_with(b"\"") {
                value = &value[1..value.len() - 1];
            }
            out.push((name, value));
        }
    }
    out
}

/// The reference lookup of one name among `pairs`.
fn reference_lookup<'a>(pairs: &[(&[u8], &'a [u8])], name: &str) -> CookieLookup<'a> {
    let found: Vec<&[u8]> = pairs
        .iter()
        .filter(|(n, _)| *n == name.as_bytes())
        .map(|(_, v)| *v)
        .collect();
    match found.as_slice() {
        [] => CookieLookup::Absent,
        [one] if one.len() <= MAX_COOKIE_VALUE_LEN => CookieLookup::One(one),
        _ => CookieLookup::Bad,
    }
}

/// The reference reading of the cookie cache's cookies: the plain value alone, or chunks
/// `.0`…`.n-1` (n ≥ 2, nothing after), each name once and no value over 4096 bytes.
fn reference_cache_value(pairs: &[(&[u8], &[u8])], plain: &str) -> Option<Vec<u8>> {
    let names: Vec<String> = std::iter::once(plain.to_owned())
        .chain((0..chunks::MAX_CHUNKS).map(|i| format!("{plain}.{i}")))
        .collect();
    let mut values: Vec<Vec<&[u8]>> = vec![Vec::new(); names.len()];
    for (name, value) in pairs {
        if let Some(i) = names.iter().position(|n| n.as_bytes() == *name) {
            values[i].push(value);
        }
    }
    let anomaly = values
        .iter()
        .any(|v| v.len() > 1 || v.iter().any(|v| v.len() > MAX_COOKIE_VALUE_LEN));
    if anomaly {
        return None;
    }
    let chunk_values = &values[1..];
    let any_chunk = chunk_values.iter().any(|v| !v.is_empty());
    if let Some(plain_value) = values[0].first() {
        return (!any_chunk).then(|| plain_value.to_vec());
    }
    let count = chunk_values.iter().take_while(|v| !v.is_empty()).count();
    if count < 2 || chunk_values[count..].iter().any(|v| !v.is_empty()) {
        return None;
    }
    Some(
        chunk_values[..count]
            .iter()
            .flat_map(|v| v[0].to_vec())
            .collect(),
    )
}

/// Target `cookie_header`: `Cookie` headers and the cache's chunk reassembly.
///
/// Input: one flag byte, then `\n`-separated `Cookie` header values (the flag's bits
/// also pick the chunk split limit). Properties: the pair splitter, the per-name lookups,
/// the one-pass `RequestCookies` and the cache reassembly all agree with the reference
/// implementations above; splitting a value (made from the input) into chunks and reading
/// those cookies back returns the value, within the limit and the chunk cap.
pub fn check_cookie_header(data: &[u8]) {
    let (flags, rest) = split_first(data);
    let names = default_names();
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(header::COOKIE, value);
        }
    }
    let reference = reference_pairs(&headers);
    let ours: Vec<_> = cookie_pairs(&headers).collect();
    assert_eq!(ours, reference, "cookie pairs differ from the reference");

    for name in [
        &names.session_token,
        &names.session_data,
        &names.dont_remember,
    ] {
        assert_eq!(
            find_cookie(&headers, name),
            reference_lookup(&reference, name)
        );
    }
    for cache_on in [false, true] {
        let parsed = RequestCookies::parse(&names, cache_on, &headers);
        assert_eq!(
            parsed.session_token,
            reference_lookup(&reference, &names.session_token)
        );
        assert_eq!(
            parsed.dont_remember,
            reference_lookup(&reference, &names.dont_remember) != CookieLookup::Absent
        );
        match (cache_on, &parsed.cache) {
            (false, None) => {}
            (true, Some(gathered)) => {
                let expected = reference_cache_value(&reference, &names.session_data);
                assert_eq!(
                    gathered.value().map(Cow::into_owned),
                    expected,
                    "cache reassembly differs from the reference"
                );
                let presence = gathered.presence();
                let sent = |name: &str| reference.iter().any(|(n, _)| *n == name.as_bytes());
                assert_eq!(presence.has_plain(), sent(&names.session_data));
                for i in 0..chunks::MAX_CHUNKS {
                    assert_eq!(
                        presence.has_chunk(i),
                        sent(&format!("{}.{i}", names.session_data))
                    );
                }
            }
            _ => panic!("the cache is gathered exactly when it is on"),
        }
    }

    // Split → reassemble, with a value of base64url characters made from the input.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let value: String = rest
        .iter()
        .map(|&b| char::from(ALPHABET[usize::from(b & 63)]))
        .collect();
    let value = value.repeat(usize::from(flags >> 6) * 20 + 1);
    let limit = 1 + (usize::from(flags & 63) * 67 + rest.len()) % MAX_COOKIE_VALUE_LEN;
    check_split_round_trip(&names, &value, limit);
}

fn check_split_round_trip(names: &CookieNames, value: &str, limit: usize) {
    let chunk_names = ChunkNames::new(&names.session_data);
    let plain_len = chunk_names.plain.len();
    let chunk_len = chunk_names.chunks[0].len();
    let Some(pieces) = chunks::split(value, &chunk_names, limit) else {
        // Refused only when even three full chunks cannot hold it.
        let room = limit.saturating_sub(chunk_len + 1);
        assert!(plain_len + 1 + value.len() > limit);
        assert!(room == 0 || value.len() > chunks::MAX_CHUNKS * room);
        return;
    };
    assert!(!pieces.is_empty() && pieces.len() <= chunks::MAX_CHUNKS);
    assert_eq!(pieces.concat(), value);
    let written: Vec<&str> = chunk_names.written(pieces.len()).collect();
    assert_eq!(written.len(), pieces.len());
    let mut line = String::new();
    for (name, piece) in written.iter().zip(&pieces) {
        assert!(
            name.len() + 1 + piece.len() <= limit,
            "a chunk passes the limit"
        );
        if !line.is_empty() {
            line.push_str("; ");
        }
        line.push_str(name);
        line.push('=');
        line.push_str(piece);
    }
    let mut headers = HeaderMap::new();
    headers.append(header::COOKIE, HeaderValue::from_str(&line).expect("ASCII"));
    let parsed = RequestCookies::parse(names, true, &headers);
    let gathered = parsed.cache.expect("cache on");
    assert_eq!(
        gathered.value().as_deref(),
        Some(value.as_bytes()),
        "split chunks do not reassemble"
    );
}

// ---------------------------------------------------------------------------------------
// 2. The token and the bearer header
// ---------------------------------------------------------------------------------------

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        KeyRing::new(vec![
            Key::new("k0", [1u8; 32]).expect("valid key"),
            Key::new("k1", [2u8; 32]).expect("valid key"),
        ])
        .expect("valid ring")
    })
}

/// A ring holding only the key `kid` of [`ring`] (so it signs with it).
fn ring_signing_with(kid: &str) -> KeyRing {
    let secret = if kid == "k0" { [1u8; 32] } else { [2u8; 32] };
    KeyRing::new(vec![Key::new(kid, secret).expect("valid key")]).expect("valid ring")
}

/// The reference `Authorization: Bearer` reading.
fn reference_bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let rest = value[7..].trim_ascii();
    (!rest.is_empty()).then_some(rest)
}

/// Target `token`: [`KeyRing::verify_token`] and the bearer header.
///
/// Input: one byte (a mutation position), then the bytes tried as a cookie value and as
/// an `Authorization` header. Properties: a value that verifies is exactly what signing
/// its token produces (one accepted spelling per token); a token made from the input
/// signs and verifies, and every change of its signed value (a flipped byte, a cut, an
/// appended byte, another cookie name) is refused; the token a request presents is the
/// reference bearer value when there is one (`Bearer` beats the cookie), else the cookie.
pub fn check_token(data: &[u8]) {
    let (position, rest) = split_first(data);
    let ring = ring();
    let name = default_names().session_token;

    if let Ok(token) = ring.verify_token(&name, rest) {
        let kid = rest.split(|&b| b == b'.').next().unwrap_or_default();
        let kid = std::str::from_utf8(kid).expect("a verified key id is UTF-8");
        let again = ring_signing_with(kid).sign_token(&name, &token);
        assert_eq!(
            again.as_bytes(),
            rest,
            "a second spelling of a token verified"
        );
    }

    // Round trip of a token made from the input, and every mutation refused.
    let mut bytes = [0u8; 32];
    for (slot, byte) in bytes.iter_mut().zip(rest) {
        *slot = *byte;
    }
    let token = token_from(bytes);
    let signed = ring.sign_token(&name, &token);
    assert_eq!(
        ring.verify_token(&name, signed.as_bytes()),
        Ok(token.clone())
    );
    assert!(ring.verify_token("other", signed.as_bytes()).is_err());
    let at = usize::from(position) % signed.len();
    let mut mutated = signed.clone().into_bytes();
    mutated[at] ^= rest.first().copied().filter(|b| *b != 0).unwrap_or(1);
    assert!(
        ring.verify_token(&name, &mutated).is_err(),
        "a flipped byte verified"
    );
    assert!(ring.verify_token(&name, &signed.as_bytes()[..at]).is_err());
    let mut longer = signed.clone().into_bytes();
    longer.insert(at, rest.get(1).copied().unwrap_or(b'A'));
    assert!(
        ring.verify_token(&name, &longer).is_err(),
        "an inserted byte verified"
    );

    // Which token a request presents: the bearer header against the reference, next to
    // a valid cookie.
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(rest) {
        headers.insert(header::AUTHORIZATION, value);
    }
    let cookie_token = token_from([9u8; 32]);
    let cookie = format!("{name}={}", ring.sign_token(&name, &cookie_token));
    headers.insert(
        header::COOKIE,
        HeaderValue::from_str(&cookie).expect("ASCII"),
    );
    // Our signed bearer token wins; anything else in `Authorization` is ignored and the
    // cookie counts (a gateway's own JWT must not hide the session).
    let presented = presented_token(
        ring,
        &default_names(),
        TokenTransport::CookiesAndBearer,
        &headers,
    );
    let ours = reference_bearer(&headers).and_then(|value| ring.verify_token(&name, value).ok());
    match (ours, presented) {
        (Some(expected), PresentedToken::Valid { token, source }) => {
            assert_eq!(source, TokenSource::Bearer);
            assert_eq!(token, expected);
        }
        (None, PresentedToken::Valid { token, source }) => {
            assert_eq!(source, TokenSource::Cookie);
            assert_eq!(token, cookie_token);
        }
        (bearer, other) => panic!("bearer {bearer:?} presented {other:?}"),
    }
}

fn token_from(bytes: [u8; 32]) -> Token {
    Token::from_bytes(bytes)
}

// ---------------------------------------------------------------------------------------
// Sessions built from fuzzer bytes (cookie cache, Redis value)
// ---------------------------------------------------------------------------------------

/// A cursor over fuzzer bytes that yields zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = split_first(self.0);
        self.0 = rest;
        first
    }

    fn u64(&mut self) -> u64 {
        let mut out = [0u8; 8];
        for slot in &mut out {
            *slot = self.u8();
        }
        u64::from_le_bytes(out)
    }

    /// A time in ms: mostly inside 1970–9999, sometimes anything chrono holds.
    fn time_ms(&mut self, base: i64) -> i64 {
        let kind = self.u8();
        let raw = self.u64();
        match kind % 8 {
            0 => raw as i64,
            1 => DateTime::<Utc>::MAX_UTC.timestamp_millis() - (raw % 1_000_000) as i64,
            2 => -((raw % 1_000_000_000) as i64) - 1,
            3 => LATEST_TIME_MS - (raw % 1000) as i64 + 1,
            _ => base + (raw % 4_000_000_000) as i64 - 2_000_000_000,
        }
    }

    fn text(&mut self) -> String {
        let len = usize::from(self.u8() % 48);
        let (head, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        String::from_utf8_lossy(head).into_owned()
    }
}

/// A session (and a cache lifetime) from fuzzer bytes; the app fields are the JSON
/// object at the end of the input, nested `depth` more levels. Times are whatever the
/// bytes say, in range or not.
fn session_from_bytes(data: &[u8]) -> (Session, DateTime<Utc>, DateTime<Utc>) {
    let mut bytes = Bytes(data);
    let base = now().timestamp_millis();
    let time = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap_or(now());
    let mut times = [now(); 7];
    for slot in &mut times {
        *slot = time(bytes.time_ms(base));
    }
    let generation = match bytes.u8() % 4 {
        0 => bytes.u64(),
        _ => bytes.u64() % 1000,
    };
    let flags = bytes.u8();
    let id = bytes.text();
    let user_id = bytes.text();
    let ip_address = (flags & 2 != 0).then(|| match flags & 4 {
        0 => bytes.text(),
        _ => ip_from(bytes.u64(), bytes.u64(), flags).to_string(),
    });
    let user_agent = (flags & 8 != 0).then(|| bytes.text());
    let depth = usize::from(bytes.u8());
    let mut fields = match serde_json::from_slice::<Value>(bytes.0) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    if depth > 0 && !fields.is_empty() {
        let mut value = Value::Object(fields);
        for _ in 0..depth {
            value = Value::Object(Map::from_iter([("n".to_owned(), value)]));
        }
        fields = match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
    }
    let [
        expires_at,
        created_at,
        updated_at,
        authenticated_at,
        last_seen_at,
        issued,
        until,
    ] = times;
    let mut session = Session::new(user_id, created_at, expires_at);
    session.id = id;
    session.updated_at = updated_at;
    session.authenticated_at = authenticated_at;
    session.last_seen_at = last_seen_at;
    session.ip_address = ip_address;
    session.user_agent = user_agent;
    session.remember = flags & 1 != 0;
    session.generation = generation;
    session.fields = fields;
    (session, issued, until)
}

fn ip_from(high: u64, low: u64, flags: u8) -> IpAddr {
    let v6 = Ipv6Addr::from((u128::from(high) << 64) | u128::from(low));
    match flags >> 4 {
        0..=5 => IpAddr::from((low as u32).to_be_bytes()),
        6..=9 => IpAddr::V6(v6.to_ipv4_mapped().map_or(v6, |v4| v4.to_ipv6_mapped())),
        _ => IpAddr::V6(v6),
    }
}

/// The reference nesting depth of a JSON value (scalars 0, `[]` 1), by recursion.
fn reference_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(reference_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(reference_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Whether a NUL character stands in any string or object key of `value`, by recursion.
fn reference_has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(reference_has_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, item)| key.contains('\0') || reference_has_nul(item)),
        _ => false,
    }
}

/// The names app fields may not take (the session's own JSON fields, and the two that
/// `list-sessions` adds), written out again here as the reference.
const REFERENCE_RESERVED_NAMES: [&str; 11] = [
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

/// Whether `SignInOptions::fields` accepts `fields`, checked against the reference depth
/// and the reference list of reserved names.
fn fields_accepted(fields: &Map<String, Value>) -> bool {
    let accepted = SignInOptions::new()
        .fields(&Value::Object(fields.clone()))
        .is_ok();
    let depth = reference_depth(&Value::Object(fields.clone()));
    // Names compare without case and without `_ - . :`; only those ASCII bytes, letters
    // and digits make a name, 1 to 64 of them.
    let fold = |name: &str| -> String {
        name.chars()
            .filter(|c| !"_-.:".contains(*c))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let reserved = fields.keys().any(|name| {
        REFERENCE_RESERVED_NAMES
            .iter()
            .any(|reserved| fold(reserved) == fold(name))
    });
    let bad_name = fields.keys().any(|name| {
        name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c))
    });
    let nul = reference_has_nul(&Value::Object(fields.clone()));
    assert_eq!(
        accepted,
        depth <= 64 && !reserved && !bad_name && !nul,
        "fields {depth} levels deep (reserved name: {reserved}, bad name: {bad_name}, NUL: {nul}) accepted: {accepted}"
    );
    accepted
}

/// Equality that tells floats apart bit for bit (`Value`'s own compares `0.0 == -0.0`).
fn same_fields(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
                _ if x.is_f64() || y.is_f64() => {
                    x.is_f64() == y.is_f64()
                        && x.as_f64().map(f64::to_bits) == y.as_f64().map(f64::to_bits)
                }
                _ => x == y,
            },
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
            }
            (Value::Object(x), Value::Object(y)) => same_fields(x, y),
            _ => a == b,
        }
    }
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && same(va, vb))
}

/// The reference range of a stored time: 1970-01-01T00:00:00.000Z to
/// 9999-12-31T23:59:59.999Z, written out here rather than taken from the crate.
fn reference_in_range(time: DateTime<Utc>) -> bool {
    (0..=253_402_300_799_999).contains(&time.timestamp_millis())
}

fn reference_times_in_range(session: &Session) -> bool {
    [
        session.expires_at,
        session.created_at,
        session.updated_at,
        session.authenticated_at,
        session.last_seen_at,
    ]
    .into_iter()
    .all(reference_in_range)
}

fn assert_same_session(read: &Session, written: &Session, what: &str) {
    assert!(
        same_fields(&read.fields, &written.fields),
        "{what}: app fields changed in the round trip: {:?} became {:?}",
        written.fields,
        read.fields
    );
    assert_eq!(
        read, written,
        "{what}: the session changed in the round trip"
    );
}

/// Every computation a request makes with a stored session's times, at several instants:
/// none may panic, and the session's times must be in range to get here at all.
fn use_session_times(session: &Session) {
    assert!(
        reference_times_in_range(session),
        "a decoder let a time outside 1970-9999 through: {session:?}"
    );
    let configs = [
        SessionConfig::default(),
        SessionConfig {
            max_lifetime: Some(Duration::days(365 * 1000)),
            update_age: Duration::days(365 * 1000),
            expires_in: Duration::days(365 * 1000),
            ..SessionConfig::default()
        },
    ];
    for config in &configs {
        for at in [
            now(),
            session.updated_at,
            session.created_at,
            session.expires_at,
        ] {
            let _ = config.refresh_due(session, at);
            let _ = config.slid_expiry(session, at);
            let _ = session.is_expired(at);
        }
    }
}

// ---------------------------------------------------------------------------------------
// 3. The sealed cookie cache and its payload
// ---------------------------------------------------------------------------------------

/// A manager over a memory store with the cookie cache on, at a fixed instant.
fn cache_manager(encrypted: bool) -> &'static SessionManager {
    static SIGNED: OnceLock<SessionManager> = OnceLock::new();
    static ENCRYPTED: OnceLock<SessionManager> = OnceLock::new();
    let cell = if encrypted { &ENCRYPTED } else { &SIGNED };
    cell.get_or_init(|| {
        SessionManager::builder(MemoryStore::new())
            .key_ring(ring().clone())
            .clock(ManualClock::starting_at(now()))
            .cookie_cache(CookieCache::new().encrypted(encrypted))
            .build()
            .expect("valid manager")
    })
}

fn fixed_hash() -> TokenHash {
    token_from([7u8; 32]).hash()
}

/// Seals `payload` the way the manager's cache tier does, and reads it back through the
/// tier as a request carrying it next to the token of [`fixed_hash`] would.
fn read_through_tier(encrypted: bool, payload: &[u8]) -> (bool, Option<Session>) {
    let manager = cache_manager(encrypted);
    let inner = &manager.inner;
    let tier = inner.cookie_cache.as_ref().expect("cache on");
    let hash = fixed_hash();
    let protection = if encrypted {
        Protection::Encrypted
    } else {
        Protection::Mac
    };
    let binding = Binding {
        version: "",
        cookie_name: &inner.names.session_data,
        token_hash: &hash,
    };
    let value = seal::seal(&inner.keys, protection, &binding, payload);
    let opened = seal::open(&inner.keys, protection, &binding, value.as_bytes(), |p| {
        Some(p.to_vec())
    });
    assert_eq!(opened.as_deref(), Some(payload), "seal → open round trip");
    let chunk_names = ChunkNames::new(&inner.names.session_data);
    let Some(pieces) = chunks::split(&value, &chunk_names, 4096) else {
        return (false, None);
    };
    let line = chunk_names
        .written(pieces.len())
        .zip(pieces)
        .map(|(name, piece)| format!("{name}={piece}"))
        .collect::<Vec<_>>()
        .join("; ");
    let mut headers = HeaderMap::new();
    headers.insert(header::COOKIE, HeaderValue::from_str(&line).expect("ASCII"));
    let cookies = RequestCookies::parse(&inner.names, true, &headers);
    let gathered = cookies.cache.expect("cache on");
    let (state, session) = tier.read(&inner.keys, &inner.config, &gathered, &hash, now());
    assert_eq!(state.hit, session.is_some());
    (state.hit, session)
}

/// Target `cookie_cache`: the payload decoder, the seal, and the tier's read path.
///
/// Input: a mode byte, then
/// - mode 0: bytes decoded as a payload. If they decode, every time is in 1970–9999,
///   the refresh arithmetic runs without panicking, the session re-encodes and decodes
///   to itself, and sealed and read through the cache tier it is served only when the
///   tier's rules believe it, unchanged.
/// - mode 1: a session built from the bytes (times in range or not, app fields from
///   the JSON object at the end, nested deeper on request). `SignInOptions::fields`
///   accepts the fields exactly when they nest ≤ 64 levels; the payload encodes exactly
///   when every time is in range; an accepted session round-trips through the payload
///   (floats bit for bit) and through the Redis value (feature `redis`).
/// - mode 2: a sealed value of a payload from the bytes, mutated at a position the bytes
///   choose: only the unmutated value opens; the raw bytes as a cookie value never panic.
pub fn check_cookie_cache(data: &[u8]) {
    let (mode, rest) = split_first(data);
    match mode % 3 {
        0 => check_payload_decode(rest),
        1 => check_session_round_trips(rest),
        _ => check_seal_mutation(rest),
    }
}

fn check_payload_decode(bytes: &[u8]) {
    let Some(cached) = payload::decode(bytes) else {
        return;
    };
    assert!(reference_in_range(cached.issued_at) && reference_in_range(cached.expires_at));
    use_session_times(&cached.session);
    let mut again = Vec::new();
    payload::encode(
        &cached.session,
        cached.issued_at,
        cached.expires_at,
        cached.issuer,
        &mut again,
    )
    .expect("a decoded payload encodes");
    let back = payload::decode(&again).expect("a re-encoded payload decodes");
    assert_same_session(&back.session, &cached.session, "payload decode → encode");
    assert_eq!(back, cached);
    for encrypted in [false, true] {
        let (hit, session) = read_through_tier(encrypted, bytes);
        if hit {
            let session = session.expect("a hit has a session");
            assert_eq!(session, cached.session);
            let n = now();
            assert!(n < cached.expires_at && !cached.session.is_expired(n));
            assert!(cached.expires_at - cached.issued_at <= Duration::minutes(5));
            assert!(!SessionConfig::default().refresh_due(&session, n));
        }
    }
}

fn check_session_round_trips(bytes: &[u8]) {
    let (session, issued, until) = session_from_bytes(bytes);
    if !fields_accepted(&session.fields) {
        return;
    }
    let mut out = Vec::new();
    let encoded = payload::encode(&session, issued, until, 7, &mut out);
    let in_range = reference_times_in_range(&session)
        && reference_in_range(issued)
        && reference_in_range(until);
    assert_eq!(
        encoded.is_some(),
        in_range && until >= issued,
        "payload encode refuses exactly out-of-range times"
    );
    if encoded.is_some() {
        let back = payload::decode(&out).expect("an encoded payload decodes");
        assert_same_session(&back.session, &session, "payload");
        assert_eq!((back.issued_at, back.expires_at), (issued, until));
        use_session_times(&back.session);
    }
    #[cfg(feature = "redis")]
    check_redis_round_trip(&session);
}

fn check_seal_mutation(bytes: &[u8]) {
    let mut reader = Bytes(bytes);
    let position = usize::from(reader.u8()) | usize::from(reader.u8()) << 8;
    let xor = reader.u8();
    let encrypted = reader.u8() & 1 == 1;
    let raw = reader.0;
    let manager = cache_manager(encrypted);
    let inner = &manager.inner;
    let hash = fixed_hash();
    let protection = if encrypted {
        Protection::Encrypted
    } else {
        Protection::Mac
    };
    let binding = Binding {
        version: "",
        cookie_name: &inner.names.session_data,
        token_hash: &hash,
    };
    // The raw bytes as a cookie value: whatever opens must decode or not, never panic.
    if let Some(cached) = seal::open(&inner.keys, protection, &binding, raw, payload::decode) {
        use_session_times(&cached.session);
    }
    let value = seal::seal(&inner.keys, protection, &binding, raw);
    let open = |v: &[u8]| seal::open(&inner.keys, protection, &binding, v, |p| Some(p.to_vec()));
    assert_eq!(open(value.as_bytes()).as_deref(), Some(raw));
    let at = position % value.len();
    let mut mutated = value.clone().into_bytes();
    mutated[at] ^= if xor == 0 { 1 } else { xor };
    assert_eq!(open(&mutated), None, "a mutated cache opened");
    assert_eq!(open(&value.as_bytes()[..at]), None, "a cut cache opened");
    let mut longer = value.clone().into_bytes();
    longer.insert(at, xor);
    assert_eq!(open(&longer), None, "a cache with an inserted byte opened");
    let other = token_from([8u8; 32]).hash();
    let elsewhere = Binding {
        token_hash: &other,
        ..binding
    };
    assert_eq!(
        seal::open(&inner.keys, protection, &elsewhere, value.as_bytes(), |p| {
            Some(p.to_vec())
        }),
        None,
        "a cache opened next to another token"
    );
}

// ---------------------------------------------------------------------------------------
// 4. Client facts: X-Forwarded-For and the user agent
// ---------------------------------------------------------------------------------------

fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// The reference client IP: the peer unless it is a trusted proxy; then the joined
/// `X-Forwarded-For` values walked from the right, the first untrusted hop winning.
fn reference_client_ip(
    trusted: &[IpNet],
    peer: Option<IpAddr>,
    forwarded: &[&HeaderValue],
) -> Option<IpAddr> {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(&ip));
    let unmap = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => match v6.octets() {
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d] => IpAddr::from([a, b, c, d]),
            _ => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    let peer = unmap(peer?);
    if !is_trusted(peer) || forwarded.is_empty() || trusted.is_empty() {
        return Some(peer);
    }
    let mut chain = String::new();
    for (i, value) in forwarded.iter().enumerate() {
        if i > 0 {
            chain.push(',');
        }
        chain.push_str(value.to_str().ok()?);
    }
    let hops: Vec<&str> = chain.split(',').collect();
    let mut last = peer;
    for hop in hops.iter().rev() {
        let hop = hop.trim();
        let ip = hop
            .parse::<IpAddr>()
            .or_else(|_| hop.parse::<SocketAddr>().map(|a| a.ip()))
            .ok()?;
        let ip = unmap(ip);
        if !is_trusted(ip) {
            return Some(ip);
        }
        last = ip;
    }
    Some(last)
}

/// Target `client_facts`: the client IP behind trusted proxies and the user agent.
///
/// Input: a flag byte, then `\n`-separated lines: the peer address, the trusted proxies
/// (comma-separated networks or addresses), the `User-Agent`, then one
/// `X-Forwarded-For` header per remaining line. Properties: the client IP equals the
/// reference right-to-left walk; the stored IP is its text; the stored user agent is the
/// header's (lossy) text cut to at most 512 bytes on a character boundary; tracking off
/// stores nothing.
pub fn check_client_facts(data: &[u8]) {
    let (flags, rest) = split_first(data);
    let mut lines = rest.split(|&b| b == b'\n');
    let peer_text = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let peer = peer_text
        .trim()
        .parse::<IpAddr>()
        .ok()
        .or_else(|| peer_text.trim().parse::<SocketAddr>().ok().map(|a| a.ip()));
    let proxies_text = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let trusted: Vec<IpNet> = proxies_text.split(',').filter_map(parse_net).collect();
    let mut request = Request::new(());
    if let Some(ua) = lines.next().and_then(|l| HeaderValue::from_bytes(l).ok()) {
        request.headers_mut().insert(header::USER_AGENT, ua);
    }
    for line in lines {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            request
                .headers_mut()
                .append(HeaderName::from_static("x-forwarded-for"), value);
        }
    }
    if let Some(ip) = peer {
        request
            .extensions_mut()
            .insert(SocketAddr::new(ip, u16::from(flags)));
    }
    let tracking = ClientTracking {
        disabled: flags & 0x80 != 0,
        trusted_proxies: trusted.clone(),
        ..ClientTracking::default()
    };
    let facts = ClientFacts::from_request(&request, &tracking);
    let info = tracking.client_info(&facts);
    if tracking.disabled {
        assert_eq!(info, Default::default());
        return;
    }
    let forwarded: Vec<&HeaderValue> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .collect();
    let expected = reference_client_ip(&trusted, peer, &forwarded);
    let ip = tracking.client_ip(&facts);
    assert_eq!(ip, expected, "client ip differs from the reference walk");
    if let Some(ip) = ip {
        assert_eq!(normalise(ip), ip);
    }
    assert_eq!(info.ip_address, expected.map(|ip| ip.to_string()));
    let ua_header = request.headers().get(header::USER_AGENT);
    match (ua_header, &info.user_agent) {
        (None, None) => {}
        (Some(header), Some(stored)) => {
            let text = String::from_utf8_lossy(header.as_bytes());
            assert!(stored.len() <= 512, "user agent not cut");
            assert!(text.starts_with(stored.as_str()));
            if text.len() > 512 {
                assert!(stored.len() > 512 - 4, "user agent cut too short");
            } else {
                assert_eq!(stored.as_str(), text);
            }
        }
        other => panic!("user agent {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// 5. Origin / Sec-Fetch-Site: the cross-site rule
// ---------------------------------------------------------------------------------------

/// The reference origin normaliser: `scheme://host[:port]`, lower case, default port
/// dropped; a port is 1–5 digits up to 65535; a colon in the host only inside brackets
/// around an IPv6 address; no path, query, fragment, user info or space.
fn reference_origin(origin: &str) -> Option<String> {
    let at = origin.find("://")?;
    let scheme = origin[..at].to_ascii_lowercase();
    let authority = origin[at + 3..].to_ascii_lowercase();
    let mut scheme_chars = scheme.chars();
    if !scheme_chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !scheme_chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return None;
    }
    if authority.is_empty() || authority.chars().any(|c| "/?#@ ".contains(c)) {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        authority[1..close].parse::<Ipv6Addr>().ok()?;
        let after = &authority[close + 1..];
        let port = if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':')?)
        };
        (&authority[..=close], port)
    } else {
        match authority.find(':') {
            Some(colon) => (&authority[..colon], Some(&authority[colon + 1..])),
            None => (authority.as_str(), None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => None,
        Some(text) => {
            if text.is_empty() || text.len() > 5 || !text.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let n: u32 = text.parse().ok()?;
            if n > 65535 {
                return None;
            }
            Some(n)
        }
    };
    let default = match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    Some(match port {
        Some(port) if Some(port) != default => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// Target `cross_site`: the origin normaliser and the cross-site rule.
///
/// Input: a flag byte (bit 0: authenticated by bearer; bits 1–2: how many of the lines
/// are trusted origins), then `\n`-separated lines: the trusted origins, then headers as
/// `name:value`. Properties: every trusted line and every `Origin`/`Host` value
/// normalises as the reference does (and normalising is idempotent); the trusted list
/// parses exactly when every entry is an origin; the decision equals the reference rule
/// (bearer passes; `Sec-Fetch-Site: cross-site` refused; no `Origin` passes; several, or
/// a non-origin, refused; else membership of the list, or with an empty list equality
/// with `Host`).
pub fn check_cross_site(data: &[u8]) {
    let (flags, rest) = split_first(data);
    let bearer = flags & 1 != 0;
    let trusted_count = usize::from((flags >> 1) & 3);
    let lines: Vec<&[u8]> = rest.split(|&b| b == b'\n').collect();
    let (trusted_lines, header_lines) = lines.split_at(trusted_count.min(lines.len()));
    let trusted_text: Vec<String> = trusted_lines
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    for text in &trusted_text {
        check_origin_text(text);
    }
    let parsed = TrustedOrigins::parse(&trusted_text);
    let reference_trusted: Option<Vec<String>> = trusted_text
        .iter()
        .map(|origin| {
            let origin = origin.trim();
            reference_origin(origin.strip_suffix('/').unwrap_or(origin))
        })
        .collect();
    assert_eq!(
        parsed.is_ok(),
        reference_trusted.is_some(),
        "trusted origins {trusted_text:?}"
    );
    let (Ok(trusted), Some(reference_trusted)) = (parsed, reference_trusted) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in header_lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    for value in headers
        .get_all(header::ORIGIN)
        .iter()
        .chain(headers.get_all(header::HOST))
    {
        if let Ok(text) = value.to_str() {
            check_origin_text(text);
            check_origin_text(&format!("https://{text}"));
        }
    }
    let decided = is_cross_site(&trusted, &headers, bearer);
    let expected = reference_cross_site(&reference_trusted, &headers, bearer);
    assert_eq!(
        decided, expected,
        "cross-site decision differs from the reference"
    );
}

fn check_origin_text(text: &str) {
    let ours = normalise_origin(text);
    assert_eq!(ours, reference_origin(text), "origin {text:?}");
    if let Some(canonical) = ours {
        assert_eq!(
            normalise_origin(&canonical).as_deref(),
            Some(canonical.as_str()),
            "normalising {text:?} is not idempotent"
        );
    }
}

fn reference_cross_site(trusted: &[String], headers: &HeaderMap, bearer: bool) -> bool {
    if bearer {
        return false;
    }
    if headers
        .get_all("sec-fetch-site")
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return true;
    }
    let origins: Vec<&HeaderValue> = headers.get_all(header::ORIGIN).iter().collect();
    let origin = match origins.as_slice() {
        [] => return false,
        [one] => one,
        _ => return true,
    };
    let Some(origin) = origin.to_str().ok().and_then(reference_origin) else {
        return true;
    };
    if !trusted.is_empty() {
        return !trusted.contains(&origin);
    }
    let scheme = &origin[..origin.find("://").expect("normalised")];
    let own = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| reference_origin(&format!("{scheme}://{h}")));
    own.as_deref() != Some(origin.as_str())
}

// ---------------------------------------------------------------------------------------
// 6. The Redis session value
// ---------------------------------------------------------------------------------------

/// Target `redis_value`: the Redis session value decoder (feature `redis`).
///
/// Input: a mode byte, then
/// - mode 0: the bytes as a value read from Redis. If it decodes, every time is in
///   1970–9999 and the generation at most `i64::MAX`, the refresh arithmetic runs, and
///   the session re-encodes and decodes to itself.
/// - mode 1: a session built from the bytes: encoding succeeds exactly when its times are
///   in range and its generation fits, and an accepted session (app fields ≤ 64 levels)
///   comes back unchanged, floats bit for bit.
#[cfg(feature = "redis")]
pub fn check_redis_value(data: &[u8]) {
    use crate::secondary::redis::encoding;
    let (mode, rest) = split_first(data);
    if mode % 2 == 1 {
        let (session, _, _) = session_from_bytes(rest);
        if fields_accepted(&session.fields) {
            check_redis_round_trip(&session);
        }
        return;
    }
    let Some(session) = encoding::decode(rest) else {
        return;
    };
    use_session_times(&session);
    assert!(session.generation <= i64::MAX as u64);
    let again = encoding::encode(&session).expect("a decoded value encodes");
    let back = encoding::decode(&again).expect("a re-encoded value decodes");
    assert_same_session(&back, &session, "redis decode → encode");
}

#[cfg(feature = "redis")]
fn check_redis_round_trip(session: &Session) {
    use crate::secondary::redis::encoding;
    let encoded = encoding::encode(session);
    assert_eq!(
        encoded.is_ok(),
        reference_times_in_range(session) && session.generation <= i64::MAX as u64,
        "redis encode refuses exactly out-of-range times and generations"
    );
    if let Ok(bytes) = encoded {
        let back = encoding::decode(&bytes).expect("an encoded value decodes");
        assert_same_session(&back, session, "redis value");
        use_session_times(&back);
    }
}

// ---------------------------------------------------------------------------------------
// 7. The whole layer
// ---------------------------------------------------------------------------------------

struct LayerFixture {
    runtime: tokio::runtime::Runtime,
    manager: SessionManager,
    /// The `session_token` cookie value of the one signed-in session.
    token: String,
    /// Its cookie cache value (one cookie).
    cache: String,
    user_id: String,
}

/// The inner service: answers 200 and reports what the handle saw; signs in when asked.
#[derive(Clone)]
struct Probe {
    sign_in: bool,
}

type ProbeFuture = Pin<Box<dyn Future<Output = Result<Response<Option<Session>>, Infallible>>>>;

impl<B> Service<Request<B>> for Probe {
    type Response = Response<Option<Session>>;
    type Error = Infallible;
    type Future = ProbeFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ProbeFuture {
        let handle = request.extensions().get::<SessionHandle>().cloned();
        let sign_in = self.sign_in;
        Box::pin(async move {
            let handle = handle.expect("the layer puts a handle in every request");
            if sign_in {
                handle
                    .sign_in("alice", SignInOptions::new())
                    .await
                    .expect("sign-in into a memory store");
            }
            Ok(Response::new(handle.current()))
        })
    }
}

fn layer_fixture() -> &'static LayerFixture {
    static FIXTURE: OnceLock<LayerFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime");
        let manager = SessionManager::builder(MemoryStore::new())
            .key_ring(ring().clone())
            .clock(ManualClock::starting_at(now()))
            .cookie_cache(CookieCache::new())
            .trusted_proxies(["10.0.0.0/8".parse().expect("a network")])
            .trusted_origins(["https://app.example"])
            .build()
            .expect("valid manager");
        let mut service = manager.layer().layer(Probe { sign_in: true });
        let response = runtime
            .block_on(service.call(Request::new(())))
            .expect("infallible");
        let names = &manager.inner.names;
        let mut token = None;
        let mut cache = None;
        for value in response.headers().get_all(header::SET_COOKIE) {
            let text = value.to_str().expect("ASCII");
            let pair = text.split(';').next().unwrap_or_default();
            let (name, value) = pair.split_once('=').unwrap_or_default();
            if name == names.session_token {
                token = Some(value.to_owned());
            } else if name == names.session_data {
                cache = Some(value.to_owned());
            }
        }
        let user_id = response.body().as_ref().expect("signed in").user_id.clone();
        LayerFixture {
            runtime,
            manager,
            token: token.expect("a session cookie"),
            cache: cache.expect("a cache cookie"),
            user_id,
        }
    })
}

/// Target `layer`: the whole middleware around a tiny service.
///
/// Input: a flag byte (bit 0: the request comes from peer 10.0.0.1, a trusted proxy;
/// else from 192.0.2.1), then `\n`-separated `name:value` header lines, where `{T}` stands
/// for the `session_token` value of a live session and `{C}` for its cookie cache value.
/// Properties: the response is the inner service's 200 (never a 5xx); it carries no
/// `set-auth-token` and no `session_token` cookie with a value other than the presented
/// token's (nothing is minted without a sign-in); a `session_data` cookie is issued only
/// to a request that presented the token; a session is seen only by a request that
/// presented it, and it is the live one; the session survives the request.
pub fn check_layer(data: &[u8]) {
    layer_serves(data);
}

/// [`check_layer`], telling whether the inner service saw a session (so tests can show
/// that `{T}` and `{C}` reach the store and cache paths).
pub fn layer_serves(data: &[u8]) -> bool {
    let fixture = layer_fixture();
    let (flags, rest) = split_first(data);
    let mut expanded = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() {
        if rest[i..].starts_with(b"{T}") {
            expanded.extend_from_slice(fixture.token.as_bytes());
            i += 3;
        } else if rest[i..].starts_with(b"{C}") {
            expanded.extend_from_slice(fixture.cache.as_bytes());
            i += 3;
        } else {
            expanded.push(rest[i]);
            i += 1;
        }
    }
    let mut request = Request::new(());
    for line in expanded.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) {
            request.headers_mut().append(name, value);
        }
    }
    let peer: IpAddr = if flags & 1 != 0 {
        [10, 0, 0, 1].into()
    } else {
        [192, 0, 2, 1].into()
    };
    request.extensions_mut().insert(SocketAddr::new(peer, 4321));
    let presented = expanded
        .windows(fixture.token.len())
        .any(|w| w == fixture.token.as_bytes());

    let mut service = fixture.manager.layer().layer(Probe { sign_in: false });
    let response = fixture
        .runtime
        .block_on(service.call(request))
        .expect("infallible");
    assert!(
        !response.status().is_server_error(),
        "the layer answered {}",
        response.status()
    );
    assert!(
        response.headers().get(SET_AUTH_TOKEN).is_none(),
        "a token was minted without a sign-in"
    );
    let names = &fixture.manager.inner.names;
    for value in response.headers().get_all(header::SET_COOKIE) {
        let text = value.to_str().expect("Set-Cookie is ASCII");
        let pair = text.split(';').next().unwrap_or_default();
        let (name, value) = pair.split_once('=').expect("name=value");
        if value.is_empty() {
            continue;
        }
        if name == names.session_token {
            assert!(
                presented && value == fixture.token,
                "a session_token cookie was set without a sign-in: {text}"
            );
        } else if name.starts_with(names.session_data.as_str()) {
            assert!(
                presented,
                "a cache was issued to a request without the token"
            );
        } else if name != names.dont_remember {
            panic!("an unexpected cookie was set: {text}");
        }
    }
    if let Some(session) = response.body() {
        assert!(presented, "a session was served without its token");
        assert_eq!(session.user_id, fixture.user_id);
    }
    let sessions = fixture
        .runtime
        .block_on(fixture.manager.list_user_sessions(&fixture.user_id))
        .expect("memory store");
    assert_eq!(sessions.len(), 1, "the live session was lost or multiplied");
    response.body().is_some()
}

// ---------------------------------------------------------------------------------------
// 8. Cross-instance revocation messages (Redis pub/sub)
// ---------------------------------------------------------------------------------------

/// Target `revocation_message`: the cookie cache's revocation messages that instances
/// publish to each other through Redis (feature `redis`; whoever can publish to Redis
/// can send one).
///
/// Input: the bytes as a message. Properties: a message that decodes re-encodes to one
/// that decodes the same; applied to a revocation set, it refuses exactly the caches the
/// reference rule refuses (a session's caches below the highest generation named, a
/// user's sessions created up to the latest cut-off), and nothing panics.
#[cfg(feature = "redis")]
pub fn check_revocation_message(data: &[u8]) {
    use crate::cookie_cache::CacheRevocation;
    use crate::cookie_cache::CachedSession;
    use crate::cookie_cache::bus::{decode_message, encode_message};
    use crate::cookie_cache::revocation::RevocationSet;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some((origin, nonce, revocations)) = decode_message(text) else {
        return;
    };
    let again = encode_message(origin, nonce, &revocations);
    assert_eq!(
        decode_message(&again),
        Some((origin, nonce, revocations.clone())),
        "a revocation message does not round-trip"
    );
    let set = RevocationSet::new(Duration::minutes(6), 100_000);
    set.apply(revocations.clone(), now());
    let below = |id: &str| {
        revocations
            .iter()
            .filter_map(|r| match r {
                CacheRevocation::Session {
                    session_id,
                    below_generation,
                } if session_id == id => Some(*below_generation),
                _ => None,
            })
            .max()
    };
    let up_to = |user: &str| {
        revocations
            .iter()
            .filter_map(|r| match r {
                CacheRevocation::User {
                    user_id,
                    created_up_to,
                } if user_id == user => Some(*created_up_to),
                _ => None,
            })
            .max()
    };
    let mut probes: Vec<(String, String, u64, DateTime<Utc>)> = Vec::new();
    for revocation in &revocations {
        match revocation {
            CacheRevocation::Session {
                session_id,
                below_generation,
            } => {
                for generation in [
                    below_generation.saturating_sub(1),
                    *below_generation,
                    0,
                    u64::MAX,
                ] {
                    probes.push((session_id.clone(), "u".into(), generation, now()));
                }
            }
            CacheRevocation::User {
                user_id,
                created_up_to,
            } => {
                for delta in [-1, 0, 1] {
                    if let Some(at) =
                        created_up_to.checked_add_signed(Duration::milliseconds(delta))
                    {
                        probes.push(("s".into(), user_id.clone(), 0, at));
                    }
                }
            }
        }
    }
    for (id, user, generation, created_at) in probes.into_iter().take(64) {
        let mut session = Session::new(user.clone(), created_at, created_at);
        session.id = id.clone();
        session.generation = generation;
        let cached = CachedSession {
            issued_at: now(),
            expires_at: now() + Duration::minutes(5),
            issuer: 0,
            session,
        };
        let refused = below(&id).is_some_and(|b| generation < b)
            || up_to(&user).is_some_and(|t| created_at <= t);
        assert_eq!(
            set.allows(&cached),
            !refused,
            "revocation set and reference disagree on {id:?}/{user:?}"
        );
    }
}

/// Builds the regression input of a cookie-cache payload written without the range
/// checks (as a cache from another build, or under a leaked key, could carry it): the
/// bytes `check_cookie_cache` reads in mode 0. For the seed generator and the
/// regression files.
pub fn unchecked_payload(
    updated_at_ms: i64,
    created_at_ms: i64,
    fields: Option<&Map<String, Value>>,
) -> Vec<u8> {
    let base = now().timestamp_millis();
    let mut out = Vec::new();
    let put_u = |out: &mut Vec<u8>, mut v: u64| {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    };
    let put_s = |out: &mut Vec<u8>, v: i64| put_u(out, ((v << 1) ^ (v >> 63)) as u64);
    put_u(&mut out, base as u64);
    put_u(&mut out, 300_000);
    let expires = base + 86_400_000;
    for time in [
        expires,
        created_at_ms,
        updated_at_ms,
        created_at_ms,
        created_at_ms,
    ] {
        put_s(&mut out, time.wrapping_sub(base));
    }
    put_u(&mut out, 1);
    out.push(if fields.is_some() { 1 | (1 << 5) } else { 1 });
    for text in ["sid", "alice"] {
        put_u(&mut out, text.len() as u64);
        out.extend_from_slice(text.as_bytes());
    }
    if let Some(fields) = fields {
        let json = serde_json::to_vec(fields).expect("JSON");
        put_u(&mut out, json.len() as u64);
        out.extend_from_slice(&json);
    }
    out
}

/// A valid payload (mode 0 of `check_cookie_cache` without the mode byte) for seeds.
pub fn valid_payload(data: &[u8]) -> Option<Vec<u8>> {
    let (session, issued, until) = session_from_bytes(data);
    let mut out = Vec::new();
    payload::encode(&session, issued, until, 7, &mut out)?;
    Some(out)
}

/// A valid Redis value for seeds (feature `redis`).
#[cfg(feature = "redis")]
pub fn valid_redis_value(data: &[u8]) -> Option<Vec<u8>> {
    let (session, _, _) = session_from_bytes(data);
    crate::secondary::redis::encoding::encode(&session).ok()
}

/// A signed `session_token` value for `bytes` under the fuzzing key ring, for seeds.
pub fn signed_token(bytes: [u8; 32]) -> String {
    ring().sign_token(&default_names().session_token, &token_from(bytes))
}

/// The default cookie names (`session_token`, `session_data`, `dont_remember`), for seeds.
pub fn cookie_names() -> [String; 3] {
    let names = default_names();
    [names.session_token, names.session_data, names.dont_remember]
}

/// A valid revocation message for seeds (feature `redis`).
#[cfg(feature = "redis")]
pub fn revocation_message_seed(user_id: &str, session_id: &str, generation: u64) -> String {
    use crate::cookie_cache::CacheRevocation;
    crate::cookie_cache::bus::encode_message(
        "inst-1",
        7,
        &[
            CacheRevocation::Session {
                session_id: session_id.to_owned(),
                below_generation: generation,
            },
            CacheRevocation::User {
                user_id: user_id.to_owned(),
                created_up_to: now(),
            },
        ],
    )
}

/// chrono's latest instant in ms since the epoch, for regression inputs.
pub fn chrono_max_ms() -> i64 {
    DateTime::<Utc>::MAX_UTC.timestamp_millis()
}
