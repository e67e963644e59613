//! Session ownership in cluster mode: one node owns a session at a time, by a lease in the
//! `clawgate_leases` bucket (key: the session key hex-encoded, value: the owner's node id).
//!
//! A lease is taken with `create` (only when no live lease exists) and renewed with `update`
//! on its revision every third of `lease_ms`; the bucket's `max_age` is `lease_ms`, so the
//! lease of a node that died vanishes after at most that long and the next node that needs the
//! session takes it. A renewal that finds another revision means the session was taken over
//! (this node was cut off for longer than the lease): it is dropped here and the node stops
//! writing to it. On SIGTERM the node deletes its leases (a handover: the next call anywhere
//! takes the session at once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv::{CreateErrorKind, Operation, UpdateErrorKind};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::{Cluster, key_of};

/// Who owns a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node; `taken` when the lease was taken just now (the session's state must be
    /// brought up to date from the shared log before it is used).
    Me {
        /// Taken by this call.
        taken: bool,
    },
    /// Another node, by id.
    Other(String),
}

/// Why ownership could not be decided.
#[derive(Debug, Clone, thiserror::Error)]
#[error("session leases: {0}")]
pub struct LeaseError(pub String);

/// The leases this node holds.
pub struct Owners {
    cluster: Arc<Cluster>,
    /// Session key -> the revision of our lease.
    owned: Mutex<HashMap<String, u64>>,
}

impl Owners {
    /// No lease held yet.
    pub fn new(cluster: Arc<Cluster>) -> Arc<Self> {
        Arc::new(Self {
            cluster,
            owned: Mutex::new(HashMap::new()),
        })
    }

    /// The sessions this node owns now.
    pub fn count(&self) -> usize {
        self.owned.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// Whether this node holds the lease of `key`.
    pub fn holds(&self, key: &str) -> bool {
        self.owned.lock().is_ok_and(|o| o.contains_key(key))
    }

    /// The owner of `key`, taking the lease when no node holds it.
    pub async fn owner(&self, key: &str) -> Result<Owner, LeaseError> {
        if self.holds(key) {
            return Ok(Owner::Me { taken: false });
        }
        let me = self.cluster.node_id().to_string();
        let bucket_key = key_of(key);
        let leases = self.cluster.leases();
        for _ in 0..5 {
            let entry = leases
                .entry(bucket_key.clone())
                .await
                .map_err(|e| LeaseError(e.to_string()))?;
            match entry {
                Some(e) if e.operation == Operation::Put => {
                    let holder = String::from_utf8_lossy(&e.value).into_owned();
                    if holder != me {
                        return Ok(Owner::Other(holder));
                    }
                    // Ours from before a restart: it is ours again, to be brought up to date.
                    match leases
                        .update(&bucket_key, Bytes::from(me.clone()), e.revision)
                        .await
                    {
                        Ok(revision) => return Ok(self.took(key, revision)),
                        Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => continue,
                        Err(err) => return Err(LeaseError(err.to_string())),
                    }
                }
                _ => match leases.create(&bucket_key, Bytes::from(me.clone())).await {
                    Ok(revision) => return Ok(self.took(key, revision)),
                    Err(err) if err.kind() == CreateErrorKind::AlreadyExists => continue,
                    Err(err) => return Err(LeaseError(err.to_string())),
                },
            }
        }
        Err(LeaseError(format!(
            "the lease of session `{key}` changed hands five times while being read"
        )))
    }

    fn took(&self, key: &str, revision: u64) -> Owner {
        if let Ok(mut owned) = self.owned.lock() {
            owned.insert(key.to_string(), revision);
        }
        tracing::info!(session = key, node = %self.cluster.node_id(), "took the lease of a session");
        Owner::Me { taken: true }
    }

    /// Renews every lease held, every third of the lease, until `stop`; calls `lost` with each
    /// session whose lease another node took meanwhile.
    pub async fn renew_loop(
        self: Arc<Self>,
        stop: CancellationToken,
        lost: impl Fn(&str) + Send + Sync + 'static,
    ) {
        let every = Duration::from_millis(self.cluster.config().lease_ms / 3);
        let me = Bytes::from(self.cluster.node_id().to_string());
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => return,
            }
            let held: Vec<(String, u64)> = self
                .owned
                .lock()
                .map(|o| o.iter().map(|(k, r)| (k.clone(), *r)).collect())
                .unwrap_or_default();
            for (key, revision) in held {
                let result = self
                    .cluster
                    .leases()
                    .update(key_of(&key), me.clone(), revision)
                    .await;
                match result {
                    Ok(next) => {
                        if let Ok(mut owned) = self.owned.lock()
                            && let Some(r) = owned.get_mut(&key)
                        {
                            *r = next;
                        }
                    }
                    Err(err) if err.kind() == UpdateErrorKind::WrongLastRevision => {
                        tracing::warn!(session = %key, "the lease of a session was taken by another node; this node no longer writes to it");
                        if let Ok(mut owned) = self.owned.lock() {
                            owned.remove(&key);
                        }
                        lost(&key);
                    }
                    Err(err) => {
                        // NATS away: tried again next round; the lease may expire meanwhile,
                        // and then the next renewal finds another revision or none.
                        tracing::debug!(session = %key, %err, "cannot renew a session lease");
                    }
                }
            }
        }
    }

    /// Gives `key`'s lease up (deleted at once, so another node may take it).
    pub async fn release(&self, key: &str) {
        let revision = self.owned.lock().ok().and_then(|mut o| o.remove(key));
        if let Some(revision) = revision
            && let Err(err) = self
                .cluster
                .leases()
                .delete_expect_revision(key_of(key), Some(revision))
                .await
        {
            tracing::debug!(session = %key, %err, "cannot give a session lease up; it expires on its own");
        }
    }

    /// Hands every lease over (SIGTERM): deletes them, so the next call for each session on
    /// any node takes it at once.
    pub async fn release_all(&self) {
        let held: Vec<(String, u64)> = self
            .owned
            .lock()
            .map(|mut o| o.drain().collect())
            .unwrap_or_default();
        for (key, revision) in held {
            if let Err(err) = self
                .cluster
                .leases()
                .delete_expect_revision(key_of(&key), Some(revision))
                .await
            {
                tracing::debug!(session = %key, %err, "cannot hand a session lease over; it expires on its own");
            }
        }
    }
}
