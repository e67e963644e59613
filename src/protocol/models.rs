//! Wire types of `models.list`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
