//! The run's statistics mean what they say: `membership_rollbacks` counts
//! members rolling back an applied invite, join or leave, and nothing else.

use std::path::{Path, PathBuf};

use ctx_sim::run::{RunOptions, run};
use ctx_sim::scenario::Scenario;

fn bundled(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn a_join_during_a_partition_is_rolled_back_when_the_partition_heals() {
    let scenario = Scenario::from_file(&bundled("scenarios/join-during-partition.toml"))
        .expect("a bundled scenario");
    let report = run(&scenario, &RunOptions::default()).expect("runs");
    assert!(report.passed);
    assert!(
        report.membership_rollbacks > 0,
        "writes on the other side sort before the join on some member"
    );
}

#[test]
fn writes_re_ordered_long_after_the_joins_are_not_membership_rollbacks() {
    // Both sides of a partition write; the heal re-orders the writes of one
    // side behind the other's on every member (`Event::Reordered`), but the
    // joins, seconds before the partition, sort before all of them.
    let text = r#"
name = "writes-only"
nodes = ["a", "b"]

[[step]]
at = "0ms"
op = "create"
node = "a"
context = "c"
app = "kv"

[[step]]
at = "100ms"
op = "invite"
node = "a"
context = "c"
member = "b"

[[step]]
at = "300ms"
op = "join"
node = "b"
context = "c"
via = "a"

[[step]]
at = "5s"
op = "partition"
groups = [["a"], ["b"]]

[[step]]
at = "5100ms"
op = "workload"
context = "c"
calls = 40
over = "4s"
methods = [{ method = "set", args = ["$key", "$value"] }]

[[step]]
at = "10s"
op = "heal"
"#;
    let scenario = Scenario::parse(text, Path::new("<inline>")).expect("valid");
    let options = RunOptions {
        verbose: true,
        ..RunOptions::default()
    };
    let report = run(&scenario, &options).expect("runs");
    assert!(report.passed);
    assert!(
        report.log.iter().any(|line| line.contains("Reordered")),
        "the heal re-orders writes"
    );
    assert_eq!(report.membership_rollbacks, 0);
}
