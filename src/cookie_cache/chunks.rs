//! Splitting a sealed value over cookies of at most 4096 bytes, and putting it back
//! together.
//!
//! A value that fits is sent as `{name}`; a larger one as `{name}.0` … `{name}.{n-1}`,
//! 2 ≤ n ≤ [`MAX_CHUNKS`]. Reading is strict: the plain name next to any chunk name, a
//! duplicate, a gap, or a single `.0` are anomalies and the cache is ignored. The MAC
//! covers the reassembled whole, so dropped, reordered or appended chunks fail it.

use std::borrow::Cow;

#[cfg(test)]
use http::HeaderMap;

use crate::cookies::MAX_COOKIE_VALUE_LEN;

/// Most cookies one cache may span. Browsers send all cookies in one `Cookie` line and
/// common proxies refuse lines over 8 KiB (nginx's default), so a cache that needs more
/// than about 12 KB would cost the user more than the store read it saves.
pub(crate) const MAX_CHUNKS: usize = 3;

/// The cookie names of one cache: the plain name and its chunk names.
#[derive(Debug, Clone)]
pub(crate) struct ChunkNames {
    pub(crate) plain: String,
    pub(crate) chunks: [String; MAX_CHUNKS],
}

impl ChunkNames {
    pub(crate) fn new(plain: &str) -> Self {
        Self {
            plain: plain.to_owned(),
            chunks: std::array::from_fn(|i| format!("{plain}.{i}")),
        }
    }

    /// Every name a cache can be written under.
    pub(crate) fn all(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.plain.as_str()).chain(self.chunks.iter().map(String::as_str))
    }

    /// The names written for a value split into `count` cookies (1 = the plain name).
    pub(crate) fn written(&self, count: usize) -> impl Iterator<Item = &str> {
        let chunks = if count > 1 {
            &self.chunks[..count]
        } else {
            &[]
        };
        (count == 1)
            .then_some(self.plain.as_str())
            .into_iter()
            .chain(chunks.iter().map(String::as_str))
    }
}

/// Which of the cache's names a request carried, so a write can expire the stale ones.
/// `None` in the [`CacheState`](super::CacheState) means "not looked": expire them all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Presence(u8);

impl Presence {
    const PLAIN: u8 = 1 << MAX_CHUNKS;

    pub(crate) fn has_plain(self) -> bool {
        self.0 & Self::PLAIN != 0
    }

    pub(crate) fn has_chunk(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }
}

/// The cache cookies of one request as they are found: borrowed slices, no allocation.
///
/// Fed every cookie whose name starts with the cache's plain name (see [`offer`]), in
/// header order; [`presence`] and [`value`] then apply the strict reading rules.
///
/// [`offer`]: Gathered::offer
/// [`presence`]: Gathered::presence
/// [`value`]: Gathered::value
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Gathered<'a> {
    plain: Option<&'a [u8]>,
    chunks: [Option<&'a [u8]>; MAX_CHUNKS],
    presence: u8,
    anomaly: bool,
}

impl<'a> Gathered<'a> {
    /// Takes one cookie whose name is the plain name followed by `rest` (`rest` is empty
    /// for the plain name itself); lookalike names (`.00`, `.x`, `.9`, …) are ignored.
    pub(crate) fn offer(&mut self, rest: &[u8], value: &'a [u8]) {
        let slot = match rest {
            [] => {
                self.presence |= Presence::PLAIN;
                &mut self.plain
            }
            [b'.', digit] if digit.is_ascii_digit() && usize::from(digit - b'0') < MAX_CHUNKS => {
                let index = usize::from(digit - b'0');
                self.presence |= 1 << index;
                &mut self.chunks[index]
            }
            _ => return,
        };
        // A second cookie of one name, or one longer than we ever write, is not ours.
        self.anomaly |= slot.replace(value).is_some() || value.len() > MAX_COOKIE_VALUE_LEN;
    }

    /// Which cache names were sent (well-formed or not).
    pub(crate) fn presence(&self) -> Presence {
        Presence(self.presence)
    }

    /// The reassembled value when the cookies form exactly one well-shaped cache. Only a
    /// chunked value is copied (the MAC covers the whole).
    pub(crate) fn value(&self) -> Option<Cow<'a, [u8]>> {
        if self.anomaly {
            return None;
        }
        let chunks = &self.chunks;
        let count = chunks.iter().take_while(|c| c.is_some()).count();
        // Any chunk next to the plain name, even a stray `.1` with no `.0`, means two
        // writes disagree about the value; neither is chosen.
        let any_chunk = chunks.iter().any(Option::is_some);
        match (self.plain, count) {
            (Some(value), _) if !any_chunk => Some(Cow::Borrowed(value)),
            // Chunks must be 0..n with nothing after a gap; a lone `.0` is never written.
            (None, n) if n >= 2 && chunks[n..].iter().all(Option::is_none) => Some(Cow::Owned(
                chunks[..n]
                    .iter()
                    .flatten()
                    .copied()
                    .flatten()
                    .copied()
                    .collect(),
            )),
            _ => None,
        }
    }
}

