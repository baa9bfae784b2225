//! Byzantine nodes: members that lie on the wire.
//!
//! A Byzantine node runs an honest engine (it is invited, joins, makes
//! calls and serves catchups like any member), but what it sends passes
//! through a [`Mischief`] on its way out: with the scenario's `rate`, a
//! message is garbled, joined by an oversized one, by forged or replayed
//! transactions, by heads it does not hold, or, when it answers a catchup,
//! cut short or changed. Every choice is drawn from the world's generator,
//! so a run with a Byzantine node replays from its seed like any other, and
//! what its peers received is in the trace as they received it.
//!
//! What the honest members must do, whatever it sends: stay converged,
//! never accept a transaction no engine made (the runner's `authentic`
//! check), keep serving each other, and never panic.
//!
//! # What it does not do (and why)
//!
//! It lies only in ways an honest member can check from what it holds.
//! The engine's one-round stability rests on promises each member makes
//! about its own future (`ctx_core::stability`: its chain, and its signed
//! announcements), and a leave on the word of the members that acknowledge
//! it; a joiner from nothing trusts the genesis, and a checkpoint whose
//! only member at its cut was its responder, from its first contact. So a
//! member that signs two transactions on one chain and sends each to
//! different peers (equivocation), announces what it does not hold,
//! acknowledges a leave it did not apply, names a parent below a
//! checkpoint cut that never existed (or with a false height), or forges a
//! whole genesis, can split honest members, by design. Tolerating those
//! needs agreement among members (a second round before a prefix is
//! final), which this engine does not have; the README's fault table says
//! so.
//!
//! Invariants: the mischief draws from the world's generator only for a
//! Byzantine sender, so a run without one keeps every draw (and trace
//! hash) it had; every transaction it forges is refused, or held pending
//! for parents nobody has, by every honest member, whatever it holds: a
//! bad signature, another author under its own signature, a height its
//! parents contradict, unsorted or duplicated parents, a genesis with
//! parents, a transaction of another context, or parents no engine made,
//! named 2^32 heights above any it sent: above every member's checkpoint
//! cut, so no member can take the parent for one in its compacted prefix
//! (seed 40435 of `--every-knob` showed a member accepting a child of a
//! phantom named just below its cut). Every member holds it pending for
//! ever; one that refuses a forgery as below its stable frontier
//! (`Event::BelowStable`) is a note, the runner fails only an engine's.

use std::collections::BTreeMap;

use ctx_core::ids::{ContextId, MemberId, TxId};
use ctx_core::limits::MESSAGE_BYTES_MAX;
use ctx_core::tx::{Parent, Signature, SignedTx, TxKind};
use ctx_core::wire::{Body, CheckpointMark, Envelope, WIRE_VERSION};
use ed25519_dalek::{Signer, SigningKey};
use rand_chacha::ChaCha8Rng;
use rand_core::Rng;

use crate::world::RandomBool;

/// One way a Byzantine node lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Behaviour {
    /// Bits flipped, the message cut short or followed by junk, its version
    /// byte changed.
    Garble,
    /// A message over the size limit, or one whose lengths claim far more
    /// than it holds.
    Oversize,
    /// Transactions with a bad signature, another member named as author,
    /// heights or parents that contradict the rules, or parents nobody has.
    Forge,
    /// Transactions of another context, and old messages sent again, to
    /// anyone.
    Replay,
    /// Heads it does not hold, and a checkpoint it does not stand on.
    PhantomHeads,
    /// Catchup answers cut short, with a gap, a changed checkpoint entry, a
    /// changed offer, a changed application chunk, or a false member list.
    LieInCatchup,
}

impl Behaviour {
    pub const ALL: [Behaviour; 6] = [
        Behaviour::Garble,
        Behaviour::Oversize,
        Behaviour::Forge,
        Behaviour::Replay,
        Behaviour::PhantomHeads,
        Behaviour::LieInCatchup,
    ];

    /// The name a scenario's `[byzantine] behaviours` uses.
    pub fn name(self) -> &'static str {
        match self {
            Behaviour::Garble => "garble",
            Behaviour::Oversize => "oversize",
            Behaviour::Forge => "forge",
            Behaviour::Replay => "replay",
            Behaviour::PhantomHeads => "phantom-heads",
            Behaviour::LieInCatchup => "lie-in-catchup",
        }
    }

    pub fn from_name(name: &str) -> Option<Behaviour> {
        Behaviour::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// The scenario's `[byzantine]` table: which nodes lie, how often, and how.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Byzantine {
    /// Declared node names.
    pub nodes: Vec<String>,
    /// The chance that a message such a node sends is tampered with, in
    /// `[0, 1]`.
    pub rate: f64,
    /// What it may do; never empty when `nodes` is not.
    pub behaviours: Vec<Behaviour>,
}

