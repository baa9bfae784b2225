//! Traces: every input given to every node, and a digest of what it produced;
//! in a trace file, also what the world did around them.
//!
//! Owns the trace format and the trace hash. A run's trace hash is blake3
//! over the header as format 1 wrote it and the whole sequence of entries
//! (time, node, input, output digest), so two runs with the same hash gave
//! every node the same inputs at the same times and got the same outputs
//! back. The hash covers nothing else: the world frames a file also holds
//! are not hashed, so trace hashes are the same whichever format writes the
//! file, and whether one is written at all.
//!
//! The file (`--trace FILE`, format 2): the magic [`TRACE_MAGIC`], then
//! length-prefixed frames: the header (postcard, its first byte the
//! version), then per frame a tag byte and its postcard body: an [`Entry`]
//! ([`FRAME_ENTRY`]) or a [`WorldEvent`] ([`FRAME_WORLD`]): a message sent,
//! delivered or lost, a node's engine events and state roots after an
//! input, partitions, network changes, the scenario's contexts and every
//! check. Format 1 files (no magic, entries only) are still replayed; the
//! view refuses them, having nothing to draw the network from.
//! [`replay`] re-drives fresh engines with the inputs and checks every
//! output digest. Entries keep true time; an engine was handed its node's
//! clock ([`crate::clock`]), which a replay reads again from the node's
//! `clock` entries (none in most runs: then the two are one).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use ctx_core::record::Record;
use ctx_core::stability::SignedAnnouncement;
use ctx_core::tx::SignedTx;
use ctx_core::verify::Verifier;
use ctx_core::{Config, ContextId, Event, Hash, MemberId, Node, Time, Transmit, TxId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::clock::Clock;
use crate::disk::{Disk, DiskLoss};
use crate::world::{MemoVerifier, apply_input};

/// The trace file format version this build writes. Version 1 held the
/// entries only; version 2 adds the magic and the world frames.
pub const TRACE_VERSION: u8 = 2;

/// The header version the trace hash covers: the hash is computed over the
/// header as format 1 wrote it, so it does not change with the file format.
const HASHED_HEADER_VERSION: u8 = 1;

/// The first bytes of a format 2 trace file.
pub const TRACE_MAGIC: &[u8; 8] = b"CTXTRACE";

/// Tag of a frame holding an [`Entry`].
pub const FRAME_ENTRY: u8 = 0;
/// Tag of a frame holding a [`WorldEvent`].
pub const FRAME_WORLD: u8 = 1;

/// Bytes of one trace entry, at most (a message or an app blob).
const ENTRY_BYTES_MAX: usize = 8 * 1024 * 1024;

/// One input to one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Input {
    Create {
        app: Vec<u8>,
    },
    Invite {
        context: ContextId,
        member: MemberId,
    },
    Join {
        context: ContextId,
        via: MemberId,
    },
    Leave {
        context: ContextId,
    },
    Call {
        context: ContextId,
        method: String,
        input: Vec<u8>,
    },
    Message {
        from: MemberId,
        bytes: Vec<u8>,
    },
    Timeout,
    Crash,
    Restart {
        seed: [u8; 32],
    },
    /// From now on the node's clock runs at `rate_permille` thousandths of
    /// true time ([`crate::clock`]); handled by the world, not the engine.
    Clock {
        rate_permille: u32,
    },
    /// The node is frozen for `ms` (a long garbage-collection or VM
    /// pause): it takes no input until then; what reaches it meanwhile
    /// waits, and its clock runs on. Handled by the world.
    Pause {
        ms: u64,
    },
    /// Right after a `Crash`: what the crash did to the records the node
    /// had written but not synced ([`crate::disk`]). Handled by the world.
    CrashLoss {
        loss: DiskLoss,
    },
    /// The node's disk is full for `ms`: it stores nothing till then
    /// (commands are refused, messages come as `MessageStoringNothing`).
    /// Handled by the world.
    DiskFull {
        ms: u64,
    },
    /// A message to a node whose disk is full: the engine handles it only
    /// where answering stores nothing
    /// (`Node::handle_message_storing_nothing`).
    MessageStoringNothing {
        from: MemberId,
        bytes: Vec<u8>,
    },
}

