//! The engine task: the one owner of the `Node`, the store and the peer
//! table. It takes inputs (network events, admin requests, timers) in
//! batches, feeds them to the engine, then *flushes*: records are committed
//! to the store, and only then are replies released, messages sent and
//! events reported.
//!
//! Invariants:
//! - Nothing the engine emitted after a record leaves the node before that
//!   record is durable: `flush` commits every drained record in one write
//!   transaction before it drains `poll_transmit`, and admin replies that
//!   acknowledge a change (create, invite, join, leave, call) are released
//!   only after that commit.
//! - No protocol decision is made here: which messages to send, when to
//!   sync, who may join, all come from the engine. This task decides only
//!   where bytes go (which connection, which address to dial, when to dial
//!   again).
//! - Time given to the engine is monotonic: milliseconds since the process
//!   started (`Time` only needs differences; nothing stored holds a time).
//! - Nothing read from the engine's state leaves before what it shows is
//!   durable: `status`, `view` and `wait` answers are released after the
//!   batch's commit too.
//! - One connection per peer: of two connections with a peer made within
//!   `SIMULTANEOUS_DIAL_WINDOW` of each other, both sides keep the one
//!   dialled by the lower member id (the newer, when both were dialled by
//!   the same side); a connection that comes later replaces an older one,
//!   since a peer dials only when it holds no connection with this node.
//! - The address book holds at most `PEERS_MAX` members. Only addresses a
//!   connection proved, of members named in a context this node holds, are
//!   stored; gossip only fills gaps, in memory, and a gossiped address that
//!   fails a dial is forgotten.
//! - Strangers get nothing and hold nothing. A stranger is a member no
//!   context this node holds, invites or is joining names (`is_named`). Its
//!   connection is closed `STRANGER_GRACE` after it was made unless a
//!   context names it by then, at most `STRANGERS_MAX` are connected at
//!   once, it is sent no addresses and its gossip is ignored, and it is
//!   forgotten with its connection. Addresses go only to a member of a
//!   context this node shares with it, and only of that context's members
//!   (`book_for`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ctx_core::membership::MemberStatus;
use ctx_core::wire::RefuseReason;
use ctx_core::{
    CallReceipt, CommandError, Config, ContextId, ContextStatus, Ed25519Verifier, Event, MemberId,
    Node, Outcome, Phase, Time, TxId,
};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::identity::Identity;
use crate::limited;
use crate::limits::{
    ADDRESS_GOSSIP_INTERVAL, BACKOFF_MAX, BACKOFF_MIN, CONNECTION_STABLE_AFTER,
    CONNECTIONS_OUTBOUND_MAX, INPUT_BATCH_MAX, JOIN_ANSWER_WAIT, JOIN_REDIAL_AFTER,
    JOIN_RESOLVE_TIMEOUT, JOINS_MAX, PEER_QUEUE_BYTES_MAX, PEER_QUEUE_MAX, PEERS_MAX,
    SIMULTANEOUS_DIAL_WINDOW, STRANGER_GRACE, STRANGER_SWEEP_INTERVAL, STRANGERS_MAX, WAITERS_MAX,
};
use crate::metrics::Metrics;
use crate::net::{ConnId, ConnUp, DialsBusy, Net, NetEvent, Outbox};
use crate::peer::PeerMessage;
use crate::space::{Change, Space, SpaceState};
use crate::store::{Loaded, Store, StoreError};

/// Why an admin request failed.
#[derive(Debug, Error)]
pub enum RequestError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("cannot reach a node at {addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("{what}: at most {max} at once; try again")]
    Busy { what: &'static str, max: usize },
    #[error(
        "member {by} refused the join: {reason}; the join was cancelled ({advice})",
        advice = refusal_advice(*reason)
    )]
    JoinRefused {
        context: ContextId,
        by: MemberId,
        reason: RefuseReason,
    },
    #[error("the join was given up: {reason}")]
    JoinAbandoned { context: ContextId, reason: String },
    #[error(
        "this node's disk is full ({available} bytes left on {dir}): it stores nothing until \
         space returns, so it takes no writes; reads, status and answers to the other members \
         go on, and it stores again by itself once the disk has room",
        dir = dir.display()
    )]
    DiskFull {
        dir: std::path::PathBuf,
        available: u64,
    },
}

/// What an operator can do about a refused join.
fn refusal_advice(reason: RefuseReason) -> &'static str {
    match reason {
        RefuseReason::UnknownContext => "check the context id, or join through a member of it",
        RefuseReason::NotInvited => {
            "have a member invite this node's member id, then join through a member that has seen the invitation"
        }
        RefuseReason::NotAMember | RefuseReason::Superseded => {
            "join through a member that has finished joining"
        }
    }
}

/// How far a join got when its request was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinState {
    /// Caught up: a member.
    Joined,
    /// The member asked accepted; catching up.
    CatchingUp,
    /// The member asked has not answered in time; the engine keeps asking
    /// (it or the other members it learns of).
    Asked,
}

impl JoinState {
    pub fn name(self) -> &'static str {
        match self {
            JoinState::Joined => "joined",
            JoinState::CatchingUp => "catching_up",
            JoinState::Asked => "asked",
        }
    }
}

/// The answer to a join: who was asked, and how far it got.
#[derive(Clone, Copy, Debug)]
pub struct JoinAnswer {
    pub via: MemberId,
    pub state: JoinState,
}

pub type Reply<T> = oneshot::Sender<Result<T, RequestError>>;

