//! Wire types of `models.list`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::AgentId;

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

/// Params of `models.list` and `tools.catalog`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "AgentParams")]
pub struct AgentParams {
    /// The agent (default `gateway.default_agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
}

/// Result of `models.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "ModelsListResult")]
pub struct ModelsListResult {
    /// The models.
    pub models: Vec<ModelInfo>,
}
