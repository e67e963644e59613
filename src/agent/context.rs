//! The context sent to the model for a turn, prepared from the newest transcript messages so
//! that every tool call sits right before its results and no result stands without its call.

use crate::protocol::{Role, ToolCall, TranscriptMessage};
use crate::store::NewMessage;

/// The context sent to the model: never opens with an orphan tool result, and every tool call
/// has a result (a missing one, from an interrupted run, gets a synthetic error result).
pub fn prepare_context(messages: Vec<TranscriptMessage>) -> Vec<TranscriptMessage> {
    let start = messages
        .iter()
        .position(|m| m.role != Role::Tool)
        .unwrap_or(messages.len());
    let mut out: Vec<TranscriptMessage> = Vec::with_capacity(messages.len());
    let mut iter = messages.into_iter().skip(start).peekable();
    while let Some(m) = iter.next() {
        if m.role == Role::Tool {
            // A tool result without its call (should not happen): leave it out.
            continue;
        }
        if m.role == Role::Assistant && m.content.is_empty() && m.tool_calls.is_none() {
            // A marker of a failed turn with no text: nothing for the model to read.
            continue;
        }
        let calls: Vec<ToolCall> = m.tool_calls.clone().unwrap_or_default();
        let is_assistant = m.role == Role::Assistant;
        out.push(m);
        if is_assistant && !calls.is_empty() {
            let mut results: Vec<TranscriptMessage> = Vec::new();
            while let Some(next) = iter.peek() {
                if next.role != Role::Tool {
                    break;
                }
                if let Some(r) = iter.next() {
                    results.push(r);
                }
            }
            for call in &calls {
                match results
                    .iter()
                    .position(|r| r.tool_call_id.as_deref() == Some(call.id.as_str()))
                {
                    Some(i) => out.push(results.remove(i)),
                    None => {
                        let mut synthetic =
                            NewMessage::new(Role::Tool, "no result: the run was interrupted")
                                .message;
                        synthetic.tool_call_id = Some(call.id.clone());
                        synthetic.is_error = Some(true);
                        out.push(synthetic);
                    }
                }
            }
        }
    }
    out
}
