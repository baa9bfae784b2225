//! Scenario files: reading them into a typed [`Scenario`] and writing a
//! [`Scenario`] back out ([`Scenario::to_toml`]).
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
//!
//! Reading never panics: any problem with the input is a [`ScenarioError`]
//! naming the file, the 1-based line and what is wrong.
//!
//! The module does not load apps: a path app is resolved relative to the
//! scenario file's directory but not opened, so the runner reports a missing
//! file when it loads it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

/// The apps shipped in `scenarios/apps/`, named by `app = "kv"` and so on.
pub const BUNDLED_APPS: [&str; 3] = ["kv", "counter", "bank"];
/// The ops a step may name, in the order `SCENARIOS.md` lists them.
pub const OPS: [&str; 12] = [
    "create",
    "invite",
    "join",
    "leave",
    "call",
    "workload",
    "partition",
    "heal",
    "crash",
    "restart",
    "network",
    "expect",
];
/// The checks an `expect` step may name.
pub const CHECKS: [&str; 7] = [
    "converged",
    "value",
    "members",
    "not_member",
    "applied",
    "held_back",
    "on_checkpoint",
];
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
    /// Sorted by `at_ms`; steps with the same time keep file order.
    pub steps: Vec<Step>,
    /// The file it came from (what [`Scenario::parse`] was given).
    pub path: PathBuf,
}

/// Network conditions: the initial ones, or the ones a `network` step sets.
#[derive(Debug, Clone, PartialEq)]
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
            Op::Network { .. } => "network",
            Op::Expect(_) => "expect",
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

