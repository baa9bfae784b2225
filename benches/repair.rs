//! Deep repair: two members of a kv context with a short history (100
//! calls) are partitioned, each writes N calls, then the partition heals.
//! Measured from the heal until both hold the same DAG and state root, for
//! N = 1 000, 10 000 and 100 000 per side, driven in-process as the sync
//! bench does (`benches/common/repair.rs`).
//!
//! Printed beside criterion's time, for each N: the bytes, messages and
//! round trips exchanged, the re-executions counted on each member
//! (`Replica::reexecuted_total`, after minus before) and their ratio to the
//! 2N missing transactions; then the limits the long-lived-contexts issue
//! sets: time(100 000) at most 12 × time(10 000), and re-executions at most
//! a small constant × 2N.
//!
//! Each N is first repaired once, untimed by criterion, for its costs. If
//! that run took longer than 60 s (`CTX_REPAIR_SINGLE_RUN_S`), that N is
//! not sampled by criterion (at least 10 samples and a warm-up: over ten
//! minutes) and the single timed run is its figure, labelled as such. A run
//! still not converged after 600 s (`CTX_REPAIR_BUDGET_S`) is stopped and
//! reported with how far it got.
//!
//! Times sampled by criterion are also recorded here (warm-up included,
//! flat sampling: one repair per timed iteration), and the summary quotes
//! their median, so the ratio is computed in the same run.
//!
//! `cargo bench --bench repair`; `CTX_REPAIR_WRITES=1000,10000` for some
//! sizes only. A criterion filter skips the sampling but not the first run
//! of each size, which is what prints the costs: `-- --list` makes only the
//! first runs (about 30 s in all).

mod common;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use common::repair::{RepairCost, carried, partitioned, repair, repair_within, restarted};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

/// Calls made before the partition.
const HISTORY_CALLS: u64 = 100;
/// Calls each side makes while partitioned.
const WRITES_PER_SIDE: [u64; 3] = [1_000, 10_000, 100_000];
/// One run longer than this is not sampled by criterion.
const SINGLE_RUN_OVER: Duration = Duration::from_secs(60);
/// A run is stopped after this long.
const BUDGET: Duration = Duration::from_secs(600);
/// The limit on time(10 N) / time(N), from 10 000 to 100 000.
const TIME_RATIO_MAX: f64 = 12.0;

/// How a size's time was measured.
enum Measure {
    /// Criterion's warm-up and samples: every timed run, recorded.
    Sampled(Vec<Duration>),
    /// One timed run, the first (too slow to sample, or filtered out).
    Single(Duration, &'static str),
    /// Stopped at the budget before converging.
    Stopped(Duration),
}

struct Row {
    writes: u64,
    cost: RepairCost,
    /// Transactions the answers carried (some more than once).
    carried_txs: u64,
    measure: Measure,
}

impl Row {
    /// The median run (or the one run; at least the budget if stopped).
    fn time(&self) -> Duration {
        match &self.measure {
            Measure::Sampled(times) => median(times),
            Measure::Single(time, _) | Measure::Stopped(time) => *time,
        }
    }

    fn reexecuted_per_missing(&self) -> f64 {
        let [a, b] = self.cost.reexecuted;
        (a + b) as f64 / (2 * self.writes) as f64
    }

    fn carried_per_missing(&self) -> f64 {
        self.carried_txs as f64 / (2 * self.writes) as f64
    }
}

/// "21.4 ms" or "18.78 s".
fn shown(time: Duration) -> String {
    if time < Duration::from_secs(1) {
        format!("{:.1} ms", time.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", time.as_secs_f64())
    }
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

fn seconds_from_env(name: &str, default: Duration) -> Duration {
    match std::env::var(name) {
        Ok(value) => Duration::from_secs_f64(
            value
                .parse()
                .unwrap_or_else(|_| panic!("{name} must be a number of seconds, not {value:?}")),
        ),
        Err(_) => default,
    }
}

fn sizes() -> Vec<u64> {
    match std::env::var("CTX_REPAIR_WRITES") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                n.trim().replace('_', "").parse().unwrap_or_else(|_| {
                    panic!("CTX_REPAIR_WRITES is a comma-separated list of counts, not {list:?}")
                })
            })
            .collect(),
        Err(_) => WRITES_PER_SIDE.to_vec(),
    }
}

fn print_cost(name: &str, writes: u64, cost: &RepairCost) {
    let [a, b] = cost.reexecuted;
    println!(
        "{name}: {} bytes, {} messages, {} round trips for {} missing transactions; \
         re-executed {a} on member 0, {b} on member 1: {:.2} x 2N",
        cost.bytes,
        cost.messages,
        cost.round_trips,
        2 * writes,
        (a + b) as f64 / (2 * writes) as f64
    );
}

