//! Cluster mode's nodes: each node's entry in the nodes bucket, the view of the other nodes
//! (presence and status across nodes), the leader lease, and the `presence {left}` of the
//! connections of a node that died.
//!
//! Every node keeps one entry in [`Cluster::nodes`] (key = its node id, value = a
//! [`NodeEntry`]): put at start, again every `lease_ms / 3` and soon after a connection comes
//! or goes (at most every [`DEBOUNCE`]), deleted on shutdown. The bucket's `max_age` is the lease,
//! so the entry of a node that died vanishes by itself. A watch of the bucket keeps the view of
//! the other nodes fresh; a poll of its keys each round finds the entries that expired.
//!
//! One node at a time is the leader: it holds the key [`LEADER_KEY`] of [`Cluster::leases`]
//! (taken with `create`, renewed with `update` on its revision every round), and only it runs
//! the jobs that must run once per cluster (cron, outgoing webhooks: the gateway follows
//! [`Nodes::leadership`]) and announces the `presence {left}` of a dead node's connections,
//! which go through the shared event stream and so must be published once. The lease is lost
//! when a renewal finds another revision or no renewal succeeded for a whole lease.
//!
//! The domain knows the gateway only as a [`NodeHost`].

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::Cluster;
use crate::config::{AuthConfig, Config};
use crate::events::EventHub;
use crate::protocol::{PresenceEntry, PresenceEvent, PresenceState};

/// The key of the leader lease in the leases bucket; session keys there are lowercase hex
/// ([`super::key_of`]), so it cannot collide with one.
pub const LEADER_KEY: &str = "_leader";
/// Connections a node lists in its entry at most (the first ones, by connection id).
pub const MAX_CONNECTIONS: usize = 1000;
/// The least time between two puts of the entry after connections came and went.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// How many sessions this node owns now (the gateway's count; put in the node's entry).
pub type SessionsOwned = Arc<dyn Fn() -> usize + Send + Sync>;

/// One node's entry in the nodes bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeEntry {
    /// The node's id (the entry's key).
    pub node_id: String,
    /// The address its gateway listens on.
    pub addr: String,
    /// Sessions it owns.
    pub sessions_owned: usize,
    /// When it started (ms since the epoch): another value under the same id is a restart.
    pub started_at: u64,
    /// [`auth_hash`] of its authentication settings.
    pub auth_hash: String,
    /// Its WebSocket connections (at most [`MAX_CONNECTIONS`]).
    #[serde(default)]
    pub connections: Vec<PresenceEntry>,
}

/// What the nodes need from the gateway.
pub trait NodeHost: Send + Sync + 'static {
    /// The event hub (a dead node's `presence {left}` is published there).
    fn hub(&self) -> &Arc<EventHub>;
    /// The configuration in force (its `[gateway.auth]` goes into [`auth_hash`]).
    fn config(&self) -> Arc<Config>;
    /// This node's WebSocket connections now.
    fn local_presence(&self) -> Vec<PresenceEntry>;
}

/// A fingerprint of the authentication settings that says nothing of the tokens: SHA-256
/// (lowercase hex) over the auth mode and the sorted SHA-256s of the token values. Two nodes
/// with the same mode and the same set of token values have the same hash.
pub fn auth_hash(auth: &AuthConfig) -> String {
    let mut tokens: Vec<String> = auth
        .tokens
        .iter()
        .map(|t| hex::encode(Sha256::digest(t.token.as_bytes())))
        .collect();
    tokens.sort();
    tokens.dedup();
    let mut hash = Sha256::new();
    hash.update(auth.mode.as_str().as_bytes());
    for token in &tokens {
        hash.update(b"\n");
        hash.update(token.as_bytes());
    }
    hex::encode(hash.finalize())
}

/// An entry of another node as last seen.
#[derive(Debug, Clone)]
struct Seen {
    revision: u64,
    /// When it was last applied (a poll removes only what it did not see since it began).
    at: Instant,
    entry: NodeEntry,
}

/// A node whose entry expired (or was replaced by a restart), whose connections get their
/// `presence {left}` from the leader.
#[derive(Debug, Clone)]
struct Vanished {
    entry: NodeEntry,
    at: Instant,
}

