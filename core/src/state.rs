//! A context's key-value state and its root.
//!
//! Owns: the map from 32-byte keys to byte values, and the state root that
//! two members compare to know they hold the same state.
//!
//! The root is a homomorphic multiset hash: each entry contributes
//! `blake3(key || value)` read as four 64-bit lanes, and the accumulator is
//! the lane-wise wrapping sum over all entries. Adding, changing or removing
//! one entry costs a hash of the new and of the old entry, never a pass over
//! the state, and the order in which entries were written does not matter.
//! The published root is `blake3(accumulator)`. It is a convergence fingerprint between cooperating
//! members, not a commitment one could prove inclusion against.
//!
//! Memory: an entry is its 32-byte key and its value, a value of up to
//! [`VALUE_INLINE_BYTES`] stored inline in the map's slot (no allocation of
//! its own); an entry's contribution to the root is recomputed when it is
//! overwritten or removed rather than kept beside it, so that a long-lived
//! member holds little more than its state's own bytes.
//!
//! Invariants:
//! - the accumulator equals the sum of the stored entry hashes (checked by
//!   [`State::check_root`], which tests and debug builds call);
//! - every write returns the undo that restores the previous value exactly,
//!   so applying a write and then its undo leaves map and root unchanged.

use foldhash::fast::FixedState;
use hashbrown::HashMap;
use smallvec::SmallVec;

use crate::ids::{Hash, Key};

/// A fixed-seed hasher: the state map must behave the same in every process.
/// Iteration order is still never observable: [`State::entries_sorted`] sorts.
pub(crate) type FixedHasher = FixedState;

pub(crate) fn fixed_hasher() -> FixedHasher {
    FixedState::with_seed(0x6374_785f_7374_6174)
}

/// Four 64-bit lanes: one entry's contribution to the root, or the sum of all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Lanes([u64; 4]);

impl Lanes {
    fn of_entry(key: &Key, value: &[u8]) -> Lanes {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&key.0);
        hasher.update(value);
        let bytes = hasher.finalize();
        let mut lanes = [0u64; 4];
        for (lane, chunk) in lanes.iter_mut().zip(bytes.as_bytes().chunks_exact(8)) {
            *lane = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
        }
        Lanes(lanes)
    }

    fn add(&mut self, other: Lanes) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.wrapping_add(b);
        }
    }

    fn sub(&mut self, other: Lanes) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.wrapping_sub(b);
        }
    }

    /// The root of a state whose entries sum to these lanes.
    fn root(self) -> Hash {
        Hash(*blake3::hash(&self.to_bytes()).as_bytes())
    }

    fn to_bytes(self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for (chunk, lane) in bytes.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&lane.to_le_bytes());
        }
        bytes
    }
}

/// Bytes of a value stored inline, in the map's slot.
pub const VALUE_INLINE_BYTES: usize = 16;

/// A stored value: inline up to [`VALUE_INLINE_BYTES`], else on the heap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredValue {
    bytes: SmallVec<[u8; VALUE_INLINE_BYTES]>,
}

