//! One member's copy of one context: the DAG of accepted transactions, its
//! canonical order, and the state and membership that applying it produces.
//!
//! Owns these invariants (asserted in code):
//! - every accepted transaction's parents were accepted before it, and its
//!   height is one more than its highest parent's;
//! - `order` holds every accepted transaction exactly once (once settled;
//!   between settles, those inserted since wait in `unsettled`), sorted by
//!   [`OrderKey`] (height, id): one linear extension of the DAG, the same on
//!   every member that accepted the same transactions;
//! - state and membership are exactly the result of applying
//!   `order[..applied_len]` from the genesis, in order, and every slot from
//!   `applied_len` on is unapplied (no undo). A transaction that sorts before
//!   applied ones rolls them back through their undo logs and joins the DAG;
//!   [`Replica::settle`] then merges everything inserted since into the
//!   order's unapplied tail (one merge, not one shift of the tail per
//!   transaction) and applies that tail. Inserts are deferred until a
//!   settle, so a batch that lands in the past rolls each applied slot back
//!   at most once and re-executes the tail once, not once per transaction
//!   ([`Replica::insert`] is one deferred insert and a settle). The cost is
//!   proportional to the tail, not the history;
//! - nothing reads state, membership or outcomes while the replica is not
//!   settled (`applied_len == order.len()` and nothing waits to be merged):
//!   every such query asserts it, so
//!   a caller that forgot to settle is a bug report, never a stale answer;
//! - `heads` is the set of accepted transactions that no accepted transaction
//!   names as a parent;
//! - no insertion lands in the stable prefix (every slot below
//!   [`Replica::stable_len`]): `insert_deferred` refuses a transaction below
//!   the stable frontier (`crate::stability`), and asserts that what it
//!   rolls back starts at or after the stable prefix;
//! - the stable prefix keeps no undo logs: nothing can roll it back, so a
//!   settle drops the undo of every slot that became stable
//!   (`order[..compacted_len]` has none, and `compacted_len <=
//!   stable_len`).
//!
//! Authorization is decided here, at apply time, in the canonical order: a
//! transaction whose author is not (for `Join`: not invited) at its position
//! is applied as rejected, with no effect, identically everywhere. Because
//! an honest member's transactions descend from its own earlier ones, its
//! position in the order comes after the invite, join or leave in its causal
//! past, so this agrees with "a member in its causal past".

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::{Checkpoint, CheckpointHeader, EntriesHasher, next_cut};
use crate::ids::{ContextId, Hash, Key, MemberId, TxId};
use crate::limits::{APP_BYTES_MAX, CALL_FUEL_MAX, TX_PARENTS_MAX};
use crate::membership::{MemberStatus, Membership, MembershipUndo};
use crate::runtime::{App, AppError, Application, CallError, RUNTIME_VERSION, StateRead};
use crate::stability::{Announcement, Stability};
use crate::state::{FixedHasher, State, UndoEntry, fixed_hasher};
use crate::tx::{OrderKey, Parent, SignedTx, Tx, TxKind};

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
    #[error("transaction {0} is already in the DAG")]
    Duplicate(TxId),
    #[error("parent {0} is not in the DAG")]
    MissingParent(TxId),
    #[error("parent {parent} has height {actual}, not {claimed} as its child says")]
    ParentHeight {
        parent: TxId,
        claimed: u64,
        actual: u64,
    },
    #[error("a context has one genesis; {0} is another")]
    SecondGenesis(TxId),
    #[error("transaction belongs to context {0}")]
    WrongContext(ContextId),
    #[error(
        "transaction {tx} of height {height} would land in the stable prefix (every transaction below height {frontier} is stable): its author broke its promise"
    )]
    InsideStablePrefix {
        tx: TxId,
        height: u64,
        frontier: u64,
    },
}

