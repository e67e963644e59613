//! Storage failures against the real binary: a full disk (a small tmpfs) and too few file
//! descriptors (`prlimit` on the running gateway). A write that fails is `-32025` with
//! `data.reason: "storage"` and `data.retryable: true`, it is logged at ERROR, `/readyz` fails
//! its store check until a write succeeds again, and a failed reset, create, fork or delete
//! leaves every session exactly as it was, after a restart too.
//!
//! Mounting a tmpfs needs root (CI runs the tests as root); elsewhere the full-disk tests are
//! skipped. Lowering the gateway's own soft descriptor limit needs no privilege.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Gateway, Launcher, RawWs, http, transcript_files};

/// A generous bound on what the gateway does by itself; only against hangs, never a speed test.
const PATIENCE: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A small tmpfs of this test's own, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (the test is skipped) when this process may not mount: it is not root.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { dir }),
            other => {
                assert!(
                    !is_root(),
                    "running as root, yet a tmpfs cannot be mounted: {other:?}"
                );
                eprintln!("skipped: mounting a tmpfs needs root");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a gateway still holding files there cannot keep the mount alive.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system holding `dir` to the last byte; returns the filler file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    for size in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let chunk = vec![b'f'; size];
        while file.write_all(&chunk).is_ok() {}
    }
    let _ = file.sync_all();
    path
}

/// The real binary on `data_dir`, its log outside it (the data directory may be a full disk).
fn gateway(data_dir: &Path, log_dir: &Path) -> Gateway {
    Launcher::on(data_dir).log_dir(log_dir).start()
}

fn ok(resp: &Value) -> &Value {
    assert!(resp.get("error").is_none(), "unexpected error: {resp}");
    &resp["result"]
}

fn failed(resp: &Value) {
    assert!(resp.get("error").is_some(), "expected an error: {resp}");
}

/// Asserts a storage failure; returns its message, which must name `subject` and no path
/// inside `root`.
fn storage_error(resp: &Value, subject: &str, root: &Path) -> String {
    let err = &resp["error"];
    assert_eq!(err["code"], -32025, "{resp}");
    assert_eq!(err["data"]["kind"], "unavailable", "{resp}");
    assert_eq!(err["data"]["retryable"], true, "{resp}");
    assert_eq!(err["data"]["reason"], "storage", "{resp}");
    let message = err["message"].as_str().unwrap_or_default().to_string();
    assert!(message.contains(subject), "names `{subject}`: {message}");
    assert!(
        !message.contains(&*root.to_string_lossy()),
        "no internal path: {message}"
    );
    message
}

async fn inject(ws: &mut RawWs, key: &str, content: &str) -> Value {
    ws.call(
        "chat.inject",
        json!({"sessionKey": key, "role": "assistant", "content": content}),
    )
    .await
}

