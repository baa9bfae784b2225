//! Errors that say what happened: an invite that would change nothing and a
//! call of a method the app lacks are refused before they become
//! transactions, with a status and a JSON reason; `wait` tells applied,
//! pending and unknown apart and answers `timeout_ms: 0` exactly; a join
//! the member asked refuses is answered at once, and cancelled.

mod support;

use ctx_node::client::ClientError;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

use support::{TestNode, cleanup, converged, kv_cluster, test_dir};

/// The status and message of a refused request.
fn refused(result: Result<Value, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Api { status, message }) => (status, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn refusals_come_before_any_transaction() {
    let root = test_dir("errors");
    let mut a = TestNode::init(&root, "a");
    let mut b = TestNode::init(&root, "b");
    a.start();
    b.start();
    let context = kv_cluster(&a, &[&b]);
    converged(&context, &[&a, &b]);
    let applied = || {
        a.context_status(&context).expect("held")["applied"]
            .as_u64()
            .expect("applied")
    };
    let before = applied();
    let client = a.client();
    let post =
        |path: &str, body: Value| client.post(&format!("/v1/contexts/{context}/{path}"), &body);

    let (status, message) = refused(post("invite", json!({ "member": a.member })));
    assert_eq!(
        (status, message.as_str()),
        (409, "a node cannot invite itself")
    );
    let (status, message) = refused(post("invite", json!({ "member": b.member })));
    assert_eq!(status, 409, "{message}");
    assert_eq!(
        message,
        format!("{} is already a member of this context", b.member)
    );

    for method in ["no_such_method", ""] {
        let (status, message) = refused(post("call", json!({ "method": method, "args": [] })));
        assert_eq!(status, 422, "{method:?}: {message}");
        assert!(
            message.contains(&format!("has no method {method:?}")),
            "{method:?}: {message}"
        );
    }
    assert_eq!(applied(), before, "no refused request made a transaction");

    // `wait` with no patience: exact, and it tells unknown from applied.
    let tx = a.call(&context, "set", &["k", "v"]).expect("call");
    for _ in 0..50 {
        let answer = post("wait", json!({ "tx": tx, "timeout_ms": 0 })).expect("wait");
        assert_eq!(answer, json!({ "applied": true, "state": "applied" }));
    }
    let unknown = "ab".repeat(32);
    let answer = post("wait", json!({ "tx": unknown, "timeout_ms": 0 })).expect("wait");
    assert_eq!(answer, json!({ "applied": false, "state": "unknown" }));
    let answer = post("wait", json!({ "tx": unknown, "timeout_ms": 200 })).expect("wait");
    assert_eq!(answer, json!({ "applied": false, "state": "unknown" }));
    let err = a
        .cli(&["wait", &context, &unknown, "--timeout-ms", "0"])
        .expect_err("not applied");
    assert!(
        err.contains(&format!("this node has not seen {unknown}")),
        "{err}"
    );

    // A closed pipe ends a client command quietly (`ctx-node status | true`).
    for _ in 0..5 {
        let mut child = std::process::Command::new(support::BIN)
            .args(["--admin", &a.admin, "status"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn status");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{:?}: {stderr}", out.status);
        assert!(stderr.is_empty(), "{stderr}");
    }
    cleanup(&root);
}

#[test]
fn a_refused_join_is_answered_at_once_and_leaves_nothing_behind() {
    let root = test_dir("errors-join");
    let mut a = TestNode::init(&root, "a");
    let mut b = TestNode::init(&root, "b");
    a.start();
    b.start();
    let context = kv_cluster(&a, &[]);
    let join = |context: &str| {
        let started = Instant::now();
        let answer = b.client().post(
            &format!("/v1/contexts/{context}/join"),
            &json!({ "via": a.listen }),
        );
        (answer, started.elapsed())
    };
    let no_copy = |context: &str| {
        let status = b.status().expect("status");
        assert!(
            status["contexts"].get(context).is_none(),
            "the refused join left a copy: {status}"
        );
    };

    // Not invited: a's refusal, at once (well before the engine's retry).
    let (answer, took) = join(&context);
    let (status, message) = refused(answer);
    assert_eq!(status, 409, "{message}");
    assert!(
        message.contains(&format!("member {} refused the join", a.member))
            && message.contains("the requester is not invited")
            && message.contains("the join was cancelled"),
        "{message}"
    );
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    no_copy(&context);

    // A context a does not hold.
    let unknown = "cd".repeat(32);
    let (status, message) = refused(join(&unknown).0);
    assert_eq!(status, 404, "{message}");
    assert!(
        message.contains("the responder does not hold the context"),
        "{message}"
    );
    no_copy(&unknown);

    // Invited, the same join goes through, and says how far it got.
    a.cli_ok(&["context", "invite", &context, &b.member]);
    let answer = join(&context).0.expect("join");
    assert_eq!(answer["via_member"], json!(a.member));
    let state = answer["state"].as_str().expect("state");
    assert!(["joined", "catching_up"].contains(&state), "{answer}");
    converged(&context, &[&a, &b]);
    cleanup(&root);
}
