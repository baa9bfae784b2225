//! The application runtime: compiles a context's WebAssembly application once
//! and runs its methods, each call against a read-only view of the committed
//! key-value state, with fuel metering.
//!
//! This module owns the application ABI (documented for app authors in
//! `docs/ABI.md`) and these invariants:
//!
//! - **Determinism.** A call's outcome (its [`CallOutput`] or its
//!   [`CallError`], message included) is a function of the application, the
//!   method, the input, the state and the fuel, and of nothing else: no
//!   addresses, no clock, no host-dependent text. Fuel is consumed by wasmi's
//!   metering plus a fixed schedule for host functions ([`HOST_CALL_FUEL`],
//!   [`STORAGE_CALL_FUEL`], [`HOST_BYTES_PER_FUEL`]); functions are compiled
//!   eagerly so that no lazy compilation step changes what a call costs. How
//!   a module is rewritten for the reset (below) depends on its bytes only,
//!   so every member runs the same code. NaN results are canonical only with
//!   wasmi's `deterministic` feature, which the workspace must enable.
//! - **Reset.** Every call starts from the module's initial memory and
//!   globals. Application state lives only in the key-value store, so rolling
//!   back the store rolls back everything. The module is compiled once per
//!   [`App`] and one instance is reused; after each call it is put back in
//!   its initial state, in time proportional to what the call wrote: the
//!   code is instrumented at compile time to mark the 64ths of the memory it
//!   writes, and only those are restored (see [`Reset`]).
//! - **No effect on failure.** A call only *proposes* writes: they are
//!   buffered in an overlay and returned, sorted by key, in [`CallOutput`].
//!   A failed call returns no writes, so it has no effect.
//! - **No panic on anything the app does.** Out-of-bounds pointers trap,
//!   exceeded limits are [`CallError::LimitExceeded`], endless loops run out
//!   of fuel.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use wasmi::{
    Caller, CompilationMode, Config, Engine, Extern, ExternType, Global, Instance, Linker, Memory,
    Module, Mutability, ResumableCall, Store, StoreLimits, StoreLimitsBuilder, TrapCode, Val,
};
use wasmparser::{CompositeInnerType, ExternalKind, Operator, Parser, Payload, TypeRef};

use crate::ids::Key;
use crate::limits::{
    APP_BYTES_MAX, CALL_FUEL_MAX, CALL_LOGS_MAX, CALL_WRITES_MAX, INPUT_BYTES_MAX,
    LOG_LINE_BYTES_MAX, METHOD_NAME_BYTES_MAX, RETURN_BYTES_MAX, VALUE_BYTES_MAX,
};

/// Linear memory one application instance may grow to. A `memory.grow`
/// beyond it returns -1, as the WebAssembly specification allows.
pub const APP_MEMORY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Tables of one application instance, and the elements of one table.
pub const APP_TABLES_MAX: usize = 16;
pub const APP_TABLE_ELEMENTS_MAX: usize = 64 * 1024;

/// Fuel charged for a call to any host function, on top of wasmi's own cost
/// of the call instruction.
pub const HOST_CALL_FUEL: u64 = 20;

/// Fuel charged, instead of [`HOST_CALL_FUEL`], for a call to a storage host
/// function (`storage_read`, `storage_write`, `storage_remove`).
pub const STORAGE_CALL_FUEL: u64 = 100;

/// Bytes a host function copies (into or out of the app's memory) per unit of
/// fuel: the rate wasmi charges for `memory.copy`.
pub const HOST_BYTES_PER_FUEL: u64 = 64;

/// Export names starting with this prefix are reserved: the runtime exports
/// the module's mutable globals under them to restore them after each call.
pub const RESERVED_EXPORT_PREFIX: &str = "ctx:";

/// The granularity of the compare-and-copy restore: each piece of this many
/// bytes that differs from the initial image is copied back. Pieces this
/// small are copied with plain vector moves (larger copies may take glibc's
/// `rep movsb` path, which is many times slower on some CPUs when source and
/// destination are close modulo 4 KiB).
const RESET_PIECE_BYTES: usize = 1024;

/// Dirty tracking splits the memory in 64 chunks of at least `1 << 10`
/// bytes; see [`chunk_shift`].
const CHUNK_SHIFT_MIN: u32 = 10;

/// A store writes at most 8 bytes, so it spills at most 7 bytes past the
/// chunk its address marks.
const STORE_SPILL_BYTES: usize = 7;

/// The export of the dirty-chunk global the instrumentation adds.
const DIRTY_EXPORT: &str = "ctx:dirty";

/// The export of mutable global `index`, added for the reset.
fn global_export_name(index: u32) -> String {
    format!("{RESERVED_EXPORT_PREFIX}global:{index}")
}

/// The input convention of the bundled apps (and of `ctx-sim` scenario
/// `args`): each argument as a 4-byte little-endian length, then its bytes.
pub fn encode_args<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let total: usize = args.iter().map(|arg| 4 + arg.as_ref().len()).sum();
    let mut input = Vec::with_capacity(total);
    for arg in args {
        let arg = arg.as_ref();
        let len = u32::try_from(arg.len()).expect("an argument is at most u32::MAX bytes");
        input.extend_from_slice(&len.to_le_bytes());
        input.extend_from_slice(arg);
    }
    debug_assert_eq!(input.len(), total);
    input
}

/// Read access to the committed key-value state the call runs against.
pub trait StateRead {
    fn get(&self, key: &Key) -> Option<&[u8]>;
}

/// The engine's interface to an application: run a method against the
/// committed state and propose writes. Implementations must be
/// deterministic: the same method, input, state and fuel give the same
/// result on every member.
///
/// [`App`] (WebAssembly on wasmi, with fuel) is the one every node runs; the
/// trait lets a replica run any implementation, so the engine's own cost can
/// be measured without WebAssembly (`benches/replay.rs` runs the bundled
/// apps written in Rust).
pub trait Application: Send {
    fn call(
        &mut self,
        method: &str,
        input: &[u8],
        state: &dyn StateRead,
        fuel: u64,
    ) -> Result<CallOutput, CallError>;
}

impl Application for App {
    fn call(
        &mut self,
        method: &str,
        input: &[u8],
        state: &dyn StateRead,
        fuel: u64,
    ) -> Result<CallOutput, CallError> {
        App::call(self, method, input, state, fuel)
    }
}

/// What a successful call proposes. Nothing is applied by the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutput {
    /// The final value of each key the call wrote (`None`: removed), sorted by
    /// key, each key once.
    pub writes: Vec<(Key, Option<Vec<u8>>)>,
    /// The bytes given to the last `value_return` (empty if none).
    pub return_value: Vec<u8>,
    /// The lines given to `log`, in order.
    pub logs: Vec<String>,
    /// Fuel the call consumed, at most the fuel it was given.
    pub fuel_used: u64,
}

/// Why a call failed. A failed call has no effect. Deterministic, message
/// included: the same call on the same state fails the same way everywhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CallError {
    /// The app exports no function of type `() -> ()` with this name.
    #[error("unknown method {0:?}")]
    UnknownMethod(String),
    /// The call used all the fuel it was given.
    #[error("out of fuel")]
    OutOfFuel,
    /// The WebAssembly code trapped, or a host function was given a pointer
    /// outside the app's memory.
    #[error("trap: {0}")]
    Trap(String),
    /// The app called `fail` with this message.
    #[error("application failed: {0}")]
    AppFailed(String),
    /// A call or the app exceeded one of the limits of `crate::limits`.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// The runtime was asked for something it cannot do (fuel above
    /// `CALL_FUEL_MAX`).
    #[error("bad input: {0}")]
    BadInput(String),
}

/// Why an application cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppError {
    #[error("application of {bytes} bytes exceeds {max} bytes (APP_BYTES_MAX)")]
    TooLarge { bytes: usize, max: usize },
    #[error("not WebAssembly: neither a binary module (starting with \\0asm) nor UTF-8 text")]
    NotWasm,
    #[error("invalid WebAssembly text: {0}")]
    Text(String),
    #[error("invalid WebAssembly module: {0}")]
    Invalid(String),
    #[error("the module does not export its linear memory as \"memory\"")]
    MissingMemoryExport,
    #[error(
        "unsupported import {module}::{name}: only the host functions of module \"env\" can be imported"
    )]
    UnsupportedImport { module: String, name: String },
    #[error("export {0:?} uses the reserved prefix \"ctx:\"")]
    ReservedExport(String),
    #[error("the module has a start function: nothing may run at instantiation")]
    StartFunction,
    #[error("cannot instantiate the module: {0}")]
    Instantiate(String),
}

/// Accepts a WebAssembly binary (starting with `\0asm`) or WebAssembly text
/// and returns the binary, after checking that [`App::compile`] accepts it:
/// a blob this returns can always be compiled.
pub fn wasm_from_source(bytes: &[u8]) -> Result<Vec<u8>, AppError> {
    check_size(bytes.len())?;
    let wasm = if bytes.starts_with(WASM_MAGIC) {
        bytes.to_vec()
    } else {
        let text = std::str::from_utf8(bytes).map_err(|_| AppError::NotWasm)?;
        wat::parse_str(text).map_err(|e| AppError::Text(e.to_string()))?
    };
    App::compile(&wasm)?;
    Ok(wasm)
}

/// A compiled application: compiled once per context, called many times.
pub struct App {
    module: Module,
    linker: Linker<Host>,
    /// Exported functions of type `() -> ()`.
    methods: BTreeSet<String>,
    /// The indices of the module's mutable globals.
    mutable_globals: Vec<u32>,
    /// The linear memory right after instantiation.
    memory_initial: Vec<u8>,
    reset: Reset,
    /// The instance calls run on, in its initial state between calls; `None`
    /// when the next call must instantiate afresh.
    live: Option<Live>,
}

/// How an instance is put back in its initial state after a call. In every
/// case the mutable globals are set back to their initial values.
///
/// Measured on `kv.set` (release, one core): a fresh instance per call runs
/// about 160 000 calls/s, `Compare` 430 000, `Tracked` 1 070 000, and a
/// reused instance with no reset at all (incorrect: the ceiling) 1 450 000.
/// With a 17-page memory (a typical Rust app) a fresh instance or `Compare`
/// costs about 35 µs per call, `Tracked` 2.7 µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reset {
    /// The code is instrumented to mark the 64ths of the memory (chunks of
    /// `1 << chunk_shift` bytes) it writes; only those are restored.
    Tracked { chunk_shift: u32 },
    /// Compare the whole memory with its initial image and copy back the
    /// pieces that differ. For modules the instrumentation does not handle.
    Compare,
    /// Throw the instance away. For modules whose code can change instance
    /// state the runtime cannot restore (tables, dropped segments).
    Rebuild,
}

/// An instance and the handles the runtime needs on it.
struct Live {
    store: Store<Host>,
    instance: Instance,
    memory: Memory,
    /// The mutable globals with their initial values (the dirty-chunk global
    /// included: its initial value is 0).
    globals: Vec<(Global, Val)>,
    /// The dirty-chunk global, when the code is instrumented.
    dirty: Option<Global>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("methods", &self.methods)
            .field("memory_bytes", &self.memory_initial.len())
            .field("mutable_globals", &self.mutable_globals.len())
            .field("reset", &self.reset)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Validates and compiles `wasm` (a binary module), and checks the ABI:
    /// the memory is exported as `"memory"`, imports are host functions of
    /// `"env"`, no export uses [`RESERVED_EXPORT_PREFIX`], no start function.
    pub fn compile(wasm: &[u8]) -> Result<App, AppError> {
        check_size(wasm.len())?;
        if !wasm.starts_with(WASM_MAGIC) {
            return Err(AppError::NotWasm);
        }
        let engine = new_engine();
        Module::validate(&engine, wasm).map_err(|e| AppError::Invalid(e.to_string()))?;
        let analysis = analyze(wasm)?;
        let (module, reset) = compile_module(&engine, wasm, &analysis)?;
        let methods = module
            .exports()
            .filter(|export| match export.ty() {
                ExternType::Func(ty) => ty.params().is_empty() && ty.results().is_empty(),
                _ => false,
            })
            .map(|export| export.name().to_owned())
            .collect();
        let linker = new_linker(&engine);
        let mut app = App {
            module,
            linker,
            methods,
            mutable_globals: analysis.mutable_globals,
            memory_initial: Vec::new(),
            reset,
            live: None,
        };
        let live = app.instantiate().map_err(AppError::Instantiate)?;
        app.memory_initial = live.memory.data(&live.store).to_vec();
        assert_eq!(app.memory_initial.len() as u64, analysis.memory_bytes);
        if let Reset::Tracked { chunk_shift } = reset {
            assert!(app.memory_initial.len() <= 64 << chunk_shift);
        }
        app.live = Some(live);
        Ok(app)
    }

    /// The callable methods: exported functions of type `() -> ()`, sorted.
    pub fn methods(&self) -> Vec<String> {
        self.methods.iter().cloned().collect()
    }

