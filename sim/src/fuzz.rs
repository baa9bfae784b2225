//! `ctx-sim fuzz`: random scenarios from a range of seeds, each checked; the
//! first failure shrunk and saved as a scenario file with the command that
//! replays it.
//!
//! Owns the seed slicing (a sweep starts at `first_seed`, and `--shard I/K`
//! runs its seeds `first_seed + j` with `j % K == I - 1`, so K machines
//! cover a sweep without overlap; [`fold`] puts their summaries back
//! together) and the
//! worker pool: `--jobs` threads each take whole seeds; every world stays
//! single-threaded and deterministic, so a seed's outcome never depends on
//! the job count. Generated scenarios run with the engine's stress hooks on
//! (`stress = true` is written into saved files, so they replay the same).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::generate::{FuzzedApp, GenOptions, SeededChoices, generate, mutate};
use crate::run::{RunOptions, run_catching};
use crate::scenario::Scenario;
use crate::shrink::{failing_checks, shrink};
use crate::view::{View, html};

/// Candidate runs the shrinker may spend on one failure.
pub const SHRINK_RUNS_MAX: usize = 2_000;

/// Unshrunk failing scenarios written besides the shrunk one, at most.
pub const FAILURES_SAVED_MAX: usize = 20;

/// The native stack of each worker thread: every world runs its engines'
/// app calls there.
const WORKER_STACK_BYTES: usize = 4 * 1024 * 1024;
const _: () = assert!(WORKER_STACK_BYTES >= ctx_core::runtime::CALL_NATIVE_STACK_BYTES_MIN);

/// What to fuzz.
#[derive(Clone, Debug)]
pub struct FuzzOptions {
    /// The sweep's first seed (`--first-seed`).
    pub first_seed: u64,
    /// Seeds first_seed..first_seed + N (before sharding); `None` with
    /// `duration`: until time is up.
    pub seeds: Option<u64>,
    pub duration: Option<Duration>,
    /// Mutate this scenario instead of generating from nothing.
    pub from: Option<Scenario>,
    pub nodes_max: usize,
    /// Every context runs this module and every call calls its methods
    /// (`--app`); `None`: the bundled apps.
    pub app: Option<FuzzedApp>,
    /// Every fault knob on for every seed (`--every-knob`).
    pub every_knob: bool,
    pub jobs: usize,
    /// (I, K): run the I-th (1-based) of K slices.
    pub shard: (u64, u64),
    pub out: PathBuf,
}

/// One failing seed.
#[derive(Clone, Debug)]
pub struct Failed {
    pub seed: u64,
    pub checks: BTreeSet<String>,
    pub detail: String,
    pub steps: usize,
}

/// How many of the slowest seeds a summary keeps.
pub const SLOWEST_KEPT: usize = 5;

/// What a fuzz run found.
#[derive(Debug)]
pub struct FuzzSummary {
    pub first_seed: u64,
    pub seeds_run: u64,
    /// Seeds whose run rolled back an applied membership change at least
    /// once (`Report::membership_rollbacks`): how often the generator
    /// reaches re-ordering across invites, joins and leaves.
    pub membership_rollback_seeds: u64,
    /// The slowest seeds and their wall time, slowest first.
    pub slowest: Vec<(u64, Duration)>,
    pub elapsed: Duration,
    /// Every failing seed, by seed.
    pub failures: Vec<Failed>,
    /// The first failure, shrunk and saved: (file, steps before, steps after).
    pub shrunk: Option<(PathBuf, usize, usize)>,
    /// Unshrunk failing scenarios written.
    pub saved: Vec<PathBuf>,
    /// The shrunk failure's space-time diagram, beside it.
    pub diagram: Option<PathBuf>,
}

/// The scenario a seed means.
pub fn scenario_for(seed: u64, options: &FuzzOptions) -> Scenario {
    let mut choices = SeededChoices::new(seed);
    let mut scenario = match &options.from {
        Some(base) => mutate(base, seed, &mut choices),
        None => {
            let gen_options = GenOptions {
                nodes_max: options.nodes_max,
                app: options.app.clone(),
                every_knob: options.every_knob,
            };
            generate(seed, &mut choices, &gen_options).0
        }
    };
    scenario.seed = seed;
    scenario.stress = true;
    scenario
}

