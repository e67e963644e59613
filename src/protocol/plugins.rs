//! Wire types of `plugins.list` and the `plugins.changed` event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
