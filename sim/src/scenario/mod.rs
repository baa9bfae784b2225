//! Scenario files: the typed model of one ([`Scenario`], [`Op`], [`Arg`],
//! [`Check`], ...), read from TOML by [`read`] and written back by [`write`].
//!
//! This module owns the scenario file format of `SCENARIOS.md` and its
//! validation. Every [`Scenario`] it hands out holds these invariants, so the
//! runner and the fuzzer never check them again:
//!
//! - `steps` are sorted by time; steps with the same time keep file order.
//! - every node named anywhere (a step's node, member, via, partition groups,
//!   workload nodes, check nodes and member lists) is declared in `nodes`,
//!   and `nodes` is non-empty with no name twice.
//! - every context a step uses is created by an earlier step (in sorted
//!   order), and no context is created twice.
//! - network probabilities lie in `[0, 1]`, latency ranges are ordered, a
//!   workload has at least one call, a nonzero span and at least one method,
//!   and no time exceeds [`TIME_MS_MAX`].
//! - `Arg::Draw` appears only in workload method templates.
//! - writing a scenario and reading it back gives an equal scenario:
//!   `Scenario::parse(&s.to_toml(), &s.path) == Ok(s)`.
//!
//! Reading never panics: any problem with the input is a [`ScenarioError`]
//! naming the file, the 1-based line and what is wrong.
//!
//! The module does not load apps: a path app is resolved relative to the
//! scenario file's directory but not opened, so the runner reports a missing
//! file when it loads it.

mod read;
mod write;

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

pub use crate::byzantine::{Behaviour, Byzantine};
pub use crate::disk::Faults;

/// The apps shipped in `scenarios/apps/`, named by `app = "kv"` and so on.
pub const BUNDLED_APPS: [&str; 3] = ["kv", "counter", "bank"];
/// The ops a step may name, in the order `SCENARIOS.md` lists them.
pub const OPS: [&str; 15] = read::OP_NAMES;
/// The checks an `expect` step may name.
pub const CHECKS: [&str; 7] = read::CHECK_NAMES;
/// Quiet time after the last step when the file gives no `settle`.
pub const SETTLE_MS_DEFAULT: u64 = 10_000;
/// One-way delay range when the file gives no `[network] latency_ms`.
pub const LATENCY_MS_DEFAULT: (u64, u64) = (1, 20);
/// Largest scenario file [`Scenario::from_file`] reads.
pub const FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Most nodes a scenario may declare.
pub const NODES_MAX: usize = 256;
/// Most steps a scenario may hold.
pub const STEPS_MAX: usize = 100_000;
/// Longest node or context name, in bytes.
pub const NAME_BYTES_MAX: usize = 64;
/// Most arguments in one call or method template.
pub const ARGS_MAX: usize = 64;
/// Most method templates in one workload.
pub const METHODS_MAX: usize = 64;
/// Most calls one workload step may generate.
pub const WORKLOAD_CALLS_MAX: u32 = 1_000_000;
/// Latest time (and longest span) a scenario may name: 365 days.
pub const TIME_MS_MAX: u64 = 365 * 24 * 60 * 60 * 1000;

/// One scenario file, validated (see the module doc for its invariants).
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub seed: u64,
    pub nodes: Vec<String>,
    /// Quiet time after the last step before the final checks.
    pub settle_ms: u64,
    /// The engine's stress hooks are on (rare but legal paths: tiny sync
    /// batches, early timers, redundant requests). The fuzzer sets it so a
    /// saved failure replays the same way. Optional, default false.
    pub stress: bool,
    /// The smallest distance, in heights, between two checkpoint cuts
    /// (`checkpoint_interval`, for every node): small values make short
    /// runs take checkpoints and join from them. Optional, default the
    /// engine's (`ctx_core::checkpoint::CHECKPOINT_INTERVAL_MIN`).
    pub checkpoint_interval: Option<u64>,
    /// Network conditions at the start of the run.
    pub network: Network,
    /// What a crash may do to a node's records not yet synced (the `[disk]`
    /// table, an extension of SCENARIOS.md). Optional, default none.
    pub disk: Faults,
    /// The nodes that lie on the wire, and how (the `[byzantine]` table, an
    /// extension of SCENARIOS.md, `crate::byzantine`). Optional, default
    /// none.
    pub byzantine: Byzantine,
    /// Sorted by `at_ms`; steps with the same time keep file order.
    pub steps: Vec<Step>,
    /// The file it came from (what [`Scenario::parse`] was given).
    pub path: PathBuf,
}

