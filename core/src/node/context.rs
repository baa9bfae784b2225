//! One context on this node: its phase, as a type whose variants own what the
//! phase needs.
//!
//! ```text
//!   Joining(Catchup) ──stream ends, invited or member──► Member(Held)
//!      │  (Requested → App → Stream(Held))                   │
//!      │                                           leave, others remain
//!      ▼                                                     ▼
//!   deleted ◄──────────── LeaveAck / status Left ── Leaving { held, leave }
//! ```
//!
//! Owns: the phase and the data each phase has, and nothing else: a joiner
//! has its catchup (and, once the application is known, the copy its stream
//! fills); a member has its copy (`Held`: replica, pending set, the fetch in
//! flight); a leaver has its copy and the leave it pushes. So a member's
//! replica is simply there, a joiner has no leave, a leaver no catchup.
//!
//! Invariants:
//! - at most one fetch per copy is in flight (`Held::fetch`);
//! - the pending set is empty until the copy exists (only a copy takes
//!   transactions), so it lives in the copy;
//! - a copy is never dropped while the context is held: it moves from the
//!   catchup's stream to `Member` and from `Member` to `Leaving`, with its
//!   pending set and its fetch;
//! - a leave is this node's own `Leave` transaction, in its copy.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::checkpoint::Checkpoint;
use crate::ids::{ContextId, MemberId, TxId};
use crate::limits::{CHECKPOINT_VOUCHES_MAX, LEAVE_ACKS};
use crate::membership::MemberStatus;
use crate::pending::Pending;
use crate::record::Record;
use crate::replica::Replica;
use crate::stability::{Holder, SignedAnnouncement, Vouch};
use crate::time::Time;
use crate::tx::{Tx, TxKind};
use crate::wire::RequestId;

use super::Env;
use super::Phase;
use super::catchup::Catchup;
use super::forward::Forward;
use super::out::{Event, Out};

/// A request waiting for its answer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Outstanding {
    pub(super) request: RequestId,
    pub(super) peer: MemberId,
    pub(super) deadline: Time,
}

impl Outstanding {
    /// Whether a message from `from` about `request` is the answer.
    pub(super) fn answered_by(&self, request: RequestId, from: MemberId) -> bool {
        self.request == request && self.peer == from
    }
}

/// This node's copy of a context, once it knows the application.
pub(super) struct Held {
    pub(super) replica: Replica,
    /// Transactions waiting for their parents.
    pub(super) pending: Pending,
    /// The one fetch in flight, if any.
    pub(super) fetch: Option<Outstanding>,
    /// What this copy says and hears of stability.
    pub(super) announcements: Announcements,
    /// Other members' vouches for this copy's latest checkpoint.
    pub(super) vouches: Vouches,
    /// The cut of the latest checkpoint persisted (0: none).
    pub(super) persisted_checkpoint: u64,
    /// The newest checkpoint this copy could offer, with the vouches that
    /// made it offerable: offered to a joiner while the latest cannot be
    /// (no one left to vouch for it), since the bodies below it may be gone
    /// and a joiner must always have something to start from.
    pub(super) offered: Option<Offered>,
    /// The forward in flight, if this copy is behind another's checkpoint.
    pub(super) forward: Option<Forward>,
    /// Invited identities whose catchup this copy accepted (since this
    /// node started): they may hold a copy, and have joined, before this
    /// copy hears their join. A leaver hands its copy to them too.
    pub(super) served_invitees: BTreeSet<MemberId>,
}

/// A checkpoint this copy can offer, and the vouches that go with it.
pub(super) struct Offered {
    pub(super) checkpoint: Arc<Checkpoint>,
    pub(super) vouches: Vec<SignedAnnouncement>,
}

/// The announcements of other members that vouch for this copy's latest
/// checkpoint (same cut, same digest): what a catchup offer carries.
#[derive(Default)]
pub(super) struct Vouches {
    /// The checkpoint they vouch for.
    pub(super) for_checkpoint: Option<Vouch>,
    pub(super) by: BTreeMap<MemberId, SignedAnnouncement>,
}

impl Vouches {
    /// The vouches an offer of the checkpoint carries (and its records
    /// keep): up to `CHECKPOINT_VOUCHES_MAX`, by author.
    pub(super) fn to_offer(&self) -> Vec<SignedAnnouncement> {
        self.by
            .values()
            .take(CHECKPOINT_VOUCHES_MAX)
            .cloned()
            .collect()
    }
}

