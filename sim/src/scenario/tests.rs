use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn s(text: &str) -> String {
    text.to_string()
}

fn names(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

fn step(at_ms: u64, line: usize, op: Op) -> Step {
    Step { at_ms, line, op }
}

fn expect(check: Check) -> Op {
    Op::Expect(check)
}

/// Asserts equality including each step's line, which `==` ignores.
fn assert_same(actual: &Scenario, expected: &Scenario) {
    assert_eq!(actual, expected);
    let lines = |scenario: &Scenario| -> Vec<usize> {
        scenario.steps.iter().map(|step| step.line).collect()
    };
    assert_eq!(lines(actual), lines(expected));
}

#[test]
fn the_example_in_scenarios_md_parses() {
    let path = fixture("partition-heal.toml");
    let scenario = Scenario::from_file(&path).expect("the example is valid");
    let expected = Scenario {
        name: s("partition-heal"),
        description: s("Both sides keep writing through a partition and agree after it heals."),
        seed: 42,
        nodes: names(&["alice", "bob", "carol"]),
        settle_ms: 10_000,
        stress: false,
        checkpoint_interval: None,
        network: Network {
            latency_ms: (1, 20),
            drop: 0.0,
            duplicate: 0.0,
        },
        disk: Faults::default(),
        byzantine: Byzantine::default(),
        steps: vec![
            step(
                0,
                13,
                Op::Create {
                    node: s("alice"),
                    context: s("c1"),
                    app: AppRef::Bundled(s("kv")),
                },
            ),
            step(
                5,
                20,
                Op::Invite {
                    node: s("alice"),
                    context: s("c1"),
                    member: s("bob"),
                },
            ),
            step(
                10,
                27,
                Op::Join {
                    node: s("bob"),
                    context: s("c1"),
                    via: s("alice"),
                },
            ),
            step(
                1000,
                34,
                Op::Partition {
                    groups: vec![names(&["alice"]), names(&["bob", "carol"])],
                },
            ),
            step(
                1100,
                39,
                Op::Call {
                    node: s("bob"),
                    context: s("c1"),
                    method: s("set"),
                    args: vec![Arg::Str(s("colour")), Arg::Str(s("blue"))],
                },
            ),
            step(5000, 47, Op::Heal),
            step(20_000, 51, expect(Check::Converged { context: s("c1") })),
            step(
                20_000,
                57,
                expect(Check::Value {
                    context: s("c1"),
                    key: Arg::Str(s("colour")),
                    equals: Expected::Bytes(Arg::Str(s("blue"))),
                    nodes: None,
                }),
            ),
        ],
        path: path.clone(),
    };
    assert_same(&scenario, &expected);
}

#[test]
fn every_op_check_and_argument_kind_parses() {
    let path = fixture("every-op.toml");
    let scenario = Scenario::from_file(&path).expect("the fixture is valid");
    let c1 = || s("c1");
    let expected_steps = vec![
        step(
            0,
            23,
            Op::Create {
                node: s("alice"),
                context: c1(),
                app: AppRef::Bundled(s("kv")),
            },
        ),
        step(
            0,
            30,
            Op::Create {
                node: s("bob"),
                context: s("c2"),
                app: AppRef::Path(fixture("apps/custom.wat")),
            },
        ),
        step(
            5,
            37,
            Op::Invite {
                node: s("alice"),
                context: c1(),
                member: s("bob"),
            },
        ),
        step(
            10,
            44,
            Op::Join {
                node: s("bob"),
                context: c1(),
                via: s("alice"),
            },
        ),
        step(
            20,
            51,
            Op::Call {
                node: s("bob"),
                context: c1(),
                method: s("set"),
                args: vec![
                    Arg::Str(s("colour")),
                    Arg::U64(42),
                    Arg::Hex(vec![0x00, 0xff]),
                    Arg::Str(s("$literal")),
                ],
            },
        ),
        step(
            30,
            59,
            Op::Workload {
                context: c1(),
                calls: 100,
                over_ms: 10_000,
                methods: vec![
                    MethodTemplate {
                        method: s("set"),
                        args: vec![Arg::Draw(Draw::Key), Arg::Draw(Draw::Value)],
                    },
                    MethodTemplate {
                        method: s("remove"),
                        args: vec![Arg::Draw(Draw::Key)],
                    },
                ],
                nodes: Some(names(&["alice", "bob"])),
            },
        ),
        step(
            40,
            71,
            Op::Workload {
                context: s("c2"),
                calls: 5,
                over_ms: 1000,
                methods: vec![MethodTemplate {
                    method: s("add"),
                    args: vec![Arg::Str(s("k")), Arg::Draw(Draw::Amount)],
                }],
                nodes: None,
            },
        ),
        step(
            1000,
            79,
            Op::Partition {
                groups: vec![names(&["alice"]), names(&["bob", "carol"])],
            },
        ),
        step(2000, 84, Op::Crash { node: s("carol") }),
        step(3000, 89, Op::Restart { node: s("carol") }),
        step(
            3000,
            175,
            Op::Clock {
                node: s("bob"),
                rate_permille: 500,
            },
        ),
        step(
            3000,
            181,
            Op::Pause {
                node: s("alice"),
                ms: 1500,
            },
        ),
        step(
            3000,
            187,
            Op::DiskFull {
                node: s("carol"),
                ms: 2000,
            },
        ),
        step(
            4000,
            94,
            Op::Network {
                latency_ms: None,
                drop: Some(0.5),
                duplicate: None,
            },
        ),
        step(
            4000,
            99,
            Op::Network {
                latency_ms: Some((5, 5)),
                drop: None,
                duplicate: Some(1.0),
            },
        ),
        step(5000, 105, Op::Heal),
        step(
            6000,
            109,
            Op::Leave {
                node: s("bob"),
                context: s("c2"),
            },
        ),
        step(20_000, 115, expect(Check::Converged { context: c1() })),
        step(
            20_000,
            121,
            expect(Check::Value {
                context: c1(),
                key: Arg::Str(s("colour")),
                equals: Expected::Bytes(Arg::Str(s("blue"))),
                nodes: None,
            }),
        ),
        step(
            20_000,
            129,
            expect(Check::Value {
                context: c1(),
                key: Arg::Hex(vec![1]),
                equals: Expected::Absent,
                nodes: Some(names(&["alice"])),
            }),
        ),
        step(
            20_000,
            138,
            expect(Check::Value {
                context: s("c2"),
                key: Arg::Str(s("k")),
                equals: Expected::Bytes(Arg::U64(5)),
                nodes: None,
            }),
        ),
        step(
            20_000,
            146,
            expect(Check::Members {
                context: c1(),
                equals: names(&["alice", "bob"]),
            }),
        ),
        step(
            20_000,
            153,
            expect(Check::NotMember {
                context: s("c2"),
                node: s("bob"),
            }),
        ),
        step(
            20_000,
            160,
            expect(Check::HeldBack {
                context: c1(),
                node: s("alice"),
                by: s("bob"),
            }),
        ),
        step(
            20_000,
            168,
            expect(Check::OnCheckpoint {
                context: c1(),
                node: s("bob"),
            }),
        ),
        step(
            120_000,
            15,
            expect(Check::Applied {
                context: c1(),
                node: s("bob"),
                at_least: 3,
            }),
        ),
    ];
    let expected = Scenario {
        name: s("every-op"),
        description: s("Not a meaningful run: it exercises the scenario parser."),
        seed: 7,
        nodes: names(&["alice", "bob", "carol"]),
        settle_ms: 1500,
        stress: false,
        checkpoint_interval: None,
        network: Network {
            latency_ms: (2, 30),
            drop: 0.01,
            duplicate: 0.005,
        },
        disk: Faults::default(),
        byzantine: Byzantine::default(),
        steps: expected_steps,
        path: path.clone(),
    };
    assert_same(&scenario, &expected);
    let ops: Vec<&str> = scenario.steps.iter().map(|step| step.op.name()).collect();
    for op in OPS {
        assert!(ops.contains(&op), "the fixture lacks op {op}");
    }
    let checks: Vec<&str> = scenario
        .steps
        .iter()
        .filter_map(|step| match &step.op {
            Op::Expect(check) => Some(check.name()),
            _ => None,
        })
        .collect();
    for check in CHECKS {
        assert!(checks.contains(&check), "the fixture lacks check {check}");
    }
}

#[test]
fn defaults_apply_when_fields_are_absent() {
    let scenario =
        Scenario::parse("name = \"x\"\nnodes = [\"a\"]\n", Path::new("<inline>")).expect("valid");
    assert_eq!(scenario.seed, 0);
    assert_eq!(scenario.description, "");
    assert_eq!(scenario.settle_ms, SETTLE_MS_DEFAULT);
    assert_eq!(scenario.network, Network::default());
    assert_eq!(scenario.network.latency_ms, (1, 20));
    assert!(scenario.steps.is_empty());
    assert_eq!(scenario.path, Path::new("<inline>"));
}

#[test]
fn steps_sort_by_time_and_keep_file_order_for_ties() {
    let text = r#"
name = "x"
nodes = ["a", "b"]
[[step]]
at = "2s"
op = "crash"
node = "b"
[[step]]
at = "1s"
op = "crash"
node = "a"
[[step]]
at = "1000ms"
op = "restart"
node = "a"
[[step]]
at = "0.5s"
op = "heal"
"#;
    let scenario = Scenario::parse(text, Path::new("x.toml")).expect("valid");
    let order: Vec<(u64, &str, usize)> = scenario
        .steps
        .iter()
        .map(|step| (step.at_ms, step.op.name(), step.line))
        .collect();
    assert_eq!(
        order,
        vec![
            (500, "heal", 16),
            (1000, "crash", 8),
            (1000, "restart", 12),
            (2000, "crash", 4)
        ]
    );
}

#[test]
fn path_apps_resolve_relative_to_the_scenario_file() {
    let text = "name = \"x\"\nnodes = [\"a\"]\n[[step]]\nat = \"0ms\"\nop = \"create\"\n\
                node = \"a\"\ncontext = \"c\"\napp = \"../apps/x.wasm\"\n";
    let scenario = Scenario::parse(text, Path::new("scenarios/sub/s.toml")).expect("valid");
    let Op::Create { app, .. } = &scenario.steps[0].op else {
        panic!("expected a create step");
    };
    assert_eq!(app, &AppRef::Path(PathBuf::from("scenarios/apps/x.wasm")));
    // Not opened at parse time: the file does not exist.
    assert_eq!(
        Scenario::parse(&scenario.to_toml(), &scenario.path),
        Ok(scenario)
    );
}

// -----------------------------------------------------------------------
// Errors.

const HEAD: &str = "name = \"x\"\nnodes = [\"alice\", \"bob\", \"carol\"]\n";

/// Parses `text` as `scenarios/x.toml`, expecting an error on the line
/// marked `# <-` (or line 1 if none is marked) whose message contains
/// `wanted`.
#[track_caller]
fn assert_error(text: &str, wanted: &str) {
    let expected_line = text
        .lines()
        .position(|line| line.contains("# <-"))
        .map_or(1, |index| index + 1);
    let path = Path::new("scenarios/x.toml");
    let error = match Scenario::parse(text, path) {
        Ok(_) => panic!("expected an error containing {wanted:?} in:\n{text}"),
        Err(error) => error,
    };
    let shown = error.to_string();
    assert_eq!(
        error.line, expected_line,
        "wrong line for {shown:?} in:\n{text}"
    );
    assert!(
        shown.starts_with(&format!("scenarios/x.toml:{expected_line}: ")),
        "{shown:?}"
    );
    assert!(
        error.message.contains(wanted),
        "{shown:?} does not contain {wanted:?}"
    );
}

/// `HEAD`, a create of `c1` by alice, then `rest`.
fn with_c1(rest: &str) -> String {
    format!(
        "{HEAD}[[step]]\nat = \"0ms\"\nop = \"create\"\nnode = \"alice\"\ncontext = \"c1\"\napp = \"kv\"\n{rest}"
    )
}

#[test]
fn unreadable_files_are_reported_without_a_line() {
    let path = Path::new("/nonexistent/dir/x.toml");
    let error = Scenario::from_file(path).expect_err("no such file");
    assert_eq!(error.line, 0);
    let shown = error.to_string();
    assert!(
        shown.starts_with("/nonexistent/dir/x.toml: cannot open the scenario file"),
        "{shown}"
    );
}

#[test]
fn a_file_that_is_not_utf8_is_reported_at_its_line() {
    let path = std::env::temp_dir().join(format!("ctx-sim-scenario-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        b"name = \"x\"\nnodes = [\"a\"]\ndescription = \"\xff\"\n",
    )
    .expect("temp dir is writable");
    let result = Scenario::from_file(&path);
    let _ = std::fs::remove_file(&path);
    let error = result.expect_err("not UTF-8");
    assert_eq!(error.line, 3);
    assert!(error.message.contains("not valid UTF-8"), "{error}");
}

#[test]
fn toml_syntax_errors_name_the_line() {
    assert_error(
        &format!("{HEAD}seed = 1\nsettle = [1, # <-\n"),
        "invalid TOML",
    );
    assert_error(&format!("{HEAD}name = \"y\" # <-\n"), "name is given twice");
    assert_error(
        &format!("{HEAD}[step]\nat = \"0ms\"\n[step] # <-\n"),
        "write [[step]], with two brackets",
    );
    assert_error(
        &format!("{HEAD}[step] # <-\nat = \"0ms\"\nop = \"heal\"\n"),
        "[[step]]",
    );
}

#[test]
fn missing_and_unknown_top_level_fields() {
    assert_error("nodes = [\"a\"]\n", "missing field \"name\"");
    assert_error("name = \"x\"\n", "missing field \"nodes\"");
    assert_error(
        "name = \"\" # <-\nnodes = [\"a\"]\n",
        "field \"name\" must not be empty",
    );
    assert_error(
        &format!("{HEAD}sede = 5 # <-\n"),
        "unknown field \"sede\" at the top level (expected one of: name, description, seed",
    );
    assert_error(
        &format!("{HEAD}[network]\nlatency_ms = [1, 2]\nlantecy_ms = [1, 20] # <-\n"),
        "unknown field \"lantecy_ms\" in [network] (expected one of: latency_ms, drop, duplicate)",
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    assert_error(
        "name = \"x\"\nnodes = \"alice\" # <-\n",
        "field \"nodes\" must be an array, not a string",
    );
    assert_error(
        &format!("{HEAD}seed = \"42\" # <-\n"),
        "field \"seed\" must be a whole number, not a string",
    );
    assert_error(
        &format!("{HEAD}seed = -1 # <-\n"),
        "field \"seed\" must not be negative",
    );
    assert_error(
        &format!("{HEAD}seed = 1.5 # <-\n"),
        "must be a whole number, not a float",
    );
    assert_error(
        &format!("{HEAD}settle = 10 # <-\n"),
        "field \"settle\" must be a time such as \"250ms\"",
    );
    assert_error(
        &format!("{HEAD}network = 5 # <-\n"),
        "field \"network\" must be a table",
    );
    assert_error(&format!("{HEAD}step = 5 # <-\n"), "[[step]]");
    assert_error(
        &format!("{HEAD}step = [5] # <-\n"),
        "step 1 must be a [[step]] table, not an integer",
    );
    assert_error(
        &with_c1(
            "[[step]]\nat = \"1s\"\nop = \"workload\"\ncontext = \"c1\"\ncalls = \"5\" # <-\nover = \"1s\"\nmethods = [{method = \"m\"}]\n",
        ),
        "step 2: field \"calls\" must be a whole number, not a string",
    );
    assert_error(
        &with_c1(
            "[[step]]\nat = \"1s\"\nop = \"call\"\nnode = \"alice\"\ncontext = \"c1\"\nmethod = \"m\"\nargs = [1.5] # <-\n",
        ),
        "step 2: field \"args\": argument 1 must be a string, a whole number or {hex = \"00ff\"}, not a float",
    );
    assert_error(
        &with_c1(
            "[[step]]\nat = \"1s\"\nop = \"call\"\nnode = \"alice\"\ncontext = \"c1\"\nmethod = \"m\"\nargs = \"x\" # <-\n",
        ),
        "step 2: field \"args\" must be an array, not a string",
    );
}

#[test]
fn node_lists_are_checked() {
    assert_error(
        "name = \"x\"\nnodes = [] # <-\n",
        "field \"nodes\" is empty",
    );
    assert_error(
        "name = \"x\"\nnodes = [\"a\",\n  \"a\", # <-\n]\n",
        "node \"a\" is listed twice in field \"nodes\"",
    );
    assert_error(
        "name = \"x\"\nnodes = [\"\"] # <-\n",
        "a node name must not be empty",
    );
    assert_error(
        &format!(
            "name = \"x\"\nnodes = [\"{}\"] # <-\n",
            "n".repeat(NAME_BYTES_MAX + 1)
        ),
        "is longer than 64 bytes",
    );
    assert_error(
        "name = \"x\"\nnodes = [1] # <-\n",
        "each entry of field \"nodes\" must be a string",
    );
}

#[test]
fn unknown_nodes_are_named_with_the_declared_ones() {
    let known = "(nodes are: alice, bob, carol)";
    assert_error(
        &format!("{HEAD}[[step]]\nat = \"0ms\"\nop = \"crash\"\nnode = \"dave\" # <-\n"),
        &format!("step 1: unknown node \"dave\" in field \"node\" {known}"),
    );
    assert_error(
        &with_c1(
            "[[step]]\nat = \"1s\"\nop = \"invite\"\nnode = \"alice\"\ncontext = \"c1\"\nmember = \"dave\" # <-\n",
        ),
        &format!("step 2: unknown node \"dave\" in field \"member\" {known}"),
    );
    assert_error(
        &with_c1(
            "[[step]]\nat = \"1s\"\nop = \"join\"\nnode = \"bob\"\ncontext = \"c1\"\nvia = \"eve\" # <-\n",
        ),
        "unknown node \"eve\" in field \"via\"",
    );
    assert_error(
        &format!(
            "{HEAD}[[step]]\nat = \"0ms\"\nop = \"partition\"\ngroups = [[\"alice\"],\n  [\"bob\", \"dave\"]] # <-\n"
        ),
        "unknown node \"dave\" in field \"groups\"",
    );
    assert_error(
        &with_c1(
            "[[step]]\nat = \"1s\"\nop = \"workload\"\ncontext = \"c1\"\ncalls = 1\nover = \"1s\"\nmethods = [{method = \"m\"}]\nnodes = [\"zed\"] # <-\n",
        ),
        "unknown node \"zed\" in field \"nodes\"",
    );
    assert_error(
        &with_c1(
            "[[step]]\nat = \"1s\"\nop = \"expect\"\ncheck = \"members\"\ncontext = \"c1\"\nequals = [\"alice\", \"al\"] # <-\n",
        ),
        "unknown node \"al\" in field \"equals\"",
    );
    assert_error(
        &with_c1(
            "[[step]]\nat = \"1s\"\nop = \"expect\"\ncheck = \"value\"\ncontext = \"c1\"\nkey = \"k\"\nequals = false\nnodes = [\"x\"] # <-\n",
        ),
        "unknown node \"x\" in field \"nodes\"",
    );
}

#[test]
fn contexts_must_be_created_once_before_use() {
    assert_error(
        &format!(
            "{HEAD}[[step]]\nat = \"0ms\"\nop = \"leave\"\nnode = \"alice\"\ncontext = \"c2\" # <-\n"
        ),
        "step 1: context \"c2\" is used before any step creates it",
    );
    // A create later in time does not help, and the message says where it is.
    assert_error(
        &format!(
            "{HEAD}[[step]]\nat = \"5s\"\nop = \"create\"\nnode = \"alice\"\ncontext = \"c\"\napp = \"kv\"\n\
             [[step]]\nat = \"1s\"\nop = \"expect\"\ncheck = \"converged\"\ncontext = \"c\" # <-\n"
        ),
        "step 2: context \"c\" is used before any step creates it (step 1 creates it, but only at 5s)",
    );
    // Same time: file order decides.
    assert_error(
        &format!(
            "{HEAD}[[step]]\nat = \"0ms\"\nop = \"leave\"\nnode = \"bob\"\ncontext = \"c\" # <-\n\
             [[step]]\nat = \"0ms\"\nop = \"create\"\nnode = \"alice\"\ncontext = \"c\"\napp = \"kv\"\n"
        ),
        "(step 2 creates it at the same time, but comes later in the file)",
    );
    assert_error(
        &with_c1(
            "[[step]]\nat = \"1s\"\nop = \"create\"\nnode = \"bob\"\ncontext = \"c1\" # <-\napp = \"bank\"\n",
        ),
        "step 2: context \"c1\" is already created by step 1 (line 3)",
    );
    assert_error(
        &format!(
            "{HEAD}[[step]]\nat = \"0ms\"\nop = \"create\"\nnode = \"alice\"\ncontext = \"\" # <-\napp = \"kv\"\n"
        ),
        "step 1: a context name must not be empty",
    );
}

#[test]
fn ops_and_step_fields_are_checked() {
    assert_error(
        &format!("{HEAD}[[step]]\nat = \"0ms\"\nop = \"jion\" # <-\n"),
        "step 1: unknown op \"jion\" (expected one of: create, invite, join, leave, call, workload, partition, heal, crash, restart, clock, pause, disk_full, network, expect)",
    );
    assert_error(
        &format!("{HEAD}[[step]] # <-\nat = \"0ms\"\n"),
        "step 1: missing field \"op\" (expected one of: create,",
    );
    // Clock faults: a rate is a multiple of true time within bounds, a
    // pause needs its length.
    assert_error(
        &format!("{HEAD}[[step]]\nat = \"0ms\"\nop = \"clock\"\nnode = \"bob\"\nrate = 20 # <-\n"),
        "step 1: field \"rate\" is how fast the node's clock runs against true time and must be between 0.1 and 10, not 20",
    );
    assert_error(
        &format!(
            "{HEAD}[[step]]\nat = \"0ms\"\nop = \"clock\"\nnode = \"bob\"\nrate = \"fast\" # <-\n"
        ),
        "step 1: field \"rate\" must be a number, not a string",
    );
    assert_error(
        &format!("{HEAD}[[step]] # <-\nat = \"0ms\"\nop = \"pause\"\nnode = \"bob\"\n"),
        "step 1: missing field \"for\" (a pause step needs: node, for)",
    );
    assert_error(
        &format!("{HEAD}[[step]]\nat = \"0ms\"\nop = \"pause\"\nnode = \"bob\"\nfor = 5 # <-\n"),
        "step 1: field \"for\" must be a time such as",
    );
    assert_error(
        &format!("{HEAD}[[step]] # <-\nop = \"heal\"\n"),
        "step 1: missing field \"at\" (every step needs a time",
    );
    assert_error(
        &format!(
            "{HEAD}[[step]] # <-\nat = \"0ms\"\nop = \"create\"\nnode = \"alice\"\napp = \"kv\"\n"
        ),
        "step 1: missing field \"context\" (a create step needs: node, context, app)",
    );
    assert_error(
        &with_c1(
            "[[step]] # <-\nat = \"1s\"\nop = \"invite\"\nnode = \"alice\"\ncontext = \"c1\"\n",
        ),
        "step 2: missing field \"member\" (an invite step needs: node, context, member)",
    );
    assert_error(
        &with_c1(
            "[[step]]\nat = \"1s\"\nop = \"invite\"\nnode = \"alice\"\ncontext = \"c1\"\nmembr = \"bob\" # <-\n",
        ),
        "step 2: unknown field \"membr\" for op \"invite\" (expected one of: at, op, node, context, member)",
    );
    assert_error(
        &format!("{HEAD}[[step]]\nat = \"0ms\"\nop = \"heal\"\nnode = \"bob\" # <-\n"),
        "step 1: unknown field \"node\" for op \"heal\" (expected one of: at, op)",
    );
    assert_error(
        &format!(
            "{HEAD}[[step]]\nat = \"0ms\"\nop = \"create\"\nnode = \"alice\"\ncontext = \"c\"\napp = \"foo\" # <-\n"
        ),
        "step 1: app \"foo\" is neither a bundled app (kv, counter, bank) nor a path to a .wat or .wasm file",
    );
    assert_error(
        &with_c1(
            "[[step]]\nat = \"1s\"\nop = \"call\"\nnode = \"alice\"\ncontext = \"c1\"\nmethod = \"\" # <-\n",
        ),
        "step 2: field \"method\" must not be empty",
    );
}

#[test]
fn times_are_checked() {
    let crash_at =
        |at: &str| format!("{HEAD}[[step]]\nat = {at} # <-\nop = \"crash\"\nnode = \"bob\"\n");
    assert_error(
        &crash_at("\"5 sec\""),
        "step 1: field \"at\": \"5 sec\" has unknown unit \"sec\" (expected ms, s or m)",
    );
    assert_error(&crash_at("\"5\""), "\"5\" has no unit; write 5ms, 5s or 5m");
    assert_error(&crash_at("\"-5ms\""), "times cannot be negative");
    assert_error(&crash_at("\"0.5ms\""), "not a whole number of milliseconds");
    assert_error(&crash_at("\"soon\""), "\"soon\" is not a duration");
    assert_error(
        &crash_at("5"),
        "step 1: field \"at\" must be a time such as \"250ms\"",
    );
    assert_error(&crash_at("\"99999999999999999999999m\""), "is too large");
    assert_error(&crash_at("\"366d\""), "unknown unit \"d\"");
    assert_error(&crash_at("\"525601m\""), "is beyond the limit of");
    assert_error(
        &format!("{HEAD}settle = \"ten seconds\" # <-\n"),
        "field \"settle\": \"ten seconds\" is not a duration",
    );
}

#[test]
fn byzantine_tables_are_checked() {
    assert_error(
        &format!("{HEAD}[byzantine] # <-\nrate = 0.5\n"),
        "missing field \"nodes\" in [byzantine] (a [byzantine] table names the nodes that lie)",
    );
    assert_error(
        &format!("{HEAD}[byzantine]\nnodes = [\"mallory\"] # <-\n"),
        "unknown node \"mallory\"",
    );
    assert_error(
        &format!("{HEAD}[byzantine]\nnodes = [\"bob\"]\nrate = 1.5 # <-\n"),
        "field \"rate\" in [byzantine] is a probability and must be between 0 and 1, not 1.5",
    );
    assert_error(
        &format!("{HEAD}[byzantine]\nnodes = [\"bob\"]\nbehaviours = [\"garble\", \"lie\"] # <-\n"),
        "unknown behaviour \"lie\" in [byzantine] (expected one of: garble, oversize, forge, replay, phantom-heads, lie-in-catchup)",
    );
    assert_error(
        &format!("{HEAD}[byzantine]\nnodes = [\"bob\"]\nbehaviours = [] # <-\n"),
        "is empty: list at least one, or leave the field out for all of them",
    );
    assert_error(
        &format!("{HEAD}[byzantine]\nnodes = [\"bob\"]\nlies = 3 # <-\n"),
        "unknown field \"lies\" in [byzantine] (expected one of: nodes, rate, behaviours)",
    );
    assert_error(
        &format!("{HEAD}byzantine = 3 # <-\n"),
        "field \"byzantine\" must be a table",
    );
    let read = Scenario::parse(
        &format!("{HEAD}[byzantine]\nnodes = [\"bob\"]\n"),
        Path::new("byzantine.toml"),
    )
    .expect("valid");
    assert_eq!(
        read.byzantine,
        Byzantine {
            nodes: vec!["bob".into()],
            rate: Byzantine::RATE_DEFAULT,
            behaviours: Behaviour::ALL.to_vec(),
        }
    );
}

#[test]
fn disk_faults_are_checked() {
    assert_error(
        &format!("{HEAD}[disk]\nlose_unsynced = 2 # <-\n"),
        "field \"lose_unsynced\" in [disk] is a probability and must be between 0 and 1, not 2",
    );
    assert_error(
        &format!("{HEAD}[disk]\nlose_unsynced = 0.5\nflip = 0.1 # <-\n"),
        "unknown field \"flip\" in [disk] (expected one of: lose_unsynced, tear)",
    );
    assert_error(
        &format!("{HEAD}disk = 3 # <-\n"),
        "field \"disk\" must be a table",
    );
    let read = Scenario::parse(
        &format!("{HEAD}[disk]\nlose_unsynced = 0.5\n"),
        Path::new("disk.toml"),
    )
    .expect("valid");
    assert_eq!(
        read.disk,
        Faults {
            lose_unsynced: 0.5,
            tear: 0.0
        }
    );
}

#[test]
fn network_conditions_are_checked() {
    assert_error(
        &format!("{HEAD}[network]\ndrop = 1.5 # <-\n"),
        "field \"drop\" in [network] is a probability and must be between 0 and 1, not 1.5",
    );
    assert_error(
        &format!("{HEAD}[network]\nduplicate = -0.1 # <-\n"),
        "between 0 and 1, not -0.1",
    );
    assert_error(
        &format!("{HEAD}[network]\ndrop = nan # <-\n"),
        "between 0 and 1, not NaN",
    );
    assert_error(
        &format!("{HEAD}[network]\nlatency_ms = [30, 20] # <-\n"),
        "field \"latency_ms\" in [network]: the low end 30 is above the high end 20",
    );
    assert_error(
        &format!("{HEAD}[network]\nlatency_ms = [30] # <-\n"),
        "must be [low, high] in milliseconds",
    );
    assert_error(
        &format!("{HEAD}[network]\nlatency_ms = [1, \"2\"] # <-\n"),
        "the high end must be a whole number, not a string",
    );
    assert_error(
        &format!("{HEAD}[[step]]\nat = \"1s\"\nop = \"network\"\ndrop = 2 # <-\n"),
        "step 1: field \"drop\" is a probability",
    );
    assert_error(
        &format!("{HEAD}[[step]] # <-\nat = \"1s\"\nop = \"network\"\n"),
        "step 1: a network step changes nothing: give latency_ms, drop or duplicate",
    );
}

#[test]
fn workloads_are_checked() {
    let workload = |calls: &str, over: &str, methods: &str| {
        with_c1(&format!(
            "[[step]]\nat = \"1s\"\nop = \"workload\"\ncontext = \"c1\"\ncalls = {calls}\nover = {over}\nmethods = {methods}\n"
        ))
    };
    let one_method = "[{method = \"set\", args = [\"$key\", \"$value\"]}]";
    assert_error(
        &workload("0 # <-", "\"1s\"", one_method),
        "step 2: field \"calls\" must be between 1 and 1000000, not 0",
    );
    assert_error(
        &workload("5000000000 # <-", "\"1s\"", one_method),
        "must be between 1 and 1000000, not 5000000000",
    );
    assert_error(
        &workload("5", "\"0s\" # <-", one_method),
        "step 2: field \"over\" must be longer than 0ms",
    );
    assert_error(
        &workload("5", "\"1s\"", "[] # <-"),
        "step 2: field \"methods\" must list between 1 and 64 methods, not 0",
    );
    assert_error(
        &workload("5", "\"1s\"", "[\"set\"] # <-"),
        "step 2: method 1: each method must be a table",
    );
    assert_error(
        &workload("5", "\"1s\"", "[{args = []}] # <-"),
        "step 2: method 1: missing field \"method\"",
    );
    assert_error(
        &workload("5", "\"1s\"", "[{method = \"m\", arg = []}] # <-"),
        "step 2: method 1: unknown field \"arg\" (expected one of: method, args)",
    );
    assert_error(
        &workload("5", "\"1s\"", "[{method = \"m\", args = [\"$kye\"]}] # <-"),
        "unknown draw \"$kye\" (expected \"$key\", \"$value\" or \"$amount\")",
    );
    assert_error(
        &with_c1(
            "[[step]]\nat = \"1s\"\nop = \"workload\"\ncontext = \"c1\"\ncalls = 1\nover = \"1s\"\nmethods = [{method = \"m\"}]\nnodes = [] # <-\n",
        ),
        "step 2: field \"nodes\" is empty",
    );
    assert_error(
        &with_c1(
            "[[step]]\nat = \"1s\"\nop = \"workload\"\ncontext = \"c1\"\ncalls = 1\nover = \"1s\"\nmethods = [{method = \"m\"}]\nnodes = [\"bob\", \"bob\"] # <-\n",
        ),
        "step 2: field \"nodes\" lists node \"bob\" twice",
    );
}

#[test]
fn arguments_are_checked() {
    let call = |args: &str| {
        with_c1(&format!(
            "[[step]]\nat = \"1s\"\nop = \"call\"\nnode = \"alice\"\ncontext = \"c1\"\nmethod = \"set\"\nargs = {args} # <-\n"
        ))
    };
    assert_error(
        &call("[\"$key\"]"),
        "step 2: field \"args\": argument 1: \"$key\" draws a random value, which only a workload's methods can do; write {str = \"$key\"}",
    );
    assert_error(
        &call("[\"a\", {hex = \"abc\"}]"),
        "argument 2: \"abc\" is not hex bytes: it has an odd number of digits",
    );
    assert_error(
        &call("[{hex = \"zz\"}]"),
        "\"zz\" is not hex bytes: 'z' is not a hex digit",
    );
    assert_error(
        &call("[{hex = 5}]"),
        "argument 1: hex must be a string, not an integer",
    );
    assert_error(
        &call("[{bin = \"01\"}]"),
        "argument 1 has unknown key \"bin\" (expected hex, str, bool, or an integer type: u8, u16, u32, u64, u128, i8, i16, i32, i64, i128)",
    );
    assert_error(
        &call("[{u8 = 256}]"),
        "argument 1: u8: 256 is not a u8 (a whole number from 0 to 255)",
    );
    assert_error(
        &call("[{i8 = -129}]"),
        "argument 1: i8: -129 is not an i8 (a whole number from -128 to 127)",
    );
    assert_error(
        &call("[{u32 = 1.5}]"),
        "argument 1: u32 must be a whole number in decimal, not a float",
    );
    assert_error(
        &call("[{u64 = -1}]"),
        "argument 1: u64: -1 is not a u64 (a whole number from 0 to 18446744073709551615)",
    );
    assert_error(
        &call("[{bool = 1}]"),
        "argument 1: bool must be true or false, not an integer",
    );
    assert_error(&call("[{hex = \"01\", str = \"a\"}]"), "with one key");
    assert_error(&call("[-3]"), "argument 1 must not be negative");
    assert_error(&call("[true]"), "not a boolean");
}

#[test]
fn partitions_are_checked() {
    let partition = |groups: &str| {
        format!("{HEAD}[[step]]\nat = \"1s\"\nop = \"partition\"\ngroups = {groups} # <-\n")
    };
    assert_error(
        &partition("[[\"alice\", \"alice\"]]"),
        "step 1: field \"groups\": group 1 lists node \"alice\" twice",
    );
    assert_error(
        &partition("[[\"alice\"], [\"bob\", \"alice\"]]"),
        "step 1: field \"groups\": node \"alice\" is in both group 1 and group 2",
    );
    assert_error(&partition("[[\"alice\"], []]"), "group 2 is empty");
    assert_error(
        &partition("[\"alice\"]"),
        "group 1 must be an array, not a string",
    );
    assert_error(
        &partition("\"alice\""),
        "step 1: field \"groups\" must be an array",
    );
}

#[test]
fn checks_are_checked() {
    let expect = |rest: &str| with_c1(&format!("[[step]]\nat = \"1s\"\nop = \"expect\"\n{rest}"));
    assert_error(
        &expect("check = \"convergd\" # <-\ncontext = \"c1\"\n"),
        "step 2: unknown check \"convergd\" (expected one of: converged, value, members, not_member, applied, held_back, on_checkpoint)",
    );
    let expect_marked = |rest: &str| {
        with_c1(&format!(
            "[[step]] # <-\nat = \"1s\"\nop = \"expect\"\n{rest}"
        ))
    };
    assert_error(
        &expect_marked("context = \"c1\"\n"),
        "step 2: missing field \"check\" (expected one of: converged,",
    );
    assert_error(
        &expect_marked("check = \"value\"\ncontext = \"c1\"\nequals = 1\n"),
        "step 2: missing field \"key\" (a value check needs: context, key, equals)",
    );
    assert_error(
        &expect_marked("check = \"applied\"\ncontext = \"c1\"\nnode = \"bob\"\n"),
        "step 2: missing field \"at_least\" (an applied check needs: context, node, at_least)",
    );
    assert_error(
        &expect("check = \"value\"\ncontext = \"c1\"\nkey = \"k\"\nequals = true # <-\n"),
        "step 2: field \"equals\" cannot be true",
    );
    assert_error(
        &expect("check = \"value\"\ncontext = \"c1\"\nkey = \"$key\" # <-\nequals = 1\n"),
        "\"$key\" draws a random value",
    );
    assert_error(
        &expect("check = \"converged\"\ncontext = \"c1\"\nnode = \"bob\" # <-\n"),
        "step 2: unknown field \"node\" for check \"converged\" (expected one of: at, op, check, context)",
    );
    assert_error(
        &expect("check = \"members\"\ncontext = \"c1\"\nequals = [\"bob\", \"bob\"] # <-\n"),
        "field \"equals\" lists node \"bob\" twice",
    );
    assert_error(
        &expect("check = \"applied\"\ncontext = \"c1\"\nnode = \"bob\"\nat_least = -1 # <-\n"),
        "field \"at_least\" must not be negative",
    );
    assert_error(
        &expect("check = \"not_member\"\ncontext = \"c9\" # <-\nnode = \"bob\"\n"),
        "context \"c9\" is used before any step creates it",
    );
}

#[test]
fn limits_are_enforced() {
    let many_nodes: Vec<String> = (0..=NODES_MAX)
        .map(|index| format!("\"n{index}\""))
        .collect();
    assert_error(
        &format!("name = \"x\"\nnodes = [{}] # <-\n", many_nodes.join(", ")),
        "too many nodes: 257 (at most 256)",
    );
    let many_args = vec!["1"; ARGS_MAX + 1].join(", ");
    assert_error(
        &with_c1(&format!(
            "[[step]]\nat = \"1s\"\nop = \"call\"\nnode = \"alice\"\ncontext = \"c1\"\nmethod = \"m\"\nargs = [{many_args}] # <-\n"
        )),
        "has 65 arguments (at most 64)",
    );
}

// -----------------------------------------------------------------------
// Writing.

#[test]
fn to_toml_round_trips_every_op_check_and_argument_kind() {
    let scenario = Scenario::from_file(&fixture("every-op.toml")).expect("valid");
    let written = scenario.to_toml();
    let reread = Scenario::parse(&written, &scenario.path).expect("to_toml writes a valid file");
    assert_eq!(reread, scenario, "written:\n{written}");
    // Readable: one [[step]] per step, times with units.
    assert_eq!(written.matches("[[step]]").count(), scenario.steps.len());
    assert!(written.contains("at = \"20s\""), "{written}");
    assert!(
        written.contains("at = \"1100ms\"") || written.contains("at = \"20ms\""),
        "{written}"
    );
    assert!(written.contains("app = \"apps/custom.wat\""), "{written}");
    // Written once more, it is the same text: a fixed point.
    assert_eq!(reread.to_toml(), written);
}

#[test]
fn to_toml_round_trips_awkward_values() {
    let scenario = Scenario {
        name: s("quotes \" and \\ and\nnewlines\t and ünïcode"),
        description: String::new(),
        seed: u64::MAX,
        nodes: names(&["a b", "c\"d", "'e'"]),
        settle_ms: 0,
        stress: false,
        checkpoint_interval: None,
        network: Network {
            latency_ms: (0, 0),
            drop: 0.1 + 0.2,
            duplicate: 1e-9,
        },
        disk: Faults {
            lose_unsynced: 0.3,
            tear: 1.0,
        },
        byzantine: Byzantine {
            nodes: names(&["c\"d"]),
            rate: 0.125,
            behaviours: vec![Behaviour::LieInCatchup, Behaviour::Garble],
        },
        steps: vec![
            step(
                0,
                0,
                Op::Create {
                    node: s("a b"),
                    context: s("ctx \"1\""),
                    app: AppRef::Path(PathBuf::from("elsewhere/app.wasm")),
                },
            ),
            step(
                1,
                0,
                Op::Call {
                    node: s("'e'"),
                    context: s("ctx \"1\""),
                    method: s("m"),
                    args: vec![
                        Arg::Str(s("$key")),
                        Arg::Str(String::new()),
                        Arg::U64(u64::MAX),
                        Arg::U64(0),
                        Arg::Hex(Vec::new()),
                        Arg::Hex((0..=255).collect()),
                    ],
                },
            ),
            step(
                TIME_MS_MAX,
                0,
                Op::Workload {
                    context: s("ctx \"1\""),
                    calls: WORKLOAD_CALLS_MAX,
                    over_ms: 1,
                    methods: vec![MethodTemplate {
                        method: s("spin"),
                        args: Vec::new(),
                    }],
                    nodes: None,
                },
            ),
            step(TIME_MS_MAX, 0, Op::Partition { groups: Vec::new() }),
            step(
                TIME_MS_MAX,
                0,
                expect(Check::Members {
                    context: s("ctx \"1\""),
                    equals: Vec::new(),
                }),
            ),
            step(
                TIME_MS_MAX,
                0,
                expect(Check::Value {
                    context: s("ctx \"1\""),
                    key: Arg::U64(7),
                    equals: Expected::Bytes(Arg::Hex(vec![9])),
                    nodes: Some(names(&["c\"d"])),
                }),
            ),
        ],
        path: PathBuf::from("out/shrunk.toml"),
    };
    let written = scenario.to_toml();
    let reread = Scenario::parse(&written, &scenario.path);
    assert_eq!(reread, Ok(scenario.clone()), "written:\n{written}");
    // Saved elsewhere, the app path still names the same file.
    let moved = Scenario {
        path: PathBuf::from("regressions/deep/x.toml"),
        ..scenario
    };
    assert!(
        moved
            .to_toml()
            .contains("app = \"../../elsewhere/app.wasm\""),
        "{}",
        moved.to_toml()
    );
}

#[test]
fn relative_paths() {
    let cases = [
        ("a/b/x.wat", "a/b", Some("x.wat")),
        ("a/b/x.wat", "", Some("a/b/x.wat")),
        ("a/b/x.wat", "./a", Some("b/x.wat")),
        ("a/x.wat", "b/c", Some("../../a/x.wat")),
        ("../o/x.wat", "../s", Some("../o/x.wat")),
        ("/abs/x.wat", "/abs/dir", Some("../x.wat")),
        ("/abs/x.wat", "rel", Some("/abs/x.wat")),
        ("x.wat", "../up", None),
        ("x.wat", "/somewhere/else", None),
    ];
    let absolute = |path: &Path| normalize(&std::path::absolute(path).expect("absolute"));
    for (target, base, expected) in cases {
        let (target, base) = (Path::new(target), Path::new(base));
        let got = relative_path(target, base);
        if let Some(expected) = expected {
            assert_eq!(got, Path::new(expected), "{target:?} from {base:?}");
        }
        assert_eq!(
            absolute(&base.join(&got)),
            absolute(target),
            "{target:?} from {base:?} gave {got:?}"
        );
    }
}

// -----------------------------------------------------------------------
// Helpers.

#[test]
fn stress_is_optional_and_round_trips() {
    let base = "name = \"s\"\nnodes = [\"a\"]\n";
    let plain = Scenario::parse(base, Path::new("s.toml")).unwrap();
    assert!(!plain.stress);
    let stressed = Scenario::parse(&format!("{base}stress = true\n"), Path::new("s.toml")).unwrap();
    assert!(stressed.stress);
    let again = Scenario::parse(&stressed.to_toml(), Path::new("s.toml")).unwrap();
    assert_eq!(again, stressed);
    let error = Scenario::parse(&format!("{base}stress = 1\n"), Path::new("s.toml"));
    assert!(error.unwrap_err().to_string().contains("true or false"));
}

#[test]
fn durations() {
    let good = [
        ("0ms", 0),
        ("250ms", 250),
        ("5s", 5_000),
        ("2m", 120_000),
        ("1.5s", 1_500),
        ("0.001s", 1),
        ("1.25m", 75_000),
        ("10.000s", 10_000),
        ("007ms", 7),
        (" 3s ", 3_000),
        ("3 s", 3_000),
        ("18446744073709551615ms", u64::MAX),
        ("0.5000000000000000000000000000m", 30_000),
    ];
    for (text, ms) in good {
        assert_eq!(parse_duration_ms(text), Ok(ms), "{text:?}");
    }
    let bad = [
        ("", "empty"),
        ("   ", "empty"),
        ("-5s", "negative"),
        ("-0ms", "negative"),
        ("5", "no unit"),
        ("5h", "unknown unit \"h\""),
        ("5 sec", "unknown unit \"sec\""),
        ("5MS", "unknown unit"),
        ("ms", "not a duration"),
        (".5s", "not a duration"),
        ("5.s", "not a duration"),
        ("1.2.3s", "not a duration"),
        ("+5s", "not a duration"),
        ("1_000ms", "unknown unit"),
        ("0.5ms", "whole number of milliseconds"),
        ("0.0001s", "whole number of milliseconds"),
        ("1.0000000000000000000001s", "whole number of milliseconds"),
        ("18446744073709551616ms", "too large"),
        ("307445734561825861m", "too large"),
        ("99999999999999999999999999999999999999999s", "too large"),
    ];
    for (text, wanted) in bad {
        match parse_duration_ms(text) {
            Ok(ms) => panic!("{text:?} parsed to {ms}"),
            Err(message) => assert!(message.contains(wanted), "{text:?}: {message}"),
        }
    }
    for ms in [0, 1, 999, 1000, 1001, 60_000, 61_500, TIME_MS_MAX, u64::MAX] {
        assert_eq!(parse_duration_ms(&format_duration(ms)), Ok(ms));
    }
}

#[test]
fn typed_arguments_encode_by_their_type_and_write_back() {
    let text = with_c1(
        "[[step]]\nat = \"1s\"\nop = \"call\"\nnode = \"alice\"\ncontext = \"c1\"\nmethod = \"m\"\nargs = [{u8 = 255}, {u32 = 7}, {i16 = -2}, {i64 = -9_000}, {u128 = \"340282366920938463463374607431768211455\"}, {i128 = \"-170141183460469231731687303715884105728\"}, {bool = true}, {bool = false}, {u64 = 5}]\n",
    );
    let scenario = Scenario::parse(&text, Path::new("typed.toml")).expect("parses");
    let Op::Call { args, .. } = &scenario.steps[1].op else {
        panic!("a call");
    };
    let bytes: Vec<Vec<u8>> = args.iter().map(|a| a.to_bytes().unwrap()).collect();
    assert_eq!(
        bytes,
        vec![
            vec![255],
            7u32.to_le_bytes().to_vec(),
            (-2i16).to_le_bytes().to_vec(),
            (-9_000i64).to_le_bytes().to_vec(),
            u128::MAX.to_le_bytes().to_vec(),
            i128::MIN.to_le_bytes().to_vec(),
            vec![1],
            vec![0],
            5u64.to_le_bytes().to_vec(),
        ]
    );
    // Written back, they read the same.
    let again = Scenario::parse(&scenario.to_toml(), Path::new("typed.toml")).expect("reads");
    assert_eq!(again, scenario);
}

#[test]
fn arguments_encode_as_length_prefixed_bytes() {
    assert_eq!(Arg::Str(s("ab")).to_bytes(), Some(b"ab".to_vec()));
    assert_eq!(
        Arg::U64(0x0102).to_bytes(),
        Some(vec![2, 1, 0, 0, 0, 0, 0, 0])
    );
    assert_eq!(Arg::Hex(vec![0, 255]).to_bytes(), Some(vec![0, 255]));
    assert_eq!(Arg::Draw(Draw::Key).to_bytes(), None);
    assert_eq!(encode_args(&[]), Vec::<u8>::new());
    assert_eq!(
        encode_args(&[b"ab".to_vec(), Vec::new(), vec![7]]),
        vec![2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0, 1, 0, 0, 0, 7]
    );
}

#[test]
fn errors_display_with_and_without_a_line() {
    let error = ScenarioError {
        path: PathBuf::from("s/x.toml"),
        line: 42,
        message: s("step 3: unknown op \"jion\""),
    };
    assert_eq!(
        error.to_string(),
        "s/x.toml:42: step 3: unknown op \"jion\""
    );
    let error = ScenarioError { line: 0, ..error };
    assert_eq!(error.to_string(), "s/x.toml: step 3: unknown op \"jion\"");
}

// -----------------------------------------------------------------------
// No input panics.

/// A deterministic pseudo-random sequence (Knuth's MMIX LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// Parses without panicking; whatever parses holds the invariants and
/// round-trips through `to_toml`.
fn parse_any(text: &str) {
    let path = Path::new("fuzz/x.toml");
    let Ok(scenario) = Scenario::parse(text, path) else {
        return;
    };
    assert!(scenario.steps.is_sorted_by_key(|step| step.at_ms));
    let reread = Scenario::parse(&scenario.to_toml(), path);
    assert_eq!(reread, Ok(scenario), "from:\n{text}");
}

#[test]
fn no_input_makes_the_parser_panic() {
    let valid = std::fs::read_to_string(fixture("every-op.toml")).expect("fixture");
    // Every prefix.
    for end in (0..=valid.len()).filter(|&end| valid.is_char_boundary(end)) {
        parse_any(&valid[..end]);
    }
    let mut rng = Lcg(0x5eed);
    // Random bytes, read as text.
    for _ in 0..2_000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        parse_any(&String::from_utf8_lossy(&bytes));
    }
    // The valid file with a few bytes changed, or a slice cut out, or
    // a line repeated: mostly still TOML, so the validation runs.
    let alphabet = b" \n\"'[]{}=,.#$-_0123456789abcdefmsxyz";
    for _ in 0..3_000 {
        let mut bytes = valid.as_bytes().to_vec();
        match rng.below(3) {
            0 => {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(bytes.len());
                    bytes[at] = alphabet[rng.below(alphabet.len())];
                }
            }
            1 => {
                let from = rng.below(bytes.len());
                let to = (from + rng.below(80)).min(bytes.len());
                bytes.drain(from..to);
            }
            _ => {
                let lines: Vec<&str> = valid.lines().collect();
                let line = lines[rng.below(lines.len())];
                let at = rng.below(lines.len());
                let mut edited: Vec<&str> = lines.clone();
                edited.insert(at, line);
                bytes = edited.join("\n").into_bytes();
            }
        }
        parse_any(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn the_steps_end_when_the_last_workload_call_or_pause_is_over() {
    let text = r#"
name = "x"
nodes = ["a", "b"]

[[step]]
at = "0ms"
op = "create"
node = "a"
context = "c"
app = "kv"

[[step]]
at = "1s"
op = "workload"
context = "c"
calls = 3
over = "5s"
methods = [{ method = "get", args = ["$key"] }]

[[step]]
at = "2s"
op = "pause"
node = "b"
for = "3500ms"

[[step]]
at = "3s"
op = "heal"
"#;
    let scenario = Scenario::parse(text, Path::new("<inline>")).expect("valid");
    assert_eq!(scenario.steps_end_ms(), 6_000);
    let mut no_workload = scenario.clone();
    no_workload.steps.remove(1);
    assert_eq!(no_workload.steps_end_ms(), 5_500);
    no_workload.steps.remove(1);
    assert_eq!(no_workload.steps_end_ms(), 3_000);
}
