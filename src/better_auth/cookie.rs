//! Better Auth's `session_token` cookie: its names and its signature.
//!
//! The value on the wire is `encodeURIComponent(token + "." + base64(HMAC-SHA256(secret,
//! token)))`, keyed by the raw secret bytes: no key id, no HKDF, and the cookie name is
//! not bound into the MAC (reference §2). A value is checked here, before any I/O, with a
//! constant-time comparison.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::{HeaderMap, header};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of the signature part: 32 bytes in padded standard base64.
const SIGNATURE_LEN: usize = 44;
/// Longest cookie value considered at all: a browser sends at most 4096 bytes per cookie.
const MAX_VALUE_LEN: usize = 4096;

/// The cookie names Better Auth writes: `(secure ? "__Secure-" : "") + (override ??
/// prefix + "." + name)`. `__Host-` is never used, and an override replaces the whole
/// `prefix.name` part but still gets `__Secure-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BetterAuthCookieNames {
    /// The signed session token.
    pub session_token: String,
    /// The cookie cache (and its chunks `session_data.N`).
    pub session_data: String,
    /// The remember-me-off marker.
    pub dont_remember: String,
}

impl BetterAuthCookieNames {
    /// The names for `advanced.cookiePrefix` (`""` means Better Auth's default,
    /// `better-auth`), `secure`, and optional `advanced.cookies.<name>.name` overrides for
    /// `session_token` and `session_data`.
    pub fn new(
        prefix: &str,
        secure: bool,
        session_token_override: Option<&str>,
        session_data_override: Option<&str>,
    ) -> Self {
        let prefix = if prefix.is_empty() {
            "better-auth"
        } else {
            prefix
        };
        let secure = if secure { "__Secure-" } else { "" };
        let name = |overridden: Option<&str>, name: &str| match overridden {
            Some(overridden) => format!("{secure}{overridden}"),
            None => format!("{secure}{prefix}.{name}"),
        };
        Self {
            session_token: name(session_token_override, "session_token"),
            session_data: name(session_data_override, "session_data"),
            dont_remember: name(None, "dont_remember"),
        }
    }
}

/// Signs and verifies values the way better-call's signed cookies do, with Better Auth's
/// raw secret (`secrets[0].value` when the app rotates: only that one signs and verifies).
#[derive(Clone)]
pub struct SignedCookie {
    mac: HmacSha256,
}

impl std::fmt::Debug for SignedCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignedCookie { .. }")
    }
}

impl SignedCookie {
    /// A codec keyed by Better Auth's secret, as the string the app is configured with.
    pub fn new(secret: &str) -> Self {
        Self {
            mac: HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length"),
        }
    }

    /// The cookie value for `token`, URL-encoded as Better Auth writes it.
    pub fn sign(&self, token: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        let signature = STANDARD.encode(mac.finalize().into_bytes());
        encode_uri_component(&format!("{token}.{signature}"))
    }

    /// The token inside a cookie value as the browser sent it (quotes and URL encoding
    /// still on), or `None` when it is not one Better Auth signed with this secret.
    pub fn verify(&self, value: &[u8]) -> Option<String> {
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        let value = std::str::from_utf8(value).ok()?;
        let value = unquote(value);
        let value = decode_uri_component(value);
        let dot = value.rfind('.')?;
        if dot == 0 {
            return None;
        }
        let (token, signature) = (&value[..dot], &value[dot + 1..]);
        if signature.len() != SIGNATURE_LEN || !signature.ends_with('=') {
            return None;
        }
        let signature = STANDARD.decode(signature).ok()?;
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        // `verify_slice` compares in constant time.
        mac.verify_slice(&signature).ok()?;
        Some(token.to_owned())
    }
}

/// The first value of cookie `name` in the request's `Cookie` headers, as Better Auth
/// reads it: split on `;`, names trimmed, the **first** occurrence wins (a later
/// duplicate is ignored rather than refused, so both sides agree on which value counts).
pub fn first_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|line| line.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii_start();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

/// Surrounding double quotes removed, as better-call does.
pub(crate) fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
        .unwrap_or(value)
}

