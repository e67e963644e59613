//! Wire types of context compaction: why a compaction happened, the compactions `chat.history`
//! lists, and `sessions.compact`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{MessageText, SessionKey};

/// Why the older part of a session's context was replaced by a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "CompactionReason")]
pub enum CompactionReason {
    /// The estimate of a model call's context passed `context.max_tokens × compact_threshold`.
    Auto,
    /// `sessions.compact` asked for it.
    Manual,
    /// The provider answered `context_length`, or the summary call failed and the oldest whole
    /// turns were dropped without a summary.
    Overflow,
}

impl CompactionReason {
    /// The protocol's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Manual => "manual",
            Self::Overflow => "overflow",
        }
    }
}

/// A compaction of a transcript, as `chat.history` lists it: from its line on, the context of a
/// model call is `summary` (as a first user message), then the messages from `firstKeptId` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "Compaction")]
pub struct Compaction {
    /// The compaction's id.
    pub id: String,
    /// When it was written.
    pub ts: u64,
    /// What the older part said (rolling in the previous summary).
    pub summary: String,
    /// The oldest message kept verbatim.
    pub first_kept_id: String,
    /// `auto`, `manual` or `overflow`.
    pub reason: CompactionReason,
}

/// Params of `sessions.compact`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "SessionsCompactParams")]
pub struct SessionsCompactParams {
    /// The session key.
    pub key: SessionKey,
    /// What the summary should keep or stress, added to the summary request (at most 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<MessageText>,
}

/// Result of `sessions.compact`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "SessionsCompactResult")]
pub struct SessionsCompactResult {
    /// Whether a compaction was written (`false`: too little to compact).
    pub compacted: bool,
    /// The estimate of the context before, in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_before: Option<u64>,
    /// The estimate of the context after, in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_after: Option<u64>,
    /// The oldest message kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_kept_id: Option<String>,
}
