//! One signature rule on every path: signatures a dishonest author can
//! craft (torsion components in `R` or in the key, small-order keys,
//! non-canonical `s`) get the same answer whether they are checked one by
//! one (a push: `Tx::from_signed`), in a batch (catchup and fetched
//! batches: `Tx::from_signed_batch`), directly through `Ed25519Verifier`,
//! or through the simulator's memo (`MemoVerifier`). A disagreement would
//! let one author make a transaction that some members accept and others
//! refuse.

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha512};

use ctx_core::tx::{Parent, SignedTx, TX_FORMAT_VERSION, Tx, TxBody, TxKind};
use ctx_core::verify::{SignatureCheck, Verifier, is_weak_member_id};
use ctx_core::{ContextId, Ed25519Verifier, MemberId, TxId};
use ctx_sim::world::MemoVerifier;

mod support;

/// A transaction body by `author`, distinct for each `n`.
fn body(author: MemberId, n: u8) -> TxBody {
    TxBody {
        version: TX_FORMAT_VERSION,
        context: ContextId([9; 32]),
        author,
        height: 1,
        parents: vec![Parent {
            id: TxId([n; 32]),
            height: 0,
        }],
        kind: TxKind::Call {
            method: "set".to_owned(),
            input: vec![n],
        },
    }
}

/// `k = SHA-512(R || A || message)` as a scalar.
fn challenge(r: &EdwardsPoint, key: &[u8; 32], message: &[u8]) -> Scalar {
    let mut hash = Sha512::new();
    hash.update(r.compress().as_bytes());
    hash.update(key);
    hash.update(message);
    Scalar::from_bytes_mod_order_wide(&hash.finalize().into())
}

/// A signature `(R, s)` made with secret scalar `a` for the key bytes `key`
/// (which may carry a torsion component `a` does not know about), with the
/// nonce point shifted by `torsion`.
fn sign_raw(a: &Scalar, key: &[u8; 32], message: &[u8], torsion: EdwardsPoint, n: u8) -> [u8; 64] {
    let r = Scalar::from_bytes_mod_order_wide(&Sha512::digest([n, 0x5a]).into());
    let big_r = ED25519_BASEPOINT_POINT * r + torsion;
    let s = r + challenge(&big_r, key, message) * a;
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(big_r.compress().as_bytes());
    signature[32..].copy_from_slice(s.as_bytes());
    signature
}

/// A case: a signed transaction and the answer ZIP-215 gives it.
struct Case {
    what: String,
    signed: SignedTx,
    valid: bool,
}

fn case(what: String, body: TxBody, signature: [u8; 64], valid: bool) -> Case {
    Case {
        what,
        signed: SignedTx {
            body,
            signature: ctx_core::tx::Signature(signature),
        },
        valid,
    }
}

fn cases() -> Vec<Case> {
    let honest = SigningKey::from_bytes(&[7; 32]);
    let a = honest.to_scalar();
    let key = honest.verifying_key().to_bytes();
    let member = MemberId(key);
    let mut cases = Vec::new();
    for (i, torsion) in EIGHT_TORSION.iter().enumerate() {
        let n = i as u8;
        // R with a torsion component: the strict (cofactorless) equation
        // fails for i > 0, the cofactored one holds.
        let tx = body(member, n);
        let signature = sign_raw(&a, &key, tx.id().as_bytes(), *torsion, n);
        cases.push(case(format!("R + torsion[{i}]"), tx, signature, true));

        // A key with a torsion component (a mixed-order key): valid under
        // the cofactored equation for its holder.
        let mixed = (ED25519_BASEPOINT_POINT * a + torsion)
            .compress()
            .to_bytes();
        let tx = body(MemberId(mixed), n + 8);
        let signature = sign_raw(
            &a,
            &mixed,
            tx.id().as_bytes(),
            EdwardsPoint::default(),
            n + 8,
        );
        cases.push(case(format!("key + torsion[{i}]"), tx, signature, true));

        // A small-order key with R of small order and s = 0: anyone can make
        // it, for any message, and ZIP-215 accepts it.
        let weak = torsion.compress().to_bytes();
        let tx = body(MemberId(weak), n + 16);
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(EIGHT_TORSION[(i + 3) % 8].compress().as_bytes());
        cases.push(case(
            format!("small-order key torsion[{i}]"),
            tx,
            signature,
            true,
        ));
    }
    // An honest signature, and the same with s not reduced (s + l): refused.
    let tx = body(member, 40);
    let signature = sign_raw(&a, &key, tx.id().as_bytes(), EdwardsPoint::default(), 40);
    cases.push(case("honest".to_owned(), tx.clone(), signature, true));
    let mut unreduced = signature;
    let s = Scalar::from_canonical_bytes(signature[32..].try_into().unwrap()).unwrap();
    let l_plus_s = add_group_order(s.as_bytes());
    unreduced[32..].copy_from_slice(&l_plus_s);
    cases.push(case("s + l".to_owned(), tx.clone(), unreduced, false));
    // The torsion signature of another message: refused.
    let other = body(member, 41);
    let signature = sign_raw(&a, &key, other.id().as_bytes(), EIGHT_TORSION[1], 41);
    cases.push(case(
        "signature of another message".to_owned(),
        tx,
        signature,
        false,
    ));
    cases
}

