//! The engine as a driver sees it: a node hosting any number of contexts, fed
//! inputs with the current time and drained of outputs.
//!
//! ```text
//!   driver                          Node
//!   ──────                          ────
//!   create_context/invite/join/     ─► commands (return at once)
//!   leave/call/view
//!   handle_message(now, from, bytes) ─► a peer's message
//!   handle_timeout(now)              ─► timers that are due
//!   poll_persist()   ◄─ records to make durable     (drain FIRST)
//!   poll_transmit()  ◄─ messages to send to peers   (then these)
//!   poll_event()     ◄─ Joined, Applied, Left, CallFailed, ...
//!   poll_timeout()   ◄─ when to call handle_timeout next
//! ```
//!
//! This file owns the public API, the dispatch of each input to the context
//! it is about, and what every procedure shares (`Env`: identity,
//! configuration, generator, verifier, request ids). The rest is in:
//!
//! - `context` — a context's phase as a type whose variants own what the
//!   phase needs (a joiner its catchup; a member its copy; a leaver its copy
//!   and its leave), so an impossible combination cannot be built;
//! - `out` — the one output struct: records, messages and events, and the
//!   durability rule between them (a transaction's `Record::Tx` is queued
//!   before any message that reveals it, so a driver that drains
//!   `poll_persist` before `poll_transmit` never exposes an unpersisted
//!   transaction);
//! - `accept` — authoring and accepting transactions, and the pending set's
//!   releases;
//! - `sync` — pushes, anti-entropy, fetches and the answers a copy serves;
//! - `catchup` — how a joiner gets a copy, and how a member serves one;
//! - `leave` — the leave handshake;
//! - `restore` — rebuilding a node from its records;
//! - `stress` — every random draw, and the stress hooks.
//!
//! Invariants held here: a message is dispatched only to a context this
//! node holds (a catchup request for another is refused); after every
//! input the context's copy is settled (what the input accepted is applied,
//! the tail re-executed once: `Context::settle`), and after every message a
//! member's phase agrees with its own status in the replicated membership
//! (`Node::reconcile_phase`), even when the message is refused in part;
//! timers run for every context that is due, in context order.
//!
//! Nothing here reads a clock, performs I/O or draws ambient randomness:
//! time comes in as `now`, randomness from the seeded generator the driver
//! gives at construction.

mod accept;
mod announce;
mod catchup;
mod context;
mod forward;
mod leave;
mod out;
mod restore;
mod stress;
mod sync;

use std::collections::BTreeMap;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::{CHECKPOINT_INTERVAL_MIN, CheckpointError};
use crate::ids::{ContextId, Hash, Key, MemberId, TxId};
use crate::limits::{CONTEXTS_MAX, SYNC_BATCH_BYTES_MAX, SYNC_BATCH_TXS_MAX};
use crate::membership::MemberStatus;
use crate::record::{Record, RecordDamage};
use crate::replica::{Outcome, Replica, ReplicaError};
use crate::runtime::{AppError, CallError, wasm_from_source};
use crate::stability::HoldReason;
use crate::time::Time;
use crate::tx::{OrderKey, TX_FORMAT_VERSION, Tx, TxBody, TxError, TxKind};
use crate::verify::Verifier;
use crate::wire::{Body, Envelope, RefuseReason, RequestId, WireError};

use catchup::{Accepted, Catchup};
use context::{Context, Held, State};
use out::Out;

pub use out::{Event, Transmit};

