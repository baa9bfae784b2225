//! kv, the bundled key-value app (`scenarios/apps/kv.wat`), written with
//! ctx-sdk.
//!
//! Owns the same state layout as the WebAssembly-text version, which
//! `apps/conformance` checks on every bundled scenario: a key is at most 32
//! bytes, stored zero-padded to 32 (one collection at the empty prefix),
//! and its value is stored as it is.

use ctx_sdk::{Key, Map, Raw};

#[ctx_sdk::state]
pub struct Kv {
    #[prefix = ""]
    entries: Map<Key, Vec<u8>, Raw>,
}

#[ctx_sdk::app]
impl Kv {
    /// Stores `value` under `key`.
    pub fn set(&mut self, key: Key, value: Vec<u8>) {
        self.entries.insert(&key, &value);
    }

    /// Removes `key` (no error if it is absent).
    pub fn remove(&mut self, key: Key) {
        self.entries.remove(&key);
    }

    /// The value, or nothing if `key` is absent.
    pub fn get(&self, key: Key) -> Option<Vec<u8>> {
        self.entries.get(&key)
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
    fn set_get_remove() {
        let mut kv = Harness::native::<Kv>();
        kv.call("set", &[b"colour".as_slice(), b"blue"])
            .expect("set");
        assert_eq!(kv.view("get", &[b"colour"]), Ok(b"blue".to_vec()));
        let mut padded = [0u8; 32];
        padded[..6].copy_from_slice(b"colour");
        assert_eq!(kv.get(&padded), Some(b"blue".as_slice()));
        kv.call("remove", &[b"colour"]).expect("remove");
        assert_eq!(kv.view("get", &[b"colour"]), Ok(Vec::new()));
        assert_eq!(kv.entries(), Vec::new());
    }

    #[test]
    fn malformed_input_fails_with_no_effect() {
        let mut kv = Harness::native::<Kv>();
        let root = kv.root();
        let failures = [
            kv.call("set", &[b"k".as_slice()]),
            kv.call("set", &[[7u8; 33].as_slice(), b"v"]),
            kv.call("set", &[b"k".as_slice(), b"v", b"extra"]),
        ];
        for failure in failures {
            assert!(
                matches!(failure, Err(CallError::AppFailed(_))),
                "{failure:?}"
            );
        }
        assert_eq!(kv.root(), root);
        assert_eq!(
            kv.call("set", &[b"k".as_slice()]).unwrap_err().to_string(),
            "application failed: missing argument value"
        );
        assert_eq!(
            kv.call("nope", &[b"k"]).unwrap_err().to_string(),
            "unknown method \"nope\""
        );
    }
}
