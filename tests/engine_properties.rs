//! Properties of the engine that must hold for every schedule, checked over
//! generated ones (proptest shrinks a failure to a small schedule and keeps it
//! in `tests/engine_properties.proptest-regressions`).
//!
//! - any permutation, duplication, loss and delay of the same transactions
//!   gives the same heads and state root on every member, with the stable
//!   prefix compacted (no undo logs): no transaction is ever refused for
//!   landing in a stable prefix, the members' stable prefixes are one
//!   order, and once everyone has announced, everything is stable;
//! - inserting a DAG's transactions into a replica in any order gives the
//!   state root of applying it in the canonical order;
//! - a member that catches up from any other ends with the same root;
//! - mid-run, the state at a member's stable frontier is its stable prefix
//!   applied alone, and a copy that stands on that prefix as a snapshot
//!   (holding none of its transactions) and is given the rest equals the
//!   member's copy;
//! - bank's total money is conserved under any order;
//! - arbitrary bytes never panic the decoders or a node, framed for a held
//!   context or not; request-shaped junk about a held context never panics
//!   a node or changes its state; a message mutated in flight is recovered
//!   from as from a loss (a join completes, everyone converges); after any
//!   of these the members still serve each other's writes.
//!
//! `PROPTEST_CASES` raises the number of cases for a longer run.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use ctx_core::record::Record;
use ctx_core::replica::Replica;
use ctx_core::tx::Tx;
use ctx_core::wire::Envelope;
use ctx_core::{Config, Event, Hash, Key, TxId};
use proptest::prelude::*;
use support::{BANK, KV, Net, args};

/// One step of a generated schedule.
#[derive(Clone, Debug)]
enum Step {
    /// Node `node % n` writes `value` at key `key`.
    Call { node: usize, key: u8, value: u8 },
    /// The in-flight message at `index % len` is delivered.
    Deliver { index: usize },
    /// ... delivered and kept in flight, to arrive again later.
    Duplicate { index: usize },
    /// ... lost.
    Drop { index: usize },
    /// Time passes: timers fire (sync, retries).
    Tick { ms: u16 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<usize>(), 0u8..6, any::<u8>()).prop_map(|(node, key, value)| Step::Call { node, key, value }),
        6 => any::<usize>().prop_map(|index| Step::Deliver { index }),
        1 => any::<usize>().prop_map(|index| Step::Duplicate { index }),
        1 => any::<usize>().prop_map(|index| Step::Drop { index }),
        1 => (1u16..3000).prop_map(|ms| Step::Tick { ms }),
    ]
}

/// Runs a schedule on `nodes` members of one kv context, then lets the
/// network heal and settle.
fn run_schedule(nodes: usize, steps: &[Step]) -> (Net, ctx_core::ContextId) {
    let (mut net, c) = run_steps(nodes, steps);
    net.advance(30_000);
    (net, c)
}

/// Runs a schedule on `nodes` members of one kv context, and stops there
/// (messages may still be in flight, stability behind).
fn run_steps(nodes: usize, steps: &[Step]) -> (Net, ctx_core::ContextId) {
    // Cuts a few heights apart, so that short schedules take checkpoints.
    let config = Config {
        checkpoint_interval_min: 3,
        ..Config::default()
    };
    let mut net = Net::with_config(nodes, config);
    let members: Vec<usize> = (0..nodes).collect();
    let c = net.context_with(0, KV, &members);
    for step in steps {
        net.collect();
        match *step {
            Step::Call { node, key, value } => {
                let node = node % nodes;
                net.nodes[node]
                    .call(net.now, c, "set", args(&[&[key], &[value]]))
                    .unwrap();
            }
            Step::Deliver { index } | Step::Duplicate { index } | Step::Drop { index }
                if !net.inflight.is_empty() =>
            {
                let index = index % net.inflight.len();
                match step {
                    Step::Deliver { .. } => net.deliver(index),
                    Step::Duplicate { .. } => {
                        let copy = net.inflight[index].clone();
                        net.deliver(index);
                        net.inflight.push_back(copy);
                    }
                    _ => {
                        net.inflight.remove(index);
                    }
                }
            }
            Step::Tick { ms } => {
                // Time passes for timers, but in-flight messages stay put.
                let held: Vec<_> = net.inflight.drain(..).collect();
                net.now = net.now + u64::from(ms);
                for i in 0..nodes {
                    if net.nodes[i].poll_timeout().is_some_and(|t| t <= net.now) {
                        net.nodes[i].handle_timeout(net.now);
                    }
                }
                net.collect();
                net.inflight.extend(held);
            }
            _ => {}
        }
    }
    net.collect();
    (net, c)
}

