use super::*;

const KV: &str = include_str!("../../../scenarios/apps/kv.wat");
const COUNTER: &str = include_str!("../../../scenarios/apps/counter.wat");
const BANK: &str = include_str!("../../../scenarios/apps/bank.wat");

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

    /// The module compiled for `reset` (rewritten for it, not only reset
    /// that way), or for the cheapest correct reset when `None`.
    fn with_reset(source: &str, reset: Option<Reset>) -> Self {
        let Some(reset) = reset else {
            return Harness::new(source);
        };
        let wasm = wasm_from_source(source.as_bytes()).expect("valid app");
        let app = App::compile_with_reset(&wasm, reset).expect("compiles");
        assert_eq!(app.reset, reset);
        Harness {
            app,
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
        let mut probe = Harness::with_reset(PROBE, reset);
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
    // Each reset runs its own code (the tracked one carries the dirty-chunk
    // marks, which cost fuel), so the module is compiled for each. Within
    // one, a call's fuel is the same on a fresh instance and on one reused
    // (and reset) after other calls, whatever they left in memory.
    let tracked = Harness::new(KV).app.reset;
    assert!(matches!(tracked, Reset::Tracked { .. }));
    let fuel_of_get = |reset: Reset, warm_up: bool| {
        let mut kv = Harness::with_reset(KV, Some(reset));
        assert_eq!(
            kv.app.live.as_ref().expect("instantiated").dirty.is_some(),
            matches!(reset, Reset::Tracked { .. }),
            "{reset:?}: the code is instrumented exactly when tracked"
        );
        kv.call("set", &[b"a", b"1"]).unwrap();
        if warm_up {
            for _ in 0..3 {
                kv.call("get", &[b"a"]).unwrap();
                kv.call("set", &[b"b", &[9; 7_000]]).unwrap();
                kv.call("get", &[b"b"]).unwrap();
            }
        }
        let output = kv.call("get", &[b"a"]).unwrap();
        assert_eq!(output.return_value, b"1");
        output.fuel_used
    };
    let mut by_reset = Vec::new();
    for reset in [tracked, Reset::Compare, Reset::Rebuild] {
        let fresh = fuel_of_get(reset, false);
        assert_eq!(
            fresh,
            fuel_of_get(reset, true),
            "{reset:?}: history changed the fuel"
        );
        by_reset.push(fresh);
    }
    assert_eq!(
        by_reset[1], by_reset[2],
        "compare and rebuild run the same code"
    );
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

/// Every host function reached by a tail call (`return_call`) from a
/// helper, with the caller's locals holding sentinels: each call must give
/// its own result, and leave the caller's frame alone. `$extra` is spliced
/// into the module (a `data.drop` there makes the runtime rebuild the
/// instance after every call).
fn tail_module(extra: &str) -> String {
    format!(
        r#"
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
      ;; key 1 at 0x1000 (written by the call), key 2 at 0x1020 (in the
      ;; state beforehand), key 3 at 0x1040 (absent); a value at 0x2000
      (data (i32.const 0x1000) "\01")
      (data (i32.const 0x1020) "\02")
      (data (i32.const 0x1040) "\03")
      (data (i32.const 0x2000) "hello")
      {extra}
      (func $t_input_len (result i32) (return_call $input_len))
      (func $t_input_read (param i32) (return_call $input_read (local.get 0)))
      (func $t_read (param i32 i32 i32) (result i32)
        (return_call $storage_read (local.get 0) (local.get 1) (local.get 2)))
      (func $t_write (param i32 i32 i32)
        (return_call $storage_write (local.get 0) (local.get 1) (local.get 2)))
      (func $t_remove (param i32) (result i32) (return_call $storage_remove (local.get 0)))
      (func $t_return (param i32 i32) (return_call $value_return (local.get 0) (local.get 1)))
      (func $t_log (param i32 i32) (return_call $log (local.get 0) (local.get 1)))
      (func $t_fail (param i32 i32) (return_call $fail (local.get 0) (local.get 1)))
      ;; Records one i32 result at 0x3000 + 4 * $slot.
      (func $put (param $slot i32) (param $value i32)
        (i32.store (i32.add (i32.const 0x3000) (i32.shl (local.get $slot) (i32.const 2)))
                   (local.get $value)))
      (func (export "check")
        (local $sentinel i32) (local $other i64)
        (local.set $sentinel (i32.const 77))
        (local.set $other (i64.const 0x1122334455667788))
        (call $put (i32.const 0) (call $t_read (i32.const 0x1040) (i32.const 0x4000) (i32.const 8)))
        (call $t_write (i32.const 0x1000) (i32.const 0x2000) (i32.const 5))
        (call $put (i32.const 1) (call $t_read (i32.const 0x1000) (i32.const 0x4000) (i32.const 8)))
        (call $put (i32.const 2) (call $t_remove (i32.const 0x1000)))
        (call $put (i32.const 3) (call $t_remove (i32.const 0x1000)))
        (call $put (i32.const 4) (call $t_read (i32.const 0x1000) (i32.const 0x4000) (i32.const 8)))
        (call $put (i32.const 5) (call $t_read (i32.const 0x1020) (i32.const 0x4010) (i32.const 8)))
        (call $put (i32.const 6) (call $t_remove (i32.const 0x1020)))
        (call $put (i32.const 7) (call $t_remove (i32.const 0x1040)))
        (call $put (i32.const 8) (call $t_input_len))
        (call $t_input_read (i32.const 0x5000))
        (call $put (i32.const 9) (i32.load (i32.const 0x5000)))
        (call $t_log (i32.const 0x2000) (i32.const 5))
        (call $put (i32.const 10) (local.get $sentinel))
        (call $put (i32.const 11) (i32.wrap_i64 (local.get $other)))
        (call $put (i32.const 12) (i32.load (i32.const 0x4010)))
        (call $t_return (i32.const 0x3000) (i32.const 52)))
      (func (export "fail") (call $t_fail (i32.const 0x2000) (i32.const 5)))
    )
    "#
    )
}

#[test]
fn tail_calls_to_every_host_function_return_their_results() {
    let rebuilt = "(data $passive \"x\") (func $drop (data.drop $passive))";
    let cases = [
        (tail_module(""), None, Reset::Tracked { chunk_shift: 10 }),
        (tail_module(""), Some(Reset::Compare), Reset::Compare),
        (tail_module(rebuilt), None, Reset::Rebuild),
    ];
    for (source, forced, expected) in cases {
        let mut app = Harness::with_reset(&source, forced);
        assert_eq!(app.app.reset, expected);
        app.state.0.insert(probe_key(2), b"stored".to_vec());
        for _ in 0..2 {
            let output = app.call_raw("check", &[9, 8, 7, 6]).unwrap();
            let results = returned_i32s(&output);
            let expected_results = [
                -1,          // absent key
                5,           // the call's own write
                1,           // removed from the overlay
                0,           // removed twice
                -1,          // gone
                6,           // from the state
                1,           // removed from the state
                0,           // removing an absent key
                4,           // input_len
                0x0607_0809, // input_read
                77,          // the caller's locals are untouched
                0x5566_7788,
                i32::from_le_bytes(*b"stor"), // the state's value was copied
            ];
            assert_eq!(results, expected_results, "reset {expected:?}");
            assert_eq!(output.logs, ["hello"]);
            assert_eq!(
                output.writes,
                [
                    (probe_key(1), None),
                    (probe_key(2), None),
                    (probe_key(3), None)
                ]
            );
            // Put key 2 back for the second round.
            app.state.0.insert(probe_key(2), b"stored".to_vec());
        }
        assert_eq!(app.call("fail", &[]), app_failed("hello"));
    }
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
fn functions_at_the_locals_limit_are_still_tracked() {
    // wasmi allows 30 000 locals per function; the instrumentation adds
    // none, so a function at the limit is tracked like any other.
    let locals = "i32 ".repeat(29_999);
    let source = format!(
        r#"(module
          (import "env" "value_return" (func $value_return (param i32 i32)))
          (memory (export "memory") 1)
          (func (export "many") (local {locals})
            (i32.store (i32.const 8) (i32.add (i32.load (i32.const 8)) (i32.const 1)))
            (call $value_return (i32.const 8) (i32.const 4))))"#
    );
    let mut app = Harness::new(&source);
    assert_eq!(app.app.reset, Reset::Tracked { chunk_shift: 10 });
    for _ in 0..3 {
        assert_eq!(
            app.call_raw("many", &[]).unwrap().return_value,
            1i32.to_le_bytes()
        );
    }
}

#[test]
fn instrumentation_keeps_locals_and_params_apart() {
    // Params, locals and globals of every type around stores and bulk
    // writes: the scratch globals the instrumentation adds must not
    // overlap any of them.
    let source = r#"(module
      (import "env" "value_return" (func $value_return (param i32 i32)))
      (memory (export "memory") 1)
      (global $g (mut i64) (i64.const 5))
      (func $f (param $a i32) (param $b i64) (param $c f64) (result i64)
        (local $x i32) (local $y i64) (local $z f32)
        (global.set $g (i64.add (global.get $g) (i64.const 1)))
        (local.set $x (i32.const 7))
        (local.set $y (i64.const 11))
        (local.set $z (f32.const 2))
        (i64.store (i32.const 16) (local.get $b))
        (f64.store (local.get $a) (local.get $c))
        (memory.fill (i32.const 40) (i32.const 1) (i32.const 8))
        (i64.add
          (i64.add (i64.extend_i32_u (local.get $x)) (local.get $y))
          (i64.add (i64.load (i32.const 16)) (i64.add (global.get $g) (i64.trunc_f32_u (local.get $z))))))
      (func (export "run")
        (i64.store (i32.const 0) (call $f (i32.const 24) (i64.const 100) (f64.const 1.5)))
        (call $value_return (i32.const 0) (i32.const 48))))"#;
    let mut app = Harness::new(source);
    assert_eq!(app.app.reset, Reset::Tracked { chunk_shift: 10 });
    let out = app.call_raw("run", &[]).unwrap();
    assert_eq!(out.return_value[..8], 126u64.to_le_bytes());
    assert_eq!(out.return_value[16..24], 100u64.to_le_bytes());
    assert_eq!(out.return_value[24..32], 1.5f64.to_le_bytes());
    assert_eq!(out.return_value[40..48], [1; 8]);
    assert_eq!(out, app.call_raw("run", &[]).unwrap());
}

