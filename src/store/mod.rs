//! Sessions and their JSONL transcripts: the [`Store`] facade over the index, the writers and
//! the readers, and the store's own errors.
//!
//! The transcripts are the truth; the index (`sessions/index.json`) is a snapshot that makes
//! startup fast. It records each transcript's committed length, so after a crash only the bytes
//! appended since the snapshot are read. A missing or damaged index is rebuilt from the
//! transcripts. Keys never become paths: files are named by `sessionId`.
//!
//! A new transcript (create, fork, reset) is written in full and flushed under a staging name
//! before it is renamed into place, so a failure leaves no file that could come back as a
//! session; reset swaps names only once the new transcript is durable, and a failed reset or
//! delete leaves the session as it was. I/O errors become [`StoreError`]s in [`health`]; the
//! store never speaks in protocol terms (`api::errors` maps its errors for clients).
//!
//! The files, one job each: [`Store`] itself and its lookups here; `open` (start-up, with
//! `recovery` and `index`), `lifecycle` (create, ensure, reset, delete, fork), `append`
//! (messages, run/tool/approval markers and label/model changes, through one locked write),
//! `history` and `read` (reading back), `compaction` (the context a model call is sent, and
//! compaction lines), `list` and `cursor` (listing), `idempotency` (runs and their outcomes),
//! `trail` (what resuming a run and remembered approvals need), `publish` (events), `ephemeral`
//! (the sessions of one request, never listed nor kept), `usage`
//! (the usage ledger, and each session's usage); below them
//! `entry` (with the open runs), `runs` (the run index), `live`, `keys`, `fs`, [`health`],
//! [`error`] and the file format, [`transcript`] (with `markers`).
//! The files below never name [`Store`], so no two files of the store import each other.

mod adopt;
mod append;
mod compaction;
mod cursor;
mod entry;
mod ephemeral;
pub mod error;
mod fs;
pub mod health;
mod history;
mod idempotency;
mod index;
mod keys;
mod lifecycle;
mod list;
mod live;
mod markers;
mod open;
mod publish;
mod read;
mod recovery;
mod runs;
mod trail;
pub mod transcript;
mod usage;

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::Notify;

pub use append::{NewMessage, Record};
pub use compaction::{NewCompaction, StoredContext};
pub use entry::OpenRun;
pub use error::{KeyArg, MessageArg, OpenError, StoreError};
pub use fs::{create_private_dir, replace_file};
pub use history::History;
pub use list::{Page, list_of};
pub use runs::FinishedRun;
pub use trail::RunTrail;
pub use transcript::{ApprovalLine, RunMarker, RunMarkerState, ToolMarker};
pub use usage::{LEDGER_FILE, LedgerLine, Prices, UsageCall, cost};

use crate::events::EventHub;
use crate::protocol::Session;
use health::StorageHealth;
use live::Transcript;

/// Cluster mode: where each transcript line is written before the node's own file (JetStream),
/// the line's bytes unchanged, one log per `sessionId`, fenced so that two writers can never
/// interleave, and acknowledged before the write returns.
pub trait TranscriptLog: Send + Sync {
    /// Appends `lines` (whole lines, each with its newline) to the log of `session_id`, the
    /// transcript of session `key` (refused unless this process may write that session).
    fn append<'a>(
        &'a self,
        key: &'a str,
        session_id: &'a str,
        lines: Vec<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

    /// The session `key` changed (`None`: deleted): the shared session index learns it.
    fn indexed(&self, key: &str, session: Option<&Session>);
}

/// The session store.
pub struct Store {
    /// Cluster mode: the shared log every line goes to first.
    log: std::sync::OnceLock<Arc<dyn TranscriptLog>>,
    dir: PathBuf,
    hub: Arc<EventHub>,
    sessions: RwLock<HashMap<String, Arc<Transcript>>>,
    /// Serializes create, reset, delete and fork (rare); appends never take it.
    structure: tokio::sync::Mutex<()>,
    dirty: AtomicBool,
    changed: Arc<Notify>,
    groups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    health: StorageHealth,
    /// The most recent finished runs (`runs.json`).
    runs: Mutex<runs::RunIndex>,
    /// The usage ledger (`usage.jsonl`).
    ledger: usage::Ledger,
    _lock: File,
}

