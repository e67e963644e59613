//! Sessions and their JSONL transcripts: the index, the writers, the readers.
//!
//! The transcripts are the truth; the index (`sessions/index.json`) is a snapshot that makes
//! startup fast. It records each transcript's committed length, so after a crash only the bytes
//! appended since the snapshot are read. A missing or damaged index is rebuilt from the
//! transcripts. Keys never become paths: files are named by `sessionId`.
//!
//! A new transcript (create, fork, reset) is written in full and flushed under a staging name
//! before it is renamed into place, so a failure leaves no file that could come back as a
//! session; reset swaps names only once the new transcript is durable, and a failed reset or
//! delete leaves the session as it was. Storage failures are mapped in [`health`].

pub mod health;
pub mod transcript;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::error::Error;
use crate::events::EventHub;
use crate::protocol::{
    Patch, Role, Session, SessionChangeReason, SessionsChangedEvent, TranscriptMessage,
    validate_session_key,
};
use crate::util::now_ms;
use health::StorageHealth;
use transcript::{DirSync, ForkedFrom, Header, Line, Meta, Staged, Writer};

/// How long the index may lag behind the transcripts (it is only a startup accelerator).
const INDEX_INTERVAL: Duration = Duration::from_secs(2);
/// Characters of the last message kept as its preview.
const PREVIEW_CHARS: usize = 120;

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the data directory.
    #[error(
        "data directory {dir} is in use by another clawgate{pid}; stop it, or give this one its own --data-dir"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// ` (pid N)` when known.
        pid: String,
    },
    /// I/O failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> OpenError {
    let context = context.into();
    move |source| OpenError::Io { context, source }
}

/// What the store knows of one transcript without reading it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    key: String,
    session_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model: Option<String>,
    created_at: u64,
    updated_at: u64,
    message_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_message_preview: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_message_id: Option<String>,
    /// Committed bytes.
    len: u64,
    /// Lines in those bytes.
    lines: u64,
}

impl Entry {
    fn session(&self) -> Session {
        Session {
            key: self.key.clone(),
            session_id: self.session_id.clone(),
            label: self.label.clone(),
            model: self.model.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            message_count: self.message_count,
            last_message_preview: self.last_message_preview.clone(),
        }
    }

    /// Folds one line into the entry.
    fn apply(&mut self, line: &Line) {
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
            _ => {}
        }
    }
}

fn apply_patch(slot: &mut Option<String>, patch: &Patch<String>) {
    match patch {
        Patch::Keep => {}
        Patch::Clear => *slot = None,
        Patch::Set(v) => *slot = Some(v.clone()),
    }
}

fn preview(content: &str) -> Option<String> {
    let flat: String = content.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.is_empty() {
        return None;
    }
    Some(flat.chars().take(PREVIEW_CHARS).collect())
}

#[derive(Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    sessions: Vec<Entry>,
}

/// One live transcript.
struct Transcript {
    /// The session key (fixed for the life of a transcript).
    key: String,
    /// The key in lower case, for search.
    key_lower: String,
    /// `entry.updated_at`, readable without the lock (for listing).
    updated_at: std::sync::atomic::AtomicU64,
    path: PathBuf,
    entry: Mutex<Entry>,
    writer: tokio::sync::Mutex<Option<Writer>>,
    /// Set once the transcript was archived (reset, delete); writers must look the key up again.
    retired: AtomicBool,
}

impl Transcript {
    fn entry(&self) -> Entry {
        self.entry
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn new(path: PathBuf, entry: Entry, writer: Option<Writer>) -> Self {
        Self {
            key: entry.key.clone(),
            key_lower: entry.key.to_lowercase(),
            updated_at: std::sync::atomic::AtomicU64::new(entry.updated_at),
            path,
            entry: Mutex::new(entry),
            writer: tokio::sync::Mutex::new(writer),
            retired: AtomicBool::new(false),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Entry)) {
        let mut guard = self.entry.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard);
        self.updated_at.store(guard.updated_at, Ordering::Release);
    }
}

/// A message to append; the store assigns `id`, `parentId` and `ts`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The message with any `id`/`parent_id`/`ts` (they are replaced).
    pub message: TranscriptMessage,
}

impl NewMessage {
    /// A message of `role` with `content` and nothing else.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            message: TranscriptMessage {
                id: String::new(),
                parent_id: None,
                ts: 0,
                role,
                content: content.into(),
                tool_calls: None,
                tool_call_id: None,
                is_error: None,
                run_id: None,
                idempotency_key: None,
                model: None,
                usage: None,
                stop_reason: None,
                aborted: None,
                error: None,
                label: None,
            },
        }
    }
}

/// A page of sessions.
#[derive(Debug, Clone)]
pub struct Page {
    /// The sessions of this page.
    pub sessions: Vec<Session>,
    /// The cursor of the next page.
    pub next_cursor: Option<String>,
    /// Matches in all.
    pub total: u64,
}

