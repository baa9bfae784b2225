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

/// `fuzz --json` for one shard of a sweep of 9 seeds from 500, the shard
/// given by flag or (for the last) by a Kubernetes Indexed Job's variables.
fn shard_summary(dir: &Path, shard: u64) -> PathBuf {
    let out = dir.join(format!("shard-{shard}"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_ctx-sim"));
    command.args([
        "fuzz",
        "--seeds",
        "9",
        "--first-seed",
        "500",
        "--jobs",
        "1",
        "--json",
    ]);
    command.args(["--out", out.to_str().unwrap()]);
    if shard == 3 {
        command
            .env("JOB_COMPLETION_INDEX", "2")
            .env("CTX_SIM_SHARDS", "3");
    } else {
        command.args(["--shard", &format!("{shard}/3")]);
    }
    let output = command.output().expect("ctx-sim runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let path = dir.join(format!("shard-{shard}.json"));
    std::fs::write(&path, &output.stdout).expect("write the summary");
    path
}

#[test]
fn three_shards_fold_into_one_report() {
    let dir = std::env::temp_dir().join(format!("ctx-sim-cli-fold-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<PathBuf> = (1..=3).map(|shard| shard_summary(&dir, shard)).collect();
    let mut covered = Vec::new();
    for (index, path) in paths.iter().enumerate() {
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(summary["shard"], index as u64 + 1, "{summary}");
        assert_eq!(summary["shards"], 3);
        assert_eq!(summary["seeds_run"], 3, "{summary}");
        // Each shard's seeds are its own slice of 500..509.
        for slow in summary["slowest"].as_array().unwrap() {
            let seed = slow["seed"].as_u64().unwrap();
            assert!((500..509).contains(&seed) && (seed - 500) % 3 == index as u64);
            covered.push(seed);
        }
    }
    covered.sort_unstable();
    assert_eq!(covered, (500..509).collect::<Vec<_>>(), "every seed once");

    let args: Vec<&str> = std::iter::once("fold")
        .chain(paths.iter().map(|p| p.to_str().unwrap()))
        .collect();
    let output = ctx_sim(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", stderr(&output));
    assert!(
        stdout.starts_with("fold: seeds 500..509, 3 of 3 shards: 9 seeds run in"),
        "{stdout}"
    );
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    let mut json_args = args.clone();
    json_args.push("--json");
    let folded: serde_json::Value =
        serde_json::from_slice(&ctx_sim(&json_args).stdout).expect("JSON");
    assert_eq!(folded["seeds_run"], 9);
    assert_eq!(folded["missing"], serde_json::json!([]));
    assert_eq!(folded["slowest"].as_array().unwrap().len(), 5);

    // Two shards only: the report says which is missing.
    let output = ctx_sim(&args[..3]);
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("missing shards: 3/3"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    // The same shard twice, another sweep, and a file that is no summary are
    // refused, naming the file.
    let twice = ctx_sim(&["fold", args[1], args[1]]);
    assert_eq!(twice.status.code(), Some(2));
    assert!(
        stderr(&twice).contains("shard 1/3 again"),
        "{}",
        stderr(&twice)
    );
    let other = dir.join("other.json");
    let text = std::fs::read_to_string(&paths[1]).unwrap();
    std::fs::write(
        &other,
        text.replace("\"first_seed\":500", "\"first_seed\":7"),
    )
    .unwrap();
    let mixed = ctx_sim(&["fold", args[1], other.to_str().unwrap()]);
    assert_eq!(mixed.status.code(), Some(2));
    assert!(
        stderr(&mixed).contains("belongs to another sweep"),
        "{}",
        stderr(&mixed)
    );
    let junk = scratch("junk.json", "not json");
    let refused = ctx_sim(&["fold", junk.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        stderr(&refused).contains("not a ctx-sim fuzz summary"),
        "{}",
        stderr(&refused)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_kubernetes_job_gives_every_pod_its_shard() {
    let job = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/fuzz-job.yaml"
    ))
    .expect("deploy/fuzz-job.yaml");
    let field = |name: &str| -> String {
        job.lines()
            .find_map(|line| line.trim().strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in the job"))
            .trim()
            .trim_matches('"')
            .to_owned()
    };
    assert_eq!(field("completionMode:"), "Indexed");
    let completions = field("completions:");
    assert_eq!(field("parallelism:"), completions);
    // The value line after CTX_SIM_SHARDS: every pod knows the shard count.
    let shards = job
        .lines()
        .skip_while(|line| !line.contains("name: CTX_SIM_SHARDS"))
        .nth(1)
        .and_then(|line| line.trim().strip_prefix("value:"))
        .map(|value| value.trim().trim_matches('"').to_owned());
    assert_eq!(shards.as_deref(), Some(completions.as_str()));
    assert!(job.contains("ctx-sim fuzz --json"), "pods write a summary");
    assert!(
        job.contains("ctx-sim fold"),
        "the job says how to fold them"
    );
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
