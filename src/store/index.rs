//! The session index (`sessions/index.json`): its file, and the loop that keeps it (and the
//! run index, `runs`) fresh.
//!
//! The index is only a startup accelerator: it may lag behind the transcripts by
//! [`INDEX_INTERVAL`], and a missing, damaged or unknown one is rebuilt from them at open.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Store;
use super::entry::Entry;
use super::fs::{probe_write, replace_file};
use super::runs::write_runs;

/// How long the index may lag behind the transcripts (it is only a startup accelerator).
const INDEX_INTERVAL: Duration = Duration::from_secs(2);

/// The index file's content.
#[derive(Serialize, Deserialize)]
pub(super) struct IndexFile {
    pub(super) version: u32,
    pub(super) sessions: Vec<Entry>,
    /// The bytes of the usage ledger whose lines the entries' usage holds.
    #[serde(default, rename = "usageLen", skip_serializing_if = "Option::is_none")]
    pub(super) usage_len: Option<u64>,
}

/// The entries of the index in `dir`; none (with a warning) when it is missing, damaged or of
/// an unknown version, so that every transcript is read instead.
#[cfg(test)]
pub(super) fn read_index(dir: &Path) -> Vec<Entry> {
    read_index_file(dir).0
}

/// The entries of the index in `dir` and the ledger length their usage accounts for; none
/// (with a warning) when it is missing, damaged or of an unknown version, so that every
/// transcript (and the whole usage ledger) is read instead.
pub(super) fn read_index_file(dir: &Path) -> (Vec<Entry>, Option<u64>) {
    let path = dir.join("index.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return (Vec::new(), None),
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "cannot read the session index; rebuilding it");
            return (Vec::new(), None);
        }
    };
    match serde_json::from_slice::<IndexFile>(&bytes) {
        Ok(index) if index.version == 1 => (index.sessions, index.usage_len),
        Ok(_) => {
            tracing::warn!(file = %path.display(), "unknown index version; rebuilding it");
            (Vec::new(), None)
        }
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "damaged session index; rebuilding it");
            (Vec::new(), None)
        }
    }
}

/// Writes `index` to `dir` under a temporary name, flushes it, renames it into place and
/// flushes the directory.
pub(super) fn write_index(dir: &Path, index: &IndexFile) -> io::Result<()> {
    let bytes = serde_json::to_vec(index).map_err(io::Error::other)?;
    replace_file(dir, "index.json", &bytes)
}

impl Store {
    /// Writes the index if it changed since the last write, the run index first when it
    /// changed too; `Ok(true)` when it wrote.
    ///
    /// The entries are taken before the finished runs, and a write folds its end markers into
    /// the run index before it moves its entry on, so `runs.json` always holds every run ended
    /// within the lengths `index.json` records.
    pub fn flush_index(&self) -> io::Result<bool> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        // Under the ledger's lock: the entries' usage holds exactly its lines before `usage_len`.
        let (sessions, usage_len): (Vec<Entry>, u64) = {
            let accounted = self
                .ledger
                .accounted
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match self.sessions.read() {
                // Ephemeral sessions never outlive the process: not in the index.
                Ok(s) => (
                    s.values()
                        .filter(|t| !t.ephemeral)
                        .map(|t| t.entry())
                        .collect(),
                    *accounted,
                ),
                Err(_) => return Ok(false),
            }
        };
        let runs = self
            .runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_changed();
        if let Some(runs) = runs
            && let Err(err) = write_runs(&self.dir, runs)
        {
            self.runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .mark_changed();
            self.mark_dirty();
            return Err(err);
        }
        let result = write_index(
            &self.dir,
            &IndexFile {
                version: 1,
                sessions,
                usage_len: Some(usage_len),
            },
        );
        if result.is_err() {
            self.mark_dirty();
        }
        result.map(|()| true)
    }

    /// Keeps the index fresh until `stop` is cancelled, then writes it a last time. While the
    /// store cannot write, it also tries a small write each round, so the store turns writable
    /// (and `/readyz` ready) by itself once space is back, even if no client writes.
    pub async fn index_loop(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(INDEX_INTERVAL) => {}
            }
            let store = self.clone();
            match tokio::task::spawn_blocking(move || store.flush_index()).await {
                Ok(Err(err)) => {
                    let _ = self.health.error("cannot write the session index", &err);
                }
                Err(err) => tracing::warn!(%err, "index writer failed"),
                Ok(Ok(true)) => self.health.succeeded(),
                Ok(Ok(false)) => {}
            }
            if self.health.is_failing() {
                let dir = self.dir.clone();
                match tokio::task::spawn_blocking(move || probe_write(&dir)).await {
                    Ok(Ok(())) => self.health.succeeded(),
                    Ok(Err(err)) => {
                        let _ = self
                            .health
                            .error("cannot write to the sessions directory", &err);
                    }
                    Err(err) => tracing::warn!(%err, "storage probe failed"),
                }
            }
        }
        let store = self.clone();
        let _ = tokio::task::spawn_blocking(move || store.flush_index()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_round_trips_and_a_bad_one_reads_as_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_index(dir.path()).is_empty(), "no index yet");
        let mut entry = Entry::new("k".into(), "abc", 7);
        entry.len = 42;
        entry.lines = 3;
        write_index(
            dir.path(),
            &IndexFile {
                version: 1,
                sessions: vec![entry.clone()],
                usage_len: Some(7),
            },
        )
        .expect("write");
        assert_eq!(read_index(dir.path()), vec![entry.clone()]);
        assert_eq!(read_index_file(dir.path()).1, Some(7));
        write_index(
            dir.path(),
            &IndexFile {
                version: 2,
                sessions: vec![entry],
                usage_len: None,
            },
        )
        .expect("write");
        assert!(read_index(dir.path()).is_empty(), "unknown version");
        std::fs::write(dir.path().join("index.json"), b"{not json").expect("write");
        assert!(read_index(dir.path()).is_empty(), "damaged");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec!["index.json"], "no temporary file is left");
    }
}
