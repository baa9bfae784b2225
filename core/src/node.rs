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
//! Owns: the per-context protocol phase (joining, member, leaving), the
//! pending set, outstanding requests and their timers, and the order of
//! outputs. The durability rule lives here: a transaction's `Record::Tx` is
//! queued before any message that reveals it, so a driver that drains
//! `poll_persist` before `poll_transmit` never exposes an unpersisted
//! transaction.
//!
//! Nothing here reads a clock, performs I/O or draws ambient randomness:
//! time comes in as `now`, randomness from the seeded generator the driver
//! gives at construction.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{ContextId, Hash, Key, MemberId, TxId};
use crate::limits::{
    APP_BYTES_MAX, APP_CHUNK_BYTES, CONTEXTS_MAX, SYNC_BATCH_BYTES_MAX, SYNC_BATCH_TXS_MAX,
    SYNC_IDS_MAX,
};
use crate::membership::MemberStatus;
use crate::pending::Pending;
use crate::record::Record;
use crate::replica::{InsertError, Outcome, Replica, ReplicaError};
use crate::runtime::{AppError, CallError, wasm_from_source};
use crate::time::Time;
use crate::tx::{
    OrderKey, SignedTx, TX_FORMAT_VERSION, Tx, TxBody, TxError, TxKind, check_structure,
};
use crate::verify::Verifier;
use crate::wire::{Body, Envelope, RefuseReason, RequestId, WireError};

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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            sync_interval_ms: 1_000,
            request_timeout_ms: 1_500,
            sync_batch_txs_max: SYNC_BATCH_TXS_MAX,
            sync_batch_bytes_max: SYNC_BATCH_BYTES_MAX,
            stress: false,
        }
    }
}

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
    /// This node left and deleted its copy.
    Left { context: ContextId },
    /// A transaction was accepted and applied for the first time.
    Applied {
        context: ContextId,
        tx: TxId,
        outcome: Outcome,
    },
    /// A transaction sorted before already-applied ones; they were rolled
    /// back and re-executed.
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
    /// A received transaction was dropped as invalid.
    Dropped {
        context: ContextId,
        tx: TxId,
        reason: String,
    },
}

/// Where this node stands in a context.
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
    #[error("no context {0:?} on this node")]
    UnknownContext(ContextId),
    #[error("this node already holds context {0:?}")]
    AlreadyHeld(ContextId),
    #[error("this node is not a member of context {0:?} (phase: {1:?})")]
    NotAMember(ContextId, Option<Phase>),
    #[error("a node cannot join through itself")]
    JoinViaSelf,
    #[error("this node hosts the maximum of {CONTEXTS_MAX} contexts")]
    TooManyContexts,
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
}

/// Why a node could not be rebuilt from its records.
#[derive(Debug, Error)]
pub enum RestoreError {
    #[error("context {0:?}: {1}")]
    Tx(ContextId, TxError),
    #[error("context {0:?}: {1}")]
    Replica(ContextId, ReplicaError),
    #[error("context {0:?}: a transaction record before the context was opened")]
    TxBeforeOpen(ContextId),
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

/// A request waiting for its answer.
#[derive(Clone, Copy, Debug)]
struct Outstanding {
    request: RequestId,
    peer: MemberId,
    deadline: Time,
}

/// Progress of a catchup.
enum CatchupStep {
    /// Sent `CatchupRequest`, waiting for acceptance.
    Requested,
    /// Downloading the application blob.
    App { genesis: Tx, blob: Vec<u8> },
    /// The replica exists; streaming the order after `after`.
    Stream { after: Option<OrderKey> },
}

struct Catchup {
    step: CatchupStep,
    outstanding: Outstanding,
    /// Members learned of, to redirect to when the responder goes silent.
    candidates: Vec<MemberId>,
    /// Consecutive attempts without progress.
    attempts: u32,
}

/// Attempts at one responder before a catchup is redirected.
const CATCHUP_ATTEMPTS_PER_PEER: u32 = 2;

struct Context {
    id: ContextId,
    phase: Phase,
    replica: Option<Replica>,
    pending: Pending,
    next_tick_at: Time,
    fetch: Option<Outstanding>,
    catchup: Option<Catchup>,
    /// While leaving: the leave transaction and when to push it again.
    leave: Option<(TxId, Time)>,
}

impl Context {
    fn new(id: ContextId, phase: Phase, replica: Option<Replica>, next_tick_at: Time) -> Self {
        Self {
            id,
            phase,
            replica,
            pending: Pending::default(),
            next_tick_at,
            fetch: None,
            catchup: None,
            leave: None,
        }
    }

    fn next_deadline(&self) -> Time {
        let mut deadline = self.next_tick_at;
        for candidate in [
            self.fetch.map(|f| f.deadline),
            self.catchup.as_ref().map(|c| c.outstanding.deadline),
            self.leave.map(|(_, at)| at),
        ]
        .into_iter()
        .flatten()
        {
            deadline = deadline.min(candidate);
        }
        deadline
    }

    /// Whether this node answers `peer`'s sync requests (heads, fetch,
    /// stream, app) and takes its pushes: any node the membership names,
    /// including one that left, so that a node holding a stale view of its
    /// own membership (it caught up from a member that had not yet seen its
    /// earlier leave) can still learn where it stands.
    fn serves(&self, peer: &MemberId) -> bool {
        let Some(replica) = &self.replica else {
            return false;
        };
        self.phase != Phase::Joining && replica.status(peer).is_some()
    }

