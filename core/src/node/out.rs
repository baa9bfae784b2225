//! Everything a node wants done, in the order it wants it: records to make
//! durable, messages to send, events to report.
//!
//! Owns: the three output queues and the one ordering rule between them, the
//! durability rule: *a record for every accepted transaction is emitted
//! before any message that reveals it.* Every procedure of the node writes
//! its outputs here and nowhere else; a driver drains them through
//! `Node::poll_persist` (first), `Node::poll_transmit` and `Node::poll_event`.
//!
//! How the rule is kept:
//! - a `Record::Tx` is queued only by [`Out::accepted`], which the one path
//!   into a replica (`Held::insert`) calls in the same step as the (deferred)
//!   insert: a transaction is in a replica only once its record is queued;
//! - its `Applied` event, and one `Reordered` per settle that re-executed
//!   anything, are queued by [`Out::settled`] when the replica is settled and
//!   the outcomes are known (`Held::settle`), in canonical order;
//! - a transaction is pushed (`Body::Tx`) only by [`Out::push_tx`], which
//!   asserts that it is in the replica it is pushed from; the other messages
//!   that carry transactions (`Body::Txs`) are built from a replica;
//! - so, as long as the driver drains records before messages, every
//!   transaction a message reveals is durable first.
//!
//! Within each queue the order is the order of the calls: the simulator's
//! trace hash depends on it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::ids::{ContextId, MemberId, TxId};
use crate::record::{Record, RecordDamage};
use crate::replica::{Outcome, Replica, Settled};
use crate::runtime::CallError;
use crate::stability::SignedAnnouncement;
use crate::tx::{OrderKey, SignedTx, Tx};
use crate::wire::{Body, Envelope, RefuseReason};

/// A message for the driver to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: MemberId,
    pub context: ContextId,
    /// The message kind, for logs and traces.
    pub kind: &'static str,
    pub bytes: Vec<u8>,
}

/// Something that happened, for the driver to report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// This node created a context.
    Created { context: ContextId },
    /// This node caught up and is a member.
    Joined { context: ContextId },
    /// This node gave up joining (the context runs a runtime version this
    /// build does not) and deleted what it had of it.
    JoinAbandoned { context: ContextId, reason: String },
    /// This node left and deleted its copy.
    Left { context: ContextId },
    /// A transaction was accepted and applied for the first time.
    Applied {
        context: ContextId,
        tx: TxId,
        outcome: Outcome,
    },
    /// Transactions accepted while handling one input sorted before
    /// already-applied ones; those were rolled back and re-executed once.
    Reordered {
        context: ContextId,
        reexecuted: usize,
    },
    /// A call this node made failed (first execution).
    CallFailed {
        context: ContextId,
        tx: TxId,
        error: CallError,
    },
    /// A member refused this node's catchup request; it will retry.
    CatchupRefused {
        context: ContextId,
        by: MemberId,
        reason: RefuseReason,
    },
    /// A received transaction would have landed in the stable prefix, so
    /// its author broke the promise stability rests on
    /// (`crate::stability`); it is dropped. Never happens among honest
    /// members: the simulator fails a run that shows one.
    BelowStable {
        context: ContextId,
        tx: TxId,
        height: u64,
        frontier: u64,
    },
    /// This node signed a new stability announcement of itself (a driver
    /// may ignore it; the simulator vouches for the signature, as for the
    /// transactions a node makes).
    Announced {
        context: ContextId,
        announcement: SignedAnnouncement,
    },
    /// This node joined from a checkpoint at `height` served by `from`,
    /// whose digest the members in `vouched_by` signed (none: `from` was
    /// the only member at the cut). It did not re-execute the history below
    /// the cut.
    CheckpointLoaded {
        context: ContextId,
        from: MemberId,
        height: u64,
        applied: u64,
        vouched_by: Vec<MemberId>,
    },
    /// A checkpoint was refused: an offer no other member vouched for, or
    /// entries that do not match their header.
    CheckpointRefused {
        context: ContextId,
        from: MemberId,
        reason: String,
    },
    /// Another member vouched for a checkpoint at the same cut as this
    /// node's own, with another digest: the two copies diverged (or one
    /// lies). Never happens among honest members: the simulator fails a
    /// run that shows one.
    CheckpointMismatch {
        context: ContextId,
        member: MemberId,
        height: u64,
    },
    /// At restore, the last stored record did not unseal: a write torn by
    /// a crash. It is skipped (nothing revealed what it held); what it held
    /// is fetched from the other members again.
    TornRecordSkipped { record: u64, damage: RecordDamage },
    /// A received transaction was dropped as invalid.
    Dropped {
        context: ContextId,
        tx: TxId,
        reason: String,
    },
}

