//! Agent tools: the built-in file tools confined to the workspace, and `exec` (off by default).
//!
//! A failing tool returns an error result to the model; it never fails the run. Every tool gets
//! the run's cancellation token; `exec` kills its whole process group on timeout or abort.
//!
//! The file tools open every path relative to a handle of the workspace, one component at a
//! time and never following a symlink out (see `confined`), only ever touch regular files, and
//! refuse the gateway's own data directory and configuration file ([`Protected`]).

#[cfg(target_os = "linux")]
mod confined;

use std::future::Future;
use std::path::{Path, PathBuf};
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
    /// What the file tools refuse wherever the workspace is.
    pub protected: Arc<Protected>,
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

/// The gateway's own state, which the file tools refuse wherever the workspace is: writing the
/// configuration file would change the gateway through its hot reload (turning `exec` on, say),
/// and the data directory holds every session's transcript.
#[derive(Debug, Clone, Default)]
pub struct Protected {
    /// The data directory; it and everything under it are refused (empty: none).
    pub data_dir: PathBuf,
    /// The configuration file; refused by identity and, in its directory, by name (empty:
    /// none).
    pub config_file: PathBuf,
}

/// Runs the blocking file operation `f` off the async threads.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(format!("{what} failed: {e}")))
}

#[cfg(target_os = "linux")]
use confined::{list_dir as fs_list, read_file as fs_read, write_file as fs_write};

#[cfg(not(target_os = "linux"))]
mod unsupported {
    use crate::agent::tools::Protected;
    use std::path::Path;
    const WHY: &str = "the file tools need Linux (openat2) to stay inside the workspace";
    pub(super) struct Entry {
        pub name: String,
        pub is_dir: bool,
        pub refused: Option<&'static str>,
    }
    pub(super) fn fs_read(_: &Path, _: &Protected, _: &str, _: u64) -> Result<Vec<u8>, String> {
        Err(WHY.into())
    }
    pub(super) fn fs_write(_: &Path, _: &Protected, _: &str, _: &[u8]) -> Result<(), String> {
        Err(WHY.into())
    }
    pub(super) fn fs_list(
        _: &Path,
        _: &Protected,
        _: &str,
        _: usize,
    ) -> Result<Vec<Entry>, String> {
        Err(WHY.into())
    }
}
#[cfg(not(target_os = "linux"))]
use unsupported::{fs_list, fs_read, fs_write};

/// A warning when `workspace` exposes the gateway's own state to the agent: it contains the
/// data directory or the configuration file (the file tools refuse them, but `exec` and other
/// tools can reach them), or it lies inside the data directory without being
/// `<dataDir>/workspace` (the file tools then refuse it entirely).
pub fn workspace_warning(workspace: &Path, data_dir: &Path, config_file: &Path) -> Option<String> {
    let canonical = |p: &Path| -> PathBuf {
        p.canonicalize().unwrap_or_else(|_| {
            // A file that does not exist yet: its directory, canonical, and its name.
            match (
                p.parent().and_then(|d| d.canonicalize().ok()),
                p.file_name(),
            ) {
                (Some(dir), Some(name)) => dir.join(name),
                _ => p.to_path_buf(),
            }
        })
    };
    let (ws, data, config) = (
        canonical(workspace),
        canonical(data_dir),
        canonical(config_file),
    );
    let mut found = Vec::new();
    if data.starts_with(&ws) {
        found.push(format!("the data directory {}", data.display()));
    }
    if config.starts_with(&ws) && !config.starts_with(&data) {
        found.push(format!("the configuration file {}", config.display()));
    }
    if !found.is_empty() {
        return Some(format!(
            "the agent workspace {} contains {}: the file tools refuse it, but exec (when on) \
             and plugins can still reach it; set agent.workspace to a directory outside it",
            ws.display(),
            found.join(" and ")
        ));
    }
    if ws.starts_with(&data) && ws != data.join("workspace") {
        return Some(format!(
            "the agent workspace {} lies inside the data directory {}: the file tools refuse \
             it; set agent.workspace to <dataDir>/workspace or a directory outside the data \
             directory",
            ws.display(),
            data.display()
        ));
    }
    None
}

