//! Context and compaction over real sockets: the automatic compaction past the threshold, the
//! `context_length` path, the drop when the summary call fails, `sessions.compact`,
//! `chat.history`'s compactions, a restart after a compaction, and echo's offline summary. The
//! loopback fake provider records what each model call was sent.

use clawgate::config::{Config, ProviderKind};
use serde_json::{Value, json};

use crate::common::launcher::Launcher;
use crate::common::{RawWs, TestGateway, start};
use crate::fake_provider::{FakeProvider, Script, anthropic};

const SUMMARY_HEADING: &str = "[Summary of the earlier conversation]";

/// The default agent on the fake provider (Anthropic's wire), keeping `keep` messages.
fn use_fake(c: &mut Config, fake: &FakeProvider, keep: usize) {
    let agent = c.default_agent_mut();
    agent.provider = ProviderKind::Anthropic;
    agent.base_url = Some(format!("http://{}", fake.addr));
    agent.model = "claude-test".into();
    // Any variable cargo always sets will do as the key.
    agent.api_key_env = Some("CARGO_MANIFEST_DIR".into());
    agent.delta_interval_ms = 20;
    agent.idle_timeout_ms = 5000;
    agent.context.keep_messages = keep;
}

fn reply(text: &str) -> Script {
    Script::sse(anthropic::reply(&[text]))
}

fn reply_reading(text: &str, input_tokens: u64) -> Script {
    Script::sse(anthropic::reply_reading(&[text], input_tokens))
}

/// A provider refusal of the context's size, as Anthropic words it.
fn too_long() -> Script {
    Script::status(
        400,
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
        &[("content-type", "application/json")],
    )
}

/// The text of each content block of each message the model was sent, as `role: text` (a
/// tool block as its type).
fn sent(body: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for m in body["messages"].as_array().cloned().unwrap_or_default() {
        for block in m["content"].as_array().cloned().unwrap_or_default() {
            let text = block["text"].as_str().map_or_else(
                || block["type"].as_str().unwrap_or("?").to_string(),
                str::to_string,
            );
            out.push(format!("{}: {text}", m["role"].as_str().unwrap_or("?")));
        }
    }
    out
}

/// The compaction lines of `key`'s transcript; every line must be whole.
fn compactions(gw: &TestGateway, key: &str) -> Vec<Value> {
    gw.transcript(key)
        .whole()
        .lines
        .iter()
        .filter_map(|l| match l {
            crate::common::transcript::Line::Other(v) if v["type"] == "compaction" => {
                Some(v.clone())
            }
            _ => None,
        })
        .collect()
}

fn states(payloads: &[Value]) -> Vec<&str> {
    payloads
        .iter()
        .map(|p| p["state"].as_str().unwrap_or(""))
        .filter(|s| *s != "delta")
        .collect()
}

async fn run(ws: &mut RawWs, key: &str, message: &str) -> Vec<Value> {
    let payloads = ws
        .stream_run(json!({"sessionKey": key, "message": message}))
        .await;
    assert_eq!(
        payloads.last().map(|p| p["state"].clone()),
        Some(json!("final")),
        "{payloads:?}"
    );
    payloads
}