    /// Whether `peer` may catch up from this node: it must be invited (or
    /// already a member, resuming).
    fn accepts_catchup(&self, peer: &MemberId) -> bool {
        let Some(replica) = &self.replica else {
            return false;
        };
        self.phase == Phase::Member
            && matches!(
                replica.status(peer),
                Some(MemberStatus::Member | MemberStatus::Invited)
            )
    }
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
}

/// A node: one identity hosting any number of contexts.
pub struct Node {
    config: Config,
    key: SigningKey,
    me: MemberId,
    rng: ChaCha8Rng,
    verifier: Arc<dyn Verifier>,
    contexts: BTreeMap<ContextId, Context>,
    next_request: RequestId,
    records: VecDeque<Record>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
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
            config,
            key,
            me,
            rng: ChaCha8Rng::from_seed(seed),
            verifier,
            contexts: BTreeMap::new(),
            next_request: 1,
            records: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
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
        #[derive(Default)]
        struct Saved {
            joining_via: Option<MemberId>,
            opened: Option<(SignedTx, Vec<u8>)>,
            txs: Vec<SignedTx>,
        }
        let mut saved: BTreeMap<ContextId, Saved> = BTreeMap::new();
        for record in records {
            match record {
                Record::Joining { context, via } => {
                    saved.entry(context).or_default().joining_via = Some(via);
                }
                Record::Opened {
                    context,
                    genesis,
                    app,
                } => saved.entry(context).or_default().opened = Some((genesis, app)),
                Record::Tx { context, tx } => {
                    let entry = saved.get_mut(&context).filter(|s| s.opened.is_some());
                    entry
                        .ok_or(RestoreError::TxBeforeOpen(context))?
                        .txs
                        .push(tx);
                }
                Record::Deleted { context } => {
                    saved.remove(&context);
                }
            }
        }
        let mut node = Node::new(config, secret, seed, verifier);
        for (id, saved) in saved {
            let context = match saved.opened {
                None => {
                    let via = saved
                        .joining_via
                        .expect("a saved context is joining or opened");
                    node.joining_context(id, via, Time::ZERO)
                }
                Some((genesis, app)) => {
                    let genesis =
                        Tx::from_signed_unverified(genesis).map_err(|e| RestoreError::Tx(id, e))?;
                    let txs = saved
                        .txs
                        .into_iter()
                        .map(Tx::from_signed_unverified)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| RestoreError::Tx(id, e))?;
                    let replica = Replica::rebuild(genesis, Arc::new(app), txs)
                        .map_err(|e| RestoreError::Replica(id, e))?;
                    node.restored_context(id, replica, saved.joining_via)
                }
            };
            node.contexts.insert(id, context);
        }
        Ok(node)
    }

    fn restored_context(
        &mut self,
        id: ContextId,
        replica: Replica,
        via: Option<MemberId>,
    ) -> Context {
        let status = replica.status(&self.me);
        let mut context = Context::new(id, Phase::Member, None, Time::ZERO);
        match status {
            Some(MemberStatus::Member) => {}
            Some(MemberStatus::Left) => {
                let leave = replica
                    .order()
                    .filter(|tx_id| {
                        let tx = replica.tx(tx_id).expect("ordered");
                        tx.author() == self.me && matches!(tx.kind(), TxKind::Leave)
                    })
                    .last()
                    .expect("a member that left authored its leave");
                context.phase = Phase::Leaving;
                context.leave = Some((leave, Time::ZERO));
            }
            Some(MemberStatus::Invited) | None => {
                // Crashed while catching up: continue the stream.
                let candidates: Vec<MemberId> = replica
                    .membership()
                    .members()
                    .filter(|m| *m != self.me)
                    .collect();
                let peer = via
                    .or_else(|| candidates.first().copied())
                    .unwrap_or(self.me);
                context.phase = Phase::Joining;
                context.catchup = Some(Catchup {
                    step: CatchupStep::Stream {
                        after: replica.last_key(),
                    },
                    outstanding: Outstanding {
                        request: 0,
                        peer,
                        deadline: Time::ZERO,
                    },
                    candidates,
                    attempts: 0,
                });
            }
        }
        context.replica = Some(replica);
        context
    }

    // ----- identity and queries ------------------------------------------

    pub fn member_id(&self) -> MemberId {
        self.me
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The contexts this node holds (any phase), sorted.
    pub fn context_ids(&self) -> impl Iterator<Item = ContextId> + '_ {
        self.contexts.keys().copied()
    }

    pub fn phase(&self, context: &ContextId) -> Option<Phase> {
        self.contexts.get(context).map(|c| c.phase)
    }

    /// This node's copy of a context, once it holds the application.
    pub fn replica(&self, context: &ContextId) -> Option<&Replica> {
        self.contexts.get(context)?.replica.as_ref()
    }

    /// While catching up into `context`: the member asked now, then the
    /// members it may be redirected to. Empty otherwise. (A driver keeps
    /// these members' addresses: they are who the catchup talks to before
    /// the context's membership is known.)
    pub fn catchup_peers(&self, context: &ContextId) -> Vec<MemberId> {
        let Some(catchup) = self.contexts.get(context).and_then(|c| c.catchup.as_ref()) else {
            return Vec::new();
        };
        let mut peers = vec![catchup.outstanding.peer];
        peers.extend(
            catchup
                .candidates
                .iter()
                .copied()
                .filter(|m| *m != catchup.outstanding.peer),
        );
        peers
    }

    pub fn status(&self, context: &ContextId) -> Option<ContextStatus> {
        let c = self.contexts.get(context)?;
        let replica = c.replica.as_ref();
        Some(ContextStatus {
            context: *context,
            phase: c.phase,
            applied: replica.map_or(0, Replica::applied),
            pending: c.pending.len(),
            heads: replica.map_or_else(Vec::new, |r| r.heads().iter().copied().collect()),
            state_root: replica.map(Replica::state_root),
            members: replica.map_or_else(Vec::new, |r| r.membership().members().collect()),
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
        let phase = c.phase;
        let replica = c
            .replica
            .as_mut()
            .ok_or(CommandError::NotAMember(*context, Some(phase)))?;
        Ok(replica.view(method, input)?)
    }

    // ----- outputs ---------------------------------------------------------

    /// The next record to make durable. Drain these before `poll_transmit`.
    pub fn poll_persist(&mut self) -> Option<Record> {
        self.records.pop_front()
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
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
        let mut id_bytes = [0u8; 32];
        self.rng.fill_bytes(&mut id_bytes);
        let id = ContextId(id_bytes);
        let body = TxBody {
            version: TX_FORMAT_VERSION,
            context: id,
            author: self.me,
            height: 0,
            parents: Vec::new(),
            kind: TxKind::Create {
                app_hash: Hash(*blake3::hash(&blob).as_bytes()),
                app_bytes: blob.len() as u64,
            },
        };
        let genesis = Tx::sign(body, &self.key);
        let blob = Arc::new(blob);
        let replica = Replica::new(genesis.clone(), Arc::clone(&blob))?;
        self.records.push_back(Record::Opened {
            context: id,
            genesis: genesis.signed().clone(),
            app: blob.to_vec(),
        });
        let tick = self.tick_after(now);
        self.contexts
            .insert(id, Context::new(id, Phase::Member, Some(replica), tick));
        self.events.push_back(Event::Created { context: id });
        Ok(id)
    }

    /// Invites `member` into a context: it may then catch up and join.
    pub fn invite(
        &mut self,
        now: Time,
        context: ContextId,
        member: MemberId,
    ) -> Result<TxId, CommandError> {
        let _ = now;
        self.author(context, TxKind::Invite { member })
            .map(|r| r.tx)
    }

    /// Makes an application call: a transaction every member applies.
    pub fn call(
        &mut self,
        now: Time,
        context: ContextId,
        method: &str,
        input: Vec<u8>,
    ) -> Result<CallReceipt, CommandError> {
        let _ = now;
        let kind = TxKind::Call {
            method: method.to_owned(),
            input,
        };
        self.author(context, kind)
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
        if via == self.me {
            return Err(CommandError::JoinViaSelf);
        }
        if self.contexts.len() >= CONTEXTS_MAX {
            return Err(CommandError::TooManyContexts);
        }
        self.records.push_back(Record::Joining { context, via });
        let c = self.joining_context(context, via, now);
        self.contexts.insert(context, c);
        self.send_catchup_step(context, via, now);
        Ok(())
    }

    /// Leaves a context. A member pushes its `Leave` and deletes its copy once
    /// another member has it; a node still catching up deletes at once.
    pub fn leave(&mut self, now: Time, context: ContextId) -> Result<(), CommandError> {
        let phase = self
            .phase(&context)
            .ok_or(CommandError::UnknownContext(context))?;
        match phase {
            Phase::Joining => {
                self.delete(context);
                Ok(())
            }
            Phase::Leaving => Err(CommandError::NotAMember(context, Some(phase))),
            Phase::Member => {
                let receipt = self.author(context, TxKind::Leave)?;
                let others = self.other_members(&context);
                if others.is_empty() {
                    self.delete(context);
                } else {
                    let c = self.contexts.get_mut(&context).expect("held");
                    c.phase = Phase::Leaving;
                    c.leave = Some((receipt.tx, now + self.config.request_timeout_ms));
                }
                Ok(())
            }
        }
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
        if from == self.me {
            return Ok(());
        }
        let context = envelope.context;
        if !self.contexts.contains_key(&context) {
            if let Body::CatchupRequest { request } = envelope.body {
                let reason = RefuseReason::UnknownContext;
                self.send(context, from, Body::CatchupRefused { request, reason });
            }
            return Ok(());
        }
        match envelope.body {
            Body::Tx(signed) => self.on_tx(now, context, from, signed)?,
            Body::Heads { heads, reply } => self.on_heads(now, context, from, heads, reply),
            Body::Fetch {
                request,
                want,
                have,
            } => self.on_fetch(context, from, request, &want, &have),
            Body::Stream { request, after } => self.on_stream(context, from, request, after),
            Body::Txs {
                request,
                txs,
                more,
                complete,
            } => self.on_txs(now, context, from, request, txs, more, complete)?,
            Body::CatchupRequest { request } => self.on_catchup_request(context, from, request),
            Body::CatchupAccepted {
                request,
                genesis,
                members,
            } => self.on_catchup_accepted(now, context, from, request, genesis, members)?,
            Body::CatchupRefused { request, reason } => {
                self.on_catchup_refused(now, context, from, request, reason)
            }
            Body::AppRequest { request, offset } => {
                self.on_app_request(context, from, request, offset)
            }
            Body::AppChunk {
                request,
                offset,
                bytes,
            } => self.on_app_chunk(now, context, from, request, offset, bytes),
            Body::LeaveAck { leave } => self.on_leave_ack(context, leave),
        }
        self.reconcile_phase(context);
        Ok(())
    }

    /// A member's phase follows its own status in the replicated
    /// membership, which a message can change: a node that caught up from a
    /// member with a stale view (one that had not yet seen this node's
    /// earlier leave) believes it is a member until it learns the leave.
    /// Invited again since: it joins at once. Not invited again: its leave
    /// stands and it deletes its copy.
    fn reconcile_phase(&mut self, context: ContextId) {
        let Some(c) = self.contexts.get(&context) else {
            return;
        };
        if c.phase != Phase::Member {
            return;
        }
        match c.replica.as_ref().and_then(|r| r.status(&self.me)) {
            Some(MemberStatus::Member) => {}
            Some(MemberStatus::Invited) => {
                self.author(context, TxKind::Join)
                    .expect("an invited member with a replica may join");
            }
            Some(MemberStatus::Left) | None => self.delete(context),
        }
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Time) {
        let due: Vec<ContextId> = self
            .contexts
            .values()
            .filter(|c| c.next_deadline() <= now)
            .map(|c| c.id)
            .collect();
        for context in due {
            self.context_timers(now, context);
        }
    }

    // ----- authoring -------------------------------------------------------

    /// Makes, applies, persists and pushes a transaction of this node's.
    fn author(&mut self, context: ContextId, kind: TxKind) -> Result<CallReceipt, CommandError> {
        let c = self
            .contexts
            .get_mut(&context)
            .ok_or(CommandError::UnknownContext(context))?;
        // A join is authored by an invited node; everything else by a member.
        let required = match kind {
            TxKind::Join => MemberStatus::Invited,
            _ => MemberStatus::Member,
        };
        let replica = match (&mut c.replica, c.phase) {
            (Some(replica), Phase::Member) if replica.status(&self.me) == Some(required) => replica,
            _ => return Err(CommandError::NotAMember(context, Some(c.phase))),
        };
        let (parents, height) = replica.next_parents();
        let body = TxBody {
            version: TX_FORMAT_VERSION,
            context,
            author: self.me,
            height,
            parents,
            kind,
        };
        // Refuse an over-limit call as a command error, before signing.
        check_structure(&body)?;
        let tx = Tx::sign(body, &self.key);
        let id = tx.id();
        let others = self.other_members(&context);
        let outcome = self
            .accept(context, tx.clone())
            .expect("a transaction built on this node's heads is insertable");
        if let Outcome::Failed(error) = &outcome {
            self.events.push_back(Event::CallFailed {
                context,
                tx: id,
                error: error.clone(),
            });
        }
        for member in others {
            self.send(context, member, Body::Tx(tx.signed().clone()));
        }
        Ok(CallReceipt { tx: id, outcome })
    }

    /// Members of `context` other than this node, sorted.
    fn other_members(&self, context: &ContextId) -> Vec<MemberId> {
        self.replica(context)
            .map(|r| r.membership().members().filter(|m| *m != self.me).collect())
            .unwrap_or_default()
    }

    // ----- accepting transactions -------------------------------------------

    /// Inserts a transaction whose parents are accepted, persists it, reports
    /// it, and then releases whatever waited for it.
    fn accept(&mut self, context: ContextId, tx: Tx) -> Result<Outcome, InsertError> {
        let id = tx.id();
        let outcome = self.insert(context, tx)?;
        let c = self.contexts.get_mut(&context).expect("held");
        let mut ready = c.pending.release(&id);
        while let Some(next) = ready.pop() {
            let next_id = next.id();
            match self.insert(context, next) {
                Ok(_) => {
                    let c = self.contexts.get_mut(&context).expect("held");
                    ready.extend(c.pending.release(&next_id));
                }
                Err(error) => self.drop_invalid(context, next_id, &error),
            }
        }
        Ok(outcome)
    }

    /// Inserts one transaction whose parents are accepted; persists and
    /// reports it.
    fn insert(&mut self, context: ContextId, tx: Tx) -> Result<Outcome, InsertError> {
        let c = self.contexts.get_mut(&context).expect("held");
        let replica = c.replica.as_mut().expect("accepting needs a replica");
        let id = tx.id();
        let signed = tx.signed().clone();
        let inserted = replica.insert(tx)?;
        self.records.push_back(Record::Tx {
            context,
            tx: signed,
        });
        self.events.push_back(Event::Applied {
            context,
            tx: id,
            outcome: inserted.outcome.clone(),
        });
        if inserted.reexecuted > 0 {
            self.events.push_back(Event::Reordered {
                context,
                reexecuted: inserted.reexecuted,
            });
        }
        Ok(inserted.outcome)
    }

    /// A transaction the DAG refused can never be accepted: neither can
    /// anything waiting for it.
    fn drop_invalid(&mut self, context: ContextId, id: TxId, error: &InsertError) {
        let c = self.contexts.get_mut(&context).expect("held");
        c.pending.discard_descendants(&id);
        self.events.push_back(Event::Dropped {
            context,
            tx: id,
            reason: error.to_string(),
        });
    }

    /// Takes a verified transaction from `from`: accepts it if its parents
    /// are here, holds it and fetches them otherwise, ignores a duplicate.
    fn offer(&mut self, now: Time, context: ContextId, from: MemberId, tx: Tx) {
        let c = self.contexts.get_mut(&context).expect("held");
        let Some(replica) = c.replica.as_ref() else {
            return;
        };
        let id = tx.id();
        if replica.contains(&id) {
            return;
        }
        if c.pending.contains(&id) {
            // Sent again while still waiting for its parents: the sender
            // holds them (it accepted this transaction), and it may be the
            // only one that does, as for a leaver's own last transactions.
            self.start_fetch(now, context, from, Vec::new());
            return;
        }
        if tx.parents().iter().all(|p| replica.contains(p)) {
            if let Err(error) = self.accept(context, tx) {
                self.drop_invalid(context, id, &error);
            }
            return;
        }
        if tx.context() != context {
            return;
        }
        c.pending.hold(tx, |p| replica.contains(p));
        self.start_fetch(now, context, from, Vec::new());
    }

    // ----- message handlers ----------------------------------------------------

    fn on_tx(
        &mut self,
        now: Time,
        context: ContextId,
        from: MemberId,
        signed: SignedTx,
    ) -> Result<(), MessageError> {
        let c = &self.contexts[&context];
        let Some(replica) = &c.replica else {
            return Ok(());
        };
        let is_leave_of_sender = signed.body.author == from && signed.body.kind == TxKind::Leave;
        // A leaver pushes its leave until acknowledged, even after this member
        // applied it (and so stopped serving the leaver): acknowledge again.
        let known = is_leave_of_sender && replica.contains(&signed.body.id());
        if !known && !c.serves(&from) {
            return Ok(());
        }
        let tx = Tx::from_signed(signed, self.verifier.as_ref())?;
        let id = tx.id();
        self.offer(now, context, from, tx);
        // Acknowledge a leave once it is accepted here: the leaver may delete.
        if is_leave_of_sender && self.replica(&context).is_some_and(|r| r.contains(&id)) {
            self.send(context, from, Body::LeaveAck { leave: id });
        }
        Ok(())
    }

    fn on_heads(
        &mut self,
        now: Time,
        context: ContextId,
        from: MemberId,
        heads: Vec<TxId>,
        reply: bool,
    ) {
        let c = &self.contexts[&context];
        if c.phase != Phase::Member || !c.serves(&from) {
            return;
        }
        let replica = c.replica.as_ref().expect("a member has a replica");
        let unknown: Vec<TxId> = heads
            .iter()
            .filter(|id| !replica.contains(id) && !c.pending.contains(id))
            .copied()
            .take(SYNC_IDS_MAX)
            .collect();
        let mine: Vec<TxId> = replica.heads().iter().copied().collect();
        let differ = {
            let mut theirs = heads;
            theirs.sort_unstable();
            theirs.dedup();
            theirs != mine
        };
        if !unknown.is_empty() || !c.pending.missing().is_empty() {
            self.start_fetch(now, context, from, unknown);
        }
        if differ && !reply {
            let heads = self.heads_to_send(&context);
            self.send(context, from, Body::Heads { heads, reply: true });
        }
    }

    fn on_fetch(
        &mut self,
        context: ContextId,
        from: MemberId,
        request: RequestId,
        want: &[TxId],
        have: &[TxId],
    ) {
        let c = &self.contexts[&context];
        if !c.serves(&from) {
            return;
        }
        let txs_max = self.batch_txs_max();
        let c = &self.contexts[&context];
        let replica = c.replica.as_ref().expect("serving needs a replica");
        let (txs, complete) = replica.missing_for(
            &want[..want.len().min(SYNC_IDS_MAX)],
            &have[..have.len().min(SYNC_IDS_MAX)],
            txs_max,
            self.config.sync_batch_bytes_max,
        );
        let txs = txs.iter().map(|tx| tx.signed().clone()).collect();
        self.send(
            context,
            from,
            Body::Txs {
                request,
                txs,
                more: None,
                complete,
            },
        );
    }

    fn on_stream(
        &mut self,
        context: ContextId,
        from: MemberId,
        request: RequestId,
        after: Option<OrderKey>,
    ) {
        if !self.contexts[&context].serves(&from) {
            return;
        }
        let txs_max = self.batch_txs_max();
        let c = &self.contexts[&context];
        let replica = c.replica.as_ref().expect("serving needs a replica");
        let (txs, more) = replica.order_after(after, txs_max, self.config.sync_batch_bytes_max);
        let complete = more.is_none();
        self.send(
            context,
            from,
            Body::Txs {
                request,
                txs,
                more,
                complete,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn on_txs(
        &mut self,
        now: Time,
        context: ContextId,
        from: MemberId,
        request: RequestId,
        batch: Vec<SignedTx>,
        more: Option<OrderKey>,
        complete: bool,
    ) -> Result<(), MessageError> {
        let c = self.contexts.get_mut(&context).expect("held");
        let answers_fetch = c
            .fetch
            .is_some_and(|f| f.request == request && f.peer == from);
        let answers_stream = c.catchup.as_ref().is_some_and(|catchup| {
            matches!(catchup.step, CatchupStep::Stream { .. })
                && catchup.outstanding.request == request
                && catchup.outstanding.peer == from
        });
        if !answers_fetch && !answers_stream {
            return Ok(());
        }
        if answers_fetch {
            c.fetch = None;
        }
        let received = batch.len();
        let (txs, error) = Tx::from_signed_batch(batch, self.verifier.as_ref());
        let applied_before = self.replica(&context).map_or(0, Replica::applied);
        for tx in txs {
            self.offer(now, context, from, tx);
        }
        let progressed = self.replica(&context).map_or(0, Replica::applied) > applied_before;
        if answers_stream {
            match more {
                Some(after) => {
                    let c = self.contexts.get_mut(&context).expect("held");
                    let catchup = c.catchup.as_mut().expect("streaming");
                    catchup.step = CatchupStep::Stream { after: Some(after) };
                    catchup.attempts = 0;
                    if self.stress(6) {
                        // Redundant: ask twice; the first answer will be stale.
                        self.send_catchup_step(context, from, now);
                    }
                    self.send_catchup_step(context, from, now);
                }
                None => self.finish_catchup(now, context),
            }
        } else {
            let c = &self.contexts[&context];
            let still_missing = !c.pending.missing().is_empty();
            if still_missing && (progressed || !complete) && received > 0 {
                self.start_fetch(now, context, from, Vec::new());
            }
        }
        match error {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    fn on_catchup_request(&mut self, context: ContextId, from: MemberId, request: RequestId) {
        let c = &self.contexts[&context];
        let reason = match (&c.replica, c.phase) {
            (None, _) => Some(RefuseReason::UnknownContext),
            (Some(_), Phase::Joining | Phase::Leaving) => Some(RefuseReason::NotAMember),
            (Some(_), Phase::Member) if !c.accepts_catchup(&from) => Some(RefuseReason::NotInvited),
            _ => None,
        };
        let body = match reason {
            Some(reason) => Body::CatchupRefused { request, reason },
            None => {
                let replica = c.replica.as_ref().expect("checked");
                Body::CatchupAccepted {
                    request,
                    genesis: replica.genesis().signed().clone(),
                    members: replica.membership().members().collect(),
                }
            }
        };
        self.send(context, from, body);
    }

    fn on_catchup_accepted(
        &mut self,
        now: Time,
        context: ContextId,
        from: MemberId,
        request: RequestId,
        genesis: SignedTx,
        members: Vec<MemberId>,
    ) -> Result<(), MessageError> {
        let me = self.me;
        let c = self.contexts.get_mut(&context).expect("held");
        let Some(catchup) = c.catchup.as_mut() else {
            return Ok(());
        };
        if !matches!(catchup.step, CatchupStep::Requested)
            || catchup.outstanding.request != request
            || catchup.outstanding.peer != from
        {
            return Ok(());
        }
        let genesis = Tx::from_signed(genesis, self.verifier.as_ref())?;
        if genesis.context() != context || !matches!(genesis.kind(), TxKind::Create { .. }) {
            return Err(MessageError::Tx(TxError::WrongContext {
                expected: context,
                found: genesis.context(),
            }));
        }
        catchup.candidates = members
            .into_iter()
            .filter(|m| *m != me)
            .take(SYNC_IDS_MAX)
            .collect();
        catchup.step = CatchupStep::App {
            genesis,
            blob: Vec::new(),
        };
        catchup.attempts = 0;
        self.send_catchup_step(context, from, now);
        Ok(())
    }

    fn on_catchup_refused(
        &mut self,
        now: Time,
        context: ContextId,
        from: MemberId,
        request: RequestId,
        reason: RefuseReason,
    ) {
        let c = self.contexts.get_mut(&context).expect("held");
        let Some(catchup) = c.catchup.as_mut() else {
            return;
        };
        if catchup.outstanding.request != request || catchup.outstanding.peer != from {
            return;
        }
        // Try again when the request would have timed out: the invite may not
        // have reached the responder yet. Make late answers match nothing.
        catchup.outstanding.request = 0;
        catchup.outstanding.deadline = now + self.config.request_timeout_ms;
        self.events.push_back(Event::CatchupRefused {
            context,
            by: from,
            reason,
        });
    }

    fn on_app_request(
        &mut self,
        context: ContextId,
        from: MemberId,
        request: RequestId,
        offset: u64,
    ) {
        let c = &self.contexts[&context];
        if !c.serves(&from) {
            return;
        }
        let blob = c
            .replica
            .as_ref()
            .expect("serving needs a replica")
            .app_blob();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(blob.len());
        let end = (start + APP_CHUNK_BYTES).min(blob.len());
        let bytes = blob[start..end].to_vec();
        self.send(
            context,
            from,
            Body::AppChunk {
                request,
                offset,
                bytes,
            },
        );
    }

    fn on_app_chunk(
        &mut self,
        now: Time,
        context: ContextId,
        from: MemberId,
        request: RequestId,
        offset: u64,
        bytes: Vec<u8>,
    ) {
        let c = self.contexts.get_mut(&context).expect("held");
        let Some(catchup) = c.catchup.as_mut() else {
            return;
        };
        if catchup.outstanding.request != request || catchup.outstanding.peer != from {
            return;
        }
        let CatchupStep::App { genesis, blob } = &mut catchup.step else {
            return;
        };
        let TxKind::Create { app_bytes, .. } = genesis.kind() else {
            unreachable!("checked at acceptance");
        };
        let expected = *app_bytes;
        if offset != blob.len() as u64
            || bytes.is_empty()
            || blob.len() as u64 + bytes.len() as u64 > expected.min(APP_BYTES_MAX as u64)
        {
            // A chunk that does not fit: ask again, after the timeout.
            return;
        }
        blob.extend_from_slice(&bytes);
        catchup.attempts = 0;
        if (blob.len() as u64) < expected {
            self.send_catchup_step(context, from, now);
            return;
        }
        let genesis = genesis.clone();
        let blob = Arc::new(std::mem::take(blob));
        match Replica::new(genesis.clone(), Arc::clone(&blob)) {
            Ok(replica) => {
                self.records.push_back(Record::Opened {
                    context,
                    genesis: genesis.signed().clone(),
                    app: blob.to_vec(),
                });
                c.replica = Some(replica);
                catchup.step = CatchupStep::Stream {
                    after: Some(genesis.order_key()),
                };
                self.send_catchup_step(context, from, now);
            }
            Err(error) => {
                // The blob does not match its genesis: start over elsewhere.
                catchup.step = CatchupStep::Requested;
                catchup.attempts = CATCHUP_ATTEMPTS_PER_PEER;
                catchup.outstanding.request = 0;
                self.events.push_back(Event::Dropped {
                    context,
                    tx: genesis.id(),
                    reason: error.to_string(),
                });
            }
        }
    }

    fn on_leave_ack(&mut self, context: ContextId, leave: TxId) {
        let c = &self.contexts[&context];
        if c.phase == Phase::Leaving && c.leave.is_some_and(|(id, _)| id == leave) {
            self.delete(context);
        }
    }

    // ----- catchup -------------------------------------------------------------

    fn joining_context(&mut self, context: ContextId, via: MemberId, now: Time) -> Context {
        let mut c = Context::new(context, Phase::Joining, None, Time::from_ms(u64::MAX));
        c.catchup = Some(Catchup {
            step: CatchupStep::Requested,
            outstanding: Outstanding {
                request: 0,
                peer: via,
                deadline: now,
            },
            candidates: Vec::new(),
            attempts: 0,
        });
        c
    }

    /// Sends the request for the current catchup step to `peer`.
    fn send_catchup_step(&mut self, context: ContextId, peer: MemberId, now: Time) {
        let request = self.next_request_id();
        let deadline = now + self.config.request_timeout_ms;
        let c = self.contexts.get_mut(&context).expect("held");
        let catchup = c.catchup.as_mut().expect("catching up");
        catchup.outstanding = Outstanding {
            request,
            peer,
            deadline,
        };
        let body = match &catchup.step {
            CatchupStep::Requested => Body::CatchupRequest { request },
            CatchupStep::App { blob, .. } => Body::AppRequest {
                request,
                offset: blob.len() as u64,
            },
            CatchupStep::Stream { after } => Body::Stream {
                request,
                after: *after,
            },
        };
        self.send(context, peer, body);
    }

    /// The stream reached the end of the responder's order.
    fn finish_catchup(&mut self, now: Time, context: ContextId) {
        let c = self.contexts.get_mut(&context).expect("held");
        let replica = c.replica.as_ref().expect("streaming needs a replica");
        match replica.status(&self.me) {
            Some(MemberStatus::Invited) => {
                c.phase = Phase::Member;
                c.catchup = None;
                c.next_tick_at = now;
                self.author(context, TxKind::Join)
                    .expect("an invited, caught-up node may join");
                self.events.push_back(Event::Joined { context });
            }
            Some(MemberStatus::Member) => {
                c.phase = Phase::Member;
                c.catchup = None;
                c.next_tick_at = now;
                self.events.push_back(Event::Joined { context });
            }
            _ => {
                // Not invited in the order we were given: ask again later,
                // maybe elsewhere (the invite may still be travelling).
                let catchup = c.catchup.as_mut().expect("streaming");
                catchup.outstanding.request = 0;
                catchup.outstanding.deadline = now + self.config.request_timeout_ms;
            }
        }
    }

    // ----- timers ----------------------------------------------------------------

    fn context_timers(&mut self, now: Time, context: ContextId) {
        let c = self.contexts.get_mut(&context).expect("held");
        if c.fetch.is_some_and(|f| f.deadline <= now) {
            c.fetch = None;
        }
        if let Some(catchup) = c.catchup.as_mut()
            && catchup.outstanding.deadline <= now
        {
            catchup.attempts += 1;
            let mut peer = catchup.outstanding.peer;
            if catchup.attempts > CATCHUP_ATTEMPTS_PER_PEER && !catchup.candidates.is_empty() {
                let index = (self.rng.next_u64() % catchup.candidates.len() as u64) as usize;
                peer = catchup.candidates[index];
                catchup.attempts = 0;
            }
            self.send_catchup_step(context, peer, now);
        }
        let c = self.contexts.get_mut(&context).expect("held");
        if let Some((leave, at)) = c.leave
            && at <= now
        {
            c.leave = Some((leave, now + self.config.request_timeout_ms));
            let tx = c
                .replica
                .as_ref()
                .and_then(|r| r.tx(&leave))
                .expect("own leave")
                .signed()
                .clone();
            for member in self.other_members(&context) {
                self.send(context, member, Body::Tx(tx.clone()));
            }
        }
        if self.contexts[&context].next_tick_at <= now {
            let next = self.tick_after(now);
            self.contexts.get_mut(&context).expect("held").next_tick_at = next;
            if self.contexts[&context].phase == Phase::Member {
                self.sync_tick(now, context);
            }
        }
    }

    /// Anti-entropy: heads to one random other member; missing parents are
    /// fetched from one.
    fn sync_tick(&mut self, now: Time, context: ContextId) {
        let others = self.other_members(&context);
        if others.is_empty() {
            return;
        }
        let peer = others[(self.rng.next_u64() % others.len() as u64) as usize];
        let heads = self.heads_to_send(&context);
        if self.stress(6) {
            // Redundant: heads to a second peer too.
            let second = others[(self.rng.next_u64() % others.len() as u64) as usize];
            if second != peer {
                let heads = heads.clone();
                self.send(
                    context,
                    second,
                    Body::Heads {
                        heads,
                        reply: false,
                    },
                );
            }
        }
        if self.stress(8) {
            // Abandon the fetch in flight: its answer will match nothing.
            self.contexts.get_mut(&context).expect("held").fetch = None;
        }
        self.send(
            context,
            peer,
            Body::Heads {
                heads,
                reply: false,
            },
        );
        if !self.contexts[&context].pending.missing().is_empty() {
            self.start_fetch(now, context, peer, Vec::new());
        }
    }

    fn tick_after(&mut self, now: Time) -> Time {
        let interval = self.config.sync_interval_ms.max(1);
        if self.stress(4) {
            // Early: anywhere from 1 ms to a full interval.
            return now + (1 + self.rng.next_u64() % interval);
        }
        let jitter = self.rng.next_u64() % (interval / 4 + 1);
        now + (interval + jitter)
    }

    /// Stress: true one time in `one_in` when the hooks are on.
    fn stress(&mut self, one_in: u64) -> bool {
        self.config.stress && self.rng.next_u64().is_multiple_of(one_in)
    }

    /// Transactions per answer: the configured batch, or under stress
    /// sometimes a tiny one.
    fn batch_txs_max(&mut self) -> usize {
        if self.stress(4) {
            return 1 + (self.rng.next_u64() % 3) as usize;
        }
        self.config.sync_batch_txs_max.max(1)
    }

    // ----- sync requests ------------------------------------------------------------

    /// Asks `peer` for what this node misses: `want` and the parents pending
    /// transactions wait for. At most one fetch per context is in flight.
    fn start_fetch(&mut self, now: Time, context: ContextId, peer: MemberId, mut want: Vec<TxId>) {
        let c = &self.contexts[&context];
        if c.fetch.is_some() || c.replica.is_none() {
            return;
        }
        want.extend(c.pending.missing().iter().copied());
        want.sort_unstable();
        want.dedup();
        want.truncate(SYNC_IDS_MAX);
        if want.is_empty() {
            return;
        }
        let have = self.heads_to_send(&context);
        let request = self.next_request_id();
        let c = self.contexts.get_mut(&context).expect("held");
        c.fetch = Some(Outstanding {
            request,
            peer,
            deadline: now + self.config.request_timeout_ms,
        });
        self.send(
            context,
            peer,
            Body::Fetch {
                request,
                want,
                have,
            },
        );
    }

    /// This node's heads, the highest ones if there are more than fit.
    fn heads_to_send(&self, context: &ContextId) -> Vec<TxId> {
        let Some(replica) = self.replica(context) else {
            return Vec::new();
        };
        let heads = replica.heads();
        if heads.len() <= SYNC_IDS_MAX {
            return heads.iter().copied().collect();
        }
        let mut keys: Vec<OrderKey> = heads
            .iter()
            .filter_map(|id| replica.tx(id))
            .map(Tx::order_key)
            .collect();
        keys.sort_unstable();
        let mut ids: Vec<TxId> = keys[keys.len() - SYNC_IDS_MAX..]
            .iter()
            .map(|k| k.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    // ----- plumbing -----------------------------------------------------------------------

    fn delete(&mut self, context: ContextId) {
        self.contexts.remove(&context);
        self.records.push_back(Record::Deleted { context });
        self.events.push_back(Event::Left { context });
    }

    fn next_request_id(&mut self) -> RequestId {
        let id = self.next_request;
        self.next_request += 1;
        id
    }

    fn send(&mut self, context: ContextId, to: MemberId, body: Body) {
        debug_assert_ne!(to, self.me, "a node never sends to itself");
        let kind = body.name();
        let bytes = Envelope::new(context, body).encode();
        self.transmits.push_back(Transmit {
            to,
            context,
            kind,
            bytes,
        });
    }
}
