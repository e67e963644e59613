//! The transport: one TCP port serving HTTP (JSON-RPC POST, health routes) and WebSocket.
//!
//! Every request passes the failed-login throttle, the browser checks (Origin, and Host in mode
//! `none`) and authentication before any JSON-RPC parsing; refused upgrades never become
//! WebSockets. Connections count against `gateway.max_connections` from the moment they are
//! accepted (the limit is capped below the descriptor limit), and past it only the health
//! routes are served.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::Host;
use super::auth::{self, Credential, Refusal};
use super::context::{Connection, Outbound, Outbox, WsState};
use super::dispatch::{Sequencer, error_json, handle_message};
use super::table::Scope;
use super::ws::{self, close};
use crate::error::Error;
use crate::util::now_ms;

/// Connections past `gateway.max_connections` that are still read, so a health probe is
/// answered when the gateway is full; past these, new connections are closed at once.
pub const OVERFLOW_CONNECTIONS: usize = 64;

/// How long a connection past the limit may take to send its request line and headers.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

type Body = Full<Bytes>;

/// Counts a connection as open (for `gateway.max_connections`) while it lives.
struct OpenGuard<S: Host>(Arc<S>);
impl<S: Host> Drop for OpenGuard<S> {
    fn drop(&mut self) {
        self.0.open_connections().fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections until the gateway closes.
pub async fn serve<S: Host>(gateway: Arc<S>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = gateway.closing().cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Counted from the accept, handshakes included.
                let open = gateway.open_connections().fetch_add(1, Ordering::AcqRel) + 1;
                let guard = OpenGuard(gateway.clone());
                let max = gateway.max_connections();
                if open > max + OVERFLOW_CONNECTIONS {
                    // Full even for health probes: the descriptor goes back at once.
                    drop(stream);
                    drop(guard);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let gw = gateway.clone();
                gateway.connection_tasks().spawn(serve_connection(
                    gw,
                    stream,
                    peer,
                    open > max,
                    guard,
                ));
            }
            Err(err) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection<S: Host>(
    gateway: Arc<S>,
    stream: TcpStream,
    peer: SocketAddr,
    over_limit: bool,
    guard: OpenGuard<S>,
) {
    // Held by the HTTP connection and, after an upgrade, by the WebSocket task too.
    let guard = Arc::new(guard);
    let config = gateway.config();
    if config.gateway.send_buffer_bytes > 0 {
        // A bounded kernel buffer keeps a non-reading client's backlog bounded (and small).
        let _ =
            socket2::SockRef::from(&stream).set_send_buffer_size(config.gateway.send_buffer_bytes);
    }
    let conn_id: Arc<str> = gateway.next_conn_id().into();
    let gw = gateway.clone();
    let service = service_fn(move |req| {
        let gw = gw.clone();
        let conn_id = conn_id.clone();
        let guard = guard.clone();
        async move { Ok::<_, Infallible>(route(gw, peer, conn_id, over_limit, guard, req).await) }
    });
    let header_timeout = if over_limit {
        OVERFLOW_HEADER_TIMEOUT
    } else {
        Duration::from_secs(10)
    };
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(!over_limit)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = gateway.closing().cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn refusal_response(refusal: Refusal) -> Response<Body> {
    match refusal {
        Refusal::Unauthorized(message) => {
            let mut resp = json_response(
                StatusCode::UNAUTHORIZED,
                json!({"error": {"kind": "unauthorized", "message": message}}).to_string(),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            resp
        }
        Refusal::Forbidden(message) => json_response(
            StatusCode::FORBIDDEN,
            json!({"error": {"kind": "forbidden", "message": message}}).to_string(),
        ),
    }
}

/// HTTP 429 for a locked-out address.
fn throttled_response(retry_after_ms: u64) -> Response<Body> {
    let mut resp = json_response(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"error": {"kind": "rate_limited", "retryAfterMs": retry_after_ms,
            "message": "too many failed logins from this address; retry later"}})
        .to_string(),
    );
    let secs = retry_after_ms.div_ceil(1000).max(1);
    if let Ok(value) = header::HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, value);
    }
    resp
}

/// The client's address: the peer's, or, when the peer is a trusted proxy, the last address
/// of `X-Forwarded-For` that is not one of the trusted proxies.
fn client_ip(trusted: &[IpAddr], peer: IpAddr, headers: &http::HeaderMap) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

/// `GET`/`HEAD /healthz` and `/readyz`, whatever the connection count.
fn health_route<S: Host>(gateway: &S, req: &Request<Incoming>) -> Option<Response<Body>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return None;
    }
    let (status, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, json!({"ok": true})),
        "/readyz" => {
            let checks = gateway.readiness();
            let ready = checks.values().all(|ok| *ok);
            let failing: Vec<&str> = checks
                .iter()
                .filter(|(_, ok)| !**ok)
                .map(|(k, _)| *k)
                .collect();
            let mut body = json!({"ready": ready, "checks": checks});
            if !ready {
                body["failing"] = json!(failing);
            }
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, body)
        }
        _ => return None,
    };
    let body = body.to_string();
    if req.method() == Method::HEAD {
        let mut resp = json_response(status, String::new());
        resp.headers_mut().insert(
            header::CONTENT_LENGTH,
            header::HeaderValue::from(body.len()),
        );
        return Some(resp);
    }
    Some(json_response(status, body))
}

