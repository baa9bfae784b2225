//! A damaged store never starts with changed data: a store emptied,
//! truncated, removed, replaced or bit-flipped at many offsets is refused
//! with a message naming the file (or, where the damage hit nothing the
//! store reads, restores exactly as before), and `ctx-node repair` keeps
//! what is intact, after which the engine fetches what was dropped from the
//! other members.

mod support;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use ctx_core::{Config, Ed25519Verifier, Node, Record};
use ctx_node::identity::{DB_FILE, Identity, KEY_FILE};
use ctx_node::repair::repair;
use ctx_node::store::{MARKER_FILE, Seal, Store};
use support::{TestNode, cleanup, converged, get_api, kv_cluster, test_dir};

/// Writes before the sweep: past the first checkpoint cut (1 024), so the
/// store holds a checkpoint and a tail.
const WRITES: usize = 1_200;
/// Bit flips in the sweep, at offsets spread over the file.
const FLIPS: usize = 400;
/// redb's page size.
const PAGE: usize = 4096;

/// What a restored node holds, per context: everything a reader could see.
fn summary(dir: &Path) -> Result<Vec<String>, String> {
    let identity = Identity::load(dir).map_err(|e| e.to_string())?;
    let (_, loaded) = Store::open(dir, &identity).map_err(|e| e.to_string())?;
    let node = Node::restore(
        Config::default(),
        *identity.secret(),
        [0; 32],
        Arc::new(Ed25519Verifier),
        loaded.records,
    )
    .map_err(|e| format!("restore: {e}"))?;
    Ok(node
        .context_ids()
        .map(|id| format!("{:?}", node.status(&id)))
        .collect())
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).expect("dir");
    for name in [KEY_FILE, DB_FILE, MARKER_FILE] {
        fs::copy(from.join(name), to.join(name)).unwrap_or_else(|e| panic!("copy {name}: {e}"));
    }
}

