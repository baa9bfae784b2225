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
//!   writes, and only those are restored (see `reset::Reset`).
//! - **No effect on failure.** A call only *proposes* writes: they are
//!   buffered in an overlay and returned, sorted by key, in [`CallOutput`].
//!   A failed call returns no writes, so it has no effect.
//! - **No panic on anything the app does.** Out-of-bounds pointers trap,
//!   exceeded limits are [`CallError::LimitExceeded`], endless loops run out
//!   of fuel.
//! - **No app can abort, hang or exhaust the process.** Every call ends as
//!   a result or a [`CallError`]: fuel bounds its time, the store's limits
//!   its memory and tables, [`RECURSION_DEPTH_MAX`] and [`STACK_BYTES_MAX`]
//!   its recursion, and its native stack use is bounded whatever it does
//!   ([`CALL_NATIVE_STACK_BYTES_MIN`]).
//! - **The module's semantics are its own.** The rewrite for the reset
//!   changes no frame size and adds no call, so what a module may do (how
//!   deep it recurses, what it computes) is what plain wasmi gives it; only
//!   fuel differs, and that is part of [`RUNTIME_VERSION`]. Host functions
//!   return their results directly (the state is lent to the store for the
//!   call), so tail calls to them work like any other call.
//!
//! The submodules: `host` (the host functions and the per-store state),
//! `analysis` (the ABI checks and what the code writes), `instrument` (the
//! rewrite for the reset) and `reset` (putting an instance back after a
//! call).

mod analysis;
mod host;
mod instrument;
mod reset;
#[cfg(test)]
mod tests;

use analysis::*;
use host::*;
use instrument::*;
use reset::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;

use wasmi::{
    Caller, CompilationMode, Config, Engine, Extern, ExternType, Global, Instance, Linker, Memory,
    Module, Mutability, Store, StoreLimits, StoreLimitsBuilder, TrapCode, Val,
};
use wasmparser::{ExternalKind, Operator, Parser, Payload, TypeRef};

use crate::ids::Key;
use crate::limits::{
    APP_BYTES_MAX, CALL_FUEL_MAX, CALL_LOGS_MAX, CALL_WRITES_MAX, INPUT_BYTES_MAX,
    LOG_LINE_BYTES_MAX, METHOD_NAME_BYTES_MAX, RETURN_BYTES_MAX, VALUE_BYTES_MAX,
};

/// The version of how a call runs: the fuel schedule (wasmi's metering and
/// the host functions' charges below), the module's limits, and the
/// instrumentation for the reset. Two builds with the same version give
/// every call the same outcome and the same fuel; a change to any of these
/// must bump it. Every context's genesis names the version its calls run
/// as, and a node refuses a context of another version rather than
/// execute its history differently (`ReplicaError::RuntimeVersion`).
/// `runtime::tests::the_runtime_version_pins_fuel_and_outcomes` fails when
/// the schedule changes without it.
///
/// Version 1: wasmi 2.0 with fuel and its loop dispatch, the limits of
/// `docs/ABI.md`, the store and bulk-write instrumentation through scratch
/// globals.
pub const RUNTIME_VERSION: u32 = 1;

/// Linear memory one application instance may grow to. A `memory.grow`
/// beyond it returns -1, as the WebAssembly specification allows.
pub const APP_MEMORY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Tables of one application instance, and the elements of one table.
pub const APP_TABLES_MAX: usize = 16;
pub const APP_TABLE_ELEMENTS_MAX: usize = 64 * 1024;

/// Nested calls one call may make (the method's frame included): a deeper
/// recursion traps with "call stack exhausted". The instrumentation for the
/// reset adds no frame, so a module gets exactly this depth.
pub const RECURSION_DEPTH_MAX: usize = 1000;

/// Bytes of wasmi's value stack one call may use: every frame takes 8 bytes
/// per local (parameters included) and per operand of its deepest point.
/// The instrumentation adds neither locals nor operand depth, so a module's
/// frames are the size plain wasmi gives them.
pub const STACK_BYTES_MAX: usize = 1_000_000;

