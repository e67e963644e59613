//! The holes a break test found in the transport, pinned: revoked tokens, batch and queue
//! memory, WebSocket framing and close codes, trickled bodies, descriptors, ordering, and the
//! failed-login throttle. Each drives the real gateway over real sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clawgate::config::{AuthMode, TokenConfig};
use clawgate::rpc::Scope;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Launcher, RawFrames, RawWs, close_code, http, post, start};

const ADMIN: &str = "admin-token-0001";
const READER: &str = "reader-token-0001";

fn token(name: &str, secret: &str, scope: Scope) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        token: secret.into(),
        scopes: vec![scope],
    }
}

async fn ws_with(addr: SocketAddr, secret: &str) -> RawWs {
    RawWs::connect_with(addr, &format!("/?token={secret}"), &[])
        .await
        .expect("websocket with a token")
}

/// Replaces the token table through `config.patch`.
async fn set_tokens(admin: &mut RawWs, tokens: Value) {
    let got = admin.call("config.get", json!({})).await;
    let hash = got["result"]["hash"].as_str().expect("hash").to_string();
    let patched = admin
        .call(
            "config.patch",
            json!({"patch": {"gateway": {"auth": {"tokens": tokens}}}, "baseHash": hash}),
        )
        .await;
    assert!(patched.get("result").is_some(), "{patched}");
}

#[tokio::test]
async fn a_revoked_token_loses_its_subscriptions_and_its_connection() {
    let gw = start(|c| {
        c.gateway.auth.mode = AuthMode::Token;
        c.gateway.auth.tokens = vec![
            token("admin", ADMIN, Scope::Admin),
            token("reader", READER, Scope::Read),
            token("writer", "writer-token-0001", Scope::Write),
        ];
    })
    .await;
    let mut admin = ws_with(gw.addr(), ADMIN).await;
    let mut reader = ws_with(gw.addr(), READER).await;
    let mut writer = ws_with(gw.addr(), "writer-token-0001").await;
    reader.subscribe(json!({"events": ["chat"]})).await;
    writer.subscribe(json!({"events": ["chat"]})).await;
    let inject = json!({"sessionKey": "main", "role": "assistant", "content": "before"});
    admin.call("chat.inject", inject).await;
    for ws in [&mut reader, &mut writer] {
        let env = ws.next_event().await;
        assert_eq!(env["payload"]["message"]["content"], "before", "{env}");
    }

    // The reader's token is removed; the writer's shrinks to read.
    set_tokens(
        &mut admin,
        json!([
            {"name": "admin", "token": ADMIN, "scopes": ["admin"]},
            {"name": "writer", "token": "writer-token-0001", "scopes": ["read"]},
        ]),
    )
    .await;
    let inject = json!({"sessionKey": "main", "role": "assistant", "content": "after revocation"});
    admin.call("chat.inject", inject).await;
    let (texts, code) = reader.drain_until_close().await;
    assert!(
        texts.iter().all(|t| !t.contains("after revocation")),
        "a revoked token kept receiving events: {texts:?}"
    );
    assert_eq!(code, Some(1008), "closed as a policy violation");
    // A shrunk scope keeps what it may still see: `events.subscribe` needs only `read`.
    let env = writer.next_event().await;
    assert_eq!(env["payload"]["message"]["content"], "after revocation");
    let refused = writer
        .call(
            "chat.inject",
            json!({"sessionKey": "main", "role": "assistant", "content": "x"}),
        )
        .await;
    assert_eq!(refused["error"]["code"], -32021, "{refused}");
}

#[tokio::test]
async fn a_batch_stops_building_answers_at_the_payload_limit() {
    let limit = 256 * 1024;
    let gw = start(|c| c.gateway.max_payload_bytes = limit).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    for _ in 0..8 {
        let content = "h".repeat(30 * 1024);
        let r = ws
            .call(
                "chat.inject",
                json!({"sessionKey": "big", "role": "assistant", "content": content}),
            )
            .await;
        assert!(r.get("result").is_some(), "{r}");
    }
    // Each history answer is ~240 KiB: the first fits, the second cannot; the injects at the
    // end must not run.
    let mut batch = Vec::new();
    for i in 0..40 {
        batch.push(json!({"jsonrpc": "2.0", "id": i, "method": "chat.history", "params": {"sessionKey": "big", "limit": 8}}));
    }
    for i in 40..44 {
        batch.push(json!({"jsonrpc": "2.0", "id": i, "method": "chat.inject", "params": {"sessionKey": "big", "role": "assistant", "content": "must not run"}}));
    }
    ws.send(&Value::Array(batch).to_string()).await;
    let text = ws.recv_text().await;
    assert!(text.len() <= limit, "answer of {} bytes", text.len());
    let answers: Vec<Value> = serde_json::from_str(&text).expect("batch answer");
    assert_eq!(answers.len(), 44);
    assert!(answers[0].get("result").is_some(), "{}", answers[0]);
    let refused = answers
        .iter()
        .filter(|a| a["error"]["code"] == -32008)
        .count();
    assert!(refused >= 43, "{refused} refused");
    for a in &answers[40..] {
        assert_eq!(a["error"]["code"], -32008, "{a}");
    }
    let history = ws
        .call("chat.history", json!({"sessionKey": "big", "limit": 20}))
        .await;
    let stored = history["result"]["messages"].as_array().expect("messages");
    assert_eq!(stored.len(), 8, "the injects after the limit did not run");
}

