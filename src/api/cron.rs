//! `cron.*`: scheduled runs (jobs by name; add, list, update, remove, run now).

use serde_json::json;

use crate::error::{Result, code};
use crate::gateway::{Ctx as CallContext, Table as MethodTable};
use crate::protocol::{
    CronAddParams, CronJob, CronListResult, CronNameParams, CronRemoveResult, CronRunResult,
    CronUpdateParams, NoParams,
};
use crate::rpc::{DuplicateMethod, Example, Method, Scope};

fn daily() -> serde_json::Value {
    json!({"name": "daily", "schedule": {"cron": "0 9 * * 1-5", "tz": "Europe/Berlin"}, "message": "Summarize my inbox", "sessionKey": "cron:daily", "nextRunAt": 1767254400000u64, "enabled": true, "catchUp": "one", "source": "store"})
}

/// `cron.add`.
pub struct Add;
impl Method for Add {
    const NAME: &'static str = "cron.add";
    const SCOPE: Scope = Scope::Admin;
    const SUMMARY: &'static str = "Adds a scheduled job (kept in cron.json): a cron expression with a time zone, an interval or a one-shot time.";
    const ERRORS: &'static [i32] = &[code::CONFLICT];
    type Params = CronAddParams;
    type Result = CronJob;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "weekdays at nine",
            params: json!({"name": "daily", "schedule": {"cron": "0 9 * * 1-5", "tz": "Europe/Berlin"}, "message": "Summarize my inbox"}),
            result: daily(),
        }]
    }
}

/// `cron.list`.
pub struct List;
impl Method for List {
    const NAME: &'static str = "cron.list";
    const SCOPE: Scope = Scope::Read;
    const SUMMARY: &'static str =
        "Every scheduled job (cron.json's and the config's), its next time and its last firing.";
    type Params = NoParams;
    type Result = CronListResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "one job",
            params: json!({}),
            result: json!({"jobs": [daily()]}),
        }]
    }
}

/// `cron.update`.
pub struct Update;
impl Method for Update {
    const NAME: &'static str = "cron.update";
    const SCOPE: Scope = Scope::Admin;
    const SUMMARY: &'static str = "Changes the fields given of a job of cron.json (config jobs change in the config: -32023).";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND, code::CONFLICT];
    type Params = CronUpdateParams;
    type Result = CronJob;
    fn examples() -> Vec<Example> {
        let mut result = daily();
        result["enabled"] = json!(false);
        result["nextRunAt"] = json!(null);
        vec![Example {
            name: "pause",
            params: json!({"name": "daily", "enabled": false}),
            result,
        }]
    }
}

/// `cron.remove`.
pub struct Remove;
impl Method for Remove {
    const NAME: &'static str = "cron.remove";
    const SCOPE: Scope = Scope::Admin;
    const SUMMARY: &'static str =
        "Removes a job of cron.json (config jobs are removed from the config: -32023).";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND, code::CONFLICT];
    type Params = CronNameParams;
    type Result = CronRemoveResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "remove",
            params: json!({"name": "daily"}),
            result: json!({"removed": true}),
        }]
    }
}

/// `cron.run`.
pub struct Run;
impl Method for Run {
    const NAME: &'static str = "cron.run";
    const SCOPE: Scope = Scope::Write;
    const SUMMARY: &'static str = "Fires a job now (its schedule is unchanged); -32023 with data.activeRunId while its previous run is active.";
    const ERRORS: &'static [i32] = &[code::NOT_FOUND, code::CONFLICT, code::UPSTREAM];
    type Params = CronNameParams;
    type Result = CronRunResult;
    fn examples() -> Vec<Example> {
        vec![Example {
            name: "now",
            params: json!({"name": "daily"}),
            result: json!({"runId": "9b2f0c1e4d5a4b3c8e7f6a5b4c3d2e1f"}),
        }]
    }
}

/// Registers the `cron.*` methods.
pub fn register(table: &mut MethodTable) -> Result<(), DuplicateMethod> {
    table.method::<Add, _, _>(|ctx: CallContext, p: CronAddParams| async move {
        Ok(ctx.gateway.cron().add(ctx.gateway.as_ref(), p).await?)
    })?;
    table.method::<List, _, _>(|ctx: CallContext, _: NoParams| async move {
        Ok(CronListResult {
            jobs: ctx.gateway.cron().list(ctx.gateway.as_ref()),
        })
    })?;
    table.method::<Update, _, _>(|ctx: CallContext, p: CronUpdateParams| async move {
        Ok(ctx.gateway.cron().update(ctx.gateway.as_ref(), p).await?)
    })?;
    table.method::<Remove, _, _>(|ctx: CallContext, p: CronNameParams| async move {
        ctx.gateway
            .cron()
            .remove(ctx.gateway.as_ref(), &p.name)
            .await?;
        Ok(CronRemoveResult { removed: true })
    })?;
    table.method::<Run, _, _>(|ctx: CallContext, p: CronNameParams| async move {
        let run_id = ctx.gateway.cron().run_now(&ctx.gateway, &p.name).await?;
        Ok(CronRunResult { run_id })
    })?;
    Ok(())
}
