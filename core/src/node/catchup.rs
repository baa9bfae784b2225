//! Catchup: how a joiner gets a copy of a context, and how a member serves
//! one.
//!
//! ```text
//!   joiner                                   member
//!   CatchupRequest                      ──►  invited? CatchupAccepted { genesis, members, offer }
//!   AppRequest { offset } (repeated)    ──►  AppChunk
//!   with an offer (a checkpoint, vouched for by other members):
//!     CheckpointRequest { after } (rep.) ──►  CheckpointChunk { entries, more }
//!     (entries match the header: the copy stands on it, `Record::Opened`
//!     and the checkpoint's records)
//!   without: (the blob matches the genesis: the copy exists, `Record::Opened`)
//!   Stream { after } (repeated)         ──►  Txs { more } over its canonical order
//!   (the end of the order: Member, and the joiner authors its `Join`)
//! ```
//!
//! What a joiner from a checkpoint trusts: the checkpoint's header, whose
//! digest at least one member other than the responder signed (in its
//! stability announcement) unless the responder was the only member at the
//! cut; and the entries, which must match the header's entries hash and
//! state root. It does not check the signatures of the history below the
//! cut (it never sees it). Everything above the cut it checks as any
//! member does.
//!
//! Owns: the joiner's progress (`CatchupStep`), its one outstanding request
//! and its timer, the members it may be redirected to, and the copy the
//! stream fills (`Stream::held`), which becomes the member's when the
//! stream ends. The member side owns who may catch up (the invited, or a
//! member resuming; at a leaver, only a member, being brought forward) and
//! the application chunks.
//!
//! Invariants:
//! - one request is outstanding at a time; an answer counts only if it
//!   matches it (request id and peer); a refused or failed step makes it
//!   match nothing (request 0) until the timer asks again;
//! - after `CATCHUP_ATTEMPTS_PER_PEER` attempts without progress at one
//!   responder the catchup moves to a random candidate, never this node:
//!   every other move, the first included (and every move when none was
//!   named), to a peer known to hold the context (one that accepted a
//!   catchup or sent heads), the others to one a responder named. Named lists add to the candidates, never
//!   replace them: a lying responder cannot strand a joiner among peers
//!   that do not exist;
//!   and at once after a stream is refused as superseded (that responder
//!   may have nothing it can offer);
//! - the application blob only grows, chunk by chunk at its end, up to the
//!   genesis's `app_bytes` (and `APP_BYTES_MAX`), and is checked against
//!   the genesis as soon as it is whole (its chunks may come from several
//!   responders): a mismatch starts over from nothing, blaming no
//!   checkpoint;
//! - the copy exists from the step the blob matched its genesis on, and is
//!   never dropped afterwards;
//! - a genesis of a runtime version this build does not run ends the join
//!   (`Accepted::Abandon`): no copy of it is ever made;
//! - a checkpoint is loaded only from an offer that passed `check_offer`
//!   and entries that passed `Assembly::finish`; anything refused starts
//!   the catchup over at another member.

use std::sync::Arc;

use crate::checkpoint::{Assembly, CHECKPOINT_CHUNK_BYTES, CheckpointHeader};
use crate::ids::{ContextId, Key, MemberId, TxId};
use crate::limits::{APP_BYTES_MAX, APP_CHUNK_BYTES, CHECKPOINT_VOUCHES_MAX, SYNC_IDS_MAX};
use crate::membership::MemberStatus;
use crate::record::Record;
use crate::replica::{Replica, ReplicaError, check_runtime_version};
use crate::stability::{SignedAnnouncement, Vouch};
use crate::time::Time;
use crate::tx::{OrderKey, SignedTx, Tx, TxError, TxKind};
use crate::wire::{Body, CheckpointOffer, RefuseReason, RequestId};

use super::context::{Context, Held, Outstanding, State, accepts_catchup, others_vouches};
use super::out::{Event, Out};
use super::{Env, MessageError};

/// Attempts at one responder before a catchup is redirected.
pub(super) const CATCHUP_ATTEMPTS_PER_PEER: u32 = 2;

