//! End-to-end behaviour of the engine on a small in-memory network: the
//! lifecycle of a context (create, invite, join, call, leave, rejoin),
//! ordering, sync, catchup, crash and restart, and refusal of bad input.

mod support;

use ctx_core::tx::{Signature, SignedTx, TX_FORMAT_VERSION, TxBody, TxKind};
use ctx_core::wire::{Body, Envelope};
use ctx_core::{CallError, Event, Key, MessageError, Node, Outcome, Phase, Record, Rejection};
use ed25519_dalek::{Signer, SigningKey};
use support::{BANK, KV, Net, args};

fn key(name: &str) -> Key {
    Key::padded(name.as_bytes()).unwrap()
}

#[test]
fn three_members_share_writes() {
    let mut net = Net::new(3);
    let c = net.context_with(0, KV, &[0, 1, 2]);
    for (i, (k, v)) in [("colour", "blue"), ("shape", "round"), ("size", "big")]
        .iter()
        .enumerate()
    {
        net.nodes[i]
            .call(net.now, c, "set", args(&[k.as_bytes(), v.as_bytes()]))
            .unwrap();
    }
    net.run();
    net.assert_converged(&c, &[0, 1, 2]);
    for i in 0..3 {
        assert_eq!(net.nodes[i].get(&c, &key("colour")), Some(&b"blue"[..]));
        assert_eq!(net.nodes[i].status(&c).unwrap().members.len(), 3);
        let got = net.nodes[i].view(&c, "get", &args(&[b"shape"])).unwrap();
        assert_eq!(got, b"round");
    }
    assert!(net.events[1].contains(&Event::Joined { context: c }));
}

#[test]
fn concurrent_writes_converge_through_reordering() {
    let mut net = Net::new(3);
    let c = net.context_with(0, KV, &[0, 1, 2]);
    // Everyone writes the same key before hearing from the others.
    for i in 0..3 {
        for n in 0..5 {
            let value = format!("{i}-{n}");
            net.nodes[i]
                .call(net.now, c, "set", args(&[b"k", value.as_bytes()]))
                .unwrap();
        }
    }
    // Deliver newest first, to force late arrivals.
    net.collect();
    while !net.inflight.is_empty() {
        let last = net.inflight.len() - 1;
        net.deliver(last);
    }
    net.advance(5_000);
    net.assert_converged(&c, &[0, 1, 2]);
    let reordered = net
        .events
        .iter()
        .flatten()
        .any(|e| matches!(e, Event::Reordered { .. }));
    assert!(reordered, "some transaction must have arrived in the past");
    let winner = net.nodes[0].get(&c, &key("k")).unwrap().to_vec();
    for i in 1..3 {
        assert_eq!(net.nodes[i].get(&c, &key("k")).unwrap(), &winner[..]);
    }
}

/// A two-member partition where each side writes `N` sets, then a heal: the
/// fetched batches interleave with each side's own tail. Each input
/// re-executes the tail once, not once per transaction, so the total is
/// linear in the writes (one input per fetched batch), not quadratic.
#[test]
fn a_healed_partition_reexecutes_each_tail_once_per_input() {
    const N: u32 = 500;
    let mut net = Net::new(2);
    let c = net.context_with(0, KV, &[0, 1]);
    // The partition: every push is lost, and no time passes (no sync round).
    for n in 0..N {
        for i in 0..2 {
            let k = format!("{i}-{n}");
            net.nodes[i]
                .call(net.now, c, "set", args(&[k.as_bytes(), b"v"]))
                .unwrap();
        }
        net.collect();
        net.inflight.clear();
    }
    assert_ne!(net.root(0, &c), net.root(1, &c));
    net.advance(60_000);
    net.assert_converged(&c, &[0, 1]);
    assert_eq!(
        net.nodes[0].replica(&c).unwrap().state().len(),
        2 * N as usize
    );
    // Before this was batched, each fetched transaction re-executed the
    // local tail above it: about N * N / 2 (125 000 for N = 500) per node.
    // Now each fetched batch re-executes it once: about N per node.
    let bound = 4 * 2 * N as u64;
    let totals: Vec<u64> = (0..2)
        .map(|i| net.nodes[i].replica(&c).unwrap().reexecuted_total())
        .collect();
    eprintln!("re-executions for {} writes: {totals:?}", 2 * N);
    for (i, &reexecuted) in totals.iter().enumerate() {
        let reported: usize = net.events[i]
            .iter()
            .map(|e| match e {
                Event::Reordered { reexecuted, .. } => *reexecuted,
                _ => 0,
            })
            .sum();
        assert_eq!(
            reported as u64, reexecuted,
            "the events add up to the counter"
        );
        assert!(
            reexecuted <= bound,
            "node {i} re-executed {reexecuted} slots, more than {bound}"
        );
    }
}

