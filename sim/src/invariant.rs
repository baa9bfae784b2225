//! The always-on invariant checks: `invariant(<context>, <method>)` for
//! every view an app's ABI marks as an invariant (`#[invariant]` in the
//! SDK, `"invariant": true` in its `ctx_abi` section).
//!
//! Owns: after every input a member takes that changed its state root of a
//! context whose app has invariants, each invariant view is called on that
//! member's copy (beside the run, [`World::view`]: nothing recorded,
//! nothing drawn), so the cost per input follows the member that changed,
//! never the member count; the first violation of each invariant is kept
//! with the member, the time and the app's message. Every context is
//! checked in its own right: contexts whose app has no ABI, or no
//! invariant, cost nothing and add no check, so their runs and reports are
//! what they were.

use std::collections::BTreeMap;

use ctx_core::node::CommandError;
use ctx_core::runtime::CallError;
use ctx_core::{ContextId, Hash};

use crate::run::CheckResult;
use crate::world::World;

/// The invariants of a run's contexts and what their checks found.
#[derive(Debug, Default)]
pub struct Invariants {
    /// Per context with invariants: its scenario name and its invariant
    /// views (the ABI's order).
    contexts: BTreeMap<ContextId, (String, Vec<String>)>,
    /// The state root each (node, context) was last checked at.
    checked: BTreeMap<(usize, ContextId), Hash>,
    /// (context name, method) -> the first violation: (time, detail).
    violated: BTreeMap<(String, String), (u64, String)>,
}

impl Invariants {
    /// A context was created running `wasm`: its invariants, if its ABI
    /// declares any. A module without an ABI, or with one that does not
    /// parse (the node runs it anyway), has none to check.
    pub fn created(&mut self, name: &str, context: ContextId, wasm: &[u8]) {
        let Ok(Some(abi)) = ctx_abi::Abi::from_module(wasm) else {
            return;
        };
        let methods: Vec<String> = abi.invariants().map(|m| m.name.clone()).collect();
        if !methods.is_empty() {
            self.contexts.insert(context, (name.to_owned(), methods));
        }
    }

    /// After an input to `node`: checks each context with invariants whose
    /// state root on `node` changed since it was last checked there.
    pub fn after_input(&mut self, world: &mut World, node: usize) {
        if self.contexts.is_empty() {
            return;
        }
        let Some(engine) = world.engine(node) else {
            return;
        };
        let changed: Vec<(ContextId, Hash)> = self
            .contexts
            .keys()
            .filter_map(|context| {
                let root = engine.replica(context)?.state_root();
                let last = self.checked.get(&(node, *context));
                (last != Some(&root)).then_some((*context, root))
            })
            .collect();
        for (context, root) in changed {
            self.checked.insert((node, context), root);
            let (name, methods) = self.contexts[&context].clone();
            for method in methods {
                let violation = match world.view(node, &context, &method, &[]) {
                    None | Some(Ok(_)) => continue,
                    // Not a member any more (left, mid-join): nothing to check.
                    Some(Err(CommandError::Call(error))) => message(&error),
                    Some(Err(_)) => continue,
                };
                let at_ms = world.now().as_ms();
                self.violated
                    .entry((name.clone(), method))
                    .or_insert_with(|| {
                        let detail = format!(
                            "{} at {at_ms} ms (state root {}): {violation}",
                            world.names[node],
                            root.short()
                        );
                        (at_ms, detail)
                    });
            }
        }
    }

    /// One check per invariant of each created context, after the run:
    /// failed at its first violation, else passed at `now_ms`.
    pub fn results(&self, now_ms: u64) -> Vec<CheckResult> {
        let mut out = Vec::new();
        for (name, methods) in self.contexts.values() {
            for method in methods {
                let violated = self.violated.get(&(name.clone(), method.clone()));
                out.push(CheckResult {
                    name: format!("invariant({name}, {method})"),
                    passed: violated.is_none(),
                    at_ms: violated.map_or(now_ms, |(at, _)| *at),
                    detail: violated.map(|(_, d)| d.clone()).unwrap_or_default(),
                    line: 0,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// What an invariant's failure says: the app's own message when it failed
/// with one (`Err(e)` of an `#[invariant]`), else the runtime's error.
fn message(error: &CallError) -> String {
    match error {
        CallError::AppFailed(message) => message.clone(),
        other => format!("the invariant did not run: {other}"),
    }
}
