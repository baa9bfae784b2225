//! `ctx-node repair`: rebuilds a damaged store from what is intact in it.
//!
//! A store `Store::open` refuses (a record that fails its seal, damaged
//! pages, a database missing, emptied or unreadable) is repaired offline,
//! with no node running on the directory:
//!
//! - a database redb cannot open or read is moved aside (`node.redb.damaged`,
//!   then `.damaged.1`, ...), never deleted, and a new one is made: the node
//!   then holds no context, and rejoins them through their members;
//! - otherwise every record that fails its checks is dropped, and each
//!   context is restored alone, as the engine would at start. A context
//!   that lost no record and restores is kept as it is. One that lost a
//!   record, or does not restore, is not kept with a hole: the node
//!   announced (signed) the heads it applied, as a promise that all it
//!   makes from then on descends from them. Its records are replaced by a
//!   tombstone of the last transaction this node made there and a
//!   `Joining` record through a member its records name, so the next start
//!   catches the context up again from that member (as a member is brought
//!   forward), and the engine's tombstone rule keeps the node from making
//!   anything there before it holds its last own transaction again. With no
//!   other member named, the context is forgotten (the tombstone stays);
//! - the marker beside the key is written again, without `needs-repair`.
//!
//! Invariant: repair only removes records and adds tombstones, in one write
//! transaction, and ends by opening the store as a start would; it reports
//! everything it dropped. A database of another layout version is refused,
//! not repaired.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ctx_core::tx::{OrderKey, Tx};
use ctx_core::{Config, ContextId, Ed25519Verifier, MemberId, Node, Record};
use redb::Database;

use crate::identity::{Identity, random_bytes};
use crate::store::{
    Contents, Damaged, Marker, Paths, SCHEMA_VERSION, Seal, Store, StoreError, init_database,
    open_database, quietly, read_contents,
};

/// What `repair` did.
#[derive(Debug, Default)]
pub struct Report {
    pub db: PathBuf,
    /// The unreadable database, moved here, and why it was unreadable.
    pub moved_aside: Option<(PathBuf, String)>,
    /// The database was missing or empty, and a new one was made.
    pub started_over: bool,
    /// redb found damaged pages and went back to its last consistent commit.
    pub pages_repaired: bool,
    /// The records kept.
    pub kept: usize,
    /// The records dropped because they failed their checks.
    pub dropped: Vec<Damaged>,
    /// The contexts that lost records (or do not restore), and the member
    /// each now catches up from again, with why.
    pub recaught: Vec<(ContextId, MemberId, String)>,
    /// The contexts forgotten: they lost records and no other member of
    /// theirs is known to catch up from.
    pub forgotten: Vec<(ContextId, String)>,
}

impl Report {
    /// Whether the store was intact: repair changed nothing.
    pub fn intact(&self) -> bool {
        self.moved_aside.is_none()
            && !self.started_over
            && !self.pages_repaired
            && self.dropped.is_empty()
            && self.recaught.is_empty()
            && self.forgotten.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let db = self.db.display();
        if let Some((aside, why)) = &self.moved_aside {
            writeln!(f, "{db} could not be read ({why}).")?;
            writeln!(
                f,
                "It was moved to {}; a new store was made.",
                aside.display()
            )?;
        }
        if self.started_over {
            writeln!(f, "{db} was missing or empty; a new store was made.")?;
        }
        if self.moved_aside.is_some() || self.started_over {
            writeln!(
                f,
                "This node now holds no context. Its key is unchanged: rejoin each \
                 context through one of its members (`ctx-node context join`)."
            )?;
            return Ok(());
        }
        if self.pages_repaired {
            writeln!(
                f,
                "redb found damaged pages in {db} and went back to its last consistent \
                 commit: records written after it are gone here."
            )?;
        }
        for damaged in &self.dropped {
            writeln!(f, "dropped {damaged}")?;
        }
        for (context, via, why) in &self.recaught {
            writeln!(
                f,
                "context {context} ({why}) catches up again from member {via} when \
                 the node runs"
            )?;
        }
        for (context, why) in &self.forgotten {
            writeln!(
                f,
                "forgot context {context} ({why}): no other member of it is known; \
                 rejoin it through one of its members"
            )?;
        }
        if self.intact() {
            writeln!(f, "{db} is intact: {} records, nothing changed.", self.kept)
        } else {
            writeln!(
                f,
                "{db} repaired: {} records kept, {} dropped, {} contexts to catch up \
                 again, {} forgotten.",
                self.kept,
                self.dropped.len(),
                self.recaught.len(),
                self.forgotten.len()
            )
        }
    }
}

