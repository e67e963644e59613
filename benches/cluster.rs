//! Cluster benchmark, against the release binary over loopback and a real nats-server
//! (tests/nats, pinned): what cluster mode adds to event delivery, and to trivial calls.
//!
//! (a) Event delivery latency. A loopback fake provider (Anthropic wire) streams `--parts` text
//! deltas 2 ms apart, each carrying the wall-clock time (µs) at which it was written; the
//! agent has `delta_interval_ms = 0`. A WebSocket subscriber timestamps each `chat` delta as it
//! arrives (before parsing), and the figure per delta is arrival − written: provider → gateway
//! → (stream) → subscriber. It is measured on a single gateway (no `[cluster]`), and on a
//! cluster of two nodes A and B sharing one nats-server, the runs on A, with a subscriber on A
//! and one on B, with the event stream on file and in memory. "Added by the cluster" is, per
//! quantile, node B's figure minus the single gateway's (target: p50 under 1 ms).
//!
//! (b) Trivial calls (`gateway.health`, `gateway.hello`) over one WebSocket, one at a time and
//! with a window of `--window` in flight, on a cluster node and on a single gateway,
//! alternating, `--rounds` rounds of `--seconds` each (median).
//!
//! Run: `cargo bench --bench cluster -- [--runs N] [--parts N] [--seconds S] [--rounds N]
//! [--window N]` (default 20 runs of 50 deltas, 3 rounds of 2 s, window 32). Prints Markdown
//! tables on stdout and one JSON object per figure on stderr.

#[allow(dead_code)] // the parts of the shared bench code the other benches use
mod common;
#[path = "../tests/gateway/fake_provider.rs"]
mod fake_provider;
#[path = "../tests/gateway/common/nats.rs"]
mod nats;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use common::launcher::{Gateway, Launcher};
use common::ws::RawWs;
use common::{median, percentile};
use fake_provider::anthropic;

/// How long any one wait may take before the benchmark gives up (against hangs).
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs done (and thrown away) before the measured ones.
const WARM_UP: usize = 2;

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Wall-clock microseconds: the provider and the subscribers are this one process.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A fake Anthropic provider whose every text delta is `@<µs at write> `, `parts` of them
/// 2 ms apart.
async fn stamping_provider(parts: usize) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(answer(req, parts).await)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn answer(
    req: http::Request<hyper::body::Incoming>,
    parts: usize,
) -> http::Response<BoxBody<Bytes, Infallible>> {
    let _ = req.into_body().collect().await;
    let (tx, rx) = futures::channel::mpsc::unbounded::<Result<Frame<Bytes>, Infallible>>();
    tokio::spawn(async move {
        let send = |text: String| {
            tx.unbounded_send(Ok(Frame::data(Bytes::from(text))))
                .is_ok()
        };
        if ![anthropic::start(), anthropic::text_block(0)]
            .into_iter()
            .all(&send)
        {
            return;
        }
        for _ in 0..parts {
            tokio::time::sleep(Duration::from_millis(2)).await;
            if !send(anthropic::text(0, &format!("@{} ", now_us()))) {
                return;
            }
        }
        let mut end = vec![anthropic::stop_block(0)];
        end.extend(anthropic::end("end_turn", parts as u64));
        for piece in end {
            send(piece);
        }
    });
    let mut resp = http::Response::new(BodyExt::boxed(StreamBody::new(rx.map(|x| x))));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    resp
}

/// The agent of every gateway here: the stamping provider, deltas as they come.
fn agent(provider: SocketAddr) -> String {
    format!(
        "[agents.main]\nprovider = \"anthropic\"\nmodel = \"claude-test\"\nbase_url = \"http://{provider}\"\napi_key_env = \"CLAWGATE_BENCH_KEY\"\ndelta_interval_ms = 0\n\
         [events]\nsubscriber_queue = 100000\n"
    )
}

fn launcher(config: String) -> Launcher {
    Launcher::new()
        .env("RUST_LOG", "error")
        .env("CLAWGATE_BENCH_KEY", "bench")
        .config(config)
}

