//! `usage.*`: the tokens and cost of the model calls, from the usage ledger.

use serde_json::json;

use crate::error::{Error, Result, code};
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::{UsageSummaryParams, UsageSummaryResult};
use crate::rpc::{DuplicateMethod, Example, Method, Scope};

/// `usage.summary`.
pub struct Summary;
impl Method for Summary {
    const NAME: &'static str = "usage.summary";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str = "Tokens and cost of the model calls in a time range (of one agent, when given), in all and by agent, model and UTC day; reset and deleted sessions included.";
    const ERRORS: &'static [i32] = &[code::INVALID_PARAMS];
    type Params = UsageSummaryParams;
    type Result = UsageSummaryResult;
    fn examples() -> Vec<Example> {
        let usage = json!({"inputTokens": 1200, "outputTokens": 300, "cacheReadTokens": 5000, "cacheWriteTokens": 800, "costUsd": 0.0126, "unpricedTokens": 0});
        vec![Example {
            name: "one day",
            params: json!({"since": 1767225600000u64, "until": 1767312000000u64}),
            result: json!({
                "total": usage,
                "byAgent": {"main": usage},
                "byModel": {"claude-sonnet-4-5": usage},
                "byDay": [{"day": "2026-01-01", "usage": usage}]
            }),
        }]
    }
}

/// Checks the range of `usage.summary`: `until` is not before `since`.
pub fn check_range(p: &UsageSummaryParams) -> Result<()> {
    if let (Some(since), Some(until)) = (p.since, p.until)
        && until < since
    {
        return Err(Error::invalid_params(
            "until",
            format!("until ({until}) is before since ({since}): expected until >= since"),
        ));
    }
    Ok(())
}

/// Registers the `usage.*` methods.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.method::<Summary, _, _>(|ctx: CallContext, p: UsageSummaryParams| async move {
        check_range(&p)?;
        let agent = p.agent.map(|a| a.as_str().to_string());
        Ok(ctx
            .gateway
            .store()
            .usage_summary(p.since, p.until, agent)
            .await?)
    })?;
    Ok(())
}
