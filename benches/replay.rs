//! Replay throughput, one core, 100 000 transactions, beside its limits in
//! the same group:
//!
//! - `restart`: a node rebuilt from its persisted records (decoded from
//!   bytes, as a node's database holds them), every transaction applied
//!   once in the canonical order (`Node::restore`);
//! - `catchup`: a new member applying the history it receives from a peer:
//!   the recorded messages of a real catchup fed to a fresh node, decoding,
//!   batched signature checks and applying included;
//! - `restart-native`: the same records through the same replica with the
//!   app written in Rust behind the engine's `Application` interface: the
//!   engine's cost without WebAssembly;
//! - `wasmi-bare-loop`: the app's method called on one reused wasmi
//!   instance with a plain map as storage, no reset, no state root: the
//!   runtime's ceiling;
//! - `ed25519/verify-single` and `ed25519/verify-batched`: signature checks
//!   alone, the catchup's ceiling.
//!
//! `cargo bench --bench replay` (one workload: `cargo bench --bench replay -- kv-set`)

mod common;

use std::cell::LazyCell;
use std::sync::Arc;

use common::support::{Net, secret};
use common::{
    BareWasm, RecordedCatchup, Workload, decoded, encoded, history_with, record_catchup,
    replay_catchup, whole_history,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ctx_core::tx::{SignedTx, Tx};
use ctx_core::verify::Verifier;
use ctx_core::{ContextId, Ed25519Verifier, Node, Record, Replica};

const CALLS: u64 = 100_000;
/// Signatures the ed25519 benchmarks check, per iteration.
const SIGNATURES: u64 = 10_000;

/// Restarts node 0 from `records`; returns it.
fn restart(records: &[Vec<u8>]) -> Node {
    let mut seed = [0u8; 32];
    seed[1] = 1;
    Node::restore(
        whole_history(),
        secret(0),
        seed,
        Arc::new(Ed25519Verifier),
        decoded(records),
    )
    .expect("a node restores from its own records")
}

/// Rebuilds `context` from `records` with the workload's native app.
fn restart_native(records: &[Vec<u8>], workload: Workload) -> Replica {
    let mut opened = None;
    let mut txs = Vec::new();
    for record in decoded(records) {
        match record {
            Record::Opened { genesis, app, .. } => opened = Some((genesis, app)),
            Record::Tx { tx, .. } => {
                txs.push(Tx::from_signed_unverified(tx).expect("persisted transactions are valid"))
            }
            // Every transaction record is kept here: the checkpoints add nothing.
            Record::Joining { .. }
            | Record::Deleted { .. }
            | Record::CheckpointStart { .. }
            | Record::CheckpointEntries { .. }
            | Record::CheckpointVouches { .. }
            | Record::CheckpointEnd { .. } => {}
        }
    }
    let (genesis, app) = opened.expect("the context was opened");
    let genesis = Tx::from_signed_unverified(genesis).expect("a valid genesis");
    Replica::rebuild_with(genesis, Arc::new(app), workload.native(), txs)
        .expect("the records rebuild")
}

fn applied(node: &Node, context: &ContextId) -> usize {
    node.replica(context).expect("held").applied()
}

/// What one workload's benchmarks run on, made only if one of them is
/// selected.
struct Fixture {
    context: ContextId,
    /// Node 0's records, encoded.
    records: Vec<Vec<u8>>,
    applied: usize,
    catchup: RecordedCatchup,
}

impl Fixture {
    fn new(workload: Workload) -> Fixture {
        let (mut net, context) = history_with(whole_history(), workload, CALLS, 2);
        let records = encoded(&net.disks[0]);
        let applied = applied(&net.nodes[0], &context);
        let root = net.root(0, &context).expect("held");
        assert_eq!(
            restart_native(&records, workload).state_root(),
            root,
            "the native {} app agrees with the module",
            workload.name()
        );
        let catchup = record_catchup(&mut net, context);
        Fixture {
            context,
            records,
            applied,
            catchup,
        }
    }
}

fn replay(c: &mut Criterion) {
    let mut group = c.benchmark_group("replay");
    group.sample_size(10);
    group.throughput(Throughput::Elements(CALLS));
    for workload in Workload::ALL {
        let name = workload.name();
        let fixture = LazyCell::new(|| Fixture::new(workload));
        group.bench_function(format!("{name}/restart"), |b| {
            b.iter_with_large_drop(|| {
                let node = restart(&fixture.records);
                assert_eq!(applied(&node, &fixture.context), fixture.applied);
                node
            })
        });
        group.bench_function(format!("{name}/restart-native"), |b| {
            b.iter_with_large_drop(|| restart_native(&fixture.records, workload))
        });
        group.bench_function(format!("{name}/catchup"), |b| {
            b.iter_with_large_drop(|| replay_catchup(&fixture.catchup))
        });
        let calls = LazyCell::new(|| (0..CALLS).map(|i| workload.call(i)).collect::<Vec<_>>());
        group.bench_function(format!("{name}/wasmi-bare-loop"), |b| {
            b.iter_batched(
                || BareWasm::new(workload.app()),
                |mut bare| {
                    for (method, input) in calls.iter() {
                        bare.call(method, input);
                    }
                    bare
                },
                BatchSize::LargeInput,
            )
        });
    }
    signatures(&mut group);
    group.finish();
}

/// ed25519 verification alone, over 10 000 transactions of 10 authors (the
/// throughput is per signature).
fn signatures(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let signed = LazyCell::new(signed_transactions);
    let txs = LazyCell::new(|| {
        signed
            .iter()
            .map(|tx| Tx::from_signed_unverified(tx.clone()).expect("valid"))
            .collect::<Vec<Tx>>()
    });
    let checks = LazyCell::new(|| txs.iter().map(Tx::signature_check).collect::<Vec<_>>());
    group.throughput(Throughput::Elements(SIGNATURES));
    group.bench_function("ed25519/verify-single", |b| {
        b.iter(|| {
            for check in checks.iter() {
                assert!(Ed25519Verifier.verify(*check));
            }
        })
    });
    let batch = ctx_core::limits::SYNC_BATCH_TXS_MAX;
    group.bench_function(format!("ed25519/verify-batched-{batch}"), |b| {
        b.iter(|| {
            for chunk in checks.chunks(batch) {
                assert!(Ed25519Verifier.verify_all(chunk));
            }
        })
    });
}

/// 10 000 calls made by 10 members, signed.
fn signed_transactions() -> Vec<SignedTx> {
    let mut net = Net::new(10);
    let context = net.context_with(0, Workload::KvSet.app(), &(0..10).collect::<Vec<_>>());
    for index in 0..SIGNATURES {
        let (method, input) = Workload::KvSet.call(index);
        let author = (index % 10) as usize;
        net.nodes[author]
            .call(net.now, context, method, input)
            .expect("a member");
        net.collect();
        net.inflight.clear();
    }
    net.disks
        .iter()
        .flatten()
        .filter_map(|record| match record {
            Record::Tx { tx, .. } => Some(tx.clone()),
            _ => None,
        })
        .take(SIGNATURES as usize)
        .collect()
}

criterion_group!(benches, replay);
criterion_main!(benches);