/// Every transaction any node accepted, from the disks.
fn all_txs(net: &Net) -> (Tx, Arc<Vec<u8>>, Vec<Tx>) {
    let mut genesis = None;
    let mut txs = BTreeMap::new();
    for disk in &net.disks {
        for record in disk {
            match record {
                Record::Opened {
                    genesis: g, app, ..
                } => {
                    genesis = Some((
                        Tx::from_signed_unverified(g.clone()).unwrap(),
                        Arc::new(app.clone()),
                    ));
                }
                Record::Tx { tx, .. } => {
                    let tx = Tx::from_signed_unverified(tx.clone()).unwrap();
                    txs.insert(tx.id(), tx);
                }
                _ => {}
            }
        }
    }
    let (genesis, app) = genesis.expect("a context was opened");
    (genesis, app, txs.into_values().collect())
}

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(24))]

    #[test]
    fn any_delivery_order_converges(nodes in 2usize..5, steps in prop::collection::vec(step(), 0..80)) {
        let (net, c) = run_schedule(nodes, &steps);
        let members: Vec<usize> = (0..nodes).collect();
        let root = net.assert_converged(&c, &members);
        // Same DAG, same root: the union of everything accepted, applied in
        // the canonical order from scratch, gives the members' root.
        let (genesis, app, txs) = all_txs(&net);
        let expected = txs.len() + 1;
        let rebuilt = Replica::rebuild(genesis, app, txs).unwrap();
        prop_assert_eq!(rebuilt.applied(), expected);
        prop_assert_eq!(rebuilt.applied(), net.nodes[0].status(&c).unwrap().applied);
        prop_assert_eq!(rebuilt.state_root(), root);
        // Stability: never entered, one order everywhere, and complete once
        // every member has been heard from.
        for events in &net.events {
            prop_assert!(
                !events.iter().any(|e| matches!(e, Event::BelowStable { .. })),
                "a transaction landed below a stable frontier"
            );
        }
        // Each member's stable prefix is the canonical order; a member that
        // dropped the bodies below a checkpoint's cut holds its rest.
        let canonical: Vec<TxId> = rebuilt.order().collect();
        for n in 0..nodes {
            let replica = net.nodes[n].replica(&c).unwrap();
            let base = replica.base_len();
            let held: Vec<TxId> = replica.order_range(0..replica.stable_len()).collect();
            prop_assert_eq!(base + held.len(), expected, "everything is stable at the end");
            prop_assert_eq!(&held[..], &canonical[base..]);
        }
    }

    #[test]
    fn the_stable_state_is_the_stable_prefix_applied_alone(nodes in 2usize..5, steps in prop::collection::vec(step(), 0..80)) {
        // Mid-run, with an unstable tail: what a checkpoint would hold (the
        // state and membership at the stable frontier, and its root,
        // computed from the tail alone) is what applying the stable prefix
        // from nothing gives.
        let (net, c) = run_steps(nodes, &steps);
        let (genesis, _, every_tx) = all_txs(&net);
        for node in 0..nodes {
            let replica = net.nodes[node].replica(&c).unwrap();
            // The stable prefix: every transaction below the frontier (the
            // copy may hold only those above a checkpoint's cut).
            let frontier = replica.stability().frontier();
            let rest: Vec<Tx> = every_tx.iter().filter(|tx| tx.height() < frontier).cloned().collect();
            prop_assert_eq!(rest.len() + 1, replica.base_len() + replica.stable_len());
            let oracle = Replica::rebuild(genesis.clone(), replica.app_blob().clone(), rest).unwrap();
            let (state, membership) = replica.stable_state();
            prop_assert_eq!(replica.stable_root(), oracle.state_root());
            prop_assert_eq!(state.root(), oracle.state_root());
            prop_assert_eq!(state.entries_sorted(), oracle.state().entries_sorted());
            prop_assert_eq!(
                membership.all().collect::<Vec<_>>(),
                oracle.membership().all().collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn a_copy_from_a_checkpoint_and_the_tail_equals_the_whole_history(nodes in 2usize..5, steps in prop::collection::vec(step(), 0..80)) {
        // Every member that took a checkpoint at a cut took the same one (the
        // cut is a global fact once stable), it is the prefix below the cut
        // applied alone, and a copy that stands on it (holding none of the
        // prefix's transactions) and is then given the rest holds the same
        // state, heads, membership and count, and its frontier never refuses
        // what is given.
        let (net, c) = run_steps(nodes, &steps);
        let (genesis, app, _) = all_txs(&net);
        let mut by_cut: BTreeMap<u64, Hash> = BTreeMap::new();
        for node in 0..nodes {
            let source = net.nodes[node].replica(&c).unwrap();
            let Some(checkpoint) = source.checkpoint().cloned() else {
                continue;
            };
            let header = &checkpoint.header;
            let digest = *by_cut.entry(header.height).or_insert(header.digest());
            prop_assert_eq!(digest, header.digest(), "two members' checkpoints at one cut differ");
            let (_, _, every_tx) = all_txs(&net);
            let rest: Vec<Tx> = every_tx.into_iter().filter(|tx| tx.height() < header.height).collect();
            prop_assert_eq!(rest.len() as u64 + 1, header.applied);
            let oracle = Replica::rebuild(genesis.clone(), app.clone(), rest).unwrap();
            prop_assert_eq!(header.root, oracle.state_root());
            let state = checkpoint.state();
            prop_assert_eq!(state.entries_sorted(), oracle.state().entries_sorted());
            prop_assert_eq!(header.membership.clone(), oracle.membership().all().collect::<Vec<_>>());

            let other = net.nodes[(node + 1) % nodes].member_id();
            let mut copy = Replica::from_checkpoint(genesis.clone(), app.clone(), checkpoint.clone()).unwrap();
            copy.set_local(other, None);
            prop_assert!(copy.stability().frontier() <= source.stability().frontier());
            let tail: Vec<TxId> = source.order().filter(|id| source.tx(id).unwrap().height() >= header.height).collect();
            for id in &tail {
                copy.insert_deferred(source.tx(id).unwrap().clone()).unwrap();
            }
            copy.settle();
            prop_assert_eq!(copy.state_root(), source.state_root());
            prop_assert_eq!(copy.heads(), source.heads());
            prop_assert_eq!(copy.applied(), source.applied());
            prop_assert_eq!(
                copy.membership().all().collect::<Vec<_>>(),
                source.membership().all().collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn insertion_in_any_order_gives_the_canonical_root(
        steps in prop::collection::vec(step(), 10..60),
        order in prop::collection::vec(any::<usize>(), 0..400),
    ) {
        let (net, _) = run_schedule(3, &steps);
        let (genesis, app, txs) = all_txs(&net);
        let canonical = Replica::rebuild(genesis.clone(), Arc::clone(&app), txs.clone()).unwrap();
        // Feed the transactions in a generated order, holding back any whose
        // parents have not arrived, and re-offering duplicates.
        let mut replica = Replica::new(genesis, app).unwrap();
        let mut pool: Vec<Tx> = txs;
        let mut choices = order.into_iter();
        while !pool.is_empty() {
            let pick = choices.next().unwrap_or(0) % pool.len();
            let tx = pool[pick].clone();
            if tx.parent_ids().all(|p| replica.contains(p)) {
                // Immediate, or deferred and settled at a drawn point, as a
                // node settles once per input.
                if pick.is_multiple_of(3) && replica.is_settled() {
                    replica.insert(tx.clone()).unwrap();
                } else {
                    replica.insert_deferred(tx.clone()).unwrap();
                }
                pool.swap_remove(pick);
                prop_assert!(replica.insert_deferred(tx).is_err(), "a duplicate is refused");
                if pick % 4 == 1 {
                    let applied = replica.accepted();
                    prop_assert!(replica.settle().reexecuted <= applied);
                }
            } else {
                // Not yet: try the next one in the pool instead.
                pool.rotate_left(1);
            }
        }
        replica.settle();
        prop_assert_eq!(replica.state_root(), canonical.state_root());
        prop_assert_eq!(replica.heads(), canonical.heads());
        prop_assert_eq!(replica.order().collect::<Vec<_>>(), canonical.order().collect::<Vec<_>>());
    }

    #[test]
    fn catchup_from_any_member_gives_the_same_root(
        steps in prop::collection::vec(step(), 0..60),
        via in 0usize..3,
    ) {
        let (mut net, c) = {
            let (net3, c) = run_schedule(3, &steps);
            // Move the three nodes into a four-node network.
            let mut net = Net::new(4);
            for (i, node) in net3.nodes.into_iter().enumerate() {
                net.nodes[i] = node;
            }
            net.now = net3.now;
            (net, c)
        };
        let newcomer = net.ids[3];
        net.nodes[via].invite(net.now, c, newcomer).unwrap();
        net.run();
        let via_id = net.ids[via];
        net.nodes[3].join(net.now, c, via_id).unwrap();
        net.advance(10_000);
        net.assert_converged(&c, &[0, 1, 2, 3]);
    }

    #[test]
    fn bank_conserves_money_under_any_order(
        transfers in prop::collection::vec((0usize..3, 0u8..4, 0u8..4, 0u64..150), 1..40),
        schedule in prop::collection::vec(any::<usize>(), 0..200),
    ) {
        let mut net = Net::new(3);
        let c = net.context_with(0, BANK, &[0, 1, 2]);
        for account in 0u8..4 {
            net.nodes[0].call(net.now, c, "open", args(&[&[b'a', account], &100u64.to_le_bytes()])).unwrap();
        }
        net.run();
        let mut choices = schedule.into_iter();
        for (node, from, to, amount) in transfers {
            net.nodes[node].call(net.now, c, "transfer", args(&[&[b'a', from], &[b'a', to], &amount.to_le_bytes()])).unwrap();
            net.collect();
            // Deliver a random number of random messages in between.
            for _ in 0..choices.next().unwrap_or(0) % 4 {
                if net.inflight.is_empty() { break; }
                let pick = choices.next().unwrap_or(0) % net.inflight.len();
                net.deliver(pick);
            }
        }
        net.advance(10_000);
        net.assert_converged(&c, &[0, 1, 2]);
        for i in 0..3 {
            let total: u64 = (0u8..4)
                .map(|a| {
                    let balance = net.nodes[i].get(&c, &Key::padded(&[b'a', a]).unwrap()).unwrap();
                    u64::from_le_bytes(balance.try_into().unwrap())
                })
                .sum();
            prop_assert_eq!(total, 400);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), tag in 0u8..16) {
        let _ = Envelope::decode(&bytes);
        let _ = Record::decode(&bytes);
        let mut net = Net::new(3);
        let c = net.context_with(0, KV, &[0, 1]);
        // Framed for the held context (version, context id, a body tag), so
        // the bytes reach the context's handlers whenever they decode.
        let mut framed = vec![ctx_core::wire::WIRE_VERSION];
        framed.extend_from_slice(c.as_bytes());
        framed.push(tag);
        framed.extend_from_slice(&bytes);
        if let Ok(envelope) = Envelope::decode(&framed) {
            prop_assert_eq!(envelope.context, c);
        }
        let before = net.assert_converged(&c, &[0, 1]);
        for from in [1, 2] {
            let sender = net.ids[from];
            let _ = net.nodes[0].handle_message(net.now, sender, &bytes);
            let _ = net.nodes[0].handle_message(net.now, sender, &framed);
        }
        net.collect();
        net.advance(5_000);
        // Junk changed nothing and the members still serve each other.
        prop_assert_eq!(net.assert_converged(&c, &[0, 1]), before);
        still_serving(&mut net, c)?;
    }

    #[test]
    fn junk_requests_for_a_held_context_never_panic(junk in prop::collection::vec(junk_body(), 1..6), from in 1usize..3) {
        let mut net = Net::new(3);
        let c = net.context_with(0, KV, &[0, 1]);
        net.nodes[1].call(net.now, c, "set", args(&[b"k", b"v"])).unwrap();
        net.advance(1_000);
        let before = net.assert_converged(&c, &[0, 1]);
        let heads = net.nodes[0].status(&c).expect("held").heads;
        let sender = net.ids[from];
        for junk in junk {
            let bytes = Envelope::new(c, junk.body(&heads)).encode();
            prop_assert_eq!(Envelope::decode(&bytes).map(|e| e.context), Ok(c));
            let _ = net.nodes[0].handle_message(net.now, sender, &bytes);
            // Answers to junk go out like any others; the recipients must
            // take them too.
            net.run();
        }
        net.advance(5_000);
        prop_assert_eq!(net.assert_converged(&c, &[0, 1]), before);
        still_serving(&mut net, c)?;
    }

    #[test]
    fn mutated_messages_never_panic(flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8), pick in any::<usize>()) {
        let mut net = Net::new(3);
        let c = net.context_with(0, KV, &[0, 1]);
        net.nodes[1].call(net.now, c, "set", args(&[b"k", b"v"])).unwrap();
        let carol = net.ids[2];
        net.nodes[0].invite(net.now, c, carol).unwrap();
        let via = net.ids[0];
        net.nodes[2].join(net.now, c, via).unwrap();
        net.collect();
        // The pick-th message of the exchange arrives mutated instead of
        // as sent; the rest arrive as sent.
        let mut delivered = 0;
        let mut mutated = false;
        while !net.inflight.is_empty() {
            if delivered == pick % 64 && !mutated {
                let mut message = net.inflight.pop_front().expect("in flight");
                for &(at, byte) in &flips {
                    let at = at % message.bytes.len();
                    message.bytes[at] ^= byte;
                }
                let from = net.ids[message.from];
                let _ = net.nodes[message.to].handle_message(net.now, from, &message.bytes);
                net.collect();
                mutated = true;
            } else {
                net.deliver(0);
            }
            delivered += 1;
        }
        prop_assume!(mutated);
        // Recovers from it as from a loss: carol joins, and all three hold
        // the write.
        net.advance(30_000);
        net.assert_converged(&c, &[0, 1, 2]);
        for node in 0..3 {
            prop_assert_eq!(
                net.nodes[node].get(&c, &Key::padded(b"k").unwrap()).map(<[u8]>::to_vec),
                Some(b"v".to_vec()),
                "node {}", node
            );
        }
        still_serving(&mut net, c)?;
    }

}

/// A request-shaped body with random fields, some naming real heads: what
/// a confused or hostile peer might send about a context it knows.
#[derive(Clone, Debug)]
enum Junk {
    Fetch {
        request: u64,
        want: Vec<Option<[u8; 32]>>,
        have: Vec<Option<[u8; 32]>>,
    },
    Stream {
        request: u64,
        after: Option<(u64, Option<[u8; 32]>)>,
    },
    Heads {
        heads: Vec<Option<[u8; 32]>>,
        reply: bool,
    },
    CatchupRequest {
        request: u64,
    },
    CheckpointRequest {
        request: u64,
        height: u64,
    },
    AppRequest {
        request: u64,
        offset: u64,
    },
    LeaveAck {
        leave: Option<[u8; 32]>,
    },
    Txs {
        request: u64,
        complete: bool,
    },
}

fn junk_id() -> impl Strategy<Value = Option<[u8; 32]>> {
    // `None`: a real head of the receiver.
    prop_oneof![1 => Just(None), 1 => any::<[u8; 32]>().prop_map(Some)]
}

fn junk_body() -> impl Strategy<Value = Junk> {
    let ids = || prop::collection::vec(junk_id(), 0..4);
    let small = || prop_oneof![0u64..4, any::<u64>()];
    prop_oneof![
        (small(), ids(), ids()).prop_map(|(request, want, have)| Junk::Fetch {
            request,
            want,
            have
        }),
        (small(), prop::option::of((small(), junk_id())))
            .prop_map(|(request, after)| Junk::Stream { request, after }),
        (ids(), any::<bool>()).prop_map(|(heads, reply)| Junk::Heads { heads, reply }),
        small().prop_map(|request| Junk::CatchupRequest { request }),
        (small(), small())
            .prop_map(|(request, height)| Junk::CheckpointRequest { request, height }),
        (small(), small()).prop_map(|(request, offset)| Junk::AppRequest { request, offset }),
        junk_id().prop_map(|leave| Junk::LeaveAck { leave }),
        (small(), any::<bool>()).prop_map(|(request, complete)| Junk::Txs { request, complete }),
    ]
}

impl Junk {
    fn body(&self, heads: &[TxId]) -> ctx_core::wire::Body {
        use ctx_core::tx::OrderKey;
        use ctx_core::wire::Body;
        let id = |bytes: &Option<[u8; 32]>| bytes.map_or(heads[0], TxId::from_bytes);
        let ids = |list: &[Option<[u8; 32]>]| list.iter().map(id).collect();
        match self {
            Junk::Fetch {
                request,
                want,
                have,
            } => Body::Fetch {
                request: *request,
                want: ids(want),
                have: ids(have),
            },
            Junk::Stream { request, after } => Body::Stream {
                request: *request,
                after: after.map(|(height, at)| OrderKey {
                    height,
                    id: id(&at),
                }),
            },
            Junk::Heads { heads: list, reply } => Body::Heads {
                heads: ids(list),
                reply: *reply,
                announcements: Vec::new(),
                stands_on: None,
            },
            Junk::CatchupRequest { request } => Body::CatchupRequest { request: *request },
            Junk::CheckpointRequest { request, height } => Body::CheckpointRequest {
                request: *request,
                height: *height,
                after: None,
            },
            Junk::AppRequest { request, offset } => Body::AppRequest {
                request: *request,
                offset: *offset,
            },
            Junk::LeaveAck { leave } => Body::LeaveAck {
                leave: id(leave),
                members: vec![ctx_core::ids::MemberId([7; 32])],
            },
            Junk::Txs { request, complete } => Body::Txs {
                request: *request,
                txs: Vec::new(),
                more: None,
                complete: *complete,
            },
        }
    }
}

/// After whatever came before, a new write by either member reaches both.
fn still_serving(net: &mut Net, c: ctx_core::ContextId) -> Result<(), TestCaseError> {
    for (writer, value) in [(0usize, b"after-0"), (1, b"after-1")] {
        let key = [b'z', writer as u8];
        net.nodes[writer]
            .call(net.now, c, "set", args(&[&key, value]))
            .unwrap();
        net.advance(5_000);
        net.assert_converged(&c, &[0, 1]);
        for node in 0..2 {
            prop_assert_eq!(
                net.nodes[node]
                    .get(&c, &Key::padded(&key).unwrap())
                    .map(<[u8]>::to_vec),
                Some(value.to_vec()),
                "node {} lacks the write of node {}",
                node,
                writer
            );
        }
    }
    Ok(())
}
