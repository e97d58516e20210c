//! Sealing and opening the cache value: `kid.` followed by base64url of the body.
//!
//! | protection | body |
//! |---|---|
//! | MAC (default) | `0x03 ‖ payload ‖ HMAC-SHA256(cache subkey, context ‖ 0x03 ‖ payload)` |
//! | AES-256-GCM | `0x04 ‖ nonce[24] ‖ AES-256-GCM(k, nonce[12..], payload, aad = context ‖ 0x04)` |
//!
//! `context` is the deploy `version`, the cookie name, the token hash and the key id, each
//! length-prefixed, so a value verifies only for the token it was issued next to, under the
//! name it was set as, in the deploy that wrote it. Decoding is canonical base64url (no
//! padding, no stray trailing bits), so the MAC or tag covers the exact bytes sent: any
//! change to the cookie text is a different body.
//!
//! Encryption derives a key per cookie, `k = HMAC-SHA256(encryption subkey, nonce[..12])`,
//! and uses the other 12 nonce bytes as the GCM nonce (the XAES-256-GCM construction).
//! Plain AES-GCM with random 96-bit nonces is limited to about 2³² messages per key, which
//! a busy site reaches in weeks of cache re-issues; with a derived key per cookie that
//! limit no longer applies.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::token::{Key, KeyRing, TokenHash, random_bytes};

type HmacSha256 = Hmac<Sha256>;

/// Format byte of a MAC-protected body.
/// (0x01 and 0x02 carried payloads without an issuer; they no longer open.)
const FORMAT_MAC: u8 = 0x03;
/// Format byte of an encrypted body.
const FORMAT_AEAD: u8 = 0x04;
const MAC_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bodies up to this size are decoded on the stack.
const STACK_BODY: usize = 768;
/// The longest AAD: three length-prefixed parts of at most 255 bytes, the hash, the format.
const MAX_AAD: usize = 3 * 256 + 32 + 1;

/// Which protection new caches get. Reading accepts only the configured one, so turning
/// encryption on also retires every readable cache at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protection {
    Mac,
    Encrypted,
}

/// What a value is bound to besides its own bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Binding<'a> {
    pub(crate) version: &'a str,
    pub(crate) cookie_name: &'a str,
    pub(crate) token_hash: &'a TokenHash,
}

impl Binding<'_> {
    fn feed(&self, mac: &mut HmacSha256, kid: &str, format: u8) {
        for part in [self.version, self.cookie_name, kid] {
            // Lengths are bounded by configuration (≤ 255) and checked at build time.
            mac.update(&[part.len() as u8]);
            mac.update(part.as_bytes());
        }
        mac.update(self.token_hash.as_bytes());
        mac.update(&[format]);
    }

    /// Writes the AAD into `out`, returning its length.
    fn aad(&self, kid: &str, format: u8, out: &mut [u8; MAX_AAD]) -> usize {
        let mut len = 0;
        let mut push = |bytes: &[u8]| {
            out[len..len + bytes.len()].copy_from_slice(bytes);
            len += bytes.len();
        };
        for part in [self.version, self.cookie_name, kid] {
            push(&[part.len() as u8]);
            push(part.as_bytes());
        }
        push(self.token_hash.as_bytes());
        push(&[format]);
        len
    }
}

