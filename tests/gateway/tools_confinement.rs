//! The agent's built-in tools against a real gateway, driven over real sockets: the file tools
//! never reach the gateway's own state nor leave the workspace (even while a directory is being
//! swapped for a symlink), never block on a FIFO, and an abort ends a run whatever its tool does.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clawgate::agent::providers::ToolSpec;
use clawgate::agent::tools::{Tool, ToolContext, ToolFuture};
use clawgate::config::{Config, ExecMode, Loaded, ProviderKind};
use serde_json::{Value, json};

use crate::common::{RawWs, TIMEOUT, test_table, transcript_files};
use crate::fake_provider::{FakeProvider, Script, anthropic};

/// A gateway whose data directory is `home/.clawgate` (config file inside) and whose
/// workspace is `home`: the layout of a user who points the agent at their home folder.
struct HomeGateway {
    running: clawgate::Running,
    home: tempfile::TempDir,
}

impl HomeGateway {
    fn data_dir(&self) -> PathBuf {
        self.home.path().join(".clawgate")
    }
    fn config_path(&self) -> PathBuf {
        self.data_dir().join("clawgate.toml")
    }
}

async fn start_in_home(edit: impl FnOnce(&mut Config)) -> HomeGateway {
    let home = tempfile::tempdir().expect("tempdir");
    let data_dir = home.path().join(".clawgate");
    std::fs::create_dir_all(&data_dir).expect("mkdir");
    let mut config = Config::default();
    config.gateway.port = 0;
    config.default_agent_mut().workspace = Some(home.path().to_path_buf());
    edit(&mut config);
    clawgate::config::validate(&config).expect("valid test config");
    let path = data_dir.join("clawgate.toml");
    let text = toml::to_string(&config).expect("config serializes");
    std::fs::write(&path, &text).expect("write config");
    let loaded = Loaded {
        config,
        data_dir: data_dir.clone(),
        path: path.clone(),
        hash: clawgate::config::hash_bytes(text.as_bytes()),
        overridden_paths: Vec::new(),
        overrides: clawgate::config::Overrides {
            config_path: Some(path),
            data_dir: Some(data_dir),
            ..Default::default()
        },
        env: Vec::new(),
        migrations: Vec::new(),
    };
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let table: clawgate::gateway::BaseTable = Arc::new(move || Ok(test_table(n.clone())));
    let running = clawgate::start_with(loaded, clawgate::app::parts(table))
        .await
        .expect("gateway starts");
    HomeGateway { running, home }
}

/// Has the offline echo provider call `tool` with `input`; returns its `tool_end` payload.
async fn echo_tool(ws: &mut RawWs, key: &str, tool: &str, input: Value) -> Value {
    let payloads = ws
        .stream_run(json!({"message": &format!("/tool {tool} {input}"), "sessionKey": key}))
        .await;
    assert_eq!(
        payloads.last().map(|p| p["state"].clone()),
        Some(json!("final")),
        "{payloads:?}"
    );
    payloads
        .into_iter()
        .find(|p| p["state"] == "tool_end")
        .expect("a tool_end")
}

fn refused(end: &Value) -> bool {
    end["isError"] == true
        && end["output"]
            .as_str()
            .is_some_and(|o| o.contains("refused"))
}

/// Reads `ws` until a chat payload in `state` arrives.
async fn wait_payload(ws: &mut RawWs, state: &str) -> Value {
    loop {
        let p = ws.recv().await["params"]["result"]["payload"].clone();
        if p["state"] == state {
            return p;
        }
    }
}

