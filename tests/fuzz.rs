//! Fuzzing inside `cargo test`: a proptest strategy over generated scenarios
//! (the fuzzer's own generator, fed by a list of choices proptest can shrink:
//! fewer and smaller choices make smaller scenarios), with every check as the
//! property; and a bounded sweep of seeds through `ctx-sim fuzz`'s driver.
//! Failures persist in proptest's regression file beside this one.
//!
//! `PROPTEST_CASES` and `CTX_FUZZ_SEEDS` raise the bounds for a longer run.

use ctx_sim::fuzz::{FuzzOptions, FuzzSummary, fuzz};
use ctx_sim::generate::{GenOptions, ListChoices, generate};
use ctx_sim::run::{RunOptions, run};
use proptest::prelude::*;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: env_or("PROPTEST_CASES", 16) as u32,
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_scenarios_pass_every_check(choices in prop::collection::vec(any::<u64>(), 0..400)) {
        let mut choices = ListChoices::new(choices);
        let (mut scenario, _swarm) = generate(0, &mut choices, &GenOptions::default());
        scenario.stress = true;
        let report = run(&scenario, &RunOptions::default()).expect("generated scenarios are valid");
        prop_assert!(
            report.passed,
            "{}\n{}",
            ctx_sim::report::text(&report),
            scenario.to_toml()
        );
    }
}

/// Sweeps seeds `0..seeds` (two jobs) and asserts that none fails, naming
/// the failing seeds and where their scenarios were saved.
fn sweep_finds_nothing(name: &str, seeds: u64, every_knob: bool) -> FuzzSummary {
    let out = std::env::temp_dir().join(format!("ctx-fuzz-{name}-{}", std::process::id()));
    let options = FuzzOptions {
        first_seed: 0,
        seeds: Some(seeds),
        duration: None,
        from: None,
        nodes_max: 12,
        app: None,
        every_knob,
        jobs: 2,
        shard: (1, 1),
        out: out.clone(),
    };
    let summary = fuzz(&options, &|_, _| {}).expect("runs");
    let seeds: Vec<u64> = summary.failures.iter().map(|f| f.seed).collect();
    assert!(
        summary.failures.is_empty(),
        "failing seeds {seeds:?} ({name}); first: {:?}; scenarios in {}",
        summary.failures.first(),
        out.display()
    );
    summary
}

#[test]
fn a_bounded_sweep_with_every_knob_on_finds_nothing() {
    sweep_finds_nothing("every-knob", env_or("CTX_FUZZ_EVERY_KNOB_SEEDS", 16), true);
}

#[test]
fn a_bounded_seed_sweep_finds_nothing() {
    let summary = sweep_finds_nothing("swarm", env_or("CTX_FUZZ_SEEDS", 40), false);
    // The generator reaches re-ordering across membership changes (issue
    // 17): about 60 % of seeds do, so a sweep of 40 where none does means
    // the generator or the count broke.
    assert!(
        summary.membership_rollback_seeds > 0,
        "none of {} seeds rolled back across a membership change",
        summary.seeds_run
    );
}
