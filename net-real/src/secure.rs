//! The peer port's wire: length-prefixed frames, the Noise handshake bound
//! to member identities, and encrypted, chunked peer messages.
//!
//! ```text
//! frame    = u32 big-endian length (<= FRAME_BYTES_MAX) ++ bytes
//! handshake: Noise_XX_25519_ChaChaPoly_BLAKE2s, prologue PROLOGUE,
//!            three frames (-> e; <- e ee s es; -> s se)
//! then each side sends one encrypted Proof: its member id (ed25519 public
//!   key) and an ed25519 signature over (role label ++ handshake hash).
//! transport: every frame is one Noise message; its plaintext is a flag
//!   byte (1: last chunk, 0: more follow) and a chunk of a peer message.
//! ```
//!
//! Owns: the binding of a connection to a member id. The handshake hash
//! covers both sides' Noise static keys and ephemerals, so a signature over
//! it proves the holder of the member's ed25519 key took part in *this*
//! handshake: a relayed or replayed proof fails. Each role signs a
//! different label, so a proof cannot be reflected back.
//!
//! Invariants: no length read from the network is allocated before it is
//! checked against its limit; any decoding, decryption or verification
//! failure is an error for this connection only, never a panic.

use std::sync::Arc;

use ctx_core::MemberId;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use snow::StatelessTransportState;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::limits::{
    CHUNK_BYTES_MAX, FRAME_BYTES_MAX, NOISE_TAG_BYTES, PEER_MESSAGE_BYTES_MAX, PROOF_BYTES_MAX,
};

/// The Noise protocol of the peer port.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// Mixed into the handshake: a peer speaking another version fails it.
pub const PROLOGUE: &[u8] = b"ctx-node peer protocol 1";

const INITIATOR_LABEL: &[u8] = b"ctx-node/1 initiator proof";
const RESPONDER_LABEL: &[u8] = b"ctx-node/1 responder proof";

/// The version byte that starts every identity proof.
pub const PROOF_VERSION: u8 = 1;

#[derive(Debug, Error)]
pub enum SecureError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes refused (at most {FRAME_BYTES_MAX})")]
    FrameTooLarge(usize),
    #[error("message of more than {max} bytes refused")]
    MessageTooLarge { max: usize },
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    #[error("empty transport message")]
    EmptyChunk,
    #[error("identity proof: {0}")]
    Proof(String),
    #[error("peer is {found}, expected {expected}")]
    WrongPeer { expected: MemberId, found: MemberId },
}

/// Reads one frame, refusing a length above the limit before allocating.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, SecureError> {
    let len = reader.read_u32().await? as usize;
    if len > FRAME_BYTES_MAX {
        return Err(SecureError::FrameTooLarge(len));
    }
    let mut bytes = vec![0u8; len];
    reader.read_exact(&mut bytes).await?;
    Ok(bytes)
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
) -> Result<(), SecureError> {
    assert!(
        bytes.len() <= FRAME_BYTES_MAX,
        "frames are built within the limit"
    );
    let len = u32::try_from(bytes.len()).expect("bounded by FRAME_BYTES_MAX");
    writer.write_u32(len).await?;
    writer.write_all(bytes).await?;
    Ok(())
}

/// What a side proves after the Noise handshake.
#[derive(Serialize, Deserialize)]
struct Proof {
    version: u8,
    member: [u8; 32],
    signature: Vec<u8>,
    /// The rest of the hello: opaque to this module.
    hello: Vec<u8>,
}

/// An established, authenticated connection's cipher state, shared by its
/// reader and writer halves (each keeps its own nonce: TCP keeps order).
pub struct Session {
    pub peer: MemberId,
    /// The peer's hello bytes (see `peer::Hello`).
    pub hello: Vec<u8>,
    pub sender: Sender,
    pub receiver: Receiver,
}

pub struct Sender {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
}

pub struct Receiver {
    transport: Arc<StatelessTransportState>,
    nonce: u64,
    /// Plaintext of the message being reassembled.
    partial: Vec<u8>,
}

fn proof_message(label: &[u8], hash: &[u8]) -> Vec<u8> {
    [label, hash].concat()
}

