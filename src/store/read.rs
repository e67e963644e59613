//! Messages read back out of a transcript file, backwards from its committed end: all of them
//! (a fork) or the newest page before a given message (history), with the compactions written
//! among that page.

use std::io;
use std::path::Path;

use super::transcript::{self, Line};
use crate::protocol::{Compaction, TranscriptMessage};

/// Every message of the transcript `path` up to `end`, oldest first.
pub(super) fn read_messages(path: &Path, end: u64) -> io::Result<Vec<TranscriptMessage>> {
    let mut out = Vec::new();
    transcript::scan_backward(path, end, |_, line| {
        if let Line::Message(m) = transcript::parse_line(line) {
            out.push(*m);
        }
        true
    })?;
    out.reverse();
    Ok(out)
}

/// A page of messages read back.
#[derive(Debug, PartialEq)]
pub(super) struct Read {
    /// Oldest first.
    pub(super) messages: Vec<TranscriptMessage>,
    /// Older messages exist.
    pub(super) has_more: bool,
    /// Whether the message to end before was found (always, without one).
    pub(super) found: bool,
    /// The compactions written after one of `messages` (and before the next older page's
    /// messages end), oldest first.
    pub(super) compactions: Vec<Compaction>,
}

/// The newest `limit` messages before `before_id` (or the end), oldest first; stops early
/// (with `has_more`) past `max_bytes` of lines, but always returns at least one message. A
/// compaction line belongs to the page holding the message written just before it.
pub(super) fn read_history(
    path: &Path,
    end: u64,
    limit: usize,
    before_id: Option<&str>,
    max_bytes: usize,
) -> io::Result<Read> {
    let mut found = before_id.is_none();
    let mut out: Vec<TranscriptMessage> = Vec::new();
    let mut bytes = 0usize;
    let mut has_more = false;
    let mut compactions: Vec<Compaction> = Vec::new();
    // Met since the last message taken: they are this page's if the next message is.
    let mut pending: Vec<(Compaction, usize)> = Vec::new();
    transcript::scan_backward(path, end, |_, line| {
        let m = match transcript::parse_line(line) {
            Line::Message(m) => m,
            Line::Compaction(c) if found => {
                pending.push((c.entry(), line.len()));
                return true;
            }
            _ => return true,
        };
        if !found {
            found = before_id == Some(m.id.as_str());
            return true;
        }
        // At least one message per page, so paging with a message to end before always moves on.
        let pending_len: usize = pending.iter().map(|(_, len)| len).sum();
        if out.len() >= limit || (!out.is_empty() && bytes + line.len() + pending_len > max_bytes) {
            has_more = true;
            return false;
        }
        bytes += line.len();
        out.push(*m);
        for (c, len) in pending.drain(..) {
            bytes += len;
            compactions.push(c);
        }
        true
    })?;
    out.reverse();
    compactions.reverse();
    Ok(Read {
        messages: out,
        has_more,
        found,
        compactions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::CompactionReason;
    use crate::protocol::Role;
    use crate::store::transcript::{CompactionLine, Header, header_line, message_line};

    /// A transcript of messages `m0`..`m{n-1}` (each content 10 bytes); its path and length.
    fn transcript_of(dir: &Path, n: usize) -> (std::path::PathBuf, u64) {
        let path = dir.join("t.jsonl");
        let header = Header::for_test("t", "k", 1);
        let mut bytes = header_line(&header).expect("header");
        for i in 0..n {
            let mut m = crate::store::NewMessage::new(Role::User, format!("{i:010}")).message;
            m.id = format!("m{i}");
            bytes.extend(message_line(&m).expect("line"));
        }
        std::fs::write(&path, &bytes).expect("write");
        (path, bytes.len() as u64)
    }

    /// Appends a compaction line `id` (keeping `kept`) to the transcript `path`; its new length.
    fn add_compaction(path: &Path, id: &str, kept: &str) -> u64 {
        use std::io::Write;
        let line = crate::store::transcript::compaction_line(&CompactionLine {
            id: id.into(),
            ts: 1,
            summary: format!("summary {id}"),
            first_kept_id: kept.into(),
            tokens_before: 10,
            tokens_after: 2,
            reason: CompactionReason::Manual,
            usage: None,
        })
        .expect("line");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("open");
        f.write_all(&line).expect("write");
        std::fs::metadata(path).expect("meta").len()
    }

    fn ids(messages: &[TranscriptMessage]) -> Vec<&str> {
        messages.iter().map(|m| m.id.as_str()).collect()
    }

    #[test]
    fn all_messages_oldest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, end) = transcript_of(dir.path(), 3);
        let all = read_messages(&path, end).expect("read");
        assert_eq!(ids(&all), ["m0", "m1", "m2"]);
    }

    #[test]
    fn history_pages_backwards_by_count_and_by_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, end) = transcript_of(dir.path(), 5);
        let page = read_history(&path, end, 2, None, usize::MAX).expect("read");
        assert_eq!(ids(&page.messages), ["m3", "m4"]);
        assert!(page.has_more && page.found);
        let page = read_history(&path, end, 2, Some("m3"), usize::MAX).expect("read");
        assert_eq!(ids(&page.messages), ["m1", "m2"]);
        assert!(page.has_more);
        let page = read_history(&path, end, 2, Some("m1"), usize::MAX).expect("read");
        assert_eq!(ids(&page.messages), ["m0"]);
        assert!(!page.has_more);
        let page = read_history(&path, end, 10, Some("m0"), usize::MAX).expect("read");
        assert!(page.messages.is_empty() && !page.has_more && page.found);
        let page = read_history(&path, end, 10, Some("nope"), usize::MAX).expect("read");
        assert!(!page.found);
        // A byte budget smaller than one line still yields one message, and says there is more.
        let page = read_history(&path, end, 10, None, 1).expect("read");
        assert_eq!(ids(&page.messages), ["m4"]);
        assert!(page.has_more);
    }

    #[test]
    fn a_compaction_comes_with_the_page_of_the_message_written_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _) = transcript_of(dir.path(), 4);
        // m0 m1 [c1] m2 m3 [c2]: the file is appended to after its messages.
        let mut bytes = std::fs::read(&path).expect("read");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let cut = text
            .find("\"m2\"")
            .and_then(|i| text[..i].rfind('\n'))
            .expect("m2");
        let tail = bytes.split_off(cut + 1);
        std::fs::write(&path, &bytes).expect("write");
        add_compaction(&path, "c1", "m1");
        let mut f = std::fs::read(&path).expect("read");
        f.extend(tail);
        std::fs::write(&path, &f).expect("write");
        let end = add_compaction(&path, "c2", "m3");
        let c = |read: &Read| {
            read.compactions
                .iter()
                .map(|c| c.id.clone())
                .collect::<Vec<_>>()
        };
        let page = read_history(&path, end, 10, None, usize::MAX).expect("read");
        assert_eq!(ids(&page.messages), ["m0", "m1", "m2", "m3"]);
        assert_eq!(c(&page), ["c1", "c2"], "oldest first");
        assert_eq!(page.compactions[0].summary, "summary c1");
        assert_eq!(page.compactions[0].first_kept_id, "m1");
        let page = read_history(&path, end, 2, None, usize::MAX).expect("read");
        assert_eq!(ids(&page.messages), ["m2", "m3"]);
        assert_eq!(c(&page), ["c2"], "c1 follows m1, of the older page");
        let page = read_history(&path, end, 2, Some("m2"), usize::MAX).expect("read");
        assert_eq!(ids(&page.messages), ["m0", "m1"]);
        assert_eq!(c(&page), ["c1"]);
        // The context reader stops at the latest compaction's kept message.
        let (latest, messages, since) =
            crate::store::compaction::read_context(&path, end).expect("context");
        assert_eq!(latest.map(|l| l.id), Some("c2".into()));
        assert_eq!(ids(&messages), ["m3"]);
        assert_eq!(since, 1, "m3 is before the line");
    }
}
