//! Reading a scenario file: TOML text in, a validated [`Scenario`] out.
//!
//! Serde reads the file into flat structs ([`FileIn`], [`NetworkIn`],
//! [`StepIn`]) that name every field the format knows, each an
//! `Option<Spanned<Value>>`: serde refuses a name the format does not know
//! (`deny_unknown_fields`) and keeps where each value is written. What
//! depends on what a step is stays plain Rust over those structs: which
//! fields its op takes and needs ([`OP_SHAPES`], the one list of ops, and
//! [`CHECK_SHAPES`]), the type and range of each value, node and context
//! names, durations and arguments. So every message names the field, says
//! what was expected and points at the line, whatever serde would have said.
//!
//! A step is one flat struct rather than an enum tagged by `op` because
//! `toml` loses spans inside internally tagged enums (toml-rs/toml#535).
//!
//! Invariant: nothing here panics on any input; every refusal is a
//! [`ScenarioError`] with the file, the 1-based line and the problem.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{IgnoredAny, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::byzantine::{Behaviour, Byzantine};
use crate::clock::{RATE_MAX_PERMILLE, RATE_MIN_PERMILLE};

use super::{
    ARGS_MAX, AppRef, Arg, BUNDLED_APPS, Check, Draw, Expected, FILE_BYTES_MAX, Faults, IntType,
    METHODS_MAX, MethodTemplate, NAME_BYTES_MAX, NODES_MAX, Network, Op, SETTLE_MS_DEFAULT,
    STEPS_MAX, Scenario, ScenarioError, Step, TIME_MS_MAX, WORKLOAD_CALLS_MAX, format_duration,
    normalize, parse_duration_ms,
};

// ---------------------------------------------------------------------------
// What serde reads.

/// The top level of a file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    name: Option<Spanned<Value>>,
    description: Option<Spanned<Value>>,
    seed: Option<Spanned<Value>>,
    nodes: Option<Spanned<Value>>,
    settle: Option<Spanned<Value>>,
    stress: Option<Spanned<Value>>,
    checkpoint_interval: Option<Spanned<Value>>,
    /// Never present: taken out and read on its own ([`NetworkIn`]), so
    /// that its errors say `in [network]`; named so serde lists it.
    #[serde(rename = "network")]
    _network: Option<IgnoredAny>,
    /// Never present: taken out and read on its own ([`DiskIn`]).
    #[serde(rename = "disk")]
    _disk: Option<IgnoredAny>,
    /// Never present: taken out and read on its own ([`ByzantineIn`]).
    #[serde(rename = "byzantine")]
    _byzantine: Option<IgnoredAny>,
    /// Never present: taken out and read on their own ([`StepIn`]), so
    /// that their errors name the step; named so serde lists it.
    #[serde(rename = "step")]
    _step: Option<IgnoredAny>,
}

impl FileIn {
    fn fields(&self) -> Fields<'_> {
        Fields::of(
            [
                ("name", &self.name),
                ("description", &self.description),
                ("seed", &self.seed),
                ("nodes", &self.nodes),
                ("settle", &self.settle),
                ("stress", &self.stress),
                ("checkpoint_interval", &self.checkpoint_interval),
            ],
            Place::new(0, String::new(), ""),
        )
    }
}

/// Declares a table that serde reads with every field an optional value
/// and its span (refusing any other field), and [`Fields`] over the ones
/// present, in the order declared.
macro_rules! table_in {
    ($(#[$doc:meta])* $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            $($field: Option<Spanned<Value>>,)*
        }

        impl $name {
            fn fields(&self, place: Place) -> Fields<'_> {
                // `r#for` is the field `for`, as serde reads it too.
                Fields::of(
                    [$((stringify!($field).trim_start_matches("r#"), &self.$field)),*],
                    place,
                )
            }
        }
    };
}

table_in! {
    /// The `[network]` table.
    NetworkIn { latency_ms, drop, duplicate }
}

table_in! {
    /// The `[disk]` table.
    DiskIn { lose_unsynced, tear }
}

table_in! {
    /// The `[byzantine]` table.
    ByzantineIn { nodes, rate, behaviours }
}

table_in! {
    /// One `[[step]]`: every field any op or check takes. Which of them a
    /// step may have depends on its `op` (and `check`): see [`OP_SHAPES`].
    StepIn {
        at, op, check, node, context, app, member, via, method, args, calls, over, methods,
        nodes, groups, latency_ms, drop, duplicate, key, equals, at_least, by, rate,
        r#for,
    }
}

/// Only what says which op a step is: read when serde refuses a field of
/// the step, so that the message can say which fields that op takes.
#[derive(Deserialize)]
struct StepKindIn {
    op: Option<Spanned<Value>>,
    check: Option<Spanned<Value>>,
}

/// Any TOML value, as serde hands it over. The reader checks each value's
/// type itself, so that a wrong one is reported with its field and what
/// was expected.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    /// Saturated beyond the range of `i128`, which is still too large for
    /// any field.
    Integer(i128),
    Float(f64),
    Boolean(bool),
    Datetime,
    Array(Vec<Spanned<Value>>),
    /// In the order `toml` hands the keys over.
    Table(Vec<(String, Spanned<Value>)>),
}

