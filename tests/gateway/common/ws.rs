//! The WebSocket test clients of the integration tests and the benchmarks (they include this
//! file with `#[path]`, being a separate crate): [`RawWs`] speaks soketto, a second
//! implementation that checks ours, exact frames in and JSON out (or bytes, for a benchmark's
//! hot path); [`RawFrames`] writes and reads frames byte by byte, for the framing tests.

#![allow(dead_code)] // each crate that includes this file uses a part of it

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::io::{BufReader, BufWriter};
use serde_json::{Value, json};
use soketto::handshake::{Client, ServerResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

/// How long a test waits for an answer before it fails (against hangs, not a speed test).
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub type WsIo = BufReader<BufWriter<Compat<TcpStream>>>;

/// A raw WebSocket client: exact frames in, JSON out.
pub struct RawWs {
    pub sender: soketto::Sender<WsIo>,
    pub receiver: soketto::Receiver<WsIo>,
    /// Messages that arrived while `call` waited for its response, oldest first.
    held: VecDeque<String>,
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

    /// Connects, trying again for about a second while the server refuses (a full accept
    /// queue, as when a benchmark opens thousands of connections at once).
    pub async fn connect_patiently(addr: SocketAddr) -> RawWs {
        let mut last = None;
        for _ in 0..50 {
            match Self::connect_with(addr, "/", &[]).await {
                Ok(ws) => return ws,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("cannot connect to {addr}: {last:?}");
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
        // Each message goes out when it is flushed, not when Nagle's algorithm lets it.
        let _ = stream.set_nodelay(true);
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

    /// Sends one text message and flushes it.
    pub async fn send(&mut self, text: &str) {
        self.queue(text).await;
        self.flush().await;
    }

    /// Writes one text message without flushing: several go out together on [`Self::flush`].
    pub async fn queue(&mut self, text: &str) {
        self.sender.send_text(text).await.expect("send");
    }

    pub async fn flush(&mut self) {
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

    /// The next data message's bytes as they came: no timeout (the caller bounds the wait), no
    /// UTF-8 check, no JSON parse. A benchmark's hot path takes its receipt time right after.
    pub async fn recv_bytes(&mut self) -> Vec<u8> {
        if let Some(held) = self.held.pop_front() {
            return held.into_bytes();
        }
        let mut data = Vec::new();
        loop {
            data.clear();
            if let soketto::Incoming::Data(_) =
                self.receiver.receive(&mut data).await.expect("receive")
            {
                return data;
            }
        }
    }

    /// The next message as raw text.
    pub async fn recv_text(&mut self) -> String {
        let data = tokio::time::timeout(TIMEOUT, self.recv_bytes())
            .await
            .expect("a message within the timeout");
        String::from_utf8(data).expect("utf-8")
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

    /// Reads the socket until the server closes it; returns the texts received and the close
    /// code (`None` when the connection ended without a close frame).
    pub async fn drain_until_close(&mut self) -> (Vec<String>, Option<u16>) {
        let mut texts = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        let mut data = Vec::new();
        loop {
            data.clear();
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.receiver.receive(&mut data)).await {
                Err(_) => panic!("the connection was not closed within {TIMEOUT:?}"),
                Ok(Ok(soketto::Incoming::Data(_))) => {
                    texts.push(String::from_utf8_lossy(&data).into_owned());
                }
                Ok(Ok(soketto::Incoming::Closed(reason))) => {
                    return (texts, Some(reason.code));
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return (texts, None),
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

    /// Sends over `chat.stream` with `params` and collects the run's payloads up to the
    /// terminal one.
    pub async fn stream_run(&mut self, params: Value) -> Vec<Value> {
        let resp = self.call("chat.stream", params).await;
        let sub = resp["result"]
            .as_str()
            .unwrap_or_else(|| panic!("stream started: {resp}"))
            .to_string();
        let mut out = Vec::new();
        loop {
            let msg = self.recv().await;
            if msg["method"] != "chat.event" || msg["params"]["subscription"] != sub.as_str() {
                continue;
            }
            let payload = msg["params"]["result"]["payload"].clone();
            let terminal = matches!(
                payload["state"].as_str(),
                Some("final" | "aborted" | "error")
            );
            out.push(payload);
            if terminal {
                return out;
            }
        }
    }

    /// The payload of the next `events.event` envelope named `event` (others are skipped).
    pub async fn next_payload_of(&mut self, event: &str) -> Value {
        loop {
            let e = self.next_event().await;
            if e["event"] == event {
                return e["payload"].clone();
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
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A raw WebSocket over TCP: exact frames out, frames in.
pub struct RawFrames {
    stream: TcpStream,
}

impl RawFrames {
    pub async fn connect(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await.expect("handshake");
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(
            head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "accept key: {head}"
        );
        Self { stream }
    }

    pub async fn frame(&mut self, fin: bool, opcode: u8, masked: bool, payload: &[u8]) {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        let m = if masked { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => out.push(m | n as u8),
            n @ 126..=0xFFFF => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [9u8, 8, 7, 6];
        if masked {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        // A peer that closed may refuse the rest: that is what some tests wait for.
        let _ = self.stream.write_all(&out).await;
    }

    /// The frames the server sends until it closes: (opcode, payload).
    pub async fn frames_until_close(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let read = tokio::time::timeout(left, async {
                let mut two = [0u8; 2];
                self.stream.read_exact(&mut two).await?;
                let len = match two[1] & 0x7F {
                    126 => u64::from(self.stream.read_u16().await?),
                    127 => self.stream.read_u64().await?,
                    n => u64::from(n),
                };
                let mut payload = vec![0u8; len as usize];
                self.stream.read_exact(&mut payload).await?;
                Ok::<_, std::io::Error>((two[0] & 0x0F, payload))
            })
            .await
            .expect("the server answers or closes within the timeout");
            match read {
                Ok((opcode, payload)) => {
                    let close = opcode == 0x8;
                    frames.push((opcode, payload));
                    if close {
                        return frames;
                    }
                }
                Err(_) => return frames,
            }
        }
    }
}

/// The code of the close frame among `frames`, if there is one.
pub fn close_code(frames: &[(u8, Vec<u8>)]) -> Option<u16> {
    frames
        .iter()
        .find(|(op, _)| *op == 0x8)
        .and_then(|(_, p)| (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]])))
}
