//! Three `ctx-node` processes on 127.0.0.1: a kv context created, the others
//! invited and joined, writes from all three, one leaves, the rest converge
//! (same state root through `status --json`). Then bad input: on the admin
//! API and on the peer port, neither of which disturbs the cluster.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::json;
use support::{TestNode, converged, eventually, get, kv_cluster, test_dir};

#[test]
fn three_nodes_write_leave_and_converge() {
    let root = test_dir("cluster");
    let mut a = TestNode::init(&root, "a");
    let mut b = TestNode::init(&root, "b");
    let mut c = TestNode::init(&root, "c");
    for node in [&mut a, &mut b, &mut c] {
        node.start();
    }
    assert_eq!(a.cli_ok(&["id"]).trim(), a.member);
    // `--admin` is global: accepted after the subcommand too.
    let out = std::process::Command::new(support::BIN)
        .args(["id", "--admin", &b.admin])
        .output()
        .expect("run ctx-node id");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), b.member);

    let context = kv_cluster(&a, &[&b, &c]);
    for (i, node) in [&a, &b, &c].iter().enumerate() {
        for j in 0..5 {
            let out = node.cli_ok(&[
                "call",
                &context,
                "set",
                &format!("k{i}-{j}"),
                &format!("v{i}-{j}"),
            ]);
            assert!(
                out.trim().ends_with(" ok"),
                "call prints the tx and its outcome: {out:?}"
            );
        }
    }
    node_writes_number_and_hex(&a, &context);
    let root_all = converged(&context, &[&a, &b, &c]);
    assert_eq!(root_all.len(), 64);
    assert_eq!(get(&c, &context, "k0-4").as_deref(), Some("v0-4"));
    assert_eq!(get(&a, &context, "k2-0").as_deref(), Some("v2-0"));

    // c leaves: it deletes its copy; a and b drop it from the members.
    c.cli_ok(&["context", "leave", &context]);
    eventually("c deleted its copy", &[&a, &b, &c], || {
        c.status()
            .is_some_and(|s| s["contexts"].get(&context).is_none())
    });
    a.cli_ok(&["call", &context, "set", "after", "leave"]);
    b.cli_ok(&["call", &context, "remove", "k1-0"]);
    let root_after = converged(&context, &[&a, &b]);
    assert_ne!(root_after, root_all);
    let members = a.context_status(&context).expect("held")["members"].clone();
    assert_eq!(
        members.as_array().map(Vec::len),
        Some(2),
        "c left: {members}"
    );
    assert!(!members.to_string().contains(&c.member));
    assert_eq!(get(&b, &context, "after").as_deref(), Some("leave"));
    assert_eq!(get(&a, &context, "k1-0"), None);

    // Stability: c left, so it bounds nothing; a and b announce what they
    // hold, so everything becomes stable and nobody holds it back.
    eventually("a and b hold everything stable", &[&a, &b], || {
        [&a, &b].iter().all(|node| {
            node.context_status(&context)
                .is_some_and(|s| s["stable"] == s["applied"] && s["held_back_by"].is_null())
        })
    });
    let text = a.cli_ok(&["status"]);
    assert!(text.contains(" stable "), "status shows stability: {text}");

    bad_admin_requests(&a, &context);
    bad_peer_traffic(&a, &b, &context);

    // A clean stop on SIGTERM.
    let status = b.terminate();
    drop((a, c));
    assert!(status.success(), "SIGTERM exits cleanly: {status}");
    assert!(b.log().contains("node stopped"));
    drop(b);
    support::cleanup(&root);
}

fn node_writes_number_and_hex(node: &TestNode, context: &str) {
    node.cli_ok(&["call", context, "set", "n", "u64:258"]);
    node.cli_ok(&["call", context, "set", "h", "hex:00ff"]);
    let out = node.cli_ok(&["view", context, "get", "n", "--json"]);
    let answer: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(answer, json!({ "ok": true, "return": "0201000000000000" }));
    let out = node.cli_ok(&["view", context, "get", "h"]);
    assert_eq!(out.trim(), "hex:00ff");
}

