//! Wire types of the `runs.*` methods: the runs in progress and the outcome of finished ones.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::chat::RunOutcome;
use super::values::SessionKey;

/// Where a run is, as `runs.*` tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(title = "RunPhase")]
pub enum RunPhase {
    /// Waiting behind another run of its session.
    Queued,
    /// Streaming or running tools.
    Running,
    /// Waiting for a person to resolve an approval.
    WaitingApproval,
    /// Ended (only `runs.get`).
    Done,
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "RunEntry")]
pub struct RunEntry {
    /// The run.
    pub run_id: String,
    /// Its session.
    pub session_key: String,
    /// Its agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// `queued`, `running`, `waiting_approval` or (`runs.get`) `done`.
    pub state: RunPhase,
    /// `queued`: runs ahead of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// When it started (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    /// The model call it is at, from 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<u32>,
    /// `done`: how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
}

/// Params of `runs.list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "RunsListParams")]
pub struct RunsListParams {
    /// Only this session's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<SessionKey>,
}

/// Result of `runs.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "RunsListResult")]
pub struct RunsListResult {
    /// The runs queued, running or waiting for an approval.
    pub runs: Vec<RunEntry>,
}

/// Params of `runs.get`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "RunsGetParams")]
pub struct RunsGetParams {
    /// The run.
    pub run_id: String,
}

impl RunEntry {
    /// The entry of a finished run.
    pub fn done(
        run_id: &str,
        session_key: &str,
        agent_id: Option<String>,
        outcome: RunOutcome,
    ) -> Self {
        Self {
            run_id: run_id.to_string(),
            session_key: session_key.to_string(),
            agent_id,
            state: RunPhase::Done,
            position: None,
            started_at: None,
            turn: None,
            outcome: Some(outcome),
        }
    }
}
