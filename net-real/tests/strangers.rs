//! Strangers get nothing and hold nothing. Anyone with a fresh key completes
//! the handshake; a connection whose member no context of the node names is
//! sent no addresses, its gossip is ignored, it is not listed in `status`,
//! and it is closed after a short grace. A flood of them (and of garbage)
//! neither keeps a new member out nor fills the log.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ctx_core::MemberId;
use ctx_node::limits::STRANGER_GRACE;
use ctx_node::peer::{Hello, PeerMessage};
use ctx_node::secure::{Session, handshake};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use support::{TestNode, cleanup, converged, eventually, kv_cluster, test_dir};

/// The flood takes both cores; the other tests time what the node does, so
/// none runs beside it.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn hello() -> Vec<u8> {
    Hello {
        listen_port: 9,
        advertise: None,
    }
    .encode()
}

/// The members `status` lists as peers.
fn listed_peers(status: &Value) -> Vec<String> {
    status["peers"]
        .as_array()
        .expect("peers")
        .iter()
        .filter_map(|p| p["member"].as_str().map(str::to_owned))
        .collect()
}

/// A stranger's key: a fresh one for every connection.
fn stranger_key(task: u64, round: u64) -> [u8; 32] {
    let mut input = [0u8; 16];
    input[..8].copy_from_slice(&task.to_le_bytes());
    input[8..].copy_from_slice(&round.to_le_bytes());
    *blake3::hash(&input).as_bytes()
}

#[test]
fn strangers_get_nothing_and_are_closed_after_their_grace() {
    let _alone = alone();
    let root = test_dir("strangers");
    let mut a = TestNode::init(&root, "a");
    let mut b = TestNode::init(&root, "b");
    a.start();
    b.start();
    let context = kv_cluster(&a, &[&b]);
    // b joined through a before it knew a as a member: a's address is
    // stored once b is one, so a restarted b can dial a.
    b.terminate();
    b.start();
    let restored = b.restored_line();
    assert!(restored.contains("peers=1"), "{restored}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let connect = |secret: [u8; 32]| {
        let addr = a.listen.clone();
        runtime.block_on(async move {
            let mut stream = TcpStream::connect(&addr).await.expect("connect");
            let session = handshake(&mut stream, &secret, true, hello(), None)
                .await
                .expect("any key completes a handshake");
            (stream, session)
        })
    };
    // The first stranger gossips made-up members.
    let fakes: Vec<(MemberId, std::net::SocketAddr)> = (1..=50u8)
        .map(|i| (MemberId([i; 32]), "127.0.0.1:9".parse().expect("addr")))
        .collect();
    let (mut stream, Session { mut sender, .. }) = connect([7; 32]);
    runtime
        .block_on(sender.send(&mut stream, &PeerMessage::encode_peers(&fakes)))
        .expect("send gossip");
    // A second one listens, from the moment it is connected.
    let connected = Instant::now();
    let (mut listener, Session { mut receiver, .. }) = connect([8; 32]);
    eventually("a counts both strangers", &[&a], || {
        a.status().is_some_and(|s| s["strangers"] == 2)
    });
    let status = a.status().expect("status");
    assert_eq!(
        listed_peers(&status),
        vec![b.member.clone()],
        "strangers and their gossip are not listed: {status}"
    );
    let received = runtime.block_on(async {
        let patience = STRANGER_GRACE + Duration::from_secs(5);
        tokio::time::timeout(patience, receiver.recv(&mut listener)).await
    });
    let held = connected.elapsed();
    match received {
        Ok(Err(_closed)) => {}
        Ok(Ok(bytes)) => panic!(
            "a stranger was sent {:?}",
            PeerMessage::decode(&bytes).map(|m| match m {
                PeerMessage::Peers(entries) => format!("{} addresses", entries.len()),
                PeerMessage::Engine(bytes) => format!("an engine message of {} bytes", bytes.len()),
            })
        ),
        Err(_) => panic!("a stranger was held past {held:?}"),
    }
    assert!(
        held >= STRANGER_GRACE - Duration::from_millis(500)
            && held < STRANGER_GRACE + Duration::from_secs(3),
        "a stranger is closed after its grace of {STRANGER_GRACE:?}, not after {held:?}"
    );
    eventually("a forgets the strangers", &[&a], || {
        a.status().is_some_and(|s| s["strangers"] == 0)
    });
    drop((stream, listener));

    // Nothing of the strangers is stored: after a restart only b is known.
    a.terminate();
    a.start();
    let status = a.status().expect("status");
    assert_eq!(listed_peers(&status), vec![b.member.clone()], "{status}");
    a.cli_ok(&["call", &context, "set", "after", "strangers"]);
    converged(&context, &[&a, &b]);
    drop((a, b));
    cleanup(&root);
}