#[test]
fn app_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<App>();
}

/// Methods that ask for what the limits refuse, over and over: each refusal
/// must leave nothing behind on the native stack.
const GROWER: &str = r#"
(module
  (memory (export "memory") 1)
  (table $t 1 funcref)
  ;; memory.grow beyond APP_MEMORY_BYTES_MAX returns -1, 100 000 times
  (func (export "grow_memory")
    (local $i i32)
    (loop $next
      (drop (memory.grow (i32.const 300)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 100000)))))
  ;; table.grow beyond APP_TABLE_ELEMENTS_MAX returns -1, 100 000 times
  (func (export "grow_table")
    (local $i i32)
    (loop $next
      (drop (table.grow $t (ref.null func) (i32.const 100000)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $i) (i32.const 100000)))))
)
"#;

/// Runs `f` on a thread with a native stack of `bytes`.
fn on_stack<T: Send + 'static>(bytes: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(bytes)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("no panic")
}

#[test]
fn calls_run_on_the_minimum_native_stack() {
    // Compiling included: a driver compiles an app on the thread that calls it.
    on_stack(CALL_NATIVE_STACK_BYTES_MIN, || {
        let mut probe = Harness::new(PROBE);
        assert!(probe.probe("recurse", &[]).is_err());
        let mut kv = Harness::new(KV);
        kv.call("set", &[b"a", b"b"]).unwrap();
        assert!(kv.call("spin", &[]).is_err());
        // wasmi 2.0's default tail-call dispatch left ~176 bytes of native
        // stack behind per refused `memory.grow`: this aborted the process.
        let mut app = Harness::new(GROWER);
        for method in ["grow_memory", "grow_table", "grow_memory"] {
            let output = app.call(method, &[]).expect("the loop ends");
            assert!(output.fuel_used > 400_000, "{method}: {}", output.fuel_used);
        }
    });
}

