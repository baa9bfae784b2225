//! The host functions of `docs/ABI.md`, wrapped safely: the only way an app
//! reaches the outside world.
//!
//! Owns: every pointer handed to the host points into a live Rust buffer of
//! the length given with it, so no host function is ever given a range
//! outside memory. Compiled to WebAssembly these are the `env` imports;
//! natively they act on the call the harness or the engine is running
//! (`crate::native`), with the same limits and messages. There is nothing
//! here for time or randomness: an app cannot observe anything that would
//! let two members diverge.

/// The value stored at `key`, or `None` if it is absent. Sees the call's own
/// earlier writes.
pub fn storage_read(key: &[u8; 32]) -> Option<Vec<u8>> {
    imp::storage_read(key)
}

/// Sets `key` to `value` (visible to other transactions only if the call
/// succeeds). A value above `VALUE_BYTES_MAX` fails the call.
pub fn storage_write(key: &[u8; 32], value: &[u8]) {
    imp::storage_write(key, value)
}

/// Removes `key`; whether it existed.
pub fn storage_remove(key: &[u8; 32]) -> bool {
    imp::storage_remove(key)
}

/// Appends a line to the call's log.
pub fn log(line: &str) {
    imp::log(line)
}

/// Fails the call (no effect) with `message`, cut to 1024 bytes.
pub fn fail(message: &str) -> ! {
    imp::fail(message)
}

#[cfg(target_arch = "wasm32")]
pub(crate) use imp::{input, value_return};

#[cfg(not(target_arch = "wasm32"))]
use crate::native as imp;

#[cfg(target_arch = "wasm32")]
mod imp {
    mod ffi {
        #[link(wasm_import_module = "env")]
        unsafe extern "C" {
            pub fn input_len() -> i32;
            pub fn input_read(ptr: *mut u8);
            pub fn storage_read(key_ptr: *const u8, val_ptr: *mut u8, val_cap: i32) -> i32;
            pub fn storage_write(key_ptr: *const u8, val_ptr: *const u8, val_len: i32);
            pub fn storage_remove(key_ptr: *const u8) -> i32;
            pub fn value_return(ptr: *const u8, len: i32);
            pub fn log(ptr: *const u8, len: i32);
            pub fn fail(ptr: *const u8, len: i32) -> !;
        }
    }

    /// A length as the host reads it. Buffers in a 32-bit memory are below
    /// 4 GiB; the host reads lengths as unsigned, so the cast keeps them.
    fn length(len: usize) -> i32 {
        len as u32 as i32
    }

    /// The first read's room: most values fit, and a longer one costs a
    /// second read of exactly its length.
    const READ_ROOM: usize = 256;

    pub(crate) fn input() -> Vec<u8> {
        // SAFETY: no pointers.
        let len = unsafe { ffi::input_len() } as u32 as usize;
        let mut input = vec![0u8; len];
        // SAFETY: `input` is `len` writable bytes, the input's length.
        unsafe { ffi::input_read(input.as_mut_ptr()) };
        input
    }

    pub(crate) fn value_return(bytes: &[u8]) {
        // SAFETY: `bytes` is readable for its length.
        unsafe { ffi::value_return(bytes.as_ptr(), length(bytes.len())) }
    }

    pub fn storage_read(key: &[u8; 32]) -> Option<Vec<u8>> {
        let mut value = vec![0u8; READ_ROOM];
        // SAFETY: `key` is 32 readable bytes, `value` `READ_ROOM` writable.
        let len = unsafe { ffi::storage_read(key.as_ptr(), value.as_mut_ptr(), length(READ_ROOM)) };
        if len < 0 {
            return None;
        }
        let len = len as u32 as usize;
        if len > READ_ROOM {
            value.resize(len, 0);
            // SAFETY: as above, with `len` writable bytes.
            unsafe { ffi::storage_read(key.as_ptr(), value.as_mut_ptr(), length(len)) };
        }
        value.truncate(len);
        Some(value)
    }

    pub fn storage_write(key: &[u8; 32], value: &[u8]) {
        // SAFETY: `key` is 32 readable bytes, `value` readable for its length.
        unsafe { ffi::storage_write(key.as_ptr(), value.as_ptr(), length(value.len())) }
    }

    pub fn storage_remove(key: &[u8; 32]) -> bool {
        // SAFETY: `key` is 32 readable bytes.
        unsafe { ffi::storage_remove(key.as_ptr()) == 1 }
    }

    pub fn log(line: &str) {
        // SAFETY: `line` is readable for its length.
        unsafe { ffi::log(line.as_ptr(), length(line.len())) }
    }

    pub fn fail(message: &str) -> ! {
        // SAFETY: `message` is readable for its length; `fail` never returns.
        unsafe { ffi::fail(message.as_ptr(), length(message.len())) }
    }
}
