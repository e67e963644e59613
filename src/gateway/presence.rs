//! Presence (who is connected), health (what `Health` counts, published at most once a
//! second) and ticks.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::protocol::{Health, PresenceEntry, PresenceEvent, PresenceState};
use crate::rpc::Connection;

use super::Gateway;

impl Gateway {
    /// The gateway's health now.
    pub fn health(&self) -> Health {
        Health {
            ok: true,
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: self.uptime_ms(),
            connections: self.connections.lock().map(|c| c.len() as u64).unwrap_or(0),
            sessions: self.store.len() as u64,
            active_runs: self.active_runs.load(Ordering::Relaxed),
        }
    }
    /// What `/metrics` reads at each scrape: open connections (TCP, HTTP and WebSocket), live
    /// subscriptions, active runs and the login throttle's counts.
    pub fn metric_gauges(&self) -> crate::metrics::Gauges {
        let subscriptions = self
            .connections
            .lock()
            .map(|c| {
                c.values()
                    .filter_map(|conn| conn.ws.as_ref())
                    .map(|ws| ws.subscriptions.lock().map_or(0, |s| s.len() as u64))
                    .sum()
            })
            .unwrap_or(0);
        crate::metrics::Gauges {
            connections: self.open_connections.load(Ordering::Relaxed) as u64,
            subscriptions,
            runs_active: self.active_runs.load(Ordering::Relaxed),
            auth_lockouts: self.throttle().lockouts() as u64,
            auth_failures: self.throttle().failures_total(),
        }
    }

    /// Sets the active run count and schedules a `health` event.
    pub fn set_active_runs(&self, n: u64) {
        self.active_runs.store(n, Ordering::Relaxed);
        self.health_changed();
    }

    /// Something `Health` counts changed; a `health` event follows within a second.
    pub fn health_changed(&self) {
        self.health_dirty.notify_one();
    }

    /// Connected WebSocket clients: this node's, and in cluster mode every other live node's,
    /// each with its node id.
    pub fn presence(&self) -> Vec<PresenceEntry> {
        let mut entries = self.local_presence();
        if let Some(cluster) = self.cluster() {
            for entry in &mut entries {
                entry.node_id = Some(cluster.node_id().to_string());
            }
            entries.extend(self.remote_presence());
        }
        entries
    }

    /// This node's WebSocket clients.
    pub fn local_presence(&self) -> Vec<PresenceEntry> {
        self.connections
            .lock()
            .map(|c| c.values().map(|conn| conn.presence()).collect())
            .unwrap_or_default()
    }

    /// Cluster mode: this node's id, which its presence events carry.
    fn presence_node(&self) -> Option<String> {
        self.cluster().map(|c| c.node_id().to_string())
    }

    /// Adds a WebSocket connection to presence.
    pub fn join(&self, conn: &Arc<Connection>) {
        if let Ok(mut conns) = self.connections.lock() {
            conns.insert(conn.id.clone(), conn.clone());
        }
        self.hub.emit(
            None,
            &PresenceEvent {
                conn_id: conn.id.clone(),
                state: PresenceState::Joined,
                client: None,
                node_id: self.presence_node(),
            },
        );
        self.node_changed();
        self.health_changed();
    }

    /// Removes a WebSocket connection from presence.
    pub fn leave(&self, conn: &Connection) {
        let removed = self
            .connections
            .lock()
            .map(|mut c| c.remove(&conn.id).is_some())
            .unwrap_or(false);
        if removed {
            self.hub.emit(
                None,
                &PresenceEvent {
                    conn_id: conn.id.clone(),
                    state: PresenceState::Left,
                    client: conn.client(),
                    node_id: self.presence_node(),
                },
            );
            self.node_changed();
            self.health_changed();
        }
    }

    /// A client named itself in `gateway.hello`.
    pub fn client_named(&self, conn: &Connection) {
        let known = self
            .connections
            .lock()
            .map(|c| c.contains_key(&conn.id))
            .unwrap_or(false);
        if known {
            self.hub.emit(
                None,
                &PresenceEvent {
                    conn_id: conn.id.clone(),
                    state: PresenceState::Joined,
                    client: conn.client(),
                    node_id: self.presence_node(),
                },
            );
            self.node_changed();
        }
    }

    /// Publishes `tick` every `gateway.tick_interval_ms` (read anew each time, so it is hot).
    pub(super) async fn tick_loop(self: Arc<Self>) {
        loop {
            let interval = Duration::from_millis(self.config().gateway.tick_interval_ms);
            tokio::select! {
                _ = self.shutting_down.cancelled() => return,
                _ = tokio::time::sleep(interval) => self.hub.tick(),
            }
        }
    }

    /// Publishes `health` when it changed, at most once a second.
    pub(super) async fn health_loop(self: Arc<Self>) {
        let mut last: Option<Health> = None;
        loop {
            tokio::select! {
                _ = self.shutting_down.cancelled() => return,
                _ = self.health_dirty.notified() => {}
            }
            let health = self.health();
            let changed = last.as_ref().is_none_or(|l| {
                (l.connections, l.sessions, l.active_runs)
                    != (health.connections, health.sessions, health.active_runs)
            });
            if changed {
                self.hub.emit(None, &health);
                last = Some(health);
            }
            tokio::select! {
                _ = self.shutting_down.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
