//! Sweeps over many machines: the JSON summary one `ctx-sim fuzz --json`
//! writes for its shard, and [`fold`], which puts the shards' summaries of
//! one sweep back together into one report (`ctx-sim fold`).
//!
//! Owns the summary's format ([`ShardSummary`], versioned) and the rules a
//! fold checks: every summary belongs to the same sweep (the same first
//! seed, the same shard count, the same seed budget), no shard appears
//! twice, and the report says which shards are missing rather than guessing.
//! Failures keep their seeds, so each one still replays from its seed
//! (`ctx-sim run` on the saved file, or a sweep of that seed alone).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::fuzz::{FuzzSummary, SLOWEST_KEPT};

/// The summary format version.
pub const SUMMARY_VERSION: u32 = 1;

/// What one shard of a sweep reports (`ctx-sim fuzz --json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardSummary {
    pub version: u32,
    pub first_seed: u64,
    /// The sweep's seed budget before sharding (`--seeds`), or `None` for a
    /// timed sweep (`--for`).
    pub seeds: Option<u64>,
    /// 1-based.
    pub shard: u64,
    pub shards: u64,
    pub seeds_run: u64,
    /// Seeds that rolled back a membership change (absent in summaries of
    /// builds before it was counted: 0).
    #[serde(default)]
    pub membership_rollback_seeds: u64,
    pub elapsed_ms: u64,
    pub jobs: usize,
    pub failures: Vec<FailedSeed>,
    /// The first failure, shrunk, and its diagram.
    pub shrunk: Option<PathBuf>,
    pub diagram: Option<PathBuf>,
    pub slowest: Vec<SlowSeed>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedSeed {
    pub seed: u64,
    pub checks: Vec<String>,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowSeed {
    pub seed: u64,
    pub ms: u64,
}

impl ShardSummary {
    pub fn new(
        summary: &FuzzSummary,
        seeds: Option<u64>,
        (shard, shards): (u64, u64),
        jobs: usize,
    ) -> ShardSummary {
        ShardSummary {
            version: SUMMARY_VERSION,
            first_seed: summary.first_seed,
            seeds,
            shard,
            shards,
            seeds_run: summary.seeds_run,
            membership_rollback_seeds: summary.membership_rollback_seeds,
            elapsed_ms: summary.elapsed.as_millis() as u64,
            jobs,
            failures: summary
                .failures
                .iter()
                .map(|failed| FailedSeed {
                    seed: failed.seed,
                    checks: failed.checks.iter().cloned().collect(),
                    detail: failed.detail.clone(),
                })
                .collect(),
            shrunk: summary.shrunk.as_ref().map(|(path, _, _)| path.clone()),
            diagram: summary.diagram.clone(),
            slowest: summary
                .slowest
                .iter()
                .map(|(seed, took)| SlowSeed {
                    seed: *seed,
                    ms: took.as_millis() as u64,
                })
                .collect(),
        }
    }
}

/// Why summaries cannot be folded.
#[derive(Debug, Error)]
pub enum FoldError {
    #[error("{0}: cannot be read: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: not a ctx-sim fuzz summary: {1}")]
    Format(PathBuf, String),
    #[error("{0}: summary version {1}; this ctx-sim reads version {SUMMARY_VERSION}")]
    Version(PathBuf, u32),
    #[error("{path}: shard {shard}/{shards} is outside 1..={shards}")]
    BadShard {
        path: PathBuf,
        shard: u64,
        shards: u64,
    },
    #[error(
        "{path}: belongs to another sweep (first seed {first_seed}, {shards} shards, seeds {seeds:?}) than {first} (first seed {first_first_seed}, {first_shards} shards, seeds {first_seeds:?})"
    )]
    OtherSweep {
        path: PathBuf,
        first_seed: u64,
        shards: u64,
        seeds: Option<u64>,
        first: PathBuf,
        first_first_seed: u64,
        first_shards: u64,
        first_seeds: Option<u64>,
    },
    #[error("{path}: shard {shard}/{shards} again (also in {other})")]
    Duplicate {
        path: PathBuf,
        shard: u64,
        shards: u64,
        other: PathBuf,
    },
    #[error("no summaries to fold")]
    Empty,
}

/// One report for a whole sweep.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Folded {
    pub first_seed: u64,
    pub seeds: Option<u64>,
    pub shards: u64,
    /// The shards folded, and those missing.
    pub present: Vec<u64>,
    pub missing: Vec<u64>,
    pub seeds_run: u64,
    pub membership_rollback_seeds: u64,
    /// The longest shard's wall time.
    pub elapsed_ms: u64,
    /// Every failure, by seed, with the shard and summary it came from.
    pub failures: Vec<FoldedFailure>,
    pub slowest: Vec<SlowSeed>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FoldedFailure {
    pub seed: u64,
    pub shard: u64,
    pub checks: Vec<String>,
    pub detail: String,
    /// The shard's shrunk file and diagram, when this is its first failure.
    pub shrunk: Option<PathBuf>,
    pub diagram: Option<PathBuf>,
}

