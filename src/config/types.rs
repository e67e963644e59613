//! The typed configuration: every key, its type, its default.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::protocol::Scope;

/// The whole configuration. Keys are snake_case; unknown keys are refused.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The server: address, limits, authentication.
    pub gateway: GatewayConfig,
    /// The event hub.
    pub events: EventsConfig,
    /// The agents by id (`a-z 0-9 -`, 1 to 32 characters), each with its own provider, model,
    /// workspace, limits and tools; `main` always exists. Version 1's `[agent]` is an alias of
    /// `[agents.<gateway.default_agent>]`.
    pub agents: BTreeMap<String, AgentConfig>,
    /// Out-of-process plugins.
    pub plugins: Vec<PluginConfig>,
    /// MCP servers whose tools the agents may call, by name (`[mcp_servers.<name>]`).
    pub mcp_servers: BTreeMap<String, McpServerConfig>,
    /// `GET /metrics`.
    pub metrics: MetricsConfig,
    /// What each model costs, by model name (`[prices."<model>"]`): the usage ledger prices
    /// each model call with it when the call is recorded.
    pub prices: BTreeMap<String, PriceConfig>,
    /// Announcing the gateway on the local network (mDNS).
    pub discovery: DiscoveryConfig,
    /// The standard doors on the port: OpenAI-compatible `/v1` and A2A.
    pub http: HttpConfig,
    /// Scheduled runs declared here, by name (`[cron.<name>]`, `a-z 0-9 -`, 1 to 32
    /// characters); beside the jobs `cron.add` keeps in `<dataDir>/cron.json`.
    pub cron: BTreeMap<String, CronJobConfig>,
    /// Named incoming webhooks (`[hooks.<name>]`): each adds `POST /hooks/<name>`, verified
    /// by an HMAC-SHA256 signature of its body instead of a token.
    pub hooks: BTreeMap<String, HookConfig>,
    /// Outgoing webhooks (`[webhooks.<name>]`): matching events are POSTed, signed, to a URL.
    pub webhooks: BTreeMap<String, WebhookConfig>,
    /// Cluster mode (`[cluster]`): this gateway is one node of several sharing everything
    /// through NATS JetStream. Absent: one process, and no NATS client is started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            gateway: GatewayConfig::default(),
            events: EventsConfig::default(),
            agents: BTreeMap::from([(DEFAULT_AGENT.to_string(), AgentConfig::default())]),
            plugins: Vec::new(),
            mcp_servers: BTreeMap::new(),
            metrics: MetricsConfig::default(),
            prices: BTreeMap::new(),
            discovery: DiscoveryConfig::default(),
            http: HttpConfig::default(),
            cron: BTreeMap::new(),
            hooks: BTreeMap::new(),
            webhooks: BTreeMap::new(),
            cluster: None,
        }
    }
}

/// `[cluster]`: one node of a cluster on NATS JetStream (server 2.10 or later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS server(s), `nats://host:port` (several separated by commas); credentials in it
    /// (`nats://user:pass@host`) are redacted in `config.get`.
    pub nats_url: String,
    /// This node's id (`A-Z a-z 0-9 - _`, 1 to 64 characters); default the host name plus a
    /// random suffix, new at each start.
    #[serde(default)]
    pub node_id: Option<String>,
    /// JetStream replicas of every stream and bucket (1 to 5; at most the servers there are).
    #[serde(default = "cluster_replicas")]
    pub replicas: usize,
    /// Where the event stream is kept by the servers: `file` or `memory`.
    #[serde(default)]
    pub events_storage: ClusterStorage,
    /// How long a node's session leases last without renewal, in ms (at least 1000): the
    /// time after which another node takes over the sessions of a node that died.
    #[serde(default = "cluster_lease_ms")]
    pub lease_ms: u64,
    /// A NATS credentials file (JWT and NKey seed) to connect with.
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// CA certificate (PEM) that signs the NATS servers' certificates (`tls://` URLs).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS servers that verify clients; with `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

