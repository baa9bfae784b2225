//! The data directory and the node's identity.
//!
//! Owns the layout of a data directory:
//!
//! - `node.key`: the ed25519 secret key, 64 hex digits, mode 0600. Its public
//!   key is the node's member id. Written once by `ctx-node init`; never
//!   overwritten.
//! - `node.redb`: the store (see `store`).
//! - `node.store`: the marker that this identity has a store, and which
//!   (see `store`): written by the first start, never by `init`.
//! - `listen.addr`, `admin.addr`: the addresses a running node bound, one
//!   line each, written after binding (so a script that asked for port 0
//!   learns the port).
//!
//! Invariant: the secret never leaves this module except into the engine
//! and the handshake signer; it is never logged or sent.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ctx_core::{MemberId, Node};
use thiserror::Error;

pub const KEY_FILE: &str = "node.key";
pub const DB_FILE: &str = "node.redb";
pub const LISTEN_ADDR_FILE: &str = "listen.addr";
pub const ADMIN_ADDR_FILE: &str = "admin.addr";

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("{0} already holds a node key ({KEY_FILE}); refusing to overwrite it")]
    Exists(PathBuf),
    #[error("{0} holds no node key: run `ctx-node init --data-dir {0}` first")]
    Missing(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a node key (expected 64 hex digits)")]
    Malformed(PathBuf),
    #[error("cannot draw randomness from the operating system: {0}")]
    Random(String),
}

/// 32 bytes from the operating system's generator.
pub fn random_bytes() -> Result<[u8; 32], IdentityError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| IdentityError::Random(e.to_string()))?;
    Ok(bytes)
}

/// A node's identity: its ed25519 secret and the member id it implies.
#[derive(Clone)]
pub struct Identity {
    secret: [u8; 32],
    member: MemberId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({:?})", self.member)
    }
}

impl Identity {
    pub fn from_secret(secret: [u8; 32]) -> Identity {
        Identity {
            secret,
            member: Node::member_id_of(&secret),
        }
    }

    pub fn member(&self) -> MemberId {
        self.member
    }

    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// Creates `dir` if needed and a new key in it.
    pub fn init(dir: &Path) -> Result<Identity, IdentityError> {
        let io = |source| IdentityError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(KEY_FILE);
        let secret = random_bytes()?;
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = match options.open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(IdentityError::Exists(dir.to_path_buf()));
            }
            Err(e) => return Err(io(e)),
        };
        let write = |file: &mut fs::File| {
            file.write_all(format!("{}\n", hex::encode(secret)).as_bytes())?;
            file.sync_all()
        };
        write(&mut file).map_err(|source| IdentityError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Identity::from_secret(secret))
    }

    /// Reads the key of an initialized data directory.
    pub fn load(dir: &Path) -> Result<Identity, IdentityError> {
        let path = dir.join(KEY_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::Missing(dir.to_path_buf()));
            }
            Err(source) => return Err(IdentityError::Io { path, source }),
        };
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret)
            .map_err(|_| IdentityError::Malformed(path.clone()))?;
        Ok(Identity::from_secret(secret))
    }
}

/// Writes one line to a file of the data directory, atomically (a reader
/// never sees a half-written address).
pub fn write_line(dir: &Path, name: &str, line: &str) -> Result<(), IdentityError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    fs::write(&tmp, format!("{line}\n")).map_err(io)?;
    fs::rename(&tmp, &path).map_err(io)
}

/// The (peer, admin) addresses a running node wrote into `dir` at start,
/// once both are there. Nothing to read yet is `None`.
pub fn bound_addresses(dir: &Path) -> Option<(String, String)> {
    let read = |name| fs::read_to_string(dir.join(name)).ok();
    let listen = read(LISTEN_ADDR_FILE)?;
    let admin = read(ADMIN_ADDR_FILE)?;
    Some((listen.trim().to_owned(), admin.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_load_and_never_overwrite() {
        let dir = std::env::temp_dir().join(format!("ctx-node-id-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let made = Identity::init(&dir).expect("init");
        let loaded = Identity::load(&dir).expect("load");
        assert_eq!(made.member(), loaded.member());
        assert!(matches!(
            Identity::init(&dir),
            Err(IdentityError::Exists(_))
        ));
        fs::write(dir.join(KEY_FILE), "zz").expect("write");
        assert!(matches!(
            Identity::load(&dir),
            Err(IdentityError::Malformed(_))
        ));
        let _ = fs::remove_dir_all(&dir);
        assert!(matches!(
            Identity::load(&dir),
            Err(IdentityError::Missing(_))
        ));
    }
}