/// Repairs the store of the data directory `dir` (see the module docs).
pub fn repair(dir: &Path, identity: &Identity) -> Result<Report, StoreError> {
    let paths = Paths::of(dir);
    let seal = Seal::new(identity);
    // A marker that does not parse is written again below.
    let marked = match paths.read_marker() {
        Ok(Marker::Present { store, .. }) => Some(store),
        Ok(Marker::Absent) | Err(StoreError::Marker { .. }) => None,
        Err(e) => return Err(e),
    };
    let mut report = Report {
        db: paths.db.clone(),
        ..Report::default()
    };
    let empty = fs::metadata(&paths.db).map_or(true, |meta| meta.len() == 0);
    if empty {
        report.started_over = true;
        start_over(&paths, marked)?;
        return finish(dir, identity, report);
    }
    let unreadable = match open_database(&paths) {
        Ok((db, clean)) => {
            report.pages_repaired = !clean;
            match read_contents(&db, &paths, &seal) {
                Ok(contents) if contents.schema.is_some_and(|v| v != SCHEMA_VERSION) => {
                    return Err(StoreError::Schema {
                        db: paths.db.clone(),
                        found: contents.schema.unwrap_or_default(),
                    });
                }
                // redb asserts on some damage its checksums do not cover:
                // a database it cannot write is unreadable too.
                Ok(contents) => {
                    match quietly(|| rebuild(&db, &paths, identity, contents, marked, &mut report))
                    {
                        Ok(rebuilt) => {
                            rebuilt?;
                            None
                        }
                        Err(panic) => Some(format!("redb failed writing it: {panic}")),
                    }
                }
                Err(StoreError::Corrupt { reason, .. }) => Some(reason),
                Err(e) => return Err(e),
            }
        }
        Err(StoreError::Corrupt { reason, .. }) => Some(reason),
        Err(e) => return Err(e),
    };
    if let Some(why) = unreadable {
        let aside = aside_path(&paths.db);
        fs::rename(&paths.db, &aside).map_err(|error| StoreError::Io {
            path: paths.db.clone(),
            error,
        })?;
        report.moved_aside = Some((aside, why));
        report.pages_repaired = false;
        start_over(&paths, marked)?;
    }
    finish(dir, identity, report)
}

/// The first free `node.redb.damaged[.N]` beside `db`.
fn aside_path(db: &Path) -> PathBuf {
    let base = db.with_extension("redb.damaged");
    (1..)
        .map(|n| match n {
            1 => base.clone(),
            n => base.with_extension(format!("damaged.{}", n - 1)),
        })
        .find(|path| !path.exists())
        .expect("a free name")
}

/// A new, empty database, under the marker's id when there is one.
fn start_over(paths: &Paths, marked: Option<u64>) -> Result<(), StoreError> {
    let _ = fs::remove_file(&paths.db);
    let (db, _) = open_database(paths)?;
    let store = match marked {
        Some(store) => store,
        None => new_store_id(paths)?,
    };
    init_database(&db, paths, store)?;
    paths.write_marker(store, None)
}