/// A stopped member's data directory with a history, a checkpoint and a
/// tail, and its summary.
fn pristine(root: &Path) -> (std::path::PathBuf, Vec<String>) {
    let mut a = TestNode::init(root, "a");
    let mut b = TestNode::init(root, "b");
    a.start();
    b.start();
    let context = kv_cluster(&a, &[&b]);
    let client = a.client();
    for i in 0..WRITES {
        let args = [format!("k{}", i % 150), i.to_string()];
        client
            .post(
                &format!("/v1/contexts/{context}/call"),
                &serde_json::json!({ "method": "set", "args": args }),
            )
            .unwrap_or_else(|e| panic!("write {i}: {e}"));
    }
    converged(&context, &[&a, &b]);
    let started = std::time::Instant::now();
    while a
        .context_status(&context)
        .is_none_or(|s| s["checkpoint"].as_u64().is_none())
    {
        assert!(
            started.elapsed() < support::DEADLINE,
            "no checkpoint was cut: a {:?}, b {:?}",
            a.context_status(&context),
            b.context_status(&context)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    let summary = summary(&a.dir).expect("the pristine store opens");
    (a.dir.clone(), summary)
}

/// The outcome of opening a damaged copy: refused, or the same as before.
/// Anything else (started with other data) fails the test. A refused copy
/// is then repaired, and must restore with no more than it held.
fn check_damaged(what: &str, dir: &Path, before: &[String], refused: &mut usize) {
    match summary(dir) {
        Ok(after) => assert_eq!(after, before, "{what}: started with changed data"),
        Err(message) => {
            *refused += 1;
            assert!(
                message.contains(DB_FILE) || message.contains(MARKER_FILE),
                "{what}: the refusal names the file: {message}"
            );
            let identity = Identity::load(dir).expect("key");
            let report = repair(dir, &identity)
                .unwrap_or_else(|e| panic!("{what}: repair failed: {e} (refused: {message})"));
            let repaired = summary(dir)
                .unwrap_or_else(|e| panic!("{what}: the repaired store does not open: {e}"));
            assert!(
                repaired.len() <= before.len(),
                "{what}: repair made contexts: {report}"
            );
        }
    }
}

#[test]
fn no_damage_starts_with_changed_data() {
    let root = test_dir("damage-sweep");
    let (dir, before) = pristine(&root);
    let work = root.join("work");
    let len = fs::metadata(dir.join(DB_FILE)).expect("db").len() as usize;
    let mut refused = 0;

    // Bit flips at offsets spread over the pages that hold anything (most
    // of a redb file is preallocated zeros), by a fixed xorshift, so a
    // failure names its offset and replays.
    let pristine_bytes = fs::read(dir.join(DB_FILE)).expect("db");
    let used: Vec<usize> = pristine_bytes
        .chunks(PAGE)
        .enumerate()
        .filter(|(_, page)| page.iter().any(|&b| b != 0))
        .map(|(i, _)| i)
        .collect();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for flip in 0..FLIPS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let page = used[(x % used.len() as u64) as usize];
        let offset = (page * PAGE + ((x >> 20) as usize % PAGE)).min(len - 1);
        let bit = (x >> 40) % 8;
        copy_dir(&dir, &work);
        let path = work.join(DB_FILE);
        let mut bytes = fs::read(&path).expect("read");
        bytes[offset] ^= 1 << bit;
        fs::write(&path, bytes).expect("write");
        check_damaged(
            &format!("flip {flip}: bit {bit} of byte {offset} of {len}"),
            &work,
            &before,
            &mut refused,
        );
    }
    let flips_refused = refused;

    // Cut short anywhere: the header, a page, the last bytes.
    let lengths = [0, 1, 511, 4096, len / 4, len / 2, len - 4096, len - 1];
    for cut in lengths {
        copy_dir(&dir, &work);
        let file = fs::OpenOptions::new()
            .write(true)
            .open(work.join(DB_FILE))
            .expect("open");
        file.set_len(cut as u64).expect("truncate");
        drop(file);
        let before_refused = refused;
        check_damaged(
            &format!("cut to {cut} of {len}"),
            &work,
            &before,
            &mut refused,
        );
        assert_eq!(refused, before_refused + 1, "cut to {cut}: refused");
    }
    println!(
        "{FLIPS} bit flips in the {} used pages of a {len}-byte store: {flips_refused} \
         refused (each repaired), {} read as before; {} truncations refused",
        used.len(),
        FLIPS - flips_refused,
        lengths.len()
    );
    cleanup(&root);
}

/// The node, not the library: a damaged record refuses `run` with one
/// message (never a panic), `repair` drops that record and says so, and
/// the restarted node fetches the transaction again from its peer.
#[test]
fn a_damaged_record_is_refused_repaired_and_fetched_again() {
    let root = test_dir("damage-record");
    let mut a = TestNode::init(&root, "a");
    let mut b = TestNode::init(&root, "b");
    a.start();
    b.start();
    let context = kv_cluster(&a, &[&b]);
    for i in 0..40 {
        a.call(&context, "set", &[&format!("k{i}"), &i.to_string()])
            .expect("call");
    }
    let root_hash = converged(&context, &[&a, &b]);
    assert!(a.terminate().success());

    // Flip a bit in the record of the transaction that wrote k20.
    let db_path = a.dir.join(DB_FILE);
    let seal = Seal::new(&Identity::load(&a.dir).expect("key"));
    let seq = {
        let db = redb::Database::create(&db_path).expect("db");
        let table: redb::TableDefinition<([u8; 32], u64), &[u8]> =
            redb::TableDefinition::new("records");
        let read = redb::ReadableDatabase::begin_read(&db).expect("read");
        let records = read.open_table(table).expect("records");
        let mut found = None;
        for entry in redb::ReadableTable::iter(&records).expect("iter") {
            let (key, value) = entry.expect("entry");
            let (ctx, seq) = key.value();
            let record = seal.unseal(&ctx, seq, value.value()).expect("intact");
            if matches!(record, Record::Tx { .. })
                && record.encode().windows(3).any(|w| w == b"k20")
            {
                found = Some((ctx, seq, value.value().to_vec()));
            }
        }
        drop((records, read));
        let (ctx, seq, mut value) = found.expect("the record of k20");
        value[10] ^= 0x04;
        let write = db.begin_write().expect("write");
        write
            .open_table(table)
            .expect("records")
            .insert((ctx, seq), value.as_slice())
            .expect("insert");
        write.commit().expect("commit");
        seq
    };

    let (status, stderr) = a.start_refused();
    assert_eq!(status.code(), Some(1), "refused, not a panic: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for part in [
        format!("{} is corrupt", db_path.display()),
        format!("context {context} at sequence {seq}"),
        "ctx-node repair".to_owned(),
    ] {
        assert!(
            stderr.contains(&part),
            "the refusal says {part:?}: {stderr}"
        );
    }
    assert_eq!(
        stderr.matches("is corrupt").count(),
        1,
        "said once: {stderr}"
    );

    let report = a.repair().expect("repair");
    assert!(
        report.contains(&format!(
            "dropped the record of context {context} at sequence {seq}"
        )),
        "{report}"
    );
    assert!(
        report.contains(&format!("catches up again from member {}", b.member)),
        "{report}"
    );
    assert!(
        report.contains("1 dropped, 1 contexts to catch up again, 0 forgotten"),
        "{report}"
    );
    a.start();
    assert_eq!(converged(&context, &[&a, &b]), root_hash);
    assert_eq!(get_api(&a, &context, "k20").as_deref(), Some("20"));
    let again = {
        a.terminate();
        a.repair().expect("repair again")
    };
    assert!(again.contains("is intact"), "{again}");
    cleanup(&root);
}

/// A store emptied, cut short or removed refuses `run` with a message that
/// names it; `repair` of a removed one starts over with no context.
#[test]
fn an_emptied_truncated_or_missing_store_refuses_to_start() {
    let root = test_dir("damage-file");
    let mut a = TestNode::init(&root, "a");
    a.start();
    let context = kv_cluster(&a, &[]);
    for i in 0..20 {
        a.call(&context, "set", &[&format!("k{i}"), "v"])
            .expect("call");
    }
    assert!(a.terminate().success());
    let db_path = a.dir.join(DB_FILE);
    let bytes = fs::read(&db_path).expect("db");
    let db = db_path.display().to_string();

    type Damage<'a> = Box<dyn Fn() + 'a>;
    let cases: [(&str, Damage, String); 3] = [
        (
            "cut short",
            Box::new(|| fs::write(&db_path, &bytes[..bytes.len() / 2]).expect("cut")),
            format!("{db} is corrupt"),
        ),
        (
            "emptied",
            Box::new(|| fs::write(&db_path, b"").expect("empty")),
            format!("{db} is empty"),
        ),
        (
            "removed",
            Box::new(|| fs::remove_file(&db_path).expect("rm")),
            format!("{db} is missing"),
        ),
    ];
    for (what, damage, says) in &cases {
        fs::write(&db_path, &bytes).expect("restore");
        damage();
        let (status, stderr) = a.start_refused();
        assert_eq!(
            status.code(),
            Some(1),
            "{what}: refused, not a panic: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(stderr.contains(says), "{what}: says {says:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
    }
    let report = a.repair().expect("repair");
    assert!(report.contains("a new store was made"), "{report}");
    a.start();
    assert!(
        a.context_status(&context).is_none(),
        "no context after starting over"
    );
    cleanup(&root);
}
