//! The streaming agent against a fake provider that is a real HTTP server on loopback, in both
//! wire formats, and the offline echo provider.

use std::time::{Duration, Instant};

use clawgate::config::{Config, ExecMode, ProviderKind};
use serde_json::{Value, json};

use crate::common::{RawWs, TestGateway, start};
use crate::fake_provider::{FakeProvider, Script, anthropic, openai};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Wire {
    Anthropic,
    OpenAi,
}

fn use_fake(c: &mut Config, wire: Wire, fake: &FakeProvider) {
    match wire {
        Wire::Anthropic => {
            c.default_agent_mut().provider = ProviderKind::Anthropic;
            c.default_agent_mut().base_url = Some(format!("http://{}", fake.addr));
            c.default_agent_mut().model = "claude-test".into();
        }
        Wire::OpenAi => {
            c.default_agent_mut().provider = ProviderKind::Openai;
            c.default_agent_mut().base_url = Some(format!("http://{}/v1", fake.addr));
            c.default_agent_mut().model = "gpt-test".into();
        }
    }
    // Any variable cargo always sets will do as the key.
    c.default_agent_mut().api_key_env = Some("CARGO_MANIFEST_DIR".into());
    c.default_agent_mut().delta_interval_ms = 20;
    c.default_agent_mut().idle_timeout_ms = 2000;
}

/// A text reply in `wire`'s format.
fn reply(wire: Wire, parts: &[&str]) -> Script {
    match wire {
        Wire::Anthropic => Script::sse(anthropic::reply(parts)),
        Wire::OpenAi => Script::sse(openai::reply(parts)),
    }
}

/// Tool calls (id, name, argument pieces) in `wire`'s format.
fn tool_calls(wire: Wire, calls: &[(&str, &str, &[&str])]) -> Script {
    match wire {
        Wire::Anthropic => Script::sse(anthropic::tools("Let me look.", calls)),
        Wire::OpenAi => {
            let mut v = vec![openai::role(), openai::text("Let me look.")];
            for (i, (id, name, pieces)) in calls.iter().enumerate() {
                v.push(openai::tool_delta(json!([{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}])));
                for p in pieces.iter() {
                    // Repeated ids, as some servers send them.
                    v.push(openai::tool_delta(
                        json!([{"index": i, "id": id, "function": {"arguments": p}}]),
                    ));
                }
            }
            v.push(openai::finish("tool_calls"));
            v.push(openai::usage(20, 10));
            v.push(openai::done());
            Script::sse(v)
        }
    }
}

/// Reads `ws` until a chat payload in `state` arrives; returns it.
async fn wait_payload(ws: &mut RawWs, state: &str) -> Value {
    loop {
        let p = ws.recv().await["params"]["result"]["payload"].clone();
        if p["state"] == state {
            return p;
        }
    }
}

