//! The peer port's tasks: the listener, dials, and one reader and one writer
//! per connection. They only move bytes: each established connection is
//! announced to the engine task (`NetEvent::Up`) with its writer's queue
//! (`Outbox`) and its `closer`, every peer message it reads goes to the
//! engine task (`NetEvent::Peer`) with its share of the inbox's byte
//! budget, and its end is announced (`NetEvent::Down`).
//!
//! Invariants: a connection is announced only after the Noise handshake and
//! the identity proof succeeded; a bad frame, a failed decryption or an
//! undecodable peer message closes that connection only; at most
//! `CONNECTIONS_INBOUND_MAX` inbound and `CONNECTIONS_OUTBOUND_MAX` outbound
//! connections exist at once; a connection whose `ConnUp::closer` is
//! dropped (the engine task did not keep it) is closed, both ways. What a
//! stranger can cause is logged at a bounded rate (`logs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use ctx_core::MemberId;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tracing::{debug, warn};

use crate::limits::{
    CONNECTION_QUEUE_BYTES_MAX, CONNECTION_QUEUE_MAX, CONNECTIONS_INBOUND_MAX,
    CONNECTIONS_OUTBOUND_MAX, DIAL_TIMEOUT, HANDSHAKE_TIMEOUT, INBOX_BYTES_MAX,
    PEER_IDLE_BEFORE_PROBE, PEER_PROBE_INTERVAL, PEER_PROBES_MAX, PEER_UNACKED_MAX,
};
use crate::peer::{Hello, PeerMessage};
use crate::secure::{Session, handshake};

/// A connection's number, unique within the process.
pub type ConnId = u64;

/// A connection that finished its handshake.
pub struct ConnUp {
    pub conn: ConnId,
    pub member: MemberId,
    /// Whether this node dialled it.
    pub initiated: bool,
    /// Where the member can be dialled.
    pub dial_addr: SocketAddr,
    /// The address this node dialled, for a dial.
    pub dialed: Option<SocketAddr>,
    /// The writer's queue: encoded peer messages.
    pub outbox: Outbox,
    /// Dropping it closes the connection (reader and writer).
    pub closer: oneshot::Sender<()>,
}

/// One connection's writer queue, bounded in messages
/// (`CONNECTION_QUEUE_MAX`) and in bytes (`CONNECTION_QUEUE_BYTES_MAX`).
pub struct Outbox {
    queue: mpsc::Sender<(Vec<u8>, OwnedSemaphorePermit)>,
    bytes: Arc<Semaphore>,
}

impl Outbox {
    /// Queues a message without waiting; it comes back when the queue is
    /// full (in messages or bytes) or the connection is gone.
    pub fn try_send(&self, message: Vec<u8>) -> Result<(), mpsc::error::TrySendError<Vec<u8>>> {
        use mpsc::error::TrySendError;
        let Ok(budget) = Arc::clone(&self.bytes).try_acquire_many_owned(budget_of(&message)) else {
            return Err(TrySendError::Full(message));
        };
        self.queue
            .try_send((message, budget))
            .map_err(|error| match error {
                TrySendError::Full((message, _)) => TrySendError::Full(message),
                TrySendError::Closed((message, _)) => TrySendError::Closed(message),
            })
    }
}

/// The permits a message takes from a byte budget (at least one, so that
/// empty messages are counted too).
fn budget_of(message: &[u8]) -> u32 {
    u32::try_from(message.len().max(1)).unwrap_or(u32::MAX)
}

/// Every outbound connection slot is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many outbound connections (at most {CONNECTIONS_OUTBOUND_MAX}); try again")]
pub struct DialsBusy;

/// What the network tasks tell the engine task.
pub enum NetEvent {
    Up(ConnUp),
    Peer {
        from: MemberId,
        message: PeerMessage,
        /// The message's share of `INBOX_BYTES_MAX`, released when the
        /// engine task drops it.
        budget: OwnedSemaphorePermit,
    },
    Down {
        conn: ConnId,
        member: MemberId,
    },
    DialFailed {
        addr: SocketAddr,
        member: Option<MemberId>,
        error: String,
        /// Whether the address answered and the handshake then failed (a
        /// busy or flooded peer closing a new connection): worth another
        /// try, unlike an address where nothing listens.
        transient: bool,
    },
}

/// Socket options of every peer connection: no Nagle delay (messages are
/// framed already), and the kernel closes a connection whose peer vanished
/// (see `PEER_IDLE_BEFORE_PROBE` and `PEER_UNACKED_MAX`). Failing to set an
/// option is logged, not fatal: the connection still works.
fn tune(stream: &TcpStream) {
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new().with_time(PEER_IDLE_BEFORE_PROBE);
    #[cfg(target_os = "linux")]
    let keepalive = keepalive
        .with_interval(PEER_PROBE_INTERVAL)
        .with_retries(PEER_PROBES_MAX);
    #[cfg(not(target_os = "linux"))]
    let _ = (PEER_PROBE_INTERVAL, PEER_PROBES_MAX);
    let result = socket
        .set_tcp_nodelay(true)
        .and_then(|()| socket.set_tcp_keepalive(&keepalive));
    #[cfg(target_os = "linux")]
    let result = result.and_then(|()| socket.set_tcp_user_timeout(Some(PEER_UNACKED_MAX)));
    #[cfg(not(target_os = "linux"))]
    let _ = PEER_UNACKED_MAX;
    if let Err(e) = result {
        warn!(error = %e, "cannot set peer socket options");
    }
}

