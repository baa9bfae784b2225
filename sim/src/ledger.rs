//! The acknowledged ledger: every transaction a node reported to its caller
//! as accepted, and which nodes have ever applied it. It backs the always-on
//! check `acknowledged(c)`: nothing acknowledged is lost, whoever made it.
//!
//! A simulated node persists a transaction it makes before the call returns
//! (the world drains its records first), so every transaction a node makes
//! is acknowledged. At the end of a run, a transaction must be on every
//! live member of its context in every partition group that holds a
//! *witness*: a node that is up at the end and applied the transaction at
//! some time, its maker included, and that either still holds the context
//! or applied it before it authored its leave. So:
//! - a maker that is up (a member, or one that has left: its leave was
//!   acknowledged only once a member had applied it, and everything it made
//!   before) is a witness of everything it made;
//! - a leaver hands on what its leave descends from, not what it applied
//!   after authoring it: once its copy is deleted, a transaction it applied
//!   while leaving is the acknowledging members' to keep (they may have it
//!   from its maker, and lose it with the maker's last copy), so such a
//!   leaver is no witness of it;
//! - a maker that crashed for good after its transaction left it, to a node
//!   that is up at the end, still has a witness there: that node must not
//!   have lost it, and the others must have it from it;
//! - a transaction whose every holder crashed for good has no witness and
//!   is not required: nothing could recover it.
//!
//! Today's `all_accepted(c)` compares what live members hold now; this
//! compares with what was ever acknowledged and applied, so a transaction a
//! live node applied and then lost (a record not persisted, a restore that
//! skips one), once its maker is gone, fails here and nowhere else.
//!
//! A crash may lose records a node had not synced yet (`crate::disk`): the
//! transactions they held were never revealed by it, and it is no witness
//! of them any more.
//!
//! Invariant: a node's bit is set only by an `Applied` event of that node,
//! or by its making the transaction, and cleared only when a crash loses
//! its record of it. The memory is two bits per node per
//! transaction made (applied while holding the copy, applied while
//! leaving), plus an index entry.

use ctx_core::tx::{OrderKey, SignedTx};
use ctx_core::{ContextId, TxId};
use foldhash::fast::FixedState;
use hashbrown::HashMap;

/// One acknowledged transaction.
#[derive(Clone, Copy, Debug)]
pub struct Acknowledged {
    pub context: ContextId,
    pub key: OrderKey,
    pub maker: usize,
}

/// What was acknowledged, in the order made, and who applied it.
pub struct Ledger {
    /// Bitset words per transaction: one bit per node.
    words: usize,
    made: Vec<Acknowledged>,
    /// The nodes that applied `made[i]` before they authored a leave (or
    /// made it): `applied[i * words..(i + 1) * words]`.
    applied: Vec<u64>,
    /// The nodes that applied `made[i]` while leaving, laid out the same.
    applied_leaving: Vec<u64>,
    index: HashMap<TxId, usize, FixedState>,
}

impl Ledger {
    pub fn new(nodes: usize) -> Self {
        Ledger {
            words: nodes.div_ceil(64).max(1),
            made: Vec::new(),
            applied: Vec::new(),
            applied_leaving: Vec::new(),
            index: HashMap::with_hasher(FixedState::with_seed(11)),
        }
    }

    /// `maker` made `tx` and reported it accepted: the maker holds it.
    pub fn made(&mut self, maker: usize, tx: &SignedTx) {
        let id = tx.body.id();
        if self.index.contains_key(&id) {
            return;
        }
        self.index.insert(id, self.made.len());
        self.made.push(Acknowledged {
            context: tx.body.context,
            key: OrderKey {
                height: tx.body.height,
                id,
            },
            maker,
        });
        self.applied.resize(self.applied.len() + self.words, 0);
        self.applied_leaving.resize(self.applied.len(), 0);
        self.applied(maker, &id, false);
    }

    /// `node` applied `tx` (for the first time in one of its lives), while
    /// leaving the context or not.
    pub fn applied(&mut self, node: usize, tx: &TxId, leaving: bool) {
        // Made by no simulated node (a genesis is made too): nothing
        // acknowledged.
        let Some((word, bit)) = self.bit_of(node, tx) else {
            return;
        };
        let bits = if leaving {
            &mut self.applied_leaving
        } else {
            &mut self.applied
        };
        bits[word] |= bit;
    }

    /// A crash lost `node`'s record of `tx` before it was synced: nothing
    /// revealed that `node` held it, and it no longer does.
    pub fn lost(&mut self, node: usize, tx: &TxId) {
        let Some((word, bit)) = self.bit_of(node, tx) else {
            return;
        };
        self.applied[word] &= !bit;
        self.applied_leaving[word] &= !bit;
    }

    /// Whether some simulated node made `tx`.
    pub fn knows(&self, tx: &TxId) -> bool {
        self.index.contains_key(tx)
    }

    /// Where `node`'s bit for `tx` lies: the word and its mask, if `tx` was
    /// made by a simulated node.
    fn bit_of(&self, node: usize, tx: &TxId) -> Option<(usize, u64)> {
        let at = *self.index.get(tx)?;
        debug_assert!(node / 64 < self.words, "node {node} out of range");
        Some((at * self.words + node / 64, 1 << (node % 64)))
    }

    /// The acknowledged transactions of `context`, in the order made, each
    /// with the nodes that ever applied it and whether each applied it only
    /// while leaving.
    pub fn of(
        &self,
        context: ContextId,
    ) -> impl Iterator<Item = (Acknowledged, impl Iterator<Item = (usize, bool)> + '_)> + '_ {
        self.made
            .iter()
            .enumerate()
            .filter(move |(_, made)| made.context == context)
            .map(|(at, made)| (*made, self.witnesses(at)))
    }

    /// The nodes that applied `made[at]`, each with whether it applied it
    /// only while leaving.
    fn witnesses(&self, at: usize) -> impl Iterator<Item = (usize, bool)> + '_ {
        let words = at * self.words..(at + 1) * self.words;
        let holding = &self.applied[words.clone()];
        let leaving = &self.applied_leaving[words];
        holding
            .iter()
            .zip(leaving)
            .enumerate()
            .flat_map(|(w, (&holding, &leaving))| {
                let leaving_only = leaving & !holding;
                (0..64)
                    .filter(move |bit| (holding | leaving_only) & (1 << bit) != 0)
                    .map(move |bit| (w * 64 + bit, leaving_only & (1 << bit) != 0))
            })
    }
}
