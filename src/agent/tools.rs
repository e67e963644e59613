//! Agent tools: the built-in file tools confined to the workspace, and `exec` (off by default).
//!
//! A failing tool returns an error result to the model; it never fails the run. Every tool gets
//! the run's cancellation token; `exec` kills its whole process group on timeout or abort.

use std::future::Future;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::providers::ToolSpec;
use crate::config::ExecMode;

/// Most bytes a file tool reads or writes.
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most bytes `exec` keeps of each of stdout and stderr.
const EXEC_OUTPUT_CAP: usize = 64 * 1024;
/// `exec`'s timeout when the call gives none.
const EXEC_DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// `exec`'s longest timeout.
const EXEC_MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// What a tool gets besides its input.
#[derive(Clone)]
pub struct ToolContext {
    /// The directory file tools are confined to (it exists).
    pub workspace: PathBuf,
    /// Cancelled when the run is aborted.
    pub cancel: CancellationToken,
    /// Whether `exec` may run.
    pub exec: ExecMode,
}

/// A tool's result.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// The text the model sees.
    pub content: String,
    /// Whether the tool failed.
    pub is_error: bool,
}

impl ToolOutput {
    fn ok(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: false,
        }
    }
    fn err(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: true,
        }
    }
}

/// A boxed future.
pub type ToolFuture = Pin<Box<dyn Future<Output = ToolOutput> + Send>>;

/// A tool the agent can call.
pub trait Tool: Send + Sync {
    /// Name, description and input schema.
    fn spec(&self) -> ToolSpec;
    /// `builtin` or `plugin:<name>`.
    fn source(&self) -> String {
        "builtin".into()
    }
    /// Runs the tool.
    fn call(&self, input: Value, ctx: ToolContext) -> ToolFuture;
}

/// The built-in tools.
pub fn builtin() -> Vec<Arc<dyn Tool>> {
    vec![
        Arc::new(ReadFile),
        Arc::new(WriteFile),
        Arc::new(ListDir),
        Arc::new(Exec),
    ]
}

fn str_arg<'a>(input: &'a Value, name: &str) -> Result<&'a str, ToolOutput> {
    input
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ToolOutput::err(format!("missing string argument `{name}`")))
}

/// Resolves `relative` inside `workspace`, refusing anything that leaves it (`..`, absolute
/// paths elsewhere, symlinks pointing out). For a path that does not exist yet, its deepest
/// existing ancestor is checked.
pub fn confine(workspace: &Path, relative: &str) -> Result<PathBuf, String> {
    let root = workspace
        .canonicalize()
        .map_err(|e| format!("the workspace {} is not usable: {e}", workspace.display()))?;
    let requested = Path::new(relative);
    let joined = if requested.is_absolute() {
        requested.to_path_buf()
    } else {
        root.join(requested)
    };
    if requested
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(format!(
            "`{relative}` uses `..`: paths must stay inside the workspace"
        ));
    }
    // Walk up to the deepest existing ancestor and canonicalize it (resolving symlinks).
    let mut existing = joined.clone();
    let mut rest = Vec::new();
    // `symlink_metadata`, not `exists`: a dangling symlink exists and must be resolved (and
    // fail), never treated as a free name whose parent is inside.
    while existing.symlink_metadata().is_err() {
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut resolved = existing
        .canonicalize()
        .map_err(|e| format!("cannot resolve `{relative}`: {e}"))?;
    for name in rest.into_iter().rev() {
        resolved.push(name);
    }
    if !resolved.starts_with(&root) {
        return Err(format!("`{relative}` is outside the workspace"));
    }
    Ok(resolved)
}

struct ReadFile;
impl Tool for ReadFile {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "read_file".into(),
            description: "Reads a UTF-8 text file in the workspace.".into(),
            input_schema: json!({"type": "object", "properties": {"path": {"type": "string", "description": "Path relative to the workspace"}}, "required": ["path"], "additionalProperties": false}),
        }
    }
    fn call(&self, input: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let path = match str_arg(&input, "path") {
                Ok(p) => p,
                Err(e) => return e,
            };
            let target = match confine(&ctx.workspace, path) {
                Ok(t) => t,
                Err(e) => return ToolOutput::err(e),
            };
            match tokio::fs::metadata(&target).await {
                Ok(m) if m.len() > MAX_FILE_BYTES => {
                    return ToolOutput::err(format!(
                        "`{path}` is {} bytes; the limit is {MAX_FILE_BYTES}",
                        m.len()
                    ));
                }
                Ok(m) if !m.is_file() => return ToolOutput::err(format!("`{path}` is not a file")),
                Err(e) => return ToolOutput::err(format!("cannot read `{path}`: {e}")),
                Ok(_) => {}
            }
            match tokio::fs::read(&target).await {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => ToolOutput::ok(text),
                    Err(_) => ToolOutput::err(format!("`{path}` is not UTF-8 text")),
                },
                Err(e) => ToolOutput::err(format!("cannot read `{path}`: {e}")),
            }
        })
    }
}

