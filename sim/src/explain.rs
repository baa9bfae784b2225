//! `ctx-sim explain TRACE --tx ID`: where one transaction went.
//!
//! Owns the story of one transaction, read off a [`View`]: who made it and
//! when, every message that carried it (push, fetch answer, stream, catchup
//! genesis) with the fate of each copy, every fetch that asked for it, and
//! every member's application of it with its position in that member's
//! order, its outcome and how often it was re-executed; and the members of
//! its context that never applied it. Text for a person, JSON for a script;
//! both from one [`Explained`].

use std::fmt::Write;

use serde::Serialize;

use crate::view::{FindError, View};

/// One send of the transaction (one message, each copy's fate).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Send {
    pub message: u64,
    pub at_ms: u64,
    pub from: String,
    pub to: String,
    /// `tx` (a push), `txs` (with what it answers), `catchup-accepted`.
    pub kind: String,
    pub answers: Option<String>,
    /// Each copy: (fate, at_ms).
    pub copies: Vec<(String, u64)>,
}

/// One member's application of the transaction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Applied {
    pub node: String,
    pub at_ms: u64,
    pub position: Option<u64>,
    pub outcome: String,
    pub reexecuted: u32,
}

/// A fetch that asked for the transaction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fetch {
    pub message: u64,
    pub at_ms: u64,
    /// Who asked, and whom.
    pub by: String,
    pub from: String,
    pub fate: String,
}

/// Where one transaction went.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explained {
    pub tx: String,
    pub context: String,
    pub kind: String,
    pub height: u64,
    pub parents: Vec<String>,
    pub input_bytes: u32,
    pub author: Option<String>,
    pub authored_ms: Option<u64>,
    pub sends: Vec<Send>,
    /// Copies of those sends that never arrived: (message, fate, at_ms).
    pub losses: Vec<(u64, String, u64)>,
    pub fetches: Vec<Fetch>,
    pub applied: Vec<Applied>,
    /// Nodes that applied something of this context but never this.
    pub never_applied: Vec<String>,
}

/// The story of the transaction whose id starts with `prefix`.
pub fn explain(view: &View, prefix: &str) -> Result<Explained, FindError> {
    let index = view.find_tx(prefix)?;
    let tx = &view.txs[index];
    let lane = |node: u32| view.lane(node).to_owned();
    let mut sends = Vec::new();
    let mut losses = Vec::new();
    let mut fetches = Vec::new();
    for message in &view.messages {
        if message.txs.contains(&(index as u32)) {
            for copy in &message.copies {
                if copy.fate != "delivered" && copy.fate != "in-flight" {
                    losses.push((message.id, copy.fate.clone(), copy.at_ms));
                }
            }
            sends.push(Send {
                message: message.id,
                at_ms: message.sent_ms,
                from: lane(message.from),
                to: lane(message.to),
                kind: message.kind.clone(),
                answers: message.answers.clone(),
                copies: message
                    .copies
                    .iter()
                    .map(|c| (c.fate.clone(), c.at_ms))
                    .collect(),
            });
        }
        if message.wants.contains(&(index as u32)) {
            fetches.push(Fetch {
                message: message.id,
                at_ms: message.sent_ms,
                by: lane(message.from),
                from: lane(message.to),
                fate: message
                    .copies
                    .first()
                    .map_or_else(String::new, |c| c.fate.clone()),
            });
        }
    }
    let mut applied: Vec<Applied> = tx
        .applied
        .iter()
        .map(|a| Applied {
            node: lane(a.node),
            at_ms: a.at_ms,
            position: a.position,
            outcome: a.outcome.clone(),
            reexecuted: a.reexecuted,
        })
        .collect();
    applied.sort_by(|a, b| (a.at_ms, &a.node).cmp(&(b.at_ms, &b.node)));
    let mut holders: Vec<u32> = view
        .txs
        .iter()
        .filter(|other| other.context == tx.context)
        .flat_map(|other| other.applied.iter().map(|a| a.node))
        .collect();
    holders.sort_unstable();
    holders.dedup();
    let never_applied = holders
        .into_iter()
        .filter(|node| !tx.applied.iter().any(|a| a.node == *node))
        .map(lane)
        .collect();
    Ok(Explained {
        tx: tx.id.clone(),
        context: view.context_name(tx.context).to_owned(),
        kind: tx.kind.clone(),
        height: tx.height,
        parents: tx.parents.clone(),
        input_bytes: tx.input_bytes,
        author: tx.author.map(lane),
        authored_ms: tx.authored_ms,
        sends,
        losses,
        fetches,
        applied,
        never_applied,
    })
}

/// The story as text.
pub fn text(explained: &Explained) -> String {
    let mut out = String::new();
    let e = explained;
    let _ = writeln!(out, "transaction {}", e.tx);
    let _ = writeln!(
        out,
        "  {} in context {}, height {}, {} B input, parents [{}]",
        e.kind,
        e.context,
        e.height,
        e.input_bytes,
        e.parents.join(", ")
    );
    match (&e.author, e.authored_ms) {
        (Some(author), Some(at)) => {
            let _ = writeln!(out, "  authored by {author} at {}", ms(at));
        }
        (Some(author), None) => {
            let _ = writeln!(out, "  authored by {author} (not seen persisting it)");
        }
        _ => {
            let _ = writeln!(out, "  authored by a node outside this run");
        }
    }
    let _ = writeln!(out, "  sends ({}):", e.sends.len());
    for send in &e.sends {
        let what = match &send.answers {
            Some(request) => format!("{} (answering a {request})", send.kind),
            None => send.kind.clone(),
        };
        let fates: Vec<String> = send
            .copies
            .iter()
            .map(|(fate, at)| format!("{fate} at {}", ms(*at)))
            .collect();
        let _ = writeln!(
            out,
            "    {:>11}  {} -> {}  in {what}, message #{}: {}",
            ms(send.at_ms),
            send.from,
            send.to,
            send.message,
            fates.join(", ")
        );
    }
    let _ = writeln!(out, "  losses ({}):", e.losses.len());
    for (message, fate, at) in &e.losses {
        let _ = writeln!(out, "    {:>11}  message #{message}: {fate}", ms(*at));
    }
    let _ = writeln!(out, "  fetches asking for it ({}):", e.fetches.len());
    for fetch in &e.fetches {
        let _ = writeln!(
            out,
            "    {:>11}  {} asked {} for it, message #{}: {}",
            ms(fetch.at_ms),
            fetch.by,
            fetch.from,
            fetch.message,
            fetch.fate
        );
    }
    let _ = writeln!(out, "  applications ({}):", e.applied.len());
    for applied in &e.applied {
        let position = applied
            .position
            .map_or_else(|| "?".to_owned(), |p| p.to_string());
        let _ = writeln!(
            out,
            "    {:>11}  {:<12} position {position:>6}  {}  re-executed {} times",
            ms(applied.at_ms),
            applied.node,
            applied.outcome,
            applied.reexecuted
        );
    }
    if !e.never_applied.is_empty() {
        let _ = writeln!(out, "  never applied on: {}", e.never_applied.join(", "));
    }
    out
}

fn ms(at_ms: u64) -> String {
    format!("{:.3}s", at_ms as f64 / 1000.0)
}
