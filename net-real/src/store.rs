//! The durable store: the engine's persist records and the address book, in
//! one redb database (`node.redb` in the data directory).
//!
//! Layout:
//!
//! - table `records`, key `(context id, sequence)`, value `Record::encode()`:
//!   every record the engine emitted, in emission order within a context.
//!   A `Deleted` record removes every earlier record of its context in the
//!   same write transaction, and a `CheckpointEnd` every record the whole
//!   checkpoint supersedes (the compactions `record` allows), so a context's
//!   records follow its state and its unstable tail, not its history.
//!   Order across contexts does not matter to `Node::restore`, which groups
//!   records by context.
//! - table `meta`: `schema`, the layout's version (`SCHEMA_VERSION`; a
//!   database of another version is refused, not misread), and `next_seq`,
//!   the next sequence number (never reused).
//! - table `peers`, key member id, value the address to dial it at.
//!
//! Invariant: `commit` returns only once its write transaction is durable
//! (redb's default `Durability::Immediate`: fsync'd), so a caller that sends
//! nothing before `commit` returns never reveals an unpersisted record.
//! One `commit` is one write transaction: a batch is stored whole or not at
//! all.

use std::net::SocketAddr;
use std::path::Path;

use ctx_core::{MemberId, Record};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use thiserror::Error;

const RECORDS: TableDefinition<([u8; 32], u64), &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const PEERS: TableDefinition<[u8; 32], &str> = TableDefinition::new("peers");
const NEXT_SEQ: &str = "next_seq";
const SCHEMA: &str = "schema";

/// The version of this layout, stored in `meta` when a database is made.
/// Version 2: records of `ctx_core::record::RECORD_VERSION` 2. Version 3:
/// records of version 3, and a context's `Deleted` record is kept (its
/// tombstone) while the records it supersedes are dropped. Version 4:
/// records of version 4. Version 5: records of version 5, with
/// checkpoints; a checkpoint's end drops the records it supersedes
/// (`Record::superseded_by`) in the same write transaction. Version 6:
/// records of version 6 (a tombstone keeps its height). Version 7:
/// records of version 7 (a checkpoint's vouches are kept with it).
pub const SCHEMA_VERSION: u64 = 7;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error(
        "the database's layout is version {found}; this ctx-node reads version {SCHEMA_VERSION}"
    )]
    Schema { found: u64 },
    #[error("stored record of context {context} (sequence {seq}) is damaged: {reason}")]
    Corrupt {
        context: String,
        seq: u64,
        reason: String,
    },
}

fn db_error<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// What a store held when it was opened.
pub struct Loaded {
    pub records: Vec<Record>,
    pub peers: Vec<(MemberId, SocketAddr)>,
}

pub struct Store {
    db: Database,
    next_seq: u64,
}

