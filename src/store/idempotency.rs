//! The idempotency keys of a session's last runs and how each run ended, as the transcript
//! tells it: read from the end of the file, from typed fields only, never from message text.
//!
//! A run's end marker tells its outcome; a run with markers and no end is still open (to be
//! resumed). Transcripts from before run markers fall back on the run's newest message.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;

use super::Store;
use super::error::StoreError;
use super::transcript::{self, Line};
use crate::protocol::{Role, RunOutcome, TranscriptMessage};

/// How a run without markers ended, told by its newest message: flagged `aborted`, carrying an
/// `error`, a final assistant message (no tool calls), or anything else (a run cut off before
/// its ending, such as a tool result or an assistant message whose calls never got results),
/// which counts as aborted.
pub(super) fn outcome_of(newest: &TranscriptMessage) -> RunOutcome {
    if newest.aborted == Some(true) {
        RunOutcome::Aborted
    } else if newest.error.is_some() {
        RunOutcome::Error
    } else if newest.role == Role::Assistant && newest.tool_calls.is_none() {
        RunOutcome::Final
    } else {
        RunOutcome::Aborted
    }
}

/// What a backward scan has learnt of the runs met so far.
#[derive(Default)]
struct Runs {
    /// The outcome of each run's end marker.
    ends: HashMap<String, RunOutcome>,
    /// Runs with a marker of any kind (so not of an old transcript).
    marked: HashSet<String>,
    /// The outcome told by each run's newest message (for runs without markers).
    by_message: HashMap<String, RunOutcome>,
    /// Runs already listed.
    listed: HashSet<String>,
    /// `(key, run, outcome)`, newest first.
    found: Vec<(String, String, Option<RunOutcome>)>,
    /// Indexes in `found` of runs whose key came from their user message, met before their
    /// started marker (if any): open if one comes, else told by their messages.
    pending: Vec<usize>,
}

impl Runs {
    /// The outcome of `run` as far as the scan has read: its end, open (a marker and no end),
    /// or, without markers, its newest message.
    fn outcome(&self, run: &str) -> Option<RunOutcome> {
        if let Some(end) = self.ends.get(run) {
            return Some(*end);
        }
        if self.marked.contains(run) {
            return None;
        }
        Some(
            self.by_message
                .get(run)
                .copied()
                .unwrap_or(RunOutcome::Aborted),
        )
    }

    /// Lists `run` under `key` unless it is listed already.
    fn list(&mut self, key: String, run: &str, pending: bool) {
        if !self.listed.insert(run.to_string()) {
            return;
        }
        if pending {
            self.pending.push(self.found.len());
        }
        let outcome = self.outcome(run);
        self.found.push((key, run.to_string(), outcome));
    }

    /// A line of `run` was met: every pending run but `run` has no started marker to come
    /// (runs of a session follow each other), so its messages tell its outcome.
    fn met(&mut self, run: &str) {
        let pending = std::mem::take(&mut self.pending);
        for i in pending {
            if self.found[i].1 == run {
                self.pending.push(i);
            } else {
                self.settle(i);
            }
        }
    }

    /// Fixes the outcome of `found[i]` from what was read.
    fn settle(&mut self, i: usize) {
        let outcome = self.outcome(&self.found[i].1);
        self.found[i].2 = outcome;
    }
}

