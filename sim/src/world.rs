//! The simulated world: nodes, their disks, the network between them, and
//! virtual time.
//!
//! Owns: the event queue (ordered by time, then by a sequence number, so
//! equal times keep the order they were scheduled in), the network model
//! (per-message delay drawn from the configured range, loss, duplication,
//! partitions into groups), crashes and restarts, and the simulated disks,
//! which keep exactly the records each engine asked to persist.
//!
//! Invariants:
//! - one seeded `ChaCha8Rng` makes every random choice, in the order events
//!   are processed, on one thread: the same seed gives the same run;
//! - every input given to a node goes through [`World::input`], which records
//!   it (with a digest of the outputs it produced) in the trace;
//! - a crashed node has no engine; messages to it are lost, and so are those
//!   sent to an earlier incarnation of it;
//! - a node's records are on its disk before any of its messages is in
//!   flight (the engine's durability contract);
//! - an engine sees only its node's own [`Clock`]: the `now` of every input
//!   is that clock's reading, and the deadline it asks for is queued at the
//!   first true time the clock reaches it; the trace's entries keep true
//!   time, and its `clock` entries let a replay read each clock again;
//! - a paused node takes no input until its pause ends: a message or timer
//!   due meanwhile is queued again for the end of the pause (so it arrives
//!   late, in the order it came, unless a crash or a partition loses it
//!   then), and the runner holds its commands back till then.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex};

use ctx_core::record::Record;
use ctx_core::stability::SignedAnnouncement;
use ctx_core::tx::{Signature, SignedTx};
use ctx_core::verify::{Ed25519Verifier, SignatureCheck, Verifier};
use ctx_core::{Config, ContextId, Event, Hash, MemberId, Node, Replica, Time, TxId};
use foldhash::fast::FixedState;
use hashbrown::HashMap;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::byzantine::{Byzantine, Mischief};
use crate::clock::Clock;
use crate::disk::{Disk, DiskLoss, Faults};
use crate::trace::{Input, Loss, Recorder, WorldEvent, drain, restore};

/// Network conditions in force.
#[derive(Clone, Debug, PartialEq)]
pub struct Conditions {
    pub latency_ms: (u64, u64),
    pub drop: f64,
    pub duplicate: f64,
}

/// What the runner scheduled, handed back when its time comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    /// The scenario step with this index.
    Step(usize),
    /// One call of the workload with this index.
    WorkloadCall(usize),
    /// The pause the step with this index began is over.
    Resume(usize),
}

/// What one call of [`World::advance`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Happened {
    /// A runner action is due now.
    Action(Action),
    /// This node took an input (a message or a timer).
    Input(usize),
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Queued {
    Deliver {
        to: usize,
        incarnation: u64,
        from: usize,
        bytes: Vec<u8>,
        /// The message's number, and 1 for a duplicate's copy (the trace's
        /// world frames name them; the queue's order is by time and
        /// sequence alone).
        message: u64,
        copy: u8,
    },
    Timer {
        node: usize,
    },
    Action(Action),
}

/// Counters for the report and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub messages_sent: u64,
    pub messages_delivered: u64,
    pub messages_lost: u64,
    pub bytes_sent: u64,
}

/// Signature checks memoized across the nodes of one run: a pure function
/// checked once per distinct (author, transaction, signature), not once per
/// member.
///
/// A signature a simulated node made itself is *vouched* for when the node
/// persists the transaction (or reports a stability announcement it signed,
/// `Event::Announced`): the memo answers `true` for it at once, and the
/// vouched signatures are checked together, [`VOUCHED_BATCH`] at a time with
/// ed25519 batch verification (about a third of the cost of one-by-one on
/// this project's machines), and the rest when the run ends. A vouched
/// signature that does not verify is an engine bug (it signed something
/// other than what it sent) and panics with the transaction, like any other
/// assertion. Every other signature is verified when first asked.
pub struct MemoVerifier {
    inner: Mutex<Memo>,
}

struct Memo {
    seen: HashMap<SignatureKey, bool, FixedState>,
    /// Vouched for and not yet verified.
    vouched: Vec<SignatureKey>,
}

/// How many vouched signatures are verified in one batch.
pub const VOUCHED_BATCH: usize = 128;

/// One signature check: author, signed digest, signature bytes.
type SignatureKey = (MemberId, [u8; 32], [u8; 64]);

impl Default for MemoVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Verifier for MemoVerifier {
    fn verify(&self, check: SignatureCheck<'_>) -> bool {
        let key = (*check.author, *check.message, check.signature.0);
        let mut memo = self.lock();
        *memo
            .seen
            .entry(key)
            .or_insert_with(|| Ed25519Verifier.verify(check))
    }
}