/// What the flood did, counted by its tasks.
#[derive(Default)]
struct Flood {
    stop: AtomicBool,
    handshakes: AtomicU64,
    /// Messages any stranger was sent: there must be none.
    sent_to_strangers: AtomicU64,
    garbage: AtomicU64,
}

/// A stranger that connects with a fresh key, holds the connection until
/// the node closes it, and connects again at once.
async fn stranger(addr: String, task: u64, flood: Arc<Flood>) {
    let mut round = 0;
    while !flood.stop.load(Ordering::Relaxed) {
        round += 1;
        let Ok(mut stream) = TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let secret = stranger_key(task, round);
        let shake = handshake(&mut stream, &secret, true, hello(), None);
        let Ok(Ok(Session { mut receiver, .. })) =
            tokio::time::timeout(Duration::from_secs(10), shake).await
        else {
            continue;
        };
        flood.handshakes.fetch_add(1, Ordering::Relaxed);
        while !flood.stop.load(Ordering::Relaxed) {
            let read = receiver.recv(&mut stream);
            match tokio::time::timeout(Duration::from_millis(500), read).await {
                Ok(Ok(_)) => {
                    flood.sent_to_strangers.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(_closed)) => break,
                Err(_still_open) => {}
            }
        }
    }
}

/// Connects, sends bytes that are no handshake, and does it again.
async fn garbage(addr: String, flood: Arc<Flood>) {
    while !flood.stop.load(Ordering::Relaxed) {
        if let Ok(mut stream) = TcpStream::connect(&addr).await {
            let _ = stream.write_all(&[0xAB; 64]).await;
            let _ = stream.shutdown().await;
            flood.garbage.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn a_stranger_flood_neither_keeps_a_member_out_nor_fills_the_log() {
    let _alone = alone();
    const STRANGERS: u64 = 300;
    const GARBAGE: u64 = 20;
    const FLOOD_FOR: Duration = Duration::from_secs(20);
    let root = test_dir("flood");
    let mut a = TestNode::init(&root, "a");
    // What an operator runs: info and above.
    a.log_filter = "info";
    let mut b = TestNode::init(&root, "b");
    let mut c = TestNode::init(&root, "c");
    for node in [&mut a, &mut b, &mut c] {
        node.start();
    }
    let context = kv_cluster(&a, &[&b]);
    a.cli_ok(&["context", "invite", &context, &c.member]);
    let log_before = a.log().lines().count();

    let flood = Arc::new(Flood::default());
    let flooding = {
        let (addr, flood) = (a.listen.clone(), Arc::clone(&flood));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                for task in 0..STRANGERS {
                    tasks.push(tokio::spawn(stranger(
                        addr.clone(),
                        task,
                        Arc::clone(&flood),
                    )));
                }
                for _ in 0..GARBAGE {
                    tasks.push(tokio::spawn(garbage(addr.clone(), Arc::clone(&flood))));
                }
                for task in tasks {
                    let _ = task.await;
                }
            });
        })
    };
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let handshakes = flood.handshakes.load(Ordering::Relaxed);
    assert!(handshakes >= STRANGERS / 2, "the flood is on: {handshakes}");

    // A member invited before the flood joins during it, and writes.
    let joining = Instant::now();
    let out = c.cli_ok(&["context", "join", &context, "--via", &a.listen]);
    assert!(
        out.starts_with(&format!("joined through {}", a.member)),
        "{out}"
    );
    let joined_in = joining.elapsed();
    c.cli_ok(&["call", &context, "set", "during", "flood"]);
    b.cli_ok(&["call", &context, "set", "also", "during"]);
    converged(&context, &[&a, &b, &c]);
    if let Some(rest) = FLOOD_FOR.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    let status = a.status().expect("status during the flood");
    flood.stop.store(true, Ordering::Relaxed);
    flooding.join().expect("the flood ends");
    let flooded_for = started.elapsed();

    let mut members = listed_peers(&status);
    members.sort();
    let mut expected = vec![b.member.clone(), c.member.clone()];
    expected.sort();
    assert_eq!(members, expected, "only members are listed: {status}");
    assert!(
        status["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .all(|p| p["connected"] == true),
        "the members stayed connected: {status}"
    );
    let strangers = status["strangers"].as_u64().expect("strangers");
    assert!(
        strangers <= ctx_node::limits::STRANGERS_MAX as u64,
        "{status}"
    );
    assert_eq!(flood.sent_to_strangers.load(Ordering::Relaxed), 0);

    let log = a.log();
    let lines: Vec<&str> = log.lines().skip(log_before).collect();
    let handshakes = flood.handshakes.load(Ordering::Relaxed);
    let garbage = flood.garbage.load(Ordering::Relaxed);
    eprintln!(
        "{flooded_for:?} of flood: {handshakes} stranger handshakes, {garbage} garbage \
         connections, c joined in {joined_in:?}; {} log lines",
        lines.len()
    );
    // A line per kind and window, and one with the count held back: a few
    // dozen, where every connection used to write one or two lines.
    assert!(
        lines.len() < 150,
        "{} log lines for {} connections:\n{}",
        lines.len(),
        handshakes + garbage,
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains("held_back=")),
        "what is held back is counted"
    );
    eventually("a forgets the strangers", &[&a], || {
        a.status().is_some_and(|s| s["strangers"] == 0)
    });
    drop((a, b, c));
    cleanup(&root);
}

