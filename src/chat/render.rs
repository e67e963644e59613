//! What `clawgate chat` prints: transcript messages, tool lines, approval questions, and the
//! streamed text of a run cut into whole lines. Pure functions, no terminal and no network.

use std::collections::HashMap;

use crate::protocol::{Role, TranscriptMessage};

/// At most this many lines of a tool's output are shown (the rest is counted).
const TOOL_OUTPUT_LINES: usize = 8;
/// A tool input or output line longer than this is cut with `…`.
const MAX_LINE_CHARS: usize = 240;
/// An approval question shows this much of the input (the person decides on it).
const MAX_QUESTION_CHARS: usize = 4000;
/// Streamed text with no newline is broken at a space once it is this long.
const WRAP_CHARS: usize = 100;

/// `s` cut at `max` characters, with `…` when something was cut.
pub fn clip(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// A tool's input as one line of JSON.
pub fn input_line(input: &serde_json::Value) -> String {
    clip(&input.to_string(), MAX_LINE_CHARS)
}

/// `⚙ exec {"command":"echo hi"}`: a tool call begins.
pub fn tool_start(name: &str, input: &serde_json::Value) -> String {
    format!("⚙ {name} {}", input_line(input))
}

/// `✓ exec: <output>` (or `✗` for an error): the first lines of the output, the later ones
/// indented and counted past [`TOOL_OUTPUT_LINES`].
pub fn tool_end(name: &str, output: &str, is_error: bool) -> String {
    let mark = if is_error { '✗' } else { '✓' };
    let lines: Vec<&str> = output.trim_end().lines().collect();
    let mut out = format!("{mark} {name}:");
    match lines.split_first() {
        None => out.push_str(" (no output)"),
        Some((first, rest)) => {
            out.push(' ');
            out.push_str(&clip(first, MAX_LINE_CHARS));
            for line in rest.iter().take(TOOL_OUTPUT_LINES.saturating_sub(1)) {
                out.push_str("\n  ");
                out.push_str(&clip(line, MAX_LINE_CHARS));
            }
            let more = lines.len().saturating_sub(TOOL_OUTPUT_LINES);
            if more > 0 {
                out.push_str(&format!("\n  … ({more} more lines)"));
            }
        }
    }
    out
}

/// The approval question: `allow exec {"command":"echo hi"}? [y]es / [n]o / [a]lways: `.
pub fn approval_question(name: &str, input: &serde_json::Value) -> String {
    format!(
        "allow {name} {}? [y]es / [n]o / [a]lways: ",
        clip(&input.to_string(), MAX_QUESTION_CHARS)
    )
}

/// A person's answer to an approval question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Run this call.
    Yes,
    /// Do not run it.
    No,
    /// Run it and every later call of that tool in this session.
    Always,
}

/// `y`/`yes`, `n`/`no`, `a`/`always` (any case, spaces around); anything else is `None`.
pub fn parse_answer(line: &str) -> Option<Answer> {
    match line.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Some(Answer::Yes),
        "n" | "no" => Some(Answer::No),
        "a" | "always" => Some(Answer::Always),
        _ => None,
    }
}

/// `text` with every line after the first indented by `indent`.
fn indented(first_prefix: &str, text: &str, indent: &str) -> String {
    let mut out = String::from(first_prefix);
    for (i, line) in text.lines().enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(indent);
        }
        out.push_str(line);
    }
    out
}

/// A user message: `» text`.
pub fn user_line(text: &str) -> String {
    indented("» ", text.trim_end(), "  ")
}

/// The lines of a page of history, oldest first: user messages as `» …`, the model's text as
/// it is, its tool calls and their results as tool lines, system messages as `[system] …`.
pub fn history(messages: &[TranscriptMessage]) -> Vec<String> {
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::new();
    for m in messages {
        match m.role {
            Role::User => out.push(user_line(&m.content)),
            Role::System => out.push(indented("[system] ", m.content.trim_end(), "  ")),
            Role::Assistant => {
                let text = m.content.trim_end();
                if !text.is_empty() {
                    out.push(text.to_string());
                }
                for call in m.tool_calls.iter().flatten() {
                    names.insert(call.id.as_str(), call.name.as_str());
                    out.push(tool_start(&call.name, &call.input));
                }
                if m.aborted == Some(true) {
                    out.push("✗ aborted".into());
                }
                if let Some(err) = &m.error {
                    out.push(format!("✗ error ({}): {}", err.kind, err.message));
                }
            }
            Role::Tool => {
                let name = m
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| names.get(id).copied())
                    .unwrap_or("tool");
                out.push(tool_end(name, &m.content, m.is_error == Some(true)));
            }
        }
    }
    out
}

/// The runs a page of history shows ended: those with an assistant message that closes them
/// (a stop reason other than `tool_use`, an abort or an error).
pub fn ended_runs(messages: &[TranscriptMessage]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m.role == Role::Assistant)
        .filter(|m| {
            m.aborted == Some(true)
                || m.error.is_some()
                || m.stop_reason.as_deref().is_some_and(|r| r != "tool_use")
        })
        .filter_map(|m| m.run_id.clone())
        .collect()
}

/// Streamed text cut into whole lines: deltas go in, lines come out as soon as they are
/// complete (or long enough to break at a space); blank lines are held until text follows
/// them, so a turn's trailing newlines print nothing.
#[derive(Debug, Default)]
pub struct TextStream {
    partial: String,
    blank_lines: usize,
    /// Whether any text came in since the last [`TextStream::reset`].
    pub seen_text: bool,
}

