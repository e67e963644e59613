//! The tool calls of one model turn: each, in call order, refused (broken, unknown, denied,
//! interrupted by a restart), asked of a person first where the agent's `tools.ask` or
//! `tools.exec = "ask"` says so, marked `started` in the transcript when it is not read-only,
//! run under the run's cancellation, and its result written.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::protocol::{
    Approval, ApprovalDecision, ApprovalState, ApprovalsChangedEvent, ChatEvent, Role, ToolCall,
};
use crate::store::transcript::{ApprovalLine, ToolMarker};
use crate::store::{NewMessage, Record, RunTrail};
use crate::util::now_ms;

use super::{Ending, LoopHost, Run};
use crate::agent::approvals::{Resolution, resolved};
use crate::agent::output::cut_output;
use crate::agent::policy::ToolPolicy;
use crate::agent::providers::ToolSpec;
use crate::agent::tools::{self, Tool, ToolContext, ToolOutput};

/// How long a tool may take to stop by itself once its run is cancelled (to kill what it
/// started and say so) before it is dropped.
const TOOL_STOP_GRACE: Duration = Duration::from_millis(500);

/// The result of a call a restart interrupted after it started (it is never run twice).
pub(super) const INTERRUPTED_RESULT: &str = "interrupted by a gateway restart; not run again";

/// The tools of a run and what they get besides their input.
pub(super) struct ToolSetup {
    tools: Arc<Vec<Arc<dyn Tool>>>,
    pub(super) ctx: ToolContext,
}

/// The calls of one turn.
pub(super) struct Calls<'a> {
    pub(super) turn: u32,
    pub(super) calls: &'a [ToolCall],
    /// Calls whose input could not be parsed, with why: never run.
    pub(super) broken: &'a [(ToolCall, String)],
    /// Resuming: what the transcript says of these calls.
    pub(super) trail: Option<&'a RunTrail>,
}

/// How asking a person ended.
enum Asked {
    Allowed,
    Denied(String),
    /// The run was stopped while it waited.
    Stopped,
}

impl ToolSetup {
    /// The tools `tools` of `run`'s agent, in its workspace.
    pub(super) fn new<G: LoopHost>(run: &Run<'_, G>, tools: Arc<Vec<Arc<dyn Tool>>>) -> Self {
        let config = &run.agent.config;
        let workspace = config
            .workspace
            .clone()
            .unwrap_or_else(|| run.gw.data_dir().join("workspace"));
        Self {
            tools,
            ctx: ToolContext {
                workspace,
                cancel: run.ctl.cancel.child_token(),
                exec: config.tools.exec,
                protected: Arc::new(tools::Protected {
                    data_dir: run.gw.data_dir().clone(),
                    config_file: run.gw.config_path().clone(),
                }),
            },
        }
    }