fn cluster_replicas() -> usize {
    1
}

fn cluster_lease_ms() -> u64 {
    10_000
}

/// Where JetStream keeps a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterStorage {
    /// On the servers' disks: survives a server restart.
    #[default]
    File,
    /// In the servers' memory: faster, lost when every replica restarts.
    Memory,
}

/// `[cron.<name>]`: a scheduled run. Exactly one of `cron` (with `tz`), `every_ms` or `at`.
/// `cron.update` and `cron.remove` refuse it: it changes here.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CronJobConfig {
    /// A 5-field cron expression (`minute hour day-of-month month day-of-week`).
    pub cron: Option<String>,
    /// The IANA time zone of `cron` (default `UTC`).
    pub tz: Option<String>,
    /// Every this many ms (at least 1000), counted from the previous scheduled time.
    pub every_ms: Option<u64>,
    /// Once, at this time (ms since the epoch).
    pub at: Option<u64>,
    /// The user message each firing sends.
    pub message: String,
    /// The session (default `cron:<name>`).
    pub session_key: Option<String>,
    /// The agent (default: the session's, else `gateway.default_agent`).
    pub agent: Option<String>,
    /// Whether it fires.
    pub enabled: bool,
    /// `one` (default): a time that passed while the gateway was down runs once at startup;
    /// `none`: it does not.
    pub catch_up: crate::protocol::CronCatchUp,
}

impl Default for CronJobConfig {
    fn default() -> Self {
        Self {
            cron: None,
            tz: None,
            every_ms: None,
            at: None,
            message: String::new(),
            session_key: None,
            agent: None,
            enabled: true,
            catch_up: crate::protocol::CronCatchUp::One,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Records the Prometheus metrics served at `GET /metrics` (read at start). Off, nothing is
    /// recorded and `/metrics` answers 404.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// `[http]`: the standard doors on the gateway's port.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `GET /v1/models` and `POST /v1/chat/completions`.
    pub openai: OpenAiDoorConfig,
    /// A2A 1.0: agent cards and the JSON-RPC binding at `/a2a/<agentId>`.
    pub a2a: A2aDoorConfig,
}

/// `[http.openai]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct OpenAiDoorConfig {
    /// Serves the OpenAI-compatible endpoints (off by default).
    pub enabled: bool,
}

/// `[http.a2a]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct A2aDoorConfig {
    /// Serves the agent cards and the A2A JSON-RPC binding (off by default).
    pub enabled: bool,
    /// The base URL the cards announce (default: the scheme and `Host` of the request that
    /// fetched the card), e.g. `https://gw.example.net`.
    pub public_url: Option<String>,
}

/// `[discovery]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Whether `_clawgate._tcp.local.` is announced: `auto` (for a `lan` bind or an explicit
    /// non-loopback address, not for loopback or `tailnet`), `on` or `off`.
    pub mdns: MdnsMode,
    /// The announced instance name (default: the host name).
    pub name: Option<String>,
}

/// `discovery.mdns`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MdnsMode {
    /// On for `lan` binds and explicit non-loopback addresses; off for loopback and `tailnet`.
    #[default]
    Auto,
    /// Always announced.
    On,
    /// Never announced.
    Off,
}

/// The id of the agent that always exists, and the default of `gateway.default_agent`.
pub const DEFAULT_AGENT: &str = "main";

/// Stands in for a missing default agent (a validated configuration always has it).
static BUILT_IN_AGENT: std::sync::LazyLock<AgentConfig> =
    std::sync::LazyLock::new(AgentConfig::default);

impl Config {
    /// The agent `id`, if configured.
    pub fn agent(&self, id: &str) -> Option<&AgentConfig> {
        self.agents.get(id)
    }

    /// The id of the default agent (`gateway.default_agent`).
    pub fn default_agent_id(&self) -> &str {
        &self.gateway.default_agent
    }

