//! Command-line interface: `serve` (the default), `call`, `chat`, `discover`, `schema`, `config
//! migrate`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::client::GatewayClient;
use crate::config::{self, Overrides};
use crate::logging::{self, LogFormat};
use crate::rpc::{MethodKind, TableSnapshot};

/// clawgate: a JSON-RPC 2.0 control plane for personal AI agents.
#[derive(Debug, Parser)]
#[command(name = "clawgate", version, about, long_about = None,
    after_help = "Run without a subcommand to serve. Example:\n  clawgate --port 18789\n  clawgate call gateway.health")]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the gateway (the default).
    #[command(after_help = "Example:\n  clawgate serve --data-dir /tmp/cg --port 0")]
    Serve(ServeArgs),
    /// Calls a method and prints its result as pretty JSON (errors go to stderr, exit 1).
    #[command(
        after_help = "Examples:\n  clawgate call gateway.health\n  clawgate call gateway.hello '{\"client\":{\"name\":\"me\"}}'\n  clawgate call --subscribe events.subscribe '{\"events\":[\"presence\"]}' --count 2"
    )]
    Call(CallArgs),
    /// A terminal chat with a session: streamed answers, tool calls, approvals, reconnects.
    #[command(
        after_help = "Each line is sent to the session (while a reply runs, it steers it); Ctrl-C aborts the reply,\na second Ctrl-C within 2 s (or one at an idle prompt) quits. Commands: /new [KEY], /sessions,\n/switch KEY, /history [N], /abort, /quit, /help. Typed lines are kept in <data-dir>/chat_history\nwhen that directory exists (or in --history FILE).\n\nExamples:\n  clawgate chat\n  clawgate chat --session work --agent coder --url ws://127.0.0.1:18789/"
    )]
    Chat(ChatArgs),
    /// Finds gateways on the local network (mDNS `_clawgate._tcp.local.`) and prints each as one
    /// JSON line.
    #[command(
        after_help = "Each line: {name, host, addresses, port, tls, fingerprintSha256?}. An announced fingerprint is\nunverified: pin it with `clawgate call --fingerprint HEX` once you have checked it on the gateway.\n\nExamples:\n  clawgate discover\n  clawgate discover --timeout-ms 10000"
    )]
    Discover(DiscoverArgs),
    /// Writes schema/openrpc.json and the method and event tables of docs/PROTOCOL.md from the
    /// code, or checks that both are current.
    #[command(
        after_help = "The tables of docs/PROTOCOL.md sit between <!-- generated:methods:start --> ... <!-- generated:methods:end -->\n(and the same for `events`); only the text between the markers is rewritten.\n\nExamples:\n  clawgate schema\n  clawgate schema --check\n  clawgate schema --out /tmp/openrpc.json --no-doc"
    )]
    Schema(SchemaArgs),
    /// Works on the configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Moves version 1's `[agent]` table to `[agents.<default>]` (a backup first, comments kept).
    #[command(
        after_help = "With --check nothing is changed: it prints the pending changes and exits 0 (nothing pending),\n1 (pending) or 2 (error).\n\nExamples:\n  clawgate config migrate --check --config ~/.clawgate/clawgate.toml\n  clawgate config migrate"
    )]
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
struct MigrateArgs {
    /// Print what would change and exit 0 (nothing), 1 (pending) or 2 (error); change nothing.
    #[arg(long)]
    check: bool,
}

