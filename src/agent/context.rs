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

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, content: &str) -> TranscriptMessage {
        NewMessage::new(role, content).message
    }

    fn calling(content: &str, ids: &[&str]) -> TranscriptMessage {
        let mut m = msg(Role::Assistant, content);
        m.tool_calls = Some(
            ids.iter()
                .map(|id| ToolCall {
                    id: id.to_string(),
                    name: "read_file".into(),
                    input: serde_json::json!({}),
                })
                .collect(),
        );
        m
    }

    fn result(id: &str, content: &str) -> TranscriptMessage {
        let mut m = msg(Role::Tool, content);
        m.tool_call_id = Some(id.into());
        m.is_error = Some(false);
        m
    }

    /// Each message as `role:content` (a tool result as `tool[id]:content`).
    fn shape(messages: &[TranscriptMessage]) -> Vec<String> {
        messages
            .iter()
            .map(|m| match (&m.role, &m.tool_call_id) {
                (Role::Tool, Some(id)) => format!("tool[{id}]:{}", m.content),
                (role, _) => format!(
                    "{}:{}",
                    serde_json::json!(role).as_str().unwrap_or("?"),
                    m.content
                ),
            })
            .collect()
    }

    #[test]
    fn a_plain_conversation_passes_unchanged() {
        let input = vec![
            msg(Role::System, "be brief"),
            msg(Role::User, "hi"),
            msg(Role::Assistant, "hello"),
            msg(Role::User, "bye"),
        ];
        assert_eq!(prepare_context(input.clone()), input);
        assert!(prepare_context(Vec::new()).is_empty());
    }

    #[test]
    fn the_context_never_opens_with_results_whose_call_was_cut_off() {
        let out = prepare_context(vec![
            result("a", "old"),
            result("b", "older"),
            msg(Role::User, "next"),
            msg(Role::Assistant, "ok"),
        ]);
        assert_eq!(shape(&out), ["user:next", "assistant:ok"]);
        // Nothing but orphans: nothing at all.
        assert!(prepare_context(vec![result("a", "x")]).is_empty());
    }

    #[test]
    fn results_follow_their_calls_in_call_order_and_stray_results_are_dropped() {
        let out = prepare_context(vec![
            msg(Role::User, "look"),
            calling("Let me look.", &["c1", "c2"]),
            result("c2", "two"),
            result("stray", "not asked for"),
            result("c1", "one"),
            msg(Role::Assistant, "done"),
            // A result after a text message has no call before it.
            result("c1", "again"),
            msg(Role::User, "thanks"),
        ]);
        assert_eq!(
            shape(&out),
            [
                "user:look",
                "assistant:Let me look.",
                "tool[c1]:one",
                "tool[c2]:two",
                "assistant:done",
                "user:thanks",
            ]
        );
    }

    #[test]
    fn a_call_without_a_result_gets_a_synthetic_error_result() {
        let out = prepare_context(vec![
            msg(Role::User, "look"),
            calling("", &["c1", "c2"]),
            result("c1", "one"),
            msg(Role::User, "are you there?"),
        ]);
        assert_eq!(
            shape(&out),
            [
                "user:look",
                "assistant:",
                "tool[c1]:one",
                "tool[c2]:no result: the run was interrupted",
                "user:are you there?",
            ]
        );
        assert_eq!(out[3].is_error, Some(true));
        assert_eq!(
            out[2].is_error,
            Some(false),
            "a real result is kept as it is"
        );
        // The call is the last message (the run was cut right after it).
        let out = prepare_context(vec![msg(Role::User, "look"), calling("x", &["c9"])]);
        assert_eq!(
            shape(&out),
            [
                "user:look",
                "assistant:x",
                "tool[c9]:no result: the run was interrupted"
            ]
        );
    }

    #[test]
    fn every_call_in_the_context_is_directly_followed_by_one_result_each() {
        let out = prepare_context(vec![
            result("x", "orphan"),
            msg(Role::User, "a"),
            calling("one", &["c1"]),
            calling("two", &["c2", "c3"]),
            result("c3", "three"),
            result("c3", "three again"),
            msg(Role::User, "b"),
        ]);
        let mut i = 0;
        while i < out.len() {
            let calls = out[i].tool_calls.clone().unwrap_or_default();
            for (k, call) in calls.iter().enumerate() {
                let r = &out[i + 1 + k];
                assert_eq!(r.role, Role::Tool, "{:?}", shape(&out));
                assert_eq!(r.tool_call_id.as_deref(), Some(call.id.as_str()));
            }
            let after = out.get(i + 1 + calls.len());
            assert!(
                calls.is_empty() || after.is_none_or(|m| m.role != Role::Tool),
                "no extra result after a call's results: {:?}",
                shape(&out)
            );
            i += 1 + calls.len();
        }
        assert!(
            out.iter()
                .any(|m| m.tool_call_id.as_deref() == Some("c3") && m.content == "three")
        );
        assert!(!out.iter().any(|m| m.content == "three again"));
    }

    #[test]
    fn an_empty_assistant_message_without_calls_is_left_out() {
        // What a failed turn with no text leaves in the transcript (it carries the error).
        let mut failed = msg(Role::Assistant, "");
        failed.error = Some(crate::protocol::MessageError {
            kind: "upstream".into(),
            message: "boom".into(),
        });
        let out = prepare_context(vec![
            msg(Role::User, "hi"),
            failed,
            msg(Role::User, "again"),
        ]);
        assert_eq!(shape(&out), ["user:hi", "user:again"]);
    }
}
