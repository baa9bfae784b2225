//! Writing a [`Scenario`] back as a file that reads back equal.
//!
//! What a file holds is serialized by serde: the top-level fields
//! ([`FileOut`]), the `[network]` table ([`Network`]) and each step as one
//! flat struct ([`StepOut`], the same fields [`read`](super::read) reads),
//! with arguments, durations and method templates serialized as the format
//! writes them. `toml`'s value serializer writes each value; [`Lines`] lays
//! a struct out as one `key = value` line per field, so that a workload's
//! methods and a typed argument stay inline on their field's line, as
//! people write them, instead of becoming tables of their own.
//!
//! Invariant: `Scenario::parse(&to_toml(s), &s.path) == Ok(s)` for every
//! valid `s` (the round-trip tests of this module, the generator, the
//! shrinker and the fuzzer check it).

use std::path::Path;

use serde::Serialize;
use serde::ser::{self, Impossible, SerializeMap};

use super::{
    AppRef, Arg, Byzantine, Check, Expected, Faults, MethodTemplate, Op, Scenario, format_duration,
    relative_path,
};

/// The file, with app paths relative to the directory of `scenario.path`.
pub(super) fn to_toml(scenario: &Scenario) -> String {
    let dir = scenario.path.parent().unwrap_or(Path::new(""));
    let mut out = String::new();
    write_lines(&mut out, &FileOut::of(scenario));
    out.push_str("\n[network]\n");
    write_lines(&mut out, &scenario.network);
    if scenario.disk != Faults::default() {
        out.push_str("\n[disk]\n");
        write_lines(&mut out, &scenario.disk);
    }
    if scenario.byzantine.any() {
        out.push_str("\n[byzantine]\n");
        write_lines(&mut out, &ByzantineOut::of(&scenario.byzantine));
    }
    for step in &scenario.steps {
        out.push_str("\n[[step]]\n");
        write_lines(&mut out, &StepOut::of(step.at_ms, &step.op, dir));
    }
    out
}

fn write_lines(out: &mut String, table: &impl Serialize) {
    // Every value a scenario holds has a TOML form: nothing here can fail.
    table
        .serialize(Lines(out))
        .expect("a scenario's fields always serialize");
}

/// The top-level fields, in the order a reader expects them.
#[derive(Serialize)]
struct FileOut<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    seed: u64,
    nodes: &'a [String],
    settle: Duration,
    #[serde(skip_serializing_if = "is_false")]
    stress: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkpoint_interval: Option<u64>,
}

impl<'a> FileOut<'a> {
    fn of(scenario: &'a Scenario) -> FileOut<'a> {
        FileOut {
            name: &scenario.name,
            description: &scenario.description,
            seed: scenario.seed,
            nodes: &scenario.nodes,
            settle: Duration(scenario.settle_ms),
            stress: scenario.stress,
            checkpoint_interval: scenario.checkpoint_interval,
        }
    }
}

fn is_false(flag: &bool) -> bool {
    !flag
}

/// One `[[step]]`: every field any op or check writes, in the order they
/// are written (`at`, `op`, then the op's own fields as `SCENARIOS.md`
/// lists them); each op sets only its own.
#[derive(Serialize, Default)]
struct StepOut<'a> {
    at: Duration,
    op: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<&'a [Arg]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    calls: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    over: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    methods: Option<&'a [MethodTemplate]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a Arg>,
    #[serde(skip_serializing_if = "Option::is_none")]
    equals: Option<EqualsOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<&'a [Vec<String>]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<(u64, u64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drop: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<f64>,
    /// A check's node, which it writes after its context (an op writes its
    /// node first).
    #[serde(rename = "node", skip_serializing_if = "Option::is_none")]
    check_node: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at_least: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate: Option<f64>,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    for_: Option<Duration>,
}

