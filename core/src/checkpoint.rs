//! Checkpoints: the state and membership at an agreed cut of the stable
//! prefix, what a restart loads and a new member downloads.
//!
//! Owns: the cut schedule, the checkpoint's header and its digest (what
//! members sign to vouch for a checkpoint), the entries in key order and
//! their bounded chunks, and the assembly that checks a checkpoint received
//! chunk by chunk.
//!
//! # The cut
//!
//! A checkpoint at height `H` holds the result of applying every
//! transaction of height below `H`. Once `H` is at or below a member's
//! stable frontier, that set is the same at every member
//! (`crate::stability`), so its state, membership, transaction count,
//! stability facts and heads are global facts: two honest members that
//! take a checkpoint at `H` produce the same header, byte for byte, and the
//! same digest. The cuts follow a schedule every copy computes alike: the
//! first at `interval_min`, each next one `max(interval_min, entries / 4)`
//! heights after the previous one, where `entries` is the number of state
//! entries at the previous cut. Every cut holds at least as many
//! transactions as heights, so copying the state at a cut costs at most
//! four entries per transaction since the last one: the cost follows the
//! state and what changed, not the history.
//!
//! # Trust
//!
//! The digest commits to the header, and the header commits to the
//! entries twice: `root` (the state's multiset root, `crate::state`) and
//! `entries_hash` (blake3 over the entries in key order, which, unlike the
//! multiset root, is collision resistant against a forger). A joiner that
//! assembles a checkpoint checks both against the entries it was given and
//! the digest against the ones other members signed in their announcements
//! (`crate::node::catchup`).
//!
//! Invariants (asserted): entries are sorted by key, without duplicates;
//! an assembly accepts entries only in key order, never more than the
//! header says, and finishes only when count, `entries_hash` and `root`
//! all match.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{ContextId, Hash, Key, MemberId, TxId};
use crate::limits::VALUE_BYTES_MAX;
use crate::membership::{MemberStatus, Membership};
use crate::stability::IdentityFacts;
use crate::state::{State, StoredValue};

/// The smallest distance, in heights, between two cuts.
pub const CHECKPOINT_INTERVAL_MIN: u64 = 1024;

/// About the most entry bytes in one chunk (a message or a record).
pub const CHECKPOINT_CHUNK_BYTES: usize = 256 * 1024;

/// The state entries a checkpoint may hold: more is refused as damage.
pub const CHECKPOINT_ENTRIES_MAX: u64 = 1 << 32;

/// Everything a checkpoint holds except its entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointHeader {
    pub context: ContextId,
    /// The cut: every transaction below this height, and no other.
    pub height: u64,
    /// How many transactions are below the cut (the genesis included).
    pub applied: u64,
    /// The schedule's smallest interval (so two schedules never mix).
    pub interval_min: u64,
    /// The state root at the cut.
    pub root: Hash,
    /// The state entries at the cut.
    pub entries: u64,
    /// blake3 over the entries in key order (see [`EntriesHasher`]).
    pub entries_hash: Hash,
    /// The membership at the cut, sorted.
    pub membership: Vec<(MemberId, MemberStatus)>,
    /// The stability facts the prefix gives, sorted by identity.
    pub stability: Vec<(MemberId, IdentityFacts)>,
    /// The transactions below the cut that none below it names as a parent,
    /// with their heights, sorted.
    pub heads: Vec<(TxId, u64)>,
}

impl CheckpointHeader {
    /// What members sign to vouch for this checkpoint: a blake3 hash in its
    /// own derive-key domain.
    pub fn digest(&self) -> Hash {
        let mut hasher = blake3::Hasher::new_derive_key("ctx 2026 checkpoint header");
        hasher.update(&postcard::to_stdvec(self).expect("encoding into a Vec cannot fail"));
        Hash(*hasher.finalize().as_bytes())
    }

    /// The height of the cut after this one.
    pub fn next_height(&self) -> u64 {
        next_cut(self.height, self.entries, self.interval_min)
    }

    pub fn membership(&self) -> Membership {
        let mut membership = Membership::default();
        for (member, status) in &self.membership {
            membership.set(*member, *status);
        }
        membership
    }
}

/// The cut after one at `height` whose state had `entries` entries.
pub fn next_cut(height: u64, entries: u64, interval_min: u64) -> u64 {
    assert!(interval_min > 0, "cuts are at least one height apart");
    height.saturating_add(interval_min.max(entries / 4))
}

/// A checkpoint: its header, its entries in key order, and the header's
/// digest. The entries are held as the state holds its values (short ones
/// inline), since a member keeps its latest checkpoint beside its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub header: CheckpointHeader,
    entries: Vec<(Key, StoredValue)>,
    pub digest: Hash,
}

