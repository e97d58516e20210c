//! The in-process revocation set: what the cookie cache must stop believing.
//!
//! A cache cookie is a signed copy of a session. Deleting the session from the stores
//! does not unsign the copies already in browsers, so every revocation is also recorded
//! here, and a cache hit is accepted only if nothing here refuses it. An entry lives as
//! long as a cache issued before it can (the cache `max_age`, plus a clock-skew margin)
//! and is then dropped: every cache it could refuse has expired by itself.
//!
//! The set is bounded. When it would overflow, it does not drop entries (that would
//! forget a revocation); it empties and raises the *watermark* instead: no cache issued at
//! or before that instant (plus the clock-skew allowance, for caches stamped by other
//! instances) is trusted again. A revoked session's caches were all issued
//! before its revocation committed (a cache's `issued_at` is taken before the store read
//! it copies), so the watermark refuses every one of them, and live sessions only pay one
//! store read to get a newer cache. The same watermark serves whoever else learns that
//! revocations may have been missed (a dropped subscription, a lapsed lease).

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use chrono::{DateTime, Duration, Utc};

use crate::cookie_cache::payload::{CREATED_AT, View};
use crate::cookie_cache::{CachedSession, INSTANCE_CLOCK_SKEW};
use crate::session::Session;

/// What a revocation can refuse a cache by: read from a [`CachedSession`], or straight
/// from the payload on the hit path (no session built).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Judged<'a> {
    pub(crate) issuer: u64,
    pub(crate) issued_at_ms: i64,
    pub(crate) session_id: &'a str,
    pub(crate) user_id: &'a str,
    pub(crate) generation: u64,
    pub(crate) created_at_ms: i64,
}

impl<'a> From<&'a CachedSession> for Judged<'a> {
    fn from(cached: &'a CachedSession) -> Self {
        Self {
            issuer: cached.issuer,
            issued_at_ms: cached.issued_at.timestamp_millis(),
            session_id: &cached.session.id,
            user_id: &cached.session.user_id,
            generation: cached.session.generation,
            created_at_ms: cached.session.created_at.timestamp_millis(),
        }
    }
}

impl<'a> From<&View<'a>> for Judged<'a> {
    fn from(view: &View<'a>) -> Self {
        Self {
            issuer: view.issuer,
            issued_at_ms: view.issued_at_ms,
            session_id: view.id,
            user_id: view.user_id,
            generation: view.generation,
            created_at_ms: view.times_ms[CREATED_AT],
        }
    }
}

/// Entries held before the set overflows (about 100 bytes each).
pub(crate) const DEFAULT_CAPACITY: usize = 100_000;
/// A user with more sessions than this revoked at once gets one per-user entry instead of
/// one entry per session.
const PER_USER_COMPACTION: usize = 8;

/// One thing the cache must no longer believe (also what instances send each other).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub(crate) enum CacheRevocation {
    /// Caches of this session with a generation below this one (`u64::MAX`: all of them,
    /// the session is gone; lower: it was rotated and only older copies are stale).
    Session {
        session_id: String,
        below_generation: u64,
    },
    /// Caches of this user's sessions created at or before this instant (revoke-all).
    User {
        user_id: String,
        created_up_to: DateTime<Utc>,
    },
}

impl CacheRevocation {
    /// What deleting `sessions` from the source of truth revokes: one entry per session,
    /// or one per user for a user who lost many at once. The per-user cut-off is the
    /// newest `created_at` among the deleted sessions, so it covers each of them and is
    /// not skewed by the clock of whoever revoked.
    pub(crate) fn for_deleted<'a>(sessions: impl IntoIterator<Item = &'a Session>) -> Vec<Self> {
        let mut by_user: HashMap<&str, Vec<&Session>> = HashMap::new();
        for session in sessions {
            by_user.entry(&session.user_id).or_default().push(session);
        }
        let mut out = Vec::new();
        for (user_id, sessions) in by_user {
            if sessions.len() > PER_USER_COMPACTION {
                let created_up_to = sessions.iter().map(|s| s.created_at).max();
                out.extend(created_up_to.map(|created_up_to| Self::User {
                    user_id: user_id.to_owned(),
                    created_up_to,
                }));
            } else {
                out.extend(sessions.into_iter().map(|s| Self::Session {
                    session_id: s.id.clone(),
                    below_generation: u64::MAX,
                }));
            }
        }
        out
    }
}

#[derive(Debug)]
pub(crate) struct RevocationSet {
    retention: Duration,
    capacity: usize,
    entries: RwLock<Entries>,
    /// Entry count, readable without the lock so an empty set costs one atomic load.
    len: AtomicUsize,
    /// Other instances' caches issued at or before this many ms since the epoch are not
    /// trusted.
    watermark_ms: AtomicI64,
    /// The same for caches this process issued (stamped with `issuer`), which need no
    /// clock-skew margin.
    own_watermark_ms: AtomicI64,
    /// This process's random id, written into every cache it issues.
    issuer: u64,
}

