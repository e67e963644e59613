//! Writing to a live transcript through its one writer: messages (with their ids, parents and
//! time stamps assigned here), run, tool and approval markers, label/model changes, and (for
//! `compaction`) compaction lines, all through [`Store::write_lines`]: lock the writer, check
//! the transcript is still the session's, append the lines in one write, fold them into the
//! entry.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Store;
use super::entry::Entry;
use super::error::StoreError;
use super::live::Transcript;
use super::transcript::{self, ApprovalLine, Line, Meta, RunMarker, ToolMarker, Writer};
use crate::protocol::{Patch, Role, Session, SessionChangeReason, TranscriptMessage};
use crate::util::now_ms;

/// How often a write looks its session up again after finding its transcript archived.
const RETRIES: usize = 100;

/// A message to append; the store assigns `parentId`, `ts` and (unless given) `id`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The message; `parent_id` and `ts` are replaced, an empty `id` is assigned (a given one is
    /// kept).
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

/// One line to append with [`Store::append_records`].
#[derive(Debug, Clone)]
pub enum Record {
    /// A message (the store assigns its `id`, `parentId` and `ts`).
    Message(NewMessage),
    /// A run marker (a `ts` of 0 is set to now).
    Run(RunMarker),
    /// A tool marker (a `ts` of 0 is set to now).
    Tool(ToolMarker),
    /// An approval line (a `ts` of 0 is set to now).
    Approval(Box<ApprovalLine>),
}

/// `ts`, or now when it is 0.
fn stamped(ts: u64, now: u64) -> u64 {
    if ts == 0 { now } else { ts }
}

