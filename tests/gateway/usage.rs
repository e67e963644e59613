//! Usage and cost against the real binary and a loopback provider speaking the Anthropic wire
//! format with cache tokens: the ledger's lines and their prices, `Session.usage` (reset, fork),
//! `usage.summary` and its filters, a compaction's summary call, an unpriced model, a price
//! changed by `config.patch`, and a torn ledger line across a restart.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::RawWs;
use crate::common::launcher::{Gateway, Launcher};
use crate::fake_provider::{FakeProvider, Script, anthropic};
use crate::steering::on_fake;

/// `[agents.main]` (model `claude-test`, priced) keeps two messages when compacting; the
/// agent `helper` calls `claude-other`, which has no price.
fn extra(fake: &FakeProvider) -> String {
    format!(
        "[agents.main.context]\nkeep_messages = 2\n\n[agents.helper]\nprovider = \"anthropic\"\nmodel = \"claude-other\"\nbase_url = \"http://{}\"\napi_key_env = \"CLAWGATE_TEST_KEY\"\n\n[prices.\"claude-test\"]\ninput_per_mtok = 3\noutput_per_mtok = 15\ncache_read_per_mtok = 0.3\ncache_write_per_mtok = 3.75\n",
        fake.addr
    )
}

/// A reply reporting `input`, `read` and `write` tokens, and 15 output tokens.
fn cached(text: &str, input: u64, read: u64, write: u64) -> Script {
    Script::sse(anthropic::reply_cached(&[text], input, read, write))
}

fn ledger(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("usage.jsonl"))
        .expect("ledger")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn cost(v: &Value) -> f64 {
    v["costUsd"].as_f64().unwrap_or(f64::NAN)
}

