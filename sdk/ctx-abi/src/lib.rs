//! # ctx-abi: the description of an app's methods that a module carries
//!
//! An app written with `ctx-sdk` embeds, in a WebAssembly custom section
//! named [`SECTION_NAME`], a JSON document describing its methods: their
//! names, whether each is a view (read-only) or a call, their parameters
//! (name and [`Type`]) in order, their return type, and whether they can fail
//! with a message. This crate is the one reader of that section, for every
//! tool that drives an app (`ctx-sim`, `ctx-node`, tests); it depends on no
//! WebAssembly runtime, only on `wasmparser` to find the section.
//!
//! It owns these invariants:
//!
//! - **A parsed [`Abi`] is well formed**: its version is [`ABI_VERSION`],
//!   method names are distinct, non-empty and at most
//!   [`METHOD_NAME_BYTES_MAX`] bytes, parameter names are distinct within a
//!   method, the section is at most [`SECTION_BYTES_MAX`] bytes, and every
//!   method marked [`Method::invariant`] is a view with no parameters that
//!   returns `unit` (it holds or fails with a message). A
//!   section that breaks any of these is an [`AbiError`] that says what is
//!   wrong; a module without the section is `Ok(None)` (it keeps working as
//!   before, with untyped arguments).
//! - **One encoding of values**, the argument convention of `docs/ABI.md`:
//!   the input is the arguments concatenated, each a 4-byte little-endian
//!   length and its bytes; inside, an integer is its fixed-width
//!   little-endian bytes, a `string` its UTF-8, `bytes` themselves, a `key`
//!   at most 32 bytes (the app pads it to 32). `ctx-sdk` decodes exactly
//!   what [`Method::encode_words`] and [`Method::encode_json`] produce, and
//!   [`Type::decode`] reads what it returns. Bad input (a wrong count, a
//!   word that is not of its type, a return value of the wrong length) is a
//!   typed error, never a panic.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// The custom section an SDK app's ABI lives in.
pub const SECTION_NAME: &str = "ctx_abi";

/// The version of the section's JSON document this crate reads.
pub const ABI_VERSION: u32 = 1;

/// The largest section accepted: far more than any real app needs, and
/// small beside the 4 MiB a module may have.
pub const SECTION_BYTES_MAX: usize = 256 * 1024;

/// The longest method name the runtime calls (`ctx_core::limits`).
pub const METHOD_NAME_BYTES_MAX: usize = 64;

/// The longest key argument: keys are 32 bytes, shorter ones zero-padded.
pub const KEY_BYTES_MAX: usize = 32;

/// An app's ABI: the section's document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abi {
    pub version: u32,
    pub methods: Vec<Method>,
}

/// One exported method.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Method {
    pub name: String,
    pub kind: Kind,
    pub params: Vec<Param>,
    pub returns: Type,
    /// Whether the method can fail with a message (it returns a `Result`).
    /// Any method can still fail on bad input, a panic or a limit.
    pub fails: bool,
    /// An invariant of the app's state (`#[invariant]` in the SDK): a view
    /// with no parameters that returns `unit` when the state is sound and
    /// fails with a message saying what is wrong when it is not. Tools
    /// (`ctx-sim`) call it on every member after every change. Absent in
    /// the document when false, so sections without invariants are the
    /// same bytes as before the field existed, and still parse.
    #[serde(default, skip_serializing_if = "is_false")]
    pub invariant: bool,
}

fn is_false(flag: &bool) -> bool {
    !*flag
}

/// Whether a method may write: a view only reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Call,
    View,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Param {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: Type,
}

/// The type of a parameter or a return value, and so its encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Type {
    /// No bytes.
    Unit,
    /// One byte, 0 or 1.
    Bool,
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
    /// UTF-8 text.
    String,
    /// Raw bytes.
    Bytes,
    /// At most 32 bytes; the app stores it zero-padded to 32.
    Key,
    /// A value serialized with postcard, opaque to tools.
    Postcard,
    /// Absent is no bytes; present is the inner type's encoding.
    Option(Box<Type>),
}

