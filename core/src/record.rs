//! Persist records: what a driver must store durably, and what rebuilds a node.
//!
//! The durability contract: the driver drains every record the engine emits
//! (`Node::poll_persist`) and makes it durable *before* it sends any message
//! drained after it. The engine emits a record for every transaction it
//! accepts before it emits anything that reveals the acceptance (a push to
//! other members, an answer to a sync), so a crash never un-accepts what
//! another member may have seen. A node restored from the records, in order,
//! reaches the same state root it had.
//!
//! Records are keyed by context, so a driver may store them per context and
//! drop a context's records once it sees `Deleted` for it.

use serde::{Deserialize, Serialize};

use crate::checkpoint::{CHECKPOINT_CHUNK_BYTES, Checkpoint, CheckpointHeader};
use crate::ids::{ContextId, Key, MemberId};
use crate::stability::SignedAnnouncement;
use crate::tx::{OrderKey, SignedTx};
use crate::wire::{WireError, decode_versioned};

/// The format version of stored records. Version 2 held transactions of
/// format 2 (`crate::tx::TX_FORMAT_VERSION`); version 3 keeps a tombstone
/// in `Deleted`; version 4 holds transactions of format 3; version 5 adds
/// checkpoints; version 6 keeps the tombstone's height; version 7 keeps a
/// checkpoint's vouches (`Record::CheckpointVouches`).
pub const RECORD_VERSION: u8 = 7;

/// The largest record: the app blob plus room for the genesis.
pub const RECORD_BYTES_MAX: usize = crate::limits::APP_BYTES_MAX + 64 * 1024;

/// The checksum a sealed record ends with: the first bytes of the blake3
/// hash of its encoding.
pub const SEAL_BYTES: usize = 8;

/// What is wrong with a stored record that does not unseal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RecordDamage {
    #[error("{len} bytes, too short to hold a checksum")]
    Short { len: usize },
    #[error("its checksum does not match its {len} bytes (a torn write or a flipped bit)")]
    Checksum { len: usize },
    #[error("its checksum matches, but it does not decode: {0}")]
    Decode(String),
}

/// One durable fact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// This node started catching up into `context` through `via`.
    Joining { context: ContextId, via: MemberId },
    /// This node holds `context`: its genesis and application blob.
    Opened {
        context: ContextId,
        genesis: SignedTx,
        app: Vec<u8>,
    },
    /// A transaction this node accepted into the context's DAG.
    Tx { context: ContextId, tx: SignedTx },
    /// This node left the context and deleted its copy: every earlier record
    /// of the context may be dropped, and this one must be kept (until a
    /// later `Deleted` of the same context). `last_own` is the tombstone:
    /// the last transaction this node made in the context, which a new copy
    /// must hold before this node makes anything in it again, so that all
    /// it ever makes there forms one chain (`crate::stability`). Its height
    /// comes with it: a copy standing on a checkpoint cut above it holds it
    /// without its body.
    Deleted {
        context: ContextId,
        last_own: Option<OrderKey>,
    },
    /// The start of a checkpoint of `context` (`crate::checkpoint`): its
    /// header. Its entries follow, then its end.
    CheckpointStart {
        context: ContextId,
        header: Box<CheckpointHeader>,
    },
    /// Entries of the checkpoint at `height`, in key order, after those of
    /// the records before.
    CheckpointEntries {
        context: ContextId,
        height: u64,
        entries: Vec<(Key, Vec<u8>)>,
    },
    /// The announcements of other members that vouch for the checkpoint at
    /// `height` (signed, checked when they were heard), written after its
    /// entries and before its end: a restarted node can offer the
    /// checkpoint it stands on again, even if none of them is ever heard
    /// from again (a member gone for good) and the bodies below the cut are
    /// gone.
    CheckpointVouches {
        context: ContextId,
        height: u64,
        vouches: Vec<SignedAnnouncement>,
    },
    /// The checkpoint at `height` is whole. From here on, every `Tx` record
    /// of the context of a height below `height`, and every earlier
    /// checkpoint's records, are superseded: a driver may drop them. A
    /// checkpoint without its end is ignored at restore (a crash while it
    /// was written), and nothing it would supersede was dropped.
    CheckpointEnd { context: ContextId, height: u64 },
}

impl Record {
    pub fn context(&self) -> ContextId {
        match self {
            Record::Joining { context, .. }
            | Record::Opened { context, .. }
            | Record::Tx { context, .. }
            | Record::Deleted { context, .. }
            | Record::CheckpointStart { context, .. }
            | Record::CheckpointEntries { context, .. }
            | Record::CheckpointVouches { context, .. }
            | Record::CheckpointEnd { context, .. } => *context,
        }
    }