// The gateway binary (`Launcher`) serves the figures that must not include this test process
// (its memory) and the limits that must not touch it (its descriptors).

#[tokio::test]
async fn a_connection_that_stops_reading_holds_bounded_memory_and_is_closed() {
    let gw = Launcher::new()
        .config(
            "[gateway]\nmax_queued_bytes = 1048576\nping_interval_ms = 200\nping_timeout_ms = 1500\n",
        )
        .start();
    let mut ws = RawWs::connect(gw.addr).await;
    for _ in 0..6 {
        let content = "m".repeat(512 * 1024);
        let r = ws
            .call(
                "chat.inject",
                json!({"sessionKey": "fat", "role": "assistant", "content": content}),
            )
            .await;
        assert!(r.get("result").is_some(), "{r}");
    }
    let before = gw.rss_kib();
    // 300 answers of ~3 MiB each, never read: 900 MiB if they were all queued.
    let mut lazy = RawWs::connect_small_buffer(gw.addr).await;
    let req = json!({"jsonrpc": "2.0", "id": 1, "method": "chat.history", "params": {"sessionKey": "fat", "limit": 6}}).to_string();
    for _ in 0..300 {
        lazy.send(&req).await;
    }
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        peak = peak.max(gw.rss_kib().saturating_sub(before));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        peak < 200 * 1024,
        "a non-reading connection grew the gateway by {} MiB",
        peak / 1024
    );
    let (answers, _) = lazy.drain_until_close().await;
    assert!(
        answers.len() < 300,
        "the connection that stopped reading was closed ({} answers had left)",
        answers.len()
    );
    // Everyone else is still served.
    let mut fresh = RawWs::connect(gw.addr).await;
    let ok = fresh.call("gateway.health", json!({})).await;
    assert_eq!(ok["result"]["ok"], true);
}

