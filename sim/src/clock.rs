//! A simulated node's clock: the `now` its engine is handed, as a function
//! of the world's time.
//!
//! A real node reads its machine's clock, which runs fast or slow against
//! the others' (cheap oscillators drift; a VM's clock is stretched by its
//! host) and never agrees with them on an epoch. The world keeps one true
//! time and gives each node its own clock, running at a rate from
//! [`RATE_MIN_PERMILLE`] to [`RATE_MAX_PERMILLE`] of the true one; a
//! `clock` step changes a node's rate from then on. The engine only ever
//! sees its own clock: the `now` of every input, and the deadline it asks
//! for, which the world turns back into true time to queue the timer.
//!
//! Invariants:
//! - a clock is piecewise linear in true time and never goes back: a rate
//!   change starts a new piece where the old one ended;
//! - at rate 1000 and never changed, local time *is* true time (a run with
//!   no `clock` step gives every engine exactly the times it gave before
//!   clocks existed, so every trace hash is unchanged);
//! - [`Clock::true_time_of`] is the first true time at which the clock
//!   reads at least the deadline, so a timer never fires early by the
//!   node's own clock;
//! - integer arithmetic only: the same on every platform.

use ctx_core::Time;

/// The slowest rate a clock may run at, in thousandths of true time.
pub const RATE_MIN_PERMILLE: u32 = 100;
/// The fastest rate a clock may run at, in thousandths of true time.
pub const RATE_MAX_PERMILLE: u32 = 10_000;
/// The rate of a perfect clock.
pub const RATE_EXACT: u32 = 1_000;

/// One node's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Local milliseconds per 1000 true ones.
    rate_permille: u32,
    /// True time at which the current rate took effect.
    since_true: Time,
    /// What the clock read then.
    since_local: Time,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::exact()
    }
}

impl Clock {
    /// A clock that reads true time.
    pub const fn exact() -> Clock {
        Clock {
            rate_permille: RATE_EXACT,
            since_true: Time::ZERO,
            since_local: Time::ZERO,
        }
    }

    pub fn rate_permille(&self) -> u32 {
        self.rate_permille
    }

    /// What the clock reads at true time `now` (not before the current
    /// piece began).
    pub fn local(&self, now: Time) -> Time {
        debug_assert!(now >= self.since_true, "a clock is read forward only");
        let elapsed = u128::from(now.saturating_sub(self.since_true));
        let local = elapsed * u128::from(self.rate_permille) / u128::from(RATE_EXACT);
        self.since_local + u64::try_from(local).unwrap_or(u64::MAX)
    }

    /// The first true time, not before the current piece began, at which
    /// the clock reads at least `deadline`.
    pub fn true_time_of(&self, deadline: Time) -> Time {
        let ahead = u128::from(deadline.saturating_sub(self.since_local));
        let elapsed = (ahead * u128::from(RATE_EXACT)).div_ceil(u128::from(self.rate_permille));
        let at = self.since_true + u64::try_from(elapsed).unwrap_or(u64::MAX);
        debug_assert!(self.local(at) >= deadline || at.ms == u64::MAX);
        at
    }

    /// From true time `now` on, the clock runs at `rate_permille`.
    pub fn set_rate(&mut self, now: Time, rate_permille: u32) {
        assert!(
            (RATE_MIN_PERMILLE..=RATE_MAX_PERMILLE).contains(&rate_permille),
            "a clock rate of {rate_permille}‰ is outside {RATE_MIN_PERMILLE}..={RATE_MAX_PERMILLE}"
        );
        let local = self.local(now);
        *self = Clock {
            rate_permille,
            since_true: now,
            since_local: local,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Time {
        Time::from_ms(ms)
    }

    #[test]
    fn an_exact_clock_reads_true_time_and_its_deadlines_are_true_times() {
        let clock = Clock::exact();
        for ms in [0, 1, 999, 1_000, 123_456_789] {
            assert_eq!(clock.local(t(ms)), t(ms));
            assert_eq!(clock.true_time_of(t(ms)), t(ms));
        }
    }

    #[test]
    fn a_drifting_clock_is_continuous_monotonic_and_never_fires_early() {
        let mut clock = Clock::exact();
        clock.set_rate(t(1_000), 500);
        assert_eq!(clock.local(t(1_000)), t(1_000), "continuous at the change");
        assert_eq!(clock.local(t(3_000)), t(2_000), "half speed");
        clock.set_rate(t(3_000), 2_000);
        assert_eq!(clock.local(t(3_000)), t(2_000));
        assert_eq!(clock.local(t(4_000)), t(4_000), "double speed");
        clock.set_rate(t(4_000), 333);
        let mut last = clock.local(t(4_000));
        for ms in 4_000..10_000 {
            let local = clock.local(t(ms));
            assert!(local >= last, "never goes back");
            last = local;
            // The deadline `local + 1` is reached no earlier than needed
            // and no later than the first true millisecond that reads it.
            let due = clock.true_time_of(local + 1);
            assert!(clock.local(due) > local);
            assert!(clock.local(Time::from_ms(due.ms - 1)) <= local);
        }
        // A deadline already passed is due at once (at the piece's start).
        assert_eq!(clock.true_time_of(t(0)), t(4_000));
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn a_rate_out_of_range_is_refused() {
        Clock::exact().set_rate(t(0), 50);
    }
}
