//! Shrinking: a failing scenario made as small as still fails the same way.
//!
//! Owns the reductions and the rule that keeps them honest: a candidate is
//! kept only if it is a valid scenario (it survives `to_toml` and the
//! parser) and it still fails at least one of the checks the original failed
//! (by name, such as `converged(c1)` or `same_set_same_state`), under its
//! seed or one of the next [`SEEDS_PER_CANDIDATE`] - 1 (a removed step
//! shifts every later random draw, so the same bug often needs another seed
//! to show; the kept scenario carries the seed that shows it), and it ends
//! no harsher (loss, duplication, latency, partition) than the original, so
//! its final checks are as fair. Reductions,
//! repeated until none helps or the run budget is spent:
//! - drop steps, in halves, quarters, ... down to one at a time;
//! - drop a node and every step that names it;
//! - lower counts: halve a workload's calls and its duration;
//! - shorten times: halve every step's time (never the settle time).

use std::collections::BTreeSet;

use crate::run::{Report, RunOptions, run_catching};
use crate::scenario::{Check, Op, Scenario};

/// Seeds tried per candidate: its own and the ones after it.
pub const SEEDS_PER_CANDIDATE: u64 = 6;

/// The checks a report failed, by name; the always-on checks made after the
/// settle time are marked `(final)`, so that an `expect` of the same name
/// failing early (say, before a partition healed) never stands in for them.
pub fn failing_checks(report: &Report) -> BTreeSet<String> {
    report
        .failures()
        .map(|c| {
            if c.line == 0 {
                format!("{} (final)", c.name)
            } else {
                c.name.clone()
            }
        })
        .collect()
}

/// What a shrink did.
#[derive(Debug)]
pub struct Shrunk {
    pub scenario: Scenario,
    /// The failing report of the shrunk scenario.
    pub report: Report,
    pub runs: usize,
}

/// Shrinks `scenario`, which fails the checks in `target`, trying at most
/// `runs_max` candidate runs.
pub fn shrink(scenario: &Scenario, target: &BTreeSet<String>, runs_max: usize) -> Option<Shrunk> {
    let mut shrinker = Shrinker {
        target,
        runs: 0,
        runs_max,
    };
    let end = Ending::of(scenario);
    let (mut best, mut best_report) = shrinker.fails(scenario)?;
    loop {
        let before = size(&best);
        for candidate in candidates(&best) {
            if shrinker.runs >= shrinker.runs_max {
                break;
            }
            if size(&candidate) >= size(&best) || !calm_as(&candidate, &end) {
                continue;
            }
            if let Some((kept, report)) = shrinker.fails(&candidate) {
                best = kept;
                best_report = report;
            }
        }
        if size(&best) >= before || shrinker.runs >= shrinker.runs_max {
            break;
        }
    }
    Some(Shrunk {
        scenario: best,
        report: best_report,
        runs: shrinker.runs,
    })
}

struct Shrinker<'a> {
    target: &'a BTreeSet<String>,
    runs: usize,
    runs_max: usize,
}

impl Shrinker<'_> {
    /// Runs a candidate under its seed and the next few; the first that
    /// fails a target check, as the candidate with that seed and its report.
    fn fails(&mut self, candidate: &Scenario) -> Option<(Scenario, Report)> {
        let text = candidate.to_toml();
        let mut parsed = Scenario::parse(&text, &candidate.path).ok()?;
        for offset in 0..SEEDS_PER_CANDIDATE {
            if self.runs >= self.runs_max {
                return None;
            }
            parsed.seed = candidate.seed.wrapping_add(offset);
            self.runs += 1;
            let report = run_catching(&parsed, &RunOptions::default()).ok()?;
            if failing_checks(&report)
                .intersection(self.target)
                .next()
                .is_some()
            {
                return Some((parsed, report));
            }
        }
        None
    }
}

/// The conditions a scenario ends in: what its final checks run under.
#[derive(Clone, Copy, Debug)]
struct Ending {
    drop: f64,
    duplicate: f64,
    latency_ms_max: u64,
    partitioned: bool,
}

impl Ending {
    fn of(s: &Scenario) -> Ending {
        let mut end = Ending {
            drop: s.network.drop,
            duplicate: s.network.duplicate,
            latency_ms_max: s.network.latency_ms.1,
            partitioned: false,
        };
        for step in &s.steps {
            match &step.op {
                Op::Network {
                    latency_ms,
                    drop,
                    duplicate,
                } => {
                    end.drop = drop.unwrap_or(end.drop);
                    end.duplicate = duplicate.unwrap_or(end.duplicate);
                    end.latency_ms_max = latency_ms.map_or(end.latency_ms_max, |l| l.1);
                }
                Op::Partition { .. } => end.partitioned = true,
                Op::Heal => end.partitioned = false,
                _ => {}
            }
        }
        end
    }
}

