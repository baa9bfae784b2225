//! # ctx-core: the engine
//!
//! A pure, sans-IO state machine for *contexts*: instances of a WebAssembly
//! application whose members share one key-value state. Members make
//! transactions; every member applies the DAG of transactions in one
//! canonical order, so every member that holds the same transactions holds
//! the same state, whatever order they arrived in.
//!
//! The driver (the simulator, or the TCP node) owns the world: it feeds a
//! [`Node`] commands, messages and timer firings, each with the current
//! [`Time`], and drains what the node wants done: records to persist,
//! messages to send, events to report, the next deadline. See
//! [`node`] for the loop and the durability rule, and ARCHITECTURE.md at the
//! repository root for the map.
//!
//! No I/O, no clock, no threads and no ambient randomness live in this crate.

pub mod checkpoint;
pub mod ids;
pub mod limits;
pub mod membership;
pub mod node;
pub mod pending;
pub mod record;
pub mod replica;
pub mod runtime;
pub mod stability;
pub mod state;
pub mod time;
pub mod tx;
pub mod verify;
pub mod wire;

pub use ids::{ContextId, Hash, Key, MemberId, TxId};
pub use node::{
    CallReceipt, CommandError, Config, ContextStatus, Event, MessageError, Node, Phase,
    RestoreError, Transmit,
};
pub use record::Record;
pub use replica::{Outcome, Rejection, Replica};
pub use runtime::{App, Application, CallError};
pub use time::Time;
pub use verify::{Ed25519Verifier, Verifier};
