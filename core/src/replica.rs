//! One member's copy of one context: the DAG of accepted transactions, its
//! canonical order, and the state and membership that applying it produces.
//!
//! Owns these invariants (asserted in code):
//! - every accepted transaction's parents were accepted before it, and its
//!   height is one more than its highest parent's;
//! - `order` holds every accepted transaction exactly once, sorted by
//!   [`OrderKey`] (height, id): one linear extension of the DAG, the same on
//!   every member that accepted the same transactions;
//! - state and membership are exactly the result of applying `order` from the
//!   genesis, in order: a transaction that sorts before already-applied ones
//!   rolls them back through their undo logs, is applied, and the tail is
//!   re-executed. The cost is proportional to the tail, not the history;
//! - `heads` is the set of accepted transactions that no accepted transaction
//!   names as a parent.
//!
//! Authorization is decided here, at apply time, in the canonical order: a
//! transaction whose author is not (for `Join`: not invited) at its position
//! is applied as rejected, with no effect, identically everywhere. Because
//! an honest member's transactions descend from its own earlier ones, its
//! position in the order comes after the invite, join or leave in its causal
//! past, so this agrees with "a member in its causal past".

use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{ContextId, Hash, Key, MemberId, TxId};
use crate::limits::{APP_BYTES_MAX, CALL_FUEL_MAX, TX_PARENTS_MAX};
use crate::membership::{MemberStatus, Membership, MembershipUndo};
use crate::runtime::{App, AppError, CallError, StateRead};
use crate::state::{FixedHasher, State, UndoEntry, fixed_hasher};
use crate::tx::{OrderKey, SignedTx, Tx, TxKind};

/// How applying one transaction turned out. The same on every member for the
/// same position in the same order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied with its effects.
    Ok,
    /// An application call that failed (trap, unknown method, out of fuel,
    /// the app's own `fail`): applied with no effect.
    Failed(CallError),
    /// Not allowed at its position (for example: its author is not a member):
    /// applied with no effect.
    Rejected(Rejection),
}

/// Why a transaction was applied as rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum Rejection {
    #[error("the author is not a member")]
    AuthorNotMember,
    #[error("the author is not invited")]
    AuthorNotInvited,
}

/// Why a transaction could not be added to the DAG.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum InsertError {
    #[error("transaction {0:?} is already in the DAG")]
    Duplicate(TxId),
    #[error("parent {0:?} is not in the DAG")]
    MissingParent(TxId),
    #[error("height {found} is not one more than the highest parent's ({expected})")]
    BadHeight { expected: u64, found: u64 },
    #[error("a context has one genesis; {0:?} is another")]
    SecondGenesis(TxId),
    #[error("transaction belongs to context {0:?}")]
    WrongContext(ContextId),
}

/// Why a replica could not be created from a genesis and an app blob.
#[derive(Debug, Error)]
pub enum ReplicaError {
    #[error("the genesis transaction is not a create")]
    NotGenesis,
    #[error("the application blob does not match the genesis (hash or size)")]
    AppMismatch,
    #[error("application: {0}")]
    App(#[from] AppError),
    #[error("replaying persisted transaction: {0}")]
    Replay(#[from] InsertError),
}

/// What inserting one transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inserted {
    pub outcome: Outcome,
    /// Already-applied transactions that were rolled back and re-executed
    /// because the new one sorts before them.
    pub reexecuted: usize,
}

/// One position of the canonical order.
#[derive(Debug)]
struct Slot {
    key: OrderKey,
    undo: SlotUndo,
    outcome: Outcome,
}

#[derive(Debug, Default)]
struct SlotUndo {
    state: Vec<UndoEntry>,
    membership: Option<MembershipUndo>,
}

impl StateRead for State {
    fn get(&self, key: &Key) -> Option<&[u8]> {
        State::get(self, key)
    }
}

/// One member's copy of a context.
pub struct Replica {
    context: ContextId,
    genesis: Tx,
    app_blob: Arc<Vec<u8>>,
    app: App,
    txs: HashMap<TxId, Tx, FixedHasher>,
    order: Vec<Slot>,
    heads: BTreeSet<TxId>,
    state: State,
    membership: Membership,
}

impl Replica {
    /// A replica holding only the genesis, applied.
    pub fn new(genesis: Tx, app_blob: Arc<Vec<u8>>) -> Result<Replica, ReplicaError> {
        Replica::rebuild(genesis, app_blob, Vec::new())
    }

