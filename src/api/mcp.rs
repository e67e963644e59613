//! `mcp.list`: the configured MCP servers, their state and the tools they offer.

use serde_json::json;

use crate::error::Result;
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::{McpListResult, NoParams};
use crate::rpc::{DuplicateMethod, Example, Method, Scope};

/// `mcp.list`.
pub struct List;
impl Method for List {
    const NAME: &'static str = "mcp.list";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str =
        "The configured MCP servers: transport, state, the tools offered as <server>__<tool>.";
    type Params = NoParams;
    type Result = McpListResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "one server",
            params: json!({}),
            result: json!({"servers": [{"name": "files", "transport": "stdio", "state": "running", "tools": ["files__read_file", "files__list_directory"]}]}),
        }]
    }
}

/// Registers `mcp.list`.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.method::<List, _, _>(|ctx: CallContext, _: NoParams| async move {
        Ok(McpListResult {
            servers: ctx.gateway.mcp().list(),
        })
    })?;
    Ok(())
}