impl MemoVerifier {
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Memo {
                seen: HashMap::with_hasher(FixedState::with_seed(7)),
                vouched: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.inner
            .lock()
            .expect("never poisoned: no panics while held")
    }

    /// Records that a simulated node signed `tx` with its own key.
    pub fn vouch(&self, tx: &SignedTx) {
        self.vouch_key((tx.body.author, tx.body.id().0, tx.signature.0));
    }

    /// Records that a simulated node signed `announcement` (of `context`)
    /// with its own key.
    pub fn vouch_announcement(&self, context: &ContextId, announcement: &SignedAnnouncement) {
        let digest = announcement.body.digest(context);
        self.vouch_key((announcement.body.author, digest, announcement.signature.0));
    }

    fn vouch_key(&self, key: SignatureKey) {
        let mut memo = self.lock();
        if memo.seen.insert(key, true).is_none() {
            memo.vouched.push(key);
        }
        if memo.vouched.len() >= VOUCHED_BATCH {
            let batch = std::mem::take(&mut memo.vouched);
            drop(memo);
            check_vouched(&batch);
        }
    }

    /// Verifies every vouched signature not verified yet.
    pub fn check_vouched(&self) {
        let batch = std::mem::take(&mut self.lock().vouched);
        check_vouched(&batch);
    }
}

fn check_vouched(batch: &[SignatureKey]) {
    let signatures: Vec<Signature> = batch
        .iter()
        .map(|(_, _, bytes)| Signature(*bytes))
        .collect();
    let checks: Vec<SignatureCheck<'_>> = batch
        .iter()
        .zip(&signatures)
        .map(|((author, message, _), signature)| SignatureCheck {
            author,
            message,
            signature,
        })
        .collect();
    if Ed25519Verifier.verify_all(&checks) {
        return;
    }
    for check in &checks {
        assert!(
            Ed25519Verifier.verify(*check),
            "{:?} signed {} (a transaction id or an announcement digest) with a signature that does not verify",
            check.author,
            hex::encode(check.message)
        );
    }
}

struct SimNode {
    engine: Option<Node>,
    secret: [u8; 32],
    member: MemberId,
    disk: Disk,
    /// The number of the last record written before anything left the
    /// node (a message, an answer): a crash must keep every record up to
    /// it (checked apart from the disk's own sync, so that a driver that
    /// syncs too late is caught).
    revealed_through: u64,
    incarnation: u64,
    /// The engine's deadline, by its own clock.
    timer_at: Option<Time>,
    /// The machine's clock: it runs on through crashes.
    clock: Clock,
    /// Frozen until then (true time).
    paused_until: Option<Time>,
    /// Its disk is full until then (true time): it stores nothing.
    disk_full_until: Option<Time>,
}

/// The simulated world.
pub struct World {
    pub names: Vec<String>,
    nodes: Vec<SimNode>,
    queue: BinaryHeap<Reverse<(Time, u64, Queued)>>,
    sequence: u64,
    now: Time,
    rng: ChaCha8Rng,
    conditions: Conditions,
    /// What a crash may do to a node's unsynced records.
    disk_faults: Faults,
    /// Per node: what tampers with its messages, if it is Byzantine.
    mischief: Vec<Option<Mischief>>,
    /// Transactions whose records a crash lost, per node, for the runner.
    lost: Vec<(usize, TxId)>,
    /// Records a crash lost although something had revealed them: the
    /// first, for the runner (a broken durability contract).
    pub revealed_lost: Option<String>,
    /// The first record a node stored while its disk was full (at that
    /// time, in ms): the engine took in something it must not have.
    pub stored_while_full: Option<(u64, String)>,
    /// Partition group of each node; nodes reach each other iff equal.
    groups: Vec<usize>,
    verifier: Arc<MemoVerifier>,
    config: Config,
    pub recorder: Recorder,
    pub stats: Stats,
    /// Engine events since last drained, per node, for the runner.
    events: Vec<(usize, Event)>,
    /// Transactions made since last drained, per node, for the runner's
    /// stability check.
    authored: Vec<(usize, SignedTx)>,
    /// A line per event, when verbose.
    log: Option<Vec<String>>,
    /// The state root of each context each node held when last written
    /// into the trace's world frames (only kept while a trace is written).
    roots: Vec<BTreeMap<ContextId, Hash>>,
}

