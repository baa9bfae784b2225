//! The bundled apps written with ctx-sdk against the WebAssembly-text ones,
//! and the SDK's native run against its compiled one.
//!
//! - Every bundled scenario (`scenarios/*.toml`, `scenarios/regressions/*.toml`)
//!   runs twice in the simulator, once as written (the `.wat` apps) and once
//!   with each bundled app replaced by its Rust module: both pass the same
//!   checks. After each run, every member's copy of every context is
//!   re-executed from its genesis and the transactions it holds with each
//!   build of the app (the `.wat`, the Rust module, the Rust app natively
//!   behind the engine's `Application`): every build gives the root the
//!   member has. (The two runs cannot be compared root to root: the app's
//!   hash is in the genesis, so transaction ids, and with them the order of
//!   concurrent writes, differ between them.)
//! - Each module carries the ABI its source declares.
//! - Random call sequences (proptest) give the same outcomes and the same
//!   state root after every call natively (`Harness::native`), compiled
//!   (`Harness::module`), and, for success and state, as the `.wat` app.
//!
//! The modules are built from source by `ctx_apps_conformance::build_apps`.
//! Without the wasm32-unknown-unknown target every test here is reported
//! as ignored, with the reason printed, never passed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ctx_abi::Abi;
use ctx_apps_conformance::{BuildError, build_apps, workspace_root};
use ctx_core::runtime::{StateRead, wasm_from_source};
use ctx_core::{App, Application, ContextId, Replica};
use ctx_sdk::native::NativeApp;
use ctx_sdk::native::{CallError, Harness};
use ctx_sim::run::{Report, RunOptions, run_inspect};
use ctx_sim::scenario::{AppRef, Op, Scenario};
use ctx_sim::world::World;
use libtest_mimic::{Arguments, Failed, Trial};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

type Modules = Vec<(&'static str, PathBuf)>;

fn modules() -> &'static Result<Modules, String> {
    static BUILT: OnceLock<Result<Modules, String>> = OnceLock::new();
    BUILT.get_or_init(|| build_apps().map_err(|e| e.to_string()))
}

fn module(name: &str) -> Result<&'static Path, Failed> {
    let modules = modules().as_ref().map_err(|e| Failed::from(e.as_str()))?;
    modules
        .iter()
        .find(|(app, _)| *app == name)
        .map(|(_, path)| path.as_path())
        .ok_or_else(|| format!("no module for {name}").into())
}