fn bad_admin_requests(a: &TestNode, context: &str) {
    let client = a.client();
    let status_of = |result: Result<serde_json::Value, ctx_node::client::ClientError>| match result
    {
        Err(ctx_node::client::ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    };
    // Malformed JSON.
    let url = format!("http://{}/v1/contexts", a.admin);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(&url)
        .header("content-type", "application/json")
        .send("{not json")
        .expect("answer");
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().expect("body"))
            .expect("json error");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid JSON")),
        "{body}"
    );
    // Too large.
    let big = vec![b'x'; ctx_node::limits::ADMIN_BODY_BYTES_MAX + 10];
    let response = agent.post(&url).send(&big[..]);
    if let Ok(response) = response {
        assert_eq!(response.status().as_u16(), 413);
    }
    // Unknown context, bad ids, unknown field, bad argument.
    let (status, message) = status_of(client.post(
        &format!("/v1/contexts/{}/call", "00".repeat(32)),
        &json!({"method": "set"}),
    ));
    assert_eq!(status, 404, "{message}");
    let (status, _) = status_of(client.post("/v1/contexts/zz/call", &json!({"method": "set"})));
    assert_eq!(status, 400);
    let (status, _) = status_of(client.post(
        &format!("/v1/contexts/{context}/invite"),
        &json!({"member": "12"}),
    ));
    assert_eq!(status, 400);
    let (status, _) = status_of(client.post(
        &format!("/v1/contexts/{context}/call"),
        &json!({"method": "set", "bogus": 1}),
    ));
    assert_eq!(status, 400);
    let (status, message) = status_of(client.post(
        &format!("/v1/contexts/{context}/call"),
        &json!({"method": "set", "args": ["u64:x"]}),
    ));
    assert_eq!(status, 400);
    assert!(message.contains("u64:"), "{message}");
    let (status, _) = status_of(client.get("/v1/nothing"));
    assert_eq!(status, 404);
    // An app whose ABI section is malformed is refused at create, saying so.
    let app = r#"(module (memory (export "memory") 1) (@custom "ctx_abi" "{\"version\":1"))"#;
    let (status, message) =
        status_of(client.post("/v1/contexts", &json!({"app": hex::encode(app)})));
    assert_eq!(status, 400, "{message}");
    assert!(
        message.contains("the `ctx_abi` section is not a valid ABI document"),
        "{message}"
    );
    // A path that is not even UTF-8 is a JSON 400 too.
    let (status, message) = status_of(client.post("/v1/contexts/%ff/call", &json!({})));
    assert_eq!(status, 400, "{message}");
    // Waiting in a context this node does not hold is a 404, not a timeout.
    let (status, message) = status_of(client.post(
        &format!("/v1/contexts/{}/wait", "00".repeat(32)),
        &json!({"tx": "11".repeat(32), "timeout_ms": 100}),
    ));
    assert_eq!(status, 404, "{message}");
    // An app that is not WebAssembly is refused at create, with a clear line.
    let junk = a.dir.join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0garbage").expect("write");
    let error = a
        .cli(&["context", "create", "--app", junk.to_str().expect("utf-8")])
        .expect_err("refused");
    assert!(error.contains("invalid application"), "{error}");
    let text = a.dir.join("junk.wat");
    std::fs::write(&text, "(module (func $f (export \"x\") (i32.add)))").expect("write");
    let error = a
        .cli(&["context", "create", "--app", text.to_str().expect("utf-8")])
        .expect_err("refused");
    assert!(error.contains("invalid application"), "{error}");
    // A view that fails is an answer, not an error.
    let out = a.cli_ok(&["view", context, "spin", "--json"]);
    let answer: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(answer["ok"], false, "{answer}");
    // Talking to nothing is one clear line.
    let nowhere = clone_addr(a, "127.0.0.1:1");
    let error = nowhere.cli(&["status"]).expect_err("nothing there");
    assert!(error.contains("cannot reach"), "{error}");
}

/// A copy of `node`'s identity pointing at another admin address (never
/// started, so dropping it kills nothing).
fn clone_addr(node: &TestNode, admin: &str) -> TestNode {
    let mut other = TestNode::init(&node.dir.join("ghost"), "g");
    other.admin = admin.to_owned();
    other
}

/// Connects to `addr`, writes `bytes`, and says whether the node closed
/// the connection (rather than leaving it open until the read timed out).
fn closes_after(addr: &str, bytes: &[u8]) -> bool {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream.write_all(bytes).expect("write");
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut;
            }
        }
    }
}

fn bad_peer_traffic(a: &TestNode, b: &TestNode, context: &str) {
    // Garbage instead of a handshake: the node closes that connection.
    assert!(
        closes_after(&a.listen, &[0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]),
        "garbage closes the connection"
    );
    // An oversized frame is refused before anything is read into memory.
    assert!(a.log().contains("peer handshake failed"));
    assert!(
        closes_after(&a.listen, &u32::MAX.to_be_bytes()),
        "an oversized frame closes the connection"
    );
    eventually("the oversized frame is logged", &[a], || {
        a.log().contains("frame of 4294967295 bytes refused")
    });
    // The cluster is undisturbed.
    a.cli_ok(&["call", context, "set", "still", "fine"]);
    converged(context, &[a, b]);
    assert_eq!(get(b, context, "still").as_deref(), Some("fine"));
}

#[test]
fn run_from_a_config_file() {
    let root = test_dir("config");
    let config = root.join("node.toml");

    // The bundled example parses; flags override every field it sets.
    let mut node = TestNode::init(&root, "a");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/ctx-node.example.toml");
    let dir = node.dir.to_string_lossy().into_owned();
    node.start_with(&[
        "--config",
        example,
        "--data-dir",
        &dir,
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    assert_eq!(node.cli_ok(&["id"]).trim(), node.member);
    node.terminate();

    // A file alone is enough.
    let text = format!(
        "data_dir = {dir:?}\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nsync_interval_ms = 250\n"
    );
    std::fs::write(&config, text).expect("write config");
    let path = config.to_string_lossy().into_owned();
    node.start_with(&["--config", &path]);
    assert_eq!(node.cli_ok(&["id"]).trim(), node.member);
    node.terminate();

    // A mistake in the file is one line naming the file and the field.
    let refused = |text: &str, expect: &str| {
        std::fs::write(&config, text).expect("write config");
        let out = std::process::Command::new(support::BIN)
            .args(["run", "--config", &path])
            .output()
            .expect("run ctx-node");
        assert!(!out.status.success(), "{text:?} is refused");
        let error = String::from_utf8_lossy(&out.stderr);
        assert!(error.contains(&path), "{error}");
        assert!(error.contains(expect), "{error} should mention {expect:?}");
    };
    refused(
        &format!("data_dir = {dir:?}\nlisten_on = \"127.0.0.1:0\"\n"),
        "listen_on",
    );
    refused(
        &format!("data_dir = {dir:?}\nlisten = \"nowhere\"\n"),
        "listen",
    );
    refused("listen = \"127.0.0.1:0\"\n", "no data directory");
    drop(node);
    support::cleanup(&root);
}