/// Peers a joiner keeps as known to hold the context, at most.
pub(super) const CATCHUP_HEARD_MAX: usize = 64;

/// What a joiner does after a responder accepted its catchup.
pub(super) enum Accepted {
    /// Go on (or ignore an answer that matches no request).
    Continue,
    /// Give the join up: this build cannot run the context.
    Abandon(ReplicaError),
}

/// Progress of a catchup.
pub(super) enum CatchupStep {
    /// Sent `CatchupRequest`, waiting for acceptance.
    Requested,
    /// Downloading the application blob; then the checkpoint offered, if
    /// one was (checked against its vouches).
    App {
        genesis: Tx,
        blob: Vec<u8>,
        offer: Option<Box<Offer>>,
    },
    /// Downloading the checkpoint's entries.
    Checkpoint(Box<Loading>),
    /// The copy exists; streaming the order after `after`.
    Stream(Box<Stream>),
}

/// A checkpoint offer that passed its check: its header, the vouches, and
/// who signed them.
pub(super) struct Offer {
    pub(super) header: CheckpointHeader,
    pub(super) vouches: Vec<SignedAnnouncement>,
    pub(super) vouched_by: Vec<MemberId>,
}

/// A checkpoint being downloaded, with what the copy it becomes needs.
pub(super) struct Loading {
    genesis: Tx,
    blob: Arc<Vec<u8>>,
    assembly: Assembly,
    vouches: Vec<SignedAnnouncement>,
    vouched_by: Vec<MemberId>,
}

/// Checks an offer: of this context, and vouched for by a member other
/// than the responder (`from`) that was a member at the cut, with a valid
/// signature, unless the responder was the only member there. Returns the
/// offer with who vouched, or why it is refused.
pub(super) fn check_offer(
    offer: CheckpointOffer,
    context: ContextId,
    from: MemberId,
    env: &Env,
) -> Result<Offer, String> {
    let CheckpointOffer { header, vouches } = offer;
    if header.context != context {
        return Err("the checkpoint is of another context".into());
    }
    let digest = header.digest();
    let members: Vec<MemberId> = header
        .membership
        .iter()
        .filter(|(member, status)| *member != from && *status == MemberStatus::Member)
        .map(|(member, _)| *member)
        .collect();
    let mut vouched_by = Vec::new();
    let mut kept = Vec::new();
    for vouch in vouches.into_iter().take(CHECKPOINT_VOUCHES_MAX) {
        let author = vouch.body.author;
        let matches = vouch.body.checkpoint
            == Some(Vouch {
                height: header.height,
                digest,
            });
        if !matches || !members.contains(&author) || vouched_by.contains(&author) {
            continue;
        }
        let signed = vouch.body.digest(&context);
        if env.verifier.verify(vouch.signature_check(&signed)) {
            vouched_by.push(author);
            kept.push(vouch);
        }
    }
    if vouched_by.is_empty() && !members.is_empty() {
        return Err(format!(
            "no member other than the responder vouched for its checkpoint at height {}",
            header.height
        ));
    }
    Ok(Offer {
        header,
        vouches: kept,
        vouched_by,
    })
}

/// The last step of a catchup: the copy, and where the stream is.
pub(super) struct Stream {
    pub(super) after: Option<OrderKey>,
    pub(super) held: Held,
}

pub(super) struct Catchup {
    pub(super) step: CatchupStep,
    pub(super) outstanding: Outstanding,
    /// Members learned of, to redirect to when the responder goes silent:
    /// the ones a responder named (sorted, at most `SYNC_IDS_MAX`).
    pub(super) candidates: Vec<MemberId>,
    /// Peers known to hold the context, sorted, at most
    /// `CATCHUP_HEARD_MAX`: every responder that accepted, and every peer
    /// that sent heads. A responder's list is its word alone (a lying one
    /// may name nobody real); these are tried first.
    pub(super) heard: Vec<MemberId>,
    /// Consecutive attempts without progress.
    pub(super) attempts: u32,
    /// Moves to another peer so far (they alternate between the peers
    /// heard from and those only named).
    pub(super) moves: u32,
}

