//! The JWE that Better Auth's `jwe` cookie cache uses: compact serialization, `alg: dir`,
//! `enc: A256CBC-HS512` (RFC 7518 §5.2.5), with the key HKDF-derived from the secret
//! (reference §3, "jwe"). Written here over the `aes` block cipher rather than pulling a
//! JOSE stack in for one algorithm.

use aes::Aes256;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, generic_array::GenericArray};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

const BLOCK: usize = 16;
const TAG_LEN: usize = 32;

/// The 64-byte content key and its RFC 7638 thumbprint (`kid`).
#[derive(Clone)]
pub(crate) struct JweKey {
    key: [u8; 64],
    pub(crate) kid: String,
}

impl JweKey {
    /// `HKDF-SHA256(IKM = secret, salt = "better-auth-session", info = "BetterAuth.js
    /// Generated Encryption Key", L = 64)`.
    pub(crate) fn new(secret: &str) -> Self {
        let mut key = [0u8; 64];
        Hkdf::<Sha256>::new(Some(b"better-auth-session"), secret.as_bytes())
            .expand(b"BetterAuth.js Generated Encryption Key", &mut key)
            .expect("64 bytes is a valid HKDF-SHA256 length");
        let jwk = format!(r#"{{"k":"{}","kty":"oct"}}"#, URL_SAFE_NO_PAD.encode(key));
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(jwk.as_bytes()));
        Self { key, kid }
    }

    fn tag(&self, aad: &[u8], iv: &[u8], ciphertext: &[u8]) -> Hmac<Sha512> {
        let mut mac =
            <Hmac<Sha512> as Mac>::new_from_slice(&self.key[..32]).expect("any key length");
        mac.update(aad);
        mac.update(iv);
        mac.update(ciphertext);
        mac.update(&((aad.len() as u64) * 8).to_be_bytes());
        mac
    }

    fn cipher(&self) -> Aes256 {
        Aes256::new(GenericArray::from_slice(&self.key[32..]))
    }

    /// A compact JWE of `plaintext` under `protected_b64` (the encoded header).
    pub(crate) fn encrypt(&self, protected_b64: &str, plaintext: &[u8]) -> String {
        let mut iv = [0u8; BLOCK];
        crate::token::random_bytes(&mut iv);
        // PKCS#7: always at least one byte of padding.
        let pad = BLOCK - plaintext.len() % BLOCK;
        let mut data = plaintext.to_vec();
        data.resize(plaintext.len() + pad, pad as u8);
        let cipher = self.cipher();
        let mut previous = iv;
        for block in data.chunks_exact_mut(BLOCK) {
            for (byte, prev) in block.iter_mut().zip(previous) {
                *byte ^= prev;
            }
            cipher.encrypt_block(GenericArray::from_mut_slice(block));
            previous.copy_from_slice(block);
        }
        let tag = self
            .tag(protected_b64.as_bytes(), &iv, &data)
            .finalize()
            .into_bytes();
        format!(
            "{protected_b64}..{}.{}.{}",
            URL_SAFE_NO_PAD.encode(iv),
            URL_SAFE_NO_PAD.encode(&data),
            URL_SAFE_NO_PAD.encode(&tag[..TAG_LEN])
        )
    }

    /// The protected header (decoded) and the plaintext of a compact JWE, or `None` when
    /// it is malformed or its tag does not verify (compared in constant time).
    pub(crate) fn decrypt(&self, value: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut parts = value.split('.');
        let (header, key, iv, ciphertext, tag) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if parts.next().is_some() || !key.is_empty() {
            return None;
        }
        let iv = URL_SAFE_NO_PAD.decode(iv).ok()?;
        let mut data = URL_SAFE_NO_PAD.decode(ciphertext).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if iv.len() != BLOCK || tag.len() != TAG_LEN || data.is_empty() || data.len() % BLOCK != 0 {
            return None;
        }
        self.tag(header.as_bytes(), &iv, &data)
            .verify_truncated_left(&tag)
            .ok()?;
        let cipher = self.cipher();
        let mut previous: [u8; BLOCK] = iv.try_into().ok()?;
        for block in data.chunks_exact_mut(BLOCK) {
            let this: [u8; BLOCK] = (&*block).try_into().ok()?;
            cipher.decrypt_block(GenericArray::from_mut_slice(block));
            for (byte, prev) in block.iter_mut().zip(previous) {
                *byte ^= prev;
            }
            previous = this;
        }
        let pad = usize::from(*data.last()?);
        if pad == 0
            || pad > BLOCK
            || data[data.len() - pad..]
                .iter()
                .any(|&b| usize::from(b) != pad)
        {
            return None;
        }
        data.truncate(data.len() - pad);
        Some((URL_SAFE_NO_PAD.decode(header).ok()?, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "fake-interop-secret-0123456789abcdefghijklmnopqrstuv";

    #[test]
    fn derives_the_reference_key_and_kid() {
        let key = JweKey::new(SECRET);
        let hex: String = key.key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "9bcb63893e79c11d2533ed7335f9d0702700044165dc2965648ed5690e717e3e\
             4217fb838e171836cc1f4becca72401868c034095497aa75dd8f5ca915f15964"
        );
        assert_eq!(key.kid, "2thwKPlh5fzCx63frX5sVds4Kz9zUDboFBbUxDS7pUk");
    }

    #[test]
    fn round_trips_and_refuses_any_changed_part() {
        let key = JweKey::new(SECRET);
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"dir","enc":"A256CBC-HS512"}"#);
        for len in [0, 1, 15, 16, 17, 600] {
            let plaintext = vec![b'x'; len];
            let jwe = key.encrypt(&header, &plaintext);
            let (decoded_header, decrypted) = key.decrypt(&jwe).unwrap();
            assert_eq!(decrypted, plaintext);
            assert_eq!(decoded_header, br#"{"alg":"dir","enc":"A256CBC-HS512"}"#);
        }
        let jwe = key.encrypt(&header, b"{}");
        let parts: Vec<&str> = jwe.split('.').collect();
        for i in [0, 2, 3, 4] {
            let mut changed = parts.clone();
            let first = if parts[i].starts_with('A') { 'B' } else { 'A' };
            let flipped = format!("{first}{}", &parts[i][1..]);
            changed[i] = &flipped;
            assert!(key.decrypt(&changed.join(".")).is_none(), "part {i}");
        }
        assert!(JweKey::new("another secret").decrypt(&jwe).is_none());
        assert!(key.decrypt("a.b.c").is_none());
        assert!(key.decrypt(&format!("{jwe}.x")).is_none());
    }
}
