//! Guards of the live configuration: a truncated, deleted or half-written file never switches
//! token auth off; `config.patch` keeps inline tables and checks the file on its own; a plugin's
//! stderr is read in bounded lines whatever it writes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clawgate::config::{AuthMode, TokenConfig};
use clawgate::rpc::Scope;
use serde_json::{Value, json};

use crate::common::{Launcher, RawWs, http, start, test_table};

/// Generous bound on waiting for something the gateway does on its own (a reload, a log line).
const WAIT: Duration = Duration::from_secs(20);

const TOKEN_AUTH: &str = "[gateway.auth]\nmode = \"token\"\n\n[[gateway.auth.tokens]]\nname = \"admin\"\ntoken = \"admin-secret-1\"\nscopes = [\"admin\"]\n";

fn rpc(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

/// POSTs a call, with `token` if given; the status and the body.
async fn call_http(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    method: &str,
    params: Value,
) -> (u16, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("authorization", b.as_str()));
    }
    let resp = http(addr, "POST", "/", &headers, &rpc(method, params)).await;
    let body = serde_json::from_str(&resp.body).unwrap_or(Value::Null);
    (resp.status, body)
}

/// The running config as the admin token sees it.
async fn running_config(addr: std::net::SocketAddr) -> Value {
    let (status, body) = call_http(addr, Some("admin-secret-1"), "config.get", json!({})).await;
    assert_eq!(status, 200, "the token keeps working: {body}");
    body["result"]["config"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_survives_an_empty_deleted_half_or_in_place_saved_config_file() {
    let bin = Launcher::new()
        .config(format!("[gateway]\nmax_batch = 8\n\n{TOKEN_AUTH}"))
        .start();
    let file = bin.data_dir().join("clawgate.toml");
    let addr = bin.addr;
    assert_eq!(
        running_config(addr).await["gateway"]["auth"]["mode"],
        "token"
    );

    // Tokenless calls all the time, while the file is edited.
    let stop = Arc::new(AtomicBool::new(false));
    let (refused, leaked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let poller = {
        let (stop, refused, leaked) = (stop.clone(), refused.clone(), leaked.clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            while !stop.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(300) {
                let (status, _) = call_http(addr, None, "gateway.health", json!({})).await;
                if status == 401 {
                    refused.fetch_add(1, Ordering::SeqCst);
                } else {
                    leaked.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let check = |step: &str| {
        assert_eq!(
            leaked.load(Ordering::SeqCst),
            0,
            "{step}: a tokenless call got through"
        );
    };

    // Truncated to zero bytes.
    std::fs::File::create(&file).expect("truncate");
    let seen = bin.wait_warnings("config file is empty", 1).await;
    check("truncated");
    assert!(seen, "a warning for the empty file: {}", bin.log());
    // Only whitespace and comments.
    std::fs::write(&file, "# nothing here yet\n\n   \n").expect("write");
    assert!(
        bin.wait_warnings("config file is empty", 2).await,
        "{}",
        bin.log()
    );
    check("comments only");
    // Deleted.
    std::fs::remove_file(&file).expect("delete");
    assert!(
        bin.wait_warnings("config file is gone", 1).await,
        "{}",
        bin.log()
    );
    check("deleted");
    // A valid file without the auth section.
    std::fs::write(&file, "[gateway]\nmax_batch = 8\n").expect("write");
    assert!(
        bin.wait_warnings("config edit refused", 1).await,
        "{}",
        bin.log()
    );
    check("no auth section");
    assert!(
        bin.log().contains("gateway.auth"),
        "names the key: {}",
        bin.log()
    );
    let config = running_config(addr).await;
    assert_eq!(config["gateway"]["auth"]["mode"], "token", "{config}");

    // An editor's save in place: truncate, write the first half, a pause, the rest.
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&file)
            .expect("open in place");
        f.write_all(b"[gateway]\nmax_batch = 9\n\n")
            .expect("first half");
        f.flush().expect("flush");
        tokio::time::sleep(Duration::from_millis(300)).await;
        f.write_all(TOKEN_AUTH.as_bytes()).expect("second half");
        f.flush().expect("flush");
    }
    let t0 = Instant::now();
    loop {
        let config = running_config(addr).await;
        if config["gateway"]["max_batch"] == 9 {
            assert_eq!(config["gateway"]["auth"]["mode"], "token");
            break;
        }
        assert!(t0.elapsed() < WAIT, "the saved file applies: {config}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // A little longer, in case a late reload of the half file slips through.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::SeqCst);
    poller.await.expect("poller");
    check("saved in place");
    assert!(refused.load(Ordering::SeqCst) > 0, "the poller ran");
    assert_eq!(
        bin.warnings("authentication mode changed"),
        0,
        "{}",
        bin.log()
    );

    // An explicit, valid `mode = "none"` (on loopback) is a choice: it switches, with a warning.
    std::fs::write(&file, "[gateway.auth]\nmode = \"none\"\n").expect("write");
    let t0 = Instant::now();
    loop {
        let (status, body) = call_http(addr, None, "gateway.health", json!({})).await;
        if status == 200 {
            assert_eq!(body["result"]["ok"], true, "{body}");
            break;
        }
        assert!(t0.elapsed() < WAIT, "mode none applies: {status} {body}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        bin.wait_warnings("authentication mode changed", 1).await,
        "{}",
        bin.log()
    );
}

fn admin_token(c: &mut clawgate::config::Config) {
    c.gateway.auth.mode = AuthMode::Token;
    c.gateway.auth.tokens = vec![TokenConfig {
        name: "admin".into(),
        token: "admin-secret-1".into(),
        scopes: vec![Scope::Admin],
    }];
}

async fn patch(ws: &mut RawWs, patch: Value) -> Value {
    let hash = ws.call("config.get", json!({})).await["result"]["hash"].clone();
    ws.call("config.patch", json!({"patch": patch, "baseHash": hash}))
        .await
}

/// The value at a dotted `path` of a TOML table (indices for arrays), if there is one.
fn at<'a>(doc: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut keys = path.split('.');
    let mut value = doc.get(keys.next()?)?;
    for key in keys {
        value = match key.parse::<usize>() {
            Ok(i) => value.as_array()?.get(i)?,
            Err(_) => value.as_table()?.get(key)?,
        };
    }
    Some(value)
}

/// Writes `text` to `file` and waits for the `config.changed` of exactly that content on `ws`.
async fn write_and_wait(ws: &mut RawWs, file: &Path, text: &str) {
    std::fs::write(file, text).expect("write");
    let hash = clawgate::config::hash_bytes(text.as_bytes());
    while ws.next_payload_of("config.changed").await["hash"] != hash.as_str() {}
}

#[tokio::test]
async fn config_patch_refuses_to_drop_token_auth_but_takes_an_explicit_none() {
    let gw = start(admin_token).await;
    let file = gw.dir.path().join("clawgate.toml");
    let mut ws = RawWs::connect_with(
        gw.addr(),
        "/",
        &[("authorization", "Bearer admin-secret-1")],
    )
    .await
    .expect("connects");
    let before = std::fs::read_to_string(&file).expect("read");
    for removal in [
        json!({"gateway": {"auth": null}}),
        json!({"gateway": null}),
        json!({"gateway": {"auth": {"mode": null, "tokens": null}}}),
    ] {
        let r = patch(&mut ws, removal.clone()).await;
        assert_eq!(r["error"]["code"], -32602, "{removal}: {r}");
        assert_eq!(r["error"]["data"]["path"], "gateway.auth", "{r}");
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("mode = \"none\"")),
            "says how to do it on purpose: {r}"
        );
        assert_eq!(
            std::fs::read_to_string(&file).expect("read"),
            before,
            "{removal} changes nothing"
        );
        let (status, _) = call_http(gw.addr(), None, "gateway.health", json!({})).await;
        assert_eq!(status, 401, "{removal}");
    }
    let r = patch(&mut ws, json!({"gateway": {"auth": {"mode": "none"}}})).await;
    assert!(
        r.get("result").is_some(),
        "an explicit none is a choice: {r}"
    );
    let (status, _) = call_http(gw.addr(), None, "gateway.health", json!({})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn config_patch_merges_into_inline_tables_and_keeps_every_key() {
    let gw = start(admin_token).await;
    let file = gw.dir.path().join("clawgate.toml");
    let mut ws = RawWs::connect_with(
        gw.addr(),
        "/",
        &[("authorization", "Bearer admin-secret-1")],
    )
    .await
    .expect("connects");
    ws.subscribe(json!({"events": ["config.changed"]})).await;
    let token =
        |name: &str, secret: &str| json!({"name": name, "token": secret, "scopes": ["admin"]});

    // The whole section inline, with a nested inline table.
    write_and_wait(
        &mut ws,
        &file,
        "# mine\ngateway = { port = 0, max_batch = 8, auth = { mode = \"token\", tokens = [{ name = \"admin\", token = \"admin-secret-1\", scopes = [\"admin\"] }] } } # inline\nagent = { model = \"echo\", max_turns = 5 }\n",
    )
    .await;
    let r = patch(
        &mut ws,
        json!({
            "gateway": {"max_batch": 9, "auth": {"tokens": [token("admin", "admin-secret-1"), token("second", "second-secret-1")]}},
            "agent": {"max_turns": 3, "tools": {"exec": "off"}},
        }),
    )
    .await;
    assert!(r.get("result").is_some(), "{r}");
    let text = std::fs::read_to_string(&file).expect("read");
    let doc: toml::Table = toml::from_str(&text).expect("still TOML");
    assert_eq!(
        at(&doc, "gateway.port").and_then(toml::Value::as_integer),
        Some(0),
        "{text}"
    );
    assert_eq!(
        at(&doc, "gateway.max_batch").and_then(toml::Value::as_integer),
        Some(9),
        "{text}"
    );
    assert_eq!(
        at(&doc, "gateway.auth.mode").and_then(toml::Value::as_str),
        Some("token"),
        "{text}"
    );
    assert_eq!(
        at(&doc, "gateway.auth.tokens")
            .and_then(toml::Value::as_array)
            .map(Vec::len),
        Some(2),
        "{text}"
    );
    assert_eq!(
        at(&doc, "agent.model").and_then(toml::Value::as_str),
        Some("echo"),
        "{text}"
    );
    assert_eq!(
        at(&doc, "agent.max_turns").and_then(toml::Value::as_integer),
        Some(3),
        "{text}"
    );
    assert_eq!(
        at(&doc, "agent.tools.exec").and_then(toml::Value::as_str),
        Some("off"),
        "{text}"
    );
    assert!(
        text.contains("# mine") && text.contains("# inline"),
        "{text}"
    );
    assert!(
        text.starts_with("# mine\ngateway = {"),
        "still inline: {text}"
    );
    assert_eq!(gw.running.gateway.config().gateway.max_batch, 9);

    // A table whose sub-table is inline.
    write_and_wait(
        &mut ws,
        &file,
        "[gateway]\nport = 0\nmax_batch = 4\nauth = { mode = \"token\", tokens = [{ name = \"admin\", token = \"admin-secret-1\", scopes = [\"admin\"] }] }\n",
    )
    .await;
    let r = patch(
        &mut ws,
        json!({"gateway": {"auth": {"tokens": [token("admin", "admin-secret-1"), token("third", "third-secret-1")]}}}),
    )
    .await;
    assert!(r.get("result").is_some(), "{r}");
    let text = std::fs::read_to_string(&file).expect("read");
    let doc: toml::Table = toml::from_str(&text).expect("still TOML");
    assert_eq!(
        at(&doc, "gateway.port").and_then(toml::Value::as_integer),
        Some(0),
        "{text}"
    );
    assert_eq!(
        at(&doc, "gateway.max_batch").and_then(toml::Value::as_integer),
        Some(4),
        "{text}"
    );
    assert_eq!(
        at(&doc, "gateway.auth.mode").and_then(toml::Value::as_str),
        Some("token"),
        "{text}"
    );
    assert_eq!(
        at(&doc, "gateway.auth.tokens.1.name").and_then(toml::Value::as_str),
        Some("third"),
        "{text}"
    );
    let (status, _) = call_http(
        gw.addr(),
        Some("third-secret-1"),
        "gateway.health",
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "the new token works");
    let (status, _) = call_http(gw.addr(), None, "gateway.health", json!({})).await;
    assert_eq!(status, 401, "auth stays on");
}

/// A gateway started with `--port 0` (an override of `gateway.port`) on the file `text`.
async fn start_with_port_flag(text: &str) -> (clawgate::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("clawgate.toml");
    std::fs::write(&path, text).expect("write config");
    let overrides = clawgate::config::Overrides {
        config_path: Some(path),
        data_dir: Some(dir.path().to_path_buf()),
        port: Some(0),
        ..Default::default()
    };
    let loaded = clawgate::config::load(&overrides, Vec::new()).expect("loads");
    assert_eq!(loaded.overridden_paths, vec!["gateway.port"]);
    let notified = Arc::new(AtomicUsize::new(0));
    let table: clawgate::gateway::BaseTable = Arc::new(move || Ok(test_table(notified.clone())));
    let running = clawgate::start_with(loaded, clawgate::app::parts(table))
        .await
        .expect("gateway starts");
    (running, dir)
}

#[tokio::test]
async fn a_file_invalid_on_its_own_is_refused_even_when_a_flag_covers_it() {
    let text = "[gateway]\nmax_batch = 8\n";
    let (running, dir) = start_with_port_flag(text).await;
    let file = dir.path().join("clawgate.toml");
    let mut ws = RawWs::connect(running.addr).await;
    ws.subscribe(json!({"events": ["config.changed"]})).await;

    let r = patch(&mut ws, json!({"gateway": {"port": 70000}})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    assert_eq!(r["error"]["data"]["path"], "gateway.port", "{r}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        text,
        "the file is unchanged"
    );
    let r = patch(&mut ws, json!({"gateway": {"prot": 1}})).await;
    assert_eq!(r["error"]["data"]["path"], "gateway.prot", "{r}");

    // The same check when the watcher reloads the file.
    std::fs::write(&file, "[gateway]\nport = 70000\nmax_batch = 5\n").expect("write");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        running.gateway.config().gateway.max_batch,
        8,
        "the file with a bad port was not applied"
    );
    std::fs::write(&file, "[gateway]\nmax_batch = 7\n").expect("write");
    let change = ws.next_payload_of("config.changed").await;
    assert!(
        change["changedPaths"]
            .as_array()
            .is_some_and(|p| p.contains(&json!("gateway.max_batch"))),
        "{change}"
    );
    assert_eq!(running.gateway.config().gateway.max_batch, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_flooding_stderr_without_newlines_or_utf8_is_served_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/unruly.py");
    let starts = dir.path().join("unruly.starts");
    let s = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
    let bin = Launcher::on(dir.path())
        .config(format!(
            "[[plugins]]\nname = \"unruly\"\ncommand = [\"python3\", {}]\ncall_timeout_ms = 120000\nenv = {{ UNRULY_STARTS_FILE = {} }}\n",
            s(&script),
            s(&starts)
        ))
        .start();
    let mut ws = RawWs::connect(bin.addr).await;
    let t0 = Instant::now();
    let pid = loop {
        let r = ws.call("unruly.ok", json!({})).await;
        if let Some(pid) = r["result"]["pid"].as_u64() {
            break pid;
        }
        assert!(t0.elapsed() < WAIT, "the plugin runs: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let rss0 = bin.status_kib("VmRSS");
    let hwm0 = bin.status_kib("VmHWM");

    // 64 MiB on stderr without a newline, then bytes that are not UTF-8.
    let r = ws.call("unruly.noisy", json!({"mib": 64})).await;
    assert_eq!(r["result"]["pid"], pid, "{r}");
    let rss1 = bin.status_kib("VmRSS");
    let hwm1 = bin.status_kib("VmHWM");
    let bound = 32 * 1024;
    assert!(
        rss1.saturating_sub(rss0) < bound,
        "RSS grew from {rss0} KiB to {rss1} KiB for 64 MiB of stderr"
    );
    assert!(
        hwm1.saturating_sub(hwm0) < bound,
        "peak RSS grew from {hwm0} KiB to {hwm1} KiB for 64 MiB of stderr"
    );
    // Then lines on stderr (one not UTF-8 either): a plugin whose stderr is no longer read dies
    // of a broken pipe here.
    for i in 0..10 {
        let r = ws.call("unruly.chatty", json!({})).await;
        assert_eq!(r["result"]["pid"], pid, "call {i}: the same process: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ws.call("unruly.ok", json!({})).await["result"]["pid"], pid);
    let starts = std::fs::read_to_string(&starts).expect("starts file");
    assert_eq!(starts.lines().count(), 1, "never restarted");
}
