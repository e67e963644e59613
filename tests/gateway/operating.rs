//! Operating the gateway: `GET /metrics` after a known workload, its label set under made-up
//! method names, `logs.tail` (replay, live, secrets never in a record) and the login throttle
//! in `gateway.status`. The binary runs as a child process: the metrics recorder is one per
//! process, so counts are exact.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Launcher, RawWs, http};

const ADMIN: &str = "admin-secret-0123";
const READER: &str = "reader-secret-0123";

fn auth_config(extra: &str) -> String {
    format!(
        "[gateway.auth]\nmode = \"token\"\n[[gateway.auth.tokens]]\nname = \"admin\"\ntoken = \"{ADMIN}\"\nscopes = [\"admin\"]\n[[gateway.auth.tokens]]\nname = \"reader\"\ntoken = \"{READER}\"\nscopes = [\"read\"]\n{extra}"
    )
}

/// The samples of a Prometheus text exposition: `name{labels}` (labels as written) → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The value of the series `name` whose labels include every `label="value"` of `labels`.
fn value(samples: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series.split('{').next() == Some(name)
                && labels
                    .iter()
                    .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| *v)
        .sum()
}

async fn metrics(addr: std::net::SocketAddr, token: &str) -> (u16, String) {
    let auth = format!("Bearer {token}");
    let resp = http(addr, "GET", "/metrics", &[("authorization", &auth)], "").await;
    (resp.status, resp.body)
}

async fn call_http(addr: std::net::SocketAddr, token: &str, method: &str) -> Value {
    let auth = format!("Bearer {token}");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method}).to_string();
    http(
        addr,
        "POST",
        "/",
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        &body,
    )
    .await
    .json()
}

