//! Stability announcements: this node's own, the ones it relays, and the
//! ones it hears (the rule they feed is `crate::stability`).
//!
//! Owns: `Held::announcements` — this node's latest signed announcement,
//! the best verified one heard of every other identity, the relay cursor,
//! and who holds this copy's stable frontier back since when; and
//! `Held::vouches`, the announcements of others that vouch for this copy's
//! latest checkpoint, which a catchup offer carries.
//!
//! Announcements ride on heads: every heads message carries this node's own
//! (re-signed only when it changes) and up to
//! `ANNOUNCEMENTS_PER_MESSAGE_MAX - 1` heard ones, taken in turn, so every
//! member hears of every other through whoever it syncs with, including of
//! members that crashed for good after their last word.
//!
//! Invariants:
//! - an announcement is taken only if its author is an identity the copy
//!   tracks, its `last_own` is held (so everything its author made before
//!   is held, `Replica::announcement_floor`), it raises its author's floor,
//!   and its signature verifies; its signature is checked only then, so a
//!   stale relay costs no signature check;
//! - this node announces only what its copy holds, and a copy holds only
//!   what was persisted first (`out`'s durability rule), so its promise
//!   survives a crash.

use std::sync::Arc;

use crate::checkpoint::Checkpoint;
use crate::ids::{ContextId, MemberId};
use crate::limits::{ANNOUNCEMENTS_PER_MESSAGE_MAX, CHECKPOINT_VOUCHES_MAX};
use crate::membership::MemberStatus;
use crate::stability::{Announcement, SignedAnnouncement, Vouch};
use crate::time::Time;
use crate::wire::CheckpointOffer;

use super::context::{Held, Offered};
use super::out::{Event, Out};
use super::{Env, HeldBack};

fn vouch_of(checkpoint: &Arc<Checkpoint>) -> Vouch {
    Vouch {
        height: checkpoint.header.height,
        digest: checkpoint.digest,
    }
}

impl Held {
    /// What to send with heads to `to`: this node's announcement first (if
    /// it made anything yet), then heard ones in turn.
    pub(super) fn announcements_for(
        &mut self,
        context: ContextId,
        env: &Env,
        out: &mut Out,
        to: &MemberId,
    ) -> Vec<SignedAnnouncement> {
        let mut list = Vec::with_capacity(ANNOUNCEMENTS_PER_MESSAGE_MAX);
        if let Some(own) = self.own_announcement(context, env, out) {
            list.push(own);
        }
        // News first: the announcements that improved here most recently
        // (half the room), then heard ones in turn, after the last one.
        let heard = &self.announcements.heard;
        for author in &self.announcements.fresh {
            if list.len() > ANNOUNCEMENTS_PER_MESSAGE_MAX / 2 {
                break;
            }
            if author != to {
                list.push(heard[author].clone());
            }
        }
        let start = self
            .announcements
            .relay_after
            .map_or(0, |after| heard.range(..=after).count());
        let turn = heard.values().cycle().skip(start).take(heard.len());
        for announcement in turn {
            if list.len() == ANNOUNCEMENTS_PER_MESSAGE_MAX {
                break;
            }
            let author = announcement.body.author;
            self.announcements.relay_after = Some(author);
            if author != *to && !list.iter().any(|a| a.body.author == author) {
                list.push(announcement.clone());
            }
        }
        debug_assert!(list.len() <= ANNOUNCEMENTS_PER_MESSAGE_MAX);
        list
    }

    /// This node's announcement of what it holds now, re-signed only when
    /// that changed. `None` before it made anything (a member always has:
    /// its create or its join).
    fn own_announcement(
        &mut self,
        context: ContextId,
        env: &Env,
        out: &mut Out,
    ) -> Option<SignedAnnouncement> {
        let last_own = self.replica.stability().local_last()?;
        let top = self.replica.top_head();
        let body = Announcement {
            author: env.me,
            last_own: last_own.id,
            top: top.id,
            checkpoint: self.own_vouch(),
        };
        match &self.announcements.own {
            Some(own) if own.body == body => {}
            _ => {
                let announcement = body.sign(&context, &env.key);
                out.event(Event::Announced {
                    context,
                    announcement: announcement.clone(),
                });
                self.announcements.own = Some(announcement);
            }
        }
        self.announcements.own.clone()
    }

