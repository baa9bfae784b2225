//! Sync between copies: pushes, anti-entropy (heads), fetches of what is
//! missing, and the answers a copy serves (fetch, stream).
//!
//! Owns: the one fetch in flight per copy and its continuation, the periodic
//! exchange of heads, and the handling of a pushed transaction (including
//! the acknowledgement of a leave).
//!
//! Invariants:
//! - at most one fetch per copy is in flight; its `want` is non-empty and
//!   holds at most `SYNC_IDS_MAX` ids, and so does every `have` and `heads`
//!   this node sends;
//! - only nodes the membership names are served (`Context::serving`): a
//!   member fetches from one it does not know yet, which may hold the
//!   invite that names it, and serves it nothing; only members take part
//!   in anti-entropy, sending their heads to members and to invited
//!   identities (which may have joined unheard of);
//! - a leave is acknowledged only once it is accepted here (or lies below
//!   a checkpoint cut here, so in the prefix the cut closes), hence once
//!   everything the leaver had is.

use crate::ids::{ContextId, MemberId, TxId};
use crate::limits::{LEAVE_ACKS, SYNC_IDS_MAX};
use crate::membership::MemberStatus;
use crate::replica::Replica;
use crate::stability::SignedAnnouncement;
use crate::time::Time;
use crate::tx::{OrderKey, SignedTx, Tx, TxError, TxKind};
use crate::wire::{Body, CheckpointMark, RefuseReason, RequestId};

use super::Env;
use super::MessageError;
use super::catchup::CatchupStep;
use super::context::{Context, Held, Outstanding, State};
use super::out::Out;

impl Context {
    /// A pushed transaction.
    pub(super) fn on_tx(
        &mut self,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        from: MemberId,
        signed: SignedTx,
    ) -> Result<(), MessageError> {
        let context = self.id;
        let serves = self.serves(&from);
        // Only a member acknowledges a leave: a leaver (or a joiner) that
        // did would let the other leaver delete a copy whose transactions it
        // may be the last to hold, and then delete its own. Except a leaver
        // for whom the sender is the last other member: nobody is left to
        // hand either copy to, and both delete (the last two leaving).
        let acknowledges = match &self.state {
            State::Member(_) => true,
            State::Leaving { held, .. } => held.holders_besides(&env.me).iter().all(|m| *m == from),
            State::Joining(_) => false,
        };
        let Some(held) = self.held_mut() else {
            return Ok(());
        };
        let is_leave_of_sender = signed.body.author == from && signed.body.kind == TxKind::Leave;
        // A leaver pushes its leave until acknowledged, even after this member
        // applied it (and so stopped serving the leaver): acknowledge again,
        // also once the leave is below a checkpoint cut here and its body
        // released (`Replica::covers`: it is in the prefix the cut closes).
        let key = OrderKey {
            height: signed.body.height,
            id: signed.body.id(),
        };
        let known = is_leave_of_sender && held.replica.covers(&key);
        if !known && !serves {
            return Ok(());
        }
        let tx = Tx::from_signed(signed, env.verifier.as_ref())?;
        let id = tx.id();
        // Whom this copy counts as members, read while it is settled (before
        // the offer, so the leaver may still be listed: it is left out).
        let members: Vec<MemberId> = if is_leave_of_sender {
            let members = held.replica.membership().members();
            members.filter(|m| *m != from).take(LEAVE_ACKS).collect()
        } else {
            Vec::new()
        };
        held.offer(context, env, out, now, from, tx);
        // Acknowledge a leave once it is accepted here: the leaver may delete.
        if acknowledges && is_leave_of_sender && held.replica.covers(&key) {
            out.send(context, from, Body::LeaveAck { leave: id, members });
        }
        Ok(())
    }

