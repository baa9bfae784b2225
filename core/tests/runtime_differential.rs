//! A differential test of the application runtime (`ctx_core::runtime`).
//!
//! Random ABI-conforming modules (only the `env` host functions of
//! `docs/ABI.md` imported, one 32-bit memory exported as `"memory"`, no
//! start function) each get a sequence of calls, and every call runs on
//! three runners:
//!
//! 1. *reused*: one [`App`] for the whole sequence (the instance the runtime
//!    resets after each call);
//! 2. *fresh*: a fresh [`App::compile`] of the same bytes for each call (a
//!    fresh instance of the same instrumented code);
//! 3. *plain*: the original module on a fresh plain wasmi instance per call,
//!    with the ABI's host functions implemented here from `docs/ABI.md`,
//!    independently of the runtime's code.
//!
//! What must hold: reused and fresh agree exactly, fuel included; all three
//! agree on the outcome (ok, out of fuel, trap, app failed, limit exceeded,
//! unknown method), and on the writes, the return value and the log lines of
//! a successful call. Error messages are compared exactly too: wasm traps are
//! wasmi's trap-code messages on both sides, and the plain host functions
//! word their traps and limit errors as the ABI's outcomes do. Fuel is not
//! compared with plain wasmi: the runtime's instrumentation for the reset
//! costs fuel. See [`OOF_PLAIN_SHARE_MIN`] for the rule near exhaustion.
//!
//! The modules come in two families, each its own test:
//!
//! - `wasm-smith`'s, with `dump:` wrapper methods that return or store the
//!   whole memory and the globals after the method (see [`wrapper`]);
//! - *poke* modules built here to aim at the reset (see [`run_poke_module`]):
//!   every store and bulk write, at every chunk of the tracked reset and its
//!   boundaries, each call dumping the memory it starts with, so a byte the
//!   reset missed is a difference between the reused and the fresh instance.
//!
//! Bounded in `cargo test` ([`MODULES_DEFAULT`] wasm-smith modules,
//! [`POKE_MODULES_DEFAULT`] poke modules); more with `CTX_DIFF_MODULES=N`
//! (for each family, seeds from `CTX_DIFF_FIRST`, default 0). One seed,
//! with every call printed: `CTX_DIFF_SEED=S cargo test -p ctx-core --test
//! runtime_differential random -- --nocapture` (`poke` for the poke
//! module of that seed).
//!
//! Beside the random part, hand-written cases pin down behaviours the
//! runtime got wrong before (findings 1 to 3 of issue 12), which the random
//! part did not reach; each test's comment says what went wrong.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::ops::Range;
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use ctx_core::Key;
use ctx_core::limits::{
    CALL_FUEL_MAX, CALL_LOGS_MAX, CALL_WRITES_MAX, INPUT_BYTES_MAX, LOG_LINE_BYTES_MAX,
    METHOD_NAME_BYTES_MAX, RETURN_BYTES_MAX, VALUE_BYTES_MAX,
};
use ctx_core::runtime::{
    APP_MEMORY_BYTES_MAX, APP_TABLE_ELEMENTS_MAX, APP_TABLES_MAX, App, AppError, CallError,
    CallOutput, StateRead,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use wasm_encoder::SectionId;
use wasm_encoder::reencode::{self, Reencode};
use wasmi::{
    Caller, CompilationMode, Config, Engine, Extern, ExternType, Linker, Memory, Module, Store,
    StoreLimits, StoreLimitsBuilder,
};

// ---------------------------------------------------------------------------
// The ABI, as `docs/ABI.md` states it.

/// Fuel of a host function call, of a storage one, and bytes copied per unit.
const HOST_CALL_FUEL: u64 = 20;
const STORAGE_CALL_FUEL: u64 = 100;
const HOST_BYTES_PER_FUEL: u64 = 64;

/// The host functions of module `env`, with exactly their ABI signatures.
const ENV_IMPORTS: &str = r#"
(module
  (import "env" "input_len"      (func (result i32)))
  (import "env" "input_read"     (func (param i32)))
  (import "env" "storage_read"   (func (param i32 i32 i32) (result i32)))
  (import "env" "storage_write"  (func (param i32 i32 i32)))
  (import "env" "storage_remove" (func (param i32) (result i32)))
  (import "env" "value_return"   (func (param i32 i32)))
  (import "env" "log"            (func (param i32 i32)))
  (import "env" "fail"           (func (param i32 i32))))
"#;

const ENV_IMPORT_COUNT: usize = 8;

// ---------------------------------------------------------------------------
// The committed state, shared by the three runners.

#[derive(Debug, Clone, Default)]
struct MapState(BTreeMap<Key, Vec<u8>>);

impl StateRead for MapState {
    fn get(&self, key: &Key) -> Option<&[u8]> {
        self.0.get(key).map(Vec::as_slice)
    }
}

impl MapState {
    fn apply(&mut self, writes: &[(Key, Option<Vec<u8>>)]) {
        for (key, value) in writes {
            match value {
                Some(value) => self.0.insert(*key, value.clone()),
                None => self.0.remove(key),
            };
        }
    }
}

// ---------------------------------------------------------------------------
// Runner 3: plain wasmi, with the host functions written from the ABI.

/// A plain wasmi engine configured as the ABI says the runtime's is: fuel
/// metering, eager compilation (a call's cost never depends on earlier
/// calls), no start function, one 32-bit memory, and (through the
/// workspace's `deterministic` feature of wasmi) canonical NaNs. The stack
/// limits are wasmi's defaults, as for the runtime.
fn plain_engine() -> Engine {
    let mut config = Config::default();
    config
        .consume_fuel(true)
        .compilation_mode(CompilationMode::Eager)
        .allow_start_fn(false)
        .wasm_multi_memory(false)
        .wasm_memory64(false);
    Engine::new(&config)
}

fn plain_limits() -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(APP_MEMORY_BYTES_MAX)
        .table_elements(APP_TABLE_ELEMENTS_MAX)
        .tables(APP_TABLES_MAX)
        .memories(1)
        .instances(1)
        .build()
}

/// What one plain call's store carries.
struct PlainHost {
    limits: StoreLimits,
    memory: Option<Memory>,
    input: Vec<u8>,
    /// The committed state the call runs against (a copy).
    state: BTreeMap<Key, Vec<u8>>,
    /// The call's own writes, overlaid on `state` for its reads.
    overlay: BTreeMap<Key, Option<Vec<u8>>>,
    return_value: Vec<u8>,
    logs: Vec<String>,
    /// Why a host function stopped the call.
    abort: Option<CallError>,
}

struct Plain {
    module: Module,
    linker: Linker<PlainHost>,
    /// The methods: exported functions of type `() -> ()`, sorted.
    methods: Vec<String>,
    /// The memory as instantiation leaves it (taken at the first call).
    memory_initial: OnceCell<Vec<u8>>,
}

/// A call's result and the fuel it consumed (also when it failed).
struct Run {
    result: Result<CallOutput, CallError>,
    fuel_used: u64,
    /// What the call changed in the memory it started with, for the
    /// statistics (see [`MemoryChange`]).
    changed: MemoryChange,
}

/// Which chunks of the runtime's tracked reset (of [`reset_chunk_bytes`])
/// a call changed, measured on plain wasmi: the bytes of the initial memory
/// that differ from the initial image when the call ends, however it ends.
#[derive(Debug, Clone, Copy, Default)]
struct MemoryChange {
    /// Bit `c` for chunk `c`.
    chunks: u64,
    /// Whether the last chunk of the memory (which holds its last byte)
    /// changed.
    last_chunk: bool,
}

impl MemoryChange {
    fn of(memory: &[u8], initial: &[u8]) -> MemoryChange {
        let chunk_bytes = reset_chunk_bytes(initial.len() as u64) as usize;
        let mut change = MemoryChange::default();
        let pieces = memory.chunks(chunk_bytes).zip(initial.chunks(chunk_bytes));
        let last = initial.len().div_ceil(chunk_bytes).saturating_sub(1);
        for (chunk, (now, then)) in pieces.enumerate() {
            if now != then {
                assert!(chunk < 64, "64 chunks cover the memory");
                change.chunks |= 1 << chunk;
                change.last_chunk |= chunk == last;
            }
        }
        change
    }
}

/// The chunk size of the runtime's tracked reset for a memory of
/// `memory_bytes`: the smallest power of two of at least 1 KiB such that
/// 64 chunks cover the memory. This restates `chunk_shift` in
/// `core/src/runtime/reset.rs` only to aim writes at chunk boundaries and
/// to count them; if the runtime changes its chunks, the comparisons stay
/// exactly as strong and only the aim gets worse.
fn reset_chunk_bytes(memory_bytes: u64) -> u64 {
    memory_bytes.div_ceil(64).max(1 << 10).next_power_of_two()
}

type Host<T> = Result<T, wasmi::Error>;

impl Plain {
    fn new(wasm: &[u8]) -> Result<Plain, String> {
        let engine = plain_engine();
        let module = Module::new(&engine, wasm).map_err(|e| e.to_string())?;
        let mut methods: Vec<String> = module
            .exports()
            .filter(|e| matches!(e.ty(), ExternType::Func(f) if f.params().is_empty() && f.results().is_empty()))
            .map(|e| e.name().to_owned())
            .collect();
        methods.sort();
        Ok(Plain {
            linker: plain_linker(&engine),
            module,
            methods,
            memory_initial: OnceCell::new(),
        })
    }

    fn new_store(&self, input: &[u8], state: &MapState) -> Store<PlainHost> {
        let host = PlainHost {
            limits: plain_limits(),
            memory: None,
            input: input.to_vec(),
            state: state.0.clone(),
            overlay: BTreeMap::new(),
            return_value: Vec::new(),
            logs: Vec::new(),
            abort: None,
        };
        let mut store = Store::new(self.module.engine(), host);
        store.limiter(|host| &mut host.limits);
        store
    }