impl<'a> StepOut<'a> {
    fn of(at_ms: u64, op: &'a Op, dir: &Path) -> StepOut<'a> {
        let step = StepOut {
            at: Duration(at_ms),
            op: op.name(),
            ..StepOut::default()
        };
        match op {
            Op::Create { node, context, app } => StepOut {
                node: Some(node),
                context: Some(context),
                app: Some(match app {
                    AppRef::Bundled(name) => name.clone(),
                    AppRef::Path(path) => relative_path(path, dir).to_string_lossy().into_owned(),
                }),
                ..step
            },
            Op::Invite {
                node,
                context,
                member,
            } => StepOut {
                node: Some(node),
                context: Some(context),
                member: Some(member),
                ..step
            },
            Op::Join { node, context, via } => StepOut {
                node: Some(node),
                context: Some(context),
                via: Some(via),
                ..step
            },
            Op::Leave { node, context } => StepOut {
                node: Some(node),
                context: Some(context),
                ..step
            },
            Op::Call {
                node,
                context,
                method,
                args,
            } => StepOut {
                node: Some(node),
                context: Some(context),
                method: Some(method),
                args: Some(args),
                ..step
            },
            Op::Workload {
                context,
                calls,
                over_ms,
                methods,
                nodes,
            } => StepOut {
                context: Some(context),
                calls: Some(*calls),
                over: Some(Duration(*over_ms)),
                methods: Some(methods),
                nodes: nodes.as_deref(),
                ..step
            },
            Op::Partition { groups } => StepOut {
                groups: Some(groups),
                ..step
            },
            Op::Heal => step,
            Op::Crash { node } | Op::Restart { node } => StepOut {
                node: Some(node),
                ..step
            },
            Op::Clock {
                node,
                rate_permille,
            } => StepOut {
                node: Some(node),
                rate: Some(f64::from(*rate_permille) / 1000.0),
                ..step
            },
            Op::Pause { node, ms } | Op::DiskFull { node, ms } => StepOut {
                node: Some(node),
                for_: Some(Duration(*ms)),
                ..step
            },
            Op::Network {
                latency_ms,
                drop,
                duplicate,
            } => StepOut {
                latency_ms: *latency_ms,
                drop: *drop,
                duplicate: *duplicate,
                ..step
            },
            Op::Expect(check) => StepOut::of_check(check, step),
        }
    }

    fn of_check(check: &'a Check, step: StepOut<'a>) -> StepOut<'a> {
        let step = StepOut {
            check: Some(check.name()),
            context: Some(check.context()),
            ..step
        };
        match check {
            Check::Converged { .. } => step,
            Check::Value {
                key, equals, nodes, ..
            } => StepOut {
                key: Some(key),
                equals: Some(match equals {
                    Expected::Absent => EqualsOut::Absent(false),
                    Expected::Bytes(arg) => EqualsOut::Value(arg),
                }),
                nodes: nodes.as_deref(),
                ..step
            },
            Check::Members { equals, .. } => StepOut {
                equals: Some(EqualsOut::Members(equals)),
                ..step
            },
            Check::NotMember { node, .. } | Check::OnCheckpoint { node, .. } => StepOut {
                check_node: Some(node),
                ..step
            },
            Check::Applied { node, at_least, .. } => StepOut {
                check_node: Some(node),
                at_least: Some(*at_least),
                ..step
            },
            Check::HeldBack { node, by, .. } => StepOut {
                check_node: Some(node),
                by: Some(by),
                ..step
            },
        }
    }
}

/// What a check's `equals` holds.
#[derive(Serialize)]
#[serde(untagged)]
enum EqualsOut<'a> {
    /// `equals = false`: the key holds nothing.
    Absent(bool),
    Value(&'a Arg),
    Members(&'a [String]),
}

/// A time or span, written `"5s"` when it is whole seconds, else `"250ms"`.
#[derive(Default)]
struct Duration(u64);

impl Serialize for Duration {
    fn serialize<S: ser::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(self.0))
    }
}

/// An argument as `SCENARIOS.md` writes it: a string or an integer as
/// itself, anything else as a table of one key (`{ hex = "00ff" }`,
/// `{ u32 = 7 }`, `{ bool = true }`, and `{ str = "$x" }` for a string a
/// bare one would make a draw).
impl Serialize for Arg {
    fn serialize<S: ser::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn one<S: ser::Serializer>(
            serializer: S,
            key: &str,
            value: &impl Serialize,
        ) -> Result<S::Ok, S::Error> {
            let mut table = serializer.serialize_map(Some(1))?;
            table.serialize_entry(key, value)?;
            table.end()
        }
        match self {
            Arg::Str(text) if text.starts_with('$') => one(serializer, "str", text),
            Arg::Str(text) => serializer.serialize_str(text),
            Arg::U64(number) => serializer.serialize_u64(*number),
            Arg::Hex(bytes) => one(serializer, "hex", &hex::encode(bytes)),
            Arg::Int { ty, bits } => {
                let text = ty.format(*bits);
                // TOML's integers are 64-bit: a wider value is written as text.
                match text.parse::<i64>() {
                    Ok(number) => one(serializer, ty.name(), &number),
                    Err(_) => one(serializer, ty.name(), &text),
                }
            }
            Arg::Bool(flag) => one(serializer, "bool", flag),
            Arg::Draw(draw) => serializer.serialize_str(draw.as_str()),
        }
    }
}

// ---------------------------------------------------------------------------
// One struct as the lines of a table.

/// Serializes a struct as the body of a TOML table: one `key = value` line
/// per field, each value inline as `toml`'s value serializer writes it.
/// (`toml::to_string` would move a field holding a table, or an array of
/// tables, out into a `[section]` of its own, after the other fields.)
struct Lines<'o>(&'o mut String);

type Error = toml::ser::Error;

fn not_a_table() -> Error {
    ser::Error::custom("only a struct is written as the lines of a table")
}

impl ser::SerializeStruct for Lines<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.0.push_str(key);
        self.0.push_str(" = ");
        value.serialize(toml::ser::ValueSerializer::new(self.0))?;
        self.0.push('\n');
        Ok(())
    }

    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

/// Refuses every value that is not a struct.
macro_rules! not_a_table {
    ($($method:ident($($arg:ty),*) -> $ok:ty;)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<$ok, Error> {
            Err(not_a_table())
        }
    )*};
}

impl ser::Serializer for Lines<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self, Error> {
        Ok(self)
    }

    not_a_table! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_str(&str) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> Result<(), Error> {
        Err(not_a_table())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(not_a_table())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _variant_index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(not_a_table())
    }
}

/// The `[byzantine]` table as written.
#[derive(Serialize)]
struct ByzantineOut<'a> {
    nodes: &'a [String],
    rate: f64,
    behaviours: Vec<&'static str>,
}

impl<'a> ByzantineOut<'a> {
    fn of(byzantine: &'a Byzantine) -> Self {
        ByzantineOut {
            nodes: &byzantine.nodes,
            rate: byzantine.rate,
            behaviours: byzantine.behaviours.iter().map(|b| b.name()).collect(),
        }
    }
}
