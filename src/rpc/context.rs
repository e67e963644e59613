//! Per-connection state handed to every handler, and the sink a subscription writes to.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::auth::Credential;
use crate::events::{Offered, Outlet};
use crate::protocol::Scope;
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

/// One message waiting for a connection's writer; its bytes count against the connection's
/// budget until the writer has sent it.
pub struct Outbound {
    /// The message.
    pub text: String,
    _bytes: OwnedSemaphorePermit,
}

/// A connection's outbound queue, bounded in messages (`events.subscriber_queue`) and in bytes
/// (`gateway.max_queued_bytes`), shared by responses and notifications.
///
/// A message larger than the whole budget takes all of it, so it is queued alone.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outbound>,
    bytes: Arc<Semaphore>,
    budget: u32,
}

impl Outbox {
    /// A queue of `capacity` messages and `budget_bytes` bytes, and its receiving end.
    pub fn new(capacity: usize, budget_bytes: usize) -> (Self, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let budget = u32::try_from(budget_bytes.max(1)).unwrap_or(u32::MAX);
        let outbox = Self {
            tx,
            bytes: Arc::new(Semaphore::new(budget as usize)),
            budget,
        };
        (outbox, rx)
    }

    fn weight(&self, len: usize) -> u32 {
        u32::try_from(len).unwrap_or(u32::MAX).clamp(1, self.budget)
    }

    /// Queues the message of `len` bytes that `build` makes, if both bounds have room now
    /// (nothing is built when they have not).
    pub fn try_send_with(&self, len: usize, build: impl FnOnce() -> String) -> Offered {
        let Ok(permit) = self.tx.try_reserve() else {
            return if self.tx.is_closed() {
                Offered::Closed
            } else {
                Offered::Full
            };
        };
        let Ok(bytes) = self.bytes.clone().try_acquire_many_owned(self.weight(len)) else {
            return Offered::Full;
        };
        permit.send(Outbound {
            text: build(),
            _bytes: bytes,
        });
        Offered::Sent
    }

    /// Queues `text`, waiting for room (a response waits; the writer drops a peer that stops
    /// reading, which ends the wait).
    pub async fn send(&self, text: String) -> Result<(), SinkClosed> {
        let bytes = self
            .bytes
            .clone()
            .acquire_many_owned(self.weight(text.len()))
            .await
            .map_err(|_| SinkClosed)?;
        self.tx
            .send(Outbound {
                text,
                _bytes: bytes,
            })
            .await
            .map_err(|_| SinkClosed)
    }

    /// Bytes that may still be queued before the budget is spent.
    pub fn room(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Refuses every later message (the connection is closing).
    pub fn close(&self) {
        self.bytes.close();
    }
}

/// WebSocket-only state: the outbound queue and the live subscriptions.
pub struct WsState {
    /// Outbound messages, bounded in count and bytes.
    pub out: Outbox,
    /// Live subscriptions: id → (subscribe method, the scope it needs, cancel).
    pub subscriptions: Mutex<HashMap<String, (String, Scope, CancellationToken)>>,
    /// Cancelled when the connection ends.
    pub closed: CancellationToken,
    /// The close code and reason to send, when the server ends the connection for a reason.
    pub close: Mutex<Option<(u16, String)>>,
}

/// One client connection (for HTTP, the TCP connection carrying the requests).
pub struct Connection {
    /// Gateway-unique id.
    pub id: String,
    /// The peer.
    pub remote_addr: SocketAddr,
    /// The client's address: the peer, or the one a trusted proxy forwarded.
    pub client_ip: std::net::IpAddr,
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
    /// A connection that has just been authenticated.
    pub fn new(
        id: String,
        remote_addr: SocketAddr,
        client_ip: std::net::IpAddr,
        credential: Credential,
        ws: Option<WsState>,
    ) -> Arc<Self> {
        let now = now_ms();
        Arc::new(Self {
            id,
            remote_addr,
            client_ip,
            transport: if ws.is_some() {
                Transport::WebSocket
            } else {
                Transport::Http
            },
            credential,
            connected_at: now,
            last_activity: AtomicU64::new(now),
            client: Mutex::new(None),
            ws,
        })
    }

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
            node_id: None,
        }
    }

    /// Closes a WebSocket connection with `code` and `reason` (no-op over HTTP).
    pub fn close_with(&self, code: u16, reason: impl Into<String>) {
        if let Some(ws) = &self.ws {
            if let Ok(mut close) = ws.close.lock() {
                close.get_or_insert((code, reason.into()));
            }
            ws.closed.cancel();
        }
    }

    /// Ends the subscriptions that need more than `scope` (a token's scope shrank).
    pub fn keep_subscriptions_within(&self, scope: Scope) {
        if let Some(ws) = &self.ws
            && let Ok(mut subs) = ws.subscriptions.lock()
        {
            subs.retain(|_, (_, needed, cancel)| {
                let keep = *needed <= scope;
                if !keep {
                    cancel.cancel();
                }
                keep
            });
        }
    }

    /// Ends every subscription of this connection.
    pub fn cancel_subscriptions(&self) {
        if let Some(ws) = &self.ws
            && let Ok(mut subs) = ws.subscriptions.lock()
        {
            for (_, (_, _, cancel)) in subs.drain() {
                cancel.cancel();
            }
        }
    }
}

/// What every handler receives; `S` is the state of the application that serves it.
pub struct CallContext<S> {
    /// The application's shared state.
    pub gateway: Arc<S>,
    /// The caller's connection.
    pub conn: Arc<Connection>,
    /// The caller's effective scope for this call.
    pub scope: Scope,
}

impl<S> Clone for CallContext<S> {
    fn clone(&self) -> Self {
        Self {
            gateway: self.gateway.clone(),
            conn: self.conn.clone(),
            scope: self.scope,
        }
    }
}

/// The subscription was closed: unsubscribed, or the connection ended.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("subscription closed")]
pub struct SinkClosed;

/// Where a subscription sends its notifications.
pub struct SubscriptionSink {
    id: String,
    prefix: String,
    out: Outbox,
    cancel: CancellationToken,
}

impl SubscriptionSink {
    /// A sink for subscription `id` sending `notification` messages into `out`.
    pub fn new(id: String, notification: &str, out: Outbox, cancel: CancellationToken) -> Self {
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
            sent = self.out.send(msg) => sent,
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
        let len = self.prefix.len() + envelope_json.len() + 2;
        self.out.try_send_with(len, || self.message(envelope_json))
    }
}