/// Network conditions: the initial ones, or the ones a `network` step sets.
/// Serialized as the `[network]` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Network {
    /// Uniform range `(low, high)` of one-way delay, `low <= high`.
    pub latency_ms: (u64, u64),
    /// Probability a message is lost, in `[0, 1]`.
    pub drop: f64,
    /// Probability a message is delivered twice, in `[0, 1]`.
    pub duplicate: f64,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            latency_ms: LATENCY_MS_DEFAULT,
            drop: 0.0,
            duplicate: 0.0,
        }
    }
}

/// One `[[step]]`.
///
/// Equality ignores `line`: two steps are equal when they do the same thing
/// at the same time, wherever they were written. This is what lets
/// `parse(to_toml(s)) == s` hold.
#[derive(Debug, Clone)]
pub struct Step {
    pub at_ms: u64,
    /// 1-based line of the step's `[[step]]` header in its file.
    pub line: usize,
    pub op: Op,
}

impl PartialEq for Step {
    fn eq(&self, other: &Self) -> bool {
        self.at_ms == other.at_ms && self.op == other.op
    }
}

/// What a step does. Node and context names are the file's own names.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Create {
        node: String,
        context: String,
        app: AppRef,
    },
    Invite {
        node: String,
        context: String,
        member: String,
    },
    Join {
        node: String,
        context: String,
        via: String,
    },
    Leave {
        node: String,
        context: String,
    },
    Call {
        node: String,
        context: String,
        method: String,
        args: Vec<Arg>,
    },
    Workload {
        context: String,
        calls: u32,
        over_ms: u64,
        methods: Vec<MethodTemplate>,
        nodes: Option<Vec<String>>,
    },
    Partition {
        groups: Vec<Vec<String>>,
    },
    Heal,
    Crash {
        node: String,
    },
    Restart {
        node: String,
    },
    /// From now on `node`'s clock runs at `rate_permille` thousandths of
    /// true time (written `rate = 0.5`; see `crate::clock`).
    Clock {
        node: String,
        rate_permille: u32,
    },
    /// `node` is frozen for `ms`: it takes no input meanwhile, and what
    /// reaches it waits (written `for = "5s"`).
    Pause {
        node: String,
        ms: u64,
    },
    /// `node`'s disk is full for `ms`: it stores nothing meanwhile, so it
    /// refuses its commands and takes in only the messages it can answer
    /// without storing (written `for = "5s"`).
    DiskFull {
        node: String,
        ms: u64,
    },
    /// Changes only the conditions given; at least one is `Some`.
    Network {
        latency_ms: Option<(u64, u64)>,
        drop: Option<f64>,
        duplicate: Option<f64>,
    },
    Expect(Check),
}

