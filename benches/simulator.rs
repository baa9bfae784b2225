//! The simulator beside turmoil, on the same shape of work, in one run:
//! 10 nodes, 1 000 calls over 60 simulated seconds, each broadcast to the
//! other nine.
//!
//! - `ctx-sim`: `scenarios/ten-nodes-thousand-calls.toml`, the whole engine
//!   (kv app, ed25519 signatures, sync every second) plus every check.
//! - turmoil 0.7 with its default settings (1 ms ticks): ten hosts that send
//!   a 100-byte UDP datagram to the other nine every 600 ms, with no
//!   application and no signatures at all: the floor of a tick-driven
//!   simulator for this shape.
//!
//! Criterion reports wall time per run; the simulated seconds per wall
//! second and the ratio are printed after, from the same measurements.
//! Then fuzz seeds per second: the default generator, stress hooks on, one
//! thread (`ctx-sim fuzz` runs one seed per job, so multiply by `--jobs`).
//!
//! `cargo bench --bench simulator`

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ctx_sim::fuzz::{FuzzOptions, scenario_for};
use ctx_sim::run::{RunOptions, run};
use ctx_sim::scenario::Scenario;

const SCENARIO: &str = "scenarios/ten-nodes-thousand-calls.toml";
const NODES: usize = 10;
const CALLS_PER_NODE: u64 = 100;
const CALL_INTERVAL: Duration = Duration::from_millis(600);
const PORT: u16 = 9000;

/// The scenario's shape on turmoil. Returns the datagrams received.
fn turmoil_shape() -> u64 {
    let received = Arc::new(AtomicU64::new(0));
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(90))
        .build();
    let names: Vec<String> = (0..NODES).map(|i| format!("n{i}")).collect();
    for (index, name) in names.iter().enumerate() {
        let peers: Vec<String> = names
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != index)
            .map(|(_, peer)| peer.clone())
            .collect();
        let received = received.clone();
        sim.client(name.as_str(), async move {
            let socket =
                turmoil::net::UdpSocket::bind((IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT)).await?;
            let socket = Arc::new(socket);
            let listener = socket.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 256];
                while listener.recv_from(&mut buffer).await.is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            });
            let payload = [7u8; 100];
            for _ in 0..CALLS_PER_NODE {
                tokio::time::sleep(CALL_INTERVAL).await;
                for peer in &peers {
                    let address = (turmoil::lookup(peer.as_str()), PORT);
                    socket.send_to(&payload, address).await?;
                }
            }
            // Let the last datagrams land.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(())
        });
    }
    sim.run().expect("the turmoil shape runs");
    received.load(Ordering::Relaxed)
}

fn mean_wall(runs: u32, mut run_once: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..runs {
        run_once();
    }
    started.elapsed().as_secs_f64() / f64::from(runs)
}

fn simulator(c: &mut Criterion) {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(SCENARIO);
    let scenario = Scenario::from_file(&file).expect("the bench scenario parses");
    let probe = run(&scenario, &RunOptions::default()).expect("runs");
    assert!(probe.passed, "the bench scenario passes");
    let sent = NODES as u64 * CALLS_PER_NODE * (NODES as u64 - 1);
    assert_eq!(turmoil_shape(), sent, "turmoil delivers every datagram");

    let mut group = c.benchmark_group("simulator");
    group.sample_size(10);
    group.throughput(Throughput::Elements(probe.events));
    group.bench_function("ctx-sim/ten-nodes-thousand-calls", |b| {
        b.iter(|| run(&scenario, &RunOptions::default()).expect("runs"))
    });
    group.throughput(Throughput::Elements(sent));
    group.bench_function("turmoil/ten-nodes-thousand-datagram-broadcasts", |b| {
        b.iter(turmoil_shape)
    });
    group.finish();

    let ours_wall = mean_wall(10, || {
        run(&scenario, &RunOptions::default()).expect("runs");
    });
    let turmoil_wall = mean_wall(3, || {
        turmoil_shape();
    });
    let ours = probe.sim_time_ms as f64 / 1000.0 / ours_wall;
    let theirs = 60.1 / turmoil_wall;
    println!(
        "simulator: ctx-sim {ours:.0} simulated s per wall s ({:.0} events/s); \
         turmoil {theirs:.0} simulated s per wall s; ratio {:.1}x",
        probe.events as f64 / ours_wall,
        ours / theirs
    );
}

fn fuzz_seeds(c: &mut Criterion) {
    let options = FuzzOptions {
        first_seed: 0,
        seeds: None,
        duration: None,
        from: None,
        nodes_max: 5,
        app: None,
        every_knob: false,
        jobs: 1,
        shard: (1, 1),
        out: std::env::temp_dir(),
    };
    let mut group = c.benchmark_group("fuzz");
    group.sample_size(10);
    const SEEDS: u64 = 20;
    group.throughput(Throughput::Elements(SEEDS));
    group.bench_function("seeds", |b| {
        b.iter(|| {
            for seed in 0..SEEDS {
                let report = run(&scenario_for(seed, &options), &RunOptions::default())
                    .expect("generated scenarios are valid");
                assert!(report.passed, "seed {seed} passes");
            }
        })
    });
    group.finish();
}

criterion_group!(benches, simulator, fuzz_seeds);
criterion_main!(benches);
