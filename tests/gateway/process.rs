//! The binary as a user runs it: start, the CLI, signals, startup refusals.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Launcher, RawWs, Transcript, transcript_files, transcript_path};

const BIN: &str = env!("CARGO_BIN_EXE_clawgate");

fn call(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("call")
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("CLAWGATE_TOKEN")
        .output()
        .expect("run clawgate call");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cli_call_prints_results_errors_and_notifications() {
    let gw = Launcher::new().start();
    let (ok, out, _) = call(&gw.url, &["gateway.health"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).expect("pretty JSON");
    assert_eq!(v["ok"], true);
    assert!(out.contains("\n  \""), "pretty-printed: {out}");
    let (ok, _, err) = call(&gw.url, &["no.such"]);
    assert!(!ok);
    assert!(err.contains("-32601"), "{err}");
    let (ok, _, err) = call(&gw.url, &["gateway.hello", "{\"bogus\":1}"]);
    assert!(!ok);
    assert!(err.contains("-32602") && err.contains("bogus"), "{err}");
    let (ok, out, _) = call(
        &gw.url,
        &[
            "--subscribe",
            "events.subscribe",
            "{\"events\":[\"presence\"],\"afterSeq\":0}",
            "--count",
            "1",
        ],
    );
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let env: Value = serde_json::from_str(lines[0]).expect("one JSON line");
    assert_eq!(env["event"], "presence");
}

#[tokio::test]
async fn sigterm_delivers_shutdown_and_exits_zero() {
    let mut gw = Launcher::new().start();
    let mut ws = RawWs::connect(gw.addr).await;
    ws.subscribe(json!({"events": ["nothing"]})).await;
    gw.sigterm();
    let e = ws.next_event().await;
    assert_eq!(e["event"], "shutdown");
    assert_eq!(e["payload"]["reason"], "SIGTERM");
    let start = Instant::now();
    loop {
        if let Some(status) = gw.try_wait() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the binary on a fresh data directory with exactly `args` until it exits.
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    Launcher::new()
        .without_port()
        .args(args)
        .envs(env)
        .run_to_exit()
}

#[test]
fn startup_refusals_exit_non_zero_with_a_clear_message() {
    let (code, err) = run_to_exit(&["--bind", "0.0.0.0", "--port", "0"], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("CLAWGATE_TOKEN") && err.contains("0.0.0.0"),
        "{err}"
    );
    let (code, err) = run_to_exit(&["--port", "0"], &[("CLAWGATE_GATEWAY__MAX_BATCH", "lots")]);
    assert_ne!(code, 0);
    assert!(err.contains("gateway.max_batch"), "{err}");
    let (code, err) = run_to_exit(&["--port", "0"], &[("CLAWGATE_GATEWAY__NOPE", "1")]);
    assert_ne!(code, 0);
    assert!(err.contains("gateway.nope"), "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[gateway]\nport = \"x\"\n").expect("write");
    let (code, err) = run_to_exit(&["--config", cfg.to_str().expect("path")], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("gateway.port"), "{err}");
    // A port in use is refused too.
    let gw = Launcher::new().start();
    let port = gw.addr.port().to_string();
    let (code, err) = run_to_exit(&["--port", &port], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot listen"), "{err}");
}

#[test]
fn token_auth_from_the_environment() {
    let gw = Launcher::new()
        .env("CLAWGATE_TOKEN", "env-secret-123")
        .start();
    let (ok, _, err) = call(&gw.url, &["gateway.health"]);
    assert!(!ok, "no token must be refused");
    assert!(
        err.contains("401")
            || err.to_lowercase().contains("unauthorized")
            || err.contains("rejected"),
        "{err}"
    );
    let (ok, _, err) = call(&gw.url, &["--token", "env-secret-123", "gateway.status"]);
    assert!(ok, "{err}");
}

#[test]
fn help_explains_each_command_with_an_example() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["call", "--help"],
        vec!["schema", "--help"],
    ] {
        let out = Command::new(BIN).args(&args).output().expect("run");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "{args:?}: {text}");
    }
}

#[test]
fn committed_schema_is_current() {
    let out = Command::new(BIN)
        .args(["schema", "--check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same check covers the generated tables of the protocol document.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("the tables of docs/PROTOCOL.md are current"),
        "{stdout}"
    );
}

#[test]
fn stale_protocol_tables_fail_the_check_and_schema_rewrites_only_them() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("tempdir");
    let committed = std::fs::read_to_string(repo.join("docs/PROTOCOL.md")).expect("read doc");
    // A method the code does not declare, and a table row lost: both tables are stale.
    let stale = committed
        .replacen(
            "<!-- generated:methods:start -->",
            "<!-- generated:methods:start -->\n| `gone.method` | read | call | none | `x` | Gone. |",
            1,
        )
        .replacen("| `tick` |", "| `tock` |", 1);
    let doc = dir.path().join("PROTOCOL.md");
    let json = dir.path().join("openrpc.json");
    std::fs::write(&doc, &stale).expect("write doc");
    std::fs::copy(repo.join("schema/openrpc.json"), &json).expect("copy schema");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("schema")
            .args(args)
            .arg("--out")
            .arg(&json)
            .arg("--doc")
            .arg(&doc)
            .output()
            .expect("run")
    };
    let out = run(&["--check"]);
    assert!(!out.status.success(), "a stale table passed the check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("methods and events tables")
            && err.contains(&doc.display().to_string())
            && err.contains("run `clawgate schema"),
        "names the file and the fix: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(&doc).expect("read"),
        stale,
        "--check writes nothing"
    );

    // Writing puts the tables back; every byte outside the markers is kept.
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&doc).expect("read"), committed);
    assert!(run(&["--check"]).status.success());

    // A document without the markers is refused with a message saying where they go.
    std::fs::write(&doc, "# Protocol\n\nNo tables here.\n").expect("write");
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("<!-- generated:methods:start -->"),
        "says which marker is missing: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(&doc).expect("read"),
        "# Protocol\n\nNo tables here.\n",
        "a refused document is left alone"
    );
}

