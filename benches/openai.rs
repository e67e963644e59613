//! OpenAI door benchmark, against the release binary over loopback: the per-chunk latency that
//! `POST /v1/chat/completions` streaming adds over the gateway's own event stream, on the SAME
//! run. A WebSocket client subscribes to the `chat` events of session `bench`; the completion is
//! sent through `/v1` with `x-clawgate-session-key: bench`, so both see every delta of one run.
//! Each delta's arrival is timestamped on both (before parsing); the figure is, per delta,
//! arrival on `/v1` − arrival on the WebSocket. The provider is a loopback fake (Anthropic wire)
//! streaming `--parts` distinct text deltas 2 ms apart, with `delta_interval_ms = 0`.
//!
//! Run: `cargo bench --bench openai -- [--runs N] [--parts N]` (default 40 runs of 50 deltas).
//! Prints a Markdown table on stdout and one JSON object per figure on stderr.

#[allow(dead_code)] // the parts of the shared bench code the other benches use
mod common;
#[path = "../tests/gateway/fake_provider.rs"]
mod fake_provider;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use common::ws::RawWs;
use common::{gateway, percentile};
use fake_provider::{FakeProvider, Script, anthropic};

/// How long any one wait may take before the benchmark gives up (against hangs).
const PATIENCE: Duration = Duration::from_secs(30);

/// Runs done (and thrown away) before the measured ones.
const WARM_UP: usize = 3;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One row of the table and its JSON line (values in ms).
fn report(figure: &str, mut values: Vec<f64>, target: Option<&str>) {
    values.sort_by(|a, b| a.total_cmp(b));
    let (p50, p90, p99) = (
        percentile(&values, 0.5),
        percentile(&values, 0.9),
        percentile(&values, 0.99),
    );
    println!(
        "| {figure} | {} | {p50:.3} | {p90:.3} | {p99:.3} | {} |",
        values.len(),
        target.unwrap_or("")
    );
    eprintln!(
        "{}",
        json!({"bench": "openai", "figure": figure, "n": values.len(), "unit": "ms",
               "p50": p50, "p90": p90, "p99": p99, "target": target})
    );
}

/// The deltas of the session's next run as the WebSocket subscriber gets them: text → arrival.
async fn ws_deltas(ws: &mut RawWs) -> HashMap<String, Instant> {
    let mut out = HashMap::new();
    loop {
        let bytes = tokio::time::timeout(PATIENCE, ws.recv_bytes())
            .await
            .expect("an event within the patience");
        let at = Instant::now();
        let msg: Value = serde_json::from_slice(&bytes).expect("json");
        let payload = &msg["params"]["result"]["payload"];
        match payload["state"].as_str() {
            Some("delta") => {
                if let Some(text) = payload["text"].as_str() {
                    out.insert(text.to_string(), at);
                }
            }
            Some("final" | "aborted" | "error") => return out,
            _ => {}
        }
    }
}

/// A streamed completion in session `bench`: each content chunk's text → arrival.
async fn v1_deltas(addr: SocketAddr, body: String) -> HashMap<String, Instant> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("x-clawgate-session-key", "bench")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = tokio::time::timeout(PATIENCE, sender.send_request(req))
        .await
        .expect("an answer within the patience")
        .expect("answer");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut buf = String::new();
    let mut out = HashMap::new();
    loop {
        let Some(frame) = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("a chunk within the patience")
        else {
            return out;
        };
        let at = Instant::now();
        let Ok(data) = frame.expect("frame").into_data() else {
            continue;
        };
        buf.push_str(std::str::from_utf8(&data).expect("utf8"));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let data = event.trim_end().trim_start_matches("data: ");
            if data == "[DONE]" {
                return out;
            }
            let chunk: Value = serde_json::from_str(data).expect("chunk json");
            if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str()
                && !text.is_empty()
            {
                out.insert(text.to_string(), at);
            }
        }
    }
}

fn main() {
    let runs = arg("--runs", 40);
    let parts = arg("--parts", 50);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let root = tempfile::tempdir().expect("tempdir");
    println!("\n## OpenAI door (`cargo bench --bench openai`)\n");
    println!("| figure | n | p50 ms | p90 ms | p99 ms | target |");
    println!("|---|---:|---:|---:|---:|---|");
    runtime.block_on(async {
        let fake = FakeProvider::start(Vec::new()).await;
        let config = format!(
            "[http.openai]\nenabled = true\n[agents.main]\nprovider = \"anthropic\"\nmodel = \"claude-test\"\nbase_url = \"http://{}\"\napi_key_env = \"CLAWGATE_BENCH_KEY\"\ndelta_interval_ms = 0\n",
            fake.addr
        );
        let mut gw = gateway(root.path())
            .config(config)
            .env("CLAWGATE_BENCH_KEY", "bench")
            .start();
        let mut ws = RawWs::connect(gw.addr).await;
        ws.subscribe(json!({"sessionKey": "bench", "events": ["chat"]}))
            .await;
        let texts: Vec<String> = (0..parts).map(|i| format!("part{i:04} ")).collect();
        let pieces: Vec<&str> = texts.iter().map(String::as_str).collect();
        let body = json!({"model": "clawgate/main", "stream": true,
            "messages": [{"role": "user", "content": "go"}]})
        .to_string();
        let mut added = Vec::new();
        let mut matched = 0usize;
        let mut coalesced = 0usize;
        for run in 0..WARM_UP + runs {
            fake.push(Script::sse(anthropic::reply(&pieces)).paced(2));
            let (on_ws, on_v1) = tokio::join!(ws_deltas(&mut ws), v1_deltas(gw.addr, body.clone()));
            for (text, v1_at) in &on_v1 {
                match on_ws.get(text) {
                    Some(ws_at) => {
                        matched += 1;
                        if run >= WARM_UP {
                            let d = if v1_at >= ws_at {
                                v1_at.duration_since(*ws_at).as_secs_f64() * 1e3
                            } else {
                                -(ws_at.duration_since(*v1_at).as_secs_f64() * 1e3)
                            };
                            added.push(d);
                        }
                    }
                    None => coalesced += 1,
                }
            }
        }
        report(
            "/v1 stream chunk arrival − WebSocket event arrival, same delta",
            added,
            Some("p50 < 0.2 ms"),
        );
        eprintln!(
            "{}",
            json!({"bench": "openai", "matched": matched, "unmatched": coalesced})
        );
        gw.terminate();
    });
}
