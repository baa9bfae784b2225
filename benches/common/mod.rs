//! What the benchmarks share: the three workloads, histories made by a real
//! node, the bundled apps written in Rust behind the engine's
//! [`Application`] interface, and a bare wasmi call loop.

#![allow(dead_code)]

pub mod repair;
#[path = "../../tests/support/mod.rs"]
pub mod support;

use ctx_core::runtime::{CallError, CallOutput, StateRead, encode_args};
use ctx_core::{Application, Config, ContextId, Key, MemberId, Node, Phase, Record, Time};
use hashbrown::HashMap;
use support::Net;

/// One of the three measured workloads: a bundled app and the call it
/// repeats.
#[derive(Clone, Copy, Debug)]
pub enum Workload {
    KvSet,
    CounterAdd,
    BankTransfer,
}

/// Accounts the bank workload opens and moves money between.
pub const BANK_ACCOUNTS: u64 = 100;

impl Workload {
    pub const ALL: [Workload; 3] = [
        Workload::KvSet,
        Workload::CounterAdd,
        Workload::BankTransfer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::KvSet => "kv-set",
            Workload::CounterAdd => "counter-add",
            Workload::BankTransfer => "bank-transfer",
        }
    }

    pub fn app(self) -> &'static str {
        match self {
            Workload::KvSet => support::KV,
            Workload::CounterAdd => support::COUNTER,
            Workload::BankTransfer => support::BANK,
        }
    }

    /// The `index`-th call of the workload. kv sets a new key every time;
    /// counter adds 1 to one of 100 counters; bank first opens its accounts,
    /// then moves 1 from each account to the next.
    pub fn call(self, index: u64) -> (&'static str, Vec<u8>) {
        match self {
            Workload::KvSet => {
                let key = format!("key-{index}");
                ("set", encode_args(&[key.as_bytes(), &index.to_le_bytes()]))
            }
            Workload::CounterAdd => {
                let key = format!("counter-{}", index % 100);
                ("add", encode_args(&[key.as_bytes(), &1u64.to_le_bytes()]))
            }
            Workload::BankTransfer if index < BANK_ACCOUNTS => {
                let account = format!("account-{index}");
                let amount = 1_000_000_000u64;
                (
                    "open",
                    encode_args(&[account.as_bytes(), &amount.to_le_bytes()]),
                )
            }
            Workload::BankTransfer => {
                let from = format!("account-{}", index % BANK_ACCOUNTS);
                let to = format!("account-{}", (index + 1) % BANK_ACCOUNTS);
                let amount = 1u64;
                (
                    "transfer",
                    encode_args(&[from.as_bytes(), to.as_bytes(), &amount.to_le_bytes()]),
                )
            }
        }
    }

    /// The workload's app written in Rust, behaving as the module does for
    /// the calls the workload makes.
    pub fn native(self) -> Box<dyn Application> {
        Box::new(Native(self))
    }
}

/// A context on node 0 of `net` holding `calls` calls of `workload`, made by
/// node 0 (signed, executed and persisted as any call is).
pub fn history(workload: Workload, calls: u64, nodes: usize) -> (Net, ContextId) {
    history_with(Config::default(), workload, calls, nodes)
}

/// A configuration that takes no checkpoint within any history a bench
/// builds: every restart and catchup goes through the whole history (what
/// the replay bench measures).
pub fn whole_history() -> Config {
    Config {
        checkpoint_interval_min: u64::MAX / 4,
        ..Config::default()
    }
}

/// [`history`] with nodes of `config`.
pub fn history_with(
    config: Config,
    workload: Workload,
    calls: u64,
    nodes: usize,
) -> (Net, ContextId) {
    let mut net = Net::with_config(nodes, config);
    let context = net.context_with(0, workload.app(), &[0]);
    for index in 0..calls {
        let (method, input) = workload.call(index);
        net.nodes[0]
            .call(net.now, context, method, input)
            .expect("node 0 is a member");
        net.collect();
        net.inflight.clear();
    }
    (net, context)
}

/// Records as a node's database holds them: encoded.
pub fn encoded(records: &[Record]) -> Vec<Vec<u8>> {
    records.iter().map(Record::encode).collect()
}

