//! Session tokens, their hashes, and the key ring that signs them.
//!
//! A token is 32 bytes from the OS CSPRNG. Stores only ever see [`TokenHash`]
//! (`SHA-256(token)`), so a dump of the database or Redis cannot be replayed as a cookie.
//! The `session_token` cookie carries `kid.token.mac`, where the MAC is
//! HMAC-SHA256 over the cookie name and the rest of the value, keyed by a subkey derived
//! with HKDF from the key named by `kid`. Checking the MAC needs no I/O, so forged cookies
//! never reach a store.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::error::ConfigError;

type HmacSha256 = Hmac<Sha256>;

/// Length of a raw token in bytes.
pub(crate) const TOKEN_LEN: usize = 32;
/// Length of a base64url (unpadded) encoded 32-byte value.
const B64_32_LEN: usize = 43;
/// Longest key id accepted in a key ring.
pub(crate) const MAX_KEY_ID_LEN: usize = 16;
/// Shortest secret accepted for a key.
pub(crate) const MIN_SECRET_LEN: usize = 32;

/// Fills `buf` from the operating system's CSPRNG.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    // The OS RNG failing is not recoverable and must never fall back to a weak source.
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// A raw session token: the bearer credential. Never stored, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Token([u8; TOKEN_LEN]);

impl Token {
    /// Draws a new token from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_LEN];
        random_bytes(&mut bytes);
        Self(bytes)
    }

    /// Draws a new token whose hash falls in `user_id`'s shard ([`TokenHash::shard`] equals
    /// `shard_of(user_id)`), so that on a Redis Cluster the session's keys share its
    /// user's slot. The first 30 bytes are drawn, the last two count up until the hash
    /// matches (256 tries on average): 240 random bits, and the token is as opaque as
    /// [`generate`](Self::generate)'s.
    pub fn generate_for(user_id: &str) -> Self {
        let shard = shard_of(user_id);
        let mut bytes = [0u8; TOKEN_LEN];
        random_bytes(&mut bytes);
        for counter in 0..=u16::MAX {
            bytes[TOKEN_LEN - 2..].copy_from_slice(&counter.to_le_bytes());
            if Sha256::digest(bytes)[0] == shard {
                break;
            }
        }
        // Past 65,536 misses (probability e^-256) the token is just outside the shard:
        // a Redis Cluster then keeps no copy of its session, the store still serves it.
        Self(bytes)
    }

    /// The hash that stores use to find this token's session.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0).into())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; TOKEN_LEN] {
        &self.0
    }

    /// A token with these bytes, for the fuzz targets (a real token is always drawn).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn from_bytes(bytes: [u8; TOKEN_LEN]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// `SHA-256(token)`: how every store keys a session.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// The hash as bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Builds a hash from a 32-byte slice (for stores reading it back).
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// Reads what [`to_hex`](Self::to_hex) wrote (lower-case hex, 64 digits).
    #[cfg(feature = "redis")]
    pub(crate) fn from_hex(hex: &str) -> Option<Self> {
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Some(Self(out))
    }

    /// The shard this hash belongs to (its first byte): where a Redis Cluster keeps the
    /// session. Tokens from [`Token::generate_for`] fall in their user's
    /// `shard_of`; older tokens anywhere.
    pub fn shard(&self) -> u8 {
        self.0[0]
    }

    /// Lower-case hex into `out` (64 bytes), without allocating.
    #[cfg(feature = "redis")]
    pub(crate) fn write_hex(&self, out: &mut [u8]) {
        for (i, byte) in self.0.iter().enumerate() {
            out[2 * i] = b"0123456789abcdef"[usize::from(byte >> 4)];
            out[2 * i + 1] = b"0123456789abcdef"[usize::from(byte & 0xf)];
        }
    }

    /// Lower-case hex, for keys in text-keyed stores such as Redis.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
        }
        out
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A prefix is enough to correlate log lines; the hash is not a credential.
        write!(f, "TokenHash({}…)", &self.to_hex()[..12])
    }
}

/// One signing key: an id that travels in cookies, and subkeys derived per purpose.
#[derive(Clone)]
pub struct Key {
    id: String,
    token_mac: HmacSha256,
    cache_mac: HmacSha256,
    cache_encryption: [u8; 32],
}

