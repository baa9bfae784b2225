//! Three members of one kv context, driven by hand: a minimal driver for the
//! sans-IO engine. Alice creates the context and invites Bob and Carol; all
//! three write the same key concurrently; messages arrive newest first, so
//! transactions land "in the past" and are re-ordered; Bob leaves; everyone
//! left agrees on one state root.
//!
//! Run: `cargo run --release -p ctx-core --example three_members`

use std::collections::VecDeque;
use std::sync::Arc;

use ctx_core::{Config, ContextId, Ed25519Verifier, Event, Key, MemberId, Node, Time};

const KV: &str = include_str!("../../scenarios/apps/kv.wat");

struct World {
    names: Vec<&'static str>,
    nodes: Vec<Node>,
    inflight: VecDeque<(usize, usize, Vec<u8>)>,
    now: Time,
}

impl World {
    fn new(names: &[&'static str]) -> World {
        let nodes = (0..names.len())
            .map(|i| {
                let secret = [i as u8 + 1; 32];
                let seed = [i as u8 + 100; 32];
                Node::new(Config::default(), secret, seed, Arc::new(Ed25519Verifier))
            })
            .collect();
        World {
            names: names.to_vec(),
            nodes,
            inflight: VecDeque::new(),
            now: Time::ZERO,
        }
    }

    fn id(&self, i: usize) -> MemberId {
        self.nodes[i].member_id()
    }

    /// Drains every node: records would go to disk first, then messages.
    fn drain(&mut self) {
        let ids: Vec<MemberId> = self.nodes.iter().map(Node::member_id).collect();
        for i in 0..self.nodes.len() {
            while self.nodes[i].poll_persist().is_some() {}
            while let Some(t) = self.nodes[i].poll_transmit() {
                let to = ids.iter().position(|m| *m == t.to).expect("known peer");
                self.inflight.push_back((i, to, t.bytes));
            }
            while let Some(event) = self.nodes[i].poll_event() {
                match event {
                    Event::Applied { .. } => {}
                    Event::Reordered { reexecuted, .. } => println!(
                        "  {:>5}: a transaction arrived in the past; re-executed {reexecuted}",
                        self.names[i]
                    ),
                    other => println!("  {:>5}: {other:?}", self.names[i]),
                }
            }
        }
    }

    /// Delivers everything, newest message first, then lets sync settle.
    fn deliver_newest_first(&mut self) {
        self.drain();
        while let Some((from, to, bytes)) = self.inflight.pop_back() {
            let from = self.id(from);
            self.nodes[to]
                .handle_message(self.now, from, &bytes)
                .expect("valid");
            self.drain();
        }
        for _ in 0..5 {
            self.now = self.now + 1_000;
            for node in &mut self.nodes {
                node.handle_timeout(self.now);
            }
            self.drain();
            while let Some((from, to, bytes)) = self.inflight.pop_front() {
                let from = self.id(from);
                self.nodes[to]
                    .handle_message(self.now, from, &bytes)
                    .expect("valid");
                self.drain();
            }
        }
    }

    fn report(&self, context: &ContextId) {
        for (i, node) in self.nodes.iter().enumerate() {
            match node.status(context) {
                Some(s) => {
                    let colour = node
                        .get(context, &Key::padded(b"colour").expect("short"))
                        .map(|v| String::from_utf8_lossy(v).into_owned());
                    println!(
                        "  {:>5}: {:?}, {} applied, {} members, root {}, colour = {:?}",
                        self.names[i],
                        s.phase,
                        s.applied,
                        s.members.len(),
                        s.state_root.map_or("-".into(), |r| r.short()),
                        colour.unwrap_or_default()
                    );
                }
                None => println!("  {:>5}: holds no copy", self.names[i]),
            }
        }
    }
}

fn args(parts: &[&[u8]]) -> Vec<u8> {
    ctx_core::runtime::encode_args(parts)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut world = World::new(&["alice", "bob", "carol"]);
    let now = world.now;

    println!("alice creates a kv context and invites bob and carol");
    let ctx = world.nodes[0].create_context(now, KV.as_bytes())?;
    for i in 1..3 {
        let member = world.id(i);
        world.nodes[0].invite(now, ctx, member)?;
        let via = world.id(0);
        world.nodes[i].join(now, ctx, via)?;
        world.deliver_newest_first();
    }

    println!("\nall three set `colour` at once; messages arrive newest first");
    for (i, colour) in ["red", "green", "blue"].iter().enumerate() {
        let receipt =
            world.nodes[i].call(world.now, ctx, "set", args(&[b"colour", colour.as_bytes()]))?;
        println!(
            "  {:>5}: set colour = {colour} as {:?}",
            world.names[i], receipt.tx
        );
    }
    world.deliver_newest_first();
    world.report(&ctx);

    println!("\nbob leaves; alice and carol write on");
    world.nodes[1].leave(world.now, ctx)?;
    world.nodes[2].call(world.now, ctx, "set", args(&[b"colour", b"violet"]))?;
    world.deliver_newest_first();
    world.report(&ctx);

    let roots: Vec<_> = [0, 2]
        .iter()
        .map(|i| world.nodes[*i].status(&ctx).and_then(|s| s.state_root))
        .collect();
    assert_eq!(roots[0], roots[1], "alice and carol converge");
    println!("\nalice and carol hold the same state root: converged");
    Ok(())
}
