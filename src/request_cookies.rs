//! [`RequestCookies`]: one pass over the request's `Cookie` headers that finds every cookie
//! the layer reads, borrowing slices of the headers (no allocation).
//!
//! The rules are those of [`find_cookie`](crate::cookies::find_cookie) for the session
//! token (a duplicate or an oversized value is `Bad`), "sent at all" for `dont_remember`,
//! and [`Gathered`] for the cookie cache's plain and chunked names.

use http::HeaderMap;

use crate::cookie_cache::chunks::{Gathered, Presence};
use crate::cookies::{
    CookieLookup, CookieNames, MAX_COOKIE_VALUE_LEN, for_each_pair_starting_with,
};

/// What the request's cookies say, for the layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestCookies<'a> {
    /// The `session_token` cookie.
    pub(crate) session_token: CookieLookup<'a>,
    /// Whether a `dont_remember` cookie was sent (in any shape).
    pub(crate) dont_remember: bool,
    /// The cookie cache's cookies; `None` when the cache is off.
    pub(crate) cache: Option<Gathered<'a>>,
}

impl<'a> RequestCookies<'a> {
    /// Reads every `Cookie` header of the request once; the cache's cookies only when
    /// `cache_on`.
    pub(crate) fn parse(names: &CookieNames, cache_on: bool, headers: &'a HeaderMap) -> Self {
        let token_name = names.session_token.as_bytes();
        let dont_remember_name = names.dont_remember.as_bytes();
        // The cache's plain name is the `session_data` name; its chunks append `.{i}`.
        let cache_name = cache_on.then_some(names.session_data.as_bytes());
        let mut out = Self {
            session_token: CookieLookup::Absent,
            dont_remember: false,
            cache: cache_name.map(|_| Gathered::default()),
        };
        // Our three names share a prefix: other cookies are skipped unparsed.
        let ours = &token_name[..names.shared_prefix_len];
        for_each_pair_starting_with(headers, ours, |name, value| {
            if name == token_name {
                out.session_token = match out.session_token {
                    CookieLookup::Absent if value.len() <= MAX_COOKIE_VALUE_LEN => {
                        CookieLookup::One(value)
                    }
                    _ => CookieLookup::Bad,
                };
            }
            if name == dont_remember_name {
                out.dont_remember = true;
            }
            if let (Some(plain), Some(gathered)) = (cache_name, out.cache.as_mut()) {
                if let Some(rest) = name.strip_prefix(plain) {
                    gathered.offer(rest, value);
                }
            }
        });
        out
    }

    /// Which cache cookies were sent; `None` when the cache is off.
    pub(crate) fn cache_presence(&self) -> Option<Presence> {
        self.cache.as_ref().map(Gathered::presence)
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, header};

    use super::*;
    use crate::cookies::find_cookie;
    use crate::manager::SessionManager;
    use crate::store::MemoryStore;

    fn manager(cache: bool) -> SessionManager {
        let builder = SessionManager::builder(MemoryStore::new()).secret([3u8; 32]);
        let builder = if cache {
            builder.cookie_cache(crate::CookieCache::new())
        } else {
            builder
        };
        builder.build().unwrap()
    }

    fn headers(cookies: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for c in cookies {
            map.append(header::COOKIE, HeaderValue::from_bytes(c).unwrap());
        }
        map
    }

    /// The single pass agrees with the separate lookups it replaces.
    fn agrees(manager: &SessionManager, map: &HeaderMap) {
        let inner = &manager.inner;
        let cookies = RequestCookies::parse(&inner.names, inner.cookie_cache.is_some(), map);
        assert_eq!(
            cookies.session_token,
            find_cookie(map, &inner.names.session_token)
        );
        assert_eq!(
            cookies.dont_remember,
            find_cookie(map, &inner.names.dont_remember) != CookieLookup::Absent
        );
        let cache_names = crate::cookie_cache::chunks::ChunkNames::new(&inner.names.session_data);
        let (presence, value) = crate::cookie_cache::chunks::gather(map, &cache_names);
        match &cookies.cache {
            None => assert!(inner.cookie_cache.is_none()),
            Some(gathered) => {
                assert_eq!(gathered.presence(), presence);
                assert_eq!(gathered.value(), value);
            }
        }
    }

