//! The messages members exchange, and their encoding.
//!
//! Every message is an [`Envelope`]: a format version byte, the context it
//! concerns, and a [`Body`]. Encoding is postcard. Decoding untrusted bytes
//! never panics: a message that is too large (checked before decoding),
//! truncated, followed by trailing bytes, or of another version is refused
//! with a [`WireError`] and changes nothing.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::CheckpointHeader;
use crate::ids::{ContextId, Key, MemberId, TxId};
use crate::limits::MESSAGE_BYTES_MAX;
use crate::stability::SignedAnnouncement;
use crate::tx::{OrderKey, SignedTx};

/// The wire format version this build speaks. Version 2 carried
/// transactions of format 2 (`crate::tx::TX_FORMAT_VERSION`); version 3
/// added stability announcements to heads; version 4 carries transactions
/// of format 3 (parents with their heights); version 5 adds checkpoints:
/// vouches in announcements, an offer with the catchup's acceptance, and
/// the checkpoint's entries in chunks; version 6 says, with a leave's
/// acknowledgement, whom the acknowledging member counts as members.
pub const WIRE_VERSION: u8 = 6;

/// Identifies a request so its response can be matched to it.
pub type RequestId = u64;

/// One message between two members about one context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u8,
    pub context: ContextId,
    pub body: Body,
}

/// What a message says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A new transaction, pushed by its author to the other members.
    Tx(SignedTx),
    /// Anti-entropy: the sender's heads. `reply` marks an answer to a
    /// `Heads`, which is not answered again. `announcements` carry
    /// stability: the sender's own first, then some it relays (at most
    /// `ANNOUNCEMENTS_PER_MESSAGE_MAX`; more are ignored).
    Heads {
        heads: Vec<TxId>,
        reply: bool,
        announcements: Vec<SignedAnnouncement>,
        /// The checkpoint the sender stands on (it holds no transaction
        /// below its cut), if any: a member that holds fewer below the cut
        /// is brought forward from it (`crate::node::forward`).
        stands_on: Option<CheckpointMark>,
    },
    /// Send the transactions in the past of `want` (all heads, if empty) that
    /// are not in the past of `have`.
    Fetch {
        request: RequestId,
        want: Vec<TxId>,
        have: Vec<TxId>,
    },
    /// Send the transactions of the canonical order after `after` (from the
    /// genesis when `None`): the catchup stream.
    Stream {
        request: RequestId,
        after: Option<OrderKey>,
    },
    /// Transactions answering a `Fetch` or a `Stream`. `more` is where a
    /// stream continues; for a fetch, `complete` says the answer is whole.
    Txs {
        request: RequestId,
        txs: Vec<SignedTx>,
        more: Option<OrderKey>,
        complete: bool,
    },
    /// An invited node asks to catch up.
    CatchupRequest { request: RequestId },
    /// The responder will serve the catchup: the genesis (which names the
    /// application blob), the members it knows, to retry with, and the
    /// checkpoint it offers to start from (else the stream starts at the
    /// genesis).
    CatchupAccepted {
        request: RequestId,
        genesis: SignedTx,
        members: Vec<MemberId>,
        offer: Option<Box<CheckpointOffer>>,
    },
    /// Send the entries of the checkpoint at `height` after `after` (from
    /// the first when `None`).
    CheckpointRequest {
        request: RequestId,
        height: u64,
        after: Option<Key>,
    },
    /// Entries of a checkpoint, in key order; `more` says others follow.
    CheckpointChunk {
        request: RequestId,
        height: u64,
        entries: Vec<(Key, Vec<u8>)>,
        more: bool,
    },
    /// The responder will not serve it.
    CatchupRefused {
        request: RequestId,
        reason: RefuseReason,
    },
    /// Send the application blob from `offset`.
    AppRequest { request: RequestId, offset: u64 },
    /// A chunk of the application blob.
    AppChunk {
        request: RequestId,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// A member applied the recipient's `Leave`, and counts `members` as the
    /// context's members (up to `limits::LEAVE_ACKS` of them): the leaver
    /// deletes its copy once as many members acknowledged as there can be.
    LeaveAck { leave: TxId, members: Vec<MemberId> },
}

