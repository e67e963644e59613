//! Compaction benchmark: building the context of a 10,000-message session after a compaction
//! (in process: the store's backward read, the estimate, the summary message), against reading
//! the whole session without one; and `sessions.compact` of a 1,000-message session over a real
//! WebSocket with the offline `echo` provider, whose summary call costs next to nothing, so the
//! figure is what a compaction adds beyond the model call. Run: `cargo bench --bench compaction`
//! (prints a table and one JSON line per figure).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use clawgate::agent::window::{estimate, model_context};
use clawgate::client::GatewayClient;
use clawgate::events::{EventHub, HubLimits};
use clawgate::protocol::{CompactionReason, Role, TranscriptMessage};
use clawgate::store::Store;
use clawgate::store::transcript::{
    CompactionLine, HEADER_VERSION, Header, compaction_line, header_line, message_line,
};
use serde_json::json;

mod common;
use common::{gateway, median, percentile};

/// Message `i` of a bench transcript: user and assistant in turn, `len` characters of text.
fn message(i: u64, parent: Option<String>, len: usize) -> TranscriptMessage {
    let role = if i.is_multiple_of(2) {
        Role::User
    } else {
        Role::Assistant
    };
    let filler = "lorem ipsum dolor sit amet ".repeat(len / 27 + 1);
    let mut m = clawgate::store::NewMessage::new(role, format!("{i} {}", &filler[..len])).message;
    m.id = format!("m{i:012}");
    m.parent_id = parent;
    m.ts = 1_767_225_600_000 + i;
    m
}

