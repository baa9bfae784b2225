//! Traces: every input given to every node, and a digest of what it produced.
//!
//! Owns the trace format and the trace hash. A run's trace hash is blake3
//! over the whole sequence of entries (time, node, input, output digest), so
//! two runs with the same hash gave every node the same inputs at the same
//! times and got the same outputs back. `--trace FILE` also writes the
//! entries (postcard, length-prefixed, after a versioned header);
//! [`replay`] re-drives fresh engines with the inputs and checks every
//! output digest.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Arc;

use ctx_core::record::Record;
use ctx_core::stability::SignedAnnouncement;
use ctx_core::tx::SignedTx;
use ctx_core::{Config, ContextId, Event, MemberId, Node, Time, Transmit};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::world::{MemoVerifier, apply_input};

/// The trace file format version.
pub const TRACE_VERSION: u8 = 1;

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
        }
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

/// Records a run: always its hash, and its entries when writing a trace.
pub struct Recorder {
    hasher: blake3::Hasher,
    header: Header,
    writer: Option<BufWriter<File>>,
    header_written: bool,
    entries: u64,
    buffer: Vec<u8>,
    error: Option<std::io::Error>,
}

impl Recorder {
    pub fn new(
        scenario: &str,
        seed: u64,
        names: &[String],
        config: &Config,
        file: Option<File>,
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
            writer: file.map(BufWriter::new),
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

    pub fn record(&mut self, at: Time, node: usize, input: Input, outputs: [u8; 32]) {
        if !self.header_written {
            self.header_written = true;
            let header = postcard::to_stdvec(&self.header).expect("headers encode");
            self.hasher.update(&header);
            self.write_frame_of(header);
        }
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
            self.write_frame_of(bytes.clone());
        }
        self.buffer = bytes;
    }

    fn write_frame_of(&mut self, bytes: Vec<u8>) {
        if let Some(writer) = &mut self.writer {
            let result = writer
                .write_all(&(bytes.len() as u32).to_le_bytes())
                .and_then(|()| writer.write_all(&bytes));
            if let Err(e) = result {
                self.error.get_or_insert(e);
                self.writer = None;
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
        if let Some(writer) = &mut self.writer {
            writer.flush()?;
        }
        Ok(())
    }
}

/// Why a trace could not be replayed, or where it diverged.
#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("cannot read the trace: {0}")]
    Io(#[from] std::io::Error),
    #[error("the trace is damaged at entry {entry}: {message}")]
    Damaged { entry: u64, message: String },
    #[error("trace format version {0} is not supported (this build reads {TRACE_VERSION})")]
    Version(u8),
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
    let mut reader = BufReader::new(File::open(path)?);
    let mut hasher = blake3::Hasher::new();
    let header_bytes = read_frame(&mut reader, 0)?.ok_or(ReplayError::Damaged {
        entry: 0,
        message: "empty file".into(),
    })?;
    if header_bytes.first() != Some(&TRACE_VERSION) {
        return Err(ReplayError::Version(
            header_bytes.first().copied().unwrap_or(0),
        ));
    }
    let header: Header = postcard::from_bytes(&header_bytes).map_err(|e| ReplayError::Damaged {
        entry: 0,
        message: e.to_string(),
    })?;
    hasher.update(&header_bytes);
    if header.secrets.len() != header.names.len() || header.node_seeds.len() != header.names.len() {
        return Err(ReplayError::Damaged {
            entry: 0,
            message: "header lists a different number of names, keys and seeds".into(),
        });
    }
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
    let mut disks: Vec<Vec<Record>> = vec![Vec::new(); engines.len()];
    let mut count = 0u64;
    while let Some(bytes) = read_frame(&mut reader, count + 1)? {
        count += 1;
        hasher.update(&bytes);
        let entry: Entry = postcard::from_bytes(&bytes).map_err(|e| ReplayError::Damaged {
            entry: count,
            message: e.to_string(),
        })?;
        let node = entry.node as usize;
        if node >= engines.len() {
            return Err(ReplayError::Damaged {
                entry: count,
                message: format!("node {node} does not exist"),
            });
        }
        let result = match &entry.input {
            Input::Crash => {
                engines[node] = None;
                Ok(None)
            }
            Input::Restart { seed } => {
                match Node::restore(
                    header.config.clone(),
                    header.secrets[node],
                    *seed,
                    verifier.clone(),
                    disks[node].clone(),
                ) {
                    Ok(engine) => {
                        engines[node] = Some(engine);
                        Ok(None)
                    }
                    Err(error) => Err(format!("restore failed: {error}")),
                }
            }
            input => match engines[node].as_mut() {
                Some(engine) => apply_input(engine, entry.at, input),
                None => Err("the node is down".into()),
            },
        };
        let drained = drain(engines[node].as_mut(), &mut disks[node], &result);
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
        entries: count,
        trace_hash: hasher.finalize().to_hex().to_string(),
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

/// Drains a node after an input: records onto its disk first (a `Deleted`
/// drops the context's earlier records), then messages and events. The one
/// place the output digest is defined, for the world and for replay alike.
pub fn drain(
    engine: Option<&mut Node>,
    disk: &mut Vec<Record>,
    result: &Result<Option<String>, String>,
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
            match record {
                Record::Deleted { context, .. } => disk.retain(|r| r.context() != context),
                // The disk drops what a whole checkpoint supersedes, as
                // ctx-node's store does.
                Record::CheckpointEnd { context, height } => {
                    disk.retain(|r| !r.superseded_by(context, height))
                }
                _ => {}
            }
            disk.push(record);
        }
        while let Some(transmit) = engine.poll_transmit() {
            digest.update(transmit.to.as_bytes());
            digest.update(&transmit.bytes);
            drained.transmits.push(transmit);
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

fn read_frame(reader: &mut impl Read, entry: u64) -> Result<Option<Vec<u8>>, ReplayError> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > ENTRY_BYTES_MAX {
        return Err(ReplayError::Damaged {
            entry,
            message: format!("an entry of {length} bytes exceeds {ENTRY_BYTES_MAX}"),
        });
    }
    let mut bytes = vec![0u8; length];
    reader
        .read_exact(&mut bytes)
        .map_err(|e| ReplayError::Damaged {
            entry,
            message: format!("truncated: {e}"),
        })?;
    Ok(Some(bytes))
}
