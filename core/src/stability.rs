//! Stability: which prefix of the canonical order no transaction unknown to
//! this member can ever sort into.
//!
//! Owns: for every identity the DAG names (the creator, every author, every
//! invitee), the facts that bound the heights of the transactions it may
//! still make; the stable frontier derived from them; and the signed
//! announcements that carry those facts between members.
//!
//! # The rule
//!
//! The canonical order sorts by (height, id), so a transaction `T` is
//! *stable* at a member `M` when every transaction `M` does not hold has a
//! height above `T`'s. `M` computes a *frontier* `F`, a height such that
//! every transaction it does not hold has height `F` or more; its stable
//! prefix is every held transaction of height below `F`.
//!
//! Two facts about honest members make `F` computable:
//!
//! 1. **Chain.** Every transaction an identity makes descends from every
//!    transaction it made before. A member builds on its heads, which
//!    descend from everything it holds, its own transactions included (and
//!    when it has more heads than a transaction may name, it names its own
//!    latest beside the highest ones: `Replica::next_parents`). A node that
//!    leaves keeps its last own transaction (`Record::Deleted { last_own }`,
//!    the tombstone, with its height) and, rejoining, authors its join only
//!    once its new copy holds it, or stands on a checkpoint cut above it
//!    (the cut was stable where it was taken: the tombstone is in the
//!    prefix the copy carries on from). So if `M` holds one transaction of `A`, it holds all of
//!    `A`'s earlier ones (the DAG is closed under parents), and every
//!    transaction `A` makes later is higher.
//! 2. **Heights only grow.** A new transaction's height is one more than its
//!    highest parent's, and a member's heads reach at least the height of
//!    everything it holds, so everything `A` makes from now on is higher
//!    than everything `A` holds now. `A` says so in an *announcement*,
//!    signed: "my last own transaction is `L`, and I hold `top`". A member
//!    that holds `L` and `top` knows that `A` makes nothing at or below
//!    `height(top)` any more, and that it holds everything `A` made so far.
//!    (Heights only: `A`'s promise survives restarts because `A` announces
//!    only what it has persisted.)
//!
//! So each identity `A` contributes a *bound*, the lowest height of any
//! transaction of `A`'s that `M` may not hold yet:
//!
//! - `A` is active (`M` holds a transaction of `A`'s, its latest is not a
//!   `Leave`): one more than the highest of that transaction's height and
//!   `A`'s best usable announcement;
//! - `A` has left (its latest held transaction is its `Leave`), or has made
//!   nothing `M` holds: `A` makes nothing more unless it is invited after
//!   that, and its next `Join` descends from such an invite. If `M` holds
//!   one, the bound is one more than the lowest one's height; if it holds
//!   none, an invite `M` does not hold is itself bounded by its author's
//!   bound, so `A` adds nothing (no bound);
//! - `M` itself adds nothing: it holds all it made, and makes only above
//!   its heads. Except a member that left and is rejoining, while its new
//!   copy does not yet hold its tombstone (its last transaction before it
//!   left, `Record::Deleted`): that copy may lack `M`'s own earlier
//!   transactions, so `M` bounds it like any other identity until it holds
//!   the tombstone (or stands on a cut above it), and after that holds all
//!   it made again. (A copy that counted only the others could pass one of
//!   its own old transactions and refuse it as below the frontier.)
//!
//! The frontier is the lowest bound, and never above the highest held
//! height plus one. By induction over causality, every transaction `M` does
//! not hold has a height at or above it: its author's latest transaction
//! `M` holds is below it (chain), or, for a `Join` and what follows, its
//! invite is (held, so counted, or not held, so bounded by its author).
//!
//! The frontier never decreases: a newly held transaction raises its
//! author's bound or leaves it, and a newly held invite of an identity that
//! had no bound was, until held, a transaction of its author's that `M`
//! lacked, so the frontier was already at or below its height.
//!
//! Crashes and restarts change nothing in the argument: a member persists
//! every transaction before anything reveals it, so a restarted member
//! holds everything it made that anyone saw (the chain holds), and it
//! announces only what it holds. Its own frontier restarts from its DAG
//! (its announcements heard are not persisted) and is sound from there; a
//! member that crashes for good holds everyone's frontier at its last
//! word, which `status` reports.
//!
//! Joins need no special case: a joiner catches up from any state, even an
//! old one, but its `Join` descends from its invite, which `M` either holds
//! (and counts) or does not (and its author's bound covers it). An identity
//! invited but never joining holds the frontier at its invite; a member
//! never heard from again holds it at its last announcement. Both are what
//! `status` reports as holding stability back.
//!
//! A copy built from a checkpoint (`crate::checkpoint`) holds none of the
//! transactions below its cut. The prefix is closed under parents, so the
//! rule holds for it with the facts of the prefix alone
//! (`Stability::stable`, kept as slots become stable, without
//! announcements, whose authors' last transactions it may not hold): that
//! is what a checkpoint carries, with its cut as a floor (the cut was at or
//! below the frontier of the copy that took it, so every transaction not
//! in the prefix has a height at or above the cut).
//!
//! Invariant (asserted in `Replica::insert_deferred`): no insertion lands in
//! the stable prefix. A transaction that would is refused
//! (`InsertError::InsideStablePrefix`): only an identity that broke its
//! promise can make one, and the simulator fails any run where one appears.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{ContextId, Hash, MemberId, TxId};
use crate::tx::{OrderKey, Signature, Tx, TxKind};
use crate::verify::SignatureCheck;