    /// A replica holding the genesis and `txs` (any order), applied once in
    /// the canonical order: how a restart rebuilds a context from its
    /// persisted transactions without re-executing anything twice.
    pub fn rebuild(
        genesis: Tx,
        app_blob: Arc<Vec<u8>>,
        mut txs: Vec<Tx>,
    ) -> Result<Replica, ReplicaError> {
        let TxKind::Create {
            app_hash,
            app_bytes,
        } = genesis.kind()
        else {
            return Err(ReplicaError::NotGenesis);
        };
        if app_blob.len() > APP_BYTES_MAX
            || *app_bytes != app_blob.len() as u64
            || *app_hash != Hash(*blake3::hash(&app_blob).as_bytes())
        {
            return Err(ReplicaError::AppMismatch);
        }
        let app = App::compile(&app_blob)?;
        let mut replica = Replica {
            context: genesis.context(),
            genesis: genesis.clone(),
            app_blob,
            app,
            txs: HashMap::with_hasher(fixed_hasher()),
            order: Vec::with_capacity(txs.len() + 1),
            heads: BTreeSet::new(),
            state: State::default(),
            membership: Membership::default(),
        };
        replica.link(genesis)?;
        txs.sort_unstable_by_key(Tx::order_key);
        txs.dedup_by_key(|tx| tx.id());
        for tx in txs {
            if tx.id() != replica.genesis.id() {
                replica.link(tx)?;
            }
        }
        replica.reapply_from(0);
        Ok(replica)
    }

    /// Adds a transaction whose parents are all in the DAG, applying it at its
    /// place in the canonical order.
    pub fn insert(&mut self, tx: Tx) -> Result<Inserted, InsertError> {
        self.check_linkable(&tx)?;
        let position = self.position_for(tx.order_key());
        let reexecuted = self.order.len() - position;
        self.rollback_to(position);
        self.link_at(tx, position);
        self.reapply_from(position);
        Ok(Inserted {
            outcome: self.order[position].outcome.clone(),
            reexecuted,
        })
    }

    /// Where a transaction with `key` goes in the order.
    fn position_for(&self, key: OrderKey) -> usize {
        if cfg!(feature = "canary-unordered-apply") {
            // The planted bug: apply in arrival order.
            return self.order.len();
        }
        self.order.partition_point(|slot| slot.key < key)
    }

    /// Checks that `tx` may join the DAG.
    fn check_linkable(&self, tx: &Tx) -> Result<(), InsertError> {
        if tx.context() != self.context {
            return Err(InsertError::WrongContext(tx.context()));
        }
        if self.txs.contains_key(&tx.id()) {
            return Err(InsertError::Duplicate(tx.id()));
        }
        if matches!(tx.kind(), TxKind::Create { .. }) && !self.txs.is_empty() {
            return Err(InsertError::SecondGenesis(tx.id()));
        }
        let mut highest = None;
        for parent in tx.parents() {
            let parent_tx = self
                .txs
                .get(parent)
                .ok_or(InsertError::MissingParent(*parent))?;
            highest = highest.max(Some(parent_tx.height()));
        }
        if let Some(highest) = highest {
            let expected = highest + 1;
            if tx.height() != expected {
                return Err(InsertError::BadHeight {
                    expected,
                    found: tx.height(),
                });
            }
        }
        Ok(())
    }

    /// Adds to the DAG and appends an unapplied slot (used by `rebuild`, where
    /// transactions arrive sorted).
    fn link(&mut self, tx: Tx) -> Result<(), InsertError> {
        self.check_linkable(&tx)?;
        let position = self.order.len();
        self.link_at(tx, position);
        Ok(())
    }

    /// Adds a checked transaction to the DAG with an unapplied slot at
    /// `position`; every slot from there on must be rolled back.
    fn link_at(&mut self, tx: Tx, position: usize) {
        debug_assert!(
            self.order[position..]
                .iter()
                .all(|s| s.undo.state.is_empty())
        );
        debug_assert!(
            cfg!(feature = "canary-unordered-apply")
                || position == self.order.len()
                || self.order[position].key > tx.order_key()
        );
        for parent in tx.parents() {
            self.heads.remove(parent);
        }
        self.heads.insert(tx.id());
        self.order.insert(
            position,
            Slot {
                key: tx.order_key(),
                undo: SlotUndo::default(),
                outcome: Outcome::Ok,
            },
        );
        self.txs.insert(tx.id(), tx);
    }

