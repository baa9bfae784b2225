//! The durable store: the engine's persist records and the address book, in
//! one redb database (`node.redb` in the data directory), and the marker
//! beside the key (`node.store`) that says this identity has a store.
//!
//! Layout:
//!
//! - table `records`, key `(context id, sequence)`, value the record's
//!   bytes (`Record::encode()`) followed by its seal: 16 bytes of a blake3
//!   hash keyed by the node's secret, over the key and the bytes
//!   ([`Seal`]). A `Deleted` record removes every earlier record of its
//!   context in the same write transaction, and a `CheckpointEnd` every
//!   record the whole checkpoint supersedes (the compactions `record`
//!   allows), so a context's records follow its state and its unstable
//!   tail, not its history. Order across contexts does not matter to
//!   `Node::restore`, which groups records by context.
//! - table `meta`: `schema`, the layout's version (`SCHEMA_VERSION`; a
//!   database of another version is refused, not misread), `next_seq`, the
//!   next sequence number (never reused), and `store`, a random id drawn
//!   when the database was made.
//! - table `peers`, key member id, value the address to dial it at.
//! - the file `node.store` (`MARKER_FILE`): `ctx-node store <id>`, the id of
//!   the database this identity writes, and, once an open found the
//!   database damaged, a second line `needs-repair <reason>`.
//!
//! Invariants:
//!
//! - `commit` returns only once its write transaction is durable (redb's
//!   default `Durability::Immediate`: fsync'd), so a caller that sends
//!   nothing before `commit` returns never reveals an unpersisted record.
//!   One `commit` is one write transaction: a batch is stored whole or not
//!   at all.
//! - `open` never hands back a record it did not write, or a database that
//!   is not this identity's: every record's seal is checked (a flipped bit
//!   anywhere in its key or value fails it, and so does a record written
//!   without the node's secret), redb's page checksums are checked, and a
//!   missing, emptied or replaced database is refused while the marker
//!   says this identity had one. So a damaged store refuses to start, with
//!   one message naming the file and what is wrong, until `ctx-node
//!   repair` (`repair`) rebuilds it; it never starts as a blank node with
//!   an identity that has history, and never with changed data.
//! - The seal stands in for checking each transaction's signature again:
//!   the node checked it before storing the record, and a record that
//!   passes the seal is byte for byte what the node stored (a transaction's
//!   id is its body's hash, recomputed at restore).
//! - A panic inside redb on a damaged file (it asserts on some truncations)
//!   is caught while opening and reported as a damaged store.

use std::fs;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ctx_core::{MemberId, Record};
use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};
use thiserror::Error;

use crate::identity::{DB_FILE, Identity, random_bytes};

pub(crate) const RECORDS: TableDefinition<([u8; 32], u64), &[u8]> = TableDefinition::new("records");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const PEERS: TableDefinition<[u8; 32], &str> = TableDefinition::new("peers");
pub(crate) const NEXT_SEQ: &str = "next_seq";
pub(crate) const SCHEMA: &str = "schema";
pub(crate) const STORE_ID: &str = "store";

/// The marker beside the key: the id of this identity's database.
pub const MARKER_FILE: &str = "node.store";
const MARKER_PREFIX: &str = "ctx-node store ";
const NEEDS_REPAIR_PREFIX: &str = "needs-repair ";

/// The version of this layout, stored in `meta` when a database is made.
/// Version 2: records of `ctx_core::record::RECORD_VERSION` 2. Version 3:
/// records of version 3, and a context's `Deleted` record is kept (its
/// tombstone) while the records it supersedes are dropped. Version 4:
/// records of version 4. Version 5: records of version 5, with
/// checkpoints; a checkpoint's end drops the records it supersedes
/// (`Record::superseded_by`) in the same write transaction. Version 6:
/// records of version 6 (a tombstone keeps its height). Version 7:
/// records of version 7 (a checkpoint's vouches are kept with it).
/// Version 8: every record sealed ([`Seal`]), and the store's id in `meta`
/// and in the marker beside the key.
pub const SCHEMA_VERSION: u64 = 8;

