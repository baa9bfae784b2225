//! The view of a run: a plain data model built from a trace, and the
//! self-contained HTML page that draws it as a space-time diagram.
//!
//! Owns [`View`] (lanes, messages with the fate of each copy, marks on the
//! lanes, transactions with every member's application of them, state-root
//! changes, partitions, down periods and checks), built from a format 2
//! trace in one pass ([`View::from_trace`]): messages are decoded with
//! `ctx_core::wire`, applications come from the engines' `Applied` events
//! and the positions the world wrote beside them. Invariants: indices in
//! the model (lanes, contexts, transactions) are dense and assigned in the
//! order things first appear in the trace, so the same trace gives the same
//! model, byte for byte; every copy of every message has exactly one fate.
//!
//! [`html`] embeds the model as one JSON blob in a page whose script and
//! style (`sim/src/view/`) are included at compile time: nothing is
//! fetched, the file opens offline.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use ctx_core::tx::{OrderKey, SignedTx, TxKind};
use ctx_core::wire::{Body, Envelope};
use ctx_core::{ContextId, Event, MemberId, Outcome, Time, TxId};
use serde::Serialize;
use thiserror::Error;

use crate::trace::{Frame, Input, ReadError, TraceReader, WorldEvent};

/// Transaction ids (and other lists) listed in a message's summary, at most.
const SUMMARY_IDS_MAX: usize = 6;

/// Why a view could not be built.
#[derive(Debug, Error)]
pub enum ViewError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(
        "trace format version {0} holds only the nodes' inputs, nothing to draw the network from: run the scenario again with this build (`ctx-sim run FILE --trace OUT`)"
    )]
    NoWorldFrames(u8),
}

/// One node's lane.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Lane {
    pub name: String,
    /// The first bytes of its member id, in hex.
    pub member: String,
}

/// A context: the scenario's name for it and its id.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContextView {
    pub name: String,
    pub id: String,
}

/// One copy of a message: when it was due and what became of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CopyView {
    /// 0, or 1 for the duplicate.
    pub copy: u8,
    /// When the network meant to deliver it (none: dropped when sent).
    pub due_ms: Option<u64>,
    /// `delivered`, `in-flight` (the run ended first), or why it was lost:
    /// `dropped`, `partitioned`, `down`, `stale`.
    pub fate: String,
    /// When the fate was decided (the send time for a drop).
    pub at_ms: u64,
}

/// One message from one node to another.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MessageView {
    pub id: u64,
    pub from: u32,
    pub to: u32,
    pub sent_ms: u64,
    /// The body's kind (`tx`, `heads`, `fetch`, ...), or `undecodable`.
    pub kind: String,
    pub context: Option<u32>,
    pub bytes: u32,
    pub copies: Vec<CopyView>,
    /// The decoded body, in one line.
    pub summary: String,
    /// Transactions it carries (indices into `View::txs`).
    pub txs: Vec<u32>,
    /// Transactions a fetch asks for, of those the view knows.
    pub wants: Vec<u32>,
    /// For a `txs` message: the kind of request it answers (`fetch`,
    /// `stream`), when the request was seen.
    pub answers: Option<String>,
}

/// Something that happened on a lane (or, with no node, to the world).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Mark {
    pub node: Option<u32>,
    pub at_ms: u64,
    /// create, invite, join, joined, join-abandoned, leave, left, crash,
    /// restart, clock, pause, catchup-refused, checkpoint-loaded, checkpoint-refused,
    /// checkpoint-mismatch, below-stable, tx-dropped, reordered,
    /// partition, heal, network, step.
    pub kind: String,
    pub context: Option<u32>,
    pub detail: String,
}

/// One member's first application of a transaction (per incarnation).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Application {
    pub node: u32,
    pub at_ms: u64,
    /// Its position in that member's canonical order, from the genesis.
    pub position: Option<u64>,
    /// `ok`, `failed: ...` or `rejected: ...`.
    pub outcome: String,
    /// How many times that member re-executed it since (a transaction
    /// inserted before it, later).
    pub reexecuted: u32,
}

/// One transaction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TxView {
    pub id: String,
    pub context: Option<u32>,
    /// The node that made it, if it is one of the run's nodes.
    pub author: Option<u32>,
    /// The method of a call, else create, invite, join or leave.
    pub kind: String,
    pub height: u64,
    pub parents: Vec<String>,
    /// Bytes of a call's input.
    pub input_bytes: u32,
    /// When its author made it (persisted it), if seen.
    pub authored_ms: Option<u64>,
    pub applied: Vec<Application>,
}