#[test]
fn lost_messages_are_repaired_by_sync() {
    let mut net = Net::new(3);
    let c = net.context_with(0, KV, &[0, 1, 2]);
    for n in 0..50u32 {
        let i = (n % 3) as usize;
        net.nodes[i]
            .call(net.now, c, "set", args(&[&n.to_le_bytes(), b"v"]))
            .unwrap();
        net.collect();
        // Lose every message.
        net.inflight.clear();
    }
    assert_ne!(net.root(0, &c), net.root(1, &c));
    net.advance(10_000);
    net.assert_converged(&c, &[0, 1, 2]);
    assert_eq!(net.nodes[2].replica(&c).unwrap().state().len(), 50);
}

#[test]
fn join_before_invite_is_refused_then_succeeds() {
    let mut net = Net::new(2);
    let c = net.nodes[0].create_context(net.now, KV.as_bytes()).unwrap();
    let via = net.ids[0];
    net.nodes[1].join(net.now, c, via).unwrap();
    net.run();
    assert!(
        net.events[1]
            .iter()
            .any(|e| matches!(e, Event::CatchupRefused { .. }))
    );
    assert_eq!(net.nodes[1].phase(&c), Some(Phase::Joining));
    let bob = net.ids[1];
    net.nodes[0].invite(net.now, c, bob).unwrap();
    net.advance(5_000);
    assert_eq!(net.nodes[1].phase(&c), Some(Phase::Member));
    net.assert_converged(&c, &[0, 1]);
}

#[test]
fn catchup_of_a_long_history_in_batches() {
    let mut net = Net::new(2);
    let c = net.nodes[0].create_context(net.now, KV.as_bytes()).unwrap();
    for n in 0..3_000u32 {
        net.nodes[0]
            .call(net.now, c, "set", args(&[&n.to_le_bytes(), b"value"]))
            .unwrap();
    }
    let bob = net.ids[1];
    net.nodes[0].invite(net.now, c, bob).unwrap();
    net.run();
    let via = net.ids[0];
    net.nodes[1].join(net.now, c, via).unwrap();
    net.run();
    net.assert_converged(&c, &[0, 1]);
    assert_eq!(net.nodes[1].status(&c).unwrap().applied, 3_000 + 3);
}

#[test]
fn catchup_is_redirected_when_the_responder_goes_silent() {
    let mut net = Net::new(3);
    let c = net.context_with(0, KV, &[0, 1]);
    for n in 0..2_000u32 {
        net.nodes[0]
            .call(net.now, c, "set", args(&[&n.to_le_bytes(), b"x"]))
            .unwrap();
    }
    let carol = net.ids[2];
    net.nodes[0].invite(net.now, c, carol).unwrap();
    net.run();
    // Carol joins via bob; bob answers the request, then crashes.
    let via = net.ids[1];
    net.nodes[2].join(net.now, c, via).unwrap();
    net.collect();
    net.deliver(0); // the catchup request reaches bob
    net.deliver(0); // bob's acceptance reaches carol
    net.crash(1);
    net.advance(20_000);
    assert_eq!(net.nodes[2].phase(&c), Some(Phase::Member));
    net.assert_converged(&c, &[0, 2]);
}

