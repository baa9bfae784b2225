//! counter, the bundled app of named u64 counters
//! (`scenarios/apps/counter.wat`), written with ctx-sdk.
//!
//! Owns the same state layout as the WebAssembly-text version, which
//! `apps/conformance` checks on every bundled scenario: a key is at most 32
//! bytes, stored zero-padded to 32, and its counter is 8 bytes
//! little-endian (a [`Counters`] at the empty prefix). An addition that
//! would overflow fails with no effect.

use ctx_sdk::{Counters, Key, StorageError};

#[ctx_sdk::state]
pub struct Counter {
    #[prefix = ""]
    counts: Counters<Key>,
}

#[ctx_sdk::app]
impl Counter {
    /// Adds `amount` to the counter at `key` (absent counts as 0).
    pub fn add(&mut self, key: Key, amount: u64) -> Result<(), StorageError> {
        self.counts.add(&key, amount).map(drop)
    }

    /// The counter at `key` (0 if absent).
    pub fn get(&self, key: Key) -> u64 {
        self.counts.get(&key)
    }

    /// Loops forever: compiled, a call to it always runs out of fuel.
    pub fn spin(&self) {
        loop {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctx_sdk::native::{CallError, Harness};

    #[test]
    fn adds_and_refuses_overflow() {
        let mut counter = Harness::native::<Counter>();
        counter
            .call("add", &[b"hits".as_slice(), &5u64.to_le_bytes()])
            .expect("add");
        counter
            .invoke(|app: &mut Counter| app.add(Key::new(b"hits").unwrap(), 2))
            .expect("runs")
            .expect("adds");
        assert_eq!(
            counter.view("get", &[b"hits"]),
            Ok(7u64.to_le_bytes().to_vec())
        );
        let root = counter.root();
        assert_eq!(
            counter.call("add", &[b"hits".as_slice(), &u64::MAX.to_le_bytes()]),
            Err(CallError::AppFailed("counter overflow".into()))
        );
        assert_eq!(counter.root(), root);
        assert_eq!(
            counter.call("add", &[b"hits".as_slice(), &[1, 2]]),
            Err(CallError::AppFailed(
                "argument amount: a u64 must be 8 bytes (little-endian), not 2".into()
            ))
        );
        assert_eq!(
            counter.view("get", &[b"absent"]),
            Ok(0u64.to_le_bytes().to_vec())
        );
    }
}