fn cluster_node(nats: &str, id: &str, storage: &str, provider: SocketAddr) -> Gateway {
    launcher(format!(
        "[cluster]\nnats_url = \"{nats}\"\nnode_id = \"{id}\"\nevents_storage = \"{storage}\"\n{}",
        agent(provider)
    ))
    .start()
}

/// A subscriber reading in its own task (stopped when this is dropped): the latencies (ms) of
/// each run's deltas, sent on when the run's terminal payload arrives.
struct Subscriber {
    runs: tokio::sync::mpsc::UnboundedReceiver<Vec<f64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A subscriber of session `bench`'s chat events on `addr`.
async fn subscriber(addr: SocketAddr) -> Subscriber {
    let mut ws = RawWs::connect(addr).await;
    ws.subscribe(json!({"events": ["chat"], "sessionKey": "bench"}))
        .await;
    let (tx, runs) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut run = Vec::new();
        loop {
            let Ok(bytes) = tokio::time::timeout(PATIENCE, ws.recv_bytes()).await else {
                return;
            };
            let at = now_us();
            let Ok(msg) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let payload = &msg["params"]["result"]["payload"];
            match payload["state"].as_str() {
                Some("delta") => {
                    let text = payload["text"].as_str().unwrap_or("");
                    for stamp in text.split_whitespace() {
                        if let Some(us) =
                            stamp.strip_prefix('@').and_then(|s| s.parse::<u64>().ok())
                        {
                            run.push(at.saturating_sub(us) as f64 / 1000.0);
                        }
                    }
                }
                Some("final" | "aborted" | "error")
                    if tx.send(std::mem::take(&mut run)).is_err() =>
                {
                    return;
                }
                _ => {}
            }
        }
    });
    Subscriber { runs, task }
}

/// Starts `runs` runs one after another on `on` and collects, for each subscriber, the
/// latencies of the measured runs (after the warm-up).
async fn measure(on: SocketAddr, subscribers: &mut [Subscriber], runs: usize) -> Vec<Vec<f64>> {
    let mut ws = RawWs::connect(on).await;
    let mut out = vec![Vec::new(); subscribers.len()];
    for run in 0..WARM_UP + runs {
        let resp = ws
            .call("chat.send", json!({"sessionKey": "bench", "message": "go"}))
            .await;
        assert!(resp["result"]["runId"].is_string(), "{resp}");
        for (i, sub) in subscribers.iter_mut().enumerate() {
            let got = tokio::time::timeout(PATIENCE, sub.runs.recv())
                .await
                .expect("the run ends within the patience")
                .expect("the subscriber goes on");
            if run >= WARM_UP {
                out[i].extend(got);
            }
        }
    }
    out
}

fn quantiles(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    (
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        percentile(&v, 0.99),
    )
}

fn latency_row(figure: &str, values: &[f64]) -> (f64, f64, f64) {
    let (p50, p90, p99) = quantiles(values);
    println!(
        "| {figure} | {} | {p50:.3} | {p90:.3} | {p99:.3} | |",
        values.len()
    );
    eprintln!(
        "{}",
        json!({"bench": "cluster", "figure": figure, "n": values.len(), "unit": "ms",
               "p50": p50, "p90": p90, "p99": p99})
    );
    (p50, p90, p99)
}

fn added_row(figure: &str, cluster: (f64, f64, f64), single: (f64, f64, f64)) {
    let (a, b, c) = (
        cluster.0 - single.0,
        cluster.1 - single.1,
        cluster.2 - single.2,
    );
    println!("| **{figure}** | | **{a:.3}** | {b:.3} | {c:.3} | p50 < 1 ms |");
    eprintln!(
        "{}",
        json!({"bench": "cluster", "figure": figure, "unit": "ms", "p50": a, "p90": b,
               "p99": c, "target": "p50 < 1 ms"})
    );
}