/// What every network task shares.
pub struct Net {
    secret: [u8; 32],
    hello: Vec<u8>,
    inbound: Arc<Semaphore>,
    outbound: Arc<Semaphore>,
    inbox_bytes: Arc<Semaphore>,
    next_conn: AtomicU64,
    events: mpsc::Sender<NetEvent>,
}

impl Net {
    pub fn new(secret: [u8; 32], hello: Hello, events: mpsc::Sender<NetEvent>) -> Arc<Net> {
        Arc::new(Net {
            secret,
            hello: hello.encode(),
            inbound: Arc::new(Semaphore::new(CONNECTIONS_INBOUND_MAX)),
            outbound: Arc::new(Semaphore::new(CONNECTIONS_OUTBOUND_MAX)),
            inbox_bytes: Arc::new(Semaphore::new(INBOX_BYTES_MAX)),
            next_conn: AtomicU64::new(1),
            events,
        })
    }

    /// Accepts peers until the listener fails for good.
    pub async fn listen(self: Arc<Net>, listener: TcpListener) {
        loop {
            let (stream, source) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait, then go on.
                    crate::limited!(warn, error = %e, "accepting a peer connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&self.inbound).try_acquire_owned() else {
                crate::limited!(warn, %source, max = CONNECTIONS_INBOUND_MAX, "too many inbound connections; closing a new one");
                continue;
            };
            let net = Arc::clone(&self);
            tokio::spawn(async move { net.accept(stream, source, permit).await });
        }
    }

    async fn accept(
        self: Arc<Net>,
        mut stream: TcpStream,
        source: SocketAddr,
        permit: OwnedSemaphorePermit,
    ) {
        let session = match self.shake(&mut stream, false, None).await {
            Ok(session) => session,
            Err(error) => {
                crate::limited!(warn, %source, %error, "peer handshake failed; connection closed");
                return;
            }
        };
        let hello = match Hello::decode(&session.hello) {
            Ok(hello) => hello,
            Err(e) => {
                crate::limited!(warn, %source, error = %e, "bad hello; connection closed");
                return;
            }
        };
        let dial_addr = hello.dial_address(source.ip());
        self.run_connection(stream, session, false, dial_addr, None, permit)
            .await;
    }

    /// Dials `addr`; `expected` is the member that should answer there (none
    /// when resolving an address for a join). Refused at once, without a
    /// dial, when every outbound slot is taken: that says nothing about the
    /// peer, so it is not reported as a failed dial.
    pub fn dial(
        self: &Arc<Net>,
        addr: SocketAddr,
        expected: Option<MemberId>,
    ) -> Result<(), DialsBusy> {
        let permit = Arc::clone(&self.outbound)
            .try_acquire_owned()
            .map_err(|_| DialsBusy)?;
        let net = Arc::clone(self);
        tokio::spawn(async move {
            match net.try_dial(addr, expected).await {
                Ok((stream, session)) => {
                    net.run_connection(stream, session, true, addr, Some(addr), permit)
                        .await;
                }
                Err((error, transient)) => {
                    debug!(%addr, %error, transient, "dial failed");
                    let failed = NetEvent::DialFailed {
                        addr,
                        member: expected,
                        error,
                        transient,
                    };
                    let _ = net.events.send(failed).await;
                }
            }
        });
        Ok(())
    }