/// What the admin API asks of the engine task.
pub enum AdminRequest {
    Status {
        reply: oneshot::Sender<StatusReport>,
    },
    Create {
        app: Vec<u8>,
        reply: Reply<ContextId>,
    },
    Invite {
        context: ContextId,
        member: MemberId,
        reply: Reply<TxId>,
    },
    Join {
        context: ContextId,
        via: SocketAddr,
        reply: Reply<JoinAnswer>,
    },
    Leave {
        context: ContextId,
        reply: Reply<()>,
    },
    Call {
        context: ContextId,
        method: String,
        input: Vec<u8>,
        reply: Reply<CallReceipt>,
    },
    View {
        context: ContextId,
        method: String,
        input: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    /// The application blob `context` runs (for its ABI).
    App {
        context: ContextId,
        reply: Reply<Arc<Vec<u8>>>,
    },
    /// Where `tx` stands; with `wait`, answered once it is applied.
    Wait {
        context: ContextId,
        tx: TxId,
        wait: bool,
        reply: Reply<TxState>,
    },
    /// The stable order of `context` from position `from`, at most `max`
    /// entries (the events stream).
    Stable {
        context: ContextId,
        from: u64,
        max: usize,
        reply: Reply<StablePage>,
    },
}

/// A page of a context's stable order: the transactions every member
/// holds, in the same order, for ever. Positions count from the context's
/// genesis (0), the same on every member.
#[derive(Debug)]
pub struct StablePage {
    /// The first position this copy still holds (those below are folded
    /// into the checkpoint it stands on).
    pub base: u64,
    /// Positions below it are stable.
    pub stable: u64,
    pub entries: Vec<StableEntry>,
}

#[derive(Debug)]
pub struct StableEntry {
    pub position: u64,
    pub tx: TxId,
    pub author: MemberId,
    pub kind: ctx_core::tx::TxKind,
    pub outcome: Outcome,
}

/// Where a transaction stands on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxState {
    /// In the order and applied (its records committed).
    Applied,
    /// Held, waiting for its parents.
    Pending,
    /// Not known here (yet).
    Unknown,
}

impl TxState {
    pub fn name(self) -> &'static str {
        match self {
            TxState::Applied => "applied",
            TxState::Pending => "pending",
            TxState::Unknown => "unknown",
        }
    }
}

/// A snapshot for `status`.
pub struct StatusReport {
    pub member: MemberId,
    pub peers: Vec<PeerReport>,
    pub contexts: Vec<ContextStatus>,
    /// The engine's time now (milliseconds since the node started), which
    /// the times in `contexts` are on.
    pub now: Time,
    /// Strangers connected now (each for at most `STRANGER_GRACE`); they
    /// are not in `peers`.
    pub strangers: usize,
    pub disk: DiskReport,
}

/// The data directory's disk, as `status` shows it.
pub struct DiskReport {
    /// Whether the node stores nothing now (its disk was full).
    pub full: bool,
    /// For how long, when full.
    pub full_for: Option<Duration>,
    /// The bytes left on the file system, if it can be read.
    pub available: Option<u64>,
    /// The reserve kept for the records on their way to the store.
    pub reserve: u64,
}

pub struct PeerReport {
    pub member: MemberId,
    pub addr: Option<SocketAddr>,
    pub connected: bool,
}

#[derive(Debug, Error)]
pub enum DriverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The records passed their checks, but the engine refused them.
    #[error(
        "the store's records do not restore the engine ({0}). Run `ctx-node repair` on the data directory to keep what restores"
    )]
    Restore(ctx_core::RestoreError),
}

struct Conn {
    id: ConnId,
    initiated: bool,
    since: Instant,
    outbox: Outbox,
    /// Dropped with the `Conn`, which closes the connection.
    _closer: oneshot::Sender<()>,
}

#[derive(Default)]
struct Peer {
    addr: Option<SocketAddr>,
    /// Whether a connection proved `addr` (else gossip gave it).
    addr_proven: bool,
    /// Whether `addr` is in the store.
    addr_stored: bool,
    /// Whether this node dialled `addr` successfully, and no dial to it
    /// failed since.
    addr_dialled: bool,
    conn: Option<Conn>,
    dialing: bool,
    backoff: Duration,
    next_dial_at: Option<Instant>,
    /// Messages waiting for a connection, and their bytes.
    queue: VecDeque<Vec<u8>>,
    queue_bytes: usize,
}

fn log_full(metrics: &Metrics, available: u64, freed: u64) {
    metrics.disk_full_events.inc();
    tracing::error!(
        available,
        freed,
        "disk full: this node stores nothing until space returns; writes are refused (507), \
         reads, status and answers to the other members go on, and it stores again by itself \
         once the disk has room"
    );
}

/// A join waiting to learn who answers at its address.
struct PendingJoin {
    via: SocketAddr,
    context: ContextId,
    deadline: Instant,
    reply: Reply<JoinAnswer>,
    /// After a transient failure (the address answered and closed the
    /// handshake): when to dial again, and what failed.
    redial_at: Option<Instant>,
    failed: Option<String>,
}

/// A join the engine made, waiting for the member asked to answer: it is
/// answered when that member accepts (or it is joined), refuses, or at
/// `deadline`.
struct AnsweringJoin {
    context: ContextId,
    via: MemberId,
    deadline: Instant,
    reply: Reply<JoinAnswer>,
    /// The member asked refused for good (not `Superseded`).
    refused: Option<RefuseReason>,
    /// The engine gave the join up.
    abandoned: Option<String>,
}

/// The engine task's connections to the network tasks and the admin API.
pub struct Wiring {
    pub net: Arc<Net>,
    pub net_events: mpsc::Receiver<NetEvent>,
    pub admin: mpsc::Receiver<AdminRequest>,
    pub metrics: Arc<Metrics>,
}

type Deferred = Box<dyn FnOnce() + Send>;

pub struct Driver {
    node: Node,
    me: MemberId,
    store: Store,
    space: Space,
    metrics: Arc<Metrics>,
    /// The bytes of the inputs the engine took in since the last commit
    /// (`Space::admit`).
    batch_bytes: u64,
    start: Instant,
    net: Arc<Net>,
    net_events: mpsc::Receiver<NetEvent>,
    admin: mpsc::Receiver<AdminRequest>,
    peers: BTreeMap<MemberId, Peer>,
    /// Address-book changes to store with the next commit.
    dirty_peers: Vec<(MemberId, SocketAddr)>,
    joins: Vec<PendingJoin>,
    answering: Vec<AnsweringJoin>,
    /// Replies released after the next commit.
    deferred: Vec<Deferred>,
    waiters: HashMap<(ContextId, TxId), Vec<Reply<TxState>>>,
    waiter_count: usize,
    next_gossip_at: Instant,
    next_sweep_at: Instant,
}

