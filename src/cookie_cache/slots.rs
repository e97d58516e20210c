//! The revocation set's table: fixed-size slots keyed by a 64-bit fingerprint, with a
//! hard ceiling on memory.
//!
//! A general-purpose map does not give that ceiling: under steady churn (an entry in, the
//! oldest out) hashbrown leaves tombstones and, once more than half full, doubles instead
//! of cleaning them — measured at 3.1 M entries it held 2²² buckets and could go to 2²³.
//! This table is linear probing with backward-shift deletion (no tombstones), indexed by
//! multiplying the fingerprint into the table length (so the length need not be a power
//! of two), and grows by doubling only up to `⌈4/3 × capacity⌉` slots: the load stays at
//! or below 3/4 and memory at or below 32 bytes per entry of capacity.

/// One entry. `fingerprint == 0` marks an empty slot (fingerprints are never 0).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Slot {
    pub(crate) fingerprint: u64,
    /// What the entry refuses (the revocation set gives it its meaning).
    pub(crate) value: i64,
    /// When the entry may go, in the revocation set's seconds.
    pub(crate) until_s: u32,
}

/// Bytes one slot takes.
#[cfg(test)]
pub(crate) const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

#[derive(Debug)]
pub(crate) struct SlotTable {
    slots: Vec<Slot>,
    occupied: usize,
    /// The most slots it may grow to.
    max_slots: usize,
}

/// The first allocation, so a quiet set stays small.
const INITIAL_SLOTS: usize = 64;

impl SlotTable {
    /// A table for at most `capacity` entries at once.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            slots: Vec::new(),
            occupied: 0,
            max_slots: capacity.saturating_mul(4).div_ceil(3).saturating_add(1),
        }
    }

    /// The most slots a table for `capacity` entries ever allocates.
    #[cfg(test)]
    pub(crate) fn max_slots(capacity: usize) -> usize {
        Self::new(capacity).max_slots
    }

    pub(crate) fn len(&self) -> usize {
        self.occupied
    }

    /// Slots allocated now.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.slots.capacity()
    }

    fn home(&self, fingerprint: u64) -> usize {
        ((u128::from(fingerprint) * self.slots.len() as u128) >> 64) as usize
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }

    fn position(&self, fingerprint: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mut i = self.home(fingerprint);
        loop {
            match self.slots[i].fingerprint {
                0 => return None,
                f if f == fingerprint => return Some(i),
                _ => i = self.next(i),
            }
        }
    }

    pub(crate) fn get(&self, fingerprint: u64) -> Option<&Slot> {
        self.position(fingerprint).map(|i| &self.slots[i])
    }

    /// The slot for `fingerprint`, made (from `fresh`) if absent. The caller keeps the
    /// number of entries within the capacity the table was made for.
    pub(crate) fn entry(&mut self, fingerprint: u64, fresh: Slot) -> &mut Slot {
        debug_assert_ne!(fingerprint, 0);
        if let Some(i) = self.position(fingerprint) {
            return &mut self.slots[i];
        }
        if (self.occupied + 1) * 4 > self.slots.len() * 3 && self.slots.len() < self.max_slots {
            self.grow();
        }
        let mut i = self.home(fingerprint);
        while self.slots[i].fingerprint != 0 {
            i = self.next(i);
        }
        self.slots[i] = Slot {
            fingerprint,
            ..fresh
        };
        self.occupied += 1;
        &mut self.slots[i]
    }

    fn grow(&mut self) {
        let len = (self.slots.len() * 2)
            .max(INITIAL_SLOTS)
            .min(self.max_slots);
        let mut slots = Vec::new();
        slots.reserve_exact(len);
        slots.resize(len, Slot::default());
        let old = std::mem::replace(&mut self.slots, slots);
        for slot in old.into_iter().filter(|s| s.fingerprint != 0) {
            let mut i = self.home(slot.fingerprint);
            while self.slots[i].fingerprint != 0 {
                i = self.next(i);
            }
            self.slots[i] = slot;
        }
    }

    /// Removes `fingerprint`'s slot, shifting back the ones that probed past it, so a
    /// lookup never needs tombstones.
    pub(crate) fn remove(&mut self, fingerprint: u64) {
        let Some(mut hole) = self.position(fingerprint) else {
            return;
        };
        let len = self.slots.len();
        let mut j = hole;
        loop {
            j = self.next(j);
            let here = self.slots[j];
            if here.fingerprint == 0 {
                break;
            }
            // `here` may fill the hole unless its home lies cyclically in (hole, j].
            let home = self.home(here.fingerprint);
            let distance = |from: usize, to: usize| (to + len - from) % len;
            if distance(home, j) >= distance(hole, j) {
                self.slots[hole] = here;
                hole = j;
            }
        }
        self.slots[hole] = Slot::default();
        self.occupied -= 1;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Against a `HashMap` under random inserts and removes, clustered on purpose (few
    /// distinct high bits), through every growth step and at full load.
    #[test]
    fn behaves_like_a_map_through_growth_and_churn() {
        let capacity = 3_000;
        let mut table = SlotTable::new(capacity);
        let mut reference: HashMap<u64, i64> = HashMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200_000 {
            let fingerprint = (next() % 5_000 + 1) << 50 | 1;
            if reference.len() < capacity && next() % 3 != 0 {
                let slot = table.entry(fingerprint, Slot::default());
                slot.value = round;
                reference.insert(fingerprint, round);
            } else {
                table.remove(fingerprint);
                reference.remove(&fingerprint);
            }
            assert_eq!(table.len(), reference.len());
        }
        for (fingerprint, value) in &reference {
            assert_eq!(table.get(*fingerprint).map(|s| s.value), Some(*value));
        }
        assert!(table.allocated() <= SlotTable::max_slots(capacity));
        assert!(table.get(12345).is_none());
    }
}
