//! One live transcript: its file, what the store knows of it, its one writer, and whether it
//! was archived.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::entry::Entry;
use super::transcript::Writer;

/// One live transcript.
pub(super) struct Transcript {
    /// The session key (fixed for the life of a transcript).
    pub(super) key: String,
    /// The key in lower case, for search.
    pub(super) key_lower: String,
    /// `entry.updated_at`, readable without the lock (for listing).
    pub(super) updated_at: AtomicU64,
    pub(super) path: PathBuf,
    pub(super) entry: Mutex<Entry>,
    /// The one writer, opened on the first write after a start.
    pub(super) writer: tokio::sync::Mutex<Option<Writer>>,
    /// Set once the transcript was archived (reset, delete); writers must look the key up again.
    pub(super) retired: AtomicBool,
    /// A session of one request (the OpenAI door's): never listed, never in the index, and
    /// removed, not archived, when it is discarded.
    pub(super) ephemeral: bool,
}

impl Transcript {
    /// The transcript `path`, known as `entry`, with its writer if one is open already.
    pub(super) fn new(path: PathBuf, entry: Entry, writer: Option<Writer>) -> Self {
        Self::with_kind(path, entry, writer, false)
    }

    /// Like [`new`](Self::new), for an ephemeral session when `ephemeral`.
    pub(super) fn with_kind(
        path: PathBuf,
        entry: Entry,
        writer: Option<Writer>,
        ephemeral: bool,
    ) -> Self {
        Self {
            key: entry.key.clone(),
            key_lower: entry.key.to_lowercase(),
            updated_at: AtomicU64::new(entry.updated_at),
            path,
            entry: Mutex::new(entry),
            writer: tokio::sync::Mutex::new(writer),
            retired: AtomicBool::new(false),
            ephemeral,
        }
    }

    /// A copy of what the store knows of it now.
    pub(super) fn entry(&self) -> Entry {
        self.entry
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Changes the entry (and the lock-free copy of `updated_at`).
    pub(super) fn update(&self, f: impl FnOnce(&mut Entry)) {
        let mut guard = self.entry.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard);
        self.updated_at.store(guard.updated_at, Ordering::Release);
    }

    /// Whether `needle` (lower case) is part of the key or of the label, in any case.
    pub(super) fn matches(&self, needle: &str) -> bool {
        self.key_lower.contains(needle)
            || self
                .entry
                .lock()
                .map(|e| {
                    e.label
                        .as_ref()
                        .is_some_and(|l| l.to_lowercase().contains(needle))
                })
                .unwrap_or(false)
    }
}
