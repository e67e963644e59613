//! The transcript lines of version 2 that are not messages: run markers (a run started, was
//! suspended, resumed or ended), tool markers (a tool that is not read-only is about to run)
//! and approval lines (a tool call waits for a person, and how that was resolved).
//!
//! They are the durable trail that lets a run be resumed after a restart and an idempotency key
//! be answered from the file. Readers of messages (history, context, fork, previews) skip them
//! like meta lines. Here too is the one serializer of a typed line, which `transcript` writes
//! every other line with (the file below it, so the two never import each other).

use std::io;

use serde::{Deserialize, Serialize};

use crate::protocol::{ApprovalDecision, ApprovalState, MessageError, RunOutcome};

/// The state a run marker records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMarkerState {
    /// The run started (its first line; carries `agent` and the idempotency key).
    Started,
    /// The gateway stopped with the run unfinished, meaning to resume it at the next start.
    Suspended,
    /// The run was resumed after a restart (carries `attempt`), so "resumed once" is durable.
    Resumed,
    /// The run ended with an answer.
    Final,
    /// The run was aborted.
    Aborted,
    /// The run failed.
    Error,
}

impl RunMarkerState {
    /// How the run ended, for the three end states; `None` while it is open.
    pub fn outcome(self) -> Option<RunOutcome> {
        match self {
            Self::Final => Some(RunOutcome::Final),
            Self::Aborted => Some(RunOutcome::Aborted),
            Self::Error => Some(RunOutcome::Error),
            Self::Started | Self::Suspended | Self::Resumed => None,
        }
    }

    /// The marker state that ends a run with `outcome`.
    pub fn ending(outcome: RunOutcome) -> Self {
        match outcome {
            RunOutcome::Final => Self::Final,
            RunOutcome::Aborted => Self::Aborted,
            RunOutcome::Error => Self::Error,
        }
    }
}

/// `{"type":"run", runId, ts, state, agent?, idempotencyKey?, stopReason?, error?, attempt?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunMarker {
    /// The run.
    pub run_id: String,
    /// When (0 when appending: the store sets the time).
    pub ts: u64,
    /// What happened to the run.
    pub state: RunMarkerState,
    /// The agent running it (on `started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The idempotency key it was sent with (on `started`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Why it stopped (on an end: `end_turn`, `max_turns`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// What failed (on `error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<MessageError>,
    /// Which resumption this is, from 1 (on `resumed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The model the send asked for, when it named one (on `started`; a resumed run keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl RunMarker {
    /// A marker of `run_id` in `state`, stamped when it is appended, with nothing else.
    pub fn new(run_id: impl Into<String>, state: RunMarkerState) -> Self {
        Self {
            run_id: run_id.into(),
            ts: 0,
            state,
            agent: None,
            idempotency_key: None,
            stop_reason: None,
            error: None,
            attempt: None,
            model: None,
        }
    }
}

/// `{"type":"tool", toolCallId, ts, state: "started", runId?}`: written before a tool that is not
/// read-only is called, so that a restart never runs it twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolMarker {
    /// The tool call.
    pub tool_call_id: String,
    /// When (0 when appending: the store sets the time).
    pub ts: u64,
    /// `started` (an open string: a reader accepts values it does not know).
    pub state: String,
    /// The run making the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl ToolMarker {
    /// The `started` marker of `tool_call_id` in run `run_id`, stamped when it is appended.
    pub fn started(tool_call_id: impl Into<String>, run_id: impl Into<String>) -> Self {
        Self {
            tool_call_id: tool_call_id.into(),
            ts: 0,
            state: "started".into(),
            run_id: Some(run_id.into()),
        }
    }
}

/// `{"type":"approval", approvalId, ts, state, toolCallId, name, runId?, decision?, by?,
/// reason?, remember?}`: one line when an approval is asked (`pending`), one when resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalLine {
    /// The approval.
    pub approval_id: String,
    /// When (0 when appending: the store sets the time).
    pub ts: u64,
    /// `pending`, `allowed` or `denied`.
    pub state: ApprovalState,
    /// The tool call waiting.
    pub tool_call_id: String,
    /// The tool's name.
    pub name: String,
    /// The run making the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// How it was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<ApprovalDecision>,
    /// Who resolved it: a token name, `local`, `timeout` or `abort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Why, as the resolver said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `session`: later calls of this tool in this transcript are allowed without asking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remember: Option<String>,
}