impl Op {
    /// The op's name as written in a file (`"create"`, `"expect"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Invite { .. } => "invite",
            Op::Join { .. } => "join",
            Op::Leave { .. } => "leave",
            Op::Call { .. } => "call",
            Op::Workload { .. } => "workload",
            Op::Partition { .. } => "partition",
            Op::Heal => "heal",
            Op::Crash { .. } => "crash",
            Op::Restart { .. } => "restart",
            Op::Clock { .. } => "clock",
            Op::Pause { .. } => "pause",
            Op::DiskFull { .. } => "disk_full",
            Op::Network { .. } => "network",
            Op::Expect(_) => "expect",
        }
    }

    /// The node a command op is given to, as a caller gives a node a
    /// request (not a fault done to it, nor a check of it).
    pub fn commander(&self) -> Option<&str> {
        match self {
            Op::Create { node, .. }
            | Op::Invite { node, .. }
            | Op::Join { node, .. }
            | Op::Leave { node, .. }
            | Op::Call { node, .. } => Some(node),
            _ => None,
        }
    }

    /// The context the op names, if any.
    pub fn context(&self) -> Option<&str> {
        match self {
            Op::Create { context, .. }
            | Op::Invite { context, .. }
            | Op::Join { context, .. }
            | Op::Leave { context, .. }
            | Op::Call { context, .. }
            | Op::Workload { context, .. } => Some(context),
            Op::Expect(check) => Some(check.context()),
            Op::Partition { .. }
            | Op::Heal
            | Op::Crash { .. }
            | Op::Restart { .. }
            | Op::Clock { .. }
            | Op::Pause { .. }
            | Op::DiskFull { .. }
            | Op::Network { .. } => None,
        }
    }
}

/// The app a `create` step runs.
#[derive(Debug, Clone, PartialEq)]
pub enum AppRef {
    /// One of [`BUNDLED_APPS`].
    Bundled(String),
    /// A `.wat` or `.wasm` file, already joined to the scenario file's
    /// directory. Not checked to exist: the runner loads it.
    Path(PathBuf),
}

/// One entry of a workload's `methods`, serialized as `{ method, args }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodTemplate {
    pub method: String,
    pub args: Vec<Arg>,
}

/// One call argument (SCENARIOS.md "Arguments").
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A string, passed as its UTF-8 bytes. Written `"text"`, or
    /// `{str = "$text"}` when it starts with `$`.
    Str(String),
    /// An integer, passed as 8 little-endian bytes.
    U64(u64),
    /// Raw bytes, written `{hex = "00ff"}`.
    Hex(Vec<u8>),
    /// An integer of a named type, written `{u32 = 7}` or `{i64 = -2}`
    /// (128-bit ones beyond 64 bits as a decimal string): its fixed-width
    /// little-endian bytes, the encoding of `docs/ABI.md` that an SDK app's
    /// parameters of that type decode. `bits` is that value in two's
    /// complement, truncated to the type's width.
    Int { ty: IntType, bits: u128 },
    /// A boolean, written `{bool = true}`: one byte, 1 or 0.
    Bool(bool),
    /// `"$key"`, `"$value"` or `"$amount"`: drawn by the runner for each
    /// call of a workload.
    Draw(Draw),
}

impl Arg {
    /// The bytes this argument passes, or `None` for a draw.
    pub fn to_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Arg::Str(text) => Some(text.as_bytes().to_vec()),
            Arg::U64(number) => Some(number.to_le_bytes().to_vec()),
            Arg::Hex(bytes) => Some(bytes.clone()),
            Arg::Int { ty, bits } => Some(bits.to_le_bytes()[..ty.width_bytes()].to_vec()),
            Arg::Bool(value) => Some(vec![u8::from(*value)]),
            Arg::Draw(_) => None,
        }
    }
}

/// The integer types an argument may name (those of an SDK app's ABI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntType {
    U8,
    U16,
    U32,
    U64,
    U128,
    I8,
    I16,
    I32,
    I64,
    I128,
}

impl IntType {
    pub const ALL: [IntType; 10] = [
        IntType::U8,
        IntType::U16,
        IntType::U32,
        IntType::U64,
        IntType::U128,
        IntType::I8,
        IntType::I16,
        IntType::I32,
        IntType::I64,
        IntType::I128,
    ];

