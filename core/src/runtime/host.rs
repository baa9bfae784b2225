//! The host side of a call: the state a store carries (`Host`), the host
//! functions of module `env` that an app imports, and their fuel schedule.
//!
//! Owns these invariants:
//! - every host function checks in one order (base fuel, limits, memory
//!   ranges, fuel for the bytes copied, then the effect), so a call that
//!   breaks several rules fails the same way on every member;
//! - a host function never reads or writes outside the app's memory: every
//!   range is checked (`span`) before it is touched;
//! - writes go to the call's overlay only (`Host::overlay`), at most
//!   `CALL_WRITES_MAX` distinct keys; nothing reaches the state from here;
//! - every byte a host function copies into the memory is marked dirty
//!   (`Host::mark`) for the reset.

use super::*;

/// The call error for an execution that stopped with `error`.
pub(super) fn call_error(error: &wasmi::Error, host: &mut Host) -> CallError {
    if let Some(abort) = host.abort.take() {
        return abort;
    }
    match error.as_trap_code() {
        Some(TrapCode::OutOfFuel) => CallError::OutOfFuel,
        Some(code) => CallError::Trap(code.trap_message().to_owned()),
        None => CallError::Trap(error.to_string()),
    }
}

// ---------------------------------------------------------------------------
// Host side: the state a store carries and the host functions.

/// Per-store host state; everything but `memory` and `limits` is per call.
#[derive(Default)]
pub(super) struct Host {
    pub(super) memory: Option<Memory>,
    pub(super) limits: StoreLimits,
    /// The chunk shift of dirty tracking, if the code is instrumented.
    pub(super) chunk_shift: Option<u32>,
    /// The chunks host functions wrote this call (the code marks its own).
    pub(super) dirty: u64,
    pub(super) input: Vec<u8>,
    /// The call's writes: key to final value (`None`: removed).
    pub(super) overlay: BTreeMap<Key, Option<Vec<u8>>>,
    pub(super) return_value: Vec<u8>,
    pub(super) logs: Vec<String>,
    /// Set by a host function that aborts the call.
    pub(super) abort: Option<CallError>,
    /// The committed state, lent for the duration of one call.
    state: LentState,
}

impl Host {
    pub(super) fn new(limits: StoreLimits, chunk_shift: Option<u32>) -> Host {
        Host {
            limits,
            chunk_shift,
            ..Host::default()
        }
    }

    /// Records that a host function wrote `range` of the memory.
    pub(super) fn mark(&mut self, range: &Range<usize>) {
        if let Some(shift) = self.chunk_shift {
            self.dirty |= chunk_mask(range, shift);
        }
    }

    pub(super) fn begin(&mut self, input: &[u8]) {
        self.input.clear();
        self.input.extend_from_slice(input);
        debug_assert!(self.overlay.is_empty() && self.return_value.is_empty());
        debug_assert!(self.logs.is_empty() && self.abort.is_none());
    }

    /// The committed state of the call in progress.
    fn state(&self) -> Result<&dyn StateRead, CallError> {
        let Some(state) = self.state.0 else {
            return Err(CallError::Trap("no state is lent to this call".to_owned()));
        };
        // SAFETY: `state` was made by `lend_state` from a `&dyn StateRead`
        // that outlives the call: `lend_state` runs the call inside its own
        // borrow of the state and clears this pointer before it returns.
        // Host functions run only inside that call, on this thread, and
        // nothing here mutates the state, so the shared borrow is valid.
        Ok(unsafe { state.as_ref() })
    }
}

