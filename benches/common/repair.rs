//! Repair after a partition, driven in-process: two members of one kv
//! context are partitioned, each writes some calls the other does not see,
//! both restart from their disks (so every run starts from the same state),
//! and the heal is driven in waves until both hold the same DAG and state
//! root. Shared by the sync bench (a shallow partition beside a long
//! history) and the repair bench (deep partitions beside a short one).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ctx_core::wire::{Body, Envelope};
use ctx_core::{ContextId, Record};

use super::support::{Message, Net};
use super::{Workload, history, record_catchup};

/// The disks of two members of `context` right after a partition in which
/// each wrote `writes_per_side` calls the other did not see.
pub struct Partitioned {
    pub context: ContextId,
    pub disks: Vec<Vec<Record>>,
    pub history_calls: u64,
    pub writes_per_side: u64,
}

/// Node 0 makes `history_calls` kv calls, node 1 catches up, then both are
/// cut off from each other and each makes `writes_per_side` calls.
pub fn partitioned(history_calls: u64, writes_per_side: u64) -> Partitioned {
    let (mut net, context) = history(Workload::KvSet, history_calls, 2);
    record_catchup(&mut net, context);
    net.advance(10);
    for side in 0..2 {
        for index in 0..writes_per_side {
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
        history_calls,
        writes_per_side,
    }
}

/// Both members restarted from the partitioned disks.
pub fn restarted(partitioned: &Partitioned) -> Net {
    let mut net = Net::new(2);
    net.disks = partitioned.disks.clone();
    net.restart(0);
    net.restart(1);
    net.collect();
    net.inflight.clear();
    net
}

/// What a repair cost.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RepairCost {
    /// Bytes of every message delivered, both ways.
    pub bytes: u64,
    pub messages: u64,
    /// Waves of messages (all in flight delivered at once, then the answers)
    /// over two.
    pub round_trips: u64,
    /// Already-applied slots each member re-executed during the repair
    /// (`Replica::reexecuted_total`, after minus before).
    pub reexecuted: [u64; 2],
    /// Transactions each member had applied when the repair ended.
    pub applied: [usize; 2],
    /// Whether both hold the same heads, applied count and state root. Only
    /// false when the repair was stopped at its budget.
    pub converged: bool,
}

/// Whether both members hold the same DAG (heads and applied count) and the
/// same state root.
pub fn converged(net: &Net, context: &ContextId) -> bool {
    let (a, b) = (
        net.nodes[0].replica(context).expect("held"),
        net.nodes[1].replica(context).expect("held"),
    );
    a.heads() == b.heads() && a.applied() == b.applied() && a.state_root() == b.state_root()
}

fn reexecuted_totals(net: &Net, context: &ContextId) -> [u64; 2] {
    [0, 1].map(|i| {
        net.nodes[i]
            .replica(context)
            .expect("held")
            .reexecuted_total()
    })
}

fn applied(net: &Net, context: &ContextId) -> [usize; 2] {
    [0, 1].map(|i| net.nodes[i].replica(context).expect("held").applied())
}

/// Heals the partition: timers fire, and messages are delivered in waves
/// until both hold the same DAG and state root. Panics if they do not, or
/// if they hold less than both sides wrote.
pub fn repair(net: &mut Net, partitioned: &Partitioned) -> RepairCost {
    let cost = repair_within(net, partitioned.context, None, None, |_, _| {});
    assert!(cost.converged, "repaired");
    let written = partitioned.history_calls + 2 * partitioned.writes_per_side;
    assert!(
        cost.applied[0] as u64 >= written,
        "both hold every call of both sides"
    );
    cost
}

/// [`repair`], stopped once `budget` has passed (checked between messages),
/// calling `progress` with the time spent and the cost so far about every
/// 30 seconds, and moving every delivered message into `delivered` if given
/// (for [`carried`], after the run: nothing is decoded while it is timed).
/// The result says whether it converged.
pub fn repair_within(
    net: &mut Net,
    context: ContextId,
    budget: Option<Duration>,
    mut delivered: Option<&mut Vec<Message>>,
    mut progress: impl FnMut(Duration, &RepairCost),
) -> RepairCost {
    const PROGRESS_EVERY: Duration = Duration::from_secs(30);
    let started = Instant::now();
    let mut next_progress = PROGRESS_EVERY;
    let reexecuted_before = reexecuted_totals(net, &context);
    let mut cost = RepairCost::default();
    let mut waves = 0u64;
    let so_far = |net: &Net, cost: &mut RepairCost, waves: u64| {
        let now = reexecuted_totals(net, &context);
        cost.reexecuted = [0, 1].map(|i| now[i] - reexecuted_before[i]);
        cost.applied = applied(net, &context);
        cost.round_trips = waves.div_ceil(2);
    };
    'heal: for _ in 0..1_000_000 {
        if converged(net, &context) {
            cost.converged = true;
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
            if let Some(delivered) = delivered.as_deref_mut() {
                delivered.push(message);
            }
            let elapsed = started.elapsed();
            if elapsed >= next_progress {
                next_progress += PROGRESS_EVERY;
                so_far(net, &mut cost, waves);
                progress(elapsed, &cost);
            }
            if budget.is_some_and(|budget| elapsed >= budget) {
                net.collect();
                break 'heal;
            }
        }
        net.collect();
    }
    so_far(net, &mut cost, waves);
    cost
}

/// What the answers to fetches carried during a repair.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Carried {
    pub fetches: u64,
    /// `Txs` messages (answers to fetches; no catchup stream runs here).
    pub batches: u64,
    /// Transactions in them, counting one sent twice to the same member
    /// twice.
    pub txs: u64,
    /// Distinct (transaction, receiver) pairs among them.
    pub distinct: u64,
}

/// Decodes the delivered messages of a repair and counts what they carried.
pub fn carried(delivered: &[Message]) -> Carried {
    let mut carried = Carried::default();
    let mut seen = HashSet::new();
    for message in delivered {
        let envelope = Envelope::decode(&message.bytes).expect("engines send valid messages");
        match envelope.body {
            Body::Fetch { .. } => carried.fetches += 1,
            Body::Txs { txs, .. } => {
                carried.batches += 1;
                for tx in txs {
                    carried.txs += 1;
                    if seen.insert((message.to, tx.body.id())) {
                        carried.distinct += 1;
                    }
                }
            }
            _ => {}
        }
    }
    carried
}