#[tokio::test]
async fn a_fragmented_message_over_the_limit_gets_32007_and_close_1009() {
    let gw = start(|c| c.gateway.max_payload_bytes = 4096).await;
    let mut ws = RawFrames::connect(gw.addr()).await;
    ws.frame(
        false,
        0x1,
        true,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{\"p\":\"",
    )
    .await;
    for _ in 0..100 {
        ws.frame(false, 0x0, true, &[b'a'; 100]).await;
    }
    ws.frame(true, 0x0, true, b"\"}}").await;
    let frames = ws.frames_until_close().await;
    let text: Vec<Value> = frames
        .iter()
        .filter(|(op, _)| *op == 0x1)
        .filter_map(|(_, p)| serde_json::from_slice(p).ok())
        .collect();
    assert!(
        text.iter().any(|v| v["error"]["code"] == -32007),
        "{text:?}"
    );
    assert_eq!(close_code(&frames), Some(1009), "{frames:?}");
}

#[tokio::test]
async fn framing_violations_close_with_their_codes() {
    let gw = start(|_| {}).await;
    // Invalid UTF-8 in a text frame: 1007.
    let mut ws = RawFrames::connect(gw.addr()).await;
    ws.frame(true, 0x1, true, &[b'{', 0xff, 0xfe, b'}']).await;
    assert_eq!(close_code(&ws.frames_until_close().await), Some(1007));
    // An unmasked client frame: 1002.
    let mut ws = RawFrames::connect(gw.addr()).await;
    ws.frame(true, 0x1, false, b"{}").await;
    assert_eq!(close_code(&ws.frames_until_close().await), Some(1002));
    // A continuation with nothing to continue: 1002.
    let mut ws = RawFrames::connect(gw.addr()).await;
    ws.frame(true, 0x0, true, b"{}").await;
    assert_eq!(close_code(&ws.frames_until_close().await), Some(1002));
    // A ping is answered with its pong, and a well-formed call still works.
    let mut ws = RawFrames::connect(gw.addr()).await;
    ws.frame(true, 0x9, true, b"hey").await;
    ws.frame(
        true,
        0x1,
        true,
        br#"{"jsonrpc":"2.0","id":7,"method":"gateway.health"}"#,
    )
    .await;
    ws.frame(true, 0x8, true, &1000u16.to_be_bytes()).await;
    let frames = ws.frames_until_close().await;
    assert!(
        frames.iter().any(|(op, p)| *op == 0xA && p == b"hey"),
        "{frames:?}"
    );
    assert!(
        frames
            .iter()
            .any(|(op, p)| *op == 0x1 && String::from_utf8_lossy(p).contains("\"id\":7")),
        "{frames:?}"
    );
}

#[tokio::test]
async fn health_routes_are_answered_when_connections_are_full_and_head_works() {
    let gw = start(|c| c.gateway.max_connections = 2).await;
    let _a = RawWs::connect(gw.addr()).await;
    let _b = RawWs::connect(gw.addr()).await;
    let rpc = post(
        gw.addr(),
        r#"{"jsonrpc":"2.0","id":1,"method":"gateway.health"}"#,
    )
    .await;
    assert_eq!(rpc.status, 429);
    let live = http(gw.addr(), "GET", "/healthz", &[], "").await;
    assert_eq!(live.status, 200, "{live:?}");
    let ready = http(gw.addr(), "GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 200, "{ready:?}");
    let head = http(gw.addr(), "HEAD", "/healthz", &[], "").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn a_trickled_body_times_out() {
    let gw = start(|c| c.gateway.body_timeout_ms = 500).await;
    let mut stream = TcpStream::connect(gw.addr()).await.expect("connect");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        gw.addr()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let (mut read, mut write) = stream.into_split();
    // One byte every 100 ms: the body would take 10 s.
    tokio::spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let mut answer = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut answer)).await;
    assert!(got.is_ok(), "the trickled body held its connection");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn pipelined_calls_of_one_connection_take_effect_in_order() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let big = "b".repeat(900 * 1024);
    for i in 0..10 {
        let key = format!("order-{i}");
        let first = json!({"jsonrpc": "2.0", "id": format!("a{i}"), "method": "chat.inject", "params": {"sessionKey": key, "role": "assistant", "content": big}});
        let second = json!({"jsonrpc": "2.0", "id": format!("b{i}"), "method": "chat.inject", "params": {"sessionKey": key, "role": "assistant", "content": "small"}});
        ws.send(&first.to_string()).await;
        ws.send(&second.to_string()).await;
    }
    let mut answered = 0;
    while answered < 20 {
        let msg = ws.recv().await;
        if msg.get("id").is_some() {
            assert!(msg.get("result").is_some(), "{msg}");
            answered += 1;
        }
    }
    for i in 0..10 {
        let h = ws
            .call("chat.history", json!({"sessionKey": format!("order-{i}")}))
            .await;
        let messages = h["result"]["messages"].as_array().expect("messages");
        let contents: Vec<usize> = messages
            .iter()
            .map(|m| m["content"].as_str().map_or(0, str::len))
            .collect();
        assert_eq!(contents, vec![big.len(), 5], "session order-{i}");
    }
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address() {
    let gw = start(|c| {
        c.gateway.auth.mode = AuthMode::Token;
        c.gateway.auth.tokens = vec![token("admin", ADMIN, Scope::Admin)];
        c.gateway.auth.max_failures = 3;
        c.gateway.auth.lockout_ms = 60_000;
        c.gateway.auth.throttle_loopback = true;
    })
    .await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"gateway.health"}"#;
    let bearer = format!("Bearer {ADMIN}");
    let good = [("authorization", bearer.as_str())];
    // A connection opened before the lockout.
    let mut open = ws_with(gw.addr(), ADMIN).await;
    for i in 0..4 {
        let r = http(
            gw.addr(),
            "POST",
            "/",
            &[("authorization", "Bearer wrong-wrong-wrong")],
            body,
        )
        .await;
        assert_eq!(r.status, 401, "failure {i}");
    }
    // Locked out: even the right token gets 429 with Retry-After.
    let r = http(gw.addr(), "POST", "/", &good, body).await;
    assert_eq!(r.status, 429, "{r:?}");
    let retry: u64 = r
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.json()["error"]["kind"], "rate_limited");
    let inside = open.call("gateway.health", json!({})).await;
    assert_eq!(inside["error"]["code"], -32024, "{inside}");
    assert!(inside["error"]["data"]["retryAfterMs"].as_u64().is_some());
}