async fn route<S: Host>(
    gateway: Arc<S>,
    peer: SocketAddr,
    conn_id: Arc<str>,
    over_limit: bool,
    guard: Arc<OpenGuard<S>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let config = gateway.config();
    let local = gateway
        .local_addr()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    if let Err(refusal) = auth::check_browser(&config, local.ip(), local.port(), req.headers()) {
        return refusal_response(refusal);
    }
    // Liveness and readiness probes are answered even when the gateway is full.
    if let Some(resp) = health_route(&*gateway, &req) {
        return resp;
    }
    if over_limit {
        let mut resp = json_response(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": {"kind": "busy", "message": "too many connections (gateway.max_connections)"}}).to_string(),
        );
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return resp;
    }
    let path = req.uri().path();
    if !matches!(path, "/" | "/openrpc.json") {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"error": {"kind": "not_found", "message": format!("no route {path}: JSON-RPC is served at /")}}).to_string(),
        );
    }
    let client = client_ip(&config.gateway.trusted_proxies, peer.ip(), req.headers());
    let limits = super::throttle::Limits::from(&config.gateway.auth);
    let throttle = gateway.throttle();
    if let Some(retry_after_ms) = throttle.locked_for(&limits, client, now_ms()) {
        return throttled_response(retry_after_ms);
    }
    let token = auth::presented_token(req.headers(), req.uri().query());
    let tokens = gateway.tokens();
    let credential = match tokens.authenticate(token.as_deref()) {
        Ok(c) => c,
        Err(refusal) => {
            if let Some(lock) = throttle.failed(&limits, client, now_ms()) {
                tracing::warn!(
                    client = %client,
                    failures = lock.failures,
                    window_ms = limits.window_ms,
                    total_failures = lock.total,
                    lockout_ms = lock.lockout_ms,
                    "too many failed logins: address locked out"
                );
            }
            return refusal_response(refusal);
        }
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/openrpc.json") => {
            let scope = tokens.scope(&credential);
            if scope.is_none_or(|s| s < Scope::Read) {
                return refusal_response(Refusal::Unauthorized("the token is not valid"));
            }
            json_response(StatusCode::OK, gateway.table().openrpc().to_string())
        }
        (&Method::POST, "/") => {
            let conn = Connection::new(conn_id.to_string(), peer, client, credential, None);
            let g = &config.gateway;
            http_rpc(
                gateway,
                conn,
                req,
                g.max_payload_bytes,
                Duration::from_millis(g.body_timeout_ms),
            )
            .await
        }
        (&Method::GET, "/") if is_upgrade_request(&req) => {
            upgrade(gateway, req, credential, peer, client, conn_id, guard)
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": {"kind": "invalid_request", "message": "POST a JSON-RPC request to /, or upgrade to WebSocket"}}).to_string(),
        ),
    }
}

