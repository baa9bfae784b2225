//! `ctx-sim`: the deterministic simulator, scenario runner and fuzzer for ctx.

pub mod scenario;