impl Driver {
    /// Rebuilds the engine from the store's records.
    pub fn new(
        identity: &Identity,
        config: Config,
        seed: [u8; 32],
        store: Store,
        space: Space,
        loaded: Loaded,
        wiring: Wiring,
    ) -> Result<Driver, DriverError> {
        let Wiring {
            net,
            net_events,
            admin,
            metrics,
        } = wiring;
        let record_count = loaded.records.len();
        let node = Node::restore(
            config,
            *identity.secret(),
            seed,
            Arc::new(Ed25519Verifier),
            loaded.records,
        )
        .map_err(DriverError::Restore)?;
        let mut peers = BTreeMap::new();
        for (member, addr) in loaded.peers {
            peers.insert(
                member,
                Peer {
                    addr: Some(addr),
                    addr_proven: true,
                    addr_stored: true,
                    // Kept until a dial to it fails: an inbound connection
                    // after a restart only suggests an address.
                    addr_dialled: true,
                    ..Peer::default()
                },
            );
        }
        info!(
            member = %identity.member(),
            records = record_count,
            contexts = node.context_ids().count(),
            peers = peers.len(),
            "engine restored"
        );
        let start = Instant::now();
        Ok(Driver {
            me: identity.member(),
            node,
            store,
            space,
            metrics,
            batch_bytes: 0,
            start,
            net,
            net_events,
            admin,
            peers,
            dirty_peers: Vec::new(),
            joins: Vec::new(),
            answering: Vec::new(),
            deferred: Vec::new(),
            waiters: HashMap::new(),
            waiter_count: 0,
            next_gossip_at: start + ADDRESS_GOSSIP_INTERVAL,
            next_sweep_at: start + STRANGER_SWEEP_INTERVAL,
        })
    }

