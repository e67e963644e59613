//! The transport: one TCP port serving HTTP (JSON-RPC POST, health routes) and WebSocket.
//!
//! Every request passes the browser checks (Origin, and Host in mode `none`) and
//! authentication before any JSON-RPC parsing; refused upgrades never become WebSockets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::io::{BufReader, BufWriter};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::compat::TokioAsyncReadCompatExt;
use tokio_util::sync::CancellationToken;

use super::auth::{self, Credential, Refusal};
use super::context::{Connection, Transport, WsState};
use super::dispatch::{error_json, handle_message};
use super::table::Scope;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::util::now_ms;

type Body = Full<Bytes>;

/// Counts a connection as open (for `gateway.max_connections`) while it lives.
struct OpenGuard(Arc<Gateway>);
impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections().fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts connections until the gateway closes.
pub async fn serve(gateway: Arc<Gateway>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = gateway.closing().cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let gw = gateway.clone();
                gateway
                    .connection_tasks()
                    .spawn(serve_connection(gw, stream, peer));
            }
            Err(err) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_connection(gateway: Arc<Gateway>, stream: TcpStream, peer: SocketAddr) {
    let open = gateway.open_connections().fetch_add(1, Ordering::AcqRel) + 1;
    // Held by the HTTP connection and, after an upgrade, by the WebSocket task too.
    let guard = Arc::new(OpenGuard(gateway.clone()));
    let config = gateway.config();
    let over_limit = open > config.gateway.max_connections;
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
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
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

async fn route(
    gateway: Arc<Gateway>,
    peer: SocketAddr,
    conn_id: Arc<str>,
    over_limit: bool,
    guard: Arc<OpenGuard>,
    req: Request<Incoming>,
) -> Response<Body> {
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
    let config = gateway.config();
    let local = gateway
        .local_addr()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    if let Err(refusal) = auth::check_browser(&config, local.ip(), local.port(), req.headers()) {
        return refusal_response(refusal);
    }
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/healthz") => {
            return json_response(StatusCode::OK, json!({"ok": true}).to_string());
        }
        (&Method::GET, "/readyz") => {
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
            return json_response(status, body.to_string());
        }
        (_, "/" | "/openrpc.json") => {}
        _ => {
            return json_response(
                StatusCode::NOT_FOUND,
                json!({"error": {"kind": "not_found", "message": format!("no route {path}: JSON-RPC is served at /")}}).to_string(),
            );
        }
    }
    let token = auth::presented_token(req.headers(), req.uri().query());
    let tokens = gateway.tokens();
    let credential = match tokens.authenticate(token.as_deref()) {
        Ok(c) => c,
        Err(refusal) => return refusal_response(refusal),
    };
    let connection = |transport, ws| {
        Arc::new(Connection {
            id: conn_id.to_string(),
            remote_addr: peer,
            transport,
            credential: credential.clone(),
            connected_at: now_ms(),
            last_activity: AtomicU64::new(now_ms()),
            client: std::sync::Mutex::new(None),
            ws,
        })
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
            let conn = connection(Transport::Http, None);
            http_rpc(gateway, conn, req, config.gateway.max_payload_bytes).await
        }
        (&Method::GET, "/") if soketto::handshake::http::is_upgrade_request(&req) => {
            upgrade(gateway, req, credential, peer, conn_id, guard)
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": {"kind": "invalid_request", "message": "POST a JSON-RPC request to /, or upgrade to WebSocket"}}).to_string(),
        ),
    }
}

async fn http_rpc(
    gateway: Arc<Gateway>,
    conn: Arc<Connection>,
    req: Request<Incoming>,
    limit: usize,
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
    let body = match Limited::new(req.into_body(), limit).collect().await {
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
        match tokio::spawn(async move { handle_message(&gateway, &conn, &body).await }).await {
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

fn upgrade(
    gateway: Arc<Gateway>,
    mut req: Request<Incoming>,
    credential: Credential,
    peer: SocketAddr,
    conn_id: Arc<str>,
    guard: Arc<OpenGuard>,
) -> Response<Body> {
    let mut server = soketto::handshake::http::Server::new();
    let response = match server.receive_request(&req) {
        Ok(response) => response,
        Err(err) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": {"kind": "invalid_request", "message": format!("WebSocket handshake failed: {err}")}}).to_string(),
            );
        }
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
        let io = TokioIo::new(upgraded).compat();
        // Small buffers: an idle connection should cost little (soketto buffers frames itself).
        let stream = BufReader::with_capacity(1024, BufWriter::with_capacity(2048, io));
        let mut builder = server.into_builder(stream);
        builder.set_max_message_size(gw.config().gateway.max_payload_bytes);
        let (sender, receiver) = builder.finish();
        run_websocket(gw, sender, receiver, credential, peer, conn_id).await;
        drop(guard);
    });
    response.map(|()| Full::default())
}

type WsIo = BufReader<BufWriter<tokio_util::compat::Compat<TokioIo<hyper::upgrade::Upgraded>>>>;

