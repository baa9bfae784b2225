//! Time as the driver hands it in. The engine never reads a clock: every input
//! carries `now`, and the engine answers with the next deadline it wants.

use std::fmt;
use std::ops::Add;

use serde::{Deserialize, Serialize};

/// A point in time, in milliseconds since an epoch the driver chooses (the
/// start of a simulated run, or the Unix epoch for a real node). Only
/// differences matter to the engine.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Time {
    pub ms: u64,
}

impl Time {
    pub const ZERO: Time = Time { ms: 0 };

    pub const fn from_ms(ms: u64) -> Self {
        Self { ms }
    }

    pub const fn as_ms(self) -> u64 {
        self.ms
    }

    pub fn saturating_sub(self, earlier: Time) -> u64 {
        self.ms.saturating_sub(earlier.ms)
    }
}

impl Add<u64> for Time {
    type Output = Time;

    /// Adds milliseconds, saturating at the end of time.
    fn add(self, ms: u64) -> Time {
        Time {
            ms: self.ms.saturating_add(ms),
        }
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.ms)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.ms)
    }
}
