//! Transactions: what one member asks every member to apply.
//!
//! A transaction's body names its context, its author, its causal parents (the
//! author's heads when it was made) and its height (one more than the highest
//! parent: the Lamport height that orders the DAG). Its id is the blake3 hash
//! of the body's canonical postcard encoding; the author signs the id.
//!
//! Invariants owned here, checked by [`Tx::from_signed`] before anything else
//! sees a transaction:
//! - the id is the hash of the body, and the signature is the author's over it;
//! - the parents are sorted by id, distinct and at most [`TX_PARENTS_MAX`];
//! - a `Create` has no parents and height 0; every other kind has parents,
//!   and its height is one more than the highest parent's. Each parent names
//!   its height beside its id (that it is the parent's true height is
//!   checked where the parent is held, in `replica`), so that a member can
//!   check a child's height, and place a parent it no longer holds (one in
//!   its stable prefix, `crate::stability`), from the child alone;
//! - method names and inputs are within their limits.

use std::fmt;
use std::sync::Arc;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::ids::{ContextId, Hash, MemberId, TxId};
use crate::limits::{INPUT_BYTES_MAX, METHOD_NAME_BYTES_MAX, TX_PARENTS_MAX};
use crate::verify::{SignatureCheck, Verifier};

/// The format version every transaction body carries. Version 2: a
/// `Create` names the runtime version its context runs. Version 3: each
/// parent names its height.
pub const TX_FORMAT_VERSION: u8 = 3;

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxKind {
    /// The genesis of a context: its author is the first member, the
    /// application is the blob with this hash and size, and every call runs
    /// as runtime version `runtime_version` defines (the fuel schedule and
    /// the instrumentation: `crate::runtime::RUNTIME_VERSION`).
    Create {
        app_hash: Hash,
        app_bytes: u64,
        runtime_version: u32,
    },
    /// A member invites `member`, who may then catch up and join.
    Invite { member: MemberId },
    /// The invited author, caught up, becomes a member.
    Join,
    /// The author stops being a member.
    Leave,
    /// An application call: every member runs `method` with `input`.
    Call { method: String, input: Vec<u8> },
}

impl TxKind {
    /// A short name for reports.
    pub fn name(&self) -> &str {
        match self {
            TxKind::Create { .. } => "create",
            TxKind::Invite { .. } => "invite",
            TxKind::Join => "join",
            TxKind::Leave => "leave",
            TxKind::Call { method, .. } => method,
        }
    }
}

/// The signed part of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxBody {
    pub version: u8,
    pub context: ContextId,
    pub author: MemberId,
    pub height: u64,
    pub parents: Vec<Parent>,
    pub kind: TxKind,
}

/// One causal parent of a transaction: its id and its height.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Parent {
    pub id: TxId,
    pub height: u64,
}

impl Parent {
    /// `tx` as a parent.
    pub fn of(tx: &Tx) -> Parent {
        Parent {
            id: tx.id(),
            height: tx.height(),
        }
    }
}

impl TxBody {
    /// The id: blake3 of the canonical encoding.
    pub fn id(&self) -> TxId {
        let hasher = postcard::serialize_with_flavor(self, HashingFlavor::default())
            .expect("hashing a TxBody cannot fail");
        TxId(*hasher.finalize().as_bytes())
    }
}

/// A postcard output that hashes the encoding as it is made, through a small
/// buffer: the id costs no allocation, and no byte is pushed onto a growing
/// `Vec` (the canonical encoding is the same bytes `postcard::to_stdvec`
/// makes; a test checks it).
struct HashingFlavor {
    hasher: blake3::Hasher,
    buffer: [u8; 256],
    filled: usize,
}

impl Default for HashingFlavor {
    fn default() -> Self {
        Self {
            hasher: blake3::Hasher::new(),
            buffer: [0; 256],
            filled: 0,
        }
    }
}

impl HashingFlavor {
    fn flush(&mut self) {
        self.hasher.update(&self.buffer[..self.filled]);
        self.filled = 0;
    }
}

