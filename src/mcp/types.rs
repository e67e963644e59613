//! The values the MCP manager publishes: a server's state and transport, its `mcp.list` entry,
//! the `mcp.changed` event.

use std::sync::Arc;

use crate::config::McpServerConfig;
pub use crate::protocol::{McpChanged, McpServerStatus, McpState, McpTransport};

impl McpTransport {
    /// The transport `config` names.
    pub fn of(config: &McpServerConfig) -> Self {
        if config.url.is_some() && config.command.is_none() {
            Self::Http
        } else {
            Self::Stdio
        }
    }
}

/// What the manager calls on every change (from its own tasks; keep it quick).
pub type OnChange = Arc<dyn Fn(McpChanged) + Send + Sync>;
