//! The built-in `exec` tool (off unless `tools.exec` is `"on"` or `"ask"`): a shell command in the
//! workspace, its output capped, killed with everything it started (its process group and any
//! process carrying its marker) when it times out, when the run is aborted, or when its future
//! is dropped.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::{Tool, ToolContext, ToolFuture, ToolOutput, str_arg};
use crate::agent::providers::ToolSpec;
use crate::config::ExecMode;

/// Most bytes `exec` keeps of each of stdout and stderr.
const EXEC_OUTPUT_CAP: usize = 64 * 1024;
/// `exec`'s timeout when the call gives none.
const EXEC_DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `exec`'s longest timeout.
const EXEC_MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// `exec`.
pub(super) struct Exec;
impl Tool for Exec {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "exec".into(),
            description:
                "Runs a shell command in the workspace (when tools.exec is \"on\", or \"ask\" and a person allows it)."
                    .into(),
            input_schema: json!({"type": "object", "properties": {"command": {"type": "string"}, "timeoutMs": {"type": "integer", "minimum": 1, "maximum": 600000}}, "required": ["command"], "additionalProperties": false}),
        }
    }
    fn call(&self, input: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            if ctx.exec == ExecMode::Off {
                return ToolOutput::err(
                    "exec is off: set tools.exec = \"on\" (or \"ask\") for this agent in the config to allow it",
                );
            }
            let command = match str_arg(&input, "command") {
                Ok(c) => c.to_string(),
                Err(e) => return e,
            };
            let timeout = input
                .get("timeoutMs")
                .and_then(Value::as_u64)
                .map(Duration::from_millis)
                .unwrap_or(EXEC_DEFAULT_TIMEOUT)
                .min(EXEC_MAX_TIMEOUT);
            run_exec(&command, &ctx, timeout).await
        })
    }
}

/// The environment variable that marks every process an `exec` call started, so that the ones
/// that left its process group (`setsid`, double forks) are found and killed too.
pub const EXEC_MARKER_VAR: &str = "CLAWGATE_EXEC_ID";

/// Kills what one `exec` call started, when it ends or when its future is dropped (the run
/// loop drops a tool that does not stop after an abort).
struct Reaper {
    pid: Option<u32>,
    marker: String,
    done: bool,
}

impl Reaper {
    /// Kills the process group, then every process carrying the marker, and waits for that.
    async fn reap(&mut self) {
        self.done = true;
        kill_group(self.pid);
        let marker = self.marker.clone();
        let _ = tokio::task::spawn_blocking(move || kill_marked(&marker)).await;
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        kill_group(self.pid);
        let marker = std::mem::take(&mut self.marker);
        // Not on an async thread: the scan reads /proc.
        let _ = std::thread::Builder::new()
            .name("exec-reaper".into())
            .spawn(move || kill_marked(&marker));
    }
}

/// SIGKILLs every process whose environment holds `marker` (`NAME=value`), pass after pass until
/// a pass finds none (a process may fork while it is being killed), at most 50 passes.
fn kill_marked(marker: &str) {
    #[cfg(target_os = "linux")]
    {
        let needle = marker.as_bytes();
        let me = std::process::id();
        for _ in 0..50 {
            let mut found = 0;
            let Ok(dir) = std::fs::read_dir("/proc") else {
                return;
            };
            for entry in dir.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if pid == me {
                    continue;
                }
                // A zombie's (or a vanished process's) environment reads empty or fails.
                let Ok(env) = std::fs::read(entry.path().join("environ")) else {
                    continue;
                };
                if env.split(|b| *b == 0).any(|var| var == needle)
                    && let Ok(pid) = i32::try_from(pid)
                {
                    // SAFETY: kill(2) signals one process; no memory is involved.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                    }
                    found += 1;
                }
            }
            if found == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = marker;
}

async fn run_exec(command: &str, ctx: &ToolContext, timeout: Duration) -> ToolOutput {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(&ctx.workspace)
        .env(EXEC_MARKER_VAR, &id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return ToolOutput::err(format!("cannot start the command: {e}")),
    };
    let pid = child.id();
    let mut reaper = Reaper {
        pid,
        marker: format!("{EXEC_MARKER_VAR}={id}"),
        done: false,
    };
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let read_out = async move {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s
                .take(EXEC_OUTPUT_CAP as u64 + 1)
                .read_to_end(&mut buf)
                .await;
        }
        buf
    };
    let read_err = async move {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s
                .take(EXEC_OUTPUT_CAP as u64 + 1)
                .read_to_end(&mut buf)
                .await;
        }
        buf
    };
    let readers = tokio::spawn(async move { tokio::join!(read_out, read_err) });
    let status = tokio::select! {
        r = child.wait() => Some(r),
        _ = tokio::time::sleep(timeout) => None,
        _ = ctx.cancel.cancelled() => None,
    };
    // A background child may keep the pipes open after the command exited: read for a moment
    // more, then kill the group and take what arrived.
    let outcome = match status {
        Some(status) => {
            let abort = readers.abort_handle();
            let read = tokio::time::timeout(Duration::from_secs(1), readers).await;
            if read.is_err() {
                reaper.reap().await;
                abort.abort();
            }
            let (out, err) = match read {
                Ok(Ok(pair)) => pair,
                _ => (Vec::new(), Vec::new()),
            };
            Some((status, out, err))
        }
        None => {
            readers.abort();
            None
        }
    };
    match outcome {
        Some((status, out, err)) => {
            let code = status
                .as_ref()
                .map(|s| {
                    s.code()
                        .map_or_else(|| "killed by a signal".to_string(), |c| c.to_string())
                })
                .unwrap_or_else(|e| e.to_string());
            reaper.reap().await;
            let mut text = format!("exit code: {code}\n");
            text.push_str(&clip("stdout", &out));
            text.push_str(&clip("stderr", &err));
            let failed = !matches!(status.as_ref().map(|s| s.success()), Ok(true));
            ToolOutput {
                content: text,
                is_error: failed,
            }
        }
        None => {
            reaper.reap().await;
            if ctx.cancel.is_cancelled() {
                ToolOutput::err("aborted: the command was killed")
            } else {
                ToolOutput::err(format!(
                    "timed out after {} ms: the command was killed",
                    timeout.as_millis()
                ))
            }
        }
    }
}

