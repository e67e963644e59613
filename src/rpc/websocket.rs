//! One WebSocket connection, from the upgrade to the close: the handshake, the reader loop
//! that runs each message as a call, the writer that alone writes to the socket, the
//! keepalive watchdog, and the closing handshake. The frames themselves are `ws.rs`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{BufReader, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Host;
use super::auth::Credential;
use super::context::{Connection, Outbound, Outbox, WsState};
use super::dispatch::handle_message;
use super::http::{Body, json_response};
use super::order::{Sequencer, Ticket};
use super::wire::error_json;
use super::ws::{self, close};
use crate::config::{Config, GatewayConfig};
use crate::error::Error;
use crate::util::now_ms;

/// Whether `req` asks for a WebSocket upgrade.
pub(super) fn is_upgrade_request(req: &Request<Incoming>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

/// Answers an authenticated upgrade request (`101`, or `400` for a broken handshake) and
/// runs the connection in a task of its own once the upgrade completes; `guard` is held
/// until the connection ends (it counts the connection as open).
pub(super) fn upgrade<S: Host, G: Send + Sync + 'static>(
    gateway: Arc<S>,
    mut req: Request<Incoming>,
    credential: Credential,
    peer: SocketAddr,
    client: IpAddr,
    conn_id: Arc<str>,
    guard: Arc<G>,
) -> Response<Body> {
    let headers = req.headers();
    let key = headers.get("sec-websocket-key").map(|k| k.as_bytes());
    let version_ok = headers
        .get("sec-websocket-version")
        .is_some_and(|v| v.as_bytes() == b"13");
    let (Some(key), true) = (key, version_ok) else {
        let mut resp = json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": {"kind": "invalid_request", "message": "WebSocket handshake failed: expected Sec-WebSocket-Key and Sec-WebSocket-Version: 13"}}).to_string(),
        );
        resp.headers_mut().insert(
            "sec-websocket-version",
            header::HeaderValue::from_static("13"),
        );
        return resp;
    };
    let accept = accept_key(key);
    let Ok(accept) = header::HeaderValue::from_str(&accept) else {
        return json_response(StatusCode::BAD_REQUEST, String::new());
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let gw = gateway.clone();
    gateway.connection_tasks().spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(err) => {
                tracing::debug!(%err, "upgrade failed");
                return;
            }
        };
        let (read, write) = tokio::io::split(TokioIo::new(upgraded));
        // Small buffers: an idle connection should cost little.
        let max = gw.config().gateway.max_payload_bytes;
        let reader = ws::Reader::new(BufReader::with_capacity(1024, read), max);
        let writer = ws::Writer::new(BufWriter::with_capacity(2048, write));
        let conn_id = conn_id.to_string();
        run_websocket(gw, writer, reader, credential, peer, client, conn_id).await;
        drop(guard);
    });
    let mut resp = Response::new(Full::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert("sec-websocket-accept", accept);
    resp
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455, section 4.2.2).
fn accept_key(key: &[u8]) -> String {
    use base64::Engine;
    use sha1::Digest;
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

type WsRead = BufReader<tokio::io::ReadHalf<TokioIo<hyper::upgrade::Upgraded>>>;
type WsWrite = BufWriter<tokio::io::WriteHalf<TokioIo<hyper::upgrade::Upgraded>>>;

/// What the writer task sends besides queued messages.
enum Control {
    Pong(Vec<u8>),
}

/// Sends queued messages, pings and pongs; at the end, the close frame. A peer that does not
/// take a write within `send_timeout` is dropped.
async fn write_loop(
    mut writer: ws::Writer<WsWrite>,
    mut out_rx: mpsc::Receiver<Outbound>,
    mut control: mpsc::Receiver<Control>,
    conn: Arc<Connection>,
    stop: CancellationToken,
    ping_interval: Duration,
    send_timeout: Duration,
) {
    let Some(state) = conn.ws.as_ref() else {
        return;
    };
    let closed = &state.closed;
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    loop {
        let sent = tokio::select! {
            biased;
            // First: a busy queue must not hold back the keepalive of a client that only
            // listens (its pongs are all that proves it alive).
            _ = ping.tick() => {
                tokio::time::timeout(send_timeout, async {
                    writer.ping().await?;
                    writer.flush().await
                })
                .await
            }
            Some(Control::Pong(data)) = control.recv() => {
                tokio::time::timeout(send_timeout, async {
                    writer.pong(&data).await?;
                    writer.flush().await
                })
                .await
            }
            msg = out_rx.recv() => {
                let Some(msg) = msg else { break };
                // A peer that stops reading is dropped after the timeout, never left holding
                // a writer (and its queue) forever.
                tokio::time::timeout(send_timeout, async {
                    writer.text(&msg.text).await?;
                    drop(msg);
                    let mut burst = 0;
                    while burst < 64 {
                        let Ok(msg) = out_rx.try_recv() else { break };
                        writer.text(&msg.text).await?;
                        burst += 1;
                    }
                    writer.flush().await
                })
                .await
            }
            _ = stop.cancelled() => break,
        };
        if !matches!(sent, Ok(Ok(()))) {
            closed.cancel();
            return;
        }
    }
    // Drain what was queued before the end (the shutdown event among it), then close.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(msg) = out_rx.try_recv() {
            writer.text(&msg.text).await?;
        }
        let (code, reason) = state
            .close
            .lock()
            .ok()
            .and_then(|c| c.clone())
            .unwrap_or((close::NORMAL, String::new()));
        writer.close(code, &reason).await
    })
    .await;
}