#[derive(Debug, Default)]
struct Entries {
    sessions: HashMap<String, (u64, DateTime<Utc>)>,
    users: HashMap<String, (DateTime<Utc>, DateTime<Utc>)>,
    /// Insertion order with each entry's retention, for pruning from the front.
    order: VecDeque<(DateTime<Utc>, Key)>,
}

#[derive(Debug)]
enum Key {
    Session(String),
    User(String),
}

impl RevocationSet {
    /// A set whose entries live `retention` (the longest a cache can be believed).
    pub(crate) fn new(retention: Duration, capacity: usize) -> Self {
        Self {
            retention,
            capacity,
            entries: RwLock::default(),
            len: AtomicUsize::new(0),
            watermark_ms: AtomicI64::new(i64::MIN),
            own_watermark_ms: AtomicI64::new(i64::MIN),
            issuer: {
                let mut bytes = [0u8; 8];
                crate::token::random_bytes(&mut bytes);
                u64::from_le_bytes(bytes)
            },
        }
    }

    /// The id this process stamps its caches with.
    pub(crate) fn issuer(&self) -> u64 {
        self.issuer
    }

    /// Whether nothing here refuses `cached`.
    pub(crate) fn allows<'a>(&self, cached: impl Into<Judged<'a>>) -> bool {
        let cached = cached.into();
        let watermark = if cached.issuer == self.issuer {
            &self.own_watermark_ms
        } else {
            &self.watermark_ms
        };
        if cached.issued_at_ms <= watermark.load(Ordering::Acquire) {
            return false;
        }
        if self.len.load(Ordering::Acquire) == 0 {
            return true;
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let session_refused = entries
            .sessions
            .get(cached.session_id)
            .is_some_and(|&(below, _)| cached.generation < below);
        // Session times are whole milliseconds, so comparing with the floor is exact.
        let user_refused = entries
            .users
            .get(cached.user_id)
            .is_some_and(|&(up_to, _)| cached.created_at_ms <= up_to.timestamp_millis());
        !(session_refused || user_refused)
    }

    /// Records revocations learnt at `now`.
    pub(crate) fn apply(
        &self,
        revocations: impl IntoIterator<Item = CacheRevocation>,
        now: DateTime<Utc>,
    ) {
        let revocations: Vec<CacheRevocation> = revocations.into_iter().collect();
        if revocations.is_empty() {
            return;
        }
        let retain_until = now + self.retention;
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.prune(now);
        if entries.len() + revocations.len() > self.capacity {
            // Forgetting is not allowed; distrusting every older cache is.
            tracing::warn!(
                capacity = self.capacity,
                "cookie cache revocation set is full; caches issued until now fall back to the store"
            );
            *entries = Entries::default();
            self.len.store(0, Ordering::Release);
            // Other instances stamp their caches with their own clocks.
            self.distrust_issued_until(now + INSTANCE_CLOCK_SKEW, now);
            return;
        }
        for revocation in revocations {
            match revocation {
                CacheRevocation::Session {
                    session_id,
                    below_generation,
                } => {
                    let entry = entries
                        .sessions
                        .entry(session_id.clone())
                        .or_insert((0, retain_until));
                    *entry = (entry.0.max(below_generation), retain_until);
                    entries
                        .order
                        .push_back((retain_until, Key::Session(session_id)));
                }
                CacheRevocation::User {
                    user_id,
                    created_up_to,
                } => {
                    let entry = entries
                        .users
                        .entry(user_id.clone())
                        .or_insert((created_up_to, retain_until));
                    *entry = (entry.0.max(created_up_to), retain_until);
                    entries.order.push_back((retain_until, Key::User(user_id)));
                }
            }
        }
        self.len.store(entries.len(), Ordering::Release);
    }

    /// How long an entry is kept: the longest a cache issued before it can be believed.
    #[cfg(feature = "redis")]
    pub(crate) fn retention(&self) -> Duration {
        self.retention
    }

    /// From now on refuses every cache another instance issued at or before `others`,
    /// and every cache this process issued at or before `own`.
    pub(crate) fn distrust_issued_until(&self, others: DateTime<Utc>, own: DateTime<Utc>) {
        self.watermark_ms
            .fetch_max(others.timestamp_millis(), Ordering::AcqRel);
        self.own_watermark_ms
            .fetch_max(own.timestamp_millis(), Ordering::AcqRel);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }
}

impl Entries {
    fn len(&self) -> usize {
        self.sessions.len() + self.users.len()
    }