    /// Instantiates the module (as a call would), for the compile check.
    fn instantiates(&self) -> Result<(), String> {
        let mut store = self.new_store(&[], &MapState::default());
        self.linker
            .instantiate_and_start(&mut store, &self.module)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn call(&self, method: &str, input: &[u8], state: &MapState, fuel: u64) -> Run {
        let no_fuel = |result| Run {
            result,
            fuel_used: 0,
            changed: MemoryChange::default(),
        };
        if method.len() > METHOD_NAME_BYTES_MAX {
            return no_fuel(Err(CallError::LimitExceeded(format!(
                "method name of {} bytes exceeds METHOD_NAME_BYTES_MAX {METHOD_NAME_BYTES_MAX}",
                method.len()
            ))));
        }
        if input.len() > INPUT_BYTES_MAX {
            return no_fuel(Err(CallError::LimitExceeded(format!(
                "input of {} bytes exceeds INPUT_BYTES_MAX {INPUT_BYTES_MAX}",
                input.len()
            ))));
        }
        assert!(fuel <= CALL_FUEL_MAX);
        if !self.methods.iter().any(|m| m == method) {
            return no_fuel(Err(CallError::UnknownMethod(method.to_owned())));
        }
        let mut store = self.new_store(input, state);
        let instance = match self.linker.instantiate_and_start(&mut store, &self.module) {
            Ok(instance) => instance,
            Err(e) => return no_fuel(Err(CallError::Trap(format!("cannot instantiate: {e}")))),
        };
        let Some(Extern::Memory(memory)) = instance.get_export(&store, "memory") else {
            return no_fuel(Err(CallError::Trap("no memory".into())));
        };
        store.data_mut().memory = Some(memory);
        let memory_initial = self
            .memory_initial
            .get_or_init(|| memory.data(&store).to_vec());
        store.set_fuel(fuel).expect("fuel metering is on");
        let func = instance.get_func(&store, method).expect("a method");
        let outcome = func.call(&mut store, &[], &mut []);
        let fuel_used = fuel - store.get_fuel().expect("fuel metering is on");
        let changed = MemoryChange::of(memory.data(&store), memory_initial);
        let host = store.data_mut();
        let result = match outcome {
            Ok(()) => Ok(CallOutput {
                writes: std::mem::take(&mut host.overlay).into_iter().collect(),
                return_value: std::mem::take(&mut host.return_value),
                logs: std::mem::take(&mut host.logs),
                fuel_used,
            }),
            Err(error) => Err(match host.abort.take() {
                Some(abort) => abort,
                None => match error.as_trap_code() {
                    Some(wasmi::TrapCode::OutOfFuel) => CallError::OutOfFuel,
                    Some(code) => CallError::Trap(code.trap_message().to_owned()),
                    None => CallError::Trap(format!("plain: {error}")),
                },
            }),
        };
        Run {
            result,
            fuel_used,
            changed,
        }
    }
}

/// Stops the call with `error` (the host function's `Err` carries nothing:
/// the error is read back from the store).
fn plain_abort<T>(caller: &mut Caller<'_, PlainHost>, error: CallError) -> Host<T> {
    caller.data_mut().abort = Some(error);
    Err(wasmi::Error::new("stopped by a host function"))
}

/// Runs a host function body; its `CallError` stops the call.
fn plain_host<T>(
    caller: &mut Caller<'_, PlainHost>,
    body: impl FnOnce(&mut Caller<'_, PlainHost>) -> Result<T, CallError>,
) -> Host<T> {
    match body(caller) {
        Ok(value) => Ok(value),
        Err(error) => plain_abort(caller, error),
    }
}

/// Consumes `fuel`; out of fuel consumes all that is left.
fn plain_charge(caller: &mut Caller<'_, PlainHost>, fuel: u64) -> Result<(), CallError> {
    let left = caller.get_fuel().expect("fuel metering is on");
    let after = left.checked_sub(fuel);
    caller
        .set_fuel(after.unwrap_or(0))
        .expect("fuel metering is on");
    after.map(drop).ok_or(CallError::OutOfFuel)
}

fn copy_fuel(bytes: usize) -> u64 {
    bytes as u64 / HOST_BYTES_PER_FUEL
}

fn plain_memory(caller: &Caller<'_, PlainHost>) -> Memory {
    caller
        .data()
        .memory
        .expect("the memory is set before the call")
}

/// `[ptr, ptr + len)` with `ptr` unsigned, or the trap for a range that is
/// not entirely inside the memory.
fn plain_range(
    caller: &Caller<'_, PlainHost>,
    what: &str,
    ptr: i32,
    len: usize,
) -> Result<Range<usize>, CallError> {
    let memory_len = plain_memory(caller).data_size(caller);
    let start = ptr as u32 as usize;
    let end = start + len;
    if end > memory_len {
        return Err(CallError::Trap(format!(
            "{what}: bytes [{start}, {end}) are outside the memory of {memory_len} bytes"
        )));
    }
    Ok(start..end)
}

fn too_long(what: &str, len: usize, name: &str, max: usize) -> CallError {
    CallError::LimitExceeded(format!("{what} of {len} bytes exceeds {name} {max}"))
}

fn writes_exceeded() -> CallError {
    CallError::LimitExceeded(format!(
        "more than CALL_WRITES_MAX {CALL_WRITES_MAX} distinct keys written"
    ))
}

fn key_at(memory: &[u8], range: Range<usize>) -> Key {
    Key(memory[range].try_into().expect("a key range is 32 bytes"))
}

/// The host functions, from the ABI's table. Every one checks in the same
/// order: the base fuel, the limits, the memory ranges, the fuel for the
/// bytes copied, then the effect.
fn plain_linker(engine: &Engine) -> Linker<PlainHost> {
    type C<'a> = Caller<'a, PlainHost>;
    let mut linker = Linker::new(engine);
    linker
        .func_wrap("env", "input_len", |mut c: C<'_>| -> Host<i32> {
            plain_host(&mut c, |c| {
                plain_charge(c, HOST_CALL_FUEL)?;
                Ok(c.data().input.len() as i32)
            })
        })
        .unwrap();
    linker
        .func_wrap("env", "input_read", |mut c: C<'_>, ptr: i32| -> Host<()> {
            plain_host(&mut c, |c| {
                plain_charge(c, HOST_CALL_FUEL)?;
                let len = c.data().input.len();
                let range = plain_range(c, "input_read", ptr, len)?;
                plain_charge(c, copy_fuel(len))?;
                let (memory, host) = plain_memory(c).data_and_store_mut(&mut *c);
                memory[range].copy_from_slice(&host.input);
                Ok(())
            })
        })
        .unwrap();
    linker
        .func_wrap(
            "env",
            "storage_read",
            |mut c: C<'_>, key_ptr: i32, val_ptr: i32, val_cap: i32| -> Host<i32> {
                plain_host(&mut c, |c| {
                    plain_charge(c, STORAGE_CALL_FUEL)?;
                    let key_range = plain_range(c, "storage_read key", key_ptr, 32)?;
                    let cap = val_cap as u32 as usize;
                    let dst = plain_range(c, "storage_read value buffer", val_ptr, cap)?;
                    let (memory, host) = plain_memory(c).data_and_store_mut(&mut *c);
                    let key = key_at(memory, key_range);
                    let value = match host.overlay.get(&key) {
                        Some(value) => value.as_ref(),
                        None => host.state.get(&key),
                    };
                    let Some(value) = value else {
                        return Ok(-1);
                    };
                    let copied = value.len().min(cap);
                    memory[dst.start..dst.start + copied].copy_from_slice(&value[..copied]);
                    let length = value.len() as i32;
                    plain_charge(c, copy_fuel(copied))?;
                    Ok(length)
                })
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "storage_write",
            |mut c: C<'_>, key_ptr: i32, val_ptr: i32, val_len: i32| -> Host<()> {
                plain_host(&mut c, |c| {
                    plain_charge(c, STORAGE_CALL_FUEL)?;
                    let len = val_len as u32 as usize;
                    if len > VALUE_BYTES_MAX {
                        return Err(too_long("value", len, "VALUE_BYTES_MAX", VALUE_BYTES_MAX));
                    }
                    let key_range = plain_range(c, "storage_write key", key_ptr, 32)?;
                    let range = plain_range(c, "storage_write value", val_ptr, len)?;
                    plain_charge(c, copy_fuel(len))?;
                    let (memory, host) = plain_memory(c).data_and_store_mut(&mut *c);
                    let key = key_at(memory, key_range);
                    if !host.overlay.contains_key(&key) && host.overlay.len() >= CALL_WRITES_MAX {
                        return Err(writes_exceeded());
                    }
                    host.overlay.insert(key, Some(memory[range].to_vec()));
                    Ok(())
                })
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "storage_remove",
            |mut c: C<'_>, key_ptr: i32| -> Host<i32> {
                plain_host(&mut c, |c| {
                    plain_charge(c, STORAGE_CALL_FUEL)?;
                    let key_range = plain_range(c, "storage_remove key", key_ptr, 32)?;
                    let (memory, host) = plain_memory(c).data_and_store_mut(&mut *c);
                    let key = key_at(memory, key_range);
                    let existed = match host.overlay.get(&key) {
                        Some(value) => value.is_some(),
                        None if host.overlay.len() >= CALL_WRITES_MAX => {
                            return Err(writes_exceeded());
                        }
                        None => host.state.contains_key(&key),
                    };
                    host.overlay.insert(key, None);
                    Ok(i32::from(existed))
                })
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "value_return",
            |mut c: C<'_>, ptr: i32, len: i32| -> Host<()> {
                plain_host(&mut c, |c| {
                    plain_charge(c, HOST_CALL_FUEL)?;
                    let len = len as u32 as usize;
                    if len > RETURN_BYTES_MAX {
                        return Err(too_long(
                            "return value",
                            len,
                            "RETURN_BYTES_MAX",
                            RETURN_BYTES_MAX,
                        ));
                    }
                    let range = plain_range(c, "value_return", ptr, len)?;
                    plain_charge(c, copy_fuel(len))?;
                    let (memory, host) = plain_memory(c).data_and_store_mut(&mut *c);
                    host.return_value = memory[range].to_vec();
                    Ok(())
                })
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "log",
            |mut c: C<'_>, ptr: i32, len: i32| -> Host<()> {
                plain_host(&mut c, |c| {
                    plain_charge(c, HOST_CALL_FUEL)?;
                    let len = len as u32 as usize;
                    if len > LOG_LINE_BYTES_MAX {
                        return Err(too_long(
                            "log line",
                            len,
                            "LOG_LINE_BYTES_MAX",
                            LOG_LINE_BYTES_MAX,
                        ));
                    }
                    if c.data().logs.len() >= CALL_LOGS_MAX {
                        return Err(CallError::LimitExceeded(format!(
                            "more than CALL_LOGS_MAX {CALL_LOGS_MAX} log lines"
                        )));
                    }
                    let range = plain_range(c, "log", ptr, len)?;
                    plain_charge(c, copy_fuel(len))?;
                    let (memory, host) = plain_memory(c).data_and_store_mut(&mut *c);
                    let line = String::from_utf8_lossy(&memory[range]).into_owned();
                    host.logs.push(line);
                    Ok(())
                })
            },
        )
        .unwrap();
    linker
        .func_wrap(
            "env",
            "fail",
            |mut c: C<'_>, ptr: i32, len: i32| -> Host<()> {
                plain_host(&mut c, |c| {
                    plain_charge(c, HOST_CALL_FUEL)?;
                    let range = plain_range(c, "fail", ptr, len as u32 as usize)?;
                    let kept = range.start..range.start + range.len().min(LOG_LINE_BYTES_MAX);
                    let memory = plain_memory(c).data(&*c);
                    Err(CallError::AppFailed(
                        String::from_utf8_lossy(&memory[kept]).into_owned(),
                    ))
                })
            },
        )
        .unwrap();
    linker
}

// ---------------------------------------------------------------------------
// Comparing the runners.

/// Near fuel exhaustion the instrumented code (reused, fresh) runs out of
/// fuel where plain wasmi, which runs fewer instructions, may not. "The
/// runtime ran out of fuel, plain wasmi did not" counts as agreement only if
/// the plain run consumed at least this share of the fuel given (whatever it
/// ended with); the instrumentation's overhead is below that factor (the
/// test prints the largest ratio it saw between the runtime's fuel and plain
/// wasmi's on calls that succeeded on both). The converse, plain wasmi out
/// of fuel and the runtime not, is always a divergence: the instrumentation
/// only adds code.
const OOF_PLAIN_SHARE_MIN: f64 = 0.5;

/// How two outcomes compare.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Equal,
    /// The runtime ran out of fuel where plain wasmi used much of it.
    OutOfFuelNearLimit,
    Differ,
}

/// What is compared with plain wasmi: everything but the fuel.
fn without_fuel(result: &Result<CallOutput, CallError>) -> Result<CallOutput, CallError> {
    result.clone().map(|output| CallOutput {
        fuel_used: 0,
        ..output
    })
}

