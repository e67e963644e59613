//! Sessions and transcripts over the wire: every method, its errors, events, path safety,
//! concurrency, history paging.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::{RawWs, TestGateway, Transcript, start, transcript_path};

fn files(gw: &TestGateway) -> BTreeSet<String> {
    std::fs::read_dir(gw.dir.path().join("sessions"))
        .expect("sessions dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("index.json"))
        .collect()
}

fn ok(resp: &Value) -> &Value {
    assert!(resp.get("error").is_none(), "unexpected error: {resp}");
    &resp["result"]
}

fn err_code(resp: &Value) -> i64 {
    resp["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error: {resp}"))
}

#[tokio::test]
async fn create_get_patch_list_and_their_errors() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    // `main` always exists.
    let main = ws.call("sessions.get", json!({"key": "main"})).await;
    assert_eq!(ok(&main)["key"], "main");
    assert_eq!(ok(&main)["messageCount"], 0);

    let created = ws
        .call(
            "sessions.create",
            json!({"key": "work", "label": "Work", "model": "m1"}),
        )
        .await;
    let s = ok(&created).clone();
    assert_eq!(s["key"], "work");
    assert_eq!(s["label"], "Work");
    assert_eq!(s["model"], "m1");
    assert_eq!(s["sessionId"].as_str().map(str::len), Some(32));
    assert_eq!(
        err_code(&ws.call("sessions.create", json!({"key": "work"})).await),
        -32023
    );
    let generated = ws.call("sessions.create", json!({})).await;
    let gen_key = ok(&generated)["key"]
        .as_str()
        .expect("generated key")
        .to_string();
    assert!(!gen_key.is_empty());

    let patched = ws
        .call("sessions.patch", json!({"key": "work", "label": "Job"}))
        .await;
    assert_eq!(ok(&patched)["label"], "Job");
    assert_eq!(ok(&patched)["model"], "m1", "absent fields are kept");
    let cleared = ws
        .call("sessions.patch", json!({"key": "work", "model": null}))
        .await;
    assert!(
        ok(&cleared).get("model").is_none(),
        "null clears: {cleared}"
    );
    assert_eq!(ok(&cleared)["label"], "Job");
    assert_eq!(
        err_code(
            &ws.call("sessions.patch", json!({"key": "nope", "label": "x"}))
                .await
        ),
        -32022
    );
    let long = "x".repeat(129);
    let resp = ws
        .call("sessions.patch", json!({"key": "work", "label": long}))
        .await;
    assert_eq!(err_code(&resp), -32602);
    assert_eq!(resp["error"]["data"]["path"], "label");
    assert_eq!(
        err_code(&ws.call("sessions.get", json!({"key": "nope"})).await),
        -32022
    );

    // The label and model survive in the transcript as meta lines.
    let id = s["sessionId"].as_str().expect("id");
    let t = Transcript::of(gw.dir.path(), id).whole();
    assert_eq!(t.header["type"], "session");
    assert_eq!(t.header["key"], "work");
    // Version 2: new transcripts may hold compaction lines.
    assert_eq!(t.header["version"], 2);
    assert!(t.metas().iter().any(|l| l["model"].is_null()));

    // List: newest first, search on key and label, paging with a cursor.
    for i in 0..5 {
        ok(&ws
            .call(
                "sessions.create",
                json!({"key": format!("page-{i}"), "label": format!("Page {i}")}),
            )
            .await);
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let all = ws.call("sessions.list", json!({})).await;
    let all = ok(&all);
    assert_eq!(all["total"], 8);
    let times: Vec<u64> = all["sessions"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["updatedAt"].as_u64().unwrap_or(0))
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let found = ws.call("sessions.list", json!({"search": "PAGE"})).await;
    assert_eq!(ok(&found)["total"], 5);
    let by_label = ws.call("sessions.list", json!({"search": "job"})).await;
    assert_eq!(ok(&by_label)["sessions"][0]["key"], "work");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut params = json!({"limit": 3, "search": "page-"});
        if let Some(c) = &cursor {
            params["cursor"] = json!(c);
        }
        let page = ws.call("sessions.list", params).await;
        let page = ok(&page).clone();
        assert_eq!(page["total"], 5);
        for s in page["sessions"].as_array().expect("page") {
            seen.push(s["key"].as_str().expect("key").to_string());
        }
        match page.get("nextCursor").and_then(Value::as_str) {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, vec!["page-4", "page-3", "page-2", "page-1", "page-0"]);
    let resp = ws
        .call("sessions.list", json!({"cursor": "not-a-cursor"}))
        .await;
    assert_eq!(err_code(&resp), -32602);
    assert_eq!(resp["error"]["data"]["path"], "cursor");
    for limit in [0, 1001] {
        assert_eq!(
            err_code(&ws.call("sessions.list", json!({"limit": limit})).await),
            -32602
        );
    }
}

