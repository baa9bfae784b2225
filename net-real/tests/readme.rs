//! The README's deploy walkthrough, run as written: the "Try it on one
//! machine" block is pasted into bash (with `HOME` in a fresh directory and
//! this build's `ctx-node` first on `PATH`), so the steps a new user copies
//! are the steps that are tested. It uses the README's fixed loopback ports
//! (7700-7721).

use std::path::Path;
use std::process::Command;

const README: &str = include_str!("../../README.md");
const MARKER: &str = "**Try it on one machine.**";

/// The first ```sh block after the marker.
fn walkthrough() -> &'static str {
    let after = &README[README.find(MARKER).expect("the README has the walkthrough")..];
    let start = after.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let len = after[start..].find("```").expect("the block ends");
    &after[start..start + len]
}

#[test]
fn readme_one_machine_walkthrough_works_as_written() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ctx-node"))
        .parent()
        .expect("bin dir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let home = std::env::temp_dir().join(format!("ctx-node-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&home);
    std::fs::create_dir_all(&home).expect("home");
    let script = format!(
        "set -euo pipefail\n\
         trap 'status=$?; kill $(jobs -p) 2>/dev/null || true; wait; exit $status' EXIT\n\
         {}\n\
         kill %1 %2 %3\n\
         wait\n",
        walkthrough()
    );
    let path = std::env::var("PATH").unwrap_or_default();
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&repo)
        .env("HOME", &home)
        .env("PATH", format!("{}:{path}", bin_dir.display()))
        .env_remove("CTX_NODE_ADMIN")
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let logs: String = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let log = std::fs::read_to_string(home.join(format!("ctx-{n}.log")));
            format!("--- ctx-{n}.log\n{}\n", log.unwrap_or_default())
        })
        .collect();
    let report = format!(
        "{}\nscript:\n{script}\nstdout:\n{stdout}\nstderr:\n{}\n{logs}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the walkthrough failed\n{report}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"blue"), "C reads blue\n{report}");
    assert!(
        lines.contains(&"applied"),
        "C waited for B's write\n{report}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("joined through"))
            .count(),
        2,
        "B and C joined\n{report}"
    );
    assert!(
        stdout.contains("members (3)"),
        "status shows three members\n{report}"
    );
    let _ = std::fs::remove_dir_all(&home);
}
