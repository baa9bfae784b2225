//! Rebuilding a node from the records it persisted.
//!
//! Owns: the reading of a record log (in the order it was emitted) into
//! contexts, and the phase each restored context resumes in, decided by
//! this node's own status in the restored membership:
//! - a member resumes as a member; unless it was rejoining and its new
//!   copy does not yet hold its tombstone (or holds only the leave the
//!   tombstone marks done): it resumes the stream;
//! - a node that left resumes leaving, pushing the last leave it authored;
//!   unless it was rejoining and the copy it catches up into stands on a
//!   cut above that leave: it resumes the stream;
//! - a node whose copy does not make it a member (it crashed while catching
//!   up) resumes the stream after the last transaction it persisted, from
//!   the member it joined through;
//! - a node that never got the application asks to be accepted again.
//!
//! A context with a checkpoint whose end was written stands on the latest
//! such checkpoint (checked against its hashes: a damaged one is an error,
//! never a silent fallback) and replays only the transactions above its
//! cut; a checkpoint without its end (a crash while it was written) is
//! ignored. The vouches persisted with it come back with it, so a
//! restarted member can offer it at once: the bodies below its cut are
//! gone, and the members that vouched may never be heard from again.
//!
//! Invariants: transactions are not re-verified (this node verified them
//! before persisting them) and each context's order is executed once; no
//! output is queued and no random draw is made; every restored timer is due
//! at once (`Time::ZERO`), except a sync round before there is a copy.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::checkpoint::{Assembly, Checkpoint, CheckpointError};
use crate::ids::{ContextId, MemberId};
use crate::membership::MemberStatus;
use crate::record::Record;
use crate::replica::Replica;
use crate::stability::SignedAnnouncement;
use crate::time::Time;
use crate::tx::{SignedTx, Tx, TxKind};

use super::catchup::Catchup;
use super::context::{Context, Held, Leave, State};
use super::{Node, RestoreError};

/// What the records say of one context.
#[derive(Default)]
struct Saved {
    joining_via: Option<MemberId>,
    opened: Option<(SignedTx, Vec<u8>)>,
    txs: Vec<SignedTx>,
    /// Checkpoints by cut.
    checkpoints: BTreeMap<u64, SavedCheckpoint>,
}

/// What the records say of one checkpoint.
struct SavedCheckpoint {
    /// The assembly of its entries, or what damaged them.
    assembly: Result<Assembly, CheckpointError>,
    /// The announcements of other members that vouched for it.
    vouches: Vec<SignedAnnouncement>,
    /// Whether its end was written.
    ended: bool,
}

/// The checkpoint a context stands on after a restart, and its vouches.
struct Restored {
    checkpoint: Arc<Checkpoint>,
    vouches: Vec<SignedAnnouncement>,
}

impl Saved {
    /// The latest checkpoint whose end was written, checked; an earlier
    /// one is never used instead of a damaged later one (the records it
    /// superseded may be gone).
    fn latest_checkpoint(&mut self, context: ContextId) -> Result<Option<Restored>, RestoreError> {
        let Some(height) = self
            .checkpoints
            .iter()
            .rev()
            .find(|(_, saved)| saved.ended)
            .map(|(height, _)| *height)
        else {
            return Ok(None);
        };
        let saved = self.checkpoints.remove(&height).expect("found");
        let checkpoint = saved
            .assembly
            .and_then(Assembly::finish)
            .map_err(|e| RestoreError::Checkpoint(context, height, e))?;
        Ok(Some(Restored {
            checkpoint: Arc::new(checkpoint),
            vouches: saved.vouches,
        }))
    }
}

