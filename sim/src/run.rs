//! Runs a scenario in a [`World`]: its steps, its workloads, its checks, and
//! the invariants that always hold.
//!
//! Owns the meaning of every op and check of SCENARIOS.md, and these
//! always-on checks:
//! - `same_set_same_state`: at every step, no two members that have applied
//!   the same set of transactions (the same heads) hold different state roots;
//! - after the steps end (a workload's last call and a pause's end count)
//!   and the settle time, for each context:
//!   `converged(c)` — every live member that is not partitioned away has the
//!   same heads and state root, and no join or leave is left unfinished;
//!   `all_accepted(c)` — every transaction any live node accepted is on
//!   every live member; `acknowledged(c)` — every transaction a node
//!   reported to its caller as accepted is on every live member (in each
//!   partition group) that a node up at the end, which applied it at some
//!   time, can reach: also those whose maker left or crashed for good
//!   ([`crate::ledger`]);
//! - `invariant(c, method)`: every invariant view of a context's app holds
//!   on every member after every input that changed its state there
//!   (`crate::invariant`);
//! - `liveness`: after the last step that is not an `expect` and the last
//!   workload call, every live member converges within a bound derived
//!   from the configuration ([`crate::liveness`]); the report gives the
//!   time it took.
//!
//! A step that the engine refuses (a call by a node that is not a member, an
//! op on a crashed node) is not a failure: it is noted in the report.

use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Bound;
use std::time::Instant;

use ctx_core::node::Phase;
use ctx_core::runtime::wasm_from_source;
use ctx_core::tx::OrderKey;
use ctx_core::{Config, ContextId, Event, Hash, Key, MemberId, Time, TxId};
use foldhash::fast::FixedState;
use hashbrown::HashMap;
use rand_core::Rng;
use serde::Serialize;
use thiserror::Error;

use crate::invariant::Invariants;
use crate::ledger::Ledger;
use crate::liveness::{Liveness, Shape, bound_ms};
use crate::scenario::{
    AppRef, Arg, Check, Draw, Expected, MethodTemplate, Op, Scenario, encode_args,
};
use crate::trace::{Input, Recorder, TraceSink, WorldEvent};
use crate::world::{Action, Conditions, Happened, World};

/// The bundled apps, compiled into the binary so scenarios run from any
/// directory.
pub const BUNDLED: [(&str, &str); 3] = [
    ("kv", include_str!("../../scenarios/apps/kv.wat")),
    ("counter", include_str!("../../scenarios/apps/counter.wat")),
    ("bank", include_str!("../../scenarios/apps/bank.wat")),
];

/// How many distinct keys `$key` draws from, and the largest `$amount`.
pub const DRAW_KEYS: u64 = 16;
pub const DRAW_AMOUNT_MAX: u64 = 100;

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides the file's seed.
    pub seed: Option<u64>,
    /// Writes the trace here.
    pub trace: Option<std::path::PathBuf>,
    /// Keeps the trace (format 2, world frames and all) in memory, for a
    /// view of the run: `Report::trace` (when `trace` is not set).
    pub keep_trace: bool,
    /// Keeps an event log.
    pub verbose: bool,
    /// Engine configuration (timers, batches, stress hooks; a scenario's
    /// `stress = true` turns the hooks on).
    pub config: Config,
}

/// Input that cannot be run: exit status 2.
#[derive(Debug, Error)]
#[error("{path}:{line}: {message}")]
pub struct BadInput {
    pub path: String,
    pub line: usize,
    pub message: String,
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    pub at_ms: u64,
    pub detail: String,
    /// The step's line in the scenario file (0 for always-on checks).
    #[serde(skip)]
    pub line: usize,
}

/// One member's view of a context at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberReport {
    pub state_root: String,
    pub heads: Vec<String>,
    pub applied: usize,
    /// The members as this member sees them (an extension of the JSON
    /// object of SCENARIOS.md).
    pub members: Vec<String>,
    /// This node's phase: joining, member or leaving.
    pub phase: String,
    /// Transactions stable here (no transaction it lacks can sort before
    /// them; an extension of SCENARIOS.md's object).
    pub stable: usize,
    /// Who holds this member's stability back, if anything it holds is
    /// not stable yet.
    pub held_back_by: Option<HeldBackReport>,
}

/// Who holds a member's stability back, and since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HeldBackReport {
    pub member: String,
    /// `member` (not heard from since) or `invited` (not joined yet).
    pub reason: String,
    pub since_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContextReport {
    pub members: BTreeMap<String, MemberReport>,
}

/// The result of running one scenario (the `--json` object).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub passed: bool,
    pub trace_hash: String,
    pub sim_time_ms: u64,
    pub events: u64,
    /// How long after the last disturbance every live member converged
    /// (the liveness phase), when it did.
    pub converged_after_ms: Option<u64>,
    /// How many times a member rolled back an applied membership change
    /// (an invite, join or leave) to insert a transaction before it.
    pub membership_rollbacks: u64,
    pub checks: Vec<CheckResult>,
    pub contexts: BTreeMap<String, ContextReport>,
    #[serde(skip)]
    pub notes: Vec<String>,
    #[serde(skip)]
    pub log: Vec<String>,
    #[serde(skip)]
    pub wall_seconds: f64,
    #[serde(skip)]
    pub stats: crate::world::Stats,
    #[serde(skip)]
    pub path: String,
    /// The trace's bytes, with `RunOptions::keep_trace`.
    #[serde(skip)]
    pub trace: Option<Vec<u8>>,
}

impl Report {
    /// The command that reproduces this run.
    pub fn reproduce(&self) -> String {
        format!("ctx-sim run {} --seed {}", self.path, self.seed)
    }

    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| !c.passed)
    }
}

/// A workload in progress.
struct Workload {
    context: String,
    methods: Vec<MethodTemplate>,
    nodes: Option<Vec<usize>>,
}

struct Runner<'a> {
    scenario: &'a Scenario,
    world: World,
    node_index: BTreeMap<String, usize>,
    /// Compiled app bytes of each `create` step, by step index.
    apps: BTreeMap<usize, Vec<u8>>,
    contexts: BTreeMap<String, ContextId>,
    workloads: Vec<Workload>,
    checks: Vec<CheckResult>,
    notes: Vec<String>,
    /// (context, hash of heads) -> (state root, node): the
    /// same-set-same-state check.
    seen_states: HashMap<(ContextId, [u8; 32]), (Hash, usize), FixedState>,
    safety_violation: Option<(u64, String)>,
    /// The stable_prefix check: the longest stable prefix of each context
    /// seen on any member, how far each (node, context) was compared with
    /// it (and in which incarnation), and the first violation.
    stable_orders: BTreeMap<ContextId, Vec<TxId>>,
    stable_checked: HashMap<(usize, ContextId), (u64, usize), FixedState>,
    stable_violation: Option<(u64, String)>,
    /// The authentic check: the first transaction a member applied that no
    /// engine made (a forgery it accepted).
    forged: Option<(u64, String)>,
    /// Every transaction made, per context, with its maker; and per (node,
    /// context) where the look for the lowest one the node lacks stopped
    /// (in which incarnation, at how many accepted).
    made: BTreeMap<ContextId, BTreeMap<OrderKey, usize>>,
    lowest_lacked: HashMap<(usize, ContextId), LookedAt, FixedState>,
    /// Each copy's `Replica::membership_rollbacks_total` when last looked
    /// at, and the run's total (a copy replaced, by a restart or a forward,
    /// counts from zero again).
    membership_rollbacks: (BTreeMap<(usize, ContextId), u64>, u64),
    /// Every transaction acknowledged to its caller, and who applied it.
    ledger: Ledger,
    /// The apps' invariant views and what their checks found.
    invariants: Invariants,
    liveness: Liveness,
}

