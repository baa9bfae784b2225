//! The admin API: HTTP with JSON bodies, bound to loopback by default.
//!
//! ```text
//! GET  /metrics                         -> the node's metrics (Prometheus text, `metrics`)
//! GET  /v1/id                          -> {"member": hex}
//! GET  /v1/status                      -> {"member", "peers": [..], "strangers": N,
//!                                          "contexts": {id: {..}}}
//! GET  /v1/contexts/{ctx}              -> the same, with that context only
//! POST /v1/contexts          {"app": hex of a .wasm or .wat file}  -> {"context": hex}
//!                            (or the module itself, `Content-Type: application/wasm`)
//!                            (400 if its `ctx_abi` section is malformed)
//! POST /v1/contexts/{ctx}/invite {"member": hex}                   -> {"tx": hex}
//! POST /v1/contexts/{ctx}/join   {"via": "host:port"}
//!                          -> {"via_member": hex, "state": "joined"|"catching_up"|"asked"}
//!                             (404/409 at once when the member there refuses)
//! POST /v1/contexts/{ctx}/leave  {}                                -> {}
//! GET  /v1/contexts/{ctx}/abi                  -> the app's ABI (404 if it has none)
//! POST /v1/contexts/{ctx}/call   {"method", "args": [..]} or {"method", "input": hex}
//!              -> {"tx": hex, "outcome": {"ok": true} | {"failed": {"kind", "message"}}
//!                                        | {"rejected": {"reason"}}}
//! POST /v1/contexts/{ctx}/view   {"method", "args"|"input"} -> {"ok": true, "return": hex}
//!                                              (and "value", decoded by the ABI)
//!                                                             | {"ok": false, "error": ..}
//! POST /v1/contexts/{ctx}/wait   {"tx": hex, "timeout_ms": N} -> {"applied": bool}
//! GET  /v1/contexts/{ctx}/events?from=N (or Last-Event-ID)
//!                          -> server-sent events: the stable order, one `applied`
//!                             event per transaction, its position as its id
//! ```
//!
//! Arguments: for an app without an ABI, `args` is a list of words in the
//! command-line syntax (`crate::args`). For an app whose module carries an
//! ABI (`ctx_abi`, as every `ctx-sdk` app does), the method must be one it
//! declares, of the right kind (a view is read with `view`, a call made with
//! `call`: neither becomes a failed transaction), and `args` is converted by
//! its parameter types: a list of words as on the command line
//! (`transfer alice bob 10` is two strings and a u64), a JSON list in order,
//! or a JSON object by parameter name; a wrong count, name or type is a 400
//! that says which. `input` (hex) is passed as it is, for either.
//!
//! Errors are `{"error": "..."}` with a 4xx status for a bad request (400
//! malformed, 404 unknown context or endpoint, 405 wrong method, 409
//! conflicting with the node's state, 408 a body not received in full
//! within `ADMIN_BODY_TIMEOUT`, 413 too large, 431 a head over its bounds
//! (`http`), 422 a call the engine refused), 502 when a join's address does
//! not answer, 507 a write while the disk is full (`space`), 503 while shutting
//! down or when a bound is reached (too many waits or joins at once). Owns: the translation between HTTP and `AdminRequest`; it decides
//! nothing itself. Bodies are read with a limit (`ADMIN_BODY_BYTES_MAX`)
//! before they are parsed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ctx_abi::{Abi, Kind, Method};
use ctx_core::{CommandError, ContextId, MemberId, Outcome, TxId};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::args::encode_cli_args;
use crate::driver::{AdminRequest, RequestError, StatusReport, TxState};
use crate::driver::{StableEntry, StablePage};
use crate::limits::{
    ADMIN_BODY_BYTES_MAX, ADMIN_BODY_TIMEOUT, EVENT_STREAMS_MAX, EVENTS_PAGE_MAX, EVENTS_POLL,
    WAIT_TIMEOUT_MAX,
};
use crate::metrics::Metrics;
use ctx_core::wire::RefuseReason;

