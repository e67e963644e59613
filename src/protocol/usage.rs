//! Wire types of usage and cost: a session's usage, and `usage.summary`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::AgentId;

/// Tokens and cost summed over model calls (a session's, or a summary's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "UsageTotals")]
pub struct UsageTotals {
    /// Input tokens (cache reads and writes not included).
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the provider's prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// USD of the calls that had a price (`[prices]`); absent when none had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// All the tokens of the calls that had no price (not in `costUsd`).
    pub unpriced_tokens: u64,
}

/// Params of `usage.summary`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "UsageSummaryParams")]
pub struct UsageSummaryParams {
    /// Calls from this time on (ms since the epoch, inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// Calls before this time (ms since the epoch, exclusive; not before `since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// Only the calls of this agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
}

/// One UTC day of `usage.summary`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "UsageDay")]
pub struct UsageDay {
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
    /// The calls of that day.
    pub usage: UsageTotals,
}

/// Result of `usage.summary`: the ledger's calls in the range, reset and deleted sessions
/// included.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "UsageSummaryResult")]
pub struct UsageSummaryResult {
    /// Every call in the range.
    pub total: UsageTotals,
    /// By agent id.
    pub by_agent: BTreeMap<String, UsageTotals>,
    /// By model name.
    pub by_model: BTreeMap<String, UsageTotals>,
    /// By UTC day, oldest first; only days with calls.
    pub by_day: Vec<UsageDay>,
}
