//! Resident memory of a member holding 100 000 applied transactions and
//! 100 000 keys: one node creates a kv context and sets 100 000 distinct
//! keys, and the process reports its resident set (Linux `/proc`) before
//! and after, and per transaction.
//!
//! `cargo run --release --example memory`

use std::sync::Arc;

use ctx_core::runtime::encode_args;
use ctx_core::{Config, Ed25519Verifier, Node, Time};

const KV: &str = include_str!("../scenarios/apps/kv.wat");
const CALLS: u64 = 100_000;

/// The resident set size in bytes, from `/proc/self/status`.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn main() {
    let Some(before) = resident_bytes() else {
        eprintln!("memory: /proc/self/status is not readable here (not Linux?)");
        std::process::exit(1);
    };
    let mut node = Node::new(
        Config::default(),
        [1; 32],
        [2; 32],
        Arc::new(Ed25519Verifier),
    );
    let context = node
        .create_context(Time::ZERO, KV.as_bytes())
        .expect("the kv app compiles");
    for index in 0..CALLS {
        let key = format!("key-{index}");
        let input = encode_args(&[key.as_bytes(), &index.to_le_bytes()]);
        node.call(Time::ZERO, context, "set", input)
            .expect("a member");
        // A driver persists the records elsewhere; drop them here.
        while node.poll_persist().is_some() {}
        while node.poll_event().is_some() {}
    }
    let after = resident_bytes().expect("readable a moment ago");
    let replica = node.replica(&context).expect("held");
    assert_eq!(replica.applied() as u64, CALLS + 1);
    assert_eq!(replica.state().len() as u64, CALLS);
    let grown = after.saturating_sub(before);
    println!(
        "memory: {} applied transactions, {} keys: {:.1} MiB resident ({:.1} MiB before), {} bytes per transaction",
        replica.applied(),
        replica.state().len(),
        after as f64 / (1 << 20) as f64,
        before as f64 / (1 << 20) as f64,
        grown / CALLS
    );
}