    /// Drops entries whose retention has passed. A key revoked again later keeps its
    /// newer retention, so only the map entry whose own time is up is removed.
    fn prune(&mut self, now: DateTime<Utc>) {
        while let Some((retain_until, _)) = self.order.front() {
            if *retain_until > now {
                break;
            }
            let Some((_, key)) = self.order.pop_front() else {
                break;
            };
            match key {
                Key::Session(id) => {
                    if self.sessions.get(&id).is_some_and(|e| e.1 <= now) {
                        self.sessions.remove(&id);
                    }
                }
                Key::User(id) => {
                    if self.users.get(&id).is_some_and(|e| e.1 <= now) {
                        self.users.remove(&id);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cookie_cache::payload::tests::typical;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_790_000_000_000).unwrap()
    }

    fn set(capacity: usize) -> RevocationSet {
        RevocationSet::new(Duration::seconds(360), capacity)
    }

    fn gone(id: &str) -> CacheRevocation {
        CacheRevocation::Session {
            session_id: id.into(),
            below_generation: u64::MAX,
        }
    }

    #[test]
    fn after_regaining_trust_own_caches_need_no_skew_margin() {
        let set = set(10);
        let regained = now();
        set.distrust_issued_until(regained + INSTANCE_CLOCK_SKEW, regained);
        let mut own = typical(regained + Duration::milliseconds(1));
        own.issuer = set.issuer();
        assert!(
            set.allows(&own),
            "issued by this process after it regained trust"
        );
        let mut own_before = typical(regained);
        own_before.issuer = set.issuer();
        assert!(!set.allows(&own_before), "issued while trust was lapsing");
        let mut foreign = own.clone();
        foreign.issuer = set.issuer().wrapping_add(1);
        assert!(
            !set.allows(&foreign),
            "another instance's clock may run ahead"
        );
        let mut foreign_later = typical(regained + INSTANCE_CLOCK_SKEW + Duration::milliseconds(1));
        foreign_later.issuer = foreign.issuer;
        assert!(set.allows(&foreign_later));
    }

    #[test]
    fn a_revoked_session_is_refused_and_others_are_not() {
        let set = set(10);
        let cached = typical(now());
        assert!(set.allows(&cached));
        set.apply([gone("someone else")], now());
        assert!(set.allows(&cached));
        set.apply([gone(&cached.session.id)], now());
        assert!(!set.allows(&cached));
    }

    #[test]
    fn rotation_refuses_only_older_generations() {
        let set = set(10);
        let mut cached = typical(now());
        set.apply(
            [CacheRevocation::Session {
                session_id: cached.session.id.clone(),
                below_generation: cached.session.generation + 1,
            }],
            now(),
        );
        assert!(!set.allows(&cached));
        cached.session.generation += 1;
        assert!(set.allows(&cached));
    }

    #[test]
    fn revoke_all_refuses_sessions_created_up_to_the_cutoff() {
        let set = set(10);
        let cached = typical(now());
        let mut sessions: Vec<Session> = (0..20)
            .map(|i| {
                let mut s = cached.session.clone();
                s.id = format!("s{i}");
                s
            })
            .collect();
        sessions[0] = cached.session.clone();
        let revocations = CacheRevocation::for_deleted(&sessions);
        assert_eq!(revocations.len(), 1, "compacted to one per-user entry");
        set.apply(revocations, now());
        assert!(!set.allows(&cached));
        let mut newer = cached.clone();
        newer.session.created_at += Duration::milliseconds(1);
        assert!(set.allows(&newer));
        let mut other_user = cached;
        other_user.session.user_id = "bob".into();
        assert!(set.allows(&other_user));
    }

    #[test]
    fn entries_expire_after_their_retention_only() {
        let set = set(10);
        set.apply([gone("a")], now());
        set.apply([gone("b")], now() + Duration::seconds(300));
        // "a" revoked again later: the first expiry must not drop it.
        set.apply([gone("a")], now() + Duration::seconds(300));
        set.apply([gone("c")], now() + Duration::seconds(400));
        assert_eq!(set.len(), 3);
        let mut cached = typical(now());
        cached.session.id = "a".into();
        assert!(!set.allows(&cached));
        set.apply([gone("d")], now() + Duration::seconds(700));
        assert_eq!(set.len(), 2, "a and b dropped after 360 s, c and d kept");
    }

    #[test]
    fn overflow_distrusts_every_older_cache_instead_of_forgetting() {
        let set = set(3);
        let older = typical(now() - Duration::seconds(10));
        let mut unrelated = older.clone();
        unrelated.session.id = "never revoked".into();
        for id in ["a", "b", "c"] {
            set.apply([gone(id)], now());
        }
        set.apply([gone(&older.session.id)], now());
        assert_eq!(set.len(), 0);
        assert!(
            !set.allows(&older),
            "the revocation that did not fit still holds"
        );
        assert!(!set.allows(&unrelated), "older caches are all distrusted");
        let newer = typical(now() + INSTANCE_CLOCK_SKEW + Duration::milliseconds(1));
        assert!(
            set.allows(&newer),
            "caches issued after the overflow (and the skew allowance) are fine"
        );
    }
}