/// Where a look for the lowest transaction a node lacks stopped: in which
/// incarnation, with how many accepted, and where the next look starts (at
/// the one it lacked, or after the last one made when it lacked none).
type LookedAt = (u64, usize, Bound<OrderKey>);

/// Runs a scenario. `Err` only for input that cannot be run (exit 2); a
/// failed check is a report with `passed: false`.
pub fn run(scenario: &Scenario, options: &RunOptions) -> Result<Report, BadInput> {
    run_inspect(scenario, options, |_, _| ()).map(|(report, ())| report)
}

/// [`run`], with an assertion that fails inside the run (an engine or
/// simulator bug) reported as the failed check `panic`, its message the
/// detail, instead of unwinding through the caller: what a fuzz sweep and
/// the shrinker run, so that a panicking seed is a failure with its seed
/// (and shrinks like any other) rather than the end of the sweep.
pub fn run_catching(scenario: &Scenario, options: &RunOptions) -> Result<Report, BadInput> {
    catching(scenario, options, || run(scenario, options))
}

/// `run`'s outcome, or a report of its panic (see [`run_catching`]).
fn catching(
    scenario: &Scenario,
    options: &RunOptions,
    run: impl FnOnce() -> Result<Report, BadInput>,
) -> Result<Report, BadInput> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
    let payload = match outcome {
        Ok(result) => return result,
        Err(payload) => payload,
    };
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    Ok(Report {
        scenario: scenario.name.clone(),
        seed: options.seed.unwrap_or(scenario.seed),
        passed: false,
        trace_hash: String::new(),
        sim_time_ms: 0,
        events: 0,
        converged_after_ms: None,
        membership_rollbacks: 0,
        checks: vec![CheckResult {
            name: "panic".into(),
            passed: false,
            at_ms: 0,
            detail: message,
            line: 0,
        }],
        contexts: BTreeMap::new(),
        notes: Vec::new(),
        log: Vec::new(),
        wall_seconds: 0.0,
        stats: crate::world::Stats::default(),
        path: scenario.path.display().to_string(),
        trace: None,
    })
}

/// [`run`], and then `inspect` sees the world as the run left it, with the
/// id of each of the scenario's contexts: for a test that looks inside the
/// engines (the SDK's conformance test re-executes every member's copy
/// with another build of its app).
pub fn run_inspect<R>(
    scenario: &Scenario,
    options: &RunOptions,
    inspect: impl FnOnce(&World, &BTreeMap<String, ContextId>) -> R,
) -> Result<(Report, R), BadInput> {
    let started = Instant::now();
    let seed = options.seed.unwrap_or(scenario.seed);
    let path = scenario.path.display().to_string();
    let apps = load_apps(scenario)?;
    check_keys(scenario)?;
    let trace_file = match &options.trace {
        Some(file) => Some(TraceSink::File(File::create(file).map_err(|e| {
            BadInput {
                path: file.display().to_string(),
                line: 0,
                message: format!("cannot write the trace: {e}"),
            }
        })?)),
        None if options.keep_trace => Some(TraceSink::Memory),
        None => None,
    };
    let mut config = options.config.clone();
    config.stress |= scenario.stress;
    if let Some(interval) = scenario.checkpoint_interval {
        config.checkpoint_interval_min = interval;
    }
    let recorder = Recorder::new(&scenario.name, seed, &scenario.nodes, &config, trace_file);
    let conditions = Conditions {
        latency_ms: scenario.network.latency_ms,
        drop: scenario.network.drop,
        duplicate: scenario.network.duplicate,
    };
    let mut world = World::new(
        scenario.nodes.clone(),
        seed,
        conditions,
        config,
        recorder,
        options.verbose,
    );
    world.set_disk_faults(scenario.disk);
    let liars: Vec<usize> = scenario
        .byzantine
        .nodes
        .iter()
        .map(|name| {
            scenario
                .nodes
                .iter()
                .position(|node| node == name)
                .expect("the reader names only declared nodes")
        })
        .collect();
    world.set_byzantine(&liars, &scenario.byzantine);
    let mut runner = Runner {
        scenario,
        world,
        node_index: scenario
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect(),
        apps,
        contexts: BTreeMap::new(),
        workloads: Vec::new(),
        checks: Vec::new(),
        notes: Vec::new(),
        seen_states: HashMap::with_hasher(FixedState::with_seed(11)),
        safety_violation: None,
        stable_orders: BTreeMap::new(),
        stable_checked: HashMap::with_hasher(FixedState::with_seed(12)),
        stable_violation: None,
        forged: None,
        made: BTreeMap::new(),
        ledger: Ledger::new(scenario.nodes.len()),
        liveness: Liveness::new(
            scenario
                .steps
                .iter()
                .filter(|step| !matches!(step.op, Op::Expect(_)))
                .count(),
        ),
        lowest_lacked: HashMap::with_hasher(FixedState::with_seed(13)),
        membership_rollbacks: (BTreeMap::new(), 0),
        invariants: Invariants::default(),
    };
    for (index, step) in scenario.steps.iter().enumerate() {
        runner
            .world
            .schedule(Time::from_ms(step.at_ms), Action::Step(index));
    }
    let end = Time::from_ms(scenario.steps_end_ms().saturating_add(scenario.settle_ms));
    if !runner.liveness.is_disturbed() {
        runner.begin_quiet();
    }
    while let Some(happened) = runner.world.advance(end) {
        match happened {
            Happened::Action(action) => runner.act(action),
            Happened::Input(node) => runner.check_safety(node),
        }
        if runner.liveness.watching() && runner.all_converged() {
            runner.liveness.converged(runner.world.now());
        }
    }
    runner.final_checks();
    runner.world.check_vouched_signatures();
    runner.record_world_summary();
    if let Err(error) = runner.world.recorder.finish() {
        runner
            .notes
            .push(format!("the trace could not be written: {error}"));
    }
    let inspected = inspect(&runner.world, &runner.contexts);
    let trace = runner.world.recorder.take_memory();
    let mut report = runner.report(seed, path);
    report.trace = trace;
    report.wall_seconds = started.elapsed().as_secs_f64();
    Ok((report, inspected))
}