impl Checkpoint {
    pub fn new(header: CheckpointHeader, entries: Vec<(Key, Vec<u8>)>) -> Checkpoint {
        let entries = entries
            .into_iter()
            .map(|(key, value)| (key, StoredValue::new(value)))
            .collect();
        Checkpoint::of_stored(header, entries)
    }

    /// From entries already held as state values (sorted by key).
    pub(crate) fn of_stored(
        header: CheckpointHeader,
        entries: Vec<(Key, StoredValue)>,
    ) -> Checkpoint {
        debug_assert!(
            entries.windows(2).all(|pair| pair[0].0 < pair[1].0),
            "entries are sorted by key, without duplicates"
        );
        debug_assert_eq!(entries.len() as u64, header.entries);
        let digest = header.digest();
        Checkpoint {
            header,
            entries,
            digest,
        }
    }

    /// The entries after `after` (from the first when `None`), about
    /// `bytes_max` bytes of them and at least one, and whether more follow.
    pub fn chunk(&self, after: Option<Key>, bytes_max: usize) -> (Vec<(Key, Vec<u8>)>, bool) {
        let start = after.map_or(0, |key| self.entries.partition_point(|(k, _)| *k <= key));
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for (key, value) in &self.entries[start..] {
            let size = 40 + value.bytes().len();
            if !chunk.is_empty() && bytes + size > bytes_max {
                return (chunk, true);
            }
            bytes += size;
            chunk.push((*key, value.bytes().to_vec()));
        }
        (chunk, false)
    }

    /// The state the entries make.
    pub fn state(&self) -> State {
        let mut state = State::default();
        for (key, value) in &self.entries {
            state.write(*key, Some(value.bytes().to_vec()));
        }
        state
    }
}

/// The entries hash: blake3 over each entry, in key order, as its key, its
/// value's length (8 bytes, little-endian) and its value.
#[derive(Default)]
pub struct EntriesHasher(blake3::Hasher);

impl EntriesHasher {
    pub fn add(&mut self, key: &Key, value: &[u8]) {
        self.0.update(&key.0);
        self.0.update(&(value.len() as u64).to_le_bytes());
        self.0.update(value);
    }

    pub fn finish(&self) -> Hash {
        Hash(*self.0.finalize().as_bytes())
    }
}

/// Why a checkpoint received in chunks (or read back from records) was
/// refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CheckpointError {
    #[error("entry {key:?} is not after the previous one: entries come in key order")]
    OutOfOrder { key: Key },
    #[error("the checkpoint has {claimed} entries and more than that were given")]
    TooManyEntries { claimed: u64 },
    #[error("value of {0} bytes exceeds the limit of {VALUE_BYTES_MAX}")]
    ValueTooLarge(usize),
    #[error("the checkpoint has {claimed} entries, {given} were given")]
    Incomplete { claimed: u64, given: u64 },
    #[error("the entries do not match the header's entries hash")]
    EntriesHash,
    #[error("the entries do not match the header's state root")]
    Root,
    #[error("the header claims {0} entries, more than a checkpoint may hold")]
    Oversized(u64),
}

/// A checkpoint being received chunk by chunk: each chunk is checked as it
/// comes, and the whole when it is complete.
#[derive(Debug)]
pub struct Assembly {
    header: CheckpointHeader,
    entries: Vec<(Key, Vec<u8>)>,
    hasher: EntriesHasherState,
}

/// The hasher is not `Debug`; this wraps it.
struct EntriesHasherState(EntriesHasher);

impl std::fmt::Debug for EntriesHasherState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EntriesHasher")
    }
}

impl Assembly {
    pub fn new(header: CheckpointHeader) -> Result<Assembly, CheckpointError> {
        if header.entries > CHECKPOINT_ENTRIES_MAX {
            return Err(CheckpointError::Oversized(header.entries));
        }
        Ok(Assembly {
            header,
            entries: Vec::new(),
            hasher: EntriesHasherState(EntriesHasher::default()),
        })
    }

    pub fn header(&self) -> &CheckpointHeader {
        &self.header
    }

    /// The last key taken: where the next chunk starts after.
    pub fn last_key(&self) -> Option<Key> {
        self.entries.last().map(|(key, _)| *key)
    }

    pub fn is_complete(&self) -> bool {
        self.entries.len() as u64 == self.header.entries
    }

