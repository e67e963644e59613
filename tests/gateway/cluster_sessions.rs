//! Cluster mode, sessions: calls for a session run on its owner from any node (idempotency, one
//! run per session and steering across nodes), the owner killed with `kill -9` in the middle of
//! appends is taken over with every acknowledged message, and a run its node died in is
//! resumed by another node. Real nats-server, real clawgate binaries.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::launcher::{Gateway, Launcher};
use crate::common::nats::NatsServer;
use crate::common::transcript::Transcript;
use crate::common::ws::RawWs;

/// A hang guard, never a speed test.
const PATIENCE: Duration = Duration::from_secs(60);

fn node(nats: &str, id: &str, lease_ms: u64) -> Gateway {
    node_with(nats, id, lease_ms, "")
}

/// A node whose config also has `extra` (before `[cluster]`).
fn node_with(nats: &str, id: &str, lease_ms: u64, extra: &str) -> Gateway {
    Launcher::new()
        .config(format!(
            "{extra}\n[cluster]\nnats_url = \"{nats}\"\nnode_id = \"{id}\"\nlease_ms = {lease_ms}\n"
        ))
        .start()
}

/// The result of `method`, retried while the cluster answers `-32025` (an owner going away).
async fn call_until_served(ws: &mut RawWs, method: &str, params: Value) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let resp = ws.call(method, params.clone()).await;
        if resp["error"]["code"] == -32025 && tokio::time::Instant::now() < deadline {
            assert_eq!(resp["error"]["data"]["retryable"], true, "{resp}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert!(resp.get("result").is_some(), "{method}: {resp}");
        return resp["result"].clone();
    }
}

/// Waits for the `final` chat payload of `run_id` on a subscriber of `ws`.
async fn final_of(ws: &mut RawWs, run_id: &str) -> Value {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let e = ws.next_event().await;
            if e["event"] == "chat"
                && e["payload"]["runId"] == run_id
                && e["payload"]["state"] == "final"
            {
                return e["payload"].clone();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no final for run {run_id}"))
}

fn user_messages(history: &Value) -> Vec<String> {
    messages_of(history, "user")
}

fn messages_of(history: &Value, role: &str) -> Vec<String> {
    history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] == role)
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn calls_for_a_session_run_on_its_owner_from_any_node() {
    let nats = NatsServer::start();
    let (a, b, c) = (
        node(&nats.url(), "a", 10_000),
        node(&nats.url(), "b", 10_000),
        node(&nats.url(), "c", 10_000),
    );
    let mut on_a = RawWs::connect(a.addr).await;
    let mut on_b = RawWs::connect(b.addr).await;
    let mut on_c = RawWs::connect(c.addr).await;
    on_a.subscribe(json!({"events": ["chat"], "sessionKey": "team"}))
        .await;
    // B is asked first: it takes the session.
    let first = call_until_served(
        &mut on_b,
        "chat.send",
        json!({"sessionKey": "team", "message": "one two three four five six", "idempotencyKey": "k-1"}),
    )
    .await;
    let run = first["runId"].as_str().expect("runId").to_string();
    // The same key through C and A starts nothing: the same run answers.
    for ws in [&mut on_c, &mut on_a] {
        let again = call_until_served(
            ws,
            "chat.send",
            json!({"sessionKey": "team", "message": "one two three four five six", "idempotencyKey": "k-1"}),
        )
        .await;
        assert_eq!(again["runId"], run.as_str(), "{again}");
    }
    // One run per session: a message through C while it runs waits its turn (or steers).
    let second = call_until_served(
        &mut on_c,
        "chat.send",
        json!({"sessionKey": "team", "message": "steered in", "mode": "steer"}),
    )
    .await;
    assert!(
        matches!(
            second["status"].as_str(),
            Some("steered" | "queued" | "started")
        ),
        "{second}"
    );
    final_of(&mut on_a, &run).await;
    if second["status"] != "steered" {
        let run2 = second["runId"].as_str().expect("runId").to_string();
        final_of(&mut on_a, &run2).await;
    }
    // Every node answers the history, the same one.
    let mut seen = Vec::new();
    for ws in [&mut on_a, &mut on_b, &mut on_c] {
        let h = call_until_served(ws, "chat.history", json!({"sessionKey": "team"})).await;
        seen.push(user_messages(&h));
    }
    assert_eq!(seen[0], vec!["one two three four five six", "steered in"]);
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
    // Every node lists it (the shared index), the node that owns it too.
    for ws in [&mut on_a, &mut on_c] {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let list = call_until_served(ws, "sessions.list", json!({"search": "team"})).await;
            let found = list["sessions"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s["key"] == "team" && s["messageCount"].as_u64() >= Some(2))
            });
            if found {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "not listed: {list}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // chat.stream on a node that does not own the session: sent by the owner, streamed here.
    let streamed = on_a
        .stream_run(json!({"sessionKey": "team", "message": "streamed"}))
        .await;
    assert_eq!(
        streamed.first().cloned().unwrap_or_default()["state"],
        "started"
    );
    assert_eq!(
        streamed.last().cloned().unwrap_or_default()["state"],
        "final"
    );
    // The transcript is written on its owner only, and once.
    let owner = Transcript::of_key(b.data_dir(), "team");
    let users: Vec<Value> = owner
        .messages()
        .into_iter()
        .filter(|m| m["role"] == "user")
        .collect();
    assert_eq!(users.len(), 3, "{users:?}");
    assert!(
        crate::common::transcript::transcript_files(a.data_dir())
            .iter()
            .all(|p| !std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains("steered in")),
        "node a wrote a session it does not own"
    );
}

