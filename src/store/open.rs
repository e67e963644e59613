//! Opening the store: the data directory's lock, the index, and the transcripts it does not
//! know or knows only in part; unfinished transcripts are removed, duplicates set aside. The
//! run index is loaded, given the runs ended in the tails replayed, or rebuilt when unusable.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;

use super::Store;
use super::entry::Entry;
use super::error::{OpenError, io_err};
use super::fs::{create_private_dir, lock_data_dir};
use super::health::StorageHealth;
use super::index::read_index_file;
use super::keys::valid_session_id;
use super::live::Transcript;
use super::recovery::{archive_duplicate, catch_up, scan_whole};
use super::runs::{FinishedRun, RunIndex, Unusable, read_runs, scan_file};
use super::transcript;
use super::usage::{LEDGER_FILE, Ledger};
use crate::events::EventHub;

impl Store {
    /// Opens the store in `data_dir` (taking its lock), loading or rebuilding the index.
    /// `changed` is notified whenever the number of sessions changes.
    pub fn open(
        data_dir: &Path,
        hub: Arc<EventHub>,
        changed: Arc<Notify>,
    ) -> Result<Arc<Self>, OpenError> {
        let lock = lock_data_dir(data_dir)?;
        let dir = data_dir.join("sessions");
        create_private_dir(&dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        super::ephemeral::clear_leftovers(&dir);
        let (index, usage_len) = read_index_file(&dir);
        let mut by_id: HashMap<String, Entry> = index
            .into_iter()
            .map(|e| (e.session_id.clone(), e))
            .collect();
        let mut sessions: HashMap<String, Arc<Transcript>> = HashMap::new();
        let read =
            std::fs::read_dir(&dir).map_err(io_err(format!("cannot list {}", dir.display())))?;
        let mut files = Vec::new();
        // Reset, deleted and duplicate transcripts: read only to rebuild the run index.
        let mut archived = Vec::new();
        for item in read {
            let item = item.map_err(io_err(format!("cannot list {}", dir.display())))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(&format!(".jsonl{}", transcript::STAGING_SUFFIX)) {
                // Never complete (a create, fork or reset that failed or crashed): not a session.
                tracing::info!(file = %item.path().display(), "removing an unfinished transcript");
                if let Err(err) = std::fs::remove_file(item.path()) {
                    tracing::warn!(file = %item.path().display(), %err, "cannot remove an unfinished transcript");
                }
                continue;
            }
            let Some(id) = name.strip_suffix(".jsonl") else {
                if let Some((id, _)) = name.split_once(".jsonl.")
                    && valid_session_id(id)
                {
                    archived.push((id.to_string(), item.path()));
                }
                continue;
            };
            if !valid_session_id(id) {
                tracing::warn!(file = %item.path().display(), "ignoring a transcript with an unexpected name");
                continue;
            }
            files.push((id.to_string(), item.path()));
        }
        let mut ended: Vec<FinishedRun> = Vec::new();
        let mut runs = match read_runs(&dir) {
            Ok(known) => RunIndex::of(known),
            Err(why) => {
                if why == Unusable::Missing && !(files.is_empty() && archived.is_empty()) {
                    tracing::warn!(dir = %dir.display(), "no run index; rebuilding it from the transcripts");
                }
                for (id, path) in files.iter().chain(&archived) {
                    match scan_file(path, id) {
                        Ok(found) => ended.extend(found),
                        Err(err) => {
                            tracing::warn!(file = %path.display(), %err, "cannot read a transcript's runs; skipped");
                        }
                    }
                }
                let mut rebuilt = RunIndex::default();
                rebuilt.mark_changed();
                rebuilt
            }
        };
        let mut rebuilt = 0usize;
        for (id, path) in files {
            let len = match std::fs::metadata(&path) {
                Ok(m) => m.len(),
                Err(err) => {
                    tracing::warn!(file = %path.display(), %err, "cannot stat a transcript; skipped");
                    continue;
                }
            };
            let entry = match by_id.remove(&id) {
                Some(known) if known.len == len => Some(known),
                Some(known) if known.len < len => catch_up(&path, known, &mut ended),
                _ => {
                    rebuilt += 1;
                    scan_whole(&path, &id, &mut ended)
                }
            };
            let Some(entry) = entry else { continue };
            let transcript = Arc::new(Transcript::new(path.clone(), entry.clone(), None));
            match sessions.get(&entry.key) {
                Some(other) if other.entry().created_at >= entry.created_at => {
                    archive_duplicate(&path, &entry.key);
                }
                Some(other) => {
                    archive_duplicate(&other.path, &entry.key);
                    sessions.insert(entry.key.clone(), transcript);
                }
                None => {
                    sessions.insert(entry.key.clone(), transcript);
                }
            }
        }
        if rebuilt > 0 {
            tracing::info!(rebuilt, "indexed transcripts the index did not know");
        }
        for run in ended {
            runs.insert(run);
        }
        // An entry rebuilt from its transcript holds no usage: then the whole ledger is read.
        let usage_len = usage_len.filter(|_| rebuilt == 0);
        let ledger = Ledger::open(data_dir, usage_len, &sessions).map_err(io_err(format!(
            "cannot open the usage ledger {}",
            data_dir.join(LEDGER_FILE).display()
        )))?;
        Ok(Arc::new(Self {
            log: std::sync::OnceLock::new(),
            dir,
            hub,
            sessions: RwLock::new(sessions),
            structure: tokio::sync::Mutex::new(()),
            dirty: AtomicBool::new(true),
            changed,
            groups: Mutex::new(HashMap::new()),
            health: StorageHealth::default(),
            runs: Mutex::new(runs),
            ledger,
            _lock: lock,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Role, RunOutcome};
    use crate::store::test_support::{names, open};
    use crate::store::transcript::{Header, RunMarker, RunMarkerState};
    use crate::store::{NewMessage, Record};

    fn marker(run: &str, state: RunMarkerState) -> Record {
        let mut m = RunMarker::new(run, state);
        if state == RunMarkerState::Started {
            m.agent = Some("main".into());
            m.idempotency_key = Some(format!("idem-{run}"));
        }
        Record::Run(m)
    }

    #[tokio::test]
    async fn open_runs_survive_a_reopen_with_a_stale_index_and_an_end_closes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let s = store.ensure("k", "main").await.expect("ensure");
        store.flush_index().expect("index");
        let mut user = NewMessage::new(Role::User, "hi");
        user.message.run_id = Some("r1".into());
        store
            .append_records(
                "k",
                None,
                vec![marker("r1", RunMarkerState::Started), Record::Message(user)],
            )
            .await
            .expect("append");
        // A crash: index.json knows the session but not the marker.
        drop(store);
        let store = open(dir.path());
        let runs = store.open_runs();
        assert_eq!(runs.len(), 1, "{runs:?}");
        let (key, sid, run) = &runs[0];
        assert_eq!((key.as_str(), sid.as_str()), ("k", s.session_id.as_str()));
        assert_eq!(run.run_id, "r1");
        assert_eq!(run.state, RunMarkerState::Started);
        assert_eq!(
            (run.attempt, run.idempotency_key.as_deref()),
            (0, Some("idem-r1"))
        );
        let keys = store.idempotency_keys("k", 10).await.expect("keys");
        assert_eq!(keys, [("idem-r1".into(), "r1".into(), None)], "still open");

        let mut resumed = RunMarker::new("r1", RunMarkerState::Resumed);
        resumed.attempt = Some(1);
        store
            .append_records("k", None, vec![Record::Run(resumed)])
            .await
            .expect("resume");
        store.flush_index().expect("index");
        store
            .append_records("k", None, vec![marker("r1", RunMarkerState::Suspended)])
            .await
            .expect("suspend");
        drop(store);
        let store = open(dir.path());
        let runs = store.open_runs();
        assert_eq!(runs.len(), 1);
        assert_eq!(
            (runs[0].2.state, runs[0].2.attempt),
            (RunMarkerState::Suspended, 1)
        );
        assert_eq!(store.finished_run("r1"), None, "open, not finished");

        store
            .append_records("k", None, vec![marker("r1", RunMarkerState::Final)])
            .await
            .expect("end");
        assert!(store.open_runs().is_empty());
        assert!(store.finished_run("r1").is_some());
        // The index still lists the run open; the tail replayed at open ends it.
        drop(store);
        let store = open(dir.path());
        assert!(store.open_runs().is_empty());
        let done = store.finished_run("r1").expect("finished after reopen");
        assert_eq!(
            (done.outcome, done.session_id),
            (RunOutcome::Final, s.session_id)
        );
        assert_eq!(store.finished_run("never"), None);
        let keys = store.idempotency_keys("k", 10).await.expect("keys");
        assert_eq!(
            keys,
            [("idem-r1".into(), "r1".into(), Some(RunOutcome::Final))]
        );
    }

    #[tokio::test]
    async fn a_missing_or_damaged_run_index_is_rebuilt_from_every_transcript() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runs_file = dir.path().join("sessions").join("runs.json");
        let store = open(dir.path());
        store.ensure("k", "main").await.expect("ensure");
        store.ensure("j", "main").await.expect("ensure");
        for (key, run, end) in [
            ("k", "r1", RunMarkerState::Final),
            ("j", "r2", RunMarkerState::Aborted),
        ] {
            store
                .append_records(key, None, vec![marker(run, RunMarkerState::Started)])
                .await
                .expect("start");
            store
                .append_records(key, None, vec![marker(run, end)])
                .await
                .expect("end");
        }
        // r2's transcript is archived by a reset: its runs stay findable.
        store.reset("j").await.expect("reset");
        assert!(store.flush_index().expect("index"));
        assert!(runs_file.exists());
        drop(store);
        std::fs::remove_file(&runs_file).expect("remove");
        let store = open(dir.path());
        let outcome = |id| store.finished_run(id).map(|r| r.outcome);
        assert_eq!(outcome("r1"), Some(RunOutcome::Final));
        assert_eq!(outcome("r2"), Some(RunOutcome::Aborted));
        assert_eq!(
            store.finished_run("r2").map(|r| r.session_key),
            Some("j".into())
        );
        assert!(
            store.flush_index().expect("index"),
            "a rebuilt index is written"
        );
        assert!(runs_file.exists());
        drop(store);
        std::fs::write(&runs_file, b"{damaged").expect("write");
        let store = open(dir.path());
        assert_eq!(
            store.finished_run("r1").map(|r| r.outcome),
            Some(RunOutcome::Final)
        );
        assert_eq!(
            store.finished_run("r2").map(|r| r.outcome),
            Some(RunOutcome::Aborted)
        );
    }

    #[tokio::test]
    async fn an_unfinished_transcript_is_never_a_session_and_is_removed_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sessions = dir.path().join("sessions");
        create_private_dir(&sessions).expect("dir");
        // What a create that died before its rename leaves: complete lines, staging name.
        let header = Header::for_test("abc", "ghost", 1);
        let staged = sessions.join("abc.jsonl.partial");
        std::fs::write(&staged, transcript::header_line(&header).expect("line")).expect("write");
        std::fs::write(sessions.join("def.jsonl.partial"), b"").expect("write");
        let store = open(dir.path());
        assert!(store.get("ghost").is_err());
        assert!(store.is_empty());
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }
}
