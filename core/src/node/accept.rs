//! Authoring and accepting transactions into a copy.
//!
//! Owns: the one path into a replica (`Held::insert`), which queues the
//! transaction's record in the same step (the first half of the durability
//! rule, see `out`); the settle of a copy (`Held::settle`), which applies
//! what was inserted and queues its events; the release of pending
//! transactions once their parents are accepted; the refusal of whatever
//! waits for a transaction the DAG refused.
//!
//! Inserts are deferred: everything that becomes insertable while the node
//! handles one input is linked into the order first, and the copy is settled
//! once, at the end of the input (`Node::handle_message`,
//! `Node::handle_timeout`) or wherever a handler reads state or membership
//! after inserting (the joiner's stream end, authoring). The replica asserts
//! that nothing reads them unsettled.
//!
//! Invariants:
//! - a transaction is inserted only once all its parents are in the replica
//!   (`offer` holds it in the pending set otherwise), so
//!   `Replica::insert_deferred` refuses only invalid ones;
//! - a transaction this node authors is built on its replica's heads, so it
//!   is always insertable;
//! - a transaction that arrives again while pending makes its missing
//!   parents be fetched from the sender, which holds them.

use crate::ids::{ContextId, MemberId, TxId};
use crate::membership::MemberStatus;
use crate::replica::{InsertError, Outcome};
use crate::time::Time;
use crate::tx::{TX_FORMAT_VERSION, Tx, TxBody, TxKind, check_structure};

use super::context::Held;
use super::out::{Event, Out};
use super::{CallReceipt, CommandError, Env, Phase};

impl Held {
    /// Makes, applies, persists and pushes a transaction of this node's.
    /// The context is in phase `Member` (or becomes it now, for the join at
    /// the end of a catchup).
    pub(super) fn author(
        &mut self,
        context: ContextId,
        kind: TxKind,
        env: &Env,
        out: &mut Out,
    ) -> Result<CallReceipt, CommandError> {
        self.author_tx(context, kind, env, out)
            .map(|(_, receipt)| receipt)
    }

    /// `author`, also returning the transaction.
    pub(super) fn author_tx(
        &mut self,
        context: ContextId,
        kind: TxKind,
        env: &Env,
        out: &mut Out,
    ) -> Result<(Tx, CallReceipt), CommandError> {
        // A join is authored by an invited node; everything else by a member.
        let required = match kind {
            TxKind::Join => MemberStatus::Invited,
            _ => MemberStatus::Member,
        };
        if self.replica.status(&env.me) != Some(required) {
            return Err(CommandError::NotAMember(context, Some(Phase::Member)));
        }
        let (parents, height) = self.replica.next_parents();
        let body = TxBody {
            version: TX_FORMAT_VERSION,
            context,
            author: env.me,
            height,
            parents,
            kind,
        };
        // Refuse an over-limit call as a command error, before signing.
        check_structure(&body)?;
        let tx = Tx::sign(body, &env.key);
        let id = tx.id();
        // The members before this transaction applies (a leave, or an
        // invite, changes them).
        let others = self.other_members(&env.me);
        self.accept(context, tx.clone(), out)
            .expect("a transaction built on this node's heads is insertable");
        debug_assert!(self.replica.contains(&id), "accepted");
        // The caller needs the outcome now: settle (this transaction sorts
        // after everything applied, so nothing is re-executed for it).
        let outcome = self
            .settle(context, out)
            .into_iter()
            .find_map(|(settled, outcome)| (settled == id).then_some(outcome))
            .expect("the authored transaction was inserted since the last settle");
        if let Outcome::Failed(error) = &outcome {
            out.event(Event::CallFailed {
                context,
                tx: id,
                error: error.clone(),
            });
        }
        for member in others {
            out.push_tx(context, member, &tx, &self.replica);
        }
        Ok((tx, CallReceipt { tx: id, outcome }))
    }

    /// Inserts (deferred) a transaction whose parents are accepted, persists
    /// it, and then releases whatever waited for it. Its events come with
    /// the next `settle`.
    pub(super) fn accept(
        &mut self,
        context: ContextId,
        tx: Tx,
        out: &mut Out,
    ) -> Result<(), InsertError> {
        let id = tx.id();
        self.insert(context, tx, out)?;
        let mut ready = self.pending.release(&id);
        while let Some(next) = ready.pop() {
            let next_id = next.id();
            match self.insert(context, next, out) {
                Ok(()) => ready.extend(self.pending.release(&next_id)),
                Err(error) => self.drop_invalid(context, next_id, &error, out),
            }
        }
        Ok(())
    }

    /// Inserts (deferred) one transaction whose parents are accepted and
    /// persists it. The only path into the replica.
    fn insert(&mut self, context: ContextId, tx: Tx, out: &mut Out) -> Result<(), InsertError> {
        debug_assert!(
            tx.parents().iter().all(|p| self.replica.has_parent(p)),
            "only a transaction whose parents are accepted is inserted"
        );
        let signed = tx.signed().clone();
        self.replica.insert_deferred(tx)?;
        out.accepted(context, signed);
        Ok(())
    }

    /// Applies what was inserted since the last settle (re-executing the
    /// tail once) and reports it: an `Applied` per transaction in canonical
    /// order, one `Reordered` if anything was re-executed. Returns the
    /// outcomes. Nothing happens if the copy is settled.
    pub(super) fn settle(&mut self, context: ContextId, out: &mut Out) -> Vec<(TxId, Outcome)> {
        if self.replica.is_settled() {
            return Vec::new();
        }
        let settled = self.replica.settle();
        let outcomes = settled.outcomes.clone();
        out.settled(context, settled);
        debug_assert!(self.replica.is_settled());
        outcomes
    }

    /// [`Held::accept`], and a transaction the DAG refuses is dropped with
    /// what waits for it.
    pub(super) fn accept_or_drop(&mut self, context: ContextId, tx: Tx, out: &mut Out) {
        let id = tx.id();
        if let Err(error) = self.accept(context, tx, out) {
            self.drop_invalid(context, id, &error, out);
        }
    }

    /// A transaction the DAG refused can never be accepted: neither can
    /// anything waiting for it.
    pub(super) fn drop_invalid(
        &mut self,
        context: ContextId,
        id: TxId,
        error: &InsertError,
        out: &mut Out,
    ) {
        self.pending.discard_descendants(&id);
        if let InsertError::InsideStablePrefix {
            height, frontier, ..
        } = error
        {
            out.event(Event::BelowStable {
                context,
                tx: id,
                height: *height,
                frontier: *frontier,
            });
        }
        out.event(Event::Dropped {
            context,
            tx: id,
            reason: error.to_string(),
        });
    }

    /// Takes a verified transaction from `from`: accepts it if its parents
    /// are here, holds it and fetches them otherwise, ignores a duplicate.
    pub(super) fn offer(
        &mut self,
        context: ContextId,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        from: MemberId,
        tx: Tx,
    ) {
        let id = tx.id();
        if self.replica.covers(&tx.order_key()) {
            return;
        }
        if self.pending.contains(&id) {
            // Sent again while still waiting for its parents: the sender
            // holds them (it accepted this transaction), and it may be the
            // only one that does, as for a leaver's own last transactions.
            self.start_fetch(context, env, out, now, from, Vec::new());
            return;
        }
        if tx.parents().iter().all(|p| self.replica.has_parent(p)) {
            self.accept_or_drop(context, tx, out);
            return;
        }
        if tx.context() != context {
            return;
        }
        self.pending.hold(tx, |p| self.replica.has_parent(p));
        self.start_fetch(context, env, out, now, from, Vec::new());
    }
}