#[test]
fn descriptors_are_raised_and_idle_connections_cannot_exhaust_them() {
    let gw = Launcher::new().config("").nofile(420).start();
    let addr = gw.addr;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut ws = RawWs::connect_with(addr, "/", &[]).await.expect("connects");
        // Far more idle connections than descriptors: none of them sends a byte.
        let mut idle = Vec::new();
        for _ in 0..600 {
            if let Ok(s) = TcpStream::connect(addr).await {
                idle.push(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // The gateway is full, not broken: the store still opens files (a new session, a
        // reset) for the connection it already serves.
        let r = ws
            .call(
                "chat.inject",
                json!({"sessionKey": "fd", "role": "assistant", "content": "ok"}),
            )
            .await;
        assert!(r.get("result").is_some(), "{r}");
        let r = ws.call("sessions.reset", json!({"key": "main"})).await;
        assert!(r.get("result").is_some(), "{r}");
        drop(idle);
        // Once they are gone, new connections are served again.
        let mut served = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let r = post(
                addr,
                r#"{"jsonrpc":"2.0","id":1,"method":"gateway.health"}"#,
            )
            .await;
            if r.status == 200 {
                served = true;
                break;
            }
        }
        assert!(served, "the gateway served again after the flood");
    });
}

#[tokio::test]
async fn slow_subscribers_under_a_flood_of_large_events_hold_bounded_memory() {
    let gw = Launcher::new()
        .config("[events]\nreplay_max_bytes = 8388608\n")
        .start();
    let mut slow = RawWs::connect_small_buffer(gw.addr).await;
    for _ in 0..4 {
        slow.subscribe(json!({"events": ["chat"]})).await;
    }
    let before = gw.rss_kib();
    let mut writer = RawWs::connect(gw.addr).await;
    let content = "f".repeat(1024 * 1024);
    let mut peak = 0;
    for i in 0..40 {
        let r = writer
            .call(
                "chat.inject",
                json!({"sessionKey": "flood", "role": "assistant", "content": content}),
            )
            .await;
        assert!(r.get("result").is_some(), "{r}");
        if i % 10 == 0 {
            peak = peak.max(gw.rss_kib().saturating_sub(before));
        }
    }
    peak = peak.max(gw.rss_kib().saturating_sub(before));
    // The replay ring (8 MiB here) is shared; each subscriber and the connection add a few
    // MiB at most. Unbounded queues held a copy of every event per subscription (160 MiB).
    assert!(
        peak < 100 * 1024,
        "slow subscribers grew the gateway by {} MiB",
        peak / 1024
    );
    // The slow subscriber, reading again, is told what it lost.
    let mut saw_gap = false;
    for _ in 0..200 {
        let Some(msg) = slow.try_recv(Duration::from_secs(2)).await else {
            break;
        };
        if msg["params"]["result"]["event"] == "gap" {
            saw_gap = true;
            break;
        }
    }
    assert!(saw_gap, "the loss was announced");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_throttled() {
    // The peer is loopback (exempt), but it is a trusted proxy: the failures count against the
    // address it forwards, and only that address is locked out.
    let gw = start(|c| {
        c.gateway.auth.mode = AuthMode::Token;
        c.gateway.auth.tokens = vec![token("admin", ADMIN, Scope::Admin)];
        c.gateway.auth.max_failures = 2;
        c.gateway.trusted_proxies = vec!["127.0.0.1".parse().expect("ip")];
    })
    .await;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"gateway.health"}"#;
    let bearer = format!("Bearer {ADMIN}");
    for _ in 0..3 {
        let r = http(
            gw.addr(),
            "POST",
            "/",
            &[
                ("authorization", "Bearer wrong-wrong-wrong"),
                ("x-forwarded-for", "203.0.113.7"),
            ],
            body,
        )
        .await;
        assert_eq!(r.status, 401);
    }
    let locked = http(
        gw.addr(),
        "POST",
        "/",
        &[
            ("authorization", &bearer),
            ("x-forwarded-for", "203.0.113.7"),
        ],
        body,
    )
    .await;
    assert_eq!(locked.status, 429, "{locked:?}");
    // Another client behind the same proxy, and the proxy itself, are served.
    let other = http(
        gw.addr(),
        "POST",
        "/",
        &[
            ("authorization", &bearer),
            ("x-forwarded-for", "203.0.113.8"),
        ],
        body,
    )
    .await;
    assert_eq!(other.status, 200, "{other:?}");
    let direct = http(gw.addr(), "POST", "/", &[("authorization", &bearer)], body).await;
    assert_eq!(direct.status, 200);
}
