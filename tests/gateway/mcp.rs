//! MCP servers as tool sources, driven through `McpManager` against real servers: the reference
//! server-everything (stdio and streamable HTTP) and tests/mcp/rogue.mjs, which misbehaves on
//! demand. The servers come from tests/mcp/package-lock.json (tests/mcp/install.sh).
//! Over 600 lines because each failure mode (crash, hang, garbage, abort, removal) is one test
//! on one shared harness; splitting them would only spread that harness around.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clawgate::agent::tools::{Protected, Tool, ToolContext, ToolOutput};
use clawgate::config::{ExecMode, McpServerConfig};
use clawgate::mcp::{McpChanged, McpManager, McpServerStatus, McpState, McpTransport, PASSED_ENV};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Long enough for a node server to start on a busy two-core machine.
const WAIT: Duration = Duration::from_secs(30);

fn servers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp")
}

/// A file of the MCP test servers; a missing one fails the test with what to do.
fn installed(relative: &str) -> String {
    let path = servers_dir().join(relative);
    assert!(
        path.exists(),
        "{} is missing: the MCP test servers are not installed; run tests/mcp/install.sh \
         (scripts/test.sh does it before cargo test)",
        path.display()
    );
    path.display().to_string()
}

pub fn everything() -> String {
    installed("node_modules/@modelcontextprotocol/server-everything/dist/index.js")
}

fn stdio(args: &[&str]) -> McpServerConfig {
    McpServerConfig {
        command: Some(args.iter().map(|a| a.to_string()).collect()),
        url: None,
        env: BTreeMap::new(),
        headers: BTreeMap::new(),
        enabled: true,
        timeout_ms: 20_000,
    }
}

/// rogue.mjs, logging to `log`.
fn rogue(log: &Path) -> McpServerConfig {
    let mut config = stdio(&["node", &installed("rogue.mjs")]);
    config
        .env
        .insert("ROGUE_LOG".into(), log.display().to_string());
    config
}

/// A manager and every change it announced.
struct Harness {
    mcp: McpManager,
    changes: Arc<Mutex<Vec<McpChanged>>>,
}

impl Harness {
    fn new() -> Self {
        let changes = Arc::new(Mutex::new(Vec::new()));
        let seen = changes.clone();
        let mcp = McpManager::new(move |c| {
            if let Ok(mut all) = seen.lock() {
                all.push(c);
            }
        });
        Self { mcp, changes }
    }

    fn with(servers: &[(&str, McpServerConfig)]) -> Self {
        let h = Self::new();
        h.apply(servers);
        h
    }

    fn apply(&self, servers: &[(&str, McpServerConfig)]) {
        let map: BTreeMap<String, McpServerConfig> = servers
            .iter()
            .map(|(name, config)| (name.to_string(), config.clone()))
            .collect();
        self.mcp.apply(&map);
    }

    fn status(&self, server: &str) -> Option<McpServerStatus> {
        self.mcp.list().into_iter().find(|s| s.name == server)
    }