/// One entry of a workload's `methods`.
#[derive(Debug, Clone, PartialEq)]
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
    /// Reads and validates the scenario file at `path`.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = read_text(path)?;
        Scenario::parse(&text, path)
    }

    /// Validates a scenario given as text. `path` names it in errors, and
    /// app paths are resolved relative to its directory.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let lines = LineIndex::new(text);
        let root = DeTable::parse(text).map_err(|error| ScenarioError {
            path: path.to_path_buf(),
            line: error.span().map_or(1, |span| lines.line(span.start)),
            message: syntax_message(&error, text, &lines),
        })?;
        let mut reader = Reader {
            path,
            dir: path.parent().unwrap_or(Path::new("")).to_path_buf(),
            lines: &lines,
            nodes: Vec::new(),
        };
        let scenario = reader
            .read_scenario(root.get_ref())
            .map_err(|bad| ScenarioError {
                path: path.to_path_buf(),
                line: lines.line(bad.at),
                message: bad.message,
            })?;
        debug_assert!(scenario.steps.is_sorted_by_key(|step| step.at_ms));
        Ok(scenario)
    }

    /// Writes the scenario as a file that parses back to an equal scenario.
    ///
    /// App paths are written relative to the directory of `self.path`, so
    /// `Scenario::parse(&s.to_toml(), &s.path) == Ok(s)`. To save a scenario
    /// elsewhere, set `path` to where it will be written first.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        push_field(&mut out, "name", &quote(&self.name));
        if !self.description.is_empty() {
            push_field(&mut out, "description", &quote(&self.description));
        }
        push_field(&mut out, "seed", &self.seed.to_string());
        push_field(&mut out, "nodes", &quote_list(&self.nodes));
        push_field(&mut out, "settle", &quote(&format_duration(self.settle_ms)));
        if self.stress {
            push_field(&mut out, "stress", "true");
        }
        if let Some(interval) = self.checkpoint_interval {
            push_field(&mut out, "checkpoint_interval", &interval.to_string());
        }
        out.push_str("\n[network]\n");
        push_field(
            &mut out,
            "latency_ms",
            &format_latency(self.network.latency_ms),
        );
        push_field(&mut out, "drop", &format_float(self.network.drop));
        push_field(&mut out, "duplicate", &format_float(self.network.duplicate));
        let dir = self.path.parent().unwrap_or(Path::new(""));
        for step in &self.steps {
            out.push_str("\n[[step]]\n");
            push_field(&mut out, "at", &quote(&format_duration(step.at_ms)));
            push_field(&mut out, "op", &quote(step.op.name()));
            write_op(&mut out, &step.op, dir);
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Reading the file.

fn read_text(path: &Path) -> Result<String, ScenarioError> {
    let fail = |line: usize, message: String| ScenarioError {
        path: path.to_path_buf(),
        line,
        message,
    };
    let file = std::fs::File::open(path)
        .map_err(|error| fail(0, format!("cannot open the scenario file: {error}")))?;
    let mut bytes = Vec::new();
    file.take(FILE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| fail(0, format!("cannot read the scenario file: {error}")))?;
    if bytes.len() as u64 > FILE_BYTES_MAX {
        return Err(fail(
            0,
            format!("the file is larger than {FILE_BYTES_MAX} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|error| {
        let valid = error.utf8_error().valid_up_to();
        let bytes = error.as_bytes();
        let line = 1 + bytes[..valid].iter().filter(|&&b| b == b'\n').count();
        fail(line, "the file is not valid UTF-8 text".to_string())
    })
}

/// Maps byte offsets to 1-based lines.
struct LineIndex {
    /// Byte offset where each line starts; the first is 0.
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset).max(1)
    }

    fn column(&self, text: &str, offset: usize) -> usize {
        let start = self.starts[self.line(offset) - 1];
        match text.get(start..offset) {
            Some(before) => before.chars().count() + 1,
            None => offset.saturating_sub(start) + 1,
        }
    }
}

fn syntax_message(error: &toml::de::Error, text: &str, lines: &LineIndex) -> String {
    let Some(span) = error.span() else {
        return format!("invalid TOML: {}", error.message());
    };
    let column = lines.column(text, span.start);
    let snippet = text.get(span.clone()).unwrap_or("");
    if error.message() == "duplicate key" && !snippet.is_empty() {
        let hint = if snippet.trim() == "step" {
            "; write [[step]], with two brackets, before each step"
        } else {
            ""
        };
        return format!("invalid TOML: {snippet} is given twice{hint}");
    }
    format!("invalid TOML: {} (column {column})", error.message())
}

/// A problem found while reading, at a byte offset; made into a
/// [`ScenarioError`] once the line is known.
struct Bad {
    at: usize,
    message: String,
}

fn bad(at: usize, message: impl Into<String>) -> Bad {
    Bad {
        at,
        message: message.into(),
    }
}

type Res<T> = Result<T, Bad>;
type Value<'i> = Spanned<DeValue<'i>>;

fn start(value: &Value<'_>) -> usize {
    value.span().start
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn wrong_type(value: &Value<'_>, what: &str, expected: &str) -> Bad {
    bad(
        start(value),
        format!(
            "{what} must be {expected}, not {}",
            type_name(value.get_ref())
        ),
    )
}

fn expect_str<'a>(value: &'a Value<'_>, what: &str) -> Res<&'a str> {
    match value.get_ref() {
        DeValue::String(text) => Ok(text),
        _ => Err(wrong_type(value, what, "a string")),
    }
}

fn expect_u64(value: &Value<'_>, what: &str) -> Res<u64> {
    let DeValue::Integer(integer) = value.get_ref() else {
        return Err(wrong_type(value, what, "a whole number"));
    };
    let digits: String = integer.as_str().chars().filter(|&c| c != '_').collect();
    if digits.starts_with('-') {
        return Err(bad(start(value), format!("{what} must not be negative")));
    }
    u64::from_str_radix(&digits, integer.radix()).map_err(|_| {
        bad(
            start(value),
            format!("{what} is too large (at most {})", u64::MAX),
        )
    })
}

fn expect_f64(value: &Value<'_>, what: &str) -> Res<f64> {
    match value.get_ref() {
        DeValue::Float(float) => {
            let digits: String = float.as_str().chars().filter(|&c| c != '_').collect();
            digits
                .parse()
                .map_err(|_| bad(start(value), format!("{what} is not a number")))
        }
        DeValue::Integer(_) => expect_u64(value, what).map(|number| number as f64),
        _ => Err(wrong_type(value, what, "a number")),
    }
}

fn expect_array<'a, 'i>(value: &'a Value<'i>, what: &str) -> Res<&'a DeArray<'i>> {
    match value.get_ref() {
        DeValue::Array(array) => Ok(array),
        _ => Err(wrong_type(value, what, "an array")),
    }
}

fn expect_table<'a, 'i>(value: &'a Value<'i>, what: &str) -> Res<&'a DeTable<'i>> {
    match value.get_ref() {
        DeValue::Table(table) => Ok(table),
        _ => Err(wrong_type(value, what, "a table")),
    }
}

fn check_name(text: &str, kind: &str, at: usize) -> Res<()> {
    if text.trim().is_empty() {
        return Err(bad(at, format!("a {kind} must not be empty")));
    }
    if text.len() > NAME_BYTES_MAX {
        return Err(bad(
            at,
            format!("{kind} {text:?} is longer than {NAME_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

/// The fields of one table, with what to say about them in errors.
struct Fields<'a, 'i> {
    table: &'a DeTable<'i>,
    /// Where the table starts: missing fields are reported here.
    at: usize,
    /// Starts every message, e.g. `"step 3: "`.
    prefix: String,
    /// Follows a field's name, e.g. `" in [network]"`.
    within: &'static str,
    /// Said after a missing field, e.g. `" (a create step needs: ...)"`.
    needs: String,
}

impl<'a, 'i> Fields<'a, 'i> {
    fn new(table: &'a DeTable<'i>, at: usize, prefix: String, within: &'static str) -> Self {
        Fields {
            table,
            at,
            prefix,
            within,
            needs: String::new(),
        }
    }

    fn what(&self, key: &str) -> String {
        format!("{}field {key:?}{}", self.prefix, self.within)
    }

    fn get(&self, key: &str) -> Option<&'a Value<'i>> {
        self.table
            .iter()
            .find(|(name, _)| name.get_ref() == key)
            .map(|(_, value)| value)
    }

    fn require(&self, key: &str) -> Res<&'a Value<'i>> {
        self.get(key).ok_or_else(|| {
            bad(
                self.at,
                format!(
                    "{}missing field {key:?}{}{}",
                    self.prefix, self.within, self.needs
                ),
            )
        })
    }

    /// Refuses the first field (in file order) not in `allowed`.
    fn only(&self, allowed: &[&str], known_for: &str) -> Res<()> {
        let unknown = self
            .table
            .iter()
            .map(|(name, _)| name)
            .filter(|name| !allowed.contains(&name.get_ref().as_ref()))
            .min_by_key(|name| name.span().start);
        match unknown {
            None => Ok(()),
            Some(name) => Err(bad(
                name.span().start,
                format!(
                    "{}unknown field {:?}{}{known_for} (expected one of: {})",
                    self.prefix,
                    name.get_ref(),
                    self.within,
                    allowed.join(", ")
                ),
            )),
        }
    }

    fn string(&self, key: &str) -> Res<Option<(&'a str, usize)>> {
        self.get(key)
            .map(|value| Ok((expect_str(value, &self.what(key))?, start(value))))
            .transpose()
    }

    fn req_string(&self, key: &str) -> Res<(&'a str, usize)> {
        let value = self.require(key)?;
        Ok((expect_str(value, &self.what(key))?, start(value)))
    }

    /// A required string that must not be empty.
    fn req_text(&self, key: &str) -> Res<String> {
        let (text, at) = self.req_string(key)?;
        if text.is_empty() {
            return Err(bad(at, format!("{} must not be empty", self.what(key))));
        }
        Ok(text.to_string())
    }

    fn boolean(&self, key: &str) -> Res<Option<bool>> {
        self.get(key)
            .map(|value| match value.get_ref() {
                DeValue::Boolean(flag) => Ok(*flag),
                _ => Err(bad(
                    start(value),
                    format!("{} must be true or false", self.what(key)),
                )),
            })
            .transpose()
    }

    fn u64(&self, key: &str) -> Res<Option<(u64, usize)>> {
        self.get(key)
            .map(|value| Ok((expect_u64(value, &self.what(key))?, start(value))))
            .transpose()
    }

    fn req_u64(&self, key: &str) -> Res<(u64, usize)> {
        let value = self.require(key)?;
        Ok((expect_u64(value, &self.what(key))?, start(value)))
    }

    fn duration(&self, key: &str) -> Res<Option<(u64, usize)>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let what = self.what(key);
        let text = match value.get_ref() {
            DeValue::String(text) => text,
            _ => {
                return Err(wrong_type(
                    value,
                    &what,
                    "a time such as \"250ms\", \"5s\" or \"2m\"",
                ));
            }
        };
        let ms = parse_duration_ms(text)
            .map_err(|reason| bad(start(value), format!("{what}: {reason}")))?;
        if ms > TIME_MS_MAX {
            return Err(bad(
                start(value),
                format!(
                    "{what}: {text:?} is beyond the limit of {}",
                    format_duration(TIME_MS_MAX)
                ),
            ));
        }
        Ok(Some((ms, start(value))))
    }

    fn req_duration(&self, key: &str) -> Res<(u64, usize)> {
        self.require(key)?;
        self.duration(key)?
            .ok_or_else(|| bad(self.at, format!("{}missing field {key:?}", self.prefix)))
    }

    fn probability(&self, key: &str) -> Res<Option<f64>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let what = self.what(key);
        let probability = expect_f64(value, &what)?;
        if !(0.0..=1.0).contains(&probability) {
            return Err(bad(
                start(value),
                format!("{what} is a probability and must be between 0 and 1, not {probability}"),
            ));
        }
        Ok(Some(probability))
    }

    fn latency(&self, key: &str) -> Res<Option<(u64, u64)>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let what = self.what(key);
        let shape = "[low, high] in milliseconds, such as [1, 20]";
        let items = expect_array(value, &what)?;
        let [low, high] = items.as_ref() else {
            return Err(bad(start(value), format!("{what} must be {shape}")));
        };
        let low_ms = expect_u64(low, &format!("{what}: the low end"))?;
        let high_ms = expect_u64(high, &format!("{what}: the high end"))?;
        if low_ms > high_ms {
            return Err(bad(
                start(value),
                format!("{what}: the low end {low_ms} is above the high end {high_ms}"),
            ));
        }
        if high_ms > TIME_MS_MAX {
            return Err(bad(
                start(high),
                format!("{what}: {high_ms} ms is beyond the limit of {TIME_MS_MAX} ms"),
            ));
        }
        Ok(Some((low_ms, high_ms)))
    }
}

/// How one op or check is written: the fields it needs and may have.
struct Shape {
    name: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
}

const OP_SHAPES: [Shape; 12] = [
    shape("create", &["node", "context", "app"], &[]),
    shape("invite", &["node", "context", "member"], &[]),
    shape("join", &["node", "context", "via"], &[]),
    shape("leave", &["node", "context"], &[]),
    shape("call", &["node", "context", "method"], &["args"]),
    shape(
        "workload",
        &["context", "calls", "over", "methods"],
        &["nodes"],
    ),
    shape("partition", &["groups"], &[]),
    shape("heal", &[], &[]),
    shape("crash", &["node"], &[]),
    shape("restart", &["node"], &[]),
    shape("network", &[], &["latency_ms", "drop", "duplicate"]),
    shape("expect", &["check"], &[]),
];

const CHECK_SHAPES: [Shape; 7] = [
    shape("converged", &["context"], &[]),
    shape("value", &["context", "key", "equals"], &["nodes"]),
    shape("members", &["context", "equals"], &[]),
    shape("not_member", &["context", "node"], &[]),
    shape("applied", &["context", "node", "at_least"], &[]),
    shape("held_back", &["context", "node", "by"], &[]),
    shape("on_checkpoint", &["context", "node"], &[]),
];

const fn shape(
    name: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
) -> Shape {
    Shape {
        name,
        required,
        optional,
    }
}

const TOP_FIELDS: [&str; 9] = [
    "name",
    "description",
    "seed",
    "nodes",
    "settle",
    "stress",
    "checkpoint_interval",
    "network",
    "step",
];
const NETWORK_FIELDS: [&str; 3] = ["latency_ms", "drop", "duplicate"];

/// "an" before a vowel, else "a".
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Which op (and, for `expect`, which check) a step is, so which fields it
/// needs and may have.
struct StepShape {
    op: &'static Shape,
    check: Option<&'static Shape>,
}

impl StepShape {
    /// Reads `op`, and `check` for an expect step; refuses unknown names.
    fn read(fields: &mut Fields<'_, '_>) -> Res<StepShape> {
        fields.needs = format!(" (expected one of: {})", OPS.join(", "));
        let (op_name, op_at) = fields.req_string("op")?;
        let Some(op) = OP_SHAPES.iter().find(|shape| shape.name == op_name) else {
            return Err(bad(
                op_at,
                format!(
                    "{}unknown op {op_name:?} (expected one of: {})",
                    fields.prefix,
                    OPS.join(", ")
                ),
            ));
        };
        if op.name != "expect" {
            return Ok(StepShape { op, check: None });
        }
        fields.needs = format!(" (expected one of: {})", CHECKS.join(", "));
        let (check_name, check_at) = fields.req_string("check")?;
        let Some(check) = CHECK_SHAPES.iter().find(|shape| shape.name == check_name) else {
            return Err(bad(
                check_at,
                format!(
                    "{}unknown check {check_name:?} (expected one of: {})",
                    fields.prefix,
                    CHECKS.join(", ")
                ),
            ));
        };
        Ok(StepShape {
            op,
            check: Some(check),
        })
    }

    /// The innermost shape: the check of an expect step, else the op.
    fn inner(&self) -> &'static Shape {
        self.check.unwrap_or(self.op)
    }

    fn allowed(&self) -> Vec<&'static str> {
        let mut allowed = vec!["at", "op"];
        for shape in std::iter::once(self.op).chain(self.check) {
            allowed.extend(shape.required);
            allowed.extend(shape.optional);
        }
        allowed
    }

    fn known_for(&self) -> String {
        match self.check {
            Some(check) => format!(" for check {:?}", check.name),
            None => format!(" for op {:?}", self.op.name),
        }
    }

    fn needs(&self) -> String {
        let inner = self.inner();
        let kind = if self.check.is_some() {
            "check"
        } else {
            "step"
        };
        format!(
            " ({} {} {kind} needs: {})",
            article(inner.name),
            inner.name,
            inner.required.join(", ")
        )
    }
}

/// A step as read, with what the context check needs.
struct ReadStep {
    step: Step,
    /// 1-based position among the file's `[[step]]` tables.
    number: usize,
    /// The context it names and where.
    context: Option<(String, usize)>,
}

struct Reader<'p> {
    path: &'p Path,
    /// The scenario file's directory, for relative app paths.
    dir: PathBuf,
    lines: &'p LineIndex,
    /// The declared nodes, once read.
    nodes: Vec<String>,
}

impl Reader<'_> {
    fn read_scenario(&mut self, root: &DeTable<'_>) -> Res<Scenario> {
        let mut top = Fields::new(root, 0, String::new(), "");
        top.needs = " (every scenario needs a name and its nodes)".to_string();
        top.only(&TOP_FIELDS, " at the top level")?;
        let name = top.req_text("name")?;
        let description = top.string("description")?.map_or("", |(text, _)| text);
        let seed = top.u64("seed")?.map_or(0, |(seed, _)| seed);
        self.nodes = read_declared_nodes(top.require("nodes")?)?;
        let settle_ms = top
            .duration("settle")?
            .map_or(SETTLE_MS_DEFAULT, |(ms, _)| ms);
        let stress = top.boolean("stress")?.unwrap_or(false);
        let checkpoint_interval = match top.u64("checkpoint_interval")? {
            Some((0, line)) => {
                return Err(bad(
                    line,
                    "checkpoint_interval must be at least 1 (heights between two checkpoints)"
                        .to_string(),
                ));
            }
            other => other.map(|(interval, _)| interval),
        };
        let network = match top.get("network") {
            None => Network::default(),
            Some(value) => read_network_table(value)?,
        };
        let mut steps = match top.get("step") {
            None => Vec::new(),
            Some(value) => self.read_steps(value)?,
        };
        // Stable: steps at the same time keep file order.
        steps.sort_by_key(|read| read.step.at_ms);
        check_contexts(&steps)?;
        Ok(Scenario {
            name,
            description: description.to_string(),
            seed,
            nodes: self.nodes.clone(),
            settle_ms,
            stress,
            checkpoint_interval,
            network,
            steps: steps.into_iter().map(|read| read.step).collect(),
            path: self.path.to_path_buf(),
        })
    }

    fn read_steps(&self, value: &Value<'_>) -> Res<Vec<ReadStep>> {
        let DeValue::Array(tables) = value.get_ref() else {
            return Err(bad(
                start(value),
                "steps must be written as [[step]] tables, with two brackets",
            ));
        };
        if tables.len() > STEPS_MAX {
            return Err(bad(
                start(value),
                format!("too many steps: {} (at most {STEPS_MAX})", tables.len()),
            ));
        }
        tables
            .iter()
            .enumerate()
            .map(|(index, table)| self.read_step(index + 1, table))
            .collect()
    }

    fn read_step(&self, number: usize, value: &Value<'_>) -> Res<ReadStep> {
        let table = match value.get_ref() {
            DeValue::Table(table) => table,
            other => {
                return Err(bad(
                    start(value),
                    format!(
                        "step {number} must be a [[step]] table, not {}",
                        type_name(other)
                    ),
                ));
            }
        };
        let mut fields = Fields::new(table, start(value), format!("step {number}: "), "");
        let shape = StepShape::read(&mut fields)?;
        fields.only(&shape.allowed(), &shape.known_for())?;
        fields.needs = " (every step needs a time, such as at = \"250ms\")".to_string();
        let (at_ms, _) = fields.req_duration("at")?;
        fields.needs = shape.needs();
        let (op, context) = match shape.check {
            Some(check_shape) => {
                let (check, context) = self.read_check(check_shape.name, &fields)?;
                (Op::Expect(check), Some(context))
            }
            None => self.read_op(shape.op.name, &fields)?,
        };
        Ok(ReadStep {
            step: Step {
                at_ms,
                line: self.lines.line(start(value)),
                op,
            },
            number,
            context,
        })
    }

    fn read_op(
        &self,
        op_name: &str,
        fields: &Fields<'_, '_>,
    ) -> Res<(Op, Option<(String, usize)>)> {
        let op = match op_name {
            "create" => Op::Create {
                node: self.node(fields, "node")?,
                context: context(fields)?.0,
                app: self.app(fields)?,
            },
            "invite" => Op::Invite {
                node: self.node(fields, "node")?,
                context: context(fields)?.0,
                member: self.node(fields, "member")?,
            },
            "join" => Op::Join {
                node: self.node(fields, "node")?,
                context: context(fields)?.0,
                via: self.node(fields, "via")?,
            },
            "leave" => Op::Leave {
                node: self.node(fields, "node")?,
                context: context(fields)?.0,
            },
            "call" => Op::Call {
                node: self.node(fields, "node")?,
                context: context(fields)?.0,
                method: fields.req_text("method")?,
                args: read_args(fields, false)?,
            },
            "workload" => self.read_workload(fields)?,
            "partition" => Op::Partition {
                groups: self.read_groups(fields)?,
            },
            "heal" => Op::Heal,
            "crash" => Op::Crash {
                node: self.node(fields, "node")?,
            },
            "restart" => Op::Restart {
                node: self.node(fields, "node")?,
            },
            "network" => read_network_step(fields)?,
            other => {
                // OP_SHAPES and this match list the same ops.
                return Err(bad(fields.at, format!("unknown op {other:?}")));
            }
        };
        let context = match op.context() {
            Some(_) => Some(context(fields)?),
            None => None,
        };
        Ok((op, context))
    }

    fn read_workload(&self, fields: &Fields<'_, '_>) -> Res<Op> {
        let context = context(fields)?.0;
        let (calls, calls_at) = fields.req_u64("calls")?;
        let calls = match u32::try_from(calls) {
            Ok(calls) if (1..=WORKLOAD_CALLS_MAX).contains(&calls) => calls,
            _ => {
                return Err(bad(
                    calls_at,
                    format!(
                        "{} must be between 1 and {WORKLOAD_CALLS_MAX}, not {calls}",
                        fields.what("calls")
                    ),
                ));
            }
        };
        let (over_ms, over_at) = fields.req_duration("over")?;
        if over_ms == 0 {
            return Err(bad(
                over_at,
                format!(
                    "{} must be longer than 0ms: the calls are spread over it",
                    fields.what("over")
                ),
            ));
        }
        let methods_value = fields.require("methods")?;
        let methods = expect_array(methods_value, &fields.what("methods"))?;
        if methods.is_empty() || methods.len() > METHODS_MAX {
            return Err(bad(
                start(methods_value),
                format!(
                    "{} must list between 1 and {METHODS_MAX} methods, not {}",
                    fields.what("methods"),
                    methods.len()
                ),
            ));
        }
        let methods = methods
            .iter()
            .enumerate()
            .map(|(index, value)| read_method(fields, index + 1, value))
            .collect::<Res<Vec<_>>>()?;
        let nodes = match fields.get("nodes") {
            None => None,
            Some(value) => Some(self.node_list(fields, "nodes", value, false)?),
        };
        Ok(Op::Workload {
            context,
            calls,
            over_ms,
            methods,
            nodes,
        })
    }

    fn read_groups(&self, fields: &Fields<'_, '_>) -> Res<Vec<Vec<String>>> {
        let value = fields.require("groups")?;
        let what = fields.what("groups");
        let groups = expect_array(value, &what)?;
        let mut group_of: BTreeMap<String, usize> = BTreeMap::new();
        let mut result = Vec::with_capacity(groups.len());
        for (index, group_value) in groups.iter().enumerate() {
            let group_number = index + 1;
            let group_what = format!("{what}: group {group_number}");
            let members = expect_array(group_value, &group_what)?;
            if members.is_empty() {
                return Err(bad(
                    start(group_value),
                    format!("{group_what} is empty (a node left out of every group is alone)"),
                ));
            }
            let mut group = Vec::with_capacity(members.len());
            for member in members.iter() {
                let node = self.node_value(fields, "groups", member)?;
                if let Some(&first) = group_of.get(node.as_str()) {
                    let message = if first == group_number {
                        format!("{group_what} lists node {node:?} twice")
                    } else {
                        format!(
                            "{what}: node {node:?} is in both group {first} and group {group_number}"
                        )
                    };
                    return Err(bad(start(member), message));
                }
                group_of.insert(node.clone(), group_number);
                group.push(node);
            }
            result.push(group);
        }
        Ok(result)
    }

    fn read_check(&self, name: &str, fields: &Fields<'_, '_>) -> Res<(Check, (String, usize))> {
        let context = context(fields)?;
        let context_name = context.0.clone();
        let check = match name {
            "converged" => Check::Converged {
                context: context_name,
            },
            "value" => {
                let key_value = fields.require("key")?;
                let key = read_arg(key_value, &fields.what("key"), false)?;
                let equals_value = fields.require("equals")?;
                let equals = match equals_value.get_ref() {
                    DeValue::Boolean(false) => Expected::Absent,
                    DeValue::Boolean(true) => {
                        return Err(bad(
                            start(equals_value),
                            format!(
                                "{} cannot be true: give the expected value, or false for absent",
                                fields.what("equals")
                            ),
                        ));
                    }
                    _ => Expected::Bytes(read_arg(equals_value, &fields.what("equals"), false)?),
                };
                let nodes = match fields.get("nodes") {
                    None => None,
                    Some(value) => Some(self.node_list(fields, "nodes", value, false)?),
                };
                Check::Value {
                    context: context_name,
                    key,
                    equals,
                    nodes,
                }
            }
            "members" => Check::Members {
                context: context_name,
                equals: self.node_list(fields, "equals", fields.require("equals")?, true)?,
            },
            "not_member" => Check::NotMember {
                context: context_name,
                node: self.node(fields, "node")?,
            },
            "applied" => Check::Applied {
                context: context_name,
                node: self.node(fields, "node")?,
                at_least: fields.req_u64("at_least")?.0,
            },
            "held_back" => Check::HeldBack {
                context: context_name,
                node: self.node(fields, "node")?,
                by: self.node(fields, "by")?,
            },
            "on_checkpoint" => Check::OnCheckpoint {
                context: context_name,
                node: self.node(fields, "node")?,
            },
            other => {
                // CHECK_SHAPES and this match list the same checks.
                return Err(bad(fields.at, format!("unknown check {other:?}")));
            }
        };
        Ok((check, context))
    }

    /// A required field naming a declared node.
    fn node(&self, fields: &Fields<'_, '_>, key: &str) -> Res<String> {
        self.node_value(fields, key, fields.require(key)?)
    }

    fn node_value(&self, fields: &Fields<'_, '_>, key: &str, value: &Value<'_>) -> Res<String> {
        let name = expect_str(value, &fields.what(key))?;
        if !self.nodes.iter().any(|node| node == name) {
            return Err(bad(
                start(value),
                format!(
                    "{}unknown node {name:?} in field {key:?} (nodes are: {})",
                    fields.prefix,
                    self.nodes.join(", ")
                ),
            ));
        }
        Ok(name.to_string())
    }

    /// A list of declared nodes, none twice.
    fn node_list(
        &self,
        fields: &Fields<'_, '_>,
        key: &str,
        value: &Value<'_>,
        may_be_empty: bool,
    ) -> Res<Vec<String>> {
        let what = fields.what(key);
        let items = expect_array(value, &what)?;
        if items.is_empty() && !may_be_empty {
            return Err(bad(
                start(value),
                format!("{what} is empty: list at least one node, or leave the field out"),
            ));
        }
        let mut nodes: Vec<String> = Vec::with_capacity(items.len());
        for item in items.iter() {
            let node = self.node_value(fields, key, item)?;
            if nodes.contains(&node) {
                return Err(bad(
                    start(item),
                    format!("{what} lists node {node:?} twice"),
                ));
            }
            nodes.push(node);
        }
        Ok(nodes)
    }

    fn app(&self, fields: &Fields<'_, '_>) -> Res<AppRef> {
        let (app, at) = fields.req_string("app")?;
        if BUNDLED_APPS.contains(&app) {
            return Ok(AppRef::Bundled(app.to_string()));
        }
        if app.ends_with(".wat") || app.ends_with(".wasm") {
            return Ok(AppRef::Path(normalize(&self.dir.join(app))));
        }
        Err(bad(
            at,
            format!(
                "{}app {app:?} is neither a bundled app ({}) nor a path to a .wat or .wasm file",
                fields.prefix,
                BUNDLED_APPS.join(", ")
            ),
        ))
    }
}

