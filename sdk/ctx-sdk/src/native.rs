//! Running an app natively, in-process: the host functions for a call that
//! is not in WebAssembly, the engine's [`Application`] for an SDK app
//! ([`NativeApp`]), and the one-replica test harness ([`Harness`]).
//!
//! Owns these invariants:
//!
//! - **A native call behaves as the compiled one** for everything but fuel:
//!   the same writes (the final value of each key, sorted), the same return
//!   value, the same failures. `fail`, an `Err`, a panic and an exceeded
//!   limit all fail the call with no effect, with the messages the runtime
//!   gives (`docs/ABI.md`). There is no fuel natively: a method that never
//!   ends hangs a native run (`spin` is exercised compiled only).
//! - **The current call is scoped.** Host functions reach the call being run
//!   through a thread-local pointer set by [`Scope`] for exactly the
//!   duration of the call and reset when it ends, unwinding included; a
//!   host function takes the pointer out while it uses it, so no two
//!   references to a call exist at once. Host functions used outside a
//!   call panic with a message that says so (a bug in a test, not an app).

use std::any::Any;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;

use ctx_core::Hash;
use ctx_core::limits::{
    CALL_LOGS_MAX, CALL_WRITES_MAX, INPUT_BYTES_MAX, LOG_LINE_BYTES_MAX, METHOD_NAME_BYTES_MAX,
    RETURN_BYTES_MAX, VALUE_BYTES_MAX,
};
use ctx_core::runtime::{AppError, StateRead, encode_args, wasm_from_source};
use ctx_core::state::State;
use ctx_core::{Application, Key};

pub use ctx_core::CallError;
pub use ctx_core::runtime::CallOutput;

use crate::value::Outcome;
use crate::{App, State as AppState};

/// One call in progress: the committed state it reads and what it did.
struct NativeCall<'a> {
    state: &'a dyn StateRead,
    overlay: BTreeMap<Key, Option<Vec<u8>>>,
    logs: Vec<String>,
}

thread_local! {
    static CURRENT: Cell<*mut NativeCall<'static>> = const { Cell::new(ptr::null_mut()) };
}

/// Why a native call stopped early: carried by an unwind that does not run
/// the panic hook (`fail`, an exceeded limit).
struct Abort(CallError);

/// Sets the current call for its lifetime and puts the previous one back.
struct Scope {
    previous: *mut NativeCall<'static>,
}

impl Scope {
    fn enter(call: &mut NativeCall<'_>) -> Scope {
        // The lifetime is erased to store the pointer in the thread-local;
        // `Scope` is dropped before `call`'s borrow ends (it is created and
        // dropped inside `run_scoped`), so the pointer never outlives it.
        let erased = ptr::from_mut(call).cast::<NativeCall<'static>>();
        Scope {
            previous: CURRENT.replace(erased),
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.set(self.previous);
    }
}

/// Runs `body` as the current call; a panic or an abort is caught.
fn run_scoped<R>(call: &mut NativeCall<'_>, body: impl FnOnce() -> R) -> Result<R, CallError> {
    let scope = Scope::enter(call);
    let result = panic::catch_unwind(AssertUnwindSafe(body));
    drop(scope);
    result.map_err(failure_of)
}

fn failure_of(payload: Box<dyn Any + Send>) -> CallError {
    match payload.downcast::<Abort>() {
        Ok(abort) => abort.0,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            CallError::AppFailed(cut(&crate::panic_message(message)))
        }
    }
}

/// A failure's message as the runtime keeps it: at most
/// `LOG_LINE_BYTES_MAX` bytes, invalid UTF-8 replaced.
fn cut(message: &str) -> String {
    let bytes = message.as_bytes();
    String::from_utf8_lossy(&bytes[..bytes.len().min(LOG_LINE_BYTES_MAX)]).into_owned()
}

fn abort(error: CallError) -> ! {
    panic::resume_unwind(Box::new(Abort(error)))
}