#[test]
fn a_leaving_member_deletes_its_copy_once_acknowledged() {
    let mut net = Net::new(3);
    let c = net.context_with(0, KV, &[0, 1, 2]);
    net.nodes[1]
        .call(net.now, c, "set", args(&[b"from-bob", b"1"]))
        .unwrap();
    net.collect();
    net.inflight.clear(); // bob's call is lost on the way
    net.nodes[1].leave(net.now, c).unwrap();
    assert_eq!(net.nodes[1].phase(&c), Some(Phase::Leaving));
    net.advance(5_000);
    assert_eq!(net.nodes[1].phase(&c), None, "bob deleted its copy");
    assert!(matches!(net.disks[1].last(), Some(Record::Deleted { .. })));
    net.assert_converged(&c, &[0, 2]);
    // Nothing bob accepted was lost with its copy.
    assert_eq!(net.nodes[2].get(&c, &key("from-bob")), Some(&b"1"[..]));
    let members = net.nodes[0].status(&c).unwrap().members;
    assert_eq!(members, {
        let mut m = vec![net.ids[0], net.ids[2]];
        m.sort();
        m
    });
    // Bob is invited again and rejoins with a fresh copy.
    let bob = net.ids[1];
    net.nodes[2].invite(net.now, c, bob).unwrap();
    net.run();
    let via = net.ids[2];
    net.nodes[1].join(net.now, c, via).unwrap();
    net.advance(5_000);
    net.assert_converged(&c, &[0, 1, 2]);
    assert_eq!(net.nodes[0].status(&c).unwrap().members.len(), 3);
}

#[test]
fn the_creator_may_leave_and_the_context_lives_on() {
    let mut net = Net::new(3);
    let c = net.context_with(0, KV, &[0, 1, 2]);
    net.nodes[0].leave(net.now, c).unwrap();
    net.advance(5_000);
    assert_eq!(net.nodes[0].phase(&c), None);
    net.nodes[1]
        .call(net.now, c, "set", args(&[b"after", b"creator"]))
        .unwrap();
    net.advance(5_000);
    net.assert_converged(&c, &[1, 2]);
    assert_eq!(net.nodes[2].get(&c, &key("after")), Some(&b"creator"[..]));
}

#[test]
fn a_restarted_node_rebuilds_its_state_and_catches_up() {
    let mut net = Net::new(3);
    let c = net.context_with(0, KV, &[0, 1, 2]);
    for n in 0..20u32 {
        net.nodes[(n % 3) as usize]
            .call(net.now, c, "set", args(&[&n.to_le_bytes(), b"v"]))
            .unwrap();
    }
    net.run();
    let before = net.root(2, &c);
    net.crash(2);
    net.restart(2);
    assert_eq!(net.root(2, &c), before, "rebuilt from its records alone");
    net.crash(2);
    for n in 20..40u32 {
        net.nodes[(n % 2) as usize]
            .call(net.now, c, "set", args(&[&n.to_le_bytes(), b"v"]))
            .unwrap();
    }
    net.run();
    net.restart(2);
    net.advance(10_000);
    net.assert_converged(&c, &[0, 1, 2]);
    assert_eq!(net.nodes[2].replica(&c).unwrap().state().len(), 40);
}

#[test]
fn a_node_that_crashed_while_catching_up_resumes() {
    let mut net = Net::new(2);
    let c = net.nodes[0].create_context(net.now, KV.as_bytes()).unwrap();
    for n in 0..1_500u32 {
        net.nodes[0]
            .call(net.now, c, "set", args(&[&n.to_le_bytes(), b"v"]))
            .unwrap();
    }
    let bob = net.ids[1];
    net.nodes[0].invite(net.now, c, bob).unwrap();
    net.run();
    let via = net.ids[0];
    net.nodes[1].join(net.now, c, via).unwrap();
    // Deliver until bob holds part of the history, then crash it.
    net.collect();
    while net.nodes[1].status(&c).unwrap().applied < 600 {
        net.deliver(0);
    }
    net.crash(1);
    net.inflight.clear();
    net.restart(1);
    assert_eq!(net.nodes[1].phase(&c), Some(Phase::Joining));
    assert_eq!(net.nodes[1].catchup_peers(&c), vec![via], "restored");
    net.advance(10_000);
    assert_eq!(net.nodes[1].phase(&c), Some(Phase::Member));
    assert!(net.nodes[1].catchup_peers(&c).is_empty(), "done");
    net.assert_converged(&c, &[0, 1]);
}