fn read_declared_nodes(value: &Value<'_>) -> Res<Vec<String>> {
    let what = "field \"nodes\"";
    let items = expect_array(value, what)?;
    if items.is_empty() {
        return Err(bad(
            start(value),
            "field \"nodes\" is empty: a scenario needs at least one node",
        ));
    }
    if items.len() > NODES_MAX {
        return Err(bad(
            start(value),
            format!("too many nodes: {} (at most {NODES_MAX})", items.len()),
        ));
    }
    let mut nodes: Vec<String> = Vec::with_capacity(items.len());
    for item in items.iter() {
        let name = expect_str(item, "each entry of field \"nodes\"")?;
        check_name(name, "node name", start(item))?;
        if nodes.iter().any(|node| node == name) {
            return Err(bad(
                start(item),
                format!("node {name:?} is listed twice in field \"nodes\""),
            ));
        }
        nodes.push(name.to_string());
    }
    Ok(nodes)
}

fn read_network_table(value: &Value<'_>) -> Res<Network> {
    let table = expect_table(value, "field \"network\"")?;
    let fields = Fields::new(table, start(value), String::new(), " in [network]");
    fields.only(&NETWORK_FIELDS, "")?;
    let defaults = Network::default();
    Ok(Network {
        latency_ms: fields.latency("latency_ms")?.unwrap_or(defaults.latency_ms),
        drop: fields.probability("drop")?.unwrap_or(defaults.drop),
        duplicate: fields
            .probability("duplicate")?
            .unwrap_or(defaults.duplicate),
    })
}

fn read_network_step(fields: &Fields<'_, '_>) -> Res<Op> {
    let latency_ms = fields.latency("latency_ms")?;
    let drop = fields.probability("drop")?;
    let duplicate = fields.probability("duplicate")?;
    if latency_ms.is_none() && drop.is_none() && duplicate.is_none() {
        return Err(bad(
            fields.at,
            format!(
                "{}a network step changes nothing: give latency_ms, drop or duplicate",
                fields.prefix
            ),
        ));
    }
    Ok(Op::Network {
        latency_ms,
        drop,
        duplicate,
    })
}

/// The step's `context` field and where it is.
fn context(fields: &Fields<'_, '_>) -> Res<(String, usize)> {
    let (name, at) = fields.req_string("context")?;
    check_name(name, "context name", at).map_err(|mut problem| {
        problem.message = format!("{}{}", fields.prefix, problem.message);
        problem
    })?;
    Ok((name.to_string(), at))
}

fn read_method(fields: &Fields<'_, '_>, number: usize, value: &Value<'_>) -> Res<MethodTemplate> {
    let prefix = format!("{}method {number}: ", fields.prefix);
    let table = match value.get_ref() {
        DeValue::Table(table) => table,
        other => {
            return Err(bad(
                start(value),
                format!(
                    "{prefix}each method must be a table such as {{method = \"set\", args = [\"$key\", \"$value\"]}}, not {}",
                    type_name(other)
                ),
            ));
        }
    };
    let mut method_fields = Fields::new(table, start(value), prefix, "");
    method_fields.needs = " (a method needs: method, and may have args)".to_string();
    method_fields.only(&["method", "args"], "")?;
    Ok(MethodTemplate {
        method: method_fields.req_text("method")?,
        args: read_args(&method_fields, true)?,
    })
}