fn compare_with_plain(ctx: &Result<CallOutput, CallError>, plain: &Run, fuel: u64) -> Verdict {
    if without_fuel(ctx) == without_fuel(&plain.result) {
        return Verdict::Equal;
    }
    let plain_share = plain.fuel_used as f64 / fuel.max(1) as f64;
    let plain_oof = matches!(plain.result, Err(CallError::OutOfFuel));
    if matches!(ctx, Err(CallError::OutOfFuel)) && !plain_oof && plain_share >= OOF_PLAIN_SHARE_MIN
    {
        return Verdict::OutOfFuelNearLimit;
    }
    Verdict::Differ
}

fn class(result: &Result<CallOutput, CallError>) -> &'static str {
    match result {
        Ok(out) if !out.writes.is_empty() => "ok, with writes",
        Ok(out) if !out.return_value.is_empty() || !out.logs.is_empty() => {
            "ok, with a return value or logs"
        }
        Ok(_) => "ok, nothing else",
        Err(CallError::Trap(message)) if message.contains(": bytes [") => {
            "trap, in a host function"
        }
        Err(CallError::Trap(message)) if message == "call stack exhausted" => {
            "trap, call stack exhausted"
        }
        Err(CallError::OutOfFuel) => "out of fuel",
        Err(CallError::Trap(_)) => "trap",
        Err(CallError::AppFailed(_)) => "app failed",
        Err(CallError::LimitExceeded(_)) => "limit exceeded",
        Err(CallError::UnknownMethod(_)) => "unknown method",
        Err(CallError::BadInput(_)) => "bad input",
    }
}

fn brief(result: &Result<CallOutput, CallError>) -> String {
    let mut text = format!("{result:?}");
    if text.len() > 400 {
        let mut cut = 400;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

// ---------------------------------------------------------------------------
// Random modules.

/// Modules the bounded run generates (about 340 a second on the 2-core
/// development machine, in the test profile).
const MODULES_DEFAULT: u64 = 6000;

/// The bounded run stops generating modules after this long, whatever
/// `MODULES_DEFAULT` says (a slow machine still finishes in time).
const BOUNDED_RUN_TIME_MAX: Duration = Duration::from_secs(35);

/// The native stack of the thread that runs the random part: the least the
/// runtime promises to need, so that a random module that leaks native
/// stack (as wasmi's tail-call dispatch did on every failing `memory.grow`,
/// finding 1 of issue 12) aborts this test.
const RANDOM_PART_STACK_BYTES: usize = ctx_core::runtime::CALL_NATIVE_STACK_BYTES_MIN;

/// A module that requires `methods` exports of type `() -> ()` (named m0,
/// m1, ...), and optionally a non-method function and a mutable global.
fn required_exports(methods: u32, extras: bool) -> Vec<u8> {
    let mut text = String::from("(module\n");
    for i in 0..methods {
        writeln!(text, "  (func (export \"m{i}\"))").unwrap();
    }
    if extras {
        text.push_str("  (func (export \"not_a_method\") (param i32) (result i32) local.get 0)\n");
        text.push_str("  (global (export \"a_global\") (mut i64) (i64.const 0))\n");
    }
    text.push(')');
    wat::parse_str(&text).unwrap()
}

/// True with probability 1/n.
fn one_in(rng: &mut ChaCha8Rng, n: u64) -> bool {
    rng.next_u64().is_multiple_of(n)
}

/// The wasm-smith configuration for the ABI, with a few knobs drawn from
/// `rng` (swarm testing: modules differ in shape, not only in content).
fn abi_config(rng: &mut ChaCha8Rng) -> wasm_smith::Config {
    let mut config = wasm_smith::Config {
        available_imports: Some(wat::parse_str(ENV_IMPORTS).unwrap()),
        // One defined 32-bit memory (exported as "memory" after generation),
        // initially small, with a maximum or not (without one it grows up to
        // APP_MEMORY_BYTES_MAX).
        min_memories: 1,
        max_memories: 1,
        memory64_enabled: false,
        max_memory32_bytes: (1 + rng.next_u64() % 4) << 16,
        memory_max_size_required: false,
        allow_start_export: false,
        // The ABI's features.
        bulk_memory_enabled: true,
        reference_types_enabled: true,
        multi_value_enabled: true,
        tail_call_enabled: true,
        sign_extension_ops_enabled: true,
        saturating_float_to_int_enabled: true,
        extended_const_enabled: true,
        // Not in the ABI.
        simd_enabled: false,
        relaxed_simd_enabled: false,
        threads_enabled: false,
        shared_everything_threads_enabled: false,
        gc_enabled: false,
        exceptions_enabled: false,
        custom_page_sizes_enabled: false,
        wide_arithmetic_enabled: false,
        // Within the runtime's table limits.
        max_tables: 3,
        max_table_elements: 200,
        max_funcs: 2 + (rng.next_u64() % 20) as usize,
        max_instructions: 20 + (rng.next_u64() % 300) as usize,
        max_globals: 8,
        max_data_segments: 6,
        max_element_segments: 6,
        max_elements: 40,
        max_types: 20,
        // Half of the modules avoid most traps, so that calls run
        // longer and reach the host functions more often.
        disallow_traps: one_in(rng, 2),
        ..wasm_smith::Config::default()
    };
    // Instruction kinds: fewer kinds make calls (to the host functions
    // among others) more frequent, since wasm-smith picks uniformly among
    // the valid instructions.
    use wasm_smith::InstructionKind as Kind;
    let mut kinds = vec![
        Kind::Control,
        Kind::Variable,
        Kind::Parametric,
        Kind::NumericInt,
        Kind::MemoryInt,
    ];
    if one_in(rng, 2) {
        kinds.extend([Kind::Numeric, Kind::Memory]);
    } else {
        config.allow_floats = false;
    }
    if one_in(rng, 2) {
        kinds.extend([Kind::Reference, Kind::Table]);
    }
    config.allowed_instructions = wasm_smith::InstructionKinds::new(&kinds);
    if one_in(rng, 8) {
        // Every function, table, global and the memory exported under
        // random names: methods are the `() -> ()` ones, if any.
        config.export_everything = true;
    } else {
        let methods = 1 + (rng.next_u64() % 5) as u32;
        config.exports = Some(required_exports(methods, one_in(rng, 2)));
    }
    config
}

/// Wrapper methods added to a module at most (one per method, the first
/// ones in export order).
const WRAPPERS_MAX: usize = 5;

/// What the test needs to know about a generated module, read with
/// `wasmparser`.
#[derive(Default)]
struct Shape {
    /// Whether each type is `() -> ()`, by type index.
    unit_types: Vec<bool>,
    /// The imported functions' names, in index order.
    imports: Vec<String>,
    /// The type index of each defined function.
    funcs: Vec<u32>,
    /// The initial size of memory 0.
    memory_bytes: u64,
    /// The mutable globals: index and type.
    mutable_globals: Vec<(u32, wasmparser::ValType)>,
    exports: Vec<(String, wasmparser::ExternalKind, u32)>,
    /// Whether a function tail-calls (`return_call`) `storage_read` or
    /// `storage_remove` directly: the shape of the `a_tail_called_*` cases
    /// below.
    tail_calls_state_import: bool,
}

/// A method of a generated module: an exported function of type `() -> ()`.
struct Method {
    index: u32,
    type_index: u32,
    name: String,
}

impl Shape {
    fn of(wasm: &[u8]) -> Shape {
        use wasmparser::{Operator, Payload, TypeRef};
        let mut shape = Shape::default();
        let mut globals = 0;
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            match payload.expect("wasm-smith makes valid modules") {
                Payload::TypeSection(reader) => {
                    for ty in reader.into_iter_err_on_gc_types() {
                        let ty = ty.unwrap();
                        let unit = ty.params().is_empty() && ty.results().is_empty();
                        shape.unit_types.push(unit);
                    }
                }
                Payload::ImportSection(reader) => {
                    for import in reader {
                        let import = import.unwrap();
                        assert!(matches!(import.ty, TypeRef::Func(_)), "only env functions");
                        shape.imports.push(import.name.to_owned());
                    }
                }
                Payload::FunctionSection(reader) => {
                    shape.funcs = reader.into_iter().map(Result::unwrap).collect();
                }
                Payload::MemorySection(reader) => {
                    for memory in reader {
                        shape.memory_bytes = memory.unwrap().initial << 16;
                    }
                }
                Payload::GlobalSection(reader) => {
                    for global in reader {
                        let ty = global.unwrap().ty;
                        if ty.mutable {
                            shape.mutable_globals.push((globals, ty.content_type));
                        }
                        globals += 1;
                    }
                }
                Payload::ExportSection(reader) => {
                    for export in reader {
                        let export = export.unwrap();
                        let name = export.name.to_owned();
                        shape.exports.push((name, export.kind, export.index));
                    }
                }
                Payload::CodeSectionEntry(body) => {
                    let state_imports =
                        [shape.import("storage_read"), shape.import("storage_remove")];
                    let mut operators = body.get_operators_reader().unwrap();
                    while !operators.eof() {
                        if let Operator::ReturnCall { function_index } = operators.read().unwrap() {
                            shape.tail_calls_state_import |=
                                state_imports.contains(&Some(function_index));
                        }
                    }
                }
                _ => {}
            }
        }
        shape
    }

    fn import(&self, name: &str) -> Option<u32> {
        self.imports
            .iter()
            .position(|n| n == name)
            .map(|i| i as u32)
    }

    fn export(&self, name: &str) -> Option<(wasmparser::ExternalKind, u32)> {
        self.exports
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|&(_, kind, index)| (kind, index))
    }

    /// The methods, in export order.
    fn methods(&self) -> Vec<Method> {
        let imported = self.imports.len() as u32;
        self.exports
            .iter()
            .filter(|(_, kind, _)| *kind == wasmparser::ExternalKind::Func)
            .filter_map(|(name, _, index)| {
                // An import is never `() -> ()`.
                let type_index = self.funcs[index.checked_sub(imported)? as usize];
                self.unit_types[type_index as usize].then(|| Method {
                    index: *index,
                    type_index,
                    name: name.clone(),
                })
            })
            .collect()
    }
}

