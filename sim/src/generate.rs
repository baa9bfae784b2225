//! Random scenarios for the fuzzer: [`generate`] makes one from nothing,
//! [`mutate`] adds random faults and calls around an existing one.
//!
//! Owns the choice of what a fuzzed run does and when. Every random choice
//! comes from a [`Choices`], so a scenario is a pure function of its inputs:
//! [`SeededChoices`] for a seed sweep, [`ListChoices`] for proptest (choice 0
//! is always the simplest option, so shorter lists and smaller numbers give
//! smaller scenarios, and shrinking the list shrinks the scenario). Each
//! scenario first draws a [`Swarm`], the fault kinds it switches on, so rare
//! combinations occur across seeds (swarm testing).
//!
//! Invariants of what [`generate`] returns:
//! - it is valid: `Scenario::parse(&s.to_toml(), &s.path) == Ok(s)`;
//! - its steps are emitted in time order, each acting on a model of who is a
//!   member of which context, who is up and who can reach whom, so that most
//!   steps are meaningful (a step the engine refuses is only a note in the
//!   report, so an occasional mismatch between the model and the run is
//!   harmless);
//! - it passes on a correct engine: after at most [`CHAOS_MS_MAX`] of faults
//!   it restarts every crashed node (except at most one that stays dead on
//!   purpose), heals every partition and cleans the network, and only then,
//!   [`QUIET_MS`] later, checks convergence; `value` checks are written only
//!   for a key whose final value is certain (one only the creator writes,
//!   while the model says it is up and has not left);
//! - it stays small: at most about [`STEPS_TARGET`] steps and [`CALLS_MAX`]
//!   calls.
//!
//! Clock drift and pauses ([`Swarm::clock_drift`], [`Swarm::pauses`]) are
//! drawn after everything else and only add `clock` and `pause` steps to
//! the finished scenario, so every seed keeps the steps it had before they
//! existed. A pause ends before the final heal and stays
//! [`PAUSE_CLEAR_MS`] clear of any step that crashes, restarts, joins,
//! leaves or re-clocks its node; calls to a paused node wait until it wakes
//! (the simulator holds them), so the model needs no other change.
//!
//! With [`GenOptions::app`] (`ctx-sim fuzz --app PATH`) every context runs
//! that module instead of a bundled app, and its calls and workloads call
//! the module's *call* methods (its ABI's), with arguments of each
//! parameter's type drawn from small pools (a few names, small integers
//! and each type's extremes) so that calls collide on the same entries;
//! the default generator (no app) makes exactly the scenarios it made
//! before the option existed, draw for draw.
//!
//! [`mutate`] keeps every step of its base, in order and at its time, and
//! adds faults and calls only where they cannot change what the base checks:
//! never within [`QUIET_MS`] before one of the base's `expect` steps, never
//! while the base has its own partition, never across one of the base's
//! network changes, never crashing a node a base step names around that
//! time, and never writing a key the base checks (nor checking one the
//! base writes). It adds no joins or leaves, so the base's member lists
//! hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ctx_abi::{Abi, Kind as MethodKind, Method, Type};
use thiserror::Error;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::byzantine::{Behaviour, Byzantine};
use crate::run::DRAW_KEYS;
use crate::scenario::{
    AppRef, Arg, Check, Draw, Expected, Faults, IntType, MethodTemplate, NODES_MAX, Network, Op,
    Scenario, Step,
};

/// Latest time of a generated fault or call (before the final heal).
pub const CHAOS_MS_MAX: u64 = 60_000;
/// Clean time between the final heal and the final checks, and before each
/// of a mutated base's checks.
pub const QUIET_MS: u64 = 15_000;
/// Most calls (explicit and by workloads) in one generated scenario.
pub const CALLS_MAX: u32 = 400;
/// Steps after which no further random action is added.
pub const STEPS_TARGET: usize = 64;
/// Most random actions in one scenario.
const ACTIONS_MAX: u64 = 45;
/// How long the model waits after a join before it counts on the joiner.
const READY_MS: u64 = 2_000;
/// How long the model waits after a leave before it invites the node again.
const LEFT_MS: u64 = 3_000;
/// How long a node the model asked to serve a join must stay up and a member.
const VIA_MS: u64 = 10_000;
/// Distinct keys of explicit calls (`k0`..): the same names `$key` draws, so
/// explicit calls and workloads touch the same entries.
const KEYS: u64 = 8;
/// The key only a context's creator writes, whose final value is checked.
const OWN_KEY: &str = "own";
/// Most `spin` calls in one scenario (each burns a call's whole fuel).
const SPINS_MAX: u32 = 2;
/// Shortest long partition ([`Swarm::long_partitions`]); the longest is
/// [`LONG_PARTITION_MS`] plus [`LONG_PARTITION_EXTRA_MS`].
pub const LONG_PARTITION_MS: u64 = 20_000;
const LONG_PARTITION_EXTRA_MS: u64 = 25_000;
/// Most calls of one side's workload in a long partition.
const LONG_PARTITION_CALLS_MAX: u32 = 80;

/// Where the generator's random choices come from.
pub trait Choices {
    /// A number in `0..bound` (`bound >= 1`).
    fn below(&mut self, bound: u64) -> u64;
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// Choices from a seed.
pub struct SeededChoices(ChaCha8Rng);

impl SeededChoices {
    pub fn new(seed: u64) -> Self {
        SeededChoices(ChaCha8Rng::seed_from_u64(seed))
    }
}

impl Choices for SeededChoices {
    fn below(&mut self, bound: u64) -> u64 {
        let bound = bound.max(1);
        // Multiply-shift: uniform enough for a fuzzer, no rejection loop.
        ((u128::from(self.0.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Choices replayed from a list (for proptest): each call takes the next
/// number modulo `bound`; when the list runs out, every choice is 0. Shorter
/// lists and smaller numbers give smaller, simpler scenarios.
pub struct ListChoices {
    values: Vec<u64>,
    next: usize,
}

impl ListChoices {
    pub fn new(values: Vec<u64>) -> Self {
        ListChoices { values, next: 0 }
    }
}

impl Choices for ListChoices {
    fn below(&mut self, bound: u64) -> u64 {
        let value = self.values.get(self.next).copied().unwrap_or(0);
        self.next = self.next.saturating_add(1);
        value % bound.max(1)
    }
}

/// Limits a user can set on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOptions {
    /// Most nodes in a generated scenario (taken as at least 2 and at most
    /// [`NODES_MAX`]).
    pub nodes_max: usize,
    /// The app every context runs and every call calls (`fuzz --app`);
    /// `None`: the bundled apps.
    pub app: Option<FuzzedApp>,
    /// Every fault knob on (`fuzz --every-knob`): the seed still draws how
    /// strong each is, and where and when its faults happen.
    pub every_knob: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            nodes_max: 12,
            app: None,
            every_knob: false,
        }
    }
}

/// Names an argument of type `key` or `string` of a fuzzed app's explicit
/// calls takes (`k0`..): few, so that calls meet on the same entries, and
/// among the ones `$key` draws in workloads.
const FUZZ_NAMES: u64 = 4;
/// Integers of a fuzzed app's calls are mostly `1..=FUZZ_INT_MAX`.
const FUZZ_INT_MAX: u64 = 100;

/// A module to fuzz (`ctx-sim fuzz --app PATH`): where it is and the call
/// methods its ABI declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuzzedApp {
    /// The module, as an absolute path, so that a scenario saved anywhere
    /// names it.
    pub path: PathBuf,
    /// Its call methods (views change nothing, so they are not called).
    pub calls: Vec<Method>,
}

/// Why a file cannot be fuzzed.
#[derive(Debug, Error)]
pub enum FuzzedAppError {
    #[error("--app {path}: cannot read it: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("--app {path}: not a WebAssembly module (a .wasm file starts with \\0asm)")]
    NotWasm { path: String },
    #[error(
        "--app {path}: the module has no `ctx_abi` section, so its methods and their types are unknown (build it with ctx-sdk's #[app])"
    )]
    NoAbi { path: String },
    #[error("--app {path}: {error}")]
    BadAbi {
        path: String,
        error: ctx_abi::AbiError,
    },
    #[error("--app {path}: its ABI declares no call method, so nothing can change its state")]
    NoCalls { path: String },
}

impl FuzzedApp {
    /// Reads a module and its ABI.
    pub fn from_file(path: &Path) -> Result<FuzzedApp, FuzzedAppError> {
        let shown = path.display().to_string();
        let wasm = std::fs::read(path).map_err(|source| FuzzedAppError::Read {
            path: shown.clone(),
            source,
        })?;
        if !wasm.starts_with(b"\0asm") {
            return Err(FuzzedAppError::NotWasm { path: shown });
        }
        let abi: Abi = Abi::from_module(&wasm)
            .map_err(|error| FuzzedAppError::BadAbi {
                path: shown.clone(),
                error,
            })?
            .ok_or_else(|| FuzzedAppError::NoAbi {
                path: shown.clone(),
            })?;
        let calls: Vec<Method> = abi
            .methods
            .into_iter()
            .filter(|method| method.kind == MethodKind::Call)
            .collect();
        if calls.is_empty() {
            return Err(FuzzedAppError::NoCalls { path: shown });
        }
        let path = std::path::absolute(path).map_err(|source| FuzzedAppError::Read {
            path: shown.clone(),
            source,
        })?;
        Ok(FuzzedApp { path, calls })
    }
}

/// Which fault kinds a seed switches on and how strong they are (swarm
/// testing: each seed draws its own mix, so rare combinations occur).
#[derive(Debug, Clone, PartialEq)]
pub struct Swarm {
    /// Highest message loss probability the network takes.
    pub loss: Option<f64>,
    /// Highest duplication probability the network takes.
    pub duplication: Option<f64>,
    /// Latency ranges up to `[_, 500]` ms instead of at most `[1, 60]`.
    pub wide_latency: bool,
    pub partitions: bool,
    /// Crashes, each followed by a restart.
    pub crashes: bool,
    /// One crashed node may stay down to the end (only with `crashes`).
    pub dead_node: bool,
    pub leaves: bool,
    /// A node that left is invited again and joins again (only with
    /// `leaves`).
    pub rejoins: bool,
    /// Nodes join contexts during the run, not only at the start.
    pub late_joins: bool,
    /// `network` steps change the conditions for a while.
    pub network_changes: bool,
    /// A call or two of `spin`, which runs out of fuel.
    pub spins: bool,
    /// One partition lasts [`LONG_PARTITION_MS`] or more, with a workload
    /// on each side (only with `partitions`): deep repair after it, and
    /// checkpoints cut on both histories once it heals.
    pub long_partitions: bool,
    /// Nodes' clocks run fast or slow (`clock` steps: some from the start,
    /// some changing during the run).
    pub clock_drift: bool,
    /// Nodes freeze for a while (`pause` steps), waking before the final
    /// heal.
    pub pauses: bool,
    /// A crash may lose the records a node had not synced, and tear the
    /// first lost one (the `[disk]` table; only with `crashes`).
    pub disk_faults: bool,
    /// One node lies on the wire, every behaviour (the `[byzantine]`
    /// table, `crate::byzantine`).
    pub byzantine: bool,
    /// Nodes' disks are full for a while (`disk_full` steps): they store
    /// nothing, refuse their calls and answer only requests.
    pub disk_full: bool,
}

