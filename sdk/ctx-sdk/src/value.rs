//! Typed arguments and return values: how a method's parameters are decoded
//! from the input and how its result becomes the return value or a failed
//! call.
//!
//! Owns the argument convention of `docs/ABI.md` on the app's side: the
//! input is the arguments concatenated, each a 4-byte little-endian length
//! and its bytes ([`Args`]); an argument must be read whole and exactly once,
//! and every argument must be read ([`Args::finish`]). A [`Value`]'s
//! encoding is the one `ctx-abi` writes and reads for its [`abi::Type`]
//! (integers fixed-width little-endian, text UTF-8, bytes as they are, a
//! [`Key`] at most 32 bytes). Decoding never panics: bad input is an error
//! message, which fails the call.

use std::fmt;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::abi::{self, Type};

/// A parameter or return value of a method.
pub trait Value: Sized {
    /// Its type in the ABI.
    const TYPE: Type;
    /// The value from one argument's bytes.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
    /// The value's bytes, appended to `out`.
    fn encode(&self, out: &mut Vec<u8>);
}

/// What a method returns: a [`Value`], or a `Result` whose `Err` fails the
/// call with its message (and no effect).
pub trait Outcome {
    const RETURNS: &'static Type;
    const FAILS: bool;
    /// The return value's bytes, or the failure's message.
    fn into_return(self) -> Result<Vec<u8>, String>;
    /// Whether the call succeeds (its writes take effect).
    fn is_success(&self) -> bool;
}

impl<T: Value> Outcome for T {
    const RETURNS: &'static Type = &T::TYPE;
    const FAILS: bool = false;
    fn into_return(self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.encode(&mut out);
        Ok(out)
    }
    fn is_success(&self) -> bool {
        true
    }
}

impl<T: Value, E: fmt::Display> Outcome for Result<T, E> {
    const RETURNS: &'static Type = &T::TYPE;
    const FAILS: bool = true;
    fn into_return(self) -> Result<Vec<u8>, String> {
        match self {
            Ok(value) => value.into_return(),
            Err(error) => Err(error.to_string()),
        }
    }
    fn is_success(&self) -> bool {
        self.is_ok()
    }
}

/// The arguments of one call, read in order.
pub struct Args<'a> {
    rest: &'a [u8],
}