#[test]
fn failed_calls_are_recorded_as_failed_everywhere() {
    let mut net = Net::new(2);
    let c = net.context_with(0, KV, &[0, 1]);
    let spin = net.nodes[0].call(net.now, c, "spin", Vec::new()).unwrap();
    assert_eq!(spin.outcome, Outcome::Failed(CallError::OutOfFuel));
    let unknown = net.nodes[1].call(net.now, c, "nope", Vec::new()).unwrap();
    assert!(matches!(
        unknown.outcome,
        Outcome::Failed(CallError::UnknownMethod(_))
    ));
    net.run();
    net.assert_converged(&c, &[0, 1]);
    for i in 0..2 {
        let replica = net.nodes[i].replica(&c).unwrap();
        assert_eq!(
            replica.outcome(&spin.tx),
            Some(&Outcome::Failed(CallError::OutOfFuel))
        );
        assert!(matches!(
            replica.outcome(&unknown.tx),
            Some(Outcome::Failed(_))
        ));
    }
    assert!(
        net.events[0]
            .iter()
            .any(|e| matches!(e, Event::CallFailed { .. }))
    );
}

/// A driver asks before an invite or a call that would change nothing; the
/// engine's own commands still make them (a member that had not heard of a
/// leave may invite again, and a call of a missing method fails everywhere).
#[test]
fn invites_and_calls_that_change_nothing_are_told_apart_before_they_are_made() {
    use ctx_core::CommandError;
    use ctx_core::membership::MemberStatus;
    let mut net = Net::new(3);
    let c = net.context_with(0, KV, &[0, 1]);
    let (me, member, outsider) = (
        net.nodes[0].member_id(),
        net.nodes[1].member_id(),
        net.nodes[2].member_id(),
    );
    let node = &net.nodes[0];
    assert!(matches!(
        node.check_invite(&c, &me),
        Err(CommandError::InviteSelf)
    ));
    assert!(matches!(
        node.check_invite(&c, &member),
        Err(CommandError::AlreadyInvited {
            status: MemberStatus::Member,
            ..
        })
    ));
    assert!(node.check_invite(&c, &outsider).is_ok());
    assert!(node.check_call(&c, "set").is_ok());
    for method in ["nope", ""] {
        assert!(matches!(
            node.check_call(&c, method),
            Err(CommandError::UnknownMethod { .. })
        ));
    }
    net.nodes[0].invite(net.now, c, outsider).unwrap();
    assert!(matches!(
        net.nodes[0].check_invite(&c, &outsider),
        Err(CommandError::AlreadyInvited {
            status: MemberStatus::Invited,
            ..
        })
    ));
    // The commands themselves do not ask.
    assert!(net.nodes[0].invite(net.now, c, outsider).is_ok());
    assert!(net.nodes[0].call(net.now, c, "nope", Vec::new()).is_ok());
}

/// A transaction signed by an outsider reaches the DAG (relayed by a member)
/// but is applied as rejected, with no effect, by everyone.
#[test]
fn a_transaction_by_a_non_member_is_rejected_by_everyone() {
    let mut net = Net::new(2);
    let c = net.context_with(0, KV, &[0, 1]);
    let outsider = SigningKey::from_bytes(&[99; 32]);
    let (parents, height) = net.nodes[0].replica(&c).unwrap().next_parents();
    let body = TxBody {
        version: TX_FORMAT_VERSION,
        context: c,
        author: ctx_core::MemberId(outsider.verifying_key().to_bytes()),
        height,
        parents,
        kind: TxKind::Call {
            method: "set".into(),
            input: args(&[b"evil", b"1"]),
        },
    };
    let id = body.id();
    let signature = Signature(outsider.sign(id.as_bytes()).to_bytes());
    let bytes = Envelope::new(c, Body::Tx(SignedTx { body, signature })).encode();
    let relay = net.ids[1];
    net.nodes[0].handle_message(net.now, relay, &bytes).unwrap();
    net.advance(5_000);
    net.assert_converged(&c, &[0, 1]);
    for i in 0..2 {
        let replica = net.nodes[i].replica(&c).unwrap();
        assert_eq!(
            replica.outcome(&id),
            Some(&Outcome::Rejected(Rejection::AuthorNotMember))
        );
        assert_eq!(replica.state().get(&key("evil")), None);
    }
}

