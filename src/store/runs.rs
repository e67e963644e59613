//! The run index (`sessions/runs.json`): the most recent finished runs, so that finding how a
//! run ended never scans every transcript; its file, and its rebuild from the transcripts.
//!
//! Like `index.json` it is a snapshot of what the transcripts' run markers say. It is written
//! by the index loop before `index.json`, so it is never older than the index: every end marker
//! before the length `index.json` records is in it, and the tail after that length, replayed at
//! open, holds whatever it lacks. A missing, damaged or unknown one is rebuilt at open by
//! reading the run markers of every transcript, archived ones included.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fs::replace_file;
use super::keys::recovered_key;
use super::transcript::{self, Line, RunMarker};
use crate::protocol::RunOutcome;

/// How many finished runs the index keeps (the most recent by their end).
pub(super) const RUNS_KEPT: usize = 10_000;

/// The run index's file name in the sessions directory.
const RUNS_FILE: &str = "runs.json";

/// The run index's format version.
const RUNS_VERSION: u32 = 1;

/// A run that ended, as the run index keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishedRun {
    /// The run.
    pub run_id: String,
    /// The session it ran in.
    pub session_key: String,
    /// The transcript holding it.
    pub session_id: String,
    /// The agent that ran it.
    pub agent_id: String,
    /// How it ended.
    pub outcome: RunOutcome,
    /// Why it stopped, as its end marker says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// When it ended.
    pub ended_at: u64,
}

impl FinishedRun {
    /// The run `marker` ends with `outcome`, in session `session_key` (transcript `session_id`),
    /// run by `agent_id`.
    pub(super) fn ended(
        marker: &RunMarker,
        outcome: RunOutcome,
        session_key: &str,
        session_id: &str,
        agent_id: &str,
    ) -> Self {
        Self {
            run_id: marker.run_id.clone(),
            session_key: session_key.to_string(),
            session_id: session_id.to_string(),
            agent_id: agent_id.to_string(),
            outcome,
            stop_reason: marker.stop_reason.clone(),
            ended_at: marker.ts,
        }
    }
}

/// The finished runs in memory: by id, and in the order of their end (oldest first).
#[derive(Debug, Default)]
pub(super) struct RunIndex {
    by_id: HashMap<String, FinishedRun>,
    order: BTreeSet<(u64, String)>,
    /// Changed since it was last written.
    changed: bool,
}

impl RunIndex {
    /// An index of `runs` (the newest [`RUNS_KEPT`] of them), unchanged.
    pub(super) fn of(runs: Vec<FinishedRun>) -> Self {
        let mut index = Self::default();
        for run in runs {
            index.insert(run);
        }
        index.changed = false;
        index
    }

    /// Adds a finished run (nothing if its id is known); the oldest go past [`RUNS_KEPT`].
    pub(super) fn insert(&mut self, run: FinishedRun) {
        if self.by_id.contains_key(&run.run_id) {
            return;
        }
        self.order.insert((run.ended_at, run.run_id.clone()));
        self.by_id.insert(run.run_id.clone(), run);
        while self.order.len() > RUNS_KEPT {
            if let Some((_, id)) = self.order.pop_first() {
                self.by_id.remove(&id);
            }
        }
        self.changed = true;
    }

    /// The finished run `run_id`, if it is among those kept.
    pub(super) fn get(&self, run_id: &str) -> Option<FinishedRun> {
        self.by_id.get(run_id).cloned()
    }

    /// How many runs are kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The runs, oldest end first, if they changed since the last call (which clears that).
    pub(super) fn take_changed(&mut self) -> Option<Vec<FinishedRun>> {
        if !self.changed {
            return None;
        }
        self.changed = false;
        Some(
            self.order
                .iter()
                .filter_map(|(_, id)| self.by_id.get(id).cloned())
                .collect(),
        )
    }

    /// Marks the index as to be written (after a failed write, or a rebuild).
    pub(super) fn mark_changed(&mut self) {
        self.changed = true;
    }
}

/// The run index file's content.
#[derive(Serialize, Deserialize)]
struct RunsFile {
    version: u32,
    runs: Vec<FinishedRun>,
}

/// Why the run index file could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unusable {
    /// There is none (a new data directory, or one from before the run index).
    Missing,
    /// It cannot be read, is damaged or of an unknown version (a warning was logged).
    Damaged,
}