#[test]
fn addresses_go_only_to_members_of_a_shared_context_and_are_of_its_members() {
    let _alone = alone();
    use ed25519_dalek::SigningKey;
    let root = test_dir("shared-gossip");
    let mut a = TestNode::init(&root, "a");
    let mut b = TestNode::init(&root, "b");
    let mut c = TestNode::init(&root, "c");
    for node in [&mut a, &mut b, &mut c] {
        node.start();
    }
    // a holds two contexts: one with b, one with c.
    let with_b = kv_cluster(&a, &[&b]);
    let _with_c = kv_cluster(&a, &[&c]);
    // A client whose key is invited to the first only.
    let secret = [9u8; 32];
    let member = MemberId(SigningKey::from_bytes(&secret).verifying_key().to_bytes());
    a.cli_ok(&["context", "invite", &with_b, &member.to_hex()]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let book = runtime.block_on(async {
        let mut stream = TcpStream::connect(&a.listen).await.expect("connect");
        let mut session = handshake(&mut stream, &secret, true, hello(), None)
            .await
            .expect("handshake");
        let first = session.receiver.recv(&mut stream);
        tokio::time::timeout(Duration::from_secs(10), first).await
    });
    let book = book
        .expect("an invited member is sent addresses")
        .expect("read");
    let Ok(PeerMessage::Peers(entries)) = PeerMessage::decode(&book) else {
        panic!("the first message is the address book");
    };
    let members: Vec<String> = entries.iter().map(|(m, _)| m.to_hex()).collect();
    assert_eq!(
        members,
        vec![b.member.clone()],
        "the addresses of the shared context's members, and not c's"
    );
    let status = a.status().expect("status");
    assert!(
        listed_peers(&status).contains(&member.to_hex()) && status["strangers"] == 0,
        "an invited member is no stranger: {status}"
    );
    drop((a, b, c));
    cleanup(&root);
}