impl Body {
    /// A short name for logs and traces.
    pub fn name(&self) -> &'static str {
        match self {
            Body::Tx(_) => "tx",
            Body::Heads { .. } => "heads",
            Body::Fetch { .. } => "fetch",
            Body::Stream { .. } => "stream",
            Body::Txs { .. } => "txs",
            Body::CatchupRequest { .. } => "catchup-request",
            Body::CatchupAccepted { .. } => "catchup-accepted",
            Body::CatchupRefused { .. } => "catchup-refused",
            Body::AppRequest { .. } => "app-request",
            Body::AppChunk { .. } => "app-chunk",
            Body::CheckpointRequest { .. } => "checkpoint-request",
            Body::CheckpointChunk { .. } => "checkpoint-chunk",
            Body::LeaveAck { .. } => "leave-ack",
        }
    }
}

/// Why a member refused a catchup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum RefuseReason {
    #[error("the responder does not hold the context")]
    UnknownContext,
    #[error("the responder is not a full member")]
    NotAMember,
    #[error("the requester is not invited")]
    NotInvited,
    #[error("the responder no longer holds what was asked (a newer checkpoint replaced it)")]
    Superseded,
}

/// A checkpoint's cut and how many transactions are below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMark {
    pub height: u64,
    pub applied: u64,
}

/// A checkpoint a responder offers a joiner: its header, and the
/// announcements of other members that vouch for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointOffer {
    pub header: CheckpointHeader,
    pub vouches: Vec<SignedAnnouncement>,
}

/// Why bytes were refused as a message.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("message of {0} bytes exceeds the limit of {MESSAGE_BYTES_MAX}")]
    TooLarge(usize),
    #[error("empty message")]
    Empty,
    #[error("message format version {0} is not supported (this build speaks {WIRE_VERSION})")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

impl Envelope {
    pub fn new(context: ContextId, body: Body) -> Self {
        Self {
            version: WIRE_VERSION,
            context,
            body,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("encoding into a Vec cannot fail")
    }

    /// Decodes untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, WireError> {
        decode_versioned(bytes, MESSAGE_BYTES_MAX, WIRE_VERSION)
    }
}

/// Decodes a postcard value whose first field is a one-byte version:
/// bounded, versioned, whole.
pub(crate) fn decode_versioned<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    bytes_max: usize,
    version: u8,
) -> Result<T, WireError> {
    if bytes.len() > bytes_max {
        return Err(WireError::TooLarge(bytes.len()));
    }
    // A u8 is encoded as itself by postcard, so the version is byte 0.
    let first = *bytes.first().ok_or(WireError::Empty)?;
    if first != version {
        return Err(WireError::Version(first));
    }
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let envelope = Envelope::new(
            ContextId([3; 32]),
            Body::Heads {
                heads: vec![TxId([1; 32]), TxId([2; 32])],
                reply: false,
                announcements: Vec::new(),
                stands_on: Some(CheckpointMark {
                    height: 9,
                    applied: 12,
                }),
            },
        );
        assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
    }

    #[test]
    fn refuses_bad_bytes() {
        let good = Envelope::new(
            ContextId([3; 32]),
            Body::LeaveAck {
                leave: TxId([9; 32]),
                members: Vec::new(),
            },
        )
        .encode();
        assert_eq!(Envelope::decode(&[]), Err(WireError::Empty));
        for version in [1, 2, 3, 4, 5, WIRE_VERSION + 1] {
            let mut other_version = good.clone();
            other_version[0] = version;
            assert_eq!(
                Envelope::decode(&other_version),
                Err(WireError::Version(version))
            );
        }
        assert!(matches!(
            Envelope::decode(&good[..good.len() - 1]),
            Err(WireError::Malformed(_))
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(Envelope::decode(&trailing), Err(WireError::Trailing(1)));
        let huge = vec![WIRE_VERSION; MESSAGE_BYTES_MAX + 1];
        assert_eq!(
            Envelope::decode(&huge),
            Err(WireError::TooLarge(MESSAGE_BYTES_MAX + 1))
        );
    }
}
