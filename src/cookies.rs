//! Cookie names, reading our cookies from a request, and building `Set-Cookie` values.
//!
//! Reading is done on raw header bytes without percent-decoding names, so `__%48ost-…`
//! is never mistaken for a `__Host-` cookie, and a non-UTF-8 header cannot make us fail:
//! our own cookie is either well-formed or "bad".

use chrono::Duration;
use http::{HeaderMap, HeaderValue, header};

use crate::config::{MAX_COOKIE_AGE, SameSite, SessionConfig};

/// Longest cookie value we look at; anything longer is treated as tampering.
pub(crate) const MAX_COOKIE_VALUE_LEN: usize = 4096;

/// The full names of the cookies this crate writes, prefix applied.
#[derive(Debug, Clone)]
pub(crate) struct CookieNames {
    pub(crate) session_token: String,
    pub(crate) session_data: String,
    pub(crate) dont_remember: String,
    /// How many leading bytes the three names share (`__Host-tas.`): a cookie whose name
    /// does not start with them is none of ours, and is skipped without parsing it.
    pub(crate) shared_prefix_len: usize,
    /// The `Set-Cookie` values that expire each of them, built once: every refused or
    /// signed-out cookie is cleared with them, and a shared value is cloned without
    /// allocating.
    pub(crate) expired: ExpiredCookies,
}

/// `Set-Cookie: {name}=; Max-Age=0; …` for each of our three cookies.
#[derive(Debug, Clone)]
pub(crate) struct ExpiredCookies {
    pub(crate) session_token: HeaderValue,
    pub(crate) session_data: HeaderValue,
    pub(crate) dont_remember: HeaderValue,
}

impl CookieNames {
    pub(crate) fn new(config: &SessionConfig) -> Self {
        // `__Host-` needs Secure, Path=/ and no Domain; with a Domain `__Secure-` is the best.
        let name_prefix = match (config.cookie_secure, &config.cookie_domain) {
            (true, None) => "__Host-",
            (true, Some(_)) => "__Secure-",
            (false, _) => "",
        };
        let name = |suffix: &str| format!("{name_prefix}{}.{suffix}", config.cookie_prefix);
        let (session_token, session_data, dont_remember) = (
            name("session_token"),
            name("session_data"),
            name("dont_remember"),
        );
        let expired = |name: &str| expired_cookie(config, name);
        let common =
            |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
        let shared_prefix_len =
            common(&session_token, &session_data).min(common(&session_token, &dont_remember));
        Self {
            shared_prefix_len,
            expired: ExpiredCookies {
                session_token: expired(&session_token),
                session_data: expired(&session_data),
                dont_remember: expired(&dont_remember),
            },
            session_token,
            session_data,
            dont_remember,
        }
    }
}

/// What the request's `Cookie` headers say about one cookie name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieLookup<'a> {
    /// Not sent.
    Absent,
    /// Sent exactly once with this value.
    One(&'a [u8]),
    /// Sent more than once, or with an oversized value: ambiguous or hostile, so unusable.
    Bad,
}

/// Finds the cookie called `name` in every `Cookie` header of the request.
pub(crate) fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> CookieLookup<'a> {
    let mut found = CookieLookup::Absent;
    for (_, value) in cookie_pairs(headers).filter(|(n, _)| *n == name.as_bytes()) {
        found = match found {
            CookieLookup::Absent if value.len() <= MAX_COOKIE_VALUE_LEN => CookieLookup::One(value),
            _ => CookieLookup::Bad,
        };
    }
    found
}

/// Every `name=value` pair of every `Cookie` header, names and values trimmed and values
/// unquoted, as raw bytes (nothing is percent-decoded).
pub(crate) fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(header::COOKIE)
        .into_iter()
        .flat_map(|header_value| SplitSemicolons(Some(header_value.as_bytes())))
        .filter_map(|pair| parse_pair(pair, b""))
}