impl Store {
    /// Runs file work off the async threads; an I/O failure is recorded in the storage health
    /// under `what` (the session and operation, never a path) and comes back as its error.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(StoreError::internal)?
            .map_err(|e| self.health.error(what, &e))
    }

    /// Cluster mode: from now on every line goes to `log` before the transcript file.
    pub fn set_log(&self, log: Arc<dyn TranscriptLog>) {
        let _ = self.log.set(log);
    }

    /// Writes `lines` of `session_id` to the shared log first (cluster mode; nothing without
    /// one).
    pub(super) async fn log_lines(
        &self,
        key: &str,
        session_id: &str,
        lines: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        match self.log.get() {
            Some(log) if !lines.is_empty() => log
                .append(key, session_id, lines.to_vec())
                .await
                .map_err(StoreError::Log),
            _ => Ok(()),
        }
    }

    /// Whether the store can write: `false` from a write that failed for want of storage (a
    /// full disk, too few descriptors, an I/O error) until a write succeeds again.
    pub fn writable(&self) -> bool {
        !self.health.is_failing()
    }

    /// [`StoreError::Storage`] while the store cannot write; `what` names the call refused
    /// ("cannot start a run in session `main`").
    pub fn check_writable(&self, what: &str) -> Result<(), StoreError> {
        self.health.check(what)
    }

    /// Holds `key`'s message boundary: a run holds it from an assistant message with tool calls
    /// until the last result is written, so an injected message never lands in between.
    pub async fn hold_boundary(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            groups.entry(key.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Sessions in the store.
    pub fn len(&self) -> usize {
        self.sessions.read().map(|s| s.len()).unwrap_or(0)
    }

    /// Whether the store has no session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session `key` ([`StoreError::NoSession`] if there is none).
    pub fn get(&self, key: &str) -> Result<Session, StoreError> {
        self.lookup(key)
            .map(|t| t.entry().session())
            .ok_or_else(|| StoreError::no_session(key))
    }

    /// The runs started and not ended, as `(session key, session id, run)`: after a crash or a
    /// suspend, the runs to resume (or to end).
    pub fn open_runs(&self) -> Vec<(String, String, OpenRun)> {
        let Ok(sessions) = self.sessions.read() else {
            return Vec::new();
        };
        let mut open = Vec::new();
        for t in sessions.values() {
            let entry = t.entry();
            for run in entry.open_runs {
                open.push((entry.key.clone(), entry.session_id.clone(), run));
            }
        }
        open.sort_by(|a, b| (a.2.started_at, &a.2.run_id).cmp(&(b.2.started_at, &b.2.run_id)));
        open
    }

    /// How the run `run_id` ended, if it is among the most recent finished runs kept (a run
    /// still open, or never seen, is `None`).
    pub fn finished_run(&self, run_id: &str) -> Option<FinishedRun> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
    }

    /// Adds runs that ended to the run index (before their entry moves on: see `flush_index`).
    fn record_finished(&self, ended: Vec<FinishedRun>) {
        if ended.is_empty() {
            return;
        }
        let mut runs = self.runs.lock().unwrap_or_else(|p| p.into_inner());
        for run in ended {
            runs.insert(run);
        }
    }

    /// The live transcript of `key`.
    fn lookup(&self, key: &str) -> Option<Arc<Transcript>> {
        self.sessions.read().ok().and_then(|s| s.get(key).cloned())
    }

    /// The index is behind the transcripts: the index loop writes it next round.
    fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }
}

/// Helpers the store's unit tests share.
#[cfg(test)]
mod test_support {
    use std::path::Path;
    use std::sync::Arc;

    use tokio::sync::Notify;

    use super::Store;
    use crate::events::EventHub;

    /// A store in `dir` with a small hub.
    pub(super) fn open(dir: &Path) -> Arc<Store> {
        let hub = EventHub::new(crate::events::HubLimits {
            replay_capacity: 16,
            replay_max_bytes: 1 << 20,
            subscriber_queue: 16,
            subscriber_queue_bytes: 1 << 20,
        });
        Store::open(dir, hub, Arc::new(Notify::new())).expect("store opens")
    }

    /// The files of `dir`'s sessions directory but the index, sorted.
    pub(super) fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("sessions"))
            .expect("sessions dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("index.json") && !n.starts_with("runs.json"))
            .collect();
        names.sort();
        names
    }
}
