//! Several agents in one gateway, sessions bound to them, and the system prompt in both wire
//! formats, against the loopback fake provider and echo; the version-1 `[agent]` file migrated
//! by the real binary.

use clawgate::config::{AgentConfig, Config, ProviderKind};
use serde_json::{Value, json};

use crate::common::launcher::Launcher;
use crate::common::{RawWs, start};
use crate::fake_provider::{FakeProvider, Script, anthropic, openai};

fn fake_agent(provider: ProviderKind, fake: &FakeProvider) -> AgentConfig {
    let (base, model) = match provider {
        ProviderKind::Anthropic => (format!("http://{}", fake.addr), "claude-test"),
        _ => (format!("http://{}/v1", fake.addr), "gpt-test"),
    };
    AgentConfig {
        provider,
        base_url: Some(base),
        model: model.into(),
        // Any variable cargo always sets will do as the key.
        api_key_env: Some("CARGO_MANIFEST_DIR".into()),
        delta_interval_ms: 10,
        ..AgentConfig::default()
    }
}

fn last_text(payloads: &[Value]) -> String {
    payloads
        .iter()
        .rev()
        .find(|p| p["state"] == "final")
        .and_then(|p| p["message"]["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_system_prompt_reaches_both_wire_formats_and_echo() {
    let fake = FakeProvider::start(vec![
        Script::sse(anthropic::reply(&["ok"])),
        Script::sse(openai::reply(&["ok"])),
    ])
    .await;
    let gw = start(|c: &mut Config| {
        c.default_agent_mut().instructions = Some("You are careful.".into());
        let mut claude = fake_agent(ProviderKind::Anthropic, &fake);
        claude.instructions = Some("You are careful.".into());
        let mut gpt = fake_agent(ProviderKind::Openai, &fake);
        gpt.instructions = Some("You are careful.".into());
        c.agents.insert("claude".into(), claude);
        c.agents.insert("gpt".into(), gpt);
    })
    .await;
    // Every agent here shares the default workspace, and so its AGENTS.md.
    let workspace = gw.dir.path().join("workspace");
    std::fs::create_dir_all(&workspace).expect("workspace");
    std::fs::write(workspace.join("AGENTS.md"), "Use tabs.").expect("AGENTS.md");
    let mut ws = RawWs::connect(gw.addr()).await;
    for (key, agent) in [("c", "claude"), ("g", "gpt")] {
        let injected = ws
            .call(
                "chat.inject",
                json!({"sessionKey": key, "role": "system", "content": "Be brief.", "agent": agent}),
            )
            .await;
        assert!(injected.get("result").is_some(), "{injected}");
        let payloads = ws
            .stream_run(json!({"sessionKey": key, "message": "hi"}))
            .await;
        assert_eq!(payloads[0]["agentId"], agent, "{:?}", payloads[0]);
    }
    let expected = "You are careful.\n\n# AGENTS.md\n\nUse tabs.\n\nBe brief.";
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body["system"], expected, "{}", seen[0].body);
    let roles: Vec<&str> = seen[0].body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(roles, vec!["user"], "the system message is not repeated");
    let messages = seen[1].body["messages"].as_array().expect("messages");
    assert_eq!(messages[0], json!({"role": "system", "content": expected}));
    assert_eq!(
        messages.iter().filter(|m| m["role"] == "system").count(),
        1,
        "{messages:?}"
    );

    // Echo answers `/system` with the prompt, read anew at each run's start.
    let payloads = ws
        .stream_run(json!({"sessionKey": "e", "message": "/system"}))
        .await;
    assert_eq!(
        last_text(&payloads),
        "You are careful.\n\n# AGENTS.md\n\nUse tabs."
    );
    std::fs::write(workspace.join("AGENTS.md"), "Use spaces.").expect("edit");
    let payloads = ws
        .stream_run(json!({"sessionKey": "e", "message": "/system"}))
        .await;
    assert_eq!(
        last_text(&payloads),
        "You are careful.\n\n# AGENTS.md\n\nUse spaces."
    );
}

#[tokio::test]
async fn sessions_belong_to_one_agent_and_agents_run_in_parallel() {
    let fake = FakeProvider::start(vec![
        Script::sse(openai::reply(&["from ", "gpt"])).paced(40),
    ])
    .await;
    let gw = start(|c: &mut Config| {
        c.agents
            .insert("gpt".into(), fake_agent(ProviderKind::Openai, &fake));
    })
    .await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let listed = ws.call("agents.list", json!({})).await["result"]["agents"].clone();
    let ids: Vec<&str> = listed
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert_eq!(ids, vec!["gpt", "main"]);
    assert_eq!(listed[0]["provider"], "openai");
    assert_eq!(listed[0]["model"], "gpt-test");
    assert_eq!(listed[0]["default"], false);
    assert_eq!(listed[1]["default"], true);
    assert!(
        listed[1]["tools"]
            .as_array()
            .expect("tools")
            .contains(&json!("read_file")),
        "{listed}"
    );

    let created = ws
        .call("sessions.create", json!({"key": "g", "agent": "gpt"}))
        .await;
    assert_eq!(created["result"]["agentId"], "gpt", "{created}");
    let models = ws.call("models.list", json!({"agent": "gpt"})).await;
    assert_eq!(
        models["result"]["models"][0]["provider"], "openai",
        "{models}"
    );

    // Two runs at once, one per agent.
    ws.subscribe(json!({"events": ["chat"]})).await;
    let a = ws
        .call("chat.send", json!({"sessionKey": "g", "message": "one"}))
        .await;
    let b = ws
        .call("chat.send", json!({"sessionKey": "m", "message": "two"}))
        .await;
    let runs = [
        a["result"]["runId"].as_str().expect("run").to_string(),
        b["result"]["runId"].as_str().expect("run").to_string(),
    ];
    let mut finals = std::collections::BTreeMap::new();
    let mut started_agents = std::collections::BTreeMap::new();
    while finals.len() < 2 {
        let p = ws.next_payload_of("chat").await;
        let run = p["runId"].as_str().unwrap_or_default().to_string();
        if p["state"] == "started" {
            started_agents.insert(run.clone(), p["agentId"].clone());
        }
        if p["state"] == "final" {
            finals.insert(run, p["message"]["content"].clone());
        }
    }
    assert_eq!(started_agents[&runs[0]], "gpt");
    assert_eq!(started_agents[&runs[1]], "main");
    assert_eq!(finals[&runs[0]], "from gpt");
    assert_eq!(finals[&runs[1]], "Echo: two");
    let header = gw.transcript("g").header;
    assert_eq!(header["agent"], "gpt", "{header}");

    // A session keeps its agent; a call naming another, or none configured, is refused.
    let other = ws
        .call(
            "chat.send",
            json!({"sessionKey": "g", "message": "x", "agent": "main"}),
        )
        .await;
    assert_eq!(other["error"]["code"], -32023, "{other}");
    let unknown = ws
        .call(
            "chat.send",
            json!({"sessionKey": "new", "message": "x", "agent": "nobody"}),
        )
        .await;
    assert_eq!(unknown["error"]["code"], -32022, "{unknown}");
    let bad = ws
        .call("sessions.create", json!({"agent": "Not_An_Id"}))
        .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    assert_eq!(bad["error"]["data"]["path"], "agent", "{bad}");

    // The agent removed from the configuration: its sessions answer -32025 naming it.
    let hash = ws.call("config.get", json!({})).await["result"]["hash"].clone();
    let patched = ws
        .call(
            "config.patch",
            json!({"patch": {"agents": {"gpt": null}}, "baseHash": hash}),
        )
        .await;
    assert!(patched.get("result").is_some(), "{patched}");
    let gone = ws
        .call("chat.send", json!({"sessionKey": "g", "message": "x"}))
        .await;
    assert_eq!(gone["error"]["code"], -32025, "{gone}");
    assert!(
        gone["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`gpt`")),
        "{gone}"
    );
}