impl postcard::ser_flavors::Flavor for HashingFlavor {
    type Output = blake3::Hasher;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        if self.filled == self.buffer.len() {
            self.flush();
        }
        self.buffer[self.filled] = byte;
        self.filled += 1;
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if bytes.len() > self.buffer.len() - self.filled {
            self.flush();
            self.hasher.update(bytes);
        } else {
            self.buffer[self.filled..self.filled + bytes.len()].copy_from_slice(bytes);
            self.filled += bytes.len();
        }
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<blake3::Hasher> {
        self.flush();
        Ok(self.hasher)
    }
}

/// An ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(&self.0[..4]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl serde::de::Visitor<'_> for BytesVisitor {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Signature, E> {
                let array: [u8; 64] = bytes
                    .try_into()
                    .map_err(|_| E::invalid_length(bytes.len(), &self))?;
                Ok(Signature(array))
            }
        }
        deserializer.deserialize_bytes(BytesVisitor)
    }
}

/// A transaction as it travels and is stored: body and signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTx {
    pub body: TxBody,
    pub signature: Signature,
}

/// Why a transaction was refused before it reached any DAG. Every member
/// refuses the same bytes for the same reason.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TxError {
    #[error(
        "transaction format version {0} is not supported (this build reads {TX_FORMAT_VERSION})"
    )]
    Version(u8),
    #[error("signature does not verify for author {0}")]
    BadSignature(MemberId),
    #[error("parents must be sorted, distinct and at most {TX_PARENTS_MAX}")]
    BadParents,
    #[error(
        "a create must have no parents and height 0; any other kind needs parents and height >= 1"
    )]
    BadGenesisShape,
    #[error("height {found} is not one more than the highest parent's ({expected})")]
    BadHeight { expected: u64, found: u64 },
    #[error("method name of {0} bytes exceeds {METHOD_NAME_BYTES_MAX}")]
    MethodTooLong(usize),
    #[error("input of {0} bytes exceeds {INPUT_BYTES_MAX}")]
    InputTooLarge(usize),
    #[error("transaction belongs to context {found}, not {expected}")]
    WrongContext {
        expected: ContextId,
        found: ContextId,
    },
}

/// A transaction whose id is computed and whose structure and signature were
/// checked. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tx {
    inner: Arc<TxInner>,
}

#[derive(Debug, PartialEq, Eq)]
struct TxInner {
    id: TxId,
    signed: SignedTx,
}

impl Tx {
    /// Signs a new transaction. Panics if the body is structurally invalid: the
    /// engine only builds valid bodies, so that would be a bug here.
    pub fn sign(body: TxBody, key: &SigningKey) -> Tx {
        assert_eq!(
            body.author.0,
            key.verifying_key().to_bytes(),
            "author must be the signer"
        );
        check_structure(&body).expect("the engine builds structurally valid transactions");
        let id = body.id();
        let signature = Signature(key.sign(id.as_bytes()).to_bytes());
        Tx {
            inner: Arc::new(TxInner {
                id,
                signed: SignedTx { body, signature },
            }),
        }
    }

    /// Checks a received transaction: structure, then signature.
    pub fn from_signed(signed: SignedTx, verifier: &dyn Verifier) -> Result<Tx, TxError> {
        let tx = Tx::from_signed_unverified(signed)?;
        let check = tx.signature_check();
        if !verifier.verify(check) {
            return Err(TxError::BadSignature(tx.author()));
        }
        Ok(tx)
    }

    /// Checks structure only. The caller verifies the signature (for example
    /// in a batch, with [`Tx::signature_check`]) or trusts the source, as a
    /// restart does with the records it persisted itself.
    pub fn from_signed_unverified(signed: SignedTx) -> Result<Tx, TxError> {
        check_structure(&signed.body)?;
        let id = signed.body.id();
        Ok(Tx {
            inner: Arc::new(TxInner { id, signed }),
        })
    }

