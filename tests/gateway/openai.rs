//! The OpenAI-compatible door (`/v1`): models, whole and streamed completions, the session
//! header, ephemeral sessions, the run seen by other clients, errors and disconnects, over
//! real sockets against the in-process gateway.

use std::net::SocketAddr;

use bytes::Bytes;
use clawgate::config::{AgentConfig, AuthMode, Config, ProviderKind, TokenConfig};
use clawgate::rpc::Scope;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::common::{RawWs, TIMEOUT, TestGateway, http, post, start};
use crate::fake_provider::{FakeProvider, Script, anthropic};

fn door(c: &mut Config) {
    c.http.openai.enabled = true;
    c.default_agent_mut().delta_interval_ms = 0;
}

fn tokens(c: &mut Config) {
    door(c);
    c.gateway.auth.mode = AuthMode::Token;
    c.gateway.auth.tokens = vec![
        TokenConfig {
            name: "reader".into(),
            token: "reader-secret-1".into(),
            scopes: vec![Scope::Read],
        },
        TokenConfig {
            name: "writer".into(),
            token: "writer-secret-1".into(),
            scopes: vec![Scope::Write],
        },
    ];
}

/// The default agent answering through the fake provider (Anthropic wire).
fn fake_agent(c: &mut Config, fake: &FakeProvider) {
    door(c);
    let a = c.default_agent_mut();
    a.provider = ProviderKind::Anthropic;
    a.base_url = Some(format!("http://{}", fake.addr));
    a.model = "claude-test".into();
    a.api_key_env = Some("CARGO_MANIFEST_DIR".into());
    a.idle_timeout_ms = 60_000;
}

fn completion(content: Value, stream: bool) -> String {
    json!({"model": "clawgate/main", "stream": stream, "messages": [{"role": "user", "content": content}]})
        .to_string()
}

async fn chat(addr: SocketAddr, headers: &[(&str, &str)], body: &str) -> crate::common::HttpResp {
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    http(addr, "POST", "/v1/chat/completions", &h, body).await
}

/// A JSON-RPC call over HTTP; its `result` (or the whole response on an error).
async fn rpc(gw: &TestGateway, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let v = post(gw.addr(), &body).await.json();
    v.get("result").cloned().unwrap_or(v)
}

/// An open streamed response: its status and the `data:` payloads as they come.
struct Sse {
    status: u16,
    headers: http::HeaderMap,
    body: hyper::body::Incoming,
    buf: String,
}

impl Sse {
    async fn open(addr: SocketAddr, headers: &[(&str, &str)], body: &str) -> Sse {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header("host", addr.to_string())
            .header("content-type", "application/json");
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
        Sse {
            status,
            headers,
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    /// The next `data:` payload (`[DONE]` as a string), `None` at the end of the body.
    async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                let data = event.trim_end().strip_prefix("data: ").expect("data line");
                return Some(data.to_string());
            }
            let frame = tokio::time::timeout(TIMEOUT, self.body.frame())
                .await
                .expect("a chunk within the timeout")?
                .expect("frame");
            if let Ok(data) = frame.into_data() {
                self.buf.push_str(std::str::from_utf8(&data).expect("utf8"));
            }
        }
    }

    /// Every payload to the end.
    async fn all(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(d) = self.next().await {
            out.push(d);
        }
        out
    }
}

