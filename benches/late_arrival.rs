//! Late arrival: a transaction that lands k positions back in the canonical
//! order (k = 1, 100, 10 000), in a history of 10 000 and of 100 000 kv
//! calls. Applying it rolls back the k transactions after it, applies it,
//! and re-executes them: the time grows with k, not with the history.
//!
//! The history is a chain of calls by one member. Each measured insertion
//! is a call whose parent is the chain's transaction k back, so it sorts
//! among the last k (k - 1 or k are re-executed: it may sort before or after
//! its one sibling). Between measurements, untimed, the chain grows by one,
//! so the next late call lands k back again; the replica is rebuilt from
//! the original chain whenever it has grown by half.
//!
//! `cargo bench --bench late_arrival`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use ctx_core::runtime::{encode_args, wasm_from_source};
use ctx_core::tx::{Parent, Signature, SignedTx, TX_FORMAT_VERSION, Tx, TxBody, TxKind};
use ctx_core::{ContextId, Hash, MemberId, Replica, TxId};

const KV: &str = include_str!("../scenarios/apps/kv.wat");
const CONTEXT: ContextId = ContextId([9; 32]);
const AUTHOR: MemberId = MemberId([7; 32]);

/// A transaction as the replica sees it once checked. Replicas do not check
/// signatures (the node does, before inserting), so none is made here.
fn tx(height: u64, parents: Vec<Parent>, kind: TxKind) -> Tx {
    let body = TxBody {
        version: TX_FORMAT_VERSION,
        context: CONTEXT,
        author: AUTHOR,
        height,
        parents,
        kind,
    };
    Tx::from_signed_unverified(SignedTx {
        body,
        signature: Signature([0; 64]),
    })
    .expect("structurally valid")
}

fn set(height: u64, parent: TxId, tag: &str) -> Tx {
    let key = format!("{tag}-{height}");
    let input = encode_args(&[key.as_bytes(), b"value"]);
    let kind = TxKind::Call {
        method: "set".into(),
        input,
    };
    // A chain: the parent is one below.
    let parent = Parent {
        id: parent,
        height: height - 1,
    };
    tx(height, vec![parent], kind)
}

/// A replica of a chain of `length` calls, and a way to grow it.
struct Chain {
    genesis: Tx,
    app: Arc<Vec<u8>>,
    original: Vec<Tx>,
    replica: Replica,
    /// The chain's transactions by height (0: the genesis).
    by_height: Vec<TxId>,
    late_made: u64,
    /// The k of the last insertion: another k starts from the original
    /// chain, so earlier late calls never sort after the new ones.
    last_k: u64,
}

impl Chain {
    fn new(length: u64) -> Chain {
        let app = Arc::new(wasm_from_source(KV.as_bytes()).expect("the kv app compiles"));
        let genesis = tx(
            0,
            Vec::new(),
            TxKind::Create {
                runtime_version: ctx_core::runtime::RUNTIME_VERSION,
                app_hash: Hash(*blake3::hash(&app).as_bytes()),
                app_bytes: app.len() as u64,
            },
        );
        let mut original = Vec::with_capacity(length as usize);
        let mut parent = genesis.id();
        for height in 1..=length {
            let next = set(height, parent, "chain");
            parent = next.id();
            original.push(next);
        }
        let replica = Replica::rebuild(genesis.clone(), app.clone(), original.clone())
            .expect("the chain rebuilds");
        let by_height = std::iter::once(genesis.id())
            .chain(original.iter().map(Tx::id))
            .collect();
        Chain {
            genesis,
            app,
            original,
            replica,
            by_height,
            late_made: 0,
            last_k: 0,
        }
    }

    fn reset(&mut self) {
        self.replica = Replica::rebuild(
            self.genesis.clone(),
            self.app.clone(),
            self.original.clone(),
        )
        .expect("the chain rebuilds");
        self.by_height.truncate(self.original.len() + 1);
    }

    /// Inserts a call that lands `k` back; returns the time it took.
    fn insert_late(&mut self, k: u64) -> Duration {
        if k != self.last_k {
            self.reset();
            self.last_k = k;
        }
        let top = self.by_height.len() as u64 - 1;
        let parent_height = top - k;
        self.late_made += 1;
        let late = set(
            parent_height + 1,
            self.by_height[parent_height as usize],
            &format!("late{}", self.late_made),
        );
        let started = Instant::now();
        let inserted = self.replica.insert(late).expect("its parent is there");
        let elapsed = started.elapsed();
        let reexecuted = inserted.reexecuted as u64;
        assert!(
            reexecuted == k || reexecuted + 1 == k,
            "landed {reexecuted} back, not {k}"
        );
        // Untimed: grow the chain so the next one lands k back too.
        let head = *self.by_height.last().expect("a genesis at least");
        let next = set(top + 1, head, "chain");
        self.by_height.push(next.id());
        self.replica.insert(next).expect("its parent is there");
        if self.by_height.len() > self.original.len() * 3 / 2 {
            self.reset();
        }
        elapsed
    }
}

fn late_arrival(c: &mut Criterion) {
    let mut group = c.benchmark_group("late-arrival");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for history in [10_000u64, 100_000] {
        let mut chain: Option<Chain> = None;
        for k in [1u64, 100, 10_000] {
            group.bench_with_input(
                BenchmarkId::new(format!("history-{history}"), format!("k-{k}")),
                &k,
                |b, &k| {
                    b.iter_custom(|iterations| {
                        let chain = chain.get_or_insert_with(|| Chain::new(history));
                        (0..iterations).map(|_| chain.insert_late(k)).sum()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, late_arrival);
criterion_main!(benches);