/// What one identity's future transactions are known to respect (a
/// checkpoint carries the facts its prefix gives, `crate::checkpoint`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityFacts {
    /// Its highest held transaction, and whether that is a `Leave`.
    last: Option<(OrderKey, bool)>,
    /// Held invites naming it.
    invites: BTreeSet<OrderKey>,
    /// The best floor a usable announcement of it gave: it makes nothing
    /// below this height any more (0: none).
    announced: u64,
}

impl IdentityFacts {
    /// The lowest height of a transaction of this identity's that may not be
    /// held yet; `None`: it makes nothing that is not bounded elsewhere.
    fn bound(&self) -> Option<u64> {
        let from_invites = |after: Option<OrderKey>| {
            let first = match after {
                Some(key) => self.invites.range(key..).find(|k| **k != key),
                None => self.invites.iter().next(),
            };
            first.map(|invite| invite.height + 1)
        };
        let bound = match self.last {
            Some((key, false)) => Some(key.height + 1),
            Some((key, true)) => from_invites(Some(key)),
            None => from_invites(None),
        };
        bound.map(|bound| bound.max(self.announced))
    }

    /// Why it holds the frontier where it is.
    fn reason(&self) -> HoldReason {
        match self.last {
            Some((_, false)) => HoldReason::Member,
            _ => HoldReason::Invited,
        }
    }
}

/// Why an identity holds stability back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldReason {
    /// A member: nothing newer was heard from it (no transaction, no
    /// announcement).
    Member,
    /// Invited and not yet joined (or invited again after leaving): its
    /// `Join` may still come, just above its invite.
    Invited,
}

/// The identity that holds the frontier, if anything is unstable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub member: MemberId,
    pub reason: HoldReason,
}

/// The stability facts of one copy (module doc: the rule).
#[derive(Clone, Debug, Default)]
pub struct Stability {
    /// This node, which bounds nothing (set by the node that holds the copy)
    /// once the copy holds everything it made.
    local: Option<MemberId>,
    /// This node's tombstone of an earlier membership while the copy does
    /// not hold it (module doc: the rule): until then the local identity
    /// bounds the frontier like any other. Cleared for good once held.
    owed: Option<OrderKey>,
    identities: BTreeMap<MemberId, IdentityFacts>,
    /// The highest held height.
    height_max: u64,
    /// Every transaction not held has this height or more.
    frontier: u64,
    /// A frontier a snapshot stood on: everything below it was in the
    /// snapshot, so nothing below it can be lacking (the frontier never
    /// goes under it, even where this copy's own facts are weaker).
    floor: u64,
    /// The identities' facts as the stable prefix alone gives them (no
    /// announcement: one is usable only where its author's last
    /// transaction is held): what a snapshot carries, so that the copy
    /// standing on it derives its frontier from what it holds.
    stable: BTreeMap<MemberId, IdentityFacts>,
}