impl Input {
    pub fn name(&self) -> &'static str {
        match self {
            Input::Create { .. } => "create",
            Input::Invite { .. } => "invite",
            Input::Join { .. } => "join",
            Input::Leave { .. } => "leave",
            Input::Call { .. } => "call",
            Input::Message { .. } => "message",
            Input::Timeout => "timeout",
            Input::Crash => "crash",
            Input::Restart { .. } => "restart",
            Input::Clock { .. } => "clock",
            Input::Pause { .. } => "pause",
            Input::CrashLoss { .. } => "crash-loss",
            Input::DiskFull { .. } => "disk-full",
            Input::MessageStoringNothing { .. } => "message",
        }
    }

    /// Whether the input is a command, answered to its caller: the driver
    /// syncs before it answers ([`crate::disk`]).
    pub fn is_command(&self) -> bool {
        matches!(
            self,
            Input::Create { .. }
                | Input::Invite { .. }
                | Input::Join { .. }
                | Input::Leave { .. }
                | Input::Call { .. }
        )
    }
}

/// What a replay needs before the first entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub version: u8,
    pub scenario: String,
    pub seed: u64,
    pub names: Vec<String>,
    pub secrets: Vec<[u8; 32]>,
    pub node_seeds: Vec<[u8; 32]>,
    pub config: Config,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at: Time,
    pub node: u32,
    pub input: Input,
    pub outputs: [u8; 32],
}

/// Why a message never reached its recipient's engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Loss {
    /// The network dropped it when it was sent (the `drop` probability).
    Dropped,
    /// Sender and recipient were in different partition groups at delivery.
    Partitioned,
    /// The recipient was down at delivery.
    Down,
    /// The recipient crashed and restarted since it was sent: it was
    /// addressed to an earlier incarnation.
    Stale,
}

impl Loss {
    pub fn name(self) -> &'static str {
        match self {
            Loss::Dropped => "dropped",
            Loss::Partitioned => "partitioned",
            Loss::Down => "down",
            Loss::Stale => "stale",
        }
    }
}

/// What the world did, written into a trace file beside the entries (not
/// hashed). Nodes are indices into the header's names; messages are
/// numbered from 0 in the order they were sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum WorldEvent {
    /// A node's message entered the network: when each copy is due (none
    /// when dropped at once; a second copy when duplicated).
    Sent {
        at: Time,
        message: u64,
        from: u32,
        to: u32,
        bytes: Vec<u8>,
        deliver_at: Option<Time>,
        duplicate_at: Option<Time>,
    },
    /// A copy of a message reached its recipient's engine (the next entry
    /// is that input). `copy` is 1 for a duplicate.
    Delivered { at: Time, message: u64, copy: u8 },
    /// A copy of a message was lost, and why.
    Lost {
        at: Time,
        message: u64,
        copy: u8,
        loss: Loss,
    },
    /// What a node's engine reported after an input: its events (without
    /// stability announcements), the order position of each transaction it
    /// applied for the first time, and the state root of each context whose
    /// root changed; and the transactions it made.
    Outputs {
        at: Time,
        node: u32,
        events: Vec<Event>,
        positions: Vec<(TxId, u64)>,
        roots: Vec<(ContextId, Hash)>,
        authored: Vec<SignedTx>,
    },
    /// Only nodes of the same group reach each other (a group per node).
    Partition { at: Time, groups: Vec<u32> },
    /// Everyone reaches everyone.
    Heal { at: Time },
    /// New network conditions.
    Network {
        at: Time,
        latency_ms: (u64, u64),
        drop: f64,
        duplicate: f64,
    },
    /// A scenario step ran (its op and line).
    Step { at: Time, line: u32, op: String },
    /// The scenario's name for a context id.
    Context { name: String, id: ContextId },
    /// A check's result, and the nodes its detail names.
    Check {
        at: Time,
        name: String,
        passed: bool,
        detail: String,
        line: u32,
        nodes: Vec<u32>,
    },
}

/// Records a run: always its hash, and its entries and world frames when
/// writing a trace.
pub struct Recorder {
    hasher: blake3::Hasher,
    header: Header,
    writer: Option<Sink>,
    header_hashed: bool,
    header_written: bool,
    entries: u64,
    buffer: Vec<u8>,
    error: Option<std::io::Error>,
}