    /// What this node vouches for: its latest checkpoint, if it took it
    /// itself (a copy never vouches for what it was given).
    fn own_vouch(&self) -> Option<Vouch> {
        self.replica.checkpoint_taken().map(vouch_of)
    }

    /// The checkpoint this copy offers, which others' vouches are for.
    fn latest_vouch(&self) -> Option<Vouch> {
        self.replica.checkpoint().map(vouch_of)
    }

    /// Takes what announcements heard with heads say (see the module's
    /// invariants), the first `ANNOUNCEMENTS_PER_MESSAGE_MAX` only: a floor
    /// that raises its author's, and a vouch for this copy's checkpoint (or
    /// a mismatch with it, reported).
    pub(super) fn hear_announcements(
        &mut self,
        context: ContextId,
        env: &Env,
        out: &mut Out,
        announcements: Vec<SignedAnnouncement>,
    ) {
        self.refresh_vouches();
        let own_vouch = self.vouches.for_checkpoint;
        for announcement in announcements
            .into_iter()
            .take(ANNOUNCEMENTS_PER_MESSAGE_MAX)
        {
            let author = announcement.body.author;
            if author == env.me || !self.replica.stability().tracks(&author) {
                continue;
            }
            let floor = self.replica.improving_floor(&announcement.body);
            let vouch = announcement.body.checkpoint.filter(|vouch| {
                own_vouch.is_some_and(|own| own.height == vouch.height)
                    && self.member_at_cut(&author)
                    && !self.vouches.by.contains_key(&author)
            });
            if floor.is_none() && vouch.is_none() {
                continue;
            }
            let digest = announcement.body.digest(&context);
            if !env.verifier.verify(announcement.signature_check(&digest)) {
                continue;
            }
            if let Some(vouch) = vouch {
                if Some(vouch) == own_vouch {
                    self.vouches.by.insert(author, announcement.clone());
                } else {
                    out.event(Event::CheckpointMismatch {
                        context,
                        member: author,
                        height: vouch.height,
                    });
                }
            }
            let Some(floor) = floor else {
                continue;
            };
            self.replica.announce(&author, floor);
            self.announcements.heard.insert(author, announcement);
            let fresh = &mut self.announcements.fresh;
            fresh.retain(|a| *a != author);
            fresh.push_front(author);
            fresh.truncate(ANNOUNCEMENTS_PER_MESSAGE_MAX);
        }
    }

    /// Starts the vouches over when this copy took a newer checkpoint,
    /// with the heard announcements that already vouch for it (their
    /// signatures were checked when they were heard).
    fn refresh_vouches(&mut self) {
        let latest = self.latest_vouch();
        if self.vouches.for_checkpoint == latest {
            return;
        }
        self.vouches.for_checkpoint = latest;
        self.vouches.by = self
            .announcements
            .heard
            .iter()
            .filter(|(author, heard)| {
                latest.is_some() && heard.body.checkpoint == latest && self.member_at_cut(author)
            })
            .map(|(author, heard)| (*author, heard.clone()))
            .collect();
    }

    /// Whether `member` was a member at the cut of this copy's latest
    /// checkpoint: only such members may vouch for it (its digest commits
    /// to them, so a responder cannot make up vouchers).
    fn member_at_cut(&self, member: &MemberId) -> bool {
        self.replica.checkpoint().is_some_and(|checkpoint| {
            checkpoint
                .header
                .membership
                .iter()
                .any(|(m, status)| m == member && *status == MemberStatus::Member)
        })
    }

    /// The checkpoint this copy offers a joiner: the newest it could offer
    /// (`Held::offerable`: its latest, or an earlier one while the latest
    /// is vouched for by no one), with up to `CHECKPOINT_VOUCHES_MAX`
    /// vouches of members other than `me`; else none (the joiner streams
    /// from the genesis, which this copy then still holds: it drops bodies
    /// only below an offerable checkpoint).
    pub(super) fn checkpoint_offer(&mut self, me: &MemberId) -> Option<Box<CheckpointOffer>> {
        self.offerable(me);
        // A copy brought forward onto a newer base can no longer stream what
        // follows an older cut: that one is not offered again.
        let base = self.replica.base_height().unwrap_or(0);
        if self
            .offered
            .as_ref()
            .is_some_and(|o| o.checkpoint.header.height < base)
        {
            self.offered = None;
        }
        let offered = self.offered.as_ref()?;
        Some(Box::new(CheckpointOffer {
            header: offered.checkpoint.header.clone(),
            vouches: offered.vouches.clone(),
        }))
    }

