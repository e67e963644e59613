//! The event hub over the wire: filters, replay joined to live, gaps, presence, ticks, shutdown.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{RawWs, post, start};

fn publish(gw: &crate::common::TestGateway, event: &str, key: Option<&str>, i: u64) -> u64 {
    gw.running
        .gateway
        .hub()
        .publish(event, key, &json!({"i": i}))
}

#[tokio::test]
async fn envelopes_filters_and_unsubscribe() {
    let gw = start(|_| {}).await;
    let mut all = RawWs::connect(gw.addr()).await;
    let mut some = RawWs::connect(gw.addr()).await;
    let mut keyed = RawWs::connect(gw.addr()).await;
    all.subscribe(json!({"events": ["test.*"]})).await;
    some.subscribe(json!({"events": ["test.b", "other.*"]}))
        .await;
    keyed.subscribe(json!({"sessionKey": "k1"})).await;
    let s1 = publish(&gw, "test.a", Some("k1"), 1);
    let s2 = publish(&gw, "test.b", Some("k2"), 2);
    let s3 = publish(&gw, "other.c", Some("k1"), 3);
    let e = all.next_event().await;
    assert_eq!(e["event"], "test.a");
    assert_eq!(e["seq"], s1);
    assert_eq!(e["sessionKey"], "k1");
    assert_eq!(e["payload"], json!({"i": 1}));
    assert_eq!(e["epoch"].as_str().map(str::len), Some(32));
    assert!(e["ts"].as_u64().is_some());
    assert_eq!(all.next_event().await["seq"], s2);
    assert_eq!(some.next_event().await["seq"], s2);
    assert_eq!(some.next_event().await["seq"], s3);
    assert_eq!(keyed.next_event().await["seq"], s1);
    assert_eq!(keyed.next_event().await["seq"], s3);

    // Unsubscribe in both param forms; an unknown id answers false.
    let mut ws = RawWs::connect(gw.addr()).await;
    let a = ws.subscribe(json!({"events": ["x"]})).await;
    let b = ws.subscribe(json!({"events": ["x"]})).await;
    assert_eq!(
        ws.call("events.unsubscribe", json!([a])).await["result"],
        true
    );
    assert_eq!(
        ws.call("events.unsubscribe", json!({"subscription": b}))
            .await["result"],
        true
    );
    assert_eq!(
        ws.call("events.unsubscribe", json!([a])).await["result"],
        false
    );
    publish(&gw, "x", None, 0);
    assert!(
        ws.try_recv(Duration::from_millis(300)).await.is_none(),
        "no event after unsubscribe"
    );

    // Over HTTP a subscription is -32027.
    let resp = post(
        gw.addr(),
        r#"{"jsonrpc":"2.0","method":"events.subscribe","id":1}"#,
    )
    .await;
    assert_eq!(resp.json()["error"]["code"], -32027);
    assert_eq!(resp.json()["error"]["data"]["kind"], "websocket_required");
}

