//! `chat.send` modes against the real binary and a slow loopback provider (the Anthropic wire
//! format, paced): queue, steer (into the active run, or a run of its own past max_turns),
//! interrupt and reject, with their idempotency answers and their events.

use std::time::Duration;

use serde_json::{Value, json};

use crate::approvals::Stream;
use crate::common::RawWs;
use crate::common::launcher::{Gateway, Launcher};
use crate::common::transcript::Transcript;
use crate::fake_provider::{FakeProvider, Script, anthropic};

/// A reply streamed in `parts` pieces, 60 ms apart (about `parts * 60` ms in all).
fn slow(text: &str, parts: usize) -> Script {
    let pieces: Vec<String> = (0..parts).map(|i| format!("{text}{i} ")).collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    Script::sse(anthropic::reply(&refs)).paced(60)
}

fn quick(text: &str) -> Script {
    Script::sse(anthropic::reply(&[text]))
}

/// The gateway on the fake provider with `extra` lines in `[agents.main]`.
pub fn on_fake(fake: &FakeProvider, extra: &str) -> Launcher {
    Launcher::new()
        .env("CLAWGATE_TEST_KEY", "test-key")
        .config(format!(
            "[agents.main]\nprovider = \"anthropic\"\nmodel = \"claude-test\"\nbase_url = \"http://{}\"\napi_key_env = \"CLAWGATE_TEST_KEY\"\ndelta_interval_ms = 10\n{extra}\n",
            fake.addr
        ))
}

async fn connect(gw: &Gateway) -> (RawWs, RawWs) {
    (RawWs::connect(gw.addr).await, RawWs::connect(gw.addr).await)
}

/// The user messages of the next `n` runs to start, as `started` payloads on `events` say.
async fn first_messages(events: &mut RawWs, n: usize) -> Vec<String> {
    let mut starts = Vec::new();
    while starts.len() < n {
        let e = events.next_payload_of("chat").await;
        if e["state"] == "started" {
            let text = e["userMessage"]["content"].as_str().unwrap_or("");
            starts.push(text.to_string());
        }
    }
    starts
}

fn last_user_text(body: &Value) -> String {
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .cloned()
        .unwrap_or_default();
    match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

#[tokio::test]
async fn queue_waits_in_order_behind_the_active_run() {
    let fake = FakeProvider::start(vec![slow("first", 8), quick("second")]).await;
    let gw = on_fake(&fake, "").start();
    let (mut a, mut b) = connect(&gw).await;
    let mut s = Stream::start(&mut a, json!({"sessionKey": "q", "message": "one"})).await;
    s.until(&mut a, "delta").await;
    let queued = b
        .call(
            "chat.send",
            json!({"sessionKey": "q", "message": "two", "mode": "queue"}),
        )
        .await;
    assert_eq!(queued["result"]["status"], "queued", "{queued}");
    let runs = b.call("runs.list", json!({"sessionKey": "q"})).await;
    let states: Vec<Value> = runs["result"]["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| r["state"].clone())
        .collect();
    assert_eq!(states, vec![json!("running"), json!("queued")], "{runs}");
    assert_eq!(runs["result"]["runs"][1]["position"], 1);
    assert_eq!(s.end(&mut a).await["state"], "final");
    let second = b
        .call("chat.stream", json!({"runId": queued["result"]["runId"]}))
        .await;
    assert!(second["result"].is_string(), "{second}");
}

#[tokio::test]
async fn steer_hands_the_message_to_the_active_run_at_its_next_boundary() {
    let fake = FakeProvider::start(vec![slow("first", 8), quick("after the steer")]).await;
    let gw = on_fake(&fake, "").start();
    let (mut a, mut b) = connect(&gw).await;
    let mut s = Stream::start(&mut a, json!({"sessionKey": "st", "message": "start"})).await;
    let started = s.until(&mut a, "started").await;
    let run_id = started["runId"].clone();
    s.until(&mut a, "delta").await;
    let steered = b
        .call("chat.send", json!({"sessionKey": "st", "message": "also this", "mode": "steer", "idempotencyKey": "steer-1"}))
        .await;
    assert_eq!(steered["result"]["status"], "steered", "{steered}");
    assert_eq!(steered["result"]["runId"], run_id);
    let again = b
        .call("chat.send", json!({"sessionKey": "st", "message": "also this", "mode": "steer", "idempotencyKey": "steer-1"}))
        .await;
    assert_eq!(
        again["result"]["runId"], run_id,
        "idempotency is checked before mode: {again}"
    );
    assert_eq!(again["result"]["status"], "in_flight");
    let note = s.until(&mut a, "steered").await;
    assert_eq!(note["userMessage"]["content"], "also this", "{note}");
    assert_eq!(note["userMessage"]["idempotencyKey"], "steer-1");
    let fin = s.end(&mut a).await;
    assert_eq!(fin["state"], "final", "{fin}");
    assert_eq!(fin["message"]["content"], "after the steer");
    // The model's second call read the steered message last.
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "one more model call for the steered message");
    assert_eq!(last_user_text(&seen[1].body), "also this");
    let done = b
        .call("chat.send", json!({"sessionKey": "st", "message": "x", "mode": "steer", "idempotencyKey": "steer-1"}))
        .await;
    assert_eq!(
        (
            done["result"]["status"].clone(),
            done["result"]["outcome"].clone()
        ),
        (json!("done"), json!("final")),
        "{done}"
    );
    // In the transcript: start, the first answer, the steered message, the second answer.
    let messages = Transcript::of_key(gw.data_dir(), "st").whole().messages();
    let contents: Vec<&str> = messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents.len(), 4, "{contents:?}");
    assert_eq!(
        (contents[0], contents[2], contents[3]),
        ("start", "also this", "after the steer")
    );
    // With no run active, steer is queue: a run of its own.
    let alone = b
        .call(
            "chat.send",
            json!({"sessionKey": "st", "message": "idle", "mode": "steer"}),
        )
        .await;
    assert_eq!(alone["result"]["status"], "started", "{alone}");
}