/// The wrapper `dump:<method>`: reads the input to `input_at`, calls the
/// method, returns the memory's first 64 KiB as its return value and writes
/// every further 64 KiB of it, and the mutable globals' values, to the
/// state, so that what the random code leaves in memory and globals is
/// compared between the runners, and so is what the reset left behind
/// before the call (a byte the reset missed, unless the call overwrites
/// it, shows as a difference between the reused and the fresh instance).
/// Uses only the host functions the module imports.
///
/// Where the input goes matters: a host function marks the chunks it
/// writes, so input read to address 0 marked the first chunk on every call,
/// where most random stores land, and hid every store the instrumentation
/// forgot to mark there. So `input_at` is away from the bottom of the
/// memory (see [`input_address`]), and the wrapper's own scratch (keys,
/// globals) is in the input's chunk.
fn wrapper(shape: &Shape, method: u32, input_at: i32) -> wasm_encoder::Function {
    use wasm_encoder::Instruction as I;
    use wasmparser::ValType;
    let memarg = wasm_encoder::MemArg {
        offset: 0,
        align: 3,
        memory_index: 0,
    };
    let dump_bytes = shape.memory_bytes.min(DUMP_WINDOW_BYTES) as i32;
    let mut body = wasm_encoder::Function::new([]);
    if let Some(input_read) = shape.import("input_read")
        && dump_bytes > 0
    {
        body.instruction(&I::I32Const(input_at));
        body.instruction(&I::Call(input_read));
    }
    body.instruction(&I::Call(method));
    if let Some(value_return) = shape.import("value_return") {
        body.instruction(&I::I32Const(0));
        body.instruction(&I::I32Const(dump_bytes));
        body.instruction(&I::Call(value_return));
    }
    let Some(storage_write) = shape.import("storage_write") else {
        body.instruction(&I::End);
        return body;
    };
    // The windows past the first, each under the key [DUMP_KEY_TAG + w,
    // 0...] written at `input_at` (after the method: its scratch).
    let windows = shape.memory_bytes.div_ceil(DUMP_WINDOW_BYTES);
    for window in 1..windows {
        let key = [DUMP_KEY_TAG + window as i64, 0, 0, 0];
        for (k, word) in key.into_iter().enumerate() {
            body.instruction(&I::I32Const(input_at + 8 * k as i32));
            body.instruction(&I::I64Const(word));
            body.instruction(&I::I64Store(memarg));
        }
        let start = window * DUMP_WINDOW_BYTES;
        let len = (shape.memory_bytes - start).min(DUMP_WINDOW_BYTES);
        body.instruction(&I::I32Const(input_at));
        body.instruction(&I::I32Const(start as i32));
        body.instruction(&I::I32Const(len as i32));
        body.instruction(&I::Call(storage_write));
    }
    let globals = &shape.mutable_globals[..shape.mutable_globals.len().min(4)];
    if !globals.is_empty() && dump_bytes > 0 {
        // Each global as an i64 at input_at + 8 * k (a reference: its
        // nullness).
        for (k, &(index, ty)) in globals.iter().enumerate() {
            body.instruction(&I::I32Const(input_at + 8 * k as i32));
            body.instruction(&I::GlobalGet(index));
            let to_i64: &[I] = match ty {
                ValType::I32 => &[I::I64ExtendI32U],
                ValType::I64 => &[],
                ValType::F32 => &[I::I32ReinterpretF32, I::I64ExtendI32U],
                ValType::F64 => &[I::I64ReinterpretF64],
                ValType::Ref(_) => &[I::RefIsNull, I::I64ExtendI32U],
                ValType::V128 => unreachable!("SIMD is off"),
            };
            for instruction in to_i64 {
                body.instruction(instruction);
            }
            body.instruction(&I::I64Store(memarg));
        }
        // Key: the 32 bytes after the globals; value: the globals.
        body.instruction(&I::I32Const(input_at + 32));
        body.instruction(&I::I32Const(input_at));
        body.instruction(&I::I32Const(8 * globals.len() as i32));
        body.instruction(&I::Call(storage_write));
    }
    body.instruction(&I::End);
    body
}

/// The memory is dumped in windows of this many bytes: the most one
/// `value_return` or one stored value may carry.
const DUMP_WINDOW_BYTES: u64 = 65536;
const _: () = assert!(DUMP_WINDOW_BYTES as usize <= RETURN_BYTES_MAX);
const _: () = assert!(DUMP_WINDOW_BYTES as usize <= VALUE_BYTES_MAX);

/// The first 8 bytes of the key of a dumped window, plus its index ("DUMP"
/// in ASCII, then the index).
const DUMP_KEY_TAG: i64 = 0x504d_5544 << 32;

/// The most input the random calls give a wrapper: one that fits at
/// `input_at`.
const WRAPPER_INPUT_BYTES_MAX: u64 = 4096;

/// Where the wrappers of a module with `memory_bytes` read the input: in
/// the upper half of the memory, far from where random stores mostly land
/// (small addresses), with room for [`WRAPPER_INPUT_BYTES_MAX`] bytes.
fn input_address(rng: &mut ChaCha8Rng, memory_bytes: u64) -> i32 {
    if memory_bytes < DUMP_WINDOW_BYTES {
        // No memory at all (wasm pages are 64 KiB): no input is read.
        return 0;
    }
    let room = memory_bytes / 2 - WRAPPER_INPUT_BYTES_MAX;
    (memory_bytes / 2 + rng.next_u64() % room) as i32
}

/// Makes a wasm-smith module an ABI module: exports memory 0 as `"memory"`
/// (wasm-smith names its exports itself) unless it does already, and adds a
/// `dump:<method>` wrapper method (see [`wrapper`]) for each of up to
/// [`WRAPPERS_MAX`] methods. Returns the module and its wrappers' names;
/// `None` if an export already has one of the names (other than memory 0
/// as `"memory"`).
fn abi_module(wasm: &[u8], shape: &Shape, input_at: i32) -> Option<(Vec<u8>, Vec<String>)> {
    use wasm_encoder::ExportKind;
    let mut exports = Vec::new();
    match shape.export("memory") {
        None => exports.push(("memory".to_owned(), ExportKind::Memory, 0)),
        Some((wasmparser::ExternalKind::Memory, 0)) => {}
        Some(_) => return None,
    }
    let first_wrapper = (shape.imports.len() + shape.funcs.len()) as u32;
    let mut wrappers = Vec::new();
    let mut names = Vec::new();
    for (k, method) in shape.methods().into_iter().take(WRAPPERS_MAX).enumerate() {
        let name = format!("dump:{}", method.name);
        if shape.export(&name).is_some() {
            return None;
        }
        exports.push((name.clone(), ExportKind::Func, first_wrapper + k as u32));
        names.push(name);
        // The method's type is `() -> ()`, the wrapper's too.
        wrappers.push((method.type_index, wrapper(shape, method.index, input_at)));
    }
    let mut reencoder = AddWrappers {
        wrappers,
        exports,
        exports_added: false,
    };
    let mut module = wasm_encoder::Module::new();
    reencoder
        .parse_core_module(&mut module, wasmparser::Parser::new(0), wasm)
        .expect("wasm-smith makes valid modules");
    assert!(reencoder.exports_added, "the exports were not added");
    let wasm = module.finish();
    // A wrapper's function without its body (or the converse) shows here.
    wasmparser::validate(&wasm).expect("the ABI module is valid");
    Some((wasm, names))
}

/// The reencoder behind [`abi_module`]: copies the module and appends the
/// wrappers, after the module's functions, and the exports.
struct AddWrappers {
    /// Each wrapper's type index and body.
    wrappers: Vec<(u32, wasm_encoder::Function)>,
    /// The exports to add: name, kind, index.
    exports: Vec<(String, wasm_encoder::ExportKind, u32)>,
    exports_added: bool,
}

impl AddWrappers {
    fn add_exports(&mut self, exports: &mut wasm_encoder::ExportSection) {
        for (name, kind, index) in &self.exports {
            exports.export(name, *kind, *index);
        }
        self.exports_added = true;
    }
}

impl Reencode for AddWrappers {
    type Error = Infallible;

    fn parse_function_section(
        &mut self,
        functions: &mut wasm_encoder::FunctionSection,
        section: wasmparser::FunctionSectionReader<'_>,
    ) -> Result<(), reencode::Error<Infallible>> {
        reencode::utils::parse_function_section(self, functions, section)?;
        for (type_index, _) in &self.wrappers {
            functions.function(*type_index);
        }
        Ok(())
    }

    fn parse_code_section(
        &mut self,
        code: &mut wasm_encoder::CodeSection,
        section: wasmparser::CodeSectionReader<'_>,
    ) -> Result<(), reencode::Error<Infallible>> {
        reencode::utils::parse_code_section(self, code, section)?;
        for (_, body) in &self.wrappers {
            code.function(body);
        }
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut wasm_encoder::ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), reencode::Error<Infallible>> {
        reencode::utils::parse_export_section(self, exports, section)?;
        self.add_exports(exports);
        Ok(())
    }

    /// A module without an export section gets one where it belongs: before
    /// the first section that follows it, or at the end.
    fn intersperse_section_hook(
        &mut self,
        module: &mut wasm_encoder::Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), reencode::Error<Infallible>> {
        use SectionId::{Code, Data, DataCount, Element, Start};
        let past_exports = matches!(
            before,
            None | Some(Start | Element | DataCount | Code | Data)
        );
        if past_exports && !self.exports_added {
            let mut exports = wasm_encoder::ExportSection::new();
            self.add_exports(&mut exports);
            module.section(&exports);
        }
        Ok(())
    }
}

/// What the random part saw, over all modules of one family.
struct Stats {
    /// The family of modules ([`Family::name`]).
    family: &'static str,
    generated: u64,
    generation_failed: u64,
    /// Modules the generator made that are not ABI modules (an export
    /// already named "memory").
    not_abi: u64,
    compiled: u64,
    /// Why `App::compile` refused a module, and whether plain wasmi refused
    /// it too.
    rejected: BTreeMap<String, u64>,
    no_methods: u64,
    /// The `dump:` wrapper methods added.
    wrappers: u64,
    calls: u64,
    outcomes: BTreeMap<&'static str, u64>,
    oof_near_limit: u64,
    /// The smallest share of the fuel plain wasmi used among those.
    oof_plain_share_min: f64,
    /// Compiled modules that tail-call a state import (the shape of
    /// finding 2 of issue 12).
    tail_call_modules: u64,
    /// The largest ratio of the runtime's fuel to plain wasmi's, on calls
    /// that succeeded on both, and its seed.
    fuel_ratio_max: (f64, u64),
    /// Calls that changed the memory (as plain wasmi ran them, see
    /// [`MemoryChange`]); of those, the ones that changed it outside the
    /// reset's first chunk (and the chunks of the `dump:` wrappers' input
    /// and scratch), and in its last chunk.
    memory_changed: u64,
    changed_beyond_chunk_0: u64,
    changed_last_chunk: u64,
    /// Of the calls that changed memory, how many changed 1, 2-3, 4-7, ...
    /// chunks (by the log2 of the count).
    changed_chunks_log2: [u64; 7],
    /// The operations the poke modules have, by kind.
    pokes: BTreeMap<&'static str, u64>,
    divergences: Vec<String>,
}

impl Stats {
    fn new(family: &'static str) -> Stats {
        Stats {
            family,
            generated: 0,
            generation_failed: 0,
            not_abi: 0,
            compiled: 0,
            rejected: BTreeMap::new(),
            no_methods: 0,
            wrappers: 0,
            calls: 0,
            outcomes: BTreeMap::new(),
            oof_near_limit: 0,
            oof_plain_share_min: 1.0,
            tail_call_modules: 0,
            fuel_ratio_max: (0.0, 0),
            memory_changed: 0,
            changed_beyond_chunk_0: 0,
            changed_last_chunk: 0,
            changed_chunks_log2: [0; 7],
            pokes: BTreeMap::new(),
            divergences: Vec::new(),
        }
    }

    fn count_change(&mut self, change: MemoryChange, wrapper_chunks: u64) {
        if change.chunks == 0 {
            return;
        }
        self.memory_changed += 1;
        self.changed_beyond_chunk_0 += u64::from(change.chunks & !1 & !wrapper_chunks != 0);
        self.changed_last_chunk += u64::from(change.last_chunk);
        self.changed_chunks_log2[change.chunks.count_ones().ilog2() as usize] += 1;
    }

