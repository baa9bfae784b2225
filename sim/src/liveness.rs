//! The liveness phase: after a run's last disturbance (its last step that
//! is not an `expect`, and its last workload call), every live member of
//! every context must converge within a bound derived from the
//! configuration, as VOPR checks after its faults stop. The report gives
//! the time it took (`converged_after_ms`); the check `liveness` fails a run
//! that exceeded the bound.
//!
//! Converged means what the final `converged(c)` means, for every context
//! at once: each partition group's live members hold the same heads and
//! state root, and no holder is still joining or leaving. With no new
//! transaction after the quiet point, that state, once reached, stays; so
//! the first time it holds is the time to converge, and nothing is checked
//! after it (nor before the quiet point).
//!
//! The bound ([`bound_ms`]) follows the protocol. A member sends its heads
//! to one random other member every sync interval (plus up to a quarter of
//! jitter) and the receiver answers with its own: push-pull gossip, which
//! reaches `m` members in about `log2 m` rounds; the bound allows
//! `2 ceil(log2 m) + 4` rounds of an interval and a round trip each. Then
//! the most any member can lack (the longest history held, `h`) comes in
//! batches of `sync_batch_txs_max` (a quarter of it under stress, whose
//! hooks shrink batches), one round trip each, and two request timeouts
//! cover requests in flight to a node that crashed before the quiet point.
//! A network that still loses a share `p` of messages at the quiet point
//! stretches all of it by `1 / (1 - p)^2` (a round trip needs both of its
//! messages) and by a factor 2 of margin for the unlucky draws.

use ctx_core::{Config, Time};

use crate::clock::RATE_EXACT;

/// What the phase measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Disturbances are still to come: this many steps and workload calls.
    Disturbed { left: usize },
    /// The last disturbance was at `quiet_from`; not converged yet.
    Quiet { quiet_from: Time, bound_ms: u64 },
    /// Converged `after_ms` after the quiet point.
    Converged { after_ms: u64, bound_ms: u64 },
}

/// What the bound is derived from, taken at the quiet point.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// The most live holders of one context.
    pub members: usize,
    /// The longest history a live holder holds (transactions applied).
    pub history: u64,
    /// The slowest one-way delay of the network, in ms.
    pub latency_max_ms: u64,
    /// The share of messages the network loses.
    pub drop: f64,
    /// The slowest clock of a live node, in thousandths of true time: its
    /// timers fire that much later.
    pub clock_rate_min_permille: u32,
}

/// The time within which every live member must converge after the quiet
/// point (see the module doc).
pub fn bound_ms(config: &Config, shape: &Shape) -> u64 {
    let round_trip = 2 * shape.latency_max_ms;
    let interval = config.sync_interval_ms + config.sync_interval_ms / 4;
    let members = shape.members.max(2) as u64;
    let rounds = 2 * u64::from(members.next_power_of_two().trailing_zeros()) + 4;
    let batch = if config.stress {
        (config.sync_batch_txs_max / 4).max(1)
    } else {
        config.sync_batch_txs_max.max(1)
    } as u64;
    let batches = shape.history.div_ceil(batch);
    // Timers run on the nodes' clocks: the slowest stretches them.
    let rate = u64::from(shape.clock_rate_min_permille.clamp(1, RATE_EXACT));
    let timed = (rounds * interval + 2 * config.request_timeout_ms) * u64::from(RATE_EXACT) / rate;
    let clean = timed + rounds * round_trip + batches * round_trip;
    let delivered = (1.0 - shape.drop.clamp(0.0, 0.9)).powi(2);
    (2.0 * clean as f64 / delivered).ceil() as u64
}

impl Liveness {
    /// Before the run: `disturbances` steps that are not `expect`s.
    pub fn new(disturbances: usize) -> Self {
        Liveness::Disturbed { left: disturbances }
    }

    /// A workload scheduled `calls` more calls.
    pub fn scheduled(&mut self, calls: usize) {
        if let Liveness::Disturbed { left } = self {
            *left += calls;
        }
    }

    /// One disturbance happened. `true` when it was the last: the caller
    /// then takes the shape and calls [`Liveness::quiet`].
    pub fn disturbed(&mut self) -> bool {
        match self {
            Liveness::Disturbed { left } => {
                assert!(*left > 0, "more disturbances than counted");
                *left -= 1;
                *left == 0
            }
            _ => unreachable!("a disturbance after the quiet point"),
        }
    }

    /// Whether the phase began (so a disturbance is not expected) and has
    /// not seen convergence yet.
    pub fn watching(&self) -> bool {
        matches!(self, Liveness::Quiet { .. })
    }

