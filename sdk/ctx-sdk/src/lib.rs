//! # ctx-sdk: ctx apps in Rust
//!
//! An app is a crate (`crate-type = ["cdylib", "rlib"]`) with a state type
//! and an `impl` block:
//!
//! ```ignore
//! use ctx_sdk::{Counters, Key};
//!
//! #[ctx_sdk::state]
//! pub struct Counter {
//!     #[prefix = ""]
//!     counts: Counters<Key>,
//! }
//!
//! #[ctx_sdk::app]
//! impl Counter {
//!     pub fn add(&mut self, key: Key, amount: u64) -> Result<(), ctx_sdk::StorageError> {
//!         self.counts.add(&key, amount).map(|_| ())
//!     }
//!     pub fn get(&self, key: Key) -> u64 {
//!         self.counts.get(&key)
//!     }
//! }
//! ```
//!
//! `#[state]` makes the struct a handle on its collections ([`storage`]),
//! each at its own prefix. `#[app]` exports every `pub fn` of the block as
//! a method of the same name: `&mut self` methods are calls, `&self` methods
//! are views (they cannot write: every writing operation takes `&mut`).
//! Parameters are decoded from the input by the argument convention
//! ([`value`]); the return value is encoded the same way; an `Err` fails
//! the call with its message, and so does a panic. The macro also embeds
//! the ABI ([`abi`]) in the module's `ctx_abi` custom section.
//!
//! The module owns the contract between the generated code and the SDK:
//! [`App::dispatch`] runs one method on the ambient host (the WebAssembly
//! imports, or natively the call [`native`] is running) and returns its
//! return value or its failure; `None` only for a name that is not a
//! method. Compiled to WebAssembly every method is an export of type
//! `() -> ()` ([`__private::export`]); natively the same dispatch runs
//! behind the engine's `Application` trait, so one crate is tested natively
//! and deployed as a module. Nothing here can read time or randomness.

pub mod abi;
pub mod env;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
pub mod storage;
pub mod value;

pub use ctx_sdk_macros::{app, invariant, state};
pub use storage::{
    Cell, Codec, Collection, Counter, Counters, Le, Map, Postcard, Raw, StorageError, StorageKey,
};
pub use value::{Key, Outcome, Value};

/// The state of an app: a handle on its collections (`#[state]`).
pub trait State {
    /// The handle; it reads nothing.
    fn load() -> Self;
}

/// An app's methods (`#[app]`).
pub trait App: State {
    /// What the methods are: the document of the module's ABI section.
    const ABI: &'static abi::Spec;

    /// Runs `method` on `input`: its return value's bytes or its failure's
    /// message; `None` when `method` is not one of the app's.
    fn dispatch(method: &str, input: &[u8]) -> Option<Result<Vec<u8>, String>>;
}

/// A panic's message as a failed call carries it (the same compiled and
/// natively).
pub(crate) fn panic_message(message: &str) -> String {
    format!("panicked: {message}")
}

/// What the generated code calls. Not an API.
#[doc(hidden)]
pub mod __private {
    pub use crate::value::{Args, type_of};

    /// The body of one exported method in WebAssembly: read the input, run
    /// the method, return its value or fail.
    #[cfg(target_arch = "wasm32")]
    pub fn export<A: crate::App>(method: &str) {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            crate::env::fail(&crate::panic_message(message));
        }));
        let input = crate::env::input();
        match A::dispatch(method, &input) {
            Some(Ok(value)) => {
                if !value.is_empty() {
                    crate::env::value_return(&value);
                }
            }
            Some(Err(message)) => crate::env::fail(&message),
            None => crate::env::fail("unknown method"),
        }
    }
}