/// The announcements a copy makes and relays (`crate::stability`).
#[derive(Default)]
pub(super) struct Announcements {
    /// This node's latest, re-signed only when what it says changes.
    pub(super) own: Option<SignedAnnouncement>,
    /// The best verified announcement heard of each other member, relayed
    /// a few at a time so that every member hears of every other.
    pub(super) heard: BTreeMap<MemberId, SignedAnnouncement>,
    /// Where the next relay in turn starts in `heard`.
    pub(super) relay_after: Option<MemberId>,
    /// Authors whose announcement improved here most recently, newest
    /// first (at most `ANNOUNCEMENTS_PER_MESSAGE_MAX`): news is relayed
    /// first, so it spreads like gossip, and the rest in turn.
    pub(super) fresh: VecDeque<MemberId>,
    /// Who holds the stable frontier back, at which frontier, and since
    /// when it has not moved.
    pub(super) held_back: Option<(Holder, u64, Time)>,
}

impl Held {
    /// A copy of this node's, taking checkpoints on its schedule.
    pub(super) fn new(mut replica: Replica, env: &Env) -> Held {
        replica.set_checkpoint_interval(env.config.checkpoint_interval_min);
        let tombstone = env.tombstone(&replica.context());
        replica.set_local(env.me, tombstone);
        Held {
            replica,
            pending: Pending::default(),
            fetch: None,
            announcements: Announcements::default(),
            vouches: Vouches::default(),
            offered: None,
            persisted_checkpoint: 0,
            forward: None,
            served_invitees: BTreeSet::new(),
        }
    }

    /// Persists the copy's latest checkpoint, if it took one since the last
    /// persisted and can offer it (`Held::offerable`): its records, after
    /// which the driver may drop what it supersedes (`Record::CheckpointEnd`).
    pub(super) fn persist_checkpoint(&mut self, out: &mut Out, me: &MemberId) {
        let Some(cut) = self.replica.checkpoint().map(|c| c.header.height) else {
            return;
        };
        if cut <= self.persisted_checkpoint || !self.offerable(me) {
            return;
        }
        let checkpoint = Arc::clone(self.replica.checkpoint().expect("checked above"));
        let vouches = self.vouches.to_offer();
        self.persist_checkpoint_records(out, &checkpoint, vouches);
    }

    /// Persists `checkpoint`'s records (taken here, or loaded: a joiner's
    /// or a forward's) with the `vouches` for it, and notes it as the
    /// latest persisted.
    pub(super) fn persist_checkpoint_records(
        &mut self,
        out: &mut Out,
        checkpoint: &Checkpoint,
        vouches: Vec<SignedAnnouncement>,
    ) {
        for record in Record::checkpoint(checkpoint, vouches) {
            out.persist(record);
        }
        self.persisted_checkpoint = checkpoint.header.height;
    }

    /// Takes what came with a checkpoint loaded from `from` (a joiner's or
    /// a forward's): the vouches that went with its offer, and reports it.
    pub(super) fn loaded_checkpoint(
        &mut self,
        context: ContextId,
        out: &mut Out,
        from: MemberId,
        checkpoint: &Checkpoint,
        vouches: Vec<SignedAnnouncement>,
        vouched_by: Vec<MemberId>,
    ) {
        let height = checkpoint.header.height;
        self.vouches.for_checkpoint = Some(Vouch {
            height,
            digest: checkpoint.digest,
        });
        self.vouches.by = vouches.into_iter().map(|v| (v.body.author, v)).collect();
        out.event(Event::CheckpointLoaded {
            context,
            from,
            height,
            applied: checkpoint.header.applied,
            vouched_by,
        });
    }

    /// Drops the bodies below the latest checkpoint (`Replica::fold`) once
    /// it is persisted and this copy can offer it to a joiner (vouched for,
    /// or this node was alone at the cut), so that a joiner or a member
    /// behind is never left with nothing to load.
    pub(super) fn fold_if_offerable(&mut self, me: &MemberId) {
        let Some(checkpoint) = self.replica.checkpoint() else {
            return;
        };
        let cut = checkpoint.header.height;
        if self.replica.base_height().is_some_and(|base| base >= cut)
            || self.persisted_checkpoint < cut
            || !self.replica.is_settled()
            || !self.offerable(me)
        {
            return;
        }
        self.replica.fold();
    }

