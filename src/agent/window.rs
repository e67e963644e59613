//! The context window's arithmetic, pure: the estimate of a model call's context, the threshold
//! past which it is compacted, where a compaction cuts (never between a tool call and its
//! results), and the context built from a summary and the messages kept after it.

use crate::config::ContextConfig;
use crate::protocol::{Role, TranscriptMessage, Usage};
use crate::store::{NewMessage, StoredContext};

use super::context::prepare_context;

/// The first line of the user message a summary stands as at the start of a context.
pub const SUMMARY_HEADING: &str = "[Summary of the earlier conversation]";

/// Tokens of `chars` characters in the estimate: 1 per 4, rounded up.
pub fn tokens_of_chars(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// Characters a message adds to a context: its text, and its tool calls' names and inputs.
pub fn message_chars(m: &TranscriptMessage) -> usize {
    m.content.chars().count()
        + m.tool_calls
            .iter()
            .flatten()
            .map(|c| c.name.len() + c.input.to_string().chars().count())
            .sum::<usize>()
}

fn chars_of(messages: &[TranscriptMessage]) -> usize {
    messages.iter().map(message_chars).sum()
}

/// Tokens a model call reported reading: its input, cache reads and writes included
/// (OpenAI's `prompt_tokens` already counts cached tokens; Anthropic reports them apart, as
/// `cacheReadTokens` and `cacheWriteTokens`).
pub fn input_tokens(usage: &Usage) -> u64 {
    usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
}

/// The estimate of the next model call's context, in tokens: the later of the last turn's
/// reported input tokens and the last compaction's `tokensAfter`, plus 1 token per 4 characters
/// written since (the reporting turn's own answer included); without either, 1 token per 4
/// characters of the whole context.
pub fn estimate(ctx: &StoredContext) -> u64 {
    let since = ctx.since.min(ctx.messages.len());
    let reported = (since..ctx.messages.len()).rev().find_map(|i| {
        let m = &ctx.messages[i];
        (m.role == Role::Assistant)
            .then_some(m.usage.as_ref())
            .flatten()
            .map(|u| (i, input_tokens(u)))
    });
    if let Some((i, tokens)) = reported {
        return tokens + tokens_of_chars(chars_of(&ctx.messages[i..]));
    }
    match &ctx.compaction {
        Some(c) => c.tokens_after + tokens_of_chars(chars_of(&ctx.messages[since..])),
        None => tokens_of_chars(chars_of(&ctx.messages)),
    }
}

/// The estimate past which a model call's context is compacted first:
/// `max_tokens × compact_threshold`.
pub fn threshold(config: &ContextConfig) -> u64 {
    (config.max_tokens as f64 * config.compact_threshold) as u64
}

/// Where a compaction of `messages` cuts: the index of the first message kept, so that at
/// least the newest `keep` (and always one) stay verbatim and the kept part never starts with
/// a tool result (a call stays with its results). `None` when nothing older is left to compact.
pub fn cut_point(messages: &[TranscriptMessage], keep: usize) -> Option<usize> {
    let keep = keep.max(1);
    let mut cut = messages.len().checked_sub(keep)?;
    while cut > 0 && messages[cut].role == Role::Tool {
        cut -= 1;
    }
    (cut > 0).then_some(cut)
}

/// The summary as the context's first message.
pub fn summary_message(summary: &str) -> TranscriptMessage {
    NewMessage::new(Role::User, format!("{SUMMARY_HEADING}\n{summary}")).message
}

/// The context a model call is sent: the summary (if any) as a first user message, then the
/// kept messages, prepared so that every tool call sits right before its results.
pub fn model_context(
    summary: Option<&str>,
    messages: Vec<TranscriptMessage>,
) -> Vec<TranscriptMessage> {
    let mut out = Vec::with_capacity(messages.len() + 1);
    out.extend(summary.map(summary_message));
    out.extend(prepare_context(messages));
    out
}

/// The estimate after a compaction: the estimate before, less the older part and the previous
/// summary, plus the new summary; never below 1 token per 4 characters of what is left.
pub fn tokens_after(
    before: u64,
    previous: Option<&str>,
    older: &[TranscriptMessage],
    summary: &str,
    kept: &[TranscriptMessage],
) -> u64 {
    let summary_chars = message_chars(&summary_message(summary));
    let removed = chars_of(older) + previous.map_or(0, |p| message_chars(&summary_message(p)));
    let floor = tokens_of_chars(summary_chars + chars_of(kept));
    (before.saturating_sub(tokens_of_chars(removed)) + tokens_of_chars(summary_chars)).max(floor)
}

/// What stands for the summary when the summary call failed and `dropped` messages were
/// dropped instead: the previous summary (still true of what came before them) and a note.
pub fn dropped_summary(previous: Option<&str>, dropped: usize) -> String {
    let note = format!(
        "[{dropped} earlier messages were dropped without a summary: the context was too long and the summary call failed.]"
    );
    match previous {
        Some(p) => format!("{p}\n\n{note}"),
        None => note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_reads_and_writes_count_as_input() {
        let usage = Usage {
            input_tokens: 10,
            output_tokens: 5,
            cache_read_tokens: 100,
            cache_write_tokens: 1000,
        };
        assert_eq!(input_tokens(&usage), 1110);
    }
    use crate::protocol::{CompactionReason, ToolCall};
    use crate::store::transcript::CompactionLine;

    fn msg(role: Role, content: &str) -> TranscriptMessage {
        let mut m = NewMessage::new(role, content).message;
        m.id = content.to_string();
        m
    }

    fn calling(content: &str, ids: &[&str]) -> TranscriptMessage {
        let mut m = msg(Role::Assistant, content);
        m.tool_calls = Some(
            ids.iter()
                .map(|id| ToolCall {
                    id: id.to_string(),
                    name: "ls".into(),
                    input: serde_json::json!({}),
                })
                .collect(),
        );
        m
    }

    fn result(id: &str) -> TranscriptMessage {
        let mut m = msg(Role::Tool, &format!("r{id}"));
        m.tool_call_id = Some(id.into());
        m
    }

    fn context(messages: Vec<TranscriptMessage>) -> StoredContext {
        StoredContext {
            session_id: "s".into(),
            compaction: None,
            messages,
            since: 0,
        }
    }

    fn line(tokens_after: u64) -> CompactionLine {
        CompactionLine {
            id: "c".into(),
            ts: 1,
            summary: "s".into(),
            first_kept_id: "x".into(),
            tokens_before: 0,
            tokens_after,
            reason: CompactionReason::Auto,
            usage: None,
        }
    }

    #[test]
    fn characters_count_text_and_tool_calls() {
        assert_eq!(tokens_of_chars(0), 0);
        assert_eq!(tokens_of_chars(1), 1);
        assert_eq!(tokens_of_chars(8), 2);
        assert_eq!(tokens_of_chars(9), 3);
        assert_eq!(
            message_chars(&msg(Role::User, "héllo")),
            5,
            "characters, not bytes"
        );
        // "ls" + "{}"
        assert_eq!(message_chars(&calling("ab", &["1"])), 2 + 2 + 2);
    }

    #[test]
    fn the_estimate_starts_from_the_later_of_reported_usage_and_the_last_compaction() {
        // Nothing reported: every character counts.
        let ctx = context(vec![msg(Role::User, "12345678"), msg(Role::User, "1234")]);
        assert_eq!(estimate(&ctx), 3);
        // A turn reported 1000 input tokens: its own answer and what follows are added.
        let mut answer = msg(Role::Assistant, "12345678");
        answer.usage = Some(Usage {
            input_tokens: 1000,
            output_tokens: 2,
            ..Default::default()
        });
        let ctx = context(vec![
            msg(Role::User, &"x".repeat(4000)),
            answer.clone(),
            msg(Role::User, "1234"),
        ]);
        assert_eq!(estimate(&ctx), 1000 + 2 + 1);
        // A compaction written after that turn wins over its usage...
        let mut ctx = ctx;
        ctx.compaction = Some(line(50));
        ctx.since = 2;
        assert_eq!(
            estimate(&ctx),
            50 + 1,
            "tokensAfter, plus what follows the line"
        );
        // ...and a turn reported after the compaction wins over it.
        let mut later = answer;
        later.usage = Some(Usage {
            input_tokens: 70,
            output_tokens: 1,
            ..Default::default()
        });
        ctx.messages.push(later);
        assert_eq!(estimate(&ctx), 70 + 2);
        // A compaction with nothing after it: its tokensAfter alone.
        let mut ctx = context(vec![msg(Role::User, "kept")]);
        ctx.compaction = Some(line(9));
        ctx.since = 1;
        assert_eq!(estimate(&ctx), 9);
    }

    #[test]
    fn the_threshold_is_the_share_of_the_window() {
        let config = ContextConfig {
            max_tokens: 100_000,
            compact_threshold: 0.8,
            keep_messages: 10,
        };
        assert_eq!(threshold(&config), 80_000);
    }

    #[test]
    fn the_cut_keeps_at_least_the_newest_messages_and_never_splits_calls_from_results() {
        let plain: Vec<_> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|t| msg(Role::User, t))
            .collect();
        assert_eq!(cut_point(&plain, 2), Some(3));
        assert_eq!(cut_point(&plain, 4), Some(1));
        assert_eq!(cut_point(&plain, 5), None, "nothing older to compact");
        assert_eq!(cut_point(&plain, 9), None);
        assert_eq!(cut_point(&plain, 0), Some(4), "one message is always kept");
        assert_eq!(cut_point(&[], 0), None);
        // u, call(1, 2), r1, r2, a, u2: keeping 3 would start at r2; the cut moves to the call.
        let tools = vec![
            msg(Role::User, "u"),
            calling("call", &["1", "2"]),
            result("1"),
            result("2"),
            msg(Role::Assistant, "a"),
            msg(Role::User, "u2"),
        ];
        assert_eq!(cut_point(&tools, 3), Some(1));
        assert_eq!(cut_point(&tools, 4), Some(1));
        assert_eq!(cut_point(&tools, 2), Some(4));
        // Only a call and its results before the kept part: nothing older is left.
        assert_eq!(cut_point(&tools[1..], 3), None);
        // For every keep, the kept part starts with no result and the older part ends with none
        // of a call that is kept.
        for keep in 0..tools.len() + 1 {
            if let Some(cut) = cut_point(&tools, keep) {
                assert_ne!(tools[cut].role, Role::Tool, "keep {keep}");
                assert!(tools.len() - cut >= keep.max(1), "keep {keep}");
            }
        }
    }

    #[test]
    fn the_context_opens_with_the_summary_then_the_kept_messages() {
        let out = model_context(
            Some("They talked."),
            vec![result("0"), msg(Role::User, "next")],
        );
        assert_eq!(out.len(), 2, "an orphan result is left out");
        assert_eq!(out[0].role, Role::User);
        assert_eq!(
            out[0].content,
            "[Summary of the earlier conversation]\nThey talked."
        );
        assert_eq!(out[1].content, "next");
        let out = model_context(None, vec![msg(Role::User, "only")]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].content, "only");
    }

    #[test]
    fn the_estimate_after_removes_the_older_part_and_adds_the_summary() {
        let older = vec![msg(Role::User, &"x".repeat(400))];
        let kept = vec![msg(Role::User, &"y".repeat(40))];
        let heading = SUMMARY_HEADING.len() + 1;
        let after = tokens_after(1000, None, &older, "abcd", &kept);
        assert_eq!(after, 1000 - 100 + tokens_of_chars(heading + 4));
        // Never below what is left, counted by characters.
        let after = tokens_after(0, Some("old"), &older, "abcd", &kept);
        assert_eq!(after, tokens_of_chars(heading + 4 + 40));
    }

    #[test]
    fn a_drop_keeps_the_previous_summary_and_says_what_was_dropped() {
        let text = dropped_summary(None, 4);
        assert!(
            text.starts_with("[4 earlier messages were dropped"),
            "{text}"
        );
        let text = dropped_summary(Some("Before."), 2);
        assert!(text.starts_with("Before.\n\n[2 earlier"), "{text}");
    }
}
