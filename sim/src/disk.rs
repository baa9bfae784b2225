//! A simulated node's disk: the records its engine asked to persist, how
//! many of them are synced, and what a crash does to the rest.
//!
//! Owns: the driver's side of the durability contract
//! (`ctx_core::record`). The simulated driver writes every record the
//! engine emits at once, and syncs before anything leaves the node: before
//! the messages an input produced are sent, and before a command (a call,
//! an invite, a leave, ...) is answered. A compaction (dropping what a
//! `Deleted` or a `CheckpointEnd` supersedes) is synced with the record
//! that allows it. So a record not yet synced has revealed nothing, to
//! another member or to a caller.
//!
//! Faults (the scenario's `[disk]` table, drawn by the world at a crash):
//! the records not yet synced may be lost, a random suffix of them, and the
//! first lost one may be left torn, cut short. The engine reads the disk
//! back sealed (`Record::seal`, a checksum per record), so a torn record is
//! found and skipped at restore, and the driver then cuts it off.
//!
//! Invariants: `synced <= records.len()`; only the last record may be torn,
//! and only between a crash and the restart after it.

use ctx_core::record::Record;

/// The disk faults a crash may bring (the scenario's `[disk]` table).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Faults {
    /// The chance, at a crash that finds records not yet synced, that some
    /// of them are lost (a random suffix, at least one), in `[0, 1]`.
    pub lose_unsynced: f64,
    /// The chance, when a crash loses records, that the first lost one is
    /// left on the disk torn (cut short), in `[0, 1]`.
    pub tear: f64,
}

impl Faults {
    pub fn any(&self) -> bool {
        self.lose_unsynced > 0.0
    }
}

/// One stored record: whole, or the first bytes of a torn write. (Not
/// boxed: every record is whole but at most one, and a record is as large
/// as it was when the disk held records alone.)
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
enum Stored {
    Whole(Record),
    Torn(Vec<u8>),
}

/// The records of one node, in the order they were written.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    /// Each with its write number (counting from 1).
    records: Vec<(Stored, u64)>,
    /// How many records were ever written.
    writes: u64,
    /// How many of `records`, from the first, are synced.
    synced: usize,
}

/// What a crash did to the records not yet synced, as a trace keeps it:
/// of the `unsynced` records, the first `kept` survived whole; if `torn`,
/// the next one survived as its first `torn` bytes; the rest are lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskLoss {
    pub kept: u32,
    pub torn: Option<u32>,
}

impl Disk {
    /// Writes one record (not yet synced), after the compaction it allows.
    pub fn write(&mut self, record: Record) {
        let compacted = match &record {
            Record::Deleted { context, .. } => {
                self.retain(|r| r.context() != *context);
                true
            }
            // The disk drops what a whole checkpoint supersedes, as
            // ctx-node's store does.
            Record::CheckpointEnd { context, height } => {
                self.retain(|r| !r.superseded_by(*context, *height));
                true
            }
            _ => false,
        };
        self.writes += 1;
        self.records.push((Stored::Whole(record), self.writes));
        if compacted {
            self.sync();
        }
    }

    fn retain(&mut self, keep: impl Fn(&Record) -> bool) {
        debug_assert!(
            self.torn().is_none(),
            "written to before the torn tail was cut"
        );
        self.records.retain(|(stored, _)| match stored {
            Stored::Whole(record) => keep(record),
            Stored::Torn(_) => true,
        });
        self.synced = self.synced.min(self.records.len());
    }

    /// Makes every record written so far durable.
    pub fn sync(&mut self) {
        self.synced = self.records.len();
    }

    /// How many records were ever written (the number of the last).
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// How many records are written but not synced.
    pub fn unsynced(&self) -> usize {
        self.records.len() - self.synced
    }

    /// The encoded length of the first record not synced, if any (how
    /// many bytes a torn write of it may keep, fewer than that).
    pub fn first_unsynced_len(&self) -> Option<usize> {
        match &self.records.get(self.synced)?.0 {
            Stored::Whole(record) => Some(record.seal().len()),
            Stored::Torn(bytes) => Some(bytes.len()),
        }
    }

    /// A crash: applies `loss` to the records not synced, and returns the
    /// records lost (a torn one included: it will not be read back), each
    /// with its write number.
    pub fn crash(&mut self, loss: DiskLoss) -> Vec<(Record, u64)> {
        let kept = self.synced + (loss.kept as usize).min(self.unsynced());
        let lost = self.records.split_off(kept);
        if let (Some(bytes), Some((Stored::Whole(first), number))) = (loss.torn, lost.first()) {
            let mut sealed = first.seal();
            sealed.truncate((bytes as usize).min(sealed.len().saturating_sub(1)));
            self.records.push((Stored::Torn(sealed), *number));
        }
        self.synced = self.records.len();
        lost.into_iter()
            .filter_map(|(stored, number)| match stored {
                Stored::Whole(record) => Some((record, number)),
                Stored::Torn(_) => None,
            })
            .collect()
    }

    /// The records as the engine reads them back: sealed, each with its
    /// checksum (a torn one fails it).
    pub fn sealed(&self) -> Vec<Vec<u8>> {
        self.records
            .iter()
            .map(|(stored, _)| match stored {
                Stored::Whole(record) => record.seal(),
                Stored::Torn(bytes) => bytes.clone(),
            })
            .collect()
    }

    /// The torn last record, if the last crash left one.
    fn torn(&self) -> Option<&[u8]> {
        match &self.records.last()?.0 {
            Stored::Torn(bytes) => Some(bytes),
            Stored::Whole(_) => None,
        }
    }

    /// After a restore: the driver cuts off the torn record the engine
    /// skipped, so the next write does not follow it.
    pub fn cut_torn_tail(&mut self) {
        if self.torn().is_some() {
            self.records.pop();
            self.synced = self.synced.min(self.records.len());
        }
    }

    /// The whole records, in order.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.iter().filter_map(|(stored, _)| match stored {
            Stored::Whole(record) => Some(record),
            Stored::Torn(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctx_core::ContextId;

    fn joining(n: u8) -> Record {
        Record::Joining {
            context: ContextId([n; 32]),
            via: ctx_core::MemberId([n; 32]),
        }
    }

    #[test]
    fn a_crash_loses_only_what_was_not_synced() {
        let mut disk = Disk::default();
        disk.write(joining(1));
        disk.write(joining(2));
        disk.sync();
        disk.write(joining(3));
        disk.write(joining(4));
        disk.write(joining(5));
        assert_eq!(disk.unsynced(), 3);
        let lost = disk.crash(DiskLoss {
            kept: 1,
            torn: Some(5),
        });
        assert_eq!(lost, vec![(joining(4), 4), (joining(5), 5)]);
        let sealed = disk.sealed();
        assert_eq!(sealed.len(), 4, "two synced, one kept, one torn");
        assert_eq!(sealed[3].len(), 5);
        assert!(Record::unseal(&sealed[3]).is_err());
        assert_eq!(Record::unseal(&sealed[2]), Ok(joining(3)));
        disk.cut_torn_tail();
        assert_eq!(disk.records().count(), 3);
        assert_eq!(disk.unsynced(), 0);
    }

    #[test]
    fn a_torn_write_never_keeps_the_whole_record() {
        let mut disk = Disk::default();
        disk.write(joining(1));
        let whole = joining(1).seal().len() as u32;
        disk.crash(DiskLoss {
            kept: 0,
            torn: Some(whole + 10),
        });
        let sealed = disk.sealed();
        assert_eq!(sealed[0].len() as u32, whole - 1);
        assert!(Record::unseal(&sealed[0]).is_err());
    }
}
