//! # ctx-sim: deterministic simulation of ctx
//!
//! Drives many `ctx-core` engines through a modelled network in virtual time,
//! from one seed: scenario files in ([`scenario`]), a world of nodes, disks
//! and messages ([`world`]), the scenario runner and its checks ([`run`]),
//! replayable traces ([`trace`]) and reports ([`report`]).

pub mod byzantine;
pub mod clock;
pub mod disk;
pub mod explain;
pub mod fold;
pub mod fuzz;
pub mod generate;
pub mod invariant;
pub mod ledger;
pub mod liveness;
pub mod report;
pub mod run;
pub mod scenario;
pub mod shrink;
pub mod trace;
pub mod view;
pub mod world;