/// The key under which `toml` hands a date-time to a visitor, as a map of
/// one entry (`toml_datetime`'s private field name).
const DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E>(self, flag: bool) -> Result<Value, E> {
        Ok(Value::Boolean(flag))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Value, E> {
        Ok(Value::Integer(number.into()))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Value, E> {
        Ok(Value::Integer(number.into()))
    }

    fn visit_i128<E>(self, number: i128) -> Result<Value, E> {
        Ok(Value::Integer(number))
    }

    fn visit_u128<E>(self, number: u128) -> Result<Value, E> {
        Ok(Value::Integer(i128::try_from(number).unwrap_or(i128::MAX)))
    }

    fn visit_f64<E>(self, number: f64) -> Result<Value, E> {
        Ok(Value::Float(number))
    }

    fn visit_str<E>(self, text: &str) -> Result<Value, E> {
        Ok(Value::Text(text.to_string()))
    }

    fn visit_string<E>(self, text: String) -> Result<Value, E> {
        Ok(Value::Text(text))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut array = Vec::new();
        while let Some(item) = items.next_element()? {
            array.push(item);
        }
        Ok(Value::Array(array))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        let mut table = Vec::new();
        while let Some(key) = entries.next_key::<String>()? {
            if key == DATETIME_KEY {
                entries.next_value::<IgnoredAny>()?;
                return Ok(Value::Datetime);
            }
            table.push((key, entries.next_value()?));
        }
        Ok(Value::Table(table))
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Text(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime => "a date-time",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// The type of a value as `toml` parsed it, as [`type_name`] says it.
fn type_name_of(value: Spanned<DeValue<'_>>) -> &'static str {
    Value::deserialize(value.into_deserializer()).map_or("a value", |value| type_name(&value))
}

// ---------------------------------------------------------------------------
// The ops and checks: the one list of what a step may be.

/// How one op or check is written (the fields it needs and may have) and
/// how it is read into a `T` once its fields are known to be those.
struct Shape<T: 'static> {
    name: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
    read: fn(&Reader<'_>, &Fields<'_>) -> Res<T>,
}

const fn shape<T>(
    name: &'static str,
    required: &'static [&'static str],
    optional: &'static [&'static str],
    read: fn(&Reader<'_>, &Fields<'_>) -> Res<T>,
) -> Shape<T> {
    Shape {
        name,
        required,
        optional,
        read,
    }
}

/// Every op, in the order `SCENARIOS.md` lists them. Each reads its
/// fields in the order listed, so a step missing several is told the
/// first.
const OP_SHAPES: [Shape<Op>; 15] = [
    shape("create", &["node", "context", "app"], &[], |r, f| {
        let (node, context) = (r.node(f, "node")?, context(f)?.0);
        let app = r.app(f)?;
        Ok(Op::Create { node, context, app })
    }),
    shape("invite", &["node", "context", "member"], &[], |r, f| {
        let (node, context) = (r.node(f, "node")?, context(f)?.0);
        let member = r.node(f, "member")?;
        Ok(Op::Invite {
            node,
            context,
            member,
        })
    }),
    shape("join", &["node", "context", "via"], &[], |r, f| {
        let (node, context) = (r.node(f, "node")?, context(f)?.0);
        let via = r.node(f, "via")?;
        Ok(Op::Join { node, context, via })
    }),
    shape("leave", &["node", "context"], &[], |r, f| {
        let (node, context) = (r.node(f, "node")?, context(f)?.0);
        Ok(Op::Leave { node, context })
    }),
    shape("call", &["node", "context", "method"], &["args"], |r, f| {
        let (node, context) = (r.node(f, "node")?, context(f)?.0);
        let (method, args) = (f.req_text("method")?, r.read_args(f, false)?);
        Ok(Op::Call {
            node,
            context,
            method,
            args,
        })
    }),
    shape(
        "workload",
        &["context", "calls", "over", "methods"],
        &["nodes"],
        |r, f| r.read_workload(f),
    ),
    shape("partition", &["groups"], &[], |r, f| {
        let groups = r.read_groups(f)?;
        Ok(Op::Partition { groups })
    }),
    shape("heal", &[], &[], |_, _| Ok(Op::Heal)),
    shape("crash", &["node"], &[], |r, f| {
        let node = r.node(f, "node")?;
        Ok(Op::Crash { node })
    }),
    shape("restart", &["node"], &[], |r, f| {
        let node = r.node(f, "node")?;
        Ok(Op::Restart { node })
    }),
    shape("clock", &["node", "rate"], &[], |r, f| {
        let node = r.node(f, "node")?;
        let rate_permille = f.req_rate("rate")?;
        Ok(Op::Clock {
            node,
            rate_permille,
        })
    }),
    shape("pause", &["node", "for"], &[], |r, f| {
        let node = r.node(f, "node")?;
        let ms = f.req_duration("for")?.0;
        Ok(Op::Pause { node, ms })
    }),
    shape("disk_full", &["node", "for"], &[], |r, f| {
        let node = r.node(f, "node")?;
        let ms = f.req_duration("for")?.0;
        Ok(Op::DiskFull { node, ms })
    }),
    shape(
        "network",
        &[],
        &["latency_ms", "drop", "duplicate"],
        |_, f| read_network_step(f),
    ),
    shape("expect", &["check"], &[], |r, f| {
        let check = f.one_of("check", &CHECK_SHAPES)?;
        Ok(Op::Expect((check.read)(r, f)?))
    }),
];

/// Every check an `expect` step may name. Each reads the step's context
/// first, as every check has one.
const CHECK_SHAPES: [Shape<Check>; 7] = [
    shape("converged", &["context"], &[], |_, f| {
        let context = context(f)?.0;
        Ok(Check::Converged { context })
    }),
    shape(
        "value",
        &["context", "key", "equals"],
        &["nodes"],
        |r, f| r.read_value_check(f),
    ),
    shape("members", &["context", "equals"], &[], |r, f| {
        let context = context(f)?.0;
        let equals = r.node_list(f, "equals", f.require("equals")?, true)?;
        Ok(Check::Members { context, equals })
    }),
    shape("not_member", &["context", "node"], &[], |r, f| {
        let (context, node) = (context(f)?.0, r.node(f, "node")?);
        Ok(Check::NotMember { context, node })
    }),
    shape("applied", &["context", "node", "at_least"], &[], |r, f| {
        let (context, node) = (context(f)?.0, r.node(f, "node")?);
        let at_least = f.req_u64("at_least")?.0;
        Ok(Check::Applied {
            context,
            node,
            at_least,
        })
    }),
    shape("held_back", &["context", "node", "by"], &[], |r, f| {
        let (context, node) = (context(f)?.0, r.node(f, "node")?);
        let by = r.node(f, "by")?;
        Ok(Check::HeldBack { context, node, by })
    }),
    shape("on_checkpoint", &["context", "node"], &[], |r, f| {
        let (context, node) = (context(f)?.0, r.node(f, "node")?);
        Ok(Check::OnCheckpoint { context, node })
    }),
];

pub(super) const OP_NAMES: [&str; 15] = names(&OP_SHAPES);
pub(super) const CHECK_NAMES: [&str; 7] = names(&CHECK_SHAPES);

const fn names<T, const N: usize>(shapes: &[Shape<T>; N]) -> [&'static str; N] {
    let mut names = [""; N];
    let mut index = 0;
    while index < N {
        names[index] = shapes[index].name;
        index += 1;
    }
    names
}

/// "an" before a vowel, else "a".
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Which op (and, for `expect`, which check) a step is.
struct StepShape {
    op: &'static Shape<Op>,
    check: Option<&'static Shape<Check>>,
}

impl StepShape {
    /// Reads `op`, and `check` for an expect step; refuses unknown names.
    fn read(fields: &mut Fields<'_>) -> Res<StepShape> {
        fields.place.needs = format!(" (expected one of: {})", OP_NAMES.join(", "));
        let op = fields.one_of("op", &OP_SHAPES)?;
        if op.name != "expect" {
            return Ok(StepShape { op, check: None });
        }
        fields.place.needs = format!(" (expected one of: {})", CHECK_NAMES.join(", "));
        let check = fields.one_of("check", &CHECK_SHAPES)?;
        Ok(StepShape {
            op,
            check: Some(check),
        })
    }

    fn allowed(&self) -> Vec<&'static str> {
        let mut allowed = vec!["at", "op"];
        allowed.extend(self.op.required);
        allowed.extend(self.op.optional);
        if let Some(check) = self.check {
            allowed.extend(check.required);
            allowed.extend(check.optional);
        }
        allowed
    }

    /// Follows an unknown field's name: ` for op "heal"`.
    fn known_for(&self) -> String {
        match self.check {
            Some(check) => format!(" for check {:?}", check.name),
            None => format!(" for op {:?}", self.op.name),
        }
    }

    /// Follows a missing field: ` (a create step needs: node, context, app)`.
    fn needs(&self) -> String {
        let (name, required, kind) = match self.check {
            Some(check) => (check.name, check.required, "check"),
            None => (self.op.name, self.op.required, "step"),
        };
        format!(
            " ({} {name} {kind} needs: {})",
            article(name),
            required.join(", ")
        )
    }
}

// ---------------------------------------------------------------------------
// Problems, and where they are.

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

fn start(value: &Spanned<Value>) -> usize {
    value.span().start
}

/// A key of a table as written: where it is, and where its value is.
struct Key {
    name: String,
    at: usize,
    value: Range<usize>,
}

fn keys_of(table: &DeTable<'_>) -> Vec<Key> {
    let key = |(name, value): (&Spanned<Cow<'_, str>>, &Spanned<DeValue<'_>>)| Key {
        name: name.get_ref().to_string(),
        at: name.span().start,
        value: value.span(),
    };
    table.iter().map(key).collect()
}

/// What serde refused in a table written with `keys`, said as the reader
/// says it. An unknown field is the first in the file (serde meets them
/// in `toml`'s order) that is not `allowed` (default: the fields serde
/// lists), followed by `known_for`; a number too large even for `toml` is
/// named with its field.
fn serde_problem(
    error: &toml::de::Error,
    keys: &[Key],
    place: &Place,
    known_for: &str,
    allowed: Option<&[&str]>,
) -> Bad {
    let at = error.span().map_or(place.at, |span| span.start);
    let Place { prefix, within, .. } = place;
    if let Some((name, listed)) = unknown_field(error.message()) {
        let allowed = allowed.map_or(listed, <[&str]>::to_vec);
        let first = keys
            .iter()
            .filter(|key| !allowed.contains(&key.name.as_str()))
            .min_by_key(|key| key.at);
        let (name, at) = first.map_or((name, at), |key| (key.name.as_str(), key.at));
        let expected = allowed.join(", ");
        return bad(
            at,
            format!(
                "{prefix}unknown field {name:?}{within}{known_for} (expected one of: {expected})"
            ),
        );
    }
    let message = error.message();
    let Some(key) = keys.iter().find(|key| key.value.contains(&at)) else {
        return bad(at, format!("{prefix}{message}"));
    };
    let what = format!("{prefix}field {:?}{within}", key.name);
    match message {
        _ if key.value.start != at => bad(at, format!("{what}: {message}")),
        "integer number overflowed" => {
            bad(at, format!("{what} is too large (at most {})", u64::MAX))
        }
        "floating-point number overflowed" => bad(at, format!("{what} is too large")),
        _ => bad(at, format!("{what}: {message}")),
    }
}

/// The field and the fields expected in serde's message for an unknown
/// field: "unknown field `x`, expected one of `a`, `b`".
fn unknown_field(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, expected) = rest.split_once('`')?;
    Some((name, expected.split('`').skip(1).step_by(2).collect()))
}

