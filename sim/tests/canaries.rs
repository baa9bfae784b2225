//! The fuzzer has teeth: with a known bug planted in the engine, `ctx-sim
//! fuzz --seeds 200` finds it (exit status 1), writes a shrunk scenario of at
//! most 10 steps and its diagram beside it (`.html`, naming the failed
//! check), and `ctx-sim run` on that file fails too.
//!
//! Each canary builds its own `ctx-sim` (profile `canary`: optimized, no
//! debug info) into `target/canaries`, so the user's own binaries are never
//! replaced by a buggy one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use ctx_sim::scenario::Scenario;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("sim/ is in the workspace")
        .to_path_buf()
}

/// Canary builds share one target directory (dependencies compile once),
/// so they take turns.
static BUILDS: Mutex<()> = Mutex::new(());

/// Builds `ctx-sim` with `feature` of ctx-core and returns a copy of the
/// binary named after the feature.
fn build_with(feature: &str) -> PathBuf {
    let _turn = BUILDS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let target = workspace().join("target").join("canaries");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace())
        .args([
            "build",
            "--profile",
            "canary",
            "--locked",
            "-p",
            "ctx-sim",
            "--bin",
            "ctx-sim",
        ])
        .arg("--features")
        .arg(format!("ctx-core/{feature}"))
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building ctx-sim with {feature}");
    let copy = target.join(format!("ctx-sim-{feature}"));
    std::fs::copy(target.join("canary").join("ctx-sim"), &copy).expect("copy the canary binary");
    copy
}

fn canary_is_found(feature: &str) {
    let binary = build_with(feature);
    let out = std::env::temp_dir().join(format!("ctx-canary-{feature}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let fuzz = Command::new(&binary)
        .args(["fuzz", "--seeds", "200", "--out"])
        .arg(&out)
        .output()
        .expect("ctx-sim runs");
    let stdout = String::from_utf8_lossy(&fuzz.stdout);
    assert_eq!(
        fuzz.status.code(),
        Some(1),
        "{feature}: the fuzzer finds the bug\n{stdout}"
    );
    let shrunk_line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("replay: ctx-sim run "))
        .unwrap_or_else(|| panic!("{feature}: a replay command\n{stdout}"));
    let file = PathBuf::from(
        shrunk_line
            .trim_start()
            .trim_start_matches("replay: ctx-sim run "),
    );
    let scenario = Scenario::from_file(&file).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        scenario.steps.len() <= 10,
        "{feature}: shrunk to {} steps\n{}",
        scenario.steps.len(),
        scenario.to_toml()
    );
    // The diagram beside the shrunk file, announced, naming the failure.
    let page = file.with_extension("html");
    assert!(
        stdout.contains(&format!("diagram: {}", page.display())),
        "{feature}: the diagram is announced\n{stdout}"
    );
    let html = std::fs::read_to_string(&page)
        .unwrap_or_else(|e| panic!("{feature}: {}: {e}", page.display()));
    let data = html
        .split("id=\"ctx-data\">")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .expect("the page's data");
    let view: serde_json::Value = serde_json::from_str(data).expect("the data is JSON");
    assert!(
        view["counts"]["failed_checks"].as_u64() >= Some(1),
        "{feature}: the diagram shows the failed check"
    );
    let replay = Command::new(&binary)
        .arg("run")
        .arg(&file)
        .output()
        .expect("ctx-sim runs");
    assert_eq!(
        replay.status.code(),
        Some(1),
        "{feature}: the shrunk scenario fails on its own\n{}",
        String::from_utf8_lossy(&replay.stdout)
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn canary_unordered_apply_is_found() {
    canary_is_found("canary-unordered-apply");
}

#[test]
fn canary_fetch_off_by_one_is_found() {
    canary_is_found("canary-fetch-off-by-one");
}
