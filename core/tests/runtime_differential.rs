//! A differential test of the application runtime (`ctx_core::runtime`).
//!
//! Random ABI-conforming modules from `wasm-smith` (only the `env` host
//! functions of `docs/ABI.md` imported, one 32-bit memory exported as
//! `"memory"`, no start function) each get a sequence of calls, and every call
//! runs on three runners:
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
//! Bounded in `cargo test` ([`MODULES_DEFAULT`] modules); more with
//! `CTX_DIFF_MODULES=N` (seeds from `CTX_DIFF_FIRST`, default 0). One seed,
//! with every call printed: `CTX_DIFF_SEED=S cargo test -p ctx-core --test
//! runtime_differential random -- --nocapture`.
//!
//! Beside the random part, hand-written cases pin down behaviours the
//! runtime got wrong before (findings 1 to 3 of issue 12), which the random
//! part did not reach; each test's comment says what went wrong.

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
}

/// A call's result and the fuel it consumed (also when it failed).
struct Run {
    result: Result<CallOutput, CallError>,
    fuel_used: u64,
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
        store.set_fuel(fuel).expect("fuel metering is on");
        let func = instance.get_func(&store, method).expect("a method");
        let outcome = func.call(&mut store, &[], &mut []);
        let fuel_used = fuel - store.get_fuel().expect("fuel metering is on");
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
        Run { result, fuel_used }
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

/// The wrapper `dump:<method>`: reads the input to address 0, calls the
/// method, returns (a prefix of) the memory as its return value, and writes
/// the mutable globals' values to the state, so that what the random code
/// leaves in memory and globals is compared between the runners (and the
/// reset is checked by the next call). Uses only the host functions the
/// module imports.
fn wrapper(shape: &Shape, method: u32) -> wasm_encoder::Function {
    use wasm_encoder::Instruction as I;
    use wasmparser::ValType;
    let dump_bytes = shape.memory_bytes.min(65536) as i32;
    let mut body = wasm_encoder::Function::new([]);
    if let Some(input_read) = shape.import("input_read")
        && dump_bytes > 0
    {
        body.instruction(&I::I32Const(0));
        body.instruction(&I::Call(input_read));
    }
    body.instruction(&I::Call(method));
    if let Some(value_return) = shape.import("value_return") {
        body.instruction(&I::I32Const(0));
        body.instruction(&I::I32Const(dump_bytes));
        body.instruction(&I::Call(value_return));
    }
    let globals = &shape.mutable_globals[..shape.mutable_globals.len().min(4)];
    if let Some(storage_write) = shape.import("storage_write")
        && !globals.is_empty()
        && dump_bytes >= 64
    {
        // Each global as an i64 at 8 * k (a reference: its nullness).
        for (k, &(index, ty)) in globals.iter().enumerate() {
            body.instruction(&I::I32Const(8 * k as i32));
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
            body.instruction(&I::I64Store(wasm_encoder::MemArg {
                offset: 0,
                align: 3,
                memory_index: 0,
            }));
        }
        // Key: the last 32 bytes of the dumped prefix; value: the globals.
        body.instruction(&I::I32Const(dump_bytes - 32));
        body.instruction(&I::I32Const(0));
        body.instruction(&I::I32Const(8 * globals.len() as i32));
        body.instruction(&I::Call(storage_write));
    }
    body.instruction(&I::End);
    body
}

/// Makes a wasm-smith module an ABI module: exports memory 0 as `"memory"`
/// (wasm-smith names its exports itself) unless it does already, and adds a
/// `dump:<method>` wrapper method (see [`wrapper`]) for each of up to
/// [`WRAPPERS_MAX`] methods. Returns the module and its wrappers' names;
/// `None` if an export already has one of the names (other than memory 0
/// as `"memory"`).
fn abi_module(wasm: &[u8], shape: &Shape) -> Option<(Vec<u8>, Vec<String>)> {
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
        wrappers.push((method.type_index, wrapper(shape, method.index)));
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

/// What the random part saw, over all modules.
struct Stats {
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
    divergences: Vec<String>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
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
            divergences: Vec::new(),
        }
    }
}