    /// Checks every transaction of a batch, verifying the signatures together.
    /// Returns the valid ones in their order and the first error, if any.
    pub fn from_signed_batch(
        batch: Vec<SignedTx>,
        verifier: &dyn Verifier,
    ) -> (Vec<Tx>, Option<TxError>) {
        let mut first_error = None;
        let mut txs = Vec::with_capacity(batch.len());
        for signed in batch {
            match Tx::from_signed_unverified(signed) {
                Ok(tx) => txs.push(tx),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        let checks: Vec<SignatureCheck<'_>> = txs.iter().map(Tx::signature_check).collect();
        if verifier.verify_all(&checks) {
            return (txs, first_error);
        }
        // Some signature failed: find it (them) one by one.
        let mut valid = Vec::with_capacity(txs.len());
        for tx in txs {
            if verifier.verify(tx.signature_check()) {
                valid.push(tx);
            } else {
                first_error.get_or_insert(TxError::BadSignature(tx.author()));
            }
        }
        (valid, first_error)
    }

    pub fn signature_check(&self) -> SignatureCheck<'_> {
        SignatureCheck {
            author: &self.inner.signed.body.author,
            message: self.inner.id.as_bytes(),
            signature: &self.inner.signed.signature,
        }
    }

    pub fn id(&self) -> TxId {
        self.inner.id
    }

    pub fn body(&self) -> &TxBody {
        &self.inner.signed.body
    }

    pub fn signed(&self) -> &SignedTx {
        &self.inner.signed
    }

    pub fn author(&self) -> MemberId {
        self.inner.signed.body.author
    }

    pub fn height(&self) -> u64 {
        self.inner.signed.body.height
    }

    pub fn parents(&self) -> &[Parent] {
        &self.inner.signed.body.parents
    }

    /// The parents' ids.
    pub fn parent_ids(&self) -> impl Iterator<Item = &TxId> + '_ {
        self.parents().iter().map(|parent| &parent.id)
    }

    pub fn kind(&self) -> &TxKind {
        &self.inner.signed.body.kind
    }

    pub fn context(&self) -> ContextId {
        self.inner.signed.body.context
    }

    /// The position of this transaction in the canonical order.
    pub fn order_key(&self) -> OrderKey {
        OrderKey {
            height: self.height(),
            id: self.id(),
        }
    }
}

/// The canonical order of a context's DAG is the order of these keys: by
/// height, then by id. Parents have lower heights than their children, so
/// the order is a linear extension of the DAG.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderKey {
    pub height: u64,
    pub id: TxId,
}