#[tokio::test]
async fn a_long_session_is_compacted_before_the_call_that_would_pass_the_threshold() {
    let fake = FakeProvider::start(vec![
        reply("one back"),
        // The second call reports reading 600 tokens: the third passes 1000 × 0.5.
        reply_reading("two back", 600),
        reply("They said one and two."),
        reply("three back"),
        reply("four back"),
    ])
    .await;
    let gw = start(|c| {
        use_fake(c, &fake, 2);
        c.default_agent_mut().context.max_tokens = 1000;
        c.default_agent_mut().context.compact_threshold = 0.5;
    })
    .await;
    let mut ws = RawWs::connect(gw.addr()).await;
    // Long enough that its summary is shorter.
    let first = format!("first message {}", "lorem ".repeat(100));
    run(&mut ws, "long", &first).await;
    run(&mut ws, "long", "second message").await;
    assert_eq!(fake.seen().len(), 2, "no compaction below the threshold");
    let payloads = run(&mut ws, "long", "third message").await;

    // The summary call came first: the older part, no tools, the summary prompt.
    let seen = fake.seen();
    assert_eq!(seen.len(), 4);
    let summary_call = &seen[2].body;
    assert!(summary_call.get("tools").is_none(), "{summary_call}");
    assert!(
        summary_call["system"]
            .as_str()
            .is_some_and(|s| s.contains("summary")),
        "{summary_call}"
    );
    let asked = sent(summary_call).join("\n");
    for part in [
        "[user] first message",
        "[assistant] one back",
        "[user] second message",
    ] {
        assert!(asked.contains(part), "{part:?} in {asked}");
    }
    assert!(
        !asked.contains("two back"),
        "kept messages are not summarised: {asked}"
    );
    assert!(!asked.contains("third message"), "{asked}");
    // The call after it: the summary as the first user message, then the kept messages.
    assert_eq!(
        sent(&seen[3].body),
        [
            format!("user: {SUMMARY_HEADING}\nThey said one and two."),
            "assistant: two back".to_string(),
            "user: third message".to_string(),
        ]
    );

    // Announced inside the run, before the turn's text.
    assert_eq!(states(&payloads), ["started", "compacted", "final"]);
    let compacted = &payloads[1];
    assert_eq!(compacted["reason"], "auto");
    assert_eq!(compacted["turn"], 0);
    assert_eq!(compacted["runId"], payloads[0]["runId"]);
    assert_eq!(compacted["runSeq"], 1);
    let before = compacted["tokensBefore"].as_u64().expect("tokensBefore");
    let after = compacted["tokensAfter"].as_u64().expect("tokensAfter");
    assert!(before > 500 && after < before, "{compacted}");

    // The transcript line, with the summary call's usage; nothing is deleted.
    let lines = compactions(&gw, "long");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    let messages = gw.transcript("long").messages();
    assert_eq!(messages.len(), 6);
    assert_eq!(line["summary"], "They said one and two.");
    assert_eq!(line["firstKeptId"], messages[3]["id"], "from `two back` on");
    assert_eq!(line["reason"], "auto");
    assert_eq!(
        (line["tokensBefore"].as_u64(), line["tokensAfter"].as_u64()),
        (Some(before), Some(after))
    );
    assert_eq!(
        line["usage"],
        json!({"inputTokens": 25, "outputTokens": 15})
    );
    assert!(line["id"].is_string() && line["ts"].is_u64(), "{line}");
    assert_eq!(gw.transcript("long").header["version"], 2);
    // The summary call is not a turn: the run's usage is its one turn's.
    assert_eq!(
        payloads.last().map(|p| p["usage"]["inputTokens"].clone()),
        Some(json!(25))
    );

    // chat.history has every message, and the compaction among them.
    let history = ws
        .call("chat.history", json!({"sessionKey": "long", "limit": 100}))
        .await["result"]
        .clone();
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(6));
    assert_eq!(
        history["compactions"],
        json!([{"id": line["id"], "ts": line["ts"], "summary": "They said one and two.", "firstKeptId": messages[3]["id"], "reason": "auto"}])
    );
    // The compaction follows `third message` (it was written before the model answered):
    // the page holding that message holds it, an older one does not.
    let page = ws
        .call(
            "chat.history",
            json!({"sessionKey": "long", "limit": 1, "beforeId": messages[5]["id"]}),
        )
        .await["result"]
        .clone();
    assert_eq!(page["messages"][0]["content"], "third message");
    assert_eq!(page["compactions"].as_array().map(Vec::len), Some(1));
    let page = ws
        .call("chat.history", json!({"sessionKey": "long", "limit": 1}))
        .await["result"]
        .clone();
    assert_eq!(page["compactions"], json!([]));

    // The next call starts at the summary too (its estimate is back under the threshold).
    run(&mut ws, "long", "fourth message").await;
    let seen = fake.seen();
    assert_eq!(seen.len(), 5, "no second compaction");
    assert_eq!(
        sent(&seen[4].body),
        [
            format!("user: {SUMMARY_HEADING}\nThey said one and two."),
            "assistant: two back".to_string(),
            "user: third message".to_string(),
            "assistant: three back".to_string(),
            "user: fourth message".to_string(),
        ]
    );
}

