//! Every bundled scenario (`scenarios/*.toml`, `scenarios/regressions/*.toml`)
//! runs, passes, runs again with the same trace hash (determinism is tested,
//! not assumed), and has its outcome pinned in an insta snapshot
//! (`tests/snapshots/`): review a changed snapshot like code. The scenarios
//! of `scenarios/failing/` fail on purpose (the diagram's example): each
//! fails exactly the checks its file's `fails` comment names.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use ctx_sim::run::{Report, RunOptions, run};
use ctx_sim::scenario::Scenario;

fn scenario_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files = Vec::new();
    for dir in [root.clone(), root.join("regressions")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// What a scenario's outcome is: its checks and every member's final view.
/// (Not the trace hash or event counts: those change with any protocol
/// detail; the determinism test pins them within a build.)
fn outcome(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "scenario: {} (seed {})", report.scenario, report.seed);
    let _ = writeln!(out, "passed: {}", report.passed);
    for (name, context) in &report.contexts {
        let _ = writeln!(out, "context {name}:");
        for (member, view) in &context.members {
            let _ = writeln!(
                out,
                "  {member}: applied {}, root {}",
                view.applied,
                &view.state_root[..16]
            );
        }
    }
    for check in &report.checks {
        let mark = if check.passed { "ok" } else { "FAIL" };
        let _ = writeln!(
            out,
            "{mark} {} at {}ms {}",
            check.name, check.at_ms, check.detail
        );
    }
    out
}

#[test]
fn every_bundled_scenario_passes_deterministically() {
    let files = scenario_files();
    assert!(
        files.len() >= 15,
        "the bundle has at least 15 scenarios, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let scenario = Scenario::from_file(file).unwrap_or_else(|e| panic!("{e}"));
        let first = run(&scenario, &RunOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        let second = run(&scenario, &RunOptions::default()).unwrap();
        assert_eq!(
            first.trace_hash,
            second.trace_hash,
            "{}: same file, same seed, different trace",
            file.display()
        );
        if !first.passed {
            failures.push(format!(
                "{}\n{}",
                file.display(),
                ctx_sim::report::text(&first)
            ));
        }
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        insta::assert_snapshot!(name, outcome(&first));
    }
    assert!(
        failures.is_empty(),
        "failing scenarios:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_failing_scenario_fails_the_check_it_names() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/failing");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "scenarios/failing/ holds the diagram's example"
    );
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // `# fails: NAME; NAME` names the checks that must fail, and only them.
        let expected: Vec<&str> = text
            .lines()
            .find_map(|line| line.strip_prefix("# fails: "))
            .unwrap_or_else(|| panic!("{}: no `# fails:` line", file.display()))
            .split("; ")
            .collect();
        let scenario = Scenario::from_file(file).unwrap_or_else(|e| panic!("{e}"));
        let report = run(&scenario, &RunOptions::default()).unwrap();
        let failed: Vec<&str> = report.failures().map(|c| c.name.as_str()).collect();
        assert_eq!(failed, expected, "{}", file.display());
    }
}

#[test]
fn another_seed_gives_another_trace() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/quickstart.toml");
    let scenario = Scenario::from_file(&file).unwrap();
    let a = run(&scenario, &RunOptions::default()).unwrap();
    let b = run(
        &scenario,
        &RunOptions {
            seed: Some(scenario.seed + 1),
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert!(a.passed && b.passed);
    assert_ne!(a.trace_hash, b.trace_hash);
}