    /// The summary, written to the standard error directly (past the test
    /// harness's capture) so that every run shows what it exercised.
    fn print(&self, elapsed: Duration) {
        let mut out = String::new();
        let rejected: u64 = self.rejected.values().sum();
        let attempted = self.compiled + rejected;
        let _ = writeln!(
            out,
            "runtime differential ({}): {} modules generated ({} generator failures, {} not \
             ABI), {} compiled, {} rejected ({:.1}%), {} without methods, {} dump: wrappers; \
             {} calls in {:.1?}",
            self.family,
            self.generated,
            self.generation_failed,
            self.not_abi,
            self.compiled,
            rejected,
            100.0 * rejected as f64 / attempted.max(1) as f64,
            self.no_methods,
            self.wrappers,
            self.calls,
            elapsed,
        );
        for (reason, count) in &self.rejected {
            let _ = writeln!(out, "  rejected {count:5}: {reason}");
        }
        for (class, count) in &self.outcomes {
            let _ = writeln!(out, "  outcome {count:6}: {class}");
        }
        let _ = writeln!(
            out,
            "  out of fuel in the runtime only, near the limit: {} (rule: plain used >= {:.0}%; \
             smallest share seen {:.0}%)",
            self.oof_near_limit,
            OOF_PLAIN_SHARE_MIN * 100.0,
            self.oof_plain_share_min * 100.0
        );
        let _ = writeln!(
            out,
            "  modules with a return_call to storage_read or storage_remove: {}",
            self.tail_call_modules
        );
        let _ = writeln!(
            out,
            "  largest fuel ratio runtime/plain on calls ok on both: {:.2} (seed {})",
            self.fuel_ratio_max.0, self.fuel_ratio_max.1
        );
        let _ = writeln!(
            out,
            "  calls that changed memory: {}; outside the reset's chunk 0 (and the dump: \
             wrappers' input chunks): {}; in its last chunk: {}; chunks changed 1, 2-3, 4-7, \
             ..., 64: {:?}",
            self.memory_changed,
            self.changed_beyond_chunk_0,
            self.changed_last_chunk,
            self.changed_chunks_log2
        );
        if !self.pokes.is_empty() {
            let pokes: Vec<String> = self.pokes.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(out, "  poke operations: {}", pokes.join(", "));
        }
        for divergence in &self.divergences {
            let _ = writeln!(out, "DIVERGENCE {divergence}");
        }
        let _ = std::io::Write::write_all(&mut std::io::stderr(), out.as_bytes());
    }
}

fn rejection_reason(error: &AppError, plain: &Result<Plain, String>) -> String {
    let plain_too = match plain {
        Err(_) => "plain wasmi: invalid too",
        Ok(plain) => match plain.instantiates() {
            Err(_) => "plain wasmi: cannot instantiate either",
            Ok(()) => "PLAIN WASMI ACCEPTS IT",
        },
    };
    let mut what = error.to_string();
    // Keep the kind of error, not its offsets and numbers.
    if let Some(cut) = what.find(|c: char| c.is_ascii_digit() || c == '(') {
        what.truncate(cut);
    }
    format!("{} ({plain_too})", what.trim_end())
}

/// A call the random part makes: which method, with what input and fuel.
fn random_call(rng: &mut ChaCha8Rng, methods: &[String], exports: &[String]) -> Call {
    let method = match rng.next_u64() % 20 {
        0 => "no_such_method".to_owned(),
        1 if !exports.is_empty() => exports[rng.next_u64() as usize % exports.len()].clone(),
        2 => "x".repeat(METHOD_NAME_BYTES_MAX + 1),
        _ if !methods.is_empty() => methods[rng.next_u64() as usize % methods.len()].clone(),
        _ => "no_method_at_all".to_owned(),
    };
    let input_len = match rng.next_u64() % 50 {
        0 => INPUT_BYTES_MAX + 1,
        1..=5 => (rng.next_u64() % WRAPPER_INPUT_BYTES_MAX) as usize,
        _ => (rng.next_u64() % 65) as usize,
    };
    let mut input = vec![0u8; input_len];
    rng.fill_bytes(&mut input);
    let fuel = match rng.next_u64() % 20 {
        0..=3 => 1 + rng.next_u64() % 5_000,
        4..=7 => 5_000 + rng.next_u64() % 200_000,
        8 => CALL_FUEL_MAX,
        _ => 200_000,
    };
    Call {
        method,
        input,
        fuel,
    }
}

struct Call {
    method: String,
    input: Vec<u8>,
    fuel: u64,
}

/// Generates the wasm-smith module of `seed`, runs its calls on the three
/// runners and records what it saw in `stats`.
fn run_module(seed: u64, stats: &mut Stats, verbose: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let config = abi_config(&mut rng);
    let mut bytes = vec![0u8; 1024 + (rng.next_u64() % 8192) as usize];
    rng.fill_bytes(&mut bytes);
    if !one_in(&mut rng, 4) {
        // wasm-smith decides on each available import with one bool, the
        // low bit of one of the first bytes: in 3 modules of 4, all of them
        // (only coverage depends on this detail of wasm-smith).
        for byte in &mut bytes[..ENV_IMPORT_COUNT] {
            *byte |= 1;
        }
    }
    stats.generated += 1;
    let module = match wasm_smith::Module::new(config, &mut Unstructured::new(&bytes)) {
        Ok(module) => module,
        Err(_) => {
            stats.generation_failed += 1;
            return;
        }
    };
    let smith_wasm = module.to_bytes();
    let shape = Shape::of(&smith_wasm);
    let input_at = input_address(&mut rng, shape.memory_bytes);
    let Some((wasm, wrappers)) = abi_module(&smith_wasm, &shape, input_at) else {
        stats.not_abi += 1;
        return;
    };
    stats.wrappers += wrappers.len() as u64;
    let hint = if shape.tail_calls_state_import {
        " [the module tail-calls a state import: finding 2 of issue 12?]"
    } else {
        ""
    };
    let input_at = u64::try_from(input_at).expect("an address in the memory");
    let subject = Subject {
        seed,
        wasm: &wasm,
        hint,
        next_call: random_call,
        wrapper_chunks: chunks_of(
            &(input_at..input_at + WRAPPER_INPUT_BYTES_MAX),
            shape.memory_bytes,
        ),
        keep_writes: true,
    };
    if check_module(&subject, &mut rng, stats, verbose) {
        stats.tail_call_modules += u64::from(shape.tail_calls_state_import);
    }
}

/// A module to run on the three runners, and how to call it.
struct Subject<'a> {
    seed: u64,
    wasm: &'a [u8],
    /// Appended to a divergence's first line: what it may be.
    hint: &'static str,
    /// The next call, given the methods and all the exports.
    next_call: fn(&mut ChaCha8Rng, &[String], &[String]) -> Call,
    /// The chunks the `dump:` wrappers write (their input and scratch),
    /// left out of the count of calls that changed memory outside chunk 0.
    wrapper_chunks: u64,
    /// Whether a successful call's writes are applied to the state for the
    /// next calls. The poke modules' writes are only memory dumps, which
    /// no call reads back, and the plain runner copies the state per call.
    keep_writes: bool,
}

/// The reset's chunks (see [`reset_chunk_bytes`]) that `range` touches in a
/// memory of `memory_bytes`.
fn chunks_of(range: &Range<u64>, memory_bytes: u64) -> u64 {
    let chunk_bytes = reset_chunk_bytes(memory_bytes);
    let first = range.start / chunk_bytes;
    let last = (range.end.max(range.start + 1) - 1) / chunk_bytes;
    (first..=last.min(63)).fold(0, |mask, chunk| mask | 1 << chunk)
}

/// Compiles the subject's module, runs a random sequence of calls on the
/// three runners and records what it saw in `stats`. Returns whether the
/// runtime compiled the module.
fn check_module(
    subject: &Subject<'_>,
    rng: &mut ChaCha8Rng,
    stats: &mut Stats,
    verbose: bool,
) -> bool {
    let Subject {
        seed, wasm, hint, ..
    } = *subject;
    if verbose {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("runtime_differential-{}-{seed}.wasm", stats.family));
        std::fs::write(&path, wasm).unwrap();
        println!(
            "seed {seed}: module of {} bytes in {}",
            wasm.len(),
            path.display()
        );
    }
    let plain = Plain::new(wasm);
    let mut reused = match App::compile(wasm) {
        Ok(app) => app,
        Err(error) => {
            *stats
                .rejected
                .entry(rejection_reason(&error, &plain))
                .or_default() += 1;
            return false;
        }
    };
    stats.compiled += 1;
    let plain = match plain {
        Ok(plain) => plain,
        Err(error) => {
            let text = format!("seed {seed}: ctx compiles it, plain wasmi does not: {error}");
            stats.divergences.push(text);
            return true;
        }
    };
    let methods = &plain.methods;
    if reused.methods() != *methods {
        let text = format!(
            "seed {seed}: methods: ctx {:?}, plain {methods:?}",
            reused.methods()
        );
        stats.divergences.push(text);
        return true;
    }
    if methods.is_empty() {
        stats.no_methods += 1;
    }
    let exports: Vec<String> = plain
        .module
        .exports()
        .map(|e| e.name().to_owned())
        .collect();
    let mut state = MapState::default();
    state.0.insert(Key([0; 32]), b"zero key's value".to_vec());
    state.0.insert(Key([0xff; 32]), vec![7; 100]);
    let calls = if methods.is_empty() {
        2
    } else {
        4 + rng.next_u64() % 12
    };
    for index in 0..calls {
        let call = (subject.next_call)(rng, methods, &exports);
        let at = format!(
            "seed {seed} call {index} ({:?}, {} input bytes, fuel {})",
            call.method,
            call.input.len(),
            call.fuel
        );
        // The runtime asserts (in debug builds) that each reset restored
        // the initial memory: a panic here is this call's writes escaping it.
        let reused_call = std::panic::AssertUnwindSafe(|| {
            reused.call(&call.method, &call.input, &state, call.fuel)
        });
        let first = match std::panic::catch_unwind(reused_call) {
            Ok(first) => first,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|m| m.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let text = format!("{at}: the runtime panicked on the reused instance: {message}");
                stats.divergences.push(text);
                return true;
            }
        };
        let fresh = App::compile(wasm)
            .expect("compiled once, compiles again")
            .call(&call.method, &call.input, &state, call.fuel);
        let plain_run = plain.call(&call.method, &call.input, &state, call.fuel);
        stats.calls += 1;
        *stats.outcomes.entry(class(&first)).or_default() += 1;
        stats.count_change(plain_run.changed, subject.wrapper_chunks);
        if verbose {
            println!(
                "{at}:\n  reused {}\n  plain  {}\n  plain changed chunks {:#018x}",
                brief(&first),
                brief(&plain_run.result),
                plain_run.changed.chunks
            );
        }
        if first != fresh {
            let text = format!(
                "{at}: reused and fresh instances differ{hint}\n  reused {}\n  fresh  {}{}",
                brief(&first),
                brief(&fresh),
                first_difference(&first, &fresh)
            );
            stats.divergences.push(text);
            return true;
        }
        match compare_with_plain(&first, &plain_run, call.fuel) {
            Verdict::Equal => {}
            Verdict::OutOfFuelNearLimit => {
                stats.oof_near_limit += 1;
                let share = plain_run.fuel_used as f64 / call.fuel as f64;
                stats.oof_plain_share_min = stats.oof_plain_share_min.min(share);
            }
            Verdict::Differ => {
                let stack = if format!("{first:?}{:?}", plain_run.result)
                    .contains("call stack exhausted")
                {
                    " [call stack exhausted on one side: finding 3 of issue 12?]"
                } else {
                    ""
                };
                let text = format!(
                    "{at}: runtime and plain wasmi differ{hint}{stack}\n  runtime {}\n  plain   {} \
                     (fuel used {}){}",
                    brief(&first),
                    brief(&plain_run.result),
                    plain_run.fuel_used,
                    first_difference(&first, &plain_run.result)
                );
                stats.divergences.push(text);
                return true;
            }
        }
        if let (Ok(ctx), Ok(plain)) = (&first, &plain_run.result) {
            let ratio = ctx.fuel_used as f64 / plain.fuel_used.max(1) as f64;
            if ratio > stats.fuel_ratio_max.0 && plain.fuel_used >= 100 {
                stats.fuel_ratio_max = (ratio, seed);
            }
        }
        if let Ok(output) = &first
            && subject.keep_writes
        {
            state.apply(&output.writes);
        }
    }
    true
}