fn wat(name: &str) -> Vec<u8> {
    let path = workspace_root()
        .join("scenarios/apps")
        .join(format!("{name}.wat"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn scenario_files() -> Vec<PathBuf> {
    let root = workspace_root().join("scenarios");
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("regressions")] {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The scenario with every bundled app replaced by its Rust module; how
/// many were replaced.
fn with_rust_apps(scenario: &Scenario) -> Result<(Scenario, usize), Failed> {
    let mut rust = scenario.clone();
    let mut replaced = 0;
    for step in &mut rust.steps {
        if let Op::Create { app, .. } = &mut step.op
            && let AppRef::Bundled(name) = app
        {
            *app = AppRef::Path(module(name)?.to_path_buf());
            replaced += 1;
        }
    }
    Ok((rust, replaced))
}

fn checks(report: &Report) -> Vec<(String, bool)> {
    report
        .checks
        .iter()
        .map(|check| (check.name.clone(), check.passed))
        .collect()
}

/// The bundled app each context of the scenario runs, by context name.
fn apps_of(scenario: &Scenario) -> BTreeMap<String, String> {
    let mut apps = BTreeMap::new();
    for step in &scenario.steps {
        if let Op::Create {
            context,
            app: AppRef::Bundled(name),
            ..
        } = &step.op
        {
            apps.insert(context.clone(), name.clone());
        }
    }
    apps
}

/// The app `name` in every build: the `.wat`, the Rust module, natively.
type Builds = Vec<(&'static str, Box<dyn Application>)>;

fn builds_of(name: &str) -> Result<Builds, String> {
    let compile = |source: &[u8]| -> Result<Box<dyn Application>, String> {
        let wasm = wasm_from_source(source).map_err(|e| e.to_string())?;
        Ok(Box::new(App::compile(&wasm).map_err(|e| e.to_string())?))
    };
    let rust =
        std::fs::read(module(name).map_err(|e| format!("{e:?}"))?).map_err(|e| e.to_string())?;
    let native: Box<dyn Application> = match name {
        "kv" => Box::new(NativeApp::<ctx_app_kv::Kv>::new()),
        "counter" => Box::new(NativeApp::<ctx_app_counter::Counter>::new()),
        "bank" => Box::new(NativeApp::<ctx_app_bank::Bank>::new()),
        other => return Err(format!("no native build of {other}")),
    };
    let native = Box::new(NoFuel(native));
    Ok(vec![
        (".wat", compile(&wat(name))?),
        ("Rust module", compile(&rust)?),
        ("native", native),
    ])
}

/// A native app with the one thing fuel does compiled: natively nothing
/// meters a call, so `spin` (which never ends) is answered as the runtime
/// answers it, and every other call runs natively.
struct NoFuel(Box<dyn Application>);

impl Application for NoFuel {
    fn call(
        &mut self,
        method: &str,
        input: &[u8],
        state: &dyn StateRead,
        fuel: u64,
    ) -> Result<ctx_sdk::native::CallOutput, CallError> {
        if method == "spin" {
            return Err(CallError::OutOfFuel);
        }
        self.0.call(method, input, state, fuel)
    }
}

/// Re-executes every member's copy of every context, from its genesis and
/// the transactions it holds, with each build of its app: each gives the
/// root the member has. The number of copies checked.
fn every_build_agrees(
    world: &World,
    contexts: &BTreeMap<String, ContextId>,
    apps: &BTreeMap<String, String>,
) -> Result<usize, String> {
    let mut checked = 0;
    for (name, context) in contexts {
        let app = apps
            .get(name)
            .ok_or_else(|| format!("context {name} runs no bundled app"))?;
        for node in 0..world.len() {
            let Some(replica) = world
                .engine(node)
                .and_then(|engine| engine.replica(context))
            else {
                continue;
            };
            let txs = replica
                .order()
                .map(|id| replica.tx(&id).cloned().expect("a copy holds its order"))
                .collect::<Vec<_>>();
            for (build, executor) in builds_of(app)? {
                // A copy that dropped the history below a checkpoint is
                // rebuilt on its latest checkpoint, with the tail above it.
                let rebuilt = match replica.base_height() {
                    None => Replica::rebuild_with(
                        replica.genesis().clone(),
                        replica.app_blob().clone(),
                        executor,
                        txs.clone(),
                    ),
                    Some(_) => Replica::rebuild_on_checkpoint_with(
                        replica.genesis().clone(),
                        replica.app_blob().clone(),
                        executor,
                        replica
                            .checkpoint()
                            .expect("a copy on a checkpoint has one")
                            .clone(),
                        txs.clone(),
                    ),
                }
                .map_err(|e| format!("{name} on {}: {e}", world.names[node]))?;
                if rebuilt.state_root() != replica.state_root() {
                    return Err(format!(
                        "{name} ({app}) on {}: {} transactions re-executed with the {build} build give root {}, the member has {}",
                        world.names[node],
                        txs.len(),
                        rebuilt.state_root(),
                        replica.state_root()
                    ));
                }
            }
            checked += 1;
        }
    }
    Ok(checked)
}

fn same_roots_as_the_wat_apps(file: &Path) -> Result<(), Failed> {
    let scenario = Scenario::from_file(file).map_err(|e| e.to_string())?;
    let apps = apps_of(&scenario);
    let (rust, replaced) = with_rust_apps(&scenario)?;
    let options = RunOptions::default();
    let mut reports = Vec::new();
    for (label, run) in [(".wat apps", &scenario), ("Rust apps", &rust)] {
        let (report, checked) = run_inspect(run, &options, |world, contexts| {
            every_build_agrees(world, contexts, &apps)
        })
        .map_err(|e| e.to_string())?;
        let checked = checked.map_err(|e| format!("with the {label}: {e}"))?;
        if !report.passed {
            return Err(
                format!("the scenario fails with the {label}: {:?}", checks(&report)).into(),
            );
        }
        // A run whose every member left holds nothing to compare (its
        // final checks still ran); one with copies must hold a whole one.
        let held = report.contexts.values().any(|c| !c.members.is_empty());
        if replaced > 0 && checked == 0 && held {
            return Err(
                format!("with the {label}, no member holds a whole history to re-execute").into(),
            );
        }
        reports.push(report);
    }
    if checks(&reports[0]) != checks(&reports[1]) {
        return Err(format!(
            "checks differ: .wat {:?}, Rust {:?}",
            checks(&reports[0]),
            checks(&reports[1])
        )
        .into());
    }
    Ok(())
}

fn abi_of(name: &str) -> Result<Abi, Failed> {
    let wasm = std::fs::read(module(name)?).map_err(|e| e.to_string())?;
    Ok(Abi::from_module(&wasm)
        .map_err(|e| e.to_string())?
        .ok_or("the module has no ABI section")?)
}

fn modules_carry_their_abi() -> Result<(), Failed> {
    let expected = [
        (
            "kv",
            vec![
                ("set", "set(key: key, value: bytes) -> unit", false, false),
                ("remove", "remove(key: key) -> unit", false, false),
                ("get", "get(key: key) -> option<bytes>", true, false),
                ("spin", "spin() -> unit", true, false),
            ],
        ),
        (
            "counter",
            vec![
                ("add", "add(key: key, amount: u64) -> unit", false, true),
                ("get", "get(key: key) -> u64", true, false),
                ("spin", "spin() -> unit", true, false),
            ],
        ),
        (
            "bank",
            vec![
                (
                    "open",
                    "open(account: key, amount: u64) -> unit",
                    false,
                    true,
                ),
                (
                    "transfer",
                    "transfer(from: key, to: key, amount: u64) -> unit",
                    false,
                    true,
                ),
                ("balance", "balance(account: key) -> u64", true, true),
                ("spin", "spin() -> unit", true, false),
            ],
        ),
    ];
    for (app, methods) in expected {
        let abi = abi_of(app)?;
        let found: Vec<(String, String, bool, bool)> = abi
            .methods
            .iter()
            .map(|method| {
                (
                    method.name.clone(),
                    method.signature(),
                    method.kind == ctx_abi::Kind::View,
                    method.fails,
                )
            })
            .collect();
        let methods: Vec<(String, String, bool, bool)> = methods
            .into_iter()
            .map(|(name, signature, view, fails)| (name.into(), signature.into(), view, fails))
            .collect();
        if found != methods {
            return Err(format!("{app}: ABI {found:?}, expected {methods:?}").into());
        }
    }
    // The ABI converts a command line into the input the app decodes.
    let abi = abi_of("bank")?;
    let transfer = abi.method("transfer").ok_or("bank has transfer")?;
    let mut bank = Harness::module(&std::fs::read(module("bank")?)?)?;
    let open = abi.method("open").ok_or("bank has open")?;
    for words in [["alice", "10"], ["bob", "0"]] {
        bank.call_input("open", &open.encode_words(&words)?)?;
    }
    bank.call_input("transfer", &transfer.encode_words(&["alice", "bob", "4"])?)?;
    let balance = abi.method("balance").ok_or("bank has balance")?;
    let returned = bank.view("balance", &[b"bob"])?;
    if balance.decode_return(&returned)? != serde_json::json!(4) {
        return Err(format!("bob holds {returned:?}").into());
    }
    Ok(())
}

/// One generated call: a method and its arguments, drawn so that most are
/// well formed and some are not (a wrong count, a long key, a short amount).
#[derive(Clone, Debug)]
struct Call {
    method: &'static str,
    args: Vec<Vec<u8>>,
}

fn key_arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (0u8..6).prop_map(|index| format!("k{index}").into_bytes()),
        1 => Just(Vec::new()),
        1 => Just(vec![b'x'; 33]),
        1 => Just(vec![b'y'; 32]),
    ]
}

fn amount_arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (0u64..200).prop_map(|amount| amount.to_le_bytes().to_vec()),
        1 => Just(u64::MAX.to_le_bytes().to_vec()),
        1 => Just(vec![1, 2, 3]),
    ]
}

fn call_of(methods: &'static [(&'static str, &'static [Arg])]) -> impl Strategy<Value = Call> {
    (0..methods.len(), any::<bool>(), any::<bool>()).prop_flat_map(
        move |(index, drop_one, add_one)| {
            let (method, params) = methods[index];
            let args: Vec<BoxedStrategy<Vec<u8>>> = params
                .iter()
                .map(|arg| match arg {
                    Arg::Key => key_arg().boxed(),
                    Arg::Amount => amount_arg().boxed(),
                    Arg::Bytes => proptest::collection::vec(any::<u8>(), 0..40).boxed(),
                })
                .collect();
            args.prop_map(move |mut args| {
                // Now and then a call with one argument too few or too many.
                if drop_one && add_one {
                    args.pop();
                } else if add_one && args.len() == 1 {
                    args.push(b"extra".to_vec());
                }
                Call { method, args }
            })
        },
    )
}

#[derive(Clone, Copy, Debug)]
enum Arg {
    Key,
    Amount,
    Bytes,
}

const KV: &[(&str, &[Arg])] = &[
    ("set", &[Arg::Key, Arg::Bytes]),
    ("remove", &[Arg::Key]),
    ("get", &[Arg::Key]),
];
const COUNTER: &[(&str, &[Arg])] = &[("add", &[Arg::Key, Arg::Amount]), ("get", &[Arg::Key])];
const BANK: &[(&str, &[Arg])] = &[
    ("open", &[Arg::Key, Arg::Amount]),
    ("transfer", &[Arg::Key, Arg::Key, Arg::Amount]),
    ("balance", &[Arg::Key]),
];

/// An outcome without fuel (which differs between builds) and, for the
/// `.wat` comparison, without messages.
fn outcome(result: &Result<ctx_sdk::native::CallOutput, CallError>, messages: bool) -> String {
    match result {
        Ok(output) => format!(
            "ok {:?} {:?} {:?}",
            output.writes, output.return_value, output.logs
        ),
        Err(CallError::AppFailed(message)) if messages => format!("failed {message}"),
        Err(CallError::AppFailed(_)) => "failed".into(),
        Err(other) => format!("error {other}"),
    }
}

fn native_compiled_and_wat_agree(
    name: &'static str,
    native: fn() -> Harness,
    methods: &'static [(&'static str, &'static [Arg])],
) -> Result<(), Failed> {
    let compiled_bytes = std::fs::read(module(name)?)?;
    let wat_bytes = wat(name);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(call_of(methods), 1..40);
    runner
        .run(&strategy, |calls| {
            let mut native = native();
            let mut compiled = Harness::module(&compiled_bytes).expect("the module compiles");
            let mut text = Harness::module(&wat_bytes).expect("the .wat compiles");
            for call in &calls {
                let by_native = native.call(call.method, &call.args);
                let by_compiled = compiled.call(call.method, &call.args);
                let by_text = text.call(call.method, &call.args);
                prop_assert_eq!(
                    outcome(&by_native, true),
                    outcome(&by_compiled, true),
                    "{:?}",
                    call
                );
                prop_assert_eq!(
                    outcome(&by_compiled, false),
                    outcome(&by_text, false),
                    "{:?}",
                    call
                );
                prop_assert_eq!(native.root(), compiled.root());
                prop_assert_eq!(compiled.root(), text.root());
            }
            Ok::<(), TestCaseError>(())
        })
        .map_err(|e| Failed::from(e.to_string()))
}

fn spin_runs_out_of_fuel_compiled() -> Result<(), Failed> {
    for name in ["kv", "counter", "bank"] {
        let mut app = Harness::module(&std::fs::read(module(name)?)?)?;
        let result = app.call::<&[u8]>("spin", &[]);
        if result != Err(CallError::OutOfFuel) {
            return Err(format!("{name}: spin gave {result:?}").into());
        }
    }
    Ok(())
}

/// The tour app compiled and natively: every outcome, message included,
/// and every root after it are the same, and each is the one expected.
fn tour_native_and_compiled_agree() -> Result<(), Failed> {
    use ctx_app_tour::{Profile, Tour};
    let mut native = Harness::native::<Tour>();
    let mut compiled = Harness::module(&std::fs::read(module("tour")?)?)?;
    let long_name = "n".repeat(100);
    let profile = |visits: u32, tags: &[&str]| Profile {
        name: long_name.clone(),
        visits,
        tags: tags.iter().map(|tag| tag.to_string()).collect(),
    };
    let postcard = |value: &Profile| postcard_of(value);
    let failed = |message: &str| Err::<Vec<u8>, _>(CallError::AppFailed(message.into()));
    type Case = (&'static str, Vec<Vec<u8>>, Result<Vec<u8>, CallError>);
    let cases: Vec<Case> = vec![
        ("greet", vec![Vec::new()], failed("a greeting is not empty")),
        ("greet", vec![b"hello".to_vec()], Ok(Vec::new())),
        ("greeting", vec![], Ok(b"hello".to_vec())),
        (
            "hit",
            vec![5u64.to_le_bytes().to_vec()],
            Ok(5u64.to_le_bytes().to_vec()),
        ),
        (
            "hit",
            vec![u64::MAX.to_le_bytes().to_vec()],
            failed("counter overflow"),
        ),
        (
            "visit",
            vec![long_name.clone().into_bytes(), b"a".to_vec()],
            Ok(1u32.to_le_bytes().to_vec()),
        ),
        (
            "visit",
            vec![long_name.clone().into_bytes(), b"b".to_vec()],
            Ok(2u32.to_le_bytes().to_vec()),
        ),
        (
            "profile",
            vec![long_name.clone().into_bytes()],
            Ok(postcard(&profile(2, &["a", "b"]))),
        ),
        ("profile", vec![b"nobody".to_vec()], Ok(Vec::new())),
        (
            "note",
            vec![b"k".to_vec(), b"abc".to_vec(), vec![1]],
            failed("panicked: exploded after writing 3 bytes"),
        ),
        (
            "note",
            vec![b"k".to_vec(), b"abc".to_vec(), vec![0]],
            Ok(Vec::new()),
        ),
        (
            "note",
            vec![b"k".to_vec(), b"abc".to_vec(), vec![2]],
            failed("argument explode: a bool is one byte, 0 or 1"),
        ),
        ("flood", vec![3u32.to_le_bytes().to_vec()], Ok(Vec::new())),
        (
            "big",
            vec![70_000u32.to_le_bytes().to_vec()],
            Err(CallError::LimitExceeded(
                "value of 70000 bytes exceeds VALUE_BYTES_MAX 65536".into(),
            )),
        ),
        ("refuse", vec![b"not today".to_vec()], failed("not today")),
        (
            "misread",
            vec![],
            failed(
                "stored value in collection \"greeting:\" is malformed: 6 bytes, not the 8 of a u64",
            ),
        ),
        (
            "greet",
            vec![b"hi".to_vec(), b"extra".to_vec()],
            failed("too many arguments"),
        ),
        ("nope", vec![], Err(CallError::UnknownMethod("nope".into()))),
    ];
    // More distinct writes than CALL_WRITES_MAX: natively the limit, and
    // compiled the fuel runs out first (a write through the SDK costs some
    // thousands of units); either way a failed call with no effect.
    let root = compiled.root();
    let flood = [1025u32.to_le_bytes()];
    let by_native = native.call("flood", &flood);
    let by_compiled = compiled.call("flood", &flood);
    let limit =
        CallError::LimitExceeded("more than CALL_WRITES_MAX 1024 distinct keys written".into());
    if by_native != Err(limit)
        || by_compiled != Err(CallError::OutOfFuel)
        || compiled.root() != root
        || native.root() != root
    {
        return Err(format!("flood: native {by_native:?}, compiled {by_compiled:?}").into());
    }
    let fuel = compiled.call("flood", &[100u32.to_le_bytes()])?.fuel_used;
    eprintln!("tour: 100 distinct writes compiled cost {fuel} fuel");
    native.call("flood", &[100u32.to_le_bytes()])?;
    compiled.call("note", &[b"k".as_slice(), b"abc", &[0]])?;
    native.call("note", &[b"k".as_slice(), b"abc", &[0]])?;
    for (method, args, expected) in cases {
        let by_native = native.call(method, &args).map(|output| output.return_value);
        let by_compiled = compiled
            .call(method, &args)
            .map(|output| output.return_value);
        if by_native != expected || by_compiled != expected {
            return Err(format!(
                "{method}{args:?}: native {by_native:?}, compiled {by_compiled:?}, expected {expected:?}"
            )
            .into());
        }
        if native.root() != compiled.root() {
            return Err(format!("{method}: roots differ").into());
        }
    }
    // The layout: each field at its prefix, long keys hashed.
    let padded = |text: &[u8]| {
        let mut key = [0u8; 32];
        key[..text.len()].copy_from_slice(text);
        key
    };
    let expected_profile = postcard(&profile(2, &["a", "b"]));
    let layout = [
        (padded(b"greeting:"), postcard_of(&"hello".to_string())),
        (padded(b"hits:"), 5u64.to_le_bytes().to_vec()),
        (
            ctx_sdk::storage::storage_key(b"profiles:", long_name.as_bytes()),
            expected_profile,
        ),
        (
            ctx_sdk::storage::storage_key(b"notes:", &padded(b"k")),
            b"abc".to_vec(),
        ),
    ];
    for (key, value) in layout {
        for harness in [&native, &compiled] {
            if harness.get(&key) != Some(value.as_slice()) {
                return Err(
                    format!("at {key:?}: {:?}, expected {value:?}", harness.get(&key)).into(),
                );
            }
        }
    }
    if native.entries().len() != 4 + 100 {
        return Err(format!("{} entries", native.entries().len()).into());
    }
    let logs = compiled.call("greet", &[b"again"])?.logs;
    if logs != ["greeting set to again"] || native.call("greet", &[b"again"])?.logs != logs {
        return Err(format!("logs {logs:?}").into());
    }
    Ok(())
}

/// What a call costs compiled, Rust module beside `.wat` (fuel is
/// deterministic, so these are exact): printed for the figures in
/// docs/SDK.md (`cargo test -p ctx-apps-conformance --test bundled --
/// fuel_and_size --nocapture`), and bounded: an SDK call of a bundled app
/// stays under 1% of `CALL_FUEL_MAX`.
fn fuel_and_size() -> Result<(), Failed> {
    let budget = ctx_core::limits::CALL_FUEL_MAX / 100;
    let amount = 5u64.to_le_bytes().to_vec();
    type Calls = Vec<(&'static str, Vec<Vec<u8>>)>;
    let calls: [(&str, Calls); 3] = [
        (
            "kv",
            vec![
                ("set", vec![b"k".to_vec(), b"v".to_vec()]),
                ("get", vec![b"k".to_vec()]),
            ],
        ),
        (
            "counter",
            vec![("add", vec![b"k".to_vec(), amount.clone()])],
        ),
        (
            "bank",
            vec![
                ("open", vec![b"a".to_vec(), amount.clone()]),
                ("open", vec![b"b".to_vec(), amount.clone()]),
                (
                    "transfer",
                    vec![b"a".to_vec(), b"b".to_vec(), 1u64.to_le_bytes().to_vec()],
                ),
            ],
        ),
    ];
    for (name, calls) in calls {
        let bytes = std::fs::read(module(name)?)?;
        let mut rust = Harness::module(&bytes)?;
        let mut text = Harness::module(&wat(name))?;
        for (method, args) in calls {
            let by_rust = rust.call(method, &args)?.fuel_used;
            let by_text = text.call(method, &args)?.fuel_used;
            eprintln!(
                "{name}.{method}: Rust module {by_rust} fuel, .wat {by_text} ({:.0}x)",
                by_rust as f64 / by_text as f64
            );
            if by_rust > budget {
                return Err(format!("{name}.{method} costs {by_rust} fuel, over {budget}").into());
            }
        }
        eprintln!("{name}: module of {} bytes", bytes.len());
    }
    Ok(())
}

fn postcard_of<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> Vec<u8> {
    <ctx_sdk::storage::Postcard as ctx_sdk::Codec<T>>::encode(value)
}

fn main() {
    let arguments = Arguments::from_args();
    let mut trials = vec![
        Trial::test("modules_carry_their_abi", modules_carry_their_abi),
        Trial::test(
            "spin_runs_out_of_fuel_compiled",
            spin_runs_out_of_fuel_compiled,
        ),
        Trial::test(
            "tour_native_and_compiled_agree",
            tour_native_and_compiled_agree,
        ),
        Trial::test("fuel_and_size", fuel_and_size),
        Trial::test("kv_native_compiled_and_wat_agree", || {
            native_compiled_and_wat_agree("kv", Harness::native::<ctx_app_kv::Kv>, KV)
        }),
        Trial::test("counter_native_compiled_and_wat_agree", || {
            native_compiled_and_wat_agree(
                "counter",
                Harness::native::<ctx_app_counter::Counter>,
                COUNTER,
            )
        }),
        Trial::test("bank_native_compiled_and_wat_agree", || {
            native_compiled_and_wat_agree("bank", Harness::native::<ctx_app_bank::Bank>, BANK)
        }),
    ];
    for file in scenario_files() {
        let name = file
            .strip_prefix(workspace_root().join("scenarios"))
            .unwrap_or(&file)
            .display()
            .to_string();
        trials.push(Trial::test(
            format!("scenario_with_rust_apps::{name}"),
            move || same_roots_as_the_wat_apps(&file),
        ));
    }
    if !arguments.list
        && let Err(missing @ BuildError::TargetMissing(_)) =
            ctx_apps_conformance::target_installed()
    {
        let reason = missing.to_string();
        // Printed before the harness starts, so it shows uncaptured.
        eprintln!("SKIPPED: apps/conformance: {reason}");
        trials = trials
            .into_iter()
            .map(|trial| trial.with_ignored_flag(true))
            .collect();
    }
    libtest_mimic::run(&arguments, trials).exit();
}