/// One WebSocket connection, in steps: [`open`] it (its state and outbox, and it joins the
/// gateway), start its writer ([`start_writer`]) and its keepalive watchdog
/// ([`start_watchdog`]), read until it ends ([`read_loop`]), then [`end`] it.
async fn run_websocket<S: Host>(
    gateway: Arc<S>,
    writer: ws::Writer<WsWrite>,
    mut reader: ws::Reader<WsRead>,
    credential: Credential,
    peer: SocketAddr,
    client: IpAddr,
    conn_id: String,
) {
    let config = gateway.config();
    let g = &config.gateway;
    let (open, out_rx) = open(&*gateway, &config, credential, peer, client, conn_id);
    let last_seen = Arc::new(AtomicU64::new(now_ms()));
    let ping_interval = Duration::from_millis(g.ping_interval_ms);
    let ping_timeout = g.ping_timeout_ms;
    let writer = start_writer(
        writer,
        out_rx,
        open.conn.clone(),
        ping_interval,
        Duration::from_millis(ping_timeout),
    );
    start_watchdog(
        open.closed.clone(),
        last_seen.clone(),
        ping_interval,
        ping_timeout,
    );
    read_loop(&gateway, &mut reader, &open, &writer.control, &last_seen, g).await;
    end(&*gateway, &open, writer, &mut reader).await;
}

/// An open WebSocket connection, as its reader loop sees it.
struct Open {
    conn: Arc<Connection>,
    /// The connection's outbound queue (responses and notifications alike).
    outbox: Outbox,
    /// Cancelled when the connection must close, whoever decides it.
    closed: CancellationToken,
}

/// The connection's state, with an outbox bounded in messages and bytes, joined to the
/// gateway; returns it and the receiving end of the outbox, for the writer.
fn open<S: Host>(
    gateway: &S,
    config: &Config,
    credential: Credential,
    peer: SocketAddr,
    client: IpAddr,
    conn_id: String,
) -> (Open, mpsc::Receiver<Outbound>) {
    let g = &config.gateway;
    let (outbox, out_rx) = Outbox::new(config.events.subscriber_queue, g.max_queued_bytes);
    let closed = CancellationToken::new();
    let state = WsState {
        out: outbox.clone(),
        subscriptions: std::sync::Mutex::new(Default::default()),
        closed: closed.clone(),
        close: std::sync::Mutex::new(None),
    };
    let conn = Connection::new(conn_id, peer, client, credential, Some(state));
    gateway.join(&conn);
    let open = Open {
        conn,
        outbox,
        closed,
    };
    (open, out_rx)
}

/// The writer task, the channel of its pongs, and what stops it.
struct Writer {
    task: JoinHandle<()>,
    control: mpsc::Sender<Control>,
    stop: CancellationToken,
}

/// Starts the task that alone writes to the socket ([`write_loop`]).
fn start_writer(
    writer: ws::Writer<WsWrite>,
    out_rx: mpsc::Receiver<Outbound>,
    conn: Arc<Connection>,
    ping_interval: Duration,
    send_timeout: Duration,
) -> Writer {
    let (control, control_rx) = mpsc::channel::<Control>(4);
    let stop = CancellationToken::new();
    let task = tokio::spawn(write_loop(
        writer,
        out_rx,
        control_rx,
        conn,
        stop.clone(),
        ping_interval,
        send_timeout,
    ));
    Writer {
        task,
        control,
        stop,
    }
}

/// Starts the watchdog: a peer silent past the ping timeout is dropped.
fn start_watchdog(
    closed: CancellationToken,
    last_seen: Arc<AtomicU64>,
    ping_interval: Duration,
    ping_timeout: u64,
) {
    tokio::spawn(async move {
        let mut check =
            tokio::time::interval(ping_interval.min(Duration::from_millis(ping_timeout)));
        loop {
            tokio::select! {
                _ = closed.cancelled() => return,
                _ = check.tick() => {
                    if now_ms().saturating_sub(last_seen.load(Ordering::Relaxed)) > ping_timeout {
                        tracing::debug!("websocket peer silent past the ping timeout; closing");
                        closed.cancel();
                        return;
                    }
                }
            }
        }
    });
}