impl Node {
    /// Adds the contexts `records` describe to a new node (see
    /// `Node::restore`).
    pub(super) fn restore_records(
        &mut self,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<(), RestoreError> {
        assert!(self.contexts.is_empty(), "restored into a new node");
        let mut saved: BTreeMap<ContextId, Saved> = BTreeMap::new();
        for record in records {
            match record {
                Record::Joining { context, via } => {
                    saved.entry(context).or_default().joining_via = Some(via);
                }
                Record::Opened {
                    context,
                    genesis,
                    app,
                } => saved.entry(context).or_default().opened = Some((genesis, app)),
                Record::Tx { context, tx } => {
                    let entry = saved.get_mut(&context).filter(|s| s.opened.is_some());
                    entry
                        .ok_or(RestoreError::TxBeforeOpen(context))?
                        .txs
                        .push(tx);
                }
                Record::CheckpointStart { context, header } => {
                    let height = header.height;
                    let checkpoint = SavedCheckpoint {
                        assembly: Assembly::new(*header),
                        vouches: Vec::new(),
                        ended: false,
                    };
                    saved
                        .entry(context)
                        .or_default()
                        .checkpoints
                        .insert(height, checkpoint);
                }
                Record::CheckpointEntries {
                    context,
                    height,
                    entries,
                } => {
                    // Entries after the end, or of a checkpoint already
                    // damaged, change nothing; a damaged chunk marks it.
                    if let Some(checkpoint) = saved
                        .get_mut(&context)
                        .and_then(|s| s.checkpoints.get_mut(&height))
                        .filter(|checkpoint| !checkpoint.ended)
                        && let Err(error) = checkpoint
                            .assembly
                            .as_mut()
                            .map_or(Ok(()), |a| a.add(entries))
                    {
                        checkpoint.assembly = Err(error);
                    }
                }
                Record::CheckpointVouches {
                    context,
                    height,
                    vouches,
                } => {
                    if let Some(checkpoint) = saved
                        .get_mut(&context)
                        .and_then(|s| s.checkpoints.get_mut(&height))
                        .filter(|checkpoint| !checkpoint.ended)
                    {
                        checkpoint.vouches = vouches;
                    }
                }
                Record::CheckpointEnd { context, height } => {
                    if let Some(checkpoint) = saved
                        .get_mut(&context)
                        .and_then(|s| s.checkpoints.get_mut(&height))
                    {
                        checkpoint.ended = true;
                    }
                }
                Record::Deleted { context, last_own } => {
                    saved.remove(&context);
                    if let Some(last_own) = last_own {
                        self.env.tombstones.insert(context, last_own);
                    }
                }
            }
        }
        for (id, mut saved) in saved {
            let restored = saved.latest_checkpoint(id)?;
            let context = match saved.opened {
                None => {
                    let via = saved
                        .joining_via
                        .expect("a saved context is joining or opened");
                    // The application never arrived: ask `via` again, at once.
                    Context::joining(id, Catchup::requested(via, Time::ZERO))
                }
                Some((genesis, app)) => {
                    let genesis =
                        Tx::from_signed_unverified(genesis).map_err(|e| RestoreError::Tx(id, e))?;
                    let txs = saved
                        .txs
                        .into_iter()
                        .map(Tx::from_signed_unverified)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| RestoreError::Tx(id, e))?;
                    let app = Arc::new(app);
                    let replica = match &restored {
                        Some(restored) => Replica::rebuild_on_checkpoint(
                            genesis,
                            app,
                            Arc::clone(&restored.checkpoint),
                            txs,
                        ),
                        None => Replica::rebuild(genesis, app, txs),
                    }
                    .map_err(|e| RestoreError::Replica(id, e))?;
                    self.restored(id, replica, saved.joining_via, restored)
                }
            };
            self.contexts.insert(id, context);
        }
        Ok(())
    }

    /// A context with a copy, in the phase this node's status in it says.
    fn restored(
        &self,
        id: ContextId,
        replica: Replica,
        via: Option<MemberId>,
        checkpoint: Option<Restored>,
    ) -> Context {
        let me = self.env.me;
        let status = replica.status(&me);
        let mut held = Held::new(replica, &self.env);
        if let Some(Restored {
            checkpoint,
            vouches,
        }) = checkpoint
        {
            held.restored_checkpoint(checkpoint, vouches, &me);
        }
        let own_leave = own_last_leave(&held.replica, &me);
        // A rejoiner that crashed while catching up holds a prefix of its
        // new copy, which may stop before its old leave (it then reads as a
        // member) or right after it (as a leaver whose leave is done): its
        // tombstone, written when it deleted its old copy, says so. It goes
        // on with the stream; it must not author on that prefix.
        let tombstone = self.env.tombstone(&id);
        let rejoining = tombstone.is_some_and(|last| {
            !held.replica.covers(&last)
                || own_leave.as_ref().is_some_and(|tx| tx.order_key() <= last)
        });
        // Crashed while catching up: continue the stream, from the member it
        // joined through.
        let resume = |held: Held| {
            let candidates = held.other_members(&me);
            let peer = via.or_else(|| candidates.first().copied()).unwrap_or(me);
            State::Joining(Catchup::resumed(held, peer, candidates))
        };
        let state = match (status, own_leave) {
            (Some(MemberStatus::Member | MemberStatus::Left), _) if rejoining => resume(held),
            (Some(MemberStatus::Member), _) => State::Member(held),
            (Some(MemberStatus::Left), Some(tx)) => {
                let leave = Leave::new(tx, Time::ZERO, &me);
                State::Leaving { held, leave }
            }
            (Some(MemberStatus::Left), None) => {
                // Its leave is not in this copy: it was rejoining, and the
                // copy it was catching up into stands on a checkpoint cut
                // above the leave (a leaver never folds below its own
                // leave, `Context::note_stability`). Continue the stream.
                assert!(
                    via.is_some(),
                    "a copy that says this node left holds its leave, or is a rejoiner's"
                );
                resume(held)
            }
            (Some(MemberStatus::Invited) | None, _) => resume(held),
        };
        Context::new(id, Time::ZERO, state)
    }
}

/// The last `Leave` this node authored, in the order.
fn own_last_leave(replica: &Replica, me: &MemberId) -> Option<Tx> {
    replica
        .order()
        .map(|tx_id| replica.tx(&tx_id).expect("ordered"))
        .filter(|tx| tx.author() == *me && matches!(tx.kind(), TxKind::Leave))
        .last()
        .cloned()
}