    /// The default agent's configuration, to change (added with the built-in defaults if missing).
    pub fn default_agent_mut(&mut self) -> &mut AgentConfig {
        self.agents
            .entry(self.gateway.default_agent.clone())
            .or_default()
    }

    /// The default agent's configuration.
    pub fn default_agent(&self) -> &AgentConfig {
        self.agents
            .get(&self.gateway.default_agent)
            .or_else(|| self.agents.get(DEFAULT_AGENT))
            .unwrap_or(&BUILT_IN_AGENT)
    }
}

/// `[gateway]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Address to bind: an IP address, `localhost`/`loopback` (127.0.0.1), `lan` (the IPv4
    /// address of the interface holding the default route) or `tailnet` (the 100.64.0.0/10
    /// address of a `tailscale*` interface); anything but loopback needs token auth.
    pub bind: String,
    /// How long a start waits for the address `lan` or `tailnet` names to appear, in ms
    /// (0: not at all); then it stops, naming what it looked for.
    pub bind_wait_ms: u64,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Most simultaneous connections; past it a new connection gets HTTP 429.
    pub max_connections: usize,
    /// Browser origins allowed besides the gateway's own (`http://host:port`).
    pub allowed_origins: Vec<String>,
    /// Authentication.
    pub auth: AuthConfig,
    /// Interval of `tick` events, in ms.
    pub tick_interval_ms: u64,
    /// Most entries in one batch.
    pub max_batch: usize,
    /// Largest request or response, in bytes.
    pub max_payload_bytes: usize,
    /// Interval of WebSocket pings, in ms.
    pub ping_interval_ms: u64,
    /// A WebSocket peer silent (no pong, no message) for this long is dropped, in ms.
    pub ping_timeout_ms: u64,
    /// Most subscriptions on one connection.
    pub max_subscriptions_per_connection: usize,
    /// Most calls of one connection running at once; more wait (the socket is not read meanwhile).
    pub max_in_flight_per_connection: usize,
    /// Kernel send buffer per connection, in bytes (0: the OS default, which may grow to MiBs).
    pub send_buffer_bytes: usize,
    /// Bytes of answers and notifications that may wait for one WebSocket connection's writer;
    /// past it events are dropped for it (announced by `gap`) and answers wait, and a peer that
    /// stops reading is dropped after `ping_timeout_ms`. One message larger than this is queued
    /// alone.
    pub max_queued_bytes: usize,
    /// A request body must arrive within this many ms of its headers (a trickled body would
    /// otherwise hold its connection forever).
    pub body_timeout_ms: u64,
    /// Proxies whose `X-Forwarded-For` names the client (for the failed-login throttle).
    pub trusted_proxies: Vec<IpAddr>,
    /// The agent of sessions created without naming one (it must be configured).
    pub default_agent: String,
    /// TLS on the gateway's port (then it speaks `https://` and `wss://` only).
    pub tls: TlsConfig,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1".into(),
            bind_wait_ms: 0,
            port: 18789,
            max_connections: 1024,
            allowed_origins: Vec::new(),
            auth: AuthConfig::default(),
            tick_interval_ms: 30_000,
            max_batch: 64,
            max_payload_bytes: 4 * 1024 * 1024,
            ping_interval_ms: 30_000,
            ping_timeout_ms: 90_000,
            max_subscriptions_per_connection: 64,
            max_in_flight_per_connection: 16,
            send_buffer_bytes: 128 * 1024,
            max_queued_bytes: 4 * 1024 * 1024,
            body_timeout_ms: 30_000,
            trusted_proxies: Vec::new(),
            default_agent: DEFAULT_AGENT.into(),
            tls: TlsConfig::default(),
        }
    }
}