/// Reads the peer's messages until it closes, the connection is closed or the gateway shuts
/// down. Each data message runs as a call ([`spawn_call`]) once one of the connection's
/// `max_in_flight_per_connection` permits is free, with its place in the connection's order;
/// pings are answered through the writer; a peer's close waits (2 s at most) for the answers
/// to the calls it sent before it.
async fn read_loop<S: Host>(
    gateway: &Arc<S>,
    reader: &mut ws::Reader<WsRead>,
    open: &Open,
    control: &mpsc::Sender<Control>,
    last_seen: &AtomicU64,
    g: &GatewayConfig,
) {
    let Open {
        conn,
        outbox,
        closed,
    } = open;
    let in_flight = Arc::new(Semaphore::new(g.max_in_flight_per_connection));
    let mut order = Sequencer::default();
    loop {
        let received = tokio::select! {
            r = reader.next() => r,
            _ = closed.cancelled() => break,
            _ = gateway.closing().cancelled() => {
                conn.close_with(close::GOING_AWAY, "the gateway is shutting down");
                break;
            }
        };
        last_seen.store(now_ms(), Ordering::Relaxed);
        match received {
            Ok(ws::Incoming::Data(body)) => {
                let permit = tokio::select! {
                    p = in_flight.clone().acquire_owned() => p,
                    _ = closed.cancelled() => break,
                };
                let Ok(permit) = permit else { break };
                spawn_call(gateway, open, body, order.ticket(), permit);
            }
            Ok(ws::Incoming::TooLarge { size }) => {
                let limit = g.max_payload_bytes;
                let err = error_json("null", &Error::PayloadTooLarge { size, limit });
                if outbox.send(err).await.is_err() {
                    break;
                }
            }
            Ok(ws::Incoming::Ping(payload)) => {
                let _ = control.try_send(Control::Pong(payload));
            }
            Ok(ws::Incoming::Pong) => {}
            Ok(ws::Incoming::Close(_)) => {
                // The calls the peer sent before its close are still answered.
                let all = u32::try_from(g.max_in_flight_per_connection).unwrap_or(u32::MAX);
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), in_flight.acquire_many(all)).await;
                break;
            }
            Err(err) => {
                tracing::debug!(%err, conn = %conn.id, "websocket read ended");
                if let ws::ReadError::TooLarge { size, limit } = &err {
                    let json = error_json(
                        "null",
                        &Error::PayloadTooLarge {
                            size: *size,
                            limit: *limit,
                        },
                    );
                    let _ = outbox.try_send_with(json.len(), || json);
                }
                if let Some(code) = err.close_code() {
                    conn.close_with(code, err.to_string());
                }
                break;
            }
        }
    }
}

/// Runs one message in a task of its own, queues its answer, then starts the subscriptions
/// it accepted. The call's permit is held until its answer is queued, so a peer that stops
/// reading stops being read.
fn spawn_call<S: Host>(
    gateway: &Arc<S>,
    open: &Open,
    body: Vec<u8>,
    ticket: Ticket,
    permit: OwnedSemaphorePermit,
) {
    let gw = gateway.clone();
    let conn = open.conn.clone();
    let out = open.outbox.clone();
    let closed_for_call = open.closed.clone();
    tokio::spawn(async move {
        let mut reply = handle_message(&gw, &conn, &body, Some(ticket)).await;
        drop(body);
        if let Some(json) = reply.json.take() {
            // Waits for room in the connection's byte budget.
            let sent = tokio::select! {
                r = out.send(json) => r.is_ok(),
                _ = closed_for_call.cancelled() => false,
            };
            if !sent {
                return;
            }
        }
        reply.start_subscriptions(&*gw);
        drop(permit);
    });
}

/// Ends the connection: its subscriptions are cancelled, it leaves the gateway, the writer
/// sends what is queued and the close frame (aborted past 3 s), then [`linger`].
async fn end<S: Host>(
    gateway: &S,
    open: &Open,
    mut writer: Writer,
    reader: &mut ws::Reader<WsRead>,
) {
    open.closed.cancel();
    open.conn.cancel_subscriptions();
    gateway.leave(&open.conn);
    writer.stop.cancel();
    let abort = writer.task.abort_handle();
    if tokio::time::timeout(Duration::from_secs(3), &mut writer.task)
        .await
        .is_err()
    {
        abort.abort();
    }
    linger(reader).await;
}

/// The closing handshake: read (and drop) what the peer still sends until its close, so
/// that unread bytes do not turn our close into a reset that loses the close frame.
async fn linger(reader: &mut ws::Reader<WsRead>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match reader.next().await {
                Ok(ws::Incoming::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_of_the_rfc_example() {
        // RFC 6455, section 1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
