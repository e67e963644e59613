//! Live configuration: config.get/patch/schema, file edits while running, hot and restart keys.

use std::time::Duration;

use clawgate::config::{AuthMode, TokenConfig};
use clawgate::rpc::Scope;
use serde_json::json;

use crate::common::{RawWs, TestGateway, start};

fn config_file(gw: &TestGateway) -> std::path::PathBuf {
    gw.dir.path().join("clawgate.toml")
}

#[tokio::test]
async fn get_patch_keeps_comments_and_refuses_stale_or_invalid_patches() {
    let gw = start(|c| {
        c.gateway.auth.mode = AuthMode::Token;
        c.gateway.auth.tokens = vec![TokenConfig {
            name: "admin".into(),
            token: "admin-secret-1".into(),
            scopes: vec![Scope::Admin],
        }];
    })
    .await;
    let mut ws = RawWs::connect_with(
        gw.addr(),
        "/",
        &[("authorization", "Bearer admin-secret-1")],
    )
    .await
    .expect("connects");
    ws.subscribe(json!({"events": ["config.changed"]})).await;
    // A hand-written file with comments.
    let text = "# my gateway\n[gateway]\nport = 0\n# how often to tick\ntick_interval_ms = 30000 # default\n\n[gateway.auth]\nmode = \"token\"\n\n[[gateway.auth.tokens]]\nname = \"admin\"\ntoken = \"admin-secret-1\"\nscopes = [\"admin\"]\n";
    std::fs::write(config_file(&gw), text).expect("write");
    ws.next_payload_of("config.changed").await;
    let got = ws.call("config.get", json!({})).await;
    let got = &got["result"];
    assert_eq!(
        got["config"]["gateway"]["auth"]["tokens"][0]["token"],
        "<redacted>"
    );
    assert_eq!(got["config"]["gateway"]["tick_interval_ms"], 30000);
    let hash = got["hash"].as_str().expect("hash").to_string();
    assert_eq!(hash, clawgate::config::hash_bytes(text.as_bytes()));
    assert_eq!(got["path"], config_file(&gw).display().to_string());

    let stale = ws
        .call(
            "config.patch",
            json!({"patch": {"gateway": {"tick_interval_ms": 5000}}, "baseHash": "0000"}),
        )
        .await;
    assert_eq!(stale["error"]["code"], -32023, "{stale}");
    assert_eq!(
        std::fs::read_to_string(config_file(&gw)).expect("read"),
        text,
        "a stale patch changes nothing"
    );

    let invalid = ws
        .call(
            "config.patch",
            json!({"patch": {"gateway": {"port": "x"}}, "baseHash": hash}),
        )
        .await;
    assert_eq!(invalid["error"]["code"], -32602, "{invalid}");
    assert_eq!(invalid["error"]["data"]["path"], "gateway.port");
    let unknown = ws
        .call(
            "config.patch",
            json!({"patch": {"gateway": {"tick": 1}}, "baseHash": hash}),
        )
        .await;
    assert_eq!(
        unknown["error"]["data"]["path"], "gateway.tick",
        "{unknown}"
    );
    let placeholder = ws.call("config.patch", json!({"patch": {"gateway": {"auth": {"tokens": [{"name": "admin", "token": "<redacted>", "scopes": ["admin"]}]}}}, "baseHash": hash})).await;
    assert_eq!(placeholder["error"]["code"], -32602, "{placeholder}");
    assert_eq!(
        std::fs::read_to_string(config_file(&gw)).expect("read"),
        text,
        "refused patches change nothing"
    );

    let ok = ws
        .call(
            "config.patch",
            json!({"patch": {"gateway": {"tick_interval_ms": 5000}}, "baseHash": hash}),
        )
        .await;
    let ok = &ok["result"];
    assert_eq!(
        ok["changedPaths"],
        json!(["gateway.tick_interval_ms"]),
        "{ok}"
    );
    assert_eq!(ok["reloadKind"], "hot");
    let after = std::fs::read_to_string(config_file(&gw)).expect("read");
    assert!(
        after.contains("# my gateway")
            && after.contains("# how often to tick")
            && after.contains("# default"),
        "{after}"
    );
    assert!(after.contains("tick_interval_ms = 5000"), "{after}");
    assert_eq!(ok["hash"], clawgate::config::hash_bytes(after.as_bytes()));
    let change = ws.next_payload_of("config.changed").await;
    assert_eq!(change["changedPaths"], json!(["gateway.tick_interval_ms"]));
    assert_eq!(
        gw.running.gateway.config().gateway.tick_interval_ms,
        5000,
        "hot: in effect at once"
    );

    // A restart key: reported as pending.
    let hash = ok["hash"].as_str().expect("hash").to_string();
    let r = ws
        .call(
            "config.patch",
            json!({"patch": {"events": {"replay_capacity": 10}}, "baseHash": hash}),
        )
        .await;
    assert_eq!(r["result"]["reloadKind"], "restart", "{r}");
    let status = ws.call("gateway.status", json!({})).await;
    assert_eq!(
        status["result"]["pendingRestart"],
        json!(["events.replay_capacity"])
    );
    // Removing a key with null.
    let hash = r["result"]["hash"].as_str().expect("hash").to_string();
    let r = ws
        .call(
            "config.patch",
            json!({"patch": {"events": null}, "baseHash": hash}),
        )
        .await;
    assert!(r.get("result").is_some(), "{r}");
    assert!(
        !std::fs::read_to_string(config_file(&gw))
            .expect("read")
            .contains("[events]")
    );
    let status = ws.call("gateway.status", json!({})).await;
    assert_eq!(status["result"]["pendingRestart"], json!([]));
}