    /// A member's heads: take its announcements, fetch what is unknown
    /// here, and answer with this node's heads if they differ (unless this
    /// is the answer).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_heads(
        &mut self,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        from: MemberId,
        heads: Vec<TxId>,
        reply: bool,
        announcements: Vec<SignedAnnouncement>,
        stands_on: Option<CheckpointMark>,
    ) {
        let context = self.id;
        let held = match &mut self.state {
            State::Member(held) => held,
            State::Leaving { held, .. } => {
                // A leaver answers with its heads and the checkpoint it
                // stands on: a member may lack what only this copy still
                // holds, below a cut it dropped the bodies of, and be
                // brought forward onto its checkpoint (`node/forward.rs`)
                // or fetch the rest from it. It fetches what the member
                // holds (so it learns of other leaves, and waits for fewer
                // acknowledgements), never what only it would then hold.
                if held.replica.status(&from).is_none() {
                    return;
                }
                held.fetch_behind(context, env, out, now, from, &heads);
                if !reply {
                    held.send_heads(context, env, out, from, true);
                }
                return;
            }
            State::Joining(catchup) => {
                // A member that counts this node as invited sends it heads:
                // a peer known to hold the context, to be redirected to.
                catchup.heard_from(from, env);
                return;
            }
        };
        if held.replica.status(&from).is_none() {
            // Not named in this copy's membership: invited by a member
            // whose invite has not reached this copy (it may be the only
            // way to it: the inviter may be gone). Its heads are fetched
            // (checked like every transaction: only a member's invite
            // makes it one), nothing is served to it and nothing it says
            // of stability is heard until the membership names it.
            let unknown = held.unknown_of(&heads);
            if !unknown.is_empty() {
                held.start_fetch(context, env, out, now, from, unknown);
            }
            return;
        }
        held.hear_announcements(context, env, out, announcements);
        if let Some(mark) = stands_on {
            held.forward_if_behind(context, env, out, now, from, mark);
        }
        let mine: Vec<TxId> = held.replica.heads().iter().copied().collect();
        held.fetch_behind(context, env, out, now, from, &heads);
        let differ = {
            let mut theirs = heads;
            theirs.sort_unstable();
            theirs.dedup();
            theirs != mine
        };
        if differ && !reply {
            held.send_heads(context, env, out, from, true);
        }
    }

    /// Heads from `from` at a node that stores nothing now
    /// (`Node::handle_message_storing_nothing`): answered with this copy's
    /// own when they differ and were not themselves an answer, so the
    /// member fetches what only this copy holds; nothing is fetched from it
    /// and nothing it says of stability is heard.
    pub(super) fn answer_heads(
        &mut self,
        env: &Env,
        out: &mut Out,
        from: MemberId,
        heads: Vec<TxId>,
        reply: bool,
    ) {
        let context = self.id;
        let held = match &mut self.state {
            State::Member(held) | State::Leaving { held, .. } => held,
            State::Joining(_) => return,
        };
        if reply || held.replica.status(&from).is_none() {
            return;
        }
        let mine: Vec<TxId> = held.replica.heads().iter().copied().collect();
        let mut theirs = heads;
        theirs.sort_unstable();
        theirs.dedup();
        if theirs != mine {
            held.send_heads(context, env, out, from, true);
        }
    }

    /// Serves a fetch: what `want` needs that is not in the past of `have`.
    pub(super) fn on_fetch(
        &self,
        env: &mut Env,
        out: &mut Out,
        from: MemberId,
        request: RequestId,
        want: &[TxId],
        have: &[TxId],
    ) {
        let Some(held) = self.serving(&from) else {
            return;
        };
        let txs_max = env.batch_txs_max();
        let (txs, complete) = held.replica.missing_for(
            &want[..want.len().min(SYNC_IDS_MAX)],
            &have[..have.len().min(SYNC_IDS_MAX)],
            txs_max,
            env.config.sync_batch_bytes_max,
        );
        let txs = txs.iter().map(|tx| tx.signed().clone()).collect();
        out.send(
            self.id,
            from,
            Body::Txs {
                request,
                txs,
                more: None,
                complete,
            },
        );
    }

    /// Serves a catchup stream: the order after `after`, one batch.
    pub(super) fn on_stream(
        &self,
        env: &mut Env,
        out: &mut Out,
        from: MemberId,
        request: RequestId,
        after: Option<OrderKey>,
    ) {
        let Some(held) = self.serving(&from) else {
            return;
        };
        if !held.replica.holds_after(after) {
            // This copy stands on a checkpoint above `after`: the joiner
            // starts over, and is offered the checkpoint.
            let reason = RefuseReason::Superseded;
            out.send(self.id, from, Body::CatchupRefused { request, reason });
            return;
        }
        let txs_max = env.batch_txs_max();
        let (txs, more) = held
            .replica
            .order_after(after, txs_max, env.config.sync_batch_bytes_max);
        let complete = more.is_none();
        out.send(
            self.id,
            from,
            Body::Txs {
                request,
                txs,
                more,
                complete,
            },
        );
    }

    /// A batch of transactions: the answer to this copy's fetch, or to a
    /// joiner's stream request. Anything else is stale and ignored.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_txs(
        &mut self,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        from: MemberId,
        request: RequestId,
        batch: Vec<SignedTx>,
        more: Option<OrderKey>,
        complete: bool,
    ) -> Result<(), MessageError> {
        let context = self.id;
        if let State::Joining(catchup) = &mut self.state
            && let CatchupStep::Stream(stream) = &mut catchup.step
            && catchup.outstanding.answered_by(request, from)
        {
            debug_assert!(
                stream.held.fetch.is_none_or(|f| f.request != request),
                "request ids are never reused"
            );
            let (_, error) = stream.held.take_batch(context, env, out, now, from, batch);
            // The end of the stream reads this node's status: settle first.
            stream.held.settle(context, out);
            match more {
                Some(after) => {
                    stream.after = Some(after);
                    catchup.attempts = 0;
                    if env.stress(6) {
                        // Redundant: ask twice; the first answer will be stale.
                        catchup.send_step(context, env, out, from, now);
                    }
                    catchup.send_step(context, env, out, from, now);
                }
                None => match stream.held.replica.status(&env.me) {
                    Some(MemberStatus::Invited | MemberStatus::Member)
                        if env.holds_tombstone(&stream.held.replica) =>
                    {
                        self.finish_catchup(env, out, now);
                    }
                    // Not invited in the order we were given, or given by a
                    // member that has not yet seen this node's last own
                    // transaction (from before it left): ask again later,
                    // maybe elsewhere (the invite, or what this node made
                    // last, may still be travelling).
                    _ => catchup.retry_later(env, now),
                },
            }
            return error.map_or(Ok(()), |e| Err(e.into()));
        }
        let Some(held) = self.held_mut() else {
            return Ok(());
        };
        if !held.fetch.is_some_and(|f| f.answered_by(request, from)) {
            return Ok(());
        }
        // The fetch stays outstanding while its batch is offered, so that a
        // transaction of the batch going pending does not start another
        // fetch for parents that come later in the same batch; the
        // continuation is asked for once the whole batch is in.
        let received = batch.len();
        let (progressed, error) = held.take_batch(context, env, out, now, from, batch);
        held.fetch = None;
        let still_missing = !held.pending.missing().is_empty();
        if still_missing && (progressed || !complete) && received > 0 {
            held.start_fetch(context, env, out, now, from, Vec::new());
        }
        error.map_or(Ok(()), |e| Err(e.into()))
    }

    /// The fetch timer: a fetch unanswered by its deadline is abandoned (the
    /// next sync round asks again).
    pub(super) fn fetch_timer(&mut self, now: Time) {
        if let Some(held) = self.held_mut()
            && held.fetch.is_some_and(|f| f.deadline <= now)
        {
            held.fetch = None;
        }
    }

    /// The sync timer: schedules the next round, and runs this one if a
    /// member.
    pub(super) fn sync_timer(&mut self, env: &mut Env, out: &mut Out, now: Time) {
        if self.next_tick_at > now {
            return;
        }
        self.next_tick_at = env.tick_after(now);
        let context = self.id;
        if let State::Member(held) = &mut self.state {
            held.sync_tick(context, env, out, now);
        }
    }
}