fn content_of(chunks: &[String]) -> String {
    chunks
        .iter()
        .filter(|c| c.as_str() != "[DONE]")
        .filter_map(|c| {
            let v: Value = serde_json::from_str(c).expect("chunk json");
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}

fn ephemeral_files(gw: &TestGateway) -> Vec<String> {
    match std::fs::read_dir(gw.dir.path().join("sessions").join("ephemeral")) {
        Ok(read) => read
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn listed_keys(list: &Value) -> Vec<String> {
    list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["key"].as_str().expect("key").to_string())
        .collect()
}

#[tokio::test]
async fn models_lists_each_agent() {
    let gw = start(|c| {
        door(c);
        c.agents.insert("helper".into(), AgentConfig::default());
    })
    .await;
    let r = http(gw.addr(), "GET", "/v1/models", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["clawgate/helper", "clawgate/main"]);
    for m in v["data"].as_array().expect("data") {
        assert_eq!(m["object"], "model");
        assert_eq!(m["owned_by"], "clawgate");
        assert!(m["created"].as_u64().is_some_and(|c| c > 0), "{m}");
    }
    let one = http(gw.addr(), "GET", "/v1/models/clawgate/helper", &[], "").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["id"], "clawgate/helper");
    let encoded = http(gw.addr(), "GET", "/v1/models/clawgate%2Fhelper", &[], "").await;
    assert_eq!(
        encoded.json()["id"],
        "clawgate/helper",
        "as OpenAI clients encode it"
    );
    let bare = http(gw.addr(), "GET", "/v1/models/main", &[], "").await;
    assert_eq!(bare.json()["id"], "clawgate/main");
    let none = http(gw.addr(), "GET", "/v1/models/clawgate/nope", &[], "").await;
    assert_eq!(none.status, 404);
    assert_eq!(none.json()["error"]["code"], "model_not_found");
}

#[tokio::test]
async fn a_disabled_door_is_not_found() {
    let gw = start(|_| {}).await;
    let r = http(gw.addr(), "GET", "/v1/models", &[], "").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = chat(gw.addr(), &[], &completion(json!("hi"), false)).await;
    assert_eq!(r.status, 404, "{}", r.body);
}

#[tokio::test]
async fn a_whole_completion() {
    let gw = start(door).await;
    let parts = json!([{"type": "text", "text": "hello"}, {"type": "text", "text": "there"}]);
    let r = chat(gw.addr(), &[], &completion(parts, false)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-")),
        "{v}"
    );
    assert!(v["created"].as_u64().is_some());
    assert_eq!(v["model"], "clawgate/main");
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "Echo: hello\nthere");
    assert_eq!(choice["finish_reason"], "stop");
    let u = &v["usage"];
    assert!(
        u["completion_tokens"].as_u64().is_some_and(|n| n > 0),
        "{v}"
    );
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(
            u["prompt_tokens"].as_u64().expect("prompt")
                + u["completion_tokens"].as_u64().expect("completion")
        )
    );
    // A bare agent id names the same agent.
    let r = chat(
        gw.addr(),
        &[],
        &json!({"model": "main", "messages": [{"role": "user", "content": "x"}]}).to_string(),
    )
    .await;
    assert_eq!(r.json()["choices"][0]["message"]["content"], "Echo: x");
}

