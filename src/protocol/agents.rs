//! Wire types of `agents.list`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One agent of `agents.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "AgentInfo")]
pub struct AgentInfo {
    /// The agent's id (`[agents.<id>]`).
    pub id: String,
    /// Its provider (`echo`, `anthropic`, `openai`).
    pub provider: String,
    /// Its model.
    pub model: String,
    /// Whether it is `gateway.default_agent`.
    pub default: bool,
    /// The directory its file tools are confined to.
    pub workspace: String,
    /// The names of the tools its model is offered.
    pub tools: Vec<String>,
}

/// Result of `agents.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "AgentsListResult")]
pub struct AgentsListResult {
    /// The agents, by id.
    pub agents: Vec<AgentInfo>,
}