/// The committed state a call runs against, lent to the store for the
/// duration of that call only, so that the storage host functions answer
/// directly (the store outlives any one borrow of the state, so it cannot
/// hold a reference). Set and cleared by [`lend_state`]; `None` between
/// calls.
#[derive(Default)]
struct LentState(Option<std::ptr::NonNull<dyn StateRead + 'static>>);

// SAFETY: between calls the pointer is `None`; during a call, the store is
// used only on the thread that lent the state (the call borrows the store
// mutably for its whole duration), so moving a store to another thread never
// moves a pointer that will be used there.
unsafe impl Send for LentState {}

/// Runs `call` with `state` lent to the store's host functions, and takes
/// the loan back before returning, whatever `call` returns. (If `call`
/// panics, the store is dropped while unwinding: `App::call` holds it
/// outside the `App` during a call.)
pub(super) fn lend_state<R>(
    store: &mut Store<Host>,
    state: &dyn StateRead,
    call: impl FnOnce(&mut Store<Host>) -> R,
) -> R {
    let pointer = std::ptr::NonNull::from(state);
    // SAFETY: only the lifetime is erased, so that the store can hold the
    // pointer; it is cleared below, while `state` is still borrowed, and
    // `Host::state` is the only place that reads it.
    let erased: std::ptr::NonNull<dyn StateRead + 'static> =
        unsafe { std::mem::transmute(pointer) };
    assert!(store.data().state.0.is_none(), "a state is already lent");
    store.data_mut().state.0 = Some(erased);
    let result = call(store);
    store.data_mut().state.0 = None;
    result
}

/// The host error a host function returns to stop the execution; what to do
/// next is in `Host::abort` or `Host::pending`.
#[derive(Debug)]
pub(super) struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("host function stopped the call")
    }
}

impl wasmi::errors::HostError for Stop {}

pub(super) type HostResult<T> = Result<T, wasmi::Error>;

pub(super) fn stop<T>() -> HostResult<T> {
    Err(wasmi::Error::host(Stop))
}

/// Aborts the call with `error`.
pub(super) fn abort<T>(caller: &mut Caller<'_, Host>, error: CallError) -> HostResult<T> {
    caller.data_mut().abort = Some(error);
    stop()
}

/// Runs a host function's body; a `CallError` from it aborts the call.
///
/// Every body checks in the same order, so that a call breaking several
/// rules fails the same way everywhere: the base fuel, the limits, the
/// memory ranges, the fuel for the bytes copied, then the effect.
pub(super) fn host<T>(
    caller: &mut Caller<'_, Host>,
    body: impl FnOnce(&mut Caller<'_, Host>) -> Result<T, CallError>,
) -> HostResult<T> {
    match body(caller) {
        Ok(value) => Ok(value),
        Err(error) => abort(caller, error),
    }
}

/// Fuel for copying `bytes` bytes.
pub(super) fn bytes_fuel(bytes: usize) -> u64 {
    u64::try_from(bytes).unwrap_or(u64::MAX) / HOST_BYTES_PER_FUEL
}

/// Consumes `fuel`, or fails with `OutOfFuel` (with all fuel consumed).
pub(super) fn charge(caller: &mut Caller<'_, Host>, fuel: u64) -> Result<(), CallError> {
    let fuel_error = |e: wasmi::Error| CallError::Trap(format!("fuel: {e}"));
    let left = caller.get_fuel().map_err(fuel_error)?;
    let Some(after) = left.checked_sub(fuel) else {
        caller.set_fuel(0).map_err(fuel_error)?;
        return Err(CallError::OutOfFuel);
    };
    caller.set_fuel(after).map_err(fuel_error)
}

pub(super) fn no_memory() -> CallError {
    CallError::Trap("the instance has no memory".to_owned())
}

/// A length the host hands to the app; every one is bounded by a limit far
/// below `i32::MAX`, or by the memory size.
pub(super) fn length_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// An i32 the app passes as a length, read as unsigned 32-bit.
pub(super) fn length_arg(len: i32) -> usize {
    len as u32 as usize
}

/// The memory range `[ptr, ptr + len)` (`ptr` read as unsigned 32-bit), or
/// the trap for a range outside a memory of `memory_len` bytes.
pub(super) fn span(
    what: &str,
    ptr: i32,
    len: usize,
    memory_len: usize,
) -> Result<Range<usize>, CallError> {
    let start = ptr as u32 as usize;
    match start.checked_add(len) {
        Some(end) if end <= memory_len => Ok(start..end),
        _ => Err(CallError::Trap(format!(
            "{what}: bytes [{start}, {}) are outside the memory of {memory_len} bytes",
            start as u64 + len as u64
        ))),
    }
}

/// The length of the app's memory in bytes.
pub(super) fn memory_len(caller: &Caller<'_, Host>) -> Result<usize, CallError> {
    let memory = caller.data().memory.ok_or_else(no_memory)?;
    Ok(memory.data_size(caller))
}

/// The app's memory and the host state.
pub(super) fn memory_and_host<'a>(
    caller: &'a mut Caller<'_, Host>,
) -> Result<(&'a mut [u8], &'a mut Host), CallError> {
    let memory = caller.data().memory.ok_or_else(no_memory)?;
    Ok(memory.data_and_store_mut(caller))
}

