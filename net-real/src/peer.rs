//! What peers say to each other inside an authenticated connection: the
//! hello (where to dial the sender), address-book gossip, and engine
//! messages (opaque bytes for `Node::handle_message`).
//!
//! ```text
//! message = PEER_VERSION ++ kind ++ body
//!   kind 0: Engine, body = the engine's bytes, untouched
//!   kind 1: Peers,  body = postcard Vec<(member id, address string)>
//! hello   = postcard Hello (sent inside the identity proof)
//! ```
//!
//! Address discovery: a node learns a member's address from a connection it
//! dialled (the address it dialled), from the member's own hello (its
//! advertised address, or the connection's source IP with its listen port),
//! and from gossip. Gossip only fills in members with no known address, in
//! memory, and an address is only a hint: whoever answers there must still
//! prove the member's identity in the handshake, so a false entry costs a
//! failed dial, after which it is forgotten. What a node stores and gossips
//! on is decided in `driver` (addresses a connection proved, of members its
//! contexts name).

use std::net::{IpAddr, SocketAddr};

use ctx_core::MemberId;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::limits::PEERS_MAX;

/// The version byte of every peer message.
pub const PEER_VERSION: u8 = 1;

const KIND_ENGINE: u8 = 0;
const KIND_PEERS: u8 = 1;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PeerError {
    #[error("empty peer message")]
    Empty,
    #[error("unknown peer message version {0}")]
    Version(u8),
    #[error("unknown peer message kind {0}")]
    Kind(u8),
    #[error("undecodable {0}")]
    Body(&'static str),
    #[error("more than {PEERS_MAX} address-book entries")]
    TooManyPeers,
}

/// Sent by each side inside its identity proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The port the sender accepts peers on.
    pub listen_port: u16,
    /// The address the sender wants to be dialled at, when its listen address
    /// is not what others should use (a wildcard bind, NAT).
    pub advertise: Option<String>,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("encoding into a Vec cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Hello, PeerError> {
        postcard::from_bytes(bytes).map_err(|_| PeerError::Body("hello"))
    }

    /// Where to dial the sender of this hello, seen from `source` (the
    /// connection's remote address).
    pub fn dial_address(&self, source: IpAddr) -> SocketAddr {
        self.advertise
            .as_deref()
            .and_then(|a| a.parse::<SocketAddr>().ok())
            .filter(|a| !a.ip().is_unspecified() && a.port() != 0)
            .unwrap_or(SocketAddr::new(source, self.listen_port))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMessage {
    Engine(Vec<u8>),
    Peers(Vec<(MemberId, SocketAddr)>),
}

impl PeerMessage {
    pub fn encode_engine(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len() + 2);
        out.push(PEER_VERSION);
        out.push(KIND_ENGINE);
        out.extend_from_slice(bytes);
        out
    }

    pub fn encode_peers(peers: &[(MemberId, SocketAddr)]) -> Vec<u8> {
        let entries: Vec<([u8; 32], String)> = peers
            .iter()
            .take(PEERS_MAX)
            .map(|(m, a)| (m.0, a.to_string()))
            .collect();
        let mut out = vec![PEER_VERSION, KIND_PEERS];
        out.extend(postcard::to_stdvec(&entries).expect("encoding into a Vec cannot fail"));
        out
    }

    /// Decodes a peer message; entries with unparsable addresses are dropped.
    pub fn decode(bytes: &[u8]) -> Result<PeerMessage, PeerError> {
        let (&version, rest) = bytes.split_first().ok_or(PeerError::Empty)?;
        if version != PEER_VERSION {
            return Err(PeerError::Version(version));
        }
        let (&kind, body) = rest.split_first().ok_or(PeerError::Empty)?;
        match kind {
            KIND_ENGINE => Ok(PeerMessage::Engine(body.to_vec())),
            KIND_PEERS => {
                let entries: Vec<([u8; 32], String)> =
                    postcard::from_bytes(body).map_err(|_| PeerError::Body("address book"))?;
                if entries.len() > PEERS_MAX {
                    return Err(PeerError::TooManyPeers);
                }
                Ok(PeerMessage::Peers(
                    entries
                        .into_iter()
                        .filter_map(|(m, a)| Some((MemberId(m), a.parse().ok()?)))
                        .collect(),
                ))
            }
            other => Err(PeerError::Kind(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refusals() {
        let addr: SocketAddr = "10.0.0.1:7700".parse().expect("addr");
        let peers = vec![(MemberId([4; 32]), addr)];
        assert_eq!(
            PeerMessage::decode(&PeerMessage::encode_peers(&peers)),
            Ok(PeerMessage::Peers(peers))
        );
        assert_eq!(
            PeerMessage::decode(&PeerMessage::encode_engine(b"xyz")),
            Ok(PeerMessage::Engine(b"xyz".to_vec()))
        );
        assert_eq!(PeerMessage::decode(&[]), Err(PeerError::Empty));
        assert_eq!(PeerMessage::decode(&[9, 0]), Err(PeerError::Version(9)));
        assert_eq!(PeerMessage::decode(&[1, 7]), Err(PeerError::Kind(7)));
        assert!(PeerMessage::decode(&[1, 1, 0xff, 0xff]).is_err());
        let hello = Hello {
            listen_port: 9,
            advertise: None,
        };
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello.clone()));
        let source: IpAddr = "10.0.0.2".parse().expect("ip");
        assert_eq!(hello.dial_address(source), SocketAddr::new(source, 9));
        let wild = Hello {
            listen_port: 9,
            advertise: Some("0.0.0.0:9".into()),
        };
        assert_eq!(wild.dial_address(source), SocketAddr::new(source, 9));
    }
}
