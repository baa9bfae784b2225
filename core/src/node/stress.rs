//! The node's random choices, and the stress hooks.
//!
//! Owns: every draw from the node's seeded generator (context ids, sync
//! peers, catchup redirects, timer jitter) and the stress hooks of
//! `Config::stress` (like FoundationDB's BUGGIFY: rare but legal paths —
//! tiny batches, early timers, redundant and abandoned requests). Nothing
//! else in the node touches the generator, so the draws of a run are the
//! calls made here, in order.
//!
//! Invariants: with the hooks off, no hook draws anything (the generator
//! advances exactly as without hooks); every choice is in range (a picked
//! index is below the length, a tick is after `now`, a batch holds at least
//! one transaction).

use rand_core::Rng;

use crate::ids::ContextId;
use crate::time::Time;

use super::Env;

impl Env {
    /// A fresh context id.
    pub(super) fn context_id(&mut self) -> ContextId {
        let mut id_bytes = [0u8; 32];
        self.rng.fill_bytes(&mut id_bytes);
        ContextId(id_bytes)
    }

    /// A random index into something of `len` elements.
    pub(super) fn pick(&mut self, len: usize) -> usize {
        assert!(len > 0, "a choice needs something to choose from");
        (self.rng.next_u64() % len as u64) as usize
    }

    /// When the next sync round runs: an interval plus a quarter of jitter,
    /// or under stress sometimes earlier.
    pub(super) fn tick_after(&mut self, now: Time) -> Time {
        let interval = self.config.sync_interval_ms.max(1);
        if self.stress(4) {
            // Early: anywhere from 1 ms to a full interval.
            return now + (1 + self.rng.next_u64() % interval);
        }
        let jitter = self.rng.next_u64() % (interval / 4 + 1);
        now + (interval + jitter)
    }

    /// Stress: true one time in `one_in` when the hooks are on.
    pub(super) fn stress(&mut self, one_in: u64) -> bool {
        self.config.stress && self.rng.next_u64().is_multiple_of(one_in)
    }

    /// Transactions per answer: the configured batch, or under stress
    /// sometimes a tiny one.
    pub(super) fn batch_txs_max(&mut self) -> usize {
        if self.stress(4) {
            return 1 + (self.rng.next_u64() % 3) as usize;
        }
        self.config.sync_batch_txs_max.max(1)
    }
}