/// Writes the transcript `id` of `key` with `messages` messages, and a compaction keeping the
/// newest `kept` (none when `kept` is 0), then `after` more messages (set-up: no fsync).
fn write_transcript(dir: &Path, id: &str, key: &str, messages: u64, kept: u64, after: u64) {
    let header = Header {
        version: HEADER_VERSION,
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
    let mut line = |i: u64, out: &mut std::io::BufWriter<std::fs::File>| {
        let m = message(i, parent.take(), 200);
        parent = Some(m.id.clone());
        out.write_all(&message_line(&m).expect("line"))
            .expect("write");
    };
    for i in 0..messages {
        line(i, &mut out);
    }
    if kept > 0 {
        let c = CompactionLine {
            id: "c1".into(),
            ts: 1_767_225_700_000,
            summary: "They talked at length about lorem ipsum. ".repeat(40),
            first_kept_id: format!("m{:012}", messages - kept),
            tokens_before: 80_000,
            tokens_after: 2_000,
            reason: CompactionReason::Auto,
            usage: None,
        };
        out.write_all(&compaction_line(&c).expect("line"))
            .expect("write");
    }
    for i in messages..messages + after {
        line(i, &mut out);
    }
    out.flush().expect("flush");
}

fn report(name: &str, unit: &str, value: f64, target: Option<f64>) {
    let verdict = match target {
        Some(t) if value <= t => format!("  (target < {t} {unit}: met)"),
        Some(t) => format!("  (target < {t} {unit}: MISSED)"),
        None => String::new(),
    };
    println!("{name:<64} {value:>10.3} {unit}{verdict}");
    eprintln!(
        "{}",
        json!({"bench": name, "value": value, "unit": unit, "target": target})
    );
}

/// Milliseconds of building `key`'s next context (read, estimate, summary message), sorted.
async fn context_times(store: &Store, key: &str, n: usize) -> (Vec<f64>, usize) {
    let mut out = Vec::with_capacity(n);
    let mut len = 0;
    for _ in 0..n {
        let t = Instant::now();
        let ctx = store.context(key).await.expect("context");
        let _tokens = estimate(&ctx);
        let summary = ctx.compaction.as_ref().map(|c| c.summary.clone());
        let messages = model_context(summary.as_deref(), ctx.messages);
        out.push(t.elapsed().as_secs_f64() * 1e3);
        len = messages.len();
    }
    out.sort_by(|a, b| a.total_cmp(b));
    (out, len)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let root = tempfile::tempdir().expect("tempdir");

    // The context of a 10,000-message session, in process.
    let data = root.path().join("context");
    let sessions = data.join("sessions");
    std::fs::create_dir_all(&sessions).expect("mkdir");
    write_transcript(
        &sessions,
        &format!("{:032x}", 1),
        "compacted",
        10_000,
        10,
        0,
    );
    write_transcript(&sessions, &format!("{:032x}", 2), "later", 10_000, 10, 40);
    write_transcript(&sessions, &format!("{:032x}", 3), "whole", 10_000, 0, 0);
    let size = std::fs::metadata(sessions.join(format!("{:032x}.jsonl", 1)))
        .expect("meta")
        .len();
    eprintln!("10,000-message transcript: {:.1} MB", size as f64 / 1e6);
    runtime.block_on(async {
        let hub = EventHub::new(HubLimits {
            replay_capacity: 16,
            replay_max_bytes: 1 << 20,
            subscriber_queue: 16,
            subscriber_queue_bytes: 1 << 20,
        });
        let store = Store::open(&data, hub, Arc::new(tokio::sync::Notify::new())).expect("open");
        for (key, label, target) in [
            ("compacted", "10k messages, compacted, 10 kept", Some(5.0)),
            (
                "later",
                "10k messages, compacted, 10 kept + 40 since",
                Some(5.0),
            ),
            ("whole", "10k messages, never compacted (whole file)", None),
        ] {
            let n = if key == "whole" { 20 } else { 300 };
            let (times, len) = context_times(&store, key, n).await;
            eprintln!("{key}: context of {len} messages");
            report(
                &format!("context build, {label}, p50"),
                "ms",
                percentile(&times, 0.5),
                target,
            );
            report(
                &format!("context build, {label}, p99"),
                "ms",
                percentile(&times, 0.99),
                None,
            );
        }
    });

    // sessions.compact of 1,000-message sessions, through the binary, echo provider.
    let data = root.path().join("compact");
    let sessions = data.join("sessions");
    std::fs::create_dir_all(&sessions).expect("mkdir");
    let rounds = 15u64;
    for i in 0..rounds {
        write_transcript(
            &sessions,
            &format!("{:032x}", 100 + i),
            &format!("long-{i}"),
            1_000,
            0,
            0,
        );
    }
    let mut g = gateway(&data).start();
    runtime.block_on(async {
        let client = GatewayClient::connect(&g.url, None).await.expect("connect");
        let mut times = Vec::new();
        for i in 0..rounds {
            let t = Instant::now();
            let done = client
                .call_raw(
                    "sessions.compact",
                    Some(json!({"key": format!("long-{i}")})),
                )
                .await
                .expect("compact");
            times.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(done["compacted"], true, "{done}");
        }
        report(
            "sessions.compact, 1,000 messages, echo, median",
            "ms",
            median(times.clone()),
            Some(50.0),
        );
        times.sort_by(|a, b| a.total_cmp(b));
        report(
            "sessions.compact, 1,000 messages, echo, max",
            "ms",
            times.last().copied().unwrap_or(f64::NAN),
            None,
        );
        // The same call with nothing to compact: what the method costs without a compaction.
        let mut floor = Vec::new();
        for i in 0..rounds {
            let t = Instant::now();
            let done = client
                .call_raw(
                    "sessions.compact",
                    Some(json!({"key": format!("long-{i}")})),
                )
                .await
                .expect("compact");
            floor.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(done["compacted"], false, "{done}");
        }
        report(
            "sessions.compact, just compacted (nothing to do), median",
            "ms",
            median(floor),
            None,
        );
    });
    // The echo summary itself (the model call of the figure above), in process.
    let older: Vec<TranscriptMessage> = (0..990).map(|i| message(i, None, 200)).collect();
    let t = Instant::now();
    let summary = clawgate::agent::providers::first_words(&older);
    report(
        "echo's summary of 990 messages (the model call)",
        "ms",
        t.elapsed().as_secs_f64() * 1e3,
        None,
    );
    assert!(summary.starts_with("Summary of 990 messages: "));
    g.terminate();
}
