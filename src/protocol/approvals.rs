//! Wire types of the `approvals.*` methods: a tool call waiting for a person, its decision,
//! and the `approvals.changed` event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::SessionKey;

/// Where an approval stands: waiting for a person, or resolved one way or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "ApprovalState")]
pub enum ApprovalState {
    /// Nobody has resolved it yet; the tool call waits.
    Pending,
    /// Resolved `allow`: the tool call runs.
    Allowed,
    /// Resolved `deny` (by a person, the timeout or an abort): the call is not run.
    Denied,
}

impl ApprovalState {
    /// The protocol's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Allowed => "allowed",
            Self::Denied => "denied",
        }
    }
}

/// How a person (or the timeout, or an abort) resolved an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "ApprovalDecision")]
pub enum ApprovalDecision {
    /// Run the tool call.
    Allow,
    /// Do not run it: it becomes an error result saying who denied it and why.
    Deny,
}

impl ApprovalDecision {
    /// The protocol's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
        }
    }

    /// The state an approval resolved with this decision is in.
    pub fn state(self) -> ApprovalState {
        match self {
            Self::Allow => ApprovalState::Allowed,
            Self::Deny => ApprovalState::Denied,
        }
    }
}

/// A tool call that waits (or waited) for a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "Approval")]
pub struct Approval {
    /// The approval's id.
    pub approval_id: String,
    /// `pending`, `allowed` or `denied`.
    pub state: ApprovalState,
    /// The run that made the call.
    pub run_id: String,
    /// Its session.
    pub session_key: String,
    /// Its agent.
    pub agent_id: String,
    /// The call.
    pub tool_call_id: String,
    /// The tool.
    pub name: String,
    /// The call's input.
    pub input: serde_json::Value,
    /// When it was asked (ms since the epoch).
    pub requested_at: u64,
    /// When it is denied unless resolved first.
    pub expires_at: u64,
    /// Once resolved: the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<ApprovalDecision>,
    /// Once resolved: who resolved it (a token name, `local`, `timeout` or `abort`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Once resolved: why, when the resolver said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Params of `approvals.list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "ApprovalsListParams")]
pub struct ApprovalsListParams {
    /// Only this session's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<SessionKey>,
}

/// Result of `approvals.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ApprovalsListResult")]
pub struct ApprovalsListResult {
    /// The pending approvals, oldest first.
    pub approvals: Vec<Approval>,
}

/// Params of `approvals.get`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "ApprovalsGetParams")]
pub struct ApprovalsGetParams {
    /// The approval.
    pub approval_id: String,
}

/// What `remember` may say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "ApprovalRemember")]
pub enum ApprovalRemember {
    /// Allow later calls of this tool in this session (its current sessionId) without asking.
    Session,
}

/// Params of `approvals.resolve`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "ApprovalsResolveParams")]
pub struct ApprovalsResolveParams {
    /// The approval.
    pub approval_id: String,
    /// `allow` or `deny`.
    pub decision: ApprovalDecision,
    /// Why (the model sees it in a deny's tool result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With `allow`: allow this tool for the rest of the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remember: Option<ApprovalRemember>,
}

/// Payload of `approvals.changed`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ApprovalsChangedEvent")]
pub struct ApprovalsChangedEvent {
    /// The approval as it is now.
    pub approval: Approval,
}
