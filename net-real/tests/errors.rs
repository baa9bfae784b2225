//! Errors that say what happened: an invite that would change nothing and a
//! call of a method the app lacks are refused before they become
//! transactions, with a status and a JSON reason; `wait` tells applied,
//! pending and unknown apart and answers `timeout_ms: 0` exactly; a join
//! the member asked refuses is answered at once, and cancelled; the admin
//! server holds every connection to its bounds (a head within its time,
//! size and field count, a body within its time, a number of connections),
//! answering with a JSON reason wherever it answers.

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

/// Sends `bytes` on a new admin connection and reads until the node closes
/// it (or `wait` passes): the status, the body, and how long it took.
fn exchange(addr: &str, bytes: &[u8], wait: Duration) -> (Option<u16>, String, Duration) {
    use std::io::{Read, Write};
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the admin port");
    stream.write_all(bytes).expect("send");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body, started.elapsed())
}

/// The reason of a JSON error body.
fn reason(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
    value["error"].as_str().expect("an error").to_owned()
}

#[test]
fn the_admin_server_holds_every_connection_to_its_bounds() {
    use ctx_node::limits::{ADMIN_BODY_TIMEOUT, ADMIN_CONNECTIONS_MAX, ADMIN_HEADER_TIMEOUT};
    let root = test_dir("admin-bounds");
    let mut a = TestNode::init(&root, "a");
    a.start();
    let addr = a.admin.clone();
    let patience = ADMIN_BODY_TIMEOUT + Duration::from_secs(10);

    // A head that never ends, a connection that never speaks, and a body
    // that stops halfway are all let go, at once, in parallel.
    let slow_head = {
        let addr = addr.clone();
        std::thread::spawn(move || exchange(&addr, b"GET /v1/id HTTP/1.1\r\nHost: x\r\n", patience))
    };
    let silent = {
        let addr = addr.clone();
        std::thread::spawn(move || exchange(&addr, b"", patience))
    };
    let short_body = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let head = "POST /v1/contexts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"app\":";
            exchange(&addr, head.as_bytes(), patience)
        })
    };

    // A head over the bound, and one with too many fields: 431 with a reason.
    let big = format!(
        "GET /v1/id HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (status, body, _) = exchange(&addr, big.as_bytes(), Duration::from_secs(5));
    assert_eq!(status, Some(431), "{body}");
    assert!(reason(&body).contains("request head of about"), "{body}");
    let many: String = (0..70).map(|i| format!("X-F{i}: v\r\n")).collect();
    let many = format!("GET /v1/id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{many}\r\n");
    let (status, body, _) = exchange(&addr, many.as_bytes(), Duration::from_secs(5));
    assert_eq!(status, Some(431), "{body}");
    assert!(
        reason(&body).contains("72 header fields; at most 64"),
        "{body}"
    );
    // Bad JSON, and an unknown endpoint: JSON reasons too.
    let bad = "POST /v1/contexts HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{nope";
    let (status, body, _) = exchange(&addr, bad.as_bytes(), Duration::from_secs(5));
    assert_eq!(status, Some(400), "{body}");
    assert!(reason(&body).starts_with("invalid JSON body"), "{body}");
    let (status, body, _) = exchange(
        &addr,
        b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status, Some(404), "{body}");
    assert_eq!(reason(&body), "no such endpoint");

    let (status, body, took) = slow_head.join().expect("slow head");
    assert_eq!(status, None, "an unfinished head gets no answer: {body}");
    assert!(
        took >= ADMIN_HEADER_TIMEOUT - Duration::from_secs(1) && took < patience,
        "an unfinished head is closed after {ADMIN_HEADER_TIMEOUT:?}, took {took:?}"
    );
    let (status, _, took) = silent.join().expect("silent");
    assert_eq!(status, None);
    assert!(took < patience, "a silent connection was held {took:?}");
    let (status, body, took) = short_body.join().expect("short body");
    assert_eq!(status, Some(408), "{body}");
    assert!(reason(&body).contains("not received in full"), "{body}");
    assert!(took >= ADMIN_BODY_TIMEOUT - Duration::from_secs(1) && took < patience);

    // Connections past the bound are closed at once, and those within it
    // and the node go on.
    let held: Vec<std::net::TcpStream> = (0..ADMIN_CONNECTIONS_MAX)
        .map(|_| std::net::TcpStream::connect(&addr).expect("connect"))
        .collect();
    let (status, body, took) = exchange(
        &addr,
        b"GET /v1/id HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status, None, "one past the bound is closed: {body}");
    assert!(
        took < Duration::from_secs(4),
        "closed at once, took {took:?}"
    );
    drop(held);
    support::eventually("the admin API answers again", &[&a], || {
        a.client().get("/v1/id").is_ok()
    });
    a.terminate();
    cleanup(&root);
}

#[test]
fn an_app_is_uploaded_as_its_raw_bytes_too() {
    let root = test_dir("raw-app");
    let mut a = TestNode::init(&root, "a");
    a.start();
    let upload = |bytes: Vec<u8>| {
        ureq::post(&format!("http://{}/v1/contexts", a.admin))
            .header("Content-Type", "application/wasm")
            .config()
            .http_status_as_error(false)
            .build()
            .send(&bytes[..])
            .map(|mut answer| {
                let status = answer.status().as_u16();
                let body: Value = answer.body_mut().read_json().expect("a JSON answer");
                (status, body)
            })
            .expect("an answer")
    };
    let (status, body) = upload(std::fs::read(support::KV).expect("kv app"));
    assert_eq!(status, 200, "{body}");
    let context = body["context"].as_str().expect("a context id").to_owned();
    let answer = a
        .client()
        .post(
            &format!("/v1/contexts/{context}/call"),
            &json!({ "method": "set", "args": ["k", "v"] }),
        )
        .expect("call");
    assert_eq!(answer["outcome"], json!({ "ok": true }), "{answer}");
    // What is no module is refused with a reason, as in JSON.
    let (status, body) = upload(b"not a module".to_vec());
    assert_eq!(status, 400, "{body}");
    assert!(
        reason(&body.to_string()).contains("invalid application"),
        "{body}"
    );
    a.terminate();
    cleanup(&root);
}