/// What is wrong with a module's ABI section.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AbiError {
    #[error("the module cannot be read: {0}")]
    Module(String),
    #[error("the module has {0} `ctx_abi` sections; an app has at most one")]
    Duplicate(usize),
    #[error("the `ctx_abi` section is {len} bytes, more than {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the `ctx_abi` section is not a valid ABI document: {0}")]
    Json(String),
    #[error("the `ctx_abi` section has version {found}; this ctx reads version {supported}")]
    Version { found: u32, supported: u32 },
    #[error("the `ctx_abi` section names method {0:?} twice")]
    DuplicateMethod(String),
    #[error("the `ctx_abi` section has a method name of {0} bytes (1 to 64 allowed)")]
    BadMethodName(usize),
    #[error("the `ctx_abi` section names parameter {param:?} of method {method:?} twice")]
    DuplicateParam { method: String, param: String },
    #[error("the `ctx_abi` section marks method {method:?} an invariant, but {problem}")]
    BadInvariant { method: String, problem: String },
}

/// A call's arguments or return value that do not fit the ABI.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ArgError {
    #[error("{method} takes {expected} argument(s) ({signature}), {given} given")]
    Count {
        method: String,
        expected: usize,
        given: usize,
        signature: String,
    },
    #[error("argument {param} of {method} must be {ty}: {reason}")]
    Type {
        method: String,
        param: String,
        ty: String,
        reason: String,
    },
    #[error("{method} has no parameter {0:?} (it takes {signature})", .param)]
    UnknownParam {
        method: String,
        param: String,
        signature: String,
    },
    #[error("arguments of {method} must be a JSON object (by name) or array, not {found}")]
    NotArguments { method: String, found: String },
    #[error("the return value of {method} is not a {ty}: {reason}")]
    Return {
        method: String,
        ty: String,
        reason: String,
    },
}

impl Abi {
    /// The ABI embedded in a WebAssembly binary: `Ok(None)` when it has no
    /// `ctx_abi` section.
    pub fn from_module(wasm: &[u8]) -> Result<Option<Abi>, AbiError> {
        let mut sections = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(wasm) {
            let payload = payload.map_err(|e| AbiError::Module(e.to_string()))?;
            if let wasmparser::Payload::CustomSection(reader) = payload
                && reader.name() == SECTION_NAME
            {
                sections.push(reader.data().to_vec());
            }
        }
        match sections.as_slice() {
            [] => Ok(None),
            [section] => Abi::parse(section).map(Some),
            more => Err(AbiError::Duplicate(more.len())),
        }
    }

    /// Parses and checks a section's bytes.
    pub fn parse(section: &[u8]) -> Result<Abi, AbiError> {
        if section.len() > SECTION_BYTES_MAX {
            return Err(AbiError::TooLarge {
                len: section.len(),
                max: SECTION_BYTES_MAX,
            });
        }
        // The version first, so that a future document with new fields is
        // refused for its version rather than for a field.
        #[derive(Deserialize)]
        struct Versioned {
            version: u32,
        }
        let versioned: Versioned =
            serde_json::from_slice(section).map_err(|e| AbiError::Json(e.to_string()))?;
        if versioned.version != ABI_VERSION {
            return Err(AbiError::Version {
                found: versioned.version,
                supported: ABI_VERSION,
            });
        }
        let abi: Abi =
            serde_json::from_slice(section).map_err(|e| AbiError::Json(e.to_string()))?;
        abi.check()?;
        Ok(abi)
    }

