//! What the benchmark binaries share: the tests' launcher of the gateway binary and their
//! WebSocket client (included from `tests/gateway/common/`, so there is one of each), and
//! percentiles.

#[path = "../../tests/gateway/common/launcher.rs"]
pub mod launcher;
#[path = "../../tests/gateway/common/ws.rs"]
pub mod ws;

use std::path::Path;

use launcher::Launcher;

/// The gateway on `data_dir` as the benchmarks run it: any free port, no token, errors only in
/// its log, room for 30,000 connections.
pub fn gateway(data_dir: &Path) -> Launcher {
    Launcher::on(data_dir)
        .env("RUST_LOG", "error")
        .env("CLAWGATE_GATEWAY__MAX_CONNECTIONS", "30000")
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
