//! `models.list` and `tools.catalog`.

use serde_json::json;

use crate::agent::AgentError;
use crate::error::Result;
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::{AgentParams, ModelInfo, ModelsListResult, ToolInfo, ToolsCatalogResult};
use crate::rpc::{DuplicateMethod, Example, Method, Scope};

/// `models.list`.
pub struct Models;
impl Method for Models {
    const NAME: &'static str = "models.list";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str =
        "Models of the configured provider (echo is an offline stand-in).";
    type Params = AgentParams;
    type Result = ModelsListResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "echo",
            params: json!({}),
            result: json!({"models": [{"id": "echo", "provider": "echo", "default": true, "description": "offline stand-in: echoes your message, `/tool NAME {json}` calls a tool; no key, no network"}]}),
        }]
    }
}

/// `tools.catalog`.
pub struct Tools;
impl Method for Tools {
    const NAME: &'static str = "tools.catalog";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str = "Tools the agent can call: built-in, from plugins and from its MCP servers (`mcp:<server>`).";
    type Params = AgentParams;
    type Result = ToolsCatalogResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "catalog",
            params: json!({}),
            result: json!({"tools": [{"name": "read_file", "description": "Reads a UTF-8 text file in the workspace.", "inputSchema": {"type": "object"}, "source": "builtin"}]}),
        }]
    }
}

/// Registers `models.list` and `tools.catalog`.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.method::<Models, _, _>(|ctx: CallContext, p: AgentParams| async move {
        let config = ctx.gateway.config();
        let id = p.agent.as_deref().unwrap_or(config.default_agent_id());
        let provider = ctx
            .gateway
            .agent()
            .provider(id)
            .ok_or_else(|| AgentError::NoSuchAgent(id.to_string()))?;
        let models = provider
            .models()
            .into_iter()
            .map(|(id, default, description)| ModelInfo {
                id,
                provider: provider.name().into(),
                default,
                description: Some(description),
            })
            .collect();
        Ok(ModelsListResult { models })
    })?;
    table.method::<Tools, _, _>(|ctx: CallContext, p: AgentParams| async move {
        let config = ctx.gateway.config();
        let id = p.agent.as_deref().unwrap_or(config.default_agent_id());
        let Some(agent) = config.agent(id) else {
            return Err(AgentError::NoSuchAgent(id.to_string()).into());
        };
        let tools = ctx
            .gateway
            .agent()
            .tools_for(ctx.gateway.as_ref(), agent)
            .iter()
            .map(|t| {
                let spec = t.spec();
                ToolInfo {
                    name: spec.name,
                    description: spec.description,
                    input_schema: spec.input_schema,
                    source: t.source(),
                }
            })
            .collect();
        Ok(ToolsCatalogResult { tools })
    })?;
    Ok(())
}