    fn check(&self) -> Result<(), AbiError> {
        let mut names = BTreeSet::new();
        for method in &self.methods {
            let len = method.name.len();
            if len == 0 || len > METHOD_NAME_BYTES_MAX {
                return Err(AbiError::BadMethodName(len));
            }
            if !names.insert(method.name.as_str()) {
                return Err(AbiError::DuplicateMethod(method.name.clone()));
            }
            method.check_invariant()?;
            let mut params = BTreeSet::new();
            for param in &method.params {
                if !params.insert(param.name.as_str()) {
                    return Err(AbiError::DuplicateParam {
                        method: method.name.clone(),
                        param: param.name.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn method(&self, name: &str) -> Option<&Method> {
        self.methods.iter().find(|method| method.name == name)
    }

    /// The invariant views, in the document's order.
    pub fn invariants(&self) -> impl Iterator<Item = &Method> {
        self.methods.iter().filter(|method| method.invariant)
    }

    /// The document as JSON (what the section holds, normalized).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("an ABI is plain data")
    }
}

impl Method {
    /// An invariant is a view (it cannot write), takes nothing (a tool
    /// calls it with no input) and returns `unit` (it says only whether
    /// the state holds, and why not).
    fn check_invariant(&self) -> Result<(), AbiError> {
        if !self.invariant {
            return Ok(());
        }
        let problem = if self.kind != Kind::View {
            "it is a call (an invariant is a view: &self)".to_owned()
        } else if !self.params.is_empty() {
            format!(
                "it takes {} parameter(s) (an invariant takes none)",
                self.params.len()
            )
        } else if self.returns != Type::Unit {
            format!(
                "it returns {} (an invariant returns unit, or fails with a message)",
                self.returns
            )
        } else {
            return Ok(());
        };
        Err(AbiError::BadInvariant {
            method: self.name.clone(),
            problem,
        })
    }

    /// `name(param: type, ...) -> type`, for messages and listings.
    pub fn signature(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|param| format!("{}: {}", param.name, param.ty))
            .collect();
        format!("{}({}) -> {}", self.name, params.join(", "), self.returns)
    }

    /// The input for command-line words, one per parameter: integers in
    /// decimal (or `u64:N` and so on), text as its UTF-8, bytes and keys as
    /// text or `hex:..`, booleans `true`/`false`, an absent option `none`.
    pub fn encode_words<S: AsRef<str>>(&self, words: &[S]) -> Result<Vec<u8>, ArgError> {
        self.check_count(words.len())?;
        let mut args = Vec::with_capacity(words.len());
        for (param, word) in self.params.iter().zip(words) {
            let bytes = param
                .ty
                .encode_word(word.as_ref())
                .map_err(|reason| self.type_error(param, reason))?;
            args.push(bytes);
        }
        Ok(frame(&args))
    }

    /// The input for JSON arguments: an object by parameter name or an
    /// array in order. Integers are JSON numbers (or decimal strings, for
    /// 128-bit ones), text and keys are strings, bytes are strings (UTF-8)
    /// or `{"hex": ".."}`, an absent option is `null`.
    pub fn encode_json(&self, arguments: &Value) -> Result<Vec<u8>, ArgError> {
        let values: Vec<&Value> = match arguments {
            Value::Array(items) => {
                self.check_count(items.len())?;
                items.iter().collect()
            }
            Value::Object(fields) => self.by_name(fields)?,
            Value::Null if self.params.is_empty() => Vec::new(),
            other => {
                return Err(ArgError::NotArguments {
                    method: self.name.clone(),
                    found: json_kind(other).into(),
                });
            }
        };
        let mut args = Vec::with_capacity(values.len());
        for (param, value) in self.params.iter().zip(values) {
            let bytes = param
                .ty
                .encode_json(value)
                .map_err(|reason| self.type_error(param, reason))?;
            args.push(bytes);
        }
        Ok(frame(&args))
    }

    /// The return value as JSON, by the return type.
    pub fn decode_return(&self, bytes: &[u8]) -> Result<Value, ArgError> {
        self.returns
            .decode(bytes)
            .map_err(|reason| ArgError::Return {
                method: self.name.clone(),
                ty: self.returns.to_string(),
                reason,
            })
    }

    fn by_name<'a>(&self, fields: &'a Map<String, Value>) -> Result<Vec<&'a Value>, ArgError> {
        if let Some(unknown) = fields
            .keys()
            .find(|name| !self.params.iter().any(|param| &param.name == *name))
        {
            return Err(ArgError::UnknownParam {
                method: self.name.clone(),
                param: unknown.clone(),
                signature: self.signature(),
            });
        }
        self.check_count(fields.len())?;
        Ok(self
            .params
            .iter()
            .map(|param| &fields[&param.name])
            .collect())
    }

    fn check_count(&self, given: usize) -> Result<(), ArgError> {
        if given == self.params.len() {
            return Ok(());
        }
        Err(ArgError::Count {
            method: self.name.clone(),
            expected: self.params.len(),
            given,
            signature: self.signature(),
        })
    }

    fn type_error(&self, param: &Param, reason: String) -> ArgError {
        ArgError::Type {
            method: self.name.clone(),
            param: param.name.clone(),
            ty: param.ty.to_string(),
            reason,
        }
    }
}

/// The argument convention: each argument as a 4-byte little-endian length,
/// then its bytes.
pub fn frame<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut input = Vec::new();
    for arg in args {
        let arg = arg.as_ref();
        let len = u32::try_from(arg.len()).expect("an argument is less than 4 GiB");
        input.extend_from_slice(&len.to_le_bytes());
        input.extend_from_slice(arg);
    }
    input
}

impl Type {
    /// How many bytes an integer or a bool takes; `None` for the others.
    fn fixed_width(&self) -> Option<usize> {
        Some(match self {
            Type::Bool | Type::U8 | Type::I8 => 1,
            Type::U16 | Type::I16 => 2,
            Type::U32 | Type::I32 => 4,
            Type::U64 | Type::I64 => 8,
            Type::U128 | Type::I128 => 16,
            _ => return None,
        })
    }

