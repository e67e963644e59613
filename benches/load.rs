//! Load generator: trivial-call throughput and broadcast fan-out against the gateway and, in the
//! same run, a bare jsonrpsee server (the baseline); idle memory; streaming runs.
//! Client and servers are separate processes on loopback. Run:
//!   cargo bench --bench load -- [calls|fanout|memory|streaming|all] [--seconds N] [--rounds N]
//!     [--subs 100,1000,10000] [--events N] [--interval-ms N] [--runs 10,100,1000] [--chunks N]
//! Prints a table, and one JSON object per figure on stderr.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use serde_json::{Value, json};

mod common;
use common::launcher::{Gateway, Launcher};
use common::ws::RawWs;
use common::{gateway, median, percentile};

/// A server under load: the gateway or the bare baseline, both children of this process.
type Server = Gateway;

/// CPU time (user + system) of a process so far, in ms.
fn cpu_ms(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks * 10.0 // USER_HZ is 100 on Linux
}

/// The server's CPU time so far, in ms.
fn server_cpu_ms(server: &Server) -> f64 {
    cpu_ms(&server.pid().to_string())
}

/// Starts the gateway binary on `data` with extra environment.
fn gateway_with(data: &std::path::Path, env: &[(&str, String)]) -> Server {
    gateway(data).envs(env).start()
}

fn bare() -> Server {
    bare_with(None)
}

/// The bare jsonrpsee server (this benchmark binary again, with `--bare-server`); with
/// `provider`, its `chat.stream` relays that provider's stream.
fn bare_with(provider: Option<SocketAddr>) -> Server {
    let exe = std::env::current_exe().expect("exe");
    let mut launcher = Launcher::new().program(exe).arg("--bare-server");
    if let Some(addr) = provider {
        launcher = launcher.arg("--provider").arg(format!("http://{addr}/v1"));
    }
    launcher.start()
}

/// The bare server's state: the fan-out channel and a `seq`; the provider `chat.stream` relays.
struct Bare {
    events: tokio::sync::broadcast::Sender<Arc<Box<RawValue>>>,
    seq: AtomicU64,
    provider: Option<String>,
    http: reqwest::Client,
}

