//! What the markers of a transcript tell a run that goes on: the trail of a run to resume
//! (its messages, tool markers and approvals since its started marker), and the tools a person
//! allowed for the rest of the session.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;

use super::Store;
use super::error::StoreError;
use super::transcript::{self, ApprovalLine, Line, RunMarkerState};
use crate::protocol::{Role, TranscriptMessage};

/// What resuming a run needs to know of it, read backwards from the end of its transcript to
/// its started marker.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunTrail {
    /// Whether the run's user message was written.
    pub has_user_message: bool,
    /// Assistant messages of the run (its turns written so far).
    pub assistant_turns: u32,
    /// The newest assistant message of the run.
    pub last_assistant: Option<TranscriptMessage>,
    /// Tool calls with a result written since the run started.
    pub results: HashSet<String>,
    /// Tool calls with a `started` tool marker (they may have run: never run again).
    pub started_tools: HashSet<String>,
    /// The newest approval line of each tool call, by tool call id.
    pub approvals: HashMap<String, ApprovalLine>,
    /// The newest message of the run, whatever its role (it says where the run was).
    pub newest: Option<TranscriptMessage>,
    /// When the run started (its started marker's time).
    pub started_at: u64,
}

/// Whether a line of run `of` (`None`: no run named) belongs to the run `run`.
fn of_run(of: Option<&str>, run: &str) -> bool {
    of.is_none_or(|r| r == run)
}

/// The trail of run `run_id` in the transcript `path` up to `end`. Tool results, tool markers
/// and approvals count when they name the run or name none.
pub(super) fn read_trail(path: &Path, end: u64, run_id: &str) -> io::Result<RunTrail> {
    let mut trail = RunTrail::default();
    transcript::scan_backward(path, end, |_, line| {
        match transcript::parse_line(line) {
            Line::Run(marker) => {
                let start = marker.run_id == run_id && marker.state == RunMarkerState::Started;
                if start {
                    trail.started_at = marker.ts;
                }
                return !start;
            }
            Line::Message(m) if m.run_id.as_deref() == Some(run_id) && trail.newest.is_none() => {
                trail.newest = Some((*m).clone());
                note_message(&mut trail, *m, run_id);
            }
            Line::Message(m) => note_message(&mut trail, *m, run_id),
            Line::Tool(t) if of_run(t.run_id.as_deref(), run_id) => {
                trail.started_tools.insert(t.tool_call_id);
            }
            Line::Approval(a) if of_run(a.run_id.as_deref(), run_id) => {
                // Going backwards, the first line of a call is its newest.
                trail.approvals.entry(a.tool_call_id.clone()).or_insert(*a);
            }
            _ => {}
        }
        true
    })?;
    Ok(trail)
}

/// Folds one message (read going backwards) into the trail of `run_id`.
fn note_message(trail: &mut RunTrail, m: TranscriptMessage, run_id: &str) {
    match m.role {
        Role::Tool if of_run(m.run_id.as_deref(), run_id) => {
            if let Some(call) = &m.tool_call_id {
                trail.results.insert(call.clone());
            }
        }
        Role::User if m.run_id.as_deref() == Some(run_id) => {
            trail.has_user_message = true;
        }
        Role::Assistant if m.run_id.as_deref() == Some(run_id) => {
            trail.assistant_turns += 1;
            if trail.last_assistant.is_none() {
                trail.last_assistant = Some(m);
            }
        }
        _ => {}
    }
}

/// The tools allowed with `remember: "session"` in the transcript `path` up to `end`.
pub(super) fn read_remembered(path: &Path, end: u64) -> io::Result<HashSet<String>> {
    const NEEDLE: &[u8] = b"\"approval\"";
    let mut tools = HashSet::new();
    transcript::scan_backward(path, end, |_, line| {
        // Most lines are messages: parse only those that can be approvals.
        if line.windows(NEEDLE.len()).any(|w| w == NEEDLE)
            && let Line::Approval(a) = transcript::parse_line(line)
            && a.remembers_allow()
        {
            tools.insert(a.name);
        }
        true
    })?;
    Ok(tools)
}

impl Store {
    /// What resuming the run `run_id` of `key` needs: its messages, tool markers and approvals
    /// since its started marker, read backwards from the end of the session's current
    /// transcript (a run it does not hold has an empty trail).
    pub async fn run_trail(&self, key: &str, run_id: &str) -> Result<RunTrail, StoreError> {
        let t = self
            .lookup(key)
            .ok_or_else(|| StoreError::no_session(key))?;
        let path = t.path.clone();
        let end = t.entry().len;
        let run = run_id.to_string();
        self.blocking(&format!("cannot read session `{key}`"), move || {
            read_trail(&path, end, &run)
        })
        .await
    }