/// `[gateway.tls]`: `cert` and `key`, or `self_signed = true`; none of them, no TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain (PEM, the leaf first), absolute or relative to the data directory;
    /// reloaded when the file changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM), absolute or relative to the data directory;
    /// reloaded when the file changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Serve a certificate made once into `<dataDir>/tls/` (and reused after).
    pub self_signed: bool,
}

impl TlsConfig {
    /// Whether TLS is on.
    pub fn enabled(&self) -> bool {
        self.self_signed || self.cert.is_some() || self.key.is_some()
    }

    /// The certificate and key files configured, resolved against `data_dir`.
    pub fn files(&self, data_dir: &std::path::Path) -> Option<(PathBuf, PathBuf)> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((data_dir.join(cert), data_dir.join(key))),
            _ => None,
        }
    }
}

/// `gateway.auth.mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No credentials; only on a loopback address; every caller is `admin`.
    #[default]
    None,
    /// A bearer token is required.
    Token,
}

impl AuthMode {
    /// The mode's config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Token => "token",
        }
    }
}

/// `[gateway.auth]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `none` or `token`.
    pub mode: AuthMode,
    /// Accepted tokens.
    pub tokens: Vec<TokenConfig>,
    /// Failed logins an address may make within `failure_window_ms` before it is locked out.
    pub max_failures: u32,
    /// The window failed logins are counted in, in ms.
    pub failure_window_ms: u64,
    /// How long a locked-out address gets HTTP 429, in ms.
    pub lockout_ms: u64,
    /// Whether loopback addresses are throttled too (they are exempt by default).
    pub throttle_loopback: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            tokens: Vec::new(),
            max_failures: 10,
            failure_window_ms: 60_000,
            lockout_ms: 300_000,
            throttle_loopback: false,
        }
    }
}

/// `[[gateway.auth.tokens]]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and presence.
    pub name: String,
    /// The secret.
    pub token: String,
    /// Scopes granted: `read`, `write`, `admin` (each includes the ones before it).
    pub scopes: Vec<Scope>,
}

/// `[events]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events kept for replay.
    pub replay_capacity: usize,
    /// Bytes the replay buffer may hold at most (older events are evicted first).
    pub replay_max_bytes: usize,
    /// Notifications that may wait for one connection before events are dropped for it.
    pub subscriber_queue: usize,
    /// Bytes of events that may wait for one subscriber before events are dropped for it
    /// (at least one event always fits).
    pub subscriber_queue_bytes: usize,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            replay_capacity: 4096,
            replay_max_bytes: 64 * 1024 * 1024,
            subscriber_queue: 256,
            subscriber_queue_bytes: 4 * 1024 * 1024,
        }
    }
}

/// `agent.provider`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// The offline, deterministic stand-in.
    #[default]
    Echo,
    /// Anthropic Messages API.
    Anthropic,
    /// Any OpenAI-compatible Chat Completions server.
    Openai,
}

impl ProviderKind {
    /// The provider's config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Echo => "echo",
            Self::Anthropic => "anthropic",
            Self::Openai => "openai",
        }
    }
}

/// `agent.tools.exec`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecMode {
    /// The `exec` tool is refused.
    #[default]
    Off,
    /// Each `exec` call waits for a person's approval.
    Ask,
    /// The `exec` tool runs commands in the workspace.
    On,
}

/// `[agent.tools]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    /// Whether the `exec` tool may run: `off`, `ask` (each call waits for a person) or `on`.
    pub exec: ExecMode,
    /// Globs over tool names (`*` any run of characters) never offered to the model; deny
    /// wins over ask.
    pub deny: Vec<String>,
    /// Globs over tool names whose every call waits for a person's approval.
    pub ask: Vec<String>,
    /// How long a call waits for a person before it is denied, in ms.
    pub approval_timeout_ms: u64,
    /// The token names that may resolve this agent's approvals (default: any token with
    /// `write`; in auth mode `none` the resolver is `local`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Vec<String>>,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            exec: ExecMode::Off,
            deny: Vec::new(),
            ask: Vec::new(),
            approval_timeout_ms: 600_000,
            approvers: None,
        }
    }
}

