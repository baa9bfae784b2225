//! Bringing a member forward: a member that lacks transactions below the
//! cut of a checkpoint another member stands on (it was away, partitioned,
//! while the others' stable prefix grew and they dropped its bodies) can no
//! longer fetch them. It loads that checkpoint instead, as a joiner does,
//! and keeps everything it holds above the cut. The member ahead may be
//! leaving: a leaver answers heads and serves a member's forward, since it
//! may be the last to stand on a checkpoint that covers what B lacks.
//!
//! ```text
//!   member B                                  member A (stands on cut H)
//!   ◄── Heads { stands_on: (H, n) }            (B holds fewer than n below H)
//!   CatchupRequest                       ──►   CatchupAccepted { offer }
//!   CheckpointRequest { after } (rep.)   ──►   CheckpointChunk { entries, more }
//!   (checked as a joiner checks it; B's copy becomes the checkpoint plus
//!   every transaction B held above H, re-ordered on top, settled once)
//! ```
//!
//! Owns: `Held::forward`, the one forward in flight, its request and its
//! timer.
//!
//! Invariants:
//! - a forward starts only from a peer whose cut is above this copy's own
//!   and below which this copy holds fewer transactions than the peer's
//!   checkpoint counts (every transaction below a stable cut is in it, so
//!   fewer means some are missing here, never the other way round);
//! - the copy is replaced only by a checkpoint that passed the joiner's
//!   checks, and the replacement holds every transaction the old copy held
//!   at or above the cut (the others are in the checkpoint), so nothing
//!   accepted is lost; if any of them is refused, the old copy stays;
//! - a forward that is not answered in time is dropped, and the next heads
//!   from a peer ahead start another;
//! - the copy can move on while a forward loads (it folds its own newer
//!   checkpoint, or fetches what it lacked): the test that started the
//!   forward is made again on the offered checkpoint and once more before
//!   the copy is replaced, and a checkpoint that no longer brings it
//!   forward is dropped, never loaded onto a copy already past it.

use std::sync::Arc;

use crate::checkpoint::{Assembly, Checkpoint};
use crate::ids::{ContextId, Key, MemberId};
use crate::replica::Replica;
use crate::stability::SignedAnnouncement;
use crate::time::Time;
use crate::wire::{Body, CheckpointMark, CheckpointOffer, RequestId};

use super::Env;
use super::catchup::check_offer;
use super::context::{Held, Outstanding};
use super::out::{Event, Out};

/// A forward in flight.
pub(super) struct Forward {
    outstanding: Outstanding,
    step: ForwardStep,
}

enum ForwardStep {
    /// Asked for an offer.
    Requested,
    /// Downloading the offered checkpoint's entries.
    Loading(Box<Loading>),
}

struct Loading {
    assembly: Assembly,
    vouches: Vec<SignedAnnouncement>,
    vouched_by: Vec<MemberId>,
}

impl Held {
    /// Heads from `from` say it stands on `mark`: starts a forward from it
    /// if this copy lacks transactions below that cut.
    pub(super) fn forward_if_behind(
        &mut self,
        context: ContextId,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        from: MemberId,
        mark: CheckpointMark,
    ) {
        if self.forward.is_some() {
            return;
        }
        if !self.forward_brings_forward(mark.height, mark.applied) {
            return;
        }
        let request = env.next_request_id();
        self.forward = Some(Forward {
            outstanding: Outstanding {
                request,
                peer: from,
                deadline: env.timeout_at(now),
            },
            step: ForwardStep::Requested,
        });
        out.send(context, from, Body::CatchupRequest { request });
    }

    /// Whether a checkpoint cut at `height` with `applied` transactions
    /// below it would bring this copy forward: its cut is above this copy's
    /// own, and this copy holds fewer transactions below it (so it lacks
    /// some it can no longer fetch).
    fn forward_brings_forward(&self, height: u64, applied: u64) -> bool {
        let own_cut = self.replica.base_height().unwrap_or(0);
        height > own_cut && (self.replica.held_below(height) as u64) < applied
    }