#[tokio::test]
async fn a_version_one_file_is_migrated_at_start_with_a_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("clawgate.toml");
    let original = "# my gateway\n[gateway]\nport = 0\n\n# the agent\n[agent]\nmodel = \"echo\" # the offline one\nmax_context_messages = 30\n\n[agent.tools]\nexec = \"off\"\n";
    std::fs::write(&config, original).expect("write");

    // --check: pending, nothing changed.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args(["config", "migrate", "--check", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains("agent.model -> agents.main.model"), "{out}");
    assert!(
        out.contains("agent.tools.exec -> agents.main.tools.exec"),
        "{out}"
    );
    assert!(out.contains("agent.max_context_messages dropped"), "{out}");
    assert_eq!(std::fs::read_to_string(&config).expect("read"), original);

    let mut gw = Launcher::on(dir.path())
        .without_port()
        .env("RUST_LOG", "info")
        .args(&["--config", config.to_str().expect("utf-8")])
        .start();
    let migrated = std::fs::read_to_string(&config).expect("read");
    assert_eq!(
        migrated,
        "# my gateway\n[gateway]\nport = 0\n\n# the agent\n[agents.main]\nmodel = \"echo\" # the offline one\n\n[agents.main.tools]\nexec = \"off\"\n"
    );
    let backups: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("clawgate.toml.bak.")
        })
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(
        std::fs::read_to_string(backups[0].path()).expect("backup"),
        original
    );
    let log = gw.log();
    assert!(log.contains("agent.model -> agents.main.model"), "{log}");
    gw.terminate();
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_clawgate"))
        .args(["config", "migrate", "--check", "--config"])
        .arg(&config)
        .output()
        .expect("runs");
    assert_eq!(check.status.code(), Some(0), "{check:?}");

    // A file that is old and new at once stops the gateway, and is left as it was.
    let both = "[agent]\nmodel = \"a\"\n[agents.main]\nmodel = \"b\"\n";
    std::fs::write(&config, both).expect("write");
    let (code, output) = Launcher::on(dir.path())
        .without_port()
        .args(&["--config", config.to_str().expect("utf-8")])
        .run_to_exit();
    assert_ne!(code, 0);
    assert!(
        output.contains("[agent]") && output.contains("[agents.main]"),
        "{output}"
    );
    assert_eq!(std::fs::read_to_string(&config).expect("read"), both);
}

