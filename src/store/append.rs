//! Writing to a live transcript through its one writer: messages (with their ids, parents and
//! time stamps assigned here) and label/model changes.

use std::sync::atomic::Ordering;

use super::Store;
use super::error::StoreError;
use super::live::Transcript;
use super::transcript::{self, Line, Meta, Writer};
use crate::protocol::{Patch, Role, Session, SessionChangeReason, TranscriptMessage};
use crate::util::now_ms;

/// How often a write looks its session up again after finding its transcript archived.
const RETRIES: usize = 100;

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

impl Store {
    /// Appends messages to `key`'s transcript (one write, then fdatasync); returns them with
    /// their ids, parents and timestamps. The session must exist.
    pub async fn append(
        &self,
        key: &str,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<TranscriptMessage>, StoreError> {
        self.append_to(key, None, messages).await
    }

    /// Like [`append`](Self::append), but only to the transcript `session_id` (a run never
    /// writes into the transcript that replaced its own after a reset:
    /// [`StoreError::Archived`]).
    pub async fn append_to(
        &self,
        key: &str,
        session_id: Option<&str>,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<TranscriptMessage>, StoreError> {
        for _ in 0..RETRIES {
            let t = self
                .lookup(key)
                .ok_or_else(|| StoreError::no_session(key))?;
            if let Some(expected) = session_id
                && t.entry().session_id != expected
            {
                return Err(StoreError::Archived {
                    key: key.to_string(),
                    session_id: expected.to_string(),
                });
            }
            let mut writer = t.writer.lock().await;
            if t.retired.load(Ordering::Acquire) {
                // Archived while we waited: look the key up again.
                drop(writer);
                tokio::task::yield_now().await;
                continue;
            }
            let what = format!("cannot append to session `{key}`");
            let w = self.open_writer(&t, &mut writer, &what).await?;
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
                buf.extend(transcript::message_line(&m).map_err(StoreError::internal)?);
                written.push(m);
            }
            let count = written.len() as u64;
            let len = self.append_lines(&t, w, buf, count, &what).await?;
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
        Err(StoreError::Contended {
            key: key.to_string(),
        })
    }

    /// The transcript's writer, opened (after its committed lines) if it is not yet; a failure
    /// to open is a store error of `what`.
    pub(super) async fn open_writer<'w>(
        &self,
        t: &Transcript,
        writer: &'w mut Option<Writer>,
        what: &str,
    ) -> Result<&'w mut Writer, StoreError> {
        if writer.is_none() {
            let lines = t.entry().lines;
            let path = t.path.clone();
            let opened = self
                .blocking(what, move || Writer::open(&path, lines))
                .await?;
            *writer = Some(opened);
        }
        writer
            .as_mut()
            .ok_or_else(|| StoreError::internal("transcript writer missing"))
    }

    /// Appends whole lines through `w`; on failure the index takes the file's real length (a
    /// failed write may have left part of a line) and a storage failure is recorded as such
    /// (`what` names the operation); on success the store is writable again.
    pub(super) async fn append_lines(
        &self,
        t: &Transcript,
        w: &mut Writer,
        lines: Vec<u8>,
        count: u64,
        what: &str,
    ) -> Result<u64, StoreError> {
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
    ) -> Result<Session, StoreError> {
        let t = self
            .lookup(key)
            .ok_or_else(|| StoreError::no_session(key))?;
        let meta = Meta {
            ts: now_ms(),
            label,
            model,
        };
        let line = transcript::meta_line(&meta).map_err(StoreError::internal)?;
        let mut writer = t.writer.lock().await;
        if t.retired.load(Ordering::Acquire) {
            return Err(StoreError::no_session(key));
        }
        let what = format!("cannot update session `{key}`");
        let w = self.open_writer(&t, &mut writer, &what).await?;
        let len = self.append_lines(&t, w, line, 1, &what).await?;
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
}
