//! A context's genesis names the runtime version its calls run as; a node
//! asked to run a context of another version refuses it with a clear error
//! rather than execute its history differently: at restart, and when a
//! catchup brings it such a genesis.

mod support;

use std::sync::Arc;

use ctx_core::record::Record;
use ctx_core::replica::ReplicaError;
use ctx_core::runtime::RUNTIME_VERSION;
use ctx_core::tx::{Parent, SignedTx, TX_FORMAT_VERSION, Tx, TxBody, TxKind};
use ctx_core::wire::{Body, Envelope};
use ctx_core::{
    Config, ContextId, Ed25519Verifier, Event, Hash, MessageError, Node, Phase, RestoreError,
};
use ed25519_dalek::SigningKey;
use support::{KV, Net, secret};

/// A genesis of `context` by node `index`'s key, for the kv app, that names
/// `runtime_version`.
fn genesis(index: usize, context: ContextId, runtime_version: u32) -> (SignedTx, Vec<u8>) {
    let app = ctx_core::runtime::wasm_from_source(KV.as_bytes()).unwrap();
    let signer = SigningKey::from_bytes(&secret(index));
    let body = TxBody {
        version: TX_FORMAT_VERSION,
        context,
        author: Node::member_id_of(&secret(index)),
        height: 0,
        parents: Vec::new(),
        kind: TxKind::Create {
            app_hash: Hash(*blake3::hash(&app).as_bytes()),
            app_bytes: app.len() as u64,
            runtime_version,
        },
    };
    (Tx::sign(body, &signer).signed().clone(), app)
}

#[test]
fn a_created_context_names_this_builds_runtime_version() {
    let mut net = Net::new(1);
    let context = net.nodes[0].create_context(net.now, KV.as_bytes()).unwrap();
    let replica = net.nodes[0].replica(&context).unwrap();
    assert!(matches!(
        replica.genesis().kind(),
        TxKind::Create { runtime_version, .. } if *runtime_version == RUNTIME_VERSION
    ));
}

#[test]
fn restore_refuses_a_context_of_another_runtime_version() {
    let context = ContextId([5; 32]);
    let (genesis, app) = genesis(0, context, RUNTIME_VERSION + 1);
    let records = vec![Record::Opened {
        context,
        genesis,
        app,
    }];
    let restored = Node::restore(
        Config::default(),
        secret(0),
        [0; 32],
        Arc::new(Ed25519Verifier),
        records,
    );
    let Err(error) = restored else {
        panic!("a context of another runtime version was restored");
    };
    assert!(matches!(
        &error,
        RestoreError::Replica(c, ReplicaError::RuntimeVersion { context: v, supported })
            if *c == context && *v == RUNTIME_VERSION + 1 && *supported == RUNTIME_VERSION
    ));
    let message = error.to_string();
    assert!(
        message.contains(&format!("runs runtime version {}", RUNTIME_VERSION + 1)),
        "{message}"
    );
}

/// Node 0 creates a context and invites node 1, which asks node 0 to catch
/// up; the answer node 1 gets is forged: node 0 accepts with `genesis`.
fn forged_catchup_answer(
    genesis: impl FnOnce(ContextId) -> SignedTx,
) -> (Net, ContextId, Result<(), MessageError>) {
    let mut net = Net::new(2);
    let context = net.nodes[0].create_context(net.now, KV.as_bytes()).unwrap();
    net.nodes[0].invite(net.now, context, net.ids[1]).unwrap();
    net.run();
    net.nodes[1].join(net.now, context, net.ids[0]).unwrap();
    net.collect();
    let position = net
        .inflight
        .iter()
        .position(|m| m.from == 1 && m.to == 0)
        .expect("a catchup request");
    let message = net.inflight.remove(position).unwrap();
    let Body::CatchupRequest { request } = Envelope::decode(&message.bytes).unwrap().body else {
        panic!("not a catchup request");
    };
    let accepted = Envelope::new(
        context,
        Body::CatchupAccepted {
            request,
            genesis: genesis(context),
            members: vec![net.ids[0]],
            offer: None,
        },
    );
    assert_eq!(net.nodes[1].phase(&context), Some(Phase::Joining));
    let answer = net.nodes[1].handle_message(net.now, net.ids[0], &accepted.encode());
    net.collect();
    (net, context, answer)
}

#[test]
fn a_joiner_abandons_a_context_of_another_runtime_version() {
    // What a node of another build would hold.
    let (mut net, context, answer) =
        forged_catchup_answer(|context| genesis(0, context, RUNTIME_VERSION + 7).0);
    answer.unwrap();
    assert_eq!(net.nodes[1].phase(&context), None, "the join is given up");
    assert!(net.events[1].iter().any(|event| matches!(
        event,
        Event::JoinAbandoned { context: c, reason }
            if *c == context && reason.contains(&format!("runtime version {}", RUNTIME_VERSION + 7))
    )));
    assert_eq!(
        net.disks[1].last(),
        Some(&Record::Deleted {
            context,
            last_own: None
        })
    );
    // Nothing is asked again.
    net.advance(60_000);
    assert!(net.nodes[1].context_ids().next().is_none());
}

#[test]
fn a_catchup_accepted_with_a_genesis_that_is_not_a_create_is_refused_as_such() {
    let mut not_create = None;
    let (net, context, answer) = forged_catchup_answer(|context| {
        let (create, _) = genesis(0, context, RUNTIME_VERSION);
        let body = TxBody {
            version: TX_FORMAT_VERSION,
            context,
            author: Node::member_id_of(&secret(0)),
            height: 1,
            parents: vec![Parent {
                id: create.body.id(),
                height: 0,
            }],
            kind: TxKind::Leave,
        };
        let signed = Tx::sign(body, &SigningKey::from_bytes(&secret(0)))
            .signed()
            .clone();
        not_create = Some(signed.body.id());
        signed
    });
    assert_eq!(answer, Err(MessageError::NotGenesis(not_create.unwrap())));
    assert_eq!(
        net.nodes[1].phase(&context),
        Some(Phase::Joining),
        "it asks again later"
    );
}