/// Timing and batching of the protocol. Every member of a context may use
/// different values: none of them affects what a context converges to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// How often a member sends its heads to one random other member.
    pub sync_interval_ms: u64,
    /// How long a request waits for its answer before it is sent again (to
    /// another member, for a catchup that keeps failing).
    pub request_timeout_ms: u64,
    /// Transactions per sync or catchup batch.
    pub sync_batch_txs_max: usize,
    /// Bytes per sync or catchup batch (about).
    pub sync_batch_bytes_max: usize,
    /// Stress hooks (like FoundationDB's BUGGIFY), for simulation only: the
    /// engine sometimes takes rare but legal paths (tiny sync batches, early
    /// timer firings, redundant and abandoned requests), drawn from its
    /// seeded generator. Never on in a real node.
    pub stress: bool,
    /// The smallest distance, in heights, between two checkpoint cuts
    /// (`crate::checkpoint`). Every member of a context must use the same:
    /// a checkpoint names its schedule, and members vouch only for the
    /// cuts they took themselves.
    pub checkpoint_interval_min: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sync_interval_ms: 1_000,
            request_timeout_ms: 1_500,
            sync_batch_txs_max: SYNC_BATCH_TXS_MAX,
            sync_batch_bytes_max: SYNC_BATCH_BYTES_MAX,
            stress: false,
            checkpoint_interval_min: CHECKPOINT_INTERVAL_MIN,
        }
    }
}

/// Where this node stands in a context: the tag of the context's state
/// (`context::State`, whose variants own what each phase needs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Catching up; not yet a member.
    Joining,
    /// A full member.
    Member,
    /// Left: waits for one member to acknowledge its leave, then deletes.
    Leaving,
}

/// Why a local command was refused. Nothing changed.
#[derive(Debug, Error)]
pub enum CommandError {
    #[error("no context {0} on this node")]
    UnknownContext(ContextId),
    #[error("this node already holds context {0}")]
    AlreadyHeld(ContextId),
    #[error("this node is not a member of context {0} (phase: {1:?})")]
    NotAMember(ContextId, Option<Phase>),
    #[error("a node cannot join through itself")]
    JoinViaSelf,
    #[error(
        "member {0} is a weak key (not a curve point, or of small order) that anyone could sign for: refused"
    )]
    WeakMember(MemberId),
    #[error("this node hosts the maximum of {CONTEXTS_MAX} contexts")]
    TooManyContexts,
    #[error("a node cannot invite itself")]
    InviteSelf,
    #[error("{member} is already {} of this context", match status {
        MemberStatus::Invited => "an invitee",
        MemberStatus::Member => "a member",
        MemberStatus::Left => "a former member",
    })]
    AlreadyInvited {
        member: MemberId,
        status: MemberStatus,
    },
    #[error(
        "the application of context {context} has no method {method:?} (an exported function of type () -> ())"
    )]
    UnknownMethod { context: ContextId, method: String },
    #[error("application: {0}")]
    App(#[from] AppError),
    #[error("transaction: {0}")]
    Tx(#[from] TxError),
    #[error("context: {0}")]
    Replica(#[from] ReplicaError),
    #[error("call failed: {0}")]
    Call(#[from] CallError),
}

/// Why a received message was refused. Nothing changed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MessageError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("transaction: {0}")]
    Tx(#[from] TxError),
    #[error("the genesis a catchup was accepted with, {0}, is not a create")]
    NotGenesis(TxId),
}

/// Why a node could not be rebuilt from its records.
#[derive(Debug, Error)]
pub enum RestoreError {
    #[error("context {0}: {1}")]
    Tx(ContextId, TxError),
    #[error("context {0}: {1}")]
    Replica(ContextId, ReplicaError),
    #[error("context {0}: a transaction record before the context was opened")]
    TxBeforeOpen(ContextId),
    #[error("context {0}: the checkpoint at height {1} is damaged: {2}")]
    Checkpoint(ContextId, u64, CheckpointError),
    #[error(
        "stored record {record} (of {of}) is damaged, and not the last, so not a torn write: {damage}"
    )]
    Damaged {
        record: usize,
        of: usize,
        damage: RecordDamage,
    },
}

/// The result of a local call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallReceipt {
    pub tx: TxId,
    /// The outcome at its first execution here. Concurrent transactions
    /// ordered before it may still change it (for example a transfer that a
    /// concurrent one leaves without funds).
    pub outcome: Outcome,
}

