//! What the store knows of one transcript without reading it (an index entry), and how each
//! transcript line changes it: counts, preview, label and model, and the runs still open.

use serde::{Deserialize, Serialize};

use super::runs::FinishedRun;
use super::transcript::{Line, RunMarker, RunMarkerState};
use crate::protocol::{Patch, Session, UsageTotals};

/// A run with a `started` marker and no end yet in a transcript: running, or interrupted (by a
/// crash or a suspend) and to be resumed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenRun {
    /// The run.
    pub run_id: String,
    /// The agent running it.
    pub agent_id: String,
    /// The idempotency key it was sent with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// [`RunMarkerState::Started`] (also after a resume) or [`RunMarkerState::Suspended`].
    pub state: RunMarkerState,
    /// When it started.
    pub started_at: u64,
    /// How often it was resumed (0: never).
    pub attempt: u32,
    /// The model the send named, if it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Characters of the last message kept as its preview.
pub(super) const PREVIEW_CHARS: usize = 120;

/// What the store knows of one transcript without reading it; also the index's record of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Entry {
    pub(super) key: String,
    pub(super) session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) model: Option<String>,
    pub(super) created_at: u64,
    pub(super) updated_at: u64,
    pub(super) message_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) last_message_preview: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) last_message_id: Option<String>,
    /// Committed bytes.
    pub(super) len: u64,
    /// Lines in those bytes.
    pub(super) lines: u64,
    /// The agent the session belongs to.
    #[serde(default = "main_agent")]
    pub(super) agent_id: String,
    /// The runs started and not ended, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) open_runs: Vec<OpenRun>,
    /// The usage of the model calls of this transcript (from the usage ledger).
    #[serde(default)]
    pub(super) usage: UsageTotals,
}

/// The agent of a session recorded before sessions had one.
pub(super) fn main_agent() -> String {
    crate::config::DEFAULT_AGENT.to_string()
}

impl Entry {
    /// A transcript of `key` with id `id`, created at `created_at`, nothing in it yet.
    pub(super) fn new(key: String, id: &str, created_at: u64) -> Self {
        Self {
            key,
            session_id: id.to_string(),
            label: None,
            model: None,
            created_at,
            updated_at: created_at,
            message_count: 0,
            last_message_preview: None,
            last_message_id: None,
            len: 0,
            lines: 0,
            agent_id: main_agent(),
            open_runs: Vec::new(),
            usage: UsageTotals::default(),
        }
    }

    /// The session as clients see it.
    pub(super) fn session(&self) -> Session {
        Session {
            key: self.key.clone(),
            session_id: self.session_id.clone(),
            label: self.label.clone(),
            model: self.model.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            message_count: self.message_count,
            last_message_preview: self.last_message_preview.clone(),
            agent_id: self.agent_id.clone(),
            usage: self.usage.clone(),
        }
    }

    /// Folds one line into the entry (`len` and `lines` are the caller's to set); returns the
    /// run an end marker finished, for the run index.
    pub(super) fn apply(&mut self, line: &Line) -> Option<FinishedRun> {
        match line {
            Line::Message(m) => {
                self.message_count += 1;
                self.updated_at = self.updated_at.max(m.ts);
                self.last_message_id = Some(m.id.clone());
                self.last_message_preview = preview(&m.content);
            }
            Line::Meta(meta) => {
                self.updated_at = self.updated_at.max(meta.ts);
                apply_patch(&mut self.label, &meta.label);
                apply_patch(&mut self.model, &meta.model);
            }
            Line::Run(marker) => return self.apply_run(marker),
            _ => {}
        }
        None
    }

    /// Folds a run marker into the open runs.
    fn apply_run(&mut self, marker: &RunMarker) -> Option<FinishedRun> {
        let pos = self
            .open_runs
            .iter()
            .position(|r| r.run_id == marker.run_id);
        if let Some(outcome) = marker.state.outcome() {
            let agent = match pos {
                Some(i) => self.open_runs.remove(i).agent_id,
                None => marker
                    .agent
                    .clone()
                    .unwrap_or_else(|| self.agent_id.clone()),
            };
            return Some(FinishedRun::ended(
                marker,
                outcome,
                &self.key,
                &self.session_id,
                &agent,
            ));
        }
        let open = match pos {
            Some(i) => &mut self.open_runs[i],
            None => {
                // A resume or suspend without its start (a damaged file) still leaves it open.
                self.open_runs.push(OpenRun {
                    run_id: marker.run_id.clone(),
                    agent_id: marker
                        .agent
                        .clone()
                        .unwrap_or_else(|| self.agent_id.clone()),
                    idempotency_key: marker.idempotency_key.clone(),
                    state: RunMarkerState::Started,
                    started_at: marker.ts,
                    attempt: 0,
                    model: marker.model.clone(),
                });
                let last = self.open_runs.len() - 1;
                &mut self.open_runs[last]
            }
        };
        match marker.state {
            RunMarkerState::Started => {
                if let Some(agent) = &marker.agent {
                    open.agent_id.clone_from(agent);
                }
                if marker.idempotency_key.is_some() {
                    open.idempotency_key.clone_from(&marker.idempotency_key);
                }
                open.state = RunMarkerState::Started;
                open.attempt = marker.attempt.unwrap_or(open.attempt);
            }
            RunMarkerState::Resumed => {
                open.state = RunMarkerState::Started;
                open.attempt = marker.attempt.unwrap_or(open.attempt + 1);
            }
            RunMarkerState::Suspended => open.state = RunMarkerState::Suspended,
            RunMarkerState::Final | RunMarkerState::Aborted | RunMarkerState::Error => {}
        }
        None
    }
}