/// Messages read back from a transcript.
#[derive(Debug, Clone)]
pub struct History {
    /// The transcript's id.
    pub session_id: String,
    /// Oldest first.
    pub messages: Vec<TranscriptMessage>,
    /// Older messages exist.
    pub has_more: bool,
}

/// The session store.
pub struct Store {
    dir: PathBuf,
    hub: Arc<EventHub>,
    sessions: RwLock<HashMap<String, Arc<Transcript>>>,
    /// Serializes create, reset, delete and fork (rare); appends never take it.
    structure: tokio::sync::Mutex<()>,
    dirty: AtomicBool,
    changed: Arc<Notify>,
    groups: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    health: StorageHealth,
    _lock: File,
}

/// A transcript about to be written: its file, first lines and entry.
struct Fresh {
    path: PathBuf,
    header: Header,
    lines: Vec<Vec<u8>>,
    entry: Entry,
}

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

    /// Whether the store can write: `false` from a write that failed for want of storage (a
    /// full disk, too few descriptors, an I/O error) until a write succeeds again.
    pub fn writable(&self) -> bool {
        !self.health.is_failing()
    }

    /// `-32025` (storage) while the store cannot write; `what` names the call refused
    /// ("cannot start a run in session `main`").
    pub fn check_writable(&self, what: &str) -> Result<(), Error> {
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

    fn lookup(&self, key: &str) -> Option<Arc<Transcript>> {
        self.sessions.read().ok().and_then(|s| s.get(key).cloned())
    }

    fn not_found(key: &str) -> Error {
        Error::NotFound(format!("no session with key `{key}`"))
    }

    fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    fn publish(&self, key: &str, reason: SessionChangeReason, session: Option<Session>) {
        self.hub.emit(
            Some(key),
            &SessionsChangedEvent {
                session_key: key.to_string(),
                reason,
                session,
            },
        );
    }

    /// Publishes `sessions.changed {updated}` with the session as it is now.
    pub fn publish_updated(&self, key: &str) {
        if let Some(t) = self.lookup(key) {
            self.publish(key, SessionChangeReason::Updated, Some(t.entry().session()));
        }
    }

    /// The session `key`.
    pub fn get(&self, key: &str) -> Result<Session, Error> {
        self.lookup(key)
            .map(|t| t.entry().session())
            .ok_or_else(|| Self::not_found(key))
    }

    /// Sessions matching `search` (case-insensitive substring of key or label), most recently
    /// updated first, `limit` after `cursor`.
    pub fn list(
        &self,
        limit: usize,
        cursor: Option<&str>,
        search: Option<&str>,
    ) -> Result<Page, Error> {
        let after = match cursor {
            None => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                Error::invalid_params("cursor", "expected a nextCursor returned by sessions.list")
            })?),
        };
        let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let sessions = self
            .sessions
            .read()
            .map_err(|_| Error::internal("session map poisoned"))?;
        // Sorting reads only the key and an atomic; entries are locked for the page alone.
        let mut rows: Vec<(u64, &str, &Arc<Transcript>)> = sessions
            .values()
            .filter(|t| match &needle {
                None => true,
                Some(n) => {
                    t.key_lower.contains(n.as_str())
                        || t.entry
                            .lock()
                            .map(|e| {
                                e.label
                                    .as_ref()
                                    .is_some_and(|l| l.to_lowercase().contains(n.as_str()))
                            })
                            .unwrap_or(false)
                }
            })
            .map(|t| (t.updated_at.load(Ordering::Acquire), t.key.as_str(), t))
            .collect();
        let total = rows.len() as u64;
        rows.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let start = match &after {
            None => 0,
            Some((ts, key)) => {
                rows.partition_point(|(t, k, _)| (*t > *ts) || (*t == *ts && *k <= key.as_str()))
            }
        };
        let page: Vec<Session> = rows
            .iter()
            .skip(start)
            .take(limit)
            .map(|(_, _, t)| t.entry().session())
            .collect();
        let next_cursor = if start + page.len() < rows.len() {
            page.last().map(|s| encode_cursor(s.updated_at, &s.key))
        } else {
            None
        };
        Ok(Page {
            sessions: page,
            next_cursor,
            total,
        })
    }

    /// Creates a session; `-32023` if the key exists.
    pub async fn create(
        &self,
        key: Option<String>,
        label: Option<String>,
        model: Option<String>,
    ) -> Result<Session, Error> {
        let key = match key {
            Some(k) => {
                validate_session_key(&k).map_err(|m| Error::invalid_params("key", m))?;
                k
            }
            None => format!("s-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        };
        let _guard = self.structure.lock().await;
        if self.lookup(&key).is_some() {
            return Err(Error::Conflict(format!(
                "a session with key `{key}` already exists"
            )));
        }
        let what = format!("cannot create session `{key}`");
        let session = self
            .create_locked(&what, &key, label, model, None, Vec::new())
            .await?;
        self.publish(&key, SessionChangeReason::Created, Some(session.clone()));
        Ok(session)
    }

    /// The session `key`, created if missing (publishing `created`).
    pub async fn ensure(&self, key: &str) -> Result<Session, Error> {
        if let Some(t) = self.lookup(key) {
            return Ok(t.entry().session());
        }
        validate_session_key(key).map_err(|m| Error::invalid_params("sessionKey", m))?;
        let _guard = self.structure.lock().await;
        if let Some(t) = self.lookup(key) {
            return Ok(t.entry().session());
        }
        let what = format!("cannot create session `{key}`");
        let session = self
            .create_locked(&what, key, None, None, None, Vec::new())
            .await?;
        self.publish(key, SessionChangeReason::Created, Some(session.clone()));
        Ok(session)
    }

    /// Writes a new transcript and registers it under `key` (the structure lock is held); a
    /// failure (`what` says which call failed) leaves no file behind.
    async fn create_locked(
        &self,
        what: &str,
        key: &str,
        label: Option<String>,
        model: Option<String>,
        forked_from: Option<ForkedFrom>,
        messages: Vec<TranscriptMessage>,
    ) -> Result<Session, Error> {
        let fresh = self.fresh(key, label, model, forked_from, messages)?;
        let writer = tokio::task::spawn_blocking({
            let (path, header, lines) = (fresh.path.clone(), fresh.header, fresh.lines);
            move || Writer::create(&path, &header, &lines)
        })
        .await
        .map_err(Error::internal)?
        .map_err(|e| self.health.error(what, &e))?;
        self.health.succeeded();
        Ok(self.install(key, fresh.path, fresh.entry, writer))
    }

    /// Registers the transcript `path`, just written by `writer`, under `key`.
    fn install(&self, key: &str, path: PathBuf, mut entry: Entry, writer: Writer) -> Session {
        entry.len = writer.len();
        entry.lines = writer.lines();
        let session = entry.session();
        let transcript = Arc::new(Transcript::new(path, entry, Some(writer)));
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.insert(key.to_string(), transcript);
        }
        self.mark_dirty();
        self.changed.notify_one();
        session
    }

    /// The header, lines and entry of a new transcript for `key` (nothing is written yet).
    fn fresh(
        &self,
        key: &str,
        label: Option<String>,
        model: Option<String>,
        forked_from: Option<ForkedFrom>,
        messages: Vec<TranscriptMessage>,
    ) -> Result<Fresh, Error> {
        let session_id = uuid::Uuid::new_v4().simple().to_string();
        let created_at = now_ms();
        let header = Header {
            version: 1,
            id: session_id.clone(),
            key: key.to_string(),
            created_at,
            forked_from,
        };
        let mut entry = Entry {
            key: key.to_string(),
            session_id: session_id.clone(),
            label: None,
            model: None,
            created_at,
            updated_at: created_at,
            message_count: 0,
            last_message_preview: None,
            last_message_id: None,
            len: 0,
            lines: 0,
        };
        let mut lines = Vec::new();
        for m in messages {
            lines.push(transcript::message_line(&m).map_err(Error::internal)?);
            entry.apply(&Line::Message(Box::new(m)));
        }
        if label.is_some() || model.is_some() {
            let meta = Meta {
                ts: created_at,
                label: label.map_or(Patch::Keep, Patch::Set),
                model: model.map_or(Patch::Keep, Patch::Set),
            };
            lines.push(transcript::meta_line(&meta).map_err(Error::internal)?);
            entry.apply(&Line::Meta(meta));
        }
        entry.updated_at = entry.updated_at.max(created_at);
        Ok(Fresh {
            path: self.dir.join(format!("{session_id}.jsonl")),
            header,
            lines,
            entry,
        })
    }

    /// Appends messages to `key`'s transcript (one write, then fdatasync); returns them with
    /// their ids, parents and timestamps. The session must exist.
    pub async fn append(
        &self,
        key: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<TranscriptMessage>, Error> {
        self.append_to(key, None, messages).await
    }

    /// Like [`append`](Self::append), but only to the transcript `session_id` (a run never
    /// writes into the transcript that replaced its own after a reset).
    pub async fn append_to(
        &self,
        key: &str,
        session_id: Option<&str>,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<TranscriptMessage>, Error> {
        for _ in 0..100 {
            let t = self.lookup(key).ok_or_else(|| Self::not_found(key))?;
            if let Some(expected) = session_id
                && t.entry().session_id != expected
            {
                return Err(Error::Conflict(format!(
                    "session `{key}` was reset: transcript {expected} is archived"
                )));
            }
            let mut writer = t.writer.lock().await;
            if t.retired.load(Ordering::Acquire) {
                // Archived while we waited: look the key up again.
                drop(writer);
                tokio::task::yield_now().await;
                continue;
            }
            if writer.is_none() {
                let lines = t.entry().lines;
                let path = t.path.clone();
                let opened = tokio::task::spawn_blocking(move || Writer::open(&path, lines))
                    .await
                    .map_err(Error::internal)?
                    .map_err(|e| {
                        self.health
                            .error(&format!("cannot append to session `{key}`"), &e)
                    })?;
                *writer = Some(opened);
            }
            let Some(w) = writer.as_mut() else {
                return Err(Error::internal("transcript writer missing"));
            };
            let mut parent = t.entry().last_message_id;
            let mut written = Vec::with_capacity(messages.len());
            let mut buf = Vec::new();
            let ts = now_ms();
            for new in &messages {
                let mut m = new.message.clone();
                m.id = uuid::Uuid::new_v4().simple().to_string();
                m.parent_id = parent.take();
                m.ts = ts;
                parent = Some(m.id.clone());
                buf.extend(transcript::message_line(&m).map_err(Error::internal)?);
                written.push(m);
            }
            let count = written.len() as u64;
            let len = self
                .append_lines(
                    &t,
                    w,
                    buf,
                    count,
                    &format!("cannot append to session `{key}`"),
                )
                .await?;
            let lines = w.lines();
            t.update(|e| {
                for m in &written {
                    e.apply(&Line::Message(Box::new(m.clone())));
                }
                e.len = len;
                e.lines = lines;
            });
            self.mark_dirty();
            return Ok(written);
        }
        Err(Error::Unavailable {
            message: format!("session `{key}` keeps changing under this write; try again"),
            retryable: true,
        })
    }

    /// Appends whole lines through `w`; on failure the index takes the file's real length (a
    /// failed write may have left part of a line) and a storage failure is recorded as such
    /// (`what` names the operation); on success the store is writable again.
    async fn append_lines(
        &self,
        t: &Transcript,
        w: &mut Writer,
        lines: Vec<u8>,
        count: u64,
        what: &str,
    ) -> Result<u64, Error> {
        match w.append(lines, count).await {
            Ok(len) => {
                self.health.succeeded();
                Ok(len)
            }
            Err(e) => {
                let (len, lines) = (w.len(), w.lines());
                t.update(|entry| {
                    entry.len = len;
                    entry.lines = lines;
                });
                Err(self.health.error(what, &e))
            }
        }
    }

    /// Changes label and/or model (a `meta` line); publishes `updated`.
    pub async fn patch(
        &self,
        key: &str,
        label: Patch<String>,
        model: Patch<String>,
    ) -> Result<Session, Error> {
        let t = self.lookup(key).ok_or_else(|| Self::not_found(key))?;
        let meta = Meta {
            ts: now_ms(),
            label,
            model,
        };
        let line = transcript::meta_line(&meta).map_err(Error::internal)?;
        let mut writer = t.writer.lock().await;
        if t.retired.load(Ordering::Acquire) {
            return Err(Self::not_found(key));
        }
        if writer.is_none() {
            let path = t.path.clone();
            let lines = t.entry().lines;
            *writer = Some(
                tokio::task::spawn_blocking(move || Writer::open(&path, lines))
                    .await
                    .map_err(Error::internal)?
                    .map_err(|e| {
                        self.health
                            .error(&format!("cannot update session `{key}`"), &e)
                    })?,
            );
        }
        let Some(w) = writer.as_mut() else {
            return Err(Error::internal("transcript writer missing"));
        };
        let len = self
            .append_lines(&t, w, line, 1, &format!("cannot update session `{key}`"))
            .await?;
        let lines = w.lines();
        t.update(|e| {
            e.apply(&Line::Meta(meta));
            e.len = len;
            e.lines = lines;
        });
        drop(writer);
        self.mark_dirty();
        let session = t.entry().session();
        self.publish(key, SessionChangeReason::Updated, Some(session.clone()));
        Ok(session)
    }

    /// Starts a new transcript for `key`, archiving the old one as
    /// `<sessionId>.jsonl.reset.<ts>`; label and model are kept. The new transcript is written in
    /// full and flushed before any name changes; a failed reset leaves the session as it was.
    pub async fn reset(&self, key: &str) -> Result<Session, Error> {
        let _guard = self.structure.lock().await;
        let old = self.lookup(key).ok_or_else(|| Self::not_found(key))?;
        let entry = old.entry();
        let fresh = self.fresh(key, entry.label, entry.model, None, Vec::new())?;
        // Appends to the old transcript wait here, then find it retired and look the key up anew.
        let mut old_writer = old.writer.lock().await;
        let archive = self
            .dir
            .join(format!("{}.jsonl.reset.{}", entry.session_id, now_ms()));
        let swapped = tokio::task::spawn_blocking({
            let (dir, from) = (self.dir.clone(), old.path.clone());
            let (path, header, lines) = (fresh.path.clone(), fresh.header, fresh.lines);
            move || swap_in(&dir, &from, &archive, &path, &header, &lines)
        })
        .await
        .map_err(Error::internal)?
        .map_err(|e| {
            self.health
                .error(&format!("cannot reset session `{key}`"), &e)
        })?;
        old.retired.store(true, Ordering::Release);
        *old_writer = None;
        drop(old_writer);
        self.health.succeeded();
        let session = self.install(key, fresh.path, fresh.entry, swapped);
        self.publish(key, SessionChangeReason::Reset, Some(session.clone()));
        Ok(session)
    }

    /// Deletes `key` (its transcript is archived as `<sessionId>.jsonl.deleted.<ts>`, never
    /// removed); `main` cannot be deleted. A failed delete leaves the session as it was.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        if key == "main" {
            return Err(Error::Conflict(
                "the session `main` cannot be deleted; reset it instead".into(),
            ));
        }
        let _guard = self.structure.lock().await;
        let t = self.lookup(key).ok_or_else(|| Self::not_found(key))?;
        let mut writer = t.writer.lock().await;
        let target = self.dir.join(format!(
            "{}.jsonl.deleted.{}",
            t.entry().session_id,
            now_ms()
        ));
        tokio::task::spawn_blocking({
            let (dir, from) = (self.dir.clone(), t.path.clone());
            move || rename_durably(&dir, &from, &target)
        })
        .await
        .map_err(Error::internal)?
        .map_err(|e| {
            self.health
                .error(&format!("cannot delete session `{key}`"), &e)
        })?;
        t.retired.store(true, Ordering::Release);
        *writer = None;
        drop(writer);
        self.health.succeeded();
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.remove(key);
        }
        self.mark_dirty();
        self.changed.notify_one();
        self.publish(key, SessionChangeReason::Deleted, None);
        Ok(())
    }

    /// Copies `key`'s messages up to and including `at_message_id` (default: all) into a new
    /// session.
    pub async fn fork(
        &self,
        key: &str,
        new_key: Option<String>,
        at_message_id: Option<String>,
    ) -> Result<Session, Error> {
        let new_key = match new_key {
            Some(k) => {
                validate_session_key(&k).map_err(|m| Error::invalid_params("newKey", m))?;
                k
            }
            None => format!(
                "{}-fork-{}",
                truncate_key(key, 100),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
        };
        let _guard = self.structure.lock().await;
        let t = self.lookup(key).ok_or_else(|| Self::not_found(key))?;
        if self.lookup(&new_key).is_some() {
            return Err(Error::Conflict(format!(
                "a session with key `{new_key}` already exists"
            )));
        }
        let entry = t.entry();
        let path = t.path.clone();
        let end = entry.len;
        let all = tokio::task::spawn_blocking(move || read_messages(&path, end))
            .await
            .map_err(Error::internal)?
            .map_err(|e| {
                self.health
                    .error(&format!("cannot read session `{key}`"), &e)
            })?;
        let messages: Vec<TranscriptMessage> = match &at_message_id {
            None => all,
            Some(id) => {
                let Some(pos) = all.iter().position(|m| &m.id == id) else {
                    return Err(Error::NotFound(format!(
                        "no message `{id}` in session `{key}`"
                    )));
                };
                all.into_iter().take(pos + 1).collect()
            }
        };
        let forked_from = messages.last().map(|m| ForkedFrom {
            session_id: entry.session_id.clone(),
            message_id: m.id.clone(),
        });
        let what = format!("cannot fork session `{key}` into `{new_key}`");
        let session = self
            .create_locked(
                &what,
                &new_key,
                entry.label.clone(),
                entry.model.clone(),
                forked_from,
                messages,
            )
            .await?;
        self.publish(&new_key, SessionChangeReason::Forked, Some(session.clone()));
        Ok(session)
    }

    /// The newest `limit` messages before `before_id` (or the end), oldest first, read backwards
    /// from the end of the file; stops early (with `has_more`) past `max_bytes`.
    pub async fn history(
        &self,
        key: &str,
        limit: usize,
        before_id: Option<String>,
        max_bytes: usize,
    ) -> Result<History, Error> {
        let t = self.lookup(key).ok_or_else(|| Self::not_found(key))?;
        let entry = t.entry();
        let path = t.path.clone();
        let end = entry.len;
        let (messages, has_more, found) = tokio::task::spawn_blocking(move || {
            read_history(&path, end, limit, before_id.as_deref(), max_bytes)
        })
        .await
        .map_err(Error::internal)?
        .map_err(|e| {
            self.health
                .error(&format!("cannot read session `{key}`"), &e)
        })?;
        if !found {
            return Err(Error::NotFound(format!(
                "no message with that beforeId in session `{key}`"
            )));
        }
        Ok(History {
            session_id: entry.session_id,
            messages,
            has_more,
        })
    }

    /// The idempotency keys of the last `n` runs of `key`'s transcript, newest first, with each
    /// run's outcome as the transcript tells it (a run without an ending was interrupted).
    pub async fn idempotency_keys(
        &self,
        key: &str,
        n: usize,
    ) -> Result<Vec<(String, String, crate::protocol::RunOutcome)>, Error> {
        use crate::protocol::RunOutcome;
        let t = self.lookup(key).ok_or_else(|| Self::not_found(key))?;
        let path = t.path.clone();
        let end = t.entry().len;
        tokio::task::spawn_blocking(move || {
            let mut outcomes: HashMap<String, RunOutcome> = HashMap::new();
            let mut found = Vec::new();
            transcript::scan_backward(&path, end, |_, line| {
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
                outcomes.entry(run).or_insert_with(|| {
                    if m.aborted == Some(true)
                        || (m.role == Role::Tool && m.content.starts_with("aborted:"))
                    {
                        RunOutcome::Aborted
                    } else if m.error.is_some() {
                        RunOutcome::Error
                    } else if m.role == Role::Assistant && m.tool_calls.is_none() {
                        RunOutcome::Final
                    } else {
                        RunOutcome::Aborted
                    }
                });
                true
            })
            .map(|()| found)
        })
        .await
        .map_err(Error::internal)?
        .map_err(|e| {
            self.health
                .error(&format!("cannot read session `{key}`"), &e)
        })
    }

    /// The `n` most recent messages of `key`, oldest first (the agent's context).
    pub async fn recent(&self, key: &str, n: usize) -> Result<Vec<TranscriptMessage>, Error> {
        Ok(self.history(key, n, None, usize::MAX).await?.messages)
    }

    /// Writes the index if it changed since the last write; `Ok(true)` when it wrote.
    pub fn flush_index(&self) -> io::Result<bool> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let sessions: Vec<Entry> = match self.sessions.read() {
            Ok(s) => s.values().map(|t| t.entry()).collect(),
            Err(_) => return Ok(false),
        };
        let result = write_index(
            &self.dir,
            &IndexFile {
                version: 1,
                sessions,
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

fn truncate_key(key: &str, max: usize) -> &str {
    match key.char_indices().nth(max) {
        Some((i, _)) => &key[..i],
        None => key,
    }
}

/// Every message of a transcript, oldest first.
fn read_messages(path: &Path, end: u64) -> io::Result<Vec<TranscriptMessage>> {
    let mut out = Vec::new();
    transcript::scan_backward(path, end, |_, line| {
        if let Line::Message(m) = transcript::parse_line(line) {
            out.push(*m);
        }
        true
    })?;
    out.reverse();
    Ok(out)
}

/// (messages oldest first, has_more, before_id found).
fn read_history(
    path: &Path,
    end: u64,
    limit: usize,
    before_id: Option<&str>,
    max_bytes: usize,
) -> io::Result<(Vec<TranscriptMessage>, bool, bool)> {
    let mut found = before_id.is_none();
    let mut out: Vec<TranscriptMessage> = Vec::new();
    let mut bytes = 0usize;
    let mut has_more = false;
    transcript::scan_backward(path, end, |_, line| {
        let Line::Message(m) = transcript::parse_line(line) else {
            return true;
        };
        if !found {
            found = before_id == Some(m.id.as_str());
            return true;
        }
        // At least one message per page, so paging with beforeId always moves on.
        if out.len() >= limit || (!out.is_empty() && bytes + line.len() > max_bytes) {
            has_more = true;
            return false;
        }
        bytes += line.len();
        out.push(*m);
        true
    })?;
    out.reverse();
    Ok((out, has_more, found))
}

/// Reads a whole transcript into an entry; `None` (with a warning) when it is unusable.
fn scan_whole(path: &Path, id: &str) -> Option<Entry> {
    let mut entry: Option<Entry> = None;
    let mut pending: Vec<Line> = Vec::new();
    let result = transcript::scan_forward(path, 0, 1, |l| match l.line {
        Line::Header(h) if l.number == 1 => {
            if h.id != id {
                tracing::warn!(file = %path.display(), header_id = %h.id, "header id differs from the file name; the file name wins");
            }
            let key = if validate_session_key(&h.key).is_ok() {
                h.key
            } else {
                tracing::warn!(file = %path.display(), "header has an invalid key");
                recovered_key(id)
            };
            entry = Some(new_entry(key, id, h.created_at));
        }
        Line::Bad(reason) => {
            tracing::warn!(file = %path.display(), line = l.number, %reason, "skipping an unparsable line");
        }
        Line::Unknown(kind) => {
            tracing::warn!(file = %path.display(), line = l.number, kind, "skipping a line of unknown type");
        }
        other => {
            if l.number == 1 || matches!(other, Line::Header(_)) {
                tracing::warn!(file = %path.display(), line = l.number, "expected the session header here");
            }
            if !matches!(other, Line::Header(_)) {
                match entry.as_mut() {
                    Some(e) => e.apply(&other),
                    None => pending.push(other),
                }
            }
        }
    });
    let (len, lines) = match result {
        Ok(r) => r,
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "cannot read a transcript; skipped");
            return None;
        }
    };
    let mut entry = entry.unwrap_or_else(|| {
        tracing::warn!(file = %path.display(), "transcript has no header; kept under a recovered key");
        let created = pending.iter().find_map(|l| match l {
            Line::Message(m) => Some(m.ts),
            _ => None,
        });
        new_entry(recovered_key(id), id, created.unwrap_or_else(now_ms))
    });
    for line in &pending {
        entry.apply(line);
    }
    // A torn tail is excluded from `len` only for reading; the writer appends after it.
    entry.len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(len);
    entry.lines = lines;
    Some(entry)
}

/// Brings an entry up to date with bytes appended after `known.len`.
fn catch_up(path: &Path, known: Entry) -> Option<Entry> {
    let mut entry = known;
    let start = entry.len;
    let first = entry.lines + 1;
    let result = transcript::scan_forward(path, start, first, |l| match &l.line {
        Line::Bad(reason) => {
            tracing::warn!(file = %path.display(), line = l.number, %reason, "skipping an unparsable line");
        }
        Line::Unknown(kind) => {
            tracing::warn!(file = %path.display(), line = l.number, kind, "skipping a line of unknown type");
        }
        line => entry.apply(line),
    });
    match result {
        Ok((_, lines)) => {
            entry.lines += lines;
            entry.len = std::fs::metadata(path)
                .map(|m| m.len())
                .unwrap_or(entry.len);
            Some(entry)
        }
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "cannot read a transcript; skipped");
            None
        }
    }
}