impl World {
    /// A world of `names.len()` nodes. Node keys and engine seeds are drawn
    /// from the world's generator, seeded with `seed`.
    pub fn new(
        names: Vec<String>,
        seed: u64,
        conditions: Conditions,
        config: Config,
        recorder: Recorder,
        verbose: bool,
    ) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let verifier = Arc::new(MemoVerifier::new());
        let mut nodes = Vec::with_capacity(names.len());
        let mut recorder = recorder;
        for _ in &names {
            let mut secret = [0u8; 32];
            rng.fill_bytes(&mut secret);
            let mut node_seed = [0u8; 32];
            rng.fill_bytes(&mut node_seed);
            let engine = Node::new(config.clone(), secret, node_seed, verifier.clone());
            recorder.node(secret, node_seed);
            nodes.push(SimNode {
                member: engine.member_id(),
                engine: Some(engine),
                secret,
                disk: Disk::default(),
                revealed_through: 0,
                incarnation: 0,
                timer_at: None,
                clock: Clock::exact(),
                paused_until: None,
                disk_full_until: None,
            });
        }
        let count = names.len();
        World {
            names,
            nodes,
            queue: BinaryHeap::new(),
            sequence: 0,
            now: Time::ZERO,
            rng,
            conditions,
            disk_faults: Faults::default(),
            mischief: (0..count).map(|_| None).collect(),
            lost: Vec::new(),
            revealed_lost: None,
            stored_while_full: None,
            groups: vec![0; count],
            verifier,
            config,
            recorder,
            stats: Stats::default(),
            events: Vec::new(),
            authored: Vec::new(),
            log: verbose.then(Vec::new),
            roots: vec![BTreeMap::new(); count],
        }
    }

    // ----- queries ---------------------------------------------------------

    pub fn now(&self) -> Time {
        self.now
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn member_id(&self, node: usize) -> MemberId {
        self.nodes[node].member
    }

    pub fn node_of(&self, member: &MemberId) -> Option<usize> {
        self.nodes.iter().position(|n| n.member == *member)
    }

    /// The engine of a live node.
    pub fn engine(&self, node: usize) -> Option<&Node> {
        self.nodes[node].engine.as_ref()
    }

    /// Runs a view on a live node's copy of a context, beside the run:
    /// nothing is recorded in the trace and nothing is drawn from the
    /// world's generator, and a view writes nothing, so the run goes on
    /// exactly as it would without it (the always-on invariant checks).
    /// `None` when the node is down.
    pub fn view(
        &mut self,
        node: usize,
        context: &ContextId,
        method: &str,
        input: &[u8],
    ) -> Option<Result<Vec<u8>, ctx_core::node::CommandError>> {
        let engine = self.nodes[node].engine.as_mut()?;
        Some(engine.view(context, method, input))
    }

    /// How many times `node` restarted: a new engine each time.
    pub fn incarnation(&self, node: usize) -> u64 {
        self.nodes[node].incarnation
    }

    pub fn is_up(&self, node: usize) -> bool {
        self.nodes[node].engine.is_some()
    }

    /// The end of the node's pause, if it is paused now.
    pub fn paused_until(&self, node: usize) -> Option<Time> {
        self.nodes[node]
            .paused_until
            .filter(|until| *until > self.now)
    }

    /// The end of the time the node's disk is full, if it is full now.
    pub fn disk_full_until(&self, node: usize) -> Option<Time> {
        self.nodes[node]
            .disk_full_until
            .filter(|until| *until > self.now)
    }

    /// The rate of the node's clock, in thousandths of true time.
    pub fn clock_rate(&self, node: usize) -> u32 {
        self.nodes[node].clock.rate_permille()
    }

    pub fn disk(&self, node: usize) -> &Disk {
        &self.nodes[node].disk
    }

    /// The disk faults a crash may bring.
    pub fn disk_faults(&self) -> Faults {
        self.disk_faults
    }

    /// From now on, a crash may bring these disk faults.
    pub fn set_disk_faults(&mut self, faults: Faults) {
        self.disk_faults = faults;
    }

    /// From now on, the nodes `nodes` lie on the wire as `config` says
    /// ([`crate::byzantine`]).
    pub fn set_byzantine(&mut self, nodes: &[usize], config: &Byzantine) {
        for &node in nodes {
            self.mischief[node] = Some(Mischief::new(self.nodes[node].secret, config));
        }
    }

    /// What each Byzantine node did: `(node, its mischief)`.
    pub fn mischief(&self) -> impl Iterator<Item = (usize, &Mischief)> {
        self.mischief
            .iter()
            .enumerate()
            .filter_map(|(node, m)| m.as_ref().map(|m| (node, m)))
    }

    /// The transactions whose records a crash lost since last taken, per
    /// node: not synced, so never revealed, and the node no longer holds
    /// them.
    pub fn take_lost(&mut self) -> Vec<(usize, TxId)> {
        std::mem::take(&mut self.lost)
    }

    pub fn group(&self, node: usize) -> usize {
        self.groups[node]
    }

    /// The engines' configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn conditions(&self) -> &Conditions {
        &self.conditions
    }

    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Takes the verbose log lines written so far.
    pub fn take_log(&mut self) -> Vec<String> {
        self.log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Takes the engine events since the last call.
    /// The transactions nodes made since the last call, with their maker.
    pub fn take_authored(&mut self) -> Vec<(usize, SignedTx)> {
        std::mem::take(&mut self.authored)
    }

    pub fn take_events(&mut self) -> Vec<(usize, Event)> {
        std::mem::take(&mut self.events)
    }

    // ----- scheduling --------------------------------------------------------

    pub fn schedule(&mut self, at: Time, action: Action) {
        self.push(at, Queued::Action(action));
    }

    fn push(&mut self, at: Time, item: Queued) {
        self.sequence += 1;
        self.queue.push(Reverse((at, self.sequence, item)));
    }

    /// Processes the next queued event at or before `until` and says what
    /// happened: a runner action is due, or a node took an input (so the
    /// runner can check invariants after every one). `None` when nothing is
    /// left up to `until` (`now` is then `until`).
    pub fn advance(&mut self, until: Time) -> Option<Happened> {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            let Reverse((at, _, item)) = self.queue.pop().expect("peeked");
            debug_assert!(at >= self.now, "time never goes back");
            self.now = at;
            self.stats.events += 1;
            let touched = match item {
                Queued::Action(action) => return Some(Happened::Action(action)),
                Queued::Timer { node } => self.fire_timer(node),
                Queued::Deliver {
                    to,
                    incarnation,
                    from,
                    bytes,
                    message,
                    copy,
                } => self.deliver(to, incarnation, from, bytes, (message, copy)),
            };
            if let Some(node) = touched {
                return Some(Happened::Input(node));
            }
        }
        self.now = self.now.max(until);
        None
    }

    // ----- inputs to nodes ---------------------------------------------------------

    /// Gives node `node` one input, records it, and moves its outputs into
    /// the world. Returns the command's result text (for commands).
    pub fn input(&mut self, node: usize, input: Input) -> Result<Option<String>, String> {
        let now = self.now;
        let paused = self.paused_until(node);
        let result = match &input {
            Input::Crash => {
                let sim = &mut self.nodes[node];
                sim.engine = None;
                sim.incarnation += 1;
                sim.timer_at = None;
                sim.paused_until = None;
                Ok(None)
            }
            Input::CrashLoss { loss } => {
                let sim = &mut self.nodes[node];
                let lost = sim.disk.crash(*loss);
                for (record, number) in lost {
                    if number <= sim.revealed_through && self.revealed_lost.is_none() {
                        self.revealed_lost = Some(format!(
                            "{}'s crash at {now} lost record #{number} ({}), written before the node last sent or answered anything (through #{})",
                            self.names[node],
                            record_kind(&record),
                            sim.revealed_through
                        ));
                    }
                    if let Record::Tx { tx, .. } = record {
                        self.lost.push((node, tx.body.id()));
                    }
                }
                Ok(None)
            }
            Input::Clock { rate_permille } => {
                let sim = &mut self.nodes[node];
                sim.clock.set_rate(now, *rate_permille);
                // The queued timer was placed by the old rate.
                if let Some(deadline) = sim.timer_at {
                    let at = sim.clock.true_time_of(deadline).max(now);
                    self.push(at, Queued::Timer { node });
                }
                Ok(None)
            }
            Input::Pause { ms } => {
                let until = now + *ms;
                let sim = &mut self.nodes[node];
                sim.paused_until = Some(sim.paused_until.map_or(until, |u| u.max(until)));
                Ok(None)
            }
            Input::DiskFull { ms } => {
                let until = now + *ms;
                let sim = &mut self.nodes[node];
                sim.disk_full_until = Some(sim.disk_full_until.map_or(until, |u| u.max(until)));
                Ok(None)
            }
            _ if paused.is_some() => {
                return Err(format!(
                    "the node is paused until {}",
                    paused.expect("paused")
                ));
            }
            // A driver that cannot store refuses what would need storing.
            input if input.is_command() && self.disk_full_until(node).is_some() => {
                return Err(format!(
                    "its disk is full until {}",
                    self.disk_full_until(node).expect("full")
                ));
            }
            Input::Restart { seed } => {
                let sim = &mut self.nodes[node];
                let verifier = self.verifier.clone();
                let restored = restore(
                    self.config.clone(),
                    sim.secret,
                    *seed,
                    verifier,
                    &mut sim.disk,
                );
                restored.map(|engine| {
                    sim.engine = Some(engine);
                    None
                })
            }
            other => {
                let sim = &mut self.nodes[node];
                let local = sim.clock.local(now);
                let Some(engine) = sim.engine.as_mut() else {
                    return Err("the node is down".into());
                };
                apply_input(engine, local, other)
            }
        };
        let digest = self.drain(node, &result, input.is_command());
        let crashed = matches!(input, Input::Crash);
        self.recorder.record(now, node, input, digest);
        if crashed && let Some(loss) = self.draw_crash_loss(node) {
            self.input(node, Input::CrashLoss { loss })?;
        }
        result
    }

    /// What a crash does to `node`'s records not yet synced, drawn by the
    /// disk faults in force: `None` when it keeps them all.
    fn draw_crash_loss(&mut self, node: usize) -> Option<DiskLoss> {
        if !self.disk_faults.any() {
            return None;
        }
        let disk = &self.nodes[node].disk;
        let unsynced = disk.unsynced() as u64;
        let first_len = disk.first_unsynced_len()? as u64;
        if !self.rng.random_bool_f64(self.disk_faults.lose_unsynced) {
            return None;
        }
        let kept = self.rng.next_u64() % unsynced;
        let torn = self.rng.random_bool_f64(self.disk_faults.tear);
        // A torn write keeps at least one byte and never the whole record.
        let torn = torn.then(|| 1 + self.rng.next_u64() % (first_len - 1).max(1));
        Some(DiskLoss {
            kept: kept as u32,
            torn: torn.map(|bytes| bytes as u32),
        })
    }

    /// Verifies the signatures the nodes made themselves that are not
    /// verified yet (see [`MemoVerifier`]); panics on one that fails.
    pub fn check_vouched_signatures(&self) {
        self.verifier.check_vouched();
    }

    /// Moves a node's outputs out: records to disk first, then messages into
    /// the network; rearms its timer. Returns the digest of the outputs.
    fn drain(
        &mut self,
        node: usize,
        result: &Result<Option<String>, String>,
        command: bool,
    ) -> [u8; 32] {
        let full = self.disk_full_until(node).is_some();
        let sim = &mut self.nodes[node];
        let written = sim.disk.writes();
        let drained = drain(sim.engine.as_mut(), &mut sim.disk, result, command);
        if full && sim.disk.writes() > written && self.stored_while_full.is_none() {
            self.stored_while_full = Some((
                self.now.as_ms(),
                format!(
                    "{} stored {} records at {} while its disk was full",
                    self.names[node],
                    sim.disk.writes() - written,
                    self.now
                ),
            ));
        }
        if command || !drained.transmits.is_empty() {
            sim.revealed_through = sim.disk.writes();
        }
        if self.recorder.keeps_world() {
            self.record_outputs(node, &drained.events, &drained.authored);
        }
        for tx in &drained.authored {
            self.verifier.vouch(tx);
        }
        for (context, announcement) in &drained.announced {
            self.verifier.vouch_announcement(context, announcement);
        }
        self.authored
            .extend(drained.authored.into_iter().map(|tx| (node, tx)));
        if let Some(log) = &mut self.log {
            for event in &drained.events {
                if !matches!(event, Event::Applied { .. }) {
                    log.push(format!(
                        "{:>9} {}: {event:?}",
                        self.now.to_string(),
                        self.names[node]
                    ));
                }
            }
        }
        self.events
            .extend(drained.events.into_iter().map(|event| (node, event)));
        for transmit in drained.transmits {
            let Some(to) = self.node_of(&transmit.to) else {
                // An identity no node has (a Byzantine peer named it):
                // nowhere to deliver.
                if let Some(log) = &mut self.log {
                    log.push(format!(
                        "{:>9} {} -> {} (no such node): {} ({} bytes)",
                        self.now.to_string(),
                        self.names[node],
                        transmit.to.short(),
                        transmit.kind,
                        transmit.bytes.len()
                    ));
                }
                continue;
            };
            if let Some(log) = &mut self.log {
                log.push(format!(
                    "{:>9} {} -> {}: {} ({} bytes)",
                    self.now.to_string(),
                    self.names[node],
                    self.names[to],
                    transmit.kind,
                    transmit.bytes.len()
                ));
            }
            self.send(node, to, transmit.bytes);
        }
        if self.nodes[node].engine.is_some() {
            self.arm_timer(node, drained.timeout);
        }
        drained.digest
    }

    /// Into the trace: what a node's engine reported after an input, the
    /// order position of each transaction it applied, its changed roots.
    fn record_outputs(&mut self, node: usize, events: &[Event], authored: &[SignedTx]) {
        let engine = self.nodes[node].engine.as_ref();
        let mut positions = Vec::new();
        for event in events {
            if let Event::Applied { context, tx, .. } = event
                && let Some(position) = engine
                    .and_then(|e| e.replica(context))
                    .and_then(|replica| order_position(replica, tx))
            {
                positions.push((*tx, position));
            }
        }
        let mut held = BTreeMap::new();
        if let Some(engine) = engine {
            for context in engine.context_ids() {
                if let Some(replica) = engine.replica(&context) {
                    held.insert(context, replica.state_root());
                }
            }
        }
        let roots: Vec<(ContextId, Hash)> = held
            .iter()
            .filter(|(context, root)| self.roots[node].get(*context) != Some(*root))
            .map(|(context, root)| (*context, *root))
            .collect();
        self.roots[node] = held;
        let event = WorldEvent::Outputs {
            at: self.now,
            node: node as u32,
            events: events
                .iter()
                .filter(|e| !matches!(e, Event::Announced { .. }))
                .cloned()
                .collect(),
            positions,
            roots,
            authored: authored.to_vec(),
        };
        self.recorder.world(&event);
    }

    fn arm_timer(&mut self, node: usize, timer: Option<Time>) {
        let sim = &mut self.nodes[node];
        if timer == sim.timer_at {
            return;
        }
        sim.timer_at = timer;
        if let Some(deadline) = timer {
            let at = sim.clock.true_time_of(deadline).max(self.now);
            self.push(at, Queued::Timer { node });
        }
    }

    fn fire_timer(&mut self, node: usize) -> Option<usize> {
        let sim = &self.nodes[node];
        // A timer superseded by a later re-arm, or of a crashed node, is stale.
        let deadline = sim.timer_at?;
        if deadline > sim.clock.local(self.now) || sim.engine.is_none() {
            return None;
        }
        if let Some(until) = self.paused_until(node) {
            self.push(until, Queued::Timer { node });
            return None;
        }
        self.nodes[node].timer_at = None;
        let _ = self.input(node, Input::Timeout);
        // A deadline already due after the engine handled its timers would
        // fire again at this same instant for ever: the run would hang
        // instead of failing with its seed.
        let sim = &self.nodes[node];
        if let Some(deadline) = sim.timer_at {
            assert!(
                deadline > sim.clock.local(self.now),
                "{} handled its timers at {} (its clock) and asked to be woken at {deadline}, which is already due",
                self.names[node],
                sim.clock.local(self.now)
            );
        }
        Some(node)
    }

    /// Sends what `from`'s engine addressed to `to`: as it is, or as a
    /// Byzantine node's mischief changes it.
    fn send(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let Some(mut mischief) = self.mischief[from].take() else {
            return self.transmit(from, to, bytes);
        };
        let nodes = self.nodes.len();
        let sends = mischief.tamper(&mut self.rng, (from, nodes), to, bytes);
        self.mischief[from] = Some(mischief);
        for (to, bytes) in sends {
            self.transmit(from, to, bytes);
        }
    }

    /// One message into the network: lost, duplicated, delayed.
    fn transmit(&mut self, from: usize, to: usize, bytes: Vec<u8>) {
        let message = self.stats.messages_sent;
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += bytes.len() as u64;
        let now = self.now;
        let sent = move |deliver_at, duplicate_at, bytes: &[u8]| WorldEvent::Sent {
            at: now,
            message,
            from: from as u32,
            to: to as u32,
            bytes: bytes.to_vec(),
            deliver_at,
            duplicate_at,
        };
        if self.rng.random_bool_f64(self.conditions.drop) {
            self.stats.messages_lost += 1;
            if self.recorder.keeps_world() {
                let event = sent(None, None, &bytes);
                self.recorder.world(&event);
                self.recorder.world(&WorldEvent::Lost {
                    at: self.now,
                    message,
                    copy: 0,
                    loss: Loss::Dropped,
                });
            }
            return;
        }
        let incarnation = self.nodes[to].incarnation;
        let mut duplicate_at = None;
        if self.rng.random_bool_f64(self.conditions.duplicate) {
            let at = self.now + self.latency();
            duplicate_at = Some(at);
            let copy = bytes.clone();
            self.push(
                at,
                Queued::Deliver {
                    to,
                    incarnation,
                    from,
                    bytes: copy,
                    message,
                    copy: 1,
                },
            );
        }
        let at = self.now + self.latency();
        if self.recorder.keeps_world() {
            let event = sent(Some(at), duplicate_at, &bytes);
            self.recorder.world(&event);
        }
        self.push(
            at,
            Queued::Deliver {
                to,
                incarnation,
                from,
                bytes,
                message,
                copy: 0,
            },
        );
    }

    fn latency(&mut self) -> u64 {
        let (low, high) = self.conditions.latency_ms;
        low + self.rng.next_u64() % (high - low + 1)
    }

    fn deliver(
        &mut self,
        to: usize,
        incarnation: u64,
        from: usize,
        bytes: Vec<u8>,
        (message, copy): (u64, u8),
    ) -> Option<usize> {
        let sim = &self.nodes[to];
        if sim.engine.is_some()
            && sim.incarnation == incarnation
            && let Some(until) = self.paused_until(to)
        {
            // Held in the frozen process's socket until it runs again.
            self.push(
                until,
                Queued::Deliver {
                    to,
                    incarnation,
                    from,
                    bytes,
                    message,
                    copy,
                },
            );
            return None;
        }
        let reachable = self.groups[from] == self.groups[to];
        let loss = if !reachable {
            Some(Loss::Partitioned)
        } else if sim.engine.is_none() {
            Some(Loss::Down)
        } else if sim.incarnation != incarnation {
            Some(Loss::Stale)
        } else {
            None
        };
        if let Some(loss) = loss {
            self.stats.messages_lost += 1;
            let event = WorldEvent::Lost {
                at: self.now,
                message,
                copy,
                loss,
            };
            self.recorder.world(&event);
            return None;
        }
        self.stats.messages_delivered += 1;
        self.recorder.world(&WorldEvent::Delivered {
            at: self.now,
            message,
            copy,
        });
        let sender = self.nodes[from].member;
        let input = if self.disk_full_until(to).is_some() {
            Input::MessageStoringNothing {
                from: sender,
                bytes,
            }
        } else {
            Input::Message {
                from: sender,
                bytes,
            }
        };
        if let Err(error) = self.input(to, input) {
            // Engines only send valid messages: a refusal is worth seeing.
            if let Some(log) = &mut self.log {
                log.push(format!(
                    "{:>9} {} refused a message from {}: {error}",
                    self.now.to_string(),
                    self.names[to],
                    self.names[from]
                ));
            }
        }
        Some(to)
    }

    // ----- the world's own changes ---------------------------------------------------

    pub fn set_conditions(&mut self, conditions: Conditions) {
        self.recorder.world(&WorldEvent::Network {
            at: self.now,
            latency_ms: conditions.latency_ms,
            drop: conditions.drop,
            duplicate: conditions.duplicate,
        });
        self.conditions = conditions;
    }

    /// Only nodes in the same group reach each other; unlisted nodes are
    /// alone.
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        self.groups = partition_groups(self.nodes.len(), groups);
        self.recorder.world(&WorldEvent::Partition {
            at: self.now,
            groups: self.groups.iter().map(|g| *g as u32).collect(),
        });
    }

    pub fn heal(&mut self) {
        self.groups = vec![0; self.nodes.len()];
        self.recorder.world(&WorldEvent::Heal { at: self.now });
    }

    /// Draws a fresh engine seed (for a restart).
    pub fn draw_seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        seed
    }

    /// The contexts node `node` holds on its disk (for a down node).
    pub fn contexts_on_disk(&self, node: usize) -> Vec<ContextId> {
        let mut held: Vec<ContextId> = Vec::new();
        for record in self.nodes[node].disk.records() {
            match record {
                Record::Deleted { context, .. } => held.retain(|c| c != context),
                other if !held.contains(&other.context()) => held.push(other.context()),
                _ => {}
            }
        }
        held
    }
}