/// Takes `tx` into an identity map: its author's latest, and the invite it
/// is.
fn record(identities: &mut BTreeMap<MemberId, IdentityFacts>, tx: &Tx) {
    let key = tx.order_key();
    let author = identities.entry(tx.author()).or_default();
    if author.last.is_none_or(|(last, _)| last < key) {
        author.last = Some((key, matches!(tx.kind(), TxKind::Leave)));
        // Only invites after its latest transaction bound it: the older
        // ones can go, so this stays bounded by what is pending.
        author.invites.retain(|invite| *invite > key);
    }
    if let TxKind::Invite { member } = tx.kind() {
        identities.entry(*member).or_default().invites.insert(key);
    }
}

impl Stability {
    /// Sets the member whose copy this is: its own bound is not counted,
    /// except while the copy lacks `tombstone`, the last transaction it
    /// made before it left (module doc: the rule).
    pub fn set_local(&mut self, me: MemberId, tombstone: Option<OrderKey>) {
        assert!(
            self.local.is_none_or(|local| local == me),
            "a copy belongs to one node"
        );
        self.local = Some(me);
        self.owed = tombstone;
        self.refresh();
    }

    /// Clears the tombstone owed once the copy holds it: its own latest
    /// held is at or above it (a copy holding one of its own transactions
    /// holds all earlier ones), or it lies below the floor of the cut the
    /// copy stands on.
    fn settle_owed(&mut self, local: &MemberId) {
        let Some(tombstone) = self.owed else {
            return;
        };
        let held = self
            .identities
            .get(local)
            .and_then(|identity| identity.last)
            .is_some_and(|(last, _)| last >= tombstone);
        if held || tombstone.height < self.floor {
            self.owed = None;
        }
    }

    /// Whether `member` bounds the frontier of this copy: anyone but the
    /// local node, and the local node too while it owes its tombstone.
    fn bounds(&self, member: &MemberId) -> bool {
        Some(*member) != self.local || self.owed.is_some()
    }

    /// Takes a newly held transaction into account.
    pub fn link(&mut self, tx: &Tx) {
        self.height_max = self.height_max.max(tx.height());
        record(&mut self.identities, tx);
    }

    /// Takes a transaction that became stable into the facts of the stable
    /// prefix alone (`stable`), which a snapshot carries.
    pub fn link_stable(&mut self, tx: &Tx) {
        debug_assert!(tx.height() < self.frontier, "only a stable transaction");
        record(&mut self.stable, tx);
    }

    /// Whether `author` is an identity this copy tracks (the DAG names it).
    pub fn tracks(&self, author: &MemberId) -> bool {
        self.identities.contains_key(author)
    }

    /// The highest held transaction of the local member's.
    pub fn local_last(&self) -> Option<OrderKey> {
        self.last_of(&self.local?)
    }

    /// The highest transaction of `author`'s held.
    pub fn last_of(&self, author: &MemberId) -> Option<OrderKey> {
        self.identities.get(author)?.last.map(|(key, _)| key)
    }

    /// Whether `floor` (what an announcement of `author`'s gives) raises
    /// the floor its announcements gave so far.
    pub fn improves(&self, author: &MemberId, floor: u64) -> bool {
        self.identities
            .get(author)
            .is_some_and(|identity| floor > identity.announced)
    }

    /// Records that `author` makes nothing below `floor` any more (a
    /// verified, usable announcement: see `Replica::announcement_floor`).
    pub fn announced(&mut self, author: &MemberId, floor: u64) {
        let identity = self
            .identities
            .get_mut(author)
            .expect("an announcement is taken only from a tracked identity");
        identity.announced = identity.announced.max(floor);
        self.refresh();
    }

