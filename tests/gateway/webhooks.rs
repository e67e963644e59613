//! Webhooks out and in, and `chat.<state>` filters, over real sockets: a loopback receiver
//! that checks every signature, a dead receiver, `/hooks/agent` and named hooks.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clawgate::config::{AuthMode, Config, HookConfig, TokenConfig, WebhookConfig};
use clawgate::protocol::{Scope, SendMode};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpListener;

use crate::common::{RawWs, TestGateway, http, start};

/// How long a test waits for what it expects before it fails (a hang guard, not a timing).
const PATIENCE: Duration = Duration::from_secs(60);

fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Seen {
    delivery: String,
    attempt: String,
    envelope: Value,
    answered: u16,
}

/// A loopback webhook receiver: checks every signature, answers 500 to the first
/// `fail_first` requests, then 200.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    bad_signatures: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start(secret: &'static str, fail_first: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let bad: Arc<Mutex<Vec<String>>> = Arc::default();
        let (seen2, bad2) = (seen.clone(), bad.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, bad) = (seen2.clone(), bad2.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (seen, bad) = (seen.clone(), bad.clone());
                            async move {
                                let header = |n: &str| {
                                    req.headers()
                                        .get(n)
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("")
                                        .to_string()
                                };
                                let (ts, sig, delivery, attempt) = (
                                    header("x-clawgate-timestamp"),
                                    header("x-clawgate-signature"),
                                    header("x-clawgate-delivery"),
                                    header("x-clawgate-attempt"),
                                );
                                let body = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let expected = format!(
                                    "sha256={}",
                                    hmac_hex(secret, &[ts.as_bytes(), b".", &body])
                                );
                                let signed =
                                    !ts.is_empty() && ts.parse::<u64>().is_ok() && sig == expected;
                                let status = {
                                    let mut seen = seen.lock().expect("lock");
                                    let status = if !signed {
                                        bad.lock()
                                            .expect("lock")
                                            .push(format!("{delivery}: {sig} vs {expected}"));
                                        400
                                    } else if seen.len() < fail_first {
                                        500
                                    } else {
                                        200
                                    };
                                    seen.push(Seen {
                                        delivery,
                                        attempt,
                                        envelope: serde_json::from_slice(&body)
                                            .unwrap_or(Value::Null),
                                        answered: status,
                                    });
                                    status
                                };
                                let mut resp =
                                    http::Response::new(Full::new(Bytes::from_static(b"ok")));
                                *resp.status_mut() =
                                    http::StatusCode::from_u16(status).expect("status");
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            bad_signatures: bad,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/in", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The envelopes accepted (answered 200), one per delivery id, in the order received.
    fn accepted(&self) -> Vec<Seen> {
        let mut out: Vec<Seen> = Vec::new();
        for s in self.seen() {
            if s.answered == 200 && !out.iter().any(|o| o.delivery == s.delivery) {
                out.push(s);
            }
        }
        out
    }

    /// Waits until `done` holds for what was accepted.
    async fn wait_for(&self, what: &str, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let accepted = self.accepted();
            if done(&accepted) {
                return accepted;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within {PATIENCE:?}; saw {:?}",
                self.seen()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn webhook(url: &str, events: &[&str], secret: &str) -> WebhookConfig {
    WebhookConfig {
        url: url.to_string(),
        events: events.iter().map(|e| e.to_string()).collect(),
        secret: secret.to_string(),
        max_attempts: 8,
        backoff_ms: 5,
        timeout_ms: 5_000,
    }
}

/// The value of the series `name` whose labels include every one of `labels` (0 if none).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn metrics_text(gw: &TestGateway) -> String {
    let resp = http(gw.addr(), "GET", "/metrics", &[], "").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body
}

#[tokio::test]
async fn deliveries_are_signed_in_order_once_each_and_retried_until_accepted() {
    let rx = Receiver::start("out-secret-1", 3).await;
    let url = rx.url();
    let gw = start(|c| {
        c.webhooks
            .insert("ordered".into(), webhook(&url, &["test.*"], "out-secret-1"));
    })
    .await;
    let hub = gw.running.gateway.hub().clone();
    let mut seqs = Vec::new();
    for i in 0..20 {
        seqs.push(hub.publish("test.item", None, &json!({"i": i})));
        // Not matched: never delivered.
        hub.publish("other.item", None, &json!({"i": i}));
    }
    let accepted = rx.wait_for("20 deliveries", |a| a.len() >= 20).await;
    assert!(
        rx.bad_signatures.lock().expect("lock").is_empty(),
        "every signature checks out"
    );
    // Every event once, in order, with the hub's own seq and payload.
    let got: Vec<u64> = accepted
        .iter()
        .map(|s| s.envelope["seq"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(got, seqs);
    for (i, s) in accepted.iter().enumerate() {
        assert_eq!(s.envelope["event"], "test.item");
        assert_eq!(s.envelope["payload"]["i"], i);
        assert_eq!(s.envelope["epoch"], &*hub.epoch());
    }
    // The first delivery failed three times: the same id each time, attempts 1..4, and no
    // other delivery was sent before it was accepted (one at a time).
    let all = rx.seen();
    assert_eq!(all.len(), 23, "20 deliveries plus 3 retries: {all:?}");
    let first = &all[0].delivery;
    assert!(all[..4].iter().all(|s| &s.delivery == first));
    assert_eq!(
        all[..4]
            .iter()
            .map(|s| s.attempt.as_str())
            .collect::<Vec<_>>(),
        ["1", "2", "3", "4"]
    );
    let mut order: Vec<&str> = all.iter().map(|s| s.delivery.as_str()).collect();
    order.dedup();
    assert_eq!(order.len(), 20, "each delivery's attempts are consecutive");
    let text = metrics_text(&gw).await;
    let delivered = metric(
        &text,
        "clawgate_webhook_deliveries_total",
        &[("webhook", "ordered"), ("outcome", "delivered")],
    );
    assert_eq!(delivered, 20.0, "{text}");
    assert_eq!(
        metric(
            &text,
            "clawgate_webhook_attempts_total",
            &[("webhook", "ordered"), ("outcome", "error")]
        ),
        3.0
    );
    gw.running.shutdown("test").await;
}

#[tokio::test]
async fn a_dead_receiver_bounds_the_queue_at_1000_and_counts_what_it_drops() {
    // A port that was open and is closed now: every attempt is refused.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", closed.local_addr().expect("addr"));
    drop(closed);
    let gw = start(|c| {
        // The hub subscription keeps up; the webhook's own queue is what overflows.
        c.events.subscriber_queue = 5_000;
        let mut stuck = webhook(&url, &["load.*"], "dead-secret");
        stuck.max_attempts = 2;
        stuck.backoff_ms = 3_600_000;
        c.webhooks.insert("stuck".into(), stuck);
        let mut quick = webhook(&url, &["gone.*"], "dead-secret");
        quick.max_attempts = 2;
        quick.backoff_ms = 1;
        c.webhooks.insert("gives-up".into(), quick);
    })
    .await;
    let hub = gw.running.gateway.hub().clone();
    for i in 0..1_100 {
        hub.publish("load.item", None, &json!({"i": i}));
    }
    for i in 0..3 {
        hub.publish("gone.item", None, &json!({"i": i}));
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let text = loop {
        let text = metrics_text(&gw).await;
        let dropped = metric(
            &text,
            "clawgate_webhook_dropped_total",
            &[("webhook", "stuck"), ("reason", "queue_full")],
        );
        let queued = metric(&text, "clawgate_webhook_queue", &[("webhook", "stuck")]);
        let failed = metric(
            &text,
            "clawgate_webhook_deliveries_total",
            &[("webhook", "gives-up"), ("outcome", "failed")],
        );
        // One envelope is with the sender (waiting to retry); the rest are queued or dropped.
        if dropped + queued >= 1_099.0 && failed >= 3.0 {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {PATIENCE:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let dropped = metric(
        &text,
        "clawgate_webhook_dropped_total",
        &[("webhook", "stuck"), ("reason", "queue_full")],
    );
    let queued = metric(&text, "clawgate_webhook_queue", &[("webhook", "stuck")]);
    assert!(
        (999.0..=1_000.0).contains(&queued),
        "queue {queued}\n{text}"
    );
    assert!(dropped >= 99.0, "dropped {dropped}\n{text}");
    assert_eq!(
        dropped + queued,
        1_099.0,
        "one is in flight, none lost uncounted"
    );
    assert_eq!(
        metric(
            &text,
            "clawgate_webhook_dropped_total",
            &[("webhook", "stuck"), ("reason", "gap")]
        ),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            "clawgate_webhook_deliveries_total",
            &[("webhook", "gives-up"), ("outcome", "failed")]
        ),
        3.0,
        "each delivery given up after max_attempts"
    );
    assert_eq!(
        metric(
            &text,
            "clawgate_webhook_attempts_total",
            &[("webhook", "gives-up"), ("outcome", "error")]
        ),
        6.0
    );
    gw.running.shutdown("test").await;
}

#[tokio::test]
async fn chat_deltas_go_out_only_when_named_and_chat_states_select() {
    let plain = Receiver::start("s-plain", 0).await;
    let named = Receiver::start("s-named", 0).await;
    let finals = Receiver::start("s-final", 0).await;
    let (u1, u2, u3) = (plain.url(), named.url(), finals.url());
    let gw = start(|c| {
        c.webhooks
            .insert("plain".into(), webhook(&u1, &["chat"], "s-plain"));
        c.webhooks.insert(
            "named".into(),
            webhook(&u2, &["chat.delta", "chat.final"], "s-named"),
        );
        c.webhooks
            .insert("finals".into(), webhook(&u3, &["chat.final"], "s-final"));
    })
    .await;
    let resp = http(
        gw.addr(),
        "POST",
        "/hooks/agent?wait=true",
        &[("content-type", "application/json")],
        &json!({"message": "a reply long enough to come in several deltas", "sessionKey": "d"})
            .to_string(),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let is_final = |a: &[Seen]| a.iter().any(|s| s.envelope["payload"]["state"] == "final");
    let states = |a: &[Seen]| -> Vec<String> {
        a.iter()
            .map(|s| {
                s.envelope["payload"]["state"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    let p = states(&plain.wait_for("plain final", is_final).await);
    let n = states(&named.wait_for("named final", is_final).await);
    let f = states(&finals.wait_for("finals final", is_final).await);
    assert!(!p.iter().any(|s| s == "delta"), "{p:?}");
    assert!(p.iter().any(|s| s == "started"), "{p:?}");
    assert!(n.iter().any(|s| s == "delta"), "{n:?}");
    assert!(n.iter().all(|s| s == "delta" || s == "final"), "{n:?}");
    assert_eq!(f, ["final"]);
    for rx in [&plain, &named, &finals] {
        assert!(rx.bad_signatures.lock().expect("lock").is_empty());
    }
    gw.running.shutdown("test").await;
}

#[tokio::test]
async fn a_webhook_added_by_config_patch_starts_delivering_at_once() {
    let rx = Receiver::start("live-secret", 0).await;
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let hash = ws.call("config.get", json!({})).await["result"]["hash"].clone();
    let patch = json!({"webhooks": {"live": {"url": rx.url(), "events": ["live.*"], "secret": "live-secret", "backoff_ms": 5}}});
    let resp = ws
        .call("config.patch", json!({"patch": patch, "baseHash": hash}))
        .await;
    assert!(resp.get("result").is_some(), "{resp}");
    // config.get never shows the secret.
    let got = ws.call("config.get", json!({})).await;
    assert_eq!(
        got["result"]["config"]["webhooks"]["live"]["secret"], "<redacted>",
        "{got}"
    );
    // The worker starts from the change event: publish until one arrives.
    let hub = gw.running.gateway.hub().clone();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while rx.accepted().is_empty() {
        hub.publish("live.ping", None, &json!({}));
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery after the patch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.running.shutdown("test").await;
}

#[tokio::test]
async fn events_subscribe_with_chat_final_gets_only_final_payloads() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    ws.subscribe(json!({"events": ["chat.final"]})).await;
    let mut other = RawWs::connect(gw.addr()).await;
    for text in ["one", "two"] {
        let r = other
            .call("chat.send", json!({"sessionKey": "f", "message": text}))
            .await;
        assert!(r.get("result").is_some(), "{r}");
    }
    for want in ["Echo: one", "Echo: two"] {
        let e = ws.next_event().await;
        assert_eq!(e["event"], "chat", "{e}");
        assert_eq!(e["payload"]["state"], "final", "{e}");
        assert_eq!(e["payload"]["message"]["content"], want, "{e}");
    }
    let bad = ws
        .call("events.subscribe", json!({"events": ["chat.*x"]}))
        .await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    gw.running.shutdown("test").await;
}

const WRITER: &str = "writer-token-123456";
const READER: &str = "reader-token-123456";
const GH_SECRET: &str = "gh-hook-secret";

async fn hooks_gateway() -> TestGateway {
    start(|c: &mut Config| {
        c.gateway.auth.mode = AuthMode::Token;
        c.gateway.auth.tokens = vec![
            TokenConfig {
                name: "writer".into(),
                token: WRITER.into(),
                scopes: vec![Scope::Write],
            },
            TokenConfig {
                name: "reader".into(),
                token: READER.into(),
                scopes: vec![Scope::Read],
            },
        ];
        // Tool calls wait for a person: a run started with `/tool` keeps its session busy.
        if let Some(main) = c.agents.get_mut("main") {
            main.tools.ask = vec!["*".into()];
        }
        c.hooks.insert(
            "github".into(),
            HookConfig {
                secret: GH_SECRET.into(),
                message: "Issue {{body.issue.title}} by {{body.sender.login}}{{body.missing.path}}"
                    .into(),
                session_key: Some("gh".into()),
                agent: None,
                mode: SendMode::Queue,
            },
        );
        c.hooks.insert(
            "busy".into(),
            HookConfig {
                secret: GH_SECRET.into(),
                message: "{{body.text}}".into(),
                session_key: Some("busy".into()),
                agent: None,
                mode: SendMode::Reject,
            },
        );
    })
    .await
}

async fn post_agent(
    gw: &TestGateway,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> crate::common::HttpResp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    http(gw.addr(), "POST", path, &headers, body).await
}

async fn post_signed(
    gw: &TestGateway,
    path: &str,
    header: &str,
    signature: &str,
    body: &str,
) -> crate::common::HttpResp {
    http(
        gw.addr(),
        "POST",
        path,
        &[("content-type", "application/json"), (header, signature)],
        body,
    )
    .await
}

#[tokio::test]
async fn hooks_agent_needs_a_write_token_and_answers_202_or_the_text_with_wait() {
    let gw = hooks_gateway().await;
    let body = json!({"message": "hello"}).to_string();
    let none = post_agent(&gw, "/hooks/agent", None, &body).await;
    assert_eq!(none.status, 401, "{}", none.body);
    assert_eq!(none.json()["error"]["kind"], "unauthorized");
    let read = post_agent(&gw, "/hooks/agent", Some(READER), &body).await;
    assert_eq!(read.status, 403, "{}", read.body);
    assert_eq!(read.json()["error"]["kind"], "forbidden");
    let accepted = post_agent(&gw, "/hooks/agent", Some(WRITER), &body).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let v = accepted.json();
    assert!(v["runId"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
    assert_eq!(v["sessionKey"], "hook:agent");
    let waited = post_agent(
        &gw,
        "/hooks/agent?wait=true",
        Some(WRITER),
        &json!({"message": "ping", "sessionKey": "w", "idempotencyKey": "k-1"}).to_string(),
    )
    .await;
    assert_eq!(waited.status, 200, "{}", waited.body);
    let v = waited.json();
    assert_eq!(v["outcome"], "final", "{v}");
    assert_eq!(v["text"], "Echo: ping", "{v}");
    assert_eq!(v["sessionKey"], "w");
    // The same idempotency key: the same run, answered from its end.
    let again = post_agent(
        &gw,
        "/hooks/agent?wait=true",
        Some(WRITER),
        &json!({"message": "ping", "sessionKey": "w", "idempotencyKey": "k-1"}).to_string(),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["runId"], v["runId"]);
    for bad in [
        "not json",
        r#"{"nomessage": 1}"#,
        r#"{"message": "  "}"#,
        r#"{"message": "x", "sessionKey": "a/b"}"#,
    ] {
        let r = post_agent(&gw, "/hooks/agent", Some(WRITER), bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.json()["error"]["kind"], "bad_request");
    }
    // Busy with mode reject: 409 naming the active run.
    let busy = post_agent(
        &gw,
        "/hooks/agent",
        Some(WRITER),
        &json!({"message": "/tool list_dir {}", "sessionKey": "busy"}).to_string(),
    )
    .await;
    assert_eq!(busy.status, 202, "{}", busy.body);
    let active = busy.json()["runId"].clone();
    let refused = post_agent(
        &gw,
        "/hooks/agent",
        Some(WRITER),
        &json!({"message": "no", "sessionKey": "busy", "mode": "reject"}).to_string(),
    )
    .await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.json()["error"]["kind"], "busy");
    assert_eq!(refused.json()["error"]["activeRunId"], active);
    // A named hook with mode = "reject" on the same session.
    let body = json!({"text": "also no"}).to_string();
    let sig = format!("sha256={}", hmac_hex(GH_SECRET, &[body.as_bytes()]));
    let named = post_signed(&gw, "/hooks/busy", "x-clawgate-signature", &sig, &body).await;
    assert_eq!(named.status, 409, "{}", named.body);
    gw.running.shutdown("test").await;
}

#[tokio::test]
async fn named_hooks_verify_the_signature_and_template_the_message() {
    let gw = hooks_gateway().await;
    let body = json!({"issue": {"title": "Crash"}, "sender": {"login": "octo"}}).to_string();
    let sig = format!("sha256={}", hmac_hex(GH_SECRET, &[body.as_bytes()]));
    for header in ["x-clawgate-signature", "X-Hub-Signature-256"] {
        let r = post_signed(&gw, "/hooks/github?wait=true", header, &sig, &body).await;
        assert_eq!(r.status, 200, "{header}: {}", r.body);
        let v = r.json();
        assert_eq!(v["text"], "Echo: Issue Crash by octo", "{v}");
        assert_eq!(v["sessionKey"], "gh");
    }
    // Without wait: 202.
    let r = post_signed(&gw, "/hooks/github", "x-clawgate-signature", &sig, &body).await;
    assert_eq!(r.status, 202, "{}", r.body);
    // A delivery id is the idempotency key: a retry of the same delivery is the same run.
    let with_id = |id: &'static str| {
        let (gw, body, sig) = (&gw, body.clone(), sig.clone());
        async move {
            http(
                gw.addr(),
                "POST",
                "/hooks/github",
                &[("x-hub-signature-256", &sig), ("x-github-delivery", id)],
                &body,
            )
            .await
            .json()["runId"]
                .clone()
        }
    };
    assert_eq!(with_id("d-1").await, with_id("d-1").await);
    // Wrong secret, tampered body, no signature: 401.
    let wrong = format!("sha256={}", hmac_hex("other", &[body.as_bytes()]));
    let r = post_signed(&gw, "/hooks/github", "x-clawgate-signature", &wrong, &body).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"]["kind"], "unauthorized");
    let r = post_signed(
        &gw,
        "/hooks/github",
        "x-clawgate-signature",
        &sig,
        &format!("{body} "),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = http(gw.addr(), "POST", "/hooks/github", &[], &body).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // A token is not a signature.
    let r = post_agent(&gw, "/hooks/github", Some(WRITER), &body).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // Unknown hook: 404.
    let r = post_signed(&gw, "/hooks/nope", "x-clawgate-signature", &sig, &body).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"]["kind"], "not_found");
    // A signed body that is not JSON: 400.
    let junk = "not json";
    let junk_sig = format!("sha256={}", hmac_hex(GH_SECRET, &[junk.as_bytes()]));
    let r = post_signed(
        &gw,
        "/hooks/github",
        "x-clawgate-signature",
        &junk_sig,
        junk,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["kind"], "bad_request");
    // The secret never shows in config.get.
    let get = http(
        gw.addr(),
        "POST",
        "/",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {WRITER}")),
        ],
        r#"{"jsonrpc":"2.0","id":1,"method":"config.get"}"#,
    )
    .await;
    assert!(!get.body.contains(GH_SECRET), "{}", get.body);
    gw.running.shutdown("test").await;
}

#[tokio::test]
async fn bad_signatures_count_as_failed_logins_and_lock_the_address_out_with_429() {
    let gw = start(|c: &mut Config| {
        c.gateway.auth.throttle_loopback = true;
        c.gateway.auth.max_failures = 2;
        c.hooks.insert(
            "github".into(),
            HookConfig {
                secret: GH_SECRET.into(),
                message: "{{body}}".into(),
                session_key: None,
                agent: None,
                mode: SendMode::Queue,
            },
        );
    })
    .await;
    let body = r#"{"x":1}"#;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = post_signed(
            &gw,
            "/hooks/github",
            "x-clawgate-signature",
            "sha256=00",
            body,
        )
        .await;
        statuses.push(r.status);
    }
    assert_eq!(&statuses[..2], [401, 401], "{statuses:?}");
    assert_eq!(statuses[3], 429, "{statuses:?}");
    // Locked out whatever it sends: a good signature too.
    let sig = format!("sha256={}", hmac_hex(GH_SECRET, &[body.as_bytes()]));
    let r = post_signed(&gw, "/hooks/github", "x-clawgate-signature", &sig, body).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.headers.get("retry-after").is_some());
    gw.running.shutdown("test").await;
}