#[tokio::test]
async fn a_context_length_error_compacts_and_retries_once() {
    let fake = FakeProvider::start(vec![
        reply("one back"),
        reply("two back"),
        too_long(),
        reply("Summary: one and two."),
        reply("three back"),
    ])
    .await;
    let gw = start(|c| use_fake(c, &fake, 2)).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    run(&mut ws, "big", "first message").await;
    run(&mut ws, "big", "second message").await;
    let payloads = run(&mut ws, "big", "third message").await;
    assert_eq!(states(&payloads), ["started", "compacted", "final"]);
    assert_eq!(payloads[1]["reason"], "overflow");
    assert_eq!(payloads[1]["turn"], 0);
    assert_eq!(
        payloads.last().map(|p| p["message"]["content"].clone()),
        Some(json!("three back"))
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 5);
    assert_eq!(
        sent(&seen[2].body).len(),
        5,
        "the refused call had the whole context"
    );
    assert_eq!(
        sent(&seen[4].body),
        [
            format!("user: {SUMMARY_HEADING}\nSummary: one and two."),
            "assistant: two back".to_string(),
            "user: third message".to_string(),
        ]
    );
    let lines = compactions(&gw, "big");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["reason"], "overflow");
    assert_eq!(lines[0]["summary"], "Summary: one and two.");
}

#[tokio::test]
async fn a_second_context_length_error_ends_the_run() {
    let fake = FakeProvider::start(vec![
        reply("one back"),
        reply("two back"),
        too_long(),
        reply("Summary: one and two."),
        too_long(),
    ])
    .await;
    let gw = start(|c| use_fake(c, &fake, 2)).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    run(&mut ws, "big", "first message").await;
    run(&mut ws, "big", "second message").await;
    let payloads = ws
        .stream_run(json!({"sessionKey": "big", "message": "third message"}))
        .await;
    assert_eq!(states(&payloads), ["started", "compacted", "error"]);
    assert_eq!(payloads[2]["error"]["kind"], "context_length");
    assert_eq!(fake.seen().len(), 5, "retried once, compacted once");
    assert_eq!(compactions(&gw, "big").len(), 1);

    // Nothing older to compact: the error ends the run at once.
    let fake = FakeProvider::start(vec![too_long()]).await;
    let gw = start(|c| use_fake(c, &fake, 2)).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let payloads = ws
        .stream_run(json!({"sessionKey": "one", "message": "a very long first message"}))
        .await;
    assert_eq!(states(&payloads), ["started", "error"]);
    assert_eq!(payloads[1]["error"]["kind"], "context_length");
    assert_eq!(fake.seen().len(), 1);
    assert!(compactions(&gw, "one").is_empty());
}

#[tokio::test]
async fn when_the_summary_call_fails_the_oldest_turns_are_dropped() {
    let fake = FakeProvider::start(vec![
        reply("one back"),
        reply_reading("two back", 900),
        Script::status(
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"bad request"}}"#,
            &[],
        ),
        reply("three back"),
    ])
    .await;
    let gw = start(|c| {
        use_fake(c, &fake, 2);
        c.default_agent_mut().context.max_tokens = 1000;
    })
    .await;
    let mut ws = RawWs::connect(gw.addr()).await;
    run(&mut ws, "drop", "first message").await;
    run(&mut ws, "drop", "second message").await;
    let payloads = run(&mut ws, "drop", "third message").await;
    assert_eq!(states(&payloads), ["started", "compacted", "final"]);
    assert_eq!(payloads[1]["reason"], "overflow", "announced the same way");
    let seen = fake.seen();
    assert_eq!(seen.len(), 4);
    let context = sent(&seen[3].body);
    assert_eq!(context.len(), 3, "{context:?}");
    assert!(
        context[0].starts_with(&format!(
            "user: {SUMMARY_HEADING}\n[3 earlier messages were dropped"
        )),
        "{context:?}"
    );
    assert_eq!(context[1..], ["assistant: two back", "user: third message"]);
    let lines = compactions(&gw, "drop");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["reason"], "overflow");
    assert!(
        lines[0].get("usage").is_none(),
        "no summary call succeeded: {}",
        lines[0]
    );
    // Dropped from the context only: the transcript keeps them.
    assert_eq!(gw.transcript("drop").messages().len(), 6);
}

