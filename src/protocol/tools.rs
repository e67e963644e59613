//! Wire types of `tools.catalog`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
