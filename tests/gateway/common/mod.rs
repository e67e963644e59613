//! Test harness: a real gateway on an ephemeral port (in this process, or the binary through
//! [`launcher`]), raw WebSocket and HTTP clients, and the transcript reader.

#![allow(dead_code)]

pub mod launcher;
pub mod nats;
pub mod transcript;
pub mod ws;

pub use launcher::{Gateway, Launcher};
pub use transcript::{Transcript, transcript_files, transcript_path};
pub use ws::{RawFrames, RawWs, TIMEOUT, WsRefused, close_code};

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use clawgate::config::{Config, Loaded};
use clawgate::gateway::{Ctx as CallContext, Descriptor as MethodDescriptor, Table as MethodTable};
use clawgate::rpc::{Example, MethodKind, Scope};
use clawgate::{Error, Running};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::net::TcpStream;

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
    /// The transcript of the session `key` now has.
    pub fn transcript(&self, key: &str) -> Transcript {
        let session_id = self
            .running
            .gateway
            .store()
            .get(key)
            .expect("session")
            .session_id;
        Transcript::of(self.dir.path(), &session_id)
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
        migrations: Vec::new(),
    };
    let notified = Arc::new(AtomicUsize::new(0));
    let n = notified.clone();
    let table: clawgate::gateway::BaseTable = Arc::new(move || Ok(test_table(n.clone())));
    let running = clawgate::start_with(loaded, clawgate::app::parts(table))
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