#[test]
fn a_second_gateway_on_the_same_data_dir_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = Launcher::on(dir.path()).start();
    let (code, err) = Launcher::on(dir.path()).run_to_exit();
    assert_ne!(code, 0);
    assert!(
        err.contains("in use by another clawgate") && err.contains(&first.pid().to_string()),
        "{err}"
    );
    // The lock dies with its process: after kill -9 a new gateway starts.
    first.kill9();
    let again = Launcher::on(dir.path()).start();
    drop(again);
}

/// Reads every message of `key` through chat.history, oldest first.
async fn all_messages(ws: &mut RawWs, key: &str) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut before: Option<Value> = None;
    loop {
        let mut params = json!({"sessionKey": key, "limit": 1000});
        if let Some(b) = &before {
            params["beforeId"] = b.clone();
        }
        let resp = ws.call("chat.history", params).await;
        let page = resp["result"].clone();
        let msgs = page["messages"].as_array().cloned().unwrap_or_default();
        if let Some(first) = msgs.first() {
            before = Some(first["id"].clone());
        }
        let mut merged = msgs;
        merged.extend(out);
        out = merged;
        if page["hasMore"] != true {
            return out;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, String)>::new()));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(7);
    let rounds = 5;
    for round in 0..rounds {
        let mut gw = Launcher::on(dir.path()).start();
        let addr = gw.addr;
        let mut writers = Vec::new();
        for w in 0..4 {
            let acked = acked.clone();
            writers.push(tokio::spawn(async move {
                let Ok(mut ws) = RawWs::connect_with(addr, "/", &[]).await else { return };
                let key = if w % 2 == 0 { "crash-a" } else { "crash-b" };
                for i in 0.. {
                    let content = format!("r{round}-w{w}-{i}");
                    let req = json!({"jsonrpc": "2.0", "id": 1, "method": "chat.inject", "params": {"sessionKey": key, "role": "assistant", "content": content}});
                    if ws.sender.send_text(req.to_string()).await.is_err() || ws.sender.flush().await.is_err() {
                        return;
                    }
                    match ws.try_recv(Duration::from_secs(5)).await {
                        Some(resp) if resp.get("result").is_some() => {
                            if let Ok(mut a) = acked.lock() {
                                a.push((key.to_string(), content));
                            }
                        }
                        _ => return,
                    }
                }
            }));
        }
        // Kill at a pseudo-random moment between 50 and 400 ms.
        let delay = 50
            + (seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(round * 1442695040888963407)
                >> 33)
                % 350;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        gw.kill9();
        for w in writers {
            let _ = w.await;
        }
    }
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(
        acked.len() > 20,
        "the test wrote too little: {}",
        acked.len()
    );
    let gw = Launcher::on(dir.path()).start();
    let mut ws = RawWs::connect(gw.addr).await;
    for key in ["crash-a", "crash-b"] {
        let stored: std::collections::HashSet<String> = all_messages(&mut ws, key)
            .await
            .iter()
            .filter_map(|m| m["content"].as_str().map(str::to_string))
            .collect();
        for (k, content) in &acked {
            if k == key {
                assert!(
                    stored.contains(content),
                    "acknowledged {content} lost in {key}"
                );
            }
        }
    }
    // Every complete line of every transcript parses; at most one torn line per kill.
    let torn: usize = transcript_files(dir.path())
        .iter()
        .map(|path| Transcript::read(path).damaged().count())
        .sum();
    assert!(torn <= rounds as usize * 2, "{torn} damaged lines");
}