    /// Runs until `shutdown` turns true or every input source is gone. A
    /// failed commit stops the node: it cannot go on without durability.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), DriverError> {
        self.update_gauges();
        loop {
            let deadline = self.deadline();
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                event = self.net_events.recv() => match event {
                    Some(event) => self.on_net(event),
                    None => break,
                },
                request = self.admin.recv() => match request {
                    Some(request) => self.on_admin(request),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => {}
            }
            self.take_batch();
            self.on_timers();
            self.flush()?;
        }
        self.flush()?;
        info!("engine stopped");
        Ok(())
    }

    /// Takes what else is waiting, up to a batch, so that one commit serves
    /// many inputs: the network and the admin API in turn, so that a busy
    /// network cannot starve the operator.
    fn take_batch(&mut self) {
        for _ in 0..INPUT_BATCH_MAX / 2 {
            let event = self.net_events.try_recv().ok();
            let request = self.admin.try_recv().ok();
            if event.is_none() && request.is_none() {
                break;
            }
            if let Some(event) = event {
                self.on_net(event);
            }
            if let Some(request) = request {
                self.on_admin(request);
            }
        }
    }

    fn now(&self) -> Time {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        Time::from_ms(ms)
    }

    /// The instant of an engine time; far in the future when it overflows
    /// (a timer set with a huge configured interval).
    fn instant_of(&self, time: Time) -> Instant {
        let far = Duration::from_secs(86_400 * 365);
        self.start
            .checked_add(Duration::from_millis(time.as_ms()))
            .unwrap_or_else(|| Instant::now() + far)
    }

    /// The earliest of: the engine's timer, a redial, a join's deadline, the
    /// next gossip, the next sweep of strangers.
    fn deadline(&self) -> Instant {
        let mut deadline = self.next_gossip_at.min(self.next_sweep_at);
        if let Some(at) = self.node.poll_timeout() {
            deadline = deadline.min(self.instant_of(at));
        }
        for peer in self.peers.values() {
            if peer.wants_dial()
                && let Some(at) = peer.next_dial_at
            {
                deadline = deadline.min(at);
            }
        }
        for join in &self.joins {
            deadline = deadline.min(join.deadline);
            if let Some(at) = join.redial_at {
                deadline = deadline.min(at);
            }
        }
        for join in &self.answering {
            deadline = deadline.min(join.deadline);
        }
        deadline
    }

    fn on_timers(&mut self) {
        let now = self.now();
        if self.node.poll_timeout().is_some_and(|at| at <= now) {
            self.node.handle_timeout(now);
        }
        let instant = Instant::now();
        let redial: Vec<MemberId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.wants_dial() && p.next_dial_at.is_none_or(|at| at <= instant))
            .map(|(m, _)| *m)
            .collect();
        for member in redial {
            self.maybe_dial(member);
        }
        for join in self.take_joins(|j| j.deadline <= instant) {
            let _ = join.reply.send(Err(RequestError::Unreachable {
                addr: join.via,
                reason: join.failed.unwrap_or_else(|| "no answer in time".into()),
            }));
        }
        let mut redials = Vec::new();
        for join in &mut self.joins {
            if join.redial_at.is_some_and(|at| at <= instant) {
                join.redial_at = None;
                redials.push(join.via);
            }
        }
        redials.dedup();
        for via in redials {
            if self.net.dial(via, None).is_err() {
                for join in self.joins.iter_mut().filter(|j| j.via == via) {
                    join.redial_at = Some(instant + JOIN_REDIAL_AFTER);
                }
            }
        }
        if self.next_sweep_at <= instant {
            self.next_sweep_at = instant + STRANGER_SWEEP_INTERVAL;
            self.close_strangers();
            crate::logs::flush_limited();
            self.update_gauges();
            let space = &mut self.space;
            if let Change::Resumed { available } =
                tokio::task::block_in_place(|| space.try_resume())
            {
                info!(
                    available,
                    reserve = self.space.reserve_bytes(),
                    "disk space is back: this node stores again and takes writes"
                );
            }
        }
        if self.next_gossip_at <= instant {
            self.next_gossip_at = instant + ADDRESS_GOSSIP_INTERVAL;
            self.store_named_addresses();
            self.gossip();
        }
    }

    /// Commits records, then releases replies, messages and events.
    fn flush(&mut self) -> Result<(), DriverError> {
        loop {
            self.commit_and_release()?;
            // A refused join is cancelled, and answered once that is
            // committed.
            if !self.answer_joins() {
                return Ok(());
            }
        }
    }

    fn commit_and_release(&mut self) -> Result<(), DriverError> {
        let mut records = Vec::new();
        while let Some(record) = self.node.poll_persist() {
            records.push(record);
        }
        let peers = std::mem::take(&mut self.dirty_peers);
        if !records.is_empty() || !peers.is_empty() {
            let bytes = records.iter().map(|r| r.encode().len()).sum::<usize>() + peers.len() * 64;
            let was_full = self.space.is_full();
            let change = self.space.before_commit(bytes as u64);
            if let Change::TurnedFull { available, freed } = change {
                log_full(&self.metrics, available, freed);
            } else if was_full && !records.is_empty() {
                limited!(
                    warn,
                    records = records.len(),
                    "stored records of the node's own timers while the disk is full"
                );
            }
            let store = &mut self.store;
            let started = std::time::Instant::now();
            tokio::task::block_in_place(|| store.commit(&records, &peers))?;
            self.space.refresh();
            let took = started.elapsed();
            self.metrics.commit_seconds.observe(took.as_secs_f64());
            let commit_us = took.as_micros() as u64;
            debug!(records = records.len(), commit_us, "committed");
        }
        self.batch_bytes = 0;
        for reply in self.deferred.drain(..) {
            reply();
        }
        while let Some(transmit) = self.node.poll_transmit() {
            debug!(to = %transmit.to.short(), kind = transmit.kind, bytes = transmit.bytes.len(), "send");
            self.send(transmit.to, PeerMessage::encode_engine(&transmit.bytes));
        }
        while let Some(event) = self.node.poll_event() {
            self.on_event(event);
        }
        Ok(())
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Applied { context, tx, .. } => {
                self.metrics.applied.inc();
                debug!(context = %context.short(), tx = %tx.short(), "applied");
                if let Some(waiters) = self.waiters.remove(&(context, tx)) {
                    self.waiter_count -= waiters.len();
                    for waiter in waiters {
                        let _ = waiter.send(Ok(TxState::Applied));
                    }
                }
            }
            Event::Created { context } => info!(context = %context, "context created"),
            Event::Joined { context } => {
                info!(context = %context, "joined context");
                self.store_named_addresses();
            }
            Event::Left { context } => info!(context = %context, "left context"),
            Event::JoinAbandoned { context, reason } => {
                tracing::error!(context = %context, %reason, "join abandoned");
                for join in self.answering.iter_mut().filter(|j| j.context == context) {
                    join.abandoned = Some(reason.clone());
                }
            }
            Event::Reordered {
                context,
                reexecuted,
            } => debug!(context = %context.short(), reexecuted, "reordered"),
            Event::CallFailed { context, tx, error } => {
                info!(context = %context.short(), tx = %tx.short(), %error, "call failed")
            }
            Event::CatchupRefused {
                context,
                by,
                reason,
            } => {
                warn!(context = %context.short(), by = %by.short(), %reason, "catchup refused");
                if reason != RefuseReason::Superseded
                    && let Some(join) = self
                        .answering
                        .iter_mut()
                        .find(|j| j.context == context && j.via == by)
                {
                    join.refused = Some(reason);
                }
            }
            Event::BelowStable {
                context,
                tx,
                height,
                frontier,
            } => tracing::error!(
                context = %context,
                tx = %tx,
                height,
                frontier,
                "a member broke its stability promise: a transaction below the stable frontier"
            ),
            Event::Announced { .. } => {}
            Event::TornRecordSkipped { record, damage } => {
                warn!(record, %damage, "skipped the store's torn last record")
            }
            Event::CheckpointLoaded {
                context,
                from,
                height,
                applied,
                vouched_by,
            } => info!(
                context = %context,
                from = %from,
                height,
                applied,
                vouched_by = vouched_by.len(),
                "joined from a checkpoint"
            ),
            Event::CheckpointRefused {
                context,
                from,
                reason,
            } => {
                limited!(warn, %context, %from, %reason, "refused a checkpoint")
            }
            Event::CheckpointMismatch {
                context,
                member,
                height,
            } => tracing::error!(
                context = %context,
                member = %member,
                height,
                "another member's checkpoint at this cut differs from ours: the copies diverged"
            ),
            Event::Dropped {
                context,
                tx,
                reason,
            } => {
                limited!(warn, %context, %tx, %reason, "dropped a transaction")
            }
        }
    }

    // ----- admin ---------------------------------------------------------

    fn on_admin(&mut self, request: AdminRequest) {
        let now = self.now();
        match request {
            AdminRequest::Status { reply } => {
                let report = self.status();
                self.reply_after_commit(reply, report);
            }
            AdminRequest::Create { app, reply } => {
                self.admit(app.len());
                let result = self
                    .storing()
                    .and_then(|()| Ok(self.node.create_context(now, &app)?));
                self.reply_after_commit(reply, result);
            }
            AdminRequest::Invite {
                context,
                member,
                reply,
            } => {
                let result = self.storing().and_then(|()| {
                    self.node.check_invite(&context, &member)?;
                    Ok(self.node.invite(now, context, member)?)
                });
                self.reply_after_commit(reply, result);
            }
            AdminRequest::Join {
                context,
                via,
                reply,
            } => self.on_join(context, via, reply),
            AdminRequest::Leave { context, reply } => {
                let result = self
                    .storing()
                    .and_then(|()| Ok(self.node.leave(now, context)?));
                self.reply_after_commit(reply, result);
            }
            AdminRequest::Call {
                context,
                method,
                input,
                reply,
            } => {
                self.admit(input.len() + method.len());
                let result = self.storing().and_then(|()| {
                    self.node.check_call(&context, &method)?;
                    Ok(self.node.call(now, context, &method, input)?)
                });
                self.reply_after_commit(reply, result);
            }
            AdminRequest::View {
                context,
                method,
                input,
                reply,
            } => {
                let result = self.node.view(&context, &method, &input);
                self.reply_after_commit(reply, result.map_err(RequestError::from));
            }
            AdminRequest::App { context, reply } => {
                let blob = self
                    .node
                    .replica(&context)
                    .map(|replica| Arc::clone(replica.app_blob()))
                    .ok_or(RequestError::Command(CommandError::UnknownContext(context)));
                let _ = reply.send(blob);
            }
            AdminRequest::Wait {
                context,
                tx,
                wait,
                reply,
            } => self.on_wait(context, tx, wait, reply),
            AdminRequest::Stable {
                context,
                from,
                max,
                reply,
            } => {
                let page = self.stable_page(context, from, max);
                self.reply_after_commit(reply, page);
            }
        }
    }

    /// Sends `answer` once this batch's records are committed.
    fn reply_after_commit<T: Send + 'static>(&mut self, reply: oneshot::Sender<T>, answer: T) {
        self.deferred.push(Box::new(move || {
            let _ = reply.send(answer);
        }));
    }

    /// Counts an input of `bytes` the engine is about to take in against
    /// the space left; the node turns full first when it might not fit.
    fn admit(&mut self, bytes: usize) {
        self.batch_bytes += bytes as u64;
        if let Change::TurnedFull { available, freed } = self.space.admit(self.batch_bytes) {
            log_full(&self.metrics, available, freed);
        }
    }

    /// A page of `context`'s stable order from `from`.
    fn stable_page(
        &self,
        context: ContextId,
        from: u64,
        max: usize,
    ) -> Result<StablePage, RequestError> {
        let Some(replica) = self.node.replica(&context) else {
            return Err(CommandError::UnknownContext(context).into());
        };
        let base = replica.base_len() as u64;
        let stable = base + replica.stable_len() as u64;
        let start = from.clamp(base, stable);
        let end = stable.min(start.saturating_add(max as u64));
        let index = |position: u64| (position - base) as usize;
        // Every transaction in the order is held, with its outcome: a
        // position skipped would be one a client never sees.
        let entries = replica
            .order_range(index(start)..index(end))
            .zip(start..)
            .map(|(id, position)| {
                let tx = replica.tx(&id).expect("an ordered transaction is held");
                StableEntry {
                    position,
                    tx: id,
                    author: tx.body().author,
                    kind: tx.body().kind.clone(),
                    outcome: replica
                        .outcome(&id)
                        .expect("an applied transaction has an outcome")
                        .clone(),
                }
            })
            .collect();
        Ok(StablePage {
            base,
            stable,
            entries,
        })
    }

    /// Refuses a write while the disk is full.
    fn storing(&self) -> Result<(), RequestError> {
        match self.space.state() {
            SpaceState::Storing => Ok(()),
            SpaceState::Full { .. } => Err(RequestError::DiskFull {
                dir: self.space.dir().to_path_buf(),
                available: self.space.available().unwrap_or(0),
            }),
        }
    }

    fn on_join(&mut self, context: ContextId, via: SocketAddr, reply: Reply<JoinAnswer>) {
        if let Err(full) = self.storing() {
            let _ = reply.send(Err(full));
            return;
        }
        if self.joins.len() >= JOINS_MAX {
            let busy = RequestError::Busy {
                what: "joins waiting for an answer",
                max: JOINS_MAX,
            };
            let _ = reply.send(Err(busy));
            return;
        }
        let known = self
            .peers
            .iter()
            .find(|(_, p)| p.addr == Some(via) && p.conn.is_some())
            .map(|(m, _)| *m);
        match known {
            Some(member) => self.finish_join(context, member, reply),
            None => match self.net.dial(via, None) {
                Ok(()) => self.joins.push(PendingJoin {
                    via,
                    context,
                    deadline: Instant::now() + JOIN_RESOLVE_TIMEOUT,
                    reply,
                    redial_at: None,
                    failed: None,
                }),
                Err(DialsBusy) => {
                    let busy = RequestError::Busy {
                        what: "outbound connections",
                        max: CONNECTIONS_OUTBOUND_MAX,
                    };
                    let _ = reply.send(Err(busy));
                }
            },
        }
    }

    /// Removes and returns the pending joins that `which` picks.
    fn take_joins(&mut self, which: impl FnMut(&mut PendingJoin) -> bool) -> Vec<PendingJoin> {
        self.joins.extract_if(.., which).collect()
    }

    fn finish_join(&mut self, context: ContextId, via: MemberId, reply: Reply<JoinAnswer>) {
        let now = self.now();
        match self.node.join(now, context, via) {
            Ok(()) => self.answering.push(AnsweringJoin {
                context,
                via,
                deadline: Instant::now() + JOIN_ANSWER_WAIT,
                reply,
                refused: None,
                abandoned: None,
            }),
            Err(error) => self.reply_after_commit(reply, Err(error.into())),
        }
    }

    /// Answers the joins whose member answered, and those out of time;
    /// cancels (leaves) those refused for good. Returns whether it cancelled
    /// any: their answers wait for that commit.
    fn answer_joins(&mut self) -> bool {
        if self.answering.is_empty() {
            return false;
        }
        let now = self.now();
        let instant = Instant::now();
        let mut cancelled = false;
        for join in std::mem::take(&mut self.answering) {
            let answer = |state| {
                Ok(JoinAnswer {
                    via: join.via,
                    state,
                })
            };
            let phase = self.node.phase(&join.context);
            let result = if let Some(reason) = join.refused {
                if phase == Some(Phase::Joining) {
                    // Deletes the joining copy: nothing of it was accepted.
                    let _ = self.node.leave(now, join.context);
                    cancelled = true;
                }
                Err(RequestError::JoinRefused {
                    context: join.context,
                    by: join.via,
                    reason,
                })
            } else if let Some(reason) = join.abandoned {
                Err(RequestError::JoinAbandoned {
                    context: join.context,
                    reason,
                })
            } else {
                match phase {
                    Some(Phase::Joining)
                        if self.node.joining_heard_from(&join.context, &join.via) =>
                    {
                        answer(JoinState::CatchingUp)
                    }
                    Some(Phase::Joining) if join.deadline <= instant => answer(JoinState::Asked),
                    Some(Phase::Joining) => {
                        self.answering.push(join);
                        continue;
                    }
                    Some(_) => answer(JoinState::Joined),
                    // Left by a command while waiting.
                    None => Err(RequestError::Command(CommandError::UnknownContext(
                        join.context,
                    ))),
                }
            };
            match cancelled {
                true => self.reply_after_commit(join.reply, result),
                false => {
                    let _ = join.reply.send(result);
                }
            }
        }
        cancelled
    }

    fn on_wait(&mut self, context: ContextId, tx: TxId, wait: bool, reply: Reply<TxState>) {
        if self.node.phase(&context).is_none() {
            let unknown = RequestError::Command(CommandError::UnknownContext(context));
            let _ = reply.send(Err(unknown));
            return;
        }
        if self
            .node
            .replica(&context)
            .is_some_and(|replica| replica.contains(&tx))
        {
            // Applied, perhaps in this very batch: answered after its commit.
            self.reply_after_commit(reply, Ok(TxState::Applied));
            return;
        }
        if !wait {
            let state = match self.node.is_pending(&context, &tx) {
                true => TxState::Pending,
                false => TxState::Unknown,
            };
            self.reply_after_commit(reply, Ok(state));
            return;
        }
        if self.waiter_count >= WAITERS_MAX {
            self.waiters.retain(|_, list| {
                list.retain(|w| !w.is_closed());
                !list.is_empty()
            });
            self.waiter_count = self.waiters.values().map(Vec::len).sum();
            if self.waiter_count >= WAITERS_MAX {
                let busy = RequestError::Busy {
                    what: "waits",
                    max: WAITERS_MAX,
                };
                let _ = reply.send(Err(busy));
                return;
            }
        }
        self.waiters.entry((context, tx)).or_default().push(reply);
        self.waiter_count += 1;
    }

    fn status(&self) -> StatusReport {
        StatusReport {
            member: self.me,
            peers: self
                .peers
                .iter()
                .filter(|(member, _)| self.is_named(member))
                .map(|(member, peer)| PeerReport {
                    member: *member,
                    addr: peer.addr,
                    connected: peer.conn.is_some(),
                })
                .collect(),
            contexts: self
                .node
                .context_ids()
                .filter_map(|id| self.node.status(&id))
                .collect(),
            now: self.now(),
            strangers: self.strangers(),
            disk: DiskReport {
                full: self.space.is_full(),
                full_for: match self.space.state() {
                    SpaceState::Full { since, .. } => Some(since.elapsed()),
                    SpaceState::Storing => None,
                },
                available: self.space.available().ok(),
                reserve: self.space.reserve_bytes(),
            },
        }
    }

    // ----- network -----------------------------------------------------------

    fn on_net(&mut self, event: NetEvent) {
        match event {
            NetEvent::Up(up) => self.on_up(up),
            NetEvent::Peer {
                from,
                message,
                budget,
            } => {
                match message {
                    PeerMessage::Engine(bytes) => {
                        self.metrics.bytes_received.inc_by(bytes.len() as u64);
                        let now = self.now();
                        self.admit(bytes.len());
                        let handled = if self.space.is_full() {
                            self.node
                                .handle_message_storing_nothing(now, from, &bytes)
                                .map(|_| ())
                        } else {
                            self.node.handle_message(now, from, &bytes)
                        };
                        if let Err(e) = handled {
                            debug!(from = %from.short(), error = %e, "engine refused a message");
                        }
                    }
                    PeerMessage::Peers(entries) => self.on_address_book(from, entries),
                }
                // Handled: its bytes no longer count against the inbox.
                drop(budget);
            }
            NetEvent::Down { conn, member } => {
                let named = self.is_named(&member);
                if let Some(peer) = self.peers.get_mut(&member)
                    && peer.conn.as_ref().is_some_and(|c| c.id == conn)
                {
                    if named {
                        info!(peer = %member, conn, "peer disconnected");
                        peer.lose_connection();
                    } else {
                        // A stranger is forgotten with its connection.
                        self.peers.remove(&member);
                    }
                }
            }
            NetEvent::DialFailed {
                addr,
                member,
                error,
                transient,
            } => {
                if let Some(member) = member
                    && let Some(peer) = self.peers.get_mut(&member)
                {
                    peer.dialing = false;
                    peer.addr_dialled = false;
                    if !peer.addr_proven {
                        // Gossip gave it and it does not answer as that
                        // member: forget it, so a better one can fill in.
                        peer.addr = None;
                    }
                    peer.back_off();
                    debug!(peer = %member.short(), %addr, %error, backoff_ms = peer.backoff.as_millis() as u64, "dial failed");
                }
                // A handshake the address closed is tried again until the
                // join's deadline; an address where nothing answers is
                // said at once.
                let retry = Instant::now() + JOIN_REDIAL_AFTER;
                for join in self.joins.iter_mut().filter(|j| j.via == addr && transient) {
                    if retry < join.deadline {
                        join.redial_at = Some(retry);
                        join.failed = Some(error.clone());
                    }
                }
                for join in self.take_joins(|j| j.via == addr && j.redial_at.is_none()) {
                    let _ = join.reply.send(Err(RequestError::Unreachable {
                        addr,
                        reason: error.clone(),
                    }));
                }
            }
        }
    }

    fn on_up(&mut self, up: ConnUp) {
        let ConnUp {
            conn,
            member,
            initiated,
            dial_addr,
            dialed,
            outbox,
            closer,
        } = up;
        // Joins waiting to learn who answers at the dialled address.
        if let Some(dialed) = dialed {
            for join in self.take_joins(|j| j.via == dialed) {
                self.finish_join(join.context, member, join.reply);
            }
        }
        if member == self.me {
            // This node dialled itself (a join via its own address): drop it.
            return;
        }
        let named = self.is_named(&member);
        if !named && self.peers.get(&member).is_none_or(|p| p.conn.is_none()) {
            let strangers = self.strangers();
            if strangers >= STRANGERS_MAX {
                limited!(info, peer = %member, max = STRANGERS_MAX, "a stranger connected while too many are; closed");
                return;
            }
        }
        if !self.make_room(member) {
            limited!(warn, peer = %member, max = PEERS_MAX, "address book full; connection dropped");
            return;
        }
        let preferred = |initiated: bool| initiated == (self.me < member);
        let peer = self.peers.entry(member).or_default();
        if initiated {
            peer.dialing = false;
        }
        let keep = match &peer.conn {
            None => true,
            // The peer dialled long after this connection was made: it
            // lost its end (a restart, a dead link), so this one is stale.
            Some(old) if old.since.elapsed() >= SIMULTANEOUS_DIAL_WINDOW => true,
            Some(old) if preferred(old.initiated) != preferred(initiated) => preferred(initiated),
            Some(_) => true,
        };
        if !keep {
            debug!(peer = %member.short(), conn, "duplicate connection dropped");
            return;
        }
        peer.conn = Some(Conn {
            id: conn,
            initiated,
            since: Instant::now(),
            outbox,
            _closer: closer,
        });
        peer.next_dial_at = None;
        let queued: Vec<Vec<u8>> = peer.queue.drain(..).collect();
        peer.queue_bytes = 0;
        // An inbound connection only suggests an address (its source IP and
        // the port its hello names): it does not replace one this node
        // dialled successfully and has not seen fail since (a multi-homed
        // peer may dial out from an address nobody can dial in to).
        let dial_addr = match peer.addr {
            Some(known) if !initiated && peer.addr_dialled => known,
            _ => dial_addr,
        };
        let moved = peer.addr != Some(dial_addr);
        if moved || !peer.addr_proven {
            peer.addr_stored = false;
        }
        peer.addr = Some(dial_addr);
        peer.addr_proven = true;
        peer.addr_dialled |= initiated;
        if named {
            info!(peer = %member, %dial_addr, initiated, conn, "peer connected");
            self.store_address(member);
            let book = self.book_for(&member);
            if !book.is_empty() {
                self.send(member, PeerMessage::encode_peers(&book));
            }
        } else {
            limited!(info, peer = %member, %dial_addr, initiated, "a stranger connected; it is closed unless a context here names it soon");
        }
        for message in queued {
            self.send(member, message);
        }
        if moved && named {
            // Tell the members it shares a context with where it is.
            let entry = PeerMessage::encode_peers(&[(member, dial_addr)]);
            let told: Vec<MemberId> = self
                .peers
                .iter()
                .filter(|(m, p)| {
                    p.conn.is_some() && **m != member && self.shares_context(m, &member)
                })
                .map(|(m, _)| *m)
                .collect();
            for peer in told {
                self.send(peer, entry.clone());
            }
        }
    }

    /// Closes and forgets every stranger connected for `STRANGER_GRACE`
    /// that no context names yet.
    fn close_strangers(&mut self) {
        let overstayed: Vec<MemberId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.conn
                    .as_ref()
                    .is_some_and(|c| c.since.elapsed() >= STRANGER_GRACE)
            })
            .filter(|(m, _)| !self.is_named(m))
            .map(|(m, _)| *m)
            .collect();
        for member in overstayed {
            // Dropping its `Conn` closes the connection.
            self.peers.remove(&member);
            limited!(info, peer = %member, grace_ms = STRANGER_GRACE.as_millis() as u64, "closed a stranger's connection: no context here names it");
        }
    }

    /// Sets the gauges of `/metrics` (on the sweep, once a second).
    fn update_gauges(&self) {
        let metrics = &self.metrics;
        let pending: u64 = self
            .node
            .context_ids()
            .filter_map(|id| self.node.status(&id))
            .map(|status| status.pending as u64)
            .sum();
        metrics.pending.set(pending as i64);
        metrics.contexts.set(self.node.context_ids().count() as i64);
        let connected = self.peers.values().filter(|p| p.conn.is_some()).count();
        let strangers = self.strangers();
        metrics.strangers.set(strangers as i64);
        metrics
            .peers_connected
            .set(connected.saturating_sub(strangers) as i64);
        metrics.disk_full.set(i64::from(self.space.is_full()));
        if let Ok(available) = self.space.available() {
            metrics.disk_available_bytes.set(available);
        }
    }

    /// How many strangers are connected.
    fn strangers(&self) -> usize {
        self.peers
            .iter()
            .filter(|(m, p)| p.conn.is_some() && !self.is_named(m))
            .count()
    }

    /// Sends every connected member the addresses it may have.
    fn gossip(&mut self) {
        let connected: Vec<MemberId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.conn.is_some())
            .map(|(m, _)| *m)
            .collect();
        for member in connected {
            let book = self.book_for(&member);
            if !book.is_empty() {
                self.send(member, PeerMessage::encode_peers(&book));
            }
        }
    }

    /// Gossip from a member named here fills in members with no known
    /// address, in memory only; connections prove addresses and override
    /// it. A stranger's gossip is ignored.
    fn on_address_book(&mut self, from: MemberId, entries: Vec<(MemberId, SocketAddr)>) {
        if !self.is_named(&from) {
            debug!(%from, entries = entries.len(), "ignored a stranger's gossip");
            return;
        }
        for (member, addr) in entries {
            if member == self.me || !self.make_room(member) {
                continue;
            }
            let peer = self.peers.entry(member).or_default();
            if peer.addr.is_none() {
                peer.addr = Some(addr);
                peer.addr_proven = false;
                self.maybe_dial(member);
            }
        }
    }

    /// What this node tells `recipient`: the proven addresses of the
    /// members (invited or joined, or caught up from) of the contexts it
    /// shares with `recipient`; nothing for a stranger.
    fn book_for(&self, recipient: &MemberId) -> Vec<(MemberId, SocketAddr)> {
        let mut members = BTreeSet::new();
        for context in self.node.context_ids() {
            if self.in_context(&context, recipient) {
                members.extend(self.context_members(&context));
            }
        }
        members.remove(recipient);
        members
            .into_iter()
            .filter_map(|m| {
                let peer = self.peers.get(&m)?;
                Some((m, peer.addr.filter(|_| peer.addr_proven)?))
            })
            .collect()
    }

    /// The members of `context` (invited or joined), and those it catches
    /// up from while joining.
    fn context_members(&self, context: &ContextId) -> Vec<MemberId> {
        let mut members = self.node.catchup_peers(context);
        if let Some(replica) = self.node.replica(context) {
            members.extend(
                replica
                    .membership()
                    .all()
                    .filter(|(_, status)| *status != MemberStatus::Left)
                    .map(|(m, _)| m),
            );
        }
        members
    }

    /// Whether `member` is invited to or a member of `context`, or this node
    /// catches up `context` from it.
    fn in_context(&self, context: &ContextId, member: &MemberId) -> bool {
        self.node.catchup_peers(context).contains(member)
            || self.node.replica(context).is_some_and(|replica| {
                matches!(
                    replica.membership().status(member),
                    Some(MemberStatus::Invited | MemberStatus::Member)
                )
            })
    }

    /// Whether a context this node holds has both `a` and `b` in it.
    fn shares_context(&self, a: &MemberId, b: &MemberId) -> bool {
        self.node
            .context_ids()
            .any(|context| self.in_context(&context, a) && self.in_context(&context, b))
    }

    /// Stores `member`'s address with the next commit, if a connection
    /// proved it and it is not stored yet.
    fn store_address(&mut self, member: MemberId) {
        if let Some(peer) = self.peers.get_mut(&member)
            && peer.addr_proven
            && !peer.addr_stored
            && let Some(addr) = peer.addr
        {
            peer.addr_stored = true;
            self.dirty_peers.push((member, addr));
        }
    }

    /// Stores the proven addresses of members named since their connection
    /// was made (a joiner learns its context's members from catchup).
    fn store_named_addresses(&mut self) {
        let unstored: Vec<MemberId> = self
            .peers
            .iter()
            .filter(|(m, p)| p.addr_proven && !p.addr_stored && self.is_named(m))
            .map(|(m, _)| *m)
            .collect();
        for member in unstored {
            self.store_address(member);
        }
    }

    /// Whether the engine names `member` (invited, member or left) in any
    /// context this node holds, or catches up from it. The engine decides
    /// membership; this only decides which addresses are worth keeping.
    fn is_named(&self, member: &MemberId) -> bool {
        self.node.context_ids().any(|context| {
            self.node
                .replica(&context)
                .is_some_and(|replica| replica.membership().status(member).is_some())
                || self.node.catchup_peers(&context).contains(member)
        })
    }

    /// Whether `member` has, or now has room for, an entry in the address
    /// book. When it is full, an idle entry (no connection, no dial, nothing
    /// queued) of a member no context names makes room.
    fn make_room(&mut self, member: MemberId) -> bool {
        if self.peers.contains_key(&member) || self.peers.len() < PEERS_MAX {
            return true;
        }
        let idle = self
            .peers
            .iter()
            .find(|(m, p)| {
                p.conn.is_none() && !p.dialing && p.queue.is_empty() && !self.is_named(m)
            })
            .map(|(m, _)| *m);
        match idle {
            Some(evicted) => {
                self.peers.remove(&evicted);
                debug!(peer = %evicted.short(), "address book full; forgot an idle stranger");
                true
            }
            None => false,
        }
    }

    /// Sends an encoded peer message to `to`: on its connection, or queued
    /// while one is dialled.
    fn send(&mut self, to: MemberId, message: Vec<u8>) {
        if to == self.me {
            return;
        }
        if !self.peers.contains_key(&to) && !self.is_named(&to) {
            // A stranger that is gone: nothing here would dial it.
            debug!(peer = %to, "no connection to a stranger; message dropped");
            return;
        }
        if !self.make_room(to) {
            return;
        }
        let peer = self.peers.entry(to).or_default();
        let bytes = message.len() as u64;
        let message = match &peer.conn {
            Some(conn) => match conn.outbox.try_send(message) {
                Ok(()) => {
                    self.metrics.bytes_sent.inc_by(bytes);
                    return;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // The engine's sync repairs what is dropped here.
                    debug!(peer = %to.short(), "connection queue full; message dropped");
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(message)) => {
                    peer.lose_connection();
                    message
                }
            },
            None => message,
        };
        while peer.queue.len() >= PEER_QUEUE_MAX
            || peer.queue_bytes + message.len() > PEER_QUEUE_BYTES_MAX
        {
            let Some(oldest) = peer.queue.pop_front() else {
                break;
            };
            peer.queue_bytes -= oldest.len();
        }
        peer.queue_bytes += message.len();
        peer.queue.push_back(message);
        debug_assert_eq!(
            peer.queue_bytes,
            peer.queue.iter().map(Vec::len).sum::<usize>()
        );
        self.maybe_dial(to);
    }

    fn maybe_dial(&mut self, member: MemberId) {
        let Some(peer) = self.peers.get_mut(&member) else {
            return;
        };
        if !peer.wants_dial() || peer.next_dial_at.is_some_and(|at| at > Instant::now()) {
            return;
        }
        let Some(addr) = peer.addr else {
            return;
        };
        match self.net.dial(addr, Some(member)) {
            Ok(()) => peer.dialing = true,
            // No slot: nothing is wrong with the peer; try again soon.
            Err(busy) => {
                debug!(peer = %member.short(), %busy, "dial postponed");
                peer.next_dial_at = Some(Instant::now() + BACKOFF_MIN);
            }
        }
    }
}

impl Peer {
    /// Drops the connection and sets when to dial again: at once after a
    /// connection that lasted, with a growing backoff after one that did
    /// not (a peer that accepts and then drops us is not redialled in a
    /// tight loop).
    fn lose_connection(&mut self) {
        let Some(lost) = self.conn.take() else {
            return;
        };
        if lost.since.elapsed() >= CONNECTION_STABLE_AFTER {
            self.backoff = Duration::ZERO;
            self.next_dial_at = None;
        } else {
            self.back_off();
        }
    }

    /// After a failure: doubles the wait before the next dial (within
    /// `BACKOFF_MIN..=BACKOFF_MAX`) and schedules it.
    fn back_off(&mut self) {
        self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
        self.next_dial_at = Some(Instant::now() + self.backoff);
    }

    /// Messages wait, there is no connection, none is being dialled, and
    /// there is an address to dial.
    fn wants_dial(&self) -> bool {
        !self.queue.is_empty() && self.conn.is_none() && !self.dialing && self.addr.is_some()
    }
}
