//! `ctx-sim fuzz --app`: the fuzzer drives an SDK app by its ABI and checks
//! its `#[invariant]` views on every member.
//!
//! Builds `apps/mint-bug` (a ledger whose transfer to oneself mints money)
//! and `apps/ledger` (the same without the bug) to wasm32-unknown-unknown
//! the way `apps/conformance` does, then runs the `ctx-sim` binary:
//! - on mint-bug, a sweep finds `invariant(c1, conserved)` failing,
//!   shrinks it to a few steps, and the shrunk file replays failing with
//!   `ctx-sim run`;
//! - on ledger, a bounded sweep (4 seeds) passes.
//!
//! Without the target, both are reported ignored with the reason (never
//! passed). Bad `--app` files are refused before anything runs (exit 2).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ctx_apps_conformance::{BuildError, build_packages, module_file};
use libtest_mimic::{Arguments, Failed, Trial};

const PACKAGES: [&str; 2] = ["ctx-app-mint-bug", "ctx-app-ledger"];

fn ctx_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ctx-sim"))
        .args(args)
        .output()
        .expect("ctx-sim runs")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ctx-app-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn modules() -> Result<PathBuf, Failed> {
    build_packages(&PACKAGES).map_err(|e| Failed::from(e.to_string()))
}

fn finds_and_shrinks_the_planted_mint() -> Result<(), Failed> {
    let app = modules()?.join(module_file("ctx-app-mint-bug"));
    let out = scratch("mint");
    let output = ctx_sim(&[
        "fuzz",
        "--app",
        app.to_str().expect("a UTF-8 path"),
        "--seeds",
        "2",
        "--nodes",
        "3",
        "--jobs",
        "2",
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ]);
    let shown = text(&output);
    if output.status.code() != Some(1) {
        return Err(format!("the fuzzer found nothing:\n{shown}").into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let first = stdout
        .lines()
        .find(|line| line.contains("first failure"))
        .unwrap_or_default();
    if !(first.contains("invariant(c")
        && first.contains(", conserved)")
        && first.contains("was opened"))
    {
        return Err(format!("the failure is not the invariant's:\n{shown}").into());
    }
    let shrunk: PathBuf = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("replay: ctx-sim run "))
        .map(PathBuf::from)
        .ok_or_else(|| format!("no shrunk file:\n{shown}"))?;
    let file = std::fs::read_to_string(&shrunk).map_err(|e| format!("{e}"))?;
    let steps = file.matches("[[step]]").count();
    if steps > 10 {
        return Err(format!("shrunk to {steps} steps, more than 10:\n{file}").into());
    }
    let replay = ctx_sim(&["run", shrunk.to_str().expect("a UTF-8 path")]);
    let replayed = text(&replay);
    let fails_invariant = replayed
        .lines()
        .any(|line| line.contains("FAIL invariant(c") && line.contains(", conserved)"));
    if replay.status.code() != Some(1) || !fails_invariant {
        return Err(format!("the shrunk file does not fail the invariant:\n{replayed}").into());
    }
    eprintln!("shrunk to {steps} steps: {}", shrunk.display());
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}

fn the_ledger_without_the_bug_passes() -> Result<(), Failed> {
    let app = modules()?.join(module_file("ctx-app-ledger"));
    let out = scratch("ledger");
    let output = ctx_sim(&[
        "fuzz",
        "--app",
        app.to_str().expect("a UTF-8 path"),
        "--seeds",
        "4",
        "--nodes",
        "3",
        "--jobs",
        "2",
        "--out",
        out.to_str().expect("a UTF-8 path"),
    ]);
    let _ = std::fs::remove_dir_all(&out);
    if output.status.code() == Some(0) {
        Ok(())
    } else {
        Err(format!("the correct ledger failed:\n{}", text(&output)).into())
    }
}

/// A missing file, a file that is not WebAssembly and a module without an
/// ABI are refused, naming the file (exit 2): no target needed.
fn bad_app_files_are_refused() -> Result<(), Failed> {
    let dir = scratch("bad");
    let not_wasm = dir.join("notes.wasm");
    std::fs::write(&not_wasm, "hello").expect("writes");
    let no_abi = dir.join("bare.wasm");
    std::fs::write(&no_abi, b"\0asm\x01\0\0\0").expect("writes");
    let missing = dir.join("missing.wasm");
    let cases: [(&Path, &str); 3] = [
        (&missing, "cannot read it"),
        (&not_wasm, "not a WebAssembly module"),
        (&no_abi, "has no `ctx_abi` section"),
    ];
    for (file, expected) in cases {
        let path = file.to_str().expect("a UTF-8 path");
        let output = ctx_sim(&["fuzz", "--app", path, "--seeds", "1"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() != Some(2) || !stderr.contains(expected) || !stderr.contains(path) {
            return Err(format!(
                "{path}: expected exit 2 and {expected:?}:\n{}",
                text(&output)
            )
            .into());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() {
    let arguments = Arguments::from_args();
    let mut needs_target = vec![
        Trial::test(
            "finds_and_shrinks_the_planted_mint",
            finds_and_shrinks_the_planted_mint,
        ),
        Trial::test(
            "the_ledger_without_the_bug_passes",
            the_ledger_without_the_bug_passes,
        ),
    ];
    if !arguments.list
        && let Err(missing @ BuildError::TargetMissing(_)) =
            ctx_apps_conformance::target_installed()
    {
        // Printed before the harness starts, so it shows uncaptured.
        eprintln!("SKIPPED: sim/tests/app_fuzz.rs: {missing}");
        needs_target = needs_target
            .into_iter()
            .map(|trial| trial.with_ignored_flag(true))
            .collect();
    }
    let mut trials = vec![Trial::test(
        "bad_app_files_are_refused",
        bad_app_files_are_refused,
    )];
    trials.extend(needs_target);
    libtest_mimic::run(&arguments, trials).exit();
}
