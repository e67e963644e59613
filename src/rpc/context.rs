//! Per-connection state handed to every handler, and the sink a subscription writes to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::auth::Credential;
use super::table::Scope;
use crate::events::{Offered, Outlet};
use crate::gateway::Gateway;
use crate::protocol::{ClientInfo, PresenceEntry};
use crate::util::now_ms;

/// How the client reached the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// One HTTP POST per request; no subscriptions.
    Http,
    /// A WebSocket connection.
    WebSocket,
}

/// WebSocket-only state: the outbound queue and the live subscriptions.
pub struct WsState {
    /// Outbound messages; its capacity is `events.subscriber_queue`.
    pub out: mpsc::Sender<String>,
    /// Live subscriptions: id → (subscribe method, cancel).
    pub subscriptions: Mutex<HashMap<String, (String, CancellationToken)>>,
    /// Cancelled when the connection ends.
    pub closed: CancellationToken,
}

/// One client connection (for HTTP, the TCP connection carrying the requests).
pub struct Connection {
    /// Gateway-unique id.
    pub id: String,
    /// The peer.
    pub remote_addr: SocketAddr,
    /// HTTP or WebSocket.
    pub transport: Transport,
    /// What the client presented when it connected.
    pub credential: Credential,
    /// When it connected.
    pub connected_at: u64,
    /// When it last sent a message.
    pub last_activity: AtomicU64,
    /// What `gateway.hello` said about the client.
    pub client: Mutex<Option<ClientInfo>>,
    /// WebSocket state.
    pub ws: Option<WsState>,
}

impl Connection {
    /// Records activity now.
    pub fn touch(&self) {
        self.last_activity.store(now_ms(), Ordering::Relaxed);
    }

    /// The client info given in `gateway.hello`.
    pub fn client(&self) -> Option<ClientInfo> {
        self.client.lock().map(|c| c.clone()).unwrap_or(None)
    }

    /// This connection as a presence entry.
    pub fn presence(&self) -> PresenceEntry {
        PresenceEntry {
            conn_id: self.id.clone(),
            client: self.client(),
            remote_addr: self.remote_addr.to_string(),
            connected_at: self.connected_at,
            last_activity_at: self.last_activity.load(Ordering::Relaxed),
        }
    }

    /// Ends every subscription of this connection.
    pub fn cancel_subscriptions(&self) {
        if let Some(ws) = &self.ws
            && let Ok(mut subs) = ws.subscriptions.lock()
        {
            for (_, (_, cancel)) in subs.drain() {
                cancel.cancel();
            }
        }
    }
}

/// What every handler receives.
#[derive(Clone)]
pub struct CallContext {
    /// The gateway.
    pub gateway: Arc<Gateway>,
    /// The caller's connection.
    pub conn: Arc<Connection>,
    /// The caller's effective scope for this call.
    pub scope: Scope,
}

/// The subscription was closed: unsubscribed, or the connection ended.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("subscription closed")]
pub struct SinkClosed;

/// Where a subscription sends its notifications.
pub struct SubscriptionSink {
    id: String,
    prefix: String,
    out: mpsc::Sender<String>,
    cancel: CancellationToken,
}

impl SubscriptionSink {
    /// A sink for subscription `id` sending `notification` messages into `out`.
    pub fn new(
        id: String,
        notification: &str,
        out: mpsc::Sender<String>,
        cancel: CancellationToken,
    ) -> Self {
        let mut prefix = String::from("{\"jsonrpc\":\"2.0\",\"method\":");
        prefix.push_str(&serde_json::Value::from(notification).to_string());
        prefix.push_str(",\"params\":{\"subscription\":");
        prefix.push_str(&serde_json::Value::from(id.as_str()).to_string());
        prefix.push_str(",\"result\":");
        Self {
            id,
            prefix,
            out,
            cancel,
        }
    }

    /// The subscription id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The notification message carrying `result_json` (already serialized).
    fn message(&self, result_json: &str) -> String {
        let mut msg = String::with_capacity(self.prefix.len() + result_json.len() + 2);
        msg.push_str(&self.prefix);
        msg.push_str(result_json);
        msg.push_str("}}");
        msg
    }

    /// Sends one notification whose `params.result` is `result_json` (already serialized);
    /// waits while the connection's queue is full.
    pub async fn send_raw(&self, result_json: &str) -> Result<(), SinkClosed> {
        let msg = self.message(result_json);
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(SinkClosed),
            sent = self.out.send(msg) => sent.map_err(|_| SinkClosed),
        }
    }

    /// Like [`send_raw`](Self::send_raw), ignoring unsubscription (for a last message such as
    /// `shutdown`), and giving up after `timeout`.
    pub async fn send_final(&self, result_json: &str, timeout: std::time::Duration) {
        let msg = self.message(result_json);
        let _ = tokio::time::timeout(timeout, self.out.send(msg)).await;
    }

    /// Resolves when the subscription is closed.
    pub async fn closed(&self) {
        self.cancel.cancelled().await
    }
}

impl Outlet for SubscriptionSink {
    /// Queues the notification if the connection's queue has room, without waiting.
    fn offer(&self, envelope_json: &str) -> Offered {
        if self.cancel.is_cancelled() {
            return Offered::Closed;
        }
        match self.out.try_reserve() {
            Ok(permit) => {
                permit.send(self.message(envelope_json));
                Offered::Sent
            }
            Err(mpsc::error::TrySendError::Full(())) => Offered::Full,
            Err(mpsc::error::TrySendError::Closed(())) => Offered::Closed,
        }
    }
}
