//! Ephemeral sessions: the session of one request (the OpenAI door without a session key),
//! seeded with that request's earlier messages. It runs like any other session (events,
//! transcript, approvals), but `sessions.list` never shows it, the index never records it,
//! `sessions.changed` never announces it, and [`Store::discard`] removes it with its file once
//! the answer is out. Its transcript lives in `sessions/ephemeral/`, which a start empties (the
//! leftovers of a crash), so none can ever come back as a session.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Store;
use super::error::StoreError;
use super::fs::create_private_dir;
use super::live::Transcript;
use super::transcript::Writer;
use crate::protocol::{Role, Session, TranscriptMessage};
use crate::util::now_ms;

/// The directory (under `sessions/`) of the ephemeral transcripts.
pub(super) const EPHEMERAL_DIR: &str = "ephemeral";

/// Removes what a crash left in `sessions/ephemeral/` (nothing there is a session).
pub(super) fn clear_leftovers(sessions_dir: &Path) {
    let dir = sessions_dir.join(EPHEMERAL_DIR);
    let Ok(read) = std::fs::read_dir(&dir) else {
        return;
    };
    for item in read.flatten() {
        tracing::info!(file = %item.path().display(), "removing an ephemeral transcript left by a crash");
        if let Err(err) = std::fs::remove_file(item.path()) {
            tracing::warn!(file = %item.path().display(), %err, "cannot remove an ephemeral transcript");
        }
    }
}

impl Store {
    /// Whether `key` is an ephemeral session now.
    pub fn is_ephemeral(&self, key: &str) -> bool {
        self.lookup(key).is_some_and(|t| t.ephemeral)
    }

    /// Creates an ephemeral session for `agent` under a fresh key `<prefix><24 hex>`, its
    /// transcript holding `seed` (role and text, oldest first) before any run.
    pub async fn create_ephemeral(
        &self,
        prefix: &str,
        agent: &str,
        seed: Vec<(Role, String)>,
    ) -> Result<Session, StoreError> {
        let key = format!(
            "{prefix}{}",
            &uuid::Uuid::new_v4().simple().to_string()[..24]
        );
        crate::protocol::validate_session_key(&key).map_err(|reason| StoreError::InvalidKey {
            arg: super::error::KeyArg::Session,
            reason,
        })?;
        let ts = now_ms();
        let mut parent: Option<String> = None;
        let messages: Vec<TranscriptMessage> = seed
            .into_iter()
            .map(|(role, content)| {
                let id = uuid::Uuid::new_v4().simple().to_string();
                let mut message = super::NewMessage::new(role, content).message;
                message.id = id.clone();
                message.parent_id = parent.replace(id);
                message.ts = ts;
                message
            })
            .collect();
        let _guard = self.structure.lock().await;
        if self.lookup(&key).is_some() {
            return Err(StoreError::KeyTaken { key });
        }
        let mut fresh = self.fresh(&key, agent, None, None, None, messages)?;
        let dir = self.dir.join(EPHEMERAL_DIR);
        if let Some(name) = fresh.path.file_name() {
            fresh.path = dir.join(name);
        }
        let what = format!("cannot create session `{key}`");
        let writer = self
            .blocking(&what, {
                let (path, header, lines) = (fresh.path.clone(), fresh.header, fresh.lines);
                move || {
                    create_private_dir(&dir)?;
                    Writer::create(&path, &header, &lines)
                }
            })
            .await?;
        self.health.succeeded();
        let mut entry = fresh.entry;
        entry.len = writer.len();
        entry.lines = writer.lines();
        let session = entry.session();
        let transcript = Arc::new(Transcript::with_kind(fresh.path, entry, Some(writer), true));
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.insert(key, transcript);
        }
        Ok(session)
    }

    /// Removes the ephemeral session `key` and its file (nothing when it is gone already);
    /// [`StoreError::Undeletable`] for a session that is not ephemeral.
    pub async fn discard(&self, key: &str) -> Result<(), StoreError> {
        let _guard = self.structure.lock().await;
        let Some(t) = self.lookup(key) else {
            return Ok(());
        };
        if !t.ephemeral {
            return Err(StoreError::Undeletable { key: key.into() });
        }
        self.discard_locked(key, &t).await
    }

    /// Removes the ephemeral transcript `t` of `key` (the structure lock is held).
    pub(super) async fn discard_locked(
        &self,
        key: &str,
        t: &Arc<Transcript>,
    ) -> Result<(), StoreError> {
        let mut writer = t.writer.lock().await;
        t.retired.store(true, Ordering::Release);
        *writer = None;
        drop(writer);
        if let Ok(mut sessions) = self.sessions.write() {
            sessions.remove(key);
        }
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
        let path = t.path.clone();
        self.blocking(
            &format!("cannot remove session `{key}`"),
            move || match std::fs::remove_file(&path) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::Role;
    use crate::store::StoreError;
    use crate::store::test_support::open;

    #[tokio::test]
    async fn an_ephemeral_session_is_never_listed_indexed_or_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let s = store
            .create_ephemeral(
                "openai:",
                "main",
                vec![
                    (Role::System, "Be brief.".into()),
                    (Role::User, "Hi".into()),
                ],
            )
            .await
            .expect("created");
        assert!(s.key.starts_with("openai:"), "{}", s.key);
        assert_eq!(s.message_count, 2);
        let history = store
            .history(&s.key, 10, None, usize::MAX)
            .await
            .expect("history");
        assert_eq!(
            history.messages[1].parent_id.as_deref(),
            Some(history.messages[0].id.as_str())
        );
        assert_eq!(store.list(100, None, None).expect("list").total, 0);
        store.flush_index().expect("index");
        let index = std::fs::read_to_string(dir.path().join("sessions/index.json")).expect("index");
        assert!(!index.contains(&s.key), "{index}");
        let file = dir
            .path()
            .join("sessions/ephemeral")
            .join(format!("{}.jsonl", s.session_id));
        assert!(file.exists());
        for refused in [
            store.reset(&s.key).await.map(|_| ()),
            store.fork(&s.key, None, None).await.map(|_| ()),
        ] {
            assert_eq!(refused, Err(StoreError::Ephemeral { key: s.key.clone() }));
        }
        store.discard(&s.key).await.expect("discard");
        assert!(!file.exists());
        assert!(store.get(&s.key).is_err());
        store
            .discard(&s.key)
            .await
            .expect("discarding twice is nothing");
        store.ensure("k", "main").await.expect("k");
        assert_eq!(
            store.discard("k").await,
            Err(StoreError::Undeletable { key: "k".into() })
        );
    }

    #[tokio::test]
    async fn a_start_removes_ephemeral_transcripts_a_crash_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = {
            let store = open(dir.path());
            let s = store
                .create_ephemeral("openai:", "main", Vec::new())
                .await
                .expect("created");
            // `sessions.delete` of an ephemeral session removes it too.
            let other = store
                .create_ephemeral("openai:", "main", Vec::new())
                .await
                .expect("created");
            store.delete(&other.key).await.expect("delete");
            s.key
        };
        let store = open(dir.path());
        assert!(store.get(&key).is_err());
        let left: Vec<_> = std::fs::read_dir(dir.path().join("sessions/ephemeral"))
            .expect("dir")
            .flatten()
            .collect();
        assert!(left.is_empty(), "{left:?}");
        let archived: Vec<String> = std::fs::read_dir(dir.path().join("sessions"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".jsonl"))
            .collect();
        assert!(archived.is_empty(), "{archived:?}");
    }
}