/// A summary of one context on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextStatus {
    pub context: ContextId,
    pub phase: Phase,
    pub applied: usize,
    pub pending: usize,
    pub heads: Vec<TxId>,
    /// `None` while catching up and the application is not yet known.
    pub state_root: Option<Hash>,
    pub members: Vec<MemberId>,
    /// Transactions at the start of the canonical order that are stable
    /// here: no transaction this node does not hold can sort before them.
    pub stable: usize,
    /// Every transaction this node does not hold has this height or more.
    pub stable_frontier: u64,
    /// Who holds stability back, when something held is not stable yet.
    pub held_back_by: Option<HeldBack>,
    /// The cut of the latest checkpoint (taken here, or the one this copy
    /// stands on).
    pub checkpoint: Option<u64>,
    /// The cut of the checkpoint this copy is built on (it joined or
    /// restarted from it): it holds no transaction below it. `None`: the
    /// copy holds the whole history.
    pub stands_on: Option<u64>,
}

/// The identity that holds a copy's stability back, and since when the
/// stable frontier has not moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBack {
    pub member: MemberId,
    pub reason: HoldReason,
    pub since: Time,
}

/// What every procedure of a node shares: its identity, configuration,
/// generator (drawn from in `stress` only), verifier and request ids.
struct Env {
    config: Config,
    key: SigningKey,
    me: MemberId,
    rng: ChaCha8Rng,
    verifier: Arc<dyn Verifier>,
    next_request: RequestId,
    /// The tombstone of every context this node left: the last transaction
    /// it made there (`Record::Deleted`).
    tombstones: BTreeMap<ContextId, OrderKey>,
}

impl Env {
    /// Whether `replica` holds this node's tombstone of its context (or
    /// there is none): only then may this node make anything in it again.
    /// A copy that stands on a checkpoint cut above the tombstone holds it
    /// in effect (`Replica::covers`): the cut was stable where it was
    /// taken, so every transaction below it, this node's last one included,
    /// is in the prefix the copy carries on from.
    fn holds_tombstone(&self, replica: &Replica) -> bool {
        self.tombstone(&replica.context())
            .is_none_or(|last| replica.covers(&last))
    }

    /// This node's tombstone of `context`, if it ever left it.
    fn tombstone(&self, context: &ContextId) -> Option<OrderKey> {
        self.tombstones.get(context).copied()
    }

    /// The tombstone to keep when deleting `c`: this node's last
    /// transaction in its copy, if the copy carries on from the previous
    /// tombstone; the previous tombstone otherwise.
    fn tombstone_for(&self, c: &Context) -> Option<OrderKey> {
        let previous = self.tombstone(&c.id);
        match c.replica() {
            Some(replica) if self.holds_tombstone(replica) => {
                replica.stability().local_last().or(previous)
            }
            _ => previous,
        }
    }

    /// A fresh request id: never 0 (which matches nothing) and never reused.
    fn next_request_id(&mut self) -> RequestId {
        let id = self.next_request;
        self.next_request += 1;
        debug_assert!(id > 0);
        id
    }

    /// When a request sent at `now` times out.
    fn timeout_at(&self, now: Time) -> Time {
        now + self.config.request_timeout_ms
    }
}

/// A node: one identity hosting any number of contexts.
pub struct Node {
    env: Env,
    contexts: BTreeMap<ContextId, Context>,
    out: Out,
}

impl Node {
    /// A node with no contexts. `secret` is its ed25519 secret key (the driver
    /// stores it); `seed` seeds every random choice the engine makes.
    pub fn new(
        config: Config,
        secret: [u8; 32],
        seed: [u8; 32],
        verifier: Arc<dyn Verifier>,
    ) -> Node {
        let key = SigningKey::from_bytes(&secret);
        let me = MemberId(key.verifying_key().to_bytes());
        Node {
            env: Env {
                config,
                key,
                me,
                rng: ChaCha8Rng::from_seed(seed),
                verifier,
                next_request: 1,
                tombstones: BTreeMap::new(),
            },
            contexts: BTreeMap::new(),
            out: Out::new(me),
        }
    }

