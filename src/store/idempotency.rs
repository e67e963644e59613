//! The idempotency keys of a session's last runs and how each run ended, as the transcript
//! tells it: read from the end of the file, from typed fields only, never from message text.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use super::Store;
use super::error::StoreError;
use super::transcript::{self, Line};
use crate::protocol::{Role, RunOutcome, TranscriptMessage};

/// How a run ended, told by its newest message: flagged `aborted`, carrying an `error`, a final
/// assistant message (no tool calls), or anything else (a run cut off before its ending, such
/// as a tool result or an assistant message whose calls never got results), which counts as
/// aborted.
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

/// `(idempotency key, run id, outcome)` of the last `n` runs with a key in the transcript
/// `path` up to `end`, newest first. A run's user message holds its key; its newest message
/// (read first, going backwards) tells its outcome; a run with no message after the user's was
/// interrupted.
pub(super) fn scan(
    path: &Path,
    end: u64,
    n: usize,
) -> io::Result<Vec<(String, String, RunOutcome)>> {
    let mut outcomes: HashMap<String, RunOutcome> = HashMap::new();
    let mut found = Vec::new();
    transcript::scan_backward(path, end, |_, line| {
        let Line::Message(m) = transcript::parse_line(line) else {
            return true;
        };
        let Some(run) = m.run_id.clone() else {
            return true;
        };
        if m.role == Role::User {
            if let Some(idem) = m.idempotency_key.clone() {
                let outcome = outcomes.get(&run).copied().unwrap_or(RunOutcome::Aborted);
                found.push((idem, run, outcome));
            }
            return found.len() < n;
        }
        outcomes.entry(run).or_insert_with(|| outcome_of(&m));
        true
    })?;
    Ok(found)
}

impl Store {
    /// The idempotency keys of the last `n` runs of `key`'s transcript, newest first, with each
    /// run's outcome as the transcript tells it (a run without an ending was interrupted).
    pub async fn idempotency_keys(
        &self,
        key: &str,
        n: usize,
    ) -> Result<Vec<(String, String, RunOutcome)>, StoreError> {
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
        let expect = |idem: &str, run: &str, o| (idem.to_string(), run.to_string(), o);
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
}