impl Key {
    /// Derives a key from a secret of at least 32 bytes.
    ///
    /// The id must be 1–16 characters of `[A-Za-z0-9_-]`; it is written into every cookie
    /// this key signs, so verification picks the right key without trying each one.
    ///
    /// ```
    /// use tower_auth_session::Key;
    /// let key = Key::new("k1", [7u8; 32]).unwrap();
    /// assert_eq!(key.id(), "k1");
    /// assert!(Key::new("k1", b"too short").is_err());
    /// ```
    pub fn new(id: impl Into<String>, secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        let id = id.into();
        let secret = secret.as_ref();
        if id.is_empty()
            || id.len() > MAX_KEY_ID_LEN
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::InvalidKeyId { id });
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::SecretTooShort { len: secret.len() });
        }
        let hkdf = Hkdf::<Sha256>::new(Some(b"tower-auth-session/v1"), secret);
        let derive = |info: &[u8]| {
            let mut out = [0u8; 32];
            hkdf.expand(info, &mut out)
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            out
        };
        let token_mac_key = derive(b"session-token-mac");
        let cache_mac_key = derive(b"cookie-cache-mac");
        Ok(Self {
            id,
            token_mac: HmacSha256::new_from_slice(&token_mac_key).expect("HMAC takes any key"),
            cache_mac: HmacSha256::new_from_slice(&cache_mac_key).expect("HMAC takes any key"),
            cache_encryption: derive(b"cookie-cache-encryption"),
        })
    }

    /// The key id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A keyed HMAC instance for the cookie cache (cloned per use; the key schedule is
    /// computed once).
    pub(crate) fn cache_mac(&self) -> HmacSha256 {
        self.cache_mac.clone()
    }

    /// The AES-256-GCM key for an encrypted cookie cache.
    pub(crate) fn cache_encryption_key(&self) -> &[u8; 32] {
        &self.cache_encryption
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Signing keys: the first signs, every key verifies.
///
/// Rotate by putting a new key first and keeping the old one behind it until every cookie
/// it signed has expired; then drop it, and its cookies become "no session".
///
/// ```
/// use tower_auth_session::{Key, KeyRing};
/// let ring = KeyRing::new(vec![
///     Key::new("2026-11", [2u8; 32]).unwrap(),
///     Key::new("2026-10", [1u8; 32]).unwrap(),
/// ]).unwrap();
/// assert_eq!(ring.signing_key().id(), "2026-11");
/// ```
#[derive(Clone, Debug)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    /// A ring of keys; the first signs. Ids must be unique.
    pub fn new(keys: Vec<Key>) -> Result<Self, ConfigError> {
        if keys.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|k| k.id == key.id) {
                return Err(ConfigError::DuplicateKeyId { id: key.id.clone() });
            }
        }
        Ok(Self { keys })
    }

    /// A ring holding one key, id `k0`, derived from `secret`.
    pub fn from_secret(secret: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        Self::new(vec![Key::new("k0", secret)?])
    }

    /// The key new cookies are signed with.
    pub fn signing_key(&self) -> &Key {
        &self.keys[0]
    }

    /// The key with this id, if the ring still holds it.
    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Signs `token` for the cookie named `cookie_name`: `kid.token.mac`.
    pub fn sign_token(&self, cookie_name: &str, token: &Token) -> String {
        let key = self.signing_key();
        let mut value = String::with_capacity(key.id.len() + 2 + 2 * B64_32_LEN);
        value.push_str(&key.id);
        value.push('.');
        B64.encode_string(token.0, &mut value);
        let mac = token_mac(key, cookie_name, value.as_bytes());
        value.push('.');
        B64.encode_string(mac, &mut value);
        value
    }

    /// Verifies a `kid.token.mac` value for the cookie named `cookie_name`.
    ///
    /// Returns the token only when the shape, the key id and the MAC are all right; the MAC
    /// comparison is constant-time.
    pub fn verify_token(&self, cookie_name: &str, value: &[u8]) -> Result<Token, TokenError> {
        self.parse_token(value)?.verify(cookie_name)
    }

    /// Reads a `kid.token.mac` value up to, not including, the MAC check: the shape, the
    /// lengths and the key id are checked here.
    pub(crate) fn parse_token<'a>(
        &'a self,
        value: &'a [u8],
    ) -> Result<UncheckedToken<'a>, TokenError> {
        let mac_dot = value
            .iter()
            .rposition(|&b| b == b'.')
            .ok_or(TokenError::Malformed)?;
        let (signed, mac_b64) = (&value[..mac_dot], &value[mac_dot + 1..]);
        let kid_dot = signed
            .iter()
            .position(|&b| b == b'.')
            .ok_or(TokenError::Malformed)?;
        let (kid, token_b64) = (&signed[..kid_dot], &signed[kid_dot + 1..]);
        if mac_b64.len() != B64_32_LEN || token_b64.len() != B64_32_LEN {
            return Err(TokenError::Malformed);
        }
        let kid = std::str::from_utf8(kid).map_err(|_| TokenError::Malformed)?;
        let key = self.get(kid).ok_or(TokenError::UnknownKey)?;
        Ok(UncheckedToken {
            key,
            signed,
            mac_b64,
            token: decode_32(token_b64).map(Token),
        })
    }
}

