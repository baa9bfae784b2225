//! Test harness: `ctx-node` processes on this machine, driven through the
//! command line and the admin API. Every process is killed when its
//! `TestNode` is dropped; every wait polls with a generous deadline, since
//! CI runs on 2 loaded cores.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ctx_node::client::Client;
use ctx_node::identity::{ADMIN_ADDR_FILE, LISTEN_ADDR_FILE, bound_addresses};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_ctx-node");
pub const KV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/apps/kv.wat");

/// How long any wait for the cluster may take.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// A fresh directory for one test.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ctx-node-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    dir
}

pub struct TestNode {
    pub name: String,
    pub dir: PathBuf,
    pub member: String,
    /// Runs commands inside a network namespace, when set.
    pub netns: Option<String>,
    pub listen: String,
    pub admin: String,
    /// `RUST_LOG` of the node (debug lines of ctx-node too, by default).
    pub log_filter: &'static str,
    /// Where its log goes (`node.log` in its data directory, by default).
    pub log_file: PathBuf,
    child: Option<Child>,
}

impl TestNode {
    /// `ctx-node init` in `root/name`.
    pub fn init(root: &Path, name: &str) -> TestNode {
        let dir = root.join(name);
        let out = Command::new(BIN)
            .args(["init", "--data-dir"])
            .arg(&dir)
            .output()
            .expect("run ctx-node init");
        assert!(
            out.status.success(),
            "init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let member = String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_owned();
        assert_eq!(member.len(), 64, "init prints the member id alone");
        TestNode {
            name: name.to_owned(),
            log_file: dir.join("node.log"),
            dir,
            member,
            netns: None,
            listen: "127.0.0.1:0".into(),
            admin: "127.0.0.1:0".into(),
            log_filter: "info,ctx_node=debug",
            child: None,
        }
    }

    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns, BIN]);
                command
            }
            None => Command::new(BIN),
        }
    }

    /// Starts `ctx-node run` and waits for it to report its addresses. The
    /// first start may ask for port 0; the bound ports are kept, so a
    /// restart comes back where its peers know it.
    pub fn start(&mut self) {
        self.start_plus(&[]);
    }

    /// `start`, with `extra` flags after the usual ones.
    pub fn start_plus(&mut self, extra: &[&str]) {
        let dir = self.dir.to_string_lossy().into_owned();
        let (listen, admin) = (self.listen.clone(), self.admin.clone());
        let mut args = vec![
            "--data-dir",
            &dir,
            "--listen",
            &listen,
            "--admin",
            &admin,
            "--sync-interval-ms",
            "300",
        ];
        args.extend_from_slice(extra);
        self.start_with(&args);
    }

    /// Starts `ctx-node run ARGS` (which must use this node's data
    /// directory) and waits for it to report its addresses.
    pub fn start_with(&mut self, args: &[&str]) {
        assert!(self.child.is_none(), "{} already runs", self.name);
        for file in [LISTEN_ADDR_FILE, ADMIN_ADDR_FILE] {
            let _ = std::fs::remove_file(self.dir.join(file));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .expect("log file");
        let child = self
            .command()
            .arg("run")
            .args(args)
            .env("RUST_LOG", self.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ctx-node run");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some((listen, admin)) = bound_addresses(&self.dir) {
                self.listen = listen;
                self.admin = admin;
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "{} exited at start ({status}); log:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(started.elapsed() < DEADLINE, "{} did not start", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ctx-node run` that is expected to refuse to start: its exit status
    /// and what it printed to stderr (its log included).
    pub fn start_refused(&self) -> (std::process::ExitStatus, String) {
        assert!(self.child.is_none(), "{} already runs", self.name);
        let out = self
            .command()
            .arg("run")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .output()
            .expect("run ctx-node run");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `ctx-node repair` on this node's data directory: stdout on
    /// success, stderr on failure.
    pub fn repair(&self) -> Result<String, String> {
        let out = self
            .command()
            .arg("repair")
            .arg("--data-dir")
            .arg(&self.dir)
            .output()
            .expect("run ctx-node repair");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        child.wait().expect("wait")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// The last start's "engine restored" log line (what the store held:
    /// records, contexts, peers).
    pub fn restored_line(&self) -> String {
        self.log()
            .lines()
            .rfind(|line| line.contains("engine restored"))
            .unwrap_or_else(|| panic!("{} logged no restore", self.name))
            .to_owned()
    }

    /// Runs a client subcommand against this node; stdout on success,
    /// stderr on failure.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let out = self
            .command()
            .args(["--admin", &self.admin])
            .args(args)
            .output()
            .expect("run ctx-node");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        self.cli(args)
            .unwrap_or_else(|e| panic!("{}: ctx-node {args:?} failed: {e}", self.name))
    }

    /// `status --json`.
    pub fn status(&self) -> Option<Value> {
        let out = self.cli(&["status", "--json"]).ok()?;
        serde_json::from_str(&out).ok()
    }

    /// The admin API client (loopback only).
    pub fn client(&self) -> Client {
        Client::with_timeout(&self.admin, Duration::from_secs(30))
    }

    /// A call through the admin API; the transaction id when acknowledged.
    pub fn call(&self, context: &str, method: &str, args: &[&str]) -> Result<String, String> {
        let answer = self
            .client()
            .post(
                &format!("/v1/contexts/{context}/call"),
                &json!({ "method": method, "args": args }),
            )
            .map_err(|e| e.to_string())?;
        Ok(answer["tx"].as_str().unwrap_or_default().to_owned())
    }

    /// The context's status on this node, if it holds it.
    pub fn context_status(&self, context: &str) -> Option<Value> {
        let status = self.status()?;
        status["contexts"].get(context).cloned()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Polls `check` until it holds or the deadline passes.
pub fn eventually(what: &str, nodes: &[&TestNode], mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > DEADLINE {
            for node in nodes {
                eprintln!("----- {} status: {:?}", node.name, node.status());
                let log = node.log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!(
                    "----- {} log (last lines, newest first):\n{}",
                    node.name,
                    tail.join("\n")
                );
            }
            panic!("timed out waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until every node is a member of `context` and all hold the same
/// heads and state root; returns that state root.
pub fn converged(context: &str, nodes: &[&TestNode]) -> String {
    let mut root = String::new();
    eventually(
        &format!("{} nodes converge on {context}", nodes.len()),
        nodes,
        || {
            let statuses: Option<Vec<Value>> =
                nodes.iter().map(|n| n.context_status(context)).collect();
            let Some(statuses) = statuses else {
                return false;
            };
            let first = &statuses[0];
            let same = statuses.iter().all(|s| {
                s["phase"] == "member"
                    && s["state_root"] == first["state_root"]
                    && s["heads"] == first["heads"]
                    && s["members"] == first["members"]
            });
            root = first["state_root"].as_str().unwrap_or_default().to_owned();
            same
        },
    );
    root
}

/// Creates a kv context on `creator` and brings every other node in.
pub fn kv_cluster(creator: &TestNode, others: &[&TestNode]) -> String {
    let out = creator.cli_ok(&["context", "create", "--app", KV]);
    let context = out.trim().to_owned();
    assert_eq!(
        context.len(),
        64,
        "create prints the context id alone: {out:?}"
    );
    for node in others {
        creator.cli_ok(&["context", "invite", &context, &node.member]);
        let out = node.cli_ok(&["context", "join", &context, "--via", &creator.listen]);
        assert!(
            out.starts_with(&format!("joined through {}", creator.member)),
            "join waits for catchup: {out:?}"
        );
        let held = node.context_status(&context).expect("held after join");
        assert_eq!(held["phase"], "member", "{}: {held}", node.name);
    }
    let mut all = vec![creator];
    all.extend_from_slice(others);
    eventually("every node joins", &all, || {
        all.iter().all(|n| {
            n.context_status(&context).is_some_and(|s| {
                s["phase"] == "member" && s["members"].as_array().map(Vec::len) == Some(all.len())
            })
        })
    });
    context
}

/// `view get KEY` on a node: the value as text, or None when absent.
pub fn get(node: &TestNode, context: &str, key: &str) -> Option<String> {
    let out = node.cli(&["view", context, "get", key, "--json"]).ok()?;
    value_of(&serde_json::from_str(&out).ok()?)
}

/// The text of a `view get` answer; None when it failed or found nothing.
fn value_of(answer: &Value) -> Option<String> {
    if answer["ok"] != true {
        return None;
    }
    let bytes = hex::decode(answer["return"].as_str()?).ok()?;
    (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
}

/// `get KEY` through the admin API: the value as text, None when absent.
pub fn get_api(node: &TestNode, context: &str, key: &str) -> Option<String> {
    let answer = node
        .client()
        .post(
            &format!("/v1/contexts/{context}/view"),
            &json!({ "method": "get", "args": [key] }),
        )
        .ok()?;
    value_of(&answer)
}

/// The process id of a running node.
impl TestNode {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Removes a test's directory (after it passed; a failure keeps it for
/// the logs).
pub fn cleanup(root: &Path) {
    let _ = std::fs::remove_dir_all(root);
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Sse {
    pub id: Option<u64>,
    pub event: String,
    pub data: Value,
}

/// Reads `node`'s events of `context` on a thread, from `last` on
/// (`Last-Event-ID`), until the stream ends.
pub fn subscribe(
    node: &TestNode,
    context: &str,
    last: Option<u64>,
) -> std::sync::mpsc::Receiver<Sse> {
    let url = format!("http://{}/v1/contexts/{context}/events", node.admin);
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut request = ureq::get(&url);
        if let Some(last) = last {
            request = request.header("Last-Event-ID", last.to_string());
        }
        let Ok(answer) = request.call() else {
            return;
        };
        let reader =
            std::io::BufRead::lines(std::io::BufReader::new(answer.into_body().into_reader()));
        let (mut id, mut event, mut data) = (None, String::new(), String::new());
        for line in reader {
            let Ok(line) = line else { return };
            if line.is_empty() {
                if !data.is_empty() {
                    let sse = Sse {
                        id,
                        event: std::mem::take(&mut event),
                        data: serde_json::from_str(&data).expect("JSON data"),
                    };
                    if send.send(sse).is_err() {
                        return;
                    }
                }
                (id, data) = (None, String::new());
            } else if let Some(value) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                id = value.trim().parse().ok();
            } else if let Some(value) = line.strip_prefix("event: ").or(line.strip_prefix("event:"))
            {
                event = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                data.push_str(value);
            }
        }
    });
    receive
}
