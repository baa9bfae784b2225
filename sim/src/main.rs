//! `ctx-sim`: run scenario files, replay traces.
//!
//! Exit status: 0 every check held; 1 a check failed; 2 the input was bad
//! (one message naming the file, the line and what is wrong, and no run).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::time::Duration;

use clap::{Parser, Subcommand};
use ctx_sim::fuzz::{FuzzOptions, SHRINK_RUNS_MAX, fuzz};
use ctx_sim::run::{RunOptions, run};
use ctx_sim::scenario::Scenario;
use ctx_sim::scenario::{NODES_MAX, parse_duration_ms};
use ctx_sim::shrink::{failing_checks, shrink};
use ctx_sim::view::{self, View};
use ctx_sim::{explain, report, trace};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "ctx-sim",
    version,
    about = "Deterministic simulation of ctx contexts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenario files and check them.
    Run {
        /// Scenario files (TOML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Overrides each file's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// One JSON object per scenario on stdout.
        #[arg(long)]
        json: bool,
        /// Writes the trace of the run (one scenario file only).
        #[arg(long, value_name = "OUT")]
        trace: Option<PathBuf>,
        /// Writes the run's space-time diagram, one self-contained HTML
        /// page (one scenario file only).
        #[arg(long, value_name = "OUT")]
        html: Option<PathBuf>,
        /// Prints an event log.
        #[arg(long)]
        verbose: bool,
    },
    /// Random scenarios from a range of seeds; a failure is shrunk and saved.
    Fuzz {
        /// Seeds FIRST..FIRST+N (split over shards); FIRST is --first-seed.
        #[arg(long, conflicts_with = "for_duration")]
        seeds: Option<u64>,
        /// The sweep's first seed [default: 0 with --seeds; with --for, a
        /// random one, printed, so that repeated sweeps cover new ground].
        #[arg(long, value_name = "N")]
        first_seed: Option<u64>,
        /// Run seeds until this much time has passed (e.g. 10m, 30s).
        #[arg(long = "for", value_name = "DURATION")]
        for_duration: Option<String>,
        /// Mutate this scenario instead of generating from nothing.
        #[arg(long, value_name = "FILE", conflicts_with = "app")]
        from: Option<PathBuf>,
        /// Fuzz this app: a .wasm module with a `ctx_abi` section (an app
        /// built with ctx-sdk). Every generated context runs it, calls and
        /// workloads call its call methods with random arguments of each
        /// parameter's type (from small pools, so that calls collide), and
        /// its #[invariant] views are checked on every member after every
        /// change (as they are in any run). Every fault knob still applies.
        #[arg(long, value_name = "PATH")]
        app: Option<PathBuf>,
        /// Most nodes in a generated scenario.
        #[arg(long, default_value_t = 12)]
        nodes: usize,
        /// Switch every fault knob on for every seed (swarm testing draws a
        /// mix per seed otherwise): loss, duplication, wide latency,
        /// partitions (one long), crashes (one node for good), leaves and
        /// rejoins, late joins, network changes, spins, clock drift,
        /// pauses, disk faults, a Byzantine node and full disks. The seed
        /// still draws their strength and timing.
        #[arg(long, conflicts_with = "from")]
        every_knob: bool,
        /// Worker threads (default: the machine's cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Run the I-th of K disjoint slices of the seeds [default: 1/1, or
        /// from JOB_COMPLETION_INDEX (0-based, as a Kubernetes Indexed Job
        /// sets it) and CTX_SIM_SHARDS when those are set].
        #[arg(long, value_name = "I/K")]
        shard: Option<String>,
        /// Where failing scenarios are written.
        #[arg(long, default_value = "fuzz-failures")]
        out: PathBuf,
        /// Print the summary as one JSON object (what `ctx-sim fold` reads).
        #[arg(long)]
        json: bool,
    },
    /// Folds the `fuzz --json` summaries of one sweep's shards into one report.
    Fold {
        /// Summaries written by `ctx-sim fuzz --json`, one per shard.
        #[arg(required = true)]
        summaries: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shrinks a failing scenario to as few steps as still fail the same check.
    Shrink {
        /// A scenario file that fails.
        file: PathBuf,
        /// Overrides the file's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Where the shrunk scenario is written (default: FILE-shrunk.toml).
        #[arg(long, value_name = "OUT")]
        out: Option<PathBuf>,
    },
    /// Re-drives fresh engines with a trace and checks every output matches.
    Replay {
        /// A trace written by `ctx-sim run --trace`.
        trace: PathBuf,
    },
    /// Draws a trace as a space-time diagram: one self-contained HTML page.
    View {
        /// A trace written by `ctx-sim run --trace`.
        trace: PathBuf,
        /// The page to write.
        #[arg(long, value_name = "FILE.html")]
        out: PathBuf,
    },
    /// Where one transaction went: authored, sent, lost, fetched, applied.
    Explain {
        /// A trace written by `ctx-sim run --trace`.
        trace: PathBuf,
        /// The transaction's id, or a prefix of it (hex).
        #[arg(long, value_name = "ID")]
        tx: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            files,
            seed,
            json,
            trace,
            html,
            verbose,
        } => run_files(&files, seed, json, trace, html, verbose),
        Command::Fuzz {
            seeds,
            first_seed,
            for_duration,
            from,
            app,
            nodes,
            every_knob,
            jobs,
            shard,
            out,
            json,
        } => fuzz_command(
            Sweep {
                seeds,
                first_seed,
                for_duration,
                shard,
                every_knob,
            },
            from,
            app,
            nodes,
            jobs,
            out,
            json,
        ),
        Command::Fold { summaries, json } => fold_command(&summaries, json),
        Command::Shrink { file, seed, out } => shrink_command(&file, seed, out),
        Command::View { trace: path, out } => view_command(&path, &out),
        Command::Explain {
            trace: path,
            tx,
            json,
        } => explain_command(&path, &tx, json),
        Command::Replay { trace: path } => match trace::replay(&path) {
            Ok(replayed) => {
                println!(
                    "{} (seed {}): replayed {} inputs, every output matched; trace {}",
                    replayed.scenario, replayed.seed, replayed.entries, replayed.trace_hash
                );
                ExitCode::SUCCESS
            }
            Err(error @ trace::ReplayError::Diverged { .. }) => {
                eprintln!("ctx-sim: {}: {error}", path.display());
                ExitCode::from(1)
            }
            Err(error) => {
                eprintln!("ctx-sim: {}: {error}", path.display());
                ExitCode::from(2)
            }
        },
    }
}