/// Runs `use_call` on the current call, taking it out meanwhile.
fn with_call<R>(use_call: impl FnOnce(&mut NativeCall<'_>) -> R) -> R {
    let current = CURRENT.replace(ptr::null_mut());
    assert!(
        !current.is_null(),
        "ctx-sdk storage used outside a call: run the app through ctx_sdk::native::Harness or NativeApp"
    );
    struct PutBack(*mut NativeCall<'static>);
    impl Drop for PutBack {
        fn drop(&mut self) {
            CURRENT.set(self.0);
        }
    }
    let _put_back = PutBack(current);
    // SAFETY: `current` was set by `Scope::enter` from a `&mut NativeCall`
    // whose borrow lasts until the scope is dropped, which has not happened
    // (the scope is what we run inside). It was taken out of the
    // thread-local, so this is the only reference to the call until
    // `PutBack` restores it.
    use_call(unsafe { &mut *current })
}

fn too_long(what: &str, len: usize, name: &str, max: usize) -> CallError {
    CallError::LimitExceeded(format!("{what} of {len} bytes exceeds {name} {max}"))
}

fn writes_exceeded() -> CallError {
    CallError::LimitExceeded(format!(
        "more than CALL_WRITES_MAX {CALL_WRITES_MAX} distinct keys written"
    ))
}

pub(crate) fn storage_read(key: &[u8; 32]) -> Option<Vec<u8>> {
    with_call(|call| {
        let key = Key(*key);
        match call.overlay.get(&key) {
            Some(written) => written.clone(),
            None => call.state.get(&key).map(<[u8]>::to_vec),
        }
    })
}

pub(crate) fn storage_write(key: &[u8; 32], value: &[u8]) {
    let refused = with_call(|call| {
        if value.len() > VALUE_BYTES_MAX {
            return Some(too_long(
                "value",
                value.len(),
                "VALUE_BYTES_MAX",
                VALUE_BYTES_MAX,
            ));
        }
        let key = Key(*key);
        if !call.overlay.contains_key(&key) && call.overlay.len() >= CALL_WRITES_MAX {
            return Some(writes_exceeded());
        }
        call.overlay.insert(key, Some(value.to_vec()));
        None
    });
    if let Some(error) = refused {
        abort(error);
    }
}

pub(crate) fn storage_remove(key: &[u8; 32]) -> bool {
    let outcome = with_call(|call| {
        let key = Key(*key);
        if let Some(value) = call.overlay.get_mut(&key) {
            return Ok(value.take().is_some());
        }
        if call.overlay.len() >= CALL_WRITES_MAX {
            return Err(writes_exceeded());
        }
        let existed = call.state.get(&key).is_some();
        call.overlay.insert(key, None);
        Ok(existed)
    });
    outcome.unwrap_or_else(|error| abort(error))
}

pub(crate) fn log(line: &str) {
    let refused = with_call(|call| {
        if line.len() > LOG_LINE_BYTES_MAX {
            return Some(too_long(
                "log line",
                line.len(),
                "LOG_LINE_BYTES_MAX",
                LOG_LINE_BYTES_MAX,
            ));
        }
        if call.logs.len() >= CALL_LOGS_MAX {
            return Some(CallError::LimitExceeded(format!(
                "more than CALL_LOGS_MAX {CALL_LOGS_MAX} log lines"
            )));
        }
        call.logs.push(line.to_owned());
        None
    });
    if let Some(error) = refused {
        abort(error);
    }
}

pub(crate) fn fail(message: &str) -> ! {
    abort(CallError::AppFailed(cut(message)))
}

/// Runs one call of `A` natively: what `App::call` does for a module.
fn call_native<A: App>(
    method: &str,
    input: &[u8],
    state: &dyn StateRead,
) -> Result<CallOutput, CallError> {
    if method.len() > METHOD_NAME_BYTES_MAX {
        return Err(too_long(
            "method name",
            method.len(),
            "METHOD_NAME_BYTES_MAX",
            METHOD_NAME_BYTES_MAX,
        ));
    }
    if input.len() > INPUT_BYTES_MAX {
        return Err(too_long(
            "input",
            input.len(),
            "INPUT_BYTES_MAX",
            INPUT_BYTES_MAX,
        ));
    }
    if A::ABI.method(method).is_none() {
        return Err(CallError::UnknownMethod(method.to_owned()));
    }
    let mut call = NativeCall {
        state,
        overlay: BTreeMap::new(),
        logs: Vec::new(),
    };
    let dispatched = run_scoped(&mut call, || A::dispatch(method, input))?;
    let return_value = match dispatched {
        None => return Err(CallError::UnknownMethod(method.to_owned())),
        Some(Err(message)) => return Err(CallError::AppFailed(cut(&message))),
        Some(Ok(value)) => value,
    };
    if return_value.len() > RETURN_BYTES_MAX {
        return Err(too_long(
            "return value",
            return_value.len(),
            "RETURN_BYTES_MAX",
            RETURN_BYTES_MAX,
        ));
    }
    Ok(CallOutput {
        writes: call.overlay.into_iter().collect(),
        return_value,
        logs: call.logs,
        fuel_used: 0,
    })
}

/// An SDK app run natively behind the engine's [`Application`] interface:
/// what a replica or the harness calls instead of the compiled module.
/// Fuel is not metered (`fuel_used` is 0).
pub struct NativeApp<A> {
    app: PhantomData<fn() -> A>,
}

impl<A: App> NativeApp<A> {
    pub fn new() -> NativeApp<A> {
        NativeApp { app: PhantomData }
    }
}

impl<A: App> Default for NativeApp<A> {
    fn default() -> Self {
        NativeApp::new()
    }
}

impl<A: App> Application for NativeApp<A> {
    fn call(
        &mut self,
        method: &str,
        input: &[u8],
        state: &dyn StateRead,
        _fuel: u64,
    ) -> Result<CallOutput, CallError> {
        call_native::<A>(method, input, state)
    }
}

/// One replica of an app, in-process: calls apply their writes to a state
/// (the engine's [`State`], so its root is the root every member of a
/// context computes), views discard them. The app runs natively
/// ([`Harness::native`]) or as a compiled module ([`Harness::module`]),
/// which is how a test checks the two agree.
pub struct Harness {
    app: Box<dyn Application>,
    state: State,
}

/// A module the harness cannot run.
pub type ModuleError = AppError;

impl Harness {
    /// `A`, run natively.
    pub fn native<A: App + 'static>() -> Harness {
        Harness::with(Box::new(NativeApp::<A>::new()))
    }

    /// A WebAssembly module (binary or text), run by the engine's runtime
    /// with its fuel and limits.
    pub fn module(source: &[u8]) -> Result<Harness, ModuleError> {
        let wasm = wasm_from_source(source)?;
        let app = ctx_core::App::compile(&wasm)?;
        Ok(Harness::with(Box::new(app)))
    }

    /// Any implementation of the engine's interface.
    pub fn with(app: Box<dyn Application>) -> Harness {
        Harness {
            app,
            state: State::default(),
        }
    }

    /// Calls `method` with `args` (the argument convention: each argument's
    /// bytes, framed here) and applies its writes if it succeeds.
    pub fn call<A: AsRef<[u8]>>(
        &mut self,
        method: &str,
        args: &[A],
    ) -> Result<CallOutput, CallError> {
        self.call_input(method, &encode_args(args))
    }

    /// Calls `method` with `input` as it is.
    pub fn call_input(&mut self, method: &str, input: &[u8]) -> Result<CallOutput, CallError> {
        let output = self
            .app
            .call(method, input, &self.state, ctx_core::limits::CALL_FUEL_MAX)?;
        self.state.apply(output.writes.clone());
        Ok(output)
    }

    /// Runs `method` as a view: its return value, its writes discarded.
    pub fn view<A: AsRef<[u8]>>(&mut self, method: &str, args: &[A]) -> Result<Vec<u8>, CallError> {
        self.app
            .call(
                method,
                &encode_args(args),
                &self.state,
                ctx_core::limits::CALL_FUEL_MAX,
            )
            .map(|output| output.return_value)
    }

    /// Runs `body` on `A`'s state natively, as one call: its writes are
    /// applied if it returns a success (a value, or an `Ok`), and discarded
    /// if it returns an `Err`, fails or panics (then the error is the
    /// failed call's).
    pub fn invoke<A: AppState, R: Outcome>(
        &mut self,
        body: impl FnOnce(&mut A) -> R,
    ) -> Result<R, CallError> {
        let mut call = NativeCall {
            state: &self.state,
            overlay: BTreeMap::new(),
            logs: Vec::new(),
        };
        let result = run_scoped(&mut call, || body(&mut A::load()))?;
        if result.is_success() {
            let writes: Vec<_> = call.overlay.into_iter().collect();
            self.state.apply(writes);
        }
        Ok(result)
    }

    /// Reads `A`'s state natively; nothing is written.
    pub fn inspect<A: AppState, R>(&self, body: impl FnOnce(&A) -> R) -> Result<R, CallError> {
        let mut call = NativeCall {
            state: &self.state,
            overlay: BTreeMap::new(),
            logs: Vec::new(),
        };
        run_scoped(&mut call, || body(&A::load()))
    }

    /// The state root, as every member of a context with this state has it.
    pub fn root(&self) -> Hash {
        self.state.root()
    }

    /// The value at a raw key.
    pub fn get(&self, key: &[u8; 32]) -> Option<&[u8]> {
        self.state.get(&Key(*key))
    }

    /// Every entry, sorted by key.
    pub fn entries(&self) -> Vec<(Key, &[u8])> {
        self.state.entries_sorted()
    }

    pub fn state(&self) -> &State {
        &self.state
    }
}
