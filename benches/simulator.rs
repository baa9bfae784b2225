//! How fast the simulator runs a named scenario: events per second
//! (criterion's throughput), and simulated seconds per wall second (printed
//! after the measurement, from the same runs' mean).
//!
//! `cargo bench --bench simulator`

use std::path::Path;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ctx_sim::run::{RunOptions, run};
use ctx_sim::scenario::Scenario;

const SCENARIO: &str = "scenarios/ten-nodes-thousand-calls.toml";

fn simulator(c: &mut Criterion) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(SCENARIO);
    let scenario = Scenario::from_file(&file).expect("the bench scenario parses");
    let probe = run(&scenario, &RunOptions::default()).expect("runs");
    assert!(probe.passed, "the bench scenario passes");
    let mut group = c.benchmark_group("simulator");
    group.sample_size(20);
    group.throughput(Throughput::Elements(probe.events));
    group.bench_function("ten-nodes-thousand-calls/events", |b| {
        b.iter(|| run(&scenario, &RunOptions::default()).expect("runs"))
    });
    group.finish();

    // Simulated seconds per wall second over a few more runs.
    let runs = 10;
    let started = Instant::now();
    for _ in 0..runs {
        run(&scenario, &RunOptions::default()).expect("runs");
    }
    let wall = started.elapsed().as_secs_f64() / runs as f64;
    let simulated = probe.sim_time_ms as f64 / 1000.0;
    println!(
        "simulator/ten-nodes-thousand-calls: {simulated:.0} simulated s in {:.1} ms wall: {:.0} simulated s per wall s, {:.0} events per s",
        wall * 1000.0,
        simulated / wall,
        probe.events as f64 / wall
    );
}

criterion_group!(benches, simulator);
criterion_main!(benches);