impl Catchup {
    /// A catchup about to ask `via` (at `deadline`) to be accepted.
    pub(super) fn requested(via: MemberId, deadline: Time) -> Catchup {
        Catchup {
            step: CatchupStep::Requested,
            outstanding: Outstanding {
                request: 0,
                peer: via,
                deadline,
            },
            candidates: Vec::new(),
            heard: Vec::new(),
            attempts: 0,
            moves: 0,
        }
    }

    /// A catchup that resumes streaming into `held` (a restart in the middle
    /// of one), asking `peer` first.
    pub(super) fn resumed(held: Held, peer: MemberId, candidates: Vec<MemberId>) -> Catchup {
        Catchup {
            step: CatchupStep::Stream(Box::new(Stream {
                after: held.replica.last_key(),
                held,
            })),
            outstanding: Outstanding {
                request: 0,
                peer,
                deadline: Time::ZERO,
            },
            candidates,
            heard: Vec::new(),
            attempts: 0,
            moves: 0,
        }
    }

    /// `peer` showed it holds the context (it accepted a catchup, or sent
    /// heads): a candidate to try before those only named.
    pub(super) fn heard_from(&mut self, peer: MemberId, env: &Env) {
        if peer == env.me || self.heard.len() >= CATCHUP_HEARD_MAX {
            return;
        }
        if let Err(at) = self.heard.binary_search(&peer) {
            self.heard.insert(at, peer);
        }
    }

    /// Adds the members a responder named to the candidates (never
    /// replacing what was learned before: a responder may lie).
    fn named(&mut self, members: Vec<MemberId>, env: &Env) {
        for member in members {
            if self.candidates.len() >= SYNC_IDS_MAX {
                break;
            }
            if member == env.me {
                continue;
            }
            if let Err(at) = self.candidates.binary_search(&member) {
                self.candidates.insert(at, member);
            }
        }
    }

    pub(super) fn held(&self) -> Option<&Held> {
        match &self.step {
            CatchupStep::Stream(stream) => Some(&stream.held),
            CatchupStep::Requested | CatchupStep::App { .. } | CatchupStep::Checkpoint(_) => None,
        }
    }

    pub(super) fn held_mut(&mut self) -> Option<&mut Held> {
        match &mut self.step {
            CatchupStep::Stream(stream) => Some(&mut stream.held),
            CatchupStep::Requested | CatchupStep::App { .. } | CatchupStep::Checkpoint(_) => None,
        }
    }

    /// Takes the copy out of a finished stream (leaving the catchup with no
    /// step of use: it is dropped next).
    fn take_held(&mut self) -> Option<Held> {
        match std::mem::replace(&mut self.step, CatchupStep::Requested) {
            CatchupStep::Stream(stream) => Some(stream.held),
            step => {
                self.step = step;
                None
            }
        }
    }

    /// The member asked now, then the members it may be redirected to.
    pub(super) fn peers(&self) -> Vec<MemberId> {
        let asked = self.outstanding.peer;
        let mut peers = vec![asked];
        for peer in self.heard.iter().chain(&self.candidates) {
            if !peers.contains(peer) {
                peers.push(*peer);
            }
        }
        peers
    }

    /// Sends the request for the current step to `peer`.
    pub(super) fn send_step(
        &mut self,
        context: ContextId,
        env: &mut Env,
        out: &mut Out,
        peer: MemberId,
        now: Time,
    ) {
        let request = env.next_request_id();
        self.outstanding = Outstanding {
            request,
            peer,
            deadline: env.timeout_at(now),
        };
        let body = match &self.step {
            CatchupStep::Requested => Body::CatchupRequest { request },
            CatchupStep::App { blob, .. } => Body::AppRequest {
                request,
                offset: blob.len() as u64,
            },
            CatchupStep::Checkpoint(loading) => Body::CheckpointRequest {
                request,
                height: loading.assembly.header().height,
                after: loading.assembly.last_key(),
            },
            CatchupStep::Stream(stream) => Body::Stream {
                request,
                after: stream.after,
            },
        };
        out.send(context, peer, body);
    }