/// The structural rules every transaction body must meet (module docs).
pub fn check_structure(body: &TxBody) -> Result<(), TxError> {
    if body.version != TX_FORMAT_VERSION {
        return Err(TxError::Version(body.version));
    }
    let parents = &body.parents;
    if parents.len() > TX_PARENTS_MAX || parents.windows(2).any(|w| w[0].id >= w[1].id) {
        return Err(TxError::BadParents);
    }
    let is_create = matches!(body.kind, TxKind::Create { .. });
    let genesis_shape = parents.is_empty() && body.height == 0;
    let child_shape = !parents.is_empty() && body.height >= 1;
    if (is_create && !genesis_shape) || (!is_create && !child_shape) {
        return Err(TxError::BadGenesisShape);
    }
    if let Some(highest) = parents.iter().map(|parent| parent.height).max() {
        let expected = highest.saturating_add(1);
        if body.height != expected {
            return Err(TxError::BadHeight {
                expected,
                found: body.height,
            });
        }
    }
    if let TxKind::Call { method, input } = &body.kind {
        if method.len() > METHOD_NAME_BYTES_MAX {
            return Err(TxError::MethodTooLong(method.len()));
        }
        if input.len() > INPUT_BYTES_MAX {
            return Err(TxError::InputTooLarge(input.len()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Ed25519Verifier;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn body(key: &SigningKey, kind: TxKind, parents: Vec<Parent>, height: u64) -> TxBody {
        TxBody {
            version: TX_FORMAT_VERSION,
            context: ContextId([7; 32]),
            author: MemberId(key.verifying_key().to_bytes()),
            height,
            parents,
            kind,
        }
    }

    #[test]
    fn the_id_hashes_the_canonical_encoding() {
        let parents: Vec<Parent> = (0..9)
            .map(|i| Parent {
                id: TxId([i; 32]),
                height: 4 - u64::from(i % 4),
            })
            .collect();
        for input_len in [0, 1, 100, 255, 256, 257, 1000, 70_000] {
            let kind = TxKind::Call {
                method: "set".into(),
                input: (0..input_len).map(|i| i as u8).collect(),
            };
            let body = body(&key(1), kind, parents.clone(), 5);
            let bytes = postcard::to_stdvec(&body).expect("encodes");
            assert_eq!(
                body.id(),
                TxId(*blake3::hash(&bytes).as_bytes()),
                "input {input_len}"
            );
        }
    }

    fn genesis(key: &SigningKey) -> TxBody {
        let kind = TxKind::Create {
            runtime_version: crate::runtime::RUNTIME_VERSION,
            app_hash: Hash([1; 32]),
            app_bytes: 10,
        };
        body(key, kind, vec![], 0)
    }

    #[test]
    fn signed_transaction_round_trips_and_verifies() {
        let k = key(1);
        let tx = Tx::sign(genesis(&k), &k);
        let bytes = postcard::to_stdvec(tx.signed()).unwrap();
        let decoded: SignedTx = postcard::from_bytes(&bytes).unwrap();
        let again = Tx::from_signed(decoded, &Ed25519Verifier).unwrap();
        assert_eq!(again.id(), tx.id());
    }

    #[test]
    fn a_changed_body_or_foreign_signature_is_refused() {
        let k = key(1);
        let tx = Tx::sign(genesis(&k), &k);
        let mut forged = tx.signed().clone();
        forged.body.kind = TxKind::Create {
            runtime_version: crate::runtime::RUNTIME_VERSION,
            app_hash: Hash([2; 32]),
            app_bytes: 10,
        };
        assert_eq!(
            Tx::from_signed(forged, &Ed25519Verifier),
            Err(TxError::BadSignature(tx.author()))
        );
        let mut stolen = Tx::sign(genesis(&key(2)), &key(2)).signed().clone();
        stolen.body.author = tx.author();
        assert!(matches!(
            Tx::from_signed(stolen, &Ed25519Verifier),
            Err(TxError::BadSignature(_))
        ));
    }

    #[test]
    fn structure_is_checked() {
        let k = key(1);
        let p = |b: u8| Parent {
            id: TxId([b; 32]),
            height: 0,
        };
        let at = |b: u8, height: u64| Parent {
            id: TxId([b; 32]),
            height,
        };
        let cases = [
            // One more than the highest claimed parent height, exactly.
            (
                body(&k, TxKind::Join, vec![at(1, 3), at(2, 5)], 5),
                TxError::BadHeight {
                    expected: 6,
                    found: 5,
                },
            ),
            (
                body(&k, TxKind::Join, vec![at(1, 3)], 7),
                TxError::BadHeight {
                    expected: 4,
                    found: 7,
                },
            ),
            (body(&k, TxKind::Join, vec![], 0), TxError::BadGenesisShape),
            (
                body(&k, TxKind::Join, vec![p(2), p(1)], 1),
                TxError::BadParents,
            ),
            (
                body(&k, TxKind::Join, vec![p(1), p(1)], 1),
                TxError::BadParents,
            ),
            (
                body(
                    &k,
                    TxKind::Create {
                        runtime_version: crate::runtime::RUNTIME_VERSION,
                        app_hash: Hash([0; 32]),
                        app_bytes: 1,
                    },
                    vec![p(1)],
                    1,
                ),
                TxError::BadGenesisShape,
            ),
            (
                body(
                    &k,
                    TxKind::Call {
                        method: "x".repeat(METHOD_NAME_BYTES_MAX + 1),
                        input: vec![],
                    },
                    vec![p(1)],
                    1,
                ),
                TxError::MethodTooLong(METHOD_NAME_BYTES_MAX + 1),
            ),
        ];
        for (body, expected) in cases {
            let signature = Signature(k.sign(body.id().as_bytes()).to_bytes());
            let signed = SignedTx { body, signature };
            assert_eq!(Tx::from_signed(signed, &Ed25519Verifier), Err(expected));
        }
    }

    #[test]
    fn batch_verification_finds_the_bad_signature() {
        let keys: Vec<SigningKey> = (1..=4).map(key).collect();
        let mut batch: Vec<SignedTx> = keys
            .iter()
            .map(|k| Tx::sign(genesis(k), k).signed().clone())
            .collect();
        batch[2].signature.0[0] ^= 1;
        let (valid, error) = Tx::from_signed_batch(batch, &Ed25519Verifier);
        assert_eq!(valid.len(), 3);
        assert!(matches!(error, Some(TxError::BadSignature(_))));
    }
}