/// The finished runs of the run index in `dir`, or why it must be rebuilt.
pub(super) fn read_runs(dir: &Path) -> Result<Vec<FinishedRun>, Unusable> {
    let path = dir.join(RUNS_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(Unusable::Missing),
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "cannot read the run index; rebuilding it");
            return Err(Unusable::Damaged);
        }
    };
    match serde_json::from_slice::<RunsFile>(&bytes) {
        Ok(file) if file.version == RUNS_VERSION => Ok(file.runs),
        Ok(file) => {
            tracing::warn!(file = %path.display(), version = file.version, "unknown run index version; rebuilding it");
            Err(Unusable::Damaged)
        }
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "damaged run index; rebuilding it");
            Err(Unusable::Damaged)
        }
    }
}

/// Writes `runs` (oldest end first) as the run index of `dir`, durably and all at once.
pub(super) fn write_runs(dir: &Path, runs: Vec<FinishedRun>) -> io::Result<()> {
    let file = RunsFile {
        version: RUNS_VERSION,
        runs,
    };
    let bytes = serde_json::to_vec(&file).map_err(io::Error::other)?;
    replace_file(dir, RUNS_FILE, &bytes)
}

/// The finished runs the transcript file `path` (of transcript `session_id`, live or archived)
/// records: each end marker, with the agent of the run's started marker (or of the header).
pub(super) fn scan_file(path: &Path, session_id: &str) -> io::Result<Vec<FinishedRun>> {
    let mut key = recovered_key(session_id);
    let mut session_agent = crate::config::DEFAULT_AGENT.to_string();
    let mut agents: HashMap<String, String> = HashMap::new();
    let mut found = Vec::new();
    transcript::scan_forward(path, 0, 1, |l| match l.line {
        Line::Header(h) if l.number == 1 => {
            key = h.key;
            if let Some(agent) = h.agent {
                session_agent = agent;
            }
        }
        Line::Run(marker) => match marker.state.outcome() {
            None => {
                if let Some(agent) = &marker.agent {
                    agents.insert(marker.run_id.clone(), agent.clone());
                }
            }
            Some(outcome) => {
                let agent = agents
                    .remove(&marker.run_id)
                    .or_else(|| marker.agent.clone())
                    .unwrap_or_else(|| session_agent.clone());
                found.push(FinishedRun::ended(
                    &marker, outcome, &key, session_id, &agent,
                ));
            }
        },
        _ => {}
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, ended_at: u64) -> FinishedRun {
        FinishedRun {
            run_id: id.into(),
            session_key: "k".into(),
            session_id: "s".into(),
            agent_id: "main".into(),
            outcome: RunOutcome::Final,
            stop_reason: None,
            ended_at,
        }
    }

    #[test]
    fn the_index_keeps_the_most_recent_runs_by_their_end() {
        let mut index = RunIndex::default();
        for i in 0..RUNS_KEPT as u64 + 5 {
            index.insert(run(&format!("r{i}"), 100 + i));
        }
        assert_eq!(index.len(), RUNS_KEPT);
        assert!(index.get("r4").is_none() && index.get("r5").is_some());
        // An older run arriving late (a replay) is the one to go, never a newer one.
        index.insert(run("late", 1));
        assert!(index.get("late").is_none() && index.get("r5").is_some());
        // Inserting is idempotent by run id.
        let before = index.take_changed().expect("changed");
        index.insert(run("r5", 999));
        assert_eq!(index.get("r5").map(|r| r.ended_at), Some(105));
        assert!(index.take_changed().is_none(), "nothing new");
        assert_eq!(before.first().map(|r| r.run_id.as_str()), Some("r5"));
    }

    #[test]
    fn the_file_round_trips_and_a_bad_one_is_unusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_runs(dir.path()), Err(Unusable::Missing));
        write_runs(dir.path(), vec![run("a", 1), run("b", 2)]).expect("write");
        let back = read_runs(dir.path()).expect("read");
        assert_eq!(back, vec![run("a", 1), run("b", 2)]);
        std::fs::write(dir.path().join(RUNS_FILE), br#"{"version":9,"runs":[]}"#).expect("w");
        assert_eq!(read_runs(dir.path()), Err(Unusable::Damaged));
        std::fs::write(dir.path().join(RUNS_FILE), b"{nope").expect("w");
        assert_eq!(read_runs(dir.path()), Err(Unusable::Damaged));
    }
}