pub fn decoded(records: &[Vec<u8>]) -> Vec<Record> {
    records
        .iter()
        .map(|bytes| Record::decode(bytes).expect("records decode"))
        .collect()
}

// ---------------------------------------------------------------------------
// Catchup, recorded once and replayed into a fresh node.

/// The messages a joining node (node 1) received while catching up from
/// node 0, in order, and what crossed the wire both ways.
pub struct RecordedCatchup {
    pub context: ContextId,
    pub via: MemberId,
    pub at: Time,
    pub received: Vec<Vec<u8>>,
    pub bytes_to_joiner: u64,
    pub bytes_from_joiner: u64,
    pub messages: u64,
    /// Transactions the joiner applied (its own join included).
    pub applied: usize,
}

/// Invites node 1 into `context` (held by node 0) and records its catchup.
pub fn record_catchup(net: &mut Net, context: ContextId) -> RecordedCatchup {
    let (via, joiner) = (net.ids[0], net.ids[1]);
    net.nodes[0]
        .invite(net.now, context, joiner)
        .expect("node 0 is a member");
    net.run();
    net.nodes[1]
        .join(net.now, context, via)
        .expect("node 1 does not hold it");
    net.collect();
    let mut recorded = RecordedCatchup {
        context,
        via,
        at: net.now,
        received: Vec::new(),
        bytes_to_joiner: 0,
        bytes_from_joiner: 0,
        messages: 0,
        applied: 0,
    };
    while let Some(message) = net.inflight.front() {
        recorded.messages += 1;
        if message.to == 1 {
            recorded.bytes_to_joiner += message.bytes.len() as u64;
            recorded.received.push(message.bytes.clone());
        } else {
            recorded.bytes_from_joiner += message.bytes.len() as u64;
        }
        net.deliver(0);
    }
    assert_eq!(
        net.nodes[1].phase(&context),
        Some(Phase::Member),
        "node 1 caught up"
    );
    recorded.applied = net.nodes[1].replica(&context).expect("held").applied();
    recorded
}

/// Replays a recorded catchup into a fresh node 1: the same join, the same
/// messages in the same order, so it does exactly what it did when
/// recorded (decoding, batched signature checks, applying).
pub fn replay_catchup(recorded: &RecordedCatchup) -> Node {
    let mut node = Net::fresh_node(&Config::default(), 1);
    node.join(recorded.at, recorded.context, recorded.via)
        .expect("a fresh node holds nothing");
    drain(&mut node);
    for bytes in &recorded.received {
        node.handle_message(recorded.at, recorded.via, bytes)
            .expect("the recorded messages are valid");
        drain(&mut node);
    }
    assert_eq!(node.phase(&recorded.context), Some(Phase::Member));
    assert_eq!(
        node.replica(&recorded.context).expect("held").applied(),
        recorded.applied
    );
    node
}

/// Discards a node's outputs.
pub fn drain(node: &mut Node) {
    while node.poll_persist().is_some() {}
    while node.poll_transmit().is_some() {}
    while node.poll_event().is_some() {}
}

// ---------------------------------------------------------------------------
// The bundled apps in Rust.

struct Native(Workload);

/// The arguments of a bundled app's input: a 4-byte little-endian length,
/// then the bytes, for each.
fn arguments(input: &[u8]) -> Result<Vec<&[u8]>, CallError> {
    let mut rest = input;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (length, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| CallError::AppFailed("missing argument".into()))?;
        let length = u32::from_le_bytes(*length) as usize;
        if tail.len() < length {
            return Err(CallError::AppFailed(
                "argument runs past the end of the input".into(),
            ));
        }
        out.push(&tail[..length]);
        rest = &tail[length..];
    }
    Ok(out)
}

fn key_of(name: &[u8]) -> Result<Key, CallError> {
    if name.len() > 32 {
        return Err(CallError::AppFailed("key longer than 32 bytes".into()));
    }
    let mut key = [0u8; 32];
    key[..name.len()].copy_from_slice(name);
    Ok(Key(key))
}