#[test]
fn forged_and_garbled_messages_change_nothing() {
    let mut net = Net::new(2);
    let c = net.context_with(0, KV, &[0, 1]);
    net.nodes[1]
        .call(net.now, c, "set", args(&[b"k", b"v"]))
        .unwrap();
    net.collect();
    let genuine = net.inflight.pop_front().unwrap().bytes;
    let Body::Tx(mut signed) = Envelope::decode(&genuine).unwrap().body else {
        panic!("a push")
    };
    let root = net.root(0, &c);
    signed.body.kind = TxKind::Call {
        method: "set".into(),
        input: args(&[b"k", b"forged"]),
    };
    let forged = Envelope::new(c, Body::Tx(signed)).encode();
    let bob = net.ids[1];
    let error = net.nodes[0]
        .handle_message(net.now, bob, &forged)
        .unwrap_err();
    assert!(matches!(error, MessageError::Tx(_)));
    assert!(
        net.nodes[0]
            .handle_message(net.now, bob, &genuine[..genuine.len() / 2])
            .is_err()
    );
    assert!(
        net.nodes[0]
            .handle_message(net.now, bob, b"\x07garbage")
            .is_err()
    );
    assert_eq!(net.root(0, &c), root);
    net.nodes[0].handle_message(net.now, bob, &genuine).unwrap();
    assert_eq!(net.nodes[0].get(&c, &key("k")), Some(&b"v"[..]));
}

#[test]
fn bad_commands_are_refused_with_typed_errors() {
    let mut net = Net::new(2);
    let err = net.nodes[0]
        .create_context(net.now, b"not wasm")
        .unwrap_err();
    assert!(matches!(err, ctx_core::CommandError::App(_)), "{err}");
    let c = net.context_with(0, BANK, &[0]);
    let err = net.nodes[1]
        .call(net.now, c, "open", Vec::new())
        .unwrap_err();
    assert!(matches!(err, ctx_core::CommandError::UnknownContext(_)));
    let long = "m".repeat(ctx_core::limits::METHOD_NAME_BYTES_MAX + 1);
    let err = net.nodes[0]
        .call(net.now, c, &long, Vec::new())
        .unwrap_err();
    assert!(matches!(err, ctx_core::CommandError::Tx(_)), "{err}");
    let me = net.ids[0];
    assert!(matches!(
        net.nodes[0].join(net.now, c, me),
        Err(ctx_core::CommandError::AlreadyHeld(_))
    ));
}

/// Stress hooks (simulation only) take rare but legal paths, and the
/// engine still converges: a long catchup under stress sees tiny batches
/// that are not the last.
#[test]
fn stress_hooks_take_rare_paths_and_still_converge() {
    let config = ctx_core::Config {
        stress: true,
        ..ctx_core::Config::default()
    };
    let mut net = Net::with_config(3, config);
    let c = net.context_with(0, KV, &[0, 1]);
    for n in 0..2_000u32 {
        net.nodes[0]
            .call(net.now, c, "set", args(&[&n.to_le_bytes(), b"v"]))
            .unwrap();
    }
    let carol = net.ids[2];
    net.nodes[0].invite(net.now, c, carol).unwrap();
    net.run();
    let via = net.ids[0];
    net.nodes[2].join(net.now, c, via).unwrap();
    net.collect();
    let mut tiny_batches = 0;
    while !net.inflight.is_empty() {
        let message = net.inflight[0].clone();
        match Envelope::decode(&message.bytes).unwrap().body {
            Body::Txs {
                txs, more: Some(_), ..
            } if txs.len() <= 3 => tiny_batches += 1,
            _ => {}
        }
        net.deliver(0);
    }
    net.advance(20_000);
    assert!(tiny_batches > 0, "some catchup batches were tiny");
    net.assert_converged(&c, &[0, 1, 2]);
}

