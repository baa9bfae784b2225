//! A full disk is a state, not a crash. Node a's data directory is a small
//! tmpfs, most of it taken by a ballast file; b's writes, replicated to a,
//! fill the rest. a turns full: its writes are refused with 507 and a
//! reason, its reads, status and answers to members go on (a new member
//! joins through it meanwhile), it restarts on the full disk, and once the
//! ballast is deleted it stores again by itself and catches up; nothing
//! any node acknowledged is lost, across a restart too. Needs root to mount
//! a tmpfs (CI runs as root); where it cannot, the test is reported as
//! ignored with the reason (libtest-mimic, as in `partition.rs`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use serde_json::{Value, json};
use support::{TestNode, cleanup, converged, eventually, get, kv_cluster, test_dir};

const TEST_NAME: &str = "a_full_disk_refuses_writes_serves_the_rest_and_resumes";
/// The tmpfs, and what is left of it beside the ballast.
const TMPFS_MB: u64 = 64;
const BALLAST_MB: u64 = 36;
const RESERVE_MB: u64 = 4;

fn main() -> ExitCode {
    let arguments = Arguments::from_args();
    let mut trial = Trial::test(TEST_NAME, full_disk);
    if !arguments.list
        && let Err(reason) = can_mount_tmpfs()
    {
        eprintln!("SKIPPED: {TEST_NAME}: {reason}");
        trial = trial.with_ignored_flag(true);
    }
    libtest_mimic::run(&arguments, vec![trial]).exit_code()
}

/// A mounted tmpfs; unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, mb: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run `mount`: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs (it needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn can_mount_tmpfs() -> Result<(), String> {
    if !cfg!(target_os = "linux") {
        return Err("tmpfs mounts need Linux".into());
    }
    let probe = std::env::temp_dir().join(format!("ctx-tmpfs-probe-{}", std::process::id()));
    let mounted = Tmpfs::mount(&probe, 1).map(drop);
    let _ = std::fs::remove_dir(&probe);
    mounted
}

fn disk(node: &TestNode) -> Value {
    node.status().expect("status")["disk"].clone()
}

/// A value of about 12 KiB, different for each `i`.
fn big_value(i: usize) -> String {
    format!("{i:06}-{}", "x".repeat(12 * 1024))
}

fn full_disk() -> Result<(), Failed> {
    let root = test_dir("disk");
    let mount = root.join("a");
    let tmpfs = Tmpfs::mount(&mount, TMPFS_MB)?;
    let mut a = TestNode::init(&root, "a");
    // a's log is kept off its small disk.
    a.log_file = root.join("a.log");
    let mut b = TestNode::init(&root, "b");
    let mut c = TestNode::init(&root, "c");
    let reserve = RESERVE_MB.to_string();
    let start_a = |a: &mut TestNode| a.start_plus(&["--disk-reserve-mb", &reserve]);
    start_a(&mut a);
    b.start();
    c.start();
    assert_eq!(disk(&a)["state"], "storing", "{}", disk(&a));
    assert_eq!(disk(&a)["reserve_bytes"], RESERVE_MB << 20);
    assert_eq!(
        std::fs::metadata(a.dir.join("reserve"))?.len(),
        RESERVE_MB << 20,
        "the reserve is written whole"
    );
    let context = kv_cluster(&a, &[&b]);
    a.cli_ok(&["context", "invite", &context, &c.member]);
    let ballast = mount.join("ballast");
    let chunk = vec![7u8; 1 << 20];
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&ballast)?;
        for _ in 0..BALLAST_MB {
            file.write_all(&chunk)?;
        }
        file.sync_all()?;
    }

    // b writes; a takes b's writes in until its disk is full.
    let mut acknowledged: Vec<(String, String)> = Vec::new();
    let started = Instant::now();
    let mut i = 0;
    while disk(&a)["state"] != "full" {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "a never filled its disk: {}",
            disk(&a)
        );
        for _ in 0..20 {
            let (key, value) = (format!("k{i}"), big_value(i));
            b.call(&context, "set", &[&key, &value])?;
            acknowledged.push((key, value));
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let full = disk(&a);
    eprintln!(
        "a turned full after {} writes of b: {full}",
        acknowledged.len()
    );
    assert!(a.log().contains("disk full: this node stores nothing"));

    // Writes are refused with a reason; nothing becomes a transaction.
    let refused = a
        .client()
        .post(
            &format!("/v1/contexts/{context}/call"),
            &json!({ "method": "set", "args": ["from-a", "refused"] }),
        )
        .expect_err("a write on a full disk is refused");
    let refused = refused.to_string();
    assert!(
        refused.contains("507") || refused.contains("disk is full"),
        "{refused}"
    );
    assert!(refused.contains("disk is full"), "{refused}");
    // Reads and status go on.
    let first = acknowledged[0].clone();
    assert_eq!(
        get(&a, &context, &first.0).as_deref(),
        Some(first.1.as_str())
    );
    // b goes on writing, acknowledged by b; a takes none of it in.
    for _ in 0..10 {
        let (key, value) = (format!("k{i}"), big_value(i));
        b.call(&context, "set", &[&key, &value])?;
        acknowledged.push((key, value));
        i += 1;
    }
    let last = acknowledged.last().expect("writes").clone();
    std::thread::sleep(Duration::from_secs(2));
    assert!(get(&a, &context, &last.0).is_none(), "a stores nothing new");
    // A member joins through a meanwhile: a answers its catchup from
    // memory and what it stored.
    let out = c.cli_ok(&["context", "join", &context, "--via", &a.listen]);
    assert!(
        out.starts_with(&format!("joined through {}", a.member)),
        "{out}"
    );
    eventually("c catches up from b too", &[&c], || {
        get(&c, &context, &last.0).as_deref() == Some(last.1.as_str())
    });
    // a restarts on the still-full disk: it starts, full.
    a.terminate();
    start_a(&mut a);
    assert_eq!(disk(&a)["state"], "full", "{}", disk(&a));
    let at_start = a.log();
    let at_start = at_start
        .lines()
        .rfind(|line| line.contains("disk full at start"))
        .expect("the start says the disk is full");
    assert!(!at_start.contains("available=0 "), "{at_start}");
    assert_eq!(
        get(&a, &context, &first.0).as_deref(),
        Some(first.1.as_str())
    );

    // Space returns: a stores again by itself and catches up.
    std::fs::remove_file(&ballast)?;
    eventually("a stores again", &[&a], || disk(&a)["state"] == "storing");
    assert!(a.log().contains("disk space is back"));
    let tx = a.call(&context, "set", &["from-a", "after the disk freed"])?;
    assert_eq!(tx.len(), 64, "{tx}");
    converged(&context, &[&a, &b, &c]);
    // Nothing acknowledged is lost, across a restart of a too.
    a.terminate();
    start_a(&mut a);
    for (key, value) in &acknowledged {
        assert_eq!(
            get(&a, &context, key).as_deref(),
            Some(value.as_str()),
            "{key}"
        );
    }
    assert_eq!(
        get(&a, &context, "from-a").as_deref(),
        Some("after the disk freed")
    );
    drop((a, b, c));
    drop(tmpfs);
    cleanup(&root);
    Ok(())
}