    /// Runs `method` with `input` against `state` with `fuel`.
    ///
    /// Every call starts from the module's initial memory and globals. Writes
    /// are buffered in an overlay (reads inside the call see the call's own
    /// earlier writes); nothing is applied to `state` here.
    ///
    /// The reset: one instance is reused across calls. After each call its
    /// mutable globals are set back to their initial values (they are
    /// exported under reserved names for this at compile time) and the
    /// memory chunks the call marked dirty are copied back from the initial
    /// image. A call that grew the memory, or a module whose code can change
    /// tables or drop segments, gets a fresh instance instead.
    pub fn call(
        &mut self,
        method: &str,
        input: &[u8],
        state: &dyn StateRead,
        fuel: u64,
    ) -> Result<CallOutput, CallError> {
        if method.len() > METHOD_NAME_BYTES_MAX {
            return Err(CallError::LimitExceeded(format!(
                "method name of {} bytes exceeds METHOD_NAME_BYTES_MAX {METHOD_NAME_BYTES_MAX}",
                method.len()
            )));
        }
        if input.len() > INPUT_BYTES_MAX {
            return Err(CallError::LimitExceeded(format!(
                "input of {} bytes exceeds INPUT_BYTES_MAX {INPUT_BYTES_MAX}",
                input.len()
            )));
        }
        if fuel > CALL_FUEL_MAX {
            return Err(CallError::BadInput(format!(
                "fuel {fuel} exceeds CALL_FUEL_MAX {CALL_FUEL_MAX}"
            )));
        }
        if !self.methods.contains(method) {
            return Err(CallError::UnknownMethod(method.to_owned()));
        }
        let mut live = match self.live.take() {
            Some(live) => live,
            // Instantiation succeeded at compile time and is deterministic,
            // so this fails (if ever) identically everywhere.
            None => self
                .instantiate()
                .map_err(|e| CallError::Trap(format!("cannot instantiate: {e}")))?,
        };
        let result = run(&mut live, method, input, state, fuel);
        if restore(&mut live, &self.memory_initial, self.reset) {
            self.live = Some(live);
        }
        result
    }

    #[cfg(test)]
    pub(crate) fn set_reset(&mut self, reset: Reset) {
        self.reset = reset;
    }

    /// A new instance in a new store, in the module's initial state.
    fn instantiate(&self) -> Result<Live, String> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(APP_MEMORY_BYTES_MAX)
            .table_elements(APP_TABLE_ELEMENTS_MAX)
            .tables(APP_TABLES_MAX)
            .memories(1)
            .instances(1)
            .build();
        let host = Host {
            limits,
            chunk_shift: match self.reset {
                Reset::Tracked { chunk_shift } => Some(chunk_shift),
                Reset::Compare | Reset::Rebuild => None,
            },
            ..Host::default()
        };
        let mut store = Store::new(self.module.engine(), host);
        store.limiter(|host| &mut host.limits);
        let instance = self
            .linker
            .instantiate_and_start(&mut store, &self.module)
            .map_err(|e| e.to_string())?;
        let memory = match instance.get_export(&store, "memory") {
            Some(Extern::Memory(memory)) => memory,
            _ => return Err(AppError::MissingMemoryExport.to_string()),
        };
        store.data_mut().memory = Some(memory);
        let mut globals = Vec::with_capacity(self.mutable_globals.len() + 1);
        for &index in &self.mutable_globals {
            let name = global_export_name(index);
            let global = instance
                .get_global(&store, &name)
                .ok_or_else(|| format!("missing global export {name:?}"))?;
            assert_eq!(global.ty(&store).mutability(), Mutability::Var);
            globals.push((global, global.get(&store)));
        }
        let dirty = instance.get_global(&store, DIRTY_EXPORT);
        assert!(dirty.is_some() || !matches!(self.reset, Reset::Tracked { .. }));
        if let Some(dirty) = dirty {
            assert!(matches!(dirty.get(&store), Val::I64(0)));
            globals.push((dirty, Val::I64(0)));
        }
        debug_assert!(
            self.memory_initial.is_empty() || memory.data(&store) == &self.memory_initial[..]
        );
        Ok(Live {
            store,
            instance,
            memory,
            globals,
            dirty,
        })
    }
}

/// Runs one call on `live`, leaving the host state ready for the next one.
fn run(
    live: &mut Live,
    method: &str,
    input: &[u8],
    state: &dyn StateRead,
    fuel: u64,
) -> Result<CallOutput, CallError> {
    live.store.data_mut().begin(input);
    let outcome = execute(live, method, state, fuel);
    let host = live.store.data_mut();
    let writes = std::mem::take(&mut host.overlay);
    let return_value = std::mem::take(&mut host.return_value);
    let logs = std::mem::take(&mut host.logs);
    host.pending = None;
    host.abort = None;
    let fuel_left = outcome?;
    assert!(fuel_left <= fuel);
    assert!(writes.len() <= CALL_WRITES_MAX);
    Ok(CallOutput {
        writes: writes.into_iter().collect(),
        return_value,
        logs,
        fuel_used: fuel - fuel_left,
    })
}

/// Executes the method to completion, serving the host requests that need
/// the state. Returns the fuel left.
fn execute(
    live: &mut Live,
    method: &str,
    state: &dyn StateRead,
    fuel: u64,
) -> Result<u64, CallError> {
    let store = &mut live.store;
    store
        .set_fuel(fuel)
        .map_err(|e| CallError::Trap(format!("cannot set fuel: {e}")))?;
    let func = live
        .instance
        .get_func(&*store, method)
        .ok_or_else(|| CallError::UnknownMethod(method.to_owned()))?;
    let mut step = func.call_resumable(&mut *store, &[], &mut []);
    loop {
        let trap = match step {
            Ok(ResumableCall::Finished) => break,
            Ok(ResumableCall::OutOfFuel(_)) => return Err(CallError::OutOfFuel),
            Ok(ResumableCall::HostTrap(trap)) => trap,
            Err(error) => return Err(call_error(&error, store.data_mut())),
        };
        // A host function stopped the execution: either to abort the call,
        // or to ask for the state, which the store cannot hold (it outlives
        // the borrow of `state`).
        let host = store.data_mut();
        if let Some(error) = host.abort.take() {
            return Err(error);
        }
        let Some(request) = host.pending.take() else {
            return Err(CallError::Trap(trap.host_error().to_string()));
        };
        let result = serve(store, request, state)?;
        step = trap.resume(&mut *store, &[Val::I32(result)], &mut []);
    }
    store
        .get_fuel()
        .map_err(|e| CallError::Trap(format!("cannot read fuel: {e}")))
}

/// Answers a host function's request for the state; returns its result.
fn serve(
    store: &mut Store<Host>,
    request: Pending,
    state: &dyn StateRead,
) -> Result<i32, CallError> {
    match request {
        Pending::Read { key, dst } => {
            let Some(value) = state.get(&key) else {
                return Ok(-1);
            };
            let copied = value.len().min(dst.len());
            let fuel_left = store.get_fuel().unwrap_or(0);
            let cost = bytes_fuel(copied);
            if fuel_left < cost {
                return Err(CallError::OutOfFuel);
            }
            store
                .set_fuel(fuel_left - cost)
                .map_err(|e| CallError::Trap(format!("cannot set fuel: {e}")))?;
            let memory = store.data().memory.ok_or_else(no_memory)?;
            let (data, host) = memory.data_and_store_mut(&mut *store);
            host.mark(&(dst.start..dst.start + copied));
            // The range was checked against the memory by the host function,
            // and the memory cannot shrink.
            let window = data.get_mut(dst.start..dst.start + copied).ok_or_else(|| {
                CallError::Trap("storage_read: value buffer out of bounds".into())
            })?;
            window.copy_from_slice(&value[..copied]);
            Ok(length_i32(value.len()))
        }
        Pending::Remove { key } => {
            let existed = state.get(&key).is_some();
            let host = store.data_mut();
            assert!(host.overlay.len() < CALL_WRITES_MAX);
            let previous = host.overlay.insert(key, None);
            assert!(previous.is_none());
            Ok(i32::from(existed))
        }
    }
}

/// Puts `live` back in its initial state. Returns `false` if it cannot be
/// reused (its memory grew, or the module needs a fresh instance per call),
/// so that the next call instantiates afresh.
fn restore(live: &mut Live, memory_initial: &[u8], reset: Reset) -> bool {
    let marks = match (reset, live.dirty) {
        (Reset::Rebuild, _) => return false,
        (Reset::Tracked { chunk_shift }, Some(dirty)) => match dirty.get(&live.store) {
            Val::I64(bits) => Some((bits as u64 | live.store.data().dirty, chunk_shift)),
            _ => None,
        },
        _ => None,
    };
    live.store.data_mut().dirty = 0;
    let memory = live.memory.data_mut(&mut live.store);
    if memory.len() != memory_initial.len() {
        return false;
    }
    match marks {
        Some((marks, chunk_shift)) => restore_chunks(memory, memory_initial, marks, chunk_shift),
        None => restore_pieces(memory, memory_initial),
    }
    debug_assert!(memory == memory_initial, "the reset missed a write");
    for (global, initial) in &live.globals {
        if global.set(&mut live.store, initial.clone()).is_err() {
            return false;
        }
    }
    true
}

/// Restores the marked chunks of `1 << chunk_shift` bytes, each with the
/// bytes a store at its end may spill into the next one.
fn restore_chunks(memory: &mut [u8], initial: &[u8], marks: u64, chunk_shift: u32) {
    let mut marks = marks;
    while marks != 0 {
        let chunk = marks.trailing_zeros();
        marks &= marks - 1;
        let start = (chunk as usize) << chunk_shift;
        if start >= memory.len() {
            break;
        }
        let end = (start + (1 << chunk_shift) + STORE_SPILL_BYTES).min(memory.len());
        restore_pieces(&mut memory[start..end], &initial[start..end]);
    }
}

/// Copies back the pieces of `memory` that differ from `initial`.
fn restore_pieces(memory: &mut [u8], initial: &[u8]) {
    assert_eq!(memory.len(), initial.len());
    for (piece, initial) in memory
        .chunks_mut(RESET_PIECE_BYTES)
        .zip(initial.chunks(RESET_PIECE_BYTES))
    {
        if piece != initial {
            piece.copy_from_slice(initial);
        }
    }
}

/// The call error for an execution that stopped with `error`.
fn call_error(error: &wasmi::Error, host: &mut Host) -> CallError {
    if let Some(abort) = host.abort.take() {
        return abort;
    }
    match error.as_trap_code() {
        Some(TrapCode::OutOfFuel) => CallError::OutOfFuel,
        Some(code) => CallError::Trap(code.trap_message().to_owned()),
        None if host.pending.take().is_some() => CallError::Trap(
            "storage_read and storage_remove cannot be tail-called (return_call)".to_owned(),
        ),
        None => CallError::Trap(error.to_string()),
    }
}

// ---------------------------------------------------------------------------
// Host side: the state a store carries and the host functions.

/// Per-store host state; everything but `memory` and `limits` is per call.
#[derive(Default)]
struct Host {
    memory: Option<Memory>,
    limits: StoreLimits,
    /// The chunk shift of dirty tracking, if the code is instrumented.
    chunk_shift: Option<u32>,
    /// The chunks host functions wrote this call (the code marks its own).
    dirty: u64,
    input: Vec<u8>,
    /// The call's writes: key to final value (`None`: removed).
    overlay: BTreeMap<Key, Option<Vec<u8>>>,
    return_value: Vec<u8>,
    logs: Vec<String>,
    /// Set by a host function that aborts the call.
    abort: Option<CallError>,
    /// Set by a host function that needs the state to answer.
    pending: Option<Pending>,
}

impl Host {
    /// Records that a host function wrote `range` of the memory.
    fn mark(&mut self, range: &Range<usize>) {
        if let Some(shift) = self.chunk_shift {
            self.dirty |= chunk_mask(range, shift);
        }
    }

    fn begin(&mut self, input: &[u8]) {
        self.input.clear();
        self.input.extend_from_slice(input);
        debug_assert!(self.overlay.is_empty() && self.return_value.is_empty());
        debug_assert!(self.logs.is_empty() && self.abort.is_none() && self.pending.is_none());
    }
}

/// A host function's request for the state, served between two steps of a
/// resumable call.
#[derive(Debug)]
enum Pending {
    /// `storage_read` of a key the overlay does not hold, into `dst`.
    Read { key: Key, dst: Range<usize> },
    /// `storage_remove` of a key the overlay does not hold (already counted
    /// against `CALL_WRITES_MAX`).
    Remove { key: Key },
}

/// The host error a host function returns to stop the execution; what to do
/// next is in `Host::abort` or `Host::pending`.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("host function stopped the call")
    }
}

impl wasmi::errors::HostError for Stop {}

type HostResult<T> = Result<T, wasmi::Error>;

fn stop<T>() -> HostResult<T> {
    Err(wasmi::Error::host(Stop))
}

/// Aborts the call with `error`.
fn abort<T>(caller: &mut Caller<'_, Host>, error: CallError) -> HostResult<T> {
    caller.data_mut().abort = Some(error);
    stop()
}