    /// As written in a file (and in an ABI): `u8`, ..., `i128`.
    pub fn name(self) -> &'static str {
        match self {
            IntType::U8 => "u8",
            IntType::U16 => "u16",
            IntType::U32 => "u32",
            IntType::U64 => "u64",
            IntType::U128 => "u128",
            IntType::I8 => "i8",
            IntType::I16 => "i16",
            IntType::I32 => "i32",
            IntType::I64 => "i64",
            IntType::I128 => "i128",
        }
    }

    pub fn from_name(name: &str) -> Option<IntType> {
        IntType::ALL.into_iter().find(|ty| ty.name() == name)
    }

    pub fn width_bytes(self) -> usize {
        match self {
            IntType::U8 | IntType::I8 => 1,
            IntType::U16 | IntType::I16 => 2,
            IntType::U32 | IntType::I32 => 4,
            IntType::U64 | IntType::I64 => 8,
            IntType::U128 | IntType::I128 => 16,
        }
    }

    fn signed(self) -> bool {
        matches!(
            self,
            IntType::I8 | IntType::I16 | IntType::I32 | IntType::I64 | IntType::I128
        )
    }

    /// The value of `text` (decimal, `_` allowed) as this type's bits, or
    /// why it is not one.
    pub fn parse(self, text: &str) -> Result<u128, String> {
        let digits: String = text.chars().filter(|&c| c != '_').collect();
        let width_bits = 8 * self.width_bytes() as u32;
        if self.signed() {
            let min = i128::MIN >> (128 - width_bits);
            let max = i128::MAX >> (128 - width_bits);
            match digits.parse::<i128>() {
                Ok(value) if (min..=max).contains(&value) => {
                    Ok(value as u128 & (u128::MAX >> (128 - width_bits)))
                }
                _ => Err(format!(
                    "{text} is not an {} (a whole number from {min} to {max})",
                    self.name()
                )),
            }
        } else {
            let max = u128::MAX >> (128 - width_bits);
            match digits.parse::<u128>() {
                Ok(value) if value <= max => Ok(value),
                _ => Err(format!(
                    "{text} is not a {} (a whole number from 0 to {max})",
                    self.name()
                )),
            }
        }
    }

    /// The decimal text of `bits` of this type.
    pub fn format(self, bits: u128) -> String {
        if self.signed() {
            let shift = 128 - 8 * self.width_bytes() as u32;
            (((bits << shift) as i128) >> shift).to_string()
        } else {
            bits.to_string()
        }
    }
}

/// What a workload argument draws at random.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    Key,
    Value,
    Amount,
}

impl Draw {
    /// As written in a file: `"$key"`, `"$value"` or `"$amount"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Draw::Key => "$key",
            Draw::Value => "$value",
            Draw::Amount => "$amount",
        }
    }

    fn from_text(text: &str) -> Option<Draw> {
        match text {
            "$key" => Some(Draw::Key),
            "$value" => Some(Draw::Value),
            "$amount" => Some(Draw::Amount),
            _ => None,
        }
    }
}

/// What an `expect` step checks (SCENARIOS.md "Checks").
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    Converged {
        context: String,
    },
    Value {
        context: String,
        /// Never a draw.
        key: Arg,
        equals: Expected,
        /// `None`: every live member.
        nodes: Option<Vec<String>>,
    },
    Members {
        context: String,
        equals: Vec<String>,
    },
    NotMember {
        context: String,
        node: String,
    },
    Applied {
        context: String,
        node: String,
        at_least: u64,
    },
    /// `node` reports that `by` holds its stability back (an extension of
    /// SCENARIOS.md).
    HeldBack {
        context: String,
        node: String,
        by: String,
    },
    /// `node`'s copy stands on a checkpoint (it joined or restarted from
    /// one) and holds none of the history below its cut (an extension of
    /// SCENARIOS.md).
    OnCheckpoint {
        context: String,
        node: String,
    },
}

