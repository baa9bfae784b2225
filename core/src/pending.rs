//! Transactions that arrived before their parents.
//!
//! Owns: the bounded set of received, verified transactions whose parents are
//! not all accepted yet, which parents they wait for, and which of those
//! parents nobody here has yet (what to fetch).
//!
//! Invariants: a transaction is never both pending and accepted; every
//! pending transaction's `missing` count equals the number of its parents
//! that are not accepted; `missing` holds exactly the awaited parents that
//! are neither accepted nor pending. The set holds at most
//! [`PENDING_TXS_MAX`]; beyond that, new arrivals are dropped (they are
//! fetched again later by sync).

use std::collections::BTreeSet;

use hashbrown::HashMap;

use crate::ids::TxId;
use crate::limits::PENDING_TXS_MAX;
use crate::state::{FixedHasher, fixed_hasher};
use crate::tx::Tx;

struct Waiting {
    tx: Tx,
    missing: usize,
}

pub struct Pending {
    waiting: HashMap<TxId, Waiting, FixedHasher>,
    children: HashMap<TxId, Vec<TxId>, FixedHasher>,
    missing: BTreeSet<TxId>,
}

impl Default for Pending {
    fn default() -> Self {
        Self {
            waiting: HashMap::with_hasher(fixed_hasher()),
            children: HashMap::with_hasher(fixed_hasher()),
            missing: BTreeSet::new(),
        }
    }
}

impl Pending {
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn contains(&self, id: &TxId) -> bool {
        self.waiting.contains_key(id)
    }

    /// Parents awaited that nobody here has: what sync should fetch.
    pub fn missing(&self) -> &BTreeSet<TxId> {
        &self.missing
    }

    /// Holds `tx` until its parents that `is_accepted` denies are accepted.
    /// Returns false (and holds nothing) when the set is full.
    pub fn hold(&mut self, tx: Tx, is_accepted: impl Fn(&TxId) -> bool) -> bool {
        let id = tx.id();
        debug_assert!(!self.waiting.contains_key(&id));
        if self.waiting.len() >= PENDING_TXS_MAX {
            return false;
        }
        let mut missing = 0;
        for parent in tx.parents() {
            if is_accepted(parent) {
                continue;
            }
            missing += 1;
            self.children.entry(*parent).or_default().push(id);
            if !self.waiting.contains_key(parent) {
                self.missing.insert(*parent);
            }
        }
        assert!(
            missing > 0,
            "a transaction with every parent accepted is not pending"
        );
        self.missing.remove(&id);
        self.waiting.insert(id, Waiting { tx, missing });
        true
    }

    /// `id` was accepted: returns the waiting transactions that now have all
    /// their parents, removed from the set.
    pub fn release(&mut self, id: &TxId) -> Vec<Tx> {
        self.missing.remove(id);
        let Some(children) = self.children.remove(id) else {
            return Vec::new();
        };
        let mut ready = Vec::new();
        for child in children {
            let Some(waiting) = self.waiting.get_mut(&child) else {
                continue;
            };
            waiting.missing -= 1;
            if waiting.missing == 0 {
                let waiting = self.waiting.remove(&child).expect("present");
                ready.push(waiting.tx);
            }
        }
        ready
    }

    /// `id` can never be accepted (it was invalid): drops everything that
    /// waits for it, transitively. Returns how many were dropped.
    pub fn discard_descendants(&mut self, id: &TxId) -> usize {
        self.missing.remove(id);
        let mut dropped = 0;
        let mut stack = vec![*id];
        while let Some(current) = stack.pop() {
            for child in self.children.remove(&current).unwrap_or_default() {
                if self.waiting.remove(&child).is_some() {
                    dropped += 1;
                    stack.push(child);
                }
            }
        }
        dropped
    }
}
