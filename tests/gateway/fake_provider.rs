//! A fake model provider: a real HTTP server on loopback that replays scripted SSE byte
//! streams in the providers' exact wire formats, and records the requests it got.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use serde_json::{Value, json};

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Script {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// (delay before, bytes) pieces of the body.
    pub chunks: Vec<(u64, String)>,
    /// Keep the connection open this long after the last chunk (a stall).
    pub hold_ms: u64,
}

impl Script {
    pub fn sse(events: Vec<String>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            chunks: events.into_iter().map(|e| (0, e)).collect(),
            hold_ms: 0,
        }
    }
    pub fn paced(mut self, ms: u64) -> Self {
        for c in &mut self.chunks {
            c.0 = ms;
        }
        self
    }
    pub fn status(status: u16, body: &str, headers: &[(&str, &str)]) -> Self {
        Self {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            chunks: vec![(0, body.to_string())],
            hold_ms: 0,
        }
    }
    pub fn hold(mut self, ms: u64) -> Self {
        self.hold_ms = ms;
        self
    }
}

/// A recorded request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Value,
}

#[derive(Clone)]
pub struct FakeProvider {
    pub addr: SocketAddr,
    scripts: Arc<Mutex<VecDeque<Script>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeProvider {
    pub async fn start(scripts: Vec<Script>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fake = Self {
            addr,
            scripts: Arc::new(Mutex::new(scripts.into())),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let f = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let f = f.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let f = f.clone();
                            async move { Ok::<_, Infallible>(f.answer(req).await) }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        fake
    }

    pub fn push(&self, script: Script) {
        self.scripts.lock().expect("lock").push_back(script);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    async fn answer(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path().to_string();
        let headers = req.headers().clone();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        self.seen.lock().expect("lock").push(Seen {
            path,
            headers,
            body,
        });
        let script = self
            .scripts
            .lock()
            .expect("lock")
            .pop_front()
            .unwrap_or_else(|| Script::status(500, "{\"error\":\"no script left\"}", &[]));
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, Infallible>>();
        let chunks = script.chunks.clone();
        let hold = script.hold_ms;
        tokio::spawn(async move {
            for (delay, chunk) in chunks {
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                if tx
                    .unbounded_send(Ok(Frame::data(Bytes::from(chunk))))
                    .is_err()
                {
                    return;
                }
            }
            if hold > 0 {
                tokio::time::sleep(Duration::from_millis(hold)).await;
            }
            drop(tx);
        });
        let mut resp = http::Response::new(BodyExt::boxed(StreamBody::new(rx.map(|x| x))));
        *resp.status_mut() =
            http::StatusCode::from_u16(script.status).unwrap_or(http::StatusCode::OK);
        for (k, v) in &script.headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                resp.headers_mut().insert(name, value);
            }
        }
        resp
    }
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// Anthropic Messages stream pieces.
pub mod anthropic {
    use super::*;

    pub fn start() -> String {
        start_reading(25)
    }
    /// `message_start` reporting `input_tokens` read.
    pub fn start_reading(input_tokens: u64) -> String {
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-test", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
        )
    }
    pub fn text_block(index: u64) -> String {
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        )
    }
    pub fn text(index: u64, t: &str) -> String {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": t}}),
        )
    }
    pub fn tool_block(index: u64, id: &str, name: &str) -> String {
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
        )
    }
    pub fn json_delta(index: u64, partial: &str) -> String {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": partial}}),
        )
    }
    pub fn stop_block(index: u64) -> String {
        event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        )
    }
    pub fn ping() -> String {
        event("ping", json!({"type": "ping"}))
    }
    pub fn end(reason: &str, output_tokens: u64) -> Vec<String> {
        vec![
            event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}}),
            ),
            event("message_stop", json!({"type": "message_stop"})),
        ]
    }
    pub fn error(kind: &str, message: &str) -> String {
        event(
            "error",
            json!({"type": "error", "error": {"type": kind, "message": message}}),
        )
    }
    /// A whole text reply, split into `parts`.
    pub fn reply(parts: &[&str]) -> Vec<String> {
        let mut v = vec![start(), text_block(0), ping()];
        v.extend(parts.iter().map(|p| text(0, p)));
        v.push(stop_block(0));
        v.extend(end("end_turn", 15));
        v
    }
    /// A whole text reply whose call reported reading `input_tokens`.
    pub fn reply_reading(parts: &[&str], input_tokens: u64) -> Vec<String> {
        let mut v = reply(parts);
        v[0] = start_reading(input_tokens);
        v
    }
    /// `message_start` reporting `input` tokens read, `cache_read` read from the prompt cache
    /// and `cache_write` written to it.
    pub fn start_cached(input: u64, cache_read: u64, cache_write: u64) -> String {
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-test", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input, "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": cache_write, "output_tokens": 1}}}),
        )
    }
    /// A whole text reply whose call reported `input`, `cache_read` and `cache_write` tokens
    /// (and 15 output tokens, as [`reply`]).
    pub fn reply_cached(
        parts: &[&str],
        input: u64,
        cache_read: u64,
        cache_write: u64,
    ) -> Vec<String> {
        let mut v = reply(parts);
        v[0] = start_cached(input, cache_read, cache_write);
        v
    }
    /// Text, then tool calls (id, name, json pieces).
    pub fn tools(intro: &str, calls: &[(&str, &str, &[&str])]) -> Vec<String> {
        let mut v = vec![start(), text_block(0), text(0, intro), stop_block(0)];
        for (i, (id, name, pieces)) in calls.iter().enumerate() {
            let index = i as u64 + 1;
            v.push(tool_block(index, id, name));
            v.extend(pieces.iter().map(|p| json_delta(index, p)));
            v.push(stop_block(index));
        }
        v.extend(end("tool_use", 30));
        v
    }
}

/// OpenAI Chat Completions stream pieces.
pub mod openai {
    use super::*;

    fn chunk(choices: Value) -> String {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test", "choices": choices})
        )
    }
    pub fn role() -> String {
        chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        )
    }
    pub fn text(t: &str) -> String {
        chunk(json!([{"index": 0, "delta": {"content": t}, "finish_reason": null}]))
    }
    pub fn tool_delta(calls: Value) -> String {
        chunk(json!([{"index": 0, "delta": {"tool_calls": calls}, "finish_reason": null}]))
    }
    pub fn finish(reason: &str) -> String {
        chunk(json!([{"index": 0, "delta": {}, "finish_reason": reason}]))
    }
    /// The usage chunk, with `choices: null` as some servers send it.
    pub fn usage(prompt: u64, completion: u64) -> String {
        format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": null, "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}})
        )
    }
    pub fn done() -> String {
        "data: [DONE]\n\n".to_string()
    }
    pub fn reply(parts: &[&str]) -> Vec<String> {
        let mut v = vec![role()];
        v.extend(parts.iter().map(|p| text(p)));
        v.push(finish("stop"));
        v.push(usage(9, 4));
        v.push(done());
        v
    }
}
