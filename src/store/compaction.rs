//! A session's context as the transcript holds it (the latest compaction and the messages from
//! its `firstKeptId` on), read backwards from the end so that a long session costs only what
//! is kept; and the writing of a compaction line.
//!
//! Nothing is ever removed: a compaction is one more line, and every message stays readable by
//! `chat.history`. The context of a model call starts at the newest compaction line met going
//! backwards; its kept messages sit before it, so the read stops at its `firstKeptId`.

use std::io;
use std::path::Path;

use super::Store;
use super::error::StoreError;
use super::transcript::{self, CompactionLine, Line};
use crate::protocol::{CompactionReason, TranscriptMessage, Usage};
use crate::util::now_ms;

/// What a model call is sent, as stored: the latest compaction and the messages it keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredContext {
    /// The transcript's id.
    pub session_id: String,
    /// The latest compaction (none: the context is every message).
    pub compaction: Option<CompactionLine>,
    /// From the compaction's `firstKeptId` on (every message without one), oldest first.
    pub messages: Vec<TranscriptMessage>,
    /// `messages[since..]` were written after the compaction line (all of them without one).
    pub since: usize,
}

/// A compaction to write; the store assigns its id and time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCompaction {
    /// The summary of everything before `first_kept_id`.
    pub summary: String,
    /// The oldest message kept verbatim.
    pub first_kept_id: String,
    /// The estimate of the context before, in tokens.
    pub tokens_before: u64,
    /// The estimate of the context after, in tokens.
    pub tokens_after: u64,
    /// Why.
    pub reason: CompactionReason,
    /// What the summary call used.
    pub usage: Option<Usage>,
}

/// The latest compaction of the transcript `path` up to `end` and the messages from its
/// `firstKeptId` on, read backwards (a compaction whose kept message is missing keeps only what
/// follows its own line, with a warning); `since` as in [`StoredContext`].
pub(super) fn read_context(
    path: &Path,
    end: u64,
) -> io::Result<(Option<CompactionLine>, Vec<TranscriptMessage>, usize)> {
    let mut compaction: Option<CompactionLine> = None;
    let mut newest_first: Vec<TranscriptMessage> = Vec::new();
    // Messages met before (that is, after, in the file) the compaction line.
    let mut after = 0usize;
    let mut found = false;
    transcript::scan_backward(path, end, |_, line| match transcript::parse_line(line) {
        Line::Message(m) => {
            let first = compaction.as_ref().is_some_and(|c| c.first_kept_id == m.id);
            newest_first.push(*m);
            if compaction.is_none() {
                after += 1;
            }
            found = first;
            !first
        }
        Line::Compaction(c) if compaction.is_none() => {
            // A kept message after its own compaction line cannot be written; take it anyway.
            if let Some(pos) = newest_first.iter().position(|m| m.id == c.first_kept_id) {
                newest_first.truncate(pos + 1);
                after = newest_first.len();
                found = true;
                compaction = Some(*c);
                return false;
            }
            compaction = Some(*c);
            true
        }
        _ => true,
    })?;
    if let Some(c) = &compaction
        && !found
    {
        tracing::warn!(file = %path.display(), compaction = %c.id, first_kept = %c.first_kept_id, "a compaction names a kept message the transcript does not hold; keeping what follows it");
        newest_first.truncate(after);
    }
    newest_first.reverse();
    let since = newest_first.len() - after.min(newest_first.len());
    Ok((compaction, newest_first, since))
}

impl Store {
    /// What `key`'s next model call is sent, as stored: read backwards from the end of its
    /// transcript to the latest compaction's kept messages.
    pub async fn context(&self, key: &str) -> Result<StoredContext, StoreError> {
        let t = self
            .lookup(key)
            .ok_or_else(|| StoreError::no_session(key))?;
        let entry = t.entry();
        let path = t.path.clone();
        let end = entry.len;
        let (compaction, messages, since) = self
            .blocking(&format!("cannot read session `{key}`"), move || {
                read_context(&path, end)
            })
            .await?;
        Ok(StoredContext {
            session_id: entry.session_id,
            compaction,
            messages,
            since,
        })
    }

