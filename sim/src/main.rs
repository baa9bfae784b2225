//! `ctx-sim`: run scenario files, replay traces.
//!
//! Exit status: 0 every check held; 1 a check failed; 2 the input was bad
//! (one message naming the file, the line and what is wrong, and no run).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ctx_sim::run::{RunOptions, run};
use ctx_sim::scenario::Scenario;
use ctx_sim::{report, trace};

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
        /// Prints an event log.
        #[arg(long)]
        verbose: bool,
    },
    /// Re-drives fresh engines with a trace and checks every output matches.
    Replay {
        /// A trace written by `ctx-sim run --trace`.
        trace: PathBuf,
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
            verbose,
        } => run_files(&files, seed, json, trace, verbose),
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
    verbose: bool,
) -> ExitCode {
    if trace.is_some() && files.len() > 1 {
        eprintln!(
            "ctx-sim: --trace takes one scenario file, not {}",
            files.len()
        );
        return ExitCode::from(2);
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
        failed |= !report.passed;
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