#[tokio::test]
async fn damaged_lines_are_skipped_with_a_warning_and_never_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Launcher::on(dir.path()).start();
    let mut ws = RawWs::connect(gw.addr).await;
    let s = ws.call("sessions.create", json!({"key": "dmg"})).await;
    let id = s["result"]["sessionId"].as_str().expect("id").to_string();
    for i in 0..3 {
        ws.call(
            "chat.inject",
            json!({"sessionKey": "dmg", "role": "assistant", "content": format!("ok{i}")}),
        )
        .await;
    }
    // A headerless transcript from elsewhere.
    let orphan = "0123456789abcdef0123456789abcdef";
    drop(ws);
    gw.terminate();
    let path = transcript_path(dir.path(), &id);
    let mut text = std::fs::read_to_string(&path).expect("read");
    let garbage = "this is not json\n{\"type\":\"future-thing\",\"x\":1}\n";
    // Insert garbage in the middle and a torn line at the end.
    let mut lines: Vec<&str> = text.lines().collect();
    let tail = lines.split_off(2);
    let mut rebuilt = lines.join("\n") + "\n" + garbage + &tail.join("\n") + "\n";
    rebuilt.push_str(r#"{"type":"message","id":"torn","con"#);
    text = rebuilt;
    std::fs::write(&path, &text).expect("write");
    std::fs::write(
        transcript_path(dir.path(), orphan),
        "{\"type\":\"message\",\"id\":\"o1\",\"parentId\":null,\"ts\":5,\"role\":\"user\",\"content\":\"orphan\"}\n",
    )
    .expect("write orphan");
    // And no index: everything is rebuilt from the transcripts.
    let _ = std::fs::remove_file(dir.path().join("sessions").join("index.json"));
    let gw = Launcher::on(dir.path()).start();
    let mut ws = RawWs::connect(gw.addr).await;
    let msgs = all_messages(&mut ws, "dmg").await;
    let contents: Vec<&str> = msgs.iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(contents, vec!["ok0", "ok1", "ok2"]);
    let s = ws.call("sessions.get", json!({"key": "dmg"})).await;
    assert_eq!(s["result"]["messageCount"], 3);
    // The orphan is kept under a recovered key.
    let o = ws
        .call(
            "chat.history",
            json!({"sessionKey": format!("recovered:{orphan}")}),
        )
        .await;
    assert_eq!(o["result"]["messages"][0]["content"], "orphan", "{o}");
    // The next append starts on a fresh line after the torn bytes, which stay.
    ws.call(
        "chat.inject",
        json!({"sessionKey": "dmg", "role": "system", "content": "after"}),
    )
    .await;
    let after = std::fs::read_to_string(&path).expect("read");
    assert!(
        after.starts_with(&text),
        "no byte before the append changed"
    );
    assert!(
        after[text.len()..].starts_with("\n{\"type\":\"message\""),
        "{}",
        &after[text.len()..]
    );
    let log = gw.log();
    let file = format!("{id}.jsonl");
    assert!(
        log.contains(&file) && log.contains("unparsable"),
        "warning names the file: {log}"
    );
    assert!(
        log.contains("line=3") || log.contains("line: 3"),
        "warning names the line: {log}"
    );
    assert!(log.contains("unknown type"), "{log}");
}