/// Whether `req` asks for a WebSocket upgrade.
fn is_upgrade_request(req: &Request<Incoming>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

async fn http_rpc<S: Host>(
    gateway: Arc<S>,
    conn: Arc<Connection>,
    req: Request<Incoming>,
    limit: usize,
    body_timeout: Duration,
) -> Response<Body> {
    let too_large = |size| {
        json_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            error_json("null", &Error::PayloadTooLarge { size, limit }),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(size) = declared
        && size > limit
    {
        return too_large(size);
    }
    let read = tokio::time::timeout(body_timeout, Limited::new(req.into_body(), limit).collect());
    let Ok(read) = read.await else {
        let mut resp = json_response(
            StatusCode::REQUEST_TIMEOUT,
            error_json(
                "null",
                &Error::InvalidRequest(format!(
                    "the request body did not arrive within {} ms (gateway.body_timeout_ms)",
                    body_timeout.as_millis()
                )),
            ),
        );
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return resp;
    };
    let body = match read {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return too_large(declared.unwrap_or(limit + 1));
            }
            return json_response(
                StatusCode::BAD_REQUEST,
                error_json(
                    "null",
                    &Error::Parse(format!("cannot read the body: {err}")),
                ),
            );
        }
    };
    // Spawned, so a client that hangs up mid-call cannot cut a store change in half.
    let reply =
        match tokio::spawn(async move { handle_message(&gateway, &conn, &body, None).await }).await
        {
            Ok(reply) => reply,
            Err(_) => {
                return json_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    error_json("null", &Error::internal("the call failed unexpectedly")),
                );
            }
        };
    match reply.json {
        Some(json) => json_response(StatusCode::OK, json),
        None => {
            let mut resp = Response::new(Full::default());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            resp
        }
    }
}

fn upgrade<S: Host>(
    gateway: Arc<S>,
    mut req: Request<Incoming>,
    credential: Credential,
    peer: SocketAddr,
    client: IpAddr,
    conn_id: Arc<str>,
    guard: Arc<OpenGuard<S>>,
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
    let last_seen = Arc::new(std::sync::atomic::AtomicU64::new(now_ms()));
    let ping_interval = Duration::from_millis(g.ping_interval_ms);
    let ping_timeout = g.ping_timeout_ms;
    let (control_tx, control_rx) = mpsc::channel::<Control>(4);
    let stop_writer = CancellationToken::new();
    let writer = tokio::spawn(write_loop(
        writer,
        out_rx,
        control_rx,
        conn.clone(),
        stop_writer.clone(),
        ping_interval,
        Duration::from_millis(ping_timeout),
    ));

    // Watchdog: a peer silent past the ping timeout is dropped.
    {
        let closed = closed.clone();
        let last_seen = last_seen.clone();
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
                let ticket = order.ticket();
                let gw = gateway.clone();
                let conn = conn.clone();
                let out = outbox.clone();
                let closed_for_call = closed.clone();
                tokio::spawn(async move {
                    let mut reply = handle_message(&gw, &conn, &body, Some(ticket)).await;
                    drop(body);
                    if let Some(json) = reply.json.take() {
                        // Waits for room in the connection's byte budget; the call's permit is
                        // held meanwhile, so a peer that stops reading stops being read.
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
            Ok(ws::Incoming::TooLarge { size }) => {
                let limit = g.max_payload_bytes;
                let err = error_json("null", &Error::PayloadTooLarge { size, limit });
                if outbox.send(err).await.is_err() {
                    break;
                }
            }
            Ok(ws::Incoming::Ping(payload)) => {
                let _ = control_tx.try_send(Control::Pong(payload));
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
    closed.cancel();
    conn.cancel_subscriptions();
    gateway.leave(&conn);
    stop_writer.cancel();
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_secs(3), writer)
        .await
        .is_err()
    {
        abort.abort();
    }
    // The closing handshake: read (and drop) what the peer still sends until its close, so
    // that unread bytes do not turn our close into a reset that loses the close frame.
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