/// What [`warn_about_workspace`] reads from the application; every
/// [`AgentHost`](crate::agent::AgentHost) is one.
pub trait WorkspaceHost {
    /// The configuration in force.
    fn config(&self) -> Arc<crate::config::Config>;
    /// The data directory.
    fn data_dir(&self) -> &PathBuf;
    /// The config file.
    fn config_path(&self) -> &PathBuf;
}

/// Logs [`workspace_warning`] for the gateway's configured workspace (called at start).
pub fn warn_about_workspace(gw: &impl WorkspaceHost) {
    let config = gw.config();
    let workspace = config
        .agent
        .workspace
        .clone()
        .unwrap_or_else(|| gw.data_dir().join("workspace"));
    if let Some(warning) = workspace_warning(&workspace, gw.data_dir(), gw.config_path()) {
        tracing::warn!("{warning}");
    }
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
            let (workspace, protected, requested) = (
                ctx.workspace.clone(),
                ctx.protected.clone(),
                path.to_string(),
            );
            let read = blocking("read_file", move || {
                fs_read(&workspace, &protected, &requested, MAX_FILE_BYTES)
            })
            .await;
            match read {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => ToolOutput::ok(text),
                    Err(_) => ToolOutput::err(format!("`{path}` is not UTF-8 text")),
                },
                Err(e) => ToolOutput::err(e),
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
            let (workspace, protected, requested, bytes) = (
                ctx.workspace.clone(),
                ctx.protected.clone(),
                path.to_string(),
                content.as_bytes().to_vec(),
            );
            let written = blocking("write_file", move || {
                fs_write(&workspace, &protected, &requested, &bytes)
            })
            .await;
            match written {
                Ok(()) => ToolOutput::ok(format!("wrote {} bytes to {path}", content.len())),
                Err(e) => ToolOutput::err(e),
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
            let (workspace, protected, requested) = (
                ctx.workspace.clone(),
                ctx.protected.clone(),
                path.to_string(),
            );
            let listed = blocking("list_dir", move || {
                fs_list(&workspace, &protected, &requested, 10_000)
            })
            .await;
            let entries = match listed {
                Ok(e) => e,
                Err(e) => return ToolOutput::err(e),
            };
            let mut names: Vec<String> = entries
                .into_iter()
                .map(|e| {
                    let mut name = e.name;
                    if e.is_dir {
                        name.push('/');
                    }
                    if let Some(why) = e.refused {
                        name.push_str(&format!(" [refused: {why}]"));
                    }
                    name
                })
                .collect();
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
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;

    fn ctx(dir: &Path, exec: ExecMode) -> ToolContext {
        ToolContext {
            workspace: dir.to_path_buf(),
            cancel: CancellationToken::new(),
            exec,
            protected: Arc::new(Protected::default()),
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

    fn guarded(ws: &Path, data_dir: &Path, config_file: &Path) -> ToolContext {
        ToolContext {
            protected: Arc::new(Protected {
                data_dir: data_dir.to_path_buf(),
                config_file: config_file.to_path_buf(),
            }),
            ..ctx(ws, ExecMode::Off)
        }
    }

    async fn write(c: &ToolContext, path: &str, content: &str) -> ToolOutput {
        WriteFile
            .call(json!({"path": path, "content": content}), c.clone())
            .await
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn file_tools_refuse_the_data_dir_and_the_config_file() {
        let home = tempfile::tempdir().expect("tempdir");
        let ws = home.path();
        let data = ws.join(".clawgate");
        std::fs::create_dir_all(data.join("sessions")).expect("mkdir");
        std::fs::create_dir_all(data.join("workspace")).expect("mkdir");
        let config = data.join("clawgate.toml");
        std::fs::write(&config, "[agent.tools]\nexec = \"off\"\n").expect("write");
        std::fs::write(data.join("sessions/s.jsonl"), "{}\n").expect("write");
        std::os::unix::fs::symlink(".clawgate/clawgate.toml", ws.join("cfg")).expect("symlink");
        std::os::unix::fs::symlink(".clawgate/sessions", ws.join("ss")).expect("symlink");
        std::fs::hard_link(&config, ws.join("hard.toml")).expect("hard link");
        let c = guarded(ws, &data, &config);
        for bad in [
            ".clawgate/clawgate.toml",
            ".clawgate/sessions/s.jsonl",
            ".clawgate/new/x.txt",
            "./.clawgate/x",
            "cfg",
            "ss/s.jsonl",
            "hard.toml",
        ] {
            let w = write(&c, bad, "[agent.tools]\nexec = \"on\"\n").await;
            assert!(w.is_error && w.content.contains("refused"), "{bad}: {w:?}");
            let r = ReadFile.call(json!({"path": bad}), c.clone()).await;
            assert!(r.is_error && r.content.contains("refused"), "{bad}: {r:?}");
        }
        for bad in [".clawgate", ".clawgate/sessions", "ss", "cfg/.."] {
            let l = ListDir.call(json!({"path": bad}), c.clone()).await;
            assert!(l.is_error, "{bad}: {l:?}");
        }
        assert_eq!(
            std::fs::read_to_string(&config).expect("read"),
            "[agent.tools]\nexec = \"off\"\n"
        );
        assert!(!data.join("new").exists(), "no directory made inside");
        let l = ListDir.call(json!({}), c.clone()).await;
        assert!(!l.is_error, "{l:?}");
        assert!(
            l.content
                .lines()
                .any(|n| n == ".clawgate/ [refused: the gateway's data directory]"),
            "{l:?}"
        );
        // The rest of the workspace works as before.
        assert!(!write(&c, "notes/a.txt", "hi").await.is_error);

        // A config file outside the data directory, not there yet: not creatable by name.
        let outside_config = ws.join("gateway.toml");
        let c = guarded(ws, &data, &outside_config);
        let w = write(&c, "gateway.toml", "x").await;
        assert!(
            w.is_error && w.content.contains("configuration file"),
            "{w:?}"
        );
        assert!(!outside_config.exists());

        // The workspace may not be the data directory or inside it, except the default.
        let w = write(&guarded(&data, &data, &config), "x.txt", "x").await;
        assert!(w.is_error && w.content.contains("data directory"), "{w:?}");
        let sessions = data.join("sessions");
        let r = ReadFile
            .call(
                json!({"path": "s.jsonl"}),
                guarded(&sessions, &data, &config),
            )
            .await;
        assert!(r.is_error && r.content.contains("data directory"), "{r:?}");
        let default = data.join("workspace");
        let w = write(&guarded(&default, &data, &config), "x.txt", "x").await;
        assert!(!w.is_error, "{w:?}");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn relative_symlinks_inside_work_and_others_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let ws = root.path().join("ws");
        std::fs::create_dir_all(ws.join("sub/deep")).expect("mkdir");
        std::fs::create_dir_all(ws.join("other")).expect("mkdir");
        std::fs::write(ws.join("other/f.txt"), "other").expect("write");
        std::fs::write(root.path().join("secret"), "s").expect("write");
        let link = |target: &str, at: &str| {
            std::os::unix::fs::symlink(target, ws.join(at)).expect("symlink");
        };
        link("sub", "to_sub");
        link("../../other/f.txt", "sub/deep/up");
        link("../../../secret", "sub/deep/out");
        link("../../..", "sub/deep/top");
        link("missing.txt", "sub/dangling");
        let c = ctx(&ws, ExecMode::Off);
        assert!(!write(&c, "to_sub/deep/a.txt", "a").await.is_error);
        assert_eq!(
            std::fs::read_to_string(ws.join("sub/deep/a.txt")).expect("read"),
            "a"
        );
        assert_eq!(
            ReadFile
                .call(json!({"path": "to_sub/deep/up"}), c.clone())
                .await,
            ToolOutput::ok("other")
        );
        // A dangling relative symlink inside: writing creates its target, inside.
        assert!(!write(&c, "sub/dangling", "m").await.is_error);
        assert!(ws.join("sub/missing.txt").exists());
        for bad in ["sub/deep/out", "sub/deep/top/secret"] {
            let r = ReadFile.call(json!({"path": bad}), c.clone()).await;
            assert!(r.is_error && r.content.contains("outside"), "{bad}: {r:?}");
            assert!(write(&c, bad, "x").await.is_error, "{bad}");
        }
        assert_eq!(
            std::fs::read_to_string(root.path().join("secret")).expect("read"),
            "s"
        );
        let abs = ws.join("other/f.txt");
        let r = ReadFile
            .call(json!({"path": abs.to_string_lossy()}), c.clone())
            .await;
        assert_eq!(r, ToolOutput::ok("other"), "an absolute path inside");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn write_file_refuses_a_fifo_without_blocking_or_truncating() {
        let root = tempfile::tempdir().expect("tempdir");
        let fifo = root.path().join("pipe");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("cstring");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        std::fs::create_dir(root.path().join("dir")).expect("mkdir");
        let c = ctx(root.path(), ExecMode::Off);
        let bound = Duration::from_secs(10);
        let w = tokio::time::timeout(bound, write(&c, "pipe", "x"))
            .await
            .expect("write_file to a FIFO returns (it used to block forever)");
        assert!(w.is_error && w.content.contains("FIFO"), "{w:?}");
        let r = tokio::time::timeout(bound, ReadFile.call(json!({"path": "pipe"}), c.clone()))
            .await
            .expect("read_file of a FIFO returns");
        assert!(r.is_error && r.content.contains("FIFO"), "{r:?}");
        // With a reader holding it open, the open succeeds: still refused, nothing written.
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .expect("open the FIFO");
        let w = tokio::time::timeout(bound, write(&c, "pipe", "x"))
            .await
            .expect("returns");
        assert!(w.is_error && w.content.contains("FIFO"), "{w:?}");
        drop(reader);
        let w = write(&c, "dir", "x").await;
        assert!(w.is_error && w.content.contains("directory"), "{w:?}");
        let l = ListDir.call(json!({"path": "pipe"}), c.clone()).await;
        assert!(l.is_error, "{l:?}");
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

    #[test]
    fn the_start_warns_when_the_workspace_holds_the_gateway_state() {
        let home = tempfile::tempdir().expect("tempdir");
        let data = home.path().join(".clawgate");
        std::fs::create_dir_all(data.join("workspace")).expect("mkdir");
        let config = data.join("clawgate.toml");
        let w = workspace_warning(home.path(), &data, &config).expect("a warning");
        assert!(w.contains("data directory"), "{w}");
        let outside = home.path().join("clawgate.toml");
        let w = workspace_warning(&data.join("workspace"), &data, &outside);
        assert!(w.is_none(), "{w:?}");
        let w = workspace_warning(home.path(), &home.path().join("elsewhere"), &outside)
            .expect("a warning");
        assert!(w.contains("configuration file"), "{w}");
        let w = workspace_warning(&data, &data, &config).expect("a warning");
        assert!(w.contains("data directory"), "{w}");
        std::fs::create_dir_all(data.join("sessions")).expect("mkdir");
        let w = workspace_warning(&data.join("sessions"), &data, &config).expect("a warning");
        assert!(w.contains("inside the data directory"), "{w}");
    }
}
