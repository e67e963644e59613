//! Wire types of the `config.*` methods and the `config.changed` event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Payload of `config.changed`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ConfigChangedEvent")]
pub struct ConfigChangedEvent {
    /// The config file's new hash.
    pub hash: String,
    /// Keys whose effective value changed.
    pub changed_paths: Vec<String>,
    /// `hot` (applied) or `restart` (some keys apply at the next start).
    pub reload_kind: String,
}

/// Result of `config.get`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ConfigGetResult")]
pub struct ConfigGetResult {
    /// The effective configuration, secrets redacted.
    pub config: serde_json::Value,
    /// Hex SHA-256 of the config file's bytes (of the empty string when there is none).
    pub hash: String,
    /// The config file.
    pub path: String,
    /// Keys set by the environment or flags (they win over the file).
    pub overridden_paths: Vec<String>,
}

/// Params of `config.patch`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "ConfigPatchParams")]
pub struct ConfigPatchParams {
    /// An RFC 7396 merge patch of the config file (snake_case keys; `null` removes a key).
    pub patch: serde_json::Value,
    /// The `hash` from `config.get`; a stale one changes nothing.
    pub base_hash: String,
}

/// Result of `config.patch`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ConfigPatchResult")]
pub struct ConfigPatchResult {
    /// The file's new hash.
    pub hash: String,
    /// Keys whose effective value changed.
    pub changed_paths: Vec<String>,
    /// `hot` or `restart`.
    pub reload_kind: String,
}