/// Calls `f` with each pair [`cookie_pairs`] yields whose name starts with `prefix`; the
/// others are passed over without being trimmed or split (a browser sends many cookies
/// that are none of ours). A plain loop: the layer reads every request's cookies, and
/// iterator adaptors cost more than the scan itself on a browser's dozen cookies.
pub(crate) fn for_each_pair_starting_with<'h>(
    headers: &'h HeaderMap,
    prefix: &[u8],
    mut f: impl FnMut(&'h [u8], &'h [u8]),
) {
    for header_value in headers.get_all(header::COOKIE) {
        let mut rest = header_value.as_bytes();
        loop {
            let (pair, next) = match find_semicolon(rest) {
                Some(at) => (&rest[..at], Some(&rest[at + 1..])),
                None => (rest, None),
            };
            if let Some((name, value)) = parse_pair(pair, prefix) {
                f(name, value);
            }
            match next {
                Some(next) => rest = next,
                None => break,
            }
        }
    }
}

/// One `name=value` pair, trimmed and unquoted, if its name starts with `prefix` (checked
/// before anything else is done to it).
fn parse_pair<'h>(pair: &'h [u8], prefix: &[u8]) -> Option<(&'h [u8], &'h [u8])> {
    let start = pair.iter().position(|b| !b.is_ascii_whitespace())?;
    if !pair[start..].starts_with(prefix) {
        return None;
    }
    let pair = trim(pair);
    let eq = pair.iter().position(|&b| b == b'=')?;
    let mut value = trim(&pair[eq + 1..]);
    if value.len() >= 2 && value[0] == b'"' && value[value.len() - 1] == b'"' {
        value = &value[1..value.len() - 1];
    }
    Some((trim(&pair[..eq]), value))
}

/// `bytes.split(|&b| b == b';')`, finding each `;` eight bytes at a time: every request
/// with cookies is scanned, and the values are long (a cookie cache alone is hundreds of
/// bytes), so a byte-at-a-time split was a large share of the layer's own work.
struct SplitSemicolons<'a>(Option<&'a [u8]>);