/// `agents.<id>.on_restart`: what a restart does to a run it interrupted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnRestart {
    /// Shutdown suspends the run; the next start resumes it, once.
    #[default]
    Resume,
    /// The run ends `error {kind: "interrupted"}`.
    Fail,
}

/// `[agents.<id>]` (version 1: `[agent]`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// `echo` (offline), `anthropic` or `openai`.
    pub provider: ProviderKind,
    /// The default model.
    pub model: String,
    /// The provider's base URL (defaults to the official one).
    pub base_url: Option<String>,
    /// Environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// Deltas are coalesced over this interval, in ms.
    pub delta_interval_ms: u64,
    /// The agent's instructions: the start of every model call's system prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Workspace-relative files appended to the system prompt when they exist, each under a
    /// `# <path>` heading, read at the start of every run.
    pub instructions_files: Vec<String>,
    /// The MCP servers whose tools this agent is offered (default: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<Vec<String>>,
    /// The context window and its compaction.
    pub context: ContextConfig,
    /// Model calls per run at most.
    pub max_turns: u32,
    /// Output tokens per model call at most.
    pub max_output_tokens: u32,
    /// A provider stream silent this long fails, in ms.
    pub idle_timeout_ms: u64,
    /// A run longer than this fails, in ms.
    pub run_timeout_ms: u64,
    /// The directory the file tools are confined to (default `<dataDir>/workspace`).
    pub workspace: Option<PathBuf>,
    /// Tool settings.
    pub tools: ToolsConfig,
    /// What a gateway restart does to a run in progress.
    pub on_restart: OnRestart,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            provider: ProviderKind::Echo,
            model: "echo".into(),
            base_url: None,
            api_key_env: None,
            delta_interval_ms: 50,
            instructions: None,
            instructions_files: vec!["AGENTS.md".into()],
            mcp_servers: None,
            context: ContextConfig::default(),
            max_turns: 20,
            max_output_tokens: 4096,
            idle_timeout_ms: 60_000,
            run_timeout_ms: 600_000,
            workspace: None,
            tools: ToolsConfig::default(),
            on_restart: OnRestart::Resume,
        }
    }
}

/// `[agents.<id>.context]`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ContextConfig {
    /// The model's context window, in tokens.
    pub max_tokens: u64,
    /// The share of `max_tokens` past which the context is compacted before a model call.
    pub compact_threshold: f64,
    /// Messages always kept verbatim by a compaction (the newest).
    pub keep_messages: usize,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            max_tokens: 100_000,
            compact_threshold: 0.8,
            keep_messages: 10,
        }
    }
}

/// `[[plugins]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// The plugin's name, also its method namespace.
    pub name: String,
    /// The executable and its arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// Extra environment for the process.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Whether the plugin runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long a forwarded call may take before the plugin counts as hung and is restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_ms: Option<u64>,
}

fn yes() -> bool {
    true
}

/// The default `timeout_ms` of an MCP server: a minute per tool call.
pub const MCP_DEFAULT_TIMEOUT_MS: u64 = 60_000;

/// `[mcp_servers.<name>]`: an MCP server offering tools, reached over stdio (`command`) or
/// streamable HTTP (`url`), exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// The executable and its arguments (stdio). Its environment is only `PATH`, `HOME`,
    /// `LANG`, `TMPDIR` and `env`, never the gateway's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The server's endpoint, `http://` or `https://` (streamable HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Extra environment for a stdio server (values are secrets: `config.get` redacts them).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra HTTP headers for an HTTP server (values are secrets: `config.get` redacts them).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Whether the server runs.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long one tool call may take before it fails and the server counts as hung (and is
    /// restarted), in ms.
    #[serde(default = "mcp_timeout_ms")]
    pub timeout_ms: u64,
}

