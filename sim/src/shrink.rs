//! Shrinking: a failing scenario made as small as still fails the same way.
//!
//! Owns the reductions and the rule that keeps them honest: a candidate is
//! kept only if it is a valid scenario (it survives `to_toml` and the
//! parser) and it still fails at least one of the checks the original failed
//! (by name, such as `converged(c1)` or `same_set_same_state`), under its
//! seed or one of the next [`SEEDS_PER_CANDIDATE`] - 1 (a removed step
//! shifts every later random draw, so the same bug often needs another seed
//! to show; the kept scenario carries the seed that shows it). Reductions,
//! repeated until none helps or the run budget is spent:
//! - drop steps, in halves, quarters, ... down to one at a time;
//! - drop a node and every step that names it;
//! - lower counts: halve a workload's calls and its duration;
//! - shorten times: halve every step's time and the settle time.

use std::collections::BTreeSet;

use crate::run::{Report, RunOptions, run};
use crate::scenario::{Check, Op, Scenario};

/// Seeds tried per candidate: its own and the ones after it.
pub const SEEDS_PER_CANDIDATE: u64 = 6;

/// The names of the checks a report failed.
pub fn failing_checks(report: &Report) -> BTreeSet<String> {
    report.failures().map(|c| c.name.clone()).collect()
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
    let (mut best, mut best_report) = shrinker.fails(scenario)?;
    loop {
        let before = size(&best);
        for candidate in candidates(&best) {
            if shrinker.runs >= shrinker.runs_max {
                break;
            }
            if size(&candidate) >= size(&best) {
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
            let report = run(&parsed, &RunOptions::default()).ok()?;
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
    let time = s.steps.last().map_or(0, |step| step.at_ms) + s.settle_ms;
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
    // Shorten times.
    if s.settle_ms > 1_000 {
        let mut candidate = s.clone();
        candidate.settle_ms /= 2;
        out.push(candidate);
    }
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
        | Op::Restart { node: n } => n != node,
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
            Check::NotMember { node: n, .. } | Check::Applied { node: n, .. } => n != node,
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
