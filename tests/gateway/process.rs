//! The binary as a user runs it: start, the CLI, signals, startup refusals.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::RawWs;

const BIN: &str = env!("CARGO_BIN_EXE_clawgate");

struct Proc {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(dir.path())
        .arg("--port")
        .arg("0")
        .args(args);
    cmd.env_remove("CLAWGATE_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the first line");
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Proc {
        child,
        url,
        _dir: dir,
    }
}

fn addr_of(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("ws://")
        .trim_end_matches('/')
        .parse()
        .expect("addr")
}

fn call(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("call")
        .arg("--url")
        .arg(url)
        .args(args)
        .env_remove("CLAWGATE_TOKEN")
        .output()
        .expect("run clawgate call");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn cli_call_prints_results_errors_and_notifications() {
    let proc = spawn(&[], &[]);
    let (ok, out, _) = call(&proc.url, &["gateway.health"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).expect("pretty JSON");
    assert_eq!(v["ok"], true);
    assert!(out.contains("\n  \""), "pretty-printed: {out}");
    let (ok, _, err) = call(&proc.url, &["no.such"]);
    assert!(!ok);
    assert!(err.contains("-32601"), "{err}");
    let (ok, _, err) = call(&proc.url, &["gateway.hello", "{\"bogus\":1}"]);
    assert!(!ok);
    assert!(err.contains("-32602") && err.contains("bogus"), "{err}");
    let (ok, out, _) = call(
        &proc.url,
        &[
            "--subscribe",
            "events.subscribe",
            "{\"events\":[\"presence\"],\"afterSeq\":0}",
            "--count",
            "1",
        ],
    );
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let env: Value = serde_json::from_str(lines[0]).expect("one JSON line");
    assert_eq!(env["event"], "presence");
}

#[tokio::test]
async fn sigterm_delivers_shutdown_and_exits_zero() {
    let mut proc = spawn(&[], &[]);
    let mut ws = RawWs::connect(addr_of(&proc.url)).await;
    ws.subscribe(json!({"events": ["nothing"]})).await;
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(proc.child.id().to_string())
        .status()
        .expect("kill");
    assert!(status.success());
    let e = ws.next_event().await;
    assert_eq!(e["event"], "shutdown");
    assert_eq!(e["payload"]["reason"], "SIGTERM");
    let start = Instant::now();
    loop {
        if let Some(status) = proc.child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .env_remove("CLAWGATE_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn startup_refusals_exit_non_zero_with_a_clear_message() {
    let (code, err) = run_to_exit(&["--bind", "0.0.0.0", "--port", "0"], &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("CLAWGATE_TOKEN") && err.contains("0.0.0.0"),
        "{err}"
    );
    let (code, err) = run_to_exit(&["--port", "0"], &[("CLAWGATE_GATEWAY__MAX_BATCH", "lots")]);
    assert_ne!(code, 0);
    assert!(err.contains("gateway.max_batch"), "{err}");
    let (code, err) = run_to_exit(&["--port", "0"], &[("CLAWGATE_GATEWAY__NOPE", "1")]);
    assert_ne!(code, 0);
    assert!(err.contains("gateway.nope"), "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[gateway]\nport = \"x\"\n").expect("write");
    let (code, err) = run_to_exit(&["--config", cfg.to_str().expect("path")], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("gateway.port"), "{err}");
    // A port in use is refused too.
    let proc = spawn(&[], &[]);
    let port = addr_of(&proc.url).port().to_string();
    let (code, err) = run_to_exit(&["--port", &port], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot listen"), "{err}");
}

#[test]
fn token_auth_from_the_environment() {
    let proc = spawn(&[], &[("CLAWGATE_TOKEN", "env-secret-123")]);
    let (ok, _, err) = call(&proc.url, &["gateway.health"]);
    assert!(!ok, "no token must be refused");
    assert!(
        err.contains("401")
            || err.to_lowercase().contains("unauthorized")
            || err.contains("rejected"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args([
            "call",
            "--url",
            &proc.url,
            "--token",
            "env-secret-123",
            "gateway.status",
        ])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn help_explains_each_command_with_an_example() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["call", "--help"],
        vec!["schema", "--help"],
    ] {
        let out = Command::new(BIN).args(&args).output().expect("run");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example"), "{args:?}: {text}");
    }
}

#[test]
fn committed_schema_is_current() {
    let out = Command::new(BIN)
        .args(["schema", "--check"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