    /// Recomputes the frontier; it never decreases. A copy no node owns
    /// (an oracle rebuilt in a test, say) has no stable prefix: the rule
    /// rests on the owner's own transactions forming a chain.
    pub fn refresh(&mut self) {
        let Some(local) = self.local else {
            return;
        };
        self.settle_owed(&local);
        let lowest = self
            .identities
            .iter()
            .filter(|(member, _)| self.bounds(member))
            .filter_map(|(_, identity)| identity.bound())
            .min();
        let cap = self.height_max + 1;
        let frontier = lowest.map_or(cap, |lowest| lowest.min(cap)).max(self.floor);
        assert!(
            frontier >= self.frontier,
            "the stable frontier moved back from {} to {frontier}",
            self.frontier
        );
        self.frontier = frontier;
    }

    /// The facts the stable prefix gives, for a checkpoint cut at the end
    /// of what is stable now (`Replica::compact` takes them there).
    pub fn prefix_facts(&self) -> Vec<(MemberId, IdentityFacts)> {
        self.stable
            .iter()
            .map(|(member, facts)| (*member, facts.clone()))
            .collect()
    }

    /// The facts of a copy standing on a checkpoint cut at `height` whose
    /// prefix gives `facts`: nothing below the cut can be lacking.
    pub fn from_checkpoint(facts: &[(MemberId, IdentityFacts)], height: u64) -> Stability {
        let identities: BTreeMap<MemberId, IdentityFacts> = facts.iter().cloned().collect();
        Stability {
            local: None,
            owed: None,
            identities: identities.clone(),
            height_max: height.saturating_sub(1),
            frontier: height,
            floor: height,
            stable: identities,
        }
    }

    /// Every transaction not held has this height or more.
    pub fn frontier(&self) -> u64 {
        self.frontier
    }

    /// The identity whose bound is the frontier, if the frontier is below
    /// the held transactions' (something held is not yet stable).
    pub fn holder(&self) -> Option<Holder> {
        if self.frontier > self.height_max {
            return None;
        }
        self.identities
            .iter()
            .filter(|(member, _)| self.bounds(member))
            .find(|(_, identity)| identity.bound() == Some(self.frontier))
            .map(|(member, identity)| Holder {
                member: *member,
                reason: identity.reason(),
            })
    }
}

/// What a member announces of itself: the last transaction it made, and
/// the highest it holds. A promise that it makes nothing at or below
/// `top`'s height any more. It also vouches for the latest checkpoint it
/// took (`crate::checkpoint`), so that a joiner can check a checkpoint one
/// member serves against what others took. Signed by `author` over
/// [`Announcement::digest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    pub author: MemberId,
    pub last_own: TxId,
    pub top: TxId,
    pub checkpoint: Option<Vouch>,
}

/// A member's word that its checkpoint at `height` has this digest
/// (`CheckpointHeader::digest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vouch {
    pub height: u64,
    pub digest: Hash,
}

/// An announcement and its author's signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAnnouncement {
    pub body: Announcement,
    pub signature: Signature,
}

impl Announcement {
    /// The digest signed: a blake3 hash in its own derive-key domain (so no
    /// announcement digest is ever a transaction id), binding the context.
    pub fn digest(&self, context: &ContextId) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key("ctx 2026 stability announcement");
        hasher.update(&context.0);
        hasher.update(&postcard::to_stdvec(self).expect("encoding into a Vec cannot fail"));
        *hasher.finalize().as_bytes()
    }

    pub fn sign(self, context: &ContextId, key: &ed25519_dalek::SigningKey) -> SignedAnnouncement {
        use ed25519_dalek::Signer;
        let signature = Signature(key.sign(&self.digest(context)).to_bytes());
        SignedAnnouncement {
            body: self,
            signature,
        }
    }
}