fn clip(name: &str, bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return String::new();
    }
    let cut = bytes.len() > EXEC_OUTPUT_CAP;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXEC_OUTPUT_CAP)]);
    let mut out = format!("{name}:\n{text}");
    if cut {
        out.push_str(&format!("\n[{name} cut at {EXEC_OUTPUT_CAP} bytes]"));
    }
    out.push('\n');
    out
}

/// Kills the process group led by `pid` (the command and everything it started).
fn kill_group(pid: Option<u32>) {
    #[cfg(unix)]
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok())
        && pid > 0
    {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    #[cfg(not(unix))]
    let _ = pid;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::tools::test_support::ctx;
    use std::path::Path;

    #[tokio::test]
    async fn exec_is_off_by_default_and_killed_on_timeout_and_abort() {
        let root = tempfile::tempdir().expect("tempdir");
        let off = Exec
            .call(
                json!({"command": "echo hi"}),
                ctx(root.path(), ExecMode::Off),
            )
            .await;
        assert!(off.is_error && off.content.contains("exec is off"));
        let ok = Exec
            .call(
                json!({"command": "echo hi; echo err >&2"}),
                ctx(root.path(), ExecMode::On),
            )
            .await;
        assert!(
            !ok.is_error && ok.content.contains("hi") && ok.content.contains("err"),
            "{ok:?}"
        );
        let fail = Exec
            .call(json!({"command": "exit 3"}), ctx(root.path(), ExecMode::On))
            .await;
        assert!(
            fail.is_error && fail.content.contains("exit code: 3"),
            "{fail:?}"
        );
        // A child of the shell must die with it: it would write the marker after 2 s.
        let marker = root.path().join("marker");
        let cmd = format!("(sleep 2; touch {}) & sleep 30", marker.display());
        let started = std::time::Instant::now();
        let t = Exec
            .call(
                json!({"command": cmd, "timeoutMs": 200}),
                ctx(root.path(), ExecMode::On),
            )
            .await;
        assert!(t.is_error && t.content.contains("timed out"), "{t:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let c = ctx(root.path(), ExecMode::On);
        let cancel = c.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            cancel.cancel();
        });
        let a = Exec
            .call(
                json!({"command": format!("(sleep 2; touch {}) & sleep 30", marker.display())}),
                c,
            )
            .await;
        assert!(a.is_error && a.content.contains("aborted"), "{a:?}");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "the process group was killed");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn exec_kills_children_that_left_the_process_group() {
        let root = tempfile::tempdir().expect("tempdir");
        let marker = root.path().join("marker");
        let cmd = format!(
            "setsid sh -c 'sleep 2; touch {m}' & (setsid sh -c '(sleep 2; touch {m}2) &' &) ; sleep 30",
            m = marker.display()
        );
        let c = ctx(root.path(), ExecMode::On);
        let cancel = c.cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            cancel.cancel();
        });
        let a = Exec.call(json!({"command": cmd}), c).await;
        assert!(a.is_error && a.content.contains("aborted"), "{a:?}");
        // And when the command ends by itself, leaving a setsid child behind.
        let quick = format!(
            "setsid sh -c 'sleep 2; touch {}3' >/dev/null 2>&1 &",
            marker.display()
        );
        let q = Exec
            .call(json!({"command": quick}), ctx(root.path(), ExecMode::On))
            .await;
        assert!(!q.is_error, "{q:?}");
        tokio::time::sleep(Duration::from_millis(3000)).await;
        for suffix in ["", "2", "3"] {
            let m = format!("{}{suffix}", marker.display());
            assert!(!Path::new(&m).exists(), "{m}: a setsid child survived");
        }
    }
}
