//! The command-line syntax of call arguments (as in SCENARIOS.md): a plain
//! word is its UTF-8 bytes, `u64:N` is N as 8 little-endian bytes, `hex:..`
//! is raw bytes. A call's input is the arguments joined by
//! `ctx_core::runtime::encode_args` (each a 4-byte little-endian length, then
//! its bytes), the convention of the bundled apps.

use thiserror::Error;

use crate::limits::CALL_ARGS_MAX;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ArgError {
    #[error(
        "argument {index} ({text:?}): `u64:` takes a decimal number up to 18446744073709551615"
    )]
    BadU64 { index: usize, text: String },
    #[error("argument {index} ({text:?}): `hex:` takes an even number of hex digits")]
    BadHex { index: usize, text: String },
    #[error("at most {CALL_ARGS_MAX} arguments")]
    TooMany,
}

/// The bytes of one argument.
pub fn parse_arg(index: usize, text: &str) -> Result<Vec<u8>, ArgError> {
    if let Some(number) = text.strip_prefix("u64:") {
        let value: u64 = number.parse().map_err(|_| ArgError::BadU64 {
            index,
            text: text.to_owned(),
        })?;
        return Ok(value.to_le_bytes().to_vec());
    }
    if let Some(digits) = text.strip_prefix("hex:") {
        return hex::decode(digits).map_err(|_| ArgError::BadHex {
            index,
            text: text.to_owned(),
        });
    }
    Ok(text.as_bytes().to_vec())
}

/// A call's input from its arguments in the command-line syntax.
pub fn encode_cli_args<S: AsRef<str>>(args: &[S]) -> Result<Vec<u8>, ArgError> {
    if args.len() > CALL_ARGS_MAX {
        return Err(ArgError::TooMany);
    }
    let parts = args
        .iter()
        .enumerate()
        .map(|(index, text)| parse_arg(index + 1, text.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ctx_core::runtime::encode_args(&parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_numbers_and_hex() {
        assert_eq!(parse_arg(1, "colour"), Ok(b"colour".to_vec()));
        assert_eq!(parse_arg(1, "u64:258"), Ok(vec![2, 1, 0, 0, 0, 0, 0, 0]));
        assert_eq!(parse_arg(1, "hex:00ff"), Ok(vec![0, 255]));
        assert_eq!(parse_arg(1, ""), Ok(Vec::new()));
        assert!(matches!(
            parse_arg(2, "u64:x"),
            Err(ArgError::BadU64 { index: 2, .. })
        ));
        assert!(matches!(
            parse_arg(1, "u64:-1"),
            Err(ArgError::BadU64 { .. })
        ));
        assert!(matches!(
            parse_arg(1, "hex:0"),
            Err(ArgError::BadHex { .. })
        ));
        assert_eq!(
            encode_cli_args(&["a", "u64:1"]),
            Ok(ctx_core::runtime::encode_args(&[
                b"a".to_vec(),
                1u64.to_le_bytes().to_vec()
            ]))
        );
    }
}
