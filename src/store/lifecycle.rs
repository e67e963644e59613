//! The changes of the store's structure: create, ensure, reset, delete and fork, serialized by
//! the structure lock (appends never take it).
//!
//! A new transcript is written in full and flushed under a staging name before it is renamed
//! into place, so a failure leaves no file that could come back as a session; reset swaps
//! names only once the new transcript is durable, and a failed reset or delete leaves the
//! session as it was.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Store;
use super::entry::Entry;
use super::error::{KeyArg, MessageArg, StoreError};
use super::fs::{rename_durably, swap_in};
use super::keys::{fork_key, new_session_id, new_session_key};
use super::live::Transcript;
use super::read::read_messages;
use super::transcript::{self, ForkedFrom, Header, Line, Meta, Writer};
use crate::protocol::{
    Patch, Session, SessionChangeReason, TranscriptMessage, validate_session_key,
};
use crate::util::now_ms;

/// The key `main`: reset, never deleted.
const MAIN: &str = "main";

/// A transcript about to be written: its file, first lines and entry.
pub(super) struct Fresh {
    pub(super) path: PathBuf,
    pub(super) header: Header,
    pub(super) lines: Vec<Vec<u8>>,
    pub(super) entry: Entry,
}

/// `key` if it is a valid session key; `arg` says which argument it was.
fn valid_key(key: String, arg: KeyArg) -> Result<String, StoreError> {
    match validate_session_key(&key) {
        Ok(()) => Ok(key),
        Err(reason) => Err(StoreError::InvalidKey { arg, reason }),
    }
}

impl Store {
    /// Creates a session (under a made-up key without one); [`StoreError::KeyTaken`] if the
    /// key exists.
    pub async fn create(
        &self,
        key: Option<String>,
        label: Option<String>,
        model: Option<String>,
        agent: &str,
    ) -> Result<Session, StoreError> {
        let key = match key {
            Some(k) => valid_key(k, KeyArg::Create)?,
            None => new_session_key(),
        };
        let _guard = self.structure.lock().await;
        if self.lookup(&key).is_some() {
            return Err(StoreError::KeyTaken { key });
        }
        let what = format!("cannot create session `{key}`");
        let session = self
            .create_locked(&what, &key, agent, label, model, None, Vec::new())
            .await?;
        self.publish(&key, SessionChangeReason::Created, Some(session.clone()));
        Ok(session)
    }

    /// The session `key`, created for `agent` if missing (publishing `created`); an existing
    /// session keeps its own agent (the caller compares).
    pub async fn ensure(&self, key: &str, agent: &str) -> Result<Session, StoreError> {
        if let Some(t) = self.lookup(key) {
            return Ok(t.entry().session());
        }
        validate_session_key(key).map_err(|reason| StoreError::InvalidKey {
            arg: KeyArg::Session,
            reason,
        })?;
        let _guard = self.structure.lock().await;
        if let Some(t) = self.lookup(key) {
            return Ok(t.entry().session());
        }
        let what = format!("cannot create session `{key}`");
        let session = self
            .create_locked(&what, key, agent, None, None, None, Vec::new())
            .await?;
        self.publish(key, SessionChangeReason::Created, Some(session.clone()));
        Ok(session)
    }

