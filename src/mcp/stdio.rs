//! A stdio MCP server: spawned with a confined environment as a process group leader, its
//! stderr logged, every line of its stdout checked (garbage kills the connection, where the SDK
//! would skip it).

use std::process::Stdio;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rmcp::model::ServerJsonRpcMessage;
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio_util::codec::{FramedRead, LinesCodec};

use super::health::Health;

/// The only variables of the gateway's environment a stdio server gets (besides its `env`).
pub const PASSED_ENV: &[&str] = &["PATH", "HOME", "LANG", "TMPDIR"];
/// Longest line a stdio server may write on stdout; a longer one is garbage.
const MAX_LINE: usize = 16 * 1024 * 1024;
/// Longest line of a server's stderr that is logged (the rest of the line is dropped).
const MAX_STDERR_LINE: usize = 8 * 1024;
/// Sends `signal` to the process group led by `pid` (a stdio server is spawned as a leader).
pub fn signal_group(pid: Option<u32>, signal: libc::c_int) {
    let Some(pid) = pid.and_then(|p| libc::pid_t::try_from(p).ok()) else {
        return;
    };
    if pid > 0 {
        // SAFETY: kill(2) has no memory effects; a negative pid names the group `pid` leads.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

/// Spawns a stdio server with only [`PASSED_ENV`] and its own `env`, as a process group leader.
pub fn spawn(
    name: &str,
    command: &[String],
    env: &std::collections::BTreeMap<String, String>,
) -> Result<
    (
        tokio::process::Child,
        tokio::process::ChildStdin,
        tokio::process::ChildStdout,
    ),
    String,
> {
    let Some((program, args)) = command.split_first() else {
        return Err("its command is empty".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env_clear();
    for key in PASSED_ENV {
        if let Some(value) = std::env::var_os(key) {
            cmd.env(key, value);
        }
    }
    cmd.envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err("its pipes could not be opened".into());
    };
    let name = name.to_string();
    tokio::spawn(async move { log_stderr(&name, stderr).await });
    Ok((child, stdin, stdout))
}

/// Logs a server's stderr line by line (each cut at [`MAX_STDERR_LINE`]), reading it to its end
/// so the server never blocks on it.
async fn log_stderr(name: &str, mut stderr: tokio::process::ChildStderr) {
    let mut line: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 8192];
    let emit = |line: &mut Vec<u8>| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        tracing::info!(mcp = %name, "{}", String::from_utf8_lossy(line));
        line.clear();
    };
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&mut line);
            } else if line.len() < MAX_STDERR_LINE {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line);
    }
}

/// What one line of a stdio server's stdout is.
#[derive(Debug)]
pub enum Line {
    /// A message.
    Message(Box<ServerJsonRpcMessage>),
    /// Nothing to act on: a blank line, or a well-formed notification the SDK does not model.
    Skip,
    /// Not a message: the server is broken.
    Garbage(String),
}

/// Classifies one line (without its newline).
pub fn classify(line: &str) -> Line {
    let line = line.strip_prefix('\u{feff}').unwrap_or(line).trim();
    if line.is_empty() {
        return Line::Skip;
    }
    match serde_json::from_str::<ServerJsonRpcMessage>(line) {
        Ok(message) => Line::Message(Box::new(message)),
        Err(e) => match serde_json::from_str::<Value>(line) {
            Ok(v) if v.get("method").is_some() && v.get("id").is_none() => Line::Skip,
            Ok(_) => Line::Garbage(format!("it wrote JSON that is not an MCP message: {e}")),
            Err(e) => Line::Garbage(format!("it wrote a line that is not JSON: {e}")),
        },
    }
}

/// The messages of a stdio server's stdout. Garbage (see [`classify`]), a line longer than
/// [`MAX_LINE`] or a line that is not UTF-8 marks the connection dead and ends the stream; so
/// does the end of the output.
pub fn stdout_messages(
    name: &str,
    stdout: tokio::process::ChildStdout,
    health: Arc<Health>,
) -> impl Stream<Item = ServerJsonRpcMessage> + Send + Unpin + 'static {
    let framed = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE));
    let name = name.to_string();
    Box::pin(futures::stream::unfold(
        (framed, health, name),
        |(mut framed, health, name)| async move {
            loop {
                let why = match framed.next().await {
                    None => "it closed its output (it exited?)".to_string(),
                    Some(Err(e)) => format!("it wrote garbage: {e}"),
                    Some(Ok(line)) => match classify(&line) {
                        Line::Message(message) => return Some((*message, (framed, health, name))),
                        Line::Skip => continue,
                        Line::Garbage(why) => why,
                    },
                };
                tracing::warn!(mcp = %name, reason = %why, "MCP server connection lost");
                health.fail(why);
                return None;
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_messages_skipped_or_garbage() {
        assert!(matches!(
            classify(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#),
            Line::Message(_)
        ));
        assert!(matches!(classify(""), Line::Skip));
        assert!(matches!(classify("  \r"), Line::Skip));
        assert!(matches!(
            classify(
                "\u{feff}{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}"
            ),
            Line::Message(_)
        ));
        assert!(matches!(classify("hello"), Line::Garbage(_)));
        assert!(matches!(classify("{\"half\": "), Line::Garbage(_)));
        assert!(matches!(classify("[1, 2]"), Line::Garbage(_)));
        assert!(matches!(classify("{\"x\": 1}"), Line::Garbage(_)));
    }
}