    /// Connects to `addr` and completes the handshake. A failure says
    /// whether it was the handshake's, after the address answered.
    async fn try_dial(
        &self,
        addr: SocketAddr,
        expected: Option<MemberId>,
    ) -> Result<(TcpStream, Session), (String, bool)> {
        let mut stream = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| ("connect timed out".to_string(), false))?
            .map_err(|e| (e.to_string(), false))?;
        let session = self
            .shake(&mut stream, true, expected)
            .await
            .map_err(|e| (e, true))?;
        Ok((stream, session))
    }

    /// Sets the socket's options, then runs the handshake within
    /// `HANDSHAKE_TIMEOUT`.
    async fn shake(
        &self,
        stream: &mut TcpStream,
        initiator: bool,
        expected: Option<MemberId>,
    ) -> Result<Session, String> {
        tune(stream);
        let hello = self.hello.clone();
        tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            handshake(stream, &self.secret, initiator, hello, expected),
        )
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake: {e}"))
    }

    async fn run_connection(
        self: Arc<Net>,
        stream: TcpStream,
        session: Session,
        initiated: bool,
        dial_addr: SocketAddr,
        dialed: Option<SocketAddr>,
        permit: OwnedSemaphorePermit,
    ) {
        let Session {
            peer,
            mut sender,
            mut receiver,
            ..
        } = session;
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        // The engine task says which connections it keeps, and logs those.
        debug!(%peer, %dial_addr, initiated, conn, "handshake done");
        let (read, write) = stream.into_split();
        let (queue_tx, mut queue) = mpsc::channel(CONNECTION_QUEUE_MAX);
        let outbox = Outbox {
            queue: queue_tx,
            bytes: Arc::new(Semaphore::new(CONNECTION_QUEUE_BYTES_MAX)),
        };
        let (closer, mut closed) = oneshot::channel::<()>();
        let up = ConnUp {
            conn,
            member: peer,
            initiated,
            dial_addr,
            dialed,
            outbox,
            closer,
        };
        if self.events.send(NetEvent::Up(up)).await.is_err() {
            return;
        }
        tokio::spawn(async move {
            let mut write = BufWriter::new(write);
            while let Some((message, _budget)) = queue.recv().await {
                if let Err(e) = sender.send(&mut write, &message).await {
                    debug!(peer = %peer.short(), conn, error = %e, "peer write failed");
                    break;
                }
            }
            let _ = write.shutdown().await;
        });
        let mut read = tokio::io::BufReader::new(read);
        loop {
            // A half-read message is abandoned with the connection.
            let received = tokio::select! {
                _ = &mut closed => {
                    debug!(peer = %peer.short(), conn, "connection not kept; closed");
                    break;
                }
                received = receiver.recv(&mut read) => received,
            };
            let bytes = match received {
                Ok(bytes) => bytes,
                Err(e) => {
                    debug!(peer = %peer.short(), conn, error = %e, "peer connection ended");
                    break;
                }
            };
            let Ok(budget) = Arc::clone(&self.inbox_bytes)
                .acquire_many_owned(budget_of(&bytes))
                .await
            else {
                break; // never closed
            };
            let message = match PeerMessage::decode(&bytes) {
                Ok(message) => message,
                Err(e) => {
                    crate::limited!(warn, %peer, conn, error = %e, "bad peer message; connection closed");
                    break;
                }
            };
            let event = NetEvent::Peer {
                from: peer,
                message,
                budget,
            };
            if self.events.send(event).await.is_err() {
                break;
            }
        }
        debug!(%peer, conn, "connection ended");
        let _ = self
            .events
            .send(NetEvent::Down { conn, member: peer })
            .await;
        drop(permit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outbox_is_bounded_in_bytes_and_messages() {
        let (queue, mut writer) = mpsc::channel(3);
        let outbox = Outbox {
            queue,
            bytes: Arc::new(Semaphore::new(10)),
        };
        assert!(outbox.try_send(vec![1; 6]).is_ok());
        let full = outbox.try_send(vec![2; 6]);
        assert!(matches!(full, Err(mpsc::error::TrySendError::Full(m)) if m == vec![2; 6]));
        // Once the writer has sent (and dropped) the first, there is room.
        let (sent, budget) = writer.recv().await.expect("queued");
        assert_eq!(sent, vec![1; 6]);
        drop(budget);
        assert!(outbox.try_send(vec![2; 6]).is_ok());
        // Small messages hit the message bound instead.
        assert!(outbox.try_send(vec![]).is_ok());
        assert!(outbox.try_send(vec![]).is_ok());
        assert!(matches!(
            outbox.try_send(vec![]),
            Err(mpsc::error::TrySendError::Full(_))
        ));
        drop(writer);
        let (queue, _) = mpsc::channel(1);
        let gone = Outbox {
            queue,
            bytes: Arc::new(Semaphore::new(10)),
        };
        assert!(matches!(
            gone.try_send(vec![3]),
            Err(mpsc::error::TrySendError::Closed(_))
        ));
    }

    #[tokio::test]
    async fn peer_sockets_notice_a_vanished_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stream = TcpStream::connect(addr).await.expect("connect");
        tune(&stream);
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.tcp_nodelay().expect("nodelay"));
        assert!(socket.keepalive().expect("keepalive"));
        #[cfg(target_os = "linux")]
        {
            assert_eq!(
                socket.tcp_keepalive_time().expect("idle"),
                PEER_IDLE_BEFORE_PROBE
            );
            assert_eq!(
                socket.tcp_keepalive_interval().expect("interval"),
                PEER_PROBE_INTERVAL
            );
            assert_eq!(
                socket.tcp_keepalive_retries().expect("retries"),
                PEER_PROBES_MAX
            );
            assert_eq!(
                socket.tcp_user_timeout().expect("user timeout"),
                Some(PEER_UNACKED_MAX)
            );
        }
    }
}
