//! Runs that survive the process: SIGTERM suspends, `kill -9` at any moment (streaming, inside
//! a tool, waiting for an approval), and the restarted binary resumes each run once with its
//! own runId, never runs a side-effecting tool twice, asks a pending approval again, and ends
//! a run it may not resume `error {kind: "interrupted"}`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::approvals::{Stream, exec_message};
use crate::common::RawWs;
use crate::common::launcher::{Gateway, Launcher};
use crate::common::transcript::Transcript;
use crate::fake_provider::{FakeProvider, Script, anthropic};
use crate::steering::on_fake;

/// Reconnects as a client that saw `epoch` before the restart: the whole buffer of the new
/// lifetime (after a `gap {restart}`), then live; `chat` of `key` only.
async fn rejoin(gw: &Gateway, key: &str, epoch: &str) -> RawWs {
    let mut ws = RawWs::connect(gw.addr).await;
    ws.subscribe(json!({"events": ["chat"], "sessionKey": key, "afterSeq": 0, "epoch": epoch}))
        .await;
    ws
}

/// `chat` payloads of `ws` up to the terminal one of `run_id`.
async fn payloads_until_end(ws: &mut RawWs, run_id: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let e = ws.next_event().await;
        if e["event"] != "chat" || &e["payload"]["runId"] != run_id {
            continue;
        }
        let p = e["payload"].clone();
        out.push(p.clone());
        if matches!(p["state"].as_str(), Some("final" | "aborted" | "error")) {
            return out;
        }
    }
}

