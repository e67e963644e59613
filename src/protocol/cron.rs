//! Wire types of the `cron.*` methods and the `cron.changed` event: scheduled runs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{AgentId, CronName, MessageText, SessionKey};

/// When a job fires: exactly one of `{cron, tz?}`, `{everyMs}` or `{at}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "CronSchedule")]
pub struct CronSchedule {
    /// A 5-field cron expression (`minute hour day-of-month month day-of-week`), minute
    /// resolution, evaluated in `tz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The IANA time zone of `cron` (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// Every this many ms (at least 1000), counted from the previous scheduled time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    /// Once, at this time (ms since the epoch, in the future); the job then disables itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
}

/// Whether a job whose time passed while the gateway was down runs at startup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "CronCatchUp")]
pub enum CronCatchUp {
    /// Once, however many times passed.
    #[default]
    One,
    /// Not at all: the job moves on to its next time.
    None,
}

/// Where a job is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "CronSource")]
pub enum CronSource {
    /// Added with `cron.add`, kept in `<dataDir>/cron.json`.
    Store,
    /// Declared in the configuration as `[cron.<name>]` (changed there only).
    Config,
}

/// Params of `cron.add`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "CronAddParams")]
pub struct CronAddParams {
    /// The job's name: 1 to 32 characters of `a-z 0-9 -`.
    pub name: CronName,
    /// When it fires.
    pub schedule: CronSchedule,
    /// The user message each firing sends.
    pub message: MessageText,
    /// The session (default `cron:<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<SessionKey>,
    /// The agent (default: the session's, else `gateway.default_agent` when it fires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
    /// Whether it fires (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Catch-up after downtime (default `one`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CronCatchUp>,
}

/// Params of `cron.update`: the job by name, and the fields to change.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "CronUpdateParams")]
pub struct CronUpdateParams {
    /// The job.
    pub name: CronName,
    /// A new schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<CronSchedule>,
    /// A new message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageText>,
    /// A new session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_key: Option<SessionKey>,
    /// A new agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentId>,
    /// Enables or disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// A new catch-up rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CronCatchUp>,
}

/// Params of `cron.remove` and `cron.run`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "CronNameParams")]
pub struct CronNameParams {
    /// The job.
    pub name: CronName,
}

/// One job, as `cron.list`, `cron.add` and `cron.update` tell it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "CronJob")]
pub struct CronJob {
    /// Its name.
    pub name: String,
    /// When it fires.
    pub schedule: CronSchedule,
    /// The message each firing sends.
    pub message: String,
    /// Its session.
    pub session_key: String,
    /// The agent it names, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The next scheduled time (ms since the epoch); `null` when disabled or done (a passed
    /// `at`).
    #[serde(default)]
    pub next_run_at: Option<u64>,
    /// When it last fired (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<u64>,
    /// The run it last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_id: Option<String>,
    /// How that run ended (`final`, `aborted`, `error`), or `failed` when the last firing could
    /// not start a run; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
    /// The scheduled time the last firing was for (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled_at: Option<u64>,
    /// Whether it fires.
    pub enabled: bool,
    /// Catch-up after downtime.
    pub catch_up: CronCatchUp,
    /// Where it is declared (`store` or `config`).
    pub source: CronSource,
}

/// Result of `cron.list`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "CronListResult")]
pub struct CronListResult {
    /// Every job, by name.
    pub jobs: Vec<CronJob>,
}

/// Result of `cron.remove`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "CronRemoveResult")]
pub struct CronRemoveResult {
    /// Always true (an unknown name is `-32022`).
    pub removed: bool,
}

/// Result of `cron.run`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "CronRunResult")]
pub struct CronRunResult {
    /// The run started.
    pub run_id: String,
}

/// What happened to one firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[schemars(title = "CronFiringState")]
pub enum CronFiringState {
    /// A run was started.
    Started,
    /// No run was started: the previous one is still active or queued, or the time passed
    /// while the gateway was down and `catchUp` is `none`.
    Skipped,
    /// The run could not start (`error` says why).
    Failed,
}

/// The `cron.changed` event: a job fired, was skipped, or failed to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "CronChangedEvent")]
pub struct CronChangedEvent {
    /// The job.
    pub name: String,
    /// `started`, `skipped` or `failed`.
    pub state: CronFiringState,
    /// The run started (`started`), or the one still active (`skipped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Why it was skipped or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The scheduled time this firing is for (ms); absent for `cron.run`. Never two
    /// `started` events of one job carry the same value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<u64>,
    /// The firing catches up a time that passed while the gateway was down.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catch_up: bool,
    /// The session of the run.
    pub session_key: String,
}