/// The least a JSON-RPC server can do to stream a model's reply: relay each OpenAI chunk's text
/// as a notification the moment it arrives (no store, no hub, no coalescing, no run state).
async fn bare_relay(bare: Arc<Bare>, sink: jsonrpsee::SubscriptionSink) {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    let Some(url) = bare.provider.clone() else {
        return;
    };
    let body =
        json!({"model": "bench", "stream": true, "messages": [{"role": "user", "content": "go"}]});
    let Ok(resp) = bare
        .http
        .post(format!("{url}/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
    else {
        return;
    };
    let notify = |payload: Value| {
        RawValue::from_string(json!({"payload": payload}).to_string())
            .map(jsonrpsee::SubscriptionMessage::from)
    };
    let mut events = resp.bytes_stream().eventsource();
    while let Some(Ok(event)) = events.next().await {
        if event.data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&event.data).unwrap_or_default();
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str()
            && let Ok(msg) = notify(json!({"state": "delta", "text": text}))
            && sink.send(msg).await.is_err()
        {
            return;
        }
    }
    if let Ok(msg) = notify(json!({"state": "final"})) {
        let _ = sink.send(msg).await;
    }
}

/// The baseline: a bare jsonrpsee server, as lean as jsonrpsee makes it: `health` for trivial
/// calls, and `chat.inject` + `events.subscribe` for fan-out. It listens on loopback at `port`
/// and says so the way the gateway does, so that one launcher starts both.
fn run_bare_server(port: u16, provider: Option<String>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let config = jsonrpsee::server::ServerConfig::builder().max_connections(30_000).build();
        let server = jsonrpsee::server::Server::builder()
            .set_config(config)
            .build(("127.0.0.1", port))
            .await
            .expect("bind");
        let addr = server.local_addr().expect("addr");
        let (events, _) = tokio::sync::broadcast::channel::<Arc<Box<RawValue>>>(1024);
        let mut module = jsonrpsee::RpcModule::new(Bare {
            events,
            seq: AtomicU64::new(0),
            provider,
            http: reqwest::Client::new(),
        });
        module
            .register_subscription(
                "chat.stream",
                "chat.event",
                "chat.unstream",
                |_, pending, bare, _| async move {
                    if let Ok(sink) = pending.accept().await {
                        bare_relay(bare, sink).await;
                    }
                },
            )
            .expect("register");
        module
            .register_method("health", |_, _, _| json!({"ok": true, "version": "0", "uptimeMs": 1, "connections": 1, "sessions": 1, "activeRuns": 0}))
            .expect("register");
        // Fan-out the way jsonrpsee's examples do it: a broadcast channel, one task per
        // subscription forwarding into its sink. No store: the envelope is built and sent.
        module
            .register_method("chat.inject", |params, bare, _| {
                let p: Value = params.parse().unwrap_or_default();
                let seq = bare.seq.fetch_add(1, Ordering::Relaxed) + 1;
                let ts = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
                let env = json!({"epoch": "bare", "event": "chat", "ts": ts, "sessionKey": p["sessionKey"], "payload": {"sessionKey": p["sessionKey"], "state": "injected", "message": {"id": format!("m{seq}"), "role": p["role"], "content": p["content"], "ts": ts}}, "seq": seq});
                if let Ok(raw) = RawValue::from_string(env.to_string()) {
                    let _ = bare.events.send(Arc::new(raw));
                }
                json!({"messageId": format!("m{seq}")})
            })
            .expect("register");
        module
            .register_subscription(
                "events.subscribe",
                "events.event",
                "events.unsubscribe",
                |_, pending, bare, _| async move {
                    let mut rx = bare.events.subscribe();
                    let Ok(sink) = pending.accept().await else { return };
                    loop {
                        let env = tokio::select! {
                            _ = sink.closed() => return,
                            env = rx.recv() => env,
                        };
                        match env {
                            Ok(env) => {
                                let msg = jsonrpsee::SubscriptionMessage::from((*env).clone());
                                if sink.send(msg).await.is_err() {
                                    return;
                                }
                            }
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => return,
                        }
                    }
                },
            )
            .expect("register");
        let handle = server.start(module);
        println!("listening on ws://{addr}/");
        handle.stopped().await;
    });
}

