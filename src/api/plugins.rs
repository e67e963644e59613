//! `plugins.list`.

use serde_json::json;

use crate::error::Result;
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::{NoParams, PluginInfo, PluginsListResult};
use crate::rpc::{DuplicateMethod, Example, Method, Scope};

/// `plugins.list`.
pub struct List;
impl Method for List {
    const NAME: &'static str = "plugins.list";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str = "Configured plugins with their state, methods and tools.";
    type Params = NoParams;
    type Result = PluginsListResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "list",
            params: json!({}),
            result: json!({"plugins": [{"name": "hello", "kind": "process", "state": "running", "methods": ["hello.greet"], "tools": ["hello_shout"]}]}),
        }]
    }
}

/// The plugins as `plugins.list` shows them.
pub fn infos(gw: &crate::gateway::Gateway) -> Vec<PluginInfo> {
    let table = gw.table();
    let tools = gw.agent().tools();
    gw.plugins()
        .list()
        .into_iter()
        .map(|(name, entry)| {
            let owner = format!("plugin:{name}");
            let running = entry.state == crate::plugins::PluginState::Running;
            PluginInfo {
                methods: if running {
                    table
                        .names()
                        .iter()
                        .filter(|n| {
                            table.get(n).is_some_and(|d| {
                                d.owner == owner
                                    || (entry.kind == "builtin"
                                        && n.starts_with(&format!("{name}.")))
                            })
                        })
                        .cloned()
                        .collect()
                } else {
                    Vec::new()
                },
                tools: if running {
                    tools
                        .iter()
                        .filter(|t| t.source() == owner)
                        .map(|t| t.spec().name)
                        .collect()
                } else {
                    Vec::new()
                },
                name,
                kind: entry.kind.into(),
                state: entry.state.as_str().into(),
                error: entry.error,
            }
        })
        .collect()
}

/// Registers `plugins.list`.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.method::<List, _, _>(|ctx: CallContext, _: NoParams| async move {
        Ok(PluginsListResult {
            plugins: infos(&ctx.gateway),
        })
    })
}