impl ApprovalLine {
    /// Whether this line allows later calls of its tool in the session without asking.
    pub fn remembers_allow(&self) -> bool {
        self.decision == Some(ApprovalDecision::Allow)
            && self.remember.as_deref() == Some("session")
    }
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    inner: &'a T,
}

/// `inner` as one line of type `kind` (`type` first), with its newline.
pub(super) fn tagged_line<T: Serialize>(kind: &'static str, inner: &T) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(&Tagged { kind, inner }).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// A run marker as a line (with its newline).
pub fn run_line(marker: &RunMarker) -> io::Result<Vec<u8>> {
    tagged_line("run", marker)
}

/// A tool marker as a line (with its newline).
pub fn tool_line(marker: &ToolMarker) -> io::Result<Vec<u8>> {
    tagged_line("tool", marker)
}

/// An approval line (with its newline).
pub fn approval_line(approval: &ApprovalLine) -> io::Result<Vec<u8>> {
    tagged_line("approval", approval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::transcript::{Line, line_bytes, parse_line};

    fn body(line: &[u8]) -> &[u8] {
        &line[..line.len() - 1]
    }

    #[test]
    fn run_tool_and_approval_lines_round_trip() {
        let mut started = RunMarker::new("r1", RunMarkerState::Started);
        started.ts = 5;
        started.agent = Some("main".into());
        started.idempotency_key = Some("k1".into());
        let line = run_line(&started).expect("line");
        assert_eq!(
            line,
            b"{\"type\":\"run\",\"runId\":\"r1\",\"ts\":5,\"state\":\"started\",\"agent\":\"main\",\"idempotencyKey\":\"k1\"}\n"
        );
        assert!(matches!(parse_line(body(&line)), Line::Run(back) if back == started));

        let mut failed = RunMarker::new("r1", RunMarkerState::Error);
        failed.ts = 6;
        failed.stop_reason = Some("error".into());
        failed.error = Some(MessageError {
            kind: "interrupted".into(),
            message: "twice".into(),
        });
        let line = run_line(&failed).expect("line");
        assert!(matches!(parse_line(body(&line)), Line::Run(back) if back == failed));
        let mut resumed = RunMarker::new("r1", RunMarkerState::Resumed);
        resumed.attempt = Some(1);
        let line = run_line(&resumed).expect("line");
        assert_eq!(
            line,
            b"{\"type\":\"run\",\"runId\":\"r1\",\"ts\":0,\"state\":\"resumed\",\"attempt\":1}\n"
        );
        assert!(matches!(parse_line(body(&line)), Line::Run(back) if back == resumed));

        let mut tool = ToolMarker::started("c1", "r1");
        tool.ts = 7;
        let line = tool_line(&tool).expect("line");
        assert_eq!(
            line,
            b"{\"type\":\"tool\",\"toolCallId\":\"c1\",\"ts\":7,\"state\":\"started\",\"runId\":\"r1\"}\n"
        );
        assert!(matches!(parse_line(body(&line)), Line::Tool(back) if back == tool));

        let approval = ApprovalLine {
            approval_id: "a1".into(),
            ts: 8,
            state: ApprovalState::Allowed,
            tool_call_id: "c1".into(),
            name: "exec".into(),
            run_id: Some("r1".into()),
            decision: Some(ApprovalDecision::Allow),
            by: Some("local".into()),
            reason: None,
            remember: Some("session".into()),
        };
        let line = approval_line(&approval).expect("line");
        assert_eq!(
            line,
            b"{\"type\":\"approval\",\"approvalId\":\"a1\",\"ts\":8,\"state\":\"allowed\",\"toolCallId\":\"c1\",\"name\":\"exec\",\"runId\":\"r1\",\"decision\":\"allow\",\"by\":\"local\",\"remember\":\"session\"}\n"
        );
        let parsed = parse_line(body(&line));
        assert!(matches!(&parsed, Line::Approval(back) if **back == approval));
        assert_eq!(line_bytes(&parsed).expect("again"), line);
        assert!(approval.remembers_allow());

        // A marker of a state this version does not know is a bad line, never an unknown type.
        assert!(matches!(
            parse_line(br#"{"type":"run","runId":"r","ts":1,"state":"paused"}"#),
            Line::Bad(_)
        ));
    }

    #[test]
    fn only_the_three_ends_have_an_outcome() {
        use RunMarkerState::*;
        for state in [Started, Suspended, Resumed] {
            assert_eq!(state.outcome(), None);
        }
        for outcome in [RunOutcome::Final, RunOutcome::Aborted, RunOutcome::Error] {
            assert_eq!(RunMarkerState::ending(outcome).outcome(), Some(outcome));
        }
    }
}
