//! The gateway's own cost of an MCP tool call over stdio: sequential `echo` calls to
//! tests/mcp/rogue.mjs through the MCP manager (what a run does), against the same calls
//! written straight to a second copy of the server's pipe (its own time plus the pipe).
//!
//! Needs the MCP test servers (`bash tests/mcp/install.sh`). Run:
//! `cargo bench --bench mcp -- [--calls N] [--rounds R]`.

#[allow(dead_code)] // the launcher and the WebSocket client are for the other benches
#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clawgate::agent::tools::{Protected, ToolContext};
use clawgate::config::{ExecMode, McpServerConfig};
use clawgate::mcp::{McpManager, McpState};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use common::percentile;

fn rogue() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/rogue.mjs");
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/mcp/node_modules")
            .exists(),
        "the MCP test servers are not installed: run tests/mcp/install.sh"
    );
    path
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Per-call microseconds of `calls` sequential calls through the manager.
async fn through_manager(calls: usize) -> Vec<f64> {
    let mcp = McpManager::new(|_| {});
    let config = McpServerConfig {
        command: Some(vec!["node".into(), rogue().display().to_string()]),
        url: None,
        env: BTreeMap::new(),
        headers: BTreeMap::new(),
        enabled: true,
        timeout_ms: 20_000,
    };
    mcp.apply(&BTreeMap::from([("rogue".to_string(), config)]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mcp
        .list()
        .iter()
        .any(|s| s.state == McpState::Running && !s.tools.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "rogue never ran: {:?}",
            mcp.list()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let echo = mcp
        .tools(None)
        .into_iter()
        .find(|t| t.spec().name == "rogue__echo")
        .expect("rogue__echo");
    let ctx = ToolContext {
        workspace: PathBuf::from("."),
        cancel: CancellationToken::new(),
        exec: ExecMode::Off,
        protected: Arc::new(Protected::default()),
    };
    let mut out = Vec::with_capacity(calls);
    for i in 0..calls + 50 {
        let t0 = Instant::now();
        let r = echo.call(json!({"text": i.to_string()}), ctx.clone()).await;
        assert_eq!(r.content, i.to_string(), "{r:?}");
        if i >= 50 {
            out.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    mcp.shutdown().await;
    out
}

/// Per-call microseconds of the same calls written straight to the server's stdin.
fn raw_pipe(calls: usize) -> Vec<f64> {
    let mut child = Command::new("node")
        .arg(rogue())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let mut ask = |msg: Value, answer: bool, line: &mut String| {
        writeln!(stdin, "{msg}").expect("write");
        stdin.flush().expect("flush");
        if answer {
            line.clear();
            stdout.read_line(line).expect("read");
        }
    };
    ask(
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}}),
        true,
        &mut line,
    );
    ask(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        false,
        &mut line,
    );
    let mut out = Vec::with_capacity(calls);
    for i in 0..calls + 50 {
        let t0 = Instant::now();
        ask(
            json!({"jsonrpc": "2.0", "id": i + 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": i.to_string()}}}),
            true,
            &mut line,
        );
        assert!(line.contains(&format!("\"text\":\"{i}\"")), "{line}");
        if i >= 50 {
            out.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    out
}

fn main() {
    let calls = arg("--calls", 1000);
    let rounds = arg("--rounds", 3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("| round | path | p50 µs | p90 µs | p99 µs |");
    println!("|---|---|---|---|---|");
    let mut added = Vec::new();
    for round in 0..rounds {
        let mut raw = raw_pipe(calls);
        let mut managed = runtime.block_on(through_manager(calls));
        raw.sort_by(f64::total_cmp);
        managed.sort_by(f64::total_cmp);
        for (name, v) in [("raw pipe", &raw), ("manager", &managed)] {
            println!(
                "| {round} | {name} | {:.0} | {:.0} | {:.0} |",
                percentile(v, 0.5),
                percentile(v, 0.9),
                percentile(v, 0.99)
            );
        }
        added.push(percentile(&managed, 0.5) - percentile(&raw, 0.5));
    }
    let added = common::median(added);
    println!("gateway's own cost per stdio call (p50, median of rounds): {added:.0} µs");
    println!(
        "{}",
        json!({"figure": "mcp stdio added p50", "scenario": "mcp", "unit": "us", "value": added})
    );
}
