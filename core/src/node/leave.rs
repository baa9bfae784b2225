//! The leave handshake.
//!
//! ```text
//!   leaver                                 member
//!   Leave (authored, pushed)          ──►  accepts it (and so everything the leaver had)
//!   Leave again, every request timeout ──► LeaveAck { leave } once accepted here
//!   (from LEAVE_ACKS members, or every other member if fewer)
//!   deletes its copy (`Record::Deleted`, `Event::Left`)
//! ```
//!
//! Owns: the transition Member → Leaving (or straight to deleted, for a
//! last member or a node still catching up), the leaver's push timer, and
//! the acknowledgement that ends it. (A member's side, acknowledging, is in
//! `sync`, with the other pushes.)
//!
//! Invariants: a leaver keeps its copy, with its pending set and its fetch,
//! until `LEAVE_ACKS` members (two, or every other member if fewer)
//! acknowledge the very leave it pushes; so nothing a leaver accepted is
//! lost with its copy, even if one of them then crashes for good. Only a
//! member acknowledges (never another leaver, which would delete what it
//! acknowledged for with its own copy, nor a joiner). An acknowledgement
//! names whom its member counts as members, so that a leaver that never
//! heard of another's leave waits for no more acknowledgements than there
//! can be. A leave waits while too few members are reachable, as stability
//! does. A leaver never folds a checkpoint cut above its own leave
//! (`Context::note_stability`): it keeps the leave it pushes, also across a
//! restart.

use std::collections::BTreeMap;

use crate::ids::{ContextId, MemberId, TxId};
use crate::time::Time;
use crate::tx::TxKind;

use super::context::{Context, Held, Leave, State};
use super::out::Out;
use super::{CommandError, Env, Node, Phase};

impl Node {
    /// Leaves a context (see `Node::leave`).
    pub(super) fn leave_context(
        &mut self,
        now: Time,
        context: ContextId,
    ) -> Result<(), CommandError> {
        // Taken out of the map so that its state moves by value; put back
        // unless deleted.
        let c = self
            .contexts
            .remove(&context)
            .ok_or(CommandError::UnknownContext(context))?;
        let Context {
            id,
            next_tick_at,
            state,
        } = c;
        let mut held = match state {
            State::Joining(_) => {
                self.deleted(&Context::new(id, next_tick_at, state));
                return Ok(());
            }
            State::Leaving { .. } => {
                self.contexts
                    .insert(context, Context::new(id, next_tick_at, state));
                return Err(CommandError::NotAMember(context, Some(Phase::Leaving)));
            }
            State::Member(held) => held,
        };
        let tx = match held.author_tx(context, TxKind::Leave, &self.env, &mut self.out) {
            Ok((tx, _)) => tx,
            Err(error) => {
                self.contexts
                    .insert(context, Context::new(id, next_tick_at, State::Member(held)));
                return Err(error);
            }
        };
        if held.holders_besides(&self.env.me).is_empty() {
            self.deleted(&Context::new(id, next_tick_at, State::Member(held)));
            return Ok(());
        }
        let leave = Leave::new(tx, self.env.timeout_at(now), &self.env.me);
        let state = State::Leaving { held, leave };
        let mut c = Context::new(id, next_tick_at, state);
        c.note_stability(now, &mut self.out, &self.env.me);
        self.contexts.insert(context, c);
        Ok(())
    }
}

impl Held {
    /// The last leave of every other identity that ever left, by its
    /// author, also one invited again since (its invite may have been made
    /// by a member that did not know it had left, and it may still be
    /// leaving); a leave below this copy's cut is not found (its body is
    /// gone).
    pub(super) fn leaves_of_others(&self, me: &MemberId) -> Vec<(MemberId, TxId)> {
        let mut leaves = BTreeMap::new();
        for id in self.replica.order() {
            let tx = self.replica.tx(&id).expect("ordered");
            if matches!(tx.kind(), TxKind::Leave) && tx.author() != *me {
                leaves.insert(tx.author(), id);
            }
        }
        leaves.into_iter().collect()
    }
}

impl Context {
    /// The leave timer: push the leave again to every other member, and to
    /// the members an acknowledging member counts (one
    /// that acknowledged acknowledges again, so that a leaver that learned
    /// of another's leave since, and so wants fewer, may delete), and send
    /// each this copy's heads, so that one that lacks what the leaver took
    /// after its leave (its author's copy gone) fetches it from here.
    pub(super) fn leave_timer(&mut self, env: &Env, out: &mut Out, now: Time) {
        let context = self.id;
        if let State::Leaving { held, leave } = &mut self.state
            && leave.push_at <= now
        {
            leave.push_at = env.timeout_at(now);
            let mut to = held.holders_besides(&env.me);
            to.extend(leave.heard_members.iter().copied());
            to.sort_unstable();
            to.dedup();
            for member in to {
                out.push_tx(context, member, &leave.tx, &held.replica);
                held.send_heads(context, env, out, member, false);
            }
        }
    }
}
