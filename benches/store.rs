//! Store benchmark: startup with 10,000 sessions on disk, `sessions.list` latency, and
//! `chat.history` on a 100 MB transcript versus a small one. Drives the real binary over a real
//! WebSocket. Run: `cargo bench --bench store` (prints a table and one JSON line per figure).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use clawgate::client::GatewayClient;
use clawgate::protocol::{Role, TranscriptMessage};
use clawgate::store::transcript::{Header, header_line, message_line};
use serde_json::{Value, json};

mod common;
use common::launcher::Gateway;
use common::{gateway, median, percentile};

fn message(i: u64, parent: Option<String>, content: String) -> TranscriptMessage {
    let role = if i.is_multiple_of(2) {
        Role::User
    } else {
        Role::Assistant
    };
    let mut m = clawgate::store::NewMessage::new(role, content).message;
    m.id = format!("m{i:012}");
    m.parent_id = parent;
    m.ts = 1_767_225_600_000 + i;
    m
}

/// Writes a transcript directly in the on-disk format (no fsync: this is set-up, not the test).
fn write_transcript(dir: &Path, id: &str, key: &str, messages: u64, content_len: usize) {
    let header = Header {
        version: 1,
        id: id.into(),
        key: key.into(),
        created_at: 1_767_225_600_000,
        forked_from: None,
        agent: None,
    };
    let file = std::fs::File::create(dir.join(format!("{id}.jsonl"))).expect("create");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    out.write_all(&header_line(&header).expect("header"))
        .expect("write");
    let mut parent = None;
    let filler = "lorem ipsum dolor sit amet ".repeat(content_len / 27 + 1);
    for i in 0..messages {
        let m = message(i, parent.take(), format!("{i} {}", &filler[..content_len]));
        parent = Some(m.id.clone());
        out.write_all(&message_line(&m).expect("line"))
            .expect("write");
    }
    out.flush().expect("flush");
}

fn start(data_dir: &Path) -> Gateway {
    gateway(data_dir).start()
}

/// Stops `g` gracefully: the index is written, so the next start reads it.
fn stop(mut g: Gateway) {
    g.terminate();
}

async fn latencies(client: &GatewayClient, method: &str, params: Value, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client
            .call_raw(method, Some(params.clone()))
            .await
            .expect("call");
        out.push(t.elapsed().as_secs_f64() * 1e3);
    }
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

fn report(name: &str, unit: &str, value: f64, target: Option<f64>) {
    let verdict = match target {
        Some(t) if value <= t => format!("  (target < {t} {unit}: met)"),
        Some(t) => format!("  (target < {t} {unit}: MISSED)"),
        None => String::new(),
    };
    println!("{name:<48} {value:>10.3} {unit}{verdict}");
    eprintln!(
        "{}",
        json!({"bench": name, "value": value, "unit": unit, "target": target})
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    let sessions = data.join("sessions");
    std::fs::create_dir_all(&sessions).expect("mkdir");
    let n_sessions = 10_000u64;
    let t = Instant::now();
    for i in 0..n_sessions {
        write_transcript(
            &sessions,
            &format!("{:032x}", i + 1),
            &format!("bench-{i}"),
            20,
            200,
        );
    }
    eprintln!("wrote {n_sessions} transcripts in {:?}", t.elapsed());

    // Cold: no index yet, every transcript is read once.
    let cold = start(&data);
    report(
        "startup, 10k sessions, no index (rebuild)",
        "ms",
        cold.ready_after().as_secs_f64() * 1e3,
        None,
    );
    stop(cold);

    // Warm: the normal case. Median of 5 starts.
    let mut starts = Vec::new();
    for _ in 0..5 {
        let g = start(&data);
        starts.push(g.ready_after().as_secs_f64() * 1e3);
        stop(g);
    }
    report(
        "startup, 10k sessions, with index (median of 5)",
        "ms",
        median(starts),
        Some(1000.0),
    );

    let g = start(&data);
    runtime.block_on(async {
        let client = GatewayClient::connect(&g.url, None).await.expect("connect");
        let total = client
            .call_raw("sessions.list", Some(json!({"limit": 1})))
            .await
            .expect("list")["total"]
            .clone();
        assert_eq!(total, json!(n_sessions + 1), "all sessions listed");
        let l = latencies(&client, "sessions.list", json!({"limit": 100}), 300).await;
        report(
            "sessions.list limit 100 of 10k, p50",
            "ms",
            percentile(&l, 0.5),
            Some(10.0),
        );
        report(
            "sessions.list limit 100 of 10k, p99",
            "ms",
            percentile(&l, 0.99),
            None,
        );
        let l = latencies(
            &client,
            "sessions.list",
            json!({"limit": 100, "search": "bench-99"}),
            300,
        )
        .await;
        report(
            "sessions.list search of 10k, p50",
            "ms",
            percentile(&l, 0.5),
            Some(10.0),
        );
    });
    stop(g);

    // History: a 100 MB transcript and a small one.
    let big_dir = root.path().join("big");
    std::fs::create_dir_all(big_dir.join("sessions")).expect("mkdir");
    write_transcript(
        &big_dir.join("sessions"),
        "b1g0000000000000000000000000000",
        "big",
        100_000,
        1000,
    );
    write_transcript(
        &big_dir.join("sessions"),
        "5ma11000000000000000000000000000",
        "small",
        60,
        1000,
    );
    let size = std::fs::metadata(big_dir.join("sessions/b1g0000000000000000000000000000.jsonl"))
        .expect("meta")
        .len();
    eprintln!("big transcript: {:.1} MB", size as f64 / 1e6);
    let g = start(&big_dir);
    runtime.block_on(async {
        let client = GatewayClient::connect(&g.url, None).await.expect("connect");
        for key in ["small", "big"] {
            let l = latencies(
                &client,
                "chat.history",
                json!({"sessionKey": key, "limit": 50}),
                300,
            )
            .await;
            report(
                &format!("chat.history newest 50, {key} transcript, p50"),
                "ms",
                percentile(&l, 0.5),
                Some(5.0),
            );
            report(
                &format!("chat.history newest 50, {key} transcript, p99"),
                "ms",
                percentile(&l, 0.99),
                None,
            );
        }
    });
    stop(g);
}