#[tokio::test]
async fn an_invalid_edit_on_disk_keeps_the_last_good_config() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    ws.subscribe(json!({"events": ["config.changed"]})).await;
    let before = gw.running.gateway.config_hash();
    std::fs::write(config_file(&gw), "[gateway]\nmax_batch = \"lots\"\n").expect("write");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        gw.running.gateway.config_hash(),
        before,
        "the bad edit was not applied"
    );
    assert!(
        ws.call("gateway.health", json!({}))
            .await
            .get("result")
            .is_some(),
        "still serving"
    );
    std::fs::write(config_file(&gw), "[gateway]\nmax_batch = 7\n").expect("write");
    let change = ws.next_payload_of("config.changed").await;
    assert!(
        change["changedPaths"]
            .as_array()
            .expect("paths")
            .contains(&json!("gateway.max_batch")),
        "{change}"
    );
    assert_eq!(gw.running.gateway.config().gateway.max_batch, 7);
}

#[tokio::test]
async fn a_token_removed_by_a_config_edit_stops_working_on_open_connections() {
    let gw = start(|c| {
        c.gateway.auth.mode = AuthMode::Token;
        c.gateway.auth.tokens = vec![
            TokenConfig {
                name: "keep".into(),
                token: "keep-secret-1".into(),
                scopes: vec![Scope::Admin],
            },
            TokenConfig {
                name: "drop".into(),
                token: "drop-secret-1".into(),
                scopes: vec![Scope::Admin],
            },
        ];
    })
    .await;
    let mut keep =
        RawWs::connect_with(gw.addr(), "/", &[("authorization", "Bearer keep-secret-1")])
            .await
            .expect("connects");
    let mut doomed =
        RawWs::connect_with(gw.addr(), "/", &[("authorization", "Bearer drop-secret-1")])
            .await
            .expect("connects");
    keep.subscribe(json!({"events": ["config.changed"]})).await;
    assert!(
        doomed
            .call("gateway.health", json!({}))
            .await
            .get("result")
            .is_some()
    );
    std::fs::write(
        config_file(&gw),
        "[gateway.auth]\nmode = \"token\"\n[[gateway.auth.tokens]]\nname = \"keep\"\ntoken = \"keep-secret-1\"\nscopes = [\"admin\"]\n",
    )
    .expect("write");
    keep.next_payload_of("config.changed").await;
    doomed.call_revoked("gateway.health").await;
    assert!(
        keep.call("gateway.health", json!({}))
            .await
            .get("result")
            .is_some()
    );
}

#[tokio::test]
async fn the_config_schema_says_how_each_key_reloads() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let schema = ws.call("config.schema", json!({})).await["result"].clone();
    let gateway = &schema["properties"]["gateway"];
    assert_eq!(
        gateway["properties"]["port"]["x-reload"], "restart",
        "{gateway}"
    );
    assert_eq!(gateway["properties"]["bind"]["x-reload"], "restart");
    assert_eq!(gateway["properties"]["tick_interval_ms"]["x-reload"], "hot");
    assert_eq!(gateway["properties"]["auth"]["x-reload"], "hot");
    assert_eq!(schema["properties"]["events"]["x-reload"], "restart");
    assert_eq!(schema["properties"]["agents"]["x-reload"], "hot");
    let agent = &schema["properties"]["agents"]["additionalProperties"];
    assert_eq!(agent["properties"]["model"]["x-reload"], "hot", "{agent}");
    assert_eq!(
        agent["properties"]["context"]["properties"]["max_tokens"]["x-reload"],
        "hot"
    );
    assert_eq!(
        schema["properties"]["gateway"]["properties"]["default_agent"]["x-reload"],
        "hot"
    );
    assert_eq!(schema["properties"]["plugins"]["x-reload"], "hot");
}