async fn epoch_of(ws: &mut RawWs) -> String {
    let hello = ws
        .call(
            "gateway.hello",
            json!({"client": {"name": "t", "version": "1"}}),
        )
        .await;
    hello["result"]["snapshot"]["epoch"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn markers(dir: &Path, key: &str) -> Vec<String> {
    Transcript::of_key(dir, key)
        .of_type("run")
        .iter()
        .filter_map(|m| m["state"].as_str().map(str::to_string))
        .collect()
}

/// Waits until `runs.get` says `run_id` is done; its outcome.
async fn outcome(ws: &mut RawWs, run_id: &Value) -> Value {
    let t0 = Instant::now();
    loop {
        let got = ws.call("runs.get", json!({"runId": run_id})).await;
        if got["result"]["state"] == "done" {
            return got["result"]["outcome"].clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "run never ended: {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_suspends_a_streaming_run_and_the_restart_resumes_it_once() {
    let pieces: Vec<String> = (0..40).map(|i| format!("p{i} ")).collect();
    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let fake = FakeProvider::start(vec![
        Script::sse(anthropic::reply(&refs)).paced(50),
        Script::sse(anthropic::reply(&["resumed ", "answer"])),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = on_fake(&fake, "").data_dir(dir.path()).start();
    let mut a = RawWs::connect(gw.addr).await;
    let epoch = epoch_of(&mut a).await;
    let mut watcher = RawWs::connect(gw.addr).await;
    watcher.subscribe(json!({"events": ["chat"]})).await;
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "sus", "message": "go", "idempotencyKey": "k1"}),
    )
    .await;
    let run_id = s.until(&mut a, "started").await["runId"].clone();
    s.until(&mut a, "delta").await;
    gw.sigterm();
    // The shutdown names the suspended run, and no terminal payload comes before it.
    let shutdown = loop {
        let msg = watcher.recv().await;
        let env = &msg["params"]["result"];
        if env["event"] == "shutdown" {
            break env["payload"].clone();
        }
        assert!(
            !matches!(
                env["payload"]["state"].as_str(),
                Some("final" | "aborted" | "error")
            ),
            "a suspended run publishes no terminal payload: {env}"
        );
    };
    assert_eq!(shutdown["suspendedRuns"], json!([run_id]), "{shutdown}");
    let status = gw.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(markers(dir.path(), "sus"), ["started", "suspended"]);
    drop(gw);

    let gw = on_fake(&fake, "").data_dir(dir.path()).start();
    let mut ws = rejoin(&gw, "sus", &epoch).await;
    let seen = payloads_until_end(&mut ws, &run_id).await;
    assert_eq!(seen[0]["state"], "resumed", "{seen:?}");
    assert_eq!(
        (seen[0]["runSeq"].clone(), seen[0]["attempt"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(seen[0]["turn"], 0);
    let fin = seen.last().cloned().unwrap_or_default();
    assert_eq!(fin["state"], "final", "{fin}");
    assert_eq!(fin["message"]["content"], "resumed answer");
    // The model was asked again from the user message: the cut turn was not kept.
    let requests = fake.seen();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].body["messages"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(
        markers(dir.path(), "sus"),
        ["started", "suspended", "resumed", "final"]
    );
    let mut c = RawWs::connect(gw.addr).await;
    assert_eq!(outcome(&mut c, &run_id).await, "final");
    let again = c
        .call(
            "chat.send",
            json!({"sessionKey": "sus", "message": "go", "idempotencyKey": "k1"}),
        )
        .await;
    assert_eq!(
        (
            again["result"]["status"].clone(),
            again["result"]["outcome"].clone()
        ),
        (json!("done"), json!("final")),
        "{again}"
    );
    // Joining a finished run gets its terminal payload alone.
    let joined = c.stream_run(json!({"runId": run_id})).await;
    assert_eq!(joined.len(), 1);
    assert_eq!(joined[0]["state"], "final");
}

#[tokio::test]
async fn kill9_inside_a_tool_never_runs_it_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "[agents.main]\nprovider = \"echo\"\nmodel = \"echo\"\n[agents.main.tools]\nexec = \"on\"\n";
    let mut gw = Launcher::on(dir.path()).config(config).start();
    let mut a = RawWs::connect(gw.addr).await;
    let epoch = epoch_of(&mut a).await;
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "tool", "message": exec_message("echo ran >> count.txt; sleep 3")}),
    )
    .await;
    let run_id = s.until(&mut a, "tool_start").await["runId"].clone();
    let count = dir.path().join("workspace/count.txt");
    let t0 = Instant::now();
    while !count.exists() && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.kill9();
    drop(gw);
    let gw = Launcher::on(dir.path()).config(config).start();
    let mut ws = rejoin(&gw, "tool", &epoch).await;
    let seen = payloads_until_end(&mut ws, &run_id).await;
    assert_eq!(seen[0]["state"], "resumed");
    let end = seen
        .iter()
        .find(|p| p["state"] == "tool_end")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        end["output"], "interrupted by a gateway restart; not run again",
        "{seen:?}"
    );
    assert_eq!(end["isError"], true);
    assert_eq!(seen.last().cloned().unwrap_or_default()["state"], "final");
    let lines = std::fs::read_to_string(&count).unwrap_or_default();
    assert_eq!(lines.lines().count(), 1, "the command ran once: {lines:?}");
}

#[tokio::test]
async fn kill9_while_waiting_for_approval_asks_again_with_the_same_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = crate::approvals::asking("");
    let mut gw = Launcher::on(dir.path()).config(&config).start();
    let mut a = RawWs::connect(gw.addr).await;
    let epoch = epoch_of(&mut a).await;
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "ask", "message": exec_message("echo asked >> asked.txt")}),
    )
    .await;
    let asked = s.until(&mut a, "approval_requested").await;
    let run_id = asked["runId"].clone();
    gw.kill9();
    drop(gw);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let gw = Launcher::on(dir.path()).config(&config).start();
    let mut ws = rejoin(&gw, "ask", &epoch).await;
    let mut b = RawWs::connect(gw.addr).await;
    let again = loop {
        let e = ws.next_event().await;
        if e["payload"]["state"] == "approval_requested" {
            break e["payload"].clone();
        }
    };
    assert_eq!(
        again["approvalId"], asked["approvalId"],
        "the same approval"
    );
    assert!(
        again["expiresAt"].as_u64() > asked["expiresAt"].as_u64(),
        "a fresh expiresAt"
    );
    let list = b.call("approvals.list", json!({})).await;
    assert_eq!(
        list["result"]["approvals"][0]["approvalId"],
        asked["approvalId"]
    );
    let done = b
        .call(
            "approvals.resolve",
            json!({"approvalId": asked["approvalId"], "decision": "allow"}),
        )
        .await;
    assert_eq!(done["result"]["state"], "allowed", "{done}");
    assert_eq!(outcome(&mut b, &run_id).await, "final");
    let ran = std::fs::read_to_string(dir.path().join("workspace/asked.txt")).unwrap_or_default();
    assert_eq!(ran.lines().count(), 1);
}

