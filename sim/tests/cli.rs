//! The `ctx-sim` command line as a user meets it: exit statuses, messages
//! that name the file and line, traces that replay.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ctx_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ctx-sim"))
        .args(args)
        .output()
        .expect("ctx-sim runs")
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ctx-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const GOOD: &str = r#"
name = "cli-good"
description = "Two members write; both read it."
seed = 7
nodes = ["alice", "bob"]
settle = "3s"

[[step]]
at = "0ms"
node = "alice"
op = "create"
context = "c1"
app = "kv"

[[step]]
at = "1ms"
node = "alice"
op = "invite"
context = "c1"
member = "bob"

[[step]]
at = "5ms"
node = "bob"
op = "join"
context = "c1"
via = "alice"

[[step]]
at = "1s"
node = "bob"
op = "call"
context = "c1"
method = "set"
args = ["colour", "blue"]

[[step]]
at = "2s"
op = "expect"
check = "value"
context = "c1"
key = "colour"
equals = "blue"
"#;

/// The frames of a format 2 trace after its magic: (start of the frame's
/// bytes, its tag, its length with the tag); the header first (tag: its
/// version byte).
fn frames(bytes: &[u8]) -> Vec<(usize, u8, usize)> {
    assert_eq!(&bytes[..8], b"CTXTRACE", "a format 2 trace");
    let mut at = 8;
    let mut frames = Vec::new();
    while at < bytes.len() {
        let length = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        frames.push((at + 4, bytes[at + 4], length));
        at += 4 + length;
    }
    frames
}

/// The same trace as format 1 wrote it: no magic, a version 1 header,
/// entries without tags, no world frames.
fn as_format_1(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, (start, tag, length)) in frames(bytes).into_iter().enumerate() {
        let (body, is_entry) = if index == 0 {
            let mut header = bytes[start..start + length].to_vec();
            header[0] = 1;
            (header, true)
        } else {
            (bytes[start + 1..start + length].to_vec(), tag == 0)
        };
        if is_entry {
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&body);
        }
    }
    out
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_passing_scenario_exits_0_with_a_readable_summary() {
    let file = scratch("good.toml", GOOD);
    let output = ctx_sim(&["run", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", stderr(&output));
    assert!(stdout.contains("cli-good (seed 7): PASSED"), "{stdout}");
    assert!(stdout.contains("ok   value(c1, colour)"), "{stdout}");
}

#[test]
fn a_wrong_expectation_exits_1_naming_the_check_and_the_command() {
    let file = scratch(
        "wrong.toml",
        &GOOD.replace("equals = \"blue\"", "equals = \"red\""),
    );
    let output = ctx_sim(&["run", file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL value(c1, colour) at 2.000s (line 37)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("reads \"blue\", expected \"red\""),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "reproduce: ctx-sim run {} --seed 7",
            file.display()
        )),
        "{stdout}"
    );
}

#[test]
fn json_output_is_one_object_per_scenario() {
    let file = scratch("json.toml", GOOD);
    let output = ctx_sim(&[
        "run",
        file.to_str().unwrap(),
        file.to_str().unwrap(),
        "--json",
        "--seed",
        "9",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["scenario"], "cli-good");
        assert_eq!(value["seed"], 9);
        assert_eq!(value["passed"], true);
        assert_eq!(value["trace_hash"].as_str().unwrap().len(), 64);
        assert!(value["contexts"]["c1"]["members"]["bob"]["state_root"].is_string());
        assert!(
            value["checks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["passed"] == true)
        );
    }
}

#[test]
fn each_kind_of_bad_input_exits_2_naming_the_line() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown-op.toml",
            GOOD.replace("op = \"join\"", "op = \"jion\""),
            ":25: ",
        ),
        (
            "unknown-node.toml",
            GOOD.replace(
                "node = \"bob\"\nop = \"join\"",
                "node = \"dave\"\nop = \"join\"",
            ),
            ":24: ",
        ),
        (
            "unknown-context.toml",
            GOOD.replace("context = \"c1\"\nmember", "context = \"c9\"\nmember"),
            ":19: ",
        ),
        (
            "toml-error.toml",
            GOOD.replace("seed = 7", "seed = = 7"),
            ":4: ",
        ),
        (
            "unknown-field.toml",
            GOOD.replace("settle = \"3s\"", "settle = \"3s\"\nsetle = \"3s\""),
            ":7: ",
        ),
        (
            "bad-time.toml",
            GOOD.replace("at = \"1s\"", "at = \"1 parsec\""),
            ":30: ",
        ),
        (
            "missing-app.toml",
            GOOD.replace("app = \"kv\"", "app = \"missing.wat\""),
            ":8: ",
        ),
    ];
    for (name, text, line) in cases {
        let file = scratch(name, &text);
        let output = ctx_sim(&["run", file.to_str().unwrap()]);
        let message = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{name}: {message}");
        assert!(
            message.contains(&format!("{}{line}", file.display())),
            "{name}: {message}"
        );
        assert_eq!(message.lines().count(), 1, "{name}: one message: {message}");
        assert!(!message.contains("panicked"), "{name}: {message}");
        assert!(output.stdout.is_empty(), "{name}: no run");
    }
    let missing = ctx_sim(&["run", "/nonexistent/scenario.toml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/scenario.toml"));
}