fn apply_patch(slot: &mut Option<String>, patch: &Patch<String>) {
    match patch {
        Patch::Keep => {}
        Patch::Clear => *slot = None,
        Patch::Set(v) => *slot = Some(v.clone()),
    }
}

/// The preview of a message: its text on one line (runs of whitespace become one space), cut
/// to [`PREVIEW_CHARS`] characters; `None` when nothing but whitespace is left.
pub(super) fn preview(content: &str) -> Option<String> {
    let flat: String = content.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return None;
    }
    Some(flat.chars().take(PREVIEW_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Role, TranscriptMessage};
    use crate::store::transcript::Meta;

    #[test]
    fn a_preview_is_one_line_of_at_most_its_length_in_characters() {
        assert_eq!(
            preview("  hello \n\n  world\t!  ").as_deref(),
            Some("hello world !")
        );
        assert_eq!(preview(""), None);
        assert_eq!(preview(" \n\t "), None);
        let exact = "a".repeat(PREVIEW_CHARS);
        assert_eq!(preview(&exact).as_deref(), Some(exact.as_str()));
        let long = format!("{exact}bcd");
        assert_eq!(preview(&long).as_deref(), Some(exact.as_str()));
        // Characters, not bytes: a multi-byte character is never split.
        let wide = "é".repeat(PREVIEW_CHARS + 5);
        let cut = preview(&wide).unwrap_or_default();
        assert_eq!(cut.chars().count(), PREVIEW_CHARS);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn lines_fold_into_counts_times_preview_and_patches() {
        let mut entry = Entry::new("k".into(), "id", 10);
        let mut m = crate::store::NewMessage::new(Role::User, "first  message").message;
        m.id = "m1".into();
        m.ts = 20;
        entry.apply(&Line::Message(Box::new(m.clone())));
        let older = TranscriptMessage {
            id: "m2".into(),
            ts: 5,
            content: " \n".into(),
            ..m
        };
        entry.apply(&Line::Message(Box::new(older)));
        assert_eq!(entry.message_count, 2);
        assert_eq!(
            entry.updated_at, 20,
            "a clock that went back never moves it back"
        );
        assert_eq!(entry.last_message_id.as_deref(), Some("m2"));
        assert_eq!(entry.last_message_preview, None);
        entry.apply(&Line::Meta(Meta {
            ts: 30,
            label: Patch::Set("L".into()),
            model: Patch::Set("M".into()),
        }));
        entry.apply(&Line::Meta(Meta {
            ts: 31,
            label: Patch::Keep,
            model: Patch::Clear,
        }));
        assert_eq!(entry.label.as_deref(), Some("L"));
        assert_eq!(entry.model, None);
        assert_eq!(entry.updated_at, 31);
        entry.apply(&Line::Bad("torn".into()));
        entry.apply(&Line::Unknown("future".into()));
        assert_eq!(entry.message_count, 2);
        let session = entry.session();
        assert_eq!((session.key.as_str(), session.created_at), ("k", 10));
    }

    #[test]
    fn run_markers_open_resume_suspend_and_finish_a_run() {
        let mut entry = Entry::new("k".into(), "id", 10);
        let marker = |state, attempt| {
            let mut m = RunMarker::new("r", state);
            m.ts = 50;
            m.attempt = attempt;
            if state == RunMarkerState::Started {
                m.agent = Some("helper".into());
            }
            Line::Run(m)
        };
        assert_eq!(entry.apply(&marker(RunMarkerState::Started, None)), None);
        assert_eq!(entry.open_runs.len(), 1);
        assert_eq!(entry.open_runs[0].agent_id, "helper");
        assert_eq!(entry.apply(&marker(RunMarkerState::Suspended, None)), None);
        assert_eq!(entry.open_runs[0].state, RunMarkerState::Suspended);
        entry.apply(&marker(RunMarkerState::Resumed, None));
        assert_eq!(
            (entry.open_runs[0].state, entry.open_runs[0].attempt),
            (RunMarkerState::Started, 1)
        );
        entry.apply(&marker(RunMarkerState::Resumed, Some(5)));
        assert_eq!(entry.open_runs[0].attempt, 5);
        assert_eq!(entry.updated_at, 10, "markers are not activity");
        let done = entry
            .apply(&marker(RunMarkerState::Error, None))
            .expect("finished");
        assert!(entry.open_runs.is_empty());
        assert_eq!(done.agent_id, "helper", "the agent of its start");
        assert_eq!((done.session_key.as_str(), done.ended_at), ("k", 50));
        assert_eq!(done.outcome, crate::protocol::RunOutcome::Error);
        // The index file keeps open runs, and reads entries written before them.
        entry.apply(&marker(RunMarkerState::Started, None));
        let json = serde_json::to_value(&entry).expect("json");
        assert_eq!(json["openRuns"][0]["state"], "started");
        let back: Entry = serde_json::from_value(json).expect("back");
        assert_eq!(back, entry);
        let old: Entry = serde_json::from_str(
            r#"{"key":"k","sessionId":"s","createdAt":1,"updatedAt":1,"messageCount":0,"len":0,"lines":0}"#,
        )
        .expect("old entry");
        assert!(old.open_runs.is_empty());
    }
}
