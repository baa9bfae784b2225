//! `ctx-node bench`: the load generator. Starts a local cluster of `ctx-node`
//! processes on 127.0.0.1 (this same binary), creates a kv context on the
//! first and brings the others in, then runs closed-loop workers for a fixed
//! time: each makes a `set` call on one node (round robin) and then waits,
//! through the admin API's `wait`, until the transaction is applied on every
//! node. It reports sustained calls per second and the latency from a call
//! to "applied on every member" (p50, p99), plus the latency of the call's
//! acknowledgement (committed on the node that took it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use ctx_node::client::Client;
use ctx_node::identity::bound_addresses;
use serde_json::{Value, json};

/// How long a started node may take to report its addresses.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the cluster may take to admit every node.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest one wait for "applied" may take.
const APPLIED_TIMEOUT_MS: u64 = 30_000;
/// Bounds of the run.
const NODES_MAX: usize = 16;
const CONCURRENCY_MAX: usize = 256;
const DURATION_S_MAX: u64 = 3_600;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Nodes in the local cluster.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Calls in flight at once (closed loop: each worker waits for its call
    /// to be applied everywhere before the next).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Where the cluster's data directories go (default: a fresh temporary
    /// directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// A child node, killed on drop.
struct Spawned {
    child: Child,
    admin: String,
    listen: String,
    member: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(exe: &Path, dir: &Path) -> Result<Spawned> {
    let out = Command::new(exe)
        .args(["init", "--data-dir"])
        .arg(dir)
        .output()
        .context("ctx-node init")?;
    if !out.status.success() {
        bail!("init: {}", String::from_utf8_lossy(&out.stderr));
    }
    let member = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let log = std::fs::File::create(dir.join("node.log")).context("log file")?;
    let child = Command::new(exe)
        .args(["run", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("ctx-node run")?;
    let mut node = Spawned {
        child,
        admin: String::new(),
        listen: String::new(),
        member,
    };
    let started = Instant::now();
    loop {
        if let Some((listen, admin)) = bound_addresses(dir) {
            node.listen = listen;
            node.admin = admin;
            return Ok(node);
        }
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "a node did not start; see {}",
                dir.join("node.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn field(answer: &Value, name: &str) -> Result<String> {
    answer[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("answer without {name:?}: {answer}"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

pub fn run(args: BenchArgs) -> Result<()> {
    if !(2..=NODES_MAX).contains(&args.nodes) {
        bail!("--nodes must be 2..={NODES_MAX}");
    }
    if !(1..=CONCURRENCY_MAX).contains(&args.concurrency) {
        bail!("--concurrency must be 1..={CONCURRENCY_MAX}");
    }
    if !(1..=DURATION_S_MAX).contains(&args.duration_s) {
        bail!("--duration-s must be 1..={DURATION_S_MAX}");
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    let (root, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("ctx-node-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&root).context("bench directory")?;
    let nodes: Vec<Spawned> = (0..args.nodes)
        .map(|i| spawn(&exe, &root.join(format!("n{i}"))))
        .collect::<Result<_>>()?;
    let result = load(&args, &nodes);
    drop(nodes);
    if temporary {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

fn load(args: &BenchArgs, nodes: &[Spawned]) -> Result<()> {
    let app = include_bytes!("../../scenarios/apps/kv.wat");
    let first = Client::new(&nodes[0].admin);
    let context = field(
        &first.post("/v1/contexts", &json!({ "app": hex::encode(app) }))?,
        "context",
    )?;
    for node in &nodes[1..] {
        first.post(
            &format!("/v1/contexts/{context}/invite"),
            &json!({ "member": node.member }),
        )?;
        Client::new(&node.admin).post(
            &format!("/v1/contexts/{context}/join"),
            &json!({ "via": nodes[0].listen }),
        )?;
    }
    let started = Instant::now();
    for node in nodes {
        let client = Client::new(&node.admin);
        loop {
            let status = client.get("/v1/status")?;
            let held = &status["contexts"][&context];
            if held["phase"] == "member"
                && held["members"].as_array().map(Vec::len) == Some(nodes.len())
            {
                break;
            }
            if started.elapsed() > JOIN_TIMEOUT {
                bail!("the cluster did not form in time");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!(
        "bench: {} nodes, context {}, {} workers, {} s",
        nodes.len(),
        &context[..8],
        args.concurrency,
        args.duration_s
    );

    let admins: Arc<Vec<String>> = Arc::new(nodes.iter().map(|n| n.admin.clone()).collect());
    let samples = Arc::new(Mutex::new((Vec::new(), Vec::new())));
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    let begun = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            let admins = Arc::clone(&admins);
            let samples = Arc::clone(&samples);
            let context = context.clone();
            std::thread::spawn(move || -> Result<()> {
                let clients: Vec<Client> = admins.iter().map(|a| Client::new(a)).collect();
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let target = (worker + seq as usize) % clients.len();
                    let key = format!("w{worker}-{}", seq % 64);
                    seq += 1;
                    let t0 = Instant::now();
                    let answer = clients[target].post(
                        &format!("/v1/contexts/{context}/call"),
                        &json!({ "method": "set", "args": [key, format!("u64:{seq}")] }),
                    )?;
                    let acked = t0.elapsed();
                    let tx = field(&answer, "tx")?;
                    for client in &clients {
                        let applied = client.post(
                            &format!("/v1/contexts/{context}/wait"),
                            &json!({ "tx": tx, "timeout_ms": APPLIED_TIMEOUT_MS }),
                        )?;
                        if applied["applied"] != true {
                            bail!(
                                "a call was not applied everywhere within {APPLIED_TIMEOUT_MS} ms"
                            );
                        }
                    }
                    let everywhere = t0.elapsed();
                    let mut guard = samples.lock().map_err(|_| anyhow!("a worker panicked"))?;
                    guard.0.push(everywhere);
                    guard.1.push(acked);
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| anyhow!("a worker panicked"))??;
    }
    let elapsed = begun.elapsed();
    let (mut everywhere, mut acked) = samples
        .lock()
        .map_err(|_| anyhow!("a worker panicked"))?
        .clone();
    everywhere.sort();
    acked.sort();
    let calls = everywhere.len();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    say!(
        "{calls} calls in {:.1} s: {:.0} calls/s sustained ({} nodes, {} workers, {cores} cores)",
        elapsed.as_secs_f64(),
        calls as f64 / elapsed.as_secs_f64(),
        nodes.len(),
        args.concurrency
    );
    say!(
        "call -> applied on every member: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&everywhere, 0.50)),
        ms(percentile(&everywhere, 0.99)),
        ms(everywhere.last().copied().unwrap_or_default())
    );
    say!(
        "call -> acknowledged (committed on its node): p50 {:.1} ms, p99 {:.1} ms",
        ms(percentile(&acked, 0.50)),
        ms(percentile(&acked, 0.99))
    );
    Ok(())
}