#[test]
fn a_bad_file_among_good_ones_stops_everything_before_running() {
    let good = scratch("first-good.toml", GOOD);
    let bad = scratch(
        "second-bad.toml",
        &GOOD.replace("op = \"join\"", "op = \"jion\""),
    );
    let output = ctx_sim(&["run", good.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty(), "nothing ran");
}

#[test]
fn a_trace_replays_and_a_tampered_one_is_refused() {
    let file = scratch("traced.toml", GOOD);
    let trace = file.with_extension("trace");
    let run = ctx_sim(&[
        "run",
        file.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let replay = ctx_sim(&["replay", trace.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(replay.status.code(), Some(0), "{stdout}{}", stderr(&replay));
    assert!(
        stdout.contains(report["trace_hash"].as_str().unwrap()),
        "{stdout}"
    );
    // Flip one byte of the last entry's output digest (an entry frame
    // ends with it): replay must notice.
    let mut bytes = std::fs::read(&trace).unwrap();
    let last_entry_end = frames(&bytes)
        .into_iter()
        .filter(|(_, tag, _)| *tag == 0)
        .map(|(start, _, length)| start + length)
        .next_back()
        .expect("entries");
    bytes[last_entry_end - 5] ^= 0xff;
    let tampered = file.with_extension("tampered");
    std::fs::write(&tampered, bytes).unwrap();
    let replay = ctx_sim(&["replay", tampered.to_str().unwrap()]);
    assert_eq!(replay.status.code(), Some(1), "{}", stderr(&replay));
    assert!(
        stderr(&replay).contains("outputs differ at entry"),
        "{}",
        stderr(&replay)
    );
    let garbage = scratch("garbage.trace", "not a trace");
    let replay = ctx_sim(&["replay", garbage.to_str().unwrap()]);
    assert_eq!(replay.status.code(), Some(2));
    assert!(Path::new(&trace).exists());
}

#[test]
fn fuzz_refuses_bad_arguments_with_exit_2() {
    for args in [
        vec!["fuzz", "--seeds", "4", "--shard", "3/2"],
        vec!["fuzz", "--seeds", "4", "--shard", "0/2"],
        vec!["fuzz", "--seeds", "4", "--shard", "one"],
        vec!["fuzz", "--for", "ten minutes"],
        vec!["fuzz", "--seeds", "4", "--nodes", "1"],
        vec!["fuzz", "--from", "/nonexistent.toml", "--seeds", "1"],
    ] {
        let output = ctx_sim(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).contains("panicked"), "{args:?}");
    }
}

#[test]
fn fuzz_runs_a_shard_of_the_seeds() {
    let out = std::env::temp_dir().join(format!("ctx-sim-cli-fuzz-{}", std::process::id()));
    let output = ctx_sim(&[
        "fuzz",
        "--seeds",
        "6",
        "--shard",
        "2/3",
        "--jobs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", stderr(&output));
    assert!(stdout.starts_with("fuzz: 2 seeds (shard 2/3)"), "{stdout}");
}

#[test]
fn shrink_reduces_a_failing_scenario_and_leaves_a_passing_one() {
    // A wrong expectation fails whatever else happens: shrinking keeps only
    // what the failing check needs.
    let wrong = GOOD.replace("equals = \"blue\"", "equals = \"red\"");
    let file = scratch("to-shrink.toml", &wrong);
    let out = file.with_file_name("shrunk.toml");
    let output = ctx_sim(&[
        "shrink",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}{}", stderr(&output));
    assert!(stdout.contains("shrunk from 5 steps to"), "{stdout}");
    assert!(
        stdout.contains(&format!("replay: ctx-sim run {}", out.display())),
        "{stdout}"
    );
    let replay = ctx_sim(&["run", out.to_str().unwrap()]);
    assert_eq!(replay.status.code(), Some(1));
    let good = scratch("passes.toml", GOOD);
    let output = ctx_sim(&["shrink", good.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("nothing to shrink"));
}

#[test]
fn a_format_1_trace_still_replays_to_the_same_hash_and_the_view_refuses_it_clearly() {
    let file = scratch("format1.toml", GOOD);
    let trace = file.with_extension("trace");
    let run = ctx_sim(&[
        "run",
        file.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let old = file.with_extension("v1.trace");
    std::fs::write(&old, as_format_1(&std::fs::read(&trace).unwrap())).unwrap();
    let replay = ctx_sim(&["replay", old.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&replay.stdout);
    assert_eq!(replay.status.code(), Some(0), "{stdout}{}", stderr(&replay));
    // The hash covers what format 1 covered: the same on both files.
    assert!(
        stdout.contains(report["trace_hash"].as_str().unwrap()),
        "{stdout}"
    );
    let page = file.with_extension("v1.html");
    let view = ctx_sim(&[
        "view",
        old.to_str().unwrap(),
        "--out",
        page.to_str().unwrap(),
    ]);
    assert_eq!(view.status.code(), Some(2));
    let message = stderr(&view);
    assert!(message.contains(old.to_str().unwrap()), "{message}");
    assert!(message.contains("format version 1"), "{message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(!page.exists());
}

#[test]
fn view_and_explain_refuse_missing_truncated_and_foreign_files_with_exit_2() {
    let file = scratch("bad-traces.toml", GOOD);
    let trace = file.with_extension("trace");
    let run = ctx_sim(&[
        "run",
        file.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(0));
    let bytes = std::fs::read(&trace).unwrap();
    let truncated = scratch("truncated.trace", "");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let missing = file.with_extension("missing.trace");
    let foreign = scratch("foreign.trace", "[package]\nname = \"not a trace\"\n");
    let empty = scratch("empty.trace", "");
    let page = file.with_extension("bad.html");
    for (bad, says) in [
        (&truncated, "truncated"),
        (&missing, "cannot read the trace"),
        (&foreign, "not a ctx-sim trace"),
        (&empty, "empty file"),
    ] {
        for args in [
            vec![
                "view",
                bad.to_str().unwrap(),
                "--out",
                page.to_str().unwrap(),
            ],
            vec!["explain", bad.to_str().unwrap(), "--tx", "ab"],
            vec!["replay", bad.to_str().unwrap()],
        ] {
            let output = ctx_sim(&args);
            let message = stderr(&output);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {message}");
            assert!(message.contains(bad.to_str().unwrap()), "{message}");
            assert!(message.contains(says), "{args:?}: {message}");
            assert_eq!(message.lines().count(), 1, "one line: {message}");
            assert!(!message.contains("panicked"), "{message}");
        }
    }
    assert!(!page.exists());
}

#[test]
fn run_writes_a_page_and_explain_finds_a_transaction_by_prefix() {
    let file = scratch("paged.toml", GOOD);
    let page = file.with_extension("html");
    let trace = file.with_extension("paged.trace");
    let run = ctx_sim(&[
        "run",
        file.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<script type=\"application/json\" id=\"ctx-data\">"));
    // Self-contained: nothing is fetched.
    for fetched in ["src=\"http", "href=\"http", "<link ", "import("] {
        assert!(!html.contains(fetched), "the page fetches: {fetched}");
    }
    // The same page from the trace file.
    let again = file.with_extension("again.html");
    let view = ctx_sim(&[
        "view",
        trace.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_eq!(view.status.code(), Some(0), "{}", stderr(&view));
    assert_eq!(std::fs::read_to_string(&again).unwrap(), html);
    // Bob's write, its id read from the page's data.
    let data = html
        .split("id=\"ctx-data\">")
        .nth(1)
        .unwrap()
        .split("</script>")
        .next()
        .unwrap();
    let data: serde_json::Value = serde_json::from_str(data).unwrap();
    let set = data["txs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tx| tx["kind"] == "set")
        .unwrap();
    let id = set["id"].as_str().unwrap();
    let text = ctx_sim(&["explain", trace.to_str().unwrap(), "--tx", &id[..12]]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.status.code(), Some(0), "{}", stderr(&text));
    assert!(stdout.contains(&format!("transaction {id}")), "{stdout}");
    assert!(stdout.contains("authored by bob"), "{stdout}");
    let json = ctx_sim(&[
        "explain",
        trace.to_str().unwrap(),
        "--tx",
        &id[..12],
        "--json",
    ]);
    assert_eq!(json.status.code(), Some(0));
    let explained: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(explained["tx"], id);
    assert_eq!(explained["applied"].as_array().unwrap().len(), 2);
    let unknown = ctx_sim(&[
        "explain",
        trace.to_str().unwrap(),
        "--tx",
        "0000000000000000ff",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("no transaction"),
        "{}",
        stderr(&unknown)
    );
    let two = ctx_sim(&[
        "run",
        file.to_str().unwrap(),
        file.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert_eq!(two.status.code(), Some(2));
    assert!(stderr(&two).contains("--html takes one scenario file"));
}