/// Runs the handshake and the identity exchange. `hello` is sent with the
/// proof; `expected` (when dialling a known member) must match the peer.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &[u8; 32],
    initiator: bool,
    hello: Vec<u8>,
    expected: Option<MemberId>,
) -> Result<Session, SecureError> {
    let params = NOISE_PARAMS.parse().expect("a valid Noise pattern");
    let builder = snow::Builder::new(params);
    // A fresh Noise static key per connection: identity is the ed25519 key,
    // proven below over the handshake hash, not the Noise key.
    let keypair = builder.generate_keypair()?;
    let builder = builder
        .local_private_key(&keypair.private)?
        .prologue(PROLOGUE)?;
    let mut state = if initiator {
        builder.build_initiator()?
    } else {
        builder.build_responder()?
    };
    let mut buf = vec![0u8; FRAME_BYTES_MAX];
    let mut scratch = vec![0u8; FRAME_BYTES_MAX];
    while !state.is_handshake_finished() {
        if state.is_my_turn() {
            let len = state.write_message(&[], &mut buf)?;
            write_frame(stream, &buf[..len]).await?;
        } else {
            let frame = read_frame(stream).await?;
            state.read_message(&frame, &mut scratch)?;
        }
    }
    let hash = state.get_handshake_hash().to_vec();
    let transport = Arc::new(state.into_stateless_transport_mode()?);
    let mut sender = Sender {
        transport: Arc::clone(&transport),
        nonce: 0,
    };
    let mut receiver = Receiver {
        transport,
        nonce: 0,
        partial: Vec::new(),
    };

    let key = SigningKey::from_bytes(secret);
    let (mine, theirs) = if initiator {
        (INITIATOR_LABEL, RESPONDER_LABEL)
    } else {
        (RESPONDER_LABEL, INITIATOR_LABEL)
    };
    let proof = Proof {
        version: PROOF_VERSION,
        member: key.verifying_key().to_bytes(),
        signature: key.sign(&proof_message(mine, &hash)).to_bytes().to_vec(),
        hello,
    };
    let bytes = postcard::to_stdvec(&proof).expect("encoding into a Vec cannot fail");
    sender.send(stream, &bytes).await?;
    // Nobody is authenticated yet: the proof may take one frame, no more.
    let bytes = receiver.recv_at_most(stream, PROOF_BYTES_MAX).await?;
    let proof: Proof = postcard::from_bytes(&bytes)
        .map_err(|e| SecureError::Proof(format!("undecodable: {e}")))?;
    if proof.version != PROOF_VERSION {
        return Err(SecureError::Proof(format!(
            "unknown version {}",
            proof.version
        )));
    }
    let verifying = VerifyingKey::from_bytes(&proof.member)
        .map_err(|_| SecureError::Proof("member id is not an ed25519 key".into()))?;
    let signature = Signature::from_slice(&proof.signature)
        .map_err(|_| SecureError::Proof("malformed signature".into()))?;
    verifying
        .verify_strict(&proof_message(theirs, &hash), &signature)
        .map_err(|_| SecureError::Proof("signature does not verify".into()))?;
    let peer = MemberId(proof.member);
    if let Some(expected) = expected
        && expected != peer
    {
        return Err(SecureError::WrongPeer {
            expected,
            found: peer,
        });
    }
    Ok(Session {
        peer,
        hello: proof.hello,
        sender,
        receiver,
    })
}

impl Sender {
    /// Encrypts and sends one message, in as many frames as it takes.
    pub async fn send<W: AsyncWrite + Unpin>(
        &mut self,
        writer: &mut W,
        message: &[u8],
    ) -> Result<(), SecureError> {
        if message.len() > PEER_MESSAGE_BYTES_MAX {
            return Err(SecureError::MessageTooLarge {
                max: PEER_MESSAGE_BYTES_MAX,
            });
        }
        let mut plain = Vec::with_capacity(CHUNK_BYTES_MAX + 1);
        let mut cipher = vec![0u8; FRAME_BYTES_MAX];
        // An empty message is one empty final chunk.
        let count = message.len().div_ceil(CHUNK_BYTES_MAX).max(1);
        for index in 0..count {
            let start = index * CHUNK_BYTES_MAX;
            let end = message.len().min(start + CHUNK_BYTES_MAX);
            plain.clear();
            plain.push(u8::from(index + 1 == count));
            plain.extend_from_slice(&message[start..end]);
            let len = self
                .transport
                .write_message(self.nonce, &plain, &mut cipher)?;
            debug_assert_eq!(len, plain.len() + NOISE_TAG_BYTES);
            self.nonce += 1;
            write_frame(writer, &cipher[..len]).await?;
        }
        writer.flush().await?;
        Ok(())
    }
}