impl Byzantine {
    /// The rate when a table does not give one.
    pub const RATE_DEFAULT: f64 = 0.25;

    pub fn any(&self) -> bool {
        !self.nodes.is_empty()
    }
}

/// How far above the heights it sent a phantom parent is named: more than
/// any run makes, so it is above every member's checkpoint cut.
const PHANTOM_HEIGHT_ABOVE: u64 = 1 << 32;

/// Transactions and messages a Byzantine node keeps to lie with, at most.
const SEEN_TXS_MAX: usize = 64;
const SENT_KEPT_MAX: usize = 16;

/// One Byzantine node's state: its key, what it has seen pass, and how
/// often it lied.
pub struct Mischief {
    key: SigningKey,
    me: MemberId,
    rate: f64,
    behaviours: Vec<Behaviour>,
    /// Transactions it sent, of every context (to forge from and replay).
    seen: Vec<SignedTx>,
    /// Messages it sent, and to whom (to send again).
    sent: Vec<Vec<u8>>,
    /// The highest height it sent a transaction of, per context: phantom
    /// parents are named above it.
    top: BTreeMap<ContextId, u64>,
    /// Messages tampered with, per behaviour, and messages sent.
    pub tampered: BTreeMap<Behaviour, u64>,
    pub messages: u64,
}

/// The messages a tampered send becomes: `(to, bytes)`; `to` may be another
/// node than the one the engine addressed.
pub type Sends = Vec<(usize, Vec<u8>)>;

impl Mischief {
    pub fn new(secret: [u8; 32], config: &Byzantine) -> Mischief {
        assert!(
            !config.behaviours.is_empty(),
            "a Byzantine node has at least one behaviour"
        );
        let key = SigningKey::from_bytes(&secret);
        Mischief {
            me: MemberId(key.verifying_key().to_bytes()),
            key,
            rate: config.rate,
            behaviours: config.behaviours.clone(),
            seen: Vec::new(),
            sent: Vec::new(),
            top: BTreeMap::new(),
            tampered: BTreeMap::new(),
            messages: 0,
        }
    }

    /// What becomes of `bytes`, which the engine sends to node `to` (of
    /// `nodes`, this node being `me_node`).
    pub fn tamper(
        &mut self,
        rng: &mut ChaCha8Rng,
        (me_node, nodes): (usize, usize),
        to: usize,
        bytes: Vec<u8>,
    ) -> Sends {
        self.messages += 1;
        let envelope = Envelope::decode(&bytes).expect("an engine sends only valid messages");
        self.remember(&envelope, &bytes);
        if !chance(rng, self.rate) {
            return vec![(to, bytes)];
        }
        let behaviour = self.behaviours[below(rng, self.behaviours.len())];
        *self.tampered.entry(behaviour).or_default() += 1;
        let context = envelope.context;
        match behaviour {
            Behaviour::Garble => vec![(to, garble(rng, bytes))],
            Behaviour::Oversize => vec![(to, bytes), (to, oversized(rng, context))],
            Behaviour::Forge => {
                let forged = self.forge(rng, context);
                vec![(to, bytes), (to, encode(context, Body::Tx(forged)))]
            }
            Behaviour::Replay => {
                let mut sends = vec![(to, bytes)];
                let anyone = other_than(rng, me_node, nodes).unwrap_or(to);
                if chance(rng, 0.5) && !self.sent.is_empty() {
                    let old = self.sent[below(rng, self.sent.len())].clone();
                    sends.push((anyone, old));
                } else if !self.seen.is_empty() {
                    // Whatever context it was made for, sent as this one's.
                    let tx = self.seen[below(rng, self.seen.len())].clone();
                    sends.push((anyone, encode(context, Body::Tx(tx))));
                }
                sends
            }
            Behaviour::PhantomHeads => {
                let lie = match envelope.body {
                    Body::Heads {
                        mut heads,
                        reply,
                        announcements,
                        stands_on,
                    } => {
                        let fake = random_ids(rng, (1, 3));
                        heads.extend(fake);
                        heads.sort();
                        let stands_on = if chance(rng, 0.3) {
                            let height = stands_on.map_or(0, |mark| mark.height);
                            Some(CheckpointMark {
                                height: height + 1 + rng.next_u64() % 4096,
                                applied: rng.next_u64() % (1 << 20),
                            })
                        } else {
                            stands_on
                        };
                        Body::Heads {
                            heads,
                            reply,
                            announcements,
                            stands_on,
                        }
                    }
                    // Anything else: an unasked `Heads` of nothing it has.
                    _ => Body::Heads {
                        heads: random_ids(rng, (1, 3)),
                        reply: chance(rng, 0.5),
                        announcements: Vec::new(),
                        stands_on: None,
                    },
                };
                vec![(to, encode(context, lie))]
            }
            Behaviour::LieInCatchup => match lie_in_catchup(rng, envelope.body) {
                Some(lie) => vec![(to, encode(context, lie))],
                None => vec![(to, bytes)],
            },
        }
    }