/// The native stack a thread must have to compile an app and run its calls.
/// Whatever the app does, a call uses a bounded amount of native stack:
/// WebAssembly calls and recursion live on wasmi's own stack (bounded by
/// [`RECURSION_DEPTH_MAX`] and [`STACK_BYTES_MAX`]), host functions never
/// call back into the app, and wasmi is built with its loop dispatch
/// (`portable-dispatch`; its default tail-call dispatch leaks native stack
/// on some paths, such as every refused `memory.grow`, which let one method
/// abort the process).
///
/// Measured (`calls_run_on_the_minimum_native_stack` at decreasing sizes):
/// 64 KiB suffice with wasmi optimized (the workspace's test and release
/// profiles), 1 MiB with everything unoptimized. Rust's spawned threads and
/// tokio's workers have 2 MiB by default; the drivers set theirs explicitly.
pub const CALL_NATIVE_STACK_BYTES_MIN: usize = 2 * 1024 * 1024;

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
    /// Whether the application has a method `method` to call: a call of
    /// another is refused before it becomes a transaction. An application
    /// that cannot tell answers `true` (every call then runs, and one of a
    /// method it lacks fails everywhere alike).
    fn has_method(&self, method: &str) -> bool {
        let _ = method;
        true
    }

    fn call(
        &mut self,
        method: &str,
        input: &[u8],
        state: &dyn StateRead,
        fuel: u64,
    ) -> Result<CallOutput, CallError>;
}

impl Application for App {
    fn has_method(&self, method: &str) -> bool {
        self.methods.contains(method)
    }

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
        Self::compile_for(wasm, None)
    }

    /// Compiles `wasm` rewritten for `reset` rather than for the cheapest
    /// correct one (the caller knows it is correct for this module), so a
    /// test can run the same module under each reset.
    #[cfg(test)]
    pub(crate) fn compile_with_reset(wasm: &[u8], reset: Reset) -> Result<App, AppError> {
        Self::compile_for(wasm, Some(reset))
    }

    fn compile_for(wasm: &[u8], forced: Option<Reset>) -> Result<App, AppError> {
        check_size(wasm.len())?;
        if !wasm.starts_with(WASM_MAGIC) {
            return Err(AppError::NotWasm);
        }
        let engine = new_engine();
        Module::validate(&engine, wasm).map_err(|e| AppError::Invalid(e.to_string()))?;
        let analysis = analyze(wasm)?;
        let (module, reset) = match forced {
            None => compile_module(&engine, wasm, &analysis)?,
            Some(reset) => {
                let track = match reset {
                    Reset::Tracked { chunk_shift } => Some(chunk_shift),
                    Reset::Compare | Reset::Rebuild => None,
                };
                let rewritten = rewrite(wasm, &analysis, track)?;
                let module = Module::new(&engine, &rewritten[..])
                    .map_err(|e| AppError::Invalid(e.to_string()))?;
                (module, reset)
            }
        };
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

    /// A new instance in a new store, in the module's initial state.
    fn instantiate(&self) -> Result<Live, String> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(APP_MEMORY_BYTES_MAX)
            .table_elements(APP_TABLE_ELEMENTS_MAX)
            .tables(APP_TABLES_MAX)
            .memories(1)
            .instances(1)
            .build();
        let chunk_shift = match self.reset {
            Reset::Tracked { chunk_shift } => Some(chunk_shift),
            Reset::Compare | Reset::Rebuild => None,
        };
        let host = Host::new(limits, chunk_shift);
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

/// Executes the method to completion, with `state` lent to the host
/// functions. Returns the fuel left.
fn execute(
    live: &mut Live,
    method: &str,
    state: &dyn StateRead,
    fuel: u64,
) -> Result<u64, CallError> {
    let func = live
        .instance
        .get_func(&live.store, method)
        .ok_or_else(|| CallError::UnknownMethod(method.to_owned()))?;
    let store = &mut live.store;
    store
        .set_fuel(fuel)
        .map_err(|e| CallError::Trap(format!("cannot set fuel: {e}")))?;
    lend_state(store, state, |store| func.call(&mut *store, &[], &mut []))
        .map_err(|error| call_error(&error, store.data_mut()))?;
    store
        .get_fuel()
        .map_err(|e| CallError::Trap(format!("cannot read fuel: {e}")))
}

// ---------------------------------------------------------------------------
// Compile time: the engine configuration and the choice of reset.

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
        .wasm_memory64(false)
        // The module's own limits (docs/ABI.md), pinned rather than left to
        // wasmi's defaults: a deeper recursion traps, the same everywhere.
        .set_max_recursion_depth(RECURSION_DEPTH_MAX)
        .set_max_stack_height(STACK_BYTES_MAX);
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
        // The instrumentation adds no local and no operand depth, so this
        // fails only if the added code breaks some limit of wasmi's
        // translation (none is known): then compare instead.
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
