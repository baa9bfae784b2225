//! The ABI as the macros declare it, and its JSON text built at compile
//! time for the module's `ctx_abi` custom section.
//!
//! Owns: the document written here is exactly what `ctx-abi` reads (version
//! [`VERSION`], the same field names and type names); a test parses every
//! shape with `ctx-abi`. Everything is `const` so that `#[app]` can put the
//! bytes in a `static` the linker keeps as a custom section: [`json_len`]
//! measures the document and [`json`] writes it into an array of exactly
//! that length. Method and parameter names are Rust identifiers, which
//! need no escaping in JSON.

/// The custom section the document lives in (`ctx_abi::SECTION_NAME`).
pub const SECTION_NAME: &str = "ctx_abi";

/// The document's version (`ctx_abi::ABI_VERSION`).
pub const VERSION: u32 = 1;

/// The type of a parameter or a return value (`ctx_abi::Type`).
#[derive(Debug, PartialEq, Eq)]
pub enum Type {
    Unit,
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
    String,
    Bytes,
    Key,
    Postcard,
    Option(&'static Type),
}

/// Whether a method may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Call,
    View,
}

#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub ty: &'static Type,
}

#[derive(Debug)]
pub struct Method {
    pub name: &'static str,
    pub kind: Kind,
    pub params: &'static [Param],
    pub returns: &'static Type,
    pub fails: bool,
    /// `#[invariant]`: a view of no parameters returning unit, which holds
    /// or fails with a message (`ctx_abi::Method::invariant`). Written
    /// `"invariant":true` only when set, so apps without invariants carry
    /// the same bytes as before.
    pub invariant: bool,
}

/// An app's methods: what `#[app]` declares.
#[derive(Debug)]
pub struct Spec {
    pub methods: &'static [Method],
}

impl Spec {
    pub fn method(&self, name: &str) -> Option<&Method> {
        self.methods.iter().find(|method| method.name == name)
    }
}

/// The length of the JSON document for `spec`.
pub const fn json_len(spec: &Spec) -> usize {
    let mut writer = Writer {
        bytes: &mut [],
        len: 0,
    };
    writer.spec(spec);
    writer.len
}

/// The JSON document for `spec`; `N` must be [`json_len`]`(spec)`.
pub const fn json<const N: usize>(spec: &Spec) -> [u8; N] {
    let mut bytes = [0; N];
    let mut writer = Writer {
        bytes: &mut bytes,
        len: 0,
    };
    writer.spec(spec);
    assert!(writer.len == N, "N must be json_len(spec)");
    bytes
}

/// The JSON document for `spec`, at run time (tools and tests).
pub fn json_vec(spec: &Spec) -> Vec<u8> {
    let mut bytes = vec![0; json_len(spec)];
    let mut writer = Writer {
        bytes: &mut bytes,
        len: 0,
    };
    writer.spec(spec);
    assert_eq!(writer.len, bytes.len());
    bytes
}

/// Writes into `bytes` what fits and counts everything, so the same code
/// measures (an empty slice) and writes.
struct Writer<'a> {
    bytes: &'a mut [u8],
    len: usize,
}