/// The optional `args` field; draws are allowed only in workload methods.
fn read_args(fields: &Fields<'_, '_>, may_draw: bool) -> Res<Vec<Arg>> {
    let Some(value) = fields.get("args") else {
        return Ok(Vec::new());
    };
    let what = fields.what("args");
    let items = expect_array(value, &what)?;
    if items.len() > ARGS_MAX {
        return Err(bad(
            start(value),
            format!("{what} has {} arguments (at most {ARGS_MAX})", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| read_arg(item, &format!("{what}: argument {}", index + 1), may_draw))
        .collect()
}

fn read_arg(value: &Value<'_>, what: &str, may_draw: bool) -> Res<Arg> {
    match value.get_ref() {
        DeValue::String(text) => read_text_arg(text, start(value), what, may_draw),
        DeValue::Integer(_) => Ok(Arg::U64(expect_u64(value, what)?)),
        DeValue::Table(table) => {
            let mut entries = table.iter();
            let (Some((key, inner)), None) = (entries.next(), entries.next()) else {
                return Err(bad(
                    start(value),
                    format!(
                        "{what} must be {{hex = \"00ff\"}}, {{str = \"...\"}}, {{bool = true}} or a typed integer such as {{u32 = 7}}, with one key"
                    ),
                ));
            };
            match key.get_ref().as_ref() {
                "hex" => {
                    let digits = expect_str(inner, &format!("{what}: hex"))?;
                    decode_hex(digits)
                        .map(Arg::Hex)
                        .map_err(|reason| bad(start(inner), format!("{what}: {reason}")))
                }
                "str" => Ok(Arg::Str(
                    expect_str(inner, &format!("{what}: str"))?.to_string(),
                )),
                "bool" => match inner.get_ref() {
                    DeValue::Boolean(value) => Ok(Arg::Bool(*value)),
                    _ => Err(wrong_type(inner, &format!("{what}: bool"), "true or false")),
                },
                name => match IntType::from_name(name) {
                    Some(ty) => read_int_arg(inner, ty, what),
                    None => Err(bad(
                        key.span().start,
                        format!(
                            "{what} has unknown key {name:?} (expected hex, str, bool, or an integer type: u8, u16, u32, u64, u128, i8, i16, i32, i64, i128)"
                        ),
                    )),
                },
            }
        }
        _ => Err(wrong_type(
            value,
            what,
            "a string, a whole number or {hex = \"00ff\"}",
        )),
    }
}

/// `{u32 = 7}`: a whole number, or a decimal string (for 128-bit values
/// past what TOML's integers hold), that fits `ty`.
fn read_int_arg(inner: &Value<'_>, ty: IntType, what: &str) -> Res<Arg> {
    let what = format!("{what}: {}", ty.name());
    let text = match inner.get_ref() {
        DeValue::Integer(integer) if integer.radix() == 10 => integer.as_str().to_string(),
        DeValue::String(text) => text.to_string(),
        _ => return Err(wrong_type(inner, &what, "a whole number in decimal")),
    };
    ty.parse(&text)
        .map(|bits| Arg::Int { ty, bits })
        .map_err(|reason| bad(start(inner), format!("{what}: {reason}")))
}

fn read_text_arg(text: &str, at: usize, what: &str, may_draw: bool) -> Res<Arg> {
    if !text.starts_with('$') {
        return Ok(Arg::Str(text.to_string()));
    }
    match Draw::from_text(text) {
        Some(draw) if may_draw => Ok(Arg::Draw(draw)),
        Some(_) => Err(bad(
            at,
            format!(
                "{what}: {text:?} draws a random value, which only a workload's methods can do; write {{str = {text:?}}} for the literal text"
            ),
        )),
        None => Err(bad(
            at,
            format!(
                "{what}: unknown draw {text:?} (expected \"$key\", \"$value\" or \"$amount\"); write {{str = {text:?}}} for the literal text"
            ),
        )),
    }
}

fn decode_hex(digits: &str) -> Result<Vec<u8>, String> {
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "{digits:?} is not hex bytes: it has an odd number of digits"
        ));
    }
    let nibble = |c: u8| -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!(
                "{digits:?} is not hex bytes: {:?} is not a hex digit",
                char::from(c)
            )),
        }
    };
    digits
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| Ok(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// Every context is created once, before (in sorted order) any other use.
fn check_contexts(steps: &[ReadStep]) -> Res<()> {
    let mut created: BTreeMap<&str, &ReadStep> = BTreeMap::new();
    for (index, read) in steps.iter().enumerate() {
        let Some((name, at)) = &read.context else {
            continue;
        };
        let number = read.number;
        if matches!(read.step.op, Op::Create { .. }) {
            if let Some(first) = created.get(name.as_str()) {
                return Err(bad(
                    *at,
                    format!(
                        "step {number}: context {name:?} is already created by step {} (line {})",
                        first.number, first.step.line
                    ),
                ));
            }
            created.insert(name, read);
        } else if !created.contains_key(name.as_str()) {
            let creator = steps[index + 1..].iter().find(|later| {
                matches!(later.step.op, Op::Create { .. }) && later.step.op.context() == Some(name)
            });
            let hint = match creator {
                Some(later) if later.step.at_ms == read.step.at_ms => format!(
                    " (step {} creates it at the same time, but comes later in the file)",
                    later.number
                ),
                Some(later) => format!(
                    " (step {} creates it, but only at {})",
                    later.number,
                    format_duration(later.step.at_ms)
                ),
                None => String::new(),
            };
            return Err(bad(
                *at,
                format!("step {number}: context {name:?} is used before any step creates it{hint}"),
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Writing the file.

fn push_field(out: &mut String, key: &str, value: &str) {
    out.push_str(key);
    out.push_str(" = ");
    out.push_str(value);
    out.push('\n');
}

/// A TOML string literal for `text`.
fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", quoted.join(", "))
}

fn format_duration(ms: u64) -> String {
    if ms != 0 && ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn format_latency((low_ms, high_ms): (u64, u64)) -> String {
    format!("[{low_ms}, {high_ms}]")
}

/// Rust's `Display` gives the shortest text that reads back to the same
/// `f64`; TOML wants a dot or an exponent in a float.
fn format_float(value: f64) -> String {
    let text = value.to_string();
    if text.contains(['.', 'e', 'E', 'n', 'i']) {
        text
    } else {
        format!("{text}.0")
    }
}

fn format_arg(arg: &Arg) -> String {
    match arg {
        Arg::Str(text) if text.starts_with('$') => format!("{{ str = {} }}", quote(text)),
        Arg::Str(text) => quote(text),
        Arg::U64(number) => number.to_string(),
        Arg::Hex(bytes) => {
            let digits: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            format!("{{ hex = \"{digits}\" }}")
        }
        Arg::Int { ty, bits } => {
            let text = ty.format(*bits);
            // TOML's integers are 64-bit: a wider value is written as text.
            if text.parse::<i64>().is_ok() {
                format!("{{ {} = {text} }}", ty.name())
            } else {
                format!("{{ {} = \"{text}\" }}", ty.name())
            }
        }
        Arg::Bool(value) => format!("{{ bool = {value} }}"),
        Arg::Draw(draw) => quote(draw.as_str()),
    }
}

fn format_args(args: &[Arg]) -> String {
    let items: Vec<String> = args.iter().map(format_arg).collect();
    format!("[{}]", items.join(", "))
}

fn write_op(out: &mut String, op: &Op, dir: &Path) {
    match op {
        Op::Create { node, context, app } => {
            push_field(out, "node", &quote(node));
            push_field(out, "context", &quote(context));
            let app = match app {
                AppRef::Bundled(name) => name.clone(),
                AppRef::Path(path) => relative_path(path, dir).to_string_lossy().into_owned(),
            };
            push_field(out, "app", &quote(&app));
        }
        Op::Invite {
            node,
            context,
            member,
        } => {
            push_field(out, "node", &quote(node));
            push_field(out, "context", &quote(context));
            push_field(out, "member", &quote(member));
        }
        Op::Join { node, context, via } => {
            push_field(out, "node", &quote(node));
            push_field(out, "context", &quote(context));
            push_field(out, "via", &quote(via));
        }
        Op::Leave { node, context } => {
            push_field(out, "node", &quote(node));
            push_field(out, "context", &quote(context));
        }
        Op::Call {
            node,
            context,
            method,
            args,
        } => {
            push_field(out, "node", &quote(node));
            push_field(out, "context", &quote(context));
            push_field(out, "method", &quote(method));
            push_field(out, "args", &format_args(args));
        }
        Op::Workload {
            context,
            calls,
            over_ms,
            methods,
            nodes,
        } => {
            push_field(out, "context", &quote(context));
            push_field(out, "calls", &calls.to_string());
            push_field(out, "over", &quote(&format_duration(*over_ms)));
            let methods: Vec<String> = methods
                .iter()
                .map(|template| {
                    format!(
                        "{{ method = {}, args = {} }}",
                        quote(&template.method),
                        format_args(&template.args)
                    )
                })
                .collect();
            push_field(out, "methods", &format!("[{}]", methods.join(", ")));
            if let Some(nodes) = nodes {
                push_field(out, "nodes", &quote_list(nodes));
            }
        }
        Op::Partition { groups } => {
            let groups: Vec<String> = groups.iter().map(|group| quote_list(group)).collect();
            push_field(out, "groups", &format!("[{}]", groups.join(", ")));
        }
        Op::Heal => {}
        Op::Crash { node } | Op::Restart { node } => push_field(out, "node", &quote(node)),
        Op::Network {
            latency_ms,
            drop,
            duplicate,
        } => {
            if let Some(latency_ms) = latency_ms {
                push_field(out, "latency_ms", &format_latency(*latency_ms));
            }
            if let Some(drop) = drop {
                push_field(out, "drop", &format_float(*drop));
            }
            if let Some(duplicate) = duplicate {
                push_field(out, "duplicate", &format_float(*duplicate));
            }
        }
        Op::Expect(check) => write_check(out, check),
    }
}

fn write_check(out: &mut String, check: &Check) {
    push_field(out, "check", &quote(check.name()));
    push_field(out, "context", &quote(check.context()));
    match check {
        Check::Converged { .. } => {}
        Check::Value {
            key, equals, nodes, ..
        } => {
            push_field(out, "key", &format_arg(key));
            let equals = match equals {
                Expected::Absent => "false".to_string(),
                Expected::Bytes(arg) => format_arg(arg),
            };
            push_field(out, "equals", &equals);
            if let Some(nodes) = nodes {
                push_field(out, "nodes", &quote_list(nodes));
            }
        }
        Check::Members { equals, .. } => push_field(out, "equals", &quote_list(equals)),
        Check::NotMember { node, .. } => push_field(out, "node", &quote(node)),
        Check::Applied { node, at_least, .. } => {
            push_field(out, "node", &quote(node));
            push_field(out, "at_least", &at_least.to_string());
        }
        Check::HeldBack { node, by, .. } => {
            push_field(out, "node", &quote(node));
            push_field(out, "by", &quote(by));
        }
        Check::OnCheckpoint { node, .. } => push_field(out, "node", &quote(node)),
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
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn s(text: &str) -> String {
        text.to_string()
    }

    fn names(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| item.to_string()).collect()
    }

    fn step(at_ms: u64, line: usize, op: Op) -> Step {
        Step { at_ms, line, op }
    }

    fn expect(check: Check) -> Op {
        Op::Expect(check)
    }

    /// Asserts equality including each step's line, which `==` ignores.
    fn assert_same(actual: &Scenario, expected: &Scenario) {
        assert_eq!(actual, expected);
        let lines = |scenario: &Scenario| -> Vec<usize> {
            scenario.steps.iter().map(|step| step.line).collect()
        };
        assert_eq!(lines(actual), lines(expected));
    }

    #[test]
    fn the_example_in_scenarios_md_parses() {
        let path = fixture("partition-heal.toml");
        let scenario = Scenario::from_file(&path).expect("the example is valid");
        let expected = Scenario {
            name: s("partition-heal"),
            description: s("Both sides keep writing through a partition and agree after it heals."),
            seed: 42,
            nodes: names(&["alice", "bob", "carol"]),
            settle_ms: 10_000,
            stress: false,
            checkpoint_interval: None,
            network: Network {
                latency_ms: (1, 20),
                drop: 0.0,
                duplicate: 0.0,
            },
            steps: vec![
                step(
                    0,
                    13,
                    Op::Create {
                        node: s("alice"),
                        context: s("c1"),
                        app: AppRef::Bundled(s("kv")),
                    },
                ),
                step(
                    5,
                    20,
                    Op::Invite {
                        node: s("alice"),
                        context: s("c1"),
                        member: s("bob"),
                    },
                ),
                step(
                    10,
                    27,
                    Op::Join {
                        node: s("bob"),
                        context: s("c1"),
                        via: s("alice"),
                    },
                ),
                step(
                    1000,
                    34,
                    Op::Partition {
                        groups: vec![names(&["alice"]), names(&["bob", "carol"])],
                    },
                ),
                step(
                    1100,
                    39,
                    Op::Call {
                        node: s("bob"),
                        context: s("c1"),
                        method: s("set"),
                        args: vec![Arg::Str(s("colour")), Arg::Str(s("blue"))],
                    },
                ),
                step(5000, 47, Op::Heal),
                step(20_000, 51, expect(Check::Converged { context: s("c1") })),
                step(
                    20_000,
                    57,
                    expect(Check::Value {
                        context: s("c1"),
                        key: Arg::Str(s("colour")),
                        equals: Expected::Bytes(Arg::Str(s("blue"))),
                        nodes: None,
                    }),
                ),
            ],
            path: path.clone(),
        };
        assert_same(&scenario, &expected);
    }

    #[test]
    fn every_op_check_and_argument_kind_parses() {
        let path = fixture("every-op.toml");
        let scenario = Scenario::from_file(&path).expect("the fixture is valid");
        let c1 = || s("c1");
        let expected_steps = vec![
            step(
                0,
                23,
                Op::Create {
                    node: s("alice"),
                    context: c1(),
                    app: AppRef::Bundled(s("kv")),
                },
            ),
            step(
                0,
                30,
                Op::Create {
                    node: s("bob"),
                    context: s("c2"),
                    app: AppRef::Path(fixture("apps/custom.wat")),
                },
            ),
            step(
                5,
                37,
                Op::Invite {
                    node: s("alice"),
                    context: c1(),
                    member: s("bob"),
                },
            ),
            step(
                10,
                44,
                Op::Join {
                    node: s("bob"),
                    context: c1(),
                    via: s("alice"),
                },
            ),
            step(
                20,
                51,
                Op::Call {
                    node: s("bob"),
                    context: c1(),
                    method: s("set"),
                    args: vec![
                        Arg::Str(s("colour")),
                        Arg::U64(42),
                        Arg::Hex(vec![0x00, 0xff]),
                        Arg::Str(s("$literal")),
                    ],
                },
            ),
            step(
                30,
                59,
                Op::Workload {
                    context: c1(),
                    calls: 100,
                    over_ms: 10_000,
                    methods: vec![
                        MethodTemplate {
                            method: s("set"),
                            args: vec![Arg::Draw(Draw::Key), Arg::Draw(Draw::Value)],
                        },
                        MethodTemplate {
                            method: s("remove"),
                            args: vec![Arg::Draw(Draw::Key)],
                        },
                    ],
                    nodes: Some(names(&["alice", "bob"])),
                },
            ),
            step(
                40,
                71,
                Op::Workload {
                    context: s("c2"),
                    calls: 5,
                    over_ms: 1000,
                    methods: vec![MethodTemplate {
                        method: s("add"),
                        args: vec![Arg::Str(s("k")), Arg::Draw(Draw::Amount)],
                    }],
                    nodes: None,
                },
            ),
            step(
                1000,
                79,
                Op::Partition {
                    groups: vec![names(&["alice"]), names(&["bob", "carol"])],
                },
            ),
            step(2000, 84, Op::Crash { node: s("carol") }),
            step(3000, 89, Op::Restart { node: s("carol") }),
            step(
                4000,
                94,
                Op::Network {
                    latency_ms: None,
                    drop: Some(0.5),
                    duplicate: None,
                },
            ),
            step(
                4000,
                99,
                Op::Network {
                    latency_ms: Some((5, 5)),
                    drop: None,
                    duplicate: Some(1.0),
                },
            ),
            step(5000, 105, Op::Heal),
            step(
                6000,
                109,
                Op::Leave {
                    node: s("bob"),
                    context: s("c2"),
                },
            ),
            step(20_000, 115, expect(Check::Converged { context: c1() })),
            step(
                20_000,
                121,
                expect(Check::Value {
                    context: c1(),
                    key: Arg::Str(s("colour")),
                    equals: Expected::Bytes(Arg::Str(s("blue"))),
                    nodes: None,
                }),
            ),
            step(
                20_000,
                129,
                expect(Check::Value {
                    context: c1(),
                    key: Arg::Hex(vec![1]),
                    equals: Expected::Absent,
                    nodes: Some(names(&["alice"])),
                }),
            ),
            step(
                20_000,
                138,
                expect(Check::Value {
                    context: s("c2"),
                    key: Arg::Str(s("k")),
                    equals: Expected::Bytes(Arg::U64(5)),
                    nodes: None,
                }),
            ),
            step(
                20_000,
                146,
                expect(Check::Members {
                    context: c1(),
                    equals: names(&["alice", "bob"]),
                }),
            ),
            step(
                20_000,
                153,
                expect(Check::NotMember {
                    context: s("c2"),
                    node: s("bob"),
                }),
            ),
            step(
                20_000,
                160,
                expect(Check::HeldBack {
                    context: c1(),
                    node: s("alice"),
                    by: s("bob"),
                }),
            ),
            step(
                20_000,
                168,
                expect(Check::OnCheckpoint {
                    context: c1(),
                    node: s("bob"),
                }),
            ),
            step(
                120_000,
                15,
                expect(Check::Applied {
                    context: c1(),
                    node: s("bob"),
                    at_least: 3,
                }),
            ),
        ];
        let expected = Scenario {
            name: s("every-op"),
            description: s("Not a meaningful run: it exercises the scenario parser."),
            seed: 7,
            nodes: names(&["alice", "bob", "carol"]),
            settle_ms: 1500,
            stress: false,
            checkpoint_interval: None,
            network: Network {
                latency_ms: (2, 30),
                drop: 0.01,
                duplicate: 0.005,
            },
            steps: expected_steps,
            path: path.clone(),
        };
        assert_same(&scenario, &expected);
        let ops: Vec<&str> = scenario.steps.iter().map(|step| step.op.name()).collect();
        for op in OPS {
            assert!(ops.contains(&op), "the fixture lacks op {op}");
        }
        let checks: Vec<&str> = scenario
            .steps
            .iter()
            .filter_map(|step| match &step.op {
                Op::Expect(check) => Some(check.name()),
                _ => None,
            })
            .collect();
        for check in CHECKS {
            assert!(checks.contains(&check), "the fixture lacks check {check}");
        }
    }

    #[test]
    fn defaults_apply_when_fields_are_absent() {
        let scenario = Scenario::parse("name = \"x\"\nnodes = [\"a\"]\n", Path::new("<inline>"))
            .expect("valid");
        assert_eq!(scenario.seed, 0);
        assert_eq!(scenario.description, "");
        assert_eq!(scenario.settle_ms, SETTLE_MS_DEFAULT);
        assert_eq!(scenario.network, Network::default());
        assert_eq!(scenario.network.latency_ms, (1, 20));
        assert!(scenario.steps.is_empty());
        assert_eq!(scenario.path, Path::new("<inline>"));
    }

    #[test]
    fn steps_sort_by_time_and_keep_file_order_for_ties() {
        let text = r#"
name = "x"
nodes = ["a", "b"]
[[step]]
at = "2s"
op = "crash"
node = "b"
[[step]]
at = "1s"
op = "crash"
node = "a"
[[step]]
at = "1000ms"
op = "restart"
node = "a"
[[step]]
at = "0.5s"
op = "heal"
"#;
        let scenario = Scenario::parse(text, Path::new("x.toml")).expect("valid");
        let order: Vec<(u64, &str, usize)> = scenario
            .steps
            .iter()
            .map(|step| (step.at_ms, step.op.name(), step.line))
            .collect();
        assert_eq!(
            order,
            vec![
                (500, "heal", 16),
                (1000, "crash", 8),
                (1000, "restart", 12),
                (2000, "crash", 4)
            ]
        );
    }

    #[test]
    fn path_apps_resolve_relative_to_the_scenario_file() {
        let text = "name = \"x\"\nnodes = [\"a\"]\n[[step]]\nat = \"0ms\"\nop = \"create\"\n\
                    node = \"a\"\ncontext = \"c\"\napp = \"../apps/x.wasm\"\n";
        let scenario = Scenario::parse(text, Path::new("scenarios/sub/s.toml")).expect("valid");
        let Op::Create { app, .. } = &scenario.steps[0].op else {
            panic!("expected a create step");
        };
        assert_eq!(app, &AppRef::Path(PathBuf::from("scenarios/apps/x.wasm")));
        // Not opened at parse time: the file does not exist.
        assert_eq!(
            Scenario::parse(&scenario.to_toml(), &scenario.path),
            Ok(scenario)
        );
    }

    // -----------------------------------------------------------------------
    // Errors.

    const HEAD: &str = "name = \"x\"\nnodes = [\"alice\", \"bob\", \"carol\"]\n";

    /// Parses `text` as `scenarios/x.toml`, expecting an error on the line
    /// marked `# <-` (or line 1 if none is marked) whose message contains
    /// `wanted`.
    #[track_caller]
    fn assert_error(text: &str, wanted: &str) {
        let expected_line = text
            .lines()
            .position(|line| line.contains("# <-"))
            .map_or(1, |index| index + 1);
        let path = Path::new("scenarios/x.toml");
        let error = match Scenario::parse(text, path) {
            Ok(_) => panic!("expected an error containing {wanted:?} in:\n{text}"),
            Err(error) => error,
        };
        let shown = error.to_string();
        assert_eq!(
            error.line, expected_line,
            "wrong line for {shown:?} in:\n{text}"
        );
        assert!(
            shown.starts_with(&format!("scenarios/x.toml:{expected_line}: ")),
            "{shown:?}"
        );
        assert!(
            error.message.contains(wanted),
            "{shown:?} does not contain {wanted:?}"
        );
    }

    /// `HEAD`, a create of `c1` by alice, then `rest`.
    fn with_c1(rest: &str) -> String {
        format!(
            "{HEAD}[[step]]\nat = \"0ms\"\nop = \"create\"\nnode = \"alice\"\ncontext = \"c1\"\napp = \"kv\"\n{rest}"
        )
    }

    #[test]
    fn unreadable_files_are_reported_without_a_line() {
        let path = Path::new("/nonexistent/dir/x.toml");
        let error = Scenario::from_file(path).expect_err("no such file");
        assert_eq!(error.line, 0);
        let shown = error.to_string();
        assert!(
            shown.starts_with("/nonexistent/dir/x.toml: cannot open the scenario file"),
            "{shown}"
        );
    }

    #[test]
    fn a_file_that_is_not_utf8_is_reported_at_its_line() {
        let path =
            std::env::temp_dir().join(format!("ctx-sim-scenario-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            b"name = \"x\"\nnodes = [\"a\"]\ndescription = \"\xff\"\n",
        )
        .expect("temp dir is writable");
        let result = Scenario::from_file(&path);
        let _ = std::fs::remove_file(&path);
        let error = result.expect_err("not UTF-8");
        assert_eq!(error.line, 3);
        assert!(error.message.contains("not valid UTF-8"), "{error}");
    }

    #[test]
    fn toml_syntax_errors_name_the_line() {
        assert_error(
            &format!("{HEAD}seed = 1\nsettle = [1, # <-\n"),
            "invalid TOML",
        );
        assert_error(&format!("{HEAD}name = \"y\" # <-\n"), "name is given twice");
        assert_error(
            &format!("{HEAD}[step]\nat = \"0ms\"\n[step] # <-\n"),
            "write [[step]], with two brackets",
        );
        assert_error(
            &format!("{HEAD}[step] # <-\nat = \"0ms\"\nop = \"heal\"\n"),
            "[[step]]",
        );
    }

    #[test]
    fn missing_and_unknown_top_level_fields() {
        assert_error("nodes = [\"a\"]\n", "missing field \"name\"");
        assert_error("name = \"x\"\n", "missing field \"nodes\"");
        assert_error(
            "name = \"\" # <-\nnodes = [\"a\"]\n",
            "field \"name\" must not be empty",
        );
        assert_error(
            &format!("{HEAD}sede = 5 # <-\n"),
            "unknown field \"sede\" at the top level (expected one of: name, description, seed",
        );
        assert_error(
            &format!("{HEAD}[network]\nlatency_ms = [1, 2]\nlantecy_ms = [1, 20] # <-\n"),
            "unknown field \"lantecy_ms\" in [network] (expected one of: latency_ms, drop, duplicate)",
        );
    }

    #[test]
    fn wrong_types_say_what_was_expected() {
        assert_error(
            "name = \"x\"\nnodes = \"alice\" # <-\n",
            "field \"nodes\" must be an array, not a string",
        );
        assert_error(
            &format!("{HEAD}seed = \"42\" # <-\n"),
            "field \"seed\" must be a whole number, not a string",
        );
        assert_error(
            &format!("{HEAD}seed = -1 # <-\n"),
            "field \"seed\" must not be negative",
        );
        assert_error(
            &format!("{HEAD}seed = 1.5 # <-\n"),
            "must be a whole number, not a float",
        );
        assert_error(
            &format!("{HEAD}settle = 10 # <-\n"),
            "field \"settle\" must be a time such as \"250ms\"",
        );
        assert_error(
            &format!("{HEAD}network = 5 # <-\n"),
            "field \"network\" must be a table",
        );
        assert_error(&format!("{HEAD}step = 5 # <-\n"), "[[step]]");
        assert_error(
            &format!("{HEAD}step = [5] # <-\n"),
            "step 1 must be a [[step]] table, not an integer",
        );
        assert_error(
            &with_c1(
                "[[step]]\nat = \"1s\"\nop = \"workload\"\ncontext = \"c1\"\ncalls = \"5\" # <-\nover = \"1s\"\nmethods = [{method = \"m\"}]\n",
            ),
            "step 2: field \"calls\" must be a whole number, not a string",
        );
        assert_error(
            &with_c1(
                "[[step]]\nat = \"1s\"\nop = \"call\"\nnode = \"alice\"\ncontext = \"c1\"\nmethod = \"m\"\nargs = [1.5] # <-\n",
            ),
            "step 2: field \"args\": argument 1 must be a string, a whole number or {hex = \"00ff\"}, not a float",
        );
        assert_error(
            &with_c1(
                "[[step]]\nat = \"1s\"\nop = \"call\"\nnode = \"alice\"\ncontext = \"c1\"\nmethod = \"m\"\nargs = \"x\" # <-\n",
            ),
            "step 2: field \"args\" must be an array, not a string",
        );
    }

    #[test]
    fn node_lists_are_checked() {
        assert_error(
            "name = \"x\"\nnodes = [] # <-\n",
            "field \"nodes\" is empty",
        );
        assert_error(
            "name = \"x\"\nnodes = [\"a\",\n  \"a\", # <-\n]\n",
            "node \"a\" is listed twice in field \"nodes\"",
        );
        assert_error(
            "name = \"x\"\nnodes = [\"\"] # <-\n",
            "a node name must not be empty",
        );
        assert_error(
            &format!(
                "name = \"x\"\nnodes = [\"{}\"] # <-\n",
                "n".repeat(NAME_BYTES_MAX + 1)
            ),
            "is longer than 64 bytes",
        );
        assert_error(
            "name = \"x\"\nnodes = [1] # <-\n",
            "each entry of field \"nodes\" must be a string",
        );
    }

    #[test]
    fn unknown_nodes_are_named_with_the_declared_ones() {
        let known = "(nodes are: alice, bob, carol)";
        assert_error(
            &format!("{HEAD}[[step]]\nat = \"0ms\"\nop = \"crash\"\nnode = \"dave\" # <-\n"),
            &format!("step 1: unknown node \"dave\" in field \"node\" {known}"),
        );
        assert_error(
            &with_c1(
                "[[step]]\nat = \"1s\"\nop = \"invite\"\nnode = \"alice\"\ncontext = \"c1\"\nmember = \"dave\" # <-\n",
            ),
            &format!("step 2: unknown node \"dave\" in field \"member\" {known}"),
        );
        assert_error(
            &with_c1(
                "[[step]]\nat = \"1s\"\nop = \"join\"\nnode = \"bob\"\ncontext = \"c1\"\nvia = \"eve\" # <-\n",
            ),
            "unknown node \"eve\" in field \"via\"",
        );
        assert_error(
            &format!(
                "{HEAD}[[step]]\nat = \"0ms\"\nop = \"partition\"\ngroups = [[\"alice\"],\n  [\"bob\", \"dave\"]] # <-\n"
            ),
            "unknown node \"dave\" in field \"groups\"",
        );
        assert_error(
            &with_c1(
                "[[step]]\nat = \"1s\"\nop = \"workload\"\ncontext = \"c1\"\ncalls = 1\nover = \"1s\"\nmethods = [{method = \"m\"}]\nnodes = [\"zed\"] # <-\n",
            ),
            "unknown node \"zed\" in field \"nodes\"",
        );
        assert_error(
            &with_c1(
                "[[step]]\nat = \"1s\"\nop = \"expect\"\ncheck = \"members\"\ncontext = \"c1\"\nequals = [\"alice\", \"al\"] # <-\n",
            ),
            "unknown node \"al\" in field \"equals\"",
        );
        assert_error(
            &with_c1(
                "[[step]]\nat = \"1s\"\nop = \"expect\"\ncheck = \"value\"\ncontext = \"c1\"\nkey = \"k\"\nequals = false\nnodes = [\"x\"] # <-\n",
            ),
            "unknown node \"x\" in field \"nodes\"",
        );
    }

    #[test]
    fn contexts_must_be_created_once_before_use() {
        assert_error(
            &format!(
                "{HEAD}[[step]]\nat = \"0ms\"\nop = \"leave\"\nnode = \"alice\"\ncontext = \"c2\" # <-\n"
            ),
            "step 1: context \"c2\" is used before any step creates it",
        );
        // A create later in time does not help, and the message says where it is.
        assert_error(
            &format!(
                "{HEAD}[[step]]\nat = \"5s\"\nop = \"create\"\nnode = \"alice\"\ncontext = \"c\"\napp = \"kv\"\n\
                 [[step]]\nat = \"1s\"\nop = \"expect\"\ncheck = \"converged\"\ncontext = \"c\" # <-\n"
            ),
            "step 2: context \"c\" is used before any step creates it (step 1 creates it, but only at 5s)",
        );
        // Same time: file order decides.
        assert_error(
            &format!(
                "{HEAD}[[step]]\nat = \"0ms\"\nop = \"leave\"\nnode = \"bob\"\ncontext = \"c\" # <-\n\
                 [[step]]\nat = \"0ms\"\nop = \"create\"\nnode = \"alice\"\ncontext = \"c\"\napp = \"kv\"\n"
            ),
            "(step 2 creates it at the same time, but comes later in the file)",
        );
        assert_error(
            &with_c1(
                "[[step]]\nat = \"1s\"\nop = \"create\"\nnode = \"bob\"\ncontext = \"c1\" # <-\napp = \"bank\"\n",
            ),
            "step 2: context \"c1\" is already created by step 1 (line 3)",
        );
        assert_error(
            &format!(
                "{HEAD}[[step]]\nat = \"0ms\"\nop = \"create\"\nnode = \"alice\"\ncontext = \"\" # <-\napp = \"kv\"\n"
            ),
            "step 1: a context name must not be empty",
        );
    }

    #[test]
    fn ops_and_step_fields_are_checked() {
        assert_error(
            &format!("{HEAD}[[step]]\nat = \"0ms\"\nop = \"jion\" # <-\n"),
            "step 1: unknown op \"jion\" (expected one of: create, invite, join, leave, call, workload, partition, heal, crash, restart, network, expect)",
        );
        assert_error(
            &format!("{HEAD}[[step]] # <-\nat = \"0ms\"\n"),
            "step 1: missing field \"op\" (expected one of: create,",
        );
        assert_error(
            &format!("{HEAD}[[step]] # <-\nop = \"heal\"\n"),
            "step 1: missing field \"at\" (every step needs a time",
        );
        assert_error(
            &format!(
                "{HEAD}[[step]] # <-\nat = \"0ms\"\nop = \"create\"\nnode = \"alice\"\napp = \"kv\"\n"
            ),
            "step 1: missing field \"context\" (a create step needs: node, context, app)",
        );
        assert_error(
            &with_c1(
                "[[step]] # <-\nat = \"1s\"\nop = \"invite\"\nnode = \"alice\"\ncontext = \"c1\"\n",
            ),
            "step 2: missing field \"member\" (an invite step needs: node, context, member)",
        );
        assert_error(
            &with_c1(
                "[[step]]\nat = \"1s\"\nop = \"invite\"\nnode = \"alice\"\ncontext = \"c1\"\nmembr = \"bob\" # <-\n",
            ),
            "step 2: unknown field \"membr\" for op \"invite\" (expected one of: at, op, node, context, member)",
        );
        assert_error(
            &format!("{HEAD}[[step]]\nat = \"0ms\"\nop = \"heal\"\nnode = \"bob\" # <-\n"),
            "step 1: unknown field \"node\" for op \"heal\" (expected one of: at, op)",
        );
        assert_error(
            &format!(
                "{HEAD}[[step]]\nat = \"0ms\"\nop = \"create\"\nnode = \"alice\"\ncontext = \"c\"\napp = \"foo\" # <-\n"
            ),
            "step 1: app \"foo\" is neither a bundled app (kv, counter, bank) nor a path to a .wat or .wasm file",
        );
        assert_error(
            &with_c1(
                "[[step]]\nat = \"1s\"\nop = \"call\"\nnode = \"alice\"\ncontext = \"c1\"\nmethod = \"\" # <-\n",
            ),
            "step 2: field \"method\" must not be empty",
        );
    }

    #[test]
    fn times_are_checked() {
        let crash_at =
            |at: &str| format!("{HEAD}[[step]]\nat = {at} # <-\nop = \"crash\"\nnode = \"bob\"\n");
        assert_error(
            &crash_at("\"5 sec\""),
            "step 1: field \"at\": \"5 sec\" has unknown unit \"sec\" (expected ms, s or m)",
        );
        assert_error(&crash_at("\"5\""), "\"5\" has no unit; write 5ms, 5s or 5m");
        assert_error(&crash_at("\"-5ms\""), "times cannot be negative");
        assert_error(&crash_at("\"0.5ms\""), "not a whole number of milliseconds");
        assert_error(&crash_at("\"soon\""), "\"soon\" is not a duration");
        assert_error(
            &crash_at("5"),
            "step 1: field \"at\" must be a time such as \"250ms\"",
        );
        assert_error(&crash_at("\"99999999999999999999999m\""), "is too large");
        assert_error(&crash_at("\"366d\""), "unknown unit \"d\"");
        assert_error(&crash_at("\"525601m\""), "is beyond the limit of");
        assert_error(
            &format!("{HEAD}settle = \"ten seconds\" # <-\n"),
            "field \"settle\": \"ten seconds\" is not a duration",
        );
    }

    #[test]
    fn network_conditions_are_checked() {
        assert_error(
            &format!("{HEAD}[network]\ndrop = 1.5 # <-\n"),
            "field \"drop\" in [network] is a probability and must be between 0 and 1, not 1.5",
        );
        assert_error(
            &format!("{HEAD}[network]\nduplicate = -0.1 # <-\n"),
            "between 0 and 1, not -0.1",
        );
        assert_error(
            &format!("{HEAD}[network]\ndrop = nan # <-\n"),
            "between 0 and 1, not NaN",
        );
        assert_error(
            &format!("{HEAD}[network]\nlatency_ms = [30, 20] # <-\n"),
            "field \"latency_ms\" in [network]: the low end 30 is above the high end 20",
        );
        assert_error(
            &format!("{HEAD}[network]\nlatency_ms = [30] # <-\n"),
            "must be [low, high] in milliseconds",
        );
        assert_error(
            &format!("{HEAD}[network]\nlatency_ms = [1, \"2\"] # <-\n"),
            "the high end must be a whole number, not a string",
        );
        assert_error(
            &format!("{HEAD}[[step]]\nat = \"1s\"\nop = \"network\"\ndrop = 2 # <-\n"),
            "step 1: field \"drop\" is a probability",
        );
        assert_error(
            &format!("{HEAD}[[step]] # <-\nat = \"1s\"\nop = \"network\"\n"),
            "step 1: a network step changes nothing: give latency_ms, drop or duplicate",
        );
    }

    #[test]
    fn workloads_are_checked() {
        let workload = |calls: &str, over: &str, methods: &str| {
            with_c1(&format!(
                "[[step]]\nat = \"1s\"\nop = \"workload\"\ncontext = \"c1\"\ncalls = {calls}\nover = {over}\nmethods = {methods}\n"
            ))
        };
        let one_method = "[{method = \"set\", args = [\"$key\", \"$value\"]}]";
        assert_error(
            &workload("0 # <-", "\"1s\"", one_method),
            "step 2: field \"calls\" must be between 1 and 1000000, not 0",
        );
        assert_error(
            &workload("5000000000 # <-", "\"1s\"", one_method),
            "must be between 1 and 1000000, not 5000000000",
        );
        assert_error(
            &workload("5", "\"0s\" # <-", one_method),
            "step 2: field \"over\" must be longer than 0ms",
        );
        assert_error(
            &workload("5", "\"1s\"", "[] # <-"),
            "step 2: field \"methods\" must list between 1 and 64 methods, not 0",
        );
        assert_error(
            &workload("5", "\"1s\"", "[\"set\"] # <-"),
            "step 2: method 1: each method must be a table",
        );
        assert_error(
            &workload("5", "\"1s\"", "[{args = []}] # <-"),
            "step 2: method 1: missing field \"method\"",
        );
        assert_error(
            &workload("5", "\"1s\"", "[{method = \"m\", arg = []}] # <-"),
            "step 2: method 1: unknown field \"arg\" (expected one of: method, args)",
        );
        assert_error(
            &workload("5", "\"1s\"", "[{method = \"m\", args = [\"$kye\"]}] # <-"),
            "unknown draw \"$kye\" (expected \"$key\", \"$value\" or \"$amount\")",
        );
        assert_error(
            &with_c1(
                "[[step]]\nat = \"1s\"\nop = \"workload\"\ncontext = \"c1\"\ncalls = 1\nover = \"1s\"\nmethods = [{method = \"m\"}]\nnodes = [] # <-\n",
            ),
            "step 2: field \"nodes\" is empty",
        );
        assert_error(
            &with_c1(
                "[[step]]\nat = \"1s\"\nop = \"workload\"\ncontext = \"c1\"\ncalls = 1\nover = \"1s\"\nmethods = [{method = \"m\"}]\nnodes = [\"bob\", \"bob\"] # <-\n",
            ),
            "step 2: field \"nodes\" lists node \"bob\" twice",
        );
    }

    #[test]
    fn arguments_are_checked() {
        let call = |args: &str| {
            with_c1(&format!(
                "[[step]]\nat = \"1s\"\nop = \"call\"\nnode = \"alice\"\ncontext = \"c1\"\nmethod = \"set\"\nargs = {args} # <-\n"
            ))
        };
        assert_error(
            &call("[\"$key\"]"),
            "step 2: field \"args\": argument 1: \"$key\" draws a random value, which only a workload's methods can do; write {str = \"$key\"}",
        );
        assert_error(
            &call("[\"a\", {hex = \"abc\"}]"),
            "argument 2: \"abc\" is not hex bytes: it has an odd number of digits",
        );
        assert_error(
            &call("[{hex = \"zz\"}]"),
            "\"zz\" is not hex bytes: 'z' is not a hex digit",
        );
        assert_error(
            &call("[{hex = 5}]"),
            "argument 1: hex must be a string, not an integer",
        );
        assert_error(
            &call("[{bin = \"01\"}]"),
            "argument 1 has unknown key \"bin\" (expected hex, str, bool, or an integer type: u8, u16, u32, u64, u128, i8, i16, i32, i64, i128)",
        );
        assert_error(
            &call("[{u8 = 256}]"),
            "argument 1: u8: 256 is not a u8 (a whole number from 0 to 255)",
        );
        assert_error(
            &call("[{i8 = -129}]"),
            "argument 1: i8: -129 is not an i8 (a whole number from -128 to 127)",
        );
        assert_error(
            &call("[{u32 = 1.5}]"),
            "argument 1: u32 must be a whole number in decimal, not a float",
        );
        assert_error(
            &call("[{u64 = -1}]"),
            "argument 1: u64: -1 is not a u64 (a whole number from 0 to 18446744073709551615)",
        );
        assert_error(
            &call("[{bool = 1}]"),
            "argument 1: bool must be true or false, not an integer",
        );
        assert_error(&call("[{hex = \"01\", str = \"a\"}]"), "with one key");
        assert_error(&call("[-3]"), "argument 1 must not be negative");
        assert_error(&call("[true]"), "not a boolean");
    }

    #[test]
    fn partitions_are_checked() {
        let partition = |groups: &str| {
            format!("{HEAD}[[step]]\nat = \"1s\"\nop = \"partition\"\ngroups = {groups} # <-\n")
        };
        assert_error(
            &partition("[[\"alice\", \"alice\"]]"),
            "step 1: field \"groups\": group 1 lists node \"alice\" twice",
        );
        assert_error(
            &partition("[[\"alice\"], [\"bob\", \"alice\"]]"),
            "step 1: field \"groups\": node \"alice\" is in both group 1 and group 2",
        );
        assert_error(&partition("[[\"alice\"], []]"), "group 2 is empty");
        assert_error(
            &partition("[\"alice\"]"),
            "group 1 must be an array, not a string",
        );
        assert_error(
            &partition("\"alice\""),
            "step 1: field \"groups\" must be an array",
        );
    }

    #[test]
    fn checks_are_checked() {
        let expect =
            |rest: &str| with_c1(&format!("[[step]]\nat = \"1s\"\nop = \"expect\"\n{rest}"));
        assert_error(
            &expect("check = \"convergd\" # <-\ncontext = \"c1\"\n"),
            "step 2: unknown check \"convergd\" (expected one of: converged, value, members, not_member, applied, held_back, on_checkpoint)",
        );
        let expect_marked = |rest: &str| {
            with_c1(&format!(
                "[[step]] # <-\nat = \"1s\"\nop = \"expect\"\n{rest}"
            ))
        };
        assert_error(
            &expect_marked("context = \"c1\"\n"),
            "step 2: missing field \"check\" (expected one of: converged,",
        );
        assert_error(
            &expect_marked("check = \"value\"\ncontext = \"c1\"\nequals = 1\n"),
            "step 2: missing field \"key\" (a value check needs: context, key, equals)",
        );
        assert_error(
            &expect_marked("check = \"applied\"\ncontext = \"c1\"\nnode = \"bob\"\n"),
            "step 2: missing field \"at_least\" (an applied check needs: context, node, at_least)",
        );
        assert_error(
            &expect("check = \"value\"\ncontext = \"c1\"\nkey = \"k\"\nequals = true # <-\n"),
            "step 2: field \"equals\" cannot be true",
        );
        assert_error(
            &expect("check = \"value\"\ncontext = \"c1\"\nkey = \"$key\" # <-\nequals = 1\n"),
            "\"$key\" draws a random value",
        );
        assert_error(
            &expect("check = \"converged\"\ncontext = \"c1\"\nnode = \"bob\" # <-\n"),
            "step 2: unknown field \"node\" for check \"converged\" (expected one of: at, op, check, context)",
        );
        assert_error(
            &expect("check = \"members\"\ncontext = \"c1\"\nequals = [\"bob\", \"bob\"] # <-\n"),
            "field \"equals\" lists node \"bob\" twice",
        );
        assert_error(
            &expect("check = \"applied\"\ncontext = \"c1\"\nnode = \"bob\"\nat_least = -1 # <-\n"),
            "field \"at_least\" must not be negative",
        );
        assert_error(
            &expect("check = \"not_member\"\ncontext = \"c9\" # <-\nnode = \"bob\"\n"),
            "context \"c9\" is used before any step creates it",
        );
    }

    #[test]
    fn limits_are_enforced() {
        let many_nodes: Vec<String> = (0..=NODES_MAX)
            .map(|index| format!("\"n{index}\""))
            .collect();
        assert_error(
            &format!("name = \"x\"\nnodes = [{}] # <-\n", many_nodes.join(", ")),
            "too many nodes: 257 (at most 256)",
        );
        let many_args = vec!["1"; ARGS_MAX + 1].join(", ");
        assert_error(
            &with_c1(&format!(
                "[[step]]\nat = \"1s\"\nop = \"call\"\nnode = \"alice\"\ncontext = \"c1\"\nmethod = \"m\"\nargs = [{many_args}] # <-\n"
            )),
            "has 65 arguments (at most 64)",
        );
    }

    // -----------------------------------------------------------------------
    // Writing.

    #[test]
    fn to_toml_round_trips_every_op_check_and_argument_kind() {
        let scenario = Scenario::from_file(&fixture("every-op.toml")).expect("valid");
        let written = scenario.to_toml();
        let reread =
            Scenario::parse(&written, &scenario.path).expect("to_toml writes a valid file");
        assert_eq!(reread, scenario, "written:\n{written}");
        // Readable: one [[step]] per step, times with units.
        assert_eq!(written.matches("[[step]]").count(), scenario.steps.len());
        assert!(written.contains("at = \"20s\""), "{written}");
        assert!(
            written.contains("at = \"1100ms\"") || written.contains("at = \"20ms\""),
            "{written}"
        );
        assert!(written.contains("app = \"apps/custom.wat\""), "{written}");
        // Written once more, it is the same text: a fixed point.
        assert_eq!(reread.to_toml(), written);
    }

    #[test]
    fn to_toml_round_trips_awkward_values() {
        let scenario = Scenario {
            name: s("quotes \" and \\ and\nnewlines\t and ünïcode"),
            description: String::new(),
            seed: u64::MAX,
            nodes: names(&["a b", "c\"d", "'e'"]),
            settle_ms: 0,
            stress: false,
            checkpoint_interval: None,
            network: Network {
                latency_ms: (0, 0),
                drop: 0.1 + 0.2,
                duplicate: 1e-9,
            },
            steps: vec![
                step(
                    0,
                    0,
                    Op::Create {
                        node: s("a b"),
                        context: s("ctx \"1\""),
                        app: AppRef::Path(PathBuf::from("elsewhere/app.wasm")),
                    },
                ),
                step(
                    1,
                    0,
                    Op::Call {
                        node: s("'e'"),
                        context: s("ctx \"1\""),
                        method: s("m"),
                        args: vec![
                            Arg::Str(s("$key")),
                            Arg::Str(String::new()),
                            Arg::U64(u64::MAX),
                            Arg::U64(0),
                            Arg::Hex(Vec::new()),
                            Arg::Hex((0..=255).collect()),
                        ],
                    },
                ),
                step(
                    TIME_MS_MAX,
                    0,
                    Op::Workload {
                        context: s("ctx \"1\""),
                        calls: WORKLOAD_CALLS_MAX,
                        over_ms: 1,
                        methods: vec![MethodTemplate {
                            method: s("spin"),
                            args: Vec::new(),
                        }],
                        nodes: None,
                    },
                ),
                step(TIME_MS_MAX, 0, Op::Partition { groups: Vec::new() }),
                step(
                    TIME_MS_MAX,
                    0,
                    expect(Check::Members {
                        context: s("ctx \"1\""),
                        equals: Vec::new(),
                    }),
                ),
                step(
                    TIME_MS_MAX,
                    0,
                    expect(Check::Value {
                        context: s("ctx \"1\""),
                        key: Arg::U64(7),
                        equals: Expected::Bytes(Arg::Hex(vec![9])),
                        nodes: Some(names(&["c\"d"])),
                    }),
                ),
            ],
            path: PathBuf::from("out/shrunk.toml"),
        };
        let written = scenario.to_toml();
        let reread = Scenario::parse(&written, &scenario.path);
        assert_eq!(reread, Ok(scenario.clone()), "written:\n{written}");
        // Saved elsewhere, the app path still names the same file.
        let moved = Scenario {
            path: PathBuf::from("regressions/deep/x.toml"),
            ..scenario
        };
        assert!(
            moved
                .to_toml()
                .contains("app = \"../../elsewhere/app.wasm\""),
            "{}",
            moved.to_toml()
        );
    }

    #[test]
    fn relative_paths() {
        let cases = [
            ("a/b/x.wat", "a/b", Some("x.wat")),
            ("a/b/x.wat", "", Some("a/b/x.wat")),
            ("a/b/x.wat", "./a", Some("b/x.wat")),
            ("a/x.wat", "b/c", Some("../../a/x.wat")),
            ("../o/x.wat", "../s", Some("../o/x.wat")),
            ("/abs/x.wat", "/abs/dir", Some("../x.wat")),
            ("/abs/x.wat", "rel", Some("/abs/x.wat")),
            ("x.wat", "../up", None),
            ("x.wat", "/somewhere/else", None),
        ];
        let absolute = |path: &Path| normalize(&std::path::absolute(path).expect("absolute"));
        for (target, base, expected) in cases {
            let (target, base) = (Path::new(target), Path::new(base));
            let got = relative_path(target, base);
            if let Some(expected) = expected {
                assert_eq!(got, Path::new(expected), "{target:?} from {base:?}");
            }
            assert_eq!(
                absolute(&base.join(&got)),
                absolute(target),
                "{target:?} from {base:?} gave {got:?}"
            );
        }
    }

    // -----------------------------------------------------------------------
    // Helpers.

    #[test]
    fn stress_is_optional_and_round_trips() {
        let base = "name = \"s\"\nnodes = [\"a\"]\n";
        let plain = Scenario::parse(base, Path::new("s.toml")).unwrap();
        assert!(!plain.stress);
        let stressed =
            Scenario::parse(&format!("{base}stress = true\n"), Path::new("s.toml")).unwrap();
        assert!(stressed.stress);
        let again = Scenario::parse(&stressed.to_toml(), Path::new("s.toml")).unwrap();
        assert_eq!(again, stressed);
        let error = Scenario::parse(&format!("{base}stress = 1\n"), Path::new("s.toml"));
        assert!(error.unwrap_err().to_string().contains("true or false"));
    }

    #[test]
    fn durations() {
        let good = [
            ("0ms", 0),
            ("250ms", 250),
            ("5s", 5_000),
            ("2m", 120_000),
            ("1.5s", 1_500),
            ("0.001s", 1),
            ("1.25m", 75_000),
            ("10.000s", 10_000),
            ("007ms", 7),
            (" 3s ", 3_000),
            ("3 s", 3_000),
            ("18446744073709551615ms", u64::MAX),
            ("0.5000000000000000000000000000m", 30_000),
        ];
        for (text, ms) in good {
            assert_eq!(parse_duration_ms(text), Ok(ms), "{text:?}");
        }
        let bad = [
            ("", "empty"),
            ("   ", "empty"),
            ("-5s", "negative"),
            ("-0ms", "negative"),
            ("5", "no unit"),
            ("5h", "unknown unit \"h\""),
            ("5 sec", "unknown unit \"sec\""),
            ("5MS", "unknown unit"),
            ("ms", "not a duration"),
            (".5s", "not a duration"),
            ("5.s", "not a duration"),
            ("1.2.3s", "not a duration"),
            ("+5s", "not a duration"),
            ("1_000ms", "unknown unit"),
            ("0.5ms", "whole number of milliseconds"),
            ("0.0001s", "whole number of milliseconds"),
            ("1.0000000000000000000001s", "whole number of milliseconds"),
            ("18446744073709551616ms", "too large"),
            ("307445734561825861m", "too large"),
            ("99999999999999999999999999999999999999999s", "too large"),
        ];
        for (text, wanted) in bad {
            match parse_duration_ms(text) {
                Ok(ms) => panic!("{text:?} parsed to {ms}"),
                Err(message) => assert!(message.contains(wanted), "{text:?}: {message}"),
            }
        }
        for ms in [0, 1, 999, 1000, 1001, 60_000, 61_500, TIME_MS_MAX, u64::MAX] {
            assert_eq!(parse_duration_ms(&format_duration(ms)), Ok(ms));
        }
    }

    #[test]
    fn typed_arguments_encode_by_their_type_and_write_back() {
        let text = with_c1(
            "[[step]]\nat = \"1s\"\nop = \"call\"\nnode = \"alice\"\ncontext = \"c1\"\nmethod = \"m\"\nargs = [{u8 = 255}, {u32 = 7}, {i16 = -2}, {i64 = -9_000}, {u128 = \"340282366920938463463374607431768211455\"}, {i128 = \"-170141183460469231731687303715884105728\"}, {bool = true}, {bool = false}, {u64 = 5}]\n",
        );
        let scenario = Scenario::parse(&text, Path::new("typed.toml")).expect("parses");
        let Op::Call { args, .. } = &scenario.steps[1].op else {
            panic!("a call");
        };
        let bytes: Vec<Vec<u8>> = args.iter().map(|a| a.to_bytes().unwrap()).collect();
        assert_eq!(
            bytes,
            vec![
                vec![255],
                7u32.to_le_bytes().to_vec(),
                (-2i16).to_le_bytes().to_vec(),
                (-9_000i64).to_le_bytes().to_vec(),
                u128::MAX.to_le_bytes().to_vec(),
                i128::MIN.to_le_bytes().to_vec(),
                vec![1],
                vec![0],
                5u64.to_le_bytes().to_vec(),
            ]
        );
        // Written back, they read the same.
        let again = Scenario::parse(&scenario.to_toml(), Path::new("typed.toml")).expect("reads");
        assert_eq!(again, scenario);
    }

    #[test]
    fn arguments_encode_as_length_prefixed_bytes() {
        assert_eq!(Arg::Str(s("ab")).to_bytes(), Some(b"ab".to_vec()));
        assert_eq!(
            Arg::U64(0x0102).to_bytes(),
            Some(vec![2, 1, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(Arg::Hex(vec![0, 255]).to_bytes(), Some(vec![0, 255]));
        assert_eq!(Arg::Draw(Draw::Key).to_bytes(), None);
        assert_eq!(encode_args(&[]), Vec::<u8>::new());
        assert_eq!(
            encode_args(&[b"ab".to_vec(), Vec::new(), vec![7]]),
            vec![2, 0, 0, 0, b'a', b'b', 0, 0, 0, 0, 1, 0, 0, 0, 7]
        );
    }

    #[test]
    fn errors_display_with_and_without_a_line() {
        let error = ScenarioError {
            path: PathBuf::from("s/x.toml"),
            line: 42,
            message: s("step 3: unknown op \"jion\""),
        };
        assert_eq!(
            error.to_string(),
            "s/x.toml:42: step 3: unknown op \"jion\""
        );
        let error = ScenarioError { line: 0, ..error };
        assert_eq!(error.to_string(), "s/x.toml: step 3: unknown op \"jion\"");
    }

    // -----------------------------------------------------------------------
    // No input panics.

    /// A deterministic pseudo-random sequence (Knuth's MMIX LCG).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }

        fn below(&mut self, bound: usize) -> usize {
            (self.next() % bound as u64) as usize
        }
    }

    /// Parses without panicking; whatever parses holds the invariants and
    /// round-trips through `to_toml`.
    fn parse_any(text: &str) {
        let path = Path::new("fuzz/x.toml");
        let Ok(scenario) = Scenario::parse(text, path) else {
            return;
        };
        assert!(scenario.steps.is_sorted_by_key(|step| step.at_ms));
        let reread = Scenario::parse(&scenario.to_toml(), path);
        assert_eq!(reread, Ok(scenario), "from:\n{text}");
    }

    #[test]
    fn no_input_makes_the_parser_panic() {
        let valid = std::fs::read_to_string(fixture("every-op.toml")).expect("fixture");
        // Every prefix.
        for end in (0..=valid.len()).filter(|&end| valid.is_char_boundary(end)) {
            parse_any(&valid[..end]);
        }
        let mut rng = Lcg(0x5eed);
        // Random bytes, read as text.
        for _ in 0..2_000 {
            let len = rng.below(200);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            parse_any(&String::from_utf8_lossy(&bytes));
        }
        // The valid file with a few bytes changed, or a slice cut out, or
        // a line repeated: mostly still TOML, so the validation runs.
        let alphabet = b" \n\"'[]{}=,.#$-_0123456789abcdefmsxyz";
        for _ in 0..3_000 {
            let mut bytes = valid.as_bytes().to_vec();
            match rng.below(3) {
                0 => {
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(bytes.len());
                        bytes[at] = alphabet[rng.below(alphabet.len())];
                    }
                }
                1 => {
                    let from = rng.below(bytes.len());
                    let to = (from + rng.below(80)).min(bytes.len());
                    bytes.drain(from..to);
                }
                _ => {
                    let lines: Vec<&str> = valid.lines().collect();
                    let line = lines[rng.below(lines.len())];
                    let at = rng.below(lines.len());
                    let mut edited: Vec<&str> = lines.clone();
                    edited.insert(at, line);
                    bytes = edited.join("\n").into_bytes();
                }
            }
            parse_any(&String::from_utf8_lossy(&bytes));
        }
    }
}