#[tokio::test]
async fn a_steer_past_max_turns_starts_a_run_of_its_own_at_the_head_of_the_queue() {
    let fake = FakeProvider::start(vec![
        slow("only turn", 8),
        quick("queued one"),
        quick("steered one"),
    ])
    .await;
    let gw = on_fake(&fake, "max_turns = 1").start();
    let (mut a, mut b) = connect(&gw).await;
    let mut events = RawWs::connect(gw.addr).await;
    events
        .subscribe(json!({"events": ["chat"], "sessionKey": "mt"}))
        .await;
    let mut s = Stream::start(&mut a, json!({"sessionKey": "mt", "message": "go"})).await;
    s.until(&mut a, "delta").await;
    let queued = b
        .call(
            "chat.send",
            json!({"sessionKey": "mt", "message": "queued", "mode": "queue"}),
        )
        .await;
    assert_eq!(queued["result"]["status"], "queued");
    let steered = b
        .call("chat.send", json!({"sessionKey": "mt", "message": "late steer", "mode": "steer", "idempotencyKey": "ls"}))
        .await;
    assert_eq!(steered["result"]["status"], "steered", "{steered}");
    assert_eq!(s.end(&mut a).await["state"], "final");
    // The next run to start is the steered message's, before the one queued earlier.
    let starts = first_messages(&mut events, 3).await;
    assert_eq!(starts, ["go", "late steer", "queued"]);
    let answer = b
        .call(
            "chat.send",
            json!({"sessionKey": "mt", "message": "late steer", "idempotencyKey": "ls"}),
        )
        .await;
    assert_ne!(
        answer["result"]["runId"], steered["result"]["runId"],
        "the key now answers its own run: {answer}"
    );
}

#[tokio::test]
async fn interrupt_aborts_the_active_run_and_starts_before_the_queue() {
    let fake = FakeProvider::start(vec![
        slow("long", 30),
        quick("interrupting"),
        quick("queued"),
    ])
    .await;
    let gw = on_fake(&fake, "").start();
    let (mut a, mut b) = connect(&gw).await;
    let mut events = RawWs::connect(gw.addr).await;
    events
        .subscribe(json!({"events": ["chat"], "sessionKey": "int"}))
        .await;
    let mut s = Stream::start(&mut a, json!({"sessionKey": "int", "message": "long one"})).await;
    s.until(&mut a, "delta").await;
    let queued = b
        .call(
            "chat.send",
            json!({"sessionKey": "int", "message": "queued", "mode": "queue"}),
        )
        .await;
    assert_eq!(queued["result"]["status"], "queued");
    let now = b
        .call(
            "chat.send",
            json!({"sessionKey": "int", "message": "now", "mode": "interrupt"}),
        )
        .await;
    assert_eq!(now["result"]["status"], "started", "{now}");
    let fin = s.end(&mut a).await;
    assert_eq!(fin["state"], "aborted", "{fin}");
    assert!(
        fin["partialText"]
            .as_str()
            .unwrap_or("")
            .starts_with("long0"),
        "partial text kept: {fin}"
    );
    let starts = first_messages(&mut events, 3).await;
    assert_eq!(starts, ["long one", "now", "queued"]);
}

#[tokio::test]
async fn reject_refuses_while_a_run_is_active_or_queued() {
    let fake = FakeProvider::start(vec![slow("busy", 8), quick("free")]).await;
    let gw = on_fake(&fake, "").start();
    let (mut a, mut b) = connect(&gw).await;
    let mut s = Stream::start(&mut a, json!({"sessionKey": "rj", "message": "busy"})).await;
    let started = s.until(&mut a, "started").await;
    let refused = b.call("chat.send", json!({"sessionKey": "rj", "message": "no", "mode": "reject", "idempotencyKey": "rj-1"})).await;
    assert_eq!(refused["error"]["code"], -32023, "{refused}");
    assert_eq!(refused["error"]["data"]["activeRunId"], started["runId"]);
    assert_eq!(s.end(&mut a).await["state"], "final");
    // The refused key started nothing and wrote nothing: it is free once the session is idle.
    let free = b.call("chat.send", json!({"sessionKey": "rj", "message": "now", "mode": "reject", "idempotencyKey": "rj-1"})).await;
    assert_eq!(free["result"]["status"], "started", "{free}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