fn mcp_timeout_ms() -> u64 {
    MCP_DEFAULT_TIMEOUT_MS
}

/// `[prices."<model>"]`: USD per million tokens of each kind (finite, at least 0). A call that
/// used a kind of token whose rate is missing is not priced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Input tokens (cache reads and writes not included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_per_mtok: Option<f64>,
    /// Output tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_per_mtok: Option<f64>,
    /// Input tokens read from the provider's prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_mtok: Option<f64>,
    /// Input tokens written to the provider's prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok: Option<f64>,
}

/// `[hooks.<name>]`: `POST /hooks/<name>` starts a run with a message made from the request's
/// JSON body; the request is verified by an HMAC-SHA256 signature of its raw body with
/// `secret` (`x-clawgate-signature: sha256=<hex>`, or GitHub's `X-Hub-Signature-256`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The shared secret the sender signs with (`config.get` redacts it).
    pub secret: String,
    /// The message template: `{{body.a.b}}` is the value at that path of the JSON body (a
    /// string as it is, anything else as JSON, a missing path or `null` as nothing; an array
    /// index is a number: `{{body.commits.0.id}}`), `{{body}}` the whole body.
    pub message: String,
    /// The session the runs go to (default `hook:<name>`).
    #[serde(default, alias = "sessionKey", skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// The agent of the session it creates (default `gateway.default_agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// What a delivery does while a run of the session is active (`queue`, `steer`,
    /// `interrupt`, `reject`: answered 409).
    #[serde(default)]
    pub mode: crate::protocol::SendMode,
}

/// The default `max_attempts` of an outgoing webhook.
pub const WEBHOOK_DEFAULT_ATTEMPTS: u32 = 8;

/// `[webhooks.<name>]`: each event matching `events` is POSTed to `url`, one delivery at a
/// time and in order, signed with `secret`, retried with exponential backoff and jitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where the envelopes go, `http://` or `https://`.
    pub url: String,
    /// Event names, `prefix.*` patterns and `chat.<state>` names, as in `events.subscribe`
    /// (`*` is every event). `chat` deltas go out only when `chat.delta` is named.
    pub events: Vec<String>,
    /// The key of the signature header `x-clawgate-signature: sha256=<hex HMAC-SHA256 of
    /// "<timestamp>.<body>">` (`config.get` redacts it).
    pub secret: String,
    /// Attempts per delivery (a non-2xx answer or no answer is a failed attempt) before it is
    /// given up and the next one goes.
    #[serde(default = "webhook_attempts")]
    pub max_attempts: u32,
    /// The wait before the first retry, in ms; it doubles at each retry (at most 5 minutes),
    /// with up to 50% random jitter added.
    #[serde(default = "webhook_backoff_ms")]
    pub backoff_ms: u64,
    /// How long one attempt may take, in ms.
    #[serde(default = "webhook_timeout_ms")]
    pub timeout_ms: u64,
}

fn webhook_attempts() -> u32 {
    WEBHOOK_DEFAULT_ATTEMPTS
}

fn webhook_backoff_ms() -> u64 {
    1_000
}

fn webhook_timeout_ms() -> u64 {
    10_000
}

/// Whether `id` is a valid `cluster.node_id`: 1 to 64 ASCII letters, digits, `-` or `_` (it is
/// part of NATS subjects and bucket keys).
pub fn is_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `url` (one or several, comma-separated) with the credentials of each (`user:pass@`,
/// `token@`) replaced by [`REDACTED`].
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let one = one.trim();
            let (scheme, rest) = one.split_once("://").unwrap_or(("", one));
            match rest.rsplit_once('@') {
                Some((_, host)) if scheme.is_empty() => format!("{REDACTED}@{host}"),
                Some((_, host)) => format!("{scheme}://{REDACTED}@{host}"),
                None => one.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The placeholder that stands for a secret in `config.get`.
pub const REDACTED: &str = "<redacted>";