/// Where two successful outputs first differ in their return values or
/// written values (the memory dumps), as a line to append to a divergence:
/// [`brief`] cuts a dump long before the byte that matters.
fn first_difference(
    a: &Result<CallOutput, CallError>,
    b: &Result<CallOutput, CallError>,
) -> String {
    let (Ok(a), Ok(b)) = (a, b) else {
        return String::new();
    };
    let differs = |what: String, x: &[u8], y: &[u8]| {
        let at = (0..x.len().max(y.len())).find(|&i| x.get(i) != y.get(i))?;
        Some(format!(
            "\n  first difference: {what} byte {at}: {:?} vs {:?} (lengths {} and {})",
            x.get(at),
            y.get(at),
            x.len(),
            y.len()
        ))
    };
    if let Some(text) = differs("return value".into(), &a.return_value, &b.return_value) {
        return text;
    }
    let hex = |key: &Key| key.0.iter().map(|b| format!("{b:02x}")).collect::<String>();
    for ((ka, va), (kb, vb)) in a.writes.iter().zip(&b.writes) {
        if ka != kb {
            return format!(
                "\n  first difference: written keys {} vs {}",
                hex(ka),
                hex(kb)
            );
        }
        let (va, vb) = (va.as_deref().unwrap_or(&[]), vb.as_deref().unwrap_or(&[]));
        if let Some(text) = differs(format!("value of key {}", hex(ka)), va, vb) {
            return text;
        }
    }
    if a.writes.len() != b.writes.len() {
        return format!(
            "\n  first difference: {} keys written vs {}",
            a.writes.len(),
            b.writes.len()
        );
    }
    String::new()
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number")),
    )
}

/// A family of generated modules: how the random part makes and runs the
/// module of one seed, and its bounds in `cargo test`.
struct Family {
    name: &'static str,
    run_module: fn(u64, &mut Stats, bool),
    /// Modules the bounded run generates.
    modules_default: u64,
    /// The bounded run stops generating modules after this long, whatever
    /// `modules_default` says (a slow machine still finishes in time).
    time_max: Duration,
}

/// The wasm-smith modules.
const SMITH: Family = Family {
    name: "wasm-smith",
    run_module,
    modules_default: MODULES_DEFAULT,
    time_max: BOUNDED_RUN_TIME_MAX,
};

/// The poke modules (see [`run_poke_module`]).
const POKE: Family = Family {
    name: "poke",
    run_module: run_poke_module,
    modules_default: POKE_MODULES_DEFAULT,
    time_max: POKE_RUN_TIME_MAX,
};

#[test]
fn random_modules_agree_on_all_three_runners() {
    random_part_on_a_small_stack(&SMITH);
}

/// The reset, aimed at: random stores of every kind and bulk writes at
/// chunk boundaries and the end of the memory, every call dumping the
/// memory it starts with.
#[test]
fn poke_modules_agree_on_all_three_runners() {
    let stats = random_part_on_a_small_stack(&POKE);
    assert!(
        stats.rejected.is_empty(),
        "the runtime rejected poke modules: {:?}",
        stats.rejected
    );
}

fn random_part_on_a_small_stack(family: &'static Family) -> Stats {
    let worker = std::thread::Builder::new()
        .name(format!("runtime-differential-{}", family.name))
        .stack_size(RANDOM_PART_STACK_BYTES)
        .spawn(|| random_part(family))
        .unwrap();
    let stats = worker.join().expect("the random part panicked");
    assert!(
        stats.divergences.is_empty(),
        "{} divergences (see DIVERGENCE above)",
        stats.divergences.len()
    );
    stats
}

fn random_part(family: &Family) -> Stats {
    let started = Instant::now();
    let mut stats = Stats::new(family.name);
    let (seeds, verbose, bounded) = match env_u64("CTX_DIFF_SEED") {
        Some(seed) => (seed..seed + 1, true, false),
        None => {
            let first = env_u64("CTX_DIFF_FIRST").unwrap_or(0);
            match env_u64("CTX_DIFF_MODULES") {
                Some(count) => (first..first + count, false, false),
                None => (first..first + family.modules_default, false, true),
            }
        }
    };
    for seed in seeds {
        if bounded && started.elapsed() > family.time_max {
            println!(
                "runtime differential ({}): stopped at seed {seed}, time is up",
                family.name
            );
            break;
        }
        // A panic (in a runner or in the test) is a divergence of its seed.
        let module =
            std::panic::AssertUnwindSafe(|| (family.run_module)(seed, &mut stats, verbose));
        if std::panic::catch_unwind(module).is_err() {
            let text = format!("seed {seed}: panicked (see the panic message above)");
            stats.divergences.push(text);
        }
    }
    stats.print(started.elapsed());
    assert!(stats.compiled > 0 && stats.calls > 0, "exercised nothing");
    stats
}

// ---------------------------------------------------------------------------
// Poke modules: the reset, aimed at.
//
// wasm-smith's stores that run land mostly at small addresses, and a missed
// mark shows only if a later call on the reused instance reads the stale
// byte. A poke module makes both happen on purpose. Each method
//
// 1. writes every 64 KiB window of the memory to the state (keys from a
//    data segment), so the memory each call starts with is compared between
//    the reused instance, a fresh one and plain wasmi;
// 2. maybe reads the input somewhere;
// 3. runs a random sequence of writes: every store instruction of every
//    width, with random static offsets, at addresses in every chunk of the
//    runtime's reset (its first bytes, its last bytes, across its end into
//    the next, the last bytes of the memory), and `memory.fill`, `.copy` and
//    `.init` over random ranges (empty, inside a chunk, across chunks,
//    ending at the last byte); sometimes one that traps;
// 4. dumps the memory again, under other keys.
//
// The runtime's own debug assertion (the memory equals its initial image
// after each reset) fires first in the test profile; the dumps catch the
// same misses without it, and compare what the writes did with plain wasmi.

/// Poke modules the bounded run generates (about 300 a second in the test
/// profile on the 2-core development machine, beside the wasm-smith part;
/// each of the reset bugs planted to test this test showed in most seeds).
const POKE_MODULES_DEFAULT: u64 = 1000;

/// The bounded run of poke modules stops after this long.
const POKE_RUN_TIME_MAX: Duration = Duration::from_secs(30);

/// The store instructions, with the bytes each writes.
const STORE_KINDS: [(&str, u64); 9] = [
    ("i32.store", 4),
    ("i32.store8", 1),
    ("i32.store16", 2),
    ("i64.store", 8),
    ("i64.store8", 1),
    ("i64.store16", 2),
    ("i64.store32", 4),
    ("f32.store", 4),
    ("f64.store", 8),
];

/// The most input a poke call gets (it fits wherever a method reads it).
const POKE_INPUT_BYTES_MAX: u64 = 64;

/// The imports of a poke module, with their function indices.
const POKE_INPUT_READ: u32 = 0;
const POKE_STORAGE_WRITE: u32 = 1;

/// What a poke module is made of, as it is generated.
struct Poker<'a> {
    rng: &'a mut ChaCha8Rng,
    memory_bytes: u64,
    chunk_bytes: u64,
    /// The ranges the active data segments fill with random bytes: copy
    /// sources that differ from most destinations.
    filled: Vec<Range<u64>>,
    /// The passive segments' lengths, by data index from `passive_first`.
    passive: Vec<u64>,
    passive_first: u32,
    /// Operations generated, by kind, for the statistics.
    ops: &'a mut BTreeMap<&'static str, u64>,
}

