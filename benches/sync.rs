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

use common::support::Net;
use common::{Workload, history, record_catchup, replay_catchup};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ctx_core::{ContextId, Record};

const HISTORIES: [u64; 2] = [10_000, 100_000];
/// Calls each side makes while partitioned.
const WRITES_PER_SIDE: u64 = 1_000;

/// The disks of two members of `context` right after a partition in which
/// each wrote [`WRITES_PER_SIDE`] calls the other did not see.
struct Partitioned {
    context: ContextId,
    disks: Vec<Vec<Record>>,
}

fn partitioned(history_calls: u64) -> Partitioned {
    let (mut net, context) = history(Workload::KvSet, history_calls, 2);
    record_catchup(&mut net, context);
    net.advance(10);
    for side in 0..2 {
        for index in 0..WRITES_PER_SIDE {
            let (method, input) = Workload::KvSet.call(history_calls + 10 * index + side as u64);
            net.nodes[side]
                .call(net.now, context, method, input)
                .expect("a member");
            net.collect();
            // The partition: nothing crosses.
            net.inflight.clear();
        }
    }
    Partitioned {
        context,
        disks: net.disks.clone(),
    }
}

/// What a repair cost.
#[derive(Debug, Default, PartialEq, Eq)]
struct RepairCost {
    bytes: u64,
    messages: u64,
    /// Waves of messages (all in flight delivered at once, then the answers)
    /// over two.
    round_trips: u64,
}

/// Both members restarted from the partitioned disks.
fn restarted(partitioned: &Partitioned) -> Net {
    let mut net = Net::new(2);
    net.disks = partitioned.disks.clone();
    net.restart(0);
    net.restart(1);
    net.collect();
    net.inflight.clear();
    net
}

/// Heals the partition: timers fire, and messages are delivered in waves
/// until both hold the same DAG.
fn repair(net: &mut Net, context: ContextId) -> RepairCost {
    let mut cost = RepairCost::default();
    let mut waves = 0u64;
    let converged = |net: &Net| {
        let (a, b) = (
            net.nodes[0].status(&context).expect("held"),
            net.nodes[1].status(&context).expect("held"),
        );
        a.heads == b.heads && a.applied == b.applied
    };
    for _ in 0..100_000 {
        if converged(net) {
            break;
        }
        if net.inflight.is_empty() {
            let at = net.next_timeout().expect("a member has a timer");
            net.fire_timers(at);
            net.collect();
            continue;
        }
        waves += 1;
        let wave: Vec<_> = net.inflight.drain(..).collect();
        for message in wave {
            cost.bytes += message.bytes.len() as u64;
            cost.messages += 1;
            let from = net.ids[message.from];
            net.nodes[message.to]
                .handle_message(net.now, from, &message.bytes)
                .expect("engines send valid messages");
        }
        net.collect();
    }
    assert!(converged(net), "repaired");
    let applied = net.nodes[0].status(&context).expect("held").applied;
    assert!(applied as u64 >= 2 * WRITES_PER_SIDE);
    cost.round_trips = waves.div_ceil(2);
    cost
}

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
            let state = partitioned(calls);
            let cost = repair(&mut restarted(&state), state.context);
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
                        repair(&mut net, state.context);
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
