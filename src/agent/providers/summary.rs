//! The summary call of a compaction: what it asks for, the prompt every real provider is sent,
//! and the deterministic summary the offline `echo` provider gives instead.
//!
//! A summary call is not a turn: no tools are offered, nothing streams to clients, and its
//! usage goes on the compaction line, not into a run's.

use super::TurnRequest;
use crate::protocol::{Role, TranscriptMessage};
use crate::store::NewMessage;

/// Characters of one message the summary prompt carries at most (a long tool output is cut,
/// with a marker saying how much was left out): the summary call must fit where the turn did
/// not.
pub const MAX_MESSAGE_CHARS: usize = 16_000;

/// Words of each message the `echo` provider's summary keeps.
pub const ECHO_WORDS: usize = 3;

/// What the system prompt of a summary call asks for.
pub const SUMMARY_PROMPT: &str = "You write the summary that replaces the older part of a \
conversation between a user and an AI assistant that uses tools, so that the assistant can go on \
without it. Keep what later turns need: the user's goals, requests and preferences; decisions and \
their reasons; facts learned (names, numbers, file paths, commands and what they returned); work \
done and work still open. Leave out greetings and anything later superseded. Fold the previous \
summary, when there is one, into yours: yours replaces it. Write in the conversation's language, \
as short paragraphs or bullet points, without a preamble. Answer with the summary only.";

/// One summary call.
#[derive(Debug, Clone)]
pub struct SummaryRequest {
    /// The model (the agent's, as for the turns).
    pub model: String,
    /// The summary this one rolls in, if an earlier compaction wrote one.
    pub previous: Option<String>,
    /// The older part of the context, oldest first.
    pub messages: Vec<TranscriptMessage>,
    /// What the caller of `sessions.compact` asked the summary to keep or stress.
    pub instructions: Option<String>,
    /// Output cap.
    pub max_tokens: u32,
}

impl SummaryRequest {
    /// The call a real provider is sent: the summary prompt as the system message, then one
    /// user message holding the previous summary, the older messages (each cut at
    /// [`MAX_MESSAGE_CHARS`]) and the caller's instructions; no tools.
    pub fn to_turn(&self) -> TurnRequest {
        let mut text = String::new();
        if let Some(previous) = &self.previous {
            text.push_str("<previous_summary>\n");
            text.push_str(previous);
            text.push_str("\n</previous_summary>\n\n");
        }
        text.push_str("<conversation>\n");
        for m in &self.messages {
            text.push_str(&render(m, &self.messages));
            text.push('\n');
        }
        text.push_str("</conversation>\n\n");
        if let Some(instructions) = &self.instructions {
            text.push_str("<instructions>\n");
            text.push_str(instructions);
            text.push_str("\n</instructions>\n\n");
        }
        text.push_str(if self.previous.is_some() {
            "Write the summary of the conversation above, folding in the previous summary."
        } else {
            "Write the summary of the conversation above."
        });
        TurnRequest {
            model: self.model.clone(),
            system: Some(SUMMARY_PROMPT.to_string()),
            messages: vec![NewMessage::new(Role::User, text).message],
            tools: Vec::new(),
            max_tokens: self.max_tokens,
        }
    }
}

/// One message of the summary prompt: `[role] text`, tool calls and results named.
fn render(m: &TranscriptMessage, all: &[TranscriptMessage]) -> String {
    let mut out = match m.role {
        Role::User => "[user] ".to_string(),
        Role::Assistant => "[assistant] ".to_string(),
        Role::System => "[system] ".to_string(),
        Role::Tool => {
            let name = all
                .iter()
                .filter_map(|c| c.tool_calls.as_ref())
                .flatten()
                .find(|c| Some(&c.id) == m.tool_call_id.as_ref())
                .map_or("a tool", |c| c.name.as_str());
            let verdict = if m.is_error == Some(true) {
                "failed"
            } else {
                "returned"
            };
            format!("[{name} {verdict}] ")
        }
    };
    out.push_str(&cut(&m.content));
    for call in m.tool_calls.iter().flatten() {
        out.push_str(&format!(
            "\n[assistant called {} with {}]",
            call.name,
            cut(&call.input.to_string())
        ));
    }
    out
}