impl TextStream {
    /// Adds a delta; the lines it completed.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        if !text.is_empty() {
            self.seen_text = true;
        }
        self.partial.push_str(text);
        let mut out = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial[..i].trim_end_matches('\r').to_string();
            self.partial.drain(..=i);
            self.emit(line, &mut out);
        }
        while self.partial.chars().count() > WRAP_CHARS {
            // Break at the last space within the width, or hard at the width.
            let limit = self
                .partial
                .char_indices()
                .nth(WRAP_CHARS)
                .map_or(self.partial.len(), |(i, _)| i);
            let cut = self.partial[..limit]
                .rfind(' ')
                .filter(|&i| i > 0)
                .unwrap_or(limit);
            let line = self.partial[..cut].to_string();
            let rest = self.partial[cut..].trim_start_matches(' ').to_string();
            self.partial = rest;
            self.emit(line, &mut out);
        }
        out
    }

    fn emit(&mut self, line: String, out: &mut Vec<String>) {
        if line.trim().is_empty() {
            self.blank_lines += 1;
            return;
        }
        for _ in 0..std::mem::take(&mut self.blank_lines) {
            out.push(String::new());
        }
        out.push(line);
    }

    /// The text not printed yet (a last line without its newline), at the end of a turn.
    pub fn finish(&mut self) -> Option<String> {
        self.blank_lines = 0;
        let rest = std::mem::take(&mut self.partial);
        let rest = rest.trim_end();
        (!rest.is_empty()).then(|| rest.to_string())
    }

    /// Forgets everything (a new run, or a resumed one).
    pub fn reset(&mut self) {
        self.partial.clear();
        self.blank_lines = 0;
        self.seen_text = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_lines() {
        assert_eq!(
            tool_start("exec", &json!({"command": "echo hi"})),
            r#"⚙ exec {"command":"echo hi"}"#
        );
        assert_eq!(
            tool_end("exec", "exit code: 0\nstdout:\nhi\n\n", false),
            "✓ exec: exit code: 0\n  stdout:\n  hi"
        );
        assert_eq!(tool_end("x", "", true), "✗ x: (no output)");
        let long: String = (0..20).map(|i| format!("{i}\n")).collect();
        assert!(tool_end("x", &long, false).ends_with("… (12 more lines)"));
    }

    #[test]
    fn answers() {
        assert_eq!(parse_answer(" Y "), Some(Answer::Yes));
        assert_eq!(parse_answer("no"), Some(Answer::No));
        assert_eq!(parse_answer("always"), Some(Answer::Always));
        assert_eq!(parse_answer("maybe"), None);
        assert_eq!(
            approval_question("exec", &json!({"command": "ls"})),
            r#"allow exec {"command":"ls"}? [y]es / [n]o / [a]lways: "#
        );
    }

    #[test]
    fn streamed_text_comes_out_in_whole_lines() {
        let mut s = TextStream::default();
        assert!(s.push("Ec").is_empty());
        assert!(s.push("ho: hel").is_empty());
        assert_eq!(s.push("lo\nsecond"), vec!["Echo: hello"]);
        assert_eq!(s.push("\n\n\n"), vec!["second"]);
        assert_eq!(s.push("third\n\n"), vec!["", "", "third"]);
        assert_eq!(s.finish(), None);
        assert!(s.push("tail").is_empty());
        assert_eq!(s.finish().as_deref(), Some("tail"));
        let words = "word ".repeat(50);
        let lines = s.push(&words);
        assert!(!lines.is_empty());
        assert!(lines.iter().all(|l| l.chars().count() <= WRAP_CHARS));
        assert!(s.seen_text);
        s.reset();
        assert!(!s.seen_text);
        assert_eq!(s.finish(), None);
        // No space to break at: a hard break, on a character boundary.
        let wide = "é".repeat(250);
        let lines = s.push(&wide);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].chars().count(), WRAP_CHARS);
    }

    #[test]
    fn history_lines_name_the_tool_of_each_result() {
        let msg = |v: serde_json::Value| -> TranscriptMessage {
            serde_json::from_value(v).expect("message")
        };
        let page = vec![
            msg(
                json!({"id": "1", "parentId": null, "ts": 1, "role": "user", "content": "/tool exec {}"}),
            ),
            msg(
                json!({"id": "2", "parentId": "1", "ts": 2, "role": "assistant", "content": "Calling exec.",
                "toolCalls": [{"id": "c1", "name": "exec", "input": {"command": "echo hi"}}],
                "stopReason": "tool_use", "runId": "r1"}),
            ),
            msg(
                json!({"id": "3", "parentId": "2", "ts": 3, "role": "tool", "content": "hi\n", "toolCallId": "c1"}),
            ),
            msg(
                json!({"id": "4", "parentId": "3", "ts": 4, "role": "assistant", "content": "done",
                "stopReason": "end_turn", "runId": "r1"}),
            ),
        ];
        assert_eq!(
            history(&page),
            vec![
                "» /tool exec {}",
                "Calling exec.",
                r#"⚙ exec {"command":"echo hi"}"#,
                "✓ exec: hi",
                "done"
            ]
        );
        assert_eq!(ended_runs(&page), vec!["r1".to_string()]);
        assert_eq!(ended_runs(&page[..3]), Vec::<String>::new());
    }

    #[test]
    fn clip_counts_characters() {
        assert_eq!(clip("ééé", 2), "éé…");
        assert_eq!(clip("ab", 2), "ab");
    }
}