fn new_entry(key: String, id: &str, created_at: u64) -> Entry {
    Entry {
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
    }
}

fn recovered_key(id: &str) -> String {
    format!("recovered:{id}")
}

fn valid_session_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Makes the complete transcript `path` (`header`, `lines`) the session's in place of `from`,
/// which is renamed to `archive`; every step is flushed. On failure the names are as before
/// and nothing new is left behind. The directory is opened first, so that running out of
/// descriptors fails before any name changes.
fn swap_in(
    dir: &Path,
    from: &Path,
    archive: &Path,
    path: &Path,
    header: &Header,
    lines: &[Vec<u8>],
) -> io::Result<Writer> {
    let dir = DirSync::open(dir)?;
    let new = Staged::write(path, header, lines)?.commit(path)?;
    // Two transcripts claim the key now; were the process to die here, the newer (this one)
    // would win at the next start, as if the reset had completed.
    let undo = |new: Writer| {
        drop(new);
        let _ = std::fs::remove_file(path);
    };
    if let Err(err) = std::fs::rename(from, archive) {
        undo(new);
        let _ = dir.sync();
        return Err(err);
    }
    if let Err(err) = dir.sync() {
        undo(new);
        if let Err(back) = std::fs::rename(archive, from) {
            tracing::error!(file = %archive.display(), err = %back, "cannot restore a transcript after a failed reset");
        }
        let _ = dir.sync();
        return Err(err);
    }
    Ok(new)
}