/// One WebSocket, `window` calls of `method` in flight, for `secs`: calls per second.
async fn call_rate(addr: SocketAddr, method: &str, window: usize, secs: f64) -> f64 {
    let mut ws = RawWs::connect(addr).await;
    let req = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{}}}}"#);
    // Warm up.
    for _ in 0..200 {
        ws.send(&req).await;
        let _ = ws.recv_bytes().await;
    }
    let t0 = Instant::now();
    let deadline = Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    let mut done = 0u64;
    while t0.elapsed() < deadline {
        while sent - done < window as u64 {
            ws.queue(&req).await;
            sent += 1;
        }
        ws.flush().await;
        let _ = tokio::time::timeout(PATIENCE, ws.recv_bytes())
            .await
            .expect("an answer within the patience");
        done += 1;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    while done < sent {
        let _ = ws.recv_bytes().await;
        done += 1;
    }
    done as f64 / elapsed
}

fn main() {
    let runs = arg("--runs", 20.0) as usize;
    let parts = arg("--parts", 50.0) as usize;
    let secs = arg("--seconds", 2.0);
    let rounds = arg("--rounds", 3.0) as usize;
    let window = arg("--window", 32.0) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let provider = stamping_provider(parts).await;
        let nats = nats::NatsServer::start();

        println!("\n## Cluster: event delivery (`cargo bench --bench cluster`)\n");
        println!(
            "{runs} runs of {parts} deltas 2 ms apart; latency = subscriber arrival − provider write, ms.\n"
        );
        println!("| figure | n | p50 ms | p90 ms | p99 ms | target |");
        println!("|---|---:|---:|---:|---:|---|");
        let mut single = launcher(agent(provider)).start();
        let mut subs = vec![subscriber(single.addr).await];
        let alone = measure(single.addr, &mut subs, runs).await;
        let base = latency_row("single gateway", &alone[0]);
        drop(subs);
        single.terminate();

        for storage in ["file", "memory"] {
            let mut a = cluster_node(&nats.url(), &format!("a-{storage}"), storage, provider);
            let mut b = cluster_node(&nats.url(), &format!("b-{storage}"), storage, provider);
            let mut subs = vec![subscriber(a.addr).await, subscriber(b.addr).await];
            let got = measure(a.addr, &mut subs, runs).await;
            latency_row(
                &format!("cluster ({storage} stream), subscriber on the run's node"),
                &got[0],
            );
            let on_b = latency_row(
                &format!("cluster ({storage} stream), subscriber on another node"),
                &got[1],
            );
            added_row(
                &format!("added by the cluster ({storage} stream), another node − single"),
                on_b,
                base,
            );
            drop(subs);
            a.terminate();
            b.terminate();
            // The next storage starts on a fresh stream.
            if let Ok(client) = async_nats::connect(nats.url()).await {
                let _ = async_nats::jetstream::new(client)
                    .delete_stream("CLAWGATE_EVENTS")
                    .await;
            }
        }

        println!(
            "\n## Cluster: trivial calls over one WebSocket (median of {rounds} alternating rounds of {secs} s)\n"
        );
        println!("| call | in flight | single gateway calls/s | cluster node calls/s | cluster / single |");
        println!("|---|---:|---:|---:|---:|");
        let mut single = launcher(agent(provider)).start();
        let mut node = cluster_node(&nats.url(), "calls", "file", provider);
        for method in ["gateway.health", "gateway.hello"] {
            for inflight in [1, window] {
                let (mut s, mut c) = (Vec::new(), Vec::new());
                for _ in 0..rounds {
                    s.push(call_rate(single.addr, method, inflight, secs).await);
                    c.push(call_rate(node.addr, method, inflight, secs).await);
                }
                let (s, c) = (median(s), median(c));
                println!(
                    "| {method} | {inflight} | {s:.0} | {c:.0} | {:.2} |",
                    c / s
                );
                eprintln!(
                    "{}",
                    json!({"bench": "cluster", "figure": "calls", "method": method,
                           "inflight": inflight, "single": s, "cluster": c, "ratio": c / s})
                );
            }
        }
        single.terminate();
        node.terminate();
    });
}