    /// The member id of a secret key.
    pub fn member_id_of(secret: &[u8; 32]) -> MemberId {
        MemberId(SigningKey::from_bytes(secret).verifying_key().to_bytes())
    }

    /// Rebuilds a node from the records it persisted, in the order it emitted
    /// them. Transactions are not re-verified (this node verified them before
    /// persisting) and each context's order is executed once.
    pub fn restore(
        config: Config,
        secret: [u8; 32],
        seed: [u8; 32],
        verifier: Arc<dyn Verifier>,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<Node, RestoreError> {
        let mut node = Node::new(config, secret, seed, verifier);
        node.restore_records(records)?;
        Ok(node)
    }

    /// Rebuilds a node from the sealed records a driver stored
    /// ([`Record::seal`]), in the order it emitted them. A damaged last
    /// record is a write a crash tore: a driver syncs before it sends or
    /// answers anything, so nothing revealed what the torn record held,
    /// and it is skipped and reported (`Event::TornRecordSkipped`); the
    /// node fetches whatever it held from the other members again. A
    /// damaged record before the last is refused
    /// ([`RestoreError::Damaged`]): it was synced, and what it held may
    /// have been seen.
    pub fn restore_sealed<B: AsRef<[u8]>>(
        config: Config,
        secret: [u8; 32],
        seed: [u8; 32],
        verifier: Arc<dyn Verifier>,
        sealed: impl IntoIterator<Item = B>,
    ) -> Result<Node, RestoreError> {
        let sealed: Vec<B> = sealed.into_iter().collect();
        let of = sealed.len();
        let mut records = Vec::with_capacity(of);
        let mut torn = None;
        for (record, bytes) in sealed.iter().enumerate() {
            match Record::unseal(bytes.as_ref()) {
                Ok(decoded) => records.push(decoded),
                Err(damage) if record + 1 == of => torn = Some(damage),
                Err(damage) => {
                    return Err(RestoreError::Damaged { record, of, damage });
                }
            }
        }
        let mut node = Node::restore(config, secret, seed, verifier, records)?;
        if let Some(damage) = torn {
            node.out.event(Event::TornRecordSkipped {
                record: of as u64 - 1,
                damage,
            });
        }
        Ok(node)
    }

    // ----- identity and queries ------------------------------------------

    pub fn member_id(&self) -> MemberId {
        self.env.me
    }

    pub fn config(&self) -> &Config {
        &self.env.config
    }

    /// The contexts this node holds (any phase), sorted.
    pub fn context_ids(&self) -> impl Iterator<Item = ContextId> + '_ {
        self.contexts.keys().copied()
    }

    /// Whether `tx` of `context` is held here waiting for its parents (in
    /// the pending set, not yet in the order).
    pub fn is_pending(&self, context: &ContextId, tx: &TxId) -> bool {
        self.contexts
            .get(context)
            .and_then(Context::held)
            .is_some_and(|held| held.pending.contains(tx))
    }

    /// Whether `member` is known to hold `context` while this node catches
    /// up into it: it accepted a catchup request, or sent heads. (A driver
    /// tells an operator that a join is under way once the member asked
    /// has answered.) False unless joining.
    pub fn joining_heard_from(&self, context: &ContextId, member: &MemberId) -> bool {
        match self.contexts.get(context).map(|c| &c.state) {
            Some(State::Joining(catchup)) => catchup.heard.binary_search(member).is_ok(),
            _ => false,
        }
    }

    pub fn phase(&self, context: &ContextId) -> Option<Phase> {
        self.contexts.get(context).map(Context::phase)
    }

    /// This node's copy of a context, once it holds the application.
    pub fn replica(&self, context: &ContextId) -> Option<&Replica> {
        self.contexts.get(context)?.replica()
    }