#[tokio::test]
async fn reset_delete_fork_archive_and_publish() {
    let gw = start(|_| {}).await;
    let mut watcher = RawWs::connect(gw.addr()).await;
    watcher
        .subscribe(json!({"events": ["sessions.changed", "chat"]}))
        .await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let s = ws
        .call("sessions.create", json!({"key": "k1", "label": "L"}))
        .await;
    let old_id = ok(&s)["sessionId"].as_str().expect("id").to_string();
    let e = watcher.next_event().await;
    assert_eq!(
        (e["event"].as_str(), e["sessionKey"].as_str()),
        (Some("sessions.changed"), Some("k1"))
    );
    assert_eq!(e["payload"]["reason"], "created");
    assert_eq!(e["payload"]["session"]["label"], "L");

    let mut ids = Vec::new();
    for i in 0..3 {
        let r = ws
            .call(
                "chat.inject",
                json!({"sessionKey": "k1", "role": "assistant", "content": format!("m{i}")}),
            )
            .await;
        ids.push(ok(&r)["messageId"].as_str().expect("id").to_string());
        let injected = watcher.next_event().await;
        assert_eq!(injected["event"], "chat");
        assert_eq!(injected["payload"]["state"], "injected");
        assert_eq!(injected["payload"]["message"]["content"], format!("m{i}"));
        assert!(injected["payload"].get("runId").is_none());
        let updated = watcher.next_event().await;
        assert_eq!(updated["payload"]["reason"], "updated");
        assert_eq!(updated["payload"]["session"]["messageCount"], i + 1);
    }

    // Fork at the second message, and the whole thing.
    let f = ws
        .call(
            "sessions.fork",
            json!({"key": "k1", "newKey": "k1-fork", "atMessageId": ids[1]}),
        )
        .await;
    assert_eq!(ok(&f)["messageCount"], 2);
    let e = watcher.next_event().await;
    assert_eq!(e["payload"]["reason"], "forked");
    let fork_id = ok(&f)["sessionId"].as_str().expect("id").to_string();
    let t = Transcript::of(gw.dir.path(), &fork_id).whole();
    assert_eq!(
        t.header["forkedFrom"],
        json!({"sessionId": old_id, "messageId": ids[1]})
    );
    let h = ws
        .call("chat.history", json!({"sessionKey": "k1-fork"}))
        .await;
    let contents: Vec<&str> = ok(&h)["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents, vec!["m0", "m1"]);
    let whole = ws.call("sessions.fork", json!({"key": "k1"})).await;
    assert_eq!(ok(&whole)["messageCount"], 3);
    watcher.next_event().await;
    assert_eq!(
        err_code(
            &ws.call("sessions.fork", json!({"key": "k1", "newKey": "k1-fork"}))
                .await
        ),
        -32023
    );
    assert_eq!(
        err_code(
            &ws.call("sessions.fork", json!({"key": "k1", "atMessageId": "nope"}))
                .await
        ),
        -32022
    );
    assert_eq!(
        err_code(&ws.call("sessions.fork", json!({"key": "nope"})).await),
        -32022
    );

    // Reset: a new sessionId, the old transcript archived.
    let r = ws.call("sessions.reset", json!({"key": "k1"})).await;
    let new_id = ok(&r)["sessionId"].as_str().expect("id").to_string();
    assert_ne!(new_id, old_id);
    assert_eq!(ok(&r)["messageCount"], 0);
    assert_eq!(ok(&r)["label"], "L", "reset keeps label and model");
    let e = watcher.next_event().await;
    assert_eq!(e["payload"]["reason"], "reset");
    let names = files(&gw);
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(&format!("{old_id}.jsonl.reset."))),
        "{names:?}"
    );
    assert!(names.contains(&format!("{new_id}.jsonl")));
    let archived: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(&format!("{old_id}.jsonl.reset.")))
        .collect();
    let archive = Transcript::read(gw.dir.path().join("sessions").join(archived[0]));
    assert_eq!(
        archive.len(),
        5,
        "header, meta and 3 messages kept in the archive"
    );

    // Delete: archived, gone from the store; main cannot be deleted.
    assert_eq!(
        ok(&ws.call("sessions.delete", json!({"key": "k1"})).await)["deleted"],
        true
    );
    let e = watcher.next_event().await;
    assert_eq!(e["payload"]["reason"], "deleted");
    assert!(e["payload"].get("session").is_none());
    assert!(
        files(&gw)
            .iter()
            .any(|n| n.starts_with(&format!("{new_id}.jsonl.deleted.")))
    );
    assert_eq!(
        err_code(&ws.call("sessions.get", json!({"key": "k1"})).await),
        -32022
    );
    assert_eq!(
        err_code(&ws.call("sessions.delete", json!({"key": "k1"})).await),
        -32022
    );
    let resp = ws.call("sessions.delete", json!({"key": "main"})).await;
    assert_eq!(err_code(&resp), -32023);
    let reset_main = ws.call("sessions.reset", json!({"key": "main"})).await;
    assert_eq!(ok(&reset_main)["key"], "main");
}

