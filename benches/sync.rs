//! Sync cost, with 10 000 and 100 000 kv calls of history:
//!
//! - catchup of a new member: the time (criterion) and the bytes on the
//!   wire both ways (printed);
//! - repair after a partition in which each side wrote 1 000: the bytes,
//!   messages and round trips from the heal until both hold the same DAG
//!   (printed), and the time (criterion). Only 2 000 transactions are
//!   missing, so the cost must not depend on the history.
//!
//! `cargo bench --bench sync`

mod common;

use std::cell::LazyCell;

use common::repair::{partitioned, repair, restarted};
use common::{Workload, history, record_catchup, replay_catchup};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const HISTORIES: [u64; 2] = [10_000, 100_000];
/// Calls each side makes while partitioned.
const WRITES_PER_SIDE: u64 = 1_000;

fn sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("sync");
    group.sample_size(10);
    for calls in HISTORIES {
        let catchup = LazyCell::new(|| {
            let (mut net, context) = history(Workload::KvSet, calls, 2);
            let recorded = record_catchup(&mut net, context);
            println!(
                "sync/catchup/history-{calls}: {} bytes to the new member, {} from it, {} messages",
                recorded.bytes_to_joiner, recorded.bytes_from_joiner, recorded.messages
            );
            recorded
        });
        group.throughput(Throughput::Elements(calls));
        group.bench_function(
            BenchmarkId::new("catchup", format!("history-{calls}")),
            |b| b.iter_with_large_drop(|| replay_catchup(&catchup)),
        );
    }
    for calls in HISTORIES {
        let state = LazyCell::new(|| {
            let state = partitioned(calls, WRITES_PER_SIDE);
            let cost = repair(&mut restarted(&state), &state);
            println!(
                "sync/repair/history-{calls}: {} bytes, {} messages, {} round trips for {} missing transactions",
                cost.bytes,
                cost.messages,
                cost.round_trips,
                2 * WRITES_PER_SIDE
            );
            state
        });
        group.throughput(Throughput::Elements(2 * WRITES_PER_SIDE));
        group.bench_function(
            BenchmarkId::new("repair", format!("history-{calls}")),
            |b| {
                b.iter_batched(
                    || restarted(&state),
                    |mut net| {
                        repair(&mut net, &state);
                        net
                    },
                    BatchSize::PerIteration,
                )
            },
        );
    }
    group.finish();
}

criterion_group!(benches, sync);
criterion_main!(benches);