    /// The peer offered its checkpoint: checked as a joiner checks one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_forward_accepted(
        &mut self,
        context: ContextId,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        from: MemberId,
        request: RequestId,
        offer: Option<Box<CheckpointOffer>>,
    ) {
        let Some(forward) = &self.forward else {
            return;
        };
        if !forward.outstanding.answered_by(request, from)
            || !matches!(forward.step, ForwardStep::Requested)
        {
            return;
        }
        let Some(offer) = offer else {
            // Its newest checkpoint is not vouched for yet: the next heads
            // from it start another forward.
            self.forward = None;
            return;
        };
        if !self.forward_brings_forward(offer.header.height, offer.header.applied) {
            // The copy moved on since the heads that started this forward
            // (it folded a newer checkpoint of its own, say).
            self.forward = None;
            return;
        }
        let checked = check_offer(*offer, context, from, env).and_then(|offer| {
            Assembly::new(offer.header)
                .map(|assembly| (assembly, offer.vouches, offer.vouched_by))
                .map_err(|e| e.to_string())
        });
        match checked {
            Ok((assembly, vouches, vouched_by)) => {
                let forward = self.forward.as_mut().expect("matched above");
                forward.step = ForwardStep::Loading(Box::new(Loading {
                    assembly,
                    vouches,
                    vouched_by,
                }));
                self.send_forward_request(context, env, out, now);
            }
            Err(reason) => self.refuse_forward(context, out, from, reason),
        }
    }

    fn send_forward_request(
        &mut self,
        context: ContextId,
        env: &mut Env,
        out: &mut Out,
        now: Time,
    ) {
        let forward = self.forward.as_mut().expect("a forward in flight");
        let ForwardStep::Loading(loading) = &forward.step else {
            unreachable!("requests entries only while loading");
        };
        let assembly = &loading.assembly;
        let request = env.next_request_id();
        forward.outstanding.request = request;
        forward.outstanding.deadline = env.timeout_at(now);
        let body = Body::CheckpointRequest {
            request,
            height: assembly.header().height,
            after: assembly.last_key(),
        };
        out.send(context, forward.outstanding.peer, body);
    }

    /// Entries of the checkpoint being loaded; once all are in and match,
    /// this copy is brought forward onto it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_forward_chunk(
        &mut self,
        context: ContextId,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        from: MemberId,
        request: RequestId,
        height: u64,
        entries: Vec<(Key, Vec<u8>)>,
        more: bool,
    ) {
        let Some(forward) = &mut self.forward else {
            return;
        };
        if !forward.outstanding.answered_by(request, from) {
            return;
        }
        let ForwardStep::Loading(loading) = &mut forward.step else {
            return;
        };
        let assembly = &mut loading.assembly;
        if assembly.header().height != height {
            return;
        }
        let empty = entries.is_empty();
        let added = assembly.add(entries).map_err(|e| e.to_string());
        match added {
            Ok(()) if more && !empty => {
                self.send_forward_request(context, env, out, now);
                return;
            }
            Ok(()) if !more => {}
            Ok(()) => {
                self.refuse_forward(context, out, from, "an empty chunk that claims more".into());
                return;
            }
            Err(reason) => {
                self.refuse_forward(context, out, from, reason);
                return;
            }
        }
        let Some(Forward {
            step: ForwardStep::Loading(loading),
            ..
        }) = self.forward.take()
        else {
            unreachable!("matched above");
        };
        let Loading {
            assembly,
            vouches,
            vouched_by,
        } = *loading;
        let vouches = super::context::others_vouches(vouches, &env.me);
        let header = assembly.header();
        if !self.forward_brings_forward(header.height, header.applied) {
            // The copy moved on while the entries came in.
            return;
        }
        match assembly.finish() {
            Ok(checkpoint) => {
                let checkpoint = Arc::new(checkpoint);
                if let Err(reason) = self.bring_forward(env, out, &checkpoint, &vouches) {
                    self.refuse_forward(context, out, from, reason);
                    return;
                }
                self.loaded_checkpoint(context, out, from, &checkpoint, vouches, vouched_by);
            }
            Err(error) => self.refuse_forward(context, out, from, error.to_string()),
        }
    }

    fn refuse_forward(
        &mut self,
        context: ContextId,
        out: &mut Out,
        from: MemberId,
        reason: String,
    ) {
        self.forward = None;
        out.event(Event::CheckpointRefused {
            context,
            from,
            reason,
        });
    }

    /// Replaces the copy with one standing on `checkpoint` that holds
    /// everything the old one held at or above the cut, settled once; the
    /// announcements heard are taken again. The old copy stays if anything
    /// is refused.
    fn bring_forward(
        &mut self,
        env: &Env,
        out: &mut Out,
        checkpoint: &Arc<Checkpoint>,
        vouches: &[SignedAnnouncement],
    ) -> Result<(), String> {
        let old = &self.replica;
        debug_assert!(old.is_settled());
        let cut = checkpoint.header.height;
        let mut replica = Replica::from_checkpoint(
            old.genesis().clone(),
            Arc::clone(old.app_blob()),
            Arc::clone(checkpoint),
        )
        .map_err(|e| e.to_string())?;
        replica.set_local(env.me, env.tombstone(&replica.context()));
        for key in old.order_keys().filter(|key| key.height >= cut) {
            let tx = old.tx(&key.id).expect("a held transaction").clone();
            replica
                .insert_deferred(tx)
                .map_err(|e| format!("keeping {}: {e}", key.id.short()))?;
        }
        replica.settle();
        for announcement in self.announcements.heard.values() {
            if let Some(floor) = replica.improving_floor(&announcement.body) {
                replica.announce(&announcement.body.author, floor);
            }
        }
        if replica.accepted() < old.accepted() {
            return Err(format!(
                "the checkpoint holds {} transactions with the tail, fewer than the {} held here",
                replica.accepted(),
                old.accepted()
            ));
        }
        self.replica = replica;
        self.persist_checkpoint_records(out, checkpoint, vouches.to_vec());
        // What waited for parents the checkpoint covers can go in now.
        for tx in self.pending.drain_sorted() {
            let context = self.replica.context();
            if self.replica.covers(&tx.order_key()) {
                continue;
            }
            if tx.parents().iter().all(|p| self.replica.has_parent(p)) {
                self.accept_or_drop(context, tx, out);
            } else {
                self.pending.hold(tx, |p| self.replica.has_parent(p));
            }
        }
        Ok(())
    }

    /// A forward's request went unanswered: drop it (the next heads from a
    /// member ahead start another).
    pub(super) fn forward_timer(&mut self, now: Time) {
        if self
            .forward
            .as_ref()
            .is_some_and(|forward| forward.outstanding.deadline <= now)
        {
            self.forward = None;
        }
    }

    pub(super) fn forward_deadline(&self) -> Option<Time> {
        self.forward.as_ref().map(|f| f.outstanding.deadline)
    }

    /// A refusal of the forward's request (its checkpoint was superseded,
    /// say): drop it.
    pub(super) fn on_forward_refused(&mut self, request: RequestId, from: MemberId) {
        if self
            .forward
            .as_ref()
            .is_some_and(|forward| forward.outstanding.answered_by(request, from))
        {
            self.forward = None;
        }
    }
}
