//! Typed identifiers. Every 32-byte value that crosses an API has a type that
//! says what it is: a context, a member, a transaction, a state key.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id32 {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub const fn from_bytes(bytes: [u8; 32]) -> Self {
                Self(bytes)
            }

            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lower-case hex of all 32 bytes.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first `n` hex digits, for logs and reports.
            pub fn short(&self) -> String {
                let mut s = self.to_hex();
                s.truncate(8);
                s
            }

            /// Parses 64 hex digits.
            pub fn from_hex(text: &str) -> Result<Self, hex::FromHexError> {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(text, &mut bytes)?;
                Ok(Self(bytes))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

id32!(
    /// A context: drawn from the creating node's seeded RNG.
    ContextId
);
id32!(
    /// A member: the ed25519 public key of a node.
    MemberId
);
id32!(
    /// A transaction: the blake3 hash of its canonical (postcard) encoding,
    /// signature excluded.
    TxId
);
id32!(
    /// A key of a context's key-value state.
    Key
);
id32!(
    /// A hash of content: an application blob, a state root.
    Hash
);

impl Key {
    /// A key from at most 32 bytes, zero-padded on the right: the layout the
    /// bundled apps use for their keys.
    pub fn padded(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > 32 {
            return None;
        }
        let mut key = [0u8; 32];
        key[..bytes.len()].copy_from_slice(bytes);
        Some(Self(key))
    }
}