    /// What the model is told of the tools.
    pub(super) fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec()).collect()
    }

    /// Runs `calls` in order and writes their results; the run's ending when it stopped or
    /// could not write.
    pub(super) async fn run_calls<G: LoopHost>(
        &self,
        run: &Run<'_, G>,
        calls: Calls<'_>,
    ) -> Result<(), Ending> {
        let policy = ToolPolicy::new(&run.agent.config.tools);
        let cancel = &run.ctl.cancel;
        for (i, call) in calls.calls.iter().enumerate() {
            if calls.trail.is_some_and(|t| t.results.contains(&call.id)) {
                continue;
            }
            if cancel.is_cancelled() {
                write_unrun(run, &calls.calls[i..], calls.trail).await;
                return Err(Ending::stopped());
            }
            let tool = self.tools.iter().find(|t| t.spec().name == call.name);
            let started = calls
                .trail
                .is_some_and(|t| t.started_tools.contains(&call.id));
            let mut refusal = calls
                .broken
                .iter()
                .find(|(b, _)| b.id == call.id)
                .map(|(_, why)| format!("not run: {why}"));
            if refusal.is_none() {
                refusal = match tool {
                    _ if policy.denied(&call.name) => Some(format!(
                        "not run: the tool `{}` is denied by tools.deny",
                        call.name
                    )),
                    None => Some(format!("unknown tool `{}`", call.name)),
                    Some(t) if started && !t.read_only() => Some(INTERRUPTED_RESULT.into()),
                    Some(_) => None,
                };
            }
            if refusal.is_none() && policy.asks(&call.name) && !remembered(run, &call.name).await {
                let earlier = calls.trail.and_then(|t| t.approvals.get(&call.id));
                match earlier.map(|line| (line.state, line)) {
                    // Resolved before the restart: what was decided stands.
                    Some((ApprovalState::Allowed, _)) => {}
                    Some((ApprovalState::Denied, line)) => {
                        refusal = Some(denial(line.by.as_deref(), line.reason.as_deref()));
                    }
                    pending => {
                        let id = pending.map(|(_, line)| line.approval_id.clone());
                        match ask(run, calls.turn, call, id).await {
                            Asked::Allowed => {}
                            Asked::Denied(text) => refusal = Some(text),
                            Asked::Stopped => {
                                write_unrun(run, &calls.calls[i..], calls.trail).await;
                                return Err(Ending::stopped());
                            }
                        }
                    }
                }
            }
            run.emitter.emit(ChatEvent {
                turn: Some(calls.turn),
                tool_call_id: Some(call.id.clone()),
                name: Some(call.name.clone()),
                input: Some(call.input.clone()),
                ..run.emitter.base("tool_start")
            });
            let refused = refusal.is_some() || tool.is_none();
            let (output, stopped_meanwhile) = match (refusal, tool) {
                (Some(content), _) => (
                    ToolOutput {
                        content,
                        is_error: true,
                    },
                    false,
                ),
                (None, None) => (
                    ToolOutput {
                        content: format!("unknown tool `{}`", call.name),
                        is_error: true,
                    },
                    false,
                ),
                (None, Some(tool)) => {
                    if !tool.read_only() {
                        // Before it can act: after a crash, it is never run a second time.
                        let marker = ToolMarker {
                            tool_call_id: call.id.clone(),
                            ts: now_ms(),
                            state: "started".into(),
                            run_id: Some(run.run_id.clone()),
                        };
                        if let Err(e) = run.write(vec![Record::Tool(marker)]).await {
                            return Err(Ending::internal(format!(
                                "cannot mark the tool call started: {e}"
                            )));
                        }
                    }
                    call_tool(tool.as_ref(), &call.input, &self.ctx, cancel).await
                }
            };
            if stopped_meanwhile && run.ctl.is_suspended() {
                // No result: resuming answers it as interrupted (or runs it again if read-only).
                return Err(Ending::stopped());
            }
            let content = cut_output(output.content);
            let mut result = NewMessage::new(Role::Tool, content.clone());
            result.message.tool_call_id = Some(call.id.clone());
            result.message.is_error = Some(output.is_error);
            result.message.run_id = Some(run.run_id.clone());
            if stopped_meanwhile {
                // Typed, so readers need not parse the text.
                result.message.aborted = Some(true);
            }
            if run.write(vec![Record::Message(result)]).await.is_err() {
                return Err(Ending::internal("cannot write a tool result"));
            }
            let tool_name = tool.map(|t| t.spec().name);
            crate::metrics::tool_call(
                tool_name.as_deref().unwrap_or(crate::metrics::UNKNOWN),
                match () {
                    _ if refused => "refused",
                    _ if stopped_meanwhile => "aborted",
                    _ if output.is_error => "error",
                    _ => "ok",
                },
            );
            run.emitter.emit(ChatEvent {
                turn: Some(calls.turn),
                tool_call_id: Some(call.id.clone()),
                name: Some(call.name.clone()),
                output: Some(content),
                is_error: Some(output.is_error),
                ..run.emitter.base("tool_end")
            });
        }
        Ok(())
    }
}

/// Whether a person allowed `name` for the rest of the run's session (read from the
/// transcript once per session id).
async fn remembered<G: LoopHost>(run: &Run<'_, G>, name: &str) -> bool {
    let approvals = run.gw.approvals();
    if !approvals.remembered_loaded(&run.session_id) {
        let names = run
            .store()
            .remembered_tools(&run.key)
            .await
            .unwrap_or_default();
        approvals.load_remembered(&run.session_id, names);
    }
    approvals.is_remembered(&run.session_id, name)
}

/// The result of a call that was denied.
fn denial(by: Option<&str>, reason: Option<&str>) -> String {
    let by = by.unwrap_or("a person");
    match (by, reason) {
        ("timeout", _) => "not run: denied because no one approved it in time (timeout)".into(),
        (by, Some(reason)) => format!("not run: denied by {by}: {reason}"),
        (by, None) => format!("not run: denied by {by}"),
    }
}

/// The approval line recording `approval` now.
fn line_of(approval: &Approval, remember: bool) -> Record {
    Record::Approval(Box::new(ApprovalLine {
        approval_id: approval.approval_id.clone(),
        ts: now_ms(),
        state: approval.state,
        tool_call_id: approval.tool_call_id.clone(),
        name: approval.name.clone(),
        run_id: Some(approval.run_id.clone()),
        decision: approval.decision,
        by: approval.by.clone(),
        reason: approval.reason.clone(),
        remember: remember.then(|| "session".to_string()),
    }))
}