#[tokio::test]
async fn keys_never_become_paths() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let before = files(&gw);
    let long = "k".repeat(200);
    let bad_keys = ["../x", "a/b", "", long.as_str(), "a\u{0}b", "a b", "é"];
    for key in bad_keys {
        for (method, params, path) in [
            ("sessions.create", json!({"key": key}), "key"),
            ("sessions.get", json!({"key": key}), "key"),
            ("sessions.patch", json!({"key": key, "label": "x"}), "key"),
            ("sessions.reset", json!({"key": key}), "key"),
            ("sessions.delete", json!({"key": key}), "key"),
            (
                "sessions.fork",
                json!({"key": "main", "newKey": key}),
                "newKey",
            ),
            (
                "chat.inject",
                json!({"sessionKey": key, "role": "system", "content": "x"}),
                "sessionKey",
            ),
            ("chat.history", json!({"sessionKey": key}), "sessionKey"),
        ] {
            let resp = ws.call(method, params).await;
            assert_eq!(err_code(&resp), -32602, "{method} {key:?}: {resp}");
            assert_eq!(
                resp["error"]["data"]["path"], path,
                "{method} {key:?}: {resp}"
            );
        }
    }
    assert_eq!(files(&gw), before, "no file was touched");
    assert!(!gw.dir.path().join("x").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_injects_from_many_connections_give_intact_lines() {
    let gw = start(|_| {}).await;
    let mut tasks = Vec::new();
    for c in 0..10 {
        let addr = gw.addr();
        tasks.push(tokio::spawn(async move {
            let mut ws = RawWs::connect(addr).await;
            // Ten requests in flight at once on each connection.
            for i in 0..10 {
                let req = json!({"jsonrpc": "2.0", "id": i, "method": "chat.inject", "params": {"sessionKey": "busy", "role": "assistant", "content": format!("c{c}-{i} {}", "z".repeat(c * 100))}});
                ws.send(&req.to_string()).await;
            }
            let mut acked = Vec::new();
            while acked.len() < 10 {
                let resp = ws.recv().await;
                assert!(resp.get("result").is_some(), "{resp}");
                acked.push(resp["result"]["messageId"].as_str().expect("id").to_string());
            }
            acked
        }));
    }
    let mut acked = BTreeSet::new();
    for t in tasks {
        acked.extend(t.await.expect("task"));
    }
    assert_eq!(acked.len(), 100);
    let mut ws = RawWs::connect(gw.addr()).await;
    let s = ws.call("sessions.get", json!({"key": "busy"})).await;
    assert_eq!(ok(&s)["messageCount"], 100);
    let t = Transcript::of(gw.dir.path(), ok(&s)["sessionId"].as_str().expect("id")).whole();
    assert_eq!(t.len(), 101, "a header and 100 whole lines");
    let lines = t.messages();
    assert_eq!(lines.len(), 100, "{t:?}");
    let ids: BTreeSet<String> = lines
        .iter()
        .map(|l| l["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, acked);
    // parentId chains every message to the one before it.
    for pair in lines.windows(2) {
        assert_eq!(pair[1]["parentId"], pair[0]["id"]);
    }
    assert!(lines[0]["parentId"].is_null());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let path = transcript_path(gw.dir.path(), ok(&s)["sessionId"].as_str().expect("id"));
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "transcripts are owner-only");
        let mode = std::fs::metadata(gw.dir.path().join("sessions"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }
}

#[tokio::test]
async fn history_pages_backwards() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    let empty = ws.call("chat.history", json!({"sessionKey": "main"})).await;
    assert_eq!(ok(&empty)["messages"], json!([]));
    assert_eq!(ok(&empty)["hasMore"], false);
    for i in 0..30 {
        ok(&ws.call("chat.inject", json!({"sessionKey": "h", "role": if i % 2 == 0 { "assistant" } else { "system" }, "content": format!("n{i}"), "label": "l"})).await);
    }
    let page = ws
        .call("chat.history", json!({"sessionKey": "h", "limit": 10}))
        .await;
    let page = ok(&page).clone();
    let contents = |p: &Value| -> Vec<String> {
        p["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["content"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(
        contents(&page),
        (20..30).map(|i| format!("n{i}")).collect::<Vec<_>>()
    );
    assert_eq!(page["hasMore"], true);
    assert_eq!(page["sessionKey"], "h");
    assert_eq!(page["messages"][0]["label"], "l");
    let first = page["messages"][0]["id"].clone();
    let older = ws
        .call(
            "chat.history",
            json!({"sessionKey": "h", "limit": 15, "beforeId": first}),
        )
        .await;
    assert_eq!(
        contents(ok(&older)),
        (5..20).map(|i| format!("n{i}")).collect::<Vec<_>>()
    );
    assert_eq!(ok(&older)["hasMore"], true);
    let oldest_id = ok(&older)["messages"][0]["id"].clone();
    let rest = ws
        .call(
            "chat.history",
            json!({"sessionKey": "h", "beforeId": oldest_id}),
        )
        .await;
    assert_eq!(
        contents(ok(&rest)),
        (0..5).map(|i| format!("n{i}")).collect::<Vec<_>>()
    );
    assert_eq!(ok(&rest)["hasMore"], false);
    assert_eq!(
        err_code(&ws.call("chat.history", json!({"sessionKey": "nope"})).await),
        -32022
    );
    assert_eq!(
        err_code(
            &ws.call(
                "chat.history",
                json!({"sessionKey": "h", "beforeId": "nope"})
            )
            .await
        ),
        -32022
    );
    for limit in [0, 1001] {
        let resp = ws
            .call("chat.history", json!({"sessionKey": "h", "limit": limit}))
            .await;
        assert_eq!(err_code(&resp), -32602);
        assert_eq!(resp["error"]["data"]["path"], "limit");
    }
}

#[tokio::test]
async fn history_is_cut_to_the_payload_limit_with_has_more() {
    let gw = start(|c| c.gateway.max_payload_bytes = 64 * 1024).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    for i in 0..10 {
        ok(&ws.call("chat.inject", json!({"sessionKey": "big", "role": "assistant", "content": format!("{i}{}", "b".repeat(20_000))})).await);
    }
    let resp = ws
        .call("chat.history", json!({"sessionKey": "big", "limit": 10}))
        .await;
    let n = ok(&resp)["messages"].as_array().expect("messages").len();
    assert!((1..10).contains(&n), "{n} messages");
    assert_eq!(ok(&resp)["hasMore"], true);
}

#[tokio::test]
async fn inject_validates_its_params() {
    let gw = start(|_| {}).await;
    let mut ws = RawWs::connect(gw.addr()).await;
    for (params, path) in [
        (
            json!({"sessionKey": "a", "role": "system", "content": "  \n\t"}),
            "content",
        ),
        (
            json!({"sessionKey": "a", "role": "system", "content": ""}),
            "content",
        ),
        (
            json!({"sessionKey": "a", "role": "user", "content": "x"}),
            "role",
        ),
        (
            json!({"sessionKey": "a", "role": "system", "content": "x", "label": "l".repeat(129)}),
            "label",
        ),
        (json!({"sessionKey": "a", "role": "system"}), ""),
    ] {
        let resp = ws.call("chat.inject", params.clone()).await;
        assert_eq!(err_code(&resp), -32602, "{params}: {resp}");
        assert_eq!(resp["error"]["data"]["path"], path, "{params}: {resp}");
    }
    let big = "x".repeat(1024 * 1024 + 1);
    let resp = ws
        .call(
            "chat.inject",
            json!({"sessionKey": "a", "role": "system", "content": big}),
        )
        .await;
    assert_eq!(err_code(&resp), -32602);
    assert_eq!(
        err_code(&ws.call("sessions.get", json!({"key": "a"})).await),
        -32022,
        "a refused inject creates nothing"
    );
}
