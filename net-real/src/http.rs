//! The admin API's HTTP server: accepting connections and holding each to
//! its bounds. The routes and their answers are `admin`'s.
//!
//! Owns: the admin connections. Invariants: at most `ADMIN_CONNECTIONS_MAX`
//! are open (one more is closed at once); a connection that has not sent a
//! whole request head within `ADMIN_HEADER_TIMEOUT` (also an idle
//! keep-alive one) is closed; a head over `ADMIN_HEADER_BYTES_MAX` or with
//! more than `ADMIN_HEADERS_MAX` fields is answered 431 with a JSON reason
//! before it reaches a route; the body's own bounds (its size, and
//! `ADMIN_BODY_TIMEOUT` to arrive) are checked where it is read
//! (`admin::body_json`).
//!
//! hyper parses the head with bounds of its own, set well above ours
//! (`HYPER_HEAD_BYTES_MAX`, `HYPER_HEADERS_MAX`), so every request it can
//! parse reaches our checks and gets a JSON answer. Bytes it cannot parse
//! as an HTTP/1 request at all (a broken request line, a header name with
//! a space, a head past its bounds) are answered by hyper itself with the
//! status alone (400, 414 or 431, no body) and the connection closed.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::limits::{
    ADMIN_CONNECTIONS_MAX, ADMIN_HEADER_BYTES_MAX, ADMIN_HEADER_TIMEOUT, ADMIN_HEADERS_MAX,
    ADMIN_SHUTDOWN_GRACE,
};

/// hyper's own bound on a request head, above ours so that ours answers.
const HYPER_HEAD_BYTES_MAX: usize = 4 * ADMIN_HEADER_BYTES_MAX;
/// hyper's own bound on the fields of a head, above ours likewise.
const HYPER_HEADERS_MAX: usize = 2 * ADMIN_HEADERS_MAX;

/// Serves `router` on `listener` until `shutdown` resolves, then lets the
/// requests in flight finish (for at most `ADMIN_SHUTDOWN_GRACE`).
pub async fn serve(listener: TcpListener, router: Router, shutdown: impl Future<Output = ()>) {
    let router = router.layer(middleware::from_fn(head_within_bounds));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_TIMEOUT)
        .max_buf_size(HYPER_HEAD_BYTES_MAX)
        .max_headers(HYPER_HEADERS_MAX);
    let slots = Arc::new(Semaphore::new(ADMIN_CONNECTIONS_MAX));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, from) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, or a connection reset before it
                    // was taken: neither ends the server.
                    debug!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            warn!(%from, limit = ADMIN_CONNECTIONS_MAX, "admin connection refused: too many open");
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%from, %error, "admin connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(ADMIN_SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("admin requests still running at shutdown were cut");
    }
}

/// Answers 431, with a JSON reason, a request whose head is over our
/// bounds; passes the others on.
async fn head_within_bounds(request: Request<Body>, next: Next) -> Response {
    let fields = request.headers().len();
    // As sent: "name: value\r\n" per field, and the request line.
    let bytes = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + request.uri().to_string().len()
        + request.method().as_str().len()
        + 12;
    let reason = if fields > ADMIN_HEADERS_MAX {
        format!("{fields} header fields; at most {ADMIN_HEADERS_MAX} are accepted")
    } else if bytes > ADMIN_HEADER_BYTES_MAX {
        format!(
            "request head of about {bytes} bytes; at most {ADMIN_HEADER_BYTES_MAX} are accepted"
        )
    } else {
        return next.run(request).await;
    };
    crate::admin::error_response(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, reason)
}