    /// Keeps what an honest message of its own carries, to lie with later.
    fn remember(&mut self, envelope: &Envelope, bytes: &[u8]) {
        let txs: Vec<&SignedTx> = match &envelope.body {
            Body::Tx(tx) => vec![tx],
            Body::Txs { txs, .. } => txs.iter().collect(),
            Body::CatchupAccepted { genesis, .. } => vec![genesis],
            _ => Vec::new(),
        };
        for tx in txs {
            let top = self.top.entry(tx.body.context).or_default();
            *top = (*top).max(tx.body.height);
            if self.seen.len() < SEEN_TXS_MAX {
                self.seen.push(tx.clone());
            } else {
                // The newest replaces one by its id's first byte: no draw.
                let at = tx.body.id().0[0] as usize % SEEN_TXS_MAX;
                self.seen[at] = tx.clone();
            }
        }
        if self.sent.len() < SENT_KEPT_MAX {
            self.sent.push(bytes.to_vec());
        } else {
            let at = (self.messages as usize) % SENT_KEPT_MAX;
            self.sent[at] = bytes.to_vec();
        }
    }

    /// A transaction every honest member refuses, or holds pending for
    /// ever (see the module's invariants).
    fn forge(&mut self, rng: &mut ChaCha8Rng, context: ContextId) -> SignedTx {
        let of_context: Vec<&SignedTx> = self
            .seen
            .iter()
            .filter(|tx| tx.body.context == context)
            .collect();
        let template = if of_context.is_empty() {
            None
        } else {
            Some(of_context[below(rng, of_context.len())].clone())
        };
        let Some(template) = template else {
            return self.phantom_child(rng, context);
        };
        match below(rng, 6) {
            // Another's transaction changed after it was signed.
            0 => {
                let mut forged = template;
                match &mut forged.body.kind {
                    TxKind::Call { input, .. } if !input.is_empty() => input[0] ^= 1,
                    _ => forged.body.height += 1,
                }
                forged
            }
            // Someone else named as its author, under its own signature.
            1 => {
                let mut body = template.body;
                if body.author == self.me {
                    body.author = MemberId(random_id(rng).0);
                }
                self.sign(body)
            }
            // A height its parents contradict.
            2 => {
                let mut body = template.body;
                body.author = self.me;
                body.height = body.height + 1 + rng.next_u64() % 5;
                if body.parents.is_empty() {
                    body.height = 0;
                    body.parents.push(Parent {
                        id: random_id(rng),
                        height: 7,
                    });
                }
                self.sign(body)
            }
            // Parents unsorted or named twice.
            3 => {
                let mut body = template.body;
                body.author = self.me;
                let parent = Parent {
                    id: template_parent(&body.parents, rng),
                    height: body.height.saturating_sub(1),
                };
                body.parents = vec![parent, parent];
                self.sign(body)
            }
            // A second genesis, with parents.
            4 => {
                let mut body = template.body;
                body.author = self.me;
                body.kind = TxKind::Create {
                    app_hash: ctx_core::ids::Hash(random_id(rng).0),
                    app_bytes: 1 + rng.next_u64() % 1024,
                    runtime_version: 1,
                };
                if body.parents.is_empty() {
                    body.parents.push(Parent {
                        id: random_id(rng),
                        height: 0,
                    });
                    body.height = 1;
                }
                self.sign(body)
            }
            _ => self.phantom_child(rng, context),
        }
    }