impl Store {
    /// Opens (or creates) the database and reads everything it holds.
    pub fn open(path: &Path) -> Result<(Store, Loaded), StoreError> {
        let db = Database::create(path).map_err(db_error)?;
        // Create the tables so that a fresh database reads as empty, and
        // stamp a fresh one with its layout's version.
        let write = db.begin_write().map_err(db_error)?;
        {
            // The version first: another layout's tables are not opened.
            let mut meta = write.open_table(META).map_err(db_error)?;
            let found = meta.get(SCHEMA).map_err(db_error)?.map(|v| v.value());
            match found {
                None => {
                    meta.insert(SCHEMA, SCHEMA_VERSION).map_err(db_error)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(found) => return Err(StoreError::Schema { found }),
            }
            write.open_table(RECORDS).map_err(db_error)?;
            write.open_table(PEERS).map_err(db_error)?;
        }
        write.commit().map_err(db_error)?;

        let read = db.begin_read().map_err(db_error)?;
        let meta = read.open_table(META).map_err(db_error)?;
        let next_seq = meta
            .get(NEXT_SEQ)
            .map_err(db_error)?
            .map_or(0, |v| v.value());
        let records_table = read.open_table(RECORDS).map_err(db_error)?;
        let mut records = Vec::new();
        for entry in records_table.iter().map_err(db_error)? {
            let (key, value) = entry.map_err(db_error)?;
            let (context, seq) = key.value();
            let record = Record::decode(value.value()).map_err(|e| StoreError::Corrupt {
                context: hex::encode(context),
                seq,
                reason: e.to_string(),
            })?;
            if record.context().0 != context {
                return Err(StoreError::Corrupt {
                    context: hex::encode(context),
                    seq,
                    reason: "stored under another context".into(),
                });
            }
            records.push(record);
        }
        let peers_table = read.open_table(PEERS).map_err(db_error)?;
        let mut peers = Vec::new();
        for entry in peers_table.iter().map_err(db_error)? {
            let (member, addr) = entry.map_err(db_error)?;
            // An unparsable address is only a lost hint: skip it.
            if let Ok(addr) = addr.value().parse() {
                peers.push((MemberId(member.value()), addr));
            }
        }
        drop((records_table, peers_table, meta, read));
        Ok((Store { db, next_seq }, Loaded { records, peers }))
    }

    /// Stores a batch of records and address-book changes in one durable
    /// write transaction.
    pub fn commit(
        &mut self,
        records: &[Record],
        peers: &[(MemberId, SocketAddr)],
    ) -> Result<(), StoreError> {
        if records.is_empty() && peers.is_empty() {
            return Ok(());
        }
        let mut next_seq = self.next_seq;
        let write = self.db.begin_write().map_err(db_error)?;
        {
            let mut table = write.open_table(RECORDS).map_err(db_error)?;
            for record in records {
                let context = record.context().0;
                match record {
                    Record::Deleted { .. } => {
                        // Drop what it supersedes; keep it (its tombstone).
                        table
                            .retain_in((context, 0)..=(context, u64::MAX), |_, _| false)
                            .map_err(db_error)?;
                    }
                    Record::CheckpointEnd {
                        context: id,
                        height,
                    } => {
                        // The checkpoint is whole (its start and entries
                        // are stored before it, in this write or an earlier
                        // one): drop what it supersedes, in the same write
                        // transaction. A record that does not decode is
                        // kept, for restore to report.
                        table
                            .retain_in((context, 0)..=(context, u64::MAX), |_, bytes| {
                                match Record::decode(bytes) {
                                    Ok(stored) => !stored.superseded_by(*id, *height),
                                    Err(_) => true,
                                }
                            })
                            .map_err(db_error)?;
                    }
                    _ => {}
                }
                let bytes = record.encode();
                table
                    .insert((context, next_seq), bytes.as_slice())
                    .map_err(db_error)?;
                next_seq += 1;
            }
            let mut meta = write.open_table(META).map_err(db_error)?;
            meta.insert(NEXT_SEQ, next_seq).map_err(db_error)?;
            let mut table = write.open_table(PEERS).map_err(db_error)?;
            for (member, addr) in peers {
                table
                    .insert(member.0, addr.to_string().as_str())
                    .map_err(db_error)?;
            }
        }
        write.commit().map_err(db_error)?;
        self.next_seq = next_seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctx_core::ContextId;

    /// The records of a checkpoint of `context` at `height`, with one entry.
    fn checkpoint_records(context: ContextId, height: u64) -> Vec<Record> {
        use ctx_core::checkpoint::{Checkpoint, CheckpointHeader, EntriesHasher};
        use ctx_core::state::State;
        let entries = vec![(ctx_core::Key([height as u8; 32]), vec![1, 2, 3])];
        let mut hasher = EntriesHasher::default();
        let mut state = State::default();
        for (key, value) in &entries {
            hasher.add(key, value);
            state.write(*key, Some(value.clone()));
        }
        let header = CheckpointHeader {
            context,
            height,
            applied: height,
            interval_min: 8,
            root: state.root(),
            entries: 1,
            entries_hash: hasher.finish(),
            membership: Vec::new(),
            stability: Vec::new(),
            heads: Vec::new(),
        };
        Record::checkpoint(&Checkpoint::new(header, entries), Vec::new())
    }

    #[test]
    fn records_survive_reopen_and_deleted_compacts() {
        let dir = std::env::temp_dir().join(format!("ctx-node-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("t.redb");
        let a = ContextId([1; 32]);
        let b = ContextId([2; 32]);
        let via = MemberId([9; 32]);
        let addr: SocketAddr = "127.0.0.1:7".parse().expect("addr");
        {
            let (mut store, loaded) = Store::open(&path).expect("open");
            assert!(loaded.records.is_empty());
            store
                .commit(
                    &[
                        Record::Joining { context: a, via },
                        Record::Joining { context: b, via },
                    ],
                    &[(via, addr)],
                )
                .expect("commit");
            let deleted = Record::Deleted {
                context: a,
                last_own: None,
            };
            store.commit(&[deleted], &[]).expect("commit");
        }
        let (mut store, loaded) = Store::open(&path).expect("reopen");
        let kept = vec![
            Record::Deleted {
                context: a,
                last_own: None,
            },
            Record::Joining { context: b, via },
        ];
        assert_eq!(loaded.records, kept);
        assert_eq!(loaded.peers, vec![(via, addr)]);

        // A whole checkpoint drops the earlier one; a newer one that is not
        // whole yet (no end) drops nothing.
        let first = checkpoint_records(b, 8);
        let second = checkpoint_records(b, 16);
        store.commit(&first, &[]).expect("commit");
        store.commit(&second, &[]).expect("commit");
        let third = checkpoint_records(b, 24);
        store
            .commit(&third[..third.len() - 1], &[])
            .expect("commit");
        drop(store);
        let (store, loaded) = Store::open(&path).expect("reopen");
        let mut expected = kept.clone();
        expected.extend(second);
        expected.extend(third[..third.len() - 1].iter().cloned());
        assert_eq!(loaded.records, expected);

        // A database of another layout is refused, and says which.
        let write = store.db.begin_write().expect("write");
        write
            .open_table(META)
            .expect("meta")
            .insert(SCHEMA, SCHEMA_VERSION + 1)
            .expect("insert");
        write.commit().expect("commit");
        drop(store);
        let error = Store::open(&path).err().expect("refused");
        assert!(matches!(error, StoreError::Schema { found } if found == SCHEMA_VERSION + 1));
        assert!(
            error
                .to_string()
                .contains(&format!("version {SCHEMA_VERSION}")),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
