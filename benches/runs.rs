//! Runs benchmark, against the release binary over loopback: the approval round trip (from
//! writing `approvals.resolve` on one connection to the run's `tool_start` arriving on the
//! connection that streams it, with the `echo` provider and `tools.exec = "ask"`), and resume
//! after a restart (from the restarted gateway's ready line to the first `delta` of the resumed
//! run, as replayed to a client that subscribes right after the restart with the old epoch; the
//! run streams from a loopback fake provider in the Anthropic format that answers at once).
//!
//! Run: `cargo bench --bench runs -- [--approvals N] [--restarts N]` (N approvals per data
//! directory, default 300; N restarts per way of stopping, SIGTERM and kill -9, default 20).
//! Prints a Markdown table on stdout and one JSON object per figure on stderr.

#[allow(dead_code)] // the parts of the shared bench code the other benches use
mod common;
// (It allows its own dead code: the script pieces of the other tests.)
#[path = "../tests/gateway/fake_provider.rs"]
mod fake_provider;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use common::launcher::{Gateway, Launcher};
use common::ws::RawWs;
use common::{gateway, percentile};
use fake_provider::{FakeProvider, Script, anthropic};

/// How long any one wait of the benchmark may take before it gives up (against hangs).
const PATIENCE: Duration = Duration::from_secs(30);

/// Approval samples run (and thrown away) before the measured ones.
const WARM_UP: usize = 20;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn wall_ms() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i128)
        .unwrap_or(0)
}

/// One row of the table (p50/p90/p99 of `values` in ms, and how many) and its JSON line.
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
        json!({"bench": "runs", "figure": figure, "n": values.len(), "unit": "ms",
               "p50": p50, "p90": p90, "p99": p99, "target": target})
    );
}

/// The next data message of `ws` and when it arrived (taken before it is parsed).
async fn recv_at(ws: &mut RawWs) -> (Instant, Value) {
    let bytes = tokio::time::timeout(PATIENCE, ws.recv_bytes())
        .await
        .expect("a message within the patience");
    let at = Instant::now();
    (at, serde_json::from_slice(&bytes).expect("json message"))
}

/// Starts `chat.stream` with `params` on `ws`; its subscription id.
async fn stream(ws: &mut RawWs, params: Value) -> String {
    let resp = ws.call("chat.stream", params).await;
    resp["result"]
        .as_str()
        .unwrap_or_else(|| panic!("stream started: {resp}"))
        .to_string()
}

/// Reads `sub`'s payloads on `ws` up to the first in `state`: it and when it arrived.
async fn until(ws: &mut RawWs, sub: &str, state: &str) -> (Instant, Value) {
    loop {
        let (at, msg) = recv_at(ws).await;
        if msg["method"] != "chat.event" || msg["params"]["subscription"] != sub {
            continue;
        }
        let payload = msg["params"]["result"]["payload"].clone();
        if payload["state"] == state {
            return (at, payload);
        }
        assert!(
            !matches!(
                payload["state"].as_str(),
                Some("final" | "aborted" | "error")
            ),
            "the run ended before `{state}`: {payload}"
        );
    }
}

/// Reads `ws` until the response to request `id`; when it arrived.
async fn answer(ws: &mut RawWs, id: &str) -> (Instant, Value) {
    loop {
        let (at, msg) = recv_at(ws).await;
        if msg["id"] == id {
            return (at, msg);
        }
    }
}

/// Approval round trips, in ms.
struct Approvals {
    /// Resolve written → tool_start arrived on the streaming connection.
    to_tool: Vec<f64>,
    /// Resolve written → its answer arrived on the resolving connection.
    to_answer: Vec<f64>,
}

/// `samples` approval round trips (after the warm-up) on a gateway on `data`, one session
/// each, one after the other. Each run is echo's tool call to `exec` with `true`; the streaming
/// connection waits for `approval_requested`, the other resolves it `allow`.
async fn approvals(data: &Path, samples: usize) -> Approvals {
    let config = "[agents.main]\nprovider = \"echo\"\nmodel = \"echo\"\n[agents.main.tools]\nexec = \"ask\"\n";
    let mut gw = gateway(data).config(config).start();
    let mut a = RawWs::connect(gw.addr).await;
    let mut b = RawWs::connect(gw.addr).await;
    let message = format!("/tool exec {}", json!({"command": "true"}));
    let mut out = Approvals {
        to_tool: Vec::new(),
        to_answer: Vec::new(),
    };
    for i in 0..WARM_UP + samples {
        let sub = stream(
            &mut a,
            json!({"sessionKey": format!("ask-{i}"), "message": message}),
        )
        .await;
        let (_, asked) = until(&mut a, &sub, "approval_requested").await;
        let id = format!("resolve-{i}");
        let req = json!({"jsonrpc": "2.0", "id": id, "method": "approvals.resolve",
                         "params": {"approvalId": asked["approvalId"], "decision": "allow"}});
        b.send(&req.to_string()).await;
        let written = Instant::now();
        let ((tool_at, tool), (answer_at, answered)) =
            tokio::join!(until(&mut a, &sub, "tool_start"), answer(&mut b, &id));
        assert_eq!(tool["name"], "exec", "{tool}");
        assert_eq!(answered["result"]["state"], "allowed", "{answered}");
        let (_, fin) = until(&mut a, &sub, "final").await;
        assert_eq!(fin["state"], "final");
        if i >= WARM_UP {
            out.to_tool
                .push(ms(tool_at.saturating_duration_since(written)));
            out.to_answer
                .push(ms(answer_at.saturating_duration_since(written)));
        }
    }
    gw.terminate();
    out
}