/// Runs the sweep. `progress` is called after each seed with (seeds done,
/// failures so far).
pub fn fuzz(
    options: &FuzzOptions,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> std::io::Result<FuzzSummary> {
    let started = Instant::now();
    let (shard, shards) = options.shard;
    assert!(
        shards >= 1 && (1..=shards).contains(&shard),
        "shard I/K with 1 <= I <= K"
    );
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let membership_rollback_seeds = AtomicU64::new(0);
    let failures: Mutex<Vec<(Failed, Scenario)>> = Mutex::new(Vec::new());
    let slowest: Mutex<Vec<(u64, Duration)>> = Mutex::new(Vec::new());
    let deadline = options.duration.map(|d| started + d);
    std::thread::scope(|scope| {
        for _ in 0..options.jobs.max(1) {
            let worker = std::thread::Builder::new().stack_size(WORKER_STACK_BYTES);
            let spawned = worker.spawn_scoped(scope, || {
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if options.seeds.is_some_and(|n| index >= n.div_ceil(shards)) {
                        break;
                    }
                    let offset = index * shards + (shard - 1);
                    if options.seeds.is_some_and(|n| offset >= n) {
                        break;
                    }
                    let Some(seed) = options.first_seed.checked_add(offset) else {
                        break;
                    };
                    let scenario = scenario_for(seed, options);
                    let seed_started = Instant::now();
                    let outcome = run_catching(&scenario, &RunOptions::default());
                    keep_slowest(
                        &mut slowest.lock().expect("no panics while held"),
                        (seed, seed_started.elapsed()),
                    );
                    if outcome
                        .as_ref()
                        .is_ok_and(|report| report.membership_rollbacks > 0)
                    {
                        membership_rollback_seeds.fetch_add(1, Ordering::Relaxed);
                    }
                    let failed = match outcome {
                        Ok(report) if !report.passed => {
                            let first = report.failures().next().expect("a failure");
                            Some(Failed {
                                seed,
                                checks: failing_checks(&report),
                                detail: format!("{}: {}", first.name, first.detail),
                                steps: scenario.steps.len(),
                            })
                        }
                        Ok(_) => None,
                        Err(bad) => Some(Failed {
                            seed,
                            checks: BTreeSet::from(["generator".to_owned()]),
                            detail: format!("the generator made bad input: {bad}"),
                            steps: scenario.steps.len(),
                        }),
                    };
                    let mut failures = failures.lock().expect("no panics while held");
                    if let Some(failed) = failed {
                        failures.push((failed, scenario));
                    }
                    let count = failures.len() as u64;
                    drop(failures);
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1, count);
                }
            });
            spawned.expect("a fuzz worker thread starts");
        }
    });
    let mut failures = failures.into_inner().expect("no panics while held");
    failures.sort_by_key(|(failed, _)| failed.seed);
    let mut summary = FuzzSummary {
        first_seed: options.first_seed,
        seeds_run: done.load(Ordering::Relaxed),
        membership_rollback_seeds: membership_rollback_seeds.load(Ordering::Relaxed),
        slowest: slowest.into_inner().expect("no panics while held"),
        elapsed: started.elapsed(),
        failures: failures.iter().map(|(f, _)| f.clone()).collect(),
        shrunk: None,
        saved: Vec::new(),
        diagram: None,
    };
    if failures.is_empty() {
        return Ok(summary);
    }
    std::fs::create_dir_all(&options.out)?;
    for (failed, scenario) in failures.iter().take(FAILURES_SAVED_MAX) {
        let path = options.out.join(format!("fuzz-{}.toml", failed.seed));
        summary.saved.push(save(scenario, &path)?);
    }
    let (first, scenario) = &failures[0];
    if first.checks.contains("generator") {
        return Ok(summary);
    }
    if let Some(shrunk) = shrink(scenario, &first.checks, SHRINK_RUNS_MAX) {
        let path = options.out.join(format!("fuzz-{}-shrunk.toml", first.seed));
        let mut small = shrunk.scenario;
        small.name = format!("fuzz-{}-shrunk", first.seed);
        small.description = format!(
            "Shrunk by ctx-sim fuzz from seed {} ({} steps to {}). Fails: {}.",
            first.seed,
            scenario.steps.len(),
            small.steps.len(),
            failing_checks(&shrunk.report)
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        );
        let steps = small.steps.len();
        summary.shrunk = Some((save(&small, &path)?, scenario.steps.len(), steps));
        summary.diagram = diagram(&small, &path.with_extension("html"))?;
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Keeps the [`SLOWEST_KEPT`] slowest seeds, slowest first (a tie by seed).
fn keep_slowest(slowest: &mut Vec<(u64, Duration)>, seed: (u64, Duration)) {
    slowest.push(seed);
    slowest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    slowest.truncate(SLOWEST_KEPT);
}

/// Runs a saved failure again, keeping its trace, and writes its diagram.
/// `None` when it no longer runs (it did a moment ago: not expected).
fn diagram(scenario: &Scenario, page: &Path) -> std::io::Result<Option<PathBuf>> {
    let options = RunOptions {
        keep_trace: true,
        ..RunOptions::default()
    };
    let Some(view) = run_catching(scenario, &options)
        .ok()
        .and_then(|report| report.trace)
        .and_then(|bytes| View::from_bytes(&bytes).ok())
    else {
        return Ok(None);
    };
    std::fs::write(page, html(&view))?;
    Ok(Some(page.to_path_buf()))
}

/// Writes a scenario where it can be run from.
fn save(scenario: &Scenario, path: &Path) -> std::io::Result<PathBuf> {
    let mut scenario = scenario.clone();
    scenario.path = path.to_path_buf();
    std::fs::write(path, scenario.to_toml())?;
    Ok(path.to_path_buf())
}