fn deep_repair(c: &mut Criterion) {
    let single_run_over = seconds_from_env("CTX_REPAIR_SINGLE_RUN_S", SINGLE_RUN_OVER);
    let budget = seconds_from_env("CTX_REPAIR_BUDGET_S", BUDGET);
    let mut group = c.benchmark_group("repair");
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    let mut rows = Vec::new();
    for writes in sizes() {
        let name = format!("repair/deep/writes-{writes}");
        let made = Instant::now();
        let state = partitioned(HISTORY_CALLS, writes);
        println!(
            "{name}: partition made in {:.2} s ({HISTORY_CALLS} calls before it, {writes} on each side during it)",
            made.elapsed().as_secs_f64()
        );

        // The first run: the costs, and whether criterion can sample it.
        let mut net = restarted(&state);
        let mut delivered = Vec::new();
        let started = Instant::now();
        let cost = repair_within(
            &mut net,
            state.context,
            Some(budget),
            Some(&mut delivered),
            |elapsed, so_far| {
                eprintln!(
                    "{name}: {:.0} s in: {} messages, applied {} / {}, re-executed {} / {}",
                    elapsed.as_secs_f64(),
                    so_far.messages,
                    so_far.applied[0],
                    so_far.applied[1],
                    so_far.reexecuted[0],
                    so_far.reexecuted[1],
                );
            },
        );
        let first = started.elapsed();
        drop(net);
        print_cost(&name, writes, &cost);
        let census = carried(&delivered);
        drop(delivered);
        println!(
            "{name}: {} fetches answered by {} batches carrying {} transactions, {} of them distinct \
             ({:.2} carried per missing transaction)",
            census.fetches,
            census.batches,
            census.txs,
            census.distinct,
            census.txs as f64 / (2 * writes) as f64
        );
        if !cost.converged {
            println!(
                "{name}: STOPPED after {:.1} s, not converged: applied {} on member 0, {} on member 1 \
                 (each must reach at least {})",
                first.as_secs_f64(),
                cost.applied[0],
                cost.applied[1],
                HISTORY_CALLS + 2 * writes
            );
            rows.push(Row {
                writes,
                cost,
                carried_txs: census.txs,
                measure: Measure::Stopped(first),
            });
            continue;
        }
        let written = HISTORY_CALLS + 2 * writes;
        assert!(cost.applied[0] as u64 >= written, "both sides' calls held");
        if first > single_run_over {
            println!(
                "{name}: one run took {:.1} s (over {:.1} s): measured with this single timed run, \
                 not sampled by criterion",
                first.as_secs_f64(),
                single_run_over.as_secs_f64()
            );
            rows.push(Row {
                writes,
                cost,
                carried_txs: census.txs,
                measure: Measure::Single(first, "single timed run, too slow to sample"),
            });
            continue;
        }

        let times = RefCell::new(Vec::new());
        group.throughput(Throughput::Elements(2 * writes));
        group.bench_function(BenchmarkId::new("deep", format!("writes-{writes}")), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut net = restarted(&state);
                    let started = Instant::now();
                    let cost = repair(&mut net, &state);
                    let time = started.elapsed();
                    std::hint::black_box(cost);
                    total += time;
                    times.borrow_mut().push(time);
                    drop(net);
                }
                total
            })
        });
        let times = times.into_inner();
        let measure = if times.is_empty() {
            Measure::Single(first, "single timed run, filtered out of criterion")
        } else {
            Measure::Sampled(times)
        };
        rows.push(Row {
            writes,
            cost,
            carried_txs: census.txs,
            measure,
        });
    }
    group.finish();
    summary(&rows);
}

fn summary(rows: &[Row]) {
    println!();
    println!("repair/deep: {HISTORY_CALLS} calls before the partition");
    println!(
        "  {:>9}  {:>12}  {:>12}  {:>9}  {:>7}  {:>12}  {:>12}  {:>12}  {:>12}  how",
        "N / side",
        "time",
        "bytes",
        "messages",
        "rounds",
        "carried/2N",
        "re-exec. m0",
        "re-exec. m1",
        "re-exec./2N",
    );
    for row in rows {
        let how = match &row.measure {
            Measure::Sampled(times) => format!("median of {} criterion runs", times.len()),
            Measure::Single(_, why) => (*why).to_owned(),
            Measure::Stopped(_) => {
                "STOPPED at the budget: the time is a lower bound, the counts are so far".to_owned()
            }
        };
        println!(
            "  {:>9}  {:>12}  {:>12}  {:>9}  {:>7}  {:>12.2}  {:>12}  {:>12}  {:>12.2}  {how}",
            row.writes,
            shown(row.time()),
            row.cost.bytes,
            row.cost.messages,
            row.cost.round_trips,
            row.carried_per_missing(),
            row.cost.reexecuted[0],
            row.cost.reexecuted[1],
            row.reexecuted_per_missing(),
        );
    }
    for small in rows {
        let Some(large) = rows.iter().find(|r| r.writes == 10 * small.writes) else {
            continue;
        };
        let ratio = large.time().as_secs_f64() / small.time().as_secs_f64();
        let stopped = matches!(large.measure, Measure::Stopped(_));
        let bound = if stopped { "at least " } else { "" };
        let verdict = if large.writes != 100_000 {
            format!("for reference: the limit of {TIME_RATIO_MAX} is on 100 000 / 10 000")
        } else if ratio > TIME_RATIO_MAX {
            format!("limit {TIME_RATIO_MAX}: missed")
        } else if stopped {
            format!("limit {TIME_RATIO_MAX}: not known, the run was stopped")
        } else {
            format!("limit {TIME_RATIO_MAX}: met")
        };
        println!(
            "  time({}) / time({}) = {bound}{ratio:.1} ({verdict})",
            large.writes, small.writes
        );
    }
    if let Some(worst) = rows
        .iter()
        .map(Row::reexecuted_per_missing)
        .reduce(f64::max)
    {
        println!(
            "  re-executions / 2N: at most {worst:.2} over these sizes (limit: a small constant)"
        );
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    deep_repair(&mut criterion);
    criterion.final_summary();
}