#[tokio::test]
async fn on_restart_fail_ends_an_interrupted_run_and_a_second_crash_ends_a_resumed_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "[agents.main]\nprovider = \"echo\"\nmodel = \"echo\"\non_restart = \"fail\"\n[agents.main.tools]\nexec = \"on\"\n";
    let mut gw = Launcher::on(dir.path()).config(config).start();
    let mut a = RawWs::connect(gw.addr).await;
    let epoch = epoch_of(&mut a).await;
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "f", "message": exec_message("sleep 5"), "idempotencyKey": "f1"}),
    )
    .await;
    let run_id = s.until(&mut a, "tool_start").await["runId"].clone();
    gw.kill9();
    drop(gw);
    let gw = Launcher::on(dir.path()).config(config).start();
    let mut ws = rejoin(&gw, "f", &epoch).await;
    let seen = payloads_until_end(&mut ws, &run_id).await;
    let end = seen.last().cloned().unwrap_or_default();
    assert_eq!(end["state"], "error", "{seen:?}");
    assert_eq!(end["error"]["kind"], "interrupted", "{end}");
    let mut c = RawWs::connect(gw.addr).await;
    let again = c
        .call(
            "chat.send",
            json!({"sessionKey": "f", "message": "x", "idempotencyKey": "f1"}),
        )
        .await;
    assert_eq!(again["result"]["outcome"], "error", "{again}");
    drop(gw);

    // Resumed once and killed again: interrupted.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "[agents.main]\nprovider = \"echo\"\nmodel = \"echo\"\n[agents.main.tools]\nexec = \"on\"\n";
    let mut gw = Launcher::on(dir.path()).config(config).start();
    let mut a = RawWs::connect(gw.addr).await;
    let mut s = Stream::start(
        &mut a,
        json!({"sessionKey": "twice", "message": exec_message("ls; sleep 5")}),
    )
    .await;
    let run_id = s.until(&mut a, "tool_start").await["runId"].clone();
    gw.kill9();
    drop(gw);
    // The resumed run answers the interrupted call, then echo calls no more tools; kill it
    // before it can: the marker `resumed` is written first.
    let mut gw = Launcher::on(dir.path()).config(config).start();
    let t0 = Instant::now();
    while !markers(dir.path(), "twice").contains(&"resumed".to_string()) {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let finished = markers(dir.path(), "twice").contains(&"final".to_string());
    gw.kill9();
    drop(gw);
    let gw = Launcher::on(dir.path()).config(config).start();
    let mut c = RawWs::connect(gw.addr).await;
    let end = outcome(&mut c, &run_id).await;
    if finished {
        assert_eq!(end, "final");
    } else {
        assert_eq!(
            end, "error",
            "a run resumed once and interrupted again is not resumed"
        );
        let last = Transcript::of_key(dir.path(), "twice").of_type("run");
        let last = last.last().cloned().unwrap_or_default();
        assert_eq!(last["error"]["kind"], "interrupted", "{last}");
    }
}

/// A small deterministic generator, seeded from the clock (the seed is printed to rerun).
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below.max(1)
    }
}

