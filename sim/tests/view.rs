//! The view's data model, built from traces of bundled scenarios and
//! pinned in insta snapshots (the data the page draws, not its pixels),
//! and `explain` over it (text snapshot and JSON).

use std::path::{Path, PathBuf};

use ctx_sim::explain::{self, Explained};
use ctx_sim::run::{Report, RunOptions, run};
use ctx_sim::scenario::Scenario;
use ctx_sim::view::{FindError, View};

fn bundled(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Runs a bundled scenario keeping its trace in memory; its report and view.
fn view_of(path: &str) -> (Report, View) {
    let scenario = Scenario::from_file(&bundled(path)).unwrap();
    let options = RunOptions {
        keep_trace: true,
        ..RunOptions::default()
    };
    let report = run(&scenario, &options).unwrap();
    let view = View::from_bytes(report.trace.as_ref().expect("kept")).unwrap();
    (report, view)
}

#[test]
fn the_quickstart_view() {
    let (report, view) = view_of("scenarios/quickstart.toml");
    assert!(report.passed);
    // The view reads the same run the report describes.
    assert_eq!(view.trace_hash, report.trace_hash);
    assert_eq!(view.counts.messages as u64, report.stats.messages_sent);
    assert_eq!(view.counts.checks, report.checks.len());
    insta::assert_snapshot!(
        "quickstart-view",
        serde_json::to_string_pretty(&view).unwrap()
    );
}

#[test]
fn the_failing_scenario_view_names_the_failure_and_every_loss() {
    let (report, view) = view_of("scenarios/failing/partition-never-healed.toml");
    assert!(!report.passed);
    assert_eq!(view.trace_hash, report.trace_hash);
    // Every message the world counted lost is a lost copy in the view.
    assert_eq!(view.counts.lost as u64, report.stats.messages_lost);
    let failed: Vec<_> = view.checks.iter().filter(|c| !c.passed).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].name, "value(c1, colour)");
    let carol = view.lanes.iter().position(|l| l.name == "carol").unwrap() as u32;
    assert_eq!(failed[0].nodes, vec![carol]);
    assert_eq!(view.partitions.len(), 1, "one partition, never healed");
    assert_eq!(view.partitions[0].to_ms, view.end_ms);
    assert_eq!(view.down.len(), 1, "bob down from his crash to his restart");
    // The summary of the model: counts, marks, partitions, checks.
    let marks: Vec<String> = view
        .marks
        .iter()
        .filter(|m| m.kind != "step")
        .map(|m| {
            format!(
                "{} {} {}: {}",
                m.at_ms,
                m.node.map_or("world", |n| view.lane(n)),
                m.kind,
                m.detail
            )
        })
        .collect();
    insta::assert_snapshot!(
        "partition-never-healed-view",
        format!(
            "counts: {}\nkinds: {}\npartitions: {}\ndown: {}\nchecks: {}\nmarks:\n{}\n",
            serde_json::to_string(&view.counts).unwrap(),
            view.kinds.join(", "),
            serde_json::to_string(&view.partitions).unwrap(),
            serde_json::to_string(&view.down).unwrap(),
            serde_json::to_string_pretty(&view.checks).unwrap(),
            marks.join("\n")
        )
    );
}

/// The failing scenario's write that never reaches carol.
fn the_lost_write(view: &View) -> String {
    let alice = view.lanes.iter().position(|l| l.name == "alice").unwrap() as u32;
    view.txs
        .iter()
        .find(|tx| tx.author == Some(alice) && tx.kind == "set" && tx.authored_ms == Some(3000))
        .expect("alice's write at 3 s")
        .id
        .clone()
}

#[test]
fn explain_follows_one_transaction_to_every_member() {
    let (_, view) = view_of("scenarios/failing/partition-never-healed.toml");
    let id = the_lost_write(&view);
    let explained: Explained = explain::explain(&view, &id[..10]).unwrap();
    assert_eq!(explained.tx, id);
    assert_eq!(explained.author.as_deref(), Some("alice"));
    let appliers: Vec<&str> = explained.applied.iter().map(|a| a.node.as_str()).collect();
    assert!(appliers.contains(&"alice") && appliers.contains(&"bob"));
    assert_eq!(explained.never_applied, vec!["carol".to_owned()]);
    assert!(
        explained
            .losses
            .iter()
            .any(|(_, fate, _)| fate == "partitioned"),
        "the push to carol is lost to the partition: {:?}",
        explained.losses
    );
    insta::assert_snapshot!("explain-the-lost-write", explain::text(&explained));
    // The JSON is the same story.
    let json: serde_json::Value = serde_json::to_value(&explained).unwrap();
    assert_eq!(json["tx"], id.as_str());
    assert_eq!(json["never_applied"][0], "carol");
    assert_eq!(
        json["applied"].as_array().unwrap().len(),
        explained.applied.len()
    );
}