/// The lines of `records` as appended after the message `parent` at time `now`, and the
/// messages among them (with their ids, parents and times).
fn record_lines(
    records: &[Record],
    mut parent: Option<String>,
    now: u64,
) -> (Vec<Line>, Vec<TranscriptMessage>) {
    let mut lines = Vec::with_capacity(records.len());
    let mut messages = Vec::new();
    for record in records {
        lines.push(match record {
            Record::Message(new) => {
                let mut m = new.message.clone();
                // An id given ahead (an inject answered before it could be written) is kept.
                if m.id.is_empty() {
                    m.id = uuid::Uuid::new_v4().simple().to_string();
                }
                m.parent_id = parent.take();
                m.ts = now;
                parent = Some(m.id.clone());
                messages.push(m.clone());
                Line::Message(Box::new(m))
            }
            Record::Run(marker) => {
                let mut marker = marker.clone();
                marker.ts = stamped(marker.ts, now);
                Line::Run(marker)
            }
            Record::Tool(marker) => {
                let mut marker = marker.clone();
                marker.ts = stamped(marker.ts, now);
                Line::Tool(marker)
            }
            Record::Approval(approval) => {
                let mut approval = approval.clone();
                approval.ts = stamped(approval.ts, now);
                Line::Approval(approval)
            }
        });
    }
    (lines, messages)
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
        let records = messages.into_iter().map(Record::Message).collect();
        self.append_records(key, session_id, records).await
    }

    /// Appends `records` (messages and markers, in this order) to `key`'s transcript, only to
    /// the transcript `session_id` when given ([`StoreError::Archived`] after a reset), in one
    /// write and one fdatasync. Messages get their ids, parents and times as with
    /// [`append`](Self::append); markers keep the time they carry (0: now). Returns the
    /// messages written.
    pub async fn append_records(
        &self,
        key: &str,
        session_id: Option<&str>,
        records: Vec<Record>,
    ) -> Result<Vec<TranscriptMessage>, StoreError> {
        let what = format!("cannot append to session `{key}`");
        let (_, written) = self
            .write_lines(key, session_id, &what, |entry| {
                Ok(record_lines(
                    &records,
                    entry.last_message_id.clone(),
                    now_ms(),
                ))
            })
            .await?;
        Ok(written)
    }

    /// The one write path: finds `key`'s live transcript (only `session_id`'s, when given:
    /// [`StoreError::Archived`] otherwise), locks its writer, and appends the lines `build`
    /// makes from its entry as it is under the lock, in one write and one fdatasync; then folds
    /// them into the entry (the runs they end into the run index first) and marks the index
    /// dirty. A transcript archived while waiting for the lock is looked up again. Returns the
    /// transcript written to and what `build` returned besides the lines.
    pub(super) async fn write_lines<T>(
        &self,
        key: &str,
        session_id: Option<&str>,
        what: &str,
        mut build: impl FnMut(&Entry) -> Result<(Vec<Line>, T), StoreError>,
    ) -> Result<(Arc<Transcript>, T), StoreError> {
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
            let (lines, out) = build(&t.entry())?;
            let mut each = Vec::with_capacity(lines.len());
            for line in &lines {
                each.push(transcript::line_bytes(line).map_err(StoreError::internal)?);
            }
            if !t.ephemeral {
                // Cluster mode: acknowledged by the shared log before the file has them.
                self.log_lines(key, &t.entry().session_id, &each).await?;
            }
            let buf = each.concat();
            let w = self.open_writer(&t, &mut writer, what).await?;
            let len = self
                .append_lines(&t, w, buf, lines.len() as u64, what)
                .await?;
            let count = w.lines();
            t.update(|e| {
                let mut ended = Vec::new();
                for line in &lines {
                    ended.extend(e.apply(line));
                }
                // Before the entry moves on, so runs.json is never older than index.json.
                self.record_finished(ended);
                e.len = len;
                e.lines = count;
            });
            drop(writer);
            self.mark_dirty();
            return Ok((t, out));
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
        let meta = Meta {
            ts: now_ms(),
            label,
            model,
        };
        let what = format!("cannot update session `{key}`");
        let (t, ()) = self
            .write_lines(key, None, &what, |_| {
                Ok((vec![Line::Meta(meta.clone())], ()))
            })
            .await?;
        let session = t.entry().session();
        self.publish(key, SessionChangeReason::Updated, Some(session.clone()));
        Ok(session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RunOutcome;
    use crate::store::test_support::open;
    use crate::store::transcript::RunMarkerState;

    fn started(run: &str) -> Record {
        let mut m = RunMarker::new(run, RunMarkerState::Started);
        m.agent = Some("main".into());
        m.idempotency_key = Some("idem".into());
        Record::Run(m)
    }

    #[tokio::test]
    async fn a_marker_and_a_message_are_one_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.ensure("k", "main").await.expect("ensure");
        let t = store.lookup("k").expect("live");
        let (appends, lines) = {
            let w = t.writer.lock().await;
            let w = w.as_ref().expect("writer");
            (w.appends, w.lines())
        };
        let mut user = NewMessage::new(Role::User, "hi");
        user.message.run_id = Some("r1".into());
        let written = store
            .append_records("k", None, vec![started("r1"), Record::Message(user)])
            .await
            .expect("append");
        assert_eq!(written.len(), 1, "only messages come back");
        let w = t.writer.lock().await;
        let w = w.as_ref().expect("writer");
        assert_eq!(w.appends, appends + 1, "one write, one flush");
        assert_eq!(w.lines(), lines + 2);
        let entry = t.entry();
        assert_eq!(entry.message_count, 1, "a marker is not a message");
        assert_eq!(
            entry.last_message_id.as_deref(),
            Some(written[0].id.as_str())
        );
        assert_eq!(entry.open_runs.len(), 1);
        assert!(entry.open_runs[0].started_at > 0, "a ts of 0 is stamped");
    }

    #[tokio::test]
    async fn readers_skip_markers_like_meta_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        store.ensure("k", "main").await.expect("ensure");
        let mut user = NewMessage::new(Role::User, "question");
        user.message.run_id = Some("r1".into());
        let approval = ApprovalLine {
            approval_id: "a".into(),
            ts: 3,
            state: crate::protocol::ApprovalState::Pending,
            tool_call_id: "c".into(),
            name: "exec".into(),
            run_id: Some("r1".into()),
            decision: None,
            by: None,
            reason: None,
            remember: None,
        };
        let mut end = RunMarker::new("r1", RunMarkerState::Final);
        end.stop_reason = Some("end_turn".into());
        let written = store
            .append_records(
                "k",
                None,
                vec![
                    started("r1"),
                    Record::Message(user),
                    Record::Tool(ToolMarker::started("c", "r1")),
                    Record::Approval(Box::new(approval)),
                    Record::Message(NewMessage::new(Role::Assistant, "answer")),
                    Record::Run(end),
                ],
            )
            .await
            .expect("append");
        assert_eq!(
            written[1].parent_id.as_deref(),
            Some(written[0].id.as_str())
        );
        let h = store
            .history("k", 10, None, usize::MAX)
            .await
            .expect("history");
        assert_eq!(h.messages, written);
        let ctx = store.context("k").await.expect("context");
        assert_eq!(ctx.messages, written);
        let session = store.get("k").expect("get");
        assert_eq!(session.message_count, 2);
        assert_eq!(session.last_message_preview.as_deref(), Some("answer"));
        let fork = store.fork("k", Some("f".into()), None).await.expect("fork");
        assert_eq!(fork.message_count, 2);
        let copied = store.history("f", 10, None, usize::MAX).await.expect("h");
        assert_eq!(copied.messages.len(), 2);
        assert!(store.open_runs().is_empty(), "the fork copies no marker");
        let done = store.finished_run("r1").expect("finished");
        assert_eq!(done.outcome, RunOutcome::Final);
        assert_eq!(done.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(
            (done.session_key.as_str(), done.agent_id.as_str()),
            ("k", "main")
        );
        let text = std::fs::read_to_string(
            dir.path()
                .join("sessions")
                .join(format!("{}.jsonl", fork.session_id)),
        )
        .expect("read");
        assert!(!text.contains("\"type\":\"run\""), "{text}");
    }

    #[tokio::test]
    async fn a_marker_for_an_archived_transcript_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path());
        let s = store.ensure("k", "main").await.expect("ensure");
        store.reset("k").await.expect("reset");
        let err = store
            .append_records("k", Some(&s.session_id), vec![started("r")])
            .await;
        assert!(matches!(err, Err(StoreError::Archived { .. })), "{err:?}");
        assert!(store.open_runs().is_empty());
    }
}