/// Where a trace is written: a file, or memory (for a view made without a
/// trace file).
pub enum TraceSink {
    File(File),
    Memory,
}

enum Sink {
    File(BufWriter<File>),
    Memory(Vec<u8>),
}

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File(writer) => writer.write_all(bytes),
            Sink::Memory(memory) => {
                memory.extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

impl Recorder {
    pub fn new(
        scenario: &str,
        seed: u64,
        names: &[String],
        config: &Config,
        sink: Option<TraceSink>,
    ) -> Recorder {
        Recorder {
            hasher: blake3::Hasher::new(),
            header: Header {
                version: TRACE_VERSION,
                scenario: scenario.to_owned(),
                seed,
                names: names.to_vec(),
                secrets: Vec::new(),
                node_seeds: Vec::new(),
                config: config.clone(),
            },
            header_hashed: false,
            writer: sink.map(|sink| match sink {
                TraceSink::File(file) => Sink::File(BufWriter::new(file)),
                TraceSink::Memory => Sink::Memory(TRACE_MAGIC.to_vec()),
            }),
            header_written: false,
            entries: 0,
            buffer: Vec::new(),
            error: None,
        }
    }

    /// Notes a node's identity and engine seed (called once per node, in
    /// order, before any entry).
    pub fn node(&mut self, secret: [u8; 32], seed: [u8; 32]) {
        assert!(
            !self.header_written,
            "nodes are declared before the first entry"
        );
        self.header.secrets.push(secret);
        self.header.node_seeds.push(seed);
    }

    /// Whether world frames are kept (a trace is being written): callers
    /// skip building them otherwise.
    pub fn keeps_world(&self) -> bool {
        self.writer.is_some()
    }

    /// The hash covers the header (as format 1 wrote it) from the first
    /// entry on, exactly as format 1 did.
    fn hash_header(&mut self) {
        if self.header_hashed {
            return;
        }
        self.header_hashed = true;
        let hashed = Header {
            version: HASHED_HEADER_VERSION,
            ..self.header.clone()
        };
        self.hasher
            .update(&postcard::to_stdvec(&hashed).expect("headers encode"));
    }

    /// The file starts with the magic and the header, before any frame.
    fn write_header(&mut self) {
        if self.header_written {
            return;
        }
        self.header_written = true;
        if let Some(writer) = &mut self.writer
            && let Sink::File(_) = writer
        {
            let result = writer.write_all(TRACE_MAGIC);
            self.note(result);
        }
        let header = postcard::to_stdvec(&self.header).expect("headers encode");
        self.write_frame_of(&[], &header);
    }

    pub fn record(&mut self, at: Time, node: usize, input: Input, outputs: [u8; 32]) {
        self.hash_header();
        self.write_header();
        let entry = Entry {
            at,
            node: node as u32,
            input,
            outputs,
        };
        self.buffer.clear();
        let bytes =
            postcard::to_extend(&entry, std::mem::take(&mut self.buffer)).expect("entries encode");
        self.hasher.update(&bytes);
        self.entries += 1;
        if self.writer.is_some() {
            self.write_frame_of(&[FRAME_ENTRY], &bytes);
        }
        self.buffer = bytes;
    }

    /// Writes a world frame (when a trace is written; never hashed).
    pub fn world(&mut self, event: &WorldEvent) {
        if self.writer.is_none() {
            return;
        }
        self.write_header();
        let bytes = postcard::to_stdvec(event).expect("world events encode");
        self.write_frame_of(&[FRAME_WORLD], &bytes);
    }

    fn write_frame_of(&mut self, tag: &[u8], bytes: &[u8]) {
        if let Some(writer) = &mut self.writer {
            let length = (tag.len() + bytes.len()) as u32;
            let result = writer
                .write_all(&length.to_le_bytes())
                .and_then(|()| writer.write_all(tag))
                .and_then(|()| writer.write_all(bytes));
            self.note(result);
        }
    }

    fn note(&mut self, result: std::io::Result<()>) {
        if let Err(e) = result {
            self.error.get_or_insert(e);
            self.writer = None;
        }
    }

    /// The trace written to memory ([`TraceSink::Memory`]), once finished.
    pub fn take_memory(&mut self) -> Option<Vec<u8>> {
        match self.writer.take()? {
            Sink::Memory(bytes) => Some(bytes),
            file => {
                self.writer = Some(file);
                None
            }
        }
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The hash of everything recorded so far.
    pub fn hash(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }

    /// Flushes the trace file; reports the first write error.
    pub fn finish(&mut self) -> std::io::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.write_header();
        if let Some(Sink::File(writer)) = &mut self.writer {
            writer.flush()?;
        }
        Ok(())
    }
}

/// Why a trace file could not be read.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("cannot read the trace: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a ctx-sim trace (it starts with neither the trace magic nor a format 1 header)")]
    NotATrace,
    #[error("the trace is damaged at entry {entry}: {message}")]
    Damaged { entry: u64, message: String },
    #[error("trace format version {0} is not supported (this build reads 1 and {TRACE_VERSION})")]
    Version(u8),
}