impl Held {
    /// The first `SYNC_IDS_MAX` of a peer's `heads` this copy neither holds
    /// nor has pending: what to fetch from it.
    fn unknown_of(&self, heads: &[TxId]) -> Vec<TxId> {
        heads
            .iter()
            .filter(|id| !self.replica.knows(id) && !self.pending.contains(id))
            .copied()
            .take(SYNC_IDS_MAX)
            .collect()
    }

    /// Fetches from `from` the first of its `heads` this copy does not
    /// know, and the parents its pending transactions wait for (the heads
    /// may be pending here already).
    fn fetch_behind(
        &mut self,
        context: ContextId,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        from: MemberId,
        heads: &[TxId],
    ) {
        let unknown = self.unknown_of(heads);
        if !unknown.is_empty() || !self.pending.missing().is_empty() {
            self.start_fetch(context, env, out, now, from, unknown);
        }
    }

    /// Verifies a batch and offers every valid transaction in it, in order
    /// (deferred: the caller's input settles the copy once, for the whole
    /// batch). Returns whether more transactions are accepted than before,
    /// and the first verification error.
    fn take_batch(
        &mut self,
        context: ContextId,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        from: MemberId,
        batch: Vec<SignedTx>,
    ) -> (bool, Option<TxError>) {
        let (txs, error) = Tx::from_signed_batch(batch, env.verifier.as_ref());
        let accepted_before = self.replica.accepted();
        for tx in txs {
            self.offer(context, env, out, now, from, tx);
        }
        (self.replica.accepted() > accepted_before, error)
    }

