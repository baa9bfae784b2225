//! Assembles a running node: loads the identity, opens the store, binds the
//! peer and admin ports, starts the network tasks, the admin server and the
//! engine task, and stops them in order on shutdown (the engine commits its
//! last batch before the process exits).

use std::net::SocketAddr;
use std::path::PathBuf;

use ctx_core::Config;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::driver::{Driver, DriverError, Wiring};
use crate::identity::{
    ADMIN_ADDR_FILE, Identity, IdentityError, LISTEN_ADDR_FILE, random_bytes, write_line,
};
use crate::limits::INBOX_MAX;
use crate::net::Net;
use crate::peer::Hello;
use crate::space::{Space, SpaceState};
use crate::store::{Store, StoreError};

/// Everything `ctx-node run` needs.
#[derive(Clone, Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub advertise: Option<String>,
    pub engine: Config,
    /// The disk space kept free for the records on their way to the store
    /// (`space`).
    pub disk_reserve_bytes: u64,
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Driver(#[from] DriverError),
}

/// Runs a node until `shutdown` turns true.
pub async fn run(settings: Settings, shutdown: watch::Receiver<bool>) -> Result<(), ServerError> {
    let dir = &settings.data_dir;
    let identity = Identity::load(dir)?;
    let (store, loaded) = Store::open(dir, &identity)?;
    let space = Space::open(dir, settings.disk_reserve_bytes);
    if let SpaceState::Full { available, .. } = space.state() {
        tracing::error!(
            available,
            reserve = settings.disk_reserve_bytes,
            dir = %dir.display(),
            "disk full at start: this node stores nothing until space returns; writes are \
             refused (507), reads, status and answers to the other members go on"
        );
    }
    // The listener and the address it is bound to (the port, for port 0).
    let bind = |addr: SocketAddr, what: &'static str| async move {
        let fail = |source| ServerError::Bind { addr, what, source };
        let listener = TcpListener::bind(addr).await.map_err(fail)?;
        let bound = listener.local_addr().map_err(fail)?;
        Ok::<_, ServerError>((listener, bound))
    };
    let (peer_listener, listen) = bind(settings.listen, "peer port").await?;
    let (admin_listener, admin) = bind(settings.admin, "admin API").await?;

    let (net_tx, net_rx) = mpsc::channel(INBOX_MAX);
    let (admin_tx, admin_rx) = mpsc::channel(INBOX_MAX);
    let hello = Hello {
        listen_port: listen.port(),
        advertise: settings.advertise.clone(),
    };
    let net = Net::new(*identity.secret(), hello, net_tx);
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
    let driver = Driver::new(
        &identity,
        settings.engine.clone(),
        random_bytes()?,
        store,
        space,
        loaded,
        Wiring {
            net: std::sync::Arc::clone(&net),
            net_events: net_rx,
            admin: admin_rx,
            metrics: std::sync::Arc::clone(&metrics),
        },
    )?;

    let listener_task = tokio::spawn(net.listen(peer_listener));
    // The admin server stops when the engine task has: on shutdown, and
    // when it fails (the process then exits with its error).
    let (stop_admin, mut admin_stopped) = watch::channel(false);
    let admin_task = tokio::spawn(crate::http::serve(
        admin_listener,
        crate::admin::router(admin_tx, metrics),
        async move {
            let _ = admin_stopped.wait_for(|stop| *stop).await;
        },
    ));
    // Conveniences for scripts (port 0): a full disk does not stop a node
    // for them.
    for (file, addr) in [(LISTEN_ADDR_FILE, listen), (ADMIN_ADDR_FILE, admin)] {
        if let Err(e) = write_line(dir, file, &addr.to_string()) {
            tracing::warn!(error = %e, "cannot write {file}");
        }
    }
    info!(member = %identity.member(), %listen, %admin, "node running");

    let result = driver.run(shutdown).await;
    let _ = stop_admin.send(true);
    listener_task.abort();
    // Admin requests in flight get "shutting down"; the server gives them
    // a moment (ADMIN_SHUTDOWN_GRACE) and ends.
    let _ = admin_task.await;
    result?;
    info!("node stopped");
    Ok(())
}
