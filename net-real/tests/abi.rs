//! An app whose module carries an ABI (`ctx_abi`, as every `ctx-sdk` app
//! does) is driven by it: `ctx-node call`/`view` convert words by the
//! parameter types, the admin API takes JSON arguments by name, `GET
//! /v1/contexts/{ctx}/abi` and `ctx-node abi` list the methods, and a wrong
//! method, kind, count or type is refused with a 400 that says which, without
//! a transaction. An app without an ABI works as before.
//!
//! The app is the bundled counter in WebAssembly text with the section its
//! Rust twin (`apps/counter`) embeds, so the test needs no wasm32 target.

mod support;

use ctx_node::client::ClientError;
use serde_json::{Value, json};
use support::{TestNode, cleanup, kv_cluster, test_dir};

const COUNTER: &str = include_str!("../../scenarios/apps/counter.wat");

/// The ABI `ctx-sdk` writes for `apps/counter`.
const COUNTER_ABI: &str = r#"{"version":1,"methods":[
 {"name":"add","kind":"call","params":[{"name":"key","type":"key"},{"name":"amount","type":"u64"}],"returns":"unit","fails":true},
 {"name":"get","kind":"view","params":[{"name":"key","type":"key"}],"returns":"u64","fails":false},
 {"name":"spin","kind":"view","params":[],"returns":"unit","fails":false}]}"#;

/// counter.wat with `COUNTER_ABI` as its `ctx_abi` custom section.
fn counter_with_abi() -> String {
    let end = COUNTER.rfind(')').expect("a module");
    let section = COUNTER_ABI.replace('\n', "").replace('"', "\\\"");
    format!(
        "{}  (@custom \"ctx_abi\" \"{section}\")\n)\n",
        &COUNTER[..end]
    )
}

fn applied(node: &TestNode, context: &str) -> u64 {
    node.context_status(context).expect("held")["applied"]
        .as_u64()
        .expect("a count")
}

fn api_error(result: Result<Value, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn an_app_with_an_abi_is_driven_by_its_types() {
    let root = test_dir("abi");
    let mut a = TestNode::init(&root, "a");
    a.start();
    let app = root.join("counter-abi.wat");
    std::fs::write(&app, counter_with_abi()).expect("write the app");
    let out = a.cli_ok(&["context", "create", "--app", &app.to_string_lossy()]);
    let context = out.trim().to_owned();

    // The methods, from the module.
    let listing = a.cli_ok(&["abi", &context]);
    assert_eq!(
        listing,
        "call add(key: key, amount: u64) -> unit\nview get(key: key) -> u64\nview spin() -> unit\n"
    );
    let document: Value =
        serde_json::from_str(&a.cli_ok(&["abi", &context, "--json"])).expect("JSON");
    assert_eq!(document["methods"][0]["params"][1]["type"], "u64");

    // Words converted by type: "10" is a u64, not the text "10".
    let made = a.cli_ok(&["call", &context, "add", "apples", "10"]);
    assert!(made.trim_end().ends_with(" ok"), "{made}");
    assert_eq!(a.cli_ok(&["view", &context, "get", "apples"]), "10\n");

    // JSON arguments by name, and in order; the view's value decoded.
    let client = a.client();
    let call = |body: Value| client.post(&format!("/v1/contexts/{context}/call"), &body);
    let view = |body: Value| client.post(&format!("/v1/contexts/{context}/view"), &body);
    let answer =
        call(json!({"method": "add", "args": {"amount": 5, "key": "apples"}})).expect("by name");
    assert_eq!(answer["outcome"], json!({ "ok": true }));
    call(json!({"method": "add", "args": ["pears", 7]})).expect("in order");
    let answer = view(json!({"method": "get", "args": {"key": "apples"}})).expect("view");
    assert_eq!(answer["value"], 15);
    assert_eq!(answer["return"], hex::encode(15u64.to_le_bytes()));
    assert_eq!(
        view(json!({"method": "get", "args": ["pears"]})).expect("view")["value"],
        7
    );

    // Mistakes are refused before any transaction, saying which.
    let before = applied(&a, &context);
    let refusals = [
        (
            json!({"method": "add", "args": ["apples"]}),
            "add takes 2 argument(s) (add(key: key, amount: u64) -> unit), 1 given",
        ),
        (
            json!({"method": "add", "args": ["apples", "ten"]}),
            "argument amount of add must be u64",
        ),
        (
            json!({"method": "add", "args": {"key": "apples", "count": 1}}),
            "add has no parameter \"count\"",
        ),
        (
            json!({"method": "get", "args": ["apples"]}),
            "get(key: key) -> u64 is a view",
        ),
        (
            json!({"method": "take", "args": []}),
            "the app has no method \"take\" (its ABI declares: add, get, spin)",
        ),
    ];
    for (body, expected) in refusals {
        let (status, message) = api_error(call(body.clone()));
        assert_eq!(status, 400, "{body}: {message}");
        assert!(message.contains(expected), "{body}: {message:?}");
    }
    let (status, message) = api_error(view(json!({"method": "add", "args": ["a", 1]})));
    assert_eq!(status, 400);
    assert!(message.contains("is a call"), "{message}");
    let refused = a
        .cli(&["call", &context, "add", "apples", "3.5"])
        .expect_err("not an integer");
    assert!(
        refused.contains("argument amount of add must be u64"),
        "{refused}"
    );
    assert_eq!(applied(&a, &context), before, "no refused call was made");

    // An app without an ABI: as before, and no arguments by name.
    let kv = kv_cluster(&a, &[]);
    let (status, message) = api_error(client.get(&format!("/v1/contexts/{kv}/abi")));
    assert_eq!(status, 404);
    assert!(message.contains("has no ABI"), "{message}");
    let kv_call = |body: Value| client.post(&format!("/v1/contexts/{kv}/call"), &body);
    kv_call(json!({"method": "set", "args": ["colour", "blue"]})).expect("untyped words");
    let (status, message) = api_error(kv_call(
        json!({"method": "set", "args": {"key": "colour", "value": "red"}}),
    ));
    assert_eq!(status, 400);
    assert!(message.contains("need an app with an ABI"), "{message}");
    assert_eq!(a.cli_ok(&["view", &kv, "get", "colour"]), "blue\n");

    drop(a);
    cleanup(&root);
}
