//! Entries rebuilt from the transcripts themselves at open: a whole file the index does not
//! know, the tail appended since the index was written (with the runs their end markers
//! finished, for the run index), and the older of two files that claim one key set aside.

use std::path::{Path, PathBuf};

use super::entry::Entry;
use super::keys::recovered_key;
use super::runs::FinishedRun;
use super::transcript::{self, Line};
use crate::protocol::validate_session_key;
use crate::util::now_ms;

/// Reads a whole transcript into an entry, adding the runs it finished to `ended`; `None`
/// (with a warning) when it is unusable.
pub(super) fn scan_whole(path: &Path, id: &str, ended: &mut Vec<FinishedRun>) -> Option<Entry> {
    let mut entry: Option<Entry> = None;
    let mut pending: Vec<Line> = Vec::new();
    let result = transcript::scan_forward(path, 0, 1, |l| match l.line {
        Line::Header(h) if l.number == 1 => {
            if h.version > transcript::HEADER_VERSION {
                tracing::warn!(file = %path.display(), version = h.version, "transcript of a newer format; lines of unknown types are skipped");
            }
            if h.id != id {
                tracing::warn!(file = %path.display(), header_id = %h.id, "header id differs from the file name; the file name wins");
            }
            let key = if validate_session_key(&h.key).is_ok() {
                h.key
            } else {
                tracing::warn!(file = %path.display(), "header has an invalid key");
                recovered_key(id)
            };
            let mut found = Entry::new(key, id, h.created_at);
            if let Some(agent) = h.agent {
                found.agent_id = agent;
            }
            entry = Some(found);
        }
        Line::Bad(reason) => {
            tracing::warn!(file = %path.display(), line = l.number, %reason, "skipping an unparsable line");
        }
        Line::Unknown(kind) => {
            tracing::warn!(file = %path.display(), line = l.number, kind, "skipping a line of unknown type");
        }
        other => {
            if l.number == 1 || matches!(other, Line::Header(_)) {
                tracing::warn!(file = %path.display(), line = l.number, "expected the session header here");
            }
            if !matches!(other, Line::Header(_)) {
                match entry.as_mut() {
                    Some(e) => ended.extend(e.apply(&other)),
                    None => pending.push(other),
                }
            }
        }
    });
    let (len, lines) = match result {
        Ok(r) => r,
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "cannot read a transcript; skipped");
            return None;
        }
    };
    let mut entry = entry.unwrap_or_else(|| {
        tracing::warn!(file = %path.display(), "transcript has no header; kept under a recovered key");
        let created = pending.iter().find_map(|l| match l {
            Line::Message(m) => Some(m.ts),
            _ => None,
        });
        Entry::new(recovered_key(id), id, created.unwrap_or_else(now_ms))
    });
    for line in &pending {
        ended.extend(entry.apply(line));
    }
    // A torn tail is excluded from `len` only for reading; the writer appends after it.
    entry.len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(len);
    entry.lines = lines;
    Some(entry)
}

/// Brings an entry up to date with bytes appended after `known.len`, adding the runs they
/// finished to `ended`.
pub(super) fn catch_up(path: &Path, known: Entry, ended: &mut Vec<FinishedRun>) -> Option<Entry> {
    let mut entry = known;
    let start = entry.len;
    let first = entry.lines + 1;
    let result = transcript::scan_forward(path, start, first, |l| match &l.line {
        Line::Bad(reason) => {
            tracing::warn!(file = %path.display(), line = l.number, %reason, "skipping an unparsable line");
        }
        Line::Unknown(kind) => {
            tracing::warn!(file = %path.display(), line = l.number, kind, "skipping a line of unknown type");
        }
        line => ended.extend(entry.apply(line)),
    });
    match result {
        Ok((_, lines)) => {
            entry.lines += lines;
            entry.len = std::fs::metadata(path)
                .map(|m| m.len())
                .unwrap_or(entry.len);
            Some(entry)
        }
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "cannot read a transcript; skipped");
            None
        }
    }
}

/// Sets aside `path`, the older of two transcripts claiming `key`, as `<name>.duplicate.<ts>`.
pub(super) fn archive_duplicate(path: &Path, key: &str) {
    let target = PathBuf::from(format!("{}.duplicate.{}", path.display(), now_ms()));
    tracing::warn!(file = %path.display(), key, "two transcripts claim one key; the older is archived");
    if let Err(err) = std::fs::rename(path, &target) {
        tracing::warn!(file = %path.display(), %err, "cannot archive a duplicate transcript");
    }
}