/// Asks a person whether `call` may run (with `approval_id` again when resuming), waiting
/// without holding anything that slows anyone else; the run timeout stops counting meanwhile.
async fn ask<G: LoopHost>(
    run: &Run<'_, G>,
    turn: u32,
    call: &ToolCall,
    approval_id: Option<String>,
) -> Asked {
    let approvals = run.gw.approvals();
    let tools = &run.agent.config.tools;
    let timeout = Duration::from_millis(tools.approval_timeout_ms);
    let now = now_ms();
    let approval = Approval {
        approval_id: approval_id.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
        state: ApprovalState::Pending,
        run_id: run.run_id.clone(),
        session_key: run.key.clone(),
        agent_id: run.agent.id.clone(),
        tool_call_id: call.id.clone(),
        name: call.name.clone(),
        input: call.input.clone(),
        requested_at: now,
        expires_at: now.saturating_add(tools.approval_timeout_ms),
        decision: None,
        by: None,
        reason: None,
    };
    if let Err(e) = run.write(vec![line_of(&approval, false)]).await {
        return Asked::Denied(format!("not run: the approval could not be recorded: {e}"));
    }
    let mut rx = approvals.request(approval.clone(), tools.approvers.clone());
    run.ctl.set_waiting(true);
    run.emitter.emit(ChatEvent {
        turn: Some(turn),
        approval_id: Some(approval.approval_id.clone()),
        tool_call_id: Some(call.id.clone()),
        name: Some(call.name.clone()),
        input: Some(call.input.clone()),
        expires_at: Some(approval.expires_at),
        ..run.emitter.base("approval_requested")
    });
    run.emitter.publish(&ApprovalsChangedEvent {
        approval: approval.clone(),
    });
    enum Woke {
        Resolved(Option<Resolution>),
        TimedOut,
        Cancelled,
    }
    let woke = tokio::select! {
        r = &mut rx => Woke::Resolved(r.ok()),
        _ = tokio::time::sleep(timeout) => Woke::TimedOut,
        _ = run.ctl.cancel.cancelled() => Woke::Cancelled,
    };
    let by_run = |by: &str| Resolution {
        decision: ApprovalDecision::Deny,
        by: by.into(),
        reason: None,
        remember: false,
    };
    let resolution = match woke {
        Woke::Resolved(r) => r,
        Woke::Cancelled if run.ctl.is_suspended() => {
            // Still pending in the transcript: asked again, same id, after the restart.
            approvals.withdraw(&approval.approval_id);
            run.ctl.set_waiting(false);
            return Asked::Stopped;
        }
        Woke::TimedOut | Woke::Cancelled => {
            let by = if matches!(woke, Woke::TimedOut) {
                "timeout"
            } else {
                "abort"
            };
            match approvals.settle(&approval.approval_id, by_run(by)) {
                Some(_) => Some(by_run(by)),
                // A person came first: theirs stands.
                None => rx.await.ok(),
            }
        }
    };
    run.ctl.set_waiting(false);
    let resolution = resolution.unwrap_or_else(|| by_run("abort"));
    let done = resolved(approval, &resolution);
    let remember = resolution.remember && resolution.decision == ApprovalDecision::Allow;
    if remember {
        approvals.remember(&run.session_id, &done.name);
    }
    if let Err(err) = run.write(vec![line_of(&done, remember)]).await {
        tracing::warn!(run = %run.run_id, %err, "cannot record an approval's resolution");
    }
    run.emitter.emit(ChatEvent {
        approval_id: Some(done.approval_id.clone()),
        decision: Some(resolution.decision),
        by: Some(resolution.by.clone()),
        ..run.emitter.base("approval_resolved")
    });
    run.emitter.publish(&ApprovalsChangedEvent {
        approval: done.clone(),
    });
    if run.ctl.cancel.is_cancelled() {
        return Asked::Stopped;
    }
    match resolution.decision {
        ApprovalDecision::Allow => Asked::Allowed,
        ApprovalDecision::Deny => {
            Asked::Denied(denial(Some(&resolution.by), resolution.reason.as_deref()))
        }
    }
}

/// Runs one tool call, which cannot outlive the run's cancellation: a tool (built-in, plugin)
/// that ignores its token gets [`TOOL_STOP_GRACE`], then its future is dropped.
///
/// Returns the output and whether the run was already stopped when it came back (the tool
/// killed what it ran, or it was dropped): such a result is stored as `aborted`.
pub(super) async fn call_tool(
    tool: &dyn Tool,
    input: &serde_json::Value,
    ctx: &ToolContext,
    cancel: &CancellationToken,
) -> (ToolOutput, bool) {
    let mut call = tool.call(input.clone(), ctx.clone());
    let output = tokio::select! {
        biased;
        output = &mut call => output,
        _ = cancel.cancelled() => match tokio::time::timeout(TOOL_STOP_GRACE, &mut call).await {
            Ok(output) => output,
            Err(_) => ToolOutput {
                content: format!(
                    "aborted: the run was stopped and the tool `{}` did not stop by itself, so it was dropped",
                    tool.spec().name
                ),
                is_error: true,
            },
        },
    };
    (output, cancel.is_cancelled())
}

/// Writes an error result, marked `aborted`, for each of `calls` that has none, which the run
/// stopped before running; nothing when the run was suspended (resuming answers them).
async fn write_unrun<G: LoopHost>(run: &Run<'_, G>, calls: &[ToolCall], trail: Option<&RunTrail>) {
    if run.ctl.is_suspended() {
        return;
    }
    let results = calls
        .iter()
        .filter(|call| trail.is_none_or(|t| !t.results.contains(&call.id)))
        .map(|call| {
            let mut m = NewMessage::new(
                Role::Tool,
                "aborted: the run was stopped before this tool finished",
            );
            m.message.tool_call_id = Some(call.id.clone());
            m.message.is_error = Some(true);
            m.message.aborted = Some(true);
            m.message.run_id = Some(run.run_id.clone());
            Record::Message(m)
        })
        .collect();
    let _ = run.write(results).await;
}
