//! The space-time diagram in a real browser: the page of the bundled
//! failing scenario (`scenarios/failing/partition-never-healed.toml`) opened
//! in headless Chromium by `sim/tests/browser/check.js` (playwright-core).
//! The page must draw as many lanes and arrows as the trace's view holds,
//! fetch nothing, show a clicked message's details, draw fewer lanes and
//! exactly the other arrows when a node is filtered out, and highlight the
//! failing check; a screenshot is saved (`CTX_SIM_SCREENSHOT=PATH` copies
//! it there: that is how `docs/diagram.png` is made).
//!
//! Needs `node`, `/usr/bin/chromium` (or `CHROMIUM`) and `npm ci` run in
//! `sim/tests/browser/` (`.ci/run` does all three); without them the test
//! prints `SKIPPED: <reason>` and is reported as ignored.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use ctx_sim::run::{RunOptions, run};
use ctx_sim::scenario::Scenario;
use ctx_sim::view::{View, html};
use libtest_mimic::{Arguments, Failed, Trial};

const TEST_NAME: &str = "the_failing_scenario_draws_its_trace_in_chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Why the browser test cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !chromium().exists() {
        return Some(format!(
            "{} is not installed (apt-get install chromium, or set CHROMIUM)",
            chromium().display()
        ));
    }
    match Command::new("node").arg("--version").output() {
        Ok(output) if output.status.success() => {}
        _ => return Some("node is not installed".into()),
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Some(format!(
            "playwright-core is not installed (run npm ci in {})",
            browser_dir().display()
        ));
    }
    None
}

fn main() -> ExitCode {
    let arguments = Arguments::from_args();
    let mut trial = Trial::test(TEST_NAME, draws_in_chromium);
    if !arguments.list
        && let Some(reason) = missing()
    {
        // Printed before the harness starts, so it shows uncaptured.
        eprintln!("SKIPPED: {TEST_NAME}: {reason}");
        trial = trial.with_ignored_flag(true);
    }
    libtest_mimic::run(&arguments, vec![trial]).exit_code()
}

fn check(condition: bool, what: impl FnOnce() -> String) -> Result<(), Failed> {
    if condition {
        Ok(())
    } else {
        Err(what().into())
    }
}

fn draws_in_chromium() -> Result<(), Failed> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/failing/partition-never-healed.toml");
    let scenario = Scenario::from_file(&file)?;
    let options = RunOptions {
        keep_trace: true,
        ..RunOptions::default()
    };
    let report = run(&scenario, &options)?;
    let view = View::from_bytes(report.trace.as_deref().ok_or("no trace kept")?)?;
    let dir = std::env::temp_dir().join(format!("ctx-sim-browser-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let page = dir.join("diagram.html");
    std::fs::write(&page, html(&view))?;

    // What the page must draw, from the view (the trace), not the page.
    let node = "bob";
    let bob = view
        .lanes
        .iter()
        .position(|l| l.name == node)
        .ok_or("no bob")? as u32;
    let arrows_without_node: usize = view
        .messages
        .iter()
        .filter(|m| m.from != bob && m.to != bob)
        .map(|m| m.copies.len())
        .sum();
    // The delivered message with the longest delay: an arrow easy to hit.
    let message = view
        .messages
        .iter()
        .filter(|m| m.copies.iter().any(|c| c.fate == "delivered"))
        .max_by_key(|m| (m.copies[0].at_ms - m.sent_ms, std::cmp::Reverse(m.id)))
        .ok_or("no delivered message")?;
    let expect = serde_json::json!({ "node": node, "message": message.id });
    let expect_path = dir.join("expect.json");
    std::fs::write(&expect_path, expect.to_string())?;
    let screenshot = dir.join("diagram.png");

    let output = Command::new("node")
        .arg("check.js")
        .arg(&page)
        .arg(&expect_path)
        .arg(&screenshot)
        .current_dir(browser_dir())
        .env("CHROMIUM", chromium())
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    check(output.status.success(), || {
        format!("check.js failed: {stderr}")
    })?;
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let number = |value: &serde_json::Value| value.as_u64().unwrap_or(u64::MAX) as usize;

    check(seen["errors"].as_array().is_some_and(Vec::is_empty), || {
        format!("page errors: {}", seen["errors"])
    })?;
    check(
        seen["requests"].as_array().is_some_and(Vec::is_empty),
        || format!("the page fetched: {}", seen["requests"]),
    )?;
    // Lanes and arrows drawn match the trace's counts.
    let drawn = &seen["drawn"];
    check(number(&drawn["lanes"]) == view.lanes.len(), || {
        format!(
            "drew {} lanes, the trace has {}",
            drawn["lanes"],
            view.lanes.len()
        )
    })?;
    check(number(&drawn["arrows"]) == view.counts.arrows, || {
        format!(
            "drew {} arrows, the trace has {} copies of messages",
            drawn["arrows"], view.counts.arrows
        )
    })?;
    check(number(&drawn["lost"]) == view.counts.lost, || {
        format!(
            "drew {} lost, the trace has {}",
            drawn["lost"], view.counts.lost
        )
    })?;
    check(number(&drawn["checks"]) == view.checks.len(), || {
        format!("drew {} checks of {}", drawn["checks"], view.checks.len())
    })?;
    check(
        seen["stats"]["arrows"].as_str() == Some(view.counts.arrows.to_string().as_str()),
        || format!("data-arrows {}", seen["stats"]["arrows"]),
    )?;
    // The failing check is highlighted.
    check(number(&seen["failedChecks"]) == 1, || {
        format!("{} failing checks listed", seen["failedChecks"])
    })?;
    check(
        seen["verdict"]
            .as_str()
            .is_some_and(|v| v.contains("FAILED: value(c1, colour)")),
        || format!("verdict {}", seen["verdict"]),
    )?;
    // The clicked message's details: the message under the pointer, with
    // its kind and decoded body.
    let details = seen["details"].as_str().unwrap_or_default();
    check(seen["detailsType"] == "message", || {
        format!("clicked, and the details show {details:?}")
    })?;
    let clicked: u64 = details
        .strip_prefix("message #")
        .and_then(|rest| rest.split(':').next())
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("no message in the details: {details:?}"))?;
    let shown = view
        .messages
        .iter()
        .find(|m| m.id == clicked)
        .ok_or("unknown message")?;
    check(
        details.contains(&shown.kind) && details.contains(&shown.summary),
        || format!("details of #{clicked} lack its kind or body: {details:?}"),
    )?;
    // A node filtered out: one lane fewer, exactly the other arrows.
    let without = &seen["drawnWithoutNode"];
    check(number(&without["lanes"]) == view.lanes.len() - 1, || {
        format!("without {node}: {} lanes", without["lanes"])
    })?;
    check(number(&without["arrows"]) == arrows_without_node, || {
        format!(
            "without {node}: drew {} arrows, expected {arrows_without_node}",
            without["arrows"]
        )
    })?;
    check(seen["drawnAgain"] == seen["drawn"], || {
        "filtering back in drew something else".into()
    })?;
    let size = std::fs::metadata(&screenshot)?.len();
    check(size > 10_000, || format!("a screenshot of {size} bytes"))?;
    if let Some(copy) = std::env::var_os("CTX_SIM_SCREENSHOT") {
        std::fs::copy(&screenshot, &copy)?;
    }
    Ok(())
}