    /// Appends a compaction line to `key`'s transcript (only to `session_id`'s, when given,
    /// else to the transcript current at the call: a compaction never lands in the transcript
    /// that replaced its own after a reset, [`StoreError::Archived`]); returns it.
    pub async fn append_compaction(
        &self,
        key: &str,
        session_id: Option<&str>,
        new: NewCompaction,
    ) -> Result<CompactionLine, StoreError> {
        let pinned = match session_id {
            Some(id) => id.to_string(),
            None => self.get(key)?.session_id,
        };
        let line = CompactionLine {
            id: uuid::Uuid::new_v4().simple().to_string(),
            ts: now_ms(),
            summary: new.summary,
            first_kept_id: new.first_kept_id,
            tokens_before: new.tokens_before,
            tokens_after: new.tokens_after,
            reason: new.reason,
            usage: new.usage,
        };
        let what = format!("cannot compact session `{key}`");
        self.write_lines(key, Some(&pinned), &what, |_| {
            Ok((vec![Line::Compaction(Box::new(line.clone()))], ()))
        })
        .await?;
        Ok(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Role;
    use crate::store::NewMessage;
    use crate::store::test_support::open;

    fn ids(messages: &[TranscriptMessage]) -> Vec<String> {
        messages.iter().map(|m| m.content.clone()).collect()
    }

    async fn say(store: &Store, key: &str, texts: &[&str]) -> Vec<TranscriptMessage> {
        let new = texts
            .iter()
            .map(|t| NewMessage::new(Role::User, *t))
            .collect();
        store.append(key, new).await.expect("append")
    }

    fn compaction(first_kept_id: &str, summary: &str) -> NewCompaction {
        NewCompaction {
            summary: summary.into(),
            first_kept_id: first_kept_id.into(),
            tokens_before: 100,
            tokens_after: 10,
            reason: CompactionReason::Auto,
            usage: None,
        }
    }

    #[tokio::test]
    async fn the_context_starts_at_the_latest_compactions_kept_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.ensure("k", "main").await.expect("ensure");
        let ctx = store.context("k").await.expect("context");
        assert!(ctx.messages.is_empty() && ctx.compaction.is_none());
        let written = say(&store, "k", &["a", "b", "c", "d"]).await;
        let ctx = store.context("k").await.expect("context");
        assert_eq!(ids(&ctx.messages), ["a", "b", "c", "d"]);
        assert_eq!((ctx.compaction, ctx.since), (None, 0));

        store
            .append_compaction("k", None, compaction(&written[1].id, "one"))
            .await
            .expect("compact");
        let ctx = store.context("k").await.expect("context");
        assert_eq!(ids(&ctx.messages), ["b", "c", "d"]);
        assert_eq!(ctx.since, 3, "nothing written after the line yet");
        assert_eq!(
            ctx.compaction.as_ref().map(|c| c.summary.as_str()),
            Some("one")
        );

        say(&store, "k", &["e", "f"]).await;
        let ctx = store.context("k").await.expect("context");
        assert_eq!(ids(&ctx.messages), ["b", "c", "d", "e", "f"]);
        assert_eq!(ctx.since, 3, "e and f follow the line");

        // A later compaction wins; an older one is never read.
        let all = store.history("k", 100, None, usize::MAX).await.expect("h");
        let d = &all.messages[3];
        store
            .append_compaction("k", None, compaction(&d.id, "two"))
            .await
            .expect("compact");
        let ctx = store.context("k").await.expect("context");
        assert_eq!(ids(&ctx.messages), ["d", "e", "f"]);
        assert_eq!(ctx.compaction.map(|c| c.summary), Some("two".into()));
        // Nothing is deleted.
        let all = store.history("k", 100, None, usize::MAX).await.expect("h");
        assert_eq!(all.messages.len(), 6);
        assert_eq!(all.compactions.len(), 2);
    }

    #[tokio::test]
    async fn a_compaction_naming_a_missing_message_keeps_what_follows_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.ensure("k", "main").await.expect("ensure");
        say(&store, "k", &["a", "b"]).await;
        store
            .append_compaction("k", None, compaction("nope", "s"))
            .await
            .expect("compact");
        say(&store, "k", &["c"]).await;
        let ctx = store.context("k").await.expect("context");
        assert_eq!(ids(&ctx.messages), ["c"]);
        assert_eq!(ctx.since, 0);
        assert!(ctx.compaction.is_some());
    }

    #[tokio::test]
    async fn a_compaction_for_an_archived_transcript_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let s = store.ensure("k", "main").await.expect("ensure");
        let written = say(&store, "k", &["a"]).await;
        store.reset("k").await.expect("reset");
        let err = store
            .append_compaction("k", Some(&s.session_id), compaction(&written[0].id, "s"))
            .await;
        assert!(matches!(err, Err(StoreError::Archived { .. })), "{err:?}");
        assert!(
            store
                .context("k")
                .await
                .expect("context")
                .compaction
                .is_none()
        );
    }
}