    /// Takes a chunk: each entry after the last one, no more than the
    /// header claims. A refused chunk changes nothing.
    pub fn add(&mut self, chunk: Vec<(Key, Vec<u8>)>) -> Result<(), CheckpointError> {
        let mut last = self.last_key();
        for (key, value) in &chunk {
            if last.is_some_and(|last| *key <= last) {
                return Err(CheckpointError::OutOfOrder { key: *key });
            }
            if value.len() > VALUE_BYTES_MAX {
                return Err(CheckpointError::ValueTooLarge(value.len()));
            }
            last = Some(*key);
        }
        if self.entries.len() as u64 + chunk.len() as u64 > self.header.entries {
            return Err(CheckpointError::TooManyEntries {
                claimed: self.header.entries,
            });
        }
        for (key, value) in &chunk {
            self.hasher.0.add(key, value);
        }
        self.entries.extend(chunk);
        Ok(())
    }

    /// The checkpoint, once every entry is in and both hashes match.
    pub fn finish(self) -> Result<Checkpoint, CheckpointError> {
        if !self.is_complete() {
            return Err(CheckpointError::Incomplete {
                claimed: self.header.entries,
                given: self.entries.len() as u64,
            });
        }
        if self.hasher.0.finish() != self.header.entries_hash {
            return Err(CheckpointError::EntriesHash);
        }
        let checkpoint = Checkpoint::new(self.header, self.entries);
        if checkpoint.state().root() != checkpoint.header.root {
            return Err(CheckpointError::Root);
        }
        Ok(checkpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(n: u8) -> Vec<(Key, Vec<u8>)> {
        (0..n)
            .map(|i| (Key([i; 32]), vec![i; i as usize]))
            .collect()
    }

    fn checkpoint_of(entries: Vec<(Key, Vec<u8>)>) -> Checkpoint {
        let mut hasher = EntriesHasher::default();
        let mut state = State::default();
        for (key, value) in &entries {
            hasher.add(key, value);
            state.write(*key, Some(value.clone()));
        }
        Checkpoint::new(
            CheckpointHeader {
                context: ContextId([1; 32]),
                height: 1024,
                applied: 2000,
                interval_min: CHECKPOINT_INTERVAL_MIN,
                root: state.root(),
                entries: entries.len() as u64,
                entries_hash: hasher.finish(),
                membership: Vec::new(),
                stability: Vec::new(),
                heads: Vec::new(),
            },
            entries,
        )
    }

    #[test]
    fn chunks_reassemble_into_the_checkpoint() {
        let checkpoint = checkpoint_of(entries(60));
        let mut assembly = Assembly::new(checkpoint.header.clone()).unwrap();
        let mut after = None;
        loop {
            let (chunk, more) = checkpoint.chunk(after, 300);
            assert!(!chunk.is_empty());
            assembly.add(chunk).unwrap();
            after = assembly.last_key();
            if !more {
                break;
            }
        }
        assert_eq!(assembly.finish().unwrap(), checkpoint);
    }

    #[test]
    fn an_assembly_refuses_disorder_excess_and_forgery() {
        let checkpoint = checkpoint_of(entries(10));
        let header = checkpoint.header.clone();
        let all = checkpoint.chunk(None, usize::MAX).0;
        let mut assembly = Assembly::new(header.clone()).unwrap();
        assembly.add(all[..5].to_vec()).unwrap();
        assert_eq!(
            assembly.add(all[3..4].to_vec()),
            Err(CheckpointError::OutOfOrder { key: all[3].0 })
        );
        let mut extra = all[5..].to_vec();
        extra.push((Key([200; 32]), vec![1]));
        assert!(matches!(
            assembly.add(extra),
            Err(CheckpointError::TooManyEntries { .. })
        ));
        assert!(matches!(
            Assembly::new(header.clone()).unwrap().finish(),
            Err(CheckpointError::Incomplete { .. })
        ));
        // One value changed: the entries hash no longer matches.
        let mut forged = all.clone();
        forged[2].1 = b"forged".to_vec();
        let mut assembly = Assembly::new(header.clone()).unwrap();
        assembly.add(forged.clone()).unwrap();
        assert_eq!(assembly.finish(), Err(CheckpointError::EntriesHash));
        // A forger who fixes the entries hash still misses the root.
        let mut lying = checkpoint_of(forged).header;
        lying.root = header.root;
        let mut assembly = Assembly::new(lying).unwrap();
        let mut forged = all.clone();
        forged[2].1 = b"forged".to_vec();
        assembly.add(forged).unwrap();
        assert_eq!(assembly.finish(), Err(CheckpointError::Root));
    }

    #[test]
    fn the_schedule_follows_the_state() {
        assert_eq!(next_cut(0, 0, 1024), 1024);
        assert_eq!(next_cut(1024, 100_000, 1024), 1024 + 25_000);
        assert_eq!(next_cut(u64::MAX - 1, 0, 1024), u64::MAX);
    }
}
