//! Who belongs to a context, as the canonical order says so far.
//!
//! Owns: the status of every member ever named in a context (invited, member,
//! left), and the undo of each change so a rollback restores it.
//!
//! Membership is part of the DAG: `Create`, `Invite`, `Join` and `Leave` are
//! transactions, applied in the canonical order like calls. Applying them here
//! is the only place membership changes, so every member that applied the
//! same prefix of the order agrees on who is a member.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::MemberId;

/// Where one node stands in a context.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Invited: may catch up, and may author its `Join`.
    Invited,
    /// A full member: may author calls, invites and its `Leave`.
    Member,
    /// Left: authors nothing until invited again.
    Left,
}

/// What undoes one membership change: the member and its status before.
pub type MembershipUndo = (MemberId, Option<MemberStatus>);

/// The membership of one context. A `BTreeMap`, because member lists are
/// observable (reports, broadcast order) and must be sorted.
#[derive(Clone, Debug, Default)]
pub struct Membership {
    statuses: BTreeMap<MemberId, MemberStatus>,
}

impl Membership {
    pub fn status(&self, member: &MemberId) -> Option<MemberStatus> {
        self.statuses.get(member).copied()
    }

    pub fn is_member(&self, member: &MemberId) -> bool {
        self.status(member) == Some(MemberStatus::Member)
    }

    /// Current members, sorted.
    pub fn members(&self) -> impl Iterator<Item = MemberId> + '_ {
        self.statuses
            .iter()
            .filter(|(_, status)| **status == MemberStatus::Member)
            .map(|(member, _)| *member)
    }

    /// Every member named so far with its status, sorted.
    pub fn all(&self) -> impl Iterator<Item = (MemberId, MemberStatus)> + '_ {
        self.statuses.iter().map(|(m, s)| (*m, *s))
    }

    /// Sets a status; returns what undoes it.
    pub fn set(&mut self, member: MemberId, status: MemberStatus) -> MembershipUndo {
        (member, self.statuses.insert(member, status))
    }

    pub fn undo(&mut self, (member, previous): MembershipUndo) {
        match previous {
            Some(status) => self.statuses.insert(member, status),
            None => self.statuses.remove(&member),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_undo() {
        let (a, b) = (MemberId([1; 32]), MemberId([2; 32]));
        let mut m = Membership::default();
        let u1 = m.set(a, MemberStatus::Member);
        let u2 = m.set(b, MemberStatus::Invited);
        let u3 = m.set(b, MemberStatus::Member);
        assert_eq!(m.members().collect::<Vec<_>>(), vec![a, b]);
        m.undo(u3);
        assert_eq!(m.status(&b), Some(MemberStatus::Invited));
        m.undo(u2);
        m.undo(u1);
        assert_eq!(m.all().count(), 0);
    }
}