    /// Anti-entropy: heads to one random other member; missing parents are
    /// fetched from one. And heads to one random invited identity: it may
    /// have joined already, in a copy that holds its own join and not yet
    /// this copy's; two joiners whose inviter is gone before it heard of
    /// their joins each count the other as invited only, and meet only
    /// this way. (An invited identity still joining ignores the heads.)
    fn sync_tick(&mut self, context: ContextId, env: &mut Env, out: &mut Out, now: Time) {
        let invited = self.invited_others(&env.me);
        if !invited.is_empty() {
            let peer = invited[env.pick(invited.len())];
            self.send_heads(context, env, out, peer, false);
        }
        let others = self.other_members(&env.me);
        if others.is_empty() {
            return;
        }
        let peer = others[env.pick(others.len())];
        if env.stress(6) {
            // Redundant: heads to a second peer too.
            let second = others[env.pick(others.len())];
            if second != peer {
                self.send_heads(context, env, out, second, false);
            }
        }
        if env.stress(8) {
            // Abandon the fetch in flight: its answer will match nothing.
            self.fetch = None;
        }
        self.send_heads(context, env, out, peer, false);
        if !self.pending.missing().is_empty() {
            // A peer drawn at random, not one that just spoke: it may be
            // gone, so it never takes the fetch from one in flight.
            self.fetch_from(context, env, out, now, peer, Vec::new(), false);
        }
    }

    /// Sends this copy's heads, with its announcements, to `to`.
    pub(super) fn send_heads(
        &mut self,
        context: ContextId,
        env: &Env,
        out: &mut Out,
        to: MemberId,
        reply: bool,
    ) {
        let heads = heads_to_send(&self.replica);
        let announcements = self.announcements_for(context, env, out, &to);
        let stands_on = self.replica.base_height().map(|height| CheckpointMark {
            height,
            applied: self.replica.base_len() as u64,
        });
        let body = Body::Heads {
            heads,
            reply,
            announcements,
            stands_on,
        };
        out.send(context, to, body);
    }

    /// Asks `peer` for what this node misses: `want` and the parents pending
    /// transactions wait for. At most one fetch per copy is in flight.
    ///
    /// `peer` has just spoken (its heads, a transaction, an answer): a fetch
    /// in flight to another peer that has not answered within a sync round
    /// gives way to it. Else a member that is gone (crashed for good) could
    /// hold the one fetch of a copy round after round, each time a sync
    /// round draws it, while the members that show what the copy lacks
    /// wait (found by the fuzzer with full disks:
    /// `scenarios/regressions/fetch-held-by-a-dead-member.toml`). The
    /// abandoned fetch's late answer matches nothing.
    pub(super) fn start_fetch(
        &mut self,
        context: ContextId,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        peer: MemberId,
        want: Vec<TxId>,
    ) {
        self.fetch_from(context, env, out, now, peer, want, true);
    }

    #[allow(clippy::too_many_arguments)]
    fn fetch_from(
        &mut self,
        context: ContextId,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        peer: MemberId,
        mut want: Vec<TxId>,
        heard: bool,
    ) {
        let in_flight = self.fetch.is_some_and(|fetch| {
            let waited = env
                .config
                .request_timeout_ms
                .saturating_sub(fetch.deadline.saturating_sub(now));
            let overdue = waited >= env.config.sync_interval_ms;
            !heard || fetch.peer == peer || !overdue
        });
        if in_flight {
            return;
        }
        want.extend(self.pending.missing().iter().copied());
        want.sort_unstable();
        want.dedup();
        want.truncate(SYNC_IDS_MAX);
        if want.is_empty() {
            return;
        }
        let have = heads_to_send(&self.replica);
        let request = env.next_request_id();
        self.fetch = Some(Outstanding {
            request,
            peer,
            deadline: env.timeout_at(now),
        });
        debug_assert!(want.len() <= SYNC_IDS_MAX && have.len() <= SYNC_IDS_MAX);
        out.send(
            context,
            peer,
            Body::Fetch {
                request,
                want,
                have,
            },
        );
    }
}

/// This node's heads, the highest ones if there are more than fit.
pub(super) fn heads_to_send(replica: &Replica) -> Vec<TxId> {
    let heads = replica.heads();
    if heads.len() <= SYNC_IDS_MAX {
        return heads.iter().copied().collect();
    }
    let mut keys: Vec<OrderKey> = heads
        .iter()
        .filter_map(|id| replica.tx(id))
        .map(Tx::order_key)
        .collect();
    keys.sort_unstable();
    let mut ids: Vec<TxId> = keys[keys.len() - SYNC_IDS_MAX..]
        .iter()
        .map(|k| k.id)
        .collect();
    ids.sort_unstable();
    debug_assert_eq!(ids.len(), SYNC_IDS_MAX);
    ids
}
