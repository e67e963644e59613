//! The A2A 1.0 door over real sockets against the in-process gateway: the cards, the JSON-RPC
//! methods (blocking and immediate sends, get, list, cancel, an approval as INPUT_REQUIRED
//! answered with a decision), the SSE stream, and A2A's error codes and HTTP refusals.

use std::net::SocketAddr;

use clawgate::config::{AuthMode, Config, ExecMode, TokenConfig};
use clawgate::rpc::Scope;
use serde_json::{Value, json};

use crate::common::{HttpResp, http, start};

fn door(c: &mut Config) {
    c.http.a2a.enabled = true;
    c.default_agent_mut().delta_interval_ms = 0;
}

fn asking(c: &mut Config) {
    door(c);
    c.default_agent_mut().tools.exec = ExecMode::Ask;
}

async fn call(addr: SocketAddr, headers: &[(&str, &str)], method: &str, params: Value) -> HttpResp {
    let body = json!({"jsonrpc": "2.0", "id": "c1", "method": method, "params": params});
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    http(addr, "POST", "/a2a/main", &h, &body.to_string()).await
}

async fn result(addr: SocketAddr, method: &str, params: Value) -> Value {
    let resp = call(addr, &[], method, params).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let v = resp.json();
    assert_eq!(v["id"], "c1", "{v}");
    v.get("result")
        .cloned()
        .unwrap_or_else(|| panic!("no result: {v}"))
}

async fn error_code(addr: SocketAddr, method: &str, params: Value) -> i64 {
    let v = call(addr, &[], method, params).await.json();
    v["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error: {v}"))
}

fn message(text: &str) -> Value {
    json!({"message": {"messageId": uuid(), "role": "ROLE_USER", "parts": [{"text": text}]}})
}

fn uuid() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[tokio::test]
async fn a_disabled_door_is_not_found() {
    let gw = start(|_| {}).await;
    let card = http(gw.addr(), "GET", "/.well-known/agent-card.json", &[], "").await;
    assert_eq!(card.status, 404);
    let rpc = call(gw.addr(), &[], "GetTask", json!({"id": "x"})).await;
    assert_eq!(rpc.status, 404);
}

#[tokio::test]
async fn cards_announce_the_jsonrpc_binding_and_bearer_when_auth_is_on() {
    let gw = start(|c| {
        door(c);
        c.http.a2a.public_url = Some("https://gw.example.net/".into());
        c.gateway.auth.mode = AuthMode::Token;
        c.gateway.auth.tokens = vec![TokenConfig {
            name: "w".into(),
            token: "writer-secret-1".into(),
            scopes: vec![Scope::Write],
        }];
    })
    .await;
    for path in [
        "/.well-known/agent-card.json",
        "/a2a/main/.well-known/agent-card.json",
    ] {
        let card = http(gw.addr(), "GET", path, &[], "").await;
        assert_eq!(card.status, 200, "{path}: cards need no token");
        let card = card.json();
        assert_eq!(card["name"], "main");
        assert_eq!(
            card["supportedInterfaces"][0],
            json!({"url": "https://gw.example.net/a2a/main", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"})
        );
        assert_eq!(card["capabilities"]["streaming"], true);
        assert_eq!(card["capabilities"]["pushNotifications"], false);
        assert_eq!(
            card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"],
            "Bearer"
        );
    }
    let none = http(
        gw.addr(),
        "GET",
        "/a2a/nobody/.well-known/agent-card.json",
        &[],
        "",
    )
    .await;
    assert_eq!(none.status, 404);
    // The JSON-RPC binding needs the token; a refusal is a JSON-RPC error body with 401.
    let refused = call(gw.addr(), &[], "GetTask", json!({"id": "x"})).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.json()["error"]["code"], -32600);
    let ok = call(
        gw.addr(),
        &[("authorization", "Bearer writer-secret-1")],
        "GetTask",
        json!({"id": "x"}),
    )
    .await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["error"]["code"], -32001, "TaskNotFoundError");
}