#[tokio::test]
async fn file_tools_refuse_the_data_dir_and_config_inside_the_workspace() {
    let gw = start_in_home(|_| {}).await;
    let config_before = std::fs::read(gw.config_path()).expect("read config");
    let mut ws = RawWs::connect(gw.running.addr).await;
    // A first run writes a transcript into <dataDir>/sessions.
    let end = echo_tool(
        &mut ws,
        "t",
        "write_file",
        json!({"path": "notes/a.txt", "content": "hi"}),
    )
    .await;
    assert_eq!(end["isError"], false, "{end}");
    assert_eq!(
        std::fs::read_to_string(gw.home.path().join("notes/a.txt")).expect("read"),
        "hi"
    );
    let transcript = transcript_files(&gw.data_dir())
        .first()
        .and_then(|p| p.file_name())
        .map(|n| format!(".clawgate/sessions/{}", n.to_string_lossy()))
        .expect("a transcript");

    // The break test: turning exec on through the hot-reloaded config file.
    let evil = "[agent.tools]\nexec = \"on\"\n";
    for path in [".clawgate/clawgate.toml", "./.clawgate//clawgate.toml"] {
        let end = echo_tool(
            &mut ws,
            "t",
            "write_file",
            json!({"path": path, "content": evil}),
        )
        .await;
        assert!(refused(&end), "{path}: {end}");
        assert!(
            end["output"]
                .as_str()
                .is_some_and(|o| o.contains("data directory")),
            "the refusal says why: {end}"
        );
    }
    for input in [
        json!({"path": transcript, "content": "{}"}),
        json!({"path": ".clawgate/plugins/x.sh", "content": "#!/bin/sh"}),
    ] {
        let end = echo_tool(&mut ws, "t", "write_file", input.clone()).await;
        assert!(refused(&end), "{input}: {end}");
    }
    for path in [".clawgate/clawgate.toml", transcript.as_str()] {
        let end = echo_tool(&mut ws, "t", "read_file", json!({"path": path})).await;
        assert!(refused(&end), "{path}: {end}");
    }
    for path in [".clawgate", ".clawgate/sessions"] {
        let end = echo_tool(&mut ws, "t", "list_dir", json!({"path": path})).await;
        assert!(refused(&end), "{path}: {end}");
    }
    // The workspace's listing names the data directory only as refused.
    let end = echo_tool(&mut ws, "t", "list_dir", json!({})).await;
    assert_eq!(end["isError"], false, "{end}");
    let listing = end["output"].as_str().unwrap_or_default();
    assert!(listing.contains("notes/"), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l == ".clawgate/ [refused: the gateway's data directory]"),
        "{listing}"
    );
    assert!(!listing.contains(".jsonl"), "{listing}");

    assert_eq!(
        std::fs::read(gw.config_path()).expect("read config"),
        config_before,
        "the config file is unchanged"
    );
    assert!(!gw.data_dir().join("plugins").exists());
    // Whatever a reload would do, exec stays off.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        gw.running.gateway.config().default_agent().tools.exec,
        ExecMode::Off
    );
    let end = echo_tool(&mut ws, "t", "exec", json!({"command": "echo pwned"})).await;
    assert!(
        end["output"]
            .as_str()
            .is_some_and(|o| o.contains("exec is off")),
        "{end}"
    );
}

#[tokio::test]
async fn a_symlink_swap_race_lands_no_write_outside_the_workspace() {
    const TURNS: usize = 10;
    const CALLS: usize = 200;
    let outside = tempfile::tempdir().expect("tempdir");
    let mut scripts = Vec::new();
    for turn in 0..TURNS {
        let ids: Vec<String> = (0..CALLS).map(|i| format!("call_{turn}_{i}")).collect();
        let args: Vec<String> = (0..CALLS)
            .map(|i| json!({"path": format!("d/f{turn}_{i}.txt"), "content": "x"}).to_string())
            .collect();
        let pieces: Vec<[&str; 1]> = args.iter().map(|a| [a.as_str()]).collect();
        let calls: Vec<(&str, &str, &[&str])> = ids
            .iter()
            .zip(&pieces)
            .map(|(id, p)| (id.as_str(), "write_file", &p[..]))
            .collect();
        scripts.push(Script::sse(anthropic::tools("Writing.", &calls)));
    }
    scripts.push(Script::sse(anthropic::reply(&["done"])));
    let fake = FakeProvider::start(scripts).await;
    let gw = crate::common::start(|c| {
        c.default_agent_mut().provider = ProviderKind::Anthropic;
        c.default_agent_mut().base_url = Some(format!("http://{}", fake.addr));
        c.default_agent_mut().model = "claude-test".into();
        c.default_agent_mut().api_key_env = Some("CARGO_MANIFEST_DIR".into());
        c.default_agent_mut().max_turns = TURNS as u32 + 2;
        c.default_agent_mut().idle_timeout_ms = 30_000;
        c.default_agent_mut().run_timeout_ms = 600_000;
    })
    .await;
    let workspace = gw.dir.path().join("workspace");
    std::fs::create_dir_all(workspace.join("d")).expect("mkdir");
    std::os::unix::fs::symlink(outside.path(), workspace.join("l")).expect("symlink");

    // Swaps `d` (a directory) and `l` (a symlink out) until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let d = std::ffi::CString::new(workspace.join("d").into_os_string().into_encoded_bytes())
            .expect("cstring");
        let l = std::ffi::CString::new(workspace.join("l").into_os_string().into_encoded_bytes())
            .expect("cstring");
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            // Bounded, in case the test dies before it says stop.
            while !stop.load(Ordering::Relaxed) && swaps < 200_000_000 {
                // SAFETY: two valid NUL-terminated paths.
                let rc = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        d.as_ptr(),
                        libc::AT_FDCWD,
                        l.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                assert_eq!(rc, 0, "renameat2: {}", std::io::Error::last_os_error());
                swaps += 1;
            }
            swaps
        })
    };
    let mut ws = RawWs::connect(gw.addr()).await;
    ws.subscribe(json!({"events": ["chat"]})).await;
    let sent = ws
        .call(
            "chat.send",
            json!({"message": "write them", "sessionKey": "race"}),
        )
        .await;
    let run_id = sent["result"]["runId"].as_str().expect("runId").to_string();
    let mut ends = 0usize;
    let terminal = loop {
        let e = ws.next_event().await;
        let p = &e["payload"];
        if p["runId"] != run_id.as_str() {
            continue;
        }
        if p["state"] == "tool_end" {
            ends += 1;
        }
        if matches!(p["state"].as_str(), Some("final" | "aborted" | "error")) {
            break p.clone();
        }
    };
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().expect("the swapper ran");
    assert_eq!(terminal["state"], "final", "{terminal}");
    assert!(swaps > 0);
    let escaped: Vec<_> = std::fs::read_dir(outside.path())
        .expect("outside")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        escaped.is_empty(),
        "{} of {} writes landed outside the workspace ({ends} tool results seen)",
        escaped.len(),
        TURNS * CALLS
    );
    // The directory is under one of its two names now; the writes that went through are in it.
    let inside = ["d", "l"]
        .iter()
        .filter_map(|n| std::fs::read_dir(workspace.join(n)).ok())
        .flat_map(|d| d.flatten())
        .count();
    assert!(inside > 0, "some writes went through");
}