/// Why a store cannot be used. Each message names the file and says what
/// is wrong; none repeats another error's text.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error(
        "{db} is missing, but {marker} says this node's history is stored there: \
         starting without it would lose every transaction it acknowledged. Put the \
         file back, or run `ctx-node repair --data-dir {dir}` to start over without \
         it (the node then rejoins its contexts through their members)",
        dir = dir_of(db)
    )]
    Missing { db: PathBuf, marker: PathBuf },
    #[error(
        "{db} is empty, but {marker} says this node's history is stored there: \
         the store was emptied. Restore it from a backup, or run `ctx-node repair \
         --data-dir {dir}` to start over without it",
        dir = dir_of(db)
    )]
    Emptied { db: PathBuf, marker: PathBuf },
    #[error(
        "{db} is not this node's store: it is store {found}, and {marker} says this \
         node writes store {expected} (the file was replaced). Put this node's \
         store back, or run `ctx-node repair --data-dir {dir}` to adopt it",
        dir = dir_of(db)
    )]
    NotThisNode {
        db: PathBuf,
        marker: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "{db} is corrupt: {reason}. Run `ctx-node repair --data-dir {dir}` to keep \
         what is intact (the node then fetches the rest from the other members)",
        dir = dir_of(db)
    )]
    Corrupt { db: PathBuf, reason: String },
    #[error(
        "{db} needs repair: {reason} (recorded in {marker}). Run `ctx-node repair \
         --data-dir {dir}`",
        dir = dir_of(db)
    )]
    NeedsRepair {
        db: PathBuf,
        marker: PathBuf,
        reason: String,
    },
    #[error("{db} is open in another process: is a node already running on {dir}?", dir = dir_of(db))]
    InUse { db: PathBuf },
    #[error("{db}: its layout is version {found}; this ctx-node reads version {SCHEMA_VERSION}")]
    Schema { db: PathBuf, found: u64 },
    #[error("{marker} is not a store marker (expected `{MARKER_PREFIX}<16 hex digits>`)")]
    Marker { marker: PathBuf },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{db}: {error}")]
    Db { db: PathBuf, error: redb::Error },
}

fn dir_of(db: &Path) -> String {
    db.parent()
        .map_or_else(|| ".".to_owned(), |dir| dir.display().to_string())
}

/// What a store held when it was opened.
pub struct Loaded {
    pub records: Vec<Record>,
    pub peers: Vec<(MemberId, SocketAddr)>,
}

/// The seal of a stored record: a blake3 hash keyed by a key derived from
/// the node's secret, over the record's context, sequence and bytes, cut
/// to `Seal::BYTES`. It catches a flipped bit in a key or a value, a
/// record moved to another key, and a record the node did not write.
#[derive(Clone)]
pub struct Seal {
    key: [u8; 32],
}

impl Seal {
    pub const BYTES: usize = 16;

    pub fn new(identity: &Identity) -> Seal {
        Seal {
            key: blake3::derive_key("ctx-node 2026 stored record seal", identity.secret()),
        }
    }

    fn tag(&self, context: &[u8; 32], seq: u64, bytes: &[u8]) -> [u8; Seal::BYTES] {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(context);
        hasher.update(&seq.to_le_bytes());
        hasher.update(bytes);
        let mut tag = [0; Seal::BYTES];
        tag.copy_from_slice(&hasher.finalize().as_bytes()[..Seal::BYTES]);
        tag
    }

    /// The value stored for `record` at `seq`.
    pub fn seal(&self, seq: u64, record: &Record) -> Vec<u8> {
        let mut bytes = record.encode();
        let tag = self.tag(&record.context().0, seq, &bytes);
        bytes.extend_from_slice(&tag);
        bytes
    }