fn run_files(
    files: &[PathBuf],
    seed: Option<u64>,
    json: bool,
    trace: Option<PathBuf>,
    html: Option<PathBuf>,
    verbose: bool,
) -> ExitCode {
    for (flag, given) in [("--trace", trace.is_some()), ("--html", html.is_some())] {
        if given && files.len() > 1 {
            eprintln!(
                "ctx-sim: {flag} takes one scenario file, not {}",
                files.len()
            );
            return ExitCode::from(2);
        }
    }
    // Read and validate every file before running any.
    let mut scenarios = Vec::with_capacity(files.len());
    for file in files {
        match Scenario::from_file(file) {
            Ok(scenario) => scenarios.push(scenario),
            Err(error) => {
                eprintln!("ctx-sim: {error}");
                return ExitCode::from(2);
            }
        }
    }
    let mut failed = false;
    for scenario in &scenarios {
        let options = RunOptions {
            seed,
            trace: trace.clone(),
            keep_trace: html.is_some(),
            verbose,
            ..RunOptions::default()
        };
        let report = match run(scenario, &options) {
            Ok(report) => report,
            Err(error) => {
                eprintln!("ctx-sim: {error}");
                return ExitCode::from(2);
            }
        };
        if verbose {
            for line in &report.log {
                eprintln!("{line}");
            }
        }
        if json {
            println!("{}", report::json(&report));
        } else {
            print!("{}", report::text(&report));
        }
        if let Some(out) = &html {
            // The page comes from the trace file when one was written, else
            // from the trace kept in memory.
            let built = match (&trace, &report.trace) {
                (Some(file), _) => View::from_file(file),
                (None, Some(bytes)) => View::from_bytes(bytes),
                (None, None) => unreachable!("keep_trace keeps the trace"),
            };
            let written = built
                .map_err(|e| e.to_string())
                .and_then(|v| write_page(&v, out));
            match written {
                Ok(()) => {
                    if !json {
                        println!("  diagram: {}", out.display());
                    }
                }
                Err(error) => {
                    eprintln!("ctx-sim: {}: {error}", out.display());
                    return ExitCode::from(2);
                }
            }
        }
        failed |= !report.passed;
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[allow(clippy::too_many_arguments)]
/// Which seeds a fuzz run takes, as given on the command line.
struct Sweep {
    seeds: Option<u64>,
    first_seed: Option<u64>,
    for_duration: Option<String>,
    shard: Option<String>,
    every_knob: bool,
}

/// The shard: `--shard I/K`, else JOB_COMPLETION_INDEX (0-based) of
/// CTX_SIM_SHARDS, else 1/1.
fn shard_of(flag: Option<&str>) -> Result<(u64, u64), String> {
    if let Some(text) = flag {
        return parse_shard(text);
    }
    let Ok(index) = std::env::var("JOB_COMPLETION_INDEX") else {
        return Ok((1, 1));
    };
    let index: u64 = index.trim().parse().map_err(|_| {
        format!("JOB_COMPLETION_INDEX must be a whole number (0-based), not {index:?}")
    })?;
    let shards = std::env::var("CTX_SIM_SHARDS").map_err(|_| {
        "JOB_COMPLETION_INDEX is set but CTX_SIM_SHARDS (how many shards the sweep has) is not"
            .to_owned()
    })?;
    let shards: u64 = shards
        .trim()
        .parse()
        .ok()
        .filter(|&k| k >= 1)
        .ok_or_else(|| {
            format!("CTX_SIM_SHARDS must be a whole number of at least 1, not {shards:?}")
        })?;
    if index >= shards {
        return Err(format!(
            "JOB_COMPLETION_INDEX {index} is not below CTX_SIM_SHARDS {shards}"
        ));
    }
    Ok((index + 1, shards))
}

/// A start for a timed sweep with no --first-seed: from the clock and the
/// process (the sweep itself stays deterministic per seed), below 2^48 so
/// that any sweep fits after it.
fn random_first_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(since_epoch.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish() >> 16
}

#[allow(clippy::too_many_arguments)]
fn fuzz_command(
    sweep: Sweep,
    from: Option<PathBuf>,
    app: Option<PathBuf>,
    nodes: usize,
    jobs: Option<usize>,
    out: PathBuf,
    json: bool,
) -> ExitCode {
    quiet_panics();
    let bad = |message: String| {
        eprintln!("ctx-sim: {message}");
        ExitCode::from(2)
    };
    let shard = match shard_of(sweep.shard.as_deref()) {
        Ok(shard) => shard,
        Err(message) => return bad(message),
    };
    let duration = match sweep.for_duration.as_deref().map(parse_duration_ms) {
        None => None,
        Some(Ok(ms)) => Some(Duration::from_millis(ms)),
        Some(Err(message)) => return bad(format!("--for: {message}")),
    };
    let seeds = match (sweep.seeds, duration) {
        (None, None) => Some(100),
        (seeds, _) => seeds,
    };
    let first_seed = match (sweep.first_seed, duration) {
        (Some(first), _) => first,
        (None, Some(_)) => random_first_seed(),
        (None, None) => 0,
    };
    if seeds.is_some_and(|n| first_seed.checked_add(n).is_none()) {
        return bad(format!(
            "--first-seed {first_seed} with --seeds {} runs past the last seed ({})",
            seeds.unwrap_or(0),
            u64::MAX
        ));
    }
    if !(2..=NODES_MAX).contains(&nodes) {
        return bad(format!(
            "--nodes must be between 2 and {NODES_MAX}, not {nodes}"
        ));
    }
    let from = match from {
        None => None,
        Some(file) => match Scenario::from_file(&file) {
            Ok(scenario) => Some(scenario),
            Err(error) => return bad(error.to_string()),
        },
    };
    let app = match app.as_deref().map(ctx_sim::generate::FuzzedApp::from_file) {
        None => None,
        Some(Ok(app)) => Some(app),
        Some(Err(error)) => return bad(error.to_string()),
    };
    let jobs = jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let options = FuzzOptions {
        first_seed,
        seeds,
        duration,
        from,
        nodes_max: nodes,
        app,
        every_knob: sweep.every_knob,
        jobs,
        shard,
        out,
    };
    let bar = match seeds {
        _ if json => ProgressBar::hidden(),
        Some(n) => ProgressBar::new(n.div_ceil(shard.1)),
        None => ProgressBar::new_spinner(),
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {pos}/{len} seeds, {per_sec}, {msg}",
        )
        .expect("a valid template"),
    );
    bar.set_message("0 failed");
    let progress = |done: u64, failed: u64| {
        bar.set_position(done);
        bar.set_message(format!("{failed} failed"));
    };
    let summary = match fuzz(&options, &progress) {
        Ok(summary) => summary,
        Err(error) => {
            bar.abandon();
            return bad(format!(
                "cannot write to {}: {error}",
                options.out.display()
            ));
        }
    };
    bar.finish_and_clear();
    if json {
        let shard_summary = ctx_sim::fold::ShardSummary::new(&summary, seeds, shard, jobs);
        println!(
            "{}",
            serde_json::to_string(&shard_summary).expect("a summary is plain data")
        );
        return if summary.failures.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    let seconds = summary.elapsed.as_secs_f64();
    println!(
        "fuzz: {} seeds (shard {}/{}) in {seconds:.1} s, {:.1} seeds/s, {jobs} jobs: {} failed",
        summary.seeds_run,
        shard.0,
        shard.1,
        summary.seeds_run as f64 / seconds.max(1e-9),
        summary.failures.len()
    );
    println!(
        "  {}",
        ctx_sim::fold::membership_rollback_line(
            summary.membership_rollback_seeds,
            summary.seeds_run
        )
    );
    match seeds {
        Some(n) if first_seed != 0 => {
            println!(
                "  seeds {first_seed}..{} (--first-seed {first_seed})",
                first_seed + n
            );
        }
        Some(_) => {}
        None => {
            println!("  seeds from {first_seed} (--first-seed {first_seed} runs this sweep again)")
        }
    }
    let Some(first) = summary.failures.first() else {
        return ExitCode::SUCCESS;
    };
    println!("  first failure: seed {}: {}", first.seed, first.detail);
    if let Some((file, before, after)) = &summary.shrunk {
        println!(
            "  shrunk from {before} steps to {after}: {}",
            file.display()
        );
        println!("  replay: ctx-sim run {}", file.display());
    }
    if let Some(page) = &summary.diagram {
        println!("  diagram: {}", page.display());
    }
    let others: Vec<String> = summary
        .failures
        .iter()
        .skip(1)
        .map(|f| f.seed.to_string())
        .collect();
    if !others.is_empty() {
        println!("  other failing seeds: {}", others.join(", "));
    }
    if !summary.saved.is_empty() {
        println!(
            "  unshrunk failing scenarios: {} files in {}",
            summary.saved.len(),
            options.out.display()
        );
    }
    ExitCode::from(1)
}

fn write_page(view: &View, out: &Path) -> Result<(), String> {
    std::fs::write(out, view::html(view)).map_err(|e| format!("cannot write the page: {e}"))
}

fn view_command(path: &Path, out: &Path) -> ExitCode {
    let view = match View::from_file(path) {
        Ok(view) => view,
        Err(error) => {
            eprintln!("ctx-sim: {}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    if let Err(error) = write_page(&view, out) {
        eprintln!("ctx-sim: {}: {error}", out.display());
        return ExitCode::from(2);
    }
    println!(
        "{} (seed {}): {} lanes, {} messages ({} copies lost), {} transactions, {} checks ({} failed): {}",
        view.scenario,
        view.seed,
        view.counts.lanes,
        view.counts.messages,
        view.counts.lost,
        view.counts.txs,
        view.counts.checks,
        view.counts.failed_checks,
        out.display()
    );
    ExitCode::SUCCESS
}

fn explain_command(path: &Path, tx: &str, json: bool) -> ExitCode {
    let view = match View::from_file(path) {
        Ok(view) => view,
        Err(error) => {
            eprintln!("ctx-sim: {}: {error}", path.display());
            return ExitCode::from(2);
        }
    };
    match explain::explain(&view, tx) {
        Ok(explained) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&explained).expect("explanations serialize")
                );
            } else {
                print!("{}", explain::text(&explained));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("ctx-sim: {}: --tx {tx}: {error}", path.display());
            ExitCode::from(2)
        }
    }
}

/// `I/K` with 1 <= I <= K.
fn fold_command(paths: &[PathBuf], json: bool) -> ExitCode {
    let mut summaries = Vec::with_capacity(paths.len());
    for path in paths {
        match ctx_sim::fold::read(path) {
            Ok(summary) => summaries.push((path.clone(), summary)),
            Err(error) => {
                eprintln!("ctx-sim: {error}");
                return ExitCode::from(2);
            }
        }
    }
    let folded = match ctx_sim::fold::fold(&summaries) {
        Ok(folded) => folded,
        Err(error) => {
            eprintln!("ctx-sim: {error}");
            return ExitCode::from(2);
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string(&folded).expect("a report is plain data")
        );
    } else {
        println!("{}", folded.describe());
    }
    if folded.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn parse_shard(text: &str) -> Result<(u64, u64), String> {
    let invalid = || format!("--shard takes I/K with 1 <= I <= K, such as 2/8, not {text:?}");
    let (i, k) = text.split_once('/').ok_or_else(invalid)?;
    let i: u64 = i.trim().parse().map_err(|_| invalid())?;
    let k: u64 = k.trim().parse().map_err(|_| invalid())?;
    if k == 0 || i == 0 || i > k {
        return Err(invalid());
    }
    Ok((i, k))
}

/// A sweep or a shrink reports a panicking run as the failed check `panic`
/// with its message (`run::run_catching`), and may run a panicking
/// scenario hundreds of times while shrinking it: the default hook's
/// message and backtrace for each would bury the summary.
fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}

fn shrink_command(file: &std::path::Path, seed: Option<u64>, out: Option<PathBuf>) -> ExitCode {
    quiet_panics();
    let mut scenario = match Scenario::from_file(file) {
        Ok(scenario) => scenario,
        Err(error) => {
            eprintln!("ctx-sim: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = seed {
        scenario.seed = seed;
    }
    let report = match ctx_sim::run::run_catching(&scenario, &RunOptions::default()) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("ctx-sim: {error}");
            return ExitCode::from(2);
        }
    };
    let target = failing_checks(&report);
    if target.is_empty() {
        println!(
            "{} (seed {}) passes: nothing to shrink",
            scenario.name, scenario.seed
        );
        return ExitCode::SUCCESS;
    }
    let Some(shrunk) = shrink(&scenario, &target, SHRINK_RUNS_MAX) else {
        eprintln!("ctx-sim: {}: the failure did not reproduce", file.display());
        return ExitCode::from(1);
    };
    let out = out.unwrap_or_else(|| {
        let stem = file
            .file_stem()
            .map_or("scenario".into(), |s| s.to_string_lossy().into_owned());
        file.with_file_name(format!("{stem}-shrunk.toml"))
    });
    let mut small = shrunk.scenario;
    small.path = out.clone();
    if let Err(error) = std::fs::write(&out, small.to_toml()) {
        eprintln!("ctx-sim: cannot write {}: {error}", out.display());
        return ExitCode::from(2);
    }
    println!(
        "{}: shrunk from {} steps to {} in {} runs; fails {}",
        file.display(),
        scenario.steps.len(),
        small.steps.len(),
        shrunk.runs,
        failing_checks(&shrunk.report)
            .into_iter()
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  replay: ctx-sim run {}", out.display());
    ExitCode::from(1)
}