    /// Starts over at another member, when the timer fires: what this one
    /// served was refused.
    fn start_over(&mut self) {
        self.step = CatchupStep::Requested;
        self.attempts = CATCHUP_ATTEMPTS_PER_PEER;
        self.outstanding.request = 0;
    }

    /// Refuses the application blob of `genesis`, and starts over at
    /// another member, from nothing.
    fn refuse_app(&mut self, context: ContextId, out: &mut Out, genesis: TxId, reason: String) {
        self.start_over();
        out.event(Event::Dropped {
            context,
            tx: genesis,
            reason,
        });
    }

    /// Refuses the checkpoint `from` offered or served, and starts over at
    /// another member.
    fn refuse_checkpoint(
        &mut self,
        context: ContextId,
        out: &mut Out,
        from: MemberId,
        reason: String,
    ) {
        self.start_over();
        out.event(Event::CheckpointRefused {
            context,
            from,
            reason,
        });
    }

    /// Makes late answers match nothing, and asks again when the request
    /// would have timed out.
    pub(super) fn retry_later(&mut self, env: &Env, now: Time) {
        self.outstanding.request = 0;
        self.outstanding.deadline = env.timeout_at(now);
    }

    /// The catchup timer: the outstanding request went unanswered. Ask again,
    /// at another candidate after `CATCHUP_ATTEMPTS_PER_PEER` attempts.
    fn on_timeout(&mut self, context: ContextId, env: &mut Env, out: &mut Out, now: Time) {
        debug_assert!(self.outstanding.deadline <= now);
        self.attempts += 1;
        let mut peer = self.outstanding.peer;
        if self.attempts > CATCHUP_ATTEMPTS_PER_PEER {
            // Every other move (the first included) to a peer known to
            // hold the context (perhaps the one asked: it may have lied
            // once, or lost an answer), the others to a candidate named;
            // only the one kind when there is no other.
            self.moves += 1;
            let known = self.candidates.is_empty() || self.moves % 2 == 1;
            let pool = if !self.heard.is_empty() && known {
                &self.heard
            } else {
                &self.candidates
            };
            if !pool.is_empty() {
                peer = pool[env.pick(pool.len())];
                self.attempts = 0;
            }
        }
        self.send_step(context, env, out, peer, now);
    }
}

impl Context {
    /// A context this node catches up into. No sync round is scheduled
    /// before there is a copy.
    pub(super) fn joining(id: ContextId, catchup: Catchup) -> Context {
        Context::new(id, Time::from_ms(u64::MAX), State::Joining(catchup))
    }

    // ----- the member's side ---------------------------------------------------

    /// A node asks to catch up: accepted if this node is a member and the
    /// asker is invited (or a member, resuming).
    pub(super) fn on_catchup_request(
        &mut self,
        env: &Env,
        out: &mut Out,
        from: MemberId,
        request: RequestId,
    ) {
        let body = match &mut self.state {
            State::Member(held) if accepts_catchup(held, &from) => {
                if held.replica.status(&from) == Some(MemberStatus::Invited) {
                    held.served_invitees.insert(from);
                }
                accepted(held, env, request)
            }
            // A leaver serves a member being brought forward (it may be the
            // last to stand on a checkpoint covering what that member
            // lacks), never a joiner: it is about to delete its copy.
            State::Leaving { held, .. }
                if held.replica.status(&from) == Some(MemberStatus::Member) =>
            {
                accepted(held, env, request)
            }
            state => {
                let reason = match state {
                    State::Joining(catchup) if catchup.held().is_none() => {
                        RefuseReason::UnknownContext
                    }
                    State::Joining(_) | State::Leaving { .. } => RefuseReason::NotAMember,
                    State::Member(_) => RefuseReason::NotInvited,
                };
                Body::CatchupRefused { request, reason }
            }
        };
        out.send(self.id, from, body);
    }

    /// Serves one chunk of the application blob.
    pub(super) fn on_app_request(
        &self,
        out: &mut Out,
        from: MemberId,
        request: RequestId,
        offset: u64,
    ) {
        let Some(held) = self.serving(&from) else {
            return;
        };
        let blob = held.replica.app_blob();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(blob.len());
        let end = (start + APP_CHUNK_BYTES).min(blob.len());
        let bytes = blob[start..end].to_vec();
        out.send(
            self.id,
            from,
            Body::AppChunk {
                request,
                offset,
                bytes,
            },
        );
    }

