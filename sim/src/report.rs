//! Reports: the readable summary a person reads after a run, and the JSON
//! object of SCENARIOS.md.

use std::fmt::Write;

use crate::run::Report;

/// The readable summary of one run.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let verdict = if report.passed { "PASSED" } else { "FAILED" };
    let simulated = report.sim_time_ms as f64 / 1000.0;
    let _ = writeln!(out, "{} (seed {}): {verdict}", report.scenario, report.seed);
    let _ = writeln!(
        out,
        "  {simulated:.3} s simulated in {:.3} s wall, {} events, {} messages ({} lost), trace {}",
        report.wall_seconds,
        report.events,
        report.stats.messages_sent,
        report.stats.messages_lost,
        &report.trace_hash[..16]
    );
    for (name, context) in &report.contexts {
        let _ = writeln!(
            out,
            "  context {name}: {} members hold it",
            context.members.len()
        );
        for (member, view) in &context.members {
            let phase = if view.phase == "member" {
                String::new()
            } else {
                format!(" ({})", view.phase)
            };
            let held_back = view.held_back_by.as_ref().map_or(String::new(), |held| {
                let since = held.since_ms as f64 / 1000.0;
                format!(
                    "  held back by {} ({}) since {since:.3}s",
                    held.member, held.reason
                )
            });
            let _ = writeln!(
                out,
                "    {member:<12} applied {:>6}  stable {:>6}  root {}  heads {}  sees {} members{phase}{held_back}",
                view.applied,
                view.stable,
                &view.state_root[..8],
                view.heads.len(),
                view.members.len(),
            );
        }
    }
    let _ = writeln!(out, "  checks:");
    for check in &report.checks {
        let mark = if check.passed { "ok  " } else { "FAIL" };
        let at = check.at_ms as f64 / 1000.0;
        let line = if check.line > 0 {
            format!(" (line {})", check.line)
        } else {
            String::new()
        };
        let _ = write!(out, "    {mark} {} at {at:.3}s{line}", check.name);
        if !check.detail.is_empty() {
            let _ = write!(out, ": {}", check.detail);
        }
        out.push('\n');
    }
    if !report.notes.is_empty() {
        let _ = writeln!(out, "  notes ({}):", report.notes.len());
        for note in report.notes.iter().take(10) {
            let _ = writeln!(out, "    {note}");
        }
        if report.notes.len() > 10 {
            let _ = writeln!(out, "    ... and {} more", report.notes.len() - 10);
        }
    }
    if !report.passed {
        let _ = writeln!(out, "  reproduce: {}", report.reproduce());
    }
    out
}

/// The `--json` object.
pub fn json(report: &Report) -> String {
    serde_json::to_string(report).expect("reports serialize")
}
