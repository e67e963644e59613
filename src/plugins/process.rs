//! Out-of-process plugins: a supervisor per plugin, JSON-RPC over stdin/stdout (one message per
//! line), calls forwarded with a timeout, restarts with backoff.
//!
//! Over 600 lines because it is one plugin process's whole protocol, read top to bottom: the
//! supervisor, the connection its calls and answers share, the line reader, and the
//! `plugin.describe` answer turned into methods, tools and events over that same connection.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{Contribution, PluginHost, PluginState, check_collisions};
use crate::agent::providers::ToolSpec;
use crate::agent::tools::{Tool, ToolContext, ToolFuture, ToolOutput};
use crate::config::PluginConfig;
use crate::error::Error;

use super::error::{PluginError, Refusal};
use crate::rpc::MethodDescriptor;
use crate::rpc::{EventDecl, Example, MethodKind, Scope};

/// How long a forwarded call may take before the plugin counts as hung.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `plugin.describe` may take.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest line of a plugin's stderr that is logged; the rest of a longer line is discarded.
const MAX_STDERR_LINE: usize = 8 * 1024;
/// Capacity a line buffer keeps between lines (a bigger one is given back after its line).
const KEEP_CAPACITY: usize = 64 * 1024;

/// A supervised plugin.
pub struct Handle {
    /// The configuration it runs with.
    pub config: PluginConfig,
    stop: CancellationToken,
}

