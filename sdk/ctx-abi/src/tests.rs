use super::*;

use serde_json::json;

const BANK: &str = r#"{"version":1,"methods":[
  {"name":"open","kind":"call","params":[{"name":"account","type":"key"},{"name":"amount","type":"u64"}],"returns":"unit","fails":true},
  {"name":"transfer","kind":"call","params":[{"name":"from","type":"key"},{"name":"to","type":"key"},{"name":"amount","type":"u64"}],"returns":"unit","fails":true},
  {"name":"balance","kind":"view","params":[{"name":"account","type":"key"}],"returns":"u64","fails":true},
  {"name":"note","kind":"view","params":[{"name":"who","type":"string"},{"name":"n","type":"i8"}],"returns":{"option":"bytes"},"fails":false}
]}"#;

fn bank() -> Abi {
    Abi::parse(BANK.as_bytes()).expect("a valid document")
}

fn module_with(sections: &[&str]) -> Vec<u8> {
    let customs: String = sections
        .iter()
        .map(|data| format!("(@custom \"ctx_abi\" {:?})", data))
        .collect();
    wat::parse_str(format!("(module {customs})")).expect("valid text")
}

#[test]
fn a_module_carries_its_abi_or_none() {
    assert_eq!(Abi::from_module(&module_with(&[])), Ok(None));
    assert_eq!(Abi::from_module(&module_with(&[BANK])), Ok(Some(bank())));
    let abi = bank();
    let balance = abi.method("balance").expect("declared");
    assert_eq!(balance.kind, Kind::View);
    assert_eq!(balance.signature(), "balance(account: key) -> u64");
    assert_eq!(
        abi.method("note").expect("declared").returns,
        Type::Option(Box::new(Type::Bytes))
    );
}

#[test]
fn malformed_sections_say_what_is_wrong() {
    let cases: [(&str, AbiError); 5] = [
        (
            r#"{"version":2,"methods":[]}"#,
            AbiError::Version {
                found: 2,
                supported: 1,
            },
        ),
        (
            r#"{"version":1,"methods":[
              {"name":"a","kind":"call","params":[],"returns":"unit","fails":false},
              {"name":"a","kind":"view","params":[],"returns":"unit","fails":false}]}"#,
            AbiError::DuplicateMethod("a".into()),
        ),
        (
            r#"{"version":1,"methods":[{"name":"","kind":"call","params":[],"returns":"unit","fails":false}]}"#,
            AbiError::BadMethodName(0),
        ),
        (
            r#"{"version":1,"methods":[{"name":"m","kind":"call","params":[
              {"name":"x","type":"u8"},{"name":"x","type":"u8"}],"returns":"unit","fails":false}]}"#,
            AbiError::DuplicateParam {
                method: "m".into(),
                param: "x".into(),
            },
        ),
        (
            &format!("{}{}", BANK, BANK),
            AbiError::Json("trailing characters at line 6 column 3".into()),
        ),
    ];
    for (section, expected) in cases {
        assert_eq!(Abi::from_module(&module_with(&[section])), Err(expected));
    }
    let unknown_type = r#"{"version":1,"methods":[{"name":"m","kind":"call","params":[{"name":"x","type":"f32"}],"returns":"unit","fails":false}]}"#;
    let Err(AbiError::Json(message)) = Abi::parse(unknown_type.as_bytes()) else {
        panic!("an unknown type is refused");
    };
    assert!(message.contains("unknown variant `f32`"), "{message}");
    assert_eq!(
        Abi::from_module(&module_with(&[BANK, BANK])),
        Err(AbiError::Duplicate(2))
    );
    assert!(matches!(
        Abi::from_module(b"\0asm\x01\0\0\0\x00\x05"),
        Err(AbiError::Module(_))
    ));
    let huge = vec![b' '; SECTION_BYTES_MAX + 1];
    assert_eq!(
        Abi::parse(&huge),
        Err(AbiError::TooLarge {
            len: SECTION_BYTES_MAX + 1,
            max: SECTION_BYTES_MAX
        })
    );
}

#[test]
fn words_become_the_argument_convention() {
    let abi = bank();
    let transfer = abi.method("transfer").expect("declared");
    assert_eq!(
        transfer.encode_words(&["alice", "bob", "10"]),
        Ok(frame(&[
            b"alice".to_vec(),
            b"bob".to_vec(),
            10u64.to_le_bytes().to_vec()
        ]))
    );
    assert_eq!(
        transfer.encode_words(&["hex:00ff", "bob", "u64:7"]),
        Ok(frame(&[
            vec![0, 255],
            b"bob".to_vec(),
            7u64.to_le_bytes().to_vec()
        ]))
    );
    assert_eq!(
        transfer
            .encode_words(&["alice", "bob"])
            .unwrap_err()
            .to_string(),
        "transfer takes 3 argument(s) (transfer(from: key, to: key, amount: u64) -> unit), 2 given"
    );
    assert_eq!(
        transfer
            .encode_words(&["alice", "bob", "ten"])
            .unwrap_err()
            .to_string(),
        "argument amount of transfer must be u64: \"ten\" is not a decimal integer"
    );
    assert_eq!(
        transfer
            .encode_words(&["alice", "bob", "-1"])
            .unwrap_err()
            .to_string(),
        "argument amount of transfer must be u64: out of the range of a u64"
    );
    let long = "k".repeat(33);
    assert_eq!(
        transfer
            .encode_words(&[long.as_str(), "bob", "1"])
            .unwrap_err()
            .to_string(),
        "argument from of transfer must be key: 33 bytes, more than a key's 32"
    );
    let note = abi.method("note").expect("declared");
    assert_eq!(
        note.encode_words(&["x", "-128"]),
        Ok(frame(&[b"x".to_vec(), vec![0x80]]))
    );
    assert!(note.encode_words(&["x", "-129"]).is_err());
    assert!(note.encode_words(&["x", "128"]).is_err());
}

