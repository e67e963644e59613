//! Cluster mode: a session taken over from another node, its transcript rebuilt from the shared
//! log (every line JetStream acknowledged, bytes unchanged) and put in place of what this node
//! had of it; and a session this node had before any log, copied into it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Store;
use super::error::StoreError;
use super::fs::rename_durably;
use super::keys::valid_session_id;
use super::live::Transcript;
use super::recovery::scan_whole;
use super::transcript::{DirSync, Staged};
use crate::protocol::{Session, SessionChangeReason};
use crate::util::now_ms;

impl Store {
    /// The session `key` is the transcript `session_id` made of `lines` (from the shared log,
    /// the header first): when this node's copy is not exactly that (another transcript, or
    /// fewer lines), it is archived (`<id>.jsonl.replaced.<ts>`) and `lines` take its place.
    /// Returns the session as it is now.
    pub async fn adopt(
        &self,
        key: &str,
        session_id: &str,
        lines: Vec<Vec<u8>>,
    ) -> Result<Session, StoreError> {
        if !valid_session_id(session_id) || lines.is_empty() {
            return Err(StoreError::internal(format!(
                "the shared log of session `{key}` holds no transcript {session_id}"
            )));
        }
        let _guard = self.structure.lock().await;
        let old = self.lookup(key);
        if let Some(t) = &old {
            let entry = t.entry();
            if entry.session_id == session_id && entry.lines == lines.len() as u64 {
                return Ok(entry.session());
            }
        }
        let path = self.dir.join(format!("{session_id}.jsonl"));
        let what = format!("cannot take over session `{key}`");
        // The writer of the copy being replaced is held until the new one is in place.
        let mut old_writer = match &old {
            Some(t) => Some(t.writer.lock().await),
            None => None,
        };
        let (entry, writer) = self
            .blocking(&what, {
                let dir = self.dir.clone();
                let path = path.clone();
                let old_path = old.as_ref().map(|t| t.path.clone());
                let id = session_id.to_string();
                move || {
                    let sync = DirSync::open(&dir)?;
                    if let Some(from) = old_path.filter(|p| p.exists()) {
                        let name = from
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let to = dir.join(format!("{name}.replaced.{}", now_ms()));
                        rename_durably(&dir, &from, &to)?;
                    }
                    let writer = Staged::write_lines(&path, &lines)?.commit(&path)?;
                    sync.sync()?;
                    let mut ended = Vec::new();
                    let entry = scan_whole(&path, &id, &mut ended).ok_or_else(|| {
                        std::io::Error::other("the transcript from the shared log does not parse")
                    })?;
                    Ok((entry, writer))
                }
            })
            .await?;
        if let Some(t) = &old {
            t.retired.store(true, Ordering::Release);
        }
        if let Some(w) = old_writer.as_mut() {
            **w = None;
        }
        drop(old_writer);
        let mut entry = entry;
        entry.len = writer.len();
        entry.lines = writer.lines();
        let session = entry.session();
        let transcript = Arc::new(Transcript::new(path, entry, Some(writer)));
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.insert(key.to_string(), transcript);
        }
        self.mark_dirty();
        self.changed.notify_one();
        self.publish(key, SessionChangeReason::Updated, Some(session.clone()));
        Ok(session)
    }

    /// The whole transcript of `key` as lines (the header first), for the shared log; `None`
    /// when this node has no such session (or it is ephemeral).
    pub async fn transcript_lines(
        &self,
        key: &str,
    ) -> Result<Option<(String, Vec<Vec<u8>>)>, StoreError> {
        let Some(t) = self.lookup(key) else {
            return Ok(None);
        };
        if t.ephemeral {
            return Ok(None);
        }
        let entry = t.entry();
        let (path, len) = (t.path.clone(), entry.len);
        let bytes = self
            .blocking(&format!("cannot read session `{key}`"), move || {
                let mut bytes = std::fs::read(&path)?;
                bytes.truncate(usize::try_from(len).unwrap_or(usize::MAX));
                Ok(bytes)
            })
            .await?;
        let lines = bytes
            .split_inclusive(|b| *b == b'\n')
            .filter(|l| l.ends_with(b"\n"))
            .map(<[u8]>::to_vec)
            .collect();
        Ok(Some((entry.session_id, lines)))
    }
}
