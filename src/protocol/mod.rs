//! Wire types of the protocol (params, results, event payloads): serde + schemars, no logic.
//!
//! These types are the one source of `schema/openrpc.json`. Field names follow docs/PROTOCOL.md
//! (camelCase on the wire); params reject unknown fields so a typo never falls back to a default.

mod events;
mod schema;
mod scope;

pub use events::{Event, EventVisitor, core_events};
pub use schema::schema_settings;
pub use scope::Scope;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Params of a method that takes none: `{}` or absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "NoParams")]
pub struct NoParams {}

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
    /// Protocol version, 1.
    pub protocol: u32,
    /// The server.
    pub server: ServerInfo,
    /// Every callable method, plugin methods included.
    pub methods: Vec<String>,
    /// Every event name.
    pub events: Vec<String>,
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
}

/// Result of `gateway.presence`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "PresenceResult")]
pub struct PresenceResult {
    /// Connected clients.
    pub entries: Vec<PresenceEntry>,
}

/// Params of `events.subscribe`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "SubscribeParams")]
pub struct SubscribeParams {
    /// Exact event names or prefixes ending in `.*`; absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// Keep only envelopes carrying this session key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// Replay buffered events with a greater `seq` first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
    /// The epoch `afterSeq` belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// Params of an unsubscribe method: `[subscriptionId]` or `{subscription}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "UnsubscribeParams")]
pub struct UnsubscribeParams {
    /// The id the subscribe call returned.
    pub subscription: String,
}

/// An event as subscribers receive it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "EventEnvelope")]
pub struct EventEnvelope {
    /// This process lifetime's epoch.
    pub epoch: String,
    /// Gateway-wide sequence number (control events carry the latest one).
    pub seq: u64,
    /// The event's name.
    pub event: String,
    /// When it was published (ms since the epoch).
    pub ts: u64,
    /// The session the event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// The event's payload.
    pub payload: serde_json::Value,
}

/// Payload of `tick`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "TickEvent")]
pub struct TickEvent {
    /// Now (ms since the epoch).
    pub ts: u64,
}

/// Why events may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "GapReason")]
pub enum GapReason {
    /// The subscriber fell behind and events were dropped for it.
    Lagged,
    /// The replay buffer no longer reaches back to `afterSeq`.
    Expired,
    /// The gateway restarted since the client's epoch.
    Restart,
}

/// Payload of `gap`: events in `fromSeq..=toSeq` that matched the filter may be missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "GapEvent")]
pub struct GapEvent {
    /// First seq that may be missing.
    pub from_seq: u64,
    /// Last seq that may be missing.
    pub to_seq: u64,
    /// Why.
    pub reason: GapReason,
}

/// Payload of `shutdown`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ShutdownEvent")]
pub struct ShutdownEvent {
    /// Why the gateway stops.
    pub reason: String,
    /// When it expects to be back, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_expected_ms: Option<u64>,
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
}

/// Checks a session key: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
pub fn validate_session_key(key: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if key.is_empty() || key.len() > 128 || !key.chars().all(ok_char) {
        return Err("expected 1 to 128 characters of A-Z a-z 0-9 . _ : -".into());
    }
    Ok(())
}

/// A session as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "Session")]
pub struct Session {
    /// The session key.
    pub key: String,
    /// The id of the current transcript (changes on reset).
    pub session_id: String,
    /// A human label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The model this session uses instead of the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// When the transcript was created.
    pub created_at: u64,
    /// When the session last changed.
    pub updated_at: u64,
    /// Messages in the transcript.
    pub message_count: u64,
    /// The start of the last message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message_preview: Option<String>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "Role")]
pub enum Role {
    /// The person.
    User,
    /// The model.
    Assistant,
    /// Instructions.
    System,
    /// A tool's result.
    Tool,
}

/// A tool call made by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ToolCall")]
pub struct ToolCall {
    /// The call's id, matched by the tool message's `toolCallId`.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments.
    pub input: serde_json::Value,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "Usage")]
pub struct Usage {
    /// Tokens read.
    pub input_tokens: u64,
    /// Tokens written.
    pub output_tokens: u64,
}

/// An error recorded on a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "MessageError")]
pub struct MessageError {
    /// `auth`, `rate_limited`, `timeout`, `context_length`, `stream_cut`, `upstream`, `internal`.
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// One message of a transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "TranscriptMessage")]
pub struct TranscriptMessage {
    /// The message's id.
    pub id: String,
    /// The previous message's id, `null` for the first.
    pub parent_id: Option<String>,
    /// When it was written.
    pub ts: u64,
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// Tool calls of an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// The call a tool message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Whether a tool result is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// The run that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The idempotency key of the send that started the run (on the user message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The model that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Tokens of the turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Why the model stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// The run was aborted while writing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<bool>,
    /// The run failed while writing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MessageError>,
    /// A label given at injection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A value that may be absent, `null` (clear it), or set (for patches).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Patch<T> {
    /// Not in the params: leave unchanged.
    #[default]
    Keep,
    /// `null`: clear.
    Clear,
    /// A new value.
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Patch::Clear,
            Some(v) => Patch::Set(v),
        })
    }
}

