//! `agents.list`: the configured agents, each with its provider, model, workspace and tools.

use serde_json::json;

use crate::error::Result;
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::{AgentInfo, AgentsListResult, NoParams};
use crate::rpc::{DuplicateMethod, Example, Method, Scope};

/// `agents.list`.
pub struct List;
impl Method for List {
    const NAME: &'static str = "agents.list";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str =
        "The configured agents: provider, model, workspace and the tools each model is offered.";
    type Params = NoParams;
    type Result = AgentsListResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "default",
            params: json!({}),
            result: json!({"agents": [{"id": "main", "provider": "echo", "model": "echo", "default": true, "workspace": "/home/me/.clawgate/workspace", "tools": ["read_file", "write_file", "list_dir", "exec"]}]}),
        }]
    }
}

/// Registers `agents.list`.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.method::<List, _, _>(|ctx: CallContext, _: NoParams| async move {
        let config = ctx.gateway.config();
        let agents = config
            .agents
            .iter()
            .map(|(id, agent)| AgentInfo {
                tools: ctx
                    .gateway
                    .agent()
                    .tools_for(ctx.gateway.as_ref(), agent)
                    .iter()
                    .map(|t| t.spec().name)
                    .collect(),
                id: id.clone(),
                provider: agent.provider.as_str().into(),
                model: agent.model.clone(),
                default: id == config.default_agent_id(),
                workspace: agent
                    .workspace
                    .clone()
                    .unwrap_or_else(|| ctx.gateway.data_dir().join("workspace"))
                    .display()
                    .to_string(),
            })
            .collect();
        Ok(AgentsListResult { agents })
    })?;
    Ok(())
}
