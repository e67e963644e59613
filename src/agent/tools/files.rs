//! The built-in file tools, `read_file`, `write_file` and `list_dir`: regular files of the
//! workspace only, opened through `confined` (Linux), never the gateway's own state.

use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolFuture, ToolOutput, str_arg};
use crate::agent::providers::ToolSpec;

/// Most bytes a file tool reads or writes.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

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
use super::confined::{list_dir as fs_list, read_file as fs_read, write_file as fs_write};

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

/// `read_file`.
pub(super) struct ReadFile;
impl Tool for ReadFile {
    fn read_only(&self) -> bool {
        true
    }

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

/// `write_file`.
pub(super) struct WriteFile;
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

/// `list_dir`.
pub(super) struct ListDir;
impl Tool for ListDir {
    fn read_only(&self) -> bool {
        true
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::tools::Protected;
    use crate::agent::tools::test_support::ctx;
    use crate::config::ExecMode;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

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
}
