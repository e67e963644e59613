//! Test harness: a real gateway on an ephemeral port (in this process, or the binary through
//! [`launcher`]), raw WebSocket and HTTP clients.

#![allow(dead_code)]

pub mod launcher;

pub use launcher::{Gateway, Launcher};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clawgate::config::{Config, Loaded};
use clawgate::rpc::{CallContext, Example, MethodDescriptor, MethodKind, MethodTable, Scope};
use clawgate::{Error, Running};
use futures::io::{BufReader, BufWriter};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use soketto::handshake::{Client, ServerResponse};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A gateway for one test, with its data directory.
pub struct TestGateway {
    pub running: Running,
    pub dir: tempfile::TempDir,
    /// How many times the `notify_hello` test method ran.
    pub notified: Arc<AtomicUsize>,
}

impl TestGateway {
    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }
    pub fn ws_url(&self) -> String {
        self.running.ws_url()
    }
    pub fn notified(&self) -> usize {
        self.notified.load(Ordering::SeqCst)
    }
}

/// Starts a gateway with the default config changed by `edit`.
pub async fn start(edit: impl FnOnce(&mut Config)) -> TestGateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.gateway.port = 0;
    edit(&mut config);
    clawgate::config::validate(&config).expect("valid test config");
    let path = dir.path().join("clawgate.toml");
    // The test's config is the file's, so live reloads and patches start from it.
    let text = toml::to_string(&config).expect("config serializes");
    std::fs::write(&path, &text).expect("write config");
    let loaded = Loaded {
        config,
        data_dir: dir.path().to_path_buf(),
        path: path.clone(),
        hash: clawgate::config::hash_bytes(text.as_bytes()),
        overridden_paths: Vec::new(),
        overrides: clawgate::config::Overrides {
            config_path: Some(path),
            data_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        },
        env: Vec::new(),
    };
    let notified = Arc::new(AtomicUsize::new(0));
    let n = notified.clone();
    let table: clawgate::gateway::BaseTable = Arc::new(move || Ok(test_table(n.clone())));
    let running = clawgate::start_with(loaded, table)
        .await
        .expect("gateway starts");
    TestGateway {
        running,
        dir,
        notified,
    }
}

fn raw_method(
    table: &mut MethodTable,
    name: &str,
    scope: Scope,
    handler: impl Fn(CallContext, Option<Value>) -> Result<Value, Error> + Send + Sync + 'static,
) {
    let handler = Arc::new(handler);
    table
        .insert(MethodDescriptor {
            name: name.into(),
            owner: "test".into(),
            scope,
            summary: "test method".into(),
            params_schema: json!({"type": "object"}),
            result_schema: json!({}),
            errors: Vec::new(),
            examples: vec![Example {
                name: "x",
                params: json!({}),
                result: json!(null),
            }],
            kind: MethodKind::Call(Arc::new(move |ctx, params| {
                let handler = handler.clone();
                let params: Option<Value> =
                    params.as_str().and_then(|p| serde_json::from_str(p).ok());
                Box::pin(async move {
                    let value = handler(ctx, params)?;
                    serde_json::value::to_raw_value(&value).map_err(Error::internal)
                })
            })),
        })
        .expect("unique test method");
}