impl Receiver {
    /// Receives and decrypts one whole message.
    pub async fn recv<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
    ) -> Result<Vec<u8>, SecureError> {
        self.recv_at_most(reader, PEER_MESSAGE_BYTES_MAX).await
    }

    /// Receives one whole message of at most `max` bytes.
    async fn recv_at_most<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        max: usize,
    ) -> Result<Vec<u8>, SecureError> {
        let mut plain = vec![0u8; FRAME_BYTES_MAX];
        loop {
            let frame = read_frame(reader).await?;
            let len = self
                .transport
                .read_message(self.nonce, &frame, &mut plain)?;
            self.nonce += 1;
            let (&last, chunk) = plain[..len].split_first().ok_or(SecureError::EmptyChunk)?;
            if self.partial.len() + chunk.len() > max {
                return Err(SecureError::MessageTooLarge { max });
            }
            self.partial.extend_from_slice(chunk);
            if last != 0 {
                return Ok(std::mem::take(&mut self.partial));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair(
        a: [u8; 32],
        b: [u8; 32],
        expect_b: Option<MemberId>,
    ) -> (Result<Session, SecureError>, Result<Session, SecureError>) {
        let (mut x, mut y) = tokio::io::duplex(1 << 20);
        tokio::join!(
            handshake(&mut x, &a, true, b"hi-a".to_vec(), expect_b),
            handshake(&mut y, &b, false, b"hi-b".to_vec(), None)
        )
    }

    #[tokio::test]
    async fn handshake_binds_identities_and_carries_big_messages() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let b_id = ctx_core::Node::member_id_of(&b);
        let (mut x, mut y) = tokio::io::duplex(1 << 20);
        let (sa, sb) = tokio::join!(
            handshake(&mut x, &a, true, b"hi-a".to_vec(), Some(b_id)),
            handshake(&mut y, &b, false, b"hi-b".to_vec(), None)
        );
        let (mut sa, mut sb) = (sa.expect("a"), sb.expect("b"));
        assert_eq!(sa.peer, b_id);
        assert_eq!(sb.peer, ctx_core::Node::member_id_of(&a));
        assert_eq!(sb.hello, b"hi-a");
        let big: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let (sent, got) = tokio::join!(sa.sender.send(&mut x, &big), sb.receiver.recv(&mut y));
        sent.expect("send");
        assert_eq!(got.expect("recv"), big);
        let (sent, got) = tokio::join!(sb.sender.send(&mut y, &[]), sa.receiver.recv(&mut x));
        sent.expect("send");
        assert_eq!(got.expect("recv"), Vec::<u8>::new());
    }

    #[tokio::test]
    async fn wrong_expected_peer_fails() {
        let (a, _) = pair([1; 32], [2; 32], Some(MemberId([0; 32]))).await;
        assert!(matches!(a, Err(SecureError::WrongPeer { .. })));
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_before_allocating() {
        let (mut x, mut y) = tokio::io::duplex(64);
        x.write_u32(u32::MAX).await.expect("write");
        assert!(matches!(
            read_frame(&mut y).await,
            Err(SecureError::FrameTooLarge(_))
        ));
    }

    #[tokio::test]
    async fn garbage_fails_the_handshake() {
        let (mut x, mut y) = tokio::io::duplex(1 << 16);
        let garbage = async {
            x.write_all(&[0, 0, 0, 5, 1, 2, 3, 4, 5])
                .await
                .expect("write");
            drop(x);
        };
        let (_, result) = tokio::join!(
            garbage,
            handshake(&mut y, &[3; 32], false, Vec::new(), None)
        );
        assert!(result.is_err());
    }
}
