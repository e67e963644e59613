//! The shared transcript log in cluster mode: each line of a session's transcript is one
//! message on `clawgate.tx.<sessionId>` in the CLAWGATE_TRANSCRIPTS stream, the line's bytes
//! unchanged. Every append is fenced with `Nats-Expected-Last-Subject-Sequence` (the last
//! sequence this node wrote or read for that subject), so two owners can never interleave: the
//! second is refused. A node taking a session over reads the whole subject back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, push};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use bytes::Bytes;
use futures::StreamExt;

use super::owners::{Owner, Owners};
use super::{Cluster, TRANSCRIPTS_PREFIX};
use crate::store::TranscriptLog;

/// How long reading a subject back may take at most.
const READ_PATIENCE: Duration = Duration::from_secs(30);

/// The JetStream log of every session's lines, and the session index bucket.
pub struct JetStreamLog {
    cluster: Arc<Cluster>,
    owners: Arc<Owners>,
    /// Session id -> the stream sequence of its last line, as this node last wrote or read it.
    last: Mutex<HashMap<String, u64>>,
    /// Index updates, written in order by one task.
    index_tx: tokio::sync::mpsc::Sender<(String, Option<Vec<u8>>)>,
}

/// Index updates waiting at most; past that (NATS away for long) the oldest news is dropped:
/// the next change of the session writes it again.
const INDEX_QUEUE: usize = 10_000;

fn subject(session_id: &str) -> String {
    format!("{TRANSCRIPTS_PREFIX}.{session_id}")
}

impl JetStreamLog {
    /// The log on `cluster`'s transcript stream.
    pub fn new(cluster: Arc<Cluster>, owners: Arc<Owners>) -> Arc<Self> {
        let (index_tx, mut rx) =
            tokio::sync::mpsc::channel::<(String, Option<Vec<u8>>)>(INDEX_QUEUE);
        let bucket = cluster.sessions().clone();
        tokio::spawn(async move {
            while let Some((key, value)) = rx.recv().await {
                let k = super::key_of(&key);
                let done = match value {
                    Some(v) => bucket
                        .put(&k, Bytes::from(v))
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    None => bucket.delete(&k).await.map_err(|e| e.to_string()),
                };
                if let Err(err) = done {
                    tracing::warn!(session = %key, %err, "cannot update the cluster's session index");
                }
            }
        });
        Arc::new(Self {
            cluster,
            owners,
            last: Mutex::new(HashMap::new()),
            index_tx,
        })
    }

    /// Writes `session` (or its removal) to the session index and waits for it.
    pub async fn index(&self, key: &str, session: Option<&crate::protocol::Session>) {
        let k = super::key_of(key);
        let bucket = self.cluster.sessions();
        let done = match session.and_then(|s| serde_json::to_vec(s).ok()) {
            Some(v) => bucket
                .put(&k, Bytes::from(v))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => bucket.delete(&k).await.map_err(|e| e.to_string()),
        };
        if let Err(err) = done {
            tracing::warn!(session = %key, %err, "cannot update the cluster's session index");
        }
    }