/// The core table plus the methods of the JSON-RPC 2.0 specification's examples (section 7)
/// and a few for scope and size tests.
pub fn test_table(notified: Arc<AtomicUsize>) -> MethodTable {
    let mut table = clawgate::api::core_table().expect("core table");
    raw_method(&mut table, "subtract", Scope::Read, |_, params| {
        let (a, b) = match params {
            Some(Value::Array(v)) if v.len() == 2 => (v[0].as_i64(), v[1].as_i64()),
            Some(Value::Object(o)) => (
                o.get("minuend").and_then(Value::as_i64),
                o.get("subtrahend").and_then(Value::as_i64),
            ),
            _ => (None, None),
        };
        match (a, b) {
            (Some(a), Some(b)) => Ok(json!(a - b)),
            _ => Err(Error::invalid_params("", "expected [minuend, subtrahend]")),
        }
    });
    raw_method(&mut table, "sum", Scope::Read, |_, params| {
        let v = params
            .and_then(|p| p.as_array().cloned())
            .unwrap_or_default();
        Ok(json!(v.iter().filter_map(Value::as_i64).sum::<i64>()))
    });
    let n = notified.clone();
    raw_method(&mut table, "notify_hello", Scope::Read, move |_, _| {
        n.fetch_add(1, Ordering::SeqCst);
        Ok(json!(null))
    });
    let n = notified.clone();
    raw_method(&mut table, "update", Scope::Read, move |_, _| {
        n.fetch_add(1, Ordering::SeqCst);
        Ok(json!(null))
    });
    raw_method(&mut table, "get_data", Scope::Read, |_, _| {
        Ok(json!(["hello", 5]))
    });
    raw_method(&mut table, "test.write", Scope::Write, |_, _| {
        Ok(json!("wrote"))
    });
    raw_method(&mut table, "test.admin", Scope::Admin, |_, _| {
        Ok(json!("admin"))
    });
    raw_method(&mut table, "test.panic", Scope::Read, |_, _| {
        panic!("a handler bug")
    });
    raw_method(&mut table, "test.big", Scope::Read, |_, params| {
        let n = params
            .and_then(|p| p.get("bytes").and_then(Value::as_u64))
            .unwrap_or(0) as usize;
        Ok(json!("x".repeat(n)))
    });
    raw_method(&mut table, "test.publish", Scope::Read, |ctx, params| {
        let p = params.unwrap_or(json!({}));
        let event = p
            .get("event")
            .and_then(Value::as_str)
            .unwrap_or("test.event")
            .to_string();
        let key = p
            .get("sessionKey")
            .and_then(Value::as_str)
            .map(str::to_string);
        let count = p.get("count").and_then(Value::as_u64).unwrap_or(1);
        let mut last = 0;
        for i in 0..count {
            last = ctx
                .gateway
                .hub()
                .publish(&event, key.as_deref(), &json!({"i": i}));
        }
        Ok(json!(last))
    });
    table
}

pub type WsIo = BufReader<BufWriter<Compat<TcpStream>>>;

/// A raw WebSocket client: exact frames in, JSON out.
pub struct RawWs {
    pub sender: soketto::Sender<WsIo>,
    pub receiver: soketto::Receiver<WsIo>,
    /// Messages that arrived while `call` waited for its response, oldest first.
    held: std::collections::VecDeque<String>,
}

/// Why a WebSocket handshake failed.
#[derive(Debug)]
pub enum WsRefused {
    Status(u16),
    Io(String),
}

impl RawWs {
    pub async fn connect(addr: SocketAddr) -> RawWs {
        Self::connect_with(addr, "/", &[])
            .await
            .expect("websocket connects")
    }

    pub async fn connect_with(
        addr: SocketAddr,
        resource: &str,
        headers: &[(&str, &str)],
    ) -> Result<RawWs, WsRefused> {
        Self::connect_socket(
            TcpStream::connect(addr)
                .await
                .map_err(|e| WsRefused::Io(e.to_string()))?,
            addr,
            resource,
            headers,
        )
        .await
    }

    /// Connects with a small receive buffer, so a client that does not read pushes back fast.
    pub async fn connect_small_buffer(addr: SocketAddr) -> RawWs {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("rcvbuf");
        let stream = socket.connect(addr).await.expect("connect");
        Self::connect_socket(stream, addr, "/", &[])
            .await
            .expect("websocket connects")
    }

    async fn connect_socket(
        stream: TcpStream,
        addr: SocketAddr,
        resource: &str,
        headers: &[(&str, &str)],
    ) -> Result<RawWs, WsRefused> {
        let host = addr.to_string();
        let io = BufReader::new(BufWriter::new(stream.compat()));
        let hdrs: Vec<soketto::handshake::client::Header> = headers
            .iter()
            .map(|(n, v)| soketto::handshake::client::Header {
                name: n,
                value: v.as_bytes(),
            })
            .collect();
        let mut client = Client::new(io, &host, resource);
        client.set_headers(&hdrs);
        match client.handshake().await {
            Ok(ServerResponse::Accepted { .. }) => {}
            Ok(ServerResponse::Rejected { status_code }) => {
                return Err(WsRefused::Status(status_code));
            }
            Ok(ServerResponse::Redirect { status_code, .. }) => {
                return Err(WsRefused::Status(status_code));
            }
            Err(e) => return Err(WsRefused::Io(e.to_string())),
        }
        let mut builder = client.into_builder();
        builder.set_max_message_size(64 * 1024 * 1024);
        let (sender, receiver) = builder.finish();
        Ok(RawWs {
            sender,
            receiver,
            held: Default::default(),
        })
    }

    pub async fn send(&mut self, text: &str) {
        self.sender.send_text(text).await.expect("send");
        self.sender.flush().await.expect("flush");
    }