/// The leader lease as this node holds it.
#[derive(Debug, Clone, Copy)]
struct Lease {
    revision: u64,
    renewed: Instant,
}

/// What a round learned about the leader lease.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LeaderSeen {
    /// This node holds it.
    Me,
    /// Another node holds it.
    Other(String),
    /// Nobody could be seen holding it (NATS unreachable, or a race).
    Unknown,
}

#[derive(Debug, Default)]
struct State {
    /// The other nodes' entries, by node id.
    view: BTreeMap<String, Seen>,
    lease: Option<Lease>,
    /// The nodes warned about for another auth hash.
    warned: HashSet<String>,
    vanished: Vec<Vanished>,
}

/// This node's entry, the view of the others and the leader lease.
pub struct Nodes {
    cluster: Arc<Cluster>,
    host: Arc<dyn NodeHost>,
    addr: String,
    started_at: u64,
    sessions_owned: SessionsOwned,
    lease: Duration,
    state: Mutex<State>,
    leader: watch::Sender<bool>,
    changed: Notify,
    stop: CancellationToken,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes")
            .field("node_id", &self.cluster.node_id())
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Nodes {
    /// Puts this node's entry, reads the others', tries for the leader lease once, then keeps
    /// all of it up to date until [`Self::stop`]. `addr` is the gateway's bound address.
    pub async fn start(
        cluster: Arc<Cluster>,
        host: Arc<dyn NodeHost>,
        addr: String,
        sessions_owned: SessionsOwned,
    ) -> Arc<Self> {
        let lease = Duration::from_millis(cluster.config().lease_ms.max(1));
        let (leader, _) = watch::channel(false);
        let nodes = Arc::new(Self {
            cluster,
            host,
            addr,
            started_at: crate::util::now_ms(),
            sessions_owned,
            lease,
            state: Mutex::new(State::default()),
            leader,
            changed: Notify::new(),
            stop: CancellationToken::new(),
            tasks: Mutex::new(Vec::new()),
        });
        nodes.round().await;
        let main = tokio::spawn(nodes.clone().run());
        let watch = tokio::spawn(nodes.clone().watch_loop());
        if let Ok(mut tasks) = nodes.tasks.lock() {
            tasks.push(main);
            tasks.push(watch);
        }
        nodes
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the state is whole at every step.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        self.cluster.node_id()
    }

    /// How often the entry and the lease are renewed: a third of the lease.
    pub fn period(&self) -> Duration {
        self.lease / 3
    }

    /// How long one NATS operation of a round may take before the round goes on without it.
    fn patience(&self) -> Duration {
        self.period().max(Duration::from_secs(1))
    }

    /// This node's entry now.
    pub fn entry(&self) -> NodeEntry {
        let mut connections = self.host.local_presence();
        connections.truncate(MAX_CONNECTIONS);
        for c in &mut connections {
            c.node_id = None;
        }
        NodeEntry {
            node_id: self.node_id().to_string(),
            addr: self.addr.clone(),
            sessions_owned: (self.sessions_owned)(),
            started_at: self.started_at,
            auth_hash: auth_hash(&self.host.config().gateway.auth),
            connections,
        }
    }

    /// The other live nodes' entries as last seen, by node id.
    pub fn others(&self) -> Vec<NodeEntry> {
        self.state()
            .view
            .values()
            .map(|s| s.entry.clone())
            .collect()
    }

    /// Whether this node holds the leader lease now.
    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Follows whether this node holds the leader lease.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// A connection came or went: the entry is put again soon (at most every [`DEBOUNCE`]).
    pub fn connections_changed(&self) {
        self.changed.notify_one();
    }

    /// Stops renewing, gives the leader lease up (another node takes it at once) and deletes
    /// this node's entry (the others see it leave, not die).
    pub async fn stop(&self) {
        self.stop.cancel();
        let tasks: Vec<_> = self
            .tasks
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for task in tasks {
            let _ = tokio::time::timeout(self.patience(), task).await;
        }
        let lease = self.state().lease.take();
        let patience = self.patience();
        if let Some(lease) = lease {
            let released = tokio::time::timeout(
                patience,
                self.cluster
                    .leases()
                    .delete_expect_revision(LEADER_KEY, Some(lease.revision)),
            )
            .await;
            if !matches!(released, Ok(Ok(()))) {
                tracing::warn!("cannot release the cluster leader lease; it expires by itself");
            }
        }
        let deleted =
            tokio::time::timeout(patience, self.cluster.nodes().delete(self.node_id())).await;
        if !matches!(deleted, Ok(Ok(()))) {
            tracing::warn!(
                "cannot delete this node's entry in the nodes bucket; it expires by itself"
            );
        }
    }

    /// Renews every [`Self::period`], and puts the entry soon after connections changed.
    async fn run(self: Arc<Self>) {
        let period = self.period();
        let mut next = tokio::time::Instant::now() + period;
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep_until(next) => {
                    self.round().await;
                    next = tokio::time::Instant::now() + period;
                }
                () = self.changed.notified() => {
                    // More changes within the debounce go with this put.
                    tokio::select! {
                        () = self.stop.cancelled() => return,
                        () = tokio::time::sleep(DEBOUNCE) => {}
                    }
                    if self.cluster.connected() {
                        self.put_entry().await;
                    }
                }
            }
        }
    }

    /// One round: the entry, the leader lease, the others, the vanished nodes.
    async fn round(&self) {
        let leader = if self.cluster.connected() {
            self.put_entry().await;
            let leader = self.leader_step().await;
            self.poll().await;
            leader
        } else {
            self.lease_expired_check();
            LeaderSeen::Unknown
        };
        self.settle_vanished(&leader);
    }

    /// Puts this node's entry.
    async fn put_entry(&self) {
        let entry = self.entry();
        let Ok(value) = serde_json::to_vec(&entry) else {
            return;
        };
        let put = tokio::time::timeout(
            self.patience(),
            self.cluster.nodes().put(self.node_id(), Bytes::from(value)),
        )
        .await;
        match put {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::debug!(%err, "cannot put this node's entry"),
            Err(_) => tracing::debug!("putting this node's entry timed out"),
        }
    }

    /// Renews the leader lease, or takes it when nobody holds it; who holds it.
    async fn leader_step(&self) -> LeaderSeen {
        let leases = self.cluster.leases();
        let me = Bytes::from(self.node_id().to_string());
        let patience = self.patience();
        let held = self.state().lease;
        match held {
            Some(lease) => {
                let renewed =
                    tokio::time::timeout(patience, leases.update(LEADER_KEY, me, lease.revision))
                        .await;
                match renewed {
                    Ok(Ok(revision)) => {
                        self.state().lease = Some(Lease {
                            revision,
                            renewed: Instant::now(),
                        });
                        LeaderSeen::Me
                    }
                    Ok(Err(err)) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        self.lose("another node holds the leader lease now");
                        LeaderSeen::Unknown
                    }
                    _ => {
                        if self.lease_expired_check() {
                            LeaderSeen::Unknown
                        } else {
                            LeaderSeen::Me
                        }
                    }
                }
            }
            None => {
                let current = tokio::time::timeout(patience, leases.entry(LEADER_KEY)).await;
                match current {
                    Ok(Ok(Some(entry))) if entry.operation == Operation::Put => {
                        LeaderSeen::Other(String::from_utf8_lossy(&entry.value).into_owned())
                    }
                    Ok(Ok(_)) => {
                        let taken =
                            tokio::time::timeout(patience, leases.create(LEADER_KEY, me)).await;
                        match taken {
                            Ok(Ok(revision)) => {
                                self.state().lease = Some(Lease {
                                    revision,
                                    renewed: Instant::now(),
                                });
                                tracing::info!(
                                    node = %self.node_id(),
                                    "this node is now the cluster leader: cron jobs and outgoing webhooks run here"
                                );
                                self.leader.send_replace(true);
                                LeaderSeen::Me
                            }
                            // Another node was quicker.
                            _ => LeaderSeen::Unknown,
                        }
                    }
                    _ => LeaderSeen::Unknown,
                }
            }
        }
    }

    /// Gives the lease up when no renewal succeeded for a whole lease; whether it did.
    fn lease_expired_check(&self) -> bool {
        let renewed = self.state().lease.map(|l| l.renewed);
        match renewed {
            Some(at) if at.elapsed() >= self.lease => {
                self.lose("NATS was unreachable for longer than the lease");
                true
            }
            _ => false,
        }
    }

    fn lose(&self, why: &str) {
        if self.state().lease.take().is_some() {
            tracing::warn!(node = %self.node_id(), "this node is no longer the cluster leader: {why}; its cron jobs and outgoing webhooks stop");
            self.leader.send_replace(false);
        }
    }

    /// Reads every live entry: what changed is applied, what expired is a vanished node.
    async fn poll(&self) {
        let began = Instant::now();
        let nodes = self.cluster.nodes();
        let patience = self.patience();
        let keys = tokio::time::timeout(patience, async {
            nodes
                .keys()
                .await
                .map_err(|e| e.to_string())?
                .try_collect::<Vec<String>>()
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        let keys: HashSet<String> = match keys {
            Ok(Ok(keys)) => keys.into_iter().collect(),
            Ok(Err(err)) => {
                tracing::debug!(%err, "cannot list the nodes bucket");
                return;
            }
            Err(_) => return,
        };
        for key in &keys {
            if key == self.node_id() {
                continue;
            }
            if let Ok(Ok(Some(entry))) = tokio::time::timeout(patience, nodes.entry(key)).await {
                self.apply(&entry);
            }
        }
        let gone: Vec<String> = self
            .state()
            .view
            .iter()
            .filter(|(id, seen)| !keys.contains(*id) && seen.at < began)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            match tokio::time::timeout(patience, nodes.entry(&id)).await {
                // Deleted: the node shut down and said so itself.
                Ok(Ok(Some(e))) if e.operation != Operation::Put => {
                    self.state().view.remove(&id);
                }
                // Expired: the node died.
                Ok(Ok(None)) => {
                    let mut state = self.state();
                    if let Some(seen) = state.view.remove(&id) {
                        tracing::warn!(node = %id, connections = seen.entry.connections.len(), "cluster node {id} is gone: its entry expired");
                        state.vanished.push(Vanished {
                            entry: seen.entry,
                            at: Instant::now(),
                        });
                    }
                }
                _ => {}
            }
        }
    }

    /// Applies an entry of the bucket (from the poll or the watch).
    fn apply(&self, entry: &kv::Entry) {
        if entry.key == self.node_id() {
            return;
        }
        if entry.operation != Operation::Put {
            self.state().view.remove(&entry.key);
            return;
        }
        let node: NodeEntry = match serde_json::from_slice(&entry.value) {
            Ok(node) => node,
            Err(err) => {
                tracing::debug!(key = %entry.key, %err, "an entry of the nodes bucket that is not a node's; skipped");
                return;
            }
        };
        let mine = auth_hash(&self.host.config().gateway.auth);
        let mut state = self.state();
        if node.auth_hash != mine && state.warned.insert(entry.key.clone()) {
            tracing::warn!(other = %entry.key, "cluster node {} has a different auth mode or tokens: a client accepted by one node may be refused by another", entry.key);
        }
        let previous = state.view.get(&entry.key).cloned();
        if let Some(previous) = &previous {
            if previous.revision >= entry.revision {
                return;
            }
            if previous.entry.started_at != node.started_at {
                // Restarted under the same id: the connections of the one before are gone.
                state.vanished.push(Vanished {
                    entry: previous.entry.clone(),
                    at: Instant::now(),
                });
            }
        }
        state.view.insert(
            entry.key.clone(),
            Seen {
                revision: entry.revision,
                at: Instant::now(),
                entry: node,
            },
        );
    }

    /// The leader announces the vanished nodes' connections as left; another node forgets a
    /// vanished node once a live leader other than it is seen (that one announces it), and
    /// keeps it meanwhile (the one that vanished may have been the leader).
    fn settle_vanished(&self, leader: &LeaderSeen) {
        let announce: Vec<NodeEntry> = {
            let mut state = self.state();
            if state.vanished.is_empty() {
                return;
            }
            match leader {
                LeaderSeen::Me => state.vanished.drain(..).map(|v| v.entry).collect(),
                LeaderSeen::Other(id) => {
                    state.vanished.retain(|v| &v.entry.node_id == id);
                    Vec::new()
                }
                LeaderSeen::Unknown => {
                    let keep = self.lease * 3;
                    state.vanished.retain(|v| v.at.elapsed() < keep);
                    Vec::new()
                }
            }
        };
        for node in announce {
            for conn in node.connections {
                self.host.hub().emit(
                    None,
                    &PresenceEvent {
                        conn_id: conn.conn_id,
                        state: PresenceState::Left,
                        client: conn.client,
                        node_id: Some(node.node_id.clone()),
                    },
                );
            }
        }
    }

    /// Follows the bucket's changes as they happen (the poll finds what expired).
    async fn watch_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.cluster.nodes().watch_all().await {
                Ok(mut changes) => {
                    backoff = Duration::from_millis(100);
                    loop {
                        let next = tokio::select! {
                            () = self.stop.cancelled() => return,
                            next = changes.next() => next,
                        };
                        match next {
                            Some(Ok(entry)) => self.apply(&entry),
                            Some(Err(err)) => {
                                tracing::debug!(%err, "the nodes bucket's watch failed; watching again");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(err) => tracing::debug!(%err, "cannot watch the nodes bucket; retrying"),
            }
            tokio::select! {
                () = self.stop.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthMode, TokenConfig};

    fn auth(mode: AuthMode, tokens: &[&str]) -> AuthConfig {
        AuthConfig {
            mode,
            tokens: tokens
                .iter()
                .enumerate()
                .map(|(i, t)| TokenConfig {
                    name: format!("t{i}"),
                    token: t.to_string(),
                    scopes: vec![crate::protocol::Scope::Admin],
                })
                .collect(),
            ..AuthConfig::default()
        }
    }

    #[test]
    fn the_auth_hash_depends_on_the_mode_and_the_set_of_tokens_only() {
        let a = auth_hash(&auth(AuthMode::Token, &["alpha-secret", "beta-secret"]));
        // Order, names and scopes do not matter.
        let mut other = auth(AuthMode::Token, &["beta-secret", "alpha-secret"]);
        other.tokens[0].name = "renamed".into();
        other.tokens[0].scopes = vec![crate::protocol::Scope::Read];
        assert_eq!(a, auth_hash(&other));
        assert_ne!(a, auth_hash(&auth(AuthMode::Token, &["alpha-secret"])));
        assert_ne!(
            a,
            auth_hash(&auth(AuthMode::Token, &["alpha-secret", "gamma-secret"]))
        );
        assert_ne!(
            auth_hash(&auth(AuthMode::None, &[])),
            auth_hash(&auth(AuthMode::Token, &[]))
        );
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        // Never the tokens, nor a hash of one alone.
        assert!(!a.contains("alpha"));
        assert_ne!(a, hex::encode(Sha256::digest(b"alpha-secret")));
    }

    #[test]
    fn a_node_entry_has_the_documented_shape() {
        let entry = NodeEntry {
            node_id: "a".into(),
            addr: "127.0.0.1:18789".into(),
            sessions_owned: 2,
            started_at: 1,
            auth_hash: "h".into(),
            connections: vec![PresenceEntry {
                conn_id: "c1".into(),
                client: None,
                remote_addr: "127.0.0.1:5".into(),
                connected_at: 1,
                last_activity_at: 2,
                node_id: None,
            }],
        };
        let json = serde_json::to_value(&entry).expect("serializes");
        for key in [
            "nodeId",
            "addr",
            "sessionsOwned",
            "startedAt",
            "authHash",
            "connections",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
        assert_eq!(json["connections"][0]["connId"], "c1");
        assert!(json["connections"][0].get("nodeId").is_none());
        let back: NodeEntry = serde_json::from_value(json.clone()).expect("parses back");
        assert_eq!(serde_json::to_value(&back).expect("serializes"), json);
    }
}
