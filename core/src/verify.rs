//! Signature checks, injected by the driver.
//!
//! Verifying an ed25519 signature is pure and costly. The engine asks a
//! [`Verifier`] instead of calling ed25519 directly, so that the simulator can
//! check each (transaction, signature) pair once per run rather than once per
//! member, while the real node checks every one.

use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};

use crate::ids::{MemberId, TxId};
use crate::tx::Signature;

/// One signature to check: `author` signed the 32 bytes of `id`.
#[derive(Clone, Copy, Debug)]
pub struct SignatureCheck<'a> {
    pub author: &'a MemberId,
    pub id: &'a TxId,
    pub signature: &'a Signature,
}

/// A pure signature check. Implementations must answer the same for the same
/// input, always: the engine's acceptance of a transaction depends on it.
pub trait Verifier: Send + Sync {
    /// Whether `check.author` signed `check.id`.
    fn verify(&self, check: SignatureCheck<'_>) -> bool;

    /// Whether every check holds. The default checks them one by one; a
    /// batched implementation may be faster but must agree with it.
    fn verify_all(&self, checks: &[SignatureCheck<'_>]) -> bool {
        checks.iter().all(|check| self.verify(*check))
    }
}

/// Real ed25519 verification (strict: no malleable signatures, no small-order
/// keys), batched where there is more than one signature.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ed25519Verifier;

impl Verifier for Ed25519Verifier {
    fn verify(&self, check: SignatureCheck<'_>) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(check.author.as_bytes()) else {
            return false;
        };
        let signature = DalekSignature::from_bytes(&check.signature.0);
        key.verify_strict(check.id.as_bytes(), &signature).is_ok()
    }

    fn verify_all(&self, checks: &[SignatureCheck<'_>]) -> bool {
        if checks.len() < 2 {
            return checks.iter().all(|check| self.verify(*check));
        }
        let mut keys = Vec::with_capacity(checks.len());
        for check in checks {
            let Ok(key) = VerifyingKey::from_bytes(check.author.as_bytes()) else {
                return false;
            };
            // Batch verification is not strict about small-order keys, so
            // refuse those here to agree with `verify`.
            if key.is_weak() {
                return false;
            }
            keys.push(key);
        }
        let messages: Vec<&[u8]> = checks.iter().map(|c| c.id.as_bytes().as_slice()).collect();
        let signatures: Vec<DalekSignature> = checks
            .iter()
            .map(|c| DalekSignature::from_bytes(&c.signature.0))
            .collect();
        ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
    }
}