    fn is_signed(&self) -> bool {
        matches!(
            self,
            Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::I128
        )
    }

    /// An integer's encoding, checked against the type's range.
    fn encode_integer(
        &self,
        signed: Option<i128>,
        unsigned: Option<u128>,
    ) -> Result<Vec<u8>, String> {
        let width = self.fixed_width().expect("an integer type");
        let bits = width * 8;
        let out_of_range = || format!("out of the range of a {self}");
        let bytes = if self.is_signed() {
            let value = match (signed, unsigned) {
                (Some(value), _) => value,
                (None, Some(value)) => i128::try_from(value).map_err(|_| out_of_range())?,
                (None, None) => return Err(out_of_range()),
            };
            let min = if bits == 128 {
                i128::MIN
            } else {
                -(1i128 << (bits - 1))
            };
            let max = if bits == 128 {
                i128::MAX
            } else {
                (1i128 << (bits - 1)) - 1
            };
            if value < min || value > max {
                return Err(out_of_range());
            }
            value.to_le_bytes()
        } else {
            let value = match (unsigned, signed) {
                (Some(value), _) => value,
                (None, Some(value)) => u128::try_from(value).map_err(|_| out_of_range())?,
                (None, None) => return Err(out_of_range()),
            };
            if bits < 128 && value >> bits != 0 {
                return Err(out_of_range());
            }
            value.to_le_bytes()
        };
        Ok(bytes[..width].to_vec())
    }

    /// One command-line word as this type's bytes.
    pub fn encode_word(&self, word: &str) -> Result<Vec<u8>, String> {
        if self.fixed_width().is_some() && *self != Type::Bool {
            // `u64:10` (the untyped syntax) is accepted for its own type.
            let digits = word.strip_prefix(&format!("{self}:")).unwrap_or(word);
            let signed = digits.parse::<i128>().ok();
            let unsigned = digits.parse::<u128>().ok();
            if signed.is_none() && unsigned.is_none() {
                return Err(format!("{word:?} is not a decimal integer"));
            }
            return self.encode_integer(signed, unsigned);
        }
        match self {
            Type::Unit if word.is_empty() => Ok(Vec::new()),
            Type::Unit => Err(format!("{word:?} is not empty")),
            Type::Bool => match word {
                "true" => Ok(vec![1]),
                "false" => Ok(vec![0]),
                _ => Err(format!("{word:?} is neither true nor false")),
            },
            Type::String => Ok(word.as_bytes().to_vec()),
            Type::Bytes | Type::Postcard => word_bytes(word),
            Type::Key => check_key(word_bytes(word)?),
            Type::Option(_) if word == "none" => Ok(Vec::new()),
            Type::Option(inner) => inner.encode_word(word),
            _ => unreachable!("integers are handled above"),
        }
    }

    /// One JSON value as this type's bytes.
    pub fn encode_json(&self, value: &Value) -> Result<Vec<u8>, String> {
        let wrong = || format!("{} is not a {self}", json_kind(value));
        if self.fixed_width().is_some() && *self != Type::Bool {
            let (signed, unsigned) = match value {
                Value::Number(number) => (
                    number.as_i64().map(i128::from),
                    number.as_u64().map(u128::from),
                ),
                // 128-bit integers do not fit a JSON number everywhere.
                Value::String(digits) => (digits.parse().ok(), digits.parse().ok()),
                _ => return Err(wrong()),
            };
            if signed.is_none() && unsigned.is_none() {
                return Err(format!("{value} is not an integer"));
            }
            return self.encode_integer(signed, unsigned);
        }
        match (self, value) {
            (Type::Unit, Value::Null) => Ok(Vec::new()),
            (Type::Bool, Value::Bool(flag)) => Ok(vec![u8::from(*flag)]),
            (Type::String, Value::String(text)) => Ok(text.as_bytes().to_vec()),
            (Type::Bytes | Type::Postcard, _) => json_bytes(value).ok_or_else(wrong),
            (Type::Key, _) => check_key(json_bytes(value).ok_or_else(wrong)?),
            (Type::Option(_), Value::Null) => Ok(Vec::new()),
            (Type::Option(inner), _) => inner.encode_json(value),
            _ => Err(wrong()),
        }
    }