impl Poker<'_> {
    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn chunks(&self) -> u64 {
        self.memory_bytes.div_ceil(self.chunk_bytes)
    }

    /// The first address of a write of `len` bytes inside the memory, aimed
    /// at a random chunk: its first byte, its end (the write ending there or
    /// crossing into the next chunk), anywhere in it, or the end of the
    /// memory.
    fn target(&mut self, len: u64) -> u64 {
        assert!(len <= self.memory_bytes);
        let chunk = self.below(self.chunks());
        let start = chunk * self.chunk_bytes;
        let end = start + self.chunk_bytes;
        let address = match self.below(8) {
            0 => self.memory_bytes - len,
            1 => start,
            // Its last byte at end - 1 - k: for k < len - 1 it crosses.
            2..=4 => (end - 1).saturating_sub(self.below(len)),
            _ => start + self.below(self.chunk_bytes),
        };
        address.min(self.memory_bytes - len)
    }

    /// The length of a bulk write: empty, short, up to three chunks, rarely
    /// a large share of the memory.
    fn bulk_len(&mut self) -> u64 {
        let len = match self.below(12) {
            0 | 1 => 0,
            2..=5 => 1 + self.below(64),
            6..=10 => 1 + self.below(3 * self.chunk_bytes),
            _ => self.below(self.memory_bytes / 2),
        };
        len.min(self.memory_bytes)
    }

    fn count(&mut self, what: &'static str) {
        *self.ops.entry(what).or_default() += 1;
    }

    /// A store of a random kind with a random static offset, aimed by
    /// [`Poker::target`] (the offset included).
    fn store(&mut self, body: &mut wasm_encoder::Function) {
        use wasm_encoder::Instruction as I;
        let kind = self.below(STORE_KINDS.len() as u64) as usize;
        let (name, width) = STORE_KINDS[kind];
        self.count(name);
        let target = self.target(width);
        let offset = match self.below(4) {
            0 | 1 => 0,
            // Often in another chunk than the address.
            2 => self.below(2 * self.chunk_bytes + 1).min(target),
            _ => self.below(target + 1),
        };
        if offset != 0 {
            self.count("store with an offset");
        }
        let memarg = wasm_encoder::MemArg {
            offset,
            align: u32::try_from(self.below(u64::from(width.trailing_zeros()) + 1)).unwrap(),
            memory_index: 0,
        };
        body.instruction(&I::I32Const(address_i32(target - offset)));
        let bits = self.rng.next_u64();
        // No NaNs: not what this test is about.
        let f32_value = Some(f32::from_bits(bits as u32)).filter(|x| !x.is_nan());
        let f64_value = Some(f64::from_bits(bits)).filter(|x| !x.is_nan());
        let (value, store) = match kind {
            0 => (I::I32Const(bits as i32), I::I32Store(memarg)),
            1 => (I::I32Const(bits as i32), I::I32Store8(memarg)),
            2 => (I::I32Const(bits as i32), I::I32Store16(memarg)),
            3 => (I::I64Const(bits as i64), I::I64Store(memarg)),
            4 => (I::I64Const(bits as i64), I::I64Store8(memarg)),
            5 => (I::I64Const(bits as i64), I::I64Store16(memarg)),
            6 => (I::I64Const(bits as i64), I::I64Store32(memarg)),
            7 => (I::F32Const(f32_value.unwrap_or(-1.5)), I::F32Store(memarg)),
            _ => (I::F64Const(f64_value.unwrap_or(-1.5)), I::F64Store(memarg)),
        };
        body.instruction(&value);
        body.instruction(&store);
    }

    /// A `memory.fill`, `memory.copy` or `memory.init` (if there are
    /// passive segments) over a random range.
    fn bulk(&mut self, body: &mut wasm_encoder::Function) {
        use wasm_encoder::Instruction as I;
        let op = self.below(3);
        if op == 2 && !self.passive.is_empty() {
            let segment = self.below(self.passive.len() as u64) as usize;
            let segment_len = self.passive[segment];
            let source = self.below(segment_len + 1);
            let len = match self.below(4) {
                0 => 0,
                _ => self.below(segment_len - source + 1),
            };
            let destination = self.target(len);
            self.count_bulk("memory.init", destination, len);
            body.instruction(&I::I32Const(address_i32(destination)));
            body.instruction(&I::I32Const(address_i32(source)));
            body.instruction(&I::I32Const(address_i32(len)));
            body.instruction(&I::MemoryInit {
                mem: 0,
                data_index: self.passive_first + segment as u32,
            });
            return;
        }
        let len = self.bulk_len();
        let destination = self.target(len);
        body.instruction(&I::I32Const(address_i32(destination)));
        if op == 0 {
            self.count_bulk("memory.fill", destination, len);
            body.instruction(&I::I32Const(self.rng.next_u64() as i32));
            body.instruction(&I::I32Const(address_i32(len)));
            body.instruction(&I::MemoryFill(0));
            return;
        }
        self.count_bulk("memory.copy", destination, len);
        let source = match self.below(2) {
            0 if !self.filled.is_empty() => {
                let k = self.below(self.filled.len() as u64) as usize;
                let filled = self.filled[k].clone();
                filled.start + self.below(filled.end - filled.start)
            }
            _ => self.below(self.memory_bytes + 1),
        };
        body.instruction(&I::I32Const(address_i32(
            source.min(self.memory_bytes - len),
        )));
        body.instruction(&I::I32Const(address_i32(len)));
        body.instruction(&I::MemoryCopy {
            src_mem: 0,
            dst_mem: 0,
        });
    }

    fn count_bulk(&mut self, name: &'static str, destination: u64, len: u64) {
        self.count(name);
        if len == 0 {
            self.count("bulk, empty");
        } else if destination / self.chunk_bytes != (destination + len - 1) / self.chunk_bytes {
            self.count("bulk, across chunks");
        }
        if len != 0 && destination + len == self.memory_bytes {
            self.count("bulk, to the last byte");
        }
    }

    /// A write that traps: a store or a fill past the end of the memory.
    fn trap(&mut self, body: &mut wasm_encoder::Function) {
        use wasm_encoder::Instruction as I;
        self.count("out of bounds (traps)");
        let beyond = 1 + self.below(8);
        body.instruction(&I::I32Const(address_i32(self.memory_bytes - 8 + beyond)));
        if self.below(2) == 0 {
            body.instruction(&I::I64Const(-1));
            body.instruction(&I::I64Store(wasm_encoder::MemArg {
                offset: 0,
                align: 0,
                memory_index: 0,
            }));
        } else {
            body.instruction(&I::I32Const(0x5a));
            body.instruction(&I::I32Const(8));
            body.instruction(&I::MemoryFill(0));
        }
    }

    /// Writes every window of the memory to the state, window `w` under the
    /// key at `keys_at + 32 * w`.
    fn dump(&self, body: &mut wasm_encoder::Function, keys_at: u64) {
        use wasm_encoder::Instruction as I;
        let windows = self.memory_bytes.div_ceil(DUMP_WINDOW_BYTES);
        for window in 0..windows {
            let start = window * DUMP_WINDOW_BYTES;
            let len = (self.memory_bytes - start).min(DUMP_WINDOW_BYTES);
            body.instruction(&I::I32Const(address_i32(keys_at + 32 * window)));
            body.instruction(&I::I32Const(address_i32(start)));
            body.instruction(&I::I32Const(address_i32(len)));
            body.instruction(&I::Call(POKE_STORAGE_WRITE));
        }
    }

    /// A method: dump, the writes (and maybe an input read), dump.
    fn method(&mut self, keys_at: u64) -> wasm_encoder::Function {
        use wasm_encoder::Instruction as I;
        let mut body = wasm_encoder::Function::new([]);
        let windows = self.memory_bytes.div_ceil(DUMP_WINDOW_BYTES);
        self.dump(&mut body, keys_at);
        let writes = 4 + self.below(37);
        let input_at = (self.below(2) == 0).then(|| self.below(writes));
        let trap_at = (self.below(10) == 0).then(|| self.below(writes));
        for k in 0..writes {
            if input_at == Some(k) {
                self.count("input_read");
                let at = self.target(POKE_INPUT_BYTES_MAX);
                body.instruction(&I::I32Const(address_i32(at)));
                body.instruction(&I::Call(POKE_INPUT_READ));
            }
            if trap_at == Some(k) {
                self.trap(&mut body);
            }
            if self.below(3) == 0 {
                self.bulk(&mut body);
            } else {
                self.store(&mut body);
            }
        }
        self.dump(&mut body, keys_at + 32 * windows);
        body.instruction(&I::End);
        body
    }
}

fn address_i32(address: u64) -> i32 {
    i32::try_from(address).expect("poke memories are small")
}

/// Generates the poke module of `seed` (see above), runs its calls on the
/// three runners and records what it saw in `stats`.
fn run_poke_module(seed: u64, stats: &mut Stats, verbose: bool) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    stats.generated += 1;
    let (wasm, ops) = poke_module(&mut rng);
    for (what, count) in ops {
        *stats.pokes.entry(what).or_default() += count;
    }
    let subject = Subject {
        seed,
        wasm: &wasm,
        hint: "",
        next_call: poke_call,
        wrapper_chunks: 0,
        keep_writes: false,
    };
    check_module(&subject, &mut rng, stats, verbose);
}

/// A poke module: its bytes and the operations it has, by kind.
fn poke_module(rng: &mut ChaCha8Rng) -> (Vec<u8>, BTreeMap<&'static str, u64>) {
    use wasm_encoder::{
        CodeSection, ConstExpr, DataCountSection, DataSection, EntityType, ExportKind,
        ExportSection, FunctionSection, ImportSection, MemorySection, MemoryType, TypeSection,
        ValType,
    };
    // Memories of 1 to 8 pages: chunks of 1 KiB to 8 KiB, 40 to 64 of them.
    let pages = match rng.next_u64() % 8 {
        0..=2 => 1,
        3 | 4 => 2,
        5 => 3,
        6 => 4,
        _ => 5 + rng.next_u64() % 4,
    };
    let memory_bytes = pages * DUMP_WINDOW_BYTES;
    let mut ops = BTreeMap::new();
    let mut poker = Poker {
        rng,
        memory_bytes,
        chunk_bytes: reset_chunk_bytes(memory_bytes),
        filled: Vec::new(),
        passive: Vec::new(),
        passive_first: 0,
        ops: &mut ops,
    };
    // The data: random bytes here and there, the dump keys (last, so that
    // no other segment overwrites them), passive segments for memory.init.
    let mut data = DataSection::new();
    for _ in 0..1 + poker.below(6) {
        let len = 1 + poker.below(2 * poker.chunk_bytes);
        let at = poker.target(len);
        let mut bytes = vec![0u8; len as usize];
        poker.rng.fill_bytes(&mut bytes);
        data.active(0, &ConstExpr::i32_const(address_i32(at)), bytes);
        poker.filled.push(at..at + len);
    }
    let windows = memory_bytes.div_ceil(DUMP_WINDOW_BYTES);
    let keys_len = 2 * windows * 32;
    let keys_at = poker.target(keys_len);
    // "b03 ..." for window 3 before the writes, "a03 ..." after (a key
    // shows as its first 4 bytes in a divergence).
    let keys: Vec<u8> = (0..2 * windows)
        .flat_map(|k| {
            let phase = if k < windows { 'b' } else { 'a' };
            let key = format!("{phase}{:02} poke: a window of the memory", k % windows);
            <[u8; 32]>::try_from(key.as_bytes()).expect("32 bytes")
        })
        .collect();
    data.active(0, &ConstExpr::i32_const(address_i32(keys_at)), keys);
    let active = 1 + poker.filled.len() as u32;
    poker.passive_first = active;
    for _ in 0..poker.below(4) {
        let len = poker.below(600);
        let mut bytes = vec![0u8; len as usize];
        poker.rng.fill_bytes(&mut bytes);
        data.passive(bytes);
        poker.passive.push(len);
    }
    let methods = 2 + poker.below(4) as u32;
    let mut code = CodeSection::new();
    for _ in 0..methods {
        code.function(&poker.method(keys_at));
    }
    let maximum = (poker.below(2) == 0).then_some(pages);
    let mut types = TypeSection::new();
    types.ty().function([], []);
    types.ty().function([ValType::I32], []);
    types.ty().function([ValType::I32; 3], []);
    let mut imports = ImportSection::new();
    imports.import("env", "input_read", EntityType::Function(1));
    imports.import("env", "storage_write", EntityType::Function(2));
    let mut functions = FunctionSection::new();
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    for k in 0..methods {
        functions.function(0);
        exports.export(&format!("poke{k}"), ExportKind::Func, 2 + k);
    }
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: pages,
        maximum,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    let mut module = wasm_encoder::Module::new();
    module
        .section(&types)
        .section(&imports)
        .section(&functions)
        .section(&memories)
        .section(&exports)
        .section(&DataCountSection { count: data.len() })
        .section(&code)
        .section(&data);
    let wasm = module.finish();
    wasmparser::validate(&wasm).expect("a poke module is valid");
    (wasm, ops)
}

/// A call of a poke module: a random method, a short input, and mostly all
/// the fuel (sometimes little, to stop it anywhere).
fn poke_call(rng: &mut ChaCha8Rng, methods: &[String], _exports: &[String]) -> Call {
    let method = methods[rng.next_u64() as usize % methods.len()].clone();
    let mut input = vec![0u8; (rng.next_u64() % (POKE_INPUT_BYTES_MAX + 1)) as usize];
    rng.fill_bytes(&mut input);
    let fuel = match rng.next_u64() % 4 {
        0 => 1 + rng.next_u64() % 20_000,
        _ => CALL_FUEL_MAX,
    };
    Call {
        method,
        input,
        fuel,
    }
}

// ---------------------------------------------------------------------------
// Hand-written cases: each pins a behaviour the runtime got wrong before the
// fixes for issue 12 (its findings 1 to 3), and that the random part did not
// reach.

/// A ctx app and the plain runner on the same module (text).
struct Both {
    app: App,
    plain: Plain,
}

impl Both {
    fn new(source: &str) -> Both {
        let wasm = wat::parse_str(source).unwrap();
        Both {
            app: App::compile(&wasm).unwrap(),
            plain: Plain::new(&wasm).unwrap(),
        }
    }