/// Seals `payload` into a cookie value with the ring's signing key.
pub(crate) fn seal(
    keys: &KeyRing,
    protection: Protection,
    binding: &Binding<'_>,
    payload: &[u8],
) -> String {
    let key = keys.signing_key();
    let kid = key.id();
    let mut body = Vec::with_capacity(1 + NONCE_LEN + payload.len() + MAC_LEN);
    match protection {
        Protection::Mac => {
            body.push(FORMAT_MAC);
            body.extend_from_slice(payload);
            let mut mac = key.cache_mac();
            binding.feed(&mut mac, kid, FORMAT_MAC);
            mac.update(payload);
            body.extend_from_slice(&mac.finalize().into_bytes());
        }
        Protection::Encrypted => {
            let mut nonce = [0u8; NONCE_LEN];
            random_bytes(&mut nonce);
            body.push(FORMAT_AEAD);
            body.extend_from_slice(&nonce);
            body.extend_from_slice(payload);
            let cipher = cookie_cipher(key, &nonce);
            let mut aad = [0u8; MAX_AAD];
            let aad_len = binding.aad(kid, FORMAT_AEAD, &mut aad);
            let tag = cipher
                .encrypt_in_place_detached(
                    Nonce::from_slice(&nonce[12..]),
                    &aad[..aad_len],
                    &mut body[1 + NONCE_LEN..],
                )
                .expect("a cookie payload is far below the AES-GCM length limit");
            body.extend_from_slice(&tag);
        }
    }
    let mut value = String::with_capacity(kid.len() + 1 + (body.len() * 4).div_ceil(3));
    value.push_str(kid);
    value.push('.');
    B64.encode_string(&body, &mut value);
    value
}

/// Opens a cookie value and hands the authenticated payload to `read`; `None` for
/// anything not sealed by a key of the ring with this protection and binding.
///
/// The body is decoded into a stack buffer when it fits (every cache without large app
/// fields does), so a hit allocates nothing here.
pub(crate) fn open<T>(
    keys: &KeyRing,
    protection: Protection,
    binding: &Binding<'_>,
    value: &[u8],
    read: impl FnOnce(&[u8]) -> Option<T>,
) -> Option<T> {
    let dot = value.iter().position(|&b| b == b'.')?;
    let kid = std::str::from_utf8(&value[..dot]).ok()?;
    let key = keys.get(kid)?;
    let encoded = &value[dot + 1..];
    let mut stack = [0u8; STACK_BODY];
    let mut heap: Vec<u8>;
    let body: &mut [u8] = if encoded.len() / 4 * 3 + 3 <= STACK_BODY {
        // The base64 engine refuses padding and non-zero trailing bits, so every body has
        // exactly one accepted spelling.
        let len = B64.decode_slice(encoded, &mut stack).ok()?;
        &mut stack[..len]
    } else {
        heap = B64.decode(encoded).ok()?;
        &mut heap
    };
    match protection {
        Protection::Mac => {
            if body.len() < 1 + MAC_LEN || body[0] != FORMAT_MAC {
                return None;
            }
            let tag_at = body.len() - MAC_LEN;
            let mut mac = key.cache_mac();
            binding.feed(&mut mac, kid, FORMAT_MAC);
            mac.update(&body[1..tag_at]);
            mac.verify_slice(&body[tag_at..]).ok()?;
            read(&body[1..tag_at])
        }
        Protection::Encrypted => {
            if body.len() < 1 + NONCE_LEN + TAG_LEN || body[0] != FORMAT_AEAD {
                return None;
            }
            let tag_at = body.len() - TAG_LEN;
            let nonce: [u8; NONCE_LEN] = body[1..1 + NONCE_LEN].try_into().ok()?;
            let tag = *Tag::from_slice(&body[tag_at..]);
            let cipher = cookie_cipher(key, &nonce);
            let mut aad = [0u8; MAX_AAD];
            let aad_len = binding.aad(kid, FORMAT_AEAD, &mut aad);
            cipher
                .decrypt_in_place_detached(
                    Nonce::from_slice(&nonce[12..]),
                    &aad[..aad_len],
                    &mut body[1 + NONCE_LEN..tag_at],
                    &tag,
                )
                .ok()?;
            read(&body[1 + NONCE_LEN..tag_at])
        }
    }
}