    /// A value of this type (a return value) as JSON: integers as numbers
    /// (128-bit ones as decimal strings), text as a string, bytes and keys
    /// as `{"hex": ".."}` (and `"utf8"` beside it when they are text).
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, String> {
        if let Some(width) = self.fixed_width() {
            if bytes.len() != width {
                return Err(format!("{} bytes, not {width}", bytes.len()));
            }
            let mut wide = [0u8; 16];
            wide[..width].copy_from_slice(bytes);
            if self.is_signed() && bytes[width - 1] & 0x80 != 0 {
                wide[width..].fill(0xff);
            }
            return Ok(match self {
                Type::Bool => match bytes[0] {
                    0 => Value::Bool(false),
                    1 => Value::Bool(true),
                    other => return Err(format!("byte {other} is neither 0 nor 1")),
                },
                Type::U128 => Value::String(u128::from_le_bytes(wide).to_string()),
                Type::I128 => Value::String(i128::from_le_bytes(wide).to_string()),
                _ if self.is_signed() => {
                    Value::from(i64::try_from(i128::from_le_bytes(wide)).expect("at most 64 bits"))
                }
                _ => {
                    Value::from(u64::try_from(u128::from_le_bytes(wide)).expect("at most 64 bits"))
                }
            });
        }
        match self {
            Type::Unit if bytes.is_empty() => Ok(Value::Null),
            Type::Unit => Err(format!("{} bytes, not none", bytes.len())),
            Type::String => std::str::from_utf8(bytes)
                .map(|text| Value::String(text.into()))
                .map_err(|e| format!("not UTF-8: {e}")),
            Type::Bytes | Type::Key | Type::Postcard => Ok(bytes_json(bytes)),
            Type::Option(_) if bytes.is_empty() => Ok(Value::Null),
            Type::Option(inner) => inner.decode(bytes),
            _ => unreachable!("fixed-width types are handled above"),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Type::Unit => "unit",
            Type::Bool => "bool",
            Type::U8 => "u8",
            Type::U16 => "u16",
            Type::U32 => "u32",
            Type::U64 => "u64",
            Type::U128 => "u128",
            Type::I8 => "i8",
            Type::I16 => "i16",
            Type::I32 => "i32",
            Type::I64 => "i64",
            Type::I128 => "i128",
            Type::String => "string",
            Type::Bytes => "bytes",
            Type::Key => "key",
            Type::Postcard => "postcard",
            Type::Option(inner) => return write!(f, "option<{inner}>"),
        };
        f.write_str(name)
    }
}

fn word_bytes(word: &str) -> Result<Vec<u8>, String> {
    match word.strip_prefix("hex:") {
        Some(digits) => decode_hex(digits),
        None => Ok(word.as_bytes().to_vec()),
    }
}

fn json_bytes(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::String(text) => Some(text.as_bytes().to_vec()),
        Value::Object(fields) if fields.len() == 1 => decode_hex(fields.get("hex")?.as_str()?).ok(),
        _ => None,
    }
}

fn bytes_json(bytes: &[u8]) -> Value {
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let mut fields = Map::new();
    fields.insert("hex".into(), Value::String(hex));
    if let Ok(text) = std::str::from_utf8(bytes) {
        fields.insert("utf8".into(), Value::String(text.into()));
    }
    Value::Object(fields)
}

fn decode_hex(digits: &str) -> Result<Vec<u8>, String> {
    if !digits.len().is_multiple_of(2) {
        return Err("hex takes an even number of digits".into());
    }
    (0..digits.len())
        .step_by(2)
        .map(|at| {
            digits
                .get(at..at + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("{digits:?} is not hex"))
        })
        .collect()
}

fn check_key(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    if bytes.len() > KEY_BYTES_MAX {
        return Err(format!(
            "{} bytes, more than a key's {KEY_BYTES_MAX}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
