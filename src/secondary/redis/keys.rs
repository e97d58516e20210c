//! Key names, formatted without allocating where the request path needs them.
//!
//! On one Redis a key is `<prefix><kind>:<name>` (the layout of every earlier version, so
//! existing sessions stay where they are). On a Redis Cluster the prefix is followed by the
//! hash tag of the user's shard, `<prefix>{xx}<kind>:<name>` with `xx` the shard in hex:
//! every key of one user — values, id pointers, index, generation counter — is then on
//! one slot, and each script runs on one node.

use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};

use super::RedisStorage;
use super::connection::{Conn, RedisConnection};
use crate::token::TokenHash;

/// Room for a prefix of up to 90 bytes before a key spills to the heap.
const INLINE: usize = 96 + 4 + 2 + 64;

/// A key on the stack (or, for a very long prefix, on the heap).
pub(super) struct Key {
    inline: [u8; INLINE],
    len: usize,
    spilled: Vec<u8>,
}

impl Key {
    fn new() -> Self {
        Self {
            inline: [0; INLINE],
            len: 0,
            spilled: Vec::new(),
        }
    }

    /// A copy of `other`, to append to.
    pub(super) fn from(other: &Key) -> Self {
        let mut key = Self::new();
        key.push(other.as_bytes());
        key
    }

    pub(super) fn push(&mut self, bytes: &[u8]) {
        if self.spilled.is_empty() && self.len + bytes.len() <= INLINE {
            self.inline[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            if self.spilled.is_empty() {
                self.spilled.extend_from_slice(&self.inline[..self.len]);
            }
            self.spilled.extend_from_slice(bytes);
        }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }
}

impl RedisStorage {
    /// The prefix of every key in `shard`: the key prefix, then on a cluster `{xx}`.
    pub(super) fn shard_prefix(&self, shard: u8) -> Key {
        let mut key = Key::new();
        key.push(self.inner.prefix.as_bytes());
        if self.is_cluster() {
            let hex = b"0123456789abcdef";
            key.push(&[
                b'{',
                hex[usize::from(shard >> 4)],
                hex[usize::from(shard & 0xf)],
                b'}',
            ]);
        }
        key
    }

    /// The key of the value stored under `token_hash`.
    pub(super) fn value_key(&self, token_hash: &TokenHash) -> Key {
        let mut key = self.shard_prefix(token_hash.shard());
        key.push(b"s:");
        let mut hex = [0u8; 64];
        token_hash.write_hex(&mut hex);
        key.push(&hex);
        key
    }

    /// The key of the pointer from a session id to its token hash.
    pub(super) fn pointer_key(&self, session_id: &str) -> Key {
        let mut key = self.shard_prefix(crate::token::shard_of_id(session_id));
        key.push(b"i:");
        key.push(session_id.as_bytes());
        key
    }
}

/// The cluster slot of a key: CRC16 (XMODEM) of its hash tag (or of the whole key
/// without one), modulo 16384.
pub(super) fn slot(key: &Key) -> u16 {
    let key = key.as_bytes();
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let close = key[open + 1..].iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &key[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for &byte in tagged.unwrap_or(key) {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

/// `WAIT replicas ms` on the connection the last writes went on: the one server, or on a
/// cluster the primary of `slot`. How many replicas confirmed.
pub(super) async fn wait(
    connection: &mut RedisConnection,
    slot: u16,
    replicas: u32,
    ms: u64,
) -> redis::RedisResult<i64> {
    let mut wait = redis::cmd("WAIT");
    wait.arg(replicas).arg(ms);
    match &mut connection.0 {
        Conn::Single(single) => wait.query_async(single).await,
        Conn::Cluster(cluster) => {
            let route = Route::new(slot, SlotAddr::Master);
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
            redis::from_redis_value(&cluster.route_command(&wait, routing).await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_cluster_slots() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.0.
        let key = |text: &str| {
            let mut key = Key::new();
            key.push(text.as_bytes());
            key
        };
        assert_eq!(slot(&key("123456789")), 12739);
        assert_eq!(slot(&key("foo")), 12182);
        assert_eq!(slot(&key("tas:v1:{3f}s:abc")), slot(&key("3f")));
        assert_eq!(slot(&key("a{}b")), slot(&key("a{}b")));
    }

    #[test]
    fn long_keys_spill_and_short_ones_stay_inline() {
        let mut key = Key::new();
        key.push(b"tas:v1:");
        key.push(&[b'a'; 64]);
        assert!(key.spilled.is_empty());
        assert_eq!(key.as_bytes().len(), 71);
        key.push(&[b'b'; INLINE]);
        assert_eq!(key.as_bytes().len(), 71 + INLINE);
        assert!(key.as_bytes().starts_with(b"tas:v1:aaaa") && key.as_bytes().ends_with(b"bb"));
    }
}