fn states(payloads: &[Value]) -> Vec<String> {
    payloads
        .iter()
        .map(|p| p["state"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Concatenated deltas of `turn`.
fn deltas(payloads: &[Value], turn: u64) -> String {
    payloads
        .iter()
        .filter(|p| p["state"] == "delta" && p["turn"] == turn)
        .filter_map(|p| p["text"].as_str())
        .collect()
}

/// The message lines of `key`'s transcript; every line of the file must be whole.
fn transcript(gw: &TestGateway, key: &str) -> Vec<Value> {
    gw.transcript(key).whole().messages()
}

#[tokio::test]
async fn plain_reply_in_both_formats() {
    for wire in [Wire::Anthropic, Wire::OpenAi] {
        let fake =
            FakeProvider::start(vec![reply(wire, &["Hel", "lo, ", "world", "!"]).paced(30)]).await;
        let gw = start(|c| use_fake(c, wire, &fake)).await;
        let mut ws = RawWs::connect(gw.addr()).await;
        let payloads = ws
            .stream_run(json!({"message": "Say hello", "sessionKey": "p"}))
            .await;
        let st = states(&payloads);
        assert_eq!(
            st.first().map(String::as_str),
            Some("started"),
            "{wire:?}: {st:?}"
        );
        assert_eq!(st.last().map(String::as_str), Some("final"));
        let seqs: Vec<u64> = payloads
            .iter()
            .map(|p| p["runSeq"].as_u64().expect("runSeq"))
            .collect();
        assert_eq!(
            seqs,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "runSeq counts from 0"
        );
        let fin = payloads.last().expect("final");
        assert_eq!(fin["message"]["content"], "Hello, world!");
        assert_eq!(
            deltas(&payloads, 0),
            "Hello, world!",
            "{wire:?}: deltas concatenate to the message"
        );
        assert_eq!(fin["stopReason"], "end_turn");
        assert!(
            fin["usage"]["outputTokens"].as_u64().is_some_and(|n| n > 0),
            "{fin}"
        );
        assert_eq!(payloads[0]["userMessage"]["content"], "Say hello");
        let lines = transcript(&gw, "p");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["role"], "user");
        assert_eq!(lines[1]["role"], "assistant");
        assert_eq!(lines[1]["content"], "Hello, world!");
        assert_eq!(lines[1]["parentId"], lines[0]["id"]);
        let seen = fake.seen();
        assert_eq!(seen.len(), 1);
        match wire {
            Wire::Anthropic => {
                assert_eq!(seen[0].path, "/v1/messages");
                assert!(seen[0].headers.get("x-api-key").is_some());
                assert_eq!(
                    seen[0]
                        .headers
                        .get("anthropic-version")
                        .and_then(|v| v.to_str().ok()),
                    Some("2023-06-01")
                );
                assert_eq!(seen[0].body["stream"], true);
                assert_eq!(seen[0].body["messages"][0]["role"], "user");
            }
            Wire::OpenAi => {
                assert_eq!(seen[0].path, "/v1/chat/completions");
                assert!(seen[0].headers.get("authorization").is_some());
                assert_eq!(seen[0].body["stream_options"]["include_usage"], true);
                assert_eq!(seen[0].body["messages"][0]["content"], "Say hello");
            }
        }
        assert!(
            seen[0].body["tools"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t.to_string().contains("read_file")))
        );
    }
}

#[tokio::test]
async fn multi_turn_tool_loop_with_several_calls_in_one_turn() {
    for wire in [Wire::Anthropic, Wire::OpenAi] {
        let fake = FakeProvider::start(vec![
            tool_calls(
                wire,
                &[
                    ("call_1", "read_file", &["{\"path\": \"no", "tes.txt\"}"]),
                    ("call_2", "list_dir", &["{}"]),
                ],
            ),
            reply(wire, &["The notes say hi."]),
        ])
        .await;
        let gw = start(|c| use_fake(c, wire, &fake)).await;
        let ws_dir = gw.dir.path().join("workspace");
        std::fs::create_dir_all(&ws_dir).expect("mkdir");
        std::fs::write(ws_dir.join("notes.txt"), "hi from notes").expect("write");
        let mut ws = RawWs::connect(gw.addr()).await;
        let payloads = ws
            .stream_run(json!({"message": "Read my notes", "sessionKey": "t"}))
            .await;
        assert_eq!(
            states(&payloads)
                .into_iter()
                .filter(|s| s != "delta")
                .collect::<Vec<_>>(),
            vec![
                "started",
                "tool_start",
                "tool_end",
                "tool_start",
                "tool_end",
                "final"
            ],
            "{wire:?}"
        );
        let ends: Vec<&Value> = payloads
            .iter()
            .filter(|p| p["state"] == "tool_end")
            .collect();
        assert_eq!(ends[0]["toolCallId"], "call_1");
        assert_eq!(ends[0]["output"], "hi from notes");
        assert_eq!(ends[0]["isError"], false);
        assert_eq!(ends[1]["name"], "list_dir");
        assert!(
            ends[1]["output"]
                .as_str()
                .is_some_and(|o| o.contains("notes.txt"))
        );
        let start0 = payloads
            .iter()
            .find(|p| p["state"] == "tool_start")
            .expect("tool_start");
        assert_eq!(start0["input"], json!({"path": "notes.txt"}));
        assert_eq!(deltas(&payloads, 0), "Let me look.");
        assert_eq!(deltas(&payloads, 1), "The notes say hi.");
        let lines = transcript(&gw, "t");
        let roles: Vec<&str> = lines.iter().filter_map(|l| l["role"].as_str()).collect();
        assert_eq!(
            roles,
            vec!["user", "assistant", "tool", "tool", "assistant"]
        );
        assert_eq!(lines[1]["toolCalls"][0]["id"], "call_1");
        assert_eq!(lines[1]["toolCalls"][1]["id"], "call_2");
        assert_eq!(lines[2]["toolCallId"], "call_1", "results in call order");
        assert_eq!(
            lines[2].get("aborted"),
            None,
            "a finished run's results are not aborted"
        );
        assert_eq!(lines[3]["toolCallId"], "call_2");
        assert_eq!(lines[4]["content"], "The notes say hi.");
        let fin = payloads.last().expect("final");
        assert_eq!(fin["message"]["id"], lines[4]["id"]);
        // The second call carried the tool results back to the model.
        let second = &fake.seen()[1].body;
        let text = second["messages"].to_string();
        assert!(text.contains("hi from notes"), "{wire:?}: {text}");
        match wire {
            Wire::Anthropic => {
                assert!(text.contains("tool_result") && text.contains("tool_use_id"))
            }
            Wire::OpenAi => {
                assert!(text.contains("\"role\":\"tool\"") && text.contains("tool_call_id"))
            }
        }
    }
}

#[tokio::test]
async fn in_stream_error_keeps_partial_text() {
    let fake = FakeProvider::start(vec![
        Script::sse(vec![
            anthropic::start(),
            anthropic::text_block(0),
            anthropic::text(0, "Partial answ"),
            anthropic::error("invalid_request_error", "something broke"),
        ])
        .paced(40),
    ])
    .await;
    let gw = start(|c| use_fake(c, Wire::Anthropic, &fake)).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let payloads = ws
        .stream_run(json!({"message": "go", "sessionKey": "e"}))
        .await;
    let last = payloads.last().expect("terminal");
    assert_eq!(last["state"], "error");
    assert_eq!(last["error"]["kind"], "upstream");
    assert!(
        last["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("something broke"))
    );
    assert_eq!(last["error"]["retryable"], false);
    assert_eq!(deltas(&payloads, 0), "Partial answ");
    let lines = transcript(&gw, "e");
    assert_eq!(lines[1]["content"], "Partial answ");
    assert_eq!(
        lines[1]["error"]["kind"], "upstream",
        "the partial text is marked as such"
    );
}

#[tokio::test]
async fn rate_limited_then_success_is_retried() {
    for wire in [Wire::Anthropic, Wire::OpenAi] {
        let fake = FakeProvider::start(vec![
            Script::status(
                429,
                "{\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow down\"}}",
                &[("retry-after", "0")],
            ),
            Script::status(529, "{\"error\":{\"type\":\"overloaded_error\"}}", &[]),
            reply(wire, &["fine now"]),
        ])
        .await;
        let gw = start(|c| use_fake(c, wire, &fake)).await;
        let mut ws = RawWs::connect(gw.addr()).await;
        let payloads = ws.stream_run(json!({"message": "go"})).await;
        assert_eq!(
            payloads.last().expect("terminal")["state"],
            "final",
            "{wire:?}"
        );
        assert_eq!(
            payloads.last().expect("terminal")["message"]["content"],
            "fine now"
        );
        assert_eq!(fake.seen().len(), 3);
    }
}

#[tokio::test]
async fn stream_cut_midway_and_stall_past_idle_timeout() {
    for wire in [Wire::Anthropic, Wire::OpenAi] {
        let cut = match wire {
            Wire::Anthropic => Script::sse(vec![
                anthropic::start(),
                anthropic::text_block(0),
                anthropic::text(0, "half a "),
                anthropic::text(0, "sentence"),
            ])
            .paced(60),
            Wire::OpenAi => Script::sse(vec![
                openai::role(),
                openai::text("half a "),
                openai::text("sentence"),
            ])
            .paced(60),
        };
        let stall = match wire {
            Wire::Anthropic => Script::sse(vec![
                anthropic::start(),
                anthropic::text_block(0),
                anthropic::text(0, "wait"),
            ])
            .hold(5000),
            Wire::OpenAi => Script::sse(vec![openai::role(), openai::text("wait")]).hold(5000),
        };
        let fake = FakeProvider::start(vec![cut, stall]).await;
        let gw = start(|c| {
            use_fake(c, wire, &fake);
            c.default_agent_mut().idle_timeout_ms = 400;
        })
        .await;
        let mut ws = RawWs::connect(gw.addr()).await;
        let payloads = ws
            .stream_run(json!({"message": "go", "sessionKey": "cut"}))
            .await;
        let last = payloads.last().expect("terminal");
        assert_eq!(last["state"], "error", "{wire:?}: {last}");
        assert_eq!(last["error"]["kind"], "stream_cut");
        assert_eq!(deltas(&payloads, 0), "half a sentence");
        assert_eq!(transcript(&gw, "cut")[1]["content"], "half a sentence");
        let t0 = Instant::now();
        let payloads = ws
            .stream_run(json!({"message": "again", "sessionKey": "stall"}))
            .await;
        let last = payloads.last().expect("terminal");
        assert_eq!(last["state"], "error", "{wire:?}: {last}");
        assert_eq!(last["error"]["kind"], "timeout");
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "the idle timeout fired"
        );
    }
}

#[tokio::test]
async fn truncated_tool_calls_never_run() {
    // OpenAI: finish_reason "length" with half the arguments.
    let fake = FakeProvider::start(vec![
        Script::sse(vec![
            openai::role(),
            openai::tool_delta(json!([{"index": 0, "id": "call_w", "type": "function", "function": {"name": "write_file", "arguments": "{\"path\":\"x.txt\",\"content\":\"par"}}])),
            openai::finish("length"),
            openai::done(),
        ]),
        reply(Wire::OpenAi, &["ok"]),
    ])
    .await;
    let gw = start(|c| use_fake(c, Wire::OpenAi, &fake)).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let payloads = ws
        .stream_run(json!({"message": "write", "sessionKey": "tr"}))
        .await;
    let end = payloads
        .iter()
        .find(|p| p["state"] == "tool_end")
        .expect("tool_end");
    assert_eq!(end["isError"], true);
    assert!(
        end["output"]
            .as_str()
            .is_some_and(|o| o.starts_with("not run")),
        "{end}"
    );
    assert!(
        !gw.dir.path().join("workspace/x.txt").exists(),
        "never run with partial arguments"
    );
    let lines = transcript(&gw, "tr");
    assert_eq!(lines[2]["role"], "tool");
    assert_eq!(lines[2]["toolCallId"], "call_w");
}

#[tokio::test]
async fn abort_mid_stream_and_mid_tool() {
    let slow: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let slow_refs: Vec<&str> = slow.iter().map(String::as_str).collect();
    let fake = FakeProvider::start(vec![Script::sse(anthropic::reply(&slow_refs)).paced(50)]).await;
    let gw = start(|c| use_fake(c, Wire::Anthropic, &fake)).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let mut ctl = RawWs::connect(gw.addr()).await;
    let resp = ws
        .call(
            "chat.stream",
            json!({"message": "long", "sessionKey": "ab"}),
        )
        .await;
    assert!(resp.get("result").is_some());
    let run_id = loop {
        let p = ws.recv().await["params"]["result"]["payload"].clone();
        if p["state"] == "delta" {
            break p["runId"].as_str().unwrap_or_default().to_string();
        }
    };
    let t0 = Instant::now();
    let resp = ctl.call("chat.abort", json!({"runId": run_id})).await;
    assert_eq!(resp["result"]["aborted"], json!([run_id]));
    let mut text = String::new();
    loop {
        let p = ws.recv().await["params"]["result"]["payload"].clone();
        if p["state"] == "delta" {
            text.push_str(p["text"].as_str().unwrap_or(""));
        }
        if p["state"] == "aborted" {
            assert!(
                p["partialText"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("w0 ")),
                "{p}"
            );
            break;
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "aborted promptly (the protocol says within a second; the bound is loose for shared machines)"
    );
    let lines = transcript(&gw, "ab");
    assert_eq!(lines[1]["aborted"], true);
    assert!(
        lines[1]["content"]
            .as_str()
            .is_some_and(|c| c.starts_with("w0 "))
    );
    // Aborting it again: already finished.
    assert_eq!(
        ctl.call("chat.abort", json!({"runId": run_id})).await["result"]["aborted"],
        json!([])
    );
    assert_eq!(
        ctl.call("chat.abort", json!({"runId": "nope"})).await["error"]["code"],
        -32022
    );
    assert_eq!(
        ctl.call("chat.abort", json!({})).await["error"]["code"],
        -32602
    );

    // Mid-tool: echo calls exec, which sleeps; abort kills it.
    let gw = start(|c| c.default_agent_mut().tools.exec = ExecMode::On).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let mut ctl = RawWs::connect(gw.addr()).await;
    ws.call(
        "chat.stream",
        json!({"message": "/tool exec {\"command\": \"sleep 30\"}", "sessionKey": "mt"}),
    )
    .await;
    wait_payload(&mut ws, "tool_start").await;
    let t0 = Instant::now();
    let resp = ctl.call("chat.abort", json!({"sessionKey": "mt"})).await;
    assert_eq!(resp["result"]["aborted"].as_array().map(Vec::len), Some(1));
    wait_payload(&mut ws, "aborted").await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "aborted promptly, tool included (not after the 30 s sleep)"
    );
    let lines = transcript(&gw, "mt");
    let tool = lines
        .iter()
        .find(|l| l["role"] == "tool")
        .expect("every call has a result");
    assert_eq!(tool["isError"], true);
    assert!(
        tool["content"]
            .as_str()
            .is_some_and(|c| c.contains("aborted") || c.contains("killed")),
        "{tool}"
    );
    // The outcome is a typed field of the stored result, as clients read it back.
    assert_eq!(tool["aborted"], true, "{tool}");
    let history = ctl.call("chat.history", json!({"sessionKey": "mt"})).await;
    let tools = tool_results(&history);
    assert_eq!(tools.len(), 1, "{history}");
    assert_eq!(tools[0]["aborted"], true, "{history}");
    assert_eq!(tools[0]["isError"], true, "{history}");
}

/// The tool results in a `chat.history` answer.
fn tool_results(history: &Value) -> Vec<Value> {
    history["result"]["messages"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["role"] == "tool").cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn every_tool_result_of_an_aborted_run_is_marked_aborted() {
    // Two calls in one turn: the run is aborted while the first runs, so the second never does.
    let fake = FakeProvider::start(vec![tool_calls(
        Wire::Anthropic,
        &[
            ("call_sleep", "exec", &["{\"command\": \"sleep 30\"}"]),
            ("call_list", "list_dir", &["{}"]),
        ],
    )])
    .await;
    let gw = start(|c| {
        use_fake(c, Wire::Anthropic, &fake);
        c.default_agent_mut().tools.exec = ExecMode::On;
    })
    .await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let mut ctl = RawWs::connect(gw.addr()).await;
    let resp = ws
        .call(
            "chat.stream",
            json!({"message": "two tools", "sessionKey": "ar"}),
        )
        .await;
    assert!(resp.get("result").is_some(), "{resp}");
    wait_payload(&mut ws, "tool_start").await;
    let resp = ctl.call("chat.abort", json!({"sessionKey": "ar"})).await;
    assert_eq!(
        resp["result"]["aborted"].as_array().map(Vec::len),
        Some(1),
        "{resp}"
    );
    wait_payload(&mut ws, "aborted").await;
    let history = ctl.call("chat.history", json!({"sessionKey": "ar"})).await;
    let tools = tool_results(&history);
    assert_eq!(tools.len(), 2, "every call has a result: {history}");
    // The killed command's own result, produced after the abort.
    assert_eq!(tools[0]["toolCallId"], "call_sleep", "{history}");
    assert_eq!(tools[0]["aborted"], true, "{history}");
    assert_eq!(tools[0]["isError"], true, "{history}");
    // The call the run never reached.
    assert_eq!(tools[1]["toolCallId"], "call_list", "{history}");
    assert_eq!(tools[1]["aborted"], true, "{history}");
    assert_eq!(tools[1]["isError"], true, "{history}");
    assert_eq!(
        tools[1]["content"], "aborted: the run was stopped before this tool finished",
        "{history}"
    );
}

#[tokio::test]
async fn idempotent_resend_queueing_and_two_sessions() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let mut watcher = RawWs::connect(gw.addr()).await;
    watcher.subscribe(json!({"events": ["chat"]})).await;
    let a = ws
        .call(
            "chat.send",
            json!({"message": "one", "sessionKey": "q", "idempotencyKey": "k-1"}),
        )
        .await;
    assert_eq!(a["result"]["status"], "started", "{a}");
    let b = ws
        .call("chat.send", json!({"message": "two", "sessionKey": "q"}))
        .await;
    assert_eq!(b["result"]["status"], "queued");
    let c = ws
        .call(
            "chat.send",
            json!({"message": "other session", "sessionKey": "q2"}),
        )
        .await;
    assert_eq!(
        c["result"]["status"], "started",
        "other sessions run concurrently"
    );
    let again = ws.call("chat.send", json!({"message": "different text, same key", "sessionKey": "q", "idempotencyKey": "k-1"})).await;
    assert_eq!(again["result"]["runId"], a["result"]["runId"]);
    assert!(
        matches!(
            again["result"]["status"].as_str(),
            Some("in_flight" | "queued")
        ),
        "{again}"
    );
    let run_a = a["result"]["runId"].as_str().expect("id").to_string();
    let run_b = b["result"]["runId"].as_str().expect("id").to_string();
    let run_c = c["result"]["runId"].as_str().expect("id").to_string();
    let mut order: Vec<(String, String)> = Vec::new();
    let mut seqs_b: Vec<u64> = Vec::new();
    let mut finals = 0;
    while finals < 3 {
        let e = watcher.next_event().await;
        let p = &e["payload"];
        if p["runId"] == run_b.as_str() {
            seqs_b.push(p["runSeq"].as_u64().unwrap_or(u64::MAX));
        }
        let run = p["runId"].as_str().unwrap_or("").to_string();
        let state = p["state"].as_str().unwrap_or("").to_string();
        if state == "final" {
            finals += 1;
        }
        if state == "queued" {
            assert_eq!(p["position"], 1);
        }
        order.push((run, state));
    }
    let pos = |run: &str, state: &str| {
        order
            .iter()
            .position(|(r, s)| r == run && s == state)
            .unwrap_or(usize::MAX)
    };
    assert!(
        pos(&run_a, "final") < pos(&run_b, "started"),
        "one run per session at a time, in order"
    );
    assert!(
        pos(&run_c, "started") < pos(&run_a, "final"),
        "another session runs alongside"
    );
    // Done: the same key answers done with its outcome and writes nothing.
    let before = transcript(&gw, "q").len();
    let done = ws
        .call(
            "chat.send",
            json!({"message": "one", "sessionKey": "q", "idempotencyKey": "k-1"}),
        )
        .await;
    assert_eq!(done["result"]["status"], "done");
    assert_eq!(done["result"]["outcome"], "final");
    assert_eq!(done["result"]["runId"], run_a.as_str());
    assert_eq!(
        transcript(&gw, "q").len(),
        before,
        "a repeated key writes nothing"
    );
    let user_lines: Vec<Value> = transcript(&gw, "q")
        .into_iter()
        .filter(|l| l["role"] == "user")
        .collect();
    assert_eq!(user_lines[0]["idempotencyKey"], "k-1");
    // chat.stream with a done key gets the terminal payload alone.
    let resp = ws
        .call(
            "chat.stream",
            json!({"message": "one", "sessionKey": "q", "idempotencyKey": "k-1"}),
        )
        .await;
    let sub = resp["result"].as_str().expect("sub").to_string();
    loop {
        let msg = ws.recv().await;
        if msg["params"]["subscription"] == sub.as_str() {
            assert_eq!(msg["params"]["result"]["payload"]["state"], "final");
            assert_eq!(msg["params"]["result"]["payload"]["runId"], run_a.as_str());
            break;
        }
    }
}

#[tokio::test]
async fn send_validation_missing_key_max_turns_and_run_timeout() {
    let gw = start(|c| {
        c.default_agent_mut().provider = ProviderKind::Anthropic;
        c.default_agent_mut().api_key_env = Some("CLAWGATE_TEST_SURELY_UNSET_KEY".into());
    })
    .await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let resp = ws.call("chat.send", json!({"message": "hi"})).await;
    assert_eq!(resp["error"]["code"], -32026, "{resp}");
    assert_eq!(resp["error"]["data"]["kind"], "upstream");
    assert_eq!(resp["error"]["data"]["upstream"]["kind"], "auth");
    assert!(
        resp["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("CLAWGATE_TEST_SURELY_UNSET_KEY"))
    );
    for (params, path) in [
        (json!({"message": "   "}), "message"),
        (json!({"message": "x", "sessionKey": "a/b"}), "sessionKey"),
        (
            json!({"message": "x", "idempotencyKey": ""}),
            "idempotencyKey",
        ),
        (
            json!({"message": "x", "idempotencyKey": "k".repeat(129)}),
            "idempotencyKey",
        ),
        (json!({"message": "x", "bogus": 1}), "bogus"),
    ] {
        let resp = ws.call("chat.send", params.clone()).await;
        assert_eq!(resp["error"]["code"], -32602, "{params}: {resp}");
        assert_eq!(resp["error"]["data"]["path"], path);
    }

    let gw = start(|c| c.default_agent_mut().max_turns = 1).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let payloads = ws.stream_run(json!({"message": "/tool list_dir {}"})).await;
    let fin = payloads.last().expect("terminal");
    assert_eq!(fin["state"], "final");
    assert_eq!(fin["stopReason"], "max_turns");

    let slow: Vec<String> = (0..50).map(|i| format!("{i} ")).collect();
    let slow_refs: Vec<&str> = slow.iter().map(String::as_str).collect();
    let fake = FakeProvider::start(vec![Script::sse(openai::reply(&slow_refs)).paced(40)]).await;
    let gw = start(|c| {
        use_fake(c, Wire::OpenAi, &fake);
        c.default_agent_mut().run_timeout_ms = 300;
    })
    .await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let payloads = ws.stream_run(json!({"message": "slow"})).await;
    let last = payloads.last().expect("terminal");
    assert_eq!(last["state"], "error");
    assert_eq!(last["error"]["kind"], "timeout");
}

#[tokio::test]
async fn catalogue_methods() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let models = ws.call("models.list", json!({})).await;
    let m = &models["result"]["models"][0];
    assert_eq!(m["provider"], "echo");
    assert_eq!(m["default"], true);
    assert!(
        m["description"]
            .as_str()
            .is_some_and(|d| d.contains("offline stand-in"))
    );
    let tools = ws.call("tools.catalog", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for name in ["read_file", "write_file", "list_dir", "exec"] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert_eq!(tools["result"]["tools"][0]["source"], "builtin");
    assert!(tools["result"]["tools"][0]["inputSchema"].is_object());
}

#[tokio::test]
async fn inject_waits_for_the_message_boundary_and_reset_aborts_the_run() {
    let gw = start(|c| c.default_agent_mut().tools.exec = ExecMode::On).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let mut ctl = RawWs::connect(gw.addr()).await;
    ws.call(
        "chat.stream",
        json!({"message": "/tool exec {\"command\": \"sleep 0.5\"}", "sessionKey": "bd"}),
    )
    .await;
    wait_payload(&mut ws, "tool_start").await;
    // Injected while the tool runs: it must land after the tool's result, never between.
    let inj = ctl
        .call(
            "chat.inject",
            json!({"sessionKey": "bd", "role": "system", "content": "note"}),
        )
        .await;
    assert!(inj.get("result").is_some(), "{inj}");
    wait_payload(&mut ws, "final").await;
    let roles: Vec<String> = transcript(&gw, "bd")
        .iter()
        .map(|l| l["role"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        roles,
        vec!["user", "assistant", "tool", "system", "assistant"]
    );

    // Reset during a run: the run is aborted first, then the transcript is archived.
    ws.call(
        "chat.stream",
        json!({"message": "/tool exec {\"command\": \"sleep 30\"}", "sessionKey": "rs"}),
    )
    .await;
    wait_payload(&mut ws, "tool_start").await;
    let t0 = Instant::now();
    let reset = ctl.call("sessions.reset", json!({"key": "rs"})).await;
    assert_eq!(reset["result"]["messageCount"], 0, "{reset}");
    wait_payload(&mut ws, "aborted").await;
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn shutdown_aborts_runs_and_keeps_partial_text() {
    let slow: Vec<String> = (0..100).map(|i| format!("s{i} ")).collect();
    let slow_refs: Vec<&str> = slow.iter().map(String::as_str).collect();
    let fake = FakeProvider::start(vec![
        Script::sse(anthropic::reply(&slow_refs)).paced(50),
        Script::sse(anthropic::reply(&slow_refs)).paced(50),
    ])
    .await;
    // Version 1's rule, kept for agents with `on_restart = "fail"` (the default suspends).
    let gw = start(|c| {
        use_fake(c, Wire::Anthropic, &fake);
        c.default_agent_mut().on_restart = clawgate::config::OnRestart::Fail;
    })
    .await;
    let mut watcher = RawWs::connect(gw.addr()).await;
    watcher.subscribe(json!({"events": ["chat"]})).await;
    // A streamed run on another session: its stream ends with its `aborted`.
    let mut streamer = RawWs::connect(gw.addr()).await;
    let stream = streamer
        .call(
            "chat.stream",
            json!({"message": "long", "sessionKey": "sd2"}),
        )
        .await;
    let stream_id = stream["result"].as_str().expect("stream").to_string();
    let mut ws = RawWs::connect(gw.addr()).await;
    ws.call("chat.send", json!({"message": "long", "sessionKey": "sd"}))
        .await;
    ws.call(
        "chat.send",
        json!({"message": "queued", "sessionKey": "sd"}),
    )
    .await;
    loop {
        let e = watcher.next_event().await;
        if e["payload"]["state"] == "delta" && e["sessionKey"] == "sd" {
            break;
        }
    }
    let gateway = gw.running.gateway.clone();
    let stopper = tokio::spawn(async move { gateway.shutdown("test").await });
    let mut aborted = 0;
    loop {
        let e = watcher.next_event().await;
        if e["event"] == "shutdown" {
            break;
        }
        if e["payload"]["state"] == "aborted" {
            aborted += 1;
        }
    }
    assert_eq!(
        aborted, 3,
        "the active runs and the queued one each get their aborted, before shutdown"
    );
    stopper.await.expect("stopped");
    // The stream's last notification is its run's `aborted`: nothing follows it.
    let mut last_state = None;
    while let Some(msg) = streamer.try_recv(Duration::from_millis(300)).await {
        if msg["params"]["subscription"] == stream_id.as_str() {
            last_state = Some(msg["params"]["result"]["payload"]["state"].clone());
        }
    }
    assert_eq!(last_state, Some(json!("aborted")));
    let lines = transcript(&gw, "sd");
    assert_eq!(
        lines.last().map(|l| l["aborted"].clone()),
        Some(json!(true)),
        "partial text kept"
    );
}

#[tokio::test]
async fn unstream_stops_the_stream_not_the_run_and_the_run_end_updates_the_session() {
    let slow: Vec<String> = (0..20).map(|i| format!("u{i} ")).collect();
    let slow_refs: Vec<&str> = slow.iter().map(String::as_str).collect();
    let fake = FakeProvider::start(vec![Script::sse(anthropic::reply(&slow_refs)).paced(20)]).await;
    let gw = start(|c| use_fake(c, Wire::Anthropic, &fake)).await;
    let mut watcher = RawWs::connect(gw.addr()).await;
    watcher
        .subscribe(json!({"events": ["chat", "sessions.changed"], "sessionKey": "un"}))
        .await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let resp = ws
        .call("chat.stream", json!({"message": "go", "sessionKey": "un"}))
        .await;
    let sub = resp["result"].as_str().expect("subscription").to_string();
    assert_eq!(ws.call("chat.unstream", json!([sub])).await["result"], true);
    // Deltas that came before the answer to the unsubscribe are fine.
    ws.take_held();
    assert_eq!(
        ws.call("chat.unstream", json!({"subscription": sub})).await["result"],
        false
    );
    for msg in ws.take_held() {
        assert_ne!(msg["params"]["subscription"], sub.as_str(), "{msg}");
    }
    // The run goes on to its end, and the end of the run updates the session.
    let mut saw_final = false;
    loop {
        let e = watcher.next_event().await;
        if e["event"] == "chat" && e["payload"]["state"] == "final" {
            saw_final = true;
        }
        if saw_final && e["event"] == "sessions.changed" && e["payload"]["reason"] == "updated" {
            assert_eq!(e["payload"]["session"]["messageCount"], 2);
            break;
        }
    }
    // Nothing more reached the unsubscribed stream.
    while let Some(msg) = ws.try_recv(Duration::from_millis(200)).await {
        assert_ne!(msg["params"]["subscription"], sub.as_str(), "{msg}");
    }
}