fn amount_of(bytes: &[u8]) -> Result<u64, CallError> {
    let bytes: [u8; 8] = bytes
        .try_into()
        .map_err(|_| CallError::AppFailed("amount must be 8 bytes (u64 little-endian)".into()))?;
    Ok(u64::from_le_bytes(bytes))
}

fn balance(state: &dyn StateRead, key: &Key) -> Option<u64> {
    state.get(key).map(|value| {
        let mut bytes = [0u8; 8];
        bytes[..value.len().min(8)].copy_from_slice(&value[..value.len().min(8)]);
        u64::from_le_bytes(bytes)
    })
}

fn output(mut writes: Vec<(Key, Option<Vec<u8>>)>) -> CallOutput {
    writes.sort_by_key(|a| a.0);
    CallOutput {
        writes,
        return_value: Vec::new(),
        logs: Vec::new(),
        fuel_used: 0,
    }
}

impl Application for Native {
    fn call(
        &mut self,
        method: &str,
        input: &[u8],
        state: &dyn StateRead,
        _fuel: u64,
    ) -> Result<CallOutput, CallError> {
        let args = arguments(input)?;
        let fail = |message: &str| Err(CallError::AppFailed(message.into()));
        match (self.0, method, args.as_slice()) {
            (Workload::KvSet, "set", [key, value]) => {
                Ok(output(vec![(key_of(key)?, Some(value.to_vec()))]))
            }
            (Workload::CounterAdd, "add", [key, amount]) => {
                let key = key_of(key)?;
                let amount = amount_of(amount)?;
                let Some(sum) = balance(state, &key).unwrap_or(0).checked_add(amount) else {
                    return fail("counter overflow");
                };
                Ok(output(vec![(key, Some(sum.to_le_bytes().to_vec()))]))
            }
            (Workload::BankTransfer, "open", [account, amount]) => {
                let key = key_of(account)?;
                let amount = amount_of(amount)?;
                if state.get(&key).is_some() {
                    return fail("account exists");
                }
                Ok(output(vec![(key, Some(amount.to_le_bytes().to_vec()))]))
            }
            (Workload::BankTransfer, "transfer", [from, to, amount]) => {
                let (from, to) = (key_of(from)?, key_of(to)?);
                let amount = amount_of(amount)?;
                let (Some(from_balance), Some(to_balance)) =
                    (balance(state, &from), balance(state, &to))
                else {
                    return fail("no such account");
                };
                if from_balance < amount {
                    return fail("insufficient balance");
                }
                if from == to {
                    return Ok(output(vec![(
                        from,
                        Some(from_balance.to_le_bytes().to_vec()),
                    )]));
                }
                Ok(output(vec![
                    (from, Some((from_balance - amount).to_le_bytes().to_vec())),
                    (to, Some((to_balance + amount).to_le_bytes().to_vec())),
                ]))
            }
            _ => Err(CallError::UnknownMethod(method.to_owned())),
        }
    }
}

// ---------------------------------------------------------------------------
// The bare wasmi loop: the runtime's ceiling.

/// The host of the bare loop: the input and a plain map as storage, no
/// overlay, no undo, no state root.
#[derive(Default)]
struct BareHost {
    input: Vec<u8>,
    storage: HashMap<[u8; 32], Vec<u8>, foldhash::fast::FixedState>,
}

/// One instance of an app on wasmi, with the engine's settings (fuel, eager
/// compilation), reused for every call with nothing reset between calls:
/// what calling the same method with wasmi costs at the least.
pub struct BareWasm {
    store: wasmi::Store<BareHost>,
    instance: wasmi::Instance,
    memory: wasmi::Memory,
}

fn memory_range(
    memory: &[u8],
    pointer: u32,
    length: u32,
) -> Result<std::ops::Range<usize>, wasmi::Error> {
    let start = pointer as usize;
    let end = start + length as usize;
    if end > memory.len() {
        return Err(wasmi::Error::new("out of bounds"));
    }
    Ok(start..end)
}