    /// The record stored at `(context, seq)`, or what is wrong with it.
    pub fn unseal(&self, context: &[u8; 32], seq: u64, value: &[u8]) -> Result<Record, String> {
        let Some(at) = value.len().checked_sub(Seal::BYTES) else {
            return Err(format!("{} bytes, too short to hold a seal", value.len()));
        };
        let (bytes, tag) = value.split_at(at);
        if self.tag(context, seq, bytes) != tag {
            return Err(format!(
                "its seal does not match its key and {} bytes (a flipped bit, or a \
                 record this node did not write)",
                bytes.len()
            ));
        }
        let record = Record::decode(bytes)
            .map_err(|e| format!("its seal matches, but it does not decode: {e}"))?;
        if record.context().0 != *context {
            return Err("its seal matches, but it names another context".into());
        }
        Ok(record)
    }
}

/// One stored record that failed its checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damaged {
    pub context: [u8; 32],
    pub seq: u64,
    pub reason: String,
}

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the record of context {} at sequence {}: {}",
            hex::encode(self.context),
            self.seq,
            self.reason
        )
    }
}

/// What the marker beside the key says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Marker {
    /// No marker: this identity never opened a store (or the marker is
    /// from before schema 8).
    Absent,
    Present {
        store: u64,
        needs_repair: Option<String>,
    },
}

/// The files of one data directory's store.
#[derive(Clone, Debug)]
pub(crate) struct Paths {
    pub db: PathBuf,
    pub marker: PathBuf,
}

impl Paths {
    pub fn of(dir: &Path) -> Paths {
        Paths {
            db: dir.join(DB_FILE),
            marker: dir.join(MARKER_FILE),
        }
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |error| StoreError::Io {
            path: path.clone(),
            error,
        }
    }

    pub fn db_error<E: Into<redb::Error>>(&self, error: E) -> StoreError {
        StoreError::Db {
            db: self.db.clone(),
            error: error.into(),
        }
    }

    pub fn corrupt(&self, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            db: self.db.clone(),
            reason: reason.into(),
        }
    }

    pub fn read_marker(&self) -> Result<Marker, StoreError> {
        let text = match fs::read_to_string(&self.marker) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Marker::Absent),
            Err(e) => return Err(self.io(&self.marker)(e)),
        };
        let malformed = || StoreError::Marker {
            marker: self.marker.clone(),
        };
        let mut lines = text.lines();
        let store = lines
            .next()
            .and_then(|line| line.strip_prefix(MARKER_PREFIX))
            .filter(|id| id.len() == 16)
            .and_then(|id| u64::from_str_radix(id, 16).ok())
            .ok_or_else(malformed)?;
        let needs_repair = match lines.next() {
            None => None,
            Some(line) => Some(
                line.strip_prefix(NEEDS_REPAIR_PREFIX)
                    .ok_or_else(malformed)?
                    .to_owned(),
            ),
        };
        Ok(Marker::Present {
            store,
            needs_repair,
        })
    }

    /// Writes the marker durably: to a new file, synced, then renamed over
    /// the old one, and the directory synced.
    pub fn write_marker(&self, store: u64, needs_repair: Option<&str>) -> Result<(), StoreError> {
        let mut text = format!("{MARKER_PREFIX}{store:016x}\n");
        if let Some(reason) = needs_repair {
            // One line: the reason is ours, but keep the format whole.
            let reason = reason.replace('\n', " ");
            text.push_str(&format!("{NEEDS_REPAIR_PREFIX}{reason}\n"));
        }
        let tmp = self.marker.with_extension("store.tmp");
        let io = self.io(&self.marker);
        let mut file = fs::File::create(&tmp).map_err(&io)?;
        file.write_all(text.as_bytes()).map_err(&io)?;
        file.sync_all().map_err(&io)?;
        drop(file);
        fs::rename(&tmp, &self.marker).map_err(&io)?;
        if let Some(dir) = self.marker.parent() {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(&io)?;
        }
        Ok(())
    }
}

/// Runs `f`, turning a panic into its message, without printing it: redb
/// asserts on some damaged files, and the caller reports the damage.
pub(crate) fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

