//! Every bound of the node, named. The engine's own bounds (message size,
//! app size, batches, contexts) live in `ctx_core::limits`; these are the
//! driver's: frames, connections, queues, timers and the admin API.

use std::time::Duration;

/// The native stack of every thread of the node (the engine's and tokio's
/// workers): at least what an app's call needs, with room to spare.
pub const THREAD_STACK_BYTES: usize = 4 * 1024 * 1024;
const _: () = assert!(THREAD_STACK_BYTES >= ctx_core::runtime::CALL_NATIVE_STACK_BYTES_MIN);

/// The largest frame on the peer port: one Noise message (the protocol's
/// maximum). A length prefix above it closes the connection before anything
/// is allocated.
pub const FRAME_BYTES_MAX: usize = 65_535;

/// Noise's authentication tag on every transport message.
pub const NOISE_TAG_BYTES: usize = 16;

/// Plaintext bytes carried by one frame: a frame holds one Noise message,
/// whose plaintext is a one-byte "final chunk" flag and a chunk of a peer
/// message.
pub const CHUNK_BYTES_MAX: usize = FRAME_BYTES_MAX - NOISE_TAG_BYTES - 1;

/// The largest peer message once reassembled: an engine message (bounded by
/// the engine) plus the peer header.
pub const PEER_MESSAGE_BYTES_MAX: usize = ctx_core::limits::MESSAGE_BYTES_MAX + 1024;

/// The largest identity proof (member id, signature, hello), read before
/// the peer is authenticated: one frame's plaintext.
pub const PROOF_BYTES_MAX: usize = CHUNK_BYTES_MAX;

/// The whole handshake (Noise XX plus the identity proof) must finish within
/// this, or the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Inbound connections on the peer port at once, handshaking or
/// established; one above it is closed at once.
pub const CONNECTIONS_INBOUND_MAX: usize = 192;

/// Outbound connections (dials) at once. A budget of their own, so that
/// strangers holding inbound slots cannot stop this node from dialling
/// its peers.
pub const CONNECTIONS_OUTBOUND_MAX: usize = 64;

/// Members in the address book, and entries in one address-book message.
pub const PEERS_MAX: usize = 4_096;

/// Messages waiting for one peer while it has no connection (the oldest is
/// dropped past it: the engine's sync repairs any loss).
pub const PEER_QUEUE_MAX: usize = 1_024;

/// Messages queued on one connection's writer (past it, messages for that
/// peer are dropped until it drains; the engine's sync repairs the loss).
pub const CONNECTION_QUEUE_MAX: usize = 4_096;

/// Bytes queued on one connection's writer, the same way.
pub const CONNECTION_QUEUE_BYTES_MAX: usize = 32 << 20;

/// Bytes of messages waiting for one peer while it has no connection (the
/// oldest are dropped past it).
pub const PEER_QUEUE_BYTES_MAX: usize = 16 << 20;

/// Bytes of peer messages read but not yet handled by the engine task, all
/// connections together; past it, readers wait (TCP back-pressure).
pub const INBOX_BYTES_MAX: usize = 64 << 20;

// Every byte budget holds at least one message of the largest size.
const _: () = assert!(CONNECTION_QUEUE_BYTES_MAX >= PEER_MESSAGE_BYTES_MAX);
const _: () = assert!(PEER_QUEUE_BYTES_MAX >= PEER_MESSAGE_BYTES_MAX);
const _: () = assert!(INBOX_BYTES_MAX >= PEER_MESSAGE_BYTES_MAX);
const _: () = assert!(INBOX_BYTES_MAX <= u32::MAX as usize);

/// The first wait before dialling a peer again after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);

/// The longest wait between dials to an unreachable peer.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How long a dial may take to connect.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection with nothing received for this long is probed with TCP
/// keepalives (every `PEER_PROBE_INTERVAL`), so a peer that vanished without
/// closing (power loss, a cut cable) is noticed even on an idle connection.
pub const PEER_IDLE_BEFORE_PROBE: Duration = Duration::from_secs(10);

/// The interval between keepalive probes of a silent connection.
pub const PEER_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Unanswered keepalive probes before the connection is closed.
pub const PEER_PROBES_MAX: u32 = 3;

/// Sent data left unacknowledged this long closes the connection (Linux's
/// `TCP_USER_TIMEOUT`; without it the kernel retries for about 15 minutes).
/// The peer is then redialled with backoff, and the engine's sync repairs
/// whatever the dead connection swallowed.
pub const PEER_UNACKED_MAX: Duration = Duration::from_secs(30);

/// Two connections with one peer made within this of each other are a
/// simultaneous dial, settled by member id; a connection made later
/// replaces the older one.
pub const SIMULTANEOUS_DIAL_WINDOW: Duration = Duration::from_secs(30);