    /// The tool names a person allowed with `remember: "session"` in `key`'s current
    /// transcript (a reset forgets them).
    pub async fn remembered_tools(&self, key: &str) -> Result<HashSet<String>, StoreError> {
        let t = self
            .lookup(key)
            .ok_or_else(|| StoreError::no_session(key))?;
        let path = t.path.clone();
        let end = t.entry().len;
        self.blocking(&format!("cannot read session `{key}`"), move || {
            read_remembered(&path, end)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ApprovalDecision, ApprovalState, ToolCall};
    use crate::store::test_support::open;
    use crate::store::transcript::{RunMarker, ToolMarker};
    use crate::store::{NewMessage, Record};

    fn of(role: Role, content: &str, run: &str) -> NewMessage {
        let mut m = NewMessage::new(role, content);
        m.message.run_id = Some(run.into());
        m
    }

    fn result(call: &str, run: Option<&str>) -> Record {
        let mut m = NewMessage::new(Role::Tool, "ok");
        m.message.tool_call_id = Some(call.into());
        m.message.run_id = run.map(str::to_string);
        Record::Message(m)
    }

    fn approval(id: &str, call: &str, name: &str, state: ApprovalState) -> ApprovalLine {
        ApprovalLine {
            approval_id: id.into(),
            ts: 0,
            state,
            tool_call_id: call.into(),
            name: name.into(),
            run_id: Some("r1".into()),
            decision: None,
            by: None,
            reason: None,
            remember: None,
        }
    }

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "exec".into(),
            input: serde_json::json!({}),
        }
    }

    #[tokio::test]
    async fn the_trail_of_a_run_reaches_back_to_its_started_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.ensure("k", "main").await.expect("ensure");
        let mut asking = of(Role::Assistant, "", "r1");
        asking.message.tool_calls = Some(vec![call("c1"), call("c2")]);
        store
            .append_records(
                "k",
                None,
                vec![
                    // An earlier run, outside the trail.
                    Record::Run(RunMarker::new("r0", RunMarkerState::Started)),
                    Record::Message(of(Role::Assistant, "before", "r0")),
                    result("old", None),
                    Record::Run(RunMarker::new("r0", RunMarkerState::Final)),
                    Record::Run(RunMarker::new("r1", RunMarkerState::Started)),
                    Record::Message(of(Role::User, "do it", "r1")),
                    Record::Message(asking),
                    Record::Tool(ToolMarker::started("c1", "r1")),
                    result("c1", Some("r1")),
                    Record::Approval(Box::new(approval(
                        "a2",
                        "c2",
                        "exec",
                        ApprovalState::Pending,
                    ))),
                ],
            )
            .await
            .expect("append");
        let trail = store.run_trail("k", "r1").await.expect("trail");
        assert!(trail.has_user_message);
        assert_eq!(trail.assistant_turns, 1);
        let last = trail.last_assistant.as_ref().expect("assistant");
        assert_eq!(last.tool_calls.as_ref().map(Vec::len), Some(2));
        assert_eq!(trail.results, HashSet::from(["c1".to_string()]));
        assert_eq!(trail.started_tools, HashSet::from(["c1".to_string()]));
        assert_eq!(trail.approvals.len(), 1);
        let pending = &trail.approvals["c2"];
        assert_eq!(
            (pending.state, pending.approval_id.as_str()),
            (ApprovalState::Pending, "a2")
        );
        assert!(pending.ts > 0, "stamped");
        // A newer line of the same call wins.
        let mut allowed = approval("a2", "c2", "exec", ApprovalState::Allowed);
        allowed.decision = Some(ApprovalDecision::Allow);
        store
            .append_records("k", None, vec![Record::Approval(Box::new(allowed))])
            .await
            .expect("append");
        let trail = store.run_trail("k", "r1").await.expect("trail");
        assert_eq!(trail.approvals["c2"].state, ApprovalState::Allowed);
        let none = store.run_trail("k", "nope").await.expect("trail");
        assert!(!none.has_user_message && none.last_assistant.is_none());
    }

    #[tokio::test]
    async fn remembered_tools_are_those_allowed_for_the_session() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.ensure("k", "main").await.expect("ensure");
        let mut remembered = approval("a1", "c1", "exec", ApprovalState::Allowed);
        remembered.decision = Some(ApprovalDecision::Allow);
        remembered.remember = Some("session".into());
        let mut once = approval("a2", "c2", "write_file", ApprovalState::Allowed);
        once.decision = Some(ApprovalDecision::Allow);
        let mut denied = approval("a3", "c3", "fetch", ApprovalState::Denied);
        denied.decision = Some(ApprovalDecision::Deny);
        denied.remember = Some("session".into());
        let records = [remembered, once, denied]
            .into_iter()
            .map(|a| Record::Approval(Box::new(a)))
            .collect();
        store
            .append_records("k", None, records)
            .await
            .expect("append");
        let tools = store.remembered_tools("k").await.expect("tools");
        assert_eq!(tools, HashSet::from(["exec".to_string()]));
        store.reset("k").await.expect("reset");
        assert!(
            store.remembered_tools("k").await.expect("tools").is_empty(),
            "a reset forgets"
        );
    }
}