/// Opens the database file itself, refusing a damaged one: redb's errors
/// and panics, and failed page checksums (which redb repairs by going back
/// to its last consistent commit, so records may be missing: the marker
/// then says the store needs repair).
pub(crate) fn open_database(paths: &Paths) -> Result<(Database, bool), StoreError> {
    let opened = quietly(|| {
        let mut db = Database::create(&paths.db)?;
        let clean = db.check_integrity()?;
        Ok::<_, DatabaseError>((db, clean))
    });
    match opened {
        Ok(Ok(opened)) => Ok(opened),
        Ok(Err(DatabaseError::DatabaseAlreadyOpen)) => Err(StoreError::InUse {
            db: paths.db.clone(),
        }),
        // Bytes that are not a database (cut short, overwritten) read as
        // `InvalidData` or an early end; any other I/O error is the file
        // system's.
        Ok(Err(DatabaseError::Storage(redb::StorageError::Io(error))))
            if !matches!(
                error.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            Err(StoreError::Io {
                path: paths.db.clone(),
                error,
            })
        }
        Ok(Err(error)) => Err(paths.corrupt(format!("redb cannot open it ({error})"))),
        Err(panic) => Err(paths.corrupt(format!("redb cannot open it (it failed: {panic})"))),
    }
}

/// Everything a database holds, checked. Records that fail their checks
/// are returned beside the intact ones, in key order.
pub(crate) struct Contents {
    pub store: Option<u64>,
    pub schema: Option<u64>,
    pub next_seq: u64,
    /// Intact records with their keys, in key order.
    pub records: Vec<([u8; 32], u64, Record)>,
    pub damaged: Vec<Damaged>,
    pub peers: Vec<(MemberId, SocketAddr)>,
}