#[tokio::test]
async fn the_text_of_every_turn_is_joined() {
    let gw = start(door).await;
    let r = chat(
        gw.addr(),
        &[],
        &completion(json!("/tool list_dir {}"), false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let text = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    assert!(
        text.starts_with("Calling list_dir.\n\nTool list_dir "),
        "{text:?}"
    );
    // Streamed, the same text, and no tool_calls anywhere.
    let mut sse = Sse::open(
        gw.addr(),
        &[],
        &completion(json!("/tool list_dir {}"), true),
    )
    .await;
    let chunks = sse.all().await;
    assert!(content_of(&chunks).starts_with("Calling list_dir.\n\nTool list_dir "));
    assert!(
        !chunks.iter().any(|c| c.contains("tool_calls")),
        "{chunks:?}"
    );
}

#[tokio::test]
async fn a_streamed_completion_and_its_usage() {
    let gw = start(door).await;
    for include_usage in [false, true] {
        let body = json!({"model": "clawgate/main", "stream": true,
            "stream_options": {"include_usage": include_usage},
            "messages": [{"role": "user", "content": "stream me"}]})
        .to_string();
        let mut sse = Sse::open(gw.addr(), &[], &body).await;
        assert_eq!(sse.status, 200);
        assert_eq!(
            sse.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        let chunks = sse.all().await;
        assert_eq!(
            chunks.last().map(String::as_str),
            Some("[DONE]"),
            "{chunks:?}"
        );
        let parsed: Vec<Value> = chunks[..chunks.len() - 1]
            .iter()
            .map(|c| serde_json::from_str(c).expect("json"))
            .collect();
        let id = parsed[0]["id"].clone();
        for p in &parsed {
            assert_eq!(p["object"], "chat.completion.chunk");
            assert_eq!(p["id"], id, "one id for every chunk");
            assert_eq!(p["model"], "clawgate/main");
        }
        assert_eq!(parsed[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(content_of(&chunks), "Echo: stream me");
        let with_choices: Vec<&Value> = parsed
            .iter()
            .filter(|p| !p["choices"].as_array().expect("choices").is_empty())
            .collect();
        let last = with_choices.last().expect("a last choice chunk");
        assert_eq!(last["choices"][0]["finish_reason"], "stop");
        for p in &with_choices[..with_choices.len() - 1] {
            assert_eq!(p["choices"][0]["finish_reason"], Value::Null);
        }
        let usage: Vec<&Value> = parsed
            .iter()
            .filter(|p| p.get("usage").is_some_and(|u| !u.is_null()))
            .collect();
        if include_usage {
            assert_eq!(usage.len(), 1, "{parsed:?}");
            let u = parsed.last().expect("last");
            assert_eq!(u["choices"], json!([]), "usage comes in the last chunk");
            assert!(
                u["usage"]["completion_tokens"]
                    .as_u64()
                    .is_some_and(|n| n > 0)
            );
            assert!(u["usage"]["prompt_tokens"].as_u64().is_some());
        } else {
            assert!(usage.is_empty(), "{parsed:?}");
        }
    }
}

#[tokio::test]
async fn the_session_header_sends_the_last_user_message_to_that_session() {
    let gw = start(door).await;
    let body = json!({"model": "clawgate/main", "messages": [
        {"role": "system", "content": "ignored system"},
        {"role": "user", "content": "ignored earlier"},
        {"role": "assistant", "content": "ignored answer"},
        {"role": "user", "content": "first"}]})
    .to_string();
    let h = [("x-clawgate-session-key", "oa-session")];
    let r = chat(gw.addr(), &h, &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["message"]["content"], "Echo: first");
    assert_eq!(
        r.headers
            .get("x-clawgate-session-key")
            .and_then(|v| v.to_str().ok()),
        Some("oa-session")
    );
    let mut sse = Sse::open(gw.addr(), &h, &completion(json!("second"), true)).await;
    assert_eq!(content_of(&sse.all().await), "Echo: second");
    let history = rpc(&gw, "chat.history", json!({"sessionKey": "oa-session"})).await;
    let messages: Vec<(String, String)> = history["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("history: {history}"))
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or("").into(),
                m["content"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = messages
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("user", "first"),
            ("assistant", "Echo: first"),
            ("user", "second"),
            ("assistant", "Echo: second")
        ],
        "the request's earlier messages are ignored"
    );
    let list = rpc(&gw, "sessions.list", json!({})).await;
    assert!(listed_keys(&list).contains(&"oa-session".to_string()));
}

#[tokio::test]
async fn an_ephemeral_session_is_seeded_seen_by_subscribers_and_not_kept() {
    let gw = start(door).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    ws.subscribe(json!({})).await;
    let body = json!({"model": "clawgate/main", "messages": [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "/system"}]})
    .to_string();
    let r = chat(gw.addr(), &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let text = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    assert!(
        text.contains("Answer like a pirate."),
        "the seed reached the model: {text:?}"
    );
    let key = r
        .headers
        .get("x-clawgate-session-key")
        .and_then(|v| v.to_str().ok())
        .expect("session header")
        .to_string();
    assert!(key.starts_with("openai:"), "{key}");
    // Another client saw the run, start to end, in that session.
    let mut states = Vec::new();
    loop {
        let e = ws.next_event().await;
        assert_ne!(
            (e["event"].as_str(), e["sessionKey"].as_str()),
            (Some("sessions.changed"), Some(key.as_str())),
            "an ephemeral session is never announced"
        );
        if e["event"] == "chat" && e["sessionKey"] == key.as_str() {
            let state = e["payload"]["state"].as_str().unwrap_or("").to_string();
            states.push(state.clone());
            if state == "final" {
                break;
            }
        }
    }
    assert_eq!(
        states.first().map(String::as_str),
        Some("started"),
        "{states:?}"
    );
    assert!(states.iter().any(|s| s == "delta"), "{states:?}");
    // Gone: not listed, not found, no file.
    let list = rpc(&gw, "sessions.list", json!({})).await;
    assert!(
        !listed_keys(&list).iter().any(|k| k.starts_with("openai:")),
        "{list}"
    );
    let mut gone = false;
    for _ in 0..200 {
        if gw.running.gateway.store().get(&key).is_err() && ephemeral_files(&gw).is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        gone,
        "the ephemeral session and its file are removed: {:?}",
        ephemeral_files(&gw)
    );
    let get = rpc(&gw, "sessions.get", json!({"key": key})).await;
    assert!(get.get("error").is_some(), "{get}");
    // Every transcript file left is one of a listed session (none live or archived for it).
    let listed: Vec<String> = list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| format!("{}.jsonl", s["sessionId"].as_str().expect("sessionId")))
        .collect();
    let leftovers: Vec<String> = std::fs::read_dir(gw.dir.path().join("sessions"))
        .expect("sessions dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".jsonl") && !listed.contains(n))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no transcript, live or archived: {leftovers:?}"
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_aborts_its_ephemeral_run() {
    // A reply that starts, then stalls for a long time.
    let mut script = Script::sse(vec![
        anthropic::start(),
        anthropic::text_block(0),
        anthropic::text(0, "partial "),
    ]);
    script = script.hold(60_000);
    let fake = FakeProvider::start(vec![script]).await;
    let gw = start(|c| fake_agent(c, &fake)).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    ws.subscribe(json!({"events": ["chat"]})).await;
    let mut sse = Sse::open(gw.addr(), &[], &completion(json!("go"), true)).await;
    assert_eq!(sse.status, 200);
    let key = sse
        .headers
        .get("x-clawgate-session-key")
        .and_then(|v| v.to_str().ok())
        .expect("session header")
        .to_string();
    let first = sse.next().await.expect("role chunk");
    assert!(first.contains("\"role\":\"assistant\""), "{first}");
    let text = sse.next().await.expect("content chunk");
    assert!(text.contains("partial"), "{text}");
    // Listed nowhere while it runs.
    let list = rpc(&gw, "sessions.list", json!({})).await;
    assert!(!listed_keys(&list).contains(&key), "{list}");
    assert_eq!(
        ephemeral_files(&gw).len(),
        1,
        "its transcript exists while it runs"
    );
    drop(sse);
    loop {
        let e = ws.next_event().await;
        if e["sessionKey"] == key.as_str() && e["event"] == "chat" {
            match e["payload"]["state"].as_str() {
                Some("aborted") => break,
                Some("final" | "error") => panic!("expected an abort: {e}"),
                _ => {}
            }
        }
    }
    let mut gone = false;
    for _ in 0..200 {
        if gw.running.gateway.store().get(&key).is_err() && ephemeral_files(&gw).is_empty() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(gone, "the aborted ephemeral session is removed");
}

#[tokio::test]
async fn finish_reason_and_usage_come_from_the_run() {
    for (stop, expected) in [
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("end_turn", "stop"),
    ] {
        let mut events = vec![
            anthropic::start_cached(10, 4, 2),
            anthropic::text_block(0),
            anthropic::text(0, "cut"),
        ];
        events.push(anthropic::stop_block(0));
        events.extend(anthropic::end(stop, 7));
        let fake =
            FakeProvider::start(vec![Script::sse(events.clone()), Script::sse(events)]).await;
        let gw = start(|c| fake_agent(c, &fake)).await;
        let r = chat(gw.addr(), &[], &completion(json!("go"), false)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["choices"][0]["finish_reason"], expected, "{stop}: {v}");
        assert_eq!(v["choices"][0]["message"]["content"], "cut");
        assert_eq!(
            v["usage"]["prompt_tokens"], 16,
            "input plus cache reads and writes: {v}"
        );
        assert_eq!(v["usage"]["completion_tokens"], 7);
        assert_eq!(v["usage"]["total_tokens"], 23);
        let body = json!({"model": "clawgate/main", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "go"}]}).to_string();
        let mut sse = Sse::open(gw.addr(), &[], &body).await;
        let chunks = sse.all().await;
        let finish: Vec<Value> = chunks
            .iter()
            .filter(|c| c.as_str() != "[DONE]")
            .map(|c| serde_json::from_str::<Value>(c).expect("json"))
            .filter(|c| {
                !c["choices"][0]["finish_reason"].is_null()
                    && c["choices"].as_array().is_some_and(|a| !a.is_empty())
            })
            .collect();
        assert_eq!(finish.len(), 1, "{chunks:?}");
        assert_eq!(finish[0]["choices"][0]["finish_reason"], expected);
        let last: Value = serde_json::from_str(&chunks[chunks.len() - 2]).expect("json");
        assert_eq!(last["usage"]["total_tokens"], 23, "{chunks:?}");
    }
}

#[tokio::test]
async fn refusals_in_openai_shape() {
    let gw = start(tokens).await;
    let writer = [("authorization", "Bearer writer-secret-1")];
    let good = completion(json!("hi"), false);
    let check = |r: &crate::common::HttpResp, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", r.body);
        let v = r.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
        assert!(v["error"]["type"].as_str().is_some(), "{v}");
    };
    check(&chat(gw.addr(), &[], &good).await, 401, "invalid_api_key");
    let wrong = chat(gw.addr(), &[("authorization", "Bearer nope")], &good).await;
    check(&wrong, 401, "invalid_api_key");
    assert!(wrong.headers.get("www-authenticate").is_some());
    check(
        &http(gw.addr(), "GET", "/v1/models", &[], "").await,
        401,
        "invalid_api_key",
    );
    check(
        &chat(
            gw.addr(),
            &[("authorization", "Bearer reader-secret-1")],
            &good,
        )
        .await,
        403,
        "insufficient_scope",
    );
    check(
        &chat(gw.addr(), &writer, "{not json").await,
        400,
        "invalid_json",
    );
    check(
        &chat(gw.addr(), &writer, r#"{"model":"clawgate/main"}"#).await,
        400,
        "missing_messages",
    );
    check(
        &chat(
            gw.addr(),
            &writer,
            &json!({"model": "clawgate/main", "messages": [{"role": "system", "content": "x"}]})
                .to_string(),
        )
        .await,
        400,
        "no_user_message",
    );
    check(
        &chat(
            gw.addr(),
            &[writer[0], ("x-clawgate-session-key", "bad key")],
            &good,
        )
        .await,
        400,
        "invalid_session_key",
    );
    let unknown = json!({"model": "clawgate/nope", "messages": [{"role": "user", "content": "x"}]})
        .to_string();
    check(
        &chat(gw.addr(), &writer, &unknown).await,
        404,
        "model_not_found",
    );
    let ok = chat(gw.addr(), &writer, &good).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test]
async fn a_locked_out_address_gets_429() {
    let gw = start(|c| {
        tokens(c);
        c.gateway.auth.throttle_loopback = true;
        c.gateway.auth.max_failures = 2;
    })
    .await;
    let good = completion(json!("hi"), false);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            chat(gw.addr(), &[("authorization", "Bearer nope")], &good)
                .await
                .status,
        );
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let r = chat(
        gw.addr(),
        &[("authorization", "Bearer writer-secret-1")],
        &good,
    )
    .await;
    assert_eq!(r.status, 429, "locked out whatever it sends");
    assert_eq!(r.json()["error"]["code"], "rate_limit_exceeded");
    assert!(r.headers.get("retry-after").is_some());
}

#[tokio::test]
async fn a_busy_session_is_409() {
    let script = Script::sse(vec![
        anthropic::start(),
        anthropic::text_block(0),
        anthropic::text(0, "slow"),
    ])
    .hold(60_000);
    let fake = FakeProvider::start(vec![script]).await;
    let gw = start(|c| fake_agent(c, &fake)).await;
    let sent = rpc(
        &gw,
        "chat.send",
        json!({"sessionKey": "busy", "message": "hold on"}),
    )
    .await;
    let run_id = sent["runId"]
        .as_str()
        .unwrap_or_else(|| panic!("{sent}"))
        .to_string();
    let h = [("x-clawgate-session-key", "busy")];
    let r = chat(gw.addr(), &h, &completion(json!("me too"), false)).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "session_busy");
    let mut sse = Sse::open(gw.addr(), &h, &completion(json!("me too"), true)).await;
    assert_eq!(sse.status, 409);
    let _ = sse.all().await;
    rpc(&gw, "chat.abort", json!({"runId": run_id})).await;
}

#[tokio::test]
async fn a_failing_provider_is_502() {
    // Not ready: the key's variable is not set.
    let gw = start(|c| {
        door(c);
        let a = c.default_agent_mut();
        a.provider = ProviderKind::Anthropic;
        a.api_key_env = Some("CLAWGATE_TEST_SURELY_UNSET_KEY".into());
    })
    .await;
    let r = chat(gw.addr(), &[], &completion(json!("hi"), false)).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "provider_failed");
    let mut sse = Sse::open(gw.addr(), &[], &completion(json!("hi"), true)).await;
    assert_eq!(sse.status, 502);
    let _ = sse.all().await;
    let list = rpc(&gw, "sessions.list", json!({})).await;
    assert!(!listed_keys(&list).iter().any(|k| k.starts_with("openai:")));
    drop(gw);
    // Ready, but the provider answers 400 (not retried): the run fails.
    let bad = Script::status(
        400,
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"bad model"}}"#,
        &[("content-type", "application/json")],
    );
    let fake = FakeProvider::start(vec![bad.clone(), bad]).await;
    let gw = start(|c| fake_agent(c, &fake)).await;
    let r = chat(gw.addr(), &[], &completion(json!("hi"), false)).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("bad model")),
        "{}",
        r.body
    );
    let mut sse = Sse::open(gw.addr(), &[], &completion(json!("hi"), true)).await;
    assert_eq!(
        sse.status, 502,
        "a run that fails before any text is a 502 too"
    );
    let _ = sse.all().await;
}