/// A node's state root for a context changed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RootChange {
    pub node: u32,
    pub context: u32,
    pub at_ms: u64,
    /// The first 4 bytes, in hex.
    pub root: String,
}

/// A time span: a partition (with each node's group) or a node down.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Span {
    pub from_ms: u64,
    /// The end of the run when it never ended.
    pub to_ms: u64,
    /// For a partition: the group of each node.
    pub groups: Vec<u32>,
    /// For a down period: the node.
    pub node: Option<u32>,
}

/// A check and its result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CheckView {
    pub name: String,
    pub passed: bool,
    pub at_ms: u64,
    pub detail: String,
    /// The step's line (0 for an always-on check).
    pub line: u32,
    /// The nodes its detail names.
    pub nodes: Vec<u32>,
}

/// Totals the page must agree with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub lanes: usize,
    pub messages: usize,
    /// One arrow per copy of a message (a drop is a short arrow too).
    pub arrows: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub txs: usize,
    pub applications: usize,
    pub checks: usize,
    pub failed_checks: usize,
}

/// Everything the page draws.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct View {
    pub scenario: String,
    pub seed: u64,
    pub trace_hash: String,
    /// Inputs the nodes took (entries of the trace).
    pub inputs: u64,
    pub end_ms: u64,
    /// A long delay: the page marks copies delivered later than this after
    /// their send (the 95th percentile of the run's delivery delays; every
    /// delay is drawn within the network's range in force, so "long" is
    /// relative to the run).
    pub slow_ms: u64,
    pub lanes: Vec<Lane>,
    pub contexts: Vec<ContextView>,
    pub kinds: Vec<String>,
    pub messages: Vec<MessageView>,
    pub marks: Vec<Mark>,
    pub txs: Vec<TxView>,
    pub roots: Vec<RootChange>,
    pub partitions: Vec<Span>,
    pub down: Vec<Span>,
    /// Pauses: a node frozen, its inputs held back (none in most runs, and
    /// then not written).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paused: Vec<Span>,
    pub checks: Vec<CheckView>,
    pub counts: Counts,
}

impl View {
    /// Reads a trace file and builds its view.
    pub fn from_file(path: &Path) -> Result<View, ViewError> {
        View::from_trace(TraceReader::open(path)?)
    }

    /// Builds the view of a trace held in memory (`Report::trace`).
    pub fn from_bytes(bytes: &[u8]) -> Result<View, ViewError> {
        View::from_trace(TraceReader::new(bytes)?)
    }

    pub fn from_trace<R: Read>(mut reader: TraceReader<R>) -> Result<View, ViewError> {
        if reader.version < 2 {
            return Err(ViewError::NoWorldFrames(reader.version));
        }
        let header = reader.header.clone();
        let mut builder = Builder::new(&header.names, &header.secrets);
        while let Some(frame) = reader.next_frame()? {
            match frame {
                Frame::Entry(entry) => builder.entry(entry.at, entry.node, &entry.input),
                Frame::World(event) => builder.world(event),
            }
        }
        let mut view = builder.finish();
        view.scenario = header.scenario;
        view.seed = header.seed;
        view.trace_hash = reader.hash();
        view.inputs = reader.entries();
        Ok(view)
    }