impl Swarm {
    /// `self` with every knob on: a loss or duplication the seed did not
    /// draw is taken at a moderate strength.
    fn every_knob(self) -> Swarm {
        Swarm {
            loss: self.loss.or(Some(0.1)),
            duplication: self.duplication.or(Some(0.05)),
            wide_latency: true,
            partitions: true,
            crashes: true,
            dead_node: true,
            leaves: true,
            rejoins: true,
            late_joins: true,
            network_changes: true,
            spins: true,
            long_partitions: true,
            clock_drift: true,
            pauses: true,
            disk_faults: true,
            byzantine: true,
            disk_full: true,
        }
    }

    fn draw(c: &mut dyn Choices) -> Swarm {
        let loss = sometimes(c, 400).then(|| percent(1 + c.below(40)));
        let duplication = sometimes(c, 300).then(|| percent(1 + c.below(30)));
        let wide_latency = sometimes(c, 350);
        let partitions = sometimes(c, 450);
        let crashes = sometimes(c, 400);
        let dead_node = crashes && sometimes(c, 250);
        let leaves = sometimes(c, 300);
        let rejoins = leaves && sometimes(c, 600);
        let late_joins = sometimes(c, 450);
        let network_changes = sometimes(c, 400);
        let spins = sometimes(c, 150);
        // Drawn last, so that every other draw stays where it was.
        let long_partitions = partitions && sometimes(c, 350);
        Swarm {
            loss,
            duplication,
            wide_latency,
            partitions,
            crashes,
            dead_node,
            leaves,
            rejoins,
            late_joins,
            network_changes,
            spins,
            long_partitions,
            // Drawn by `generate` after everything else (see there).
            clock_drift: false,
            pauses: false,
            disk_faults: false,
            byzantine: false,
            disk_full: false,
        }
    }

    /// No fault at all (what choice 0 everywhere gives).
    pub fn none() -> Swarm {
        Swarm {
            loss: None,
            duplication: None,
            wide_latency: false,
            partitions: false,
            crashes: false,
            dead_node: false,
            leaves: false,
            rejoins: false,
            late_joins: false,
            network_changes: false,
            spins: false,
            long_partitions: false,
            clock_drift: false,
            pauses: false,
            disk_faults: false,
            byzantine: false,
            disk_full: false,
        }
    }