impl Handle {
    /// Stops the plugin (its process is killed).
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

fn unavailable(plugin: &str, why: &str) -> PluginError {
    PluginError::Unavailable {
        plugin: plugin.to_string(),
        why: why.to_string(),
    }
}

/// A live plugin process: write requests, await answers.
pub struct Conn {
    name: String,
    stdin: tokio::sync::Mutex<tokio::process::ChildStdin>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, PluginError>>>>,
    next_id: AtomicU64,
    /// Cancelled when the process is gone or must go (crash, garbage, hang).
    dead: CancellationToken,
}

impl Conn {
    /// Calls `method` on the plugin; `-32025` if it dies, hangs past `timeout`, or is stopped.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, PluginError> {
        if self.dead.is_cancelled() {
            return Err(unavailable(&self.name, "it is restarting"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        let mut line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        line.push('\n');
        let written = {
            let mut stdin = self.stdin.lock().await;
            tokio::time::timeout(timeout, async {
                stdin.write_all(line.as_bytes()).await?;
                stdin.flush().await
            })
            .await
        };
        if !matches!(written, Ok(Ok(()))) {
            self.fail("cannot write to it");
            return Err(unavailable(&self.name, "cannot write to it"));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(unavailable(&self.name, "it stopped")),
            Err(_) => {
                // A plugin that does not answer in time is hung: it is restarted.
                self.fail("it did not answer in time");
                Err(unavailable(
                    &self.name,
                    &format!("no answer within {} ms; restarting it", timeout.as_millis()),
                ))
            }
        }
    }

    /// Marks the process dead and fails every pending call.
    fn fail(&self, why: &str) {
        self.dead.cancel();
        let pending: Vec<_> = self
            .pending
            .lock()
            .map(|mut p| p.drain().collect())
            .unwrap_or_default();
        for (_, tx) in pending {
            let _ = tx.send(Err(unavailable(&self.name, why)));
        }
    }

    fn answer(&self, id: u64, result: Result<Value, PluginError>) {
        let tx = self.pending.lock().ok().and_then(|mut p| p.remove(&id));
        if let Some(tx) = tx {
            let _ = tx.send(result);
        }
    }
}

/// Starts supervising `config`.
pub fn spawn<G: PluginHost>(gw: Arc<G>, config: PluginConfig) -> Handle {
    let stop = CancellationToken::new();
    let handle = Handle {
        config: config.clone(),
        stop: stop.clone(),
    };
    tokio::spawn(supervise(gw, config, stop));
    handle
}

async fn supervise<G: PluginHost>(gw: Arc<G>, config: PluginConfig, stop: CancellationToken) {
    let name = config.name.clone();
    let plugins = gw.plugins();
    let mut attempt: u32 = 0;
    loop {
        let state = if attempt == 0 {
            PluginState::Starting
        } else {
            PluginState::Restarting
        };
        plugins.set(&gw, &name, "process", state, None, None);
        let started = std::time::Instant::now();
        match run_once(&gw, &config, &stop).await {
            Outcome::Stopped => {
                plugins.set(&gw, &name, "process", PluginState::Stopped, None, None);
                return;
            }
            Outcome::Refused(why) => {
                tracing::error!(plugin = %name, reason = %why, "plugin refused");
                plugins.set(&gw, &name, "process", PluginState::Failed, None, Some(why));
                return;
            }
            Outcome::Died(why) => {
                tracing::warn!(plugin = %name, reason = %why, "plugin died; restarting");
                plugins.set(
                    &gw,
                    &name,
                    "process",
                    PluginState::Restarting,
                    None,
                    Some(why),
                );
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            attempt = 0;
        }
        attempt += 1;
        let backoff = Duration::from_millis((200u64 << attempt.min(6)).min(10_000));
        tokio::select! {
            _ = stop.cancelled() => {
                plugins.set(&gw, &name, "process", PluginState::Stopped, None, None);
                return;
            }
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

enum Outcome {
    Stopped,
    Refused(String),
    Died(String),
}

async fn run_once<G: PluginHost>(
    gw: &Arc<G>,
    config: &PluginConfig,
    stop: &CancellationToken,
) -> Outcome {
    let name = config.name.clone();
    let Some((program, args)) = config.command.split_first() else {
        return Outcome::Refused("no command".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(&config.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Died(format!("cannot start {program}: {e}")),
    };
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Outcome::Died("no pipes".into());
    };
    let conn = Arc::new(Conn {
        name: name.clone(),
        stdin: tokio::sync::Mutex::new(stdin),
        pending: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        dead: CancellationToken::new(),
    });
    // Its stderr goes to our log, tagged with its name.
    {
        let name = name.clone();
        tokio::spawn(async move {
            read_bounded_lines(BufReader::new(stderr), MAX_STDERR_LINE, |line| {
                tracing::info!(plugin = %name, "{line}");
            })
            .await;
        });
    }
    // Its stdout: answers and notifications; anything else is garbage and kills it.
    {
        let conn = conn.clone();
        let gw = gw.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                buf.shrink_to(KEEP_CAPACITY);
                // A line is a message: none may be bigger than a client's, and none is buffered
                // past that bound (a longer one is garbage).
                let max = gw.config().gateway.max_payload_bytes;
                let mut limited = tokio::io::AsyncReadExt::take(&mut reader, max as u64 + 1);
                let read = tokio::select! {
                    _ = conn.dead.cancelled() => return,
                    r = limited.read_until(b'\n', &mut buf) => r,
                };
                match read {
                    Ok(0) | Err(_) => {
                        conn.fail("it exited");
                        return;
                    }
                    Ok(_) if buf.len() > max => {
                        let why =
                            format!("a line longer than gateway.max_payload_bytes ({max} bytes)");
                        tracing::warn!(plugin = %conn.name, %why, "plugin wrote garbage; restarting it");
                        conn.fail(&why);
                        return;
                    }
                    Ok(_) => {}
                }
                if buf.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if let Err(why) = handle_line(&gw, &conn, &buf) {
                    tracing::warn!(plugin = %conn.name, %why, "plugin wrote garbage; restarting it");
                    conn.fail(&why);
                    return;
                }
            }
        });
    }
    let described = tokio::select! {
        _ = stop.cancelled() => return Outcome::Stopped,
        d = conn.call("plugin.describe", json!({}), DESCRIBE_TIMEOUT) => d,
    };
    let description = match described {
        Ok(d) => d,
        Err(e) => {
            let _ = child.start_kill();
            return Outcome::Died(format!("plugin.describe failed: {e}"));
        }
    };
    let timeout = config
        .call_timeout_ms
        .map_or(CALL_TIMEOUT, Duration::from_millis);
    let contribution = match contribution(&name, &description, &conn, timeout) {
        Ok(c) => c,
        Err(why) => {
            let _ = child.start_kill();
            return Outcome::Refused(format!("bad plugin.describe answer: {why}"));
        }
    };
    if let Err(why) = check_collisions(gw, &name, &contribution) {
        let _ = child.start_kill();
        return Outcome::Refused(why);
    }
    gw.plugins().set(
        gw,
        &name,
        "process",
        PluginState::Running,
        Some(contribution),
        None,
    );
    let outcome = tokio::select! {
        _ = stop.cancelled() => Outcome::Stopped,
        _ = conn.dead.cancelled() => Outcome::Died("it stopped answering or wrote garbage".into()),
        status = child.wait() => Outcome::Died(match status {
            Ok(s) => format!("it exited ({s})"),
            Err(e) => format!("it failed: {e}"),
        }),
    };
    conn.fail("it is restarting");
    let _ = child.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    outcome
}

/// Reads `reader` to its end in lines of at most `max` bytes, each decoded as lossy UTF-8 and
/// handed to `on_line` without its newline. A longer line is handed over cut at `max` bytes, with
/// a marker, as soon as it is that long; the rest of it, up to the next newline, is read and
/// dropped, never kept. So whatever a plugin writes (no newline, invalid UTF-8), memory stays
/// bounded and the pipe keeps being drained (a plugin whose stderr is not read blocks or dies).
async fn read_bounded_lines<R>(mut reader: R, max: usize, mut on_line: impl FnMut(&str))
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let mut line: Vec<u8> = Vec::new();
    // The current line was already handed over cut; skip to its newline.
    let mut cut = false;
    let mut emit = |line: &mut Vec<u8>, marker: bool| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let text = String::from_utf8_lossy(line);
        if marker {
            on_line(&format!(
                "{text}… [line cut at {max} bytes; the rest of it is discarded]"
            ));
        } else {
            on_line(&text);
        }
        line.clear();
    };
    loop {
        let chunk = match reader.fill_buf().await {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if chunk.is_empty() {
            break;
        }
        let (end, newline) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if !cut {
            let room = max.saturating_sub(line.len());
            line.extend_from_slice(&chunk[..end.min(room)]);
            if end > room {
                cut = true;
                emit(&mut line, true);
            }
        }
        if newline {
            if !cut {
                emit(&mut line, false);
            }
            cut = false;
        }
        reader.consume(end + usize::from(newline));
    }
    if !line.is_empty() && !cut {
        emit(&mut line, false);
    }
}

/// One line from the plugin: an answer, or a `plugin.emit` notification.
fn handle_line<G: PluginHost>(gw: &Arc<G>, conn: &Arc<Conn>, line: &[u8]) -> Result<(), String> {
    let msg: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON: {e}"))?;
    if msg.get("jsonrpc") != Some(&json!("2.0")) {
        return Err("not a JSON-RPC 2.0 message".into());
    }
    if let Some(id) = msg.get("id").and_then(Value::as_u64) {
        if let Some(err) = msg.get("error") {
            let code = err["code"].as_i64().unwrap_or(-32603);
            let message = err["message"]
                .as_str()
                .unwrap_or("plugin error")
                .to_string();
            let refusal = Refusal::from_answer(code, message, err["data"]["path"].as_str());
            let result = Err(PluginError::Refused {
                plugin: conn.name.clone(),
                refusal,
            });
            conn.answer(id, result);
        } else {
            conn.answer(id, Ok(msg.get("result").cloned().unwrap_or(Value::Null)));
        }
        return Ok(());
    }
    if msg.get("method") == Some(&json!("plugin.emit")) {
        let event = msg["params"]["event"].as_str().unwrap_or("");
        if event.is_empty()
            || !event
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(format!("plugin.emit with a bad event name {event:?}"));
        }
        let payload = msg["params"].get("payload").cloned().unwrap_or(Value::Null);
        let session_key = msg["params"]["sessionKey"].as_str();
        gw.hub()
            .publish(&format!("{}.{event}", conn.name), session_key, &payload);
        return Ok(());
    }
    Err("neither an answer nor plugin.emit".into())
}

/// Turns a `plugin.describe` answer into descriptors, tools and events.
fn contribution<G: PluginHost>(
    plugin: &str,
    description: &Value,
    conn: &Arc<Conn>,
    timeout: Duration,
) -> Result<Contribution<G>, String> {
    let mut out = Contribution::default();
    let valid = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    for (i, m) in description["methods"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let local = m["name"]
            .as_str()
            .ok_or(format!("methods[{i}].name is missing"))?;
        if !valid(local) {
            return Err(format!(
                "methods[{i}].name {local:?}: use letters, digits, _ and -"
            ));
        }
        let scope: Scope =
            serde_json::from_value(m.get("scope").cloned().unwrap_or(json!("write")))
                .map_err(|_| format!("methods[{i}].scope: expected read, write or admin"))?;
        let full = format!("{plugin}.{local}");
        let forward = conn.clone();
        let local_name = local.to_string();
        let handler: crate::rpc::table::CallHandler<G> = Arc::new(move |_ctx, params| {
            let conn = forward.clone();
            let method = local_name.clone();
            let params: Value = params
                .as_str()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or(json!({}));
            Box::pin(async move {
                let result = conn.call(&method, params, timeout).await?;
                serde_json::value::to_raw_value(&result).map_err(Error::internal)
            })
        });
        out.methods.push(MethodDescriptor {
            name: full,
            owner: format!("plugin:{plugin}"),
            scope,
            summary: m["summary"].as_str().unwrap_or("").to_string(),
            params_schema: m
                .get("paramsSchema")
                .cloned()
                .unwrap_or(json!({"type": "object"})),
            result_schema: m.get("resultSchema").cloned().unwrap_or(json!({})),
            errors: vec![crate::error::code::UNAVAILABLE],
            examples: vec![Example {
                name: "call",
                params: m.get("exampleParams").cloned().unwrap_or(json!({})),
                result: m.get("exampleResult").cloned().unwrap_or(json!(null)),
            }],
            kind: MethodKind::Call(handler),
        });
    }
    for (i, t) in description["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let local = t["name"]
            .as_str()
            .ok_or(format!("tools[{i}].name is missing"))?;
        if !valid(local) {
            return Err(format!(
                "tools[{i}].name {local:?}: use letters, digits, _ and -"
            ));
        }
        if local.contains("__") {
            // `<server>__<tool>` names the tools of MCP servers: a plugin's could collide.
            return Err(format!(
                "tools[{i}].name {local:?}: `__` is reserved for MCP tools (<server>__<tool>)"
            ));
        }
        out.tools.push(Arc::new(PluginTool {
            plugin: plugin.to_string(),
            local: local.to_string(),
            spec: ToolSpec {
                name: format!("{plugin}_{local}"),
                description: t["description"].as_str().unwrap_or("").to_string(),
                input_schema: t
                    .get("inputSchema")
                    .cloned()
                    .unwrap_or(json!({"type": "object"})),
            },
            conn: conn.clone(),
            timeout,
        }));
    }
    for (i, e) in description["events"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let local = e
            .as_str()
            .or_else(|| e["name"].as_str())
            .ok_or(format!("events[{i}] must be a name"))?;
        out.events.push(EventDecl {
            name: format!("{plugin}.{local}"),
            summary: e["summary"]
                .as_str()
                .unwrap_or("An event of a plugin.")
                .to_string(),
            payload_schema: e.get("payloadSchema").cloned().unwrap_or(json!({})),
            owner: format!("plugin:{plugin}"),
        });
    }
    Ok(out)
}

/// An agent tool served by a plugin (`tool.call {name, input}`).
struct PluginTool {
    plugin: String,
    local: String,
    spec: ToolSpec,
    conn: Arc<Conn>,
    timeout: Duration,
}

impl Tool for PluginTool {
    fn spec(&self) -> ToolSpec {
        self.spec.clone()
    }
    fn source(&self) -> String {
        format!("plugin:{}", self.plugin)
    }
    fn call(&self, input: Value, ctx: ToolContext) -> ToolFuture {
        let conn = self.conn.clone();
        let name = self.local.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let call = conn.call("tool.call", json!({"name": name, "input": input}), timeout);
            let result = tokio::select! {
                r = call => r,
                _ = ctx.cancel.cancelled() => return ToolOutput { content: "aborted".into(), is_error: true },
            };
            match result {
                Ok(v) => ToolOutput {
                    content: v["content"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                    is_error: v["isError"].as_bool().unwrap_or(false),
                },
                Err(e) => ToolOutput {
                    content: e.to_string(),
                    is_error: true,
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines_of(input: &[u8], max: usize) -> Vec<String> {
        let mut out = Vec::new();
        // A tiny buffer, so lines and cuts straddle reads.
        let reader = BufReader::with_capacity(3, input);
        read_bounded_lines(reader, max, |l| out.push(l.to_string())).await;
        out
    }

    #[tokio::test]
    async fn stderr_lines_are_bounded_lossy_and_read_to_the_end() {
        let got = lines_of(b"one\r\ntwo\n\xff\xfebad\nlast", 8).await;
        assert_eq!(got, vec!["one", "two", "\u{fffd}\u{fffd}bad", "last"]);
        let got = lines_of(b"0123456789abcdef\nafter\n12345678\n", 8).await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(
            got[0].starts_with("01234567…") && got[0].contains("cut at 8 bytes"),
            "{got:?}"
        );
        assert_eq!(got[1], "after");
        assert_eq!(got[2], "12345678", "exactly max is not cut");
        let got = lines_of(&[b'x'; 100], 8).await;
        assert_eq!(got.len(), 1, "an unterminated long line: cut once");
    }
}
