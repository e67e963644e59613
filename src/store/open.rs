//! Opening the store: the data directory's lock, the index, and the transcripts it does not
//! know or knows only in part; unfinished transcripts are removed, duplicates set aside.

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
use super::index::read_index;
use super::keys::valid_session_id;
use super::live::Transcript;
use super::recovery::{archive_duplicate, catch_up, scan_whole};
use super::transcript;
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
        let index = read_index(&dir);
        let mut by_id: HashMap<String, Entry> = index
            .into_iter()
            .map(|e| (e.session_id.clone(), e))
            .collect();
        let mut sessions: HashMap<String, Arc<Transcript>> = HashMap::new();
        let read =
            std::fs::read_dir(&dir).map_err(io_err(format!("cannot list {}", dir.display())))?;
        let mut files = Vec::new();
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
                continue;
            };
            if !valid_session_id(id) {
                tracing::warn!(file = %item.path().display(), "ignoring a transcript with an unexpected name");
                continue;
            }
            files.push((id.to_string(), item.path()));
        }
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
                Some(known) if known.len < len => catch_up(&path, known),
                _ => {
                    rebuilt += 1;
                    scan_whole(&path, &id)
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
        Ok(Arc::new(Self {
            dir,
            hub,
            sessions: RwLock::new(sessions),
            structure: tokio::sync::Mutex::new(()),
            dirty: AtomicBool::new(true),
            changed,
            groups: Mutex::new(HashMap::new()),
            health: StorageHealth::default(),
            _lock: lock,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::{names, open};
    use crate::store::transcript::Header;

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
