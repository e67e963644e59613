//! `runs.*`: the runs queued, running or waiting for a person, and the outcome of one.

use serde_json::json;

use crate::error::{Result, code};
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::{RunEntry, RunsGetParams, RunsListParams, RunsListResult};
use crate::rpc::{DuplicateMethod, Example, Method, Scope};

/// `runs.list`.
pub struct List;
impl Method for List {
    const NAME: &'static str = "runs.list";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str =
        "The runs queued, running or waiting for an approval (of one session, when given).";
    type Params = RunsListParams;
    type Result = RunsListResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "active",
            params: json!({}),
            result: json!({"runs": [
                {"runId": "9b2f0c1e4d5a4b3c8e7f6a5b4c3d2e1f", "sessionKey": "main", "agentId": "main", "state": "waiting_approval", "startedAt": 1767225600000u64, "turn": 1},
                {"runId": "1a2b3c4d5e6f4a5b8c9d0e1f2a3b4c5d", "sessionKey": "main", "agentId": "main", "state": "queued", "position": 1}
            ]}),
        }]
    }
}

/// `runs.get`.
pub struct Get;
impl Method for Get {
    const NAME: &'static str = "runs.get";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str =
        "One run: where it is, or (state done) how it ended, also after a restart.";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND];
    type Params = RunsGetParams;
    type Result = RunEntry;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "done",
            params: json!({"runId": "9b2f0c1e4d5a4b3c8e7f6a5b4c3d2e1f"}),
            result: json!({"runId": "9b2f0c1e4d5a4b3c8e7f6a5b4c3d2e1f", "sessionKey": "main", "agentId": "main", "state": "done", "outcome": "final"}),
        }]
    }
}

/// Registers the `runs.*` methods.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.method::<List, _, _>(|ctx: CallContext, p: RunsListParams| async move {
        let runs = ctx
            .gateway
            .agent()
            .runs_list(p.session_key.as_ref().map(|k| k.as_str()));
        Ok(RunsListResult { runs })
    })?;
    table.method::<Get, _, _>(|ctx: CallContext, p: RunsGetParams| async move {
        Ok(ctx
            .gateway
            .agent()
            .run_get(ctx.gateway.as_ref(), &p.run_id)?)
    })?;
    Ok(())
}