/// `(idempotency key, run id, outcome)` of the last `n` runs with a key in the transcript
/// `path` up to `end`, newest first. A run's key is its user message's or its started marker's;
/// its outcome is its end marker's, `None` for a run with markers and no end (open), and for a
/// run without markers it is told by its newest message ([`outcome_of`]).
pub(super) fn scan(
    path: &Path,
    end: u64,
    n: usize,
) -> io::Result<Vec<(String, String, Option<RunOutcome>)>> {
    let mut runs = Runs::default();
    transcript::scan_backward(path, end, |_, line| {
        match transcript::parse_line(line) {
            Line::Run(marker) => {
                runs.met(&marker.run_id);
                let run = marker.run_id;
                runs.marked.insert(run.clone());
                if let Some(outcome) = marker.state.outcome() {
                    runs.ends.entry(run.clone()).or_insert(outcome);
                }
                if marker.state == transcript::RunMarkerState::Started {
                    if let Some(i) = runs.pending.iter().position(|i| runs.found[*i].1 == run) {
                        let at = runs.pending.remove(i);
                        runs.settle(at);
                    }
                    if let Some(idem) = marker.idempotency_key {
                        runs.list(idem, &run, false);
                    }
                }
            }
            Line::Message(m) => {
                let Some(run) = m.run_id.clone() else {
                    return true;
                };
                runs.met(&run);
                if m.role == Role::User {
                    if let Some(idem) = m.idempotency_key.clone() {
                        runs.list(idem, &run, true);
                    }
                } else {
                    runs.by_message.entry(run).or_insert_with(|| outcome_of(&m));
                }
            }
            Line::Tool(t) => {
                if let Some(run) = &t.run_id {
                    runs.met(run);
                }
            }
            Line::Approval(a) => {
                if let Some(run) = &a.run_id {
                    runs.met(run);
                }
            }
            _ => {}
        }
        runs.found.len() < n || !runs.pending.is_empty()
    })?;
    for i in std::mem::take(&mut runs.pending) {
        runs.settle(i);
    }
    runs.found.truncate(n);
    Ok(runs.found)
}

impl Store {
    /// The idempotency keys of the last `n` runs of `key`'s transcript, newest first, with each
    /// run's outcome as the transcript tells it: its end marker's, `None` while it is open
    /// (markers and no end: it is resumed at start-up), and for a transcript from before run
    /// markers its newest message's (a run without an ending was interrupted: aborted).
    pub async fn idempotency_keys(
        &self,
        key: &str,
        n: usize,
    ) -> Result<Vec<(String, String, Option<RunOutcome>)>, StoreError> {
        let t = self
            .lookup(key)
            .ok_or_else(|| StoreError::no_session(key))?;
        let path = t.path.clone();
        let end = t.entry().len;
        self.blocking(&format!("cannot read session `{key}`"), move || {
            scan(&path, end, n)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MessageError, ToolCall};
    use crate::store::NewMessage;
    use crate::store::transcript::{Header, header_line, message_line};

    fn message(role: Role, content: &str, run: &str) -> TranscriptMessage {
        let mut m = NewMessage::new(role, content).message;
        m.run_id = Some(run.into());
        m
    }

    fn user(run: &str, idem: Option<&str>) -> TranscriptMessage {
        let mut m = message(Role::User, "hi", run);
        m.idempotency_key = idem.map(str::to_string);
        m
    }

    fn call() -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: "read_file".into(),
            input: serde_json::json!({}),
        }
    }

    #[test]
    fn the_outcome_comes_from_typed_fields_alone() {
        let final_answer = message(Role::Assistant, "done", "r");
        assert_eq!(outcome_of(&final_answer), RunOutcome::Final);
        let mut aborted = message(Role::Assistant, "partial", "r");
        aborted.aborted = Some(true);
        assert_eq!(outcome_of(&aborted), RunOutcome::Aborted);
        let mut failed = message(Role::Assistant, "", "r");
        failed.error = Some(MessageError {
            kind: "timeout".into(),
            message: "too slow".into(),
        });
        assert_eq!(outcome_of(&failed), RunOutcome::Error);
        let mut calling = message(Role::Assistant, "", "r");
        calling.tool_calls = Some(vec![call()]);
        assert_eq!(
            outcome_of(&calling),
            RunOutcome::Aborted,
            "calls never answered"
        );
        let mut flagged_result = message(Role::Tool, "stopped", "r");
        flagged_result.aborted = Some(true);
        assert_eq!(outcome_of(&flagged_result), RunOutcome::Aborted);
        // A tool result ends no run, whatever its text says.
        let result = message(Role::Tool, "aborted: the run was stopped", "r");
        assert_eq!(outcome_of(&result), RunOutcome::Aborted);
        let result = message(Role::Tool, "42", "r");
        assert_eq!(outcome_of(&result), RunOutcome::Aborted);
        // Text alone never makes an answer aborted.
        let answer = message(Role::Assistant, "aborted: no, finished", "r");
        assert_eq!(outcome_of(&answer), RunOutcome::Final);
    }

