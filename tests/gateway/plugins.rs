//! Plugins: the example Python plugin, an unruly one, collisions, hot add and remove.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{RawWs, TestGateway, start};

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

async fn wait_state(ws: &mut RawWs, plugin: &str, state: &str) {
    loop {
        let e = ws.next_event().await;
        if e["event"] == "plugins.changed"
            && e["payload"]["plugin"] == plugin
            && e["payload"]["state"] == state
        {
            return;
        }
    }
}

async fn patch(ws: &mut RawWs, patch: Value) -> Value {
    let hash = ws.call("config.get", json!({})).await["result"]["hash"].clone();
    ws.call("config.patch", json!({"patch": patch, "baseHash": hash}))
        .await
}

fn hello_plugin() -> Value {
    json!({"name": "hello", "command": ["python3", repo().join("examples/plugins/hello.py").display().to_string()]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_plugin_added_and_removed_at_run_time() {
    let gw = start(|_| {}).await;
    // Opened before the plugin exists.
    let mut early = RawWs::connect(gw.addr()).await;
    let mut watcher = RawWs::connect(gw.addr()).await;
    watcher
        .subscribe(json!({"events": ["plugins.changed", "hello.*"]}))
        .await;
    let r = patch(&mut watcher, json!({"plugins": [hello_plugin()]})).await;
    assert_eq!(r["result"]["changedPaths"], json!(["plugins"]), "{r}");
    wait_state(&mut watcher, "hello", "running").await;

    let greet = early.call("hello.greet", json!({"name": "Ada"})).await;
    assert_eq!(
        greet["result"],
        json!({"greeting": "Hello, Ada!"}),
        "{greet}"
    );
    let e = watcher.next_event().await;
    assert_eq!(e["event"], "hello.greeted");
    assert_eq!(e["payload"], json!({"name": "Ada"}));
    let bad = early.call("hello.greet", json!({"name": 5})).await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    assert_eq!(bad["error"]["data"]["path"], "name");

    let discover = early.call("rpc.discover", json!({})).await;
    let greet_doc = discover["result"]["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .find(|m| m["name"] == "hello.greet")
        .cloned()
        .expect("listed");
    assert_eq!(greet_doc["x-scope"], "read");
    assert_eq!(greet_doc["x-owner"], "plugin:hello");
    let hello = early.call("gateway.hello", json!({})).await;
    assert!(
        hello["result"]["methods"]
            .as_array()
            .expect("methods")
            .contains(&json!("hello.greet"))
    );
    assert!(
        hello["result"]["events"]
            .as_array()
            .expect("events")
            .contains(&json!("hello.greeted"))
    );
    let tools = early.call("tools.catalog", json!({})).await;
    let shout = tools["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .find(|t| t["name"] == "hello_shout")
        .cloned()
        .expect("tool listed");
    assert_eq!(shout["source"], "plugin:hello");
    let list = early.call("plugins.list", json!({})).await;
    assert_eq!(list["result"]["plugins"][0]["state"], "running", "{list}");
    assert_eq!(
        list["result"]["plugins"][0]["methods"],
        json!(["hello.greet"])
    );
    assert_eq!(
        list["result"]["plugins"][0]["tools"],
        json!(["hello_shout"])
    );
    let status = early.call("gateway.status", json!({})).await;
    assert_eq!(
        status["result"]["plugins"],
        json!([{"name": "hello", "state": "running"}])
    );

    // The agent calls the plugin's tool.
    let resp = early.call("chat.stream", json!({"message": "/tool hello_shout {\"text\": \"quiet please\"}", "sessionKey": "pl"})).await;
    assert!(resp.get("result").is_some());
    loop {
        let msg = early.recv().await;
        let p = &msg["params"]["result"]["payload"];
        if p["state"] == "tool_end" {
            assert_eq!(p["output"], "QUIET PLEASE", "{p}");
            assert_eq!(p["isError"], false);
        }
        if p["state"] == "final" {
            break;
        }
    }

    // Removed: stopped, gone from the table, on open connections too.
    patch(&mut watcher, json!({"plugins": null})).await;
    wait_state(&mut watcher, "hello", "stopped").await;
    let gone = early.call("hello.greet", json!({"name": "Ada"})).await;
    assert_eq!(gone["error"]["code"], -32601, "{gone}");
    let tools = early.call("tools.catalog", json!({})).await;
    assert!(!tools.to_string().contains("hello_shout"));
}

fn unruly(gw: &TestGateway, name: &str, timeout_ms: u64, extra_env: &[(&str, &str)]) -> Value {
    let mut env = serde_json::Map::new();
    env.insert(
        "UNRULY_STARTS_FILE".into(),
        json!(
            gw.dir
                .path()
                .join(format!("{name}.starts"))
                .display()
                .to_string()
        ),
    );
    for (k, v) in extra_env {
        env.insert(k.to_string(), json!(v));
    }
    json!({"name": name, "command": ["python3", repo().join("tests/plugins/unruly.py").display().to_string()], "env": env, "call_timeout_ms": timeout_ms})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_hung_or_garbage_writing_plugin_is_isolated_and_restarted() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let mut watcher = RawWs::connect(gw.addr()).await;
    watcher
        .subscribe(json!({"events": ["plugins.changed"]}))
        .await;
    let plugin = unruly(&gw, "unruly", 500, &[]);
    patch(&mut ws, json!({"plugins": [plugin]})).await;
    wait_state(&mut watcher, "unruly", "running").await;
    let first = ws.call("unruly.ok", json!({})).await["result"]["pid"].clone();
    for misbehaviour in ["unruly.crash", "unruly.hang", "unruly.garbage"] {
        let t0 = std::time::Instant::now();
        let resp = ws.call(misbehaviour, json!({})).await;
        assert_eq!(resp["error"]["code"], -32025, "{misbehaviour}: {resp}");
        assert_eq!(resp["error"]["data"]["retryable"], true);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{misbehaviour} answered promptly"
        );
        // The gateway stays up and answers others meanwhile.
        assert_eq!(
            ws.call("gateway.health", json!({})).await["result"]["ok"],
            true
        );
        wait_state(&mut watcher, "unruly", "restarting").await;
        wait_state(&mut watcher, "unruly", "running").await;
        let again = ws.call("unruly.ok", json!({})).await;
        assert!(
            again["result"]["pid"].is_number(),
            "{misbehaviour}: back after a restart: {again}"
        );
        assert_ne!(again["result"]["pid"], first, "a new process");
    }
    let starts = std::fs::read_to_string(gw.dir.path().join("unruly.starts")).expect("starts file");
    assert_eq!(
        starts.lines().count(),
        4,
        "started once and restarted three times"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_collisions_are_refused_and_reported() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let mut watcher = RawWs::connect(gw.addr()).await;
    watcher
        .subscribe(json!({"events": ["plugins.changed"]}))
        .await;
    // `test.write` is a method of the test table: a plugin called `test` declaring `write` collides.
    let colliding = unruly(&gw, "test", 1000, &[("UNRULY_EXTRA", "write")]);
    let reserved = unruly(&gw, "sessions", 1000, &[]);
    // A namespace version 2 reserves for the gateway is refused too.
    let reserved_v2 = unruly(&gw, "mcp", 1000, &[]);
    // A tool named like an MCP tool (`<server>__<tool>`) could collide with one.
    let mcp_like = unruly(&gw, "tooly", 1000, &[("UNRULY_TOOL", "files__read")]);
    patch(
        &mut ws,
        json!({"plugins": [colliding, reserved, reserved_v2, mcp_like]}),
    )
    .await;
    wait_state(&mut watcher, "test", "failed").await;
    let list = ws.call("plugins.list", json!({})).await;
    let plugins = list["result"]["plugins"]
        .as_array()
        .expect("plugins")
        .clone();
    let test = plugins
        .iter()
        .find(|p| p["name"] == "test")
        .expect("listed");
    assert_eq!(test["state"], "failed");
    assert!(
        test["error"]
            .as_str()
            .is_some_and(|e| e.contains("test.write")),
        "{test}"
    );
    // It registered nothing: not even its other methods.
    assert_eq!(ws.call("test.ok", json!({})).await["error"]["code"], -32601);
    assert_eq!(
        ws.call("test.write", json!({})).await["result"],
        "wrote",
        "the original stays"
    );
    for (name, needle) in [
        ("sessions", "`sessions` is a reserved namespace"),
        ("mcp", "`mcp` is a reserved namespace"),
        ("tooly", "`__` is reserved for MCP tools"),
    ] {
        loop {
            let l = ws.call("plugins.list", json!({})).await;
            let p = l["result"]["plugins"]
                .as_array()
                .expect("plugins")
                .iter()
                .find(|p| p["name"] == name)
                .cloned()
                .unwrap_or_default();
            if p["state"] == "failed" {
                assert!(
                    p["error"].as_str().is_some_and(|e| e.contains(needle)),
                    "{p}"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn an_in_process_plugin_uses_the_core_declarations() {
    let gw = start(|c| {
        c.plugins = vec![clawgate::config::PluginConfig {
            name: "clock".into(),
            command: vec![],
            env: Default::default(),
            enabled: true,
            call_timeout_ms: None,
        }];
    })
    .await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let now = ws.call("clock.now", json!({})).await;
    assert!(now["result"]["ts"].as_u64().is_some(), "{now}");
    let bad = ws.call("clock.now", json!({"x": 1})).await;
    assert_eq!(
        bad["error"]["data"]["path"], "x",
        "typed params, like a core method"
    );
    let discover = ws.call("rpc.discover", json!({})).await;
    assert!(
        discover.to_string().contains("ClockNowResult"),
        "its schema is in the document"
    );
    let tools = ws.call("tools.catalog", json!({})).await;
    assert!(tools.to_string().contains("clock_now"));
    let list = ws.call("plugins.list", json!({})).await;
    assert_eq!(list["result"]["plugins"][0]["kind"], "builtin");
    assert_eq!(
        list["result"]["plugins"][0]["methods"],
        json!(["clock.now"])
    );
}