#[test]
fn a_crash_at_any_record_of_a_checkpoint_loses_nothing() {
    // A driver that drops what a whole checkpoint supersedes (as ctx-node's
    // store and the simulated disk do) and crashes after any record: the
    // node it restores equals one rebuilt from every transaction written
    // until then, and restarts on a checkpoint once one is whole.
    let config = ctx_core::Config {
        checkpoint_interval_min: 16,
        ..ctx_core::Config::default()
    };
    let mut net = Net::with_config(1, config.clone());
    let c = net.nodes[0].create_context(net.now, KV.as_bytes()).unwrap();
    for n in 0..120u32 {
        net.nodes[0]
            .call(
                net.now,
                c,
                "set",
                args(&[&(n % 7).to_le_bytes(), &n.to_le_bytes()]),
            )
            .unwrap();
    }
    net.collect();
    let written = net.disks[0].clone();
    assert!(
        written
            .iter()
            .filter(|r| matches!(r, Record::CheckpointEnd { .. }))
            .count()
            >= 3,
        "the history crosses several cuts"
    );
    let restore = |records: Vec<Record>| {
        Node::restore(
            config.clone(),
            support::secret(0),
            [1; 32],
            std::sync::Arc::new(ctx_core::Ed25519Verifier),
            records,
        )
        .expect("restores")
    };
    let mut disk: Vec<Record> = Vec::new();
    let mut on_checkpoint = false;
    for record in written {
        if let Record::CheckpointEnd { context, height } = &record {
            disk.retain(|r| !r.superseded_by(*context, *height));
            on_checkpoint = true;
        }
        disk.push(record);
        let node = restore(disk.clone());
        let Some(replica) = node.replica(&c) else {
            continue;
        };
        let stands_on = replica.base_height();
        assert_eq!(
            stands_on.is_some(),
            on_checkpoint,
            "restarts on its latest whole checkpoint"
        );
        let oracle_records: Vec<Record> = disk_without_checkpoints(&net.disks[0], &disk);
        let oracle = restore(oracle_records);
        let oracle = oracle.replica(&c).unwrap();
        assert_eq!(replica.applied(), oracle.applied());
        assert_eq!(replica.state_root(), oracle.state_root());
        assert_eq!(replica.heads(), oracle.heads());
    }
}

/// Every record written up to the last one on `disk` (the whole log, not
/// compacted), without checkpoints: what rebuilds from the whole history.
fn disk_without_checkpoints(written: &[Record], disk: &[Record]) -> Vec<Record> {
    let last = disk.last().expect("a record");
    let end = written
        .iter()
        .position(|r| r == last)
        .expect("the disk holds written records");
    written[..=end]
        .iter()
        .filter(|r| {
            !matches!(
                r,
                Record::CheckpointStart { .. }
                    | Record::CheckpointEntries { .. }
                    | Record::CheckpointEnd { .. }
            )
        })
        .cloned()
        .collect()
}

#[test]
fn a_sealed_store_skips_a_torn_last_record_and_refuses_a_damaged_earlier_one() {
    let mut net = Net::new(1);
    let c = net.nodes[0].create_context(net.now, KV.as_bytes()).unwrap();
    for n in 0..5u32 {
        net.nodes[0]
            .call(net.now, c, "set", args(&[&n.to_le_bytes(), b"v"]))
            .unwrap();
    }
    net.collect();
    let sealed: Vec<Vec<u8>> = net.disks[0].iter().map(Record::seal).collect();
    let restore = |sealed: &[Vec<u8>]| {
        Node::restore_sealed(
            ctx_core::Config::default(),
            support::secret(0),
            [1; 32],
            std::sync::Arc::new(ctx_core::Ed25519Verifier),
            sealed,
        )
    };
    let whole = restore(&sealed).expect("a whole store restores");
    let applied = whole.replica(&c).unwrap().applied();
    // Torn: the last record cut short. The node comes up without it and
    // says so.
    let mut torn = sealed.clone();
    let last = torn.last_mut().unwrap();
    last.truncate(last.len() / 2);
    let mut node = restore(&torn).expect("a torn last record is skipped");
    assert_eq!(node.replica(&c).unwrap().applied(), applied - 1);
    let events: Vec<Event> = std::iter::from_fn(|| node.poll_event()).collect();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::TornRecordSkipped { record, .. } if *record as usize == sealed.len() - 1
        )),
        "{events:?}"
    );
    // A flipped bit in an earlier record: refused, never applied.
    let mut flipped = sealed.clone();
    flipped[2][10] ^= 0x10;
    match restore(&flipped) {
        Err(ctx_core::RestoreError::Damaged { record: 2, of, .. }) => {
            assert_eq!(of, sealed.len())
        }
        Err(other) => panic!("refused for another reason: {other}"),
        Ok(_) => panic!("a damaged record was trusted"),
    }
}