    /// Members of the context other than this node, sorted.
    pub(super) fn other_members(&self, me: &MemberId) -> Vec<MemberId> {
        self.replica
            .membership()
            .members()
            .filter(|m| m != me)
            .collect()
    }

    /// Whom a leaver hands its copy to, besides itself: the other members,
    /// and the invited identities that caught up from this copy (the last
    /// member leaving while one whose join it has not heard holds a copy
    /// must wait for its acknowledgement, or that copy counts the leaver a
    /// member for ever and lacks what only the leaver held). Sorted.
    pub(super) fn holders_besides(&self, me: &MemberId) -> Vec<MemberId> {
        let mut holders = self.other_members(me);
        holders.extend(
            self.served_invitees
                .iter()
                .filter(|m| self.replica.status(m) == Some(MemberStatus::Invited)),
        );
        holders.sort_unstable();
        holders
    }

    /// Identities this copy counts as invited (not yet joined), sorted.
    pub(super) fn invited_others(&self, me: &MemberId) -> Vec<MemberId> {
        self.replica
            .membership()
            .all()
            .filter(|(m, status)| m != me && *status == MemberStatus::Invited)
            .map(|(m, _)| m)
            .collect()
    }
}

/// A leaver's leave: its own `Leave`, pushed until enough members
/// acknowledge it.
pub(super) struct Leave {
    pub(super) tx: Tx,
    /// When to push it again.
    pub(super) push_at: Time,
    /// The members that acknowledged it (a restart starts over).
    pub(super) acked_by: BTreeSet<MemberId>,
    /// The members the acknowledging members count: pushed to as well, for
    /// this copy may not name them as members (it may be behind a
    /// checkpoint cut of theirs, with no body to fetch that would).
    pub(super) heard_members: BTreeSet<MemberId>,
}

impl Leave {
    pub(super) fn new(tx: Tx, push_at: Time, me: &MemberId) -> Leave {
        assert!(
            tx.author() == *me && matches!(tx.kind(), TxKind::Leave),
            "a leaver pushes its own leave"
        );
        Leave {
            tx,
            push_at,
            acked_by: BTreeSet::new(),
            heard_members: BTreeSet::new(),
        }
    }
}

/// Where this node stands in a context, with what it needs there.
pub(super) enum State {
    /// Catching up; not yet a member.
    Joining(Catchup),
    /// A full member.
    Member(Held),
    /// Left: pushes its leave until [`LEAVE_ACKS`] members (or every other
    /// one) acknowledge it, then deletes.
    Leaving { held: Held, leave: Leave },
}

pub(super) struct Context {
    pub(super) id: ContextId,
    /// When to run the next anti-entropy round (a member's only).
    pub(super) next_tick_at: Time,
    pub(super) state: State,
}

impl Context {
    pub(super) fn new(id: ContextId, next_tick_at: Time, state: State) -> Context {
        Context {
            id,
            next_tick_at,
            state,
        }
    }

    /// The public tag of the state.
    pub(super) fn phase(&self) -> Phase {
        match self.state {
            State::Joining(_) => Phase::Joining,
            State::Member(_) => Phase::Member,
            State::Leaving { .. } => Phase::Leaving,
        }
    }

    /// This node's copy, in any phase that has one.
    pub(super) fn held(&self) -> Option<&Held> {
        match &self.state {
            State::Joining(catchup) => catchup.held(),
            State::Member(held) | State::Leaving { held, .. } => Some(held),
        }
    }

    pub(super) fn held_mut(&mut self) -> Option<&mut Held> {
        match &mut self.state {
            State::Joining(catchup) => catchup.held_mut(),
            State::Member(held) | State::Leaving { held, .. } => Some(held),
        }
    }

    pub(super) fn replica(&self) -> Option<&Replica> {
        self.held().map(|held| &held.replica)
    }

    /// Applies what this input accepted into the copy, if any, and reports
    /// it (see `Held::settle`).
    pub(super) fn settle(&mut self, out: &mut Out) {
        let id = self.id;
        if let Some(held) = self.held_mut() {
            held.settle(id, out);
        }
    }

