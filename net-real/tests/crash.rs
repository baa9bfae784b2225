//! `kill -9` a member in the middle of a stream of writes, restart it, and
//! check that no acknowledged write is missing on any member and that all
//! converge. A write is acknowledged when its `call` returned: the node
//! answers only after the transaction's record is committed.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::{TestNode, cleanup, converged, get_api, kv_cluster, test_dir};

const WRITES: usize = 240;
const KILL_AFTER: usize = 80;

#[test]
fn kill_nine_mid_stream_loses_nothing_acknowledged() {
    let root = test_dir("crash");
    let mut a = TestNode::init(&root, "a");
    let mut b = TestNode::init(&root, "b");
    let mut c = TestNode::init(&root, "c");
    for node in [&mut a, &mut b, &mut c] {
        node.start();
    }
    let context = kv_cluster(&a, &[&b, &c]);

    // A killer thread: once the stream is under way, kill -9 b.
    let written = Arc::new(AtomicUsize::new(0));
    let pid = b.pid().expect("b runs").to_string();
    let killer = {
        let written = Arc::clone(&written);
        std::thread::spawn(move || {
            while written.load(Ordering::SeqCst) < KILL_AFTER {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::process::Command::new("kill")
                .args(["-9", &pid])
                .status()
                .expect("kill -9");
        })
    };
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..WRITES {
        let node = [&a, &b, &c][i % 3];
        match node.call(&context, "set", &[&format!("w{i}"), &format!("{i}")]) {
            Ok(_) => acknowledged.push(i),
            Err(_) => refused += 1,
        }
        written.fetch_add(1, Ordering::SeqCst);
    }
    killer.join().expect("killer");
    assert!(refused > 0, "b was killed during the stream");
    assert!(acknowledged.len() > WRITES / 2);

    // b comes back from its store, on the same ports, and writes again.
    b.kill9();
    b.start();
    b.call(&context, "set", &["after", "restart"])
        .expect("b writes after restart");
    converged(&context, &[&a, &b, &c]);
    for node in [&a, &b, &c] {
        let missing: Vec<usize> = acknowledged
            .iter()
            .copied()
            .filter(|i| get_api(node, &context, &format!("w{i}")) != Some(i.to_string()))
            .collect();
        assert!(
            missing.is_empty(),
            "{} lacks acknowledged writes {missing:?}",
            node.name
        );
        assert_eq!(get_api(node, &context, "after").as_deref(), Some("restart"));
    }
    eprintln!(
        "crash test: {} writes acknowledged, {refused} refused while b was down",
        acknowledged.len()
    );
    drop((a, b, c));
    cleanup(&root);
}

/// A joiner killed right after `join` answered (its catchup under way) comes
/// back knowing whom it was catching up from, and finishes joining.
#[test]
fn a_join_interrupted_by_kill_nine_resumes() {
    let root = test_dir("join-crash");
    let mut a = TestNode::init(&root, "a");
    let mut b = TestNode::init(&root, "b");
    a.start();
    b.start();
    let out = a.cli_ok(&["context", "create", "--app", support::KV]);
    let context = out.trim().to_owned();
    for i in 0..200 {
        a.call(&context, "set", &[&format!("k{i}"), "v"])
            .expect("a writes");
    }
    a.cli_ok(&["context", "invite", &context, &b.member]);
    b.cli_ok(&["context", "join", &context, "--via", &a.listen, "--no-wait"]);
    b.kill9();
    b.start();
    let restored = b.restored_line();
    assert!(
        restored.contains("contexts=1") && restored.contains("peers=1"),
        "the join and a's address were stored with it: {restored}"
    );
    converged(&context, &[&a, &b]);
    assert_eq!(get_api(&b, &context, "k199").as_deref(), Some("v"));
    drop((a, b));
    cleanup(&root);
}