/// The contents of `key`'s messages, oldest first.
async fn contents(ws: &mut RawWs, key: &str) -> Vec<String> {
    let h = ws
        .call("chat.history", json!({"sessionKey": key, "limit": 1000}))
        .await;
    ok(&h)["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn session(ws: &mut RawWs, key: &str) -> Value {
    let s = ws.call("sessions.get", json!({"key": key})).await;
    ok(&s).clone()
}

async fn keys(ws: &mut RawWs) -> Vec<String> {
    let list = ws.call("sessions.list", json!({"limit": 1000})).await;
    let mut keys: Vec<String> = ok(&list)["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| s["key"].as_str().unwrap_or_default().to_string())
        .collect();
    keys.sort();
    keys
}

async fn readyz(addr: SocketAddr) -> (u16, Value) {
    let r = http(addr, "GET", "/readyz", &[], "").await;
    (r.status, r.json())
}

/// Waits (up to [`PATIENCE`]) for `/readyz` to answer 200.
async fn wait_ready(addr: SocketAddr) {
    let start = Instant::now();
    loop {
        let (status, body) = readyz(addr).await;
        if status == 200 {
            return;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "still not ready after {PATIENCE:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The names of the transcripts (`*.jsonl`) in `data/sessions`: what a restart reads.
fn transcripts(data: &Path) -> BTreeSet<String> {
    transcript_files(data)
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect()
}

fn id_of(s: &Value) -> String {
    s["sessionId"].as_str().expect("sessionId").to_string()
}

/// A message too large for the free bytes of a page a transcript already holds.
fn big() -> String {
    "x".repeat(16 * 1024)
}

#[tokio::test]
async fn a_full_disk_is_unavailable_storage_logged_and_not_ready_until_space_returns() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let logs = tempfile::tempdir().expect("tempdir");
    let data = fs.path().join("data");
    let gw = gateway(&data, logs.path());
    let mut ws = RawWs::connect(gw.addr).await;
    let mut acked = Vec::new();
    for i in 0..3 {
        let content = format!("kept {i}");
        ok(&inject(&mut ws, "main", &content).await);
        acked.push(content);
    }
    ok(&ws.call("sessions.create", json!({"key": "other"})).await);
    ok(&inject(&mut ws, "other", "other kept").await);
    assert_eq!(readyz(gw.addr).await.0, 200);

    // Nothing fails before the disk is full: every ERROR line comes after this instant.
    let filled = Instant::now();
    let filler = fill(fs.path());
    let r = inject(&mut ws, "main", &big()).await;
    let message = storage_error(&r, "main", fs.path());
    assert!(message.contains("append"), "says what failed: {message}");
    let r = ws.call("sessions.create", json!({"key": "fresh"})).await;
    storage_error(&r, "fresh", fs.path());
    let r = ws
        .call(
            "chat.send",
            json!({"sessionKey": "main", "message": "hello"}),
        )
        .await;
    storage_error(&r, "main", fs.path());
    let r = ws.call("sessions.reset", json!({"key": "main"})).await;
    storage_error(&r, "main", fs.path());

    let (status, body) = readyz(gw.addr).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["checks"]["store"], false, "{body}");
    assert!(
        body["failing"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("store"))),
        "{body}"
    );

    for _ in 0..5 {
        let r = inject(&mut ws, "main", &big()).await;
        storage_error(&r, "main", fs.path());
    }
    // Nothing acknowledged is lost; nothing refused appeared.
    assert_eq!(contents(&mut ws, "main").await, acked);
    assert_eq!(contents(&mut ws, "other").await, vec!["other kept"]);
    let fresh = ws.call("sessions.get", json!({"key": "fresh"})).await;
    assert_eq!(fresh["error"]["code"], -32022, "{fresh}");

    // Logged at ERROR, at most one line per 10 s (the first at once).
    let elapsed = filled.elapsed();
    let log = gw.log();
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("storage"))
        .count();
    assert!(errors >= 1, "the failure is logged at ERROR: {log}");
    assert!(
        errors as u64 <= 1 + elapsed.as_secs() / 10,
        "{errors} ERROR lines in {elapsed:?}: {log}"
    );

    // Space returns: the gateway turns ready by itself, and writes succeed again.
    std::fs::remove_file(&filler).expect("free the space");
    wait_ready(gw.addr).await;
    let (_, body) = readyz(gw.addr).await;
    assert_eq!(body["checks"]["store"], true, "{body}");
    ok(&inject(&mut ws, "main", "after").await);
    acked.push("after".into());
    assert_eq!(contents(&mut ws, "main").await, acked);
    ok(&ws.call("sessions.create", json!({"key": "fresh"})).await);
}

#[tokio::test]
async fn a_reset_create_or_fork_that_fails_on_a_full_disk_leaves_every_session_as_it_was() {
    let Some(fs) = Tmpfs::mount("4m") else { return };
    let logs = tempfile::tempdir().expect("tempdir");
    let data = fs.path().join("data");
    let gw = gateway(&data, logs.path());
    let mut ws = RawWs::connect(gw.addr).await;
    ok(&ws
        .call("sessions.patch", json!({"key": "main", "label": "L"}))
        .await);
    let main_msgs = vec!["a".to_string(), "b".into(), "c".into()];
    for m in &main_msgs {
        ok(&inject(&mut ws, "main", m).await);
    }
    ok(&ws.call("sessions.create", json!({"key": "src"})).await);
    ok(&inject(&mut ws, "src", "s1").await);
    let main = session(&mut ws, "main").await;
    let src = session(&mut ws, "src").await;

    let filler = fill(fs.path());
    let reset = ws.call("sessions.reset", json!({"key": "main"})).await;
    failed(&reset);
    let fork = ws
        .call("sessions.fork", json!({"key": "src", "newKey": "copy"}))
        .await;
    failed(&fork);
    let create = ws.call("sessions.create", json!({"key": "made"})).await;
    failed(&create);
    // Exactly as it was: same sessionId, same messages, label kept; no half-made session.
    assert_eq!(session(&mut ws, "main").await, main);
    assert_eq!(contents(&mut ws, "main").await, main_msgs);
    assert_eq!(session(&mut ws, "src").await, src);
    assert_eq!(keys(&mut ws).await, vec!["main", "src"]);
    storage_error(&reset, "main", fs.path());
    storage_error(&fork, "copy", fs.path());
    storage_error(&create, "made", fs.path());

    std::fs::remove_file(&filler).expect("free the space");
    wait_ready(gw.addr).await;
    // Nothing left behind that a restart would read as a session.
    let expected: BTreeSet<String> = [&main, &src]
        .iter()
        .map(|s| format!("{}.jsonl", id_of(s)))
        .collect();
    assert_eq!(transcripts(&data), expected);
    drop(ws);
    drop(gw);
    let gw = gateway(&data, logs.path());
    let mut ws = RawWs::connect(gw.addr).await;
    assert_eq!(keys(&mut ws).await, vec!["main", "src"], "no recovered:*");
    assert_eq!(id_of(&session(&mut ws, "main").await), id_of(&main));
    assert_eq!(session(&mut ws, "main").await["label"], "L");
    assert_eq!(contents(&mut ws, "main").await, main_msgs);
    assert_eq!(contents(&mut ws, "src").await, vec!["s1"]);

    // With space, a reset swaps transcripts, and the swap survives a restart.
    let reset = ws.call("sessions.reset", json!({"key": "main"})).await;
    let new_id = id_of(ok(&reset));
    assert_ne!(new_id, id_of(&main));
    assert_eq!(ok(&reset)["label"], "L");
    assert!(contents(&mut ws, "main").await.is_empty());
    let names: Vec<String> = std::fs::read_dir(data.join("sessions"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(&format!("{}.jsonl.reset.", id_of(&main)))),
        "{names:?}"
    );
    drop(ws);
    drop(gw);
    let gw = gateway(&data, logs.path());
    let mut ws = RawWs::connect(gw.addr).await;
    assert_eq!(keys(&mut ws).await, vec!["main", "src"]);
    assert_eq!(id_of(&session(&mut ws, "main").await), new_id);
    assert!(contents(&mut ws, "main").await.is_empty());
}

/// The lowest descriptor number `pid` does not use: the next one it would open.
fn lowest_free_fd(pid: u32) -> u64 {
    let used: BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap_or(0)
}

/// Sets the soft `RLIMIT_NOFILE` of `pid`, keeping its hard limit.
fn set_nofile(pid: u32, soft: &str) {
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={soft}:"))
        .status()
        .expect("prlimit");
    assert!(status.success(), "prlimit failed");
}

fn soft_nofile(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("Max open files")
        .to_string()
}

#[tokio::test]
async fn a_reset_or_delete_out_of_descriptors_leaves_the_session_as_it_was() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let logs = tempfile::tempdir().expect("tempdir");
    let data = data_dir.path().to_path_buf();
    let gw = gateway(&data, logs.path());
    let mut ws = RawWs::connect(gw.addr).await;
    let main_msgs = vec!["m1".to_string(), "m2".into()];
    for m in &main_msgs {
        ok(&inject(&mut ws, "main", m).await);
    }
    ok(&ws.call("sessions.create", json!({"key": "other"})).await);
    ok(&inject(&mut ws, "other", "o1").await);
    let main = session(&mut ws, "main").await;
    let other = session(&mut ws, "other").await;

    let pid = gw.pid();
    let soft = soft_nofile(pid);
    set_nofile(pid, &lowest_free_fd(pid).to_string());
    let reset = ws.call("sessions.reset", json!({"key": "main"})).await;
    let delete = ws.call("sessions.delete", json!({"key": "other"})).await;
    set_nofile(pid, &soft);
    failed(&reset);
    failed(&delete);
    assert_eq!(session(&mut ws, "main").await, main);
    assert_eq!(contents(&mut ws, "main").await, main_msgs);
    assert_eq!(session(&mut ws, "other").await, other);
    assert_eq!(contents(&mut ws, "other").await, vec!["o1"]);
    storage_error(&reset, "main", &data);
    storage_error(&delete, "other", &data);
    wait_ready(gw.addr).await;

    let expected: BTreeSet<String> = [&main, &other]
        .iter()
        .map(|s| format!("{}.jsonl", id_of(s)))
        .collect();
    assert_eq!(transcripts(&data), expected);
    drop(ws);
    drop(gw);
    let gw = gateway(&data, logs.path());
    let mut ws = RawWs::connect(gw.addr).await;
    assert_eq!(keys(&mut ws).await, vec!["main", "other"], "no recovered:*");
    assert_eq!(id_of(&session(&mut ws, "main").await), id_of(&main));
    assert_eq!(contents(&mut ws, "main").await, main_msgs);
    assert_eq!(contents(&mut ws, "other").await, vec!["o1"]);
}
