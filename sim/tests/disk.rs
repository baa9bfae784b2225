//! Disk faults end to end: a crash loses what its node had not synced and
//! tears the first lost record; the restarted engine skips the torn record,
//! says so, and fetches what it lost from the others; the trace replays to
//! the same outputs (the `crash-loss` entries say what each crash lost).

use std::path::Path;

use ctx_sim::run::{RunOptions, run};
use ctx_sim::scenario::Scenario;
use ctx_sim::trace::{Frame, Input, TraceReader, replay};

#[test]
fn torn_writes_are_skipped_recovered_and_replayed() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/torn-write-at-crash.toml");
    let scenario = Scenario::from_file(&path).unwrap();
    let file = std::env::temp_dir().join(format!("ctx-disk-{}.trace", std::process::id()));
    let options = RunOptions {
        trace: Some(file.clone()),
        ..RunOptions::default()
    };
    let report = run(&scenario, &options).unwrap();
    assert!(report.passed, "{report:#?}");
    let torn = report
        .notes
        .iter()
        .filter(|n| n.contains("restarted past its torn last record"))
        .count();
    let lost = report
        .notes
        .iter()
        .filter(|n| n.contains("crash lost"))
        .count();
    assert_eq!((torn, lost), (2, 2), "{:?}", report.notes);
    let mut reader = TraceReader::open(&file).unwrap();
    let mut losses = Vec::new();
    while let Some(frame) = reader.next_frame().unwrap() {
        if let Frame::Entry(entry) = frame
            && let Input::CrashLoss { loss } = entry.input
        {
            losses.push(loss);
        }
    }
    assert_eq!(losses.len(), 2, "one per crash");
    assert!(losses.iter().all(|loss| loss.torn.is_some()), "tear = 1.0");
    let replayed = replay(&file).unwrap();
    assert_eq!(replayed.trace_hash, report.trace_hash);
    std::fs::remove_file(&file).ok();
}
