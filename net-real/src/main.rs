//! `ctx-node`: run a node, or talk to a running node's admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use ctx_core::Config;
use ctx_node::client::Client;
use ctx_node::identity::Identity;
use ctx_node::limits::{self, CLIENT_TIMEOUT};
use ctx_node::server::{self, Settings};
use serde::Deserialize;
use serde_json::{Value, json};

/// `println!` that ends the process quietly when stdout is a closed pipe
/// (`ctx-node status | head -1`), as a shell tool does, instead of
/// panicking; any other failure to write is an error on stderr.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(error) = writeln!(out, $($arg)*).and_then(|()| out.flush()) {
            $crate::stdout_failed(error)
        }
    }};
}

fn stdout_failed(error: std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: writing to stdout: {error}");
    std::process::exit(1)
}

mod bench;

/// The admin address when none is given.
const ADMIN_DEFAULT: &str = "127.0.0.1:7701";
/// How often `context join` asks whether catchup finished.
const JOIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The peer address `run` listens on when none is given.
const LISTEN_DEFAULT: &str = "0.0.0.0:7700";

#[derive(Parser)]
#[command(
    name = "ctx-node",
    version,
    about = "A ctx node: contexts over encrypted TCP, durable and operable"
)]
struct Cli {
    /// The admin API address: where `run` serves it, and the node that
    /// client subcommands talk to [default: 127.0.0.1:7701]
    #[arg(long, global = true, env = "CTX_NODE_ADMIN")]
    admin: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory with a new key pair; prints the member id.
    Init {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Run a node (stops cleanly on SIGTERM or Ctrl-C).
    Run(RunArgs),
    /// Rebuild a damaged store from what is intact in it, with no node
    /// running on the directory; prints what it dropped.
    Repair {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print the running node's member id.
    Id,
    /// Create, invite into, join or leave a context.
    #[command(subcommand)]
    Context(ContextCommand),
    /// Make a call: a transaction every member applies.
    Call(Invocation),
    /// Run a read-only call against this node's state.
    View(Invocation),
    /// The methods of a context's app, from the ABI its module carries.
    Abi {
        context: String,
        /// Print the ABI document as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Wait until a transaction is applied on this node.
    Wait {
        context: String,
        tx: String,
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
    },
    /// Peers, contexts, members, applied count, heads, state root.
    Status {
        context: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Load generator: calls per second and call-to-applied-everywhere latency.
    Bench(bench::BenchArgs),
}

/// A method and its arguments, for `call` and `view`.
#[derive(clap::Args)]
struct Invocation {
    context: String,
    method: String,
    /// Arguments. For an app with an ABI, one word per parameter, converted
    /// by its type (`transfer alice bob 10`: two strings and a u64). For
    /// one without: a plain word is UTF-8, `u64:N` 8 little-endian bytes,
    /// `hex:..` raw bytes.
    args: Vec<String>,
    /// Print the node's JSON answer.
    #[arg(long)]
    json: bool,
}

impl Invocation {
    /// Posts to the context's `endpoint` (`call` or `view`); the answer,
    /// printed first when `--json` asked for it.
    fn send(&self, client: &Client, endpoint: &str) -> Result<Value> {
        let answer = client.post(
            &format!("/v1/contexts/{}/{endpoint}", self.context),
            &json!({ "method": self.method, "args": self.args }),
        )?;
        if self.json {
            say!("{answer}");
        }
        Ok(answer)
    }
}

#[derive(Subcommand)]
enum ContextCommand {
    /// Create a context running an app (.wat or .wasm); prints its id.
    Create {
        #[arg(long)]
        app: PathBuf,
    },
    /// Invite a member (its member id) into a context.
    Invite { context: String, member: String },
    /// Join a context through the node at ADDR (its peer address); waits
    /// until caught up and a member.
    Join {
        context: String,
        #[arg(long)]
        via: String,
        /// Return once the join is under way, without waiting for catchup.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for catchup.
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
    },
    /// Leave a context and delete this node's copy.
    Leave { context: String },
}

#[derive(clap::Args)]
struct RunArgs {
    /// A TOML config file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The peer address to listen on [default: 0.0.0.0:7700]
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The address peers should dial this node at, when it differs from
    /// the listen address (a wildcard bind, NAT).
    #[arg(long)]
    advertise: Option<String>,
    /// How often a member syncs heads with one other member.
    #[arg(long)]
    sync_interval_ms: Option<u64>,
    /// Disk space kept free for the records on their way to the store when
    /// the disk fills up, in MiB [default: 64]
    #[arg(long)]
    disk_reserve_mb: Option<u64>,
}

/// The config file: every field optional, flags win.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    advertise: Option<String>,
    sync_interval_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    disk_reserve_mb: Option<u64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let admin = cli.admin.clone();
    let admin_addr = admin.as_deref().unwrap_or(ADMIN_DEFAULT);
    let client = || Client::new(admin_addr);
    match cli.command {
        Command::Init { data_dir } => {
            let identity = Identity::init(&data_dir)?;
            say!("{}", identity.member());
            Ok(())
        }
        Command::Run(args) => run(args, cli.admin),
        Command::Repair { data_dir } => {
            let identity = Identity::load(&data_dir)?;
            let report = ctx_node::repair::repair(&data_dir, &identity)?;
            say!("{}", report.to_string().trim_end());
            Ok(())
        }
        Command::Id => {
            let answer = client().get("/v1/id")?;
            say!("{}", text(&answer, "member")?);
            Ok(())
        }
        Command::Context(command) => context_command(&client(), command),
        Command::Call(call) => {
            let answer = call.send(&client(), "call")?;
            if !call.json {
                say!(
                    "{} {}",
                    text(&answer, "tx")?,
                    outcome_text(&answer["outcome"])
                );
            }
            Ok(())
        }
        Command::View(view) => {
            let answer = view.send(&client(), "view")?;
            if view.json {
                return Ok(());
            }
            if answer.get("ok").and_then(Value::as_bool) != Some(true) {
                bail!("view failed: {}", text(&answer, "error")?);
            }
            match answer.get("value") {
                Some(Value::String(value)) => say!("{value}"),
                Some(value) => say!("{value}"),
                None => {
                    let bytes = hex::decode(text(&answer, "return")?).context("return value")?;
                    say!("{}", printable(&bytes));
                }
            }
            Ok(())
        }
        Command::Abi { context, json } => {
            let abi = client().get(&format!("/v1/contexts/{context}/abi"))?;
            if json {
                say!("{abi}");
                return Ok(());
            }
            let abi: ctx_abi::Abi = serde_json::from_value(abi).context("the node's ABI answer")?;
            for method in &abi.methods {
                let kind = match method.kind {
                    ctx_abi::Kind::Call => "call",
                    ctx_abi::Kind::View => "view",
                };
                say!("{kind} {}", method.signature());
            }
            Ok(())
        }
        Command::Wait {
            context,
            tx,
            timeout_ms,
        } => {
            // The node answers within the wait (at most 120 s); the client
            // waits a little longer than that, so it hears the answer.
            let patience = Duration::from_millis(timeout_ms) + Duration::from_secs(10);
            let client = Client::with_timeout(admin_addr, patience.max(CLIENT_TIMEOUT));
            let answer = client.post(
                &format!("/v1/contexts/{context}/wait"),
                &json!({ "tx": tx, "timeout_ms": timeout_ms }),
            )?;
            match answer.get("state").and_then(Value::as_str) {
                Some("applied") => {
                    say!("applied");
                    Ok(())
                }
                Some("pending") => {
                    bail!("not applied within {timeout_ms} ms: held, waiting for its parents")
                }
                _ => bail!("not applied within {timeout_ms} ms: this node has not seen {tx}"),
            }
        }
        Command::Status { context, json } => {
            let path = match &context {
                Some(context) => format!("/v1/contexts/{context}"),
                None => "/v1/status".to_owned(),
            };
            let answer = client().get(&path)?;
            if json {
                say!("{answer}");
            } else {
                print_status(&answer);
            }
            Ok(())
        }
        Command::Bench(args) => bench::run(args),
    }
}

fn context_command(client: &Client, command: ContextCommand) -> Result<()> {
    match command {
        ContextCommand::Create { app } => {
            let bytes = std::fs::read(&app)
                .with_context(|| format!("reading the app {}", app.display()))?;
            let answer = client
                .post("/v1/contexts", &json!({ "app": hex::encode(bytes) }))
                .with_context(|| format!("creating a context with {}", app.display()))?;
            say!("{}", text(&answer, "context")?);
        }
        ContextCommand::Invite { context, member } => {
            let answer = client.post(
                &format!("/v1/contexts/{context}/invite"),
                &json!({ "member": member }),
            )?;
            say!("invited {member} (tx {})", text(&answer, "tx")?);
        }
        ContextCommand::Join {
            context,
            via,
            no_wait,
            timeout_ms,
        } => {
            let answer = client.post(
                &format!("/v1/contexts/{context}/join"),
                &json!({ "via": via }),
            )?;
            let via_member = text(&answer, "via_member")?;
            let state = text(&answer, "state")?;
            if no_wait {
                match state {
                    "joined" => say!("joined through {via_member}"),
                    "catching_up" => say!("joining through {via_member} (catching up)"),
                    _ => say!("asked {via_member} to join; no answer yet (the node keeps asking)"),
                }
                return Ok(());
            }
            let held = wait_for_membership(client, &context, Duration::from_millis(timeout_ms))
                .with_context(|| format!("joining through {via_member}"))?;
            say!(
                "joined through {via_member}: {} members, {} applied",
                held["members"].as_array().map_or(0, Vec::len),
                held["applied"]
            );
        }
        ContextCommand::Leave { context } => {
            client.post(&format!("/v1/contexts/{context}/leave"), &json!({}))?;
            say!("leaving {context}");
        }
    }
    Ok(())
}

/// Polls the node until it is a member of `context`; its status then.
fn wait_for_membership(client: &Client, context: &str, timeout: Duration) -> Result<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let answer = client.get(&format!("/v1/contexts/{context}"))?;
        // The answer holds this one context.
        let held = answer["contexts"]
            .as_object()
            .and_then(|contexts| contexts.values().next())
            .cloned()
            .unwrap_or(Value::Null);
        if held["phase"] == "member" {
            return Ok(held);
        }
        if Instant::now() >= deadline {
            bail!(
                "still {} after {} ms (the node keeps trying; see `ctx-node status {context}`)",
                held["phase"].as_str().unwrap_or("catching up"),
                timeout.as_millis()
            );
        }
        std::thread::sleep(JOIN_POLL_INTERVAL);
    }
}

fn text<'a>(answer: &'a Value, field: &str) -> Result<&'a str> {
    answer
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the node's answer has no {field:?}: {answer}"))
}