#[tokio::test]
async fn a_door_run_is_an_ordinary_run_approved_and_aborted_by_other_clients() {
    let gw = start(|c| {
        door(c);
        c.default_agent_mut().tools.exec = clawgate::config::ExecMode::Ask;
    })
    .await;
    let mut ws = RawWs::connect(gw.addr()).await;
    ws.subscribe(json!({"sessionKey": "shared", "events": ["chat"]}))
        .await;
    let h = [("x-clawgate-session-key", "shared")];
    let ask = format!("/tool exec {}", json!({"command": "echo approved-output"}));
    let mut sse = Sse::open(gw.addr(), &h, &completion(json!(ask), true)).await;
    assert_eq!(sse.status, 200);
    // Another client sees the approval the run waits for, and resolves it.
    let asked = loop {
        let p = ws.next_event().await["payload"].clone();
        if p["state"] == "approval_requested" {
            break p;
        }
    };
    let resolved = ws
        .call(
            "approvals.resolve",
            json!({"approvalId": asked["approvalId"], "decision": "allow"}),
        )
        .await;
    assert_eq!(resolved["result"]["state"], "allowed", "{resolved}");
    let chunks = sse.all().await;
    let text = content_of(&chunks);
    assert!(
        text.starts_with("Calling exec.\n\nTool exec returned: "),
        "{text:?}"
    );
    assert!(text.contains("approved-output"), "{text:?}");

    // Another client aborts a run of the door: the answer ends with what was said so far.
    let mut sse = Sse::open(gw.addr(), &h, &completion(json!(ask), true)).await;
    let run_id = sse
        .headers
        .get("x-clawgate-run-id")
        .and_then(|v| v.to_str().ok())
        .expect("run id header")
        .to_string();
    loop {
        let p = ws.next_event().await["payload"].clone();
        if p["state"] == "approval_requested" && p["runId"] == run_id.as_str() {
            break;
        }
    }
    let aborted = ws.call("chat.abort", json!({"runId": run_id})).await;
    assert_eq!(aborted["result"]["aborted"], json!([run_id]), "{aborted}");
    let chunks = sse.all().await;
    assert_eq!(chunks.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(content_of(&chunks), "Calling exec.");
    let history = rpc(&gw, "chat.history", json!({"sessionKey": "shared"})).await;
    assert!(
        history["messages"].as_array().expect("messages").len() >= 4,
        "both runs are in the session's transcript: {history}"
    );
}