impl<T: Serialize> Serialize for Patch<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Patch::Set(v) => v.serialize(s),
            _ => s.serialize_none(),
        }
    }
}

impl<T: JsonSchema> JsonSchema for Patch<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Nullable_{}", T::schema_name()).into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        <Option<T>>::json_schema(generator)
    }
    fn inline_schema() -> bool {
        true
    }
}

/// Params of `sessions.list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "SessionsListParams")]
pub struct SessionsListParams {
    /// Page size, 1..1000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
    /// From a previous page's `nextCursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Case-insensitive substring of key or label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
}

/// Result of `sessions.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "SessionsListResult")]
pub struct SessionsListResult {
    /// Most recently updated first.
    pub sessions: Vec<Session>,
    /// Pass it as `cursor` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// How many sessions match in all.
    pub total: u64,
}

/// Params naming one session.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "SessionKeyParams")]
pub struct SessionKeyParams {
    /// The session key.
    pub key: String,
}

/// Params of `sessions.create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "SessionsCreateParams")]
pub struct SessionsCreateParams {
    /// The key; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A label (at most 128 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// A model for this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Params of `sessions.patch`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "SessionsPatchParams")]
pub struct SessionsPatchParams {
    /// The session key.
    pub key: String,
    /// A new label, or `null` to clear it.
    #[serde(default)]
    pub label: Patch<String>,
    /// A new model, or `null` to clear it.
    #[serde(default)]
    pub model: Patch<String>,
}

/// Result of `sessions.delete`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "DeletedResult")]
pub struct DeletedResult {
    /// Always `true`.
    pub deleted: bool,
}

/// Params of `sessions.fork`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "SessionsForkParams")]
pub struct SessionsForkParams {
    /// The session to fork.
    pub key: String,
    /// The new session's key; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_key: Option<String>,
    /// The last message to copy (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_message_id: Option<String>,
}

/// Params of `chat.history`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "ChatHistoryParams")]
pub struct ChatHistoryParams {
    /// The session key.
    pub session_key: String,
    /// How many messages, 1..1000 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub limit: Option<u32>,
    /// Only messages older than this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_id: Option<String>,
}

/// Result of `chat.history`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ChatHistoryResult")]
pub struct ChatHistoryResult {
    /// The session key.
    pub session_key: String,
    /// The transcript's id.
    pub session_id: String,
    /// Oldest first.
    pub messages: Vec<TranscriptMessage>,
    /// Older messages exist.
    pub has_more: bool,
}

/// Who an injected message is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "InjectRole")]
pub enum InjectRole {
    /// As if the model said it.
    Assistant,
    /// An instruction.
    System,
}

/// Params of `chat.inject`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "ChatInjectParams")]
pub struct ChatInjectParams {
    /// The session key (created if missing).
    pub session_key: String,
    /// `assistant` or `system`.
    pub role: InjectRole,
    /// The text, at most 1 MiB.
    pub content: String,
    /// A label, at most 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Result of `chat.inject`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ChatInjectResult")]
pub struct ChatInjectResult {
    /// The new message's id.
    pub message_id: String,
}

/// Why a session changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "SessionChangeReason")]
pub enum SessionChangeReason {
    /// It was created.
    Created,
    /// Its metadata or transcript changed.
    Updated,
    /// It was reset to a new transcript.
    Reset,
    /// It was deleted.
    Deleted,
    /// It was created as a fork.
    Forked,
}

/// Payload of `sessions.changed`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "SessionsChangedEvent")]
pub struct SessionsChangedEvent {
    /// The session.
    pub session_key: String,
    /// What happened.
    pub reason: SessionChangeReason,
    /// The session after the change (absent when deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
}

/// The most characters a label may have.
pub const MAX_LABEL_CHARS: usize = 128;
/// The most bytes a message or content may have.
pub const MAX_CONTENT_BYTES: usize = 1024 * 1024;

/// A `chat` payload: `{runId, sessionKey, runSeq, state, ...}`; which other fields are present
/// depends on `state` (docs/PROTOCOL.md, "Chat payloads"). `injected` has no runId and no runSeq.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ChatEvent")]
pub struct ChatEvent {
    /// The run, absent for `injected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The session.
    pub session_key: String,
    /// 0, 1, 2... per run, absent for `injected`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_seq: Option<u64>,
    /// `queued`, `started`, `delta`, `tool_start`, `tool_end`, `final`, `aborted`, `error`,
    /// `injected`.
    pub state: String,
    /// `queued`: runs ahead of this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// `started`: the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `started`: the user message, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_message: Option<TranscriptMessage>,
    /// `delta`, `tool_start`, `tool_end`: the model call, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<u32>,
    /// `delta`: new text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `tool_start`, `tool_end`: the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// `tool_start`, `tool_end`: the tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `tool_start`: its input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<serde_json::Value>,
    /// `tool_end`: the stored tool output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// `tool_end`: whether the tool failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    /// `final`: the last assistant message; `injected`: the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<TranscriptMessage>,
    /// `final`: tokens summed over turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// `final`: `end_turn`, `max_tokens`, `max_turns`, `refusal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// `aborted`: the text streamed before the abort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_text: Option<String>,
    /// `error`: what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
}

/// The error of a failed run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "RunError")]
pub struct RunError {
    /// `auth`, `rate_limited`, `timeout`, `context_length`, `stream_cut`, `upstream`, `internal`.
    pub kind: String,
    /// What happened.
    pub message: String,
    /// Whether sending again may succeed.
    pub retryable: bool,
}

/// Params of `chat.send` and `chat.stream`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "ChatSendParams")]
pub struct ChatSendParams {
    /// The session (default `main`; created if missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
    /// The user's message, at most 1 MiB.
    pub message: String,
    /// A repeated key within the session starts no second run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// A model for this run only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(title = "RunStatus")]
pub enum RunStatus {
    /// It starts now.
    Started,
    /// It waits behind another run of the session.
    Queued,
    /// (A repeated key) it is running.
    InFlight,
    /// (A repeated key) it has ended.
    Done,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "RunOutcome")]
pub enum RunOutcome {
    /// It answered.
    Final,
    /// It was aborted.
    Aborted,
    /// It failed.
    Error,
}

impl RunOutcome {
    /// The terminal `state` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Final => "final",
            Self::Aborted => "aborted",
            Self::Error => "error",
        }
    }
}