/// JavaScript's `decodeURIComponent`, applied only when the value holds a `%`; a decode
/// error leaves the value as it was (better-call's rule).
pub(crate) fn decode_uri_component(value: &str) -> Cow<'_, str> {
    if !value.contains('%') {
        return Cow::Borrowed(value);
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|hex| {
                let hex = std::str::from_utf8(hex).ok()?;
                u8::from_str_radix(hex, 16).ok()
            });
            match hex {
                Some(byte) => {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                None => return Cow::Borrowed(value),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(decoded) => Cow::Owned(decoded),
        Err(_) => Cow::Borrowed(value),
    }
}

/// JavaScript's `encodeURIComponent`: everything but `A-Z a-z 0-9 - _ . ! ~ * ' ( )`
/// percent-encoded, as UTF-8 bytes.
pub(crate) fn encode_uri_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for &byte in value.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "fake-interop-secret-0123456789abcdefghijklmnopqrstuv";

    #[test]
    fn signs_the_reference_test_vector_byte_for_byte() {
        let codec = SignedCookie::new(SECRET);
        assert_eq!(
            codec.sign("SjMPKC7K8GWl3slIPLmgRb8QWaQ1p3bx"),
            "SjMPKC7K8GWl3slIPLmgRb8QWaQ1p3bx.nJMTVG5tyA%2Fr0zfmQM5ti%2FKVmLY8nEGcW%2BbJMJWqBms%3D"
        );
        // The constant `dont_remember` value of the reference.
        assert_eq!(
            codec.sign("true"),
            "true.GpXcEOwQzxjJYi3UFC0GxWTYcXHH4gMAEE2DmHecxB4%3D"
        );
    }

    #[test]
    fn verifies_encoded_quoted_and_decoded_forms_and_nothing_else() {
        let codec = SignedCookie::new(SECRET);
        let token = "SjMPKC7K8GWl3slIPLmgRb8QWaQ1p3bx";
        let signed = codec.sign(token);
        assert_eq!(codec.verify(signed.as_bytes()).as_deref(), Some(token));
        let quoted = format!("\"{signed}\"");
        assert_eq!(codec.verify(quoted.as_bytes()).as_deref(), Some(token));
        let decoded = decode_uri_component(&signed).into_owned();
        assert_eq!(codec.verify(decoded.as_bytes()).as_deref(), Some(token));

        // Another secret, a changed token, a cut signature, no token, no dot, garbage.
        let other = SignedCookie::new("another-secret-another-secret-another");
        assert_eq!(other.verify(signed.as_bytes()), None);
        let tampered = signed.replacen('S', "T", 1);
        assert_eq!(codec.verify(tampered.as_bytes()), None);
        assert_eq!(codec.verify(&signed.as_bytes()[..signed.len() - 3]), None);
        let no_token = &signed[token.len()..];
        assert_eq!(codec.verify(no_token.as_bytes()), None);
        assert_eq!(codec.verify(token.as_bytes()), None);
        assert_eq!(codec.verify(b"%E0%A4%A.x"), None);
        assert_eq!(codec.verify(&[0xff, b'.', 0xfe]), None);
        assert_eq!(codec.verify(&vec![b'a'; 5000]), None);
    }

    #[test]
    fn names_follow_prefix_secure_and_overrides() {
        let plain = BetterAuthCookieNames::new("", false, None, None);
        assert_eq!(plain.session_token, "better-auth.session_token");
        assert_eq!(plain.session_data, "better-auth.session_data");
        assert_eq!(plain.dont_remember, "better-auth.dont_remember");
        let secure = BetterAuthCookieNames::new("myapp", true, Some("sid"), None);
        assert_eq!(secure.session_token, "__Secure-sid");
        assert_eq!(secure.session_data, "__Secure-myapp.session_data");
    }

    #[test]
    fn the_first_occurrence_of_a_cookie_wins() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            "a=1; x.session_token=first".parse().unwrap(),
        );
        headers.append(header::COOKIE, "x.session_token=second".parse().unwrap());
        assert_eq!(
            first_cookie(&headers, "x.session_token"),
            Some(&b"first"[..])
        );
        assert_eq!(first_cookie(&headers, "session_token"), None);
    }

    #[test]
    fn uri_component_coding_matches_javascript() {
        assert_eq!(encode_uri_component("a+b/c=d é"), "a%2Bb%2Fc%3Dd%20%C3%A9");
        assert_eq!(decode_uri_component("a%2Bb%2Fc%3Dd%20%C3%A9"), "a+b/c=d é");
        // Malformed: left raw.
        assert_eq!(decode_uri_component("100%"), "100%");
        assert_eq!(decode_uri_component("%C3"), "%C3");
    }
}