async fn run_websocket(
    gateway: Arc<Gateway>,
    mut sender: soketto::Sender<WsIo>,
    mut receiver: soketto::Receiver<WsIo>,
    credential: Credential,
    peer: SocketAddr,
    conn_id: Arc<str>,
) {
    let config = gateway.config();
    let (out_tx, mut out_rx) = mpsc::channel::<String>(config.events.subscriber_queue);
    let closed = CancellationToken::new();
    let conn = Arc::new(Connection {
        id: conn_id.to_string(),
        remote_addr: peer,
        transport: Transport::WebSocket,
        credential,
        connected_at: now_ms(),
        last_activity: AtomicU64::new(now_ms()),
        client: std::sync::Mutex::new(None),
        ws: Some(WsState {
            out: out_tx.clone(),
            subscriptions: std::sync::Mutex::new(Default::default()),
            closed: closed.clone(),
        }),
    });
    gateway.join(&conn);
    let last_seen = Arc::new(AtomicU64::new(now_ms()));
    let ping_interval = Duration::from_millis(config.gateway.ping_interval_ms);
    let ping_timeout = config.gateway.ping_timeout_ms;
    let send_timeout = Duration::from_millis(ping_timeout);

    // Writer: queued messages, then pings; drains and closes when told to stop.
    let stop_writer = CancellationToken::new();
    let writer = {
        let stop = stop_writer.clone();
        let closed = closed.clone();
        tokio::spawn(async move {
            let mut ping = tokio::time::interval_at(
                tokio::time::Instant::now() + ping_interval,
                ping_interval,
            );
            loop {
                tokio::select! {
                    biased;
                    // First: a busy queue must not hold back the keepalive of a client that
                    // only listens (its pongs are all that proves it alive).
                    _ = ping.tick() => {
                        let empty: &[u8] = &[];
                        let Ok(payload) = soketto::data::ByteSlice125::try_from(empty) else { continue };
                        let pinged = tokio::time::timeout(send_timeout, async {
                            sender.send_ping(payload).await?;
                            sender.flush().await
                        })
                        .await;
                        if !matches!(pinged, Ok(Ok(()))) {
                            closed.cancel();
                            return;
                        }
                    }
                    msg = out_rx.recv() => {
                        let Some(msg) = msg else { break };
                        // A peer that stops reading is dropped after the ping timeout, never
                        // left holding a writer forever.
                        let sent = tokio::time::timeout(send_timeout, async {
                            sender.send_text_owned(msg).await?;
                            let mut burst = 0;
                            while burst < 64 {
                                let Ok(msg) = out_rx.try_recv() else { break };
                                sender.send_text_owned(msg).await?;
                                burst += 1;
                            }
                            sender.flush().await
                        })
                        .await;
                        if !matches!(sent, Ok(Ok(()))) { closed.cancel(); return; }
                    }
                    _ = stop.cancelled() => {
                        let drained = tokio::time::timeout(Duration::from_secs(2), async {
                            while let Ok(msg) = out_rx.try_recv() {
                                sender.send_text_owned(msg).await?;
                            }
                            sender.flush().await
                        })
                        .await;
                        if !matches!(drained, Ok(Ok(()))) { return; }
                        break;
                    }
                }
            }
            let _ = sender.close().await;
        })
    };

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

    let in_flight = Arc::new(Semaphore::new(config.gateway.max_in_flight_per_connection));
    let mut data = Vec::new();
    loop {
        data.clear();
        let received = tokio::select! {
            r = receiver.receive(&mut data) => r,
            _ = closed.cancelled() => break,
            _ = gateway.closing().cancelled() => break,
        };
        last_seen.store(now_ms(), Ordering::Relaxed);
        match received {
            Ok(soketto::Incoming::Data(_)) => {
                let permit = tokio::select! {
                    p = in_flight.clone().acquire_owned() => p,
                    _ = closed.cancelled() => break,
                };
                let Ok(permit) = permit else { break };
                let body = std::mem::take(&mut data);
                let gw = gateway.clone();
                let conn = conn.clone();
                let out = out_tx.clone();
                let closed_for_call = closed.clone();
                tokio::spawn(async move {
                    let mut reply = handle_message(&gw, &conn, &body).await;
                    if let Some(json) = reply.json.take() {
                        let sent = tokio::select! {
                            r = out.send(json) => r.is_ok(),
                            _ = closed_for_call.cancelled() => false,
                        };
                        if !sent {
                            return;
                        }
                    }
                    reply.start_subscriptions(&gw);
                    drop(permit);
                });
            }
            Ok(soketto::Incoming::Pong(_)) => {}
            Ok(soketto::Incoming::Closed(_)) => break,
            Err(soketto::connection::Error::MessageTooLarge { current, maximum }) => {
                let err = error_json(
                    "null",
                    &Error::PayloadTooLarge {
                        size: current,
                        limit: maximum,
                    },
                );
                if out_tx.send(err).await.is_err() {
                    break;
                }
            }
            Err(soketto::connection::Error::Closed) => break,
            Err(err) => {
                tracing::debug!(%err, conn = %conn.id, "websocket error; closing");
                break;
            }
        }
    }
    closed.cancel();
    conn.cancel_subscriptions();
    gateway.leave(&conn);
    drop(out_tx);
    stop_writer.cancel();
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_secs(3), writer)
        .await
        .is_err()
    {
        abort.abort();
    }
}