/// A signed token value of the right shape under a key of the ring, its MAC not yet
/// checked. [`verify`](Self::verify) is the check; the cookie cache's hit path may use
/// [`token`](Self::token) before it (see `docs/ARCHITECTURE.md`, "The token MAC on a cache
/// hit").
pub(crate) struct UncheckedToken<'a> {
    key: &'a Key,
    /// `kid.token`, what the MAC covers after the cookie name.
    signed: &'a [u8],
    mac_b64: &'a [u8],
    /// `None` when the token part is not canonical base64url of 32 bytes.
    token: Option<Token>,
}

impl UncheckedToken<'_> {
    /// The token, if its part of the value decodes.
    pub(crate) fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// Checks the MAC (constant-time) for the cookie named `cookie_name`.
    pub(crate) fn verify(self, cookie_name: &str) -> Result<Token, TokenError> {
        let mac = decode_32(self.mac_b64).ok_or(TokenError::Malformed)?;
        let mut verifier = self.key.token_mac.clone();
        verifier.update(cookie_name.as_bytes());
        verifier.update(&[0]);
        verifier.update(self.signed);
        verifier
            .verify_slice(&mac)
            .map_err(|_| TokenError::BadMac)?;
        self.token.ok_or(TokenError::Malformed)
    }
}

fn token_mac(key: &Key, cookie_name: &str, signed: &[u8]) -> [u8; 32] {
    let mut mac = key.token_mac.clone();
    mac.update(cookie_name.as_bytes());
    mac.update(&[0]);
    mac.update(signed);
    mac.finalize().into_bytes().into()
}

/// Decodes exactly 32 bytes of canonical base64url; anything else is `None`. The engine
/// refuses padding and non-zero trailing bits, so each value has one accepted spelling
/// (`every_single_bit_flip_is_rejected` and `non_canonical_spellings_are_rejected`).
fn decode_32(encoded: &[u8]) -> Option<[u8; 32]> {
    let mut buf = [0u8; 33];
    let n = B64.decode_slice(encoded, &mut buf).ok()?;
    (n == 32).then(|| buf[..32].try_into().expect("32 bytes"))
}

/// Why a signed token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not of the `kid.token.mac` shape, wrong lengths, or not base64url.
    Malformed,
    /// Signed by a key that is not (or no longer) in the ring.
    UnknownKey,
    /// The MAC does not match.
    BadMac,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed session token",
            Self::UnknownKey => "session token signed by an unknown key",
            Self::BadMac => "session token signature does not match",
        })
    }
}

impl std::error::Error for TokenError {}

/// A random public identifier (16 bytes, base64url): session ids are never credentials.
#[cfg(any(feature = "redis", feature = "conformance"))]
pub(crate) fn random_id() -> String {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes);
    B64.encode(bytes)
}

/// The shard of a user id or session id (0–255): the first byte of a domain-separated
/// SHA-256. A Redis Cluster keeps all of a user's keys under one hash tag made from it,
/// so one script can revoke all of them atomically.
pub(crate) fn shard_of(text: &str) -> u8 {
    let mut hasher = Sha256::new();
    hasher.update(b"tower-auth-session/shard\0");
    hasher.update(text.as_bytes());
    hasher.finalize()[0]
}

/// A random public id in `user_id`'s shard: its first byte is the shard (so
/// [`shard_of_id`] reads it back without hashing), the other 15 are random.
pub(crate) fn random_id_for(user_id: &str) -> String {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes);
    bytes[0] = shard_of(user_id);
    B64.encode(bytes)
}