/// `s + l` as 32 little-endian bytes (still below 2^256 for any reduced s).
fn add_group_order(s: &[u8; 32]) -> [u8; 32] {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(s[i]) + u16::from(L[i]) + carry;
        out[i] = sum as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0);
    out
}

fn check_of(tx: &Tx) -> SignatureCheck<'_> {
    tx.signature_check()
}

#[test]
fn crafted_signatures_get_one_answer_on_every_path() {
    let cases = cases();
    let honest = &cases.iter().find(|c| c.what == "honest").unwrap().signed;
    let memo = MemoVerifier::new();
    for case in &cases {
        let verifiers: [(&str, &dyn Verifier); 2] =
            [("ed25519", &Ed25519Verifier), ("memo", &memo)];
        let mut answers = Vec::new();
        for (name, verifier) in verifiers {
            // One by one, as a push is checked.
            let single = Tx::from_signed(case.signed.clone(), verifier).is_ok();
            answers.push((format!("{name} single"), single));
            // In batches with valid signatures around it, as catchup and
            // fetched batches are checked (several positions and sizes).
            for before in [0, 1, 3] {
                let mut batch = vec![honest.clone(); before];
                batch.push(case.signed.clone());
                batch.push(honest.clone());
                let (accepted, error) = Tx::from_signed_batch(batch.clone(), verifier);
                let in_batch = accepted.iter().any(|tx| tx.signed() == &case.signed);
                assert_eq!(in_batch, error.is_none(), "{}: batch error", case.what);
                answers.push((format!("{name} from_signed_batch after {before}"), in_batch));
                let txs: Vec<Tx> = batch
                    .into_iter()
                    .map(|signed| Tx::from_signed_unverified(signed).unwrap())
                    .collect();
                let checks: Vec<SignatureCheck<'_>> = txs.iter().map(check_of).collect();
                let all = verifier.verify_all(&checks);
                answers.push((format!("{name} verify_all after {before}"), all));
            }
        }
        assert!(
            answers.iter().all(|(_, answer)| *answer == answers[0].1),
            "{}: the paths disagree: {answers:?}",
            case.what
        );
        assert_eq!(
            answers[0].1, case.valid,
            "{}: ZIP-215 says {}",
            case.what, case.valid
        );
    }
}

#[test]
fn small_order_member_ids_are_weak() {
    for torsion in EIGHT_TORSION {
        assert!(is_weak_member_id(&MemberId(torsion.compress().to_bytes())));
    }
    let honest = SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes();
    assert!(!is_weak_member_id(&MemberId(honest)));
    // Not a point at all: about half of all y have no x on the curve.
    let not_a_point = (2u8..)
        .map(|y| {
            let mut bytes = [0u8; 32];
            bytes[0] = y;
            bytes
        })
        .find(|bytes| {
            curve25519_dalek::edwards::CompressedEdwardsY(*bytes)
                .decompress()
                .is_none()
        })
        .unwrap();
    assert!(is_weak_member_id(&MemberId(not_a_point)));
}

#[test]
fn a_small_order_member_cannot_be_invited() {
    let mut net = support::Net::new(1);
    let context = net.nodes[0]
        .create_context(net.now, support::KV.as_bytes())
        .unwrap();
    let weak = MemberId(EIGHT_TORSION[2].compress().to_bytes());
    assert!(matches!(
        net.nodes[0].invite(net.now, context, weak),
        Err(ctx_core::CommandError::WeakMember(member)) if member == weak
    ));
    let honest = MemberId(SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes());
    assert!(net.nodes[0].invite(net.now, context, honest).is_ok());
}