/// Why a trace could not be replayed, or where it diverged.
#[derive(Debug, Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(
        "outputs differ at entry {entry} (t={at}, node {node}, input {input}): the engine is not deterministic, or the trace came from another build"
    )]
    Diverged {
        entry: u64,
        at: Time,
        node: String,
        input: &'static str,
    },
}

/// One frame of a trace file, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Entry(Entry),
    World(WorldEvent),
}

/// Reads a trace file frame by frame, and computes its trace hash as it
/// goes (over the header as format 1 wrote it and the entries).
pub struct TraceReader<R> {
    reader: R,
    pub header: Header,
    /// The file's format version (1 or 2).
    pub version: u8,
    hasher: blake3::Hasher,
    hashed_header: Option<Vec<u8>>,
    entries: u64,
}

impl TraceReader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        TraceReader::new(BufReader::new(File::open(path)?))
    }
}

impl<R: Read> TraceReader<R> {
    /// Reads the magic (format 2; a format 1 file has none) and the header.
    pub fn new(mut reader: R) -> Result<Self, ReadError> {
        let mut start = [0u8; 8];
        let read = read_up_to(&mut reader, &mut start)?;
        if read == 0 {
            return Err(ReadError::Damaged {
                entry: 0,
                message: "empty file".into(),
            });
        }
        let (version, header_bytes) = if read == 8 && &start == TRACE_MAGIC {
            let bytes = read_frame(&mut reader, 0)?.ok_or(ReadError::Damaged {
                entry: 0,
                message: "truncated: no header after the magic".into(),
            })?;
            (bytes.first().copied().unwrap_or(0), bytes)
        } else {
            // Format 1: the header's length, then the header, whose first
            // byte is its version.
            if read < 5 {
                return Err(ReadError::NotATrace);
            }
            let length = u32::from_le_bytes(start[..4].try_into().expect("4 bytes")) as usize;
            if start[4] != 1 || length > ENTRY_BYTES_MAX || length < read - 4 {
                return Err(ReadError::NotATrace);
            }
            let mut bytes = start[4..read].to_vec();
            let mut rest = vec![0u8; length - bytes.len()];
            reader
                .read_exact(&mut rest)
                .map_err(|e| ReadError::Damaged {
                    entry: 0,
                    message: format!("truncated header: {e}"),
                })?;
            bytes.extend_from_slice(&rest);
            (1, bytes)
        };
        if version != 1 && version != TRACE_VERSION {
            return Err(ReadError::Version(version));
        }
        let header: Header =
            postcard::from_bytes(&header_bytes).map_err(|e| ReadError::Damaged {
                entry: 0,
                message: format!("bad header: {e}"),
            })?;
        if header.secrets.len() != header.names.len()
            || header.node_seeds.len() != header.names.len()
        {
            return Err(ReadError::Damaged {
                entry: 0,
                message: "header lists a different number of names, keys and seeds".into(),
            });
        }
        let hashed = Header {
            version: HASHED_HEADER_VERSION,
            ..header.clone()
        };
        Ok(TraceReader {
            reader,
            header,
            version,
            hasher: blake3::Hasher::new(),
            hashed_header: Some(postcard::to_stdvec(&hashed).expect("headers encode")),
            entries: 0,
        })
    }

