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
use crate::tx::{Parent, Tx};

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

    /// Empties the set: every waiting transaction, in canonical order (so
    /// parents come before children). For a copy whose holdings changed
    /// under the set (brought forward onto a checkpoint that covers
    /// parents it waited for), to offer them all again.
    pub fn drain_sorted(&mut self) -> Vec<Tx> {
        let mut txs: Vec<Tx> = std::mem::take(&mut self.waiting)
            .into_values()
            .map(|waiting| waiting.tx)
            .collect();
        self.children.clear();
        self.missing.clear();
        txs.sort_unstable_by_key(Tx::order_key);
        txs
    }

    /// Parents awaited that nobody here has: what sync should fetch.
    pub fn missing(&self) -> &BTreeSet<TxId> {
        &self.missing
    }

    /// Holds `tx` until its parents that `is_accepted` denies are accepted.
    /// Returns false (and holds nothing) when the set is full.
    pub fn hold(&mut self, tx: Tx, is_accepted: impl Fn(&Parent) -> bool) -> bool {
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
            let parent = &parent.id;
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
    /// waits for it, transitively, and forgets the parents only they awaited.
    /// Returns how many were dropped.
    pub fn discard_descendants(&mut self, id: &TxId) -> usize {
        self.missing.remove(id);
        let mut dropped = 0;
        let mut stack = vec![*id];
        while let Some(current) = stack.pop() {
            for child in self.children.remove(&current).unwrap_or_default() {
                if let Some(waiting) = self.waiting.remove(&child) {
                    dropped += 1;
                    self.unlink(&waiting.tx);
                    stack.push(child);
                }
            }
        }
        dropped
    }

    /// Removes a dropped transaction from its parents' child lists; a parent
    /// that no one awaits any more is no longer missing.
    fn unlink(&mut self, tx: &Tx) {
        let id = tx.id();
        for parent in tx.parent_ids() {
            let Some(children) = self.children.get_mut(parent) else {
                continue;
            };
            children.retain(|child| *child != id);
            if children.is_empty() {
                self.children.remove(parent);
                self.missing.remove(parent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests of the pending set, with an explicit accepted set standing
    //! in for the replica.

    use std::collections::BTreeSet;

    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::ids::{ContextId, Hash, MemberId};
    use crate::tx::Parent;
    use crate::tx::{Signature, SignedTx, TX_FORMAT_VERSION, TxBody, TxKind};

    fn signer() -> SigningKey {
        SigningKey::from_bytes(&[1; 32])
    }

    fn body(parents: Vec<TxId>, height: u64, kind: TxKind) -> TxBody {
        // The claimed parent heights: one below the child (they need not
        // exist anywhere).
        let mut parents: Vec<Parent> = parents
            .into_iter()
            .map(|id| Parent {
                id,
                height: height.saturating_sub(1),
            })
            .collect();
        parents.sort_unstable();
        TxBody {
            version: TX_FORMAT_VERSION,
            context: ContextId([7; 32]),
            author: MemberId(signer().verifying_key().to_bytes()),
            height,
            parents,
            kind,
        }
    }

    fn genesis() -> Tx {
        let kind = TxKind::Create {
            runtime_version: crate::runtime::RUNTIME_VERSION,
            app_hash: Hash([1; 32]),
            app_bytes: 1,
        };
        Tx::sign(body(vec![], 0, kind), &signer())
    }

    /// A child of `parents` (which need not exist anywhere); `tag` tells
    /// siblings apart.
    fn child_of(parents: &[TxId], height: u64, tag: &str) -> Tx {
        let kind = TxKind::Call {
            method: "m".to_owned(),
            input: tag.as_bytes().to_vec(),
        };
        Tx::sign(body(parents.to_vec(), height, kind), &signer())
    }

    /// A child of real transactions, at height one more than the highest.
    fn child(parents: &[&Tx], tag: &str) -> Tx {
        let height = parents.iter().map(|p| p.height()).max().unwrap() + 1;
        let ids: Vec<TxId> = parents.iter().map(|p| p.id()).collect();
        child_of(&ids, height, tag)
    }

    fn set(ids: &[TxId]) -> BTreeSet<TxId> {
        ids.iter().copied().collect()
    }

    fn ids(txs: &[Tx]) -> Vec<TxId> {
        txs.iter().map(Tx::id).collect()
    }

    /// The pending set and the accepted set it is used with.
    struct Harness {
        pending: Pending,
        accepted: BTreeSet<TxId>,
    }

    impl Harness {
        fn new(accepted: &[&Tx]) -> Harness {
            Harness {
                pending: Pending::default(),
                accepted: accepted.iter().map(|tx| tx.id()).collect(),
            }
        }

        fn hold(&mut self, tx: &Tx) -> bool {
            let accepted = &self.accepted;
            self.pending.hold(tx.clone(), |p| accepted.contains(&p.id))
        }

        /// Accepts `tx` (whose parents must be accepted) and returns what
        /// that releases.
        fn accept(&mut self, tx: &Tx) -> Vec<TxId> {
            assert!(tx.parent_ids().all(|p| self.accepted.contains(p)));
            assert!(!self.pending.contains(&tx.id()));
            self.accepted.insert(tx.id());
            ids(&self.pending.release(&tx.id()))
        }

        fn missing(&self) -> BTreeSet<TxId> {
            self.pending.missing().clone()
        }
    }

    #[test]
    fn a_chain_arriving_youngest_first_is_released_oldest_first() {
        let g = genesis();
        let a1 = child(&[&g], "a1");
        let a2 = child(&[&a1], "a2");
        let a3 = child(&[&a2], "a3");
        let mut h = Harness::new(&[&g]);
        assert!(h.pending.is_empty());
        assert!(h.missing().is_empty());

        assert!(h.hold(&a3));
        assert_eq!(h.missing(), set(&[a2.id()]));
        assert!(h.hold(&a2));
        // a2 is pending now: only a1 is to fetch.
        assert_eq!(h.missing(), set(&[a1.id()]));
        assert_eq!(h.pending.len(), 2);
        assert!(h.pending.contains(&a2.id()) && h.pending.contains(&a3.id()));
        assert!(!h.pending.contains(&a1.id()));

        // a1's parent is accepted: it is accepted at once, never held.
        assert_eq!(h.accept(&a1), vec![a2.id()]);
        assert!(h.missing().is_empty());
        assert_eq!(h.pending.len(), 1);
        assert!(!h.pending.contains(&a2.id()));
        assert_eq!(h.accept(&a2), vec![a3.id()]);
        assert!(h.pending.is_empty());
        assert_eq!(h.accept(&a3), vec![]);
        assert!(h.pending.is_empty());
        assert!(h.missing().is_empty());
    }

    #[test]
    fn a_chain_arriving_middle_first_fetches_only_the_oldest() {
        let g = genesis();
        let a1 = child(&[&g], "a1");
        let a2 = child(&[&a1], "a2");
        let a3 = child(&[&a2], "a3");
        let mut h = Harness::new(&[&g]);
        assert!(h.hold(&a2));
        assert_eq!(h.missing(), set(&[a1.id()]));
        // Its parent a2 is pending, not missing.
        assert!(h.hold(&a3));
        assert_eq!(h.missing(), set(&[a1.id()]));
        assert_eq!(h.accept(&a1), vec![a2.id()]);
        assert_eq!(h.accept(&a2), vec![a3.id()]);
        assert!(h.pending.is_empty());
    }

    #[test]
    fn a_transaction_with_two_missing_parents_waits_for_both() {
        let g = genesis();
        let p = child(&[&g], "p");
        let q = child(&[&g], "q");
        let m = child(&[&p, &q], "m");
        let mut h = Harness::new(&[&g]);
        assert!(h.hold(&m));
        assert_eq!(h.missing(), set(&[p.id(), q.id()]));

        assert_eq!(h.accept(&p), vec![]);
        assert!(h.pending.contains(&m.id()));
        assert_eq!(h.missing(), set(&[q.id()]));
        assert_eq!(h.accept(&q), vec![m.id()]);
        assert!(h.pending.is_empty());
        assert!(h.missing().is_empty());

        // The other way round.
        let mut h = Harness::new(&[&g]);
        assert!(h.hold(&m));
        assert_eq!(h.accept(&q), vec![]);
        assert_eq!(h.missing(), set(&[p.id()]));
        assert_eq!(h.accept(&p), vec![m.id()]);
    }

    #[test]
    fn missing_holds_only_parents_neither_accepted_nor_pending() {
        let g = genesis();
        let w = child(&[&g], "w");
        let p = child(&[&g], "p");
        let q = child(&[&w], "q");
        // m waits for the accepted g, the unknown p, and q, itself waiting
        // for the unknown w.
        let m = child(&[&g, &p, &q], "m");
        let mut h = Harness::new(&[&g]);
        assert!(h.hold(&m));
        assert_eq!(h.missing(), set(&[p.id(), q.id()]));
        assert!(h.hold(&q));
        assert_eq!(h.missing(), set(&[p.id(), w.id()]));
        assert!(!h.missing().contains(&g.id()));

        // Releasing w releases q, but m still waits for p and for q to be
        // accepted.
        assert_eq!(h.accept(&w), vec![q.id()]);
        assert_eq!(h.missing(), set(&[p.id()]));
        assert_eq!(h.accept(&q), vec![]);
        assert_eq!(h.accept(&p), vec![m.id()]);
        assert!(h.pending.is_empty());
        assert!(h.missing().is_empty());
    }

    #[test]
    fn several_children_of_one_parent_are_released_together() {
        let g = genesis();
        let p = child(&[&g], "p");
        let c1 = child(&[&p], "c1");
        let c2 = child(&[&p], "c2");
        let c3 = child(&[&p], "c3");
        let mut h = Harness::new(&[&g]);
        for tx in [&c1, &c2, &c3] {
            assert!(h.hold(tx));
        }
        assert_eq!(h.missing(), set(&[p.id()]));
        assert_eq!(set(&h.accept(&p)), set(&[c1.id(), c2.id(), c3.id()]));
        assert!(h.pending.is_empty());
    }

    #[test]
    fn discard_descendants_drops_the_transitive_waiting_set() {
        let g = genesis();
        let bad = child(&[&g], "bad");
        // A diamond on `bad`, with a child below it.
        let left = child(&[&bad], "left");
        let right = child(&[&bad], "right");
        let merge = child(&[&left, &right], "merge");
        let below = child(&[&merge], "below");
        // Unrelated, waiting for something else.
        let z = child(&[&g], "z");
        let other = child(&[&z], "other");
        let mut h = Harness::new(&[&g]);
        for tx in [&below, &merge, &left, &right, &other] {
            assert!(h.hold(tx));
        }
        assert_eq!(h.missing(), set(&[bad.id(), z.id()]));

        assert_eq!(h.pending.discard_descendants(&bad.id()), 4);
        assert_eq!(h.pending.len(), 1);
        for tx in [&left, &right, &merge, &below] {
            assert!(!h.pending.contains(&tx.id()));
        }
        assert!(h.pending.contains(&other.id()));
        assert_eq!(h.missing(), set(&[z.id()]));
        // Nothing is left waiting for it.
        assert_eq!(h.pending.release(&bad.id()), vec![]);
        assert_eq!(h.pending.discard_descendants(&bad.id()), 0);
        // The unrelated one is released as usual.
        assert_eq!(h.accept(&z), vec![other.id()]);
        assert!(h.pending.is_empty());
    }

    #[test]
    fn discard_descendants_of_an_unknown_or_childless_id_drops_nothing() {
        let g = genesis();
        let a1 = child(&[&g], "a1");
        let a2 = child(&[&a1], "a2");
        let mut h = Harness::new(&[&g]);
        assert!(h.hold(&a2));
        assert_eq!(h.pending.discard_descendants(&TxId([0x55; 32])), 0);
        assert_eq!(h.pending.discard_descendants(&a2.id()), 0);
        assert_eq!(h.pending.len(), 1);
        assert_eq!(h.missing(), set(&[a1.id()]));
    }

    #[test]
    fn discard_descendants_forgets_parents_only_the_dropped_awaited() {
        let g = genesis();
        let bad = child(&[&g], "bad");
        let y = child(&[&g], "y");
        let m = child(&[&bad, &y], "m");
        let mut h = Harness::new(&[&g]);
        assert!(h.hold(&m));
        assert_eq!(h.missing(), set(&[bad.id(), y.id()]));
        assert_eq!(h.pending.discard_descendants(&bad.id()), 1);
        assert!(h.pending.is_empty());
        // Nothing waits for y any more: it is not to be fetched.
        assert_eq!(h.missing(), set(&[]));
    }

    #[test]
    fn a_transaction_held_again_after_a_discard_waits_for_all_its_parents() {
        let g = genesis();
        let bad = child(&[&g], "bad");
        let y = child(&[&g], "y");
        let m = child(&[&bad, &y], "m");
        let mut h = Harness::new(&[&g]);
        assert!(h.hold(&m));
        assert_eq!(h.pending.discard_descendants(&bad.id()), 1);
        // The same transaction arrives again and waits for both parents.
        assert!(h.hold(&m));
        assert_eq!(h.missing(), set(&[bad.id(), y.id()]));
        // y is accepted; `bad` still is not, so m must keep waiting.
        assert_eq!(h.accept(&y), vec![]);
        assert!(h.pending.contains(&m.id()));
        assert_eq!(h.missing(), set(&[bad.id()]));
    }

    #[test]
    fn release_of_an_unknown_id_returns_nothing() {
        let g = genesis();
        let a1 = child(&[&g], "a1");
        let a2 = child(&[&a1], "a2");
        let mut empty = Pending::default();
        assert_eq!(empty.release(&a1.id()), vec![]);
        assert!(empty.is_empty());

        let mut h = Harness::new(&[&g]);
        assert!(h.hold(&a2));
        assert_eq!(h.pending.release(&TxId([0x55; 32])), vec![]);
        assert_eq!(h.pending.release(&g.id()), vec![]);
        // Releasing the pending one itself releases nothing either.
        assert_eq!(h.pending.release(&a2.id()), vec![]);
        assert_eq!(h.pending.len(), 1);
        assert_eq!(h.missing(), set(&[a1.id()]));
        assert_eq!(h.accept(&a1), vec![a2.id()]);
    }

    #[test]
    #[should_panic(expected = "not pending")]
    fn holding_a_transaction_whose_parents_are_all_accepted_is_a_bug() {
        let g = genesis();
        let a1 = child(&[&g], "a1");
        let mut h = Harness::new(&[&g]);
        h.hold(&a1);
    }

    #[test]
    fn hold_refuses_when_full() {
        // Structure-checked but unsigned: signing 200 000 would be slow, and
        // the set does not look at signatures.
        let template = body(vec![TxId([0; 32])], 1, TxKind::Join);
        let unsigned = |parent: TxId, height: u64| {
            let mut body = template.clone();
            body.parents = vec![Parent {
                id: parent,
                height: height - 1,
            }];
            body.height = height;
            let signed = SignedTx {
                body,
                signature: Signature([0; 64]),
            };
            Tx::from_signed_unverified(signed).unwrap()
        };
        let absent = TxId([0xAA; 32]);
        let mut pending = Pending::default();
        for height in 1..=PENDING_TXS_MAX as u64 {
            assert!(pending.hold(unsigned(absent, height), |_| false));
        }
        assert_eq!(pending.len(), PENDING_TXS_MAX);

        let other = TxId([0xBB; 32]);
        let extra = unsigned(other, 1);
        assert!(!pending.hold(extra.clone(), |_| false));
        assert_eq!(pending.len(), PENDING_TXS_MAX);
        assert!(!pending.contains(&extra.id()));
        // Nothing of it was recorded: its parent is not to fetch, and
        // accepting that parent releases nothing.
        assert_eq!(pending.missing(), &set(&[absent]));
        assert_eq!(pending.release(&other), vec![]);

        // Once room is made, it is held again.
        assert_eq!(pending.discard_descendants(&absent), PENDING_TXS_MAX);
        assert!(pending.is_empty());
        assert!(pending.hold(extra.clone(), |_| false));
        assert_eq!(pending.missing(), &set(&[other]));
    }
}
