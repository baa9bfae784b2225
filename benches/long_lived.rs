//! Long-lived contexts: restart and catchup follow the state, not the
//! history. Two histories of kv `set`s over the same 100 000 keys, one of
//! 100 000 calls and one of 1 000 000 (ten times as long, the same state):
//!
//! - `restart`: a node rebuilt from its records, after the store dropped
//!   what each whole checkpoint supersedes (as ctx-node's does): the latest
//!   checkpoint and the transactions above its cut;
//! - `catchup`: a new member catching up from the node (the recorded
//!   messages replayed into a fresh node): the checkpoint's entries, checked,
//!   and the tail.
//!
//! The limit (issue: long-lived contexts) is time and bytes of the long
//! history at most 1.5 times those of the short one. The bytes are printed
//! with their ratio; the times are criterion's, and a median of five runs
//! of each is printed with its ratio beside the limit.
//!
//! `cargo bench --bench long_lived` (building the long history signs a
//! million transactions: about half a minute)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{drain, record_catchup, replay_catchup};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ctx_core::runtime::encode_args;
use ctx_core::{Config, ContextId, Ed25519Verifier, Node, Record};

use common::support::{KV, Net, secret};

const KEYS: u64 = 100_000;
const HISTORIES: [u64; 2] = [100_000, 1_000_000];
const LIMIT: f64 = 1.5;

/// What one history gives: the stored records and a recorded catchup.
struct Long {
    records: Vec<Record>,
    record_bytes: u64,
    catchup: common::RecordedCatchup,
}

fn build(calls: u64) -> Long {
    let mut net = Net::new(2);
    let context: ContextId = net.context_with(0, KV, &[0]);
    for index in 0..calls {
        let key = format!("key-{}", index % KEYS);
        let input = encode_args(&[key.as_bytes(), &index.to_le_bytes()]);
        net.nodes[0]
            .call(net.now, context, "set", input)
            .expect("node 0 is a member");
        net.collect();
        net.inflight.clear();
    }
    // The store drops what a whole checkpoint supersedes.
    let mut records: Vec<Record> = Vec::new();
    for record in net.disks[0].drain(..) {
        if let Record::CheckpointEnd { context, height } = &record {
            records.retain(|r| !r.superseded_by(*context, *height));
        }
        records.push(record);
    }
    let record_bytes = records.iter().map(|r| r.encode().len() as u64).sum();
    let catchup = record_catchup(&mut net, context);
    Long {
        records,
        record_bytes,
        catchup,
    }
}

fn restart(records: &[Record]) -> Node {
    let mut seed = [0u8; 32];
    seed[1] = 1;
    let mut node = Node::restore(
        Config::default(),
        secret(0),
        seed,
        Arc::new(Ed25519Verifier),
        records.iter().cloned(),
    )
    .expect("a node restores from its own records");
    drain(&mut node);
    node
}

fn median(mut run: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

fn long_lived(c: &mut Criterion) {
    let mut group = c.benchmark_group("long_lived");
    group.sample_size(10);
    let histories: Vec<(u64, Long)> = HISTORIES
        .iter()
        .map(|&calls| (calls, build(calls)))
        .collect();
    let mut figures = Vec::new();
    for (calls, long) in &histories {
        let restart_ms = median(|| drop(restart(&long.records))).as_secs_f64() * 1e3;
        let catchup_ms = median(|| drop(replay_catchup(&long.catchup))).as_secs_f64() * 1e3;
        println!(
            "long_lived/history-{calls}: restart {restart_ms:.1} ms from {} records ({} bytes); catchup {catchup_ms:.1} ms, {} bytes to the joiner in {} messages",
            long.records.len(),
            long.record_bytes,
            long.catchup.bytes_to_joiner,
            long.catchup.messages
        );
        figures.push((
            restart_ms,
            long.record_bytes as f64,
            catchup_ms,
            long.catchup.bytes_to_joiner as f64,
        ));
        group.bench_function(
            BenchmarkId::new("restart", format!("history-{calls}")),
            |b| b.iter_with_large_drop(|| restart(&long.records)),
        );
        group.bench_function(
            BenchmarkId::new("catchup", format!("history-{calls}")),
            |b| b.iter_with_large_drop(|| replay_catchup(&long.catchup)),
        );
    }
    let (short, long) = (figures[0], figures[1]);
    println!(
        "long_lived: history x10, same {KEYS} keys: restart time x{:.2}, restart bytes x{:.2}, catchup time x{:.2}, catchup bytes x{:.2} (limit x{LIMIT})",
        long.0 / short.0,
        long.1 / short.1,
        long.2 / short.2,
        long.3 / short.3
    );
    group.finish();
}

criterion_group!(benches, long_lived);
criterion_main!(benches);