/// The result of an always-on check that keeps its first violation (when,
/// and what): passed at `now` if there was none.
fn violation_check(name: &str, violation: &Option<(u64, String)>, now: u64) -> CheckResult {
    let (passed, detail, at_ms) = match violation {
        None => (true, String::new(), now),
        Some((at, detail)) => (false, detail.clone(), *at),
    };
    CheckResult {
        name: name.into(),
        passed,
        at_ms,
        detail,
        line: 0,
    }
}

/// Compiles every app a `create` step names, so a bad app is bad input
/// (exit 2) before anything runs.
fn load_apps(scenario: &Scenario) -> Result<BTreeMap<usize, Vec<u8>>, BadInput> {
    let path = scenario.path.display().to_string();
    let mut apps = BTreeMap::new();
    for (index, step) in scenario.steps.iter().enumerate() {
        let Op::Create { app, .. } = &step.op else {
            continue;
        };
        let bad = |message: String| BadInput {
            path: path.clone(),
            line: step.line,
            message,
        };
        let source = match app {
            AppRef::Bundled(name) => BUNDLED
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, text)| text.as_bytes().to_vec())
                .ok_or_else(|| bad(format!("unknown bundled app {name:?}")))?,
            AppRef::Path(file) => std::fs::read(file)
                .map_err(|e| bad(format!("cannot read app {}: {e}", file.display())))?,
        };
        let wasm = wasm_from_source(&source).map_err(|e| bad(format!("invalid app: {e}")))?;
        apps.insert(index, wasm);
    }
    Ok(apps)
}

/// Keys of `value` checks must fit the bundled apps' 32-byte keys.
fn check_keys(scenario: &Scenario) -> Result<(), BadInput> {
    for step in &scenario.steps {
        if let Op::Expect(Check::Value { key, .. }) = &step.op {
            let bytes = key.to_bytes().unwrap_or_default();
            if bytes.len() > 32 {
                return Err(BadInput {
                    path: scenario.path.display().to_string(),
                    line: step.line,
                    message: format!("key of {} bytes is longer than 32", bytes.len()),
                });
            }
        }
    }
    Ok(())
}