/// A return value as text when it is printable UTF-8, else `hex:..`.
fn printable(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_owned(),
        _ => format!("hex:{}", hex::encode(bytes)),
    }
}

/// A call's outcome as one word or line: `ok`, `failed: ...`,
/// `rejected: ...`.
fn outcome_text(outcome: &Value) -> String {
    if outcome["ok"] == true {
        "ok".into()
    } else if let Some(message) = outcome["failed"]["message"].as_str() {
        format!("failed: {message}")
    } else if let Some(reason) = outcome["rejected"]["reason"].as_str() {
        format!("rejected: {reason}")
    } else {
        outcome.to_string()
    }
}

fn print_status(answer: &Value) {
    let empty = serde_json::Map::new();
    say!("member {}", answer["member"].as_str().unwrap_or("?"));
    let peers = answer["peers"].as_array().map_or(&[][..], Vec::as_slice);
    say!("peers ({}):", peers.len());
    for peer in peers {
        say!(
            "  {}  {:<22} {}",
            peer["member"].as_str().unwrap_or("?"),
            peer["addr"].as_str().unwrap_or("-"),
            if peer["connected"].as_bool() == Some(true) {
                "connected"
            } else {
                "not connected"
            }
        );
    }
    if answer["disk"]["state"] == "full" {
        say!(
            "disk FULL for {} ms ({} bytes left): writes are refused until space returns",
            answer["disk"]["full_for_ms"].as_u64().unwrap_or(0),
            answer["disk"]["available_bytes"].as_u64().unwrap_or(0)
        );
    }
    if let Some(strangers) = answer["strangers"].as_u64().filter(|n| *n > 0) {
        say!(
            "  and {strangers} strangers connected (each closed within seconds unless a context names it)"
        );
    }
    let contexts = answer["contexts"].as_object().unwrap_or(&empty);
    say!("contexts ({}):", contexts.len());
    for (id, c) in contexts {
        say!("  {id}  {}", c["phase"].as_str().unwrap_or("?"));
        say!(
            "    applied {}  stable {}  pending {}  state root {}",
            c["applied"],
            c["stable"],
            c["pending"],
            c["state_root"].as_str().unwrap_or("-")
        );
        if let Some(cut) = c["checkpoint"].as_u64() {
            let on = match c["stands_on"].as_u64() {
                Some(base) => format!(", holds the history from height {base} on"),
                None => ", holds the whole history".to_owned(),
            };
            say!("    checkpoint at height {cut}{on}");
        }
        if let Some(held) = c["held_back_by"].as_object() {
            let why = match held["reason"].as_str() {
                Some("invited") => "invited and not joined yet",
                _ => "a member not heard from since",
            };
            say!(
                "    stability held back by {} ({why}) for {:.1} s",
                held["member"].as_str().unwrap_or("?"),
                held["for_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
            );
        }
        for (label, key) in [("members", "members"), ("heads", "heads")] {
            let list = c[key].as_array().map_or(&[][..], Vec::as_slice);
            say!("    {label} ({}):", list.len());
            for item in list {
                say!("      {}", item.as_str().unwrap_or("?"));
            }
        }
    }
}

fn read_config(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config {}", path.display()))
}

fn run(args: RunArgs, admin: Option<String>) -> Result<()> {
    let file = match &args.config {
        Some(path) => read_config(path)?,
        None => FileConfig::default(),
    };
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .ok_or_else(|| match &args.config {
            Some(path) => anyhow!(
                "no data directory: config {} has no data_dir, and no --data-dir DIR was given",
                path.display()
            ),
            None => {
                anyhow!("no data directory: give --data-dir DIR or --config FILE with data_dir")
            }
        })?;
    let admin = match admin {
        Some(text) => text
            .parse()
            .with_context(|| format!("--admin {text:?}: expected IP:PORT"))?,
        None => file
            .admin
            .unwrap_or(ADMIN_DEFAULT.parse().expect("a valid default")),
    };
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or(LISTEN_DEFAULT.parse().expect("a valid default"));
    let mut engine = Config::default();
    if let Some(ms) = args.sync_interval_ms.or(file.sync_interval_ms) {
        engine.sync_interval_ms = ms.max(1);
    }
    if let Some(ms) = file.request_timeout_ms {
        engine.request_timeout_ms = ms.max(1);
    }
    let advertise = args.advertise.or(file.advertise);
    if let Some(text) = &advertise {
        text.parse::<SocketAddr>()
            .with_context(|| format!("--advertise {text:?}: expected IP:PORT"))?;
    }
    let disk_reserve_bytes = match args.disk_reserve_mb.or(file.disk_reserve_mb) {
        Some(mb) => mb
            .checked_mul(1 << 20)
            .ok_or_else(|| anyhow!("--disk-reserve-mb {mb}: too large"))?,
        None => ctx_node::limits::DISK_RESERVE_DEFAULT_BYTES,
    };
    let settings = Settings {
        data_dir,
        listen,
        admin,
        advertise,
        engine,
        disk_reserve_bytes,
    };

    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(limits::THREAD_STACK_BYTES)
        .build()
        .context("starting the async runtime")?;
    // The engine runs on the thread that drives `block_on`: give it a known
    // stack, whatever the main thread's is.
    let engine = std::thread::Builder::new()
        .name("ctx-node".to_owned())
        .stack_size(limits::THREAD_STACK_BYTES)
        .spawn(move || {
            runtime.block_on(async move {
                let (stop, stopped) = tokio::sync::watch::channel(false);
                tokio::spawn(async move {
                    wait_for_signal().await;
                    tracing::info!("shutting down");
                    let _ = stop.send(true);
                });
                server::run(settings, stopped).await
            })
        })
        .context("starting the engine thread")?;
    match engine.join() {
        Ok(result) => Ok(result?),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
