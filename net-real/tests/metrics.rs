//! `GET /metrics`: the node's metrics in the Prometheus text format, as a
//! scraper reads them, following what the node did.

mod support;

use std::collections::BTreeMap;

use support::{TestNode, cleanup, converged, eventually, kv_cluster, test_dir};

/// Scrapes `node`: each sample's name (with its labels) and value.
fn scrape(node: &TestNode) -> BTreeMap<String, f64> {
    let mut answer = ureq::get(&format!("http://{}/metrics", node.admin))
        .call()
        .expect("scrape");
    let kind = answer
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
    let text = answer.body_mut().read_to_string().expect("text");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("name value");
            (name.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

#[test]
fn metrics_follow_what_the_node_did() {
    let root = test_dir("metrics");
    let mut a = TestNode::init(&root, "a");
    let mut b = TestNode::init(&root, "b");
    a.start();
    b.start();
    let before = scrape(&a);
    assert_eq!(before["ctx_applied_total"], 0.0);
    assert_eq!(before["ctx_contexts"], 0.0);
    let context = kv_cluster(&a, &[&b]);
    for i in 0..20 {
        a.cli_ok(&["call", &context, "set", &format!("k{i}"), "v"]);
    }
    converged(&context, &[&a, &b]);
    let applied = a.context_status(&context).expect("held")["applied"]
        .as_u64()
        .expect("applied") as f64;
    // The gauges follow within a second.
    eventually("the gauges follow", &[&a, &b], || {
        [&a, &b].iter().all(|node| {
            let m = scrape(node);
            m["ctx_contexts"] == 1.0 && m["ctx_peers_connected"] == 1.0
        })
    });
    for node in [&a, &b] {
        let m = scrape(node);
        // Every transaction applied since it started, but a context's
        // genesis (its creation, applied with it).
        assert_eq!(m["ctx_applied_total"], applied - 1.0, "{}", node.name);
        assert!(m["ctx_commit_seconds_count"] >= 20.0, "{m:?}");
        assert!(m["ctx_commit_seconds_sum"] > 0.0, "{m:?}");
        assert!(m["ctx_peer_sent_bytes_total"] > 0.0, "{m:?}");
        assert!(m["ctx_peer_received_bytes_total"] > 0.0, "{m:?}");
        assert_eq!(m["ctx_disk_full"], 0.0);
        assert_eq!(m["ctx_strangers"], 0.0);
        assert!(m["ctx_disk_available_bytes"] > 0.0, "{m:?}");
    }
    drop((a, b));
    cleanup(&root);
}