    /// Undoes the slots from the end down to `position`.
    fn rollback_to(&mut self, position: usize) {
        for slot in self.order[position..].iter_mut().rev() {
            let undo = std::mem::take(&mut slot.undo);
            self.state.undo(undo.state);
            if let Some(membership) = undo.membership {
                self.membership.undo(membership);
            }
        }
    }

    /// Applies the slots from `position` to the end.
    fn reapply_from(&mut self, position: usize) {
        for index in position..self.order.len() {
            let id = self.order[index].key.id;
            let tx = self.txs[&id].clone();
            let (outcome, undo) =
                execute(&tx, &mut self.app, &mut self.state, &mut self.membership);
            let slot = &mut self.order[index];
            debug_assert!(slot.undo.state.is_empty() && slot.undo.membership.is_none());
            slot.outcome = outcome;
            slot.undo = undo;
        }
        #[cfg(debug_assertions)]
        if self.order.len() < 512 {
            self.state.check_root();
        }
    }

    // ----- queries -------------------------------------------------------

    pub fn context(&self) -> ContextId {
        self.context
    }

    pub fn genesis(&self) -> &Tx {
        &self.genesis
    }

    pub fn app_blob(&self) -> &Arc<Vec<u8>> {
        &self.app_blob
    }

    pub fn contains(&self, id: &TxId) -> bool {
        self.txs.contains_key(id)
    }

    pub fn tx(&self, id: &TxId) -> Option<&Tx> {
        self.txs.get(id)
    }

    /// Transactions applied: every accepted one, including failed and
    /// rejected ones.
    pub fn applied(&self) -> usize {
        self.order.len()
    }

    pub fn heads(&self) -> &BTreeSet<TxId> {
        &self.heads
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn state_root(&self) -> Hash {
        self.state.root()
    }

    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    pub fn status(&self, member: &MemberId) -> Option<MemberStatus> {
        self.membership.status(member)
    }

    /// The outcome of an applied transaction at its current position.
    pub fn outcome(&self, id: &TxId) -> Option<&Outcome> {
        let key = self.txs.get(id)?.order_key();
        let index = self
            .order
            .binary_search_by_key(&key, |slot| slot.key)
            .ok()?;
        Some(&self.order[index].outcome)
    }

    /// Ids in canonical order.
    pub fn order(&self) -> impl Iterator<Item = TxId> + '_ {
        self.order.iter().map(|slot| slot.key.id)
    }

    /// The last key of the order.
    pub fn last_key(&self) -> Option<OrderKey> {
        self.order.last().map(|slot| slot.key)
    }

    /// Parents and height for a transaction this member makes now: its heads
    /// (the highest ones in the order, if there are more than a transaction
    /// may name) and one more than the highest of them.
    pub fn next_parents(&self) -> (Vec<TxId>, u64) {
        let mut heads: Vec<OrderKey> = self
            .heads
            .iter()
            .map(|id| self.txs[id].order_key())
            .collect();
        heads.sort_unstable();
        let keep = heads.len().saturating_sub(TX_PARENTS_MAX);
        let chosen = &heads[keep..];
        let height = chosen.last().map_or(0, |key| key.height) + 1;
        let mut parents: Vec<TxId> = chosen.iter().map(|key| key.id).collect();
        parents.sort_unstable();
        (parents, height)
    }

    /// Runs a read-only call against the current state. Writes are discarded.
    pub fn view(&mut self, method: &str, input: &[u8]) -> Result<Vec<u8>, CallError> {
        self.app
            .call(method, input, &self.state, CALL_FUEL_MAX)
            .map(|output| output.return_value)
    }

    // ----- sync ----------------------------------------------------------

    /// The transactions after `after` in the canonical order (from the start
    /// when `None`), at most `txs_max` of them and about `bytes_max` bytes.
    /// Returns them and, if more follow, the key to continue after.
    pub fn order_after(
        &self,
        after: Option<OrderKey>,
        txs_max: usize,
        bytes_max: usize,
    ) -> (Vec<SignedTx>, Option<OrderKey>) {
        let start = after.map_or(0, |key| self.order.partition_point(|slot| slot.key <= key));
        let mut batch = Vec::new();
        let mut bytes = 0;
        for slot in &self.order[start..] {
            let tx = &self.txs[&slot.key.id];
            let size = encoded_size_estimate(tx);
            if batch.len() == txs_max || (!batch.is_empty() && bytes + size > bytes_max) {
                let last = batch
                    .last()
                    .map(|signed: &SignedTx| self.txs[&signed.body.id()].order_key());
                return (batch, last);
            }
            bytes += size;
            batch.push(tx.signed().clone());
        }
        (batch, None)
    }