#[tokio::test]
async fn sessions_compact_summarises_on_request_and_refuses_during_a_run() {
    let fake = FakeProvider::start(vec![
        reply("one back"),
        reply("two back"),
        reply("Summary with the numbers."),
        // Slow: the run is still going when sessions.compact is called.
        Script::sse(anthropic::reply(&["slow", " answer"])).paced(300),
    ])
    .await;
    let gw = start(|c| use_fake(c, &fake, 2)).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let resp = ws.call("sessions.compact", json!({"key": "nope"})).await;
    assert_eq!(resp["error"]["code"], -32022, "{resp}");
    run(&mut ws, "m", "first message").await;
    // Two messages, both kept: too little to compact.
    let resp = ws.call("sessions.compact", json!({"key": "m"})).await;
    assert_eq!(resp["result"], json!({"compacted": false}), "{resp}");
    let resp = ws
        .call(
            "sessions.compact",
            json!({"key": "m", "instructions": "  "}),
        )
        .await;
    assert_eq!(resp["error"]["code"], -32602, "{resp}");
    assert_eq!(resp["error"]["data"]["path"], "instructions");
    run(&mut ws, "m", "second message").await;

    ws.subscribe(json!({"events": ["chat"], "sessionKey": "m"}))
        .await;
    let resp = ws
        .call(
            "sessions.compact",
            json!({"key": "m", "instructions": "Keep the numbers."}),
        )
        .await;
    let result = resp["result"].clone();
    assert_eq!(result["compacted"], true, "{resp}");
    let messages = gw.transcript("m").messages();
    assert_eq!(result["firstKeptId"], messages[2]["id"]);
    let (before, after) = (
        result["tokensBefore"].as_u64().expect("before"),
        result["tokensAfter"].as_u64().expect("after"),
    );
    assert!(before > 0 && after > 0, "{result}");
    // The caller's instructions reach the summary call.
    let seen = fake.seen();
    assert_eq!(seen.len(), 3);
    let asked = sent(&seen[2].body).join("\n");
    assert!(
        asked.contains("<instructions>\nKeep the numbers.\n</instructions>"),
        "{asked}"
    );
    assert!(
        asked.contains("[user] first message") && asked.contains("[assistant] one back"),
        "{asked}"
    );
    // Announced outside any run.
    let payload = ws.next_payload_of("chat").await;
    assert_eq!(
        payload,
        json!({"sessionKey": "m", "state": "compacted", "tokensBefore": before, "tokensAfter": after, "reason": "manual"})
    );
    let lines = compactions(&gw, "m");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["reason"], "manual");
    assert_eq!(lines[0]["summary"], "Summary with the numbers.");

    // During a run of the session: -32023 naming it.
    let sent_run = ws
        .call(
            "chat.send",
            json!({"sessionKey": "m", "message": "third message"}),
        )
        .await;
    let run_id = sent_run["result"]["runId"].clone();
    let resp = ws.call("sessions.compact", json!({"key": "m"})).await;
    assert_eq!(resp["error"]["code"], -32023, "{resp}");
    assert_eq!(resp["error"]["data"]["kind"], "conflict");
    assert_eq!(resp["error"]["data"]["activeRunId"], run_id);
    loop {
        let p = ws.next_payload_of("chat").await;
        if p["state"] == "final" {
            break;
        }
    }
    // The run was sent the summary, then the kept messages.
    let seen = fake.seen();
    assert_eq!(
        sent(&seen[3].body),
        [
            format!("user: {SUMMARY_HEADING}\nSummary with the numbers."),
            "user: second message".to_string(),
            "assistant: two back".to_string(),
            "user: third message".to_string(),
        ]
    );
}