impl BareWasm {
    pub fn new(source: &str) -> BareWasm {
        use wasmi::{Caller, CompilationMode, Config, Engine, Linker, Module, Store};
        let wasm = wat::parse_str(source).expect("the bundled apps parse");
        let mut config = Config::default();
        config
            .consume_fuel(true)
            .compilation_mode(CompilationMode::Eager);
        let engine = Engine::new(&config);
        let module = Module::new(&engine, &wasm).expect("the bundled apps compile");
        let mut linker = Linker::<BareHost>::new(&engine);
        fn memory<'a>(caller: &'a mut Caller<'_, BareHost>) -> (&'a mut [u8], &'a mut BareHost) {
            let memory = caller
                .get_export("memory")
                .and_then(wasmi::Extern::into_memory)
                .expect("the app exports its memory");
            memory.data_and_store_mut(caller)
        }
        linker
            .func_wrap("env", "input_len", |caller: Caller<'_, BareHost>| {
                caller.data().input.len() as i32
            })
            .expect("defined once");
        linker
            .func_wrap(
                "env",
                "input_read",
                |mut caller: Caller<'_, BareHost>, pointer: u32| {
                    let (memory, host) = memory(&mut caller);
                    let range = memory_range(memory, pointer, host.input.len() as u32)?;
                    memory[range].copy_from_slice(&host.input);
                    Ok(())
                },
            )
            .expect("defined once");
        linker
            .func_wrap(
                "env",
                "storage_read",
                |mut caller: Caller<'_, BareHost>, key: u32, value: u32, capacity: u32| {
                    let (memory, host) = memory(&mut caller);
                    let key: [u8; 32] = memory[memory_range(memory, key, 32)?]
                        .try_into()
                        .expect("32 bytes");
                    let Some(stored) = host.storage.get(&key) else {
                        return Ok(-1);
                    };
                    let copied = stored.len().min(capacity as usize);
                    let range = memory_range(memory, value, copied as u32)?;
                    memory[range].copy_from_slice(&stored[..copied]);
                    Ok(stored.len() as i32)
                },
            )
            .expect("defined once");
        linker
            .func_wrap(
                "env",
                "storage_write",
                |mut caller: Caller<'_, BareHost>, key: u32, value: u32, length: u32| {
                    let (memory, host) = memory(&mut caller);
                    let key: [u8; 32] = memory[memory_range(memory, key, 32)?]
                        .try_into()
                        .expect("32 bytes");
                    let value = memory[memory_range(memory, value, length)?].to_vec();
                    host.storage.insert(key, value);
                    Ok(())
                },
            )
            .expect("defined once");
        linker
            .func_wrap(
                "env",
                "storage_remove",
                |mut caller: Caller<'_, BareHost>, key: u32| {
                    let (memory, host) = memory(&mut caller);
                    let key: [u8; 32] = memory[memory_range(memory, key, 32)?]
                        .try_into()
                        .expect("32 bytes");
                    Ok(i32::from(host.storage.remove(&key).is_some()))
                },
            )
            .expect("defined once");
        linker
            .func_wrap(
                "env",
                "value_return",
                |_: Caller<'_, BareHost>, _: u32, _: u32| {},
            )
            .expect("defined once");
        linker
            .func_wrap(
                "env",
                "fail",
                |_: Caller<'_, BareHost>, _: u32, _: u32| -> Result<(), wasmi::Error> {
                    Err(wasmi::Error::new("the app failed"))
                },
            )
            .expect("defined once");
        let mut store = Store::new(&engine, BareHost::default());
        let instance = linker
            .instantiate_and_start(&mut store, &module)
            .expect("the bundled apps instantiate");
        let memory = instance
            .get_memory(&store, "memory")
            .expect("the app exports its memory");
        BareWasm {
            store,
            instance,
            memory,
        }
    }

    /// Calls `method` with `input`; panics if it fails (the workloads'
    /// calls never do).
    pub fn call(&mut self, method: &str, input: &[u8]) {
        self.store.data_mut().input.clear();
        self.store.data_mut().input.extend_from_slice(input);
        self.store
            .set_fuel(ctx_core::limits::CALL_FUEL_MAX)
            .expect("fuel is on");
        let function = self
            .instance
            .get_typed_func::<(), ()>(&self.store, method)
            .expect("the method exists");
        function
            .call(&mut self.store, ())
            .expect("the call succeeds");
    }

    pub fn memory_bytes(&self) -> usize {
        self.memory.data(&self.store).len()
    }
}