/// The shard of a session id: the first byte of an id [`random_id_for`] made (the first
/// two base64url characters); for any other id (from an older version, or chosen by an
/// app) a hash of it, so every id has one shard.
#[cfg(feature = "redis")]
pub(crate) fn shard_of_id(id: &str) -> u8 {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    };
    match id.as_bytes() {
        [a, b, ..] if id.len() == 22 => match (value(*a), value(*b)) {
            (Some(a), Some(b)) => a << 2 | b >> 4,
            _ => shard_of(id),
        },
        _ => shard_of(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::from_secret([9u8; 32]).unwrap()
    }

    #[test]
    fn tokens_are_distinct_and_32_bytes() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(*Token::generate().as_bytes()));
        }
    }

    #[test]
    fn tokens_and_ids_for_a_user_fall_in_its_shard() {
        for user in ["alice", "bob", "", "user:{with}:braces"] {
            let shard = shard_of(user);
            let token = Token::generate_for(user);
            assert_eq!(token.hash().shard(), shard, "{user}");
            let id = random_id_for(user);
            assert_eq!(id.len(), 22, "{user}");
            #[cfg(feature = "redis")]
            assert_eq!(shard_of_id(&id), shard, "{user}");
            assert_ne!(Token::generate_for(user), token, "the token is random");
            assert_ne!(random_id_for(user), id, "the id is random");
        }
    }

    #[cfg(feature = "redis")]
    #[test]
    fn other_ids_have_a_shard_and_hex_is_written_in_place() {
        for id in ["conformance-1", "", "ÿÿ", "AAAAAAAAAAAAAAAAAAAAA!"] {
            assert_eq!(shard_of_id(id), shard_of_id(id));
        }
        assert_eq!(shard_of_id("_wAAAAAAAAAAAAAAAAAAAA"), 0xff);
        let hash = Token::generate().hash();
        let mut hex = [0u8; 64];
        hash.write_hex(&mut hex);
        assert_eq!(std::str::from_utf8(&hex).unwrap(), hash.to_hex());
    }

    #[test]
    fn signed_token_round_trips() {
        let ring = ring();
        let token = Token::generate();
        let value = ring.sign_token("a.session_token", &token);
        assert_eq!(
            ring.verify_token("a.session_token", value.as_bytes()),
            Ok(token)
        );
    }

    #[test]
    fn mac_covers_the_cookie_name() {
        let ring = ring();
        let value = ring.sign_token("a.session_token", &Token::generate());
        assert_eq!(
            ring.verify_token("b.session_token", value.as_bytes()),
            Err(TokenError::BadMac)
        );
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let ring = ring();
        let value = ring.sign_token("n", &Token::generate()).into_bytes();
        for i in 0..value.len() {
            for bit in 0..8 {
                let mut flipped = value.clone();
                flipped[i] ^= 1 << bit;
                assert!(
                    ring.verify_token("n", &flipped).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn non_canonical_spellings_are_rejected() {
        // 32 bytes take 43 characters; the last carries 4 bits of data and 2 spare bits,
        // which a canonical spelling leaves at zero.
        let ring = ring();
        let token = Token::generate();
        let value = ring.sign_token("n", &token);
        let (signed, _) = value.rsplit_once('.').unwrap();
        let last = signed.as_bytes()[signed.len() - 1];
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let index = alphabet.iter().position(|&c| c == last).unwrap();
        for spare in 1..4 {
            let mut token_part = signed.as_bytes().to_vec();
            *token_part.last_mut().unwrap() = alphabet[index | spare];
            assert_eq!(
                decode_32(&token_part[signed.find('.').unwrap() + 1..]),
                None
            );
        }
        assert_eq!(decode_32(&[b'A'; 44]), None, "padding-length input");
        let mut padded = B64.encode(token.0);
        padded.pop();
        padded.push('=');
        assert_eq!(decode_32(padded.as_bytes()), None);
    }

    #[test]
    fn truncated_and_extended_values_are_rejected() {
        let ring = ring();
        let value = ring.sign_token("n", &Token::generate()).into_bytes();
        for len in 0..value.len() {
            assert!(ring.verify_token("n", &value[..len]).is_err());
        }
        let mut longer = value.clone();
        longer.push(b'A');
        assert!(ring.verify_token("n", &longer).is_err());
    }

    #[test]
    fn subkeys_differ_per_purpose_and_per_secret() {
        let a = Key::new("a", [1u8; 32]).unwrap();
        let b = Key::new("b", [2u8; 32]).unwrap();
        let tag = |m: HmacSha256| -> Vec<u8> {
            let mut m = m;
            m.update(b"x");
            m.finalize().into_bytes().to_vec()
        };
        assert_ne!(tag(a.token_mac.clone()), tag(a.cache_mac.clone()));
        assert_ne!(tag(a.token_mac.clone()), tag(b.token_mac.clone()));
        assert_ne!(a.cache_encryption, b.cache_encryption);
    }

    #[test]
    fn short_secrets_and_bad_ids_are_refused() {
        assert!(matches!(
            Key::new("k", [0u8; 31]),
            Err(ConfigError::SecretTooShort { len: 31 })
        ));
        assert!(Key::new("bad.id", [0u8; 32]).is_err());
        assert!(Key::new("", [0u8; 32]).is_err());
        let k = Key::new("same", [0u8; 32]).unwrap();
        assert!(KeyRing::new(vec![k.clone(), k]).is_err());
    }
}