/// Runs a host function's body; a `CallError` from it aborts the call.
///
/// Every body checks in the same order, so that a call breaking several
/// rules fails the same way everywhere: the base fuel, the limits, the
/// memory ranges, the fuel for the bytes copied, then the effect.
fn host<T>(
    caller: &mut Caller<'_, Host>,
    body: impl FnOnce(&mut Caller<'_, Host>) -> Result<T, CallError>,
) -> HostResult<T> {
    match body(caller) {
        Ok(value) => Ok(value),
        Err(error) => abort(caller, error),
    }
}

/// Fuel for copying `bytes` bytes.
fn bytes_fuel(bytes: usize) -> u64 {
    u64::try_from(bytes).unwrap_or(u64::MAX) / HOST_BYTES_PER_FUEL
}

/// Consumes `fuel`, or fails with `OutOfFuel` (with all fuel consumed).
fn charge(caller: &mut Caller<'_, Host>, fuel: u64) -> Result<(), CallError> {
    let fuel_error = |e: wasmi::Error| CallError::Trap(format!("fuel: {e}"));
    let left = caller.get_fuel().map_err(fuel_error)?;
    let Some(after) = left.checked_sub(fuel) else {
        caller.set_fuel(0).map_err(fuel_error)?;
        return Err(CallError::OutOfFuel);
    };
    caller.set_fuel(after).map_err(fuel_error)
}

fn no_memory() -> CallError {
    CallError::Trap("the instance has no memory".to_owned())
}

/// A length the host hands to the app; every one is bounded by a limit far
/// below `i32::MAX`, or by the memory size.
fn length_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// An i32 the app passes as a length, read as unsigned 32-bit.
fn length_arg(len: i32) -> usize {
    len as u32 as usize
}

/// The memory range `[ptr, ptr + len)` (`ptr` read as unsigned 32-bit), or
/// the trap for a range outside a memory of `memory_len` bytes.
fn span(what: &str, ptr: i32, len: usize, memory_len: usize) -> Result<Range<usize>, CallError> {
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
fn memory_len(caller: &Caller<'_, Host>) -> Result<usize, CallError> {
    let memory = caller.data().memory.ok_or_else(no_memory)?;
    Ok(memory.data_size(caller))
}

/// The app's memory and the host state.
fn memory_and_host<'a>(
    caller: &'a mut Caller<'_, Host>,
) -> Result<(&'a mut [u8], &'a mut Host), CallError> {
    let memory = caller.data().memory.ok_or_else(no_memory)?;
    Ok(memory.data_and_store_mut(caller))
}

fn key_at(memory: &[u8], range: Range<usize>) -> Key {
    let mut key = [0u8; 32];
    key.copy_from_slice(&memory[range]);
    Key(key)
}

fn too_long<T>(what: &str, len: usize, name: &str, max: usize) -> Result<T, CallError> {
    Err(CallError::LimitExceeded(format!(
        "{what} of {len} bytes exceeds {name} {max}"
    )))
}

fn writes_exceeded() -> CallError {
    CallError::LimitExceeded(format!(
        "more than CALL_WRITES_MAX {CALL_WRITES_MAX} distinct keys written"
    ))
}

fn input_len(mut caller: Caller<'_, Host>) -> HostResult<i32> {
    host(&mut caller, |caller| {
        charge(caller, HOST_CALL_FUEL)?;
        Ok(length_i32(caller.data().input.len()))
    })
}

fn input_read(mut caller: Caller<'_, Host>, ptr: i32) -> HostResult<()> {
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

/// Answers from the overlay when it holds the key; otherwise stops the
/// execution for `serve` to answer from the state and resume it.
fn storage_read(
    mut caller: Caller<'_, Host>,
    key_ptr: i32,
    val_ptr: i32,
    val_cap: i32,
) -> HostResult<i32> {
    let answer = host(&mut caller, |caller| {
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
        let (length, copied) = match host.overlay.get(&key) {
            None => {
                host.pending = Some(Pending::Read { key, dst });
                return Ok(None);
            }
            Some(None) => return Ok(Some(-1)),
            Some(Some(value)) => {
                let copied = value.len().min(dst.len());
                memory[dst.start..dst.start + copied].copy_from_slice(&value[..copied]);
                (length_i32(value.len()), copied)
            }
        };
        host.mark(&(dst.start..dst.start + copied));
        charge(caller, bytes_fuel(copied))?;
        Ok(Some(length))
    })?;
    answer.map_or_else(stop, Ok)
}

fn storage_write(
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

/// Answers from the overlay when it holds the key; otherwise stops the
/// execution for `serve` to answer from the state and resume it.
fn storage_remove(mut caller: Caller<'_, Host>, key_ptr: i32) -> HostResult<i32> {
    let answer = host(&mut caller, |caller| {
        charge(caller, STORAGE_CALL_FUEL)?;
        let key_range = span("storage_remove key", key_ptr, 32, memory_len(caller)?)?;
        let (memory, host) = memory_and_host(caller)?;
        let key = key_at(memory, key_range);
        if let Some(value) = host.overlay.get_mut(&key) {
            return Ok(Some(i32::from(value.take().is_some())));
        }
        if host.overlay.len() >= CALL_WRITES_MAX {
            return Err(writes_exceeded());
        }
        host.pending = Some(Pending::Remove { key });
        Ok(None)
    })?;
    answer.map_or_else(stop, Ok)
}

fn value_return(mut caller: Caller<'_, Host>, ptr: i32, len: i32) -> HostResult<()> {
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

fn log(mut caller: Caller<'_, Host>, ptr: i32, len: i32) -> HostResult<()> {
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
fn fail(mut caller: Caller<'_, Host>, ptr: i32, len: i32) -> HostResult<()> {
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
const HOST_FUNCTIONS: [&str; 8] = [
    "input_len",
    "input_read",
    "storage_read",
    "storage_write",
    "storage_remove",
    "value_return",
    "log",
    "fail",
];

fn new_linker(engine: &Engine) -> Linker<Host> {
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

// ---------------------------------------------------------------------------
// Compile time: engine configuration, module analysis, the rewrite for the
// reset (global exports and store instrumentation).

const WASM_MAGIC: &[u8] = b"\0asm";

/// The engine every application runs on. Every setting here is part of the
/// deterministic behaviour: changing one changes what calls do or cost.
fn new_engine() -> Engine {
    let mut config = Config::default();
    config
        .consume_fuel(true)
        // Lazy compilation charges fuel on a function's first call, which
        // would make a call's cost depend on the calls before it.
        .compilation_mode(CompilationMode::Eager)
        // Initial state is what instantiation leaves; nothing may run then.
        .allow_start_fn(false)
        // One memory, 32-bit: the one the runtime resets and the ABI uses.
        .wasm_multi_memory(false)
        .wasm_memory64(false);
    Engine::new(&config)
}

/// Compiles the module rewritten for the cheapest reset that is correct for
/// it. The choice depends on the module's bytes only, so every member makes
/// the same one (the instrumentation costs fuel: all must run the same code).
fn compile_module(
    engine: &Engine,
    wasm: &[u8],
    analysis: &Analysis,
) -> Result<(Module, Reset), AppError> {
    let compile =
        |bytes: &[u8]| Module::new(engine, bytes).map_err(|e| AppError::Invalid(e.to_string()));
    if analysis.mutates_instance {
        return Ok((compile(&rewrite(wasm, analysis, None)?)?, Reset::Rebuild));
    }
    if !analysis.untrackable {
        let chunk_shift = chunk_shift(analysis.memory_bytes);
        // This fails only if the added locals break a limit (a function
        // already near wasmi's 30 000 locals): then compare instead.
        if let Ok(module) = compile(&rewrite(wasm, analysis, Some(chunk_shift))?) {
            return Ok((module, Reset::Tracked { chunk_shift }));
        }
    }
    Ok((compile(&rewrite(wasm, analysis, None)?)?, Reset::Compare))
}

fn check_size(bytes: usize) -> Result<(), AppError> {
    if bytes > APP_BYTES_MAX {
        return Err(AppError::TooLarge {
            bytes,
            max: APP_BYTES_MAX,
        });
    }
    Ok(())
}

/// What the runtime learns about a valid module, in one pass over it.
struct Analysis {
    /// Indices of the mutable globals (there are no imported globals).
    mutable_globals: Vec<u32>,
    /// Number of globals: the index of the dirty-chunk global it adds.
    globals_len: u32,
    /// Number of types: the index of the helper's type it adds.
    types_len: u32,
    /// Parameter count of each type (0 for a type that is not a function).
    type_params: Vec<u32>,
    /// Type index of each defined function.
    func_types: Vec<u32>,
    /// Number of imported functions (all imports are functions).
    imported_funcs: u32,
    /// Initial size of the memory in bytes.
    memory_bytes: u64,
    /// The code contains an instruction that changes instance state other
    /// than the memory and the globals: `table.set`, `table.grow`,
    /// `table.fill`, `table.copy`, `table.init`, `elem.drop`, `data.drop`.
    mutates_instance: bool,
    /// The code contains an instruction the store instrumentation does not
    /// know (a SIMD or atomic one): its memory writes cannot be tracked.
    untrackable: bool,
    /// The function bodies and where they write to memory.
    bodies: Vec<Body>,
}

/// A function body and its memory writes.
struct Body {
    /// The body (locals and code) in the module.
    range: Range<usize>,
    /// Where the code starts, after the locals.
    code_start: usize,
    /// Number of local groups, and of locals.
    local_groups: u32,
    locals: u64,
    /// The instructions that write memory, in order.
    writes: Vec<Write>,
}

#[derive(Debug, Clone, Copy)]
enum Write {
    /// A store instruction at this offset: its value type and static offset.
    Store {
        at: usize,
        value: StoreValue,
        offset: u64,
    },
    /// `memory.fill`, `memory.copy` or `memory.init` at this offset.
    Bulk { at: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreValue {
    I32,
    I64,
    F32,
    F64,
}

/// Checks the ABI of a module that passed validation and collects what the
/// runtime needs.
fn analyze(wasm: &[u8]) -> Result<Analysis, AppError> {
    let invalid = |e: wasmparser::BinaryReaderError| AppError::Invalid(e.to_string());
    let mut analysis = Analysis {
        mutable_globals: Vec::new(),
        globals_len: 0,
        types_len: 0,
        type_params: Vec::new(),
        func_types: Vec::new(),
        imported_funcs: 0,
        memory_bytes: 0,
        mutates_instance: false,
        untrackable: false,
        bodies: Vec::new(),
    };
    let mut memory_exported = false;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(invalid)? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for ty in group.map_err(invalid)?.types() {
                        let params = match &ty.composite_type.inner {
                            CompositeInnerType::Func(func) => func.params().len(),
                            _ => 0,
                        };
                        analysis
                            .type_params
                            .push(u32::try_from(params).unwrap_or(u32::MAX));
                    }
                }
                analysis.types_len = u32::try_from(analysis.type_params.len())
                    .map_err(|_| AppError::Invalid("too many types".to_owned()))?;
            }
            Payload::ImportSection(reader) => {
                for import in reader {
                    let import = import.map_err(invalid)?;
                    let known = import.module == "env" && HOST_FUNCTIONS.contains(&import.name);
                    if !known || !matches!(import.ty, TypeRef::Func(_)) {
                        return Err(AppError::UnsupportedImport {
                            module: import.module.to_owned(),
                            name: import.name.to_owned(),
                        });
                    }
                    analysis.imported_funcs += 1;
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    analysis.func_types.push(ty.map_err(invalid)?);
                }
            }
            Payload::MemorySection(reader) => {
                for memory in reader {
                    let memory = memory.map_err(invalid)?;
                    analysis.memory_bytes = memory.initial.saturating_mul(WASM_PAGE_BYTES);
                }
            }
            Payload::GlobalSection(reader) => {
                for global in reader {
                    if global.map_err(invalid)?.ty.mutable {
                        analysis.mutable_globals.push(analysis.globals_len);
                    }
                    analysis.globals_len += 1;
                }
            }
            Payload::ExportSection(reader) => {
                for export in reader {
                    let export = export.map_err(invalid)?;
                    if export.name.starts_with(RESERVED_EXPORT_PREFIX) {
                        return Err(AppError::ReservedExport(export.name.to_owned()));
                    }
                    if export.name == "memory" && export.kind == ExternalKind::Memory {
                        memory_exported = true;
                    }
                }
            }
            Payload::StartSection { .. } => return Err(AppError::StartFunction),
            Payload::CodeSectionEntry(body) => {
                let body = analyze_body(wasm, &body, &mut analysis).map_err(invalid)?;
                analysis.bodies.push(body);
            }
            _ => {}
        }
    }
    if !memory_exported {
        return Err(AppError::MissingMemoryExport);
    }
    Ok(analysis)
}

/// Finds a body's memory writes and any instruction that rules out the
/// restore-in-place reset or the store instrumentation.
fn analyze_body(
    wasm: &[u8],
    body: &wasmparser::FunctionBody<'_>,
    analysis: &mut Analysis,
) -> Result<Body, wasmparser::BinaryReaderError> {
    let mut locals_reader = body.get_locals_reader()?;
    let local_groups = locals_reader.get_count();
    let mut locals: u64 = 0;
    for _ in 0..local_groups {
        locals += u64::from(locals_reader.read()?.0);
    }
    let mut operators = body.get_operators_reader()?;
    let code_start = operators.original_position();
    let mut writes = Vec::new();
    while !operators.eof() {
        let (operator, at) = operators.read_with_offset()?;
        let store = |value, memarg: wasmparser::MemArg| Write::Store {
            at,
            value,
            offset: memarg.offset,
        };
        let write = match operator {
            Operator::I32Store { memarg }
            | Operator::I32Store8 { memarg }
            | Operator::I32Store16 { memarg } => Some(store(StoreValue::I32, memarg)),
            Operator::I64Store { memarg }
            | Operator::I64Store8 { memarg }
            | Operator::I64Store16 { memarg }
            | Operator::I64Store32 { memarg } => Some(store(StoreValue::I64, memarg)),
            Operator::F32Store { memarg } => Some(store(StoreValue::F32, memarg)),
            Operator::F64Store { memarg } => Some(store(StoreValue::F64, memarg)),
            Operator::MemoryFill { .. }
            | Operator::MemoryCopy { .. }
            | Operator::MemoryInit { .. } => Some(Write::Bulk { at }),
            Operator::TableSet { .. }
            | Operator::TableGrow { .. }
            | Operator::TableFill { .. }
            | Operator::TableCopy { .. }
            | Operator::TableInit { .. }
            | Operator::ElemDrop { .. }
            | Operator::DataDrop { .. } => {
                analysis.mutates_instance = true;
                None
            }
            _ => {
                // The SIMD (0xfd) and atomic (0xfe) prefixes hold stores
                // this instrumentation does not handle.
                if matches!(wasm.get(at), Some(0xfd | 0xfe)) {
                    analysis.untrackable = true;
                }
                None
            }
        };
        writes.extend(write);
    }
    Ok(Body {
        range: body.range(),
        code_start,
        local_groups,
        locals,
        writes,
    })
}

/// The log2 of the chunk size for dirty tracking: the smallest chunk of at
/// least 1 KiB such that 64 chunks (one bit each in an i64) cover the memory.
fn chunk_shift(memory_bytes: u64) -> u32 {
    let chunk = memory_bytes.div_ceil(64).max(1 << CHUNK_SHIFT_MIN);
    chunk.next_power_of_two().trailing_zeros()
}

/// The bit mask of the chunks `range` touches, for chunks of `1 << shift`
/// bytes; chunks past the 64th are ignored (the memory has at most 64).
fn chunk_mask(range: &Range<usize>, shift: u32) -> u64 {
    if range.is_empty() {
        return 0;
    }
    let first = range.start >> shift;
    let last = ((range.end - 1) >> shift).min(63);
    if first > 63 {
        return 0;
    }
    (u64::MAX << first) & (u64::MAX >> (63 - last))
}

/// The rewritten module: the same module plus, for the runtime, exports of
/// the mutable globals and, if `track` gives a chunk shift, an i64 global of
/// dirty chunks (exported as `DIRTY_EXPORT`) that every memory write updates.
///
/// Tracking instruments the code: before each store, the store's address
/// (plus its static offset) marks its chunk; a store may spill up to 7 bytes
/// into the next chunk, which the reset copies too. Before each
/// `memory.fill`/`copy`/`init`, a helper function appended to the module
/// marks every chunk of the destination range. Nothing else changes: no
/// function, type, global or local index of the module moves.
fn rewrite(wasm: &[u8], analysis: &Analysis, track: Option<u32>) -> Result<Vec<u8>, AppError> {
    let malformed = || AppError::Invalid("malformed section layout".to_owned());
    let dirty_global = analysis.globals_len;
    let needs_helper = track.is_some()
        && analysis
            .bodies
            .iter()
            .any(|body| body.writes.iter().any(|w| matches!(w, Write::Bulk { .. })));
    let helper_func = analysis.imported_funcs
        + u32::try_from(analysis.func_types.len()).map_err(|_| malformed())?;

    let mut exports = Vec::new();
    let mut export_count = 0u32;
    for &index in &analysis.mutable_globals {
        write_name(&mut exports, &global_export_name(index));
        exports.push(0x03); // a global
        write_leb_u32(&mut exports, index);
        export_count += 1;
    }
    if track.is_some() {
        write_name(&mut exports, DIRTY_EXPORT);
        exports.push(0x03);
        write_leb_u32(&mut exports, dirty_global);
        export_count += 1;
    }
    // The dirty global: i64, mutable, initialized to 0.
    let dirty_decl = [0x7e, 0x01, 0x42, 0x00, 0x0b];

    let mut out = Vec::with_capacity(wasm.len() + wasm.len() / 4 + 64);
    out.extend_from_slice(&wasm[..8]);
    let mut global_section_seen = false;
    for section in sections(wasm).map_err(|()| malformed())? {
        let content = &wasm[section.content.clone()];
        let replaced = match (section.id, track) {
            (SECTION_TYPE, Some(_)) if needs_helper => {
                // (i32, i32) -> ()
                Some(
                    append_to_vec(content, 1, &[0x60, 0x02, 0x7f, 0x7f, 0x00])
                        .ok_or_else(malformed)?,
                )
            }
            (SECTION_FUNCTION, Some(_)) if needs_helper => {
                let mut entry = Vec::new();
                write_leb_u32(&mut entry, analysis.types_len);
                Some(append_to_vec(content, 1, &entry).ok_or_else(malformed)?)
            }
            (SECTION_GLOBAL, Some(_)) => {
                global_section_seen = true;
                Some(append_to_vec(content, 1, &dirty_decl).ok_or_else(malformed)?)
            }
            (SECTION_EXPORT, _) => {
                if track.is_some() && !global_section_seen {
                    let mut globals = Vec::new();
                    write_leb_u32(&mut globals, 1);
                    globals.extend_from_slice(&dirty_decl);
                    write_section(&mut out, SECTION_GLOBAL, &globals);
                }
                Some(append_to_vec(content, export_count, &exports).ok_or_else(malformed)?)
            }
            (SECTION_CODE, Some(shift)) => Some(
                instrument_code(
                    wasm,
                    analysis,
                    shift,
                    needs_helper.then_some(helper_func),
                    dirty_global,
                )
                .ok_or_else(malformed)?,
            ),
            _ => None,
        };
        match replaced {
            Some(content) => write_section(&mut out, section.id, &content),
            None => out.extend_from_slice(&wasm[section.whole]),
        }
    }
    Ok(out)
}

/// The code section with every body instrumented, and the helper appended.
fn instrument_code(
    wasm: &[u8],
    analysis: &Analysis,
    shift: u32,
    helper: Option<u32>,
    dirty: u32,
) -> Option<Vec<u8>> {
    assert_eq!(analysis.bodies.len(), analysis.func_types.len());
    let mut out = Vec::with_capacity(wasm.len());
    let count = u32::try_from(analysis.bodies.len()).ok()? + u32::from(helper.is_some());
    write_leb_u32(&mut out, count);
    let mut body_out = Vec::new();
    for (body, &ty) in analysis.bodies.iter().zip(&analysis.func_types) {
        body_out.clear();
        let params = *analysis.type_params.get(ty as usize)?;
        // The new locals follow the parameters and the body's own locals.
        let base = u32::try_from(u64::from(params) + body.locals).ok()?;
        let (_, groups_len) = read_leb_u32(&wasm[body.range.start..])?;
        write_leb_u32(&mut body_out, body.local_groups.checked_add(4)?);
        body_out.extend_from_slice(&wasm[body.range.start + groups_len..body.code_start]);
        // 3 i32 (address, or bulk operands; i32 value), i64, f32, f64.
        body_out.extend_from_slice(&[0x03, 0x7f, 0x01, 0x7e, 0x01, 0x7d, 0x01, 0x7c]);
        let locals = Scratch {
            addr: base,
            i32: base + 1,
            n: base + 2,
            i64: base + 3,
            f32: base + 4,
            f64: base + 5,
        };
        let mut copied = body.code_start;
        for write in &body.writes {
            let at = match *write {
                Write::Store { at, .. } | Write::Bulk { at } => at,
            };
            body_out.extend_from_slice(&wasm[copied..at]);
            copied = at;
            match *write {
                Write::Store { value, offset, .. } => {
                    mark_store(&mut body_out, &locals, value, offset, shift, dirty);
                }
                Write::Bulk { .. } => mark_bulk(&mut body_out, &locals, helper?),
            }
        }
        body_out.extend_from_slice(&wasm[copied..body.range.end]);
        write_leb_u32(&mut out, u32::try_from(body_out.len()).ok()?);
        out.extend_from_slice(&body_out);
    }
    if helper.is_some() {
        body_out.clear();
        mark_range_helper(&mut body_out, shift, dirty);
        write_leb_u32(&mut out, u32::try_from(body_out.len()).ok()?);
        out.extend_from_slice(&body_out);
    }
    Some(out)
}

/// The locals the instrumentation adds to a function.
struct Scratch {
    addr: u32,
    i32: u32,
    n: u32,
    i64: u32,
    f32: u32,
    f64: u32,
}

// The opcodes the instrumentation emits.
const OP_IF: u8 = 0x04;
const OP_END: u8 = 0x0b;
const OP_RETURN: u8 = 0x0f;
const OP_CALL: u8 = 0x10;
const OP_LOCAL_GET: u8 = 0x20;
const OP_LOCAL_SET: u8 = 0x21;
const OP_GLOBAL_GET: u8 = 0x23;
const OP_GLOBAL_SET: u8 = 0x24;
const OP_I64_CONST: u8 = 0x42;
const OP_I32_EQZ: u8 = 0x45;
const OP_I64_GT_U: u8 = 0x56;
const OP_I64_ADD: u8 = 0x7c;
const OP_I64_SUB: u8 = 0x7d;
const OP_I64_AND: u8 = 0x83;
const OP_I64_OR: u8 = 0x84;
const OP_I64_SHL: u8 = 0x86;
const OP_I64_SHR_U: u8 = 0x88;
const OP_I64_EXTEND_I32_U: u8 = 0xad;
const BLOCK_EMPTY: u8 = 0x40;

fn op_index(out: &mut Vec<u8>, op: u8, index: u32) {
    out.push(op);
    write_leb_u32(out, index);
}

fn op_i64_const(out: &mut Vec<u8>, value: i64) {
    out.push(OP_I64_CONST);
    write_leb_i64(out, value);
}

/// Before a store with `[address, value]` on the stack: marks the chunk of
/// `address + offset`, leaving the stack as it was.
///
/// ```text
/// local.set $value  local.set $addr
/// global.get $dirty
/// i64.const 1  (address + offset) >> shift  i64.shl  i64.or
/// global.set $dirty
/// local.get $addr  local.get $value
/// ```
///
/// A chunk index of 64 or more wraps around in `i64.shl`, marking a wrong
/// chunk; such a store is out of bounds and traps without writing.
fn mark_store(
    out: &mut Vec<u8>,
    locals: &Scratch,
    value: StoreValue,
    offset: u64,
    shift: u32,
    dirty: u32,
) {
    let value_local = match value {
        StoreValue::I32 => locals.i32,
        StoreValue::I64 => locals.i64,
        StoreValue::F32 => locals.f32,
        StoreValue::F64 => locals.f64,
    };
    op_index(out, OP_LOCAL_SET, value_local);
    op_index(out, OP_LOCAL_SET, locals.addr);
    op_index(out, OP_GLOBAL_GET, dirty);
    op_i64_const(out, 1);
    op_index(out, OP_LOCAL_GET, locals.addr);
    out.push(OP_I64_EXTEND_I32_U);
    if offset != 0 {
        // A memarg offset of a 32-bit memory fits in 32 bits.
        op_i64_const(out, i64::try_from(offset).unwrap_or(i64::MAX));
        out.push(OP_I64_ADD);
    }
    op_i64_const(out, i64::from(shift));
    out.push(OP_I64_SHR_U);
    out.push(OP_I64_SHL);
    out.push(OP_I64_OR);
    op_index(out, OP_GLOBAL_SET, dirty);
    op_index(out, OP_LOCAL_GET, locals.addr);
    op_index(out, OP_LOCAL_GET, value_local);
}

/// Before `memory.fill`/`copy`/`init` with `[dst, x, len]` on the stack:
/// calls the helper on `(dst, len)`, leaving the stack as it was.
fn mark_bulk(out: &mut Vec<u8>, locals: &Scratch, helper: u32) {
    op_index(out, OP_LOCAL_SET, locals.n);
    op_index(out, OP_LOCAL_SET, locals.i32);
    op_index(out, OP_LOCAL_SET, locals.addr);
    op_index(out, OP_LOCAL_GET, locals.addr);
    op_index(out, OP_LOCAL_GET, locals.n);
    op_index(out, OP_CALL, helper);
    op_index(out, OP_LOCAL_GET, locals.addr);
    op_index(out, OP_LOCAL_GET, locals.i32);
    op_index(out, OP_LOCAL_GET, locals.n);
}

/// The helper `(param $dst i32) (param $len i32)` that marks every chunk of
/// `[dst, dst + len)`, as `chunk_mask` does:
///
/// ```text
/// (local $first i64) (local $last i64)
/// (if (i32.eqz (local.get $len)) (then (return)))
/// (local.set $first (i64.shr_u (i64.extend_i32_u (local.get $dst)) (i64.const shift)))
/// (local.set $last (i64.shr_u (i64.sub (i64.add (i64.extend_i32_u (local.get $dst))
///                                              (i64.extend_i32_u (local.get $len)))
///                                      (i64.const 1))
///                             (i64.const shift)))
/// (if (i64.gt_u (local.get $first) (i64.const 63)) (then (return)))
/// (if (i64.gt_u (local.get $last) (i64.const 63)) (then (local.set $last (i64.const 63))))
/// (global.set $dirty (i64.or (global.get $dirty)
///   (i64.and (i64.shl (i64.const -1) (local.get $first))
///            (i64.shr_u (i64.const -1) (i64.sub (i64.const 63) (local.get $last))))))
/// ```
fn mark_range_helper(out: &mut Vec<u8>, shift: u32, dirty: u32) {
    let (dst, len, first, last) = (0, 1, 2, 3);
    out.extend_from_slice(&[0x01, 0x02, 0x7e]); // locals: 2 x i64
    op_index(out, OP_LOCAL_GET, len);
    out.extend_from_slice(&[OP_I32_EQZ, OP_IF, BLOCK_EMPTY, OP_RETURN, OP_END]);
    op_index(out, OP_LOCAL_GET, dst);
    out.push(OP_I64_EXTEND_I32_U);
    op_i64_const(out, i64::from(shift));
    out.push(OP_I64_SHR_U);
    op_index(out, OP_LOCAL_SET, first);
    op_index(out, OP_LOCAL_GET, dst);
    out.push(OP_I64_EXTEND_I32_U);
    op_index(out, OP_LOCAL_GET, len);
    out.push(OP_I64_EXTEND_I32_U);
    out.push(OP_I64_ADD);
    op_i64_const(out, 1);
    out.push(OP_I64_SUB);
    op_i64_const(out, i64::from(shift));
    out.push(OP_I64_SHR_U);
    op_index(out, OP_LOCAL_SET, last);
    op_index(out, OP_LOCAL_GET, first);
    op_i64_const(out, 63);
    out.extend_from_slice(&[OP_I64_GT_U, OP_IF, BLOCK_EMPTY, OP_RETURN, OP_END]);
    op_index(out, OP_LOCAL_GET, last);
    op_i64_const(out, 63);
    out.extend_from_slice(&[OP_I64_GT_U, OP_IF, BLOCK_EMPTY]);
    op_i64_const(out, 63);
    op_index(out, OP_LOCAL_SET, last);
    out.push(OP_END);
    op_index(out, OP_GLOBAL_GET, dirty);
    op_i64_const(out, -1);
    op_index(out, OP_LOCAL_GET, first);
    out.push(OP_I64_SHL);
    op_i64_const(out, -1);
    op_i64_const(out, 63);
    op_index(out, OP_LOCAL_GET, last);
    out.push(OP_I64_SUB);
    out.push(OP_I64_SHR_U);
    out.push(OP_I64_AND);
    out.push(OP_I64_OR);
    op_index(out, OP_GLOBAL_SET, dirty);
    out.push(OP_END);
}

// ---------------------------------------------------------------------------
// Binary layout: sections and LEB128.

const WASM_PAGE_BYTES: u64 = 64 * 1024;
const SECTION_TYPE: u8 = 1;
const SECTION_FUNCTION: u8 = 3;
const SECTION_GLOBAL: u8 = 6;
const SECTION_EXPORT: u8 = 7;
const SECTION_CODE: u8 = 10;

/// A section of a module: its id, its whole extent and its content.
struct Section {
    id: u8,
    whole: Range<usize>,
    content: Range<usize>,
}

/// The sections of a module whose header is valid.
fn sections(wasm: &[u8]) -> Result<Vec<Section>, ()> {
    let mut sections = Vec::new();
    let mut pos = 8; // magic and version
    while pos < wasm.len() {
        let id = wasm[pos];
        let (size, size_len) = read_leb_u32(wasm.get(pos + 1..).ok_or(())?).ok_or(())?;
        let start = pos + 1 + size_len;
        let end = start
            .checked_add(size as usize)
            .filter(|&end| end <= wasm.len())
            .ok_or(())?;
        sections.push(Section {
            id,
            whole: pos..end,
            content: start..end,
        });
        pos = end;
    }
    Ok(sections)
}

fn write_section(out: &mut Vec<u8>, id: u8, content: &[u8]) {
    out.push(id);
    // A section of a module under APP_BYTES_MAX, grown by the rewrite, stays
    // far below 4 GiB.
    write_leb_u32(out, u32::try_from(content.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(content);
}

/// A vector section's content with `count` more entries, encoded in `extra`.
fn append_to_vec(content: &[u8], count: u32, extra: &[u8]) -> Option<Vec<u8>> {
    let (old, old_len) = read_leb_u32(content)?;
    let mut out = Vec::with_capacity(content.len() + extra.len() + 5);
    write_leb_u32(&mut out, old.checked_add(count)?);
    out.extend_from_slice(&content[old_len..]);
    out.extend_from_slice(extra);
    Some(out)
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    write_leb_u32(out, u32::try_from(name.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(name.as_bytes());
}

/// An unsigned LEB128 u32 and its length in bytes.
fn read_leb_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u32 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(5) {
        if i == 4 && byte & 0x70 != 0 {
            return None; // bits beyond the 32nd
        }
        value |= u32::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn write_leb_u32(out: &mut Vec<u8>, mut value: u32) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn write_leb_i64(out: &mut Vec<u8>, mut value: i64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        let done = (value == 0 && byte & 0x40 == 0) || (value == -1 && byte & 0x40 != 0);
        if done {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KV: &str = include_str!("../../scenarios/apps/kv.wat");
    const COUNTER: &str = include_str!("../../scenarios/apps/counter.wat");
    const BANK: &str = include_str!("../../scenarios/apps/bank.wat");

    /// A module exercising the host functions with raw arguments: a method
    /// reads its arguments as little-endian i32s from the input.
    const PROBE: &str = r#"
    (module
      (import "env" "input_len"      (func $input_len (result i32)))
      (import "env" "input_read"     (func $input_read (param i32)))
      (import "env" "storage_read"   (func $storage_read (param i32 i32 i32) (result i32)))
      (import "env" "storage_write"  (func $storage_write (param i32 i32 i32)))
      (import "env" "storage_remove" (func $storage_remove (param i32) (result i32)))
      (import "env" "value_return"   (func $value_return (param i32 i32)))
      (import "env" "log"            (func $log (param i32 i32)))
      (import "env" "fail"           (func $fail (param i32 i32)))
      (memory (export "memory") 1)
      (global $counter (mut i32) (i32.const 0))
      ;; keys 1, 2, 3 at 0x1000, 0x1020, 0x1040; values at 0x2000 and 0x2010
      (data (i32.const 0x1000) "\01")
      (data (i32.const 0x1020) "\02")
      (data (i32.const 0x1040) "\03")
      (data (i32.const 0x2000) "hello")
      (data (i32.const 0x2010) "x")
      ;; the memory counter
      (data (i32.const 0x100) "\00\00\00\00")

      ;; Argument $i of the input, a little-endian i32.
      (func $arg (param $i i32) (result i32)
        (if (i32.eqz (global.get $loaded))
          (then
            (call $input_read (i32.const 0x8000))
            (global.set $loaded (i32.const 1))))
        (i32.load (i32.add (i32.const 0x8000) (i32.mul (local.get $i) (i32.const 4)))))
      (global $loaded (mut i32) (i32.const 0))

      (func $return_i32 (param $v i32)
        (i32.store (i32.const 0x2FFC) (local.get $v))
        (call $value_return (i32.const 0x2FFC) (i32.const 4)))

      (func (export "write")
        (call $storage_write (call $arg (i32.const 0)) (call $arg (i32.const 1)) (call $arg (i32.const 2))))
      ;; Returns the result (4 bytes) followed by the value buffer at 0x3000.
      (func (export "read")
        (i32.store (i32.const 0x2FFC)
          (call $storage_read (call $arg (i32.const 0)) (call $arg (i32.const 1)) (call $arg (i32.const 2))))
        (call $value_return (i32.const 0x2FFC) (i32.add (i32.const 4) (call $arg (i32.const 2)))))
      (func (export "remove")
        (call $return_i32 (call $storage_remove (call $arg (i32.const 0)))))
      (func (export "ret")
        (call $value_return (call $arg (i32.const 0)) (call $arg (i32.const 1))))
      (func (export "ret_twice")
        (call $value_return (i32.const 0x2000) (i32.const 5))
        (call $value_return (i32.const 0x2010) (i32.const 1)))
      (func (export "log")
        (local $i i32)
        (block $done
          (loop $next
            (br_if $done (i32.ge_u (local.get $i) (call $arg (i32.const 2))))
            (call $log (call $arg (i32.const 0)) (call $arg (i32.const 1)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $next))))
      (func (export "fail")
        (call $fail (call $arg (i32.const 0)) (call $arg (i32.const 1))))
      (func (export "input_read")
        (call $input_read (call $arg (i32.const 0))))
      (func (export "input_len")
        (call $return_i32 (call $input_len)))
      ;; Writes keys 1..=n (a little-endian i32 in a 32-byte key).
      (func (export "write_n")
        (local $i i32)
        (block $done
          (loop $next
            (br_if $done (i32.ge_u (local.get $i) (call $arg (i32.const 0))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (i32.store (i32.const 0x4000) (local.get $i))
            (call $storage_write (i32.const 0x4000) (i32.const 0x2000) (i32.const 5))
            (br $next))))
      (func (export "write_then_fail")
        (call $storage_write (i32.const 0x1000) (i32.const 0x2000) (i32.const 5))
        (call $fail (i32.const 0x2000) (i32.const 5)))
      (func (export "write_then_trap")
        (call $storage_write (i32.const 0x1000) (i32.const 0x2000) (i32.const 5))
        unreachable)
      ;; Writes 3, 1, 2, then 1 again, removes 2, and returns what key 1 reads.
      (func (export "sequence")
        (call $storage_write (i32.const 0x1040) (i32.const 0x2000) (i32.const 5))
        (call $storage_write (i32.const 0x1000) (i32.const 0x2000) (i32.const 5))
        (call $storage_write (i32.const 0x1020) (i32.const 0x2000) (i32.const 5))
        (call $storage_write (i32.const 0x1000) (i32.const 0x2010) (i32.const 1))
        (drop (call $storage_remove (i32.const 0x1020)))
        (drop (call $storage_read (i32.const 0x1000) (i32.const 0x3000) (i32.const 16)))
        (call $value_return (i32.const 0x3000) (i32.const 1)))
      ;; Grows the memory by a page and writes a value of 70000 bytes.
      (func (export "write_huge")
        (drop (memory.grow (i32.const 1)))
        (call $storage_write (i32.const 0x1000) (i32.const 0) (i32.const 70000)))
      ;; Adds 1 to a global and to a memory cell, returns both (8 bytes).
      (func $bump
        (global.set $counter (i32.add (global.get $counter) (i32.const 1)))
        (i32.store (i32.const 0x100) (i32.add (i32.load (i32.const 0x100)) (i32.const 1)))
        (i32.store (i32.const 0x200) (global.get $counter))
        (i32.store (i32.const 0x204) (i32.load (i32.const 0x100)))
        (call $value_return (i32.const 0x200) (i32.const 8)))
      (func (export "bump") (call $bump))
      (func (export "bump_then_trap") (call $bump) unreachable)
      (func (export "bump_then_fail") (call $bump) (call $fail (i32.const 0) (i32.const 0)))
      (func (export "bump_then_spin") (call $bump) (loop $l (br $l)))
      ;; Fills the whole memory, then bumps.
      (func (export "scribble")
        (memory.fill (i32.const 0) (i32.const 0xAB) (i32.const 65536))
        (call $bump))
      ;; Grows the memory by a page, bumps, returns the size in pages.
      (func (export "grow")
        (drop (memory.grow (i32.const 1)))
        (call $bump)
        (call $return_i32 (memory.size)))
      (func (export "size") (call $return_i32 (memory.size)))
      (func (export "oob_load") (drop (i32.load (i32.const 70000))))
      (func (export "nan")
        (call $return_i32 (i32.reinterpret_f32 (f32.div (f32.const 0) (f32.const 0)))))
      (func $tail_read (result i32)
        (return_call $storage_read (i32.const 0x1000) (i32.const 0x3000) (i32.const 8)))
      (func (export "tail_read") (call $return_i32 (call $tail_read)))
      (func (export "recurse") (call $recurse_forever))
      (func $recurse_forever (call $recurse_forever))
      (func (export "not_a_method") (param i32))
      (func (export "neither") (result i32) (i32.const 0))
      (global (export "a_global") i32 (i32.const 7))
    )
    "#;

    /// A state in a BTreeMap, to which successful calls are applied.
    #[derive(Default)]
    struct MapState(BTreeMap<Key, Vec<u8>>);

    impl StateRead for MapState {
        fn get(&self, key: &Key) -> Option<&[u8]> {
            self.0.get(key).map(Vec::as_slice)
        }
    }

    impl MapState {
        fn apply(&mut self, output: &CallOutput) {
            for (key, value) in &output.writes {
                match value {
                    Some(value) => self.0.insert(*key, value.clone()),
                    None => self.0.remove(key),
                };
            }
        }
    }

    struct Harness {
        app: App,
        state: MapState,
    }

    impl Harness {
        fn new(source: &str) -> Self {
            let wasm = wasm_from_source(source.as_bytes()).expect("valid app");
            Harness {
                app: App::compile(&wasm).expect("compiles"),
                state: MapState::default(),
            }
        }

        fn call_raw(&mut self, method: &str, input: &[u8]) -> Result<CallOutput, CallError> {
            let output = self.app.call(method, input, &self.state, CALL_FUEL_MAX)?;
            assert!(output.writes.windows(2).all(|w| w[0].0 < w[1].0));
            self.state.apply(&output);
            Ok(output)
        }

        /// A call with scenario-style arguments.
        fn call(&mut self, method: &str, args: &[&[u8]]) -> Result<CallOutput, CallError> {
            self.call_raw(method, &encode(args))
        }

        /// A call to the probe with i32 arguments.
        fn probe(&mut self, method: &str, args: &[i32]) -> Result<CallOutput, CallError> {
            let input: Vec<u8> = args.iter().flat_map(|a| a.to_le_bytes()).collect();
            self.call_raw(method, &input)
        }

        fn value(&self, key: &str) -> Option<&[u8]> {
            self.state.get(&k(key))
        }
    }

    /// The scenario input encoding: each argument as a 4-byte little-endian
    /// length followed by its bytes.
    fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut input = Vec::new();
        for arg in args {
            input.extend_from_slice(&(arg.len() as u32).to_le_bytes());
            input.extend_from_slice(arg);
        }
        input
    }

    fn k(name: &str) -> Key {
        Key::padded(name.as_bytes()).expect("short key")
    }

    fn probe_key(n: u8) -> Key {
        let mut key = [0u8; 32];
        key[0] = n;
        Key(key)
    }

    fn u64_arg(n: u64) -> [u8; 8] {
        n.to_le_bytes()
    }

    fn app_failed(message: &str) -> Result<CallOutput, CallError> {
        Err(CallError::AppFailed(message.to_owned()))
    }

    fn returned_u64(output: &CallOutput) -> u64 {
        u64::from_le_bytes(output.return_value[..].try_into().expect("8 bytes"))
    }

    fn returned_i32s(output: &CallOutput) -> Vec<i32> {
        output
            .return_value
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    }

    // ---- kv ----

    #[test]
    fn kv_set_get_remove() {
        let mut kv = Harness::new(KV);
        assert_eq!(kv.app.methods(), ["get", "remove", "set", "spin"]);
        let set = kv.call("set", &[b"colour", b"blue"]).unwrap();
        assert_eq!(set.writes, vec![(k("colour"), Some(b"blue".to_vec()))]);
        assert!(set.return_value.is_empty());
        assert_eq!(kv.value("colour"), Some(&b"blue"[..]));

        let get = kv.call("get", &[b"colour"]).unwrap();
        assert_eq!(get.return_value, b"blue");
        assert!(get.writes.is_empty(), "get is read-only");
        assert!(get.fuel_used > 0);

        let missing = kv.call("get", &[b"size"]).unwrap();
        assert!(missing.return_value.is_empty());

        let remove = kv.call("remove", &[b"colour"]).unwrap();
        assert_eq!(remove.writes, vec![(k("colour"), None)]);
        assert_eq!(kv.value("colour"), None);
        assert!(
            kv.call("get", &[b"colour"])
                .unwrap()
                .return_value
                .is_empty()
        );
        // Removing an absent key is not an error.
        kv.call("remove", &[b"colour"]).unwrap();
    }

    #[test]
    fn kv_keys_are_zero_padded_and_at_most_32_bytes() {
        let mut kv = Harness::new(KV);
        let key32 = [b'k'; 32];
        kv.call("set", &[&key32, b"v"]).unwrap();
        assert_eq!(kv.state.get(&Key(key32)), Some(&b"v"[..]));
        kv.call("set", &[b"", b"empty key"]).unwrap();
        assert_eq!(kv.state.get(&Key([0; 32])), Some(&b"empty key"[..]));
        assert_eq!(
            kv.call("set", &[&[b'k'; 33], b"v"]),
            app_failed("key longer than 32 bytes")
        );
    }

    #[test]
    fn kv_large_values_grow_memory_and_later_calls_start_fresh() {
        let mut kv = Harness::new(KV);
        let big = vec![7u8; 60_000];
        kv.call("set", &[b"big", &big]).unwrap();
        let get = kv.call("get", &[b"big"]).unwrap();
        assert_eq!(get.return_value, big);
        // The get grew the memory; the next calls see the initial one.
        kv.call("set", &[b"small", b"s"]).unwrap();
        assert_eq!(kv.call("get", &[b"small"]).unwrap().return_value, b"s");
        assert_eq!(kv.call("get", &[b"big"]).unwrap().return_value, big);
        // The largest value an input can carry.
        let largest = vec![1u8; INPUT_BYTES_MAX - 8 - 3];
        kv.call("set", &[b"max", &largest]).unwrap();
        assert_eq!(kv.call("get", &[b"max"]).unwrap().return_value, largest);
    }

    #[test]
    fn kv_malformed_input_fails() {
        let mut kv = Harness::new(KV);
        assert_eq!(kv.call("set", &[]), app_failed("missing argument"));
        assert_eq!(kv.call("set", &[b"k"]), app_failed("missing argument"));
        assert_eq!(
            kv.call("get", &[b"a", b"b"]),
            app_failed("too many arguments")
        );
        // A length that runs past the end of the input.
        let mut truncated = encode(&[b"key", b"value"]);
        truncated.pop();
        assert_eq!(
            kv.call_raw("set", &truncated),
            app_failed("argument runs past the end of the input")
        );
        // Fewer than 4 bytes of length.
        assert_eq!(kv.call_raw("get", &[1, 0]), app_failed("missing argument"));
        // A length near u32::MAX must not wrap around.
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(b"abc");
        assert_eq!(
            kv.call_raw("get", &huge),
            app_failed("argument runs past the end of the input")
        );
        assert!(kv.state.0.is_empty());
    }

    // ---- counter ----

    #[test]
    fn counter_add_and_get() {
        let mut counter = Harness::new(COUNTER);
        assert_eq!(counter.app.methods(), ["add", "get", "spin"]);
        assert_eq!(returned_u64(&counter.call("get", &[b"hits"]).unwrap()), 0);
        counter.call("add", &[b"hits", &u64_arg(5)]).unwrap();
        let add = counter.call("add", &[b"hits", &u64_arg(37)]).unwrap();
        assert_eq!(
            add.writes,
            vec![(k("hits"), Some(42u64.to_le_bytes().to_vec()))]
        );
        let get = counter.call("get", &[b"hits"]).unwrap();
        assert_eq!(returned_u64(&get), 42);
        assert!(get.writes.is_empty());
        assert_eq!(returned_u64(&counter.call("get", &[b"misses"]).unwrap()), 0);
    }

    #[test]
    fn counter_overflow_and_bad_amount_fail_without_effect() {
        let mut counter = Harness::new(COUNTER);
        counter
            .call("add", &[b"c", &u64_arg(u64::MAX - 1)])
            .unwrap();
        counter.call("add", &[b"c", &u64_arg(1)]).unwrap();
        assert_eq!(
            counter.call("add", &[b"c", &u64_arg(1)]),
            app_failed("counter overflow")
        );
        assert_eq!(counter.value("c"), Some(&u64::MAX.to_le_bytes()[..]));
        let bad = app_failed("amount must be 8 bytes (u64 little-endian)");
        assert_eq!(counter.call("add", &[b"c", &[1, 0, 0, 0]]), bad);
        assert_eq!(counter.call("add", &[b"c", &[0; 9]]), bad);
        assert_eq!(counter.call("add", &[b"c"]), app_failed("missing argument"));
    }

    // ---- bank ----

    fn balance(bank: &mut Harness, account: &str) -> Result<u64, CallError> {
        bank.call("balance", &[account.as_bytes()])
            .map(|out| returned_u64(&out))
    }

    #[test]
    fn bank_open_transfer_balance() {
        let mut bank = Harness::new(BANK);
        assert_eq!(bank.app.methods(), ["balance", "open", "spin", "transfer"]);
        bank.call("open", &[b"alice", &u64_arg(100)]).unwrap();
        bank.call("open", &[b"bob", &u64_arg(5)]).unwrap();
        assert_eq!(
            bank.call("open", &[b"alice", &u64_arg(1)]),
            app_failed("account already exists")
        );
        // Opening with a zero balance still creates the account.
        bank.call("open", &[b"carol", &u64_arg(0)]).unwrap();
        assert_eq!(
            bank.call("open", &[b"carol", &u64_arg(0)]),
            app_failed("account already exists")
        );

        let transfer = bank
            .call("transfer", &[b"alice", b"bob", &u64_arg(30)])
            .unwrap();
        assert_eq!(
            transfer.writes,
            vec![
                (k("alice"), Some(70u64.to_le_bytes().to_vec())),
                (k("bob"), Some(35u64.to_le_bytes().to_vec())),
            ]
        );
        assert_eq!(balance(&mut bank, "alice"), Ok(70));
        assert_eq!(balance(&mut bank, "bob"), Ok(35));
        assert_eq!(
            balance(&mut bank, "dave"),
            Err(CallError::AppFailed("no such account".into()))
        );

        assert_eq!(
            bank.call("transfer", &[b"bob", b"alice", &u64_arg(36)]),
            app_failed("insufficient funds")
        );
        assert_eq!(
            bank.call("transfer", &[b"dave", b"alice", &u64_arg(1)]),
            app_failed("no such account: from")
        );
        assert_eq!(
            bank.call("transfer", &[b"alice", b"dave", &u64_arg(1)]),
            app_failed("no such account: to")
        );
        // To oneself: allowed, no effect; still checked.
        let own = bank
            .call("transfer", &[b"bob", b"bob", &u64_arg(35)])
            .unwrap();
        assert!(own.writes.is_empty());
        assert_eq!(
            bank.call("transfer", &[b"bob", b"bob", &u64_arg(36)]),
            app_failed("insufficient funds")
        );
        // Everything.
        bank.call("transfer", &[b"bob", b"carol", &u64_arg(35)])
            .unwrap();
        assert_eq!(balance(&mut bank, "bob"), Ok(0));
        assert_eq!(balance(&mut bank, "carol"), Ok(35));
    }

    #[test]
    fn bank_conserves_money() {
        let mut bank = Harness::new(BANK);
        let accounts = ["a", "b", "c", "d", "nobody"];
        for account in &accounts[..4] {
            bank.call("open", &[account.as_bytes(), &u64_arg(100)])
                .unwrap();
        }
        let total = |bank: &Harness| -> u64 {
            bank.state
                .0
                .values()
                .map(|v| u64::from_le_bytes(v[..].try_into().expect("8 bytes")))
                .sum()
        };
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..500 {
            let from = accounts[next(5) as usize];
            let to = accounts[next(5) as usize];
            let amount = next(150);
            let before = bank.state.0.clone();
            match bank.call(
                "transfer",
                &[from.as_bytes(), to.as_bytes(), &u64_arg(amount)],
            ) {
                Ok(_) => ok += 1,
                Err(CallError::AppFailed(_)) => {
                    failed += 1;
                    assert_eq!(bank.state.0, before, "a failed transfer has no effect");
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
            assert_eq!(total(&bank), 400);
        }
        assert!(ok > 100 && failed > 100, "ok {ok}, failed {failed}");
        let sum: u64 = accounts[..4]
            .iter()
            .map(|a| balance(&mut bank, a).unwrap())
            .sum();
        assert_eq!(sum, 400);
    }

    // ---- fuel, unknown methods, limits ----

    #[test]
    fn spin_runs_out_of_fuel() {
        for source in [KV, COUNTER, BANK] {
            let mut app = Harness::new(source);
            let state = MapState::default();
            assert_eq!(
                app.app.call("spin", &[], &state, 10_000),
                Err(CallError::OutOfFuel)
            );
            assert_eq!(
                app.app.call("spin", &[], &state, 0),
                Err(CallError::OutOfFuel)
            );
            assert_eq!(app.call("spin", &[]), Err(CallError::OutOfFuel));
        }
        // Too little fuel for a real call fails the same way, with no effect.
        let mut kv = Harness::new(KV);
        let needed = kv.call("set", &[b"k", b"v"]).unwrap().fuel_used;
        let input = encode(&[b"k", b"w"]);
        assert_eq!(
            kv.app.call("set", &input, &kv.state, needed - 1),
            Err(CallError::OutOfFuel)
        );
        assert_eq!(
            kv.app
                .call("set", &input, &kv.state, needed)
                .unwrap()
                .fuel_used,
            needed
        );
    }

    #[test]
    fn unknown_methods() {
        let mut probe = Harness::new(PROBE);
        for name in [
            "nope",
            "memory",
            "not_a_method",
            "neither",
            "a_global",
            "ctx:global:0",
            "",
        ] {
            assert_eq!(
                probe.call_raw(name, &[]),
                Err(CallError::UnknownMethod(name.to_owned()))
            );
        }
        assert!(!probe.app.methods().iter().any(|m| m.starts_with("ctx:")));
    }

    #[test]
    fn call_limits() {
        let mut kv = Harness::new(KV);
        let long_name = "m".repeat(METHOD_NAME_BYTES_MAX + 1);
        assert!(matches!(
            kv.call_raw(&long_name, &[]),
            Err(CallError::LimitExceeded(_))
        ));
        let input = vec![0u8; INPUT_BYTES_MAX + 1];
        assert_eq!(
            kv.call_raw("set", &input),
            Err(CallError::LimitExceeded(
                "input of 65537 bytes exceeds INPUT_BYTES_MAX 65536".into()
            ))
        );
        assert!(matches!(
            kv.app.call("get", &[], &kv.state, CALL_FUEL_MAX + 1),
            Err(CallError::BadInput(_))
        ));
    }

    #[test]
    fn host_limits() {
        let mut probe = Harness::new(PROBE);
        assert_eq!(
            probe.probe("write_huge", &[]),
            Err(CallError::LimitExceeded(
                "value of 70000 bytes exceeds VALUE_BYTES_MAX 65536".into()
            ))
        );
        probe.probe("write_n", &[CALL_WRITES_MAX as i32]).unwrap();
        assert_eq!(probe.state.0.len(), CALL_WRITES_MAX);
        assert_eq!(
            probe.probe("write_n", &[CALL_WRITES_MAX as i32 + 1]),
            Err(CallError::LimitExceeded(
                "more than CALL_WRITES_MAX 1024 distinct keys written".into()
            ))
        );
        // Rewriting a key does not count twice.
        probe.probe("sequence", &[]).unwrap();

        let ok = probe
            .probe("log", &[0x2000, 5, CALL_LOGS_MAX as i32])
            .unwrap();
        assert_eq!(ok.logs, vec!["hello".to_owned(); CALL_LOGS_MAX]);
        assert!(matches!(
            probe.probe("log", &[0x2000, 5, CALL_LOGS_MAX as i32 + 1]),
            Err(CallError::LimitExceeded(_))
        ));
        assert!(matches!(
            probe.probe("log", &[0, LOG_LINE_BYTES_MAX as i32 + 1, 1]),
            Err(CallError::LimitExceeded(_))
        ));
        let ret = probe.probe("ret", &[0, RETURN_BYTES_MAX as i32]).unwrap();
        assert_eq!(ret.return_value.len(), RETURN_BYTES_MAX);
        assert!(matches!(
            probe.probe("ret", &[0, RETURN_BYTES_MAX as i32 + 1]),
            Err(CallError::LimitExceeded(_))
        ));
    }

    #[test]
    fn recursion_traps_deterministically() {
        let mut probe = Harness::new(PROBE);
        assert_eq!(
            probe.probe("recurse", &[]),
            Err(CallError::Trap("call stack exhausted".into()))
        );
    }

    // ---- memory safety ----

    #[test]
    fn out_of_bounds_pointers_trap() {
        let mut probe = Harness::new(PROBE);
        let trap = |r: Result<CallOutput, CallError>| match r {
            Err(CallError::Trap(message)) => message,
            other => panic!("expected a trap, got {other:?}"),
        };
        assert_eq!(
            trap(probe.probe("oob_load", &[])),
            "out of bounds memory access"
        );
        assert_eq!(
            trap(probe.probe("write", &[65530, 0x2000, 5])),
            "storage_write key: bytes [65530, 65562) are outside the memory of 65536 bytes"
        );
        trap(probe.probe("write", &[0x1000, 65535, 2]));
        trap(probe.probe("write", &[-1, 0x2000, 5]));
        assert!(matches!(
            probe.probe("write", &[0x1000, 0x2000, -1]),
            Err(CallError::LimitExceeded(_))
        ));
        trap(probe.probe("read", &[65535, 0x3000, 4]));
        trap(probe.probe("read", &[0x1000, 65535, 4]));
        trap(probe.probe("read", &[0x1000, 0x3000, -1]));
        trap(probe.probe("remove", &[i32::MAX]));
        trap(probe.probe("ret", &[65535, 2]));
        trap(probe.probe("ret", &[i32::MIN, 0]));
        trap(probe.probe("log", &[65535, 2, 1]));
        trap(probe.probe("fail", &[65535, 2]));
        trap(probe.probe("input_read", &[65534]));
        assert!(probe.state.0.is_empty());
        // The instance is still usable.
        assert_eq!(returned_i32s(&probe.probe("bump", &[]).unwrap()), [1, 1]);
    }

    // ---- reset ----

    #[test]
    fn every_call_starts_from_the_initial_memory_and_globals() {
        for reset in [None, Some(Reset::Compare), Some(Reset::Rebuild)] {
            let mut probe = Harness::new(PROBE);
            if let Some(reset) = reset {
                probe.app.set_reset(reset);
            }
            for method in [
                "bump",
                "bump_then_trap",
                "bump_then_fail",
                "bump_then_spin",
                "scribble",
                "grow",
                "bump",
                "grow",
            ] {
                let result = probe.probe(method, &[]);
                if method == "bump" {
                    assert_eq!(returned_i32s(&result.unwrap()), [1, 1], "{method}");
                }
                assert_eq!(returned_i32s(&probe.probe("bump", &[]).unwrap()), [1, 1]);
                assert_eq!(returned_i32s(&probe.probe("size", &[]).unwrap()), [1]);
            }
            assert_eq!(returned_i32s(&probe.probe("grow", &[]).unwrap()), [2]);
        }
    }

    #[test]
    fn table_mutations_get_a_fresh_instance_every_call() {
        let source = r#"
        (module
          (import "env" "value_return" (func $value_return (param i32 i32)))
          (memory (export "memory") 1)
          (table $t 2 funcref)
          (elem declare func $one $two)
          (type $answer (func (result i32)))
          (func $one (result i32) (i32.const 1))
          (func $two (result i32) (i32.const 2))
          (elem (table $t) (i32.const 0) func $one)
          ;; Returns what slot 0 holds, then points it at $two.
          (func (export "swap")
            (i32.store (i32.const 0) (call_indirect $t (type $answer) (i32.const 0)))
            (table.set $t (i32.const 0) (ref.func $two))
            (call $value_return (i32.const 0) (i32.const 4))))
        "#;
        let mut app = Harness::new(source);
        assert_eq!(app.app.reset, Reset::Rebuild);
        for _ in 0..3 {
            assert_eq!(
                app.call_raw("swap", &[]).unwrap().return_value,
                1i32.to_le_bytes()
            );
        }
        assert_eq!(
            Harness::new(PROBE).app.reset,
            Reset::Tracked { chunk_shift: 10 }
        );
    }

    #[test]
    fn fuel_used_does_not_depend_on_history_or_reset() {
        let run = |reset: Option<Reset>, warm_up: bool| {
            let mut kv = Harness::new(KV);
            if let Some(reset) = reset {
                kv.app.set_reset(reset);
            }
            kv.call("set", &[b"a", b"1"]).unwrap();
            if warm_up {
                for _ in 0..3 {
                    kv.call("get", &[b"a"]).unwrap();
                    kv.call("set", &[b"b", &[9; 70_00]]).unwrap();
                    kv.call("get", &[b"b"]).unwrap();
                }
            }
            kv.call("get", &[b"a"]).unwrap()
        };
        let first = run(None, false);
        assert_eq!(first, run(None, true));
        for reset in [Reset::Compare, Reset::Rebuild] {
            assert_eq!(first, run(Some(reset), false));
            assert_eq!(first, run(Some(reset), true));
        }
    }

    // ---- writes ----

    #[test]
    fn writes_are_sorted_deduplicated_and_visible_to_later_reads() {
        let mut probe = Harness::new(PROBE);
        let out = probe.probe("sequence", &[]).unwrap();
        assert_eq!(
            out.writes,
            vec![
                (probe_key(1), Some(b"x".to_vec())),
                (probe_key(2), None),
                (probe_key(3), Some(b"hello".to_vec())),
            ]
        );
        assert_eq!(out.return_value, b"x", "the call reads its own last write");
    }

    #[test]
    fn storage_read_and_remove_semantics() {
        let mut probe = Harness::new(PROBE);
        // Absent: -1 and nothing copied.
        let absent = probe.probe("read", &[0x1000, 0x3000, 4]).unwrap();
        assert_eq!(returned_i32s(&absent), [-1, 0]);
        probe.probe("write", &[0x1000, 0x2000, 5]).unwrap();
        // From the state: the full length, at most `cap` bytes copied.
        let short = probe.probe("read", &[0x1000, 0x3000, 2]).unwrap();
        assert_eq!(short.return_value, [5, 0, 0, 0, b'h', b'e']);
        let long = probe.probe("read", &[0x1000, 0x3000, 8]).unwrap();
        assert_eq!(
            long.return_value,
            [5, 0, 0, 0, b'h', b'e', b'l', b'l', b'o', 0, 0, 0]
        );
        assert_eq!(
            probe.probe("read", &[0x1000, 0, 0]).unwrap().return_value[..4],
            [5, 0, 0, 0]
        );
        // Remove: 1 if it existed (in the state), 0 if not.
        let removed = probe.probe("remove", &[0x1000]).unwrap();
        assert_eq!(returned_i32s(&removed), [1]);
        assert_eq!(removed.writes, vec![(probe_key(1), None)]);
        assert_eq!(
            returned_i32s(&probe.probe("remove", &[0x1000]).unwrap()),
            [0]
        );
        assert!(probe.state.0.is_empty());
    }

    #[test]
    fn failed_calls_have_no_effect() {
        let mut probe = Harness::new(PROBE);
        assert_eq!(probe.probe("write_then_fail", &[]), app_failed("hello"));
        assert_eq!(
            probe.probe("write_then_trap", &[]),
            Err(CallError::Trap(
                "wasm `unreachable` instruction executed".into()
            ))
        );
        assert!(probe.state.0.is_empty());
        // Nothing leaks into the next call's output either.
        let next = probe.probe("ret_twice", &[]).unwrap();
        assert!(next.writes.is_empty() && next.logs.is_empty());
        assert_eq!(next.return_value, b"x", "the last value_return wins");
    }

    #[test]
    fn fail_message_is_bounded_and_lossy() {
        let mut probe = Harness::new(PROBE);
        match probe.probe("fail", &[0, LOG_LINE_BYTES_MAX as i32 * 4]) {
            Err(CallError::AppFailed(message)) => assert_eq!(message.len(), LOG_LINE_BYTES_MAX),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn input_functions() {
        let mut probe = Harness::new(PROBE);
        let out = probe.call_raw("input_len", &[1, 2, 3]).unwrap();
        assert_eq!(returned_i32s(&out), [3]);
    }

    #[test]
    fn tail_calls_to_state_functions_work() {
        // A method is `() -> ()`, so it cannot tail-call `storage_read` (which
        // returns i32) itself: a tail call to it always returns into a wasm
        // frame, where the call can be resumed.
        let mut probe = Harness::new(PROBE);
        assert_eq!(returned_i32s(&probe.probe("tail_read", &[]).unwrap()), [-1]);
        probe.probe("write", &[0x1000, 0x2000, 5]).unwrap();
        assert_eq!(returned_i32s(&probe.probe("tail_read", &[]).unwrap()), [5]);
    }

    #[test]
    fn nan_results_are_canonical() {
        // Needs wasmi's `deterministic` feature: without it a NaN's sign bit
        // is whatever the CPU produces (x86 and ARM differ).
        let mut probe = Harness::new(PROBE);
        assert_eq!(
            returned_i32s(&probe.probe("nan", &[]).unwrap()),
            [0x7fc0_0000]
        );
    }

    #[test]
    fn calls_are_deterministic() {
        let run = || {
            let mut bank = Harness::new(BANK);
            vec![
                bank.call("open", &[b"a", &u64_arg(10)]),
                bank.call("open", &[b"b", &u64_arg(10)]),
                bank.call("transfer", &[b"a", b"b", &u64_arg(3)]),
                bank.call("transfer", &[b"a", b"b", &u64_arg(30)]),
                bank.call("spin", &[]),
            ]
        };
        assert_eq!(run(), run());
    }

    // ---- compiling ----

    #[test]
    fn sources_and_compile_errors() {
        let binary = wasm_from_source(KV.as_bytes()).unwrap();
        assert!(binary.starts_with(WASM_MAGIC));
        assert_eq!(wasm_from_source(&binary).unwrap(), binary);
        assert_eq!(App::compile(KV.as_bytes()).err(), Some(AppError::NotWasm));
        assert_eq!(wasm_from_source(&[0xff, 0xfe]), Err(AppError::NotWasm));
        assert!(matches!(
            wasm_from_source(b"(module"),
            Err(AppError::Text(_))
        ));
        assert!(matches!(
            App::compile(b"\0asm\x01\0\0\0\x05"),
            Err(AppError::Invalid(_))
        ));
        let too_large = vec![0u8; APP_BYTES_MAX + 1];
        assert_eq!(
            App::compile(&too_large).err(),
            Some(AppError::TooLarge {
                bytes: APP_BYTES_MAX + 1,
                max: APP_BYTES_MAX
            })
        );
        let check = |source: &str| wasm_from_source(source.as_bytes()).err();
        assert_eq!(check("(module)"), Some(AppError::MissingMemoryExport));
        assert_eq!(
            check("(module (memory (export \"mem\") 1))"),
            Some(AppError::MissingMemoryExport)
        );
        assert_eq!(
            check("(module (import \"wasi\" \"fd_write\" (func)) (memory (export \"memory\") 1))"),
            Some(AppError::UnsupportedImport {
                module: "wasi".into(),
                name: "fd_write".into()
            })
        );
        assert_eq!(
            check("(module (import \"env\" \"memory\" (memory 1)) (export \"memory\" (memory 0)))"),
            Some(AppError::UnsupportedImport {
                module: "env".into(),
                name: "memory".into()
            })
        );
        assert_eq!(
            check("(module (memory (export \"memory\") 1) (func (export \"ctx:x\")))"),
            Some(AppError::ReservedExport("ctx:x".into()))
        );
        assert_eq!(
            check("(module (memory (export \"memory\") 1) (func $s) (start $s))"),
            Some(AppError::StartFunction)
        );
        assert!(matches!(
            check("(module (memory (export \"memory\") 1) (memory 1))"),
            Some(AppError::Invalid(_))
        ));
        // A wrong signature for a host function is caught at compile time.
        assert!(matches!(
            check("(module (import \"env\" \"fail\" (func)) (memory (export \"memory\") 1))"),
            Some(AppError::Instantiate(_))
        ));
        // An initial memory above the limit.
        assert!(matches!(
            check("(module (memory (export \"memory\") 300))"),
            Some(AppError::Instantiate(_))
        ));
    }

    #[test]
    fn memory_growth_is_bounded() {
        let source = r#"
        (module
          (import "env" "value_return" (func $value_return (param i32 i32)))
          (memory (export "memory") 1)
          (func (export "grow_a_lot")
            (i32.store (i32.const 0) (memory.grow (i32.const 1000)))
            (call $value_return (i32.const 0) (i32.const 4))))
        "#;
        let mut app = Harness::new(source);
        assert_eq!(
            app.call_raw("grow_a_lot", &[]).unwrap().return_value,
            (-1i32).to_le_bytes()
        );
    }

    #[test]
    fn mutable_globals_are_exported_under_reserved_names_only() {
        let wasm = wat::parse_str(PROBE).unwrap();
        let analysis = analyze(&wasm).unwrap();
        assert_eq!(analysis.mutable_globals, [0, 1]);
        assert_eq!(analysis.globals_len, 3);
        assert!(!analysis.mutates_instance && !analysis.untrackable);
        for track in [None, Some(10)] {
            let rewritten = rewrite(&wasm, &analysis, track).unwrap();
            let module = Module::new(&new_engine(), &rewritten).unwrap();
            for name in ["ctx:global:0", "ctx:global:1"] {
                assert!(matches!(
                    module.get_export(name),
                    Some(ExternType::Global(_))
                ));
            }
            assert!(module.get_export("ctx:global:2").is_none(), "immutable");
            assert_eq!(module.get_export(DIRTY_EXPORT).is_some(), track.is_some());
        }
    }

    #[test]
    fn the_bundled_apps_are_tracked() {
        for source in [KV, COUNTER, BANK] {
            let app = Harness::new(source).app;
            assert_eq!(app.reset, Reset::Tracked { chunk_shift: 10 });
            assert!(app.methods().contains(&"spin".to_owned()));
        }
    }

    /// A module whose method `poke` performs the writes its input lists, to
    /// check that dirty tracking sees every kind of write. Each record is 16
    /// bytes: kind (i32), address (i32), value (i64).
    fn poker(pages: u32) -> String {
        format!(
            r#"
        (module
          (import "env" "input_len" (func $input_len (result i32)))
          (import "env" "input_read" (func $input_read (param i32)))
          (import "env" "value_return" (func $value_return (param i32 i32)))
          (memory (export "memory") {pages})
          (global $calls (mut i32) (i32.const 0))
          (data $passive "passive-bytes!")
          (data (i32.const 100) "initial")
          (data (i32.const 65530) "straddling")
          (func $poke (param $kind i32) (param $a i32) (param $v i64)
            (block $done
            (block $b13 (block $b12 (block $b11 (block $b10 (block $b9 (block $b8 (block $b7
            (block $b6 (block $b5 (block $b4 (block $b3 (block $b2 (block $b1 (block $b0
              (br_table $b0 $b1 $b2 $b3 $b4 $b5 $b6 $b7 $b8 $b9 $b10 $b11 $b12 $b13 $done
                (local.get $kind)))
              (i32.store (local.get $a) (i32.wrap_i64 (local.get $v))) (br $done))
              (i64.store (local.get $a) (local.get $v)) (br $done))
              (f32.store (local.get $a) (f32.reinterpret_i32 (i32.wrap_i64 (local.get $v)))) (br $done))
              (f64.store (local.get $a) (f64.reinterpret_i64 (local.get $v))) (br $done))
              (i32.store8 (local.get $a) (i32.wrap_i64 (local.get $v))) (br $done))
              (i32.store16 (local.get $a) (i32.wrap_i64 (local.get $v))) (br $done))
              (i64.store8 (local.get $a) (local.get $v)) (br $done))
              (i64.store16 (local.get $a) (local.get $v)) (br $done))
              (i64.store32 (local.get $a) (local.get $v)) (br $done))
              (memory.fill (local.get $a) (i32.wrap_i64 (local.get $v))
                (i32.wrap_i64 (i64.shr_u (local.get $v) (i64.const 48)))) (br $done))
              (memory.copy (local.get $a) (i32.wrap_i64 (i64.and (local.get $v) (i64.const 0x1ffff)))
                (i32.wrap_i64 (i64.shr_u (local.get $v) (i64.const 48)))) (br $done))
              (memory.init $passive (local.get $a) (i32.const 0)
                (i32.wrap_i64 (i64.rem_u (local.get $v) (i64.const 15)))) (br $done))
              (i32.store offset=1000 (local.get $a) (i32.wrap_i64 (local.get $v))) (br $done))
              (i64.store offset=65530 (local.get $a) (local.get $v))))
          (func (export "poke")
            (local $p i32) (local $end i32)
            (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
            (local.set $p (i32.const 0x10000))
            (local.set $end (i32.add (local.get $p) (call $input_len)))
            (call $input_read (local.get $p))
            (block $out
              (loop $next
                (br_if $out (i32.ge_u (local.get $p) (local.get $end)))
                (call $poke (i32.load (local.get $p)) (i32.load offset=4 (local.get $p))
                  (i64.load offset=8 (local.get $p)))
                (local.set $p (i32.add (local.get $p) (i32.const 16)))
                (br $next))))
          ;; Returns 64 KiB of memory from the address in the input, and the
          ;; number of calls seen by this instance (always 0 after a reset).
          (func (export "dump")
            (call $input_read (i32.const 0))
            (i32.store (i32.const 4) (global.get $calls))
            (call $value_return (i32.load (i32.const 0)) (i32.const 65536))))
        "#
        )
    }

    fn poke_records(next: &mut impl FnMut(u64) -> u64, memory_bytes: u64) -> Vec<u8> {
        let mut input = Vec::new();
        for _ in 0..1 + next(12) {
            let kind = next(15) as u32;
            // Mostly in bounds, some near the end, a few beyond it.
            let address = match next(4) {
                0 => memory_bytes - 1 - next(64),
                1 => (next(64) + 1) * 1024 - next(9),
                _ => next(memory_bytes + 32),
            } as u32;
            let value = next(u64::MAX) ^ (next(3000) << 48);
            input.extend_from_slice(&kind.to_le_bytes());
            input.extend_from_slice(&address.to_le_bytes());
            input.extend_from_slice(&value.to_le_bytes());
        }
        input
    }

    fn check_tracking(pages: u32, chunk_shift: u32) {
        let mut app = Harness::new(&poker(pages));
        assert_eq!(app.app.reset, Reset::Tracked { chunk_shift });
        let memory_bytes = u64::from(pages) * 65536;
        let dumps = |app: &mut Harness| -> Vec<Vec<u8>> {
            (0..memory_bytes / 65536)
                .map(|page| {
                    let out = app.call_raw("dump", &((page * 65536) as u32).to_le_bytes());
                    out.unwrap().return_value
                })
                .collect()
        };
        let initial = dumps(&mut app);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(pages);
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n.max(1)
        };
        let (mut ok, mut trapped) = (0, 0);
        for _ in 0..150 {
            let input = poke_records(&mut next, memory_bytes);
            match app.call_raw("poke", &input) {
                Ok(_) => ok += 1,
                Err(CallError::Trap(_)) => trapped += 1,
                Err(other) => panic!("{other:?}"),
            }
            // (In debug builds the reset also checks the whole memory.)
            assert_eq!(dumps(&mut app), initial);
        }
        assert!(ok > 20 && trapped > 20, "ok {ok}, trapped {trapped}");
    }

    #[test]
    fn dirty_tracking_sees_every_kind_of_write() {
        check_tracking(2, 11);
    }

    #[test]
    fn dirty_tracking_with_a_large_memory() {
        check_tracking(17, 15);
    }

    #[test]
    fn chunk_arithmetic() {
        assert_eq!(chunk_shift(0), 10);
        assert_eq!(chunk_shift(65536), 10);
        assert_eq!(chunk_shift(65537), 11);
        assert_eq!(chunk_shift(17 * 65536), 15);
        assert_eq!(chunk_shift(APP_MEMORY_BYTES_MAX as u64), 18);
        assert_eq!(chunk_mask(&(0..0), 10), 0);
        assert_eq!(chunk_mask(&(0..1), 10), 1);
        assert_eq!(chunk_mask(&(1023..1025), 10), 0b11);
        assert_eq!(chunk_mask(&(1024..4096), 10), 0b1110);
        assert_eq!(chunk_mask(&(0..usize::MAX), 10), u64::MAX);
        assert_eq!(chunk_mask(&(64 << 10..65 << 10), 10), 0);
    }

    #[test]
    fn functions_with_too_many_locals_fall_back_to_compare() {
        // wasmi allows 30 000 locals: the 6 the instrumentation adds to
        // these 29 996 break the limit.
        let locals = "i32 ".repeat(29_996);
        let source = format!(
            r#"(module
              (import "env" "value_return" (func $value_return (param i32 i32)))
              (memory (export "memory") 1)
              (func (export "many") (local {locals})
                (i32.store (i32.const 8) (i32.add (i32.load (i32.const 8)) (i32.const 1)))
                (call $value_return (i32.const 8) (i32.const 4))))"#
        );
        let mut app = Harness::new(&source);
        assert_eq!(app.app.reset, Reset::Compare);
        for _ in 0..3 {
            assert_eq!(
                app.call_raw("many", &[]).unwrap().return_value,
                1i32.to_le_bytes()
            );
        }
    }

    #[test]
    fn instrumentation_keeps_locals_and_params_apart() {
        // Params and locals of every type around stores: the added scratch
        // locals must not overlap them.
        let source = r#"(module
          (import "env" "value_return" (func $value_return (param i32 i32)))
          (memory (export "memory") 1)
          (func $f (param $a i32) (param $b i64) (param $c f64) (result i64)
            (local $x i32) (local $y i64) (local $z f32)
            (local.set $x (i32.const 7))
            (local.set $y (i64.const 11))
            (local.set $z (f32.const 2))
            (i64.store (i32.const 16) (local.get $b))
            (f64.store (local.get $a) (local.get $c))
            (memory.fill (i32.const 40) (i32.const 1) (i32.const 8))
            (i64.add
              (i64.add (i64.extend_i32_u (local.get $x)) (local.get $y))
              (i64.add (i64.load (i32.const 16)) (i64.trunc_f32_u (local.get $z)))))
          (func (export "run")
            (i64.store (i32.const 0) (call $f (i32.const 24) (i64.const 100) (f64.const 1.5)))
            (call $value_return (i32.const 0) (i32.const 48))))"#;
        let mut app = Harness::new(source);
        assert_eq!(app.app.reset, Reset::Tracked { chunk_shift: 10 });
        let out = app.call_raw("run", &[]).unwrap();
        assert_eq!(out.return_value[..8], 120u64.to_le_bytes());
        assert_eq!(out.return_value[16..24], 100u64.to_le_bytes());
        assert_eq!(out.return_value[24..32], 1.5f64.to_le_bytes());
        assert_eq!(out.return_value[40..48], [1; 8]);
        assert_eq!(out, app.call_raw("run", &[]).unwrap());
    }

    #[test]
    fn leb128_round_trips() {
        for value in [0, 1, 127, 128, 300, 16_383, 16_384, u32::MAX] {
            let mut bytes = Vec::new();
            write_leb_u32(&mut bytes, value);
            assert_eq!(read_leb_u32(&bytes), Some((value, bytes.len())));
        }
        assert_eq!(read_leb_u32(&[0x80, 0x80]), None);
        assert_eq!(read_leb_u32(&[0xff, 0xff, 0xff, 0xff, 0x7f]), None);
        // A padded encoding is read too.
        assert_eq!(read_leb_u32(&[0x85, 0x80, 0x00]), Some((5, 3)));
        let sleb = |value: i64| {
            let mut bytes = Vec::new();
            write_leb_i64(&mut bytes, value);
            bytes
        };
        assert_eq!(sleb(0), [0x00]);
        assert_eq!(sleb(63), [0x3f]);
        assert_eq!(sleb(64), [0xc0, 0x00]);
        assert_eq!(sleb(-1), [0x7f]);
        assert_eq!(sleb(-64), [0x40]);
        assert_eq!(sleb(-65), [0xbf, 0x7f]);
        assert_eq!(sleb(u32::MAX.into()), [0xff, 0xff, 0xff, 0xff, 0x0f]);
    }

    #[test]
    fn app_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<App>();
    }
}