fn near(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn tokens(v: &Value) -> [u64; 4] {
    [
        "inputTokens",
        "outputTokens",
        "cacheReadTokens",
        "cacheWriteTokens",
    ]
    .map(|k| v[k].as_u64().unwrap_or(u64::MAX))
}

async fn run(ws: &mut RawWs, params: Value) {
    let payloads = ws.stream_run(params).await;
    let last = payloads.last().cloned().unwrap_or_default();
    assert_eq!(last["state"], "final", "{payloads:?}");
}

async fn session_usage(ws: &mut RawWs, key: &str) -> Value {
    let resp = ws.call("sessions.get", json!({"key": key})).await;
    resp["result"]["usage"].clone()
}

async fn summary(ws: &mut RawWs, params: Value) -> Value {
    let resp = ws.call("usage.summary", params).await;
    assert!(resp["result"].is_object(), "{resp}");
    resp["result"].clone()
}

#[tokio::test]
async fn model_calls_are_priced_in_the_ledger_sessions_and_the_summary() {
    let fake = FakeProvider::start(vec![
        cached("one", 100, 2000, 400),
        cached("two", 200, 1000, 0),
        cached("The summary.", 50, 0, 0),
        cached("helper", 10, 5, 0),
        cached("three", 100, 0, 0),
        cached("after the restart", 1, 0, 0),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let gw: Gateway = on_fake(&fake, &extra(&fake)).data_dir(dir.path()).start();
    let mut ws = RawWs::connect(gw.addr).await;
    run(&mut ws, json!({"sessionKey": "a", "message": "first"})).await;
    run(&mut ws, json!({"sessionKey": "a", "message": "second"})).await;

    // Two turns: 100 × 3 + 15 × 15 + 2000 × 0.3 + 400 × 3.75 = 2625 µ$; 600 + 225 + 300 = 1125 µ$.
    let lines = ledger(dir.path());
    assert_eq!(lines.len(), 2, "{lines:?}");
    let sid = lines[0]["sessionId"].clone();
    for (line, want, toks) in [
        (&lines[0], 0.002625, [100, 15, 2000, 400]),
        (&lines[1], 0.001125, [200, 15, 1000, 0]),
    ] {
        assert_eq!(line["sessionKey"], "a");
        assert_eq!(line["sessionId"], sid);
        assert_eq!(line["agentId"], "main");
        assert_eq!(line["model"], "claude-test");
        assert!(line["runId"].is_string(), "{line}");
        assert!(line["ts"].as_u64().is_some_and(|t| t > 0));
        assert_eq!(tokens(line), toks);
        assert!(near(cost(line), want), "{line}");
    }
    assert_ne!(lines[0]["runId"], lines[1]["runId"]);
    let usage = session_usage(&mut ws, "a").await;
    assert_eq!(tokens(&usage), [300, 30, 3000, 400]);
    assert!(near(cost(&usage), 0.00375), "{usage}");
    assert_eq!(usage["unpricedTokens"], 0);
    let listed = ws.call("sessions.list", json!({"search": "a"})).await;
    let in_list = listed["result"]["sessions"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["key"] == "a"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(in_list["usage"], usage, "{listed}");

    // A fork copies the messages, not their usage.
    let fork = ws
        .call("sessions.fork", json!({"key": "a", "newKey": "a-fork"}))
        .await;
    assert_eq!(fork["result"]["messageCount"], 4, "{fork}");
    let forked = &fork["result"]["usage"];
    assert_eq!(tokens(forked), [0, 0, 0, 0], "{fork}");
    assert!(forked.get("costUsd").is_none());

    // A compaction's summary call is a ledger line without a run: 50 × 3 + 15 × 15 = 375 µ$.
    let resp = ws.call("sessions.compact", json!({"key": "a"})).await;
    assert_eq!(resp["result"]["compacted"], true, "{resp}");
    let lines = ledger(dir.path());
    let summary_line = &lines[2];
    assert!(summary_line.get("runId").is_none(), "{summary_line}");
    assert_eq!(summary_line["sessionId"], sid);
    assert_eq!(tokens(summary_line), [50, 15, 0, 0]);
    assert!(near(cost(summary_line), 0.000375));
    assert!(near(cost(&session_usage(&mut ws, "a").await), 0.004125));

    // A model without a price: no cost, its tokens unpriced.
    run(
        &mut ws,
        json!({"sessionKey": "h", "message": "hi", "agent": "helper"}),
    )
    .await;
    let lines = ledger(dir.path());
    assert_eq!(lines[3]["model"], "claude-other");
    assert_eq!(lines[3]["agentId"], "helper");
    assert!(lines[3].get("costUsd").is_none(), "{}", lines[3]);
    let h = session_usage(&mut ws, "h").await;
    assert_eq!(tokens(&h), [10, 15, 5, 0]);
    assert!(h.get("costUsd").is_none(), "{h}");
    assert_eq!(h["unpricedTokens"], 30);

    let all = summary(&mut ws, json!({})).await;
    assert_eq!(tokens(&all["total"]), [360, 60, 3005, 400], "{all}");
    assert!(near(cost(&all["total"]), 0.004125), "{all}");
    assert_eq!(all["total"]["unpricedTokens"], 30);
    assert!(near(cost(&all["byAgent"]["main"]), 0.004125));
    assert_eq!(all["byAgent"]["main"]["unpricedTokens"], 0);
    assert_eq!(all["byAgent"]["helper"]["unpricedTokens"], 30);
    assert_eq!(all["byModel"]["claude-test"]["inputTokens"], 350);
    assert_eq!(all["byModel"]["claude-other"]["inputTokens"], 10);
    let days = all["byDay"].as_array().cloned().unwrap_or_default();
    assert!(!days.is_empty() && days.len() <= 2, "{all}");
    let day_inputs: u64 = days
        .iter()
        .map(|d| d["usage"]["inputTokens"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(day_inputs, 360);
    for d in &days {
        let day = d["day"].as_str().unwrap_or("");
        assert!(
            day.len() == 10 && day.as_bytes()[4] == b'-' && day.as_bytes()[7] == b'-',
            "{day}"
        );
    }
    let helper = summary(&mut ws, json!({"agent": "helper"})).await;
    assert_eq!(tokens(&helper["total"]), [10, 15, 5, 0]);
    assert_eq!(
        helper["byAgent"].as_object().map(|o| o.len()),
        Some(1),
        "{helper}"
    );

    // since inclusive, until exclusive, on the lines' own times.
    let ts: Vec<u64> = lines
        .iter()
        .map(|l| l["ts"].as_u64().unwrap_or(0))
        .collect();
    let (since, until) = (ts[1], ts[3]);
    let want: u64 = lines
        .iter()
        .filter(|l| (since..until).contains(&l["ts"].as_u64().unwrap_or(0)))
        .map(|l| l["inputTokens"].as_u64().unwrap_or(0))
        .sum();
    let ranged = summary(&mut ws, json!({"since": since, "until": until})).await;
    assert_eq!(ranged["total"]["inputTokens"], want, "{ranged}");
    let empty = summary(&mut ws, json!({"since": since, "until": since})).await;
    assert_eq!(empty["total"]["inputTokens"], 0);
    assert_eq!(empty["byDay"], json!([]));
    let later = summary(&mut ws, json!({"since": ts[3] + 1})).await;
    assert_eq!(later["total"]["inputTokens"], 0, "{later}");
    let bad = ws
        .call("usage.summary", json!({"since": 10, "until": 5}))
        .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    assert_eq!(bad["error"]["data"]["path"], "until", "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("before since")),
        "{bad}"
    );
    let unknown = ws.call("usage.summary", json!({"from": 1})).await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");

    // A new price applies to later lines only: 100 × 6 + 15 × 15 = 825 µ$.
    let got = ws.call("config.get", json!({})).await;
    let hash = got["result"]["hash"].as_str().unwrap_or("").to_string();
    let patched = ws
        .call(
            "config.patch",
            json!({"patch": {"prices": {"claude-test": {"input_per_mtok": 6}}}, "baseHash": hash}),
        )
        .await;
    assert!(patched["result"].is_object(), "{patched}");
    run(&mut ws, json!({"sessionKey": "a", "message": "third"})).await;
    let lines = ledger(dir.path());
    assert_eq!(lines.len(), 5);
    assert!(near(cost(&lines[4]), 0.000825), "{}", lines[4]);
    assert!(
        near(cost(&lines[0]), 0.002625),
        "earlier lines keep their price"
    );
    assert!(near(cost(&session_usage(&mut ws, "a").await), 0.00495));

    // A reset zeroes the session's usage; the ledger keeps it all.
    let reset = ws.call("sessions.reset", json!({"key": "a"})).await;
    let zero = &reset["result"]["usage"];
    assert_eq!(tokens(zero), [0, 0, 0, 0], "{reset}");
    assert!(zero.get("costUsd").is_none());
    let all = summary(&mut ws, json!({})).await;
    assert_eq!(all["total"]["inputTokens"], 460);
    assert!(near(cost(&all["total"]), 0.00495));
    let deleted = ws.call("sessions.delete", json!({"key": "h"})).await;
    assert!(deleted["result"].is_object(), "{deleted}");
    let all = summary(&mut ws, json!({})).await;
    assert_eq!(
        all["byAgent"]["helper"]["unpricedTokens"], 30,
        "deleted: still counted"
    );
    drop(ws);
    drop(gw);

    // A crash mid-write leaves a torn last line; without the index, usage is rebuilt.
    let path = dir.path().join("usage.jsonl");
    let mut text = std::fs::read(&path).expect("ledger");
    text.extend_from_slice(b"{\"ts\":1,\"sessionKey\":\"a-fork\",\"sessionId\":\"x\",\"inp");
    std::fs::write(&path, &text).expect("tear");
    let _ = std::fs::remove_file(dir.path().join("sessions").join("index.json"));
    // The config file as `config.patch` left it.
    let gw = Launcher::on(dir.path())
        .env("CLAWGATE_TEST_KEY", "test-key")
        .start();
    assert!(gw.warnings("usage ledger") >= 1, "{}", gw.log());
    let mut ws = RawWs::connect(gw.addr).await;
    assert_eq!(tokens(&session_usage(&mut ws, "a").await), [0, 0, 0, 0]);
    let all = summary(&mut ws, json!({})).await;
    assert_eq!(all["total"]["inputTokens"], 460, "{all}");
    run(&mut ws, json!({"sessionKey": "a-fork", "message": "more"})).await;
    let raw = std::fs::read_to_string(&path).expect("ledger");
    let last = raw.lines().last().unwrap_or("");
    let last: Value = serde_json::from_str(last).expect("the next line is whole");
    assert_eq!(last["sessionKey"], "a-fork");
    assert_eq!(raw.lines().count(), 7, "{raw}");
    let fork_usage = session_usage(&mut ws, "a-fork").await;
    assert_eq!(tokens(&fork_usage), [1, 15, 0, 0]);
    // 1 × 6 + 15 × 15 = 231 µ$ (the patched price is in the file).
    assert!(near(cost(&fork_usage), 0.000231), "{fork_usage}");
}