    /// A call of its own on parents no engine made, named above every
    /// height it holds.
    fn phantom_child(&self, rng: &mut ChaCha8Rng, context: ContextId) -> SignedTx {
        // Far above any height a run reaches: a parent named below a
        // member's checkpoint cut is one it cannot check (it holds nothing
        // below the cut), a lie outside the model (see the module doc).
        let top = self.top.get(&context).copied().unwrap_or(0);
        let height = top + PHANTOM_HEIGHT_ABOVE + rng.next_u64() % 64;
        let body = ctx_core::tx::TxBody {
            version: ctx_core::tx::TX_FORMAT_VERSION,
            context,
            author: self.me,
            height: height + 1,
            parents: vec![Parent {
                id: random_id(rng),
                height,
            }],
            kind: TxKind::Call {
                method: "set".into(),
                input: random_bytes(rng, (8, 1)),
            },
        };
        self.sign(body)
    }

    /// Signs any body, valid or not (`Tx::sign` takes only valid ones).
    fn sign(&self, body: ctx_core::tx::TxBody) -> SignedTx {
        let id = body.id();
        SignedTx {
            signature: Signature(self.key.sign(id.as_bytes()).to_bytes()),
            body,
        }
    }
}

/// A changed answer to a catchup, or `None` when `body` is not one.
fn lie_in_catchup(rng: &mut ChaCha8Rng, body: Body) -> Option<Body> {
    match body {
        // A stream's batch cut short and said to be the end, or with a gap.
        Body::Txs {
            request,
            mut txs,
            more: Some(more),
            complete,
        } if !txs.is_empty() => {
            if chance(rng, 0.5) {
                txs.truncate(below(rng, txs.len()));
                Some(Body::Txs {
                    request,
                    txs,
                    more: None,
                    complete,
                })
            } else {
                txs.remove(below(rng, txs.len()));
                Some(Body::Txs {
                    request,
                    txs,
                    more: Some(more),
                    complete,
                })
            }
        }
        Body::CheckpointChunk {
            request,
            height,
            mut entries,
            more,
        } if !entries.is_empty() => {
            let at = below(rng, entries.len());
            entries[at].1.push(0xa5);
            Some(Body::CheckpointChunk {
                request,
                height,
                entries,
                more,
            })
        }
        Body::AppChunk {
            request,
            offset,
            mut bytes,
        } if !bytes.is_empty() => {
            let at = below(rng, bytes.len());
            bytes[at] ^= 0x10;
            Some(Body::AppChunk {
                request,
                offset,
                bytes,
            })
        }
        Body::CatchupAccepted {
            request,
            genesis,
            members,
            offer,
        } => {
            let (members, offer) = match offer {
                Some(mut offer) if chance(rng, 0.5) => {
                    offer.header.root = ctx_core::ids::Hash(random_id(rng).0);
                    (members, Some(offer))
                }
                offer => (
                    random_ids(rng, (1, 3))
                        .into_iter()
                        .map(|id| MemberId(id.0))
                        .collect(),
                    offer,
                ),
            };
            Some(Body::CatchupAccepted {
                request,
                genesis,
                members,
                offer,
            })
        }
        _ => None,
    }
}

/// `bytes` with bits flipped, cut short, followed by junk, or another
/// version byte.
fn garble(rng: &mut ChaCha8Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    match below(rng, 4) {
        0 => {
            for _ in 0..1 + below(rng, 8) {
                let at = below(rng, bytes.len());
                bytes[at] ^= 1 << below(rng, 8);
            }
        }
        1 => bytes.truncate(below(rng, bytes.len())),
        2 => bytes.extend(random_bytes(rng, (1, 16))),
        _ => bytes[0] = bytes[0].wrapping_add(1 + below(rng, 255) as u8),
    }
    bytes
}

/// Over the size limit (one in eight), or a `Txs` whose length claims 2^40
/// transactions in a few bytes.
fn oversized(rng: &mut ChaCha8Rng, context: ContextId) -> Vec<u8> {
    if below(rng, 8) == 0 {
        let mut bytes = vec![0u8; MESSAGE_BYTES_MAX + 1 + below(rng, 64)];
        bytes[0] = WIRE_VERSION;
        return bytes;
    }
    let mut bytes = encode(
        context,
        Body::Txs {
            request: 0,
            txs: Vec::new(),
            more: None,
            complete: false,
        },
    );
    // version, context, variant, request 0: the length follows.
    let length_at = 1 + 32 + 1 + 1;
    assert_eq!(bytes[length_at], 0, "an empty Txs encodes its length as 0");
    bytes.truncate(length_at);
    let mut claimed: u64 = 1 << 40;
    while claimed >= 0x80 {
        bytes.push((claimed as u8) | 0x80);
        claimed >>= 7;
    }
    bytes.push(claimed as u8);
    bytes.extend(random_bytes(rng, (1, 64)));
    bytes
}