pub(crate) fn read_contents(
    db: &Database,
    paths: &Paths,
    seal: &Seal,
) -> Result<Contents, StoreError> {
    let read = quietly(|| -> Result<Contents, redb::Error> {
        let read = db.begin_read()?;
        let mut contents = Contents {
            store: None,
            schema: None,
            next_seq: 0,
            records: Vec::new(),
            damaged: Vec::new(),
            peers: Vec::new(),
        };
        let meta = match read.open_table(META) {
            Ok(meta) => Some(meta),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(meta) = meta {
            contents.schema = meta.get(SCHEMA)?.map(|v| v.value());
            if contents.schema != Some(SCHEMA_VERSION) {
                return Ok(contents);
            }
            contents.store = meta.get(STORE_ID)?.map(|v| v.value());
            contents.next_seq = meta.get(NEXT_SEQ)?.map_or(0, |v| v.value());
        }
        match read.open_table(RECORDS) {
            Ok(table) => {
                contents.records.reserve(table.len()? as usize);
                for entry in table.iter()? {
                    let (key, value) = entry?;
                    let (context, seq) = key.value();
                    match seal.unseal(&context, seq, value.value()) {
                        Ok(record) => contents.records.push((context, seq, record)),
                        Err(reason) => contents.damaged.push(Damaged {
                            context,
                            seq,
                            reason,
                        }),
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        match read.open_table(PEERS) {
            Ok(table) => {
                for entry in table.iter()? {
                    let (member, addr) = entry?;
                    // An unparsable address is only a lost hint: skip it.
                    if let Ok(addr) = addr.value().parse() {
                        contents.peers.push((MemberId(member.value()), addr));
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(contents)
    });
    match read {
        Ok(Ok(contents)) => Ok(contents),
        Ok(Err(error)) => Err(paths.corrupt(format!("reading it failed ({error})"))),
        Err(panic) => Err(paths.corrupt(format!("reading it failed ({panic})"))),
    }
}

/// The highest sequence any record was stored under, plus one.
fn seq_floor(contents: &Contents) -> u64 {
    let intact = contents.records.iter().map(|(_, seq, _)| *seq);
    let damaged = contents.damaged.iter().map(|d| d.seq);
    intact.chain(damaged).max().map_or(0, |seq| seq + 1)
}

pub struct Store {
    db: Database,
    paths: Paths,
    seal: Seal,
    next_seq: u64,
}

impl Store {
    /// Opens (or, for an identity that never had one, creates) the store of
    /// the data directory `dir`, and reads everything it holds, checked.
    pub fn open(dir: &Path, identity: &Identity) -> Result<(Store, Loaded), StoreError> {
        let paths = Paths::of(dir);
        let seal = Seal::new(identity);
        let marker = paths.read_marker()?;
        if let Marker::Present {
            needs_repair: Some(reason),
            ..
        } = &marker
        {
            return Err(StoreError::NeedsRepair {
                db: paths.db.clone(),
                marker: paths.marker.clone(),
                reason: reason.clone(),
            });
        }
        if let Marker::Present { .. } = marker {
            match fs::metadata(&paths.db) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::Missing {
                        db: paths.db.clone(),
                        marker: paths.marker.clone(),
                    });
                }
                Err(e) => return Err(paths.io(&paths.db)(e)),
                Ok(meta) if meta.len() == 0 => {
                    return Err(StoreError::Emptied {
                        db: paths.db.clone(),
                        marker: paths.marker.clone(),
                    });
                }
                Ok(_) => {}
            }
        }
        let (db, clean) = open_database(&paths)?;
        if !clean {
            let reason = "redb's page checksums failed; it went back to its last \
                          consistent commit, which may lack records this node \
                          acknowledged";
            if let Marker::Present { store, .. } = marker {
                paths.write_marker(store, Some(reason))?;
            }
            return Err(paths.corrupt(reason));
        }
        let contents = read_contents(&db, &paths, &seal)?;
        let fresh = contents.schema.is_none() && contents.records.is_empty();
        let store = match (contents.schema, contents.store, &marker) {
            (Some(SCHEMA_VERSION), Some(found), Marker::Present { store, .. }) => {
                if found != *store {
                    return Err(StoreError::NotThisNode {
                        db: paths.db.clone(),
                        marker: paths.marker.clone(),
                        found: format!("{found:016x}"),
                        expected: format!("{store:016x}"),
                    });
                }
                found
            }
            // The marker was lost after the database was made (or a crash
            // came between the two): the database is intact and sealed with
            // this identity's key, so it is this node's.
            (Some(SCHEMA_VERSION), Some(found), Marker::Absent) => {
                paths.write_marker(found, None)?;
                found
            }
            (Some(SCHEMA_VERSION), None, _) => {
                return Err(paths.corrupt("its id is missing from its meta table"));
            }
            (Some(found), _, _) => {
                return Err(StoreError::Schema {
                    db: paths.db.clone(),
                    found,
                });
            }
            (None, _, Marker::Present { store, .. }) => {
                // A database without a layout version, where the marker says
                // one was made.
                return Err(StoreError::NotThisNode {
                    db: paths.db.clone(),
                    marker: paths.marker.clone(),
                    found: "none (a new, empty database)".into(),
                    expected: format!("{store:016x}"),
                });
            }
            (None, _, Marker::Absent) if !fresh => {
                return Err(paths.corrupt("it holds records but no layout version"));
            }
            (None, _, Marker::Absent) => {
                let store = u64::from_le_bytes(
                    random_bytes().map_err(|e| paths.corrupt(e.to_string()))?[..8]
                        .try_into()
                        .expect("8 bytes"),
                );
                init_database(&db, &paths, store)?;
                paths.write_marker(store, None)?;
                store
            }
        };
        debug_assert_ne!(store, 0);
        if let Some(first) = contents.damaged.first() {
            let more = match contents.damaged.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            return Err(paths.corrupt(format!("{first}{more}")));
        }
        let floor = seq_floor(&contents);
        if contents.next_seq < floor {
            return Err(paths.corrupt(format!(
                "its next sequence number ({}) is not above its last record's ({})",
                contents.next_seq,
                floor - 1
            )));
        }
        let loaded = Loaded {
            records: contents.records.into_iter().map(|(_, _, r)| r).collect(),
            peers: contents.peers,
        };
        let next_seq = contents.next_seq;
        Ok((
            Store {
                db,
                paths,
                seal,
                next_seq,
            },
            loaded,
        ))
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
        let paths = &self.paths;
        let mut next_seq = self.next_seq;
        let write = self.db.begin_write().map_err(|e| paths.db_error(e))?;
        {
            let mut table = write.open_table(RECORDS).map_err(|e| paths.db_error(e))?;
            for record in records {
                let context = record.context().0;
                match record {
                    Record::Deleted { .. } => {
                        // Drop what it supersedes; keep it (its tombstone).
                        table
                            .retain_in((context, 0)..=(context, u64::MAX), |_, _| false)
                            .map_err(|e| paths.db_error(e))?;
                    }
                    Record::CheckpointEnd {
                        context: id,
                        height,
                    } => {
                        // The checkpoint is whole (its start and entries
                        // are stored before it, in this write or an earlier
                        // one): drop what it supersedes, in the same write
                        // transaction. A record that fails its seal is
                        // kept, for open to report.
                        let seal = &self.seal;
                        table
                            .retain_in(
                                (context, 0)..=(context, u64::MAX),
                                |(context, seq), bytes| match seal.unseal(&context, seq, bytes) {
                                    Ok(stored) => !stored.superseded_by(*id, *height),
                                    Err(_) => true,
                                },
                            )
                            .map_err(|e| paths.db_error(e))?;
                    }
                    _ => {}
                }
                let bytes = self.seal.seal(next_seq, record);
                table
                    .insert((context, next_seq), bytes.as_slice())
                    .map_err(|e| paths.db_error(e))?;
                next_seq += 1;
            }
            let mut meta = write.open_table(META).map_err(|e| paths.db_error(e))?;
            meta.insert(NEXT_SEQ, next_seq)
                .map_err(|e| paths.db_error(e))?;
            let mut table = write.open_table(PEERS).map_err(|e| paths.db_error(e))?;
            for (member, addr) in peers {
                table
                    .insert(member.0, addr.to_string().as_str())
                    .map_err(|e| paths.db_error(e))?;
            }
        }
        write.commit().map_err(|e| paths.db_error(e))?;
        self.next_seq = next_seq;
        Ok(())
    }
}

/// Stamps a new database with its layout version and id, and makes its
/// tables, so that it reads as empty.
pub(crate) fn init_database(db: &Database, paths: &Paths, store: u64) -> Result<(), StoreError> {
    let write = db.begin_write().map_err(|e| paths.db_error(e))?;
    {
        let mut meta = write.open_table(META).map_err(|e| paths.db_error(e))?;
        meta.insert(SCHEMA, SCHEMA_VERSION)
            .map_err(|e| paths.db_error(e))?;
        meta.insert(STORE_ID, store)
            .map_err(|e| paths.db_error(e))?;
        meta.insert(NEXT_SEQ, 0).map_err(|e| paths.db_error(e))?;
        write.open_table(RECORDS).map_err(|e| paths.db_error(e))?;
        write.open_table(PEERS).map_err(|e| paths.db_error(e))?;
    }
    write.commit().map_err(|e| paths.db_error(e))
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

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ctx-node-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn records_survive_reopen_and_deleted_compacts() {
        let dir = dir("reopen");
        let identity = Identity::from_secret([7; 32]);
        let a = ContextId([1; 32]);
        let b = ContextId([2; 32]);
        let via = MemberId([9; 32]);
        let addr: SocketAddr = "127.0.0.1:7".parse().expect("addr");
        {
            let (mut store, loaded) = Store::open(&dir, &identity).expect("open");
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
        let (mut store, loaded) = Store::open(&dir, &identity).expect("reopen");
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
        let (store, loaded) = Store::open(&dir, &identity).expect("reopen");
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
        let error = Store::open(&dir, &identity).err().expect("refused");
        assert!(matches!(error, StoreError::Schema { found, .. } if found == SCHEMA_VERSION + 1));
        assert!(
            error
                .to_string()
                .contains(&format!("version {SCHEMA_VERSION}")),
            "{error}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// A record whose bytes, key or writer changed fails its seal.
    #[test]
    fn the_seal_catches_flips_moves_and_strangers() {
        let seal = Seal::new(&Identity::from_secret([7; 32]));
        let record = Record::Joining {
            context: ContextId([1; 32]),
            via: MemberId([9; 32]),
        };
        let value = seal.seal(5, &record);
        assert_eq!(seal.unseal(&[1; 32], 5, &value), Ok(record.clone()));
        for bit in 0..value.len() * 8 {
            let mut flipped = value.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(seal.unseal(&[1; 32], 5, &flipped).is_err(), "bit {bit}");
        }
        assert!(
            seal.unseal(&[1; 32], 6, &value).is_err(),
            "another sequence"
        );
        assert!(seal.unseal(&[2; 32], 5, &value).is_err(), "another context");
        let stranger = Seal::new(&Identity::from_secret([8; 32]));
        assert!(stranger.unseal(&[1; 32], 5, &value).is_err(), "another key");
        assert!(seal.unseal(&[1; 32], 5, &value[..3]).is_err(), "cut short");
    }

    /// A store that is missing, emptied, replaced or holds a damaged record
    /// is refused while the marker says this identity has one; a lost
    /// marker is written again from an intact database.
    #[test]
    fn a_store_that_is_not_what_was_written_is_refused() {
        let dir = dir("refused");
        let identity = Identity::from_secret([7; 32]);
        let paths = Paths::of(&dir);
        let record = Record::Joining {
            context: ContextId([1; 32]),
            via: MemberId([9; 32]),
        };
        {
            let (mut store, _) = Store::open(&dir, &identity).expect("open");
            store
                .commit(std::slice::from_ref(&record), &[])
                .expect("commit");
        }
        let bytes = fs::read(&paths.db).expect("db");

        // The marker lost: written again, and the store opens.
        fs::remove_file(&paths.marker).expect("rm marker");
        let (_, loaded) = Store::open(&dir, &identity).expect("marker lost");
        assert_eq!(loaded.records, vec![record.clone()]);
        assert!(matches!(paths.read_marker(), Ok(Marker::Present { .. })));

        let refused = |what: &str| {
            let error = Store::open(&dir, &identity)
                .err()
                .unwrap_or_else(|| panic!("{what}: opened"));
            let text = error.to_string();
            assert!(
                text.contains(&paths.db.display().to_string()),
                "{what}: {text}"
            );
            error
        };
        fs::remove_file(&paths.db).expect("rm");
        assert!(matches!(refused("missing"), StoreError::Missing { .. }));
        fs::write(&paths.db, b"").expect("empty");
        assert!(matches!(refused("emptied"), StoreError::Emptied { .. }));
        fs::remove_file(&paths.db).expect("rm");
        {
            // Another identity's store in its place.
            let other = dir.join("other");
            fs::create_dir_all(&other).expect("other");
            let _ = Store::open(&other, &Identity::from_secret([8; 32])).expect("other");
            fs::rename(other.join(DB_FILE), &paths.db).expect("mv");
        }
        assert!(matches!(
            refused("replaced"),
            StoreError::NotThisNode { .. }
        ));

        // A record written with another key: refused, naming the record.
        fs::write(&paths.db, &bytes).expect("put back");
        let stranger = Identity::from_secret([8; 32]);
        {
            let (db, _) = open_database(&paths).expect("db");
            let write = db.begin_write().expect("write");
            let value = Seal::new(&stranger).seal(0, &record);
            write
                .open_table(RECORDS)
                .expect("records")
                .insert(([1; 32], 0), value.as_slice())
                .expect("insert");
            write.commit().expect("commit");
        }
        let error = refused("forged record");
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains(&"01".repeat(32)), "{error}");
        let _ = fs::remove_dir_all(&dir);
    }
}