#[test]
fn explain_refuses_unknown_ambiguous_and_non_hex_ids() {
    let (_, view) = view_of("scenarios/failing/partition-never-healed.toml");
    assert!(matches!(
        explain::explain(&view, "xyz"),
        Err(FindError::NotHex(_))
    ));
    assert!(matches!(
        explain::explain(&view, ""),
        Err(FindError::NotHex(_))
    ));
    let unknown = "0123456789abcdef0123";
    assert!(view.txs.iter().all(|tx| !tx.id.starts_with(unknown)));
    assert!(matches!(
        explain::explain(&view, unknown),
        Err(FindError::Unknown(_))
    ));
    // Some first hex digit is shared by two transactions of 27.
    let shared = "0123456789abcdef"
        .chars()
        .find(|c| view.txs.iter().filter(|tx| tx.id.starts_with(*c)).count() >= 2)
        .unwrap();
    let error = explain::explain(&view, &shared.to_string()).unwrap_err();
    assert!(matches!(error, FindError::Ambiguous { .. }), "{error}");
    assert!(error.to_string().contains("give more digits"), "{error}");
}

#[test]
fn re_executions_are_counted_where_a_late_transaction_sorts_first() {
    // Under reordering, late transactions sort before applied ones: the
    // view counts each member's re-executions, and they add up to what
    // the engines reported (`reordered` marks).
    let (_, view) = view_of("scenarios/reorder-heavy.toml");
    let reported: u64 = view
        .marks
        .iter()
        .filter(|m| m.kind == "reordered")
        .map(|m| {
            m.detail
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    let counted: u64 = view
        .txs
        .iter()
        .flat_map(|tx| &tx.applied)
        .map(|a| u64::from(a.reexecuted))
        .sum();
    assert!(reported > 0, "reorder-heavy re-executes");
    assert_eq!(counted, reported);
}

#[test]
fn the_page_embeds_any_text_without_ending_its_script() {
    let (_, mut view) = view_of("scenarios/quickstart.toml");
    let hostile = "</script><!-- <script>alert(1)</script>";
    view.checks[0].detail = hostile.to_owned();
    let page = ctx_sim::view::html(&view);
    let data = page
        .split("id=\"ctx-data\">")
        .nth(1)
        .and_then(|rest| rest.split("</script>").next())
        .unwrap();
    assert!(
        !data.contains('<'),
        "no `<` inside the data's script element"
    );
    let parsed: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(parsed["checks"][0]["detail"], hostile);
    // Script and style are inline; nothing is fetched.
    assert!(page.contains("window.ctxView"));
    assert!(!page.contains("/*{{SCRIPT}}*/") && !page.contains("{{DATA}}"));
    for fetched in ["src=", "href=", "<link", "@import", "fetch("] {
        assert!(!page.contains(fetched), "the page fetches: {fetched}");
    }
}

#[test]
fn pauses_and_clock_changes_are_drawn_on_their_lanes() {
    let (report, view) = view_of("scenarios/long-pause.toml");
    assert!(report.passed);
    let paused: Vec<(u32, u64, u64)> = view
        .paused
        .iter()
        .map(|span| (span.node.unwrap(), span.from_ms, span.to_ms))
        .collect();
    // Bob frozen from 2 s to 10 s, Dave from 16 s for 10 s (killed at 18 s
    // in the middle: the down span shows that part).
    assert_eq!(paused, [(1, 2_000, 10_000), (3, 16_000, 26_000)]);
    assert_eq!(view.down.len(), 1, "dave down from 18 s to 20 s");
    let pauses = view.marks.iter().filter(|m| m.kind == "pause").count();
    assert_eq!(pauses, 2);
    let (report, view) = view_of("scenarios/clock-drift.toml");
    assert!(report.passed);
    let clocks: Vec<(Option<u32>, u64, &str)> = view
        .marks
        .iter()
        .filter(|m| m.kind == "clock")
        .map(|m| (m.node, m.at_ms, m.detail.as_str()))
        .collect();
    assert_eq!(clocks.len(), 4, "{clocks:?}");
    assert_eq!(
        clocks[0],
        (Some(1), 0, "its clock runs at 0.5× true time from now on")
    );
    assert!(view.paused.is_empty());
}
