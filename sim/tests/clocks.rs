//! Clock faults end to end: a drifting clock paces its node's timers, a
//! paused node takes no input until it wakes and then takes what waited,
//! and traces of both replay to the same outputs (the replay reads each
//! node's clock from the trace's `clock` entries).

use std::path::{Path, PathBuf};

use ctx_sim::run::{Report, RunOptions, run};
use ctx_sim::scenario::Scenario;
use ctx_sim::trace::{Entry, Frame, Input, Loss, TraceReader, WorldEvent, replay};

fn bundled(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Runs a bundled scenario writing its trace; the report, the entries and
/// the world frames, and the replay's trace hash.
fn traced(path: &str) -> (Report, Vec<Entry>, Vec<WorldEvent>, String) {
    let scenario = Scenario::from_file(&bundled(path)).unwrap();
    let file = std::env::temp_dir().join(format!(
        "ctx-clocks-{}-{}.trace",
        std::process::id(),
        scenario.name
    ));
    let options = RunOptions {
        trace: Some(file.clone()),
        ..RunOptions::default()
    };
    let report = run(&scenario, &options).unwrap();
    let mut reader = TraceReader::open(&file).unwrap();
    let (mut entries, mut world) = (Vec::new(), Vec::new());
    while let Some(frame) = reader.next_frame().unwrap() {
        match frame {
            Frame::Entry(entry) => entries.push(entry),
            Frame::World(event) => world.push(event),
        }
    }
    let replayed = replay(&file).unwrap_or_else(|e| panic!("{path} does not replay: {e}"));
    std::fs::remove_file(&file).ok();
    (report, entries, world, replayed.trace_hash)
}

/// The index of a node of the two scenarios, which declare the same four.
fn node(name: &str) -> u32 {
    ["alice", "bob", "carol", "dave"]
        .iter()
        .position(|n| *n == name)
        .unwrap() as u32
}

/// Timer inputs a node took in `[from_ms, to_ms)` of true time.
fn timeouts(entries: &[Entry], node: u32, from_ms: u64, to_ms: u64) -> usize {
    entries
        .iter()
        .filter(|e| e.node == node && matches!(e.input, Input::Timeout))
        .filter(|e| (from_ms..to_ms).contains(&e.at.as_ms()))
        .count()
}

#[test]
fn a_drifting_clock_paces_its_nodes_timers_and_the_run_replays() {
    let (report, entries, _, replayed) = traced("scenarios/clock-drift.toml");
    assert!(report.passed, "{:?}", report.failures().collect::<Vec<_>>());
    assert_eq!(
        replayed, report.trace_hash,
        "a replay reads the same clocks"
    );
    // After the workload: only the periodic timers (sync and the like) run.
    let (from, to) = (20_000, 50_000);
    let alice = timeouts(&entries, node("alice"), from, to) as f64;
    let bob = timeouts(&entries, node("bob"), from, to) as f64;
    let carol = timeouts(&entries, node("carol"), from, to) as f64;
    let dave = timeouts(&entries, node("dave"), from, to) as f64;
    assert!(alice >= 20.0, "alice's timers fired {alice} times");
    // Half speed, twice, one and a half times: within the timers' jitter.
    let ratio = |n: f64| n / alice;
    assert!(
        (0.35..=0.65).contains(&ratio(bob)),
        "bob {bob} vs alice {alice}"
    );
    assert!(
        (1.6..=2.4).contains(&ratio(carol)),
        "carol {carol} vs alice {alice}"
    );
    assert!(
        (1.2..=1.8).contains(&ratio(dave)),
        "dave {dave} vs alice {alice}"
    );
}

#[test]
fn a_paused_node_takes_no_input_until_it_wakes_and_then_takes_what_waited() {
    let (report, entries, world, replayed) = traced("scenarios/long-pause.toml");
    assert!(report.passed, "{:?}", report.failures().collect::<Vec<_>>());
    assert_eq!(replayed, report.trace_hash);
    let bob = node("bob");
    // Frozen from 2 s to 10 s: the pause is his last input before it.
    let frozen: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.node == bob && (2_000..10_000).contains(&e.at.as_ms()))
        .collect();
    assert_eq!(frozen.len(), 1, "{frozen:?}");
    assert_eq!(frozen[0].input, Input::Pause { ms: 8_000 });
    // What was sent to him meanwhile was held, not lost, and delivered
    // when he woke, in the order it arrived (its delay, then when sent).
    let mut sent_to_bob: Vec<(u64, u64)> = world
        .iter()
        .filter_map(|event| match event {
            WorldEvent::Sent {
                at,
                message,
                to,
                deliver_at: Some(due),
                ..
            } if *to == bob && at.as_ms() >= 2_000 && due.as_ms() < 10_000 => {
                Some((due.as_ms(), *message))
            }
            _ => None,
        })
        .collect();
    sent_to_bob.sort();
    let sent_to_bob: Vec<u64> = sent_to_bob.into_iter().map(|(_, m)| m).collect();
    assert!(sent_to_bob.len() >= 10, "{} held", sent_to_bob.len());
    let delivered: Vec<u64> = world
        .iter()
        .filter_map(|event| match event {
            WorldEvent::Delivered {
                at,
                message,
                copy: 0,
            } if sent_to_bob.contains(message) => {
                assert_eq!(at.as_ms(), 10_000, "message {message} held until he woke");
                Some(*message)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        delivered, sent_to_bob,
        "all of them, in the order they arrived"
    );
    // His timers, long due, fire when he wakes; his own call was taken then.
    let woke: Vec<&Input> = entries
        .iter()
        .filter(|e| e.node == bob && e.at.as_ms() == 10_000)
        .map(|e| &e.input)
        .collect();
    assert!(woke.iter().any(|i| matches!(i, Input::Timeout)), "{woke:?}");
    assert!(
        woke.iter()
            .any(|i| matches!(i, Input::Call { method, .. } if method == "set")),
        "the call made to him at 4 s is taken at 10 s"
    );
    // Dave was killed at 18 s while frozen (from 16 s): what waited for
    // him was addressed to the process that died, and is lost as stale
    // when his pause would have ended, though he is up again by then.
    let dave = node("dave");
    let held_for_dave: Vec<u64> = world
        .iter()
        .filter_map(|event| match event {
            WorldEvent::Sent {
                at,
                message,
                to,
                deliver_at: Some(due),
                ..
            } if *to == dave && at.as_ms() >= 16_000 && due.as_ms() < 18_000 => Some(*message),
            _ => None,
        })
        .collect();
    assert!(!held_for_dave.is_empty());
    for message in &held_for_dave {
        let fate = world.iter().find_map(|event| match event {
            WorldEvent::Lost {
                at,
                message: m,
                copy: 0,
                loss,
            } if m == message => Some((at.as_ms(), *loss)),
            WorldEvent::Delivered {
                message: m,
                copy: 0,
                ..
            } if m == message => {
                panic!("message {message} reached the killed process")
            }
            _ => None,
        });
        assert_eq!(fate, Some((26_000, Loss::Stale)), "message {message}");
    }
}