#[derive(Debug, Clone, Copy)]
struct CallStats {
    rate: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

/// N connections × M requests in flight for `secs`; latencies in µs.
async fn calls(
    addr: SocketAddr,
    method: &str,
    conns: usize,
    inflight: usize,
    secs: f64,
) -> CallStats {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let stop = stop.clone();
        let method = method.to_string();
        let mut ws = RawWs::connect_patiently(addr).await;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut sent: std::collections::VecDeque<Instant> = Default::default();
            let mut id = 0u64;
            loop {
                while sent.len() < inflight && !stop.load(Ordering::Relaxed) {
                    id += 1;
                    let req = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}"}}"#);
                    ws.queue(&req).await;
                    sent.push_back(Instant::now());
                }
                ws.flush().await;
                if sent.is_empty() {
                    break;
                }
                let _ = ws.recv_bytes().await;
                if let Some(t) = sent.pop_front() {
                    lat.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            lat
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    CallStats {
        rate: all.len() as f64 / elapsed,
        p50: percentile(&all, 0.5),
        p90: percentile(&all, 0.9),
        p99: percentile(&all, 0.99),
        max: all.last().copied().unwrap_or(f64::NAN),
    }
}

fn emit(scenario: &str, name: &str, value: f64, unit: &str) {
    eprintln!(
        "{}",
        json!({"scenario": scenario, "figure": name, "value": value, "unit": unit})
    );
}

async fn scenario_calls(secs: f64, rounds: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway(dir.path()).start();
    let bare = bare();
    println!("\n## Trivial calls (median of {rounds} alternating rounds of {secs} s)\n");
    println!("| load | server | calls/s | p50 µs | p90 µs | p99 µs | max µs |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (conns, inflight) in [(1usize, 1usize), (16, 4)] {
        let mut results: Vec<(&str, Vec<CallStats>)> =
            vec![("bare jsonrpsee", Vec::new()), ("clawgate", Vec::new())];
        for _ in 0..rounds {
            results[0]
                .1
                .push(calls(bare.addr, "health", conns, inflight, secs).await);
            results[1]
                .1
                .push(calls(gw.addr, "gateway.health", conns, inflight, secs).await);
        }
        let mut rates = Vec::new();
        for (name, stats) in &results {
            let m = |f: fn(&CallStats) -> f64| median(stats.iter().map(f).collect());
            let (rate, p50, p90, p99, max) = (
                m(|s| s.rate),
                m(|s| s.p50),
                m(|s| s.p90),
                m(|s| s.p99),
                m(|s| s.max),
            );
            rates.push(rate);
            println!(
                "| {conns}×{inflight} | {name} | {rate:.0} | {p50:.0} | {p90:.0} | {p99:.0} | {max:.0} |"
            );
            let key = format!("{conns}x{inflight} {name}");
            emit("calls", &format!("{key} rate"), rate, "calls/s");
            emit("calls", &format!("{key} p50"), p50, "us");
            emit("calls", &format!("{key} p99"), p99, "us");
        }
        let ratio = rates[1] / rates[0];
        println!("| {conns}×{inflight} | ratio clawgate/bare | {ratio:.2} | | | | |");
        emit("calls", &format!("{conns}x{inflight} ratio"), ratio, "x");
    }
}

/// Calls/s of the same build with `[metrics] enabled = true` and `false`, alternating rounds;
/// then `/metrics` rendered with 50 methods (3 codes each) and 100 tools recorded, in this
/// process (the same recorder and renderer the gateway uses).
async fn scenario_metrics(secs: f64, rounds: usize) {
    let on_dir = tempfile::tempdir().expect("tempdir");
    let off_dir = tempfile::tempdir().expect("tempdir");
    let on = gateway(on_dir.path()).start();
    let off = gateway(off_dir.path())
        .config("[metrics]\nenabled = false\n")
        .start();
    println!("\n## Metrics on and off (median of {rounds} alternating rounds of {secs} s)\n");
    println!("| load | metrics | calls/s | p50 µs | p99 µs |");
    println!("|---|---|---:|---:|---:|");
    for (conns, inflight) in [(1usize, 1usize), (16, 4)] {
        let mut stats: [Vec<CallStats>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            stats[0].push(calls(off.addr, "gateway.health", conns, inflight, secs).await);
            stats[1].push(calls(on.addr, "gateway.health", conns, inflight, secs).await);
        }
        let mut rates = Vec::new();
        for (name, st) in ["off", "on"].iter().zip(&stats) {
            let m = |f: fn(&CallStats) -> f64| median(st.iter().map(f).collect());
            let (rate, p50, p99) = (m(|s| s.rate), m(|s| s.p50), m(|s| s.p99));
            rates.push(rate);
            println!("| {conns}×{inflight} | {name} | {rate:.0} | {p50:.0} | {p99:.0} |");
            emit(
                "metrics",
                &format!("{conns}x{inflight} {name} rate"),
                rate,
                "calls/s",
            );
        }
        let ratio = rates[1] / rates[0];
        println!("| {conns}×{inflight} | ratio on/off | {ratio:.3} | | |");
        emit(
            "metrics",
            &format!("{conns}x{inflight} ratio on/off"),
            ratio,
            "x",
        );
    }
    clawgate::metrics::install();
    let methods: Vec<_> = (0..50)
        .map(|i| clawgate::metrics::MethodMetrics::new(&format!("bench.method{i}")))
        .collect();
    for m in &methods {
        for code in [None, Some(-32602), Some(-32022)] {
            m.record(code, Duration::from_micros(40));
        }
    }
    for i in 0..100 {
        for outcome in ["ok", "error"] {
            clawgate::metrics::tool_call(&format!("bench_tool_{i}"), outcome);
        }
    }
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..200 {
        let t = Instant::now();
        let text =
            clawgate::metrics::render(clawgate::metrics::Gauges::default()).unwrap_or_default();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = text.len();
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
    println!(
        "\n`/metrics` rendered, 50 methods × 3 codes + 100 tools × 2 outcomes ({bytes} bytes): p50 {p50:.2} ms, p99 {p99:.2} ms\n"
    );
    emit("metrics", "render p50", p50, "ms");
    emit("metrics", "render p99", p99, "ms");
}

/// What one fan-out run measured.
struct FanoutRun {
    /// Delivery latencies (publish request sent → notification received), ms, sorted.
    latencies: Vec<f64>,
    delivered: u64,
    gaps: u64,
    /// Server CPU per event, ms.
    server_cpu: f64,
    /// This client's CPU per event, ms.
    client_cpu: f64,
    /// `chat.inject` round trip, ms, sorted.
    inject: Vec<f64>,
}

/// `subs` subscribers of session `fan` on `server`, `events` injected `interval` apart.
async fn fanout_run(server: &Server, subs: usize, events: usize, interval: Duration) -> FanoutRun {
    let received = Arc::new(AtomicU64::new(0));
    let gaps = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..subs {
        let mut ws = RawWs::connect_patiently(server.addr).await;
        ws.send(r#"{"jsonrpc":"2.0","id":1,"method":"events.subscribe","params":{"events":["chat"],"sessionKey":"fan"}}"#).await;
        let _ = ws.recv_bytes().await;
        let (received, gaps) = (received.clone(), gaps.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(events);
            while lat.len() < events {
                let data = ws.recv_bytes().await;
                // Take the receipt time first, and read only what is needed: the figure is
                // the server's delivery, not this client's JSON parsing.
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64() * 1e3)
                    .unwrap_or(0.0);
                let text = String::from_utf8_lossy(&data);
                if text.contains("\"event\":\"gap\"") {
                    gaps.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if !text.contains("\"event\":\"chat\"") {
                    continue; // a tick
                }
                let sent: f64 = text
                    .split("\"content\":\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').next())
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(f64::NAN);
                lat.push(now - sent);
                received.fetch_add(1, Ordering::Relaxed);
            }
            // The connection stays open until every subscriber is done: closing it early
            // would load the server while others still wait for the last event.
            (lat, ws)
        }));
    }
    let mut publisher = RawWs::connect_patiently(server.addr).await;
    // Let the connection storm settle: this measures steady state.
    tokio::time::sleep(Duration::from_millis(2000 + subs as u64 / 5)).await;
    let (server_cpu, client_cpu) = (server_cpu_ms(server), cpu_ms("self"));
    let mut inject = Vec::with_capacity(events);
    for i in 0..events {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0);
        let req = json!({"jsonrpc": "2.0", "id": i, "method": "chat.inject", "params": {"sessionKey": "fan", "role": "system", "content": format!("{now:.3}")}});
        let t0 = Instant::now();
        publisher.send(&req.to_string()).await;
        let _ = publisher.recv_bytes().await;
        inject.push(t0.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(interval).await;
    }
    let mut latencies = Vec::new();
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for t in tasks {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Ok(Ok((l, ws))) = tokio::time::timeout(left, t).await {
            latencies.extend(l);
            held.push(ws);
        }
    }
    let server_cpu = (server_cpu_ms(server) - server_cpu) / events as f64;
    let client_cpu = (cpu_ms("self") - client_cpu) / events as f64;
    drop(held);
    latencies.sort_by(|a, b| a.total_cmp(b));
    inject.sort_by(|a, b| a.total_cmp(b));
    FanoutRun {
        latencies,
        delivered: received.load(Ordering::Relaxed),
        gaps: gaps.load(Ordering::Relaxed),
        server_cpu,
        client_cpu,
        inject,
    }
}

async fn scenario_fanout(counts: &[usize], events: usize, interval: Duration, rounds: usize) {
    println!(
        "\n## Fan-out: one chat.inject to S subscribers of its session, {events} events {} ms apart, median of {rounds} alternating rounds\n",
        interval.as_millis()
    );
    println!(
        "| subscribers | server | delivered | p50 ms | p99 ms | max ms | gaps | server CPU ms/event | client CPU ms/event | publish round trip p50 ms |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &subs in counts {
        let mut runs: [Vec<FanoutRun>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (i, runs) in runs.iter_mut().enumerate() {
                let dir = tempfile::tempdir().expect("tempdir");
                let server = if i == 0 {
                    bare()
                } else {
                    gateway(dir.path()).start()
                };
                runs.push(fanout_run(&server, subs, events, interval).await);
            }
        }
        let expected = (subs * events) as u64;
        let mut p99s = [0.0; 2];
        for (i, runs) in runs.iter().enumerate() {
            let name = ["bare jsonrpsee", "clawgate"][i];
            let m = |f: &dyn Fn(&FanoutRun) -> f64| median(runs.iter().map(f).collect());
            let p99 = m(&|r| percentile(&r.latencies, 0.99));
            p99s[i] = p99;
            println!(
                "| {subs} | {name} | {}/{expected} | {:.2} | {p99:.2} | {:.2} | {} | {:.1} | {:.1} | {:.2} |",
                runs.iter().map(|r| r.delivered).min().unwrap_or(0),
                m(&|r| percentile(&r.latencies, 0.5)),
                m(&|r| r.latencies.last().copied().unwrap_or(f64::NAN)),
                runs.iter().map(|r| r.gaps).max().unwrap_or(0),
                m(&|r| r.server_cpu),
                m(&|r| r.client_cpu),
                m(&|r| percentile(&r.inject, 0.5)),
            );
            let tag = ["bare", "clawgate"][i];
            emit("fanout", &format!("{subs} {tag} p99"), p99, "ms");
            emit(
                "fanout",
                &format!("{subs} {tag} server cpu per event"),
                m(&|r| r.server_cpu),
                "ms",
            );
            emit(
                "fanout",
                &format!("{subs} {tag} delivered"),
                runs.iter().map(|r| r.delivered).min().unwrap_or(0) as f64 / expected as f64,
                "fraction",
            );
        }
        println!(
            "| {subs} | **p99 ratio clawgate / bare** | | | **{:.2}** | | | | | |",
            p99s[1] / p99s[0]
        );
        emit(
            "fanout",
            &format!("{subs} p99 ratio"),
            p99s[1] / p99s[0],
            "x",
        );
    }
}

async fn scenario_memory(counts: &[usize]) {
    println!("\n## Memory (resident set of the gateway process)\n");
    println!("| state | RSS MiB | per connection KiB |");
    println!("|---|---:|---:|");
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = gateway(dir.path()).start();
    let ready = gw.ready_after();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = gw.rss_kib();
    println!(
        "| idle (ready in {:.0} ms) | {:.1} | |",
        ready.as_secs_f64() * 1e3,
        idle as f64 / 1024.0
    );
    emit("memory", "idle rss", idle as f64 / 1024.0, "MiB");
    emit("memory", "ready", ready.as_secs_f64() * 1e3, "ms");
    let mut held = Vec::new();
    for &n in counts {
        while held.len() < n {
            let mut ws = RawWs::connect_patiently(gw.addr).await;
            ws.send(r#"{"jsonrpc":"2.0","id":1,"method":"gateway.hello","params":{"client":{"name":"bench"}}}"#).await;
            let _ = ws.recv_bytes().await;
            held.push(ws);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let rss = gw.rss_kib();
        let per = (rss.saturating_sub(idle)) as f64 / n as f64;
        println!(
            "| {n} idle WebSocket connections | {:.1} | {per:.1} |",
            rss as f64 / 1024.0
        );
        emit("memory", &format!("{n} connections per-conn"), per, "KiB");
    }
}

/// A paced fake provider (OpenAI wire format): each chunk's text is the time it was sent, in µs.
async fn paced_provider(chunks: usize, pace: Duration) -> SocketAddr {
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        let (tx, rx) = futures::channel::mpsc::unbounded::<
                            Result<Frame<bytes::Bytes>, std::convert::Infallible>,
                        >();
                        tokio::spawn(async move {
                            for _ in 0..chunks {
                                tokio::time::sleep(pace).await;
                                let us = SystemTime::now()
                                    .duration_since(UNIX_EPOCH)
                                    .map(|d| d.as_micros())
                                    .unwrap_or(0);
                                let chunk = format!(
                                    "data: {}\n\n",
                                    json!({"choices": [{"index": 0, "delta": {"content": format!("{us} ")}, "finish_reason": null}]})
                                );
                                if tx.unbounded_send(Ok(Frame::data(chunk.into()))).is_err() {
                                    return;
                                }
                            }
                            let end = format!(
                                "data: {}\n\ndata: [DONE]\n\n",
                                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                            );
                            let _ = tx.unbounded_send(Ok(Frame::data(end.into())));
                        });
                        let mut resp = http::Response::new(http_body_util::BodyExt::boxed(
                            StreamBody::new(rx),
                        ));
                        resp.headers_mut().insert(
                            "content-type",
                            http::HeaderValue::from_static("text/event-stream"),
                        );
                        Ok::<_, std::convert::Infallible>(resp)
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

/// What one streaming run measured.
struct StreamRun {
    /// Added latency per provider chunk (provider send → client receipt of the delta), ms.
    latencies: Vec<f64>,
    deltas: u64,
    secs: f64,
    completed: usize,
    /// Server CPU per delta, µs.
    cpu_per_delta: f64,
}

/// `k` concurrent `chat.stream` runs against `server`, one session each.
async fn streaming_run(server: &Server, k: usize) -> StreamRun {
    let mut tasks = Vec::new();
    let start = Instant::now();
    let cpu = server_cpu_ms(server);
    for i in 0..k {
        let mut ws = RawWs::connect_patiently(server.addr).await;
        tasks.push(tokio::spawn(async move {
            let req = json!({"jsonrpc": "2.0", "id": 1, "method": "chat.stream", "params": {"message": "go", "sessionKey": format!("s{i}")}});
            ws.send(&req.to_string()).await;
            let mut lat = Vec::new();
            let mut deltas = 0u64;
            loop {
                let data = ws.recv_bytes().await;
                // Receipt time first: the figure is the server's, not this client's parsing.
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_micros() as f64)
                    .unwrap_or(0.0);
                let v: Value = serde_json::from_slice(&data).unwrap_or_default();
                let p = &v["params"]["result"]["payload"];
                match p["state"].as_str() {
                    Some("delta") => {
                        deltas += 1;
                        for stamp in p["text"].as_str().unwrap_or("").split_whitespace() {
                            if let Ok(us) = stamp.parse::<f64>() {
                                lat.push((now - us) / 1000.0);
                            }
                        }
                    }
                    Some("final") => return (lat, deltas, true),
                    Some("error") | Some("aborted") => return (lat, deltas, false),
                    _ => {}
                }
            }
        }));
    }
    let mut latencies = Vec::new();
    let mut deltas = 0;
    let mut completed = 0;
    for t in tasks {
        if let Ok(Ok((l, d, ok))) = tokio::time::timeout(Duration::from_secs(120), t).await {
            latencies.extend(l);
            deltas += d;
            completed += usize::from(ok);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    StreamRun {
        latencies,
        deltas,
        secs,
        completed,
        cpu_per_delta: (server_cpu_ms(server) - cpu) * 1e3 / deltas.max(1) as f64,
    }
}

async fn scenario_streaming(counts: &[usize], chunks: usize, rounds: usize) {
    println!(
        "\n## Streaming: K concurrent chat.stream runs, {chunks} provider chunks 20 ms apart (agent.delta_interval_ms = 1), median of {rounds} alternating rounds\n"
    );
    println!(
        "| runs | server | chunks/s relayed | deltas/s | added p50 ms | added p99 ms | max ms | completed | server CPU µs/delta |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let provider = paced_provider(chunks, Duration::from_millis(20)).await;
    for &k in counts {
        let mut runs: [Vec<StreamRun>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..rounds {
            for (i, runs) in runs.iter_mut().enumerate() {
                let dir = tempfile::tempdir().expect("tempdir");
                let server = if i == 0 {
                    bare_with(Some(provider))
                } else {
                    gateway_with(
                        dir.path(),
                        &[
                            ("CLAWGATE_AGENT__PROVIDER", "openai".into()),
                            ("CLAWGATE_AGENT__MODEL", "bench".into()),
                            ("CLAWGATE_AGENT__BASE_URL", format!("http://{provider}/v1")),
                            ("CLAWGATE_AGENT__DELTA_INTERVAL_MS", "1".into()),
                        ],
                    )
                };
                runs.push(streaming_run(&server, k).await);
            }
        }
        let mut p99s = [0.0; 2];
        for (i, runs) in runs.iter().enumerate() {
            let m = |f: &dyn Fn(&StreamRun) -> f64| median(runs.iter().map(f).collect());
            let p99 = m(&|r| percentile(&r.latencies, 0.99));
            p99s[i] = p99;
            println!(
                "| {k} | {} | {:.0} | {:.0} | {:.2} | {p99:.2} | {:.2} | {}/{k} | {:.0} |",
                ["bare jsonrpsee relay", "clawgate"][i],
                m(&|r| r.latencies.len() as f64 / r.secs),
                m(&|r| r.deltas as f64 / r.secs),
                m(&|r| percentile(&r.latencies, 0.5)),
                m(&|r| r.latencies.last().copied().unwrap_or(f64::NAN)),
                runs.iter().map(|r| r.completed).min().unwrap_or(0),
                m(&|r| r.cpu_per_delta),
            );
            let tag = ["bare", "clawgate"][i];
            emit("streaming", &format!("{k} {tag} added p99"), p99, "ms");
            emit(
                "streaming",
                &format!("{k} {tag} deltas/s"),
                m(&|r| r.deltas as f64 / r.secs),
                "1/s",
            );
        }
        println!(
            "| {k} | **p99 ratio clawgate / bare** | | | | **{:.2}** | | | |",
            p99s[1] / p99s[0]
        );
        emit(
            "streaming",
            &format!("{k} p99 ratio"),
            p99s[1] / p99s[0],
            "x",
        );
    }
}

/// A comma-separated list of sizes after `flag` (`--runs 10,100`).
fn list_arg(args: &[String], flag: &str) -> Option<Vec<usize>> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let after = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if args.iter().any(|a| a == "--bare-server") {
        // `--data-dir` is the launcher's too; the bare server keeps nothing.
        let port = after("--port").and_then(|p| p.parse().ok()).unwrap_or(0);
        run_bare_server(port, after("--provider"));
        return;
    }
    let value = |flag: &str, default: f64| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let secs = value("--seconds", 3.0);
    let rounds = value("--rounds", 3.0) as usize;
    let which = args
        .iter()
        .skip(1)
        .find(|a| {
            ["calls", "fanout", "memory", "streaming", "metrics", "all"].contains(&a.as_str())
        })
        .cloned()
        .unwrap_or_else(|| "all".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if which == "calls" || which == "all" {
            scenario_calls(secs, rounds).await;
        }
        if which == "metrics" || which == "all" {
            scenario_metrics(secs, rounds).await;
        }
        if which == "fanout" || which == "all" {
            let subs: Vec<usize> =
                list_arg(&args, "--subs").unwrap_or_else(|| vec![100, 1000, 10_000]);
            let events = value("--events", 20.0) as usize;
            let interval = Duration::from_millis(value("--interval-ms", 500.0) as u64);
            scenario_fanout(&subs, events, interval, rounds).await;
        }
        if which == "memory" || which == "all" {
            scenario_memory(&[1000, 10_000]).await;
        }
        if which == "streaming" || which == "all" {
            let runs = list_arg(&args, "--runs").unwrap_or_else(|| vec![10, 100, 1000]);
            scenario_streaming(&runs, value("--chunks", 50.0) as usize, rounds).await;
        }
    });
}