    /// The checkpoint at `height` this copy can serve the entries of: its
    /// latest, or the one it offers.
    pub(super) fn checkpoint_at(&self, height: u64) -> Option<&Arc<Checkpoint>> {
        let latest = self.replica.checkpoint().into_iter();
        let offered = self.offered.as_ref().map(|o| &o.checkpoint).into_iter();
        latest
            .chain(offered)
            .find(|checkpoint| checkpoint.header.height == height)
    }

    /// Whether this copy can offer its latest checkpoint: another member at
    /// the cut vouched for it, or `me` was the only member there. Until
    /// then some other member may lack what is below the cut and have no
    /// one to load it from, so the checkpoint is neither persisted (a
    /// restart would stand on it) nor are the bodies below it dropped.
    pub(super) fn offerable(&mut self, me: &MemberId) -> bool {
        self.refresh_vouches();
        let Some(checkpoint) = self.replica.checkpoint() else {
            return false;
        };
        let offerable = alone_at_cut(checkpoint, me) || !self.vouches.by.is_empty();
        if offerable {
            let checkpoint = Arc::clone(checkpoint);
            let kept = self.offered.as_ref().is_some_and(|o| {
                o.checkpoint.header.height == checkpoint.header.height
                    && o.vouches.len() == self.vouches.by.len().min(CHECKPOINT_VOUCHES_MAX)
            });
            if !kept {
                let vouches = self.vouches.to_offer();
                self.offered = Some(Offered {
                    checkpoint,
                    vouches,
                });
            }
        }
        offerable
    }

    /// After a restart: takes back the checkpoint this copy persisted last
    /// and the vouches persisted with it (`Record::CheckpointVouches`), so
    /// that it offers that checkpoint again at once, even if none of its
    /// vouchers is ever heard from again. The copy stands on it, or on a
    /// newer one cut while its records were replayed, which starts with no
    /// vouches of its own (`Held::offerable` offers the restored one
    /// meanwhile).
    pub(super) fn restored_checkpoint(
        &mut self,
        checkpoint: Arc<Checkpoint>,
        vouches: Vec<SignedAnnouncement>,
        me: &MemberId,
    ) {
        self.persisted_checkpoint = checkpoint.header.height;
        let vouch = vouch_of(&checkpoint);
        if alone_at_cut(&checkpoint, me) || !vouches.is_empty() {
            self.offered = Some(Offered {
                checkpoint,
                vouches: vouches
                    .iter()
                    .take(CHECKPOINT_VOUCHES_MAX)
                    .cloned()
                    .collect(),
            });
        }
        if self.latest_vouch() == Some(vouch) {
            self.vouches.for_checkpoint = Some(vouch);
            self.vouches.by = vouches.into_iter().map(|v| (v.body.author, v)).collect();
        }
    }

    /// Who holds the stable frontier back, and since when it has not moved
    /// (as noted after the last input or command).
    pub(super) fn held_back(&self) -> Option<HeldBack> {
        let (holder, frontier, since) = self.announcements.held_back?;
        debug_assert_eq!(frontier, self.replica.stability().frontier());
        Some(HeldBack {
            member: holder.member,
            reason: holder.reason,
            since,
        })
    }

    /// Notes who holds the stable frontier back, and since when it has not
    /// moved (after every input).
    pub(super) fn note_stability(&mut self, now: Time) {
        let stability = self.replica.stability();
        let frontier = stability.frontier();
        self.announcements.held_back = match (stability.holder(), self.announcements.held_back) {
            (None, _) => None,
            (Some(holder), Some((was, at, since))) if was == holder && at == frontier => {
                Some((holder, at, since))
            }
            (Some(holder), _) => Some((holder, frontier, now)),
        };
    }
}

/// Whether `me` was the only member at `checkpoint`'s cut (so nobody else
/// can vouch for it, and nobody needs to).
fn alone_at_cut(checkpoint: &Checkpoint, me: &MemberId) -> bool {
    !checkpoint
        .header
        .membership
        .iter()
        .any(|(member, status)| member != me && *status == MemberStatus::Member)
}
