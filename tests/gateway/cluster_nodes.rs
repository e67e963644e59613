//! Cluster mode's nodes, with real clawgate binaries on one real NATS server: `gateway.status`
//! and `gateway.presence` span the nodes, a node killed with `kill -9` has its connections
//! announced `presence {left}` once (by the leader) when its entry expires, one leader runs the
//! cron jobs and another takes over when it dies, and a lost NATS connection refuses the calls
//! that need it (`-32025`, retryable) while the local ones keep answering and `/readyz` names
//! `cluster`, until NATS is back.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::RawWs;
use crate::common::launcher::{Gateway, Launcher};
use crate::common::nats::NatsServer;

/// The nodes' lease: a dead node is found within about this (short, and yet long enough that a
/// live leader on a busy machine keeps its lease).
const LEASE_MS: u64 = 2000;
/// Against hangs only, never a speed test.
const PATIENCE: Duration = Duration::from_secs(60);

/// A clawgate node `id` of the cluster on `nats`, with `extra` configuration after `[cluster]`;
/// its log has the cluster's and cron's INFO lines.
fn node(nats: &str, id: &str, extra: &str) -> Gateway {
    Launcher::new()
        .config(format!(
            "[cluster]\nnats_url = \"{nats}\"\nnode_id = \"{id}\"\nlease_ms = {LEASE_MS}\n{extra}"
        ))
        .env(
            "RUST_LOG",
            "warn,clawgate::cluster=info,clawgate::cron=info",
        )
        .start()
}

/// Fails the test when `t0` is older than [`PATIENCE`].
fn guard(t0: Instant, what: &str) {
    assert!(t0.elapsed() < PATIENCE, "{what} within {PATIENCE:?}");
}

