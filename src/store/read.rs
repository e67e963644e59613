//! Messages read back out of a transcript file, backwards from its committed end: all of them
//! (a fork) or the newest page before a given message (history).

use std::io;
use std::path::Path;

use super::transcript::{self, Line};
use crate::protocol::TranscriptMessage;

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
}

/// The newest `limit` messages before `before_id` (or the end), oldest first; stops early
/// (with `has_more`) past `max_bytes` of lines, but always returns at least one message.
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
    transcript::scan_backward(path, end, |_, line| {
        let Line::Message(m) = transcript::parse_line(line) else {
            return true;
        };
        if !found {
            found = before_id == Some(m.id.as_str());
            return true;
        }
        // At least one message per page, so paging with a message to end before always moves on.
        if out.len() >= limit || (!out.is_empty() && bytes + line.len() > max_bytes) {
            has_more = true;
            return false;
        }
        bytes += line.len();
        out.push(*m);
        true
    })?;
    out.reverse();
    Ok(Read {
        messages: out,
        has_more,
        found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Role;
    use crate::store::transcript::{Header, header_line, message_line};

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
}
