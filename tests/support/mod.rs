//! A tiny in-memory network for engine tests: nodes, their disks, and the
//! messages in flight, delivered in whatever order a test chooses. Time
//! moves only when a test advances it. (The full simulator is `ctx-sim`;
//! this harness exists so the engine's properties are tested on their own.)

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::Arc;

use ctx_core::{Config, ContextId, Ed25519Verifier, Event, MemberId, Node, Record, Time};

pub const KV: &str = include_str!("../../scenarios/apps/kv.wat");
pub const COUNTER: &str = include_str!("../../scenarios/apps/counter.wat");
pub const BANK: &str = include_str!("../../scenarios/apps/bank.wat");

/// The input of a call: each argument as a 4-byte little-endian length and
/// its bytes (the convention of the bundled apps).
pub fn args(parts: &[&[u8]]) -> Vec<u8> {
    ctx_core::runtime::encode_args(parts)
}

pub fn secret(index: usize) -> [u8; 32] {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&(index as u64 + 1).to_le_bytes());
    secret
}

#[derive(Clone, Debug)]
pub struct Message {
    pub from: usize,
    pub to: usize,
    pub bytes: Vec<u8>,
}

pub struct Net {
    pub nodes: Vec<Node>,
    pub ids: Vec<MemberId>,
    pub disks: Vec<Vec<Record>>,
    pub events: Vec<Vec<Event>>,
    pub inflight: VecDeque<Message>,
    pub up: Vec<bool>,
    pub now: Time,
    pub config: Config,
}

impl Net {
    pub fn new(count: usize) -> Net {
        Net::with_config(count, Config::default())
    }

    pub fn with_config(count: usize, config: Config) -> Net {
        let nodes: Vec<Node> = (0..count).map(|i| Net::fresh_node(&config, i)).collect();
        let ids = nodes.iter().map(Node::member_id).collect();
        Net {
            nodes,
            ids,
            disks: vec![Vec::new(); count],
            events: vec![Vec::new(); count],
            inflight: VecDeque::new(),
            up: vec![true; count],
            now: Time::ZERO,
            config,
        }
    }

    /// Node `index` as it starts: its key and engine seed follow from the index.
    pub fn fresh_node(config: &Config, index: usize) -> Node {
        let mut seed = [0u8; 32];
        seed[0] = index as u8;
        Node::new(
            config.clone(),
            secret(index),
            seed,
            Arc::new(Ed25519Verifier),
        )
    }

    pub fn index_of(&self, id: MemberId) -> usize {
        self.ids
            .iter()
            .position(|m| *m == id)
            .expect("known member")
    }

    /// Moves every node's outputs out: records to its disk, messages into
    /// flight (in that order, as the durability rule wants).
    pub fn collect(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(record) = self.nodes[i].poll_persist() {
                self.disks[i].push(record);
            }
            while let Some(transmit) = self.nodes[i].poll_transmit() {
                let to = self.index_of(transmit.to);
                self.inflight.push_back(Message {
                    from: i,
                    to,
                    bytes: transmit.bytes,
                });
            }
            while let Some(event) = self.nodes[i].poll_event() {
                self.events[i].push(event);
            }
        }
    }

    /// Delivers the message at `index` of the in-flight queue (dropped if its
    /// receiver is down).
    pub fn deliver(&mut self, index: usize) {
        let message = self.inflight.remove(index).expect("in flight");
        if self.up[message.to] {
            let from = self.ids[message.from];
            self.nodes[message.to]
                .handle_message(self.now, from, &message.bytes)
                .expect("engines send valid messages");
        }
        self.collect();
    }

    /// Delivers everything in flight, first in first out, until quiet.
    pub fn run(&mut self) {
        self.collect();
        while !self.inflight.is_empty() {
            self.deliver(0);
        }
    }

    /// Moves time forward by `ms`, firing timers as they fall due and
    /// delivering messages instantly.
    pub fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        self.run();
        loop {
            match self.next_timeout() {
                Some(at) if at <= end => {
                    self.fire_timers(at);
                    self.run();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// When the earliest timer of a node that is up falls due.
    pub fn next_timeout(&self) -> Option<Time> {
        (0..self.nodes.len())
            .filter(|i| self.up[*i])
            .filter_map(|i| self.nodes[i].poll_timeout())
            .min()
    }

    /// Moves time to `at` (never back) and fires the timers of every node
    /// that is up and due by then. Their outputs stay in the nodes.
    pub fn fire_timers(&mut self, at: Time) {
        self.now = self.now.max(at);
        for i in 0..self.nodes.len() {
            if self.up[i] && self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now) {
                self.nodes[i].handle_timeout(self.now);
            }
        }
    }

    /// Stops a node: everything in memory is gone, messages to it are lost.
    pub fn crash(&mut self, i: usize) {
        self.up[i] = false;
        self.nodes[i] = Net::fresh_node(&self.config, i);
    }

    /// Brings a node back from the records on its disk.
    pub fn restart(&mut self, i: usize) {
        let mut seed = [0u8; 32];
        seed[0] = i as u8;
        seed[1] = 1;
        let records = self.disks[i].clone();
        self.nodes[i] = Node::restore(
            self.config.clone(),
            secret(i),
            seed,
            Arc::new(Ed25519Verifier),
            records,
        )
        .expect("a node restores from its own records");
        self.up[i] = true;
    }

    /// Creates a context on node `creator` and brings every other listed node
    /// in (invite, then join via the creator), delivering in order.
    pub fn context_with(&mut self, creator: usize, app: &str, members: &[usize]) -> ContextId {
        let context = self.nodes[creator]
            .create_context(self.now, app.as_bytes())
            .expect("app compiles");
        for &m in members {
            if m == creator {
                continue;
            }
            let member = self.ids[m];
            self.nodes[creator]
                .invite(self.now, context, member)
                .expect("creator is a member");
            self.run();
            let via = self.ids[creator];
            self.nodes[m]
                .join(self.now, context, via)
                .expect("not yet held");
            self.run();
        }
        self.advance(10);
        context
    }

    pub fn root(&self, i: usize, context: &ContextId) -> Option<ctx_core::Hash> {
        self.nodes[i].replica(context).map(|r| r.state_root())
    }

    /// Asserts every listed node holds the context with the same heads and
    /// state root; returns the root.
    pub fn assert_converged(&self, context: &ContextId, members: &[usize]) -> ctx_core::Hash {
        let first = self.nodes[members[0]].status(context).expect("held");
        for &m in &members[1..] {
            let status = self.nodes[m].status(context).expect("held");
            assert_eq!(
                status.heads, first.heads,
                "heads of node {m} differ from node {}",
                members[0]
            );
            assert_eq!(
                status.state_root, first.state_root,
                "root of node {m} differs"
            );
            assert_eq!(
                status.applied, first.applied,
                "applied count of node {m} differs"
            );
        }
        first.state_root.expect("a member has a root")
    }
}