impl Stats {
    /// The summary, written to the standard error directly (past the test
    /// harness's capture) so that every run shows what it exercised.
    fn print(&self, elapsed: Duration) {
        let mut out = String::new();
        let rejected: u64 = self.rejected.values().sum();
        let attempted = self.compiled + rejected;
        let _ = writeln!(
            out,
            "runtime differential: {} modules generated ({} generator failures, {} not ABI), \
             {} compiled, {} rejected ({:.1}%), {} without methods, {} dump: wrappers; \
             {} calls in {:.1?}",
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
        1..=5 => (rng.next_u64() % 4096) as usize,
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

/// Generates the module of `seed`, runs its calls on the three runners and
/// records what it saw in `stats`.
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
    let Some((wasm, wrappers)) = abi_module(&smith_wasm, &shape) else {
        stats.not_abi += 1;
        return;
    };
    stats.wrappers += wrappers.len() as u64;
    if verbose {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("runtime_differential-{seed}.wasm"));
        std::fs::write(&path, &wasm).unwrap();
        println!(
            "seed {seed}: module of {} bytes in {}",
            wasm.len(),
            path.display()
        );
    }
    let plain = Plain::new(&wasm);
    let mut reused = match App::compile(&wasm) {
        Ok(app) => app,
        Err(error) => {
            *stats
                .rejected
                .entry(rejection_reason(&error, &plain))
                .or_default() += 1;
            return;
        }
    };
    stats.compiled += 1;
    let plain = match plain {
        Ok(plain) => plain,
        Err(error) => {
            let text = format!("seed {seed}: ctx compiles it, plain wasmi does not: {error}");
            stats.divergences.push(text);
            return;
        }
    };
    let methods = &plain.methods;
    if reused.methods() != *methods {
        let text = format!(
            "seed {seed}: methods: ctx {:?}, plain {methods:?}",
            reused.methods()
        );
        stats.divergences.push(text);
        return;
    }
    if methods.is_empty() {
        stats.no_methods += 1;
    }
    let exports: Vec<String> = plain
        .module
        .exports()
        .map(|e| e.name().to_owned())
        .collect();
    stats.tail_call_modules += u64::from(shape.tail_calls_state_import);
    let hint = if shape.tail_calls_state_import {
        " [the module tail-calls a state import: finding 2 of issue 12?]"
    } else {
        ""
    };
    let mut state = MapState::default();
    state.0.insert(Key([0; 32]), b"zero key's value".to_vec());
    state.0.insert(Key([0xff; 32]), vec![7; 100]);
    let calls = if methods.is_empty() {
        2
    } else {
        4 + rng.next_u64() % 12
    };
    for index in 0..calls {
        let call = random_call(&mut rng, methods, &exports);
        let at = format!(
            "seed {seed} call {index} ({:?}, {} input bytes, fuel {})",
            call.method,
            call.input.len(),
            call.fuel
        );
        let first = reused.call(&call.method, &call.input, &state, call.fuel);
        let fresh = App::compile(&wasm)
            .expect("compiled once, compiles again")
            .call(&call.method, &call.input, &state, call.fuel);
        let plain_run = plain.call(&call.method, &call.input, &state, call.fuel);
        stats.calls += 1;
        *stats.outcomes.entry(class(&first)).or_default() += 1;
        if verbose {
            println!(
                "{at}:\n  reused {}\n  plain  {}",
                brief(&first),
                brief(&plain_run.result)
            );
        }
        if first != fresh {
            let text = format!(
                "{at}: reused and fresh instances differ{hint}\n  reused {}\n  fresh  {}",
                brief(&first),
                brief(&fresh)
            );
            stats.divergences.push(text);
            return;
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
                     (fuel used {})",
                    brief(&first),
                    brief(&plain_run.result),
                    plain_run.fuel_used
                );
                stats.divergences.push(text);
                return;
            }
        }
        if let (Ok(ctx), Ok(plain)) = (&first, &plain_run.result) {
            let ratio = ctx.fuel_used as f64 / plain.fuel_used.max(1) as f64;
            if ratio > stats.fuel_ratio_max.0 && plain.fuel_used >= 100 {
                stats.fuel_ratio_max = (ratio, seed);
            }
        }
        if let Ok(output) = &first {
            state.apply(&output.writes);
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number")),
    )
}

#[test]
fn random_modules_agree_on_all_three_runners() {
    let worker = std::thread::Builder::new()
        .name("runtime-differential".into())
        .stack_size(RANDOM_PART_STACK_BYTES)
        .spawn(random_part)
        .unwrap();
    let stats = worker.join().expect("the random part panicked");
    assert!(
        stats.divergences.is_empty(),
        "{} divergences (see DIVERGENCE above)",
        stats.divergences.len()
    );
}

fn random_part() -> Stats {
    let started = Instant::now();
    let mut stats = Stats::default();
    let (seeds, verbose, bounded) = match env_u64("CTX_DIFF_SEED") {
        Some(seed) => (seed..seed + 1, true, false),
        None => {
            let first = env_u64("CTX_DIFF_FIRST").unwrap_or(0);
            match env_u64("CTX_DIFF_MODULES") {
                Some(count) => (first..first + count, false, false),
                None => (first..first + MODULES_DEFAULT, false, true),
            }
        }
    };
    for seed in seeds {
        if bounded && started.elapsed() > BOUNDED_RUN_TIME_MAX {
            println!("runtime differential: stopped at seed {seed}, time is up");
            break;
        }
        // A panic (in a runner or in the test) is a divergence of its seed.
        let module = std::panic::AssertUnwindSafe(|| run_module(seed, &mut stats, verbose));
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