/// Reads a summary written by `ctx-sim fuzz --json`.
pub fn read(path: &Path) -> Result<ShardSummary, FoldError> {
    let text = std::fs::read_to_string(path).map_err(|e| FoldError::Read(path.into(), e))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| FoldError::Format(path.into(), format!("not JSON: {e}")))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(version) if version == u64::from(SUMMARY_VERSION) => {}
        Some(version) => {
            return Err(FoldError::Version(
                path.into(),
                u32::try_from(version).unwrap_or(u32::MAX),
            ));
        }
        None => return Err(FoldError::Format(path.into(), "no \"version\"".into())),
    }
    let summary: ShardSummary =
        serde_json::from_value(value).map_err(|e| FoldError::Format(path.into(), e.to_string()))?;
    if summary.shards == 0 || !(1..=summary.shards).contains(&summary.shard) {
        return Err(FoldError::BadShard {
            path: path.into(),
            shard: summary.shard,
            shards: summary.shards,
        });
    }
    Ok(summary)
}

/// Folds the summaries of one sweep's shards.
pub fn fold(summaries: &[(PathBuf, ShardSummary)]) -> Result<Folded, FoldError> {
    let Some((first_path, first)) = summaries.first() else {
        return Err(FoldError::Empty);
    };
    let mut by_shard: BTreeMap<u64, &PathBuf> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut slowest = Vec::new();
    let (mut seeds_run, mut elapsed_ms, mut membership_rollback_seeds) = (0, 0, 0);
    for (path, summary) in summaries {
        let same = (summary.first_seed, summary.shards, summary.seeds)
            == (first.first_seed, first.shards, first.seeds);
        if !same {
            return Err(FoldError::OtherSweep {
                path: path.clone(),
                first_seed: summary.first_seed,
                shards: summary.shards,
                seeds: summary.seeds,
                first: first_path.clone(),
                first_first_seed: first.first_seed,
                first_shards: first.shards,
                first_seeds: first.seeds,
            });
        }
        if let Some(other) = by_shard.insert(summary.shard, path) {
            return Err(FoldError::Duplicate {
                path: path.clone(),
                shard: summary.shard,
                shards: summary.shards,
                other: other.clone(),
            });
        }
        seeds_run += summary.seeds_run;
        membership_rollback_seeds += summary.membership_rollback_seeds;
        elapsed_ms = elapsed_ms.max(summary.elapsed_ms);
        for (index, failed) in summary.failures.iter().enumerate() {
            failures.push(FoldedFailure {
                seed: failed.seed,
                shard: summary.shard,
                checks: failed.checks.clone(),
                detail: failed.detail.clone(),
                shrunk: (index == 0).then(|| summary.shrunk.clone()).flatten(),
                diagram: (index == 0).then(|| summary.diagram.clone()).flatten(),
            });
        }
        slowest.extend(summary.slowest.iter().cloned());
    }
    failures.sort_by_key(|failure| failure.seed);
    slowest.sort_by(|a, b| b.ms.cmp(&a.ms).then(a.seed.cmp(&b.seed)));
    slowest.truncate(SLOWEST_KEPT);
    let present: BTreeSet<u64> = by_shard.keys().copied().collect();
    Ok(Folded {
        first_seed: first.first_seed,
        seeds: first.seeds,
        shards: first.shards,
        missing: (1..=first.shards)
            .filter(|shard| !present.contains(shard))
            .collect(),
        present: present.into_iter().collect(),
        seeds_run,
        membership_rollback_seeds,
        elapsed_ms,
        failures,
        slowest,
    })
}

impl Folded {
    /// The report as text.
    pub fn describe(&self) -> String {
        let mut lines = Vec::new();
        let budget = match self.seeds {
            Some(n) => format!("seeds {}..{}", self.first_seed, self.first_seed + n),
            None => format!("a timed sweep from seed {}", self.first_seed),
        };
        lines.push(format!(
            "fold: {budget}, {} of {} shards: {} seeds run in {:.1} s (the longest shard), {} failed",
            self.present.len(),
            self.shards,
            self.seeds_run,
            self.elapsed_ms as f64 / 1000.0,
            self.failures.len()
        ));
        lines.push(format!(
            "  {}",
            membership_rollback_line(self.membership_rollback_seeds, self.seeds_run)
        ));
        if !self.missing.is_empty() {
            let missing: Vec<String> = self
                .missing
                .iter()
                .map(|shard| format!("{shard}/{}", self.shards))
                .collect();
            lines.push(format!("  missing shards: {}", missing.join(", ")));
        }
        for failure in &self.failures {
            lines.push(format!(
                "  seed {} (shard {}/{}): {}",
                failure.seed, failure.shard, self.shards, failure.detail
            ));
            if let Some(file) = &failure.shrunk {
                lines.push(format!("    replay: ctx-sim run {}", file.display()));
            }
            if let Some(page) = &failure.diagram {
                lines.push(format!("    diagram: {}", page.display()));
            }
        }
        if !self.slowest.is_empty() {
            let slow: Vec<String> = self
                .slowest
                .iter()
                .map(|slow| format!("{} ({} ms)", slow.seed, slow.ms))
                .collect();
            lines.push(format!("  slowest seeds: {}", slow.join(", ")));
        }
        lines.join("\n")
    }
}

/// "N of M seeds (x %) rolled back across a membership change": how often
/// a sweep reached re-ordering across invites, joins and leaves.
pub fn membership_rollback_line(seeds: u64, of: u64) -> String {
    let percent = if of == 0 {
        0.0
    } else {
        100.0 * seeds as f64 / of as f64
    };
    format!("{seeds} of {of} seeds ({percent:.1} %) rolled back across a membership change")
}
