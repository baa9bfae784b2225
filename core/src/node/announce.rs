//! Stability announcements: this node's own, the ones it relays, and the
//! ones it hears (the rule they feed is `crate::stability`).
//!
//! Owns: `Held::announcements` — this node's latest signed announcement,
//! the best verified one heard of every other identity, the relay cursor,
//! and who holds this copy's stable frontier back since when.
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

use crate::ids::{ContextId, MemberId};
use crate::limits::ANNOUNCEMENTS_PER_MESSAGE_MAX;
use crate::stability::{Announcement, SignedAnnouncement};
use crate::time::Time;

use super::context::Held;
use super::out::{Event, Out};
use super::{Env, HeldBack};

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
        let top = self
            .replica
            .heads()
            .iter()
            .filter_map(|id| self.replica.tx(id))
            .map(|tx| tx.order_key())
            .max()
            .expect("a copy has heads");
        let body = Announcement {
            author: env.me,
            last_own: last_own.id,
            top: top.id,
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

    /// Takes what announcements heard with heads say (see the module's
    /// invariants), the first `ANNOUNCEMENTS_PER_MESSAGE_MAX` only.
    pub(super) fn hear_announcements(
        &mut self,
        context: ContextId,
        env: &Env,
        announcements: Vec<SignedAnnouncement>,
    ) {
        for announcement in announcements
            .into_iter()
            .take(ANNOUNCEMENTS_PER_MESSAGE_MAX)
        {
            let author = announcement.body.author;
            if author == env.me || !self.replica.stability().tracks(&author) {
                continue;
            }
            let Some(floor) = self.replica.announcement_floor(&announcement.body) else {
                continue;
            };
            if !self.replica.stability().improves(&author, floor) {
                continue;
            }
            let digest = announcement.body.digest(&context);
            if !env.verifier.verify(announcement.signature_check(&digest)) {
                continue;
            }
            self.replica.announce(&author, floor);
            self.announcements.heard.insert(author, announcement);
            let fresh = &mut self.announcements.fresh;
            fresh.retain(|a| *a != author);
            fresh.push_front(author);
            fresh.truncate(ANNOUNCEMENTS_PER_MESSAGE_MAX);
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