    /// Waits until `server`'s status satisfies `ok`.
    async fn wait(
        &self,
        server: &str,
        what: &str,
        ok: impl Fn(&McpServerStatus) -> bool,
    ) -> McpServerStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            let status = self.status(server);
            if let Some(s) = &status
                && ok(s)
            {
                return s.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{server} never became {what}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn running(&self, server: &str) -> McpServerStatus {
        self.wait(server, "running", |s| s.state == McpState::Running)
            .await
    }

    fn tool(&self, name: &str) -> Arc<dyn Tool> {
        let tools = self.mcp.tools(None);
        let names: Vec<String> = tools.iter().map(|t| t.spec().name).collect();
        tools
            .into_iter()
            .find(|t| t.spec().name == name)
            .unwrap_or_else(|| panic!("no tool {name} among {names:?}"))
    }

    async fn call(&self, name: &str, input: Value) -> ToolOutput {
        self.tool(name).call(input, ctx()).await
    }

    fn states_of(&self, server: &str) -> Vec<McpState> {
        self.changes
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|c| c.server == server)
                    .map(|c| c.state)
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn ctx() -> ToolContext {
    ToolContext {
        workspace: PathBuf::from("."),
        cancel: CancellationToken::new(),
        exec: ExecMode::Off,
        protected: Arc::new(Protected::default()),
    }
}

fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn starts(log: &Path) -> usize {
    log_lines(log)
        .iter()
        .filter(|l| l.starts_with("start "))
        .count()
}

/// Waits until `log` has a line satisfying `ok`.
async fn wait_log(log: &Path, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(line) = log_lines(log).into_iter().find(|l| ok(l)) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "the log never showed {what}: {:?}",
            log_lines(log)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ok_text(out: &ToolOutput) -> &str {
    assert!(!out.is_error, "{out:?}");
    &out.content
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_over_stdio_lists_its_tools_and_answers_calls() {
    let h = Harness::with(&[("everything", stdio(&["node", &everything(), "stdio"]))]);
    let status = h.running("everything").await;
    assert_eq!(status.transport, McpTransport::Stdio);
    assert_eq!(status.error, None);
    for tool in [
        "everything__echo",
        "everything__get-sum",
        "everything__get-env",
    ] {
        assert!(
            status.tools.iter().any(|t| t == tool),
            "{tool} in {:?}",
            status.tools
        );
    }
    let echo = h.tool("everything__echo");
    assert_eq!(echo.source(), "mcp:everything");
    let spec = echo.spec();
    assert_eq!(spec.description, "Echoes back the input string");
    assert_eq!(spec.input_schema["properties"]["message"]["type"], "string");
    let out = h.call("everything__echo", json!({"message": "hi"})).await;
    assert_eq!(ok_text(&out), "Echo: hi");
    let out = h.call("everything__get-sum", json!({"a": 2, "b": 3})).await;
    assert!(ok_text(&out).contains("is 5"), "{out:?}");
    // A server's own refusal (bad arguments) is a failed tool result, and the server stays up.
    let out = h.call("everything__get-sum", json!({"a": "x"})).await;
    assert!(out.is_error, "{out:?}");
    assert_eq!(
        h.status("everything").map(|s| s.state),
        Some(McpState::Running)
    );
    assert_eq!(h.states_of("everything").first(), Some(&McpState::Starting));
    h.mcp.shutdown().await;
    assert_eq!(h.status("everything"), None);
    assert_eq!(h.states_of("everything").last(), Some(&McpState::Stopped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_sees_only_path_home_lang_tmpdir_and_its_own_env() {
    let mut config = stdio(&["node", &everything(), "stdio"]);
    config.env.insert("FROM_TABLE".into(), "yes".into());
    let h = Harness::with(&[("everything", config)]);
    h.running("everything").await;
    let out = h.call("everything__get-env", json!({})).await;
    let env: BTreeMap<String, String> =
        serde_json::from_str(ok_text(&out)).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(env.get("FROM_TABLE").map(String::as_str), Some("yes"));
    if let Ok(path) = std::env::var("PATH") {
        assert_eq!(env.get("PATH"), Some(&path));
    }
    for key in env.keys() {
        assert!(
            PASSED_ENV.contains(&key.as_str()) || key == "FROM_TABLE",
            "the server sees {key}: {env:?}"
        );
    }
    // This test process has variables of its own (cargo sets CARGO_*): none leaked.
    let ours: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("CARGO"))
        .collect();
    assert!(!ours.is_empty(), "cargo sets CARGO_* for a test");
    assert!(ours.iter().all(|k| !env.contains_key(k)), "{env:?}");
    h.mcp.shutdown().await;
}

/// A free loopback port (bound and released; the server binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_everything_over_streamable_http_lists_and_answers() {
    let port = free_port();
    let mut server = tokio::process::Command::new("node")
        .args([&everything(), "streamableHttp"])
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start node: {e}"));
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "server-everything never listened on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut config = stdio(&[]);
    config.command = None;
    config.url = Some(format!("http://127.0.0.1:{port}/mcp"));
    config.headers.insert("X-Clawgate-Test".into(), "1".into());
    let h = Harness::with(&[("web", config)]);
    let status = h.running("web").await;
    assert_eq!(status.transport, McpTransport::Http);
    assert!(status.tools.iter().any(|t| t == "web__echo"), "{status:?}");
    let out = h.call("web__echo", json!({"message": "over http"})).await;
    assert_eq!(ok_text(&out), "Echo: over http");
    let out = h.call("web__get-sum", json!({"a": 40, "b": 2})).await;
    assert!(ok_text(&out).contains("is 42"), "{out:?}");
    assert_eq!(h.tool("web__echo").source(), "mcp:web");
    h.mcp.shutdown().await;
    let _ = server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paged_tools_are_all_listed_named_and_their_results_mapped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("rogue.log");
    let h = Harness::with(&[("rogue", rogue(&log))]);
    let status = h.running("rogue").await;
    // Twelve tools in pages of three: every page was asked for.
    assert_eq!(status.tools.len(), 12, "{:?}", status.tools);
    for cursor in ["list 0", "list 3", "list 6", "list 9"] {
        assert!(
            log_lines(&log).iter().any(|l| l == cursor),
            "{cursor}: {:?}",
            log_lines(&log)
        );
    }
    assert!(
        status.tools.iter().any(|t| t == "rogue__dotted_name"),
        "{status:?}"
    );
    let long: Vec<&String> = status
        .tools
        .iter()
        .filter(|t| t.starts_with("rogue__xxx"))
        .collect();
    assert_eq!(long.len(), 1);
    assert_eq!(long[0].len(), 64, "{long:?}");
    assert_eq!(
        ok_text(&h.call("rogue__dotted_name", json!({})).await),
        "dotted"
    );
    assert_eq!(ok_text(&h.call(long[0], json!({})).await), "long");
    let mixed = h.call("rogue__mixed", json!({})).await;
    assert_eq!(
        ok_text(&mixed),
        "[image: image/png, 6 bytes]\n[resource: file:///r.txt, text/plain, 5 bytes]\n{\"answer\":42}"
    );
    let fail = h.call("rogue__fail", json!({})).await;
    assert_eq!(
        (fail.content.as_str(), fail.is_error),
        ("it went wrong", true)
    );
    let bad = h.call("rogue__echo", json!(["not", "an", "object"])).await;
    assert!(
        bad.is_error && bad.content.contains("JSON object"),
        "{bad:?}"
    );
    h.mcp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_changed_refreshes_the_offered_tools() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("rogue.log");
    let h = Harness::with(&[("rogue", rogue(&log))]);
    h.running("rogue").await;
    assert_eq!(
        ok_text(&h.call("rogue__grow", json!({})).await),
        "grew to 13"
    );
    let status = h
        .wait("rogue", "grown", |s| {
            s.tools.iter().any(|t| t == "rogue__extra-1")
        })
        .await;
    assert_eq!(status.tools.len(), 13);
    assert_eq!(
        ok_text(&h.call("rogue__extra-1", json!({})).await),
        "extra-1"
    );
    // The change was announced with the new list, the server running all along.
    let announced = h.changes.lock().map(|c| c.clone()).unwrap_or_default();
    let last = announced.last().cloned();
    assert!(
        last.as_ref().is_some_and(
            |c| c.state == McpState::Running && c.tools.iter().any(|t| t == "rogue__extra-1")
        ),
        "{announced:?}"
    );
    assert_eq!(starts(&log), 1);
    h.mcp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_call_fails_the_call_and_the_server_comes_back() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("rogue.log");
    let h = Harness::with(&[("rogue", rogue(&log))]);
    h.running("rogue").await;
    let slow = h.tool("rogue__slow");
    let in_flight = tokio::spawn(async move { slow.call(json!({"ms": 20_000}), ctx()).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = h.call("rogue__crash", json!({})).await;
    assert!(out.is_error && out.content.contains("`rogue`"), "{out:?}");
    assert!(out.content.contains("restart"), "{out:?}");
    // The other call in flight fails too, at once.
    let other = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .unwrap_or_else(|_| panic!("the call in flight did not end"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(other.is_error, "{other:?}");
    h.wait("rogue", "running again", |s| {
        s.state == McpState::Running && starts(&log) == 2
    })
    .await;
    assert_eq!(
        ok_text(&h.call("rogue__echo", json!({"text": "back"})).await),
        "back"
    );
    let states = h.states_of("rogue");
    assert!(states.contains(&McpState::Restarting), "{states:?}");
    h.mcp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hang_past_timeout_ms_fails_the_call_and_restarts_the_server() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("rogue.log");
    let mut config = rogue(&log);
    config.timeout_ms = 1_000;
    let h = Harness::with(&[("rogue", config)]);
    h.running("rogue").await;
    let started = Instant::now();
    let out = h.call("rogue__hang", json!({})).await;
    let took = started.elapsed();
    assert!(
        out.is_error && out.content.contains("no answer within 1000 ms"),
        "{out:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The server was told, then restarted.
    wait_log(&log, "the cancellation", |l| {
        l.starts_with("cancelled ") && l.ends_with("timeout")
    })
    .await;
    h.wait("rogue", "running again", |s| {
        s.state == McpState::Running && starts(&log) == 2
    })
    .await;
    assert_eq!(
        ok_text(&h.call("rogue__echo", json!({"text": "ok"})).await),
        "ok"
    );
    h.mcp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_stdout_fails_the_call_and_restarts_the_server() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("rogue.log");
    let h = Harness::with(&[("rogue", rogue(&log))]);
    h.running("rogue").await;
    let out = h.call("rogue__garbage", json!({})).await;
    assert!(out.is_error && out.content.contains("not JSON"), "{out:?}");
    let status = h
        .wait("rogue", "running again", |s| {
            s.state == McpState::Running && starts(&log) == 2
        })
        .await;
    assert_eq!(status.error, None);
    assert_eq!(
        ok_text(&h.call("rogue__echo", json!({"text": "ok"})).await),
        "ok"
    );
    h.mcp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_returns_at_once_and_sends_notifications_cancelled() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("rogue.log");
    let h = Harness::with(&[("rogue", rogue(&log))]);
    h.running("rogue").await;
    let context = ctx();
    let cancel = context.cancel.clone();
    let slow = h.tool("rogue__slow");
    let call = tokio::spawn(async move { slow.call(json!({"ms": 20_000}), context).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let aborted_at = Instant::now();
    cancel.cancel();
    let out = tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .unwrap_or_else(|_| panic!("the aborted call did not return"))
        .unwrap_or_else(|e| panic!("{e}"));
    let took = aborted_at.elapsed();
    assert!(
        out.is_error && out.content.starts_with("aborted"),
        "{out:?}"
    );
    assert!(took < Duration::from_millis(500), "{took:?}");
    let line = wait_log(&log, "the cancellation", |l| l.starts_with("cancelled ")).await;
    assert!(line.ends_with("aborted"), "{line}");
    // An abort is no failure of the server: it keeps running, not restarted.
    assert_eq!(
        ok_text(&h.call("rogue__echo", json!({"text": "still"})).await),
        "still"
    );
    assert_eq!(starts(&log), 1);
    // A call whose run is already aborted does not even start.
    let context = ctx();
    context.cancel.cancel();
    let out = h
        .tool("rogue__echo")
        .call(json!({"text": "x"}), context)
        .await;
    assert!(
        out.is_error && out.content.starts_with("aborted"),
        "{out:?}"
    );
    h.mcp.shutdown().await;
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_server_fails_its_call_in_flight_and_stops_its_process() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("rogue.log");
    let h = Harness::with(&[("rogue", rogue(&log))]);
    h.running("rogue").await;
    let pid: u32 = wait_log(&log, "a start", |l| l.starts_with("start ")).await["start ".len()..]
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let slow = h.tool("rogue__slow");
    let kept = slow.clone();
    let call = tokio::spawn(async move { slow.call(json!({"ms": 20_000}), ctx()).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.apply(&[]);
    let out = tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .unwrap_or_else(|_| panic!("the call in flight did not end"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.is_error && out.content.contains("removed"), "{out:?}");
    assert!(h.mcp.list().is_empty());
    assert!(h.mcp.tools(None).is_empty());
    assert_eq!(h.states_of("rogue").last(), Some(&McpState::Stopped));
    // A tool a run still holds fails plainly.
    let out = kept.call(json!({"ms": 1}), ctx()).await;
    assert!(
        out.is_error && out.content.contains("not configured"),
        "{out:?}"
    );
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the removed server's process {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.mcp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_changes_restart_disable_and_add_servers() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let h = Harness::with(&[("a", rogue(&log_a))]);
    h.running("a").await;
    // The same configuration again changes nothing.
    h.apply(&[("a", rogue(&log_a))]);
    // A changed one restarts; a new one starts.
    let mut changed = rogue(&log_a);
    changed.timeout_ms = 5_000;
    h.apply(&[("a", changed.clone()), ("b", rogue(&log_b))]);
    h.wait("a", "restarted", |s| {
        s.state == McpState::Running && starts(&log_a) == 2
    })
    .await;
    h.running("b").await;
    assert_eq!(starts(&log_a), 2);
    let names: Vec<String> = h
        .mcp
        .tools(Some(&["b".to_string()]))
        .iter()
        .map(|t| t.spec().name)
        .collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("b__")),
        "{names:?}"
    );
    assert_eq!(h.mcp.tools(None).len(), 24);
    // Disabled: stopped, no tools, its calls fail.
    let held = h.tool("a__echo");
    changed.enabled = false;
    h.apply(&[("a", changed), ("b", rogue(&log_b))]);
    let status = h
        .wait("a", "stopped", |s| s.state == McpState::Stopped)
        .await;
    assert!(status.tools.is_empty());
    let out = held.call(json!({"text": "x"}), ctx()).await;
    assert!(out.is_error && out.content.contains("stopped"), "{out:?}");
    assert_eq!(ok_text(&h.call("b__echo", json!({"text": "b"})).await), "b");
    h.mcp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_the_server_are_answered_method_not_found() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("rogue.log");
    let h = Harness::with(&[("rogue", rogue(&log))]);
    h.running("rogue").await;
    for method in [
        "sampling/createMessage",
        "roots/list",
        "elicitation/create",
        "whatever/else",
    ] {
        let out = h.call("rogue__ask", json!({"method": method})).await;
        let answer: Value =
            serde_json::from_str(ok_text(&out)).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        assert_eq!(answer["code"], -32601, "{method}: {answer}");
    }
    // A ping is answered.
    let out = h.call("rogue__ask", json!({"method": "ping"})).await;
    assert_eq!(ok_text(&out), "{}");
    h.mcp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_start_is_failed_with_its_error_and_retried() {
    let h = Harness::with(&[
        ("exits", stdio(&["node", "-e", "process.exit(1)"])),
        ("missing", stdio(&["/nonexistent/mcp-server"])),
    ]);
    let status = h
        .wait("missing", "failed", |s| s.state == McpState::Failed)
        .await;
    assert!(
        status
            .error
            .as_deref()
            .is_some_and(|e| e.contains("cannot start")),
        "{status:?}"
    );
    let status = h
        .wait("exits", "failed", |s| s.state == McpState::Failed)
        .await;
    assert!(status.error.is_some(), "{status:?}");
    assert!(status.tools.is_empty());
    h.mcp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_keeps_its_tools_offered_and_their_calls_say_why() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let log = dir.path().join("rogue.log");
    let h = Harness::with(&[("rogue", rogue(&log))]);
    h.running("rogue").await;
    // Its restarts fail while the log is a directory (the script cannot append to it).
    let _ = std::fs::remove_file(&log);
    std::fs::create_dir(&log).unwrap_or_else(|e| panic!("{e}"));
    let out = h.call("rogue__crash", json!({})).await;
    assert!(out.is_error, "{out:?}");
    let status = h
        .wait("rogue", "failed", |s| s.state == McpState::Failed)
        .await;
    assert_eq!(
        status.tools.len(),
        12,
        "the last tools stay offered: {status:?}"
    );
    let out = h.call("rogue__echo", json!({"text": "x"})).await;
    assert!(
        out.is_error && out.content.contains("`rogue` is failed"),
        "{out:?}"
    );
    // Once it can start again, it comes back by itself.
    std::fs::remove_dir(&log).unwrap_or_else(|e| panic!("{e}"));
    h.running("rogue").await;
    assert_eq!(
        ok_text(&h.call("rogue__echo", json!({"text": "x"})).await),
        "x"
    );
    h.mcp.shutdown().await;
}

/// The gateway's side: `mcp.list`, `tools.catalog` and `agents.list` entries, a run calling an
/// MCP tool (echo's `/tool`), an agent limited to no server, and `mcp.changed` on a hot removal.
#[tokio::test]
async fn the_gateway_offers_mcp_tools_to_its_agents_and_lists_them() {
    let gw = crate::common::start(|c| {
        c.mcp_servers
            .insert("everything".into(), stdio(&["node", &everything()]));
        c.agents.insert(
            "plain".into(),
            clawgate::config::AgentConfig {
                mcp_servers: Some(Vec::new()),
                ..Default::default()
            },
        );
    })
    .await;
    let mut ws = crate::common::RawWs::connect(gw.addr()).await;
    let hello = ws.call("gateway.hello", json!({})).await;
    assert!(
        hello["result"]["features"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("mcp"))),
        "{hello}"
    );
    ws.subscribe(json!({"events": ["mcp.changed"]})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let server = loop {
        let list = ws.call("mcp.list", json!({})).await;
        let server = list["result"]["servers"][0].clone();
        if server["state"] == "running" {
            break server;
        }
        assert!(Instant::now() < deadline, "not running: {list}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(server["name"], "everything");
    assert_eq!(server["transport"], "stdio");
    assert!(
        server["tools"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("everything__echo"))),
        "{server}"
    );
    let catalog = ws.call("tools.catalog", json!({})).await;
    let echo = catalog["result"]["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "everything__echo").cloned())
        .expect("the MCP tool is in the catalogue");
    assert_eq!(echo["source"], "mcp:everything");
    let plain = ws.call("tools.catalog", json!({"agent": "plain"})).await;
    assert!(
        !plain.to_string().contains("everything__"),
        "an agent with mcp_servers = [] is offered none: {plain}"
    );
    let agents = ws.call("agents.list", json!({})).await["result"]["agents"].clone();
    let main = agents
        .as_array()
        .and_then(|a| a.iter().find(|a| a["id"] == "main").cloned())
        .expect("main");
    assert!(
        main["tools"].to_string().contains("everything__echo"),
        "{main}"
    );

    // A run of the echo provider calls the MCP tool and answers with its result.
    let payloads = ws
        .stream_run(json!({"sessionKey": "m", "message": "/tool everything__echo {\"message\": \"via mcp\"}"}))
        .await;
    let end = payloads
        .iter()
        .find(|p| p["state"] == "tool_end")
        .expect("tool_end");
    assert_eq!(end["isError"], false, "{end}");
    assert!(
        end["output"]
            .as_str()
            .is_some_and(|o| o.contains("via mcp")),
        "{end}"
    );

    // Removed from the configuration: stopped, announced, and its tools gone.
    let hash = ws.call("config.get", json!({})).await["result"]["hash"].clone();
    let patched = ws
        .call(
            "config.patch",
            json!({"patch": {"mcp_servers": {"everything": null}}, "baseHash": hash}),
        )
        .await;
    assert!(patched.get("result").is_some(), "{patched}");
    loop {
        let p = ws.next_payload_of("mcp.changed").await;
        if p["server"] == "everything" && p["state"] == "stopped" {
            break;
        }
    }
    let catalog = ws.call("tools.catalog", json!({})).await;
    assert!(!catalog.to_string().contains("everything__"), "{catalog}");
}