    /// While catching up into `context`: the member asked now, then the
    /// members it may be redirected to. Empty otherwise. (A driver keeps
    /// these members' addresses: they are who the catchup talks to before
    /// the context's membership is known.)
    pub fn catchup_peers(&self, context: &ContextId) -> Vec<MemberId> {
        match self.contexts.get(context).map(|c| &c.state) {
            Some(State::Joining(catchup)) => catchup.peers(),
            _ => Vec::new(),
        }
    }

    pub fn status(&self, context: &ContextId) -> Option<ContextStatus> {
        let c = self.contexts.get(context)?;
        let replica = c.replica();
        Some(ContextStatus {
            context: *context,
            phase: c.phase(),
            applied: replica.map_or(0, Replica::applied),
            pending: c.held().map_or(0, |held| held.pending.len()),
            heads: replica.map_or_else(Vec::new, |r| r.heads().iter().copied().collect()),
            state_root: replica.map(Replica::state_root),
            members: replica.map_or_else(Vec::new, |r| r.membership().members().collect()),
            stable: replica.map_or(0, |r| r.base_len() + r.stable_len()),
            stable_frontier: replica.map_or(0, |r| r.stability().frontier()),
            held_back_by: c.held().and_then(Held::held_back),
            checkpoint: replica
                .and_then(Replica::checkpoint)
                .map(|checkpoint| checkpoint.header.height),
            stands_on: replica.and_then(Replica::base_height),
        })
    }

    /// A value of the context's state.
    pub fn get(&self, context: &ContextId, key: &Key) -> Option<&[u8]> {
        self.replica(context)?.state().get(key)
    }

    /// Runs a read-only call against this node's current state of a context.
    pub fn view(
        &mut self,
        context: &ContextId,
        method: &str,
        input: &[u8],
    ) -> Result<Vec<u8>, CommandError> {
        let c = self
            .contexts
            .get_mut(context)
            .ok_or(CommandError::UnknownContext(*context))?;
        let phase = c.phase();
        let held = c
            .held_mut()
            .ok_or(CommandError::NotAMember(*context, Some(phase)))?;
        Ok(held.replica.view(method, input)?)
    }

    // ----- outputs ---------------------------------------------------------

    /// The next record to make durable. Drain these before `poll_transmit`.
    pub fn poll_persist(&mut self) -> Option<Record> {
        self.out.poll_persist()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.poll_transmit()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.poll_event()
    }

