//! The transport: one TCP port serving HTTP (JSON-RPC POST, health routes) and WebSocket.
//!
//! Every request passes the failed-login throttle, the browser checks (Origin, and Host in mode
//! `none`) and authentication before any JSON-RPC parsing; refused upgrades never become
//! WebSockets. The web console's static files (`crate::console`), which hold no secret, are
//! served after the browser checks without a token. Connections count against `gateway.max_connections` from the moment they are
//! accepted (the limit is capped below the descriptor limit), and past it only the health
//! routes are served.
//!
//! With `[gateway.tls]` every accepted connection completes a TLS handshake (`serve_tls`)
//! before HTTP; the plain path is the same code, generic over the byte stream, with nothing
//! added per connection.
//!
//! This file is the accept loop and the door every request passes ([`route`]); behind it are
//! `http.rs` (JSON-RPC over POST, the health routes, the refusals) and `websocket.rs` (a
//! WebSocket connection from upgrade to close).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::Host;
use super::auth::{self, Credential, Refusal};
use super::context::Connection;
use super::http::{
    Body, Reply, client_ip, health_route, http_rpc, json_response, refusal_response,
    throttled_response, whole,
};
use super::table::Scope;
use super::websocket::{is_upgrade_request, upgrade};
use crate::util::now_ms;

/// Connections past `gateway.max_connections` that are still read, so a health probe is
/// answered when the gateway is full; past these, new connections are closed at once.
pub const OVERFLOW_CONNECTIONS: usize = 64;