/// ms of appending one line of `len` bytes and `fdatasync`, `n` times, in a file in `dir`:
/// what one transcript write costs on that file system.
fn fdatasync_ms(dir: &Path, n: usize, len: usize) -> Vec<f64> {
    let path = dir.join("fdatasync-probe.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("probe file");
    let line = format!("{}\n", "x".repeat(len.saturating_sub(1)));
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        file.write_all(line.as_bytes()).expect("write");
        file.sync_data().expect("fdatasync");
        out.push(ms(t.elapsed()));
    }
    let _ = std::fs::remove_file(&path);
    out
}

/// The fake provider's own time to first byte: ms from opening a fresh connection (as the
/// restarted gateway must) to the first body chunk of a reply scripted with no delay.
async fn provider_ttfb(fake: &FakeProvider, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    let body = json!({"model": "claude-test", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "go"}]})
    .to_string();
    for _ in 0..n {
        fake.push(Script::sse(anthropic::reply(&["resumed ", "answer"])));
        let t = Instant::now();
        let stream = tokio::net::TcpStream::connect(fake.addr)
            .await
            .expect("connect");
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method("POST")
            .uri("/v1/messages")
            .header("host", fake.addr.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.clone())))
            .expect("request");
        let resp = sender.send_request(req).await.expect("response");
        let mut body = resp.into_body();
        let first = body.frame().await;
        out.push(ms(t.elapsed()));
        assert!(matches!(first, Some(Ok(_))), "a first chunk");
        while let Some(Ok(_)) = body.frame().await {}
    }
    out
}

/// The gateway on `data` with its `main` agent on the fake provider.
fn on_fake(data: &Path, fake: &FakeProvider) -> Launcher {
    gateway(data)
        .env("CLAWGATE_BENCH_KEY", "bench-key")
        .config(format!(
            "[agents.main]\nprovider = \"anthropic\"\nmodel = \"claude-test\"\nbase_url = \"http://{}\"\napi_key_env = \"CLAWGATE_BENCH_KEY\"\n",
            fake.addr
        ))
}