    /// The transactions in the past of `want` (of all heads when `want` is
    /// empty) that are not in the past of `have`, highest first in the walk,
    /// returned in canonical order: at most `txs_max` and about `bytes_max`.
    /// The flag says whether that is all of them.
    ///
    /// The walk pops transactions in descending order, so every transaction
    /// is popped after all its children and its mark ("the peer has it") is
    /// final when popped. It stops when only marked ones remain, so its cost
    /// is the missing transactions plus the width of the frontier, not the
    /// history.
    pub fn missing_for(
        &self,
        want: &[TxId],
        have: &[TxId],
        txs_max: usize,
        bytes_max: usize,
    ) -> (Vec<Tx>, bool) {
        let mut peer_has: HashMap<TxId, bool, FixedHasher> = HashMap::with_hasher(fixed_hasher());
        let mut heap: BinaryHeap<OrderKey> = BinaryHeap::new();
        let mut unmarked = 0usize;
        for id in have {
            if let Some(tx) = self.txs.get(id)
                && peer_has.insert(*id, true).is_none()
            {
                heap.push(tx.order_key());
            }
        }
        let roots: Vec<TxId> = if want.is_empty() {
            self.heads.iter().copied().collect()
        } else {
            want.to_vec()
        };
        for id in &roots {
            if let Some(tx) = self.txs.get(id)
                && !peer_has.contains_key(id)
            {
                peer_has.insert(*id, false);
                heap.push(tx.order_key());
                unmarked += 1;
            }
        }
        let mut found = Vec::new();
        let mut bytes = 0;
        while unmarked > 0 {
            let Some(key) = heap.pop() else { break };
            let has = peer_has[&key.id];
            let tx = &self.txs[&key.id];
            if !has {
                unmarked -= 1;
                let size = encoded_size_estimate(tx);
                if found.len() == txs_max || (!found.is_empty() && bytes + size > bytes_max) {
                    found.reverse();
                    return (found, false);
                }
                bytes += size;
                found.push(tx.clone());
            }
            for parent in tx.parents() {
                match peer_has.get_mut(parent) {
                    None => {
                        peer_has.insert(*parent, has);
                        heap.push(self.txs[parent].order_key());
                        if !has {
                            unmarked += 1;
                        }
                    }
                    Some(mark) if has && !*mark => {
                        *mark = true;
                        unmarked -= 1;
                    }
                    Some(_) => {}
                }
            }
        }
        found.reverse();
        (found, true)
    }
}

/// About the encoded size of a transaction, for batch budgets.
pub fn encoded_size_estimate(tx: &Tx) -> usize {
    let kind = match tx.kind() {
        TxKind::Call { method, input } => method.len() + input.len() + 8,
        _ => 40,
    };
    160 + 33 * tx.parents().len() + kind
}

/// Applies one transaction at the current end of the applied prefix.
fn execute(
    tx: &Tx,
    app: &mut App,
    state: &mut State,
    membership: &mut Membership,
) -> (Outcome, SlotUndo) {
    let author = tx.author();
    let author_status = membership.status(&author);
    let is_member = author_status == Some(MemberStatus::Member);
    let mut undo = SlotUndo::default();
    let outcome = match tx.kind() {
        TxKind::Create { .. } => {
            undo.membership = Some(membership.set(author, MemberStatus::Member));
            Outcome::Ok
        }
        TxKind::Invite { .. } | TxKind::Leave | TxKind::Call { .. } if !is_member => {
            Outcome::Rejected(Rejection::AuthorNotMember)
        }
        TxKind::Invite { member } => {
            if !membership.is_member(member) {
                undo.membership = Some(membership.set(*member, MemberStatus::Invited));
            }
            Outcome::Ok
        }
        TxKind::Join if author_status != Some(MemberStatus::Invited) => {
            Outcome::Rejected(Rejection::AuthorNotInvited)
        }
        TxKind::Join => {
            undo.membership = Some(membership.set(author, MemberStatus::Member));
            Outcome::Ok
        }
        TxKind::Leave => {
            undo.membership = Some(membership.set(author, MemberStatus::Left));
            Outcome::Ok
        }
        TxKind::Call { method, input } => match app.call(method, input, state, CALL_FUEL_MAX) {
            Ok(output) => {
                undo.state = state.apply(output.writes);
                Outcome::Ok
            }
            Err(error) => Outcome::Failed(error),
        },
    };
    (outcome, undo)
}