#[tokio::test]
async fn metrics_count_a_known_workload() {
    let gw = Launcher::new().config(auth_config("")).start();
    // No token, a wrong one: 401, and counted as failed logins.
    let none = http(gw.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(none.status, 401, "{}", none.body);
    let (wrong, _) = metrics(gw.addr, "not-a-token-at-all").await;
    assert_eq!(wrong, 401);
    // The workload: 5 gateway.health, 3 calls of a method that does not exist, 1 forbidden.
    for _ in 0..5 {
        assert!(call_http(gw.addr, READER, "gateway.health").await["result"].is_object());
    }
    for _ in 0..3 {
        let v = call_http(gw.addr, READER, "no.such.method").await;
        assert_eq!(v["error"]["code"], -32601, "{v}");
    }
    assert_eq!(
        call_http(gw.addr, READER, "config.get").await["error"]["code"],
        -32021
    );
    // One run with a tool call and one with a made-up tool, on the echo provider.
    let mut ws = RawWs::connect_with(gw.addr, &format!("/?token={ADMIN}"), &[])
        .await
        .expect("connect");
    let run = ws
        .stream_run(json!({"message": "/tool list_dir {}", "sessionKey": "m1"}))
        .await;
    assert_eq!(run.last().map(|p| p["state"].clone()), Some(json!("final")));
    let run = ws
        .stream_run(json!({"message": "/tool invented_tool_name {}", "sessionKey": "m2"}))
        .await;
    assert_eq!(run.last().map(|p| p["state"].clone()), Some(json!("final")));

    let (status, text) = metrics(gw.addr, READER).await;
    assert_eq!(status, 200);
    let s = samples(&text);
    let calls = |m: &str, code: &str| {
        value(
            &s,
            "clawgate_rpc_calls_total",
            &[("method", m), ("code", code)],
        )
    };
    assert_eq!(calls("gateway.health", "ok"), 5.0, "{text}");
    assert_eq!(calls("unknown", "-32601"), 3.0, "{text}");
    assert_eq!(calls("config.get", "-32021"), 1.0, "{text}");
    assert_eq!(calls("chat.stream", "ok"), 2.0, "{text}");
    assert!(
        !text.contains("no.such.method") && !text.contains("invented_tool_name"),
        "a name the client made up became a label: {text}"
    );
    assert_eq!(
        value(
            &s,
            "clawgate_rpc_duration_seconds_count",
            &[("method", "gateway.health")]
        ),
        5.0
    );
    assert_eq!(
        value(
            &s,
            "clawgate_runs_total",
            &[("agent", "main"), ("outcome", "final")]
        ),
        2.0
    );
    // Each run: a tool turn and a final turn, both on echo.
    assert_eq!(
        value(
            &s,
            "clawgate_provider_requests_total",
            &[("provider", "echo"), ("status", "ok")]
        ),
        4.0
    );
    assert!(
        value(
            &s,
            "clawgate_tokens_total",
            &[("agent", "main"), ("kind", "output")]
        ) > 0.0
    );
    assert_eq!(
        value(
            &s,
            "clawgate_tool_calls_total",
            &[("tool", "list_dir"), ("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "clawgate_tool_calls_total",
            &[("tool", "unknown"), ("outcome", "refused")]
        ),
        1.0
    );
    assert!(value(&s, "clawgate_events_published_total", &[("event", "chat")]) > 0.0);
    assert!(value(&s, "clawgate_store_fsync_seconds_count", &[]) > 0.0);
    assert_eq!(value(&s, "clawgate_auth_failures_total", &[]), 2.0);
    assert_eq!(value(&s, "clawgate_auth_lockouts", &[]), 0.0);
    assert!(
        value(&s, "clawgate_connections", &[]) >= 2.0,
        "the WebSocket and this GET"
    );
    assert_eq!(value(&s, "clawgate_runs_active", &[]), 0.0);
    assert!(value(&s, "process_resident_memory_bytes", &[]) > 1e6);
    let subscribed = ws.subscribe(json!({})).await;
    assert!(!subscribed.is_empty());
    let (_, text) = metrics(gw.addr, READER).await;
    assert_eq!(value(&samples(&text), "clawgate_subscriptions", &[]), 1.0);
    // gateway.status says the same about failed logins.
    let status = ws.call("gateway.status", json!({})).await;
    assert_eq!(
        status["result"]["auth"],
        json!({"failuresTotal": 2, "lockouts": 0})
    );
}

#[tokio::test]
async fn made_up_method_names_do_not_grow_the_label_set() {
    let gw = Launcher::new().start();
    let series = |body: &str| {
        samples(body)
            .keys()
            .filter(|k| k.starts_with("clawgate_rpc_calls_total{"))
            .count()
    };
    let before = series(&http(gw.addr, "GET", "/metrics", &[], "").await.body);
    let mut ws = RawWs::connect(gw.addr).await;
    for i in 0..1000 {
        let v = ws.call(&format!("made.up.method{i}"), json!({})).await;
        assert_eq!(v["error"]["code"], -32601);
    }
    let resp = http(gw.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(resp.status, 200);
    let s = samples(&resp.body);
    assert_eq!(
        value(
            &s,
            "clawgate_rpc_calls_total",
            &[("method", "unknown"), ("code", "-32601")]
        ),
        1000.0
    );
    assert!(!resp.body.contains("made.up"));
    // Every method of the table has its `ok` series from the start; the 1000 calls added one:
    // `unknown` with -32601.
    assert_eq!(series(&resp.body), before + 1, "{}", resp.body);
}

#[tokio::test]
async fn metrics_can_be_switched_off() {
    let gw = Launcher::new()
        .config("[metrics]\nenabled = false\n")
        .start();
    let resp = http(gw.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(resp.status, 404, "{}", resp.body);
    assert!(resp.body.contains("enabled = false"), "{}", resp.body);
}

/// A plugin that writes secrets to its stderr (which the gateway logs) and then waits.
fn leaky_plugin(name: &str, word: &str) -> String {
    format!(
        "[[plugins]]\nname = \"{name}\"\ncommand = [\"sh\", \"-c\", \"echo \\\"{word}: env $LEAKY_SECRET, url /?token=query-secret-1&x=1, header Bearer bearer-secret-2, admin {ADMIN}\\\" >&2; sleep 60\"]\nenv = {{ LEAKY_SECRET = \"plugin-env-secret-3\" }}\n"
    )
}

const SECRETS: &[&str] = &[
    "plugin-env-secret-3",
    "query-secret-1",
    "bearer-secret-2",
    ADMIN,
];

async fn next_record(ws: &mut RawWs, sub: &str) -> Value {
    loop {
        let msg = ws.recv().await;
        if msg["method"] == "logs.record" && msg["params"]["subscription"] == sub {
            return msg["params"]["result"].clone();
        }
    }
}

#[tokio::test]
async fn logs_tail_replays_then_follows_and_never_shows_a_secret() {
    let gw = Launcher::new()
        .env("RUST_LOG", "info")
        .config(auth_config(&leaky_plugin("leaky", "first")))
        .start();
    let mut ws = RawWs::connect_with(gw.addr, &format!("/?token={ADMIN}"), &[])
        .await
        .expect("connect");
    // The reader token may not tail logs.
    let mut reader = RawWs::connect_with(gw.addr, &format!("/?token={READER}"), &[])
        .await
        .expect("connect");
    assert_eq!(
        reader.call("logs.tail", json!({})).await["error"]["code"],
        -32021
    );
    // Bad params.
    for (params, field) in [
        (json!({"lines": 1001}), "lines"),
        (json!({"level": "loud"}), "level"),
        (json!({"target": ""}), "target"),
    ] {
        let v = ws.call("logs.tail", params.clone()).await;
        assert_eq!(v["error"]["code"], -32602, "{params}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(field),
            "{v}"
        );
    }
    // Once the plugin's line is logged (stderr and ring are fed by the same event), replay it.
    for _ in 0..200 {
        if gw.log().contains("first:") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = ws
        .call(
            "logs.tail",
            json!({"lines": 1000, "target": "clawgate::plugins"}),
        )
        .await;
    let sub = v["result"].as_str().expect("subscribed").to_string();
    let found = loop {
        let r = next_record(&mut ws, &sub).await;
        if r["message"].as_str().unwrap_or("").contains("first:") {
            break Some(r);
        }
    };
    assert_eq!(
        ws.call("logs.untail", json!({"subscription": sub})).await["result"],
        true
    );
    let record = found.expect("the plugin's stderr line in the replay");
    let text = record.to_string();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(text.contains("[redacted]"), "{text}");
    assert_eq!(record["level"], "info");
    assert_eq!(record["fields"]["plugin"], "leaky");
    assert!(
        record["target"]
            .as_str()
            .unwrap_or("")
            .starts_with("clawgate::plugins")
    );
    assert!(record["ts"].as_u64().unwrap_or(0) > 0);

    // Live: nothing replayed (lines 0), then a second plugin's line as it is written.
    let v = ws
        .call(
            "logs.tail",
            json!({"lines": 0, "target": "clawgate::plugins"}),
        )
        .await;
    let sub = v["result"].as_str().expect("subscribed").to_string();
    let got = ws.call("config.get", json!({})).await;
    let base = got["result"]["hash"].clone();
    let patch = ws
        .call(
            "config.patch",
            json!({"baseHash": base, "patch": {"plugins": [
                {"name": "leaky", "command": ["sh", "-c", format!("echo \"first: env $LEAKY_SECRET, url /?token=query-secret-1&x=1, header Bearer bearer-secret-2, admin {ADMIN}\" >&2; sleep 60")], "env": {"LEAKY_SECRET": "plugin-env-secret-3"}},
                {"name": "leaky2", "command": ["sh", "-c", format!("echo \"second: url /?token=query-secret-1 admin {ADMIN}\" >&2; sleep 60")]},
            ]}}),
        )
        .await;
    assert!(patch["result"].is_object(), "{patch}");
    let live = loop {
        let r = next_record(&mut ws, &sub).await;
        if r["message"].as_str().unwrap_or("").contains("second:") {
            break r;
        }
        assert!(
            !r["message"].as_str().unwrap_or("").contains("first:"),
            "lines = 0 replays nothing, and the first plugin kept running: {r}"
        );
    };
    let text = live.to_string();
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    // Nor on stderr.
    let log = gw.log();
    for secret in SECRETS {
        assert!(!log.contains(secret), "{secret} in the gateway's stderr");
    }
}