/// Renames `from` to `to` in `dir` and flushes the directory; on failure the name is as before.
fn rename_durably(dir: &Path, from: &Path, to: &Path) -> io::Result<()> {
    let dir = DirSync::open(dir)?;
    std::fs::rename(from, to)?;
    if let Err(err) = dir.sync() {
        if let Err(back) = std::fs::rename(to, from) {
            tracing::error!(file = %to.display(), err = %back, "cannot restore a transcript after a failed rename");
        }
        let _ = dir.sync();
        return Err(err);
    }
    Ok(())
}

/// Writes, flushes and removes a small file in `dir`: whether the store can write again.
fn probe_write(dir: &Path) -> io::Result<()> {
    use std::io::Write;
    let path = dir.join(".write-probe");
    let written = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(b"ok\n")?;
        f.sync_all()
    });
    let removed = std::fs::remove_file(&path);
    written?;
    removed
}

fn archive_duplicate(path: &Path, key: &str) {
    let target = PathBuf::from(format!("{}.duplicate.{}", path.display(), now_ms()));
    tracing::warn!(file = %path.display(), key, "two transcripts claim one key; the older is archived");
    if let Err(err) = std::fs::rename(path, &target) {
        tracing::warn!(file = %path.display(), %err, "cannot archive a duplicate transcript");
    }
}

