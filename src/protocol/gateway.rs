//! Wire types of the `gateway.*` methods (hello, health, status, presence) and the
//! `presence` event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who a client says it is (`gateway.hello`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "ClientInfo")]
pub struct ClientInfo {
    /// The client's name, e.g. `clawgate-cli`.
    #[schemars(length(min = 1, max = 128))]
    pub name: String,
    /// The client's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub version: Option<String>,
    /// The platform the client runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub platform: Option<String>,
    /// The client's mode (`cli`, `ui`, `node`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub mode: Option<String>,
}

/// Params of `gateway.hello`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "HelloParams")]
pub struct HelloParams {
    /// Names the client in presence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientInfo>,
}

/// The server part of a hello result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ServerInfo")]
pub struct ServerInfo {
    /// Always `clawgate`.
    pub name: String,
    /// The gateway's version.
    pub version: String,
    /// The id of this connection.
    pub conn_id: String,
}

/// Limits and cadences a client should know.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "Policy")]
pub struct Policy {
    /// Largest request or response, in bytes.
    pub max_payload_bytes: u64,
    /// Most entries in one batch.
    pub max_batch: u64,
    /// Interval of `tick` events.
    pub tick_interval_ms: u64,
    /// How many events the replay buffer keeps.
    pub event_replay_capacity: u64,
    /// How many notifications may wait for one connection before events are dropped for it.
    pub subscriber_queue: u64,
}

/// One connected WebSocket client.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "PresenceEntry")]
pub struct PresenceEntry {
    /// The connection's id.
    pub conn_id: String,
    /// What the client said about itself in `gateway.hello`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientInfo>,
    /// The peer address.
    pub remote_addr: String,
    /// When the connection opened (ms since the epoch).
    pub connected_at: u64,
    /// When the connection last sent a message (ms since the epoch).
    pub last_activity_at: u64,
    /// Cluster mode: the node the connection is open on; absent for one process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

/// The gateway's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "Health")]
pub struct Health {
    /// Always `true` while the gateway answers.
    pub ok: bool,
    /// The gateway's version.
    pub version: String,
    /// Time since start.
    pub uptime_ms: u64,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Sessions in the store.
    pub sessions: u64,
    /// Runs in progress.
    pub active_runs: u64,
}

/// What a client needs to resume events.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "HelloSnapshot")]
pub struct HelloSnapshot {
    /// This process lifetime's epoch.
    pub epoch: String,
    /// The latest event `seq` published.
    pub seq: u64,
    /// Who is connected.
    pub presence: Vec<PresenceEntry>,
    /// The gateway's health.
    pub health: Health,
}

/// Result of `gateway.hello`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "HelloResult")]
pub struct HelloResult {
    /// Protocol version: 2 (version 1 plus every version-2 section up to "Standard doors").
    pub protocol: u32,
    /// The server.
    pub server: ServerInfo,
    /// Every callable method, plugin methods included.
    pub methods: Vec<String>,
    /// Every event name.
    pub events: Vec<String>,
    /// What this gateway has switched on (`"agents"`, `"approvals"`, `"mcp"` when an MCP
    /// server is enabled, `"tls"`, `"metrics"`, `"openai"`, `"a2a"`, `"hooks"`, `"cron"`,
    /// ...); an open list: a client must accept names it does not know.
    #[serde(default)]
    pub features: Vec<String>,
    /// Limits.
    pub policy: Policy,
    /// State to resume from.
    pub snapshot: HelloSnapshot,
}

/// A provider and model in `gateway.status`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ProviderInfo")]
pub struct ProviderInfo {
    /// `echo`, `anthropic` or `openai`.
    pub name: String,
    /// The model used by default.
    pub model: String,
}

/// A plugin's name and state in `gateway.status`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "PluginStatus")]
pub struct PluginStatus {
    /// The plugin's name.
    pub name: String,
    /// `starting`, `running`, `restarting`, `failed` or `stopped`.
    pub state: String,
}

/// Result of `gateway.status`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "StatusResult")]
pub struct StatusResult {
    /// The gateway's version.
    pub version: String,
    /// Time since start.
    pub uptime_ms: u64,
    /// The address bound.
    pub bind: String,
    /// The port bound.
    pub port: u16,
    /// The data directory.
    pub data_dir: String,
    /// The configuration file (it may not exist).
    pub config_path: String,
    /// The model provider.
    pub provider: ProviderInfo,
    /// Plugins and their states.
    pub plugins: Vec<PluginStatus>,
    /// Config keys changed on disk that take effect at the next restart.
    pub pending_restart: Vec<String>,
    /// The failed-login throttle (also `clawgate_auth_failures_total` and
    /// `clawgate_auth_lockouts` in `/metrics`).
    pub auth: AuthStatus,
    /// The TLS certificate served; absent without TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
    /// Cluster mode: this node and the others alive; absent for one process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// `gateway.status.cluster`: the nodes of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ClusterStatus")]
pub struct ClusterStatus {
    /// This node's id.
    pub node_id: String,
    /// Every node alive, this one included, by node id.
    pub nodes: Vec<ClusterNodeStatus>,
    /// The NATS server(s), credentials redacted.
    pub nats_url: String,
}

/// One node in `gateway.status.cluster.nodes`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ClusterNodeStatus")]
pub struct ClusterNodeStatus {
    /// The node's id.
    pub node_id: String,
    /// The address its gateway listens on.
    pub addr: String,
    /// The sessions it owns.
    pub sessions_owned: u64,
}

/// The failed-login throttle in `gateway.status`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "AuthStatus")]
pub struct AuthStatus {
    /// Failed authentications since start (a refused token, or none where one is needed).
    pub failures_total: u64,
    /// Client addresses locked out now (`gateway.auth.max_failures`).
    pub lockouts: u64,
}

/// `gateway.status.tls`: the certificate the gateway serves.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "TlsStatus")]
pub struct TlsStatus {
    /// SHA-256 of the DER leaf certificate, lowercase hex (what `clawgate call --fingerprint`
    /// and the SDKs' `tlsFingerprint` pin).
    pub fingerprint_sha256: String,
}

/// Result of `gateway.presence`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "PresenceResult")]
pub struct PresenceResult {
    /// Connected clients.
    pub entries: Vec<PresenceEntry>,
}

/// Joined or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "PresenceState")]
pub enum PresenceState {
    /// A connection opened.
    Joined,
    /// A connection closed.
    Left,
}

/// Payload of `presence`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "PresenceEvent")]
pub struct PresenceEvent {
    /// The connection.
    pub conn_id: String,
    /// Joined or left.
    pub state: PresenceState,
    /// What the client said about itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientInfo>,
    /// Cluster mode: the node the connection is (or was) open on; absent for one process. A
    /// connection id is unique on its node only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}