// Both sides must see a simultaneous dial as one: the window is well above
// the longest a dial can take to be announced (connect, then handshake).
const _: () = assert!(
    SIMULTANEOUS_DIAL_WINDOW.as_secs()
        >= 2 * (DIAL_TIMEOUT.as_secs() + HANDSHAKE_TIMEOUT.as_secs())
);

/// A connection that ends sooner than this after it was made counts as a
/// failed dial (the backoff grows); one that lasted resets the backoff.
pub const CONNECTION_STABLE_AFTER: Duration = Duration::from_secs(5);

/// Joins waiting to learn who answers at their address.
pub const JOINS_MAX: usize = 64;

/// How long `context join --via ADDR` waits to learn who is at ADDR.
pub const JOIN_RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a join waits to dial its address again after the address
/// answered and closed the handshake (a flooded or busy peer); it tries
/// until `JOIN_RESOLVE_TIMEOUT`.
pub const JOIN_REDIAL_AFTER: Duration = Duration::from_millis(250);

/// How long `context join` waits for the member asked to accept or refuse
/// before it answers "asked" (the engine keeps asking).
pub const JOIN_ANSWER_WAIT: Duration = Duration::from_secs(5);

/// How often every connected member is sent the addresses of the members
/// of the contexts it shares with this node.
pub const ADDRESS_GOSSIP_INTERVAL: Duration = Duration::from_secs(10);

/// How long a stranger's connection is kept: one of a member that no
/// context this node holds, invites or is joining names. Long enough to
/// answer it (a join this node refuses) or for a transaction naming it (its
/// invite, on its way from another member) to arrive.
pub const STRANGER_GRACE: Duration = Duration::from_secs(5);

/// How many strangers may be connected at once; one more is closed as soon
/// as its handshake is done, so strangers never hold the inbound slots.
pub const STRANGERS_MAX: usize = 16;

/// How often the engine task closes strangers past their grace, and
/// writes the counts of held-back log lines.
pub const STRANGER_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The disk space kept free, by default, for the records on their way to
/// the store when the disk fills up (`space`; `--disk-reserve-mb`). It must
/// hold one batch of them: at most `INBOX_BYTES_MAX` of peer messages, and
/// the admin bodies taken with them.
pub const DISK_RESERVE_DEFAULT_BYTES: u64 = 64 << 20;

/// Inputs queued for the engine task, in each of its two queues: one for
/// the network (peer messages, connection events), one for admin requests.
/// A full queue makes its senders wait (for readers, TCP back-pressure).
pub const INBOX_MAX: usize = 4_096;

/// Inputs the engine task takes in one batch before it commits and sends.
pub const INPUT_BATCH_MAX: usize = 512;

/// The largest admin request body: a hex-encoded app of the largest size
/// plus room for the JSON around it.
pub const ADMIN_BODY_BYTES_MAX: usize = 2 * ctx_core::limits::APP_BYTES_MAX + 64 * 1024;

/// Admin connections open at once; one more is closed at once.
pub const ADMIN_CONNECTIONS_MAX: usize = 256;

/// How long an admin connection may take to send a whole request head; an
/// idle keep-alive connection is closed after it too.
pub const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request head (request line and header fields) the admin
/// API accepts; past it the answer is 431.
pub const ADMIN_HEADER_BYTES_MAX: usize = 16 * 1024;

/// Most header fields in one admin request; past it the answer is 431.
pub const ADMIN_HEADERS_MAX: usize = 64;

/// How long an admin request's body may take to arrive in full once its
/// head is read; past it the answer is 408 and the connection is closed.
/// (The largest body, a hex-encoded app, is sent in well under a second on
/// loopback, and in 15 s at 560 KB/s.)
pub const ADMIN_BODY_TIMEOUT: Duration = Duration::from_secs(15);

/// How long admin requests in flight may run on once the node stops.
pub const ADMIN_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Events streams open at once (`GET /v1/contexts/{ctx}/events`).
pub const EVENT_STREAMS_MAX: usize = 64;

/// Stable transactions one events page carries.
pub const EVENTS_PAGE_MAX: usize = 256;

/// How often an events stream looks for newly stable transactions.
pub const EVENTS_POLL: Duration = Duration::from_millis(200);

/// The longest an admin `wait` may block.
pub const WAIT_TIMEOUT_MAX: Duration = Duration::from_secs(120);

/// Admin `wait` requests outstanding at once.
pub const WAITERS_MAX: usize = 100_000;

/// Arguments of one admin `call` or `view`.
pub const CALL_ARGS_MAX: usize = 1_024;

/// How long a client subcommand waits for the node's answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