#[tokio::test]
async fn anthropic_cache_tokens_are_kept_in_the_usage() {
    let mut events = anthropic::reply(&["cached"]);
    events[0] = format!(
        "event: message_start\ndata: {}\n\n",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-test", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 7, "output_tokens": 1, "cache_read_input_tokens": 900, "cache_creation_input_tokens": 40}}})
    );
    let fake = FakeProvider::start(vec![Script::sse(events)]).await;
    let gw = start(|c: &mut Config| {
        *c.default_agent_mut() = fake_agent(ProviderKind::Anthropic, &fake);
    })
    .await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let payloads = ws
        .stream_run(json!({"sessionKey": "c", "message": "hi"}))
        .await;
    let last = payloads.last().expect("a terminal payload");
    assert_eq!(last["state"], "final", "{last}");
    assert_eq!(last["usage"]["inputTokens"], 7, "{last}");
    assert_eq!(last["usage"]["cacheReadTokens"], 900, "{last}");
    assert_eq!(last["usage"]["cacheWriteTokens"], 40, "{last}");
    let stored = gw.transcript("c").whole().messages();
    let assistant = stored.last().expect("the answer");
    assert_eq!(assistant["usage"]["cacheReadTokens"], 900, "{assistant}");
}

#[tokio::test]
async fn a_run_keeps_its_agents_provider_across_a_reload() {
    let before = FakeProvider::start(vec![
        Script::sse(openai::reply(&["from ", "before"])).paced(150),
    ])
    .await;
    let after = FakeProvider::start(vec![Script::sse(openai::reply(&["from after"]))]).await;
    let gw = start(|c: &mut Config| {
        c.agents
            .insert("gpt".into(), fake_agent(ProviderKind::Openai, &before));
    })
    .await;
    let mut ws = RawWs::connect(gw.addr()).await;
    ws.subscribe(json!({"events": ["chat"]})).await;
    let sent = ws
        .call(
            "chat.send",
            json!({"sessionKey": "g", "message": "one", "agent": "gpt"}),
        )
        .await;
    let run = sent["result"]["runId"].as_str().expect("runId").to_string();
    loop {
        let p = ws.next_payload_of("chat").await;
        if p["runId"] == run.as_str() && p["state"] == "delta" {
            break;
        }
    }
    // Mid-run, the agent's provider moves to another server.
    let hash = ws.call("config.get", json!({})).await["result"]["hash"].clone();
    let patched = ws
        .call(
            "config.patch",
            json!({"patch": {"agents": {"gpt": {"base_url": format!("http://{}/v1", after.addr)}}}, "baseHash": hash}),
        )
        .await;
    assert!(patched.get("result").is_some(), "{patched}");
    let end = loop {
        let p = ws.next_payload_of("chat").await;
        if p["runId"] == run.as_str() && p["state"] == "final" {
            break p;
        }
    };
    assert_eq!(end["message"]["content"], "from before", "{end}");
    // The next run uses the new one.
    let payloads = ws
        .stream_run(json!({"sessionKey": "g", "message": "two"}))
        .await;
    assert_eq!(last_text(&payloads), "from after");
    assert_eq!(before.seen().len(), 1);
    assert_eq!(after.seen().len(), 1);
}