#[tokio::test]
async fn kill9_at_random_moments_of_many_runs_loses_nothing_and_runs_nothing_twice() {
    let seed = std::env::var("CLAWGATE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(88172645463325252)
        });
    eprintln!("crash matrix seed: CLAWGATE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = "[agents.main]\nprovider = \"echo\"\nmodel = \"echo\"\n[agents.main.tools]\nexec = \"on\"\n[agents.asker]\nprovider = \"echo\"\nmodel = \"echo\"\n[agents.asker.tools]\nexec = \"ask\"\n";
    let mut acknowledged: Vec<(String, Value)> = Vec::new();
    for round in 0..3 {
        let mut gw = Launcher::on(dir.path()).config(config).start();
        let mut c = RawWs::connect(gw.addr).await;
        for i in 0..6 {
            let key = format!("r{round}s{i}");
            let (message, agent) = match i % 3 {
                0 => (
                    exec_message(&format!("echo once >> {key}.txt; sleep 0.{}", rng.next(9))),
                    "main",
                ),
                1 => (format!("hello from {key}, streamed in pieces"), "main"),
                _ => (exec_message(&format!("echo once >> {key}.txt")), "asker"),
            };
            let sent = c
                .call("chat.send", json!({"sessionKey": key, "message": message, "idempotencyKey": key, "agent": agent}))
                .await;
            if sent["result"]["status"] == "started" {
                acknowledged.push((key, sent["result"]["runId"].clone()));
            }
        }
        // Some approvals are answered before the crash, some wait through it.
        tokio::time::sleep(Duration::from_millis(rng.next(300))).await;
        let pending = c.call("approvals.list", json!({})).await;
        for a in pending["result"]["approvals"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            if rng.next(2) == 0 {
                c.call(
                    "approvals.resolve",
                    json!({"approvalId": a["approvalId"], "decision": "allow"}),
                )
                .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.next(900))).await;
        gw.kill9();
    }
    // The last start: every run finishes or ends interrupted.
    let gw = Launcher::on(dir.path()).config(config).start();
    let mut c = RawWs::connect(gw.addr).await;
    let t0 = Instant::now();
    loop {
        let pending = c.call("approvals.list", json!({})).await;
        for a in pending["result"]["approvals"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            c.call(
                "approvals.resolve",
                json!({"approvalId": a["approvalId"], "decision": "allow"}),
            )
            .await;
        }
        let runs = c.call("runs.list", json!({})).await;
        if runs["result"]["runs"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "runs never settled: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut resumed, mut interrupted) = (0, 0);
    for (key, run_id) in &acknowledged {
        let end = outcome(&mut c, run_id).await;
        let transcript = Transcript::of_key(dir.path(), key);
        let ends = transcript.of_type("run");
        let last = ends.last().cloned().unwrap_or_default();
        resumed += usize::from(ends.iter().any(|m| m["state"] == "resumed"));
        match end.as_str() {
            Some("final") => {}
            Some("error") => {
                assert_eq!(last["error"]["kind"], "interrupted", "{key}: {last}");
                interrupted += 1;
            }
            other => panic!("{key}: a run ended {other:?} (seed {seed})"),
        }
        // Every acknowledged message is there.
        let messages = transcript.messages();
        assert!(
            messages
                .iter()
                .any(|m| m["role"] == "user" && m["idempotencyKey"] == key.as_str()),
            "{key}: the acknowledged message is lost (seed {seed})"
        );
        // No side-effecting tool ran twice.
        let side = std::fs::read_to_string(dir.path().join(format!("workspace/{key}.txt")))
            .unwrap_or_default();
        assert!(
            side.lines().count() <= 1,
            "{key} ran {} times (seed {seed})",
            side.lines().count()
        );
    }
    eprintln!(
        "crash matrix: {} runs, {resumed} resumed after a crash, {interrupted} ended interrupted",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() >= 12,
        "most sends were acknowledged: {}",
        acknowledged.len()
    );
    assert!(resumed > 0, "a crash interrupted some run (seed {seed})");
}