    /// The records that store `checkpoint`: its start, its entries in
    /// chunks of about `CHECKPOINT_CHUNK_BYTES`, the `vouches` for it, and
    /// its end.
    pub fn checkpoint(checkpoint: &Checkpoint, vouches: Vec<SignedAnnouncement>) -> Vec<Record> {
        let header = &checkpoint.header;
        let (context, height) = (header.context, header.height);
        let mut records = vec![Record::CheckpointStart {
            context,
            header: Box::new(header.clone()),
        }];
        let mut after = None;
        let mut more = header.entries > 0;
        while more {
            let (entries, rest) = checkpoint.chunk(after, CHECKPOINT_CHUNK_BYTES);
            after = entries.last().map(|(key, _)| *key);
            more = rest;
            records.push(Record::CheckpointEntries {
                context,
                height,
                entries,
            });
        }
        records.push(Record::CheckpointVouches {
            context,
            height,
            vouches,
        });
        records.push(Record::CheckpointEnd { context, height });
        records
    }

    /// Whether a driver may drop this record once the checkpoint of
    /// `context` at `height` is whole (`Record::CheckpointEnd`).
    pub fn superseded_by(&self, context: ContextId, height: u64) -> bool {
        if self.context() != context {
            return false;
        }
        match self {
            Record::Tx { tx, .. } => tx.body.height < height,
            Record::CheckpointStart { header, .. } => header.height < height,
            Record::CheckpointEntries { height: h, .. }
            | Record::CheckpointVouches { height: h, .. }
            | Record::CheckpointEnd { height: h, .. } => *h < height,
            Record::Joining { .. } | Record::Opened { .. } | Record::Deleted { .. } => false,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(&(RECORD_VERSION, self)).expect("encoding into a Vec cannot fail")
    }

    /// Decodes a stored record, refusing other versions and damaged bytes.
    pub fn decode(bytes: &[u8]) -> Result<Record, WireError> {
        let (_, record): (u8, Record) = decode_versioned(bytes, RECORD_BYTES_MAX, RECORD_VERSION)?;
        Ok(record)
    }

    /// The record as a driver stores it: its encoding, then a checksum of
    /// that ([`SEAL_BYTES`]), so that a write torn by a crash, or a bit
    /// flipped at rest, is found when the record is read back
    /// ([`Record::unseal`]) instead of being trusted.
    pub fn seal(&self) -> Vec<u8> {
        let mut bytes = self.encode();
        let sum = seal_of(&bytes);
        bytes.extend_from_slice(&sum);
        bytes
    }

    /// Reads a sealed record back, checking its checksum first.
    pub fn unseal(sealed: &[u8]) -> Result<Record, RecordDamage> {
        let len = sealed.len();
        let Some(at) = len.checked_sub(SEAL_BYTES) else {
            return Err(RecordDamage::Short { len });
        };
        let (bytes, sum) = sealed.split_at(at);
        if seal_of(bytes) != sum {
            return Err(RecordDamage::Checksum { len });
        }
        Record::decode(bytes).map_err(|e| RecordDamage::Decode(e.to_string()))
    }
}

fn seal_of(bytes: &[u8]) -> [u8; SEAL_BYTES] {
    let hash = blake3::hash(bytes);
    let mut sum = [0; SEAL_BYTES];
    sum.copy_from_slice(&hash.as_bytes()[..SEAL_BYTES]);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TxId;

    #[test]
    fn round_trip_and_refusal() {
        let record = Record::Deleted {
            context: ContextId([5; 32]),
            last_own: Some(OrderKey {
                height: 3,
                id: TxId([6; 32]),
            }),
        };
        let bytes = record.encode();
        assert_eq!(Record::decode(&bytes), Ok(record));
        let mut other = bytes.clone();
        other[0] = 9;
        assert_eq!(Record::decode(&other), Err(WireError::Version(9)));
        assert!(Record::decode(&bytes[..3]).is_err());
    }

    #[test]
    fn a_sealed_record_finds_every_torn_write_and_flipped_bit() {
        let record = Record::Deleted {
            context: ContextId([5; 32]),
            last_own: None,
        };
        let sealed = record.seal();
        assert_eq!(Record::unseal(&sealed), Ok(record));
        for len in 0..sealed.len() {
            let torn = Record::unseal(&sealed[..len]);
            assert!(torn.is_err(), "torn at {len} bytes: {torn:?}");
        }
        for bit in 0..sealed.len() * 8 {
            let mut flipped = sealed.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(Record::unseal(&flipped), Err(RecordDamage::Checksum { .. })),
                "bit {bit}"
            );
        }
        assert_eq!(
            Record::unseal(&sealed[..3]),
            Err(RecordDamage::Short { len: 3 })
        );
    }
}