    /// Notes who holds stability back, and persists a checkpoint the copy
    /// took (after every input and command).
    pub(super) fn note_stability(&mut self, now: Time, out: &mut Out, me: &MemberId) {
        // A leaver never stands on a cut above its own leave: it must keep
        // the leave's body to push it, also after a restart.
        let leave_height = match &self.state {
            State::Leaving { leave, .. } => Some(leave.tx.order_key().height),
            _ => None,
        };
        if let Some(held) = self.held_mut() {
            debug_assert!(
                held.replica.is_compacted(),
                "a settled copy compacts all that is stable, whatever moved its frontier"
            );
            held.note_stability(now);
            // Keeps the offer current while the latest checkpoint is
            // offerable, also one that neither persists nor folds here
            // (loaded by a join or a forward, already both): else a newer
            // cut nobody vouches for leaves nothing to offer.
            held.offerable(me);
            let cut = held.replica.checkpoint().map(|c| c.header.height);
            if leave_height.is_some_and(|leave| cut.is_some_and(|cut| cut > leave)) {
                return;
            }
            held.persist_checkpoint(out, me);
            held.fold_if_offerable(me);
        }
    }

    /// The earliest of this context's timers.
    pub(super) fn next_deadline(&self) -> Time {
        let fetch = self.held().and_then(|h| h.fetch).map(|f| f.deadline);
        let forward = self.held().and_then(Held::forward_deadline);
        let own = match &self.state {
            State::Joining(catchup) => Some(catchup.outstanding.deadline),
            State::Member(_) => None,
            State::Leaving { leave, .. } => Some(leave.push_at),
        };
        [fetch, forward, own]
            .into_iter()
            .flatten()
            .fold(self.next_tick_at, Time::min)
    }

    /// The copy this node serves `peer`'s sync requests (heads, fetch,
    /// stream, app) from and takes its pushes into: any node the membership
    /// names, including one that left, so that a node holding a stale view
    /// of its own membership (it caught up from a member that had not yet
    /// seen its earlier leave) can still learn where it stands. A joiner
    /// serves no one.
    pub(super) fn serving(&self, peer: &MemberId) -> Option<&Held> {
        match &self.state {
            State::Member(held) | State::Leaving { held, .. }
                if held.replica.status(peer).is_some() =>
            {
                Some(held)
            }
            _ => None,
        }
    }

    pub(super) fn serves(&self, peer: &MemberId) -> bool {
        self.serving(peer).is_some()
    }

    /// `from` acknowledged `leave`, counting `members` as the members:
    /// whether this node is leaving, `leave` is the leave it pushes, and
    /// now [`LEAVE_ACKS`] members acknowledged it, or as many as there are
    /// in this copy's view or the acknowledging member's (so that a leaver
    /// that has not heard of another's leave does not wait for it for
    /// ever), and it may delete.
    pub(super) fn acknowledged(
        &mut self,
        leave: TxId,
        from: MemberId,
        members: &[MemberId],
        me: &MemberId,
    ) -> bool {
        let State::Leaving { held, leave: own } = &mut self.state else {
            return false;
        };
        if own.tx.id() != leave {
            return false;
        }
        own.acked_by.insert(from);
        own.heard_members
            .extend(members.iter().filter(|m| *m != me && **m != from));
        let others = held.holders_besides(me).len();
        let theirs = members.iter().filter(|m| *m != me).count();
        let wanted = others.min(theirs).clamp(1, LEAVE_ACKS);
        own.acked_by.len() >= wanted
    }
}

/// Whether `peer` may catch up from this member's copy: it must be invited
/// (or already a member, resuming).
pub(super) fn accepts_catchup(held: &Held, peer: &MemberId) -> bool {
    matches!(
        held.replica.status(peer),
        Some(MemberStatus::Member | MemberStatus::Invited)
    )
}

/// The vouches of a loaded checkpoint this copy keeps to offer it: not its
/// own (a rejoiner may load a checkpoint it vouched for before it left),
/// which a joiner it serves counts for nothing, the responder's own.
pub(super) fn others_vouches(
    mut vouches: Vec<SignedAnnouncement>,
    me: &MemberId,
) -> Vec<SignedAnnouncement> {
    vouches.retain(|vouch| vouch.body.author != *me);
    vouches
}