impl Runner<'_> {
    fn node(&self, name: &str) -> usize {
        self.node_index[name]
    }

    fn context(&self, name: &str) -> Option<ContextId> {
        self.contexts.get(name).copied()
    }

    fn name_of_member(&self, member: &MemberId) -> String {
        self.world
            .node_of(member)
            .map_or_else(|| member.short(), |i| self.world.names[i].clone())
    }

    /// Gives a node a command; a refusal is noted, not failed.
    fn command(&mut self, node: usize, line: usize, input: Input) -> Option<String> {
        let what = input.name();
        let result = self.world.input(node, input);
        self.check_safety(node);
        match result {
            Ok(output) => output,
            Err(error) => {
                let note = format!(
                    "{}: line {line}: {what} by {} refused: {error}",
                    self.world.now(),
                    self.world.names[node]
                );
                self.notes.push(note);
                None
            }
        }
    }

    fn act(&mut self, action: Action) {
        if let Action::Step(index) = action
            && let Some(until) = self.paused_commander(index)
        {
            let step = &self.scenario.steps[index];
            self.notes.push(format!(
                "{}: line {}: {} waits for its node's pause to end at {until}",
                self.world.now(),
                step.line,
                step.op.name()
            ));
            self.world.schedule(until, action);
            return;
        }
        let disturbs = match action {
            Action::Step(index) => {
                self.step(index);
                !matches!(self.scenario.steps[index].op, Op::Expect(_))
            }
            Action::WorkloadCall(index) => {
                self.workload_call(index);
                true
            }
            // The world held the node's inputs back till now by itself.
            Action::Resume(_) => true,
        };
        if disturbs && self.liveness.disturbed() {
            self.begin_quiet();
        }
    }

    /// The end of the pause of the node that step `index` commands, if
    /// it is paused now: a frozen process takes its caller's request when
    /// it runs again, so the step waits till then (a crash or restart is
    /// done to the process, and does not wait).
    fn paused_commander(&self, index: usize) -> Option<Time> {
        let node = self.scenario.steps[index].op.commander()?;
        self.world.paused_until(self.node(node))
    }

    /// The last disturbance happened: the liveness phase begins, with the
    /// bound of the shape the run has now.
    fn begin_quiet(&mut self) {
        let mut shape = Shape {
            members: 0,
            history: 0,
            latency_max_ms: self.world.conditions().latency_ms.1,
            drop: self.world.conditions().drop,
            clock_rate_min_permille: (0..self.world.len())
                .filter(|n| self.world.is_up(*n))
                .map(|n| self.world.clock_rate(n))
                .min()
                .unwrap_or(crate::clock::RATE_EXACT),
        };
        for context in self.contexts.values() {
            let holders: Vec<usize> = (0..self.world.len())
                .filter(|n| self.phase(*n, context).is_some())
                .collect();
            shape.members = shape.members.max(holders.len());
            for holder in holders {
                if let Some(status) = self.world.engine(holder).and_then(|e| e.status(context)) {
                    shape.history = shape.history.max(status.applied as u64);
                }
            }
        }
        let bound = bound_ms(self.world.config(), &shape);
        self.liveness.quiet(self.world.now(), bound);
    }

    /// Every context converged (`converged(c)`), no holder is still
    /// leaving, and none still joining that can finish: one that a live
    /// member's membership names as invited and that asks a live member
    /// (a join nobody invited never finishes, nor one through a node that
    /// is not a member itself, which knows no member to send it to; neither
    /// need finish: SCENARIOS.md counts only members).
    fn all_converged(&self) -> bool {
        self.contexts.values().all(|context| {
            let members = self.live_members(context);
            let invited = |n: usize| {
                let id = self.world.member_id(n);
                members.iter().any(|&m| {
                    self.world
                        .engine(m)
                        .and_then(|e| e.replica(context))
                        .is_some_and(|r| {
                            r.status(&id) == Some(ctx_core::membership::MemberStatus::Invited)
                        })
                })
            };
            let asks_a_member = |n: usize| {
                let peers = self
                    .world
                    .engine(n)
                    .map(|e| e.catchup_peers(context))
                    .unwrap_or_default();
                members
                    .iter()
                    .any(|&m| peers.contains(&self.world.member_id(m)))
            };
            (0..self.world.len()).all(|n| match self.phase(n, context) {
                None | Some(Phase::Member) => true,
                Some(Phase::Joining) => !(invited(n) && asks_a_member(n)),
                Some(Phase::Leaving) => !self.leave_can_finish(n, context),
            }) && self.converged(context).is_ok()
        })
    }

    /// Whether leaver `n` can get the acknowledgements it waits for
    /// (`LEAVE_ACKS`, two, or every other member if fewer): enough of the
    /// members its copy names are up. One that waits on a member crashed
    /// for good waits for ever, as stability does, and need not finish.
    fn leave_can_finish(&self, n: usize, context: &ContextId) -> bool {
        let Some(replica) = self.world.engine(n).and_then(|e| e.replica(context)) else {
            return false;
        };
        let me = self.world.member_id(n);
        let others: Vec<MemberId> = replica
            .membership()
            .members()
            .filter(|m| *m != me)
            .collect();
        let up = (0..self.world.len())
            .filter(|&m| others.contains(&self.world.member_id(m)))
            .filter(|&m| self.world.engine(m).is_some())
            .count();
        up >= others.len().clamp(1, ctx_core::limits::LEAVE_ACKS)
    }

    fn step(&mut self, index: usize) {
        let step = &self.scenario.steps[index];
        let line = step.line;
        if self.world.recorder.keeps_world() {
            let event = WorldEvent::Step {
                at: self.world.now(),
                line: line as u32,
                op: step.op.name().to_owned(),
            };
            self.world.recorder.world(&event);
        }
        match &step.op {
            Op::Create { node, context, .. } => {
                let node = self.node(node);
                let app = self.apps[&index].clone();
                if let Some(id) = self.command(node, line, Input::Create { app }) {
                    let id = ContextId::from_hex(&id).expect("the world returns the id in hex");
                    self.invariants.created(context, id, &self.apps[&index]);
                    self.contexts.insert(context.clone(), id);
                }
            }
            Op::Invite {
                node,
                context,
                member,
            } => {
                let Some(context) = self.context_or_note(context, line) else {
                    return;
                };
                let member = self.world.member_id(self.node(member));
                self.command(self.node(node), line, Input::Invite { context, member });
            }
            Op::Join { node, context, via } => {
                let Some(context) = self.context_or_note(context, line) else {
                    return;
                };
                let via = self.world.member_id(self.node(via));
                self.command(self.node(node), line, Input::Join { context, via });
            }
            Op::Leave { node, context } => {
                let Some(context) = self.context_or_note(context, line) else {
                    return;
                };
                self.command(self.node(node), line, Input::Leave { context });
            }
            Op::Call {
                node,
                context,
                method,
                args,
            } => {
                let Some(context) = self.context_or_note(context, line) else {
                    return;
                };
                let input = self.encode(args);
                let method = method.clone();
                self.command(
                    self.node(node),
                    line,
                    Input::Call {
                        context,
                        method,
                        input,
                    },
                );
            }
            Op::Workload {
                context,
                calls,
                over_ms,
                methods,
                nodes,
            } => {
                let workload = self.workloads.len();
                self.liveness.scheduled(*calls as usize);
                self.workloads.push(Workload {
                    context: context.clone(),
                    methods: methods.clone(),
                    nodes: nodes
                        .as_ref()
                        .map(|names| names.iter().map(|n| self.node(n)).collect()),
                });
                let start = self.world.now();
                for _ in 0..*calls {
                    let offset = self.world.rng().next_u64() % over_ms.max(&1);
                    self.world
                        .schedule(start + offset, Action::WorkloadCall(workload));
                }
            }
            Op::Partition { groups } => {
                let groups: Vec<Vec<usize>> = groups
                    .iter()
                    .map(|g| g.iter().map(|n| self.node(n)).collect())
                    .collect();
                self.world.partition(&groups);
            }
            Op::Heal => self.world.heal(),
            Op::Crash { node } => {
                let node = self.node(node);
                if self.world.is_up(node) {
                    self.command(node, line, Input::Crash);
                } else {
                    self.notes.push(format!(
                        "{}: line {line}: crash of a node that is down",
                        self.world.now()
                    ));
                }
            }
            Op::Restart { node } => {
                let node = self.node(node);
                if self.world.is_up(node) {
                    self.notes.push(format!(
                        "{}: line {line}: restart of a node that is up",
                        self.world.now()
                    ));
                } else {
                    let seed = self.world.draw_seed();
                    self.command(node, line, Input::Restart { seed });
                }
            }
            Op::Clock {
                node,
                rate_permille,
            } => {
                let rate_permille = *rate_permille;
                self.command(self.node(node), line, Input::Clock { rate_permille });
            }
            Op::DiskFull { node, ms } => {
                let node = self.node(node);
                self.command(node, line, Input::DiskFull { ms: *ms });
                self.liveness.scheduled(1);
                let until = self.world.now() + *ms;
                self.world.schedule(until, Action::Resume(index));
            }
            Op::Pause { node, ms } => {
                let node = self.node(node);
                if self.world.is_up(node) {
                    self.command(node, line, Input::Pause { ms: *ms });
                    self.liveness.scheduled(1);
                    let until = self.world.now() + *ms;
                    self.world.schedule(until, Action::Resume(index));
                } else {
                    self.notes.push(format!(
                        "{}: line {line}: pause of a node that is down",
                        self.world.now()
                    ));
                }
            }
            Op::Network {
                latency_ms,
                drop,
                duplicate,
            } => {
                let mut conditions = self.world.conditions().clone();
                if let Some(latency) = latency_ms {
                    conditions.latency_ms = *latency;
                }
                if let Some(drop) = drop {
                    conditions.drop = *drop;
                }
                if let Some(duplicate) = duplicate {
                    conditions.duplicate = *duplicate;
                }
                self.world.set_conditions(conditions);
            }
            Op::Expect(check) => {
                let result = self.evaluate(check, line);
                self.checks.push(result);
            }
        }
    }

    fn context_or_note(&mut self, name: &str, line: usize) -> Option<ContextId> {
        let id = self.context(name);
        if id.is_none() {
            // The create was refused (its node was down): nothing to do.
            self.notes.push(format!(
                "{}: line {line}: context {name} was never created",
                self.world.now()
            ));
        }
        id
    }

    fn workload_call(&mut self, index: usize) {
        let Some(context) = self.context(&self.workloads[index].context) else {
            return;
        };
        let candidates: Vec<usize> = match &self.workloads[index].nodes {
            Some(nodes) => nodes.clone(),
            None => (0..self.world.len()).collect(),
        };
        let callers: Vec<usize> = candidates
            .into_iter()
            // A frozen member answers no client: they call another.
            .filter(|n| {
                self.phase(*n, &context) == Some(Phase::Member)
                    && self.world.paused_until(*n).is_none()
                    && self.world.disk_full_until(*n).is_none()
            })
            .collect();
        if callers.is_empty() {
            return;
        }
        let caller = callers[(self.world.rng().next_u64() % callers.len() as u64) as usize];
        let methods = &self.workloads[index].methods;
        let template =
            methods[(self.world.rng().next_u64() % methods.len() as u64) as usize].clone();
        let input = self.encode(&template.args);
        self.command(
            caller,
            0,
            Input::Call {
                context,
                method: template.method,
                input,
            },
        );
    }

    /// Encodes call arguments, drawing `$key`, `$value` and `$amount`.
    fn encode(&mut self, args: &[Arg]) -> Vec<u8> {
        let parts: Vec<Vec<u8>> = args
            .iter()
            .map(|arg| match arg {
                Arg::Draw(Draw::Key) => {
                    format!("k{}", self.world.rng().next_u64() % DRAW_KEYS).into_bytes()
                }
                Arg::Draw(Draw::Value) => {
                    format!("v{}", self.world.rng().next_u64() % 1_000_000).into_bytes()
                }
                Arg::Draw(Draw::Amount) => (1 + self.world.rng().next_u64() % DRAW_AMOUNT_MAX)
                    .to_le_bytes()
                    .to_vec(),
                other => other.to_bytes().expect("not a draw"),
            })
            .collect();
        encode_args(&parts)
    }

    fn phase(&self, node: usize, context: &ContextId) -> Option<Phase> {
        self.world.engine(node)?.phase(context)
    }

    /// Live nodes that are full members of `context`.
    fn live_members(&self, context: &ContextId) -> Vec<usize> {
        (0..self.world.len())
            .filter(|n| self.phase(*n, context) == Some(Phase::Member))
            .collect()
    }

    /// Adds what `node`'s copies rolled back across membership changes
    /// since they were last looked at (after every input).
    fn count_membership_rollbacks(&mut self, node: usize) {
        let Some(engine) = self.world.engine(node) else {
            return;
        };
        let (seen, total) = &mut self.membership_rollbacks;
        for context in engine.context_ids() {
            let Some(now) = engine
                .replica(&context)
                .map(|r| r.membership_rollbacks_total())
            else {
                continue;
            };
            let before = seen.insert((node, context), now).unwrap_or(0);
            *total += if now >= before { now - before } else { now };
        }
    }

    // ----- checks ----------------------------------------------------------------

    /// Same heads, same state root, whenever and wherever; and stable
    /// prefixes that agree and are never entered.
    fn check_safety(&mut self, node: usize) {
        self.count_membership_rollbacks(node);
        self.invariants.after_input(&mut self.world, node);
        self.check_stability(node);
        let Some(engine) = self.world.engine(node) else {
            return;
        };
        for context in engine.context_ids() {
            let Some(replica) = engine.replica(&context) else {
                continue;
            };
            let mut hasher = blake3::Hasher::new();
            for head in replica.heads() {
                hasher.update(head.as_bytes());
            }
            let heads = *hasher.finalize().as_bytes();
            let root = replica.state_root();
            match self.seen_states.entry((context, heads)) {
                hashbrown::hash_map::Entry::Vacant(slot) => {
                    slot.insert((root, node));
                }
                hashbrown::hash_map::Entry::Occupied(seen) => {
                    let (other_root, other) = *seen.get();
                    if other_root != root && self.safety_violation.is_none() {
                        let detail = format!(
                            "{} and {} applied the same transactions (heads {}) but hold state roots {} and {}",
                            self.world.names[other],
                            self.world.names[node],
                            hex_short(&heads),
                            other_root.short(),
                            root.short()
                        );
                        self.safety_violation = Some((self.world.now().as_ms(), detail));
                    }
                }
            }
        }
    }

    /// Whether `member` is one of the scenario's Byzantine nodes.
    fn is_byzantine(&self, member: &MemberId) -> bool {
        self.world.node_of(member).is_some_and(|node| {
            self.scenario
                .byzantine
                .nodes
                .contains(&self.world.names[node])
        })
    }

    /// The stable_prefix check, after every input: every transaction a
    /// node makes has a height at or above every other member's stable
    /// frontier (what the rule promises of every transaction a member
    /// lacks); no node refused a transaction for landing in its stable
    /// prefix (`Event::BelowStable`); and any two members' stable prefixes
    /// are one order (one a prefix of the other). Incremental: each member's prefix is
    /// compared from where it was last compared, so the cost follows what
    /// became stable.
    fn check_stability(&mut self, node: usize) {
        let lost = self.world.take_lost();
        if let Some(&(at, _)) = lost.first() {
            self.notes.push(format!(
                "{}: {}'s crash lost {} transaction record(s) not yet synced",
                self.world.now(),
                self.world.names[at],
                lost.len()
            ));
        }
        for (at, tx) in lost {
            self.ledger.lost(at, &tx);
        }
        for (maker, tx) in self.world.take_authored() {
            self.ledger.made(maker, &tx);
            let key = OrderKey {
                height: tx.body.height,
                id: tx.body.id(),
            };
            self.made
                .entry(tx.body.context)
                .or_default()
                .insert(key, maker);
            // A transaction can be made below where a look would start
            // next (made from an old state): every look starts at it then.
            for ((_, context), (_, _, from)) in self.lowest_lacked.iter_mut() {
                let beyond = match from {
                    Bound::Included(start) | Bound::Excluded(start) => *start >= key,
                    Bound::Unbounded => false,
                };
                if *context == tx.body.context && beyond {
                    *from = Bound::Included(key);
                }
            }
        }
        for (at, event) in self.world.take_events() {
            let detail = match event {
                Event::Applied { context, tx, .. } => {
                    if !self.ledger.knows(&tx) && self.forged.is_none() {
                        let detail = format!(
                            "{} applied transaction {} of {}, which no node made: it accepted a forgery",
                            self.world.names[at],
                            tx.short(),
                            self.contexts
                                .iter()
                                .find(|(_, id)| **id == context)
                                .map_or("a context", |(name, _)| name.as_str())
                        );
                        self.forged = Some((self.world.now().as_ms(), detail));
                    }
                    // A copy deleted in the same input was leaving.
                    let leaving = !matches!(
                        self.phase(at, &context),
                        Some(Phase::Member | Phase::Joining)
                    );
                    self.ledger.applied(at, &tx, leaving);
                    continue;
                }
                // A forgery (no engine made it) that would sort into the
                // stable prefix: its Byzantine author broke the promise, and
                // the member refused it, as it must.
                Event::BelowStable { tx, .. } if !self.ledger.knows(&tx) => {
                    self.notes.push(format!(
                        "{}: {} refused forged transaction {}: it would land in its stable prefix",
                        self.world.now(),
                        self.world.names[at],
                        tx.short()
                    ));
                    continue;
                }
                Event::BelowStable {
                    tx,
                    height,
                    frontier,
                    ..
                } => format!(
                    "{} was sent transaction {} of height {height}, below its stable frontier {frontier}: it would land in the stable prefix",
                    self.world.names[at],
                    tx.short()
                ),
                Event::CheckpointMismatch { member, height, .. } => format!(
                    "{}'s checkpoint at height {height} differs from the one {} vouched for",
                    self.world.names[at],
                    self.name_of_member(&member)
                ),
                Event::CheckpointRefused { from, reason, .. } if self.is_byzantine(&from) => {
                    self.notes.push(format!(
                        "{}: {} refused the checkpoint {} (byzantine) served: {reason}",
                        self.world.now(),
                        self.world.names[at],
                        self.name_of_member(&from)
                    ));
                    continue;
                }
                Event::CheckpointRefused { from, reason, .. } => format!(
                    "{} refused the checkpoint {} served: {reason}",
                    self.world.names[at],
                    self.name_of_member(&from)
                ),
                Event::TornRecordSkipped { record, damage } => {
                    self.notes.push(format!(
                        "{}: {} restarted past its torn last record (#{record}): {damage}",
                        self.world.now(),
                        self.world.names[at]
                    ));
                    continue;
                }
                _ => continue,
            };
            if self.stable_violation.is_none() {
                self.stable_violation = Some((self.world.now().as_ms(), detail));
            }
        }
        let Some(engine) = self.world.engine(node) else {
            return;
        };
        let incarnation = self.world.incarnation(node);
        for context in engine.context_ids() {
            let Some(replica) = engine.replica(&context) else {
                continue;
            };
            // Soundness itself: every transaction made anywhere that this
            // member lacks sorts at or above its stable frontier (what the
            // rule promises). The lowest one it lacks is found from where the
            // last look stopped: everything below that it held then, and a
            // copy only grows (a new copy starts the look over).
            let frontier = replica.stability().frontier();
            let (seen_incarnation, seen_accepted, from) = self
                .lowest_lacked
                .get(&(node, context))
                .copied()
                .unwrap_or((incarnation, 0, Bound::Unbounded));
            let from = if seen_incarnation == incarnation && seen_accepted <= replica.accepted() {
                from
            } else {
                Bound::Unbounded
            };
            let made = self.made.get(&context);
            let lacked = made.and_then(|made| {
                made.range((from, Bound::Unbounded))
                    .find(|(key, _)| !replica.covers(key))
            });
            if let Some((key, maker)) = lacked
                && key.height < frontier
                && self.stable_violation.is_none()
            {
                let detail = format!(
                    "{} lacks transaction {} of height {} (made by {}), below its stable frontier {frontier}",
                    self.world.names[node],
                    key.id.short(),
                    key.height,
                    self.world.names[*maker]
                );
                self.stable_violation = Some((self.world.now().as_ms(), detail));
            }
            // Next time: from the one it lacks, or after the last one made.
            let stop = match (lacked, made.and_then(|made| made.keys().next_back())) {
                (Some((key, _)), _) => Bound::Included(*key),
                (None, Some(last)) => Bound::Excluded(*last),
                (None, None) => Bound::Unbounded,
            };
            self.lowest_lacked
                .insert((node, context), (incarnation, replica.accepted(), stop));
            // Positions count from the genesis; a copy standing on a
            // checkpoint holds none below its cut (its checkpoint's digest
            // is what members compare there: `Event::CheckpointMismatch`).
            // A stable prefix is a claim of what the node holds, and on a
            // disk that may lose what it has not synced, holds only once
            // synced: anyone who reads it (a status, a view) is answered
            // after a sync (`crate::disk`). A node that crashes first may
            // lose a transaction it counted stable, and make one that sorts
            // before it, unseen. So it is compared once synced.
            if self.world.disk_faults().any() && self.world.disk(node).unsynced() > 0 {
                continue;
            }
            let base = replica.base_len();
            let stable_len = base + replica.stable_len();
            let checked = match self.stable_checked.get(&(node, context)) {
                Some((seen, checked)) if *seen == incarnation && *checked <= stable_len => *checked,
                _ => 0,
            };
            let checked = checked.max(base);
            let longest = self.stable_orders.entry(context).or_default();
            for (position, id) in
                (checked..stable_len).zip(replica.order_range(checked - base..stable_len - base))
            {
                match longest.get(position) {
                    None if position == longest.len() => longest.push(id),
                    // Beyond what any full copy showed so far: nothing to
                    // compare with yet.
                    None => break,
                    Some(other) if *other == id => {}
                    Some(other) => {
                        if self.stable_violation.is_none() {
                            let detail = format!(
                                "{}'s stable prefix has {} at position {position}, another member's has {}",
                                self.world.names[node],
                                id.short(),
                                other.short()
                            );
                            self.stable_violation = Some((self.world.now().as_ms(), detail));
                        }
                        break;
                    }
                }
            }
            self.stable_checked
                .insert((node, context), (incarnation, stable_len));
        }
    }

    fn evaluate(&self, check: &Check, line: usize) -> CheckResult {
        let now = self.world.now().as_ms();
        let label = check_label(check);
        let result = |passed: bool, detail: String| CheckResult {
            name: label.clone(),
            passed,
            at_ms: now,
            detail,
            line,
        };
        let Some(context) = self.context(check.context()) else {
            return result(
                false,
                format!("context {} was never created", check.context()),
            );
        };
        match check {
            Check::Converged { .. } => match self.converged(&context) {
                Ok(()) => result(true, String::new()),
                Err(detail) => result(false, detail),
            },
            Check::Value {
                key, equals, nodes, ..
            } => {
                let key = Key::padded(&key.to_bytes().unwrap_or_default())
                    .expect("checked before the run");
                let expected: Option<Vec<u8>> = match equals {
                    Expected::Absent => None,
                    Expected::Bytes(arg) => Some(arg.to_bytes().expect("not a draw")),
                };
                let readers: Vec<usize> = match nodes {
                    Some(names) => names.iter().map(|n| self.node(n)).collect(),
                    None => self.live_members(&context),
                };
                if readers.is_empty() {
                    return result(false, "no live member to read from".into());
                }
                for reader in readers {
                    let name = &self.world.names[reader];
                    let Some(engine) = self.world.engine(reader) else {
                        return result(false, format!("{name} is down"));
                    };
                    if engine.replica(&context).is_none() {
                        return result(false, format!("{name} holds no copy of the context"));
                    }
                    let actual = engine.get(&context, &key).map(<[u8]>::to_vec);
                    if actual != expected {
                        return result(
                            false,
                            format!(
                                "{name} reads {}, expected {}",
                                show_value(&actual),
                                show_value(&expected)
                            ),
                        );
                    }
                }
                result(true, String::new())
            }
            Check::Members { equals, .. } => {
                let mut expected: Vec<&str> = equals.iter().map(String::as_str).collect();
                expected.sort_unstable();
                let members = self.live_members(&context);
                if members.is_empty() {
                    return result(false, "no live member".into());
                }
                for member in members {
                    let status = self
                        .world
                        .engine(member)
                        .and_then(|e| e.status(&context))
                        .expect("a member");
                    let mut names: Vec<String> = status
                        .members
                        .iter()
                        .map(|m| self.name_of_member(m))
                        .collect();
                    names.sort_unstable();
                    if names != expected {
                        return result(
                            false,
                            format!(
                                "{} sees members [{}], expected [{}]",
                                self.world.names[member],
                                names.join(", "),
                                expected.join(", ")
                            ),
                        );
                    }
                }
                result(true, String::new())
            }
            Check::NotMember { node, .. } => {
                let index = self.node(node);
                let holds = match self.world.engine(index) {
                    Some(engine) => engine
                        .phase(&context)
                        .map(|p| format!("{p:?}").to_lowercase()),
                    None => self
                        .world
                        .contexts_on_disk(index)
                        .contains(&context)
                        .then(|| "on disk (down)".to_owned()),
                };
                match holds {
                    None => result(true, String::new()),
                    Some(phase) => result(false, format!("{node} still holds a copy ({phase})")),
                }
            }
            Check::Applied { node, at_least, .. } => {
                let applied = self
                    .world
                    .engine(self.node(node))
                    .and_then(|e| e.status(&context))
                    .map_or(0, |s| s.applied as u64);
                if applied >= *at_least {
                    result(true, String::new())
                } else {
                    result(
                        false,
                        format!("{node} applied {applied}, expected at least {at_least}"),
                    )
                }
            }
            Check::OnCheckpoint { node, .. } => {
                let status = self
                    .world
                    .engine(self.node(node))
                    .and_then(|e| e.status(&context));
                match status {
                    None => result(false, format!("{node} holds no copy of the context")),
                    Some(status) => match status.stands_on {
                        Some(_) => result(true, String::new()),
                        None => result(
                            false,
                            format!(
                                "{node} holds the whole history ({} transactions), on no checkpoint",
                                status.applied
                            ),
                        ),
                    },
                }
            }
            Check::HeldBack { node, by, .. } => {
                let status = self
                    .world
                    .engine(self.node(node))
                    .and_then(|e| e.status(&context));
                let Some(status) = status else {
                    return result(false, format!("{node} holds no copy of the context"));
                };
                match status.held_back_by {
                    Some(held) if self.name_of_member(&held.member) == *by => {
                        result(true, String::new())
                    }
                    Some(held) => result(
                        false,
                        format!(
                            "{node} reports {} holding its stability back, not {by}",
                            self.name_of_member(&held.member)
                        ),
                    ),
                    None => result(
                        false,
                        format!(
                            "{node} holds {} stable of {} applied, and nothing held back",
                            status.stable, status.applied
                        ),
                    ),
                }
            }
        }
    }

    /// Every live member that is not partitioned away (each partition group
    /// on its own) holds the same heads and state root.
    fn converged(&self, context: &ContextId) -> Result<(), String> {
        let mut by_group: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for member in self.live_members(context) {
            by_group
                .entry(self.world.group(member))
                .or_default()
                .push(member);
        }
        for members in by_group.values() {
            let first = members[0];
            let reference = self
                .world
                .engine(first)
                .and_then(|e| e.status(context))
                .expect("a member");
            for &other in &members[1..] {
                let status = self
                    .world
                    .engine(other)
                    .and_then(|e| e.status(context))
                    .expect("a member");
                if status.heads != reference.heads || status.state_root != reference.state_root {
                    return Err(format!(
                        "{} and {} differ: {} applied, root {}, heads [{}] vs {} applied, root {}, heads [{}]",
                        self.world.names[first],
                        self.world.names[other],
                        reference.applied,
                        reference.state_root.map_or("-".into(), |r| r.short()),
                        short_ids(&reference.heads),
                        status.applied,
                        status.state_root.map_or("-".into(), |r| r.short()),
                        short_ids(&status.heads),
                    ));
                }
            }
        }
        Ok(())
    }

    /// After the settle time: safety held throughout, and each context
    /// converged with nothing accepted left out and no join or leave stuck.
    fn final_checks(&mut self) {
        let now = self.world.now().as_ms();
        self.checks.push(violation_check(
            "same_set_same_state",
            &self.safety_violation,
            now,
        ));
        self.checks.push(violation_check(
            "stable_prefix",
            &self.stable_violation,
            now,
        ));
        self.checks
            .push(violation_check("authentic", &self.forged, now));
        let disk_full = |step: &crate::scenario::Step| matches!(step.op, Op::DiskFull { .. });
        if self.scenario.steps.iter().any(disk_full) {
            self.checks.push(violation_check(
                "stored_nothing_while_full",
                &self.world.stored_while_full,
                now,
            ));
        }
        for (node, mischief) in self.world.mischief() {
            let what: Vec<String> = mischief
                .tampered
                .iter()
                .map(|(behaviour, n)| format!("{} {n}", behaviour.name()))
                .collect();
            let total: u64 = mischief.tampered.values().sum();
            self.notes.push(format!(
                "{} (byzantine) tampered with {total} of the {} messages it sent{}{}",
                self.world.names[node],
                mischief.messages,
                if what.is_empty() { "" } else { ": " },
                what.join(", ")
            ));
        }
        self.checks.extend(self.invariants.results(now));
        let (passed, detail) = self.liveness.verdict(self.world.now());
        self.checks.push(CheckResult {
            name: "liveness".into(),
            passed,
            at_ms: now,
            detail,
            line: 0,
        });
        let contexts: Vec<(String, ContextId)> =
            self.contexts.iter().map(|(n, c)| (n.clone(), *c)).collect();
        for (name, context) in contexts {
            let holders: Vec<usize> = (0..self.world.len())
                .filter(|n| self.phase(*n, &context).is_some())
                .collect();
            if holders.is_empty() {
                continue;
            }
            let detail = self.converged(&context).err().unwrap_or_default();
            // Not a member, so not a failure (SCENARIOS.md): worth a note.
            for &holder in &holders {
                let phase = self.phase(holder, &context).expect("holder");
                if phase != Phase::Member {
                    self.notes.push(format!(
                        "{}: {} is still {} in {name} after the settle time",
                        self.world.now(),
                        self.world.names[holder],
                        format!("{phase:?}").to_lowercase()
                    ));
                }
            }
            self.checks.push(CheckResult {
                name: format!("converged({name})"),
                passed: detail.is_empty(),
                at_ms: now,
                detail,
                line: 0,
            });
            let detail = self
                .all_accepted(&context, &holders)
                .err()
                .unwrap_or_default();
            self.checks.push(CheckResult {
                name: format!("all_accepted({name})"),
                passed: detail.is_empty(),
                at_ms: now,
                detail,
                line: 0,
            });
            let detail = self.acknowledged(&context).err().unwrap_or_default();
            self.checks.push(CheckResult {
                name: format!("acknowledged({name})"),
                passed: detail.is_empty(),
                at_ms: now,
                detail,
                line: 0,
            });
        }
    }

    /// Every acknowledged transaction of `context` is on every live member
    /// in each partition group that holds a witness of it: a node up now
    /// that applied it at some time, and still holds the context or applied
    /// it before it authored its leave (`crate::ledger`).
    fn acknowledged(&self, context: &ContextId) -> Result<(), String> {
        // The durability contract itself: a crash loses only records that
        // nothing had revealed (`crate::disk`).
        if let Some(detail) = &self.world.revealed_lost {
            return Err(detail.clone());
        }
        let members = self.live_members(context);
        let replicas: Vec<(usize, &ctx_core::Replica)> = members
            .iter()
            .map(|&m| {
                let replica = self.world.engine(m).and_then(|e| e.replica(context));
                (m, replica.expect("a member holds a copy"))
            })
            .collect();
        for (made, witnesses) in self.ledger.of(*context) {
            let witnesses: Vec<usize> = witnesses
                .filter(|&(w, leaving)| {
                    self.world.is_up(w) && (!leaving || self.phase(w, context).is_some())
                })
                .map(|(w, _)| w)
                .collect();
            for &(member, replica) in &replicas {
                let group = self.world.group(member);
                if replica.covers(&made.key)
                    || !witnesses.iter().any(|&w| self.world.group(w) == group)
                {
                    continue;
                }
                let maker = &self.world.names[made.maker];
                let fate = if !self.world.is_up(made.maker) {
                    "crashed and not restarted"
                } else if self.phase(made.maker, context).is_none() {
                    "no longer holding the context"
                } else {
                    "up"
                };
                let names: Vec<&str> = witnesses
                    .iter()
                    .map(|&w| self.world.names[w].as_str())
                    .collect();
                return Err(format!(
                    "{} lacks transaction {} of height {} that {maker} ({fate}) made and acknowledged, applied by {} (up at the end)",
                    self.world.names[member],
                    made.key.id.short(),
                    made.key.height,
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Every transaction any live node accepted is on every live member in
    /// its partition group.
    fn all_accepted(&self, context: &ContextId, holders: &[usize]) -> Result<(), String> {
        let members = self.live_members(context);
        for &holder in holders {
            let Some(replica) = self.world.engine(holder).and_then(|e| e.replica(context)) else {
                continue;
            };
            for &member in &members {
                if self.world.group(member) != self.world.group(holder) || member == holder {
                    continue;
                }
                let theirs = self
                    .world
                    .engine(member)
                    .and_then(|e| e.replica(context))
                    .expect("a member");
                if let Some(missing) = replica
                    .order_keys()
                    .find(|key| !theirs.covers(key))
                    .map(|key| key.id)
                {
                    return Err(format!(
                        "{} lacks transaction {} that {} accepted",
                        self.world.names[member],
                        missing.short(),
                        self.world.names[holder]
                    ));
                }
            }
        }
        Ok(())
    }

    /// Into the trace, once the run is over: the scenario's name of each
    /// context and every check, with the nodes its detail names.
    fn record_world_summary(&mut self) {
        if !self.world.recorder.keeps_world() {
            return;
        }
        let mut events = Vec::new();
        for (name, id) in &self.contexts {
            events.push(WorldEvent::Context {
                name: name.clone(),
                id: *id,
            });
        }
        for check in &self.checks {
            events.push(WorldEvent::Check {
                at: Time::from_ms(check.at_ms),
                name: check.name.clone(),
                passed: check.passed,
                detail: check.detail.clone(),
                line: check.line as u32,
                nodes: named_nodes(
                    &self.world.names,
                    &format!("{} {}", check.name, check.detail),
                ),
            });
        }
        for event in &events {
            self.world.recorder.world(event);
        }
    }

    fn report(mut self, seed: u64, path: String) -> Report {
        let mut contexts = BTreeMap::new();
        for (name, context) in &self.contexts {
            let mut members = BTreeMap::new();
            for node in 0..self.world.len() {
                let Some(status) = self.world.engine(node).and_then(|e| e.status(context)) else {
                    continue;
                };
                let Some(root) = status.state_root else {
                    continue;
                };
                members.insert(
                    self.world.names[node].clone(),
                    MemberReport {
                        state_root: root.to_hex(),
                        heads: status.heads.iter().map(TxId::to_hex).collect(),
                        applied: status.applied,
                        members: status
                            .members
                            .iter()
                            .map(|m| self.name_of_member(m))
                            .collect(),
                        phase: format!("{:?}", status.phase).to_lowercase(),
                        stable: status.stable,
                        held_back_by: status.held_back_by.map(|held| HeldBackReport {
                            member: self.name_of_member(&held.member),
                            reason: format!("{:?}", held.reason).to_lowercase(),
                            since_ms: held.since.as_ms(),
                        }),
                    },
                );
            }
            contexts.insert(name.clone(), ContextReport { members });
        }
        let passed = self.checks.iter().all(|c| c.passed);
        Report {
            scenario: self.scenario.name.clone(),
            seed,
            passed,
            trace_hash: self.world.recorder.hash(),
            sim_time_ms: self.world.now().as_ms(),
            events: self.world.stats.events,
            converged_after_ms: self.liveness.converged_after_ms(),
            membership_rollbacks: self.membership_rollbacks.1,
            checks: std::mem::take(&mut self.checks),
            contexts,
            notes: std::mem::take(&mut self.notes),
            log: self.world.take_log(),
            wall_seconds: 0.0,
            stats: self.world.stats,
            path,
            trace: None,
        }
    }
}

/// A check's name in reports: `value(c1, colour)`, `converged(c1)`, ...
fn check_label(check: &Check) -> String {
    match check {
        Check::Value { context, key, .. } => format!("value({context}, {})", show_arg(key)),
        Check::NotMember { context, node } => format!("not_member({context}, {node})"),
        Check::Applied { context, node, .. } => format!("applied({context}, {node})"),
        Check::HeldBack { context, node, by } => format!("held_back({context}, {node}, {by})"),
        Check::OnCheckpoint { context, node } => format!("on_checkpoint({context}, {node})"),
        other => format!("{}({})", other.name(), other.context()),
    }
}

fn show_arg(arg: &Arg) -> String {
    match arg {
        Arg::Str(text) => text.clone(),
        Arg::U64(number) => number.to_string(),
        Arg::Hex(bytes) => format!("0x{}", hex::encode(bytes)),
        Arg::Int { ty, bits } => format!("{}{}", ty.format(*bits), ty.name()),
        Arg::Bool(value) => value.to_string(),
        Arg::Draw(draw) => draw.as_str().to_owned(),
    }
}

fn show_value(value: &Option<Vec<u8>>) -> String {
    match value {
        None => "nothing".into(),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}"),
            _ if bytes.len() == 8 => format!(
                "{} (u64)",
                u64::from_le_bytes(bytes.as_slice().try_into().expect("8"))
            ),
            _ => format!("0x{}", hex::encode(bytes)),
        },
    }
}

/// The nodes a check's text names: each node whose name appears in it as
/// a whole word (in the order of `names`).
pub fn named_nodes(names: &[String], text: &str) -> Vec<u32> {
    let words: std::collections::BTreeSet<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    names
        .iter()
        .enumerate()
        .filter(|(_, name)| words.contains(name.as_str()))
        .map(|(index, _)| index as u32)
        .collect()
}

fn short_ids(ids: &[TxId]) -> String {
    ids.iter().map(TxId::short).collect::<Vec<_>>().join(", ")
}

fn hex_short(bytes: &[u8; 32]) -> String {
    hex::encode(&bytes[..4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_in_a_run_is_a_failed_check_with_its_message() {
        let scenario = Scenario::parse(
            "name = \"x\"\nseed = 4\nnodes = [\"a\"]\n",
            std::path::Path::new("x.toml"),
        )
        .expect("valid");
        let options = RunOptions::default();
        let report = catching(&scenario, &options, || panic!("an engine assertion: {}", 7))
            .expect("a report");
        assert!(!report.passed);
        assert_eq!(report.seed, 4);
        assert_eq!(report.checks.len(), 1);
        assert_eq!(report.checks[0].name, "panic");
        assert_eq!(report.checks[0].detail, "an engine assertion: 7");
        let fine = catching(&scenario, &options, || run(&scenario, &options)).expect("runs");
        assert!(fine.passed);
    }
}