fn new_store_id(paths: &Paths) -> Result<u64, StoreError> {
    let bytes = random_bytes().map_err(|e| paths.corrupt(e.to_string()))?;
    Ok(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")))
}

/// Drops what failed its checks and starts every context that lost a
/// record, or does not restore, over by catchup, in one write transaction.
fn rebuild(
    db: &Database,
    paths: &Paths,
    identity: &Identity,
    contents: Contents,
    marked: Option<u64>,
    report: &mut Report,
) -> Result<(), StoreError> {
    let floor = contents
        .records
        .iter()
        .map(|(_, seq, _)| *seq)
        .chain(contents.damaged.iter().map(|d| d.seq))
        .max()
        .map_or(0, |seq| seq + 1);
    let mut next_seq = contents.next_seq.max(floor);
    let mut by_context: BTreeMap<[u8; 32], Vec<Record>> = BTreeMap::new();
    for (context, _, record) in contents.records {
        by_context.entry(context).or_default().push(record);
    }
    for damaged in &contents.damaged {
        by_context.entry(damaged.context).or_default();
    }
    let me = identity.member();
    // The contexts to start over, why, and their new records.
    let mut restart: Vec<(ContextId, String, Vec<Record>)> = Vec::new();
    for (context, records) in &by_context {
        let id = ContextId(*context);
        let why = match contents.damaged.iter().find(|d| d.context == *context) {
            Some(damaged) => format!("its record at sequence {} was dropped", damaged.seq),
            None => match Node::restore(
                Config::default(),
                *identity.secret(),
                [0; 32],
                Arc::new(Ed25519Verifier),
                records.iter().cloned(),
            ) {
                Ok(_) => continue,
                Err(why) => format!("it does not restore: {why}"),
            },
        };
        // A copy with a hole is not kept: the node announced (signed) what
        // it applied, as a promise that all it makes from then on descends
        // from it, so it must hold a whole copy again before it makes
        // anything. Its tombstone keeps its last transaction; its join
        // asks a member for the copy at once.
        let mut new = vec![Record::Deleted {
            context: id,
            last_own: last_own(records, me),
        }];
        match peer_of(records, me) {
            Some(via) => {
                new.push(Record::Joining { context: id, via });
                report.recaught.push((id, via, why.clone()));
            }
            None => report.forgotten.push((id, why.clone())),
        }
        restart.push((id, why, new));
    }
    report.kept = by_context
        .iter()
        .filter(|(context, _)| !restart.iter().any(|(id, _, _)| id.0 == **context))
        .map(|(_, records)| records.len())
        .sum();
    report.dropped = contents.damaged;
    if let Some(store) = contents.store
        && restart.is_empty()
    {
        // Intact (or adopted, when the marker named another store): only
        // the marker is written again, without `needs-repair`.
        return paths.write_marker(store, None);
    }
    let store = match (contents.store, marked) {
        (Some(store), _) | (None, Some(store)) => store,
        (None, None) => new_store_id(paths)?,
    };
    let seal = Seal::new(identity);
    let write = db.begin_write().map_err(|e| paths.db_error(e))?;
    {
        let mut table = write
            .open_table(crate::store::RECORDS)
            .map_err(|e| paths.db_error(e))?;
        for (context, _, records) in &restart {
            let id = context.0;
            table
                .retain_in((id, 0)..=(id, u64::MAX), |_, _| false)
                .map_err(|e| paths.db_error(e))?;
            for record in records {
                let value = seal.seal(next_seq, record);
                table
                    .insert((id, next_seq), value.as_slice())
                    .map_err(|e| paths.db_error(e))?;
                next_seq += 1;
            }
        }
        let mut meta = write
            .open_table(crate::store::META)
            .map_err(|e| paths.db_error(e))?;
        meta.insert(crate::store::NEXT_SEQ, next_seq)
            .map_err(|e| paths.db_error(e))?;
        meta.insert(crate::store::STORE_ID, store)
            .map_err(|e| paths.db_error(e))?;
        meta.insert(crate::store::SCHEMA, SCHEMA_VERSION)
            .map_err(|e| paths.db_error(e))?;
    }
    write.commit().map_err(|e| paths.db_error(e))?;
    paths.write_marker(store, None)
}

/// A member to catch a context up from, by its records: the one it joined
/// through, else another author of a transaction it holds.
fn peer_of(records: &[Record], me: MemberId) -> Option<MemberId> {
    let joined = records.iter().find_map(|record| match record {
        Record::Joining { via, .. } if *via != me => Some(*via),
        _ => None,
    });
    joined.or_else(|| {
        records.iter().find_map(|record| {
            let author = match record {
                Record::Tx { tx, .. } => tx.body.author,
                Record::Opened { genesis, .. } => genesis.body.author,
                _ => return None,
            };
            (author != me).then_some(author)
        })
    })
}

/// The last transaction `me` made in a context, from its records: its own
/// transactions, and an earlier tombstone's.
fn last_own(records: &[Record], me: MemberId) -> Option<OrderKey> {
    records
        .iter()
        .filter_map(|record| match record {
            Record::Tx { tx, .. } if tx.body.author == me => Tx::from_signed_unverified(tx.clone())
                .ok()
                .map(|tx| tx.order_key()),
            Record::Opened { genesis, .. } if genesis.body.author == me => {
                Tx::from_signed_unverified(genesis.clone())
                    .ok()
                    .map(|tx| tx.order_key())
            }
            Record::Deleted { last_own, .. } => *last_own,
            _ => None,
        })
        .max()
}

/// Opens the repaired store as a start would, and restores the engine.
fn finish(dir: &Path, identity: &Identity, report: Report) -> Result<Report, StoreError> {
    let (_, loaded) = Store::open(dir, identity)?;
    if let Err(why) = Node::restore(
        Config::default(),
        *identity.secret(),
        [0; 32],
        Arc::new(Ed25519Verifier),
        loaded.records,
    ) {
        return Err(StoreError::Corrupt {
            db: report.db.clone(),
            reason: format!("it still does not restore after repair ({why})"),
        });
    }
    Ok(report)
}
