//! A node with a long history restarts on its latest checkpoint: its store
//! holds the checkpoint and the tail above it, not every transaction it
//! ever applied (a checkpoint's last record drops what it supersedes, in
//! the same write transaction), and after `kill -9` it comes back with the
//! same state, heads and count of applied transactions, standing on that
//! checkpoint. The time it took to answer its admin API again is printed
//! (never asserted: the machine is shared).

mod support;

use std::time::Instant;

use support::{TestNode, cleanup, get_api, kv_cluster, test_dir};

/// Enough writes for the schedule's first cuts (1 024, then 2 048 with the
/// default interval).
const WRITES: usize = 3_000;
/// Distinct keys the writes go to: the state stays small while the history
/// grows.
const KEYS: usize = 100;

#[test]
fn a_long_history_restarts_on_its_checkpoint() {
    let root = test_dir("long-restart");
    let mut a = TestNode::init(&root, "a");
    a.start();
    let context = kv_cluster(&a, &[]);
    let client = a.client();
    for i in 0..WRITES {
        let args = [format!("k{}", i % KEYS), i.to_string()];
        client
            .post(
                &format!("/v1/contexts/{context}/call"),
                &serde_json::json!({ "method": "set", "args": args }),
            )
            .unwrap_or_else(|e| panic!("write {i}: {e}"));
    }
    let before = a.context_status(&context).expect("held");
    let checkpoint = before["checkpoint"]
        .as_u64()
        .unwrap_or_else(|| panic!("a checkpoint was cut: {before}"));
    assert!(checkpoint >= 2_048, "the second cut was taken: {before}");
    assert_eq!(before["applied"].as_u64(), Some(WRITES as u64 + 1));

    a.kill9();
    let started = Instant::now();
    a.start();
    let after = a.context_status(&context).expect("held after restart");
    let answered = started.elapsed();

    for field in ["applied", "heads", "state_root", "checkpoint", "members"] {
        assert_eq!(after[field], before[field], "{field} after the restart");
    }
    assert_eq!(
        after["stands_on"].as_u64(),
        Some(checkpoint),
        "the restart loads the checkpoint instead of the history: {after}"
    );
    let restored = a.restored_line();
    let records: usize = restored
        .split_whitespace()
        .find_map(|field| field.strip_prefix("records="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a record count in {restored:?}"));
    assert!(
        records < WRITES - checkpoint as usize + 100,
        "the store holds the checkpoint and the tail, not the history: {restored}"
    );
    for key in 0..KEYS {
        let last = (0..WRITES)
            .rev()
            .find(|i| i % KEYS == key)
            .expect("written");
        assert_eq!(
            get_api(&a, &context, &format!("k{key}")),
            Some(last.to_string()),
            "k{key} after the restart"
        );
    }
    // The events stream from the genesis says what this copy no longer
    // holds (folded into its checkpoint), then goes on from there.
    let events = support::subscribe(&a, &context, None);
    let next = || {
        events
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("an event")
    };
    let gap = next();
    let base = gap.data["to"].as_u64().expect("the gap's end");
    assert_eq!(
        (gap.event.as_str(), gap.data["from"].as_u64()),
        ("gap", Some(0)),
        "{gap:?}"
    );
    assert!(
        base > 2_000,
        "the checkpoint holds most of the history: {gap:?}"
    );
    let first = next();
    assert_eq!((first.event.as_str(), first.id), ("applied", Some(base)));
    a.call(&context, "set", &["after", "restart"])
        .expect("writes after the restart");
    eprintln!(
        "restart test: {WRITES} writes, checkpoint at height {checkpoint}, \
         {records} records restored, admin API answered {:.0} ms after the restart began",
        answered.as_secs_f64() * 1000.0
    );
    drop(a);
    cleanup(&root);
}