fn encode(context: ContextId, body: Body) -> Vec<u8> {
    Envelope::new(context, body).encode()
}

fn template_parent(parents: &[Parent], rng: &mut ChaCha8Rng) -> TxId {
    parents.first().map_or_else(|| random_id(rng), |p| p.id)
}

fn chance(rng: &mut ChaCha8Rng, probability: f64) -> bool {
    rng.random_bool_f64(probability)
}

fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    debug_assert!(n > 0);
    (rng.next_u64() % n as u64) as usize
}

/// A node other than `me` of `nodes`, if there is one.
fn other_than(rng: &mut ChaCha8Rng, me: usize, nodes: usize) -> Option<usize> {
    if nodes < 2 {
        return None;
    }
    let pick = below(rng, nodes - 1);
    Some(if pick >= me { pick + 1 } else { pick })
}

/// `least` to `least + spread - 1` random bytes.
fn random_bytes(rng: &mut ChaCha8Rng, (least, spread): (usize, usize)) -> Vec<u8> {
    let n = least + below(rng, spread);
    let mut bytes = vec![0u8; n];
    rng.fill_bytes(&mut bytes);
    bytes
}

fn random_id(rng: &mut ChaCha8Rng) -> TxId {
    let mut id = [0u8; 32];
    rng.fill_bytes(&mut id);
    TxId(id)
}

/// `least` to `least + spread - 1` random ids.
fn random_ids(rng: &mut ChaCha8Rng, (least, spread): (usize, usize)) -> Vec<TxId> {
    let n = least + below(rng, spread);
    (0..n).map(|_| random_id(rng)).collect()
}

#[cfg(test)]
mod tests {
    //! Every forgery is one an honest member refuses (or holds pending for
    //! parents nobody has), and the oversized message is refused as such.

    use super::*;
    use ctx_core::tx::{Tx, TxBody, TxError};
    use ctx_core::verify::Ed25519Verifier;
    use rand_core::SeedableRng;

    fn member_tx(key: &SigningKey, context: ContextId) -> SignedTx {
        let body = TxBody {
            version: ctx_core::tx::TX_FORMAT_VERSION,
            context,
            author: MemberId(key.verifying_key().to_bytes()),
            height: 4,
            parents: vec![Parent {
                id: TxId([3; 32]),
                height: 3,
            }],
            kind: TxKind::Call {
                method: "set".into(),
                input: vec![1, 2, 3],
            },
        };
        Tx::sign(body, key).signed().clone()
    }

    #[test]
    fn every_forgery_is_refused_or_waits_for_parents_nobody_has() {
        let context = ContextId([9; 32]);
        let config = Byzantine {
            nodes: vec!["mallory".into()],
            rate: 1.0,
            behaviours: vec![Behaviour::Forge],
        };
        let mut mischief = Mischief::new([5; 32], &config);
        let honest = SigningKey::from_bytes(&[6; 32]);
        let tx = member_tx(&honest, context);
        mischief.remember(&Envelope::new(context, Body::Tx(tx.clone())), &[]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut refused, mut phantom) = (0, 0);
        for _ in 0..400 {
            let forged = mischief.forge(&mut rng, context);
            match Tx::from_signed(forged.clone(), &Ed25519Verifier) {
                Err(
                    TxError::BadSignature(_)
                    | TxError::BadParents
                    | TxError::BadGenesisShape
                    | TxError::BadHeight { .. },
                ) => refused += 1,
                Err(other) => panic!("refused for an unexpected reason: {other}"),
                Ok(accepted) => {
                    // Only a child of parents no engine made, above its top.
                    assert_eq!(accepted.author(), mischief.me);
                    assert!(accepted.parents().iter().all(|p| p.id != tx.body.id()));
                    assert!(accepted.height() > tx.body.height);
                    phantom += 1;
                }
            }
        }
        assert!(
            refused > 250 && phantom > 30,
            "{refused} refused, {phantom} phantom"
        );
    }

    #[test]
    fn an_oversized_message_is_refused_before_it_is_read() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (mut too_large, mut malformed) = (0, 0);
        for _ in 0..64 {
            match Envelope::decode(&oversized(&mut rng, ContextId([1; 32]))) {
                Err(ctx_core::wire::WireError::TooLarge(_)) => too_large += 1,
                Err(ctx_core::wire::WireError::Malformed(_)) => malformed += 1,
                other => panic!("an oversized message decoded as {other:?}"),
            }
        }
        assert!(too_large > 0 && malformed > 0);
    }
}
