//! Catchup: how a joiner gets a copy of a context, and how a member serves
//! one.
//!
//! ```text
//!   joiner                                   member
//!   CatchupRequest                      ──►  invited? CatchupAccepted { genesis, members }
//!   AppRequest { offset } (repeated)    ──►  AppChunk
//!   (the blob matches the genesis: the copy exists, `Record::Opened`)
//!   Stream { after } (repeated)         ──►  Txs { more } over its canonical order
//!   (the end of the order: Member, and the joiner authors its `Join`)
//! ```
//!
//! Owns: the joiner's progress (`CatchupStep`), its one outstanding request
//! and its timer, the members it may be redirected to, and the copy the
//! stream fills (`Stream::held`), which becomes the member's when the
//! stream ends. The member side owns who may catch up (the invited, or a
//! member resuming) and the application chunks.
//!
//! Invariants:
//! - one request is outstanding at a time; an answer counts only if it
//!   matches it (request id and peer); a refused or failed step makes it
//!   match nothing (request 0) until the timer asks again;
//! - after `CATCHUP_ATTEMPTS_PER_PEER` attempts without progress at one
//!   responder the catchup moves to a random candidate, never this node;
//! - the application blob only grows, chunk by chunk at its end, up to the
//!   genesis's `app_bytes` (and `APP_BYTES_MAX`);
//! - the copy exists from the step the blob matched its genesis on, and is
//!   never dropped afterwards;
//! - a genesis of a runtime version this build does not run ends the join
//!   (`Accepted::Abandon`): no copy of it is ever made.

use std::sync::Arc;

use crate::ids::{ContextId, MemberId};
use crate::limits::{APP_BYTES_MAX, APP_CHUNK_BYTES, SYNC_IDS_MAX};
use crate::membership::MemberStatus;
use crate::record::Record;
use crate::replica::{Replica, ReplicaError, check_runtime_version};
use crate::time::Time;
use crate::tx::{OrderKey, SignedTx, Tx, TxError, TxKind};
use crate::wire::{Body, RefuseReason, RequestId};

use super::context::{Context, Held, Outstanding, State, accepts_catchup};
use super::out::{Event, Out};
use super::{Env, MessageError};

/// Attempts at one responder before a catchup is redirected.
pub(super) const CATCHUP_ATTEMPTS_PER_PEER: u32 = 2;

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
    /// Downloading the application blob.
    App { genesis: Tx, blob: Vec<u8> },
    /// The copy exists; streaming the order after `after`.
    Stream(Box<Stream>),
}

/// The last step of a catchup: the copy, and where the stream is.
pub(super) struct Stream {
    pub(super) after: Option<OrderKey>,
    pub(super) held: Held,
}

pub(super) struct Catchup {
    pub(super) step: CatchupStep,
    pub(super) outstanding: Outstanding,
    /// Members learned of, to redirect to when the responder goes silent.
    pub(super) candidates: Vec<MemberId>,
    /// Consecutive attempts without progress.
    pub(super) attempts: u32,
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
            attempts: 0,
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
            attempts: 0,
        }
    }

    pub(super) fn held(&self) -> Option<&Held> {
        match &self.step {
            CatchupStep::Stream(stream) => Some(&stream.held),
            CatchupStep::Requested | CatchupStep::App { .. } => None,
        }
    }

    pub(super) fn held_mut(&mut self) -> Option<&mut Held> {
        match &mut self.step {
            CatchupStep::Stream(stream) => Some(&mut stream.held),
            CatchupStep::Requested | CatchupStep::App { .. } => None,
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
        peers.extend(self.candidates.iter().copied().filter(|m| *m != asked));
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
            CatchupStep::Stream(stream) => Body::Stream {
                request,
                after: stream.after,
            },
        };
        out.send(context, peer, body);
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
        if self.attempts > CATCHUP_ATTEMPTS_PER_PEER && !self.candidates.is_empty() {
            peer = self.candidates[env.pick(self.candidates.len())];
            self.attempts = 0;
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
    pub(super) fn on_catchup_request(&self, out: &mut Out, from: MemberId, request: RequestId) {
        let body = match &self.state {
            State::Member(held) if accepts_catchup(held, &from) => Body::CatchupAccepted {
                request,
                genesis: held.replica.genesis().signed().clone(),
                members: held.replica.membership().members().collect(),
            },
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
    ) -> Result<Accepted, MessageError> {
        let context = self.id;
        let State::Joining(catchup) = &mut self.state else {
            return Ok(Accepted::Continue);
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
        catchup.candidates = members
            .into_iter()
            .filter(|m| *m != env.me)
            .take(SYNC_IDS_MAX)
            .collect();
        catchup.step = CatchupStep::App {
            genesis,
            blob: Vec::new(),
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
        let State::Joining(catchup) = &mut self.state else {
            return;
        };
        if !catchup.outstanding.answered_by(request, from) {
            return;
        }
        // Try again when the request would have timed out: the invite may not
        // have reached the responder yet.
        catchup.retry_later(env, now);
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
        let CatchupStep::App { genesis, blob } = &mut catchup.step else {
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
        let genesis = genesis.clone();
        let blob = Arc::new(std::mem::take(blob));
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
            Err(error) => {
                // The blob does not match its genesis: start over elsewhere.
                catchup.step = CatchupStep::Requested;
                catchup.attempts = CATCHUP_ATTEMPTS_PER_PEER;
                catchup.outstanding.request = 0;
                out.event(Event::Dropped {
                    context,
                    tx: genesis.id(),
                    reason: error.to_string(),
                });
            }
        }
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