/// The AES-256-GCM instance for one cookie: its key is derived from the first half of the
/// cookie's nonce.
fn cookie_cipher(key: &Key, nonce: &[u8; NONCE_LEN]) -> Aes256Gcm {
    let mut kdf = <HmacSha256 as Mac>::new_from_slice(key.cache_encryption_key())
        .expect("HMAC takes any key length");
    kdf.update(&nonce[..12]);
    Aes256Gcm::new(&kdf.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Token;

    fn open_vec(
        keys: &KeyRing,
        protection: Protection,
        binding: &Binding<'_>,
        value: &[u8],
    ) -> Option<Vec<u8>> {
        open(keys, protection, binding, value, |payload| {
            Some(payload.to_vec())
        })
    }

    #[test]
    fn large_bodies_open_from_the_heap() {
        let keys = ring(1);
        let hash = Token::generate().hash();
        let binding = Binding {
            version: "",
            cookie_name: "n",
            token_hash: &hash,
        };
        let payload = vec![7u8; 5000];
        for protection in [Protection::Mac, Protection::Encrypted] {
            let value = seal(&keys, protection, &binding, &payload);
            assert_eq!(
                open_vec(&keys, protection, &binding, value.as_bytes()),
                Some(payload.clone())
            );
        }
    }

    fn ring(secret: u8) -> KeyRing {
        KeyRing::from_secret([secret; 32]).unwrap()
    }

    #[test]
    fn both_protections_round_trip_and_refuse_every_bit_flip() {
        let keys = ring(1);
        let hash = Token::generate().hash();
        let binding = Binding {
            version: "",
            cookie_name: "n",
            token_hash: &hash,
        };
        for protection in [Protection::Mac, Protection::Encrypted] {
            let value = seal(&keys, protection, &binding, b"payload bytes");
            assert_eq!(
                open_vec(&keys, protection, &binding, value.as_bytes()).as_deref(),
                Some(&b"payload bytes"[..])
            );
            let bytes = value.into_bytes();
            for i in 0..bytes.len() {
                for bit in 0..8 {
                    let mut flipped = bytes.clone();
                    flipped[i] ^= 1 << bit;
                    assert!(
                        open_vec(&keys, protection, &binding, &flipped).is_none(),
                        "{protection:?} byte {i} bit {bit}"
                    );
                }
            }
        }
    }

    #[test]
    fn binding_parts_and_keys_are_all_covered() {
        let keys = ring(1);
        let hash = Token::generate().hash();
        let other_hash = Token::generate().hash();
        let binding = Binding {
            version: "v1",
            cookie_name: "n",
            token_hash: &hash,
        };
        for protection in [Protection::Mac, Protection::Encrypted] {
            let value = seal(&keys, protection, &binding, b"p");
            let refused =
                |b: Binding<'_>| open_vec(&keys, protection, &b, value.as_bytes()).is_none();
            assert!(refused(Binding {
                version: "v2",
                ..binding
            }));
            assert!(refused(Binding {
                cookie_name: "m",
                ..binding
            }));
            assert!(refused(Binding {
                token_hash: &other_hash,
                ..binding
            }));
            assert!(open_vec(&ring(2), protection, &binding, value.as_bytes()).is_none());
            let other = match protection {
                Protection::Mac => Protection::Encrypted,
                Protection::Encrypted => Protection::Mac,
            };
            assert!(open_vec(&keys, other, &binding, value.as_bytes()).is_none());
        }
    }

    #[test]
    fn encrypted_values_hide_the_payload_and_differ_each_time() {
        let keys = ring(1);
        let hash = Token::generate().hash();
        let binding = Binding {
            version: "",
            cookie_name: "n",
            token_hash: &hash,
        };
        let a = seal(&keys, Protection::Encrypted, &binding, b"alice@example.com");
        let b = seal(&keys, Protection::Encrypted, &binding, b"alice@example.com");
        assert_ne!(a, b);
        let body = B64.decode(&a[a.find('.').unwrap() + 1..]).unwrap();
        assert!(!body.windows(5).any(|w| w == b"alice"));
    }
}
