//! What the benchmark binaries share: starting a server process and waiting for its address,
//! and percentiles.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The gateway binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_clawgate");

/// A server process, stopped with SIGTERM (a graceful shutdown) when dropped.
pub struct Process {
    child: Child,
}

impl Process {
    /// Spawns `cmd` and waits for its first line on stdout (the address it listens on);
    /// returns the process, that line trimmed, and how long it took.
    pub fn spawn_ready(mut cmd: Command) -> (Process, String, Duration) {
        let t0 = Instant::now();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("first line");
        (Process { child }, line.trim().to_string(), t0.elapsed())
    }

    /// The process id.
    #[allow(dead_code)] // not every benchmark reads it
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Starts the gateway on `data_dir` (any free port, no token, room for 30,000 connections)
/// with extra environment; returns it, its `ws://` URL and its time to ready.
pub fn start_gateway(data_dir: &Path, env: &[(&str, String)]) -> (Process, String, Duration) {
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(["--port", "0"])
        .env("RUST_LOG", "error")
        .env("CLAWGATE_GATEWAY__MAX_CONNECTIONS", "30000")
        .env_remove("CLAWGATE_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (process, line, ready) = Process::spawn_ready(cmd);
    let url = line.trim_start_matches("listening on ").to_string();
    (process, url, ready)
}

/// The `p` quantile (0..=1) of already sorted values; NaN when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// The median of unsorted values.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(&v, 0.5)
}
