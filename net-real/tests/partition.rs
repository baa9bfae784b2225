//! A real partition: three nodes in their own network namespaces, joined by
//! veth pairs to a bridge in a fourth namespace. The bridge port of one node
//! is cut while the others (and it) keep writing, then restored; all
//! converge. Needs root and iproute2 (CI runs as root). Where namespaces
//! cannot be made, the test is reported as *ignored*, with the reason
//! printed beside it, in plain `cargo test` output: visibly skipped, never
//! silently passed. (It runs under libtest-mimic, not the built-in harness,
//! because only a harness of our own can decide at run time to ignore.)
//!
//! Nothing here touches the host's own network namespace: every interface
//! is created inside the test's namespaces and disappears with them.

mod support;

use std::process::{Command, ExitCode};
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};
use support::{TestNode, cleanup, converged, get, kv_cluster, test_dir};

/// Runs `ip ARGS`; the error output on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces of one run; deleted on drop (which removes their links).
struct Namespaces {
    names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

const NODES: [&str; 3] = ["a", "b", "c"];

fn address(index: usize) -> String {
    format!("10.77.0.{}", index + 1)
}

/// Builds the namespaces, veths and bridge.
fn build(tag: &str, spaces: &mut Namespaces) -> Result<(), String> {
    let bridge_ns = format!("ctx{tag}br");
    ip(&["netns", "add", &bridge_ns])?;
    spaces.names.push(bridge_ns.clone());
    ip(&["-n", &bridge_ns, "link", "set", "lo", "up"])?;
    ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &bridge_ns, "link", "set", "br0", "up"])?;
    for (index, node) in NODES.iter().enumerate() {
        let ns = format!("ctx{tag}{node}");
        ip(&["netns", "add", &ns])?;
        spaces.names.push(ns.clone());
        let port = format!("p{tag}{node}");
        ip(&[
            "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
            &bridge_ns,
        ])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", address(index)),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&["-n", &bridge_ns, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &bridge_ns, "link", "set", &port, "up"])?;
    }
    Ok(())
}

const TEST_NAME: &str = "partition_in_network_namespaces_heals_and_converges";

fn main() -> ExitCode {
    let arguments = Arguments::from_args();
    let mut trial = Trial::test(TEST_NAME, partition_heals_and_converges);
    if !arguments.list
        && let Err(reason) = can_make_namespaces()
    {
        // Printed before the harness starts, so it shows uncaptured.
        eprintln!("SKIPPED: {TEST_NAME}: {reason}");
        trial = trial.with_ignored_flag(true);
    }
    libtest_mimic::run(&arguments, vec![trial]).exit_code()
}

/// Whether this machine lets us make network namespaces: makes one and
/// deletes it. The reason when it cannot.
fn can_make_namespaces() -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("network namespaces need Linux".into());
    }
    let probe = format!("ctxprobe{}", std::process::id() % 100_000);
    let spaces = Namespaces {
        names: vec![probe.clone()],
    };
    ip(&["netns", "add", &probe]).map_err(|e| {
        format!("cannot make a network namespace ({e}); it needs root and iproute2")
    })?;
    drop(spaces);
    Ok(())
}

fn partition_heals_and_converges() -> Result<(), Failed> {
    let tag = format!("{}", std::process::id() % 100_000);
    // Declared before the nodes, so it is dropped after them.
    let mut spaces = Namespaces { names: Vec::new() };
    build(&tag, &mut spaces).map_err(|e| format!("building the namespaces: {e}"))?;
    let bridge_ns = format!("ctx{tag}br");

    let root = test_dir("partition");
    let mut nodes: Vec<TestNode> = NODES
        .iter()
        .enumerate()
        .map(|(index, name)| {
            let mut node = TestNode::init(&root, name);
            node.netns = Some(format!("ctx{tag}{name}"));
            node.listen = format!("{}:7700", address(index));
            node.admin = "127.0.0.1:7701".into();
            node
        })
        .collect();
    for node in &mut nodes {
        node.start();
    }
    let [a, b, c] = &nodes[..] else {
        unreachable!("three nodes")
    };
    let context = kv_cluster(a, &[b, c]);
    for (i, node) in [a, b, c].iter().enumerate() {
        node.cli_ok(&["call", &context, "set", &format!("before-{i}"), "x"]);
    }
    converged(&context, &[a, b, c]);

    // Cut c's link; everyone keeps writing.
    let port_c = format!("p{tag}c");
    ip(&["-n", &bridge_ns, "link", "set", &port_c, "down"]).expect("cut c's link");
    for j in 0..8 {
        a.cli_ok(&["call", &context, "set", &format!("cut-a{j}"), "a"]);
        b.cli_ok(&["call", &context, "set", &format!("cut-b{j}"), "b"]);
        if j % 2 == 0 {
            c.cli_ok(&["call", &context, "set", &format!("cut-c{j}"), "c"]);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(get(c, &context, "cut-a0"), None, "c is really cut off");
    assert_eq!(
        get(a, &context, "cut-c0"),
        None,
        "a is really cut off from c"
    );
    converged(&context, &[a, b]);

    // Restore the link: everything flows again.
    ip(&["-n", &bridge_ns, "link", "set", &port_c, "up"]).expect("restore c's link");
    let root_all = converged(&context, &[a, b, c]);
    for node in [a, b, c] {
        assert_eq!(get(node, &context, "cut-a7").as_deref(), Some("a"));
        assert_eq!(get(node, &context, "cut-b7").as_deref(), Some("b"));
        assert_eq!(get(node, &context, "cut-c6").as_deref(), Some("c"));
    }
    eprintln!("partition test: converged on state root {root_all}");
    drop(nodes);
    drop(spaces);
    cleanup(&root);
    Ok(())
}
