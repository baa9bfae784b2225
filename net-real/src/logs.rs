//! Log lines that anyone on the network can cause, written at a bounded
//! rate: a flood of bad connections, strangers or refused dials costs the
//! log a few lines a window, not a line each.
//!
//! Owns: one window per kind of line (its message). Invariants: of each
//! kind, at most `LOG_BURST` lines are written per `LOG_WINDOW`; every line
//! held back is counted, and the count is written, with the kind's message,
//! on the next line of that kind or by `flush` once its window is over, so
//! nothing is hidden without a trace. Lines about this node's own state
//! (its store, its members) are not limited: they are rare, and each one
//! matters.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long one window lasts.
pub const LOG_WINDOW: Duration = Duration::from_secs(10);
/// How many lines of one kind are written per window.
pub const LOG_BURST: u32 = 5;

/// The windows of every kind of limited line, shared by every task.
pub static LIMITED: Limiter = Limiter::new();

#[derive(Debug)]
struct Window {
    started: Instant,
    written: u32,
    held_back: u64,
}

/// Decides, per kind of line, whether one is written now.
#[derive(Debug)]
pub struct Limiter {
    windows: Mutex<BTreeMap<&'static str, Window>>,
}

impl Limiter {
    pub const fn new() -> Limiter {
        Limiter {
            windows: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether a line of `kind` is written at `now`: `Some(n)` with the
    /// number of its lines held back since the last one written, or `None`
    /// when it is held back (and counted).
    pub fn admit(&self, kind: &'static str, now: Instant) -> Option<u64> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let window = windows.entry(kind).or_insert(Window {
            started: now,
            written: 0,
            held_back: 0,
        });
        if now.saturating_duration_since(window.started) >= LOG_WINDOW {
            window.started = now;
            window.written = 0;
        }
        if window.written >= LOG_BURST {
            window.held_back += 1;
            return None;
        }
        window.written += 1;
        Some(std::mem::take(&mut window.held_back))
    }

    /// The kinds whose window is over with lines held back, and how many:
    /// the caller writes one line for each. Their counts start again.
    pub fn flush(&self, now: Instant) -> Vec<(&'static str, u64)> {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let mut over = Vec::new();
        windows.retain(|kind, window| {
            let ended = now.saturating_duration_since(window.started) >= LOG_WINDOW;
            if ended && window.held_back > 0 {
                over.push((*kind, std::mem::take(&mut window.held_back)));
            }
            // A kind that went quiet needs no window.
            !ended
        });
        over
    }
}

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter::new()
    }
}

/// Writes the held-back counts of every window that is over, one warning
/// each. The engine task calls it on its timer.
pub fn flush_limited() {
    for (kind, held_back) in LIMITED.flush(Instant::now()) {
        tracing::warn!(held_back, "{kind} (repeated lines held back)");
    }
}

/// `tracing::warn!` (or `info!`, with `info` first) at a bounded rate per
/// message: `limited!(warn, %source, "peer handshake failed")`. A line
/// written after others were held back carries `held_back = n`.
#[macro_export]
macro_rules! limited {
    ($level:ident, $($field:tt)*) => {
        $crate::limited!(@split $level [] $($field)*)
    };
    (@split $level:ident [$($fields:tt)*] $message:literal) => {
        if let Some(held_back) = $crate::logs::LIMITED.admit($message, std::time::Instant::now()) {
            if held_back == 0 {
                tracing::$level!($($fields)* $message);
            } else {
                tracing::$level!($($fields)* held_back, $message);
            }
        }
    };
    (@split $level:ident [$($fields:tt)*] $next:tt $($rest:tt)*) => {
        $crate::limited!(@split $level [$($fields)* $next] $($rest)*)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_per_window_and_every_held_back_line_counted() {
        let limiter = Limiter::new();
        let start = Instant::now();
        let written: Vec<Option<u64>> = (0..8).map(|_| limiter.admit("a", start)).collect();
        assert_eq!(written[..LOG_BURST as usize], [Some(0); LOG_BURST as usize]);
        assert!(written[LOG_BURST as usize..].iter().all(Option::is_none));
        // Another kind has its own window.
        assert_eq!(limiter.admit("b", start), Some(0));
        // Nothing to flush while the window lasts.
        assert!(limiter.flush(start + LOG_WINDOW / 2).is_empty());
        // The next window's first line carries the count.
        assert_eq!(limiter.admit("a", start + LOG_WINDOW), Some(3));
        for _ in 0..LOG_BURST + 1 {
            limiter.admit("a", start + LOG_WINDOW);
        }
        // The 2 lines held back are flushed once the window is over, and
        // a quiet kind's window is forgotten.
        let flushed = limiter.flush(start + 2 * LOG_WINDOW);
        assert_eq!(flushed, vec![("a", 2)]);
        assert!(limiter.windows.lock().expect("lock").is_empty());
    }
}
