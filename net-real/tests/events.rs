//! `GET /v1/contexts/{ctx}/events`: the stable order as server-sent events,
//! read by a client across a restart of the node (resuming with
//! `Last-Event-ID`), and the same on another member.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use support::{Sse, TestNode, cleanup, converged, kv_cluster, subscribe, test_dir};

/// Takes `applied` events until one at `position`.
fn until(events: &mpsc::Receiver<Sse>, position: u64) -> Vec<Sse> {
    let mut got = Vec::new();
    loop {
        let event = events
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no event at position {position}; got {got:#?}"));
        assert_eq!(event.event, "applied", "{event:?}");
        let at = event
            .id
            .expect("an applied event has its position as its id");
        got.push(event);
        if at >= position {
            return got;
        }
    }
}

#[test]
fn the_stable_order_streams_across_a_restart_and_is_the_same_on_every_member() {
    let root = test_dir("events");
    let mut a = TestNode::init(&root, "a");
    let mut b = TestNode::init(&root, "b");
    a.start();
    b.start();
    let context = kv_cluster(&a, &[&b]);
    for i in 0..5 {
        a.cli_ok(&["call", &context, "set", &format!("k{i}"), "v"]);
    }
    // A call the app fails: applied, with no effect, and said so.
    a.cli_ok(&["call", &context, "set"]);
    converged(&context, &[&a, &b]);
    // create, invite, join, 5 sets, the failed one: positions 0 to 8.
    let stream = subscribe(&a, &context, None);
    let first = until(&stream, 8);
    let positions: Vec<u64> = first.iter().map(|e| e.id.expect("id")).collect();
    assert_eq!(positions, (0..=8).collect::<Vec<_>>());
    let kinds: Vec<&str> = first
        .iter()
        .map(|e| e.data["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        [
            "create", "invite", "join", "call", "call", "call", "call", "call", "call"
        ]
    );
    assert_eq!(first[1].data["member"], b.member.as_str());
    assert_eq!(first[3].data["method"], "set");
    assert_eq!(first[3].data["outcome"], serde_json::json!({ "ok": true }));
    let failed = &first[8].data["outcome"]["failed"];
    assert!(
        failed["kind"].is_string() && failed["message"].is_string(),
        "{}",
        first[8].data
    );

    // The node restarts: the stream ends; the client resumes after the
    // last position it saw, and misses nothing and sees nothing twice.
    a.terminate();
    match stream.recv_timeout(Duration::from_secs(10)) {
        Err(mpsc::RecvTimeoutError::Disconnected) => {}
        Ok(event) if event.event == "end" => {}
        other => panic!("the stream ends with the node: {other:?}"),
    }
    a.start();
    let resumed = subscribe(&a, &context, Some(8));
    for i in 0..3 {
        b.cli_ok(&["call", &context, "set", &format!("after{i}"), "restart"]);
    }
    let rest = until(&resumed, 11);
    let positions: Vec<u64> = rest.iter().map(|e| e.id.expect("id")).collect();
    assert_eq!(positions, vec![9, 10, 11]);
    assert!(rest.iter().all(|e| e.data["author"] == b.member.as_str()));

    // Positions are the same on every member: b streams the same order.
    let on_b = until(&subscribe(&b, &context, None), 11);
    let txs = |events: &[Sse]| -> Vec<String> {
        events
            .iter()
            .map(|e| e.data["tx"].as_str().expect("tx").to_owned())
            .collect()
    };
    let mut on_a = txs(&first);
    on_a.extend(txs(&rest));
    assert_eq!(txs(&on_b), on_a);

    // Bad requests are JSON errors, not streams.
    let bad = a
        .client()
        .get(&format!("/v1/contexts/{context}/events?from=x"));
    assert!(
        format!("{bad:?}").contains("expected a position"),
        "{bad:?}"
    );
    let unknown = a
        .client()
        .get(&format!("/v1/contexts/{}/events", "ab".repeat(32)));
    assert!(format!("{unknown:?}").contains("404"), "{unknown:?}");
    drop((a, b));
    cleanup(&root);
}