/// Whether `candidate` ends no harsher than `original` did: a shrink must
/// not turn a convergence failure into mere impatience (the settle time run
/// under loss or a partition the original had lifted).
fn calm_as(candidate: &Scenario, original: &Ending) -> bool {
    let end = Ending::of(candidate);
    end.drop <= original.drop
        && end.duplicate <= original.duplicate
        && end.latency_ms_max <= original.latency_ms_max
        && (!end.partitioned || original.partitioned)
}

/// A scenario's size, compared in this order: steps, nodes, workload calls,
/// simulated time.
fn size(s: &Scenario) -> (usize, usize, u64, u64) {
    let calls = s
        .steps
        .iter()
        .map(|step| match &step.op {
            Op::Workload { calls, .. } => u64::from(*calls),
            _ => 0,
        })
        .sum();
    let time = s.steps_end_ms() + s.settle_ms;
    (s.steps.len(), s.nodes.len(), calls, time)
}

/// Every reduction of `s` to try, biggest first. (Built eagerly: each is
/// cheap next to running it.)
fn candidates(s: &Scenario) -> Vec<Scenario> {
    let mut out = Vec::new();
    // Drop runs of steps: halves, quarters, ..., single steps.
    let count = s.steps.len();
    let mut chunk = count.div_ceil(2).max(1);
    loop {
        let mut start = 0;
        while start < count {
            let end = (start + chunk).min(count);
            let mut candidate = s.clone();
            candidate.steps.drain(start..end);
            out.push(candidate);
            start = end;
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    // Drop nodes (never below one).
    if s.nodes.len() > 1 {
        for node in &s.nodes {
            out.push(without_node(s, node));
        }
    }
    // Lower counts.
    for (index, step) in s.steps.iter().enumerate() {
        if let Op::Workload { calls, over_ms, .. } = &step.op {
            if *calls > 1 {
                let mut candidate = s.clone();
                if let Op::Workload { calls, .. } = &mut candidate.steps[index].op {
                    *calls /= 2;
                }
                out.push(candidate);
            }
            if *over_ms > 1 {
                let mut candidate = s.clone();
                if let Op::Workload { over_ms, .. } = &mut candidate.steps[index].op {
                    *over_ms /= 2;
                }
                out.push(candidate);
            }
        }
    }
    // Shorten times. Never the settle time: convergence needs it, and a
    // scenario cut short fails for no reason but its own impatience.
    if s.steps.iter().any(|step| step.at_ms > 1) {
        let mut candidate = s.clone();
        for step in &mut candidate.steps {
            step.at_ms /= 2;
        }
        out.push(candidate);
    }
    out
}

/// `s` without `node`: its steps go, and it leaves every list that names it.
fn without_node(s: &Scenario, node: &str) -> Scenario {
    let mut out = s.clone();
    out.nodes.retain(|n| n != node);
    out.steps.retain_mut(|step| match &mut step.op {
        Op::Create { node: n, .. }
        | Op::Leave { node: n, .. }
        | Op::Crash { node: n }
        | Op::Restart { node: n }
        | Op::Clock { node: n, .. }
        | Op::Pause { node: n, .. }
        | Op::DiskFull { node: n, .. } => n != node,
        Op::Call { node: n, .. } => n != node,
        Op::Invite {
            node: n, member, ..
        } => n != node && member != node,
        Op::Join { node: n, via, .. } => n != node && via != node,
        Op::Workload { nodes, .. } => match nodes {
            Some(list) => {
                list.retain(|n| n != node);
                !list.is_empty()
            }
            None => true,
        },
        Op::Partition { groups } => {
            for group in groups.iter_mut() {
                group.retain(|n| n != node);
            }
            groups.retain(|g| !g.is_empty());
            true
        }
        Op::Expect(check) => match check {
            Check::NotMember { node: n, .. }
            | Check::Applied { node: n, .. }
            | Check::OnCheckpoint { node: n, .. } => n != node,
            Check::HeldBack { node: n, by, .. } => n != node && by != node,
            Check::Value { nodes, .. } => match nodes {
                Some(list) => {
                    list.retain(|n| n != node);
                    !list.is_empty()
                }
                None => true,
            },
            Check::Members { equals, .. } => {
                equals.retain(|n| n != node);
                true
            }
            Check::Converged { .. } => true,
        },
        Op::Heal | Op::Network { .. } => true,
    });
    out
}