#[tokio::test]
async fn the_card_without_public_url_names_the_requests_host() {
    let gw = start(door).await;
    let card = http(gw.addr(), "GET", "/.well-known/agent-card.json", &[], "")
        .await
        .json();
    assert_eq!(
        card["supportedInterfaces"][0]["url"],
        format!("http://{}/a2a/main", gw.addr())
    );
    assert!(card.get("securitySchemes").is_none(), "no auth, no scheme");
}

#[tokio::test]
async fn send_get_list_and_a_context_that_is_a_session() {
    let gw = start(door).await;
    let task = result(gw.addr(), "SendMessage", message("hello")).await["task"].clone();
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{task}");
    assert_eq!(task["artifacts"][0]["parts"][0]["text"], "Echo: hello");
    assert_eq!(task["status"]["message"]["role"], "ROLE_AGENT");
    let ts = task["status"]["timestamp"].as_str().expect("timestamp");
    assert!(ts.ends_with('Z') && ts.contains('T'), "RFC 3339: {ts}");
    let context = task["contextId"].as_str().expect("contextId").to_string();
    let id = task["id"].as_str().expect("id").to_string();
    // The context is the session a2a:<contextId>: its transcript holds the exchange.
    let history = crate::common::post(
        gw.addr(),
        &json!({"jsonrpc": "2.0", "id": 1, "method": "chat.history", "params": {"sessionKey": format!("a2a:{context}")}}).to_string(),
    )
    .await
    .json();
    let messages = history["result"]["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 2, "{history}");
    let got = result(gw.addr(), "GetTask", json!({"id": id})).await;
    assert_eq!(got["status"]["state"], "TASK_STATE_COMPLETED");
    // A second message in the same context, returned at once.
    let mut second = message("again");
    second["message"]["contextId"] = json!(context);
    second["configuration"] = json!({"returnImmediately": true});
    let quick = result(gw.addr(), "SendMessage", second).await["task"].clone();
    assert_eq!(quick["contextId"], context.as_str());
    let state = quick["status"]["state"].as_str().unwrap_or_default();
    assert!(
        [
            "TASK_STATE_SUBMITTED",
            "TASK_STATE_WORKING",
            "TASK_STATE_COMPLETED"
        ]
        .contains(&state),
        "{quick}"
    );
    let list = result(gw.addr(), "ListTasks", json!({"contextId": context})).await;
    let ids: Vec<&str> = list["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert_eq!(ids[1], id, "newest first");
    let page = result(
        gw.addr(),
        "ListTasks",
        json!({"contextId": context, "pageSize": 1}),
    )
    .await;
    assert_eq!(page["tasks"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["nextPageToken"], "1");
    assert_eq!(page["totalSize"], 2);
}

#[tokio::test]
async fn a_repeated_message_id_starts_no_second_task() {
    let gw = start(door).await;
    let m = message("once");
    let a = result(gw.addr(), "SendMessage", m.clone()).await;
    let b = result(gw.addr(), "SendMessage", m).await;
    assert_eq!(a["task"]["id"], b["task"]["id"]);
}

#[tokio::test]
async fn an_approval_is_input_required_a_decision_resolves_it_and_cancel_ends_a_task() {
    let gw = start(asking).await;
    let tool = r#"/tool exec {"command": "echo hi"}"#;
    let waiting = result(gw.addr(), "SendMessage", message(tool)).await["task"].clone();
    assert_eq!(
        waiting["status"]["state"], "TASK_STATE_INPUT_REQUIRED",
        "{waiting}"
    );
    let id = waiting["id"].as_str().expect("id").to_string();
    // Plain text to a task waiting for a decision says what it needs.
    let mut text = message("yes please");
    text["message"]["taskId"] = json!(id);
    assert_eq!(error_code(gw.addr(), "SendMessage", text).await, -32602);
    let mut allow = json!({"message": {"messageId": uuid(), "role": "ROLE_USER", "taskId": id,
        "parts": [{"data": {"decision": "allow"}}]}});
    allow["message"]["contextId"] = waiting["contextId"].clone();
    let done = result(gw.addr(), "SendMessage", allow).await["task"].clone();
    assert_eq!(done["id"], id.as_str());
    assert_eq!(done["status"]["state"], "TASK_STATE_COMPLETED", "{done}");
    assert_eq!(
        error_code(gw.addr(), "CancelTask", json!({"id": id})).await,
        -32002,
        "TaskNotCancelableError for an ended task"
    );
    // Another one waits; cancelling it ends it.
    let waiting = result(gw.addr(), "SendMessage", message(tool)).await["task"].clone();
    let id = waiting["id"].as_str().expect("id").to_string();
    let cancelled = result(gw.addr(), "CancelTask", json!({"id": id})).await;
    assert_eq!(
        cancelled["status"]["state"], "TASK_STATE_CANCELED",
        "{cancelled}"
    );
    assert_eq!(
        error_code(gw.addr(), "SubscribeToTask", json!({"id": id})).await,
        -32004,
        "a task that ended cannot be subscribed to"
    );
}

#[tokio::test]
async fn a_streamed_message_is_whole_jsonrpc_responses_ending_with_the_final_status() {
    let gw = start(door).await;
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "SendStreamingMessage", "params": message("stream me")});
    let resp = http(
        gw.addr(),
        "POST",
        "/a2a/main",
        &[("content-type", "application/json")],
        &body.to_string(),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["content-type"], "text/event-stream");
    let events: Vec<Value> = resp
        .body
        .split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).expect("each data is JSON"))
        .collect();
    assert!(events.iter().all(|e| e["jsonrpc"] == "2.0" && e["id"] == 7));
    assert!(events[0]["result"]["task"].is_object(), "{:?}", events[0]);
    let text: String = events
        .iter()
        .filter(|e| e["result"]["artifactUpdate"]["lastChunk"] == false)
        .filter_map(|e| e["result"]["artifactUpdate"]["artifact"]["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "Echo: stream me");
    let last = events.last().expect("events");
    assert_eq!(
        last["result"]["statusUpdate"]["status"]["state"],
        "TASK_STATE_COMPLETED"
    );
}

#[tokio::test]
async fn errors_use_a2as_codes() {
    let gw = start(door).await;
    assert_eq!(
        error_code(gw.addr(), "NoSuchMethod", json!({})).await,
        -32601
    );
    assert_eq!(
        error_code(gw.addr(), "GetTask", json!({"id": "nope"})).await,
        -32001
    );
    assert_eq!(error_code(gw.addr(), "GetTask", json!({})).await, -32602);
    assert_eq!(
        error_code(gw.addr(), "CreateTaskPushNotificationConfig", json!({})).await,
        -32003
    );
    assert_eq!(
        error_code(gw.addr(), "GetExtendedAgentCard", json!({})).await,
        -32007
    );
    assert_eq!(
        error_code(gw.addr(), "SendMessage", json!({})).await,
        -32602
    );
    assert_eq!(
        error_code(
            gw.addr(),
            "SendMessage",
            json!({"message": {"messageId": "f", "role": "ROLE_USER", "parts": [{"url": "http://x/y.png"}]}})
        )
        .await,
        -32005
    );
    let old = call(
        gw.addr(),
        &[("a2a-version", "0.3")],
        "GetTask",
        json!({"id": "x"}),
    )
    .await;
    assert_eq!(
        old.json()["error"]["code"],
        -32009,
        "VersionNotSupportedError"
    );
    let parse = http(gw.addr(), "POST", "/a2a/main", &[], "{not json").await;
    assert_eq!(parse.json()["error"]["code"], -32700);
    let batch = http(gw.addr(), "POST", "/a2a/main", &[], "[]").await;
    assert_eq!(batch.json()["error"]["code"], -32600);
}