#[derive(Debug, Args, Default)]
struct ServeArgs {
    /// Config file (default <data-dir>/clawgate.toml; absent is fine).
    #[arg(long, env = "CLAWGATE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Data directory (default ~/.clawgate).
    #[arg(long, env = "CLAWGATE_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Address to bind (gateway.bind).
    #[arg(long, env = "CLAWGATE_BIND")]
    bind: Option<String>,
    /// Port to bind, 0 for any free port (gateway.port).
    #[arg(long, env = "CLAWGATE_PORT")]
    port: Option<u16>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty, env = "CLAWGATE_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Debug, Args)]
struct CallArgs {
    /// The method, e.g. gateway.health.
    method: String,
    /// Params as a JSON object.
    params: Option<String>,
    /// The gateway's URL.
    #[arg(long, env = "CLAWGATE_URL", default_value = "ws://127.0.0.1:18789/")]
    url: String,
    /// Bearer token.
    #[arg(long, env = "CLAWGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Treat METHOD as a subscription and print each notification as one JSON line.
    #[arg(long)]
    subscribe: bool,
    /// With --subscribe: stop after this many notifications.
    #[arg(long)]
    count: Option<u64>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// How a `wss://` / `https://` gateway's certificate is trusted (default: the system's CAs).
#[derive(Debug, Args, Default)]
struct TlsArgs {
    /// Trust exactly the certificate whose SHA-256 fingerprint is HEX (the gateway logs it at
    /// start and returns it in gateway.status), whoever issued it; checked before the token is sent.
    #[arg(long, value_name = "HEX", conflicts_with = "ca")]
    fingerprint: Option<String>,
    /// Trust the CA certificates of this PEM file.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

impl TlsArgs {
    fn options(&self) -> crate::tls::TlsOptions {
        crate::tls::TlsOptions {
            fingerprint: self.fingerprint.clone(),
            ca_file: self.ca.clone(),
        }
    }
}

#[derive(Debug, Args)]
struct ChatArgs {
    /// The session to chat in (the first message creates it when it does not exist).
    #[arg(long, value_name = "KEY", default_value = "main")]
    session: String,
    /// The agent of the sessions this chat creates (default: the gateway's default agent).
    #[arg(long, value_name = "ID")]
    agent: Option<String>,
    /// The gateway's URL.
    #[arg(long, env = "CLAWGATE_URL", default_value = "ws://127.0.0.1:18789/")]
    url: String,
    /// Bearer token.
    #[arg(long, env = "CLAWGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The file of typed lines (default <data-dir>/chat_history when that directory exists).
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    #[command(flatten)]
    tls: TlsArgs,
}

#[derive(Debug, Args)]
struct DiscoverArgs {
    /// How long to listen for announcements, in ms.
    #[arg(long, value_name = "N", default_value_t = 3000)]
    timeout_ms: u64,
}

#[derive(Debug, Args)]
struct SchemaArgs {
    /// Fail (exit 1) if the OpenRPC document or the tables of the protocol document differ from
    /// what the code emits, instead of writing them.
    #[arg(long)]
    check: bool,
    /// Where the OpenRPC document lives.
    #[arg(long, default_value = "schema/openrpc.json")]
    out: PathBuf,
    /// The protocol document whose generated tables are written (or checked) too.
    #[arg(long, default_value = crate::protocol_doc::DEFAULT_PATH, conflicts_with = "no_doc")]
    doc: PathBuf,
    /// Leave the protocol document alone: write or check only the OpenRPC document.
    #[arg(long)]
    no_doc: bool,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("clawgate: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = match cli.command {
        None => runtime.block_on(serve(cli.serve)),
        Some(Command::Serve(args)) => {
            let merged = ServeArgs {
                config: args.config.or(cli.serve.config),
                data_dir: args.data_dir.or(cli.serve.data_dir),
                ..args
            };
            runtime.block_on(serve(merged))
        }
        Some(Command::Call(args)) => runtime.block_on(call(args)),
        Some(Command::Chat(args)) => runtime.block_on(chat(args, &cli.serve)),
        Some(Command::Discover(args)) => runtime.block_on(discover(args)),
        Some(Command::Schema(args)) => schema(args),
        Some(Command::Config(ConfigCommand::Migrate(args))) => migrate(&cli.serve, &args),
    };
    // A blocking task that never returns (a tool stuck in the kernel) must not keep the
    // process from exiting once the gateway has shut down.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}

async fn serve(args: ServeArgs) -> ExitCode {
    logging::init(args.log_format, None);
    let overrides = Overrides {
        config_path: args.config,
        data_dir: args.data_dir,
        bind: args.bind,
        port: args.port,
        token: std::env::var("CLAWGATE_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    let migrated = match migrate_at_start(&overrides) {
        Ok(migrated) => migrated,
        Err(err) => {
            eprintln!("clawgate: {err}");
            return ExitCode::from(2);
        }
    };
    let loaded = match config::load(&overrides, std::env::vars()) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("clawgate: {err}");
            return ExitCode::from(2);
        }
    };
    if !migrated {
        for change in &loaded.migrations {
            tracing::warn!(change = %change, "version-1 configuration key read in memory");
        }
    }
    let running = match crate::app::start(loaded).await {
        Ok(running) => running,
        Err(err) => {
            eprintln!("clawgate: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", running.ws_url());
    tracing::info!(addr = %running.addr, "listening on ws://{}/ (HTTP on the same port)", running.addr);
    let reason = wait_for_signal().await;
    running.shutdown(reason).await;
    ExitCode::SUCCESS
}

fn migrate(serve: &ServeArgs, args: &MigrateArgs) -> ExitCode {
    use config::migrate::{FileMigration, migrate_file, pending};
    let overrides = Overrides {
        config_path: serve.config.clone(),
        data_dir: serve.data_dir.clone(),
        ..Default::default()
    };
    let path = match config::data_dir_of(&overrides) {
        Ok(dir) => config::config_path_of(&overrides, &dir),
        Err(err) => {
            eprintln!("clawgate: {err}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        return match pending(&path) {
            Ok(None) => {
                println!("{}: nothing to migrate", path.display());
                ExitCode::SUCCESS
            }
            Ok(Some(migration)) => {
                println!("{}: pending changes:", path.display());
                for change in migration.changes {
                    println!("  {change}");
                }
                ExitCode::from(1)
            }
            Err(err) => {
                eprintln!("clawgate: {err}");
                ExitCode::from(2)
            }
        };
    }
    match migrate_file(&path) {
        Ok(FileMigration::Nothing) => {
            println!("{}: nothing to migrate", path.display());
            ExitCode::SUCCESS
        }
        Ok(FileMigration::Written { backup, changes }) => {
            println!(
                "{}: migrated (backup: {})",
                path.display(),
                backup.display()
            );
            for change in changes {
                println!("  {change}");
            }
            ExitCode::SUCCESS
        }
        Ok(FileMigration::ReadOnly { why, .. }) => {
            eprintln!("clawgate: {} cannot be rewritten: {why}", path.display());
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("clawgate: {err}");
            ExitCode::from(2)
        }
    }
}

/// Rewrites a version-1 config file before it is loaded (a backup first), logging each change;
/// `Ok(false)` when the file was not rewritten.
fn migrate_at_start(overrides: &Overrides) -> Result<bool, config::ConfigError> {
    use config::migrate::{FileMigration, migrate_file};
    let path = config::config_path_of(overrides, &config::data_dir_of(overrides)?);
    match migrate_file(&path)? {
        FileMigration::Nothing => Ok(false),
        FileMigration::Written { backup, changes } => {
            tracing::info!(file = %path.display(), backup = %backup.display(), "configuration migrated to version 2");
            for change in changes {
                tracing::info!(change = %change, "configuration migrated");
            }
            Ok(true)
        }
        FileMigration::ReadOnly { why, changes } => {
            tracing::warn!(file = %path.display(), %why, "the configuration uses version 1's [agent] and cannot be rewritten: migrated in memory only");
            for change in changes {
                tracing::warn!(change = %change, "configuration migrated in memory");
            }
            Ok(true)
        }
    }
}

async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

async fn call(args: CallArgs) -> ExitCode {
    let params = match &args.params {
        None => None,
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => Some(v),
            Err(err) => {
                eprintln!("clawgate: PARAMS_JSON is not valid JSON: {err}");
                return ExitCode::from(2);
            }
        },
    };
    let tls = args.tls.options();
    let client = match GatewayClient::connect_with(&args.url, args.token.as_deref(), &tls).await {
        Ok(c) => c,
        Err(err) => {
            eprintln!("clawgate: cannot connect to {}: {err}", args.url);
            return ExitCode::FAILURE;
        }
    };
    if args.subscribe {
        let unsubscribe = unsubscribe_for(&args.method);
        let mut sub = match client
            .subscribe_raw(&args.method, params, &unsubscribe)
            .await
        {
            Ok(s) => s,
            Err(err) => return print_error(err),
        };
        let mut seen = 0u64;
        loop {
            if args.count.is_some_and(|n| seen >= n) {
                return ExitCode::SUCCESS;
            }
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
                item = sub.next() => match item {
                    Some(Ok(value)) => {
                        println!("{value}");
                        seen += 1;
                        // Nothing follows a run's terminal payload, nor `shutdown`.
                        let state = value["payload"]["state"].as_str();
                        let ended = (args.method == "chat.stream" && matches!(state, Some("final" | "aborted" | "error")))
                            || value["event"] == <crate::protocol::ShutdownEvent as crate::protocol::Event>::NAME;
                        if ended {
                            return ExitCode::SUCCESS;
                        }
                    }
                    Some(Err(err)) => {
                        eprintln!("clawgate: bad notification: {err}");
                        return ExitCode::FAILURE;
                    }
                    None => return ExitCode::SUCCESS,
                },
            }
        }
    }
    match client.call_raw(&args.method, params).await {
        Ok(value) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
            );
            ExitCode::SUCCESS
        }
        Err(err) => print_error(err),
    }
}

async fn chat(args: ChatArgs, serve: &ServeArgs) -> ExitCode {
    let history_file = args.history.or_else(|| {
        let overrides = Overrides {
            data_dir: serve.data_dir.clone(),
            ..Default::default()
        };
        config::data_dir_of(&overrides)
            .ok()
            .filter(|dir| dir.is_dir())
            .map(|dir| dir.join("chat_history"))
    });
    crate::chat::run(crate::chat::ChatOptions {
        url: args.url,
        token: args.token.filter(|t| !t.is_empty()),
        session: args.session,
        agent: args.agent,
        history_file,
        tls: args.tls.options(),
    })
    .await
}

async fn discover(args: DiscoverArgs) -> ExitCode {
    use crate::discovery::BrowseEvent;
    use std::io::Write;
    // Warnings only unless RUST_LOG says otherwise: stdout is the JSON lines.
    let quiet = std::env::var_os("RUST_LOG").is_none().then_some("warn");
    logging::init(LogFormat::Pretty, quiet);
    let timeout = std::time::Duration::from_millis(args.timeout_ms);
    let browsed = tokio::task::spawn_blocking(move || {
        let mut found = 0usize;
        let result = crate::discovery::browse(timeout, |event| match event {
            BrowseEvent::Found(gateway) => {
                found += 1;
                if let Ok(line) = serde_json::to_string(&gateway) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            BrowseEvent::Removed(fullname) => {
                eprintln!("clawgate: withdrawn: {fullname}");
            }
        });
        result.map(|()| found)
    })
    .await;
    match browsed {
        Ok(Ok(0)) => {
            eprintln!(
                "clawgate: no clawgate gateway found on the local network within {} ms",
                args.timeout_ms
            );
            ExitCode::SUCCESS
        }
        Ok(Ok(n)) => {
            eprintln!(
                "clawgate: {n} gateway(s) found. An announced fingerprintSha256 is unverified until you pin it: \
                 check it on the gateway (gateway.status) and connect with `clawgate call --fingerprint HEX`"
            );
            ExitCode::SUCCESS
        }
        Ok(Err(err)) => {
            eprintln!("clawgate: cannot browse: {err}");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("clawgate: cannot browse: {err}");
            ExitCode::FAILURE
        }
    }
}

fn print_error(err: jsonrpsee::core::client::Error) -> ExitCode {
    match err {
        jsonrpsee::core::client::Error::Call(obj) => {
            let data = obj
                .data()
                .map(|d| d.get().to_string())
                .unwrap_or_else(|| "null".into());
            eprintln!("error {}: {}\ndata: {}", obj.code(), obj.message(), data);
        }
        other => eprintln!("clawgate: {other}"),
    }
    ExitCode::FAILURE
}

/// The unsubscribe method of a core subscription (from the method table, not a side list).
fn unsubscribe_for(method: &str) -> String {
    crate::api::core_table()
        .ok()
        .and_then(|t| match t.methods().get(method).map(|d| &d.kind) {
            Some(MethodKind::Subscribe { unsubscribe, .. }) => Some(unsubscribe.clone()),
            _ => None,
        })
        .unwrap_or_else(|| format!("{method}.unsubscribe"))
}

/// The OpenRPC document of the core table, as the value `schema/openrpc.json` holds.
pub fn emitted_document() -> Result<serde_json::Value, String> {
    let table = crate::api::core_table().map_err(|e| e.to_string())?;
    let doc = crate::rpc::openrpc::document(&table);
    let _ = TableSnapshot::build(&table).map_err(|e| e.to_string())?;
    Ok(doc)
}

/// The OpenRPC document of the core table, pretty-printed (what `schema/openrpc.json` holds).
pub fn emitted_schema() -> Result<String, String> {
    pretty(&emitted_document()?)
}

fn pretty(doc: &serde_json::Value) -> Result<String, String> {
    serde_json::to_string_pretty(doc)
        .map(|s| s + "\n")
        .map_err(|e| e.to_string())
}

/// The protocol document at `path` as it is and with its tables rendered from `openrpc`.
fn protocol_doc(
    path: &std::path::Path,
    openrpc: &serde_json::Value,
) -> Result<(String, String), String> {
    let committed = std::fs::read_to_string(path).map_err(|err| {
        format!(
            "cannot read {}: {err} (give its place with --doc PATH, or pass --no-doc to leave it out)",
            path.display()
        )
    })?;
    let rendered = crate::protocol_doc::render(&committed, openrpc)
        .map_err(|err| format!("{}: {err}", path.display()))?;
    Ok((committed, rendered))
}

fn schema(args: SchemaArgs) -> ExitCode {
    let doc = match emitted_document() {
        Ok(doc) => doc,
        Err(err) => {
            eprintln!("clawgate: {err}");
            return ExitCode::FAILURE;
        }
    };
    let emitted = match pretty(&doc) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("clawgate: {err}");
            return ExitCode::FAILURE;
        }
    };
    let protocol = if args.no_doc {
        None
    } else {
        match protocol_doc(&args.doc, &doc) {
            Ok(texts) => Some(texts),
            Err(err) => {
                eprintln!("clawgate: {err}");
                return ExitCode::FAILURE;
            }
        }
    };
    if args.check {
        let mut current = true;
        let committed = std::fs::read_to_string(&args.out).unwrap_or_default();
        match crate::rpc::openrpc::check(&committed, &emitted) {
            Ok(()) => println!("{} is current", args.out.display()),
            Err(err) => {
                eprintln!("clawgate: {err}");
                current = false;
            }
        }
        if let Some((committed, rendered)) = &protocol {
            let stale = crate::protocol_doc::stale_regions(committed, rendered);
            if stale.is_empty() {
                println!("the tables of {} are current", args.doc.display());
            } else {
                let fix = if args.doc.as_os_str() == crate::protocol_doc::DEFAULT_PATH {
                    "clawgate schema".to_string()
                } else {
                    format!("clawgate schema --doc {}", args.doc.display())
                };
                let (tables, differ) = if stale.len() == 1 {
                    ("table", "differs")
                } else {
                    ("tables", "differ")
                };
                eprintln!(
                    "clawgate: the {} {tables} of {} {differ} from what the code emits: run `{fix}` and commit the result",
                    stale.join(" and "),
                    args.doc.display()
                );
                current = false;
            }
        }
        return if current {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    if let Some(parent) = args.out.parent()
        && !parent.as_os_str().is_empty()
        && let Err(err) = std::fs::create_dir_all(parent)
    {
        eprintln!("clawgate: cannot create {}: {err}", parent.display());
        return ExitCode::FAILURE;
    }
    if let Err(err) = std::fs::write(&args.out, emitted) {
        eprintln!("clawgate: cannot write {}: {err}", args.out.display());
        return ExitCode::FAILURE;
    }
    println!("wrote {}", args.out.display());
    if let Some((committed, rendered)) = protocol {
        if committed == rendered {
            println!("the tables of {} are current", args.doc.display());
        } else if let Err(err) = std::fs::write(&args.doc, rendered) {
            eprintln!("clawgate: cannot write {}: {err}", args.doc.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote the tables of {}", args.doc.display());
        }
    }
    ExitCode::SUCCESS
}