    /// One line for a scenario's description: `"loss up to 0.12, partitions"`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(loss) = self.loss {
            parts.push(format!("loss up to {loss}"));
        }
        if let Some(duplication) = self.duplication {
            parts.push(format!("duplication up to {duplication}"));
        }
        let flags = [
            (self.wide_latency, "wide latency"),
            (self.partitions, "partitions"),
            (self.crashes, "crashes"),
            (self.dead_node, "a dead node"),
            (self.leaves, "leaves"),
            (self.rejoins, "rejoins"),
            (self.late_joins, "late joins"),
            (self.network_changes, "network changes"),
            (self.spins, "spins"),
            (self.long_partitions, "a long partition"),
            (self.clock_drift, "clock drift"),
            (self.pauses, "pauses"),
            (self.disk_faults, "disk faults"),
            (self.byzantine, "a byzantine node"),
            (self.disk_full, "full disks"),
        ];
        parts.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, name)| name.to_string()),
        );
        if parts.is_empty() {
            "no faults".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// True with probability `per_mille / 1000`, and false for choice 0, so the
/// simplest choices switch features off.
fn sometimes(c: &mut dyn Choices, per_mille: u64) -> bool {
    c.below(1000) >= 1000 - per_mille.min(1000)
}

/// The methods a generated workload of `app` draws from (a write twice, so
/// that writes dominate).
fn workload_methods(app: App) -> Vec<MethodTemplate> {
    let template = |method: &str, args: &[Draw]| MethodTemplate {
        method: method.to_owned(),
        args: args.iter().map(|&draw| Arg::Draw(draw)).collect(),
    };
    use Draw::{Amount, Key, Value};
    match app {
        App::Kv => vec![
            template("set", &[Key, Value]),
            template("set", &[Key, Value]),
            template("remove", &[Key]),
            template("get", &[Key]),
        ],
        App::Counter => vec![
            template("add", &[Key, Amount]),
            template("add", &[Key, Amount]),
            template("get", &[Key]),
        ],
        App::Bank => vec![
            template("open", &[Key, Amount]),
            template("transfer", &[Key, Key, Amount]),
            template("transfer", &[Key, Key, Amount]),
            template("balance", &[Key]),
        ],
        App::Other | App::Fuzzed => {
            unreachable!("workloads of the bundled apps only (a fuzzed app's: Gen::methods_of)")
        }
    }
}

fn percent(hundredths: u64) -> f64 {
    hundredths as f64 / 100.0
}

/// A random scenario named `fuzz-{seed}`: valid, and ending with a heal,
/// clean network conditions, every crashed node restarted (but perhaps one),
/// and [`QUIET_MS`] later a `converged` check of each context. A pure
/// function of its arguments.
/// The smallest checkpoint interval of a generated scenario (heights).
const CHECKPOINT_INTERVAL_FUZZ_MIN: u64 = 4;

pub fn generate(seed: u64, choices: &mut dyn Choices, options: &GenOptions) -> (Scenario, Swarm) {
    // Drawn even with every knob on, so that the rest of the seed's draws
    // stay where they are.
    let drawn = Swarm::draw(choices);
    let swarm = if options.every_knob {
        drawn.every_knob()
    } else {
        drawn
    };
    let nodes_max = options.nodes_max.clamp(2, NODES_MAX);
    let node_count = 2 + choices.below(nodes_max as u64 - 1) as usize;
    let nodes: Vec<String> = (0..node_count).map(|n| format!("n{n}")).collect();
    let mut g = Gen::new(choices, swarm.clone(), nodes.clone(), Vec::new());
    g.fuzzed = options.app.clone();
    let initial = if g.sometimes(500) {
        g.faulty_network()
    } else {
        Network::default()
    };
    g.base_network = initial.clone();
    // The contexts: the first at time 0, the others within three seconds.
    let context_count = 1 + g.below(3) as usize;
    for index in 0..context_count {
        let at = if index == 0 { 0 } else { g.below(3_000) };
        let app = [App::Kv, App::Counter, App::Bank][g.below(3) as usize];
        // Drawn all the same, so that a fuzzed app's scenarios take the
        // default generator's other draws.
        let app = if g.fuzzed.is_some() { App::Fuzzed } else { app };
        let node = g.below(node_count as u64) as usize;
        g.schedule(
            at,
            Event::Create {
                context: format!("c{}", index + 1),
                node,
                app,
            },
        );
    }
    let span = 5_000 + g.below(CHAOS_MS_MAX - 5_000 + 1);
    let actions = g.below(ACTIONS_MAX + 1);
    g.actions(actions, span);
    let (mut steps, settle_ms, chaos_end) = g.finish();
    // The clock and pause knobs are drawn after every other choice, so that
    // a seed's scenario keeps every step it had before they existed and
    // only gains `clock` and `pause` steps.
    let mut swarm = swarm;
    swarm.clock_drift = sometimes(choices, 300) || options.every_knob;
    swarm.pauses = sometimes(choices, 300) || options.every_knob;
    if swarm.clock_drift {
        add_clocks(choices, &mut steps, &nodes, chaos_end);
    }
    if swarm.pauses {
        add_pauses(choices, &mut steps, &nodes, chaos_end);
    }
    // Drawn after the clocks and pauses, for the same reason.
    swarm.disk_faults = (sometimes(choices, 400) || options.every_knob) && swarm.crashes;
    let lose_unsynced = [0.3, 0.6, 1.0][choices.below(3) as usize];
    let tear = [0.0, 0.5, 1.0][choices.below(3) as usize];
    let disk = if swarm.disk_faults {
        Faults {
            lose_unsynced,
            tear,
        }
    } else {
        Faults::default()
    };
    // Drawn after the disk faults, for the same reason: most often the
    // first context's creator (a member from the start, so it has
    // something to lie about), else any node.
    swarm.byzantine = sometimes(choices, 250) || options.every_knob;
    let liar = if choices.below(2) == 0 {
        steps.iter().find_map(|step| match &step.op {
            Op::Create { node, .. } => Some(node.clone()),
            _ => None,
        })
    } else {
        None
    };
    let liar = liar.unwrap_or_else(|| nodes[choices.below(nodes.len() as u64) as usize].clone());
    let byzantine = if swarm.byzantine {
        Byzantine {
            nodes: vec![liar],
            rate: [0.05, 0.15, 0.3][choices.below(3) as usize],
            behaviours: Behaviour::ALL.to_vec(),
        }
    } else {
        Byzantine::default()
    };
    // Drawn after the byzantine node, for the same reason.
    swarm.disk_full = sometimes(choices, 250) || options.every_knob;
    if swarm.disk_full {
        add_disk_fulls(choices, &mut steps, &nodes, chaos_end);
    }
    let scenario = Scenario {
        name: format!("fuzz-{seed}"),
        description: format!(
            "Generated by ctx-sim fuzz from seed {seed}: {}.",
            swarm.describe()
        ),
        seed,
        nodes,
        settle_ms,
        stress: false,
        // Cuts a few heights apart, so that generated runs take checkpoints,
        // join from them and restart on them; from the seed, not from the
        // choices, so that no other draw moves.
        checkpoint_interval: Some(CHECKPOINT_INTERVAL_FUZZ_MIN + seed % 13),
        network: initial,
        disk,
        byzantine,
        steps,
        path: PathBuf::from(format!("fuzz-{seed}.toml")),
    };
    (scenario, swarm)
}

/// The clock rates (thousandths of true time) a drifting clock draws from:
/// from half to twice true time, well inside what a `clock` step takes.
const CLOCK_RATES: [u32; 7] = [500, 667, 800, 1000, 1250, 1500, 2000];
/// Most pauses in one scenario, and the shortest and longest.
const PAUSES_MAX: u64 = 3;
const PAUSE_MS_MIN: u64 = 300;
const PAUSE_MS_MAX: u64 = 12_000;
/// How far from a pause a step that commands its node must be (a join, a
/// leave, a crash, a restart, another clock or pause step): the model of
/// who is up and a member stays true around the pause.
const PAUSE_CLEAR_MS: u64 = 1_000;

/// `clock` steps for [`Swarm::clock_drift`]: each node's clock may run at
/// another rate from the start, and may change rate once before `chaos_end`.
fn add_clocks(c: &mut dyn Choices, steps: &mut Vec<Step>, nodes: &[String], chaos_end: u64) {
    for node in nodes {
        let rate = |c: &mut dyn Choices| CLOCK_RATES[c.below(CLOCK_RATES.len() as u64) as usize];
        if sometimes(c, 500) {
            let rate_permille = rate(c);
            let op = Op::Clock {
                node: node.clone(),
                rate_permille,
            };
            insert_step(steps, 0, op);
        }
        if sometimes(c, 300) {
            let at = c.below(chaos_end.max(1));
            let rate_permille = rate(c);
            let op = Op::Clock {
                node: node.clone(),
                rate_permille,
            };
            insert_step(steps, at, op);
        }
    }
}

/// `pause` steps for [`Swarm::pauses`]: up to [`PAUSES_MAX`] nodes freeze
/// for a while, each waking before `chaos_end` (the final heal), and none
/// within [`PAUSE_CLEAR_MS`] of a step that changes its node's membership,
/// liveness or clock, nor while it is down. A pause that cannot be placed
/// so is left out.
fn add_pauses(c: &mut dyn Choices, steps: &mut Vec<Step>, nodes: &[String], chaos_end: u64) {
    add_windows(c, steps, nodes, chaos_end, false, |node, ms| Op::Pause {
        node,
        ms,
    });
}

/// `disk_full` steps for [`Swarm::disk_full`]: up to [`PAUSES_MAX`] nodes
/// store nothing for a while, placed as pauses are, and not while a call
/// step is given to their node either (a refused call would break the
/// checks of its own writes; workloads call another member).
fn add_disk_fulls(c: &mut dyn Choices, steps: &mut Vec<Step>, nodes: &[String], chaos_end: u64) {
    add_windows(c, steps, nodes, chaos_end, true, |node, ms| Op::DiskFull {
        node,
        ms,
    });
}

/// Up to [`PAUSES_MAX`] steps `window(node, ms)` of [`PAUSE_MS_MIN`] to
/// [`PAUSE_MS_MAX`], each over before `chaos_end`, none within
/// [`PAUSE_CLEAR_MS`] of a step that changes its node's membership,
/// liveness or clock (nor of a call to it, with `no_calls`), nor while it
/// is down. One that cannot be placed so is left out.
fn add_windows(
    c: &mut dyn Choices,
    steps: &mut Vec<Step>,
    nodes: &[String],
    chaos_end: u64,
    no_calls: bool,
    window: fn(String, u64) -> Op,
) {
    let count = 1 + c.below(PAUSES_MAX);
    for _ in 0..count {
        let node = &nodes[c.below(nodes.len() as u64) as usize];
        let ms = PAUSE_MS_MIN + c.below(PAUSE_MS_MAX - PAUSE_MS_MIN + 1);
        let at = c.below(chaos_end.saturating_sub(ms).max(1));
        let (from, to) = (at.saturating_sub(PAUSE_CLEAR_MS), at + ms + PAUSE_CLEAR_MS);
        let called = no_calls
            && steps.iter().any(|step| {
                (from..=to).contains(&step.at_ms)
                    && matches!(&step.op, Op::Call { node: n, .. } if n == node)
            });
        if at + ms >= chaos_end || called || !node_is_left_alone(steps, node, from, to) {
            continue;
        }
        insert_step(steps, at, window(node.clone(), ms));
    }
}

/// Whether nothing in `steps` from `from` to `to` (inclusive) changes
/// `node`'s membership, liveness or clock, and `node` is up at `from`.
fn node_is_left_alone(steps: &[Step], node: &str, from: u64, to: u64) -> bool {
    let mut up = true;
    for step in steps.iter().take_while(|step| step.at_ms <= to) {
        let names_node = match &step.op {
            Op::Create { node: n, .. } | Op::Leave { node: n, .. } | Op::Clock { node: n, .. } => {
                n == node
            }
            // A pause that began earlier may last into the window.
            Op::Pause { node: n, ms } | Op::DiskFull { node: n, ms }
                if n == node && step.at_ms + ms >= from =>
            {
                return false;
            }
            Op::Pause { .. } | Op::DiskFull { .. } => false,
            Op::Crash { node: n } => {
                if n == node {
                    up = false;
                }
                n == node
            }
            Op::Restart { node: n } => {
                if n == node {
                    up = true;
                }
                n == node
            }
            Op::Invite {
                node: n, member, ..
            } => n == node || member == node,
            Op::Join { node: n, via, .. } => n == node || via == node,
            _ => false,
        };
        if names_node && step.at_ms >= from {
            return false;
        }
    }
    up
}

/// Inserts a step at `at`, after every step already at or before `at`, so
/// that the steps stay in time order.
fn insert_step(steps: &mut Vec<Step>, at: u64, op: Op) {
    let index = steps.partition_point(|step| step.at_ms <= at);
    steps.insert(
        index,
        Step {
            at_ms: at,
            line: 0,
            op,
        },
    );
}

/// `base` with random faults and calls added (for `ctx-sim fuzz --from
/// FILE`): every step of `base` is kept, in order and at its time; the
/// additions stay clear of what the base checks (see the module doc); the
/// result ends with a heal, a clean network and a `converged` check of each
/// context. Named `{base}-mutant-{seed}`, in the base's directory.
pub fn mutate(base: &Scenario, seed: u64, choices: &mut dyn Choices) -> Scenario {
    let mut swarm = Swarm::draw(choices);
    // Membership changes would change what the base's checks see.
    swarm.dead_node = false;
    swarm.leaves = false;
    swarm.rejoins = false;
    swarm.late_joins = false;
    let mut g = Gen::new(
        choices,
        swarm.clone(),
        base.nodes.clone(),
        base.steps.clone(),
    );
    g.base_network = base.network.clone();
    g.fence_base();
    let base_end = base.steps.last().map_or(0, |step| step.at_ms);
    let span = base_end + 2_000 + g.below(20_000);
    let actions = 1 + g.below(30);
    g.actions(actions, span);
    let (steps, settle_ms, _) = g.finish();
    let name = format!("{}-mutant-{seed}", base.name);
    let path = base.path.with_file_name(format!("{name}.toml"));
    Scenario {
        description: format!(
            "{} mutated by ctx-sim fuzz from seed {seed}: {}.",
            base.name,
            swarm.describe()
        ),
        name,
        seed,
        nodes: base.nodes.clone(),
        settle_ms: settle_ms.max(base.settle_ms),
        stress: base.stress,
        checkpoint_interval: base.checkpoint_interval,
        network: base.network.clone(),
        disk: base.disk,
        byzantine: base.byzantine.clone(),
        steps,
        path,
    }
}

// ---------------------------------------------------------------------------
// The model and the generator.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum App {
    Kv,
    Counter,
    Bank,
    /// The module `fuzz --app` names: its ABI says what to call.
    Fuzzed,
    /// An app from a file: its methods are unknown, so nobody calls it.
    Other,
}

impl App {
    fn from_ref(app: &AppRef) -> App {
        match app {
            AppRef::Bundled(name) if name == "kv" => App::Kv,
            AppRef::Bundled(name) if name == "counter" => App::Counter,
            AppRef::Bundled(name) if name == "bank" => App::Bank,
            _ => App::Other,
        }
    }
}

/// One node's standing in one context, as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Outside,
    Invited,
    /// A member, counted on from `since` (a joiner: some time after its join).
    Member {
        since: u64,
    },
    Left {
        since: u64,
    },
}

/// What the creator alone wrote at [`OWN_KEY`].
#[derive(Clone, Debug, PartialEq)]
enum Own {
    Kv(Option<String>),
    Counter(u64),
    Bank(u64),
}

struct Context {
    name: String,
    app: App,
    creator: usize,
    status: Vec<Status>,
    /// What the creator wrote at [`OWN_KEY`], while it is certain: the
    /// creator has not left, and each write was made while it was up.
    own: Option<Own>,
    own_certain: bool,
}

#[derive(Clone, Debug)]
enum Event {
    Create {
        context: String,
        node: usize,
        app: App,
    },
    /// Invite `node` (unless it is invited already), then join.
    InviteJoin {
        context: usize,
        node: usize,
    },
    Join {
        context: usize,
        node: usize,
        inviter: Option<usize>,
    },
    Restart(usize),
    Heal,
    NetworkRestore,
}

struct Gen<'c> {
    c: &'c mut dyn Choices,
    swarm: Swarm,
    nodes: Vec<String>,
    /// The steps so far, in time order.
    steps: Vec<Step>,
    now: u64,
    pending: BTreeMap<(u64, u64), Event>,
    sequence: u64,
    /// A mutated base's steps, merged in at their times.
    base: Vec<Step>,
    base_next: usize,
    /// Times (inclusive ranges) where nothing may be added.
    fenced: Vec<(u64, u64)>,
    /// Per node, times where it may not be crashed.
    node_fenced: Vec<Vec<(u64, u64)>>,
    /// Per context name, keys a mutated base checks: nothing added writes
    /// them, and a workload runs only if `$key` cannot draw one of them.
    avoid: BTreeMap<String, Vec<String>>,
    up: Vec<bool>,
    dead: Vec<bool>,
    /// A join may be using this node as its `via` until then.
    via_until: Vec<u64>,
    /// Partition group of each node (all 0 when healed).
    group: Vec<usize>,
    partitioned: bool,
    /// Whether this scenario's long partition was emitted (one at most).
    long_partitioned: bool,
    /// The conditions a `NetworkRestore` goes back to.
    base_network: Network,
    network_changed: bool,
    contexts: Vec<Context>,
    calls: u32,
    spins: u32,
    /// Steps this generator added (not the base's).
    added: usize,
    /// The last workload's calls are spread until then.
    busy_until: u64,
    /// The app every context runs, with `fuzz --app`.
    fuzzed: Option<FuzzedApp>,
}