/// Calls `gateway.status` on `ws` until its `cluster.nodes` lists `n` nodes; the `cluster`.
async fn cluster_of(ws: &mut RawWs, n: usize) -> Value {
    let t0 = Instant::now();
    loop {
        let status = ws.call("gateway.status", json!({})).await;
        let cluster = status["result"]["cluster"].clone();
        if cluster["nodes"].as_array().map(Vec::len) == Some(n) {
            return cluster;
        }
        guard(t0, &format!("{n} nodes in gateway.status: {status}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls `gateway.presence` on `ws` until an entry satisfies `found`; the entries.
async fn presence_until(ws: &mut RawWs, found: impl Fn(&Value) -> bool) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let resp = ws.call("gateway.presence", json!({})).await;
        let entries = resp["result"]["entries"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if entries.iter().any(&found) {
            return entries;
        }
        guard(t0, &format!("the presence entry looked for: {resp}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A WebSocket client on `gw` that named itself `name`; its connection id.
async fn named_client(gw: &Gateway, name: &str) -> (RawWs, String) {
    let mut ws = RawWs::connect(gw.addr).await;
    let hello = ws
        .call(
            "gateway.hello",
            json!({"client": {"name": name, "version": "1"}}),
        )
        .await;
    let conn = hello["result"]["server"]["connId"]
        .as_str()
        .unwrap_or_else(|| panic!("hello: {hello}"))
        .to_string();
    (ws, conn)
}

/// Waits until `gw`'s log has `count` INFO lines containing `needle`.
async fn wait_info(gw: &Gateway, needle: &str, count: usize) {
    let t0 = Instant::now();
    while gw.log_lines("INFO", needle) < count {
        guard(t0, &format!("{count} log line(s) {needle:?}: {}", gw.log()));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

const LEADER: &str = "this node is now the cluster leader";
const LOST_LEAD: &str = "this node is no longer the cluster leader";
const FIRED: &str = "cron job started a run";

#[tokio::test]
async fn status_and_presence_span_the_nodes_and_a_node_with_other_tokens_is_warned_about() {
    let nats = NatsServer::start();
    // Credentials in the URL (the test server takes any): status must never show them.
    let url = format!("nats://clawgate:s3cret-pass@127.0.0.1:{}", nats.port());
    let a = node(&url, "a", "");
    let b = node(&url, "b", "");
    let c = node(
        &url,
        "c",
        "[gateway.auth]\nmode = \"token\"\ntokens = [{ name = \"ops\", token = \"c-only-token-0123456789\", scopes = [\"admin\"] }]\n",
    );
    let mut on_a = RawWs::connect(a.addr).await;
    let (_on_b, b_conn) = named_client(&b, "on-b").await;

    for gw in [&a, &b] {
        let mut ws = RawWs::connect(gw.addr).await;
        let cluster = cluster_of(&mut ws, 3).await;
        let text = cluster.to_string();
        assert!(!text.contains("s3cret"), "credentials shown: {text}");
        assert_eq!(
            cluster["natsUrl"],
            format!("nats://<redacted>@127.0.0.1:{}", nats.port())
        );
        let nodes = cluster["nodes"].as_array().expect("nodes");
        let ids: Vec<&str> = nodes.iter().filter_map(|n| n["nodeId"].as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"], "{cluster}");
        for (n, node) in nodes.iter().zip([&a, &b, &c]) {
            assert_eq!(n["addr"], node.addr.to_string(), "{cluster}");
        }
        // `main` is the one session yet, owned by one node (the entries are renewed every
        // third of the lease: the count may still be the one from before it was taken).
        let owned: Vec<u64> = nodes
            .iter()
            .filter_map(|n| n["sessionsOwned"].as_u64())
            .collect();
        assert_eq!(owned.len(), 3, "{cluster}");
        assert!(owned.iter().sum::<u64>() <= 1, "{cluster}");
    }
    let status = on_a.call("gateway.status", json!({})).await;
    assert_eq!(status["result"]["cluster"]["nodeId"], "a");

    // A connection open on b is listed on a, with its node; a's own with a's.
    let entries = presence_until(&mut on_a, |e| {
        e["nodeId"] == "b" && e["connId"] == b_conn.as_str() && e["client"]["name"] == "on-b"
    })
    .await;
    assert!(
        entries.iter().any(|e| e["nodeId"] == "a"),
        "a's own connection: {entries:?}"
    );
    // The snapshot of gateway.hello is the same list.
    let hello = on_a.call("gateway.hello", json!({})).await;
    let snapshot = hello["result"]["snapshot"]["presence"].to_string();
    assert!(snapshot.contains("on-b"), "{snapshot}");

    // c's tokens differ: a and b warn about c, once, never about each other; never a token.
    for (gw, other) in [(&a, "b"), (&b, "a")] {
        assert!(
            gw.wait_warnings("cluster node c has a different auth mode or tokens", 1)
                .await,
            "{}",
            gw.log()
        );
        assert_eq!(
            gw.warnings("cluster node c has a different auth mode or tokens"),
            1
        );
        assert_eq!(
            gw.warnings(&format!("cluster node {other} has a different")),
            0
        );
        assert!(!gw.log().contains("c-only-token"));
    }
    assert!(c.wait_warnings("cluster node a has a different", 1).await);

    // b shuts down gracefully: its connection's `left` is its own (once, not again from the
    // leader), and its entry goes at once.
    let mut watcher = RawWs::connect(a.addr).await;
    watcher.subscribe(json!({"events": ["presence"]})).await;
    let mut b = b;
    b.terminate();
    cluster_of(&mut on_a, 2).await;
    let (_marker, marker_conn) = named_client(&a, "marker").await;
    let mut lefts = 0;
    let t0 = Instant::now();
    loop {
        let e = watcher.next_event().await;
        let p = &e["payload"];
        if p["state"] == "left" && p["nodeId"] == "b" && p["connId"] == b_conn.as_str() {
            lefts += 1;
        }
        if p["state"] == "joined" && p["nodeId"] == "a" && p["connId"] == marker_conn.as_str() {
            break;
        }
        guard(t0, "the marker's join");
    }
    assert_eq!(lefts, 1, "b's connection left once");
    assert_eq!(
        a.warnings("cluster node b is gone"),
        0,
        "b left, it did not die"
    );
}

#[tokio::test]
async fn a_node_killed_has_its_connections_left_once_by_the_leader() {
    let nats = NatsServer::start();
    // a starts first and takes the leader lease.
    let a = node(&nats.url(), "a", "");
    wait_info(&a, LEADER, 1).await;
    let mut b = node(&nats.url(), "b", "");
    let c = node(&nats.url(), "c", "");

    let mut watcher = RawWs::connect(a.addr).await;
    watcher.subscribe(json!({"events": ["presence"]})).await;
    let (_victim, victim_conn) = named_client(&b, "victim").await;
    presence_until(&mut watcher, |e| {
        e["nodeId"] == "b" && e["connId"] == victim_conn.as_str()
    })
    .await;

    b.kill9();
    let is_victim_left = |e: &Value| {
        e["event"] == "presence"
            && e["payload"]["state"] == "left"
            && e["payload"]["nodeId"] == "b"
            && e["payload"]["connId"] == victim_conn.as_str()
    };
    let t0 = Instant::now();
    let left = loop {
        let e = watcher.next_event().await;
        if is_victim_left(&e) {
            break e;
        }
        guard(t0, "presence left of the killed node's connection");
    };
    assert_eq!(left["payload"]["client"]["name"], "victim", "{left}");

    // c saw b go too (so it had its chance to announce it, which it must not take), then a
    // connection joins on c: up to that join, b's connection left exactly once.
    let mut on_c = RawWs::connect(c.addr).await;
    cluster_of(&mut on_c, 2).await;
    let (_late, late_conn) = named_client(&c, "late").await;
    let mut lefts = 1;
    let t0 = Instant::now();
    loop {
        let e = watcher.next_event().await;
        if is_victim_left(&e) {
            lefts += 1;
        }
        if e["payload"]["nodeId"] == "c"
            && e["payload"]["connId"] == late_conn.as_str()
            && e["payload"]["state"] == "joined"
        {
            break;
        }
        guard(t0, "the join on c");
    }
    assert_eq!(
        lefts, 1,
        "one presence left per connection of the dead node"
    );
    assert_eq!(c.log_lines("INFO", LEADER), 0, "c never led");
}

#[tokio::test]
async fn one_leader_fires_the_cron_jobs_and_another_takes_over_when_it_dies() {
    let nats = NatsServer::start();
    let cron = "[cron.tick]\nevery_ms = 1000\nmessage = \"x\"\n";
    let mut a = node(&nats.url(), "a", cron);
    wait_info(&a, LEADER, 1).await;
    let b = node(&nats.url(), "b", cron);
    let c = node(&nats.url(), "c", cron);

    // Every firing goes through the shared stream: a client of b sees a's.
    let mut events = RawWs::connect(b.addr).await;
    events.subscribe(json!({"events": ["cron.changed"]})).await;
    let mut scheduled: Vec<u64> = Vec::new();
    async fn next_started(ws: &mut RawWs) -> u64 {
        loop {
            let p = ws.next_payload_of("cron.changed").await;
            if p["name"] == "tick" && p["state"] == "started" {
                return p["scheduledAt"].as_u64().expect("scheduledAt");
            }
        }
    }
    for _ in 0..2 {
        scheduled.push(next_started(&mut events).await);
    }
    wait_info(&a, FIRED, 2).await;
    for other in [&b, &c] {
        assert_eq!(other.log_lines("INFO", FIRED), 0, "{}", other.log());
        assert_eq!(other.log_lines("INFO", LEADER), 0);
    }

    a.kill9();
    // One of b and c takes the lead after the lease and fires from then on.
    let t0 = Instant::now();
    let (leader, follower) = loop {
        match (b.log_lines("INFO", LEADER), c.log_lines("INFO", LEADER)) {
            (0, 0) => {}
            (1, 0) => break (&b, &c),
            (0, 1) => break (&c, &b),
            both => panic!("two leaders: {both:?}"),
        }
        guard(t0, "a new leader");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    wait_info(leader, FIRED, 2).await;
    // Its firings reach the shared stream too.
    let t0 = Instant::now();
    while scheduled.len() < 5 {
        scheduled.push(next_started(&mut events).await);
        guard(t0, "firings after the takeover");
    }
    assert_eq!(follower.log_lines("INFO", FIRED), 0, "{}", follower.log());
    assert_eq!(follower.log_lines("INFO", LEADER), 0);
    let mut distinct = scheduled.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        scheduled.len(),
        "each time once: {scheduled:?}"
    );
}

/// The JSON body and status of `GET /readyz`.
async fn readyz(gw: &Gateway) -> (u16, Value) {
    let resp = crate::common::http(gw.addr, "GET", "/readyz", &[], "").await;
    (resp.status, resp.json())
}

#[tokio::test]
async fn without_nats_the_calls_that_need_it_are_refused_and_the_local_ones_answer() {
    let mut nats = NatsServer::start();
    let a = node(&nats.url(), "a", "");
    wait_info(&a, LEADER, 1).await;
    let mut ws = RawWs::connect(a.addr).await;
    let sent = ws
        .call(
            "chat.send",
            json!({"message": "before", "sessionKey": "main"}),
        )
        .await;
    assert!(sent["result"]["runId"].is_string(), "{sent}");
    assert_eq!(readyz(&a).await.0, 200);

    nats.kill9();
    let t0 = Instant::now();
    let body = loop {
        let (status, body) = readyz(&a).await;
        if status == 503 {
            break body;
        }
        guard(t0, "/readyz 503 without NATS");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(body["failing"], json!(["cluster"]), "{body}");
    assert_eq!(body["checks"]["cluster"], false);

    let refused = ws
        .call(
            "chat.send",
            json!({"message": "during", "sessionKey": "main"}),
        )
        .await;
    assert_eq!(refused["error"]["code"], -32025, "{refused}");
    assert_eq!(refused["error"]["data"]["kind"], "unavailable");
    assert_eq!(refused["error"]["data"]["retryable"], true);
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("NATS"), "{message}");
    let listed = ws.call("sessions.list", json!({})).await;
    assert_eq!(listed["error"]["code"], -32025, "{listed}");
    // The local calls answer.
    let health = ws.call("gateway.health", json!({})).await;
    assert_eq!(health["result"]["ok"], true, "{health}");
    let status = ws.call("gateway.status", json!({})).await;
    assert_eq!(status["result"]["cluster"]["nodeId"], "a", "{status}");
    for method in ["gateway.presence", "config.get", "rpc.discover"] {
        let resp = ws.call(method, json!({})).await;
        assert!(resp["result"].is_object(), "{method}: {resp}");
    }
    // Unrenewed for a whole lease, the leader lease is given up.
    wait_warnings(&a, LOST_LEAD).await;

    nats.restart();
    let t0 = Instant::now();
    while readyz(&a).await.0 != 200 {
        guard(t0, "/readyz 200 with NATS back");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The lead is taken again, and a run streams through the event stream as before.
    wait_info(&a, LEADER, 2).await;
    let payloads = ws
        .stream_run(json!({"message": "after", "sessionKey": "main"}))
        .await;
    let last = payloads.last().expect("a terminal payload");
    assert_eq!(last["state"], "final", "{payloads:?}");
}

async fn wait_warnings(gw: &Gateway, needle: &str) {
    assert!(
        gw.wait_warnings(needle, 1).await,
        "{needle:?}: {}",
        gw.log()
    );
}

#[test]
fn every_local_method_is_a_core_method() {
    let table = clawgate::api::core_table().expect("the core table");
    for name in clawgate::gateway::nodes::LOCAL_METHODS {
        assert!(
            table.methods().contains_key(*name),
            "{name} is not a core method"
        );
    }
}