/// The group of each of `count` nodes under a partition into `groups` (node
/// indices): listed nodes share their group's number, each unlisted node
/// gets a number of its own. Two nodes reach each other iff equal.
pub fn partition_groups(count: usize, groups: &[Vec<usize>]) -> Vec<usize> {
    let mut assigned: Vec<Option<usize>> = vec![None; count];
    for (group, members) in groups.iter().enumerate() {
        for &member in members {
            assigned[member] = Some(group);
        }
    }
    let mut next = groups.len();
    assigned
        .into_iter()
        .map(|group| {
            group.unwrap_or_else(|| {
                next += 1;
                next - 1
            })
        })
        .collect()
}

/// The position of `tx` in `replica`'s canonical order, counted from the
/// genesis (a copy standing on a checkpoint counts the transactions below
/// its cut), if the copy holds it.
pub fn order_position(replica: &Replica, tx: &TxId) -> Option<u64> {
    let key = replica.tx(tx)?.order_key();
    let base = replica.base_len();
    let (mut low, mut high) = (0, replica.accepted() - base);
    // The order is sorted by key; its slots above the cut hold their bodies.
    while low < high {
        let mid = low + (high - low) / 2;
        let id = replica.order_range(mid..mid + 1).next()?;
        let mid_key = replica.tx(&id)?.order_key();
        match mid_key.cmp(&key) {
            std::cmp::Ordering::Less => low = mid + 1,
            std::cmp::Ordering::Greater => high = mid,
            std::cmp::Ordering::Equal => return Some((base + mid) as u64),
        }
    }
    None
}