/// Result of `chat.send`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ChatSendResult")]
pub struct ChatSendResult {
    /// The run.
    pub run_id: String,
    /// The session.
    pub session_key: String,
    /// Where the run is.
    pub status: RunStatus,
    /// With `done`: how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
}

/// Params of `chat.abort` (at least one field).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "ChatAbortParams")]
pub struct ChatAbortParams {
    /// The run to abort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Abort this session's active run and drop its queued runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<String>,
}

/// Result of `chat.abort`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ChatAbortResult")]
pub struct ChatAbortResult {
    /// The runs that were aborted.
    pub aborted: Vec<String>,
}

/// One model of `models.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ModelInfo")]
pub struct ModelInfo {
    /// The model id.
    pub id: String,
    /// The provider.
    pub provider: String,
    /// Whether it is the default.
    pub default: bool,
    /// What it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Result of `models.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ModelsListResult")]
pub struct ModelsListResult {
    /// The models.
    pub models: Vec<ModelInfo>,
}

/// One tool of `tools.catalog`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ToolInfo")]
pub struct ToolInfo {
    /// The tool's name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its input.
    pub input_schema: serde_json::Value,
    /// `builtin` or `plugin:<name>`.
    pub source: String,
}

/// Result of `tools.catalog`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ToolsCatalogResult")]
pub struct ToolsCatalogResult {
    /// The tools.
    pub tools: Vec<ToolInfo>,
}

/// The most characters an idempotency key may have.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// Payload of `config.changed`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ConfigChangedEvent")]
pub struct ConfigChangedEvent {
    /// The config file's new hash.
    pub hash: String,
    /// Keys whose effective value changed.
    pub changed_paths: Vec<String>,
    /// `hot` (applied) or `restart` (some keys apply at the next start).
    pub reload_kind: String,
}

/// Result of `config.get`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ConfigGetResult")]
pub struct ConfigGetResult {
    /// The effective configuration, secrets redacted.
    pub config: serde_json::Value,
    /// Hex SHA-256 of the config file's bytes (of the empty string when there is none).
    pub hash: String,
    /// The config file.
    pub path: String,
    /// Keys set by the environment or flags (they win over the file).
    pub overridden_paths: Vec<String>,
}

/// Params of `config.patch`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "ConfigPatchParams")]
pub struct ConfigPatchParams {
    /// An RFC 7396 merge patch of the config file (snake_case keys; `null` removes a key).
    pub patch: serde_json::Value,
    /// The `hash` from `config.get`; a stale one changes nothing.
    pub base_hash: String,
}

/// Result of `config.patch`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ConfigPatchResult")]
pub struct ConfigPatchResult {
    /// The file's new hash.
    pub hash: String,
    /// Keys whose effective value changed.
    pub changed_paths: Vec<String>,
    /// `hot` or `restart`.
    pub reload_kind: String,
}

/// One plugin in `plugins.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "PluginInfo")]
pub struct PluginInfo {
    /// Its name (and namespace).
    pub name: String,
    /// `builtin` (in-process) or `process`.
    pub kind: String,
    /// `starting`, `running`, `restarting`, `failed` or `stopped`.
    pub state: String,
    /// Methods it adds.
    pub methods: Vec<String>,
    /// Agent tools it adds.
    pub tools: Vec<String>,
    /// Why it failed or last restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Result of `plugins.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "PluginsListResult")]
pub struct PluginsListResult {
    /// Every configured plugin.
    pub plugins: Vec<PluginInfo>,
}

/// Payload of `plugins.changed`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "PluginsChangedEvent")]
pub struct PluginsChangedEvent {
    /// The plugin.
    pub plugin: String,
    /// Its new state.
    pub state: String,
}