    /// Calls the runtime and plain wasmi with all the fuel.
    fn call(
        &mut self,
        method: &str,
        input: &[u8],
        state: &MapState,
    ) -> (Result<CallOutput, CallError>, Run) {
        let ctx = self.app.call(method, input, state, CALL_FUEL_MAX);
        let plain = self.plain.call(method, input, state, CALL_FUEL_MAX);
        (ctx, plain)
    }
}

fn returned_i32s(output: &CallOutput) -> Vec<i32> {
    output
        .return_value
        .chunks(4)
        .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Methods that reach `storage_read` and `storage_remove` by `return_call`
/// and return `[the host function's result, the caller's first local]`.
const TAIL_CALLS: &str = r#"
(module
  (import "env" "storage_read"   (func $storage_read (param i32 i32 i32) (result i32)))
  (import "env" "storage_remove" (func $storage_remove (param i32) (result i32)))
  (import "env" "value_return"   (func $value_return (param i32 i32)))
  (memory (export "memory") 1)
  ;; The key: 32 zero bytes at 0x100.
  (func $tail_read (result i32)
    (return_call $storage_read (i32.const 0x100) (i32.const 0x200) (i32.const 8)))
  (func $tail_remove (result i32)
    (return_call $storage_remove (i32.const 0x100)))
  ;; Returns [result, first local] (two i32s).
  (func $report (param $result i32) (param $first i32)
    (i32.store (i32.const 0) (local.get $result))
    (i32.store (i32.const 4) (local.get $first))
    (call $value_return (i32.const 0) (i32.const 8)))
  (func (export "read")
    (local $first i32)
    (local.set $first (i32.const 0x12345678))
    (call $report (call $tail_read) (local.get $first)))
  (func (export "remove")
    (local $first i32)
    (local.set $first (i32.const 0x12345678))
    (call $report (call $tail_remove) (local.get $first))))
"#;

/// The value of the first local of [`TAIL_CALLS`]'s methods.
const FIRST_LOCAL: i32 = 0x12345678;

fn zero_key_state(value: Option<&[u8]>) -> MapState {
    let mut state = MapState::default();
    if let Some(value) = value {
        state.0.insert(Key([0; 32]), value.to_vec());
    }
    state
}

/// Calls `method` of [`TAIL_CALLS`] on the runtime and on plain wasmi: both
/// must return `[result, FIRST_LOCAL]`.
fn check_tail_call(method: &str, state: &MapState, result: i32) {
    let mut both = Both::new(TAIL_CALLS);
    let (ctx, plain) = both.call(method, &[], state);
    let plain = plain.result.expect("plain wasmi runs the call");
    assert_eq!(returned_i32s(&plain), [result, FIRST_LOCAL], "plain wasmi");
    let ctx = ctx.expect("the runtime runs the call");
    assert_eq!(
        returned_i32s(&ctx),
        [result, FIRST_LOCAL],
        "the runtime: [result, caller's first local] after a return_call from {method:?}"
    );
}

/// Before (finding 2 of issue 12) the runtime answered the storage host
/// functions by suspending the call and resuming it, and wasmi wrote a
/// resumed result into the wrong slot after a `return_call`.
#[test]
fn a_tail_called_storage_read_of_an_absent_key_returns_minus_one() {
    check_tail_call("read", &zero_key_state(None), -1);
}

/// As for an absent key (finding 2 of issue 12).
#[test]
fn a_tail_called_storage_read_of_a_present_key_returns_its_length() {
    check_tail_call("read", &zero_key_state(Some(b"hello")), 5);
}

/// Before (finding 2 of issue 12) a `return_call` to `storage_remove`
/// returned its key pointer, not whether the key existed.
#[test]
fn a_tail_called_storage_remove_returns_whether_the_key_existed() {
    check_tail_call("remove", &zero_key_state(None), 0);
    check_tail_call("remove", &zero_key_state(Some(b"hello")), 1);
}

/// The largest `n` for which `run` with input `n` succeeds on plain wasmi
/// (recursion `n` deep), and its output.
fn plain_recursion_limit(plain: &Plain) -> (u32, CallOutput) {
    let state = MapState::default();
    let ok = |n: u32| {
        plain
            .call("run", &n.to_le_bytes(), &state, CALL_FUEL_MAX)
            .result
    };
    let (mut good, mut bad) = (0u32, 1u32 << 20);
    assert!(ok(good).is_ok());
    assert_eq!(ok(bad), Err(CallError::Trap("call stack exhausted".into())));
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        match ok(mid) {
            Ok(_) => good = mid,
            Err(CallError::Trap(message)) if message == "call stack exhausted" => bad = mid,
            Err(other) => panic!("recursion {mid} deep: {other:?}"),
        }
    }
    (good, ok(good).unwrap())
}

/// Recursion `n` deep (`n` the input) that ends in a `memory.fill`.
const RECURSION_THEN_FILL: &str = r#"
(module
  (import "env" "input_read"   (func $input_read (param i32)))
  (import "env" "value_return" (func $value_return (param i32 i32)))
  (memory (export "memory") 1)
  (func $rec (param $n i32)
    (if (i32.eqz (local.get $n))
      (then (memory.fill (i32.const 64) (i32.const 0xab) (i32.const 16)))
      (else (call $rec (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "run")
    (call $input_read (i32.const 0))
    (call $rec (i32.load (i32.const 0)))
    (call $value_return (i32.const 64) (i32.const 16))))
"#;

/// Recursion `n` deep (`n` the input) in a function with 200 locals.
fn recursion_with_many_locals() -> String {
    let locals = "i64 ".repeat(200);
    format!(
        r#"
(module
  (import "env" "input_read"   (func $input_read (param i32)))
  (import "env" "value_return" (func $value_return (param i32 i32)))
  (memory (export "memory") 1)
  (func $rec (param $n i32) (local {locals})
    (if (i32.eqz (local.get $n))
      (then (i32.store (i32.const 64) (i32.const 7)))
      (else (call $rec (i32.sub (local.get $n) (i32.const 1))))))
  (func (export "run")
    (call $input_read (i32.const 0))
    (call $rec (i32.load (i32.const 0)))
    (call $value_return (i32.const 64) (i32.const 4))))
"#
    )
}

/// Recursion as deep as plain wasmi allows works in the runtime, with the
/// same output.
fn check_recursion_at_plain_limit(source: &str, what: &str) {
    let mut both = Both::new(source);
    let (limit, plain_output) = plain_recursion_limit(&both.plain);
    let (ctx, _) = both.call("run", &limit.to_le_bytes(), &MapState::default());
    let ctx = ctx.unwrap_or_else(|e| {
        panic!("{what} {limit} deep works in plain wasmi, the runtime fails: {e}")
    });
    assert_eq!(without_fuel(&Ok(ctx)), without_fuel(&Ok(plain_output)));
}

/// One level deeper than plain wasmi allows traps in the runtime too.
fn check_recursion_beyond_plain_limit(source: &str) {
    let mut both = Both::new(source);
    let (limit, _) = plain_recursion_limit(&both.plain);
    let (ctx, _) = both.call("run", &(limit + 1).to_le_bytes(), &MapState::default());
    assert_eq!(
        ctx,
        Err(CallError::Trap("call stack exhausted".into())),
        "recursion {} deep traps in plain wasmi, so it must in the runtime",
        limit + 1
    );
}

/// Before (finding 3 of issue 12) the runtime's rewrite called a helper
/// function before every bulk-memory instruction: one frame more, so
/// recursion to plain wasmi's limit ending in a `memory.fill` trapped "call
/// stack exhausted".
#[test]
fn recursion_to_plain_wasmis_limit_ending_in_memory_fill_works() {
    check_recursion_at_plain_limit(RECURSION_THEN_FILL, "recursion ending in memory.fill");
}

/// Before (finding 3 of issue 12) the runtime's rewrite added 6 scratch
/// locals to every function, so every frame was larger than plain wasmi's
/// and recursion to plain wasmi's limit trapped "call stack exhausted".
#[test]
fn recursion_to_plain_wasmis_limit_with_many_locals_works() {
    check_recursion_at_plain_limit(
        &recursion_with_many_locals(),
        "recursion in a function with 200 locals",
    );
}

/// The converse of the two above, which held before too: a fix for
/// finding 3 of issue 12 must not give the runtime more stack than plain
/// wasmi.
#[test]
fn recursion_beyond_plain_wasmis_limit_traps_in_the_runtime_too() {
    check_recursion_beyond_plain_limit(RECURSION_THEN_FILL);
    check_recursion_beyond_plain_limit(&recursion_with_many_locals());
}

/// Before (finding 1 of issue 12) wasmi's default dispatch left about 176
/// bytes of native stack behind on every refused `memory.grow` (beyond
/// APP_MEMORY_BYTES_MAX), so a method looping over one overflowed the
/// native stack, which aborts the process. So the call runs in a child
/// process (this test binary again, with [`GROW_LOOP_CHILD`] set), on a
/// thread with the least native stack the runtime promises to need.
#[test]
fn a_refused_memory_grow_in_a_loop_leaves_the_native_stack_alone() {
    const NAME: &str = "a_refused_memory_grow_in_a_loop_leaves_the_native_stack_alone";
    if let Some(iterations) = std::env::var_os(GROW_LOOP_CHILD) {
        let iterations: u32 = iterations.to_str().unwrap().parse().unwrap();
        let thread = std::thread::Builder::new()
            .stack_size(ctx_core::runtime::CALL_NATIVE_STACK_BYTES_MIN)
            .spawn(move || grow_in_a_loop(iterations))
            .unwrap();
        let output = thread.join().unwrap().expect("the call succeeds");
        assert_eq!(returned_i32s(&output), [-1, iterations as i32]);
        return;
    }
    let child = |iterations: u32| {
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env(GROW_LOOP_CHILD, iterations.to_string())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let ran = output.status.success() && stdout.contains("test result: ok. 1 passed");
        (ran, format!("{}\n{stdout}\n{stderr}", output.status))
    };
    // The small stack is enough for a short loop (the child works)...
    let (ran, report) = child(100);
    assert!(ran, "a loop of 100: {report}");
    // ...and must be for a long one.
    let (ran, report) = child(50_000);
    assert!(
        ran,
        "50 000 refused memory.grow in a loop: the child died: {report}"
    );
}

/// Set in the child process of
/// [`a_refused_memory_grow_in_a_loop_leaves_the_native_stack_alone`]: the
/// iterations of its loop.
const GROW_LOOP_CHILD: &str = "CTX_DIFF_GROW_LOOP_CHILD";

/// Loops `iterations` times over `memory.grow` of 1000 pages (64 MiB, beyond
/// APP_MEMORY_BYTES_MAX): returns [the last result (-1), iterations].
fn grow_in_a_loop(iterations: u32) -> Result<CallOutput, CallError> {
    let source = r#"
    (module
      (import "env" "input_read"   (func $input_read (param i32)))
      (import "env" "value_return" (func $value_return (param i32 i32)))
      (memory (export "memory") 1)
      (func (export "grow_loop")
        (local $i i32)
        (call $input_read (i32.const 4))
        (loop $next
          (i32.store (i32.const 0) (memory.grow (i32.const 1000)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $next (i32.lt_u (local.get $i) (i32.load (i32.const 4)))))
        (call $value_return (i32.const 0) (i32.const 8))))
    "#;
    let mut app = App::compile(&wat::parse_str(source).unwrap()).unwrap();
    app.call(
        "grow_loop",
        &iterations.to_le_bytes(),
        &MapState::default(),
        CALL_FUEL_MAX,
    )
}