pub(super) fn key_at(memory: &[u8], range: Range<usize>) -> Key {
    let mut key = [0u8; 32];
    key.copy_from_slice(&memory[range]);
    Key(key)
}

pub(super) fn too_long<T>(what: &str, len: usize, name: &str, max: usize) -> Result<T, CallError> {
    Err(CallError::LimitExceeded(format!(
        "{what} of {len} bytes exceeds {name} {max}"
    )))
}

pub(super) fn writes_exceeded() -> CallError {
    CallError::LimitExceeded(format!(
        "more than CALL_WRITES_MAX {CALL_WRITES_MAX} distinct keys written"
    ))
}

pub(super) fn input_len(mut caller: Caller<'_, Host>) -> HostResult<i32> {
    host(&mut caller, |caller| {
        charge(caller, HOST_CALL_FUEL)?;
        Ok(length_i32(caller.data().input.len()))
    })
}

pub(super) fn input_read(mut caller: Caller<'_, Host>, ptr: i32) -> HostResult<()> {
    host(&mut caller, |caller| {
        charge(caller, HOST_CALL_FUEL)?;
        let len = caller.data().input.len();
        let range = span("input_read", ptr, len, memory_len(caller)?)?;
        charge(caller, bytes_fuel(len))?;
        let (memory, host) = memory_and_host(caller)?;
        host.mark(&range);
        memory[range].copy_from_slice(&host.input);
        Ok(())
    })
}

/// Answers from the call's overlay when it holds the key, else from the
/// committed state.
pub(super) fn storage_read(
    mut caller: Caller<'_, Host>,
    key_ptr: i32,
    val_ptr: i32,
    val_cap: i32,
) -> HostResult<i32> {
    host(&mut caller, |caller| {
        charge(caller, STORAGE_CALL_FUEL)?;
        let memory_len = memory_len(caller)?;
        let key_range = span("storage_read key", key_ptr, 32, memory_len)?;
        let dst = span(
            "storage_read value buffer",
            val_ptr,
            length_arg(val_cap),
            memory_len,
        )?;
        let (memory, host) = memory_and_host(caller)?;
        let key = key_at(memory, key_range);
        let value = match host.overlay.get(&key) {
            Some(written) => written.as_deref(),
            None => host.state()?.get(&key),
        };
        let Some(value) = value else {
            return Ok(-1);
        };
        let length = length_i32(value.len());
        let copied = dst.start..dst.start + value.len().min(dst.len());
        memory[copied.clone()].copy_from_slice(&value[..copied.len()]);
        host.mark(&copied);
        charge(caller, bytes_fuel(copied.len()))?;
        Ok(length)
    })
}

pub(super) fn storage_write(
    mut caller: Caller<'_, Host>,
    key_ptr: i32,
    val_ptr: i32,
    val_len: i32,
) -> HostResult<()> {
    host(&mut caller, |caller| {
        charge(caller, STORAGE_CALL_FUEL)?;
        let len = length_arg(val_len);
        if len > VALUE_BYTES_MAX {
            return too_long("value", len, "VALUE_BYTES_MAX", VALUE_BYTES_MAX);
        }
        let memory_len = memory_len(caller)?;
        let key_range = span("storage_write key", key_ptr, 32, memory_len)?;
        let range = span("storage_write value", val_ptr, len, memory_len)?;
        charge(caller, bytes_fuel(len))?;
        let (memory, host) = memory_and_host(caller)?;
        let key = key_at(memory, key_range);
        if !host.overlay.contains_key(&key) && host.overlay.len() >= CALL_WRITES_MAX {
            return Err(writes_exceeded());
        }
        host.overlay.insert(key, Some(memory[range].to_vec()));
        Ok(())
    })
}

