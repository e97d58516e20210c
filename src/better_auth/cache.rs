//! Better Auth's `session_data` cookie cache: read and written in its three strategies,
//! `compact`, `jwt` and `jwe` (reference §3).
//!
//! Reading applies Better Auth's own checks: the value decodes and verifies, the session
//! and user have the required fields, the session's token is the one the (already
//! verified) `session_token` cookie carries, the version matches, and neither the cache
//! nor the session has expired. Any failure answers `None`: an invalid cache is ignored
//! (the caller reads storage), never a reason to refuse the request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use http::{HeaderMap, header};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::cookie::{decode_uri_component, unquote};
use super::jwe::JweKey;
use super::record::{BaSession, BaSessionWithUser, BaUser};

type HmacSha256 = Hmac<Sha256>;

/// The `jwt` strategy's header: Better Auth mints HS256 only, and only HS256 is accepted
/// here (its verifier would also take HS384/512 under the same key).
const JWT_HEADER: &str = "eyJhbGciOiJIUzI1NiJ9";
/// Better Auth allows 15 s of clock tolerance on a `jwe` cache, none on a `jwt` one.
const JWE_TOLERANCE_MS: i64 = 15_000;
/// Better Auth's limit on one serialized `Set-Cookie`, and on the number of chunks.
const CHUNK_LIMIT: usize = 4050;
const MAX_CHUNKS: usize = 100;
/// Longest joined cache considered at all.
const MAX_CACHE_LEN: usize = CHUNK_LIMIT * MAX_CHUNKS;

/// `session.cookieCache.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheStrategy {
    /// base64url JSON with an HMAC-SHA256 signature (Better Auth's default).
    Compact,
    /// A JWS (HS256) keyed by the raw secret.
    Jwt,
    /// A JWE (`dir`, `A256CBC-HS512`) with an HKDF-derived key.
    Jwe,
}

impl std::str::FromStr for CacheStrategy {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "compact" => Ok(Self::Compact),
            "jwt" => Ok(Self::Jwt),
            "jwe" => Ok(Self::Jwe),
            other => Err(format!("unknown cookie cache strategy {other:?}")),
        }
    }
}

/// Reads and writes the app's cookie cache.
#[derive(Clone)]
pub struct CookieCacheCodec {
    strategy: CacheStrategy,
    mac: HmacSha256,
    jwe: JweKey,
    max_age_ms: i64,
    version: String,
}

impl std::fmt::Debug for CookieCacheCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieCacheCodec")
            .field("strategy", &self.strategy)
            .field("max_age_ms", &self.max_age_ms)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// What every strategy carries, as read (extra claims such as `iat` and `jti` ignored).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadPayload {
    session: BaSession,
    user: BaUser,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
}

/// What every strategy carries, as written.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WritePayload<'a> {
    session: &'a BaSession,
    user: &'a BaUser,
    updated_at: i64,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
}

/// The outer object of a compact cache, as read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CompactOuter {
    expires_at: i64,
    signature: String,
}

impl CookieCacheCodec {
    /// A codec for the app's `cookieCache` settings: `strategy`, `maxAge` in seconds and
    /// a string `version` (Better Auth's default is `"1"`).
    pub fn new(secret: &str, strategy: CacheStrategy, max_age_secs: u32, version: &str) -> Self {
        Self {
            strategy,
            mac: HmacSha256::new_from_slice(secret.as_bytes()).expect("any key length"),
            jwe: JweKey::new(secret),
            max_age_ms: i64::from(max_age_secs) * 1000,
            version: version.to_owned(),
        }
    }

    /// The strategy this codec reads and writes.
    pub fn strategy(&self) -> CacheStrategy {
        self.strategy
    }

    /// The session and user a cache value vouches for, if it passes every one of Better
    /// Auth's checks for `token` at `now`; `None` otherwise.
    pub fn read(&self, value: &str, token: &str, now: DateTime<Utc>) -> Option<BaSessionWithUser> {
        if value.len() > MAX_CACHE_LEN {
            return None;
        }
        let value = decode_uri_component(unquote(value));
        let now_ms = now.timestamp_millis();
        let (payload, cache_expires_ms): (ReadPayload, i64) = match self.strategy {
            CacheStrategy::Compact => self.read_compact(&value)?,
            CacheStrategy::Jwt => {
                let payload = self.read_jwt(&value)?;
                let exp = payload.exp?.checked_mul(1000)?;
                (payload, exp)
            }
            CacheStrategy::Jwe => {
                let payload = self.read_jwe(&value)?;
                let exp = payload.exp?.checked_mul(1000)?;
                (payload, exp.saturating_add(JWE_TOLERANCE_MS))
            }
        };
        let version_matches = payload.version.as_deref().unwrap_or("1") == self.version;
        let fresh = cache_expires_ms >= now_ms && payload.session.expires_at >= now;
        (payload.session.token == token && version_matches && fresh).then_some(BaSessionWithUser {
            session: payload.session,
            user: payload.user,
        })
    }