/// What messages about a table's fields say: `step 3: field "node"`,
/// `field "drop" in [network]`.
struct Place {
    /// Where the table starts: missing fields are reported here.
    at: usize,
    /// Starts every message, e.g. `"step 3: "`.
    prefix: String,
    /// Follows a field's name, e.g. `" in [network]"`.
    within: &'static str,
    /// Said after a missing field, e.g. `" (a create step needs: ...)"`.
    needs: String,
}

impl Place {
    fn new(at: usize, prefix: String, within: &'static str) -> Place {
        Place {
            at,
            prefix,
            within,
            needs: String::new(),
        }
    }
}

/// The fields present in one table, by name, with what to say about them.
struct Fields<'a> {
    present: Vec<(&'a str, &'a Spanned<Value>)>,
    place: Place,
}

impl<'a> Fields<'a> {
    fn of<const N: usize>(
        fields: [(&'a str, &'a Option<Spanned<Value>>); N],
        place: Place,
    ) -> Fields<'a> {
        let present = fields
            .into_iter()
            .filter_map(|(name, value)| Some((name, value.as_ref()?)))
            .collect();
        Fields { present, place }
    }

    fn what(&self, key: &str) -> String {
        format!("{}field {key:?}{}", self.place.prefix, self.place.within)
    }

    fn get(&self, key: &str) -> Option<&'a Spanned<Value>> {
        self.present
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| *value)
    }

    fn require(&self, key: &str) -> Res<&'a Spanned<Value>> {
        self.get(key).ok_or_else(|| {
            bad(
                self.place.at,
                format!(
                    "{}missing field {key:?}{}{}",
                    self.place.prefix, self.place.within, self.place.needs
                ),
            )
        })
    }

    /// Refuses the first field (in file order) not in `allowed`.
    fn only(&self, allowed: &[&str], known_for: &str) -> Res<()> {
        let unknown = self
            .present
            .iter()
            .filter(|(name, _)| !allowed.contains(name))
            .min_by_key(|(_, value)| start(value));
        match unknown {
            None => Ok(()),
            Some((name, value)) => Err(bad(
                start(value),
                format!(
                    "{}unknown field {name:?}{}{known_for} (expected one of: {})",
                    self.place.prefix,
                    self.place.within,
                    allowed.join(", ")
                ),
            )),
        }
    }

    /// The required field `key` (`op` or `check`), naming one of `shapes`.
    fn one_of<T>(&self, key: &str, shapes: &'static [Shape<T>]) -> Res<&'static Shape<T>> {
        let (name, at) = self.req_string(key)?;
        let shape = shapes.iter().find(|shape| shape.name == name);
        shape.ok_or_else(|| {
            let names: Vec<&str> = shapes.iter().map(|shape| shape.name).collect();
            let prefix = &self.place.prefix;
            let expected = names.join(", ");
            bad(
                at,
                format!("{prefix}unknown {key} {name:?} (expected one of: {expected})"),
            )
        })
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
                Value::Boolean(flag) => Ok(*flag),
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
        let Value::Text(text) = value.get_ref() else {
            return Err(wrong_type(
                value,
                &what,
                "a time such as \"250ms\", \"5s\" or \"2m\"",
            ));
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
        self.duration(key)?.ok_or_else(|| {
            bad(
                self.place.at,
                format!("{}missing field {key:?}", self.place.prefix),
            )
        })
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

    /// A clock rate, as a multiple of true time (`0.5`, `2`), in
    /// thousandths.
    fn req_rate(&self, key: &str) -> Res<u32> {
        let value = self.require(key)?;
        let what = self.what(key);
        let rate = expect_f64(value, &what)?;
        let (low, high) = (
            f64::from(RATE_MIN_PERMILLE) / 1000.0,
            f64::from(RATE_MAX_PERMILLE) / 1000.0,
        );
        if !(low..=high).contains(&rate) {
            return Err(bad(
                start(value),
                format!(
                    "{what} is how fast the node's clock runs against true time and must be between {low} and {high}, not {rate}"
                ),
            ));
        }
        Ok((rate * 1000.0).round() as u32)
    }

    fn latency(&self, key: &str) -> Res<Option<(u64, u64)>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        let what = self.what(key);
        let shape = "[low, high] in milliseconds, such as [1, 20]";
        let [low, high] = expect_array(value, &what)? else {
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

fn wrong_type(value: &Spanned<Value>, what: &str, expected: &str) -> Bad {
    bad(
        start(value),
        format!(
            "{what} must be {expected}, not {}",
            type_name(value.get_ref())
        ),
    )
}

fn expect_str<'a>(value: &'a Spanned<Value>, what: &str) -> Res<&'a str> {
    match value.get_ref() {
        Value::Text(text) => Ok(text),
        _ => Err(wrong_type(value, what, "a string")),
    }
}

fn expect_u64(value: &Spanned<Value>, what: &str) -> Res<u64> {
    let Value::Integer(integer) = value.get_ref() else {
        return Err(wrong_type(value, what, "a whole number"));
    };
    if *integer < 0 {
        return Err(bad(start(value), format!("{what} must not be negative")));
    }
    u64::try_from(*integer).map_err(|_| {
        bad(
            start(value),
            format!("{what} is too large (at most {})", u64::MAX),
        )
    })
}

fn expect_f64(value: &Spanned<Value>, what: &str) -> Res<f64> {
    match value.get_ref() {
        Value::Float(float) => Ok(*float),
        Value::Integer(_) => expect_u64(value, what).map(|number| number as f64),
        _ => Err(wrong_type(value, what, "a number")),
    }
}

fn expect_array<'a>(value: &'a Spanned<Value>, what: &str) -> Res<&'a [Spanned<Value>]> {
    match value.get_ref() {
        Value::Array(array) => Ok(array),
        _ => Err(wrong_type(value, what, "an array")),
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

// ---------------------------------------------------------------------------
// The file.

pub(super) fn read_text(path: &Path) -> Result<String, ScenarioError> {
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

/// Reads and validates `text`, the file at `path`.
pub(super) fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
    let lines = LineIndex::new(text);
    let root = DeTable::parse(text).map_err(|error| ScenarioError {
        path: path.to_path_buf(),
        line: error.span().map_or(1, |span| lines.line(span.start)),
        message: syntax_message(&error, text, &lines),
    })?;
    let mut reader = Reader {
        source: text,
        path,
        dir: path.parent().unwrap_or(Path::new("")).to_path_buf(),
        lines: &lines,
        nodes: Vec::new(),
    };
    reader.read_scenario(root).map_err(|bad| ScenarioError {
        path: path.to_path_buf(),
        line: lines.line(bad.at),
        message: bad.message,
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

/// A step as read, with what the context check needs.
struct ReadStep {
    step: Step,
    /// 1-based position among the file's `[[step]]` tables.
    number: usize,
    /// The context it names and where.
    context: Option<(String, usize)>,
}

struct Reader<'p> {
    /// The file's text, for what serde does not keep: how an integer was
    /// written.
    source: &'p str,
    path: &'p Path,
    /// The scenario file's directory, for relative app paths.
    dir: PathBuf,
    lines: &'p LineIndex,
    /// The declared nodes, once read.
    nodes: Vec<String>,
}

impl Reader<'_> {
    fn read_scenario(&mut self, mut root: Spanned<DeTable<'_>>) -> Res<Scenario> {
        let keys = keys_of(root.get_ref());
        // Taken out to be read on their own: serde does not walk them twice.
        let network = root.get_mut().remove("network");
        let disk = root.get_mut().remove("disk");
        let byzantine = root.get_mut().remove("byzantine");
        let steps = root.get_mut().remove("step");
        let file = FileIn::deserialize(toml::de::Deserializer::from(root)).map_err(|error| {
            let place = Place::new(0, String::new(), "");
            serde_problem(&error, &keys, &place, " at the top level", None)
        })?;
        let mut top = file.fields();
        top.place.needs = " (every scenario needs a name and its nodes)".to_string();
        let name = top.req_text("name")?;
        let description = top.string("description")?.map_or("", |(text, _)| text);
        let seed = top.u64("seed")?.map_or(0, |(seed, _)| seed);
        self.nodes = read_declared_nodes(top.require("nodes")?)?;
        let settle_ms = top
            .duration("settle")?
            .map_or(SETTLE_MS_DEFAULT, |(ms, _)| ms);
        let stress = top.boolean("stress")?.unwrap_or(false);
        let checkpoint_interval = match top.u64("checkpoint_interval")? {
            Some((0, at)) => {
                return Err(bad(
                    at,
                    "checkpoint_interval must be at least 1 (heights between two checkpoints)",
                ));
            }
            other => other.map(|(interval, _)| interval),
        };
        let network = match network {
            None => Network::default(),
            Some(value) => read_network_table(value)?,
        };
        let disk = match disk {
            None => Faults::default(),
            Some(value) => read_disk_table(value)?,
        };
        let byzantine = match byzantine {
            None => Byzantine::default(),
            Some(value) => self.read_byzantine_table(value)?,
        };
        let mut steps = match steps {
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
            disk,
            byzantine,
            steps: steps.into_iter().map(|read| read.step).collect(),
            path: self.path.to_path_buf(),
        })
    }

    /// The `[byzantine]` table: `nodes` (required, declared nodes), `rate`
    /// (a probability, default [`Byzantine::RATE_DEFAULT`]) and
    /// `behaviours` (names, default all of them).
    fn read_byzantine_table(&self, value: Spanned<DeValue<'_>>) -> Res<Byzantine> {
        let at = value.span().start;
        let DeValue::Table(table) = value.get_ref() else {
            let found = type_name_of(value);
            return Err(bad(
                at,
                format!("field \"byzantine\" must be a table, not {found}"),
            ));
        };
        let keys = keys_of(table);
        let mut place = Place::new(at, String::new(), " in [byzantine]");
        place.needs = " (a [byzantine] table names the nodes that lie)".to_string();
        let read = ByzantineIn::deserialize(value.into_deserializer())
            .map_err(|error| serde_problem(&error, &keys, &place, "", None))?;
        let fields = read.fields(place);
        let nodes = self.node_list(&fields, "nodes", fields.require("nodes")?, false)?;
        let rate = fields
            .probability("rate")?
            .unwrap_or(Byzantine::RATE_DEFAULT);
        let behaviours = match fields.get("behaviours") {
            None => Behaviour::ALL.to_vec(),
            Some(value) => {
                let what = fields.what("behaviours");
                let items = expect_array(value, &what)?;
                if items.is_empty() {
                    return Err(bad(
                        start(value),
                        format!(
                            "{what} is empty: list at least one, or leave the field out for all of them"
                        ),
                    ));
                }
                let mut behaviours = Vec::with_capacity(items.len());
                for item in items {
                    let name = expect_str(item, &what)?;
                    let Some(behaviour) = Behaviour::from_name(name) else {
                        let known: Vec<&str> = Behaviour::ALL.iter().map(|b| b.name()).collect();
                        return Err(bad(
                            start(item),
                            format!(
                                "unknown behaviour {name:?} in [byzantine] (expected one of: {})",
                                known.join(", ")
                            ),
                        ));
                    };
                    if behaviours.contains(&behaviour) {
                        return Err(bad(start(item), format!("{what} lists {name:?} twice")));
                    }
                    behaviours.push(behaviour);
                }
                behaviours
            }
        };
        Ok(Byzantine {
            nodes,
            rate,
            behaviours,
        })
    }

    fn read_steps(&self, value: Spanned<DeValue<'_>>) -> Res<Vec<ReadStep>> {
        let at = value.span().start;
        let DeValue::Array(tables) = value.into_inner() else {
            return Err(bad(
                at,
                "steps must be written as [[step]] tables, with two brackets",
            ));
        };
        if tables.len() > STEPS_MAX {
            return Err(bad(
                at,
                format!("too many steps: {} (at most {STEPS_MAX})", tables.len()),
            ));
        }
        tables
            .into_iter()
            .enumerate()
            .map(|(index, table)| self.read_step(index + 1, table))
            .collect()
    }

    fn read_step(&self, number: usize, table: Spanned<DeValue<'_>>) -> Res<ReadStep> {
        let at = table.span().start;
        let prefix = format!("step {number}: ");
        if !matches!(table.get_ref(), DeValue::Table(_)) {
            let found = type_name_of(table);
            return Err(bad(
                at,
                format!("step {number} must be a [[step]] table, not {found}"),
            ));
        }
        let step = match StepIn::deserialize(table.clone().into_deserializer()) {
            Ok(step) => step,
            Err(error) => return Err(refused_step(&error, table, at, prefix)),
        };
        let mut fields = step.fields(Place::new(at, prefix, ""));
        let shape = StepShape::read(&mut fields)?;
        fields.only(&shape.allowed(), &shape.known_for())?;
        fields.place.needs = " (every step needs a time, such as at = \"250ms\")".to_string();
        let (at_ms, _) = fields.req_duration("at")?;
        fields.place.needs = shape.needs();
        let op = (shape.op.read)(self, &fields)?;
        let context = match op.context() {
            Some(_) => Some(context(&fields)?),
            None => None,
        };
        Ok(ReadStep {
            step: Step {
                at_ms,
                line: self.lines.line(at),
                op,
            },
            number,
            context,
        })
    }

    fn read_workload(&self, fields: &Fields<'_>) -> Res<Op> {
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
            .map(|(index, value)| self.read_method(fields, index + 1, value))
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

    fn read_groups(&self, fields: &Fields<'_>) -> Res<Vec<Vec<String>>> {
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
            for member in members {
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

    fn read_value_check(&self, fields: &Fields<'_>) -> Res<Check> {
        let context = context(fields)?.0;
        let key_value = fields.require("key")?;
        let key = self.read_arg(key_value, &fields.what("key"), false)?;
        let equals_value = fields.require("equals")?;
        let equals = match equals_value.get_ref() {
            Value::Boolean(false) => Expected::Absent,
            Value::Boolean(true) => {
                return Err(bad(
                    start(equals_value),
                    format!(
                        "{} cannot be true: give the expected value, or false for absent",
                        fields.what("equals")
                    ),
                ));
            }
            _ => Expected::Bytes(self.read_arg(equals_value, &fields.what("equals"), false)?),
        };
        let nodes = match fields.get("nodes") {
            None => None,
            Some(value) => Some(self.node_list(fields, "nodes", value, false)?),
        };
        Ok(Check::Value {
            context,
            key,
            equals,
            nodes,
        })
    }

    /// A required field naming a declared node.
    fn node(&self, fields: &Fields<'_>, key: &str) -> Res<String> {
        self.node_value(fields, key, fields.require(key)?)
    }

    fn node_value(&self, fields: &Fields<'_>, key: &str, value: &Spanned<Value>) -> Res<String> {
        let name = expect_str(value, &fields.what(key))?;
        if !self.nodes.iter().any(|node| node == name) {
            return Err(bad(
                start(value),
                format!(
                    "{}unknown node {name:?} in field {key:?} (nodes are: {})",
                    fields.place.prefix,
                    self.nodes.join(", ")
                ),
            ));
        }
        Ok(name.to_string())
    }

    /// A list of declared nodes, none twice.
    fn node_list(
        &self,
        fields: &Fields<'_>,
        key: &str,
        value: &Spanned<Value>,
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
        for item in items {
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

    fn app(&self, fields: &Fields<'_>) -> Res<AppRef> {
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
                fields.place.prefix,
                BUNDLED_APPS.join(", ")
            ),
        ))
    }

    fn read_method(
        &self,
        fields: &Fields<'_>,
        number: usize,
        value: &Spanned<Value>,
    ) -> Res<MethodTemplate> {
        let prefix = format!("{}method {number}: ", fields.place.prefix);
        let Value::Table(table) = value.get_ref() else {
            return Err(bad(
                start(value),
                format!(
                    "{prefix}each method must be a table such as {{method = \"set\", args = [\"$key\", \"$value\"]}}, not {}",
                    type_name(value.get_ref())
                ),
            ));
        };
        let mut place = Place::new(start(value), prefix, "");
        place.needs = " (a method needs: method, and may have args)".to_string();
        let method_fields = Fields {
            present: table
                .iter()
                .map(|(key, value)| (key.as_str(), value))
                .collect(),
            place,
        };
        method_fields.only(&["method", "args"], "")?;
        Ok(MethodTemplate {
            method: method_fields.req_text("method")?,
            args: self.read_args(&method_fields, true)?,
        })
    }

    /// The optional `args` field; draws are allowed only in workload methods.
    fn read_args(&self, fields: &Fields<'_>, may_draw: bool) -> Res<Vec<Arg>> {
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
            .map(|(index, item)| {
                self.read_arg(item, &format!("{what}: argument {}", index + 1), may_draw)
            })
            .collect()
    }

    fn read_arg(&self, value: &Spanned<Value>, what: &str, may_draw: bool) -> Res<Arg> {
        match value.get_ref() {
            Value::Text(text) => read_text_arg(text, start(value), what, may_draw),
            Value::Integer(_) => Ok(Arg::U64(expect_u64(value, what)?)),
            Value::Table(table) => {
                let [(key, inner)] = table.as_slice() else {
                    return Err(bad(
                        start(value),
                        format!(
                            "{what} must be {{hex = \"00ff\"}}, {{str = \"...\"}}, {{bool = true}} or a typed integer such as {{u32 = 7}}, with one key"
                        ),
                    ));
                };
                match key.as_str() {
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
                        Value::Boolean(flag) => Ok(Arg::Bool(*flag)),
                        _ => Err(wrong_type(inner, &format!("{what}: bool"), "true or false")),
                    },
                    name => match IntType::from_name(name) {
                        Some(ty) => self.read_int_arg(inner, ty, what),
                        None => Err(bad(
                            start(inner),
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

    /// `{u32 = 7}`: a whole number in decimal, or a decimal string (for
    /// 128-bit values past what TOML's integers hold), that fits `ty`.
    /// The number is taken as written, from the file's text: serde hands
    /// over only its value.
    fn read_int_arg(&self, inner: &Spanned<Value>, ty: IntType, what: &str) -> Res<Arg> {
        let what = format!("{what}: {}", ty.name());
        let written = self.source.get(inner.span()).unwrap_or("");
        let decimal = !["0x", "0o", "0b"]
            .iter()
            .any(|radix| written.starts_with(radix));
        let text = match inner.get_ref() {
            Value::Integer(_) if decimal => &written.replace('_', ""),
            Value::Text(text) => text.as_str(),
            _ => return Err(wrong_type(inner, &what, "a whole number in decimal")),
        };
        ty.parse(text)
            .map(|bits| Arg::Int { ty, bits })
            .map_err(|reason| bad(start(inner), format!("{what}: {reason}")))
    }
}

/// Why serde refused a step table: for an unknown field, said with the
/// fields its op takes, once the op itself is known to be valid.
fn refused_step(
    error: &toml::de::Error,
    table: Spanned<DeValue<'_>>,
    at: usize,
    prefix: String,
) -> Bad {
    let keys = match table.get_ref() {
        DeValue::Table(table) => keys_of(table),
        _ => Vec::new(),
    };
    let place = Place::new(at, prefix, "");
    let Ok(kind) = StepKindIn::deserialize(table.into_deserializer()) else {
        return serde_problem(error, &keys, &place, "", None);
    };
    let mut fields = Fields::of([("op", &kind.op), ("check", &kind.check)], place);
    match StepShape::read(&mut fields) {
        Ok(shape) => serde_problem(
            error,
            &keys,
            &fields.place,
            &shape.known_for(),
            Some(&shape.allowed()),
        ),
        Err(problem) => problem,
    }
}

fn read_declared_nodes(value: &Spanned<Value>) -> Res<Vec<String>> {
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
    for item in items {
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

fn read_network_table(value: Spanned<DeValue<'_>>) -> Res<Network> {
    let at = value.span().start;
    if !matches!(value.get_ref(), DeValue::Table(_)) {
        let found = type_name_of(value);
        return Err(bad(
            at,
            format!("field \"network\" must be a table, not {found}"),
        ));
    }
    let keys = match value.get_ref() {
        DeValue::Table(table) => keys_of(table),
        _ => Vec::new(),
    };
    let place = Place::new(at, String::new(), " in [network]");
    let network = NetworkIn::deserialize(value.into_deserializer())
        .map_err(|error| serde_problem(&error, &keys, &place, "", None))?;
    let fields = network.fields(place);
    let defaults = Network::default();
    Ok(Network {
        latency_ms: fields.latency("latency_ms")?.unwrap_or(defaults.latency_ms),
        drop: fields.probability("drop")?.unwrap_or(defaults.drop),
        duplicate: fields
            .probability("duplicate")?
            .unwrap_or(defaults.duplicate),
    })
}

fn read_disk_table(value: Spanned<DeValue<'_>>) -> Res<Faults> {
    let at = value.span().start;
    let DeValue::Table(table) = value.get_ref() else {
        let found = type_name_of(value);
        return Err(bad(
            at,
            format!("field \"disk\" must be a table, not {found}"),
        ));
    };
    let keys = keys_of(table);
    let place = Place::new(at, String::new(), " in [disk]");
    let disk = DiskIn::deserialize(value.into_deserializer())
        .map_err(|error| serde_problem(&error, &keys, &place, "", None))?;
    let fields = disk.fields(place);
    Ok(Faults {
        lose_unsynced: fields.probability("lose_unsynced")?.unwrap_or(0.0),
        tear: fields.probability("tear")?.unwrap_or(0.0),
    })
}

fn read_network_step(fields: &Fields<'_>) -> Res<Op> {
    let latency_ms = fields.latency("latency_ms")?;
    let drop = fields.probability("drop")?;
    let duplicate = fields.probability("duplicate")?;
    if latency_ms.is_none() && drop.is_none() && duplicate.is_none() {
        return Err(bad(
            fields.place.at,
            format!(
                "{}a network step changes nothing: give latency_ms, drop or duplicate",
                fields.place.prefix
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
fn context(fields: &Fields<'_>) -> Res<(String, usize)> {
    let (name, at) = fields.req_string("context")?;
    check_name(name, "context name", at).map_err(|mut problem| {
        problem.message = format!("{}{}", fields.place.prefix, problem.message);
        problem
    })?;
    Ok((name.to_string(), at))
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