    /// Takes what `call` kept (messages that arrived before a response), oldest first.
    pub fn take_held(&mut self) -> Vec<Value> {
        self.held
            .drain(..)
            .map(|t| serde_json::from_str(&t).expect("json message"))
            .collect()
    }

    /// The next message from the socket, not from what `call` kept.
    async fn recv_text_fresh(&mut self) -> String {
        let held = std::mem::take(&mut self.held);
        let text = self.recv_text().await;
        self.held = held;
        text
    }

    /// The next message as raw text.
    pub async fn recv_text(&mut self) -> String {
        if let Some(held) = self.held.pop_front() {
            return held;
        }
        let mut data = Vec::new();
        loop {
            data.clear();
            let got = tokio::time::timeout(TIMEOUT, self.receiver.receive(&mut data))
                .await
                .expect("a message within the timeout")
                .expect("receive");
            if let soketto::Incoming::Data(_) = got {
                return String::from_utf8(data).expect("utf-8");
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).expect("json message")
    }

    /// Waits up to `wait` for a message; `None` if none came.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        if let Some(held) = self.held.pop_front() {
            return serde_json::from_str(&held).ok();
        }
        let mut data = Vec::new();
        loop {
            data.clear();
            match tokio::time::timeout(wait, self.receiver.receive(&mut data)).await {
                Err(_) => return None,
                Ok(Err(_)) => return None,
                Ok(Ok(soketto::Incoming::Data(_))) => {
                    return serde_json::from_slice(&data).ok();
                }
                Ok(Ok(soketto::Incoming::Closed(_))) => return None,
                Ok(Ok(_)) => continue,
            }
        }
    }

    /// Sends a request and returns its response; what arrives before it (notifications,
    /// other responses) is kept for the next `recv`.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = format!("r{}", rand_id());
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send(&req.to_string()).await;
        let mut early = Vec::new();
        loop {
            let text = self.recv_text_fresh().await;
            let msg: Value = serde_json::from_str(&text).expect("json message");
            if msg.get("id") == Some(&json!(id)) {
                self.held.extend(early);
                return msg;
            }
            early.push(text);
        }
    }

    /// Calls `method` on a connection whose token was revoked: the call must not succeed (it
    /// may be answered `-32020`) and the server must close the connection with 1008.
    pub async fn call_revoked(&mut self, method: &str) {
        let req = json!({"jsonrpc": "2.0", "id": "revoked", "method": method, "params": {}});
        // The server may already have closed: the send can fail.
        let _ = self.sender.send_text(req.to_string()).await;
        let _ = self.sender.flush().await;
        let mut data = Vec::new();
        loop {
            data.clear();
            match tokio::time::timeout(TIMEOUT, self.receiver.receive(&mut data)).await {
                Err(_) => panic!("a revoked connection was not closed"),
                Ok(Ok(soketto::Incoming::Data(_))) => {
                    let msg: Value = serde_json::from_slice(&data).expect("json");
                    if msg["id"] == "revoked" {
                        assert_eq!(msg["error"]["code"], -32020, "{msg}");
                    }
                }
                Ok(Ok(soketto::Incoming::Closed(reason))) => {
                    assert_eq!(reason.code, 1008, "closed as a policy violation");
                    return;
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("closed without a close frame: {e}"),
            }
        }
    }

    /// Subscribes to events; returns the subscription id.
    pub async fn subscribe(&mut self, params: Value) -> String {
        let resp = self.call("events.subscribe", params).await;
        resp["result"]
            .as_str()
            .unwrap_or_else(|| panic!("subscribed: {resp}"))
            .to_string()
    }

    /// The next `events.event` notification's envelope.
    pub async fn next_event(&mut self) -> Value {
        loop {
            let msg = self.recv().await;
            if msg["method"] == "events.event" {
                return msg["params"]["result"].clone();
            }
        }
    }
}

fn rand_id() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A raw HTTP response.
#[derive(Debug)]
pub struct HttpResp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl HttpResp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("json body ({e}): {:?}", self.body))
    }
}

/// Sends one HTTP/1.1 request on a fresh connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpResp {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("http handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let resp = tokio::time::timeout(TIMEOUT, sender.send_request(req))
        .await
        .expect("response within the timeout")
        .expect("response");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    HttpResp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// POSTs a JSON-RPC body to `/`.
pub async fn post(addr: SocketAddr, body: &str) -> HttpResp {
    http(
        addr,
        "POST",
        "/",
        &[("content-type", "application/json")],
        body,
    )
    .await
}

/// POSTs with an explicit Host header; returns the status.
pub async fn http_with_host(addr: SocketAddr, host: &str, body: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