    /// Finds a transaction by a hex prefix of its id.
    pub fn find_tx(&self, prefix: &str) -> Result<usize, FindError> {
        let prefix = prefix.trim().to_ascii_lowercase();
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(FindError::NotHex(prefix));
        }
        let found: Vec<usize> = self
            .txs
            .iter()
            .enumerate()
            .filter(|(_, tx)| tx.id.starts_with(&prefix))
            .map(|(index, _)| index)
            .collect();
        match found.as_slice() {
            [] => Err(FindError::Unknown(prefix)),
            [one] => Ok(*one),
            many => Err(FindError::Ambiguous {
                prefix,
                count: many.len(),
                some: many
                    .iter()
                    .take(4)
                    .map(|i| self.txs[*i].id[..16].to_owned())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// The name of a lane.
    pub fn lane(&self, node: u32) -> &str {
        self.lanes
            .get(node as usize)
            .map_or("?", |lane| lane.name.as_str())
    }

    /// The name of a context.
    pub fn context_name(&self, context: Option<u32>) -> &str {
        context
            .and_then(|c| self.contexts.get(c as usize))
            .map_or("-", |c| c.name.as_str())
    }
}

/// Why a transaction id given on the command line names no transaction.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FindError {
    #[error("{0:?} is not a hex transaction id or prefix")]
    NotHex(String),
    #[error("no transaction of this trace has an id starting with {0}")]
    Unknown(String),
    #[error("{count} transactions have ids starting with {prefix} ({some}, ...): give more digits")]
    Ambiguous {
        prefix: String,
        count: usize,
        some: String,
    },
}

/// The page: the view as one JSON blob inside a page whose script and
/// style are inline.
pub fn html(view: &View) -> String {
    const PAGE: &str = include_str!("view/page.html");
    const STYLE: &str = include_str!("view/view.css");
    const SCRIPT: &str = include_str!("view/view.js");
    // No `<` inside the data's script element (so neither `</script>` nor
    // `<!--` can end or bend it): `<` appears only inside JSON strings,
    // where `\u003c` means the same.
    let data = serde_json::to_string(view)
        .expect("views serialize")
        .replace('<', "\\u003c");
    let title = format!("{} (seed {}): ctx-sim", view.scenario, view.seed)
        .replace('&', "&amp;")
        .replace('<', "&lt;");
    PAGE.replacen("{{TITLE}}", &title, 1)
        .replacen("/*{{STYLE}}*/", STYLE, 1)
        .replacen("{{DATA}}", &data, 1)
        .replacen("/*{{SCRIPT}}*/", SCRIPT, 1)
}

/// Builds a view frame by frame.
struct Builder {
    view: View,
    /// Each lane's member id.
    members: Vec<MemberId>,
    context_index: BTreeMap<ContextId, u32>,
    context_names: BTreeMap<ContextId, String>,
    tx_index: BTreeMap<TxId, u32>,
    keys: Vec<Option<OrderKey>>,
    message_index: BTreeMap<u64, usize>,
    /// (requester, responder, request id) -> `fetch` or `stream`.
    requests: BTreeMap<(u32, u32, u64), &'static str>,
    /// Per (node, context): what it applied, by order key, with the index
    /// of each application (reset when its copy goes: crash, left).
    applied_by: BTreeMap<(u32, u32), BTreeMap<OrderKey, (u32, usize)>>,
    partition_open: Option<(u64, Vec<u32>)>,
    down_since: BTreeMap<u32, u64>,
    kinds: std::collections::BTreeSet<String>,
}

impl Builder {
    fn new(names: &[String], secrets: &[[u8; 32]]) -> Builder {
        let members: Vec<MemberId> = secrets.iter().map(ctx_core::Node::member_id_of).collect();
        let lanes = names
            .iter()
            .zip(&members)
            .map(|(name, member)| Lane {
                name: name.clone(),
                member: member.short(),
            })
            .collect();
        Builder {
            members,
            view: View {
                scenario: String::new(),
                seed: 0,
                trace_hash: String::new(),
                inputs: 0,
                end_ms: 0,
                slow_ms: 0,
                lanes,
                contexts: Vec::new(),
                kinds: Vec::new(),
                messages: Vec::new(),
                marks: Vec::new(),
                txs: Vec::new(),
                roots: Vec::new(),
                partitions: Vec::new(),
                down: Vec::new(),
                paused: Vec::new(),
                checks: Vec::new(),
                counts: Counts {
                    lanes: 0,
                    messages: 0,
                    arrows: 0,
                    lost: 0,
                    duplicates: 0,
                    txs: 0,
                    applications: 0,
                    checks: 0,
                    failed_checks: 0,
                },
            },
            context_index: BTreeMap::new(),
            context_names: BTreeMap::new(),
            tx_index: BTreeMap::new(),
            keys: Vec::new(),
            message_index: BTreeMap::new(),
            requests: BTreeMap::new(),
            applied_by: BTreeMap::new(),
            partition_open: None,
            down_since: BTreeMap::new(),
            kinds: std::collections::BTreeSet::new(),
        }
    }

    fn time(&mut self, at: Time) -> u64 {
        let ms = at.as_ms();
        self.view.end_ms = self.view.end_ms.max(ms);
        ms
    }

    fn context(&mut self, id: &ContextId) -> u32 {
        let next = self.context_index.len() as u32;
        *self.context_index.entry(*id).or_insert_with(|| {
            self.view.contexts.push(ContextView {
                name: id.short(),
                id: id.to_hex(),
            });
            next
        })
    }

    /// The transaction's index, learning its body if this is the first
    /// time it is seen with one.
    fn tx(&mut self, id: TxId) -> u32 {
        let next = self.tx_index.len() as u32;
        *self.tx_index.entry(id).or_insert_with(|| {
            self.view.txs.push(TxView {
                id: id.to_hex(),
                context: None,
                author: None,
                kind: String::new(),
                height: 0,
                parents: Vec::new(),
                input_bytes: 0,
                authored_ms: None,
                applied: Vec::new(),
            });
            self.keys.push(None);
            next
        })
    }

    fn tx_body(&mut self, signed: &SignedTx) -> u32 {
        let id = signed.body.id();
        let index = self.tx(id);
        if self.keys[index as usize].is_none() {
            let body = &signed.body;
            let context = self.context(&body.context);
            let author = self
                .members
                .iter()
                .position(|member| *member == body.author)
                .map(|i| i as u32);
            let tx = &mut self.view.txs[index as usize];
            tx.context = Some(context);
            tx.author = author;
            tx.kind = body.kind.name().to_owned();
            tx.height = body.height;
            tx.parents = body.parents.iter().map(|p| p.id.short()).collect();
            tx.input_bytes = match &body.kind {
                TxKind::Call { input, .. } => input.len() as u32,
                _ => 0,
            };
            self.keys[index as usize] = Some(OrderKey {
                height: body.height,
                id,
            });
        }
        index
    }

    fn mark(
        &mut self,
        node: Option<u32>,
        at_ms: u64,
        kind: &str,
        context: Option<u32>,
        detail: String,
    ) {
        self.view.marks.push(Mark {
            node,
            at_ms,
            kind: kind.to_owned(),
            context,
            detail,
        });
    }

    fn entry(&mut self, at: Time, node: u32, input: &Input) {
        let at_ms = self.time(at);
        match input {
            Input::Create { app } => self.mark(
                Some(node),
                at_ms,
                "create",
                None,
                format!("app of {} bytes", app.len()),
            ),
            Input::Invite { context, member } => {
                let c = self.context(context);
                let name = self.member_name(member);
                self.mark(
                    Some(node),
                    at_ms,
                    "invite",
                    Some(c),
                    format!("invites {name}"),
                );
            }
            Input::Join { context, via } => {
                let c = self.context(context);
                let name = self.member_name(via);
                self.mark(
                    Some(node),
                    at_ms,
                    "join",
                    Some(c),
                    format!("asks {name} to catch up"),
                );
            }
            Input::Leave { context } => {
                let c = self.context(context);
                self.mark(Some(node), at_ms, "leave", Some(c), "leaves".into());
            }
            Input::Crash => {
                self.mark(
                    Some(node),
                    at_ms,
                    "crash",
                    None,
                    "crashes: what it had not persisted is lost".into(),
                );
                self.down_since.insert(node, at_ms);
                self.applied_by.retain(|(n, _), _| *n != node);
            }
            Input::Restart { .. } => {
                self.mark(
                    Some(node),
                    at_ms,
                    "restart",
                    None,
                    "restarts from its disk".into(),
                );
                if let Some(from_ms) = self.down_since.remove(&node) {
                    self.view.down.push(Span {
                        from_ms,
                        to_ms: at_ms,
                        groups: Vec::new(),
                        node: Some(node),
                    });
                }
            }
            Input::Clock { rate_permille } => self.mark(
                Some(node),
                at_ms,
                "clock",
                None,
                format!(
                    "its clock runs at {}× true time from now on",
                    f64::from(*rate_permille) / 1000.0
                ),
            ),
            Input::Pause { ms } => {
                self.mark(
                    Some(node),
                    at_ms,
                    "pause",
                    None,
                    format!("frozen for {ms} ms: takes no input till then"),
                );
                self.view.paused.push(Span {
                    from_ms: at_ms,
                    to_ms: at_ms.saturating_add(*ms),
                    groups: Vec::new(),
                    node: Some(node),
                });
            }
            Input::CrashLoss { loss } => self.mark(
                Some(node),
                at_ms,
                "crash-loss",
                None,
                match loss.torn {
                    Some(bytes) => format!(
                        "the crash lost records not yet synced: {} kept, the next torn to {bytes} bytes, the rest gone",
                        loss.kept
                    ),
                    None => format!(
                        "the crash lost records not yet synced: {} kept, the rest gone",
                        loss.kept
                    ),
                },
            ),
            Input::DiskFull { ms } => self.mark(
                Some(node),
                at_ms,
                "disk-full",
                None,
                format!(
                    "its disk is full for {ms} ms: it refuses commands and takes in only what it can answer without storing"
                ),
            ),
            Input::Call { .. }
            | Input::Message { .. }
            | Input::MessageStoringNothing { .. }
            | Input::Timeout => {}
        }
    }

    fn member_name(&self, member: &MemberId) -> String {
        self.members
            .iter()
            .position(|m| m == member)
            .map_or_else(|| member.short(), |i| self.view.lanes[i].name.clone())
    }

    fn world(&mut self, event: WorldEvent) {
        match event {
            WorldEvent::Sent {
                at,
                message,
                from,
                to,
                bytes,
                deliver_at,
                duplicate_at,
            } => {
                let sent_ms = self.time(at);
                let mut copies = Vec::new();
                match deliver_at {
                    None => copies.push(CopyView {
                        copy: 0,
                        due_ms: None,
                        fate: "dropped".into(),
                        at_ms: sent_ms,
                    }),
                    Some(due) => {
                        copies.push(in_flight(0, due));
                        if let Some(due) = duplicate_at {
                            copies.push(in_flight(1, due));
                        }
                    }
                }
                let decoded = self.decode(from, to, &bytes);
                self.kinds.insert(decoded.kind.clone());
                self.message_index.insert(message, self.view.messages.len());
                self.view.messages.push(MessageView {
                    id: message,
                    from,
                    to,
                    sent_ms,
                    kind: decoded.kind,
                    context: decoded.context,
                    bytes: bytes.len() as u32,
                    copies,
                    summary: decoded.summary,
                    txs: decoded.txs,
                    wants: decoded.wants,
                    answers: decoded.answers,
                });
            }
            WorldEvent::Delivered { at, message, copy } => {
                self.fate(at, message, copy, "delivered".into())
            }
            WorldEvent::Lost {
                at,
                message,
                copy,
                loss,
            } => self.fate(at, message, copy, loss.name().into()),
            WorldEvent::Outputs {
                at,
                node,
                events,
                positions,
                roots,
                authored,
            } => self.outputs(at, node, &events, &positions, &roots, &authored),
            WorldEvent::Partition { at, groups } => {
                let at_ms = self.time(at);
                self.close_partition(at_ms);
                let detail = describe_groups(&self.view.lanes, &groups);
                self.partition_open = Some((at_ms, groups));
                self.mark(None, at_ms, "partition", None, detail);
            }
            WorldEvent::Heal { at } => {
                let at_ms = self.time(at);
                self.close_partition(at_ms);
                self.mark(
                    None,
                    at_ms,
                    "heal",
                    None,
                    "everyone reaches everyone".into(),
                );
            }
            WorldEvent::Network {
                at,
                latency_ms,
                drop,
                duplicate,
            } => {
                let at_ms = self.time(at);
                self.mark(
                    None,
                    at_ms,
                    "network",
                    None,
                    format!(
                        "latency {}-{} ms, drop {drop}, duplicate {duplicate}",
                        latency_ms.0, latency_ms.1
                    ),
                );
            }
            WorldEvent::Step { at, line, op } => {
                let at_ms = self.time(at);
                self.mark(None, at_ms, "step", None, format!("line {line}: {op}"));
            }
            WorldEvent::Context { name, id } => {
                self.context(&id);
                self.context_names.insert(id, name);
            }
            WorldEvent::Check {
                at,
                name,
                passed,
                detail,
                line,
                nodes,
            } => {
                let at_ms = self.time(at);
                self.view.checks.push(CheckView {
                    name,
                    passed,
                    at_ms,
                    detail,
                    line,
                    nodes,
                });
            }
        }
    }

    fn fate(&mut self, at: Time, message: u64, copy: u8, fate: String) {
        let at_ms = self.time(at);
        let Some(&index) = self.message_index.get(&message) else {
            return;
        };
        if let Some(slot) = self.view.messages[index]
            .copies
            .iter_mut()
            .find(|c| c.copy == copy)
        {
            slot.fate = fate;
            slot.at_ms = at_ms;
        }
    }

    fn close_partition(&mut self, at_ms: u64) {
        if let Some((from_ms, groups)) = self.partition_open.take() {
            self.view.partitions.push(Span {
                from_ms,
                to_ms: at_ms,
                groups,
                node: None,
            });
        }
    }

    fn outputs(
        &mut self,
        at: Time,
        node: u32,
        events: &[Event],
        positions: &[(TxId, u64)],
        roots: &[(ContextId, ctx_core::Hash)],
        authored: &[SignedTx],
    ) {
        let at_ms = self.time(at);
        for signed in authored {
            let index = self.tx_body(signed) as usize;
            if self.view.txs[index].authored_ms.is_none() {
                self.view.txs[index].authored_ms = Some(at_ms);
            }
        }
        let positions: BTreeMap<TxId, u64> = positions.iter().copied().collect();
        // Transactions applied in this input, per context: the lowest key
        // among them re-executes everything applied before above it.
        let mut fresh: BTreeMap<u32, Vec<(OrderKey, u32, usize)>> = BTreeMap::new();
        for event in events {
            match event {
                Event::Applied {
                    context,
                    tx,
                    outcome,
                } => {
                    let c = self.context(context);
                    let index = self.tx(*tx);
                    let application = Application {
                        node,
                        at_ms,
                        position: positions.get(tx).copied(),
                        outcome: match outcome {
                            Outcome::Ok => "ok".into(),
                            Outcome::Failed(error) => format!("failed: {error}"),
                            Outcome::Rejected(why) => format!("rejected: {why}"),
                        },
                        reexecuted: 0,
                    };
                    let applied = &mut self.view.txs[index as usize].applied;
                    applied.push(application);
                    if let Some(key) = self.keys[index as usize] {
                        fresh
                            .entry(c)
                            .or_default()
                            .push((key, index, applied.len() - 1));
                    }
                }
                Event::Reordered {
                    context,
                    reexecuted,
                } => {
                    let c = self.context(context);
                    if let Some(lowest) = fresh.get(&c).and_then(|f| f.iter().map(|e| e.0).min())
                        && let Some(applied) = self.applied_by.get(&(node, c))
                    {
                        for (tx, application) in applied.range(lowest..).map(|(_, v)| *v) {
                            if let Some(slot) =
                                self.view.txs[tx as usize].applied.get_mut(application)
                            {
                                slot.reexecuted += 1;
                            }
                        }
                    }
                    self.mark(
                        Some(node),
                        at_ms,
                        "reordered",
                        Some(c),
                        format!("re-executed {reexecuted} applied transactions"),
                    );
                }
                other => self.event_mark(node, at_ms, other),
            }
        }
        for (c, applied) in fresh {
            let by = self.applied_by.entry((node, c)).or_default();
            for (key, tx, application) in applied {
                by.insert(key, (tx, application));
            }
        }
        for (context, root) in roots {
            let c = self.context(context);
            self.view.roots.push(RootChange {
                node,
                context: c,
                at_ms,
                root: hex::encode(&root.as_bytes()[..4]),
            });
        }
    }

    fn event_mark(&mut self, node: u32, at_ms: u64, event: &Event) {
        let (kind, context, detail) = match event {
            Event::Created { context } => ("created", context, "created the context".to_owned()),
            Event::Joined { context } => ("joined", context, "caught up: a member".to_owned()),
            Event::JoinAbandoned { context, reason } => (
                "join-abandoned",
                context,
                format!("gave up joining: {reason}"),
            ),
            Event::Left { context } => {
                let c = self.context(context);
                self.applied_by.remove(&(node, c));
                ("left", context, "left and deleted its copy".to_owned())
            }
            Event::CatchupRefused {
                context,
                by,
                reason,
            } => (
                "catchup-refused",
                context,
                format!("{} refused: {reason}", self.member_name(by)),
            ),
            Event::BelowStable {
                context,
                tx,
                height,
                frontier,
            } => (
                "below-stable",
                context,
                format!(
                    "sent {} of height {height}, below its stable frontier {frontier}",
                    tx.short()
                ),
            ),
            Event::CheckpointLoaded {
                context,
                from,
                height,
                applied,
                ..
            } => (
                "checkpoint-loaded",
                context,
                format!(
                    "loaded the checkpoint at height {height} ({applied} transactions) from {}",
                    self.member_name(from)
                ),
            ),
            Event::CheckpointRefused {
                context,
                from,
                reason,
            } => (
                "checkpoint-refused",
                context,
                format!(
                    "refused the checkpoint of {}: {reason}",
                    self.member_name(from)
                ),
            ),
            Event::CheckpointMismatch {
                context,
                member,
                height,
            } => (
                "checkpoint-mismatch",
                context,
                format!(
                    "its checkpoint at height {height} differs from {}'s",
                    self.member_name(member)
                ),
            ),
            Event::Dropped {
                context,
                tx,
                reason,
            } => (
                "tx-dropped",
                context,
                format!("dropped {}: {reason}", tx.short()),
            ),
            Event::CallFailed { context, tx, error } => (
                "call-failed",
                context,
                format!("its call {} failed: {error}", tx.short()),
            ),
            Event::TornRecordSkipped { record, damage } => {
                let detail = format!("restore skipped its torn last record (#{record}): {damage}");
                self.mark(Some(node), at_ms, "torn-record", None, detail);
                return;
            }
            Event::Applied { .. } | Event::Reordered { .. } | Event::Announced { .. } => return,
        };
        let c = self.context(context);
        self.mark(Some(node), at_ms, kind, Some(c), detail);
    }

    /// Decodes a message's bytes: its kind, context, a one-line summary
    /// and the transactions it carries or asks for.
    fn decode(&mut self, from: u32, to: u32, bytes: &[u8]) -> Decoded {
        let envelope = match Envelope::decode(bytes) {
            Ok(envelope) => envelope,
            Err(error) => {
                return Decoded {
                    kind: "undecodable".into(),
                    context: None,
                    summary: format!("undecodable: {error}"),
                    txs: Vec::new(),
                    wants: Vec::new(),
                    answers: None,
                };
            }
        };
        let context = Some(self.context(&envelope.context));
        let mut txs = Vec::new();
        let mut wants = Vec::new();
        let mut answers = None;
        let summary = match &envelope.body {
            Body::Tx(signed) => {
                txs.push(self.tx_body(signed));
                format!("push of {}", describe_tx(signed))
            }
            Body::Heads {
                heads,
                reply,
                announcements,
                stands_on,
            } => format!(
                "heads [{}]{}, {} announcements{}",
                short_list(heads),
                if *reply { " (reply)" } else { "" },
                announcements.len(),
                stands_on.map_or(String::new(), |mark| format!(
                    ", stands on the checkpoint at height {}",
                    mark.height
                ))
            ),
            Body::Fetch {
                request,
                want,
                have,
            } => {
                self.requests.insert((from, to, *request), "fetch");
                wants = want
                    .iter()
                    .filter_map(|id| self.tx_index.get(id).copied())
                    .collect();
                format!(
                    "fetch #{request}: want [{}], have [{}]",
                    short_list(want),
                    short_list(have)
                )
            }
            Body::Stream { request, after } => {
                self.requests.insert((from, to, *request), "stream");
                format!(
                    "stream #{request} after {}",
                    after.map_or("the genesis".to_owned(), |key| format!(
                        "{} (height {})",
                        key.id.short(),
                        key.height
                    ))
                )
            }
            Body::Txs {
                request,
                txs: carried,
                more,
                complete,
            } => {
                answers = self
                    .requests
                    .get(&(to, from, *request))
                    .map(|kind| (*kind).to_owned());
                for signed in carried {
                    txs.push(self.tx_body(signed));
                }
                let listed: Vec<String> = carried
                    .iter()
                    .take(SUMMARY_IDS_MAX)
                    .map(describe_tx)
                    .collect();
                format!(
                    "txs #{request} ({}): {} transactions [{}{}]{}{}",
                    answers.as_deref().unwrap_or("answer"),
                    carried.len(),
                    listed.join("; "),
                    if carried.len() > SUMMARY_IDS_MAX {
                        "; ..."
                    } else {
                        ""
                    },
                    if more.is_some() { ", more follow" } else { "" },
                    if *complete { ", complete" } else { "" }
                )
            }
            Body::CatchupRequest { request } => format!("catchup request #{request}"),
            Body::CatchupAccepted {
                request,
                genesis,
                members,
                offer,
            } => {
                txs.push(self.tx_body(genesis));
                format!(
                    "catchup accepted #{request}: genesis {}, {} members{}",
                    genesis.body.id().short(),
                    members.len(),
                    offer.as_ref().map_or(String::new(), |offer| format!(
                        ", offers the checkpoint at height {} ({} vouches)",
                        offer.header.height,
                        offer.vouches.len()
                    ))
                )
            }
            Body::CheckpointRequest {
                request,
                height,
                after,
            } => format!(
                "checkpoint request #{request}: height {height}{}",
                after.map_or(String::new(), |key| format!(
                    " after key {}",
                    hex::encode(&key.as_bytes()[..4])
                ))
            ),
            Body::CheckpointChunk {
                request,
                height,
                entries,
                more,
            } => format!(
                "checkpoint chunk #{request}: height {height}, {} entries{}",
                entries.len(),
                if *more { ", more follow" } else { "" }
            ),
            Body::CatchupRefused { request, reason } => {
                format!("catchup refused #{request}: {reason}")
            }
            Body::AppRequest { request, offset } => {
                format!("app request #{request} from byte {offset}")
            }
            Body::AppChunk {
                request,
                offset,
                bytes,
            } => format!("app chunk #{request}: {} bytes at {offset}", bytes.len()),
            Body::LeaveAck { leave, .. } => format!("leave acknowledged: {}", leave.short()),
        };
        Decoded {
            kind: envelope.body.name().to_owned(),
            context,
            summary,
            txs,
            wants,
            answers,
        }
    }

    fn finish(mut self) -> View {
        let end = self.view.end_ms;
        self.close_partition(end);
        for (node, from_ms) in std::mem::take(&mut self.down_since) {
            self.view.down.push(Span {
                from_ms,
                to_ms: end,
                groups: Vec::new(),
                node: Some(node),
            });
        }
        for (id, name) in &self.context_names {
            let index = self.context_index[id] as usize;
            self.view.contexts[index].name = name.clone();
        }
        self.view.kinds = self.kinds.into_iter().collect();
        let mut delays: Vec<u64> = self
            .view
            .messages
            .iter()
            .flat_map(|m| {
                m.copies
                    .iter()
                    .filter(|c| c.fate == "delivered")
                    .map(|c| c.at_ms.saturating_sub(m.sent_ms))
            })
            .collect();
        delays.sort_unstable();
        self.view.slow_ms = delays.get(delays.len() * 95 / 100).copied().unwrap_or(0);
        let view = &self.view;
        let copies = view.messages.iter().flat_map(|m| &m.copies);
        self.view.counts = Counts {
            lanes: view.lanes.len(),
            messages: view.messages.len(),
            arrows: copies.clone().count(),
            lost: copies
                .clone()
                .filter(|c| c.fate != "delivered" && c.fate != "in-flight")
                .count(),
            duplicates: copies.filter(|c| c.copy == 1).count(),
            txs: view.txs.len(),
            applications: view.txs.iter().map(|t| t.applied.len()).sum(),
            checks: view.checks.len(),
            failed_checks: view.checks.iter().filter(|c| !c.passed).count(),
        };
        self.view
    }
}

struct Decoded {
    kind: String,
    context: Option<u32>,
    summary: String,
    txs: Vec<u32>,
    wants: Vec<u32>,
    answers: Option<String>,
}

fn in_flight(copy: u8, due: Time) -> CopyView {
    CopyView {
        copy,
        due_ms: Some(due.as_ms()),
        fate: "in-flight".into(),
        at_ms: due.as_ms(),
    }
}

fn describe_tx(signed: &SignedTx) -> String {
    let body = &signed.body;
    let size = match &body.kind {
        TxKind::Call { input, .. } => format!(", {} B input", input.len()),
        _ => String::new(),
    };
    format!(
        "{} {} (height {}{size})",
        body.id().short(),
        body.kind.name(),
        body.height
    )
}

fn short_list(ids: &[TxId]) -> String {
    let mut listed: Vec<String> = ids.iter().take(SUMMARY_IDS_MAX).map(TxId::short).collect();
    if ids.len() > SUMMARY_IDS_MAX {
        listed.push(format!("... {} in all", ids.len()));
    }
    listed.join(", ")
}

fn describe_groups(lanes: &[Lane], groups: &[u32]) -> String {
    let mut by_group: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for (node, group) in groups.iter().enumerate() {
        if let Some(lane) = lanes.get(node) {
            by_group.entry(*group).or_default().push(&lane.name);
        }
    }
    by_group
        .values()
        .map(|names| format!("[{}]", names.join(", ")))
        .collect::<Vec<_>>()
        .join(" ")
}
