//! Cluster mode in the gateway: its node in the nodes bucket (presence and status across the
//! nodes), the duties only the leader has (cron jobs, outgoing webhooks), and the calls
//! refused while NATS is unreachable. Without `[cluster]` the node is its own leader and
//! nothing here changes a thing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::nodes::{NodeHost, Nodes};
use crate::config::Config;
use crate::error::Error;
use crate::events::EventHub;
use crate::protocol::{ClusterNodeStatus, ClusterStatus, PresenceEntry};
use crate::rpc::MethodDescriptor;

use super::{Gateway, NodeParts};

/// The core methods that keep working while NATS is unreachable: each reads or changes only
/// this node's own state (its configuration, logs, connections, local catalogs, the local
/// event hub), as every unsubscribe does. Every other core method needs the state the nodes
/// share and is refused with `-32025` (`retryable`) meanwhile; methods of plugins are not.
pub const LOCAL_METHODS: &[&str] = &[
    "gateway.hello",
    "gateway.health",
    "gateway.status",
    "gateway.presence",
    "rpc.discover",
    "config.get",
    "config.schema",
    "config.patch",
    "logs.tail",
    "events.subscribe",
    "models.list",
    "tools.catalog",
    "agents.list",
    "mcp.list",
    "plugins.list",
    "cron.list",
];

impl NodeHost for Gateway {
    fn hub(&self) -> &Arc<EventHub> {
        Gateway::hub(self)
    }
    fn config(&self) -> Arc<Config> {
        Gateway::config(self)
    }
    fn local_presence(&self) -> Vec<PresenceEntry> {
        Gateway::local_presence(self)
    }
}

impl Gateway {
    /// Cluster mode's nodes (this node's entry, the others, the leader lease); `None` for one
    /// process.
    pub fn nodes(&self) -> Option<&Arc<Nodes>> {
        self.nodes.get().map(|p| &p.nodes)
    }

    /// Whether this node runs the cluster's cron jobs and outgoing webhooks now (always for
    /// one process).
    pub fn is_leader(&self) -> bool {
        self.nodes().is_none_or(|n| n.is_leader())
    }

    /// `gateway.status.cluster`: this node and the others alive; `None` for one process.
    pub fn cluster_status(&self) -> Option<ClusterStatus> {
        let cluster = self.cluster()?;
        let mut nodes: Vec<ClusterNodeStatus> = Vec::new();
        if let Some(n) = self.nodes() {
            let me = n.entry();
            nodes.push(ClusterNodeStatus {
                node_id: me.node_id,
                addr: me.addr,
                sessions_owned: me.sessions_owned as u64,
            });
            nodes.extend(n.others().into_iter().map(|o| ClusterNodeStatus {
                node_id: o.node_id,
                addr: o.addr,
                sessions_owned: o.sessions_owned as u64,
            }));
        }
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Some(ClusterStatus {
            node_id: cluster.node_id().to_string(),
            nodes,
            nats_url: cluster.nats_url(),
        })
    }

    /// The connections of the other live nodes, each with its node id.
    pub(super) fn remote_presence(&self) -> Vec<PresenceEntry> {
        let Some(nodes) = self.nodes() else {
            return Vec::new();
        };
        nodes
            .others()
            .into_iter()
            .flat_map(|node| {
                let id = node.node_id;
                node.connections.into_iter().map(move |mut c| {
                    c.node_id = Some(id.clone());
                    c
                })
            })
            .collect()
    }

    /// A connection came or went: the node's entry is put again soon.
    pub(super) fn node_changed(&self) {
        if let Some(nodes) = self.nodes() {
            nodes.connections_changed();
        }
    }

    /// Cluster mode, NATS unreachable: the refusal of a core method that needs it.
    pub(super) fn nats_unavailable(&self, desc: &MethodDescriptor<Gateway>) -> Option<Error> {
        let cluster = self.cluster()?;
        let local = LOCAL_METHODS.contains(&&*desc.name)
            || matches!(desc.kind, crate::rpc::MethodKind::Unsubscribe { .. });
        if cluster.connected() || desc.owner != "core" || local {
            return None;
        }
        Some(Error::Unavailable {
            message: format!(
                "NATS is unreachable ({}): `{}` needs the state the cluster's nodes share; retry when the connection is back",
                cluster.nats_url(),
                desc.name
            ),
            retryable: true,
        })
    }

    /// Cluster mode: puts this node's entry and tries for the leader lease once. Whether the
    /// leader's duties start now (always for one process).
    pub(super) async fn start_node(self: &Arc<Self>, addr: SocketAddr) -> bool {
        let Some(cluster) = self.cluster().cloned() else {
            return true;
        };
        // The sessions this node owns: the session leases held.
        let weak = Arc::downgrade(self);
        let sessions_owned: crate::cluster::nodes::SessionsOwned =
            Arc::new(move || weak.upgrade().map_or(0, |gw| gw.sessions_owned()));
        let nodes = Nodes::start(cluster, self.clone(), addr.to_string(), sessions_owned).await;
        let leader = nodes.is_leader();
        let _ = self.nodes.set(NodeParts {
            nodes,
            duties: tokio::sync::Mutex::new(()),
        });
        leader
    }

    /// Starts the outgoing webhooks (the leader's, or one process's).
    pub(super) fn start_webhooks(self: &Arc<Self>) {
        let webhooks = crate::webhooks::Webhooks::start(self.clone());
        if let Ok(mut slot) = self.webhooks.lock() {
            *slot = Some(webhooks);
        }
    }

    /// Stops the outgoing webhooks, if they run.
    pub(super) async fn stop_webhooks(&self) {
        let webhooks = self.webhooks.lock().ok().and_then(|mut w| w.take());
        if let Some(webhooks) = webhooks {
            webhooks.stop().await;
        }
    }

    /// Cluster mode: from now on starts the leader's duties when the node takes the leader
    /// lease and stops them when it loses it; `leading` says whether they run now.
    pub(super) fn follow_leadership(self: &Arc<Self>, leading: bool) {
        if let Some(nodes) = self.nodes() {
            tokio::spawn(follow(self.clone(), nodes.leadership(), leading));
        }
    }

    /// Waits for a start or stop of the leader's duties in progress; none starts after it
    /// (shutdown has begun).
    pub(super) async fn leader_duties_settled(&self) {
        if let Some(parts) = self.nodes.get() {
            let _settled = parts.duties.lock().await;
        }
    }

    /// Shutdown, the last step before the NATS connection goes: the events of the connections
    /// just closed reach the stream, then the node gives the leader lease up and deletes its
    /// entry.
    pub(super) async fn stop_node(&self) {
        let Some(parts) = self.nodes.get() else {
            return;
        };
        if let Some(cluster) = self.cluster.get()
            && !cluster.relay.flush(Duration::from_secs(2)).await
        {
            tracing::warn!("some events did not reach the event stream within 2 s");
        }
        parts.nodes.stop().await;
    }
}

/// Starts and stops the leader's duties as the node takes and loses the lease.
async fn follow(gw: Arc<Gateway>, mut leadership: watch::Receiver<bool>, mut leading: bool) {
    loop {
        let want = *leadership.borrow_and_update();
        if want != leading {
            let Some(parts) = gw.nodes.get() else { return };
            let _duties = parts.duties.lock().await;
            if gw.is_shutting_down() {
                return;
            }
            if want {
                gw.start_webhooks();
                gw.cron().start(gw.clone());
            } else {
                gw.cron().stop().await;
                gw.stop_webhooks().await;
            }
            leading = want;
        }
        tokio::select! {
            changed = leadership.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = gw.shutting_down.cancelled() => return,
        }
    }
}