    /// Every session of the index, as the owners last wrote them.
    pub async fn indexed(&self) -> Result<Vec<crate::protocol::Session>, String> {
        let bucket = self.cluster.sessions();
        let mut keys = bucket.keys().await.map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(|e| e.to_string())?;
            if let Ok(Some(v)) = bucket.get(&k).await
                && let Ok(s) = serde_json::from_slice(&v)
            {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Forgets what this node knew of `session_id`'s log (its lease was lost): the next append
    /// reads the log's end again, and fails if another node wrote since.
    pub fn forget(&self, session_id: &str) {
        if let Ok(mut last) = self.last.lock() {
            last.remove(session_id);
        }
    }

    /// The sequence of the last line of `session_id` in the stream (0: none).
    async fn last_seq(&self, session_id: &str) -> Result<u64, String> {
        match self
            .cluster
            .transcripts_stream()
            .get_last_raw_message_by_subject(&subject(session_id))
            .await
        {
            Ok(msg) => Ok(msg.sequence),
            Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(err) => Err(err.to_string()),
        }
    }

    /// Every line of `session_id`, in order (empty when the log has none).
    pub async fn read(&self, session_id: &str) -> Result<Vec<Vec<u8>>, String> {
        let last = self.last_seq(session_id).await?;
        let mut lines = Vec::new();
        if last == 0 {
            return Ok(lines);
        }
        let stream = self.cluster.transcripts_stream();
        let consumer = stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.cluster.client().new_inbox(),
                filter_subject: subject(session_id),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        let read = tokio::time::timeout(READ_PATIENCE, async {
            while let Some(msg) = messages.next().await {
                let msg = msg.map_err(|e| e.to_string())?;
                let seq = msg.info().map_err(|e| e.to_string())?.stream_sequence;
                lines.push(msg.payload.to_vec());
                if seq >= last {
                    return Ok(());
                }
            }
            Err("the transcript stream ended while being read".to_string())
        })
        .await;
        match read {
            Ok(Ok(())) => {
                if let Ok(mut known) = self.last.lock() {
                    known.insert(session_id.to_string(), last);
                }
                Ok(lines)
            }
            Ok(Err(err)) => Err(err),
            Err(_) => Err(format!(
                "reading the transcript {session_id} back took over {} s",
                READ_PATIENCE.as_secs()
            )),
        }
    }
}

impl TranscriptLog for JetStreamLog {
    fn indexed(&self, key: &str, session: Option<&crate::protocol::Session>) {
        let value = session.and_then(|s| serde_json::to_vec(s).ok());
        if self.index_tx.try_send((key.to_string(), value)).is_err() {
            tracing::warn!(session = %key, "the cluster's session index is behind; an update was dropped");
        }
    }

    fn append<'a>(
        &'a self,
        key: &'a str,
        session_id: &'a str,
        lines: Vec<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            // One writer per session in the whole cluster: the node holding its lease. A part
            // that writes without going through the owner (a door, a scheduled run) may take a
            // lease no one holds only to start a transcript the log has never seen.
            if !self.owners.holds(key) {
                match self.owners.owner(key).await.map_err(|e| e.to_string())? {
                    Owner::Me { taken: false } => {}
                    Owner::Me { taken: true } => {
                        if self.last_seq(session_id).await? != 0 {
                            self.owners.release(key).await;
                            return Err(format!(
                                "session `{key}` was owned by another node until now; retry through JSON-RPC, which takes it over"
                            ));
                        }
                    }
                    Owner::Other(node) => {
                        return Err(format!(
                            "session `{key}` is owned by node `{node}`: only it writes the session (JSON-RPC calls on any node are forwarded there)"
                        ));
                    }
                }
            }
            let known = self
                .last
                .lock()
                .ok()
                .and_then(|l| l.get(session_id).copied());
            let mut last = match known {
                Some(seq) => seq,
                None => self.last_seq(session_id).await?,
            };
            let js = self.cluster.jetstream();
            let subject = subject(session_id);
            for line in lines {
                let mut headers = HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    last.to_string().as_str(),
                );
                let acked = match js
                    .publish_with_headers(subject.clone(), headers, Bytes::from(line))
                    .await
                {
                    Ok(ack) => ack.await.map_err(|e| e.to_string()),
                    Err(err) => Err(err.to_string()),
                };
                match acked {
                    Ok(ack) => last = ack.sequence,
                    Err(err) => {
                        // Perhaps written by another node meanwhile: read the end again next time.
                        self.forget(session_id);
                        return Err(err);
                    }
                }
            }
            if let Ok(mut known) = self.last.lock() {
                known.insert(session_id.to_string(), last);
            }
            Ok(())
        })
    }
}