impl Writer<'_> {
    const fn put(&mut self, text: &str) {
        let text = text.as_bytes();
        let mut at = 0;
        while at < text.len() {
            if self.len < self.bytes.len() {
                self.bytes[self.len] = text[at];
            }
            self.len += 1;
            at += 1;
        }
    }

    const fn number(&mut self, mut value: u32) {
        let mut digits = [0u8; 10];
        let mut count = 0;
        loop {
            digits[count] = b'0' + (value % 10) as u8;
            count += 1;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        while count > 0 {
            count -= 1;
            if self.len < self.bytes.len() {
                self.bytes[self.len] = digits[count];
            }
            self.len += 1;
        }
    }

    const fn string(&mut self, text: &str) {
        self.put("\"");
        self.put(text);
        self.put("\"");
    }

    const fn spec(&mut self, spec: &Spec) {
        self.put("{\"version\":");
        self.number(VERSION);
        self.put(",\"methods\":[");
        let mut index = 0;
        while index < spec.methods.len() {
            if index > 0 {
                self.put(",");
            }
            self.method(&spec.methods[index]);
            index += 1;
        }
        self.put("]}");
    }

    const fn method(&mut self, method: &Method) {
        self.put("{\"name\":");
        self.string(method.name);
        self.put(",\"kind\":");
        self.string(match method.kind {
            Kind::Call => "call",
            Kind::View => "view",
        });
        self.put(",\"params\":[");
        let mut index = 0;
        while index < method.params.len() {
            if index > 0 {
                self.put(",");
            }
            self.put("{\"name\":");
            self.string(method.params[index].name);
            self.put(",\"type\":");
            self.ty(method.params[index].ty);
            self.put("}");
            index += 1;
        }
        self.put("],\"returns\":");
        self.ty(method.returns);
        self.put(",\"fails\":");
        self.put(if method.fails { "true" } else { "false" });
        if method.invariant {
            self.put(",\"invariant\":true");
        }
        self.put("}");
    }

    const fn ty(&mut self, ty: &Type) {
        let name = match ty {
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
            Type::Option(inner) => {
                self.put("{\"option\":");
                self.ty(inner);
                self.put("}");
                return;
            }
        };
        self.string(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Spec = Spec {
        methods: &[
            Method {
                name: "transfer",
                kind: Kind::Call,
                params: &[
                    Param {
                        name: "from",
                        ty: &Type::Key,
                    },
                    Param {
                        name: "amount",
                        ty: &Type::U64,
                    },
                ],
                returns: &Type::Unit,
                fails: true,
                invariant: false,
            },
            Method {
                name: "peek",
                kind: Kind::View,
                params: &[],
                returns: &Type::Option(&Type::Option(&Type::I128)),
                fails: false,
                invariant: false,
            },
            Method {
                name: "sound",
                kind: Kind::View,
                params: &[],
                returns: &Type::Unit,
                fails: true,
                invariant: true,
            },
        ],
    };
    const LEN: usize = json_len(&SPEC);
    static TEXT: [u8; LEN] = json::<LEN>(&SPEC);

    #[test]
    fn the_document_is_what_ctx_abi_reads() {
        let abi = ctx_abi::Abi::parse(&TEXT).expect("ctx-abi reads the document");
        assert_eq!(abi.version, VERSION);
        let transfer = abi.method("transfer").expect("declared");
        assert_eq!(transfer.kind, ctx_abi::Kind::Call);
        assert_eq!(
            transfer.signature(),
            "transfer(from: key, amount: u64) -> unit"
        );
        assert!(transfer.fails);
        let peek = abi.method("peek").expect("declared");
        assert_eq!(peek.kind, ctx_abi::Kind::View);
        assert_eq!(peek.signature(), "peek() -> option<option<i128>>");
        assert!(!peek.fails);
        assert!(!peek.invariant && !transfer.invariant);
        let sound = abi.method("sound").expect("declared");
        assert!(sound.invariant);
        assert_eq!(abi.invariants().count(), 1);
        // Only the invariant carries the field.
        assert_eq!(
            std::str::from_utf8(&TEXT)
                .expect("text")
                .matches("invariant")
                .count(),
            1
        );
        assert_eq!(SECTION_NAME, ctx_abi::SECTION_NAME);
        assert_eq!(VERSION, ctx_abi::ABI_VERSION);
        assert_eq!(json_vec(&SPEC), TEXT);
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut bytes = [0u8; 16];
        let mut writer = Writer {
            bytes: &mut bytes,
            len: 0,
        };
        writer.number(0);
        writer.put(",");
        writer.number(4_294_967_295);
        let len = writer.len;
        assert_eq!(&bytes[..len], b"0,4294967295");
    }
}