#[tokio::test]
async fn replay_joins_live_with_no_duplicate_and_no_hole_while_publishing() {
    let gw = start(|c| {
        c.events.replay_capacity = 100_000;
        c.events.subscriber_queue = 100_000;
    })
    .await;
    let hub = gw.running.gateway.hub().clone();
    let total = 3000u64;
    let publisher = tokio::spawn(async move {
        for i in 0..total {
            hub.publish("test.n", None, &json!({"i": i}));
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    // Subscribe mid-stream at several points, resuming from an earlier seq each time.
    let mut checks = Vec::new();
    for round in 0..4u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let latest = gw.running.gateway.hub().seq();
        let after = latest.saturating_sub(100 * (round + 1));
        let mut ws = RawWs::connect(gw.addr()).await;
        let epoch = gw.running.gateway.hub().epoch().to_string();
        ws.subscribe(json!({"afterSeq": after, "epoch": epoch}))
            .await;
        checks.push((after, ws));
    }
    publisher.await.expect("publisher");
    let last = gw.running.gateway.hub().seq();
    for (after, mut ws) in checks {
        let mut expect = after + 1;
        while expect <= last {
            let e = ws.next_event().await;
            if e["event"] == "tick" {
                continue;
            }
            assert_ne!(e["event"], "gap", "no gap expected: {e}");
            assert_eq!(
                e["seq"], expect,
                "hole or duplicate after resuming at {after}"
            );
            expect += 1;
        }
    }
}

#[tokio::test]
async fn expired_and_restart_gaps_over_the_wire() {
    let gw = start(|c| c.events.replay_capacity = 5).await;
    for i in 0..20 {
        publish(&gw, "test.e", None, i);
    }
    let mut ws = RawWs::connect(gw.addr()).await;
    let epoch = gw.running.gateway.hub().epoch().to_string();
    ws.subscribe(json!({"events": ["test.e"], "afterSeq": 3, "epoch": epoch}))
        .await;
    // Connecting published presence and health events too: the ring's oldest entry decides.
    let gap = ws.next_event().await;
    assert_eq!(gap["event"], "gap");
    assert_eq!(gap["payload"]["reason"], "expired");
    assert_eq!(gap["payload"]["fromSeq"], 4);
    let to = gap["payload"]["toSeq"].as_u64().expect("toSeq");
    assert!(to >= 15, "{gap}");
    let first = ws.next_event().await;
    assert_eq!(first["seq"].as_u64(), Some(to + 1));

    let mut ws = RawWs::connect(gw.addr()).await;
    ws.subscribe(json!({"events": ["test.e"], "afterSeq": 3, "epoch": "an-old-epoch"}))
        .await;
    let gap = ws.next_event().await;
    assert_eq!(
        gap["payload"],
        json!({"fromSeq": 0, "toSeq": 0, "reason": "restart"})
    );
    let first_replayed = ws.next_event().await["seq"].as_u64().expect("seq");
    assert!(first_replayed > to, "the buffer follows a restart gap");

    let resp = ws
        .call(
            "events.subscribe",
            json!({"afterSeq": 1_000_000, "epoch": epoch}),
        )
        .await;
    assert_eq!(resp["error"]["code"], -32602);
    assert_eq!(resp["error"]["data"]["path"], "afterSeq");
    // Without its epoch, afterSeq could silently skip a restart: refused.
    let resp = ws.call("events.subscribe", json!({"afterSeq": 3})).await;
    assert_eq!(resp["error"]["code"], -32602);
    assert_eq!(resp["error"]["data"]["path"], "epoch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_gets_lagged_gap_without_slowing_others() {
    let gw = start(|c| c.events.subscriber_queue = 16).await;
    let mut slow = RawWs::connect_small_buffer(gw.addr()).await;
    let mut fast = RawWs::connect(gw.addr()).await;
    slow.subscribe(json!({"events": ["test.*"]})).await;
    fast.subscribe(json!({"events": ["test.*"]})).await;
    let total = 20_000u64;
    let pad = "p".repeat(200);
    let hub = gw.running.gateway.hub().clone();
    // Published in batches of 8, each read by the fast subscriber before the next: it never falls
    // 16 behind however busy the machine is, while the slow one (reading nothing) must lose.
    let mut n = 0u64;
    let mut published = Vec::new();
    while n < total {
        for i in n..(n + 8).min(total) {
            published.push(hub.publish("test.flood", None, &json!({"i": i, "pad": pad})));
        }
        let end = (n + 8).min(total);
        while n < end {
            let e = fast.next_event().await;
            assert_eq!(
                e["payload"]["i"].as_u64(),
                Some(n),
                "fast subscriber saw {e}"
            );
            n += 1;
        }
    }
    // The slow one has not read a byte so far. Its call is answered behind a bounded backlog.
    slow.send(r#"{"jsonrpc":"2.0","method":"gateway.health","id":"h"}"#)
        .await;
    let mut before_response = 0u64;
    let mut received = std::collections::HashSet::new();
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let mut note = |env: &Value| {
        if env["event"] == "gap" {
            assert_eq!(env["payload"]["reason"], "lagged");
            let from = env["payload"]["fromSeq"].as_u64().unwrap_or(0);
            let to = env["payload"]["toSeq"].as_u64().unwrap_or(0);
            assert!(from <= to, "{env}");
            gaps.push((from, to));
        } else if let Some(seq) = env["seq"].as_u64() {
            received.insert(seq);
        }
    };
    loop {
        let msg = slow.recv().await;
        if msg.get("id") == Some(&json!("h")) {
            assert_eq!(msg["result"]["ok"], true);
            break;
        }
        before_response += 1;
        note(&msg["params"]["result"]);
    }
    assert!(
        before_response < total / 4,
        "response waited behind {before_response} notifications"
    );
    // Keep reading up to an event published after the flood: every flooded event was either
    // delivered or announced lost by a lagged gap.
    let after = publish(&gw, "test.after", None, 0);
    loop {
        let env = slow.next_event().await;
        let seq = env["seq"].as_u64();
        note(&env);
        if env["event"] == "test.after" {
            assert_eq!(seq, Some(after));
            break;
        }
    }
    assert!(
        !gaps.is_empty(),
        "the slow subscriber was told about its loss"
    );
    for seq in published {
        assert!(
            received.contains(&seq) || gaps.iter().any(|&(f, t)| (f..=t).contains(&seq)),
            "seq {seq} was lost without a gap"
        );
    }
}

#[tokio::test]
async fn ticks_ignore_filters_and_subscriptions_are_routed_by_id() {
    let gw = start(|c| c.gateway.tick_interval_ms = 100).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    // Two subscriptions on one connection, neither asking for ticks.
    let by_name = ws.subscribe(json!({"events": ["test.*"]})).await;
    let by_key = ws.subscribe(json!({"sessionKey": "k"})).await;
    publish(&gw, "test.a", None, 1);
    publish(&gw, "other", Some("k"), 2);
    let mut ticks = std::collections::HashSet::new();
    let mut got = Vec::new();
    while ticks.len() < 2 || got.len() < 2 {
        let msg = ws.recv().await;
        let sub = msg["params"]["subscription"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let env = &msg["params"]["result"];
        if env["event"] == "tick" {
            ticks.insert(sub);
        } else {
            got.push((sub, env["event"].as_str().unwrap_or("").to_string()));
        }
    }
    assert!(
        ticks.contains(&by_name) && ticks.contains(&by_key),
        "ticks reach filtered subscriptions"
    );
    assert_eq!(
        got,
        vec![
            (by_name.clone(), "test.a".into()),
            (by_key.clone(), "other".into())
        ],
        "each event goes to the subscription whose filter it matches, tagged with its id"
    );
    // An id of another kind of subscription is not chat.unstream's to end.
    assert_eq!(
        ws.call("chat.unstream", json!([by_name])).await["result"],
        false
    );
    assert_eq!(
        ws.call("events.unsubscribe", json!([by_name])).await["result"],
        true
    );
}

#[tokio::test]
async fn presence_health_and_tick_events() {
    let gw = start(|c| c.gateway.tick_interval_ms = 200).await;
    let mut watcher = RawWs::connect(gw.addr()).await;
    watcher
        .subscribe(json!({"events": ["presence", "health", "tick"]}))
        .await;
    let mut other = RawWs::connect(gw.addr()).await;
    let hello = other
        .call(
            "gateway.hello",
            json!({"client": {"name": "tester", "version": "1"}}),
        )
        .await;
    let conn_id = hello["result"]["server"]["connId"]
        .as_str()
        .expect("connId")
        .to_string();
    assert_eq!(hello["result"]["protocol"], 2);
    assert_eq!(
        hello["result"]["features"],
        serde_json::json!([
            "agents",
            "compaction",
            "approvals",
            "steering",
            "resume",
            "usage",
            "logs",
            "hooks",
            "cron",
            "metrics"
        ]),
        "no MCP server, no TLS, no /v1 or /a2a configured: none of them named"
    );
    assert_eq!(
        hello["result"]["snapshot"]["epoch"],
        &*gw.running.gateway.hub().epoch()
    );
    let presence = other.call("gateway.presence", json!({})).await;
    let entries = presence["result"]["entries"]
        .as_array()
        .expect("entries")
        .clone();
    let me = entries
        .iter()
        .find(|e| e["connId"] == conn_id.as_str())
        .expect("listed");
    assert_eq!(me["client"]["name"], "tester");
    assert!(
        me["remoteAddr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:"))
    );
    let (mut joined, mut health, mut tick) = (false, false, false);
    while !(joined && health && tick) {
        let e = watcher.next_event().await;
        match e["event"].as_str() {
            Some("presence") if e["payload"]["connId"] == conn_id.as_str() => {
                assert_eq!(e["payload"]["state"], "joined");
                joined = true;
            }
            Some("health") if e["payload"]["connections"] == 2 => health = true,
            Some("tick") => {
                assert!(e["payload"]["ts"].as_u64().is_some());
                assert_eq!(
                    e["seq"].as_u64(),
                    Some(gw.running.gateway.hub().seq()),
                    "a tick carries the latest seq"
                );
                tick = true;
            }
            _ => {}
        }
    }
    drop(other);
    loop {
        let e = watcher.next_event().await;
        if e["event"] == "presence" && e["payload"]["connId"] == conn_id.as_str() {
            assert_eq!(e["payload"]["state"], "left");
            assert_eq!(e["payload"]["client"]["name"], "tester");
            break;
        }
    }
}

#[tokio::test]
async fn dead_peer_is_dropped_by_ping_keepalive() {
    let gw = start(|c| {
        c.gateway.ping_interval_ms = 100;
        c.gateway.ping_timeout_ms = 400;
    })
    .await;
    let mut watcher = RawWs::connect(gw.addr()).await;
    // The watcher keeps reading (and so answers pings).
    watcher.subscribe(json!({"events": ["presence"]})).await;
    let mut silent = RawWs::connect(gw.addr()).await;
    let hello = silent.call("gateway.hello", json!({})).await;
    let conn_id = hello["result"]["server"]["connId"].clone();
    // `silent` now never reads, so it never answers a ping.
    loop {
        let e = watcher.next_event().await;
        if e["payload"]["connId"] == conn_id && e["payload"]["state"] == "left" {
            break;
        }
    }
    let presence = watcher.call("gateway.presence", json!({})).await;
    let ids: Vec<Value> = presence["result"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["connId"].clone())
        .collect();
    assert!(!ids.contains(&conn_id), "dropped peer still listed");
}

#[tokio::test]
async fn shutdown_reaches_every_subscriber_then_connections_close() {
    let gw = start(|_| {}).await;
    let mut subs = Vec::new();
    for _ in 0..5 {
        let mut ws = RawWs::connect(gw.addr()).await;
        ws.subscribe(json!({"events": ["nothing.*"]})).await;
        subs.push(ws);
    }
    let gateway = gw.running.gateway.clone();
    let stopper = tokio::spawn(async move { gateway.shutdown("test").await });
    for ws in &mut subs {
        let e = ws.next_event().await;
        assert_eq!(e["event"], "shutdown");
        assert_eq!(e["payload"]["reason"], "test");
        // Then the server closes the connection.
        assert!(ws.try_recv(Duration::from_secs(5)).await.is_none());
    }
    stopper.await.expect("shutdown finishes");
    assert!(gw.running.gateway.is_shutting_down());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_shutting_down_readyz_is_503_and_calls_get_32025() {
    let gw = start(|c| c.events.subscriber_queue = 2).await;
    // A subscriber that never reads, flooded: its pipe is stuck, so shutdown waits for it a while.
    let mut stuck = RawWs::connect_small_buffer(gw.addr()).await;
    stuck.subscribe(json!({})).await;
    let mut other = RawWs::connect(gw.addr()).await;
    let pad = "p".repeat(1000);
    for i in 0..3000 {
        gw.running
            .gateway
            .hub()
            .publish("test.flood", None, &json!({"i": i, "pad": pad}));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let gateway = gw.running.gateway.clone();
    let stopper = tokio::spawn(async move { gateway.shutdown("test").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = crate::common::http(gw.addr(), "GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["checks"]["notShuttingDown"], false);
    let resp = other.call("gateway.health", json!({})).await;
    assert_eq!(resp["error"]["code"], -32025, "{resp}");
    assert_eq!(resp["error"]["data"]["kind"], "unavailable");
    stopper.await.expect("shutdown finishes");
}

#[tokio::test]
async fn the_subscription_limit_holds_under_concurrent_subscribes() {
    let gw = start(|c| c.gateway.max_subscriptions_per_connection = 3).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    // Ten subscribes in flight at once on one connection: exactly three succeed.
    for i in 0..10 {
        ws.send(&json!({"jsonrpc": "2.0", "id": i, "method": "events.subscribe", "params": {"events": ["x"]}}).to_string())
            .await;
    }
    let (mut ok, mut busy) = (0, 0);
    while ok + busy < 10 {
        let msg = ws.recv().await;
        if msg.get("id").is_none() {
            continue;
        }
        if msg.get("result").is_some() {
            ok += 1;
        } else {
            assert_eq!(msg["error"]["code"], -32009, "{msg}");
            busy += 1;
        }
    }
    assert_eq!((ok, busy), (3, 7));
}
