//! Signature checks, injected by the driver.
//!
//! Verifying an ed25519 signature is pure and costly. The engine asks a
//! [`Verifier`] instead of calling ed25519 directly, so that the simulator can
//! check each (transaction, signature) pair once per run rather than once per
//! member, while the real node checks every one.
//!
//! # One rule on every path
//!
//! Whether a transaction is accepted must be a function of its bytes alone:
//! a member that accepts a transaction another member refuses has split the
//! context, and a dishonest author would craft one on purpose. So a
//! signature is valid or not by one rule, whichever path checks it: one by
//! one (a push), in a batch (catchup and fetched batches), or memoized (the
//! simulator). The rule is **ZIP-215**, as `ed25519-zebra` implements it:
//!
//! - the key `A` and the point `R` are any encodings of curve points, small
//!   order and non-canonical encodings included;
//! - `s` must be canonical (below the group order);
//! - the equation is the cofactored one, `[8][s]B = [8]R + [8][k]A` with
//!   `k = SHA-512(R || A || message)`.
//!
//! Because the single equation is cofactored, the batch equation (a random
//! linear combination of the single ones, also multiplied by 8) holds for
//! every batch of valid signatures and fails, except with probability
//! about 2^-128, for any batch holding an invalid one: torsion components in
//! `R` or `A` cancel in both. The previous rule, ed25519-dalek's strict
//! single check beside its batch check, disagreed exactly there: a signature
//! whose `R` carries a torsion component fails the strict (cofactorless)
//! equation yet passes the batch one with probability 1/8, so one author
//! could make a transaction that catchup accepts and a push refuses.
//!
//! The batch's 128-bit coefficients must be unpredictable to whoever made
//! the signatures, or errors could be made to cancel. The engine has no
//! ambient randomness, so they are drawn from ChaCha20 seeded with a hash of
//! the whole batch (every key, signature and message): changing any
//! signature changes every coefficient, so cancelling errors means finding
//! a hash input that makes a chosen 128-bit linear relation hold.
//! (`ed25519-zebra` groups the batch by key in a hash map whose iteration
//! order may differ between processes, which changes only which coefficient
//! meets which signature: a batch of valid signatures is accepted for every
//! assignment, an invalid one refused for all but a 2^-128 share of them.)
//!
//! What ZIP-215 accepts that strict rules refuse is harmless here: only the
//! holder of a key's secret can make a valid signature for it, except for a
//! small-order key, for which anyone can. A member id is the key its holder
//! chose; `Node::invite` refuses a small-order id, so an honest member never
//! brings one into a context.

use ed25519_zebra::{Signature as ZebraSignature, VerificationKey, VerificationKeyBytes};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::ids::MemberId;
use crate::tx::Signature;

/// One signature to check: `author` signed the 32 bytes of `message`, a
/// digest: a transaction's id, or an announcement's digest (whose hash
/// domain keeps it apart from every transaction id, see
/// `crate::stability::Announcement::digest`).
#[derive(Clone, Copy, Debug)]
pub struct SignatureCheck<'a> {
    pub author: &'a MemberId,
    pub message: &'a [u8; 32],
    pub signature: &'a Signature,
}

/// A pure signature check. Implementations must answer the same for the same
/// input, always: the engine's acceptance of a transaction depends on it.
pub trait Verifier: Send + Sync {
    /// Whether `check.author` signed `check.message`.
    fn verify(&self, check: SignatureCheck<'_>) -> bool;

    /// Whether every check holds. The default checks them one by one; a
    /// batched implementation may be faster but must agree with it.
    fn verify_all(&self, checks: &[SignatureCheck<'_>]) -> bool {
        checks.iter().all(|check| self.verify(*check))
    }
}

/// Real ed25519 verification under ZIP-215 (see the module doc), batched
/// where there is more than one signature.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ed25519Verifier;

impl Verifier for Ed25519Verifier {
    fn verify(&self, check: SignatureCheck<'_>) -> bool {
        let Ok(key) = VerificationKey::try_from(check.author.0) else {
            return false;
        };
        let signature = ZebraSignature::from_bytes(&check.signature.0);
        key.verify(&signature, check.message).is_ok()
    }

    fn verify_all(&self, checks: &[SignatureCheck<'_>]) -> bool {
        if checks.len() < 2 {
            return checks.iter().all(|check| self.verify(*check));
        }
        let mut batch = ed25519_zebra::batch::Verifier::new();
        let mut seed = blake3::Hasher::new_derive_key("ctx 2026 ed25519 batch coefficients");
        for check in checks {
            seed.update(&check.author.0);
            seed.update(&check.signature.0);
            seed.update(check.message);
            batch.queue((
                VerificationKeyBytes::from(check.author.0),
                ZebraSignature::from_bytes(&check.signature.0),
                check.message,
            ));
        }
        let coefficients = ChaCha20Rng::from_seed(*seed.finalize().as_bytes());
        batch.verify(coefficients).is_ok()
    }
}

/// Whether `member` is a key of small order, for which anyone can make a
/// signature that ZIP-215 accepts (or not a curve point at all).
pub fn is_weak_member_id(member: &MemberId) -> bool {
    match ed25519_dalek::VerifyingKey::from_bytes(&member.0) {
        Ok(key) => key.is_weak(),
        Err(_) => true,
    }
}