/// Removes the key in the call's overlay; answers whether it existed, in
/// the overlay when it holds the key, else in the committed state.
pub(super) fn storage_remove(mut caller: Caller<'_, Host>, key_ptr: i32) -> HostResult<i32> {
    host(&mut caller, |caller| {
        charge(caller, STORAGE_CALL_FUEL)?;
        let key_range = span("storage_remove key", key_ptr, 32, memory_len(caller)?)?;
        let (memory, host) = memory_and_host(caller)?;
        let key = key_at(memory, key_range);
        if let Some(value) = host.overlay.get_mut(&key) {
            return Ok(i32::from(value.take().is_some()));
        }
        if host.overlay.len() >= CALL_WRITES_MAX {
            return Err(writes_exceeded());
        }
        let existed = host.state()?.get(&key).is_some();
        host.overlay.insert(key, None);
        Ok(i32::from(existed))
    })
}

pub(super) fn value_return(mut caller: Caller<'_, Host>, ptr: i32, len: i32) -> HostResult<()> {
    host(&mut caller, |caller| {
        charge(caller, HOST_CALL_FUEL)?;
        let len = length_arg(len);
        if len > RETURN_BYTES_MAX {
            return too_long("return value", len, "RETURN_BYTES_MAX", RETURN_BYTES_MAX);
        }
        let range = span("value_return", ptr, len, memory_len(caller)?)?;
        charge(caller, bytes_fuel(len))?;
        let (memory, host) = memory_and_host(caller)?;
        host.return_value.clear();
        host.return_value.extend_from_slice(&memory[range]);
        Ok(())
    })
}

pub(super) fn log(mut caller: Caller<'_, Host>, ptr: i32, len: i32) -> HostResult<()> {
    host(&mut caller, |caller| {
        charge(caller, HOST_CALL_FUEL)?;
        let len = length_arg(len);
        if len > LOG_LINE_BYTES_MAX {
            return too_long("log line", len, "LOG_LINE_BYTES_MAX", LOG_LINE_BYTES_MAX);
        }
        if caller.data().logs.len() >= CALL_LOGS_MAX {
            return Err(CallError::LimitExceeded(format!(
                "more than CALL_LOGS_MAX {CALL_LOGS_MAX} log lines"
            )));
        }
        let range = span("log", ptr, len, memory_len(caller)?)?;
        charge(caller, bytes_fuel(len))?;
        let (memory, host) = memory_and_host(caller)?;
        host.logs
            .push(String::from_utf8_lossy(&memory[range]).into_owned());
        Ok(())
    })
}

/// Always aborts the call: with `AppFailed` and the message (cut to
/// `LOG_LINE_BYTES_MAX` bytes), or with the trap for a bad range.
pub(super) fn fail(mut caller: Caller<'_, Host>, ptr: i32, len: i32) -> HostResult<()> {
    host(&mut caller, |caller| {
        charge(caller, HOST_CALL_FUEL)?;
        let range = span("fail", ptr, length_arg(len), memory_len(caller)?)?;
        let kept = range.start..range.start + range.len().min(LOG_LINE_BYTES_MAX);
        let (memory, _) = memory_and_host(caller)?;
        Err(CallError::AppFailed(
            String::from_utf8_lossy(&memory[kept]).into_owned(),
        ))
    })
}

/// The names `env` provides, for the import check at compile time.
pub(super) const HOST_FUNCTIONS: [&str; 8] = [
    "input_len",
    "input_read",
    "storage_read",
    "storage_write",
    "storage_remove",
    "value_return",
    "log",
    "fail",
];

pub(super) fn new_linker(engine: &Engine) -> Linker<Host> {
    let mut linker = Linker::new(engine);
    // Defining distinct names in a fresh linker cannot fail.
    let defined = (|| -> Result<(), wasmi::errors::LinkerError> {
        linker.func_wrap("env", "input_len", input_len)?;
        linker.func_wrap("env", "input_read", input_read)?;
        linker.func_wrap("env", "storage_read", storage_read)?;
        linker.func_wrap("env", "storage_write", storage_write)?;
        linker.func_wrap("env", "storage_remove", storage_remove)?;
        linker.func_wrap("env", "value_return", value_return)?;
        linker.func_wrap("env", "log", log)?;
        linker.func_wrap("env", "fail", fail)?;
        Ok(())
    })();
    assert!(defined.is_ok(), "host functions defined twice");
    linker
}