impl<'a> Iterator for SplitSemicolons<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.0?;
        match find_semicolon(rest) {
            Some(at) => {
                self.0 = Some(&rest[at + 1..]);
                Some(&rest[..at])
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

fn find_semicolon(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const SEMICOLONS: u64 = u64::from_ne_bytes([b';'; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let word_bytes: [u8; 8] = word.try_into().expect("chunks_exact(8)");
        // A `;` is a zero byte after the xor; this is non-zero exactly when there is one.
        let xored = u64::from_ne_bytes(word_bytes) ^ SEMICOLONS;
        if xored.wrapping_sub(ONES) & !xored & HIGHS != 0 {
            return word.iter().position(|&b| b == b';').map(|at| offset + at);
        }
        offset += 8;
    }
    let tail = words.remainder();
    tail.iter().position(|&b| b == b';').map(|at| offset + at)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// How long a cookie should live in the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifetime {
    /// `Max-Age` of this many seconds (clamped to 400 days).
    MaxAge(Duration),
    /// No `Max-Age`: gone when the browser session ends.
    BrowserSession,
    /// `Max-Age=0`: delete now.
    Expire,
}

/// Builds a `Set-Cookie` value with our fixed attributes, through the `cookie` crate's
/// builder: it formats `Expires` (RFC 1123, GMT) and writes `Secure` whenever
/// `SameSite=None` needs it. Not on the hot path: a value is built per sign-in or refresh,
/// and the expiring ones once per manager.
pub(crate) fn set_cookie(
    config: &SessionConfig,
    name: &str,
    value: &str,
    lifetime: Lifetime,
) -> HeaderValue {
    use cookie::time::{Duration as CookieDuration, OffsetDateTime};

    let same_site = match config.same_site {
        SameSite::Lax => cookie::SameSite::Lax,
        SameSite::Strict => cookie::SameSite::Strict,
        SameSite::None => cookie::SameSite::None,
    };
    let mut cookie = cookie::Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(same_site);
    // Left unset rather than `false` when off, so the builder still says `Secure` for
    // `SameSite=None` (browsers refuse such a cookie without it).
    if config.cookie_secure {
        cookie = cookie.secure(true);
    }
    if let Some(domain) = &config.cookie_domain {
        cookie = cookie.domain(domain.as_str());
    }
    match lifetime {
        Lifetime::MaxAge(age) => {
            // Round up: the few milliseconds between computing the expiry and writing the
            // response must not turn a 7-day session into a 604799-second cookie.
            let millis = age
                .clamp(Duration::zero(), MAX_COOKIE_AGE)
                .num_milliseconds();
            let secs = CookieDuration::seconds((millis + 999) / 1000);
            // `Expires` for the rare client that ignores `Max-Age` (which wins elsewhere).
            cookie = cookie
                .max_age(secs)
                .expires(OffsetDateTime::now_utc() + secs);
        }
        Lifetime::BrowserSession => {}
        Lifetime::Expire => {
            cookie = cookie
                .max_age(CookieDuration::ZERO)
                .expires(OffsetDateTime::UNIX_EPOCH);
        }
    }
    HeaderValue::try_from(cookie.build().to_string())
        .expect("cookie names, values and attributes are visible ASCII")
}

/// The `Set-Cookie` value that expires `name`. Built once per name, not per response:
/// `set_cookie`'s buffer is reference-counted, so each response's clone is a count
/// increment, not a new string.
pub(crate) fn expired_cookie(config: &SessionConfig, name: &str) -> HeaderValue {
    set_cookie(config, name, "", Lifetime::Expire)
}

/// Removes every `Set-Cookie` header for a name in `names`, so that a cookie we are about
/// to clear cannot leak a live value set earlier in the same response.
pub(crate) fn scrub_set_cookies<'n>(
    headers: &mut HeaderMap,
    names: impl Iterator<Item = &'n str> + Clone,
) {
    let matches = |value: &HeaderValue| {
        let bytes = value.as_bytes();
        let name_end = bytes.iter().position(|&b| b == b'=').unwrap_or(bytes.len());
        let name = trim(&bytes[..name_end]);
        names.clone().any(|n| n.as_bytes() == name)
    };
    if !headers.get_all(header::SET_COOKIE).iter().any(matches) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| !matches(v))
        .cloned()
        .collect();
    headers.remove(header::SET_COOKIE);
    for value in kept {
        headers.append(header::SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for c in cookies {
            map.append(header::COOKIE, HeaderValue::from_bytes(c).unwrap());
        }
        map
    }

    #[test]
    fn finds_one_cookie_among_many() {
        let h = headers(&[b"a=1; tas.session_token=xyz; b=2"]);
        assert_eq!(
            find_cookie(&h, "tas.session_token"),
            CookieLookup::One(b"xyz")
        );
        assert_eq!(find_cookie(&h, "missing"), CookieLookup::Absent);
    }

    #[test]
    fn duplicates_across_headers_are_bad() {
        let h = headers(&[b"n=1", b"n=2"]);
        assert_eq!(find_cookie(&h, "n"), CookieLookup::Bad);
    }

    #[test]
    fn percent_encoded_names_are_not_decoded() {
        let h = headers(&[b"__%48ost-tas.session_token=v"]);
        assert_eq!(
            find_cookie(&h, "__Host-tas.session_token"),
            CookieLookup::Absent
        );
    }

    #[test]
    fn non_utf8_bytes_do_not_break_parsing() {
        let h = headers(&[b"x=\xff\xfe; n=ok"]);
        assert_eq!(find_cookie(&h, "n"), CookieLookup::One(b"ok"));
    }

    #[test]
    fn oversized_values_are_bad() {
        let big = format!("n={}", "a".repeat(MAX_COOKIE_VALUE_LEN + 1));
        let h = headers(&[big.as_bytes()]);
        assert_eq!(find_cookie(&h, "n"), CookieLookup::Bad);
    }

    #[test]
    fn host_prefix_only_when_secure_without_domain() {
        let mut config = SessionConfig::default();
        assert_eq!(
            CookieNames::new(&config).session_token,
            "__Host-tas.session_token"
        );
        config.cookie_domain = Some("example.com".into());
        assert_eq!(
            CookieNames::new(&config).session_token,
            "__Secure-tas.session_token"
        );
        config.cookie_secure = false;
        assert_eq!(CookieNames::new(&config).session_token, "tas.session_token");
    }

    #[test]
    fn max_age_is_capped_at_400_days() {
        let config = SessionConfig::default();
        let v = set_cookie(&config, "n", "v", Lifetime::MaxAge(Duration::days(1000)));
        assert!(v.to_str().unwrap().contains("Max-Age=34560000;"));
    }

    #[test]
    fn set_cookie_formats_expires_next_to_max_age() {
        let config = SessionConfig::default();
        let live = set_cookie(&config, "n", "v", Lifetime::MaxAge(Duration::hours(1)));
        let live = live.to_str().unwrap();
        assert!(
            live.starts_with("n=v; HttpOnly; SameSite=Lax; Secure; Path=/"),
            "{live}"
        );
        let expires = live
            .split("; Expires=")
            .nth(1)
            .expect("an Expires attribute");
        // RFC 1123 in GMT, as `Set-Cookie` wants it: "Mon, 07 Dec 2026 14:00:00 GMT".
        assert_eq!(expires.len(), 29, "{expires}");
        assert!(expires.ends_with(" GMT"), "{expires}");
        let gone = expired_cookie(&config, "n");
        assert!(
            gone.to_str()
                .unwrap()
                .ends_with("; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"),
            "{gone:?}"
        );
        let session = set_cookie(&config, "n", "v", Lifetime::BrowserSession);
        assert!(
            !session.to_str().unwrap().contains("Expires"),
            "{session:?}"
        );
    }

    #[test]
    fn same_site_none_always_says_secure() {
        let config = SessionConfig {
            same_site: SameSite::None,
            cookie_secure: false,
            ..SessionConfig::default()
        };
        let v = set_cookie(&config, "n", "v", Lifetime::BrowserSession);
        assert!(
            v.to_str().unwrap().contains("; SameSite=None; Secure"),
            "{v:?}"
        );
    }

    #[test]
    fn scrub_removes_only_named_cookies() {
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("n=live; Path=/"),
        );
        h.append(header::SET_COOKIE, HeaderValue::from_static("other=1"));
        scrub_set_cookies(&mut h, ["n"].into_iter());
        let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, vec![HeaderValue::from_static("other=1")]);
    }

    #[test]
    fn semicolon_split_matches_the_slice_split_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                let mut bytes = vec![b'a'; len];
                bytes[at] = b';';
                let ours: Vec<_> = SplitSemicolons(Some(&bytes)).collect();
                let std: Vec<_> = bytes.split(|&b| b == b';').collect();
                assert_eq!(ours, std, "len {len}, `;` at {at}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn semicolon_split_matches_the_slice_split(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![proptest::num::u8::ANY, proptest::strategy::Just(b';')],
                0..200,
            )
        ) {
            let ours: Vec<_> = SplitSemicolons(Some(&bytes)).collect();
            let std: Vec<_> = bytes.split(|&b| b == b';').collect();
            proptest::prop_assert_eq!(ours, std);
        }

        #[test]
        fn arbitrary_cookie_headers_never_panic(
            headers_bytes in proptest::collection::vec(
                proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..4)
        ) {
            let mut map = HeaderMap::new();
            for bytes in &headers_bytes {
                if let Ok(value) = HeaderValue::from_bytes(bytes) {
                    map.append(header::COOKIE, value);
                }
            }
            let _ = find_cookie(&map, "tas.session_token");
            let ring = crate::token::KeyRing::from_secret([3u8; 32]).unwrap();
            if let CookieLookup::One(value) = find_cookie(&map, "n") {
                let _ = ring.verify_token("n", value);
            }
            for bytes in &headers_bytes {
                let _ = ring.verify_token("n", bytes);
            }
        }
    }
}