impl<'a> Args<'a> {
    pub fn new(input: &'a [u8]) -> Args<'a> {
        Args { rest: input }
    }

    /// The next argument's bytes.
    pub fn next_bytes(&mut self, name: &str) -> Result<&'a [u8], String> {
        let Some((len, rest)) = self.rest.split_first_chunk::<4>() else {
            return Err(format!("missing argument {name}"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(format!("argument {name} runs past the end of the input"));
        }
        let (arg, rest) = rest.split_at(len);
        self.rest = rest;
        Ok(arg)
    }

    /// The next argument, decoded as `T`.
    pub fn next<T: Value>(&mut self, name: &str) -> Result<T, String> {
        let bytes = self.next_bytes(name)?;
        T::decode(bytes).map_err(|reason| format!("argument {name}: {reason}"))
    }

    /// Fails unless every argument was read.
    pub fn finish(self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err("too many arguments".into())
        }
    }
}

/// A key argument: at most 32 bytes, kept zero-padded to 32 (the layout of
/// the bundled apps' keys). As a storage key it is those 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Key([u8; 32]);

impl Key {
    /// The key for at most 32 bytes; `None` for more.
    pub fn new(bytes: &[u8]) -> Option<Key> {
        if bytes.len() > 32 {
            return None;
        }
        let mut key = [0u8; 32];
        key[..bytes.len()].copy_from_slice(bytes);
        Some(Key(key))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = self
            .0
            .iter()
            .rposition(|byte| *byte != 0)
            .map_or(0, |at| at + 1);
        match std::str::from_utf8(&self.0[..end]) {
            Ok(text) => write!(f, "Key({text:?})"),
            Err(_) => write!(f, "Key({:?})", &self.0[..end]),
        }
    }
}

impl Value for Key {
    const TYPE: Type = Type::Key;
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Key::new(bytes).ok_or_else(|| "key longer than 32 bytes".into())
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
}

macro_rules! integers {
    ($($int:ty => $ty:ident),* $(,)?) => {$(
        impl Value for $int {
            const TYPE: Type = Type::$ty;
            fn decode(bytes: &[u8]) -> Result<Self, String> {
                let bytes: [u8; size_of::<$int>()] = bytes.try_into().map_err(|_| {
                    format!(
                        "a {} must be {} bytes (little-endian), not {}",
                        stringify!($int),
                        size_of::<$int>(),
                        bytes.len()
                    )
                })?;
                Ok(<$int>::from_le_bytes(bytes))
            }
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

integers!(
    u8 => U8, u16 => U16, u32 => U32, u64 => U64, u128 => U128,
    i8 => I8, i16 => I16, i32 => I32, i64 => I64, i128 => I128,
);

impl Value for () {
    const TYPE: Type = Type::Unit;
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.is_empty() {
            Ok(())
        } else {
            Err(format!("a unit is no bytes, not {}", bytes.len()))
        }
    }
    fn encode(&self, _: &mut Vec<u8>) {}
}

impl Value for bool {
    const TYPE: Type = Type::Bool;
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err("a bool is one byte, 0 or 1".into()),
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl Value for String {
    const TYPE: Type = Type::String;
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        String::from_utf8(bytes.to_vec()).map_err(|_| "not UTF-8 text".into())
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl Value for Vec<u8> {
    const TYPE: Type = Type::Bytes;
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(bytes.to_vec())
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

/// Absent is no bytes, so an `Option` of a type whose encoding can be empty
/// (bytes, text, unit) cannot tell `None` from `Some` of an empty value:
/// the bundled kv's `get` returns nothing for an absent key this way.
impl<T: Value> Value for Option<T> {
    const TYPE: Type = Type::Option(&T::TYPE);
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.is_empty() {
            Ok(None)
        } else {
            T::decode(bytes).map(Some)
        }
    }
    fn encode(&self, out: &mut Vec<u8>) {
        if let Some(value) = self {
            value.encode(out);
        }
    }
}

/// Any serde type, as its postcard bytes (opaque to tools: `postcard` in
/// the ABI).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Postcard<T>(pub T);

impl<T: Serialize + DeserializeOwned> Value for Postcard<T> {
    const TYPE: Type = Type::Postcard;
    fn decode(bytes: &[u8]) -> Result<Self, String> {
        postcard::from_bytes(bytes)
            .map(Postcard)
            .map_err(|e| format!("not a postcard value: {e}"))
    }
    fn encode(&self, out: &mut Vec<u8>) {
        let bytes = postcard::to_allocvec(&self.0).expect("postcard serializes to memory");
        out.extend_from_slice(&bytes);
    }
}

/// The ABI type of a value, for the macros' static declarations.
pub const fn type_of<T: Value>() -> &'static abi::Type {
    TypeOf::<T>::TYPE
}

struct TypeOf<T>(std::marker::PhantomData<T>);

impl<T: Value> TypeOf<T> {
    const TYPE: &'static abi::Type = &T::TYPE;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(args: &[&[u8]]) -> Vec<u8> {
        ctx_abi::frame(args)
    }

    #[test]
    fn arguments_are_read_in_order_and_whole() {
        let input = frame(&[b"alice", &7u64.to_le_bytes()]);
        let mut args = Args::new(&input);
        assert_eq!(args.next::<Key>("from"), Ok(Key::new(b"alice").unwrap()));
        assert_eq!(args.next::<u64>("amount"), Ok(7));
        assert_eq!(args.finish(), Ok(()));

        let mut args = Args::new(&input);
        assert_eq!(args.next::<Key>("from").map(|_| ()), Ok(()));
        assert_eq!(args.finish(), Err("too many arguments".into()));

        let mut args = Args::new(&input[..3]);
        assert_eq!(
            args.next::<Key>("from"),
            Err("missing argument from".into())
        );
        let mut args = Args::new(&input[..8]);
        assert_eq!(
            args.next::<Key>("from"),
            Err("argument from runs past the end of the input".into())
        );
    }

    #[test]
    fn values_reject_what_is_not_of_their_type() {
        assert_eq!(
            u64::decode(&[1, 2]),
            Err("a u64 must be 8 bytes (little-endian), not 2".into())
        );
        assert_eq!(
            Key::decode(&[0; 33]),
            Err("key longer than 32 bytes".into())
        );
        assert!(String::decode(&[0xff]).is_err());
        assert!(bool::decode(&[2]).is_err());
        assert!(<()>::decode(&[0]).is_err());
        assert_eq!(i16::decode(&(-3i16).to_le_bytes()), Ok(-3));
        assert_eq!(Option::<u8>::decode(&[]), Ok(None));
        assert_eq!(Option::<u8>::decode(&[9]), Ok(Some(9)));
        let mut out = Vec::new();
        Postcard((1u8, String::from("x"))).encode(&mut out);
        assert_eq!(
            Postcard::<(u8, String)>::decode(&out),
            Ok(Postcard((1, "x".into())))
        );
        assert!(Postcard::<(u8, String)>::decode(&[1]).is_err());
    }

    #[test]
    fn results_fail_with_their_message() {
        assert_eq!(
            Ok::<u64, String>(5).into_return(),
            Ok(5u64.to_le_bytes().to_vec())
        );
        assert_eq!(
            Err::<u64, &str>("insufficient funds").into_return(),
            Err("insufficient funds".into())
        );
        assert_eq!(().into_return(), Ok(Vec::new()));
        const { assert!(<Result<(), String> as Outcome>::FAILS) };
        const { assert!(!<Option<Vec<u8>> as Outcome>::FAILS) };
    }

    /// Every value's encoding is what ctx-abi makes from words and reads
    /// back, type by type.
    #[test]
    fn encodings_agree_with_ctx_abi() {
        fn check<T: Value + PartialEq + fmt::Debug>(word: &str, value: T) {
            let methods = Box::leak(Box::new([abi::Method {
                name: "m",
                kind: abi::Kind::View,
                params: &[],
                returns: type_of::<T>(),
                fails: false,
                invariant: false,
            }]));
            let spec = abi::Spec { methods };
            let parsed = parse_returns(&spec);
            let bytes = parsed.encode_word(word).expect("ctx-abi encodes the word");
            assert_eq!(T::decode(&bytes), Ok(value), "{word} as {parsed}");
            let mut out = Vec::new();
            value_again::<T>(&bytes).encode(&mut out);
            assert_eq!(
                T::decode(&out),
                T::decode(&bytes),
                "{word} encodes as it decodes"
            );
            assert!(parsed.decode(&out).is_ok(), "{word} reads back");
        }
        fn value_again<T: Value>(bytes: &[u8]) -> T {
            T::decode(bytes).expect("decodes")
        }
        check("200", 200u8);
        check("65535", u16::MAX);
        check("-2147483648", i32::MIN);
        check("18446744073709551615", u64::MAX);
        check("-1", -1i64);
        check(&u128::MAX.to_string(), u128::MAX);
        check("-5", -5i128);
        check("true", true);
        check("héllo", String::from("héllo"));
        check("hex:00ff", vec![0u8, 255]);
        check("alice", Key::new(b"alice").unwrap());
        check("none", Option::<u32>::None);
        check("9", Some(9u32));
        check::<()>("", ());
    }

    /// The ctx-abi type of a one-method spec's return type, through the
    /// JSON document.
    fn parse_returns(spec: &abi::Spec) -> ctx_abi::Type {
        let text = crate::abi::json_vec(spec);
        let abi = ctx_abi::Abi::parse(&text).expect("a valid document");
        abi.methods[0].returns.clone()
    }
}