#[tokio::test]
async fn a_killed_owner_is_taken_over_with_every_acknowledged_message() {
    let nats = NatsServer::start();
    let mut a = node(&nats.url(), "a", 1_500);
    let b = node(&nats.url(), "b", 1_500);
    // A owns the session and takes appends until it is killed in the middle of them.
    let mut on_a = RawWs::connect(a.addr).await;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let writer = {
        let acked = acked.clone();
        tokio::spawn(async move {
            for i in 0..10_000 {
                let text = format!("note {i}");
                let req = json!({"jsonrpc": "2.0", "id": i, "method": "chat.inject",
                    "params": {"sessionKey": "log", "content": text, "role": "system"}});
                on_a.send(&req.to_string()).await;
                let Some(resp) = on_a.try_recv(Duration::from_secs(5)).await else {
                    return;
                };
                if resp.get("result").is_some() {
                    acked.lock().expect("acked").push(text);
                } else if resp.get("error").is_some() && i == 0 {
                    panic!("the first inject failed: {resp}");
                }
            }
        })
    };
    tokio::time::timeout(PATIENCE, async {
        while acked.lock().expect("acked").len() < 20 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("appends acknowledged on node a");
    a.kill9();
    let _ = writer.await;
    let acked = acked.lock().expect("acked").clone();
    // B takes the session over once A's lease expires, with every acknowledged line.
    let mut on_b = RawWs::connect(b.addr).await;
    let history = call_until_served(
        &mut on_b,
        "chat.history",
        json!({"sessionKey": "log", "limit": 1000}),
    )
    .await;
    let got = messages_of(&history, "system");
    assert!(
        got.len() < 1000,
        "more than one page: the test would need paging"
    );
    // Each acknowledged message once and in order; at most the one unacknowledged line in
    // flight at the kill may follow them.
    assert!(got.len() >= acked.len(), "{} < {}", got.len(), acked.len());
    assert_eq!(got[..acked.len()], acked[..]);
    assert!(got.len() <= acked.len() + 1, "{got:?}");
    // B's copy is the shared one: B goes on appending to it.
    call_until_served(
        &mut on_b,
        "chat.inject",
        json!({"sessionKey": "log", "content": "after takeover", "role": "system"}),
    )
    .await;
    let file = Transcript::of_key(b.data_dir(), "log");
    assert!(file.damaged().next().is_none(), "a damaged line on node b");
    let last = file.messages().last().cloned().expect("messages");
    assert_eq!(last["content"], "after takeover");
}

#[tokio::test]
async fn a_run_whose_node_died_is_resumed_by_another_node() {
    let nats = NatsServer::start();
    let tools = "[agents.main]\nprovider = \"echo\"\nmodel = \"echo\"\n[agents.main.tools]\nexec = \"on\"\n";
    let mut a = node_with(&nats.url(), "a", 1_500, tools);
    let b = node_with(&nats.url(), "b", 1_500, tools);
    let mut watcher = RawWs::connect(b.addr).await;
    watcher
        .subscribe(json!({"events": ["chat"], "sessionKey": "long"}))
        .await;
    let mut on_a = RawWs::connect(a.addr).await;
    let sent = call_until_served(
        &mut on_a,
        "chat.send",
        json!({"sessionKey": "long", "message": crate::approvals::exec_message("sleep 5")}),
    )
    .await;
    let run = sent["runId"].as_str().expect("runId").to_string();
    // Killed inside the tool, its run open.
    tokio::time::timeout(PATIENCE, async {
        loop {
            let e = watcher.next_event().await;
            if e["payload"]["runId"] == run.as_str() && e["payload"]["state"] == "tool_start" {
                return;
            }
        }
    })
    .await
    .expect("the run calls its tool");
    a.kill9();
    // B takes the session over when A's lease expires and resumes the run, same runId; the
    // tool that was running is not run again.
    let mut seen = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        loop {
            let e = watcher.next_event().await;
            if e["payload"]["runId"] != run.as_str() {
                continue;
            }
            let state = e["payload"]["state"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            seen.push(e["payload"].clone());
            if matches!(state.as_str(), "final" | "error" | "aborted") {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the run did not end on node b: {seen:?}"));
    assert!(seen.iter().any(|p| p["state"] == "resumed"), "{seen:?}");
    let end = seen
        .iter()
        .find(|p| p["state"] == "tool_end")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        end["output"], "interrupted by a gateway restart; not run again",
        "{seen:?}"
    );
    assert_eq!(seen.last().cloned().unwrap_or_default()["state"], "final");
}

#[tokio::test]
async fn an_approval_is_resolved_from_another_node() {
    let nats = NatsServer::start();
    let asking = crate::approvals::asking("");
    let a = node_with(&nats.url(), "a", 10_000, &asking);
    let b = node_with(&nats.url(), "b", 10_000, &asking);
    let mut on_a = RawWs::connect(a.addr).await;
    let mut on_b = RawWs::connect(b.addr).await;
    on_b.subscribe(json!({"events": ["chat"], "sessionKey": "ask"}))
        .await;
    let sent = call_until_served(
        &mut on_a,
        "chat.send",
        json!({"sessionKey": "ask", "message": crate::approvals::exec_message("echo approved")}),
    )
    .await;
    let run = sent["runId"].as_str().expect("runId").to_string();
    let asked = tokio::time::timeout(PATIENCE, async {
        loop {
            let e = on_b.next_event().await;
            if e["payload"]["runId"] == run.as_str()
                && e["payload"]["state"] == "approval_requested"
            {
                return e["payload"].clone();
            }
        }
    })
    .await
    .expect("an approval is asked");
    let id = asked["approval"]["approvalId"]
        .as_str()
        .or(asked["approvalId"].as_str())
        .unwrap_or_else(|| panic!("approval id in {asked}"))
        .to_string();
    // B has no such approval: it finds the node that has it.
    let got = call_until_served(&mut on_b, "approvals.get", json!({"approvalId": id})).await;
    assert_eq!(
        got["runId"].as_str().or(got["approval"]["runId"].as_str()),
        Some(run.as_str()),
        "{got}"
    );
    call_until_served(
        &mut on_b,
        "approvals.resolve",
        json!({"approvalId": id, "decision": "allow"}),
    )
    .await;
    let done = final_of(&mut on_b, &run).await;
    assert!(done["message"]["content"].as_str().is_some(), "{done}");
    // An approval no node has is not found, after asking them.
    let none = on_b
        .call("approvals.get", json!({"approvalId": "no-such-approval"}))
        .await;
    assert!(none.get("error").is_some(), "{none}");
    assert_ne!(none["error"]["code"], -32025, "{none}");
}