#[derive(Clone)]
struct Admin {
    engine: mpsc::Sender<AdminRequest>,
    /// One permit per open events stream.
    streams: Arc<tokio::sync::Semaphore>,
    /// Each held context's ABI (`None`: its app has none), read once from
    /// its app: a context's app never changes.
    abis: Arc<Mutex<BTreeMap<ContextId, Option<Arc<Abi>>>>>,
}

/// Most ABIs the admin keeps; past it the cache starts over (an ABI is
/// read again from the app on its next use).
const ABIS_CACHED_MAX: usize = 1024;

/// An error answer.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = reply(self.0, json!({ "error": self.1 }));
        // The rest of a body too large or too slow is never read: the
        // connection cannot carry another request.
        if matches!(
            self.0,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// An error answer as every admin error is: `{"error": reason}`.
pub fn error_response(status: StatusCode, reason: impl Into<String>) -> Response {
    ApiError(status, reason.into()).into_response()
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: Value) -> Result<Response, ApiError> {
    Ok(reply(StatusCode::OK, body))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> ApiError {
        let status = match &error {
            RequestError::Command(command) => match command {
                CommandError::UnknownContext(_) => StatusCode::NOT_FOUND,
                CommandError::AlreadyHeld(_)
                | CommandError::NotAMember(..)
                | CommandError::JoinViaSelf
                | CommandError::TooManyContexts
                | CommandError::InviteSelf
                | CommandError::AlreadyInvited { .. } => StatusCode::CONFLICT,
                CommandError::Call(_) | CommandError::UnknownMethod { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                _ => StatusCode::BAD_REQUEST,
            },
            RequestError::JoinRefused { reason, .. } => match reason {
                RefuseReason::UnknownContext => StatusCode::NOT_FOUND,
                _ => StatusCode::CONFLICT,
            },
            RequestError::JoinAbandoned { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            RequestError::Unreachable { .. } => StatusCode::BAD_GATEWAY,
            RequestError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            RequestError::ShuttingDown | RequestError::Busy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        let message = match &error {
            RequestError::Command(CommandError::App(e)) => format!("invalid application: {e}"),
            other => other.to_string(),
        };
        ApiError(status, message)
    }
}

/// The admin router, talking to the engine task through `engine`.
pub fn router(engine: mpsc::Sender<AdminRequest>, metrics: Arc<Metrics>) -> Router {
    let scrape = get(move || {
        let metrics = Arc::clone(&metrics);
        async move {
            (
                [(
                    header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                metrics.encode(),
            )
        }
    });
    Router::new()
        .route("/metrics", scrape)
        .route("/v1/id", get(id))
        .route("/v1/status", get(status_all))
        .route("/v1/contexts", post(create))
        .route("/v1/contexts/{ctx}", get(status_one))
        .route("/v1/contexts/{ctx}/invite", post(invite))
        .route("/v1/contexts/{ctx}/join", post(join))
        .route("/v1/contexts/{ctx}/leave", post(leave))
        .route("/v1/contexts/{ctx}/call", post(call))
        .route("/v1/contexts/{ctx}/view", post(view))
        .route("/v1/contexts/{ctx}/abi", get(abi))
        .route("/v1/contexts/{ctx}/wait", post(wait))
        .route("/v1/contexts/{ctx}/events", get(events))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed here".into(),
            )
        })
        .with_state(Admin {
            engine,
            abis: Arc::default(),
            streams: Arc::new(tokio::sync::Semaphore::new(EVENT_STREAMS_MAX)),
        })
}

impl Admin {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> AdminRequest,
    ) -> Result<T, ApiError> {
        let (tx, rx) = oneshot::channel();
        let gone = || ApiError::from(RequestError::ShuttingDown);
        self.engine.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// The ABI of `context`'s app: `None` when its module has none (or one
    /// that does not parse: such an app is refused at create, but a context
    /// joined from elsewhere may carry one, and runs with untyped
    /// arguments as before).
    async fn abi(&self, context: ContextId) -> Result<Option<Arc<Abi>>, ApiError> {
        if let Some(abi) = self.abis().get(&context) {
            return Ok(abi.clone());
        }
        let app = self
            .ask(|reply| AdminRequest::App { context, reply })
            .await??;
        let abi = abi_of(&app).ok().flatten().map(Arc::new);
        let mut abis = self.abis();
        if abis.len() >= ABIS_CACHED_MAX {
            abis.clear();
        }
        abis.insert(context, abi.clone());
        Ok(abi)
    }

    fn abis(&self) -> std::sync::MutexGuard<'_, BTreeMap<ContextId, Option<Arc<Abi>>>> {
        // A panic while holding it cannot leave the map half-written.
        self.abis
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn body_json<T: DeserializeOwned>(body: Body) -> Result<T, ApiError> {
    let bytes = body_bytes(body).await?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid JSON body: {e}")))
}

/// Reads a body whole, within `ADMIN_BODY_BYTES_MAX` and
/// `ADMIN_BODY_TIMEOUT`.
async fn body_bytes(body: Body) -> Result<axum::body::Bytes, ApiError> {
    let read = axum::body::to_bytes(body, ADMIN_BODY_BYTES_MAX);
    let bytes = tokio::time::timeout(ADMIN_BODY_TIMEOUT, read)
        .await
        .map_err(|_| {
            ApiError(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received in full within {} s",
                    ADMIN_BODY_TIMEOUT.as_secs()
                ),
            )
        })?
        .map_err(|e| {
            let over = e
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            if over {
                ApiError(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over {ADMIN_BODY_BYTES_MAX} bytes"),
                )
            } else {
                bad("could not read the request body")
            }
        })?;
    Ok(bytes)
}

/// The `{ctx}` of a path, parsed; a bad one is a JSON 400 like any other.
struct Ctx(ContextId);

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Ctx, ApiError> {
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| bad(format!("bad path: {}", rejection.body_text())))?;
        id_of(&text, "context", ContextId::from_hex).map(Ctx)
    }
}

/// A 32-byte id from its hex text, or a 400 that names it.
fn id_of<T, E>(
    text: &str,
    what: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, ApiError> {
    parse(text).map_err(|_| bad(format!("bad {what} id {text:?}: expected 64 hex digits")))
}

fn hex_of(text: &str, what: &str) -> Result<Vec<u8>, ApiError> {
    hex::decode(text).map_err(|_| bad(format!("{what}: not hex")))
}

pub fn status_json(report: &StatusReport, only: Option<ContextId>) -> Value {
    let mut contexts = serde_json::Map::new();
    for status in &report.contexts {
        if only.is_some_and(|c| c != status.context) {
            continue;
        }
        contexts.insert(
            status.context.to_hex(),
            json!({
                "phase": format!("{:?}", status.phase).to_lowercase(),
                "members": status.members.iter().map(MemberId::to_hex).collect::<Vec<_>>(),
                "applied": status.applied,
                "pending": status.pending,
                "heads": status.heads.iter().map(TxId::to_hex).collect::<Vec<_>>(),
                "state_root": status.state_root.map(|r| r.to_hex()),
                "stable": status.stable,
                "checkpoint": status.checkpoint,
                "stands_on": status.stands_on,
                "held_back_by": status.held_back_by.map(|held| json!({
                    "member": held.member.to_hex(),
                    "reason": format!("{:?}", held.reason).to_lowercase(),
                    "for_ms": report.now.as_ms().saturating_sub(held.since.as_ms()),
                })),
            }),
        );
    }
    let peers: Vec<Value> = report
        .peers
        .iter()
        .map(|p| {
            json!({
                "member": p.member.to_hex(),
                "addr": p.addr.map(|a| a.to_string()),
                "connected": p.connected,
            })
        })
        .collect();
    let disk = &report.disk;
    json!({
        "member": report.member.to_hex(),
        "peers": peers,
        "strangers": report.strangers,
        "disk": {
            "state": if disk.full { "full" } else { "storing" },
            "full_for_ms": disk.full_for.map(|d| d.as_millis() as u64),
            "available_bytes": disk.available,
            "reserve_bytes": disk.reserve,
        },
        "contexts": contexts,
    })
}

async fn id(State(admin): State<Admin>) -> Result<Response, ApiError> {
    let report = admin.ask(|reply| AdminRequest::Status { reply }).await?;
    ok(json!({ "member": report.member.to_hex() }))
}

async fn status_all(State(admin): State<Admin>) -> Result<Response, ApiError> {
    let report = admin.ask(|reply| AdminRequest::Status { reply }).await?;
    ok(status_json(&report, None))
}

async fn status_one(State(admin): State<Admin>, Ctx(context): Ctx) -> Result<Response, ApiError> {
    let report = admin.ask(|reply| AdminRequest::Status { reply }).await?;
    if !report.contexts.iter().any(|c| c.context == context) {
        return Err(RequestError::Command(CommandError::UnknownContext(context)).into());
    }
    ok(status_json(&report, Some(context)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    app: String,
}

/// `POST /v1/contexts`: the app as JSON (`{"app": hex}`), or as the raw
/// module with `Content-Type: application/wasm`.
async fn create(
    State(admin): State<Admin>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|kind| kind.starts_with("application/wasm"));
    let app = if raw {
        body_bytes(body).await?.to_vec()
    } else {
        let body: CreateBody = body_json(body).await?;
        hex_of(&body.app, "app")?
    };
    check_abi(&app).map_err(bad)?;
    let context = admin
        .ask(|reply| AdminRequest::Create { app, reply })
        .await??;
    ok(json!({ "context": context.to_hex() }))
}

/// Refuses an app whose `ctx_abi` section (the ABI an SDK app embeds) is
/// malformed, saying what is wrong. An app without the section passes, and
/// so does one that is not WebAssembly at all: the engine refuses that with
/// its own error.
fn check_abi(app: &[u8]) -> Result<(), String> {
    abi_of(app)
        .map(|_| ())
        .map_err(|error| format!("app: {error}"))
}

/// The ABI an app's module carries: `Ok(None)` when it has none, or when
/// the app is not a module at all (which the engine refuses with its own
/// error); an error only for a malformed section.
fn abi_of(app: &[u8]) -> Result<Option<Abi>, ctx_abi::AbiError> {
    let Ok(wasm) = ctx_core::runtime::wasm_from_source(app) else {
        return Ok(None);
    };
    match Abi::from_module(&wasm) {
        Err(ctx_abi::AbiError::Module(_)) => Ok(None),
        read => read,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteBody {
    member: String,
}

async fn invite(
    State(admin): State<Admin>,
    Ctx(context): Ctx,
    body: Body,
) -> Result<Response, ApiError> {
    let body: InviteBody = body_json(body).await?;
    let member = id_of(&body.member, "member", MemberId::from_hex)?;
    let tx = admin
        .ask(|reply| AdminRequest::Invite {
            context,
            member,
            reply,
        })
        .await??;
    ok(json!({ "tx": tx.to_hex() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinBody {
    via: String,
}

async fn join(
    State(admin): State<Admin>,
    Ctx(context): Ctx,
    body: Body,
) -> Result<Response, ApiError> {
    let body: JoinBody = body_json(body).await?;
    let via = resolve(&body.via).await?;
    let answer = admin
        .ask(|reply| AdminRequest::Join {
            context,
            via,
            reply,
        })
        .await??;
    ok(json!({ "via_member": answer.via.to_hex(), "state": answer.state.name() }))
}

/// A `host:port` to one socket address (names are looked up).
async fn resolve(text: &str) -> Result<SocketAddr, ApiError> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let mut found = tokio::net::lookup_host(text)
        .await
        .map_err(|e| bad(format!("bad address {text:?}: {e}")))?;
    found
        .next()
        .ok_or_else(|| bad(format!("bad address {text:?}: no address found")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaveBody {}

async fn leave(
    State(admin): State<Admin>,
    Ctx(context): Ctx,
    body: Body,
) -> Result<Response, ApiError> {
    let _: LeaveBody = body_json(body).await?;
    admin
        .ask(|reply| AdminRequest::Leave { context, reply })
        .await??;
    ok(json!({}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallBody {
    method: String,
    #[serde(default)]
    args: Option<Value>,
    #[serde(default)]
    input: Option<String>,
}

impl CallBody {
    /// Reads a call (`kind` Call) or view body: the method, its input, and
    /// the method's ABI when the app has one.
    async fn read(
        admin: &Admin,
        context: ContextId,
        kind: Kind,
        body: Body,
    ) -> Result<(String, Vec<u8>, Option<Method>), ApiError> {
        let body: CallBody = body_json(body).await?;
        let abi = admin.abi(context).await?;
        let method = abi
            .map(|abi| declared(&abi, &body.method, kind))
            .transpose()?;
        let input = body.input(method.as_ref())?;
        Ok((body.method, input, method))
    }

    fn input(&self, method: Option<&Method>) -> Result<Vec<u8>, ApiError> {
        match (&self.args, &self.input, method) {
            (Some(_), Some(_), _) => Err(bad("give either \"args\" or \"input\", not both")),
            (None, Some(input), _) => hex_of(input, "input"),
            (args, None, Some(method)) => typed_input(method, args.as_ref()),
            (Some(args), None, None) => {
                let words = words_of(args)?;
                encode_cli_args(&words).map_err(|e| bad(e.to_string()))
            }
            (None, None, None) => Ok(ctx_core::runtime::encode_args::<Vec<u8>>(&[])),
        }
    }
}

/// `name` as the ABI declares it, if it is of `kind`; else a 400 saying
/// what the app has.
fn declared(abi: &Abi, name: &str, kind: Kind) -> Result<Method, ApiError> {
    let Some(method) = abi.method(name) else {
        let names: Vec<&str> = abi.methods.iter().map(|m| m.name.as_str()).collect();
        return Err(bad(format!(
            "the app has no method {name:?} (its ABI declares: {})",
            names.join(", ")
        )));
    };
    match (method.kind, kind) {
        (Kind::View, Kind::Call) => Err(bad(format!(
            "{} is a view: read it with `view` (as a call it would only record a transaction that changes nothing)",
            method.signature()
        ))),
        (Kind::Call, Kind::View) => Err(bad(format!(
            "{} is a call (it may write): make it with `call`",
            method.signature()
        ))),
        _ => Ok(method.clone()),
    }
}

/// The input for `args` by the method's parameter types: a list of strings
/// is words as on the command line, any other list or an object is JSON
/// values (in order, or by name).
fn typed_input(method: &Method, args: Option<&Value>) -> Result<Vec<u8>, ApiError> {
    let encoded = match args {
        None => method.encode_json(&Value::Null),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            let words: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            method.encode_words(&words)
        }
        Some(args) => method.encode_json(args),
    };
    encoded.map_err(|e| bad(e.to_string()))
}

/// `args` of an app without an ABI: a list of words.
fn words_of(args: &Value) -> Result<Vec<String>, ApiError> {
    let untyped = || {
        bad(
            "\"args\" must be a list of strings (words as on the command line); \
             arguments by name or as JSON values need an app with an ABI, and this one has none",
        )
    };
    let Value::Array(items) = args else {
        return Err(untyped());
    };
    items
        .iter()
        .map(|item| item.as_str().map(str::to_owned).ok_or_else(untyped))
        .collect()
}

/// An outcome as JSON: `{"ok": true}`, `{"failed": {"kind", "message"}}`
/// or `{"rejected": {"reason"}}`.
fn outcome_json(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Ok => json!({ "ok": true }),
        Outcome::Failed(e) => {
            let kind = match e {
                ctx_core::CallError::UnknownMethod(_) => "unknown_method",
                ctx_core::CallError::OutOfFuel => "out_of_fuel",
                ctx_core::CallError::Trap(_) => "trap",
                ctx_core::CallError::AppFailed(_) => "app_failed",
                ctx_core::CallError::LimitExceeded(_) => "limit_exceeded",
                ctx_core::CallError::BadInput(_) => "bad_input",
            };
            json!({ "failed": { "kind": kind, "message": e.to_string() } })
        }
        Outcome::Rejected(r) => json!({ "rejected": { "reason": r.to_string() } }),
    }
}

/// One stable transaction as an event's data.
fn entry_json(entry: &StableEntry) -> Value {
    use ctx_core::tx::TxKind;
    let mut value = json!({
        "position": entry.position,
        "tx": entry.tx.to_hex(),
        "author": entry.author.to_hex(),
        "kind": match &entry.kind {
            TxKind::Create { .. } => "create",
            TxKind::Invite { .. } => "invite",
            TxKind::Join => "join",
            TxKind::Leave => "leave",
            TxKind::Call { .. } => "call",
        },
        "outcome": outcome_json(&entry.outcome),
    });
    match &entry.kind {
        TxKind::Call { method, input } => {
            value["method"] = json!(method);
            value["input"] = json!(hex::encode(input));
        }
        TxKind::Invite { member } => value["member"] = json!(member.to_hex()),
        _ => {}
    }
    value
}

/// `GET /v1/contexts/{ctx}/events`: the context's stable order as
/// server-sent events, from `?from=N` or after the `Last-Event-ID` (a
/// position), then as it grows; one `applied` event per transaction (its
/// id is its position), a `gap` when positions below the checkpoint this
/// copy stands on are asked for, an `end` when the copy is gone.
async fn events(
    State(admin): State<Admin>,
    Ctx(context): Ctx,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event as Sse, KeepAlive};
    let after_last = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .map(|last| last + 1)
                .ok_or_else(|| bad("Last-Event-ID: expected a position (a whole number)"))
        })
        .transpose()?;
    let from = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "from")
        .map(|(_, value)| {
            value.parse::<u64>().map_err(|_| {
                bad(format!(
                    "from={value:?}: expected a position (a whole number)"
                ))
            })
        })
        .transpose()?;
    let from = after_last.or(from).unwrap_or(0);
    let Ok(permit) = Arc::clone(&admin.streams).try_acquire_owned() else {
        return Err(RequestError::Busy {
            what: "event streams",
            max: EVENT_STREAMS_MAX,
        }
        .into());
    };
    // The first page now: an unknown context is a 404, not a stream.
    let first = admin
        .ask(|reply| AdminRequest::Stable {
            context,
            from,
            max: EVENTS_PAGE_MAX,
            reply,
        })
        .await??;
    struct Cursor {
        admin: Admin,
        context: ContextId,
        next: u64,
        ready: std::collections::VecDeque<Sse>,
        page: Option<StablePage>,
        ended: bool,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
    let cursor = Cursor {
        admin,
        context,
        next: from,
        ready: std::collections::VecDeque::new(),
        page: Some(first),
        ended: false,
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(cursor, |mut cursor| async move {
        loop {
            if let Some(event) = cursor.ready.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(event), cursor));
            }
            if cursor.ended {
                return None;
            }
            let page = match cursor.page.take() {
                Some(page) => Ok(page),
                None => {
                    tokio::time::sleep(EVENTS_POLL).await;
                    let (context, from) = (cursor.context, cursor.next);
                    match cursor
                        .admin
                        .ask(|reply| AdminRequest::Stable {
                            context,
                            from,
                            max: EVENTS_PAGE_MAX,
                            reply,
                        })
                        .await
                    {
                        Ok(page) => page.map_err(|e| e.to_string()),
                        Err(e) => Err(e.1),
                    }
                }
            };
            match page {
                Ok(page) => {
                    if cursor.next < page.base {
                        let gap = json!({ "from": cursor.next, "to": page.base });
                        cursor.ready.push_back(
                            Sse::default()
                                .event("gap")
                                .id((page.base - 1).to_string())
                                .data(gap.to_string()),
                        );
                        cursor.next = page.base;
                    }
                    for entry in &page.entries {
                        cursor.ready.push_back(
                            Sse::default()
                                .event("applied")
                                .id(entry.position.to_string())
                                .data(entry_json(entry).to_string()),
                        );
                        cursor.next = entry.position + 1;
                    }
                }
                Err(reason) => {
                    let end = json!({ "reason": reason });
                    cursor
                        .ready
                        .push_back(Sse::default().event("end").data(end.to_string()));
                    cursor.ended = true;
                }
            }
        }
    });
    Ok(axum::response::sse::Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn call(
    State(admin): State<Admin>,
    Ctx(context): Ctx,
    body: Body,
) -> Result<Response, ApiError> {
    let (method, input, _) = CallBody::read(&admin, context, Kind::Call, body).await?;
    let receipt = admin
        .ask(|reply| AdminRequest::Call {
            context,
            method,
            input,
            reply,
        })
        .await??;
    ok(json!({ "tx": receipt.tx.to_hex(), "outcome": outcome_json(&receipt.outcome) }))
}

async fn view(
    State(admin): State<Admin>,
    Ctx(context): Ctx,
    body: Body,
) -> Result<Response, ApiError> {
    let (method, input, declared) = CallBody::read(&admin, context, Kind::View, body).await?;
    let result = admin
        .ask(|reply| AdminRequest::View {
            context,
            method,
            input,
            reply,
        })
        .await?;
    match result {
        Ok(bytes) => {
            let mut answer = json!({ "ok": true, "return": hex::encode(&bytes) });
            match declared.map(|method| method.decode_return(&bytes)) {
                Some(Ok(value)) => answer["value"] = value,
                Some(Err(error)) => answer["value_error"] = json!(error.to_string()),
                None => {}
            }
            ok(answer)
        }
        // The call ran and failed: an answer, not a bad request.
        Err(RequestError::Command(CommandError::Call(e))) => {
            ok(json!({ "ok": false, "error": e.to_string() }))
        }
        Err(other) => Err(other.into()),
    }
}

async fn abi(State(admin): State<Admin>, Ctx(context): Ctx) -> Result<Response, ApiError> {
    match admin.abi(context).await? {
        Some(abi) => ok(abi.to_json()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "the app of context {} has no ABI (no `ctx_abi` section): its methods take untyped arguments",
                context.to_hex()
            ),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitBody {
    tx: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

async fn wait(
    State(admin): State<Admin>,
    Ctx(context): Ctx,
    body: Body,
) -> Result<Response, ApiError> {
    let body: WaitBody = body_json(body).await?;
    let tx = id_of(&body.tx, "tx", TxId::from_hex)?;
    let limit = Duration::from_millis(body.timeout_ms.unwrap_or(10_000)).min(WAIT_TIMEOUT_MAX);
    let ask = |wait| {
        admin.ask(move |reply| AdminRequest::Wait {
            context,
            tx,
            wait,
            reply,
        })
    };
    // `timeout_ms: 0` asks where it stands now, exactly; a wait that runs
    // out asks again, to tell pending from unknown.
    let state = if limit.is_zero() {
        ask(false).await??
    } else {
        match tokio::time::timeout(limit, ask(true)).await {
            Ok(answer) => answer??,
            Err(_) => ask(false).await??,
        }
    };
    ok(json!({ "applied": state == TxState::Applied, "state": state.name() }))
}

#[cfg(test)]
mod tests {
    use super::check_abi;

    fn module_with(custom: &str) -> Vec<u8> {
        format!("(module (memory (export \"memory\") 1) {custom})").into_bytes()
    }

    #[test]
    fn an_app_with_a_malformed_abi_section_is_refused_with_what_is_wrong() {
        assert_eq!(check_abi(&module_with("")), Ok(()));
        assert_eq!(check_abi(b"not an app"), Ok(()), "the engine refuses it");
        let valid = r#"(@custom "ctx_abi" "{\"version\":1,\"methods\":[]}")"#;
        assert_eq!(check_abi(&module_with(valid)), Ok(()));
        let future = r#"(@custom "ctx_abi" "{\"version\":9,\"methods\":[]}")"#;
        assert_eq!(
            check_abi(&module_with(future)),
            Err("app: the `ctx_abi` section has version 9; this ctx reads version 1".into())
        );
        let broken = r#"(@custom "ctx_abi" "{\"version\":1,\"methods\":")"#;
        let refused = check_abi(&module_with(broken)).expect_err("refused");
        assert!(
            refused.starts_with("app: the `ctx_abi` section is not a valid ABI document"),
            "{refused}"
        );
    }
}