/// This lifetime's epoch, as `gateway.hello` says it.
async fn epoch_of(ws: &mut RawWs) -> String {
    let hello = ws
        .call(
            "gateway.hello",
            json!({"client": {"name": "bench", "version": "1"}}),
        )
        .await;
    hello["result"]["snapshot"]["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("an epoch: {hello}"))
        .to_string()
}

/// What one restart measured, in ms from the ready line (Instant taken when
/// `Launcher::start` returned) unless said otherwise.
struct Restart {
    /// Spawn of the restarted binary to its ready line.
    ready_after: f64,
    /// The resumed run's `resumed` payload arrived at the client.
    resumed: f64,
    /// Its first `delta` arrived at the client.
    delta: f64,
    /// When the gateway published that delta (the envelope's `ts`, ms resolution), relative
    /// to the wall clock at the ready line; negative when it was before.
    published: f64,
}

/// `restarts` restarts, each stopping (by SIGTERM, or kill -9 when `kill9`) a run streaming
/// from `fake` after its first delta.
async fn resumes(data: &Path, fake: &FakeProvider, restarts: usize, kill9: bool) -> Vec<Restart> {
    let mut gw: Gateway = on_fake(data, fake).start();
    let pieces: Vec<String> = (0..400).map(|i| format!("p{i} ")).collect();
    let pieces: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let mut out = Vec::with_capacity(restarts);
    for i in 0..restarts {
        let mut c = RawWs::connect(gw.addr).await;
        let epoch = epoch_of(&mut c).await;
        // The first call streams for 8 s (it is stopped long before); the resumed one answers
        // at once.
        fake.push(Script::sse(anthropic::reply(&pieces)).paced(20));
        fake.push(Script::sse(anthropic::reply(&["resumed ", "answer"])));
        let key = format!("resume-{}-{i}", if kill9 { "kill" } else { "term" });
        let sub = stream(&mut c, json!({"sessionKey": key, "message": "go"})).await;
        let (_, started) = until(&mut c, &sub, "started").await;
        let run_id = started["runId"].clone();
        until(&mut c, &sub, "delta").await;
        if kill9 {
            gw.kill9();
        } else {
            let status = gw.terminate();
            assert!(status.success(), "{status:?}");
        }
        drop(c);
        drop(gw);

        gw = on_fake(data, fake).start();
        let ready = Instant::now();
        let ready_wall = wall_ms();
        let mut ws = RawWs::connect(gw.addr).await;
        ws.subscribe(json!({"events": ["chat"], "afterSeq": 0, "epoch": epoch}))
            .await;
        let (mut resumed, mut delta) = (None, None);
        loop {
            let (at, msg) = recv_at(&mut ws).await;
            let env = &msg["params"]["result"];
            if msg["method"] != "events.event"
                || env["event"] != "chat"
                || env["payload"]["runId"] != run_id
            {
                continue;
            }
            match env["payload"]["state"].as_str() {
                Some("resumed") => resumed = Some(at),
                Some("delta") if delta.is_none() => {
                    let ts = env["ts"].as_i64().unwrap_or(0) as i128;
                    delta = Some((at, (ts - ready_wall) as f64));
                }
                Some("final") => break,
                Some(s @ ("aborted" | "error")) => panic!("the resumed run ended {s}: {env}"),
                _ => {}
            }
        }
        let (Some(resumed), Some((delta, published))) = (resumed, delta) else {
            panic!("the resumed run {run_id} sent no `resumed` or no `delta`");
        };
        out.push(Restart {
            ready_after: ms(gw.ready_after()),
            resumed: ms(resumed.saturating_duration_since(ready)),
            delta: ms(delta.saturating_duration_since(ready)),
            published,
        });
    }
    gw.terminate();
    out
}

fn main() {
    let samples = arg("--approvals", 300);
    let restarts = arg("--restarts", 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let root = tempfile::tempdir().expect("tempdir");
    // The same gateway on a tmpfs data directory, where a transcript write costs no disk
    // flush: what the gateway itself adds.
    let shm = Path::new("/dev/shm")
        .is_dir()
        .then(|| tempfile::tempdir_in("/dev/shm").ok())
        .flatten();

    println!("\n## Runs (`cargo bench --bench runs`)\n");
    println!("| figure | n | p50 ms | p90 ms | p99 ms | target |");
    println!("|---|---:|---:|---:|---:|---|");
    runtime.block_on(async {
        let disk = root.path().join("approvals");
        let on_disk = approvals(&disk, samples).await;
        report(
            "approval: resolve written → tool_start on the stream",
            on_disk.to_tool,
            Some("p50 < 1 ms"),
        );
        report(
            "approval: resolve written → its answer",
            on_disk.to_answer,
            None,
        );
        report(
            "fdatasync of one 300-byte line, same file system",
            fdatasync_ms(&disk, 200, 300),
            None,
        );
        if let Some(shm) = &shm {
            let on_shm = approvals(shm.path(), samples).await;
            report(
                "approval on tmpfs: resolve written → tool_start",
                on_shm.to_tool,
                None,
            );
            report(
                "approval on tmpfs: resolve written → its answer",
                on_shm.to_answer,
                None,
            );
        }

        let fake = FakeProvider::start(Vec::new()).await;
        for (kill9, how) in [(false, "SIGTERM"), (true, "kill -9")] {
            let data = root
                .path()
                .join(if kill9 { "resume-kill" } else { "resume-term" });
            let runs = resumes(&data, &fake, restarts, kill9).await;
            report(
                &format!("resume after {how}: ready line → first delta of the resumed run"),
                runs.iter().map(|r| r.delta).collect(),
                Some("< 100 ms + provider"),
            );
            report(
                &format!("resume after {how}: ready line → `resumed` payload"),
                runs.iter().map(|r| r.resumed).collect(),
                None,
            );
            report(
                &format!("resume after {how}: delta published (envelope ts) − ready line"),
                runs.iter().map(|r| r.published).collect(),
                None,
            );
            report(
                &format!("resume after {how}: spawn → ready line"),
                runs.iter().map(|r| r.ready_after).collect(),
                None,
            );
        }
        report(
            "fake provider: fresh connection → first body byte (0 ms delay)",
            provider_ttfb(&fake, 50).await,
            None,
        );
    });
}