    /// The next frame, or `None` at the end of the file.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        let Some(bytes) = read_frame(&mut self.reader, self.entries + 1)? else {
            return Ok(None);
        };
        let damaged = |entry: u64, message: String| ReadError::Damaged { entry, message };
        let (tag, body) = match self.version {
            1 => (FRAME_ENTRY, bytes.as_slice()),
            _ => match bytes.split_first() {
                Some((tag, body)) => (*tag, body),
                None => return Err(damaged(self.entries + 1, "an empty frame".into())),
            },
        };
        match tag {
            FRAME_ENTRY => {
                self.entries += 1;
                if let Some(header) = self.hashed_header.take() {
                    self.hasher.update(&header);
                }
                self.hasher.update(body);
                let entry: Entry =
                    postcard::from_bytes(body).map_err(|e| damaged(self.entries, e.to_string()))?;
                if entry.node as usize >= self.header.names.len() {
                    return Err(damaged(
                        self.entries,
                        format!("node {} does not exist", entry.node),
                    ));
                }
                Ok(Some(Frame::Entry(entry)))
            }
            FRAME_WORLD => {
                let event: WorldEvent = postcard::from_bytes(body)
                    .map_err(|e| damaged(self.entries, format!("bad world frame after it: {e}")))?;
                Ok(Some(Frame::World(event)))
            }
            other => Err(damaged(
                self.entries,
                format!("unknown frame tag {other} after it"),
            )),
        }
    }

    /// Entries read so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The trace hash of the entries read so far.
    pub fn hash(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }
}

/// What a successful replay checked.
#[derive(Debug)]
pub struct Replayed {
    pub scenario: String,
    pub seed: u64,
    pub entries: u64,
    pub trace_hash: String,
}

/// Re-drives fresh engines with a trace's inputs and checks every output.
pub fn replay(path: &Path) -> Result<Replayed, ReplayError> {
    let mut reader = TraceReader::open(path)?;
    let header = reader.header.clone();
    let verifier = Arc::new(MemoVerifier::new());
    let mut engines: Vec<Option<Node>> = header
        .secrets
        .iter()
        .zip(&header.node_seeds)
        .map(|(secret, seed)| {
            Some(Node::new(
                header.config.clone(),
                *secret,
                *seed,
                verifier.clone(),
            ))
        })
        .collect();
    let mut disks: Vec<Disk> = vec![Disk::default(); engines.len()];
    let mut clocks = vec![Clock::exact(); engines.len()];
    while let Some(frame) = reader.next_frame()? {
        let Frame::Entry(entry) = frame else {
            continue;
        };
        let count = reader.entries();
        let node = entry.node as usize;
        let result = match &entry.input {
            Input::Crash => {
                engines[node] = None;
                Ok(None)
            }
            Input::CrashLoss { loss } => {
                disks[node].crash(*loss);
                Ok(None)
            }
            Input::Restart { seed } => {
                let restored = restore(
                    header.config.clone(),
                    header.secrets[node],
                    *seed,
                    verifier.clone(),
                    &mut disks[node],
                );
                restored.map(|engine| {
                    engines[node] = Some(engine);
                    None
                })
            }
            Input::Clock { rate_permille } => {
                clocks[node].set_rate(entry.at, *rate_permille);
                Ok(None)
            }
            // What the pause held back comes as later entries, and what
            // a full disk changes is in the inputs themselves.
            Input::Pause { .. } | Input::DiskFull { .. } => Ok(None),
            input => match engines[node].as_mut() {
                Some(engine) => apply_input(engine, clocks[node].local(entry.at), input),
                None => Err("the node is down".into()),
            },
        };
        let command = entry.input.is_command();
        let drained = drain(engines[node].as_mut(), &mut disks[node], &result, command);
        for tx in &drained.authored {
            verifier.vouch(tx);
        }
        for (context, announcement) in &drained.announced {
            verifier.vouch_announcement(context, announcement);
        }
        if drained.digest != entry.outputs {
            return Err(ReplayError::Diverged {
                entry: count,
                at: entry.at,
                node: header.names[node].clone(),
                input: entry.input.name(),
            });
        }
    }
    verifier.check_vouched();
    Ok(Replayed {
        scenario: header.scenario,
        seed: header.seed,
        entries: reader.entries(),
        trace_hash: reader.hash(),
    })
}