    /// Writes a new transcript and registers it under `key` (the structure lock is held); a
    /// failure (`what` says which call failed) leaves no file behind.
    #[allow(clippy::too_many_arguments)] // each is one field of the new transcript's header
    async fn create_locked(
        &self,
        what: &str,
        key: &str,
        agent: &str,
        label: Option<String>,
        model: Option<String>,
        forked_from: Option<ForkedFrom>,
        messages: Vec<TranscriptMessage>,
    ) -> Result<Session, StoreError> {
        let fresh = self.fresh(key, agent, label, model, forked_from, messages)?;
        self.log_fresh(&fresh).await?;
        let writer = self
            .blocking(what, {
                let (path, header, lines) = (fresh.path.clone(), fresh.header, fresh.lines);
                move || Writer::create(&path, &header, &lines)
            })
            .await?;
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

    /// Cluster mode: the new transcript's lines (its header first) go to the shared log.
    async fn log_fresh(&self, fresh: &Fresh) -> Result<(), StoreError> {
        let mut lines = vec![transcript::header_line(&fresh.header).map_err(StoreError::internal)?];
        lines.extend(fresh.lines.iter().cloned());
        self.log_lines(&fresh.header.key, &fresh.header.id, &lines)
            .await
    }

    /// The header, lines and entry of a new transcript for `key` (nothing is written yet).
    pub(super) fn fresh(
        &self,
        key: &str,
        agent: &str,
        label: Option<String>,
        model: Option<String>,
        forked_from: Option<ForkedFrom>,
        messages: Vec<TranscriptMessage>,
    ) -> Result<Fresh, StoreError> {
        let session_id = new_session_id();
        let created_at = now_ms();
        let header = Header {
            version: transcript::HEADER_VERSION,
            id: session_id.clone(),
            key: key.to_string(),
            created_at,
            forked_from,
            agent: Some(agent.to_string()),
        };
        let mut entry = Entry::new(key.to_string(), &session_id, created_at);
        entry.agent_id = agent.to_string();
        let mut lines = Vec::new();
        for m in messages {
            lines.push(transcript::message_line(&m).map_err(StoreError::internal)?);
            entry.apply(&Line::Message(Box::new(m)));
        }
        if label.is_some() || model.is_some() {
            let meta = Meta {
                ts: created_at,
                label: label.map_or(Patch::Keep, Patch::Set),
                model: model.map_or(Patch::Keep, Patch::Set),
            };
            lines.push(transcript::meta_line(&meta).map_err(StoreError::internal)?);
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

    /// Starts a new transcript for `key`, archiving the old one as
    /// `<sessionId>.jsonl.reset.<ts>`; label and model are kept. The new transcript is written in
    /// full and flushed before any name changes; a failed reset leaves the session as it was.
    pub async fn reset(&self, key: &str) -> Result<Session, StoreError> {
        let _guard = self.structure.lock().await;
        let old = self
            .lookup(key)
            .ok_or_else(|| StoreError::no_session(key))?;
        if old.ephemeral {
            return Err(StoreError::Ephemeral { key: key.into() });
        }
        let entry = old.entry();
        let fresh = self.fresh(
            key,
            &entry.agent_id,
            entry.label,
            entry.model,
            None,
            Vec::new(),
        )?;
        self.log_fresh(&fresh).await?;
        // Appends to the old transcript wait here, then find it retired and look the key up anew.
        let mut old_writer = old.writer.lock().await;
        let archive = self
            .dir
            .join(format!("{}.jsonl.reset.{}", entry.session_id, now_ms()));
        let swapped = self
            .blocking(&format!("cannot reset session `{key}`"), {
                let (dir, from) = (self.dir.clone(), old.path.clone());
                let (path, header, lines) = (fresh.path.clone(), fresh.header, fresh.lines);
                move || swap_in(&dir, &from, &archive, &path, &header, &lines)
            })
            .await?;
        old.retired.store(true, Ordering::Release);
        *old_writer = None;
        drop(old_writer);
        self.health.succeeded();
        let session = self.install(key, fresh.path, fresh.entry, swapped);
        self.publish(key, SessionChangeReason::Reset, Some(session.clone()));
        Ok(session)
    }

    /// Deletes `key` (its transcript is archived as `<sessionId>.jsonl.deleted.<ts>`, never
    /// removed); `main` cannot be deleted ([`StoreError::Undeletable`]). A failed delete leaves
    /// the session as it was.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        if key == MAIN {
            return Err(StoreError::Undeletable { key: MAIN.into() });
        }
        let _guard = self.structure.lock().await;
        let t = self
            .lookup(key)
            .ok_or_else(|| StoreError::no_session(key))?;
        if t.ephemeral {
            // Never kept: removed with its file, not archived.
            return self.discard_locked(key, &t).await;
        }
        let mut writer = t.writer.lock().await;
        let target = self.dir.join(format!(
            "{}.jsonl.deleted.{}",
            t.entry().session_id,
            now_ms()
        ));
        self.blocking(&format!("cannot delete session `{key}`"), {
            let (dir, from) = (self.dir.clone(), t.path.clone());
            move || rename_durably(&dir, &from, &target)
        })
        .await?;
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
    /// session `new_key` (a made-up key without one).
    pub async fn fork(
        &self,
        key: &str,
        new_key: Option<String>,
        at_message_id: Option<String>,
    ) -> Result<Session, StoreError> {
        let new_key = match new_key {
            Some(k) => valid_key(k, KeyArg::Fork)?,
            None => fork_key(key),
        };
        let _guard = self.structure.lock().await;
        let t = self
            .lookup(key)
            .ok_or_else(|| StoreError::no_session(key))?;
        if t.ephemeral {
            return Err(StoreError::Ephemeral { key: key.into() });
        }
        if self.lookup(&new_key).is_some() {
            return Err(StoreError::KeyTaken { key: new_key });
        }
        let entry = t.entry();
        let path = t.path.clone();
        let end = entry.len;
        let all = self
            .blocking(&format!("cannot read session `{key}`"), move || {
                read_messages(&path, end)
            })
            .await?;
        let messages: Vec<TranscriptMessage> = match at_message_id {
            None => all,
            Some(id) => {
                let Some(pos) = all.iter().position(|m| m.id == id) else {
                    return Err(StoreError::NoMessage {
                        key: key.to_string(),
                        id,
                        arg: MessageArg::ForkAt,
                    });
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
                &entry.agent_id,
                entry.label.clone(),
                entry.model.clone(),
                forked_from,
                messages,
            )
            .await?;
        self.publish(&new_key, SessionChangeReason::Forked, Some(session.clone()));
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::Role;
    use crate::store::NewMessage;
    use crate::store::error::{KeyArg, MessageArg, StoreError};
    use crate::store::test_support::{names, open};
    use crate::store::transcript;

    #[tokio::test]
    async fn create_reset_and_fork_leave_only_complete_transcripts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let s = store
            .create(Some("k".into()), Some("L".into()), None, "main")
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

    #[tokio::test]
    async fn refusals_say_which_session_key_or_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let bad = |arg| move |e: StoreError| matches!(e, StoreError::InvalidKey { arg: a, .. } if a == arg);
        let err = store.create(Some("a b".into()), None, None, "main").await;
        assert!(err.is_err_and(bad(KeyArg::Create)));
        assert!(
            store
                .ensure("a b", "main")
                .await
                .is_err_and(bad(KeyArg::Session))
        );
        store
            .create(Some("k".into()), None, None, "main")
            .await
            .expect("create");
        let err = store.fork("k", Some("a b".into()), None).await;
        assert!(err.is_err_and(bad(KeyArg::Fork)));
        let err = store.create(Some("k".into()), None, None, "main").await;
        assert_eq!(err, Err(StoreError::KeyTaken { key: "k".into() }));
        let err = store.fork("k", Some("k".into()), None).await;
        assert_eq!(err, Err(StoreError::KeyTaken { key: "k".into() }));
        let err = store.fork("k", None, Some("nope".into())).await;
        assert_eq!(
            err,
            Err(StoreError::NoMessage {
                key: "k".into(),
                id: "nope".into(),
                arg: MessageArg::ForkAt
            })
        );
        assert_eq!(store.reset("x").await, Err(StoreError::no_session("x")));
        assert_eq!(store.delete("x").await, Err(StoreError::no_session("x")));
        store.ensure("main", "main").await.expect("main");
        assert_eq!(
            store.delete("main").await,
            Err(StoreError::Undeletable { key: "main".into() })
        );
        let fork = store.fork("k", None, None).await.expect("fork");
        assert!(fork.key.starts_with("k-fork-"), "{}", fork.key);
    }
}