/// How long a connection past the limit may take to send its request line and headers.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// Counts a connection as open (for `gateway.max_connections`) while it lives.
struct OpenGuard<S: Host>(Arc<S>);
impl<S: Host> Drop for OpenGuard<S> {
    fn drop(&mut self) {
        self.0.open_connections().fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a client may take to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until the gateway closes; with `tls`, each one completes a TLS
/// handshake first (the port then speaks `https://` and `wss://` only).
pub async fn serve<S: Host>(gateway: Arc<S>, listener: TcpListener, tls: Option<TlsAcceptor>) {
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
                match &tls {
                    None => {
                        gateway.connection_tasks().spawn(serve_connection(
                            gw,
                            stream,
                            peer,
                            open > max,
                            guard,
                        ));
                    }
                    Some(acceptor) => {
                        gateway.connection_tasks().spawn(serve_tls(
                            gw,
                            acceptor.clone(),
                            stream,
                            peer,
                            open > max,
                            guard,
                        ));
                    }
                }
            }
            Err(err) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Sets the connection's kernel send buffer (`gateway.send_buffer_bytes`).
fn bound_send_buffer<S: Host>(gateway: &S, stream: &TcpStream) {
    let bytes = gateway.config().gateway.send_buffer_bytes;
    if bytes > 0 {
        // A bounded kernel buffer keeps a non-reading client's backlog bounded (and small).
        let _ = socket2::SockRef::from(stream).set_send_buffer_size(bytes);
    }
}

/// A TLS connection: the handshake (bounded in time; a failure is only logged at debug),
/// then HTTP over it like a plain one.
async fn serve_tls<S: Host>(
    gateway: Arc<S>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    over_limit: bool,
    guard: OpenGuard<S>,
) {
    bound_send_buffer(&*gateway, &stream);
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let stream = tokio::select! {
        _ = gateway.closing().cancelled() => return,
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                tracing::debug!(%peer, %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    serve_connection(gateway, stream, peer, over_limit, guard).await
}

/// Serves HTTP (and WebSocket upgrades) on one connection, plain or TLS.
async fn serve_connection<S: Host, I>(
    gateway: Arc<S>,
    stream: I,
    peer: SocketAddr,
    over_limit: bool,
    guard: OpenGuard<S>,
) where
    I: ConnectionIo,
{
    // Held by the HTTP connection and, after an upgrade, by the WebSocket task too.
    let guard = Arc::new(guard);
    stream.prepare(&*gateway);
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

/// `GET /metrics`: the Prometheus text, or 404 when `[metrics] enabled = false`.
fn metrics_response<S: Host>(gateway: &S) -> Response<Body> {
    match crate::metrics::render(gateway.metric_gauges()) {
        Some(text) => {
            let mut resp = Response::new(Body::from(text));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        None => json_response(
            StatusCode::NOT_FOUND,
            json!({"error": {"kind": "not_found", "message": "metrics are off ([metrics] enabled = false)"}}).to_string(),
        ),
    }
}

/// What a connection's byte stream is: a plain TCP stream, or one inside TLS.
trait ConnectionIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {
    /// Socket settings made once the connection is served (the TLS path made them before the
    /// handshake).
    fn prepare<S: Host>(&self, gateway: &S);
}

impl ConnectionIo for TcpStream {
    fn prepare<S: Host>(&self, gateway: &S) {
        bound_send_buffer(gateway, self);
    }
}

impl ConnectionIo for tokio_rustls::server::TlsStream<TcpStream> {
    fn prepare<S: Host>(&self, _gateway: &S) {}
}

pub use super::door::DoorMeta;

/// Why [`authenticate`] refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// The client's address is locked out after too many failed logins.
    Throttled {
        /// How long until it may try again.
        retry_after_ms: u64,
    },
    /// No token, or not a valid one (counted as a failed login).
    Refused(Refusal),
}

/// The token check every door shares: the failed-login lockout of `client`, then the bearer
/// token (or `?token=`) against the tokens in force; a refusal counts as a failed login.
pub fn authenticate<S: Host>(
    gateway: &S,
    client: IpAddr,
    headers: &http::HeaderMap,
    query: Option<&str>,
) -> Result<Credential, AuthFailure> {
    let config = gateway.config();
    let limits = super::throttle::Limits::from(&config.gateway.auth);
    let throttle = gateway.throttle();
    if let Some(retry_after_ms) = throttle.locked_for(&limits, client, now_ms()) {
        return Err(AuthFailure::Throttled { retry_after_ms });
    }
    let token = auth::presented_token(headers, query);
    gateway
        .tokens()
        .authenticate(token.as_deref())
        .map_err(|refusal| {
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
            AuthFailure::Refused(refusal)
        })
}

/// The door every request passes, in order: the browser checks, the health routes (served
/// even when full), the connection limit, the web console (`GET /` without an upgrade and
/// `/console/*`, no token needed), the application's doors ([`Host::door`]), then the
/// JSON-RPC side ([`rpc_route`]).
async fn route<S: Host>(
    gateway: Arc<S>,
    peer: SocketAddr,
    conn_id: Arc<str>,
    over_limit: bool,
    guard: Arc<OpenGuard<S>>,
    req: Request<Incoming>,
) -> Response<Reply> {
    if let Some(resp) = front(&*gateway, over_limit, &req) {
        return whole(resp);
    }
    let config = gateway.config();
    let client = client_ip(&config.gateway.trusted_proxies, peer.ip(), req.headers());
    let meta = DoorMeta {
        peer,
        client,
        conn_id: conn_id.clone(),
    };
    let req = match gateway.door(req, meta) {
        Ok(answer) => return answer.await,
        Err(req) => req,
    };
    whole(rpc_route(gateway, peer, client, conn_id, guard, req).await)
}

/// What every request meets first: the browser checks, the health routes (served even when
/// full), the connection limit and the web console; `None` when the request goes on.
fn front<S: Host>(
    gateway: &S,
    over_limit: bool,
    req: &Request<Incoming>,
) -> Option<Response<Body>> {
    let config = gateway.config();
    let local = gateway
        .local_addr()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    if let Err(refusal) = auth::check_browser(&config, local.ip(), local.port(), req.headers()) {
        return Some(refusal_response(refusal));
    }
    // Liveness and readiness probes are answered even when the gateway is full.
    if let Some(resp) = health_route(gateway, req) {
        return Some(resp);
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
        return Some(resp);
    }
    // The web console: static files that hold no secret, so no token (the WebSocket and every
    // call check it); the Origin/Host rules above still apply.
    crate::console::route(req)
}

/// The JSON-RPC side: the path, the failed-login lockout and authentication; then
/// `GET /openrpc.json`, `GET /metrics`, JSON-RPC over `POST /`, or the WebSocket upgrade.
async fn rpc_route<S: Host>(
    gateway: Arc<S>,
    peer: SocketAddr,
    client: IpAddr,
    conn_id: Arc<str>,
    guard: Arc<OpenGuard<S>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let config = gateway.config();
    let path = req.uri().path();
    if !matches!(path, "/" | "/openrpc.json" | "/metrics") {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"error": {"kind": "not_found", "message": format!("no route {path}: JSON-RPC is served at /")}}).to_string(),
        );
    }
    let credential = match authenticate(&*gateway, client, req.headers(), req.uri().query()) {
        Ok(c) => c,
        Err(AuthFailure::Throttled { retry_after_ms }) => {
            return throttled_response(retry_after_ms);
        }
        Err(AuthFailure::Refused(refusal)) => return refusal_response(refusal),
    };
    let tokens = gateway.tokens();
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/openrpc.json") => {
            let scope = tokens.scope(&credential);
            if scope.is_none_or(|s| s < Scope::Read) {
                return refusal_response(Refusal::Unauthorized("the token is not valid"));
            }
            json_response(StatusCode::OK, gateway.table().openrpc().to_string())
        }
        (&Method::GET, "/metrics") => {
            let scope = tokens.scope(&credential);
            if scope.is_none_or(|s| s < Scope::Read) {
                return refusal_response(Refusal::Unauthorized("the token is not valid"));
            }
            metrics_response(&*gateway)
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