fn read_index(dir: &Path) -> Vec<Entry> {
    let path = dir.join("index.json");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "cannot read the session index; rebuilding it");
            return Vec::new();
        }
    };
    match serde_json::from_slice::<IndexFile>(&bytes) {
        Ok(index) if index.version == 1 => index.sessions,
        Ok(_) => {
            tracing::warn!(file = %path.display(), "unknown index version; rebuilding it");
            Vec::new()
        }
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "damaged session index; rebuilding it");
            Vec::new()
        }
    }
}

fn write_index(dir: &Path, index: &IndexFile) -> io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("index.json.tmp-{}", std::process::id()));
    let bytes = serde_json::to_vec(index).map_err(io::Error::other)?;
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = options.open(&tmp).and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        });
        if let Err(err) = written {
            // A partial copy on a full disk would only hold space.
            let _ = std::fs::remove_file(&tmp);
            return Err(err);
        }
    }
    std::fs::rename(&tmp, dir.join("index.json"))?;
    transcript::sync_dir(dir)
}

/// Creates `dir` (and its parents) readable by its owner only.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Takes the data directory's advisory lock (released by the OS when the process dies).
fn lock_data_dir(data_dir: &Path) -> Result<File, OpenError> {
    use std::io::{Read, Seek, Write};
    create_private_dir(data_dir)
        .map_err(io_err(format!("cannot create {}", data_dir.display())))?;
    let path = data_dir.join("clawgate.lock");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(format!("cannot open {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            return Err(OpenError::Locked {
                dir: data_dir.to_path_buf(),
                pid: if pid.is_empty() {
                    String::new()
                } else {
                    format!(" (pid {pid})")
                },
            });
        }
        Err(std::fs::TryLockError::Error(err)) => {
            return Err(OpenError::Io {
                context: format!("cannot lock {}", path.display()),
                source: err,
            });
        }
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    let _ = file.sync_all();
    Ok(file)
}