impl<'c> Gen<'c> {
    fn new(c: &'c mut dyn Choices, swarm: Swarm, nodes: Vec<String>, base: Vec<Step>) -> Self {
        let count = nodes.len();
        Gen {
            c,
            swarm,
            nodes,
            steps: Vec::new(),
            now: 0,
            pending: BTreeMap::new(),
            sequence: 0,
            base,
            base_next: 0,
            fenced: Vec::new(),
            node_fenced: vec![Vec::new(); count],
            avoid: BTreeMap::new(),
            up: vec![true; count],
            dead: vec![false; count],
            via_until: vec![0; count],
            group: vec![0; count],
            partitioned: false,
            long_partitioned: false,
            base_network: Network::default(),
            network_changed: false,
            contexts: Vec::new(),
            calls: 0,
            spins: 0,
            added: 0,
            busy_until: 0,
            fuzzed: None,
        }
    }

    // ----- choices -------------------------------------------------------------

    fn below(&mut self, bound: u64) -> u64 {
        self.c.below(bound.max(1))
    }

    fn sometimes(&mut self, per_mille: u64) -> bool {
        sometimes(self.c, per_mille)
    }

    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }

    // ----- time ----------------------------------------------------------------

    fn schedule(&mut self, at: u64, event: Event) {
        self.sequence += 1;
        self.pending.insert((at, self.sequence), event);
    }

    /// Runs the base's steps and the pending events due by `at`, in time
    /// order (a base step first on a tie), then sets the clock to `at`.
    fn advance_to(&mut self, at: u64) {
        self.run_due(at);
        self.now = self.now.max(at);
    }

    /// Runs the base's steps and the pending events due by `at`.
    fn run_due(&mut self, at: u64) {
        loop {
            let base_at = self.base.get(self.base_next).map(|step| step.at_ms);
            let pending_at = self.pending.keys().next().map(|&(time, _)| time);
            match (base_at, pending_at) {
                (Some(b), p) if b <= at && p.is_none_or(|p| b <= p) => {
                    let step = self.base[self.base_next].clone();
                    self.base_next += 1;
                    self.now = self.now.max(step.at_ms);
                    self.apply(&step.op);
                    if let Op::Network {
                        latency_ms,
                        drop,
                        duplicate,
                    } = &step.op
                    {
                        let network = &mut self.base_network;
                        network.latency_ms = latency_ms.unwrap_or(network.latency_ms);
                        network.drop = drop.unwrap_or(network.drop);
                        network.duplicate = duplicate.unwrap_or(network.duplicate);
                    }
                    self.steps.push(step);
                }
                (_, Some(p)) if p <= at => {
                    let ((time, _), event) = self.pending.pop_first().expect("one is due");
                    self.now = self.now.max(time);
                    self.handle(event);
                }
                _ => break,
            }
        }
    }

    /// Runs everything still to come, whatever its time.
    fn drain(&mut self) {
        self.run_due(u64::MAX);
    }

    /// Adds a step now and updates the model.
    fn emit(&mut self, op: Op) {
        self.apply(&op);
        self.added += 1;
        self.steps.push(Step {
            at_ms: self.now,
            line: 0,
            op,
        });
    }

    /// The latest time an addition starting now may last until, or `None`
    /// when nothing may be added now (a mutated base is sensitive).
    fn free_until(&self) -> Option<u64> {
        let mut until = u64::MAX;
        for &(from, to) in &self.fenced {
            if (from..=to).contains(&self.now) {
                return None;
            }
            if from > self.now {
                until = until.min(from - 1);
            }
        }
        Some(until)
    }

    fn node_free(&self, node: usize, from: u64, to: u64) -> bool {
        self.node_fenced[node]
            .iter()
            .all(|&(a, b)| b < from || a > to)
    }

    /// Fences a mutated base's sensitive times (see the module doc).
    fn fence_base(&mut self) {
        let steps = self.base.clone();
        let names: BTreeMap<String, usize> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(index, name)| (name.clone(), index))
            .collect();
        let mut partition_from: Option<u64> = None;
        for step in &steps {
            let at = step.at_ms;
            let mut named: Vec<&str> = Vec::new();
            match &step.op {
                Op::Expect(check) => {
                    self.fenced.push((at.saturating_sub(QUIET_MS), at));
                    if let Check::Value { context, key, .. } = check {
                        let key = key.to_bytes().unwrap_or_default();
                        let key = String::from_utf8_lossy(&key).into_owned();
                        self.avoid_key(context, key);
                    }
                }
                Op::Partition { .. } => {
                    partition_from.get_or_insert(at);
                }
                Op::Heal => {
                    let from = partition_from.take().unwrap_or(at);
                    self.fenced.push((from, at));
                }
                Op::Network { .. } => self.fenced.push((at, at)),
                Op::Workload {
                    over_ms,
                    nodes: listed,
                    ..
                } => {
                    let span = (at, at.saturating_add(*over_ms));
                    match listed {
                        Some(listed) => {
                            for name in listed {
                                self.node_fenced[names[name]].push(span);
                            }
                        }
                        // Any member may be the caller: crash nobody then.
                        None => {
                            for fences in &mut self.node_fenced {
                                fences.push(span);
                            }
                        }
                    }
                }
                Op::Call {
                    node,
                    context,
                    args,
                    ..
                } => {
                    named.push(node);
                    // The base writes these: nothing added may claim to know
                    // their value.
                    for arg in args {
                        if let Some(bytes) = arg.to_bytes() {
                            self.avoid_key(context, String::from_utf8_lossy(&bytes).into_owned());
                        }
                    }
                }
                Op::Create { node, .. } | Op::Leave { node, .. } => named.push(node),
                Op::Invite { node, member, .. } => named.extend([node.as_str(), member]),
                Op::Join { node, via, .. } => named.extend([node.as_str(), via]),
                Op::Crash { node } | Op::Restart { node } => named.push(node),
                Op::Pause { node, ms } | Op::DiskFull { node, ms } => {
                    // Nothing added may act on it, or crash it, while frozen
                    // (or while it stores nothing).
                    let span = (at.saturating_sub(1_000), at.saturating_add(ms + 1_000));
                    self.node_fenced[names[node]].push(span);
                }
                Op::Clock { .. } => {}
            }
            for name in named {
                // A little room either side: a node just restarted or about
                // to act must be up.
                let span = (at.saturating_sub(1_000), at.saturating_add(1_000));
                self.node_fenced[names[name]].push(span);
            }
        }
        if let Some(from) = partition_from {
            self.fenced.push((from, u64::MAX));
        }
    }

    fn avoid_key(&mut self, context: &str, key: String) {
        self.avoid.entry(context.to_owned()).or_default().push(key);
    }

    fn avoided(&self, context: usize, key: &str) -> bool {
        self.avoid
            .get(&self.contexts[context].name)
            .is_some_and(|keys| keys.iter().any(|k| k == key))
    }
}

/// What a random action does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Call,
    Workload,
    Join,
    Leave,
    Partition,
    Crash,
    Network,
}