    /// The signed bytes of a compact cache are the raw text of its inner object with
    /// `expiresAt` appended: taken from the value as sent, never re-serialized.
    fn read_compact(&self, value: &str) -> Option<(ReadPayload, i64)> {
        let json = URL_SAFE_NO_PAD.decode(value.as_bytes()).ok()?;
        let json = std::str::from_utf8(&json).ok()?;
        let inner = json.strip_prefix(r#"{"session":"#)?;
        let end = inner.rfind(r#","expiresAt":"#)?;
        let inner = &inner[..end];
        let outer: CompactOuter = serde_json::from_str(json).ok()?;
        let open = inner.strip_suffix('}')?;
        let signature = URL_SAFE_NO_PAD.decode(outer.signature.as_bytes()).ok()?;
        let mut mac = self.mac.clone();
        mac.update(open.as_bytes());
        mac.update(format!(r#","expiresAt":{}}}"#, outer.expires_at).as_bytes());
        mac.verify_slice(&signature).ok()?;
        Some((serde_json::from_str(inner).ok()?, outer.expires_at))
    }

    fn read_jwt(&self, value: &str) -> Option<ReadPayload> {
        let (signed, signature) = value.rsplit_once('.')?;
        let (header, claims) = signed.split_once('.')?;
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.get("alg")?.as_str()? != "HS256" || header.get("crit").is_some() {
            return None;
        }
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = self.mac.clone();
        mac.update(signed.as_bytes());
        mac.verify_slice(&signature).ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()
    }

    fn read_jwe(&self, value: &str) -> Option<ReadPayload> {
        let (header, plaintext) = self.jwe.decrypt(value)?;
        let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
        let kid_matches = header
            .get("kid")
            .is_none_or(|kid| kid.as_str() == Some(self.jwe.kid.as_str()));
        if header.get("alg")?.as_str()? != "dir"
            || header.get("enc")?.as_str()? != "A256CBC-HS512"
            || header.get("zip").is_some()
            || !kid_matches
        {
            return None;
        }
        serde_json::from_slice(&plaintext).ok()
    }

    /// A cache value vouching for `record` at `now`, as Better Auth writes it for a
    /// remember-me session (`remember = false`: compact lives 60 s, jwt/jwe 300 s, as in
    /// Better Auth).
    pub fn write(&self, record: &BaSessionWithUser, now: DateTime<Utc>, remember: bool) -> String {
        let now_ms = now.timestamp_millis();
        let mut payload = WritePayload {
            session: &record.session,
            user: &record.user,
            updated_at: now_ms,
            version: &self.version,
            iat: None,
            exp: None,
            jti: None,
        };
        match self.strategy {
            CacheStrategy::Compact => {
                let lifetime = if remember { self.max_age_ms } else { 60_000 };
                let expires_at = now_ms + lifetime;
                let inner = serde_json::to_string(&payload).expect("a payload serializes");
                let mut mac = self.mac.clone();
                mac.update(&inner.as_bytes()[..inner.len() - 1]);
                mac.update(format!(r#","expiresAt":{expires_at}}}"#).as_bytes());
                let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
                let outer = format!(
                    r#"{{"session":{inner},"expiresAt":{expires_at},"signature":"{signature}"}}"#
                );
                URL_SAFE_NO_PAD.encode(outer)
            }
            CacheStrategy::Jwt | CacheStrategy::Jwe => {
                let lifetime = if remember { self.max_age_ms } else { 300_000 };
                payload.iat = Some(now_ms / 1000);
                payload.exp = Some((now_ms + lifetime) / 1000);
                if self.strategy == CacheStrategy::Jwt {
                    let claims = serde_json::to_vec(&payload).expect("a payload serializes");
                    let signed = format!("{JWT_HEADER}.{}", URL_SAFE_NO_PAD.encode(claims));
                    let mut mac = self.mac.clone();
                    mac.update(signed.as_bytes());
                    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
                    format!("{signed}.{signature}")
                } else {
                    payload.jti = Some(random_uuid());
                    let claims = serde_json::to_vec(&payload).expect("a payload serializes");
                    let header = format!(
                        r#"{{"alg":"dir","enc":"A256CBC-HS512","kid":"{}"}}"#,
                        self.jwe.kid
                    );
                    self.jwe.encrypt(&URL_SAFE_NO_PAD.encode(header), &claims)
                }
            }
        }
    }
}

/// A random version-4 UUID, the `jti` Better Auth puts in a `jwe` cache.
fn random_uuid() -> String {
    let mut bytes = [0u8; 16];
    crate::token::random_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The cache value a request carries under `name`, as Better Auth's reader joins it: the
/// exact name if present (first occurrence), otherwise every `name.<i>` (`<i>` a
/// canonical non-negative integer) joined in index order.
pub fn gather_cache(headers: &HeaderMap, name: &str) -> Option<String> {
    if let Some(value) = super::cookie::first_cookie(headers, name) {
        return String::from_utf8(value.to_vec()).ok();
    }
    let mut chunks: Vec<(usize, &[u8])> = Vec::new();
    let pairs = headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b';'));
    for pair in pairs {
        let pair = pair.trim_ascii_start();
        let Some(eq) = pair.iter().position(|&b| b == b'=') else {
            continue;
        };
        let Some(index) = pair[..eq]
            .trim_ascii()
            .strip_prefix(name.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"."))
            .and_then(canonical_index)
        else {
            continue;
        };
        if chunks.len() == MAX_CHUNKS {
            return None;
        }
        if !chunks.iter().any(|(seen, _)| *seen == index) {
            chunks.push((index, pair[eq + 1..].trim_ascii()));
        }
    }
    if chunks.is_empty() {
        return None;
    }
    chunks.sort_by_key(|(index, _)| *index);
    let joined: Vec<u8> = chunks
        .iter()
        .flat_map(|(_, value)| value.iter().copied())
        .collect();
    String::from_utf8(joined).ok()
}

/// `0`, `1`, … `99`, without leading zeros.
fn canonical_index(digits: &[u8]) -> Option<usize> {
    let canonical = !digits.is_empty()
        && digits.len() <= 2
        && digits.iter().all(u8::is_ascii_digit)
        && (digits.len() == 1 || digits[0] != b'0');
    canonical.then(|| std::str::from_utf8(digits).ok()?.parse().ok())?
}

/// The `(name, value)` cookies a cache value is written as, given the length of the
/// attributes its `Set-Cookie` carries (`"; Max-Age=300; Path=/; HttpOnly; SameSite=Lax"`):
/// one cookie when it fits Better Auth's 4050-byte line, chunks otherwise, `None` past
/// 100 chunks (Better Auth skips the cache then).
pub fn split_cache(
    name: &str,
    value: &str,
    attributes_len: usize,
) -> Option<Vec<(String, String)>> {
    if name.len() + 1 + value.len() + attributes_len <= CHUNK_LIMIT {
        return Some(vec![(name.to_owned(), value.to_owned())]);
    }
    // Better Auth sizes pieces with the longest chunk name, `name.99`, and an empty value.
    let piece = CHUNK_LIMIT.checked_sub(name.len() + 3 + 1 + attributes_len)?;
    // Every cache value is ASCII (base64url, JWS, JWE), so byte cuts are character cuts.
    let pieces: Vec<&[u8]> = value.as_bytes().chunks(piece.max(1)).collect();
    if pieces.len() > MAX_CHUNKS {
        return None;
    }
    Some(
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| {
                (
                    format!("{name}.{i}"),
                    String::from_utf8_lossy(piece).into_owned(),
                )
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, SubsecRound};

    const SECRET: &str = "fake-interop-secret-0123456789abcdefghijklmnopqrstuv";

    fn now() -> DateTime<Utc> {
        // Better Auth's times are whole milliseconds.
        Utc::now().trunc_subsecs(3)
    }

    fn record(now: DateTime<Utc>) -> BaSessionWithUser {
        let value = super::super::record::tests::REDIS_VALUE;
        let mut record: BaSessionWithUser = serde_json::from_str(value).unwrap();
        record.session.expires_at = now + Duration::days(7);
        record
    }

    #[test]
    fn each_strategy_reads_what_it_wrote_and_only_for_its_token() {
        let now = now();
        for strategy in [
            CacheStrategy::Compact,
            CacheStrategy::Jwt,
            CacheStrategy::Jwe,
        ] {
            let codec = CookieCacheCodec::new(SECRET, strategy, 300, "1");
            let record = record(now);
            let token = record.session.token.clone();
            let value = codec.write(&record, now, true);
            assert_eq!(
                codec.read(&value, &token, now).as_ref(),
                Some(&record),
                "{strategy:?}"
            );
            // Another token, expired cache, an expired session, another version, another
            // secret, another strategy: each ignored.
            assert!(codec.read(&value, "another-token", now).is_none());
            assert!(
                codec
                    .read(&value, &token, now + Duration::seconds(330))
                    .is_none()
            );
            let mut ended = record.clone();
            ended.session.expires_at = now - Duration::seconds(1);
            assert!(
                codec
                    .read(&codec.write(&ended, now, true), &token, now)
                    .is_none()
            );
            let v2 = CookieCacheCodec::new(SECRET, strategy, 300, "2");
            assert!(v2.read(&value, &token, now).is_none());
            let foreign =
                CookieCacheCodec::new("a-foreign-secret-of-some-length", strategy, 300, "1");
            assert!(foreign.read(&value, &token, now).is_none());
            for other in [
                CacheStrategy::Compact,
                CacheStrategy::Jwt,
                CacheStrategy::Jwe,
            ] {
                if other != strategy {
                    let other = CookieCacheCodec::new(SECRET, other, 300, "1");
                    assert!(other.read(&value, &token, now).is_none());
                }
            }
            // Truncated or garbage values never panic.
            for cut in [0, 1, value.len() / 2, value.len() - 1] {
                assert!(codec.read(&value[..cut], &token, now).is_none());
            }
        }
    }

    #[test]
    fn a_compact_cache_with_a_changed_payload_fails_its_signature() {
        let now = now();
        let codec = CookieCacheCodec::new(SECRET, CacheStrategy::Compact, 300, "1");
        let record = record(now);
        let value = codec.write(&record, now, true);
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(&value).unwrap()).unwrap();
        let forged = json.replace(&record.user.id, "someone-else");
        let forged = URL_SAFE_NO_PAD.encode(forged);
        assert!(codec.read(&forged, &record.session.token, now).is_none());
        // A longer cache lifetime, claimed without the secret.
        let outer: serde_json::Value = serde_json::from_str(&json).unwrap();
        let expires = outer["expiresAt"].as_i64().unwrap();
        let stretched = json.replace(&expires.to_string(), &(expires + 86_400_000).to_string());
        let stretched = URL_SAFE_NO_PAD.encode(stretched);
        assert!(codec.read(&stretched, &record.session.token, now).is_none());
    }

    #[test]
    fn a_jwt_with_another_algorithm_is_refused() {
        let now = now();
        let codec = CookieCacheCodec::new(SECRET, CacheStrategy::Jwt, 300, "1");
        let value = codec.write(&record(now), now, true);
        let (_, rest) = value.split_once('.').unwrap();
        let none = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#));
        assert!(codec.read(&none, &record(now).session.token, now).is_none());
    }

    #[test]
    fn chunks_split_and_join_back_in_index_order() {
        let value = "v".repeat(9000);
        let attributes = "; Max-Age=300; Path=/; HttpOnly; SameSite=Lax";
        let chunks = split_cache("better-auth.session_data", &value, attributes.len()).unwrap();
        assert_eq!(chunks.len(), 3);
        assert!(
            chunks
                .iter()
                .all(|(n, v)| n.len() + 1 + v.len() + attributes.len() <= 4050)
        );
        let mut headers = HeaderMap::new();
        // Sent out of order, with a non-canonical index that must be skipped.
        let line = format!(
            "better-auth.session_data.2={}; better-auth.session_data.01=x; better-auth.session_data.0={}; better-auth.session_data.1={}",
            chunks[2].1, chunks[0].1, chunks[1].1
        );
        headers.insert(header::COOKIE, line.parse().unwrap());
        assert_eq!(
            gather_cache(&headers, "better-auth.session_data").unwrap(),
            value
        );
        let one = split_cache("n", "short", attributes.len()).unwrap();
        assert_eq!(one, vec![("n".to_owned(), "short".to_owned())]);
        assert!(split_cache("n", &"v".repeat(500_000), attributes.len()).is_none());
    }
}