fn encode_cursor(updated_at: u64, key: &str) -> String {
    hex::encode(format!("{updated_at}:{key}"))
}

fn decode_cursor(cursor: &str) -> Option<(u64, String)> {
    let bytes = hex::decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (ts, key) = text.split_once(':')?;
    let ts = ts.parse().ok()?;
    validate_session_key(key).ok()?;
    Some((ts, key.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> Arc<Store> {
        let hub = EventHub::new(crate::events::HubLimits {
            replay_capacity: 16,
            replay_max_bytes: 1 << 20,
            subscriber_queue: 16,
            subscriber_queue_bytes: 1 << 20,
        });
        Store::open(dir, hub, Arc::new(Notify::new())).expect("store opens")
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join("sessions"))
            .expect("sessions dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("index.json"))
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn an_unfinished_transcript_is_never_a_session_and_is_removed_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sessions = dir.path().join("sessions");
        create_private_dir(&sessions).expect("dir");
        // What a create that died before its rename leaves: complete lines, staging name.
        let header = Header {
            version: 1,
            id: "abc".into(),
            key: "ghost".into(),
            created_at: 1,
            forked_from: None,
        };
        let staged = sessions.join("abc.jsonl.partial");
        std::fs::write(&staged, transcript::header_line(&header).expect("line")).expect("write");
        std::fs::write(sessions.join("def.jsonl.partial"), b"").expect("write");
        let store = open(dir.path());
        assert!(store.get("ghost").is_err());
        assert!(store.is_empty());
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }

    #[tokio::test]
    async fn create_reset_and_fork_leave_only_complete_transcripts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let s = store
            .create(Some("k".into()), Some("L".into()), None)
            .await
            .expect("create");
        store
            .append("k", vec![NewMessage::new(Role::Assistant, "one")])
            .await
            .expect("append");
        let forked = store.fork("k", Some("f".into()), None).await.expect("fork");
        let reset = store.reset("k").await.expect("reset");
        assert_ne!(reset.session_id, s.session_id);
        assert_eq!(reset.label.as_deref(), Some("L"));
        assert_eq!(reset.message_count, 0);
        let names = names(dir.path());
        assert!(
            !names
                .iter()
                .any(|n| n.ends_with(transcript::STAGING_SUFFIX)),
            "{names:?}"
        );
        for id in [&reset.session_id, &forked.session_id] {
            assert!(names.contains(&format!("{id}.jsonl")), "{names:?}");
        }
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!("{}.jsonl.reset.", s.session_id))),
            "{names:?}"
        );
        assert!(store.writable());
        // Appends after the reset go to the new transcript.
        store
            .append("k", vec![NewMessage::new(Role::Assistant, "two")])
            .await
            .expect("append");
        let history = store
            .history("k", 10, None, usize::MAX)
            .await
            .expect("read");
        assert_eq!(history.session_id, reset.session_id);
        assert_eq!(history.messages.len(), 1);
    }
}