/// Finds the cache cookies in the request: which names are there, and the reassembled
/// value when they form exactly one well-shaped cache.
#[cfg(test)]
pub(crate) fn gather<'a>(
    headers: &'a HeaderMap,
    names: &ChunkNames,
) -> (Presence, Option<Cow<'a, [u8]>>) {
    let mut gathered = Gathered::default();
    let plain_name = names.plain.as_bytes();
    for (name, value) in crate::cookies::cookie_pairs(headers) {
        if let Some(rest) = name.strip_prefix(plain_name) {
            gathered.offer(rest, value);
        }
    }
    (gathered.presence(), gathered.value())
}

/// Splits `value` into as few pieces as keep every `name=piece` within `limit` bytes;
/// `None` when that takes more than [`MAX_CHUNKS`].
pub(crate) fn split<'v>(value: &'v str, names: &ChunkNames, limit: usize) -> Option<Vec<&'v str>> {
    if names.plain.len() + 1 + value.len() <= limit {
        return Some(vec![value]);
    }
    // Chunk names all have the same length (single-digit index).
    let room = limit.checked_sub(names.chunks[0].len() + 1)?;
    if room == 0 {
        return None;
    }
    let count = value.len().div_ceil(room);
    if count > MAX_CHUNKS {
        return None;
    }
    // The value is ASCII (kid and base64url), so any byte offset is a char boundary.
    Some(
        value
            .as_bytes()
            .chunks(room)
            .map(|piece| std::str::from_utf8(piece).expect("cache values are ASCII"))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use http::{HeaderValue, header};

    use super::*;

    fn headers(cookie: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.append(header::COOKIE, HeaderValue::from_str(cookie).unwrap());
        map
    }

    fn names() -> ChunkNames {
        ChunkNames::new("c")
    }

    fn value(cookie: &str) -> Option<Vec<u8>> {
        gather(&headers(cookie), &names()).1.map(Cow::into_owned)
    }

    #[test]
    fn plain_and_chunked_values_are_reassembled() {
        assert_eq!(value("x=1; c=abc").as_deref(), Some(&b"abc"[..]));
        assert_eq!(value("c.1=def; c.0=abc").as_deref(), Some(&b"abcdef"[..]));
        assert_eq!(
            value("c.0=a; c.2=c; y=2; c.1=b").as_deref(),
            Some(&b"abc"[..])
        );
    }

    #[test]
    fn anomalies_are_refused() {
        for cookie in [
            "c=a; c.0=b; c.1=c", // plain and chunks
            "c=a; c.1=b",        // plain and a stray later chunk
            "c.2=b; c=a",        // the same, in the other order
            "c=a; c.0=b",        // plain and a lone first chunk
            "c.0=a",             // a lone first chunk
            "c.0=a; c.2=c",      // a gap
            "c.1=b; c.2=c",      // no first chunk
            "c.0=a; c.1=b; c.1=b",
            "c=a; c=a",
        ] {
            assert_eq!(value(cookie), None, "{cookie}");
        }
        // Lookalike names are other cookies.
        assert_eq!(
            value("c.00=a; c.x=b; cc=1; c.9=z; c=ok").as_deref(),
            Some(&b"ok"[..])
        );
    }

    #[test]
    fn presence_records_every_name_seen() {
        let (presence, _) = gather(&headers("c=a; c.2=b"), &names());
        assert!(presence.has_plain() && presence.has_chunk(2) && !presence.has_chunk(0));
        assert_eq!(gather(&headers("d=1"), &names()).0, Presence::default());
    }

    #[test]
    fn split_respects_the_limit_and_the_cap() {
        let names = names();
        assert_eq!(split("abcd", &names, 6), Some(vec!["abcd"]));
        // `c.0=` is 4 bytes, leaving 3 per chunk at a limit of 7.
        assert_eq!(split("abcdefg", &names, 7), Some(vec!["abc", "def", "g"]));
        assert_eq!(split("abcdefghij", &names, 7), None);
        let written: Vec<_> = names.written(3).collect();
        assert_eq!(written, ["c.0", "c.1", "c.2"]);
        assert_eq!(names.written(1).collect::<Vec<_>>(), ["c"]);
    }
}
