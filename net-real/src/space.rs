//! The node's disk space: whether the node stores now, and the reserve it
//! keeps for the records already on their way to the store.
//!
//! A full disk is a state, not a crash. While *storing*, the node keeps a
//! file of `reserve` bytes (`DATA_DIR/reserve`) that nothing else can take.
//! The space left is read (`statvfs`) after each commit, and every input
//! the engine is given counts against it (`admit`, twice its bytes: its
//! records, and the database's pages written copy-on-write) before it is
//! given: when the batch would not fit with a margin, the node turns
//! *full* before the engine takes that input in, so what the engine has
//! already made always fits. It deletes the reserve (room for what other
//! writers on the disk took meanwhile, and for the records of its own
//! timers), and from then on the engine takes in only what stores nothing
//! (`Node::handle_message_storing_nothing`) and the admin API refuses
//! writes (507). Once the space left holds the reserve twice over and the
//! margin, the reserve is written again and the node stores again, by
//! itself.
//!
//! Invariants: while storing, the reserve file is whole (written and
//! synced) on the disk; the node turns full before taking in an input that
//! might not fit, never after a commit failed; nothing here deletes
//! anything but the reserve file.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The reserve's file in the data directory.
pub const RESERVE_FILE: &str = "reserve";

/// What a commit is thought to take beyond its records' bytes (the
/// database's pages written copy-on-write, its headers), and what is kept
/// free beside the reserve.
pub const COMMIT_MARGIN_BYTES: u64 = 2 << 20;

/// The disk's state.
#[derive(Debug)]
pub enum SpaceState {
    /// Writes are taken; the reserve is on the disk.
    Storing,
    /// The disk was (nearly) full then: the node stores nothing.
    Full {
        since: Instant,
        /// The space left when it turned full, in bytes.
        available: u64,
    },
}

/// What a check of the space changed.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    None,
    /// The node turned full (the reserve deleted): `available` bytes were
    /// left before, `freed` more now.
    TurnedFull {
        available: u64,
        freed: u64,
    },
    /// The node stores again: the reserve is written back.
    Resumed {
        available: u64,
    },
}

/// The disk space of one data directory.
#[derive(Debug)]
pub struct Space {
    dir: PathBuf,
    reserve: PathBuf,
    reserve_bytes: u64,
    state: SpaceState,
    /// The space left when last read (after the last commit).
    available: u64,
}

impl Space {
    /// The space of `dir`, keeping `reserve_bytes`: storing when the
    /// reserve is (or can be) written and the disk has room beside it,
    /// full otherwise (a node started on a full disk).
    pub fn open(dir: &Path, reserve_bytes: u64) -> Space {
        let mut space = Space {
            dir: dir.to_path_buf(),
            reserve: dir.join(RESERVE_FILE),
            reserve_bytes,
            state: SpaceState::Full {
                since: Instant::now(),
                available: 0,
            },
            available: 0,
        };
        let whole = fs::metadata(&space.reserve).is_ok_and(|m| m.len() == reserve_bytes);
        let available = space.refresh();
        if whole && available >= COMMIT_MARGIN_BYTES {
            space.state = SpaceState::Storing;
            return space;
        }
        // A reserve on a disk with no room beside it, or none (the last run
        // turned full, or this is the first): full, storing again only
        // once a reserve is written with room beside it.
        let _ = fs::remove_file(&space.reserve);
        space.state = SpaceState::Full {
            since: Instant::now(),
            available,
        };
        space.refresh();
        space.try_resume();
        space
    }

    /// Reads the space left again (after a commit), and returns it. A
    /// space that cannot be read counts as room: the commit says so if it
    /// is wrong.
    pub fn refresh(&mut self) -> u64 {
        self.available = self.available().unwrap_or(u64::MAX);
        self.available
    }

    /// Before the engine takes in an input: `batch` is the bytes of the
    /// inputs of this batch, that one included. Turns full when they
    /// would not fit, twice over, with the margin, in the space left.
    pub fn admit(&mut self, batch: u64) -> Change {
        if self.is_full() || batch.saturating_mul(2) + COMMIT_MARGIN_BYTES <= self.available {
            return Change::None;
        }
        self.turn_full()
    }

    fn turn_full(&mut self) -> Change {
        let available = self.available;
        let freed = fs::metadata(&self.reserve).map_or(0, |m| m.len());
        let _ = fs::remove_file(&self.reserve);
        self.state = SpaceState::Full {
            since: Instant::now(),
            available,
        };
        self.refresh();
        Change::TurnedFull { available, freed }
    }

    pub fn state(&self) -> &SpaceState {
        &self.state
    }

    pub fn is_full(&self) -> bool {
        matches!(self.state, SpaceState::Full { .. })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn reserve_bytes(&self) -> u64 {
        self.reserve_bytes
    }

    /// The bytes an unprivileged writer may still use on the data
    /// directory's file system.
    pub fn available(&self) -> std::io::Result<u64> {
        let stat = rustix::fs::statvfs(&self.dir)?;
        Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
    }

    /// Before a commit of `bytes` of records: a last check, read afresh
    /// (another writer on the disk may have taken the space since the
    /// last commit); turns full, freeing the reserve for this commit, when
    /// they would not fit with the margin.
    pub fn before_commit(&mut self, bytes: u64) -> Change {
        if self.is_full() {
            return Change::None;
        }
        self.refresh();
        self.admit(bytes)
    }

    /// While full: stores again once the space left holds the reserve
    /// twice over and the margin, and the reserve is written back.
    pub fn try_resume(&mut self) -> Change {
        if !self.is_full() {
            return Change::None;
        }
        let available = self.refresh();
        if available < self.reserve_bytes.saturating_mul(2) + COMMIT_MARGIN_BYTES {
            return Change::None;
        }
        if self.write_reserve().is_err() {
            let _ = fs::remove_file(&self.reserve);
            return Change::None;
        }
        self.state = SpaceState::Storing;
        self.refresh();
        Change::Resumed { available }
    }

    /// Writes the reserve file whole (zeros, not a sparse file: the space
    /// must really be taken) and syncs it.
    fn write_reserve(&self) -> std::io::Result<()> {
        const CHUNK: usize = 1 << 20;
        let zeros = vec![0u8; CHUNK];
        let mut file = File::create(&self.reserve)?;
        let mut left = self.reserve_bytes;
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_written_whole_and_kept() {
        let dir = std::env::temp_dir().join(format!("ctx-space-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let space = Space::open(&dir, 3 << 20);
        assert!(!space.is_full(), "{space:?}");
        let reserve = fs::metadata(dir.join(RESERVE_FILE)).expect("reserve");
        assert_eq!(reserve.len(), 3 << 20);
        // A small commit on a roomy disk changes nothing.
        let mut space = space;
        assert_eq!(space.before_commit(4096), Change::None);
        // One that cannot fit turns the node full and frees the reserve.
        let huge = space.available().expect("statvfs");
        assert_eq!(space.admit(1 << 20), Change::None);
        let Change::TurnedFull { freed, .. } = space.admit(huge) else {
            panic!("a commit of all the space left turns the node full");
        };
        assert_eq!(freed, 3 << 20);
        assert!(space.is_full() && !dir.join(RESERVE_FILE).exists());
        // There is room again here: it resumes, with the reserve back.
        assert!(matches!(space.try_resume(), Change::Resumed { .. }));
        assert_eq!(
            fs::metadata(dir.join(RESERVE_FILE)).expect("back").len(),
            3 << 20
        );
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
