//! In-process plugins compiled into the gateway, enabled from the config by name
//! (`[[plugins]] name = "clock"` with no `command`).

use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Plugin;
use super::error::PluginError;
use crate::agent::providers::ToolSpec;
use crate::agent::tools::{Tool, ToolContext, ToolFuture, ToolOutput};
use crate::protocol::NoParams;
use crate::rpc::{CallContext, MethodTable};
use crate::rpc::{Example, Method, Scope};

/// The compiled-in plugin called `name`.
pub fn find<G: super::PluginHost>(name: &str) -> Option<Arc<dyn Plugin<G>>> {
    match name {
        "clock" => Some(Arc::new(Clock)),
        _ => None,
    }
}

/// `clock`: the gateway's time, as a method, an agent tool and an event.
pub struct Clock;

/// Result of `clock.now`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "ClockNowResult")]
pub struct ClockNowResult {
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
}

/// `clock.now`.
pub struct ClockNow;
impl Method for ClockNow {
    const NAME: &'static str = "clock.now";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str =
        "The gateway's clock (an in-process plugin); also publishes `clock.read`.";
    type Params = NoParams;
    type Result = ClockNowResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "now",
            params: json!({}),
            result: json!({"ts": 1767225600000u64}),
        }]
    }
}

struct ClockTool;
impl Tool for ClockTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "clock_now".into(),
            description: "The current time in milliseconds since the Unix epoch.".into(),
            input_schema: json!({"type": "object", "additionalProperties": false}),
        }
    }
    fn source(&self) -> String {
        "plugin:clock".into()
    }
    fn call(&self, _input: Value, _ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            ToolOutput {
                content: crate::util::now_ms().to_string(),
                is_error: false,
            }
        })
    }
}

impl<G: super::PluginHost> Plugin<G> for Clock {
    fn name(&self) -> &str {
        "clock"
    }

    fn register(
        &self,
        _gw: &Arc<G>,
        table: &mut MethodTable<G>,
        tools: &mut Vec<Arc<dyn Tool>>,
    ) -> Result<(), PluginError> {
        table.method::<ClockNow, _, _>(|ctx: CallContext<G>, _: NoParams| async move {
            let ts = crate::util::now_ms();
            ctx.gateway
                .hub()
                .publish("clock.read", None, &json!({"ts": ts}));
            Ok(ClockNowResult { ts })
        })?;
        table.event_of::<ClockNowResult>("clock.read", "clock.now was called.");
        tools.push(Arc::new(ClockTool));
        Ok(())
    }
}