    /// Serves one chunk of the entries of the checkpoint at `height`, or
    /// says it is superseded (the joiner starts over, with a new offer).
    pub(super) fn on_checkpoint_request(
        &self,
        out: &mut Out,
        from: MemberId,
        request: RequestId,
        height: u64,
        after: Option<Key>,
    ) {
        let Some(held) = self.serving(&from) else {
            return;
        };
        let body = match held.checkpoint_at(height) {
            Some(checkpoint) => {
                let (entries, more) = checkpoint.chunk(after, CHECKPOINT_CHUNK_BYTES);
                Body::CheckpointChunk {
                    request,
                    height,
                    entries,
                    more,
                }
            }
            _ => Body::CatchupRefused {
                request,
                reason: RefuseReason::Superseded,
            },
        };
        out.send(self.id, from, body);
    }

    // ----- the joiner's side ---------------------------------------------------

    /// The responder accepted: learn the genesis and the members, then fetch
    /// the application; or give the join up, when this build cannot run the
    /// context.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_catchup_accepted(
        &mut self,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        from: MemberId,
        request: RequestId,
        genesis: SignedTx,
        members: Vec<MemberId>,
        offer: Option<Box<CheckpointOffer>>,
    ) -> Result<Accepted, MessageError> {
        let context = self.id;
        let catchup = match &mut self.state {
            State::Joining(catchup) => catchup,
            State::Member(held) => {
                held.on_forward_accepted(context, env, out, now, from, request, offer);
                return Ok(Accepted::Continue);
            }
            State::Leaving { .. } => return Ok(Accepted::Continue),
        };
        if !matches!(catchup.step, CatchupStep::Requested)
            || !catchup.outstanding.answered_by(request, from)
        {
            return Ok(Accepted::Continue);
        }
        let genesis = Tx::from_signed(genesis, env.verifier.as_ref())?;
        let TxKind::Create {
            runtime_version, ..
        } = genesis.kind()
        else {
            return Err(MessageError::NotGenesis(genesis.id()));
        };
        if genesis.context() != context {
            return Err(MessageError::Tx(TxError::WrongContext {
                expected: context,
                found: genesis.context(),
            }));
        }
        // A context this build would run differently: no member can serve
        // a catchup this node could complete, so the join ends here.
        if let Err(unsupported) = check_runtime_version(*runtime_version) {
            return Ok(Accepted::Abandon(unsupported));
        }
        catchup.heard_from(from, env);
        catchup.named(members, env);
        let offer = match offer.map(|offer| check_offer(*offer, context, from, env)) {
            None => None,
            Some(Ok(offer)) => Some(Box::new(offer)),
            Some(Err(reason)) => {
                catchup.refuse_checkpoint(context, out, from, reason);
                return Ok(Accepted::Continue);
            }
        };
        catchup.step = CatchupStep::App {
            genesis,
            blob: Vec::new(),
            offer,
        };
        catchup.attempts = 0;
        catchup.send_step(context, env, out, from, now);
        Ok(Accepted::Continue)
    }

    pub(super) fn on_catchup_refused(
        &mut self,
        env: &Env,
        out: &mut Out,
        now: Time,
        from: MemberId,
        request: RequestId,
        reason: RefuseReason,
    ) {
        let context = self.id;
        let catchup = match &mut self.state {
            State::Joining(catchup) => catchup,
            State::Member(held) => return held.on_forward_refused(request, from),
            State::Leaving { .. } => return,
        };
        if !catchup.outstanding.answered_by(request, from) {
            return;
        }
        // Try again when the request would have timed out: the invite may not
        // have reached the responder yet. A checkpoint that was superseded
        // is started over, with a new offer.
        catchup.retry_later(env, now);
        // A stream the responder can no longer serve (it dropped the bodies
        // below its checkpoint) starts over too, and the copy it was
        // filling is dropped: the new offer replaces it. At another member:
        // this one may have no checkpoint it can offer (none of the others
        // at its cut vouched for it yet), and would accept and refuse again
        // for ever, each acceptance counting as progress.
        if reason == RefuseReason::Superseded
            && matches!(
                catchup.step,
                CatchupStep::Checkpoint(_) | CatchupStep::Stream(_)
            )
        {
            catchup.step = CatchupStep::Requested;
            catchup.attempts = CATCHUP_ATTEMPTS_PER_PEER;
        }
        out.event(Event::CatchupRefused {
            context,
            by: from,
            reason,
        });
    }

    /// A chunk of the application blob. Once the blob is whole and matches
    /// the genesis, the copy exists and the stream starts.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_app_chunk(
        &mut self,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        from: MemberId,
        request: RequestId,
        offset: u64,
        bytes: Vec<u8>,
    ) {
        let context = self.id;
        let State::Joining(catchup) = &mut self.state else {
            return;
        };
        if !catchup.outstanding.answered_by(request, from) {
            return;
        }
        let CatchupStep::App {
            genesis,
            blob,
            offer,
        } = &mut catchup.step
        else {
            return;
        };
        let TxKind::Create { app_bytes, .. } = genesis.kind() else {
            unreachable!("checked at acceptance");
        };
        let expected = *app_bytes;
        if offset != blob.len() as u64
            || bytes.is_empty()
            || blob.len() as u64 + bytes.len() as u64 > expected.min(APP_BYTES_MAX as u64)
        {
            // A chunk that does not fit: ask again, after the timeout.
            return;
        }
        blob.extend_from_slice(&bytes);
        assert!(
            blob.len() as u64 <= expected,
            "the blob never outgrows its genesis"
        );
        catchup.attempts = 0;
        if (blob.len() as u64) < expected {
            catchup.send_step(context, env, out, from, now);
            return;
        }
        // The blob is checked as soon as it is whole, before any checkpoint
        // is fetched: its chunks may have come from several responders (the
        // catchup moves on when one goes silent), so a bad one is nobody's
        // checkpoint to refuse. Start over, from nothing.
        if let Err(error) = Replica::check_app(genesis, blob) {
            let genesis = genesis.id();
            catchup.refuse_app(context, out, genesis, error.to_string());
            return;
        }
        let genesis = genesis.clone();
        let blob = Arc::new(std::mem::take(blob));
        if let Some(offer) = offer.take() {
            let Offer {
                header,
                vouches,
                vouched_by,
            } = *offer;
            match Assembly::new(header) {
                Ok(assembly) => {
                    catchup.step = CatchupStep::Checkpoint(Box::new(Loading {
                        genesis,
                        blob,
                        assembly,
                        vouches,
                        vouched_by,
                    }));
                    catchup.send_step(context, env, out, from, now);
                }
                Err(error) => catchup.refuse_checkpoint(context, out, from, error.to_string()),
            }
            return;
        }
        match Replica::new(genesis.clone(), Arc::clone(&blob)) {
            Ok(replica) => {
                out.persist(Record::Opened {
                    context,
                    genesis: genesis.signed().clone(),
                    app: blob.to_vec(),
                });
                catchup.step = CatchupStep::Stream(Box::new(Stream {
                    after: Some(genesis.order_key()),
                    held: Held::new(replica, env),
                }));
                catchup.send_step(context, env, out, from, now);
            }
            // The blob matches its genesis but does not load (the
            // module does not compile): start over elsewhere.
            Err(error) => catchup.refuse_app(context, out, genesis.id(), error.to_string()),
        }
    }

    /// Entries of the checkpoint being downloaded. Once all are in and they
    /// match the header, the copy stands on the checkpoint, is persisted,
    /// and the stream starts at the cut.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_checkpoint_chunk(
        &mut self,
        env: &mut Env,
        out: &mut Out,
        now: Time,
        from: MemberId,
        request: RequestId,
        height: u64,
        entries: Vec<(Key, Vec<u8>)>,
        more: bool,
    ) {
        let context = self.id;
        let catchup = match &mut self.state {
            State::Joining(catchup) => catchup,
            State::Member(held) => {
                return held.on_forward_chunk(
                    context, env, out, now, from, request, height, entries, more,
                );
            }
            State::Leaving { .. } => return,
        };
        if !catchup.outstanding.answered_by(request, from) {
            return;
        }
        let CatchupStep::Checkpoint(loading) = &mut catchup.step else {
            return;
        };
        if loading.assembly.header().height != height {
            return;
        }
        let empty = entries.is_empty();
        let result = loading.assembly.add(entries).map_err(|e| e.to_string());
        let result = match result {
            Ok(()) if more && empty => Err("an empty chunk that claims more follow".to_owned()),
            Ok(()) if more => {
                catchup.attempts = 0;
                catchup.send_step(context, env, out, from, now);
                return;
            }
            Ok(()) => Ok(()),
            Err(reason) => Err(reason),
        };
        let CatchupStep::Checkpoint(loading) =
            std::mem::replace(&mut catchup.step, CatchupStep::Requested)
        else {
            unreachable!("matched above");
        };
        let Loading {
            genesis,
            blob,
            assembly,
            vouches,
            vouched_by,
        } = *loading;
        let vouches = others_vouches(vouches, &env.me);
        let copy = result.and_then(|()| {
            let checkpoint = Arc::new(assembly.finish().map_err(|e| e.to_string())?);
            Replica::from_checkpoint(genesis.clone(), Arc::clone(&blob), Arc::clone(&checkpoint))
                .map(|replica| (replica, checkpoint))
                .map_err(|e| e.to_string())
        });
        let (replica, checkpoint) = match copy {
            Ok(copy) => copy,
            Err(reason) => {
                catchup.refuse_checkpoint(context, out, from, reason);
                return;
            }
        };
        out.persist(Record::Opened {
            context,
            genesis: genesis.signed().clone(),
            app: blob.to_vec(),
        });
        let mut held = Held::new(replica, env);
        held.persist_checkpoint_records(out, &checkpoint, vouches.clone());
        held.loaded_checkpoint(context, out, from, &checkpoint, vouches, vouched_by);
        catchup.attempts = 0;
        catchup.step = CatchupStep::Stream(Box::new(Stream {
            after: held.replica.last_key(),
            held,
        }));
        catchup.send_step(context, env, out, from, now);
    }

    /// Joining → Member: the stream reached the end of the responder's
    /// order, and this node is invited (it authors its join now) or already
    /// a member (it resumed). The copy the stream filled, with its pending
    /// set and its fetch, becomes the member's.
    pub(super) fn finish_catchup(&mut self, env: &mut Env, out: &mut Out, now: Time) {
        let context = self.id;
        let held = match &mut self.state {
            State::Joining(catchup) => catchup.take_held(),
            State::Member(_) | State::Leaving { .. } => None,
        };
        let mut held = held.expect("a catchup finishes at the end of its stream");
        let status = held.replica.status(&env.me);
        assert!(
            matches!(status, Some(MemberStatus::Invited | MemberStatus::Member)),
            "only an invited node or a member finishes a catchup"
        );
        self.next_tick_at = now;
        if status == Some(MemberStatus::Invited) {
            held.author(context, TxKind::Join, env, out)
                .expect("an invited, caught-up node may join");
        }
        self.state = State::Member(held);
        out.event(Event::Joined { context });
    }

    /// The catchup timer.
    pub(super) fn catchup_timer(&mut self, env: &mut Env, out: &mut Out, now: Time) {
        let context = self.id;
        if let State::Joining(catchup) = &mut self.state
            && catchup.outstanding.deadline <= now
        {
            catchup.on_timeout(context, env, out, now);
        }
    }
}

/// A catchup request accepted: the genesis, the members, and the
/// checkpoint this copy can offer.
fn accepted(held: &mut Held, env: &Env, request: RequestId) -> Body {
    Body::CatchupAccepted {
        request,
        genesis: held.replica.genesis().signed().clone(),
        members: held.replica.membership().members().collect(),
        offer: held.checkpoint_offer(&env.me),
    }
}
