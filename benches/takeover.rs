//! Cluster takeover benchmark: how long after its owner dies (`kill -9`) a session answers
//! again on another node. Two nodes on one real nats-server (tests/nats, pinned), `lease_ms`
//! as given; the session is made on node A (which takes its lease), A is killed, and a client
//! of node B calls `chat.history` on the session until it is served (the calls meanwhile are
//! answered `-32025`, retryable). The figure is the time from the kill to the first served
//! call; the target is under `lease_ms` + 1 s.
//!
//! Run: `cargo bench --bench takeover -- [--rounds N] [--lease-ms MS]` (default 5 rounds of a
//! 2000 ms lease). Prints a Markdown table on stdout and one JSON object per figure on stderr.

#[allow(dead_code)] // the parts of the shared bench code the other benches use
mod common;
#[path = "../tests/gateway/common/nats.rs"]
mod nats;

use std::time::{Duration, Instant};

use serde_json::json;

use common::launcher::Launcher;
use common::median;
use common::ws::RawWs;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rounds = arg("--rounds", 5);
    let lease_ms = arg("--lease-ms", 2000);
    let nats = nats::NatsServer::start();
    let node = |id: &str| {
        Launcher::new()
            .env("RUST_LOG", "error")
            .config(format!(
                "[cluster]\nnats_url = \"{}\"\nnode_id = \"{id}\"\nlease_ms = {lease_ms}\n",
                nats.url()
            ))
            .start()
    };
    let b = node("b");
    let mut on_b = RawWs::connect(b.addr).await;
    let mut times = Vec::new();
    for round in 0..rounds {
        let key = format!("takeover-{round}");
        let mut a = node(&format!("a{round}"));
        let mut on_a = RawWs::connect(a.addr).await;
        let made = on_a
            .call(
                "chat.inject",
                json!({"sessionKey": key, "content": "hello", "role": "system"}),
            )
            .await;
        assert!(made.get("result").is_some(), "{made}");
        a.kill9();
        let killed = Instant::now();
        loop {
            let r = on_b.call("chat.history", json!({"sessionKey": key})).await;
            if r.get("result").is_some() {
                break;
            }
            assert_eq!(r["error"]["code"], -32025, "{r}");
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "never taken over"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ms = killed.elapsed().as_secs_f64() * 1000.0;
        eprintln!(
            "{}",
            json!({"figure": "takeover_ms", "round": round, "ms": ms, "leaseMs": lease_ms})
        );
        times.push(ms);
        drop(a);
    }
    let worst = times.iter().copied().fold(0.0, f64::max);
    println!("| lease_ms | rounds | median takeover (ms) | worst (ms) | target (ms) |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {lease_ms} | {rounds} | {:.0} | {worst:.0} | < {} |",
        median(times.clone()),
        lease_ms + 1000
    );
}