/// A tool that ignores its cancellation token and never returns.
struct Stuck;
impl Tool for Stuck {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "stuck".into(),
            description: "Never returns and ignores cancellation.".into(),
            input_schema: json!({"type": "object"}),
        }
    }
    fn call(&self, _input: Value, _ctx: ToolContext) -> ToolFuture {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn write_file_to_a_fifo_fails_promptly_and_abort_ends_a_stuck_tool() {
    let gw = crate::common::start(|_| {}).await;
    let workspace = gw.dir.path().join("workspace");
    std::fs::create_dir_all(&workspace).expect("mkdir");
    let fifo = std::ffi::CString::new(workspace.join("pipe").into_os_string().into_encoded_bytes())
        .expect("cstring");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let mut ws = RawWs::connect(gw.addr()).await;
    // The run ends (within the harness's 10 s receive bound): it used to block forever.
    let end = echo_tool(
        &mut ws,
        "f",
        "write_file",
        json!({"path": "pipe", "content": "x"}),
    )
    .await;
    assert_eq!(end["isError"], true, "{end}");
    assert!(
        end["output"]
            .as_str()
            .is_some_and(|o| o.contains("FIFO") && o.contains("not a regular file")),
        "{end}"
    );
    let end = echo_tool(&mut ws, "f", "read_file", json!({"path": "pipe"})).await;
    assert!(
        end["output"].as_str().is_some_and(|o| o.contains("FIFO")),
        "{end}"
    );

    // A tool that ignores the abort cannot hold the run, nor the session.
    let agent = gw.running.gateway.agent();
    let mut tools = agent.tools().as_ref().clone();
    tools.push(Arc::new(Stuck));
    agent.set_tools(tools);
    let mut ctl = RawWs::connect(gw.addr()).await;
    let resp = ws
        .call(
            "chat.stream",
            json!({"message": "/tool stuck {}", "sessionKey": "f"}),
        )
        .await;
    assert!(resp.get("result").is_some(), "{resp}");
    wait_payload(&mut ws, "tool_start").await;
    let resp = ctl.call("chat.abort", json!({"sessionKey": "f"})).await;
    assert_eq!(
        resp["result"]["aborted"].as_array().map(Vec::len),
        Some(1),
        "{resp}"
    );
    // Within the 10 s receive bound.
    wait_payload(&mut ws, "aborted").await;
    // The dropped tool's result is stored as the result of an aborted run.
    let history = ctl.call("chat.history", json!({"sessionKey": "f"})).await;
    let dropped = history["result"]["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "tool"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(dropped["aborted"], true, "{history}");
    assert!(
        dropped["content"]
            .as_str()
            .is_some_and(|c| c.contains("did not stop by itself")),
        "{history}"
    );
    let payloads = ws
        .stream_run(json!({"message": "still there?", "sessionKey": "f"}))
        .await;
    assert_eq!(
        payloads.last().map(|p| p["state"].clone()),
        Some(json!("final")),
        "the session is free again: {payloads:?}"
    );
}

#[tokio::test]
async fn abort_kills_exec_children_that_called_setsid() {
    let gw = crate::common::start(|c| c.default_agent_mut().tools.exec = ExecMode::On).await;
    let marker = gw.dir.path().join("marker");
    let started = gw.dir.path().join("started");
    let mut ws = RawWs::connect(gw.addr()).await;
    let mut ctl = RawWs::connect(gw.addr()).await;
    let command = format!(
        "setsid sh -c 'sleep 2; touch {m}' & touch {s}; sleep 30",
        m = marker.display(),
        s = started.display()
    );
    let resp = ws
        .call(
            "chat.stream",
            json!({"message": format!("/tool exec {}", json!({"command": command})), "sessionKey": "x"}),
        )
        .await;
    assert!(resp.get("result").is_some(), "{resp}");
    wait_payload(&mut ws, "tool_start").await;
    // The setsid child is running once the shell went past it.
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !started.exists() {
        assert!(std::time::Instant::now() < deadline, "the command started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = ctl.call("chat.abort", json!({"sessionKey": "x"})).await;
    assert_eq!(
        resp["result"]["aborted"].as_array().map(Vec::len),
        Some(1),
        "{resp}"
    );
    wait_payload(&mut ws, "aborted").await;
    // The child would touch the marker 2 s after it started.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert!(
        !Path::new(&marker).exists(),
        "a setsid child of an aborted exec survived and ran"
    );
}