impl StoredValue {
    pub(crate) fn new(bytes: Vec<u8>) -> StoredValue {
        let bytes = if bytes.len() <= VALUE_INLINE_BYTES {
            SmallVec::from_slice(&bytes)
        } else {
            SmallVec::from_vec(bytes)
        };
        StoredValue { bytes }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// What undoes one write: the key and the value it held before.
pub type UndoEntry = (Key, Option<StoredValue>);

/// The key-value state of one context.
#[derive(Clone, Debug)]
pub struct State {
    entries: HashMap<Key, StoredValue, FixedHasher>,
    accumulator: Lanes,
}

impl Default for State {
    fn default() -> Self {
        Self {
            entries: HashMap::with_hasher(fixed_hasher()),
            accumulator: Lanes::default(),
        }
    }
}

impl State {
    pub fn get(&self, key: &Key) -> Option<&[u8]> {
        self.entries.get(key).map(StoredValue::bytes)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The state root: equal on two members exactly when (up to the strength
    /// of the hash) they hold the same entries.
    pub fn root(&self) -> Hash {
        self.accumulator.root()
    }

    /// Sets (`Some`) or removes (`None`) a key; returns what undoes it.
    pub fn write(&mut self, key: Key, value: Option<Vec<u8>>) -> UndoEntry {
        let previous = self.put(key, value.map(StoredValue::new));
        (key, previous)
    }

    /// Applies writes in order; returns their undo log, to be passed to
    /// [`State::undo`] to restore the state as it was.
    pub fn apply(&mut self, writes: Vec<(Key, Option<Vec<u8>>)>) -> Vec<UndoEntry> {
        writes
            .into_iter()
            .map(|(key, value)| self.write(key, value))
            .collect()
    }

    /// Reverts an undo log produced by [`State::apply`].
    pub fn undo(&mut self, log: Vec<UndoEntry>) {
        for (key, previous) in log.into_iter().rev() {
            self.put(key, previous);
        }
    }

    fn put(&mut self, key: Key, value: Option<StoredValue>) -> Option<StoredValue> {
        let previous = match value {
            Some(value) => {
                self.accumulator.add(Lanes::of_entry(&key, value.bytes()));
                self.entries.insert(key, value)
            }
            None => self.entries.remove(&key),
        };
        if let Some(old) = &previous {
            self.accumulator.sub(Lanes::of_entry(&key, old.bytes()));
        }
        previous
    }

    /// What each key that the writes whose undo logs are `logs` (oldest
    /// first) touched held before the first of them: its oldest undo.
    fn values_before<'a>(
        logs: impl Iterator<Item = &'a [UndoEntry]>,
    ) -> HashMap<Key, Option<&'a StoredValue>, FixedHasher> {
        let mut before = HashMap::with_hasher(fixed_hasher());
        for log in logs {
            for (key, previous) in log {
                before.entry(*key).or_insert(previous.as_ref());
            }
        }
        before
    }

    /// The root this state had before the writes whose undo logs are `logs`
    /// (oldest first) were made, without changing anything: the root
    /// undoing them would give, at the cost of the logs, not of the state.
    pub fn root_before<'a>(&self, logs: impl Iterator<Item = &'a [UndoEntry]>) -> Hash {
        self.root_of(&Self::values_before(logs))
    }

    /// The root with the keys of `before` holding those values instead.
    fn root_of(&self, before: &HashMap<Key, Option<&StoredValue>, FixedHasher>) -> Hash {
        let mut accumulator = self.accumulator;
        for (key, before) in before {
            if let Some(current) = self.entries.get(key) {
                accumulator.sub(Lanes::of_entry(key, current.bytes()));
            }
            if let Some(before) = before {
                accumulator.add(Lanes::of_entry(key, before.bytes()));
            }
        }
        accumulator.root()
    }

    /// Every entry, sorted by key, and the root, as they were before the
    /// writes whose undo logs are `logs` (oldest first) were made, without
    /// changing anything: what undoing them would leave, at the cost of the
    /// logs and one pass over the state, not of a copy of it.
    pub(crate) fn entries_sorted_and_root_before<'a>(
        &self,
        logs: impl Iterator<Item = &'a [UndoEntry]>,
    ) -> (Vec<(Key, StoredValue)>, Hash) {
        let before = Self::values_before(logs);
        let root = self.root_of(&before);
        // Sized once: a checkpoint keeps this vector for a long time.
        let mut entries = Vec::with_capacity(self.entries.len() + before.len());
        entries.extend(
            self.entries
                .iter()
                .filter(|(key, _)| !before.contains_key(*key))
                .map(|(key, value)| (*key, value.clone())),
        );
        entries.extend(
            before
                .into_iter()
                .filter_map(|(key, value)| Some((key, value?.clone()))),
        );
        entries.sort_unstable_by_key(|(key, _)| *key);
        (entries, root)
    }

