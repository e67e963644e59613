//! Wire types of `mcp.list` and the `mcp.changed` event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "McpState")]
pub enum McpState {
    /// Being started for the first time since it was configured.
    Starting,
    /// Initialized; its tools are offered.
    Running,
    /// Crashed, hung or wrote garbage; restarting after a backoff (its tools fail meanwhile).
    Restarting,
    /// Its last start failed (`error` says why); retried with backoff.
    Failed,
    /// Disabled, removed or shut down.
    Stopped,
}

impl McpState {
    /// The protocol name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

/// How a server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "McpTransport")]
pub enum McpTransport {
    /// A child process speaking on its stdin and stdout (`command`).
    Stdio,
    /// Streamable HTTP (`url`).
    Http,
}

/// One entry of `mcp.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "McpServerStatus")]
pub struct McpServerStatus {
    /// The server's name (its `[mcp_servers.<name>]`).
    pub name: String,
    /// `stdio` or `http`.
    pub transport: McpTransport,
    /// Where it is.
    pub state: McpState,
    /// The names of its tools as offered to the model (`<server>__<tool>`).
    pub tools: Vec<String>,
    /// Why it is not running, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The `mcp.changed` event: a server's state or tools changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "McpChangedEvent")]
pub struct McpChanged {
    /// The server's name.
    pub server: String,
    /// Where it is now.
    pub state: McpState,
    /// Its offered tool names now.
    pub tools: Vec<String>,
}

/// Result of `mcp.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "McpListResult")]
pub struct McpListResult {
    /// Every configured MCP server, by name.
    pub servers: Vec<McpServerStatus>,
}