/// The node's outputs, not yet drained.
pub(super) struct Out {
    /// This node: it never sends to itself.
    me: MemberId,
    records: VecDeque<Record>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
}

impl Out {
    pub(super) fn new(me: MemberId) -> Out {
        Out {
            me,
            records: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    // ----- records -------------------------------------------------------------

    /// Queues a record that is not a transaction's (those go through
    /// [`Out::accepted`]).
    pub(super) fn persist(&mut self, record: Record) {
        assert!(
            !matches!(record, Record::Tx { .. }),
            "a transaction's record is queued by `Out::accepted`, with its acceptance"
        );
        self.records.push_back(record);
    }

    /// How many records are queued, not yet drained.
    pub(super) fn records_queued(&self) -> usize {
        self.records.len()
    }

    /// A transaction was inserted into the context's replica: its record.
    /// Called in the same step as the insert, before anything can reveal
    /// the transaction. (Its events follow when the replica settles.)
    pub(super) fn accepted(&mut self, context: ContextId, signed: SignedTx) {
        debug_assert_eq!(
            signed.body.context, context,
            "a replica holds its own context's"
        );
        self.records.push_back(Record::Tx {
            context,
            tx: signed,
        });
    }

    /// The context's replica settled: an `Applied` event for each
    /// transaction inserted since the last settle (whose records
    /// [`Out::accepted`] queued), in canonical order, then one `Reordered`
    /// if applied transactions were re-executed.
    pub(super) fn settled(&mut self, context: ContextId, settled: Settled) {
        debug_assert!(
            settled.reexecuted == 0 || !settled.outcomes.is_empty(),
            "only an insert re-executes"
        );
        for (tx, outcome) in settled.outcomes {
            self.events.push_back(Event::Applied {
                context,
                tx,
                outcome,
            });
        }
        if settled.reexecuted > 0 {
            self.events.push_back(Event::Reordered {
                context,
                reexecuted: settled.reexecuted,
            });
        }
    }

    /// This node deleted its copy of `context`: the record that lets a
    /// driver drop the context's records (and keeps the tombstone), then
    /// the event.
    pub(super) fn deleted(&mut self, context: ContextId, last_own: Option<OrderKey>) {
        self.records
            .push_back(Record::Deleted { context, last_own });
        self.events.push_back(Event::Left { context });
    }

    // ----- messages ------------------------------------------------------------

    /// Queues a message that pushes no transaction (those go through
    /// [`Out::push_tx`]).
    pub(super) fn send(&mut self, context: ContextId, to: MemberId, body: Body) {
        debug_assert_ne!(to, self.me, "a node never sends to itself");
        debug_assert!(
            !matches!(body, Body::Tx(_)),
            "a transaction is pushed by `Out::push_tx`, which checks it was accepted"
        );
        self.transmit(context, to, body);
    }

    /// Pushes `tx`, which `replica` accepted (so its record is queued or
    /// already drained), to `to`.
    pub(super) fn push_tx(&mut self, context: ContextId, to: MemberId, tx: &Tx, replica: &Replica) {
        debug_assert_ne!(to, self.me, "a node never sends to itself");
        debug_assert!(
            replica.contains(&tx.id()),
            "a transaction is revealed only once accepted, hence recorded"
        );
        self.transmit(context, to, Body::Tx(tx.signed().clone()));
    }

    fn transmit(&mut self, context: ContextId, to: MemberId, body: Body) {
        let kind = body.name();
        let bytes = Envelope::new(context, body).encode();
        self.transmits.push_back(Transmit {
            to,
            context,
            kind,
            bytes,
        });
    }

    // ----- events --------------------------------------------------------------

    pub(super) fn event(&mut self, event: Event) {
        debug_assert!(
            !matches!(
                event,
                Event::Applied { .. } | Event::Reordered { .. } | Event::Left { .. }
            ),
            "acceptance and deletion events come with their records"
        );
        self.events.push_back(event);
    }

    // ----- draining ------------------------------------------------------------

    pub(super) fn poll_persist(&mut self) -> Option<Record> {
        self.records.pop_front()
    }

    pub(super) fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub(super) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
