//! Wire types of the `chat.*` methods: transcript messages, sends and runs, and the `chat`
//! event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::compaction::{Compaction, CompactionReason};
use super::values::{AgentId, IdempotencyKey, MessageText, ModelName, SessionKey};

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
    /// Input tokens read from the provider's prompt cache (not counted in `inputTokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_tokens: u64,
    /// Input tokens written to the provider's prompt cache (not counted in `inputTokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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

/// Params of `chat.history`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "ChatHistoryParams")]
pub struct ChatHistoryParams {
    /// The session key.
    pub session_key: SessionKey,
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
    /// The compactions written among these messages (after one of them), oldest first.
    pub compactions: Vec<Compaction>,
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
    pub session_key: SessionKey,
    /// `assistant` or `system`.
    pub role: InjectRole,
    /// The text, at most 1 MiB.
    pub content: MessageText,
    /// A label, at most 128 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The agent of a session this call creates (default `gateway.default_agent`); an
    /// existing session of another agent is `-32023`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
}

/// Result of `chat.inject`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ChatInjectResult")]
pub struct ChatInjectResult {
    /// The new message's id.
    pub message_id: String,
}

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
    /// `queued`, `started`, `resumed`, `delta`, `approval_requested`, `approval_resolved`,
    /// `tool_start`, `tool_end`, `steered`, `final`, `aborted`, `error`, `injected`,
    /// `compacted`.
    pub state: String,
    /// `queued`: runs ahead of this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// `started`: the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `started`, `resumed`: the agent running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// `started`, `steered`: the user message, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_message: Option<TranscriptMessage>,
    /// `delta`, `tool_start`, `tool_end`, `compacted` (in a run): the model call, from 0.
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
    /// `compacted`: the estimate of the context before the compaction, in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_before: Option<u64>,
    /// `compacted`: the estimate of the context after it, in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_after: Option<u64>,
    /// `compacted`: `auto`, `manual` or `overflow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<CompactionReason>,
    /// `approval_requested`, `approval_resolved`: the approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// `approval_requested`: when the call is denied unless resolved first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// `approval_resolved`: `allow` or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<super::approvals::ApprovalDecision>,
    /// `approval_resolved`: a token name, `local`, `timeout` or `abort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// `resumed`: 1 for the first resumption after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
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
    pub session_key: Option<SessionKey>,
    /// The user's message, at most 1 MiB.
    pub message: MessageText,
    /// A repeated key within the session starts no second run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
    /// A model for this run only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelName>,
    /// The agent: of the session this call creates (default `gateway.default_agent`); for an
    /// existing session it must be the session's own (else `-32023`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
    /// What to do while a run of the session is active (default `queue`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SendMode>,
}

/// What `chat.send` does while a run of the session is active (idempotency is checked first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "SendMode")]
pub enum SendMode {
    /// Wait in order behind it.
    #[default]
    Queue,
    /// Give the message to the active run at its next message boundary.
    Steer,
    /// Abort the active run (its partial text kept) and start before any queued run.
    Interrupt,
    /// Refuse (`-32023` with `data.activeRunId`).
    Reject,
}

/// Params of `chat.stream`: those of `chat.send`, or `runId` alone to rejoin a run.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "ChatStreamParams")]
pub struct ChatStreamParams {
    /// The session (default `main`; created if missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<SessionKey>,
    /// The user's message, at most 1 MiB (absent with `runId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageText>,
    /// A repeated key within the session starts no second run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<IdempotencyKey>,
    /// A model for this run only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelName>,
    /// The agent (as in `chat.send`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
    /// What to do while a run of the session is active (as in `chat.send`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SendMode>,
    /// Alone: join this run (its next payloads), or get its terminal payload when it is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
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
    /// (`mode: "steer"`) the message was handed to the active run, whose id this is.
    Steered,
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
    pub session_key: Option<SessionKey>,
}

/// Result of `chat.abort`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ChatAbortResult")]
pub struct ChatAbortResult {
    /// The runs that were aborted.
    pub aborted: Vec<String>,
}