struct WriteFile;
impl Tool for WriteFile {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "write_file".into(),
            description: "Writes a UTF-8 text file in the workspace, creating parent directories."
                .into(),
            input_schema: json!({"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}, "required": ["path", "content"], "additionalProperties": false}),
        }
    }
    fn call(&self, input: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let (path, content) = match (str_arg(&input, "path"), str_arg(&input, "content")) {
                (Ok(p), Ok(c)) => (p, c),
                (Err(e), _) | (_, Err(e)) => return e,
            };
            if content.len() as u64 > MAX_FILE_BYTES {
                return ToolOutput::err(format!(
                    "content is {} bytes; the limit is {MAX_FILE_BYTES}",
                    content.len()
                ));
            }
            let target = match confine(&ctx.workspace, path) {
                Ok(t) => t,
                Err(e) => return ToolOutput::err(e),
            };
            if let Some(parent) = target.parent()
                && let Err(e) = tokio::fs::create_dir_all(parent).await
            {
                return ToolOutput::err(format!("cannot create the directory of `{path}`: {e}"));
            }
            match tokio::fs::write(&target, content).await {
                Ok(()) => ToolOutput::ok(format!("wrote {} bytes to {path}", content.len())),
                Err(e) => ToolOutput::err(format!("cannot write `{path}`: {e}")),
            }
        })
    }
}

struct ListDir;
impl Tool for ListDir {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "list_dir".into(),
            description: "Lists a directory of the workspace (directories end with /).".into(),
            input_schema: json!({"type": "object", "properties": {"path": {"type": "string", "description": "Default: the workspace itself"}}, "additionalProperties": false}),
        }
    }
    fn call(&self, input: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let path = input.get("path").and_then(Value::as_str).unwrap_or(".");
            let target = match confine(&ctx.workspace, path) {
                Ok(t) => t,
                Err(e) => return ToolOutput::err(e),
            };
            let mut dir = match tokio::fs::read_dir(&target).await {
                Ok(d) => d,
                Err(e) => return ToolOutput::err(format!("cannot list `{path}`: {e}")),
            };
            let mut names = Vec::new();
            while let Ok(Some(entry)) = dir.next_entry().await {
                let mut name = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                    name.push('/');
                }
                names.push(name);
                if names.len() >= 10_000 {
                    break;
                }
            }
            names.sort();
            ToolOutput::ok(names.join("\n"))
        })
    }
}

struct Exec;
impl Tool for Exec {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: "exec".into(),
            description:
                "Runs a shell command in the workspace (only when agent.tools.exec = \"on\")."
                    .into(),
            input_schema: json!({"type": "object", "properties": {"command": {"type": "string"}, "timeoutMs": {"type": "integer", "minimum": 1, "maximum": 600000}}, "required": ["command"], "additionalProperties": false}),
        }
    }
    fn call(&self, input: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            if ctx.exec != ExecMode::On {
                return ToolOutput::err(
                    "exec is off: set agent.tools.exec = \"on\" in the config to allow it",
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

async fn run_exec(command: &str, ctx: &ToolContext, timeout: Duration) -> ToolOutput {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .current_dir(&ctx.workspace)
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
                kill_group(pid);
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
            kill_group(pid);
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
            kill_group(pid);
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

    fn ctx(dir: &Path, exec: ExecMode) -> ToolContext {
        ToolContext {
            workspace: dir.to_path_buf(),
            cancel: CancellationToken::new(),
            exec,
        }
    }

    #[tokio::test]
    async fn file_tools_stay_inside_the_workspace() {
        let root = tempfile::tempdir().expect("tempdir");
        let ws = root.path().join("ws");
        std::fs::create_dir_all(&ws).expect("mkdir");
        std::fs::write(root.path().join("secret"), "s").expect("write");
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.path(), ws.join("escape")).expect("symlink");
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.path().join("planted"), ws.join("dangling"))
            .expect("symlink");
        let c = ctx(&ws, ExecMode::Off);
        let w = WriteFile
            .call(json!({"path": "a/b.txt", "content": "hi"}), c.clone())
            .await;
        assert!(!w.is_error, "{w:?}");
        assert_eq!(
            ReadFile.call(json!({"path": "a/b.txt"}), c.clone()).await,
            ToolOutput::ok("hi")
        );
        for bad in [
            "../secret",
            "/etc/passwd",
            "escape/secret",
            "a/../../secret",
        ] {
            let r = ReadFile.call(json!({"path": bad}), c.clone()).await;
            assert!(r.is_error, "{bad}: {r:?}");
            let w = WriteFile
                .call(json!({"path": bad, "content": "x"}), c.clone())
                .await;
            assert!(w.is_error, "{bad}: {w:?}");
        }
        assert_eq!(
            std::fs::read_to_string(root.path().join("secret")).expect("read"),
            "s"
        );
        let l = ListDir.call(json!({}), c.clone()).await;
        assert!(l.content.contains("a/"), "{l:?}");
        let r = ReadFile.call(json!({}), c).await;
        assert!(r.is_error);
    }

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
}