    #[test]
    fn one_pass_finds_what_the_separate_lookups_find() {
        let big = format!(
            "__Host-tas.session_token={}",
            "a".repeat(MAX_COOKIE_VALUE_LEN + 1)
        );
        let cases: &[&[&[u8]]] = &[
            &[],
            &[b"a=1"],
            &[b"__Host-tas.session_token=abc; __Host-tas.dont_remember=true"],
            &[b"__Host-tas.session_token=abc", b"__Host-tas.session_token=abc"],
            &[big.as_bytes()],
            &[b"__Host-tas.dont_remember=1; __Host-tas.dont_remember=2"],
            &[b"__Host-tas.session_data=xyz; __Host-tas.session_token=t"],
            &[b"__Host-tas.session_data.1=b; x=\xff", b"__Host-tas.session_data.0=a"],
            &[b"__Host-tas.session_data.0=a; __Host-tas.session_data.2=c"],
            &[b"__Host-tas.session_data=a; __Host-tas.session_data.0=b; __Host-tas.session_data.1=c"],
            &[b"__Host-tas.session_data=a; __Host-tas.session_data.1=b"],
            &[b"__Host-tas.session_data.2=b", b"__Host-tas.session_data=a"],
            &[b"__Host-tas.session_data.00=a; __Host-tas.session_data.9=z; __%48ost-tas.session_token=v"],
            &[b"__Host-tas.session_data=\"q\"; __Host-tas.session_data=q"],
        ];
        for cache in [true, false] {
            let manager = manager(cache);
            for case in cases {
                agrees(&manager, &headers(case));
            }
        }
    }

    #[test]
    fn a_plain_cache_next_to_any_chunk_is_refused() {
        let manager = manager(true);
        let names = &manager.inner.names;
        for case in [
            &[&b"__Host-tas.session_data=a; __Host-tas.session_data.1=b"[..]][..],
            &[b"__Host-tas.session_data.2=b", b"__Host-tas.session_data=a"],
        ] {
            let map = headers(case);
            let gathered = RequestCookies::parse(names, true, &map).cache.unwrap();
            assert!(gathered.presence().has_plain());
            let shown: Vec<_> = case.iter().map(|c| String::from_utf8_lossy(c)).collect();
            assert_eq!(gathered.value(), None, "{shown:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn one_pass_agrees_on_arbitrary_headers(
            pairs in proptest::collection::vec(
                (0usize..7, proptest::collection::vec(proptest::num::u8::ANY, 0..20)), 0..8),
            split in 0usize..8,
        ) {
            const NAMES: [&str; 7] = [
                "__Host-tas.session_token",
                "__Host-tas.dont_remember",
                "__Host-tas.session_data",
                "__Host-tas.session_data.0",
                "__Host-tas.session_data.1",
                "__Host-tas.session_data.2",
                "other",
            ];
            let line = |pairs: &[(usize, Vec<u8>)]| {
                let mut out = Vec::new();
                for (name, value) in pairs {
                    out.extend_from_slice(NAMES[*name].as_bytes());
                    out.push(b'=');
                    out.extend(value.iter().filter(|b| **b != b';' && **b != 0x7f && **b >= 0x20));
                    out.extend_from_slice(b"; ");
                }
                out
            };
            let split = split.min(pairs.len());
            let mut map = HeaderMap::new();
            for part in [&pairs[..split], &pairs[split..]] {
                if let Ok(value) = HeaderValue::from_bytes(&line(part)) {
                    map.append(header::COOKIE, value);
                }
            }
            for cache in [true, false] {
                agrees(&manager(cache), &map);
            }
        }
    }
}