impl Check {
    /// The check's name as written in a file (`"converged"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Check::Converged { .. } => "converged",
            Check::Value { .. } => "value",
            Check::Members { .. } => "members",
            Check::NotMember { .. } => "not_member",
            Check::Applied { .. } => "applied",
            Check::HeldBack { .. } => "held_back",
            Check::OnCheckpoint { .. } => "on_checkpoint",
        }
    }

    /// The context the check is about.
    pub fn context(&self) -> &str {
        match self {
            Check::Converged { context }
            | Check::Value { context, .. }
            | Check::Members { context, .. }
            | Check::NotMember { context, .. }
            | Check::Applied { context, .. }
            | Check::HeldBack { context, .. }
            | Check::OnCheckpoint { context, .. } => context,
        }
    }
}

/// What a `value` check expects to read.
#[derive(Debug, Clone, PartialEq)]
pub enum Expected {
    /// `equals = false`: the key holds nothing.
    Absent,
    /// A string, an integer or `{hex}`; never a draw.
    Bytes(Arg),
}

/// Why a scenario file was refused: the file, the 1-based line (0 when no
/// line applies, as for an unreadable file) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ScenarioError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl ScenarioError {
    fn render(&self) -> String {
        if self.line == 0 {
            format!("{}: {}", self.path.display(), self.message)
        } else {
            format!("{}:{}: {}", self.path.display(), self.line, self.message)
        }
    }
}

/// A transaction's input: each argument as a 4-byte little-endian length
/// followed by its bytes.
pub fn encode_args(args: &[Vec<u8>]) -> Vec<u8> {
    ctx_core::runtime::encode_args(args)
}

/// Parses a duration such as `"250ms"`, `"5s"`, `"2m"` or `"1.5s"` into
/// milliseconds. The result must be a whole number of milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    const EXAMPLE: &str = "a number and a unit, such as \"250ms\", \"5s\" or \"2m\"";
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("the duration is empty; expected {EXAMPLE}"));
    }
    if text.starts_with('-') {
        return Err(format!("{text:?} is negative; times cannot be negative"));
    }
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let unit = unit.trim_start();
    if number.is_empty() {
        return Err(format!("{text:?} is not a duration; expected {EXAMPLE}"));
    }
    let ms_per_unit: u128 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "" => {
            return Err(format!(
                "{text:?} has no unit; write {number}ms, {number}s or {number}m"
            ));
        }
        other => {
            return Err(format!(
                "{text:?} has unknown unit {other:?} (expected ms, s or m)"
            ));
        }
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let not_a_number = || format!("{text:?} is not a duration; expected {EXAMPLE}");
    if whole.is_empty() {
        return Err(not_a_number());
    }
    let fraction = match fraction {
        Some(digits) if digits.is_empty() || digits.contains('.') => return Err(not_a_number()),
        Some(digits) => digits.trim_end_matches('0'),
        None => "",
    };
    let too_large = || format!("{text:?} is too large");
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut ms = whole.checked_mul(ms_per_unit).ok_or_else(too_large)?;
    if !fraction.is_empty() {
        let not_whole_ms = || format!("{text:?} is not a whole number of milliseconds");
        // A fraction longer than this can never give whole milliseconds:
        // its last digit is nonzero and a unit is at most 60_000 ms.
        if fraction.len() > 18 {
            return Err(not_whole_ms());
        }
        let numerator: u128 = fraction.parse().map_err(|_| not_a_number())?;
        let denominator = 10u128.pow(fraction.len() as u32);
        let scaled = numerator * ms_per_unit;
        if !scaled.is_multiple_of(denominator) {
            return Err(not_whole_ms());
        }
        ms = ms.checked_add(scaled / denominator).ok_or_else(too_large)?;
    }
    u64::try_from(ms).map_err(|_| too_large())
}