#[tokio::test]
async fn sessions_survive_a_restart_with_or_without_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Launcher::on(dir.path()).start();
    let mut ws = RawWs::connect(gw.addr).await;
    for i in 0..20 {
        ws.call(
            "sessions.create",
            json!({"key": format!("s{i}"), "label": format!("L{i}")}),
        )
        .await;
        ws.call("chat.inject", json!({"sessionKey": format!("s{i}"), "role": "assistant", "content": format!("hello {i}")})).await;
    }
    let before = ws.call("sessions.list", json!({"limit": 1000})).await["result"].clone();
    drop(ws);
    gw.terminate();
    assert!(
        dir.path().join("sessions/index.json").exists(),
        "the index is written at shutdown"
    );
    for variant in ["index", "no index", "damaged index"] {
        match variant {
            "no index" => std::fs::remove_file(dir.path().join("sessions/index.json")).expect("rm"),
            "damaged index" => std::fs::write(
                dir.path().join("sessions/index.json"),
                b"{\"version\":1,\"sess",
            )
            .expect("write"),
            _ => {}
        }
        let mut gw = Launcher::on(dir.path()).start();
        let mut ws = RawWs::connect(gw.addr).await;
        let after = ws.call("sessions.list", json!({"limit": 1000})).await["result"].clone();
        assert_eq!(after, before, "{variant}");
        drop(ws);
        gw.terminate();
    }
}

#[tokio::test]
async fn idempotency_keys_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = Launcher::on(dir.path()).start();
    let mut ws = RawWs::connect(gw.addr).await;
    // The same call each time: only the first runs.
    let remember = json!({"message": "remember me", "idempotencyKey": "idem-1"});
    let first = ws.call("chat.send", remember.clone()).await;
    let run_id = first["result"]["runId"].clone();
    // Wait for the run to end.
    loop {
        let r = ws.call("chat.send", remember.clone()).await;
        if r["result"]["status"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(ws);
    gw.terminate();
    let before = all_transcript_lines(dir.path());
    let gw = Launcher::on(dir.path()).start();
    let mut ws = RawWs::connect(gw.addr).await;
    let again = ws.call("chat.send", remember.clone()).await;
    assert_eq!(again["result"]["runId"], run_id, "{again}");
    assert_eq!(again["result"]["status"], "done");
    assert_eq!(again["result"]["outcome"], "final");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(all_transcript_lines(dir.path()), before, "nothing written");
}

/// How many lines all transcripts of `data_dir` have.
fn all_transcript_lines(data_dir: &std::path::Path) -> usize {
    transcript_files(data_dir)
        .iter()
        .map(|path| Transcript::read(path).len())
        .sum()
}

#[test]
fn echo_tool_loop_end_to_end_with_clawgate_call() {
    let gw = Launcher::new().start();
    let (ok, text, err) = call(
        &gw.url,
        &[
            "--subscribe",
            "chat.stream",
            r#"{"message": "/tool write_file {\"path\": \"hello.txt\", \"content\": \"written by the agent\"}", "sessionKey": "demo"}"#,
        ],
    );
    assert!(ok, "{err}");
    let payloads: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line")["payload"].clone())
        .collect();
    let states: Vec<&str> = payloads
        .iter()
        .filter_map(|p| p["state"].as_str())
        .filter(|s| *s != "delta")
        .collect();
    assert_eq!(
        states,
        vec!["started", "tool_start", "tool_end", "final"],
        "{text}"
    );
    let fin = payloads.last().expect("final");
    assert!(
        fin["message"]["content"]
            .as_str()
            .is_some_and(|c| c.contains("wrote 20 bytes to hello.txt")),
        "{fin}"
    );
    let dir = gw.data_dir();
    assert_eq!(
        std::fs::read_to_string(dir.join("workspace/hello.txt")).expect("file"),
        "written by the agent"
    );
    let (ok, out, _) = call(&gw.url, &["chat.history", "{\"sessionKey\":\"demo\"}"]);
    assert!(ok);
    let history: Value = serde_json::from_str(&out).expect("json");
    let roles: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(roles, vec!["user", "assistant", "tool", "assistant"]);
}
