//! Reading a session's messages back: a page of history, and the recent messages a run sends
//! to the model.

use super::Store;
use super::error::{MessageArg, StoreError};
use super::read::{Read, read_history};
use crate::protocol::{Compaction, TranscriptMessage};

/// Messages read back from a transcript.
#[derive(Debug, Clone)]
pub struct History {
    /// The transcript's id.
    pub session_id: String,
    /// Oldest first.
    pub messages: Vec<TranscriptMessage>,
    /// Older messages exist.
    pub has_more: bool,
    /// The compactions written among `messages` (after one of them), oldest first.
    pub compactions: Vec<Compaction>,
}

impl Store {
    /// The newest `limit` messages before `before_id` (or the end), oldest first, read backwards
    /// from the end of the file; stops early (with `has_more`) past `max_bytes`.
    pub async fn history(
        &self,
        key: &str,
        limit: usize,
        before_id: Option<String>,
        max_bytes: usize,
    ) -> Result<History, StoreError> {
        let t = self
            .lookup(key)
            .ok_or_else(|| StoreError::no_session(key))?;
        let entry = t.entry();
        let path = t.path.clone();
        let end = entry.len;
        let before = before_id.clone();
        let Read {
            messages,
            has_more,
            found,
            compactions,
        } = self
            .blocking(&format!("cannot read session `{key}`"), move || {
                read_history(&path, end, limit, before.as_deref(), max_bytes)
            })
            .await?;
        if !found {
            return Err(StoreError::NoMessage {
                key: key.to_string(),
                id: before_id.unwrap_or_default(),
                arg: MessageArg::Before,
            });
        }
        Ok(History {
            session_id: entry.session_id,
            messages,
            has_more,
            compactions,
        })
    }

    /// The `n` most recent messages of `key`, oldest first (the agent's context).
    pub async fn recent(&self, key: &str, n: usize) -> Result<Vec<TranscriptMessage>, StoreError> {
        Ok(self.history(key, n, None, usize::MAX).await?.messages)
    }
}