/// A node's outputs after one input.
pub struct Drained {
    /// Digest of the input's result and every output, in order.
    pub digest: [u8; 32],
    pub transmits: Vec<Transmit>,
    pub events: Vec<Event>,
    pub timeout: Option<Time>,
    /// The transactions the node persisted that it signed itself.
    pub authored: Vec<SignedTx>,
    /// The stability announcements it signed, to vouch for too.
    pub announced: Vec<(ContextId, SignedAnnouncement)>,
}

/// Rebuilds a crashed node from its disk (sealed, so a torn last record is
/// found and skipped), and cuts the torn record off, as a driver does once
/// the node is up. The one restart, for the world and for replay alike.
pub fn restore(
    config: Config,
    secret: [u8; 32],
    seed: [u8; 32],
    verifier: Arc<dyn Verifier>,
    disk: &mut Disk,
) -> Result<Node, String> {
    let engine = Node::restore_sealed(config, secret, seed, verifier, disk.sealed())
        .map_err(|error| format!("restore failed: {error}"))?;
    disk.cut_torn_tail();
    Ok(engine)
}

/// Drains a node after an input: records onto its disk first (a `Deleted`
/// drops the context's earlier records), synced if anything leaves the
/// node (a message, or the answer to a `command`), then messages and
/// events. The one place the output digest is defined, for the world and
/// for replay alike.
pub fn drain(
    engine: Option<&mut Node>,
    disk: &mut Disk,
    result: &Result<Option<String>, String>,
    command: bool,
) -> Drained {
    let mut digest = blake3::Hasher::new();
    digest.update(format!("{result:?}").as_bytes());
    let mut drained = Drained {
        digest: [0; 32],
        transmits: Vec::new(),
        events: Vec::new(),
        timeout: None,
        authored: Vec::new(),
        announced: Vec::new(),
    };
    if let Some(engine) = engine {
        let member = engine.member_id();
        while let Some(record) = engine.poll_persist() {
            digest.update(&record.encode());
            if let Record::Tx { tx, .. } = &record
                && tx.body.author == member
            {
                drained.authored.push(tx.clone());
            }
            disk.write(record);
        }
        while let Some(transmit) = engine.poll_transmit() {
            digest.update(transmit.to.as_bytes());
            digest.update(&transmit.bytes);
            drained.transmits.push(transmit);
        }
        if command || !drained.transmits.is_empty() || !drained.authored.is_empty() {
            disk.sync();
        }
        while let Some(event) = engine.poll_event() {
            digest.update(&postcard::to_stdvec(&event).expect("events encode"));
            if let Event::Announced {
                context,
                announcement,
            } = &event
            {
                drained.announced.push((*context, announcement.clone()));
            }
            drained.events.push(event);
        }
        drained.timeout = engine.poll_timeout();
    }
    drained.digest = *digest.finalize().as_bytes();
    drained
}

/// Reads into `buffer` until it is full or the input ends; how many bytes.
fn read_up_to(reader: &mut impl Read, buffer: &mut [u8]) -> Result<usize, ReadError> {
    let mut read = 0;
    while read < buffer.len() {
        match reader.read(&mut buffer[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(read)
}

fn read_frame(reader: &mut impl Read, entry: u64) -> Result<Option<Vec<u8>>, ReadError> {
    let mut length = [0u8; 4];
    match read_up_to(reader, &mut length)? {
        0 => return Ok(None),
        4 => {}
        n => {
            return Err(ReadError::Damaged {
                entry,
                message: format!("truncated: {n} bytes of a frame length"),
            });
        }
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > ENTRY_BYTES_MAX {
        return Err(ReadError::Damaged {
            entry,
            message: format!("an entry of {length} bytes exceeds {ENTRY_BYTES_MAX}"),
        });
    }
    let mut bytes = vec![0u8; length];
    reader
        .read_exact(&mut bytes)
        .map_err(|e| ReadError::Damaged {
            entry,
            message: format!("truncated: {e}"),
        })?;
    Ok(Some(bytes))
}