#[tokio::test]
async fn echo_summarises_deterministically_offline() {
    let gw = start(|c| c.default_agent_mut().context.keep_messages = 2).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    for m in ["alpha beta gamma delta", "second one", "third"] {
        run(&mut ws, "e", m).await;
    }
    let resp = ws.call("sessions.compact", json!({"key": "e"})).await;
    assert_eq!(resp["result"]["compacted"], true, "{resp}");
    let history = ws.call("chat.history", json!({"sessionKey": "e"})).await["result"].clone();
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(6));
    let compactions = history["compactions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(compactions.len(), 1, "{history}");
    assert_eq!(
        compactions[0]["summary"],
        "Summary of 4 messages: alpha beta gamma; Echo: alpha beta; second one; Echo: second one"
    );
    assert_eq!(compactions[0]["reason"], "manual");
    assert_eq!(compactions[0]["firstKeptId"], history["messages"][4]["id"]);
    // Echo's summary call reports its words as usage; the line keeps it.
    let line = &self::compactions(&gw, "e")[0];
    assert_eq!(line["usage"]["outputTokens"], 15);
    // A second compaction right away: the two kept messages are all there is.
    let resp = ws.call("sessions.compact", json!({"key": "e"})).await;
    assert_eq!(resp["result"], json!({"compacted": false}));

    // Keeping two would start at a tool result: the cut moves back to its call.
    for _ in 0..2 {
        run(&mut ws, "t", "/tool list_dir {}").await;
    }
    let resp = ws.call("sessions.compact", json!({"key": "t"})).await;
    let messages = gw.transcript("t").messages();
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "tool",
            "assistant",
            "user",
            "assistant",
            "tool",
            "assistant"
        ]
    );
    assert_eq!(resp["result"]["firstKeptId"], messages[5]["id"], "{resp}");
    assert!(messages[5]["toolCalls"].is_array());
    let summary = self::compactions(&gw, "t")[0]["summary"].clone();
    // The workspace is empty: the listing has no words, which echo gives as `…`.
    assert_eq!(messages[2]["content"], "");
    assert_eq!(
        summary,
        "Summary of 5 messages: /tool list_dir {}; Calling list_dir.; …; Tool list_dir returned:; /tool list_dir {}"
    );
}

#[tokio::test]
async fn after_a_restart_the_context_still_starts_at_the_summary() {
    let fake = FakeProvider::start(vec![
        reply("one back"),
        reply("two back"),
        reply("Before the restart."),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |fake: &FakeProvider| {
        format!(
            "[agents.main]\nprovider = \"anthropic\"\nbase_url = \"http://{}\"\nmodel = \"claude-test\"\napi_key_env = \"FAKE_PROVIDER_KEY\"\nidle_timeout_ms = 5000\n\n[agents.main.context]\nkeep_messages = 2\n",
            fake.addr
        )
    };
    let mut first = Launcher::on(dir.path())
        .config(config(&fake))
        .env("FAKE_PROVIDER_KEY", "k")
        .start();
    let mut ws = RawWs::connect(first.addr).await;
    run(&mut ws, "r", "first message").await;
    run(&mut ws, "r", "second message").await;
    let resp = ws.call("sessions.compact", json!({"key": "r"})).await;
    assert_eq!(resp["result"]["compacted"], true, "{resp}");
    drop(ws);
    assert!(first.terminate().success());

    let fake = FakeProvider::start(vec![reply("three back")]).await;
    let second = Launcher::on(dir.path())
        .config(config(&fake))
        .env("FAKE_PROVIDER_KEY", "k")
        .start();
    let mut ws = RawWs::connect(second.addr).await;
    run(&mut ws, "r", "third message").await;
    assert_eq!(
        sent(&fake.seen()[0].body),
        [
            format!("user: {SUMMARY_HEADING}\nBefore the restart."),
            "user: second message".to_string(),
            "assistant: two back".to_string(),
            "user: third message".to_string(),
        ]
    );
    let history = ws.call("chat.history", json!({"sessionKey": "r"})).await["result"].clone();
    assert_eq!(history["messages"].as_array().map(Vec::len), Some(6));
    assert_eq!(history["compactions"][0]["summary"], "Before the restart.");
}
