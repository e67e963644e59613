//! `approvals.*`: the tool calls waiting for a person, and resolving one.

use serde_json::json;

use crate::agent::approvals::{Resolution, Resolver};
use crate::error::{Result, code};
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::{
    Approval, ApprovalDecision, ApprovalRemember, ApprovalsGetParams, ApprovalsListParams,
    ApprovalsListResult, ApprovalsResolveParams,
};
use crate::rpc::{DuplicateMethod, Example, Method, Scope};

/// An example approval, as the methods' examples show it.
fn example() -> serde_json::Value {
    json!({"approvalId": "3c1d5e7f9a0b4c2d8e6f1a3b5c7d9e0f", "state": "pending", "runId": "9b2f0c1e4d5a4b3c8e7f6a5b4c3d2e1f", "sessionKey": "main", "agentId": "main", "toolCallId": "toolu_01", "name": "exec", "input": {"command": "ls"}, "requestedAt": 1767225600000u64, "expiresAt": 1767226200000u64})
}

/// `approvals.list`.
pub struct List;
impl Method for List {
    const NAME: &'static str = "approvals.list";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str =
        "The pending approvals (of one session, when given), oldest first.";
    type Params = ApprovalsListParams;
    type Result = ApprovalsListResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "pending",
            params: json!({"sessionKey": "main"}),
            result: json!({"approvals": [example()]}),
        }]
    }
}

/// `approvals.get`.
pub struct Get;
impl Method for Get {
    const NAME: &'static str = "approvals.get";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str = "One approval, pending or resolved lately.";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND];
    type Params = ApprovalsGetParams;
    type Result = Approval;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "get",
            params: json!({"approvalId": "3c1d5e7f9a0b4c2d8e6f1a3b5c7d9e0f"}),
            result: example(),
        }]
    }
}

/// `approvals.resolve`.
pub struct Resolve;
impl Method for Resolve {
    const NAME: &'static str = "approvals.resolve";
    const SCOPE: Scope = Scope::Write;
    const SUMMARY: &'static str = "Allows or denies a pending tool call (remember: \"session\" allows that tool for the rest of the session).";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND, code::CONFLICT, code::FORBIDDEN];
    type Params = ApprovalsResolveParams;
    type Result = Approval;
    fn examples() -> Vec<Example> {
        let mut resolved = example();
        resolved["state"] = json!("allowed");
        resolved["decision"] = json!("allow");
        resolved["by"] = json!("phone");
        vec![Example {
            name: "allow",
            params: json!({"approvalId": "3c1d5e7f9a0b4c2d8e6f1a3b5c7d9e0f", "decision": "allow"}),
            result: resolved,
        }]
    }
}

/// Registers the `approvals.*` methods.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.method::<List, _, _>(|ctx: CallContext, p: ApprovalsListParams| async move {
        let approvals = ctx
            .gateway
            .agent()
            .approvals()
            .list(p.session_key.as_ref().map(|k| k.as_str()));
        Ok(ApprovalsListResult { approvals })
    })?;
    table.method::<Get, _, _>(|ctx: CallContext, p: ApprovalsGetParams| async move {
        Ok(ctx.gateway.agent().approvals().get(&p.approval_id)?)
    })?;
    table.method::<Resolve, _, _>(|ctx: CallContext, p: ApprovalsResolveParams| async move {
        let token_name = ctx.gateway.token_name(&ctx.conn.credential);
        let resolution = Resolution {
            decision: p.decision,
            by: token_name.clone().unwrap_or_else(|| "local".into()),
            reason: p.reason,
            remember: p.remember == Some(ApprovalRemember::Session)
                && p.decision == ApprovalDecision::Allow,
        };
        let resolver = Resolver { token_name };
        Ok(ctx
            .gateway
            .agent()
            .approvals()
            .resolve(&p.approval_id, resolution, &resolver)?)
    })?;
    Ok(())
}