impl Scenario {
    /// When the steps are over: the latest time a step acts until, a
    /// workload's last call (`at + over`) and a pause's end (`at + for`)
    /// included. The settle time counts from here, so that the final
    /// checks always follow a quiet time (a workload given as the last
    /// step, or shrunk into one, still calls during it otherwise).
    pub fn steps_end_ms(&self) -> u64 {
        self.steps
            .iter()
            .map(|step| {
                let lasts = match &step.op {
                    Op::Workload { over_ms, .. } => *over_ms,
                    Op::Pause { ms, .. } | Op::DiskFull { ms, .. } => *ms,
                    _ => 0,
                };
                step.at_ms.saturating_add(lasts)
            })
            .max()
            .unwrap_or(0)
    }

    /// Reads and validates the scenario file at `path`.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = read::read_text(path)?;
        Scenario::parse(&text, path)
    }

    /// Validates a scenario given as text. `path` names it in errors, and
    /// app paths are resolved relative to its directory.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let scenario = read::parse(text, path)?;
        debug_assert!(scenario.steps.is_sorted_by_key(|step| step.at_ms));
        Ok(scenario)
    }

    /// Writes the scenario as a file that parses back to an equal scenario.
    ///
    /// App paths are written relative to the directory of `self.path`, so
    /// `Scenario::parse(&s.to_toml(), &s.path) == Ok(s)`. To save a scenario
    /// elsewhere, set `path` to where it will be written first.
    pub fn to_toml(&self) -> String {
        write::to_toml(self)
    }
}

/// A duration as a file writes it: whole seconds as `"5s"`, else `"250ms"`;
/// [`parse_duration_ms`] reads it back.
fn format_duration(ms: u64) -> String {
    if ms != 0 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `target` as seen from `base`, so that `base.join(result)` names the same
/// file; exactly what follows `base` when `target` lies under it.
fn relative_path(target: &Path, base: &Path) -> PathBuf {
    let target = normalize(target);
    let base = normalize(base);
    if let Ok(rest) = target.strip_prefix(&base) {
        return rest.to_path_buf();
    }
    if target.is_absolute() && !base.is_absolute() {
        return target;
    }
    if let Some(relative) = climb(&target, &base) {
        return relative;
    }
    // A relative path against an absolute one, or a base that starts with
    // `..`: compare both from the current directory.
    match (std::path::absolute(&target), std::path::absolute(&base)) {
        (Ok(absolute_target), Ok(absolute_base)) => {
            climb(&normalize(&absolute_target), &normalize(&absolute_base)).unwrap_or(target)
        }
        _ => target,
    }
}

/// `..` out of `base` to the part it shares with `target`, then down to
/// `target`; `None` when that needs the names of directories above `base`.
fn climb(target: &Path, base: &Path) -> Option<PathBuf> {
    if target.is_absolute() != base.is_absolute() {
        return None;
    }
    let target_parts: Vec<Component<'_>> = target.components().collect();
    let base_parts: Vec<Component<'_>> = base.components().collect();
    let common = target_parts
        .iter()
        .zip(&base_parts)
        .take_while(|(a, b)| a == b)
        .count();
    if !base_parts[common..]
        .iter()
        .all(|part| matches!(part, Component::Normal(_)))
    {
        return None;
    }
    let mut relative = PathBuf::new();
    for _ in common..base_parts.len() {
        relative.push("..");
    }
    for part in &target_parts[common..] {
        relative.push(part);
    }
    Some(relative)
}

/// `path` with `.` dropped and each `name/..` pair removed, without asking
/// the file system (as Cargo does for manifest paths), so the same file
/// reached through different spellings gives equal paths.
fn normalize(path: &Path) -> PathBuf {
    let mut parts: Vec<Component<'_>> = Vec::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => match parts.last() {
                Some(Component::Normal(_)) => {
                    parts.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => parts.push(part),
            },
            _ => parts.push(part),
        }
    }
    parts.iter().collect()
}

impl fmt::Display for Draw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests;