    /// When `handle_timeout` should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.contexts.values().map(Context::next_deadline).min()
    }

    // ----- commands ----------------------------------------------------------

    /// Creates a context running `app` (WebAssembly binary or text); this node
    /// is its first member.
    pub fn create_context(&mut self, now: Time, app: &[u8]) -> Result<ContextId, CommandError> {
        if self.contexts.len() >= CONTEXTS_MAX {
            return Err(CommandError::TooManyContexts);
        }
        let blob = wasm_from_source(app)?;
        let id = self.env.context_id();
        let body = TxBody {
            version: TX_FORMAT_VERSION,
            context: id,
            author: self.env.me,
            height: 0,
            parents: Vec::new(),
            kind: TxKind::Create {
                runtime_version: crate::runtime::RUNTIME_VERSION,
                app_hash: Hash(*blake3::hash(&blob).as_bytes()),
                app_bytes: blob.len() as u64,
            },
        };
        let genesis = Tx::sign(body, &self.env.key);
        let blob = Arc::new(blob);
        let replica = Replica::new(genesis.clone(), Arc::clone(&blob))?;
        self.out.persist(Record::Opened {
            context: id,
            genesis: genesis.signed().clone(),
            app: blob.to_vec(),
        });
        let tick = self.env.tick_after(now);
        let c = Context::new(id, tick, State::Member(Held::new(replica, &self.env)));
        let previous = self.contexts.insert(id, c);
        assert!(previous.is_none(), "a fresh context id");
        self.out.event(Event::Created { context: id });
        Ok(id)
    }

    /// Invites `member` into a context: it may then catch up and join.
    pub fn invite(
        &mut self,
        now: Time,
        context: ContextId,
        member: MemberId,
    ) -> Result<TxId, CommandError> {
        if crate::verify::is_weak_member_id(&member) {
            return Err(CommandError::WeakMember(member));
        }
        self.author(now, context, TxKind::Invite { member })
            .map(|r| r.tx)
    }

    /// Whether an invite of `member` into `context` would change anything
    /// here: refused for this node itself, and for an identity this copy
    /// counts as invited or a member (one who left may be invited again).
    /// `invite` does not ask: the engine applies such an invite like any
    /// (it may come from a member that had not heard of the leave), and a
    /// driver asks first so that its user is told instead
    /// (`ctx-node` answers 409).
    pub fn check_invite(&self, context: &ContextId, member: &MemberId) -> Result<(), CommandError> {
        if *member == self.env.me {
            return Err(CommandError::InviteSelf);
        }
        match self
            .replica(context)
            .and_then(|replica| replica.status(member))
        {
            Some(status @ (MemberStatus::Invited | MemberStatus::Member)) => {
                Err(CommandError::AlreadyInvited {
                    member: *member,
                    status,
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether `context`'s application has `method` to call: a call of
    /// another makes a transaction that fails on every member, for ever.
    /// `call` does not ask (such a transaction is applied as failed, as
    /// one from any member is); a driver asks first (`ctx-node` answers
    /// 422). A context not held here answers `Ok`, for `call` to refuse.
    pub fn check_call(&self, context: &ContextId, method: &str) -> Result<(), CommandError> {
        match self.replica(context) {
            Some(replica) if !replica.has_method(method) => Err(CommandError::UnknownMethod {
                context: *context,
                method: method.to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Makes an application call: a transaction every member applies.
    pub fn call(
        &mut self,
        now: Time,
        context: ContextId,
        method: &str,
        input: Vec<u8>,
    ) -> Result<CallReceipt, CommandError> {
        let kind = TxKind::Call {
            method: method.to_owned(),
            input,
        };
        self.author(now, context, kind)
    }

    /// Starts catching up into `context` from `via`, a member. This node
    /// becomes a member (`Event::Joined`) once caught up.
    pub fn join(
        &mut self,
        now: Time,
        context: ContextId,
        via: MemberId,
    ) -> Result<(), CommandError> {
        if self.contexts.contains_key(&context) {
            return Err(CommandError::AlreadyHeld(context));
        }
        if via == self.env.me {
            return Err(CommandError::JoinViaSelf);
        }
        if self.contexts.len() >= CONTEXTS_MAX {
            return Err(CommandError::TooManyContexts);
        }
        self.out.persist(Record::Joining { context, via });
        let mut catchup = Catchup::requested(via, now);
        catchup.send_step(context, &mut self.env, &mut self.out, via, now);
        self.contexts
            .insert(context, Context::joining(context, catchup));
        Ok(())
    }

    /// Leaves a context. A member pushes its `Leave` and deletes its copy once
    /// another member has it; a node still catching up deletes at once.
    pub fn leave(&mut self, now: Time, context: ContextId) -> Result<(), CommandError> {
        self.leave_context(now, context)
    }

    /// Makes, applies, persists and pushes a transaction of this node's.
    fn author(
        &mut self,
        now: Time,
        context: ContextId,
        kind: TxKind,
    ) -> Result<CallReceipt, CommandError> {
        let c = self
            .contexts
            .get_mut(&context)
            .ok_or(CommandError::UnknownContext(context))?;
        let phase = c.phase();
        let receipt = match &mut c.state {
            State::Member(held) => held.author(context, kind, &self.env, &mut self.out),
            State::Joining(_) | State::Leaving { .. } => {
                Err(CommandError::NotAMember(context, Some(phase)))
            }
        }?;
        c.note_stability(now, &mut self.out, &self.env.me);
        Ok(receipt)
    }

    // ----- inputs --------------------------------------------------------

    /// A message from peer `from`. Bad bytes are refused with an error and
    /// change nothing; messages about contexts this node does not hold are
    /// ignored (a catchup request is refused).
    pub fn handle_message(
        &mut self,
        now: Time,
        from: MemberId,
        bytes: &[u8],
    ) -> Result<(), MessageError> {
        let envelope = Envelope::decode(bytes)?;
        if from == self.env.me {
            return Ok(());
        }
        let context = envelope.context;
        let Some(c) = self.contexts.get_mut(&context) else {
            if let Body::CatchupRequest { request } = envelope.body {
                let reason = RefuseReason::UnknownContext;
                let body = Body::CatchupRefused { request, reason };
                self.out.send(context, from, body);
            }
            return Ok(());
        };
        debug_assert_eq!(c.id, context);
        let (env, out) = (&mut self.env, &mut self.out);
        // A handler that accepted part of a batch and then met a bad
        // transaction still settles and reconciles: the error is returned
        // after.
        let mut result = Ok(());
        match envelope.body {
            Body::Tx(signed) => result = c.on_tx(env, out, now, from, signed),
            Body::Heads {
                heads,
                reply,
                announcements,
                stands_on,
            } => c.on_heads(env, out, now, from, heads, reply, announcements, stands_on),
            Body::Fetch {
                request,
                want,
                have,
            } => c.on_fetch(env, out, from, request, &want, &have),
            Body::Stream { request, after } => c.on_stream(env, out, from, request, after),
            Body::Txs {
                request,
                txs,
                more,
                complete,
            } => result = c.on_txs(env, out, now, from, request, txs, more, complete),
            Body::CatchupRequest { request } => c.on_catchup_request(env, out, from, request),
            Body::CatchupAccepted {
                request,
                genesis,
                members,
                offer,
            } => match c
                .on_catchup_accepted(env, out, now, from, request, genesis, members, offer)?
            {
                Accepted::Continue => {}
                Accepted::Abandon(error) => {
                    let reason = error.to_string();
                    self.out.event(Event::JoinAbandoned { context, reason });
                    self.delete(context);
                    return Ok(());
                }
            },
            Body::CatchupRefused { request, reason } => {
                c.on_catchup_refused(env, out, now, from, request, reason)
            }
            Body::AppRequest { request, offset } => c.on_app_request(out, from, request, offset),
            Body::CheckpointRequest {
                request,
                height,
                after,
            } => c.on_checkpoint_request(out, from, request, height, after),
            Body::CheckpointChunk {
                request,
                height,
                entries,
                more,
            } => c.on_checkpoint_chunk(env, out, now, from, request, height, entries, more),
            Body::AppChunk {
                request,
                offset,
                bytes,
            } => c.on_app_chunk(env, out, now, from, request, offset, bytes),
            Body::LeaveAck { leave, members } => {
                if c.acknowledged(leave, from, &members, &self.env.me) {
                    self.delete(context);
                }
            }
        }
        if let Some(c) = self.contexts.get_mut(&context) {
            c.settle(&mut self.out);
        }
        self.reconcile_phase(context);
        if let Some(c) = self.contexts.get_mut(&context) {
            c.note_stability(now, &mut self.out, &self.env.me);
        }
        result
    }

    /// A message from peer `from`, for a node that can store nothing now
    /// (its driver's disk is full). It is handled as
    /// [`Node::handle_message`] handles it only where answering it stores
    /// nothing: a request for what this node holds (a fetch, a catchup
    /// stream, a catchup request, a checkpoint's or the app's chunks), or a
    /// member's heads, answered with this copy's own when they differ.
    /// Anything else (a transaction, a batch, a chunk, an acknowledgement,
    /// stability heard from others) would add to what this node must
    /// store: it is dropped, as a lost message is, and the sync that
    /// repairs losses brings it again once the node stores again. Returns
    /// whether the message was handled.
    pub fn handle_message_storing_nothing(
        &mut self,
        now: Time,
        from: MemberId,
        bytes: &[u8],
    ) -> Result<bool, MessageError> {
        let envelope = Envelope::decode(bytes)?;
        if from == self.env.me {
            return Ok(false);
        }
        match envelope.body {
            Body::Fetch { .. }
            | Body::Stream { .. }
            | Body::CatchupRequest { .. }
            | Body::AppRequest { .. }
            | Body::CheckpointRequest { .. } => {
                let queued = self.out.records_queued();
                self.handle_message(now, from, bytes)?;
                assert_eq!(
                    self.out.records_queued(),
                    queued,
                    "answering a request stores nothing"
                );
                Ok(true)
            }
            Body::Heads { heads, reply, .. } => {
                let Some(c) = self.contexts.get_mut(&envelope.context) else {
                    return Ok(false);
                };
                c.answer_heads(&self.env, &mut self.out, from, heads, reply);
                Ok(true)
            }
            Body::Tx(_)
            | Body::Txs { .. }
            | Body::CatchupAccepted { .. }
            | Body::CheckpointChunk { .. }
            | Body::CatchupRefused { .. }
            | Body::AppChunk { .. }
            | Body::LeaveAck { .. } => Ok(false),
        }
    }

    /// A member's phase follows its own status in the replicated
    /// membership, which a message can change: a node that caught up from a
    /// member with a stale view (one that had not yet seen this node's
    /// earlier leave) believes it is a member until it learns the leave.
    /// Invited again since: it joins at once. Not invited again: its leave
    /// stands and it deletes its copy.
    fn reconcile_phase(&mut self, context: ContextId) {
        let Some(c) = self.contexts.get_mut(&context) else {
            return;
        };
        // A leaver that learned every other member left too has nobody to
        // hand its copy to, nor anybody to acknowledge: it deletes, as a
        // last member leaving does at once.
        if let State::Leaving { held, .. } = &c.state
            && held.holders_besides(&self.env.me).is_empty()
        {
            // The others that left may still be waiting for an
            // acknowledgement, and nobody else is left to give one.
            for (leaver, leave) in held.leaves_of_others(&self.env.me) {
                let members = Vec::new();
                self.out
                    .send(context, leaver, Body::LeaveAck { leave, members });
            }
            self.delete(context);
            return;
        }
        let State::Member(held) = &mut c.state else {
            return;
        };
        match held.replica.status(&self.env.me) {
            Some(MemberStatus::Member) => {}
            Some(MemberStatus::Invited) => {
                held.author(context, TxKind::Join, &self.env, &mut self.out)
                    .expect("an invited member with a replica may join");
            }
            Some(MemberStatus::Left) | None => self.delete(context),
        }
    }

    /// Runs every timer due at `now`, context by context in order: the
    /// fetch's, the catchup's, the leave's, then the sync round.
    pub fn handle_timeout(&mut self, now: Time) {
        // No timer adds or removes a context, and one context's timers touch
        // only that context (and the shared generator and outputs).
        for c in self.contexts.values_mut() {
            if c.next_deadline() > now {
                continue;
            }
            c.fetch_timer(now);
            if let Some(held) = c.held_mut() {
                held.forward_timer(now);
            }
            c.catchup_timer(&mut self.env, &mut self.out, now);
            c.leave_timer(&self.env, &mut self.out, now);
            c.sync_timer(&mut self.env, &mut self.out, now);
            // No timer inserts today; a settle keeps it so if one ever does.
            c.settle(&mut self.out);
            c.note_stability(now, &mut self.out, &self.env.me);
        }
    }

    // ----- plumbing -----------------------------------------------------------------------

    /// Deletes this node's copy of a context it holds.
    fn delete(&mut self, context: ContextId) {
        let removed = self.contexts.remove(&context);
        let c = removed.expect("only a held context is deleted");
        self.deleted(&c);
    }

    /// Records that `c`, removed from the map, is deleted, with its
    /// tombstone.
    fn deleted(&mut self, c: &Context) {
        let last_own = self.env.tombstone_for(c);
        if let Some(last_own) = last_own {
            self.env.tombstones.insert(c.id, last_own);
        }
        self.out.deleted(c.id, last_own);
    }
}