    /// Every entry, sorted by key.
    pub fn entries_sorted(&self) -> Vec<(Key, &[u8])> {
        let mut entries: Vec<(Key, &[u8])> =
            self.entries.iter().map(|(k, v)| (*k, v.bytes())).collect();
        entries.sort_unstable_by_key(|(k, _)| *k);
        entries
    }

    /// Recomputes the root from scratch and asserts it matches the
    /// incrementally kept one. Costs a pass over the state: for tests and
    /// debug assertions only.
    pub fn check_root(&self) {
        let mut sum = Lanes::default();
        for (key, value) in &self.entries {
            sum.add(Lanes::of_entry(key, value.bytes()));
        }
        assert_eq!(sum, self.accumulator, "state root accumulator drifted");
    }

    /// A hash of the hasher's fixed state, to show in tests that it is fixed.
    #[cfg(test)]
    fn hasher_probe(&self) -> u64 {
        use std::hash::BuildHasher;
        self.entries.hasher().hash_one(Key([1; 32]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> Key {
        Key([b; 32])
    }

    #[test]
    fn root_depends_on_contents_not_write_order() {
        let mut a = State::default();
        a.write(k(1), Some(b"one".to_vec()));
        a.write(k(2), Some(b"two".to_vec()));
        let mut b = State::default();
        b.write(k(2), Some(b"two".to_vec()));
        b.write(k(3), Some(b"three".to_vec()));
        b.write(k(1), Some(b"uno".to_vec()));
        b.write(k(1), Some(b"one".to_vec()));
        b.write(k(3), None);
        assert_eq!(a.root(), b.root());
        a.check_root();
        b.check_root();
        b.write(k(2), Some(b"TWO".to_vec()));
        assert_ne!(a.root(), b.root());
        assert_eq!(State::default().root(), State::default().root());
    }

    #[test]
    fn undo_restores_map_and_root_exactly() {
        let mut state = State::default();
        state.write(k(1), Some(b"one".to_vec()));
        state.write(k(2), Some(b"two".to_vec()));
        let before_root = state.root();
        let before = state
            .entries_sorted()
            .iter()
            .map(|(k, v)| (*k, v.to_vec()))
            .collect::<Vec<_>>();
        let undo = state.apply(vec![
            (k(1), None),
            (k(2), Some(b"deux".to_vec())),
            (k(3), Some(b"trois".to_vec())),
            (k(3), Some(b"tres".to_vec())),
        ]);
        assert_ne!(state.root(), before_root);
        state.undo(undo);
        state.check_root();
        assert_eq!(state.root(), before_root);
        let after = state
            .entries_sorted()
            .iter()
            .map(|(k, v)| (*k, v.to_vec()))
            .collect::<Vec<_>>();
        assert_eq!(after, before);
    }

    #[test]
    fn short_values_are_inline_and_long_ones_kept_whole() {
        let mut state = State::default();
        let long = vec![7u8; VALUE_INLINE_BYTES + 1];
        state.write(k(1), Some(vec![1; VALUE_INLINE_BYTES]));
        state.write(k(2), Some(long.clone()));
        state.write(k(3), Some(Vec::new()));
        assert!(!state.entries[&k(1)].bytes.spilled());
        assert!(state.entries[&k(2)].bytes.spilled());
        assert_eq!(state.get(&k(1)), Some(&[1; VALUE_INLINE_BYTES][..]));
        assert_eq!(state.get(&k(2)), Some(&long[..]));
        assert_eq!(state.get(&k(3)), Some(&[][..]));
        state.check_root();
        assert!(std::mem::size_of::<StoredValue>() <= 24);
    }

    #[test]
    fn hasher_is_fixed_across_instances() {
        assert_eq!(
            State::default().hasher_probe(),
            State::default().hasher_probe()
        );
    }
}