/// A record's kind, for messages.
fn record_kind(record: &Record) -> &'static str {
    match record {
        Record::Joining { .. } => "joining",
        Record::Opened { .. } => "opened",
        Record::Tx { .. } => "tx",
        Record::Deleted { .. } => "deleted",
        Record::CheckpointStart { .. } => "checkpoint start",
        Record::CheckpointEntries { .. } => "checkpoint entries",
        Record::CheckpointVouches { .. } => "checkpoint vouches",
        Record::CheckpointEnd { .. } => "checkpoint end",
    }
}

/// Applies a command or network input to a live engine.
pub fn apply_input(engine: &mut Node, now: Time, input: &Input) -> Result<Option<String>, String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    match input {
        Input::Create { app } => engine
            .create_context(now, app)
            .map(|id| Some(id.to_hex()))
            .map_err(|e| text(&e)),
        Input::Invite { context, member } => engine
            .invite(now, *context, *member)
            .map(|id| Some(id.to_hex()))
            .map_err(|e| text(&e)),
        Input::Join { context, via } => engine
            .join(now, *context, *via)
            .map(|()| None)
            .map_err(|e| text(&e)),
        Input::Leave { context } => engine
            .leave(now, *context)
            .map(|()| None)
            .map_err(|e| text(&e)),
        Input::Call {
            context,
            method,
            input,
        } => engine
            .call(now, *context, method, input.clone())
            .map(|receipt| Some(receipt.tx.to_hex()))
            .map_err(|e| text(&e)),
        Input::Message { from, bytes } => engine
            .handle_message(now, *from, bytes)
            .map(|()| None)
            .map_err(|e| text(&e)),
        Input::MessageStoringNothing { from, bytes } => engine
            .handle_message_storing_nothing(now, *from, bytes)
            .map(|_handled| None)
            .map_err(|e| text(&e)),
        Input::Timeout => {
            engine.handle_timeout(now);
            Ok(None)
        }
        Input::Crash
        | Input::CrashLoss { .. }
        | Input::Restart { .. }
        | Input::Clock { .. }
        | Input::Pause { .. }
        | Input::DiskFull { .. } => {
            unreachable!("handled by the world")
        }
    }
}

