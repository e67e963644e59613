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

mod exec;
mod files;
mod workspace;

pub use exec::EXEC_MARKER_VAR;
pub use workspace::{Protected, WorkspaceHost, warn_about_workspace, workspace_warning};

use exec::Exec;
use files::{ListDir, ReadFile, WriteFile};

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::providers::ToolSpec;
use crate::config::ExecMode;

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
    /// Whether it changes nothing (`read_file`, `list_dir`, an MCP tool with `readOnlyHint`):
    /// such a call is run again after a restart; any other is marked started before it runs
    /// and never run twice.
    fn read_only(&self) -> bool {
        false
    }
    /// Runs the tool.
    fn call(&self, input: Value, ctx: ToolContext) -> ToolFuture;
}

/// The first `max` bytes of the workspace file `requested`, confined exactly as the file tools
/// are, and whether it holds more; `Ok(None)` when there is no such file.
pub fn read_workspace_prefix(
    workspace: &std::path::Path,
    protected: &Protected,
    requested: &str,
    max: u64,
) -> Result<Option<(Vec<u8>, bool)>, String> {
    let full = workspace.join(requested);
    if std::fs::symlink_metadata(&full).is_err() {
        return Ok(None);
    }
    confined::read_prefix(workspace, protected, requested, max).map(Some)
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

/// The string argument `name` of `input`, or the error result saying it is missing.
fn str_arg<'a>(input: &'a Value, name: &str) -> Result<&'a str, ToolOutput> {
    input
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| ToolOutput::err(format!("missing string argument `{name}`")))
}

#[cfg(test)]
pub(super) mod test_support {
    //! What the tools' tests share.

    use super::*;

    /// A context confined to `dir`, with `exec` as given and nothing protected.
    pub(crate) fn ctx(dir: &std::path::Path, exec: ExecMode) -> ToolContext {
        ToolContext {
            workspace: dir.to_path_buf(),
            cancel: CancellationToken::new(),
            exec,
            protected: Arc::new(Protected::default()),
        }
    }
}
