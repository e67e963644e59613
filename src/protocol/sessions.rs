//! Wire types of the `sessions.*` methods and the `sessions.changed` event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Patch;
use super::values::{AgentId, Label, ModelName, SessionKey};

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
    /// The agent the session belongs to.
    pub agent_id: String,
    /// The usage and cost of the model calls of the current transcript (`sessionId`): zero
    /// after a reset, and a fork does not count the messages it copied.
    #[serde(default)]
    pub usage: super::usage::UsageTotals,
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
    pub key: SessionKey,
}

/// Params of `sessions.create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "SessionsCreateParams")]
pub struct SessionsCreateParams {
    /// The key; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SessionKey>,
    /// A label (at most 128 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<Label>,
    /// A model for this session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelName>,
    /// The session's agent (default `gateway.default_agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
}

/// Params of `sessions.patch`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "SessionsPatchParams")]
pub struct SessionsPatchParams {
    /// The session key.
    pub key: SessionKey,
    /// A new label, or `null` to clear it.
    #[serde(default)]
    pub label: Patch<Label>,
    /// A new model, or `null` to clear it.
    #[serde(default)]
    pub model: Patch<ModelName>,
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
    pub key: SessionKey,
    /// The new session's key; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_key: Option<SessionKey>,
    /// The last message to copy (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_message_id: Option<String>,
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