    pub fn is_disturbed(&self) -> bool {
        matches!(self, Liveness::Disturbed { .. })
    }

    /// The quiet point is `now`.
    pub fn quiet(&mut self, now: Time, bound_ms: u64) {
        assert!(matches!(self, Liveness::Disturbed { left: 0 }));
        *self = Liveness::Quiet {
            quiet_from: now,
            bound_ms,
        };
    }

    /// Everything converged at `now`.
    pub fn converged(&mut self, now: Time) {
        if let Liveness::Quiet {
            quiet_from,
            bound_ms,
        } = *self
        {
            *self = Liveness::Converged {
                after_ms: now.as_ms() - quiet_from.as_ms(),
                bound_ms,
            };
        }
    }

    /// The check at the end of the run (`now`): passed, its detail.
    pub fn verdict(&self, now: Time) -> (bool, String) {
        match *self {
            Liveness::Disturbed { left } => (
                true,
                format!("not measured: {left} steps or calls were still to come"),
            ),
            Liveness::Converged { after_ms, bound_ms } if after_ms <= bound_ms => (
                true,
                format!(
                    "converged {} after the last disturbance (bound {})",
                    seconds(after_ms),
                    seconds(bound_ms)
                ),
            ),
            Liveness::Converged { after_ms, bound_ms } => (
                false,
                format!(
                    "converged only {} after the last disturbance, beyond the bound of {}",
                    seconds(after_ms),
                    seconds(bound_ms)
                ),
            ),
            Liveness::Quiet {
                quiet_from,
                bound_ms,
            } => {
                let waited = now.as_ms() - quiet_from.as_ms();
                if waited > bound_ms {
                    (
                        false,
                        format!(
                            "not converged {} after the last disturbance, beyond the bound of {}",
                            seconds(waited),
                            seconds(bound_ms)
                        ),
                    )
                } else {
                    // `converged(c)` fails this run; the bound was not
                    // reached, so liveness itself is not shown broken.
                    (
                        true,
                        format!(
                            "not measured: the run ended {} after the last disturbance, within the bound of {}",
                            seconds(waited),
                            seconds(bound_ms)
                        ),
                    )
                }
            }
        }
    }

    /// Milliseconds from the quiet point to convergence, when measured.
    pub fn converged_after_ms(&self) -> Option<u64> {
        match *self {
            Liveness::Converged { after_ms, .. } => Some(after_ms),
            _ => None,
        }
    }
}

fn seconds(ms: u64) -> String {
    format!("{:.3} s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(members: usize, history: u64, drop: f64) -> Shape {
        Shape {
            members,
            history,
            latency_max_ms: 50,
            drop,
            clock_rate_min_permille: RATE_EXACT,
        }
    }

    #[test]
    fn the_bound_grows_with_members_history_and_loss() {
        let config = Config::default();
        let base = bound_ms(&config, &shape(3, 100, 0.0));
        assert!(bound_ms(&config, &shape(250, 100, 0.0)) > base);
        assert!(bound_ms(&config, &shape(3, 100_000, 0.0)) > base);
        assert!(bound_ms(&config, &shape(3, 100, 0.3)) > base);
        let stressed = Config {
            stress: true,
            ..Config::default()
        };
        assert!(
            bound_ms(&stressed, &shape(3, 100_000, 0.0))
                > bound_ms(&config, &shape(3, 100_000, 0.0))
        );
        // 3 members, 100 transactions, 50 ms: 8 rounds of 1.35 s, one
        // batch of 0.1 s, two timeouts of 1.5 s; twice that.
        assert_eq!(base, 2 * (8 * 1_350 + 100 + 3_000));
    }

    #[test]
    fn a_phase_passes_within_the_bound_and_fails_beyond() {
        let mut phase = Liveness::new(1);
        phase.scheduled(1);
        assert!(!phase.disturbed());
        assert!(phase.disturbed());
        phase.quiet(Time::from_ms(1_000), 5_000);
        assert!(phase.watching());
        let (passed, detail) = phase.verdict(Time::from_ms(3_000));
        assert!(passed, "{detail}");
        assert!(detail.starts_with("not measured"), "{detail}");
        assert!(!phase.verdict(Time::from_ms(6_001)).0);
        let mut late = phase;
        phase.converged(Time::from_ms(2_500));
        assert_eq!(phase.converged_after_ms(), Some(1_500));
        assert!(phase.verdict(Time::from_ms(9_000)).0);
        late.converged(Time::from_ms(6_500));
        let (passed, detail) = late.verdict(Time::from_ms(9_000));
        assert!(!passed);
        assert!(detail.contains("beyond the bound of 5.000 s"), "{detail}");
    }
}