/// What a call does and costs under [`RUNTIME_VERSION`]: the fuel of calls
/// that exercise wasmi's metering, every kind of host charge and the
/// instrumentation of stores and bulk writes. A change to the fuel
/// schedule, the engine's configuration or the instrumentation moves one of
/// these figures: then bump `RUNTIME_VERSION` and set them anew, since every
/// context created before would execute differently.
#[test]
fn the_runtime_version_pins_fuel_and_outcomes() {
    assert_eq!(
        RUNTIME_VERSION, 1,
        "update the figures below with the version"
    );
    let fuel = |source: &str, method: &str, args: &[&[u8]]| {
        let mut app = Harness::new(source);
        app.call("set", &[b"present", b"value"]).ok();
        match app.call(method, args) {
            Ok(output) => output.fuel_used,
            Err(error) => panic!("{method}: {error}"),
        }
    };
    let figures = [
        ("kv set", fuel(KV, "set", &[b"colour", b"blue"])),
        ("kv get", fuel(KV, "get", &[b"present"])),
        ("kv remove", fuel(KV, "remove", &[b"present"])),
        ("counter add", fuel(COUNTER, "add", &[b"k", &u64_arg(5)])),
        ("probe scribble (memory.fill)", fuel(PROBE, "scribble", &[])),
        ("probe sequence", fuel(PROBE, "sequence", &[])),
    ];
    let pinned = [
        ("kv set", 329),
        ("kv get", 340),
        ("kv remove", 298),
        ("counter add", 482),
        ("probe scribble (memory.fill)", 1156),
        ("probe sequence", 646),
    ];
    assert_eq!(figures, pinned);
}

#[test]
fn simd_modules_are_refused() {
    // The ABI excludes SIMD (and wasmi runs without it): a module that uses
    // a v128 instruction does not compile, whatever features the wasmparser
    // in the build has.
    let source = r#"(module
      (memory (export "memory") 1)
      (func (export "m") (v128.store (i32.const 0) (v128.const i64x2 1 2))))"#;
    let wasm = wat::parse_str(source).unwrap();
    assert!(matches!(App::compile(&wasm), Err(AppError::Invalid(_))));
}