impl SignedAnnouncement {
    /// The check of its signature, over `digest` (computed by the caller
    /// with [`Announcement::digest`]).
    pub fn signature_check<'a>(&'a self, digest: &'a [u8; 32]) -> SignatureCheck<'a> {
        SignatureCheck {
            author: &self.body.author,
            message: digest,
            signature: &self.signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Hash;
    use crate::tx::{TX_FORMAT_VERSION, TxBody};
    use ed25519_dalek::SigningKey;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn member(n: u8) -> MemberId {
        MemberId(key(n).verifying_key().to_bytes())
    }

    fn tx(author: u8, height: u64, kind: TxKind) -> Tx {
        let body = TxBody {
            version: TX_FORMAT_VERSION,
            context: ContextId([1; 32]),
            author: member(author),
            height,
            // Stability reads heights only: any parent will do.
            parents: if height == 0 {
                Vec::new()
            } else {
                vec![crate::tx::Parent {
                    id: TxId([0; 32]),
                    height: height - 1,
                }]
            },
            kind,
        };
        Tx::sign(body, &key(author))
    }

    fn call(author: u8, height: u64) -> Tx {
        let kind = TxKind::Call {
            method: "set".into(),
            input: vec![height as u8],
        };
        tx(author, height, kind)
    }

    #[test]
    fn the_frontier_is_the_lowest_bound() {
        let mut s = Stability::default();
        s.set_local(member(1), None);
        let create = TxKind::Create {
            runtime_version: 1,
            app_hash: Hash([0; 32]),
            app_bytes: 0,
        };
        s.link(&tx(1, 0, create));
        s.refresh();
        // Alone: everything held is stable.
        assert_eq!(s.frontier(), 1);
        assert_eq!(s.holder(), None);
        // Bob invited at height 1: his join comes above it.
        s.link(&tx(1, 1, TxKind::Invite { member: member(2) }));
        s.refresh();
        assert_eq!(s.frontier(), 2);
        s.link(&call(1, 2));
        s.refresh();
        assert_eq!(s.frontier(), 2);
        assert_eq!(
            s.holder(),
            Some(Holder {
                member: member(2),
                reason: HoldReason::Invited
            })
        );
        // Bob joins at 3: he makes nothing at or below 3 any more.
        s.link(&tx(2, 3, TxKind::Join));
        s.refresh();
        assert_eq!(s.frontier(), 4);
        // ... and announces he holds 6 (once it is held here).
        s.link(&call(1, 5));
        s.link(&call(1, 6));
        assert!(s.improves(&member(2), 7));
        s.announced(&member(2), 7);
        assert_eq!(s.frontier(), 7);
        assert_eq!(s.holder(), None);
        // Bob leaves: he bounds nothing until invited again.
        s.link(&tx(2, 7, TxKind::Leave));
        s.refresh();
        assert_eq!(s.frontier(), 8);
        s.link(&tx(1, 8, TxKind::Invite { member: member(2) }));
        s.refresh();
        assert_eq!(s.frontier(), 9);
        s.link(&call(1, 9));
        s.refresh();
        assert_eq!(s.frontier(), 9, "held at the new invite");
    }

    #[test]
    fn a_rejoiner_bounds_its_own_copy_until_it_holds_its_tombstone() {
        // Alice made transactions up to height 4 and left there (her
        // tombstone); her new copy holds Bob's transactions up to 6 but
        // only hers up to 2.
        let tombstone = tx(1, 4, TxKind::Leave).order_key();
        let mut s = Stability::default();
        let create = TxKind::Create {
            runtime_version: 1,
            app_hash: Hash([0; 32]),
            app_bytes: 0,
        };
        s.link(&tx(1, 0, create));
        s.link(&tx(1, 1, TxKind::Invite { member: member(2) }));
        s.link(&call(1, 2));
        s.link(&tx(2, 3, TxKind::Join));
        s.link(&call(2, 5));
        s.link(&call(2, 6));
        s.set_local(member(1), Some(tombstone));
        s.announced(&member(2), 7);
        // Her own call at 3 may still be missing: the frontier waits there.
        assert_eq!(s.frontier(), 3);
        assert_eq!(
            s.holder(),
            Some(Holder {
                member: member(1),
                reason: HoldReason::Member
            })
        );
        s.link(&call(1, 3));
        s.refresh();
        assert_eq!(s.frontier(), 4);
        s.link(&tx(1, 4, TxKind::Leave));
        s.refresh();
        // Her tombstone is held: she bounds nothing any more.
        assert_eq!(s.frontier(), 7);
        assert_eq!(s.holder(), None);
    }
}