    #[test]
    fn the_scan_pairs_each_key_with_its_run_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.jsonl");
        let header = Header::for_test("t", "k", 1);
        let mut cut_off = message(Role::Assistant, "", "r3");
        cut_off.tool_calls = Some(vec![call()]);
        let mut stopped = message(Role::Tool, "aborted: the run was stopped", "r4");
        stopped.aborted = Some(true);
        let lines = [
            user("r1", Some("a")),
            message(Role::Assistant, "one", "r1"),
            user("r2", None),
            message(Role::Assistant, "two", "r2"),
            user("r3", Some("c")),
            cut_off,
            user("r4", Some("d")),
            stopped,
            user("r5", Some("e")),
            NewMessage::new(Role::System, "no run").message,
        ];
        let mut bytes = header_line(&header).expect("header");
        for m in &lines {
            bytes.extend(message_line(m).expect("line"));
        }
        std::fs::write(&path, &bytes).expect("write");
        let end = bytes.len() as u64;
        let all = scan(&path, end, 10).expect("scan");
        let expect = |idem: &str, run: &str, o| (idem.to_string(), run.to_string(), Some(o));
        assert_eq!(
            all,
            [
                expect("e", "r5", RunOutcome::Aborted),
                expect("d", "r4", RunOutcome::Aborted),
                expect("c", "r3", RunOutcome::Aborted),
                expect("a", "r1", RunOutcome::Final),
            ]
        );
        assert_eq!(scan(&path, end, 2).expect("scan"), all[..2]);
    }

    #[test]
    fn markers_tell_the_outcome_and_whether_a_run_is_still_open() {
        use crate::store::transcript::{RunMarker, RunMarkerState, run_line};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.jsonl");
        let run = |id: &str, state, idem: Option<&str>, stop: Option<&str>| {
            let mut m = RunMarker::new(id, state);
            m.ts = 1;
            m.idempotency_key = idem.map(str::to_string);
            m.stop_reason = stop.map(str::to_string);
            run_line(&m).expect("line")
        };
        let mut calling = message(Role::Assistant, "", "r1");
        calling.tool_calls = Some(vec![call()]);
        let mut result = message(Role::Tool, "42", "r1");
        result.tool_call_id = Some("c1".into());
        let mut bytes = header_line(&Header::for_test("t", "k", 1)).expect("header");
        let mut lines = vec![
            // r0: an old run without markers.
            message_line(&user("r0", Some("z"))).expect("line"),
            message_line(&message(Role::Assistant, "old", "r0")).expect("line"),
            // r1: ended final at max_turns, its last message a tool result.
            run("r1", RunMarkerState::Started, None, None),
            message_line(&user("r1", Some("a"))).expect("line"),
            message_line(&calling).expect("line"),
            message_line(&result).expect("line"),
            run("r1", RunMarkerState::Final, None, Some("max_turns")),
            // r2: its key on the started marker alone; suspended, not ended.
            run("r2", RunMarkerState::Started, Some("b"), None),
            message_line(&user("r2", None)).expect("line"),
            run("r2", RunMarkerState::Suspended, None, None),
            // r3: started, with its user message, nothing else (a crash).
            run("r3", RunMarkerState::Started, Some("c"), None),
            message_line(&user("r3", Some("c"))).expect("line"),
        ];
        for line in lines.drain(..) {
            bytes.extend(line);
        }
        std::fs::write(&path, &bytes).expect("write");
        let all = scan(&path, bytes.len() as u64, 10).expect("scan");
        let expect = |idem: &str, run: &str, o| (idem.to_string(), run.to_string(), o);
        assert_eq!(
            all,
            [
                expect("c", "r3", None),
                expect("b", "r2", None),
                expect("a", "r1", Some(RunOutcome::Final)),
                expect("z", "r0", Some(RunOutcome::Final)),
            ]
        );
        assert_eq!(scan(&path, bytes.len() as u64, 1).expect("scan"), all[..1]);
    }
}