/// `text` cut at [`MAX_MESSAGE_CHARS`] characters, with a marker when anything was left out.
fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        None => text.to_string(),
        Some((at, _)) => {
            let left = text[at..].chars().count();
            format!("{} [… {left} more characters left out]", &text[..at])
        }
    }
}

/// The `echo` provider's summary: `Summary of N messages: ` and the first [`ECHO_WORDS`] words
/// of each message, `; ` between them (a message without text gives its tool calls' names, or
/// `…`). Deterministic and offline; the previous summary is not rolled in.
pub fn first_words(messages: &[TranscriptMessage]) -> String {
    let parts: Vec<String> = messages
        .iter()
        .map(|m| {
            let words: Vec<&str> = m.content.split_whitespace().take(ECHO_WORDS).collect();
            if !words.is_empty() {
                return words.join(" ");
            }
            let calls: Vec<&str> = m
                .tool_calls
                .iter()
                .flatten()
                .map(|c| c.name.as_str())
                .collect();
            if calls.is_empty() {
                "…".to_string()
            } else {
                format!("(calls {})", calls.join(", "))
            }
        })
        .collect();
    format!(
        "Summary of {} messages: {}",
        messages.len(),
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ToolCall;

    fn msg(role: Role, content: &str) -> TranscriptMessage {
        NewMessage::new(role, content).message
    }

    #[test]
    fn echo_gives_the_first_words_of_each_message() {
        let mut call = msg(Role::Assistant, "");
        call.tool_calls = Some(vec![ToolCall {
            id: "c1".into(),
            name: "read_file".into(),
            input: serde_json::json!({}),
        }]);
        let text = first_words(&[
            msg(Role::User, "  please   read my notes today"),
            call,
            msg(Role::Tool, "hi"),
            msg(Role::Assistant, " "),
        ]);
        assert_eq!(
            text,
            "Summary of 4 messages: please read my; (calls read_file); hi; …"
        );
        assert_eq!(first_words(&[]), "Summary of 0 messages: ");
    }

    #[test]
    fn the_prompt_holds_the_previous_summary_the_messages_and_the_instructions() {
        let mut call = msg(Role::Assistant, "Let me look.");
        call.tool_calls = Some(vec![ToolCall {
            id: "c1".into(),
            name: "read_file".into(),
            input: serde_json::json!({"path": "a.txt"}),
        }]);
        let mut result = msg(Role::Tool, &"x".repeat(MAX_MESSAGE_CHARS + 5));
        result.tool_call_id = Some("c1".into());
        result.is_error = Some(false);
        let request = SummaryRequest {
            model: "m".into(),
            previous: Some("They met.".into()),
            messages: vec![msg(Role::User, "read a.txt"), call, result],
            instructions: Some("Keep the numbers.".into()),
            max_tokens: 100,
        };
        let turn = request.to_turn();
        assert!(turn.tools.is_empty());
        assert_eq!(turn.max_tokens, 100);
        assert_eq!(turn.system.as_deref(), Some(SUMMARY_PROMPT));
        assert_eq!(turn.messages.len(), 1);
        assert_eq!(turn.messages[0].role, Role::User);
        let user = &turn.messages[0].content;
        for part in [
            "<previous_summary>\nThey met.\n</previous_summary>",
            "[user] read a.txt\n",
            "[assistant] Let me look.\n[assistant called read_file with {\"path\":\"a.txt\"}]",
            "[read_file returned] xxx",
            "[… 5 more characters left out]",
            "<instructions>\nKeep the numbers.\n</instructions>",
            "folding in the previous summary",
        ] {
            assert!(user.contains(part), "{part:?} in {user}");
        }
    }
}