/// `random_bool` for any probability in [0, 1], from 53 random bits: the
/// same draw on every platform.
pub(crate) trait RandomBool {
    fn random_bool_f64(&mut self, probability: f64) -> bool;
}

impl RandomBool for ChaCha8Rng {
    fn random_bool_f64(&mut self, probability: f64) -> bool {
        if probability <= 0.0 {
            return false;
        }
        if probability >= 1.0 {
            return true;
        }
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < probability
    }
}

#[cfg(test)]
mod tests {
    //! The memo's vouching: a vouched signature answers `true` at once and
    //! is still verified, in a batch.

    use ctx_core::tx::{TX_FORMAT_VERSION, Tx, TxBody, TxKind};
    use ctx_core::{ContextId, TxId};
    use ed25519_dalek::SigningKey;

    use super::*;

    fn signed(key: &SigningKey, nonce: u8) -> SignedTx {
        let body = TxBody {
            version: TX_FORMAT_VERSION,
            context: ContextId([1; 32]),
            author: MemberId(key.verifying_key().to_bytes()),
            height: 1,
            parents: vec![ctx_core::tx::Parent {
                id: TxId([nonce; 32]),
                height: 0,
            }],
            kind: TxKind::Call {
                method: "set".into(),
                input: vec![nonce],
            },
        };
        Tx::sign(body, key).signed().clone()
    }

    #[test]
    fn vouched_signatures_are_verified_in_batches() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let memo = MemoVerifier::new();
        for nonce in 0..=(VOUCHED_BATCH as u8) {
            memo.vouch(&signed(&key, nonce));
        }
        assert_eq!(memo.lock().vouched.len(), 1, "a full batch was checked");
        memo.check_vouched();
        assert!(memo.lock().vouched.is_empty());
    }

    #[test]
    #[should_panic(expected = "with a signature that does not verify")]
    fn a_vouched_signature_that_does_not_verify_panics() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let memo = MemoVerifier::new();
        let mut bad = signed(&key, 1);
        bad.signature.0[0] ^= 1;
        memo.vouch(&signed(&key, 2));
        memo.vouch(&bad);
        memo.check_vouched();
    }
}
