//! Running one tool call under the run's cancellation, and the results written for the calls
//! a stopped run never ran.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::protocol::{Role, ToolCall};
use crate::store::{NewMessage, Store};

use super::tools::{Tool, ToolContext, ToolOutput};

/// How long a tool may take to stop by itself once its run is cancelled (to kill what it
/// started and say so) before it is dropped.
const TOOL_STOP_GRACE: Duration = Duration::from_millis(500);

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

/// Writes an error result, marked `aborted`, for each of `calls`, which the run stopped before
/// running.
pub(super) async fn write_aborted_results(
    store: &Store,
    key: &str,
    sid: Option<&str>,
    run_id: &str,
    calls: &[ToolCall],
) {
    let results = calls
        .iter()
        .map(|call| {
            let mut m = NewMessage::new(
                Role::Tool,
                "aborted: the run was stopped before this tool finished",
            );
            m.message.tool_call_id = Some(call.id.clone());
            m.message.is_error = Some(true);
            m.message.aborted = Some(true);
            m.message.run_id = Some(run_id.to_string());
            m
        })
        .collect();
    let _ = store.append_to(key, sid, results).await;
}