/// Why a replica could not be created from a genesis and an app blob.
#[derive(Debug, Error)]
pub enum ReplicaError {
    #[error("the genesis transaction is not a create")]
    NotGenesis,
    #[error("the application blob does not match the genesis (hash or size)")]
    AppMismatch,
    #[error(
        "the context runs runtime version {context}, and this build runs version {supported} only: it would execute the context's calls differently"
    )]
    RuntimeVersion { context: u32, supported: u32 },
    #[error("application: {0}")]
    App(#[from] AppError),
    #[error("replaying persisted transaction: {0}")]
    Replay(#[from] InsertError),
    #[error("checkpoint refused: {0}")]
    Checkpoint(String),
}

/// What a settle did: the transactions inserted since the previous settle,
/// with their outcomes at their first execution, in canonical order, and how
/// many already-applied slots were rolled back and re-executed for them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    pub outcomes: Vec<(TxId, Outcome)>,
    pub reexecuted: usize,
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

impl Slot {
    fn unapplied(key: OrderKey) -> Slot {
        Slot {
            key,
            undo: SlotUndo::default(),
            outcome: Outcome::Ok,
        }
    }
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
    app: Box<dyn Application>,
    txs: HashMap<TxId, Tx, FixedHasher>,
    order: Vec<Slot>,
    /// How much of `order` is applied: `order[..applied_len]`.
    applied_len: usize,
    /// How much of `order` has dropped its undo logs (it is stable):
    /// `order[..compacted_len]`.
    compacted_len: usize,
    /// Keys of the transactions inserted since the last settle.
    unsettled: Vec<OrderKey>,
    /// Applied slots rolled back since the last settle (each to be
    /// re-executed once by it).
    rolled_back: usize,
    /// Applied slots re-executed over this replica's life (not counting the
    /// first application of each transaction).
    reexecuted_total: u64,
    /// Rollbacks over this replica's life whose rolled-back slots held a
    /// membership change (an invite, join or leave re-ordered).
    membership_rollbacks_total: u64,
    heads: BTreeSet<TxId>,
    state: State,
    membership: Membership,
    stability: Stability,
    /// For a copy built from a checkpoint: what it stands on instead of the
    /// transactions below the cut, which it does not hold.
    base: Option<Base>,
    checkpoints: Checkpoints,
}

/// What a copy built from a checkpoint holds of the prefix it was not
/// given: how many transactions it had, everything under which height, and
/// the heights of those that were still heads.
#[derive(Clone, Debug)]
struct Base {
    frontier: u64,
    applied: usize,
    heads: BTreeMap<TxId, u64>,
}

/// The checkpoints a copy takes as its stable prefix passes each cut of the
/// schedule (`crate::checkpoint`).
#[derive(Debug)]
struct Checkpoints {
    /// The schedule's smallest interval; 0 until the owner sets it (a copy
    /// no node owns takes none).
    interval_min: u64,
    /// The latest one taken (or the one this copy stands on).
    latest: Option<Arc<Checkpoint>>,
    /// Whether `latest` was taken here (not loaded from another member).
    latest_taken: bool,
    /// The next cut.
    next_height: u64,
    /// The stable prefix's heads so far (for the next cut's header): the
    /// transactions made stable that no stable one names as a parent.
    stable_heads: BTreeMap<TxId, u64>,
}

/// Whether this build runs calls as `runtime_version` says: a context of
/// another version is refused, never executed differently.
pub fn check_runtime_version(runtime_version: u32) -> Result<(), ReplicaError> {
    if runtime_version != RUNTIME_VERSION {
        return Err(ReplicaError::RuntimeVersion {
            context: runtime_version,
            supported: RUNTIME_VERSION,
        });
    }
    Ok(())
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
        txs: Vec<Tx>,
    ) -> Result<Replica, ReplicaError> {
        Replica::check_app(&genesis, &app_blob)?;
        let app = App::compile(&app_blob)?;
        Replica::assemble(genesis, app_blob, Box::new(app), txs)
    }

    /// [`Replica::rebuild`] with the application already at hand: `app` must
    /// behave as the module `app_blob` does (the benchmarks run the bundled
    /// apps written in Rust this way).
    pub fn rebuild_with(
        genesis: Tx,
        app_blob: Arc<Vec<u8>>,
        app: Box<dyn Application>,
        txs: Vec<Tx>,
    ) -> Result<Replica, ReplicaError> {
        Replica::check_app(&genesis, &app_blob)?;
        Replica::assemble(genesis, app_blob, app, txs)
    }

    /// Links `genesis` and `txs` and applies them once; the app is checked.
    fn assemble(
        genesis: Tx,
        app_blob: Arc<Vec<u8>>,
        app: Box<dyn Application>,
        mut txs: Vec<Tx>,
    ) -> Result<Replica, ReplicaError> {
        let mut replica = Replica {
            context: genesis.context(),
            genesis: genesis.clone(),
            app_blob,
            app,
            txs: HashMap::with_capacity_and_hasher(txs.len() + 1, fixed_hasher()),
            order: Vec::with_capacity(txs.len() + 1),
            applied_len: 0,
            compacted_len: 0,
            unsettled: Vec::new(),
            rolled_back: 0,
            reexecuted_total: 0,
            membership_rollbacks_total: 0,
            heads: BTreeSet::new(),
            state: State::default(),
            membership: Membership::default(),
            stability: Stability::default(),
            base: None,
            checkpoints: Checkpoints {
                interval_min: 0,
                latest: None,
                latest_taken: false,
                next_height: u64::MAX,
                stable_heads: BTreeMap::new(),
            },
        };
        replica.link(genesis)?;
        txs.sort_unstable_by_key(Tx::order_key);
        txs.dedup_by_key(|tx| tx.id());
        for tx in txs {
            if tx.id() != replica.genesis.id() {
                replica.link(tx)?;
            }
        }
        replica.apply_tail();
        replica.stability.refresh();
        debug_assert!(replica.is_settled());
        Ok(replica)
    }

    /// A copy that stands on `checkpoint` (taken by a copy of the context
    /// as its stable prefix passed the cut, and checked by the caller)
    /// instead of the transactions below the cut: it holds none of them,
    /// takes a parent below the cut on its height, and is given the rest as
    /// usual. Its checkpoints continue the schedule from this one.
    pub fn from_checkpoint(
        genesis: Tx,
        app_blob: Arc<Vec<u8>>,
        checkpoint: Arc<Checkpoint>,
    ) -> Result<Replica, ReplicaError> {
        Replica::check_app(&genesis, &app_blob)?;
        let app = App::compile(&app_blob)?;
        Replica::on_checkpoint(genesis, app_blob, Box::new(app), checkpoint)
    }

    /// [`Replica::from_checkpoint`] with the application already at hand.
    fn on_checkpoint(
        genesis: Tx,
        app_blob: Arc<Vec<u8>>,
        app: Box<dyn Application>,
        checkpoint: Arc<Checkpoint>,
    ) -> Result<Replica, ReplicaError> {
        let header = &checkpoint.header;
        if header.context != genesis.context() || header.applied == 0 || header.height == 0 {
            return Err(ReplicaError::Checkpoint(
                "it is not a checkpoint of this context".into(),
            ));
        }
        if header
            .heads
            .iter()
            .any(|(_, height)| *height >= header.height)
        {
            return Err(ReplicaError::Checkpoint(
                "a head is not below the cut".into(),
            ));
        }
        let heads: BTreeMap<TxId, u64> = header.heads.iter().copied().collect();
        let applied = usize::try_from(header.applied)
            .map_err(|_| ReplicaError::Checkpoint("too many transactions".into()))?;
        Ok(Replica {
            context: genesis.context(),
            genesis,
            app_blob,
            app,
            txs: HashMap::with_hasher(fixed_hasher()),
            order: Vec::new(),
            applied_len: 0,
            compacted_len: 0,
            unsettled: Vec::new(),
            rolled_back: 0,
            reexecuted_total: 0,
            membership_rollbacks_total: 0,
            heads: heads.keys().copied().collect(),
            state: checkpoint.state(),
            membership: header.membership(),
            stability: Stability::from_checkpoint(&header.stability, header.height),
            base: Some(Base {
                frontier: header.height,
                applied,
                heads: heads.clone(),
            }),
            checkpoints: Checkpoints {
                interval_min: header.interval_min,
                next_height: header.next_height(),
                stable_heads: heads,
                latest: Some(checkpoint),
                latest_taken: false,
            },
        })
    }

    /// A copy standing on `checkpoint` and holding `txs` above its cut (any
    /// order; those below it are skipped), applied once: how a restart
    /// rebuilds a context from its latest checkpoint and the records after
    /// it, replaying only the tail.
    pub fn rebuild_on_checkpoint(
        genesis: Tx,
        app_blob: Arc<Vec<u8>>,
        checkpoint: Arc<Checkpoint>,
        txs: Vec<Tx>,
    ) -> Result<Replica, ReplicaError> {
        Replica::check_app(&genesis, &app_blob)?;
        let app = App::compile(&app_blob)?;
        Replica::rebuild_on_checkpoint_with(genesis, app_blob, Box::new(app), checkpoint, txs)
    }

    /// [`Replica::rebuild_on_checkpoint`] with the application already at
    /// hand: `app` must behave as the module `app_blob` does (the SDK's
    /// conformance tests run an app's native and compiled builds this way).
    pub fn rebuild_on_checkpoint_with(
        genesis: Tx,
        app_blob: Arc<Vec<u8>>,
        app: Box<dyn Application>,
        checkpoint: Arc<Checkpoint>,
        mut txs: Vec<Tx>,
    ) -> Result<Replica, ReplicaError> {
        Replica::check_app(&genesis, &app_blob)?;
        let cut = checkpoint.header.height;
        let mut replica = Replica::on_checkpoint(genesis, app_blob, app, checkpoint)?;
        txs.retain(|tx| tx.height() >= cut);
        txs.sort_unstable_by_key(Tx::order_key);
        txs.dedup_by_key(|tx| tx.id());
        for tx in txs {
            replica.link(tx)?;
        }
        replica.apply_tail();
        replica.stability.refresh();
        debug_assert!(replica.is_settled());
        Ok(replica)
    }

    /// Drops the bodies and order slots of every transaction below the cut
    /// of the latest checkpoint: the copy then stands on it, as one built
    /// from it does (`from_checkpoint`), holding the heads among them as
    /// heights only. A late duplicate of a dropped transaction is still
    /// recognized (`covers`) and ignored. Returns how many were dropped.
    pub fn fold(&mut self) -> usize {
        assert!(self.is_settled(), "only a settled copy folds");
        let Some(checkpoint) = &self.checkpoints.latest else {
            return 0;
        };
        let cut = checkpoint.header.height;
        let applied = checkpoint.header.applied;
        if self.base.as_ref().is_some_and(|base| base.frontier >= cut) {
            return 0;
        }
        let position = self.order.partition_point(|slot| slot.key.height < cut);
        assert!(
            position <= self.compacted_len,
            "everything below a checkpoint's cut is stable and compacted"
        );
        let heads: BTreeMap<TxId, u64> = self
            .heads
            .iter()
            .filter_map(|id| Some((*id, self.height_of(id)?)))
            .filter(|(_, height)| *height < cut)
            .collect();
        for slot in self.order.drain(..position) {
            self.txs.remove(&slot.key.id);
        }
        self.applied_len -= position;
        self.compacted_len -= position;
        let base_applied = self.base_applied() + position;
        assert_eq!(
            base_applied as u64, applied,
            "the checkpoint counts exactly the transactions below its cut"
        );
        self.base = Some(Base {
            frontier: cut,
            applied: base_applied,
            heads,
        });
        position
    }

    /// How many transactions of height below `height` this copy holds
    /// (those a checkpoint it stands on covers included).
    pub fn held_below(&self, height: u64) -> usize {
        let base = self.base.as_ref().map_or(0, |base| {
            debug_assert!(base.frontier <= height, "asked above its own cut");
            base.applied
        });
        base + self.order.partition_point(|slot| slot.key.height < height)
            + self
                .unsettled
                .iter()
                .filter(|key| key.height < height)
                .count()
    }

    /// The latest checkpoint this copy took (or stands on).
    pub fn checkpoint(&self) -> Option<&Arc<Checkpoint>> {
        self.checkpoints.latest.as_ref()
    }

    /// The latest checkpoint this copy took itself, from its own prefix
    /// (not one it stands on, loaded from another member): what it may
    /// vouch for.
    pub fn checkpoint_taken(&self) -> Option<&Arc<Checkpoint>> {
        self.checkpoints
            .latest
            .as_ref()
            .filter(|_| self.checkpoints.latest_taken)
    }

    /// Starts the checkpoint schedule with cuts at least `interval_min`
    /// heights apart (the owner sets it before anything becomes stable; a
    /// copy standing on a checkpoint keeps that checkpoint's schedule).
    pub fn set_checkpoint_interval(&mut self, interval_min: u64) {
        assert!(interval_min > 0, "cuts are at least one height apart");
        if self.checkpoints.latest.is_some() {
            return;
        }
        assert_eq!(
            self.compacted_len, 0,
            "the schedule starts before anything is stable"
        );
        self.checkpoints.interval_min = interval_min;
        self.checkpoints.next_height = next_cut(0, 0, interval_min);
    }

    /// Whether `genesis` creates a context and names `app_blob`.
    pub(crate) fn check_app(genesis: &Tx, app_blob: &[u8]) -> Result<(), ReplicaError> {
        let TxKind::Create {
            app_hash,
            app_bytes,
            runtime_version,
        } = genesis.kind()
        else {
            return Err(ReplicaError::NotGenesis);
        };
        check_runtime_version(*runtime_version)?;
        if app_blob.len() > APP_BYTES_MAX
            || *app_bytes != app_blob.len() as u64
            || *app_hash != Hash(*blake3::hash(app_blob).as_bytes())
        {
            return Err(ReplicaError::AppMismatch);
        }
        Ok(())
    }

    /// Adds a transaction whose parents are all in the DAG, applying it at its
    /// place in the canonical order: [`Replica::insert_deferred`] and
    /// [`Replica::settle`], on a settled replica (the local author's path,
    /// which needs the outcome at once).
    pub fn insert(&mut self, tx: Tx) -> Result<Inserted, InsertError> {
        debug_assert!(self.is_settled(), "an immediate insert starts settled");
        let id = tx.id();
        self.insert_deferred(tx)?;
        let settled = self.settle();
        debug_assert_eq!(settled.outcomes.len(), 1);
        let (settled_id, outcome) = settled.outcomes.into_iter().next().expect("inserted");
        debug_assert_eq!(settled_id, id);
        Ok(Inserted {
            outcome,
            reexecuted: settled.reexecuted,
        })
    }

    /// Adds a transaction whose parents are all in the DAG at its place in
    /// the canonical order, unapplied: the applied slots at or after it are
    /// rolled back (each at most once until the next settle), and
    /// [`Replica::settle`] applies it and re-executes the tail. Until then
    /// state, membership and outcomes may not be read.
    pub fn insert_deferred(&mut self, tx: Tx) -> Result<(), InsertError> {
        self.check_linkable(&tx)?;
        let key = tx.order_key();
        let frontier = self.stability.frontier();
        if key.height < frontier {
            return Err(InsertError::InsideStablePrefix {
                tx: key.id,
                height: key.height,
                frontier,
            });
        }
        let position = self.position_for(key);
        debug_assert!(
            cfg!(feature = "canary-unordered-apply") || position >= self.stable_len(),
            "an insertion lands after the stable prefix"
        );
        if position < self.applied_len {
            self.rolled_back += self.applied_len - position;
            let slots = &self.order[position..self.applied_len];
            if slots.iter().any(|slot| slot.undo.membership.is_some()) {
                self.membership_rollbacks_total += 1;
            }
            self.rollback_to(position);
        }
        debug_assert!(self.applied_len <= position);
        // Into the DAG now; into the order at the settle, all at once (a
        // merge, not one shift of the tail per transaction).
        self.link_dag(&tx);
        self.txs.insert(key.id, tx);
        self.unsettled.push(key);
        Ok(())
    }

    /// Whether everything stable is compacted (its undo logs dropped, the
    /// cuts it passed taken): so whenever the copy is settled, whatever
    /// moved its stable frontier (a settle, an announcement, its owner).
    pub fn is_compacted(&self) -> bool {
        !self.is_settled() || self.compacted_len == self.stable_len()
    }

    /// Whether every transaction in the order is applied: state, membership
    /// and outcomes are current and may be read.
    pub fn is_settled(&self) -> bool {
        self.applied_len == self.order.len() && self.unsettled.is_empty()
    }

    /// Applies the unapplied tail of the order once, and reports, for the
    /// transactions inserted since the last settle, their outcomes (in
    /// canonical order) and how many already-applied slots were re-executed.
    pub fn settle(&mut self) -> Settled {
        debug_assert_eq!(
            self.order.len() - self.applied_len,
            self.rolled_back,
            "the unapplied tail is what was rolled back"
        );
        let keys = self.merge_unsettled();
        self.apply_tail();
        self.stability.refresh();
        self.compact();
        let outcomes = keys
            .into_iter()
            .map(|key| {
                let index = self
                    .index_of(key)
                    .expect("an inserted transaction is in the order");
                (key.id, self.order[index].outcome.clone())
            })
            .collect();
        let reexecuted = std::mem::take(&mut self.rolled_back);
        self.reexecuted_total += reexecuted as u64;
        debug_assert!(self.is_settled());
        Settled {
            outcomes,
            reexecuted,
        }
    }

    /// The position of `key` in the order.
    fn index_of(&self, key: OrderKey) -> Option<usize> {
        if cfg!(feature = "canary-unordered-apply") {
            // The planted bug leaves the order unsorted.
            return self.order.iter().position(|slot| slot.key == key);
        }
        self.order.binary_search_by_key(&key, |slot| slot.key).ok()
    }

    /// Already-applied slots re-executed because a transaction landed before
    /// them, over this replica's life (first applications not counted).
    pub fn reexecuted_total(&self) -> u64 {
        self.reexecuted_total
    }

    /// Insertions over this replica's life that rolled back a membership
    /// change (an applied invite, join or leave re-ordered behind them).
    pub fn membership_rollbacks_total(&self) -> u64 {
        self.membership_rollbacks_total
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
        if matches!(tx.kind(), TxKind::Create { .. })
            && (!self.txs.is_empty() || self.base.is_some())
        {
            return Err(InsertError::SecondGenesis(tx.id()));
        }
        // The height is one more than the highest claimed parent height
        // (`tx::check_structure`); each claim must be true.
        // A parent below a snapshot's frontier that is not a head there is
        // in the prefix the snapshot stands for: taken on its height.
        for parent in tx.parents() {
            let actual = match self.height_of(&parent.id) {
                Some(actual) => actual,
                None if self
                    .base
                    .as_ref()
                    .is_some_and(|b| parent.height < b.frontier) =>
                {
                    continue;
                }
                None => return Err(InsertError::MissingParent(parent.id)),
            };
            if actual != parent.height {
                return Err(InsertError::ParentHeight {
                    parent: parent.id,
                    claimed: parent.height,
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Adds to the DAG and appends an unapplied slot (used by `rebuild`, where
    /// transactions arrive sorted).
    fn link(&mut self, tx: Tx) -> Result<(), InsertError> {
        self.check_linkable(&tx)?;
        debug_assert!(
            self.order
                .last()
                .is_none_or(|last| last.key < tx.order_key()),
            "linked in order"
        );
        self.link_dag(&tx);
        self.order.push(Slot::unapplied(tx.order_key()));
        self.txs.insert(tx.id(), tx);
        Ok(())
    }

    /// Adds a checked transaction to the DAG's heads and the stability
    /// facts (its slot in the order comes with `link` or the settle).
    fn link_dag(&mut self, tx: &Tx) {
        for parent in tx.parent_ids() {
            self.heads.remove(parent);
            if let Some(base) = &mut self.base {
                base.heads.remove(parent);
            }
        }
        self.heads.insert(tx.id());
        self.stability.link(tx);
    }

    /// Puts the transactions inserted since the last settle into the order,
    /// unapplied, with one merge of the unapplied tail (every applied slot
    /// at or after the earliest of them was rolled back); returns their
    /// keys, sorted.
    fn merge_unsettled(&mut self) -> Vec<OrderKey> {
        let mut keys = std::mem::take(&mut self.unsettled);
        if cfg!(feature = "canary-unordered-apply") {
            // The planted bug: apply in arrival order.
            self.order
                .extend(keys.iter().map(|key| Slot::unapplied(*key)));
            keys.sort_unstable();
            return keys;
        }
        keys.sort_unstable();
        debug_assert!(
            keys.first()
                .is_none_or(|first| self.order[..self.applied_len]
                    .last()
                    .is_none_or(|last| last.key < *first)),
            "everything inserted sorts after the applied prefix"
        );
        let tail: Vec<Slot> = self.order.drain(self.applied_len..).collect();
        debug_assert!(
            tail.iter()
                .all(|s| s.undo.state.is_empty() && s.undo.membership.is_none()),
            "the tail is unapplied"
        );
        self.order.reserve(keys.len() + tail.len());
        let mut tail = tail.into_iter().peekable();
        for key in &keys {
            while let Some(slot) = tail.next_if(|slot| slot.key < *key) {
                self.order.push(slot);
            }
            debug_assert!(tail.peek().is_none_or(|slot| slot.key != *key));
            self.order.push(Slot::unapplied(*key));
        }
        self.order.extend(tail);
        keys
    }

    /// Drops the undo logs of the slots that became stable (nothing rolls
    /// them back any more), and takes a checkpoint at every cut the stable
    /// frontier passed.
    fn compact(&mut self) {
        debug_assert!(
            self.is_settled(),
            "only applied slots have undo logs to drop"
        );
        let stable_len = self.stable_len();
        assert!(
            self.compacted_len <= stable_len,
            "the stable prefix only grows"
        );
        let frontier = self.stability.frontier();
        // The planted bug leaves the order unsorted: no cut of it means
        // anything.
        let takes_checkpoints =
            self.checkpoints.interval_min > 0 && !cfg!(feature = "canary-unordered-apply");
        while takes_checkpoints && self.checkpoints.next_height <= frontier {
            let cut = self.checkpoints.next_height;
            let position = self.order.partition_point(|slot| slot.key.height < cut);
            assert!(
                (self.compacted_len..=stable_len).contains(&position),
                "a cut at or below the frontier is in the stable prefix, after the compacted part"
            );
            self.make_stable(position);
            self.take_checkpoint(position, cut);
        }
        self.make_stable(stable_len);
    }

    /// Compacts `order[compacted_len..upto]`: drops its undo logs, takes
    /// its facts into the stable prefix's.
    fn make_stable(&mut self, upto: usize) {
        for slot in &mut self.order[self.compacted_len..upto] {
            slot.undo = SlotUndo::default();
            let tx = &self.txs[&slot.key.id];
            self.stability.link_stable(tx);
            let heads = &mut self.checkpoints.stable_heads;
            for parent in tx.parent_ids() {
                heads.remove(parent);
            }
            heads.insert(tx.id(), tx.height());
        }
        self.compacted_len = self.compacted_len.max(upto);
    }

    /// Takes the checkpoint at `cut`, which is `order[..position]` (and the
    /// base): a copy of the state with the slots from `position` on undone,
    /// sorted. Costs the state and the tail, once per cut.
    fn take_checkpoint(&mut self, position: usize, cut: u64) {
        debug_assert_eq!(position, self.compacted_len);
        // The state at the cut is the state with the applied tail above it
        // undone: read through the tail's undo logs instead of copying the
        // state and undoing them.
        let tail = &self.order[position..self.applied_len];
        let (entries, root) = self
            .state
            .entries_sorted_and_root_before(tail.iter().map(|slot| slot.undo.state.as_slice()));
        let mut membership = self.membership.clone();
        for slot in tail.iter().rev() {
            if let Some(undo) = slot.undo.membership {
                membership.undo(undo);
            }
        }
        #[cfg(debug_assertions)]
        if self.state.len() < 4096 {
            let mut state = self.state.clone();
            for slot in tail.iter().rev() {
                state.undo(slot.undo.state.clone());
            }
            let copied: Vec<(Key, &[u8])> = entries.iter().map(|(k, v)| (*k, v.bytes())).collect();
            assert_eq!(copied, state.entries_sorted(), "the entries at the cut");
            assert_eq!(root, state.root(), "the root at the cut");
        }
        let mut hasher = EntriesHasher::default();
        for (key, value) in &entries {
            hasher.add(key, value.bytes());
        }
        let header = CheckpointHeader {
            context: self.context,
            height: cut,
            applied: (self.base_applied() + position) as u64,
            interval_min: self.checkpoints.interval_min,
            root,
            entries: entries.len() as u64,
            entries_hash: hasher.finish(),
            membership: membership.all().collect(),
            stability: self.stability.prefix_facts(),
            heads: self
                .checkpoints
                .stable_heads
                .iter()
                .map(|(id, height)| (*id, *height))
                .collect(),
        };
        assert!(
            header.heads.iter().all(|(_, height)| *height < cut),
            "a checkpoint's heads are below its cut"
        );
        self.checkpoints.next_height = header.next_height();
        self.checkpoints.latest = Some(Arc::new(Checkpoint::of_stored(header, entries)));
        self.checkpoints.latest_taken = true;
    }

    /// Undoes the applied slots from the last applied one down to
    /// `position`, which becomes the end of the applied prefix.
    fn rollback_to(&mut self, position: usize) {
        debug_assert!(position <= self.applied_len);
        assert!(
            position >= self.compacted_len,
            "a rollback never reaches into the stable prefix, whose undo logs are gone"
        );
        for slot in self.order[position..self.applied_len].iter_mut().rev() {
            let undo = std::mem::take(&mut slot.undo);
            self.state.undo(undo.state);
            if let Some(membership) = undo.membership {
                self.membership.undo(membership);
            }
        }
        self.applied_len = position;
    }

    /// Applies the unapplied slots, from `applied_len` to the end.
    fn apply_tail(&mut self) {
        for index in self.applied_len..self.order.len() {
            let id = self.order[index].key.id;
            let tx = self.txs[&id].clone();
            let (outcome, undo) = execute(
                &tx,
                self.app.as_mut(),
                &mut self.state,
                &mut self.membership,
            );
            let slot = &mut self.order[index];
            debug_assert!(slot.undo.state.is_empty() && slot.undo.membership.is_none());
            slot.outcome = outcome;
            slot.undo = undo;
        }
        self.applied_len = self.order.len();
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

    /// Whether the application has a method `method` to call
    /// ([`Application::has_method`]).
    pub fn has_method(&self, method: &str) -> bool {
        self.app.has_method(method)
    }

    pub fn app_blob(&self) -> &Arc<Vec<u8>> {
        &self.app_blob
    }

    pub fn contains(&self, id: &TxId) -> bool {
        self.txs.contains_key(id)
    }

    /// Whether this copy has `tx` or stands on a checkpoint that covers it
    /// (below the cut, so in the prefix: a late duplicate, since every
    /// transaction below the cut was in it), so that taking it again is
    /// nothing to do.
    pub fn covers(&self, key: &OrderKey) -> bool {
        self.txs.contains_key(&key.id) || self.is_below_base(key.height)
    }

    /// Whether `id` is held or is a head of the checkpoint this copy stands
    /// on (held in effect, without its body).
    pub fn knows(&self, id: &TxId) -> bool {
        self.height_of(id).is_some()
    }

    fn is_below_base(&self, height: u64) -> bool {
        self.base
            .as_ref()
            .is_some_and(|base| height < base.frontier)
    }

    /// Whether a transaction naming `parent` has that parent here: held,
    /// or below the cut of the checkpoint this copy stands on (where it
    /// is taken on its claimed height, as `insert_deferred` does).
    pub fn has_parent(&self, parent: &Parent) -> bool {
        self.height_of(&parent.id).is_some() || self.is_below_base(parent.height)
    }

    pub fn tx(&self, id: &TxId) -> Option<&Tx> {
        self.txs.get(id)
    }

    /// Transactions applied: every accepted one, including failed and
    /// rejected ones (the replica is settled).
    pub fn applied(&self) -> usize {
        self.assert_settled();
        self.base_applied() + self.order.len()
    }

    /// Transactions below the cut of the checkpoint this copy stands on
    /// (0 for a copy with its whole history): the order's positions start
    /// after them.
    pub fn base_len(&self) -> usize {
        self.base_applied()
    }

    /// The cut of the checkpoint this copy stands on, if it does.
    pub fn base_height(&self) -> Option<u64> {
        self.base.as_ref().map(|base| base.frontier)
    }

    /// Transactions of the prefix a checkpoint stood for (0 for a copy with
    /// its whole history).
    fn base_applied(&self) -> usize {
        self.base.as_ref().map_or(0, |base| base.applied)
    }

    /// The height of a transaction held, or of a head a snapshot named.
    fn height_of(&self, id: &TxId) -> Option<u64> {
        match self.txs.get(id) {
            Some(tx) => Some(tx.height()),
            None => self.base.as_ref()?.heads.get(id).copied(),
        }
    }

    /// Transactions accepted (in the DAG and the order), applied or not yet.
    pub fn accepted(&self) -> usize {
        self.base_applied() + self.order.len() + self.unsettled.len()
    }

    /// Readers of state, membership and outcomes call this: reading them
    /// between a deferred insert and its settle would see a stale prefix.
    fn assert_settled(&self) {
        debug_assert!(
            self.is_settled(),
            "read while {} of {} transactions are unapplied: settle first",
            self.order.len() - self.applied_len,
            self.order.len()
        );
    }

    pub fn heads(&self) -> &BTreeSet<TxId> {
        &self.heads
    }

    /// The highest head (a copy always has one).
    pub fn top_head(&self) -> OrderKey {
        self.heads
            .iter()
            .map(|id| OrderKey {
                height: self.height_of(id).expect("a head's height is known"),
                id: *id,
            })
            .max()
            .expect("a copy has heads")
    }

    pub fn state(&self) -> &State {
        self.assert_settled();
        &self.state
    }

    pub fn state_root(&self) -> Hash {
        self.assert_settled();
        self.state.root()
    }

    pub fn membership(&self) -> &Membership {
        self.assert_settled();
        &self.membership
    }

    pub fn status(&self, member: &MemberId) -> Option<MemberStatus> {
        self.assert_settled();
        self.membership.status(member)
    }

    /// The outcome of an applied transaction at its current position.
    pub fn outcome(&self, id: &TxId) -> Option<&Outcome> {
        self.assert_settled();
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

    /// Keys in canonical order.
    pub fn order_keys(&self) -> impl Iterator<Item = OrderKey> + '_ {
        self.order.iter().map(|slot| slot.key)
    }

    /// Ids of the positions `range` of the canonical order.
    pub fn order_range(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = TxId> + '_ {
        self.order[range].iter().map(|slot| slot.key.id)
    }

    /// The last key of the order: for a copy standing on a checkpoint that
    /// holds nothing above it yet, a key just below the cut (what a stream
    /// continues after).
    pub fn last_key(&self) -> Option<OrderKey> {
        match (self.order.last(), &self.base) {
            (Some(slot), _) => Some(slot.key),
            (None, Some(base)) => Some(below_cut(base.frontier)),
            (None, None) => None,
        }
    }

    /// Whether this copy holds every transaction after `after` (from the
    /// genesis, when `None`): a copy standing on a checkpoint holds none
    /// below its cut.
    pub fn holds_after(&self, after: Option<OrderKey>) -> bool {
        match &self.base {
            None => true,
            Some(base) => after.is_some_and(|key| key.height + 1 >= base.frontier),
        }
    }

    /// Parents and height for a transaction this member makes now: its heads
    /// and one more than the highest of them. With more heads than a
    /// transaction may name, the highest ones, and the local member's own
    /// latest transaction in place of the lowest of them, so that what it
    /// makes always descends from everything it made (the chain that
    /// stability rests on, `crate::stability`).
    pub fn next_parents(&self) -> (Vec<Parent>, u64) {
        let mut heads: Vec<OrderKey> = self
            .heads
            .iter()
            .map(|id| OrderKey {
                height: self.height_of(id).expect("a head's height is known"),
                id: *id,
            })
            .collect();
        heads.sort_unstable();
        let keep = heads.len().saturating_sub(TX_PARENTS_MAX);
        let mut chosen = heads[keep..].to_vec();
        let own = self.stability.local_last();
        if keep > 0
            && let Some(own) = own
            && !chosen.contains(&own)
        {
            chosen[0] = own;
        }
        let height = chosen.iter().map(|key| key.height).max().map_or(0, |h| h) + 1;
        let mut parents: Vec<Parent> = chosen
            .iter()
            .map(|key| Parent {
                id: key.id,
                height: key.height,
            })
            .collect();
        parents.sort_unstable();
        (parents, height)
    }

    // ----- stability -------------------------------------------------------

    /// Sets the member whose copy this is (its own transactions bound
    /// nothing once the copy holds `tombstone`, its last transaction before
    /// it left, if it did: `Stability::set_local`; and it names its own
    /// latest when it has too many heads).
    pub fn set_local(&mut self, me: MemberId, tombstone: Option<OrderKey>) {
        self.stability.set_local(me, tombstone);
        if self.is_settled() {
            self.compact();
        }
    }

    pub fn stability(&self) -> &Stability {
        &self.stability
    }

    /// How many transactions at the start of the order are stable: no
    /// transaction this copy does not hold can sort before any of them.
    pub fn stable_len(&self) -> usize {
        if cfg!(feature = "canary-unordered-apply") {
            // The planted bug leaves the order unsorted: no prefix of it
            // means anything.
            return 0;
        }
        let frontier = self.stability.frontier();
        self.order
            .partition_point(|slot| slot.key.height < frontier)
    }

    /// The state root at the stable frontier: that of applying the stable
    /// prefix alone. Costs the unstable tail's writes, not the state.
    pub fn stable_root(&self) -> Hash {
        self.assert_settled();
        let tail = &self.order[self.stable_len()..];
        self.state
            .root_before(tail.iter().map(|slot| slot.undo.state.as_slice()))
    }

    /// The state and membership at the stable frontier (what a checkpoint
    /// holds): a copy of the current ones with the unstable tail undone.
    /// Costs a copy of the state and the tail.
    pub fn stable_state(&self) -> (State, Membership) {
        self.assert_settled();
        let mut state = self.state.clone();
        let mut membership = self.membership.clone();
        for slot in self.order[self.stable_len()..].iter().rev() {
            state.undo(slot.undo.state.clone());
            if let Some(undo) = slot.undo.membership {
                membership.undo(undo);
            }
        }
        debug_assert_eq!(state.root(), self.stable_root());
        (state, membership)
    }

    /// The floor an announcement gives here: `None` unless its author's
    /// `last_own` is held (and is its author's), so that everything the
    /// author made before it is held too; then one more than the highest of
    /// `last_own` and `top` (if held).
    pub fn announcement_floor(&self, announcement: &Announcement) -> Option<u64> {
        let last_own = match self.txs.get(&announcement.last_own) {
            Some(tx) if tx.author() == announcement.author => tx.height(),
            Some(_) => return None,
            // Below the cut of the checkpoint this copy stands on: the
            // prefix's facts name its author's latest there.
            None => {
                self.stability
                    .last_of(&announcement.author)
                    .filter(|key| key.id == announcement.last_own)?
                    .height
            }
        };
        let top = self.height_of(&announcement.top).unwrap_or(0);
        Some(last_own.max(top) + 1)
    }

    /// The floor `announcement` gives here (see
    /// [`Replica::announcement_floor`]) if its author is an identity this
    /// copy tracks and the floor raises what its announcements gave so far.
    pub fn improving_floor(&self, announcement: &Announcement) -> Option<u64> {
        let author = &announcement.author;
        if !self.stability.tracks(author) {
            return None;
        }
        self.announcement_floor(announcement)
            .filter(|floor| self.stability.improves(author, *floor))
    }

    /// Takes a verified announcement's floor (see
    /// [`Replica::announcement_floor`]).
    pub fn announce(&mut self, author: &MemberId, floor: u64) {
        self.stability.announced(author, floor);
        // The frontier may have moved without a transaction: take the
        // cuts it passed now (a writer that stops writing still cuts).
        if self.is_settled() {
            self.compact();
        }
    }

    /// Runs a read-only call against the current state. Writes are discarded.
    pub fn view(&mut self, method: &str, input: &[u8]) -> Result<Vec<u8>, CallError> {
        self.assert_settled();
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
        let txs_max = txs_max.max(1);
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
        let txs_max = txs_max.max(1);
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
            for parent in tx.parent_ids() {
                // Below a snapshot: not here to give.
                let Some(parent_tx) = self.txs.get(parent) else {
                    continue;
                };
                match peer_has.get_mut(parent) {
                    None => {
                        peer_has.insert(*parent, has);
                        heap.push(parent_tx.order_key());
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
        if cfg!(feature = "canary-fetch-off-by-one") && !found.is_empty() {
            // The planted bug: the answer leaves out the lowest transaction
            // of the walk, yet claims to be whole.
            found.pop();
        }
        found.reverse();
        (found, true)
    }
}

/// The greatest key below a cut at `height`: a stream after it starts at
/// the cut.
pub fn below_cut(height: u64) -> OrderKey {
    assert!(height > 0, "a cut is above the genesis");
    OrderKey {
        height: height - 1,
        id: TxId([0xff; 32]),
    }
}

/// About the encoded size of a transaction, for batch budgets.
pub fn encoded_size_estimate(tx: &Tx) -> usize {
    let kind = match tx.kind() {
        TxKind::Call { method, input } => method.len() + input.len() + 8,
        _ => 40,
    };
    160 + 42 * tx.parents().len() + kind
}

/// Applies one transaction at the current end of the applied prefix.
fn execute(
    tx: &Tx,
    app: &mut dyn Application,
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

#[cfg(test)]
mod tests {
    //! Unit tests of one replica, on transactions built and signed by hand
    //! against the bundled kv app.

    use std::sync::OnceLock;

    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::tx::{TX_FORMAT_VERSION, TxBody};

    const CONTEXT: ContextId = ContextId([7; 32]);

    // ----- fixtures --------------------------------------------------------

    /// The kv app, compiled from its text once for all tests.
    fn kv_app() -> Arc<Vec<u8>> {
        static KV: OnceLock<Arc<Vec<u8>>> = OnceLock::new();
        KV.get_or_init(|| {
            let source = include_str!("../../scenarios/apps/kv.wat");
            Arc::new(crate::runtime::wasm_from_source(source.as_bytes()).expect("kv compiles"))
        })
        .clone()
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn member(signer: &SigningKey) -> MemberId {
        MemberId(signer.verifying_key().to_bytes())
    }

    /// Signs a transaction with exactly these fields (parents sorted here).
    fn sign_raw(
        signer: &SigningKey,
        context: ContextId,
        mut parents: Vec<Parent>,
        height: u64,
        kind: TxKind,
    ) -> Tx {
        parents.sort_unstable();
        let body = TxBody {
            version: TX_FORMAT_VERSION,
            context,
            author: member(signer),
            height,
            parents,
            kind,
        };
        Tx::sign(body, signer)
    }

    fn genesis_of(signer: &SigningKey, app: &[u8]) -> Tx {
        let kind = TxKind::Create {
            runtime_version: crate::runtime::RUNTIME_VERSION,
            app_hash: Hash(*blake3::hash(app).as_bytes()),
            app_bytes: app.len() as u64,
        };
        sign_raw(signer, CONTEXT, vec![], 0, kind)
    }

    /// A well-formed child of `parents`: height one more than the highest.
    fn child(signer: &SigningKey, parents: &[&Tx], kind: TxKind) -> Tx {
        let height = parents.iter().map(|p| p.height()).max().expect("parents") + 1;
        let parents = parents.iter().map(|p| Parent::of(p)).collect();
        sign_raw(signer, CONTEXT, parents, height, kind)
    }

    /// kv input: each argument as a u32 LE length followed by its bytes.
    fn args(parts: &[&[u8]]) -> Vec<u8> {
        crate::runtime::encode_args(parts)
    }

    fn call_kind(method: &str, input: Vec<u8>) -> TxKind {
        TxKind::Call {
            method: method.to_owned(),
            input,
        }
    }

    /// A kv `set(k, v)` call.
    fn set(signer: &SigningKey, parents: &[&Tx], k: &str, v: &str) -> Tx {
        child(
            signer,
            parents,
            call_kind("set", args(&[k.as_bytes(), v.as_bytes()])),
        )
    }

    fn invite(signer: &SigningKey, parents: &[&Tx], who: &SigningKey) -> Tx {
        child(
            signer,
            parents,
            TxKind::Invite {
                member: member(who),
            },
        )
    }

    /// The value stored under kv key `k`.
    fn value(replica: &Replica, k: &str) -> Option<Vec<u8>> {
        let key = Key::padded(k.as_bytes()).expect("short key");
        replica.state().get(&key).map(<[u8]>::to_vec)
    }

    fn insert_ok(replica: &mut Replica, tx: &Tx) -> Inserted {
        replica
            .insert(tx.clone())
            .unwrap_or_else(|e| panic!("inserting {:?}: {e}", tx.id()))
    }

    /// A fresh replica of a context created by `creator` with the kv app.
    fn fresh(creator: &SigningKey) -> (Tx, Replica) {
        let app = kv_app();
        let genesis = genesis_of(creator, &app);
        let replica = Replica::new(genesis.clone(), app).expect("replica");
        (genesis, replica)
    }

    /// `inviter` invites `newcomer` after `after`, and the newcomer joins.
    /// Returns (invite, join); the newcomer is then a member.
    fn onboard(
        replica: &mut Replica,
        inviter: &SigningKey,
        after: &Tx,
        newcomer: &SigningKey,
    ) -> (Tx, Tx) {
        let inv = invite(inviter, &[after], newcomer);
        assert_eq!(insert_ok(replica, &inv).outcome, Outcome::Ok);
        let join = child(newcomer, &[&inv], TxKind::Join);
        assert_eq!(insert_ok(replica, &join).outcome, Outcome::Ok);
        assert_eq!(
            replica.status(&member(newcomer)),
            Some(MemberStatus::Member)
        );
        (inv, join)
    }

    fn ids(txs: &[&Tx]) -> Vec<TxId> {
        txs.iter().map(|tx| tx.id()).collect()
    }

    /// The ids of `txs` sorted in canonical order, by (height, id).
    /// What `next_parents` proposes, with the parents as ids.
    fn next_ids(replica: &Replica) -> (Vec<TxId>, u64) {
        let (parents, height) = replica.next_parents();
        (parents.iter().map(|p| p.id).collect(), height)
    }

    fn canonical(txs: &[&Tx]) -> Vec<TxId> {
        let mut keys: Vec<OrderKey> = txs.iter().map(|tx| tx.order_key()).collect();
        keys.sort_unstable();
        keys.into_iter().map(|key| key.id).collect()
    }

    fn set_of(ids: &[TxId]) -> BTreeSet<TxId> {
        ids.iter().copied().collect()
    }

    /// Everything observable about a replica.
    #[derive(Debug, PartialEq, Eq)]
    struct Snapshot {
        root: Hash,
        applied: usize,
        heads: BTreeSet<TxId>,
        order: Vec<TxId>,
        outcomes: Vec<Outcome>,
        members: Vec<(MemberId, MemberStatus)>,
        entries: Vec<(Key, Vec<u8>)>,
        last_key: Option<OrderKey>,
    }

    fn snapshot(replica: &Replica) -> Snapshot {
        let order: Vec<TxId> = replica.order().collect();
        Snapshot {
            root: replica.state_root(),
            applied: replica.applied(),
            heads: replica.heads().clone(),
            outcomes: order
                .iter()
                .map(|id| replica.outcome(id).expect("applied").clone())
                .collect(),
            order,
            members: replica.membership().all().collect(),
            entries: replica
                .state()
                .entries_sorted()
                .into_iter()
                .map(|(k, v)| (k, v.to_vec()))
                .collect(),
            last_key: replica.last_key(),
        }
    }

    // ----- ordering ----------------------------------------------------------

    #[test]
    fn a_genesis_only_replica() {
        let a = key(1);
        let (genesis, replica) = fresh(&a);
        assert_eq!(replica.context(), CONTEXT);
        assert_eq!(replica.genesis(), &genesis);
        assert_eq!(replica.applied(), 1);
        assert_eq!(replica.order().collect::<Vec<_>>(), vec![genesis.id()]);
        assert_eq!(replica.heads(), &set_of(&[genesis.id()]));
        assert_eq!(replica.outcome(&genesis.id()), Some(&Outcome::Ok));
        assert_eq!(replica.status(&member(&a)), Some(MemberStatus::Member));
        assert_eq!(replica.membership().members().count(), 1);
        assert!(replica.state().is_empty());
        assert_eq!(replica.state_root(), State::default().root());
        assert_eq!(replica.last_key(), Some(genesis.order_key()));
        assert_eq!(next_ids(&replica), (vec![genesis.id()], 1));
    }

    #[test]
    fn new_refuses_a_non_genesis_or_a_mismatched_app() {
        let a = key(1);
        let app = kv_app();
        let genesis = genesis_of(&a, &app);
        let not_genesis = set(&a, &[&genesis], "k", "v");
        assert!(matches!(
            Replica::new(not_genesis, app.clone()),
            Err(ReplicaError::NotGenesis)
        ));
        let mut other = app.as_ref().clone();
        other.push(0);
        assert!(matches!(
            Replica::new(genesis.clone(), Arc::new(other)),
            Err(ReplicaError::AppMismatch)
        ));
        // Same size, different bytes: the hash catches it.
        let mut flipped = app.as_ref().clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(
            Replica::new(genesis, Arc::new(flipped)),
            Err(ReplicaError::AppMismatch)
        ));
    }

    #[test]
    fn new_refuses_a_context_of_another_runtime_version() {
        let a = key(1);
        let app = kv_app();
        for version in [0, RUNTIME_VERSION + 1, u32::MAX] {
            let kind = TxKind::Create {
                runtime_version: version,
                app_hash: Hash(*blake3::hash(app.as_slice()).as_bytes()),
                app_bytes: app.len() as u64,
            };
            let genesis = sign_raw(&a, CONTEXT, vec![], 0, kind);
            let refused = Replica::new(genesis, app.clone()).map(|_| ());
            assert_eq!(
                refused.map_err(|e| e.to_string()),
                Err(format!(
                    "the context runs runtime version {version}, and this build runs version \
                     {RUNTIME_VERSION} only: it would execute the context's calls differently"
                ))
            );
        }
    }

    #[test]
    fn a_sibling_inserted_out_of_order_reexecutes_the_tail_and_converges() {
        let a = key(1);
        let (genesis, mut in_order) = fresh(&a);
        // Two concurrent writes of the same key: the one later in the order
        // (the higher id) wins.
        let first = set(&a, &[&genesis], "k", "first");
        let second = set(&a, &[&genesis], "k", "second");
        let (low, high, high_value) = if first.id() < second.id() {
            (first, second, b"second".to_vec())
        } else {
            (second, first, b"first".to_vec())
        };
        // A child of the higher one, at height 2.
        let tail = set(&a, &[&high], "j", "tail");

        for tx in [&low, &high, &tail] {
            assert_eq!(
                insert_ok(&mut in_order, tx),
                Inserted {
                    outcome: Outcome::Ok,
                    reexecuted: 0
                }
            );
        }

        let (_, mut out_of_order) = fresh(&a);
        assert_eq!(insert_ok(&mut out_of_order, &high).reexecuted, 0);
        assert_eq!(insert_ok(&mut out_of_order, &tail).reexecuted, 0);
        assert_eq!(value(&out_of_order, "k"), Some(high_value.clone()));
        // `low` sorts before `high` and `tail`: both are rolled back and
        // re-executed after it.
        assert_eq!(
            insert_ok(&mut out_of_order, &low),
            Inserted {
                outcome: Outcome::Ok,
                reexecuted: 2
            }
        );

        let expected_order = vec![genesis.id(), low.id(), high.id(), tail.id()];
        assert_eq!(in_order.order().collect::<Vec<_>>(), expected_order);
        assert_eq!(snapshot(&out_of_order), snapshot(&in_order));
        assert_eq!(value(&out_of_order, "k"), Some(high_value));
        assert_eq!(value(&out_of_order, "j"), Some(b"tail".to_vec()));
        assert_eq!(out_of_order.heads(), &set_of(&[low.id(), tail.id()]));
    }

    #[test]
    fn insert_errors_leave_the_replica_unchanged() {
        let a = key(1);
        let (genesis, mut replica) = fresh(&a);
        let x = set(&a, &[&genesis], "x", "1");
        let y = set(&a, &[&x], "y", "2");
        insert_ok(&mut replica, &x);
        insert_ok(&mut replica, &y);
        let before = snapshot(&replica);
        assert_eq!(before.applied, 3);

        let unknown = TxId([0xEE; 32]);
        let unknown_at = |height| Parent {
            id: unknown,
            height,
        };
        let missing_parent = sign_raw(
            &a,
            CONTEXT,
            vec![unknown_at(0)],
            1,
            call_kind("set", vec![]),
        );
        // One known, one unknown parent: still refused.
        let half_missing = sign_raw(
            &a,
            CONTEXT,
            vec![Parent::of(&x), unknown_at(1)],
            2,
            call_kind("set", vec![]),
        );
        // `y` is at height 2; a child that says 1 (and so is at 2) lies,
        // and so does one that says `x`, at 1, is at 4.
        let y_lower = Parent {
            id: y.id(),
            height: 1,
        };
        let too_low = sign_raw(
            &a,
            CONTEXT,
            vec![Parent::of(&genesis), y_lower],
            2,
            TxKind::Leave,
        );
        let x_higher = Parent {
            id: x.id(),
            height: 4,
        };
        let too_high = sign_raw(&a, CONTEXT, vec![x_higher], 5, TxKind::Leave);
        let second_genesis = genesis_of(&key(2), &kv_app());
        let foreign = sign_raw(
            &a,
            ContextId([8; 32]),
            vec![Parent::of(&genesis)],
            1,
            TxKind::Leave,
        );
        let cases = [
            (missing_parent, InsertError::MissingParent(unknown)),
            (half_missing, InsertError::MissingParent(unknown)),
            (
                too_low,
                InsertError::ParentHeight {
                    parent: y.id(),
                    claimed: 1,
                    actual: 2,
                },
            ),
            (
                too_high,
                InsertError::ParentHeight {
                    parent: x.id(),
                    claimed: 4,
                    actual: 1,
                },
            ),
            (
                second_genesis.clone(),
                InsertError::SecondGenesis(second_genesis.id()),
            ),
            (foreign, InsertError::WrongContext(ContextId([8; 32]))),
            (x.clone(), InsertError::Duplicate(x.id())),
            (genesis.clone(), InsertError::Duplicate(genesis.id())),
        ];
        for (tx, expected) in cases {
            assert_eq!(replica.insert(tx.clone()), Err(expected));
            assert_eq!(snapshot(&replica), before, "after refusing {tx:?}");
            if !replica.contains(&tx.id()) {
                assert_eq!(replica.tx(&tx.id()), None);
                assert_eq!(replica.outcome(&tx.id()), None);
            }
        }

        // Still usable afterwards.
        let z = set(&a, &[&y], "z", "3");
        assert_eq!(insert_ok(&mut replica, &z).outcome, Outcome::Ok);
        assert_eq!(replica.applied(), 4);
        assert_eq!(value(&replica, "z"), Some(b"3".to_vec()));
    }

    #[test]
    fn heads_follow_a_diamond() {
        let a = key(1);
        let (genesis, mut replica) = fresh(&a);
        let left = set(&a, &[&genesis], "l", "1");
        let right = set(&a, &[&genesis], "r", "1");
        let merge = set(&a, &[&left, &right], "m", "1");
        let after = set(&a, &[&merge], "n", "1");

        assert_eq!(replica.heads(), &set_of(&[genesis.id()]));
        insert_ok(&mut replica, &left);
        assert_eq!(replica.heads(), &set_of(&[left.id()]));
        insert_ok(&mut replica, &right);
        assert_eq!(replica.heads(), &set_of(&[left.id(), right.id()]));
        assert_eq!(next_ids(&replica), (canonical(&[&left, &right]), 2));
        insert_ok(&mut replica, &merge);
        assert_eq!(merge.height(), 2);
        assert_eq!(replica.heads(), &set_of(&[merge.id()]));
        assert_eq!(next_ids(&replica), (vec![merge.id()], 3));
        insert_ok(&mut replica, &after);
        assert_eq!(replica.heads(), &set_of(&[after.id()]));

        // The same diamond, right branch first: the same heads at the end.
        let (_, mut other) = fresh(&a);
        insert_ok(&mut other, &right);
        assert_eq!(other.heads(), &set_of(&[right.id()]));
        insert_ok(&mut other, &left);
        assert_eq!(other.heads(), &set_of(&[left.id(), right.id()]));
        insert_ok(&mut other, &merge);
        insert_ok(&mut other, &after);
        assert_eq!(snapshot(&other), snapshot(&replica));
    }

    #[test]
    fn heads_of_different_heights_give_the_highest_plus_one() {
        let a = key(1);
        let (genesis, mut replica) = fresh(&a);
        let x1 = set(&a, &[&genesis], "x", "1");
        let x2 = set(&a, &[&x1], "x", "2");
        let y1 = set(&a, &[&genesis], "y", "1");
        for tx in [&x1, &x2, &y1] {
            insert_ok(&mut replica, tx);
        }
        assert_eq!(replica.heads(), &set_of(&[x2.id(), y1.id()]));
        let (parents, height) = replica.next_parents();
        let mut expected = vec![x2.id(), y1.id()];
        expected.sort_unstable();
        assert_eq!(parents.iter().map(|p| p.id).collect::<Vec<_>>(), expected);
        assert_eq!(height, 3);
        // What it proposes is linkable.
        let next = sign_raw(
            &a,
            CONTEXT,
            parents,
            height,
            call_kind("set", args(&[b"z", b"1"])),
        );
        assert_eq!(insert_ok(&mut replica, &next).outcome, Outcome::Ok);
        assert_eq!(replica.heads(), &set_of(&[next.id()]));
    }

    #[test]
    fn next_parents_keeps_the_highest_heads_when_there_are_too_many() {
        let (a, b, c) = (key(1), key(2), key(3));
        let (genesis, mut replica) = fresh(&a);
        let (_, join_b) = onboard(&mut replica, &a, &genesis, &b);
        let (_, join_c) = onboard(&mut replica, &a, &join_b, &c);
        assert_eq!(join_c.height(), 4);

        // More concurrent heads than a transaction may name, by three authors.
        let authors = [&a, &b, &c];
        let wide: Vec<Tx> = (0..TX_PARENTS_MAX + 3)
            .map(|i| set(authors[i % 3], &[&join_c], &format!("k{i}"), "v"))
            .collect();
        for tx in &wide {
            assert_eq!(insert_ok(&mut replica, tx).outcome, Outcome::Ok);
        }
        assert_eq!(replica.heads().len(), TX_PARENTS_MAX + 3);
        // One head one level higher: always chosen.
        let higher = set(&a, &[&wide[0]], "higher", "v");
        insert_ok(&mut replica, &higher);
        assert_eq!(higher.height(), 6);
        assert_eq!(replica.heads().len(), TX_PARENTS_MAX + 3);

        // Candidates at height 5 (all of `wide` but the first), by id.
        let mut at_five: Vec<TxId> = wide[1..].iter().map(Tx::id).collect();
        at_five.sort_unstable();
        let (dropped, kept) = at_five.split_at(at_five.len() - (TX_PARENTS_MAX - 1));
        assert_eq!(dropped.len(), 3);
        let mut expected: Vec<TxId> = kept.to_vec();
        expected.push(higher.id());
        expected.sort_unstable();

        let (parents, height) = replica.next_parents();
        assert_eq!(parents.len(), TX_PARENTS_MAX);
        assert_eq!(parents.iter().map(|p| p.id).collect::<Vec<_>>(), expected);
        assert!(parents.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
        assert_eq!(height, 7);

        // A transaction made with them is linkable; the three left out stay
        // heads for a later transaction to merge.
        let merge = sign_raw(
            &b,
            CONTEXT,
            parents,
            height,
            call_kind("set", args(&[b"m", b"v"])),
        );
        assert_eq!(insert_ok(&mut replica, &merge).outcome, Outcome::Ok);
        let mut heads: Vec<TxId> = dropped.to_vec();
        heads.push(merge.id());
        assert_eq!(replica.heads(), &set_of(&heads));
        assert_eq!(replica.next_parents().1, 8);
    }

    // ----- authorization ---------------------------------------------------

    #[test]
    fn transactions_by_a_stranger_are_rejected_without_effect() {
        let (a, stranger, other) = (key(1), key(9), key(3));
        let (genesis, mut replica) = fresh(&a);
        let before = snapshot(&replica);

        let call = set(&stranger, &[&genesis], "k", "v");
        let inv = invite(&stranger, &[&genesis], &other);
        let leave = child(&stranger, &[&genesis], TxKind::Leave);
        for tx in [&call, &inv, &leave] {
            assert_eq!(
                insert_ok(&mut replica, tx).outcome,
                Outcome::Rejected(Rejection::AuthorNotMember)
            );
            assert_eq!(
                replica.outcome(&tx.id()),
                Some(&Outcome::Rejected(Rejection::AuthorNotMember))
            );
        }
        // Applied (in the DAG and the order), with no effect.
        assert_eq!(replica.applied(), 4);
        assert_eq!(replica.state_root(), before.root);
        assert_eq!(value(&replica, "k"), None);
        assert_eq!(replica.status(&member(&stranger)), None);
        assert_eq!(replica.status(&member(&other)), None);
        assert_eq!(
            replica.membership().all().collect::<Vec<_>>(),
            before.members
        );
    }

    #[test]
    fn join_needs_an_invite_and_invite_then_join_makes_a_member() {
        let (a, b, c) = (key(1), key(2), key(3));
        let (genesis, mut replica) = fresh(&a);

        // A join nobody invited.
        let uninvited = child(&b, &[&genesis], TxKind::Join);
        assert_eq!(
            insert_ok(&mut replica, &uninvited).outcome,
            Outcome::Rejected(Rejection::AuthorNotInvited)
        );
        assert_eq!(replica.status(&member(&b)), None);

        // Invite, then a call before joining is still rejected.
        let inv = invite(&a, &[&uninvited], &b);
        assert_eq!(insert_ok(&mut replica, &inv).outcome, Outcome::Ok);
        assert_eq!(replica.status(&member(&b)), Some(MemberStatus::Invited));
        assert!(!replica.membership().is_member(&member(&b)));
        let early = set(&b, &[&inv], "early", "v");
        assert_eq!(
            insert_ok(&mut replica, &early).outcome,
            Outcome::Rejected(Rejection::AuthorNotMember)
        );
        // A join by someone else than the invitee is rejected too.
        let wrong_joiner = child(&c, &[&inv], TxKind::Join);
        assert_eq!(
            insert_ok(&mut replica, &wrong_joiner).outcome,
            Outcome::Rejected(Rejection::AuthorNotInvited)
        );

        let join = child(&b, &[&early, &wrong_joiner], TxKind::Join);
        assert_eq!(insert_ok(&mut replica, &join).outcome, Outcome::Ok);
        assert_eq!(replica.status(&member(&b)), Some(MemberStatus::Member));
        assert_eq!(
            replica.membership().members().collect::<BTreeSet<_>>(),
            [member(&a), member(&b)].into_iter().collect()
        );
        // A second join by a member is not an invited author's join.
        let again = child(&b, &[&join], TxKind::Join);
        assert_eq!(
            insert_ok(&mut replica, &again).outcome,
            Outcome::Rejected(Rejection::AuthorNotInvited)
        );
        assert_eq!(replica.status(&member(&b)), Some(MemberStatus::Member));
        // Inviting a member changes nothing.
        let reinvite = invite(&a, &[&again], &b);
        assert_eq!(insert_ok(&mut replica, &reinvite).outcome, Outcome::Ok);
        assert_eq!(replica.status(&member(&b)), Some(MemberStatus::Member));

        // Now b's calls apply.
        let call = set(&b, &[&reinvite], "k", "v");
        assert_eq!(insert_ok(&mut replica, &call).outcome, Outcome::Ok);
        assert_eq!(value(&replica, "k"), Some(b"v".to_vec()));
        assert_eq!(value(&replica, "early"), None);
    }

    #[test]
    fn after_leave_the_leaver_is_rejected_until_invited_again() {
        let (a, b) = (key(1), key(2));
        let (genesis, mut replica) = fresh(&a);
        let (_, join) = onboard(&mut replica, &a, &genesis, &b);
        let leave = child(&b, &[&join], TxKind::Leave);
        assert_eq!(insert_ok(&mut replica, &leave).outcome, Outcome::Ok);
        assert_eq!(replica.status(&member(&b)), Some(MemberStatus::Left));
        assert!(!replica.membership().members().any(|m| m == member(&b)));

        let root = replica.state_root();
        let call = set(&b, &[&leave], "k", "v");
        assert_eq!(
            insert_ok(&mut replica, &call).outcome,
            Outcome::Rejected(Rejection::AuthorNotMember)
        );
        let leave_again = child(&b, &[&call], TxKind::Leave);
        assert_eq!(
            insert_ok(&mut replica, &leave_again).outcome,
            Outcome::Rejected(Rejection::AuthorNotMember)
        );
        let rejoin_uninvited = child(&b, &[&leave_again], TxKind::Join);
        assert_eq!(
            insert_ok(&mut replica, &rejoin_uninvited).outcome,
            Outcome::Rejected(Rejection::AuthorNotInvited)
        );
        assert_eq!(replica.state_root(), root);
        assert_eq!(replica.status(&member(&b)), Some(MemberStatus::Left));

        // Invited again, it may join again.
        let (_, rejoin) = onboard(&mut replica, &a, &rejoin_uninvited, &b);
        let call = set(&b, &[&rejoin], "k", "back");
        assert_eq!(insert_ok(&mut replica, &call).outcome, Outcome::Ok);
        assert_eq!(value(&replica, "k"), Some(b"back".to_vec()));
    }

    #[test]
    fn a_late_leave_that_sorts_first_turns_a_later_call_into_rejected() {
        let (a, b) = (key(1), key(2));
        let (genesis, mut replica) = fresh(&a);
        let (inv, join) = onboard(&mut replica, &a, &genesis, &b);
        assert_eq!(join.height(), 2);
        // a's call at height 3, then b's call on top of it at height 4.
        let by_a = set(&a, &[&join], "a", "1");
        let by_b = set(&b, &[&by_a], "b", "1");
        insert_ok(&mut replica, &by_a);
        assert_eq!(insert_ok(&mut replica, &by_b).outcome, Outcome::Ok);
        assert_eq!(value(&replica, "b"), Some(b"1".to_vec()));
        let root_with_b = replica.state_root();

        // b's leave, concurrent with both, at height 3: before b's call.
        let leave = child(&b, &[&join], TxKind::Leave);
        assert_eq!(leave.height(), 3);
        let inserted = insert_ok(&mut replica, &leave);
        assert_eq!(inserted.outcome, Outcome::Ok);
        let order: Vec<TxId> = replica.order().collect();
        let position = order.iter().position(|id| *id == leave.id()).unwrap();
        assert_eq!(inserted.reexecuted, order.len() - 1 - position);
        let by_a_first = by_a.id() < leave.id();
        assert_eq!(inserted.reexecuted, if by_a_first { 1 } else { 2 });
        assert_eq!(*order.last().unwrap(), by_b.id());

        // b's call is now after its leave: rejected, its write gone.
        assert_eq!(
            replica.outcome(&by_b.id()),
            Some(&Outcome::Rejected(Rejection::AuthorNotMember))
        );
        assert_eq!(replica.outcome(&by_a.id()), Some(&Outcome::Ok));
        assert_eq!(value(&replica, "b"), None);
        assert_eq!(value(&replica, "a"), Some(b"1".to_vec()));
        assert_ne!(replica.state_root(), root_with_b);
        assert_eq!(replica.status(&member(&b)), Some(MemberStatus::Left));

        // And it is what applying that order from scratch gives.
        let rebuilt = Replica::rebuild(genesis, kv_app(), vec![by_b, leave, by_a, join, inv])
            .expect("rebuild");
        assert_eq!(snapshot(&rebuilt), snapshot(&replica));
    }

    #[test]
    fn failed_calls_have_no_effect() {
        let a = key(1);
        let (genesis, mut replica) = fresh(&a);
        let base = set(&a, &[&genesis], "k", "v");
        insert_ok(&mut replica, &base);
        let before = snapshot(&replica);

        let spin = child(&a, &[&base], call_kind("spin", vec![]));
        let unknown = child(&a, &[&spin], call_kind("no_such_method", args(&[b"k"])));
        // kv's own `fail`: a set with one argument.
        let bad_input = child(&a, &[&unknown], call_kind("set", args(&[b"k"])));
        let expected = [
            (&spin, Outcome::Failed(CallError::OutOfFuel)),
            (
                &unknown,
                Outcome::Failed(CallError::UnknownMethod("no_such_method".to_owned())),
            ),
            (
                &bad_input,
                Outcome::Failed(CallError::AppFailed("missing argument".to_owned())),
            ),
        ];
        for (tx, outcome) in &expected {
            assert_eq!(insert_ok(&mut replica, tx).outcome, *outcome);
        }
        for (tx, outcome) in &expected {
            assert_eq!(replica.outcome(&tx.id()), Some(outcome));
        }
        assert_eq!(replica.applied(), before.applied + 3);
        assert_eq!(replica.state_root(), before.root);
        assert_eq!(value(&replica, "k"), Some(b"v".to_vec()));
        assert_eq!(replica.heads(), &set_of(&[bad_input.id()]));
    }

    // ----- order_after -------------------------------------------------------

    /// The order's ids in batches of `order_after`, following the cursor.
    fn batches(replica: &Replica, txs_max: usize, bytes_max: usize) -> Vec<Vec<TxId>> {
        let mut out = Vec::new();
        let mut after = None;
        for _ in 0..=replica.applied() {
            let (batch, more) = replica.order_after(after, txs_max, bytes_max);
            let ids: Vec<TxId> = batch.iter().map(|signed| signed.body.id()).collect();
            if let Some(key) = more {
                let last = *ids
                    .last()
                    .expect("a continuation follows a non-empty batch");
                assert_eq!(key, replica.tx(&last).unwrap().order_key());
            }
            out.push(ids);
            match more {
                Some(key) => after = Some(key),
                None => return out,
            }
        }
        panic!(
            "order_after did not finish in {} batches",
            replica.applied() + 1
        );
    }

    #[test]
    fn order_after_cursor_is_exclusive_and_none_starts_at_the_genesis() {
        let net = Partition::build();
        let replica = &net.replica;
        let order: Vec<TxId> = replica.order().collect();
        assert_eq!(order.len(), 11);
        assert_eq!(order[0], net.genesis.id());

        let (all, more) = replica.order_after(None, usize::MAX, usize::MAX);
        assert_eq!(more, None);
        assert_eq!(all.iter().map(|s| s.body.id()).collect::<Vec<_>>(), order);
        for (signed, id) in all.iter().zip(&order) {
            assert_eq!(signed, replica.tx(id).unwrap().signed());
        }

        for (index, id) in order.iter().enumerate() {
            let key = replica.tx(id).unwrap().order_key();
            let (rest, more) = replica.order_after(Some(key), usize::MAX, usize::MAX);
            assert_eq!(more, None);
            let rest: Vec<TxId> = rest.iter().map(|s| s.body.id()).collect();
            assert_eq!(rest, order[index + 1..], "after position {index}");
        }

        // A key that is not in the order: everything greater than it.
        let before_height_3 = OrderKey {
            height: 3,
            id: TxId([0; 32]),
        };
        let (rest, _) = replica.order_after(Some(before_height_3), usize::MAX, usize::MAX);
        assert_eq!(rest.len(), order.len() - 3);
        assert_eq!(rest[0].body.height, 3);
        let beyond = OrderKey {
            height: u64::MAX,
            id: TxId([0xFF; 32]),
        };
        assert_eq!(
            replica.order_after(Some(beyond), usize::MAX, usize::MAX),
            (vec![], None)
        );
        let first = OrderKey {
            height: 0,
            id: TxId([0; 32]),
        };
        assert_eq!(
            replica
                .order_after(Some(first), usize::MAX, usize::MAX)
                .0
                .len(),
            order.len()
        );
    }

    #[test]
    fn order_after_limits_by_count_and_returns_the_continuation() {
        let net = Partition::build();
        let replica = &net.replica;
        let order: Vec<TxId> = replica.order().collect();
        let key_of = |id: &TxId| replica.tx(id).unwrap().order_key();

        let (first, more) = replica.order_after(None, 4, usize::MAX);
        assert_eq!(
            first.iter().map(|s| s.body.id()).collect::<Vec<_>>(),
            order[..4]
        );
        assert_eq!(more, Some(key_of(&order[3])));
        let (second, more) = replica.order_after(more, 4, usize::MAX);
        assert_eq!(
            second.iter().map(|s| s.body.id()).collect::<Vec<_>>(),
            order[4..8]
        );
        assert_eq!(more, Some(key_of(&order[7])));
        let (third, more) = replica.order_after(more, 4, usize::MAX);
        assert_eq!(
            third.iter().map(|s| s.body.id()).collect::<Vec<_>>(),
            order[8..]
        );
        assert_eq!(more, None);

        // A batch that exactly reaches the end says nothing follows.
        let (exact, more) = replica.order_after(Some(key_of(&order[6])), 4, usize::MAX);
        assert_eq!(exact.len(), 4);
        assert_eq!(more, None);
        assert_eq!(batches(replica, 11, usize::MAX), vec![order.clone()]);
    }

    #[test]
    fn order_after_limits_by_bytes_but_returns_at_least_one() {
        let net = Partition::build();
        let replica = &net.replica;
        let order: Vec<TxId> = replica.order().collect();
        let size = |i: usize| encoded_size_estimate(replica.tx(&order[i]).unwrap());
        let key_of = |i: usize| replica.tx(&order[i]).unwrap().order_key();
        let ids = |batch: &[SignedTx]| batch.iter().map(|s| s.body.id()).collect::<Vec<_>>();

        // Exactly two fit.
        let two = size(0) + size(1);
        let (batch, more) = replica.order_after(None, usize::MAX, two);
        assert_eq!(ids(&batch), order[..2]);
        assert_eq!(more, Some(key_of(1)));
        // One byte less: only one.
        let (batch, more) = replica.order_after(None, usize::MAX, two - 1);
        assert_eq!(ids(&batch), order[..1]);
        assert_eq!(more, Some(key_of(0)));
        // Less than one transaction: still one, so the stream progresses.
        let (batch, more) = replica.order_after(Some(key_of(4)), usize::MAX, 0);
        assert_eq!(ids(&batch), order[5..6]);
        assert_eq!(more, Some(key_of(5)));
        // The count limit binds first when it is smaller.
        let (batch, more) = replica.order_after(None, 1, two);
        assert_eq!(ids(&batch), order[..1]);
        assert_eq!(more, Some(key_of(0)));
        // The last one alone: nothing follows.
        let (batch, more) = replica.order_after(Some(key_of(9)), usize::MAX, 0);
        assert_eq!(ids(&batch), order[10..]);
        assert_eq!(more, None);

        let singles = batches(replica, usize::MAX, 1);
        assert_eq!(singles.len(), order.len());
        assert!(singles.iter().all(|b| b.len() == 1));
    }

    #[test]
    fn order_after_batches_concatenate_to_the_order() {
        let net = Partition::build();
        let replica = &net.replica;
        let order: Vec<TxId> = replica.order().collect();
        let total: usize = order
            .iter()
            .map(|id| encoded_size_estimate(replica.tx(id).unwrap()))
            .sum();
        for txs_max in [1, 2, 3, 5, 10, 11, 12, usize::MAX] {
            for bytes_max in [0, 250, 400, 700, total - 1, total, usize::MAX] {
                let parts = batches(replica, txs_max, bytes_max);
                assert!(parts.iter().all(|b| !b.is_empty() && b.len() <= txs_max));
                assert_eq!(
                    parts.concat(),
                    order,
                    "txs_max {txs_max}, bytes_max {bytes_max}"
                );
            }
        }
    }

    // ----- missing_for -------------------------------------------------------

    /// A healed partition: a common base, then two branches.
    ///
    /// ```text
    /// G(0) - invite b(1) - join b(2) -+- x1(3) - x2(4) - x3(5)              (by a)
    ///                                 `- y1(3) -+- y2a(4) -+- y3(5) - y4(6)  (by b)
    ///                                           `- y2b(4) -'
    /// ```
    struct Partition {
        replica: Replica,
        genesis: Tx,
        base: Vec<Tx>,
        x: Vec<Tx>,
        y: Vec<Tx>,
    }

    impl Partition {
        fn build() -> Partition {
            let (a, b) = (key(1), key(2));
            let (genesis, mut replica) = fresh(&a);
            let (inv, join) = onboard(&mut replica, &a, &genesis, &b);
            let x1 = set(&a, &[&join], "x", "1");
            let x2 = set(&a, &[&x1], "x", "2");
            let x3 = set(&a, &[&x2], "x", "3");
            let y1 = set(&b, &[&join], "y", "1");
            let y2a = set(&b, &[&y1], "ya", "2");
            let y2b = set(&b, &[&y1], "yb", "2");
            let y3 = set(&b, &[&y2a, &y2b], "y", "3");
            let y4 = set(&b, &[&y3], "y", "4");
            let x = vec![x1, x2, x3];
            let y = vec![y1, y2a, y2b, y3, y4];
            for tx in x.iter().chain(&y) {
                assert_eq!(insert_ok(&mut replica, tx).outcome, Outcome::Ok);
            }
            assert_eq!(replica.heads(), &set_of(&[x[2].id(), y[4].id()]));
            Partition {
                replica,
                base: vec![genesis.clone(), inv, join],
                genesis,
                x,
                y,
            }
        }

        fn x_tip(&self) -> TxId {
            self.x[2].id()
        }

        fn y_tip(&self) -> TxId {
            self.y[4].id()
        }

        fn all(&self) -> Vec<&Tx> {
            self.base.iter().chain(&self.x).chain(&self.y).collect()
        }
    }

    fn tx_ids(txs: &[Tx]) -> Vec<TxId> {
        txs.iter().map(Tx::id).collect()
    }

    #[test]
    fn missing_for_returns_the_other_branch_in_canonical_order() {
        let net = Partition::build();
        let replica = &net.replica;
        let (found, complete) = replica.missing_for(&[net.y_tip()], &[net.x_tip()], 100, 1 << 20);
        assert!(complete);
        assert_eq!(tx_ids(&found), canonical(&net.y.iter().collect::<Vec<_>>()));
        assert_eq!(found.len(), 5);

        let (found, complete) = replica.missing_for(&[net.x_tip()], &[net.y_tip()], 100, 1 << 20);
        assert!(complete);
        assert_eq!(tx_ids(&found), ids(&[&net.x[0], &net.x[1], &net.x[2]]));

        // `have` deeper in the other branch, or the common base: the same.
        let (found, _) = replica.missing_for(&[net.y_tip()], &[net.x[0].id()], 100, 1 << 20);
        assert_eq!(tx_ids(&found), canonical(&net.y.iter().collect::<Vec<_>>()));
        let (found, complete) =
            replica.missing_for(&[net.y_tip()], &[net.base[2].id()], 100, 1 << 20);
        assert!(complete);
        assert_eq!(tx_ids(&found), canonical(&net.y.iter().collect::<Vec<_>>()));
        // `have` partway up the wanted branch: only what is above it.
        let (found, complete) = replica.missing_for(&[net.y_tip()], &[net.y[1].id()], 100, 1 << 20);
        assert!(complete);
        assert_eq!(
            tx_ids(&found),
            canonical(&[&net.y[2], &net.y[3], &net.y[4]])
        );
        // Nothing known to the peer: the whole past of `want`, genesis first.
        let (found, complete) = replica.missing_for(&[net.x_tip()], &[], 100, 1 << 20);
        assert!(complete);
        assert_eq!(
            tx_ids(&found),
            canonical(&[
                &net.base[0],
                &net.base[1],
                &net.base[2],
                &net.x[0],
                &net.x[1],
                &net.x[2]
            ])
        );
    }

    /// What a receiver that holds `known` and has received `received` asks
    /// for next: the parents of what it received that it holds nowhere (its
    /// pending set's missing parents).
    fn frontier(known: &BTreeSet<TxId>, received: &[Tx]) -> Vec<TxId> {
        let received_ids: BTreeSet<TxId> = received.iter().map(Tx::id).collect();
        let parents: BTreeSet<TxId> = received
            .iter()
            .flat_map(|tx| tx.parent_ids().copied())
            .filter(|p| !received_ids.contains(p) && !known.contains(p))
            .collect();
        parents.into_iter().collect()
    }

    #[test]
    fn missing_for_with_a_limit_returns_the_highest_and_continues() {
        let net = Partition::build();
        let replica = &net.replica;
        let have = [net.x_tip()];
        let y_order = canonical(&net.y.iter().collect::<Vec<_>>());
        let (y1, y3, y4) = (&net.y[0], &net.y[3], &net.y[4]);

        // Two: the two highest (y3, y4), in canonical order.
        let (found, complete) = replica.missing_for(&[net.y_tip()], &have, 2, 1 << 20);
        assert!(!complete);
        assert_eq!(tx_ids(&found), ids(&[y3, y4]));
        // Again from the parents of the lowest returned (y3: y2a and y2b).
        let want: Vec<TxId> = y3.parent_ids().copied().collect();
        assert_eq!(set_of(&want), set_of(&ids(&[&net.y[1], &net.y[2]])));
        let (found, complete) = replica.missing_for(&want, &have, 2, 1 << 20);
        assert!(!complete);
        assert_eq!(tx_ids(&found), canonical(&[&net.y[1], &net.y[2]]));
        // Both have y1 as their parent: the last one.
        let want: Vec<TxId> = found[0].parent_ids().copied().collect();
        let (found, complete) = replica.missing_for(&want, &have, 2, 1 << 20);
        assert!(complete);
        assert_eq!(tx_ids(&found), ids(&[y1]));

        // Three cuts between the two concurrent y2s: the higher one comes.
        let (found, complete) = replica.missing_for(&[net.y_tip()], &have, 3, 1 << 20);
        assert!(!complete);
        assert_eq!(tx_ids(&found), y_order[2..]);
        let known: BTreeSet<TxId> = net.base.iter().chain(&net.x).map(Tx::id).collect();
        let want = frontier(&known, &found);
        assert_eq!(want.len(), 2, "the lower y2 and y1");
        let (found, complete) = replica.missing_for(&want, &have, 3, 1 << 20);
        assert!(complete);
        assert_eq!(tx_ids(&found), y_order[..2]);

        // A byte budget below one transaction: still the highest one.
        let (found, complete) = replica.missing_for(&[net.y_tip()], &have, 100, 0);
        assert!(!complete);
        assert_eq!(tx_ids(&found), ids(&[y4]));
        // A budget of exactly the two highest.
        let two = encoded_size_estimate(y4) + encoded_size_estimate(y3);
        let (found, complete) = replica.missing_for(&[net.y_tip()], &have, 100, two);
        assert!(!complete);
        assert_eq!(tx_ids(&found), ids(&[y3, y4]));
        let (found, _) = replica.missing_for(&[net.y_tip()], &have, 100, two - 1);
        assert_eq!(tx_ids(&found), ids(&[y4]));

        // Every limit: each batch is the top of what is left, so the batches
        // in reverse make the canonical order of the whole missing set.
        for txs_max in 1..=6 {
            let mut want = vec![net.y_tip()];
            let mut received: Vec<Tx> = Vec::new();
            let mut parts: Vec<Vec<TxId>> = Vec::new();
            loop {
                let (found, complete) = replica.missing_for(&want, &have, txs_max, 1 << 20);
                assert!(!found.is_empty() && found.len() <= txs_max);
                let got = tx_ids(&found);
                assert_eq!(got, canonical(&found.iter().collect::<Vec<_>>()));
                parts.push(got);
                received.extend(found);
                if complete {
                    break;
                }
                assert!(parts.len() <= 5, "no progress with txs_max {txs_max}");
                want = frontier(&known, &received);
            }
            parts.reverse();
            assert_eq!(parts.concat(), y_order, "txs_max {txs_max}");
        }
    }

    #[test]
    fn missing_for_ignores_unknown_ids() {
        let net = Partition::build();
        let replica = &net.replica;
        let unknown = TxId([0xAB; 32]);
        let expected = replica.missing_for(&[net.y_tip()], &[net.x_tip()], 100, 1 << 20);
        assert_eq!(expected.0.len(), 5);
        assert_eq!(
            replica.missing_for(&[net.y_tip()], &[unknown, net.x_tip()], 100, 1 << 20),
            expected
        );
        assert_eq!(
            replica.missing_for(&[net.y_tip()], &[net.x_tip(), unknown], 100, 1 << 20),
            expected
        );
        // Only unknown `have`: as if the peer had nothing.
        let (found, complete) = replica.missing_for(&[net.y_tip()], &[unknown], 100, 1 << 20);
        assert!(complete);
        assert_eq!(
            tx_ids(&found),
            canonical(&net.base.iter().chain(&net.y).collect::<Vec<_>>())
        );
        // Unknown `want` names nothing to send.
        assert_eq!(
            replica.missing_for(&[unknown], &[net.x_tip()], 100, 1 << 20),
            (vec![], true)
        );
        assert_eq!(
            replica.missing_for(&[unknown, net.y_tip()], &[net.x_tip()], 100, 1 << 20),
            expected
        );
    }

    #[test]
    fn missing_for_with_empty_want_starts_from_all_heads() {
        let net = Partition::build();
        let replica = &net.replica;
        let (found, complete) = replica.missing_for(&[], &[net.x_tip()], 100, 1 << 20);
        assert!(complete);
        assert_eq!(tx_ids(&found), canonical(&net.y.iter().collect::<Vec<_>>()));
        let (found, complete) = replica.missing_for(&[], &[net.base[2].id()], 100, 1 << 20);
        assert!(complete);
        assert_eq!(
            tx_ids(&found),
            canonical(&net.x.iter().chain(&net.y).collect::<Vec<_>>())
        );
        // Nothing in common: everything, which is the order.
        let (found, complete) = replica.missing_for(&[], &[], 100, 1 << 20);
        assert!(complete);
        assert_eq!(tx_ids(&found), replica.order().collect::<Vec<_>>());
        assert_eq!(tx_ids(&found), canonical(&net.all()));
        // Empty want with a limit: the highest of all heads' past.
        let (found, complete) = replica.missing_for(&[], &[], 2, 1 << 20);
        assert!(!complete);
        let order: Vec<TxId> = replica.order().collect();
        assert_eq!(tx_ids(&found), order[order.len() - 2..]);
    }

    #[test]
    fn missing_for_with_have_equal_to_want_is_empty() {
        let net = Partition::build();
        let replica = &net.replica;
        let heads: Vec<TxId> = replica.heads().iter().copied().collect();
        assert_eq!(
            replica.missing_for(&heads, &heads, 100, 1 << 20),
            (vec![], true)
        );
        assert_eq!(
            replica.missing_for(&[], &heads, 100, 1 << 20),
            (vec![], true)
        );
        for tx in net.all() {
            assert_eq!(
                replica.missing_for(&[tx.id()], &[tx.id()], 100, 1 << 20),
                (vec![], true)
            );
        }
        // `want` in the past of `have`: nothing either.
        assert_eq!(
            replica.missing_for(
                &[net.y[1].id(), net.base[1].id()],
                &[net.y_tip()],
                100,
                1 << 20
            ),
            (vec![], true)
        );
        // Even with a zero budget.
        assert_eq!(replica.missing_for(&heads, &heads, 0, 0), (vec![], true));
    }

    // ----- rebuild and view ----------------------------------------------------

    #[test]
    fn rebuild_from_any_order_equals_incremental_insertion() {
        let (a, b, stranger) = (key(1), key(2), key(9));
        let app = kv_app();
        let genesis = genesis_of(&a, &app);
        let inv = invite(&a, &[&genesis], &b);
        let join = child(&b, &[&inv], TxKind::Join);
        let a1 = set(&a, &[&join], "k", "a1");
        let b1 = set(&b, &[&join], "k", "b1");
        let rejected = set(&stranger, &[&join], "s", "1");
        let failed = child(&a, &[&a1], call_kind("nope", vec![]));
        let merge = set(&a, &[&failed, &b1, &rejected], "m", "1");
        let leave = child(&b, &[&b1], TxKind::Leave);
        let after_leave = set(&b, &[&leave], "late", "1");
        let removal = child(&a, &[&merge], call_kind("remove", args(&[b"k"])));
        // One valid insertion order that is not the canonical one: branch by
        // branch, the leave last.
        let arrival = vec![
            inv.clone(),
            join.clone(),
            b1.clone(),
            a1.clone(),
            failed.clone(),
            rejected.clone(),
            merge.clone(),
            removal.clone(),
            leave.clone(),
            after_leave.clone(),
        ];

        let mut incremental = Replica::new(genesis.clone(), app.clone()).unwrap();
        let mut total_reexecuted = 0;
        for tx in &arrival {
            total_reexecuted += insert_ok(&mut incremental, tx).reexecuted;
        }
        assert!(total_reexecuted > 0, "the arrival order is not canonical");
        assert_eq!(incremental.outcome(&a1.id()), Some(&Outcome::Ok));
        assert_eq!(
            incremental.outcome(&rejected.id()),
            Some(&Outcome::Rejected(Rejection::AuthorNotMember))
        );
        assert_eq!(
            incremental.outcome(&failed.id()),
            Some(&Outcome::Failed(CallError::UnknownMethod(
                "nope".to_owned()
            )))
        );
        assert_eq!(
            incremental.outcome(&after_leave.id()),
            Some(&Outcome::Rejected(Rejection::AuthorNotMember))
        );
        assert_eq!(value(&incremental, "k"), None);
        assert_eq!(value(&incremental, "m"), Some(b"1".to_vec()));

        // Canonical insertion never re-executes, and agrees.
        let mut sorted = arrival.clone();
        sorted.sort_by_key(Tx::order_key);
        let mut canonical_insertion = Replica::new(genesis.clone(), app.clone()).unwrap();
        for tx in &sorted {
            assert_eq!(insert_ok(&mut canonical_insertion, tx).reexecuted, 0);
        }
        assert_eq!(snapshot(&canonical_insertion), snapshot(&incremental));

        // Rebuild from a scrambled list, with duplicates and the genesis.
        let mut scrambled: Vec<Tx> = arrival.iter().rev().cloned().collect();
        scrambled.rotate_left(3);
        scrambled.push(genesis.clone());
        scrambled.push(merge.clone());
        scrambled.insert(0, a1.clone());
        let rebuilt = Replica::rebuild(genesis.clone(), app.clone(), scrambled).unwrap();
        assert_eq!(snapshot(&rebuilt), snapshot(&incremental));
        assert_eq!(rebuilt.applied(), arrival.len() + 1);
        for tx in &arrival {
            assert_eq!(rebuilt.tx(&tx.id()), Some(tx));
        }
        assert_eq!(rebuilt.next_parents(), incremental.next_parents());
    }

    /// A local tail `x` applied, then two concurrent branches `y` and `z`
    /// (and a merge of all three) that interleave with it, by height.
    fn interleaving_branches(a: &SigningKey, genesis: &Tx) -> (Vec<Tx>, Vec<Tx>) {
        let chain = |name: &str, len: usize| {
            let mut txs: Vec<Tx> = Vec::new();
            for n in 0..len {
                let parent = txs.last().unwrap_or(genesis).clone();
                txs.push(set(a, &[&parent], &format!("{name}{n}"), name));
            }
            txs
        };
        let x = chain("x", 30);
        let (y, z) = (chain("y", 25), chain("z", 12));
        let merge = set(a, &[&x[29], &y[24], &z[11]], "m", "1");
        let mut late = y;
        late.extend(z);
        late.push(merge);
        (x, late)
    }

    /// `pool` in an order drawn from `seed` in which every parent comes first.
    fn arrival_order(pool: &[Tx], known: &BTreeSet<TxId>, seed: u64) -> Vec<Tx> {
        let mut known = known.clone();
        let mut pool = pool.to_vec();
        let mut draw = seed;
        let mut arrival = Vec::new();
        while !pool.is_empty() {
            draw = draw
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut pick = (draw >> 33) as usize % pool.len();
            while !pool[pick].parent_ids().all(|p| known.contains(p)) {
                pick = (pick + 1) % pool.len();
            }
            let tx = pool.swap_remove(pick);
            known.insert(tx.id());
            arrival.push(tx);
        }
        arrival
    }

    #[test]
    fn deferred_inserts_reexecute_each_applied_slot_at_most_once() {
        let a = key(1);
        let (genesis, _) = fresh(&a);
        let (x, late) = interleaving_branches(&a, &genesis);
        let mut all = x.clone();
        all.extend(late.iter().cloned());
        let rebuilt = Replica::rebuild(genesis.clone(), kv_app(), all.clone()).unwrap();
        let mut known: BTreeSet<TxId> = x.iter().map(Tx::id).collect();
        known.insert(genesis.id());

        for seed in 0..6 {
            let arrival = arrival_order(&late, &known, seed);
            // Deferred, then one settle.
            let (_, mut batched) = fresh(&a);
            for tx in &x {
                insert_ok(&mut batched, tx);
            }
            assert!(batched.is_settled());
            let applied = batched.applied();
            for tx in &arrival {
                batched.insert_deferred(tx.clone()).unwrap();
                assert!(!batched.is_settled());
                assert_eq!(
                    batched.insert_deferred(tx.clone()),
                    Err(InsertError::Duplicate(tx.id()))
                );
            }
            assert_eq!(batched.accepted(), applied + late.len());
            let settled = batched.settle();
            assert!(batched.is_settled());
            // Each applied slot at or after the earliest landing point was
            // re-executed exactly once: at most the whole applied tail.
            let earliest = arrival
                .iter()
                .map(|tx| batched.order().position(|id| id == tx.id()).unwrap())
                .min()
                .unwrap();
            let applied_after = batched
                .order()
                .skip(earliest)
                .filter(|id| x.iter().any(|tx| tx.id() == *id))
                .count();
            assert_eq!(settled.reexecuted, applied_after, "seed {seed}");
            assert!(settled.reexecuted <= x.len());
            assert_eq!(batched.reexecuted_total(), settled.reexecuted as u64);
            // One outcome per inserted transaction, in canonical order.
            assert_eq!(
                settled
                    .outcomes
                    .iter()
                    .map(|(id, _)| *id)
                    .collect::<Vec<_>>(),
                canonical(&late.iter().collect::<Vec<_>>())
            );
            for (id, outcome) in &settled.outcomes {
                assert_eq!(batched.outcome(id), Some(outcome));
            }
            // A second settle has nothing to do.
            assert_eq!(batched.settle(), Settled::default());

            // One by one: the same replica, at a far higher cost.
            let (_, mut one_by_one) = fresh(&a);
            for tx in &x {
                insert_ok(&mut one_by_one, tx);
            }
            let reexecuted: usize = arrival
                .iter()
                .map(|tx| insert_ok(&mut one_by_one, tx).reexecuted)
                .sum();
            assert!(
                reexecuted > 2 * settled.reexecuted,
                "seed {seed}: {reexecuted}"
            );
            assert_eq!(one_by_one.reexecuted_total(), reexecuted as u64);
            assert_eq!(snapshot(&batched), snapshot(&one_by_one), "seed {seed}");
            assert_eq!(snapshot(&batched), snapshot(&rebuilt), "seed {seed}");

            // Settling partway (as a node does after each input): each
            // settle re-executes each applied slot at most once.
            let (_, mut chunked) = fresh(&a);
            for tx in &x {
                insert_ok(&mut chunked, tx);
            }
            for part in arrival.chunks(7) {
                let applied = chunked.applied();
                for tx in part {
                    chunked.insert_deferred(tx.clone()).unwrap();
                }
                assert!(chunked.settle().reexecuted <= applied);
            }
            assert_eq!(snapshot(&chunked), snapshot(&rebuilt), "seed {seed}");
        }
    }

    #[test]
    fn a_refused_deferred_insert_changes_nothing() {
        let a = key(1);
        let (genesis, mut replica) = fresh(&a);
        let x = set(&a, &[&genesis], "x", "1");
        let y = set(&a, &[&x], "y", "2");
        let low = set(&a, &[&genesis], "low", "1");
        insert_ok(&mut replica, &x);
        replica.insert_deferred(low.clone()).unwrap();
        let accepted = replica.accepted();
        // A missing parent and a duplicate are refused before anything moves.
        let orphan = set(&a, &[&y], "orphan", "1");
        assert_eq!(
            replica.insert_deferred(orphan),
            Err(InsertError::MissingParent(y.id()))
        );
        assert_eq!(
            replica.insert_deferred(low.clone()),
            Err(InsertError::Duplicate(low.id()))
        );
        assert_eq!(replica.accepted(), accepted);
        replica.insert_deferred(y.clone()).unwrap();
        let settled = replica.settle();
        assert_eq!(settled.outcomes.len(), 2);
        let (_, mut expected) = fresh(&a);
        for tx in [&x, &low, &y] {
            insert_ok(&mut expected, tx);
        }
        assert_eq!(snapshot(&replica), snapshot(&expected));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "settle first")]
    fn reading_state_before_a_settle_is_a_bug() {
        let a = key(1);
        let (genesis, mut replica) = fresh(&a);
        replica
            .insert_deferred(set(&a, &[&genesis], "k", "v"))
            .unwrap();
        let _ = replica.state_root();
    }

    #[test]
    fn rebuild_refuses_a_history_with_a_gap() {
        let a = key(1);
        let app = kv_app();
        let genesis = genesis_of(&a, &app);
        let x = set(&a, &[&genesis], "x", "1");
        let y = set(&a, &[&x], "y", "1");
        assert!(matches!(
            Replica::rebuild(genesis, app, vec![y.clone()]),
            Err(ReplicaError::Replay(InsertError::MissingParent(id))) if id == x.id()
        ));
    }

    #[test]
    fn view_returns_the_value_and_changes_nothing() {
        let a = key(1);
        let (genesis, mut replica) = fresh(&a);
        let write = set(&a, &[&genesis], "k", "hello");
        insert_ok(&mut replica, &write);
        let before = snapshot(&replica);

        assert_eq!(replica.view("get", &args(&[b"k"])), Ok(b"hello".to_vec()));
        assert_eq!(replica.view("get", &args(&[b"absent"])), Ok(vec![]));
        // A writing method run as a view: its writes are discarded.
        assert_eq!(replica.view("set", &args(&[b"k", b"changed"])), Ok(vec![]));
        assert_eq!(replica.view("set", &args(&[b"new", b"x"])), Ok(vec![]));
        assert_eq!(replica.view("remove", &args(&[b"k"])), Ok(vec![]));
        assert_eq!(replica.view("get", &args(&[b"k"])), Ok(b"hello".to_vec()));
        assert_eq!(replica.view("get", &args(&[b"new"])), Ok(vec![]));
        // Failures are reported, with no effect either.
        assert_eq!(
            replica.view("nope", &[]),
            Err(CallError::UnknownMethod("nope".to_owned()))
        );
        assert_eq!(replica.view("spin", &[]), Err(CallError::OutOfFuel));
        assert_eq!(snapshot(&replica), before);
    }
}