#[test]
fn json_arguments_by_name_or_in_order() {
    let abi = bank();
    let transfer = abi.method("transfer").expect("declared");
    let expected = frame(&[b"alice".to_vec(), vec![1, 2], 10u64.to_le_bytes().to_vec()]);
    assert_eq!(
        transfer.encode_json(&json!({"amount": 10, "to": {"hex": "0102"}, "from": "alice"})),
        Ok(expected.clone())
    );
    assert_eq!(
        transfer.encode_json(&json!(["alice", {"hex": "0102"}, 10])),
        Ok(expected)
    );
    assert_eq!(
        transfer
            .encode_json(&json!({"from": "a", "to": "b", "amonut": 1}))
            .unwrap_err()
            .to_string(),
        "transfer has no parameter \"amonut\" (it takes transfer(from: key, to: key, amount: u64) -> unit)"
    );
    assert_eq!(
        transfer
            .encode_json(&json!({"from": "a", "to": "b"}))
            .unwrap_err()
            .to_string(),
        "transfer takes 3 argument(s) (transfer(from: key, to: key, amount: u64) -> unit), 2 given"
    );
    assert_eq!(
        transfer
            .encode_json(&json!({"from": "a", "to": "b", "amount": "ten"}))
            .unwrap_err()
            .to_string(),
        "argument amount of transfer must be u64: \"ten\" is not an integer"
    );
    assert!(transfer.encode_json(&json!("alice")).is_err());
}

#[test]
fn return_values_decode_by_type() {
    let abi = bank();
    let balance = abi.method("balance").expect("declared");
    assert_eq!(balance.decode_return(&42u64.to_le_bytes()), Ok(json!(42)));
    assert_eq!(
        balance.decode_return(&[1, 2]).unwrap_err().to_string(),
        "the return value of balance is not a u64: 2 bytes, not 8"
    );
    let note = abi.method("note").expect("declared");
    assert_eq!(note.decode_return(&[]), Ok(Value::Null));
    assert_eq!(
        note.decode_return(b"hi"),
        Ok(json!({"hex": "6869", "utf8": "hi"}))
    );
    assert_eq!(Type::I16.decode(&(-2i16).to_le_bytes()), Ok(json!(-2)));
    assert_eq!(
        Type::U128.decode(&u128::MAX.to_le_bytes()),
        Ok(json!(u128::MAX.to_string()))
    );
    assert_eq!(
        Type::Bool.decode(&[2]),
        Err("byte 2 is neither 0 nor 1".into())
    );
}

#[test]
fn invariants_are_views_of_nothing_returning_unit() {
    // Old documents (no "invariant" field) parse, and say no invariant.
    assert_eq!(bank().invariants().count(), 0);
    let good = r#"{"version":1,"methods":[
      {"name":"open","kind":"call","params":[{"name":"account","type":"key"}],"returns":"unit","fails":true},
      {"name":"conserved","kind":"view","params":[],"returns":"unit","fails":true,"invariant":true}]}"#;
    let abi = Abi::parse(good.as_bytes()).expect("a valid document");
    let names: Vec<&str> = abi.invariants().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["conserved"]);
    // Written back, the field appears only where it is true.
    let written = serde_json::to_string(&abi).expect("plain data");
    assert_eq!(written.matches("invariant").count(), 1, "{written}");
    let bad = |method: &str| format!(r#"{{"version":1,"methods":[{method}]}}"#);
    let cases = [
        (
            bad(
                r#"{"name":"i","kind":"call","params":[],"returns":"unit","fails":true,"invariant":true}"#,
            ),
            "it is a call (an invariant is a view: &self)",
        ),
        (
            bad(
                r#"{"name":"i","kind":"view","params":[{"name":"x","type":"u8"}],"returns":"unit","fails":true,"invariant":true}"#,
            ),
            "it takes 1 parameter(s) (an invariant takes none)",
        ),
        (
            bad(
                r#"{"name":"i","kind":"view","params":[],"returns":"u64","fails":true,"invariant":true}"#,
            ),
            "it returns u64 (an invariant returns unit, or fails with a message)",
        ),
    ];
    for (section, problem) in cases {
        let error = Abi::parse(section.as_bytes()).expect_err("refused");
        assert_eq!(
            error,
            AbiError::BadInvariant {
                method: "i".into(),
                problem: problem.into()
            }
        );
        assert!(
            error
                .to_string()
                .contains("marks method \"i\" an invariant")
        );
    }
}
