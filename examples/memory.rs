//! Resident memory of a member that applied CALLS kv `set` transactions over
//! KEYS distinct keys (by default 100 000 and 100 000: every call sets a new
//! key). One node creates a kv context and makes the calls, key
//! `key-{i % KEYS}` set to `i` (8 bytes); the process reports its resident
//! set (Linux `/proc/self/status`, `VmRSS`, and its peak, `VmHWM`) at the
//! start, with the empty context (the fixed base), and after the calls.
//!
//! It also prints the state's own bytes (each key as stored, 32 bytes
//! zero-padded, plus its value, over the final state) and the ratio
//! resident / (2 × state bytes + fixed base): how far the member is from
//! holding little more than its state.
//!
//! `cargo run --release --example memory` (100 000 calls, 100 000 keys);
//! `cargo run --release --example memory -- 1000000 100000` (1 000 000
//! calls over 100 000 keys).

use std::sync::Arc;
use std::time::Instant;

use ctx_core::runtime::encode_args;
use ctx_core::{Config, Ed25519Verifier, Node, Time};

const KV: &str = include_str!("../scenarios/apps/kv.wat");
const CALLS_DEFAULT: u64 = 100_000;
const MIB: f64 = (1 << 20) as f64;

/// `VmRSS` and `VmHWM` (resident now, and its peak), in bytes.
#[derive(Clone, Copy)]
struct Resident {
    now: u64,
    peak: u64,
}

impl Resident {
    /// From `/proc/self/status`; `None` where it is not readable.
    fn read() -> Option<Resident> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|line| line.starts_with(name))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        };
        Some(Resident {
            now: field("VmRSS:")?,
            peak: field("VmHWM:")?,
        })
    }

    fn describe(self) -> String {
        format!(
            "VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            self.now as f64 / MIB,
            self.peak as f64 / MIB
        )
    }
}

/// CALLS and KEYS from the command line: none (the defaults), CALLS, or
/// CALLS KEYS.
fn sizes() -> Result<(u64, u64), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = |text: &str| -> Result<u64, String> {
        match text.replace('_', "").parse() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{text:?} is not a positive count")),
        }
    };
    match args.as_slice() {
        [] => Ok((CALLS_DEFAULT, CALLS_DEFAULT)),
        [calls] => {
            let calls = count(calls)?;
            Ok((calls, calls))
        }
        [calls, keys] => Ok((count(calls)?, count(keys)?)),
        _ => Err("usage: memory [CALLS [KEYS]]".to_owned()),
    }
}

fn main() {
    let (calls, keys) = sizes().unwrap_or_else(|error| {
        eprintln!("memory: {error}");
        std::process::exit(2);
    });
    let Some(before) = Resident::read() else {
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
    while node.poll_persist().is_some() {}
    while node.poll_event().is_some() {}
    let base = Resident::read().expect("readable a moment ago");
    let started = Instant::now();
    for index in 0..calls {
        let key = format!("key-{}", index % keys);
        let input = encode_args(&[key.as_bytes(), &index.to_le_bytes()]);
        node.call(Time::ZERO, context, "set", input)
            .expect("a member");
        // A driver persists the records elsewhere; drop them here.
        while node.poll_persist().is_some() {}
        while node.poll_event().is_some() {}
    }
    let elapsed = started.elapsed();
    let after = Resident::read().expect("readable a moment ago");
    let replica = node.replica(&context).expect("held");
    assert_eq!(replica.applied() as u64, calls + 1);
    assert_eq!(replica.state().len() as u64, keys.min(calls));
    let state_bytes: u64 = replica
        .state()
        .entries_sorted()
        .iter()
        .map(|(key, value)| (key.0.len() + value.len()) as u64)
        .sum();

    // The line this example has always printed.
    let grown = after.now.saturating_sub(before.now);
    println!(
        "memory: {} applied transactions, {} keys: {:.1} MiB resident ({:.1} MiB before), {} bytes per transaction",
        replica.applied(),
        replica.state().len(),
        after.now as f64 / MIB,
        before.now as f64 / MIB,
        grown / calls
    );
    println!("memory: at the start: {}", before.describe());
    println!(
        "memory: with an empty context (the fixed base): {}",
        base.describe()
    );
    println!(
        "memory: after {calls} calls over {keys} keys ({:.1} s): {}",
        elapsed.as_secs_f64(),
        after.describe()
    );
    println!(
        "memory: state: {} keys, {state_bytes} bytes ({:.1} MiB: 32-byte keys as stored, plus values)",
        replica.state().len(),
        state_bytes as f64 / MIB
    );
    let bound = 2 * state_bytes + base.now;
    println!(
        "memory: resident / (2 x state + base) = {:.1} MiB / {:.1} MiB = {:.2} (peak: {:.2})",
        after.now as f64 / MIB,
        bound as f64 / MIB,
        after.now as f64 / bound as f64,
        after.peak as f64 / bound as f64
    );
}