impl Gen<'_> {
    // ----- the model -------------------------------------------------------------

    fn node_index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n == name)
            .expect("a valid scenario names only declared nodes")
    }

    fn context_index(&self, name: &str) -> Option<usize> {
        self.contexts.iter().position(|c| c.name == name)
    }

    /// A member the model counts on: caught up and up.
    fn ready(&self, context: usize, node: usize) -> bool {
        self.up[node]
            && matches!(
                self.contexts[context].status[node],
                Status::Member { since } if since <= self.now
            )
    }

    fn ready_members(&self, context: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&n| self.ready(context, n))
            .collect()
    }

    /// Updates the model for a step (generated or the base's) run now.
    fn apply(&mut self, op: &Op) {
        let now = self.now;
        match op {
            Op::Create { node, context, app } => {
                let node = self.node_index(node);
                if self.context_index(context).is_none() && self.up[node] {
                    let mut status = vec![Status::Outside; self.nodes.len()];
                    status[node] = Status::Member { since: now };
                    let app = match (app, &self.fuzzed) {
                        (AppRef::Path(path), Some(fuzzed)) if *path == fuzzed.path => App::Fuzzed,
                        _ => App::from_ref(app),
                    };
                    self.contexts.push(Context {
                        name: context.clone(),
                        app,
                        creator: node,
                        status,
                        own: None,
                        own_certain: true,
                    });
                }
            }
            Op::Invite {
                context, member, ..
            } => {
                let member = self.node_index(member);
                if let Some(c) = self.context_index(context) {
                    let status = &mut self.contexts[c].status[member];
                    if matches!(status, Status::Outside | Status::Left { .. }) {
                        *status = Status::Invited;
                    }
                }
            }
            Op::Join { node, context, via } => {
                let (node, via) = (self.node_index(node), self.node_index(via));
                if let Some(c) = self.context_index(context) {
                    self.contexts[c].status[node] = Status::Member {
                        since: now + READY_MS,
                    };
                }
                self.via_until[via] = self.via_until[via].max(now + VIA_MS);
            }
            Op::Leave { node, context } => {
                let node = self.node_index(node);
                if let Some(c) = self.context_index(context) {
                    let context = &mut self.contexts[c];
                    context.status[node] = Status::Left { since: now };
                    if node == context.creator {
                        context.own_certain = false;
                    }
                }
            }
            Op::Crash { node } => {
                let node = self.node_index(node);
                self.up[node] = false;
            }
            Op::Restart { node } => {
                let node = self.node_index(node);
                self.up[node] = true;
            }
            Op::Partition { groups } => {
                let groups: Vec<Vec<usize>> = groups
                    .iter()
                    .map(|group| group.iter().map(|n| self.node_index(n)).collect())
                    .collect();
                self.group = crate::world::partition_groups(self.nodes.len(), &groups);
                self.partitioned = true;
            }
            Op::Heal => {
                self.group = vec![0; self.nodes.len()];
                self.partitioned = false;
            }
            // A pause holds a node's inputs back and a clock changes its
            // timers' pace: neither changes who is a member or up.
            Op::Call { .. }
            | Op::Workload { .. }
            | Op::Network { .. }
            | Op::Clock { .. }
            | Op::Pause { .. }
            | Op::DiskFull { .. }
            | Op::Expect(_) => {}
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Create { context, node, app } => self.create(context, node, app),
            Event::InviteJoin { context, node } => self.invite_join(context, node),
            Event::Join {
                context,
                node,
                inviter,
            } => self.join(context, node, inviter),
            Event::Restart(node) => {
                if !self.up[node] {
                    self.emit(Op::Restart {
                        node: self.nodes[node].clone(),
                    });
                }
            }
            Event::Heal => {
                if self.partitioned {
                    self.emit(Op::Heal);
                }
            }
            Event::NetworkRestore => {
                if self.network_changed {
                    self.network_changed = false;
                    let restore = self.base_network.clone();
                    self.emit(Op::Network {
                        latency_ms: Some(restore.latency_ms),
                        drop: Some(restore.drop),
                        duplicate: Some(restore.duplicate),
                    });
                }
            }
        }
    }

    fn create(&mut self, context: String, node: usize, app: App) {
        // At most half the nodes are down at once, so one is up.
        let node = if self.up[node] {
            node
        } else {
            let up: Vec<usize> = (0..self.nodes.len()).filter(|&n| self.up[n]).collect();
            self.pick(&up)
        };
        self.emit(Op::Create {
            node: self.nodes[node].clone(),
            context: context.clone(),
            app: match app {
                App::Kv => AppRef::Bundled("kv".to_owned()),
                App::Counter => AppRef::Bundled("counter".to_owned()),
                App::Bank => AppRef::Bundled("bank".to_owned()),
                App::Fuzzed => {
                    AppRef::Path(self.fuzzed.as_ref().expect("fuzzing an app").path.clone())
                }
                App::Other => unreachable!("the generator creates no unknown app"),
            },
        });
        let index = self.context_index(&context).expect("just created");
        // Who joins at the start (everyone, for the simplest choices).
        let skip = if self.swarm.late_joins { 600 } else { 200 };
        for other in 0..self.nodes.len() {
            if other != node && !self.sometimes(skip) {
                let at = self.now + 5 + self.below(500);
                self.schedule(
                    at,
                    Event::InviteJoin {
                        context: index,
                        node: other,
                    },
                );
            }
        }
    }

    /// Invites `node` into `context` (unless it is invited already) and
    /// schedules its join shortly after.
    fn invite_join(&mut self, context: usize, node: usize) {
        if !self.up[node] {
            return;
        }
        let inviter = match self.contexts[context].status[node] {
            Status::Member { .. } => return,
            Status::Left { since } if self.now < since + LEFT_MS => return,
            Status::Invited => None,
            Status::Outside | Status::Left { .. } => {
                let inviters: Vec<usize> = self
                    .ready_members(context)
                    .into_iter()
                    .filter(|&n| n != node)
                    .collect();
                if inviters.is_empty() {
                    return;
                }
                let inviter = self.pick(&inviters);
                self.emit(Op::Invite {
                    node: self.nodes[inviter].clone(),
                    context: self.contexts[context].name.clone(),
                    member: self.nodes[node].clone(),
                });
                Some(inviter)
            }
        };
        let at = self.now + 5 + self.below(1_500);
        self.schedule(
            at,
            Event::Join {
                context,
                node,
                inviter,
            },
        );
    }

    /// `node` joins via a member it can reach (the inviter, usually).
    fn join(&mut self, context: usize, node: usize, inviter: Option<usize>) {
        if !self.up[node] || self.contexts[context].status[node] != Status::Invited {
            return;
        }
        let members: Vec<usize> = self
            .ready_members(context)
            .into_iter()
            .filter(|&n| n != node)
            .collect();
        let reachable: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&n| self.group[n] == self.group[node])
            .collect();
        let candidates = if reachable.is_empty() {
            members
        } else {
            reachable
        };
        if candidates.is_empty() {
            return;
        }
        let via = match inviter {
            Some(inviter) if candidates.contains(&inviter) && self.below(10) < 6 => inviter,
            _ => self.pick(&candidates),
        };
        self.emit(Op::Join {
            node: self.nodes[node].clone(),
            context: self.contexts[context].name.clone(),
            via: self.nodes[via].clone(),
        });
    }

    // ----- random actions --------------------------------------------------------

    /// Up to `count` random actions at random times up to `span`.
    fn actions(&mut self, count: u64, span: u64) {
        let mean_gap = span / (count + 1);
        for _ in 0..count {
            let at = self.now + 1 + self.below(2 * mean_gap + 1);
            if at > span || self.added >= STEPS_TARGET {
                break;
            }
            self.advance_to(at);
            if self.free_until().is_some() {
                self.action();
            }
        }
    }

    fn action(&mut self) {
        let swarm = &self.swarm;
        let mut kinds: Vec<(Kind, u64)> = vec![(Kind::Call, 40)];
        if self.calls + 10 <= CALLS_MAX {
            kinds.push((Kind::Workload, 12));
        }
        if swarm.late_joins {
            kinds.push((Kind::Join, 10));
        }
        if swarm.leaves {
            kinds.push((Kind::Leave, 4));
        }
        if swarm.partitions && !self.partitioned {
            kinds.push((Kind::Partition, 6));
        }
        if swarm.crashes {
            kinds.push((Kind::Crash, 6));
        }
        if swarm.network_changes && !self.network_changed {
            kinds.push((Kind::Network, 6));
        }
        let total: u64 = kinds.iter().map(|(_, weight)| weight).sum();
        let mut draw = self.below(total);
        let kind = kinds
            .iter()
            .find(|(_, weight)| {
                let found = draw < *weight;
                draw = draw.saturating_sub(*weight);
                found
            })
            .map(|(kind, _)| *kind)
            .expect("the draw is below the total");
        match kind {
            Kind::Call => self.call(),
            Kind::Workload => self.workload(),
            Kind::Join => self.late_join(),
            Kind::Leave => self.leave(),
            Kind::Partition => self.partition(),
            Kind::Crash => self.crash(),
            Kind::Network => self.change_network(),
        }
    }

    /// How long an addition starting now may last: `wanted`, shortened to
    /// stay clear of a mutated base's fences; `None` if under `least`.
    fn duration(&self, wanted: u64, least: u64) -> Option<u64> {
        let room = self.free_until()?.saturating_sub(self.now);
        let duration = wanted.min(room);
        (duration >= least).then_some(duration)
    }

    fn key(&mut self, context: usize) -> Option<Arg> {
        let key = format!("k{}", self.below(KEYS));
        (!self.avoided(context, &key)).then_some(Arg::Str(key))
    }

    fn call(&mut self) {
        let candidates: Vec<(usize, usize)> = (0..self.contexts.len())
            .filter(|&c| self.contexts[c].app != App::Other)
            .flat_map(|c| self.ready_members(c).into_iter().map(move |n| (c, n)))
            .collect();
        if candidates.is_empty() || self.calls >= CALLS_MAX {
            return;
        }
        let (context, node) = self.pick(&candidates);
        let call = if self.swarm.spins && self.spins < SPINS_MAX && self.sometimes(100) {
            self.spins += 1;
            Some(("spin".to_owned(), Vec::new()))
        } else if node == self.contexts[context].creator
            && self.contexts[context].app != App::Fuzzed
            && self.contexts[context].own_certain
            && !self.avoided(context, OWN_KEY)
            && self.sometimes(250)
        {
            let (method, args) = self.own_call(context);
            Some((method.to_owned(), args))
        } else if self.contexts[context].app == App::Fuzzed {
            Some(self.fuzzed_call())
        } else {
            self.app_call(context)
                .map(|(method, args)| (method.to_owned(), args))
        };
        let Some((method, args)) = call else {
            return;
        };
        self.calls += 1;
        self.emit(Op::Call {
            node: self.nodes[node].clone(),
            context: self.contexts[context].name.clone(),
            method,
            args,
        });
    }

    /// A call of one of the fuzzed app's call methods, with arguments of
    /// its parameters' types.
    fn fuzzed_call(&mut self) -> (String, Vec<Arg>) {
        let calls = self.fuzzed.as_ref().expect("fuzzing an app").calls.clone();
        let method = self.pick(&calls);
        let args = method.params.iter().map(|p| self.arg_of(&p.ty)).collect();
        (method.name, args)
    }

    /// A fuzzed app's workload: each call method once, its `key` and
    /// `string` arguments drawn by the runner (`$key`), its `u64` ones too
    /// (`$amount`), the others fixed here.
    fn fuzzed_methods(&mut self) -> Vec<MethodTemplate> {
        let calls = self.fuzzed.as_ref().expect("fuzzing an app").calls.clone();
        calls
            .iter()
            .map(|method| MethodTemplate {
                method: method.name.clone(),
                args: method
                    .params
                    .iter()
                    .map(|param| match param.ty {
                        Type::Key | Type::String => Arg::Draw(Draw::Key),
                        Type::U64 => Arg::Draw(Draw::Amount),
                        ref other => self.arg_of(other),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The methods a workload of `context` draws from.
    fn methods_of(&mut self, context: usize) -> Vec<MethodTemplate> {
        match self.contexts[context].app {
            App::Fuzzed => self.fuzzed_methods(),
            app => workload_methods(app),
        }
    }

    /// An argument of type `ty`, from a small pool: a few names, small
    /// integers and the type's extremes, booleans, a few short byte
    /// strings, absent options.
    fn arg_of(&mut self, ty: &Type) -> Arg {
        match ty {
            Type::Key | Type::String => Arg::Str(format!("k{}", self.below(FUZZ_NAMES))),
            Type::Bool => Arg::Bool(self.below(2) == 1),
            Type::Unit => Arg::Hex(Vec::new()),
            Type::Bytes | Type::Postcard => {
                let len = self.below(4) as usize;
                Arg::Hex((0..len).map(|_| self.below(3) as u8).collect())
            }
            Type::Option(inner) => {
                if self.below(3) == 0 {
                    Arg::Hex(Vec::new())
                } else {
                    self.arg_of(inner)
                }
            }
            integer => {
                let ty = IntType::from_name(&integer.to_string())
                    .expect("every other ABI type is an integer");
                let width_bits = 8 * ty.width_bytes() as u32;
                let signed = integer.to_string().starts_with('i');
                let value: i128 = match self.below(10) {
                    0 => 0,
                    // The type's largest, and its smallest (signed) or 1.
                    1 if signed => (1i128 << (width_bits - 1)).wrapping_sub(1),
                    1 => return self.int_arg(ty, u128::MAX >> (128 - width_bits)),
                    2 if signed => i128::MIN >> (128 - width_bits),
                    2 => 1,
                    _ => 1 + self.below(FUZZ_INT_MAX) as i128,
                };
                self.int_arg(ty, value as u128)
            }
        }
    }

    /// An integer argument: `bits` in two's complement, cut to the type's
    /// width; a u64 as the plain integer scenario files write.
    fn int_arg(&self, ty: IntType, bits: u128) -> Arg {
        let width_bits = 8 * ty.width_bytes() as u32;
        let bits = if width_bits == 128 {
            bits
        } else {
            bits & ((1u128 << width_bits) - 1)
        };
        match ty {
            IntType::U64 => Arg::U64(bits as u64),
            _ => Arg::Int { ty, bits },
        }
    }

    /// A call by the creator on [`OWN_KEY`], whose result the model knows.
    fn own_call(&mut self, context: usize) -> (&'static str, Vec<Arg>) {
        let key = Arg::Str(OWN_KEY.to_owned());
        let own = self.contexts[context].own.clone();
        let (call, own) = match (self.contexts[context].app, own) {
            (App::Kv, Some(Own::Kv(Some(_)))) if self.sometimes(200) => {
                (("remove", vec![key]), Own::Kv(None))
            }
            (App::Kv, _) => {
                let value = format!("v{}", self.below(1_000));
                let args = vec![key, Arg::Str(value.clone())];
                (("set", args), Own::Kv(Some(value)))
            }
            (App::Counter, own) => {
                let amount = 1 + self.below(100);
                let total = match own {
                    Some(Own::Counter(total)) => total,
                    _ => 0,
                };
                (
                    ("add", vec![key, Arg::U64(amount)]),
                    Own::Counter(total + amount),
                )
            }
            (App::Bank, Some(Own::Bank(amount))) => (("balance", vec![key]), Own::Bank(amount)),
            (App::Bank, _) => {
                let amount = 100 + self.below(900);
                (("open", vec![key, Arg::U64(amount)]), Own::Bank(amount))
            }
            (App::Other | App::Fuzzed, _) => unreachable!("no own calls of an unknown app"),
        };
        self.contexts[context].own = Some(own);
        call
    }

    /// A call of the context's app on the shared keys.
    fn app_call(&mut self, context: usize) -> Option<(&'static str, Vec<Arg>)> {
        let draw = self.below(10);
        let key = self.key(context)?;
        Some(match self.contexts[context].app {
            App::Kv if draw < 6 => {
                let value = Arg::Str(format!("v{}", self.below(1_000)));
                ("set", vec![key, value])
            }
            App::Kv if draw < 8 => ("remove", vec![key]),
            App::Kv => ("get", vec![key]),
            App::Counter if draw < 7 => ("add", vec![key, Arg::U64(1 + self.below(100))]),
            App::Counter => ("get", vec![key]),
            App::Bank if draw < 4 => ("open", vec![key, Arg::U64(100 + self.below(900))]),
            App::Bank if draw < 8 => {
                let to = self.key(context)?;
                ("transfer", vec![key, to, Arg::U64(1 + self.below(300))])
            }
            App::Bank => ("balance", vec![key]),
            App::Other | App::Fuzzed => return None,
        })
    }

    fn workload(&mut self) {
        let budget = CALLS_MAX.saturating_sub(self.calls);
        let candidates: Vec<usize> = (0..self.contexts.len())
            .filter(|&c| self.contexts[c].app != App::Other)
            .filter(|&c| !self.draws_avoided(c))
            .filter(|&c| !self.ready_members(c).is_empty())
            .collect();
        if candidates.is_empty() || budget < 10 {
            return;
        }
        let context = self.pick(&candidates);
        let wanted = 500 + self.below(15_000);
        let Some(over_ms) = self.duration(wanted, 500) else {
            return;
        };
        let calls = 5 + self.below(u64::from(budget.min(100)) - 4) as u32;
        let mut methods = self.methods_of(context);
        // (A fuzzed app may have one call method: it keeps it.)
        if methods.len() > 1 && self.sometimes(300) {
            let drop = self.below(methods.len() as u64) as usize;
            methods.remove(drop);
        }
        let nodes = if self.sometimes(250) {
            let members = self.ready_members(context);
            let mut chosen: Vec<String> = Vec::new();
            for member in members {
                if !self.sometimes(500) {
                    chosen.push(self.nodes[member].clone());
                }
            }
            (!chosen.is_empty()).then_some(chosen)
        } else {
            None
        };
        self.emit_workload(context, calls, over_ms, methods, nodes);
    }

    /// Whether a workload's drawn keys (`k0`.., as `$key` draws them) would
    /// touch a key a mutated base checks.
    fn draws_avoided(&self, context: usize) -> bool {
        (0..DRAW_KEYS).any(|k| self.avoided(context, &format!("k{k}")))
    }

    /// Emits a workload and counts its calls and its time.
    fn emit_workload(
        &mut self,
        context: usize,
        calls: u32,
        over_ms: u64,
        methods: Vec<MethodTemplate>,
        nodes: Option<Vec<String>>,
    ) {
        self.calls += calls;
        self.busy_until = self.busy_until.max(self.now + over_ms);
        self.emit(Op::Workload {
            context: self.contexts[context].name.clone(),
            calls,
            over_ms,
            methods,
            nodes,
        });
    }

    fn late_join(&mut self) {
        let now = self.now;
        let mut candidates: Vec<(usize, usize)> = Vec::new();
        for c in 0..self.contexts.len() {
            let members = self.ready_members(c);
            for node in 0..self.nodes.len() {
                let eligible = match self.contexts[c].status[node] {
                    Status::Outside | Status::Invited => true,
                    Status::Left { since } => since + LEFT_MS <= now,
                    Status::Member { .. } => false,
                };
                if eligible && self.up[node] && members.iter().any(|&m| m != node) {
                    candidates.push((c, node));
                }
            }
        }
        if candidates.is_empty() {
            return;
        }
        let (context, node) = self.pick(&candidates);
        self.invite_join(context, node);
    }

    fn leave(&mut self) {
        let now = self.now;
        let mut candidates: Vec<(usize, usize)> = Vec::new();
        for c in 0..self.contexts.len() {
            let members = self.ready_members(c);
            if members.len() < 2 {
                continue;
            }
            for &node in &members {
                if self.via_until[node] <= now {
                    candidates.push((c, node));
                }
            }
        }
        if candidates.is_empty() {
            return;
        }
        let (context, node) = self.pick(&candidates);
        self.emit(Op::Leave {
            node: self.nodes[node].clone(),
            context: self.contexts[context].name.clone(),
        });
        if self.swarm.rejoins && !self.sometimes(400) {
            let at = self.now + LEFT_MS + self.below(5_000);
            self.schedule(at, Event::InviteJoin { context, node });
        }
    }

    fn partition(&mut self) {
        let long = self.swarm.long_partitions && !self.long_partitioned;
        let (wanted, least) = if long {
            let wanted = LONG_PARTITION_MS + self.below(LONG_PARTITION_EXTRA_MS + 1);
            (wanted, LONG_PARTITION_MS)
        } else {
            (500 + self.below(12_000), 300)
        };
        let Some(duration) = self.duration(wanted, least) else {
            return;
        };
        let count = self.nodes.len();
        let sides = 2 + self.below(2) as usize;
        let mut side: Vec<usize> = (0..count)
            .map(|_| self.below(sides as u64) as usize)
            .collect();
        if side.iter().all(|&s| s == side[0]) {
            let moved = self.below(count as u64) as usize;
            side[moved] = (side[moved] + 1) % sides;
        }
        let mut groups: Vec<Vec<String>> = (0..sides)
            .map(|s| {
                (0..count)
                    .filter(|&n| side[n] == s)
                    .map(|n| self.nodes[n].clone())
                    .collect()
            })
            .filter(|group: &Vec<String>| !group.is_empty())
            .collect();
        // A node left out of every group is alone: say so sometimes.
        if self.sometimes(300) && groups.iter().any(|g| g.len() > 1) {
            groups.retain(|g| g.len() > 1);
        }
        self.emit(Op::Partition {
            groups: groups.clone(),
        });
        self.schedule(self.now + duration, Event::Heal);
        if long {
            self.long_partitioned = true;
            self.workloads_on_each_side(&groups, duration);
        }
    }

    /// For a long partition: in each context, a workload by the ready
    /// members of each side, spread over most of the partition, so that
    /// both sides write long histories the heal has to merge.
    fn workloads_on_each_side(&mut self, groups: &[Vec<String>], duration: u64) {
        let over_ms = duration.saturating_sub(1_000).max(500);
        for context in 0..self.contexts.len() {
            let app = self.contexts[context].app;
            if app == App::Other || self.draws_avoided(context) {
                continue;
            }
            let members = self.ready_members(context);
            for group in groups {
                let side: Vec<String> = members
                    .iter()
                    .map(|&m| self.nodes[m].clone())
                    .filter(|name| group.contains(name))
                    .collect();
                let budget = CALLS_MAX.saturating_sub(self.calls);
                if side.is_empty() || budget < 10 {
                    continue;
                }
                let most = budget.min(LONG_PARTITION_CALLS_MAX);
                let calls = 10 + self.below(u64::from(most - 9)) as u32;
                let methods = self.methods_of(context);
                self.emit_workload(context, calls, over_ms, methods, Some(side));
            }
        }
    }

    fn crash(&mut self) {
        let count = self.nodes.len();
        let down = self.up.iter().filter(|&&up| !up).count();
        if 2 * (down + 1) > count {
            return;
        }
        let wanted = 200 + self.below(10_000);
        let Some(duration) = self.duration(wanted, 200) else {
            return;
        };
        let (from, to) = (self.now, self.now + duration);
        let candidates: Vec<usize> = (0..count)
            .filter(|&n| self.up[n] && self.node_free(n, from, to))
            .collect();
        if candidates.is_empty() {
            return;
        }
        let node = self.pick(&candidates);
        let dead = self.swarm.dead_node
            && !self.dead.iter().any(|&d| d)
            && self.via_until[node] <= self.now
            && self.sometimes(300);
        self.emit(Op::Crash {
            node: self.nodes[node].clone(),
        });
        if dead {
            self.dead[node] = true;
        } else {
            self.schedule(to, Event::Restart(node));
        }
    }

    /// Network conditions within the swarm's bounds.
    fn faulty_network(&mut self) -> Network {
        let bounded = |g: &mut Self, max: Option<f64>| match max {
            Some(max) => percent(g.below((max * 100.0).round() as u64 + 1)),
            None => 0.0,
        };
        let drop = bounded(self, self.swarm.loss);
        let duplicate = bounded(self, self.swarm.duplication);
        let latency_ms = if self.swarm.wide_latency {
            let low = 1 + self.below(50);
            (low, low + self.below(501 - low))
        } else {
            (1, 20 + self.below(41))
        };
        Network {
            latency_ms,
            drop,
            duplicate,
        }
    }

    fn change_network(&mut self) {
        let wanted = 1_000 + self.below(15_000);
        let Some(duration) = self.duration(wanted, 500) else {
            return;
        };
        let conditions = self.faulty_network();
        self.emit(Op::Network {
            latency_ms: Some(conditions.latency_ms),
            drop: self.swarm.loss.map(|_| conditions.drop),
            duplicate: self.swarm.duplication.map(|_| conditions.duplicate),
        });
        self.network_changed = true;
        self.schedule(self.now + duration, Event::NetworkRestore);
    }

    // ----- the end -----------------------------------------------------------------

    /// Runs what is still to come, then heals, cleans the network and,
    /// [`QUIET_MS`] later, checks every context. Returns the steps, a settle
    /// time and the time of the final heal.
    fn finish(mut self) -> (Vec<Step>, u64, u64) {
        self.drain();
        let end = self.now.max(self.busy_until) + 100 + self.below(900);
        self.advance_to(end);
        self.emit(Op::Heal);
        self.emit(Op::Network {
            latency_ms: Some(Network::default().latency_ms),
            drop: Some(0.0),
            duplicate: Some(0.0),
        });
        self.now += QUIET_MS;
        for index in 0..self.contexts.len() {
            let context = self.contexts[index].name.clone();
            self.emit(Op::Expect(Check::Converged {
                context: context.clone(),
            }));
        }
        for index in 0..self.contexts.len() {
            let c = &self.contexts[index];
            let equals = match (&c.own, c.own_certain && self.up[c.creator]) {
                (Some(_), false) | (None, _) => continue,
                (Some(Own::Kv(None)), true) => Expected::Absent,
                (Some(Own::Kv(Some(value))), true) => Expected::Bytes(Arg::Str(value.clone())),
                (Some(Own::Counter(total) | Own::Bank(total)), true) => {
                    Expected::Bytes(Arg::U64(*total))
                }
            };
            let check = Check::Value {
                context: c.name.clone(),
                key: Arg::Str(OWN_KEY.to_owned()),
                equals,
                nodes: None,
            };
            self.emit(Op::Expect(check));
        }
        let settle_ms = 10_000 + self.below(10_001);
        (self.steps, settle_ms, end)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    use crate::run::{Report, RunOptions, run};
    use crate::scenario::OPS;

    /// Seeds the unit test runs (a release sweep covers many more: see
    /// `sweep`).
    const SEEDS: u64 = 150;

    fn generated(seed: u64) -> Scenario {
        generate(seed, &mut SeededChoices::new(seed), &GenOptions::default()).0
    }

    fn round_trips(scenario: &Scenario) {
        let text = scenario.to_toml();
        let reread = Scenario::parse(&text, &scenario.path);
        assert_eq!(reread.as_ref(), Ok(scenario), "{text}");
        for step in &scenario.steps {
            assert!(OPS.contains(&step.op.name()), "{:?}", step.op);
        }
    }

    fn failure(report: &Report, scenario: &Scenario) -> String {
        let failed: Vec<String> = report
            .failures()
            .map(|c| format!("{} at {} ms: {}", c.name, c.at_ms, c.detail))
            .collect();
        format!(
            "{}: {}\n{}",
            scenario.name,
            failed.join("; "),
            scenario.to_toml()
        )
    }

    /// Runs as the fuzzer does (stress hooks on) for even seeds, plain for
    /// odd ones.
    fn passes(scenario: &Scenario, stress: bool) {
        let mut scenario = scenario.clone();
        scenario.stress = stress;
        let report = run(&scenario, &RunOptions::default()).expect("generated input is valid");
        assert!(report.passed, "{}", failure(&report, &scenario));
    }

    #[test]
    fn generated_scenarios_are_valid_and_pass() {
        for seed in 0..SEEDS {
            let scenario = generated(seed);
            assert_eq!(scenario.name, format!("fuzz-{seed}"));
            round_trips(&scenario);
            passes(&scenario, seed % 2 == 0);
        }
    }

    /// A fuzzed app whose calls take every ABI type.
    fn every_type_app() -> FuzzedApp {
        let section = r#"{"version":1,"methods":[
          {"name":"open","kind":"call","params":[{"name":"a","type":"key"},{"name":"n","type":"u64"}],"returns":"unit","fails":true},
          {"name":"odd","kind":"call","params":[
            {"name":"s","type":"string"},{"name":"b","type":"bool"},{"name":"x","type":"bytes"},
            {"name":"i8","type":"i8"},{"name":"u16","type":"u16"},{"name":"i32","type":"i32"},
            {"name":"i64","type":"i64"},{"name":"u128","type":"u128"},{"name":"i128","type":"i128"},
            {"name":"o","type":{"option":"u8"}},{"name":"p","type":"postcard"}],"returns":"unit","fails":false},
          {"name":"peek","kind":"view","params":[],"returns":"unit","fails":true,"invariant":true}]}"#;
        let abi = ctx_abi::Abi::parse(section.as_bytes()).expect("a valid ABI");
        FuzzedApp {
            path: PathBuf::from("/fuzzed/app.wasm"),
            calls: abi
                .methods
                .into_iter()
                .filter(|m| m.kind == MethodKind::Call)
                .collect(),
        }
    }

    #[test]
    fn a_fuzzed_app_is_called_by_its_abi() {
        let app = every_type_app();
        let options = GenOptions {
            nodes_max: 4,
            app: Some(app.clone()),
            every_knob: false,
        };
        let mut calls = 0;
        for seed in 0..60 {
            let (scenario, _) = generate(seed, &mut SeededChoices::new(seed), &options);
            round_trips(&scenario);
            for step in &scenario.steps {
                let templates: Vec<(String, usize)> = match &step.op {
                    Op::Create { app: created, .. } => {
                        assert_eq!(created, &AppRef::Path(app.path.clone()));
                        continue;
                    }
                    Op::Call { method, args, .. } => vec![(method.clone(), args.len())],
                    Op::Workload { methods, .. } => methods
                        .iter()
                        .map(|t| (t.method.clone(), t.args.len()))
                        .collect(),
                    _ => continue,
                };
                for (method, count) in templates {
                    calls += 1;
                    if method == "spin" {
                        continue;
                    }
                    let declared = app.calls.iter().find(|m| m.name == method);
                    let declared = declared.unwrap_or_else(|| panic!("{method} is not a call"));
                    assert_eq!(declared.params.len(), count, "{method}");
                }
            }
        }
        assert!(calls > 100, "only {calls} calls");
    }

    #[test]
    fn scenarios_stay_small_and_end_clean() {
        let options = GenOptions::default();
        for seed in 0..500 {
            let (scenario, _) = generate(seed, &mut SeededChoices::new(seed), &options);
            assert!((2..=options.nodes_max).contains(&scenario.nodes.len()));
            assert!(
                scenario.steps.len() < 100,
                "{seed}: {} steps",
                scenario.steps.len()
            );
            let calls: u64 = scenario
                .steps
                .iter()
                .map(|step| match &step.op {
                    Op::Call { .. } => 1,
                    Op::Workload { calls, .. } => u64::from(*calls),
                    _ => 0,
                })
                .sum();
            assert!(calls <= u64::from(CALLS_MAX), "{seed}: {calls} calls");
            assert!((10_000..=20_000).contains(&scenario.settle_ms));
            // Faults stop by about a minute, then a heal and a clean network.
            let heal = scenario
                .steps
                .iter()
                .rposition(|step| step.op == Op::Heal)
                .expect("a final heal");
            assert!(
                scenario.steps[heal].at_ms <= CHAOS_MS_MAX + 25_000,
                "{seed}"
            );
            assert!(matches!(
                scenario.steps[heal + 1].op,
                Op::Network {
                    drop: Some(0.0),
                    duplicate: Some(0.0),
                    ..
                }
            ));
            let faults_after = scenario.steps[heal + 1..].iter().any(|step| {
                matches!(
                    step.op,
                    Op::Crash { .. } | Op::Partition { .. } | Op::Network { .. }
                ) && step.at_ms > scenario.steps[heal].at_ms
            });
            assert!(!faults_after, "{seed}");
            // Every crashed node restarts, but perhaps one.
            let mut down = std::collections::BTreeSet::new();
            for step in &scenario.steps {
                match &step.op {
                    Op::Crash { node } => assert!(down.insert(node.clone()), "{seed}"),
                    Op::Restart { node } => assert!(down.remove(node), "{seed}"),
                    _ => {}
                }
            }
            assert!(down.len() <= 1, "{seed}: {down:?} stay down");
        }
    }

    #[test]
    fn the_same_choices_give_the_same_scenario() {
        for seed in [0, 1, 7, 1_000, u64::MAX] {
            assert_eq!(generated(seed), generated(seed));
            let options = GenOptions {
                nodes_max: 5,
                ..GenOptions::default()
            };
            let list: Vec<u64> = (0..300)
                .map(|i| seed.wrapping_mul(31).wrapping_add(i * i))
                .collect();
            let a = generate(seed, &mut ListChoices::new(list.clone()), &options);
            let b = generate(seed, &mut ListChoices::new(list), &options);
            assert_eq!(a, b);
        }
        assert_ne!(generated(1).steps, generated(2).steps);
    }

    #[test]
    fn no_choices_give_a_minimal_scenario() {
        let (scenario, swarm) =
            generate(3, &mut ListChoices::new(Vec::new()), &GenOptions::default());
        assert_eq!(swarm, Swarm::none());
        assert_eq!(scenario.nodes, ["n0", "n1"]);
        let ops: Vec<&str> = scenario.steps.iter().map(|s| s.op.name()).collect();
        assert_eq!(
            ops,
            ["create", "invite", "join", "heal", "network", "expect"],
            "{}",
            scenario.to_toml()
        );
        round_trips(&scenario);
        passes(&scenario, true);
    }

    #[test]
    fn lists_of_choices_give_valid_passing_scenarios() {
        // What the proptest in tests/fuzz.rs feeds: arbitrary u64s, short
        // lists and small numbers.
        let mut lcg = 0x5eed_u64;
        let mut next = || {
            lcg = lcg.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            lcg >> 11
        };
        for case in 0..24 {
            let len = (next() % 400) as usize;
            let list: Vec<u64> = (0..len)
                .map(|_| if case % 3 == 0 { next() % 4 } else { next() })
                .collect();
            let (scenario, _) = generate(0, &mut ListChoices::new(list), &GenOptions::default());
            round_trips(&scenario);
            passes(&scenario, true);
        }
    }

    #[test]
    fn the_swarm_varies_across_seeds() {
        let swarms: Vec<Swarm> = (0..100)
            .map(|seed| generate(seed, &mut SeededChoices::new(seed), &GenOptions::default()).1)
            .collect();
        type IsOn = fn(&Swarm) -> bool;
        let kinds: [(&str, IsOn); 16] = [
            ("loss", |s| s.loss.is_some()),
            ("duplication", |s| s.duplication.is_some()),
            ("wide_latency", |s| s.wide_latency),
            ("partitions", |s| s.partitions),
            ("crashes", |s| s.crashes),
            ("dead_node", |s| s.dead_node),
            ("leaves", |s| s.leaves),
            ("rejoins", |s| s.rejoins),
            ("late_joins", |s| s.late_joins),
            ("network_changes", |s| s.network_changes),
            ("spins", |s| s.spins),
            ("long_partitions", |s| s.long_partitions),
            ("clock_drift", |s| s.clock_drift),
            ("pauses", |s| s.pauses),
            ("byzantine", |s| s.byzantine),
            ("disk_full", |s| s.disk_full),
        ];
        for (name, on) in kinds {
            let count = swarms.iter().filter(|s| on(s)).count();
            assert!(
                (1..100).contains(&count),
                "{name} is on for {count} of 100 seeds"
            );
        }
        for swarm in &swarms {
            assert!(swarm.loss.is_none_or(|p| (0.01..=0.4).contains(&p)));
            assert!(swarm.duplication.is_none_or(|p| (0.01..=0.3).contains(&p)));
        }
    }

    #[test]
    fn every_knob_switches_every_knob_on_and_keeps_the_seeds_draws() {
        let every = GenOptions {
            every_knob: true,
            ..GenOptions::default()
        };
        let mut ops = std::collections::BTreeSet::new();
        for seed in 0..40 {
            let (scenario, swarm) = generate(seed, &mut SeededChoices::new(seed), &every);
            let drawn = generate(seed, &mut SeededChoices::new(seed), &GenOptions::default()).1;
            assert_eq!(swarm, drawn.clone().every_knob(), "seed {seed}");
            assert!(swarm.loss.is_some() && swarm.duplication.is_some());
            assert!(
                scenario.disk.any(),
                "seed {seed}: disk faults with every knob"
            );
            assert_eq!(
                scenario.byzantine.nodes.len(),
                1,
                "seed {seed}: a byzantine node with every knob"
            );
            assert!(scenario.nodes.contains(&scenario.byzantine.nodes[0]));
            if let Some(loss) = drawn.loss {
                assert_eq!(swarm.loss, Some(loss), "the seed's strength is kept");
            }
            ops.extend(scenario.steps.iter().map(|step| step.op.name()));
        }
        for op in [
            "partition",
            "crash",
            "restart",
            "leave",
            "network",
            "clock",
            "pause",
        ] {
            assert!(
                ops.contains(op),
                "no {op} step in 40 seeds with every knob on"
            );
        }
    }

    #[test]
    fn generated_steps_follow_the_swarm() {
        for seed in 0..200 {
            let (scenario, swarm) =
                generate(seed, &mut SeededChoices::new(seed), &GenOptions::default());
            let has = |name: &str| scenario.steps.iter().any(|s| s.op.name() == name);
            if !swarm.crashes {
                assert!(!has("crash"), "{seed}");
            }
            if !swarm.leaves {
                assert!(!has("leave"), "{seed}");
            }
            let partitions = scenario
                .steps
                .iter()
                .filter(|s| matches!(s.op, Op::Partition { .. }))
                .count();
            if !swarm.partitions {
                assert_eq!(partitions, 0, "{seed}");
            }
            if !swarm.long_partitions {
                assert!(
                    longest_partition_ms(&scenario) < LONG_PARTITION_MS,
                    "{seed}"
                );
            }
            if !swarm.clock_drift {
                assert!(!has("clock"), "{seed}");
            }
            if !swarm.pauses {
                assert!(!has("pause"), "{seed}");
            }
            if !swarm.disk_full {
                assert!(!has("disk_full"), "{seed}");
            }
            let heal = scenario
                .steps
                .iter()
                .rev()
                .find(|s| s.op == Op::Heal)
                .expect("a final heal")
                .at_ms;
            for (index, step) in scenario.steps.iter().enumerate() {
                if let Op::Pause { node, ms } = &step.op {
                    let (from, to) = (step.at_ms, step.at_ms + ms);
                    assert!(
                        to < heal,
                        "{seed}: a pause to {to} ms, past the heal at {heal}"
                    );
                    let clear = from.saturating_sub(PAUSE_CLEAR_MS)..=to + PAUSE_CLEAR_MS;
                    let near = scenario.steps.iter().enumerate().find(|(other, s)| {
                        *other != index
                            && clear.contains(&s.at_ms)
                            && matches!(&s.op,
                                Op::Crash { node: n } | Op::Restart { node: n }
                                | Op::Leave { node: n, .. } | Op::Clock { node: n, .. }
                                | Op::Pause { node: n, .. } | Op::Join { node: n, .. }
                                if n == node)
                    });
                    assert!(near.is_none(), "{seed}: {near:?} near the pause of {node}");
                }
            }
            assert!(
                scenario.steps.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
                "{seed}: steps out of time order"
            );
            for step in &scenario.steps {
                if let Op::Network {
                    latency_ms,
                    drop,
                    duplicate,
                } = &step.op
                {
                    assert!(latency_ms.is_none_or(|(low, high)| low <= high && high <= 500));
                    assert!(drop.is_none_or(|p| p <= swarm.loss.unwrap_or(0.0)));
                    assert!(duplicate.is_none_or(|p| p <= swarm.duplication.unwrap_or(0.0)));
                }
            }
        }
    }

    /// The longest time from a `partition` step to the `heal` after it.
    fn longest_partition_ms(scenario: &Scenario) -> u64 {
        let mut from = None;
        let mut longest = 0;
        for step in &scenario.steps {
            match step.op {
                Op::Partition { .. } => {
                    from.get_or_insert(step.at_ms);
                }
                Op::Heal => {
                    if let Some(from) = from.take() {
                        longest = longest.max(step.at_ms - from);
                    }
                }
                _ => {}
            }
        }
        longest
    }

    #[test]
    fn some_seeds_write_on_both_sides_of_a_long_partition() {
        let mut long = 0;
        for seed in 0..200 {
            let (scenario, _) =
                generate(seed, &mut SeededChoices::new(seed), &GenOptions::default());
            if longest_partition_ms(&scenario) < LONG_PARTITION_MS {
                continue;
            }
            let partition = scenario
                .steps
                .iter()
                .position(|s| matches!(s.op, Op::Partition { .. }))
                .expect("a partition");
            let sides = scenario.steps[partition..]
                .iter()
                .filter(|s| s.at_ms == scenario.steps[partition].at_ms)
                .filter(|s| matches!(&s.op, Op::Workload { nodes: Some(_), .. }))
                .count();
            if sides >= 2 {
                long += 1;
            }
        }
        assert!(
            (5..100).contains(&long),
            "{long} of 200 seeds write on both sides of a long partition"
        );
    }

    fn bundled(name: &str) -> Scenario {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios")
            .join(format!("{name}.toml"));
        Scenario::from_file(&path).expect("a bundled scenario")
    }

    #[test]
    fn mutants_keep_every_base_step_and_pass() {
        let bases = [
            "quickstart",
            "crash-restart",
            "partition-heal",
            "rejoin-after-leave",
            "two-contexts",
            "bank-split-brain",
            "counter-concurrent-adds",
        ];
        for name in bases {
            let base = bundled(name);
            for seed in 0..4 {
                let mutant = mutate(&base, seed, &mut SeededChoices::new(seed));
                // Every base step, in order, at its time.
                let mut rest = mutant.steps.iter();
                for step in &base.steps {
                    assert!(rest.any(|s| s == step), "{name}/{seed} lost {step:?}");
                }
                assert!(mutant.steps.len() > base.steps.len(), "{name}/{seed}");
                assert_eq!(mutant.nodes, base.nodes);
                round_trips(&mutant);
                passes(&mutant, seed % 2 == 0);
            }
        }
    }

    /// Mutants of every bundled scenario, for a release build:
    /// `CTX_GEN_SEEDS=50 cargo test --release -p ctx-sim --lib generate::tests::mutant_sweep -- --ignored --nocapture`
    #[test]
    #[ignore = "a long sweep for a release build: run it with --ignored (see its doc)"]
    fn mutant_sweep() {
        let seeds: u64 = std::env::var("CTX_GEN_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20);
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("scenarios/")
            .map(|entry| entry.expect("an entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        let started = std::time::Instant::now();
        let mut failed = Vec::new();
        for file in &files {
            let base = Scenario::from_file(file).expect("a bundled scenario");
            for seed in 0..seeds {
                let mut mutant = mutate(&base, seed, &mut SeededChoices::new(seed));
                mutant.stress = true;
                round_trips(&mutant);
                let report = run(&mutant, &RunOptions::default()).expect("valid");
                if !report.passed {
                    eprintln!("{}", failure(&report, &mutant).lines().next().unwrap_or(""));
                    let path = std::env::temp_dir().join(format!("{}.toml", mutant.name));
                    mutant.path = path.clone();
                    std::fs::write(&path, mutant.to_toml()).expect("written");
                    failed.push(mutant.name.clone());
                }
            }
        }
        let runs = files.len() as u64 * seeds;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!("{runs} mutants in {seconds:.1} s, failed: {failed:?}");
        assert!(failed.is_empty());
    }

    /// A longer sweep, for a release build:
    /// `CTX_GEN_SEEDS=2000 cargo test --release -p ctx-sim --lib generate::tests::sweep -- --ignored --nocapture`
    #[test]
    #[ignore = "a long sweep for a release build: run it with --ignored (see its doc)"]
    fn sweep() {
        let seeds: u64 = std::env::var("CTX_GEN_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000);
        let first: u64 = std::env::var("CTX_GEN_FIRST")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let started = std::time::Instant::now();
        let mut failed = Vec::new();
        for seed in first..first + seeds {
            let mut scenario = generated(seed);
            scenario.stress = true;
            let report = run(&scenario, &RunOptions::default()).expect("valid");
            if !report.passed {
                eprintln!(
                    "{}",
                    failure(&report, &scenario).lines().next().unwrap_or("")
                );
                let path = std::env::temp_dir().join(format!("bug-{seed}.toml"));
                scenario.path = path.clone();
                std::fs::write(&path, scenario.to_toml()).expect("written");
                failed.push(seed);
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "{seeds} seeds in {seconds:.1} s ({:.1} seeds/s), failed: {failed:?}",
            seeds as f64 / seconds
        );
        assert!(failed.is_empty());
    }
}
